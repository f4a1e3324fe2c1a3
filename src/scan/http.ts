/**
 * One HTTP/1.1 request over a fresh connection, the way rspamd's workers
 * serve them: rspamd answers every request with `Connection: close` and
 * closes (docs/scanning.md, "Why rspamd has its own HTTP client"), so a
 * connection pool never reuses anything and only adds its own per-connection
 * machinery. This asks for the close itself (RFC 9112 §9.6), writes the head
 * and the message as they are, and reads one answer: the status, then a body
 * delimited by Content-Length, chunked coding (RFC 9112 §7.1) or the close
 * (RFC 9112 §6.3). Bounded in size and time; every way it can go wrong is a
 * ScanError, and nothing the server sends keeps a socket open.
 *
 * Leaf module: imports only scan/.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Readable } from 'node:stream';
import { writeAll } from './socket.js';
import { ScanError, timeoutError } from './types.js';

/** Where the server listens. */
export type HttpEndpoint = { host: string; port: number; tls: boolean; servername?: string } | { path: string };

export interface HttpAnswer {
  status: number;
  body: Buffer;
}

/** Longest head of an answer read (status line and fields). */
const MAX_HEAD = 16 * 1024;

const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Sends `head` (the request line and fields, ending with the empty line)
 * and `body` (`size` bytes), resolves with the answer. `maxBody` bounds the
 * answer's body; `timeoutMs` the whole exchange.
 */
export function httpExchange(name: string, to: HttpEndpoint, timeoutMs: number, head: Buffer, body: Buffer | Readable, size: number, maxBody: number): Promise<HttpAnswer> {
  return new Promise<HttpAnswer>((resolve, reject) => {
    const socket: net.Socket =
      'path' in to
        ? net.connect({ path: to.path })
        : to.tls
          ? tls.connect({ host: to.host, port: to.port, servername: to.servername, ALPNProtocols: ['http/1.1'] })
          : net.connect({ host: to.host, port: to.port });
    let connected = false;
    let settled = false;
    // The answer as it arrives: chunks until the head is complete, then the body's.
    let buf: Buffer | null = null;
    let status = 0;
    let bodyStart = -1;
    /** The body's length from Content-Length; -1: chunked or until the close. */
    let length = -1;
    let chunked = false;
    const done = (err: Error | null, answer?: HttpAnswer) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const fail = (kind: ScanError['kind'], what: string) => done(new ScanError(kind, `${name}: ${what}`));
    const timer = setTimeout(() => done(timeoutError(name, timeoutMs)), timeoutMs);

    /** Reads the head once it is whole; false when the answer is broken (already failed). */
    const readHead = (): boolean => {
      const end = buf!.indexOf(HEAD_END);
      if (end === -1) {
        if (buf!.length > MAX_HEAD) fail('protocol', `answer head longer than ${MAX_HEAD} bytes`);
        return false;
      }
      const lines = buf!.toString('latin1', 0, end).split('\r\n');
      const st = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '');
      if (!st) {
        fail('protocol', 'answer is not HTTP/1.1');
        return false;
      }
      status = Number(st[1]);
      // An interim answer (100 Continue from a proxy) comes before the real one (RFC 9110 §15.2).
      if (status < 200) {
        buf = buf!.subarray(end + 4);
        return readHead();
      }
      for (let i = 1; i < lines.length; i++) {
        const line = lines[i]!;
        const colon = line.indexOf(':');
        if (colon <= 0) continue;
        const field = line.slice(0, colon).toLowerCase();
        const value = line.slice(colon + 1).trim();
        if (field === 'content-length') {
          // RFC 9112 §6.3: a length that does not parse, or two that differ, is unrecoverable.
          if (!/^\d{1,15}$/.test(value) || (length !== -1 && length !== Number(value))) {
            fail('protocol', 'answer has an invalid Content-Length');
            return false;
          }
          length = Number(value);
        } else if (field === 'transfer-encoding') chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
      }
      // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3 rule 3).
      if (chunked) length = -1;
      if (length > maxBody) {
        fail('protocol', `answer longer than ${maxBody} bytes`);
        return false;
      }
      bodyStart = end + 4;
      return true;
    };

    /** Whether the bytes so far hold the whole answer (resolving it then). */
    const complete = (closed: boolean): boolean => {
      const got = buf!.length - bodyStart;
      if (length >= 0) {
        if (got < length) return false;
        done(null, { status, body: buf!.subarray(bodyStart, bodyStart + length) });
        return true;
      }
      const body = chunked ? dechunk(buf!.subarray(bodyStart)) : closed ? buf!.subarray(bodyStart) : null;
      if (body === null) return false;
      if (body.length > maxBody) fail('protocol', `answer longer than ${maxBody} bytes`);
      else done(null, { status, body });
      return true;
    };

    socket.on('data', (chunk: Buffer) => {
      if (settled) return;
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      // Room for the head and a chunked body's framing; the body itself is checked whole.
      if (buf.length > MAX_HEAD + 2 * maxBody) return fail('protocol', `answer longer than ${maxBody} bytes`);
      if (bodyStart === -1 && !readHead()) return;
      complete(false);
    });
    socket.on('end', () => {
      if (settled) return;
      if (buf === null) return fail('protocol', 'closed without an answer');
      if (bodyStart === -1 && !readHead()) return settled || fail('protocol', 'closed within the answer head');
      if (!complete(true)) fail('protocol', 'closed before the whole answer');
    });
    socket.on('error', (err: Error & { code?: string }) => {
      if (settled) return;
      // A server may answer and close before it read the whole request (a
      // refusal): a whole answer is still the answer.
      if (connected && bodyStart !== -1 && (err.code === 'EPIPE' || err.code === 'ECONNRESET') && complete(true)) return;
      done(new ScanError(connected ? 'protocol' : 'connect', `${name}: ${err.code ?? err.message}`, { cause: err }));
    });
    socket.once(!('path' in to) && to.tls ? 'secureConnect' : 'connect', () => {
      connected = true;
    });

    // Written at once: the socket holds the bytes until it is connected, then
    // writes head and message together (one writev for a message in memory).
    if (Buffer.isBuffer(body)) {
      if (body.length !== size) return fail('protocol', `message was ${body.length} bytes, announced ${size}`);
      socket.cork();
      socket.write(head);
      socket.write(body);
      socket.uncork();
      return;
    }
    socket.write(head);
    void (async () => {
      let sent = 0;
      for await (const piece of body as AsyncIterable<Buffer>) {
        if (settled) break;
        sent += piece.length;
        await writeAll(socket, piece);
      }
      if (!settled && sent !== size) fail('protocol', `message was ${sent} bytes, announced ${size}`);
    })().catch((err: Error & { code?: string }) => {
      if (settled) return;
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET' || err.code === 'ERR_STREAM_DESTROYED') return; // 'end' or 'error' settles
      done(err instanceof ScanError ? err : new ScanError('protocol', `${name}: ${err.message}`, { cause: err }));
    });
  });
}

/**
 * The body of a chunked answer (RFC 9112 §7.1) once its last chunk is in;
 * null while it is incomplete. Chunk extensions and trailer fields are
 * skipped. Throws nothing: a malformed size line ends as "incomplete" and
 * the close or the timeout settles it.
 */
export function dechunk(b: Buffer): Buffer | null {
  const parts: Buffer[] = [];
  let at = 0;
  let total = 0;
  for (;;) {
    const eol = b.indexOf('\r\n', at, 'latin1');
    if (eol === -1) return null;
    const m = /^([0-9a-fA-F]{1,8})(?:[ \t]*;.*)?$/.exec(b.toString('latin1', at, eol));
    if (!m) return null;
    const n = parseInt(m[1]!, 16);
    // The last chunk; the trailer section after it ends with an empty line.
    if (n === 0) return b.indexOf('\r\n\r\n', eol, 'latin1') === -1 ? null : Buffer.concat(parts, total);
    const start = eol + 2;
    if (b.length < start + n + 2) return null;
    parts.push(b.subarray(start, start + n));
    total += n;
    at = start + n + 2;
  }
}
