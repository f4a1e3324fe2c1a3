/**
 * The `redrive` function: moves routing jobs from the dead-letter queue back
 * to the routing queue, all of them or those matching a filter, once the
 * cause is fixed (a receiver back up, a URL corrected). Invoke it directly:
 *
 *   serverless invoke -f redrive --data '{"destination":"orders","since":"2026-12-01T00:00:00Z"}'
 *
 * Input (all optional): `destination` (a destination id), `since` / `until`
 * (ISO-8601, compared with the message's receivedAt), `max` (default 1000).
 * A job is sent back before it is deleted from the dead-letter queue, so a
 * crash in between leaves a duplicate, never a loss; `route` skips
 * destinations already delivered, and signs each delivery when it sends it.
 * Jobs that do not match stay in the dead-letter queue (made visible again
 * at the end of the run).
 *
 * `from: "index"` resends what the dead-letter queue no longer holds: SQS
 * drops a dead letter after its retention (14 days), while the event stays
 * in S3 and the index keeps the destination's status (`dead`, `rejected`,
 * `gone`: DEAD_LETTER_STATUSES) until the message's retention ends. Each
 * such destination gets a new job (the stored event, the same delivery id)
 * and is marked `redriven`; the same filters apply. The job is sent before
 * the mark, so a crash in between leaves a second job on the next run,
 * which `route` skips once delivered.
 */
import {
  ChangeMessageVisibilityBatchCommand,
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type Message,
} from '@aws-sdk/client-sqs';
import { GatewayError } from '../core/errors.js';
import { getBase, log } from './common.js';
import type { RouteJob } from './store.js';

export interface RedriveInput {
  /** Where dead deliveries are found: the dead-letter queue (default) or the index. */
  from?: 'dlq' | 'index';
  destination?: string;
  since?: string;
  until?: string;
  max?: number;
}

export interface RedriveResult {
  moved: number;
  kept: number;
  examined: number;
}

function badInput(message: string): GatewayError {
  return new GatewayError({ code: 'PG_FN_BAD_EVENT', message: `redrive: ${message}`, transient: false });
}

function time(v: unknown, name: string): number | null {
  if (v === undefined || v === null || v === '') return null;
  const t = typeof v === 'string' ? Date.parse(v) : NaN;
  if (Number.isNaN(t)) throw badInput(`${name} must be an ISO-8601 date-time`);
  return t;
}

export async function handler(input: RedriveInput | null | undefined): Promise<RedriveResult> {
  const opts = input ?? {};
  const since = time(opts.since, 'since');
  const until = time(opts.until, 'until');
  const max = opts.max === undefined ? 1000 : Number(opts.max);
  if (!Number.isInteger(max) || max < 1) throw badInput('max must be a positive integer');
  if (opts.destination !== undefined && typeof opts.destination !== 'string') throw badInput('destination must be a string');
  const from = opts.from ?? 'dlq';
  if (from !== 'dlq' && from !== 'index') throw badInput('from must be "dlq" or "index"');

  const wanted = (job: Partial<RouteJob>): boolean => {
    if (opts.destination !== undefined && job.destination !== opts.destination) return false;
    const at = typeof job.receivedAt === 'string' ? Date.parse(job.receivedAt) : NaN;
    if (since !== null && !(at >= since)) return false;
    if (until !== null && !(at < until)) return false;
    return true;
  };
  const result = from === 'index' ? await fromIndex(wanted, max) : await fromDeadLetters(wanted, max);
  log('info', 'redrive', { ...result, from, filter: { destination: opts.destination, since: opts.since, until: opts.until } });
  return result;
}

/** Resends the destinations the index marks dead-lettered (see the module comment). */
async function fromIndex(wanted: (job: Partial<RouteJob>) => boolean, max: number): Promise<RedriveResult> {
  const { settings, store } = getBase();
  const queue = await store.queueUrl(settings.queue);
  let moved = 0;
  let kept = 0;
  let examined = 0;
  for await (const d of store.deadDeliveries()) {
    examined++;
    const job: RouteJob = { v: 1, id: d.id, destination: d.destination, key: d.eventKey, receivedAt: d.receivedAt };
    if (moved >= max || !wanted(job)) {
      kept++;
      continue;
    }
    await store.sqs.send(new SendMessageCommand({ QueueUrl: queue, MessageBody: JSON.stringify(job) }));
    // False when a route attempt changed the destination's status meanwhile:
    // the job just sent is then a duplicate that route skips once delivered.
    await store.markRedriven(d.id, d.destination);
    moved++;
  }
  return { moved, kept, examined };
}

/** Moves jobs from the dead-letter queue back to the routing queue. */
async function fromDeadLetters(wanted: (job: Partial<RouteJob>) => boolean, max: number): Promise<RedriveResult> {
  const { settings, store } = getBase();
  const { sqs } = store;
  const dlq = await store.queueUrl(settings.deadLetterQueue);
  const queue = await store.queueUrl(settings.queue);
  const matches = (body: string): boolean => {
    try {
      return wanted(JSON.parse(body) as Partial<RouteJob>);
    } catch {
      return false;
    }
  };

  const kept: Message[] = [];
  const seen = new Set<string>();
  let moved = 0;
  let examined = 0;
  let empty = 0;
  while (moved < max) {
    const r = await sqs.send(
      // The visibility timeout hides what this run has looked at until it ends.
      // Long polling (1 s) asks every SQS server: a short poll may answer
      // nothing from a small queue that is not empty.
      new ReceiveMessageCommand({ QueueUrl: dlq, MaxNumberOfMessages: 10, VisibilityTimeout: 300, WaitTimeSeconds: 1 }),
    );
    const batch = (r.Messages ?? []).filter((m) => m.MessageId && !seen.has(m.MessageId));
    if (!batch.length) {
      // Two empty answers in a row: nothing left that this run has not seen.
      if (++empty >= 2) break;
      continue;
    }
    empty = 0;
    for (const m of batch) {
      seen.add(m.MessageId!);
      examined++;
      if (moved >= max || !matches(m.Body ?? '')) {
        kept.push(m);
        continue;
      }
      await sqs.send(new SendMessageCommand({ QueueUrl: queue, MessageBody: m.Body! }));
      await sqs.send(new DeleteMessageCommand({ QueueUrl: dlq, ReceiptHandle: m.ReceiptHandle! }));
      moved++;
    }
  }
  // What stays is visible again for the next run or for inspection.
  for (let i = 0; i < kept.length; i += 10) {
    await sqs
      .send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: dlq,
          Entries: kept.slice(i, i + 10).map((m, n) => ({ Id: String(n), ReceiptHandle: m.ReceiptHandle!, VisibilityTimeout: 0 })),
        }),
      )
      .catch(() => undefined);
  }
  return { moved, kept: kept.length, examined };
}
