/**
 * Differential test of the two MIME parse paths (src/message/parse.ts):
 *
 * - the fast path (mime.ts): one synchronous pass over a Buffer, which answers
 *   only for messages it reads unambiguously and declines (null) the rest;
 * - the streaming path (MimeGuard → mailparser's MailParser), the reference.
 *
 * Wherever the fast path answers, its result must deep-equal the streaming
 * path's, on every fixture of test/fixtures/eml and on seeded, deterministic
 * mutations of them (truncated, bytes flipped, delimiter lines removed or
 * damaged, line ends changed, encodings and charsets swapped…). Any accepted
 * difference must be listed in ALLOWED_DIFFERENCES with its reason; the list
 * is empty: none is accepted today.
 *
 * The test also pins that the fast path is actually used (a floor on how many
 * fixtures and mutants it answers for, and the common shapes it must take),
 * and that it declines the hostile and broken fixtures, whose parseErrors only
 * the streaming path produces.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import MailComposer from 'nodemailer/lib/mail-composer';
import { FAST_PATH_MAX_BYTES, parseMessage, parseMessageFast, parseMessageStreaming, type ParsedContent } from '../src/message/parse.js';
import { fixturePath } from './helpers/fixtures.js';

/**
 * Differences between the paths that are accepted, each with why. A mutant
 * whose results differ fails the test unless one of these explains it.
 * Empty on purpose: so far every difference found was fixed (by the fast path
 * declining the input) rather than accepted.
 */
const ALLOWED_DIFFERENCES: { name: string; why: string; applies(fast: ParsedContent, slow: ParsedContent, input: Buffer): boolean }[] = [];

/** The first field where two results differ, for the failure message. */
function firstDifference(a: ParsedContent, b: ParsedContent): string | null {
  for (const k of Object.keys(b) as (keyof ParsedContent)[]) {
    try {
      assert.deepStrictEqual(a[k], b[k]);
    } catch {
      return `${k}: fast ${JSON.stringify(a[k])?.slice(0, 300)} / streaming ${JSON.stringify(b[k])?.slice(0, 300)}`;
    }
  }
  if (Object.keys(a).length !== Object.keys(b).length) return 'different keys';
  return null;
}

/**
 * Compares the paths on one input; returns whether the fast path answered.
 * Differences not explained by ALLOWED_DIFFERENCES go to `failures`.
 */
async function same(input: Buffer, label: string, failures: string[]): Promise<boolean> {
  const fast = parseMessageFast(input);
  if (!fast) return false;
  const slow = await parseMessageStreaming(input);
  const diff = firstDifference(fast, slow);
  if (diff !== null && !ALLOWED_DIFFERENCES.some((d) => d.applies(fast, slow, input))) {
    failures.push(`${label}: the fast path differs from the streaming path at ${diff}`);
  }
  return true;
}

function noFailures(failures: string[]): void {
  assert.equal(failures.length, 0, `${failures.length} differences:\n${failures.slice(0, 8).join('\n')}`);
}

// ── seeded mutations ────────────────────────────────────────────────────────

function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % n;
  };
}

/** Start offsets of the lines of `b`. */
function lineStarts(b: Buffer): number[] {
  const out = [0];
  for (let i = b.indexOf(0x0a); i !== -1 && i + 1 < b.length; i = b.indexOf(0x0a, i + 1)) out.push(i + 1);
  return out;
}

function lineAt(b: Buffer, starts: number[], k: number): [number, number] {
  const s = starts[k]!;
  const e = k + 1 < starts.length ? starts[k + 1]! : b.length;
  return [s, e];
}

const splice = (b: Buffer, s: number, e: number, ins: string | Buffer = '') =>
  Buffer.concat([b.subarray(0, s), typeof ins === 'string' ? Buffer.from(ins, 'latin1') : ins, b.subarray(e)]);

/** Mutation operators, each (bytes, random) → bytes. Names show in failures. */
const MUTATIONS: Record<string, (b: Buffer, r: (n: number) => number) => Buffer> = {
  truncate: (b, r) => b.subarray(0, r(b.length)),
  flipByte: (b, r) => {
    const c = Buffer.from(b);
    c[r(c.length)] = r(256);
    return c;
  },
  flipBytes: (b, r) => {
    const c = Buffer.from(b);
    for (let i = 0; i < 5; i++) c[r(c.length)] = r(256);
    return c;
  },
  dropDelimiterLine: (b, r) => {
    const starts = lineStarts(b).filter((s) => b[s] === 0x2d && b[s + 1] === 0x2d);
    if (!starts.length) return b;
    const s = starts[r(starts.length)]!;
    const e = b.indexOf(0x0a, s);
    return splice(b, s, e === -1 ? b.length : e + 1);
  },
  damageDelimiterLine: (b, r) => {
    const starts = lineStarts(b).filter((s) => b[s] === 0x2d && b[s + 1] === 0x2d);
    if (!starts.length) return b;
    const s = starts[r(starts.length)]!;
    let e = b.indexOf(0x0a, s);
    if (e === -1) e = b.length;
    if (b[e - 1] === 0x0d) e--;
    const tails = [' ', '\t', '--', '-', 'x', '\r', '  --', '--\r'];
    return splice(b, e, e, tails[r(tails.length)]!);
  },
  duplicateDelimiterLine: (b, r) => {
    const starts = lineStarts(b).filter((s) => b[s] === 0x2d && b[s + 1] === 0x2d);
    if (!starts.length) return b;
    const s = starts[r(starts.length)]!;
    const e = b.indexOf(0x0a, s);
    const line = b.subarray(s, e === -1 ? b.length : e + 1);
    return splice(b, s, s, Buffer.from(line));
  },
  dropLine: (b, r) => {
    const starts = lineStarts(b);
    const [s, e] = lineAt(b, starts, r(starts.length));
    return splice(b, s, e);
  },
  dropBlankLine: (b, r) => {
    const starts = lineStarts(b).filter((s) => b[s] === 0x0a || (b[s] === 0x0d && b[s + 1] === 0x0a));
    if (!starts.length) return b;
    const s = starts[r(starts.length)]!;
    return splice(b, s, b[s] === 0x0d ? s + 2 : s + 1);
  },
  bareLf: (b) => Buffer.from(b.toString('latin1').replace(/\r\n/g, '\n'), 'latin1'),
  strayCr: (b, r) => {
    const starts = lineStarts(b);
    const s = starts[r(starts.length)]!;
    return splice(b, s, s, '\r');
  },
  trailingSpace: (b, r) => {
    const starts = lineStarts(b);
    const k = r(starts.length);
    let [, e] = lineAt(b, starts, k);
    if (b[e - 1] === 0x0a) e--;
    if (b[e - 1] === 0x0d) e--;
    return splice(b, e, e, r(2) ? ' ' : '\t ');
  },
  insertPiece: (b, r) => {
    const pieces = ['=', '==', '=\r\n', '=4', '=ZZ', '-', '_', '*', ' ', '\r\n', '\r\n\r\n', '--', '\x00', '\xff', '=?utf-8?B?w6k=?=', '(', '"', ';', '\\'];
    const at = r(b.length + 1);
    return splice(b, at, at, pieces[r(pieces.length)]!);
  },
  swapHeaderValue: (b, r) => {
    const s = b.toString('latin1');
    const swaps: [RegExp, string[]][] = [
      [/Content-Transfer-Encoding: *[^\r\n]*/i, ['Content-Transfer-Encoding: base64', 'Content-Transfer-Encoding: quoted-printable', 'Content-Transfer-Encoding: 7bit', 'Content-Transfer-Encoding: x-uuencode', 'Content-Transfer-Encoding: "base64"', 'Content-Transfer-Encoding: BASE64 (c)']],
      [/charset="?[^";\r\n]*"?/i, ['charset=iso-8859-1', 'charset=windows-1252', 'charset=utf-7', 'charset=x-unknown', 'charset=shift_jis', 'charset=""', 'charset=UTF8', 'charset=us-ascii']],
      [/Content-Disposition: *[^\r\n;]*/i, ['Content-Disposition: inline', 'Content-Disposition: attachment', 'Content-Disposition: weird', 'Content-Disposition: ']],
      [/Content-Type: *[^\r\n;]*/i, ['Content-Type: text/plain', 'Content-Type: text/html', 'Content-Type: application/octet-stream', 'Content-Type: multipart/mixed', 'Content-Type: message/rfc822', 'Content-Type: text', 'Content-Type: ']],
      [/boundary="?([^";\r\n]*)"?/i, ['boundary=other', 'boundary="with space "', 'boundary=""', 'boundary="a(b)"']],
      [/format=\w+/i, ['format=fixed']],
    ];
    const [re, values] = swaps[r(swaps.length)]!;
    const matches = [...s.matchAll(new RegExp(re.source, 'gi'))];
    if (!matches.length) return b;
    const m = matches[r(matches.length)]!;
    return Buffer.from(s.slice(0, m.index) + values[r(values.length)]! + s.slice(m.index! + m[0].length), 'latin1');
  },
};

const MUTANTS_PER_FIXTURE = 40;
const MUTATION_NAMES = Object.keys(MUTATIONS);

async function fixtures(): Promise<{ name: string; buf: Buffer }[]> {
  const names = (await readdir(fixturePath('eml'))).filter((f) => f.endsWith('.eml')).sort();
  return Promise.all(names.map(async (name) => ({ name, buf: await readFile(fixturePath('eml', name)) })));
}

function compose(opts: ConstructorParameters<typeof MailComposer>[0]): Promise<Buffer> {
  return new MailComposer(opts).compile().build();
}

// ── tests ───────────────────────────────────────────────────────────────────

describe('fast path vs streaming path', () => {
  test('every fixture: equal results wherever the fast path answers; it answers for most', async (t) => {
    const answered: string[] = [];
    const failures: string[] = [];
    for (const { name, buf } of await fixtures()) {
      if (await same(buf, name, failures)) answered.push(name);
    }
    noFailures(failures);
    t.diagnostic(`the fast path answered for ${answered.length} fixtures`);
    // 36 of the 54 fixtures when this was written; the rest use RFC 2231/2047 file names, broken MIME or limits
    assert.ok(answered.length >= 30, `the fast path answered for only ${answered.length} fixtures: ${answered.join(', ')}`);
    for (const f of ['alternative-text-html.eml', 'related-cid-images.eml', 'mixed-forwarded-rfc822.eml', 'charset-utf8-qp.eml', 'charset-utf8-base64.eml', 'bounce-dsn.eml', 'bare-lf.eml']) {
      assert.ok(answered.includes(f), `the fast path should answer for ${f}`);
    }
  });

  test('the fast path declines hostile and broken MIME (their parseErrors come from the streaming path)', async () => {
    const all = await fixtures();
    for (const name of [
      'hostile-1000-parts.eml',
      'hostile-deep-nesting.eml',
      'hostile-huge-header.eml',
      'broken-base64.eml',
      'missing-closing-boundary.eml',
      'boundary-missing-parameter.eml',
      'boundary-undeclared.eml',
      'charset-unknown.eml',
    ]) {
      const buf = all.find((f) => f.name === name)?.buf;
      assert.ok(buf, name);
      assert.equal(parseMessageFast(buf), null, `${name} must go to the streaming path`);
      // and parseMessage (which picks the path) gives what the streaming path gives
      assert.deepStrictEqual(await parseMessage(buf), await parseMessageStreaming(buf), name);
    }
  });

  test('the fast path declines what MimeGuard and mailparser read differently', async () => {
    const declined = [
      // a quoted boundary folded over two lines: libmime collapses the fold's white space, MimeGuard keeps it
      'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="ab\r\n  cd"\r\n\r\n--ab cd\r\nContent-Type: text/plain\r\n\r\nhi\r\n--ab cd--\r\n',
      // a CR inside a MIME field that is not a line break
      'From: a@example.com\r\nContent-Type: text/plain;\rcharset=iso-8859-1\r\n\r\ncaf\xe9\r\n',
      // a boundary parameter on a part that is not a multipart (mailsplit splits it anyway)
      'From: a@example.com\r\nContent-Type: text/plain; boundary=b\r\n\r\n--b\r\nx\r\n--b--\r\n',
      // a delimiter line with trailing white space
      'From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b  \r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n',
      // format=flowed (RFC 3676), unwrapped by the streaming path
      'From: a@example.com\r\nContent-Type: text/plain; format=flowed\r\n\r\nsoft \r\nbreak\r\n',
    ];
    for (const text of declined) {
      const buf = Buffer.from(text, 'latin1');
      assert.equal(parseMessageFast(buf), null, JSON.stringify(text));
      assert.deepStrictEqual(await parseMessage(buf), await parseMessageStreaming(buf));
    }
    // and the same messages without the oddity are answered
    const fine = Buffer.from('From: a@example.com\r\nContent-Type: multipart/mixed;\r\n boundary="ab cd"\r\n\r\n--ab cd\r\nContent-Type: text/plain\r\n\r\nhi\r\n--ab cd--\r\n', 'latin1');
    assert.equal(parseMessageFast(fine)?.text, 'hi');
  });

  test(`seeded mutations (${MUTANTS_PER_FIXTURE} per fixture): equal results wherever the fast path answers`, async (t) => {
    let tried = 0;
    let answered = 0;
    const failures: string[] = [];
    const perOp = new Map<string, number>();
    for (const [fi, { name, buf }] of (await fixtures()).entries()) {
      // the two large hostile fixtures cost seconds per streaming parse of a mutant, and the
      // fast path declines them anyway (limits); their mutants are covered by the smaller ones
      const count = buf.length > 100_000 ? 2 : MUTANTS_PER_FIXTURE;
      const r = rng(0x5eed + fi * 7919);
      for (let i = 0; i < count; i++) {
        const op = MUTATION_NAMES[r(MUTATION_NAMES.length)]!;
        let mutant = MUTATIONS[op]!(buf, r);
        // sometimes two operators at once
        if (r(4) === 0) mutant = MUTATIONS[MUTATION_NAMES[r(MUTATION_NAMES.length)]!]!(mutant, r);
        tried++;
        if (await same(mutant, `${name} mutant ${i} (${op})`, failures)) {
          answered++;
          perOp.set(op, (perOp.get(op) ?? 0) + 1);
        }
      }
    }
    noFailures(failures);
    t.diagnostic(`the fast path answered for ${answered} of ${tried} mutants: ${JSON.stringify(Object.fromEntries(perOp))}`);
    // the comparison must not be vacuous: a fair share of the mutants stay in the fast path
    assert.ok(answered >= tried / 5, `the fast path answered only ${answered} of ${tried} mutants`);
    for (const op of ['truncate', 'flipByte', 'bareLf', 'insertPiece', 'swapHeaderValue', 'duplicateDelimiterLine']) {
      assert.ok((perOp.get(op) ?? 0) > 0, `no mutant of ${op} was answered by the fast path: ${JSON.stringify([...perOp])}`);
    }
  });

  test('composed messages: sizes, encodings and charsets around the edges of the fast path', async () => {
    const r = rng(42);
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => r(256)));
    let answered = 0;
    const cases: Buffer[] = [];
    for (const n of [0, 1, 2, 3, 4, 56, 57, 58, 75, 76, 77, 1000, 65536]) {
      cases.push(await compose({ from: 'a@example.com', to: 'b@example.org', subject: `att ${n}`, text: 'x', attachments: [{ filename: 'f.bin', content: bytes(n) }] }));
    }
    for (const textEncoding of ['quoted-printable', 'base64'] as const) {
      for (const text of ['', 'plain', 'é ü ✓ 🎉\n'.repeat(40), `${'long line '.repeat(40)}\n trailing space   \n=not-hex=\n`]) {
        cases.push(await compose({ from: 'a@example.com', subject: 's', text, html: `<p>${text}</p>`, textEncoding }));
      }
    }
    cases.push(
      await compose({
        from: 'a@example.com',
        html: '<img src="cid:c1">',
        attachments: [
          { filename: 'i.png', cid: 'c1', content: bytes(300) },
          { filename: 'n.txt', content: 'inline text file', contentDisposition: 'inline' },
          { content: 'no name at all' },
        ],
      }),
    );
    const failures: string[] = [];
    for (const c of cases) if (await same(c, `composed ${c.length} bytes`, failures)) answered++;
    noFailures(failures);
    assert.ok(answered >= cases.length - 2, `the fast path answered ${answered} of ${cases.length} composed messages`);
  });

  test('seeded random compositions: nested parts, empty and large bodies, 64 KiB chunk edges, LF-only', async (t) => {
    // The streaming path reads its input in 64 KiB chunks; bodies of 60000-130000 bytes put
    // delimiter lines and line breaks on both sides of chunk edges.
    const r = rng(20261123);
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => r(256)));
    const texts = ['', 'a', 'hello\n', 'é ü ✓\n'.repeat(50), 'x'.repeat(200), 'line\r\n'.repeat(3000), '\n\n\n', '-- \nsig', 'a=b=c\n', '  lead\n trailing   \n'];
    const failures: string[] = [];
    let answered = 0;
    const N = 80;
    for (let i = 0; i < N; i++) {
      const attachments = [];
      for (let k = r(4); k > 0; k--) {
        attachments.push({
          filename: r(3) ? `f${k}.bin` : undefined,
          content: bytes([0, 10, 1000, 60000, 65536, 70000, 130000][r(7)]!),
          contentDisposition: r(4) ? ('attachment' as const) : ('inline' as const),
          cid: r(3) ? undefined : `c${k}@example.test`,
        });
      }
      const textEncoding = (['quoted-printable', 'base64', undefined] as const)[r(3)];
      const text = r(4) ? texts[r(texts.length)]! + texts[r(texts.length)]! : undefined;
      const html = r(2) ? `<p>${texts[r(texts.length)]!}</p>` : undefined;
      const alternatives = r(4) === 0 ? [{ contentType: 'text/calendar', content: 'BEGIN:VCALENDAR\r\nEND:VCALENDAR' }] : undefined;
      let buf = await compose({ from: 'a@example.com', to: 'b@example.org', subject: `s${i}`, textEncoding, text, html, alternatives, attachments });
      if (r(3) === 0) buf = Buffer.from(buf.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
      if (await same(buf, `composition ${i}`, failures)) answered++;
    }
    noFailures(failures);
    t.diagnostic(`the fast path answered for ${answered} of ${N} compositions`);
    assert.ok(answered >= N * 0.9, `the fast path answered only ${answered} of ${N} compositions`);
  });

  test('a stream is tried on the fast path too, and a stream over the fast-path size streams', async () => {
    const small = await compose({ from: 'a@example.com', subject: 's', text: 't', html: '<b>h</b>', attachments: [{ filename: 'a.bin', content: Buffer.alloc(5000, 3) }] });
    const chunks = (b: Buffer) => Readable.from((function* () { for (let i = 0; i < b.length; i += 1000) yield b.subarray(i, i + 1000); })(), { objectMode: false });
    assert.deepStrictEqual(await parseMessage(chunks(small)), await parseMessageStreaming(small));
    const big = await compose({ from: 'a@example.com', subject: 's', text: 't', attachments: [{ filename: 'big.bin', content: Buffer.alloc(1536 * 1024, 5) }] });
    const viaStream = await parseMessage(chunks(big));
    assert.deepStrictEqual(viaStream, await parseMessageStreaming(big));
    assert.equal(viaStream.attachments[0]?.size, 1536 * 1024);
    // an input that fails after the switch to the streaming path still rejects the parse
    let sent = 0;
    const failing = new Readable({
      read() {
        if (sent >= 1.5 * 1024 * 1024) return this.destroy(new Error('connection reset'));
        const chunk = big.subarray(sent, sent + 64 * 1024);
        sent += chunk.length;
        this.push(chunk);
      },
    });
    await assert.rejects(parseMessage(failing), /connection reset/);
    assert.ok(sent > FAST_PATH_MAX_BYTES, 'the failure came after the fast-path size');
  });
});
