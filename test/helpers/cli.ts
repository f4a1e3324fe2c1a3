import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { projectRoot } from './fixtures.js';

export const CLI = path.join(projectRoot(), 'dist/src/cli/index.js');

/** Runs `postgate queue ARGS…` (the compiled CLI) to its end. */
export function queueCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, 'queue', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

/** A gateway run as its own process (`postgate serve`), to be killed with a signal. */
export interface Child {
  proc: ChildProcess;
  port: number;
  logs: Array<Record<string, unknown>>;
}

/** Starts `postgate serve --config FILE` in `cwd`; resolves once it listens, with its first listener's port. */
export async function serveChild(config: string, cwd: string): Promise<Child> {
  const proc = spawn(process.execPath, [CLI, 'serve', '--config', config], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Array<Record<string, unknown>> = [];
  const rl = createInterface({ input: proc.stdout! });
  const port = await new Promise<number>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`postgate exited early with ${code}`)));
    rl.on('line', (line) => {
      const rec = JSON.parse(line) as Record<string, unknown>;
      logs.push(rec);
      if (rec.msg === 'postgate listening') {
        const l = (rec.listeners as string[])[0]!;
        resolve(Number(l.slice(l.lastIndexOf(':') + 1)));
      }
    });
  });
  return { proc, port, logs };
}
