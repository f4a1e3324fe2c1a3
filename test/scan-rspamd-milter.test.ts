/**
 * rspamd over milter (scan.scanners[].protocol: milter, docs/scanning.md):
 * a private rspamd with a proxy worker in milter mode, reached through a
 * counting TCP proxy so the test sees how many connections postgate opened.
 * GTUBE under each policy, a clean message with its score and symbols,
 * several messages over one connection, the Unix socket, and rspamd made
 * slow or stopped mid-way under each onError, then back.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway } from './helpers/gateway.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import type { Receiver } from './helpers/receiver.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';
import { assertSlowScanner, installed, startRspamd, type Daemon, startScanSuite, type ScanSuite, gtube, scannedEvents as events } from './helpers/scanners.js';
import type { TestGateway } from './helpers/gateway.js';

const skip = installed('rspamd') ? false : 'rspamd is not installed (.ci/run installs it)';

describe('rspamd over milter', { skip }, () => {
  let rspamd: Daemon;
  let app: Receiver;
  let quarantine: Receiver;
  let tg: TestGateway;
  let suite: ScanSuite;
  let counter: FaultProxy;
  before(async () => {
    suite = await startScanSuite({
      name: 'rspamd (milter)',
      start: () => startRspamd({ milter: true }),
      scanner: async (d) => {
        counter = await startFaultProxy(Number(d.milter!.split(':')[1]));
        return { type: 'rspamd', protocol: 'milter', address: new URL(counter.endpoint).host, connections: 4, timeout: '1500ms' };
      },
      kind: 'spam',
      onErrorPolicy: 'tag',
      scan: { header: true },
    });
    ({ daemon: rspamd, app, quarantine, tg } = suite);
  });
  after(async () => {
    await suite?.close();
    await counter?.close();
  });

  test('GTUBE under reject: 550 5.7.1 with rspamd\'s reason, nothing delivered', async () => {
    const before = app.got.length + quarantine.got.length;
    const r = await sendOne(tg.port, 'user@reject.test', gtube('gtube-reject'));
    assert.equal(r.code, 550, r.raw);
    assert.match(r.raw, /^550 5\.7\.1 Message rejected as spam: Gtube pattern/);
    assert.equal(app.got.length + quarantine.got.length, before);
    assert.ok(tg.logs.some((l) => l.msg === 'transaction not accepted' && l.code === 'PG_SCAN_SPAM'));
  });

  test('GTUBE under tag: delivered with the verdict (rspamd\'s reject score, as its HTTP answer gives it) and the X-Spam headers', async () => {
    const r = await sendOne(tg.port, 'user@tag.test', gtube('gtube-tag'));
    assert.equal(r.code, 250, r.raw);
    const ev = events(app).find((e) => e.data.subject === 'gtube-tag');
    assert.ok(ev, 'the app got the message');
    assert.equal(ev.data.spam?.scanner, 'rspamd');
    assert.equal(ev.data.spam?.action, 'tag');
    // rspamd stops at the test pattern before scoring: score = required score = its reject score.
    assert.equal(ev.data.spam?.score, 15);
    assert.equal(ev.data.spam?.threshold, 15);
    assert.equal(ev.data.headers[0]?.name, 'X-Spam-Flag');
    assert.equal(ev.data.headers[0]?.value, 'YES');
    assert.ok(!events(quarantine).some((e) => e.data.subject === 'gtube-tag'));
  });

  test('GTUBE under quarantine: only the quarantine target has it, never the app', async () => {
    const r = await sendOne(tg.port, 'user@quarantine.test', gtube('gtube-quarantine'));
    assert.equal(r.code, 250, r.raw);
    const ev = events(quarantine).find((e) => e.data.subject === 'gtube-quarantine');
    assert.equal(ev?.data.spam?.action, 'quarantine');
    assert.ok(!events(app).some((e) => e.data.subject === 'gtube-quarantine'));
  });

  test('a clean message passes every policy with its score and symbols (X-Spamd-Result) in the event', async () => {
    for (const name of ['reject', 'quarantine']) {
      const r = await sendOne(tg.port, `user@${name}.test`, simpleMessage(`clean-${name}`));
      assert.equal(r.code, 250, r.raw);
      const ev = events(app).find((e) => e.data.subject === `clean-${name}`);
      assert.ok(ev, `clean message of ${name} reached the app`);
      assert.equal(ev.data.spam?.action, 'none');
      assert.equal(typeof ev.data.spam?.score, 'number');
      assert.equal(ev.data.spam?.threshold, 15);
      assert.ok(ev.data.spam!.score < ev.data.spam!.threshold);
      // What rspamd matched for this message, read from its X-Spamd-Result.
      assert.ok(ev.data.spam!.symbols.includes('MIME_GOOD'), String(ev.data.spam!.symbols));
      assert.ok(ev.data.spam!.symbols.every((s) => /^[A-Z0-9_]+$/.test(s)), String(ev.data.spam!.symbols));
      assert.equal(ev.data.headers.find((h) => h.name === 'X-Spam-Flag')?.value, 'NO');
    }
  });

  test('several messages in a row go over one connection that stays open', async () => {
    // Earlier tests left connections open: the count must not grow over sequential messages.
    const opened = counter.connections;
    assert.ok(opened >= 1 && opened <= 4, `${opened} connections so far (pool of 4)`);
    for (let i = 0; i < 5; i++) {
      const r = await sendOne(tg.port, 'user@tag.test', i % 2 ? gtube(`row-${i}`) : simpleMessage(`row-${i}`));
      assert.equal(r.code, 250, r.raw);
    }
    assert.equal(counter.connections, opened, 'no new connection for five messages');
    const rows = events(app).filter((e) => e.data.subject.startsWith('row-'));
    assert.deepEqual(
      rows.map((e) => [e.data.subject, e.data.spam?.action]),
      [0, 1, 2, 3, 4].map((i) => [`row-${i}`, i % 2 ? 'tag' : 'none']),
      'each message its own verdict: nothing of one answer leaks into the next',
    );
  });

  test('over the proxy\'s Unix socket: the same verdicts', async () => {
    assert.ok(rspamd.milterSocket);
    const viaSocket = await startGateway({
      scan: { scanners: [{ type: 'rspamd', protocol: 'milter', address: rspamd.milterSocket, timeout: '5s' }] },
      routes: [{ name: 'tag', recipients: ['*@tag.test'], targets: [{ type: 'webhook', url: app.url }] }],
    });
    try {
      for (const [subject, body, action] of [['socket-gtube', gtube('socket-gtube'), 'tag'], ['socket-clean', simpleMessage('socket-clean'), 'none']] as const) {
        const r = await sendOne(viaSocket.port, 'user@tag.test', body);
        assert.equal(r.code, 250, r.raw);
        assert.equal(events(app).find((e) => e.data.subject === subject)?.data.spam?.action, action, subject);
      }
    } finally {
      await viaSocket.close();
    }
  });

  test('rspamd made slow: tempfail answers 451 within the scanner\'s timeout; accept delivers with spam null and a note', async () => {
    await assertSlowScanner(suite, 'spam', 'rspamd: timeout');
  });

  test('rspamd stopped mid-way: its open connections close, 451 under tempfail, accept without a verdict; back once it is started again', async () => {
    // A message first, so the pool holds open connections when rspamd goes.
    assert.equal((await sendOne(tg.port, 'user@tag.test', simpleMessage('before-stop'))).code, 250);
    await rspamd.kill();
    try {
      const r = await sendOne(tg.port, 'user@tempfail.test', simpleMessage('stopped-tempfail'));
      assert.equal(r.code, 451, r.raw);
      assert.match(r.raw, /^451 4\.3\.0 Content scan unavailable/);
      const a = await sendOne(tg.port, 'user@accept.test', simpleMessage('stopped-accept'));
      assert.equal(a.code, 250, a.raw);
      const ev = events(app).find((e) => e.data.subject === 'stopped-accept');
      assert.equal(ev?.data.spam, null);
      assert.deepEqual(ev?.data.parseErrors.map((p) => p.code), ['scan_unavailable']);
      assert.ok(!events(app).some((e) => e.data.subject === 'stopped-tempfail'));
    } finally {
      await rspamd.start();
    }
    const opened = counter.connections;
    const r = await sendOne(tg.port, 'user@tag.test', gtube('after-restart'));
    assert.equal(r.code, 250, r.raw);
    assert.equal(events(app).find((e) => e.data.subject === 'after-restart')?.data.spam?.action, 'tag');
    assert.ok(counter.connections > opened, 'a new connection to the restarted rspamd');
  });
});
