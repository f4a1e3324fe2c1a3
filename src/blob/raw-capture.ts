/**
 * Keeps the message as received for the event's `raw` (docs/payload.md,
 * "raw"; docs/architecture.md §3.4): inline (base64 `raw.content`) up to
 * `inlineLimit` bytes, otherwise streamed to the blob store *while DATA/BDAT
 * arrives* (claim check), so the upload of a 40 MB message is done, or
 * nearly, when the last byte comes in, instead of starting then.
 *
 * The capture starts uploading at the first chunk that takes the size past the
 * limit (writing what came before first); `abort()` stops an upload of a
 * transaction that was not accepted, and the store discards the partial blob.
 */
import { PassThrough } from 'node:stream';
import type { BlobSink } from '../message/parse.js';

export type RawField = { content: string } | { url: string; expiresAt: string } | Record<string, never>;

export class RawCapture {
  private size = 0;
  private readonly early: Buffer[] = [];
  private upload: { stream: PassThrough; done: Promise<{ url: string; expiresAt: string }> } | null = null;

  constructor(
    private readonly sink: BlobSink | null,
    private readonly inlineLimit: number,
    private readonly filename: string,
  ) {}

  /** Whether anything is captured at all (a blob store is configured). */
  get enabled(): boolean {
    return this.sink !== null;
  }

  write(chunk: Buffer): void {
    if (!this.sink) return;
    this.size += chunk.length;
    if (this.upload) {
      this.upload.stream.write(chunk);
      return;
    }
    this.early.push(chunk);
    if (this.size > this.inlineLimit) this.start(this.sink);
  }

  private start(sink: BlobSink): void {
    // The chunks are the session's own Buffers (already counted against the
    // memory budget); the PassThrough holds references, not copies.
    const stream = new PassThrough({ highWaterMark: 1024 * 1024 });
    const done = sink.put('raw', { filename: this.filename, contentType: 'message/rfc822' }, stream).then((r) => ({ url: r.url, expiresAt: r.expiresAt }));
    // Observed in result(); an aborted capture's rejection is expected.
    done.catch(() => undefined);
    for (const c of this.early) stream.write(c);
    this.early.length = 0;
    this.upload = { stream, done };
  }

  /**
   * The `raw` fields for the event once the message is complete: `content`
   * for a small message, `url`/`expiresAt` once the upload finished. Rejects
   * when the store failed (the caller defers: the event must not promise a
   * raw message it cannot serve).
   */
  async result(): Promise<RawField> {
    if (!this.sink) return {};
    if (!this.upload) return { content: Buffer.concat(this.early, this.size).toString('base64') };
    this.upload.stream.end();
    return this.upload.done;
  }

  /** Drops the capture of a transaction that ends without a message to deliver. */
  abort(): void {
    this.early.length = 0;
    if (this.upload && !this.upload.stream.destroyed) {
      this.upload.stream.destroy(Object.assign(new Error('transaction ended before the message was complete'), { code: 'EABORTED' }));
    }
  }
}
