/**
 * The streaming message parser (src/message/parse.ts, address.ts): bodies and
 * charsets (RFC 2045/2046, WHATWG encodings), encoded words and parameters
 * (RFC 2047, RFC 2231), attachments with exact size and SHA-256, claim check
 * to a BlobSink with flat memory, addresses (RFC 5322 §3.4, RFC 6532, IDNA
 * RFC 5891), Date (RFC 5322 §3.3/§4.3), the raw header list, reply stripping,
 * and hostile input: limits become parseErrors, the parse never throws.
 *
 * Messages are composed with nodemailer's MailComposer where it produces what
 * is being tested, and written by hand where the exact bytes matter.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import MailComposer from 'nodemailer/lib/mail-composer';
import PostalMime from 'postal-mime';
import { parseMessage, parseMailDate, DEFAULT_PARSE_LIMITS, type BlobSink, type ParsedContent } from '../src/message/parse.js';
import { stripReply, stripReplyLines } from '../src/message/reply.js';
import { parseAddressList, decodeWords } from '../src/message/address.js';
import { buildEmailEvent, buildInboundEmail, emailEventSchema, type Address, type AddressListItem, type Group } from '../src/message/schema.js';

// ── helpers ────────────────────────────────────────────────────────────────

/** Header text (LF written, CRLF on the wire) + blank line + body bytes. */
function message(head: string, body: Buffer | string = ''): Buffer {
  const crlf = (s: string) => s.replace(/\r?\n/g, '\r\n');
  return Buffer.concat([Buffer.from(`${crlf(head.trim())}\r\n\r\n`, 'utf8'), typeof body === 'string' ? Buffer.from(crlf(body), 'utf8') : body]);
}

function compose(opts: ConstructorParameters<typeof MailComposer>[0]): Promise<Buffer> {
  return new MailComposer(opts).compile().build();
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const codes = (r: ParsedContent) => r.parseErrors.map((e) => e.code);
const isGroup = (x: AddressListItem): x is Group => 'group' in x;
function mailbox(x: AddressListItem | undefined): Address {
  assert.ok(x && !isGroup(x), `expected a mailbox, got ${JSON.stringify(x)}`);
  return x;
}

/** Every parse result must be a valid InboundEmail once the transaction facts are added. */
function assertValid(content: ParsedContent): void {
  const data = buildInboundEmail({
    id: '0JDX5M2C8RA7T3VQHN4W',
    receivedAt: '2026-11-24T09:15:02.000Z',
    envelope: {
      mailFrom: '',
      rcptTo: [{ address: 'a@example.test' }],
      helo: 'x',
      clientAddress: '192.0.2.1',
      tls: null,
      authUser: null,
      transport: 'ESMTP',
      queueId: '0JDX5M2C8RA7T3VQHN4W',
      listener: 'mx',
    },
    raw: { size: 1, sha256: '0'.repeat(64) },
    content,
  });
  const r = emailEventSchema.safeParse(buildEmailEvent(data));
  assert.ok(r.success, r.success ? '' : JSON.stringify(r.error.issues.slice(0, 3)));
}

/** Deterministic pseudo-random bytes (LCG), so big inputs need no memory to describe. */
function lcgFill(buf: Buffer, state: { s: number }): void {
  for (let i = 0; i < buf.length; i++) {
    state.s = (Math.imul(state.s, 1103515245) + 12345) >>> 0;
    buf[i] = state.s >>> 24;
  }
}

/** こんにちは in ISO-2022-JP: ESC $ B, the JIS X 0208 pairs, ESC ( B (RFC 1468). */
const ISO2022JP_HELLO = Buffer.from('1b2442' + '2433' + '2473' + '244b' + '2441' + '244f' + '1b2842', 'hex');

/** base64 with 76-character lines (RFC 2045 §6.8). */
function base64Lines(b: Buffer): string {
  return b.toString('base64').replace(/.{76}/g, '$&\r\n');
}

// ── bodies and charsets ────────────────────────────────────────────────────

describe('bodies', () => {
  test('plain text message: text, headers-derived fields, no html', async () => {
    const raw = await compose({
      from: 'Alice <alice@example.com>',
      to: 'bob@example.org',
      subject: 'Hello',
      text: 'Hello Bob,\nhow are you?\n',
      date: new Date('2026-11-23T18:57:43Z'),
      messageId: '<abc.123@example.com>',
    });
    const r = await parseMessage(raw);
    assert.equal(r.text, 'Hello Bob,\nhow are you?\n');
    assert.equal(r.html, null);
    assert.equal(r.subject, 'Hello');
    assert.equal(r.messageId, 'abc.123@example.com', 'Message-ID without angle brackets');
    assert.equal(r.date, '2026-11-23T18:57:43.000Z');
    assert.deepEqual(mailbox(r.from?.[0]).address, 'alice@example.com');
    assert.equal(mailbox(r.from?.[0]).name, 'Alice');
    assert.equal(r.cc, null, 'absent header → null');
    assert.equal(r.bcc, null);
    assert.deepEqual(r.references, []);
    assert.deepEqual(r.attachments, []);
    assert.deepEqual(r.parseErrors, []);
    assertValid(r);
  });

  test('multipart/alternative: both bodies, nothing converted (RFC 2046 §5.1.4)', async () => {
    const raw = await compose({ from: 'a@example.com', to: 'b@example.org', subject: 's', text: 'Plain *version*', html: '<p>HTML <b>version</b> https://example.com</p>' });
    const r = await parseMessage(raw);
    assert.equal(r.text, 'Plain *version*');
    assert.equal(r.html, '<p>HTML <b>version</b> https://example.com</p>', 'no linkifying, no rewriting');
    assert.deepEqual(r.attachments, []);
    assert.deepEqual(r.parseErrors, []);
  });

  test('an HTML-only message has text derived from the HTML (textSource "html")', async () => {
    const r = await parseMessage(message('From: a@example.com\nContent-Type: text/html; charset=utf-8', '<p>only html</p>'));
    assert.equal(r.text, 'only html');
    assert.equal(r.textSource, 'html');
    assert.equal(r.strippedText, 'only html');
    assert.equal(r.html, '<p>only html</p>');
  });

  test('a message without bodies has textSource null', async () => {
    const r = await parseMessage(message('From: a@example.com\nContent-Type: application/octet-stream', 'xx'));
    assert.equal(r.text, null);
    assert.equal(r.textSource, null);
    assert.equal(r.strippedHtml, null);
  });

  // Bodies in their declared charset (RFC 2045 §5.1, RFC 2046 §4.1.2), decoded to UTF-8.
  const charsetCases: Array<{ name: string; head: string; body: Buffer; expected: string }> = [
    {
      name: 'UTF-8, 8bit',
      head: 'Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit',
      body: Buffer.from('Ünïcödé ✓ 日本語 😀', 'utf8'),
      expected: 'Ünïcödé ✓ 日本語 😀',
    },
    {
      name: 'ISO-8859-1, quoted-printable',
      head: 'Content-Type: text/plain; charset=ISO-8859-1\nContent-Transfer-Encoding: quoted-printable',
      body: Buffer.from('Gr=FC=DFe aus K=F6ln'),
      expected: 'Grüße aus Köln',
    },
    {
      name: 'Windows-1252, 8bit (smart quotes, en dash, euro)',
      head: 'Content-Type: text/plain; charset=windows-1252\nContent-Transfer-Encoding: 8bit',
      body: Buffer.from('93536d61727494209620803520', 'hex'),
      expected: '\u201cSmart\u201d \u2013 \u20ac5 ',
    },
    {
      name: 'Shift_JIS, base64',
      head: 'Content-Type: text/plain; charset=Shift_JIS\nContent-Transfer-Encoding: base64',
      body: Buffer.from(Buffer.from('82b182f182c982bf82cd', 'hex').toString('base64')),
      expected: 'こんにちは',
    },
    {
      name: 'ISO-2022-JP, 7bit (RFC 1468)',
      head: 'Content-Type: text/plain; charset=ISO-2022-JP\nContent-Transfer-Encoding: 7bit',
      body: ISO2022JP_HELLO,
      expected: 'こんにちは',
    },
    {
      name: 'KOI8-R, 8bit (RFC 1489)',
      head: 'Content-Type: text/plain; charset=koi8-r\nContent-Transfer-Encoding: 8bit',
      body: Buffer.from('f0d2c9d7c5d42c20cdc9d2', 'hex'),
      expected: 'Привет, мир',
    },
  ];
  for (const c of charsetCases) {
    test(`charset: ${c.name}`, async () => {
      const r = await parseMessage(message(`From: a@example.com\nSubject: charset\nMIME-Version: 1.0\n${c.head}`, c.body));
      assert.equal(r.text, c.expected);
      assert.deepEqual(r.parseErrors, []);
    });
  }

  test('an unknown charset decodes as UTF-8 and is reported; UTF-7 is refused (RFC 2152 can hide markup)', async () => {
    const unknown = await parseMessage(message('From: a@example.com\nContent-Type: text/plain; charset=x-klingon', Buffer.from('caf\xc3\xa9', 'latin1')));
    assert.equal(unknown.text, 'café');
    assert.deepEqual(codes(unknown), ['unknown_charset']);
    const utf7 = await parseMessage(message('From: a@example.com\nContent-Type: text/html; charset=utf-7', '+ADw-script+AD4-alert(1)+ADw-/script+AD4-'));
    assert.equal(utf7.html, '+ADw-script+AD4-alert(1)+ADw-/script+AD4-', 'not decoded into <script>');
    assert.deepEqual(codes(utf7), ['unknown_charset']);
  });

  test('cross-check with postal-mime: attachment names, sizes and hashes agree', async () => {
    const files = [
      { filename: 'naïve résumé.pdf', content: randomBytes(1000) },
      { filename: '日本語のファイル名.txt', content: Buffer.from('テキスト') },
      { filename: 'plain.bin', content: randomBytes(70_000) },
    ];
    const raw = await compose({ from: 'a@example.com', to: 'b@example.org', subject: 'x', text: 'see files', attachments: files });
    const ours = await parseMessage(raw);
    const theirs = await PostalMime.parse(raw);
    const view = (name: string | null | undefined, content: Buffer) => ({ name, size: content.length, sha: sha256(content) });
    assert.deepEqual(
      ours.attachments.map((a) => view(a.filename, Buffer.from(a.content ?? '', 'base64'))),
      theirs.attachments.map((a) => view(a.filename, Buffer.from(a.content as ArrayBuffer))),
    );
    assert.deepEqual(
      ours.attachments.map((a) => a.filename),
      files.map((f) => f.filename),
    );
  });
});

// ── header decoding ────────────────────────────────────────────────────────

describe('encoded words and parameters', () => {
  test('RFC 2047 subject: B and Q words, whitespace between adjacent words dropped (§6.2), split multibyte characters', async () => {
    const utf8 = Buffer.from('日本語', 'utf8');
    // the two words split the UTF-8 bytes in the middle of 本
    const split = `=?UTF-8?B?${utf8.subarray(0, 4).toString('base64')}?=\n =?UTF-8?B?${utf8.subarray(4).toString('base64')}?=`;
    const iso2022 = ISO2022JP_HELLO.toString('base64');
    const cases: Array<[string, string]> = [
      ['=?UTF-8?Q?caf=C3=A9_cr=C3=A8me?=', 'café crème'],
      ['=?ISO-8859-1?Q?Andr=E9?= Pirard', 'André Pirard'],
      // 0x80-0x9F are “ ” – € in windows-1252 (and in ISO-8859-1 as labelled in mail, WHATWG
      // Encoding §4.2); Node 20's one-shot TextDecoder.decode() gets this wrong
      ['=?windows-1252?Q?=93Smart=94_=96_=805?=', '\u201cSmart\u201d \u2013 \u20ac5'],
      ['=?iso-8859-1?Q?=93quoted=94?=', '\u201cquoted\u201d'],
      ['=?UTF-8?B?SGVsbG8=?= =?UTF-8?B?IHdvcmxk?=', 'Hello world'],
      [split, '日本語'],
      [`=?ISO-2022-JP?B?${iso2022}?=`, 'こんにちは'],
      ['Re: =?utf-8*en?q?hello?= there', 'Re: hello there'], // RFC 2231 §5 language tag
      ['plain subject =?not an encoded word', 'plain subject =?not an encoded word'],
    ];
    for (const [header, expected] of cases) {
      const r = await parseMessage(message(`From: a@example.com\nSubject: ${header}`, 'x'));
      assert.equal(r.subject, expected, header);
      assert.deepEqual(r.parseErrors, [], header);
    }
    const errors: string[] = [];
    assert.equal(decodeWords('=?x-unknown?Q?abc?=', (code) => errors.push(code)), 'abc');
    assert.deepEqual(errors, ['unknown_charset']);
  });

  test('attachment file names: RFC 2231 (charset, language, continuations) and RFC 2047', async () => {
    const body = [
      '--b',
      'Content-Type: text/plain',
      '',
      'files',
      '--b',
      'Content-Type: text/plain; charset=utf-8',
      'Content-Disposition: attachment;',
      " filename*0*=utf-8''%E6%97%A5%E6%9C%AC;",
      ' filename*1*=%E8%AA%9E.txt',
      '',
      'one',
      '--b',
      'Content-Type: application/octet-stream',
      "Content-Disposition: attachment; filename*=iso-8859-1'de'Gr%FC%DFe.bin",
      '',
      'two',
      '--b',
      'Content-Type: application/pdf; name="=?UTF-8?Q?R=C3=A9sum=C3=A9_2026.pdf?="',
      'Content-Transfer-Encoding: base64',
      '',
      'dGhyZWU=',
      '--b--',
      '',
    ].join('\n');
    const r = await parseMessage(message('From: a@example.com\nContent-Type: multipart/mixed; boundary=b', body));
    assert.deepEqual(
      r.attachments.map((a) => [a.filename, a.contentType, a.disposition, Buffer.from(a.content!, 'base64').toString()]),
      [
        ['日本語.txt', 'text/plain', 'attachment', 'one'],
        ['Grüße.bin', 'application/octet-stream', 'attachment', 'two'],
        ['Résumé 2026.pdf', 'application/pdf', null, 'three'],
      ],
    );
    assert.equal(r.text, 'files');
    assert.deepEqual(r.parseErrors, []);
  });

  test('headers: every field in order, unfolded, not decoded (RFC 5322 §2.2.3)', async () => {
    const raw = message(
      [
        'Received: from a.example by b.example; Mon, 23 Nov 2026 18:57:43 +0000',
        'Received: from c.example',
        '\tby d.example; Mon, 23 Nov 2026 18:57:40 +0000',
        'From: a@example.com',
        'Subject: =?UTF-8?Q?caf=C3=A9?=',
        '  and more',
        'X-Empty:',
      ].join('\n'),
      'body',
    );
    const r = await parseMessage(raw);
    assert.deepEqual(r.headers, [
      { name: 'Received', value: 'from a.example by b.example; Mon, 23 Nov 2026 18:57:43 +0000' },
      { name: 'Received', value: 'from c.example\tby d.example; Mon, 23 Nov 2026 18:57:40 +0000' },
      { name: 'From', value: 'a@example.com' },
      { name: 'Subject', value: '=?UTF-8?Q?caf=C3=A9?=  and more' },
      { name: 'X-Empty', value: '' },
    ]);
    assert.equal(r.subject, 'café  and more');
  });

  test('Message-ID, In-Reply-To and References without angle brackets (RFC 5322 §3.6.4)', async () => {
    const r = await parseMessage(
      message(
        'From: a@example.com\nMessage-ID: <m1@example.com>\nIn-Reply-To: <p2@example.com> <p1@example.com>\nReferences: <p0@example.com>\n <p1@example.com>\n\t<p2@example.com>',
        'x',
      ),
    );
    assert.equal(r.messageId, 'm1@example.com');
    assert.equal(r.inReplyTo, 'p2@example.com');
    assert.deepEqual(r.references, ['p0@example.com', 'p1@example.com', 'p2@example.com']);
    const bare = await parseMessage(message('From: a@example.com\nMessage-ID: broken-id@example.com', 'x'));
    assert.equal(bare.messageId, 'broken-id@example.com');
  });

  test('a repeated single-occurrence header is reported; From uses the first, To is concatenated', async () => {
    const r = await parseMessage(message('From: first@example.com\nFrom: second@example.com\nTo: a@example.com\nTo: b@example.com', 'x'));
    assert.deepEqual(r.from?.map((x) => mailbox(x).address), ['first@example.com']);
    assert.deepEqual(r.to?.map((x) => mailbox(x).address), ['a@example.com', 'b@example.com']);
    assert.deepEqual(codes(r), ['duplicate_header', 'duplicate_header']);
  });
});

// ── Date ───────────────────────────────────────────────────────────────────

describe('Date (RFC 5322 §3.3, obsolete forms §4.3)', () => {
  test('valid dates, including obsolete forms, become ISO-8601 UTC', () => {
    const cases: Array<[string, string]> = [
      ['Fri, 21 Nov 1997 09:55:06 -0600', '1997-11-21T15:55:06.000Z'], // RFC 5322 A.1.1
      ['Thu, 13 Feb 1969 23:32:54 -0330', '1969-02-14T03:02:54.000Z'], // A.1.3
      ['21 Nov 97 09:55:06 GMT', '1997-11-21T09:55:06.000Z'], // A.6.2: two-digit year, obs-zone
      ['Tue, 1 Jul 2003 10:52:37 +0200 (CEST)', '2003-07-01T08:52:37.000Z'], // trailing comment
      ['Mon, 23 Nov 2026 18:57 EST', '2026-11-23T23:57:00.000Z'], // no seconds, obs-zone
      ['Wed, 17 Jul 1996 02:23:25 -0700 (PDT)', '1996-07-17T09:23:25.000Z'],
      ['Sat, 29 Feb 2020 12:00:00 +0000', '2020-02-29T12:00:00.000Z'],
      ['Mon, 1 Jan 2024 10:00:00 CEST', '2024-01-01T10:00:00.000Z'], // unknown zone = -0000 (§4.3)
      ['2026-11-23T18:57:43+01:00', '2026-11-23T17:57:43.000Z'], // not RFC 5322, but unambiguous
    ];
    for (const [v, iso] of cases) assert.equal(parseMailDate(v), iso, v);
    const invalid = ['yesterday', 'Mon, 32 Jan 2024 10:00:00 +0000', 'Sat, 29 Feb 2021 12:00:00 +0000', 'Mon, 1 Foo 2024 10:00:00 +0000', '1', '', 'Mon, 1 Jan 2024 25:00:00 +0000'];
    for (const v of invalid) assert.equal(parseMailDate(v), null, v);
  });

  test('the ISO string written out matches the runtime\'s for random dates across nine millennia and every zone offset', () => {
    const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
    let seed = 20261207;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 5000; i++) {
      // Years 1000-9999 (two- and three-digit years are mapped by §4.3), zones -2359..+2359.
      const local = Date.UTC(1000, 0, 1) + rand(2 ** 30) * 264_000 + rand(86_400) * 1000;
      const d = new Date(local);
      if (d.getUTCFullYear() > 9999) continue;
      const sign = rand(2) ? '+' : '-';
      const [zh, zm] = [rand(24), rand(60)];
      const value = `${d.getUTCDate()} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ${d.getUTCHours()}:${String(d.getUTCMinutes()).padStart(2, '0')}:${String(d.getUTCSeconds()).padStart(2, '0')} ${sign}${String(zh).padStart(2, '0')}${String(zm).padStart(2, '0')}`;
      const expected = new Date(local - (sign === '-' ? -1 : 1) * (zh * 60 + zm) * 60_000).toISOString();
      assert.equal(parseMailDate(value), expected, value);
    }
  });

  test('an invalid Date is null with invalid_date, never "now"; a missing Date is null without error', async () => {
    const bad = await parseMessage(message('From: a@example.com\nDate: sometime last week', 'x'));
    assert.equal(bad.date, null);
    assert.deepEqual(codes(bad), ['invalid_date']);
    const none = await parseMessage(message('From: a@example.com', 'x'));
    assert.equal(none.date, null);
    assert.deepEqual(none.parseErrors, []);
  });
});

// ── addresses ──────────────────────────────────────────────────────────────

describe('addresses (RFC 5322 §3.4, RFC 6532, IDNA)', () => {
  test('groups, including an empty one, and mailboxes after a group', async () => {
    const r = await parseMessage(message('From: a@example.com\nTo: Team: a@x.example, "B" <b@y.example>;, c@z.example\nCc: undisclosed-recipients:;', 'x'));
    assert.equal(r.to?.length, 2);
    const team = r.to![0]!;
    assert.ok(isGroup(team));
    assert.equal(team.group, 'Team');
    assert.deepEqual(team.members.map((m) => [m.name, m.address]), [['', 'a@x.example'], ['B', 'b@y.example']]);
    assert.equal(mailbox(r.to![1]).address, 'c@z.example');
    assert.deepEqual(r.cc, [{ group: 'undisclosed-recipients', members: [] }]);
    assert.deepEqual(r.parseErrors, []);
  });

  test('IDN domain: ASCII A-labels in domain/address, U-labels in unicodeDomain (RFC 5891)', () => {
    for (const written of ['user@bücher.example', 'user@BÜCHER.Example', 'user@xn--bcher-kva.example']) {
      const a = mailbox(parseAddressList(written)[0]);
      assert.equal(a.domain, 'xn--bcher-kva.example', written);
      assert.equal(a.unicodeDomain, 'bücher.example', written);
      assert.equal(a.address, 'user@xn--bcher-kva.example', written);
      assert.equal(a.original, written);
    }
  });

  test('SMTPUTF8 local part kept (RFC 6532), in a raw UTF-8 header', async () => {
    const r = await parseMessage(message('From: 用户 <用户@例子.广告>\nTo: δοκιμή@παράδειγμα.δοκιμή', 'x'));
    const from = mailbox(r.from?.[0]);
    assert.equal(from.name, '用户');
    assert.equal(from.local, '用户');
    assert.equal(from.unicodeDomain, '例子.广告');
    assert.match(from.domain!, /^xn--[a-z0-9-]+\.xn--[a-z0-9-]+$/);
    assert.equal(from.address, `用户@${from.domain}`);
    assert.equal(mailbox(r.to?.[0]).local, 'δοκιμή');
    assert.deepEqual(r.parseErrors, []);
  });

  test('quoted local parts are unquoted when not needed and kept quoted when needed', () => {
    const [a, b, c] = parseAddressList('"john.doe"@Example.COM, "john doe"@example.com, "a\\"b"@example.com').map(mailbox);
    assert.equal(a!.address, 'john.doe@example.com');
    assert.equal(a!.original, '"john.doe"@Example.COM');
    assert.equal(b!.address, '"john doe"@example.com');
    assert.equal(b!.local, '"john doe"');
    assert.equal(c!.address, '"a\\"b"@example.com');
  });

  test('display names: RFC 2047, quoted strings with quoted-pairs, legacy comments, obsolete routes and literals', () => {
    const list = parseAddressList(
      '=?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>, "Giant; \\"Big\\" Box" <sysservices@example.net>, john@example.com (John Q. Public), <@relay.example:user@final.example>, x@[IPv6:2001:DB8::1]',
    ).map(mailbox);
    assert.deepEqual(
      list.map((a) => [a.name, a.address]),
      [
        ['André Pirard', 'PIRARD@vm1.ulg.ac.be'], // local part case kept (RFC 5321 §2.4)
        ['Giant; "Big" Box', 'sysservices@example.net'],
        ['John Q. Public', 'john@example.com'],
        ['', 'user@final.example'],
        ['', 'x@[IPv6:2001:db8::1]'],
      ],
    );
  });

  test('invalid addresses are kept with original, reported, never turned into junk like "@@"', async () => {
    const r = await parseMessage(message('From: Sales Team <sales at example.com>\nTo: @@, valid@example.com, bad@-host.example, "unterminated <x@example.com>', 'x'));
    const from = mailbox(r.from?.[0]);
    assert.deepEqual(from, { name: 'Sales Team', address: '', original: 'Sales Team <sales at example.com>' });
    const to = r.to!.map(mailbox);
    assert.deepEqual(
      to.map((a) => [a.address, a.original]),
      [
        ['', '@@'],
        ['valid@example.com', 'valid@example.com'],
        ['', 'bad@-host.example'],
        ['', '"unterminated <x@example.com>'],
      ],
    );
    assert.ok(to.every((a) => !/^@|@@|@$/.test(a.address)));
    assert.deepEqual(codes(r), ['invalid_address', 'invalid_address', 'invalid_address', 'invalid_address']);
    assertValid(r);
  });
});

// ── attachments ────────────────────────────────────────────────────────────

describe('attachments', () => {
  test('size and sha256 are those of the original bytes; without a sink content is inline', async () => {
    const big = randomBytes(300 * 1024);
    const small = randomBytes(10);
    const raw = await compose({
      from: 'a@example.com',
      to: 'b@example.org',
      subject: 'files',
      text: 'two files',
      attachments: [
        { filename: 'big.bin', content: big },
        { filename: 'small.bin', content: small, contentType: 'application/x-thing' },
      ],
    });
    const r = await parseMessage(raw);
    assert.deepEqual(
      r.attachments.map((a) => [a.filename, a.size, a.sha256, a.contentType, a.disposition, a.related, a.url]),
      [
        ['big.bin', big.length, sha256(big), 'application/octet-stream', 'attachment', false, undefined],
        ['small.bin', small.length, sha256(small), 'application/x-thing', 'attachment', false, undefined],
      ],
    );
    assert.ok(Buffer.from(r.attachments[0]!.content!, 'base64').equals(big));
    assert.ok(Buffer.from(r.attachments[1]!.content!, 'base64').equals(small));
  });

  test('inline cid image inside multipart/related: related, contentId without <>, cid: link untouched (RFC 2387, 2392)', async () => {
    const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
    const raw = await compose({
      from: 'a@example.com',
      to: 'b@example.org',
      subject: 'logo',
      html: '<p>Logo: <img src="cid:logo.123@example.com"></p>',
      attachments: [{ filename: 'logo.png', content: png, cid: 'logo.123@example.com' }],
    });
    const r = await parseMessage(raw);
    assert.equal(r.attachments.length, 1);
    const a = r.attachments[0]!;
    assert.equal(a.related, true);
    assert.equal(a.contentId, 'logo.123@example.com');
    assert.equal(a.disposition, 'inline');
    assert.equal(a.contentType, 'image/png');
    assert.equal(a.sha256, sha256(png));
    assert.match(r.html!, /src="cid:logo\.123@example\.com"/);
  });

  test('an attached message (message/rfc822, RFC 2046 §5.2.1) is one attachment, also when marked inline', async () => {
    const inner = 'From: inner@example.com\r\nSubject: inner\r\nContent-Type: text/html\r\n\r\n<p>inner</p>\r\n';
    for (const disposition of ['attachment', 'inline']) {
      const raw = message(
        'From: a@example.com\nContent-Type: multipart/mixed; boundary=out',
        `--out\nContent-Type: text/plain\n\nsee below\n--out\nContent-Type: message/rfc822\nContent-Disposition: ${disposition}\n\n${inner}--out--\n`,
      );
      const r = await parseMessage(raw);
      assert.equal(r.text, 'see below', disposition);
      assert.equal(r.html, null, `${disposition}: the inner HTML is not spliced into html`);
      assert.equal(r.attachments.length, 1);
      assert.equal(r.attachments[0]!.contentType, 'message/rfc822');
      assert.equal(Buffer.from(r.attachments[0]!.content!, 'base64').toString(), inner.replace(/\r\n$/, ''));
    }
  });

  test('a DSN (multipart/report, RFC 6522): the human-readable part is text, message/delivery-status an attachment (RFC 3464 §2)', async () => {
    const body = [
      '--r',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      'Your message could not be delivered.',
      '--r',
      'Content-Type: message/delivery-status',
      '',
      'Reporting-MTA: dns; mx.example.org',
      '',
      'Final-Recipient: rfc822; nobody@example.org',
      'Action: failed',
      'Status: 5.1.1',
      '--r',
      'Content-Type: text/rfc822-headers',
      '',
      'Subject: original',
      '--r--',
      '',
    ].join('\n');
    const r = await parseMessage(message('From: MAILER-DAEMON@example.org\nContent-Type: multipart/report; report-type=delivery-status; boundary=r', body));
    assert.equal(r.text, 'Your message could not be delivered.');
    assert.deepEqual(r.attachments.map((a) => a.contentType), ['message/delivery-status', 'text/rfc822-headers']);
    assert.match(Buffer.from(r.attachments[0]!.content!, 'base64').toString(), /Status: 5\.1\.1/);
  });

  test('format=flowed text is unwrapped (RFC 3676 §4.2)', async () => {
    const r = await parseMessage(message('From: a@example.com\nContent-Type: text/plain; charset=utf-8; format=flowed', 'This is one long \nparagraph, wrapped.\n\nSecond.\n'));
    assert.equal(r.text?.trimEnd(), 'This is one long paragraph, wrapped.\n\nSecond.');
  });

  test('with a BlobSink: parts over inlineLimit are streamed to it (claim check), smaller ones stay inline', async () => {
    const big = randomBytes(400 * 1024);
    const small = randomBytes(1000);
    const stored: Array<{ kind: string; filename: string | null; contentType: string; bytes: Buffer }> = [];
    const sink: BlobSink = {
      async put(kind, meta, content) {
        const chunks: Buffer[] = [];
        for await (const c of content) chunks.push(c as Buffer);
        stored.push({ kind, ...meta, bytes: Buffer.concat(chunks) });
        return { url: `https://blobs.example.test/${stored.length}`, expiresAt: '2026-12-01T00:00:00.000Z' };
      },
    };
    const raw = await compose({ from: 'a@example.com', to: 'b@example.org', subject: 's', text: 't', attachments: [{ filename: 'big.dat', content: big }, { filename: 'small.dat', content: small }] });
    const r = await parseMessage(raw, { blobSink: sink, limits: { inlineLimit: 64 * 1024 } });
    assert.equal(stored.length, 1);
    assert.equal(stored[0]!.kind, 'attachment');
    assert.equal(stored[0]!.filename, 'big.dat');
    assert.ok(stored[0]!.bytes.equals(big), 'the sink received the exact decoded bytes');
    const [a, b] = r.attachments;
    assert.deepEqual([a!.url, a!.expiresAt, a!.content, a!.size, a!.sha256], ['https://blobs.example.test/1', '2026-12-01T00:00:00.000Z', undefined, big.length, sha256(big)]);
    assert.equal(b!.url, undefined);
    assert.ok(Buffer.from(b!.content!, 'base64').equals(small));
    assertValid(r);
  });

  test('a failing BlobSink rejects the parse (the message cannot be delivered whole) after reading the input', async () => {
    const raw = await compose({ from: 'a@example.com', to: 'b@example.org', subject: 's', text: 't', attachments: [{ filename: 'big.dat', content: randomBytes(200 * 1024) }] });
    const source = Readable.from([raw]);
    const sink: BlobSink = {
      async put(_kind, _meta, content) {
        content.resume();
        throw new Error('storage unavailable');
      },
    };
    await assert.rejects(parseMessage(source, { blobSink: sink, limits: { inlineLimit: 1024 } }), /storage unavailable/);
    assert.equal(source.readableEnded, true, 'the input was drained');
  });

  test('20 MB attachment streamed to a hashing sink: memory stays flat, sink gets the right sha256', async (t) => {
    const SIZE = 20 * 1024 * 1024;
    const expected = createHash('sha256');
    function* generate() {
      yield Buffer.from(
        'From: a@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n' +
          '--BB\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n' +
          '--BB\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n',
      );
      const state = { s: 42 };
      const block = Buffer.alloc(57 * 1024); // multiple of 57 bytes = whole 76-character lines
      for (let left = SIZE; left > 0; left -= block.length) {
        const part = block.subarray(0, Math.min(block.length, left));
        lcgFill(part, state);
        expected.update(part);
        yield Buffer.from(base64Lines(part) + '\r\n');
      }
      yield Buffer.from('--BB--\r\n');
    }
    let sinkHash = '';
    let sinkBytes = 0;
    const base = process.memoryUsage().rss;
    let peak = 0;
    const sample = () => {
      peak = Math.max(peak, process.memoryUsage().rss - base);
    };
    const timer = setInterval(sample, 10);
    const sink: BlobSink = {
      async put(_kind, _meta, content) {
        const h = createHash('sha256');
        for await (const c of content) {
          h.update(c as Buffer);
          sinkBytes += (c as Buffer).length;
          sample();
        }
        sinkHash = h.digest('hex');
        return { url: 'https://blobs.example.test/big', expiresAt: '2026-12-01T00:00:00.000Z' };
      },
    };
    const started = Date.now();
    const r = await parseMessage(Readable.from(generate()), { blobSink: sink });
    clearInterval(timer);
    sample();
    const want = expected.digest('hex');
    t.diagnostic(`20 MB attachment: peak RSS growth ${(peak / 1048576).toFixed(1)} MB, ${Date.now() - started} ms`);
    assert.equal(sinkHash, want);
    assert.equal(sinkBytes, SIZE);
    assert.equal(r.attachments[0]!.sha256, want);
    assert.equal(r.attachments[0]!.size, SIZE);
    assert.equal(r.attachments[0]!.url, 'https://blobs.example.test/big');
    assert.equal(r.attachments[0]!.content, undefined);
    assert.equal(r.text, 'see attached');
    assert.ok(peak < 64 * 1024 * 1024, `peak RSS growth ${(peak / 1048576).toFixed(1)} MB must stay under 64 MB`);
  });
});

// ── reply stripping ────────────────────────────────────────────────────────

describe('strippedText', () => {
  test('Gmail-style reply: "On … wrote:" (wrapped over two lines) and the quote are removed', async () => {
    const text = [
      'Sounds good, see you then.',
      '',
      'On Mon, Nov 23, 2026 at 6:02 PM Jane Doe <',
      'jane@example.com> wrote:',
      '',
      '> Shall we meet on Tuesday?',
      '>',
      '> Jane',
      '',
    ].join('\n');
    const r = await parseMessage(message('From: b@example.com\nContent-Type: text/plain; charset=utf-8', text));
    assert.equal(r.strippedText, 'Sounds good, see you then.');
    assert.equal(r.text, text.replace(/\n$/, '\n'), 'text itself is untouched');
    assert.equal(stripReply('Yes.\n\nOn 23/11/2026 18:02, Jane wrote:\n> Tuesday?'), 'Yes.');
    assert.equal(stripReply('Oui.\n\nLe lun. 23 nov. 2026 à 18:02, Jane <jane@example.com> a écrit :\n> Mardi ?'), 'Oui.');
  });

  test('Outlook-style replies: "-----Original Message-----", the ____ rule, and a From:/Sent: block', () => {
    const original = 'Approved.\n\nThanks\nBob\n\n-----Original Message-----\nFrom: Jane Doe <jane@example.com>\nSent: Monday, November 23, 2026 6:02 PM\nTo: Bob\nSubject: Budget\n\nPlease approve.';
    assert.equal(stripReply(original), 'Approved.\n\nThanks\nBob');
    const rule = 'Approved.\r\n\r\n________________________________\r\nFrom: Jane Doe <jane@example.com>\r\nSent: Monday, November 23, 2026 6:02 PM\r\nTo: Bob\r\nSubject: Budget\r\n\r\nPlease approve.';
    assert.equal(stripReply(rule), 'Approved.');
    const block = 'Done, see the sheet.\n\nFrom: Jane Doe\nSent: Monday, November 23, 2026 6:02 PM\nTo: Bob\nSubject: Sheet\n\nCan you update it?';
    assert.equal(stripReply(block), 'Done, see the sheet.');
  });

  test('the signature after "-- " (RFC 3676 §4.3) and interleaved quotes are removed', () => {
    assert.equal(stripReply('Here is the file.\n\n-- \nBob Builder\nExample Corp\n'), 'Here is the file.');
    assert.equal(stripReply('> first question\nfirst answer\n> second question\nsecond answer'), 'first answer\nsecond answer');
    assert.equal(stripReply('No quotes, no signature.\n'), 'No quotes, no signature.');
    assert.equal(stripReply('A line with -- inside is kept\n--not a separator'), 'A line with -- inside is kept\n--not a separator');
  });

  test('attribution lines in any case, CR line ends, trailing Unicode white space', () => {
    assert.equal(stripReply('Thanks\n\nON MON, 3 JUN 2024 BOB WROTE:\n> hi'), 'Thanks');
    assert.equal(stripReply('Merci\n\nle lundi, Bob a écrit :\n> salut'), 'Merci');
    assert.equal(stripReply('a\rb\r\nc\r\n> quoted'), 'a\nb\nc');
    assert.equal(stripReply('Thanks\u00a0\u3000\n\t\n'), 'Thanks');
  });

  test('the pre-scan never skips a line the rules would cut at or drop (random texts against the line-by-line rules)', () => {
    // Lines that trigger each rule, near misses, and plain text, in random order.
    const pieces = [
      'plain words here', '', '  ', 'On Mon, 3 Jun 2024 Bob wrote:', 'on monday bob', 'On Mon, 3 Jun 2024 Jane Doe <', 'jane@example.com> wrote:',
      'Le lun. Bob a écrit :', 'Am Montag schrieb Bob:', 'El lunes Bob escribió:', 'Op maandag schreef Bob:', 'Il lunedì Bob ha scritto:',
      '-----Original Message-----', ' -- Mensaje original --', '________________________________', ' _____', 'From: Jane', '*From:* Jane', 'De: Jane',
      'Sent: Monday', 'Date: today', 'Gesendet: heute', '-- ', '--', '--x', '> quoted', '   > indented quote', '>', 'x > y', 'Once upon', 'Oneliner', '\tOn tab',
      'Van: Jan', 'Da: Gianni', 'Von: Hans', 'mid On line', '\u00a0\u3000',
    ];
    let seed = 20261205;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    let cut = 0;
    for (let i = 0; i < 3000; i++) {
      const lines = Array.from({ length: 1 + rand(8) }, () => pieces[rand(pieces.length)]!);
      const text = lines.join(rand(4) === 0 ? '\r\n' : '\n');
      const expected = stripReplyLines(text.replace(/\r\n?/g, '\n'));
      assert.equal(stripReply(text), expected, JSON.stringify(text));
      if (expected !== text.replace(/\r\n?/g, '\n').trimEnd()) cut++;
    }
    assert.ok(cut > 1000, `the texts exercise the rules (${cut} of 3000 changed)`);
  });
});

// ── hostile and broken input ───────────────────────────────────────────────

describe('broken and hostile input never throws', () => {
  test('broken base64 is decoded best-effort and reported (RFC 2045 §6.8)', async () => {
    const body = '--b\nContent-Type: text/plain\n\nhi\n--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=x.bin\nContent-Transfer-Encoding: base64\n\nYWJj!!ZGVm\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nYWJjZ\n--b--\n';
    const r = await parseMessage(message('From: a@example.com\nContent-Type: multipart/mixed; boundary=b', body));
    assert.equal(r.text, 'hi');
    assert.equal(r.attachments.length, 2);
    assert.equal(Buffer.from(r.attachments[0]!.content!, 'base64').toString(), 'abcdef', 'invalid characters skipped');
    assert.deepEqual(codes(r), ['invalid_encoding', 'invalid_encoding']);
    assertValid(r);
  });

  test('multipart without a boundary parameter: the body is kept as text, reported', async () => {
    const r = await parseMessage(message('From: a@example.com\nContent-Type: multipart/mixed', '--x\nContent-Type: text/plain\n\nhello\n--x--\n'));
    assert.match(r.text!, /hello/);
    assert.deepEqual(codes(r), ['malformed_mime']);
    assert.ok(r.headers.some((h) => h.name === 'Content-Type' && h.value === 'multipart/mixed'), 'headers stay as received');
  });

  test('a boundary that never appears, and a missing closing delimiter, are reported; parts before are kept', async () => {
    const never = await parseMessage(message('From: a@example.com\nContent-Type: multipart/mixed; boundary=zzz', '--x\n\nhello\n'));
    assert.deepEqual(codes(never), ['malformed_mime']);
    const truncated = await parseMessage(
      message('From: a@example.com\nContent-Type: multipart/mixed; boundary=b', '--b\nContent-Type: text/plain\n\nfirst\n--b\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0x\n'),
    );
    assert.equal(truncated.text, 'first');
    assert.equal(truncated.attachments.length, 1);
    assert.deepEqual(codes(truncated), ['malformed_mime']);
  });

  test('more than maxParts parts → too_many_parts; parts before the limit are kept', async () => {
    let body = '--b\nContent-Type: text/plain\n\nbody text\n';
    for (let i = 0; i < 1200; i++) body += `--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename=f${i}.bin\n\nx${i}\n`;
    body += '--b--\n';
    const r = await parseMessage(message('From: a@example.com\nContent-Type: multipart/mixed; boundary=b', body));
    assert.deepEqual(codes(r), ['too_many_parts']);
    assert.equal(r.text, 'body text');
    // 1000 nodes: the message itself, the text part and 998 attachments
    assert.equal(r.attachments.length, DEFAULT_PARSE_LIMITS.maxParts - 2);
    const last = r.attachments.at(-1)!;
    assert.equal(Buffer.from(last.content!, 'base64').toString(), 'x997', 'the last kept part ends exactly where it should');
    const small = await parseMessage(message('From: a@example.com\nContent-Type: multipart/mixed; boundary=b', body), { limits: { maxParts: 10 } });
    assert.equal(small.attachments.length, 8);
    assert.deepEqual(codes(small), ['too_many_parts']);
  });

  test('nesting deeper than maxDepth → too_deep; shallower content is kept', async () => {
    let body = '--b0\nContent-Type: text/plain\n\ntop text\n';
    for (let i = 1; i <= 80; i++) body += `--b${i - 1}\nContent-Type: multipart/mixed; boundary=b${i}\n\n`;
    body += '--b80\nContent-Type: text/plain\n\ndeepest\n';
    const r = await parseMessage(message('From: a@example.com\nContent-Type: multipart/mixed; boundary=b0', body));
    assert.equal(r.text, 'top text');
    assert.deepEqual(codes(r), ['too_deep']);
    const shallow = await parseMessage(message('From: a@example.com\nContent-Type: multipart/mixed; boundary=b0', body), { limits: { maxDepth: 100 } });
    assert.match(shallow.text!, /deepest/, 'within the limit the deepest part is parsed');
  });

  test('a header block over maxHeaderBytes → header_too_large, bounded headers', async () => {
    let head = 'From: a@example.com\n';
    for (let i = 0; i < 30000; i++) head += `X-Junk-${i}: ${'a'.repeat(60)}\n`;
    head += 'Subject: after the junk';
    const r = await parseMessage(message(head, 'body'));
    assert.deepEqual(codes(r), ['header_too_large']);
    assert.equal(r.headers[0]!.name, 'From');
    assert.ok(r.headers.length > 1000 && r.headers.length < 30000, `${r.headers.length} headers kept`);
    assert.equal(mailbox(r.from?.[0]).address, 'a@example.com');
    assert.equal(r.subject, null, 'fields after the limit are not read');
    const oneLine = await parseMessage(Buffer.from(`From: a@example.com\r\nSubject: ${'x'.repeat(3 * 1024 * 1024)}\r\n\r\nbody\r\n`));
    assert.deepEqual(codes(oneLine), ['header_too_large']);
    assert.deepEqual(oneLine.headers, [{ name: 'From', value: 'a@example.com' }]);
  });

  test('decoded content over maxDecodedBytes → decoded_too_large; attachment metadata stays exact', async () => {
    const blob = randomBytes(2 * 1024 * 1024);
    const raw = await compose({ from: 'a@example.com', to: 'b@example.org', subject: 's', text: 'small', attachments: [{ filename: 'blob.bin', content: blob }] });
    const r = await parseMessage(raw, { limits: { maxDecodedBytes: 1024 * 1024 } });
    const a = r.attachments[0]!;
    assert.equal(a.content, undefined);
    assert.equal(a.url, undefined);
    assert.equal(a.size, blob.length);
    assert.equal(a.sha256, sha256(blob));
    assert.equal(r.text, 'small');
    assert.deepEqual(codes(r), ['decoded_too_large']);
    assertValid(r);
    const longText = await parseMessage(message('From: a@example.com\nContent-Type: text/plain', `${'line of text\n'.repeat(200_000)}`), { limits: { maxDecodedBytes: 1024 * 1024 } });
    assert.deepEqual(codes(longText), ['decoded_too_large']);
    assert.ok(longText.text!.length <= 1024 * 1024 && longText.text!.length > 900_000, `${longText.text!.length} characters kept`);
  });

  test('random corruption of a valid message never rejects and always gives a valid event', async () => {
    const base = await compose({
      from: '"Ünï" <a@example.com>',
      to: 'Team: b@example.org;',
      subject: 'fuzz ✓',
      text: 'text body\n> quoted',
      html: '<p>html</p>',
      attachments: [{ filename: 'f.bin', content: Buffer.alloc(3000, 7) }, { filename: 'i.png', cid: 'i@x', content: Buffer.alloc(100, 1) }],
    });
    const state = { s: 7 };
    const rnd = (n: number) => {
      state.s = (Math.imul(state.s, 1103515245) + 12345) >>> 0;
      return state.s % n;
    };
    const pieces = ['\r\n--', '--', '\r\n\r\n', 'Content-Type: multipart/mixed; boundary=', '=?utf-8?B?', '\x00', '\xff\xfe', '<', '@', '"', '(', ';', ':'];
    for (let i = 0; i < 150; i++) {
      let b = Buffer.from(base);
      for (let k = 0; k < 1 + rnd(6); k++) {
        const op = rnd(3);
        const at = rnd(b.length);
        if (op === 0) b[at] = rnd(256);
        else if (op === 1) b = Buffer.concat([b.subarray(0, at), Buffer.from(pieces[rnd(pieces.length)]!, 'latin1'), b.subarray(at)]);
        else b = b.subarray(0, Math.max(at, 1));
      }
      const r = await parseMessage(b);
      assertValid(r);
    }
  });

  test('an input stream error rejects the parse (the message is incomplete)', async () => {
    const source = new Readable({
      read() {
        this.push(Buffer.from('From: a@example.com\r\nSubject: x\r\n\r\npartial'));
        this.destroy(new Error('connection reset'));
      },
    });
    await assert.rejects(parseMessage(source), /connection reset/);
  });
});

describe('repeated parses', () => {
  // How fast this is, is bench/parse.mjs's to measure (the same ~5 KB
  // text+html newsletter, against mailparser): a bound on milliseconds here
  // would depend on how busy the machine is.
  test('1000 parses of a 5 KB text+html message give the same result each time (no state carried between parses)', async (t) => {
    const para = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ';
    const raw = await compose({ from: 'Alice <alice@example.com>', to: 'Bob <bob@example.org>, carol@example.net', subject: 'Quarterly report – Q3', text: para.repeat(20), html: `<p>${para.repeat(16)}</p>` });
    assert.ok(raw.length > 4500 && raw.length < 6000, `${raw.length} bytes`);
    const first = await parseMessage(raw);
    assert.ok(first.text?.startsWith('Lorem'));
    assert.ok(first.html?.includes(para.trim()));
    const expected = JSON.stringify(first);
    const start = process.hrtime.bigint();
    let same = 0;
    for (let i = 0; i < 1000; i++) if (JSON.stringify(await parseMessage(raw)) === expected) same++;
    const perMessage = Number(process.hrtime.bigint() - start) / 1e6 / 1000;
    t.diagnostic(`${raw.length}-byte message: ${perMessage.toFixed(3)} ms per parse and comparison (measured, not asserted; see bench/parse.mjs)`);
    assert.equal(same, 1000);
  });
});
