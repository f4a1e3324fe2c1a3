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
import { RawSmtp, sendMail, simpleMessage, sendOne } from './helpers/smtp-client.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { freePort, httpGet, startServerlessOffline, TEST_REGION, type LocalLambda } from './helpers/aws.js';
import { deliveryId } from '../src/message/ids.js';
import { MessageBytes } from '../src/message/bytes.js';

const send = sendOne;

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
      // Short pauses between attempts: the unreachable endpoint is retried
      // until maxAttempts (at the defaults that alone took 9 s).
      delivery: { retry: { initialDelay: '20ms', maxDelay: '100ms' } },
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

test('the serverless-offline helper fails with osls\'s output when the service cannot start', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-bad-service-'));
  try {
    // No serverless.yml at all: osls exits at once.
    await assert.rejects(startServerlessOffline({ serviceDir: dir, startTimeoutMs: 20_000 }), (err: Error) => {
      assert.match(err.message, /serverless-offline did not start \(exited with \d+\); its output:\n[\s\S]*\S/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * Faults serverless-offline cannot produce (throttling, a Handled error, a
 * payload Lambda finds too large, a service error, a hung invocation),
 * injected by a node:http server that answers as Lambda's Invoke API does.
 */
describe('lambda target: injected Lambda API faults', () => {
  interface Call {
    fn: string;
    headers: http.IncomingHttpHeaders;
    body: string;
  }
  const calls: Call[] = [];
  let api: http.Server;
  let endpoint: string;
  let tg: TestGateway;
  const hung: http.ServerResponse[] = [];

  const lambdaError = (res: http.ServerResponse, status: number, type: string, extra: Record<string, string> = {}) =>
    res.writeHead(status, { 'content-type': 'application/json', 'x-amzn-errortype': type, ...extra }).end(JSON.stringify({ Type: 'User', message: `${type} (injected)` }));

  before(async () => {
    api = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const fn = decodeURIComponent(/\/functions\/([^/]+)\/invocations/.exec(req.url ?? '')?.[1] ?? '');
        const body = Buffer.concat(chunks).toString('utf8');
        calls.push({ fn, headers: req.headers, body });
        switch (fn) {
          case 'throttled':
            return lambdaError(res, 429, 'TooManyRequestsException', { 'retry-after': '3' });
          case 'handled':
            return res
              .writeHead(200, { 'content-type': 'application/json', 'x-amz-function-error': 'Handled' })
              .end(JSON.stringify({ errorType: 'InvalidInput', errorMessage: 'no thanks' }));
          case 'toolarge':
            if (JSON.parse(body).type === 'email.received') return lambdaError(res, 413, 'RequestTooLargeException');
            return res.writeHead(200, { 'content-type': 'application/json' }).end('null');
          case 'broken':
            return lambdaError(res, 500, 'ServiceException');
          case 'denied':
            return lambdaError(res, 403, 'AccessDeniedException');
          case 'hung':
            hung.push(res);
            return;
          default:
            return res.writeHead(200, { 'content-type': 'application/json' }).end('"plain string return"');
        }
      });
    });
    api.listen(0, '127.0.0.1');
    await once(api, 'listening');
    endpoint = `http://127.0.0.1:${(api.address() as { port: number }).port}`;
    const t = (functionName: string, extra: Record<string, unknown> = {}) => ({ type: 'lambda', functionName, endpoint, region: TEST_REGION, timeout: '5s', ...extra });
    tg = await startGateway({
      // one attempt per message: these tests count the SDK's calls, not our retry loop's
      delivery: { retry: { maxAttempts: 1 } },
      routes: ['throttled', 'handled', 'toolarge', 'broken', 'denied', 'hung', 'plain'].map((fn) => ({
        name: fn,
        recipients: [`*@${fn}.example.test`],
        targets: [t(fn, fn === 'hung' ? { timeout: '700ms' } : {})],
      })),
    });
  });
  after(async () => {
    await tg?.close();
    for (const r of hung) r.destroy();
    api?.closeAllConnections();
    api?.close();
  });

  const callsTo = (fn: string) => calls.filter((c) => c.fn === fn);

  test('a synchronous invocation; a return that is not an answer acknowledges', async () => {
    const data = await send(tg.port, 'a@plain.example.test', simpleMessage('plain'));
    assert.equal(data.code, 250, data.raw);
    const [call] = callsTo('plain');
    assert.equal(call!.headers['x-amz-invocation-type'], 'RequestResponse');
    const ctx = JSON.parse(Buffer.from(String(call!.headers['x-amz-client-context']), 'base64').toString('utf8'));
    assert.match(ctx.custom.deliveryId, /^msg_[0-9a-f]{32}$/);
    assert.equal(JSON.parse(call!.body).data.subject, 'plain');
    // credentials are never logged
    assert.ok(!tg.logText().includes(process.env.AWS_SECRET_ACCESS_KEY!));
  });

  test('throttling: 451 4.4.5, one attempt', async () => {
    const data = await send(tg.port, 'a@throttled.example.test', simpleMessage('throttle'));
    assert.equal(data.code, 451, data.raw);
    assert.match(data.text, /^4\.4\.5 /);
    assert.equal(callsTo('throttled').length, 1, 'the SDK does not retry');
  });

  test('throttling keeps Lambda\'s Retry-After as the retry hint', async () => {
    const { LambdaTarget } = await import('../src/delivery/lambda.js');
    const target = new LambdaTarget({ type: 'lambda', functionName: 'throttled', endpoint, region: TEST_REGION, maxEventSize: 5 << 20, timeout: 5_000, required: true });
    const event = { type: 'email.received', timestamp: new Date().toISOString(), data: { id: 'Q1' } };
    const msg = {
      queueId: 'Q1',
      mailFrom: 'a@b.test',
      rcptTo: ['c@d.test'],
      receivedAt: new Date(),
      message: MessageBytes.of(Buffer.from('x')),
      rawSha256: '0'.repeat(64),
      event: event as never,
      eventJson: Buffer.from(JSON.stringify(event)),
      claimCheck: () => Promise.reject(new Error('not used')),
    };
    try {
      await assert.rejects(target.deliver(msg, 'msg_1', new AbortController().signal), (err: Record<string, unknown>) => {
        assert.equal(err.code, 'PG_DELIVERY_FAILED');
        assert.equal(err.transient, true);
        assert.equal(err.retryAfterMs, 3000);
        assert.deepEqual(err.smtp, { code: 451, enhanced: '4.4.5' });
        return true;
      });
    } finally {
      await target.close();
    }
  });

  test('a Handled function error defers (451 4.3.0)', async () => {
    const data = await send(tg.port, 'a@handled.example.test', simpleMessage('handled'));
    assert.equal(data.code, 451, data.raw);
    assert.match(data.text, /^4\.3\.0 /);
    assert.ok(tg.logs.some((l) => l.msg === 'delivery' && /function error Handled \(InvalidInput: no thanks\)/.test(String(l.err))));
  });

  test('RequestTooLargeException: the pointer is sent once instead', async () => {
    const data = await send(tg.port, 'a@toolarge.example.test', simpleMessage('too large'));
    assert.equal(data.code, 250, data.raw);
    assert.deepEqual(
      callsTo('toolarge').map((c) => JSON.parse(c.body).type),
      ['email.received', 'email.received.pointer'],
    );
    // the same delivery id both times
    const ids = callsTo('toolarge').map((c) => JSON.parse(Buffer.from(String(c.headers['x-amz-client-context']), 'base64').toString()).custom.deliveryId);
    assert.equal(ids[0], ids[1]);
  });

  test('a service error (500) and AccessDenied (403) defer, one attempt each', async () => {
    const broken = await send(tg.port, 'a@broken.example.test', simpleMessage('broken'));
    assert.equal(broken.code, 451, broken.raw);
    assert.match(broken.text, /^4\.3\.0 /);
    assert.equal(callsTo('broken').length, 1, 'the SDK does not retry');
    const denied = await send(tg.port, 'a@denied.example.test', simpleMessage('denied'));
    assert.equal(denied.code, 451, denied.raw);
    assert.ok(tg.logs.some((l) => l.msg === 'delivery' && /AccessDeniedException \(HTTP 403\)/.test(String(l.err))));
  });

  test('a function that does not return within the target timeout: 451 4.4.2, not invoked twice', async () => {
    const started = Date.now();
    const data = await send(tg.port, 'a@hung.example.test', simpleMessage('hung'));
    assert.equal(data.code, 451, data.raw);
    assert.match(data.text, /^4\.4\.2 /);
    // 4.4.2 (not the deadline's 4.4.7) says which timer ended it; the bound,
    // half the 30 s deadline, leaves 20 times the 700 ms target timeout.
    assert.ok(Date.now() - started < 15_000, 'the timeout is the target\'s, not the deadline');
    assert.equal(callsTo('hung').length, 1);
  });
});

test('lambda config: defaults, ids, and maxEventSize within Lambda\'s 6 MB', async () => {
  const { validateConfig } = await import('../src/config/load.js');
  const cfg = (t: Record<string, unknown>) => validateConfig({ routes: [{ recipients: ['a@x.test'], targets: [{ type: 'lambda', functionName: 'inbound', ...t }] }] });
  const t = cfg({}).routes[0]!.targets[0]!;
  assert.equal(t.id, 'lambda:inbound');
  assert.equal(t.type === 'lambda' && t.maxEventSize, 1024 * 1024);
  assert.equal(t.type === 'lambda' && t.timeout, 25_000);
  assert.equal(cfg({ qualifier: 'live' }).routes[0]!.targets[0]!.id, 'lambda:inbound:live');
  assert.throws(() => cfg({ maxEventSize: '7MiB' }), /maxEventSize: must be at most 6291456 bytes/);
  assert.throws(() => cfg({ region: 'Frankfurt' }), /region: not an AWS region name/);
  assert.throws(() => cfg({ endpoint: 'ftp://x' }), /endpoint: endpoint must be http/);
  assert.throws(() => cfg({ invocationType: 'Event' }), /invocationType: unknown key/);
});
