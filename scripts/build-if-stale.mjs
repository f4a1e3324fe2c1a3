#!/usr/bin/env node
/**
 * `npm start` runs this first: it compiles the TypeScript only when a source
 * is newer than the last build, so a second start listens at once instead of
 * after a full compile. The build is incremental (tsconfig.json keeps
 * dist/.tsbuildinfo), so even a rebuild only re-checks what changed.
 *
 * Inputs are src/, test/ (the same compilation) and tsconfig.json; the
 * build's own stamp is dist/.tsbuildinfo, touched after every successful
 * build so that a file saved without a change does not trigger a compile at
 * every start.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync, utimesSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const stamp = path.join(root, 'dist', '.tsbuildinfo');
const entry = path.join(root, 'dist', 'src', 'cli', 'index.js');

/** The newest modification time under dir of files ending in .ts, or 0. */
function newest(dir) {
  let max = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) max = Math.max(max, newest(p));
    else if (e.name.endsWith('.ts')) max = Math.max(max, statSync(p).mtimeMs);
  }
  return max;
}

function mtime(p) {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return 0;
  }
}

// The stamp alone says when the last build ended (an incremental build does not
// rewrite outputs whose source did not change); the entry must exist too.
const built = mtime(entry) > 0 ? mtime(stamp) : 0;
const sources = Math.max(newest(path.join(root, 'src')), newest(path.join(root, 'test')), mtime(path.join(root, 'tsconfig.json')));
if (built > 0 && sources <= built) process.exit(0);

process.stderr.write(
  built === 0
    ? 'postgate: first start, compiling the TypeScript sources (about 20 s, once)…\n'
    : 'postgate: sources changed since the last build, compiling (incremental)…\n',
);
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
if (r.status !== 0) {
  process.stderr.write('postgate: the build failed (see above); fix the error, or run `npm run build` to see it again\n');
  process.exit(r.status ?? 1);
}
const now = new Date();
utimesSync(stamp, now, now);
