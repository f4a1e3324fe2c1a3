/**
 * The hand-off path over real sockets: RCPT decisions, the local store
 * (fsync'd files), the webhook target with Standard Webhooks signatures, and
 * the reply contract (250 with a queue id only after the target acknowledged;
 * 451 4.3.0 otherwise).
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { startGateway, listFiles, type TestGateway } from './helpers/gateway.js';
import { fixturePath } from './helpers/fixtures.js';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
}

async function receiver(status: () => number) {
  const got: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(status()).end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return { server, got, url: `http://127.0.0.1:${port}/inbound` };
}

describe('gateway hand-off', () => {
  let tg: TestGateway;
  let hook: Awaited<ReturnType<typeof receiver>>;
  let status = 204;

  before(async () => {
    hook = await receiver(() => status);
    tg = await startGateway({
      // Short budget and pauses: the failure test below waits for retries to run out.
      delivery: { deadline: '1500ms', retry: { initialDelay: '50ms', maxDelay: '200ms' } },
      routes: [
        { name: 'hooks', recipients: ['ok@example.test', '*@hooks.example.test'], targets: [{ type: 'webhook', url: hook.url, secret: SECRET, timeout: '5s' }] },
        { name: 'archive', recipients: ['*@archive.example.test'], targets: [{ type: 'local' }] },
      ],
    });
  });
  after(async () => {
    await tg.close();
    hook.server.close();
  });

  test('RCPT: unknown user 550 5.1.1, other domain 550 5.7.1, postmaster accepted', async () => {
    const c = await RawSmtp.connect(tg.port);
    assert.equal((await c.read()).code, 220);
    assert.equal((await c.cmd('EHLO client.example')).code, 250);
    assert.equal((await c.cmd('MAIL FROM:<a@example.org>')).code, 250);
    const unknown = await c.cmd('RCPT TO:<nobody@example.test>');
    assert.equal(unknown.code, 550);
    assert.match(unknown.text, /^5\.1\.1 /);
    const relay = await c.cmd('RCPT TO:<victim@elsewhere.example>');
    assert.equal(relay.code, 550);
    assert.match(relay.text, /^5\.7\.1 .*[Rr]elay/);
    const pm = await c.cmd('RCPT TO:<PostMaster@hooks.example.test>');
    assert.equal(pm.code, 250);
    // postmaster goes to its own route, so a hooks recipient is another route
    const other = await c.cmd('RCPT TO:<ok@example.test>');
    assert.equal(other.code, 452);
    assert.match(other.text, /^4\.5\.3 /);
    c.close();
  });

  test('webhook: signed event, 250 with the queue id only after 2xx', async () => {
    status = 204;
    const before = hook.got.length;
    const c = await RawSmtp.connect(tg.port);
    await c.read();
    await c.cmd('EHLO client.example');
    const { rcpt, data } = await sendMail(c, 'sender@example.org', ['ok@example.test', 'x@hooks.example.test'], simpleMessage('signed'));
    assert.deepEqual(rcpt.map((r) => r.code), [250, 250]);
    assert.equal(data?.code, 250);
    const queueId = /queued as ([0-9A-Z]{20})/.exec(data!.text)?.[1];
    assert.ok(queueId, data!.text);
    assert.equal(hook.got.length, before + 1);
    const req = hook.got.at(-1)!;
    const id = req.headers['webhook-id'] as string;
    const ts = req.headers['webhook-timestamp'] as string;
    const key = Buffer.from(SECRET.slice(6), 'base64');
    const expected = `v1,${createHmac('sha256', key).update(`${id}.${ts}.${req.body}`).digest('base64')}`;
    assert.equal(req.headers['webhook-signature'], expected);
    assert.ok(Math.abs(Number(ts) - Date.now() / 1000) < 60);
    const event = JSON.parse(req.body);
    assert.equal(event.type, 'email.received');
    assert.equal(event.data.id, queueId);
    assert.equal(event.data.envelope.queueId, queueId);
    assert.equal(event.data.envelope.mailFrom, 'sender@example.org');
    assert.deepEqual(event.data.envelope.rcptTo.map((r: { address: string }) => r.address), ['ok@example.test', 'x@hooks.example.test']);
    assert.equal(event.data.subject, 'signed');
    // the full message model (postgate.email.v1): parsed body and addresses
    assert.equal(event.data.schema, 'postgate.email.v1');
    assert.equal(event.data.text, 'Hello there.\n');
    assert.equal(event.data.from[0].address, 'sender@example.org');
    assert.equal(event.data.from[0].name, 'Sender');
    assert.equal(event.data.date, '2026-11-23T10:00:00.000Z');
    assert.deepEqual(event.data.parseErrors, []);
    assert.equal(event.data.headers[0].name, 'Return-Path');
    assert.equal(event.data.headers[1].name, 'Received');
    assert.match(event.data.headers[1].value, new RegExp(`id ${queueId}`));
    assert.match(event.data.raw.sha256, /^[0-9a-f]{64}$/);
    // the queue id is in the logs, the secret is not
    assert.ok(tg.logs.some((l) => l.txn === queueId && l.msg === 'accepted'));
    assert.ok(!tg.logText().includes(SECRET.slice(6)));
    c.close();
  });

  test('webhook failure: retried within the deadline, then 451 and nothing is acknowledged', async () => {
    status = 500;
    const c = await RawSmtp.connect(tg.port);
    await c.read();
    await c.cmd('EHLO client.example');
    const body = simpleMessage('fails');
    const before = hook.got.length;
    const { data } = await sendMail(c, 'sender@example.org', ['ok@example.test'], body);
    assert.equal(data?.code, 451);
    // 4.4.0 when the last pause did not fit the budget, 4.4.7 when the deadline cut an attempt
    assert.match(data!.text, /^4\.4\.[07] /);
    const tries = hook.got.slice(before);
    assert.ok(tries.length >= 2, `retried within the deadline (${tries.length} attempts)`);
    assert.equal(new Set(tries.map((t) => t.headers['webhook-id'])).size, 1, 'every attempt carries the same webhook-id');
    assert.ok(!tg.logs.some((l) => l.msg === 'accepted' && String(l.txn) === /id (\S+)/.exec(data!.text)?.[1]));
    // The sender retries the same message once the receiver recovers: same
    // webhook-id (deterministic delivery id), so the receiver can deduplicate.
    const firstId = hook.got.at(-1)!.headers['webhook-id'];
    status = 200;
    const again = await sendMail(c, 'sender@example.org', ['ok@example.test'], body);
    assert.equal(again.data?.code, 250);
    assert.equal(hook.got.at(-1)!.headers['webhook-id'], firstId);
    assert.match(String(firstId), /^msg_[0-9a-f]{32}$/);
    c.close();
  });

  test('local store: .eml with trace headers and the JSON event, named by queue id', async () => {
    const c = await RawSmtp.connect(tg.port);
    await c.read();
    await c.cmd('EHLO client.example');
    const { data } = await sendMail(c, 'sender@example.org', ['box@archive.example.test'], simpleMessage('archived'));
    assert.equal(data?.code, 250);
    const queueId = /queued as (\S+)/.exec(data!.text)![1]!;
    const files = (await listFiles(tg.dataDir)).filter((f) => f.includes(queueId));
    assert.equal(files.length, 2, files.join(','));
    const eml = await readFile(path.join(tg.dataDir, files.find((f) => f.endsWith('.eml'))!), 'utf8');
    assert.match(eml, /^Return-Path: <sender@example\.org>\r\nReceived: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test\.local \(postgate\) with ESMTP\r\n/);
    assert.match(eml, /Subject: archived\r\n/);
    const event = JSON.parse(await readFile(path.join(tg.dataDir, files.find((f) => f.endsWith('.json'))!), 'utf8'));
    assert.equal(event.data.id, queueId);
    assert.equal(event.data.envelope.rcptTo[0].address, 'box@archive.example.test');
    c.close();
  });
});

describe('VRFY against the routes (smtp.vrfy: routes)', () => {
  test('250 for a routable address, 550 5.1.1 unknown user, 550 5.7.1 other domain; 252 by default', async () => {
    const tg = await startGateway({ smtp: { vrfy: 'routes' }, routes: [{ recipients: ['ok@example.test'], targets: [{ type: 'local' }] }] });
    const plain = await startGateway({ routes: [{ recipients: ['ok@example.test'], targets: [{ type: 'local' }] }] });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO v.example');
      const ok = await c.cmd('VRFY <ok@example.test>');
      assert.equal(ok.code, 250);
      assert.match(ok.text, /^2\.1\.5 <ok@example\.test>/);
      const unknown = await c.cmd('VRFY nobody@example.test');
      assert.equal(unknown.code, 550);
      assert.match(unknown.text, /^5\.1\.1 /);
      const other = await c.cmd('VRFY someone@elsewhere.example');
      assert.equal(other.code, 550);
      assert.match(other.text, /^5\.7\.1 /);
      c.close();
      const d = await RawSmtp.connect(plain.port);
      await d.read();
      await d.cmd('EHLO v.example');
      const hidden = await d.cmd('VRFY ok@example.test');
      assert.equal(hidden.code, 252, 'no address harvesting by default');
      d.close();
    } finally {
      await tg.close();
      await plain.close();
    }
  });
});

describe('destination known down (circuit breaker)', () => {
  test('after repeated failures RCPT gets 451 4.4.1 at once; after the cooldown mail flows again', async () => {
    let status = 503;
    const hook = await receiver(() => status);
    const tg = await startGateway({
      delivery: { deadline: '300ms', retry: { initialDelay: '20ms', maxDelay: '50ms' }, breaker: { failures: 2, cooldown: '400ms' } },
      routes: [{ recipients: ['*@down.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO b.example');
      for (let i = 0; i < 2; i++) {
        const { data } = await sendMail(c, 'a@b.example', ['x@down.test'], simpleMessage(`fail ${i}`));
        assert.equal(data?.code, 451);
        assert.match(data!.text, /^4\.4\.[57] /);
      }
      const posts = hook.got.length;
      assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 250);
      const down = await c.cmd('RCPT TO:<x@down.test>');
      assert.equal(down.code, 451);
      assert.match(down.text, /^4\.4\.1 /);
      assert.equal(hook.got.length, posts, 'no body was taken for a known-down target');
      await c.cmd('RSET');
      status = 204;
      await new Promise((r) => setTimeout(r, 450));
      const { rcpt, data } = await sendMail(c, 'a@b.example', ['x@down.test'], simpleMessage('recovered'));
      assert.equal(rcpt[0]!.code, 250);
      assert.equal(data?.code, 250);
      assert.ok(tg.logs.some((l) => l.msg === 'target marked down'));
      c.close();
    } finally {
      await tg.close();
      hook.server.close();
    }
  });
});

describe('sender authentication in the pipeline (mailAuth.enabled)', () => {
  test('SPF/DMARC verdicts in the event, our Authentication-Results added, a forged one claiming our id removed', async () => {
    const zone: Record<string, Record<string, unknown>> = {
      'sender.test': { TXT: [['v=spf1 ip4:127.0.0.1 -all']] },
      '_dmarc.sender.test': { TXT: [['v=DMARC1; p=reject']] },
    };
    const dnsResolver = async (name: string, rrtype: string) => {
      const rr = zone[name.toLowerCase()]?.[rrtype];
      if (!rr) throw Object.assign(new Error(`query ${name} ENOTFOUND`), { code: 'ENOTFOUND' });
      return rr;
    };
    const tg = await startGateway({ mailAuth: { enabled: true }, routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }] }, { dnsResolver });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO mail.sender.test');
      const forged = 'Authentication-Results: MX.TEST.LOCAL; spf=pass smtp.mailfrom=ceo@sender.test; dmarc=pass\r\nAuthentication-Results: other.example; spf=fail\r\n';
      const { data } = await sendMail(c, 'news@sender.test', ['x@example.test'], `${forged}From: <news@sender.test>\r\nSubject: auth\r\n\r\nbody\r\n`);
      assert.equal(data?.code, 250);
      c.close();
      const queueId = /queued as (\S+)/.exec(data!.text)![1]!;
      const files = (await listFiles(tg.dataDir)).filter((f) => f.includes(queueId));
      const event = JSON.parse(await readFile(path.join(tg.dataDir, files.find((f) => f.endsWith('.json'))!), 'utf8'));
      assert.equal(event.data.auth.spf.mailFrom.result, 'pass');
      assert.equal(event.data.auth.dmarc.result, 'pass');
      assert.deepEqual(event.data.auth.dkim, []);
      const ar = (event.data.headers as Array<{ name: string; value: string }>).filter((h) => h.name === 'Authentication-Results');
      assert.equal(ar.length, 2, JSON.stringify(ar));
      assert.match(ar[0]!.value, /^mx\.test\.local;.*spf=pass/);
      assert.match(ar[1]!.value, /^other\.example; spf=fail/, 'other ids are kept');
      const eml = await readFile(path.join(tg.dataDir, files.find((f) => f.endsWith('.eml'))!), 'utf8');
      assert.ok(!eml.includes('MX.TEST.LOCAL; spf=pass smtp.mailfrom=ceo@sender.test'), 'the forged header is gone from the stored message');
      assert.match(eml, /Authentication-Results: mx\.test\.local;/);
      // the dedupe hash still covers the bytes as received
      assert.match(event.data.raw.sha256, /^[0-9a-f]{64}$/);
    } finally {
      await tg.close();
    }
  });
});

/** A node:http receiver that records the path of each request and answers per request. */
async function pathReceiver(answer: (path: string, body: string) => { status: number; body?: string; delayMs?: number }) {
  const got: { path: string; headers: http.IncomingHttpHeaders; body: string }[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      got.push({ path: req.url ?? '', headers: req.headers, body });
      const a = answer(req.url ?? '', body);
      const send = () => {
        if (!res.destroyed) res.writeHead(a.status, { 'content-type': 'application/json' }).end(a.body ?? '');
      };
      if (a.delayMs) setTimeout(send, a.delayMs).unref();
      else send();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return { server, got, base: `http://127.0.0.1:${port}` };
}

describe('routing over SMTP: captures in URLs, plus tags, header conditions', () => {
  test('one delivery per resolved URL, each with only its recipients and their mailboxHash; a sender retry re-sends only the failed one', async () => {
    let failTicket2 = true;
    const hook = await pathReceiver((p) => ({ status: p.startsWith('/t/2') && failTicket2 ? 404 : 204 }));
    const tg = await startGateway({
      routes: [
        {
          name: 'tickets',
          recipients: [{ local: 'ticket-(?<id>[0-9]+)', domain: 'tickets.test' }],
          targets: [{ type: 'webhook', url: `${hook.base}/t/{id}?user={user}`, timeout: '5s' }],
        },
        { name: 'other', recipients: ['*@tickets.test'], targets: [{ type: 'local' }] },
      ],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      const body = simpleMessage('split');
      const rcpts = ['ticket-1@tickets.test', 'Ticket-2@Tickets.TEST', 'ticket-1+Urgent@tickets.test', 'someone@tickets.test'];
      const first = await sendMail(c, 'sender@example.org', rcpts, body);
      // the fourth recipient is another route: 452 4.5.3, the sender sends it separately
      assert.deepEqual(first.rcpt.map((r) => r.code), [250, 250, 250, 452]);
      assert.equal(first.data?.code, 451, 'ticket 2 failed, so the transaction is deferred');
      const byPath = (p: string) => hook.got.filter((g) => g.path === p);
      assert.equal(byPath('/t/1?user=ticket-1').length, 1);
      assert.equal(byPath('/t/2?user=ticket-2').length, 1);
      const one = JSON.parse(byPath('/t/1?user=ticket-1')[0]!.body);
      assert.deepEqual(one.data.envelope.rcptTo, [
        { address: 'ticket-1@tickets.test', mailboxHash: null },
        { address: 'ticket-1+Urgent@tickets.test', mailboxHash: 'Urgent' },
      ]);
      const two = JSON.parse(byPath('/t/2?user=ticket-2')[0]!.body);
      assert.deepEqual(two.data.envelope.rcptTo, [{ address: 'Ticket-2@Tickets.TEST', mailboxHash: null }]);
      const idOne = byPath('/t/1?user=ticket-1')[0]!.headers['webhook-id'];
      const idTwo = byPath('/t/2?user=ticket-2')[0]!.headers['webhook-id'];
      assert.notEqual(idOne, idTwo);
      // The sender retries the same transaction: ticket 1 already succeeded (skip-store), only ticket 2 is sent again, with its id.
      failTicket2 = false;
      const again = await sendMail(c, 'sender@example.org', rcpts.slice(0, 3), body);
      assert.equal(again.data?.code, 250);
      assert.equal(byPath('/t/1?user=ticket-1').length, 1);
      assert.equal(byPath('/t/2?user=ticket-2').length, 2);
      assert.equal(byPath('/t/2?user=ticket-2')[1]!.headers['webhook-id'], idTwo);
      c.close();
    } finally {
      await tg.close();
      hook.server.close();
    }
  });

  test('a header condition chooses whether a target receives the message, after DATA', async () => {
    const hook = await pathReceiver(() => ({ status: 204 }));
    const tg = await startGateway({
      routes: [
        {
          recipients: ['*@example.test'],
          targets: [
            { type: 'local' },
            { type: 'webhook', url: `${hook.base}/urgent`, when: { header: 'X-Priority', matches: '^1\\b' } },
          ],
        },
      ],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      const calm = await sendMail(c, 'a@example.org', ['x@example.test'], simpleMessage('calm', 'X-Priority: 3 (Normal)\r\n'));
      assert.equal(calm.data?.code, 250);
      assert.equal(hook.got.length, 0);
      const urgent = await sendMail(c, 'a@example.org', ['x+Case9@example.test'], simpleMessage('urgent', 'X-Priority: 1 (Highest)\r\n'));
      assert.equal(urgent.data?.code, 250);
      assert.equal(hook.got.length, 1);
      const event = JSON.parse(hook.got[0]!.body);
      assert.equal(event.data.subject, 'urgent');
      assert.deepEqual(event.data.envelope.rcptTo, [{ address: 'x+Case9@example.test', mailboxHash: 'Case9' }]);
      c.close();
    } finally {
      await tg.close();
      hook.server.close();
    }
  });

  test('a classification condition sends bounces to their own target and everything else to the app, over SMTP', async () => {
    const hook = await pathReceiver(() => ({ status: 204 }));
    const tg = await startGateway({
      routes: [
        {
          recipients: ['*@example.test'],
          targets: [
            { type: 'webhook', url: `${hook.base}/inbound`, when: { classification: { not: 'bounce' } } },
            { type: 'webhook', url: `${hook.base}/bounces`, when: { classification: 'bounce' } },
          ],
        },
      ],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      const dsn = await readFile(fixturePath('eml', 'bounce-dsn.eml'), 'latin1');
      const bounce = await sendMail(c, '', ['alice@example.test'], dsn);
      assert.equal(bounce.data?.code, 250);
      const person = await sendMail(c, 'a@example.org', ['alice@example.test'], simpleMessage('hello'));
      assert.equal(person.data?.code, 250);
      const paths = hook.got.map((g) => g.path);
      assert.deepEqual(paths, ['/bounces', '/inbound']);
      const event = JSON.parse(hook.got[0]!.body);
      assert.equal(event.data.classification.bounce.recipients[0].address, 'nobody@nowhere.example.test');
      assert.equal(event.data.classification.bounce.recipients[0].status, '5.1.1');
      c.close();
    } finally {
      await tg.close();
      hook.server.close();
    }
  });

  test('sender and client-network conditions at RCPT', async () => {
    const tg = await startGateway({
      routes: [
        { name: 'partners', recipients: ['orders@shop.test'], from: ['*@partner.test'], targets: [{ type: 'local' }] },
        { name: 'office', recipients: ['printer@shop.test'], clients: ['10.0.0.0/8'], targets: [{ type: 'local' }] },
      ],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      const evil = await sendMail(c, 'bob@evil.test', ['orders@shop.test'], simpleMessage());
      assert.equal(evil.rcpt[0]!.code, 550);
      assert.match(evil.rcpt[0]!.text, /^5\.1\.1 /);
      const partner = await sendMail(c, 'Bob@PARTNER.test', ['orders@shop.test'], simpleMessage());
      assert.equal(partner.data?.code, 250);
      // the test client is 127.0.0.1, outside 10.0.0.0/8
      const printer = await sendMail(c, 'bob@partner.test', ['printer@shop.test'], simpleMessage());
      assert.equal(printer.rcpt[0]!.code, 550);
      c.close();
    } finally {
      await tg.close();
    }
  });
});

describe('RCPT validation hook (routes[].validate)', () => {
  test('2xx accepts, 404 and {"accept":false} refuse (550 5.1.1), 5xx and timeouts defer (451 4.4.3); answers are cached', async () => {
    const asked: string[] = [];
    const hook = await pathReceiver((_p, body) => {
      const { address } = JSON.parse(body) as { address: string };
      asked.push(address);
      if (address.startsWith('known')) return { status: 200, body: '{"accept":true}' };
      if (address.startsWith('banned')) return { status: 200, body: '{"accept":false}' };
      if (address.startsWith('broken')) return { status: 500 };
      if (address.startsWith('slow')) return { status: 200, delayMs: 1500 };
      return { status: 404 };
    });
    const tg = await startGateway({
      routes: [{ recipients: ['*@users.test'], validate: { url: `${hook.base}/check`, timeout: '300ms', cacheTtl: '1m' }, targets: [{ type: 'local' }] }],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      assert.equal((await c.cmd('MAIL FROM:<a@example.org>')).code, 250);
      const known = await c.cmd('RCPT TO:<Known@users.test>');
      assert.equal(known.code, 250);
      const unknown = await c.cmd('RCPT TO:<nobody@users.test>');
      assert.equal(unknown.code, 550);
      assert.match(unknown.text, /^5\.1\.1 <nobody@users\.test>/);
      const banned = await c.cmd('RCPT TO:<banned@users.test>');
      assert.equal(banned.code, 550);
      const broken = await c.cmd('RCPT TO:<broken@users.test>');
      assert.equal(broken.code, 451);
      assert.match(broken.text, /^4\.4\.3 <broken@users\.test>: Recipient verification unavailable/);
      const slow = await c.cmd('RCPT TO:<slow@users.test>');
      assert.equal(slow.code, 451);
      assert.match(slow.text, /^4\.4\.3 /);
      // cached both ways: no second question for known@ or nobody@
      assert.equal((await c.cmd('RCPT TO:<known@users.test>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<nobody@users.test>')).code, 550);
      assert.deepEqual(asked, ['known@users.test', 'nobody@users.test', 'banned@users.test', 'broken@users.test', 'slow@users.test']);
      // a failure is not cached: the next RCPT asks again
      assert.equal((await c.cmd('RCPT TO:<broken@users.test>')).code, 451);
      assert.equal(asked.filter((a) => a === 'broken@users.test').length, 2);
      const req = JSON.parse(hook.got[0]!.body);
      assert.deepEqual(req, { address: 'known@users.test', mailFrom: 'a@example.org', clientAddress: '127.0.0.1' });
      assert.ok(tg.logs.some((l) => l.code === 'PG_RCPT_VALIDATION_UNAVAILABLE' && l.msg === 'recipient refused'));
      c.close();
    } finally {
      await tg.close();
      hook.server.close();
    }
  });
});

describe('RecipientValidator (cache and bounds, injected clock)', () => {
  test('answers expire after cacheTtl; the cache is bounded; cacheTtl 0 always asks', async () => {
    const { RecipientValidator } = await import('../src/delivery/rcpt-validate.js');
    const { createPoolCache } = await import('../src/delivery/webhook.js');
    const asked: string[] = [];
    const hook = await pathReceiver((_p, body) => {
      asked.push((JSON.parse(body) as { address: string }).address);
      return { status: 204 };
    });
    const pools = createPoolCache();
    let clock = 1_000_000;
    const v = new RecipientValidator({ pool: pools.pool, now: () => clock }, 2);
    const cfg = { url: `${hook.base}/check`, timeout: 2000, cacheTtl: 60_000 };
    const req = (address: string) => ({ address, mailFrom: '', clientAddress: '192.0.2.1' });
    try {
      assert.equal(await v.check(cfg, req('a@x.test')), true);
      assert.equal(await v.check(cfg, req('A@X.TEST')), true);
      assert.deepEqual(asked, ['a@x.test']);
      clock += 60_001;
      await v.check(cfg, req('a@x.test'));
      assert.deepEqual(asked, ['a@x.test', 'a@x.test']);
      // bounded at 2 entries: a third address evicts the oldest
      await v.check(cfg, req('b@x.test'));
      await v.check(cfg, req('c@x.test'));
      await v.check(cfg, req('a@x.test'));
      assert.deepEqual(asked.slice(2), ['b@x.test', 'c@x.test', 'a@x.test']);
      await v.check({ ...cfg, cacheTtl: 0 }, req('d@x.test'));
      await v.check({ ...cfg, cacheTtl: 0 }, req('d@x.test'));
      assert.equal(asked.filter((a) => a === 'd@x.test').length, 2);
    } finally {
      await pools.close();
      hook.server.close();
    }
  });
});

describe('routing over SMTP: stop: false chains and internationalised domains', () => {
  test('a stop:false route adds the next one; the chain is the transaction\'s route; IDN and quoted addresses route by their normal form', async () => {
    const audit = await pathReceiver(() => ({ status: 204 }));
    const inbox = await pathReceiver(() => ({ status: 204 }));
    const tg = await startGateway({
      routes: [
        { name: 'audit', recipients: ['ceo@corp.test'], stop: false, targets: [{ type: 'webhook', url: `${audit.base}/audit` }] },
        { name: 'corp', recipients: ['*@corp.test', '*@bücher.example'], targets: [{ type: 'webhook', url: `${inbox.base}/inbox/{user}` }] },
      ],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      const { rcpt, data } = await sendMail(c, 'a@example.org', ['"CEO"@Corp.Test', 'cfo@corp.test'], simpleMessage('chain'));
      // ceo@ takes audit+corp; cfo@ only corp: another route for this transaction
      assert.deepEqual(rcpt.map((r) => r.code), [250, 452]);
      assert.equal(data?.code, 250);
      assert.deepEqual(audit.got.map((g) => g.path), ['/audit']);
      assert.deepEqual(inbox.got.map((g) => g.path), ['/inbox/ceo']);
      assert.ok(tg.logs.some((l) => l.msg === 'accepted' && l.route === 'audit+corp'));
      // RFC 6531: a UTF-8 domain (SMTPUTF8) and its A-label form reach the same route
      assert.equal((await c.cmd('MAIL FROM:<a@example.org> SMTPUTF8')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<Info@Bücher.Example>')).code, 250);
      assert.equal((await c.cmd('RCPT TO:<sales@xn--bcher-kva.example>')).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write(`${simpleMessage('idn')}.\r\n`);
      assert.equal((await c.read()).code, 250);
      assert.deepEqual(inbox.got.slice(1).map((g) => g.path).sort(), ['/inbox/info', '/inbox/sales']);
      c.close();
    } finally {
      await tg.close();
      audit.server.close();
      inbox.server.close();
    }
  });
});
