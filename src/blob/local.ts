/**
 * The local blob store for claim checks (docs/architecture.md §3.4): content too large to
 * carry inside the event (big attachments, the raw message) is written under
 * `<storage.path>/blobs/` and the event carries a signed, expiring URL served
 * by postgate's own HTTP endpoint instead.
 *
 * URL: `<publicUrl>/blobs/<id>?exp=<unix seconds>&sig=<base64url HMAC-SHA256(key, "<id>.<exp>")>`.
 * The id is random (nothing guessable), the signature binds id and expiry,
 * and `expiresAt` in the event is exactly `exp`: a URL never outlives what it says.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { hashingTap } from './hash-tap.js';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import type http from 'node:http';
import type { BlobKind, BlobSink } from '../message/parse.js';

export interface LocalBlobStoreOptions {
  dir: string;
  /** Base URL clients use to reach the HTTP endpoint, e.g. "http://127.0.0.1:9025". */
  publicUrl: () => string;
  signingKey: Buffer;
  ttlMs: number;
  now: () => number;
}

const ID_RE = /^[0-9a-f]{32}$/;
/** A partial write older than this is a crash leftover, not a write in progress. */
const STALE_PARTIAL_MS = 3_600_000;

export class LocalBlobStore implements BlobSink {
  constructor(private readonly opts: LocalBlobStoreOptions) {}

  private sign(id: string, exp: number): string {
    return createHmac('sha256', this.opts.signingKey).update(`${id}.${exp}`).digest('base64url');
  }

  /** A signed URL for a stored blob. */
  urlFor(id: string): { url: string; expiresAt: string } {
    const exp = Math.floor((this.opts.now() + this.opts.ttlMs) / 1000);
    return {
      url: `${this.opts.publicUrl()}/blobs/${id}?exp=${exp}&sig=${this.sign(id, exp)}`,
      expiresAt: new Date(exp * 1000).toISOString(),
    };
  }

  /** Streams content to disk (fsync'd, renamed into place) and returns its signed URL. */
  async put(
    _kind: BlobKind,
    meta: { filename: string | null; contentType: string },
    content: Readable,
  ): Promise<{ url: string; expiresAt: string; sha256: string; size: number }> {
    await mkdir(this.opts.dir, { recursive: true, mode: 0o750 });
    const id = randomBytes(16).toString('hex');
    const file = path.join(this.opts.dir, id);
    const tmp = `${file}.tmp`;
    const tap = hashingTap();
    try {
      await pipeline(content, tap.stream, createWriteStream(tmp, { mode: 0o640 }));
      const fh = await open(tmp, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await writeFile(`${file}.meta`, JSON.stringify({ contentType: meta.contentType, filename: meta.filename }));
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      await rm(`${file}.meta`, { force: true });
      throw err;
    }
    return { ...this.urlFor(id), ...tap.result() };
  }

  /**
   * Deletes blobs whose every link has expired. A link expires `ttl` after
   * the blob was written (`urlFor` is called at write time only), so a file
   * older than `ttl` can no longer be fetched by anyone. Leftovers of writes
   * that never finished (`.tmp`, a `.meta` without its blob, from a crash)
   * go once they are an hour old. Returns how many blobs were removed.
   */
  async sweep(): Promise<{ removed: number; bytes: number }> {
    let names: string[];
    try {
      names = await readdir(this.opts.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { removed: 0, bytes: 0 };
      throw err;
    }
    const now = this.opts.now();
    const present = new Set(names);
    let removed = 0;
    let bytes = 0;
    for (const name of names) {
      const file = path.join(this.opts.dir, name);
      const st = await stat(file).catch(() => null);
      if (!st) continue;
      const age = now - st.mtimeMs;
      if (ID_RE.test(name)) {
        // One second of slack: exp is rounded down to whole seconds.
        if (age > this.opts.ttlMs + 1000) {
          await rm(`${file}.meta`, { force: true });
          await rm(file, { force: true });
          removed++;
          bytes += st.size;
        }
      } else if (name.endsWith('.tmp') || (name.endsWith('.meta') && !present.has(name.slice(0, -5)))) {
        if (age > STALE_PARTIAL_MS) await rm(file, { force: true });
      }
    }
    return { removed, bytes };
  }

  /**
   * Serves GET /blobs/<id>?exp&sig. 403 for a bad or tampered signature, 410
   * once expired, 404 for an unknown id. Returns false when the path is not ours.
   */
  handle(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const url = new URL(req.url ?? '/', 'http://x');
    const m = /^\/blobs\/([^/]+)$/.exec(url.pathname);
    if (!m) return false;
    const id = m[1]!;
    const exp = Number(url.searchParams.get('exp'));
    const sig = Buffer.from(url.searchParams.get('sig') ?? '', 'base64url');
    const deny = (status: number, text: string) => {
      res.writeHead(status, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.end(`${text}\n`);
    };
    if (!ID_RE.test(id) || !Number.isSafeInteger(exp)) {
      deny(403, 'invalid link');
      return true;
    }
    const want = Buffer.from(this.sign(id, exp), 'base64url');
    if (sig.length !== want.length || !timingSafeEqual(sig, want)) {
      deny(403, 'invalid signature');
      return true;
    }
    if (exp * 1000 < this.opts.now()) {
      deny(410, 'link expired');
      return true;
    }
    const file = path.join(this.opts.dir, id);
    Promise.all([stat(file), readFile(`${file}.meta`, 'utf8').then((t) => JSON.parse(t) as { contentType?: string })]).then(
      ([st, meta]) => {
        res.writeHead(200, {
          'content-type': meta.contentType ?? 'application/octet-stream',
          'content-length': st.size,
          'cache-control': 'private, no-store',
          'x-content-type-options': 'nosniff',
          // never rendered inline by a browser on our origin
          'content-disposition': 'attachment',
        });
        if (req.method === 'HEAD') return res.end();
        createReadStream(file).on('error', () => res.destroy()).pipe(res);
      },
      () => deny(404, 'not found'),
    );
    return true;
  }
}
