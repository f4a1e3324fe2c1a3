/**
 * Console retention (docs/console.md, "Retention"): old messages and, past
 * maxBytes, the oldest go with their stored copies; a process killed in the
 * middle of a sweep leaves no entry without its copies and no copy without
 * its entry, and the next sweep finishes the work.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { ConsoleService } from '../src/console/store.js';
import { fixtureMessage } from './helpers/console-fixtures.js';
import { projectRoot } from './helpers/fixtures.js';
import { waitFor } from './helpers/wait.js';

const DAY = 86_400_000;
const quiet = pino({ level: 'silent' });

function service(dir: string, retention: { days: number; maxBytes: number }) {
  return new ConsoleService({ dir, retention, sweepIntervalMs: 3_600_000, now: Date.now, logger: quiet, sweepChunk: 10 });
}

async function fill(dir: string, old: number, recent: number): Promise<void> {
  const svc = service(dir, { days: 365, maxBytes: Number.MAX_SAFE_INTEGER });
  const now = Date.now();
  for (let i = 0; i < old; i++) svc.received(fixtureMessage(now - 10 * DAY + i * 1000, i, 2048));
  for (let i = 0; i < recent; i++) svc.received(fixtureMessage(now - 3_600_000 + i * 1000, old + i, 2048));
  svc.flush();
  await svc.close();
}

describe('console retention', () => {
  test('a sweep killed midway (SIGKILL) leaves every entry with its copies; the next sweep finishes', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-'));
    try {
      await fill(dir, 200, 50);
      const child = spawn(process.execPath, [path.join(projectRoot(), 'dist/test/helpers/console-sweep-child.js'), dir, '3', '60'], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
      const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
      assert.equal(signal, 'SIGKILL', `the child was to die mid-sweep (exit ${code}, ${out})`);
      assert.doesNotMatch(out, /finished/);

      const svc = service(dir, { days: 3, maxBytes: Number.MAX_SAFE_INTEGER });
      try {
        assert.deepEqual(svc.check(), [], 'no orphan copy, no entry without its copy');
        const left = (await svc.list({ limit: 500 })).items.length;
        assert.ok(left >= 250 - 70 && left <= 250 - 60, `${left} messages left after a kill at 60 removals`);
        // Whatever survived is whole: its copies read back.
        const some = (await svc.list({ limit: 500 })).items.at(-1)!;
        assert.ok(await svc.event(some.id));
        assert.ok(await svc.raw(some.id));
        // The sweep at start removes the rest of the old ones.
        svc.start();
        await waitFor(async () => (await svc.list({ limit: 500 })).items.length === 50, 10_000, 'the sweep at start');
        const page = await svc.list({ limit: 500 });
        assert.equal(page.items.length, 50);
        assert.ok(page.items.every((m) => Date.now() - Date.parse(m.receivedAt) < 3 * DAY));
        assert.deepEqual(svc.check(), []);
      } finally {
        await svc.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('maxBytes: past it, the oldest go until the copies fit in 90 % of it', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-'));
    try {
      await fill(dir, 0, 40);
      const probe = service(dir, { days: 365, maxBytes: Number.MAX_SAFE_INTEGER });
      const first = await probe.get((await probe.list({ limit: 1 })).items[0]!.id);
      assert.ok(first?.hasRaw);
      const before = probe.stats();
      await probe.close();
      const per = before.bytes / before.messages;
      const maxBytes = Math.round(before.bytes / 2);
      const svc = service(dir, { days: 365, maxBytes });
      try {
        const removed = await svc.sweep();
        const after = svc.stats();
        // Down to 90 %: one sweep per tenth of the limit, not one per batch written (src/console/store.ts).
        const low = Math.floor(maxBytes * 0.9);
        assert.ok(after.bytes <= low && after.bytes + per > low, `${after.bytes} bytes left, at most ${low}, removed ${removed}`);
        assert.equal(after.messages, 40 - removed);
        const left = (await svc.list({ limit: 500 })).items;
        assert.equal(left.length, 40 - removed);
        // The newest stayed.
        assert.equal(left[0]!.subject, 'fixture 39');
        assert.deepEqual(svc.check(), []);
      } finally {
        await svc.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
