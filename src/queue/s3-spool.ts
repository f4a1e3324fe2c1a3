/**
 * The S3 + SQS backend's items as stored (docs/queue.md, "Several
 * instances"): what SqsQueue writes and reads, and what `postgate queue`
 * lists, shows, retries, replays and purges — the same operations as the
 * local spool (LocalSpool), so the command works on either backend.
 *
 *   s3://<bucket>/<prefix>messages/<queueId>.eml   the message, once for all its targets
 *   s3://<bucket>/<prefix>items/<itemId>/{event.json,meta.json,state.json}
 *   s3://<bucket>/<prefix>dead/<itemId>.json      dead letter: meta + state
 *   SQS: {"itemId", "meta"} per item that is waiting (visible or hidden)
 *
 * Item ids start with their message's queue id, so a message's items are
 * found by prefix: whoever removes a message's last item removes the
 * message (releaseMessage). A replayed item, and items stored by earlier
 * versions, carry their own items/<itemId>/message.eml instead (NewSpoolItem
 * `ownCopy`), which is read and removed with the item.
 *
 * A dead letter keeps its objects under items/ (a retry or replay needs the
 * message); "active" are the items under items/ without a dead letter.
 * Items hidden in SQS cannot be reached from here (only their receiver holds
 * a receipt handle), so a purge of an active item deletes its objects and
 * the instance that next receives its work item drops it (SqsQueue).
 */
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  S3ServiceException,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
  type _Object,
} from '@aws-sdk/client-s3';
import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { Readable } from 'node:stream';
import { listEntries, type NewSpoolItem, type SpoolArea, type SpoolEntry, type SpoolMeta, type SpoolState } from './spool.js';
import { MessageBytes } from '../message/bytes.js';

export interface S3SpoolOptions {
  s3: S3Client;
  sqs: SQSClient;
  bucket: string;
  prefix: string;
  queueUrl: string;
}

const ITEM_FILES = ['message.eml', 'event.json', 'meta.json', 'state.json'] as const;

export class S3Spool {
  readonly root: string;

  constructor(private readonly o: S3SpoolOptions) {
    this.root = `s3://${o.bucket}/${o.prefix}`;
  }

  itemKey(itemId: string, file: (typeof ITEM_FILES)[number]): string {
    return `${this.o.prefix}items/${itemId}/${file}`;
  }

  deadKey(itemId: string): string {
    return `${this.o.prefix}dead/${itemId}.json`;
  }

  messageKey(queueId: string): string {
    return `${this.o.prefix}messages/${queueId}.eml`;
  }

  /**
   * Stores the items' objects, then their work items: a work item never
   * points at nothing. The items of one message (its targets) share one
   * stored copy of it; their events stay their own (a target may see only
   * its recipients). Metadata first: a message's last item being removed at
   * the same moment (releaseMessage) then sees the new item and keeps it.
   */
  async put(items: readonly NewSpoolItem[], _firstAttemptAt?: number): Promise<void> {
    await Promise.all(
      items.flatMap((it) => [
        this.putObject(this.itemKey(it.meta.itemId, 'event.json'), it.eventJson, 'application/json'),
        this.putObject(this.itemKey(it.meta.itemId, 'meta.json'), JSON.stringify(it.meta), 'application/json'),
      ]),
    );
    const messages = new Map<string, NewSpoolItem['message']>();
    for (const it of items) {
      // An item added to a message that has items already keeps its own copy:
      // releaseMessage may have listed the message's items before this one's
      // metadata existed, and delete the shared copy after it was rewritten here.
      if (it.ownCopy) await this.putObject(this.itemKey(it.meta.itemId, 'message.eml'), await it.message.content(), 'message/rfc822', it.message.size);
      else if (!messages.has(it.meta.queueId)) messages.set(it.meta.queueId, it.message);
    }
    for (const [queueId, message] of messages) await this.putObject(this.messageKey(queueId), await message.content(), 'message/rfc822', message.size);
    for (const it of items) await this.enqueue(it.meta);
  }

  /**
   * An item's message: the message's shared copy (the same bytes for every
   * item of it), else the item's own (a replay, or stored by an earlier version).
   */
  async message(meta: Pick<SpoolMeta, 'itemId' | 'queueId'>): Promise<Buffer | null> {
    return (await this.get(this.messageKey(meta.queueId))) ?? (await this.get(this.itemKey(meta.itemId, 'message.eml')));
  }

  /** Removes a message's stored copy once none of its items (waiting or dead) is left. */
  async releaseMessage(queueId: string): Promise<void> {
    const left = await this.listAll(`${this.o.prefix}items/${queueId}-`);
    if (left.some((o) => o.Key!.endsWith('/meta.json'))) return;
    await this.remove(this.messageKey(queueId));
  }

  /** The work item of an item whose objects are stored. */
  async enqueue(meta: SpoolMeta): Promise<void> {
    await this.o.sqs.send(new SendMessageCommand({ QueueUrl: this.o.queueUrl, MessageBody: JSON.stringify({ itemId: meta.itemId, meta }) }));
  }

  /** `length` is required for a stream (S3 needs it up front). */
  async putObject(key: string, body: Buffer | string | Readable, contentType: string, length?: number): Promise<void> {
    const ContentLength = length ?? (body instanceof Readable ? undefined : Buffer.byteLength(body));
    await this.o.s3.send(new PutObjectCommand({ Bucket: this.o.bucket, Key: key, Body: body, ContentType: contentType, ContentLength }));
  }

  /** An object's bytes, or null when it does not exist. */
  async get(key: string): Promise<Buffer | null> {
    try {
      const r = await this.o.s3.send(new GetObjectCommand({ Bucket: this.o.bucket, Key: key }));
      return Buffer.from(await r.Body!.transformToByteArray());
    } catch (err) {
      if ((err as { name?: string }).name === 'NoSuchKey') return null;
      throw err;
    }
  }

  /** The objects under a prefix (every page). */
  objects(prefix: string): Promise<_Object[]> {
    return this.listAll(prefix);
  }

  async remove(key: string): Promise<void> {
    await this.o.s3.send(new DeleteObjectsCommand({ Bucket: this.o.bucket, Delete: { Objects: [{ Key: key }] } }));
  }

  private async listAll(prefix: string): Promise<_Object[]> {
    const out: _Object[] = [];
    let token: string | undefined;
    do {
      const r = await this.o.s3.send(new ListObjectsV2Command({ Bucket: this.o.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
      out.push(...(r.Contents ?? []));
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  private async deadIds(): Promise<string[]> {
    const base = `${this.o.prefix}dead/`;
    return (await this.listAll(base)).map((o) => o.Key!.slice(base.length)).filter((k) => k.endsWith('.json') && !k.includes('/')).map((k) => k.slice(0, -5));
  }

  /** Each stored item's meta.json object (the item's id and when it was stored). */
  private async metaObjects(): Promise<Array<{ id: string; storedAt: number }>> {
    const base = `${this.o.prefix}items/`;
    return (await this.listAll(base))
      .filter((o) => o.Key!.endsWith('/meta.json'))
      .map((o) => ({ id: o.Key!.slice(base.length, -'/meta.json'.length), storedAt: o.LastModified?.getTime() ?? 0 }));
  }

  /** Item ids in an area, oldest first (ids start with the time-sortable queue id). */
  async ids(area: SpoolArea): Promise<string[]> {
    const dead = await this.deadIds();
    if (area === 'dead') return dead.sort();
    const isDead = new Set(dead);
    return (await this.metaObjects())
      .map((m) => m.id)
      .filter((id) => !isDead.has(id))
      .sort();
  }

  list(area: SpoolArea): Promise<SpoolEntry[]> {
    return listEntries(this, area);
  }

  async entry(area: SpoolArea, itemId: string): Promise<SpoolEntry> {
    if (area === 'dead') {
      const body = await this.get(this.deadKey(itemId));
      if (!body) throw new Error(`no dead letter ${itemId}`);
      return JSON.parse(body.toString('utf8')) as SpoolEntry;
    }
    const [meta, state] = await Promise.all([this.get(this.itemKey(itemId, 'meta.json')), this.get(this.itemKey(itemId, 'state.json'))]);
    if (!meta) throw new Error(`no item ${itemId}`);
    // No state.json yet: not tried, or its first attempt is running.
    const st: SpoolState = state ? (JSON.parse(state.toString('utf8')) as SpoolState) : { attempts: 0, nextAt: 0, history: [] };
    return { meta: JSON.parse(meta.toString('utf8')) as SpoolMeta, state: st };
  }

  async content(area: SpoolArea, itemId: string): Promise<{ message: MessageBytes; eventJson: Buffer }> {
    const { meta } = await this.entry(area, itemId);
    const [message, eventJson] = await Promise.all([this.message(meta), this.get(this.itemKey(itemId, 'event.json'))]);
    if (!message || !eventJson) throw new Error(`item ${itemId}: its message or event is missing`);
    return { message: MessageBytes.of(message), eventJson };
  }

  async exists(area: SpoolArea, itemId: string): Promise<boolean> {
    if (area === 'dead') return (await this.get(this.deadKey(itemId))) !== null;
    return (await this.get(this.itemKey(itemId, 'meta.json'))) !== null && (await this.get(this.deadKey(itemId))) === null;
  }

  /**
   * A dead letter back into the queue (`postgate queue retry`): its history
   * kept in state.json, a new work item, then the dead letter removed. In
   * that order, a crash leaves an item that is both queued and listed dead,
   * never one that is neither.
   */
  async revive(itemId: string, nextAt: number): Promise<void> {
    const e = await this.entry('dead', itemId);
    const { deadReason: _gone, ...rest } = e.state;
    await this.putObject(this.itemKey(itemId, 'state.json'), JSON.stringify({ ...rest, nextAt }), 'application/json');
    await this.enqueue(e.meta);
    await this.o.s3.send(new DeleteObjectsCommand({ Bucket: this.o.bucket, Delete: { Objects: [{ Key: this.deadKey(itemId) }] } }));
  }

  /** Removes an item's objects (and its dead letter); a waiting work item is dropped when next received. */
  async purge(area: SpoolArea, itemId: string): Promise<void> {
    const { meta } = await this.entry(area, itemId);
    await this.removeItem(itemId);
    if (area === 'dead') await this.remove(this.deadKey(itemId));
    await this.releaseMessage(meta.queueId);
  }

  /** An item's own objects (not the shared message). */
  async removeItem(itemId: string): Promise<void> {
    await this.o.s3.send(new DeleteObjectsCommand({ Bucket: this.o.bucket, Delete: { Objects: ITEM_FILES.map((f) => ({ Key: this.itemKey(itemId, f) })) } }));
  }

  /** The final report's marker, or the delay report's (a message has at most one of each). */
  private reportKey(queueId: string, kind: 'final' | 'delayed'): string {
    return `${this.o.prefix}dsn/${queueId}${kind === 'delayed' ? '.delayed' : ''}`;
  }

  /**
   * The other items of a message (its targets), by the queue id their item
   * ids start with: those still waiting and the dead letters.
   */
  async siblingsOf(queueId: string, except: string): Promise<{ waiting: SpoolMeta[]; dead: SpoolEntry[] }> {
    const dead = (await this.deadIds()).filter((id) => id.startsWith(`${queueId}-`) && id !== except);
    const isDead = new Set(dead);
    const waitingIds = (await this.metaObjects()).map((m) => m.id).filter((id) => id.startsWith(`${queueId}-`) && id !== except && !isDead.has(id));
    const waiting: SpoolMeta[] = [];
    for (const id of waitingIds) {
      const meta = await this.get(this.itemKey(id, 'meta.json'));
      if (meta) waiting.push(JSON.parse(meta.toString('utf8')) as SpoolMeta);
    }
    const deadEntries: SpoolEntry[] = [];
    for (const id of dead) {
      const e = await this.entry('dead', id).catch(() => null);
      if (e) deadEntries.push(e);
    }
    return { waiting, dead: deadEntries };
  }

  /**
   * Claims the one delivery status report of a message for this instance:
   * an object created only if it does not exist (a conditional PUT,
   * If-None-Match), so two instances finishing a message's last items at
   * once do not both report it. False when the report is taken. A server
   * without conditional writes is still checked first (a read of the marker):
   * only two claims in the same moment could then both succeed.
   */
  async claimReport(queueId: string, kind: 'final' | 'delayed' = 'final'): Promise<boolean> {
    if ((await this.get(this.reportKey(queueId, kind))) !== null) return false;
    try {
      await this.o.s3.send(
        new PutObjectCommand({ Bucket: this.o.bucket, Key: this.reportKey(queueId, kind), Body: new Date().toISOString(), ContentType: 'text/plain', IfNoneMatch: '*' }),
      );
      return true;
    } catch (err) {
      if (err instanceof S3ServiceException && (err.$metadata.httpStatusCode === 412 || err.$metadata.httpStatusCode === 409)) return false;
      throw err;
    }
  }

  /** Gives a claimed report back (it could not be sent), so a later outcome may send it. */
  async releaseReport(queueId: string, kind: 'final' | 'delayed' = 'final'): Promise<void> {
    await this.o.s3.send(new DeleteObjectsCommand({ Bucket: this.o.bucket, Delete: { Objects: [{ Key: this.reportKey(queueId, kind) }] } }));
  }

  /**
   * From one listing of the bucket: when the oldest item that is not a dead
   * letter was stored (epoch ms; null when there is none), and how many dead
   * letters there are.
   */
  async census(): Promise<{ oldestStoredAt: number | null; dead: number }> {
    const dead = new Set(await this.deadIds());
    let oldest: number | null = null;
    for (const m of await this.metaObjects()) if (!dead.has(m.id) && (oldest === null || m.storedAt < oldest)) oldest = m.storedAt;
    return { oldestStoredAt: oldest, dead: dead.size };
  }
}
