/**
 * The MIME corpus (test/fixtures/eml, described in its README.md) run through
 * parseMessage:
 *
 * 1. every fixture has hand-written expectations — decoded subject, text in
 *    the right script, addresses (groups, IDN, SMTPUTF8), attachment
 *    filename/type/size/SHA-256 (recorded from the bytes put in when the
 *    fixture was composed, see test/fixtures/build-corpus.ts), dates, and the
 *    exact set of parseErrors codes;
 * 2. invariants over the whole corpus: parse resolves, output validates against
 *    the postgate.email.v1 schema, attachment content matches its size and
 *    digest, text has LF line ends, a streamed parse equals a Buffer parse;
 * 3. a cross-check against postal-mime; every disagreement is either a failure
 *    or listed in KNOWN_DISAGREEMENTS with the reason and the side that is right.
 *
 * When parseMessage is wrong for a case, the expectation stays as it should be
 * and the test is marked `todo` with the bug — the expectation is never weakened.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import PostalMime from 'postal-mime';
import { parseMessage } from '../src/message/parse.js';
import {
  PARSE_ERROR_CODES,
  buildInboundEmail,
  inboundEmailSchema,
  type Address,
  type AddressListItem,
  type Attachment,
  type ParsedContent,
} from '../src/message/schema.js';
import { fixturePath } from './helpers/fixtures.js';

type ParseOptions = NonNullable<Parameters<typeof parseMessage>[1]>;

// ── helpers ─────────────────────────────────────────────────────────────────

const cache = new Map<string, Buffer>();
async function load(name: string): Promise<Buffer> {
  let buf = cache.get(name);
  if (!buf) cache.set(name, (buf = await readFile(fixturePath('eml', name))));
  return buf;
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** The mailbox at `i`, asserting it is not a group. */
function mbox(list: AddressListItem[] | null, i: number): Address {
  assert.ok(list, 'address list is null');
  const item = list[i];
  assert.ok(item, `no address at index ${i}`);
  assert.ok(!('group' in item), `entry ${i} is a group`);
  return item;
}

interface ExpAddress {
  name: string;
  address: string;
  local?: string;
  domain?: string;
  unicodeDomain?: string;
  original?: string;
}
interface ExpGroup {
  group: string;
  members: ExpAddress[];
}
const m = (name: string, address: string, extra: Partial<ExpAddress> = {}): ExpAddress => ({ name, address, ...extra });

function checkMailbox(actual: Address, exp: ExpAddress, where: string): void {
  assert.equal(actual.name, exp.name, `${where}: name`);
  assert.equal(actual.address, exp.address, `${where}: address`);
  for (const k of ['local', 'domain', 'unicodeDomain'] as const) {
    if (exp[k] !== undefined) assert.equal(actual[k], exp[k], `${where}: ${k}`);
  }
  if (exp.original !== undefined) assert.equal(actual.original.trim(), exp.original, `${where}: original`);
}

function addresses(list: AddressListItem[] | null, expected: (ExpAddress | ExpGroup)[], field: string): void {
  assert.ok(list, `${field} is null`);
  assert.equal(list.length, expected.length, `${field}: ${JSON.stringify(list)}`);
  expected.forEach((exp, i) => {
    const actual = list[i]!;
    if ('group' in exp) {
      assert.ok('group' in actual, `${field}[${i}] should be a group: ${JSON.stringify(actual)}`);
      assert.equal(actual.group, exp.group, `${field}[${i}].group`);
      assert.equal(actual.members.length, exp.members.length, `${field}[${i}].members: ${JSON.stringify(actual.members)}`);
      exp.members.forEach((mm, j) => checkMailbox(actual.members[j]!, mm, `${field}[${i}].members[${j}]`));
    } else {
      assert.ok(!('group' in actual), `${field}[${i}] should be a mailbox: ${JSON.stringify(actual)}`);
      checkMailbox(actual, exp, `${field}[${i}]`);
    }
  });
}

interface ExpAttachment {
  filename: string | null;
  contentType: string;
  disposition: 'attachment' | 'inline' | null;
  size: number;
  sha256: string;
  contentId?: string | null;
  related?: boolean;
}

function attachments(actual: Attachment[], expected: ExpAttachment[]): void {
  assert.equal(
    actual.length,
    expected.length,
    `attachments: ${JSON.stringify(actual.map((a) => [a.filename, a.contentType]))}`,
  );
  expected.forEach((exp, i) => {
    const a = actual[i]!;
    const where = `attachments[${i}] (${exp.filename})`;
    assert.equal(a.filename, exp.filename, `${where}: filename`);
    assert.equal(a.contentType, exp.contentType, `${where}: contentType`);
    assert.equal(a.disposition, exp.disposition, `${where}: disposition`);
    assert.equal(a.size, exp.size, `${where}: size`);
    assert.equal(a.sha256, exp.sha256, `${where}: sha256`);
    assert.equal(a.contentId, exp.contentId ?? null, `${where}: contentId`);
    assert.equal(a.related, exp.related ?? false, `${where}: related`);
  });
}

/** The decoded body, compared without trailing white space (whether the last line break is kept is not specified). */
function textIs(actual: string | null, expected: string, field = 'text'): void {
  assert.ok(actual !== null, `${field} is null`);
  assert.equal(actual.trimEnd(), expected.trimEnd(), field);
}

function dateIs(actual: string | null, expectedIso: string): void {
  assert.ok(actual !== null, 'date is null');
  assert.match(actual, /Z$/, 'date must be UTC');
  assert.equal(new Date(actual).toISOString(), new Date(expectedIso).toISOString());
}

function header(p: ParsedContent, name: string): string | undefined {
  return p.headers.find((h) => h.name.toLowerCase() === name.toLowerCase())?.value;
}

function codes(p: ParsedContent): string[] {
  return [...new Set(p.parseErrors.map((e) => e.code))].sort();
}

// ── the bytes put in (build-corpus.ts prints these; hand-written fixtures: see README) ──

const SHA = {
  resumeLatin1: 'f3afdf2c03eeb43c1746f670edad2a9ce0d9b98b665db0b1d2c82e5547c068f8',
  lodzPlan: '0a486778b40690197e71aa639b9e89226fc54a716289c7ce3ce450497c82b7d6',
  otchet: '668e7fbe3f1f128262d6f8e7409c34eacb9a185e98f19b8d01992c37483dd9f2',
  gijiroku: '9872afd1099ef138aab319ba780eb0ef260584dee835eca7e30c4f9e8eba9d31',
  nengajo: 'df6c764d38e8c14d5581398e450b41c5627ec06e2524a1c024dd4e6a67f251da',
  huiyi: 'c185cec11450d45550c3d672de4d775572281317fc80eb83526f719eb0f3cf40',
  baogao: '4915fe143c291a6055a30da3d0e2f6f6dcda553fd12b57f0d89bce9da2aa52d6',
  png: 'bc09c2590d2502c8ffaf1a3c09aa89df222e03d186a8daa0c7fce6321fb6e928',
  gif: 'b1442e85b03bdcaf66dc58c7abb98745dd2687d86350be9a298a1d9382ac849b',
  reportPdf: 'b2bed93dd9c988d987aa4ae8181f1a69d0fab288f6ec4e86d05aca0fc979dad4',
  naivePdf: '69322be106d98461aab81941e441b540b322701471749912d05ddfe000b8be70',
  dataCsv: '77000e14603b62e1f2176984572953ed0c8132f5ef5f386a06835fa72d888d01',
  empty: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  randomBin: 'af2ba40f7dde30b5c1e477a74dcd61d850b9121fd92a68659a1865b2580dcb80',
  forwardedEml: '2193748c3d6450231e880bad7a4dc07cddd06646fd9d4c43ac8b0dad6cd41d19',
  inviteIcs: '634a25e8e0b7c713e6f65550e2bb3972f733ffcef2345f7c42b04fa051297a26',
  lfBin: 'e333e3d30c01d43fadeccb9b1d46ad10ef4ae61aef3201a8d2c2bc5431a1a628',
  // hand-written fixtures
  euroCsv: '4f82a98d1c59ddb4751cbf74aa52b7cee495b210804aea38a80c515472385fad', // "EUR,USD\r\n1,1.09\r\n"
  resumeFr: '49387ecd1b5a203009024a082d4ce2eda8c9f86875f61d0e670336116e2854db', // "%PDF-1.4 fake resume\r\n"
  threeSections: 'f6db6756fd498b02d4c258581e13946ee1625eba0a96f8bbbcc019b6926ce4f8', // "three sections\r\n"
  nameOnly: '29c1f764706f9d6fea6e22e8d1994fcfc55e18a0fb258b4b18a2d0e548dc2651', // "name only\r\n"
  smimeP7s: 'b589840f0bcf2dda267b8aefc3d3bab030ddfb163cafa07f4816ac1e5703a159', // 30 82 01 00 06..41
  pgpAsc: '725a6d8c0efc3c1a27592e0a07c5575e15f3cdc6ecdca5303cf431ec2b604b23', // the armored block, CRLF
  dsn: '10a25b0d1b5cb6e169d7b8cd070dac067a4cd7e6c5f85a302c20c925b70b73bf',
  bouncedOriginal: '24aade80cc776291a897693363dc8fc6f2f66b445fd89a8a307e5b442ae800d5',
  postfixDsn: '4fa403ada73497fae990bb5fa143728b5f188faedbe4a6cc7e6596b6c3422d98',
  postfixReturnedHeaders: '84699aac965d418419e41a7529c16756a08f4580e0e23df0a42dffd03e6dfd89',
  tenBytes: '1f825aa2f0020ef7cf91dfa30da4668d791c5d4824fc8e41354b89ec05795ab3', // 00 01 … 09
  recovered: 'e716b0c253e58db2ae096a84a1d24602f74c9ccae74949127898aca799fcda18', // "recovered attachment\r\n"
};

const ALICE = m('Alice Example', 'alice@example.test');
const BOB = m('Bob Builder', 'bob@example.test');
const DATE = '2024-03-04T09:15:00Z';

// ── per-fixture expectations ────────────────────────────────────────────────

interface Case {
  fixture: string;
  /** Shown after the fixture name when one fixture has several cases. */
  title?: string;
  /** The exact set of parseErrors codes. */
  errors: string[];
  opts?: ParseOptions;
  /** Upper bound for one parse, ms. */
  maxMs?: number;
  /** Set when parseMessage is wrong for this case (the expectation stays correct). */
  todo?: string;
  check(p: ParsedContent): void;
}

/** Standard checks for a single-charset message: subject, From, To, text, date. */
function basic(p: ParsedContent, o: { subject: string; from: ExpAddress; text: string; to?: ExpAddress }): void {
  assert.equal(p.subject, o.subject, 'subject');
  addresses(p.from, [o.from], 'from');
  addresses(p.to, [o.to ?? BOB], 'to');
  textIs(p.text, o.text);
  dateIs(p.date, DATE);
}

const CASES: Case[] = [
  // ── charsets ──
  {
    fixture: 'charset-utf8-qp.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: 'Grüße aus Köln — 日本語テキスト ✓ 🎉',
        from: m('Zoë Ünal', 'zoe@example.test'),
        text: 'Grüße aus Köln!\nΚαλημέρα κόσμε — Здравствуй, мир — こんにちは 🎉\n',
      });
      assert.equal(p.messageId, 'charset-utf8-qp@corpus.postgate.test');
      assert.equal(p.html, null);
      assert.deepEqual(p.attachments, []);
    },
  },
  {
    fixture: 'charset-utf8-base64.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: 'Привет 👋 — 你好 — مرحبا',
        from: m('Ольга 王', 'olga@example.test'),
        text: 'Arabic: مرحبا بالعالم\nHebrew: שלום עולם\nThai: สวัสดีชาวโลก\n',
      });
    },
  },
  {
    fixture: 'charset-iso-8859-1.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: 'Café, crème brûlée et façade',
        from: m('François Müller', 'francois@example.test'),
        text: 'Bonjour à tous,\nLe café crème est prêt ; rendez-vous à Zürich.\nÇa coûte 12 £.\n',
      });
      attachments(p.attachments, [
        { filename: 'résumé.txt', contentType: 'application/octet-stream', disposition: 'attachment', size: 23, sha256: SHA.resumeLatin1 },
      ]);
    },
  },
  {
    fixture: 'charset-iso-8859-2.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: 'Zażółć gęślą jaźń',
        from: m('Łukasz Żółkiewski', 'lukasz@example.test'),
        text: 'Příliš žluťoučký kůň úpěl ďábelské ódy.\nZażółć gęślą jaźń.\n',
      });
      attachments(p.attachments, [
        { filename: 'Łódź plán.txt', contentType: 'application/octet-stream', disposition: 'attachment', size: 16, sha256: SHA.lodzPlan },
      ]);
    },
  },
  {
    fixture: 'charset-iso-8859-15.eml',
    errors: [],
    check(p) {
      // 0xA4 is € in ISO-8859-15 (¤ in Latin-1), 0xBD is œ, 0xBE is Ÿ.
      basic(p, {
        subject: "Prix : 49 € pour l'œuvre",
        from: m('Šárka Žižková', 'sarka@example.test'),
        text: "Le prix est de 49 €.\nL'œuvre de Šárka coûte 120 € ; Ÿ majuscule.\n",
      });
    },
  },
  {
    fixture: 'charset-windows-1251.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: 'Привет, мир! Отчёт за квартал',
        from: m('Иван Петров', 'ivan@example.test'),
        text: 'Здравствуйте!\nВо вложении отчёт за третий квартал.\nС уважением, Иван\n',
      });
      attachments(p.attachments, [
        { filename: 'Отчёт.txt', contentType: 'application/octet-stream', disposition: 'attachment', size: 11, sha256: SHA.otchet },
      ]);
    },
  },
  {
    fixture: 'charset-windows-1252.eml',
    title: 'body',
    errors: [],
    check(p) {
      // 0x80–0x9F are printable in windows-1252 (€ ‚ … “ ” – ’), not C1 controls.
      textIs(p.text, 'It’s “quoted” – naïve café… costs €5.\n');
      addresses(p.to, [BOB], 'to');
      dateIs(p.date, DATE);
    },
  },
  {
    fixture: 'charset-windows-1252.eml',
    title: 'encoded words',
    errors: [],
    check(p) {
      // the same 0x80–0x9F bytes in Q and B encoded words (a one-shot TextDecoder on Node 20 gets these wrong)
      assert.equal(p.subject, '“Smart quotes” – and €uro signs…');
      addresses(p.from, [m('Renée O’Brien', 'renee@example.test')], 'from');
    },
  },
  {
    fixture: 'charset-shift-jis.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: '会議の議事録について',
        from: m('山田太郎', 'yamada@example.test'),
        text: 'お疲れ様です。\n明日の会議の議事録を添付します。ｶﾀｶﾅもあります。\nよろしくお願いいたします。\n',
      });
      attachments(p.attachments, [
        { filename: '議事録.txt', contentType: 'application/octet-stream', disposition: 'attachment', size: 8, sha256: SHA.gijiroku },
      ]);
    },
  },
  {
    fixture: 'charset-iso-2022-jp.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: '新年のご挨拶',
        from: m('鈴木花子', 'suzuki@example.test'),
        text: 'あけましておめでとうございます。\n本年もよろしくお願い申し上げます。\n',
      });
      attachments(p.attachments, [
        { filename: '年賀状.txt', contentType: 'application/octet-stream', disposition: 'attachment', size: 16, sha256: SHA.nengajo },
      ]);
    },
  },
  {
    fixture: 'charset-gb2312.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: '会议通知：明天下午三点',
        from: m('张伟', 'zhang@example.test'),
        text: '各位同事：\n明天下午三点在三楼会议室开会。\n谢谢！\n',
      });
      attachments(p.attachments, [
        { filename: '会议纪要.txt', contentType: 'application/octet-stream', disposition: 'attachment', size: 10, sha256: SHA.huiyi },
      ]);
    },
  },
  {
    fixture: 'charset-gbk.eml',
    errors: [],
    check(p) {
      // 镕 and 喆 are GBK-only (not in GB2312).
      basic(p, {
        subject: '朱镕基与王喆',
        from: m('王喆', 'wang@example.test'),
        text: '镕与喆不在 GB2312 之内，但在 GBK 之内。\n繁體字也可以。\n',
      });
    },
  },
  {
    fixture: 'charset-koi8-r.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: 'Съешь же ещё этих мягких французских булок',
        from: m('Фёдор Достоевский', 'fyodor@example.test'),
        text: 'Съешь же ещё этих мягких французских булок, да выпей чаю.\n',
      });
    },
  },
  {
    fixture: 'charset-big5.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: '繁體中文測試',
        from: m('陳大文', 'chan@example.test'),
        text: '您好！\n這是一封繁體中文的測試郵件。\n',
      });
      attachments(p.attachments, [
        { filename: '報告.txt', contentType: 'application/octet-stream', disposition: 'attachment', size: 6, sha256: SHA.baogao },
      ]);
    },
  },
  {
    fixture: 'charset-latin1-8bit.eml',
    errors: [],
    check(p) {
      basic(p, { subject: '8bit Latin-1 body', from: ALICE, text: 'Grüße aus München: schöne Größe, 10 m².\n' });
    },
  },
  {
    fixture: 'charset-unknown.eml',
    errors: ['unknown_charset'],
    check(p) {
      assert.equal(p.subject, 'Unknown charset');
      textIs(p.text, "Qapla'! These words are ASCII, so they must survive an unknown charset.\n");
    },
  },

  // ── encoded words and parameters ──
  {
    fixture: 'encoded-words-rfc2047-examples.eml',
    errors: [],
    check(p) {
      // RFC 2047 §8: adjacent encoded words join without the white space between them,
      // even across charsets.
      assert.equal(p.subject, 'If you can read this you understand the example.');
      addresses(p.from, [m('Keith Moore', 'moore@cs.utk.edu')], 'from');
      addresses(p.to, [m('Keld Jørn Simonsen', 'keld@dkuug.dk')], 'to');
      // local part kept as written, domain lower-cased (schema: Address.address)
      addresses(p.cc, [m('André Pirard', 'PIRARD@vm1.ulg.ac.be', { local: 'PIRARD', domain: 'vm1.ulg.ac.be' })], 'cc');
      textIs(p.text, 'The headers of this message are the examples of RFC 2047 section 8.\n');
    },
  },
  {
    fixture: 'encoded-words-edge-cases.eml',
    errors: [],
    check(p) {
      // U+1F600 split across two B words is joined (RFC 2047 §5 forbids the split, every
      // MUA repairs it); `*en` is an RFC 2231 §5 language tag; `?x?` is not an encoding,
      // so that token is not an encoded word and stays as written.
      assert.equal(p.subject, '😀 Hello World and für you =?utf-8?x?notencoded?=');
      addresses(p.from, [m('😀 Smiley', 'smiley@example.test')], 'from');
    },
  },
  {
    fixture: 'rfc2231-parameters.eml',
    errors: [],
    check(p) {
      textIs(p.text, 'Four attachments whose names use RFC 2231.\n');
      attachments(p.attachments, [
        // filename*0* / *1* encoded sections, *2 a plain quoted section (RFC 2231 §4.1)
        { filename: '€ exchange rates-2024.csv', contentType: 'text/csv', disposition: 'attachment', size: 17, sha256: SHA.euroCsv },
        // charset and language (RFC 2231 §4)
        { filename: 'résumé détaillé.pdf', contentType: 'application/pdf', disposition: 'attachment', size: 22, sha256: SHA.resumeFr },
        // continuations without charset (RFC 2231 §3)
        {
          filename: 'very long file name split in three sections.txt',
          contentType: 'text/plain',
          disposition: 'attachment',
          size: 16,
          sha256: SHA.threeSections,
        },
        // name*= on Content-Type, no Content-Disposition at all
        { filename: '📎 clip.bin', contentType: 'application/octet-stream', disposition: null, size: 11, sha256: SHA.nameOnly },
      ]);
    },
  },
  {
    fixture: 'attachments-filenames.eml',
    errors: [],
    check(p) {
      textIs(p.text, 'Five attachments.\n');
      attachments(p.attachments, [
        {
          filename: 'naïve résumé 2024 — final version for the hiring committee.pdf',
          contentType: 'application/pdf',
          disposition: 'attachment',
          size: 5000,
          sha256: SHA.naivePdf,
        },
        { filename: 'data.csv', contentType: 'text/csv', disposition: 'attachment', size: 33, sha256: SHA.dataCsv },
        { filename: 'empty.txt', contentType: 'text/plain', disposition: 'attachment', size: 0, sha256: SHA.empty },
        { filename: 'random.bin', contentType: 'application/octet-stream', disposition: 'attachment', size: 4096, sha256: SHA.randomBin },
        { filename: '写真 (1).png', contentType: 'image/png', disposition: 'attachment', size: 70, sha256: SHA.png },
      ]);
    },
  },

  // ── structure ──
  {
    fixture: 'alternative-text-html.eml',
    errors: [],
    check(p) {
      basic(p, { subject: 'Plain and rich', from: ALICE, text: 'This is the plain text part.\nIt has two lines.\n' });
      assert.ok(p.html?.includes('<p>This is the <b>HTML</b> part.</p><p>It has two paragraphs.</p>'), String(p.html));
      textIs(p.strippedText, 'This is the plain text part.\nIt has two lines.', 'strippedText');
      assert.deepEqual(p.attachments, []);
    },
  },
  {
    fixture: 'html-only.eml',
    errors: [],
    check(p) {
      assert.equal(p.subject, 'HTML only');
      // no text/plain part: text derived from the HTML
      assert.equal(p.textSource, 'html');
      textIs(p.text, 'Newsletter\n\nOnly an HTML body here & nothing else.');
      textIs(p.strippedText, 'Newsletter\n\nOnly an HTML body here & nothing else.', 'strippedText');
      assert.equal(p.strippedHtml, p.html, 'no quote: strippedHtml is the HTML');
      assert.ok(p.html?.includes('<h1>Newsletter</h1><p>Only an <i>HTML</i> body here &amp; nothing else.</p>'), String(p.html));
    },
  },
  {
    fixture: 'related-cid-images.eml',
    errors: [],
    check(p) {
      textIs(p.text, 'Logo and chart are inline in the HTML version. The report is attached.\n');
      assert.ok(p.html?.includes('<img src="cid:logo@corpus.test" alt="logo">'), 'cid: links are left as they are');
      attachments(p.attachments, [
        { filename: 'logo.png', contentType: 'image/png', disposition: 'inline', size: 70, sha256: SHA.png, contentId: 'logo@corpus.test', related: true },
        { filename: 'chart.gif', contentType: 'image/gif', disposition: 'inline', size: 43, sha256: SHA.gif, contentId: 'chart@corpus.test', related: true },
        { filename: 'report.pdf', contentType: 'application/pdf', disposition: 'attachment', size: 2048, sha256: SHA.reportPdf },
      ]);
    },
  },
  {
    fixture: 'mixed-forwarded-rfc822.eml',
    errors: [],
    check(p) {
      assert.equal(p.subject, 'Fwd: Inner subject');
      textIs(p.text, 'FYI, see the forwarded message.\n');
      // the forwarded message is one attachment, its bytes untouched; its own parts are not ours
      attachments(p.attachments, [
        { filename: 'forwarded.eml', contentType: 'message/rfc822', disposition: 'attachment', size: 719, sha256: SHA.forwardedEml },
      ]);
    },
  },
  {
    fixture: 'calendar-invite.eml',
    errors: [],
    check(p) {
      basic(p, { subject: 'Invitation: Plan review @ Tue 5 Mar 2024 15:00 UTC', from: ALICE, text: 'You are invited to: Plan review.\n' });
      assert.ok(p.html?.includes('<b>Plan review</b>'));
      // the text/calendar alternative (method=REQUEST) is not a text/plain or text/html body,
      // so it is a non-body part; the same bytes also come as an application/ics attachment
      attachments(p.attachments, [
        { filename: null, contentType: 'text/calendar', disposition: null, size: 362, sha256: SHA.inviteIcs },
        { filename: 'invite.ics', contentType: 'application/ics', disposition: 'attachment', size: 362, sha256: SHA.inviteIcs },
      ]);
    },
  },
  {
    fixture: 'smime-signed.eml',
    errors: [],
    check(p) {
      assert.equal(p.subject, 'S/MIME signed message');
      textIs(p.text, 'This message is signed with S/MIME (the signature is a dummy).\n');
      attachments(p.attachments, [
        { filename: 'smime.p7s', contentType: 'application/pkcs7-signature', disposition: 'attachment', size: 64, sha256: SHA.smimeP7s },
      ]);
    },
  },
  {
    fixture: 'pgp-signed.eml',
    errors: [],
    check(p) {
      assert.equal(p.subject, 'PGP signed message');
      textIs(p.text, 'This message is signed with OpenPGP (the signature is a dummy).\n');
      attachments(p.attachments, [
        { filename: 'signature.asc', contentType: 'application/pgp-signature', disposition: 'attachment', size: 201, sha256: SHA.pgpAsc },
      ]);
    },
  },
  {
    fixture: 'bounce-dsn.eml',
    title: 'notification and returned message',
    errors: [],
    check(p) {
      assert.equal(p.subject, 'Undelivered Mail Returned to Sender');
      addresses(p.from, [m('Mail Delivery System', 'MAILER-DAEMON@mx.example.test')], 'from');
      assert.equal(header(p, 'Auto-Submitted'), 'auto-replied');
      assert.ok(p.text?.startsWith('This is the mail system at host mx.example.test.\n'), String(p.text));
      assert.ok(p.text?.includes('your message could not\nbe delivered to one or more recipients.'), String(p.text));
      assert.ok(!p.text?.includes('Hello?'), 'the returned message is not part of the text');
      const returned = p.attachments.filter((a) => a.contentType === 'message/rfc822');
      attachments(returned, [{ filename: null, contentType: 'message/rfc822', disposition: null, size: 191, sha256: SHA.bouncedOriginal }]);
    },
  },
  {
    fixture: 'bounce-dsn.eml',
    title: 'delivery-status part',
    errors: [],
    check(p) {
      // RFC 6522: part 2 is the machine-readable report, part 3 the returned message
      attachments(p.attachments, [
        { filename: null, contentType: 'message/delivery-status', disposition: null, size: 418, sha256: SHA.dsn },
        { filename: null, contentType: 'message/rfc822', disposition: null, size: 191, sha256: SHA.bouncedOriginal },
      ]);
      assert.ok(!p.text?.includes('Reporting-MTA'), 'the report is not body text');
    },
  },
  {
    fixture: 'bounce-dsn.eml',
    title: 'classification',
    errors: [],
    check(p) {
      // a bounce is a bounce, not also an auto-reply (although Auto-Submitted says auto-replied)
      assert.deepEqual(p.classification, {
        autoReply: false,
        bulk: false,
        bounce: {
          recipients: [
            {
              address: 'nobody@nowhere.example.test',
              originalRecipient: 'nobody@nowhere.example.test',
              action: 'failed',
              status: '5.1.1',
              diagnostic: '550 5.1.1 <nobody@nowhere.example.test>: Recipient address rejected: User unknown',
              remoteMta: 'mx.nowhere.example.test',
            },
          ],
          reportingMta: 'mx.example.test',
          originalMessageId: 'are-you-there@example.test',
        },
      });
    },
  },
  {
    fixture: 'bounce-postfix-headers.eml',
    title: 'a bounce written by Postfix 3.7, headers only returned',
    errors: [],
    check(p) {
      assert.equal(p.subject, 'Undelivered Mail Returned to Sender');
      addresses(p.from, [m('Mail Delivery System', 'MAILER-DAEMON@relay.postfix.test')], 'from');
      assert.ok(p.text?.startsWith('This is the mail system at host relay.postfix.test.\n'), String(p.text));
      assert.ok(p.text?.endsWith('Recipient address rejected: User unknown (in reply to RCPT TO command)\n'), String(p.text));
      // RFC 6522 §3: RET=HDRS returns text/rfc822-headers, kept as an attachment like the report, not as text
      attachments(p.attachments, [
        { filename: null, contentType: 'message/delivery-status', disposition: null, size: 451, sha256: SHA.postfixDsn },
        { filename: null, contentType: 'text/rfc822-headers', disposition: null, size: 383, sha256: SHA.postfixReturnedHeaders },
      ]);
      assert.ok(!p.text?.includes('Message-ID'), 'the returned headers are not body text');
      // Postfix's report: extra per-message fields (Original-Envelope-Id, X-Postfix-*), an
      // Original-Recipient from ORCPT without a space after "rfc822;", a Diagnostic-Code folded by four spaces
      assert.deepEqual(p.classification, {
        autoReply: false,
        bulk: false,
        bounce: {
          recipients: [
            {
              address: 'nobody@app.test',
              originalRecipient: 'Nobody@App.test',
              action: 'failed',
              status: '5.1.1',
              diagnostic: '550 5.1.1 <nobody@app.test>: Recipient address rejected: User unknown',
              remoteMta: '127.0.0.1',
            },
          ],
          reportingMta: 'relay.postfix.test',
          originalMessageId: 'second@sender.test',
        },
      });
    },
  },

  // ── addresses ──
  {
    fixture: 'address-groups.eml',
    errors: [],
    check(p) {
      addresses(p.from, [m('Joe Q. Public', 'john.q.public@example.com')], 'from');
      addresses(
        p.to,
        [
          // RFC 5322 appendix A.1.3
          { group: 'A Group', members: [m('Ed Jones', 'c@a.test'), m('', 'joe@where.test'), m('John', 'jdoe@one.test')] },
          { group: 'Team', members: [m('', 'a@x.test'), m('Person, B', 'b@x.test')] },
          m('', 'solo@example.test'),
        ],
        'to',
      );
      addresses(p.cc, [{ group: 'undisclosed-recipients', members: [] }], 'cc');
      assert.equal(p.bcc, null);
      textIs(p.text, 'Groups from RFC 5322 appendix A.1.3 and the classic undisclosed-recipients.\n');
    },
  },
  {
    fixture: 'address-odd.eml',
    errors: [],
    check(p) {
      // a quoted string may hold commas and parentheses; they are not comments there
      addresses(p.from, [m('Doe, John (Sales)', 'john.doe@example.test', { original: '"Doe, John (Sales)" <john.doe@example.test>' })], 'from');
      addresses(p.sender, [m('', 'sender-only@example.test')], 'sender');
      assert.equal(mbox(p.replyTo, 0).address, 'replies@example.test');
      assert.equal(mbox(p.replyTo, 0).original.trim(), 'replies@example.test (Replies Desk)');
      assert.equal(p.to?.length, 6);
      // the local part needs its quotes (it is not a dot-atom), RFC 5322 §3.4.1
      checkMailbox(mbox(p.to, 0), m('', '"joe smith"@example.test', { local: '"joe smith"', domain: 'example.test', unicodeDomain: 'example.test' }), 'to[0]');
      assert.equal(mbox(p.to, 1).address, 'jane@example.test');
      assert.equal(mbox(p.to, 1).original.trim(), 'jane@example.test (Jane Roe)');
      checkMailbox(mbox(p.to, 2), m('', 'angle-only@example.test'), 'to[2]');
      checkMailbox(mbox(p.to, 3), m('', 'bare@example.test'), 'to[3]');
      checkMailbox(mbox(p.to, 4), m('Quoted "Nick" Name', 'nick@example.test'), 'to[4]');
      checkMailbox(mbox(p.to, 5), m('Renée Dürr', 'renee@example.test'), 'to[5]');
      // RFC 5322 appendix A.5: the comments are dropped, "Pete" is the display name
      addresses(p.cc, [m('Pete', 'pete@silly.test'), m('Mary Smith', 'mary@x.test')], 'cc');
    },
  },
  {
    fixture: 'address-odd.eml',
    title: 'legacy addr (Full Name)',
    errors: [],
    check(p) {
      // RFC 5322 §3.2.2 gives comments no meaning, but for a bare addr-spec the comment is taken as the
      // display name, a legacy convention (mailparser and postal-mime do the same); schema: Address.name
      addresses(p.replyTo, [m('Replies Desk', 'replies@example.test', { original: 'replies@example.test (Replies Desk)' })], 'replyTo');
      checkMailbox(mbox(p.to, 1), m('Jane Roe', 'jane@example.test', { original: 'jane@example.test (Jane Roe)' }), 'to[1]');
      // comments beside an angle-addr are not a name (RFC 5322 appendix A.5): "Pete", not "A nice ) chap"
      assert.equal(mbox(p.cc, 0).name, 'Pete');
    },
  },
  {
    fixture: 'address-idn.eml',
    errors: [],
    check(p) {
      addresses(
        p.from,
        [m('Bücher Shop', 'info@xn--bcher-kva.example', { local: 'info', domain: 'xn--bcher-kva.example', unicodeDomain: 'bücher.example' })],
        'from',
      );
      addresses(p.to, [m('Jörg', 'jorg@xn--mller-kva.example', { domain: 'xn--mller-kva.example', unicodeDomain: 'müller.example' })], 'to');
      assert.equal(p.messageId, 'address-idn@xn--bcher-kva.example');
    },
  },
  {
    fixture: 'address-smtputf8.eml',
    errors: [],
    check(p) {
      // RFC 6532: UTF-8 local parts kept, domains to A-labels (RFC 5891) with the U-label form beside
      assert.equal(p.subject, 'Unicode everywhere: ñ, 中文, emoji 🚀');
      addresses(
        p.from,
        [m('用户', '用户@xn--fsqu00a.xn--4rr70v', { local: '用户', domain: 'xn--fsqu00a.xn--4rr70v', unicodeDomain: '例子.广告' })],
        'from',
      );
      addresses(
        p.to,
        [
          m('Jörg Müller', 'jörg@xn--mller-kva.example', { local: 'jörg', domain: 'xn--mller-kva.example', unicodeDomain: 'müller.example' }),
          m('', 'δοκιμή@xn--hxajbheg2az3al.xn--jxalpdlp', { local: 'δοκιμή', unicodeDomain: 'παράδειγμα.δοκιμή' }),
        ],
        'to',
      );
      textIs(p.text, 'Raw UTF-8 in headers and body (RFC 6532): ñ, 中文, 🚀.\n');
    },
  },
  {
    fixture: 'address-invalid.eml',
    errors: ['invalid_address'],
    check(p) {
      assert.equal(p.subject, 'Invalid addresses');
      // invalid mailboxes are kept with what was written and an empty address, never dropped
      assert.ok(p.from);
      assert.equal(p.from.length, 1);
      const from = mbox(p.from, 0);
      assert.equal(from.address, '');
      assert.equal(from.original.trim(), '@@@');
      assert.equal(mbox(p.to, 0).address, 'valid@example.test');
      assert.ok(
        p.to?.some((a) => !('group' in a) && a.address === '' && a.original.trim() === 'not an address at all'),
        JSON.stringify(p.to),
      );
      addresses(p.cc, [m('', '', { original: 'a@b@c.test' })], 'cc');
    },
  },

  // ── missing and odd headers ──
  {
    fixture: 'missing-date.eml',
    errors: [],
    check(p) {
      assert.equal(p.date, null, 'never invented');
      assert.equal(p.subject, 'No Date header');
    },
  },
  {
    fixture: 'missing-subject.eml',
    errors: [],
    check(p) {
      assert.equal(p.subject, null);
      dateIs(p.date, DATE);
      textIs(p.text, 'This message has no Subject header.\n');
    },
  },
  {
    fixture: 'missing-from.eml',
    errors: [],
    check(p) {
      assert.equal(p.from, null);
      assert.equal(p.sender, null);
      assert.equal(p.replyTo, null);
      assert.equal(p.subject, 'No From header');
    },
  },
  {
    fixture: 'missing-message-id.eml',
    errors: [],
    check(p) {
      assert.equal(p.messageId, null, 'never invented');
      assert.equal(p.subject, 'No Message-ID header');
      assert.equal(p.inReplyTo, null);
      assert.deepEqual(p.references, []);
    },
  },
  {
    fixture: 'date-invalid.eml',
    errors: ['invalid_date'],
    check(p) {
      assert.equal(p.date, null);
      assert.equal(header(p, 'Date'), 'Someday, 32 Foo 2024 25:61:99 +9999', 'the header itself is kept as received');
    },
  },
  {
    fixture: 'date-folded-comment.eml',
    errors: [],
    check(p) {
      // RFC 5322 appendix A.5: folded date with a comment; 23:32 -0330 is 03:02 UTC next day
      dateIs(p.date, '1969-02-14T03:02:00Z');
      addresses(p.from, [m('John Doe', 'jdoe@machine.example')], 'from');
      assert.equal(p.messageId, '1234@local.machine.example');
      textIs(p.text, 'This is a message just to say hello.\nSo, "Hello".\n');
    },
  },
  {
    fixture: 'date-obsolete-two-digit-year.eml',
    errors: [],
    check(p) {
      // RFC 5322 §4.3: two-digit year 00–49 → 20xx; EDT is -0400
      dateIs(p.date, '2003-07-01T14:52:37Z');
    },
  },
  {
    fixture: 'long-folded-headers.eml',
    errors: [],
    check(p) {
      assert.equal(
        p.subject,
        'This is a very long subject line that has been folded across several physical lines by a mail user agent that respects the 78 character recommendation',
      );
      // unfolding removes the CRLF only, the white space after it stays (RFC 5322 §2.2.3)
      assert.equal(header(p, 'X-Folded-Tab'), 'alpha\tbeta');
      addresses(
        p.to,
        ['One', 'Two', 'Three', 'Four', 'Five'].map((n) => m(`Recipient ${n}`, `${n.toLowerCase()}@example.test`)),
        'to',
      );
      assert.deepEqual(
        p.references,
        Array.from({ length: 20 }, (_, i) => `ref-${String(i + 1).padStart(2, '0')}.1709543700@thread.example.test`),
      );
      assert.equal(p.inReplyTo, 'ref-20.1709543700@thread.example.test');
    },
  },

  // ── line endings, transfer encodings, broken structure ──
  {
    fixture: 'qp-soft-breaks.eml',
    errors: [],
    check(p) {
      textIs(
        p.text,
        'This line is deliberately much longer than seventy-six characters so that the encoder has to insert soft line breaks, twice even, before it ends here.\n' +
          'Equals sign: a=b, tab\tinside, trailing spaces   \n' +
          `Ünïcödé survives soft breaks: ${'é'.repeat(40)}\n`,
      );
    },
  },
  {
    fixture: 'bare-lf.eml',
    errors: [],
    check(p) {
      basic(p, { subject: 'Bare LF line endings', from: ALICE, text: 'Every line of this message ends in a bare LF.\nSecond line.\n' });
      attachments(p.attachments, [
        { filename: 'lf.bin', contentType: 'application/octet-stream', disposition: 'attachment', size: 300, sha256: SHA.lfBin },
      ]);
    },
  },
  {
    fixture: 'broken-base64.eml',
    errors: ['invalid_encoding'],
    check(p) {
      // RFC 2045 §6.8: characters outside the base64 alphabet are ignored; missing padding tolerated
      textIs(p.text, 'Hello, world!');
      attachments(p.attachments, [
        { filename: 'ten-bytes.bin', contentType: 'application/octet-stream', disposition: 'attachment', size: 10, sha256: SHA.tenBytes },
      ]);
    },
  },
  {
    fixture: 'missing-closing-boundary.eml',
    errors: ['malformed_mime'],
    check(p) {
      // the last part runs to the end of the message and is kept
      textIs(p.text, 'The closing delimiter of this multipart is missing.\n');
      attachments(p.attachments, [
        { filename: 'recovered.txt', contentType: 'text/plain', disposition: 'attachment', size: 22, sha256: SHA.recovered },
      ]);
    },
  },
  {
    fixture: 'boundary-missing-parameter.eml',
    errors: ['malformed_mime'],
    check(p) {
      // RFC 2046 §5.1.1 makes boundary mandatory; the body is not thrown away
      assert.equal(p.subject, 'Multipart without a boundary parameter');
      assert.ok(p.text?.includes('The body of this message survives although no boundary was declared.'), String(p.text));
      assert.deepEqual(p.attachments, []);
    },
  },
  {
    fixture: 'boundary-undeclared.eml',
    errors: ['malformed_mime'],
    check(p) {
      assert.equal(p.subject, 'Parts delimited by an undeclared boundary');
    },
  },
  {
    fixture: 'empty-body.eml',
    errors: [],
    check(p) {
      assert.equal(p.subject, 'Empty body');
      assert.equal(p.text, '');
      assert.equal(p.html, null);
      assert.deepEqual(p.attachments, []);
    },
  },
  {
    fixture: 'headers-only.eml',
    errors: [],
    check(p) {
      // RFC 5322 §3.5: the body (and the empty line before it) is optional
      assert.equal(p.subject, 'Only headers, no blank line, no body');
      assert.equal(p.messageId, 'headers-only@corpus.postgate.test');
      addresses(p.from, [ALICE], 'from');
      dateIs(p.date, DATE);
      assert.ok(p.text === '' || p.text === null, `no body text: ${JSON.stringify(p.text)}`);
      assert.deepEqual(p.attachments, []);
    },
  },
  {
    fixture: 'no-headers.eml',
    errors: [],
    check(p) {
      assert.deepEqual(p.headers, []);
      assert.equal(p.subject, null);
      assert.equal(p.from, null);
      assert.equal(p.to, null);
      assert.equal(p.date, null);
      assert.equal(p.messageId, null);
      textIs(p.text, 'A body without any header fields at all.\n');
    },
  },

  // ── replies ──
  {
    fixture: 'reply-gmail.eml',
    errors: [],
    check(p) {
      basic(p, {
        subject: 'Re: Plan review',
        from: BOB,
        to: ALICE,
        text:
          'Sounds good, see you at 3pm.\n\nCheers,\nBob\n\n-- \nBob Builder\nSite Manager, Example Corp\n\n' +
          'On Mon, 4 Mar 2024 at 09:15, Alice Example <alice@example.test> wrote:\n\n' +
          '> Hi Bob,\n>\n> Can we meet tomorrow at 3pm to review the plans?\n>\n> Thanks,\n> Alice\n',
      });
      assert.equal(p.inReplyTo, 'plan-review-1@example.test');
      assert.deepEqual(p.references, ['plan-kickoff@example.test', 'plan-review-1@example.test']);
      // no quoted history, no "On … wrote:", no signature
      textIs(p.strippedText, 'Sounds good, see you at 3pm.\n\nCheers,\nBob', 'strippedText');
      assert.ok(p.html?.includes('class="gmail_quote"'));
    },
  },
  {
    fixture: 'reply-outlook.eml',
    errors: [],
    check(p) {
      assert.equal(p.subject, 'RE: Quarterly numbers');
      addresses(p.from, [m('Carol Client', 'carol@example.test')], 'from');
      assert.equal(p.inReplyTo, 'quarterly-1@example.test');
      assert.deepEqual(p.references, ['quarterly-1@example.test']);
      assert.equal(header(p, 'Thread-Topic'), 'Quarterly numbers');
      // windows-1252 0x92 is ’
      assert.ok(p.text?.startsWith('Thanks Alice, I’ll review it today.\n\nRegards,\nCarol\n\n________________________________\nFrom: Alice Example'), String(p.text));
      assert.ok(p.text?.includes('Please find the quarterly numbers attached.'));
      // the "____ / From: / Sent:" block and everything after it is history
      textIs(p.strippedText, 'Thanks Alice, I’ll review it today.\n\nRegards,\nCarol', 'strippedText');
      assert.ok(p.html?.includes('Thanks Alice, I’ll review it today.'), 'html decoded from windows-1252');
    },
  },

  // ── HTML replies of the common clients. These fixtures are written by hand
  // after the markup each client produces (Gmail, Outlook on the web, Outlook
  // for Windows, Apple Mail, Thunderbird); they are not captured messages. ──
  {
    fixture: 'reply-gmail-html-only.eml',
    errors: [],
    check(p) {
      assert.equal(p.textSource, 'html');
      assert.ok(p.text?.includes('revised plans [https://plans.example.test/site/42]'), String(p.text));
      assert.ok(p.text?.includes('> When can you come for the site visit?'), 'the quote is in text, as > lines');
      textIs(p.strippedText, "Thursday works, I'll bring the revised plans [https://plans.example.test/site/42].\n\nBob", 'strippedText');
      assert.equal(p.strippedSignature, 'Bob Builder\nSite Manager, Example Corp');
      assert.ok(p.strippedHtml?.includes('gmail_signature') && !p.strippedHtml.includes('gmail_quote'), String(p.strippedHtml));
      assert.ok(!p.strippedHtml?.includes('site visit'));
      assert.ok(p.strippedHtml?.endsWith('</div></div>'), 'the signature div and the reply div are closed');
    },
  },
  {
    fixture: 'reply-outlook-html-only.eml',
    errors: [],
    check(p) {
      assert.equal(p.textSource, 'html');
      textIs(p.strippedText, 'Thanks Alice, the numbers look right.\n\nCarol', 'strippedText');
      assert.equal(p.strippedSignature, null);
      assert.ok(!p.strippedHtml?.includes('divRplyFwdMsg') && !p.strippedHtml?.includes('appendonsend') && !p.strippedHtml?.includes('<hr'), String(p.strippedHtml));
      assert.ok(p.strippedHtml?.includes('>Carol</div>') && p.strippedHtml.endsWith('</body></html>'), String(p.strippedHtml));
    },
  },
  {
    fixture: 'reply-outlook-desktop.eml',
    errors: [],
    check(p) {
      assert.equal(p.textSource, 'html');
      assert.ok(!p.text?.includes('MsoNormal'), 'style content is not text');
      textIs(p.strippedText, 'Paid this morning.\n\nDan', 'strippedText');
      assert.ok(!p.strippedHtml?.includes('border-top') && !p.strippedHtml?.includes('invoice 42 is due'), String(p.strippedHtml));
      assert.ok(p.strippedHtml?.includes('Dan<o:p>'));
    },
  },
  {
    fixture: 'reply-apple-mail.eml',
    errors: [],
    check(p) {
      assert.equal(p.textSource, 'text');
      textIs(p.strippedText, 'Yes, 12:30 at the usual place.\n\nErin', 'strippedText');
      assert.equal(p.strippedSignature, 'Sent from my iPhone');
      assert.ok(!p.strippedHtml?.includes('blockquote') && !p.strippedHtml?.includes('Lunch today'), String(p.strippedHtml));
      assert.ok(p.strippedHtml?.includes('Sent from my iPhone'));
    },
  },
  {
    fixture: 'reply-thunderbird.eml',
    errors: [],
    check(p) {
      assert.equal(p.textSource, 'html');
      textIs(p.strippedText, 'Looks good to me, ship it.', 'strippedText');
      assert.equal(p.strippedSignature, 'Frank Bird\nRelease Engineering');
      assert.ok(!p.strippedHtml?.includes('moz-cite-prefix') && !p.strippedHtml?.includes('release notes'), String(p.strippedHtml));
      assert.ok(p.strippedHtml?.includes('moz-signature'));
    },
  },

  // ── machine mail ──
  {
    fixture: 'auto-reply-vacation.eml',
    errors: [],
    check(p) {
      assert.deepEqual(p.classification, { autoReply: true, bulk: false, bounce: null });
    },
  },
  {
    fixture: 'list-mail.eml',
    errors: [],
    check(p) {
      assert.deepEqual(p.classification, { autoReply: false, bulk: true, bounce: null });
    },
  },

  // ── hostile (default limits: maxParts 1000 nodes, maxDepth 50, maxHeaderBytes 1 MiB) ──
  {
    fixture: 'hostile-1000-parts.eml',
    title: 'default limits',
    errors: ['too_many_parts'],
    maxMs: 10_000,
    check(p) {
      // 1,002 MIME nodes (root, text, 1,000 attachments): the parts past the limit are not parsed
      assert.equal(p.subject, 'One thousand parts');
      textIs(p.text, 'A message with a thousand attachments.\n');
      assert.equal(p.attachments.length, 998, "1,000 nodes: the root, the text part and 998 attachments");
      p.attachments.forEach((a, i) => assert.equal(a.filename, `part-${String(i + 1).padStart(4, '0')}.txt`));
    },
  },
  {
    fixture: 'hostile-1000-parts.eml',
    title: 'maxParts 50',
    errors: ['too_many_parts'],
    opts: { limits: { maxParts: 50 } },
    maxMs: 10_000,
    check(p) {
      assert.equal(p.subject, 'One thousand parts');
      textIs(p.text, 'A message with a thousand attachments.\n');
      assert.ok(p.attachments.length < 50, `${p.attachments.length} attachments kept`);
      assert.ok(p.attachments.length > 0);
      assert.equal(p.attachments[0]!.filename, 'part-0001.txt');
      assert.equal(p.attachments[0]!.sha256, sha256('part 1\r\n'));
    },
  },
  {
    fixture: 'hostile-1000-parts.eml',
    title: 'maxParts 2000',
    errors: [],
    opts: { limits: { maxParts: 2000 } },
    maxMs: 20_000,
    check(p) {
      assert.equal(p.attachments.length, 1000);
      p.attachments.forEach((a, i) => {
        assert.equal(a.filename, `part-${String(i + 1).padStart(4, '0')}.txt`);
        assert.equal(a.contentType, 'text/plain');
        assert.equal(a.sha256, sha256(`part ${i + 1}\r\n`));
      });
    },
  },
  {
    fixture: 'hostile-deep-nesting.eml',
    title: 'default limits',
    errors: ['too_deep'],
    maxMs: 10_000,
    check(p) {
      assert.equal(p.subject, 'Sixty levels deep');
      assert.equal(p.text, null, 'the only text part is below the limit');
    },
  },
  {
    fixture: 'hostile-deep-nesting.eml',
    title: 'maxDepth 10',
    errors: ['too_deep'],
    opts: { limits: { maxDepth: 10 } },
    maxMs: 10_000,
    check(p) {
      assert.equal(p.subject, 'Sixty levels deep');
      assert.equal(p.text, null, 'the only text part is below the limit');
    },
  },
  {
    fixture: 'hostile-deep-nesting.eml',
    title: 'maxDepth 100',
    errors: [],
    opts: { limits: { maxDepth: 100 } },
    maxMs: 10_000,
    check(p) {
      textIs(p.text, 'You found the bottom.\n');
    },
  },
  {
    fixture: 'hostile-huge-header.eml',
    title: 'default limits',
    errors: ['header_too_large'],
    maxMs: 10_000,
    check(p) {
      // the fields before the limit are parsed, the rest of the message is not
      assert.equal(p.subject, 'Huge header follows');
      addresses(p.from, [ALICE], 'from');
      assert.equal(p.text, null);
    },
  },
  {
    fixture: 'hostile-huge-header.eml',
    title: 'maxHeaderBytes 64 KiB',
    errors: ['header_too_large'],
    opts: { limits: { maxHeaderBytes: 64 * 1024 } },
    maxMs: 10_000,
    check(p) {
      assert.equal(p.subject, 'Huge header follows');
      assert.equal(p.text, null);
      assert.ok(JSON.stringify(p).length < 256 * 1024, 'the huge header is not copied into the result');
    },
  },
  {
    fixture: 'hostile-huge-header.eml',
    title: 'maxHeaderBytes 2 MiB',
    errors: [],
    opts: { limits: { maxHeaderBytes: 2 * 1024 * 1024 } },
    maxMs: 10_000,
    check(p) {
      assert.equal(p.subject, 'Huge header follows');
      addresses(p.from, [ALICE], 'from');
      textIs(p.text, 'The body after a huge header.\n');
      const huge = header(p, 'X-Huge');
      assert.equal(huge?.length, 14_000 * 77 - 1, 'unfolded: 14,000 × 76 x plus a space per fold');
    },
  },
  {
    fixture: 'attachments-filenames.eml',
    title: 'maxDecodedBytes 1000',
    errors: ['decoded_too_large'],
    opts: { limits: { maxDecodedBytes: 1000 } },
    check(p) {
      // metadata of every attachment is kept; content beyond the budget is not
      assert.deepEqual(
        p.attachments.map((a) => a.filename),
        ['naïve résumé 2024 — final version for the hiring committee.pdf', 'data.csv', 'empty.txt', 'random.bin', '写真 (1).png'],
      );
      const kept = p.attachments.reduce((n, a) => n + (a.content ? Buffer.from(a.content, 'base64').length : 0), 0);
      assert.ok(kept <= 1000, `${kept} decoded bytes kept`);
      // size and sha256 stay exact for content that was not kept
      assert.deepEqual(
        p.attachments.map((a) => [a.size, a.sha256]),
        [
          [5000, SHA.naivePdf],
          [33, SHA.dataCsv],
          [0, SHA.empty],
          [4096, SHA.randomBin],
          [70, SHA.png],
        ],
      );
      for (const big of [p.attachments[0]!, p.attachments[3]!]) {
        assert.equal(big.content, undefined, `${big.filename}: content not kept`);
        assert.equal(big.url, undefined);
      }
    },
  },
];

// ── 1. per-fixture expectations ─────────────────────────────────────────────

async function timedParse(name: string, opts?: ParseOptions): Promise<{ p: ParsedContent; ms: number }> {
  const buf = await load(name);
  const t0 = performance.now();
  const p = await parseMessage(buf, opts);
  return { p, ms: performance.now() - t0 };
}

describe('corpus: hand-written expectations', () => {
  for (const c of CASES) {
    const name = c.title ? `${c.fixture} (${c.title})` : c.fixture;
    test(name, { todo: c.todo }, async () => {
      const { p, ms } = await timedParse(c.fixture, c.opts);
      assert.ok(ms < (c.maxMs ?? 5_000), `parse took ${Math.round(ms)} ms`);
      assert.deepEqual(codes(p), [...c.errors].sort(), `parseErrors: ${JSON.stringify(p.parseErrors)}`);
      c.check(p);
    });
  }

  test('every fixture has expectations, every expectation a fixture', async () => {
    const files = (await readdir(fixturePath('eml'))).filter((f) => f.endsWith('.eml')).sort();
    const covered = [...new Set(CASES.map((c) => c.fixture))].sort();
    assert.deepEqual(covered, files);
    assert.ok(files.length >= 40, `${files.length} fixtures`);
  });

  test('README.md lists every fixture', async () => {
    const readme = await readFile(fixturePath('eml', 'README.md'), 'utf8');
    const files = (await readdir(fixturePath('eml'))).filter((f) => f.endsWith('.eml'));
    const missing = files.filter((f) => !readme.includes(`\`${f}\``));
    assert.deepEqual(missing, []);
  });

});

// ── 2. invariants over the whole corpus ─────────────────────────────────────

const ENVELOPE = {
  mailFrom: 'a@example.test',
  rcptTo: [{ address: 'b@example.test' }],
  helo: 'client.example.test',
  clientAddress: '192.0.2.1',
  tls: null,
  authUser: null,
  transport: 'ESMTP' as const,
  queueId: 'Q1',
  listener: 'mx',
};

async function corpusFiles(): Promise<string[]> {
  return (await readdir(fixturePath('eml'))).filter((f) => f.endsWith('.eml')).sort();
}

describe('corpus: invariants', async () => {
  const files = await corpusFiles();
  for (const f of files) {
    test(f, async () => {
      const buf = await load(f);
      const p = await parseMessage(buf);
      // fits postgate.email.v1
      const email = buildInboundEmail({ id: 'Q1', receivedAt: new Date(0), envelope: ENVELOPE, raw: { size: buf.length, sha256: sha256(buf) }, content: p });
      const valid = inboundEmailSchema.safeParse(email);
      assert.ok(valid.success, valid.success ? '' : JSON.stringify(valid.error.issues.slice(0, 5)));
      for (const e of p.parseErrors) assert.ok(e.code in PARSE_ERROR_CODES, `undocumented code ${e.code}`);
      // line ends LF, no CR left in bodies
      for (const body of [p.text, p.strippedText]) assert.ok(body === null || !body.includes('\r'), 'CR in text');
      // kept content matches its metadata
      for (const a of p.attachments) {
        if (a.content === undefined) continue;
        const bytes = Buffer.from(a.content, 'base64');
        assert.equal(bytes.length, a.size, `${a.filename}: size`);
        assert.equal(sha256(bytes), a.sha256, `${a.filename}: sha256`);
      }
      // a stream in odd-sized chunks gives the same result as the Buffer
      const chunks: Buffer[] = [];
      for (let i = 0, n = 1; i < buf.length; i += n, n = (n * 7 + 3) % 4093 || 1) chunks.push(buf.subarray(i, i + n));
      const streamed = await parseMessage(Readable.from(chunks));
      assert.deepEqual(streamed, p);
    });
  }
});

// ── 3. cross-check against postal-mime ──────────────────────────────────────

/**
 * Where parseMessage and postal-mime 4.0.0 differ, keyed `fixture field`
 * (fields: subject, from, to, text, attachments). Each line says which side is
 * right and why. An entry that no longer disagrees fails too, so the list stays true.
 */
/**
 * Node 20's one-shot TextDecoder decodes windows-1252 as Latin-1
 * (nodejs/node#56542; fixed in later lines), and postal-mime uses it: these
 * disagreements exist only on a runtime with that bug.
 */
const NODE_WINDOWS_1252_BUG = new TextDecoder('windows-1252').decode(Uint8Array.of(0x93)) !== '\u201c';
const WINDOWS_1252_DISAGREEMENTS: Record<string, string> = {
  'charset-windows-1252.eml subject':
    'ours: the Q encoded word (RFC 2047 §4.2) carries windows-1252 0x93 0x94 0x96 0x80 0x85, which are “ ” – € … (WHATWG Encoding Standard index-windows-1252); postal-mime decodes encoded words with a one-shot TextDecoder.decode(), which on Node 20 takes a Latin-1 fast path for windows-1252 (nodejs/node#56542) and yields the C1 controls U+0093 U+0094 U+0096 U+0080 U+0085.',
  'charset-windows-1252.eml text':
    'ours: windows-1252 0x80–0x9F are “ ” – … € (WHATWG Encoding Standard index); postal-mime decodes the body with the same one-shot TextDecoder, which on Node 20 treats windows-1252 as Latin-1 (nodejs/node#56542) and yields C1 controls.',
  'reply-outlook.eml text':
    'ours: 0x92 in windows-1252 is ’; postal-mime yields U+0092 (the Node 20 TextDecoder windows-1252 bug, as above).',
};

const KNOWN_DISAGREEMENTS: Record<string, string> = {
  'address-invalid.eml from':
    'ours: "@@@" is no addr-spec (RFC 5322 §3.4.1 needs a local part and a domain), so the address is "" with `original` kept and invalid_address; postal-mime passes the junk through as the address.',
  'address-odd.eml to':
    'ours: a local part with a space must stay a quoted-string (RFC 5322 §3.4.1, RFC 5321 §4.1.2); postal-mime drops the quotes, giving "joe smith@example.test", which is not an address.',
  'address-smtputf8.eml from':
    'equivalent: A-label and U-label name the same domain (RFC 5890 §2.3.2.1); ours normalises to the A-label form (RFC 5891 §5) as schema.ts specifies and keeps the U-label in unicodeDomain; postal-mime keeps the U-labels as written.',
  'address-smtputf8.eml to':
    'equivalent: A-label vs U-label domains (RFC 5890 §2.3.2.1); ours gives the A-label as documented, postal-mime the U-labels as written.',
  'boundary-missing-parameter.eml text':
    'ours: RFC 2046 §5.1.1 makes boundary mandatory and RFC 2045 §5.2 recommends treating an invalid Content-Type as text/plain, so the body is kept as text (with malformed_mime); postal-mime drops the whole body.',
  ...(NODE_WINDOWS_1252_BUG ? WINDOWS_1252_DISAGREEMENTS : {}),
  'empty-body.eml text':
    'ours: the message has a text/plain part whose body is empty, so text is "" (schema: null only without a text/plain part); postal-mime leaves text undefined.',
  'headers-only.eml text':
    'ours: without Content-Type the entity is text/plain (RFC 2045 §5.2) with an empty body (RFC 5322 §3.5 makes the body optional), so text is ""; postal-mime leaves text undefined.',
  'hostile-1000-parts.eml attachments':
    'both, by their limits: parse.ts stops at limits.maxParts (1,000 MIME nodes, so 998 attachments) and reports too_many_parts; postal-mime has no part limit.',
  'hostile-deep-nesting.eml text':
    'both, by their limits: parse.ts stops at limits.maxDepth 50 (too_deep) before the text at level 61; postal-mime nests to 256 levels.',
  'hostile-huge-header.eml text':
    'both, by their limits: parse.ts stops at limits.maxHeaderBytes (1 MiB, header_too_large) and does not parse the body; postal-mime allows a larger header block.',
};

type Pm = Awaited<ReturnType<typeof PostalMime.parse>>;

const norm = (s: string | null | undefined): string | null => (s == null ? null : s.replace(/\s+/g, ' ').trim());

function ours(p: ParsedContent) {
  const flat = (l: AddressListItem[] | null): string[] => (l ?? []).flatMap((a) => ('group' in a ? a.members.map((x) => x.address) : [a.address]));
  return {
    subject: p.subject,
    from: flat(p.from)[0] ?? null,
    to: flat(p.to),
    // postal-mime does not derive text from HTML: compare the text parts only
    text: p.textSource === 'html' ? null : norm(p.text),
    attachments: p.attachments.map((a) => a.filename),
  };
}

function theirs(e: Pm) {
  type PmAddr = NonNullable<Pm['to']>[number];
  const flat = (l: PmAddr[] | undefined): string[] => (l ?? []).flatMap((a) => (a.group ? a.group.map((x) => x.address) : [a.address ?? '']));
  return {
    subject: e.subject ?? null,
    from: flat(e.from ? [e.from] : undefined)[0] ?? null,
    to: flat(e.to),
    text: norm(e.text),
    attachments: e.attachments.map((a) => a.filename),
  };
}

describe('corpus: cross-check with postal-mime', async () => {
  const files = await corpusFiles();
  for (const f of files) {
    test(f, async () => {
      const buf = await load(f);
      const a = ours(await parseMessage(buf));
      const b = theirs(await PostalMime.parse(buf));
      const problems: string[] = [];
      for (const field of ['subject', 'from', 'to', 'text', 'attachments'] as const) {
        const key = `${f} ${field}`;
        const same = JSON.stringify(a[field]) === JSON.stringify(b[field]);
        if (!same && !(key in KNOWN_DISAGREEMENTS)) {
          const clip = (v: unknown) => {
            const j = JSON.stringify(v);
            return j.length > 300 ? `${j.slice(0, 300)}…` : j;
          };
          problems.push(`${key}: ours ${clip(a[field])} vs postal-mime ${clip(b[field])}`);
        }
        if (same && key in KNOWN_DISAGREEMENTS) problems.push(`${key}: listed in KNOWN_DISAGREEMENTS but both agree now`);
      }
      assert.deepEqual(problems, []);
    });
  }

  test('KNOWN_DISAGREEMENTS only names fixtures that exist', async () => {
    const files = new Set(await corpusFiles());
    for (const key of Object.keys(KNOWN_DISAGREEMENTS)) assert.ok(files.has(key.split(' ')[0]!), key);
  });
});
