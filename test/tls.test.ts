import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';

import { GatewayError } from '../src/core/errors.js';
import { CertificateStore } from '../src/tls/certificates.js';
import type { CertificateSpec, CertificateStoreOptions } from '../src/tls/certificates.js';
import { fixturePath } from './helpers/fixtures.js';
import { OLD_CLIENT, clientSpeaksTls11 } from './helpers/tls.js';

const fx = (name: string): string => fixturePath('tls', name);
const spec = (name: string): CertificateSpec => ({ cert: fx(`${name}.pem`), key: fx(`${name}-key.pem`) });
const fingerprint = (file: string): string => new X509Certificate(readFileSync(file)).fingerprint256;

const FP = {
  mx: fingerprint(fx('mx.pem')),
  mx2: fingerprint(fx('mx2.pem')),
  renewed: fingerprint(fx('mx-renewed.pem')),
  wildcard: fingerprint(fx('wildcard.pem')),
};

interface TestServer {
  port: number;
  /** Errors seen by the server side of each connection (failed handshakes). */
  errors: Error[];
  close(): Promise<void>;
}

/**
 * A TLS server wired the way smtp-server upgrades a connection (implicit TLS
 * and STARTTLS): a TLSSocket per connection, started with the store's
 * current default context, switched by SNI. Not tls.createServer: it ignores
 * a `secureContext` option, so clients without SNI would get no certificate.
 */
async function startServer(store: CertificateStore): Promise<TestServer> {
  const errors: Error[] = [];
  const raws = new Set<net.Socket>();
  const server = net.createServer((raw) => {
    raws.add(raw);
    raw.on('close', () => raws.delete(raw));
    raw.on('error', () => {});
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: store.defaultContext, SNICallback: store.sniCallback });
    socket.on('error', (err) => errors.push(err));
    socket.on('secure', () => {
      // Tell the client what the server saw, so each handshake can check it.
      socket.end(socket.servername === false ? '(none)' : String(socket.servername));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    errors,
    async close() {
      for (const raw of raws) raw.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

interface Handshake {
  cert: tls.PeerCertificate;
  protocol: string | null;
  /** The SNI name as the server saw it, "(none)" when the client sent none. */
  serverSaw: string;
}

function handshake(port: number, opts: tls.ConnectionOptions = {}): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts }, () => {
      const cert = socket.getPeerCertificate();
      const protocol = socket.getProtocol();
      let serverSaw = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (serverSaw += chunk));
      socket.on('end', () => resolve({ cert, protocol, serverSaw }));
    });
    socket.once('error', reject);
  });
}

/** Replaces a file the way renewal tools do: write aside, then rename over it. */
async function replaceFile(target: string, source: string): Promise<void> {
  const tmp = `${target}.tmp-${process.pid}`;
  await writeFile(tmp, await readFile(source));
  await rename(tmp, target);
}

async function tempCopy(...names: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-tls-'));
  for (const name of names) await copyFile(fx(name), path.join(dir, name));
  return dir;
}

describe('CertificateStore over real TLS connections', () => {
  let store: CertificateStore;
  let server: TestServer;

  before(async () => {
    store = await CertificateStore.load({ certificates: [spec('mx'), spec('mx2'), spec('wildcard')] });
    server = await startServer(store);
  });
  after(async () => {
    await server.close();
    store.close();
  });

  test('a client without SNI gets the first (default) certificate', async () => {
    const { cert } = await handshake(server.port);
    assert.equal(cert.fingerprint256, FP.mx);
    assert.equal(cert.subject.CN, 'mx.example.test');
    assert.match(cert.subjectaltname ?? '', /DNS:mx\.example\.test/);
    assert.match(cert.subjectaltname ?? '', /IP Address:127\.0\.0\.1/);
    assert.equal((await handshake(server.port)).serverSaw, '(none)', 'the client must really have sent no SNI');
  });

  test('an exact SNI name selects its certificate, case-insensitively', async () => {
    const exact = await handshake(server.port, { servername: 'mx2.example.test' });
    assert.equal(exact.cert.fingerprint256, FP.mx2);
    assert.equal(exact.cert.subject.CN, 'mx2.example.test');
    assert.equal(exact.cert.subjectaltname, 'DNS:mx2.example.test');

    const upper = await handshake(server.port, { servername: 'MX2.Example.TEST' });
    assert.equal(upper.cert.fingerprint256, FP.mx2);

    const first = await handshake(server.port, { servername: 'mx.example.test' });
    assert.equal(first.cert.fingerprint256, FP.mx);
  });

  test('a wildcard certificate covers exactly one label', async () => {
    const one = await handshake(server.port, { servername: 'a.hooks.example.test' });
    assert.equal(one.cert.fingerprint256, FP.wildcard);
    assert.equal(one.cert.subjectaltname, 'DNS:*.hooks.example.test');

    const two = await handshake(server.port, { servername: 'a.b.hooks.example.test' });
    assert.equal(two.cert.fingerprint256, FP.mx, 'two labels are not covered by *.hooks.example.test');

    const bare = await handshake(server.port, { servername: 'hooks.example.test' });
    assert.equal(bare.cert.fingerprint256, FP.mx, 'the wildcard does not cover its parent');
  });

  test('an unknown SNI name gets the default certificate, not an abort', async () => {
    const { cert, serverSaw } = await handshake(server.port, { servername: 'nowhere.example.test' });
    assert.equal(cert.fingerprint256, FP.mx);
    assert.equal(serverSaw, 'nowhere.example.test');
  });

  test('TLS 1.2 is accepted by default', async () => {
    const { protocol, cert } = await handshake(server.port, { maxVersion: 'TLSv1.2', servername: 'mx2.example.test' });
    assert.equal(protocol, 'TLSv1.2');
    assert.equal(cert.fingerprint256, FP.mx2);
  });

  test('a TLS 1.1 client fails the handshake, refused by the server', async (t) => {
    // Control: this Node/OpenSSL can speak TLS 1.1 at all; otherwise the
    // failure below would prove nothing about our server.
    if (!(await clientSpeaksTls11())) {
      t.skip('this OpenSSL build cannot negotiate TLS 1.1 even with a permissive server');
      return;
    }

    const before = server.errors.length;
    await assert.rejects(handshake(server.port, OLD_CLIENT), (err: NodeJS.ErrnoException) => {
      assert.match(String(err.code), /PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL/);
      return true;
    });
    await assert.rejects(handshake(server.port, { ...OLD_CLIENT, servername: 'mx2.example.test' }));
    // Give the server side a moment to record its end of the failures (it
    // usually has by now; the wait ends as soon as both are in).
    for (let i = 0; i < 500 && server.errors.length < before + 2; i++) await sleep(10);
    const codes = server.errors.slice(before).map((e) => (e as NodeJS.ErrnoException).code);
    assert.deepEqual(codes, ['ERR_SSL_UNSUPPORTED_PROTOCOL', 'ERR_SSL_UNSUPPORTED_PROTOCOL']);
  });
});

describe('CertificateStore with minVersion TLSv1.3', () => {
  let store: CertificateStore;
  let server: TestServer;
  before(async () => {
    store = await CertificateStore.load({ certificates: [spec('mx'), spec('mx2')], minVersion: 'TLSv1.3' });
    server = await startServer(store);
  });
  after(async () => {
    await server.close();
    store.close();
  });

  test('refuses TLS 1.2 with and without SNI, accepts TLS 1.3', async () => {
    await assert.rejects(handshake(server.port, { maxVersion: 'TLSv1.2' }));
    await assert.rejects(handshake(server.port, { maxVersion: 'TLSv1.2', servername: 'mx2.example.test' }));
    const ok = await handshake(server.port, { servername: 'mx2.example.test' });
    assert.equal(ok.protocol, 'TLSv1.3');
    assert.equal(ok.cert.fingerprint256, FP.mx2);
  });
});

describe('CertificateStore name lookup', () => {
  const stores: CertificateStore[] = [];
  const load = async (certificates: CertificateSpec[]): Promise<CertificateStore> => {
    const s = await CertificateStore.load({ certificates });
    stores.push(s);
    return s;
  };
  after(() => {
    for (const s of stores) s.close();
  });

  test('hostnames come from DNS subjectAltNames, never IP addresses', async () => {
    const store = await load([spec('mx'), spec('mx2'), spec('wildcard')]);
    assert.deepEqual(store.hostnames(), ['mx.example.test', 'localhost', 'mx2.example.test', '*.hooks.example.test']);
  });

  test('a certificate without subjectAltName is served under its subject CN', async () => {
    const store = await load([spec('mx'), spec('legacy')]);
    assert.deepEqual(store.hostnames(), ['mx.example.test', 'localhost', 'legacy.example.test']);
    assert.notEqual(store.contextFor('legacy.example.test'), store.defaultContext);
  });

  test('configured hostnames replace the certificate names, normalized', async () => {
    const store = await load([spec('mx2'), { ...spec('mx'), hostnames: ['Smtp.Example.TEST.'] }]);
    assert.deepEqual(store.hostnames(), ['mx2.example.test', 'smtp.example.test']);
    const mx = store.contextFor('smtp.example.test');
    assert.notEqual(mx, store.defaultContext);
    assert.equal(store.contextFor('mx.example.test'), store.defaultContext, 'names not configured are not served');
  });

  test('contextFor ignores case and a trailing dot; wildcards match one label', async () => {
    const store = await load([spec('mx'), spec('mx2'), spec('wildcard')]);
    const mx2 = store.contextFor('mx2.example.test');
    const wild = store.contextFor('x.hooks.example.test');
    assert.notEqual(mx2, store.defaultContext);
    assert.notEqual(wild, store.defaultContext);
    assert.notEqual(wild, mx2);
    assert.equal(store.contextFor('MX2.EXAMPLE.TEST.'), mx2);
    assert.equal(store.contextFor('Other.Hooks.Example.Test.'), wild);
    assert.equal(store.contextFor('.hooks.example.test'), store.defaultContext);
    assert.equal(store.contextFor('a.b.hooks.example.test'), store.defaultContext);
    assert.equal(store.contextFor(''), store.defaultContext);
  });

  test('sniCallback works detached from the store', async () => {
    const store = await load([spec('mx'), spec('mx2')]);
    const { sniCallback } = store;
    const ctx = await new Promise<tls.SecureContext | undefined>((resolve, reject) =>
      sniCallback('mx2.example.test', (err, c) => (err ? reject(err) : resolve(c))),
    );
    assert.equal(ctx, store.contextFor('mx2.example.test'));
    assert.notEqual(ctx, store.defaultContext);
  });
});

describe('CertificateStore load errors', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-tls-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const rejectsWith = async (certificates: CertificateSpec[], ...fragments: string[]): Promise<GatewayError> => {
    let caught: unknown;
    await assert.rejects(
      CertificateStore.load({ certificates }).then((s) => s.close()),
      (err: unknown) => {
        caught = err;
        return true;
      },
    );
    assert.ok(caught instanceof GatewayError, `expected a GatewayError, got ${String(caught)}`);
    assert.equal(caught.code, 'PG_TLS_CERT');
    assert.equal(caught.transient, false);
    for (const f of fragments) assert.ok(caught.message.includes(f), `message ${JSON.stringify(caught.message)} should name ${f}`);
    return caught;
  };

  test('a missing certificate file', async () => {
    const missing = path.join(dir, 'nope.pem');
    const err = await rejectsWith([{ cert: missing, key: fx('mx-key.pem') }], missing, 'not found');
    assert.match(err.message, /^cannot load TLS certificate /);
  });

  test('a missing key file, even for a later certificate', async () => {
    const missing = path.join(dir, 'nope-key.pem');
    await rejectsWith([spec('mx'), { cert: fx('mx2.pem'), key: missing }], missing, 'private key');
  });

  test('a certificate file that is not PEM', async () => {
    const bad = path.join(dir, 'garbage.pem');
    await writeFile(bad, 'this is not a certificate\n');
    await rejectsWith([{ cert: bad, key: fx('mx-key.pem') }], bad, 'not a PEM X.509 certificate');
  });

  test('a key file that holds a certificate', async () => {
    await rejectsWith([{ cert: fx('mx.pem'), key: fx('mx2.pem') }], fx('mx2.pem'), 'private key');
  });

  test('a key that does not match its certificate, without leaking the key', async () => {
    const err = await rejectsWith([{ cert: fx('mx.pem'), key: fx('mx2-key.pem') }], fx('mx.pem'), fx('mx2-key.pem'), 'does not match');
    const keyBody = readFileSync(fx('mx2-key.pem'), 'utf8').split('\n')[1] ?? '';
    assert.ok(keyBody.length > 20);
    assert.ok(!err.message.includes(keyBody));
    assert.ok(!err.message.includes('PRIVATE KEY'));
  });

  test('no certificate at all', async () => {
    await rejectsWith([], 'no TLS certificate');
  });
});

describe('CertificateStore hot reload', () => {
  const stores: CertificateStore[] = [];
  const servers: TestServer[] = [];
  const dirs: string[] = [];
  after(async () => {
    for (const s of servers) await s.close();
    for (const s of stores) s.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  const setup = async (
    logger?: CertificateStoreOptions['logger'],
    watchIntervalMs = 50,
  ): Promise<{ store: CertificateStore; server: TestServer; cert: string; key: string; reloadErrors: unknown[] }> => {
    const dir = await tempCopy('mx.pem', 'mx-key.pem');
    dirs.push(dir);
    const cert = path.join(dir, 'mx.pem');
    const key = path.join(dir, 'mx-key.pem');
    const store = await CertificateStore.load({
      certificates: [{ cert, key }, spec('mx2')],
      watch: true,
      watchIntervalMs,
      ...(logger ? { logger } : {}),
    });
    stores.push(store);
    const reloadErrors: unknown[] = [];
    store.on('reloadError', (err) => reloadErrors.push(err));
    const server = await startServer(store);
    servers.push(server);
    assert.equal((await handshake(server.port)).cert.fingerprint256, FP.mx);
    return { store, server, cert, key, reloadErrors };
  };

  test('a renewed certificate and key are served after a reload', async () => {
    // Polls every 250 ms: the two writes below, a few ms apart, must fall
    // within one interval for a single reload (a mismatch error otherwise),
    // with room for a busy machine to stretch the gap.
    const { store, server, cert, key, reloadErrors } = await setup(undefined, 250);
    const reloaded = once(store, 'reload', { signal: AbortSignal.timeout(10_000) });
    // Certificate first, then key: the order that would briefly mismatch
    // without the debounce.
    await replaceFile(cert, fx('mx-renewed.pem'));
    await replaceFile(key, fx('mx-renewed-key.pem'));
    await reloaded;

    assert.equal((await handshake(server.port)).cert.fingerprint256, FP.renewed, 'default (no SNI) context is renewed');
    assert.equal((await handshake(server.port, { servername: 'mx.example.test' })).cert.fingerprint256, FP.renewed);
    assert.equal((await handshake(server.port, { servername: 'localhost' })).cert.fingerprint256, FP.renewed);
    assert.equal((await handshake(server.port, { servername: 'mx2.example.test' })).cert.fingerprint256, FP.mx2);
    assert.deepEqual(reloadErrors, [], 'cert and key written together must reload once, without a mismatch error');
  });

  test('a key written a moment after its certificate lands in the same reload (debounce)', async () => {
    // Polls run every 500 ms from load(). The certificate is written at
    // about 900 ms and the key 200 ms later, so the poll at 1000 ms sees the
    // new certificate with the old key. The store must wait until the files
    // have stayed unchanged for a whole interval before reading them, so
    // there is no attempt with a mismatched pair. (A busy machine can only
    // stretch the 200 ms gap; it would take 300 ms more to span two polls.)
    const loading = performance.now();
    const { store, server, cert, key, reloadErrors } = await setup(undefined, 500);
    const reloaded = once(store, 'reload', { signal: AbortSignal.timeout(10_000) });
    await sleep(Math.max(0, loading + 900 - performance.now()));
    await replaceFile(cert, fx('mx-renewed.pem'));
    await sleep(200);
    await replaceFile(key, fx('mx-renewed-key.pem'));
    await reloaded;
    assert.deepEqual(reloadErrors, []);
    assert.equal((await handshake(server.port)).cert.fingerprint256, FP.renewed);
  });

  test('a broken pair keeps the old certificate, and the next change is retried', async () => {
    const logged: Array<{ obj: object; msg: string }> = [];
    const logger = { info: () => {}, error: (obj: object, msg: string) => void logged.push({ obj, msg }) };
    const { store, server, cert, key, reloadErrors } = await setup(logger);

    const failed = once(store, 'reloadError', { signal: AbortSignal.timeout(5000) });
    await replaceFile(cert, fx('mx-renewed.pem')); // the key stays the old one: mismatch
    const [err] = (await failed) as [unknown];
    assert.ok(err instanceof GatewayError);
    assert.equal(err.code, 'PG_TLS_CERT');
    assert.ok(err.message.includes(key) && err.message.includes(cert), err.message);

    assert.equal((await handshake(server.port)).cert.fingerprint256, FP.mx, 'still the old certificate');
    assert.equal((await handshake(server.port, { servername: 'mx.example.test' })).cert.fingerprint256, FP.mx);

    assert.equal(logged.length, 1);
    assert.match(logged[0]?.msg ?? '', /reload failed/);
    const keyBody = readFileSync(fx('mx-key.pem'), 'utf8').split('\n')[1] ?? '';
    assert.ok(!JSON.stringify(logged, (_k, v: unknown) => (v instanceof Error ? v.message : v)).includes(keyBody));

    // Unchanged files are not retried on every poll.
    await sleep(300);
    assert.equal(reloadErrors.length, 1);

    const reloaded = once(store, 'reload', { signal: AbortSignal.timeout(5000) });
    await replaceFile(key, fx('mx-renewed-key.pem'));
    await reloaded;
    assert.equal((await handshake(server.port)).cert.fingerprint256, FP.renewed);
  });

  test('close() stops watching', async () => {
    const { store, server, cert, key } = await setup();
    let reloads = 0;
    store.on('reload', () => reloads++);
    store.close();
    await replaceFile(cert, fx('mx-renewed.pem'));
    await replaceFile(key, fx('mx-renewed-key.pem'));
    await sleep(400);
    assert.equal(reloads, 0);
    assert.equal((await handshake(server.port)).cert.fingerprint256, FP.mx);
  });

  test('a watching store does not keep the process alive', async () => {
    const moduleUrl = new URL('../src/tls/certificates.js', import.meta.url).href;
    const script = `
      const { CertificateStore } = await import(${JSON.stringify(moduleUrl)});
      const store = await CertificateStore.load({ certificates: [${JSON.stringify(spec('mx'))}], watch: true, watchIntervalMs: 50 });
      console.log(store.hostnames().join(','));
    `;
    const { code, stdout } = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 10_000 }, (error, out) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? -1) : 0, stdout: out }),
      );
    });
    assert.equal(code, 0, 'the child must exit on its own, before the timeout kills it');
    assert.equal(stdout.trim(), 'mx.example.test,localhost');
  });
});
