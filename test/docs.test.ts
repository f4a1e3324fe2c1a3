/**
 * The documentation keeps up with the code: every stable error code is in
 * docs/errors.md (and nothing else is), every row of the reply table
 * (src/transaction/replies.ts) is in it with its reply and the docs name no
 * reply the table does not have, every configuration option is in
 * docs/configuration.md, and every error code the source raises is declared.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { ERROR_CODES } from '../src/core/errors.js';
import { REPLIES, type ReplyRow } from '../src/transaction/replies.js';
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

/** The rows of docs/errors.md's tables that start with a code: code → its cells after the first. */
function codeRows(doc: string): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const m of doc.matchAll(/^\| `(PG_[A-Z0-9_]+)` \|(.*)\|$/gm)) {
    assert.ok(!rows.has(m[1]!), `docs/errors.md has two rows for ${m[1]}`);
    rows.set(m[1]!, m[2]!.split(' | ').map((c) => c.trim()));
  }
  return rows;
}

const rows: [string, ReplyRow][] = Object.entries(REPLIES);
/** "451 4.3.0", or "220" for a reply without an enhanced code. */
const status = (r: ReplyRow) => (r.enhanced ? `${r.code} ${r.enhanced}` : `${r.code}`);
/** A row's first line as the docs write it: placeholders as "…". */
const shown = (r: ReplyRow) => r.text.split('\n')[0]!.replace(/\{\w+\}/g, '…');

describe('documentation agrees with the code', () => {
  test('docs/errors.md lists exactly the codes in ERROR_CODES and the reply table', async () => {
    const doc = await read('docs/errors.md');
    for (const code of Object.keys(ERROR_CODES)) assert.ok(doc.includes(`\`${code}\``), `${code} missing from docs/errors.md`);
    const documented = new Set(doc.match(/\bPG_[A-Z0-9_]+\b/g) ?? []);
    for (const code of documented) assert.ok(code in ERROR_CODES || code in REPLIES, `docs/errors.md names ${code}, which no longer exists`);
  });

  test("every reply of the table is in its docs/errors.md row's SMTP reply column, and the failure's row it is logged under", async () => {
    const table = codeRows(await read('docs/errors.md'));
    assert.ok(table.size >= Object.keys(ERROR_CODES).length, `only ${table.size} rows read`);
    for (const [name, row] of rows) {
      const cells = table.get(name);
      assert.ok(cells, `docs/errors.md has no row for ${name} (${status(row)})`);
      assert.ok(cells[0]!.includes(status(row)), `docs/errors.md, ${name}: the SMTP reply column lacks ${status(row)}: ${cells[0]}`);
      // Rows outside ERROR_CODES are shown with their text (placeholders as …).
      if (!(name in ERROR_CODES)) assert.ok(cells[0]!.includes(shown(row)), `docs/errors.md, ${name}: the SMTP reply column lacks the text "${shown(row)}": ${cells[0]}`);
      if (row.raises) {
        assert.equal(cells[1], `\`${row.raises}\``, `docs/errors.md, ${name}: "Logged as" is not ${row.raises}`);
        const failure = table.get(row.raises)!;
        assert.ok(failure[0]!.includes(status(row)), `docs/errors.md, ${row.raises}: the SMTP reply column lacks ${status(row)} (${name})`);
      }
    }
  });

  test("docs/errors.md names no reply for a code that the table does not give it", async () => {
    const table = codeRows(await read('docs/errors.md'));
    for (const [code, cells] of table) {
      assert.ok(code in ERROR_CODES || code in REPLIES, `docs/errors.md has a row for ${code}, which is neither an error code nor a reply`);
      const given = new Set(rows.filter(([name, row]) => name === code || row.raises === code).map(([, row]) => status(row)));
      for (const m of cells[0]!.matchAll(/\b[2-5]\d\d [245]\.\d{1,3}\.\d{1,3}\b/g)) {
        assert.ok(given.has(m[0]), `docs/errors.md, ${code}: ${m[0]} is not a reply of ${code} in src/transaction/replies.ts (it has ${[...given].join(', ') || 'none'})`);
      }
    }
  });

  test('every error code raised in src/ is declared', async () => {
    for (const file of await sourceFiles(path.join(root, 'src'))) {
      const text = await readFile(file, 'utf8');
      for (const m of text.matchAll(/code: '(PG_[A-Z0-9_]+)'|smtpError\('(PG_[A-Z0-9_]+)'|new ConfigError\('(PG_[A-Z0-9_]+)'/g)) {
        const code = m[1] ?? m[2] ?? m[3]!;
        assert.ok(code in ERROR_CODES, `${path.relative(root, file)} raises undeclared ${code}`);
      }
      // A failure from the reply table is raised under the row's code, or the one it names.
      for (const m of text.matchAll(/\bfailure\('(PG_[A-Z0-9_]+)'/g)) {
        const row: ReplyRow | undefined = (REPLIES as Record<string, ReplyRow>)[m[1]!];
        assert.ok(row, `${path.relative(root, file)} raises ${m[1]}, which the reply table lacks`);
        assert.ok((row.raises ?? m[1]!) in ERROR_CODES, `${path.relative(root, file)} raises undeclared ${row.raises ?? m[1]}`);
      }
    }
  });

  test('docs/configuration.md documents every configuration option', async () => {
    const doc = await read('docs/configuration.md');
    const paths = new Set<string>();
    leafPaths(configJsonSchema() as JsonSchema, '', paths);
    assert.ok(paths.size > 40, `only ${paths.size} options found: the walk is broken`);
    assert.ok(paths.has('smtp.earlyTalker.mode') && paths.has('routes[].targets[].url'), [...paths].join(' '));
    // postmaster and quarantine targets have the same fields as route targets: one table serves all.
    const documented = (p: string) =>
      doc.includes(`\`${p}\``) ||
      (p.startsWith('postmaster.targets[].') && doc.includes('`postmaster.targets') && doc.includes(`\`${p.replace('postmaster.targets[]', 'routes[].targets[]')}\``)) ||
      // quarantine targets too (docs/scanning.md)
      (p.startsWith('routes[].scan.quarantine[].') && doc.includes('`routes[].scan.quarantine`') && doc.includes(`\`${p.replace('routes[].scan.quarantine[]', 'routes[].targets[]')}\``));
    const missing = [...paths].filter((p) => !documented(p));
    assert.deepEqual(missing, [], `undocumented options: ${missing.join(', ')}`);
  });
});
