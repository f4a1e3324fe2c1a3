/**
 * docs/architecture.md §4 held against the code. Every file of src/ is read,
 * its import lines are extracted, and each rule of §4.2 is checked by a pure
 * function over them; the known departures of §4.3 are listed here exactly
 * (a new one fails, and so does one that was fixed but is still listed).
 *
 * Type imports: every folder rule counts `import type` too (a type import is
 * a dependency of knowledge); rules that say "types only" allow exactly
 * those. The rules about run time (cycles, the functions' bundle, what
 * routing loads) follow run-time imports only.
 * Only `import type` / `export type` are type-only: `import { type X }` still
 * loads the module at run time (emitted as `import {}` under
 * verbatimModuleSyntax). Dynamic `import('…')` counts as a run-time import.
 *
 * Also: no file under src/, test/ or docs/ cites the design document that
 * lived outside this repository, and every "docs/architecture.md §N" cited
 * anywhere (and every link to one of its anchors) exists as a heading.
 *
 * Each checker is first shown to flag a synthetic bad input, so no rule
 * passes only because it cannot fail.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from './helpers/fixtures.js';

const root = projectRoot();

// ---------------------------------------------------------------------------
// Reading the code

interface Import {
  /** The importing file, relative to src/ ("smtp/session.ts"). */
  file: string;
  /** The specifier as written ("../queue/dispatch.js", "smtp-server"). */
  spec: string;
  /** The imported file relative to src/ (".ts"), or null for a package or built-in. */
  target: string | null;
  /** `import type` / `export type`: erased at run time. */
  typeOnly: boolean;
  line: number;
}

/** import/export … from '…' and side-effect imports, at the start of a line (so never in a JSDoc line). */
const STATIC_IMPORT = /^[ \t]*(?:import|export)[ \t]+(type[ \t]+)?(?:[\w\s{},*$]*?\bfrom[ \t]*)?['"]([^'"\n]+)['"]/gm;
const DYNAMIC_IMPORT = /\bimport\(\s*['"]([^'"\n]+)['"]\s*\)/g;

function lineAt(text: string, index: number): number {
  let n = 1;
  for (let i = text.indexOf('\n'); i !== -1 && i < index; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

function resolve(file: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null;
  return path.posix.normalize(path.posix.join(path.posix.dirname(file), spec)).replace(/\.js$/, '.ts');
}

function parseImports(file: string, text: string): Import[] {
  const out: Import[] = [];
  for (const m of text.matchAll(STATIC_IMPORT)) {
    const spec = m[2]!;
    out.push({ file, spec, target: resolve(file, spec), typeOnly: m[1] !== undefined, line: lineAt(text, m.index + m[0].indexOf(spec)) });
  }
  for (const m of text.matchAll(DYNAMIC_IMPORT)) {
    const spec = m[1]!;
    out.push({ file, spec, target: resolve(file, spec), typeOnly: false, line: lineAt(text, m.index) });
  }
  return out;
}

function listFiles(dir: string, keep: (name: string) => boolean): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, keep));
    else if (keep(e.name)) out.push(p);
  }
  return out.sort();
}

/** src/**.ts as { file relative to src/, text }. */
const sources: { file: string; text: string }[] = listFiles(path.join(root, 'src'), (n) => n.endsWith('.ts')).map((p) => ({
  file: path.relative(path.join(root, 'src'), p).split(path.sep).join('/'),
  text: readFileSync(p, 'utf8'),
}));
const imports: Import[] = sources.flatMap((s) => parseImports(s.file, s.text));

/** The folder of a file under src/ ("smtp"), or the file itself at the top ("gateway.ts"). */
function roomOf(file: string): string {
  const i = file.indexOf('/');
  return i === -1 ? file : file.slice(0, i);
}
const show = (room: string) => (room.endsWith('.ts') ? room : `${room}/`);

interface Violation {
  /** The file under src/ that breaks the rule (for the bundle rule: the functions/ file the chain starts at). */
  file: string;
  /** Stable identity, matched against KNOWN_DEPARTURES ("cli/route.ts → smtp/session.ts"). */
  key: string;
  message: string;
}

const where = (i: Import) => `${i.file}:${i.line} imports '${i.spec}'${i.typeOnly ? ' (type only)' : ''}`;

// ---------------------------------------------------------------------------
// §4.2: what each folder may import

/** Entries are folders ("core") or single files ("delivery/signing.ts"). */
interface Allowed {
  may: readonly string[] | { allBut: readonly string[] };
  typesOnly?: readonly string[];
}

const ALLOWED: Readonly<Record<string, Allowed>> = {
  core: { may: [] },
  // The reply table: a leaf beside core (GatewayError is the only thing it uses).
  transaction: { may: ['core/errors.ts'] },
  auth: { may: ['core'] },
  ops: { may: ['core'] },
  net: { may: ['core'] },
  tls: { may: ['core'] },
  message: { may: ['core'] },
  blob: { may: ['core', 'message'] },
  routing: { may: ['core', 'message', 'net'], typesOnly: ['config'] },
  config: { may: ['core', 'net', 'auth', 'routing', 'message', 'delivery/signing.ts'] },
  delivery: { may: ['core', 'message', 'net', 'transaction'], typesOnly: ['config', 'routing'] },
  queue: { may: ['core', 'message', 'delivery', 'transaction'] },
  dsn: { may: ['core', 'message'], typesOnly: ['queue'] },
  smtp: { may: ['core', 'transaction', 'routing', 'message', 'blob', 'net', 'auth', 'delivery', 'queue', 'ops'], typesOnly: ['config', 'dsn', 'tls', 'scan', 'console'] },
  // Content scanning: the daemons' clients are leaves; the step names its replies.
  scan: { may: ['core', 'transaction'] },
  functions: { may: ['core', 'config', 'routing', 'delivery', 'message', 'blob'] },
  // The message console: its store and HTTP server; the gateway wires it to the queue and the targets.
  console: { may: ['core', 'message', 'auth'] },
  'gateway.ts': { may: { allBut: ['cli', 'functions'] } },
  'index.ts': { may: { allBut: ['cli', 'functions'] } },
  cli: { may: { allBut: ['functions', 'smtp'] } },
};

function permits(entries: readonly string[], target: string): boolean {
  return entries.some((e) => e === roomOf(target) || e === target);
}

function layerViolations(list: readonly Import[], allowed: Readonly<Record<string, Allowed>>): Violation[] {
  const out: Violation[] = [];
  for (const i of list) {
    if (i.target === null) continue;
    const from = roomOf(i.file);
    const to = roomOf(i.target);
    const rule = allowed[from];
    if (!rule) {
      out.push({ file: i.file, key: `${i.file} → ${i.target}`, message: `${where(i)}: src/${show(from)} has no row in docs/architecture.md §4.2` });
      continue;
    }
    if (from === to) continue;
    const ok = Array.isArray(rule.may)
      ? permits(rule.may as readonly string[], i.target) || (i.typeOnly && permits(rule.typesOnly ?? [], i.target))
      : !(rule.may as { allBut: readonly string[] }).allBut.includes(to);
    if (!ok) {
      const typesOk = !i.typeOnly && permits(rule.typesOnly ?? [], i.target);
      out.push({
        file: i.file,
        key: `${i.file} → ${i.target}`,
        message: `${where(i)}: ${show(from)} ${typesOk ? `may import ${show(to)} for types only (import type)` : `may not import ${show(to)}`} (docs/architecture.md §4.2)`,
      });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// §4.2: across the tree

/**
 * Run-time cycles between files, each as the list of files on it. `import type`
 * is erased, so it cannot make a module read a binding of one still being
 * evaluated; across folders the folder rules already count it.
 */
function importCycles(list: readonly Import[]): string[][] {
  const next = new Map<string, string[]>();
  for (const i of list) if (i.target && !i.typeOnly) next.set(i.file, [...(next.get(i.file) ?? []), i.target]);
  // Tarjan's strongly connected components; a component of two or more files is a cycle.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter++);
    stack.push(v);
    onStack.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (next.get(v) ?? []).includes(v)) cycles.push(scc.sort());
    }
  };
  for (const f of new Set([...next.keys()])) if (!index.has(f)) visit(f);
  return cycles;
}

/** Files reached at run time from `start` (type-only imports are erased), each with the chain that reaches it. */
function runtimeClosure(list: readonly Import[], start: readonly string[]): Map<string, string[]> {
  const next = new Map<string, string[]>();
  for (const i of list) if (i.target && !i.typeOnly) next.set(i.file, [...(next.get(i.file) ?? []), i.target]);
  const reached = new Map<string, string[]>(start.map((f) => [f, [f]]));
  const queue = [...start];
  while (queue.length) {
    const f = queue.shift()!;
    for (const t of next.get(f) ?? []) {
      if (reached.has(t)) continue;
      reached.set(t, [...reached.get(f)!, t]);
      queue.push(t);
    }
  }
  return reached;
}

const FUNCTIONS_MUST_NOT_REACH = ['smtp', 'queue', 'dsn', 'ops', 'tls', 'gateway.ts', 'cli'];

function functionsBundleViolations(list: readonly Import[], files: readonly string[]): Violation[] {
  const start = files.filter((f) => roomOf(f) === 'functions');
  const out: Violation[] = [];
  for (const [file, chain] of runtimeClosure(list, start)) {
    if (FUNCTIONS_MUST_NOT_REACH.includes(roomOf(file))) {
      out.push({ file: chain[0]!, key: `functions → ${file}`, message: `the functions' bundle reaches ${file}: ${chain.join(' → ')} (docs/architecture.md §4.2)` });
    }
  }
  return out;
}

/** Modules that open files or sockets, or talk to services. (node:net stays: routing uses its address helpers.) */
const IO_MODULES = [
  'fs',
  'node:fs',
  'node:fs/promises',
  'node:dns',
  'node:dns/promises',
  'node:http',
  'node:https',
  'node:http2',
  'node:tls',
  'node:dgram',
  'node:child_process',
  'node:worker_threads',
  'node:cluster',
  'undici',
  'nodemailer',
  'smtp-server',
  'mailauth',
  'pino',
  'prom-client',
];
const isIoModule = (spec: string) => IO_MODULES.includes(spec) || spec.startsWith('@aws-sdk/') || spec.startsWith('smtp-server/');
/** Reading a clock, randomness or a timer. */
const IMPURE_CALL = /\b(?:Date\.now|new Date|performance\.now|Math\.random|setTimeout|setInterval|setImmediate|process\.hrtime|randomBytes|randomUUID|randomFillSync|randomInt)\s*\(/g;

function routingPurityViolations(list: readonly Import[], texts: readonly { file: string; text: string }[]): Violation[] {
  const start = texts.map((t) => t.file).filter((f) => roomOf(f) === 'routing');
  const reached = runtimeClosure(list, start);
  const out: Violation[] = [];
  for (const i of list) {
    if (i.typeOnly || !reached.has(i.file) || !isIoModule(i.spec)) continue;
    out.push({ file: i.file, key: `${i.file} → ${i.spec}`, message: `${where(i)}, an I/O module, and routing loads it: ${reached.get(i.file)!.join(' → ')} (docs/architecture.md §3.2)` });
  }
  for (const { file, text } of texts) {
    if (roomOf(file) !== 'routing') continue;
    for (const m of text.matchAll(IMPURE_CALL)) {
      out.push({ file, key: `${file} → ${m[0]}`, message: `${file}:${lineAt(text, m.index)} calls ${m[0]}…): routing reads no clock and no randomness (docs/architecture.md §3.2)` });
    }
  }
  return out;
}

function smtpServerViolations(list: readonly Import[], texts: readonly { file: string; text: string }[]): Violation[] {
  const out: Violation[] = [];
  for (const i of list) {
    if (i.spec.startsWith('smtp-server/') && i.file !== 'smtp/extensions.ts') {
      out.push({ file: i.file, key: `${i.file} → ${i.spec}`, message: `${where(i)}: only smtp/extensions.ts touches smtp-server's internals (docs/architecture.md §4.2)` });
    } else if (i.spec === 'smtp-server' && !i.typeOnly && roomOf(i.file) !== 'smtp') {
      out.push({ file: i.file, key: `${i.file} → ${i.spec}`, message: `${where(i)}: smtp-server is used inside smtp/ only (types elsewhere) (docs/architecture.md §4.2)` });
    }
  }
  for (const { file, text } of texts) {
    if (roomOf(file) === 'smtp') continue;
    const calls = [...text.matchAll(/\binternals\(/g)];
    if (calls.length) {
      out.push({
        file,
        key: `${file} → internals()`,
        message: `${file}:${calls.map((m) => lineAt(text, m.index)).join(',')} calls internals(): smtp-server's private surface is used inside smtp/ only (docs/architecture.md §4.2)`,
      });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// §4.3: known departures, each with the file that §4.3 names for it.

// None today (docs/architecture.md §4.3 lists the departures that are not import rules).
const KNOWN_DEPARTURES: ReadonlyMap<string, string> = new Map<string, string>();

function unexpected(violations: readonly Violation[]): string[] {
  return violations.filter((v) => !KNOWN_DEPARTURES.has(v.key)).map((v) => v.message);
}

// ---------------------------------------------------------------------------
// Citations

/** The design document that lived outside this repository, as it was cited. */
const OUTSIDE_CITATION = /DESIGN\s*§/g;

function outsideCitations(texts: readonly { file: string; text: string }[]): string[] {
  const out: string[] = [];
  for (const { file, text } of texts) {
    for (const m of text.matchAll(OUTSIDE_CITATION)) out.push(`${file}:${lineAt(text, m.index)}: "${text.slice(m.index, m.index + 40).split('\n')[0]}"`);
  }
  return out;
}

/** GitHub's heading anchor: lower case, punctuation (§ . , / `) dropped, spaces → "-". */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

function headingsOf(doc: string): { numbers: string[]; slugs: Set<string> } {
  const numbers: string[] = [];
  const slugs = new Set<string>();
  for (const m of doc.matchAll(/^#{1,6} (.+)$/gm)) {
    slugs.add(slug(m[1]!));
    const n = /^§(\d+(?:\.\d+)*) /.exec(m[1]!);
    if (n) numbers.push(n[1]!);
  }
  return { numbers, slugs };
}

/** Citations of docs/architecture.md sections and anchors that it has no heading for. */
function danglingCitations(doc: string, texts: readonly { file: string; text: string }[]): string[] {
  const { numbers, slugs } = headingsOf(doc);
  const have = new Set(numbers);
  const out: string[] = [];
  for (const { file, text } of texts) {
    const self = file === 'docs/architecture.md';
    // "docs/architecture.md §2.3", and inside the page itself any "§2.3" but an RFC's.
    const cites = self ? /(?<!RFC \d+ )§(\d+(?:\.\d+)*)/g : /architecture\.md §(\d+(?:\.\d+)*)/g;
    for (const m of text.matchAll(cites)) {
      if (self && text.slice(text.lastIndexOf('\n', m.index) + 1, m.index).match(/^#{1,6} $/)) continue; // a heading itself
      if (!have.has(m[1]!)) out.push(`${file}:${lineAt(text, m.index)} cites §${m[1]}, which docs/architecture.md has no heading for`);
    }
    const links = self ? /\]\(#([\w-]+)\)/g : /architecture\.md#([\w-]+)/g;
    for (const m of text.matchAll(links)) {
      if (!slugs.has(m[1]!)) out.push(`${file}:${lineAt(text, m.index)} links #${m[1]}, which no heading of docs/architecture.md has`);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// The checkers can fail

const synthetic = (file: string, target: string, typeOnly = false): Import => ({ file, spec: `./${target}`, target, typeOnly, line: 1 });

describe('the architecture checks flag what they should', () => {
  test('import extraction: multi-line, type-only, inline types, re-exports, side effects, dynamic; not comments', () => {
    const text = [
      '/**',
      " * import { nothing } from '../in/a/comment.js';",
      ' */',
      "import { a, type B } from '../x/a.js';",
      "import type { C } from '../x/c.js';",
      'import {',
      '  d,',
      '  type E,',
      "} from './d.js';",
      "export { f } from '../y/f.js';",
      "export type { G } from '../y/g.js';",
      "export * from './h.js';",
      "import '../side/effect.js';",
      "import { readFile } from 'node:fs/promises';",
      "const later = () => import('../lazy/mod.js');",
      "export const notAnImport = 'from ../z.js';",
    ].join('\n');
    const got = parseImports('room/file.ts', text).map((i) => [i.target ?? i.spec, i.typeOnly, i.line]);
    assert.deepEqual(got, [
      ['x/a.ts', false, 4],
      ['x/c.ts', true, 5],
      ['room/d.ts', false, 9],
      ['y/f.ts', false, 10],
      ['y/g.ts', true, 11],
      ['room/h.ts', false, 12],
      ['side/effect.ts', false, 13],
      ['node:fs/promises', false, 14],
      ['lazy/mod.ts', false, 15],
    ]);
  });

  test('folder rules: forbidden imports are flagged, allowed ones pass', () => {
    const flagged = (i: Import) => layerViolations([i], ALLOWED).length > 0;
    assert.ok(flagged(synthetic('routing/index.ts', 'delivery/index.ts')), 'routing → delivery');
    assert.ok(flagged(synthetic('routing/from-config.ts', 'config/load.ts')), 'routing → config (value)');
    assert.ok(!flagged(synthetic('routing/from-config.ts', 'config/load.ts', true)), 'routing → config (type)');
    assert.ok(flagged(synthetic('delivery/webhook.ts', 'routing/index.ts')), 'delivery → routing (value)');
    assert.ok(!flagged(synthetic('delivery/webhook.ts', 'routing/index.ts', true)), 'delivery → routing (type)');
    assert.ok(flagged(synthetic('message/parse.ts', 'delivery/types.ts', true)), 'message → delivery (type imports count)');
    assert.ok(flagged(synthetic('core/errors.ts', 'message/ids.ts')), 'core → message');
    assert.ok(flagged(synthetic('core/errors.ts', 'transaction/replies.ts')), 'core → transaction');
    assert.ok(!flagged(synthetic('transaction/replies.ts', 'core/errors.ts')), 'transaction → core/errors.ts');
    assert.ok(flagged(synthetic('transaction/replies.ts', 'core/deadline.ts')), 'transaction → core/deadline.ts');
    assert.ok(flagged(synthetic('transaction/replies.ts', 'routing/index.ts', true)), 'transaction → routing (type)');
    assert.ok(!flagged(synthetic('cli/route.ts', 'transaction/replies.ts')), 'cli → transaction');
    assert.ok(flagged(synthetic('routing/index.ts', 'transaction/replies.ts')), 'routing → transaction');
    assert.ok(flagged(synthetic('functions/route.ts', 'smtp/session.ts')), 'functions → smtp');
    assert.ok(!flagged(synthetic('config/schema.ts', 'delivery/signing.ts')), 'config → delivery/signing.ts');
    assert.ok(flagged(synthetic('config/schema.ts', 'delivery/webhook.ts')), 'config → delivery/webhook.ts');
    assert.ok(flagged(synthetic('cli/index.ts', 'functions/route.ts')), 'cli → functions');
    assert.ok(flagged(synthetic('cli/route.ts', 'smtp/session.ts')), 'cli → smtp');
    assert.ok(!flagged(synthetic('gateway.ts', 'smtp/session.ts')), 'gateway → smtp');
    assert.ok(flagged(synthetic('plugins/x.ts', 'core/errors.ts')), 'a folder without a row');
    // Every folder's row can fail: nothing else in src/ may import functions/, nor functions/ smtp/.
    for (const room of Object.keys(ALLOWED)) {
      const file = room.endsWith('.ts') ? room : `${room}/x.ts`;
      const target = room === 'functions' ? 'smtp/session.ts' : 'functions/ingest.ts';
      assert.ok(flagged(synthetic(file, target)), `${room} → ${target}`);
    }
  });

  test('run-time cycles between files are found', () => {
    assert.deepEqual(importCycles([synthetic('a/x.ts', 'b/y.ts'), synthetic('b/y.ts', 'c/z.ts'), synthetic('c/z.ts', 'a/x.ts')]), [['a/x.ts', 'b/y.ts', 'c/z.ts']]);
    assert.deepEqual(importCycles([synthetic('a/x.ts', 'b/y.ts'), synthetic('b/y.ts', 'c/z.ts')]), []);
    assert.deepEqual(importCycles([synthetic('a/x.ts', 'b/y.ts'), synthetic('b/y.ts', 'a/x.ts', true)]), [], 'a type-only link is erased');
  });

  test("the functions' bundle rule follows run-time imports only", () => {
    const files = ['functions/a.ts', 'delivery/b.ts', 'smtp/c.ts'];
    const v = functionsBundleViolations([synthetic('functions/a.ts', 'delivery/b.ts'), synthetic('delivery/b.ts', 'smtp/c.ts')], files);
    assert.deepEqual(v.map((x) => x.key), ['functions → smtp/c.ts']);
    assert.match(v[0]!.message, /functions\/a\.ts → delivery\/b\.ts → smtp\/c\.ts/);
    assert.deepEqual(functionsBundleViolations([synthetic('functions/a.ts', 'delivery/b.ts'), synthetic('delivery/b.ts', 'smtp/c.ts', true)], files), []);
  });

  test('routing purity: I/O modules, directly or through an import, and clocks are flagged', () => {
    const io = (file: string, spec: string): Import => ({ file, spec, target: null, typeOnly: false, line: 1 });
    const texts = [{ file: 'routing/x.ts', text: '' }];
    assert.equal(routingPurityViolations([io('routing/x.ts', 'node:fs')], texts).length, 1);
    assert.equal(routingPurityViolations([synthetic('routing/x.ts', 'message/y.ts'), io('message/y.ts', 'undici')], texts).length, 1);
    assert.equal(routingPurityViolations([io('message/y.ts', 'undici')], texts).length, 0, 'not loaded by routing');
    assert.equal(routingPurityViolations([io('routing/x.ts', 'node:url')], texts).length, 0);
    assert.equal(routingPurityViolations([], [{ file: 'routing/x.ts', text: 'const t = Date.now();' }]).length, 1);
  });

  test("smtp-server's internals: deep imports, value imports and internals() outside smtp/ are flagged", () => {
    const pkg = (file: string, spec: string, typeOnly = false): Import => ({ file, spec, target: null, typeOnly, line: 1 });
    assert.equal(smtpServerViolations([pkg('gateway.ts', 'smtp-server/lib/smtp-connection.js')], []).length, 1);
    assert.equal(smtpServerViolations([pkg('smtp/extensions.ts', 'smtp-server/lib/smtp-connection.js')], []).length, 0);
    assert.equal(smtpServerViolations([pkg('delivery/x.ts', 'smtp-server')], []).length, 1);
    assert.equal(smtpServerViolations([pkg('gateway.ts', 'smtp-server', true)], []).length, 0);
    assert.equal(smtpServerViolations([], [{ file: 'ops/x.ts', text: 'internals(server).connections' }]).length, 1);
    assert.equal(smtpServerViolations([], [{ file: 'smtp/x.ts', text: 'internals(server).connections' }]).length, 0);
  });

  test('a citation of the outside design document is found', () => {
    const text = `/** see ${'DESIGN'} §2 */`;
    assert.equal(outsideCitations([{ file: 'src/x.ts', text }]).length, 1);
    assert.equal(outsideCitations([{ file: 'src/x.ts', text: '/** docs/architecture.md §2 */' }]).length, 0);
  });

  test('citations of missing sections and anchors are found', () => {
    const doc = '# A\n\n## §1 One\n\n### §1.2 One, two\n\nSee §1.2 and §7, RFC 5321 §4.5.3.1.10, [x](#12-one-two), [y](#nope).\n';
    const cite = (n: string) => `${'architecture'}.md §${n}`;
    const texts = [
      { file: 'src/a.ts', text: `// ${cite('1.2')}, ${cite('3')}` },
      { file: 'docs/b.md', text: `[a](${'architecture'}.md#1-one) [b](${'architecture'}.md#2-two)` },
      { file: 'docs/architecture.md', text: doc },
    ];
    const dangling = danglingCitations(doc, texts);
    assert.equal(dangling.length, 4, dangling.join('\n'));
    assert.ok(dangling.some((d) => d.startsWith('src/a.ts') && d.includes('§3')));
    assert.ok(dangling.some((d) => d.startsWith('docs/b.md') && d.includes('#2-two')));
    assert.ok(dangling.some((d) => d.startsWith('docs/architecture.md') && d.includes('§7')));
    assert.ok(dangling.some((d) => d.startsWith('docs/architecture.md') && d.includes('#nope')));
  });
});

// ---------------------------------------------------------------------------
// The code as it is

describe('who may import whom (docs/architecture.md §4.2)', () => {
  test('src/ was read', () => {
    assert.ok(sources.length > 50 && imports.length > 200, `${sources.length} files, ${imports.length} imports`);
    for (const room of ['core', 'transaction', 'smtp', 'routing', 'message', 'delivery', 'queue', 'functions', 'gateway.ts']) {
      assert.ok(
        sources.some((s) => roomOf(s.file) === room),
        `no file in src/${show(room)}`,
      );
    }
  });

  const layered = layerViolations(imports, ALLOWED);
  const rooms = [...new Set([...Object.keys(ALLOWED), ...sources.map((s) => roomOf(s.file))])];
  for (const room of rooms) {
    test(`${show(room)} imports only what its row allows`, () => {
      const broken = unexpected(layered.filter((v) => roomOf(v.file) === room));
      assert.deepEqual(broken, [], `\n${broken.join('\n')}`);
    });
  }

  test('no run-time import cycle between files', () => {
    const cycles = importCycles(imports);
    assert.deepEqual(cycles, [], cycles.map((c) => c.join(' ⇄ ')).join('\n'));
  });

  test("the functions' bundle never reaches smtp/, queue/, dsn/, ops/, tls/, gateway.ts or cli/", () => {
    const broken = unexpected(functionsBundleViolations(imports, sources.map((s) => s.file)));
    assert.deepEqual(broken, [], `\n${broken.join('\n')}`);
  });

  test('routing/ loads no I/O module and reads no clock or randomness', () => {
    const broken = unexpected(routingPurityViolations(imports, sources));
    assert.deepEqual(broken, [], `\n${broken.join('\n')}`);
  });

  test("smtp-server's internals are touched inside smtp/ only", () => {
    const broken = unexpected(smtpServerViolations(imports, sources));
    assert.deepEqual(broken, [], `\n${broken.join('\n')}`);
  });

  test('every known departure (§4.3) still departs, and §4.3 names it', () => {
    const all = new Set(
      [
        ...layered,
        ...functionsBundleViolations(imports, sources.map((s) => s.file)),
        ...routingPurityViolations(imports, sources),
        ...smtpServerViolations(imports, sources),
      ].map((v) => v.key),
    );
    const doc = readFileSync(path.join(root, 'docs', 'architecture.md'), 'utf8');
    const departures = doc.slice(doc.indexOf('### §4.3 '), doc.indexOf('\n## §5 '));
    for (const [key, file] of KNOWN_DEPARTURES) {
      assert.ok(all.has(key), `${key} no longer departs: remove it from KNOWN_DEPARTURES and from docs/architecture.md §4.3`);
      assert.ok(departures.includes(`\`${file}\``), `docs/architecture.md §4.3 does not name ${file} (${key})`);
    }
  });
});

describe('the project cites its own documents', () => {
  const text = (dir: string, keep: (n: string) => boolean) =>
    listFiles(path.join(root, dir), keep).map((p) => ({ file: path.relative(root, p).split(path.sep).join('/'), text: readFileSync(p, 'utf8') }));
  const everything = () => [...text('src', () => true), ...text('test', () => true), ...text('docs', () => true)];

  test('no file under src/, test/ or docs/ cites the outside design document', () => {
    const found = outsideCitations(everything());
    assert.deepEqual(found, [], `cite docs/architecture.md (or an RFC, or another page of docs/) instead:\n${found.join('\n')}`);
  });

  test('docs/architecture.md numbers its sections once each', () => {
    const doc = readFileSync(path.join(root, 'docs', 'architecture.md'), 'utf8');
    const { numbers } = headingsOf(doc);
    for (const n of ['1', '2', '2.1', '2.2', '2.3', '2.4', '2.5', '3', '4', '4.1', '4.2', '4.3', '5']) assert.ok(numbers.includes(n), `no heading §${n}`);
    assert.deepEqual(numbers.filter((n, i) => numbers.indexOf(n) !== i), [], 'a section number used twice');
  });

  test('every cited section and anchor of docs/architecture.md exists', () => {
    const doc = readFileSync(path.join(root, 'docs', 'architecture.md'), 'utf8');
    const texts = [
      ...text('src', (n) => n.endsWith('.ts')),
      ...text('test', (n) => n.endsWith('.ts')),
      ...text('docs', (n) => n.endsWith('.md')),
      { file: 'README.md', text: readFileSync(path.join(root, 'README.md'), 'utf8') },
    ].map((t) => (t.file === 'docs/architecture.md' ? { ...t, text: doc } : t));
    const cited = texts.filter((t) => /architecture\.md §\d/.test(t.text)).length;
    assert.ok(cited >= 10, `only ${cited} files cite docs/architecture.md by section`);
    const dangling = danglingCitations(doc, texts);
    assert.deepEqual(dangling, [], `\n${dangling.join('\n')}`);
  });
});
