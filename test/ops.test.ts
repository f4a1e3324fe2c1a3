/**
 * Operations: /healthz, /readyz, /metrics; graceful shutdown with a
 * transaction in flight; load shedding on low disk and on the memory budget.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { startGateway } from './helpers/gateway.js';

async function get(port: number, p: string): Promise<{ status: number; body: string; type: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${p}`);
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') ?? '' };
}

/** A webhook receiver that holds each request until released. */
async function slowReceiver() {
  const held: Array<() => void> = [];
  let arrived: () => void = () => undefined;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      held.push(() => res.writeHead(204).end());
      arrived();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    server,
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/`,
    nextArrival: () => new Promise<void>((r) => (arrived = r)),
    releaseAll: () => held.splice(0).forEach((f) => f()),
  };
}

describe('operations endpoint', () => {
  test('healthz, readyz, metrics with SMTP counters', async () => {
    const tg = await startGateway({});
    try {
      const h = await get(tg.opsPort!, '/healthz');
      assert.equal(h.status, 200);
      assert.deepEqual(JSON.parse(h.body), { status: 'ok' });
      const r = await get(tg.opsPort!, '/readyz');
      assert.equal(r.status, 200);
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO metrics');
      await c.cmd('MAIL FROM:<a@b.example>');
      await c.cmd('RCPT TO:<x@nowhere.example>');
      await c.cmd('QUIT');
      await c.waitClosed();
      const m = await get(tg.opsPort!, '/metrics');
      assert.equal(m.status, 200);
      assert.match(m.type, /text\/plain/);
      assert.match(m.body, /postgate_smtp_connections_total\{listener="mx"\} 1/);
      assert.match(m.body, /postgate_smtp_replies_total\{code="550"\} 1/);
      assert.match(m.body, /postgate_smtp_replies_total\{code="221"\} 1/);
      assert.match(m.body, /# TYPE postgate_delivery_duration_seconds histogram/);
      assert.equal((await get(tg.opsPort!, '/nope')).status, 404);
    } finally {
      await tg.close();
    }
  });
});

describe('graceful shutdown', () => {
  test('in-flight transaction finishes with 250; new connections get 421; readyz 503; stop resolves', async () => {
    const hook = await slowReceiver();
    const tg = await startGateway({
      routes: [{ recipients: ['*@slow.test'], targets: [{ type: 'webhook', url: hook.url }] }],
      shutdown: { grace: '10s' },
    });
    const c = await RawSmtp.connect(tg.port);
    await c.read();
    await c.cmd('EHLO client');
    const idle = await RawSmtp.connect(tg.port);
    await idle.read();
    await idle.cmd('EHLO idle');
    const arrival = hook.nextArrival();
    const sending = sendMail(c, 'a@b.example', ['x@slow.test'], simpleMessage('inflight'));
    await arrival; // the message is at the webhook, the sender waits for the reply
    const stopping = tg.gw.stop();
    assert.equal(tg.gw.draining, true);
    const ready = await get(tg.opsPort!, '/readyz');
    assert.equal(ready.status, 503);
    assert.match(ready.body, /draining/);
    const late = await RawSmtp.connect(tg.port);
    const refused = await late.read();
    assert.equal(refused.code, 421);
    assert.match(refused.text, /^4\.3\.2 /);
    hook.releaseAll();
    const { data } = await sending;
    assert.equal(data?.code, 250, 'the in-flight transaction completes');
    await stopping;
    // the idle session was told to go away
    const bye = await idle.read();
    assert.equal(bye.code, 421);
    await idle.waitClosed();
    hook.server.close();
    await tg.close();
  });
});

describe('load shedding', () => {
  test('free disk under the floor: MAIL gets 452 4.3.1 and readyz says why', async () => {
    let free = 10 * 1024 * 1024 * 1024;
    const tg = await startGateway({ limits: { minFreeDisk: '1GiB' } }, { diskProbe: async () => free, now: (() => { let t = 0; return () => (t += 2000); })() });
    try {
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      await c.cmd('EHLO client');
      assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 250);
      await c.cmd('RSET');
      free = 10 * 1024 * 1024;
      const r = await c.cmd('MAIL FROM:<a@b.example>');
      assert.equal(r.code, 452);
      assert.match(r.text, /^4\.3\.1 /);
      free = 10 * 1024 * 1024 * 1024;
      assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 250, 'recovers when space is back');
      c.close();
      assert.match(tg.logText(), /free disk under the floor/);
    } finally {
      await tg.close();
    }
  });

  test('memory budget: a message that would pass it gets 451 4.3.2; while exhausted MAIL 451 and new connections 421', async () => {
    const hook = await slowReceiver();
    const tg = await startGateway({
      limits: { memoryBudget: 64 * 1024 },
      routes: [
        { recipients: ['*@slow.test'], targets: [{ type: 'webhook', url: hook.url }] },
        { recipients: ['*@localhost'], targets: [{ type: 'local' }] },
      ],
    });
    try {
      const big = simpleMessage('big', `X-Pad: ${'a'.repeat(100 * 1024)}\r\n`);
      const c1 = await RawSmtp.connect(tg.port);
      await c1.read();
      await c1.cmd('EHLO one');
      const over = await sendMail(c1, 'a@b.example', ['x@localhost'], big);
      assert.equal(over.data?.code, 451);
      assert.match(over.data!.text, /^4\.3\.2 /);
      const c0 = await RawSmtp.connect(tg.port);
      await c0.read();
      await c0.cmd('EHLO zero');
      // Fill the budget with a message held at the slow webhook (60 KB < 64 KB budget)
      const fill = simpleMessage('fill', `X-Pad: ${'b'.repeat(60 * 1024)}\r\n`);
      const arrival = hook.nextArrival();
      const pending = sendMail(c1, 'a@b.example', ['x@slow.test'], fill);
      await arrival;
      // 60 KB held of a 64 KB budget: past the 90% mark, nothing new starts
      const c2 = await RawSmtp.connect(tg.port);
      assert.equal((await c2.read()).code, 421, 'new connection refused while over budget');
      await c2.waitClosed();
      const mail = await c0.cmd('MAIL FROM:<a@b.example>');
      assert.equal(mail.code, 451, 'MAIL on an open session deferred while over budget');
      assert.match(mail.text, /^4\.3\.2 /);
      c0.close();
      hook.releaseAll();
      assert.equal((await pending).data?.code, 250);
      const small = simpleMessage('small', `X-Pad: ${'c'.repeat(8 * 1024)}\r\n`);
      const ok = await sendMail(c1, 'a@b.example', ['x@localhost'], small);
      assert.equal(ok.data?.code, 250, 'budget released after delivery');
      c1.close();
      const m = await get(tg.opsPort!, '/metrics');
      assert.match(m.body, /postgate_shed_total\{reason="memory"\} [1-9]/);
    } finally {
      hook.server.close();
      await tg.close();
    }
  });
});

describe('connection limits and load-dependent timeouts', () => {
  test('maxClients across listeners: the next connection gets 421 4.3.2', async () => {
    const tg = await startGateway({
      smtp: { maxClients: 2 },
      listeners: [
        { name: 'a', listen: '127.0.0.1:0' },
        { name: 'b', listen: '127.0.0.1:0' },
      ],
    });
    try {
      const c1 = await RawSmtp.connect(tg.ports[0]!);
      assert.equal((await c1.read()).code, 220);
      const c2 = await RawSmtp.connect(tg.ports[1]!);
      assert.equal((await c2.read()).code, 220);
      const c3 = await RawSmtp.connect(tg.ports[1]!);
      const r = await c3.read();
      assert.equal(r.code, 421);
      assert.match(r.text, /^4\.3\.2 /);
      await c3.waitClosed();
      c1.close();
      await c1.waitClosed();
      // a slot is free again once a connection closed
      const deadline = Date.now() + 5000;
      for (;;) {
        const c4 = await RawSmtp.connect(tg.ports[0]!);
        const g = await c4.read();
        c4.close();
        if (g.code === 220) break;
        assert.ok(Date.now() < deadline, 'slot never freed');
        await new Promise((res) => setTimeout(res, 20));
      }
      c2.close();
    } finally {
      await tg.close();
    }
  });

  test('over 80% of maxClients the idle timeout drops to busySocketTimeout, and comes back', async () => {
    // The normal timeout is 10 minutes: a 421 within the minute's read is the lowered one.
    const tg = await startGateway({ smtp: { maxClients: 5, socketTimeout: '10m', busySocketTimeout: '300ms' } });
    try {
      const conns: RawSmtp[] = [];
      for (let i = 0; i < 5; i++) {
        const c = await RawSmtp.connect(tg.port);
        assert.equal((await c.read()).code, 220);
        conns.push(c);
      }
      const started = Date.now();
      // conns[0] was open before the gateway turned busy: its timer is re-armed too
      const r = await conns[0]!.read(60_000);
      assert.equal(r.code, 421, 'idle session cut under load');
      assert.ok(Date.now() - started < 60_000);
      for (const c of conns) c.close();
      const deadline = Date.now() + 5000;
      while (!tg.logs.some((l) => l.msg === 'load normal: idle timeout restored')) {
        assert.ok(Date.now() < deadline);
        await new Promise((res) => setTimeout(res, 20));
      }
    } finally {
      await tg.close();
    }
  });
});
