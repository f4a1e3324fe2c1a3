/**
 * The console's store (docs/console.md): records what happens to each message
 * off the 250's critical path, answers the console's reads, runs retention
 * and hands the actions to the gateway.
 *
 * Recording costs the SMTP transaction the record's stored form and an
 * array push: the writes go out as one write of the copy log and one LMDB
 * transaction per batch, FLUSH_MS after the first of them (one timer for
 * the batch, never one per message). Nothing here throws into the
 * transaction: a console that cannot open or write its index reports
 * itself degraded (`/readyz`) and mail goes on (docs/architecture.md §2.1).
 */
import { Readable } from 'node:stream';
import { isoTime } from '../core/time.js';
import type { Logger } from 'pino';
import { decodeWords } from '../message/address.js';
import type { MessageBytes } from '../message/bytes.js';
import { parseMessage } from '../message/parse.js';
import { ConsoleDb, MAX_ATTEMPTS, statusOf, type DbOp, type StoredMessage } from './db.js';
import type { MessageRecorder, RecordedMessage } from './record.js';
import type {
  ActionResult,
  AttachmentInfo,
  Attempt,
  ConsoleChange,
  ConsoleStore,
  MessageDetail,
  MessagePage,
  MessageQuery,
  MessageStatus,
  TargetState,
} from './types.js';

/** How long a batch of records waits for company before it is written. */
const FLUSH_MS = 50;
/** Records held while the index cannot be written; past it the oldest are dropped (and counted). */
const MAX_PENDING = 10_000;
/** Messages removed per retention transaction. */
const SWEEP_CHUNK = 100;
/**
 * A sweep started by the copies passing maxBytes goes on down to this share
 * of it: one sweep per tenth of the limit rather than one per batch
 * written, each of which reads a chunk of records to remove a few.
 */
const SIZE_LOW_WATER = 0.9;

/** What the gateway does for the console's buttons (it owns the queue and the targets). */
export interface ConsoleActions {
  /** Sends the message's deferred or dead queued items again now. */
  retry(id: string, rec: StoredMessage): Promise<ActionResult>;
  /** Delivers the stored copy once more to `target`. */
  replay(id: string, target: string, rec: StoredMessage, copy: { message: MessageBytes; eventJson: Buffer }): Promise<ActionResult>;
}

export interface ConsoleServiceOptions {
  /** Directory of the LMDB environment (console.path). */
  dir: string;
  retention: { days: number; maxBytes: number };
  /** How often retention runs (it also runs at start). */
  sweepIntervalMs: number;
  now: () => number;
  logger: Logger;
  actions?: ConsoleActions | null;
  /** Fault injection for the retention tests: called after each committed chunk of removals. */
  onSweepStep?: (removedSoFar: number) => void;
  /** Messages removed per retention transaction (default 100). */
  sweepChunk?: number;
  /** Size at which the copy log starts a new segment (console/log.ts; smaller in the tests). */
  segmentBytes?: number;
}

type Pending =
  | { kind: 'received'; rec: StoredMessage }
  | { kind: 'attempt'; id: string; a: Attempt; state: TargetState['status']; required: boolean | undefined };

export class ConsoleService implements ConsoleStore, MessageRecorder {
  private db: ConsoleDb | null = null;
  private pending: Pending[] = [];
  private timer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private sweeping: Promise<number> | null = null;
  private sweepQueued = false;
  private readonly listeners = new Set<(c: ConsoleChange) => void>();
  private openProblem: string | null = null;
  private writeProblem: string | null = null;
  private dropped = 0;
  actions: ConsoleActions | null;

  constructor(private readonly o: ConsoleServiceOptions) {
    this.actions = o.actions ?? null;
    try {
      this.db = new ConsoleDb(o.dir, { segmentBytes: o.segmentBytes });
    } catch (err) {
      this.openProblem = `console index unavailable: ${describe(err)}`;
      o.logger.error({ dir: o.dir, err: describe(err), code: 'PG_CONSOLE_UNAVAILABLE' }, 'console index cannot be opened; mail still flows, the console is degraded');
    }
  }

  /** Starts retention: once now, then every sweepIntervalMs, and whenever the copies pass maxBytes. */
  start(): void {
    if (!this.db || this.sweepTimer) return;
    setImmediate(this.runSweep);
    this.sweepTimer = setInterval(this.runSweep, this.o.sweepIntervalMs);
    this.sweepTimer.unref();
  }

  private readonly runSweep = (): void => {
    this.sweepQueued = false;
    void this.sweep().catch((err: unknown) => this.o.logger.warn({ err: describe(err) }, 'console retention failed'));
  };

  /** A sweep on the next turn of the event loop, unless one runs or is coming. */
  private sweepSoon(): void {
    if (this.sweeping || this.sweepQueued) return;
    this.sweepQueued = true;
    setImmediate(this.runSweep);
  }

  async close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    await this.sweeping?.catch(() => undefined);
    this.flush();
    const db = this.db;
    this.db = null;
    this.openProblem ??= 'console closed';
    await db?.close();
  }

  // --- the recorder (hot path: push, at most arm the batch's one timer) ---

  received(m: RecordedMessage): void {
    if (!this.db) return;
    // Made into what is stored now, not at the batch: the batch holds one
    // small record per message and the copy's buffers (the .eml's, the event
    // JSON), never copied, not the parsed event, which the young generation
    // can then free at once.
    this.enqueue({ kind: 'received', rec: toStored(m, this.db) });
  }

  attempt(queueId: string, a: Attempt, state: TargetState['status'], required?: boolean): void {
    this.enqueue({ kind: 'attempt', id: queueId, a, state, required });
  }

  private enqueue(p: Pending): void {
    if (!this.db) return;
    if (this.pending.length >= MAX_PENDING) {
      this.pending.shift();
      this.dropped++;
    }
    this.pending.push(p);
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, FLUSH_MS);
      this.timer.unref();
    }
  }

  /** Writes what is pending in one transaction and announces it. */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const db = this.db;
    if (!db || this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    const ops: DbOp[] = [];
    const changes: ConsoleChange[] = [];
    const recs = new Map<string, StoredMessage>();
    try {
      for (const p of batch) {
        if (p.kind === 'received') {
          const { rec } = p;
          recs.set(rec.s.id, rec);
          ops.push({ op: 'put', id: rec.s.id, rec });
          changes.push({ type: 'added', summary: rec.s });
          continue;
        }
        const rec = recs.get(p.id) ?? db.get(p.id);
        if (!rec) continue; // recorded before the console was on, or removed
        applyAttempt(rec, p.a, p.state, p.required);
        if (!recs.has(p.id)) ops.push({ op: 'update', id: p.id, rec });
        recs.set(p.id, rec);
        changes.push({ type: 'updated', summary: rec.s });
      }
      db.apply(ops);
      if (this.writeProblem) this.o.logger.info('console index writable again');
      this.writeProblem = null;
      // Past maxBytes, retention runs now rather than at its next turn: at a
      // thousand messages a second, ten minutes would store gigabytes more.
      if (this.sweepTimer && db.storedBytes() > this.o.retention.maxBytes) this.sweepSoon();
    } catch (err) {
      // The records of this batch are lost to the console; mail is not affected.
      this.dropped += batch.length;
      if (!this.writeProblem) this.o.logger.error({ err: describe(err), code: 'PG_CONSOLE_UNAVAILABLE' }, 'console index write failed; mail still flows, the console is degraded');
      this.writeProblem = `console index write failed: ${describe(err)}`;
      return;
    }
    for (const c of changes) this.emit(c);
  }

  private emit(c: ConsoleChange): void {
    for (const l of this.listeners) {
      try {
        l(c);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  // --- the store the pages and the API read ---

  degraded(): string | null {
    return this.openProblem ?? this.writeProblem;
  }

  /** Records dropped because the index could not take them (for the log and tests). */
  droppedRecords(): number {
    return this.dropped;
  }

  private ready(): ConsoleDb {
    if (!this.db) throw Object.assign(new Error(this.openProblem ?? 'console closed'), { code: 'PG_CONSOLE_UNAVAILABLE' });
    this.flush();
    return this.db;
  }

  async list(query: MessageQuery): Promise<MessagePage> {
    const limit = Math.min(500, Math.max(1, Math.floor(query.limit ?? 50)));
    return this.ready().query(query, limit);
  }

  async get(id: string): Promise<MessageDetail | null> {
    const db = this.ready();
    const rec = db.get(id);
    if (!rec) return null;
    const data = eventData(db, id, rec);
    return {
      ...rec.s,
      targets: rec.targets,
      attempts: rec.attempts,
      // Encoded words (RFC 2047) decoded for display; the raw .eml keeps them as sent.
      headers: (data?.headers ?? []).map((h) => [h.name, decodeWords(h.value)] as [string, string]),
      text: typeof data?.text === 'string' ? data.text : null,
      html: typeof data?.html === 'string' ? data.html : null,
      attachmentList: rec.attachments,
      hasRaw: rec.raw > 0,
      hasEvent: rec.event > 0,
    };
  }

  async event(id: string): Promise<Buffer | null> {
    return this.ready().copy(id, 'event') ?? null;
  }

  async raw(id: string): Promise<NodeJS.ReadableStream | null> {
    const db = this.ready();
    const rec = db.get(id);
    return (rec && db.rawBytes(id, rec)?.stream()) ?? null;
  }

  async attachment(id: string, index: number): Promise<{ info: AttachmentInfo; content: NodeJS.ReadableStream } | null> {
    const db = this.ready();
    const rec = db.get(id);
    const info = rec?.attachments[index];
    if (!rec || !info) return null;
    // Inline in the event when it was small enough (blobs.inlineLimit);
    // otherwise taken again from the stored .eml, parsed with everything inline.
    const eventJson = db.copy(id, 'event', rec);
    if (eventJson) {
      const a = (JSON.parse(eventJson.toString('utf8')) as { data?: EventData }).data?.attachments?.[index];
      if (typeof a?.content === 'string') return { info, content: Readable.from([Buffer.from(a.content, 'base64')]) };
    }
    const raw = db.rawBytes(id, rec);
    if (!raw) return null;
    const parsed = await parseMessage(raw.stream(), { limits: { inlineLimit: Number.MAX_SAFE_INTEGER } });
    const a = parsed.attachments[index] as { content?: string } | undefined;
    if (typeof a?.content !== 'string') return null;
    return { info, content: Readable.from([Buffer.from(a.content, 'base64')]) };
  }

  async htmlBody(id: string): Promise<{ html: string; images: Array<{ contentId: string; contentType: string; base64: string }> } | null> {
    const data = eventData(this.ready(), id);
    if (typeof data?.html !== 'string') return null;
    const images: Array<{ contentId: string; contentType: string; base64: string }> = [];
    for (const a of data.attachments ?? []) {
      if (typeof a.contentId === 'string' && a.contentId && typeof a.contentType === 'string' && typeof a.content === 'string') {
        images.push({ contentId: a.contentId, contentType: a.contentType, base64: a.content });
      }
    }
    return { html: data.html, images };
  }

  async retry(id: string): Promise<ActionResult> {
    const rec = this.ready().get(id);
    if (!rec) return { ok: false, code: 'PG_CONSOLE_NOT_FOUND', message: `no message ${id}` };
    if (!this.actions) return { ok: false, code: 'PG_CONSOLE_NO_QUEUE', message: 'no queued route: nothing is kept for retries' };
    return this.actions.retry(id, rec);
  }

  async replay(id: string, target: string): Promise<ActionResult> {
    const db = this.ready();
    const rec = db.get(id);
    if (!rec) return { ok: false, code: 'PG_CONSOLE_NOT_FOUND', message: `no message ${id}` };
    const message = db.rawBytes(id, rec);
    const eventJson = db.copy(id, 'event', rec);
    if (!message || !eventJson) return { ok: false, code: 'PG_CONSOLE_NOT_STORED', message: 'the stored copy of this message is gone (retention)' };
    if (!this.actions) return { ok: false, code: 'PG_CONSOLE_NO_QUEUE', message: 'replay is not available here' };
    return this.actions.replay(id, target, rec, { message, eventJson });
  }

  async remove(id: string): Promise<ActionResult> {
    const db = this.ready();
    if (!db.get(id)) return { ok: false, code: 'PG_CONSOLE_NOT_FOUND', message: `no message ${id}` };
    db.apply([{ op: 'remove', id, erase: true }]);
    this.emit({ type: 'deleted', id });
    return { ok: true, message: `message ${id} deleted` };
  }

  subscribe(listener: (change: ConsoleChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** How many messages the index holds and the bytes of their stored copies. */
  stats(): { messages: number; bytes: number } {
    const db = this.ready();
    return { messages: db.count(), bytes: db.storedBytes() };
  }

  /** Index entries and copies are consistent (see ConsoleDb.check). */
  check(): string[] {
    return this.ready().check();
  }

  /**
   * Retention: removes messages older than `days`, then the oldest while the
   * copies take more than `maxBytes` (down to SIZE_LOW_WATER of it). Each
   * chunk is one transaction, so a stop at any point leaves whole messages;
   * the next sweep (at start, then every sweepIntervalMs) goes on where it
   * stopped. Their bytes go with their log segment (docs/console.md,
   * "Retention"); spare segments unused since the last sweep go too.
   */
  sweep(): Promise<number> {
    this.sweeping ??= this.sweepOnce().finally(() => (this.sweeping = null));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<number> {
    const chunk = this.o.sweepChunk ?? SWEEP_CHUNK;
    const cutoff = this.o.now() - this.o.retention.days * 86_400_000;
    let removed = 0;
    this.flush();
    const max = this.o.retention.maxBytes;
    const down = this.db && this.db.storedBytes() > max ? Math.floor(max * SIZE_LOW_WATER) : max;
    for (;;) {
      const db = this.db;
      if (!db) break;
      let bytes = db.storedBytes();
      const gone: DbOp[] = [];
      for (const { id, rec } of db.oldest(chunk)) {
        const old = Date.parse(rec.s.receivedAt) < cutoff;
        if (!old && bytes <= down) break;
        gone.push({ op: 'remove', id, rec, erase: false });
        bytes -= rec.raw + rec.event;
      }
      if (!gone.length) break;
      db.apply(gone);
      removed += gone.length;
      for (const o of gone) this.emit({ type: 'deleted', id: o.id });
      this.o.onSweepStep?.(removed);
      // Let SMTP sessions run between chunks.
      await new Promise((r) => setImmediate(r));
    }
    // Real time, not the retention clock: how long a spare has waited unused.
    this.db?.pruneSpares(Date.now() - this.o.sweepIntervalMs);
    if (removed) this.o.logger.info({ removed }, 'console retention removed messages');
    return removed;
  }
}

interface EventData {
  headers?: Array<{ name: string; value: string }>;
  text?: unknown;
  html?: unknown;
  attachments?: Array<{ content?: string; contentId?: string | null; contentType?: string }>;
}

/** The stored event's data, or null when there is none or it does not parse. */
function eventData(db: ConsoleDb, id: string, rec?: StoredMessage): EventData | null {
  const eventJson = db.copy(id, 'event', rec);
  if (!eventJson) return null;
  try {
    return (JSON.parse(eventJson.toString('utf8')) as { data?: EventData }).data ?? null;
  } catch {
    return null;
  }
}

function describe(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ? `${(err as NodeJS.ErrnoException).code}: ${(err as Error).message}` : (err as Error).message;
}

/** Where a target stands after an attempt of the transaction. */
function stateAfter(a: Attempt | undefined, spooled: boolean, refused: boolean): TargetState['status'] {
  if (!a) return spooled ? 'pending' : refused ? 'pending' : 'delivered';
  if (a.outcome === 'delivered') return 'delivered';
  if (a.outcome === 'skipped') return 'skipped';
  if (spooled || a.outcome === 'deferred') return 'deferred';
  return 'dead';
}

/** The stored form of a recorded message; its copy is appended to the log. */
function toStored(m: RecordedMessage, db: ConsoleDb): StoredMessage {
  const d = m.event?.data;
  const fromEntry = d?.from?.find((f) => 'address' in f && typeof f.address === 'string' && f.address !== '') as { address: string } | undefined;
  const targets: TargetState[] = m.targets.map((t) => {
    let last: Attempt | undefined;
    for (const a of m.attempts) if (a.target === t.target) last = a;
    return { target: t.target, kind: t.kind, required: t.required, status: stateAfter(last, t.spooled, m.refused) };
  });
  const base: MessageStatus = m.refused ? 'refused' : m.quarantined ? 'quarantined' : 'delivered';
  const attachments: AttachmentInfo[] = (d?.attachments ?? []).map((a, index) => ({
    index,
    filename: a.filename ?? null,
    contentType: a.contentType,
    size: a.size,
    disposition: a.disposition ?? null,
  }));
  // The .eml: its bytes in memory, and for a large message the part spilled
  // to disk while it arrived (storage.spillAbove), kept as a hard link to the
  // spill file before the session removes its own name for it (it does so
  // before the reply, docs/architecture.md §1.1). A layout other than memory
  // then one file range, or a file that cannot be linked, keeps no .eml.
  const raw: Buffer[] = [];
  let rawLength = 0;
  let file: StoredMessage['file'];
  if (m.message) {
    const segments = m.message.segments;
    const at = segments.findIndex((s) => 'file' in s);
    const last = at === -1 ? segments.length : at;
    // Bytes in memory, then at most one file range at the end: the layout the session makes.
    if (at === -1 || at === segments.length - 1) {
      for (let i = 0; i < last; i++) {
        const buf = (segments[i] as { buf: Buffer }).buf;
        raw.push(buf);
        rawLength += buf.length;
      }
      const tail = at === -1 ? null : (segments[at] as { file: string; start: number; end: number });
      if (tail && db.keepFile(m.queueId, tail.file)) {
        file = { start: tail.start, end: tail.end };
        rawLength += tail.end - tail.start;
      } else if (tail) {
        raw.length = 0;
        rawLength = 0;
      }
    }
  }
  const eventLength = m.eventJson?.length ?? 0;
  const rec: StoredMessage = {
    s: {
      id: m.queueId,
      receivedAt: isoTime(m.receivedAt.getTime()),
      client: { address: m.client.address, ...(m.client.hostname ? { hostname: m.client.hostname } : {}), ...(m.client.helo ? { helo: m.client.helo } : {}) },
      mailFrom: m.mailFrom,
      rcptTo: m.rcptTo,
      from: fromEntry?.address ?? null,
      subject: d?.subject ?? null,
      size: m.size,
      route: m.route,
      status: m.refused ? 'refused' : statusOf(base, targets),
      reply: m.reply,
      spam: m.verdicts ? m.verdicts.spam : d?.spam ? { scanner: d.spam.scanner, score: d.spam.score, threshold: d.spam.threshold, action: d.spam.action } : null,
      virus: m.verdicts ? m.verdicts.virus : d?.virus ? { scanner: d.virus.scanner, infected: d.virus.infected, names: d.virus.names } : null,
      attachments: attachments.length,
    },
    targets,
    attempts: m.attempts.slice(-MAX_ATTEMPTS),
    attachments,
    sha: m.rawSha256,
    raw: rawLength,
    event: eventLength,
    ...(file ? { file } : {}),
    base,
  };
  const inline = file ? rawLength - (file.end - file.start) : rawLength;
  if (inline || eventLength) rec.at = db.appendCopy(m.queueId, raw, inline, m.eventJson);
  return rec;
}

/** A later attempt: appended to the timeline, its target's state and the message's status follow. */
function applyAttempt(rec: StoredMessage, a: Attempt, state: TargetState['status'], required: boolean | undefined): void {
  rec.attempts.push(a);
  if (rec.attempts.length > MAX_ATTEMPTS) rec.attempts.splice(0, rec.attempts.length - MAX_ATTEMPTS);
  const t = rec.targets.find((x) => x.target === a.target);
  if (t) t.status = state;
  else rec.targets.push({ target: a.target, kind: a.kind, required: required ?? false, status: state });
  rec.s.status = statusOf(rec.base, rec.targets);
}

