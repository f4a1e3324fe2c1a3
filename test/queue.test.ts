/**
 * Queued mode: the 250 once the message is durably spooled, the retry worker,
 * dead letters, sync-then-queue switching at the deadline, the spool's
 * capacity, and crash safety — postgate killed with SIGKILL while mail flows,
 * then restarted: every message that got a 250 reaches the receiver.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startGateway } from './helpers/gateway.js';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { startReceiver, type Answer } from './helpers/receiver.js';
import { projectRoot } from './helpers/fixtures.js';
import { CLI, queueCli, serveChild } from './helpers/cli.js';
import { waitFor } from './helpers/wait.js';
import { QueueWorker, retryDelay } from '../src/queue/worker.js';
import { LocalSpool } from '../src/queue/spool.js';
import { MemorySkipStore, type Target } from '../src/delivery/index.js';
import { GatewayError } from '../src/core/errors.js';
import { createLogger } from '../src/ops/logger.js';
import { MessageBytes } from '../src/message/bytes.js';

async function send(port: number, subject: string, rcpt = 'in@q.test') {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    await c.cmd('EHLO client.example');
    return await sendMail(c, 'sender@example.org', [rcpt], simpleMessage(subject));
  } finally {
    c.close();
  }
}

const subjectOf = (body: Buffer) => /"subject":"([^"]*)"/.exec(body.toString('utf8'))?.[1];
const QUICK = { retry: { initialDelay: '100ms', maxDelay: '200ms' } };

describe('queue mode', () => {
  test('250 while the receiver is down; the worker delivers when it recovers, same webhook-id on every attempt', async () => {
    let up = false;
    const hook = await startReceiver(() => (up ? { status: 204 } : { status: 503 }));
    const tg = await startGateway({ queue: QUICK, routes: [{ recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', url: hook.url, timeout: '1s' }] }] });
    try {
      const { data } = await send(tg.port, 'queued one');
      assert.equal(data?.code, 250);
      const spool = path.join(tg.dataDir, 'spool', 'active');
      assert.equal((await readdir(spool)).length, 1, 'spooled before the 250');
      await waitFor(() => hook.got.length >= 2, 5000, 'retries');
      up = true;
      await waitFor(async () => (await readdir(spool)).length === 0, 5000, 'delivery');
      const ok = hook.got.at(-1)!;
      assert.equal(subjectOf(ok.body), 'queued one');
      assert.equal(new Set(hook.got.map((g) => g.headers['webhook-id'])).size, 1);
      const metrics = await fetch(`http://127.0.0.1:${tg.opsPort}/metrics`).then((r) => r.text());
      assert.match(metrics, /^postgate_queue_depth 0$/m);
      assert.match(metrics, /^postgate_queue_attempts_total\{outcome="retry"\} [1-9]/m);
      assert.match(metrics, /^postgate_queue_attempts_total\{outcome="delivered"\} 1$/m);
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('a message for two targets is one file on disk: the second item\'s message.eml is a hard link to the first', async () => {
    const hook = await startReceiver(() => ({ status: 503 }));
    const tg = await startGateway({
      queue: QUICK,
      routes: [{ recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'one', url: hook.url, timeout: '1s' }, { type: 'webhook', id: 'two', url: `${hook.url}?two`, timeout: '1s' }] }],
    });
    try {
      assert.equal((await send(tg.port, 'two targets')).data?.code, 250);
      const spool = path.join(tg.dataDir, 'spool', 'active');
      const items = (await readdir(spool)).sort();
      assert.equal(items.length, 2);
      const [a, b] = await Promise.all(items.map((i) => stat(path.join(spool, i, 'message.eml'))));
      assert.equal(a!.ino, b!.ino, 'one inode');
      assert.equal(a!.nlink, 2);
      assert.deepEqual(await readFile(path.join(spool, items[0]!, 'message.eml')), await readFile(path.join(spool, items[1]!, 'message.eml')));
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('a refusal in queue mode is a dead letter with its attempt history; maxAge expires the rest', async () => {
    const hook = await startReceiver((r) =>
      subjectOf(r.body) === 'refuse me' ? { status: 200, json: { action: 'reject', message: 'no' } } : { status: 500 },
    );
    const tg = await startGateway({
      queue: { retry: { initialDelay: '50ms', maxDelay: '50ms', maxAge: '400ms' } },
      routes: [{ recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url }] }],
    });
    try {
      assert.equal((await send(tg.port, 'refuse me')).data?.code, 250);
      assert.equal((await send(tg.port, 'never works')).data?.code, 250);
      const dead = path.join(tg.dataDir, 'spool', 'dead');
      await waitFor(async () => (await readdir(dead)).length === 2, 5000, 'two dead letters');
      const states = await Promise.all((await readdir(dead)).map(async (d) => JSON.parse(await readFile(path.join(dead, d, 'state.json'), 'utf8'))));
      const refused = states.find((s) => s.deadReason === 'refused by the target')!;
      assert.equal(refused.attempts, 1);
      assert.equal(refused.history[0].code, 'PG_TARGET_REJECTED');
      const expired = states.find((s) => /^expired after \d+ attempts$/.test(s.deadReason))!;
      assert.ok(expired.attempts >= 2, `${expired.attempts} attempts before expiry`);
      assert.equal(expired.history.length, expired.attempts);
      assert.ok(tg.logs.some((l) => l.msg === 'queued delivery dead-lettered'));
    } finally {
      await tg.close();
      await hook.close();
    }
  });

  test('queue full: 452 4.3.1 for queued routes, readiness false', async () => {
    const hook = await startReceiver(() => ({ status: 503 }));
    const tg = await startGateway({ queue: { ...QUICK, maxItems: 1 }, routes: [{ recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', url: hook.url }] }] });
    try {
      assert.equal((await send(tg.port, 'fits')).data?.code, 250);
      const full = await send(tg.port, 'does not fit');
      assert.equal(full.data?.code, 452);
      assert.match(full.data!.text, /^4\.3\.1 /);
      const ready = await fetch(`http://127.0.0.1:${tg.opsPort}/readyz`);
      assert.equal(ready.status, 503);
      assert.match(await ready.text(), /spool full/);
    } finally {
      await tg.close();
      await hook.close();
    }
  });
});

describe('sync-then-queue', () => {
  test('fast success: 250 and nothing spooled; refusal: 5xx; slow receiver: spooled at the deadline, 250, delivered later', async () => {
    let behaviour: Answer = { status: 204 };
    // slowOnce: the next request is held for a minute; gate: requests wait until it opens.
    let slowOnce = false;
    let gate: Promise<void> | null = null;
    let openGate = () => {};
    const hook = await startReceiver(async () => {
      if (slowOnce) {
        slowOnce = false;
        return { status: 204, delayMs: 60_000 };
      }
      if (gate) await gate;
      return behaviour;
    });
    const tg = await startGateway({
      delivery: { deadline: '400ms' },
      queue: QUICK,
      routes: [{ recipients: ['*@q.test'], mode: 'sync-then-queue', targets: [{ type: 'webhook', url: hook.url, timeout: '2m' }] }],
    });
    const spool = path.join(tg.dataDir, 'spool', 'active');
    try {
      assert.equal((await send(tg.port, 'fast')).data?.code, 250);
      assert.equal((await readdir(spool)).length, 0);
      behaviour = { status: 200, json: { action: 'reject', code: 550, enhanced: '5.1.1', message: 'No such user' } };
      const refused = await send(tg.port, 'refused');
      assert.equal(refused.data?.code, 550);
      assert.equal((await readdir(spool)).length, 0);
      // The receiver holds the first attempt for a minute (the target's
      // timeout is two): the 250 must come at the deadline, before the
      // receiver answered it. The queued attempts wait for the gate, so the
      // spooled message is still there to be seen.
      behaviour = { status: 204 };
      slowOnce = true;
      gate = new Promise<void>((resolve) => (openGate = resolve));
      const requestsBefore = hook.got.length;
      const started = Date.now();
      const slow = await send(tg.port, 'slow');
      assert.equal(slow.data?.code, 250);
      const waited = Date.now() - started;
      assert.ok(waited >= 350, `answered at the deadline, not before it (${waited} ms)`);
      assert.equal(hook.got[requestsBefore]!.answeredAt, undefined, `answered at the deadline (${waited} ms), before the receiver`);
      assert.equal((await readdir(spool)).length, 1);
      openGate();
      await waitFor(async () => (await readdir(spool)).length === 0, 5000, 'queued delivery');
      assert.ok(tg.logs.some((l) => l.msg === 'queued delivery succeeded'));
    } finally {
      openGate();
      await tg.close();
      await hook.close();
    }
  });
});

describe('retry schedule', () => {
  test('doubling with equal jitter, capped, Retry-After as a floor', () => {
    const p = { initialDelayMs: 60_000, maxDelayMs: 4 * 3_600_000 };
    assert.equal(retryDelay(1, p, () => 0), 30_000);
    assert.equal(retryDelay(1, p, () => 0.999999), 60_000);
    assert.equal(retryDelay(3, p, () => 0), 120_000);
    assert.equal(retryDelay(20, p, () => 0), 2 * 3_600_000);
    assert.equal(retryDelay(1, p, () => 0, 600_000), 600_000);
  });

  test('the worker on a fake clock: attempts at 0, 30 s, 90 s, 210 s, 450 s, 930 s; nothing early; dead after maxAge with the whole history', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'postgate-sched-'));
    let clock = Date.parse('2026-11-23T00:00:00Z');
    const calls: number[] = [];
    // A target that is down (the fault injected): every attempt is a transient failure.
    const down: Target = {
      id: 'down',
      type: 'test',
      required: true,
      async deliver() {
        calls.push(clock);
        throw new GatewayError({ code: 'PG_DELIVERY_FAILED', message: 'down', smtp: { code: 451, enhanced: '4.4.1' } });
      },
      async close() {},
    };
    const spool = new LocalSpool(root);
    const worker = new QueueWorker({
      spool,
      target: () => down,
      skip: new MemorySkipStore(() => clock),
      blobs: null,
      now: () => clock,
      random: () => 0,
      logger: createLogger('silent'),
      deadlineMs: 1000,
      policy: { initialDelayMs: 60_000, maxDelayMs: 3_600_000, maxAgeMs: 10 * 60_000, concurrency: 4 },
      // Only this test starts attempts: the worker's real timer, firing while a
      // run awaits its rescan, took the attempt (0 !== 1, once in CI).
      timer: false,
    });
    try {
      await worker.start();
      const meta = { itemId: 'Q1-0', queueId: 'Q1', deliveryId: 'msg_x', targetId: 'down', required: true, route: 'r', mailFrom: 'a@b', rcptTo: ['c@d'], rawSha256: '0'.repeat(64), receivedAt: new Date(clock).toISOString(), spooledAt: new Date(clock).toISOString() };
      await spool.put([{ meta, message: MessageBytes.of(Buffer.from('Subject: x\r\n\r\nx\r\n')), eventJson: Buffer.from('{"type":"email.received","data":{}}') }], clock);
      worker.add([{ meta, state: { attempts: 0, nextAt: clock, history: [] } }]);
      const t0 = clock;
      const at = async (ms: number) => {
        clock = t0 + ms;
        return worker.runDue();
      };
      assert.equal(await at(0), 1);
      assert.equal(await at(29_999), 0, 'not before 30 s (60 s with equal jitter at its floor)');
      assert.equal(await at(30_000), 1);
      assert.equal(await at(89_999), 0);
      assert.equal(await at(90_000), 1, 'then 60 s later');
      assert.equal(await at(210_000), 1, 'then 120 s later');
      assert.deepEqual(calls.map((c) => c - t0), [0, 30_000, 90_000, 210_000]);
      assert.equal(await at(450_000), 1);
      assert.equal(await at(929_999), 0, 'next one is 480 s later (the ceiling is 960 s now)');
      assert.equal(await at(930_000), 1, 'past maxAge: a last attempt, then dead');
      const dead = await spool.list('dead');
      assert.equal(dead.length, 1);
      assert.equal(dead[0]!.state.attempts, 6);
      assert.equal(dead[0]!.state.history.length, 6);
      assert.match(dead[0]!.state.deadReason!, /^expired after 6 attempts$/);
      assert.equal(worker.stats().depth, 0);
    } finally {
      await worker.stop();
      await rm(root, { recursive: true, force: true });
    }
  });
});


const serve = serveChild;

describe('crash safety (SIGKILL)', () => {
  test('a spool write killed at every step: after recovery an item is either whole in active/ or gone', async () => {
    const steps = ['A-0:mkdir', 'A-0:message', 'A-0:event', 'A-0:meta', 'A-0:state', 'A-0:sync', 'A-1:mkdir', 'A-1:message', 'A-1:sync', 'tmp:sync', 'A-0:rename', 'A-1:rename', 'active:sync', 'none'];
    const spoolJs = path.join(projectRoot(), 'dist/src/queue/spool.js');
    const bytesJs = path.join(projectRoot(), 'dist/src/message/bytes.js');
    const message = 'Subject: crash\r\n\r\n' + 'x'.repeat(100_000) + '\r\n';
    for (const step of steps) {
      const root = await mkdtemp(path.join(os.tmpdir(), 'postgate-step-'));
      try {
        // A child process writes two items (one message, two targets) and SIGKILLs itself at `step`.
        const script = `
          const { LocalSpool } = await import(${JSON.stringify(spoolJs)});
          const { MessageBytes } = await import(${JSON.stringify(bytesJs)});
          const spool = new LocalSpool(process.argv[1], (s) => { if (s === process.argv[2]) process.kill(process.pid, 'SIGKILL'); });
          await spool.init();
          const meta = (i) => ({ itemId: 'A-' + i, queueId: 'A', deliveryId: 'msg_' + i, targetId: 't' + i, required: true, route: 'r', mailFrom: 'a@b', rcptTo: ['c@d'], rawSha256: '0'.repeat(64), receivedAt: new Date(0).toISOString(), spooledAt: new Date(0).toISOString() });
          const message = MessageBytes.of(Buffer.from(${JSON.stringify(message)}));
          await spool.put([0, 1].map((i) => ({ meta: meta(i), message, eventJson: Buffer.from('{"n":' + i + '}') })), 0);
          process.stdout.write('written');
        `;
        const child = spawn(process.execPath, ['--input-type=module', '-e', script, root, step], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        const [code, signal] = (await new Promise((r) => child.on('exit', (c, sig) => r([c, sig])))) as [number | null, string | null];
        if (step === 'none') assert.equal(out, 'written', `exit ${code} ${signal}`);
        else assert.equal(signal, 'SIGKILL', `killed at ${step}`);
        const spool = new LocalSpool(root);
        const { discarded } = await spool.init();
        const active = await spool.list('active');
        for (const e of active) {
          const { message: m, eventJson } = await spool.content('active', e.meta.itemId);
          assert.equal((await m.buffer()).toString('latin1'), message, `${step}: ${e.meta.itemId} is whole`);
          assert.equal(JSON.parse(eventJson.toString()).n, Number(e.meta.itemId.slice(2)));
          assert.equal(e.state.attempts, 0);
        }
        const ids = active.map((e) => e.meta.itemId);
        // nothing is published before every item is written, and renames happen in order
        const renamed = steps.indexOf(step) >= steps.indexOf('A-1:rename') ? ['A-0', 'A-1'] : steps.indexOf(step) >= steps.indexOf('A-0:rename') ? ['A-0'] : [];
        assert.deepEqual(ids, renamed, `killed at ${step}`);
        assert.deepEqual(await readdir(path.join(root, 'tmp')), [], 'tmp/ is emptied at start');
        assert.ok(discarded + ids.length <= 2);
      } finally {
        await rm(root, { recursive: true, force: true });
      }
    }
  });

  test('every message answered 250 (queue and sync-then-queue) is delivered after a SIGKILL and restart; a half-written item is never delivered', async () => {
    let up = false;
    const hook = await startReceiver(() => (up ? { status: 204 } : { status: 503 }));
    const cwd = await mkdtemp(path.join(os.tmpdir(), 'postgate-crash-'));
    const config = path.join(cwd, 'postgate.yaml');
    await writeFile(
      config,
      [
        'smtp: { listen: "127.0.0.1:0", hostname: mx.test.local, earlyTalker: { mode: "off" }, maxConnectionsPerIp: 100 }',
        'http: false',
        'storage: { path: ./data }',
        'queue: { retry: { initialDelay: 200ms, maxDelay: 400ms } }',
        'delivery: { deadline: 300ms }',
        'routes:',
        `  - { recipients: ["*@q.test"], mode: queue, targets: [{ type: webhook, id: hook, url: "${hook.url}", timeout: 2s }] }`,
        `  - { recipients: ["*@stq.test"], mode: sync-then-queue, targets: [{ type: webhook, id: hook2, url: "${hook.url}", timeout: 2s }] }`,
        '',
      ].join('\n'),
    );
    let child = await serve(config, cwd);
    const accepted = new Set<string>();
    try {
      // Several clients send at once; SIGKILL lands while some are mid-transaction.
      let n = 0;
      let killed = false;
      const client = async () => {
        while (!killed) {
          const i = ++n;
          const subject = `crash-${i}`;
          try {
            // both queued modes: queue, and sync-then-queue (spooled at the deadline)
            const r = await send(child.port, subject, i % 2 ? 'in@q.test' : 'in@stq.test');
            if (r.data?.code === 250) accepted.add(subject);
          } catch {
            // the connection died with the process: no 250, the sender keeps the message
          }
        }
      };
      const clients = [client(), client(), client(), client()];
      try {
        await waitFor(() => accepted.size >= 20, 30_000, '20 accepted messages');
      } finally {
        // listen for the exit before killing: it may come before any later await
        const exited = child.proc.exitCode !== null ? Promise.resolve() : new Promise((r) => child.proc.once('exit', r));
        child.proc.kill('SIGKILL');
        killed = true;
        await Promise.all(clients);
        await exited;
      }
      // A write that never finished (what a crash inside put() leaves): must not be delivered.
      const half = path.join(cwd, 'data', 'spool', 'tmp', 'HALFWRITTEN-0');
      await mkdir(half, { recursive: true });
      await writeFile(path.join(half, 'message.eml'), 'Subject: half\r\n');
      up = true;
      child = await serve(config, cwd);
      const delivered = () => new Set(hook.got.filter((g) => g.headers['webhook-id']).map((g) => subjectOf(g.body)).filter(Boolean) as string[]);
      await waitFor(() => [...accepted].every((s) => delivered().has(s)), 30_000, 'every accepted message delivered');
      const recovered = child.logs.find((l) => l.msg === 'spool recovered');
      assert.ok(recovered, 'the restart recovered the spool');
      assert.ok(Number(recovered.discarded) >= 1, 'the half-written item was discarded');
      assert.ok(!hook.got.some((g) => /half/.test(g.body.toString('utf8'))));
      // every delivered event is whole: it parses and its raw size is stated
      for (const g of hook.got) {
        if (!up) continue;
        const ev = JSON.parse(g.body.toString('utf8'));
        assert.equal(ev.type, 'email.received');
        assert.match(ev.data.raw.sha256, /^[0-9a-f]{64}$/);
      }
      await waitFor(async () => (await readdir(path.join(cwd, 'data', 'spool', 'active'))).length === 0, 10_000, 'empty spool');
    } finally {
      child.proc.kill('SIGKILL');
      await hook.close();
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

describe('ETRN (RFC 1985) in queued mode', () => {
  test('advertised; 251 nothing waiting, 253 n started for a domain, @domain includes subdomains, #route by name; 459 for other clients', async () => {
    let up = false;
    const hook = await startReceiver(() => (up ? { status: 204 } : { status: 503 }));
    const route = { name: 'inbound', recipients: ['*@q.test', '*@sub.q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url }] };
    // a long first pause: only ETRN can make the retries happen within the test
    const tg = await startGateway({ queue: { retry: { initialDelay: '10m' }, etrn: { allowed: ['127.0.0.0/8'] } }, routes: [route] });
    const other = await startGateway({ queue: { etrn: { allowed: ['10.0.0.0/8'] } }, routes: [route] });
    try {
      assert.equal((await send(tg.port, 'for q', 'a@q.test')).data?.code, 250);
      assert.equal((await send(tg.port, 'for sub', 'b@sub.q.test')).data?.code, 250);
      await waitFor(() => hook.got.length === 2, 5000, 'first attempts');
      up = true;
      const c = await RawSmtp.connect(tg.port);
      await c.read();
      const ehlo = await c.cmd('EHLO client.example');
      assert.ok(ehlo.lines.some((l) => /^250[ -]ETRN$/.test(l)), 'ETRN advertised');
      const none = await c.cmd('ETRN elsewhere.test');
      assert.equal(none.code, 251);
      const one = await c.cmd('ETRN q.test');
      assert.equal(one.code, 253);
      assert.match(one.text, /1 pending messages for node q\.test started/);
      await waitFor(() => hook.got.some((g) => g.headers['webhook-id'] && subjectOf(g.body) === 'for q' && g.at > 0) && hook.got.length === 3, 5000, 'ETRN delivery');
      const sub = await c.cmd('ETRN @q.test');
      assert.equal(sub.code, 253, 'the subdomain item is still waiting');
      await waitFor(() => hook.got.length === 4, 5000, 'second ETRN delivery');
      assert.equal((await c.cmd('ETRN #inbound')).code, 251, 'nothing left');
      assert.equal((await c.cmd('ETRN #')).code, 501);
      assert.equal((await c.cmd('ETRN not..a.domain')).code, 501);
      c.close();
      const d = await RawSmtp.connect(other.port);
      await d.read();
      await d.cmd('EHLO client.example');
      const denied = await d.cmd('ETRN q.test');
      assert.equal(denied.code, 459);
      assert.match(denied.text, /^4\.7\.1 Node q\.test not allowed/, 'a transient reply with a class 4 enhanced code (RFC 3463 §3.1)');
      d.close();
    } finally {
      await tg.close();
      await other.close();
      await hook.close();
    }
  });
});

describe('postgate queue (CLI)', () => {
  const run = queueCli;

  test('list, show, retry (dead letters), replay to another target, purge; filters and --dry-run', async () => {
    const hook = await startReceiver((r) => (subjectOf(r.body)?.startsWith('bad') ? { status: 200, json: { action: 'reject' } } : { status: 503 }));
    // the spool outlives the gateway (whose temporary storage is removed on close)
    const spool = await mkdtemp(path.join(os.tmpdir(), 'postgate-spool-'));
    const tg = await startGateway({
      queue: { path: spool, retry: { initialDelay: '10m' } },
      routes: [{ name: 'cli', recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url }] }],
    });
    try {
      assert.equal((await send(tg.port, 'bad one', 'x@q.test')).data?.code, 250);
      assert.equal((await send(tg.port, 'waiting', 'y@q.test')).data?.code, 250);
      await waitFor(async () => (await readdir(path.join(spool, 'dead'))).length === 1, 5000, 'a dead letter');
      await tg.close();

      const list = await run(['list', '--spool', spool, '--json']);
      assert.equal(list.code, 0, list.err);
      const items = JSON.parse(list.out) as Array<{ itemId: string; status: string; rcptTo: string[]; attempts: number }>;
      assert.deepEqual(items.map((i) => [i.status, i.rcptTo[0]]).sort(), [['active', 'y@q.test'], ['dead', 'x@q.test']]);
      const dead = items.find((i) => i.status === 'dead')!;
      const filtered = await run(['list', '--spool', spool, '--json', '--rcpt', 'Y@q.test', '--since', '1h']);
      assert.deepEqual((JSON.parse(filtered.out) as unknown[]).length, 1);
      assert.equal(JSON.parse((await run(['list', '--spool', spool, '--json', '--until', '2000-01-01T00:00:00Z'])).out).length, 0);

      const show = await run(['show', dead.itemId, '--spool', spool]);
      assert.equal(show.code, 0);
      assert.match(show.out, /"deadReason": "refused by the target"/);
      assert.match(show.out, /Subject: bad one/);
      assert.equal((await run(['show', 'nope', '--spool', spool])).code, 1);

      const dry = await run(['retry', '--spool', spool, '--dry-run']);
      assert.match(dry.out, new RegExp(`would retry ${dead.itemId}`));
      assert.equal((await readdir(path.join(spool, 'dead'))).length, 1, 'dry run changed nothing');
      assert.equal((await run(['retry', '--spool', spool, '--status', 'active'])).code, 2);
      assert.equal((await run(['retry', '--spool', spool])).code, 0);
      assert.equal((await readdir(path.join(spool, 'dead'))).length, 0);
      assert.equal((await readdir(path.join(spool, 'active'))).length, 2);

      const replay = await run(['replay', '--spool', spool, '--target', 'staging', '--rcpt', 'y@q.test']);
      assert.equal(replay.code, 0, replay.err);
      const after = JSON.parse((await run(['list', '--spool', spool, '--json', '--target', 'staging'])).out) as Array<{ deliveryId: string; targetId: string }>;
      assert.equal(after.length, 1);
      const original = JSON.parse((await run(['list', '--spool', spool, '--json', '--target', 'hook', '--rcpt', 'y@q.test'])).out) as Array<{ deliveryId: string }>;
      assert.notEqual(after[0]!.deliveryId, original[0]!.deliveryId, 'a new delivery id for the new target');

      assert.equal((await run(['purge', '--spool', spool, '--target', 'staging'])).code, 0);
      assert.equal((await readdir(path.join(spool, 'active'))).length, 2);
      assert.equal((await run(['frobnicate', '--spool', spool])).code, 2);
    } finally {
      await tg.close().catch(() => undefined);
      await hook.close();
      await rm(spool, { recursive: true, force: true });
    }
  });
});
