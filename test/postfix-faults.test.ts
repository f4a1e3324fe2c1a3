/**
 * The short Postfix fault run (the full one: `npm run postfix-faults`): a
 * real Postfix relays 300 messages to postgate while its webhook receiver
 * fails on a schedule and postgate is SIGKILLed once; in sync mode and in
 * queued mode. Nothing may be lost and every duplicate must carry the same
 * webhook-id. Needs the Debian `postfix` package and root (CI installs it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { faultRun } from './postfix/faults.js';
import { postfixAvailable } from './postfix/instance.js';

const skip = postfixAvailable() ?? false;

for (const mode of ['sync', 'queue'] as const) {
  test(`${mode} mode: 300 messages through Postfix, receiver failing on a schedule, one SIGKILL: nothing lost, duplicates keep their webhook-id`, { skip, timeout: 180_000 }, async (t) => {
    const r = await faultRun({ messages: 300, mode, kills: 1, timeoutMs: 120_000 });
    t.diagnostic(JSON.stringify(r));
    assert.equal(r.acceptedByPostfix, 300);
    assert.equal(r.kills, 1);
    assert.ok(r.receiverAnswers['503 burst']! + r.receiverAnswers['503 random']! + r.receiverAnswers.reset! > 0, 'faults were injected');
    assert.equal(r.lost, 0, 'lost messages');
    assert.equal(r.delivered, 300);
    assert.equal(r.duplicatesWithOtherId, 0, 'a duplicate with another webhook-id');
  });
}
