/**
 * Malformed-but-common shapes that used to lose text (docs/payload.md, "Odd
 * mail"), each on both parse paths: the fast path (mime.ts) either declines
 * the message or gives exactly what the streaming path gives, and whichever
 * answers keeps all the text.
 *
 * - `Content-Type: text; charset=…` (no subtype): text/plain, the charset
 *   kept (RFC 2045 §5.2), invalid_content_type;
 * - a header block ending at a line that is not a header field: that line and
 *   the rest are the body (RFC 5322 §2.1), missing_header_separator;
 * - an inline text part that names a file: in `text` and under `attachments`
 *   (RFC 2183 §2.1, §2.3), no parse error;
 *
 * and two found by the second opinion (test/second-opinion.test.ts): a digest
 * part without Content-Type is message/rfc822 (RFC 2046 §5.1.5), and an RFC
 * 2231 extended boundary splits the parts.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { parseMessage, parseMessageFast, parseMessageStreaming, type ParsedContent } from '../src/message/parse.js';

/** Lines joined with CRLF (RFC 5322 §2.1); a Buffer keeps 8-bit bytes exact. */
const crlf = (...lines: (string | Buffer)[]): Buffer => Buffer.concat(lines.map((l) => Buffer.concat([typeof l === 'string' ? Buffer.from(l, 'latin1') : l, Buffer.from('\r\n')])));
const codes = (r: ParsedContent) => r.parseErrors.map((e) => e.code);
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * The parse of `buf` on every path: the streaming path, parseMessage on a
 * Buffer and on a stream, and the fast path when it answers (it must then
 * equal the streaming path).
 */
async function everyPath(buf: Buffer, fastMustAnswer = false): Promise<ParsedContent> {
  const streaming = await parseMessageStreaming(buf);
  const fast = parseMessageFast(buf);
  if (fastMustAnswer) assert.ok(fast, 'the fast path answers for this message');
  if (fast) assert.deepStrictEqual(fast, streaming, 'the fast path gives what the streaming path gives');
  assert.deepStrictEqual(await parseMessage(buf), streaming);
  assert.deepStrictEqual(await parseMessage(Readable.from([buf.subarray(0, 40), buf.subarray(40)])), streaming);
  return streaming;
}

const HEAD = ['From: Alice <alice@example.test>', 'To: bob@example.test', 'Subject: shapes', 'MIME-Version: 1.0'];

describe('Content-Type without a subtype (RFC 2045 §5.2)', () => {
  test('a single-part message: its text is kept, decoded in the declared charset, reported', async () => {
    const r = await everyPath(crlf(...HEAD, 'Content-Type: text; charset=iso-8859-1', '', Buffer.from('Caf\xe9 at noon.', 'latin1')));
    assert.equal(r.text, 'Café at noon.\n');
    assert.deepEqual(r.attachments, []);
    assert.deepEqual(codes(r), ['invalid_content_type']);
  });

  test('a part of a multipart, next to a real attachment', async () => {
    const r = await everyPath(
      crlf(
        ...HEAD,
        'Content-Type: multipart/mixed; boundary="b1"',
        '',
        '--b1',
        'Content-Type: text; charset=us-ascii',
        '',
        'The body text.',
        '--b1',
        'Content-Type: application/pdf',
        'Content-Disposition: attachment; filename="a.pdf"',
        '',
        '%PDF-1.4',
        '--b1--',
      ),
    );
    assert.equal(r.text, 'The body text.');
    assert.deepEqual(
      r.attachments.map((a) => [a.filename, a.contentType]),
      [['a.pdf', 'application/pdf']],
    );
    assert.deepEqual(codes(r), ['invalid_content_type']);
  });

  test('type/subtype followed by junk keeps its type (not text): only a missing subtype is corrected', async () => {
    const r = await everyPath(
      crlf(...HEAD, 'Content-Type: multipart/mixed; boundary="b1"', '', '--b1', 'Content-Type: text/plain', '', 'Hi', '--b1', 'Content-Type: image/gif name=x.gif', '', 'GIF89a', '--b1--'),
    );
    assert.equal(r.text, 'Hi');
    assert.equal(r.attachments.length, 1);
    assert.ok(r.attachments[0]!.contentType.startsWith('image/gif'));
    assert.deepEqual(codes(r), []);
  });
});

describe('a header block without the empty line before the body (RFC 5322 §2.1)', () => {
  test('the message header: the first line that is not a field starts the body, nothing dropped', async () => {
    const r = await everyPath(crlf('From: alice@example.test', 'Subject: no separator', 'This line is body text.', 'Another: with a colon', '', 'Last paragraph.'));
    assert.equal(r.text, 'This line is body text.\nAnother: with a colon\n\nLast paragraph.\n');
    assert.deepEqual(
      r.headers.map((h) => h.name),
      ['From', 'Subject'],
    );
    assert.equal(r.subject, 'no separator');
    assert.deepEqual(codes(r), ['missing_header_separator']);
  });

  test('a part header: the body starts at the line that is not a field', async () => {
    const r = await everyPath(
      crlf(...HEAD, 'Content-Type: multipart/mixed; boundary="b1"', '', '--b1', 'Content-Type: text/plain', 'Hello from the part.', 'Second line.', '--b1--'),
    );
    assert.equal(r.text, 'Hello from the part.\nSecond line.');
    assert.deepEqual(codes(r), ['missing_header_separator']);
  });

  test('white space before the colon is a field (RFC 5322 §4.5), an mbox From line is set aside', async () => {
    const r = await everyPath(crlf('From alice@example.test Mon Jan  1 00:00:00 2024', 'From: alice@example.test', 'Subject : obsolete', '', 'Body.'));
    assert.equal(r.text, 'Body.\n');
    assert.deepEqual(codes(r), []);
  });
});

describe('an inline text part that names a file (RFC 2183 §2.1, §2.3)', () => {
  test('Content-Disposition inline with a filename: in text and under attachments, on the fast path too', async () => {
    const r = await everyPath(
      crlf(
        ...HEAD,
        'Content-Type: multipart/mixed; boundary="b1"',
        '',
        '--b1',
        'Content-Type: text/plain; charset=us-ascii',
        '',
        'See the file.',
        '--b1',
        'Content-Type: text/plain; charset=us-ascii',
        'Content-Disposition: inline; filename="msg.txt"',
        '',
        'File contents.',
        '--b1',
        'Content-Type: text/plain; charset=utf-8; name="notes.txt"',
        'Content-Transfer-Encoding: quoted-printable',
        '',
        'Caf=C3=A9 =',
        'notes.',
        '--b1--',
      ),
      true,
    );
    assert.equal(r.text, 'See the file.\nFile contents.\nCafé notes.');
    assert.deepEqual(
      r.attachments.map((a) => ({ filename: a.filename, contentType: a.contentType, disposition: a.disposition, size: a.size, sha256: a.sha256, content: a.content })),
      [
        { filename: 'msg.txt', contentType: 'text/plain', disposition: 'inline', size: 14, sha256: sha256('File contents.'), content: Buffer.from('File contents.').toString('base64') },
        { filename: 'notes.txt', contentType: 'text/plain', disposition: null, size: 12, sha256: sha256('Café notes.'), content: Buffer.from('Café notes.').toString('base64') },
      ],
    );
    assert.deepEqual(codes(r), []);
  });

  test('a single-part message with a name, and an RFC 2231 file name (streaming path)', async () => {
    const single = await everyPath(crlf(...HEAD, 'Content-Type: text/plain; name="whole.txt"', '', 'All of it.'), true);
    assert.equal(single.text, 'All of it.\n');
    assert.deepEqual(
      single.attachments.map((a) => [a.filename, a.size]),
      [['whole.txt', 12]],
    );
    const r2231 = await everyPath(crlf(...HEAD, "Content-Disposition: inline; filename*=UTF-8''r%C3%A9sum%C3%A9.txt", '', 'CV'));
    assert.equal(r2231.text, 'CV\n');
    assert.deepEqual(
      r2231.attachments.map((a) => [a.filename, a.disposition, a.contentType]),
      [['résumé.txt', 'inline', 'text/plain']],
    );
  });

  test('an inline HTML part with a file name is listed too; in multipart/related with a Content-ID it is related', async () => {
    const r = await everyPath(
      crlf(
        ...HEAD,
        'Content-Type: multipart/related; boundary="b1"',
        '',
        '--b1',
        'Content-Type: text/html; charset=utf-8; name="page.html"',
        'Content-ID: <page@example.test>',
        '',
        '<p>Hi</p>',
        '--b1--',
      ),
      true,
    );
    assert.equal(r.html, '<p>Hi</p>');
    assert.deepEqual(
      r.attachments.map((a) => [a.filename, a.contentType, a.contentId, a.related]),
      [['page.html', 'text/html', 'page@example.test', true]],
    );
  });
});

describe('found by the second opinion', () => {
  test('a multipart/digest part without Content-Type is message/rfc822 (RFC 2046 §5.1.5), not text', async () => {
    const r = await everyPath(
      crlf(...HEAD, 'Content-Type: multipart/digest; boundary="d"', '', '--d', '', 'From: carol@example.test', 'Subject: digested', '', 'Digested body.', '--d--'),
    );
    assert.equal(r.text, null);
    assert.deepEqual(
      r.attachments.map((a) => a.contentType),
      ['message/rfc822'],
    );
  });

  test('an RFC 2231 extended boundary (boundary*=) splits the parts (RFC 2231 §4)', async () => {
    const r = await everyPath(
      crlf(...HEAD, "Content-Type: multipart/mixed; boundary*=us-ascii''EeQf", '', '--EeQf', 'Content-Type: text/plain', '', 'part 1', '--EeQf', 'Content-Type: text/plain', '', 'part 2', '--EeQf--'),
    );
    assert.equal(r.text, 'part 1\npart 2');
    assert.deepEqual(codes(r), []);
  });
});
