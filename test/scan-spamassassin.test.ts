/**
 * Spam scanning with a real SpamAssassin spamd (docs/scanning.md): a private
 * instance on loopback (-L, local rules only), started once for this file.
 * GTUBE under reject, tag and quarantine; a clean message with its score;
 * spamd made slow and stopped under onError tempfail and accept. With rspamd
 * configured as well, both run at once and the event carries the verdict of
 * the one that called the message spam.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestGateway } from './helpers/gateway.js';
import type { Receiver } from './helpers/receiver.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';
import { installed, startSpamd, type Daemon, startScanSuite, type ScanSuite, gtube, scannedEvents as events } from './helpers/scanners.js';

const skip = installed('spamd') ? false : 'spamd is not installed (.ci/run installs it)';

describe('spamassassin', { skip }, () => {
  let spamd: Daemon;
  let app: Receiver;
  let quarantine: Receiver;
  let tg: TestGateway;
  let suite: ScanSuite;
  before(async () => {
    suite = await startScanSuite({
      name: 'spamd',
      start: startSpamd,
      scanner: (d) => ({ type: 'spamassassin', id: 'sa', address: d.address, timeout: '4s' }),
      kind: 'spam',
      onErrorPolicy: 'reject',
    });
    ({ daemon: spamd, app, quarantine, tg } = suite);
  });
  after(() => suite?.close());

  test('GTUBE under reject: 550 5.7.1, nothing delivered', async () => {
    const r = await sendOne(tg.port, 'user@reject.test', gtube('gtube-reject'));
    assert.equal(r.code, 550, r.raw);
    assert.match(r.raw, /^550 5\.7\.1 Message rejected as spam: spam score above the threshold/);
    assert.ok(!events(app).some((e) => e.data.subject === 'gtube-reject'));
    assert.ok(!events(quarantine).some((e) => e.data.subject === 'gtube-reject'));
  });

  test('GTUBE under tag and quarantine; a clean message with its score', async () => {
    assert.equal((await sendOne(tg.port, 'user@tag.test', gtube('gtube-tag'))).code, 250);
    const tagged = events(app).find((e) => e.data.subject === 'gtube-tag');
    assert.equal(tagged?.data.spam?.scanner, 'sa');
    assert.equal(tagged?.data.spam?.action, 'tag');
    assert.ok(tagged!.data.spam!.score >= 1000, String(tagged?.data.spam?.score)); // GTUBE's 1000 plus local rules
    assert.equal(tagged?.data.spam?.threshold, 5);
    assert.ok(tagged?.data.spam?.symbols.includes('GTUBE'));
    assert.equal((await sendOne(tg.port, 'user@quarantine.test', gtube('gtube-quarantine'))).code, 250);
    assert.equal(events(quarantine).find((e) => e.data.subject === 'gtube-quarantine')?.data.spam?.action, 'quarantine');
    assert.ok(!events(app).some((e) => e.data.subject === 'gtube-quarantine'));
    assert.equal((await sendOne(tg.port, 'user@reject.test', simpleMessage('clean'))).code, 250);
    const clean = events(app).find((e) => e.data.subject === 'clean');
    assert.equal(clean?.data.spam?.action, 'none');
    assert.ok(clean!.data.spam!.score < 5, String(clean?.data.spam?.score));
  });

  test('spamd made slow, then stopped: tempfail 451 with nothing delivered, accept 250 with a note', async () => {
    spamd.pause();
    try {
      const t = await sendOne(tg.port, 'user@tempfail.test', simpleMessage('slow-tempfail'));
      assert.equal(t.code, 451, t.raw);
      assert.ok(!events(app).some((e) => e.data.subject === 'slow-tempfail'));
    } finally {
      spamd.resume();
    }
    await spamd.kill();
    const t = await sendOne(tg.port, 'user@tempfail.test', simpleMessage('stopped-tempfail'));
    assert.equal(t.code, 451, t.raw);
    const a = await sendOne(tg.port, 'user@accept.test', simpleMessage('stopped-accept'));
    assert.equal(a.code, 250, a.raw);
    assert.deepEqual(events(app).find((e) => e.data.subject === 'stopped-accept')?.data.parseErrors.map((p) => p.message), ['sa: connect']);
    assert.ok(!events(app).some((e) => e.data.subject === 'stopped-tempfail'));
  });
});
