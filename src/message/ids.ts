/**
 * Identifiers. Leaf module.
 */
import { createHash, hash, randomFillSync } from 'node:crypto';

const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/**
 * A queue id: 10 characters of millisecond time and 10 random ones in
 * Crockford base32, so ids sort by arrival and are safe in file names,
 * log lines and the 250 reply text.
 */
export function newQueueId(now = Date.now()): string {
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32]! + time;
    t = Math.floor(t / 32);
  }
  let tail = '';
  for (let i = 0; i < 10; i++) tail += CROCKFORD[randomByte() % 32]!;
  return time + tail;
}

// One randomBytes call per 410 ids instead of per id: the synchronous call
// into the CSPRNG is what costs, not the bytes (profiled in docs/benchmarks.md).
const POOL = Buffer.alloc(4096);
let poolAt = POOL.length;
function randomByte(): number {
  if (poolAt >= POOL.length) {
    randomFillSync(POOL);
    poolAt = 0;
  }
  return POOL[poolAt++]!;
}

/**
 * The deterministic delivery id of docs/architecture.md §2.5: equal across the sender's
 * retries and across edge instances, never derived from Message-ID (which
 * senders reuse and attackers choose).
 */
export function deliveryId(mailFrom: string, rcptTo: readonly string[], rawSha256: string, targetId: string): string {
  // One string, hashed at once (the same bytes as updating field by field,
  // at a third of the cost: this runs for every target of every message).
  const rcpts = rcptTo.length === 1 ? rcptTo[0]!.toLowerCase() : rcptTo.map((r) => r.toLowerCase()).sort().join('\n');
  return `msg_${hash('sha256', `${mailFrom.toLowerCase()}\0${rcpts}\0${rawSha256}\0${targetId}`).slice(0, 32)}`;
}

/**
 * The default id of a webhook target. It takes part in every delivery id, so
 * it must be stable and unique per URL, and it is logged, so it must not carry
 * credentials or query tokens: origin and path, plus a digest of the full URL.
 * A format other than postgate's own (docs/formats.md) is part of it: one URL
 * posted in two formats is two targets, not one instance serving both.
 */
export function defaultWebhookId(url: string, format?: string): string {
  const u = new URL(url);
  const id = `webhook:${u.origin}${u.pathname}#${createHash('sha256').update(url).digest('hex').slice(0, 12)}`;
  return format && format !== 'postgate' ? `${id}~${format}` : id;
}

/** The default id of a lambda target (logged; part of every delivery id). */
export function defaultLambdaId(t: { functionName: string; qualifier?: string | undefined }): string {
  return `lambda:${t.functionName}${t.qualifier ? `:${t.qualifier}` : ''}`;
}

/** The default id of an s3 target (logged; part of every delivery id). */
export function defaultS3Id(t: { bucket: string; prefix: string }): string {
  return `s3:${t.bucket}/${t.prefix}`;
}
