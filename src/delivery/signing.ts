/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com, "Signature
 * scheme"). The signed content is `<webhook-id>.<webhook-timestamp>.<body>`.
 *
 * - `v1`: HMAC-SHA256 with a shared secret, `whsec_` + base64 of the key.
 * - `v1a`: ed25519 with a private key, `whsk_` + base64 of the 32-byte seed
 *   (or of the 64-byte seed‖public-key form libsodium prints); receivers
 *   verify with the `whpk_` public key and hold no secret.
 *
 * `webhook-signature` carries one or more space-separated signatures, so a
 * secret can be rotated without downtime: sign with old and new until every
 * receiver knows the new one. Leaf module.
 */
import { createHmac, createPrivateKey, createPublicKey, sign, type KeyObject } from 'node:crypto';

export function secretKey(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret, 'utf8');
}

export function signPayload(key: Buffer, id: string, timestampSeconds: number, body: Buffer): string {
  const mac = createHmac('sha256', key);
  mac.update(`${id}.${timestampSeconds}.`);
  mac.update(body);
  return `v1,${mac.digest('base64')}`;
}

// PKCS#8 DER prefix of an Ed25519 private key (RFC 8410 §7), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** Parses a `whsk_` key; returns a problem text instead of throwing, for config validation. */
export function parseSigningKey(text: string): KeyObject | string {
  if (!text.startsWith('whsk_')) return 'an ed25519 signing key starts with "whsk_" (run "postgate webhook-keys")';
  const raw = Buffer.from(text.slice(5), 'base64');
  if (raw.length !== 32 && raw.length !== 64) return `"whsk_" must hold 32 or 64 bytes of base64, got ${raw.length}`;
  return createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, raw.subarray(0, 32)]), format: 'der', type: 'pkcs8' });
}

/** The `whpk_` public key receivers verify `v1a` signatures with. */
export function publicKeyText(key: KeyObject): string {
  const der = createPublicKey(key).export({ format: 'der', type: 'spki' });
  // SPKI of Ed25519 is a 12-byte prefix followed by the 32-byte key (RFC 8410 §4).
  return `whpk_${der.subarray(der.length - 32).toString('base64')}`;
}

export function signPayloadEd25519(key: KeyObject, id: string, timestampSeconds: number, body: Buffer): string {
  const data = Buffer.concat([Buffer.from(`${id}.${timestampSeconds}.`), body]);
  return `v1a,${sign(null, data, key).toString('base64')}`;
}

/** Every configured key signs; the header value lists all signatures. */
export function signatureHeader(
  keys: { hmac: readonly Buffer[]; ed25519: readonly KeyObject[] },
  id: string,
  timestampSeconds: number,
  body: Buffer,
): string | undefined {
  const sigs = [
    ...keys.hmac.map((k) => signPayload(k, id, timestampSeconds, body)),
    ...keys.ed25519.map((k) => signPayloadEd25519(k, id, timestampSeconds, body)),
  ];
  return sigs.length ? sigs.join(' ') : undefined;
}
