/**
 * The documentation keeps up with the code: every stable error code is in
 * docs/errors.md (and nothing else is), every configuration option is in
 * docs/configuration.md, and every error code the source raises is declared.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { ERROR_CODES } from '../src/core/errors.js';
import { configJsonSchema } from '../src/config/json-schema.js';
import { projectRoot } from './helpers/fixtures.js';

const root = projectRoot();
const read = (p: string) => readFile(path.join(root, p), 'utf8');

type JsonSchema = { properties?: Record<string, JsonSchema>; items?: JsonSchema; anyOf?: JsonSchema[]; oneOf?: JsonSchema[]; type?: string | string[] };

/** Leaf option paths (`smtp.listen`, `routes[].targets[].url`) of the config's JSON Schema. */
function leafPaths(s: JsonSchema, prefix: string, out: Set<string>): void {
  const variants = s.anyOf ?? s.oneOf;
  if (variants) {
    for (const v of variants) leafPaths(v, prefix, out);
    return;
  }
  if (s.properties) {
    for (const [k, v] of Object.entries(s.properties)) leafPaths(v, prefix ? `${prefix}.${k}` : k, out);
    return;
  }
  if (s.items && (s.items.properties || s.items.anyOf || s.items.oneOf)) {
    leafPaths(s.items, `${prefix}[]`, out);
    return;
  }
  if (prefix) out.add(prefix);
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sourceFiles(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('documentation agrees with the code', () => {
  test('docs/errors.md lists exactly the codes in ERROR_CODES', async () => {
    const doc = await read('docs/errors.md');
    for (const code of Object.keys(ERROR_CODES)) assert.ok(doc.includes(`\`${code}\``), `${code} missing from docs/errors.md`);
    const documented = new Set(doc.match(/\bPG_[A-Z0-9_]+\b/g) ?? []);
    for (const code of documented) assert.ok(code in ERROR_CODES, `docs/errors.md names ${code}, which no longer exists`);
  });

  test('every error code raised in src/ is declared', async () => {
    for (const file of await sourceFiles(path.join(root, 'src'))) {
      const text = await readFile(file, 'utf8');
      for (const m of text.matchAll(/code: '(PG_[A-Z0-9_]+)'|smtpError\('(PG_[A-Z0-9_]+)'|new ConfigError\('(PG_[A-Z0-9_]+)'/g)) {
        const code = m[1] ?? m[2] ?? m[3]!;
        assert.ok(code in ERROR_CODES, `${path.relative(root, file)} raises undeclared ${code}`);
      }
    }
  });

  test('docs/configuration.md documents every configuration option', async () => {
    const doc = await read('docs/configuration.md');
    const paths = new Set<string>();
    leafPaths(configJsonSchema() as JsonSchema, '', paths);
    assert.ok(paths.size > 40, `only ${paths.size} options found: the walk is broken`);
    assert.ok(paths.has('smtp.earlyTalker.mode') && paths.has('routes[].targets[].url'), [...paths].join(' '));
    // postmaster targets have the same fields as route targets: one table serves both.
    const documented = (p: string) =>
      doc.includes(`\`${p}\``) ||
      (p.startsWith('postmaster.targets[].') && doc.includes('`postmaster.targets') && doc.includes(`\`${p.replace('postmaster.targets[]', 'routes[].targets[]')}\``));
    const missing = [...paths].filter((p) => !documented(p));
    assert.deepEqual(missing, [], `undocumented options: ${missing.join(', ')}`);
  });
});
