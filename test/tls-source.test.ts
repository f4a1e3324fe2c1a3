/**
 * Certificates from a source instead of files (tls.certificates[].source,
 * src/tls/sources.ts): one PEM bundle in an S3 object, tested for real
 * against fauxqs through a running gateway on STARTTLS and on an smtps (465)
 * listener; or in an SSM parameter (a Secrets Manager secret through its
 * Parameter Store reference), tested against the protocol-level stand-in of
 * test/helpers/ssm.ts, as no offline SSM server exists on npm. A renewed
 * bundle is served without a restart; a bad one never replaces a good one.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { startS3, TEST_REGION, type LocalS3 } from './helpers/aws.js';
import { fixturePath } from './helpers/fixtures.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { RawSmtp } from './helpers/smtp-client.js';
import { startSsm, type LocalSsm } from './helpers/ssm.js';
import { CertificateStore } from '../src/tls/certificates.js';

const pem = (name: string) => readFileSync(fixturePath('tls', name), 'utf8');
const bundle = (cert: string, key: string) => `${pem(cert)}${pem(key)}`;
const fingerprint = (cert: string) => new X509Certificate(pem(cert)).fingerprint256;
const MX = fingerprint('mx.pem');
const RENEWED = fingerprint('mx-renewed.pem');

async function until<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`${what}: still ${JSON.stringify(v)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('certificate bundle in S3 (fauxqs), served by a running gateway', () => {
  let s3: LocalS3;
  let tg: TestGateway;
  const put = (body: string) => s3.client.send(new PutObjectCommand({ Bucket: 'certs', Key: 'tls/mx.pem', Body: body }));

  before(async () => {
    s3 = await startS3();
    await s3.createBucket('certs');
    await put(bundle('mx.pem', 'mx-key.pem'));
    tg = await startGateway({
      listeners: [
        { name: 'mx', role: 'mx', listen: '127.0.0.1:0' },
        { name: 'implicit', role: 'smtps', listen: '127.0.0.1:0', auth: false },
      ],
      tls: {
        certificates: [{ source: { type: 's3', bucket: 'certs', key: 'tls/mx.pem', endpoint: s3.endpoint, region: TEST_REGION, forcePathStyle: true } }],
        sourceInterval: '1s',
      },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }],
    });
  });
  after(async () => {
    await tg?.close();
    await s3?.stop();
  });

  /** The certificate a new STARTTLS session on the mx listener gets. */
  const starttls = async () => {
    const c = await RawSmtp.connect(tg.ports[0]!);
    try {
      await c.read();
      await c.cmd('EHLO client.example.test');
      const s = await c.startTls();
      return s.getPeerX509Certificate()?.fingerprint256;
    } finally {
      c.close();
    }
  };
  /** The certificate a new implicit-TLS session on the smtps listener gets. */
  const smtps = async () => {
    const c = await RawSmtp.connect(tg.ports[1]!, '127.0.0.1', { tls: {} });
    try {
      return (c.socket as tls.TLSSocket).getPeerX509Certificate()?.fingerprint256;
    } finally {
      c.close();
    }
  };
  const metric = async (result: string) => {
    const text = await (await fetch(`http://127.0.0.1:${tg.opsPort}/metrics`)).text();
    return Number(new RegExp(`postgate_tls_reloads_total\\{result="${result}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
  };

  test('loaded at start: STARTTLS and 465 serve the bundle\'s certificate', async () => {
    assert.equal(await starttls(), MX);
    assert.equal(await smtps(), MX);
  });

  test('a renewed bundle written to the object is served on both without a restart, with a log line and a metric', async () => {
    await put(bundle('mx-renewed.pem', 'mx-renewed-key.pem'));
    await until('STARTTLS certificate', starttls, (f) => f === RENEWED);
    assert.equal(await smtps(), RENEWED);
    assert.ok(tg.logs.some((l) => l.msg === 'TLS certificates reloaded from their source' && JSON.stringify(l.certificates).includes(RENEWED)), tg.logText());
    assert.equal(await metric('reloaded'), 1);
  });

  test('a bad bundle (a key of another certificate) never replaces the good one; it is logged and counted', async () => {
    await put(bundle('mx.pem', 'mx-renewed-key.pem'));
    await until('a failed reload', () => metric('failed'), (n) => n >= 1);
    assert.ok(tg.logs.some((l) => /reload from its source failed/.test(String(l.msg)) && /does not match/.test(JSON.stringify(l.err))), tg.logText());
    assert.equal(await starttls(), RENEWED);
    assert.equal(await smtps(), RENEWED);
    // Not tried again while the object stays as it is.
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(await metric('failed'), 1);
  });

  test('a gateway whose source cannot be read does not start (PG_TLS_CERT names the object)', async () => {
    await assert.rejects(
      startGateway({
        tls: { certificates: [{ source: { type: 's3', bucket: 'certs', key: 'tls/missing.pem', endpoint: s3.endpoint, region: TEST_REGION, forcePathStyle: true } }] },
        routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }],
      }),
      (err: Error & { code?: string }) => err.code === 'PG_TLS_CERT' && /s3:\/\/certs\/tls\/missing\.pem/.test(err.message),
    );
  });
});

describe('certificate bundle in SSM or Secrets Manager (the SSM stand-in of test/helpers/ssm.ts)', () => {
  let ssm: LocalSsm;
  before(async () => {
    ssm = await startSsm();
  });
  after(async () => {
    await ssm?.stop();
  });

  /** A TLS server choosing its certificate from the store by SNI, as the listeners do. */
  async function served(store: CertificateStore): Promise<string | undefined> {
    const server = tls.createServer({ SNICallback: store.sniCallback }, (s) => s.end());
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const s = tls.connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', servername: 'mx.example.test', rejectUnauthorized: false });
      await once(s, 'secureConnect');
      const f = s.getPeerX509Certificate()?.fingerprint256;
      s.destroy();
      return f;
    } finally {
      server.close();
    }
  }

  test('an SSM SecureString parameter: loaded, renewed on refresh, a bad value refused once and kept out', async () => {
    ssm.put('/postgate/test/tls', bundle('mx.pem', 'mx-key.pem'));
    const errors: unknown[] = [];
    const store = await CertificateStore.load({
      certificates: [{ source: { type: 'ssm', parameter: '/postgate/test/tls', endpoint: ssm.endpoint, region: TEST_REGION } }],
      watch: true,
      sourceIntervalMs: 3_600_000,
    });
    store.on('reloadError', (e) => errors.push(e));
    try {
      assert.equal(await served(store), MX);
      assert.equal(await store.refreshSources(), 'unchanged');

      ssm.put('/postgate/test/tls', bundle('mx-renewed.pem', 'mx-renewed-key.pem'));
      assert.equal(await store.refreshSources(), 'reloaded');
      assert.equal(await served(store), RENEWED);

      ssm.put('/postgate/test/tls', 'not a certificate');
      assert.equal(await store.refreshSources(), 'failed');
      assert.match(String((errors[0] as Error).message), /no CERTIFICATE block/);
      assert.equal(await served(store), RENEWED, 'the good certificate stays');
      assert.equal(await store.refreshSources(), 'unchanged', 'the same bad value is not tried again');
      assert.equal(errors.length, 1);

      // A renewal already past its notAfter is no renewal: refused, the certificate in force stays.
      ssm.put('/postgate/test/tls', bundle('expired.pem', 'expired-key.pem'));
      assert.equal(await store.refreshSources(), 'failed');
      assert.match(String((errors[1] as Error).message), /expired on Jan {1,2}2 00:00:00 2020 GMT/);
      assert.equal(await served(store), RENEWED);

      ssm.put('/postgate/test/tls', bundle('mx.pem', 'mx-key.pem'));
      assert.equal(await store.refreshSources(), 'reloaded', 'a new value after a bad one is tried');
      assert.equal(await served(store), MX);
    } finally {
      store.close();
    }
  });

  test('a Secrets Manager secret through /aws/reference/secretsmanager/', async () => {
    ssm.putSecret('postgate/mx-tls', bundle('mx-renewed.pem', 'mx-renewed-key.pem'));
    const store = await CertificateStore.load({
      certificates: [{ source: { type: 'ssm', parameter: '/aws/reference/secretsmanager/postgate/mx-tls', endpoint: ssm.endpoint, region: TEST_REGION } }],
      watch: false,
    });
    try {
      assert.equal(await served(store), RENEWED);
      assert.ok(ssm.reads.includes('/aws/reference/secretsmanager/postgate/mx-tls'));
    } finally {
      store.close();
    }
  });

  test('a source that does not answer: logged as a failed reload, the certificates stay', async () => {
    ssm.put('/postgate/test/flaky', bundle('mx.pem', 'mx-key.pem'));
    const store = await CertificateStore.load({
      certificates: [{ source: { type: 'ssm', parameter: '/postgate/test/flaky', endpoint: ssm.endpoint, region: TEST_REGION } }],
      watch: false,
    });
    const errors: Error[] = [];
    store.on('reloadError', (e: Error) => errors.push(e));
    try {
      await ssm.stop();
      assert.equal(await store.refreshSources(), 'failed');
      assert.match(errors[0]!.message, /cannot read the TLS certificate bundle ssm:\/postgate\/test\/flaky/);
      assert.equal(await served(store), MX);
    } finally {
      store.close();
      ssm = await startSsm();
    }
  });
});
