/**
 * Spam scanning with a real rspamd (docs/scanning.md): a private instance on
 * loopback, started once for this file. GTUBE under each policy (reject →
 * 550 5.7.1, tag → delivered with the verdict, quarantine → only the
 * quarantine target), a clean message with its score in the event, and
 * rspamd made slow and stopped under each onError, with the breaker seen in
 * /readyz and /metrics. Nothing is lost: a 451 leaves the message with the
 * sender, and no target saw it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { listFiles, startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { RawSmtp, sendMail, sendOne, simpleMessage } from './helpers/smtp-client.js';
import { assertSlowScanner, GTUBE, installed, startRspamd, type Daemon, startScanSuite, type ScanSuite, gtube, scannedEvents as events } from './helpers/scanners.js';

const skip = installed('rspamd') ? false : 'rspamd is not installed (.ci/run installs it)';

describe('rspamd', { skip }, () => {
  let rspamd: Daemon;
  let app: Receiver;
  let quarantine: Receiver;
  let sendgrid: Receiver;
  let tg: TestGateway;
  let archive: string;
  let suite: ScanSuite;
  before(async () => {
    archive = await mkdtemp(path.join(os.tmpdir(), 'postgate-archive-'));
    sendgrid = await startReceiver(() => ({ status: 200 }));
    suite = await startScanSuite({
      name: 'rspamd',
      start: startRspamd,
      scanner: (d) => ({ type: 'rspamd', url: d.address, timeout: '1500ms' }),
      kind: 'spam',
      onErrorPolicy: 'tag',
      scan: { header: true, breaker: { failures: 3, cooldown: '1h' } },
      extraRoutes: [
        { name: 'archive', recipients: ['*@archive.test'], targets: [{ type: 'local', path: archive }], scan: { spam: 'tag' } },
        // SendGrid's parsed format carries the verdict as spam_score / spam_report (docs/formats.md).
        { name: 'sendgrid', recipients: ['*@sendgrid.test'], targets: [{ type: 'webhook', url: sendgrid.url, timeout: '5s', format: 'sendgrid' }], scan: { spam: 'tag' } },
      ],
    });
    ({ daemon: rspamd, app, quarantine, tg } = suite);
  });
  after(async () => {
    await suite?.close();
    await sendgrid?.close();
    if (archive) await rm(archive, { recursive: true, force: true });
  });

  test('the sendgrid format carries the verdict as spam_score and spam_report', async () => {
    const r = await sendOne(tg.port, 'user@sendgrid.test', gtube('gtube-sendgrid'));
    assert.equal(r.code, 250, r.raw);
    const got = sendgrid.got[0]!;
    assert.match(String(got.headers['content-type']), /^multipart\/form-data/);
    const form = await new Request('http://x/', { method: 'POST', headers: { 'content-type': String(got.headers['content-type']) }, body: got.body }).formData();
    const report = /^rspamd: score (\S+), required (\S+); (.*)$/.exec(String(form.get('spam_report')));
    assert.ok(report, String(form.get('spam_report')));
    assert.equal(Number(form.get('spam_score')), Number(report[1]));
    assert.ok(Number(report[1]) >= Number(report[2]), 'GTUBE scores over the required score');
    assert.match(report[3]!, /GTUBE/);
  });

  test('GTUBE under reject: 550 5.7.1 with rspamd\'s reason, nothing delivered', async () => {
    const before = app.got.length + quarantine.got.length;
    const r = await sendOne(tg.port, 'user@reject.test', gtube('gtube-reject'));
    assert.equal(r.code, 550, r.raw);
    assert.match(r.raw, /^550 5\.7\.1 Message rejected as spam: Gtube pattern/);
    assert.equal(app.got.length + quarantine.got.length, before);
    assert.ok(tg.logs.some((l) => l.msg === 'transaction not accepted' && l.code === 'PG_SCAN_SPAM'));
  });

  test('GTUBE under tag: delivered to the app with the verdict and the X-Spam headers', async () => {
    const r = await sendOne(tg.port, 'user@tag.test', gtube('gtube-tag'));
    assert.equal(r.code, 250, r.raw);
    const ev = events(app).find((e) => e.data.subject === 'gtube-tag');
    assert.ok(ev, 'the app got the message');
    assert.equal(ev.data.spam?.scanner, 'rspamd');
    assert.equal(ev.data.spam?.action, 'tag');
    assert.ok(ev.data.spam!.score >= ev.data.spam!.threshold, `score ${ev.data.spam!.score} / ${ev.data.spam!.threshold}`);
    assert.ok(ev.data.spam?.symbols.includes('GTUBE'), String(ev.data.spam?.symbols));
    assert.equal(ev.data.headers[0]?.name, 'X-Spam-Flag');
    assert.equal(ev.data.headers[0]?.value, 'YES');
    assert.ok(!events(quarantine).some((e) => e.data.subject === 'gtube-tag'));
  });

  test('scan.header: the stored copy (.eml) carries the X-Spam fields above the trace headers', async () => {
    const r = await sendOne(tg.port, 'user@archive.test', gtube('gtube-archive'));
    assert.equal(r.code, 250, r.raw);
    const eml = (await listFiles(archive)).find((f) => f.endsWith('.eml'));
    assert.ok(eml, 'the local store has the message');
    const text = await readFile(path.join(archive, eml), 'latin1');
    assert.match(text, /^X-Spam-Flag: YES\r\nX-Spam-Score: \d+\.\d\d\r\nX-Spam-Status: Yes, score=\S+ required=\S+ scanner=rspamd\r\nReturn-Path: <sender@example\.org>\r\n/);
    assert.ok(text.includes(GTUBE));
  });

  test('GTUBE under quarantine: only the quarantine target has it, never the app', async () => {
    const r = await sendOne(tg.port, 'user@quarantine.test', gtube('gtube-quarantine'));
    assert.equal(r.code, 250, r.raw);
    const ev = events(quarantine).find((e) => e.data.subject === 'gtube-quarantine');
    assert.equal(ev?.data.spam?.action, 'quarantine');
    assert.ok(!events(app).some((e) => e.data.subject === 'gtube-quarantine'));
  });

  test('a clean message passes every policy with its score in the event', async () => {
    for (const name of ['reject', 'quarantine']) {
      const r = await sendOne(tg.port, `user@${name}.test`, simpleMessage(`clean-${name}`));
      assert.equal(r.code, 250, r.raw);
      const ev = events(app).find((e) => e.data.subject === `clean-${name}`);
      assert.ok(ev, `clean message of ${name} reached the app`);
      assert.equal(ev.data.spam?.action, 'none');
      assert.equal(typeof ev.data.spam?.score, 'number');
      assert.ok(ev.data.spam!.score < ev.data.spam!.threshold);
      assert.equal(ev.data.headers.find((h) => h.name === 'X-Spam-Flag')?.value, 'NO');
    }
  });

  test('over its Unix socket (scan.scanners[].socket): the same verdict, the URL giving only path and Host', async () => {
    assert.ok(rspamd.socket);
    const viaSocket = await startGateway({
      // Nothing listens on this host's port: only the socket can answer.
      scan: { scanners: [{ type: 'rspamd', url: 'http://rspamd.invalid:9', socket: rspamd.socket, timeout: '5s' }] },
      routes: [{ name: 'tag', recipients: ['*@tag.test'], targets: [{ type: 'webhook', url: app.url }] }],
    });
    try {
      const r = await sendOne(viaSocket.port, 'user@tag.test', gtube('gtube-socket'));
      assert.equal(r.code, 250, r.raw);
      const ev = events(app).find((e) => e.data.subject === 'gtube-socket');
      assert.equal(ev?.data.spam?.action, 'tag');
      assert.ok(ev?.data.spam?.symbols.includes('GTUBE'), String(ev?.data.spam?.symbols));
    } finally {
      await viaSocket.close();
    }
  });

  test('rspamd made slow: tempfail answers 451 and delivers nothing; accept delivers with spam null and a note', async () => {
    await assertSlowScanner(suite, 'spam', 'rspamd: timeout');
  });

  test('rspamd stopped: 451 under tempfail, the breaker opens, /readyz and /metrics show it', async () => {
    await rspamd.kill();
    try {
      // Two failures so far came from the slow test; one more opens the breaker (failures: 3).
      const r = await sendOne(tg.port, 'user@tempfail.test', simpleMessage('stopped-tempfail'));
      assert.equal(r.code, 451, r.raw);
      assert.ok(tg.logs.some((l) => l.msg === 'scanner marked down' && l.scanner === 'rspamd'));
      const ready = await fetch(`http://127.0.0.1:${tg.opsPort}/readyz`);
      assert.equal(ready.status, 503);
      assert.deepEqual(((await ready.json()) as { reasons: string[] }).reasons, ['scanner rspamd down']);
      // While down, no attempt and no wait: onError at once — under tempfail
      // already at RCPT, so the sender does not send the body for nothing.
      const t0 = Date.now();
      const c = await RawSmtp.connect(tg.port);
      try {
        await c.read();
        await c.cmd('EHLO client.example');
        const again = await sendMail(c, 'sender@example.org', ['user@tempfail.test'], simpleMessage('down-tempfail'));
        assert.equal(again.data, null, 'no DATA: the only recipient was deferred');
        assert.match(again.rcpt[0]!.raw, /^451 4\.3\.0 Content scan unavailable/);
        // onError: accept still takes the mail, delivered without a verdict.
        const accepted = await sendMail(c, 'sender@example.org', ['user@accept.test'], simpleMessage('down-accept'));
        assert.equal(accepted.rcpt[0]!.code, 250, accepted.rcpt[0]!.raw);
        assert.equal(accepted.data?.code, 250, accepted.data?.raw);
        // Postmaster mail is never scanned: still accepted at RCPT.
        assert.equal((await c.cmd('MAIL FROM:<sender@example.org>')).code, 250);
        assert.equal((await c.cmd('RCPT TO:<postmaster@tempfail.test>')).code, 250);
        await c.cmd('RSET');
      } finally {
        c.close();
      }
      assert.ok(Date.now() - t0 < 1000, `answered after ${Date.now() - t0} ms`);
      assert.ok(tg.logs.some((l) => l.msg === 'recipient refused' && l.code === 'PG_SCAN_UNAVAILABLE' && l.rcpt === 'user@tempfail.test'));
      assert.deepEqual(events(app).find((e) => e.data.subject === 'down-accept')?.data.parseErrors.map((p) => p.message), ['rspamd: down']);
      const metrics = await (await fetch(`http://127.0.0.1:${tg.opsPort}/metrics`)).text();
      assert.match(metrics, /postgate_scanner_down\{scanner="rspamd"\} 1/);
      assert.match(metrics, /postgate_scan_verdicts_total\{scanner="rspamd",verdict="spam"\} [1-9]/);
      assert.match(metrics, /postgate_scan_verdicts_total\{scanner="rspamd",verdict="clean"\} [1-9]/);
      assert.match(metrics, /postgate_scan_verdicts_total\{scanner="rspamd",verdict="error"\} 3/);
      assert.match(metrics, /postgate_scan_verdicts_total\{scanner="rspamd",verdict="down"\} 1/);
      assert.match(metrics, /postgate_scan_duration_seconds_count\{scanner="rspamd"\} [1-9]/);
      assert.ok(!events(app).some((e) => e.data.subject === 'stopped-tempfail' || e.data.subject === 'down-tempfail'));
    } finally {
      await rspamd.start();
    }
  });
});
