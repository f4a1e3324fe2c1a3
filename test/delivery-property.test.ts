/**
 * The acknowledgement contract (docs/architecture.md §2) as a property, over random
 * per-target behaviour: two required webhook targets and an optional one,
 * each answering every attempt with 2xx, a JSON reject, a JSON tempfail,
 * 500, 404, silence (timeout) or a reset connection; and sometimes the
 * gateway is stopped while the delivery runs.
 *
 *   - the client saw 250 ⇒ every required target answered 2xx for the
 *     transaction's delivery id;
 *   - the client saw 5xx ⇒ some target refused the message on purpose;
 *   - a required target that never answered 2xx ⇒ no 250.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { RawSmtp, sendMail, simpleMessage, type Reply } from './helpers/smtp-client.js';
import { startReceiver, type Answer, type Receiver } from './helpers/receiver.js';

type Behaviour = 'ok' | 'reject' | 'tempfail' | '500' | '404' | 'silence' | 'reset';
const BEHAVIOURS: Behaviour[] = ['ok', 'reject', 'tempfail', '500', '404', 'silence', 'reset'];

function answer(b: Behaviour): Answer {
  switch (b) {
    case 'ok':
      return { status: 204 };
    case 'reject':
      return { status: 200, json: { action: 'reject', code: 550, enhanced: '5.1.1', message: 'No such user here' } };
    case 'tempfail':
      return { status: 200, json: { action: 'tempfail', message: 'Busy' } };
    case '500':
      return { status: 500 };
    case '404':
      return { status: 404 };
    case 'silence':
      return { fault: 'silence' };
    case 'reset':
      return { fault: 'reset' };
  }
}

interface Run {
  /** Per target, the answer to each attempt (the last one repeats). */
  scripts: [Behaviour[], Behaviour[], Behaviour[]];
  /** Stop the gateway when the first required target gets its first request. */
  kill: boolean;
}

interface Logged {
  run: string;
  webhookId: string;
  behaviour: Behaviour;
}

describe('delivery contract (property, fast-check)', () => {
  const receivers: Receiver[] = [];
  const logs: Logged[][] = [[], [], []];
  const runs = new Map<string, { run: Run; attempts: number[]; onFirst?: () => void }>();

  before(async () => {
    for (let i = 0; i < 3; i++) {
      receivers.push(
        await startReceiver((req) => {
          const subject = /"subject":"([^"]+)"/.exec(req.body.toString('utf8'))?.[1] ?? '';
          const r = runs.get(subject);
          if (!r) return { status: 400 };
          const n = r.attempts[i]!++;
          if (i === 0 && n === 0) r.onFirst?.();
          const script = r.run.scripts[i]!;
          const b = script[Math.min(n, script.length - 1)]!;
          logs[i]!.push({ run: subject, webhookId: String(req.headers['webhook-id']), behaviour: b });
          return answer(b);
        }),
      );
    }
  });
  after(async () => {
    await Promise.all(receivers.map((r) => r.close()));
  });

  test('250 only when every required target acknowledged; 5xx only when a target refused on purpose', async () => {
    let seq = 0;
    const script = fc.array(fc.constantFrom(...BEHAVIOURS), { minLength: 1, maxLength: 3 });
    await fc.assert(
      fc.asyncProperty(fc.tuple(script, script, script), fc.boolean(), fc.boolean(), async (scripts, kill, killBias) => {
        const run: Run = { scripts, kill: kill && killBias };
        const subject = `run-${++seq}-${Date.now()}`;
        const entry: { run: Run; attempts: number[]; onFirst?: () => void } = { run, attempts: [0, 0, 0] };
        runs.set(subject, entry);
        const tg: TestGateway = await startGateway({
          shutdown: { grace: 0 },
          delivery: { deadline: '600ms', retry: { initialDelay: '10ms', maxDelay: '40ms' } },
          routes: [
            {
              recipients: ['*@prop.test'],
              targets: [
                { type: 'webhook', id: 'req-a', url: receivers[0]!.url, timeout: '150ms' },
                { type: 'webhook', id: 'req-b', url: receivers[1]!.url, timeout: '150ms' },
                { type: 'webhook', id: 'opt-c', url: receivers[2]!.url, timeout: '150ms', required: false },
              ],
            },
          ],
        });
        let stopped: Promise<void> | null = null;
        if (run.kill) entry.onFirst = () => (stopped = tg.gw.stop());
        let reply: Reply | null = null;
        try {
          const c = await RawSmtp.connect(tg.port);
          await c.read();
          await c.cmd('EHLO prop.example');
          try {
            reply = (await sendMail(c, 'p@example.org', ['x@prop.test'], simpleMessage(subject))).data;
          } catch {
            reply = null; // the connection went away: no reply at all
          }
          c.close();
        } finally {
          if (stopped) await stopped;
          else await tg.close();
          if (stopped) await tg.close().catch(() => undefined);
        }
        const mine = logs.map((l) => l.filter((e) => e.run === subject));
        const acked = (i: number) => mine[i]!.some((e) => e.behaviour === 'ok');
        if (reply?.code === 250) {
          assert.ok(acked(0) && acked(1), `250 but required targets answered ${JSON.stringify(mine.slice(0, 2))}`);
          // and each acknowledgement was for one delivery id, the same on every attempt
          for (const i of [0, 1]) assert.equal(new Set(mine[i]!.map((e) => e.webhookId)).size, 1);
        }
        if (reply && reply.code >= 500) {
          assert.ok(
            mine.slice(0, 2).some((m) => m.some((e) => e.behaviour === 'reject')),
            `${reply.code} ${reply.text} without a deliberate refusal: ${JSON.stringify(mine)}`,
          );
        }
        if (!acked(0) || !acked(1)) assert.notEqual(reply?.code, 250);
        runs.delete(subject);
      }),
      { numRuns: Number(process.env.PROPERTY_RUNS ?? 40), endOnFailure: true },
    );
  });
});
