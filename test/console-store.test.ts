/**
 * The console's storage (docs/decisions.md, "The console's database"): one
 * stored copy per message that gives back the .eml and the event byte for
 * byte, the copy log's segments (rotation, removal, zeroing, what a crash
 * leaves), search keys held in memory and built again from the records when
 * the index opens, an index written by an earlier layout read after a
 * migration, retention that runs as soon as the copies pass maxBytes, and
 * the .eml of a message large enough to be spilled to disk while it arrived.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { open } from 'lmdb';
import pino from 'pino';
import { copyEvent, copyRaw, encodeCopy } from '../src/console/copy.js';
import { SearchKeys } from '../src/console/keys.js';
import { ConsoleService } from '../src/console/store.js';
import { fixtureMessage } from './helpers/console-fixtures.js';
import { waitFor } from './helpers/wait.js';
import { startGateway } from './helpers/gateway.js';
import { startReceiver } from './helpers/receiver.js';
import { sendOne } from './helpers/smtp-client.js';
import { browserSession, consoleRequest } from './helpers/console.js';
import { appendFile, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import type { MessageDetail } from '../src/console/types.js';
import type { StoredMessage } from '../src/console/db.js';
import { CopyLog } from '../src/console/log.js';

const quiet = pino({ level: 'silent' });

function service(dir: string, maxBytes = Number.MAX_SAFE_INTEGER) {
  return new ConsoleService({ dir, retention: { days: 365, maxBytes }, sweepIntervalMs: 3_600_000, now: Date.now, logger: quiet, sweepChunk: 10 });
}

/** An event as message/schema.ts orders its keys around the bodies. */
function eventJson(text: string | null, strippedText: string | null, html: string | null = null): Buffer {
  return Buffer.from(
    JSON.stringify({
      type: 'email.received',
      data: { id: 'X', headers: [{ name: 'Subject', value: 'text, "strippedText": and so on' }], text, textSource: text === null ? null : 'text', textBlob: null, html, htmlBlob: null, strippedText, strippedSignature: null, strippedHtml: null, attachments: [] },
    }),
  );
}

describe('the stored copy', () => {
  const raw = Buffer.from('Subject: hi\r\n\r\nbody\r\n');
  const long = 'Hello,\n"quoted", a comma, and a backslash \\ and ümlauts\n'.repeat(40);
  const cases: Array<[string, Buffer, boolean]> = [
    ['strippedText equal to text', eventJson(long, long), true],
    ['strippedText the start of text (trailing blank lines trimmed)', eventJson(`${long}\n\n`, long), true],
    ['strippedText shorter than its reply (quote removed)', eventJson(`${long}> old\n> quoted\n`, long), true],
    ['strippedText different', eventJson(long, `Other ${long}`), false],
    ['no text', eventJson(null, null, '<p>hi</p>'), false],
    ['a short text', eventJson('hi', 'hi'), false],
    ['text ending in a backslash and a quote', eventJson(`${long}\\"`, `${long}\\"`), true],
  ];
  for (const [name, ev, smaller] of cases) {
    test(`${name}: both read back byte for byte`, () => {
      const stored = encodeCopy([raw.subarray(0, 5), raw.subarray(5)], raw.length, ev);
      assert.ok(copyRaw(stored)!.equals(raw));
      assert.ok(copyEvent(stored)!.equals(ev), 'the event as its targets got it');
      if (smaller) assert.ok(stored.length < raw.length + ev.length - 1000, `${stored.length} bytes stored for ${raw.length + ev.length}`);
      else assert.equal(stored.length, 17 + raw.length + ev.length);
    });
  }
  test('a message without an event, and an event without a message', () => {
    assert.equal(copyEvent(encodeCopy([raw], raw.length, null)), null);
    const ev = eventJson(long, long);
    const stored = encodeCopy([], 0, ev);
    assert.equal(copyRaw(stored), null);
    assert.ok(copyEvent(stored)!.equals(ev));
  });
});

describe('search keys', () => {
  test('ids come back newest first within bounds, whatever order they were added in', () => {
    const k = new SearchKeys();
    for (const id of ['A05', 'A01', 'A03', 'A02', 'A04', 'A03']) k.add(id, [['r', 'x@example.test']]);
    assert.deepEqual([...k.below('r', 'x@example.test', '\u{10ffff}', '')], ['A05', 'A04', 'A03', 'A02', 'A01']);
    assert.deepEqual([...k.below('r', 'x@example.test', 'A04', 'A02')], ['A03', 'A02']);
    assert.deepEqual([...k.below('f', 'x@example.test', '\u{10ffff}', '')], [], 'kinds are apart');
    k.remove([{ id: 'A01', keys: [['r', 'x@example.test']] }, { id: 'A02', keys: [['r', 'x@example.test']] }]);
    k.remove([{ id: 'A04', keys: [['r', 'x@example.test']] }]);
    assert.deepEqual([...k.below('r', 'x@example.test', '\u{10ffff}', '')], ['A05', 'A03']);
    k.remove([{ id: 'A05', keys: [['r', 'x@example.test']] }, { id: 'A03', keys: [['r', 'x@example.test']] }]);
    assert.deepEqual([...k.below('r', 'x@example.test', '\u{10ffff}', '')], []);
  });

  test('after a restart the searches answer as before; removed messages are not found', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-'));
    try {
      const now = Date.now() - 3_600_000;
      const svc = service(dir);
      for (let i = 0; i < 60; i++) svc.received(fixtureMessage(now + i * 1000, i % 3 === 0 ? 7 : i, 512));
      svc.flush();
      const byRcpt = (await svc.list({ rcpt: 'USER7@example.test', limit: 500 })).items.map((m) => m.id);
      const bySender = (await svc.list({ from: 'sender7@example.org', limit: 500 })).items.map((m) => m.id);
      assert.equal(byRcpt.length, 21);
      assert.ok(bySender.length >= 21);
      await svc.close();

      const again = service(dir);
      try {
        assert.deepEqual((await again.list({ rcpt: 'user7@example.test', limit: 500 })).items.map((m) => m.id), byRcpt);
        assert.deepEqual((await again.list({ from: 'sender7@example.org', limit: 500 })).items.map((m) => m.id), bySender);
        // Pages of 5 walk the same ids.
        const walked: string[] = [];
        let cursor: string | undefined;
        do {
          const page = await again.list({ rcpt: 'user7@example.test', limit: 5, ...(cursor ? { cursor } : {}) });
          walked.push(...page.items.map((m) => m.id));
          cursor = page.next ?? undefined;
        } while (cursor);
        assert.deepEqual(walked, byRcpt);
        assert.equal((await again.remove(byRcpt[0]!)).ok, true);
        assert.deepEqual((await again.list({ rcpt: 'user7@example.test', limit: 500 })).items.map((m) => m.id), byRcpt.slice(1));
      } finally {
        await again.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

test('an index of an earlier layout (copies in the index as two values, keys stored) is read after its migration', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-'));
  try {
    // Written by the current code, then put back into the earlier layout with LMDB itself.
    const svc = service(dir);
    const m = fixtureMessage(Date.now() - 60_000, 1, 1024);
    svc.received(m);
    svc.flush();
    const eventJson = (await svc.event(m.queueId))!;
    const chunks: Buffer[] = [];
    for await (const c of (await svc.raw(m.queueId))!) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    await svc.close();
    const env = open({ path: dir, maxDbs: 8, compression: false });
    const messages = env.openDB<StoredMessage, string>({ name: 'messages', sharedStructuresKey: Symbol.for('structures') });
    const copies = env.openDB<Buffer, string>({ name: 'copies', encoding: 'binary' });
    const keys = env.openDB<Buffer, string[]>({ name: 'keys', encoding: 'binary' });
    const meta = env.openDB<number, string>({ name: 'meta' });
    const rec = messages.get(m.queueId)!;
    assert.ok(rec.at, 'the current layout keeps the copy in the log');
    delete rec.at;
    await env.transaction(() => {
      messages.put(m.queueId, rec);
      copies.put(`${m.queueId}\0raw`, raw);
      copies.put(`${m.queueId}\0event`, eventJson);
      keys.put(['r', 'user1@example.test', m.queueId], Buffer.alloc(0));
      meta.remove('copyFormat');
      meta.remove('seg:1');
    });
    await env.close();
    await rm(path.join(dir, 'copies'), { recursive: true });

    const again = service(dir);
    try {
      assert.deepEqual(again.check(), []);
      assert.ok((await again.event(m.queueId))!.equals(m.eventJson!));
      const read: Buffer[] = [];
      for await (const c of (await again.raw(m.queueId))!) read.push(c as Buffer);
      assert.ok(Buffer.concat(read).equals(await m.message!.buffer()));
      assert.deepEqual((await again.list({ rcpt: 'user1@example.test' })).items.map((x) => x.id), [m.queueId]);
      // A message of the earlier layout and one of the current go alike.
      const later = fixtureMessage(Date.now() - 30_000, 2, 1024);
      again.received(later);
      assert.equal((await again.remove(m.queueId)).ok, true);
      assert.equal((await again.remove(later.queueId)).ok, true);
      assert.deepEqual(again.check(), []);
      assert.deepEqual(again.stats(), { messages: 0, bytes: 0 });
    } finally {
      await again.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

describe('the copy log', () => {
  function logService(dir: string, segmentBytes: number) {
    return new ConsoleService({ dir, retention: { days: 365, maxBytes: Number.MAX_SAFE_INTEGER }, sweepIntervalMs: 3_600_000, now: Date.now, logger: quiet, segmentBytes });
  }
  const segmentFiles = async (dir: string) => (await readdir(path.join(dir, 'copies'))).filter((n) => /^\d{8}\.log$/.test(n)).sort();
  const spareFiles = async (dir: string) => (await readdir(path.join(dir, 'copies'))).filter((n) => n.startsWith('spare-')).sort();

  test('segments fill in turn; a removed message is zeroed; a segment is retired with its last message and written over as the next', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-'));
    try {
      const svc = logService(dir, 8 * 1024);
      try {
        const now = Date.now() - 3_600_000;
        const ms = Array.from({ length: 12 }, (_, i) => fixtureMessage(now + i * 1000, i, 4096));
        // Batches of two messages, about 9 KB: each closes its 8 KiB segment.
        for (let i = 0; i < ms.length; i++) {
          svc.received(ms[i]!);
          if (i % 2 === 1) svc.flush();
        }
        const before = await segmentFiles(dir);
        assert.equal(before.length, 7, `a segment per batch and the new one (${before.join(', ')})`);
        assert.deepEqual(svc.check(), []);
        for (const m of ms) assert.ok((await svc.event(m.queueId))!.equals(m.eventJson!), `the event of ${m.queueId}`);

        // One message of the first segment goes: its bytes are zeros on disk, the segment stays for its other message.
        const first = path.join(dir, 'copies', before[0]!);
        const own = Buffer.from(`Subject: fixture 0\r\n`); // its .eml's alone (the event has no CRLF)
        assert.ok((await readFile(first)).includes(own), 'the .eml is in the segment');
        assert.ok((await readFile(first)).includes(ms[0]!.eventJson!), 'and its event');
        assert.equal((await svc.remove(ms[0]!.queueId)).ok, true);
        assert.ok(!(await readFile(first)).includes(own), 'the removed .eml is gone from the segment');
        assert.ok(!(await readFile(first)).includes(ms[0]!.eventJson!), 'and its event');
        assert.equal(await svc.event(ms[0]!.queueId), null);
        assert.ok((await svc.event(ms[1]!.queueId))!.equals(ms[1]!.eventJson!), 'its neighbour still reads');
        assert.deepEqual(await segmentFiles(dir), before);

        // Its other message goes: the segment is retired, a spare of zeros.
        assert.equal((await svc.remove(ms[1]!.queueId)).ok, true);
        assert.deepEqual(await segmentFiles(dir), before.slice(1));
        const [spare] = await spareFiles(dir);
        assert.equal(spare, `spare-${before[0]}`);
        const spareBytes = await readFile(path.join(dir, 'copies', spare!));
        assert.ok(spareBytes.length > 8 * 1024 && spareBytes.every((b) => b === 0), 'the spare holds no mail');
        assert.deepEqual(svc.check(), []);
        const left = ms.slice(2).reduce((n, m) => n + m.message!.size + m.eventJson!.length, 0);
        assert.deepEqual(svc.stats(), { messages: 10, bytes: left });

        // The next segment is the spare, written over from its start.
        const more = [fixtureMessage(now + 20_000, 20, 4096), fixtureMessage(now + 21_000, 21, 4096)];
        for (const m of more) svc.received(m);
        svc.flush();
        assert.deepEqual(await spareFiles(dir), []);
        const after = await segmentFiles(dir);
        assert.equal(after.length, before.length, 'no new file');
        assert.equal((await stat(path.join(dir, 'copies', after[after.length - 1]!))).size, spareBytes.length, 'the spare, renamed');
        for (const m of [...ms.slice(2), ...more]) assert.ok((await svc.event(m.queueId))!.equals(m.eventJson!), `the event of ${m.queueId}`);
        assert.deepEqual(svc.check(), []);
      } finally {
        await svc.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('bytes a crash left after the last commit and a segment no message points into do no harm', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-'));
    try {
      const svc = logService(dir, 1024 * 1024);
      const m = fixtureMessage(Date.now() - 60_000, 1, 2048);
      svc.received(m);
      svc.flush();
      await svc.close();
      // What a crash between the write of a batch and its commit leaves: bytes
      // at the end of the newest segment, and a segment of its own before it.
      const [seg] = await segmentFiles(dir);
      await appendFile(path.join(dir, 'copies', seg!), Buffer.alloc(5000, 0x41));
      await writeFile(path.join(dir, 'copies', '00000000.log'), Buffer.alloc(100, 0x42));

      const again = logService(dir, 1024 * 1024);
      try {
        assert.deepEqual(await segmentFiles(dir), [seg], 'the segment without messages is retired at start');
        assert.deepEqual(await spareFiles(dir), ['spare-00000000.log']);
        assert.deepEqual(again.check(), []);
        assert.ok((await again.event(m.queueId))!.equals(m.eventJson!));
        const later = fixtureMessage(Date.now() - 30_000, 2, 2048);
        again.received(later);
        assert.ok((await again.event(later.queueId))!.equals(later.eventJson!), 'the next batch goes over the left bytes');
        assert.deepEqual(again.check(), []);
      } finally {
        await again.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('a batch the index did not commit is written over by the next', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-'));
    try {
      const log = new CopyLog(dir, null);
      const a = log.append('A'.repeat(20), [Buffer.from('first')], 5, null);
      log.writeBuffered();
      log.commit();
      const b = log.append('B'.repeat(20), [Buffer.from('second')], 6, null);
      log.writeBuffered();
      assert.equal(copyRaw(log.read('B'.repeat(20), b)!)!.toString(), 'second', 'written before the commit');
      log.abort();
      const c = log.append('C'.repeat(20), [Buffer.from('third!')], 6, null);
      assert.equal(c[1], b[1], 'the next batch goes where the dropped one went');
      log.writeBuffered();
      log.commit();
      assert.equal(copyRaw(log.read('A'.repeat(20), a)!)!.toString(), 'first');
      assert.equal(copyRaw(log.read('C'.repeat(20), c)!)!.toString(), 'third!');
      assert.equal(log.read('B'.repeat(20), b), null, 'what the dropped batch pointed to is gone');
      assert.equal(log.read('C'.repeat(20), a), null, "another message's place gives nothing");
      log.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

test('past maxBytes, retention runs at once rather than at its next interval', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-console-'));
  try {
    const svc = service(dir, 40 * 1024);
    svc.start();
    try {
      const now = Date.now() - 3_600_000;
      for (let i = 0; i < 100; i++) {
        svc.received(fixtureMessage(now + i * 1000, i, 2048));
        if (i % 10 === 9) svc.flush();
      }
      svc.flush();
      await waitFor(() => svc.stats().bytes <= 40 * 1024, 10_000, 'retention after the copies passed maxBytes');
      const left = (await svc.list({ limit: 500 })).items;
      assert.ok(left.length > 0 && left.length < 100);
      assert.equal(left[0]!.subject, 'fixture 99', 'the newest stay');
      assert.deepEqual(svc.check(), []);
    } finally {
      await svc.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a message spilled to disk while it arrived keeps its .eml: served whole, replayable, removed with its entry', async () => {
  const hook = await startReceiver(() => ({ status: 204 }));
  const other = await startReceiver(() => ({ status: 204 }));
  const tg = await startGateway({
    smtp: { maxMessageSize: '10MiB' },
    storage: { spillAbove: '1MiB' },
    console: { listen: '127.0.0.1:0' },
    routes: [
      { recipients: ['*@example.test'], targets: [{ type: 'webhook', id: 'hook', url: hook.url }] },
      { recipients: ['*@other.test'], targets: [{ type: 'webhook', id: 'other', url: other.url }] },
    ],
  });
  try {
    const lines = ['From: <a@b.example>', 'To: <x@example.test>', 'Subject: large one', 'Message-ID: <large@b.example>', ''];
    for (let i = 0; lines.length * 78 < 3 * 1024 * 1024; i++) lines.push(`${i.toString(36).padStart(8, '0')} ${'0123456789abcdef'.repeat(5)}`.slice(0, 76));
    const message = Buffer.from(`${lines.join('\r\n')}\r\n`, 'latin1');
    const reply = (await sendOne(tg.port, 'x@example.test', message.toString('latin1'))).raw;
    assert.match(reply, /^250 /);
    const id = /queued as (\S+)/.exec(reply)![1]!;
    const port = tg.gw.consoleAddress()!.port;
    assert.deepEqual(await readdir(path.join(tg.dataDir, 'incoming')), [], 'the session removed its spill file');
    await waitFor(async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).status === 200, 5000, 'the console has the message');
    const detail = (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).json<MessageDetail>();
    assert.equal(detail.hasRaw, true);
    const raw = await consoleRequest(port, 'GET', `/api/v1/messages/${id}/raw`);
    assert.equal(raw.status, 200);
    assert.match(raw.body.subarray(0, 200).toString('latin1'), /^Return-Path: <sender@example\.org>\r\nReceived: /);
    assert.ok(raw.body.subarray(raw.body.length - message.length).equals(message), 'the .eml ends with the message as received, byte for byte');

    // Replay reads the same copy (the part in the kept file included).
    const before = other.got.length;
    const s = await browserSession(port);
    const replayed = await consoleRequest(port, 'POST', `/api/v1/messages/${id}/replay`, {
      headers: { ...s.headers, 'x-csrf-token': s.csrf, 'content-type': 'application/json' },
      body: JSON.stringify({ target: 'other' }),
    });
    assert.equal(replayed.status, 202, replayed.body.toString());
    await waitFor(() => other.got.length > before, 5000, 'the replay reached the target');
    const replayedEvent = JSON.parse(other.got.at(-1)!.body.toString('utf8')) as { data: { subject: string } };
    assert.equal(replayedEvent.data.subject, 'large one');

    const kept = path.join(tg.dataDir, 'console', 'files', id);
    assert.ok((await readdir(path.dirname(kept))).includes(id), 'the spilled part is kept beside the index');
    const removed = await consoleRequest(port, 'DELETE', `/api/v1/messages/${id}`, { headers: { ...s.headers, 'x-csrf-token': s.csrf } });
    assert.equal(removed.status, 200, removed.body.toString());
    assert.ok(!(await readdir(path.dirname(kept))).includes(id), 'removed with its entry');
  } finally {
    await tg.close();
    await hook.close();
    await other.close();
  }
});

test('the HTML body document shows cid: images of the message inline (raster only); the API keeps the HTML as sent', async () => {
  const hook = await startReceiver(() => ({ status: 204 }));
  const tg = await startGateway({ console: { listen: '127.0.0.1:0' }, routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }] });
  try {
    // A 1×1 PNG, and an SVG that must not be inlined.
    const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==';
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>').toString('base64');
    const message = [
      'From: <news@example.org>',
      'To: <x@example.test>',
      'Subject: inline images',
      'MIME-Version: 1.0',
      'Content-Type: multipart/related; boundary="r1"',
      '',
      '--r1',
      'Content-Type: text/html; charset=utf-8',
      '',
      '<p>Logo: <img src="cid:logo@example.org" alt="logo"> <img src=cid:icon%40example.org> <span style="background: url(cid:logo@example.org)">x</span> <img src="cid:evil@example.org"> <img src="cid:missing@example.org"></p>',
      '--r1',
      'Content-Type: image/png',
      'Content-ID: <logo@example.org>',
      'Content-Transfer-Encoding: base64',
      '',
      png,
      '--r1',
      'Content-Type: image/png',
      'Content-ID: <icon@example.org>',
      'Content-Transfer-Encoding: base64',
      '',
      png,
      '--r1',
      'Content-Type: image/svg+xml',
      'Content-ID: <evil@example.org>',
      'Content-Transfer-Encoding: base64',
      '',
      svg,
      '--r1--',
      '',
    ].join('\r\n');
    const reply = (await sendOne(tg.port, 'x@example.test', message)).raw;
    assert.match(reply, /^250 /);
    const id = /queued as (\S+)/.exec(reply)![1]!;
    const port = tg.gw.consoleAddress()!.port;
    await waitFor(async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).status === 200, 5000, 'the console has the message');
    const body = (await consoleRequest(port, 'GET', `/messages/${id}/body`)).body.toString();
    const dataUrl = `data:image/png;base64,${png}`;
    assert.equal(body.split(dataUrl).length - 1, 3, 'both PNGs (one referenced URL-encoded) and the CSS background are inline');
    assert.match(body, /src="cid:evil@example\.org"/, 'the SVG is not inlined');
    assert.match(body, /src="cid:missing@example\.org"/, 'an unknown Content-ID is left as it was');
    const detail = (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).json<MessageDetail>();
    assert.match(detail.html ?? '', /src="cid:logo@example\.org"/, 'the API gives the HTML as sent');
  } finally {
    await tg.close();
    await hook.close();
  }
});
