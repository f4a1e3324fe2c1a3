/**
 * Hostile or broken scanning daemons (docs/scanning.md): fake servers that
 * inject faults the real daemons do not produce on demand — answers that are
 * not JSON, too long, missing fields, a reply text with CR/LF, an unknown
 * status, a connection closed mid-answer. Each must become a clear
 * ScanError (and so the route's onError), or a verdict with the unsafe parts
 * left out; never a crash, never an injected reply line.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import tls from 'node:tls';
import { clamdScanner, rspamdScanner, spamdScanner, ScanError, type Scanner, type ScanInput } from '../src/scan/index.js';
import type { ScanResult, SpamResult } from '../src/scan/types.js';
import { parseClamdAnswer } from '../src/scan/clamd.js';
import { parseSpamdAnswer } from '../src/scan/spamd.js';
import { parseRspamdAnswer } from '../src/scan/rspamd.js';
import { dechunk } from '../src/scan/http.js';
import { fixturePath } from './helpers/fixtures.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';
import { rejectsWithScanError } from './helpers/scan-errors.js';

const MSG = Buffer.from('From: a@example.org\r\nSubject: x\r\n\r\nhello\r\n');
const input = (ms = 2000): ScanInput => ({
  content: async () => Readable.from([MSG]),
  size: MSG.length,
  envelope: { mailFrom: 'a@example.org', rcptTo: ['b@example.com'], helo: 'client.example', clientAddress: '192.0.2.1', clientHostname: null, authUser: null, queueId: 'q1' },
  timeoutMs: ms,
});

const rejects = rejectsWithScanError;

/** A TCP server that reads the request and answers with `answer` (or does what `act` says). */
async function tcpServer(act: (socket: net.Socket) => void): Promise<{ address: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  // Half-open: a silent daemon keeps the connection after the request ends.
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    // Read (and drop) the request, so the client's FIN and close are seen.
    s.resume();
    act(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

describe('parsers refuse what breaks the protocol', () => {
  test('clamd', () => {
    assert.deepEqual(parseClamdAnswer('c', Buffer.from('stream: OK\0')), { kind: 'virus', infected: false, names: [] });
    assert.deepEqual(parseClamdAnswer('c', Buffer.from('stream: Eicar-Test FOUND\0')).names, ['Eicar-Test']);
    // A name that is not one printable word is still a virus, under a neutral name.
    assert.deepEqual(parseClamdAnswer('c', Buffer.from('stream: evil\x1b[31m FOUND\0')).names, ['unnamed']);
    assert.throws(() => parseClamdAnswer('c', Buffer.from('')), /empty answer/);
    assert.throws(() => parseClamdAnswer('c', Buffer.from('stream: OK\r\n250 fake\0')), /not one line/);
    assert.throws(() => parseClamdAnswer('c', Buffer.from('INSTREAM size limit exceeded. ERROR\0')), (e: unknown) => (e as ScanError).kind === 'refused');
    assert.throws(() => parseClamdAnswer('c', Buffer.from('hello there\0')), /unexpected answer/);
  });
  test('spamd', () => {
    const ok = parseSpamdAnswer('s', Buffer.from('SPAMD/1.1 0 EX_OK\r\nContent-length: 9\r\nSpam: False ; 1.5 / 5.0\r\n\r\nA,B,\x01bad'));
    assert.deepEqual([ok.spam, ok.score, ok.threshold, ok.symbols], [false, 1.5, 5, ['A', 'B']]);
    assert.throws(() => parseSpamdAnswer('s', Buffer.from('SPAMD/1.1 76 Bad header line\r\n\r\n')), (e: unknown) => (e as ScanError).kind === 'refused');
    assert.throws(() => parseSpamdAnswer('s', Buffer.from('HTTP/1.1 200 OK\r\n\r\n')), /status line/);
    assert.throws(() => parseSpamdAnswer('s', Buffer.from('SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n')), /Spam header/);
    assert.throws(() => parseSpamdAnswer('s', Buffer.from('SPAMD/1.1 0 EX_OK\r\nSpam: True ; 5')), /header block/);
  });
  test('rspamd', () => {
    const ok = parseRspamdAnswer('r', Buffer.from(JSON.stringify({ score: 3, required_score: 15, action: 'no action', symbols: { A: { score: 1 }, 'B\r\nX': { score: 9 }, C: { score: 2 } } })));
    assert.deepEqual(ok.symbols, ['C', 'A'], 'strongest first; a name with CR/LF left out');
    assert.throws(() => parseRspamdAnswer('r', Buffer.from('<html>')), /not JSON/);
    assert.throws(() => parseRspamdAnswer('r', Buffer.from('[1]')), /not a JSON object/);
    assert.throws(() => parseRspamdAnswer('r', Buffer.from('{"score":"high","required_score":15,"action":"reject"}')), /lacks score/);
    assert.throws(() => parseRspamdAnswer('r', Buffer.from('{"error":"bad request"}')), (e: unknown) => (e as ScanError).kind === 'refused');
    const many = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`S${i}`, { score: i }]));
    assert.equal(parseRspamdAnswer('r', Buffer.from(JSON.stringify({ score: 1, required_score: 2, action: 'no action', symbols: many }))).symbols.length, 100);
  });
});

describe('clients against broken daemons', () => {
  test('nothing listening: connect', async () => {
    const s = await tcpServer(() => undefined);
    const address = s.address;
    await s.close();
    await rejects(spamdScanner({ id: 'sa', address }).scan(input()), 'connect');
    await rejects(clamdScanner({ id: 'c', address }).scan(input()), 'connect');
    const r = rspamdScanner({ id: 'r', url: `http://${address}` });
    await rejects(r.scan(input()), 'connect');
    await r.close();
  });

  test('silence: timeout', async () => {
    const s = await tcpServer(() => undefined);
    try {
      const t0 = Date.now();
      await rejects(clamdScanner({ id: 'c', address: s.address }).scan(input(300)), 'timeout');
      await rejects(spamdScanner({ id: 'sa', address: s.address }).scan(input(300)), 'timeout');
      assert.ok(Date.now() - t0 < 2000, `${Date.now() - t0} ms`);
    } finally {
      await s.close();
    }
  });

  test('an endless answer: protocol, bounded', async () => {
    const s = await tcpServer((sock) => {
      const junk = Buffer.alloc(16 * 1024, 'x');
      const pump = () => {
        while (!sock.destroyed && sock.write(junk));
        if (!sock.destroyed) sock.once('drain', pump);
      };
      pump();
    });
    await rejects(clamdScanner({ id: 'c', address: s.address }).scan(input()), 'protocol', /longer than/);
    await s.close();
  });

  test('closed mid-answer and garbage: protocol', async () => {
    const half = await tcpServer((sock) => sock.end('SPAMD/1.1 0 EX_OK\r\nSpam: Tr'));
    await rejects(spamdScanner({ id: 'sa', address: half.address }).scan(input()), 'protocol');
    await half.close();
    const reset = await tcpServer((sock) => sock.resetAndDestroy());
    await assert.rejects(clamdScanner({ id: 'c', address: reset.address }).scan(input()), ScanError);
    await reset.close();
  });

  test('rspamd: HTTP 500 refused, HTML protocol', async () => {
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (req.headers['queue-id'] === 'q1' && req.url === '/checkv2' && req.headers.rcpt === 'b@example.com') res.writeHead(500).end('oops');
        else res.writeHead(200).end('<html>');
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const r: Scanner = rspamdScanner({ id: 'r', url: `http://127.0.0.1:${port}` });
    await rejects(r.scan(input()), 'refused', /HTTP 500/);
    await rejects(r.scan({ ...input(), envelope: { ...input().envelope, queueId: 'other' } }), 'protocol', /not JSON/);
    await r.close();
    server.close();
  });
});

describe('rspamd: the HTTP exchange (scan/http.ts)', () => {
  const VERDICT = JSON.stringify({ score: 3.5, required_score: 15, action: 'no action', symbols: { A: { score: 0.5 }, B: { score: 3 } } });
  /** The spam verdict a scan resolved with. */
  const spam = async (p: Promise<ScanResult>): Promise<SpamResult> => {
    const v = await p;
    assert.equal(v.kind, 'spam');
    return v as SpamResult;
  };
  const ok = (body = VERDICT, extra = '') => `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

  /** A server that reads one request head and body, then runs `answer` on the socket; the requests it read. */
  async function httpServer(answer: (socket: net.Socket) => void): Promise<{ url: string; requests: string[]; close(): Promise<void> }> {
    const requests: string[] = [];
    const sockets = new Set<net.Socket>();
    const server = net.createServer((sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
      sock.on('error', () => undefined);
      let got = '';
      sock.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        const end = got.indexOf('\r\n\r\n');
        if (end === -1) return;
        const length = Number(/content-length: (\d+)/i.exec(got.slice(0, end))?.[1] ?? 0);
        if (got.length < end + 4 + length) return;
        requests.push(got);
        got = '';
        answer(sock);
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return {
      url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
      requests,
      close: () => {
        for (const x of sockets) x.destroy();
        return new Promise((r) => server.close(() => r()));
      },
    };
  }

  test('the request: envelope, client address, HELO and user as headers; Connection: close; the message as the body', async () => {
    const srv = await httpServer((sock) => sock.end(ok()));
    const r = rspamdScanner({ id: 'r', url: `${srv.url}/rspamd/`, password: 'pw' });
    try {
      const body = Buffer.from(MSG);
      const env = { mailFrom: '', rcptTo: ['b@example.com', 'c@example.com'], helo: 'h\u00e9lo', clientAddress: '::ffff:192.0.2.7', clientHostname: 'mail.example.org', authUser: 'alice', queueId: 'Q7' };
      const v = await spam(r.scan({ ...input(), content: async () => body, envelope: env }));
      assert.deepEqual([v.kind, v.score, v.symbols], ['spam', 3.5, ['B', 'A']]);
      const req = srv.requests[0]!;
      const [head, sent] = [req.slice(0, req.indexOf('\r\n\r\n')), req.slice(req.indexOf('\r\n\r\n') + 4)];
      const lines = head.split('\r\n');
      assert.equal(lines[0], 'POST /rspamd/checkv2 HTTP/1.1');
      for (const l of ['Connection: close', `Content-Length: ${MSG.length}`, 'From: <>', 'Rcpt: b@example.com', 'Rcpt: c@example.com', 'IP: 192.0.2.7', 'Hostname: mail.example.org', 'User: alice', 'Queue-Id: Q7', 'Password: pw', `Host: ${new URL(srv.url).host}`]) {
        assert.ok(lines.includes(l), `${l} in ${JSON.stringify(lines)}`);
      }
      assert.ok(!lines.some((l) => l.startsWith('Helo:')), 'a HELO that is not printable ASCII is left out, not mangled');
      assert.equal(sent, MSG.toString('latin1'));
      // A stream (a spilled message) is sent as it is read.
      await r.scan(input());
      assert.equal(srv.requests[1]!.slice(-MSG.length), MSG.toString('latin1'));
    } finally {
      await srv.close();
    }
  });

  test('a whole answer by Content-Length settles without waiting for the close', async () => {
    const srv = await httpServer((sock) => sock.write(ok())); // never closes
    const r = rspamdScanner({ id: 'r', url: srv.url });
    try {
      const t0 = Date.now();
      assert.equal((await spam(r.scan(input(5000)))).score, 3.5);
      assert.ok(Date.now() - t0 < 2500, `${Date.now() - t0} ms`);
    } finally {
      await srv.close();
    }
  });

  test('chunked, in pieces; or delimited by the close, after an interim 100', async () => {
    const chunked = await httpServer((sock) => {
      sock.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
      const half = VERDICT.length >> 1;
      setTimeout(() => sock.write(`${half.toString(16)};ext=1\r\n${VERDICT.slice(0, half)}\r\n`), 20);
      setTimeout(() => sock.write(`${(VERDICT.length - half).toString(16)}\r\n${VERDICT.slice(half)}\r\n0\r\n\r\n`), 40); // no close
    });
    const closed = await httpServer((sock) => sock.end(`HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n${VERDICT}`));
    try {
      assert.equal((await spam(rspamdScanner({ id: 'r', url: chunked.url }).scan(input(3000)))).score, 3.5);
      assert.equal((await spam(rspamdScanner({ id: 'r', url: closed.url }).scan(input(3000)))).score, 3.5);
    } finally {
      await chunked.close();
      await closed.close();
    }
    assert.equal(dechunk(Buffer.from('3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n'))?.toString(), 'abc');
    assert.equal(dechunk(Buffer.from('3\r\nabc\r\n0\r\n')), null, 'the trailer section is not over');
    assert.equal(dechunk(Buffer.from('zz\r\nabc\r\n0\r\n\r\n')), null);
  });

  test('broken answers: protocol; silence: timeout; an untrusted certificate: connect', async () => {
    const cases: [string, RegExp][] = [
      ['SPAMD/1.1 0 EX_OK\r\n\r\n', /not HTTP/],
      ['HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n{}', /invalid Content-Length/],
      ['HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}', /invalid Content-Length/],
      [`HTTP/1.1 200 OK\r\nContent-Length: ${2 * 1024 * 1024}\r\n\r\n{}`, /longer than/],
      ['HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"score":', /closed before the whole answer/],
      ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"sc', /closed before the whole answer/],
      ['HTTP/1.1 200 OK\r\nX-Pad: ' + 'x'.repeat(20_000), /head longer than/],
      ['', /closed without an answer/],
    ];
    for (const [answer, re] of cases) {
      const srv = await httpServer((sock) => sock.end(answer));
      try {
        await rejects(rspamdScanner({ id: 'r', url: srv.url }).scan(input()), 'protocol', re);
      } finally {
        await srv.close();
      }
    }
    const endless = await httpServer((sock) => {
      sock.write('HTTP/1.1 200 OK\r\n\r\n');
      const junk = Buffer.alloc(64 * 1024, 'x');
      const pump = () => {
        while (!sock.destroyed && sock.write(junk));
        if (!sock.destroyed) sock.once('drain', pump);
      };
      pump();
    });
    await rejects(rspamdScanner({ id: 'r', url: endless.url }).scan(input()), 'protocol', /longer than/);
    await endless.close();
    const silent = await tcpServer(() => undefined);
    const t0 = Date.now();
    await rejects(rspamdScanner({ id: 'r', url: `http://${silent.address}` }).scan(input(300)), 'timeout', /within 300 ms/);
    assert.ok(Date.now() - t0 < 2000, `${Date.now() - t0} ms`);
    await silent.close();
    const tlsServer = tls.createServer({ cert: readFileSync(fixturePath('tls', 'mx.pem')), key: readFileSync(fixturePath('tls', 'mx-key.pem')) }, (s) => s.end(ok()));
    tlsServer.listen(0, '127.0.0.1');
    await once(tlsServer, 'listening');
    try {
      // https is spoken (a plain client would fail on the handshake bytes as "not HTTP"), and the certificate is checked.
      await rejects(rspamdScanner({ id: 'r', url: `https://localhost:${(tlsServer.address() as net.AddressInfo).port}` }).scan(input()), 'connect', /CERT|SELF_SIGNED|SIGNATURE/);
    } finally {
      tlsServer.close();
    }
  });
});

describe('through the gateway: a hostile rspamd', () => {
  let app: Receiver;
  let tg: TestGateway;
  let server: http.Server;
  let answer = '';
  before(async () => {
    server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(answer));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    app = await startReceiver(() => ({ status: 200 }));
    tg = await startGateway({
      scan: { scanners: [{ type: 'rspamd', url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, timeout: '2s' }] },
      routes: [
        { name: 'r', recipients: ['*@reject.test'], targets: [{ type: 'webhook', url: app.url }], scan: { spam: 'reject' } },
        { name: 'a', recipients: ['*@accept.test'], targets: [{ type: 'webhook', url: app.url }], scan: { spam: 'reject', onError: 'accept' } },
      ],
    });
  });
  after(async () => {
    await tg?.close();
    await app?.close();
    server?.close();
  });

  test('a reply text with CR/LF or over 120 characters is replaced by the table\'s own', async () => {
    for (const message of ['Go away\r\n250 2.0.0 Ok: queued', 'x'.repeat(200), 'caf\u00e9']) {
      answer = JSON.stringify({ score: 20, required_score: 15, action: 'reject', messages: { smtp_message: message } });
      const r = await sendOne(tg.port, 'u@reject.test', simpleMessage('hostile'));
      assert.equal(r.raw.trimEnd(), '550 5.7.1 Message rejected as spam: spam score above the threshold');
    }
    answer = JSON.stringify({ score: 20, required_score: 15, action: 'reject', messages: { smtp_message: 'Listed at example RBL' } });
    assert.equal((await sendOne(tg.port, 'u@reject.test', simpleMessage('hostile'))).raw.trimEnd(), '550 5.7.1 Message rejected as spam: Listed at example RBL');
  });

  test('nonsense from the daemon is a failed scan: 451 under tempfail, delivered with a note under accept', async () => {
    answer = '{"score": null}';
    const t = await sendOne(tg.port, 'u@reject.test', simpleMessage('nonsense-tempfail'));
    assert.equal(t.code, 451, t.raw);
    const a = await sendOne(tg.port, 'u@accept.test', simpleMessage('nonsense-accept'));
    assert.equal(a.code, 250, a.raw);
    const ev = app.got.map((g) => JSON.parse(g.body.toString('utf8')) as { data: { subject: string; parseErrors: { message: string }[] } }).find((e) => e.data.subject === 'nonsense-accept');
    assert.deepEqual(ev?.data.parseErrors.map((p) => p.message), ['rspamd: protocol']);
    assert.equal(app.got.length, 1, 'the tempfailed message reached no target');
  });
});
