/**
 * The webhook formats field by field (docs/formats.md), over SMTP through a
 * real gateway to a real node:http receiver. Each body is read back by an
 * independent parser: the WHATWG `Request.formData()` of Node.js for the
 * multipart and form posts, `JSON.parse` for Postmark, and the signatures are
 * recomputed here from the services' documented algorithms. The Action
 * Mailbox tests (test/format-*.test.ts) run the raw variants against the
 * real consumer.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Answer, type Receiver, type Received } from './helpers/receiver.js';
import { testMail } from './helpers/mailbox-mail.js';
import { send } from './helpers/format-suite.js';
import { waitFor } from './helpers/wait.js';
import { validateConfig } from '../src/config/load.js';
import { configWarnings } from '../src/config/warnings.js';

async function form(r: Received): Promise<FormData> {
  return new Request('http://x/', { method: 'POST', headers: { 'content-type': String(r.headers['content-type']) }, body: r.body }).formData();
}
const field = (f: FormData, name: string): string => {
  const v = f.get(name);
  assert.equal(typeof v, 'string', `${name} is a plain field`);
  return v as string;
};

describe('webhook formats, read back by independent parsers', () => {
  let rx: Receiver;
  let answer: (r: Received) => Answer = () => ({ status: 200 });
  const gws: TestGateway[] = [];
  before(async () => {
    rx = await startReceiver((r) => answer(r));
  });
  after(async () => {
    await Promise.all(gws.map((g) => g.close()));
    await rx.close();
  });
  const gateway = async (target: Record<string, unknown>, extra: Record<string, unknown> = {}) => {
    const g = await startGateway({ routes: [{ recipients: ['*@app.test'], targets: [{ type: 'webhook', url: rx.url, ...target }] }], delivery: { deadline: '10s' }, ...extra });
    gws.push(g);
    return g;
  };
  const deliver = async (g: TestGateway, to = ['support@app.test', 'hidden@app.test']) => {
    const mail = testMail({ cc: 'Team <team@app.test>' });
    const n = rx.got.length;
    const reply = await send(g.port, to, mail.source);
    return { mail, reply, got: rx.got.slice(n) };
  };

  test('sendgrid: the parsed fields, attachment1 as a file, the envelope with the Bcc', async () => {
    answer = () => ({ status: 200 });
    const { mail, reply, got } = await deliver(await gateway({ format: 'sendgrid', signed: false }));
    assert.equal(reply.code, 250, reply.raw);
    assert.equal(got.length, 1);
    assert.match(String(got[0]!.headers['content-type']), /^multipart\/form-data; boundary=/);
    const f = await form(got[0]!);
    assert.equal(field(f, 'subject'), mail.subject);
    assert.equal(field(f, 'from'), '"Ann Sender" <ann@sender.example>');
    assert.equal(field(f, 'to'), '"Support" <support@app.test>');
    assert.equal(field(f, 'cc'), '"Team" <team@app.test>');
    assert.equal(field(f, 'text').replace(/\r\n/g, '\n'), mail.text.trimEnd());
    assert.match(field(f, 'html'), /<p>Hello from the test/);
    assert.deepEqual(JSON.parse(field(f, 'envelope')), { to: ['support@app.test', 'hidden@app.test'], from: 'ann@sender.example' });
    assert.equal(JSON.parse(field(f, 'charsets')).subject, 'UTF-8');
    assert.equal(field(f, 'sender_ip'), '127.0.0.1');
    assert.match(field(f, 'headers'), new RegExp(`Message-ID: <${mail.messageId}>`));
    assert.equal(field(f, 'attachments'), '1');
    assert.deepEqual(JSON.parse(field(f, 'attachment-info')), { attachment1: { filename: 'report.pdf', name: 'report.pdf', type: 'application/pdf' } });
    assert.deepEqual(JSON.parse(field(f, 'content-ids')), {});
    const file = f.get('attachment1') as File;
    assert.equal(file.name, 'report.pdf');
    assert.equal(file.type, 'application/pdf');
    assert.deepEqual(Buffer.from(await file.arrayBuffer()), mail.attachment.bytes);
    assert.equal(f.get('email'), null);
  });

  test('sendgrid: an HTML-only message has html and no text field, as SendGrid posts it (postgate\'s text derived from HTML stays in its own event)', async () => {
    answer = () => ({ status: 200 });
    const g = await gateway({ format: 'sendgrid', signed: false });
    const n = rx.got.length;
    const source = ['From: Ann <ann@sender.example>', 'To: support@app.test', 'Subject: html only', 'MIME-Version: 1.0', 'Content-Type: text/html; charset=utf-8', '', '<p>Only <b>HTML</b> here.</p>', ''].join('\r\n');
    const reply = await send(g.port, ['support@app.test'], source);
    assert.equal(reply.code, 250, reply.raw);
    const f = await form(rx.got[n]!);
    assert.match(field(f, 'html'), /Only <b>HTML<\/b>/);
    assert.equal(f.get('text'), null);
  });

  test('sendgrid-raw: the message as the plain field email, byte-equal on a second instance', async () => {
    const a = await deliver(await gateway({ format: 'sendgrid-raw', signed: false }));
    assert.equal(a.reply.code, 250, a.reply.raw);
    const f = await form(a.got[0]!);
    const email = field(f, 'email');
    assert.ok(email.includes(`Message-ID: <${a.mail.messageId}>`));
    assert.ok(email.startsWith('Return-Path: <ann@sender.example>\r\nMessage-ID:') || email.startsWith('Return-Path: <ann@sender.example>\r\nFrom:'), email.slice(0, 120));
    assert.ok(!/^Received: .*\(postgate\)/m.test(email), 'no per-attempt Received line');
    assert.equal(f.get('text'), null);
    assert.deepEqual(JSON.parse(field(f, 'envelope')).to, ['support@app.test', 'hidden@app.test']);
  });

  test('mailgun: the parsed fields and a signature Mailgun\'s algorithm verifies, fresh on every attempt', async () => {
    const key = 'key-3ax6xnjp29jd6fds4gc373sgvjxteol0';
    const { mail, reply, got } = await deliver(await gateway({ format: 'mailgun', signingKey: key }));
    assert.equal(reply.code, 250, reply.raw);
    const f = await form(got[0]!);
    const ts = field(f, 'timestamp');
    const token = field(f, 'token');
    assert.match(token, /^[0-9a-f]{50}$/);
    assert.ok(Math.abs(Number(ts) - Date.now() / 1000) < 120, 'timestamp within two minutes');
    assert.equal(field(f, 'signature'), createHmac('sha256', key).update(ts + token).digest('hex'));
    assert.equal(field(f, 'recipient'), 'support@app.test, hidden@app.test');
    assert.equal(field(f, 'sender'), 'ann@sender.example');
    assert.equal(field(f, 'subject'), mail.subject);
    assert.equal(field(f, 'body-plain').replace(/\r\n/g, '\n'), mail.text.trimEnd());
    assert.match(field(f, 'body-html'), /<p>Hello/);
    assert.equal(field(f, 'stripped-signature'), '', 'no signature in this message');
    assert.equal(field(f, 'stripped-html'), field(f, 'body-html'), 'nothing quoted to strip');
    const headers = JSON.parse(field(f, 'message-headers')) as Array<[string, string]>;
    assert.deepEqual(headers.slice(0, 2), [['From', 'Ann Sender <ann@sender.example>'], ['To', 'Support <support@app.test>']]);
    assert.equal(field(f, 'attachment-count'), '1');
    assert.deepEqual(Buffer.from(await (f.get('attachment-1') as File).arrayBuffer()), mail.attachment.bytes);
    assert.deepEqual(JSON.parse(field(f, 'content-id-map')), {});
    // A second message gets its own token.
    const again = await deliver(gws.at(-1)!);
    assert.notEqual(field(await form(again.got[0]!), 'token'), token);
  });

  test('mailgun: 406 is a permanent refusal (550 5.7.1), 401 defers (451 4.3.5); the key is never logged', async () => {
    const key = 'key-never-in-a-log-line-0f9e';
    const g = await gateway({ format: 'mailgun-mime', signingKey: key });
    answer = () => ({ status: 406 });
    const refused = await deliver(g);
    assert.equal(refused.reply.code, 550, refused.reply.raw);
    assert.match(refused.reply.raw, /5\.7\.1/);
    answer = () => ({ status: 401 });
    const deferred = await deliver(g);
    assert.equal(deferred.reply.code, 451, deferred.reply.raw);
    assert.match(deferred.reply.raw, /4\.3\.5/);
    answer = () => ({ status: 200 });
    const f = await form((await deliver(g)).got[0]!);
    assert.match(field(f, 'body-mime'), /^Return-Path: <ann@sender.example>\r\nX-Original-To: support@app.test\r\nX-Original-To: hidden@app.test\r\n/);
    assert.equal(field(f, 'recipient'), 'support@app.test');
    assert.ok(!g.logText().includes(key));
  });

  test('postmark: the inbound JSON with RawEmail, basic auth from the url; 403 is a permanent refusal', async () => {
    const g = await gateway({ format: 'postmark', url: rx.url.replace('http://', 'http://user:pm-secret-pass@') });
    answer = () => ({ status: 200 });
    const { mail, reply, got } = await deliver(g);
    assert.equal(reply.code, 250, reply.raw);
    assert.equal(got[0]!.headers['content-type'], 'application/json');
    assert.equal(got[0]!.headers.authorization, `Basic ${Buffer.from('user:pm-secret-pass').toString('base64')}`);
    const j = JSON.parse(got[0]!.body.toString('utf8'));
    for (const k of ['From', 'FromFull', 'To', 'ToFull', 'Cc', 'CcFull', 'Bcc', 'OriginalRecipient', 'ReplyTo', 'Subject', 'MessageID', 'Date', 'MailboxHash', 'TextBody', 'HtmlBody', 'StrippedTextReply', 'Headers', 'Attachments', 'RawEmail']) {
      assert.ok(k in j, `${k} is present`);
    }
    assert.equal(j.From, 'ann@sender.example');
    assert.deepEqual(j.FromFull, { Email: 'ann@sender.example', Name: 'Ann Sender', MailboxHash: '' });
    assert.deepEqual(j.ToFull, [{ Email: 'support@app.test', Name: 'Support', MailboxHash: '' }]);
    assert.equal(j.OriginalRecipient, 'support@app.test');
    assert.equal(j.Subject, mail.subject);
    assert.equal(j.MessageID, mail.messageId);
    assert.equal(j.Date, 'Mon, 07 Dec 2026 10:00:00 +0000');
    assert.equal(j.TextBody.replace(/\r\n/g, '\n'), mail.text.trimEnd());
    assert.deepEqual(Buffer.from(j.Attachments[0].Content, 'base64'), mail.attachment.bytes);
    assert.equal(j.Attachments[0].Name, 'report.pdf');
    assert.equal(j.Attachments[0].ContentLength, mail.attachment.bytes.length);
    assert.ok(j.Headers.some((h: { Name: string; Value: string }) => h.Name === 'Message-ID' && h.Value === `<${mail.messageId}>`));
    assert.match(j.RawEmail, /X-Original-To: hidden@app.test\r\n/);
    answer = () => ({ status: 403 });
    const refused = await deliver(g);
    answer = () => ({ status: 200 });
    assert.equal(refused.reply.code, 550, refused.reply.raw);
    assert.ok(!g.logText().includes('pm-secret-pass'));
  });

  test('mandrill: mandrill_events with the raw message, X-Mandrill-Signature over the url and sorted fields', async () => {
    const key = 'mandrill-key-a1b2c3';
    const url = `${rx.url}?source=postgate`;
    const { mail, reply, got } = await deliver(await gateway({ format: 'mandrill', url, signingKey: key }));
    assert.equal(reply.code, 250, reply.raw);
    assert.equal(got[0]!.headers['content-type'], 'application/x-www-form-urlencoded');
    const params = new URLSearchParams(got[0]!.body.toString('utf8'));
    const expected = createHmac('sha1', key)
      .update(url + [...params.entries()].sort(([a], [b]) => a.localeCompare(b)).flat().join(''))
      .digest('base64');
    assert.equal(got[0]!.headers['x-mandrill-signature'], expected);
    const events = JSON.parse(params.get('mandrill_events')!);
    assert.equal(events.length, 1);
    assert.equal(events[0].event, 'inbound');
    const msg = events[0].msg;
    assert.match(msg.raw_msg, new RegExp(`Message-ID: <${mail.messageId}>`));
    assert.match(msg.raw_msg, /X-Original-To: hidden@app.test\r\n/);
    assert.equal(msg.subject, mail.subject);
    assert.equal(msg.from_email, 'ann@sender.example');
    assert.equal(msg.email, 'support@app.test');
    assert.deepEqual(Buffer.from(msg.attachments['report.pdf'].content, 'base64'), mail.attachment.bytes);
  });

  test('rfc822: X-Original-To per recipient; equal bytes from two instances; the Received line of the attempt left out', async () => {
    const bodies: Buffer[] = [];
    const mail = testMail();
    for (let i = 0; i < 2; i++) {
      const g = await gateway({ format: 'rfc822', signed: false });
      const n = rx.got.length;
      assert.equal((await send(g.port, ['support@app.test', 'hidden@app.test'], mail.source)).code, 250);
      bodies.push(rx.got[n]!.body);
      assert.equal(rx.got[n]!.headers['content-type'], 'message/rfc822');
    }
    assert.deepEqual(bodies[0], bodies[1]);
    assert.ok(bodies[0]!.toString('latin1').startsWith('Return-Path: <ann@sender.example>\r\nX-Original-To: support@app.test\r\nX-Original-To: hidden@app.test\r\nFrom: Ann Sender'));
    assert.ok(bodies[0]!.toString('latin1').endsWith(mail.source));
  });

  test('rfc822 from the queue (a spooled message) posts the same bytes as a synchronous delivery', async () => {
    const mail = testMail();
    const sync = await gateway({ format: 'rfc822', signed: false });
    let n = rx.got.length;
    assert.equal((await send(sync.port, ['support@app.test'], mail.source)).code, 250);
    const direct = rx.got[n]!.body;
    const queued = await startGateway({
      queue: { retry: { initialDelay: '100ms', maxDelay: '200ms' } },
      routes: [{ recipients: ['*@app.test'], mode: 'queue', targets: [{ type: 'webhook', url: rx.url, format: 'rfc822', signed: false }] }],
    });
    gws.push(queued);
    n = rx.got.length;
    assert.equal((await send(queued.port, ['support@app.test'], mail.source)).code, 250);
    await waitFor(() => rx.got.length > n, 10_000, 'the queued delivery');
    assert.deepEqual(rx.got[n]!.body, direct);
  });

  test('parts the event links (over blobs.inlineLimit) are read back from the message for parsed formats', async () => {
    const g = await gateway({ format: 'sendgrid', signed: false }, { blobs: { inlineLimit: '1KiB', bodyInlineLimit: '1KiB' } });
    const big = testMail();
    const source = big.source.replace(/Hello from the test/, `${'x'.repeat(2000)} Hello from the test`);
    const n = rx.got.length;
    assert.equal((await send(g.port, ['support@app.test'], source)).code, 250);
    const f = await form(rx.got[n]!);
    assert.ok(field(f, 'text').startsWith('x'.repeat(2000)));
    assert.deepEqual(Buffer.from(await (f.get('attachment1') as File).arrayBuffer()), big.attachment.bytes);
  });

  test('a request over the format\'s limit defers (451 4.3.5) with a log line saying why, and nothing is sent', async () => {
    const g = await gateway({ format: 'mailgun-mime', signingKey: 'k' }, { smtp: { maxMessageSize: '40MB' } });
    const mail = testMail();
    const filler = randomBytes(19 * 1024 * 1024).toString('base64').match(/.{1,76}/g)!.join('\r\n');
    const source = mail.source.replace('--outer--', `--outer\r\nContent-Type: application/octet-stream; name="big.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n${filler}\r\n--outer--`);
    const n = rx.got.length;
    const reply = await send(g.port, ['support@app.test'], source);
    assert.equal(reply.code, 451, reply.raw);
    assert.match(reply.raw, /4\.3\.5/);
    assert.equal(rx.got.length, n);
    assert.match(g.logText(), /the (message|mailgun-mime request) \(\d+ bytes\) is over the 26214400 bytes mailgun-mime consumers take, and the format cannot carry a link; deferred/);
  });
});

describe('format options in the configuration', () => {
  const cfg = (target: Record<string, unknown>) => validateConfig({ routes: [{ recipients: ['*@app.test'], targets: [{ type: 'webhook', url: 'https://h.example/in', ...target }] }] });
  const problems = (target: Record<string, unknown>): string[] => {
    try {
      cfg(target);
      return [];
    } catch (err) {
      return ((err as { problems?: Array<{ path: string; message: string }> }).problems ?? []).map((p) => `${p.path}: ${p.message}`);
    }
  };

  test('mailgun and mandrill need one signingKey, which is not an ed25519 key', () => {
    assert.deepEqual(problems({ format: 'mailgun', signingKey: 'key-abc' }), []);
    assert.deepEqual(problems({ format: 'mandrill', signingKey: 'abc' }), []);
    assert.match(problems({ format: 'mailgun' })[0]!, /routes\[0\]\.targets\[0\]\.signingKey: format mailgun signs every request/);
    assert.match(problems({ format: 'mandrill', signingKey: ['a', 'b'] })[0]!, /signingKey: format mandrill signs every request: signingKey must be one key/);
  });

  test('a Standard Webhooks secret with another format is an error; an unknown format names the choices', () => {
    assert.match(problems({ format: 'rfc822', secret: 'whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0' })[0]!, /secret: format rfc822 sends no Standard Webhooks signature/);
    assert.match(problems({ format: 'mailgun-raw' })[0]!, /format/);
    assert.match(problems({ format: 'mailgun-raw' })[0]!, /mailgun-mime/);
    assert.match(problems({ signingKey: 'key-abc' })[0]!, /whsk_/);
  });

  test('a format without credentials in the url is warned about', () => {
    assert.match(configWarnings(cfg({ format: 'postmark' }))[0]!.message, /format postmark carries no signature/);
    assert.deepEqual(configWarnings(cfg({ format: 'postmark', url: 'https://u:p@h.example/in' })), []);
    assert.deepEqual(configWarnings(cfg({ format: 'mailgun', signingKey: 'k' })), []);
  });
});
