/**
 * rspamd through its HTTP protocol: `POST /checkv2` with the message as the
 * body and the transaction facts as request headers (rspamd's protocol
 * documentation: From, Rcpt, IP, Helo, Hostname, User, Queue-Id), so its own
 * SPF, DKIM, DMARC, RBL and per-user modules see what the MTA saw. The answer
 * is JSON: score, required_score, action, symbols, messages.
 *
 * One connection per scan, through scan/http.ts rather than undici's Pool as
 * the webhook target does (docs/decisions.md): rspamd closes every
 * connection after its answer, so a pool has nothing to reuse, and a bare
 * socket costs a fraction of undici's per-connection work
 * (docs/scanning.md, "Why rspamd has its own HTTP client").
 *
 * Leaf module: imports only scan/.
 */
import net from 'node:net';
import { httpExchange, type HttpEndpoint } from './http.js';
import { cleanName, MAX_SYMBOLS, ScanError, type ScanInput, type Scanner, type SpamResult } from './types.js';

/** Largest JSON answer read; rspamd's is a few KB, its symbols capped by us anyway. */
const MAX_ANSWER = 1024 * 1024;

export interface RspamdOptions {
  id: string;
  /** Base URL of rspamd's normal worker (http://127.0.0.1:11333). */
  url: string;
  /** A Unix socket of rspamd's worker to connect to instead of the URL's host (the URL still gives the path and Host). */
  socket?: string | undefined;
  /** Sent as `Password` (the controller's password, when rspamd asks for one). */
  password?: string | undefined;
}

/** A header value rspamd can take: printable ASCII (a value that is not is left out, not mangled). */
const printable = (v: string): boolean => v.length <= 1024 && /^[\x20-\x7e]*$/.test(v);

/** `name: value` CRLF, or nothing for a value that is empty or not printable. */
const field = (name: string, v: string | null): string => (v !== null && v !== '' && printable(v) ? `${name}: ${v}\r\n` : '');

export function rspamdScanner(opts: RspamdOptions): Scanner {
  const base = new URL(opts.url);
  const secure = base.protocol === 'https:';
  const host = base.hostname.replace(/^\[(.*)\]$/, '$1');
  const to: HttpEndpoint = opts.socket ? { path: opts.socket } : { host, port: Number(base.port) || (secure ? 443 : 80), tls: secure, ...(secure && net.isIP(host) === 0 ? { servername: host } : {}) };
  // What every request shares, built once. Connection: close, since rspamd
  // closes anyway and says so (RFC 9112 §9.6: then neither side waits).
  const fixed = `POST ${base.pathname.replace(/\/$/, '')}/checkv2 HTTP/1.1\r\nHost: ${base.host}\r\nConnection: close\r\n${opts.password ? field('Password', opts.password) : ''}`;
  const name = `rspamd ${opts.id}`;
  return {
    id: opts.id,
    type: 'rspamd',
    async scan(input: ScanInput): Promise<SpamResult> {
      const e = input.envelope;
      let head = `${fixed}Content-Length: ${input.size}\r\n${field('From', e.mailFrom === '' ? '<>' : e.mailFrom)}`;
      for (const r of e.rcptTo) head += field('Rcpt', r);
      head += field('IP', e.clientAddress.startsWith('::ffff:') ? e.clientAddress.slice(7) : e.clientAddress);
      head += field('Helo', e.helo) + field('Hostname', e.clientHostname) + field('User', e.authUser) + field('Queue-Id', e.queueId) + '\r\n';
      // One timer bounds the whole exchange: rspamd answers only once it has
      // scanned, so waiting for the answer is waiting for the scan (docs/scanning.md).
      const res = await httpExchange(name, to, input.timeoutMs, Buffer.from(head, 'latin1'), await input.content(), input.size, MAX_ANSWER);
      if (res.status !== 200) throw new ScanError('refused', `${name}: HTTP ${res.status}`);
      return parseRspamdAnswer(name, res.body);
    },
    async close() {},
  };
}

export function parseRspamdAnswer(name: string, body: Buffer): SpamResult {
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ScanError('protocol', `${name}: answer is not JSON`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new ScanError('protocol', `${name}: answer is not a JSON object`);
  const a = json as Record<string, unknown>;
  if (typeof a.error === 'string') throw new ScanError('refused', `${name}: ${a.error.replace(/[^\x20-\x7e]/g, '?').slice(0, 200)}`);
  const { score, required_score: threshold, action } = a;
  if (typeof score !== 'number' || !Number.isFinite(score) || typeof threshold !== 'number' || !Number.isFinite(threshold) || typeof action !== 'string') {
    throw new ScanError('protocol', `${name}: answer lacks score, required_score or action`);
  }
  const symbols: string[] = [];
  if (a.symbols && typeof a.symbols === 'object') {
    // Highest contribution first, so the cap keeps what decided the verdict.
    const entries = Object.entries(a.symbols as Record<string, unknown>).map(([k, v]) => [k, Math.abs(Number((v as { score?: unknown } | null)?.score) || 0)] as const);
    entries.sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1));
    for (const [k] of entries) {
      const n = cleanName(k);
      if (n) symbols.push(n);
      if (symbols.length >= MAX_SYMBOLS) break;
    }
  }
  const messages = a.messages as Record<string, unknown> | undefined;
  const smtp = messages && typeof messages === 'object' ? messages.smtp_message : undefined;
  const act = cleanAction(action);
  return {
    kind: 'spam',
    score,
    threshold,
    // rspamd's own call: "reject" is spam; "add header", "rewrite subject"
    // and "soft reject" are its milder actions, judged by the threshold.
    spam: act === 'reject' || score >= threshold,
    scannerAction: act,
    symbols,
    message: typeof smtp === 'string' ? smtp : null,
  };
}

function cleanAction(a: string): string {
  return /^[a-z ]{1,32}$/.test(a) ? a : 'unknown';
}
