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
import { GatewayError } from '../core/errors.js';
import { describeRemote, remoteReader, type RemoteObject } from '../core/remote-object.js';

export type CertificateSource = RemoteObject;

export type SourceRead = { unchanged: true } | { unchanged: false; pem: Buffer; version: string };

/** Reads one source; `close` destroys its client (its sockets). */
export interface SourceReader {
  read(previousVersion?: string): Promise<SourceRead>;
  /** For logs: where the bundle lives, never its content. */
  readonly where: string;
  close(): void;
}

export const describeSource = describeRemote;

export function sourceReader(source: CertificateSource): SourceReader {
  const r = remoteReader(source);
  return {
    where: r.where,
    close: () => r.close(),
    async read(previous) {
      try {
        const got = await r.read(previous);
        return got.unchanged ? got : { unchanged: false, pem: got.content, version: got.version };
      } catch (err) {
        throw sourceError(r.where, err);
      }
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

/** The SDK's message names the service's error (NoSuchKey, ParameterNotFound, AccessDenied …), never the content. */
function sourceError(where: string, cause: unknown): GatewayError {
  const why = cause instanceof Error ? cause.message.replace(/^cannot read \S+: /, '') : String(cause);
  return new GatewayError({ code: 'PG_TLS_CERT', message: `cannot read the TLS certificate bundle ${where}: ${why}`, transient: false, cause });
}
