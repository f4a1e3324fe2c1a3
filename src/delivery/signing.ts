/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com, "Signature
 * scheme"): `webhook-signature: v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>`,
 * where the secret is the base64 text after the `whsec_` prefix. Leaf module.
 */
import { createHmac } from 'node:crypto';

export function secretKey(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret, 'utf8');
}

export function signPayload(key: Buffer, id: string, timestampSeconds: number, body: Buffer): string {
  const mac = createHmac('sha256', key);
  mac.update(`${id}.${timestampSeconds}.`);
  mac.update(body);
  return `v1,${mac.digest('base64')}`;
}
