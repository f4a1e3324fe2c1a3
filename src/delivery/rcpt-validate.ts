/**
 * The RCPT-time validation hook: before accepting a recipient, ask an HTTP
 * endpoint whether the user exists, so unknown users are refused (550 5.1.1)
 * before the sender transmits the body (routes[].validate).
 *
 * Request: `POST {"address", "mailFrom", "clientAddress"}` as JSON. Answer:
 * 2xx accepts (unless its JSON body says `{"accept": false}`); 404 or
 * `{"accept": false}` refuses; anything else, a connection error or the
 * timeout → 451 4.4.3 (RFC 3463: directory server failure), so the sender
 * retries later instead of bouncing on our outage. Answers are cached per
 * (endpoint, address), both ways, for cacheTtl; failures are not cached.
 *
 * I/O lives here, outside src/routing/, which stays pure.
 */
import type { Pool } from 'undici';
import { failure } from '../transaction/replies.js';

export interface ValidateConfig {
  url: string;
  timeout: number;
  cacheTtl: number;
}

export interface ValidateRequest {
  address: string;
  mailFrom: string;
  clientAddress: string;
}

const MAX_ANSWER = 4096;

export class RecipientValidator {
  private readonly cache = new Map<string, { accept: boolean; until: number }>();

  constructor(
    private readonly deps: { pool(origin: string): Pool; now(): number },
    private readonly maxEntries = 10_000,
  ) {}

  /** true: accepted, false: refused; throws GatewayError PG_RCPT_VALIDATION_UNAVAILABLE. */
  async check(cfg: ValidateConfig, req: ValidateRequest): Promise<boolean> {
    const key = `${cfg.url}\0${req.address.toLowerCase()}`;
    const hit = this.cache.get(key);
    if (hit && hit.until > this.deps.now()) return hit.accept;
    if (hit) this.cache.delete(key);
    const accept = await this.ask(cfg, req);
    if (cfg.cacheTtl > 0) {
      // Bounded: addresses are sender-chosen. Oldest entry out first.
      if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, { accept, until: this.deps.now() + cfg.cacheTtl });
    }
    return accept;
  }

  private async ask(cfg: ValidateConfig, req: ValidateRequest): Promise<boolean> {
    const url = new URL(cfg.url);
    const unavailable = (why: string, cause?: unknown) =>
      failure('PG_RCPT_VALIDATION_UNAVAILABLE', { vars: { address: req.address }, message: `validation hook ${url.origin}${url.pathname}: ${why}`, cause });
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'postgate' };
    if (url.username) {
      headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`;
    }
    let status: number;
    let text = '';
    try {
      const res = await this.deps.pool(url.origin).request({
        method: 'POST',
        path: `${url.pathname}${url.search}`,
        headers,
        body: JSON.stringify(req),
        signal: AbortSignal.timeout(cfg.timeout),
        headersTimeout: cfg.timeout,
        bodyTimeout: cfg.timeout,
      });
      status = res.statusCode;
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of res.body as AsyncIterable<Buffer>) {
        size += c.length;
        if (size > MAX_ANSWER) break;
        chunks.push(c);
      }
      text = Buffer.concat(chunks).toString('utf8');
    } catch (err) {
      const e = err as Error & { code?: string };
      throw unavailable(e.name === 'TimeoutError' || e.name === 'AbortError' ? `no answer within ${cfg.timeout} ms` : (e.code ?? e.message), err);
    }
    if (status === 404) return false;
    if (status < 200 || status > 299) throw unavailable(`answered ${status}`);
    if (!text.trim()) return true;
    try {
      const body = JSON.parse(text) as { accept?: unknown };
      return body?.accept !== false;
    } catch {
      return true; // a 2xx without JSON is an acceptance
    }
  }
}
