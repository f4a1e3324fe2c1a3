/**
 * One attempt of one queued item, shared by the local retry worker and the
 * SQS consumer: the same deliverToTargets as sync mode (signed at send time,
 * the same webhook-id every time), a single try (the queue's own schedule is
 * the retry loop), and one rule for what a failure means.
 */
import type { Logger } from 'pino';
import { GatewayError } from '../core/errors.js';
import { deliverToTargets, type SkipStore, type Target } from '../delivery/index.js';
import { claimCheckOnce } from '../delivery/claim-check.js';
import type { EmailEvent } from '../message/event.js';
import type { BlobSink } from '../message/parse.js';
import type { MessageBytes } from '../message/bytes.js';
import type { SpoolAttempt, SpoolMeta } from './spool.js';

export interface QueuePolicy {
  initialDelayMs: number;
  maxDelayMs: number;
  maxAgeMs: number;
  concurrency: number;
}

/** What both queue runners need to deliver items. */
export interface QueueDeliveryDeps {
  target(id: string): Target | undefined;
  skip: SkipStore;
  blobs: BlobSink | null;
  now(): number;
  random?: () => number;
  logger: Logger;
  deadlineMs: number;
  policy: QueuePolicy;
  /** After each attempt: how it ended, its failure, and how long it took (metrics, the message console). */
  onAttempt?(meta: SpoolMeta, outcome: 'delivered' | 'retry' | 'dead', detail?: { error: GatewayError | null; ms: number; httpStatus?: number | undefined }): void;
}

/**
 * Pause after the n-th failed attempt: initialDelay·2^(n−1), at most
 * maxDelay, with "equal jitter" (half fixed, half random) so a backlog that
 * failed together does not come back together; never shorter than Retry-After.
 */
export function retryDelay(attempts: number, policy: Pick<QueuePolicy, 'initialDelayMs' | 'maxDelayMs'>, random: () => number, retryAfterMs?: number): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.max(0, attempts - 1));
  const delay = ceiling / 2 + random() * (ceiling / 2);
  return Math.round(Math.max(delay, retryAfterMs ?? 0));
}

/** What one attempt of an item came to: its failure (null when acknowledged) and the HTTP status the target read, if any. */
export interface ItemAttempt {
  error: GatewayError | null;
  httpStatus?: number | undefined;
}

/** Delivers one item's content to its target. */
export async function attemptItem(meta: SpoolMeta, content: { message: MessageBytes; eventJson: Buffer } | null, deps: QueueDeliveryDeps): Promise<ItemAttempt> {
  if (!content) return { error: new GatewayError({ code: 'PG_QUEUE_READ', message: `the content of ${meta.itemId} is missing`, transient: false }) };
  const target = deps.target(meta.targetId);
  if (!target) return { error: new GatewayError({ code: 'PG_QUEUE_TARGET_GONE', message: `target ${meta.targetId} is no longer configured`, transient: false }) };
  const { message, eventJson } = content;
  const outcome = await deliverToTargets(
    [
      {
        target,
        msg: {
          queueId: meta.queueId,
          mailFrom: meta.mailFrom,
          rcptTo: meta.rcptTo,
          receivedAt: new Date(meta.receivedAt),
          message,
          rawSha256: meta.rawSha256,
          event: JSON.parse(eventJson.toString('utf8')) as EmailEvent,
          eventJson,
          claimCheck: claimCheckOnce(eventJson, deps.blobs),
        },
      },
    ],
    { deadlineMs: deps.deadlineMs, skip: deps.skip, now: deps.now, retry: false },
  );
  return { error: outcome.ok ? null : outcome.error!, httpStatus: outcome.targets[0]?.httpStatus };
}

/** The history line of a failed attempt. */
export function attemptRecord(at: number, error: GatewayError): SpoolAttempt {
  return { at: new Date(at).toISOString(), ok: false, code: error.code, reply: error.smtp ? `${error.smtp.code} ${error.smtp.enhanced}` : undefined, error: error.message };
}

/** Why a failed item is dead now (a refusal, or too old), or null to retry it. */
export function deadReason(meta: SpoolMeta, error: GatewayError, attempts: number, deps: Pick<QueueDeliveryDeps, 'now' | 'policy'>): string | null {
  if (error.code === 'PG_QUEUE_TARGET_GONE') return 'target no longer configured';
  if (error.code === 'PG_QUEUE_READ' && !error.transient) return 'content missing';
  if (!error.transient) return 'refused by the target';
  if (deps.now() - Date.parse(meta.receivedAt) >= deps.policy.maxAgeMs) return `expired after ${attempts} attempts`;
  return null;
}
