/**
 * The serverless side end to end, offline and real: an SMTP client → the
 * postgate edge → the `ingest` function (serverless.yml, bundled by esbuild,
 * run by serverless-offline under osls) through the Lambda Invoke API, as
 * the edge on AWS calls it → S3 and SQS (fauxqs) and the index table
 * (dynalite) → the `route` function → node:http downstream receivers;
 * `redrive` brings dead letters back. serverless.yml publishes no HTTP API;
 * ingest's handling of signed HTTP events (for an HTTP front an operator adds
 * in front of it) is exercised by invoking it with the HTTP API's event.
 *
 * serverless-offline does not poll SQS: test/helpers/event-source.ts plays
 * Lambda's event source mapping. Network faults (SQS or DynamoDB gone) come
 * from TCP proxies between the functions and the stand-ins.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ScanCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { CreateQueueCommand, DeleteMessageCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { Webhook } from 'standardwebhooks';
import { RawSmtp, sendMail, sendOne } from './helpers/smtp-client.js';
import { listFiles, startGateway, type TestGateway } from './helpers/gateway.js';
import { startDynamo, startS3, startServerlessOffline, TEST_REGION, type LocalDynamo, type LocalLambda, type LocalS3 } from './helpers/aws.js';
import { fixturePath, projectRoot } from './helpers/fixtures.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { pollOnce, pollUntil } from './helpers/event-source.js';
import { defaultLambdaId, deliveryId } from '../src/message/ids.js';
import { signPayload, secretKey } from '../src/delivery/signing.js';

const INGEST_SECRET = 'whsec_aW5nZXN0LXNlY3JldC1mb3ItdGhlLWUyZS10ZXN0';
const DOWN_SECRET = 'whsec_ZG93bnN0cmVhbS1zZWNyZXQtZm9yLWUyZQ==';
const BUCKET = 'postgate-e2e';
const TABLE = 'postgate-test-index';
const MAX_RECEIVES = 3;

interface Item {
  id: string;
  status: string;
  rcptTo: string[];
  eventKey: string;
  rawKey: string | null;
  parts: string[];
  deliveries: Record<string, string>;
}

function message(subject: string, size = 0): string {
  const filler = size ? `${'x'.repeat(70)}\r\n`.repeat(Math.ceil(size / 72)) : '';
  return `From: Sender <sender@example.org>\r\nTo: someone@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example.org>\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n\r\nHello there.\r\n${filler}`;
}

const rawSha = (body: string) => createHash('sha256').update(Buffer.from(body)).digest('hex');

describe('serverless functions end to end (serverless-offline, fauxqs, dynalite)', { timeout: 300_000 }, () => {
  let s3: LocalS3;
  let dyn: LocalDynamo;
  let sqs: SQSClient;
  let lambda: LambdaClient;
  let fn: LocalLambda;
  let sqsProxy: FaultProxy;
  let dynProxy: FaultProxy;
  let good: Receiver;
  let flaky: Receiver;
  let other: Receiver;
  let flakyStatus = 503;
  let edge: TestGateway;
  let dir: string;
  let queue: { url: string; arn: string };
  let dlq: { url: string; arn: string };

  const routeFn = () => ({ queueUrl: queue.url, queueArn: queue.arn, functionName: fn.functionName('route') });

  const send = (to: string | string[], body: string) => sendOne(edge.port, to, body);
  const ROUTES_KEY = 'config/functions.yaml';
  let routesDoc: { routes: Array<{ recipients: string[]; targets: Array<Record<string, unknown>> }> };
  const putRoutes = (text: string) => s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: ROUTES_KEY, Body: text }));

  /** Sends while the service behind `proxy` is unreachable from the functions. */
  async function sendWhileDown(proxy: FaultProxy, to: string, body: string) {
    proxy.mode = 'refuse';
    try {
      const reply = await send(to, body);
      // The edge may answer 451 because its own timeout ran out while the
      // function was still retrying (a loaded machine): keep the service
      // down until no attempt has reached it for 3 s, so a late retry cannot
      // succeed after the reply and change what the test then looks at.
      for (let until = Date.now() + 60_000; Date.now() < until; ) {
        const seen = proxy.connections;
        await new Promise((r) => setTimeout(r, 3000));
        if (proxy.connections === seen) break;
      }
      return reply;
    } finally {
      proxy.mode = 'pass';
    }
  }

  async function items(): Promise<Item[]> {
    const r = await dyn.client.send(new ScanCommand({ TableName: TABLE, ConsistentRead: true }));
    const s = (a: AttributeValue | undefined) => a?.S ?? null;
    return (r.Items ?? []).map((i) => ({
      id: s(i.id)!,
      status: s(i.status)!,
      rcptTo: (i.rcptTo?.L ?? []).map((a) => a.S!),
      eventKey: s(i.eventKey)!,
      rawKey: s(i.rawKey),
      parts: (i.parts?.L ?? []).map((a) => a.S!),
      deliveries: Object.fromEntries(Object.entries(i.deliveries?.M ?? {}).map(([k, v]) => [k, v.M?.status?.S ?? '?'])),
    }));
  }
  const itemFor = async (rcpt: string) => (await items()).filter((i) => i.rcptTo.includes(rcpt));

  async function object(key: string): Promise<Buffer> {
    const r = await s3.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    return Buffer.from(await r.Body!.transformToByteArray());
  }

  async function depth(url: string): Promise<number> {
    const r = await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'] }));
    return Number(r.Attributes?.ApproximateNumberOfMessages ?? 0) + Number(r.Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0);
  }

  async function invoke(name: string, payload: unknown): Promise<Record<string, unknown>> {
    const out = await lambda.send(new InvokeCommand({ FunctionName: fn.functionName(name), Payload: Buffer.from(JSON.stringify(payload)) }));
    const text = Buffer.from(out.Payload ?? []).toString('utf8');
    assert.equal(out.FunctionError, undefined, `${name} failed: ${text}`);
    return JSON.parse(text) as Record<string, unknown>;
  }

  /**
   * A signed POST to ingest, as an HTTP front (API Gateway's HTTP API,
   * payload 2.0) hands it to the function: the event it would invoke ingest
   * with, and the HTTP answer the function returns.
   */
  async function postIngest(id: string, body: Buffer, opts: { secret?: string; timestamp?: number } = {}) {
    const ts = opts.timestamp ?? Math.floor(Date.now() / 1000);
    const event = {
      version: '2.0',
      routeKey: 'POST /ingest',
      rawPath: '/ingest',
      headers: {
        'content-type': 'application/json',
        'webhook-id': id,
        'webhook-timestamp': String(ts),
        'webhook-signature': signPayload(secretKey(opts.secret ?? INGEST_SECRET), id, ts, body),
      },
      requestContext: { http: { method: 'POST', path: '/ingest' } },
      body: body.toString('base64'),
      isBase64Encoded: true,
    };
    const res = await invoke('ingest', event);
    return { status: Number(res.statusCode), json: JSON.parse(String(res.body)) as Record<string, unknown> };
  }

  function verifiedDownstream(r: Receiver, n: number): { id: string; timestamp: number; event: { type: string; data: { subject: string } } } {
    const got = r.got[n]!;
    const headers = Object.fromEntries(Object.entries(got.headers).map(([k, v]) => [k, String(v)]));
    // An independent implementation of the scheme (the standardwebhooks package) checks our signature.
    const event = new Webhook(DOWN_SECRET).verify(got.body.toString('utf8'), headers) as { type: string; data: { subject: string } };
    return { id: headers['webhook-id']!, timestamp: Number(headers['webhook-timestamp']), event };
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-fn-'));
    s3 = await startS3();
    await s3.createBucket(BUCKET);
    dyn = await startDynamo();
    await dyn.createSkipTable(TABLE);
    sqs = new SQSClient({ region: TEST_REGION, endpoint: s3.endpoint });
    const mk = async (name: string, attrs: Record<string, string>) => {
      const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: name, Attributes: attrs }));
      const a = await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['QueueArn'] }));
      return { url: QueueUrl!, arn: a.Attributes!.QueueArn! };
    };
    // The queues as serverless.yml declares them, with a test-sized maxReceiveCount.
    dlq = await mk('postgate-test-route-dlq', {});
    queue = await mk('postgate-test-route', {
      VisibilityTimeout: '30',
      RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlq.arn, maxReceiveCount: String(MAX_RECEIVES) }),
    });
    sqsProxy = await startFaultProxy(s3.port);
    dynProxy = await startFaultProxy(Number(new URL(dyn.endpoint).port));
    good = await startReceiver(() => ({ status: 204 }), { path: '/good' });
    flaky = await startReceiver(() => ({ status: flakyStatus }), { path: '/flaky' });
    other = await startReceiver(() => ({ status: 204 }), { path: '/other' });

    // The routes are kept in the bucket, as routesConfig allows in production
    // (docs/functions.md, "Routes"): read at cold start, asked every second.
    const hook = (id: string, r: Receiver) => ({ type: 'webhook', id, url: r.url, secret: DOWN_SECRET, timeout: '5s' });
    routesDoc = {
        routes: [
          { recipients: ['*@e2e.example.test', '*@lambda.example.test', '*@big.example.test'], targets: [hook('app', good)] },
          { recipients: ['*@split.example.test'], targets: [hook('good', good), hook('flaky', flaky)] },
          // Two tenants, one edge transaction: each destination may see only its own recipients.
          { recipients: ['*@tenant-a.example.test'], targets: [hook('tenant-a', good)] },
          { recipients: ['*@tenant-b.example.test'], targets: [hook('tenant-b', other)] },
          // A destination whose id is also a file name next to the stored event, and whose events always go as claim-check pointers.
          { recipients: ['*@tenant-c.example.test'], targets: [{ ...hook('event', other), maxEventSize: '1KiB' }] },
        ],
      };
    await putRoutes(JSON.stringify(routesDoc));
    fn = await startServerlessOffline({
      serviceDir: projectRoot(),
      service: 'postgate',
      stage: 'test',
      // esbuild bundles the three functions first.
      startTimeoutMs: 120_000,
      // The functions' idea of the last attempt matches the test queue's maxReceiveCount.
      // --localEnvironment: the handlers see this environment (secrets set directly, no SSM offline).
      args: ['--param', `maxAttempts=${MAX_RECEIVES}`, '--param', 'configInterval=1', '--localEnvironment'],
      env: {
        POSTGATE_BUCKET_NAME: BUCKET,
        POSTGATE_FUNCTIONS_CONFIG: `s3://${BUCKET}/${ROUTES_KEY}`,
        POSTGATE_INGEST_SECRETS: INGEST_SECRET,
        DOWNSTREAM_SECRET: DOWN_SECRET,
        // Failed deliveries come back at once (SQS visibility 0) instead of after 30 s, 60 s, ...
        POSTGATE_RETRY_BASE: '0',
        POSTGATE_ESBUILD_WORK: '.esbuild-e2e-test',
        AWS_ENDPOINT_URL_S3: s3.endpoint,
        AWS_ENDPOINT_URL_SQS: sqsProxy.endpoint,
        AWS_ENDPOINT_URL_DYNAMODB: dynProxy.endpoint,
      },
    });
    console.log(`serverless-offline (osls + esbuild) ready in ${fn.startMs} ms`);
    lambda = new LambdaClient({ region: TEST_REGION, endpoint: fn.endpoint });
    // ingest's cold start (the bundle, its settings, the routes read from the
    // bucket) happens here, not inside the first test's 8 s delivery deadline:
    // an invocation without a delivery id is refused once it has started.
    await lambda.send(new InvokeCommand({ FunctionName: fn.functionName('ingest'), Payload: Buffer.from('{}') }));
    // The edge's lambda target, as deploy/edge.yaml ships it, pointed at serverless-offline's Lambda API.
    const ingestTarget = { type: 'lambda', functionName: fn.functionName('ingest'), endpoint: fn.endpoint, region: TEST_REGION, timeout: '6s' };
    edge = await startGateway({
      // STARTTLS, for the route that must not take plaintext (requireTls).
      tls: { certificates: [{ cert: fixturePath('tls', 'mx.pem'), key: fixturePath('tls', 'mx-key.pem') }], watch: false },
      routes: [
        // Listed first: this one address of e2e.example.test is taken only over TLS (RFC 3207 §4).
        { name: 'tls-only', recipients: ['secret@e2e.example.test'], requireTls: true, targets: [ingestTarget] },
        {
          name: 'ingest',
          recipients: ['*@e2e.example.test', '*@split.example.test', '*@tenant-a.example.test', '*@tenant-b.example.test', '*@tenant-c.example.test', '*@nowhere.example.test'],
          targets: [ingestTarget],
        },
        { name: 'lambda', recipients: ['*@lambda.example.test'], targets: [ingestTarget] },
        // Events over 1 KiB go as a claim-check pointer, fetched by ingest from the edge's signed link.
        // Its own id: one id is one target instance, with one maxEventSize.
        { name: 'big', recipients: ['*@big.example.test'], targets: [{ ...ingestTarget, id: 'lambda:ingest-big', maxEventSize: '1KiB' }] },
      ],
      // Small limits, so that a test message has attachments and bodies linked, not inline.
      blobs: { raw: true, signingKey: 'e2e-blob-key', inlineLimit: '16KiB', bodyInlineLimit: '16KiB' },
      delivery: { deadline: '8s' },
    });
  });

  after(async () => {
    if (process.env.POSTGATE_E2E_DEBUG) {
      console.log(fn?.output().slice(-6000));
      console.log(edge?.logText().split('\n').filter((l) => /"err"/.test(l)).slice(0, 5).join('\n'));
    }
    await edge?.close();
    await fn?.stop();
    lambda?.destroy();
    sqs?.destroy();
    await sqsProxy?.close();
    await dynProxy?.close();
    await good?.close();
    await flaky?.close();
    await other?.close();
    await dyn?.stop();
    await s3?.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(path.join(projectRoot(), '.esbuild-e2e-test'), { recursive: true, force: true });
  });

  test('SMTP → edge → ingest (Invoke): 250 only once the event, the raw message and the index item are stored and the job is queued; route delivers it signed', async () => {
    const rcpt = 'alice@e2e.example.test';
    const body = message('first message');
    const reply = await send(rcpt, body);
    assert.equal(reply.code, 250, reply.text);
    // At the moment of the 250, before anything routes: stored, indexed, enqueued.
    const [item, ...more] = await itemFor(rcpt);
    assert.ok(item, 'no index item after the 250');
    assert.equal(more.length, 0);
    assert.equal(item.status, 'enqueued');
    // The item's key is the edge's delivery id (the client context's deliveryId of its invocation).
    assert.equal(item.id, deliveryId('sender@example.org', [rcpt], rawSha(body), defaultLambdaId({ functionName: fn.functionName('ingest') })));
    const event = JSON.parse((await object(item.eventKey)).toString('utf8')) as { type: string; data: { subject: string; raw: { sha256: string } } };
    assert.equal(event.type, 'email.received');
    assert.equal(event.data.subject, 'first message');
    assert.ok(item.rawKey, 'the raw message was not stored');
    const raw = await object(item.rawKey);
    assert.equal(createHash('sha256').update(raw).digest('hex'), event.data.raw.sha256);
    assert.equal(raw.toString('utf8'), body);
    assert.equal(await depth(queue.url), 1, 'one routing job');

    const before = good.got.length;
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > before);
    const d = verifiedDownstream(good, before);
    assert.equal(d.event.type, 'email.received');
    assert.equal(d.event.data.subject, 'first message');
    // The downstream webhook-id is the one the edge would use for that destination.
    assert.equal(d.id, deliveryId('sender@example.org', [rcpt], event.data.raw.sha256, 'app'));
    const [after1] = await itemFor(rcpt);
    assert.equal(after1!.deliveries.app, 'delivered');
    assert.equal(await depth(queue.url), 0);
  });

  test('require-TLS: a route with requireTls refuses its recipient with 530 on a plaintext session; after STARTTLS the message goes through ingest and is routed', async () => {
    const rcpt = 'secret@e2e.example.test';
    const c = await RawSmtp.connect(edge.port);
    try {
      await c.read();
      await c.cmd('EHLO plain.example');
      assert.equal((await c.cmd('MAIL FROM:<sender@example.org>')).code, 250);
      const refused = await c.cmd(`RCPT TO:<${rcpt}>`);
      assert.equal(refused.code, 530, refused.raw);
      assert.match(refused.text, /^5\.7\.0 /);
      assert.equal((await c.cmd('RSET')).code, 250);
      assert.equal((await itemFor(rcpt)).length, 0, 'nothing stored for the refused recipient');
      await c.startTls();
      await c.cmd('EHLO plain.example');
      const body = message('over tls only');
      const { rcpt: rcptReplies, data } = await sendMail(c, 'sender@example.org', [rcpt], body);
      assert.equal(rcptReplies[0]!.code, 250);
      assert.equal(data?.code, 250, data?.raw);
    } finally {
      c.close();
    }
    const [item] = await itemFor(rcpt);
    assert.ok(item, 'the index holds the message taken over TLS');
    const before = good.got.length;
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > before);
    assert.equal(verifiedDownstream(good, before).event.data.subject, 'over tls only');
  });

  test('a message over the edge\'s rawInlineLimit: its raw copy is linked, and ingest streams it into S3 next to the event, checked', async () => {
    const rcpt = 'gina@e2e.example.test';
    const body = message('large raw', 100 * 1024);
    const reply = await send(rcpt, body);
    assert.equal(reply.code, 250, reply.text);
    const [item] = await itemFor(rcpt);
    assert.ok(item?.rawKey, 'no raw.eml');
    const event = JSON.parse((await object(item.eventKey)).toString('utf8')) as { data: { raw: { url?: string; content?: string; sha256: string } } };
    assert.ok(event.data.raw.url && event.data.raw.content === undefined, 'the edge linked the raw message instead of inlining it');
    const raw = await object(item.rawKey);
    assert.equal(raw.length, Buffer.byteLength(body));
    assert.equal(createHash('sha256').update(raw).digest('hex'), rawSha(body));
    const before = good.got.length;
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > before);
  });

  test('parts the edge linked (an attachment, a body, the raw message) are copied next to the event, and route links the copies, not the edge', async () => {
    const rcpt = 'dora@e2e.example.test';
    const attachment = randomBytes(40 * 1024);
    const text = `${'Long body line of the linked text part.'.padEnd(70, '.')}\r\n`.repeat(600);
    const body = [
      'From: Sender <sender@example.org>',
      `To: ${rcpt}`,
      'Subject: linked parts',
      'Message-ID: <linked-parts@example.org>',
      'Date: Wed, 02 Dec 2026 10:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      text.slice(0, -2),
      '--b1',
      'Content-Type: application/octet-stream',
      'Content-Disposition: attachment; filename="blob.bin"',
      'Content-Transfer-Encoding: base64',
      '',
      attachment.toString('base64').replace(/.{76}/g, '$&\r\n'),
      '--b1--',
      '',
    ].join('\r\n');
    const reply = await send(rcpt, body);
    assert.equal(reply.code, 250, reply.text);
    const [item] = await itemFor(rcpt);
    assert.ok(item?.rawKey);
    type Linked = { url: string; expiresAt: string; size: number; sha256: string };
    type Ev = { data: { textBlob: Linked | null; attachments: (Linked & { filename: string })[]; raw: Linked } };
    const stored = JSON.parse((await object(item.eventKey)).toString('utf8')) as Ev;
    const edgeHost = new URL(stored.data.attachments[0]!.url).host;
    assert.ok(stored.data.textBlob, 'the edge linked the body');
    const dir = item.eventKey.replace(/event\.json$/, '');
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    // Stored at the 250, checked against the event's size and digest.
    assert.deepEqual(item.parts, ['attachment-0', 'text']);
    assert.equal(sha(await object(`${dir}parts/attachment-0`)), sha(attachment));
    assert.equal(sha(await object(`${dir}parts/text`)), stored.data.textBlob.sha256);
    const typeOf = async (key: string) => (await s3.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).ContentType;
    assert.equal(await typeOf(`${dir}parts/attachment-0`), 'application/octet-stream');
    assert.equal(await typeOf(`${dir}parts/text`), 'text/plain; charset=utf-8');
    assert.equal(await typeOf(item.rawKey), 'message/rfc822');

    const before = good.got.length;
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > before);
    const got = good.got[before]!;
    const sent = new Webhook(DOWN_SECRET).verify(got.body.toString('utf8'), Object.fromEntries(Object.entries(got.headers).map(([k, v]) => [k, String(v)]))) as Ev;
    const fetched = async (l: Linked) => {
      assert.notEqual(new URL(l.url).host, edgeHost, `${l.url} still points at the edge`);
      assert.ok(Date.parse(l.expiresAt) > Date.now());
      const res = await fetch(l.url);
      assert.equal(res.status, 200, l.url);
      return Buffer.from(await res.arrayBuffer());
    };
    assert.equal(sha(await fetched(sent.data.attachments[0]!)), sha(attachment));
    assert.equal(sent.data.attachments[0]!.filename, 'blob.bin');
    assert.equal(sha(await fetched(sent.data.textBlob!)), stored.data.textBlob.sha256);
    assert.equal(sha(await fetched(sent.data.raw)), rawSha(body));
  });

  test('a repeated delivery with the same id stores once and enqueues nothing more; over HTTP, bad signatures and stale timestamps are refused', async () => {
    const rcpt = 'alice@e2e.example.test';
    const [item] = await itemFor(rcpt);
    assert.ok(item);
    const body = await object(item.eventKey);
    const again = await postIngest(item.id, body);
    assert.equal(again.status, 200);
    assert.equal(again.json.duplicate, true);
    assert.equal((await itemFor(rcpt)).length, 1);
    assert.equal(await depth(queue.url), 0, 'no second routing job');
    const listed = await s3.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: item.eventKey.replace(/event\.json$/, '') }));
    assert.deepEqual((listed.Contents ?? []).map((o) => o.Key!.split('/').pop()).sort(), ['event.json', 'raw.eml']);
    // A retry of an enqueued message is acknowledged even when the routes
    // file would no longer take it (its first 2xx may only have been lost):
    // here its recipient is one no route covers.
    const rerouted = JSON.parse(body.toString('utf8')) as { data: { envelope: { rcptTo: { address: string }[] } } };
    rerouted.data.envelope.rcptTo = [{ address: 'zed@nowhere.example.test' }];
    const late = await postIngest(item.id, Buffer.from(JSON.stringify(rerouted)));
    assert.equal(late.status, 200, JSON.stringify(late.json));
    assert.equal(late.json.duplicate, true);
    assert.equal(await depth(queue.url), 0, 'still no second routing job');
    // A pointer must say how large its event is: without a size nothing bounds the download.
    const unsized = await postIngest('msg_unsized', Buffer.from(JSON.stringify({ type: 'email.received.pointer', timestamp: new Date().toISOString(), data: { receivedAt: new Date().toISOString(), envelope: { rcptTo: [] }, raw: {}, event: { url: 'http://127.0.0.1:9/x', sha256: '0'.repeat(64) } } })));
    assert.equal(unsized.status, 400);
    assert.equal(unsized.json.error, 'PG_FN_BAD_EVENT');
    assert.match(String(unsized.json.message), /^data\.event: url, size .* are required$/);

    const forged = await postIngest('msg_forged', body, { secret: 'whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==' });
    assert.equal(forged.status, 401);
    assert.equal(forged.json.error, 'PG_FN_UNAUTHORIZED');
    const stale = await postIngest('msg_stale', body, { timestamp: Math.floor(Date.now() / 1000) - 3600 });
    assert.equal(stale.status, 401);
    assert.match(String(stale.json.message), /tolerance/);
    const ids = (await items()).map((i) => i.id);
    assert.ok(!ids.includes('msg_forged') && !ids.includes('msg_stale'), 'a refused request left an item');
  });

  test('no 2xx without the index: with DynamoDB unreachable the edge answers 451 and nothing is queued; the sender\'s retry succeeds', async () => {
    const rcpt = 'carol@e2e.example.test';
    const body = message('index down');
    const reply = await sendWhileDown(dynProxy, rcpt, body);
    assert.equal(reply.code, 451, reply.text);
    assert.equal((await itemFor(rcpt)).length, 0);
    assert.equal(await depth(queue.url), 0);
    const retry = await send(rcpt, body);
    assert.equal(retry.code, 250, retry.text);
    const [item] = await itemFor(rcpt);
    assert.equal(item?.status, 'enqueued');
    const before = good.got.length;
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > before);
    assert.equal(verifiedDownstream(good, before).event.data.subject, 'index down');
  });

  test('a crash between the index write and the enqueue (SQS unreachable): 451, the item stays pending, and the retry enqueues and delivers once', async () => {
    const rcpt = 'bob@e2e.example.test';
    const body = message('queue down');
    const reply = await sendWhileDown(sqsProxy, rcpt, body);
    assert.equal(reply.code, 451, reply.text);
    const [pending] = await itemFor(rcpt);
    assert.equal(pending?.status, 'pending', 'the index write happened, the enqueue did not');
    assert.equal(await depth(queue.url), 0);

    const retry = await send(rcpt, body);
    assert.equal(retry.code, 250, retry.text);
    const list = await itemFor(rcpt);
    assert.equal(list.length, 1);
    assert.equal(list[0]!.id, pending!.id, 'the retry carries the same delivery id');
    assert.equal(list[0]!.status, 'enqueued');
    const before = good.got.length;
    await pollUntil(sqs, lambda, routeFn(), async () => good.got.length > before && (await depth(queue.url)) === 0);
    assert.equal(good.got.length, before + 1, 'delivered exactly once');
    assert.equal(verifiedDownstream(good, before).event.data.subject, 'queue down');
  });

  test('a downstream 503 ends in the dead-letter queue after maxReceiveCount tries; redrive brings it back and never re-sends to the destination that succeeded', async () => {
    const rcpt = 'dave@split.example.test';
    const body = message('split delivery');
    flakyStatus = 503;
    const goodBefore = good.got.length;
    const flakyBefore = flaky.got.length;
    assert.equal((await send(rcpt, body)).code, 250);
    const [item] = await itemFor(rcpt);
    assert.ok(item);
    await pollUntil(sqs, lambda, routeFn(), async () => (await depth(dlq.url)) === 1 && (await depth(queue.url)) === 0);
    assert.equal(good.got.length, goodBefore + 1, 'the healthy destination got it once');
    assert.equal(flaky.got.length, flakyBefore + MAX_RECEIVES, `the failing destination was tried ${MAX_RECEIVES} times`);
    const [failed] = await itemFor(rcpt);
    assert.equal(failed!.deliveries.good, 'delivered');
    assert.equal(failed!.deliveries.flaky, 'dead', 'the index says the job was dead-lettered');

    // A job for the destination that succeeded lands in the DLQ too (as when a
    // delivery succeeded but the function died before SQS deleted the job).
    await sqs.send(
      new SendMessageCommand({
        QueueUrl: dlq.url,
        MessageBody: JSON.stringify({ v: 1, id: item.id, destination: 'good', key: item.eventKey, receivedAt: new Date().toISOString() }),
      }),
    );
    assert.equal(await depth(dlq.url), 2);

    flakyStatus = 204;
    const onlyFlaky = await invoke('redrive', { destination: 'flaky' });
    assert.deepEqual({ moved: onlyFlaky.moved, kept: onlyFlaky.kept }, { moved: 1, kept: 1 });
    await pollUntil(sqs, lambda, routeFn(), () => flaky.got.length === flakyBefore + MAX_RECEIVES + 1);
    const first = verifiedDownstream(flaky, flakyBefore);
    const redriven = verifiedDownstream(flaky, flakyBefore + MAX_RECEIVES);
    assert.equal(redriven.id, first.id, 'same webhook-id on every attempt');
    assert.ok(redriven.timestamp >= first.timestamp, 're-signed at send time');
    assert.equal(redriven.event.data.subject, 'split delivery');

    const rest = await invoke('redrive', {});
    assert.equal(rest.moved, 1);
    assert.equal(await depth(dlq.url), 0);
    for (let i = 0; i < 5; i++) await pollOnce(sqs, lambda, routeFn());
    assert.equal(await depth(queue.url), 0);
    assert.equal(good.got.length, goodBefore + 1, 'redrive did not re-send to the destination that had succeeded');
    const [done] = await itemFor(rcpt);
    assert.deepEqual(done!.deliveries, { good: 'delivered', flaky: 'delivered' });
  });

  test('a dead letter the dead-letter queue no longer holds (SQS retention passed) is resent from the index by redrive from: "index", once', async () => {
    const rcpt = 'erin@split.example.test';
    const since = new Date(Date.now() - 1000).toISOString();
    flakyStatus = 503;
    const flakyBefore = flaky.got.length;
    assert.equal((await send(rcpt, message('expired dead letter'))).code, 250);
    await pollUntil(sqs, lambda, routeFn(), async () => (await depth(dlq.url)) === 1 && (await depth(queue.url)) === 0);
    const [item] = await itemFor(rcpt);
    assert.equal(item!.deliveries.flaky, 'dead');
    // SQS drops the dead letter after its retention: here, take it out by hand.
    for (let left = await depth(dlq.url); left > 0; left = await depth(dlq.url)) {
      const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl: dlq.url, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
      for (const m of r.Messages ?? []) await sqs.send(new DeleteMessageCommand({ QueueUrl: dlq.url, ReceiptHandle: m.ReceiptHandle! }));
    }
    // The queue form of redrive has nothing left to move.
    assert.equal((await invoke('redrive', { since })).moved, 0);
    // A filter that matches nothing moves nothing and leaves the mark as it was.
    const other = await invoke('redrive', { from: 'index', since, destination: 'good' });
    assert.equal(other.moved, 0);
    assert.equal((await itemFor(rcpt))[0]!.deliveries.flaky, 'dead');

    flakyStatus = 204;
    const resent = await invoke('redrive', { from: 'index', since });
    assert.deepEqual({ moved: resent.moved, examined: resent.examined }, { moved: 1, examined: 1 });
    assert.equal((await itemFor(rcpt))[0]!.deliveries.flaky, 'redriven');
    await pollUntil(sqs, lambda, routeFn(), () => flaky.got.length === flakyBefore + MAX_RECEIVES + 1);
    const first = verifiedDownstream(flaky, flakyBefore);
    const again = verifiedDownstream(flaky, flakyBefore + MAX_RECEIVES);
    assert.equal(again.id, first.id, 'the same webhook-id as the attempts that died');
    assert.equal(again.event.data.subject, 'expired dead letter');
    assert.equal((await itemFor(rcpt))[0]!.deliveries.flaky, 'delivered');
    // Delivered now: a second run finds nothing dead.
    assert.equal((await invoke('redrive', { from: 'index', since })).moved, 0);
    for (let i = 0; i < 3; i++) await pollOnce(sqs, lambda, routeFn());
    assert.equal(flaky.got.length, flakyBefore + MAX_RECEIVES + 1, 'sent once');
  });

  test('one transaction for two tenants: each destination gets only its own recipient, under the edge\'s webhook-id for it', async () => {
    const data = await send(['ann@tenant-a.example.test', 'ben@tenant-b.example.test'], message('two tenants'));
    assert.equal(data.code, 250, data.text);
    const [item] = await itemFor('ann@tenant-a.example.test');
    assert.deepEqual(item?.rcptTo, ['ann@tenant-a.example.test', 'ben@tenant-b.example.test']);
    const [aBefore, bBefore] = [good.got.length, other.got.length];
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > aBefore && other.got.length > bBefore);
    const a = verifiedDownstream(good, aBefore) as ReturnType<typeof verifiedDownstream> & { event: { data: { envelope: { rcptTo: { address: string }[] } } } };
    const bGot = other.got[bBefore]!;
    const b = new Webhook(DOWN_SECRET).verify(bGot.body.toString('utf8'), Object.fromEntries(Object.entries(bGot.headers).map(([k, v]) => [k, String(v)]))) as {
      data: { envelope: { rcptTo: { address: string }[] }; raw: { sha256: string } };
    };
    assert.deepEqual(a.event.data.envelope.rcptTo.map((r) => r.address), ['ann@tenant-a.example.test']);
    assert.deepEqual(b.data.envelope.rcptTo.map((r) => r.address), ['ben@tenant-b.example.test']);
    assert.equal(a.id, deliveryId('sender@example.org', ['ann@tenant-a.example.test'], b.data.raw.sha256, 'tenant-a'));
    assert.equal(String(bGot.headers['webhook-id']), deliveryId('sender@example.org', ['ben@tenant-b.example.test'], b.data.raw.sha256, 'tenant-b'));
  });

  test('a destination named "event" that takes a claim-check pointer for only its own recipient: its copy does not replace the stored event', async () => {
    const data = await send(['cat@tenant-c.example.test', 'ann@tenant-a.example.test'], message('pointer for one tenant'));
    assert.equal(data.code, 250, data.text);
    const [item] = await itemFor('cat@tenant-c.example.test');
    assert.ok(item);
    const [aBefore, cBefore] = [good.got.length, other.got.length];
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > aBefore && other.got.length > cBefore);
    const got = other.got[cBefore]!;
    const pointer = new Webhook(DOWN_SECRET).verify(got.body.toString('utf8'), Object.fromEntries(Object.entries(got.headers).map(([k, v]) => [k, String(v)]))) as {
      type: string;
      data: { envelope: { rcptTo: { address: string }[] }; event: { url: string; sha256: string } };
    };
    assert.equal(pointer.type, 'email.received.pointer');
    assert.deepEqual(pointer.data.envelope.rcptTo.map((r) => r.address), ['cat@tenant-c.example.test']);
    const linked = Buffer.from(await (await fetch(pointer.data.event.url)).arrayBuffer());
    assert.equal(createHash('sha256').update(linked).digest('hex'), pointer.data.event.sha256);
    const copy = JSON.parse(linked.toString('utf8')) as { data: { envelope: { rcptTo: { address: string }[] } } };
    assert.deepEqual(copy.data.envelope.rcptTo.map((r) => r.address), ['cat@tenant-c.example.test'], 'the link serves only this destination\'s recipient');
    // The stored event is still the whole one: a redrive of the other destination finds its recipient.
    const stored = JSON.parse((await object(item.eventKey)).toString('utf8')) as { data: { envelope: { rcptTo: { address: string }[] } } };
    assert.deepEqual(stored.data.envelope.rcptTo.map((r) => r.address), ['cat@tenant-c.example.test', 'ann@tenant-a.example.test']);
    const [after] = await itemFor('cat@tenant-c.example.test');
    assert.deepEqual(after?.deliveries, { event: 'delivered', 'tenant-a': 'delivered' });
  });

  test('a recipient the functions\' routes do not cover: 451 from the edge, nothing stored, nothing lost', async () => {
    const rcpt = 'zed@nowhere.example.test';
    const reply = await send(rcpt, message('no route'));
    assert.equal(reply.code, 451, reply.text);
    assert.equal((await itemFor(rcpt)).length, 0);
    assert.match(fn.output(), /no destination in the routes file for zed@nowhere\.example\.test/);
  });

  test('redrive refuses a malformed filter or an unknown source', async () => {
    const out = await lambda.send(new InvokeCommand({ FunctionName: fn.functionName('redrive'), Payload: Buffer.from(JSON.stringify({ since: 'yesterday' })) }));
    assert.ok(out.FunctionError, 'a bad filter is a function error');
    assert.match(Buffer.from(out.Payload ?? []).toString('utf8'), /since must be an ISO-8601 date-time/);
    const source = await lambda.send(new InvokeCommand({ FunctionName: fn.functionName('redrive'), Payload: Buffer.from(JSON.stringify({ from: 's3' })) }));
    assert.ok(source.FunctionError, 'an unknown source is a function error');
    assert.match(JSON.parse(Buffer.from(source.Payload ?? []).toString('utf8')).errorMessage, /from must be "dlq" or "index"/);
  });

  test('the edge\'s lambda target invokes ingest through the Lambda Invoke API: stored, indexed and routed the same way', async () => {
    const rcpt = 'erin@lambda.example.test';
    const body = message('over invoke');
    const reply = await send(rcpt, body);
    assert.equal(reply.code, 250, reply.text);
    const [item] = await itemFor(rcpt);
    assert.equal(item?.status, 'enqueued');
    const event = JSON.parse((await object(item.eventKey)).toString('utf8')) as { type: string; data: { subject: string } };
    assert.equal(event.data.subject, 'over invoke');
    const before = good.got.length;
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > before);
    assert.equal(verifiedDownstream(good, before).event.data.subject, 'over invoke');
  });

  test('an event over the edge\'s maxEventSize arrives as a claim-check pointer; ingest fetches, checks and stores the whole event', async () => {
    const rcpt = 'frank@big.example.test';
    const body = message('claim check', 4000);
    const reply = await send(rcpt, body);
    assert.equal(reply.code, 250, reply.text);
    // The edge stored the event in its blob store for the pointer (it went as a pointer, not whole).
    const blobDir = path.join(edge.dataDir, 'blobs');
    let stored = false;
    for (const f of await listFiles(blobDir)) {
      const text = (await readFile(path.join(blobDir, f))).toString('utf8');
      if (text.startsWith('{') && text.includes('"type":"email.received"') && text.includes('"subject":"claim check"')) stored = true;
    }
    assert.ok(stored, 'the whole event was put in the edge\'s blob store for the claim check');
    const [item] = await itemFor(rcpt);
    assert.ok(item);
    const event = JSON.parse((await object(item.eventKey)).toString('utf8')) as { type: string; data: { subject: string; text: string } };
    assert.equal(event.type, 'email.received', 'the whole event is stored, not the pointer');
    assert.equal(event.data.subject, 'claim check');
    assert.ok(event.data.text.length > 3000);
    const before = good.got.length;
    await pollUntil(sqs, lambda, routeFn(), () => good.got.length > before);
  });

  test('routes kept in S3: the functions follow a changed object without a deploy; a bad one is refused and the routes in force keep working', async () => {
    try {
      // The same destination id, now to another receiver.
      const moved = structuredClone(routesDoc);
      moved.routes[0]!.targets = [{ ...moved.routes[0]!.targets[0]!, url: other.url }];
      await putRoutes(JSON.stringify(moved));
      await new Promise((r) => setTimeout(r, 1500));
      const reply = await send('grace@e2e.example.test', message('after the move'));
      assert.equal(reply.code, 250, reply.text);
      const before = other.got.length;
      const goodBefore = good.got.length;
      await pollUntil(sqs, lambda, routeFn(), () => other.got.length > before);
      assert.equal(verifiedDownstream(other, before).event.data.subject, 'after the move');
      assert.equal(good.got.length, goodBefore, 'the old receiver got nothing');

      // A version the functions refuse (they deliver to webhooks only): logged, and the routes in force stay.
      await putRoutes('routes:\n  - recipients: ["*@e2e.example.test"]\n    targets:\n      - { type: lambda, functionName: elsewhere }\n');
      await new Promise((r) => setTimeout(r, 1500));
      const again = await send('heidi@e2e.example.test', message('after the bad one'));
      assert.equal(again.code, 250, again.text);
      const before2 = other.got.length;
      await pollUntil(sqs, lambda, routeFn(), () => other.got.length > before2);
      assert.equal(verifiedDownstream(other, before2).event.data.subject, 'after the bad one');
      assert.match(fn.output(), /configuration reload failed; the configuration in force stays/);
      assert.match(fn.output(), /webhooks only/);
    } finally {
      await putRoutes(JSON.stringify(routesDoc));
    }
  });
});
