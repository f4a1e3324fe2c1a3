/**
 * Locates committed test fixtures however the tests were compiled: the build
 * puts them in dist/test/, ad-hoc builds elsewhere (e.g. .build-tls/test/), so walk
 * up from this module to the project root (the directory holding
 * package.json) instead of assuming a fixed depth.
 */

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

export function projectRoot(): string {
  if (root !== undefined) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return (root = dir);
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

/** `fixturePath('tls', 'mx.pem')` → <project root>/test/fixtures/tls/mx.pem */
export function fixturePath(...parts: string[]): string {
  return join(projectRoot(), 'test', 'fixtures', ...parts);
}
