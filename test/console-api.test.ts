/**
 * The console's REST API (docs/console.md) over real HTTP, against a gateway
 * that receives real SMTP and delivers to real webhook receivers: list,
 * search, fetch, downloads, the attempt timeline, retry and replay of a dead
 * item against a receiver that recovers, delete, live events, and the
 * security rules (Host allow-list, authentication, CSRF, ids).
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';
import { waitFor } from './helpers/wait.js';
import { browserSession, consoleRequest, readEvents } from './helpers/console.js';
import { projectRoot } from './helpers/fixtures.js';
import { validateConfig } from '../src/config/load.js';
import { ConfigError } from '../src/config/errors.js';
import { hashPassword } from '../src/auth/password.js';
import { deliveryId } from '../src/message/ids.js';
import type { MessageDetail, MessagePage, MessageSummary } from '../src/console/types.js';

const QUICK = { retry: { initialDelay: '100ms', maxDelay: '200ms' } };

function withAttachment(subject: string): string {
  return [
    'From: Alice <alice@example.org>',
    'To: bob@sync.test',
    `Subject: ${subject}`,
    'Keywords: =?UTF-8?B?UsOpc3Vtw6k=?= =?UTF-8?Q?_trimestriel?=',
    'Message-ID: <att-1@example.org>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b1"',
    '',
    '--b1',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'See the attached page.',
    '--b1',
    'Content-Type: text/html; name="evil.html"',
    'Content-Disposition: attachment; filename="evil.html"',
    '',
    '<script>alert(1)</script>',
    '--b1--',
    '',
  ].join('\r\n');
}

const idOf = (text: string) => /queued as (\S+)/.exec(text)![1]!;

describe('console REST API', () => {
  let tg: TestGateway;
  let hook: Receiver;
  let qhook: Receiver;
  let staging: Receiver;
  let qUp = false;
  let port: number;

  before(async () => {
    hook = await startReceiver((r) => (r.body.toString().includes('reject me') ? { status: 200, json: { action: 'reject', message: 'not wanted here' } } : { status: 200 }));
    // Refuses on purpose (a dead letter at once) until it recovers.
    qhook = await startReceiver(() => (qUp ? { status: 200 } : { status: 200, json: { action: 'reject', message: 'down for maintenance' } }));
    staging = await startReceiver(() => ({ status: 200 }));
    tg = await startGateway({
      queue: QUICK,
      console: { listen: '127.0.0.1:0' },
      routes: [
        { name: 'sync', recipients: ['*@sync.test'], targets: [{ type: 'webhook', id: 'hook', url: hook.url }] },
        { name: 'queued', recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'qhook', url: qhook.url, timeout: '1s' }] },
        { name: 'staging', recipients: ['*@staging.test'], targets: [{ type: 'webhook', id: 'staging', url: staging.url }] },
      ],
    });
    port = tg.gw.consoleAddress()!.port;
  });

  after(async () => {
    await tg.close();
    await Promise.all([hook.close(), qhook.close(), staging.close()]);
  });

  const list = async (qs = '') => {
    const r = await consoleRequest(port, 'GET', `/api/v1/messages${qs}`);
    assert.equal(r.status, 200, r.body.toString());
    return r.json<MessagePage>();
  };

  test('a message received over SMTP is listed, searchable and fetchable with its copies and attempts', async () => {
    const reply = await sendOne(tg.port, 'bob@sync.test', withAttachment('quarterly report'));
    assert.equal(reply.code, 250);
    const id = idOf(reply.text);
    await waitFor(async () => (await list()).items.some((m) => m.id === id), 5000, 'the message in the list');
    const page = await list();
    const m = page.items.find((x) => x.id === id)!;
    assert.equal(m.status, 'delivered');
    assert.equal(m.subject, 'quarterly report');
    assert.equal(m.from, 'alice@example.org');
    assert.deepEqual(m.rcptTo, ['bob@sync.test']);
    assert.equal(m.route, 'sync');
    assert.equal(m.attachments, 1);
    assert.match(m.reply, /^250 2\.0\.0 Ok: queued as /);

    // Searches: each field narrows, a miss finds nothing.
    assert.ok((await list('?rcpt=BOB@sync.test')).items.some((x) => x.id === id), 'recipient, case-insensitive');
    assert.equal((await list('?rcpt=nobody@sync.test')).items.length, 0);
    assert.ok((await list('?from=sender@example.org')).items.some((x) => x.id === id), 'envelope sender');
    assert.ok((await list('?from=alice@example.org')).items.some((x) => x.id === id), 'header From');
    assert.ok((await list('?subject=quarterly')).items.some((x) => x.id === id));
    assert.equal((await list('?subject=quarterly%20weekly')).items.length, 0, 'every subject word must occur');
    assert.ok((await list('?q=report%20bob')).items.some((x) => x.id === id));
    assert.ok((await list('?route=sync&status=delivered')).items.some((x) => x.id === id));
    assert.equal((await list('?status=dead&rcpt=bob@sync.test')).items.length, 0);
    const future = new Date(Date.now() + 3_600_000).toISOString();
    assert.equal((await list(`?since=${encodeURIComponent(future)}`)).items.length, 0);
    assert.ok((await list(`?until=${encodeURIComponent(future)}&rcpt=bob@sync.test`)).items.some((x) => x.id === id));

    const detail = (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).json<MessageDetail>();
    assert.equal(detail.text?.trim(), 'See the attached page.');
    assert.ok(detail.headers.some(([n, v]) => n === 'Subject' && v === 'quarterly report'));
    // Encoded words (RFC 2047) are decoded for display; the .eml keeps them as sent.
    assert.ok(detail.headers.some(([n, v]) => n === 'Keywords' && v === 'Résumé trimestriel'), JSON.stringify(detail.headers));
    assert.deepEqual(detail.attachmentList.map((a) => [a.filename, a.contentType]), [['evil.html', 'text/html']]);
    assert.equal(detail.hasRaw, true);
    assert.equal(detail.hasEvent, true);
    assert.deepEqual(
      detail.attempts.map((a) => [a.target, a.via, a.outcome, a.httpStatus]),
      [['hook', 'sync', 'delivered', 200]],
    );
    assert.deepEqual(detail.targets, [{ target: 'hook', kind: 'webhook', required: true, status: 'delivered' }]);

    const raw = await consoleRequest(port, 'GET', `/api/v1/messages/${id}/raw`);
    assert.equal(raw.status, 200);
    assert.match(String(raw.headers['content-disposition']), /^attachment; filename="[0-9A-Z]{20}\.eml"/);
    assert.equal(raw.headers['x-content-type-options'], 'nosniff');
    assert.match(String(raw.headers['content-security-policy']), /^sandbox/);
    assert.match(raw.body.toString(), /^Return-Path: <sender@example\.org>\r\nReceived: /);
    assert.match(raw.body.toString(), /Subject: quarterly report/);

    const att = await consoleRequest(port, 'GET', `/api/v1/messages/${id}/attachments/0`);
    assert.equal(att.status, 200);
    assert.equal(att.body.toString(), '<script>alert(1)</script>');
    assert.match(String(att.headers['content-disposition']), /^attachment; filename="evil\.html"/);
    assert.equal(att.headers['x-content-type-options'], 'nosniff');
    assert.match(String(att.headers['content-security-policy']), /^sandbox/);
    assert.equal((await consoleRequest(port, 'GET', `/api/v1/messages/${id}/attachments/1`)).status, 404);

    const ev = await consoleRequest(port, 'GET', `/api/v1/messages/${id}/event`);
    assert.equal(ev.status, 200);
    const event = ev.json<{ type: string; data: { id: string; subject: string } }>();
    assert.equal(event.type, 'email.received');
    assert.equal(event.data.id, id);
    // The stored event is what the receiver got.
    assert.deepEqual(JSON.parse(hook.got.at(-1)!.body.toString()), event);

    const timeline = (await consoleRequest(port, 'GET', `/api/v1/messages/${id}/attempts`)).json<{ attempts: unknown[]; targets: unknown[] }>();
    assert.equal(timeline.attempts.length, 1);
  });

  test('cursor pagination walks the list newest first without repeats', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(idOf((await sendOne(tg.port, 'page@sync.test', simpleMessage(`page ${i}`))).text));
    await waitFor(async () => (await list('?rcpt=page@sync.test')).items.length === 5, 5000, 'five messages');
    const seen: string[] = [];
    let cursor: string | null = '';
    let pages = 0;
    while (cursor !== null) {
      const p: MessagePage = await list(`?rcpt=page@sync.test&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...p.items.map((m) => m.id));
      cursor = p.next;
      pages++;
    }
    assert.equal(pages, 3);
    assert.deepEqual(seen, [...ids].reverse());
    assert.equal((await consoleRequest(port, 'GET', '/api/v1/messages?cursor=../../x')).status, 400);
    assert.equal((await consoleRequest(port, 'GET', '/api/v1/messages?limit=5000')).status, 400);
    assert.equal((await consoleRequest(port, 'GET', '/api/v1/messages?status=lost')).status, 400);
  });

  test('a message refused after DATA is recorded as refused with the reply the sender got', async () => {
    const reply = await sendOne(tg.port, 'bob@sync.test', simpleMessage('reject me'));
    assert.equal(reply.code, 550);
    await waitFor(async () => (await list('?status=refused')).items.length > 0, 5000, 'the refusal');
    const m = (await list('?status=refused')).items[0]!;
    assert.equal(m.subject, 'reject me');
    assert.match(m.reply, /^550 5\.7\.1 not wanted here/);
    const d = (await consoleRequest(port, 'GET', `/api/v1/messages/${m.id}`)).json<MessageDetail>();
    assert.equal(d.attempts[0]?.outcome, 'failed');
    assert.equal(d.attempts[0]?.code, 'PG_TARGET_REJECTED');
  });

  test('server-sent events announce a new message', async () => {
    let sent: Promise<unknown> = Promise.resolve();
    const events = await readEvents(
      port,
      (e) => e.event === 'added' && (e.data as { summary: MessageSummary }).summary.subject === 'live one',
      {},
      () => {
        sent = sendOne(tg.port, 'live@sync.test', simpleMessage('live one'));
      },
    );
    await sent;
    const added = events.find((e) => e.event === 'added')!.data as { type: string; summary: MessageSummary };
    assert.equal(added.type, 'added');
    assert.deepEqual(added.summary.rcptTo, ['live@sync.test']);
  });

  test('a dead queued item: retry after the receiver recovers delivers it; replay sends it to another target under its delivery id', async () => {
    const reply = await sendOne(tg.port, 'carol@q.test', simpleMessage('queued and refused'));
    assert.equal(reply.code, 250);
    const id = idOf(reply.text);
    const get = async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).json<MessageDetail>();
    await waitFor(async () => (await list(`?status=dead&rcpt=carol@q.test`)).items.some((m) => m.id === id), 10_000, 'dead status');
    let d = await get();
    // The receiver refused with a 200 and a structured answer: the status is what it said.
    assert.deepEqual(d.attempts.map((a) => [a.target, a.via, a.outcome, a.code, a.httpStatus]), [['qhook', 'queue', 'failed', 'PG_TARGET_REJECTED', 200]]);
    assert.equal(d.targets[0]?.status, 'dead');

    const s = await browserSession(port);
    qUp = true;
    const retry = await consoleRequest(port, 'POST', `/api/v1/messages/${id}/retry`, { headers: { ...s.headers, 'x-csrf-token': s.csrf } });
    assert.equal(retry.status, 202, retry.body.toString());
    assert.equal(retry.json<{ ok: boolean }>().ok, true);
    await waitFor(async () => (await get()).status === 'delivered', 10_000, 'delivered after retry');
    d = await get();
    assert.deepEqual(d.attempts.at(-1) && [d.attempts.at(-1)!.via, d.attempts.at(-1)!.outcome, d.attempts.at(-1)!.httpStatus], ['retry', 'delivered', 200]);
    const q = qhook.got.at(-1)!;
    assert.match(q.body.toString(), /queued and refused/);

    // Replay, from a form without script: the token in the body, then back to the page.
    const before = staging.got.length;
    const replay = await consoleRequest(port, 'POST', `/api/v1/messages/${id}/replay`, {
      headers: { ...s.headers, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ csrf: s.csrf, target: 'staging', redirect: `/messages/${id}` }).toString(),
    });
    assert.equal(replay.status, 303);
    assert.equal(replay.headers.location, `/messages/${id}`);
    await waitFor(() => staging.got.length > before, 10_000, 'the replay at staging');
    const got = staging.got.at(-1)!;
    assert.equal(got.headers['webhook-id'], deliveryId('sender@example.org', ['carol@q.test'], (JSON.parse(got.body.toString()) as { data: { raw: { sha256: string } } }).data.raw.sha256, 'staging'));
    await waitFor(async () => (await get()).attempts.some((a) => a.via === 'replay' && a.target === 'staging' && a.outcome === 'delivered' && a.httpStatus === 200), 10_000, 'the replay recorded');

    const unknown = await consoleRequest(port, 'POST', `/api/v1/messages/${id}/replay`, { headers: { ...s.headers, 'x-csrf-token': s.csrf, 'content-type': 'application/json' }, body: JSON.stringify({ target: 'nope' }) });
    assert.equal(unknown.status, 409);
    assert.equal(unknown.json<{ code: string }>().code, 'PG_CONSOLE_BAD_REQUEST');
  });

  test('CSRF: a state change without the session token, or from a foreign Origin, is refused', async () => {
    const id = idOf((await sendOne(tg.port, 'csrf@sync.test', simpleMessage('csrf target'))).text);
    await waitFor(async () => (await list('?rcpt=csrf@sync.test')).items.length === 1, 5000, 'listed');
    const s = await browserSession(port);
    const noToken = await consoleRequest(port, 'POST', `/api/v1/messages/${id}/delete`, { headers: s.headers });
    assert.equal(noToken.status, 403);
    assert.equal(noToken.json<{ code: string }>().code, 'PG_CONSOLE_CSRF');
    const foreign = await consoleRequest(port, 'DELETE', `/api/v1/messages/${id}`, { headers: { ...s.headers, origin: 'http://evil.example', 'x-csrf-token': s.csrf } });
    assert.equal(foreign.status, 403);
    const crossSite = await consoleRequest(port, 'DELETE', `/api/v1/messages/${id}`, { headers: { cookie: s.cookie, 'sec-fetch-site': 'cross-site', 'x-csrf-token': s.csrf } });
    assert.equal(crossSite.status, 403);
    const otherSession = await browserSession(port);
    const stolen = await consoleRequest(port, 'DELETE', `/api/v1/messages/${id}`, { headers: { ...otherSession.headers, 'x-csrf-token': s.csrf } });
    assert.equal(stolen.status, 403, 'a token is tied to its session');
    assert.equal((await list('?rcpt=csrf@sync.test')).items.length, 1, 'still there');

    // Delete, announced to live listeners.
    let deleted: Promise<unknown> = Promise.resolve();
    const events = await readEvents(port, (e) => e.event === 'deleted', {}, () => {
      deleted = consoleRequest(port, 'DELETE', `/api/v1/messages/${id}`, { headers: { ...s.headers, 'x-csrf-token': s.csrf } });
    });
    assert.equal(((await deleted) as { status: number }).status, 200);
    assert.deepEqual(events.at(-1)!.data, { type: 'deleted', id });
    assert.equal((await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).status, 404);
    assert.equal((await consoleRequest(port, 'GET', `/api/v1/messages/${id}/raw`)).status, 404);
    assert.equal((await list('?rcpt=csrf@sync.test')).items.length, 0);
  });

  test('a Host that is not this console (DNS rebinding) is refused', async () => {
    const r = await consoleRequest(port, 'GET', '/api/v1/messages', { headers: { host: `evil.example:${port}` } });
    assert.equal(r.status, 403);
    assert.equal(r.json<{ code: string }>().code, 'PG_CONSOLE_HOST');
    assert.equal((await consoleRequest(port, 'GET', '/api/v1/messages', { headers: { host: `localhost:${port}` } })).status, 200);
  });

  test('path tricks never reach a file: ids are checked before any lookup', async () => {
    // A real file next to the store, which a traversal would aim at.
    await writeFile(path.join(tg.dataDir, 'secret.txt'), 'top secret');
    const tricks = [
      '/api/v1/messages/..%2F..%2Fsecret.txt/raw',
      '/api/v1/messages/../secret.txt',
      '/api/v1/messages/%2e%2e/raw',
      '/api/v1/messages/%2e%2e%2f%2e%2e%2fsecret.txt/event',
      '/api/v1/messages/00000000000000000000/raw',
      `/api/v1/messages/${'A'.repeat(20)}%00/raw`,
      '/api/v1/messages/..\\..\\secret.txt/raw',
      '/api/v1/messages/x/attachments/..%2F..%2Fsecret.txt',
      '/api/v1/../../secret.txt',
      '/secret.txt',
    ];
    for (const p of tricks) {
      const r = await consoleRequest(port, 'GET', p);
      assert.ok([400, 404].includes(r.status), `${p}: ${r.status}`);
      assert.doesNotMatch(r.body.toString(), /top secret/, p);
    }
    const real = (await list()).items[0]!.id;
    for (const p of [`/api/v1/messages/${real}/attachments/-1`, `/api/v1/messages/${real}/attachments/0x1`, `/api/v1/messages/${real}/attachments/..%2F0`]) {
      assert.equal((await consoleRequest(port, 'GET', p)).status, 404, p);
    }
  });
});

describe('console timeline of optional targets', () => {
  test('an optional target that answers after the 250 shows up in the timeline when it ends', async () => {
    const fast = await startReceiver(() => ({ status: 200 }));
    const slow = await startReceiver(() => ({ status: 200, delayMs: 400 }));
    const tg = await startGateway({
      console: { listen: '127.0.0.1:0' },
      routes: [
        { name: 'opt', recipients: ['*@opt.test'], targets: [{ type: 'webhook', id: 'fast', url: fast.url }, { type: 'webhook', id: 'slow', url: slow.url, required: false }] },
      ],
    });
    try {
      const port = tg.gw.consoleAddress()!.port;
      const reply = await sendOne(tg.port, 'o@opt.test', simpleMessage('optional later'));
      assert.equal(reply.code, 250);
      assert.equal(slow.got.filter((g) => g.answeredAt).length, 0, 'the 250 did not wait for the optional target');
      const id = idOf(reply.text);
      const get = async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).json<MessageDetail>();
      await waitFor(async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).status === 200 && (await get()).attempts.length === 2, 5000, 'both attempts');
      const d = await get();
      assert.deepEqual(d.attempts.map((a) => [a.target, a.outcome]), [['fast', 'delivered'], ['slow', 'delivered']]);
      assert.deepEqual(d.targets.map((t) => [t.target, t.required, t.status]), [['fast', true, 'delivered'], ['slow', false, 'delivered']]);
      assert.equal(d.status, 'delivered');
    } finally {
      await tg.close();
      await fast.close();
      await slow.close();
    }
  });
});

describe('console authentication', () => {
  test('console.auth: token or basic user required, on loopback too; a bearer token needs no CSRF token', async () => {
    const hash = await hashPassword('correct horse');
    const hook = await startReceiver(() => ({ status: 200 }));
    const tg = await startGateway({
      console: { listen: '127.0.0.1:0', auth: { tokens: ['s3cret-token-for-tests'], users: [{ username: 'ops', password: hash }] } },
      routes: [{ name: 'sync', recipients: ['*@sync.test'], targets: [{ type: 'webhook', id: 'hook', url: hook.url }] }],
    });
    try {
      const port = tg.gw.consoleAddress()!.port;
      const anon = await consoleRequest(port, 'GET', '/api/v1/messages');
      assert.equal(anon.status, 401);
      assert.match(String(anon.headers['www-authenticate']), /^Basic realm=/);
      assert.equal((await consoleRequest(port, 'GET', '/', {})).status, 401, 'the pages too');
      assert.equal((await consoleRequest(port, 'GET', '/api/v1/messages', { headers: { authorization: 'Bearer wrong' } })).status, 401);
      const basicBad = Buffer.from('ops:wrong').toString('base64');
      assert.equal((await consoleRequest(port, 'GET', '/api/v1/messages', { headers: { authorization: `Basic ${basicBad}` } })).status, 401);
      const basic = Buffer.from('ops:correct horse').toString('base64');
      assert.equal((await consoleRequest(port, 'GET', '/api/v1/messages', { headers: { authorization: `Basic ${basic}` } })).status, 200);
      const bearer = { authorization: 'Bearer s3cret-token-for-tests' };
      assert.equal((await consoleRequest(port, 'GET', '/api/v1/messages', { headers: bearer })).status, 200);

      const id = idOf((await sendOne(tg.port, 'x@sync.test', simpleMessage('auth'))).text);
      await waitFor(async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`, { headers: bearer })).status === 200, 5000, 'listed');
      // A script with the token: no cookie, no CSRF token, and it works.
      const del = await consoleRequest(port, 'DELETE', `/api/v1/messages/${id}`, { headers: bearer });
      assert.equal(del.status, 200, del.body.toString());
      // Basic auth is what a browser re-sends by itself: it needs the CSRF token.
      const basicDel = await consoleRequest(port, 'POST', `/api/v1/messages/${id}/delete`, { headers: { authorization: `Basic ${basic}`, origin: `http://127.0.0.1:${port}` } });
      assert.equal(basicDel.status, 403);
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('postgate check, the command, exits 2 naming console.listen', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-check-'));
    try {
      const file = path.join(dir, 'postgate.yaml');
      await writeFile(file, 'routes:\n  - recipients: ["*@a.test"]\n    targets: [{ type: local }]\nconsole:\n  listen: "0.0.0.0:8025"\n');
      const r = spawnSync(process.execPath, [path.join(projectRoot(), 'dist/src/cli/index.js'), 'check', '--config', file], { encoding: 'utf8', env: { ...process.env, POSTGATE_CONFIG: '' } });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /console\.listen: 0\.0\.0\.0:8025 is not a loopback address: set console\.auth/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('postgate check refuses a console listening beyond loopback without console.auth', () => {
    const base = { routes: [{ recipients: ['*@a.test'], targets: [{ type: 'local' }] }] };
    assert.throws(
      () => validateConfig({ ...base, console: { listen: '0.0.0.0:8025' } }),
      (err: unknown) => err instanceof ConfigError && err.problems.some((p) => p.path === 'console.listen' && /not a loopback address/.test(p.message)),
    );
    assert.doesNotThrow(() => validateConfig({ ...base, console: { listen: '0.0.0.0:8025', auth: { tokens: ['t'] } } }));
    assert.doesNotThrow(() => validateConfig({ ...base, console: { listen: '127.0.0.1:8025' } }));
    assert.throws(() => validateConfig({ ...base, console: { listen: '127.0.0.1:8025', auth: {} } }), ConfigError);
  });
});

describe('console index unavailable', () => {
  test('a write that fails (fault injected) leaves mail flowing, /readyz degraded until a write succeeds again', async () => {
    const hook = await startReceiver(() => ({ status: 200 }));
    const tg = await startGateway({ console: { listen: '127.0.0.1:0' }, routes: [{ recipients: ['*@sync.test'], targets: [{ type: 'webhook', id: 'hook', url: hook.url }] }] });
    try {
      const db = (tg.gw.console as unknown as { db: { apply: (ops: unknown[]) => void } }).db;
      const apply = db.apply.bind(db);
      db.apply = () => {
        throw Object.assign(new Error('MDB_MAP_FULL: Environment mapsize limit reached'), { code: 'MDB_MAP_FULL' });
      };
      assert.equal((await sendOne(tg.port, 'bob@sync.test', simpleMessage('while broken'))).code, 250);
      const readyz = async () => (await (await fetch(`http://127.0.0.1:${tg.opsPort}/readyz`)).json()) as { status: string; degraded?: string[] };
      await waitFor(async () => ((await readyz()).degraded ?? []).some((d) => d.startsWith('console: console index write failed')), 5000, 'degraded');
      assert.equal((await readyz()).status, 'ready');
      assert.equal(hook.got.length, 1, 'delivered all the same');
      db.apply = apply;
      assert.equal((await sendOne(tg.port, 'bob@sync.test', simpleMessage('after the repair'))).code, 250);
      await waitFor(async () => (await readyz()).degraded === undefined, 5000, 'healthy again');
      const port = tg.gw.consoleAddress()!.port;
      const items = (await consoleRequest(port, 'GET', '/api/v1/messages')).json<MessagePage>().items;
      assert.deepEqual(items.map((m) => m.subject), ['after the repair'], 'the record of the failed batch is lost, not the mail');
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('mail still flows and /readyz reports the console degraded', async () => {
    const hook = await startReceiver(() => ({ status: 200 }));
    // A file where the index's directory should be: it cannot be opened.
    const tg0 = await startGateway({ routes: [{ recipients: ['*@sync.test'], targets: [{ type: 'webhook', id: 'hook', url: hook.url }] }] });
    const blocker = path.join(tg0.dataDir, 'not-a-dir');
    await writeFile(blocker, 'x');
    const tg = await startGateway(
      { console: { listen: '127.0.0.1:0' }, routes: [{ recipients: ['*@sync.test'], targets: [{ type: 'webhook', id: 'hook', url: hook.url }] }] },
      { consoleDir: path.join(blocker, 'console') },
    );
    try {
      const reply = await sendOne(tg.port, 'bob@sync.test', simpleMessage('still flows'));
      assert.equal(reply.code, 250);
      assert.equal(hook.got.length, 1);
      const ready = await fetch(`http://127.0.0.1:${tg.opsPort}/readyz`);
      assert.equal(ready.status, 200, 'degraded, not unready: mail flows');
      const body = (await ready.json()) as { status: string; degraded?: string[] };
      assert.equal(body.status, 'ready');
      assert.ok(body.degraded?.some((d) => /^console: console index unavailable: ENOTDIR/.test(d)), JSON.stringify(body));
      const api = await consoleRequest(tg.gw.consoleAddress()!.port, 'GET', '/api/v1/messages');
      assert.equal(api.status, 503);
      assert.equal(api.json<{ code: string }>().code, 'PG_CONSOLE_UNAVAILABLE');
      assert.ok(tg.logs.some((l) => l.code === 'PG_CONSOLE_UNAVAILABLE'));
    } finally {
      await tg.close();
      await tg0.close();
      await hook.close();
    }
  });
});
