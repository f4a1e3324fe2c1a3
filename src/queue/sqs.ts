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
 * Retries: a failed attempt hides its SQS message for the backoff delay
 * (ChangeMessageVisibility, at most 12 hours as SQS allows); the attempt count
 * is SQS's ApproximateReceiveCount, the history is in state.json.
 */
import { DeleteObjectsCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type Message,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { NewSpoolItem, SpoolEntry, SpoolMeta, SpoolState } from './spool.js';
import { attemptItem, attemptRecord, deadReason, retryDelay, type QueueDeliveryDeps } from './attempt.js';
import { MessageBytes } from '../message/bytes.js';

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
}

export class SqsQueue {
  readonly root: string;
  private stopped = false;
  private running = 0;
  private loop: Promise<void> | null = null;
  private readonly inflight = new Set<Promise<void>>();
  private depth = 0;
  private dead = 0;
  private abort = new AbortController();

  constructor(private readonly o: SqsQueueOptions) {
    this.root = `s3://${o.bucket}/${o.prefix}`;
  }

  private key(itemId: string, file: string): string {
    return `${this.o.prefix}items/${itemId}/${file}`;
  }

  async start(): Promise<{ recovered: number; discarded: number }> {
    await this.refreshDepth();
    this.loop = this.poll();
    return { recovered: this.depth, discarded: 0 };
  }

  async put(items: readonly NewSpoolItem[], _firstAttemptAt: number): Promise<void> {
    for (const it of items) {
      const id = it.meta.itemId;
      const put = async (file: string, body: Buffer | string | MessageBytes, type: string) =>
        this.o.s3.send(
          new PutObjectCommand({
            Bucket: this.o.bucket,
            Key: this.key(id, file),
            Body: body instanceof MessageBytes ? await body.content() : body,
            ContentType: type,
            ContentLength: body instanceof MessageBytes ? body.size : Buffer.byteLength(body),
          }),
        );
      await Promise.all([put('message.eml', it.message, 'message/rfc822'), put('event.json', it.eventJson, 'application/json'), put('meta.json', JSON.stringify(it.meta), 'application/json')]);
    }
    // Work items only once every object is stored: a work item never points at nothing.
    for (const it of items) {
      await this.o.sqs.send(new SendMessageCommand({ QueueUrl: this.o.queueUrl, MessageBody: JSON.stringify({ itemId: it.meta.itemId, meta: it.meta }) }));
      this.depth++;
    }
  }

  /** New items are visible in SQS at once; nothing to schedule. */
  add(_entries: readonly SpoolEntry[]): void {}

  /** The approximate depth across instances (refreshed every poll). */
  pending(_match?: (meta: SpoolMeta) => boolean): number {
    return this.depth;
  }

  /** ETRN cannot make hidden SQS messages visible early: not offered with this backend. */
  flush(): number {
    return 0;
  }

  stats(): { depth: number; oldestAgeMs: number; dead: number; running: number } {
    return { depth: this.depth, oldestAgeMs: 0, dead: this.dead, running: this.running };
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

  private async getText(key: string): Promise<Buffer | null> {
    try {
      const r = await this.o.s3.send(new GetObjectCommand({ Bucket: this.o.bucket, Key: key }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if ((err as { name?: string }).name === 'NoSuchKey') return null;
      throw err;
    }
  }

  private async attempt(m: Message): Promise<void> {
    const { meta } = JSON.parse(m.Body ?? '{}') as { meta: SpoolMeta };
    const log = this.o.logger.child({ queueId: meta.queueId, item: meta.itemId, target: meta.targetId });
    const attempts = Number(m.Attributes?.ApproximateReceiveCount ?? 1);
    const prev = await this.getText(this.key(meta.itemId, 'state.json'));
    const history: SpoolState['history'] = prev ? (JSON.parse(prev.toString('utf8')) as SpoolState).history : [];
    const [message, eventJson] = await Promise.all([this.getText(this.key(meta.itemId, 'message.eml')), this.getText(this.key(meta.itemId, 'event.json'))]);
    const error = await attemptItem(meta, message && eventJson ? { message: MessageBytes.of(message), eventJson } : null, this.o);
    const done = () => this.o.sqs.send(new DeleteMessageCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: m.ReceiptHandle! }));
    if (!error) {
      await done();
      await this.o.s3.send(
        new DeleteObjectsCommand({
          Bucket: this.o.bucket,
          Delete: { Objects: ['message.eml', 'event.json', 'meta.json', 'state.json'].map((f) => ({ Key: this.key(meta.itemId, f) })) },
        }),
      );
      log.info({ attempts }, 'queued delivery succeeded');
      this.o.onAttempt?.(meta, 'delivered');
      return;
    }
    const state: SpoolState = { attempts, nextAt: 0, history: [...history, attemptRecord(this.o.now(), error)].slice(-MAX_HISTORY) };
    const reason = deadReason(meta, error, attempts, this.o);
    if (reason) {
      state.deadReason = reason;
      const body = JSON.stringify({ meta, state });
      await this.o.s3.send(new PutObjectCommand({ Bucket: this.o.bucket, Key: `${this.o.prefix}dead/${meta.itemId}.json`, Body: body, ContentType: 'application/json', ContentLength: Buffer.byteLength(body) }));
      await done();
      this.dead++;
      log.warn({ attempts, reason, code: error.code, err: error.message }, 'queued delivery dead-lettered');
      this.o.onAttempt?.(meta, 'dead');
      return;
    }
    const delayMs = retryDelay(attempts, this.o.policy, this.o.random ?? Math.random, error.retryAfterMs);
    state.nextAt = this.o.now() + delayMs;
    const body = JSON.stringify(state);
    await this.o.s3.send(new PutObjectCommand({ Bucket: this.o.bucket, Key: this.key(meta.itemId, 'state.json'), Body: body, ContentType: 'application/json', ContentLength: Buffer.byteLength(body) }));
    await this.o.sqs.send(
      new ChangeMessageVisibilityCommand({ QueueUrl: this.o.queueUrl, ReceiptHandle: m.ReceiptHandle!, VisibilityTimeout: Math.min(MAX_VISIBILITY_S, Math.ceil(delayMs / 1000)) }),
    );
    log.info({ attempts, nextInMs: delayMs, code: error.code, err: error.message }, 'queued delivery failed, will retry');
    this.o.onAttempt?.(meta, 'retry');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.loop?.catch(() => undefined);
    await Promise.all([...this.inflight]);
  }
}
