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
import { remoteReader, type RemoteObject } from '../core/remote-object.js';
import { sourceError } from './bundle.js';

export type CertificateSource = RemoteObject;

export type SourceRead = { unchanged: true } | { unchanged: false; pem: Buffer; version: string };

/** Reads one source; `close` destroys its client (its sockets). */
export interface SourceReader {
  read(previousVersion?: string): Promise<SourceRead>;
  /** For logs: where the bundle lives, never its content. */
  readonly where: string;
  close(): void;
}

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
