/**
 * The `route` function: consumes routing jobs from SQS (one per event and
 * destination, an S3 pointer each) and delivers the stored event to the
 * destination's webhook with the edge's own webhook target: the same
 * Standard Webhooks signature (made at send time, so every retry and every
 * redrive is signed afresh), the same `webhook-id` as the edge would use, the
 * same answer table, the claim check for receivers that answer 413.
 *
 * Retries go through SQS: a failed record is reported in
 * `batchItemFailures` (partial batch response), and its visibility timeout is
 * set to an exponential backoff, so the next attempt comes after
 * POSTGATE_RETRY_BASE × 2^(attempt−1) seconds (at most 900). After the
 * queue's maxReceiveCount, SQS moves the job to the dead-letter queue.
 * A permanent refusal (the receiver rejected the message, or answered 410
 * Gone) is not retried: the job goes to the dead-letter queue at once, and
 * the index says why. Every failure is recorded in the index
 * (`retrying`, then `dead` at the last attempt).
 *
 * The destination is recomputed from the stored event and the routes file,
 * as the edge would group it: a destination that takes only some recipients
 * gets the event with only those in its envelope, and the edge's delivery id
 * over them.
 *
 * Before delivering, the index item is read: a destination already marked
 * `delivered` is skipped, so a duplicate job or a redrive never sends twice.
 */
import { createHash } from 'node:crypto';
import { ChangeMessageVisibilityCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import { GatewayError } from '../core/errors.js';
import { deadline } from '../core/deadline.js';
import type { ClaimCheck, DeliveryMessage } from '../delivery/types.js';
import { createPoolCache, WebhookTarget } from '../delivery/webhook.js';
import { MessageBytes } from '../message/bytes.js';
import { eventForRecipients, type EmailEvent } from '../message/event.js';
import { deliveryId } from '../message/ids.js';
import { destinationsOf, errorFields, getRuntime, log, type Runtime } from './common.js';
import { linkedParts, Store, type IndexItem, type RouteJob } from './store.js';

interface SqsRecord {
  messageId: string;
  receiptHandle: string;
  body: string;
  attributes?: { ApproximateReceiveCount?: string };
}

export interface SqsBatchResponse {
  batchItemFailures: { itemIdentifier: string }[];
}

const pools = createPoolCache();

export async function handler(event: { Records?: SqsRecord[] }): Promise<SqsBatchResponse> {
  const rt = await getRuntime();
  const failures: { itemIdentifier: string }[] = [];
  // Records of one batch are independent: deliver them concurrently.
  await Promise.all(
    (event.Records ?? []).map(async (rec) => {
      try {
        await routeOne(rt, rec);
      } catch (err) {
        failures.push({ itemIdentifier: rec.messageId });
        log('warn', 'route attempt failed', { messageId: rec.messageId, ...errorFields(err) });
      }
    }),
  );
  return { batchItemFailures: failures };
}

async function routeOne(rt: Runtime, rec: SqsRecord): Promise<void> {
  const attempt = Number(rec.attributes?.ApproximateReceiveCount ?? '1') || 1;
  let job: RouteJob;
  try {
    job = JSON.parse(rec.body) as RouteJob;
    if (job.v !== 1 || typeof job.id !== 'string' || typeof job.destination !== 'string' || typeof job.key !== 'string') throw new Error('bad job');
  } catch {
    // Not ours or corrupt: no retry mends it; the dead-letter queue keeps it for a look.
    await toDeadLetters(rt, rec.body);
    log('error', 'route job unreadable, moved to the dead-letter queue', { messageId: rec.messageId });
    return;
  }
  const item = await rt.store.getItem(job.id);
  if (!item) throw new Error(`no index item ${job.id}`);
  if (item.deliveries[job.destination]?.status === 'delivered') {
    log('info', 'route skipped: already delivered', { id: job.id, destination: job.destination });
    return;
  }
  // The index item names the event, not the job: a job cannot point route at
  // another object.
  if (!item.eventKey) throw new Error(`index item ${job.id} names no event`);
  const stored = await rt.store.getObject(item.eventKey);
  const full = JSON.parse(stored.toString('utf8')) as EmailEvent;
  const d = full.data;
  // The destination as the routes file makes it for this event now: its URL,
  // its recipients. A destination that is no longer routed is a dead letter.
  const dest = destinationsOf(rt, d).destinations.find((x) => x.id === job.destination);
  if (!dest) {
    await rt.store.markDelivery(job.id, job.destination, { status: 'dead', attempts: attempt, reason: 'the routes file no longer routes this message to this destination' });
    await toDeadLetters(rt, rec.body);
    log('error', 'route destination gone, moved to the dead-letter queue', { id: job.id, destination: job.destination });
    return;
  }
  // Like the edge: a destination that takes only some recipients sees only those.
  const partial = new Set(d.envelope.rcptTo.map((r) => r.address)).size !== dest.recipients.length;
  // Links into the edge's blob store give way to fresh links to ingest's copies.
  const relinked = await relink(rt, item, full);
  const event = partial ? eventForRecipients(relinked ?? full, new Set(dest.recipients)) : (relinked ?? full);
  // The stored bytes go out as they are unless this destination's event differs.
  const own = partial || relinked !== null;
  const eventJson = own ? Buffer.from(JSON.stringify(event)) : stored;
  const msg: DeliveryMessage = {
    queueId: d.id,
    mailFrom: d.envelope.mailFrom,
    rcptTo: dest.recipients,
    receivedAt: new Date(d.receivedAt),
    // The webhook target sends the event, never the message bytes.
    message: MessageBytes.of(),
    rawSha256: d.raw.sha256,
    event,
    eventJson,
    claimCheck: async (): Promise<ClaimCheck> => {
      // The link serves exactly what this destination may see.
      let key = item.eventKey;
      if (own) {
        key = Store.destinationKey(item.eventKey, dest.id);
        await rt.store.putObject(key, eventJson, 'application/json');
      }
      const sha256 = createHash('sha256').update(eventJson).digest('hex');
      return { ...(await rt.store.presign(key, rt.settings.linkSeconds)), size: eventJson.length, sha256 };
    },
  };
  // The edge's delivery id for this message and destination: a receiver that
  // gets mail from an edge directly too sees the same webhook-id.
  const webhookId = deliveryId(msg.mailFrom, dest.recipients, d.raw.sha256, dest.id);
  // A fresh target per job (connections are pooled): a 410 Gone must not
  // disable the destination for the rest of a warm container's life.
  const mode = rt.config.delivery.denyPrivateAddresses;
  const target = new WebhookTarget(
    { ...dest.spec, url: dest.url ?? dest.spec.url },
    // delivery.denyPrivateAddresses as at the edge: "templated" guards URLs built from captures only.
    { pool: pools.pool, now: Date.now, denyPrivate: mode === 'always' || (mode === 'templated' && dest.url !== null) },
  );
  const limit = deadline(dest.spec.timeout, new AbortController().signal);
  try {
    await target.deliver(msg, webhookId, limit.signal);
  } catch (err) {
    const e = err instanceof GatewayError ? err : null;
    const reason = e?.message ?? String(err);
    if ((e && !e.transient) || e?.code === 'PG_TARGET_DISABLED') {
      // A refusal (or 410 Gone): trying again cannot help.
      await rt.store.markDelivery(job.id, job.destination, { status: e.code === 'PG_TARGET_DISABLED' ? 'gone' : 'rejected', attempts: attempt, reason });
      await toDeadLetters(rt, rec.body);
      log('warn', 'route refused permanently, moved to the dead-letter queue', { id: job.id, destination: job.destination, ...errorFields(err) });
      return;
    }
    // After the last attempt SQS moves the job to the dead-letter queue: say so in the index.
    const last = attempt >= rt.settings.maxAttempts;
    await rt.store.markDelivery(job.id, job.destination, { status: last ? 'dead' : 'retrying', attempts: attempt, reason }).catch(() => undefined);
    // Also after the last one: the job is dead-lettered when it next becomes visible.
    await backoff(rt, rec, attempt);
    throw err;
  } finally {
    limit.done();
  }
  await rt.store.markDelivery(job.id, job.destination, { status: 'delivered', attempts: attempt });
  log('info', 'routed', { id: job.id, destination: job.destination, attempt, webhookId });
}

/**
 * The event with each part ingest copied (see linkedParts) and a linked raw
 * message pointing at the copy in the functions' bucket, by a link signed
 * now; null when the event links nothing ingest copied.
 */
async function relink(rt: Runtime, item: IndexItem, event: EmailEvent): Promise<EmailEvent | null> {
  const d = event.data;
  const copied = new Set(item.parts);
  const parts = linkedParts(d).filter((p) => copied.has(p.name));
  const raw = typeof d.raw.url === 'string' && item.rawKey ? item.rawKey : null;
  if (!parts.length && !raw) return null;
  const link = (key: string) => rt.store.presign(key, rt.settings.linkSeconds);
  const data = { ...d, attachments: [...d.attachments] };
  for (const p of parts) {
    const fresh = await link(Store.partKey(item.eventKey, p.name));
    if (typeof p.at === 'number') data.attachments[p.at] = { ...d.attachments[p.at]!, ...fresh };
    else data[p.at] = { ...d[p.at]!, ...fresh };
  }
  if (raw) data.raw = { ...d.raw, ...(await link(raw)) };
  return { ...event, data };
}

async function backoff(rt: Runtime, rec: SqsRecord, attempt: number): Promise<void> {
  const seconds = Math.min(900, rt.settings.retryBaseSeconds * 2 ** (attempt - 1));
  try {
    await rt.store.sqs.send(
      new ChangeMessageVisibilityCommand({ QueueUrl: await rt.store.queueUrl(rt.settings.queue), ReceiptHandle: rec.receiptHandle, VisibilityTimeout: seconds }),
    );
  } catch (err) {
    // The queue's own visibility timeout applies instead.
    log('warn', 'could not set the retry delay', errorFields(err));
  }
}

async function toDeadLetters(rt: Runtime, body: string): Promise<void> {
  await rt.store.sqs.send(new SendMessageCommand({ QueueUrl: await rt.store.queueUrl(rt.settings.deadLetterQueue), MessageBody: body }));
}
