/**
 * The `ingest` function: receives an `email.received` event from the edge,
 * over HTTP (API Gateway HTTP API, Standard Webhooks signature) or by a direct
 * Invoke (the edge's lambda target; IAM authorises the caller), and answers
 * 2xx only when all of this holds:
 *
 *   0. every recipient has a destination in the routes file (otherwise 500:
 *      the edge defers the message until the routes are fixed);
 *   1. the event JSON is in S3 (and the raw message next to it, when the event
 *      carries or links it, checked against its size and SHA-256);
 *   2. the index item exists in DynamoDB;
 *   3. one routing job per destination is on the SQS queue;
 *   4. the item says `enqueued`.
 *
 * The key is the delivery id (`webhook-id`), equal on every retry of the same
 * message, so a retry stores once. A crash anywhere before (4) leaves the item
 * `pending`, and the retry the edge makes on the error answer enqueues again:
 * routing jobs are at least once, and `route` skips destinations already
 * delivered. The edge's HTTP timeout to this function must stay below API
 * Gateway's 30 s integration limit (docs/functions.md).
 */
import { createHash } from 'node:crypto';
import { Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { GatewayError } from '../core/errors.js';
import { configError } from './settings.js';
import { destinationsOf, errorFields, getRuntime, log, type Runtime } from './common.js';
import { linkedParts, Store, type PartLink, type RouteJob } from './store.js';
import { verifyWebhook } from './verify.js';

interface HttpApiEvent {
  version?: string;
  headers?: Record<string, string | undefined>;
  body?: string;
  isBase64Encoded?: boolean;
  requestContext?: { http?: { method?: string } };
}

interface HttpResult {
  statusCode: number;
  headers: Record<string, string>;
  body: string;
}

interface LambdaContext {
  clientContext?: { custom?: Record<string, unknown> } | null;
  getRemainingTimeInMillis?: () => number;
}

/** What the edge sends, as far as ingest reads it (docs/payload.md has the whole). */
interface EventShape {
  type: string;
  data: {
    schema?: string;
    id?: string;
    receivedAt: string;
    envelope: { mailFrom: string; rcptTo: { address: string }[]; clientAddress?: string };
    subject?: string | null;
    headers?: { name: string; value: string }[];
    raw: { size: number; sha256: string; content?: string; url?: string };
    event?: { url: string; size: number; sha256: string };
    attachments?: unknown[];
    textBlob?: unknown;
    htmlBlob?: unknown;
  };
}

class IngestError extends GatewayError {
  constructor(
    readonly status: number,
    code: 'PG_FN_UNAUTHORIZED' | 'PG_FN_BAD_EVENT',
    message: string,
  ) {
    super({ code, message, transient: false });
  }
}

function isHttp(e: unknown): e is HttpApiEvent {
  return typeof e === 'object' && e !== null && 'requestContext' in e && ('headers' in e || 'body' in e);
}

export async function handler(event: unknown, context: LambdaContext = {}): Promise<HttpResult | Record<string, unknown>> {
  const http = isHttp(event);
  try {
    const rt = await getRuntime();
    let id: string;
    let body: Buffer;
    if (http) {
      body = Buffer.from(event.body ?? '', event.isBase64Encoded ? 'base64' : 'utf8');
      const headers = Object.fromEntries(Object.entries(event.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
      if (!rt.settings.verify.hmac.length && !rt.settings.verify.ed25519.length) {
        throw new GatewayError({ code: 'PG_FN_CONFIG', message: 'POSTGATE_INGEST_SECRETS is empty: HTTP ingest refuses unsigned requests', transient: true });
      }
      const v = verifyWebhook(headers, body, rt.settings.verify, rt.settings.toleranceSeconds);
      if (!v.ok) throw new IngestError(401, 'PG_FN_UNAUTHORIZED', v.why);
      id = v.id;
    } else {
      const custom = context.clientContext?.custom ?? {};
      const given = typeof custom.deliveryId === 'string' ? custom.deliveryId : null;
      if (!given) throw new IngestError(400, 'PG_FN_BAD_EVENT', 'a direct invocation needs clientContext.custom.deliveryId (the edge sets it)');
      id = given;
      body = Buffer.from(JSON.stringify(event));
    }
    if (!/^[\w.~:-]{1,200}$/.test(id)) throw new IngestError(400, 'PG_FN_BAD_EVENT', 'webhook-id has characters outside [A-Za-z0-9_.~:-] or is longer than 200');
    const result = await ingest(rt, id, body, fetchBudget(context));
    return http ? respond(200, result) : result;
  } catch (err) {
    const status = err instanceof IngestError ? err.status : 500;
    log(status >= 500 ? 'error' : 'warn', 'ingest failed', { status, ...errorFields(err) });
    if (!http) {
      // A direct invocation: a thrown error is a function error, which the
      // edge defers (451) and retries; a bad request is the same to it.
      throw err;
    }
    const code = err instanceof GatewayError ? err.code : 'PG_INTERNAL';
    // The caller learns the code, not our internals.
    return respond(status, { error: code, message: err instanceof IngestError ? err.message : 'internal error, retry later' });
  }
}

function respond(statusCode: number, body: unknown): HttpResult {
  return { statusCode, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

async function ingest(rt: Runtime, id: string, received: Buffer, budget: () => AbortSignal): Promise<Record<string, unknown>> {
  let body = received;
  let event = parseEvent(body);
  const { store } = rt;

  // A retry of what is already enqueued is acknowledged first, before
  // anything that could have changed since (the routes file, the edge's
  // links): its 2xx may only have been lost on the way back.
  const existing = await store.getItem(id);
  if (existing?.status === 'enqueued') {
    log('info', 'ingest duplicate', { id });
    return { stored: true, duplicate: true, id };
  }

  if (event.type === 'email.received.pointer') {
    // The edge sent a claim check: the whole event is at data.event.url.
    body = await fetchEvent(event, rt.settings.maxFetchBytes, budget());
    event = parseEvent(body);
  }
  if (event.type !== 'email.received') throw new IngestError(400, 'PG_FN_BAD_EVENT', `unexpected event type "${event.type}"`);
  const d = event.data;

  // Every recipient needs a destination here, or the message is refused
  // (500: the edge defers, the sender keeps it) until the routes file is fixed:
  // a 2xx for mail that nothing will deliver would lose it.
  const { destinations, unrouted } = destinationsOf(rt, d);
  if (unrouted.length || !destinations.length) {
    throw configError([`no destination in the routes file for ${unrouted.length ? unrouted.join(', ') : 'any recipient'}`]);
  }

  const keys = Store.keys(id, d.receivedAt);
  await store.putObject(keys.event, body, 'application/json');
  let rawKey: string | null = null;
  if (typeof d.raw.content === 'string') {
    const raw = Buffer.from(d.raw.content, 'base64');
    if (createHash('sha256').update(raw).digest('hex') !== d.raw.sha256) throw new IngestError(400, 'PG_FN_BAD_EVENT', 'raw.content does not match raw.sha256');
    await store.putObject(keys.raw, raw, 'message/rfc822');
    rawKey = keys.raw;
  } else if (typeof d.raw.url === 'string') {
    await copyLinked(store, keys.raw, checkedLink(d.raw, 'raw'), 'message/rfc822', budget());
    rawKey = keys.raw;
  }
  // The edge's links die with its blobs.ttl, which a message in the
  // dead-letter queue can outlive: keep a copy of every linked part.
  const parts = linkedParts(d);
  for (const part of parts) await copyLinked(store, Store.partKey(keys.event, part.name), checkedLink(part.link, part.name), part.contentType, budget());

  const jobs = destinations.map((t): RouteJob => ({ v: 1, id, destination: t.id, key: keys.event, receivedAt: d.receivedAt }));
  const item = {
    id,
    receivedAt: d.receivedAt,
    mailFrom: d.envelope.mailFrom,
    rcptTo: d.envelope.rcptTo.map((r) => r.address),
    subject: d.subject ?? null,
    rawSize: d.raw.size,
    eventSize: body.length,
    eventKey: keys.event,
    rawKey,
    destinations: jobs.map((j) => j.destination),
    parts: parts.map((p) => p.name),
  };
  const before = await store.createPending(item);
  if (before?.status === 'enqueued') return { stored: true, duplicate: true, id };
  // New, or `pending` from an attempt that stopped before enqueueing: enqueue (again).
  await store.enqueue(await store.queueUrl(rt.settings.queue), jobs);
  await store.markEnqueued(id);
  log('info', 'ingested', { id, destinations: item.destinations, retried: before !== null });
  return { stored: true, duplicate: false, id, destinations: item.destinations.length };
}

/** Links in the event come from the edge (signed or IAM-authorised); still, no redirects and a time limit. */
const FETCH_TIMEOUT_MS = 15_000;
/** Kept back from the function's time limit to store, enqueue and answer after a download. */
const ANSWER_MARGIN_MS = 4_000;

/**
 * The time a download of the edge's link may take: what is left of the
 * invocation, less the margin to finish (15 s where the runtime does not say).
 * The limit covers the whole body, not just the headers: a download that
 * cannot finish before the function is stopped is better ended with an error
 * the edge defers on.
 */
function fetchBudget(context: LambdaContext): () => AbortSignal {
  return () => {
    const left = context.getRemainingTimeInMillis?.();
    return AbortSignal.timeout(typeof left === 'number' && Number.isFinite(left) ? Math.max(1_000, left - ANSWER_MARGIN_MS) : FETCH_TIMEOUT_MS);
  };
}

/** A link with the size and digest that bound and check its download; without them, a 400. */
function checkedLink(link: { url?: unknown; size?: unknown; sha256?: unknown }, what: string): PartLink {
  if (typeof link.url !== 'string' || !Number.isSafeInteger(link.size) || (link.size as number) < 0 || typeof link.sha256 !== 'string') {
    throw new IngestError(400, 'PG_FN_BAD_EVENT', `${what}: url, size (a whole number of bytes) and sha256 are required`);
  }
  return link as PartLink;
}

/** Reads nothing more of a response that will not be used, so its connection is released at once. */
async function discard(res: Response): Promise<void> {
  await res.body?.cancel().catch(() => undefined);
}

/**
 * Streams what an edge link serves (the raw message, a large attachment or
 * body) into S3, checking that the bytes are the ones the event describes
 * (size and SHA-256) before anything is acknowledged.
 */
async function copyLinked(store: Store, key: string, link: PartLink, contentType: string, signal: AbortSignal): Promise<void> {
  const what = key.slice(key.lastIndexOf('/') + 1);
  const res = await fetch(link.url, { redirect: 'error', signal });
  if (!res.ok || !res.body) {
    await discard(res);
    throw new Error(`the link to ${what} answered ${res.status}`);
  }
  const hash = createHash('sha256');
  let size = 0;
  const check = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      if (size > link.size) return cb(new Error(`the link to ${what} served more than the ${link.size} bytes the event says`));
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const source = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  // pipe() does not pass a source error on: without this a broken or timed-out
  // download would leave the upload waiting until the function times out.
  source.once('error', (err) => check.destroy(err));
  try {
    await store.putStream(key, source.pipe(check), contentType);
  } finally {
    // Nor does it end the source when the upload fails: the download would
    // hold its connection until the time limit.
    source.destroy();
  }
  const sha = hash.digest('hex');
  // Transient: the link may have served a partial object; the retry fetches again.
  if (size !== link.size || sha !== link.sha256) throw new Error(`the link to ${what} served ${size} bytes with sha256 ${sha}, the event says ${link.size} / ${link.sha256}`);
}

function parseEvent(body: Buffer): EventShape {
  let e: unknown;
  try {
    e = JSON.parse(body.toString('utf8'));
  } catch {
    throw new IngestError(400, 'PG_FN_BAD_EVENT', 'the body is not JSON');
  }
  const ev = e as Partial<EventShape>;
  const d = ev?.data as Partial<EventShape['data']> | undefined;
  if (typeof ev?.type !== 'string' || !d || typeof d.receivedAt !== 'string' || !d.envelope || !Array.isArray(d.envelope.rcptTo) || !d.raw) {
    throw new IngestError(400, 'PG_FN_BAD_EVENT', 'not a postgate event: type, data.receivedAt, data.envelope and data.raw are required');
  }
  return ev as EventShape;
}

async function fetchEvent(pointer: EventShape, limit: number, signal: AbortSignal): Promise<Buffer> {
  const link = checkedLink(pointer.data.event ?? {}, 'data.event');
  const cap = Math.min(limit, link.size);
  if (link.size > limit) throw new IngestError(400, 'PG_FN_BAD_EVENT', `the event is ${link.size} bytes, above POSTGATE_MAX_FETCH_BYTES`);
  const res = await fetch(link.url, { redirect: 'error', signal });
  if (!res.ok || !res.body) {
    await discard(res);
    throw new Error(`claim-check link answered ${res.status}`);
  }
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of Readable.fromWeb(res.body as WebReadableStream<Uint8Array>)) {
    size += (chunk as Buffer).length;
    // Never more than the pointer announced (and never more than the limit).
    if (size > cap) throw new Error(`claim-check link served more than the ${link.size} bytes announced`);
    parts.push(chunk as Buffer);
  }
  const body = Buffer.concat(parts);
  const sha = createHash('sha256').update(body).digest('hex');
  // A mismatch is transient: the link may have served a partial object.
  if (sha !== link.sha256) throw new Error(`claim-check body has sha256 ${sha}, the pointer says ${link.sha256}`);
  return body;
}
