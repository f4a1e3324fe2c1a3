/**
 * Real deliveries verified by the libraries receivers use: a message sent
 * over SMTP, POSTed by the gateway to a node:http receiver, and the captured
 * raw body and headers checked with `standardwebhooks` and `svix`, for both
 * kinds of secret. A `whsec_` secret verifies with the default constructor; a
 * plain secret (`hunter2`, signed with its UTF-8 bytes) verifies only with
 * `{ format: 'raw' }`, and fails without it: the trap docs/payload.md warns
 * about, and the warning the gateway logs at start.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Webhook as StandardWebhook } from 'standardwebhooks';
import { Webhook as SvixWebhook } from 'svix';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver, type Received } from './helpers/receiver.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';

const WHSEC = `whsec_${randomBytes(32).toString('base64')}`;
const PLAIN = 'hunter2';

/** The request's headers as the libraries take them (node gives string | string[]). */
function headersOf(r: Received): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.headers)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

/** svix's own header names, as a receiver following svix's examples passes them. */
function svixHeadersOf(r: Received): Record<string, string> {
  const h = headersOf(r);
  return { 'svix-id': h['webhook-id']!, 'svix-timestamp': h['webhook-timestamp']!, 'svix-signature': h['webhook-signature']! };
}

describe('webhook signatures verify with standardwebhooks and svix (real deliveries)', () => {
  let tg: TestGateway;
  let whsecHook: Receiver;
  let plainHook: Receiver;
  let whsecReq: Received;
  let plainReq: Received;

  before(async () => {
    whsecHook = await startReceiver(() => ({ status: 204 }));
    plainHook = await startReceiver(() => ({ status: 204 }));
    tg = await startGateway({
      routes: [
        { recipients: ['*@whsec.test'], targets: [{ type: 'webhook', url: whsecHook.url, secret: WHSEC }] },
        { recipients: ['*@plain.test'], targets: [{ type: 'webhook', url: plainHook.url, secret: PLAIN }] },
      ],
    });
    const a = await sendOne(tg.port, 'someone@whsec.test', simpleMessage('signed with whsec_'));
    assert.equal(a.code, 250, a.raw);
    const b = await sendOne(tg.port, 'someone@plain.test', simpleMessage('signed with a plain secret'));
    assert.equal(b.code, 250, b.raw);
    assert.equal(whsecHook.got.length, 1);
    assert.equal(plainHook.got.length, 1);
    whsecReq = whsecHook.got[0]!;
    plainReq = plainHook.got[0]!;
    assert.match(String(whsecReq.headers['webhook-signature']), /^v1,/);
    assert.match(String(plainReq.headers['webhook-signature']), /^v1,/);
  });

  after(async () => {
    await tg.close();
    await whsecHook.close();
    await plainHook.close();
  });

  test('whsec_ secret: standardwebhooks verifies with new Webhook(secret)', () => {
    const event = new StandardWebhook(WHSEC).verify(whsecReq.body.toString('utf8'), headersOf(whsecReq)) as { type: string; data: { subject: string } };
    assert.equal(event.type, 'email.received');
    assert.equal(event.data.subject, 'signed with whsec_');
  });

  test('whsec_ secret: svix verifies with new Webhook(secret), with webhook-* and with svix-* headers', () => {
    const wh = new SvixWebhook(WHSEC);
    const event = wh.verify(whsecReq.body.toString('utf8'), headersOf(whsecReq)) as { type: string };
    assert.equal(event.type, 'email.received');
    assert.equal((wh.verify(whsecReq.body.toString('utf8'), svixHeadersOf(whsecReq)) as { type: string }).type, 'email.received');
  });

  test("plain secret: both libraries verify with { format: 'raw' }", () => {
    const body = plainReq.body.toString('utf8');
    const std = new StandardWebhook(PLAIN, { format: 'raw' }).verify(body, headersOf(plainReq)) as { data: { subject: string } };
    assert.equal(std.data.subject, 'signed with a plain secret');
    const svix = new SvixWebhook(PLAIN, { format: 'raw' });
    assert.equal((svix.verify(body, headersOf(plainReq)) as { data: { subject: string } }).data.subject, 'signed with a plain secret');
    assert.equal((svix.verify(body, svixHeadersOf(plainReq)) as { data: { subject: string } }).data.subject, 'signed with a plain secret');
  });

  test("plain secret without { format: 'raw' }: both libraries reject the real request (the documented trap)", () => {
    const body = plainReq.body.toString('utf8');
    // The constructor may accept the text as base64 (decoding it to other bytes) or throw; either way nothing verifies.
    assert.throws(() => new StandardWebhook(PLAIN).verify(body, headersOf(plainReq)));
    assert.throws(() => new SvixWebhook(PLAIN).verify(body, headersOf(plainReq)));
    assert.throws(() => new SvixWebhook(PLAIN).verify(body, svixHeadersOf(plainReq)));
  });

  test('a tampered body fails with either secret (the checks above can fail)', () => {
    const tampered = whsecReq.body.toString('utf8').replace('signed with whsec_', 'signed with whsec!');
    assert.notEqual(tampered, whsecReq.body.toString('utf8'));
    assert.throws(() => new StandardWebhook(WHSEC).verify(tampered, headersOf(whsecReq)));
    assert.throws(() => new SvixWebhook(PLAIN, { format: 'raw' }).verify(plainReq.body.toString('utf8').replace('plain', 'PLAIN'), headersOf(plainReq)));
  });

  test('the gateway logged one warning at start, for the plain secret only, without its value', () => {
    const warnings = tg.logs.filter((l) => l.level === 'warn' && typeof l.path === 'string');
    assert.deepEqual(
      warnings.map((w) => w.path),
      ['routes[1].targets[0].secret'],
      JSON.stringify(warnings),
    );
    assert.match(String(warnings[0]!.msg), /format: 'raw'/);
    assert.ok(!tg.logText().includes(PLAIN), 'the plain secret appears in the logs');
    assert.ok(!tg.logText().includes(WHSEC.slice(6)), 'the whsec_ secret appears in the logs');
  });
});
