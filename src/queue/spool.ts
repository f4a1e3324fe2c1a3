/**
 * The local spool of queued mode: one directory per (message, target)
 * delivery, so each target's retries, history and dead letter are its own.
 *
 *   <root>/tmp/<itemId>/      being written; never delivered, removed at start
 *   <root>/active/<itemId>/   accepted (250 sent only after it is here, durably)
 *   <root>/dead/<itemId>/     final failure or expiry, with the attempt history
 *
 * An item holds `message.eml` (the bytes delivered; the items of one
 * message share one file through hard links), `event.json`,
 * `meta.json` (immutable) and `state.json` (attempts; replaced atomically).
 * Publishing an item is one rename of its directory from tmp/ to active/,
 * after every file in it and the directory itself were fsync'd, followed by
 * an fsync of active/: a crash at any point leaves either no item or a whole one.
 */
import { link, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { syncDir, writeDurably } from '../core/durable.js';
import { MessageBytes } from '../message/bytes.js';

export interface SpoolMeta {
  itemId: string;
  queueId: string;
  deliveryId: string;
  targetId: string;
  /** Whether the route's 250 would have waited for this target (DSN reports follow required targets). */
  required: boolean;
  route: string;
  mailFrom: string;
  rcptTo: string[];
  rawSha256: string;
  receivedAt: string;
  spooledAt: string;
}

export interface SpoolAttempt {
  at: string;
  ok: boolean;
  code?: string;
  reply?: string;
  error?: string;
}

export interface SpoolState {
  attempts: number;
  /** Epoch ms of the next attempt. */
  nextAt: number;
  history: SpoolAttempt[];
  /** Why the item is dead (dead/ only). */
  deadReason?: string;
  /** A failure DSN was sent for this item's message (at most one per message). */
  dsnSent?: boolean;
  /** A delay DSN was sent for this item's message (at most one per message). */
  dsnDelayed?: boolean;
}

export interface SpoolEntry {
  meta: SpoolMeta;
  state: SpoolState;
}

export type SpoolArea = 'active' | 'dead';

export interface NewSpoolItem {
  meta: SpoolMeta;
  message: MessageBytes;
  eventJson: Buffer;
  /**
   * Store the item with a copy of the message of its own instead of the
   * message's shared one. For an item added to a message that already has
   * items (a replay): the removal of the message's last other item, running
   * at the same moment, may delete the shared copy after this item wrote it
   * (S3 + SQS backend; the local spool's hard links are each item's own).
   */
  ownCopy?: boolean;
}

/**
 * Every readable item of an area, oldest first, from either backend (the
 * local spool, or the S3 + SQS items as stored): an item that cannot be read
 * is left out of the listing, not an error.
 */
export async function listEntries(store: { ids(area: SpoolArea): Promise<string[]>; entry(area: SpoolArea, id: string): Promise<SpoolEntry> }, area: SpoolArea): Promise<SpoolEntry[]> {
  const out: SpoolEntry[] = [];
  for (const id of await store.ids(area)) {
    const e = await store.entry(area, id).catch(() => null);
    if (e) out.push(e);
  }
  return out;
}

/** Attempts kept in state.json; older ones are summarised by `attempts`. */
const MAX_HISTORY = 50;

export class LocalSpool {
  /**
   * `onStep` names each step of a write as it completes; tests use it to
   * kill the process at every step (fault injection) and check recovery.
   */
  constructor(
    readonly root: string,
    private readonly onStep: (step: string) => void = () => undefined,
  ) {}

  private dir(area: 'tmp' | SpoolArea, itemId?: string): string {
    return itemId ? path.join(this.root, area, itemId) : path.join(this.root, area);
  }

  /** Creates the areas and removes half-written items (their senders never got a 250). */
  async init(): Promise<{ discarded: number }> {
    for (const a of ['tmp', 'active', 'dead'] as const) await mkdir(this.dir(a), { recursive: true, mode: 0o750 });
    const leftovers = await readdir(this.dir('tmp'));
    for (const l of leftovers) await rm(path.join(this.dir('tmp'), l), { recursive: true, force: true });
    await syncDir(this.root);
    return { discarded: leftovers.length };
  }

  /** Durably publishes every item; resolves only when all are in active/. */
  async put(items: readonly NewSpoolItem[], firstAttemptAt: number): Promise<void> {
    const written: string[] = [];
    // The targets of one message share its bytes: the first item's file is
    // written, the others get a hard link to it (one copy on disk; each item
    // directory stays whole on its own, and removing one leaves the others).
    const firstFile = new Map<MessageBytes, string>();
    try {
      for (const it of items) {
        const id = it.meta.itemId;
        const d = this.dir('tmp', id);
        await mkdir(d, { mode: 0o750 });
        written.push(d);
        this.onStep(`${id}:mkdir`);
        const file = path.join(d, 'message.eml');
        const shared = firstFile.get(it.message);
        if (!shared || !(await link(shared, file).then(() => true, () => false))) {
          await writeDurably(file, await it.message.content());
          firstFile.set(it.message, file);
        }
        this.onStep(`${id}:message`);
        await writeDurably(path.join(d, 'event.json'), it.eventJson);
        this.onStep(`${id}:event`);
        await writeDurably(path.join(d, 'meta.json'), JSON.stringify(it.meta));
        this.onStep(`${id}:meta`);
        const state: SpoolState = { attempts: 0, nextAt: firstAttemptAt, history: [] };
        await writeDurably(path.join(d, 'state.json'), JSON.stringify(state));
        this.onStep(`${id}:state`);
        await syncDir(d);
        this.onStep(`${id}:sync`);
      }
      await syncDir(this.dir('tmp'));
      this.onStep('tmp:sync');
      for (const it of items) {
        await rename(this.dir('tmp', it.meta.itemId), this.dir('active', it.meta.itemId));
        this.onStep(`${it.meta.itemId}:rename`);
      }
      await syncDir(this.dir('active'));
      this.onStep('active:sync');
    } catch (err) {
      for (const d of written) await rm(d, { recursive: true, force: true }).catch(() => undefined);
      // Items already renamed stay: they are whole, and a duplicate delivery
      // (same webhook-id) is better than a loss. The caller answers 4xx.
      throw err;
    }
  }

  /** Item ids in an area, oldest first (ids start with the time-sortable queue id). */
  async ids(area: SpoolArea): Promise<string[]> {
    return (await readdir(this.dir(area)).catch(() => [] as string[])).sort();
  }

  list(area: SpoolArea): Promise<SpoolEntry[]> {
    return listEntries(this, area);
  }

  async entry(area: SpoolArea, itemId: string): Promise<SpoolEntry> {
    const d = this.dir(area, itemId);
    const [meta, state] = await Promise.all([readFile(path.join(d, 'meta.json'), 'utf8'), readFile(path.join(d, 'state.json'), 'utf8')]);
    return { meta: JSON.parse(meta) as SpoolMeta, state: JSON.parse(state) as SpoolState };
  }

  /** An item's content; the message is read from its file when used, never loaded whole by this call. */
  async content(area: SpoolArea, itemId: string): Promise<{ message: MessageBytes; eventJson: Buffer }> {
    const d = this.dir(area, itemId);
    const file = path.join(d, 'message.eml');
    const [st, eventJson] = await Promise.all([stat(file), readFile(path.join(d, 'event.json'))]);
    return { message: new MessageBytes([{ file, start: 0, end: st.size }]), eventJson };
  }

  async saveState(area: SpoolArea, itemId: string, state: SpoolState): Promise<void> {
    const trimmed = { ...state, history: state.history.slice(-MAX_HISTORY) };
    await writeDurably(path.join(this.dir(area, itemId), 'state.json'), JSON.stringify(trimmed));
  }

  /** Delivered: the item is gone. */
  async remove(itemId: string): Promise<void> {
    await rm(this.dir('active', itemId), { recursive: true, force: true });
  }

  /** Final failure: kept under dead/ with its history, for `postgate queue`. */
  async bury(itemId: string, state: SpoolState): Promise<void> {
    await this.saveState('active', itemId, state);
    await rename(this.dir('active', itemId), this.dir('dead', itemId));
    await syncDir(this.dir('dead'));
  }

  /** Back from dead/ to active/ for another round (`postgate queue retry`). */
  async revive(itemId: string, nextAt: number): Promise<void> {
    const e = await this.entry('dead', itemId);
    const { deadReason: _gone, ...rest } = e.state;
    await this.saveState('dead', itemId, { ...rest, nextAt });
    await rename(this.dir('dead', itemId), this.dir('active', itemId));
    await syncDir(this.dir('active'));
  }

  async purge(area: SpoolArea, itemId: string): Promise<void> {
    await rm(this.dir(area, itemId), { recursive: true, force: true });
  }

  async exists(area: SpoolArea, itemId: string): Promise<boolean> {
    return stat(this.dir(area, itemId)).then(
      () => true,
      () => false,
    );
  }
}
