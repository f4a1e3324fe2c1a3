/**
 * Mutated MIME for fuzzing the parser: corpus messages with random damage
 * (byte flips, cuts, duplicated or dropped lines, stray boundaries, huge
 * lines, bogus encodings and charsets). Shared by the short property test
 * (test/fuzz-mime.test.ts) and the soak (`npm run soak`).
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';

export function loadCorpus(dir: string): Buffer[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.eml') && !f.startsWith('hostile-'))
    .sort()
    .map((f) => readFileSync(path.join(dir, f)));
}

type Mutation =
  | { kind: 'flip'; at: number; byte: number }
  | { kind: 'cut'; at: number }
  | { kind: 'dupLine'; at: number; times: number }
  | { kind: 'dropLine'; at: number }
  | { kind: 'insert'; at: number; text: string };

const NASTY = [
  '--',
  '\r\n--boundary\r\n',
  'Content-Type: multipart/mixed; boundary=""\r\n',
  'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n--x\r\n',
  'Content-Transfer-Encoding: base64\r\n\r\n====\r\n',
  'Content-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n=\r\n',
  'Content-Type: text/plain; charset=utf-7\r\n',
  'Content-Type: text/plain; charset="x-unknown-\u00ff"\r\n',
  'Subject: =?utf-8?B?////?= =?iso-8859-1?Q?=FF=?=\r\n',
  'Content-Disposition: attachment; filename*0*=utf-8\'\'%FF%FE; filename*1="x"\r\n',
  'From: "unterminated <a@b\r\n',
  'Date: Mon, 31 Feb 1999 25:61:61 +9999\r\n',
  '\r\n.\r\n',
  '\0\0\0',
  '\r',
  '\n',
  '\u00e9\u00e8'.repeat(10),
];

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('dupLine' as const), at: fc.nat(), times: fc.integer({ min: 1, max: 20 }) }),
  fc.record({ kind: fc.constant('dropLine' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    // a huge line now and then (limits, the streaming path), small damage mostly
    text: fc.oneof(
      { weight: 10, arbitrary: fc.constantFrom(...NASTY) },
      { weight: 10, arbitrary: fc.string({ maxLength: 200 }) },
      { weight: 1, arbitrary: fc.constant('x'.repeat(100_000)) },
    ),
  }),
);

export function mutate(input: Buffer, mutations: readonly Mutation[]): Buffer {
  let buf = input;
  for (const m of mutations) {
    if (buf.length === 0) break;
    const at = m.at % buf.length;
    switch (m.kind) {
      case 'flip': {
        buf = Buffer.from(buf);
        buf[at] = m.byte;
        break;
      }
      case 'cut':
        buf = buf.subarray(0, at);
        break;
      case 'insert':
        buf = Buffer.concat([buf.subarray(0, at), Buffer.from(m.text, 'latin1'), buf.subarray(at)]);
        break;
      case 'dupLine':
      case 'dropLine': {
        const start = buf.lastIndexOf(0x0a, at) + 1;
        const nl = buf.indexOf(0x0a, at);
        const end = nl === -1 ? buf.length : nl + 1;
        const line = buf.subarray(start, end);
        const middle = m.kind === 'dropLine' ? Buffer.alloc(0) : Buffer.concat(Array(m.times + 1).fill(line));
        buf = Buffer.concat([buf.subarray(0, start), middle, buf.subarray(end)]);
        break;
      }
    }
  }
  return buf;
}

export const mutatedMessageArb = (corpus: Buffer[]): fc.Arbitrary<Buffer> =>
  fc.tuple(fc.integer({ min: 0, max: corpus.length - 1 }), fc.array(mutationArb, { minLength: 1, maxLength: 6 })).map(([i, ms]) => mutate(corpus[i]!, ms));

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { parseMessage, parseMessageFast, parseMessageStreaming } from '../../src/message/parse.js';
import { buildInboundEmail, inboundEmailSchema, PARSE_ERROR_CODES } from '../../src/message/schema.js';

const ENVELOPE = {
  mailFrom: 'a@b.example',
  rcptTo: [{ address: 'x@example.test', mailboxHash: null }],
  helo: 'client.example',
  clientAddress: '192.0.2.1',
  tls: null,
  authUser: null,
  transport: 'ESMTP' as const,
  queueId: 'Q1',
  listener: 'mx',
};

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * One fuzz input through the parser, Buffer and stream input. Returns the
 * problems found (empty when every property holds): a rejection, a result
 * outside the v1 schema, an undocumented parse error code, inline content not
 * matching its size/sha256, or the fast path disagreeing with the streaming
 * path where it answers. `quick` checks the Buffer parse only (the soak does
 * the full check on every hundredth input).
 */
export async function checkParse(buf: Buffer, quick = false): Promise<string[]> {
  const problems: string[] = [];
  let p;
  try {
    p = await parseMessage(buf);
  } catch (err) {
    return [`parseMessage rejected: ${(err as Error).message}`];
  }
  const email = buildInboundEmail({ id: 'Q1', receivedAt: new Date(0), envelope: ENVELOPE, raw: { size: buf.length, sha256: sha256(buf) }, content: p });
  const valid = inboundEmailSchema.safeParse(email);
  if (!valid.success) problems.push(`outside the schema: ${JSON.stringify(valid.error.issues.slice(0, 3))}`);
  for (const e of p.parseErrors) if (!(e.code in PARSE_ERROR_CODES)) problems.push(`undocumented parse error code ${e.code}`);
  for (const a of p.attachments) {
    if (a.content === undefined) continue;
    const bytes = Buffer.from(a.content, 'base64');
    if (bytes.length !== a.size || sha256(bytes) !== a.sha256) problems.push(`attachment ${a.filename} content does not match size/sha256`);
  }
  if (quick) return problems;
  try {
    const chunks: Buffer[] = [];
    for (let i = 0; i < buf.length; i += 7919) chunks.push(buf.subarray(i, i + 7919));
    const streamed = await parseMessage(Readable.from(chunks, { objectMode: false }));
    if (JSON.stringify(streamed) !== JSON.stringify(p)) problems.push('stream input and Buffer input disagree');
  } catch (err) {
    problems.push(`stream input rejected: ${(err as Error).message}`);
  }
  const fast = parseMessageFast(buf);
  if (fast) {
    const slow = await parseMessageStreaming(buf).catch((err: Error) => err);
    if (slow instanceof Error) problems.push(`streaming path rejected: ${slow.message}`);
    else if (JSON.stringify(fast) !== JSON.stringify(slow)) problems.push('fast path and streaming path disagree');
  }
  return problems;
}
