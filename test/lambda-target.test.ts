/**
 * The lambda target end to end: an SMTP client → the gateway → Lambda's
 * Invoke API served by serverless-offline (under osls) on loopback → a real
 * handler (test/fixtures/lambda/handler.js), which records what it received
 * or answers as the subject asks.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { freePort, httpGet, startServerlessOffline, TEST_REGION, type LocalLambda } from './helpers/aws.js';
import { deliveryId } from '../src/message/ids.js';

async function send(port: number, to: string, body: string) {
  const c = await RawSmtp.connect(port);
  await c.read();
  await c.cmd('EHLO client.example');
  const { data } = await sendMail(c, 'sender@example.org', [to], body);
  c.close();
  assert.ok(data, 'no DATA reply');
  return data;
}

const queueIdOf = (text: string) => /queued as ([0-9A-Z]{20})/.exec(text)?.[1];

describe('lambda target (serverless-offline)', () => {
  let fn: LocalLambda;
  let tg: TestGateway;
  let out: string;
  let hook: { server: http.Server; bodies: string[]; url: string };

  before(async () => {
    out = await mkdtemp(path.join(os.tmpdir(), 'postgate-lambda-'));
    fn = await startServerlessOffline({ env: { POSTGATE_TEST_LAMBDA_OUT: out } });
    // How long osls takes to start on this machine, for the report.
    console.log(`serverless-offline ready in ${fn.startMs} ms`);
    const bodies: string[] = [];
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push(Buffer.concat(chunks).toString('utf8'));
        res.writeHead(204).end();
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    hook = { server, bodies, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook` };
    const lambda = { type: 'lambda', functionName: fn.functionName('inbound'), endpoint: fn.endpoint, region: TEST_REGION, timeout: '10s' };
    tg = await startGateway({
      routes: [
        // the function and a webhook side by side: both must get the same event
        { name: 'both', recipients: ['*@both.example.test'], targets: [lambda, { type: 'webhook', url: hook.url }] },
        { name: 'only', recipients: ['*@only.example.test'], targets: [{ ...lambda, id: 'fn-only' }] },
        { name: 'small', recipients: ['*@small.example.test'], targets: [{ ...lambda, id: 'fn-small', maxEventSize: 2048 }] },
        { name: 'missing', recipients: ['*@missing.example.test'], targets: [{ ...lambda, functionName: fn.functionName('nope') }] },
        { name: 'down', recipients: ['*@down.example.test'], targets: [{ ...lambda, id: 'fn-down', endpoint: `http://127.0.0.1:${await freePort()}` }] },
      ],
    });
  });
  after(async () => {
    await tg?.close();
    await fn?.stop();
    hook?.server.close();
    await rm(out, { recursive: true, force: true });
  });

  test('accepted: the function gets the webhook event and the delivery id in its client context', async () => {
    const data = await send(tg.port, 'a@both.example.test', simpleMessage('hello lambda'));
    assert.equal(data.code, 250, data.raw);
    const queueId = queueIdOf(data.text)!;
    const got = JSON.parse(await readFile(path.join(out, `${queueId}.json`), 'utf8'));
    assert.equal(got.event.type, 'email.received');
    assert.equal(got.event.data.id, queueId);
    assert.equal(got.event.data.subject, 'hello lambda');
    // exactly the JSON a webhook receives
    assert.equal(hook.bodies.length, 1);
    assert.deepEqual(got.event, JSON.parse(hook.bodies[0]!));
    // the idempotent delivery id of this (transaction, target)
    const expected = deliveryId('sender@example.org', ['a@both.example.test'], got.event.data.raw.sha256, `lambda:${fn.functionName('inbound')}`);
    assert.deepEqual(got.clientContext.custom, { deliveryId: expected, queueId, source: 'postgate' });
  });

  test('a reject answer from the function is the 5xx reply, with its text', async () => {
    const data = await send(tg.port, 'b@only.example.test', simpleMessage('reject this'));
    assert.equal(data.code, 550, data.raw);
    assert.equal(data.text, '5.1.1 No such mailbox here (from the function)');
  });

  test('a tempfail answer defers with the function\'s code', async () => {
    const data = await send(tg.port, 'b@only.example.test', simpleMessage('tempfail now'));
    assert.equal(data.code, 452, data.raw);
    assert.equal(data.text, '4.2.2 Mailbox full, try later');
  });

  test('a function that throws defers the message (451 4.3.0), never bounces it', async () => {
    const data = await send(tg.port, 'b@only.example.test', simpleMessage('throw please'));
    assert.equal(data.code, 451, data.raw);
    assert.match(data.text, /^4\.3\.0 Temporary delivery failure/);
    assert.ok(
      tg.logs.some((l) => l.msg === 'delivery' && l.target === 'fn-only' && /function error Unhandled \(Error: handler failed on purpose\)/.test(String(l.err))),
      'the delivery log line names the function error',
    );
    // nothing of the function's error reaches the sender
    assert.doesNotMatch(data.raw, /handler failed/);
  });

  test('an event over maxEventSize arrives as a pointer whose URL serves the full event', async () => {
    const body = simpleMessage('big event', '') + 'x'.repeat(70).concat('\r\n').repeat(60);
    const data = await send(tg.port, 'c@small.example.test', body);
    assert.equal(data.code, 250, data.raw);
    const queueId = queueIdOf(data.text)!;
    const got = JSON.parse(await readFile(path.join(out, `${queueId}.json`), 'utf8'));
    assert.equal(got.event.type, 'email.received.pointer');
    assert.equal(got.event.data.id, queueId);
    assert.equal(got.event.data.subject, 'big event');
    assert.ok(JSON.stringify(got.event).length <= 2048, 'the pointer fits');
    const link = got.event.data.event as { url: string; size: number; sha256: string };
    const full = await httpGet(link.url);
    assert.equal(full.status, 200);
    assert.equal(full.body.length, link.size);
    assert.equal(createHash('sha256').update(full.body).digest('hex'), link.sha256);
    const event = JSON.parse(full.body.toString('utf8'));
    assert.equal(event.type, 'email.received');
    assert.equal(event.data.id, queueId);
    assert.ok(full.body.length > 2048, `the full event (${full.body.length} bytes) is over the limit`);
    assert.match(event.data.text, /x{70}/);
    assert.equal(got.clientContext.custom.queueId, queueId);
  });

  test('a function that does not exist defers (misconfiguration never bounces)', async () => {
    const data = await send(tg.port, 'd@missing.example.test', simpleMessage('nobody home'));
    assert.equal(data.code, 451, data.raw);
    assert.ok(tg.logs.some((l) => l.msg === 'delivery' && /ResourceNotFoundException/.test(String(l.err))), 'logged as ResourceNotFound');
  });

  test('an unreachable Lambda endpoint defers with 451 4.4.1', async () => {
    const data = await send(tg.port, 'e@down.example.test', simpleMessage('no endpoint'));
    assert.equal(data.code, 451, data.raw);
    assert.match(data.text, /^4\.4\.1 /);
  });
});
