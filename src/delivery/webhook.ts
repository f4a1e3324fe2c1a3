/**
 * The webhook target: POST the event as JSON with Standard Webhooks headers,
 * signed at send time, over an undici Pool per origin (keep-alive; POST is
 * never pipelined). The receiver's answer becomes the SMTP reply through one
 * table, `webhookOutcome` (documented row by row in docs/delivery.md).
 */
import { readFileSync } from 'node:fs';
import { Pool, errors as undiciErrors } from 'undici';
import type { GatewayError } from '../core/errors.js';
import { failure, REPLIES, type FailureName } from '../transaction/replies.js';
import { parseSigningKey, secretKey, signatureHeader } from './signing.js';
import { interpretReceiverAnswer, sanitizeReplyText } from './reply.js';
import { pointerEvent } from './claim-check.js';
import type { DeliveryMessage, DeliveryReceipt, Target } from './types.js';
import { defaultWebhookId } from '../message/ids.js';
import type { WebhookTargetConfig } from '../config/schema.js';
import type { KeyObject } from 'node:crypto';
import { AttemptTimeout } from '../core/deadline.js';
import { guardedLookup, literalHostProblem } from '../net/private.js';
import { randomBytes } from 'node:crypto';
import { parseMessage } from '../message/parse.js';
import type { EmailEvent } from '../message/event.js';
import { FORMATS, NotInline, withoutOwnReceived, type WebhookFormat } from './formats/index.js';

/** TLS settings of a pool: a private CA and/or a client certificate (mTLS). */
export interface PoolTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  servername?: string;
}

export interface WebhookDeps {
  /** The pool for an origin (and TLS identity); shared by the targets of one gateway. `guarded`: the SSRF guard's pool. */
  pool(origin: string, tls?: PoolTls, tlsKey?: string, guarded?: boolean): Pool;
  now(): number;
  /** Refuse non-public addresses for this target (delivery.denyPrivateAddresses). */
  denyPrivate?: boolean;
}

export function createPoolCache(): { pool(origin: string, tls?: PoolTls, tlsKey?: string, guarded?: boolean): Pool; close(): Promise<void> } {
  const pools = new Map<string, Pool>();
  return {
    pool(origin, tls, tlsKey = '', guarded = false) {
      const key = `${origin} ${tlsKey}${guarded ? ' guarded' : ''}`;
      let p = pools.get(key);
      if (!p) {
        p = new Pool(origin, {
          connections: 64,
          keepAliveTimeout: 30_000,
          // The guard checks the address connected to, on every new connection.
          connect: { timeout: 10_000, ...(tls ?? {}), ...(guarded ? { lookup: guardedLookup } : {}) },
        });
        pools.set(key, p);
      }
      return p;
    },
    async close() {
      await Promise.all([...pools.values()].map((p) => p.close().catch(() => undefined)));
      pools.clear();
    },
  };
}

type Deferral = Extract<FailureName, 'PG_DELIVERY_FAILED' | 'PG_DELIVERY_NO_ANSWER' | 'PG_DELIVERY_CONNECTION_BROKEN' | 'PG_DELIVERY_CONGESTED' | 'PG_DELIVERY_MISCONFIGURED'>;

function deferred(reply: Deferral, message: string, extra: { retryable?: boolean; retryAfterMs?: number; cause?: unknown } = {}): GatewayError {
  // The sender sees no URL or status of ours, only that it should retry: the reply's text is the table's.
  return failure(reply, { message, ...extra });
}

/**
 * RFC 9110 §10.2.3 Retry-After: delay-seconds or an HTTP-date. Returns
 * milliseconds from `now`, or undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** What a receiver's HTTP answer means (docs/delivery.md, "Outcome table"). */
export type WebhookOutcome =
  | { kind: 'accepted' }
  | { kind: 'failed'; error: GatewayError }
  /** 413: send a claim-check pointer instead (once). */
  | { kind: 'too-large' }
  /** 410 Gone: the Standard Webhooks signal to stop sending; disable the target. */
  | { kind: 'gone'; error: GatewayError };

export function webhookOutcome(
  status: number,
  body: unknown,
  opts: { where: string; permanentOn: readonly number[]; retryAfterMs?: number | undefined; targetId: string },
): WebhookOutcome {
  // A structured answer wins over the status: it is the receiver speaking on purpose.
  const answer = interpretReceiverAnswer(body, opts.targetId);
  if (answer.action === 'refuse') return { kind: 'failed', error: answer.error };
  if (status >= 200 && status <= 299) return { kind: 'accepted' };
  const what = `${opts.where} answered ${status}`;
  if (opts.permanentOn.includes(status)) {
    const fallback = REPLIES.PG_TARGET_REJECTED.text;
    const text = body && typeof body === 'object' && 'message' in body ? sanitizeReplyText((body as { message: unknown }).message, fallback) : fallback;
    return { kind: 'failed', error: failure('PG_TARGET_REJECTED', { message: `${what}, listed in permanentOn`, chosen: { text } }) };
  }
  if (status === 413) return { kind: 'too-large' };
  if (status === 410) {
    return { kind: 'gone', error: failure('PG_TARGET_DISABLED', { message: `${what} (Gone): target disabled`, retryable: false }) };
  }
  const retryAfter = opts.retryAfterMs !== undefined ? { retryAfterMs: opts.retryAfterMs } : {};
  // RFC 3463: X.4.5 mail system congestion; X.4.1 no answer from host; X.4.0 other network status.
  if (status === 429 || status === 503 || status === 425) return { kind: 'failed', error: deferred('PG_DELIVERY_CONGESTED', what, retryAfter) };
  if (status === 408 || status === 504) return { kind: 'failed', error: deferred('PG_DELIVERY_NO_ANSWER', what, retryAfter) };
  if (status >= 500) return { kind: 'failed', error: deferred('PG_DELIVERY_FAILED', what, retryAfter) };
  // 3xx (never followed: a webhook that moved is a configuration to fix) and
  // every other 4xx (401, 403, 404, 422 ...): X.3.5 "system incorrectly
  // configured". Deferred, never bounced, and not retried within the deadline.
  return { kind: 'failed', error: deferred('PG_DELIVERY_MISCONFIGURED', `${what}${status < 400 ? ' (redirects are not followed)' : ''}`, { retryable: false }) };
}

/** An outcome with the HTTP status it was read from. */
type Answered = WebhookOutcome & { status: number };

/** Notes on a failure the HTTP status behind it (the console's timeline). */
function withStatus(error: GatewayError, status: number): GatewayError {
  error.httpStatus = status;
  return error;
}

/** Maps a transport failure to its reply: X.4.1 no answer, X.4.2 bad connection (RFC 3463 §3.5). */
function transportError(where: string, err: unknown, timedOut: boolean): GatewayError {
  const code = (err as { code?: string }).code;
  if (timedOut || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return deferred('PG_DELIVERY_NO_ANSWER', `${where}: no answer within the target's timeout`, { cause: err });
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
    return deferred('PG_DELIVERY_NO_ANSWER', `${where}: cannot connect (${code})`, { cause: err });
  }
  const why = code ?? (err instanceof undiciErrors.UndiciError ? err.name : (err as Error).message);
  return deferred('PG_DELIVERY_CONNECTION_BROKEN', `${where}: connection failed (${why})`, { cause: err });
}

/**
 * The event with every body and attachment inline. Parts over
 * `blobs.inlineLimit` or `blobs.bodyInlineLimit` went to the blob store, and
 * a format that carries the parts themselves cannot send a link: they are
 * read back from the message by the same parser, up to the format's limit
 * (docs/formats.md, "Size limits").
 */
async function withPartsInline(event: EmailEvent, raw: Buffer, limit: number): Promise<EmailEvent> {
  const d = event.data;
  if (!d.textBlob && !d.htmlBlob && d.attachments.every((a) => a.content !== undefined)) return event;
  const parsed = await parseMessage(raw, { limits: { inlineLimit: limit, maxDecodedBytes: limit } });
  return { ...event, data: { ...d, text: parsed.text, textBlob: null, html: parsed.html, htmlBlob: null, strippedText: parsed.strippedText, attachments: parsed.attachments } };
}

/** A counting semaphore whose waiters give up when the delivery is aborted. */
class Slots {
  private used = 0;
  private readonly waiters: Array<() => void> = [];
  constructor(private readonly max: number) {}
  /** Takes a free slot at once, without a promise (the usual case): false when none is free. */
  tryTake(): boolean {
    if (this.used >= this.max) return false;
    this.used++;
    return true;
  }
  async take(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    if (this.tryTake()) return;
    await new Promise<void>((resolve, reject) => {
      const grant = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(grant);
        if (i !== -1) this.waiters.splice(i, 1);
        reject(signal.reason);
      };
      this.waiters.push(grant);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
  release(): void {
    const next = this.waiters.shift();
    if (next) next();
    else this.used--;
  }
}

const BODY_LIMIT = 64 * 1024;
const DUMP_LIMIT = { limit: BODY_LIMIT };
/** An answer in JSON (application/json, application/problem+json …) is read for its action. */
const JSON_TYPE = /\bjson\b/i;
const ignore = (): undefined => undefined;

export class WebhookTarget implements Target {
  readonly type = 'webhook';
  readonly id: string;
  readonly required: boolean;
  private readonly url: URL;
  private readonly origin: string;
  /** The request target: path and query. */
  private readonly path: string;
  private readonly where: string;
  /**
   * What every request of postgate's own event carries, built once as
   * undici's flat name/value list: the operator's headers, less those we
   * set (ours win, as later keys of an object would), then ours. Per request
   * only the Standard Webhooks id, timestamp and signature and the basic
   * auth are appended. A list, not an object: an object spread and then
   * extended per request cost microseconds (a new hidden class each time).
   */
  private readonly fixedHeaders: readonly string[];
  /** `Basic …` from the URL's userinfo, or undefined. */
  private readonly basicAuth: string | undefined;
  /** The pool, looked up on first use and kept while it is open. */
  private poolInUse: Pool | null = null;
  private readonly keys: { hmac: Buffer[]; ed25519: KeyObject[] };
  private readonly tls: PoolTls | undefined;
  private readonly tlsKey: string;
  private readonly slots: Slots;
  /** The format's request builder; null for postgate's own event. */
  private readonly format: WebhookFormat | null;
  private readonly permanentOn: readonly number[];
  private disabledBy: GatewayError | null = null;

  constructor(
    private readonly cfg: WebhookTargetConfig,
    private readonly deps: WebhookDeps,
  ) {
    this.id = cfg.id ?? defaultWebhookId(cfg.url, cfg.format);
    this.required = cfg.required;
    this.url = new URL(cfg.url);
    this.origin = this.url.origin;
    this.path = `${this.url.pathname}${this.url.search}`;
    this.where = `webhook ${this.origin}${this.url.pathname}`;
    this.basicAuth = this.url.username
      ? `Basic ${Buffer.from(`${decodeURIComponent(this.url.username)}:${decodeURIComponent(this.url.password)}`).toString('base64')}`
      : undefined;
    const list = (v: string | string[] | undefined) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
    this.format = cfg.format === undefined || cfg.format === 'postgate' ? null : FORMATS[cfg.format];
    // A format's own permanent refusals (Mailgun 406, Postmark 403) join the operator's list (docs/delivery.md).
    this.permanentOn = [...new Set([...cfg.permanentOn, ...(this.format?.permanentOn ?? [])])];
    this.keys = {
      hmac: this.format ? [] : list(cfg.secret).map(secretKey),
      // With a keyed format, signingKey is that service's key, not an ed25519 key.
      ed25519: (this.format ? [] : list(cfg.signingKey)).map((k) => {
        const key = parseSigningKey(k);
        // validated at config load; a string here is a programming error
        if (typeof key === 'string') throw new Error(key);
        return key;
      }),
    };
    if (cfg.tls) {
      const read = (f: string | undefined) => (f ? readFileSync(f) : undefined);
      this.tls = Object.fromEntries(
        Object.entries({ ca: read(cfg.tls.ca), cert: read(cfg.tls.cert), key: read(cfg.tls.key), servername: cfg.tls.servername }).filter(([, v]) => v !== undefined),
      ) as PoolTls;
      this.tlsKey = JSON.stringify([cfg.tls.ca, cfg.tls.cert, cfg.tls.key, cfg.tls.servername]);
    } else {
      this.tls = undefined;
      this.tlsKey = '';
    }
    this.slots = new Slots(cfg.concurrency);
    const ours = new Set(['content-type', 'user-agent', 'webhook-id', 'webhook-timestamp']);
    if (this.keys.hmac.length + this.keys.ed25519.length > 0) ours.add('webhook-signature');
    if (this.basicAuth) ours.add('authorization');
    this.fixedHeaders = [...Object.entries(cfg.headers).filter(([name]) => !ours.has(name)).flat(), 'content-type', 'application/json', 'user-agent', 'postgate'];
  }

  get disabled(): boolean {
    return this.disabledBy !== null;
  }

  async deliver(msg: DeliveryMessage, deliveryId: string, signal: AbortSignal): Promise<DeliveryReceipt> {
    if (this.disabledBy) throw this.disabledBy;
    if (this.deps.denyPrivate) {
      const blocked = literalHostProblem(this.url.hostname);
      if (blocked) throw transportError(this.where, blocked, false);
    }
    // A free slot is taken without a promise; only a full target waits.
    if (!this.slots.tryTake()) await this.slots.take(signal);
    if (this.format) {
      try {
        return await this.deliverFormatted(this.format, msg, deliveryId, signal);
      } finally {
        this.slots.release();
      }
    }
    try {
      const direct = msg.eventJson.length <= this.cfg.maxEventSize;
      // Over maxEventSize: as if the receiver had answered 413, without asking it.
      const first: Answered = direct ? await this.post(msg.eventJson, deliveryId, signal) : { kind: 'too-large', status: 413 };
      let outcome: Answered = first;
      if (outcome.kind === 'too-large') {
        // 413 (or over maxEventSize): retry once with a claim-check pointer.
        const link = await msg.claimCheck();
        outcome = await this.post(Buffer.from(JSON.stringify(pointerEvent(msg.event, link))), deliveryId, signal);
        if (outcome.kind === 'too-large') {
          throw withStatus(failure('PG_EVENT_TOO_LARGE', { message: `${this.where} answered 413 to the event (${msg.eventJson.length} bytes) and to its claim-check pointer` }), 413);
        }
      }
      if (outcome.kind === 'gone') {
        this.disabledBy = outcome.error;
        throw outcome.error;
      }
      if (outcome.kind === 'failed') throw outcome.error;
      return { httpStatus: outcome.status };
    } finally {
      this.slots.release();
    }
  }

  /**
   * Another service's webhook format (docs/formats.md): built per attempt
   * (Mailgun's and Mandrill's signatures carry the send time), never a
   * claim-check pointer, which those consumers would not understand.
   */
  private async deliverFormatted(format: WebhookFormat, msg: DeliveryMessage, deliveryId: string, signal: AbortSignal): Promise<DeliveryReceipt> {
    const name = this.cfg.format;
    const tooLarge = (what: string, size: number) =>
      // Sending it would only be refused by the consumer: defer, so an operator can route it elsewhere (docs/formats.md, "Size limits").
      deferred('PG_DELIVERY_MISCONFIGURED', `${this.where}: the ${what} (${size} bytes) is over the ${format.maxBytes} bytes ${name} consumers take, and the format cannot carry a link; deferred`, { retryable: false });
    // Every format carries at least the message: a larger one is not even read into memory.
    if (msg.message.size > format.maxBytes) throw tooLarge('message', msg.message.size);
    const raw = withoutOwnReceived(await msg.message.buffer());
    let req;
    try {
      req = format.build({
        event: format.parsed ? await withPartsInline(msg.event, raw, format.maxBytes) : msg.event,
        raw,
        rcptTo: msg.rcptTo,
        url: this.publicUrl,
        key: typeof this.cfg.signingKey === 'string' ? this.cfg.signingKey : undefined,
        now: this.deps.now(),
        random: randomBytes,
      });
    } catch (err) {
      if (!(err instanceof NotInline)) throw err;
      throw deferred('PG_DELIVERY_MISCONFIGURED', `${this.where}: format ${name} cannot carry a link: ${err.message}; deferred`, { retryable: false });
    }
    if (req.body.length > format.maxBytes) throw tooLarge(`${name} request`, req.body.length);
    const headers: Record<string, string> = { ...this.cfg.headers, ...req.headers, 'content-type': req.contentType, 'user-agent': 'postgate', 'webhook-id': deliveryId };
    if (this.basicAuth) headers.authorization = this.basicAuth;
    const outcome = await this.send(req.body, Object.entries(headers).flat(), signal);
    if (outcome.kind === 'too-large') {
      throw withStatus(
        deferred('PG_DELIVERY_MISCONFIGURED', `${this.where} answered 413 to the ${name} request (${req.body.length} bytes), and the format cannot carry a link; deferred`, { retryable: false }),
        413,
      );
    }
    if (outcome.kind === 'gone') {
      this.disabledBy = outcome.error;
      throw outcome.error;
    }
    if (outcome.kind === 'failed') throw outcome.error;
    return { httpStatus: outcome.status };
  }

  /** The URL as the receiver sees it: without the userinfo, which travels as basic auth. */
  private get publicUrl(): URL {
    const u = new URL(this.url);
    u.username = '';
    u.password = '';
    return u;
  }

  private async post(body: Buffer, deliveryId: string, signal: AbortSignal): Promise<Answered> {
    // Signed at send time: a retry gets a fresh timestamp, so receivers can
    // keep a tight replay window, and the same webhook-id for deduplication.
    const timestamp = Math.floor(this.deps.now() / 1000);
    const headers = [...this.fixedHeaders, 'webhook-id', deliveryId, 'webhook-timestamp', `${timestamp}`];
    const signature = signatureHeader(this.keys, deliveryId, timestamp, body);
    if (signature) headers.push('webhook-signature', signature);
    if (this.basicAuth) headers.push('authorization', this.basicAuth);
    return this.send(body, headers, signal);
  }

  /** The gateway's pool for this target's origin and TLS identity; looked up again only once it was closed. */
  private pool(): Pool {
    const p = this.poolInUse;
    if (p !== null && !p.closed && !p.destroyed) return p;
    return (this.poolInUse = this.deps.pool(this.origin, this.tls, this.tlsKey, this.deps.denyPrivate === true));
  }

  /** `headers`: undici's flat list of names and values, complete. */
  private async send(body: Buffer, headers: string[], signal: AbortSignal): Promise<Answered> {
    // The target's timeout bounds the whole attempt (waiting for a
    // connection, connecting, the answer and its body), and the caller's
    // signal (the delivery deadline) aborts it too; undici's own
    // headersTimeout and bodyTimeout would leave the connect and the wait
    // for a pooled connection unbounded by it. See AttemptTimeout for why
    // this is not an AbortController.
    const attempt = new AttemptTimeout(this.cfg.timeout, signal);
    let status: number;
    let answer: unknown;
    let retryAfterMs: number | undefined;
    try {
      const res = await this.pool().request({
        method: 'POST',
        path: this.path,
        headers,
        body,
        signal: attempt,
        headersTimeout: this.cfg.timeout,
        bodyTimeout: this.cfg.timeout,
      });
      status = res.statusCode;
      const retryAfter = res.headers['retry-after'];
      if (retryAfter !== undefined) retryAfterMs = parseRetryAfter(retryAfter, this.deps.now());
      const type = res.headers['content-type'];
      if (type !== undefined && JSON_TYPE.test(String(type))) {
        const text = await readLimited(res.body, BODY_LIMIT);
        try {
          answer = text === null ? undefined : JSON.parse(text);
        } catch {
          answer = undefined;
        }
      } else {
        // Always consume the body so the connection goes back to the pool.
        await res.body.dump(DUMP_LIMIT).catch(ignore);
      }
    } catch (err) {
      if (signal.aborted) throw err;
      throw transportError(this.where, err, attempt.timedOut);
    } finally {
      attempt.done();
    }
    const outcome = webhookOutcome(status, answer, { where: this.where, permanentOn: this.permanentOn, retryAfterMs, targetId: this.id });
    if ('error' in outcome) withStatus(outcome.error, status);
    return { ...outcome, status };
  }

  async close(): Promise<void> {}
}

/** The body as text, or null when longer than `limit` (then discarded). */
async function readLimited(body: AsyncIterable<Buffer> & { destroy(): void }, limit: number): Promise<string | null> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) {
      body.destroy();
      return null;
    }
    parts.push(chunk);
  }
  return Buffer.concat(parts).toString('utf8');
}
