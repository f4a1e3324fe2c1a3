/**
 * The circuit breaker (delivery.breaker) per delivery mode: it refuses at
 * RCPT (451 4.4.1) only on sync routes, where a refusal helps the sender
 * (its 250 would wait for a target known to be down). queue and
 * sync-then-queue routes keep accepting while the target is down: the spool
 * holds the message (docs/queue.md, docs/configuration.md "Circuit breaker").
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { startGateway } from './helpers/gateway.js';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { startReceiver } from './helpers/receiver.js';

async function transaction(port: number, subject: string) {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    await c.cmd('EHLO client.example');
    const r = await sendMail(c, 'sender@example.org', [`${subject}@b.test`], simpleMessage(subject));
    return { subject, rcpt: r.rcpt[0]!, data: r.data, repliedAt: Date.now() };
  } finally {
    c.close();
  }
}

const BREAKER = { failures: 2, cooldown: '10m' };

describe('circuit breaker per mode, during a receiver outage', () => {
  for (const mode of ['sync', 'queue', 'sync-then-queue'] as const) {
    test(`${mode}: ${mode === 'sync' ? '451 4.4.1 at RCPT once the target is marked down' : 'every message 250 and spooled, also after the target is marked down'}`, async () => {
      // Down for the whole test: 503 to every request, after a pause, so a
      // reply that waited for an attempt is told apart by order, not by time.
      const hook = await startReceiver(() => ({ status: 503, delayMs: 1500 }));
      const subjectOf = (body: Buffer) => /"subject":"([^"]*)"/.exec(body.toString('utf8'))?.[1];
      /** Whether the receiver had answered an attempt at this message before its DATA reply. */
      const waitedForAnAttempt = (r: { subject: string; repliedAt: number }) =>
        hook.got.some((g) => subjectOf(g.body) === r.subject && g.answeredAt !== undefined && g.answeredAt <= r.repliedAt);
      const tg = await startGateway({
        delivery: { breaker: BREAKER, retry: { maxAttempts: 1 } },
        queue: { retry: { initialDelay: '10m' } },
        routes: [{ name: 'r', recipients: ['*@b.test'], mode, targets: [{ type: 'webhook', id: 'hook', url: hook.url }] }],
      });
      try {
        const results = [];
        for (let i = 0; i < 5; i++) results.push(await transaction(tg.port, `m${i}`));
        if (mode === 'sync') {
          // Two failures (451 after DATA) mark it down; then the sender is told at RCPT.
          assert.deepEqual(results.slice(0, 2).map((r) => [r.rcpt.code, r.data?.code]), [[250, 451], [250, 451]]);
          for (const r of results.slice(2)) {
            assert.equal(r.rcpt.code, 451);
            assert.match(r.rcpt.text, /^4\.4\.1 /);
          }
          assert.equal(hook.got.length, 2, 'no request while the target is marked down');
        } else {
          for (const r of results) {
            assert.equal(r.rcpt.code, 250, `RCPT ${r.rcpt.code} ${r.rcpt.text}`);
            assert.equal(r.data?.code, 250, `DATA ${r.data?.code} ${r.data?.text}`);
          }
          const spooled = await readdir(path.join(tg.dataDir, 'spool', 'active'));
          assert.equal(spooled.length, 5, `one item per message in the spool (${spooled.join(', ')})`);
          if (mode === 'sync-then-queue') {
            // Tried at once while the breaker was closed (the reply waited
            // for the 503); once the target is marked down, spooled without
            // making the sender wait for a try.
            assert.deepEqual(results.map(waitedForAnAttempt), [true, true, false, false, false]);
          } else {
            assert.deepEqual(results.map(waitedForAnAttempt), [false, false, false, false, false], 'queue mode answers once spooled');
          }
        }
      } finally {
        await tg.close();
        await hook.close();
      }
    });
  }
});
