/**
 * A process that runs console retention and dies by SIGKILL in the middle of
 * it (after `killAfter` messages were removed): the crash the retention test
 * recovers from. Usage: node console-sweep-child.js DIR DAYS KILL_AFTER
 */
import pino from 'pino';
import { ConsoleService } from '../../src/console/store.js';

const [dir, days, killAfter] = process.argv.slice(2);
const svc = new ConsoleService({
  dir: dir!,
  retention: { days: Number(days), maxBytes: Number.MAX_SAFE_INTEGER },
  sweepIntervalMs: 3_600_000,
  now: Date.now,
  logger: pino({ level: 'silent' }),
  sweepChunk: 10,
  onSweepStep: (removed) => {
    if (removed >= Number(killAfter)) process.kill(process.pid, 'SIGKILL');
  },
});
await svc.sweep();
// Not reached when the kill comes first.
process.stdout.write('finished\n');
