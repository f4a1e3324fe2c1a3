/**
 * Human-friendly sizes and durations for the configuration file:
 * `25MiB`, `26214400`, `30s`, `5m`, `1500ms`. Leaf module.
 */

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1000,
  kib: 1024,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
};

const TIME_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Parses `26214400`, `"25MiB"`, `"25 MB"`; returns null when malformed. */
export function parseBytes(value: number | string): number | null {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  if (!m) return null;
  const unit = BYTE_UNITS[(m[2] || 'b').toLowerCase()];
  if (unit === undefined) return null;
  const n = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : null;
}

/** Parses `1500` (milliseconds), `"30s"`, `"5m"`, `"250ms"`; returns null when malformed. */
export function parseDuration(value: number | string): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? Math.round(value) : null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  if (!m) return null;
  const unit = TIME_UNITS[(m[2] || 'ms').toLowerCase()];
  if (unit === undefined) return null;
  return Math.round(Number(m[1]) * unit);
}

export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses a listen address: `127.0.0.1:2525`, `[::1]:25`, `:25` (all interfaces),
 * `0.0.0.0:0` (any free port). Returns null when malformed.
 */
export function parseHostPort(value: string): HostPort | null {
  const m = /^(?:\[([0-9a-f:.]+)\]|([^:[\]\s]*)):(\d{1,5})$/i.exec(value.trim());
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '::' : host, port };
}
