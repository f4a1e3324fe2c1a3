/**
 * PROXY protocol reader (HAProxy "proxy-protocol.txt": section 2.1 for the
 * text header, version 1; section 2.2 for the binary header, version 2).
 *
 * A load balancer in front of postgate prepends one header to each TCP
 * connection that carries the original client's address. `readProxyHeader`
 * consumes exactly that header from a freshly accepted socket and hands every
 * byte after it back to the socket, so the SMTP layer starts on a clean stream.
 *
 * Trust is not decided here: the caller must only call this for peers in its
 * trusted-proxy list (see cidr.ts), because the spec (section 2) says a
 * receiver must not guess whether a header is present and must only accept it
 * from trusted sources. On rejection the caller should destroy the socket
 * (section 2.1: "cause the receiver to abort the connection").
 *
 * Leaf module apart from core/errors: only node built-ins.
 */

import net from 'node:net';
import { GatewayError } from '../core/errors.js';

export type ProxyHeader =
  | {
      version: 1 | 2;
      command: 'PROXY';
      family: 'TCP4' | 'TCP6';
      sourceAddress: string;
      sourcePort: number;
      destinationAddress: string;
      destinationPort: number;
    }
  /**
   * No usable addresses: v2 LOCAL (the proxy's own health checks, e.g. AWS
   * NLB), v1 `PROXY UNKNOWN`, or a v2 PROXY block for a family/transport we
   * fall back on (section 2.2: AF_UNSPEC, AF_UNIX, DGRAM). Use the socket's real
   * addresses.
   */
  | { version: 1 | 2; command: 'LOCAL' };

export interface ReadProxyHeaderOptions {
  /** How long to wait for the complete header. Default 5000 ms. */
  timeoutMs?: number;
}

/**
 * Section 2 recommends a short timeout of "at least 3 seconds to cover a TCP
 * retransmit". It matters for SMTP in particular: the server speaks first, so a
 * client that connects without a proxy sends nothing at all and is only
 * caught by this timer.
 */
const DEFAULT_TIMEOUT_MS = 5000;

/** Section 2.1: the worst-case v1 line, CRLF included, is 107 bytes. */
const V1_MAX_LENGTH = 107;
const V1_PREFIX = Buffer.from('PROXY ', 'latin1');

/** Section 2.2: the fixed 12-byte v2 signature (it contains a NUL byte). */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Signature, version/command byte, family byte, 2-byte length. */
const V2_FIXED_LENGTH = 16;
/**
 * The v2 length field allows up to 65535 bytes of addresses and TLVs. Real
 * proxies send a few hundred at most (AF_UNIX addresses are the largest fixed
 * part, 216 bytes); the cap keeps an untrustworthy peer from making us buffer
 * 64 KiB per connection.
 */
const V2_MAX_ADDRESS_BLOCK = 4096;

const CR = 0x0d;
const LF = 0x0a;

type ParseResult = { done: false } | { done: true; header: ProxyHeader; length: number };
const NEED_MORE: ParseResult = { done: false };

/**
 * Reads one PROXY protocol header (v1 or v2, auto-detected) from `socket`.
 *
 * Resolves once the complete header is received; bytes that arrived after it
 * are `unshift()`ed back, and the socket is left neither flowing nor paused, so
 * a later `'data'` listener, `pipe()` or `read()` sees them first. Rejects with
 * a GatewayError `PG_PROXY_HEADER` on a missing or malformed header, on timeout,
 * or when the socket ends, closes or errors first. Every listener added here is
 * removed and the timer is cleared in all outcomes.
 *
 * Call it before anything else reads from the socket, with no encoding set.
 */
export function readProxyHeader(socket: net.Socket, opts: ReadProxyHeaderOptions = {}): Promise<ProxyHeader> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;

  return new Promise<ProxyHeader>((resolve, reject) => {
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      reject(new RangeError(`readProxyHeader: timeoutMs must be a positive number of milliseconds, got ${String(timeoutMs)}`));
      return;
    }
    if (socket.readableEncoding !== null) {
      // With an encoding set, read() returns strings and the binary v2 header
      // (and the byte counts we unshift) would be mangled.
      reject(new TypeError('readProxyHeader: the socket has an encoding set; the PROXY header must be read as bytes'));
      return;
    }
    if (socket.destroyed || socket.readableEnded) {
      reject(headerError('PROXY header: the connection was already closed before the header could be read'));
      return;
    }

    let received: Buffer = Buffer.alloc(0);
    let settled = false;

    const cleanup = (): void => {
      settled = true;
      clearTimeout(timer);
      socket.removeListener('readable', onReadable);
      socket.removeListener('end', onEnd);
      socket.removeListener('close', onClose);
      socket.removeListener('error', onError);
    };

    const fail = (error: GatewayError): void => {
      if (settled) return;
      cleanup();
      reject(error);
    };

    // 'readable' + read() rather than 'data': it never switches the socket
    // into flowing mode, so once we stop reading nothing is emitted that no one
    // listens to. When the 'readable' listener is removed, Node resets the
    // stream to its initial (not flowing, not paused) state, and the next
    // consumer starts with the unshifted bytes.
    const onReadable = (): void => {
      while (!settled) {
        const chunk = socket.read() as Buffer | null;
        if (chunk === null) return;
        received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);

        let result: ParseResult;
        try {
          result = parseHeader(received);
        } catch (error) {
          fail(error instanceof GatewayError ? error : headerError('PROXY header: could not be parsed', error));
          return;
        }
        if (result.done) {
          cleanup();
          // Whatever followed the header in the same segment (typically the
          // client's first command) belongs to the next reader.
          if (result.length < received.length) socket.unshift(received.subarray(result.length));
          resolve(result.header);
          return;
        }
      }
    };

    const progress = (): string =>
      received.length === 0 ? 'no bytes received' : `${received.length} byte(s) received: ${describeBytes(received)}`;

    // Section 2.2: "The receiver must also reject incoming connections
    // containing partial protocol headers."
    const onEnd = (): void => fail(headerError(`PROXY header: the client ended the connection before a complete header (${progress()})`));
    const onClose = (): void => fail(headerError(`PROXY header: the connection closed before a complete header (${progress()})`));
    const onError = (error: Error): void =>
      fail(headerError(`PROXY header: socket error before a complete header: ${error.message}`, error));

    const timer = setTimeout(() => {
      fail(headerError(`PROXY header: no complete header within ${timeoutMs} ms (${progress()})`));
    }, timeoutMs);

    socket.on('readable', onReadable);
    socket.on('end', onEnd);
    socket.on('close', onClose);
    socket.on('error', onError);
  });
}

/**
 * Parses the start of a connection. Returns NEED_MORE while the bytes so far
 * are a valid prefix of a header, the header and its byte length once complete,
 * and throws as soon as the bytes cannot be a header (section 2.1 recommends
 * aborting "as soon as possible so that the sender gets a chance to notice").
 */
function parseHeader(buf: Buffer): ParseResult {
  // Section 2.2 (end) describes telling the versions apart by their first bytes:
  // the v2 signature or the US-ASCII "PROXY". We compare incrementally so that a
  // client speaking SMTP directly (e.g. "EHLO") is rejected on its first byte.
  if (isPrefixOf(buf, V2_SIGNATURE)) {
    return buf.length < V2_SIGNATURE.length ? NEED_MORE : parseV2(buf);
  }
  if (isPrefixOf(buf, V1_PREFIX)) {
    return buf.length < V1_PREFIX.length ? NEED_MORE : parseV1(buf);
  }
  throw headerError(
    `PROXY header: missing; the connection starts with ${describeBytes(buf)} instead of "PROXY " (v1) or the v2 signature`,
  );
}

/** Whether the first min(buf.length, expected.length) bytes of buf equal expected's. */
function isPrefixOf(buf: Buffer, expected: Buffer): boolean {
  const n = Math.min(buf.length, expected.length);
  return buf.compare(expected, 0, n, 0, n) === 0;
}

// ---------------------------------------------------------------------------
// Version 1 (section 2.1)

function parseV1(buf: Buffer): ParseResult {
  // "If the CRLF sequence is not found in the first 107 characters, the
  // receiver should declare the line invalid", and it "must not tolerate a
  // single CR or LF character to end the line".
  const limit = Math.min(buf.length, V1_MAX_LENGTH);
  for (let i = V1_PREFIX.length; i < limit; i++) {
    const byte = buf[i];
    if (byte === LF) {
      throw headerError(`PROXY v1 header: line ends with a bare LF instead of CRLF: ${describeBytes(buf.subarray(0, i + 1))}`);
    }
    if (byte !== CR) continue;
    if (i + 2 > V1_MAX_LENGTH) break; // CRLF would end past byte 107
    if (i + 1 >= buf.length) return NEED_MORE;
    if (buf[i + 1] !== LF) {
      throw headerError(`PROXY v1 header: CR not followed by LF: ${describeBytes(buf.subarray(0, i + 2))}`);
    }
    return { done: true, header: decodeV1Line(buf.toString('latin1', 0, i)), length: i + 2 };
  }
  if (buf.length >= V1_MAX_LENGTH) {
    throw headerError(`PROXY v1 header: no CRLF within the first ${V1_MAX_LENGTH} bytes (the spec maximum)`);
  }
  return NEED_MORE;
}

/** Decodes the line without its CRLF; it is known to start with "PROXY ". */
function decodeV1Line(line: string): ProxyHeader {
  const fields = line.split(' ');
  const protocol = fields[1] ?? '';

  // "For UNKNOWN, the rest of the line before the CRLF may be omitted by the
  // sender, and the receiver must ignore anything presented before the CRLF".
  if (protocol === 'UNKNOWN') return { version: 1, command: 'LOCAL' };
  if (protocol !== 'TCP4' && protocol !== 'TCP6') {
    throw headerError(`PROXY v1 header: unsupported protocol ${quote(protocol)} (expected TCP4, TCP6 or UNKNOWN)`);
  }

  // Exactly one space between the six fields: splitting on single spaces
  // yields empty fields for doubled spaces, which then fail validation.
  if (fields.length !== 6) {
    throw headerError(`PROXY v1 header: expected 6 space-separated fields, got ${fields.length} in ${quote(line)}`);
  }
  const [, , source = '', destination = '', sourcePort = '', destinationPort = ''] = fields;
  return {
    version: 1,
    command: 'PROXY',
    family: protocol,
    sourceAddress: v1Address(source, protocol, 'source'),
    destinationAddress: v1Address(destination, protocol, 'destination'),
    sourcePort: v1Port(sourcePort, 'source'),
    destinationPort: v1Port(destinationPort, 'destination'),
  };
}

function v1Address(text: string, family: 'TCP4' | 'TCP6', role: string): string {
  if (family === 'TCP4') {
    // net.isIPv4 accepts exactly 4 decimal numbers 0-255 without heading
    // zeroes, which is the spec's wording ("in order to avoid any possible
    // confusion with octal numbers").
    if (!net.isIPv4(text)) {
      throw headerError(`PROXY v1 header: ${role} address ${quote(text)} is not a valid IPv4 address`);
    }
    return text;
  }
  // A zone index (%eth0) is meaningless for a remote peer and not part of the
  // spec's grammar, though net.isIPv6 would accept it.
  if (text.includes('%') || !net.isIPv6(text)) {
    throw headerError(`PROXY v1 header: ${role} address ${quote(text)} is not a valid IPv6 address`);
  }
  return canonicalIPv6(text);
}

function v1Port(text: string, role: string): number {
  // "a decimal integer in the range [0..65535] inclusive. Heading zeroes are
  // not permitted".
  if (!/^(?:0|[1-9][0-9]{0,4})$/.test(text) || Number(text) > 65535) {
    throw headerError(`PROXY v1 header: ${role} port ${quote(text)} is not a decimal number from 0 to 65535`);
  }
  return Number(text);
}

// ---------------------------------------------------------------------------
// Version 2 (section 2.2)

function parseV2(buf: Buffer): ParseResult {
  // Each check runs as soon as its byte has arrived, so a bad header is
  // rejected without waiting for (or buffering) the rest of it.
  if (buf.length < 13) return NEED_MORE;
  const versionCommand = buf[12] ?? 0;
  const version = versionCommand >> 4;
  const command = versionCommand & 0x0f;
  // "it must always be sent as \x2 and the receiver must only accept this value".
  if (version !== 2) {
    throw headerError(`PROXY v2 header: unsupported version ${version} (version/command byte ${hex(versionCommand)}); only version 2 is defined`);
  }
  // 0 = LOCAL, 1 = PROXY; "Receivers must drop connections presenting
  // unexpected values here."
  if (command > 1) {
    throw headerError(`PROXY v2 header: unknown command ${hex(command)} (expected 0x0 LOCAL or 0x1 PROXY)`);
  }
  const isProxy = command === 1;

  if (buf.length < 14) return NEED_MORE;
  const familyByte = buf[13] ?? 0;
  // For LOCAL the spec says to "discard the protocol block including the family
  // which is ignored", so the family byte is only validated for PROXY. Family
  // values above 0x3 and transport values above 0x2 "must be rejected as
  // invalid by receivers".
  if (isProxy && (familyByte >> 4 > 0x3 || (familyByte & 0x0f) > 0x2)) {
    throw headerError(`PROXY v2 header: unsupported address family ${hex(familyByte)}`);
  }

  if (buf.length < V2_FIXED_LENGTH) return NEED_MORE;
  // "Receivers MUST always consider this field to skip the appropriate number
  // of bytes and must not assume zero is presented for LOCAL connections."
  const blockLength = buf.readUInt16BE(14);
  if (blockLength > V2_MAX_ADDRESS_BLOCK) {
    throw headerError(`PROXY v2 header: address block length ${blockLength} exceeds the ${V2_MAX_ADDRESS_BLOCK}-byte limit`);
  }
  const addressLength = isProxy ? v2AddressLength(familyByte) : 0;
  if (blockLength < addressLength) {
    throw headerError(
      `PROXY v2 header: address block length ${blockLength} is too short for family ${hex(familyByte)} (needs ${addressLength} bytes)`,
    );
  }

  const total = V2_FIXED_LENGTH + blockLength;
  if (buf.length < total) return NEED_MORE;

  // Bytes past the addresses are TLVs (section 2.2, "Type-Length-Value"); a
  // receiver "may choose to skip over and ignore" them, and nothing in postgate
  // uses them, so they are skipped along with the rest of the block.
  const block = buf.subarray(V2_FIXED_LENGTH, total);
  if (isProxy && familyByte === 0x11) {
    // TCP over IPv4: 4-byte source, 4-byte destination, 2-byte ports.
    return {
      done: true,
      length: total,
      header: {
        version: 2,
        command: 'PROXY',
        family: 'TCP4',
        sourceAddress: ipv4FromBytes(block.subarray(0, 4)),
        destinationAddress: ipv4FromBytes(block.subarray(4, 8)),
        sourcePort: block.readUInt16BE(8),
        destinationPort: block.readUInt16BE(10),
      },
    };
  }
  if (isProxy && familyByte === 0x21) {
    // TCP over IPv6: 16-byte source, 16-byte destination, 2-byte ports.
    return {
      done: true,
      length: total,
      header: {
        version: 2,
        command: 'PROXY',
        family: 'TCP6',
        sourceAddress: ipv6FromBytes(block.subarray(0, 16)),
        destinationAddress: ipv6FromBytes(block.subarray(16, 32)),
        sourcePort: block.readUInt16BE(32),
        destinationPort: block.readUInt16BE(34),
      },
    };
  }
  // LOCAL, or PROXY with AF_UNSPEC, AF_UNIX, or a DGRAM/UNSPEC transport. The
  // spec lets a receiver support only some combinations "provided that it
  // automatically falls back to the UNSPEC mode for the valid combinations
  // above that it does not support", i.e. uses the real connection endpoints.
  return { done: true, length: total, header: { version: 2, command: 'LOCAL' } };
}

/** Bytes of address information required before any TLV, for a PROXY command. */
function v2AddressLength(familyByte: number): number {
  switch (familyByte >> 4) {
    case 0x1:
      return 12; // 2 * 4-byte IPv4 + 2 * 2-byte port (for UDP too)
    case 0x2:
      return 36; // 2 * 16-byte IPv6 + 2 * 2-byte port
    case 0x3:
      return 216; // 2 * 108-byte AF_UNIX path
    default:
      return 0; // AF_UNSPEC: "The receiver should ignore address information."
  }
}

function ipv4FromBytes(bytes: Buffer): string {
  return `${bytes[0] ?? 0}.${bytes[1] ?? 0}.${bytes[2] ?? 0}.${bytes[3] ?? 0}`;
}

function ipv6FromBytes(bytes: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  return canonicalIPv6(groups.join(':'));
}

/**
 * The compressed form Node itself prints for socket addresses (RFC 5952 style,
 * lower case, IPv4-mapped as `::ffff:a.b.c.d`), so a proxied address compares
 * equal to the same address seen on a direct connection. SocketAddress formats
 * with the same libuv routine as `socket.remoteAddress`.
 */
function canonicalIPv6(address: string): string {
  return new net.SocketAddress({ address, family: 'ipv6' }).address;
}

// ---------------------------------------------------------------------------

function headerError(message: string, cause?: unknown): GatewayError {
  // Transient: a bad header is a proxy or network problem, not the sender's
  // message; the sending MTA should retry (docs/errors.md).
  return new GatewayError({ code: 'PG_PROXY_HEADER', message, transient: true, cause });
}

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(byte > 0xf ? 2 : 1, '0')}`;
}

/** Peer-supplied text, quoted and escaped so it cannot break a log line. */
function quote(text: string): string {
  return describeBytes(Buffer.from(text, 'latin1'));
}

/** The first bytes of `buf` as a quoted string with non-printables escaped. */
function describeBytes(buf: Buffer, max = 32): string {
  let out = '';
  for (const byte of buf.subarray(0, max)) {
    if (byte === CR) out += '\\r';
    else if (byte === LF) out += '\\n';
    else if (byte === 0x22 || byte === 0x5c) out += `\\${String.fromCharCode(byte)}`;
    else if (byte >= 0x20 && byte < 0x7f) out += String.fromCharCode(byte);
    else out += `\\x${byte.toString(16).padStart(2, '0')}`;
  }
  return `"${out}"${buf.length > max ? '…' : ''}`;
}
