/**
 * Fuzzing the SMTP session over real sockets (short run; `npm run soak` runs
 * many more): random sessions of valid transactions with mutated commands and
 * bodies, junk, random bytes, over-long lines, BDAT with wrong counts, each
 * written in random TCP segments. Properties: every reply is a well-formed
 * SMTP reply; every session ends (221, or closed by the server) well within
 * its budget; every message answered 250 reached the receiver with exactly the
 * bytes sent (after dot-unstuffing); no internal error was logged; and the
 * in-flight byte gauge is back to 0 at the end (nothing held).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { runSession, sessionArb } from './fuzz/smtp.js';

let tg: TestGateway;
let hook: Receiver;
const events = new Map<string, { sha256: string; size: number }>();

before(async () => {
  hook = await startReceiver((r) => {
    const e = JSON.parse(r.body.toString('utf8')) as { data: { id: string; raw: { sha256: string; size: number } } };
    events.set(e.data.id, e.data.raw);
    return { status: 204 };
  });
  tg = await startGateway({
    smtp: { maxMessageSize: '1MiB', socketTimeout: '5s' },
    routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    // postmaster mail goes to the same receiver, so every 250 can be checked there
    postmaster: { targets: [{ type: 'webhook', url: hook.url }] },
  });
});

after(async () => {
  await tg.close();
  await hook.close();
});

test('random SMTP sessions: well-formed replies, every session ends, every 250 delivered byte-exact, nothing held', async () => {
  let sessions = 0;
  let acceptedTotal = 0;
  await fc.assert(
    fc.asyncProperty(sessionArb, async (s) => {
      const r = await runSession(tg.port, s);
      sessions++;
      assert.deepEqual(r.malformed, [], 'malformed reply lines');
      assert.notEqual(r.ended, 'timeout', `the session did not end within its budget (${r.ms} ms): ${r.replies.slice(-3).join(' | ')}`);
      for (const a of r.accepted) {
        acceptedTotal++;
        const got = events.get(a.queueId);
        if (!got) {
          // The same sender, recipients and bytes as an earlier message: the
          // skip-store takes it for a retry of a delivered message (same
          // webhook-id) and skips the POST. Then those bytes must be there.
          assert.ok(
            tg.logs.some((l) => l.txn === a.queueId && l.msg === 'delivery' && l.skipped === true),
            `250 for ${a.queueId} but the receiver has no event and the delivery was not skipped as a repeat`,
          );
          assert.ok([...events.values()].some((e) => e.sha256 === a.sha256 && e.size === a.size), `${a.queueId}: skipped as a repeat of bytes never delivered`);
          continue;
        }
        assert.equal(got.size, a.size, `${a.queueId}: size`);
        assert.equal(got.sha256, a.sha256, `${a.queueId}: the bytes received differ from the bytes sent`);
      }
    }),
    { numRuns: Number(process.env.FUZZ_RUNS ?? 60), seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined },
  );
  assert.ok(sessions > 0);
  const internal = tg.logs.filter((l) => l.code === 'PG_INTERNAL' || l.level === 50 || l.level === 60);
  assert.deepEqual(internal, [], 'internal errors were logged');
  // The memory budget is released by every transaction, however it ended.
  const until = Date.now() + 5000;
  let gauge = '';
  while (Date.now() < until) {
    const metrics = await (await fetch(`http://127.0.0.1:${tg.opsPort}/metrics`)).text();
    gauge = /^postgate_inflight_message_bytes (\S+)$/m.exec(metrics)?.[1] ?? '';
    if (gauge === '0') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(gauge, '0', 'in-flight message bytes after every session ended');
  process.stderr.write(`fuzz-smtp: ${sessions} sessions, ${acceptedTotal} messages accepted and checked\n`);
});
