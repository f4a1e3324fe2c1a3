/**
 * A running gateway picks up what `postgate queue retry` and `replay` put
 * into its spool within queue.rescanInterval, also when nothing else is
 * queued (docs/queue.md). On the real clock, with real processes: the
 * gateway, the CLI and a node:http receiver. Before the fix an idle worker
 * armed no timer at all, and a revived item waited for the next unrelated
 * message.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startGateway } from './helpers/gateway.js';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { startReceiver } from './helpers/receiver.js';
import { queueCli } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';

const subjectOf = (body: Buffer) => /"subject":"([^"]*)"/.exec(body.toString('utf8'))?.[1];

describe('queue: an idle gateway picks up revived and replayed items', () => {
  test('a dead letter revived by `postgate queue retry`, then a copy made by `queue replay`, each delivered within queue.rescanInterval with nothing else queued', async () => {
    // The receiver refuses (a JSON reject: dead letter at once) until told otherwise.
    let accept = false;
    const hook = await startReceiver(() => (accept ? { status: 204 } : { status: 200, json: { action: 'reject' } }));
    const spool = await mkdtemp(path.join(os.tmpdir(), 'postgate-idle-'));
    const RESCAN = 1000;
    const tg = await startGateway({
      queue: { path: spool, rescanInterval: `${RESCAN}ms`, retry: { initialDelay: '10m' } },
      routes: [
        {
          name: 'idle',
          recipients: ['*@q.test'],
          mode: 'queue',
          targets: [
            { type: 'webhook', id: 'hook', url: hook.url },
            { type: 'webhook', id: 'staging', url: hook.url, required: false, when: { header: 'X-Never-Present' } },
          ],
        },
      ],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.example');
      assert.equal((await sendMail(c, 'sender@example.org', ['x@q.test'], simpleMessage('revive me'))).data?.code, 250);
      c.close();
      await waitFor(async () => (await readdir(path.join(spool, 'dead'))).length === 1, 10_000, 'the dead letter');
      assert.equal(hook.got.length, 1, 'refused once');
      // Nothing is queued any more: the worker is idle from here on.
      assert.deepEqual(await readdir(path.join(spool, 'active')), []);
      await new Promise((r) => setTimeout(r, RESCAN * 1.5)); // past a rescan with nothing to find

      accept = true;
      // replay: a copy of the dead letter for another configured target
      const replayed = await queueCli(['replay', '--spool', spool, '--target', 'staging', '--rcpt', 'x@q.test']);
      assert.equal(replayed.code, 0, replayed.err);
      await waitFor(() => hook.got.length === 2, 20 * RESCAN, 'the replayed copy to be delivered by the idle gateway');
      assert.equal(subjectOf(hook.got[1]!.body), 'revive me');
      assert.notEqual(hook.got[1]!.headers['webhook-id'], hook.got[0]!.headers['webhook-id'], "the copy has the other target's delivery id");
      await waitFor(async () => (await readdir(path.join(spool, 'active'))).length === 0, 5000, 'the delivered copy to leave the spool');
      await new Promise((r) => setTimeout(r, RESCAN * 1.5)); // idle again, past another rescan

      // retry: the dead letter itself, revived
      const retried = await queueCli(['retry', '--spool', spool]);
      assert.equal(retried.code, 0, retried.err);
      await waitFor(() => hook.got.length === 3, 20 * RESCAN, 'the revived item to be delivered by the idle gateway');
      assert.equal(subjectOf(hook.got[2]!.body), 'revive me');
      assert.equal(hook.got[2]!.headers['webhook-id'], hook.got[0]!.headers['webhook-id'], 'the revived item keeps its delivery id');
      await waitFor(async () => (await readdir(path.join(spool, 'active'))).length === 0, 5000, 'the delivered item to leave the spool');
      assert.deepEqual(await readdir(path.join(spool, 'dead')), []);
    } finally {
      await tg.close().catch(() => undefined);
      await hook.close();
      await rm(spool, { recursive: true, force: true });
    }
  });
});
