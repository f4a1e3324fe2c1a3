/**
 * Security properties not covered elsewhere (docs/security.md maps every
 * item to its test): the SSRF guard, and secrets kept out of the logs.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway } from './helpers/gateway.js';
import { startReceiver } from './helpers/receiver.js';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { isNonPublicAddress } from '../src/net/private.js';

async function send(port: number, to: string): Promise<number> {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    await c.cmd('EHLO sec.example');
    const { data, rcpt } = await sendMail(c, 'a@b.example', [to], simpleMessage('sec'));
    return data?.code ?? rcpt[0]!.code;
  } finally {
    c.close();
  }
}

describe('SSRF guard (delivery.denyPrivateAddresses)', () => {
  test('non-public ranges (RFC 6890) are recognised, IPv4-mapped forms included', () => {
    for (const ip of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '::1', '::ffff:192.168.1.1', 'fd00::1', 'fe80::1'])
      assert.equal(isNonPublicAddress(ip), true, ip);
    for (const ip of ['8.8.8.8', '1.1.1.1', '2606:4700::1111', '::ffff:8.8.8.8']) assert.equal(isNonPublicAddress(ip), false, ip);
  });

  test('"always": a webhook on a loopback address (literal or by name) is refused and the message deferred, never posted', async () => {
    const hook = await startReceiver(() => ({ status: 204 }));
    const port = new URL(hook.url).port;
    for (const url of [hook.url, `http://localhost:${port}/`]) {
      const tg = await startGateway({ delivery: { denyPrivateAddresses: 'always', deadline: '3s' }, routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url }] }] });
      try {
        assert.equal(await send(tg.port, 'x@example.test'), 451, url);
        assert.equal(hook.got.length, 0, `${url}: nothing posted`);
        assert.ok(tg.logText().includes('ESSRFBLOCKED'), `${url}: the refusal is logged`);
      } finally {
        await tg.close();
      }
    }
    await hook.close();
  });

  test('"templated": configured URLs work, a URL built from the recipient is guarded', async () => {
    const hook = await startReceiver(() => ({ status: 204 }));
    const port = new URL(hook.url).port;
    const tg = await startGateway({
      delivery: { denyPrivateAddresses: 'templated', deadline: '3s' },
      routes: [
        { recipients: ['fixed@example.test'], targets: [{ type: 'webhook', url: hook.url }] },
        { recipients: ['*@t.example.test'], targets: [{ type: 'webhook', url: `http://127.0.0.1:${port}/in/{local}` }] },
      ],
    });
    try {
      assert.equal(await send(tg.port, 'fixed@example.test'), 250);
      assert.equal(hook.got.length, 1);
      assert.equal(await send(tg.port, 'someone@t.example.test'), 451);
      assert.equal(hook.got.length, 1, 'the templated target was not posted to');
    } finally {
      await tg.close();
      await hook.close();
    }
  });
});

describe('secrets are never logged', () => {
  test('webhook secrets, blob signing key and the webhook URL\'s password stay out of every log line, at debug level, on success and on failure', async () => {
    const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    const BLOB_KEY = 'blob-key-that-must-not-leak';
    let n = 0;
    const hook = await startReceiver(() => (++n === 1 ? { status: 503 } : { status: 204 }));
    const u = new URL(hook.url);
    u.username = 'hookuser';
    u.password = 'url-password-not-to-leak';
    const tg = await startGateway({
      logging: { level: 'debug' },
      blobs: { signingKey: BLOB_KEY },
      delivery: { retry: { initialDelay: 10, maxDelay: 20 } },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: u.toString(), secret: SECRET }] }],
    });
    try {
      assert.equal(await send(tg.port, 'x@example.test'), 250);
      assert.ok(n >= 2, 'a failed attempt and a retry were logged');
      const text = tg.logText();
      assert.ok(text.length > 0);
      for (const s of [SECRET, SECRET.slice(6), BLOB_KEY, 'url-password-not-to-leak']) assert.ok(!text.includes(s), `"${s.slice(0, 12)}…" appears in the logs`);
      assert.ok(hook.got.some((r) => r.headers.authorization?.startsWith('Basic ')), 'the URL credentials were used');
    } finally {
      await tg.close();
      await hook.close();
    }
  });
});
