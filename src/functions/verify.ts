/**
 * Verifying a Standard Webhooks request (https://www.standardwebhooks.com,
 * "Verifying webhook authenticity"): the signed content is
 * `<webhook-id>.<webhook-timestamp>.<body>`, the timestamp must be within the
 * tolerance of now (replay window), and any one of the space-separated
 * signatures matching any one configured key is enough, so a sender can sign
 * with an old and a new secret while receivers rotate. Leaf module but for the
 * signing primitives.
 */
import { createPublicKey, timingSafeEqual, verify as edVerify } from 'node:crypto';
import { signPayload } from '../delivery/signing.js';

export type VerifyResult = { ok: true; id: string } | { ok: false; why: string };

// SPKI DER prefix of an Ed25519 public key (RFC 8410 §4).
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function verifyWebhook(
  headers: Readonly<Record<string, string | undefined>>,
  body: Buffer,
  keys: { hmac: readonly Buffer[]; ed25519: readonly string[] },
  toleranceSeconds: number,
  nowMs = Date.now(),
): VerifyResult {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const sig = headers['webhook-signature'];
  if (!id || !ts || !sig) return { ok: false, why: 'missing webhook-id, webhook-timestamp or webhook-signature' };
  if (!/^\d{1,12}$/.test(ts)) return { ok: false, why: 'webhook-timestamp is not a number of seconds' };
  const skew = Math.abs(nowMs / 1000 - Number(ts));
  if (skew > toleranceSeconds) return { ok: false, why: `webhook-timestamp is ${Math.round(skew)} s from now (tolerance ${toleranceSeconds} s)` };
  const signed = Buffer.concat([Buffer.from(`${id}.${ts}.`), body]);
  for (const entry of sig.split(' ')) {
    const comma = entry.indexOf(',');
    if (comma < 0) continue;
    const version = entry.slice(0, comma);
    const value = Buffer.from(entry.slice(comma + 1), 'base64');
    if (version === 'v1') {
      for (const key of keys.hmac) {
        const expected = Buffer.from(signPayload(key, id, Number(ts), body).slice(3), 'base64');
        if (expected.length === value.length && timingSafeEqual(expected, value)) return { ok: true, id };
      }
    } else if (version === 'v1a') {
      for (const pk of keys.ed25519) {
        const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, Buffer.from(pk.slice(5), 'base64')]), format: 'der', type: 'spki' });
        if (value.length === 64 && edVerify(null, signed, key, value)) return { ok: true, id };
      }
    }
  }
  return { ok: false, why: 'no signature matches a configured key' };
}
