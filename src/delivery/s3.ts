/**
 * The s3 target: archives the message as stored (trace headers + the bytes as
 * received, `.eml`) and its JSON event as two objects, uploaded with
 * lib-storage's Upload (one PUT for small bodies, a multipart upload for
 * large ones; the bodies are Buffers, so every length is known up front).
 * Both uploads completing is the acknowledgement; any failure defers (451).
 *
 * Idempotent by construction: the default keys contain the delivery id, which
 * is the same on every retry of the same message, so a retry overwrites the
 * same two objects instead of adding copies (unless the retry falls on another
 * UTC day of the date placeholders).
 */
import type { S3Client, PutObjectCommandInput } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { failure } from '../transaction/replies.js';
import type { S3TargetConfig } from '../config/schema.js';
import { defaultS3Id } from '../message/ids.js';
import { createAwsClients, sdkFailure, type AwsClientCache } from './aws-clients.js';
import type { DeliveryMessage, Target } from './types.js';

/** Fills a key template (validated at config load) for one message. */
export function renderKey(template: string, values: { receivedAt: Date; queueId: string; deliveryId: string }): string {
  const d = values.receivedAt;
  const p = (n: number) => String(n).padStart(2, '0');
  const v: Record<string, string> = {
    yyyy: String(d.getUTCFullYear()),
    mm: p(d.getUTCMonth() + 1),
    dd: p(d.getUTCDate()),
    hh: p(d.getUTCHours()),
    id: values.queueId,
    deliveryId: values.deliveryId,
  };
  return template.replace(/\{([A-Za-z]+)\}/g, (whole, name: string) => v[name] ?? whole);
}

export class S3Target implements Target {
  readonly type = 's3';
  readonly id: string;
  readonly required: boolean;
  private readonly client: S3Client;
  private readonly own: AwsClientCache | null;

  constructor(
    private readonly cfg: S3TargetConfig,
    aws?: AwsClientCache,
  ) {
    this.id = cfg.id ?? defaultS3Id(cfg);
    this.required = cfg.required;
    this.own = aws ? null : createAwsClients();
    this.client = (aws ?? this.own!).s3({ region: cfg.region, endpoint: cfg.endpoint, forcePathStyle: cfg.forcePathStyle });
  }

  /** The two keys a message is stored under. */
  keys(msg: DeliveryMessage, deliveryId: string): { eml: string; event: string } {
    const values = { receivedAt: msg.receivedAt, queueId: msg.queueId, deliveryId };
    return { eml: this.cfg.prefix + renderKey(this.cfg.emlKey, values), event: this.cfg.prefix + renderKey(this.cfg.eventKey, values) };
  }

  async deliver(msg: DeliveryMessage, deliveryId: string, signal: AbortSignal): Promise<void> {
    const keys = this.keys(msg, deliveryId);
    const stop = AbortSignal.any([signal, AbortSignal.timeout(this.cfg.timeout)]);
    const common: Omit<PutObjectCommandInput, 'Key'> = {
      Bucket: this.cfg.bucket,
      ...(this.cfg.storageClass ? { StorageClass: this.cfg.storageClass } : {}),
      ...(this.cfg.serverSideEncryption ? { ServerSideEncryption: this.cfg.serverSideEncryption } : {}),
      ...(this.cfg.kmsKeyId ? { SSEKMSKeyId: this.cfg.kmsKeyId } : {}),
      // Object metadata, so an archive can be matched to logs and receivers.
      Metadata: { 'queue-id': msg.queueId, 'delivery-id': deliveryId, 'raw-sha256': msg.rawSha256 },
    };
    try {
      await Promise.all([
        this.upload({ ...common, Key: keys.eml, Body: await msg.message.content(), ContentType: 'message/rfc822', ContentLength: msg.message.size }, stop),
        this.upload({ ...common, Key: keys.event, Body: msg.eventJson, ContentType: 'application/json', ContentLength: msg.eventJson.length }, stop),
      ]);
    } catch (err) {
      const f = sdkFailure(err);
      // A bucket that is missing, a denied permission or a store that is down
      // are all fixed by an operator: the sender keeps the message (451).
      throw failure(f.reply, { message: `s3 ${this.cfg.bucket}/${keys.eml}: ${f.why}`, cause: err });
    }
  }

  private async upload(params: PutObjectCommandInput, stop: AbortSignal): Promise<void> {
    if (stop.aborted) throw stop.reason;
    const upload = new Upload({
      client: this.client,
      params,
      // A failed multipart upload is aborted so no orphaned parts are billed.
      leavePartsOnError: false,
    });
    const onAbort = () => void upload.abort().catch(() => undefined);
    stop.addEventListener('abort', onAbort, { once: true });
    try {
      await upload.done();
    } finally {
      stop.removeEventListener('abort', onAbort);
    }
  }

  async close(): Promise<void> {
    this.own?.destroy();
  }
}
