/**
 * The console's stored copies as segment files (docs/decisions.md, "The
 * console's database"): `console.path/copies/<n>.log`, each entry the queue
 * id (20 bytes) then the copy (console/copy.ts). The index holds each
 * message's place, `[segment, offset, length]`, the live bytes of each
 * segment and where the next batch goes; a segment is retired when its last
 * message goes.
 *
 * Why not values in the index: a copy is ~13 KB per message and LMDB puts
 * each in overflow pages of its own, copied into dirty pages and written at
 * commit (about 20 µs of CPU per 4 KB message, most of the recording cost).
 * Here a batch is one gathered write straight from the message's own
 * buffers (the .eml's segments, the event JSON): no copy in the process.
 *
 * Why segments are used again: what a write into a file costs is mostly the
 * kernel finding new pages for it. Measured on the project's 2-core VM,
 * appending 13 KB cost 6–11 µs while the file was small and 28–33 µs once
 * it had passed ~150 MB, and writing over pages of a file already in the
 * page cache 3 µs. So a retired segment is kept as a spare (at most
 * MAX_SPARES) and the next segment is written over it from its start: a
 * console running at its retention limit writes into the same pages again
 * and again. A deleted message is zeroed at once (`erase`); what retention
 * removed stays in its segment until the segment is retired, then in the
 * spare until it is written over or, unused for a sweep interval, removed
 * (`pruneSpares`).
 *
 * Order of writes: a batch's bytes are written before the index commits the
 * records that point to them, and the index keeps where the next batch
 * goes (`end`), so a committed record never points past what was written;
 * a batch the index did not commit is written over by the next one.
 *
 * Leaf module: node:fs and console/copy.ts.
 */
import { closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readSync, renameSync, rmSync, writeSync, writevSync } from 'node:fs';
import path from 'node:path';
import { copyHead, COPY_HEAD } from './copy.js';

/** Where a copy is: its segment, the offset of its entry, the entry's length (id included). */
export type LogRef = [seg: number, at: number, len: number];

/** A segment takes no more batches once it holds this much (a batch may take it a little past). */
export const SEGMENT_BYTES = 64 * 1024 * 1024;
/** Retired segments kept to be written over (beyond them, a retired segment is removed). */
const MAX_SPARES = 2;
/** Bytes a batch gathers before they are written (the buffers it holds until then). */
const BATCH_BYTES = 1024 * 1024;
/** Buffers per gathered write (Linux's IOV_MAX). */
const IOV_MAX = 1024;
const ID_BYTES = 20;
const NAME_RE = /^(\d{8})\.log$/;
const SPARE_RE = /^spare-(\d{8})\.log$/;
/** Read and write at positions, made if missing (never O_APPEND: Linux would ignore the positions). */
const RW = constants.O_RDWR | constants.O_CREAT;

export class CopyLog {
  readonly dir: string;
  private seg: number;
  private fd: number;
  /** Where the next bytes go in the newest segment. */
  private pos: number;
  /** Where they went when the index last committed: an uncommitted batch is written over from here. */
  private committed: number;
  /** The batch's buffers, in order, and their bytes. */
  private iov: Buffer[] = [];
  private used = 0;
  /** Descriptors of older segments opened to read or erase (closed when the segment goes). */
  private readonly fds = new Map<number, number>();
  /** Spare file names and when they were retired. */
  private readonly spareSince = new Map<string, number>();

  /**
   * `end`: where the index says the next batch goes. A newer segment than
   * its is one opened after the last commit: written from its start.
   */
  constructor(
    dir: string,
    end: { seg: number; pos: number } | null,
    private readonly segmentBytes = SEGMENT_BYTES,
  ) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    const segs = this.segments();
    // Spares of an earlier run: when they were retired is not known, and
    // what retention left in them should not wait for another interval.
    for (const name of readdirSync(dir)) if (SPARE_RE.test(name)) rmSync(path.join(dir, name), { force: true });
    this.seg = segs.length ? segs[segs.length - 1]! : (end?.seg ?? 1);
    this.fd = openSync(this.file(this.seg), RW, 0o640);
    this.pos = end && end.seg === this.seg ? end.pos : 0;
    this.committed = this.pos;
  }

  /** The segment batches go to. */
  get active(): number {
    return this.seg;
  }

  /** Where the next batch goes, for the index to keep with the records of this one. */
  get end(): { seg: number; pos: number } {
    return { seg: this.seg, pos: this.pos + this.used };
  }

  /** Segment numbers on disk, oldest first (spares not included). */
  segments(): number[] {
    const out: number[] = [];
    for (const name of readdirSync(this.dir)) {
      const m = NAME_RE.exec(name);
      if (m) out.push(Number(m[1]));
    }
    return out.sort((a, b) => a - b);
  }

  private name(seg: number): string {
    return `${String(seg).padStart(8, '0')}.log`;
  }

  private file(seg: number): string {
    return path.join(this.dir, this.name(seg));
  }

  /**
   * Adds a message's copy (the .eml's segments in memory, `rawLength`
   * bytes, then the event) to the batch and returns its place. Its buffers
   * are held, not copied, until the batch is written (nothing writes to them
   * again); a batch past BATCH_BYTES is written at once.
   */
  append(id: string, raw: readonly Buffer[], rawLength: number, event: Buffer | null): LogRef {
    const head = Buffer.allocUnsafe(ID_BYTES + COPY_HEAD);
    head.write(id, 0, ID_BYTES, 'latin1');
    copyHead(head, ID_BYTES, rawLength);
    const len = head.length + rawLength + (event?.length ?? 0);
    const at = this.pos + this.used;
    this.iov.push(head);
    for (const b of raw) this.iov.push(b);
    if (event) this.iov.push(event);
    this.used += len;
    if (this.used >= BATCH_BYTES) this.writeBuffered();
    return [this.seg, at, len];
  }

  /** Writes the batch's bytes: called before the index commits records that point to them. */
  writeBuffered(): void {
    if (this.used === 0) return;
    const iov = this.iov;
    const total = this.used;
    this.iov = [];
    this.used = 0;
    let pos = this.pos;
    for (let i = 0; i < iov.length; i += IOV_MAX) pos = this.writeAll(iov.slice(i, i + IOV_MAX), pos);
    this.pos += total;
  }

  /** One gathered write at `pos`; after a short one (a signal, a disk that fills) the rest a buffer at a time. Returns the end. */
  private writeAll(part: Buffer[], pos: number): number {
    let wrote = writevSync(this.fd, part, pos);
    for (const b of part) {
      if (wrote >= b.length) {
        wrote -= b.length;
        pos += b.length;
        continue;
      }
      for (let off = wrote; off < b.length; ) off += writeSync(this.fd, b, off, b.length - off, pos + off);
      pos += b.length;
      wrote = 0;
    }
    return pos;
  }

  /**
   * The index committed: what was written is now pointed to. A full
   * segment is closed and the next one opened, over a spare when there is
   * one.
   */
  commit(): void {
    this.committed = this.pos;
    if (this.pos < this.segmentBytes) return;
    closeSync(this.fd);
    const next = this.seg + 1;
    const spare = this.spareSince.keys().next().value;
    if (spare !== undefined) {
      this.spareSince.delete(spare);
      renameSync(path.join(this.dir, spare), this.file(next));
    }
    this.fd = openSync(this.file(next), RW, 0o640);
    this.seg = next;
    this.pos = 0;
    this.committed = 0;
  }

  /** The index did not commit: the batch is dropped, and the next one is written over what of it was written. */
  abort(): void {
    this.iov = [];
    this.used = 0;
    this.pos = this.committed;
  }

  private fdOf(seg: number): number | null {
    if (seg === this.seg) return this.fd;
    let fd = this.fds.get(seg);
    if (fd === undefined) {
      if (!existsSync(this.file(seg))) return null;
      fd = openSync(this.file(seg), 'r+');
      this.fds.set(seg, fd);
    }
    return fd;
  }

  /** The copy at `ref` (a buffer of its own), or null when it is not there or not this message's. */
  read(id: string, ref: LogRef): Buffer | null {
    const [seg, at, len] = ref;
    const fd = this.fdOf(seg);
    if (fd === null) return null;
    const out = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const n = readSync(fd, out, got, len - got, at + got);
      if (n === 0) return null; // the segment ends before the copy does
      got += n;
    }
    return out.toString('latin1', 0, ID_BYTES) === id ? out.subarray(ID_BYTES) : null;
  }

  /** Overwrites a removed message's copy with zeros: a removal removes the content, not only the entry. */
  erase(ref: LogRef): void {
    const [seg, at, len] = ref;
    const fd = this.fdOf(seg);
    if (fd === null) return; // already gone
    const zeros = Buffer.alloc(Math.min(len, BATCH_BYTES));
    for (let done = 0; done < len; ) done += writeSync(fd, zeros, 0, Math.min(zeros.length, len - done), at + done);
  }

  /**
   * Retires a segment no message points into any more (never the one
   * batches go to): kept as a spare to be written over, or removed.
   */
  retire(seg: number): void {
    if (seg === this.seg) return;
    const fd = this.fds.get(seg);
    if (fd !== undefined) closeSync(fd);
    this.fds.delete(seg);
    if (this.spareSince.size < MAX_SPARES) {
      const name = `spare-${this.name(seg)}`;
      renameSync(this.file(seg), path.join(this.dir, name));
      this.spareSince.set(name, Date.now());
    } else rmSync(this.file(seg), { force: true });
  }

  /** Removes the spares retired before `beforeMs`: a console with little mail keeps no old bytes around for long. */
  pruneSpares(beforeMs: number): void {
    for (const [name, since] of this.spareSince) {
      if (since >= beforeMs) continue;
      rmSync(path.join(this.dir, name), { force: true });
      this.spareSince.delete(name);
    }
  }

  close(): void {
    this.iov = [];
    this.used = 0;
    for (const fd of [this.fd, ...this.fds.values()]) {
      try {
        closeSync(fd);
      } catch {
        // closed already
      }
    }
    this.fds.clear();
  }
}
