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
 * A permanent refusal (the receiver rejected the message) is not retried:
 * the job goes to the dead-letter queue at once, and the index says why.
 *
 * Before delivering, the index item is read: a destination already marked
 * `delivered` is skipped, so a duplicate job or a redrive never sends twice.
 */
import { createHash } from 'node:crypto';
import { ChangeMessageVisibilityCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import type { WebhookTargetConfig } from '../config/schema.js';
import { GatewayError } from '../core/errors.js';
import { deadline } from '../core/deadline.js';
import type { ClaimCheck, DeliveryMessage } from '../delivery/types.js';
import { createPoolCache, WebhookTarget } from '../delivery/webhook.js';
import { MessageBytes } from '../message/bytes.js';
import type { EmailEvent } from '../message/event.js';
import { deliveryId } from '../message/ids.js';
import { errorFields, getRuntime, log, type Runtime } from './common.js';
import type { RouteJob } from './store.js';

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
const targets = new Map<string, WebhookTarget>();

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
  const done = item.deliveries[job.destination];
  if (done?.status === 'delivered') {
    log('info', 'route skipped: already delivered', { id: job.id, destination: job.destination });
    return;
  }
  const found = targetFor(rt, job);
  if (!found) {
    await rt.store.markDelivery(job.id, job.destination, { status: 'dead', attempts: attempt, reason: `target ${job.target} is no longer configured` });
    await toDeadLetters(rt, rec.body);
    log('error', 'route target gone, moved to the dead-letter queue', { id: job.id, destination: job.destination });
    return;
  }
  const eventJson = await rt.store.getObject(job.bucket, job.key);
  const event = JSON.parse(eventJson.toString('utf8')) as EmailEvent;
  const d = event.data;
  const rcptTo = d.envelope.rcptTo.map((r) => r.address);
  const msg: DeliveryMessage = {
    queueId: d.id,
    mailFrom: d.envelope.mailFrom,
    rcptTo,
    receivedAt: new Date(d.receivedAt),
    // The webhook target sends the event, never the message bytes.
    message: MessageBytes.of(),
    rawSha256: d.raw.sha256,
    event,
    eventJson,
    claimCheck: async (): Promise<ClaimCheck> => {
      const url = await rt.store.presign(job.bucket, job.key, rt.settings.linkSeconds);
      const sha256 = createHash('sha256').update(eventJson).digest('hex');
      return { url, expiresAt: new Date(Date.now() + rt.settings.linkSeconds * 1000).toISOString(), size: eventJson.length, sha256 };
    },
  };
  // The edge's delivery id for this message and destination: a receiver that
  // got the message from an edge directly before sees the same webhook-id.
  const webhookId = deliveryId(msg.mailFrom, rcptTo, d.raw.sha256, job.destination);
  const limit = deadline(found.timeout, new AbortController().signal);
  try {
    await found.target.deliver(msg, webhookId, limit.signal);
  } catch (err) {
    const e = err instanceof GatewayError ? err : null;
    if (e && !e.transient) {
      await rt.store.markDelivery(job.id, job.destination, { status: 'rejected', attempts: attempt, reason: e.message });
      await toDeadLetters(rt, rec.body);
      log('warn', 'route refused permanently, moved to the dead-letter queue', { id: job.id, destination: job.destination, ...errorFields(err) });
      return;
    }
    await backoff(rt, rec, attempt);
    throw err;
  } finally {
    limit.done();
  }
  await rt.store.markDelivery(job.id, job.destination, { status: 'delivered', attempts: attempt });
  log('info', 'routed', { id: job.id, destination: job.destination, attempt, webhookId });
}

/** The webhook target of a job: the configured one, at the job's resolved URL when templated. */
function targetFor(rt: Runtime, job: RouteJob): { target: WebhookTarget; timeout: number } | null {
  const spec = findTarget(rt, job.target);
  if (!spec) return null;
  const url = job.url ?? spec.url;
  const key = `${spec.id}|${url}`;
  let t = targets.get(key);
  if (!t) {
    t = new WebhookTarget({ ...spec, url }, { pool: pools.pool, now: Date.now, denyPrivate: rt.config.delivery.denyPrivateAddresses !== 'never' && job.url !== undefined });
    targets.set(key, t);
  }
  return { target: t, timeout: spec.timeout };
}

function findTarget(rt: Runtime, id: string): WebhookTargetConfig | null {
  for (const list of [...rt.config.routes.map((r) => r.targets), rt.config.postmasterTargets]) {
    for (const t of list) if (t.type === 'webhook' && t.id === id) return t;
  }
  return null;
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
