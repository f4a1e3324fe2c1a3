/**
 * CHUNKING / BDAT (RFC 3030) over real sockets: exact byte counts, no dot
 * handling, chunks split across TCP segments and pipelined, BDAT 0 LAST,
 * BDAT mixed with DATA, RSET and disconnect mid-transaction, the size limit,
 * refused chunks that still consume exactly their bytes, a non-numeric size,
 * and BINARYMIME.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { RawSmtp, type Reply } from './helpers/smtp-client.js';
import { startGateway, listFiles, type TestGateway } from './helpers/gateway.js';

const tick = (ms = 15) => new Promise((r) => setTimeout(r, ms));

async function storedBody(tg: TestGateway, reply: Reply): Promise<Buffer> {
  const id = /queued as (\S+)/.exec(reply.text)?.[1];
  assert.ok(id, `no queue id in ${reply.raw}`);
  const file = (await listFiles(tg.dataDir)).find((f) => f.endsWith(`${id}.eml`));
  assert.ok(file, `no stored file for ${id}`);
  const eml = await readFile(path.join(tg.dataDir, file));
  // strip our trace headers (Return-Path + the 5-line Received) to get the bytes as received
  const text = eml.toString('latin1');
  const start = text.indexOf(';\r\n\t', text.indexOf('Received:'));
  const afterTrace = text.indexOf('\r\n', start + 4) + 2;
  return eml.subarray(afterTrace);
}

async function open(tg: TestGateway): Promise<RawSmtp> {
  const c = await RawSmtp.connect(tg.port);
  assert.equal((await c.read()).code, 220);
  assert.equal((await c.cmd('EHLO bdat.example')).code, 250);
  return c;
}

async function envelope(c: RawSmtp, mailArgs = ''): Promise<void> {
  assert.equal((await c.cmd(`MAIL FROM:<a@b.example>${mailArgs}`)).code, 250);
  assert.equal((await c.cmd('RCPT TO:<x@example.test>')).code, 250);
}

describe('BDAT', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startGateway({
      smtp: { maxMessageSize: 10_000 },
      routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }],
    });
  });
  after(() => tg.close());

  test('chunks are taken byte-exact with no dot handling; 250 per chunk; LAST gives the queue id', async () => {
    const c = await open(tg);
    await envelope(c);
    const part1 = 'Subject: chunks\r\n\r\nline one\r\n.\r\n..two dots\r\n';
    const part2 = '.\r\nend without CRLF';
    c.write(`BDAT ${part1.length}\r\n${part1}`);
    const r1 = await c.read();
    assert.equal(r1.code, 250);
    assert.equal(r1.text, `2.0.0 ${part1.length} octets received`);
    c.write(`BDAT ${part2.length} LAST\r\n${part2}`);
    const r2 = await c.read();
    assert.equal(r2.code, 250);
    assert.match(r2.text, /^2\.0\.0 Ok: queued as /);
    assert.equal((await storedBody(tg, r2)).toString('latin1'), part1 + part2);
    c.close();
  });

  test('command and data split across TCP segments, and pipelined chunks in one write', async () => {
    const c = await open(tg);
    await envelope(c);
    const body = 'Subject: split\r\n\r\nabcdefghij';
    (c.socket as import('node:net').Socket).setNoDelay(true);
    c.write('BD');
    await tick();
    c.write(`AT ${body.length}`);
    await tick();
    c.write('\r\n');
    await tick();
    c.write(body.slice(0, 7));
    await tick();
    c.write(body.slice(7));
    assert.equal((await c.read()).code, 250);
    // two chunks and the LAST in one write: replies in order (RFC 2920)
    c.write('BDAT 3\r\nXYZBDAT 2\r\n12BDAT 0 LAST\r\n');
    const replies = [await c.read(), await c.read(), await c.read()];
    assert.deepEqual(replies.map((r) => r.text.split(' ').slice(0, 2).join(' ')), ['2.0.0 3', '2.0.0 2', '2.0.0 Ok:']);
    assert.equal((await storedBody(tg, replies[2]!)).toString('latin1'), `${body}XYZ12`);
    c.close();
  });

  test('DATA after BDAT in the same transaction is 503 5.5.1; the BDAT transaction can still finish', async () => {
    const c = await open(tg);
    await envelope(c);
    c.write('BDAT 20\r\nSubject: mixed\r\n\r\nab');
    assert.equal((await c.read()).code, 250);
    const data = await c.cmd('DATA');
    assert.equal(data.code, 503);
    assert.match(data.text, /^5\.5\.1 /);
    c.write('BDAT 2 LAST\r\ncd');
    const done = await c.read();
    assert.equal(done.code, 250);
    assert.equal((await storedBody(tg, done)).toString('latin1'), 'Subject: mixed\r\n\r\nabcd');
    c.close();
  });

  test('RSET mid-transaction discards it; the next transaction works and nothing partial is stored', async () => {
    const before = (await listFiles(tg.dataDir)).length;
    const c = await open(tg);
    await envelope(c);
    c.write('BDAT 10\r\n0123456789');
    assert.equal((await c.read()).code, 250);
    assert.equal((await c.cmd('RSET')).code, 250);
    await envelope(c);
    c.write('BDAT 19 LAST\r\nSubject: after\r\n\r\nok');
    const r = await c.read();
    assert.equal(r.code, 250);
    assert.equal((await listFiles(tg.dataDir)).length, before + 2, 'only the second message (.eml + .json)');
    assert.doesNotMatch((await storedBody(tg, r)).toString('latin1'), /0123456789/);
    c.close();
  });

  test('a refused BDAT (no transaction) still consumes exactly its octets', async () => {
    const c = await open(tg);
    // the 12 octets look like commands; they must be swallowed as data
    c.write('BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n');
    const refused = await c.read();
    assert.equal(refused.code, 503);
    assert.match(refused.text, /^5\.5\.1 /);
    const noop = await c.read();
    assert.equal(noop.code, 250, 'the NOOP after the 12 octets is the next command');
    assert.equal(c.closed, false);
    c.close();
  });

  test('size limit: the chunk that passes it gets 552 5.3.4, later chunks 503, and the octets stay in sync', async () => {
    const c = await open(tg);
    await envelope(c);
    c.write(`BDAT 6000\r\n${'a'.repeat(6000)}`);
    assert.equal((await c.read()).code, 250);
    c.write(`BDAT 6000\r\n${'b'.repeat(6000)}`);
    const over = await c.read();
    assert.equal(over.code, 552);
    assert.match(over.text, /^5\.3\.4 /);
    c.write('BDAT 10 LAST\r\nNOOP\r\nNOOP');
    const after = await c.read();
    assert.equal(after.code, 503);
    assert.equal((await c.cmd('RSET')).code, 250);
    await envelope(c);
    c.write('BDAT 18 LAST\r\nSubject: small\r\n\r\n.');
    assert.equal((await c.read()).code, 250);
    c.close();
  });

  test('BDAT before EHLO, and without RCPT, are refused and consume their octets', async () => {
    const c = await RawSmtp.connect(tg.port);
    await c.read();
    c.write('BDAT 4\r\nEHLONOOP\r\n');
    assert.equal((await c.read()).code, 503);
    assert.equal((await c.read()).code, 250);
    await c.cmd('EHLO x.example');
    assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 250);
    c.write('BDAT 3 LAST\r\nabcNOOP\r\n');
    const r = await c.read();
    assert.equal(r.code, 503);
    assert.match(r.text, /RCPT/);
    assert.equal((await c.read()).code, 250);
    c.close();
  });

  test('a non-numeric or malformed size closes the connection (the octets cannot be delimited)', async () => {
    for (const bad of ['BDAT x', 'BDAT', 'BDAT -1', 'BDAT 10 NOTLAST', 'BDAT 1e3']) {
      const c = await open(tg);
      const r = await c.cmd(bad);
      assert.equal(r.code, 501, bad);
      assert.match(r.text, /^5\.5\.4 /);
      await c.waitClosed();
    }
  });

  test('BODY=BINARYMIME: DATA is refused, BDAT carries arbitrary octets unchanged', async () => {
    const c = await open(tg);
    await envelope(c, ' BODY=BINARYMIME');
    const data = await c.cmd('DATA');
    assert.equal(data.code, 503);
    assert.match(data.text, /BINARYMIME/);
    const head = Buffer.from('Subject: binary\r\nContent-Type: application/octet-stream\r\n\r\n');
    const bin = Buffer.from([0, 1, 2, 0x0a, 0x2e, 0x0a, 0x0d, 0x0a, 0x2e, 0x0d, 0x0a, 0xff, 0xfe]);
    const payload = Buffer.concat([head, bin]);
    c.write(Buffer.concat([Buffer.from(`BDAT ${payload.length} LAST\r\n`), payload]));
    const r = await c.read();
    assert.equal(r.code, 250);
    assert.deepEqual(await storedBody(tg, r), payload);
    c.close();
  });

  test('disconnect mid-chunk: nothing stored, in-flight memory released, the gateway keeps serving', async () => {
    const before = (await listFiles(tg.dataDir)).length;
    const c = await open(tg);
    await envelope(c);
    c.write(`BDAT 5000\r\n${'z'.repeat(1000)}`);
    await tick(50);
    c.close();
    const deadline = Date.now() + 5000;
    for (;;) {
      const m = await tg.gw.metrics.registry.getSingleMetricAsString('postgate_inflight_message_bytes');
      if (/postgate_inflight_message_bytes 0$/m.test(m)) break;
      assert.ok(Date.now() < deadline, m);
      await tick(20);
    }
    assert.equal((await listFiles(tg.dataDir)).length, before);
    const c2 = await open(tg);
    await envelope(c2);
    c2.write('BDAT 17 LAST\r\nSubject: alive\r\n\r\n');
    assert.equal((await c2.read()).code, 250);
    c2.close();
  });

  test('a large chunk with backpressure arrives whole', async () => {
    const big = await startGateway({ smtp: { maxMessageSize: '8MiB' }, routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }] });
    try {
      const c = await open(big);
      await envelope(c);
      const body = Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), Buffer.alloc(4 * 1024 * 1024, 0x61)]);
      c.write(Buffer.concat([Buffer.from(`BDAT ${body.length} LAST\r\n`), body]));
      const r = await c.read(60_000);
      assert.equal(r.code, 250);
      assert.equal((await storedBody(big, r)).length, body.length);
      c.close();
    } finally {
      await big.close();
    }
  });
});
