/**
 * Claim check with the local blob store: an attachment over blobs.inlineLimit
 * leaves the event as a signed, expiring link served by the HTTP endpoint;
 * the link serves the same bytes and refuses a tampered or expired one.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { once } from 'node:events';
import nodemailer from 'nodemailer';
import { startGateway } from './helpers/gateway.js';

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
});
