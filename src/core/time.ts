/**
 * `new Date(ms).toISOString()` written out from the day count (the
 * civil-from-days algorithm) for the instants of years 0000-9999: V8's own
 * costs about a microsecond, and every accepted message writes several (the
 * event's times, the log line's, the console's record). Other instants, and
 * anything not a finite integer, take V8's. Leaf module.
 */

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));
const pad3 = (n: number): string => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : String(n));

/** First and last instants toISOString writes with a four-digit year. */
const MIN = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
const END = 253_402_300_800_000; // 10000-01-01T00:00:00.000Z

export function isoTime(ms: number): string {
  if (!Number.isInteger(ms) || ms < MIN || ms >= END) return new Date(ms).toISOString();
  const days = Math.floor(ms / 86_400_000);
  const inDay = ms - days * 86_400_000;
  const z = days + 719_468; // days since 0000-03-01
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  const secs = Math.floor(inDay / 1000);
  const hh = Math.floor(secs / 3600);
  const mi = Math.floor((secs % 3600) / 60);
  const y = year < 1000 ? String(year).padStart(4, '0') : String(year);
  return `${y}-${pad2(month)}-${pad2(day)}T${pad2(hh)}:${pad2(mi)}:${pad2(secs % 60)}.${pad3(inDay % 1000)}Z`;
}
