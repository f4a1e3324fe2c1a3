/**
 * DNS block list lookups (DNSBL, RFC 5782): whether a client address is
 * listed in a zone, with answer-code matching, a per-lookup timeout and a
 * bounded cache of positive and negative answers. Used at connect and at RCPT
 * (docs/blocklists.md).
 *
 * A lookup never throws: NXDOMAIN or no A record is "not listed", a timeout or
 * any other DNS failure is reported as such and the caller fails open.
 *
 * Leaf module: only node built-ins.
 */
import { Resolver } from 'node:dns/promises';
import net from 'node:net';

/**
 * The name to query for `address` in `zone`: the IPv4 octets reversed
 * (RFC 5782 §2.1), or the 32 nibbles of an IPv6 address reversed
 * (RFC 5782 §2.4). An IPv4-mapped IPv6 address (a dual-stack listener's
 * `::ffff:a.b.c.d`) is queried as the IPv4 address. Null for anything else.
 */
export function dnsblQueryName(address: string, zone: string): string | null {
  const percent = address.indexOf('%');
  const plain = percent === -1 ? address : address.slice(0, percent);
  const family = net.isIP(plain);
  if (family === 4) return `${plain.split('.').reverse().join('.')}.${zone}`;
  if (family !== 6) return null;
  const bytes = ipv6Bytes(plain);
  if (!bytes) return null;
  if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return `${[...bytes.subarray(12)].reverse().join('.')}.${zone}`;
  }
  const nibbles = bytes.toString('hex').split('').reverse();
  return `${nibbles.join('.')}.${zone}`;
}

/** The 16 bytes of an IPv6 address (any valid text form, dotted tail included). */
function ipv6Bytes(address: string): Buffer | null {
  let text = address.toLowerCase();
  // A dotted IPv4 tail (::ffff:192.0.2.1) becomes two hex groups.
  const dotted = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return null;
  return Buffer.from(groups.map((g) => g.padStart(4, '0')).join(''), 'hex');
}

/**
 * Checks one entry of a zone's `answers`: an IPv4 address (`127.0.0.2`), a
 * range (`127.0.0.2-127.0.0.11`) or a CIDR block (`127.0.0.0/24`). A message
 * naming the problem, or null.
 */
export function validateAnswerEntry(entry: string): string | null {
  const quoted = JSON.stringify(entry);
  const dash = entry.indexOf('-');
  if (dash !== -1) {
    const from = entry.slice(0, dash).trim();
    const to = entry.slice(dash + 1).trim();
    if (!net.isIPv4(from) || !net.isIPv4(to)) return `invalid answer range ${quoted}: expected "a.b.c.d-e.f.g.h" (IPv4 addresses)`;
    if (ipv4Number(from) > ipv4Number(to)) return `invalid answer range ${quoted}: the first address is greater than the last`;
    return null;
  }
  const slash = entry.indexOf('/');
  if (slash !== -1) {
    const base = entry.slice(0, slash);
    const prefix = entry.slice(slash + 1);
    if (!net.isIPv4(base) || !/^\d{1,2}$/.test(prefix) || Number(prefix) > 32) return `invalid answer block ${quoted}: expected "a.b.c.d/n" with n from 0 to 32`;
    return null;
  }
  if (!net.isIPv4(entry)) return `invalid answer ${quoted}: expected an IPv4 address, "a.b.c.d-e.f.g.h" or "a.b.c.d/n"`;
  return null;
}

function ipv4Number(a: string): number {
  return a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

/** Whether an A record of the zone counts as "listed". */
export function answerMatcher(entries: readonly string[]): (address: string) => boolean {
  const list = new net.BlockList();
  for (const entry of entries) {
    const problem = validateAnswerEntry(entry);
    if (problem) throw new Error(problem);
    const dash = entry.indexOf('-');
    const slash = entry.indexOf('/');
    if (dash !== -1) list.addRange(entry.slice(0, dash).trim(), entry.slice(dash + 1).trim(), 'ipv4');
    else if (slash !== -1) list.addSubnet(entry.slice(0, slash), Number(entry.slice(slash + 1)), 'ipv4');
    else list.addAddress(entry, 'ipv4');
  }
  return (address) => net.isIPv4(address) && list.check(address, 'ipv4');
}

/** The longest reason shown to a client; the reply it goes into is cut further to 512 octets (RFC 5321 §4.5.3.1.5). */
export const MAX_REASON_LENGTH = 200;

/**
 * A TXT record's text made safe to show in an SMTP reply: printable US-ASCII
 * only (RFC 5321 §4.2: a reply is one line of text), runs of whitespace and
 * control characters as one space, at most MAX_REASON_LENGTH characters. The
 * zone's operator writes this text, not the client, but a reply must never
 * carry a CR, an LF or bytes a client could misread. Empty when nothing is left.
 */
export function sanitizeReason(txt: string): string {
  const clean = txt
    .replace(/[^\x21-\x7e]+/g, ' ')
    .trim();
  return clean.length > MAX_REASON_LENGTH ? `${clean.slice(0, MAX_REASON_LENGTH - 3).trimEnd()}...` : clean;
}

export interface DnsblZone {
  zone: string;
  /** DNS servers to ask ("192.0.2.53", "127.0.0.1:5353", "[::1]:53"); empty: the system's. */
  servers: readonly string[];
  /** Which A records count as listed. */
  answers: readonly string[];
  /** Budget of one lookup (the A query, then the TXT query of a listed address). */
  timeoutMs: number;
  /** A listed answer is kept for its DNS TTL, at most this long. */
  cacheTtlMs: number;
  /** A not-listed answer (NXDOMAIN, no A record, no matching A record) is kept this long. */
  negativeCacheTtlMs: number;
  /** Answers kept at most; the least recently used goes first. */
  cacheSize: number;
  /** Look up the TXT record of a listed address for the refusal text. */
  showReason: boolean;
}

/** What a lookup found. `reason` only when listed, asked for and present. */
export type DnsblResult =
  | { status: 'listed'; zone: string; answers: string[]; reason: string | null }
  | { status: 'clear'; zone: string; answers: string[] }
  | { status: 'timeout' | 'error'; zone: string; error: string };

export interface DnsblLookupEvent {
  zone: string;
  /** listed, clear (NXDOMAIN, no data, or no matching answer), timeout, error. */
  result: DnsblResult['status'];
  /** A records that came back but do not count as listed (an operator's error codes such as 127.255.255.254). */
  ignored: string[];
  seconds: number;
  /** The resolver's error code (ETIMEOUT, ESERVFAIL, ECONNREFUSED …) of a failed lookup. */
  error?: string;
}

interface Cached {
  result: DnsblResult;
  expires: number;
}

/** The DNS calls a zone needs; node:dns's Resolver by default, so tests can aim it at their own server. */
export interface DnsblResolver {
  resolve4(name: string): Promise<{ address: string; ttl: number }[]>;
  resolveTxt(name: string): Promise<string[][]>;
}

function systemResolver(servers: readonly string[], timeoutMs: number): DnsblResolver {
  // One try: the zone's timeout is the whole budget, not one of four attempts.
  const r = new Resolver({ timeout: timeoutMs, tries: 1 });
  if (servers.length) r.setServers([...servers]);
  return {
    resolve4: (name) => r.resolve4(name, { ttl: true }),
    resolveTxt: (name) => r.resolveTxt(name),
  };
}

const NOT_LISTED_CODES = new Set(['ENOTFOUND', 'ENODATA']);

/** One zone: its resolver, its cache, and lookups in flight shared by whoever asks meanwhile. */
export class DnsblChecker {
  readonly zone: string;
  private readonly cache = new Map<string, Cached>();
  private readonly inflight = new Map<string, Promise<DnsblResult>>();
  private readonly listed: (a: string) => boolean;
  private readonly resolver: DnsblResolver;

  constructor(
    private readonly cfg: DnsblZone,
    private readonly opts: { now: () => number; onLookup?: (e: DnsblLookupEvent) => void; onCacheHit?: (zone: string) => void; resolver?: DnsblResolver },
  ) {
    this.zone = cfg.zone;
    this.listed = answerMatcher(cfg.answers);
    this.resolver = opts.resolver ?? systemResolver(cfg.servers, cfg.timeoutMs);
  }

  /** Whether `address` is listed; from the cache, a lookup in flight, or a new lookup. */
  check(address: string): Promise<DnsblResult> {
    const name = dnsblQueryName(address, this.zone);
    if (!name) return Promise.resolve({ status: 'clear', zone: this.zone, answers: [] });
    const key = name.toLowerCase();
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      if (hit.expires > this.opts.now()) {
        this.cache.set(key, hit); // most recently used last
        this.opts.onCacheHit?.(this.zone);
        return Promise.resolve(hit.result);
      }
    }
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.lookup(name)
      // lookup() catches what DNS throws; anything else is still a failure, never a listing.
      .catch((err: unknown) => ({ result: { status: 'error', zone: this.zone, error: err instanceof Error ? err.message : String(err) } as DnsblResult, ttlMs: 0 }))
      .then(({ result, ttlMs }) => {
      this.inflight.delete(key);
      // Failures are not kept: the next connection asks again (fail open each time, never "listed").
      if (ttlMs > 0) this.remember(key, result, ttlMs);
      return result;
    });
    this.inflight.set(key, p);
    return p;
  }

  private remember(key: string, result: DnsblResult, ttlMs: number): void {
    if (this.cache.size >= this.cfg.cacheSize) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
    this.cache.set(key, { result, expires: this.opts.now() + ttlMs });
  }

  private async lookup(name: string): Promise<{ result: DnsblResult; ttlMs: number }> {
    const started = process.hrtime.bigint();
    const done = (result: DnsblResult, ignored: string[] = []) =>
      this.opts.onLookup?.({
        zone: this.zone,
        result: result.status,
        ignored,
        seconds: Number(process.hrtime.bigint() - started) / 1e9,
        ...('error' in result ? { error: result.error } : {}),
      });
    let records: { address: string; ttl: number }[];
    try {
      records = await withTimeout(this.resolver.resolve4(name), this.cfg.timeoutMs);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code && NOT_LISTED_CODES.has(code)) {
        const result: DnsblResult = { status: 'clear', zone: this.zone, answers: [] };
        done(result);
        return { result, ttlMs: this.cfg.negativeCacheTtlMs };
      }
      const result: DnsblResult = {
        status: code === 'ETIMEOUT' || code === 'DNSBL_TIMEOUT' ? 'timeout' : 'error',
        zone: this.zone,
        error: code ?? (err instanceof Error ? err.message : String(err)),
      };
      done(result);
      return { result, ttlMs: 0 };
    }
    const answers = records.map((r) => r.address);
    const matching = answers.filter((a) => this.listed(a));
    const ignored = answers.filter((a) => !this.listed(a));
    if (!matching.length) {
      const result: DnsblResult = { status: 'clear', zone: this.zone, answers };
      done(result, ignored);
      return { result, ttlMs: this.cfg.negativeCacheTtlMs };
    }
    let reason: string | null = null;
    if (this.cfg.showReason) {
      try {
        const txt = await withTimeout(this.resolver.resolveTxt(name), this.cfg.timeoutMs);
        // RFC 1035 §3.3.14: one record's strings are one text; the first record names the reason.
        reason = sanitizeReason(txt[0]?.join('') ?? '') || null;
      } catch {
        // No TXT record, or no answer in time: refused without a reason.
      }
    }
    const result: DnsblResult = { status: 'listed', zone: this.zone, answers: matching, reason };
    done(result, ignored);
    const ttl = Math.min(...records.filter((r) => this.listed(r.address)).map((r) => r.ttl)) * 1000;
    return { result, ttlMs: Math.min(this.cfg.cacheTtlMs, Number.isFinite(ttl) ? ttl : 0) };
  }
}

/** Rejects with code DNSBL_TIMEOUT past `ms`; c-ares' own timeout may come later with several servers. */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`no answer within ${ms} ms`), { code: 'DNSBL_TIMEOUT' })), ms);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * Checks one DNS server entry of a zone: an IP address, `a.b.c.d:port` or
 * `[v6]:port`, the forms node:dns's setServers takes. A message or null.
 */
export function validateDnsServer(entry: string): string | null {
  const quoted = JSON.stringify(entry);
  if (net.isIP(entry)) return null;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(entry);
  if (!m) return `invalid DNS server ${quoted}: expected an IP address, "a.b.c.d:port" or "[v6]:port"`;
  const host = m[1] ?? m[2]!;
  if ((m[1] !== undefined && !net.isIPv6(host)) || (m[2] !== undefined && !net.isIPv4(host))) return `invalid DNS server ${quoted}: ${JSON.stringify(host)} is not an IP address`;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return `invalid DNS server ${quoted}: port out of range (1-65535)`;
  return null;
}
