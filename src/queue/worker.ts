/**
 * The retry worker of queued mode: delivers spooled items, each to its one
 * target, with exponential backoff and jitter between attempts, the
 * receiver's Retry-After as a floor, a maximum age after which an item is a
 * dead letter, and a concurrency cap. Every attempt goes through the same
 * deliverToTargets as sync mode, so it is signed at send time and carries
 * the same webhook-id as every other attempt of that delivery.
 */
import type { Logger } from 'pino';
import { GatewayError } from '../core/errors.js';
import { attemptItem, attemptRecord, deadReason, retryDelay, type QueueDeliveryDeps } from './attempt.js';
import type { LocalSpool, SpoolEntry, SpoolMeta, SpoolState } from './spool.js';
import type { MessageBytes } from '../message/bytes.js';

export { retryDelay, type QueuePolicy } from './attempt.js';

/** Default of queue.rescanInterval: how often the spool directory is re-read for items added or purged by `postgate queue`. */
const RESCAN_MS = 30_000;

export interface QueueWorkerDeps extends QueueDeliveryDeps {
  spool: LocalSpool;
  /**
   * A delivery reached its end: delivered (with its content, read before the
   * item is removed), or dead with the last error (DSN hook). Awaited.
   */
  onFinal?(entry: SpoolEntry, delivered: boolean, error?: GatewayError, content?: { message: MessageBytes; eventJson: Buffer }): Promise<void>;
  /** After a failed attempt that will be retried: true records `dsnDelayed` (queue/outcome.ts, announceLocalDelay). */
  onRetry?(entry: SpoolEntry, error: GatewayError, content: { message: MessageBytes; eventJson: Buffer } | undefined): Promise<boolean>;
  /**
   * false: no timer of its own; attempts start only when runDue() is called.
   * For a caller that drives a fake clock, where a real timer firing during a
   * run would start the attempt the caller meant to start. Default true.
   */
  timer?: boolean;
  /**
   * How often the spool directory is re-read (queue.rescanInterval), so
   * items revived, replayed or purged by `postgate queue` are seen within it,
   * also when nothing else is queued. Default 30 s.
   */
  rescanMs?: number;
}

export class QueueWorker {
  private readonly index = new Map<string, SpoolEntry>();
  private readonly running = new Set<string>();
  private readonly inflight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private deadCount = 0;
  private lastScan = 0;
  private addedDuringScan: Set<string> | null = null;

  constructor(private readonly deps: QueueWorkerDeps) {}

  /** Loads the spool (recovering what a crash left) and starts the timer. */
  async start(): Promise<{ recovered: number; discarded: number }> {
    const { discarded } = await this.deps.spool.init();
    await this.rescan();
    this.schedule();
    return { recovered: this.index.size, discarded };
  }

  /** Items just spooled (their first attempt is due now). */
  add(entries: readonly SpoolEntry[]): void {
    for (const e of entries) {
      this.index.set(e.meta.itemId, e);
      this.addedDuringScan?.add(e.meta.itemId);
    }
    this.schedule(0);
  }

  /** Makes matching items due now (ETRN, `postgate queue retry`); returns how many. */
  flush(match: (meta: SpoolMeta) => boolean, _node?: string): number {
    let n = 0;
    for (const e of this.index.values()) {
      if (match(e.meta)) {
        e.state.nextAt = this.deps.now();
        n++;
      }
    }
    if (n) this.schedule(0);
    return n;
  }

  stats(): { depth: number; oldestAgeMs: number; dead: number; running: number } {
    let oldest = Number.POSITIVE_INFINITY;
    for (const e of this.index.values()) oldest = Math.min(oldest, Date.parse(e.meta.receivedAt));
    return {
      depth: this.index.size,
      oldestAgeMs: this.index.size ? Math.max(0, this.deps.now() - oldest) : 0,
      dead: this.deadCount,
      running: this.running.size,
    };
  }

  pending(match: (meta: SpoolMeta) => boolean = () => true): number {
    let n = 0;
    for (const e of this.index.values()) if (match(e.meta)) n++;
    return n;
  }

  /**
   * Picks up items that appeared in active/ from outside the process
   * (`postgate queue retry` / `replay`), and forgets purged ones.
   */
  async rescan(): Promise<void> {
    this.lastScan = this.deps.now();
    // Items added while the directory is read are not in the listing: keep them.
    const addedDuringScan = new Set<string>();
    this.addedDuringScan = addedDuringScan;
    const onDisk = new Set(await this.deps.spool.ids('active'));
    for (const id of onDisk) {
      if (this.index.has(id)) continue;
      const e = await this.deps.spool.entry('active', id).catch(() => null);
      if (e) this.index.set(id, e);
    }
    for (const id of this.index.keys()) if (!onDisk.has(id) && !this.running.has(id) && !addedDuringScan.has(id)) this.index.delete(id);
    this.addedDuringScan = null;
    this.deadCount = (await this.deps.spool.ids('dead')).length;
  }

  /** Starts every due item (up to the concurrency cap) and waits for those attempts. */
  async runDue(): Promise<number> {
    if (this.deps.now() - this.lastScan >= this.rescanMs) await this.rescan().catch(() => undefined);
    const now = this.deps.now();
    const due = [...this.index.values()]
      .filter((e) => !this.running.has(e.meta.itemId) && e.state.nextAt <= now)
      .sort((a, b) => a.state.nextAt - b.state.nextAt);
    const started: Promise<void>[] = [];
    for (const e of due) {
      if (this.running.size >= this.deps.policy.concurrency || this.stopped) break;
      this.running.add(e.meta.itemId);
      const p = this.attempt(e).finally(() => {
        this.running.delete(e.meta.itemId);
        this.inflight.delete(p);
        this.schedule();
      });
      this.inflight.add(p);
      started.push(p);
    }
    // Timers may fire a millisecond before Date.now() reaches nextAt: always re-arm.
    if (!started.length) this.schedule();
    await Promise.all(started);
    return started.length;
  }

  private get rescanMs(): number {
    return this.deps.rescanMs ?? RESCAN_MS;
  }

  /**
   * Arms the one timer: at the earliest due item, and never later than the
   * next rescan of the spool. An idle worker (nothing in its index) still
   * wakes for the rescan: an item that `postgate queue retry` or `replay`
   * puts into active/ is seen within rescanMs even when nothing else is
   * queued (without it, such an item waited for the next unrelated message).
   */
  private schedule(inMs?: number): void {
    if (this.stopped || this.deps.timer === false) return;
    const untilRescan = this.lastScan + this.rescanMs - this.deps.now();
    let wait = inMs ?? untilRescan;
    if (inMs === undefined) {
      for (const e of this.index.values()) if (!this.running.has(e.meta.itemId)) wait = Math.min(wait, e.state.nextAt - this.deps.now());
    }
    // +1: timers may fire a millisecond early. At most one rescan interval
    // away (clock changes, flushes from other paths).
    wait = Math.min(Math.max(wait + 1, 0), this.rescanMs);
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.runDue().catch((err: unknown) => this.deps.logger.error({ err: (err as Error).message }, 'queue run failed'));
    }, wait);
    this.timer.unref();
  }

  private async attempt(e: SpoolEntry): Promise<void> {
    const { spool, logger } = this.deps;
    const log = logger.child({ queueId: e.meta.queueId, item: e.meta.itemId, target: e.meta.targetId });
    let content: { message: MessageBytes; eventJson: Buffer } | undefined;
    let error: GatewayError | null;
    let httpStatus: number | undefined;
    const started = this.deps.now();
    try {
      content = await spool.content('active', e.meta.itemId);
      ({ error, httpStatus } = await attemptItem(e.meta, content, this.deps));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !(await this.deps.spool.exists('active', e.meta.itemId))) {
        // Purged by an operator (`postgate queue purge`) while we held it.
        this.index.delete(e.meta.itemId);
        log.info('queued item purged');
        return;
      }
      // The item could not be read: keep it and try again later (an operator can inspect it).
      log.error({ err: (err as Error).message, code: 'PG_QUEUE_READ' }, 'queued item unreadable');
      error = new GatewayError({ code: 'PG_QUEUE_READ', message: `spool item ${e.meta.itemId}: ${(err as Error).message}`, transient: true });
    }
    const attempts = e.state.attempts + 1;
    if (!error) {
      this.index.delete(e.meta.itemId);
      log.info({ attempts, deliveryId: e.meta.deliveryId }, 'queued delivery succeeded');
      this.deps.onAttempt?.(e.meta, 'delivered', { error: null, ms: this.deps.now() - started, httpStatus });
      await this.deps.onFinal?.(e, true, undefined, content)?.catch((err: unknown) => log.error({ err: (err as Error).message }, 'final hook failed'));
      await spool.remove(e.meta.itemId);
      return;
    }
    const history = [...e.state.history, attemptRecord(this.deps.now(), error)];
    const reason = deadReason(e.meta, error, attempts, this.deps);
    if (reason) {
      await this.finish(e, { ...e.state, attempts, history, deadReason: reason }, error, log, this.deps.now() - started);
      return;
    }
    const delay = retryDelay(attempts, this.deps.policy, this.deps.random ?? Math.random, error.retryAfterMs);
    const state: SpoolState = { ...(e.state.dsnDelayed ? { dsnDelayed: true } : {}), attempts, nextAt: this.deps.now() + delay, history };
    if (!state.dsnDelayed && this.deps.onRetry) {
      const reported = await this.deps.onRetry(e, error, content).catch((err: unknown) => {
        log.error({ err: (err as Error).message }, 'delay report hook failed');
        return false;
      });
      if (reported) state.dsnDelayed = true;
    }
    e.state = state;
    await spool.saveState('active', e.meta.itemId, state);
    log.info({ attempts, nextInMs: delay, code: error.code, err: error.message }, 'queued delivery failed, will retry');
    this.deps.onAttempt?.(e.meta, 'retry', { error, ms: this.deps.now() - started });
  }

  private async finish(e: SpoolEntry, state: SpoolState, error: GatewayError, log: Logger, ms: number): Promise<void> {
    this.index.delete(e.meta.itemId);
    await this.deps.spool.bury(e.meta.itemId, state);
    this.deadCount++;
    log.warn({ attempts: state.attempts, reason: state.deadReason, code: error.code, err: error.message }, 'queued delivery dead-lettered');
    this.deps.onAttempt?.(e.meta, 'dead', { error, ms });
    await this.deps.onFinal?.({ meta: e.meta, state }, false, error)?.catch((err: unknown) => log.error({ err: (err as Error).message }, 'final hook failed'));
  }

  /** Stops the timer and waits for attempts under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await Promise.all([...this.inflight]);
  }
}
