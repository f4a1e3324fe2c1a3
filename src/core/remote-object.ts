/**
 * One object kept outside the instance and read again when it changes: an
 * S3 object or an SSM parameter (an SSM parameter named
 * `/aws/reference/secretsmanager/<secret>` is a Secrets Manager secret read
 * through Parameter Store, so one client covers both services). The TLS
 * certificate bundles (tls/sources.ts) and a configuration read from S3 or
 * SSM (config/source.ts) are read through it.
 *
 * `read` returns the content and a version that changes when it does (the S3
 * ETag, the parameter's version and content); given the version it last
 * saw, it answers `unchanged`, without transferring the object where the
 * service allows it (S3 If-None-Match, RFC 9110 §13.1.2).
 */
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { createHash } from 'node:crypto';

import { describeRemote, type RemoteObject } from './remote-location.js';

export { describeRemote, parseRemote, type RemoteObject } from './remote-location.js';

export type RemoteRead = { unchanged: true } | { unchanged: false; content: Buffer; version: string };

export interface RemoteReader {
  read(previousVersion?: string): Promise<RemoteRead>;
  /** For logs and messages: where the object lives, never its content. */
  readonly where: string;
  /** Destroys the client (its sockets). */
  close(): void;
}

/** The failure of a read, with the service's own error name (NoSuchKey, ParameterNotFound, AccessDenied …). */
export class RemoteReadError extends Error {
  constructor(where: string, cause: unknown) {
    const why = cause instanceof Error ? `${cause.name !== 'Error' ? `${cause.name}: ` : ''}${cause.message}` : String(cause);
    super(`cannot read ${where}: ${why}`, { cause });
    this.name = 'RemoteReadError';
  }
}

export function remoteReader(o: RemoteObject): RemoteReader {
  const where = describeRemote(o);
  const at = { ...(o.region ? { region: o.region } : {}), ...(o.endpoint ? { endpoint: o.endpoint } : {}) };
  if (o.type === 's3') {
    const client = new S3Client({ ...at, ...(o.forcePathStyle ? { forcePathStyle: true } : {}) });
    return {
      where,
      close: () => client.destroy(),
      async read(previous) {
        try {
          const out = await client.send(new GetObjectCommand({ Bucket: o.bucket, Key: o.key, ...(previous ? { IfNoneMatch: previous } : {}) }));
          const content = Buffer.from(await out.Body!.transformToByteArray());
          return { unchanged: false, content, version: out.ETag ?? sha256(content) };
        } catch (err) {
          // 304 Not Modified: the object still has the ETag we hold.
          if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 304) return { unchanged: true };
          throw new RemoteReadError(where, err);
        }
      },
    };
  }
  const client = new SSMClient(at);
  return {
    where,
    close: () => client.destroy(),
    async read(previous) {
      let value: string | undefined;
      let version: string;
      try {
        const out = await client.send(new GetParameterCommand({ Name: o.parameter, WithDecryption: true }));
        value = out.Parameter?.Value;
        // A Secrets Manager secret read through Parameter Store reports no
        // useful version number here: its content decides.
        version = `${out.Parameter?.Version ?? ''}:${sha256(Buffer.from(value ?? ''))}`;
      } catch (err) {
        throw new RemoteReadError(where, err);
      }
      if (!value) throw new RemoteReadError(where, new Error('the parameter is empty'));
      if (version === previous) return { unchanged: true };
      return { unchanged: false, content: Buffer.from(value, 'utf8'), version };
    },
  };
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
