/**
 * A real webhook receiver on node:http (or https) for tests: every request is
 * recorded, and a handler decides the answer, including faults (a reset
 * connection, silence).
 */
import http from 'node:http';
import https from 'node:https';
import { once } from 'node:events';
import type { TLSSocket } from 'node:tls';

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  at: number;
  /** Subject CN of the client certificate (https with requestCert). */
  clientCert?: string;
  /** When the response was sent (Date.now()); unset while a delayed answer waits, and for a reset or silence. */
  answeredAt?: number;
}

export type Answer =
  | { status: number; json?: unknown; headers?: Record<string, string>; delayMs?: number }
  | { fault: 'reset' }
  | { fault: 'silence' };

export interface Receiver {
  url: string;
  port: number;
  got: Received[];
  /** Requests in flight now / at most so far. */
  inflight: number;
  maxInflight: number;
  close(): Promise<void>;
}

export async function startReceiver(
  handler: (req: Received, n: number) => Answer | Promise<Answer>,
  /** keep: false leaves `got` empty (a long run that must not hold every body). */
  opts: { path?: string; tls?: https.ServerOptions; keep?: boolean } = {},
): Promise<Receiver> {
  const state = { got: [] as Received[], inflight: 0, maxInflight: 0 };
  let count = 0;
  // Answers still waiting for their delayMs: cleared on close, so a long
  // delay does not keep the test process alive after the test.
  const delayed = new Set<NodeJS.Timeout>();
  const listener = (req: http.IncomingMessage, res: http.ServerResponse) => {
    state.inflight++;
    state.maxInflight = Math.max(state.maxInflight, state.inflight);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const cert = (req.socket as TLSSocket).getPeerCertificate?.();
      const r: Received = { headers: req.headers, body: Buffer.concat(chunks), at: Date.now(), ...(cert && cert.subject ? { clientCert: cert.subject.CN as string } : {}) };
      if (opts.keep !== false) state.got.push(r);
      const a = await handler(r, ++count);
      const done = () => state.inflight--;
      if ('fault' in a) {
        done();
        if (a.fault === 'reset') req.socket.destroy();
        // silence: never answer; the client times out
        return;
      }
      const send = () => {
        done();
        r.answeredAt = Date.now();
        if (a.json !== undefined) {
          res.writeHead(a.status, { 'content-type': 'application/json', ...a.headers }).end(JSON.stringify(a.json));
        } else res.writeHead(a.status, a.headers).end();
      };
      if (a.delayMs) {
        const timer = setTimeout(() => {
          delayed.delete(timer);
          send();
        }, a.delayMs);
        delayed.add(timer);
      } else send();
    });
  };
  const server = opts.tls ? https.createServer(opts.tls, listener) : http.createServer(listener);
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}${opts.path ?? '/inbound'}`,
    port,
    got: state.got,
    get inflight() {
      return state.inflight;
    },
    get maxInflight() {
      return state.maxInflight;
    },
    async close() {
      for (const t of delayed) clearTimeout(t);
      delayed.clear();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
