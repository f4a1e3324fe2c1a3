import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';

import { GatewayError } from '../src/core/errors.js';
import { createAddressMatcher, validateRange } from '../src/net/cidr.js';
import { readProxyHeader, type ProxyHeader } from '../src/net/proxy-protocol.js';

// ---------------------------------------------------------------------------
// Helpers

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** A v2 header: signature, version/command byte, family byte, length, block. */
function v2(versionCommand: number, family: number, block: Buffer, lengthOverride?: number): Buffer {
  const fixed = Buffer.alloc(4);
  fixed[0] = versionCommand;
  fixed[1] = family;
  fixed.writeUInt16BE(lengthOverride ?? block.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, block]);
}

function ports(source: number, destination: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(source, 0);
  b.writeUInt16BE(destination, 2);
  return b;
}

function tlv(type: number, value: Buffer): Buffer {
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

const ipv4Block = Buffer.concat([Buffer.from([192, 0, 2, 10]), Buffer.from([198, 51, 100, 7]), ports(51234, 25)]);
const ipv6Block = Buffer.concat([
  Buffer.from('20010db8000000000000000000000001', 'hex'),
  Buffer.from('20010db8000100000000000000000000', 'hex'),
  ports(40000, 587),
]);

interface ValidCase {
  name: string;
  header: Buffer;
  expected: ProxyHeader;
}

const validCases: ValidCase[] = [
  {
    name: 'v1 TCP4',
    header: Buffer.from('PROXY TCP4 192.0.2.10 198.51.100.7 51234 25\r\n'),
    expected: {
      version: 1, command: 'PROXY', family: 'TCP4',
      sourceAddress: '192.0.2.10', sourcePort: 51234, destinationAddress: '198.51.100.7', destinationPort: 25,
    },
  },
  {
    // Non-canonical spelling on the wire; the result is what net would print.
    name: 'v1 TCP6',
    header: Buffer.from('PROXY TCP6 2001:0DB8:0:0:0:0:0:1 2001:db8:1:0::0 40000 587\r\n'),
    expected: {
      version: 1, command: 'PROXY', family: 'TCP6',
      sourceAddress: '2001:db8::1', sourcePort: 40000, destinationAddress: '2001:db8:1::', destinationPort: 587,
    },
  },
  {
    name: 'v1 UNKNOWN (short form)',
    header: Buffer.from('PROXY UNKNOWN\r\n'),
    expected: { version: 1, command: 'LOCAL' },
  },
  {
    // The spec's 107-byte worst case; everything after UNKNOWN is ignored.
    name: 'v1 UNKNOWN (longest line, 107 bytes)',
    header: Buffer.from(`PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`),
    expected: { version: 1, command: 'LOCAL' },
  },
  {
    name: 'v2 PROXY IPv4',
    header: v2(0x21, 0x11, ipv4Block),
    expected: {
      version: 2, command: 'PROXY', family: 'TCP4',
      sourceAddress: '192.0.2.10', sourcePort: 51234, destinationAddress: '198.51.100.7', destinationPort: 25,
    },
  },
  {
    name: 'v2 PROXY IPv6',
    header: v2(0x21, 0x21, ipv6Block),
    expected: {
      version: 2, command: 'PROXY', family: 'TCP6',
      sourceAddress: '2001:db8::1', sourcePort: 40000, destinationAddress: '2001:db8:1::', destinationPort: 587,
    },
  },
  {
    name: 'v2 PROXY IPv6 (IPv4-mapped source)',
    header: v2(0x21, 0x21, Buffer.concat([
      Buffer.from('00000000000000000000ffffc000020a', 'hex'),
      Buffer.from('00000000000000000000000000000001', 'hex'),
      ports(1, 2),
    ])),
    expected: {
      version: 2, command: 'PROXY', family: 'TCP6',
      sourceAddress: '::ffff:192.0.2.10', sourcePort: 1, destinationAddress: '::1', destinationPort: 2,
    },
  },
  {
    // TLVs as AWS NLB and HAProxy send them: ALPN, AUTHORITY, a custom one.
    name: 'v2 PROXY IPv4 with TLVs',
    header: v2(0x21, 0x11, Buffer.concat([
      ipv4Block,
      tlv(0x01, Buffer.from('smtp')),
      tlv(0x02, Buffer.from('mx.example.com')),
      tlv(0xea, Buffer.from([0x01, 0x76, 0x70, 0x63, 0x65])),
    ])),
    expected: {
      version: 2, command: 'PROXY', family: 'TCP4',
      sourceAddress: '192.0.2.10', sourcePort: 51234, destinationAddress: '198.51.100.7', destinationPort: 25,
    },
  },
  {
    name: 'v2 LOCAL',
    header: v2(0x20, 0x00, Buffer.alloc(0)),
    expected: { version: 2, command: 'LOCAL' },
  },
  {
    // Receivers "must not assume zero is presented for LOCAL connections".
    name: 'v2 LOCAL with an address block',
    header: v2(0x20, 0x11, ipv4Block),
    expected: { version: 2, command: 'LOCAL' },
  },
  {
    name: 'v2 PROXY AF_UNSPEC',
    header: v2(0x21, 0x00, Buffer.alloc(0)),
    expected: { version: 2, command: 'LOCAL' },
  },
  {
    name: 'v2 PROXY AF_UNIX stream',
    header: v2(0x21, 0x31, Buffer.alloc(216, 0x61)),
    expected: { version: 2, command: 'LOCAL' },
  },
];

const EHLO = Buffer.from('EHLO client\r\n');

// A broken reader tends to hang (bytes never handed on) rather than throw;
// the per-test timeout turns that into a failure.
const T = { timeout: 5_000 };

// One server for the whole file; each test connects its own client and picks
// its accepted socket by port, so tests never see each other's connections.
let server: net.Server;
let port: number;
const accepted = new Map<number, net.Socket>();
const waiters = new Map<number, (socket: net.Socket) => void>();
const openSockets = new Set<net.Socket>();

before(async () => {
  server = net.createServer((socket) => {
    openSockets.add(socket);
    // Tests that expect a rejection leave the server side to be destroyed in
    // after(); a reset from the client must not crash the run meanwhile.
    socket.on('error', () => {});
    const key = socket.remotePort ?? -1;
    const waiter = waiters.get(key);
    if (waiter) {
      waiters.delete(key);
      waiter(socket);
    } else {
      accepted.set(key, socket);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  port = address.port;
});

after(async () => {
  for (const socket of openSockets) socket.destroy();
  server.close();
  await once(server, 'close');
});

/** Connects a client and returns it with the server's side of the connection. */
async function connect(): Promise<{ client: net.Socket; peer: net.Socket }> {
  const client = net.connect({ port, host: '127.0.0.1', noDelay: true });
  openSockets.add(client);
  client.on('error', () => {}); // the server side may reset rejected connections
  await once(client, 'connect');
  const localPort = client.localPort;
  assert.ok(localPort !== undefined);
  const early = accepted.get(localPort);
  if (early) {
    accepted.delete(localPort);
    return { client, peer: early };
  }
  const peer = await new Promise<net.Socket>((resolve) => waiters.set(localPort, resolve));
  return { client, peer };
}

function write(socket: net.Socket, data: Buffer | string): Promise<void> {
  return new Promise((resolve, reject) => socket.write(data, (err) => (err ? reject(err) : resolve())));
}

/**
 * Waits until the server socket has received `count` bytes from the kernel and
 * the resulting 'readable' event has been handled: bytesRead is updated in the
 * same I/O callback that pushes the data, and 'readable' runs on the
 * nextTick queue, both before the next setImmediate.
 */
async function receivedBytes(socket: net.Socket, count: number): Promise<void> {
  for (let spins = 0; socket.bytesRead < count; spins++) {
    if (spins > 100_000) throw new Error(`server received only ${socket.bytesRead} of ${count} bytes`);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise((resolve) => setImmediate(resolve));
}

/** Collects what a plain 'data' listener (as the SMTP layer uses) receives, until `length` bytes. */
async function readData(socket: net.Socket, length: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      total += chunk.length;
      if (total >= length) {
        socket.off('data', onData);
        socket.off('end', onEnd);
        resolve(Buffer.concat(chunks));
      }
    };
    const onEnd = (): void => reject(new Error(`stream ended after ${total} of ${length} bytes`));
    socket.on('data', onData);
    socket.on('end', onEnd);
  });
}

const EVENTS = ['readable', 'data', 'end', 'close', 'error'] as const;
/**
 * What the reader must leave behind as it found it: the socket's listeners,
 * and the number of live timers in the process (its timeout must be cleared).
 */
function footprint(socket: net.Socket): { listeners: number[]; timers: number } {
  return {
    listeners: EVENTS.map((event) => socket.listenerCount(event)),
    timers: process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length,
  };
}

async function expectRejection(promise: Promise<unknown>, message: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof GatewayError, `expected a GatewayError, got ${String(error)}`);
    assert.equal(error.code, 'PG_PROXY_HEADER');
    assert.equal(error.transient, true);
    assert.match(error.message, message);
    return true;
  });
}

// ---------------------------------------------------------------------------
// Valid headers

describe('readProxyHeader: valid headers', () => {
  for (const { name, header, expected } of validCases) {
    test(`${name}, one write`, T, async () => {
      const { client, peer } = await connect();
      const before = footprint(peer);
      const result = readProxyHeader(peer);
      await write(client, header);
      assert.deepEqual(await result, expected);
      assert.deepEqual(footprint(peer), before, 'listeners removed and timer cleared');
    });

    test(`${name}, byte by byte`, T, async () => {
      const { client, peer } = await connect();
      let settled = false;
      const result = readProxyHeader(peer, { timeoutMs: 10_000 });
      result.then(() => (settled = true), () => (settled = true));
      for (let i = 0; i < header.length; i++) {
        assert.equal(settled, false, `settled after only ${i} of ${header.length} bytes`);
        await write(client, header.subarray(i, i + 1));
        await receivedBytes(peer, i + 1);
      }
      assert.deepEqual(await result, expected);
    });

    test(`${name}, followed by EHLO in the same write`, T, async () => {
      const { client, peer } = await connect();
      const result = readProxyHeader(peer);
      await write(client, Buffer.concat([header, EHLO]));
      assert.deepEqual(await result, expected);
      // The SMTP layer attaches its 'data' listener afterwards and must see
      // the command bytes intact and first.
      assert.deepEqual(await readData(peer, EHLO.length), EHLO);
    });
  }

  test('bytes after the header reach a later reader even when the client ends at once', T, async () => {
    const { client, peer } = await connect();
    const result = readProxyHeader(peer);
    client.end(Buffer.concat([validCases[0]!.header, EHLO, Buffer.from('QUIT\r\n')]));
    assert.deepEqual(await result, validCases[0]!.expected);
    // Give the reader's end-of-stream bookkeeping a chance to run before any
    // consumer exists: the unshifted bytes must still be there, then 'end'.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(peer.readableFlowing, null, 'socket left neither flowing nor explicitly paused');
    const chunks: Buffer[] = [];
    peer.on('data', (chunk: Buffer) => chunks.push(chunk));
    await once(peer, 'end');
    assert.equal(Buffer.concat(chunks).toString('latin1'), 'EHLO client\r\nQUIT\r\n');
  });

  test('a header split across writes, with EHLO sent after the header resolved', T, async () => {
    const { client, peer } = await connect();
    const header = validCases[4]!.header; // v2 IPv4
    const result = readProxyHeader(peer);
    await write(client, header.subarray(0, 5));
    await receivedBytes(peer, 5);
    await write(client, header.subarray(5, 15));
    await receivedBytes(peer, 15);
    await write(client, header.subarray(15));
    assert.deepEqual(await result, validCases[4]!.expected);
    const received = readData(peer, EHLO.length);
    await write(client, EHLO);
    assert.deepEqual(await received, EHLO);
  });
});

// ---------------------------------------------------------------------------
// Rejections

describe('readProxyHeader: rejections', () => {
  async function rejects(data: Buffer | string, message: RegExp): Promise<void> {
    const { client, peer } = await connect();
    const before = footprint(peer);
    // A long timeout: each of these must be rejected on content, not by the timer.
    const result = readProxyHeader(peer, { timeoutMs: 20_000 });
    await write(client, data);
    await expectRejection(result, message);
    assert.deepEqual(footprint(peer), before, 'listeners removed and timer cleared');
  }

  test('no header: the client speaks SMTP directly', T, async () => {
    await rejects('EHLO x\r\n', /missing.*"EHLO x\\r\\n"/);
  });

  test('v1 line over 107 bytes without CRLF', T, async () => {
    await rejects(`PROXY TCP4 ${'1'.repeat(120)}`, /no CRLF within the first 107 bytes/);
  });

  test('v1 line of 108 bytes ending in CRLF', T, async () => {
    const line = `PROXY UNKNOWN ${'a'.repeat(92)}\r\n`;
    assert.equal(line.length, 108);
    await rejects(line, /no CRLF within the first 107 bytes/);
  });

  test('v1 line ended by a bare LF', T, async () => {
    await rejects('PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n', /bare LF/);
  });

  test('v1 line with a lone CR', T, async () => {
    await rejects('PROXY TCP4 192.0.2.1\r192.0.2.2 1 2\r\n', /CR not followed by LF/);
  });

  test('v1 bad IPv4 address', T, async () => {
    await rejects('PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n', /source address "192\.0\.2\.256" is not a valid IPv4 address/);
  });

  test('v1 IPv4 address with a heading zero', T, async () => {
    await rejects('PROXY TCP4 192.0.2.1 192.0.2.02 1 2\r\n', /destination address "192\.0\.2\.02"/);
  });

  test('v1 IPv6 address under TCP4', T, async () => {
    await rejects('PROXY TCP4 ::1 192.0.2.2 1 2\r\n', /source address "::1" is not a valid IPv4 address/);
  });

  test('v1 bad IPv6 address', T, async () => {
    await rejects('PROXY TCP6 2001:db8::g 2001:db8::1 1 2\r\n', /source address "2001:db8::g" is not a valid IPv6 address/);
  });

  test('v1 port 70000', T, async () => {
    await rejects('PROXY TCP4 192.0.2.1 192.0.2.2 70000 25\r\n', /source port "70000" is not a decimal number from 0 to 65535/);
  });

  test('v1 port with a heading zero', T, async () => {
    await rejects('PROXY TCP4 192.0.2.1 192.0.2.2 1234 025\r\n', /destination port "025"/);
  });

  test('v1 unknown protocol', T, async () => {
    await rejects('PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n', /unsupported protocol "UDP4"/);
  });

  test('v1 double space between fields', T, async () => {
    await rejects('PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n', /expected 6 space-separated fields, got 7/);
  });

  test('v2 signature corrupted', T, async () => {
    const header = v2(0x21, 0x11, ipv4Block);
    header[7] = 0x71; // 'q' instead of 'Q'
    await rejects(header, /missing/);
  });

  test('v2 wrong version nibble', T, async () => {
    await rejects(v2(0x11, 0x11, ipv4Block), /unsupported version 1 \(version\/command byte 0x11\)/);
  });

  test('v2 unknown command', T, async () => {
    await rejects(v2(0x22, 0x11, ipv4Block), /unknown command 0x2/);
  });

  test('v2 unsupported address family', T, async () => {
    await rejects(v2(0x21, 0x41, ipv4Block), /unsupported address family 0x41/);
  });

  test('v2 unsupported transport', T, async () => {
    await rejects(v2(0x21, 0x13, ipv4Block), /unsupported address family 0x13/);
  });

  test('v2 length over the cap, rejected without waiting for the block', T, async () => {
    // Only the 16 fixed bytes are sent; the rejection must not wait for 5000 more.
    await rejects(v2(0x21, 0x11, Buffer.alloc(0), 5000), /address block length 5000 exceeds the 4096-byte limit/);
  });

  test('v2 length too short for the family', T, async () => {
    await rejects(v2(0x21, 0x21, ipv4Block), /address block length 12 is too short for family 0x21 \(needs 36 bytes\)/);
  });

  test('timeout on an incomplete header', T, async () => {
    const { client, peer } = await connect();
    const before = footprint(peer);
    const started = Date.now();
    const result = readProxyHeader(peer, { timeoutMs: 100 });
    await write(client, 'PROXY TCP4 192.0.2.1');
    await expectRejection(result, /no complete header within 100 ms \(20 byte\(s\) received: "PROXY TCP4 192\.0\.2\.1"\)/);
    assert.ok(Date.now() - started >= 90, 'rejected by the timer, not earlier');
    assert.deepEqual(footprint(peer), before);
  });

  test('timeout when nothing is sent (an SMTP client waiting for the banner)', T, async () => {
    const { peer } = await connect();
    await expectRejection(readProxyHeader(peer, { timeoutMs: 50 }), /no complete header within 50 ms \(no bytes received\)/);
  });

  test('client closes mid-header', T, async () => {
    const { client, peer } = await connect();
    const before = footprint(peer);
    const result = readProxyHeader(peer, { timeoutMs: 20_000 });
    client.end(v2(0x21, 0x21, ipv6Block).subarray(0, 30));
    await expectRejection(result, /ended the connection before a complete header \(30 byte\(s\) received/);
    assert.deepEqual(footprint(peer), before);
  });

  test('client resets mid-header', T, async () => {
    const { client, peer } = await connect();
    const result = readProxyHeader(peer, { timeoutMs: 20_000 });
    await write(client, 'PROXY TCP6 ');
    await receivedBytes(peer, 11);
    client.resetAndDestroy();
    await expectRejection(result, /(socket error|connection closed|ended the connection) before a complete header/);
  });

  test('socket already destroyed', T, async () => {
    const { peer } = await connect();
    peer.destroy();
    await expectRejection(readProxyHeader(peer), /already closed/);
  });

  test('invalid timeoutMs', T, async () => {
    const { peer } = await connect();
    await assert.rejects(readProxyHeader(peer, { timeoutMs: 0 }), RangeError);
    await assert.rejects(readProxyHeader(peer, { timeoutMs: Number.NaN }), RangeError);
  });
});

// ---------------------------------------------------------------------------
// Address ranges

describe('createAddressMatcher', () => {
  const matcher = createAddressMatcher(['10.0.0.0/8', '192.0.2.0/24', '2001:db8::/32', '127.0.0.1', '::1']);

  test('IPv4 ranges', T, () => {
    assert.equal(matcher.matches('10.0.0.0'), true);
    assert.equal(matcher.matches('10.255.255.255'), true);
    assert.equal(matcher.matches('11.0.0.0'), false);
    assert.equal(matcher.matches('192.0.2.200'), true);
    assert.equal(matcher.matches('192.0.3.1'), false);
  });

  test('IPv6 ranges, any spelling', T, () => {
    assert.equal(matcher.matches('2001:db8::1'), true);
    assert.equal(matcher.matches('2001:DB8:FFFF:0:0:0:0:1'), true);
    assert.equal(matcher.matches('2001:db9::1'), false);
  });

  test('single addresses', T, () => {
    assert.equal(matcher.matches('127.0.0.1'), true);
    assert.equal(matcher.matches('127.0.0.2'), false);
    assert.equal(matcher.matches('::1'), true);
    assert.equal(matcher.matches('0:0:0:0:0:0:0:1'), true);
    assert.equal(matcher.matches('::2'), false);
  });

  test('IPv4-mapped IPv6 addresses match IPv4 entries', T, () => {
    assert.equal(matcher.matches('::ffff:127.0.0.1'), true);
    assert.equal(matcher.matches('::ffff:10.1.2.3'), true);
    assert.equal(matcher.matches('::ffff:7f00:1'), true);
    assert.equal(matcher.matches('::ffff:127.0.0.2'), false);
    assert.equal(matcher.matches('::ffff:11.0.0.1'), false);
  });

  test('a real dual-stack peer address matches an IPv4 range', T, async (t) => {
    const dual = net.createServer();
    dual.on('error', () => {});
    dual.listen({ port: 0, host: '::', ipv6Only: false });
    const [outcome] = await Promise.race([once(dual, 'listening').then(() => ['ok']), once(dual, 'error')]);
    if (outcome !== 'ok') {
      t.skip('no IPv6 on this host');
      return;
    }
    try {
      const address = dual.address();
      assert.ok(address !== null && typeof address === 'object');
      const acceptedSocket = once(dual, 'connection');
      const client = net.connect({ port: address.port, host: '127.0.0.1' });
      client.on('error', () => {});
      const [peer] = (await acceptedSocket) as [net.Socket];
      try {
        assert.equal(peer.remoteAddress, '::ffff:127.0.0.1');
        assert.equal(createAddressMatcher(['127.0.0.0/8']).matches(peer.remoteAddress), true);
        assert.equal(createAddressMatcher(['10.0.0.0/8']).matches(peer.remoteAddress), false);
      } finally {
        peer.destroy();
        client.destroy();
      }
    } finally {
      dual.close();
      await once(dual, 'close');
    }
  });

  test('non-addresses and an empty list match nothing', T, () => {
    assert.equal(matcher.matches('not an address'), false);
    assert.equal(matcher.matches(''), false);
    assert.equal(matcher.matches(undefined), false);
    assert.equal(createAddressMatcher([]).matches('127.0.0.1'), false);
  });

  test('/0 matches everything in its family', T, () => {
    const any4 = createAddressMatcher(['0.0.0.0/0']);
    assert.equal(any4.matches('203.0.113.9'), true);
    assert.equal(any4.matches('::ffff:203.0.113.9'), true);
    assert.equal(any4.matches('2001:db8::1'), false);
  });

  test('invalid entries are rejected with a message naming them', T, () => {
    const invalid = [
      '10.0.0.0/33',
      '2001:db8::/129',
      '300.1.1.1',
      '10.0.0.0/',
      '10.0.0.0/8/8',
      '10.0.0.0/-1',
      '/8',
      'example.com',
      ' 10.0.0.1',
      'fe80::1%eth0',
      '',
    ];
    for (const entry of invalid) {
      const message = validateRange(entry);
      assert.equal(typeof message, 'string', `validateRange(${JSON.stringify(entry)}) should fail`);
      assert.ok(message!.includes(JSON.stringify(entry)), `message names the entry: ${message}`);
      assert.throws(
        () => createAddressMatcher(['127.0.0.1', entry]),
        (error: unknown) => error instanceof Error && error.message === message,
      );
    }
    assert.match(validateRange('10.0.0.0/33') ?? '', /from 0 to 32 for IPv4/);
    assert.match(validateRange('300.1.1.1') ?? '', /is not an IPv4 or IPv6 address/);
  });

  test('valid entries pass validation', T, () => {
    for (const entry of ['10.0.0.0/8', '0.0.0.0/0', '127.0.0.1', '127.0.0.1/32', '::1', '::/0', '2001:db8::/32', '::ffff:10.0.0.0/104']) {
      assert.equal(validateRange(entry), null, entry);
    }
  });
});
