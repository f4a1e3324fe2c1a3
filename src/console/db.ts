/**
 * The console's index in one LMDB environment and its stored copies in a
 * log beside it (docs/decisions.md, "The console's database"): one record
 * per message, the .eml and the event JSON as one stored copy, and
 * secondary keys for the searches that must stay fast at 100,000 messages
 * (recipient, sender).
 *
 *   messages  <queue id>                 → StoredMessage (msgpack)
 *   copies    <queue id>                 → a copy an earlier version stored in the index (console/copy.ts)
 *   meta      'bytes'                     → bytes of every stored copy
 *             'seg:<n>'                   → bytes of the copy log's segment n that messages point to
 *             'logSeg', 'logPos'          → where the copy log's next batch goes
 *   copies/<n>.log                       → the copies (console/log.ts)
 *
 * A message's copy is written before the transaction that adds its record,
 * and a segment is retired only when the transaction that removed its last
 * message has committed, so no crash leaves an entry without its copy; a
 * deleted message's bytes are zeroed at once, retention's go with their
 * segment (docs/console.md, "Retention"). The search keys (recipient,
 * sender) are derived from the records and held in memory
 * (console/keys.ts): they are built from the records when the environment
 * opens.
 *
 * Queue ids start with their millisecond time (message/ids.ts), so the
 * messages sort by arrival and "newest first" is a reverse range; a time
 * range is a range of ids.
 */
import { existsSync, linkSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { MessageBytes } from '../message/bytes.js';
import { open, type Database, type RootDatabase } from 'lmdb';
import { copyEvent, copyRaw, encodeCopy } from './copy.js';
import { SearchKeys, type KeyParts } from './keys.js';
import { CopyLog, type LogRef } from './log.js';
import type { AttachmentInfo, Attempt, MessageQuery, MessageStatus, MessageSummary, TargetState } from './types.js';

/** What is kept per message. */
export interface StoredMessage {
  s: MessageSummary;
  targets: TargetState[];
  attempts: Attempt[];
  attachments: AttachmentInfo[];
  /** What the status is when every target is through: a refusal stays one, quarantine shows as such. */
  base: MessageStatus;
  /** SHA-256 of the message as received (for replay's delivery id). */
  sha: string;
  /** Bytes of the stored copies (0 when not stored). */
  raw: number;
  event: number;
  /** Where the copy is in the copy log; absent with a copy in `copies` (an earlier version's layout) or none. */
  at?: LogRef;
  /**
   * The part of a large message that was spilled to disk while it arrived
   * (storage.spillAbove): bytes `start` to `end` of `files/<id>`, a hard link
   * to the spill file made before the session removed it. The .eml is the
   * copy's bytes, then these.
   */
  file?: { start: number; end: number };
}

/** A write of the batch the store flushes. */
export type DbOp =
  /** `rec.at`: its copy, appended to the log (ConsoleDb.appendCopy) since the last batch. */
  | { op: 'put'; id: string; rec: StoredMessage }
  | { op: 'update'; id: string; rec: StoredMessage }
  /**
   * `rec`: the record as read before the transaction (its keys and sizes
   * never change), which saves reading it again. `erase`: its copy's bytes
   * are zeroed at once (a delete); otherwise they go with their segment (retention).
   */
  | { op: 'remove'; id: string; rec?: StoredMessage; erase: boolean };

/** Records read for one page at most; a page that needs more ends early with a cursor. */
export const SCAN_BUDGET = 20_000;
/** Attempts kept per message; the oldest go first. */
export const MAX_ATTEMPTS = 200;
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** A queue id: 10 characters of time, 10 of randomness, Crockford base32 (message/ids.ts). */
export const QUEUE_ID_RE = /^[0-9A-HJKMNP-TV-Z]{20}$/;

/** The first ten characters of a queue id made at `ms`: ids of later messages sort after it. */
export function timePrefix(ms: number): string {
  let out = '';
  let t = Math.max(0, Math.floor(ms));
  for (let i = 0; i < 10; i++) {
    out = CROCKFORD[t % 32]! + out;
    t = Math.floor(t / 32);
  }
  return out;
}

/** The secondary keys of a message: each recipient, the envelope sender and the header From, lower-cased. */
function keysOf(s: MessageSummary): KeyParts[] {
  const out: KeyParts[] = [];
  for (const r of new Set(s.rcptTo.map((a) => a.toLowerCase()))) out.push(['r', r]);
  const senders = new Set([s.mailFrom.toLowerCase(), (s.from ?? '').toLowerCase()].filter(Boolean));
  for (const f of senders) out.push(['f', f]);
  return out;
}

/** Lower-cased words of letters and digits. */
export function words(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

/** Whether a stored message matches every given field of a query (the index narrowed it first). */
export function matches(s: MessageSummary, q: MessageQuery, sinceMs: number | null, untilMs: number | null): boolean {
  if (q.rcpt && !s.rcptTo.some((r) => r.toLowerCase() === q.rcpt!.toLowerCase())) return false;
  if (q.from) {
    const f = q.from.toLowerCase();
    if (s.mailFrom.toLowerCase() !== f && (s.from ?? '').toLowerCase() !== f) return false;
  }
  if (q.route && s.route !== q.route) return false;
  if (q.status && s.status !== q.status) return false;
  if (sinceMs !== null || untilMs !== null) {
    const t = Date.parse(s.receivedAt);
    if (sinceMs !== null && t < sinceMs) return false;
    if (untilMs !== null && t > untilMs) return false;
  }
  if (q.subject) {
    const subject = (s.subject ?? '').toLowerCase();
    if (!words(q.subject).every((w) => subject.includes(w))) return false;
  }
  if (q.q) {
    const hay = [s.subject ?? '', s.from ?? '', s.mailFrom, ...s.rcptTo].join('\n').toLowerCase();
    if (!words(q.q).every((w) => hay.includes(w))) return false;
  }
  return true;
}

/** Where a message stands, from its targets (a refusal stays a refusal). */
export function statusOf(base: MessageStatus, targets: readonly TargetState[]): MessageStatus {
  if (base === 'refused') return base;
  const required = targets.filter((t) => t.required);
  if (required.some((t) => t.status === 'dead')) return 'dead';
  if (required.some((t) => t.status === 'deferred')) return 'deferred';
  if (required.some((t) => t.status === 'pending')) return 'queued';
  return base === 'quarantined' ? 'quarantined' : 'delivered';
}

/** What a batch removed, for what follows its commit. */
interface Removed {
  id: string;
  keys: KeyParts[];
  file: boolean;
  /** Its copy, to be zeroed once the removal is committed. */
  erase?: LogRef | undefined;
}

export class ConsoleDb {
  private readonly env: RootDatabase;
  private readonly log: CopyLog;
  private readonly messages: Database<StoredMessage, string>;
  private readonly copies: Database<Buffer, string>;
  private readonly keys = new SearchKeys();
  private readonly meta: Database<number, string>;

  /** Where the spilled parts of large messages are kept (hard links, one per message). */
  readonly filesDir: string;

  constructor(
    readonly dir: string,
    opts: { segmentBytes?: number } = {},
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    this.filesDir = path.join(dir, 'files');
    mkdirSync(this.filesDir, { recursive: true, mode: 0o750 });
    this.env = open({ path: dir, maxDbs: 8, compression: false, noSync: true });
    // Shared msgpack structures: every record has the same shape, so its
    // field names are written once, not per record (smaller, faster to encode).
    this.messages = this.env.openDB<StoredMessage, string>({ name: 'messages', sharedStructuresKey: Symbol.for('structures') });
    this.copies = this.env.openDB<Buffer, string>({ name: 'copies', encoding: 'binary' });
    // An index written by an earlier version kept its keys in a database of their own: no longer read.
    const legacy = this.env.openDB<Buffer, string>({ name: 'keys', encoding: 'binary' });
    if (legacy.getCount() > 0) legacy.clearSync();
    this.meta = this.env.openDB<number, string>({ name: 'meta' });
    this.migrateCopies();
    const logSeg = this.meta.get('logSeg');
    this.log = new CopyLog(path.join(dir, 'copies'), logSeg === undefined ? null : { seg: logSeg, pos: this.meta.get('logPos') ?? 0 }, opts.segmentBytes);
    // A segment no message points into: its last message went while the
    // process died before retiring it, or its batch was never committed.
    for (const seg of this.log.segments()) if (!((this.meta.get(`seg:${seg}`) ?? 0) > 0)) this.log.retire(seg);
    for (const { key, value } of this.messages.getRange()) this.keys.add(key, keysOf(value.s));
    // A file linked for a batch that was never committed, or whose message
    // went while the process died before removing it.
    for (const name of readdirSync(this.filesDir)) {
      if (!this.messages.doesExist(name)) rmSync(path.join(this.filesDir, name), { force: true });
    }
  }

  /**
   * Keeps the spilled part of a message (a hard link: no bytes copied, and
   * the session may remove its own name for the file at once). False when
   * it cannot be linked (another file system: console.path elsewhere).
   */
  keepFile(id: string, file: string): boolean {
    try {
      linkSync(file, path.join(this.filesDir, id));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Appends a message's copy to the log (written with the next batch, before
   * its commit); the record keeps the place it returns.
   */
  appendCopy(id: string, raw: readonly Buffer[], rawLength: number, event: Buffer | null): LogRef {
    return this.log.append(id, raw, rawLength, event);
  }

  /** The .eml of a message as bytes in memory and, for a large one, a range of its kept file. */
  rawBytes(id: string, rec: StoredMessage): MessageBytes | undefined {
    const inline = this.copy(id, 'raw', rec) ?? Buffer.alloc(0);
    if (!rec.file) return inline.length ? MessageBytes.of(inline) : undefined;
    const file = path.join(this.filesDir, id);
    if (!existsSync(file)) return undefined;
    return new MessageBytes([...(inline.length ? [{ buf: inline }] : []), { file, start: rec.file.start, end: rec.file.end }]);
  }

  /**
   * An index written by an earlier version kept a message's .eml and event
   * as two values (`<id>\0raw`, `<id>\0event`): they become one
   * (console/copy.ts), a hundred messages per transaction.
   */
  private migrateCopies(): void {
    if (this.meta.get('copyFormat') === 1) return;
    const ids: string[] = [];
    for (const key of this.copies.getKeys()) {
      const at = key.indexOf('\0');
      if (at > 0 && ids[ids.length - 1] !== key.slice(0, at)) ids.push(key.slice(0, at));
    }
    for (let i = 0; i < ids.length; i += 100) {
      this.env.transactionSync(() => {
        for (const id of ids.slice(i, i + 100)) {
          const raw = this.copies.get(`${id}\0raw`);
          const event = this.copies.get(`${id}\0event`);
          this.copies.put(id, encodeCopy(raw ? [raw] : [], raw?.length ?? 0, event ?? null));
          this.copies.remove(`${id}\0raw`);
          this.copies.remove(`${id}\0event`);
        }
      });
    }
    this.meta.putSync('copyFormat', 1);
  }

  /**
   * Applies a batch in one transaction. Commits are not fsync'd (the
   * environment is opened with noSync): the console is a view of what
   * happened, not the promise of docs/architecture.md §2.1, and a synced
   * commit held the event loop for milliseconds per batch and cost the
   * process three times the system CPU (docs/decisions.md, "The console's
   * database"). A process crash loses nothing LMDB committed; a machine
   * crash can lose the last batches or damage the index (docs/console.md).
   */
  apply(ops: readonly DbOp[]): void {
    const removed: Removed[] = [];
    let empty: number[];
    try {
      // The copies first: a committed record never points past what was written.
      this.log.writeBuffered();
      empty = this.write(ops, removed);
    } catch (err) {
      // Nothing of the batch was committed: its copies and kept files have no entry.
      this.log.abort();
      for (const o of ops) if (o.op === 'put' && o.rec.file) rmSync(path.join(this.filesDir, o.id), { force: true });
      throw err;
    }
    // Committed: the log, the keys and the kept files follow.
    this.log.commit();
    if (removed.length) this.keys.remove(removed);
    for (const r of removed) {
      if (r.file) rmSync(path.join(this.filesDir, r.id), { force: true });
      if (r.erase) this.log.erase(r.erase);
    }
    for (const seg of empty) this.log.retire(seg);
    for (const o of ops) if (o.op === 'put') this.keys.add(o.id, keysOf(o.rec.s));
  }

  /** The batch's transaction; returns the log segments it left without a message (to retire once committed). */
  private write(ops: readonly DbOp[], removed: Removed[]): number[] {
    return this.env.transactionSync(() => {
      let bytes = this.meta.get('bytes') ?? 0;
      const live = new Map<number, number>();
      for (const o of ops) {
        if (o.op === 'remove') {
          bytes -= this.removeOne(o, removed, live);
          continue;
        }
        if (o.op === 'update') {
          if (this.messages.get(o.id) === undefined) continue; // removed meanwhile
          this.messages.put(o.id, o.rec);
          continue;
        }
        // Queue ids are unique (message/ids.ts): a put never replaces a message.
        this.messages.put(o.id, o.rec);
        if (o.rec.at) {
          live.set(o.rec.at[0], (live.get(o.rec.at[0]) ?? 0) + o.rec.at[2]);
          bytes += o.rec.raw + o.rec.event;
        }
      }
      this.meta.put('bytes', Math.max(0, bytes));
      const end = this.log.end;
      this.meta.put('logSeg', end.seg);
      this.meta.put('logPos', end.pos);
      const empty: number[] = [];
      for (const [seg, change] of live) {
        const now = (this.meta.get(`seg:${seg}`) ?? 0) + change;
        if (now > 0 || seg === this.log.active) this.meta.put(`seg:${seg}`, Math.max(0, now));
        else {
          this.meta.remove(`seg:${seg}`);
          empty.push(seg);
        }
      }
      return empty;
    });
  }

  /** Inside a transaction: removes a message and its copy; returns the bytes freed and notes its keys in `removed`. */
  private removeOne(o: Extract<DbOp, { op: 'remove' }>, removed: Removed[], live: Map<number, number>): number {
    const id = o.id;
    const rec = o.rec && this.messages.doesExist(id) ? o.rec : this.messages.get(id);
    if (rec === undefined) return 0;
    removed.push({ id, keys: keysOf(rec.s), file: rec.file !== undefined, erase: o.erase ? rec.at : undefined });
    if (rec.at) live.set(rec.at[0], (live.get(rec.at[0]) ?? 0) - rec.at[2]);
    else if (rec.raw || rec.event) this.copies.remove(id);
    this.messages.remove(id);
    return rec.raw + rec.event;
  }

  get(id: string): StoredMessage | undefined {
    return this.messages.get(id);
  }

  /** Removes spare log segments retired before `beforeMs` (console/log.ts). */
  pruneSpares(beforeMs: number): void {
    this.log.pruneSpares(beforeMs);
  }

  /** A message's stored .eml (the part not in a kept file) or event; `rec` when already read. */
  copy(id: string, which: 'raw' | 'event', rec: StoredMessage | undefined = this.messages.get(id)): Buffer | undefined {
    if (!rec) return undefined;
    const stored = rec.at ? this.log.read(id, rec.at) : this.copies.get(id);
    if (!stored) return undefined;
    // `get` gives a buffer of its own (not LMDB's shared read buffer): views of it are safe to keep.
    return (which === 'raw' ? copyRaw(stored) : copyEvent(stored)) ?? undefined;
  }

  storedBytes(): number {
    return this.meta.get('bytes') ?? 0;
  }

  count(): number {
    return this.messages.getCount();
  }

  /** Ids, newest first, below `before` (exclusive) and at or above `from`. */
  private *ids(q: MessageQuery, before: string, from: string): Generator<string> {
    const driver: KeyParts | null = q.rcpt ? ['r', q.rcpt.toLowerCase()] : q.from ? ['f', q.from.toLowerCase()] : null;
    if (driver) {
      yield* this.keys.below(driver[0], driver[1], before, from);
      return;
    }
    for (const id of this.messages.getKeys({ start: before, end: from, reverse: true })) if (id !== before) yield id;
  }

  /** A page of a search, newest first: the driving key narrows it, the record decides. */
  query(q: MessageQuery, limit: number): { items: MessageSummary[]; next: string | null } {
    const sinceMs = q.since ? Date.parse(q.since) : null;
    const untilMs = q.until ? Date.parse(q.until) : null;
    // An id's time is the MAIL command's, a little before receivedAt: the
    // lower bound leaves room for a long transaction, the record decides.
    let before = untilMs !== null ? `${timePrefix(untilMs + 1)}` : '\u{10ffff}';
    if (q.cursor && q.cursor < before) before = q.cursor;
    const from = sinceMs !== null ? timePrefix(sinceMs - 3_600_000) : '';
    const items: MessageSummary[] = [];
    let read = 0;
    let last = '';
    for (const id of this.ids(q, before, from)) {
      // A search the keys cannot narrow reads records; past the budget the
      // page ends early and `next` goes on below the last one read (docs/console.md).
      if (++read > SCAN_BUDGET) return { items, next: last };
      last = id;
      const rec = this.messages.get(id);
      if (!rec || !matches(rec.s, q, sinceMs, untilMs)) continue;
      if (items.length === limit) return { items, next: items[items.length - 1]!.id };
      items.push(rec.s);
    }
    return { items, next: null };
  }

  /** Ids of the oldest messages first, up to `max`. */
  oldest(max: number): Array<{ id: string; rec: StoredMessage }> {
    const out: Array<{ id: string; rec: StoredMessage }> = [];
    for (const { key, value } of this.messages.getRange({ limit: max })) out.push({ id: key, rec: value });
    return out;
  }

  /**
   * Every copy has its message and every message's recorded copies exist
   * (what a crash must never break), and each log segment's live bytes are
   * those its messages point to; returns the problems found.
   */
  check(): string[] {
    const problems: string[] = [];
    for (const id of this.copies.getKeys()) {
      if (this.messages.get(id) === undefined) problems.push(`copy ${id} without its message`);
    }
    const pointed = new Map<number, number>();
    for (const { value } of this.messages.getRange()) if (value.at) pointed.set(value.at[0], (pointed.get(value.at[0]) ?? 0) + value.at[2]);
    for (const seg of this.log.segments()) {
      const recorded = this.meta.get(`seg:${seg}`) ?? 0;
      if (recorded !== (pointed.get(seg) ?? 0)) problems.push(`copy log segment ${seg}: ${recorded} live bytes recorded, ${pointed.get(seg) ?? 0} pointed to`);
      if (!pointed.has(seg) && seg !== this.log.active) problems.push(`copy log segment ${seg} without messages`);
      pointed.delete(seg);
    }
    for (const seg of pointed.keys()) problems.push(`copy log segment ${seg} missing`);
    for (const name of readdirSync(this.filesDir)) {
      if (!this.messages.doesExist(name)) problems.push(`kept file ${name} without its message`);
    }
    for (const { key, value } of this.messages.getRange()) {
      if (value.file) {
        const size = existsSync(path.join(this.filesDir, key)) ? statSync(path.join(this.filesDir, key)).size : -1;
        if (size < value.file.end) problems.push(`message ${key} without its kept file`);
      }
      if (!value.raw && !value.event) continue;
      const stored = value.at ? this.log.read(key, value.at) : this.copies.get(key);
      if (!stored) problems.push(`message ${key} without its copy`);
      else {
        const inline = value.raw - (value.file ? value.file.end - value.file.start : 0);
        if (inline && copyRaw(stored)?.length !== inline) problems.push(`message ${key} without its .eml`);
        if (value.event && copyEvent(stored)?.length !== value.event) problems.push(`message ${key} without its event`);
      }
    }
    return problems;
  }

  async close(): Promise<void> {
    this.log.close();
    await this.env.close();
  }
}
