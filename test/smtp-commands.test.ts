/**
 * The SMTP command surface (docs/smtp.md) over real sockets, one describe per
 * command group: greeting and EHLO keywords, MAIL and RCPT with their
 * parameters and routing decisions, DATA (queue id, size limit, loop
 * detection, line-ending policy, trace headers), RSET/NOOP/QUIT, the refused
 * and informational verbs (VRFY, EXPN, HELP, TURN, ATRN, ETRN, X-*), unknown
 * and disabled verbs, PIPELINING (raw, swaks, nodemailer), the early-talker
 * policy, connection and line limits, idle timeouts, and the STARTTLS
 * command-injection defence (RFC 3207 §6).
 *
 * Every reply is checked for its exact code and enhanced status code
 * (RFC 3463 / RFC 2034). docs/smtp.md documents what these tests pin down.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import nodemailer from 'nodemailer';
import { RawSmtp, sendMail, type Reply } from './helpers/smtp-client.js';
import { startGateway, listFiles, type TestGateway } from './helpers/gateway.js';
import { fixturePath } from './helpers/fixtures.js';
import { hashPassword } from '../src/auth/password.js';

const execFileP = promisify(execFile);

// Two routes: `*@example.test` (main) and one address of other.test (other),
// so other.test is a served domain with unknown users.
const ROUTES = [
  { name: 'main', recipients: ['*@example.test'], targets: [{ type: 'local' }] },
  { name: 'other', recipients: ['ok@other.test'], targets: [{ type: 'local' }] },
];

const EXPECTED_KEYWORDS = ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'CHUNKING', 'BINARYMIME'];
const NEVER_ADVERTISED = /^(X-EXPS|X-EXCH50|X-LINK2STATE|XEXCH50|DSN|ETRN|ATRN|TURN|REQUIRETLS|VRFY|EXPN)\b/i;
const QUEUE_ID = /^2\.0\.0 Ok: queued as ([0-9A-Z]{20})$/;

// ---------------------------------------------------------------------------
// helpers

/** Asserts the exact reply code and, when given, the enhanced status code on every line. */
function expectReply(r: Reply, code: number, enhanced?: string | null): void {
  assert.equal(r.code, code, `expected ${code}, got ${JSON.stringify(r.raw)}`);
  if (enhanced === undefined) return;
  for (const line of r.lines) {
    const text = line.slice(4);
    if (enhanced === null) assert.doesNotMatch(text, /^\d\.\d{1,3}\.\d{1,3} /, `no enhanced code expected: ${JSON.stringify(r.raw)}`);
    else assert.ok(text.startsWith(`${enhanced} `), `expected enhanced ${enhanced}: ${JSON.stringify(r.raw)}`);
  }
}

/** Connects, reads the 220 greeting and says EHLO. */
async function open(port: number, helo = 'client.example'): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  expectReply(await c.read(), 220);
  expectReply(await c.cmd(`EHLO ${helo}`), 250);
  return c;
}

/** EHLO keywords (every line after the first), e.g. ["PIPELINING", "SIZE 10000", …]. */
function keywords(ehlo: Reply): string[] {
  return ehlo.lines.slice(1).map((l) => l.slice(4));
}

function queueId(r: Reply): string {
  const m = QUEUE_ID.exec(r.text);
  assert.ok(m, `no queue id in ${JSON.stringify(r.raw)}`);
  return m[1]!;
}

/** The stored .eml and JSON event of an accepted message. */
async function stored(tg: TestGateway, id: string): Promise<{ eml: Buffer; event: { data: Record<string, unknown> & { envelope: Record<string, unknown> } } }> {
  const files = await listFiles(tg.dataDir);
  const eml = files.find((f) => f.endsWith(`${id}.eml`));
  const json = files.find((f) => f.endsWith(`${id}.json`));
  assert.ok(eml && json, `nothing stored for ${id}: ${files.join(', ')}`);
  return {
    eml: await readFile(path.join(tg.dataDir, eml)),
    event: JSON.parse(await readFile(path.join(tg.dataDir, json), 'utf8')),
  };
}

/** The message bytes as received: the stored .eml without our Return-Path + Received. */
function withoutTrace(eml: Buffer): Buffer {
  const text = eml.toString('latin1');
  assert.ok(text.startsWith('Return-Path: <'), 'stored message starts with Return-Path');
  const start = text.indexOf(';\r\n\t', text.indexOf('\r\nReceived: '));
  return eml.subarray(text.indexOf('\r\n', start + 4) + 2);
}

/** MAIL + RCPT + DATA with a body written as is (no dot-stuffing, no line-ending fix-up). */
async function rawData(c: RawSmtp, body: string | Buffer, rcpt = 'x@example.test'): Promise<Reply> {
  expectReply(await c.cmd('MAIL FROM:<sender@example.org>'), 250, '2.1.0');
  expectReply(await c.cmd(`RCPT TO:<${rcpt}>`), 250, '2.1.5');
  expectReply(await c.cmd('DATA'), 354, null);
  c.write(body);
  c.write('\r\n.\r\n');
  return c.read(30_000);
}

let nonce = 0;
/** A distinct message each time (identical ones would share a delivery id). */
function message(subject: string, extraHeaders = '', body = 'Hello there.'): string {
  return `${extraHeaders}From: <sender@example.org>\r\nTo: <x@example.test>\r\nSubject: ${subject}\r\nX-Nonce: ${++nonce}-${Date.now()}\r\n\r\n${body}`;
}

/** RFC 2047 encoded words (B and Q) of UTF-8 text, enough for nodemailer's output. */
function decodeWords(value: string): string {
  return value
    .replace(/\r\n[ \t]+/g, ' ')
    .replace(/(=\?[^?]+\?[bq]\?[^?]*\?=)\s+(?==\?)/gi, '$1')
    .replace(/=\?utf-8\?([bq])\?([^?]*)\?=/gi, (_m, enc: string, text: string) =>
      enc.toLowerCase() === 'b'
        ? Buffer.from(text, 'base64').toString('utf8')
        : Buffer.from(text.replace(/_/g, ' ').replace(/=([0-9a-f]{2})/gi, (_x, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8'),
    );
}

const elapsed = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

// swaks: a real SMTP client. Only a developer machine without it skips; CI installs it.
const swaksProbe = spawnSync('swaks', ['--help'], { encoding: 'utf8' });
const haveSwaks = !swaksProbe.error;
const swaksSkip = !haveSwaks && !process.env.CI ? 'swaks is not installed (CI installs it)' : false;
const swaksHasBdat = haveSwaks && /\b(bdat|chunking)\b/i.test(swaksProbe.stdout ?? '');

// ---------------------------------------------------------------------------

describe('SMTP command surface (plain mx listener)', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startGateway({ smtp: { maxMessageSize: 10_000 }, routes: ROUTES });
  });
  after(() => tg.close());

  describe('greeting, EHLO, HELO', () => {
    test('greeting is 220 without an enhanced code (RFC 2034 §3)', async () => {
      const c = await RawSmtp.connect(tg.port);
      const g = await c.read();
      expectReply(g, 220, null);
      assert.equal(g.raw, '220 mx.test.local ESMTP\r\n');
      c.close();
    });

    test('EHLO lists exactly SIZE <n>, PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING, BINARYMIME', async () => {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      const ehlo = await c.cmd('EHLO client.example');
      expectReply(ehlo, 250, null);
      assert.match(ehlo.lines[0]!, /^250-mx\.test\.local /);
      const kw = keywords(ehlo);
      assert.deepEqual([...kw].sort(), [...EXPECTED_KEYWORDS, 'SIZE 10000'].sort());
      // without tls/auth configuration: no STARTTLS, no AUTH; DSN and ETRN are off
      for (const k of kw) assert.doesNotMatch(k, /^(STARTTLS|AUTH)\b/);
      for (const k of kw) assert.doesNotMatch(k, NEVER_ADVERTISED);
      c.close();
    });

    test('HELO → 250 (no keywords), and a transaction works after it', async () => {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      const helo = await c.cmd('HELO client.example');
      expectReply(helo, 250, null);
      assert.equal(helo.lines.length, 1);
      const r = await rawData(c, message('after helo'));
      expectReply(r, 250, '2.0.0');
      queueId(r);
      c.close();
    });

    test('EHLO without a domain → 501', async () => {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      expectReply(await c.cmd('EHLO'), 501);
      expectReply(await c.cmd('EHLO client.example'), 250);
      c.close();
    });
  });

  describe('MAIL FROM', () => {
    test('MAIL before EHLO/HELO → 503 5.5.1', async () => {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 503, '5.5.1');
      c.close();
    });

    test('250 2.1.0; nested MAIL → 503 5.5.1; null reverse-path accepted', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      expectReply(await c.cmd('MAIL FROM:<b@example.org>'), 503, '5.5.1');
      expectReply(await c.cmd('RSET'), 250, '2.0.0');
      expectReply(await c.cmd('MAIL FROM:<>'), 250, '2.1.0');
      c.close();
    });

    test('SIZE= at the limit is accepted, over the limit → 552 5.3.4 (RFC 1870); bad SIZE → 501 5.5.4', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('MAIL FROM:<a@example.org> SIZE=10000'), 250, '2.1.0');
      expectReply(await c.cmd('RSET'), 250, '2.0.0');
      expectReply(await c.cmd('MAIL FROM:<a@example.org> SIZE=10001'), 552, '5.3.4');
      expectReply(await c.cmd('MAIL FROM:<a@example.org> SIZE=99999999999'), 552, '5.3.4');
      expectReply(await c.cmd('MAIL FROM:<a@example.org> SIZE=abc'), 501, '5.5.4');
      c.close();
    });

    test('BODY=7BIT / 8BITMIME / BINARYMIME and SMTPUTF8 accepted (RFC 6152, 3030, 6531); bad BODY → 501 5.5.4', async () => {
      const c = await open(tg.port);
      for (const params of ['BODY=8BITMIME', 'SMTPUTF8', 'BODY=8BITMIME SMTPUTF8', 'body=7bit size=100', 'BODY=BINARYMIME', 'AUTH=<>']) {
        expectReply(await c.cmd(`MAIL FROM:<a@example.org> ${params}`), 250, '2.1.0');
        expectReply(await c.cmd('RSET'), 250, '2.0.0');
      }
      expectReply(await c.cmd('MAIL FROM:<dévéloppeur@example.org> SMTPUTF8'), 250, '2.1.0');
      expectReply(await c.cmd('RSET'), 250, '2.0.0');
      expectReply(await c.cmd('MAIL FROM:<a@example.org> BODY=9BIT'), 501, '5.5.4');
      expectReply(await c.cmd('MAIL FROM:<a@example.org> SMTPUTF8=yes'), 501, '5.5.4');
      c.close();
    });

    test('unknown parameter → 555 5.5.4 (RFC 5321 §4.1.1.11); DSN parameters RET/ENVID → 555 5.5.4 (DSN is off)', async () => {
      const c = await open(tg.port);
      for (const p of ['FOO=1', 'XYZZY', 'RET=FULL', 'ENVID=abc123', 'SIZE=100 RET=HDRS']) {
        const r = await c.cmd(`MAIL FROM:<a@example.org> ${p}`);
        expectReply(r, 555, '5.5.4');
      }
      // nothing was started: a MAIL now is not "nested"
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      c.close();
    });

    test('a malformed reverse-path → 501 5.1.7', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('MAIL FROM:a@example.org'), 501, '5.1.7');
      c.close();
    });
  });

  describe('RCPT TO', () => {
    test('RCPT before MAIL → 503 5.5.1', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('RCPT TO:<x@example.test>'), 503, '5.5.1');
      c.close();
    });

    test('250 2.1.5; unknown user of a served domain 550 5.1.1; other domain 550 5.7.1 (no relay)', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      expectReply(await c.cmd('RCPT TO:<ok@other.test>'), 250, '2.1.5');
      expectReply(await c.cmd('RCPT TO:<OK@Other.Test>'), 250, '2.1.5');
      const unknown = await c.cmd('RCPT TO:<nobody@other.test>');
      expectReply(unknown, 550, '5.1.1');
      assert.match(unknown.text, /<nobody@other\.test>/);
      const relay = await c.cmd('RCPT TO:<victim@elsewhere.example>');
      expectReply(relay, 550, '5.7.1');
      assert.match(relay.text, /[Rr]elay/);
      c.close();
    });

    test('DSN parameters NOTIFY / ORCPT and unknown ones → 555 5.5.4 (DSN is off)', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      expectReply(await c.cmd('RCPT TO:<x@example.test> NOTIFY=SUCCESS,FAILURE'), 555, '5.5.4');
      expectReply(await c.cmd('RCPT TO:<x@example.test> ORCPT=rfc822;x@example.test'), 555, '5.5.4');
      expectReply(await c.cmd('RCPT TO:<x@example.test> FOO=bar'), 555, '5.5.4');
      expectReply(await c.cmd('RCPT TO:<x@example.test>'), 250, '2.1.5');
      c.close();
    });

    test('postmaster@ of a served domain is accepted, case-insensitively (RFC 5321 §4.5.1)', async () => {
      const c = await open(tg.port);
      for (const pm of ['postmaster@example.test', 'PostMaster@Example.TEST', 'POSTMASTER@other.test']) {
        expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
        expectReply(await c.cmd(`RCPT TO:<${pm}>`), 250, '2.1.5');
        expectReply(await c.cmd('RSET'), 250, '2.0.0');
      }
      // not for a domain we do not serve
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      expectReply(await c.cmd('RCPT TO:<postmaster@elsewhere.example>'), 550, '5.7.1');
      c.close();
    });

    test('RCPT TO:<Postmaster> without a domain is accepted (RFC 5321 §4.1.1.3, §4.5.1 MUST)', async () => {
      const c = await open(tg.port);
      for (const pm of ['Postmaster', 'postmaster', 'POSTMASTER']) {
        expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
        expectReply(await c.cmd(`RCPT TO:<${pm}>`), 250, '2.1.5');
        expectReply(await c.cmd('RSET'), 250, '2.0.0');
      }
      // any other domain-less address is not routable
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      expectReply(await c.cmd('RCPT TO:<root>'), 501, '5.1.3');
      c.close();
    });

    test('a recipient of another route → 452 4.5.3; the transaction keeps its first route (RFC 5321 §4.5.3.1.10)', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      expectReply(await c.cmd('RCPT TO:<x@example.test>'), 250, '2.1.5');
      const other = await c.cmd('RCPT TO:<ok@other.test>');
      expectReply(other, 452, '4.5.3');
      assert.match(other.text, /new transaction/);
      // postmaster has its own route too
      expectReply(await c.cmd('RCPT TO:<postmaster@example.test>'), 452, '4.5.3');
      expectReply(await c.cmd('RCPT TO:<y@example.test>'), 250, '2.1.5');
      expectReply(await c.cmd('DATA'), 354, null);
      c.write(`${message('one route')}\r\n.\r\n`);
      const r = await c.read();
      expectReply(r, 250, '2.0.0');
      const { event } = await stored(tg, queueId(r));
      assert.deepEqual((event.data.envelope.rcptTo as Array<{ address: string }>).map((x) => x.address), ['x@example.test', 'y@example.test']);
      // the refused recipient goes through in a new transaction
      const again = await sendMail(c, 'a@example.org', ['ok@other.test'], message('other route'));
      expectReply(again.data!, 250, '2.0.0');
      c.close();
    });

    test('exactly 100 recipients are accepted, the 101st → 452 4.5.3 (RFC 5321 §4.5.3.1.8)', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      let batch = '';
      for (let i = 1; i <= 101; i++) batch += `RCPT TO:<user${i}@example.test>\r\n`;
      c.write(batch);
      const replies: Reply[] = [];
      for (let i = 1; i <= 101; i++) replies.push(await c.read());
      for (const r of replies.slice(0, 100)) expectReply(r, 250, '2.1.5');
      expectReply(replies[100]!, 452, '4.5.3');
      assert.match(replies[100]!.text, /Too many recipients/);
      c.close();
    });
  });

  describe('DATA', () => {
    test('DATA without MAIL or RCPT → 503 5.5.1; DATA with an argument → 501 5.5.4', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('DATA'), 503, '5.5.1');
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      const noRcpt = await c.cmd('DATA');
      expectReply(noRcpt, 503, '5.5.1');
      assert.match(noRcpt.text, /RCPT/);
      expectReply(await c.cmd('RCPT TO:<x@example.test>'), 250, '2.1.5');
      expectReply(await c.cmd('DATA now'), 501, '5.5.4');
      c.close();
    });

    test('354, then "250 2.0.0 Ok: queued as <id>"; stored with Return-Path and Received … with ESMTP (RFC 5321 §4.4, RFC 3848)', async () => {
      const c = await open(tg.port, 'client.example');
      expectReply(await c.cmd('MAIL FROM:<sender@example.org>'), 250, '2.1.0');
      expectReply(await c.cmd('RCPT TO:<x@example.test>'), 250, '2.1.5');
      const go = await c.cmd('DATA');
      expectReply(go, 354, null);
      assert.match(go.text, /<CR><LF>\.<CR><LF>/);
      const body = message('queued', '', '..leading dot is unstuffed\r\nend');
      c.write(`${body}\r\n.\r\n`);
      const r = await c.read();
      expectReply(r, 250, '2.0.0');
      const id = queueId(r);
      const { eml } = await stored(tg, id);
      const text = eml.toString('latin1');
      assert.match(text, new RegExp(`^Return-Path: <sender@example\\.org>\\r\\nReceived: from client\\.example \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby mx\\.test\\.local \\(postgate\\) with ESMTP\\r\\n\\tid ${id}\\r\\n\\tfor <x@example\\.test>;\\r\\n\\t`));
      // transparency (RFC 5321 §4.5.2): the leading dot of "..leading" is removed
      assert.equal(withoutTrace(eml).toString('latin1'), `${body.replace('..leading', '.leading')}\r\n`);
      c.close();
    });

    test('after HELO the Received header says "with SMTP"', async () => {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      expectReply(await c.cmd('HELO old.example'), 250);
      const r = await rawData(c, message('helo trace'));
      expectReply(r, 250, '2.0.0');
      const { eml } = await stored(tg, queueId(r));
      assert.match(eml.toString('latin1'), /^Return-Path: <sender@example\.org>\r\nReceived: from old\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test\.local \(postgate\) with SMTP\r\n/);
      c.close();
    });

    test('a body over smtp.maxMessageSize → 552 5.3.4 after the whole body; nothing stored; the session continues', async () => {
      const before = (await listFiles(tg.dataDir)).length;
      const c = await open(tg.port);
      const big = message('too big', `X-Padding: ${'p'.repeat(20_000)}\r\n`);
      const r = await rawData(c, big);
      expectReply(r, 552, '5.3.4');
      assert.match(r.text, /10000/);
      assert.equal((await listFiles(tg.dataDir)).length, before, 'nothing stored');
      // the oversize body was drained: the next command is read as a command
      expectReply(await c.cmd('NOOP'), 250, '2.0.0');
      const next = await rawData(c, message('small after big'));
      expectReply(next, 250, '2.0.0');
      queueId(next);
      c.close();
    });

    test('mail loop: 51 Received headers → 554 5.4.6; 50 are accepted (smtp.maxReceivedHeaders, RFC 5321 §6.3)', async () => {
      const c = await open(tg.port);
      const hops = (n: number) => Array.from({ length: n }, (_, i) => `Received: from hop${i}.example by hop${i + 1}.example; Mon, 23 Nov 2026 10:00:00 +0000\r\n`).join('');
      const loop = await rawData(c, message('loop', hops(51)));
      expectReply(loop, 554, '5.4.6');
      assert.match(loop.text, /\b51\b/);
      const ok = await rawData(c, message('fifty hops', hops(50)));
      expectReply(ok, 250, '2.0.0');
      queueId(ok);
      c.close();
    });

    test('bareLineEndings "accept" (default): bare LF and bare CR are accepted and stored unchanged', async () => {
      const c = await open(tg.port);
      const body = message('bare', '', 'line one\nline two\rline three\r\nend');
      const r = await rawData(c, body);
      expectReply(r, 250, '2.0.0');
      const { eml } = await stored(tg, queueId(r));
      assert.equal(withoutTrace(eml).toString('latin1'), `${body}\r\n`);
      c.close();
    });

    test('only <CRLF>.<CRLF> ends DATA: <LF>.<LF> stays inside the message', async () => {
      const c = await open(tg.port);
      const body = message('lf dot lf', '', 'before\n.\nRSET\r\nafter');
      const r = await rawData(c, body);
      expectReply(r, 250, '2.0.0');
      expectReply(await c.cmd('NOOP'), 250, '2.0.0'); // no stray reply to the "RSET" inside the body
      const { eml } = await stored(tg, queueId(r));
      assert.ok(withoutTrace(eml).toString('latin1').includes('before\n.\nRSET\r\nafter'));
      c.close();
    });
  });

  describe('RSET, NOOP, QUIT', () => {
    test('RSET → 250 2.0.0 and clears the transaction; NOOP → 250 2.0.0 (with or without argument)', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('MAIL FROM:<a@example.org>'), 250, '2.1.0');
      expectReply(await c.cmd('RCPT TO:<x@example.test>'), 250, '2.1.5');
      expectReply(await c.cmd('RSET'), 250, '2.0.0');
      expectReply(await c.cmd('RCPT TO:<x@example.test>'), 503, '5.5.1');
      expectReply(await c.cmd('DATA'), 503, '5.5.1');
      expectReply(await c.cmd('NOOP'), 250, '2.0.0');
      expectReply(await c.cmd('NOOP ignored argument'), 250, '2.0.0');
      c.close();
    });

    test('QUIT → 221 2.0.0 and the server closes the connection', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('QUIT'), 221, '2.0.0');
      await c.waitClosed();
      assert.equal(c.closed, true);
    });
  });

  describe('VRFY, EXPN, HELP, TURN, ATRN, ETRN, X-*, unknown verbs', () => {
    test('VRFY / EXPN → 252 2.5.2 (no address harvesting, RFC 5321 §3.5.3, §7.3); without argument → 501 5.5.4', async () => {
      const c = await open(tg.port);
      for (const cmd of ['VRFY x@example.test', 'VRFY postmaster', 'VRFY nobody@other.test', 'EXPN staff', 'EXPN all@example.test']) {
        expectReply(await c.cmd(cmd), 252, '2.5.2');
      }
      expectReply(await c.cmd('VRFY'), 501, '5.5.4');
      expectReply(await c.cmd('EXPN'), 501, '5.5.4');
      c.close();
    });

    test('HELP → 214 multi-line listing the supported commands: BDAT yes, TURN/ETRN/ATRN/STARTTLS/AUTH no', async () => {
      const c = await open(tg.port);
      const help = await c.cmd('HELP');
      expectReply(help, 214, '2.0.0');
      assert.ok(help.lines.length >= 2, 'multi-line');
      const verbs = help.lines.map((l) => l.slice(4)).join(' ').split(/\s+/);
      for (const v of ['HELO', 'EHLO', 'MAIL', 'RCPT', 'DATA', 'BDAT', 'RSET', 'NOOP', 'QUIT', 'HELP', 'VRFY', 'EXPN']) assert.ok(verbs.includes(v), `HELP lists ${v}`);
      for (const v of ['TURN', 'ETRN', 'ATRN', 'STARTTLS', 'AUTH', 'X-EXPS', 'WIZ']) assert.ok(!verbs.includes(v), `HELP does not list ${v}`);
      c.close();
    });

    test('HELP <command> → 214 2.0.0 for a supported one, 504 5.5.1 for TURN/ETRN/unknown topics', async () => {
      const c = await open(tg.port);
      const mail = await c.cmd('HELP MAIL');
      expectReply(mail, 214, '2.0.0');
      assert.match(mail.text, /MAIL FROM:<address>/);
      expectReply(await c.cmd('help bdat'), 214, '2.0.0');
      for (const topic of ['TURN', 'ETRN', 'ATRN', 'XYZZY']) expectReply(await c.cmd(`HELP ${topic}`), 504, '5.5.1');
      c.close();
    });

    test('TURN → 502 5.5.1 (RFC 5321 App. F.1)', async () => {
      const c = await open(tg.port);
      const r = await c.cmd('TURN');
      expectReply(r, 502, '5.5.1');
      expectReply(await c.cmd('NOOP'), 250, '2.0.0');
      c.close();
    });

    test('ATRN unauthenticated → 530 5.7.0 (RFC 2645)', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('ATRN'), 530, '5.7.0');
      expectReply(await c.cmd('ATRN example.test'), 530, '5.7.0');
      c.close();
    });

    test('ETRN <domain> → 458 4.3.0 without a queue (RFC 1985); without argument → 501 5.5.4', async () => {
      const c = await open(tg.port);
      const r = await c.cmd('ETRN example.test');
      expectReply(r, 458, '4.3.0');
      assert.match(r.text, /example\.test/);
      expectReply(await c.cmd('ETRN @example.test'), 458, '4.3.0');
      expectReply(await c.cmd('ETRN'), 501, '5.5.4');
      c.close();
    });

    test('X-EXPS, X-EXCH50, X-LINK2STATE → 502 5.5.1 (never advertised)', async () => {
      const c = await open(tg.port);
      for (const v of ['X-EXPS GSSAPI', 'X-EXCH50 100 2', 'X-LINK2STATE LAST CHUNK=1', 'x-exps']) expectReply(await c.cmd(v), 502, '5.5.1');
      c.close();
    });

    test('WIZ, SHELL, KILL (disabled) → 500 5.5.2', async () => {
      const c = await open(tg.port);
      for (const v of ['WIZ', 'SHELL', 'KILL']) expectReply(await c.cmd(v), 500, '5.5.2');
      expectReply(await c.cmd('NOOP'), 250, '2.0.0');
      c.close();
    });

    test('an unknown verb → 500 5.5.2 and the session continues', async () => {
      const c = await open(tg.port);
      expectReply(await c.cmd('XYZZY plugh'), 500, '5.5.2');
      expectReply(await c.cmd('NOOP'), 250, '2.0.0');
      const r = await rawData(c, message('after unknown'));
      expectReply(r, 250, '2.0.0');
      c.close();
    });

    test('10 unrecognised commands → 421 4.4.2 and the connection closes', async () => {
      const c = await open(tg.port);
      for (let i = 1; i <= 9; i++) expectReply(await c.cmd(`BOGUS${i}`), 500, '5.5.2');
      const last = await c.cmd('BOGUS10');
      expectReply(last, 421, '4.4.2');
      assert.match(last.text, /too many unrecognized commands/);
      await c.waitClosed();
    });

    test('an HTTP request line → 421 4.4.2 and close (cross-protocol requests from browsers)', async () => {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      c.write('POST /inbound HTTP/1.1\r\nHost: mx.test.local\r\n\r\n');
      expectReply(await c.read(), 421, '4.4.2');
      await c.waitClosed();
    });
  });

  describe('PIPELINING (RFC 2920) and real clients', () => {
    test('EHLO + MAIL + 3 RCPT + DATA in one write: replies in order, then the message', async () => {
      const c = await RawSmtp.connect(tg.port);
      expectReply(await c.read(), 220);
      c.write('EHLO pipe.example\r\nMAIL FROM:<p@example.org>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n');
      const replies: Reply[] = [];
      for (let i = 0; i < 6; i++) replies.push(await c.read());
      assert.deepEqual(replies.map((r) => r.code), [250, 250, 250, 250, 250, 354]);
      assert.ok(keywords(replies[0]!).includes('PIPELINING'));
      expectReply(replies[1]!, 250, '2.1.0');
      for (const r of replies.slice(2, 5)) expectReply(r, 250, '2.1.5');
      c.write(`${message('pipelined')}\r\n.\r\n`);
      const done = await c.read();
      expectReply(done, 250, '2.0.0');
      const { event } = await stored(tg, queueId(done));
      assert.deepEqual((event.data.envelope.rcptTo as Array<{ address: string }>).map((x) => x.address), ['a@example.test', 'b@example.test', 'c@example.test']);
      c.close();
    });

    test('a refused command in a pipelined group gets its reply in its place', async () => {
      const c = await open(tg.port);
      c.write('MAIL FROM:<p@example.org>\r\nRCPT TO:<x@example.test>\r\nRCPT TO:<v@elsewhere.example>\r\nRCPT TO:<ok@other.test>\r\nRCPT TO:<y@example.test>\r\nDATA\r\n');
      const replies: Reply[] = [];
      for (let i = 0; i < 6; i++) replies.push(await c.read());
      assert.deepEqual(
        replies.map((r) => `${r.code} ${r.text.split(' ')[0]}`),
        ['250 2.1.0', '250 2.1.5', '550 5.7.1', '452 4.5.3', '250 2.1.5', '354 End'],
      );
      c.write(`${message('pipelined with refusals')}\r\n.\r\n`);
      expectReply(await c.read(), 250, '2.0.0');
      c.close();
    });

    test('MAIL + RCPT + BDAT LAST with its octets in one write (CHUNKING with PIPELINING)', async () => {
      const c = await open(tg.port);
      const body = message('pipelined bdat', '', 'line\r\n.\r\nstill the message');
      c.write(`MAIL FROM:<p@example.org>\r\nRCPT TO:<x@example.test>\r\nBDAT ${Buffer.byteLength(body)} LAST\r\n${body}NOOP\r\n`);
      expectReply(await c.read(), 250, '2.1.0');
      expectReply(await c.read(), 250, '2.1.5');
      const done = await c.read();
      expectReply(done, 250, '2.0.0');
      expectReply(await c.read(), 250, '2.0.0'); // the NOOP after the counted octets
      const { eml } = await stored(tg, queueId(done));
      assert.equal(withoutTrace(eml).toString('latin1'), body);
      c.close();
    });

    test('swaks --pipeline delivers (250 queued)', { skip: swaksSkip }, async () => {
      const { stdout } = await execFileP(
        'swaks',
        ['--server', `127.0.0.1:${tg.port}`, '--helo', 'swaks.example', '--from', 'swaks@example.org', '--to', 'x@example.test', '--pipeline', '--header', `X-Nonce: ${++nonce}`],
        { timeout: 20_000 },
      );
      assert.match(stdout, /<-\s+250-PIPELINING/);
      const m = /<-\s+250 2\.0\.0 Ok: queued as ([0-9A-Z]{20})/.exec(stdout);
      assert.ok(m, stdout);
      await stored(tg, m[1]!);
      assert.match(stdout, /<-\s+221 2\.0\.0/);
    });

    test('swaks with BDAT/CHUNKING', { skip: swaksSkip || (swaksHasBdat ? false : 'this swaks has no BDAT/CHUNKING support (swaks --help mentions neither)') }, async () => {
      const { stdout } = await execFileP(
        'swaks',
        ['--server', `127.0.0.1:${tg.port}`, '--helo', 'swaks.example', '--from', 'swaks@example.org', '--to', 'x@example.test', '--pipeline', '--header', `X-Nonce: ${++nonce}`],
        { timeout: 20_000 },
      );
      assert.match(stdout, /->\s+BDAT \d+ LAST/);
      assert.match(stdout, /<-\s+250 2\.0\.0 Ok: queued as [0-9A-Z]{20}/);
    });

    test('nodemailer: attachment and UTF-8 subject → 250; the stored .eml carries the subject', async () => {
      const subject = `Grüße – 日本語 ✓ ${++nonce}`;
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port: tg.port, secure: false, ignoreTLS: true, name: 'nodemailer.example' });
      const info = await transport.sendMail({
        from: 'Sender <sender@example.org>',
        to: 'x@example.test',
        subject,
        text: 'see attachment',
        attachments: [{ filename: 'bytes.bin', content: Buffer.from([0, 1, 2, 0xfe, 0xff]) }],
      });
      transport.close();
      assert.match(info.response, /^250 2\.0\.0 Ok: queued as [0-9A-Z]{20}$/);
      assert.deepEqual(info.accepted, ['x@example.test']);
      const id = /queued as (\S+)$/.exec(info.response)![1]!;
      const text = (await stored(tg, id)).eml.toString('utf8');
      const header = /^Subject: (.*(?:\r\n[ \t].*)*)\r\n/m.exec(text);
      assert.ok(header, 'Subject header stored');
      assert.equal(decodeWords(header[1]!), subject);
      assert.match(text, /filename=bytes\.bin/);
      assert.ok(text.includes(Buffer.from([0, 1, 2, 0xfe, 0xff]).toString('base64')), 'attachment content stored');
    });
  });
});

describe('DATA with smtp.bareLineEndings: reject', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startGateway({ smtp: { bareLineEndings: 'reject' }, routes: ROUTES });
  });
  after(() => tg.close());

  test('a bare LF → 554 5.6.0; a bare CR → 554 5.6.0; nothing stored; a clean body is accepted', async () => {
    const c = await open(tg.port);
    expectReply(await rawData(c, message('bare lf', '', 'one\ntwo')), 554, '5.6.0');
    expectReply(await rawData(c, message('bare cr', '', 'one\rtwo')), 554, '5.6.0');
    expectReply(await rawData(c, `Subject: bare lf in header\nX-Nonce: ${++nonce}\r\n\r\nbody`), 554, '5.6.0');
    assert.equal((await listFiles(tg.dataDir)).length, 0, 'nothing stored');
    const ok = await rawData(c, message('clean', '', 'one\r\ntwo'));
    expectReply(ok, 250, '2.0.0');
    queueId(ok);
    c.close();
  });

  test('every reply is US-ASCII (RFC 5321 §2.4: commands and replies are ASCII)', {
  }, async () => {
    const c = await open(tg.port);
    try {
      const replies = [await rawData(c, message('bare lf', '', 'a\nb'))];
      for (const cmd of ['HELP', 'HELP HELO', 'HELP EHLO', 'HELP MAIL', 'VRFY x', 'TURN', 'ETRN example.test', 'XYZZY']) replies.push(await c.cmd(cmd));
      for (const r of replies) assert.match(r.raw, /^[\x00-\x7f]*$/, JSON.stringify(r.raw));
    } finally {
      c.close();
    }
  });
});

describe('STARTTLS, AUTH and ATRN (TLS configured)', () => {
  let tg: TestGateway;
  let mx: number;
  let submission: number;
  const plain = Buffer.from('\0alice\0correct horse').toString('base64');
  before(async () => {
    const hash = await hashPassword('correct horse', { log2N: 10 });
    tg = await startGateway({
      listeners: [
        { name: 'mx', role: 'mx', listen: '127.0.0.1:0' },
        { name: 'submission', role: 'submission', listen: '127.0.0.1:0' },
      ],
      tls: { certificates: [{ cert: fixturePath('tls', 'mx.pem'), key: fixturePath('tls', 'mx-key.pem') }], watch: false },
      auth: { users: [{ username: 'alice', password: hash }] },
      routes: ROUTES,
    });
    [mx, submission] = tg.ports as [number, number];
  });
  after(() => tg.close());

  test('mx: EHLO advertises STARTTLS (RFC 3207), not AUTH; after TLS the same keywords without STARTTLS', async () => {
    const c = await RawSmtp.connect(mx);
    expectReply(await c.read(), 220, null);
    const before = keywords(await c.cmd('EHLO client.example'));
    assert.deepEqual([...before].sort(), [...EXPECTED_KEYWORDS, 'STARTTLS', 'SIZE 26214400'].sort());
    for (const k of before) assert.doesNotMatch(k, NEVER_ADVERTISED);
    await c.startTls();
    const afterTls = keywords(await c.cmd('EHLO client.example'));
    assert.deepEqual([...afterTls].sort(), [...EXPECTED_KEYWORDS, 'SIZE 26214400'].sort());
    // STARTTLS again on a TLS session is refused
    expectReply(await c.cmd('STARTTLS'), 503, '5.5.1');
    c.close();
  });

  test('STARTTLS reply is 220 2.0.0; HELP lists STARTTLS only before TLS', async () => {
    const c = await RawSmtp.connect(mx);
    await c.read();
    await c.cmd('EHLO client.example');
    assert.ok((await c.cmd('HELP')).lines.join(' ').includes('STARTTLS'));
    const r = await c.cmd('STARTTLS');
    expectReply(r, 220, '2.0.0');
    c.close();
  });

  test('commands pipelined after STARTTLS are discarded (RFC 3207 §6): the injected MAIL does not count', async () => {
    const c = await RawSmtp.connect(mx);
    await c.read();
    await c.cmd('EHLO client.example');
    // "STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n" in one write: cork, let startTls()
    // write its STARTTLS line, add the injected command, then flush both together.
    c.socket.cork();
    const upgraded = c.startTls();
    c.write('MAIL FROM:<evil@x.test>\r\n');
    c.socket.uncork();
    await upgraded;
    expectReply(await c.cmd('EHLO client.example'), 250);
    const rcpt = await c.cmd('RCPT TO:<x@example.test>');
    expectReply(rcpt, 503, '5.5.1');
    assert.match(rcpt.text, /MAIL/);
    expectReply(await c.cmd('NOOP'), 250, '2.0.0');
    // and a real transaction works, stored as ESMTPS with the real sender
    const { data } = await sendMail(c, 'good@example.org', ['x@example.test'], message('after injection'));
    expectReply(data!, 250, '2.0.0');
    const { eml } = await stored(tg, queueId(data!));
    assert.match(eml.toString('latin1'), /^Return-Path: <good@example\.org>\r\n[^]*with ESMTPS /);
    c.close();
  });

  test('ATRN: 530 5.7.0 before AUTH (mx and submission), 453 4.3.0 after AUTH (RFC 2645)', async () => {
    const m = await open(mx);
    expectReply(await m.cmd('ATRN'), 530, '5.7.0');
    m.close();

    const c = await open(submission);
    await c.startTls();
    const ehlo = await c.cmd('EHLO client.example');
    assert.ok(keywords(ehlo).includes('AUTH PLAIN LOGIN'), ehlo.raw);
    expectReply(await c.cmd('ATRN'), 530, '5.7.0');
    expectReply(await c.cmd(`AUTH PLAIN ${plain}`), 235, '2.7.0');
    const atrn = await c.cmd('ATRN');
    expectReply(atrn, 453, '4.3.0');
    expectReply(await c.cmd('ATRN example.test'), 453, '4.3.0');
    c.close();
  });

  test('submission: AUTH is not advertised before STARTTLS (RFC 4954 §4, docs/security.md)', {
  }, async () => {
    const c = await RawSmtp.connect(submission);
    await c.read();
    try {
      const kw = keywords(await c.cmd('EHLO laptop.example'));
      assert.ok(kw.includes('STARTTLS'));
      assert.ok(!kw.some((k) => /^AUTH\b/.test(k)), `AUTH advertised in plaintext: ${kw.join(', ')}`);
    } finally {
      c.close();
    }
  });
});

describe('early-talker policy', () => {
  describe('mode "multiline", delay 2 s', () => {
    // 2 s: long enough that "not delayed" below is an ordering (a passed
    // client's greeting before a new client's delayed one), not a bound in ms.
    const DELAY = 2000;
    let tg: TestGateway;
    before(async () => {
      tg = await startGateway({ smtp: { earlyTalker: { mode: 'multiline', delay: DELAY } }, routes: ROUTES });
    });
    after(() => tg.close());

    // Order matters: the pass cache is per client address (all tests use 127.0.0.1).
    test('a client that talks before the final 220 gets 554 5.7.1 and is disconnected; logged', async () => {
      const c = await RawSmtp.connect(tg.port);
      c.write('EHLO spam.example\r\n');
      const r = await c.read();
      // "220-…" was already sent; the final line is the refusal
      assert.match(r.lines[0]!, /^220-mx\.test\.local /);
      expectReply({ ...r, lines: r.lines.slice(-1) }, 554, '5.7.1');
      assert.match(r.text, /talking before the greeting/);
      await c.waitClosed();
      const line = tg.logs.find((l) => typeof l.msg === 'string' && l.msg.includes('talked before the greeting'));
      assert.ok(line, tg.logText());
      assert.equal(line.client, '127.0.0.1');
    });

    test('an honest client reads "220-…" then "220 …" after the delay, and works; its next connection is not delayed', async () => {
      let t0 = process.hrtime.bigint();
      const c = await RawSmtp.connect(tg.port);
      const g = await c.read();
      const first = elapsed(t0);
      expectReply(g, 220);
      assert.equal(g.lines.length, 2);
      assert.match(g.lines[0]!, /^220-mx\.test\.local /);
      assert.match(g.lines[1]!, /^220 mx\.test\.local /);
      assert.ok(first >= DELAY - 50, `first greeting after ${first} ms`);
      expectReply(await c.cmd('EHLO honest.example'), 250);
      const r = await rawData(c, message('honest'));
      expectReply(r, 250, '2.0.0');
      c.close();

      // A new client from another address connects first and gets its
      // "220-" now, its final line only after the delay; the passed client,
      // connecting after it, must have its whole greeting before that line.
      const stranger = await RawSmtp.connect(tg.port, '127.0.0.1', { localAddress: '127.0.0.2' });
      const strangerLines: string[] = [];
      const strangerDone = stranger.read(3 * DELAY + 30_000).then((g) => strangerLines.push(...g.lines));
      t0 = process.hrtime.bigint();
      const again = await RawSmtp.connect(tg.port);
      const g2 = await again.read();
      const second = elapsed(t0);
      expectReply(g2, 220, null);
      assert.equal(g2.lines.length, 1, 'passed clients get the plain one-line greeting');
      assert.deepEqual(strangerLines, [], `the passed client's greeting (after ${second.toFixed(0)} ms) came after the ${DELAY} ms delay of a client that connected before it`);
      again.close();
      stranger.close();
      await strangerDone.catch(() => undefined);
    });
  });

  describe('mode "pause"', () => {
    let tg: TestGateway;
    before(async () => {
      tg = await startGateway({ smtp: { earlyTalker: { mode: 'pause', delay: 300 } }, routes: ROUTES });
    });
    after(() => tg.close());

    test('an early talker gets 554 5.7.1 (and no greeting); an honest client waits for one 220 line', async () => {
      const c = await RawSmtp.connect(tg.port);
      c.write('EHLO spam.example\r\n');
      const r = await c.read();
      expectReply(r, 554, '5.7.1');
      assert.equal(r.lines.length, 1, 'nothing was sent before the refusal');
      await c.waitClosed();

      const t0 = process.hrtime.bigint();
      const h = await RawSmtp.connect(tg.port);
      const g = await h.read();
      const ms = elapsed(t0);
      expectReply(g, 220, null);
      assert.equal(g.lines.length, 1);
      assert.ok(ms >= 250, `greeting after ${ms} ms`);
      h.close();
    });
  });

  describe('mode "off"', () => {
    let tg: TestGateway;
    before(async () => {
      // A delay that mode "off" must ignore, ten minutes long: a greeting at
      // all (within RawSmtp's read timeout) shows it was not applied.
      tg = await startGateway({ smtp: { earlyTalker: { mode: 'off', delay: '10m' } }, routes: ROUTES });
    });
    after(() => tg.close());

    test('the greeting arrives at once (the configured delay is not applied) and a client that talks first is served', async (t) => {
      const t0 = process.hrtime.bigint();
      const c = await RawSmtp.connect(tg.port);
      const g = await c.read();
      const ms = elapsed(t0);
      expectReply(g, 220, null);
      assert.equal(g.lines.length, 1);
      t.diagnostic(`greeting after ${ms.toFixed(1)} ms (the configured delay: 10 min)`);
      c.close();

      const eager = await RawSmtp.connect(tg.port);
      eager.write('EHLO eager.example\r\n');
      expectReply(await eager.read(), 220);
      expectReply(await eager.read(), 250);
      eager.close();
    });
  });
});

describe('connection limits and timeouts', () => {
  test('smtp.maxConnectionsPerIp: 2 → the third concurrent connection gets 421 4.7.0; the slot is freed on close', async () => {
    const tg = await startGateway({ smtp: { maxConnectionsPerIp: 2 }, routes: ROUTES });
    const open2: RawSmtp[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const c = await RawSmtp.connect(tg.port);
        expectReply(await c.read(), 220);
        open2.push(c);
      }
      const third = await RawSmtp.connect(tg.port);
      const r = await third.read();
      expectReply(r, 421, '4.7.0');
      await third.waitClosed();
      assert.ok(tg.logs.some((l) => l.code === 'PG_TOO_MANY_CONNECTIONS'));
      // after one leaves, a new connection is admitted (release is asynchronous:
      // retry, usually once or twice; up to 500 times on a busy machine)
      expectReply(await open2[0]!.cmd('QUIT'), 221, '2.0.0');
      await open2[0]!.waitClosed();
      let admitted: Reply | null = null;
      for (let i = 0; i < 500 && !admitted; i++) {
        const c = await RawSmtp.connect(tg.port);
        const g = await c.read();
        if (g.code === 220) admitted = g;
        else await new Promise((res) => setTimeout(res, 20));
        c.close();
      }
      assert.ok(admitted, 'a slot was freed');
    } finally {
      for (const c of open2) c.close();
      await tg.close();
    }
  });

  test('smtp.maxClients → 421 4.3.2 beyond it; a connection accepted while busy (> 80%) gets smtp.busySocketTimeout', async () => {
    // 1 s: every open session gets the lowered timeout once busy, and the sixth
    // connection must arrive while all five still hold their slots. The
    // normal timeout is 10 minutes, so a 421 within a minute can only be the
    // lowered one, however busy the machine.
    const tg = await startGateway({ smtp: { maxClients: 5, socketTimeout: '10m', busySocketTimeout: 1000 }, routes: ROUTES });
    const conns: RawSmtp[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const c = await RawSmtp.connect(tg.port);
        expectReply(await c.read(), 220);
        conns.push(c);
      }
      const sixth = await RawSmtp.connect(tg.port);
      expectReply(await sixth.read(), 421, '4.3.2');
      await sixth.waitClosed();
      assert.ok(tg.logs.some((l) => l.msg === 'busy: idle timeout lowered'));
      // the 5th was accepted with the gateway busy: idle → 421 after ~1 s, not 10 min.
      // The other four stay active (NOOP every 100 ms, a tenth of the lowered
      // timeout), so the gateway stays busy meanwhile.
      const keepAlive = setInterval(() => {
        for (const c of conns.slice(0, 4)) c.write('NOOP\r\n');
      }, 100);
      const t0 = process.hrtime.bigint();
      try {
        let r = await conns[4]!.read(60_000);
        while (r.code === 250) r = await conns[4]!.read(60_000);
        expectReply(r, 421, '4.4.2');
      } finally {
        clearInterval(keepAlive);
      }
      const ms = elapsed(t0);
      assert.ok(ms < 60_000, `421 after ${ms} ms`);
    } finally {
      for (const c of conns) c.close();
      await tg.close();
    }
  });

  test('busy: sessions that were already idle also get the lowered timeout', async () => {
    // The normal timeout is 10 minutes: a 421 within the read's minute is the lowered one.
    const tg = await startGateway({ smtp: { maxClients: 5, socketTimeout: '10m', busySocketTimeout: 200 }, routes: ROUTES });
    const conns: RawSmtp[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const c = await RawSmtp.connect(tg.port);
        expectReply(await c.read(), 220);
        conns.push(c);
      }
      // the first connection was accepted before the gateway became busy
      expectReply(await conns[0]!.read(60_000), 421, '4.4.2');
    } finally {
      for (const c of conns) c.close();
      await tg.close();
    }
  });

  test('a command line longer than smtp.maxCommandLength (1024) → 421 4.4.2 and close; one under it is fine', async () => {
    const tg = await startGateway({ smtp: { maxCommandLength: 1024 }, routes: ROUTES });
    try {
      const c = await open(tg.port);
      expectReply(await c.cmd(`NOOP ${'x'.repeat(1000)}`), 250, '2.0.0');
      const r = await c.cmd(`NOOP ${'x'.repeat(1100)}`);
      expectReply(r, 421, '4.4.2');
      assert.match(r.text, /too long/i);
      await c.waitClosed();
    } finally {
      await tg.close();
    }
  });

  test('idle timeout: smtp.socketTimeout 300 → 421 4.4.2 after ~300 ms, then close', async () => {
    const tg = await startGateway({ smtp: { socketTimeout: 300 }, routes: ROUTES });
    try {
      const c = await open(tg.port);
      const t0 = process.hrtime.bigint();
      const r = await c.read(60_000);
      const ms = elapsed(t0);
      expectReply(r, 421, '4.4.2');
      assert.match(r.text, /Timeout/);
      // Not before the timeout; and far sooner than the 5-minute default the
      // session would get if the setting were ignored.
      assert.ok(ms >= 250 && ms < 60_000, `timed out after ${ms} ms`);
      await c.waitClosed();
    } finally {
      await tg.close();
    }
  });
});
