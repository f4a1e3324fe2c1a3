/**
 * One request over a fresh TCP or Unix socket, as spamd and clamd speak them
 * (docs/scanning.md): write the request, read the whole answer until the
 * daemon closes, bounded in size and time. Every way it can go wrong ends in
 * a ScanError; nothing a daemon sends can throw past it or keep a socket open.
 *
 * Leaf module: imports only scan/types.ts.
 */
import net from 'node:net';
import { parseSocketAddress, ScanError, timeoutError } from './types.js';

export interface Exchange {
  /** Writes the request; resolves when every byte was handed to the socket. */
  write(socket: net.Socket): Promise<void>;
}

/** Largest answer read: spamd's SYMBOLS and clamd's one line are far smaller. */
export const MAX_ANSWER = 64 * 1024;

export function exchange(name: string, address: string, timeoutMs: number, req: (socket: net.Socket) => Promise<void>): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const where = parseSocketAddress(address);
    const socket = 'path' in where ? net.connect({ path: where.path }) : net.connect({ host: where.host, port: where.port });
    const chunks: Buffer[] = [];
    let size = 0;
    let connected = false;
    let settled = false;
    const done = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(Buffer.concat(chunks, size));
    };
    const timer = setTimeout(() => done(timeoutError(name, timeoutMs)), timeoutMs);
    socket.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_ANSWER) return done(new ScanError('protocol', `${name}: answer longer than ${MAX_ANSWER} bytes`));
      chunks.push(chunk);
    });
    socket.on('end', () => done(null));
    socket.on('error', (err: Error & { code?: string }) => {
      // A daemon may answer and close before it read everything (clamd past
      // its StreamMaxLength): what it said is the answer.
      if (connected && size > 0 && (err.code === 'EPIPE' || err.code === 'ECONNRESET')) return done(null);
      done(new ScanError(connected ? 'protocol' : 'connect', `${name}: ${err.code ?? err.message}`, { cause: err }));
    });
    socket.once('connect', () => {
      connected = true;
      req(socket).then(
        () => {
          if (!socket.destroyed) socket.end();
        },
        (err: unknown) => {
          if (settled) return;
          const e = err as Error & { code?: string };
          if ((e.code === 'EPIPE' || e.code === 'ECONNRESET' || e.code === 'ERR_STREAM_DESTROYED') && size > 0) return; // 'end' settles
          done(err instanceof ScanError ? err : new ScanError('protocol', `${name}: ${e.message}`, { cause: err }));
        },
      );
    });
  });
}

/** Writes one buffer, waiting for 'drain' when the socket is full (no unbounded buffering). */
export function writeAll(socket: net.Socket, buf: Buffer): Promise<void> {
  if (socket.destroyed) return Promise.reject(Object.assign(new Error('socket closed'), { code: 'ERR_STREAM_DESTROYED' }));
  if (socket.write(buf)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(Object.assign(new Error('socket closed'), { code: 'ERR_STREAM_DESTROYED' }));
    };
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}
