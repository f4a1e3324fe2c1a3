/**
 * What the console records of messages a scanner judged (docs/console.md,
 * "What is recorded"), with a real rspamd: a message quarantined (delivered
 * to the route's quarantine target only) shows as quarantined with its
 * verdict and that target's attempt; a message refused after DATA shows as
 * refused with the reply the sender got and no delivery; a clean one as
 * delivered with its score.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';
import { gtube, installed, startRspamd, type Daemon } from './helpers/scanners.js';
import { consoleRequest } from './helpers/console.js';
import { waitFor } from './helpers/wait.js';
import type { MessageDetail } from '../src/console/types.js';
import { decide, scanRefusal } from '../src/scan/index.js';

const skip = installed('rspamd') ? false : 'rspamd is not installed (.ci/run installs it)';
const idOf = (text: string) => /queued as (\S+)/.exec(text)?.[1];

describe('console records of scanned messages', { skip }, () => {
  let rspamd: Daemon;
  let app: Receiver;
  let quarantine: Receiver;
  let tg: TestGateway;
  let port: number;

  before(async () => {
    rspamd = await startRspamd();
    app = await startReceiver(() => ({ status: 200 }));
    quarantine = await startReceiver(() => ({ status: 200 }));
    const scanned = (name: string, spam: string) => ({
      name,
      recipients: [`*@${name}.test`],
      targets: [{ type: 'webhook', id: 'app', url: app.url, timeout: '5s' }],
      scan: { spam, quarantine: [{ type: 'webhook', id: 'quarantine', url: quarantine.url, timeout: '5s' }] },
    });
    tg = await startGateway({
      console: { listen: '127.0.0.1:0' },
      scan: { scanners: [{ type: 'rspamd', url: rspamd.address, timeout: '3s' }], breaker: { failures: 100, cooldown: '1h' } },
      routes: [scanned('quarantine', 'quarantine'), scanned('reject', 'reject')],
    });
    port = tg.gw.consoleAddress()!.port;
  });
  after(async () => {
    await tg?.close();
    await rspamd?.stop();
    await app?.close();
    await quarantine?.close();
  });

  async function detailOf(subject: string): Promise<MessageDetail> {
    let id: string | undefined;
    await waitFor(
      async () => {
        const page = (await consoleRequest(port, 'GET', `/api/v1/messages?subject=${encodeURIComponent(subject)}`)).json<{ items: Array<{ id: string }> }>();
        id = page.items[0]?.id;
        return id !== undefined;
      },
      5000,
      `the console has "${subject}"`,
    );
    return (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).json<MessageDetail>();
  }

  test('quarantined: the status, the verdict and the quarantine target’s attempt; the app never had it', async () => {
    const r = await sendOne(tg.port, 'user@quarantine.test', gtube('console quarantined'));
    assert.equal(r.code, 250, r.raw);
    const d = await detailOf('console quarantined');
    assert.equal(d.id, idOf(r.text));
    assert.equal(d.status, 'quarantined');
    assert.equal(d.spam?.scanner, 'rspamd');
    assert.equal(d.spam?.action, 'quarantine');
    assert.ok((d.spam?.score ?? 0) >= (d.spam?.threshold ?? Infinity), 'GTUBE scores over the threshold');
    assert.deepEqual(d.targets.map((t) => t.target), ['quarantine']);
    assert.deepEqual(d.attempts.map((a) => [a.target, a.outcome]), [['quarantine', 'delivered']]);
    assert.equal(d.hasRaw, true);
    assert.equal(app.got.length, 0);
  });

  test('refused after DATA: the status and the reply the sender got; nothing delivered', async () => {
    const r = await sendOne(tg.port, 'user@reject.test', gtube('console refused'));
    assert.equal(r.code, 550, r.raw);
    const d = await detailOf('console refused');
    assert.equal(d.status, 'refused');
    assert.match(d.reply, /^550 5\.7\.1 /);
    assert.equal(d.reply, r.raw.trim().split(/\r?\n/).at(-1)!.replace(/^550-/, '550 '));
    assert.deepEqual(d.attempts, []);
    assert.equal(d.spam?.action, 'reject');
  });

  test('a clean message: delivered, with its score', async () => {
    const r = await sendOne(tg.port, 'user@reject.test', simpleMessage('console clean'));
    assert.equal(r.code, 250, r.raw);
    const d = await detailOf('console clean');
    assert.equal(d.status, 'delivered');
    assert.equal(typeof d.spam?.score, 'number');
    assert.ok(d.spam!.score < d.spam!.threshold);
    assert.deepEqual(d.attempts.map((a) => [a.target, a.outcome]), [['app', 'delivered']]);
  });
});

test('a virus refusal carries its verdict (and the spam verdict beside it) for the record', () => {
  const clam = { id: 'clamd', type: 'clamav' as const, scan: async () => ({ kind: 'virus' as const, infected: false, names: [] }), close: async () => undefined };
  const sa = { id: 'spamd', type: 'spamassassin' as const, scan: async () => ({ kind: 'virus' as const, infected: false, names: [] }), close: async () => undefined };
  const policy = { spam: 'tag', virus: 'reject', threshold: null, onError: 'tempfail' } as const;
  let thrown: unknown;
  try {
    decide(
      [
        { s: clam, r: { kind: 'virus', infected: true, names: ['Eicar-Signature'] } },
        { s: sa, r: { kind: 'spam', spam: false, score: 1.5, threshold: 5, symbols: [], message: '', scannerAction: 'no action' } },
      ],
      policy,
      false,
    );
  } catch (err) {
    thrown = err;
  }
  assert.equal((thrown as { code?: string }).code, 'PG_SCAN_VIRUS');
  assert.deepEqual(scanRefusal(thrown), {
    virus: { scanner: 'clamd', infected: true, names: ['Eicar-Signature'] },
    spam: { scanner: 'spamd', score: 1.5, threshold: 5, action: 'none' },
  });
  assert.equal(scanRefusal(new Error('other')), undefined);
});
