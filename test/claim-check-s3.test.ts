/**
 * Claim check on S3, end to end against a local S3-compatible server
 * (fauxqs): a large attachment is uploaded, the event links it with a
 * presigned URL that downloads the same bytes, and its expiresAt is the
 * link's real expiry (blobs.ttl, at most 7 days). A 413 pointer goes through
 * the same store.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import nodemailer from 'nodemailer';
import { startGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { startS3, type LocalS3 } from './helpers/aws.js';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { validateConfig } from '../src/config/load.js';

describe('claim check on S3 (fauxqs)', () => {
  let s3: LocalS3;
  before(async () => {
    s3 = await startS3();
    await s3.createBucket('blobs');
  });
  after(async () => {
    await s3.stop();
  });

  const store = () => ({ type: 's3', bucket: 'blobs', prefix: 'claim/', endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true });

  test('a large attachment: object present, sha256 matches, the presigned URL downloads the same bytes; expiresAt is the real expiry', async () => {
    const events: Array<Record<string, any>> = [];
    const hook: Receiver = await startReceiver((r) => {
      events.push(JSON.parse(r.body.toString('utf8')));
      return { status: 204 };
    });
    // http: false — the S3 store needs no endpoint of ours
    const tg = await startGateway({ http: false, blobs: { inlineLimit: '64KiB', ttl: '30d', store: store() }, routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }] });
    try {
      const big = Buffer.alloc(700 * 1024);
      for (let i = 0; i < big.length; i++) big[i] = (i * 131 + 17) & 0xff;
      const started = Date.now();
      await nodemailer.createTransport({ host: '127.0.0.1', port: tg.port, secure: false, ignoreTLS: true }).sendMail({
        from: 'a@b.example',
        to: 'x@example.test',
        subject: 's3 claim check',
        text: 'attached',
        attachments: [{ filename: 'report ü.bin', content: big, contentType: 'application/octet-stream' }],
      });
      assert.equal(events.length, 1);
      const att = (events[0]!.data.attachments as Array<Record<string, any>>).find((a) => a.filename === 'report ü.bin')!;
      assert.equal(att.content, undefined);
      assert.equal(att.size, big.length);
      assert.equal(att.sha256, createHash('sha256').update(big).digest('hex'));
      const url = new URL(att.url);
      assert.equal(url.origin, s3.endpoint);
      assert.match(url.pathname, /^\/blobs\/claim\/\d{4}\/\d{2}\/\d{2}\/attachment-[0-9a-f]{32}$/);
      assert.equal(url.searchParams.get('X-Amz-Algorithm'), 'AWS4-HMAC-SHA256');
      // ttl 30 days is capped by SigV4's 7 days, and expiresAt says so
      assert.equal(url.searchParams.get('X-Amz-Expires'), String(7 * 86_400));
      const exp = Date.parse(att.expiresAt);
      assert.ok(Math.abs(exp - (started + 7 * 86_400_000)) < 60_000, att.expiresAt);
      const head = await s3.client.send(new HeadObjectCommand({ Bucket: 'blobs', Key: url.pathname.slice('/blobs/'.length) }));
      assert.equal(head.ContentLength, big.length);
      assert.equal(head.ContentType, 'application/octet-stream');
      const got = await fetch(att.url);
      assert.equal(got.status, 200);
      const bytes = Buffer.from(await got.arrayBuffer());
      assert.equal(createHash('sha256').update(bytes).digest('hex'), att.sha256);
      assert.ok(bytes.equals(big));
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('a 413 pointer through the S3 store: the link serves the whole event', async () => {
    const hook = await startReceiver((_r, n) => (n === 1 ? { status: 413 } : { status: 204 }));
    const tg = await startGateway({ http: false, blobs: { ttl: '1h', store: store() }, routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }] });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO c.example');
      const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], simpleMessage('pointer via s3'));
      c.close();
      assert.equal(data?.code, 250);
      const ptr = JSON.parse(hook.got[1]!.body.toString('utf8'));
      assert.equal(ptr.type, 'email.received.pointer');
      assert.equal(new URL(ptr.data.event.url).searchParams.get('X-Amz-Expires'), '3600');
      const fetched = Buffer.from(await (await fetch(ptr.data.event.url)).arrayBuffer());
      assert.ok(fetched.equals(hook.got[0]!.body));
      assert.equal(createHash('sha256').update(fetched).digest('hex'), ptr.data.event.sha256);
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('S3 unreachable while storing an attachment: the message is deferred (451), never delivered without it', async () => {
    const hook = await startReceiver(() => ({ status: 204 }));
    const tg = await startGateway({
      http: false,
      blobs: { inlineLimit: '1KiB', store: { ...store(), endpoint: 'http://127.0.0.1:9' } },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO c.example');
      const att = Buffer.alloc(4096, 1).toString('base64').replace(/.{76}/g, '$&\r\n');
      const body = `From: <a@b.example>\r\nSubject: att\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\n${att}\r\n--b--\r\n`;
      const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], body);
      c.close();
      assert.equal(data?.code, 451);
      assert.equal(hook.got.length, 0);
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('blobs.raw on S3: a 6 MiB message is streamed to the bucket as it arrives (multipart); object and presigned URL hold the bytes as received', async () => {
    const hook = await startReceiver(() => ({ status: 204 }));
    const tg = await startGateway({
      http: false,
      smtp: { maxMessageSize: '20MiB' },
      blobs: { raw: true, rawInlineLimit: '64KiB', store: store() },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO c.example');
      const line = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABCDEFGHIJKL';
      const lines: string[] = [];
      for (let i = 0; lines.length * 78 < 6 * 1024 * 1024; i++) lines.push(`${i.toString(36)}${line}`.slice(0, 76));
      const body = `From: <a@b.example>\r\nTo: <x@example.test>\r\nSubject: big raw\r\n\r\n${lines.join('\r\n')}\r\n`;
      const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], body);
      c.close();
      assert.equal(data?.code, 250);
      const raw = JSON.parse(hook.got[0]!.body.toString('utf8')).data.raw as Record<string, any>;
      const want = Buffer.from(body, 'latin1');
      assert.equal(raw.size, want.length);
      assert.equal(raw.sha256, createHash('sha256').update(want).digest('hex'));
      assert.equal(raw.content, undefined);
      const url = new URL(raw.url);
      assert.match(url.pathname, /^\/blobs\/claim\/\d{4}\/\d{2}\/\d{2}\/raw-[0-9a-f]{32}$/);
      const head = await s3.client.send(new HeadObjectCommand({ Bucket: 'blobs', Key: url.pathname.slice('/blobs/'.length) }));
      assert.equal(head.ContentLength, want.length);
      assert.equal(head.ContentType, 'message/rfc822');
      const got = Buffer.from(await (await fetch(raw.url)).arrayBuffer());
      assert.ok(got.equals(want), 'the presigned URL serves the message as received');
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('blobs.raw with S3 unreachable: the message is deferred (451), never delivered without its raw link', async () => {
    const hook = await startReceiver(() => ({ status: 204 }));
    const tg = await startGateway({
      http: false,
      blobs: { raw: true, rawInlineLimit: '1KiB', store: { ...store(), endpoint: 'http://127.0.0.1:9' } },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO c.example');
      const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], simpleMessage('raw', 'x'.repeat(4000)));
      c.close();
      assert.equal(data?.code, 451);
      assert.equal(hook.got.length, 0);
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('config: bucket and store type are validated', () => {
    assert.throws(() => validateConfig({ blobs: { store: { type: 's3' } } }), /blobs\.store\.bucket/);
    assert.throws(() => validateConfig({ blobs: { store: { type: 'gcs' } } }), /blobs\.store/);
  });
});
