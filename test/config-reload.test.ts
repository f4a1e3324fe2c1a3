/**
 * Configuration kept in S3 (fauxqs) and reloaded under a running edge
 * (config/source.ts, config/reload.ts, docs/operations.md "Configuration
 * reload"): new mail follows a changed route without a restart; a
 * transaction already in progress keeps the routes it started with; a bad
 * version is refused (logged, counted, /readyz still ready) and the routes in
 * force keep working; changes outside the routes are named as needing a
 * restart.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { startS3, TEST_REGION, type LocalS3 } from './helpers/aws.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { RawSmtp, sendOne, simpleMessage } from './helpers/smtp-client.js';
import { waitFor } from './helpers/wait.js';
import { openConfigSource } from '../src/config/source.js';
import { buildGateway, type Gateway } from '../src/gateway.js';
import { createLogger } from '../src/ops/logger.js';
import { createMetrics } from '../src/ops/metrics.js';

describe('configuration in S3, reloaded under a running edge', () => {
  let s3: LocalS3;
  let a: Receiver;
  let b: Receiver;
  let dir: string;
  let gw: Gateway;
  const lines: string[] = [];
  const logs = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

  /** The configuration document, its one route to `url`; `extra` is more YAML at the top level. */
  const doc = (url: string, extra = '') => `
smtp:
  listen: 127.0.0.1:0
  hostname: mx.test.local
  earlyTalker: { mode: "off" }
http:
  listen: 127.0.0.1:0
storage:
  path: ${dir}
reload:
  interval: 1s
delivery:
  denyPrivateAddresses: never
routes:
  - name: app
    recipients: ["*@example.test"]
    targets:
      - type: webhook
        url: ${url}
${extra}`;
  const put = (text: string) => s3.client.send(new PutObjectCommand({ Bucket: 'config', Key: 'edge.yaml', Body: text }));
  const metric = async (result: string) => {
    const text = await (await fetch(`http://127.0.0.1:${gw.opsAddress()!.port}/metrics`)).text();
    return Number(new RegExp(`postgate_config_reloads_total\\{result="${result}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
  };
  const port = () => gw.addresses()[0]!.port;

  before(async () => {
    s3 = await startS3();
    await s3.createBucket('config');
    a = await startReceiver(() => ({ status: 200 }));
    b = await startReceiver(() => ({ status: 200 }));
    dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-reload-'));
    await put(doc(a.url));
    const { config, source } = await openConfigSource({ type: 's3', bucket: 'config', key: 'edge.yaml', endpoint: s3.endpoint, region: TEST_REGION, forcePathStyle: true });
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        cb();
      },
    });
    gw = await buildGateway(config, { configSource: source, logger: createLogger('info', sink), metrics: createMetrics({ defaultMetrics: false }) });
    await gw.start();
  });
  after(async () => {
    await gw?.stop();
    await Promise.all([a?.close(), b?.close(), s3?.stop()]);
    await rm(dir, { recursive: true, force: true });
  });

  test('at start the object\'s routes are in force', async () => {
    const r = await sendOne(port(), 'someone@example.test', simpleMessage('first'));
    assert.equal(r.code, 250, r.raw);
    assert.equal(a.got.length, 1);
    assert.equal(b.got.length, 0);
  });

  test('a changed route: new mail follows it without a restart; a transaction in progress keeps the routes it started with', async () => {
    // MAIL and RCPT under the first version...
    const c = await RawSmtp.connect(port());
    await c.read();
    await c.cmd('EHLO client.example.test');
    assert.equal((await c.cmd('MAIL FROM:<sender@elsewhere.example>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<held@example.test>')).code, 250);
    // ...then the object changes and the gateway reloads it.
    await put(doc(b.url));
    await waitFor(async () => (await metric('reloaded')) === 1, 15_000, 'the reload');
    assert.ok(logs().some((l) => l.msg === 'routes reloaded'), lines.join('\n'));
    assert.equal((await c.cmd('DATA')).code, 354);
    const done = await c.cmd(`${simpleMessage('held').replace(/\r?\n/g, '\r\n')}\r\n.`);
    assert.equal(done.code, 250, done.raw);
    c.close();
    assert.equal(a.got.length, 2, 'the transaction begun before the reload went where its routes said');
    assert.equal(b.got.length, 0);

    const r = await sendOne(port(), 'someone@example.test', simpleMessage('after'));
    assert.equal(r.code, 250, r.raw);
    assert.equal(b.got.length, 1, 'a new transaction follows the new route');
    assert.equal(a.got.length, 2);
  });

  test('a bad version is refused: logged, counted, /readyz stays ready, the routes in force keep working; it is not tried again', async () => {
    await put(doc('not a url'));
    await waitFor(async () => (await metric('failed')) === 1, 15_000, 'the refusal');
    const refused = logs().find((l) => l.msg === 'configuration reload failed; the configuration in force stays');
    assert.ok(refused, lines.join('\n'));
    assert.equal(refused.code, 'PG_CONFIG_RELOAD');
    assert.match(JSON.stringify(refused.err), /routes\[0\]\.targets\[0\]\.url/);
    const ready = await fetch(`http://127.0.0.1:${gw.opsAddress()!.port}/readyz`);
    assert.equal(ready.status, 200);
    const r = await sendOne(port(), 'someone@example.test', simpleMessage('still'));
    assert.equal(r.code, 250, r.raw);
    assert.equal(b.got.length, 2);
    await new Promise((res) => setTimeout(res, 2500));
    assert.equal(await metric('failed'), 1, 'the same object is not refused again every interval');
  });

  test('a queued route cannot be applied to a gateway started without a queue: refused, nothing changes', async () => {
    await put(doc(a.url).replace('  - name: app\n', '  - name: app\n    mode: queue\n'));
    await waitFor(async () => (await metric('failed')) === 2, 15_000, 'the refusal');
    assert.ok(logs().some((l) => l.code === 'PG_CONFIG_RELOAD' && /restart to apply/.test(JSON.stringify(l.err))), lines.join('\n'));
    const r = await sendOne(port(), 'someone@example.test', simpleMessage('queued?'));
    assert.equal(r.code, 250, r.raw);
    assert.equal(b.got.length, 3, 'still the route in force');
  });

  test('a change outside the routes is named as needing a restart; the routes apply at once', async () => {
    await put(doc(a.url, 'limits:\n  memoryBudget: 64MiB\n'));
    await waitFor(async () => (await metric('reloaded')) === 2, 15_000, 'the reload');
    const warn = logs().find((l) => /apply at the next restart/.test(String(l.msg)));
    assert.deepEqual(warn?.keys, ['limits'], lines.join('\n'));
    assert.equal(gw.config.limits.memoryBudget === gw.routesConfig.limits.memoryBudget, false, 'the running limits are the ones it started with');
    const r = await sendOne(port(), 'someone@example.test', simpleMessage('back to a'));
    assert.equal(r.code, 250, r.raw);
    assert.equal(a.got.length, 3);
  });
});
