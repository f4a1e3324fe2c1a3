/**
 * The shared spool (queue.backend s3-sqs) against a local S3/SQS-compatible
 * server (fauxqs): the 250 once the objects and the work item are stored; the
 * item survives the instance that accepted it and is delivered by another;
 * retries through SQS visibility; dead letters in S3.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { startGateway } from './helpers/gateway.js';
import { startReceiver } from './helpers/receiver.js';
import { startS3, TEST_REGION, type LocalS3 } from './helpers/aws.js';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { waitFor } from './helpers/wait.js';
import { queueCli, serveChild } from './helpers/cli.js';
import { S3Spool } from '../src/queue/s3-spool.js';
import type { NewSpoolItem } from '../src/queue/spool.js';
import { MessageBytes } from '../src/message/bytes.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const subjectOf = (body: Buffer) => /"subject":"([^"]*)"/.exec(body.toString('utf8'))?.[1];

describe('queued mode with the S3 + SQS backend (fauxqs)', () => {
  let aws: LocalS3;
  let sqs: SQSClient;
  before(async () => {
    aws = await startS3();
    await aws.createBucket('spool');
    sqs = new SQSClient({ region: TEST_REGION, endpoint: aws.endpoint });
  });
  after(async () => {
    sqs.destroy();
    await aws.stop();
  });

  const createQueue = async (name: string) => (await sqs.send(new CreateQueueCommand({ QueueName: name }))).QueueUrl!;

  const keys = async (prefix: string) =>
    ((await aws.client.send(new ListObjectsV2Command({ Bucket: 'spool', Prefix: prefix }))).Contents ?? []).map((o) => o.Key!).sort();

  const gatewayWith = async (queueUrl: string, hookUrl: string, prefix: string) =>
    startGateway({
      queue: {
        retry: { initialDelay: '500ms', maxDelay: '1s', maxAge: '1h' },
        backend: { type: 's3-sqs', bucket: 'spool', prefix, queueUrl, endpoint: aws.endpoint, region: TEST_REGION, forcePathStyle: true, pollWait: '1s' },
      },
      routes: [{ recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hookUrl, timeout: '2s' }] }],
    });

  test('accepted by one instance while the receiver is down, delivered by another after the first is gone', async () => {
    const QueueUrl = await createQueue('postgate-shared');
    let up = false;
    const hook = await startReceiver(() => (up ? { status: 204 } : { status: 503 }));
    const a = await gatewayWith(QueueUrl, hook.url, 'shared/');
    let b: Awaited<ReturnType<typeof gatewayWith>> | null = null;
    try {
      const c = await RawSmtp.connect(a.port);
      await c.read();
      await c.cmd('EHLO c.example');
      const { data } = await sendMail(c, 's@example.org', ['x@q.test'], simpleMessage('shared spool'));
      c.close();
      assert.equal(data?.code, 250);
      const itemKeys = await keys('shared/items/');
      assert.deepEqual(itemKeys.map((k) => k.split('/').pop()).filter((f) => f !== 'state.json').sort(), ['event.json', 'meta.json']);
      assert.equal((await keys('shared/messages/')).length, 1, 'the message, stored once');
      await waitFor(() => hook.got.length >= 1, 10_000, 'a first attempt');
      await a.close();
      up = true;
      b = await gatewayWith(QueueUrl, hook.url, 'shared/');
      await waitFor(() => hook.got.some((g) => subjectOf(g.body) === 'shared spool' && up) && hook.got.length >= 2, 15_000, 'delivery by the second instance');
      await waitFor(async () => (await keys('shared/items/')).length === 0 && (await keys('shared/messages/')).length === 0, 10_000, 'objects removed after delivery');
      assert.equal(new Set(hook.got.map((g) => g.headers['webhook-id'])).size, 1, 'every attempt, on either instance, has the same webhook-id');
      assert.ok(b.logs.some((l) => l.msg === 'queued delivery succeeded'));
    } finally {
      await a.close().catch(() => undefined);
      await b?.close();
      await hook.close();
    }
  });

  test('an instance killed (SIGKILL) while its attempt waits for the receiver: the item comes back after its visibility timeout and another instance delivers it', { timeout: 120_000 }, async () => {
    const QueueUrl = await createQueue('postgate-kill');
    // The first request is held unanswered (the instance dies meanwhile); later ones get 204.
    const hook = await startReceiver(() => (hook.got.length <= 1 ? { status: 204, delayMs: 60_000 } : { status: 204 }));
    const doc = {
      queue: {
        retry: { initialDelay: '500ms', maxDelay: '1s', maxAge: '1h' },
        backend: { type: 's3-sqs', bucket: 'spool', prefix: 'kill/', queueUrl: QueueUrl, endpoint: aws.endpoint, region: TEST_REGION, forcePathStyle: true, pollWait: '1s' },
      },
      // The visibility timeout of a received item is the deadline + 30 s.
      delivery: { deadline: '1s' },
      routes: [{ recipients: ['*@k.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url, timeout: '1s' }] }],
    };
    const cwd = await mkdtemp(path.join(os.tmpdir(), 'postgate-kill-'));
    const config = path.join(cwd, 'postgate.yaml');
    await writeFile(config, JSON.stringify({ ...doc, smtp: { listen: '127.0.0.1:0', hostname: 'mx.test.local', earlyTalker: { mode: 'off' } }, http: false, storage: { path: './data' } }));
    const child = await serveChild(config, cwd);
    let b: Awaited<ReturnType<typeof startGateway>> | null = null;
    try {
      const c = await RawSmtp.connect(child.port);
      await c.read();
      await c.cmd('EHLO c.example');
      assert.equal((await sendMail(c, 's@example.org', ['x@k.test'], simpleMessage('killed mid-delivery'))).data?.code, 250);
      c.close();
      await waitFor(() => hook.got.length === 1, 10_000, 'the first attempt reaching the receiver');
      child.proc.kill('SIGKILL');
      const killedAt = Date.now();
      b = await startGateway(doc);
      await waitFor(() => hook.got.length >= 2, 60_000, 'the item delivered by the other instance');
      assert.ok(Date.now() - killedAt >= 25_000, 'not before the visibility timeout of the dead instance\'s receive');
      assert.equal(subjectOf(hook.got[1]!.body), 'killed mid-delivery');
      assert.equal(hook.got[1]!.headers['webhook-id'], hook.got[0]!.headers['webhook-id'], 'the same delivery id: the receiver can tell the repeat');
      await waitFor(async () => (await keys('kill/items/')).length === 0 && (await keys('kill/messages/')).length === 0, 10_000, 'nothing left stored');
    } finally {
      child.proc.kill('SIGKILL');
      await b?.close();
      await hook.close();
      await rm(cwd, { recursive: true, force: true });
    }
  });

  test('postgate queue on the S3 + SQS backend: list, show, replay and retry a dead letter, purge a waiting item; the oldest item\'s age is measured', async () => {
    const QueueUrl = await createQueue('postgate-cli');
    let mode: 'reject' | 'down' | 'up' = 'reject';
    const hook = await startReceiver(() => (mode === 'reject' ? { status: 200, json: { action: 'reject', message: 'no' } } : mode === 'down' ? { status: 503 } : { status: 204 }));
    const copy = await startReceiver(() => ({ status: 204 }));
    const doc = {
      queue: {
        retry: { initialDelay: '500ms', maxDelay: '1s', maxAge: '1h' },
        rescanInterval: '500ms',
        backend: { type: 's3-sqs', bucket: 'spool', prefix: 'cli/', queueUrl: QueueUrl, endpoint: aws.endpoint, region: TEST_REGION, forcePathStyle: true, pollWait: '1s' },
      },
      routes: [
        { recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url, timeout: '2s' }] },
        { recipients: ['*@copy.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'copy', url: copy.url, timeout: '2s' }] },
      ],
    };
    const g = await startGateway(doc);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-cli-'));
    const config = path.join(dir, 'postgate.yaml');
    await writeFile(config, JSON.stringify({ ...doc, storage: { path: dir } }));
    const cli = (...args: string[]) => queueCli([...args, '--config', config]);
    const send = async (to: string, subject: string) => {
      const c = await RawSmtp.connect(g.port);
      await c.read();
      await c.cmd('EHLO c.example');
      const { data } = await sendMail(c, 's@example.org', [to], simpleMessage(subject));
      c.close();
      assert.equal(data?.code, 250);
    };
    const gauge = async (name: string) => {
      const text = await (await fetch(`http://127.0.0.1:${g.opsPort}/metrics`)).text();
      return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    };
    const oldest = () => gauge('postgate_queue_oldest_seconds');
    try {
      await send('x@q.test', 'to retry');
      await waitFor(async () => (await keys('cli/dead/')).length === 1, 10_000, 'a dead letter');
      mode = 'down';
      await send('y@q.test', 'to purge');
      await waitFor(() => hook.got.some((r) => subjectOf(r.body) === 'to purge'), 10_000, 'a first attempt of the waiting item');
      await waitFor(async () => (await oldest()) > 0, 10_000, 'the oldest item measured');
      await waitFor(async () => (await gauge('postgate_queue_dead_letters')) === 1, 10_000, 'the dead letter counted from the bucket');

      const listed = await cli('list', '--json');
      assert.equal(listed.code, 0, listed.err);
      const items = JSON.parse(listed.out) as Array<{ status: string; itemId: string; rcptTo: string[]; attempts: number; deadReason?: string }>;
      const dead = items.find((i) => i.status === 'dead')!;
      const waiting = items.find((i) => i.status === 'active')!;
      assert.deepEqual([dead.rcptTo, dead.deadReason], [['x@q.test'], 'refused by the target']);
      assert.deepEqual(waiting.rcptTo, ['y@q.test']);
      assert.equal(items.length, 2);
      const shown = await cli('show', dead.itemId);
      assert.equal(shown.code, 0, shown.err);
      assert.match(shown.out, /"deadReason": "refused by the target"/);
      assert.match(shown.out, /Subject: to retry/);

      // Purge the waiting item: its work item is dropped when next received, never delivered.
      const purged = await cli('purge', '--status', 'active');
      assert.equal(purged.code, 0, purged.err);
      assert.match(purged.err, /1 item\(s\) purged/);
      await waitFor(() => g.logs.some((l) => l.msg === 'queued item purged, work item dropped'), 15_000, 'the purged work item dropped');
      const purgedAttempts = () => hook.got.filter((r) => subjectOf(r.body) === 'to purge').length;
      const attemptsBefore = purgedAttempts();
      mode = 'up';

      // Replay the dead letter to the other target: a copy with its own delivery id.
      const dry = await cli('replay', '--target', 'copy', '--dry-run');
      assert.match(dry.out, new RegExp(`would replay ${dead.itemId} \\(dead, hook\\)`));
      assert.equal(copy.got.length, 0, 'a dry run changes nothing');
      assert.equal((await cli('replay', '--target', 'copy')).code, 0);
      await waitFor(() => copy.got.some((r) => subjectOf(r.body) === 'to retry'), 15_000, 'the copy delivered');

      // Retry the dead letter: delivered to its own target with its own webhook-id.
      const triedBefore = hook.got.length;
      const retried = await cli('retry');
      assert.equal(retried.code, 0, retried.err);
      assert.match(retried.err, /1 item\(s\) due now/);
      await waitFor(() => hook.got.slice(triedBefore).some((r) => subjectOf(r.body) === 'to retry'), 15_000, 'the retried item delivered');
      const firstId = hook.got.find((r) => subjectOf(r.body) === 'to retry')!.headers['webhook-id'];
      assert.equal(hook.got.at(-1)!.headers['webhook-id'], firstId, 'the same delivery id as the attempt that died');
      assert.notEqual(copy.got.find((r) => subjectOf(r.body) === 'to retry')!.headers['webhook-id'], firstId, 'the copy has its own');
      await waitFor(async () => (await keys('cli/items/')).length === 0 && (await keys('cli/dead/')).length === 0 && (await keys('cli/messages/')).length === 0, 10_000, 'nothing left stored');
      assert.equal((await cli('list')).out.trim().split('\n').length, 1, 'only the header line is left');
      assert.equal(purgedAttempts(), attemptsBefore, 'the purged item was never sent again');
      await waitFor(async () => (await oldest()) === 0 && (await gauge('postgate_queue_dead_letters')) === 0, 10_000, 'no item left: the oldest age and the dead letters 0');
    } finally {
      await g.close();
      await hook.close();
      await copy.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('ETRN to one instance starts the items another instance holds for its retry pause (RFC 1985, the request passed on through the bucket)', async () => {
    const QueueUrl = await createQueue('postgate-etrn');
    let up = false;
    const hook = await startReceiver(() => ({ status: up ? 204 : 503 }));
    const doc = (prefix: string) => ({
      queue: {
        // A failed attempt waits at least half an hour: only ETRN brings it back within the test.
        retry: { initialDelay: '1h', maxDelay: '2h', maxAge: '1d' },
        etrn: { allowed: ['127.0.0.1'] },
        backend: { type: 's3-sqs', bucket: 'spool', prefix, queueUrl: QueueUrl, endpoint: aws.endpoint, region: TEST_REGION, forcePathStyle: true, pollWait: '1s' },
      },
      routes: [{ recipients: ['*@d.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url, timeout: '2s' }] }],
    });
    const a = await startGateway(doc('etrn/'));
    const b = await startGateway(doc('etrn/'));
    try {
      const c = await RawSmtp.connect(a.port);
      await c.read();
      await c.cmd('EHLO c.example');
      assert.equal((await sendMail(c, 's@example.org', ['x@d.test'], simpleMessage('etrn me'))).data?.code, 250);
      c.close();
      const retrying = (g: typeof a) => g.logs.some((l) => l.msg === 'queued delivery failed, will retry');
      await waitFor(() => retrying(a) || retrying(b), 15_000, 'a failed first attempt');
      const holder = retrying(a) ? a : b;
      const other = holder === a ? b : a;
      up = true;
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(hook.got.length, 1, 'held for its pause: no second attempt on its own');

      const e = await RawSmtp.connect(other.port);
      await e.read();
      const ehlo = await e.cmd('EHLO c.example');
      assert.ok(ehlo.lines.some((l) => /ETRN/.test(l)), 'ETRN is offered with this backend');
      const etrn = await e.cmd('ETRN d.test');
      assert.equal(etrn.code, 250);
      assert.equal(etrn.text, '2.0.0 Queuing for node d.test started');
      assert.equal((await e.cmd('ETRN bad..node')).code, 501);
      e.close();
      await waitFor(() => hook.got.length >= 2, 15_000, 'the held item delivered after ETRN at the other instance');
      assert.ok(holder.logs.some((l) => l.msg === 'ETRN from another instance: held items shown' && l.node === 'd.test'));
      assert.equal(new Set(hook.got.map((g) => g.headers['webhook-id'])).size, 1);
    } finally {
      await a.close();
      await b.close();
      await hook.close();
    }
  });

  test('a message for two targets is stored once; its copy is removed with its last item', async () => {
    const QueueUrl = await createQueue('postgate-once');
    let upB = false;
    const a = await startReceiver(() => ({ status: 204 }));
    const b = await startReceiver(() => ({ status: upB ? 204 : 503 }));
    const g = await startGateway({
      queue: {
        retry: { initialDelay: '300ms', maxDelay: '500ms', maxAge: '1h' },
        backend: { type: 's3-sqs', bucket: 'spool', prefix: 'once/', queueUrl: QueueUrl, endpoint: aws.endpoint, region: TEST_REGION, forcePathStyle: true, pollWait: '1s' },
      },
      routes: [{ recipients: ['*@two.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'a', url: a.url, timeout: '2s' }, { type: 'webhook', id: 'b', url: b.url, timeout: '2s' }] }],
    });
    try {
      const c = await RawSmtp.connect(g.port);
      await c.read();
      await c.cmd('EHLO c.example');
      assert.equal((await sendMail(c, 's@example.org', ['x@two.test'], simpleMessage('two targets, one copy'))).data?.code, 250);
      c.close();
      const messages = await keys('once/messages/');
      assert.equal(messages.length, 1, 'one stored copy for both targets');
      assert.equal((await keys('once/items/')).filter((k) => k.endsWith('/meta.json')).length, 2, 'an item per target');
      await waitFor(() => a.got.length === 1 && b.got.length >= 1, 10_000, 'both targets tried');
      // a has it and its item is gone; b's item still needs the copy.
      await waitFor(async () => (await keys('once/items/')).filter((k) => k.endsWith('/meta.json')).length === 1, 10_000, 'a\'s item removed');
      assert.deepEqual(await keys('once/messages/'), messages, 'the copy stays while b waits');
      const bBefore = b.got.length;
      upB = true;
      await waitFor(() => b.got.length > bBefore, 15_000, 'b delivered');
      await waitFor(async () => (await keys('once/messages/')).length === 0 && (await keys('once/items/')).length === 0, 10_000, 'the copy removed with the last item');
      assert.equal(subjectOf(b.got.at(-1)!.body), 'two targets, one copy');
    } finally {
      await g.close();
      await a.close();
      await b.close();
    }
  });

  test('a replay written while the message\'s last item is being removed keeps its message (its own copy)', async () => {
    // The interleaving, step by step: the removal lists the message's items
    // (none left), the replay stores its item, then the removal deletes the
    // shared copy. A replayed item must still have the bytes to deliver.
    const QueueUrl = await createQueue('postgate-race');
    const spool = new S3Spool({ s3: aws.client, sqs, bucket: 'spool', prefix: 'race/', queueUrl: QueueUrl });
    const item = (queueId: string, itemId: string): NewSpoolItem => ({
      meta: { itemId, queueId, deliveryId: `d-${itemId}`, targetId: 'hook', required: true, route: 'r', mailFrom: 's@example.org', rcptTo: ['x@q.test'], rawSha256: 'a'.repeat(64), receivedAt: new Date().toISOString(), spooledAt: new Date().toISOString() },
      message: MessageBytes.of(Buffer.from(`Subject: ${queueId}\r\n\r\nbody\r\n`)),
      eventJson: Buffer.from('{}'),
    });
    const race = async (queueId: string, ownCopy: boolean) => {
      const original = item(queueId, `${queueId}-hook`);
      await spool.put([original]);
      await spool.removeItem(original.meta.itemId); // delivered: its objects go
      const listed = (await spool.objects(`race/items/${queueId}-`)).filter((o) => o.Key!.endsWith('/meta.json'));
      assert.equal(listed.length, 0, 'the removal sees no item left');
      const replay = { ...item(queueId, `${queueId}-r1`), ownCopy };
      await spool.put([replay]);
      await spool.remove(spool.messageKey(queueId)); // the removal goes on with what it listed
      return spool.message(replay.meta);
    };
    assert.equal(await race('QRACESHARED', false), null, 'sharing the copy, the replay lost its message: the interleaving is real');
    assert.equal((await race('QRACEOWN', true))?.toString('utf8'), 'Subject: QRACEOWN\r\n\r\nbody\r\n');
    // the own copy goes with the item
    await spool.removeItem('QRACEOWN-r1');
    assert.deepEqual(await keys('race/items/QRACEOWN-'), []);
  });

  test('a refusal becomes a dead letter in S3 with its history', async () => {
    const QueueUrl = await createQueue('postgate-dead');
    const hook = await startReceiver(() => ({ status: 200, json: { action: 'reject', message: 'no' } }));
    const g = await gatewayWith(QueueUrl, hook.url, 'dl/');
    try {
      const c = await RawSmtp.connect(g.port);
      await c.read();
      await c.cmd('EHLO c.example');
      assert.equal((await sendMail(c, 's@example.org', ['x@q.test'], simpleMessage('refused'))).data?.code, 250);
      c.close();
      await waitFor(async () => (await keys('dl/dead/')).length === 1, 10_000, 'a dead letter');
      const key = (await keys('dl/dead/'))[0]!;
      const body = JSON.parse(await (await aws.client.send(new GetObjectCommand({ Bucket: 'spool', Key: key }))).Body!.transformToString());
      assert.equal(body.state.deadReason, 'refused by the target');
      assert.equal(body.state.history[0].code, 'PG_TARGET_REJECTED');
      assert.deepEqual(body.meta.rcptTo, ['x@q.test']);
    } finally {
      await g.close();
      await hook.close();
    }
  });
});
