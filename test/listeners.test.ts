/**
 * Listener roles over real sockets: mx with STARTTLS and SNI, submission
 * (AUTH required, only over TLS), smtps (implicit TLS, RFC 8314), PROXY
 * protocol v1/v2 (LOCAL, untrusted sources, bad headers) and certificate hot
 * reload seen through STARTTLS.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { startGateway, listFiles, type TestGateway } from './helpers/gateway.js';
import { fixturePath } from './helpers/fixtures.js';
import { OLD_CLIENT, clientSpeaksTls11, tryHandshake } from './helpers/tls.js';
import { hashPassword } from '../src/auth/password.js';

const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;

async function storedEvents(dir: string): Promise<Array<{ data: { envelope: Record<string, unknown>; headers: Array<{ name: string; value: string }> } }>> {
  const files = (await listFiles(dir)).filter((f) => f.endsWith('.json'));
  return Promise.all(files.map(async (f) => JSON.parse(await readFile(path.join(dir, f), 'utf8'))));
}

function v2Header(kind: 'proxy4' | 'proxy6' | 'local'): Buffer {
  const sig = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
  if (kind === 'local') return Buffer.concat([sig, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  if (kind === 'proxy4') {
    const body = Buffer.from([198, 51, 100, 9, 10, 0, 0, 1, 0xc0, 0x01, 0x00, 0x19]);
    return Buffer.concat([sig, Buffer.from([0x21, 0x11, 0x00, body.length]), body]);
  }
  const src = Buffer.from('20010db8000000000000000000000042', 'hex');
  const dst = Buffer.from('20010db8000000000000000000000001', 'hex');
  const body = Buffer.concat([src, dst, Buffer.from([0xc0, 0x02, 0x00, 0x19])]);
  return Buffer.concat([sig, Buffer.from([0x21, 0x21, 0x00, body.length]), body]);
}

describe('listener roles, TLS and AUTH', () => {
  let tg: TestGateway;
  let hash: string;
  before(async () => {
    hash = await hashPassword('correct horse', { log2N: 10 });
    tg = await startGateway({
      listeners: [
        { name: 'mx', role: 'mx', listen: '127.0.0.1:0' },
        { name: 'submission', role: 'submission', listen: '127.0.0.1:0' },
        { name: 'smtps', role: 'smtps', listen: '127.0.0.1:0' },
      ],
      tls: {
        certificates: [
          { cert: fixturePath('tls', 'mx.pem'), key: fixturePath('tls', 'mx-key.pem') },
          { cert: fixturePath('tls', 'mx2.pem'), key: fixturePath('tls', 'mx2-key.pem') },
        ],
        watch: false,
      },
      auth: { users: [{ username: 'alice', password: hash }] },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }],
    });
  });
  after(() => tg.close());

  test('mx: STARTTLS advertised, no AUTH; SNI picks the certificate; Received says ESMTPS', async () => {
    const c = await RawSmtp.connect(tg.ports[0]!);
    await c.read();
    const ehlo = await c.cmd('EHLO client.example');
    assert.ok(ehlo.lines.some((l) => /STARTTLS/.test(l)));
    assert.ok(!ehlo.lines.some((l) => /AUTH/.test(l)), 'no AUTH on mx by default');
    const secure = await c.startTls({ servername: 'mx2.example.test' });
    assert.equal(secure.getPeerCertificate().subjectaltname, 'DNS:mx2.example.test');
    assert.ok(['TLSv1.2', 'TLSv1.3'].includes(secure.getProtocol()!));
    await c.cmd('EHLO client.example');
    const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], simpleMessage('tls'));
    assert.equal(data?.code, 250);
    const id = /queued as (\S+)/.exec(data!.text)![1];
    const ev = (await storedEvents(tg.dataDir)).find((e) => e.data.envelope.queueId === id)!;
    assert.equal(ev.data.envelope.transport, 'ESMTPS');
    assert.match(ev.data.headers[1]!.value, /with ESMTPS \(TLSv1\.[23] cipher /);
    c.close();
  });

  test('submission: MAIL before AUTH 530, AUTH before TLS 538 5.7.11, bad password 535 5.7.8, good AUTH → ESMTPSA', async () => {
    const c = await RawSmtp.connect(tg.ports[1]!);
    await c.read();
    await c.cmd('EHLO laptop');
    const mail = await c.cmd('MAIL FROM:<alice@example.test>');
    assert.equal(mail.code, 530);
    assert.match(mail.text, /^5\.7\.0 /);
    const plain = Buffer.from('\0alice\0correct horse').toString('base64');
    const early = await c.cmd(`AUTH PLAIN ${plain}`);
    assert.equal(early.code, 538);
    assert.match(early.text, /^5\.7\.11 /);
    await c.startTls();
    const ehlo = await c.cmd('EHLO laptop');
    assert.ok(ehlo.lines.some((l) => /AUTH PLAIN LOGIN/.test(l)), ehlo.raw);
    const bad = await c.cmd(`AUTH PLAIN ${Buffer.from('\0alice\0wrong').toString('base64')}`);
    assert.equal(bad.code, 535);
    assert.match(bad.text, /^5\.7\.8 /);
    const unknownUser = await c.cmd(`AUTH PLAIN ${Buffer.from('\0mallory\0correct horse').toString('base64')}`);
    assert.equal(unknownUser.code, 535);
    const good = await c.cmd(`AUTH PLAIN ${plain}`);
    assert.equal(good.code, 235);
    const { data } = await sendMail(c, 'alice@example.test', ['bob@example.test'], simpleMessage('submitted'));
    assert.equal(data?.code, 250);
    const id = /queued as (\S+)/.exec(data!.text)![1];
    const ev = (await storedEvents(tg.dataDir)).find((e) => e.data.envelope.queueId === id)!;
    assert.equal(ev.data.envelope.authUser, 'alice');
    assert.equal(ev.data.envelope.transport, 'ESMTPSA');
    assert.ok(!tg.logText().includes('correct horse'), 'password never logged');
    c.close();
  });

  test('submission with nodemailer: STARTTLS + AUTH LOGIN works, a wrong password is refused', async () => {
    const transport = (pass: string) =>
      nodemailer.createTransport({ host: '127.0.0.1', port: tg.ports[1]!, secure: false, requireTLS: true, auth: { user: 'alice', pass }, authMethod: 'LOGIN', tls: { rejectUnauthorized: false } });
    const info = await transport('correct horse').sendMail({ from: 'alice@example.test', to: 'carol@example.test', subject: 'nm', text: 'hi' });
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
    await assert.rejects(transport('nope').sendMail({ from: 'alice@example.test', to: 'carol@example.test', subject: 'x', text: 'x' }), (err: { responseCode?: number }) => err.responseCode === 535);
  });

  test('smtps: implicit TLS from the first byte, no STARTTLS offered, AUTH required and works', async () => {
    const c = await RawSmtp.connect(tg.ports[2]!, '127.0.0.1', { tls: { servername: 'mx.example.test' } });
    const greet = await c.read();
    assert.equal(greet.code, 220);
    const ehlo = await c.cmd('EHLO laptop');
    assert.ok(!ehlo.lines.some((l) => /STARTTLS/.test(l)));
    const anon = await c.cmd('MAIL FROM:<anon@example.test>');
    assert.equal(anon.code, 530, 'smtps is for submission: AUTH before MAIL');
    assert.equal((await c.cmd(`AUTH PLAIN ${Buffer.from('\0alice\0correct horse').toString('base64')}`)).code, 235);
    c.close();
    const info = await nodemailer
      .createTransport({ host: '127.0.0.1', port: tg.ports[2]!, secure: true, auth: { user: 'alice', pass: 'correct horse' }, tls: { rejectUnauthorized: false } })
      .sendMail({ from: 'alice@example.test', to: 'dave@example.test', subject: 'implicit', text: 'hi' });
    assert.match(info.response, /^250 /);
    // a plaintext client on the smtps port gets no SMTP greeting
    const plain = net.connect(tg.ports[2]!, '127.0.0.1');
    plain.write('EHLO plain\r\n');
    const chunks: Buffer[] = [];
    plain.on('data', (d: Buffer) => chunks.push(d));
    await once(plain, 'close');
    assert.ok(!Buffer.concat(chunks).toString('latin1').startsWith('220'));
  });

  test('a TLS 1.1 client is refused by the server (TLS 1.2+), on smtps and after STARTTLS; a TLS 1.2 client on the same listeners is served', async (t) => {
    // Control: this Node/OpenSSL speaks TLS 1.1 to a server that allows it;
    // otherwise a failed handshake would only show that the client refused.
    if (!(await clientSpeaksTls11())) {
      t.skip('this OpenSSL build cannot negotiate TLS 1.1 even with a permissive server');
      return;
    }
    const refusals = () => tg.logs.filter((l) => /TLS handshake failed|smtp connection error/.test(String(l.msg)) && /unsupported protocol/i.test(String(l.err)));
    const before = refusals().length;
    // smtps: implicit TLS from the first byte
    const old = await tryHandshake(tg.ports[2]!, OLD_CLIENT);
    assert.equal(old.ok, false, 'TLS 1.1 handshake on smtps completed');
    // the client got the server's protocol_version alert (RFC 8446 §6.2), not a failure of its own
    assert.equal(!old.ok && old.error.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', !old.ok ? old.error.message : '');
    // mx: STARTTLS, then the same client hello
    const c = await RawSmtp.connect(tg.ports[0]!);
    await c.read();
    await c.cmd('EHLO old.example');
    await assert.rejects(c.startTls(OLD_CLIENT), (err: NodeJS.ErrnoException) => {
      assert.equal(err.code, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', err.message);
      return true;
    });
    c.close();
    // ...and the server logged its side: it refused the protocol version
    const deadline = Date.now() + 10_000;
    while (refusals().length < before + 2) {
      assert.ok(Date.now() < deadline, `the server did not log both refusals: ${JSON.stringify(refusals())}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // The same listeners serve a TLS 1.2 client.
    const modern = await RawSmtp.connect(tg.ports[2]!, '127.0.0.1', { tls: { maxVersion: 'TLSv1.2' } });
    assert.equal((modern.socket as tls.TLSSocket).getProtocol(), 'TLSv1.2');
    assert.equal((await modern.read()).code, 220);
    modern.close();
    const m = await RawSmtp.connect(tg.ports[0]!);
    await m.read();
    await m.cmd('EHLO modern.example');
    const secure = await m.startTls({ maxVersion: 'TLSv1.2' });
    assert.equal(secure.getProtocol(), 'TLSv1.2');
    assert.equal((await m.cmd('EHLO modern.example')).code, 250);
    m.close();
  });
});

describe('requireTls (RFC 3207 §4): per listener at MAIL, per route at RCPT', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startGateway({
      listeners: [
        { name: 'open', role: 'mx', listen: '127.0.0.1:0' },
        { name: 'tls-only', role: 'mx', listen: '127.0.0.1:0', requireTls: true },
        { name: 'implicit', role: 'smtps', listen: '127.0.0.1:0', auth: false },
      ],
      tls: { certificates: [{ cert: fixturePath('tls', 'mx.pem'), key: fixturePath('tls', 'mx-key.pem') }], watch: false },
      routes: [
        { name: 'private', recipients: ['*@private.example.test'], targets: [{ type: 'local' }], requireTls: true },
        { recipients: ['*@example.test'], targets: [{ type: 'local' }] },
      ],
    });
  });
  after(() => tg.close());

  const queuedIds = async () => (await storedEvents(tg.dataDir)).map((e) => String(e.data.envelope.queueId));

  test('a listener with requireTls answers MAIL 530 5.7.0 until STARTTLS, then takes the message', async () => {
    const c = await RawSmtp.connect(tg.ports[1]!);
    await c.read();
    const ehlo = await c.cmd('EHLO plain.example');
    assert.ok(ehlo.lines.some((l) => /STARTTLS/.test(l)), 'STARTTLS is offered');
    const mail = await c.cmd('MAIL FROM:<a@b.example>');
    assert.equal(mail.code, 530);
    assert.equal(mail.text, '5.7.0 Must issue a STARTTLS command first');
    assert.equal((await c.cmd('NOOP')).code, 250, 'the session stays open');
    await c.startTls();
    await c.cmd('EHLO plain.example');
    const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], simpleMessage('after starttls'));
    assert.equal(data?.code, 250);
    assert.ok((await queuedIds()).includes(/queued as (\S+)/.exec(data!.text)![1]!));
    c.close();
  });

  test('a route with requireTls refuses its recipients on a plaintext session and takes the other routes\' recipients', async () => {
    const c = await RawSmtp.connect(tg.ports[0]!);
    await c.read();
    await c.cmd('EHLO plain.example');
    assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 250, 'the listener does not require TLS');
    const secret = await c.cmd('RCPT TO:<ann@private.example.test>');
    assert.equal(secret.code, 530);
    assert.equal(secret.text, '5.7.0 <ann@private.example.test>: Must issue a STARTTLS command first');
    assert.ok(tg.logs.some((l) => l.msg === 'recipient refused' && l.code === 'PG_TLS_REQUIRED'), 'logged under its code');
    assert.equal((await c.cmd('RCPT TO:<bob@example.test>')).code, 250);
    assert.equal((await c.cmd('RSET')).code, 250);
    await c.startTls();
    await c.cmd('EHLO plain.example');
    const { rcpt, data } = await sendMail(c, 'a@b.example', ['ann@private.example.test'], simpleMessage('private over tls'));
    assert.equal(rcpt[0]!.code, 250);
    assert.equal(data?.code, 250);
    c.close();
  });

  test('implicit TLS (port 465 style) counts as TLS: the route\'s recipient is taken at once', async () => {
    const c = await RawSmtp.connect(tg.ports[2]!, '127.0.0.1', { tls: { servername: 'mx.example.test' } });
    await c.read();
    await c.cmd('EHLO implicit.example');
    const { rcpt, data } = await sendMail(c, 'a@b.example', ['ann@private.example.test'], simpleMessage('private over smtps'));
    assert.equal(rcpt[0]!.code, 250);
    assert.equal(data?.code, 250);
    c.close();
  });
});

describe('PROXY protocol', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startGateway({
      listeners: [
        { name: 'lb', role: 'mx', listen: '127.0.0.1:0', proxyProtocol: { trustedSources: ['127.0.0.0/8'], timeout: '2s' } },
        { name: 'lb-untrusted', role: 'mx', listen: '127.0.0.1:0', proxyProtocol: { trustedSources: ['10.0.0.0/8'] } },
      ],
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }],
    });
  });
  after(() => tg.close());

  const sendThrough = async (preface: Buffer | string) => {
    const c = await RawSmtp.connect(tg.ports[0]!, '127.0.0.1', { preface });
    assert.equal((await c.read()).code, 220);
    await c.cmd('EHLO relay.example');
    const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], simpleMessage('proxied'));
    c.close();
    assert.equal(data?.code, 250);
    const id = /queued as (\S+)/.exec(data!.text)![1];
    return (await storedEvents(tg.dataDir)).find((e) => e.data.envelope.queueId === id)!;
  };

  test('v1 TCP4: the client address in the event and Received is the proxied one', async () => {
    const ev = await sendThrough('PROXY TCP4 203.0.113.7 192.0.2.1 56324 25\r\n');
    assert.equal(ev.data.envelope.clientAddress, '203.0.113.7');
    assert.match(ev.data.headers[1]!.value, /\[203\.0\.113\.7\]/);
    // the session summary line names the proxied client too
    const deadline = Date.now() + 5000;
    while (!tg.logs.some((l) => l.client === '203.0.113.7' && l.msg === 'session closed')) {
      assert.ok(Date.now() < deadline, 'no session summary with the proxied address');
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  test('v2 IPv4 and IPv6', async () => {
    assert.equal((await sendThrough(v2Header('proxy4'))).data.envelope.clientAddress, '198.51.100.9');
    const ev6 = await sendThrough(v2Header('proxy6'));
    assert.equal(ev6.data.envelope.clientAddress, '2001:db8::42');
    assert.match(ev6.data.headers[1]!.value, /\[IPv6:2001:db8::42\]/);
  });

  test('v2 LOCAL (load balancer health check): served with the real address', async () => {
    const ev = await sendThrough(v2Header('local'));
    assert.match(String(ev.data.envelope.clientAddress), /127\.0\.0\.1$/);
  });

  test('a missing or malformed header closes the connection without a greeting', async () => {
    for (const preface of ['EHLO direct.example\r\n', 'PROXY TCP4 999.1.1.1 192.0.2.1 1 25\r\n']) {
      const s = net.connect(tg.ports[0]!, '127.0.0.1');
      s.write(preface);
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      await once(s, 'close');
      assert.equal(Buffer.concat(got).length, 0, `no bytes for ${JSON.stringify(preface)}`);
    }
  });

  test('an untrusted source is refused even with a valid header', async () => {
    const s = net.connect(tg.ports[1]!, '127.0.0.1');
    s.write('PROXY TCP4 203.0.113.7 192.0.2.1 56324 25\r\n');
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    await once(s, 'close');
    assert.equal(Buffer.concat(got).length, 0);
    const metrics = await tg.gw.metrics.registry.getSingleMetricAsString('postgate_proxy_rejected_total');
    assert.match(metrics, /listener="lb-untrusted"\} [1-9]/);
  });
});

describe('PROXY v2 in front of implicit TLS', () => {
  test('header and TLS handshake in one stream; the proxied address reaches the event', async () => {
    const hash = await hashPassword('pw', { log2N: 10 });
    const tg = await startGateway({
      listeners: [{ name: 'smtps-lb', role: 'smtps', listen: '127.0.0.1:0', proxyProtocol: { trustedSources: ['127.0.0.1'] } }],
      tls: { certificates: [{ cert: fixturePath('tls', 'mx.pem'), key: fixturePath('tls', 'mx-key.pem') }], watch: false },
      auth: { users: [{ username: 'u', password: hash }] },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }],
    });
    try {
      const raw = net.connect(tg.port, '127.0.0.1');
      await once(raw, 'connect');
      raw.cork();
      raw.write(v2Header('proxy4'));
      const secure = tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'mx.example.test' });
      process.nextTick(() => raw.uncork());
      await once(secure, 'secureConnect');
      secure.setEncoding('latin1');
      let buf = '';
      const next = async (re: RegExp) => {
        while (!re.test(buf)) await once(secure, 'data').then(([d]) => (buf += d as string));
        const m = re.exec(buf)!;
        buf = buf.slice(m.index + m[0].length);
        return m[0];
      };
      assert.match(await next(/220 [^\r\n]*\r\n/), /^220 /);
      // smtps is submission with implicit TLS (RFC 8314): AUTH first
      secure.write(`EHLO x\r\nAUTH PLAIN ${Buffer.from('\0u\0pw').toString('base64')}\r\n`);
      await next(/235 [^\r\n]*\r\n/);
      secure.write('MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n');
      await next(/354 [^\r\n]*\r\n/);
      secure.write(`${simpleMessage('lb-tls')}.\r\n`);
      const reply = await next(/250 2\.0\.0 Ok: queued as (\S+)\r\n/);
      const id = /queued as (\S+)/.exec(reply)![1];
      const ev = (await storedEvents(tg.dataDir)).find((e) => e.data.envelope.queueId === id)!;
      assert.equal(ev.data.envelope.clientAddress, '198.51.100.9');
      assert.equal(ev.data.envelope.transport, 'ESMTPSA');
      secure.destroy();
    } finally {
      await tg.close();
    }
  });
});

describe('certificate hot reload', () => {
  test('renewed files on disk are served to the next STARTTLS without a restart', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-certs-'));
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    await copyFile(fixturePath('tls', 'mx.pem'), cert);
    await copyFile(fixturePath('tls', 'mx-key.pem'), key);
    const tg = await startGateway({
      tls: { certificates: [{ cert, key }], watch: true, watchInterval: 50 },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }],
    });
    try {
      const fpOld = fingerprint(await readFile(fixturePath('tls', 'mx.pem'), 'utf8'));
      const fpNew = fingerprint(await readFile(fixturePath('tls', 'mx-renewed.pem'), 'utf8'));
      const probe = async () => {
        const c = await RawSmtp.connect(tg.port);
        await c.read();
        await c.cmd('EHLO probe');
        // no SNI: exercises the default context used by STARTTLS
        const s = await c.startTls();
        const fp = s.getPeerCertificate().fingerprint256;
        c.close();
        return fp;
      };
      assert.equal(await probe(), fpOld);
      await copyFile(fixturePath('tls', 'mx-renewed-key.pem'), key);
      await copyFile(fixturePath('tls', 'mx-renewed.pem'), cert);
      const deadline = Date.now() + 10_000;
      while (!tg.logs.some((l) => l.msg === 'TLS certificates reloaded')) {
        assert.ok(Date.now() < deadline, 'reload not seen within 10 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(await probe(), fpNew);
    } finally {
      await tg.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
