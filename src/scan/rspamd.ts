/**
 * rspamd through its HTTP protocol: `POST /checkv2` with the message as the
 * body and the transaction facts as request headers (rspamd's protocol
 * documentation: From, Rcpt, IP, Helo, Hostname, User, Queue-Id), so its own
 * SPF, DKIM, DMARC, RBL and per-user modules see what the MTA saw. The answer
 * is JSON: score, required_score, action, symbols, messages. undici Pool, as
 * the webhook target (docs/decisions.md: not fetch).
 *
 * Leaf module: imports only scan/ and undici.
 */
import { Pool } from 'undici';
import { cleanName, MAX_SYMBOLS, ScanError, timeoutError, type ScanInput, type Scanner, type SpamResult } from './types.js';

/** Largest JSON answer read; rspamd's is a few KB, its symbols capped by us anyway. */
const MAX_ANSWER = 1024 * 1024;

export interface RspamdOptions {
  id: string;
  /** Base URL of rspamd's normal worker (http://127.0.0.1:11333). */
  url: string;
  /** Sent as `Password` (the controller's password, when rspamd asks for one). */
  password?: string | undefined;
}

/** A header value rspamd can take: printable ASCII (a value that is not is left out, not mangled). */
const printable = (v: string): boolean => /^[\x20-\x7e]*$/.test(v) && v.length <= 1024;

export function rspamdScanner(opts: RspamdOptions): Scanner {
  const base = new URL(opts.url);
  const path = `${base.pathname.replace(/\/$/, '')}/checkv2`;
  const pool = new Pool(base.origin, { connections: 32, keepAliveTimeout: 30_000, connect: { timeout: 10_000 } });
  const name = `rspamd ${opts.id}`;
  return {
    id: opts.id,
    type: 'rspamd',
    async scan(input: ScanInput): Promise<SpamResult> {
      const e = input.envelope;
      const headers: string[] = ['content-length', String(input.size)];
      const add = (k: string, v: string | null) => {
        if (v !== null && v !== '' && printable(v)) headers.push(k, v);
      };
      add('From', e.mailFrom === '' ? '<>' : e.mailFrom);
      for (const r of e.rcptTo) add('Rcpt', r);
      add('IP', e.clientAddress.replace(/^::ffff:/, ''));
      add('Helo', e.helo);
      add('Hostname', e.clientHostname);
      add('User', e.authUser);
      add('Queue-Id', e.queueId);
      if (opts.password) add('Password', opts.password);
      let res;
      try {
        // undici's own timers bound the wait for the answer's head and for its
        // body: rspamd answers only once it has scanned, so headersTimeout is
        // the scan's time (docs/scanning.md).
        res = await pool.request({ path, method: 'POST', headers, body: await input.content(), headersTimeout: input.timeoutMs, bodyTimeout: input.timeoutMs });
      } catch (err) {
        const code = (err as { code?: string }).code ?? '';
        if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') throw timeoutError(name, input.timeoutMs);
        throw new ScanError(/CONNECT|ECONNREFUSED|ENOTFOUND|EHOSTUNREACH/.test(code) ? 'connect' : 'protocol', `${name}: ${code || (err as Error).message}`, { cause: err });
      }
      let body: Buffer;
      try {
        // rspamd says how long its answer is: one read of a bounded size (the
        // common case); without a length, chunks counted as they come.
        const length = Number(res.headers['content-length']);
        if (length > MAX_ANSWER) {
          res.body.destroy();
          throw new ScanError('protocol', `${name}: answer longer than ${MAX_ANSWER} bytes`);
        }
        if (Number.isInteger(length)) body = Buffer.from(await res.body.arrayBuffer());
        else {
          const chunks: Buffer[] = [];
          let size = 0;
          for await (const c of res.body as AsyncIterable<Buffer>) {
            size += c.length;
            if (size > MAX_ANSWER) {
              res.body.destroy();
              throw new ScanError('protocol', `${name}: answer longer than ${MAX_ANSWER} bytes`);
            }
            chunks.push(c);
          }
          body = Buffer.concat(chunks, size);
        }
      } catch (err) {
        if (err instanceof ScanError) throw err;
        if ((err as { code?: string }).code === 'UND_ERR_BODY_TIMEOUT') throw timeoutError(name, input.timeoutMs);
        throw new ScanError('protocol', `${name}: ${(err as Error).message}`, { cause: err });
      }
      if (res.statusCode !== 200) throw new ScanError('refused', `${name}: HTTP ${res.statusCode}`);
      return parseRspamdAnswer(name, body);
    },
    close: () => pool.close().catch(() => undefined),
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
