/**
 * A certificate bundle as stored in S3 or SSM (sources.ts): the certificate,
 * its chain and the private key in one PEM text. Kept apart from the reader
 * so that loading certificate files never loads the AWS SDK.
 */
import { GatewayError } from '../core/errors.js';
import { describeRemote } from '../core/remote-location.js';

export const describeSource = describeRemote;

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
export function sourceError(where: string, cause: unknown): GatewayError {
  const why = cause instanceof Error ? cause.message.replace(/^cannot read \S+: /, '') : String(cause);
  return new GatewayError({ code: 'PG_TLS_CERT', message: `cannot read the TLS certificate bundle ${where}: ${why}`, transient: false, cause });
}
