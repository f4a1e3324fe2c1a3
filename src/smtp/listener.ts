/**
 * One listening socket. postgate accepts connections itself (not through
 * smtp-server's listen) so it can, before the SMTP session starts:
 * - refuse new connections with 421 while draining for shutdown;
 * - read a PROXY v1/v2 header (smtp-server's own `useProxy` reads only v1,
 *   and an AWS NLB sends only v2), accepted only from trusted sources;
 * - run the implicit TLS handshake of an smtps listener (RFC 8314 §3.3);
 * - refuse a client of smtp.clients.deny or of a `reject-connect` DNS block
 *   list with 554 in place of the greeting (docs/blocklists.md). This happens
 *   here, not in smtp-server's onConnect, because onConnect runs after the
 *   early-talker pause has already written the first `220-` line.
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
import type { ClientFilters, SessionListing } from './client-filters.js';
import { internals } from './extensions.js';

/** How long a client refused in place of the greeting may stay to send QUIT, and how many other commands it may send. */
const REFUSED_SESSION_MS = 10_000;
const REFUSED_SESSION_COMMANDS = 10;

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
  /** smtp.clients.deny and smtp.dnsbl (null: none configured). */
  filters: ClientFilters | null;
}

/**
 * RFC 5321 §3.1: a server that answers 554 in place of the greeting must
 * still wait for QUIT, answering 503 to anything else. Bounded in time and
 * commands, so a refused client cannot hold the socket.
 */
function refuseUntilQuit(socket: net.Socket, refusal: Reply, hostname: string, metrics: Metrics): void {
  socket.on('error', () => socket.destroy());
  let done = false;
  const finish = (last?: Reply) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    if (!last) return void socket.end();
    metrics.countReply(last.code);
    socket.end(`${last.line}\r\n`);
  };
  const timer = setTimeout(() => finish(), REFUSED_SESSION_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  metrics.countReply(refusal.code);
  socket.write(`${refusal.line}\r\n`);
  let buf = '';
  let commands = 0;
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => {
    if (done) return;
    buf += d;
    for (let i = buf.indexOf('\n'); i !== -1 && !done; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      if (/^quit\s*$/i.test(line)) return finish(reply('PG_REFUSED_QUIT', { hostname }));
      if (++commands > REFUSED_SESSION_COMMANDS) return finish();
      const seq = reply('PG_REFUSED_SEQUENCE');
      metrics.countReply(seq.code);
      socket.write(`${seq.line}\r\n`);
    }
    // A line longer than any command (RFC 5321 §4.5.3.1.4) ends it.
    if (buf.length > 4096) finish();
  });
}

export function createListener(l: ResolvedListener, smtp: SMTPServer, ctx: ListenerContext): net.Server {
  const trusted = l.proxyProtocol ? createAddressMatcher(l.proxyProtocol.trustedSources) : null;
  const log = ctx.logger.child({ listener: l.name });
  const srv = internals(smtp);

  const handOver = (socket: net.Socket, remoteAddress: string | undefined, remotePort: number | undefined) => {
    const client = remoteAddress ?? socket.remoteAddress ?? '';
    const denied = ctx.filters?.denied(client);
    if (denied) return refuseUntilQuit(socket, denied.reply, ctx.hostname, ctx.metrics);
    const refusal = ctx.admission.admit(client);
    if (refusal) {
      ctx.metrics.shed.inc({ reason: 'connections' });
      log.warn({ client, code: 'PG_TOO_MANY_CONNECTIONS' }, 'connection limit reached, refused');
      socket.end(`${refusal.line}\r\n`);
      return;
    }
    const screening = ctx.filters?.screen(client) ?? null;
    if (!screening) return startSession(socket, client, remoteAddress, remotePort, null);
    // The lookups hold the connection's slot, so maxClients also bounds them.
    // A failed lookup is "not listed" (fail open), and so is anything unexpected.
    void screening.refusal
      .catch((err: unknown) => {
        log.error({ client, err: (err as Error).message }, 'block list check failed, client treated as not listed');
        return null;
      })
      .then((listed) => {
        if (socket.destroyed) return ctx.admission.release(client);
        if (!listed) return startSession(socket, client, remoteAddress, remotePort, screening.listings);
        ctx.admission.release(client);
        refuseUntilQuit(socket, listed.reply, ctx.hostname, ctx.metrics);
      });
  };

  const startSession = (
    socket: net.Socket,
    client: string,
    remoteAddress: string | undefined,
    remotePort: number | undefined,
    listings: Promise<SessionListing[]> | null,
  ) => {
    ctx.metrics.activeConnections.inc({ listener: l.name });
    const id = randomBytes(8).toString('hex');
    if (listings) ctx.filters?.handOver(id, listings);
    ctx.onSessionClose(id, () => {
      ctx.metrics.activeConnections.dec({ listener: l.name });
      ctx.admission.release(client);
      ctx.filters?.forget(id);
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
