/**
 * The ingest function's Standard Webhooks verification (src/functions/verify.ts):
 * secret rotation, ed25519 (v1a), the replay window, malformed headers, and a
 * cross-check with the standardwebhooks package (an independent implementation)
 * signing what we verify.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { verifyWebhook } from '../src/functions/verify.js';
import { parseSigningKey, publicKeyText, secretKey, signPayload, signPayloadEd25519 } from '../src/delivery/signing.js';

const OLD = `whsec_${randomBytes(24).toString('base64')}`;
const NEW = `whsec_${randomBytes(24).toString('base64')}`;
const body = Buffer.from(JSON.stringify({ type: 'email.received', data: { id: 'x' } }));
const now = 1_790_000_000_000;
const ts = Math.floor(now / 1000);

const headers = (sig: string, id = 'msg_1', t: number | string = ts) => ({ 'webhook-id': id, 'webhook-timestamp': String(t), 'webhook-signature': sig });

describe('Standard Webhooks verification (ingest)', () => {
  test('rotation: a signature by either configured secret verifies; a third secret does not', () => {
    const keys = { hmac: [secretKey(OLD), secretKey(NEW)], ed25519: [] };
    for (const s of [OLD, NEW]) {
      const r = verifyWebhook(headers(signPayload(secretKey(s), 'msg_1', ts, body)), body, keys, 300, now);
      assert.deepEqual(r, { ok: true, id: 'msg_1' });
    }
    const other = `whsec_${randomBytes(24).toString('base64')}`;
    const r = verifyWebhook(headers(signPayload(secretKey(other), 'msg_1', ts, body)), body, keys, 300, now);
    assert.equal(r.ok, false);
  });

  test('several signatures in one header (the sender rotating): one match is enough, in any position', () => {
    const keys = { hmac: [secretKey(NEW)], ed25519: [] };
    const bad = signPayload(secretKey(OLD), 'msg_1', ts, body);
    const good = signPayload(secretKey(NEW), 'msg_1', ts, body);
    assert.equal(verifyWebhook(headers(`${bad} ${good}`), body, keys, 300, now).ok, true);
    assert.equal(verifyWebhook(headers(`${good} ${bad}`), body, keys, 300, now).ok, true);
    assert.equal(verifyWebhook(headers(`${bad} ${bad}`), body, keys, 300, now).ok, false);
  });

  test('ed25519 (v1a) with the whpk_ public key', () => {
    const seed = generateKeyPairSync('ed25519').privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
    const priv = parseSigningKey(`whsk_${Buffer.from(seed).toString('base64')}`);
    assert.ok(typeof priv !== 'string');
    const pub = publicKeyText(priv);
    const sig = signPayloadEd25519(priv, 'msg_1', ts, body);
    assert.equal(verifyWebhook(headers(sig), body, { hmac: [], ed25519: [pub] }, 300, now).ok, true);
    // The same signature over another body fails.
    assert.equal(verifyWebhook(headers(sig), Buffer.from('{}'), { hmac: [], ed25519: [pub] }, 300, now).ok, false);
  });

  test('the id, the timestamp and the body are all signed', () => {
    const keys = { hmac: [secretKey(NEW)], ed25519: [] };
    const sig = signPayload(secretKey(NEW), 'msg_1', ts, body);
    assert.equal(verifyWebhook(headers(sig, 'msg_2'), body, keys, 300, now).ok, false);
    assert.equal(verifyWebhook(headers(sig, 'msg_1', ts + 1), body, keys, 300, now).ok, false);
    assert.equal(verifyWebhook(headers(sig), Buffer.concat([body, Buffer.from(' ')]), keys, 300, now).ok, false);
  });

  test('replay window: a correctly signed request outside the tolerance is refused, with the reason', () => {
    const keys = { hmac: [secretKey(NEW)], ed25519: [] };
    const old = ts - 301;
    const r = verifyWebhook(headers(signPayload(secretKey(NEW), 'msg_1', old, body), 'msg_1', old), body, keys, 300, now);
    assert.equal(r.ok, false);
    assert.match((r as { why: string }).why, /tolerance 300 s/);
    const edge = ts - 300;
    assert.equal(verifyWebhook(headers(signPayload(secretKey(NEW), 'msg_1', edge, body), 'msg_1', edge), body, keys, 300, now).ok, true);
  });

  test('malformed headers are refused without throwing', () => {
    const keys = { hmac: [secretKey(NEW)], ed25519: [] };
    for (const h of [
      {},
      { 'webhook-id': 'msg_1', 'webhook-timestamp': String(ts) },
      headers('v1,', 'msg_1', 'soon'),
      headers('garbage'),
      headers('v1,!!!not-base64!!!'),
      headers('v2,AAAA'),
      headers(''),
    ]) {
      const r = verifyWebhook(h, body, keys, 300, now);
      assert.equal(r.ok, false, JSON.stringify(h));
    }
  });

  test('what the standardwebhooks package signs, we verify', () => {
    const wh = new Webhook(NEW);
    const t = new Date(now);
    const sig = wh.sign('msg_lib', t, body.toString('utf8'));
    assert.equal(verifyWebhook(headers(sig, 'msg_lib'), body, { hmac: [secretKey(NEW)], ed25519: [] }, 300, now).ok, true);
  });
});
