/**
 * A route's delivery mode decides what the 250 means (docs/architecture.md §2.1):
 *
 * - `sync`: every required target acknowledged.
 * - `queue`: the message is durably spooled (one item per target); the retry
 *   worker delivers it. Only a failed spool write defers the sender.
 * - `sync-then-queue`: targets are tried within `delivery.deadline`; what
 *   failed transiently (or did not answer in time) is spooled, and the
 *   reply is 250. A deliberate refusal still bounces (5xx), as in sync mode.
 */
import { failure } from '../transaction/replies.js';
import { deliverToTargets, type Delivery, type DeliveryOutcome } from '../delivery/index.js';
import { deliveryId } from '../message/ids.js';
import type { NewSpoolItem, SpoolEntry, SpoolMeta } from './spool.js';

export type DeliveryMode = 'sync' | 'queue' | 'sync-then-queue';

/** Durable storage of new items (the local spool, or S3 + SQS). */
export interface SpoolWriter {
  readonly root: string;
  put(items: readonly NewSpoolItem[], firstAttemptAt: number): Promise<void>;
}

/** What runs the items: the local retry worker, or the SQS consumer. */
export interface QueueRunner {
  add(entries: readonly SpoolEntry[]): void;
  pending(match?: (meta: SpoolMeta) => boolean): number;
  flush(match: (meta: SpoolMeta) => boolean, node: string): number | null;
  stats(): { depth: number; oldestAgeMs: number; dead: number };
  stop(): Promise<void>;
}

export interface Queue {
  spool: SpoolWriter;
  worker: QueueRunner;
  maxItems: number;
}

export interface DispatchResult extends DeliveryOutcome {
  /** Items spooled for the retry worker. */
  queued: number;
}

type DeliverOpts = Parameters<typeof deliverToTargets>[1];

interface DispatchOpts extends DeliverOpts {
  queue: Queue | null;
  route: string;
  /** The circuit breaker's view of a target (delivery.breaker): marked down. */
  isDown?: (targetId: string) => boolean;
}

export async function dispatch(
  mode: DeliveryMode,
  deliveries: readonly Delivery[],
  opts: DispatchOpts,
): Promise<DispatchResult> {
  if (mode === 'sync' || !opts.queue) return { ...(await deliverToTargets(deliveries, opts)), queued: 0 };
  const queue = opts.queue;
  if (mode === 'queue') {
    await spoolDeliveries(queue, deliveries, opts);
    return { ok: true, targets: [], queued: deliveries.length };
  }
  // A target marked down would most likely fail again, after making the
  // sender wait up to the deadline: its deliveries go to the spool at once,
  // and the retry worker finds out when it is back.
  const down: Delivery[] = [];
  const tryNow: Delivery[] = [];
  for (const d of deliveries) (opts.isDown?.(d.target.id) ? down : tryNow).push(d);
  if (!tryNow.some((d) => d.target.required)) {
    await spoolDeliveries(queue, deliveries, opts);
    return { ok: true, targets: [], queued: deliveries.length };
  }
  const result = await deliverToTargets(tryNow, opts);
  if (result.error && !result.error.transient) return { ...result, queued: 0 };
  // Transient trouble within the deadline: keep the message ourselves and
  // retry it, instead of handing the retries to the sender's queue.
  // (When every required target acknowledged, a failed optional one is not
  // spooled: as in sync mode, it never holds the reply.)
  const failed = new Set(result.ok ? [] : result.targets.filter((t) => !t.ok).map((t) => t.targetId));
  const rest = [...down, ...tryNow.filter((d) => failed.has(d.target.id))];
  if (rest.length) await spoolDeliveries(queue, rest, opts);
  return { ok: true, targets: result.targets, queued: rest.length };
}

async function spoolDeliveries(queue: Queue, deliveries: readonly Delivery[], opts: DeliverOpts & { route: string }): Promise<void> {
  if (queue.worker.pending() + deliveries.length > queue.maxItems) {
    throw failure('PG_QUEUE_FULL', { message: `the spool holds ${queue.worker.pending()} items (queue.maxItems ${queue.maxItems})` });
  }
  const now = opts.now();
  const entries: SpoolEntry[] = [];
  const items = deliveries.map((d, i) => {
    const meta = {
      itemId: `${d.msg.queueId}-${i}`,
      queueId: d.msg.queueId,
      deliveryId: deliveryId(d.msg.mailFrom, d.msg.rcptTo, d.msg.rawSha256, d.target.id),
      targetId: d.target.id,
      required: d.target.required,
      route: opts.route,
      mailFrom: d.msg.mailFrom,
      rcptTo: [...d.msg.rcptTo],
      rawSha256: d.msg.rawSha256,
      receivedAt: d.msg.receivedAt.toISOString(),
      spooledAt: new Date(now).toISOString(),
    };
    entries.push({ meta, state: { attempts: 0, nextAt: now, history: [] } });
    return { meta, message: d.msg.message, eventJson: d.msg.eventJson };
  });
  try {
    await queue.spool.put(items, now);
  } catch (err) {
    throw failure('PG_QUEUE_WRITE', { message: `spool ${queue.spool.root}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, cause: err });
  }
  queue.worker.add(entries);
}
