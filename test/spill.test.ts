/**
 * Large messages are not held in memory (storage.spillAbove): past the
 * threshold the rest of the message goes to a file under storage.path/incoming
 * while it arrives, targets read it from there, and the file is gone when the
 * transaction ends. The memory budget counts only what is in memory, so a
 * message far larger than limits.memoryBudget is accepted.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { listFiles, startGateway } from './helpers/gateway.js';
import { startReceiver } from './helpers/receiver.js';
import { RawSmtp } from './helpers/smtp-client.js';
import { MessageBytes, SpillBuffer } from '../src/message/bytes.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';

/** A message of about `mib` MiB: headers, then 76-character lines that differ. */
function bigMessage(mib: number, subject: string): Buffer {
  const lines: string[] = [`From: <a@b.example>`, `To: <x@example.test>`, `Subject: ${subject}`, `Message-ID: <${subject}@b.example>`, ''];
  for (let i = 0; lines.length * 78 < mib * 1024 * 1024; i++) lines.push(`${i.toString(36).padStart(8, '0')} ${'0123456789abcdef'.repeat(5)}`.slice(0, 76));
  return Buffer.from(`${lines.join('\r\n')}\r\n`, 'latin1');
}

async function sendRaw(port: number, message: Buffer, during?: () => Promise<void>): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    await c.cmd('EHLO client.test');
    assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 250);
    assert.equal((await c.cmd('RCPT TO:<x@example.test>')).code, 250);
    assert.equal((await c.cmd('DATA')).code, 354);
    const half = Math.floor(message.length / 2);
    c.write(message.subarray(0, half));
    if (during) await during();
    c.write(message.subarray(half));
    return (await c.cmd('.')).raw;
  } finally {
    c.close();
  }
}

describe('large messages spill to disk (storage.spillAbove)', () => {
  test('a 24 MiB message with an 8 MiB memory budget: accepted, stored and posted whole; the spill file exists during DATA and is gone after', async () => {
    const hook = await startReceiver(() => ({ status: 204 }));
    const tg = await startGateway({
      smtp: { maxMessageSize: '40MiB' },
      storage: { spillAbove: '1MiB' },
      limits: { memoryBudget: '8MiB' },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }, { type: 'local', id: 'archive' }] }],
    });
    try {
      const message = bigMessage(24, 'spilled');
      const incoming = path.join(tg.dataDir, 'incoming');
      let seen: string[] = [];
      const reply = await sendRaw(tg.port, message, async () => {
        const until = Date.now() + 10_000;
        while (Date.now() < until && seen.length === 0) {
          seen = await readdir(incoming);
          if (seen.length === 0) await new Promise((r) => setTimeout(r, 20));
        }
      });
      assert.match(reply, /^250 /, 'accepted although the message is 3× the memory budget');
      assert.equal(seen.length, 1, 'the part past spillAbove was in a file while the message arrived');
      assert.deepEqual(await readdir(incoming), [], 'the spill file is deleted when the transaction ends');
      const event = JSON.parse(hook.got[0]!.body.toString('utf8'));
      assert.equal(event.data.raw.size, message.length);
      assert.equal(event.data.raw.sha256, createHash('sha256').update(message).digest('hex'));
      assert.equal(event.data.subject, 'spilled');
      const emls = (await listFiles(tg.dataDir)).filter((f) => f.endsWith('.eml'));
      assert.equal(emls.length, 1);
      const stored = await readFile(path.join(tg.dataDir, emls[0]!));
      // trace headers first, then exactly the bytes as received
      assert.match(stored.subarray(0, 200).toString('latin1'), /^Return-Path: <a@b\.example>\r\nReceived: /);
      assert.ok(stored.subarray(stored.length - message.length).equals(message), 'the stored .eml ends with the message as received');
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('a message that is refused after spilling (target 550) leaves no spill file', async () => {
    const hook = await startReceiver(() => ({ status: 422, json: { action: 'reject', message: 'no thanks' } }));
    const tg = await startGateway({
      smtp: { maxMessageSize: '10MiB' },
      storage: { spillAbove: '1MiB' },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }],
    });
    try {
      const reply = await sendRaw(tg.port, bigMessage(3, 'refused'));
      assert.match(reply, /^5\d\d /);
      assert.deepEqual(await readdir(path.join(tg.dataDir, 'incoming')), []);
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('MessageBytes: slices, prefixes, streams and reads back across memory and file segments', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-spill-'));
    try {
      const sb = new SpillBuffer(dir, 'm', 10);
      const parts = ['Subject: x', '\r\n\r\n', 'body that ', 'goes to the file', '\r\n'].map((t) => Buffer.from(t));
      for (const p of parts) sb.write(p);
      const whole = Buffer.concat(parts);
      const bytes = await sb.end();
      assert.equal(bytes.size, whole.length);
      assert.equal(bytes.spilled, true);
      assert.ok((await bytes.buffer()).equals(whole));
      const streamed: Buffer[] = [];
      for await (const c of bytes.stream()) streamed.push(c as Buffer);
      assert.ok(Buffer.concat(streamed).equals(whole));
      const pre = bytes.prepend(Buffer.from('Received: y\r\n'));
      assert.equal((await pre.buffer()).toString(), `Received: y\r\n${whole.toString()}`);
      for (const at of [0, 3, 10, 14, 20, whole.length]) assert.ok((await bytes.slice(at).buffer()).equals(whole.subarray(at)), `slice(${at})`);
      assert.equal((await bytes.readHead(16)).toString(), whole.subarray(0, 16).toString());
      assert.equal(MessageBytes.of(whole).headerBlock(1024).toString(), 'Subject: x\r\n\r\n');
      await sb.discard();
      assert.deepEqual(await readdir(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
