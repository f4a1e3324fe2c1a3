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
      assert.deepEqual(itemKeys.map((k) => k.split('/').pop()).filter((f) => f !== 'state.json').sort(), ['event.json', 'message.eml', 'meta.json']);
      await waitFor(() => hook.got.length >= 1, 10_000, 'a first attempt');
      await a.close();
      up = true;
      b = await gatewayWith(QueueUrl, hook.url, 'shared/');
      await waitFor(() => hook.got.some((g) => subjectOf(g.body) === 'shared spool' && up) && hook.got.length >= 2, 15_000, 'delivery by the second instance');
      await waitFor(async () => (await keys('shared/items/')).length === 0, 10_000, 'objects removed after delivery');
      assert.equal(new Set(hook.got.map((g) => g.headers['webhook-id'])).size, 1, 'every attempt, on either instance, has the same webhook-id');
      assert.ok(b.logs.some((l) => l.msg === 'queued delivery succeeded'));
    } finally {
      await a.close().catch(() => undefined);
      await b?.close();
      await hook.close();
    }
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
