/**
 * The bytes of one message, in memory or partly in a file, without copying
 * them into one Buffer. A message is received once and then read by several
 * consumers (the parser, the raw-message capture, an archive target, the
 * spool); holding it as one contiguous Buffer — and copying it again to
 * prepend the trace headers — made a 50 MB message cost 150 MB and more.
 * `MessageBytes` is a list of segments: Buffers (the session's own chunks,
 * referenced, not copied) and byte ranges of a file (the part of a large
 * message spilled to disk while it arrived). Leaf module.
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';

export type Segment = { readonly buf: Buffer } | { readonly file: string; readonly start: number; readonly end: number };

/** Up to this size an in-memory message is written with one call (one copy). */
const INLINE_WRITE_MAX = 1024 * 1024;

const segLength = (s: Segment): number => ('buf' in s ? s.buf.length : s.end - s.start);

export class MessageBytes {
  readonly size: number;

  constructor(readonly segments: readonly Segment[]) {
    this.size = segments.reduce((n, s) => n + segLength(s), 0);
  }

  static of(...bufs: Buffer[]): MessageBytes {
    return new MessageBytes(bufs.filter((b) => b.length > 0).map((buf) => ({ buf })));
  }

  /** Whether some of the bytes are in a file (reading them costs I/O, not memory). */
  get spilled(): boolean {
    return this.segments.some((s) => 'file' in s);
  }

  /** These bytes after `prefix`. */
  prepend(prefix: Buffer): MessageBytes {
    return prefix.length === 0 ? this : new MessageBytes([{ buf: prefix }, ...this.segments]);
  }

  /** The bytes from offset `from` on. */
  slice(from: number): MessageBytes {
    const out: Segment[] = [];
    let skip = from;
    for (const s of this.segments) {
      const n = segLength(s);
      if (skip >= n) {
        skip -= n;
        continue;
      }
      if (skip === 0) out.push(s);
      else out.push('buf' in s ? { buf: s.buf.subarray(skip) } : { file: s.file, start: s.start + skip, end: s.end });
      skip = 0;
    }
    return new MessageBytes(out);
  }

  /**
   * Up to `max` leading bytes that are in memory (the header block of any
   * message lies there: see `SpillBuffer`, which keeps its first bytes in
   * memory). Copies only when the leading bytes span several chunks.
   */
  head(max: number): Buffer {
    const parts: Buffer[] = [];
    let n = 0;
    for (const s of this.segments) {
      if (!('buf' in s) || n >= max) break;
      const take = s.buf.subarray(0, max - n);
      parts.push(take);
      n += take.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** Up to `max` leading bytes, read from the files where they are there (a spooled message). */
  async readHead(max: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let n = 0;
    for (const s of this.segments) {
      if (n >= max) break;
      if ('buf' in s) {
        const take = s.buf.subarray(0, max - n);
        parts.push(take);
        n += take.length;
        continue;
      }
      const want = Math.min(s.end - s.start, max - n);
      if (want <= 0) continue;
      const fh = await open(s.file, 'r');
      try {
        const buf = Buffer.alloc(want);
        const { bytesRead } = await fh.read(buf, 0, want, s.start);
        parts.push(buf.subarray(0, bytesRead));
        n += bytesRead;
      } finally {
        await fh.close();
      }
    }
    return Buffer.concat(parts, n);
  }

  /**
   * The header block (up to and including the empty line), or, when it does
   * not end within `max` in-memory bytes, those bytes. No copy when the block
   * lies in the first chunk, the usual case.
   */
  headerBlock(max: number): Buffer {
    const first = this.segments[0];
    if (first && 'buf' in first) {
      const b = first.buf;
      const crlf = b.indexOf('\r\n\r\n');
      const lf = b.indexOf('\n\n');
      const end = crlf === -1 ? (lf === -1 ? -1 : lf + 2) : lf === -1 || crlf + 1 < lf ? crlf + 4 : lf + 2;
      if (end !== -1 && end <= max) return b.subarray(0, end);
    }
    return this.head(max);
  }

  /** A fresh stream of all the bytes, from the start. */
  stream(): Readable {
    const segments = this.segments;
    return Readable.from(
      (async function* () {
        for (const s of segments) {
          if ('buf' in s) yield s.buf;
          else if (s.end > s.start) yield* createReadStream(s.file, { start: s.start, end: s.end - 1, highWaterMark: 256 * 1024 });
        }
      })(),
      { objectMode: false },
    );
  }

  /**
   * What a writer takes best: one Buffer for a small message in memory (one
   * write call), a stream otherwise (never the whole of a large message in memory).
   */
  async content(): Promise<Buffer | Readable> {
    return !this.spilled && this.size <= INLINE_WRITE_MAX ? this.buffer() : this.stream();
  }

  /** All the bytes in one Buffer (reads spilled parts into memory: for small messages, or where a library needs a Buffer). */
  async buffer(): Promise<Buffer> {
    if (this.segments.length === 1 && 'buf' in this.segments[0]!) return this.segments[0].buf;
    const parts: Buffer[] = [];
    for (const s of this.segments) {
      if ('buf' in s) parts.push(s.buf);
      else if (s.end > s.start) parts.push((await readFile(s.file)).subarray(s.start, s.end));
    }
    return Buffer.concat(parts, this.size);
  }
}

/**
 * Collects a message as it arrives: in memory up to `threshold` bytes, then
 * the rest appended to a file in `dir`. `write` returns false while the file
 * is behind (the caller pauses the SMTP stream until `onDrain`), so a slow
 * disk cannot make the chunks pile up in memory.
 */
export class SpillBuffer {
  private readonly chunks: Buffer[] = [];
  private memSize = 0;
  private fileSize = 0;
  private file: { path: string; out: WriteStream; failed: Error | null } | null = null;
  private drainWaiters: Array<() => void> = [];

  constructor(
    private readonly dir: string,
    private readonly name: string,
    private readonly threshold: number,
  ) {}

  /** Bytes held in memory (the rest is in the file). */
  get inMemory(): number {
    return this.memSize;
  }

  /** Whether a chunk of `n` bytes written now stays in memory. */
  fitsInMemory(n: number): boolean {
    return !this.file && this.memSize + n <= this.threshold;
  }

  write(chunk: Buffer): boolean {
    if (this.fitsInMemory(chunk.length)) {
      this.chunks.push(chunk);
      this.memSize += chunk.length;
      return true;
    }
    if (!this.file) {
      const p = path.join(this.dir, this.name);
      // Created lazily: most messages never get here. `mkdir` is sync-free
      // through the stream's own open; the directory exists from startup.
      const out = createWriteStream(p, { flags: 'w', mode: 0o600 });
      const f = { path: p, out, failed: null as Error | null };
      out.on('error', (err) => {
        f.failed = err;
        this.wake();
      });
      out.on('drain', () => this.wake());
      this.file = f;
    }
    this.fileSize += chunk.length;
    return this.file.out.write(chunk);
  }

  /** Calls `fn` once the file has caught up (or failed). */
  onDrain(fn: () => void): void {
    this.drainWaiters.push(fn);
  }

  private wake(): void {
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const fn of w) fn();
  }

  /** The whole message, once the file (if any) is flushed and closed. Rejects when the file could not be written. */
  async end(): Promise<MessageBytes> {
    const head: Segment[] = this.chunks.map((buf) => ({ buf }));
    if (!this.file) return new MessageBytes(head);
    const f = this.file;
    if (f.failed) throw f.failed;
    await new Promise<void>((resolve, reject) => {
      f.out.end(() => (f.failed ? reject(f.failed) : resolve()));
      f.out.once('error', reject);
    });
    return new MessageBytes([...head, { file: f.path, start: 0, end: this.fileSize }]);
  }

  /** Drops the message: forgets the chunks and deletes the file (null when there was none: nothing to wait for). */
  discard(): Promise<void> | null {
    this.chunks.length = 0;
    this.memSize = 0;
    const f = this.file;
    this.file = null;
    this.wake();
    if (!f) return null;
    f.out.destroy();
    return rm(f.path, { force: true });
  }
}

/** Creates the spill directory and removes what a crash left in it (nothing there was ever accepted). */
export async function resetSpillDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true, mode: 0o750 });
}
