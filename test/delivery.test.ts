/**
 * The outcome table of docs/delivery.md, row by row, against real webhook
 * receivers on node:http: what each answer of a receiver makes of the SMTP
 * reply after DATA, which answers are retried within the deadline, and the
 * claim-check pointer, signatures, concurrency cap and mutual TLS.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Webhook } from 'standardwebhooks';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { RawSmtp, sendMail, simpleMessage, type Reply } from './helpers/smtp-client.js';
import { startReceiver, type Answer, type Receiver } from './helpers/receiver.js';
import { fixturePath } from './helpers/fixtures.js';
import { webhookOutcome, parseRetryAfter, WebhookTarget, createPoolCache } from '../src/delivery/webhook.js';
import { loadConfig } from '../src/config/load.js';
import type { DeliveryMessage } from '../src/delivery/types.js';
import type { WebhookTargetConfig } from '../src/config/schema.js';
import { interpretReceiverAnswer, sanitizeReplyText } from '../src/delivery/reply.js';
import { retryPause } from '../src/delivery/index.js';
import { GatewayError } from '../src/core/errors.js';
import { parseSigningKey, publicKeyText } from '../src/delivery/signing.js';
import { deliveryId } from '../src/message/ids.js';

const SECRET = `whsec_${Buffer.from('delivery-test-secret-0123456789ab').toString('base64')}`;
const FAST = { deadline: '1500ms', retry: { initialDelay: '20ms', maxDelay: '100ms' } };

interface Setup {
  tg: TestGateway;
  hook: Receiver;
  send(subject?: string, rcpt?: string): Promise<{ rcpt: Reply[]; data: Reply | null }>;
  close(): Promise<void>;
}

async function setup(
  handler: (n: number) => Answer | Promise<Answer>,
  target: Record<string, unknown> = {},
  doc: Record<string, unknown> = {},
): Promise<Setup> {
  const hook = await startReceiver((_r, n) => handler(n));
  const tg = await startGateway({
    delivery: FAST,
    routes: [{ recipients: ['*@hooks.test'], targets: [{ type: 'webhook', url: hook.url, secret: SECRET, timeout: '1s', ...target }] }],
    ...doc,
  }).catch(async (err: unknown) => {
    // a receiver left listening would keep the test process alive
    await hook.close();
    throw err;
  });
  let n = 0;
  return {
    tg,
    hook,
    async send(subject = `message ${++n} ${Math.random()}`, rcpt = 'in@hooks.test') {
      const c = await RawSmtp.connect(tg.port);
      try {
        await c.read();
        await c.cmd('EHLO client.example');
        return await sendMail(c, 'sender@example.org', [rcpt], simpleMessage(subject));
      } finally {
        c.close();
      }
    },
    async close() {
      await tg.close();
      await hook.close();
    },
  };
}

function assertReply(r: Reply | null, code: number, enhanced: RegExp | string) {
  assert.ok(r, 'a reply after DATA');
  assert.equal(r.code, code, `${r.code} ${r.text}`);
  if (typeof enhanced === 'string') assert.ok(r.text.startsWith(`${enhanced} `), r.text);
  else assert.match(r.text, enhanced);
}

test('delivery ids stay what earlier versions stored (skip stores and receivers deduplicate on them across upgrades)', () => {
  // Values of the first implementation (docs/architecture.md §2.5): case of the addresses ignored, recipients sorted.
  assert.equal(deliveryId('Alice@Example.NET', ['Bob@bench.test'], 'a'.repeat(64), 'hook'), 'msg_b889f5f94e4fbc8d73f935881afc62b8');
  assert.equal(
    deliveryId('', ['zoë@例え.jp', 'Bob@bench.test', 'amy@x.test'], '0123456789abcdef'.repeat(4), 'webhook:https://app.example/in#1a2b3c4d5e6f'),
    'msg_58f2ecfbb8b63062e666e12881685da7',
  );
  assert.equal(deliveryId('a@b.c', ['y@z', 'X@Z'], 'f'.repeat(64), 't'), deliveryId('A@B.C', ['x@z', 'Y@z'], 'f'.repeat(64), 't'));
});

describe('outcome table: webhook answers → SMTP reply (docs/delivery.md)', () => {
  test('2xx → 250, one request; a JSON {"action":"accept"} body is an acknowledgement too', async () => {
    const s = await setup(() => ({ status: 200, json: { action: 'accept' } }));
    try {
      const { data } = await s.send();
      assertReply(data, 250, /^2\.0\.0 Ok: queued as \S+$/);
      assert.equal(s.hook.got.length, 1);
    } finally {
      await s.close();
    }
  });

  test('JSON reject → the receiver\'s 5xx with its text; not retried; the class is forced to match', async () => {
    const s = await setup(() => ({ status: 200, json: { action: 'reject', code: 553, enhanced: '4.1.8', message: 'Sender domain not accepted' } }));
    try {
      const { data } = await s.send();
      assertReply(data, 553, '5.1.8');
      assert.match(data!.text, /Sender domain not accepted$/);
      assert.equal(s.hook.got.length, 1, 'a refusal is not retried');
      assert.ok(s.tg.logs.some((l) => l.code === 'PG_TARGET_REJECTED'));
    } finally {
      await s.close();
    }
  });

  test('JSON reject with out-of-range values: code 550, enhanced 5.7.1, one clean line (no reply injection)', async () => {
    const s = await setup(() => ({ status: 422, json: { action: 'reject', code: 250, enhanced: 'x', message: 'no\r\n250 2.0.0 Ok: queued as FAKE\u00e9' } }));
    try {
      const { data } = await s.send();
      assertReply(data, 550, '5.7.1');
      assert.equal(data!.lines.length, 1, 'a single reply line');
      assert.equal(data!.text, '5.7.1 no 250 2.0.0 Ok: queued as FAKE');
    } finally {
      await s.close();
    }
  });

  test('JSON tempfail → the receiver\'s 4xx, not retried within the deadline', async () => {
    const s = await setup(() => ({ status: 200, json: { action: 'tempfail', code: 452, enhanced: '4.2.2', message: 'Mailbox full' } }));
    try {
      const { data } = await s.send();
      assertReply(data, 452, '4.2.2');
      assert.match(data!.text, /Mailbox full$/);
      assert.equal(s.hook.got.length, 1);
    } finally {
      await s.close();
    }
  });

  test('a status listed in permanentOn → 550 5.7.1 with the body\'s message', async () => {
    const s = await setup(() => ({ status: 422, json: { message: 'Unknown mailbox' } }), { permanentOn: [422] });
    try {
      const { data } = await s.send();
      assertReply(data, 550, '5.7.1');
      assert.match(data!.text, /Unknown mailbox$/);
      assert.equal(s.hook.got.length, 1);
    } finally {
      await s.close();
    }
  });

  test('422 not listed in permanentOn → 451 4.3.5 (misconfiguration defers, never bounces), not retried', async () => {
    const s = await setup(() => ({ status: 422, json: { message: 'Unknown mailbox' } }));
    try {
      const { data } = await s.send();
      assertReply(data, 451, '4.3.5');
      assert.equal(s.hook.got.length, 1);
    } finally {
      await s.close();
    }
  });

  for (const status of [400, 401, 403, 404]) {
    test(`${status} → 451 4.3.5, one request`, async () => {
      const s = await setup(() => ({ status }));
      try {
        const { data } = await s.send();
        assertReply(data, 451, '4.3.5');
        assert.match(data!.text, /Temporary delivery failure, try again later$/);
        assert.equal(s.hook.got.length, 1);
      } finally {
        await s.close();
      }
    });
  }

  test('3xx → 451 4.3.5 and the redirect is not followed', async () => {
    const elsewhere = await startReceiver(() => ({ status: 204 }));
    const s = await setup(() => ({ status: 307, headers: { location: elsewhere.url } }));
    try {
      const { data } = await s.send();
      assertReply(data, 451, '4.3.5');
      assert.equal(s.hook.got.length, 1);
      assert.equal(elsewhere.got.length, 0, 'the Location was not requested');
    } finally {
      await s.close();
      await elsewhere.close();
    }
  });

  const retried: Array<[number, string]> = [
    [500, '4.4.0'],
    [502, '4.4.0'],
    [503, '4.4.5'],
    [429, '4.4.5'],
    [425, '4.4.5'],
    [408, '4.4.1'],
    [504, '4.4.1'],
  ];
  for (const [status, enhanced] of retried) {
    test(`${status} → retried within the deadline; 250 when a retry succeeds, else 451 ${enhanced}`, async () => {
      const recover = await setup((n) => (n <= 2 ? { status } : { status: 204 }));
      try {
        const { data } = await recover.send();
        assertReply(data, 250, '2.0.0');
        assert.equal(recover.hook.got.length, 3);
        assert.equal(new Set(recover.hook.got.map((g) => g.headers['webhook-id'])).size, 1, 'same webhook-id on every attempt');
      } finally {
        await recover.close();
      }
      const fail = await setup(() => ({ status }), {}, { delivery: { deadline: '400ms', retry: { initialDelay: '150ms', maxDelay: '150ms' } } });
      try {
        const { data } = await fail.send();
        assert.equal(data?.code, 451);
        // the budget ends either between attempts (this status's code) or during one (4.4.7)
        assert.ok(data!.text.startsWith(`${enhanced} `) || data!.text.startsWith('4.4.7 '), data!.text);
        assert.ok(fail.hook.got.length >= 1);
      } finally {
        await fail.close();
      }
    });
  }

  test('Retry-After within the budget is honoured: the next attempt waits at least that long', async () => {
    const s = await setup((n) => (n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 204 }), {}, { delivery: { deadline: '5s', retry: { initialDelay: '10ms', maxDelay: '20ms' } } });
    try {
      const { data } = await s.send();
      assertReply(data, 250, '2.0.0');
      assert.equal(s.hook.got.length, 2);
      const gap = s.hook.got[1]!.at - s.hook.got[0]!.at;
      assert.ok(gap >= 950, `second attempt after ${gap} ms`);
    } finally {
      await s.close();
    }
  });

  test('Retry-After beyond the budget defers at once (451 4.4.5), without waiting for the deadline', async () => {
    // A 5-minute deadline: waiting for it instead would show as minutes, far
    // beyond the bound below (and the test's own timeout), however busy the machine.
    const s = await setup(() => ({ status: 503, headers: { 'retry-after': '3600' } }), {}, { delivery: { deadline: '5m' } });
    try {
      const started = Date.now();
      const { data } = await s.send();
      assertReply(data, 451, '4.4.5');
      assert.equal(s.hook.got.length, 1);
      const waited = Date.now() - started;
      assert.ok(waited < 30_000, `answered after ${waited} ms, not at once`);
    } finally {
      await s.close();
    }
  });

  test('no answer within the target timeout → retried, then 451 4.4.1 or 4.4.7', async () => {
    const s = await setup(() => ({ fault: 'silence' }), { timeout: '200ms' }, { delivery: { deadline: '700ms', retry: { initialDelay: '10ms', maxDelay: '20ms' } } });
    try {
      const { data } = await s.send();
      assert.equal(data?.code, 451);
      assert.match(data!.text, /^4\.4\.[17] /);
      assert.ok(s.hook.got.length >= 2, `${s.hook.got.length} attempts`);
    } finally {
      await s.close();
    }
  });

  test('a reset connection → 451 4.4.2 after retries; a later attempt that succeeds → 250', async () => {
    const s = await setup(() => ({ fault: 'reset' }), {}, { delivery: { deadline: '500ms', retry: { initialDelay: '100ms', maxDelay: '100ms' } } });
    try {
      const { data } = await s.send();
      assert.equal(data?.code, 451);
      assert.match(data!.text, /^4\.4\.[27] /);
    } finally {
      await s.close();
    }
    const r = await setup((n) => (n === 1 ? { fault: 'reset' } : { status: 204 }));
    try {
      const { data } = await r.send();
      assertReply(data, 250, '2.0.0');
      assert.equal(r.hook.got.length, 2);
    } finally {
      await r.close();
    }
  });

  test('connection refused → 451 4.4.1', async () => {
    const gone = await startReceiver(() => ({ status: 204 }));
    const url = gone.url;
    await gone.close();
    const tg = await startGateway({ delivery: { deadline: '400ms', retry: { initialDelay: '100ms', maxDelay: '100ms' } }, routes: [{ recipients: ['*@hooks.test'], targets: [{ type: 'webhook', url }] }] });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      const { data } = await sendMail(c, 's@example.org', ['in@hooks.test'], simpleMessage('refused'));
      c.close();
      assert.equal(data?.code, 451);
      assert.match(data!.text, /^4\.4\.[17] /);
      assert.ok(tg.logs.some((l) => l.msg === 'delivery' && /ECONNREFUSED/.test(String(l.err))), 'the log names the cause');
    } finally {
      await tg.close();
    }
  });

  test('410 Gone → 451 4.3.5, the target is disabled: RCPT then gets 451 4.4.1 with no request, alert logged and measured', async () => {
    const s = await setup(() => ({ status: 410 }));
    try {
      const { data } = await s.send();
      assertReply(data, 451, '4.3.5');
      assert.equal(s.hook.got.length, 1);
      const again = await s.send();
      assert.equal(again.rcpt[0]!.code, 451);
      assert.match(again.rcpt[0]!.text, /^4\.4\.1 /);
      assert.equal(s.hook.got.length, 1, 'no request to a disabled target');
      assert.ok(s.tg.logs.some((l) => l.level === 'error' && l.code === 'PG_TARGET_DISABLED'));
      const metrics = await fetch(`http://127.0.0.1:${s.tg.opsPort}/metrics`).then((r) => r.text());
      assert.match(metrics, /^postgate_targets_disabled 1$/m);
    } finally {
      await s.close();
    }
  });

  test('the deadline cuts a slow receiver: 451 4.4.7', async () => {
    // The receiver answers 204 after a minute, the target's timeout is two:
    // only the 300 ms deadline can end the wait before the receiver answers.
    const s = await setup(() => ({ status: 204, delayMs: 60_000 }), { timeout: '2m' }, { delivery: { deadline: '300ms' } });
    try {
      const { data } = await s.send();
      assertReply(data, 451, '4.4.7');
      assert.equal(s.hook.got.length, 1);
      assert.equal(s.hook.got[0]!.answeredAt, undefined, 'the 451 came before the receiver answered');
    } finally {
      await s.close();
    }
  });
});

describe('claim-check pointers (413 and maxEventSize)', () => {
  test('413 → the pointer is sent at once; its link serves the full event, same webhook-id', async () => {
    const s = await setup((n) => (n === 1 ? { status: 413 } : { status: 204 }));
    try {
      const { data } = await s.send('big one');
      assertReply(data, 250, '2.0.0');
      assert.equal(s.hook.got.length, 2);
      const [full, ptr] = s.hook.got.map((g) => JSON.parse(g.body.toString('utf8')));
      assert.equal(full.type, 'email.received');
      assert.equal(ptr.type, 'email.received.pointer');
      assert.equal(ptr.data.id, full.data.id);
      assert.equal(ptr.data.subject, 'big one');
      assert.deepEqual(ptr.data.raw, { size: full.data.raw.size, sha256: full.data.raw.sha256 });
      assert.equal(s.hook.got[0]!.headers['webhook-id'], s.hook.got[1]!.headers['webhook-id']);
      const fetched = Buffer.from(await (await fetch(ptr.data.event.url)).arrayBuffer());
      assert.equal(fetched.length, ptr.data.event.size);
      assert.equal(createHash('sha256').update(fetched).digest('hex'), ptr.data.event.sha256);
      assert.deepEqual(fetched, s.hook.got[0]!.body, 'the link serves exactly the event that was refused');
      assert.ok(Date.parse(ptr.data.event.expiresAt) > Date.now());
      // the pointer is signed like any event
      new Webhook(SECRET).verify(s.hook.got[1]!.body.toString('utf8'), s.hook.got[1]!.headers as Record<string, string>);
    } finally {
      await s.close();
    }
  });

  test('413 to the pointer too → 552 5.3.4', async () => {
    const s = await setup(() => ({ status: 413 }));
    try {
      const { data } = await s.send();
      assertReply(data, 552, '5.3.4');
      assert.equal(s.hook.got.length, 2);
    } finally {
      await s.close();
    }
  });

  test('413 without a blob store (http: false) → 552 5.3.4', async () => {
    const s = await setup(() => ({ status: 413 }), {}, { http: false });
    try {
      const { data } = await s.send();
      assertReply(data, 552, '5.3.4');
      assert.equal(s.hook.got.length, 1);
    } finally {
      await s.close();
    }
  });

  test('an event over maxEventSize goes as a pointer without trying the full event', async () => {
    const s = await setup(() => ({ status: 204 }), { maxEventSize: 1024 });
    try {
      const { data } = await s.send();
      assertReply(data, 250, '2.0.0');
      assert.equal(s.hook.got.length, 1);
      assert.equal(JSON.parse(s.hook.got[0]!.body.toString('utf8')).type, 'email.received.pointer');
    } finally {
      await s.close();
    }
  });
});

describe('signatures, concurrency, mutual TLS', () => {
  test('v1 with two secrets (rotation): the standardwebhooks library verifies with either', async () => {
    const next = `whsec_${Buffer.from('the-next-secret-after-rotation!!').toString('base64')}`;
    const s = await setup(() => ({ status: 204 }), { secret: [SECRET, next] });
    try {
      const { data } = await s.send();
      assertReply(data, 250, '2.0.0');
      const g = s.hook.got[0]!;
      const sigs = String(g.headers['webhook-signature']).split(' ');
      assert.equal(sigs.length, 2);
      for (const secret of [SECRET, next]) new Webhook(secret).verify(g.body.toString('utf8'), g.headers as Record<string, string>);
      const wrong = `whsec_${Buffer.from('not-the-secret-0123456789abcdef!').toString('base64')}`;
      assert.throws(() => new Webhook(wrong).verify(g.body.toString('utf8'), g.headers as Record<string, string>));
    } finally {
      await s.close();
    }
  });

  test('v1a (ed25519): Node crypto verifies with the whpk_ public key; a changed body fails', async () => {
    const signingKey = `whsk_${Buffer.alloc(32, 7).toString('base64')}`;
    const key = parseSigningKey(signingKey);
    assert.ok(typeof key !== 'string');
    const pub = publicKeyText(key);
    const s = await setup(() => ({ status: 204 }), { secret: undefined, signingKey });
    try {
      const { data } = await s.send();
      assertReply(data, 250, '2.0.0');
      const g = s.hook.got[0]!;
      const header = String(g.headers['webhook-signature']);
      assert.match(header, /^v1a,[A-Za-z0-9+/]+=*$/);
      const spki = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(pub.slice(5), 'base64')]);
      const publicKey = createPublicKey({ key: spki, format: 'der', type: 'spki' });
      const signed = (body: Buffer) => Buffer.concat([Buffer.from(`${g.headers['webhook-id']}.${g.headers['webhook-timestamp']}.`), body]);
      const sig = Buffer.from(header.slice(4), 'base64');
      assert.equal(verify(null, signed(g.body), publicKey, sig), true);
      assert.equal(verify(null, signed(Buffer.concat([g.body, Buffer.from(' ')])), publicKey, sig), false);
    } finally {
      await s.close();
    }
  });

  test('a bad signingKey is a configuration error naming the path', async () => {
    await assert.rejects(
      startGateway({ routes: [{ recipients: ['*@hooks.test'], targets: [{ type: 'webhook', url: 'http://127.0.0.1:9/x', signingKey: 'whsec_abc' }] }] }),
      (err: Error & { problems?: Array<{ path: string; message: string }> }) =>
        !!err.problems?.some((p) => p.path === 'routes[0].targets[0].signingKey' && /whsk_/.test(p.message)),
    );
  });

  test('concurrency: 1 → requests to the target never overlap, every message still delivered', async () => {
    const s = await setup(() => ({ status: 204, delayMs: 100 }), { concurrency: 1 }, { delivery: { deadline: '5s' } });
    try {
      const results = await Promise.all([1, 2, 3].map((i) => s.send(`parallel ${i}`)));
      for (const r of results) assertReply(r.data, 250, '2.0.0');
      assert.equal(s.hook.got.length, 3);
      assert.equal(s.hook.maxInflight, 1);
    } finally {
      await s.close();
    }
  });

  test('mutual TLS: the client certificate is presented; without it the handshake fails and mail is deferred', async () => {
    const server = {
      cert: readFileSync(fixturePath('tls', 'mx.pem')),
      key: readFileSync(fixturePath('tls', 'mx-key.pem')),
      ca: [readFileSync(fixturePath('tls', 'mx2.pem'))],
      requestCert: true,
      rejectUnauthorized: true,
    };
    const hook = await startReceiver(() => ({ status: 204 }), { tls: server });
    const target = (tls: Record<string, string>) => ({ type: 'webhook', url: hook.url, tls });
    const ca = fixturePath('tls', 'mx.pem');
    const tg = await startGateway({
      delivery: { deadline: '1s', retry: { initialDelay: '100ms', maxDelay: '100ms' } },
      routes: [
        { recipients: ['*@mtls.test'], targets: [target({ ca, cert: fixturePath('tls', 'mx2.pem'), key: fixturePath('tls', 'mx2-key.pem') })] },
        { recipients: ['*@nocert.test'], targets: [{ ...target({ ca }), id: 'no-client-cert' }] },
      ],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      const ok = await sendMail(c, 's@example.org', ['a@mtls.test'], simpleMessage('mtls'));
      assertReply(ok.data, 250, '2.0.0');
      assert.equal(hook.got.length, 1);
      assert.equal(hook.got[0]!.clientCert, 'mx2.example.test');
      const refused = await sendMail(c, 's@example.org', ['a@nocert.test'], simpleMessage('no cert'));
      assert.equal(refused.data?.code, 451);
      assert.equal(hook.got.length, 1, 'no request got through without a client certificate');
      c.close();
    } finally {
      await tg.close();
      await hook.close();
    }
  });
});

describe('outcome functions (table-driven)', () => {
  const base = { where: 'webhook x', permanentOn: [] as number[], targetId: 't' };
  const cases: Array<[number, unknown, string]> = [
    [200, undefined, 'accepted'],
    [204, { action: 'accept' }, 'accepted'],
    [200, { action: 'reject' }, '550 5.7.1 false'],
    [500, { action: 'reject', code: 554, enhanced: '5.6.0' }, '554 5.6.0 false'],
    [200, { action: 'tempfail' }, '451 4.3.0 true'],
    [200, { action: 'tempfail', code: 421 }, '451 4.3.0 true'],
    [200, { action: 'reject', code: 599, enhanced: '5.1' }, '550 5.7.1 false'],
    [200, { action: 'bogus' }, 'accepted'],
    [413, undefined, 'too-large'],
    [410, undefined, 'gone'],
    [301, undefined, '451 4.3.5 true'],
    [404, undefined, '451 4.3.5 true'],
    [429, undefined, '451 4.4.5 true'],
    [500, undefined, '451 4.4.0 true'],
    [504, undefined, '451 4.4.1 true'],
  ];
  for (const [status, body, want] of cases) {
    test(`${status} ${JSON.stringify(body) ?? ''} → ${want}`, () => {
      const o = webhookOutcome(status, body, base);
      const got = o.kind === 'failed' ? `${o.error.smtp!.code} ${o.error.smtp!.enhanced} ${o.error.transient}` : o.kind;
      assert.equal(got, want);
    });
  }

  test('retryable: 5xx and congestion yes; misconfiguration, tempfail and Gone no', () => {
    const retryable = (status: number, body?: unknown) => {
      const o = webhookOutcome(status, body, base);
      return o.kind === 'failed' || o.kind === 'gone' ? o.error.retryable : null;
    };
    assert.equal(retryable(500), true);
    assert.equal(retryable(429), true);
    assert.equal(retryable(404), false);
    assert.equal(retryable(302), false);
    assert.equal(retryable(410), false);
    assert.equal(retryable(200, { action: 'tempfail' }), false);
  });

  test('Retry-After: seconds, HTTP-date, garbage', () => {
    const now = Date.parse('2026-11-23T10:00:00Z');
    assert.equal(parseRetryAfter('3', now), 3000);
    assert.equal(parseRetryAfter('Mon, 23 Nov 2026 10:00:10 GMT', now), 10_000);
    assert.equal(parseRetryAfter('Mon, 23 Nov 2026 09:00:00 GMT', now), 0);
    assert.equal(parseRetryAfter('soon', now), undefined);
    assert.equal(parseRetryAfter(undefined, now), undefined);
  });

  test('retry pause: full jitter under a doubling ceiling, Retry-After as a floor, null when it does not fit', () => {
    const err = (retryAfterMs?: number) => new GatewayError({ code: 'PG_DELIVERY_FAILED', message: 'x', smtp: { code: 451, enhanced: '4.4.0' }, retryAfterMs });
    const opts = (r: number) => ({ retry: { initialDelayMs: 100, maxDelayMs: 1000, random: () => r } });
    assert.equal(retryPause(1, err(), 10_000, opts(0.5)), 50);
    assert.equal(retryPause(3, err(), 10_000, opts(0.5)), 200);
    assert.equal(retryPause(10, err(), 10_000, opts(0.999)), 999);
    assert.equal(retryPause(1, err(2000), 10_000, opts(0.5)), 2000);
    assert.equal(retryPause(1, err(2000), 2050, opts(0.5)), null);
  });

  test('reply text sanitizing', () => {
    assert.equal(sanitizeReplyText('  a\r\nb\tc  ', 'x'), 'a b c');
    assert.equal(sanitizeReplyText('\u0000\u00ff', 'fallback'), 'fallback');
    assert.equal(sanitizeReplyText(42, 'fallback'), 'fallback');
    assert.equal(sanitizeReplyText('y'.repeat(500), 'x').length, 200);
    assert.equal(interpretReceiverAnswer([1, 2], 't').action, 'none');
  });
});

describe('partial success and the sender\'s retry (in-process skip-store)', () => {
  test('two required targets, one fails: the retry of the same message calls only the failed one, with the same webhook-id', async () => {
    let bFails = true;
    const a = await startReceiver(() => ({ status: 204 }));
    const b = await startReceiver(() => (bFails ? { status: 404 } : { status: 204 }));
    const tg = await startGateway({
      delivery: FAST,
      routes: [{ recipients: ['*@two.test'], targets: [{ type: 'webhook', id: 'a', url: a.url }, { type: 'webhook', id: 'b', url: b.url }] }],
    });
    try {
      const body = simpleMessage('partial');
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      const first = await sendMail(c, 's@example.org', ['x@two.test', 'y@two.test'], body);
      assertReply(first.data, 451, '4.3.5');
      assert.equal(a.got.length, 1);
      assert.equal(b.got.length, 1);
      bFails = false;
      // the sender retries the same message (same envelope and bytes)
      const second = await sendMail(c, 's@example.org', ['y@two.test', 'x@two.test'], body);
      assertReply(second.data, 250, '2.0.0');
      assert.equal(a.got.length, 1, 'the target that had the message was skipped');
      assert.equal(b.got.length, 2);
      assert.equal(b.got[1]!.headers['webhook-id'], b.got[0]!.headers['webhook-id']);
      assert.notEqual(a.got[0]!.headers['webhook-id'], b.got[0]!.headers['webhook-id'], 'the target id is part of the delivery id');
      assert.ok(tg.logs.some((l) => l.msg === 'delivery' && l.target === 'a' && l.skipped === true));
      c.close();
    } finally {
      await tg.close();
      await a.close();
      await b.close();
    }
  });
});

describe('the webhook request itself (WebhookTarget.deliver against a real receiver)', () => {
  async function target(url: string, extra: Record<string, unknown> = {}) {
    const cfg = await loadConfig({ overrides: () => ({ routes: [{ recipients: ['*@hooks.test'], targets: [{ type: 'webhook', url, secret: SECRET, ...extra }] }] }) });
    const pools = createPoolCache();
    const t = new WebhookTarget(cfg.routes[0]!.targets[0] as WebhookTargetConfig, { pool: pools.pool, now: Date.now });
    return { t, pools };
  }
  const event = { type: 'email.received', timestamp: '2026-01-01T00:00:00.000Z', data: {} };
  const msg = (n: number) =>
    ({
      queueId: `Q${n}`,
      mailFrom: 's@example.org',
      rcptTo: ['in@hooks.test'],
      receivedAt: new Date(),
      rawSha256: 'a'.repeat(64),
      event,
      eventJson: Buffer.from(JSON.stringify({ ...event, n })),
      claimCheck: () => Promise.reject(new Error('no claim check here')),
    }) as unknown as DeliveryMessage;

  test("the operator's headers and the URL's userinfo go with every request; postgate's own headers win over the operator's", async () => {
    const hook = await startReceiver(() => ({ status: 204 }));
    const url = hook.url.replace('://', '://hook%20user:p%40ss@');
    const { t, pools } = await target(url, { headers: { 'x-tenant': 'acme', 'user-agent': 'not-postgate', 'webhook-id': 'forged', 'content-type': 'text/plain' } });
    try {
      for (const n of [1, 2]) await t.deliver(msg(n), `msg_${String(n).repeat(32)}`, new AbortController().signal);
      assert.equal(hook.got.length, 2);
      for (const [i, g] of hook.got.entries()) {
        assert.equal(g.headers['x-tenant'], 'acme');
        assert.equal(g.headers['user-agent'], 'postgate');
        assert.equal(g.headers['content-type'], 'application/json');
        assert.equal(g.headers['webhook-id'], `msg_${String(i + 1).repeat(32)}`);
        assert.equal(g.headers.authorization, `Basic ${Buffer.from('hook user:p@ss').toString('base64')}`);
        assert.match(String(g.headers['webhook-timestamp']), /^\d{10}$/);
        // The signature is over this request's id, timestamp and body.
        const wh = new Webhook(SECRET);
        assert.doesNotThrow(() => wh.verify(g.body, g.headers as Record<string, string>));
      }
    } finally {
      await pools.close();
      await hook.close();
    }
  });

  test("an attempt ends at the target's timeout (451 4.4.1, no answer), and at once when the caller's signal aborts; either way its slot is free again", async () => {
    let silent = true;
    const hook = await startReceiver(() => (silent ? { fault: 'silence' } : { status: 204 }));
    const { t, pools } = await target(hook.url, { timeout: '300ms', concurrency: 1 });
    const slow = await target(hook.url, { timeout: '2m', concurrency: 1 });
    try {
      let started = Date.now();
      await assert.rejects(t.deliver(msg(1), `msg_${'1'.repeat(32)}`, new AbortController().signal), (err: GatewayError) => err.smtp?.enhanced === '4.4.1' && /no answer within the target's timeout/.test(err.message));
      const timedOutAfter = Date.now() - started;
      assert.ok(timedOutAfter >= 250 && timedOutAfter < 5_000, `timed out after ${timedOutAfter} ms`);

      // The caller's deadline: the request is aborted with the caller's reason, long before the 2 min timeout.
      const caller = new AbortController();
      const reason = new Error('the delivery deadline passed');
      started = Date.now();
      setTimeout(() => caller.abort(reason), 100);
      await assert.rejects(slow.t.deliver(msg(2), `msg_${'2'.repeat(32)}`, caller.signal), (err) => err === reason);
      assert.ok(Date.now() - started < 5_000);

      // concurrency 1: the next delivery of each target gets the slot back.
      silent = false;
      await t.deliver(msg(3), `msg_${'3'.repeat(32)}`, new AbortController().signal);
      await slow.t.deliver(msg(4), `msg_${'4'.repeat(32)}`, new AbortController().signal);
      assert.equal(hook.got.length, 4);
    } finally {
      await pools.close();
      await slow.pools.close();
      await hook.close();
    }
  });
});
