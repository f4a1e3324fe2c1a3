/**
 * Certificates kept outside the task: one PEM bundle (the certificate, its
 * chain, and the unencrypted private key, in any order) in an S3 object or
 * an SSM parameter. An SSM parameter named
 * `/aws/reference/secretsmanager/<secret>` is a Secrets Manager secret read
 * through Parameter Store, so one client covers both services.
 *
 * The bundle is one object on purpose: certificate and key change in one
 * write, so a reader never sees a new certificate with the old key (which
 * the file-based reload has to wait out, certificates.ts).
 *
 * `read` returns the bundle and a version that changes when it does (the S3
 * ETag, the parameter's version); given the version it last saw, it answers
 * `unchanged` without transferring the bundle where the service allows it
 * (S3 If-None-Match, RFC 9110 §13.1.2). docs/deploy.md says how to obtain,
 * renew and store a certificate this way.
 */
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { createHash } from 'node:crypto';

import { GatewayError } from '../core/errors.js';

export type CertificateSource =
  | { type: 's3'; bucket: string; key: string; region?: string | undefined; endpoint?: string | undefined; forcePathStyle?: boolean | undefined }
  | { type: 'ssm'; parameter: string; region?: string | undefined; endpoint?: string | undefined };

export type SourceRead = { unchanged: true } | { unchanged: false; pem: Buffer; version: string };

/** Reads one source; `close` destroys its client (its sockets). */
export interface SourceReader {
  read(previousVersion?: string): Promise<SourceRead>;
  /** For logs: where the bundle lives, never its content. */
  readonly where: string;
  close(): void;
}

export function describeSource(s: CertificateSource): string {
  return s.type === 's3' ? `s3://${s.bucket}/${s.key}` : `ssm:${s.parameter}`;
}

export function sourceReader(source: CertificateSource): SourceReader {
  const where = describeSource(source);
  const at = { ...(source.region ? { region: source.region } : {}), ...(source.endpoint ? { endpoint: source.endpoint } : {}) };
  if (source.type === 's3') {
    const client = new S3Client({ ...at, ...(source.forcePathStyle ? { forcePathStyle: true } : {}) });
    return {
      where,
      close: () => client.destroy(),
      async read(previous) {
        try {
          const out = await client.send(new GetObjectCommand({ Bucket: source.bucket, Key: source.key, ...(previous ? { IfNoneMatch: previous } : {}) }));
          const pem = Buffer.from(await out.Body!.transformToByteArray());
          return { unchanged: false, pem, version: out.ETag ?? sha256(pem) };
        } catch (err) {
          // 304 Not Modified: the object still has the ETag we loaded.
          if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 304) return { unchanged: true };
          throw sourceError(where, err);
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
        const out = await client.send(new GetParameterCommand({ Name: source.parameter, WithDecryption: true }));
        value = out.Parameter?.Value;
        // A Secrets Manager secret read through Parameter Store reports no
        // useful version number here: its content decides.
        version = `${out.Parameter?.Version ?? ''}:${sha256(Buffer.from(value ?? ''))}`;
      } catch (err) {
        throw sourceError(where, err);
      }
      if (!value) throw sourceError(where, new Error('the parameter is empty'));
      if (version === previous) return { unchanged: true };
      return { unchanged: false, pem: Buffer.from(value, 'utf8'), version };
    },
  };
}

/** The CERTIFICATE blocks (leaf first, as stored) and the one private key block of a bundle. */
export function splitBundle(pem: Buffer, where: string): { cert: Buffer; key: Buffer } {
  const blocks = pem.toString('utf8').match(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]+?-----END \1-----/g) ?? [];
  const certs = blocks.filter((b) => b.startsWith('-----BEGIN CERTIFICATE-----'));
  const keys = blocks.filter((b) => /^-----BEGIN (RSA |EC |ENCRYPTED )?PRIVATE KEY-----/.test(b));
  if (certs.length === 0) throw sourceError(where, new Error('no CERTIFICATE block in the bundle'));
  if (keys.length !== 1) throw sourceError(where, new Error(`expected one PRIVATE KEY block in the bundle, found ${keys.length}`));
  return { cert: Buffer.from(`${certs.join('\n')}\n`), key: Buffer.from(`${keys[0]!}\n`) };
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The SDK's message names the service's error (NoSuchKey, ParameterNotFound, AccessDenied …), never the content. */
function sourceError(where: string, cause: unknown): GatewayError {
  const why = cause instanceof Error ? `${cause.name !== 'Error' ? `${cause.name}: ` : ''}${cause.message}` : String(cause);
  return new GatewayError({ code: 'PG_TLS_CERT', message: `cannot read the TLS certificate bundle ${where}: ${why}`, transient: false, cause });
}
