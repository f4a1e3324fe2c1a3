/**
 * The DynamoDB skip-store (dynalite on loopback): two gateway instances share
 * it, so a sender's retry on the *other* instance re-runs only the target that
 * failed, with the same webhook-id; plus the store's own contract (conditional
 * write, TTL checked on read, advisory on failure).
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { RawSmtp, sendMail, simpleMessage, sendOne } from './helpers/smtp-client.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { freePort, startDynamo, TEST_REGION, type LocalDynamo } from './helpers/aws.js';
import { DynamoSkipStore } from '../src/delivery/dynamo-skip-store.js';
import { validateConfig } from '../src/config/load.js';

const send = sendOne;

async function receiver(status: (n: number) => number) {
  const ids: string[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      ids.push(String(req.headers['webhook-id']));
      res.writeHead(status(ids.length)).end();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, ids, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/in` };
}

describe('DynamoDB skip-store (dynalite)', () => {
  let db: LocalDynamo;
  before(async () => {
    db = await startDynamo();
    await db.createSkipTable('postgate-skip');
  });
  after(async () => {
    await db?.stop();
  });

  test('two instances share it: the retry on the other instance calls only the failed target, same webhook-id', async () => {
    const a = await receiver(() => 204);
    const b = await receiver((n) => (n === 1 ? 503 : 204)); // fails the first time only
    const doc = {
      delivery: { retry: { maxAttempts: 1 }, skipStore: { type: 'dynamodb', table: 'postgate-skip', endpoint: db.endpoint, region: TEST_REGION, ttl: '5d' } },
      routes: [{ recipients: ['*@multi.example.test'], targets: [{ type: 'webhook', url: a.url }, { type: 'webhook', url: b.url }] }],
    };
    const gw1 = await startGateway(doc);
    const gw2 = await startGateway(doc);
    try {
      const body = simpleMessage('two targets');
      const first = await send(gw1.port, 'x@multi.example.test', body);
      assert.equal(first.code, 451, first.raw);
      assert.equal(a.ids.length, 1);
      assert.equal(b.ids.length, 1);
      assert.notEqual(a.ids[0], b.ids[0]);

      // The sender retries the same bytes, and reaches the other instance.
      const retry = await send(gw2.port, 'x@multi.example.test', body);
      assert.equal(retry.code, 250, retry.raw);
      assert.equal(a.ids.length, 1, 'the target that had succeeded is not called again');
      assert.deepEqual(b.ids, [b.ids[0], b.ids[0]], 'the failed one is, with the same webhook-id');
      assert.ok(gw2.logs.some((l) => l.msg === 'delivery' && l.skipped === true && String(l.target).includes(new URL(a.url).host)));

      // A further retry (the 250 was lost, say) on the first instance calls nobody.
      const third = await send(gw1.port, 'x@multi.example.test', body);
      assert.equal(third.code, 250, third.raw);
      assert.equal(a.ids.length + b.ids.length, 3);

      // Other bytes are another message: both targets are called.
      const other = await send(gw2.port, 'x@multi.example.test', simpleMessage('another'));
      assert.equal(other.code, 250, other.raw);
      assert.equal(a.ids.length, 2);
      assert.equal(b.ids.length, 3);
    } finally {
      await gw1.close();
      await gw2.close();
      a.server.close();
      b.server.close();
    }
  });

  test('has/add: conditional write, TTL attribute in epoch seconds, expiry checked on read', async () => {
    let now = Date.UTC(2026, 10, 23, 12, 0, 0);
    const ttl = 3 * 86_400_000;
    const opts = { table: 'postgate-skip', endpoint: db.endpoint, region: TEST_REGION, ttl, timeout: 2_000, now: () => now };
    const s1 = new DynamoSkipStore(opts);
    const s2 = new DynamoSkipStore(opts);
    try {
      const id = 'msg_0123456789abcdef0123456789abcdef';
      assert.equal(await s1.has(id), false);
      await s1.add(id);
      assert.equal(await s1.has(id), true);
      assert.equal(await s2.has(id), true, 'seen by another instance');
      const item = async () => (await db.client.send(new GetItemCommand({ TableName: 'postgate-skip', Key: { id: { S: id } }, ConsistentRead: true }))).Item!;
      const first = await item();
      assert.equal(first.expiresAt!.N, String((now + ttl) / 1000));
      assert.equal(first.doneAt!.N, String(now));

      // A second success keeps the first record (conditional put), without an error.
      now += 3600_000;
      await s2.add(id);
      assert.equal((await item()).doneAt!.N, first.doneAt!.N);

      // Past the TTL the item may still be there (DynamoDB deletes lazily), but it no longer counts.
      now = Date.UTC(2026, 10, 26, 12, 0, 0) + 1000;
      assert.ok((await item()).expiresAt, 'dynalite keeps the expired item');
      assert.equal(await s1.has(id), false);
      // ... and a new success replaces it.
      await s1.add(id);
      assert.equal((await item()).doneAt!.N, String(now));
      assert.equal(await s2.has(id), true);
    } finally {
      await s1.close();
      await s2.close();
    }
  });

  test('advisory: a missing table or an unreachable endpoint rejects, and the gateway delivers anyway', async () => {
    const missing = new DynamoSkipStore({ table: 'no-such-table', endpoint: db.endpoint, region: TEST_REGION, ttl: 60_000, timeout: 2_000, now: Date.now });
    await assert.rejects(missing.has('msg_x'), /ResourceNotFound|non-existent table|Requested resource not found/);
    await missing.close();

    const hook = await receiver(() => 204);
    const tg: TestGateway = await startGateway({
      delivery: { skipStore: { type: 'dynamodb', table: 'postgate-skip', endpoint: `http://127.0.0.1:${await freePort()}`, region: TEST_REGION, timeout: '500ms' } },
      routes: [{ recipients: ['*@solo.example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const body = simpleMessage('store down');
      const data = await send(tg.port, 'y@solo.example.test', body);
      assert.equal(data.code, 250, data.raw);
      assert.ok(tg.logs.some((l) => l.msg === 'skip-store write failed (a sender retry may deliver again)'));
      // Nothing remembered: a retry delivers again (a duplicate, never a loss).
      assert.equal((await send(tg.port, 'y@solo.example.test', body)).code, 250);
      assert.equal(hook.ids.length, 2);
      assert.equal(hook.ids[0], hook.ids[1]);
    } finally {
      await tg.close();
      hook.server.close();
    }
  });

  test('config: memory by default; dynamodb needs a valid table name', () => {
    const dflt = validateConfig({});
    assert.deepEqual(dflt.delivery.skipStore, { type: 'memory', ttl: 86_400_000 });
    const d = validateConfig({ delivery: { skipStore: { type: 'dynamodb', table: 'postgate-skip' } } });
    assert.deepEqual(d.delivery.skipStore, { type: 'dynamodb', table: 'postgate-skip', ttl: 7 * 86_400_000, timeout: 2_000 });
    assert.throws(() => validateConfig({ delivery: { skipStore: { type: 'dynamodb', table: 'a b' } } }), /delivery\.skipStore\.table: not a DynamoDB table name/);
    assert.throws(() => validateConfig({ delivery: { skipStore: { type: 'redis' } } }), /delivery\.skipStore/);
  });
});
