/**
 * Claim check with the local blob store: an attachment over blobs.inlineLimit
 * leaves the event as a signed, expiring link served by the HTTP endpoint;
 * the link serves the same bytes and refuses a tampered or expired one.
 * Large text/HTML bodies and the raw message (blobs.raw) go the same way;
 * expired blobs are swept from the disk.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { once } from 'node:events';
import nodemailer from 'nodemailer';
import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { listFiles, startGateway, type TestGateway } from './helpers/gateway.js';
import { RawSmtp } from './helpers/smtp-client.js';
import { LocalBlobStore } from '../src/blob/local.js';

/** A webhook receiver collecting parsed events. */
async function collectingHook(): Promise<{ url: string; events: Array<Record<string, any>>; close(): void }> {
  const events: Array<Record<string, any>> = [];
  const hook = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      events.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      res.writeHead(204).end();
    });
  });
  hook.listen(0, '127.0.0.1');
  await once(hook, 'listening');
  return { url: `http://127.0.0.1:${(hook.address() as { port: number }).port}/`, events, close: () => hook.close() };
}

/** Sends `message` (CRLF lines, no dot-stuffing needed) over raw SMTP; returns the DATA reply code. */
async function sendRaw(tg: TestGateway, message: string): Promise<number> {
  const c = await RawSmtp.connect(tg.port);
  try {
    await c.read();
    await c.cmd('EHLO client.test');
    assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<x@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    return (await c.cmd(`${message}.`)).code;
  } finally {
    c.close();
  }
}

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

describe('claim check (local blob store)', () => {
  test('a large attachment becomes a signed link with the same bytes; small ones stay inline', async () => {
    const events: Array<Record<string, any>> = [];
    const hook = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        events.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        res.writeHead(204).end();
      });
    });
    hook.listen(0, '127.0.0.1');
    await once(hook, 'listening');
    let clock = Date.now();
    const tg = await startGateway(
      {
        blobs: { inlineLimit: '64KiB', ttl: '1h', signingKey: 'test-signing-key' },
        routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: `http://127.0.0.1:${(hook.address() as { port: number }).port}/` }] }],
      },
      { now: () => clock },
    );
    try {
      const big = Buffer.alloc(300 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
      const small = Buffer.from('small attachment text');
      await nodemailer.createTransport({ host: '127.0.0.1', port: tg.port, secure: false, ignoreTLS: true }).sendMail({
        from: 'a@b.example',
        to: 'x@example.test',
        subject: 'claim check',
        text: 'see attached',
        attachments: [
          { filename: 'big.bin', content: big, contentType: 'application/octet-stream' },
          { filename: 'small.txt', content: small, contentType: 'text/plain' },
        ],
      });
      assert.equal(events.length, 1);
      const atts = events[0]!.data.attachments as Array<Record<string, any>>;
      const bigAtt = atts.find((a) => a.filename === 'big.bin')!;
      const smallAtt = atts.find((a) => a.filename === 'small.txt')!;
      assert.equal(smallAtt.content, small.toString('base64'));
      assert.equal(bigAtt.content, undefined, 'not inlined');
      assert.equal(bigAtt.size, big.length);
      assert.equal(bigAtt.sha256, createHash('sha256').update(big).digest('hex'));
      assert.match(bigAtt.url, new RegExp(`^http://127\\.0\\.0\\.1:${tg.opsPort}/blobs/[0-9a-f]{32}\\?exp=\\d+&sig=`));
      const exp = Number(new URL(bigAtt.url).searchParams.get('exp'));
      assert.equal(new Date(bigAtt.expiresAt).getTime(), exp * 1000, 'expiresAt is the real expiry');
      assert.ok(Math.abs(exp * 1000 - (clock + 3600_000)) < 2000);
      assert.ok(JSON.stringify(events[0]).length < 64 * 1024, 'the event stays small');

      const got = await fetch(bigAtt.url);
      assert.equal(got.status, 200);
      assert.equal(got.headers.get('content-type'), 'application/octet-stream');
      const bytes = Buffer.from(await got.arrayBuffer());
      assert.equal(createHash('sha256').update(bytes).digest('hex'), bigAtt.sha256);

      const u = new URL(bigAtt.url);
      const tampered = new URL(u);
      tampered.searchParams.set('exp', String(exp + 3600));
      assert.equal((await fetch(tampered)).status, 403, 'a longer expiry invalidates the signature');
      const otherId = new URL(u);
      otherId.pathname = `/blobs/${'0'.repeat(32)}`;
      assert.equal((await fetch(otherId)).status, 403, 'the signature binds the id');
      const badSig = new URL(u);
      badSig.searchParams.set('sig', 'AAAA');
      assert.equal((await fetch(badSig)).status, 403);
      clock += 2 * 3600_000;
      assert.equal((await fetch(bigAtt.url)).status, 410, 'expired');
    } finally {
      await tg.close();
      hook.close();
    }
  });

  test('blobs.raw: a small message travels inline, a large one is stored while it arrives; both equal the bytes sent', async () => {
    const hook = await collectingHook();
    const tg = await startGateway({
      blobs: { raw: true, rawInlineLimit: '8KiB', signingKey: 'k' },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const small = 'From: a@b.example\r\nTo: x@example.test\r\nSubject: small\r\n\r\nshort body\r\n';
      const line = 'y'.repeat(76);
      const large = `From: a@b.example\r\nTo: x@example.test\r\nSubject: large\r\n\r\n${Array.from({ length: 3000 }, (_, i) => `${i} ${line}`).join('\r\n')}\r\n`;
      assert.equal(await sendRaw(tg, small), 250);
      assert.equal(await sendRaw(tg, large), 250);
      assert.equal(hook.events.length, 2);
      const [a, b] = hook.events.map((e) => e.data.raw as Record<string, any>);
      assert.equal(Buffer.from(a!.content, 'base64').toString('latin1'), small, 'inline raw is the message as received');
      assert.equal(a!.url, undefined);
      assert.equal(a!.sha256, sha256(small));
      assert.equal(b!.content, undefined, 'over rawInlineLimit: not inline');
      assert.equal(b!.size, Buffer.byteLength(large));
      assert.equal(b!.sha256, sha256(large));
      assert.match(b!.url, /\/blobs\/[0-9a-f]{32}\?exp=\d+&sig=/);
      assert.equal(Date.parse(b!.expiresAt), Number(new URL(b!.url).searchParams.get('exp')) * 1000);
      const got = await fetch(b!.url);
      assert.equal(got.status, 200);
      assert.equal(got.headers.get('content-type'), 'message/rfc822');
      assert.equal(sha256(Buffer.from(await got.arrayBuffer())), b!.sha256, 'the stored raw message is the bytes as received');
      // the text body is inline (under bodyInlineLimit); without it the event is small: no copy of the raw message
      const { text: _t, strippedText: _s, ...rest } = hook.events[1]!.data as Record<string, unknown>;
      assert.ok(JSON.stringify(rest).length < 16 * 1024, 'the large raw message is not in the event');
    } finally {
      await tg.close();
      hook.close();
    }
  });

  test('blobs.raw: a transaction the client abandons mid-DATA leaves no blob behind', async () => {
    const hook = await collectingHook();
    const tg = await startGateway({
      blobs: { raw: true, rawInlineLimit: '1KiB', signingKey: 'k' },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client.test');
      await c.cmd('MAIL FROM:<a@b.example>');
      await c.cmd('RCPT TO:<x@example.test>');
      assert.equal((await c.cmd('DATA')).code, 354);
      c.write(`Subject: cut\r\n\r\n${'z'.repeat(200_000)}\r\n`);
      // the upload has started (over the 1 KiB limit); now the client vanishes
      const blobDir = path.join(tg.dataDir, 'blobs');
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && !(await readdir(blobDir).catch(() => [] as string[])).some((n) => n.endsWith('.tmp'))) await new Promise((r) => setTimeout(r, 20));
      assert.ok((await readdir(blobDir)).some((n) => n.endsWith('.tmp')), 'the raw upload was under way during DATA');
      c.socket.destroy();
      const until = Date.now() + 5000;
      let left = await readdir(blobDir);
      while (left.length > 0 && Date.now() < until) {
        await new Promise((r) => setTimeout(r, 20));
        left = await readdir(blobDir);
      }
      assert.deepEqual(left, [], 'the partial raw blob was discarded');
      assert.equal(hook.events.length, 0);
    } finally {
      await tg.close();
      hook.close();
    }
  });

  test('text and HTML bodies over blobs.bodyInlineLimit leave the event as links with the same UTF-8 bytes; small bodies stay inline', async () => {
    const hook = await collectingHook();
    const tg = await startGateway({
      blobs: { bodyInlineLimit: '32KiB', signingKey: 'k' },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const html = `<html><body>${Array.from({ length: 2000 }, (_, i) => `<p>Zeile ${i}: grüße, ✓</p>`).join('\n')}</body></html>`;
      const text = 'Thanks!\n\nOn Mon, Jan 1, 2024 at 10:00 AM Bob <bob@example.test> wrote:\n> earlier\n';
      const mailer = nodemailer.createTransport({ host: '127.0.0.1', port: tg.port, secure: false, ignoreTLS: true });
      await mailer.sendMail({ from: 'a@b.example', to: 'x@example.test', subject: 'big html', text, html });
      const bigText = `${'Lorem ipsum dolor sit amet — ünïcödé. '.repeat(2000)}\n\n-- \nsig\n`;
      await mailer.sendMail({ from: 'a@b.example', to: 'x@example.test', subject: 'big text', text: bigText });
      assert.equal(hook.events.length, 2);
      const first = hook.events[0]!.data;
      assert.equal(first.html, null);
      assert.equal(first.text, text, 'the small text body stays inline');
      assert.equal(first.textBlob, null);
      assert.equal(first.strippedText, 'Thanks!');
      const hb = first.htmlBlob as Record<string, any>;
      const want = Buffer.from(html, 'utf8');
      assert.equal(hb.size, want.length);
      assert.equal(hb.sha256, sha256(want));
      const got = await fetch(hb.url);
      assert.equal(got.status, 200);
      assert.match(got.headers.get('content-type') ?? '', /^text\/html; charset=utf-8$/);
      assert.equal(Buffer.from(await got.arrayBuffer()).toString('utf8'), html);
      const second = hook.events[1]!.data;
      assert.equal(second.text, null);
      assert.equal(second.html, null);
      assert.equal(second.htmlBlob, null, 'no html part, no link');
      const tb = second.textBlob as Record<string, any>;
      const textGot = Buffer.from(await (await fetch(tb.url)).arrayBuffer()).toString('utf8');
      assert.equal(textGot, bigText.replace(/\r\n/g, '\n'));
      assert.equal(tb.sha256, sha256(textGot));
      assert.equal(second.strippedText, null, 'the stripped reply is itself over the limit');
      assert.ok(JSON.stringify(hook.events[1]).length < 8 * 1024);
    } finally {
      await tg.close();
      hook.close();
    }
  });

  test('sweep: blobs whose links expired are deleted, fresh ones and writes in progress are kept', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-blobs-'));
    let clock = Date.now();
    const store = new LocalBlobStore({ dir, publicUrl: () => 'http://127.0.0.1:1', signingKey: Buffer.from('k'), ttlMs: 3_600_000, now: () => clock });
    try {
      const old = await store.put('attachment', { filename: 'old.bin', contentType: 'application/octet-stream' }, Readable.from([Buffer.from('old')]));
      const oldId = new URL(old.url).pathname.split('/').pop()!;
      // age the first blob by two hours (what its mtime would say after that long)
      const past = new Date(clock - 2 * 3_600_000);
      await utimes(path.join(dir, oldId), past, past);
      const fresh = await store.put('attachment', { filename: 'new.bin', contentType: 'application/octet-stream' }, Readable.from([Buffer.from('new')]));
      const freshId = new URL(fresh.url).pathname.split('/').pop()!;
      await writeFile(path.join(dir, `${'a'.repeat(32)}.tmp`), 'partial, in progress');
      await writeFile(path.join(dir, `${'b'.repeat(32)}.tmp`), 'partial, crash leftover');
      await utimes(path.join(dir, `${'b'.repeat(32)}.tmp`), past, past);
      const r = await store.sweep();
      assert.deepEqual(r, { removed: 1, bytes: 3 });
      assert.deepEqual(await listFiles(dir), [`${'a'.repeat(32)}.tmp`, freshId, `${freshId}.meta`].sort());
      // the fresh one goes once its own links have expired (and the partial
      // write, an hour old by then, counts as a crash leftover)
      clock += 3_600_000 + 2000;
      assert.equal((await store.sweep()).removed, 1);
      assert.deepEqual(await listFiles(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
