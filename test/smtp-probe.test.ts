/**
 * deploy/smtp-probe.mjs, the container health check on AWS (infra/): it must
 * pass against a live mx listener that takes PROXY protocol (a v2 LOCAL
 * header, then the greeting) without being counted as a bad PROXY
 * connection, and fail fast on a closed port, a silent one or a refusal.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { projectRoot } from './helpers/fixtures.js';

const run = promisify(execFile);
const PROBE = path.join(projectRoot(), 'deploy', 'smtp-probe.mjs');

async function probe(port: number, timeoutMs = 2000): Promise<{ code: number; stderr: string }> {
  try {
    const r = await run(process.execPath, [PROBE, String(port), String(timeoutMs)]);
    return { code: 0, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
}

/** A TCP server that greets with `greeting` (or says nothing when null). */
async function fakeServer(greeting: string | null): Promise<net.Server> {
  const srv = net.createServer((s) => {
    s.on('error', () => {});
    if (greeting !== null) s.write(greeting);
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return srv;
}
const portOf = (srv: net.Server) => (srv.address() as net.AddressInfo).port;

describe('deploy/smtp-probe.mjs', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway({
      listeners: [{ name: 'mx', role: 'mx', listen: '127.0.0.1:0', proxyProtocol: { trustedSources: ['127.0.0.1/32'] } }],
    });
  });
  after(async () => {
    await gw?.close();
  });

  test('passes against a PROXY-protocol mx listener, which sees a LOCAL header, not a rejected connection', async () => {
    const r = await probe(gw.port);
    assert.equal(r.code, 0, r.stderr);
    // The listener did not count it as a bad PROXY connection.
    const rejected = gw.logs.filter((l) => /PROXY/.test(String(l.msg)));
    assert.deepEqual(rejected, []);
  });

  test('a 421 greeting (draining, shedding load) is alive; a refusal, silence or a closed port is not', async () => {
    const busy = await fakeServer('421 4.3.2 mx.test.local Too busy, try again later\r\n');
    const refusing = await fakeServer('554 5.3.2 not here\r\n');
    const silent = await fakeServer(null);
    const closed = await fakeServer(null);
    const closedPort = portOf(closed);
    await new Promise((resolve) => closed.close(resolve));
    try {
      assert.equal((await probe(portOf(busy))).code, 0);
      const refused = await probe(portOf(refusing));
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /unexpected greeting: 554/);
      const started = Date.now();
      const quiet = await probe(portOf(silent), 300);
      assert.equal(quiet.code, 1);
      assert.match(quiet.stderr, /no greeting within 300 ms/);
      assert.ok(Date.now() - started < 5000);
      const gone = await probe(closedPort);
      assert.equal(gone.code, 1);
      assert.match(gone.stderr, /ECONNREFUSED/);
    } finally {
      for (const s of [busy, refusing, silent]) s.close();
    }
  });
});
