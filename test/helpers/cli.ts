import { spawn } from 'node:child_process';
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
