/**
 * TLS 1.1 clients for the "old protocol is refused" tests. A refusal only
 * proves something about a server when this Node/OpenSSL would really speak
 * TLS 1.1: OpenSSL 3 needs SECLEVEL=0 for it, and some builds (or a system
 * openssl.cnf) refuse it on the client side whatever the options say. So the
 * tests first try a permissive server (clientSpeaksTls11) and skip without it.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { fixturePath } from './fixtures.js';

/** A client that offers TLS 1.0/1.1 only, and would really use them (OpenSSL 3 needs SECLEVEL=0 for that). */
export const OLD_CLIENT: tls.ConnectionOptions = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' };

/** How a TLS handshake ended, seen from the client. */
export type HandshakeOutcome = { ok: true; protocol: string | null; socket: tls.TLSSocket } | { ok: false; error: NodeJS.ErrnoException };

/** Connects to 127.0.0.1:`port` and runs a client handshake; never rejects. */
export function tryHandshake(port: number, opts: tls.ConnectionOptions = {}): Promise<HandshakeOutcome> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
    const onError = (error: NodeJS.ErrnoException) => {
      socket.destroy();
      resolve({ ok: false, error });
    };
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      socket.off('error', onError);
      socket.on('error', () => undefined);
      resolve({ ok: true, protocol: socket.getProtocol(), socket });
    });
  });
}

let control: Promise<boolean> | undefined;

/**
 * Whether OLD_CLIENT negotiates TLS 1.1 with a server that allows it (the
 * fixture certificate, minVersion TLSv1, SECLEVEL=0). Tried once per process.
 */
export function clientSpeaksTls11(): Promise<boolean> {
  control ??= (async () => {
    const lax = net.createServer((raw) => {
      raw.on('error', () => undefined);
      const s = new tls.TLSSocket(raw, {
        isServer: true,
        secureContext: tls.createSecureContext({
          cert: readFileSync(fixturePath('tls', 'mx.pem')),
          key: readFileSync(fixturePath('tls', 'mx-key.pem')),
          minVersion: 'TLSv1',
          ciphers: 'DEFAULT@SECLEVEL=0',
        }),
      });
      s.on('error', () => undefined);
      s.on('secure', () => s.end());
    });
    lax.listen(0, '127.0.0.1');
    await once(lax, 'listening');
    try {
      const r = await tryHandshake((lax.address() as AddressInfo).port, OLD_CLIENT);
      if (r.ok) r.socket.destroy();
      return r.ok && r.protocol === 'TLSv1.1';
    } finally {
      lax.close();
    }
  })();
  return control;
}
