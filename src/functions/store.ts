/**
 * The serverless side's durable state, one place for every AWS call the
 * functions make:
 *
 * - S3: `messages/<yyyy>/<mm>/<dd>/<id>/event.json` (the event as received:
 *   the signed bytes over HTTP, the parsed payload re-serialised for a direct
 *   invocation), `raw.eml` next to it when the event carried or linked the raw
 *   message, `parts/<name>` for each part the edge linked (see linkedParts),
 *   and `to/<destination>.json` for a destination whose event differs from
 *   the stored one (some recipients, fresh links) and needs a claim-check link;
 * - DynamoDB: one index item per delivery id (`id`), with the envelope,
 *   subject, sizes, S3 keys, `status` (`pending` → `enqueued`) and per
 *   destination outcome (`deliveries.<destination>`); `expiresAt` (stored +
 *   retention) is its TTL;
 * - SQS: one routing job per event and destination, carrying an S3 pointer,
 *   never the event (SQS messages are limited to 256 KiB).
 */
import { ConditionalCheckFailedException, DynamoDBClient, GetItemCommand, PutItemCommand, ScanCommand, UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { GetQueueUrlCommand, SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Readable } from 'node:stream';
import { presignGet } from '../blob/s3.js';
import type { FunctionSettings } from './settings.js';

/**
 * A routing job: which stored event goes to which destination. It carries no
 * URL, recipients or bucket: route recomputes the destination from the event
 * and the routes file, so a job placed on the queue by someone else cannot
 * send an event elsewhere.
 */
export interface RouteJob {
  v: 1;
  /** The index item (the edge's delivery id, its webhook-id). */
  id: string;
  /** Destination id (the target id, per resolved URL for templated ones). */
  destination: string;
  /** S3 key of the event, in the functions' bucket. */
  key: string;
  /** When the message was received (ISO-8601), for redrive's time filter. */
  receivedAt: string;
}

/** A link the edge put in an event instead of the content (claim check). */
export interface PartLink {
  url: string;
  size: number;
  sha256: string;
}

export interface LinkedPart {
  /** Its name under `parts/`. */
  name: string;
  /** Where it is in the event: an index into `attachments`, or the body field. */
  at: number | 'textBlob' | 'htmlBlob';
  link: PartLink;
  contentType: string;
}

/**
 * The parts of an event the edge linked rather than carried: attachments over
 * its `blobs.inlineLimit`, bodies over `blobs.bodyInlineLimit`. Their links
 * point into the edge's blob store and die with its `blobs.ttl`, which a
 * message waiting in the dead-letter queue can outlive; ingest copies each
 * next to the event (`parts/<name>`) and route links the copies afresh at
 * every send. The names are positions in the event, so both find the same.
 */
export function linkedParts(data: { attachments?: unknown; textBlob?: unknown; htmlBlob?: unknown }): LinkedPart[] {
  const isLink = (v: unknown): v is PartLink => typeof v === 'object' && v !== null && typeof (v as PartLink).url === 'string';
  const out: LinkedPart[] = [];
  if (Array.isArray(data.attachments)) {
    data.attachments.forEach((a: unknown, i) => {
      if (!isLink(a)) return;
      const type = (a as { contentType?: unknown }).contentType;
      out.push({ name: `attachment-${i}`, at: i, link: a, contentType: typeof type === 'string' ? type : 'application/octet-stream' });
    });
  }
  if (isLink(data.textBlob)) out.push({ name: 'text', at: 'textBlob', link: data.textBlob, contentType: 'text/plain; charset=utf-8' });
  if (isLink(data.htmlBlob)) out.push({ name: 'html', at: 'htmlBlob', link: data.htmlBlob, contentType: 'text/html; charset=utf-8' });
  return out;
}

/**
 * A destination's statuses in the index whose job went to the dead-letter
 * queue: `dead` (retries exhausted, or no longer routed), `rejected` (a
 * permanent refusal), `gone` (410).
 */
export const DEAD_LETTER_STATUSES: ReadonlySet<string> = new Set(['dead', 'rejected', 'gone']);

export interface IndexItem {
  id: string;
  status: 'pending' | 'enqueued';
  receivedAt: string;
  mailFrom: string;
  rcptTo: string[];
  subject: string | null;
  rawSize: number;
  eventSize: number;
  eventKey: string;
  rawKey: string | null;
  destinations: string[];
  /** The linked parts ingest copied under `parts/` (route links these copies, not the edge's). */
  parts: string[];
  deliveries: Record<string, { status: string; at: string; attempts?: number; reason?: string }>;
}

export class Store {
  readonly s3 = new S3Client({});
  readonly dynamo = new DynamoDBClient({});
  readonly sqs = new SQSClient({});
  private urls = new Map<string, Promise<string>>();

  constructor(readonly settings: FunctionSettings) {}

  /** Queue URL by name, looked up once per cold start. */
  queueUrl(name: string): Promise<string> {
    let u = this.urls.get(name);
    if (!u) {
      u = this.sqs.send(new GetQueueUrlCommand({ QueueName: name })).then((r) => {
        if (!r.QueueUrl) throw new Error(`queue ${name}: no URL`);
        return r.QueueUrl;
      });
      u.catch(() => this.urls.delete(name));
      this.urls.set(name, u);
    }
    return u;
  }

  static keys(id: string, receivedAt: string): { event: string; raw: string } {
    const d = new Date(receivedAt);
    const t = Number.isNaN(d.getTime()) ? new Date(0) : d;
    const p = `messages/${t.getUTCFullYear()}/${String(t.getUTCMonth() + 1).padStart(2, '0')}/${String(t.getUTCDate()).padStart(2, '0')}/${encodeURIComponent(id)}`;
    return { event: `${p}/event.json`, raw: `${p}/raw.eml` };
  }

  /**
   * The copy of the event made for one destination whose event differs from
   * the stored one (some recipients, fresh links) when it needs a claim-check
   * link: under `to/`, so no destination id, however it is spelled (`event`,
   * `raw`), names the event or the raw message next to it.
   */
  static destinationKey(eventKey: string, destination: string): string {
    return `${Store.folderOf(eventKey)}to/${encodeURIComponent(destination)}.json`;
  }

  /** ingest's copy of a part the edge linked (see linkedParts), beside the event. */
  static partKey(eventKey: string, part: string): string {
    return `${Store.folderOf(eventKey)}parts/${part}`;
  }

  /** The message's folder: the event key up to its last `/`. */
  private static folderOf(eventKey: string): string {
    return eventKey.slice(0, eventKey.lastIndexOf('/') + 1);
  }

  async putObject(key: string, body: Buffer, contentType: string): Promise<void> {
    await this.s3.send(new PutObjectCommand({ Bucket: this.settings.bucket, Key: key, Body: body, ContentType: contentType }));
  }

  /** Streams a body of unknown length (multipart upload: never buffered whole; a failed upload is aborted). */
  async putStream(key: string, body: Readable, contentType: string): Promise<void> {
    await new Upload({ client: this.s3, params: { Bucket: this.settings.bucket, Key: key, Body: body, ContentType: contentType } }).done();
  }

  async getObject(key: string): Promise<Buffer> {
    const r = await this.s3.send(new GetObjectCommand({ Bucket: this.settings.bucket, Key: key }));
    return Buffer.from(await r.Body!.transformToByteArray());
  }

  /** A presigned GET link and its real expiry (never later than the function's role credentials allow). */
  presign(key: string, seconds: number): Promise<{ url: string; expiresAt: string }> {
    return presignGet(this.s3, this.settings.bucket, key, seconds, Date.now());
  }

  async getItem(id: string): Promise<IndexItem | null> {
    const r = await this.dynamo.send(new GetItemCommand({ TableName: this.settings.table, Key: { id: { S: id } }, ConsistentRead: true }));
    return r.Item ? fromItem(r.Item) : null;
  }

  /** Writes the item as `pending` unless it exists; returns the existing item instead. */
  async createPending(item: Omit<IndexItem, 'status' | 'deliveries'>): Promise<IndexItem | null> {
    const expiresAt = Math.floor(Date.now() / 1000) + this.settings.retentionDays * 86_400;
    try {
      await this.dynamo.send(
        new PutItemCommand({
          TableName: this.settings.table,
          Item: {
            id: { S: item.id },
            status: { S: 'pending' },
            receivedAt: { S: item.receivedAt },
            storedAt: { S: new Date().toISOString() },
            mailFrom: { S: item.mailFrom },
            rcptTo: { L: item.rcptTo.map((r) => ({ S: r })) },
            subject: item.subject === null ? { NULL: true } : { S: item.subject.slice(0, 1000) },
            rawSize: { N: String(item.rawSize) },
            eventSize: { N: String(item.eventSize) },
            eventKey: { S: item.eventKey },
            rawKey: item.rawKey === null ? { NULL: true } : { S: item.rawKey },
            destinations: { L: item.destinations.map((d) => ({ S: d })) },
            parts: { L: item.parts.map((p) => ({ S: p })) },
            deliveries: { M: {} },
            expiresAt: { N: String(expiresAt) },
          },
          ConditionExpression: 'attribute_not_exists(id)',
        }),
      );
      return null;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as { name?: string }).name === 'ConditionalCheckFailedException') {
        return this.getItem(item.id);
      }
      throw err;
    }
  }

  async markEnqueued(id: string): Promise<void> {
    await this.dynamo.send(
      new UpdateItemCommand({
        TableName: this.settings.table,
        Key: { id: { S: id } },
        UpdateExpression: 'SET #s = :e, enqueuedAt = :t',
        ExpressionAttributeNames: { '#s': 'status' },
        ExpressionAttributeValues: { ':e': { S: 'enqueued' }, ':t': { S: new Date().toISOString() } },
      }),
    );
  }

  /**
   * Records a destination's outcome. Only `delivered` may replace
   * `delivered`: a duplicate job that fails later (jobs are at least once)
   * must not hide a delivery that happened.
   */
  async markDelivery(id: string, destination: string, outcome: { status: string; attempts?: number; reason?: string }): Promise<void> {
    const v: Record<string, AttributeValue> = { status: { S: outcome.status }, at: { S: new Date().toISOString() } };
    if (outcome.attempts !== undefined) v.attempts = { N: String(outcome.attempts) };
    if (outcome.reason !== undefined) v.reason = { S: outcome.reason.slice(0, 500) };
    const guard = outcome.status === 'delivered' ? '' : ' AND (attribute_not_exists(deliveries.#d) OR deliveries.#d.#st <> :delivered)';
    try {
      await this.dynamo.send(
        new UpdateItemCommand({
          TableName: this.settings.table,
          Key: { id: { S: id } },
          UpdateExpression: 'SET deliveries.#d = :v',
          ExpressionAttributeNames: { '#d': destination, ...(guard ? { '#st': 'status' } : {}) },
          ExpressionAttributeValues: { ':v': { M: v }, ...(guard ? { ':delivered': { S: 'delivered' } } : {}) },
          ConditionExpression: `attribute_exists(id)${guard}`,
        }),
      );
    } catch (err) {
      if ((err as { name?: string }).name === 'ConditionalCheckFailedException' && guard) return;
      throw err;
    }
  }

  /**
   * Marks a destination `redriven` only while the index still says it was
   * dead-lettered (DEAD_LETTER_STATUSES):
   * false when something else (a route attempt of a job that was still in
   * the dead-letter queue) has changed it since it was read.
   */
  async markRedriven(id: string, destination: string): Promise<boolean> {
    try {
      await this.dynamo.send(
        new UpdateItemCommand({
          TableName: this.settings.table,
          Key: { id: { S: id } },
          UpdateExpression: 'SET deliveries.#d.#st = :r, deliveries.#d.#at = :t, deliveries.#d.#why = :why',
          ExpressionAttributeNames: { '#d': destination, '#st': 'status', '#at': 'at', '#why': 'reason' },
          ExpressionAttributeValues: {
            ':r': { S: 'redriven' },
            ':dead': { S: 'dead' },
            ':rejected': { S: 'rejected' },
            ':gone': { S: 'gone' },
            ':t': { S: new Date().toISOString() },
            ':why': { S: 'sent again from the index by redrive' },
          },
          ConditionExpression: 'deliveries.#d.#st IN (:dead, :rejected, :gone)',
        }),
      );
      return true;
    } catch (err) {
      if ((err as { name?: string }).name === 'ConditionalCheckFailedException') return false;
      throw err;
    }
  }

  /**
   * Every destination the index marks dead-lettered, page by page. A Scan reads the
   * whole table: this serves an operator's redrive after an outage, never a
   * message's way through (docs/functions.md, "redrive").
   */
  async *deadDeliveries(): AsyncGenerator<{ id: string; destination: string; eventKey: string; receivedAt: string }> {
    let start: Record<string, AttributeValue> | undefined;
    do {
      const r = await this.dynamo.send(
        new ScanCommand({
          TableName: this.settings.table,
          ProjectionExpression: '#id, eventKey, receivedAt, deliveries',
          ExpressionAttributeNames: { '#id': 'id' },
          ConsistentRead: true,
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      for (const raw of r.Items ?? []) {
        const item = fromItem(raw);
        for (const [destination, d] of Object.entries(item.deliveries)) {
          if (DEAD_LETTER_STATUSES.has(d.status) && item.eventKey) yield { id: item.id, destination, eventKey: item.eventKey, receivedAt: item.receivedAt };
        }
      }
      start = r.LastEvaluatedKey;
    } while (start);
  }

  /** Sends jobs in batches of 10 (the SQS limit); throws if any entry failed. */
  async enqueue(queueUrl: string, jobs: readonly RouteJob[]): Promise<void> {
    for (let i = 0; i < jobs.length; i += 10) {
      const batch = jobs.slice(i, i + 10);
      const r = await this.sqs.send(
        new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: batch.map((j, n) => ({ Id: String(n), MessageBody: JSON.stringify(j) })) }),
      );
      if (r.Failed?.length) throw new Error(`SQS refused ${r.Failed.length} job(s): ${r.Failed.map((f) => f.Code).join(', ')}`);
    }
  }
}

function fromItem(i: Record<string, AttributeValue>): IndexItem {
  const s = (a: AttributeValue | undefined) => (a && 'S' in a && a.S !== undefined ? a.S : null);
  const n = (a: AttributeValue | undefined) => (a && 'N' in a && a.N !== undefined ? Number(a.N) : 0);
  const deliveries: IndexItem['deliveries'] = {};
  for (const [k, v] of Object.entries(i.deliveries?.M ?? {})) {
    const m = v.M ?? {};
    deliveries[k] = {
      status: s(m.status) ?? 'unknown',
      at: s(m.at) ?? '',
      ...(m.attempts ? { attempts: n(m.attempts) } : {}),
      ...(m.reason ? { reason: s(m.reason) ?? '' } : {}),
    };
  }
  return {
    id: s(i.id) ?? '',
    status: s(i.status) === 'enqueued' ? 'enqueued' : 'pending',
    receivedAt: s(i.receivedAt) ?? '',
    mailFrom: s(i.mailFrom) ?? '',
    rcptTo: (i.rcptTo?.L ?? []).map((a) => s(a) ?? ''),
    subject: s(i.subject),
    rawSize: n(i.rawSize),
    eventSize: n(i.eventSize),
    eventKey: s(i.eventKey) ?? '',
    rawKey: s(i.rawKey),
    destinations: (i.destinations?.L ?? []).map((a) => s(a) ?? ''),
    parts: (i.parts?.L ?? []).map((a) => s(a) ?? ''),
    deliveries,
  };
}
