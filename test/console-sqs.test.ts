/**
 * The console records the attempts of the S3 + SQS queue backend too
 * (docs/console.md, "What is recorded"), and its retry revives that
 * backend's dead letters: a local S3/SQS-compatible server (fauxqs), real
 * SMTP, a real receiver that fails, refuses, then recovers.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { startGateway } from './helpers/gateway.js';
import { startReceiver } from './helpers/receiver.js';
import { startS3, TEST_REGION, type LocalS3 } from './helpers/aws.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';
import { waitFor } from './helpers/wait.js';
import { browserSession, consoleRequest } from './helpers/console.js';
import type { MessageDetail } from '../src/console/types.js';

describe('console with the S3 + SQS queue backend (fauxqs)', () => {
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

  test('queued attempts are recorded; retry revives a dead letter, which is then delivered', async () => {
    const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: 'postgate-console' }))).QueueUrl!;
    // 503 (retried), then a refusal on purpose (dead letter), then 204.
    let mode: 'busy' | 'refuse' | 'up' = 'busy';
    const hook = await startReceiver(() => (mode === 'busy' ? { status: 503 } : mode === 'refuse' ? { status: 200, json: { action: 'reject' } } : { status: 204 }));
    const tg = await startGateway({
      console: { listen: '127.0.0.1:0' },
      queue: {
        retry: { initialDelay: '300ms', maxDelay: '500ms', maxAge: '1h' },
        backend: { type: 's3-sqs', bucket: 'spool', prefix: 'console/', queueUrl, endpoint: aws.endpoint, region: TEST_REGION, forcePathStyle: true, pollWait: '1s' },
      },
      routes: [{ name: 'shared', recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url, timeout: '2s' }] }],
    });
    try {
      const port = tg.gw.consoleAddress()!.port;
      const reply = await sendOne(tg.port, 'x@q.test', simpleMessage('through sqs'));
      assert.equal(reply.code, 250);
      const id = /queued as (\S+)/.exec(reply.text)![1]!;
      const get = async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).json<MessageDetail>();
      await waitFor(async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).status === 200 && (await get()).attempts.length >= 1, 15_000, 'a first queued attempt');
      let d = await get();
      assert.equal(d.status, 'deferred');
      assert.deepEqual([d.attempts[0]!.via, d.attempts[0]!.outcome, d.attempts[0]!.code], ['queue', 'deferred', 'PG_DELIVERY_FAILED']);
      mode = 'refuse';
      await waitFor(async () => (await get()).status === 'dead', 15_000, 'a dead letter');
      mode = 'up';
      const s = await browserSession(port);
      const retry = await consoleRequest(port, 'POST', `/api/v1/messages/${id}/retry`, { headers: { ...s.headers, 'x-csrf-token': s.csrf } });
      assert.equal(retry.status, 202, retry.body.toString());
      await waitFor(async () => (await get()).status === 'delivered', 15_000, 'delivered after the retry');
      d = await get();
      assert.deepEqual([d.attempts.at(-1)!.via, d.attempts.at(-1)!.outcome], ['retry', 'delivered']);
      assert.deepEqual(d.targets, [{ target: 'hook', kind: 'webhook', required: true, status: 'delivered' }]);
    } finally {
      await tg.close();
      await hook.close();
    }
  });
});
