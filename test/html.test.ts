/**
 * HTML to text, the HTML quote stripper, the reply/signature splitter and the
 * machine-mail classification (src/message/html.ts, reply.ts, classify.ts):
 * their rules, and that hostile input of every shape the tokenizer must walk
 * (deep nesting, unclosed tags and quotes, comments, references, markers that
 * are never confirmed) converts in linear time.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { htmlToText, stripHtmlQuote } from '../src/message/html.js';
import { splitReply } from '../src/message/reply.js';
import { classify } from '../src/message/classify.js';
import { parseMessage } from '../src/message/parse.js';
import type { Attachment } from '../src/message/schema.js';

describe('htmlToText', () => {
  test('blocks, links, quotes, lists, script and style', () => {
    const html =
      '<html><head><title>T</title><style>p{color:red}</style><script>alert(1)</script></head><body>' +
      '<h1>Hello</h1><p>See <a href="https://x.example/a">the docs</a>, <a href="mailto:a@b.example">a@b.example</a> and <a href="#top">top</a>.</p>' +
      '<ul><li>one</li><li>two</li></ul><ol><li>first</li></ol>' +
      '<blockquote>quoted<br>line</blockquote><p>x&nbsp;y &amp; z &eacute;&#8211;</p><!-- <p>hidden</p> --><pre>a\n  b</pre></body></html>';
    assert.equal(
      htmlToText(html),
      'Hello\n\nSee the docs [https://x.example/a], a@b.example and top.\n\n* one\n* two\n\n1. first\n\n> quoted\n> line\n\nx y & z é–\n\na\n  b',
    );
  });

  test('white space collapses; a paragraph of &nbsp; is an empty line; at most one blank line', () => {
    assert.equal(htmlToText('<p>a\n   b</p><p>&nbsp;</p><p>&nbsp;</p><div><br></div><p>c</p>'), 'a b\n\nc');
  });

  test('text with "<" that starts no tag, and unclosed markup, keep their text', () => {
    assert.equal(htmlToText('1 < 2 and <b>bold'), '1 < 2 and bold');
    assert.equal(htmlToText('<p title="a > b">x</p>'), 'x');
    assert.equal(htmlToText('<script>never closed'), '');
  });

  test('hostile input converts in linear time', () => {
    const shapes: Record<string, string> = {
      'nested divs': '<div>'.repeat(200_000),
      'nested blockquotes': '<blockquote>'.repeat(100_000) + 'x',
      'nested lists': '<ul><li>'.repeat(100_000),
      'unclosed quote': '<a href="' + 'x'.repeat(1_000_000),
      'lone <': '<'.repeat(1_000_000),
      'unclosed comment': '<!--' + '-'.repeat(1_000_000),
      references: '&#'.repeat(500_000),
      'script opens': '<script>' + '</scrip'.repeat(100_000),
      'many links': '<a href="https://e.example/">x'.repeat(50_000),
    };
    for (const [name, html] of Object.entries(shapes)) {
      const t0 = performance.now();
      htmlToText(html);
      stripHtmlQuote(html);
      const ms = performance.now() - t0;
      assert.ok(ms < 3_000, `${name}: ${Math.round(ms)} ms for ${html.length} characters`);
    }
  });
});

describe('stripHtmlQuote', () => {
  test('no marker: the HTML itself', () => {
    const html = '<p>Hello</p>';
    assert.equal(stripHtmlQuote(html), html);
  });

  test('Gmail: cut at div.gmail_quote, line breaks before it dropped, open elements closed', () => {
    assert.equal(stripHtmlQuote('<div dir="ltr">Yes<br><br><div class="gmail_quote"><div class="gmail_attr">On … wrote:</div><blockquote>q</blockquote></div></div>'), '<div dir="ltr">Yes</div>');
  });

  test('Outlook "From:" block in a paragraph is cut at its paragraph, only when a "Sent:" follows', () => {
    const html = '<p>Done.</p><p><b>From:</b> A<br><b>Sent:</b> Monday</p><p>old</p>';
    assert.equal(stripHtmlQuote(html), '<p>Done.</p>');
    const notQuote = '<p>Done.</p><p><b>From:</b> the desk of A</p>';
    assert.equal(stripHtmlQuote(notQuote), notQuote);
  });

  test('markers that are never confirmed cost bounded work', () => {
    const html = '<div style="border-top:solid 1px">no header here</div>'.repeat(40_000) + '<p><b>From:</b> x</p>'.repeat(40_000);
    const t0 = performance.now();
    assert.equal(stripHtmlQuote(html), html);
    assert.ok(performance.now() - t0 < 3_000);
  });
});

describe('splitReply', () => {
  test('"-- " signature up to the quoted history', () => {
    assert.deepEqual(splitReply('Yes.\n\n-- \nBob\nExample Corp\n\nOn Mon, Jane wrote:\n> q'), { reply: 'Yes.', signature: 'Bob\nExample Corp', quoted: true });
  });
  test('a mail app sign-off line', () => {
    assert.deepEqual(splitReply('Yes.\n\nSent from my iPhone\n\n> On 4 Mar, Jane wrote:\n> q'), { reply: 'Yes.', signature: 'Sent from my iPhone', quoted: true });
    assert.deepEqual(splitReply('Yes.\n\nGet Outlook for Android'), { reply: 'Yes.', signature: 'Get Outlook for Android', quoted: false });
  });
  test('a sign-off phrase in the middle of the text is not a signature', () => {
    assert.deepEqual(splitReply('Sent from my iPhone\nthe photos were blurry\nso I sent them again\nfrom the laptop'), {
      reply: 'Sent from my iPhone\nthe photos were blurry\nso I sent them again\nfrom the laptop',
      signature: null,
      quoted: false,
    });
  });
  test('no signature', () => {
    assert.deepEqual(splitReply('Just text.\n'), { reply: 'Just text.', signature: null, quoted: false });
  });
  test('a large hostile text finishes fast', () => {
    const text = ('On ' + 'x'.repeat(300) + '\n').repeat(3_000) + 'Sent from my '.repeat(50_000) + '\n' + '-- x\n'.repeat(50_000);
    const t0 = performance.now();
    splitReply(text);
    assert.ok(performance.now() - t0 < 3_000);
  });
});

describe('classify', () => {
  const h = (name: string, value: string) => ({ name, value });
  const part = (contentType: string, text: string): Attachment => ({
    filename: null,
    contentType,
    disposition: null,
    contentId: null,
    related: false,
    size: text.length,
    sha256: '0'.repeat(64),
    content: Buffer.from(text).toString('base64'),
  });

  test('headers', () => {
    assert.deepEqual(classify([h('Auto-Submitted', 'no')], []), { autoReply: false, bulk: false, bounce: null });
    assert.deepEqual(classify([h('Auto-Submitted', 'auto-generated; owner-email="x@y"')], []), { autoReply: true, bulk: false, bounce: null });
    assert.deepEqual(classify([h('Precedence', 'auto_reply')], []), { autoReply: true, bulk: false, bounce: null });
    assert.deepEqual(classify([h('X-Autorespond', 'yes')], []), { autoReply: true, bulk: false, bounce: null });
    assert.deepEqual(classify([h('Precedence', 'junk')], []), { autoReply: false, bulk: true, bounce: null });
    assert.deepEqual(classify([h('List-Unsubscribe', '<mailto:u@x>')], []), { autoReply: false, bulk: true, bounce: null });
  });

  test('a report of delays only is an automatic notification, not a bounce', () => {
    const report = 'Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; a@example.net\nAction: delayed\nStatus: 4.4.1\n';
    assert.deepEqual(classify([], [part('message/delivery-status', report)]), { autoReply: true, bulk: false, bounce: null });
  });

  test('a report with several recipients lists the failed ones, with folded diagnostics', () => {
    const report =
      'Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; <a@example.net>\r\nAction: failed\r\nStatus: 5.2.2 (mailbox full)\r\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox\r\n full\r\n\r\n' +
      'Final-Recipient: rfc822; b@example.net\r\nAction: delivered\r\nStatus: 2.0.0\r\n';
    const c = classify([], [part('message/delivery-status', report), part('text/rfc822-headers', 'Message-ID: <orig@example.com>\r\nSubject: x\r\n')]);
    assert.deepEqual(c.bounce, {
      recipients: [{ address: 'a@example.net', originalRecipient: null, action: 'failed', status: '5.2.2', diagnostic: '552 5.2.2 Mailbox full', remoteMta: null }],
      reportingMta: 'mx.example',
      originalMessageId: 'orig@example.com',
    });
  });

  test('a DSN through the parser: both the fast and the streaming path classify it', async () => {
    const msg = Buffer.from(
      [
        'From: MAILER-DAEMON@mx.example',
        'Subject: Undelivered',
        'MIME-Version: 1.0',
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
        '',
        '--b',
        'Content-Type: text/plain',
        '',
        'failed',
        '--b',
        'Content-Type: message/delivery-status',
        '',
        'Reporting-MTA: dns; mx.example',
        '',
        'Final-Recipient: rfc822; x@example.net',
        'Action: failed',
        'Status: 5.1.1',
        '--b--',
        '',
      ].join('\r\n'),
    );
    const p = await parseMessage(msg);
    assert.equal(p.classification.bounce?.recipients[0]?.status, '5.1.1');
  });
});
