/**
 * The shared spool for several edge instances: each item's message, event
 * and meta in S3, and one SQS message per item as the work item. Any
 * instance may deliver any item: SQS hands a message to one consumer at a
 * time (visibility timeout) and gives it again if that consumer dies.
 *
 *   s3://<bucket>/<prefix>items/<itemId>/{message.eml,event.json,meta.json,state.json}
 *   s3://<bucket>/<prefix>dead/<itemId>.json      dead letter: meta + state
 *
 * The 250 is sent once the objects are stored and SendMessage acknowledged.
 * A crash between the two leaves objects without a work item: the sender got
 * no 250 and retries; a bucket lifecycle rule removes the orphans.
 *
 * The objects and their keys are S3Spool's (s3-spool.ts), which `postgate
 * queue` uses too; a work item whose objects are gone was purged and is
 * dropped.
 *
 * Retries: a failed attempt hides its SQS message for the backoff delay
 * (ChangeMessageVisibility, at most 12 hours as SQS allows); the attempt count
 * is SQS's ApproximateReceiveCount, the history is in state.json.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  type Message,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { GatewayError } from '../core/errors.js';
import type { NewSpoolItem, SpoolEntry, SpoolMeta, SpoolState } from './spool.js';
import { S3Spool } from './s3-spool.js';
import { nodeMatcher } from './etrn.js';
import { attemptItem, attemptRecord, deadReason, retryDelay, type QueueDeliveryDeps } from './attempt.js';
import { MessageBytes } from '../message/bytes.js';

/** How often an instance reads the other instances' ETRN requests, and how long a request is kept. */
const ETRN_POLL_MS = 2_000;
const ETRN_KEEP_MS = 10 * 60_000;

/** SQS's longest visibility timeout: 12 hours. */
const MAX_VISIBILITY_S = 43_200;
const MAX_HISTORY = 50;

export interface SqsQueueOptions extends QueueDeliveryDeps {
  s3: S3Client;
  sqs: SQSClient;
  bucket: string;
  prefix: string;
  queueUrl: string;
  /** Long-poll wait of ReceiveMessage, seconds (0–20). */
  pollWaitS: number;
  /** How often the age of the oldest stored item is measured (a listing of the bucket's items). */
  rescanMs?: number;
  /** After an item's last attempt (delivered, or dead with the error): the message's outcome (queue/outcome.ts). */
  onFinal?: (store: S3Spool, meta: SpoolMeta, delivered: boolean, error: GatewayError | undefined, content: { message: MessageBytes; eventJson: Buffer }) => Promise<void>;
  /** After a failed attempt that will be retried (the delay report, queue/outcome.ts). */
  onRetry?: (store: S3Spool, meta: SpoolMeta, error: GatewayError, content: { message: MessageBytes; eventJson: Buffer }) => Promise<void>;
}

export class SqsQueue {
  readonly root: string;
  readonly store: S3Spool;
  private stopped = false;
  private running = 0;
  private loop: Promise<void> | null = null;
  private readonly inflight = new Set<Promise<void>>();
  private depth = 0;
  private dead = 0;
  private oldestAt: number | null = null;
  private oldestTimer: NodeJS.Timeout | null = null;
  /**
   * Items this instance hid for their retry pause, with the receipt handle
   * that can show them again (only the last receiver holds a valid one): what
   * ETRN can start here.
   */
  private readonly held = new Map<string, { receipt: string; meta: SpoolMeta }>();
  private readonly instance = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  private etrnTimer: NodeJS.Timeout | null = null;
  private readonly etrnSeen = new Set<string>();
  private abort = new AbortController();

  constructor(private readonly o: SqsQueueOptions) {
    this.store = new S3Spool(o);
    this.root = this.store.root;
  }

  async start(): Promise<{ recovered: number; discarded: number }> {
    await this.refreshDepth();
    await this.refreshOldest();
    this.watchEtrn();
    this.loop = this.poll();
    return { recovered: this.depth, discarded: 0 };
  }

  async put(items: readonly NewSpoolItem[], _firstAttemptAt: number): Promise<void> {
    await this.store.put(items);
    this.depth += items.length;
    if (this.oldestAt === null && items.length) this.oldestAt = this.o.now();
  }

  /** New items are visible in SQS at once; nothing to schedule. */
  add(_entries: readonly SpoolEntry[]): void {}

  /** The approximate depth across instances (refreshed every poll). */
  pending(_match?: (meta: SpoolMeta) => boolean): number {
    return this.depth;
  }

  /**
   * ETRN (RFC 1985) on a shared queue: shows this instance's held items of
   * the node at once and leaves the request in the bucket for the others
   * (`<prefix>etrn/<time>-<instance>`, the node as its body), which look
   * every ETRN_POLL_MS while they hold items. How many start in all is not
   * known here: null (250, not 253).
   */
  flush(match: (meta: SpoolMeta) => boolean, node: string): number | null {
    this.showHeld(match);
    const key = `${this.o.prefix}etrn/${Date.now()}-${this.instance}`;
    this.etrnSeen.add(key);
    this.store.putObject(key, node, 'text/plain').catch((err: unknown) => this.o.logger.warn({ err: (err as Error).message, node }, 'ETRN request not passed on to the other instances'));
    return null;
  }

  /** Makes the held items that match visible now; how many. */
  private showHeld(match: (meta: SpoolMeta) => boolean): number {
    let n = 0;
    for (const [id, h] of this.held) {
      if (!match(h.meta)) continue;
      this.held.delete(id);
      n++;
      this.o.sqs
        .send(new ChangeMessageVisibilityCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: h.receipt, VisibilityTimeout: 0 }))
        .catch((err: unknown) => this.o.logger.debug({ err: (err as Error).message, item: id }, 'ETRN: item not shown (received elsewhere meanwhile)'));
    }
    return n;
  }

  /**
   * Other instances' ETRN requests, read only while this instance holds
   * items (a listing every ETRN_POLL_MS costs S3 requests); a request counts
   * for the items held when it was made, so one older than the time this
   * instance began to hold is not acted on. Requests older than
   * ETRN_KEEP_MS are removed.
   */
  private watchEtrn(): void {
    let holdingSince = Date.now();
    const tick = async () => {
      if (this.stopped) return;
      try {
        if (!this.held.size) holdingSince = Date.now();
        else await this.readEtrn(holdingSince - ETRN_POLL_MS);
      } catch (err) {
        this.o.logger.warn({ err: (err as Error).message }, 'ETRN requests could not be read');
      }
      if (this.stopped) return;
      this.etrnTimer = setTimeout(() => void tick(), ETRN_POLL_MS);
      this.etrnTimer.unref();
    };
    this.etrnTimer = setTimeout(() => void tick(), ETRN_POLL_MS);
    this.etrnTimer.unref();
  }

  private async readEtrn(since: number): Promise<void> {
    const base = `${this.o.prefix}etrn/`;
    for (const o of await this.store.objects(base)) {
      const key = o.Key!;
      const at = Number(key.slice(base.length).split('-')[0]);
      if (!(at >= 0) || Date.now() - at > ETRN_KEEP_MS) {
        await this.store.remove(key).catch(() => undefined);
        this.etrnSeen.delete(key);
        continue;
      }
      if (this.etrnSeen.has(key) || at < since) continue;
      this.etrnSeen.add(key);
      const node = (await this.store.get(key))?.toString('utf8') ?? '';
      const match = nodeMatcher(node);
      if (typeof match !== 'function') continue;
      const n = this.showHeld(match);
      if (n) this.o.logger.info({ node, started: n }, 'ETRN from another instance: held items shown');
    }
  }

  stats(): { depth: number; oldestAgeMs: number; dead: number; running: number } {
    return { depth: this.depth, oldestAgeMs: this.oldestAt === null ? 0 : Math.max(0, this.o.now() - this.oldestAt), dead: this.dead, running: this.running };
  }

  /**
   * The oldest stored item that is not a dead letter and the dead letters'
   * count, from a listing of the bucket (every instance sees every item);
   * measured again every rescanMs.
   */
  private async refreshOldest(): Promise<void> {
    try {
      const c = await this.store.census();
      this.oldestAt = c.oldestStoredAt;
      this.dead = c.dead;
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message, code: 'PG_QUEUE_READ' }, 'could not measure the oldest queued item');
    }
    if (this.stopped) return;
    this.oldestTimer = setTimeout(() => void this.refreshOldest(), this.o.rescanMs ?? 30_000);
    this.oldestTimer.unref();
  }

  private async refreshDepth(): Promise<void> {
    const a = await this.o.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: this.o.queueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }),
    );
    this.depth = Number(a.Attributes?.ApproximateNumberOfMessages ?? 0) + Number(a.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0);
  }

  private async poll(): Promise<void> {
    while (!this.stopped) {
      const room = Math.min(10, this.o.policy.concurrency - this.running);
      if (room <= 0) {
        await Promise.race([...this.inflight]);
        continue;
      }
      let messages: Message[] = [];
      try {
        await this.refreshDepth();
        const r = await this.o.sqs.send(
          new ReceiveMessageCommand({
            QueueUrl: this.o.queueUrl,
            MaxNumberOfMessages: room,
            WaitTimeSeconds: this.o.pollWaitS,
            // Long enough for one attempt; after a crash the item reappears then.
            VisibilityTimeout: Math.ceil(this.o.deadlineMs / 1000) + 30,
            MessageSystemAttributeNames: ['ApproximateReceiveCount'],
          }),
          { abortSignal: this.abort.signal },
        );
        messages = r.Messages ?? [];
      } catch (err) {
        if (this.stopped) break;
        this.o.logger.error({ err: (err as Error).message, code: 'PG_QUEUE_READ' }, 'queue poll failed');
        await new Promise((r) => setTimeout(r, 1000).unref());
        continue;
      }
      for (const m of messages) {
        this.running++;
        const p = this.attempt(m)
          .catch((err: unknown) => this.o.logger.error({ err: (err as Error).message, code: 'PG_QUEUE_READ' }, 'queued item attempt failed'))
          .finally(() => {
            this.running--;
            this.inflight.delete(p);
          });
        this.inflight.add(p);
      }
    }
  }

  private async attempt(m: Message): Promise<void> {
    const { meta } = JSON.parse(m.Body ?? '{}') as { meta: SpoolMeta };
    // Received again (here or elsewhere): an older receipt handle no longer shows it.
    this.held.delete(meta.itemId);
    const log = this.o.logger.child({ queueId: meta.queueId, item: meta.itemId, target: meta.targetId });
    const attempts = Number(m.Attributes?.ApproximateReceiveCount ?? 1);
    const done = () => this.o.sqs.send(new DeleteMessageCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: m.ReceiptHandle! }));
    const [prev, eventJson, metaObject, message] = await Promise.all([
      ...(['state.json', 'event.json', 'meta.json'] as const).map((f) => this.store.get(this.store.itemKey(meta.itemId, f))),
      this.store.message(meta),
    ]);
    if (!metaObject && !eventJson) {
      // Its objects are gone: `postgate queue purge` removed the item (or a
      // lifecycle rule expired it). Nothing is left to deliver.
      await done();
      this.depth = Math.max(0, this.depth - 1);
      log.info({ attempts }, 'queued item purged, work item dropped');
      return;
    }
    const history: SpoolState['history'] = prev ? (JSON.parse(prev.toString('utf8')) as SpoolState).history : [];
    const started = this.o.now();
    const { error, httpStatus } = await attemptItem(meta, message && eventJson ? { message: MessageBytes.of(message), eventJson } : null, this.o);
    const ms = this.o.now() - started;
    if (!error) {
      await done();
      await this.store.removeItem(meta.itemId);
      await this.store.releaseMessage(meta.queueId);
      log.info({ attempts }, 'queued delivery succeeded');
      this.o.onAttempt?.(meta, 'delivered', { error: null, ms, httpStatus });
      await this.final(meta, true, undefined, message!, eventJson!, log);
      return;
    }
    const state: SpoolState = { attempts, nextAt: 0, history: [...history, attemptRecord(this.o.now(), error)].slice(-MAX_HISTORY) };
    const reason = deadReason(meta, error, attempts, this.o);
    if (reason) {
      state.deadReason = reason;
      await this.store.putObject(this.store.deadKey(meta.itemId), JSON.stringify({ meta, state }), 'application/json');
      await done();
      this.dead++;
      log.warn({ attempts, reason, code: error.code, err: error.message }, 'queued delivery dead-lettered');
      this.o.onAttempt?.(meta, 'dead', { error, ms });
      if (message && eventJson) await this.final(meta, false, error, message, eventJson, log);
      return;
    }
    const delayMs = retryDelay(attempts, this.o.policy, this.o.random ?? Math.random, error.retryAfterMs);
    state.nextAt = this.o.now() + delayMs;
    await this.store.putObject(this.store.itemKey(meta.itemId, 'state.json'), JSON.stringify(state), 'application/json');
    await this.o.sqs.send(
      new ChangeMessageVisibilityCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: m.ReceiptHandle!, VisibilityTimeout: Math.min(MAX_VISIBILITY_S, Math.ceil(delayMs / 1000)) }),
    );
    this.held.set(meta.itemId, { receipt: m.ReceiptHandle!, meta });
    if (message && eventJson) {
      await this.o.onRetry?.(this.store, meta, error, { message: MessageBytes.of(message), eventJson }).catch((err: unknown) => log.error({ err: (err as Error).message }, 'delay report hook failed'));
    }
    log.info({ attempts, nextInMs: delayMs, code: error.code, err: error.message }, 'queued delivery failed, will retry');
    this.o.onAttempt?.(meta, 'retry', { error, ms });
  }

  private async final(meta: SpoolMeta, delivered: boolean, error: GatewayError | undefined, message: Buffer, eventJson: Buffer, log: { error(o: object, msg: string): void }): Promise<void> {
    await this.o.onFinal?.(this.store, meta, delivered, error, { message: MessageBytes.of(message), eventJson }).catch((err: unknown) => log.error({ err: (err as Error).message }, 'final hook failed'));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.oldestTimer) clearTimeout(this.oldestTimer);
    if (this.etrnTimer) clearTimeout(this.etrnTimer);
    this.abort.abort();
    await this.loop?.catch(() => undefined);
    await Promise.all([...this.inflight]);
  }
}
