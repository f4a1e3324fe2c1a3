/**
 * The claim-check store on S3: large attachments (and whole events for
 * pointers) are uploaded to a bucket and linked by a presigned GET URL.
 *
 * `expiresAt` is the real expiry of the link. A SigV4 presigned URL is valid
 * for at most 7 days, and never beyond the expiry of the credentials that
 * signed it (temporary credentials of a role: often an hour or less), so the
 * link's lifetime is the smallest of `blobs.ttl`, 7 days and what the
 * credentials have left. Keep objects longer than links with a lifecycle rule.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { hashingTap } from './hash-tap.js';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { BlobKind, BlobSink } from '../message/parse.js';

/** SigV4 query-string authentication allows at most 7 days (X-Amz-Expires ≤ 604800). */
const MAX_PRESIGN_S = 7 * 86_400;

/**
 * A presigned GET link to `key` and its real expiry: the smallest of
 * `ttlSeconds`, SigV4's 7 days and what the signing credentials have left.
 */
export async function presignGet(client: S3Client, bucket: string, key: string, ttlSeconds: number, now: number): Promise<{ url: string; expiresAt: string }> {
  let s = Math.min(Math.floor(ttlSeconds), MAX_PRESIGN_S);
  const creds = await client.config.credentials();
  if (creds.expiration) s = Math.min(s, Math.floor((creds.expiration.getTime() - now) / 1000));
  const expiresIn = Math.max(1, s);
  const url = await getSignedUrl(client, new GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn });
  return { url, expiresAt: new Date(now + expiresIn * 1000).toISOString() };
}

export interface S3BlobStoreOptions {
  client: S3Client;
  bucket: string;
  prefix: string;
  ttlMs: number;
  now(): number;
}

export class S3BlobStore implements BlobSink {
  constructor(private readonly opts: S3BlobStoreOptions) {}

  async put(
    kind: BlobKind,
    meta: { filename: string | null; contentType: string },
    content: Readable,
  ): Promise<{ url: string; expiresAt: string; sha256: string; size: number }> {
    const d = new Date(this.opts.now());
    const p = (n: number) => String(n).padStart(2, '0');
    const key = `${this.opts.prefix}${d.getUTCFullYear()}/${p(d.getUTCMonth() + 1)}/${p(d.getUTCDate())}/${kind}-${randomBytes(16).toString('hex')}`;
    const tap = hashingTap();
    content.on('error', (err) => tap.stream.destroy(err));
    // Upload streams in parts, so a body of unknown length never has to be
    // held in memory whole (PutObject needs the length up front).
    await new Upload({
      client: this.opts.client,
      params: {
        Bucket: this.opts.bucket,
        Key: key,
        Body: content.pipe(tap.stream),
        ContentType: meta.contentType,
        ...(meta.filename ? { ContentDisposition: `attachment; filename*=UTF-8''${encodeURIComponent(meta.filename)}` } : {}),
      },
    }).done();
    return { ...(await presignGet(this.opts.client, this.opts.bucket, key, this.opts.ttlMs / 1000, this.opts.now())), ...tap.result() };
  }
}
