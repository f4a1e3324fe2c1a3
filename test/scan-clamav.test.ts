/**
 * Virus scanning with a real clamd (docs/scanning.md): a private instance on
 * a Unix socket with a signature database this test writes (freshclam cannot
 * download here): the EICAR test string and a pattern of our own. An
 * infected attachment, also inside a deflated zip, is refused with 554 5.7.1
 * under reject; tag and quarantine deliver as configured; clamd made slow or
 * stopped gives the route's onError outcome.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestGateway } from './helpers/gateway.js';
import type { Receiver } from './helpers/receiver.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';
import { assertSlowScanner, EICAR, installed, messageWithAttachment, startClamd, TEST_MALWARE, zipOf, type Daemon, startScanSuite, type ScanSuite, scannedEvents as events } from './helpers/scanners.js';

const skip = installed('clamd') ? false : 'clamd is not installed (.ci/run installs it)';

describe('clamav', { skip }, () => {
  let clamd: Daemon;
  let app: Receiver;
  let quarantine: Receiver;
  let tg: TestGateway;
  let suite: ScanSuite;
  before(async () => {
    suite = await startScanSuite({
      name: 'clamd',
      start: startClamd,
      scanner: (d) => ({ type: 'clamav', id: 'clam', address: d.address, timeout: '1s' }),
      kind: 'virus',
      onErrorPolicy: 'reject',
    });
    ({ daemon: clamd, app, quarantine, tg } = suite);
  });
  after(() => suite?.close());

  test('EICAR attachment under reject: 554 5.7.1 naming the signature, nothing delivered', async () => {
    const r = await sendOne(tg.port, 'user@reject.test', messageWithAttachment('eicar.com', Buffer.from(EICAR, 'latin1'), 'eicar-reject'));
    assert.equal(r.code, 554, r.raw);
    assert.match(r.raw, /^554 5\.7\.1 Message rejected: virus found \(Postgate\.Test\.Eicar(\.UNOFFICIAL)?\)/);
    assert.ok(!events(app).some((e) => e.data.subject === 'eicar-reject'));
    assert.ok(!events(quarantine).some((e) => e.data.subject === 'eicar-reject'));
  });

  test('the test pattern inside a deflated zip under reject: 554 5.7.1 (clamd opened the archive)', async () => {
    const zip = zipOf('report.txt', Buffer.from(`quarterly numbers\n${TEST_MALWARE}\n`, 'latin1'));
    // Deflated: the pattern is not in the message's bytes, only in the archive's content.
    assert.ok(!zip.includes(Buffer.from(TEST_MALWARE)));
    const r = await sendOne(tg.port, 'user@reject.test', messageWithAttachment('report.zip', zip, 'zip-reject'));
    assert.equal(r.code, 554, r.raw);
    assert.match(r.raw, /Postgate\.Test\.Pattern/);
  });

  test('tag delivers with virus {infected, names}; quarantine only to the quarantine target', async () => {
    const t = await sendOne(tg.port, 'user@tag.test', messageWithAttachment('eicar.com', Buffer.from(EICAR, 'latin1'), 'eicar-tag'));
    assert.equal(t.code, 250, t.raw);
    const ev = events(app).find((e) => e.data.subject === 'eicar-tag');
    assert.equal(ev?.data.virus?.scanner, 'clam');
    assert.equal(ev?.data.virus?.infected, true);
    assert.match(ev!.data.virus!.names[0]!, /^Postgate\.Test\.Eicar/);
    const q = await sendOne(tg.port, 'user@quarantine.test', messageWithAttachment('eicar.com', Buffer.from(EICAR, 'latin1'), 'eicar-quarantine'));
    assert.equal(q.code, 250, q.raw);
    assert.equal(events(quarantine).find((e) => e.data.subject === 'eicar-quarantine')?.data.virus?.infected, true);
    assert.ok(!events(app).some((e) => e.data.subject === 'eicar-quarantine'));
  });

  test('a clean message passes reject with virus {infected: false}', async () => {
    const r = await sendOne(tg.port, 'user@reject.test', messageWithAttachment('notes.txt', Buffer.from('nothing to see\n'), 'clean-attachment'));
    assert.equal(r.code, 250, r.raw);
    const ev = events(app).find((e) => e.data.subject === 'clean-attachment');
    assert.deepEqual(ev?.data.virus, { scanner: 'clam', infected: false, names: [] });
    assert.equal(ev?.data.spam, null);
  });

  test('a 2 MB message streams through INSTREAM in chunks and is judged', async () => {
    const big = Buffer.alloc(2 * 1024 * 1024, 'a');
    Buffer.from(TEST_MALWARE).copy(big, big.length - 100);
    const r = await sendOne(tg.port, 'user@reject.test', messageWithAttachment('big.bin', big, 'big-infected'));
    assert.equal(r.code, 554, r.raw);
  });

  test('clamd made slow: tempfail 451 with nothing delivered, accept delivers with virus null and a note', async () => {
    await assertSlowScanner(suite, 'virus', 'clam: timeout');
  });

  test('clamd stopped: tempfail 451, accept 250 with a connect note; started again: verdicts again', async () => {
    await clamd.kill();
    const r = await sendOne(tg.port, 'user@tempfail.test', simpleMessage('stopped-tempfail'));
    assert.equal(r.code, 451, r.raw);
    const a = await sendOne(tg.port, 'user@accept.test', simpleMessage('stopped-accept'));
    assert.equal(a.code, 250, a.raw);
    assert.deepEqual(events(app).find((e) => e.data.subject === 'stopped-accept')?.data.parseErrors.map((p) => p.message), ['clam: connect']);
    assert.ok(!events(app).some((e) => e.data.subject === 'stopped-tempfail'));
    await clamd.start();
    const back = await sendOne(tg.port, 'user@tempfail.test', messageWithAttachment('eicar.com', Buffer.from(EICAR, 'latin1'), 'back'));
    assert.equal(back.code, 554, back.raw);
  });
});
