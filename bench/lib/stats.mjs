/**
 * The statistics the benchmark scripts report: the median of the rounds (or
 * of the latencies) and the 95th percentile. Benchmark tooling only.
 */

/** The middle value; the mean of the two middle values for an even count. */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The smallest value at least 95 % of the values do not exceed. */
export function p95(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)];
}
