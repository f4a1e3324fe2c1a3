/**
 * The published event contract: schema/email.v1.json is the schema generated
 * from the zod source, docs/payload.md documents exactly the fields the schema
 * has (and every parseErrors code), the complete example on that page is the
 * parser's real output for the message shown there, and events built from
 * parsed messages validate.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import MailComposer from 'nodemailer/lib/mail-composer';
import {
  EMAIL_SCHEMA_ID,
  PARSE_ERROR_CODES,
  addressSchema,
  attachmentSchema,
  buildEmailEvent,
  buildInboundEmail,
  emailEventSchema,
  emailJsonSchema,
  envelopeSchema,
  groupSchema,
  inboundEmailSchema,
  type Envelope,
} from '../src/message/schema.js';
import { parseMessage } from '../src/message/parse.js';
import { projectRoot } from './helpers/fixtures.js';

const root = projectRoot();
const docsPath = path.join(root, 'docs/payload.md');

/** The lines of the section under `heading` (up to the next heading of the same or a higher level). */
function section(md: string, heading: string): string[] {
  const lines = md.split('\n');
  const start = lines.findIndex((l) => l.trim() === heading);
  assert.ok(start !== -1, `docs/payload.md has no heading "${heading}"`);
  const level = heading.indexOf(' ');
  const out: string[] = [];
  for (const line of lines.slice(start + 1)) {
    const m = /^(#+) /.exec(line);
    if (m && m[1]!.length <= level) break;
    out.push(line);
  }
  return out;
}

/** Field names in the first column of the tables of a section: | `name` | … */
function tableFields(lines: string[]): string[] {
  return lines.map((l) => /^\|\s*`([^`]+)`\s*\|/.exec(l)?.[1]).filter((x): x is string => x !== undefined);
}

function fenced(lines: string[], lang: string): string {
  const start = lines.findIndex((l) => l.trim() === `\`\`\`${lang}`);
  assert.ok(start !== -1, `no \`\`\`${lang} block`);
  const end = lines.findIndex((l, i) => i > start && l.trim() === '```');
  return lines.slice(start + 1, end).join('\n');
}

function assertSameFields(documented: string[], schemaKeys: string[], what: string): void {
  const doc = new Set(documented);
  const sch = new Set(schemaKeys);
  const undocumented = schemaKeys.filter((k) => !doc.has(k));
  const unknown = documented.filter((k) => !sch.has(k));
  assert.deepEqual({ undocumented, unknown }, { undocumented: [], unknown: [] }, `${what}: docs/payload.md and the zod schema disagree`);
  assert.equal(documented.length, doc.size, `${what}: a field is documented twice`);
}

// The facts of the example transaction on docs/payload.md.
const EXAMPLE_ENVELOPE: Envelope = {
  mailFrom: 'alice@example.com',
  rcptTo: [{ address: 'support@hooks.example.test', mailboxHash: null }],
  helo: 'mail.example.com',
  clientAddress: '192.0.2.25',
  tls: { protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' },
  authUser: null,
  transport: 'ESMTPS',
  queueId: '0JDX5M2C8RA7T3VQHN4W',
  listener: 'mx',
};
const EXAMPLE_TRACE_LINES = 7; // Return-Path + the 6 lines of Received that postgate added

describe('email event schema (postgate.email.v1)', () => {
  test('schema/email.v1.json is the schema generated from src/message/schema.ts', async () => {
    const committed = JSON.parse(await readFile(path.join(root, 'schema/email.v1.json'), 'utf8'));
    const generated = JSON.parse(JSON.stringify(emailJsonSchema()));
    assert.deepEqual(
      committed,
      generated,
      `regenerate: node -e "import('./dist/src/message/schema.js').then(m => require('fs').writeFileSync('schema/email.v1.json', JSON.stringify(m.emailJsonSchema(), null, 2) + '\\n'))"`,
    );
    assert.equal(generated.$id, 'https://postgate.dev/schema/email.v1.json');
    assert.match(String(generated.title), /postgate\.email\.v1/);
    assert.ok(generated.$defs.InboundEmail, 'InboundEmail is published under $defs');
  });

  test('every property in the JSON Schema has a description', () => {
    const schema = emailJsonSchema() as { $defs: Record<string, Record<string, unknown>> } & Record<string, unknown>;
    const defs = schema.$defs;
    const missing: string[] = [];
    const walk = (node: unknown, where: string): void => {
      if (!node || typeof node !== 'object') return;
      const n = node as Record<string, unknown>;
      for (const [key, value] of Object.entries((n.properties as Record<string, Record<string, unknown>>) ?? {})) {
        const ref = typeof value.$ref === 'string' ? defs[value.$ref.split('/').pop()!] : undefined;
        if (!value.description && !ref?.description) missing.push(`${where}.${key}`);
        walk(value, `${where}.${key}`);
      }
      for (const k of ['items', 'anyOf'] as const) {
        const sub = n[k];
        for (const s of Array.isArray(sub) ? sub : sub ? [sub] : []) walk(s, `${where}[]`);
      }
    };
    walk(schema, '$');
    for (const [name, def] of Object.entries(defs)) walk(def, name);
    assert.deepEqual(missing, []);
  });

  test('docs/payload.md documents exactly the fields of the schema', async () => {
    const md = await readFile(docsPath, 'utf8');
    assertSameFields(tableFields(section(md, '### Top-level fields')), Object.keys(inboundEmailSchema.shape), 'InboundEmail');
    assertSameFields(tableFields(section(md, '### envelope')), Object.keys(envelopeSchema.shape), 'envelope');
    const addressSection = section(md, '### addresses');
    const groupAt = addressSection.findIndex((l) => l.startsWith('**Group** —'));
    assertSameFields(tableFields(addressSection.slice(0, groupAt)), Object.keys(addressSchema.shape), 'Address');
    assertSameFields(tableFields(addressSection.slice(groupAt)), Object.keys(groupSchema.shape), 'Group');
    assertSameFields(tableFields(section(md, '### attachments')), Object.keys(attachmentSchema.shape), 'Attachment');
    assertSameFields(tableFields(section(md, '### raw')), Object.keys(inboundEmailSchema.shape.raw.shape), 'raw');
    assertSameFields(tableFields(section(md, '## The body')), Object.keys(emailEventSchema.shape), 'event body');
  });

  test('docs/payload.md lists every parseErrors code with its meaning', async () => {
    const md = await readFile(docsPath, 'utf8');
    const rows = section(md, '## Parse errors');
    assertSameFields(tableFields(rows), Object.keys(PARSE_ERROR_CODES), 'parseErrors codes');
    for (const [code, meaning] of Object.entries(PARSE_ERROR_CODES)) {
      assert.ok(rows.includes(`| \`${code}\` | ${meaning} |`), `the row for ${code} must read: ${meaning}`);
    }
  });

  test('the complete example on docs/payload.md is the parser output for the message shown there', async () => {
    const md = await readFile(docsPath, 'utf8');
    const example = section(md, '## Complete example');
    // The page shows LF line ends; on the wire they are CRLF (RFC 5322 §2.1).
    const stored = Buffer.from(`${fenced(section(example.join('\n'), '### The message'), 'eml')}\n`.replace(/\n/g, '\r\n'));
    // raw.sha256 is over the bytes as received, before postgate's trace headers.
    const traceEnd = stored.toString('latin1').split('\r\n').slice(0, EXAMPLE_TRACE_LINES).join('\r\n').length + 2;
    const received = stored.subarray(traceEnd);
    const content = await parseMessage(stored);
    const data = buildInboundEmail({
      id: EXAMPLE_ENVELOPE.queueId,
      receivedAt: '2026-11-24T09:15:02.000Z',
      envelope: EXAMPLE_ENVELOPE,
      raw: { size: stored.length, sha256: createHash('sha256').update(received).digest('hex') },
      content,
    });
    const event = buildEmailEvent(data);
    const documented = fenced(section(example.join('\n'), '### The event'), 'json');
    const actual = JSON.stringify(event, null, 2);
    if (documented !== actual) {
      const out = path.join(root, 'dist/test/payload-example.actual.json');
      await writeFile(out, `${actual}\n`);
      assert.fail(`docs/payload.md "The event" differs from the parser output; the actual event is in ${out}`);
    }
    assert.deepEqual(data.parseErrors, [], 'the example is a clean message');
    emailEventSchema.parse(JSON.parse(documented));
  });

  test('an event built from a parsed message validates, also after a JSON round trip', async () => {
    const composer = new MailComposer({
      from: 'Alice <alice@example.com>',
      to: 'bob@example.org',
      subject: 'Report',
      text: 'See attached.',
      html: '<p>See attached.</p>',
      attachments: [{ filename: 'report.bin', content: Buffer.from([0, 1, 2, 3]) }],
    });
    const message = await composer.compile().build();
    const content = await parseMessage(message);
    const data = buildInboundEmail({
      id: '0JDX5M2C8RA7T3VQHN4W',
      receivedAt: new Date('2026-11-24T09:15:02Z'),
      envelope: { ...EXAMPLE_ENVELOPE, dsn: { ret: 'HDRS', envid: null }, rcptTo: [{ address: 'bob@example.org', notify: ['FAILURE'] }] },
      raw: { size: message.length, sha256: createHash('sha256').update(message).digest('hex') },
      content,
    });
    const event = buildEmailEvent(data, new Date('2026-11-24T09:15:03Z'));
    assert.equal(event.data.schema, EMAIL_SCHEMA_ID);
    const parsed = emailEventSchema.parse(JSON.parse(JSON.stringify(event)));
    assert.deepEqual(parsed, event);
    assert.equal(parsed.data.attachments[0]!.content, 'AAECAw==');
  });

  test('the schema rejects what the contract forbids', () => {
    const base = {
      filename: null,
      contentType: 'application/octet-stream',
      disposition: null,
      contentId: null,
      related: false,
      size: 3,
      sha256: 'a'.repeat(64),
    };
    assert.ok(attachmentSchema.safeParse({ ...base, content: 'YWJj' }).success);
    assert.ok(attachmentSchema.safeParse({ ...base, url: 'https://blobs.example/x', expiresAt: '2026-12-01T00:00:00.000Z' }).success);
    assert.ok(attachmentSchema.safeParse(base).success, 'neither (content dropped by a limit) is allowed');
    assert.ok(!attachmentSchema.safeParse({ ...base, content: 'YWJj', url: 'https://blobs.example/x', expiresAt: '2026-12-01T00:00:00.000Z' }).success);
    assert.ok(!attachmentSchema.safeParse({ ...base, url: 'https://blobs.example/x' }).success, 'url needs expiresAt');
    assert.ok(!attachmentSchema.safeParse({ ...base, sha256: 'not-hex' }).success);
    assert.ok(!attachmentSchema.safeParse({ ...base, content: 'not base64!' }).success);
    const date = inboundEmailSchema.shape.date;
    assert.ok(date.safeParse(null).success);
    assert.ok(date.safeParse('2026-11-24T09:15:00.000Z').success);
    assert.ok(!date.safeParse('Tue, 24 Nov 2026 10:15:00 +0100').success, 'dates are ISO-8601, never RFC 5322 text');
    assert.ok(!envelopeSchema.shape.transport.safeParse('LMTP').success);
    assert.ok(!inboundEmailSchema.shape.auth.safeParse({ spf: 'pass' }).success, 'auth is reserved (null) in this version');
  });
});
