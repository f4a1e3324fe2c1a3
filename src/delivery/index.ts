/**
 * Fan-out of one accepted transaction to its route's targets under one
 * deadline, and the outcome that becomes the SMTP reply (docs/architecture.md §2):
 * every required target acknowledged → 250; a permanent refusal → 5xx;
 * anything else (failure, timeout, deadline) → 4xx, and the sender retries.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { GatewayError } from '../core/errors.js';
import { failure, toGatewayError } from '../transaction/replies.js';
import { deliveryId } from '../message/ids.js';
import type { TargetConfig } from '../config/schema.js';
import { LocalStoreTarget } from './local.js';
import { WebhookTarget, type WebhookDeps } from './webhook.js';
import { LambdaTarget } from './lambda.js';
import { S3Target } from './s3.js';
import type { AwsClientCache } from './aws-clients.js';
import type { DeliveryMessage, Target } from './types.js';
import type { SkipStore } from './skip-store.js';
import { deadline } from '../core/deadline.js';

export type { DeliveryMessage, Target, ClaimCheck } from './types.js';
export { MemorySkipStore, type SkipStore } from './skip-store.js';
export { DynamoSkipStore } from './dynamo-skip-store.js';
export { LambdaTarget } from './lambda.js';
export { S3Target } from './s3.js';
export { createAwsClients, type AwsClientCache } from './aws-clients.js';

/** What targets share: webhook pools, the clock and (optional) AWS clients; without `aws` an AWS target makes its own. */
export type TargetDeps = WebhookDeps & { aws?: AwsClientCache };

export function createTarget(cfg: TargetConfig, deps: TargetDeps): Target {
  switch (cfg.type) {
    case 'webhook':
      return new WebhookTarget(cfg, deps);
    case 'local':
      // ids and paths are resolved by the config loader
      return new LocalStoreTarget(cfg.id!, cfg.path!, cfg.required);
    case 'lambda':
      return new LambdaTarget(cfg, deps.aws);
    case 's3':
      return new S3Target(cfg, deps.aws);
  }
}

/**
 * Per-target health (docs/smtp.md, command table, RCPT `451 4.4.1`): after `failures` consecutive
 * transient failures a target is "known down" for `cooldownMs`; meanwhile RCPT
 * for a route that needs it answers 451 4.4.1 at once, instead of every sender
 * sending the whole message and waiting for the deadline. After the cooldown
 * traffic flows again (half-open): one more failure reopens it, a success
 * closes it.
 */
export class CircuitBreakers {
  private readonly state = new Map<string, { failures: number; openUntil: number }>();
  constructor(
    private readonly failures: number,
    private readonly cooldownMs: number,
    private readonly now: () => number,
  ) {}
  isDown(targetId: string): boolean {
    const s = this.state.get(targetId);
    return s !== undefined && s.openUntil > this.now();
  }
  /**
   * Down until restart: a webhook answered 410 Gone, which Standard Webhooks
   * defines as "stop sending". Mail for its routes is deferred (RCPT 451
   * 4.4.1), never bounced, while an operator decides.
   */
  disable(targetId: string): void {
    this.state.set(targetId, { failures: Number.POSITIVE_INFINITY, openUntil: Number.POSITIVE_INFINITY });
  }

  isDisabled(targetId: string): boolean {
    return this.state.get(targetId)?.openUntil === Number.POSITIVE_INFINITY;
  }

  /** Returns true when this outcome opened the breaker. */
  record(targetId: string, ok: boolean, transient: boolean): boolean {
    const s0 = this.state.get(targetId);
    if (s0 && s0.openUntil === Number.POSITIVE_INFINITY) return false;
    if (ok || !transient) {
      // A permanent refusal is an answer from a working receiver.
      this.state.delete(targetId);
      return false;
    }
    const s = this.state.get(targetId) ?? { failures: 0, openUntil: 0 };
    s.failures++;
    this.state.set(targetId, s);
    if (s.failures >= this.failures && s.openUntil <= this.now()) {
      s.openUntil = this.now() + this.cooldownMs;
      return true;
    }
    return false;
  }
}

export interface TargetOutcome {
  targetId: string;
  ok: boolean;
  skipped: boolean;
  ms: number;
  /** Attempts made (0 when skipped). */
  attempts: number;
  error?: GatewayError;
  /** The HTTP status of the last attempt's answer, when the target spoke HTTP. */
  httpStatus?: number | undefined;
}

export interface DeliveryOutcome {
  ok: boolean;
  /** Set when !ok: the error whose reply is sent. */
  error?: GatewayError;
  targets: TargetOutcome[];
}


export interface RetryPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
  /** Attempts per target within one deadline, the first included. */
  maxAttempts?: number;
  /** [0, 1); injectable so tests can pin the jitter. */
  random?: () => number;
}

const DEFAULT_RETRY: RetryPolicy = { initialDelayMs: 250, maxDelayMs: 5_000 };
const notSeen = (): boolean => false;
const ignore = (): undefined => undefined;
/** An attempt with less time than this left is not worth starting. */
const MIN_ATTEMPT_MS = 100;

/**
 * The pause before the next attempt, or null to give up now: exponential
 * backoff with full jitter (a thundering herd of retries against a receiver
 * that just came back is spread out), never shorter than the receiver's
 * Retry-After, and only when the attempt after it still fits the deadline;
 * a Retry-After beyond the deadline defers at once (the sender's queue waits).
 */
export function retryPause(attempt: number, error: GatewayError, leftMs: number, opts: { retry?: RetryPolicy | false | undefined }): number | null {
  if (opts.retry === false) return null;
  const p = opts.retry ?? DEFAULT_RETRY;
  if (attempt >= (p.maxAttempts ?? Number.POSITIVE_INFINITY)) return null;
  const ceiling = Math.min(p.maxDelayMs, p.initialDelayMs * 2 ** (attempt - 1));
  const pause = Math.max((p.random ?? Math.random)() * ceiling, error.retryAfterMs ?? 0);
  return pause + MIN_ATTEMPT_MS <= leftMs ? Math.round(pause) : null;
}

/**
 * One target's share of a transaction. Usually every target gets the same
 * message; a route whose target URLs use recipient captures gives each
 * resolved target only its own recipients (and so its own delivery id).
 */
export interface Delivery {
  target: Target;
  msg: DeliveryMessage;
}

export async function deliverToTargets(
  deliveries: readonly Delivery[],
  opts: {
    deadlineMs: number;
    skip: SkipStore;
    now: () => number;
    onTarget?: (t: Target, o: TargetOutcome) => void;
    onSkipStoreError?: (err: unknown) => void;
    onRetry?: (t: Target, r: { attempt: number; pauseMs: number; error: GatewayError }) => void;
    /** false: one attempt per target (the queue worker schedules its own retries). */
    retry?: RetryPolicy | false;
  },
): Promise<DeliveryOutcome> {
  // Some targets cannot be interrupted (an fsync); the deadline still decides
  // the reply: `expired` rejects when the deadline's timer fires (the signal
  // has no parent, so that is the only way it aborts).
  let fail!: (reason: Error) => void;
  const expired = new Promise<never>((_, reject) => (fail = reject));
  expired.catch(ignore);
  const dl = deadline(opts.deadlineMs, undefined, fail);
  const signal = dl.signal;
  const deadlineAt = performance.now() + opts.deadlineMs;
  const skipStoreError = opts.onSkipStoreError ?? ignore;
  const runOne = async ({ target: t, msg }: Delivery): Promise<TargetOutcome> => {
    const id = deliveryId(msg.mailFrom, msg.rcptTo, msg.rawSha256, t.id);
    const started = performance.now();
    let outcome: TargetOutcome;
    // A failed lookup delivers again (a duplicate), never skips (a loss).
    if (await opts.skip.has(id).catch(notSeen)) {
      outcome = { targetId: t.id, ok: true, skipped: true, ms: 0, attempts: 0 };
    } else {
      let attempts = 0;
      for (;;) {
        attempts++;
        try {
          const receipt = await Promise.race([t.deliver(msg, id, signal), expired]);
          await opts.skip.add(id).catch(skipStoreError);
          outcome = { targetId: t.id, ok: true, skipped: false, ms: performance.now() - started, attempts, httpStatus: receipt?.httpStatus };
          break;
        } catch (err) {
          let error = toGatewayError(err, `target ${t.id}`);
          if (signal.aborted && error.transient) {
            // RFC 3463 4.4.7: delivery time expired; the sender keeps the message.
            const status = error.httpStatus;
            error = failure('PG_DELIVERY_EXPIRED', { message: `delivery deadline of ${opts.deadlineMs} ms passed after ${attempts} attempt(s) (${error.message})`, cause: err });
            error.httpStatus = status;
          }
          const pause = error.retryable && !signal.aborted && opts.retry !== false ? retryPause(attempts, error, deadlineAt - performance.now(), opts) : null;
          if (pause === null) {
            outcome = { targetId: t.id, ok: false, skipped: false, ms: performance.now() - started, attempts, error, httpStatus: error.httpStatus };
            break;
          }
          opts.onRetry?.(t, { attempt: attempts, pauseMs: pause, error });
          try {
            await sleep(pause, undefined, { signal });
          } catch {
            // the deadline passed while waiting: the next attempt reports it
          }
        }
      }
    }
    opts.onTarget?.(t, outcome);
    return outcome;
  };
  // Optional targets never hold the reply (docs/architecture.md §2.1): they run on, bounded by
  // the same deadline, and report through onTarget.
  const optional = deliveries.filter((d) => !d.target.required).map(runOne);
  const required = deliveries.filter((d) => d.target.required).map(runOne);
  // The deadline's timer goes once every target, optional ones included, is done.
  void Promise.allSettled([...optional, ...required]).then(() => dl.done());
  const results = await Promise.all(required);
  const failed = results.filter((r) => !r.ok);
  if (failed.length === 0) return { ok: true, targets: results };
  // A permanent refusal wins: retrying would be refused again.
  const permanent = failed.find((r) => r.error && !r.error.transient);
  return { ok: false, error: (permanent ?? failed[0]!).error!, targets: results };
}
