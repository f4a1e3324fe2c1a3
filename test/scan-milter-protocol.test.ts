/**
 * The milter client of rspamd's proxy (scan/milter.ts, docs/scanning.md)
 * against a fake milter on loopback that records every frame and answers as
 * told: the frames of one message, the verdicts each answer stands for,
 * the pool (one message per connection, a scan waiting for a connection
 * still bounded by its timeout, a connection rspamd closed while idle retried
 * once on a fresh one), and what breaks the protocol (no option negotiation,
 * a filter that would answer every command, an oversized frame).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { rspamdMilterScanner, parseSpamdResult } from '../src/scan/milter.js';
import type { ScanInput } from '../src/scan/types.js';
import { rejectsWithScanError } from './helpers/scan-errors.js';
import { milterFrame as frame } from './helpers/milter.js';

const MSG = Buffer.from('From: a@example.org\r\nSubject: x\r\n\r\nhello\r\n');
const input = (over: Partial<ScanInput['envelope']> = {}, ms = 2000, msg: Buffer | Readable = MSG, size = MSG.length): ScanInput => ({
  content: async () => msg,
  size,
  envelope: { mailFrom: 'a@example.org', rcptTo: ['b@example.com', 'c@example.com'], helo: 'client.example', clientAddress: '192.0.2.1', clientHostname: null, authUser: null, queueId: 'q1', ...over },
  timeoutMs: ms,
});

const RESULT = 'default: False [1.40 / 15.00];\n\tDATE_IN_PAST(1.00)[40];\n\tMIME_GOOD(-0.10)[text/plain];\n\tARC_NA(0.00)[]';
const CLEAN = [frame('h', 'X-Rspamd-Action\0no action\0'), frame('h', `X-Spamd-Result\0${RESULT}\0`), frame('a')];

interface Conn {
  frames: { cmd: string; data: Buffer }[];
  socket: net.Socket;
}

/** A fake rspamd proxy: negotiates with `flags`, answers each end of message with `answer(conn, n)`. */
async function fakeMilter(opts: { flags?: number; answer?: (c: Conn, n: number) => Buffer[] | null; greet?: Buffer | null } = {}) {
  const conns: Conn[] = [];
  let messages = 0;
  const server = net.createServer((s) => {
    const c: Conn = { frames: [], socket: s };
    conns.push(c);
    let buf = Buffer.alloc(0);
    s.on('error', () => undefined);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const n = buf.readUInt32BE(0);
        const f = { cmd: String.fromCharCode(buf[4]!), data: Buffer.from(buf.subarray(5, 4 + n)) };
        buf = buf.subarray(4 + n);
        c.frames.push(f);
        if (f.cmd === 'O') {
          if (opts.greet !== undefined) {
            if (opts.greet) s.write(opts.greet);
            continue;
          }
          const o = Buffer.alloc(12);
          o.writeUInt32BE(6, 0);
          o.writeUInt32BE(f.data.readUInt32BE(4), 4);
          o.writeUInt32BE(opts.flags ?? 0xff080, 8);
          s.write(frame('O', o.toString('latin1')));
        } else if (f.cmd === 'E') {
          const a = (opts.answer ?? (() => CLEAN))(c, messages++);
          if (a) s.write(Buffer.concat(a));
        }
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    to: { host: '127.0.0.1', port },
    conns,
    async close() {
      for (const c of conns) c.socket.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

const rejects = rejectsWithScanError;

const closing: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of closing) await c();
});
async function setup(opts: Parameters<typeof fakeMilter>[0] = {}, connections = 4) {
  const m = await fakeMilter(opts);
  const s = rspamdMilterScanner({ id: 'rspamd', to: m.to, connections });
  closing.push(() => s.close(), () => m.close());
  return { m, s };
}

describe('rspamd over milter: what is sent', () => {
  test('one message: QUIT_NC, CONNECT, the macros, HELO, MAIL, one RCPT each, the message as BODY, EOB', async () => {
    const { m, s } = await setup();
    const v = await s.scan(input({ authUser: 'alice', clientHostname: 'mx.client.example' }));
    assert.deepEqual(v, { kind: 'spam', score: 1.4, threshold: 15, spam: false, scannerAction: 'no action', symbols: ['DATE_IN_PAST', 'MIME_GOOD', 'ARC_NA'], message: null });
    const f = m.conns[0]!.frames;
    assert.deepEqual(
      f.map((x) => [x.cmd, x.cmd === 'O' ? x.data.readUInt32BE(0) : x.data.toString('latin1')]),
      [
        ['O', 6],
        ['K', ''],
        ['C', 'mx.client.example\x004\0\x00192.0.2.1\0'],
        ['D', 'C{i}\0q1\0{auth_authen}\0alice\0'],
        ['H', 'client.example\0'],
        ['M', '<a@example.org>\0'],
        ['R', '<b@example.com>\0'],
        ['R', '<c@example.com>\0'],
        ['B', MSG.toString('latin1')],
        ['E', ''],
      ],
    );
  });

  test('the null sender, an IPv4-mapped and an IPv6 client, no host name, unprintable values left out', async () => {
    const { m, s } = await setup();
    await s.scan(input({ mailFrom: '', clientAddress: '::ffff:198.51.100.7', rcptTo: ['bad\r\nrcpt@x', 'ok@example.com'], helo: 'h\0x' }));
    await s.scan(input({ clientAddress: '2001:db8::1' }));
    const f = m.conns[0]!.frames.map((x) => x.cmd + x.data.toString('latin1'));
    assert.ok(f.includes('Cunknown\x004\0\x00198.51.100.7\0'), f.join(' | '));
    assert.ok(f.includes('M<>\0'));
    assert.deepEqual(f.filter((x) => x.startsWith('R')).slice(0, 1), ['R<ok@example.com>\0']);
    assert.equal(f.filter((x) => x.startsWith('H')).length, 1, 'the HELO with a NUL is left out, the second message has its own');
    assert.ok(f.includes('Cunknown\x006\0\x002001:db8::1\0'));
    assert.equal(m.conns.length, 1, 'two messages, one connection');
  });

  test('a message over 64 KiB (a stream, as a spilled message is read): BODY frames of at most 65535 bytes, the message whole', async () => {
    const { m, s } = await setup();
    const big = Buffer.alloc(150_000, 'x');
    await s.scan(input({}, 2000, Readable.from([big.subarray(0, 70_000), big.subarray(70_000)]), big.length));
    await s.scan(input({}, 2000, big, big.length));
    const bodies = m.conns[0]!.frames.filter((x) => x.cmd === 'B');
    assert.ok(bodies.every((b) => b.data.length <= 65535));
    assert.equal(Buffer.concat(bodies.map((b) => b.data)).length, 2 * big.length);
    // A stream that ends short of its announced size is not sent as a whole message.
    await rejects(s.scan(input({}, 2000, Readable.from([big.subarray(0, 10)]), big.length)), 'protocol', /message was 10 bytes, announced 150000/);
  });
});

describe('rspamd over milter: what the answer means', () => {
  test('X-Spamd-Result: score, required score, symbols in rspamd\'s order; folded or not', () => {
    assert.deepEqual(parseSpamdResult(RESULT), { score: 1.4, threshold: 15, symbols: ['DATE_IN_PAST', 'MIME_GOOD', 'ARC_NA'] });
    assert.deepEqual(parseSpamdResult('default: True [16.20 / 15.00]; BAYES_SPAM(5.10)[99.9%]; R_SPF_FAIL(1.00)[-all]'), { score: 16.2, threshold: 15, symbols: ['BAYES_SPAM', 'R_SPF_FAIL'] });
    assert.equal(parseSpamdResult('nonsense'), null);
    assert.equal(parseSpamdResult('default: False [x / 15.00]'), null);
  });

  test('reject with a reply code, soft reject, discard, add header, quarantine', async () => {
    const answers: Buffer[][] = [
      [frame('y', '554 5.7.1 Gtube pattern\0')],
      [frame('h', `X-Spamd-Result\0default: False [5.90 / 15.00]; MISSING_MID(2.50)[]\0`), frame('y', '451 4.7.1 Try again later\0')],
      [frame('d')],
      [frame('m', '\0\0\0\x01X-Spam\0Yes\0'), frame('h', `X-Spamd-Result\0default: False [7.00 / 15.00]; X(7.00)[]\0`), frame('a')],
      [frame('h', `X-Spamd-Result\0default: True [20.00 / 15.00]; X(20.00)[]\0`), frame('q', 'quarantined\0'), frame('a')],
      [frame('h', 'X-Rspamd-Action\0no action\0'), frame('a')],
    ];
    const { s } = await setup({ answer: (_c, n) => answers[n]! });
    const v = [];
    for (let i = 0; i < 5; i++) v.push(await s.scan(input()));
    assert.deepEqual(
      v.map((x) => [x.scannerAction, x.spam, x.score, x.threshold, x.message]),
      [
        // Before any scored answer, rspamd's shipped reject score (its actions.conf).
        ['reject', true, 15, 15, 'Gtube pattern'],
        ['soft reject', false, 5.9, 15, 'Try again later'],
        ['discard', true, 15, 15, null],
        ['add header', false, 7, 15, null],
        ['quarantine', true, 20, 15, null],
      ],
    );
    // A scored answer without its scores: milter_headers is not set up for it.
    await rejects(s.scan(input()), 'protocol', /without X-Spamd-Result/);
  });

  test('an answer that arrives a byte at a time reads the same', async () => {
    const { s } = await setup({
      answer: (c) => {
        const all = Buffer.concat(CLEAN);
        let i = 0;
        const next = () => {
          if (i < all.length && !c.socket.destroyed) c.socket.write(all.subarray(i, ++i), () => setImmediate(next));
        };
        next();
        return null;
      },
    });
    const v = await s.scan(input());
    assert.deepEqual([v.score, v.threshold, v.scannerAction, v.symbols], [1.4, 15, 'no action', ['DATE_IN_PAST', 'MIME_GOOD', 'ARC_NA']]);
    assert.equal((await s.scan(input())).score, 1.4, 'and the connection is fit for the next message');
  });

  test('a reject without scores takes the required score of rspamd\'s last scored answer', async () => {
    const answers = [[frame('h', `X-Spamd-Result\0default: False [1.00 / 20.00]; A(1.00)[]\0`), frame('a')], [frame('r')]];
    const { s } = await setup({ answer: (_c, n) => answers[n]! });
    await s.scan(input());
    const v = await s.scan(input());
    assert.deepEqual([v.scannerAction, v.score, v.threshold, v.spam], ['reject', 20, 20, true]);
  });
});

describe('rspamd over milter: the pool', () => {
  test('at most `connections` open, one message on each at a time; the rest wait for one', async () => {
    let inFlight = 0;
    let most = 0;
    const { m, s } = await setup(
      {
        answer: (c) => {
          inFlight++;
          most = Math.max(most, inFlight);
          setTimeout(() => {
            inFlight--;
            c.socket.write(Buffer.concat(CLEAN));
          }, 20);
          return null;
        },
      },
      2,
    );
    const all = await Promise.all(Array.from({ length: 6 }, () => s.scan(input())));
    assert.equal(all.length, 6);
    assert.equal(m.conns.length, 2);
    assert.equal(most, 2);
    for (const c of m.conns) assert.equal(c.frames.filter((f) => f.cmd === 'E').length, 3);
  });

  test('a scan waiting for a connection still ends at its timeout; a silent answer closes its connection', async () => {
    const { m, s } = await setup({ answer: () => null }, 1);
    const t0 = Date.now();
    const first = s.scan(input({}, 300));
    const second = s.scan(input({}, 300));
    // The first connection's close, watched before it can happen.
    while (m.conns.length === 0) await new Promise((r) => setTimeout(r, 5));
    const closed = once(m.conns[0]!.socket, 'close');
    await Promise.all([rejects(first, 'timeout'), rejects(second, 'timeout')]);
    assert.ok(Date.now() - t0 < 2000, `${Date.now() - t0} ms`);
    await closed;
  });

  test('a connection rspamd closed while it sat idle: the message goes again, once, on a fresh one', async () => {
    const { m, s } = await setup({
      answer: (c, n) => {
        // The second message on the first connection: gone without an answer, as rspamd's idle timeout would.
        if (n === 1) {
          c.socket.destroy();
          return null;
        }
        return CLEAN;
      },
    });
    await s.scan(input());
    const v = await s.scan(input());
    assert.equal(v.score, 1.4);
    assert.equal(m.conns.length, 2);
  });
});

describe('rspamd over milter: idle connections', () => {
  test('one idle longer than idleMs is closed (SMFIC_QUIT); the next scan opens another', async () => {
    const m = await fakeMilter();
    const s = rspamdMilterScanner({ id: 'rspamd', to: m.to, connections: 2, idleMs: 150 });
    closing.push(() => s.close(), () => m.close());
    await s.scan(input());
    await once(m.conns[0]!.socket, 'close');
    assert.equal(m.conns[0]!.frames.at(-1)?.cmd, 'Q', 'said goodbye');
    await s.scan(input());
    assert.equal(m.conns.length, 2);
  });
});

describe('rspamd over milter: what breaks the protocol', () => {
  test('nothing listening: connect', async () => {
    const m = await fakeMilter();
    await m.close();
    const s = rspamdMilterScanner({ id: 'rspamd', to: m.to, connections: 1 });
    await rejects(s.scan(input()), 'connect');
    await s.close();
  });

  test('no option negotiation, a filter that answers every command, an oversized or unasked frame: protocol', async () => {
    const http = await setup({ greet: Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n') });
    await rejects(http.s.scan(input()), 'protocol', /no option negotiation|answer frame/);
    const chatty = await setup({ flags: 0 });
    await rejects(chatty.s.scan(input()), 'protocol', /not rspamd's proxy/);
    const big = await setup({ answer: () => [Buffer.from([0x7f, 0xff, 0xff, 0xff, 0x68])] });
    await rejects(big.s.scan(input()), 'protocol', /answer frame of \d+ bytes/);
    const twice = await setup({ answer: () => [...CLEAN, ...CLEAN] });
    await twice.s.scan(input());
    // The extra answer arrived with no message in flight: that connection is dropped, the next scan opens another.
    await new Promise((r) => setTimeout(r, 50));
    await twice.s.scan(input());
    assert.equal(twice.m.conns.length, 2);
  });
});
