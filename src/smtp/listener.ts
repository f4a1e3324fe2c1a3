/**
 * One listening socket. postgate accepts connections itself (not through
 * smtp-server's listen) so it can, before the SMTP session starts:
 * - refuse new connections with 421 while draining for shutdown;
 * - read a PROXY v1/v2 header (smtp-server's own `useProxy` reads only v1,
 *   and an AWS NLB sends only v2), accepted only from trusted sources;
 * - run the implicit TLS handshake of an smtps listener (RFC 8314 §3.3).
 * Then the socket is handed to smtp-server with the real client address.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { SMTPServer } from 'smtp-server';
import type { ResolvedListener } from '../config/load.js';
import { createAddressMatcher } from '../net/cidr.js';
import { readProxyHeader } from '../net/proxy-protocol.js';
import type { CertificateStore } from '../tls/certificates.js';
import type { Logger } from '../ops/logger.js';
import type { Metrics } from '../ops/metrics.js';
import { reply, type Reply } from '../transaction/replies.js';
import { internals } from './extensions.js';

export interface ListenerContext {
  logger: Logger;
  metrics: Metrics;
  certs: CertificateStore | null;
  hostname: string;
  isDraining(): boolean;
  handshakeTimeoutMs: number;
  /** Connection limits (all listeners, per client address): the reply to refuse with, or null. */
  admission: { admit(address: string): Reply | null; release(address: string): void };
  /**
   * Runs `fn` once when the SMTP session `sessionId` closes. The raw socket's
   * 'close' cannot be used: smtp-server's STARTTLS strips its listeners.
   */
  onSessionClose(sessionId: string, fn: () => void): void;
}

export function createListener(l: ResolvedListener, smtp: SMTPServer, ctx: ListenerContext): net.Server {
  const trusted = l.proxyProtocol ? createAddressMatcher(l.proxyProtocol.trustedSources) : null;
  const log = ctx.logger.child({ listener: l.name });
  const srv = internals(smtp);

  const handOver = (socket: net.Socket, remoteAddress: string | undefined, remotePort: number | undefined) => {
    const client = remoteAddress ?? socket.remoteAddress ?? '';
    const refusal = ctx.admission.admit(client);
    if (refusal) {
      ctx.metrics.shed.inc({ reason: 'connections' });
      log.warn({ client, code: 'PG_TOO_MANY_CONNECTIONS' }, 'connection limit reached, refused');
      socket.end(`${refusal.line}\r\n`);
      return;
    }
    ctx.metrics.activeConnections.inc({ listener: l.name });
    const id = randomBytes(8).toString('hex');
    ctx.onSessionClose(id, () => {
      ctx.metrics.activeConnections.dec({ listener: l.name });
      ctx.admission.release(client);
    });
    srv.connect(socket, {
      id,
      ...(remoteAddress ? { remoteAddress } : {}),
      ...(remotePort !== undefined ? { remotePort } : {}),
    });
  };

  const startTls = (socket: net.Socket, remoteAddress: string | undefined, remotePort: number | undefined) => {
    const certs = ctx.certs!;
    const secure = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: certs.defaultContext,
      SNICallback: certs.sniCallback,
    });
    const timer = setTimeout(() => secure.destroy(), ctx.handshakeTimeoutMs);
    timer.unref();
    secure.once('error', (err: Error) => {
      clearTimeout(timer);
      log.debug({ client: remoteAddress ?? socket.remoteAddress, err: err.message }, 'TLS handshake failed');
      secure.destroy();
    });
    secure.once('secure', () => {
      clearTimeout(timer);
      secure.removeAllListeners('error');
      handOver(secure, remoteAddress ?? socket.remoteAddress, remotePort ?? socket.remotePort);
    });
  };

  const proceed = (socket: net.Socket, remoteAddress?: string, remotePort?: number) => {
    if (l.role === 'smtps') startTls(socket, remoteAddress, remotePort);
    else handOver(socket, remoteAddress, remotePort);
  };

  const server = net.createServer({ pauseOnConnect: false }, (socket) => {
    ctx.metrics.connections.inc({ listener: l.name });
    // Errors on a socket nobody owns yet must not crash the process.
    const early = (err: Error) => log.debug({ err: err.message }, 'socket error before the session');
    socket.on('error', early);
    socket.once('close', () => socket.off('error', early));

    if (ctx.isDraining()) {
      // RFC 5321 §3.8: 421 tells the client to come back later (plaintext even
      // on smtps: there is no session to protect yet and the client learns why).
      if (l.role === 'smtps') socket.destroy();
      else socket.end(`${reply('PG_SHUTTING_DOWN', { hostname: ctx.hostname }).line}\r\n`);
      return;
    }
    if (!l.proxyProtocol) return proceed(socket);

    if (!trusted!.matches(socket.remoteAddress ?? '')) {
      ctx.metrics.proxyRejected.inc({ listener: l.name });
      log.warn({ source: socket.remoteAddress }, 'PROXY protocol connection from an untrusted source, closing');
      socket.destroy();
      return;
    }
    readProxyHeader(socket, { timeoutMs: l.proxyProtocol.timeout }).then(
      (header) => {
        if (header.command === 'LOCAL') {
          // v2 LOCAL / v1 UNKNOWN: the balancer's own connection (health checks).
          return proceed(socket);
        }
        proceed(socket, header.sourceAddress, header.sourcePort);
      },
      (err: Error) => {
        ctx.metrics.proxyRejected.inc({ listener: l.name });
        log.warn({ source: socket.remoteAddress, err: err.message }, 'bad PROXY header, closing');
        socket.destroy();
      },
    );
  });
  server.on('error', (err) => log.error({ err: err.message }, 'listener error'));
  return server;
}
