#!/usr/bin/env node
/**
 * SMTP pipeline benchmark: postgate in sync mode (parse, event JSON,
 * signature, POST to a local node:http receiver, 250 after its 2xx) against
 * the bare smtp-server sink (accept and discard), the floor of one POST per
 * message (smtp-server posting the raw bytes once, 250 after the 2xx) and the
 * baseline's naive gateway, all driven by Postfix's smtp-source in the same
 * run, rounds interleaved; every postgate figure is also a ratio to the sink
 * (msg/s) and to the floor (CPU per message) of the same round.
 *
 *   node bench/smtp.mjs             everything (needs a build), rewrites the SMTP section of docs/benchmarks.md
 *   node bench/smtp.mjs --quick     one round of the target cases only, a shorter run; prints, writes nothing
 *   node bench/smtp.mjs --no-write  everything, prints only
 *   node bench/smtp.mjs --case plain-4k/20/new [--case …]  those cases only (throughput), prints
 *
 * Each measurement starts fresh processes (so peak RSS is per case), warms
 * them up, then reads utime+stime and VmHWM of each process from /proc (the
 * kernel's getrusage counters) around the measured load. A benchmark, not a
 * test: it exits 0 whatever the figures, and prints PASS / FAIL per target.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { messages } from './messages.mjs';
import { writeSection } from './lib/doc.mjs';
import { summarizeProfile } from './lib/profile-summary.mjs';
import { findSmtpSource, freePort, procStat, startHelper, stop, waitPort } from './lib/processes.mjs';
import { median } from './lib/stats.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const DOC = join(ROOT, 'docs', 'benchmarks.md');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'index.js');
const args = new Set(process.argv.slice(2));
const QUICK = args.has('--quick');
const WRITE = !QUICK && !args.has('--no-write') && !args.has('--case');
const ROUNDS = QUICK ? 1 : 3;
const MiB = 1024 * 1024;

// ── prerequisites ───────────────────────────────────────────────────────────

const SMTP_SOURCE = findSmtpSource();
if (!SMTP_SOURCE) {
  process.stderr.write(
    'bench/smtp.mjs needs smtp-source, the SMTP load generator that ships with Postfix.\n' +
      'Install it on Debian/Ubuntu with:\n' +
      '  echo "postfix postfix/main_mailer_type select No configuration" | sudo debconf-set-selections\n' +
      '  sudo apt-get install -y --no-install-recommends postfix\n',
  );
  process.exit(1);
}

// ── processes ───────────────────────────────────────────────────────────────

/** The gateway's configuration in every measurement (stated in the doc). */
function postgateConfig(port, receiverPort, dataDir) {
  return `# bench/smtp.mjs: postgate in sync mode posting to the local receiver
smtp:
  listen: 127.0.0.1:${port}
  hostname: mx.bench.test
  maxMessageSize: 100MiB
  # the load comes from one address: per-IP and total caps raised
  maxClients: 12000
  maxConnectionsPerIp: 12000
  # the default early-talker policy (multiline greeting, 300 ms, pass kept 1 h)
  earlyTalker: { mode: multiline, delay: 300, passTtl: 3600000 }
routes:
  - recipients: ["*@bench.test"]
    mode: sync
    targets:
      - type: webhook
        url: http://127.0.0.1:${receiverPort}/inbound
        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
storage:
  path: ${dataDir}
limits:
  memoryBudget: 2GiB
http:
  listen: 127.0.0.1:0
`;
}

async function startPostgate(tmp, { profileFile } = {}) {
  const receiver = await startHelper('receiver.mjs');
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmp, 'pg-'));
  const cfgFile = join(dataDir, 'postgate.yml');
  writeFileSync(cfgFile, postgateConfig(port, receiver.port, dataDir));
  const nodeArgs = profileFile ? ['-r', join(HERE, 'lib', 'profile-preload.cjs')] : [];
  const proc = spawn(process.execPath, [...nodeArgs, CLI, 'serve', '--config', cfgFile], {
    stdio: ['ignore', profileFile ? 'pipe' : 'ignore', 'inherit'],
    env: profileFile ? { ...process.env, POSTGATE_BENCH_PROFILE: profileFile } : process.env,
  });
  await waitPort(port, proc);
  return {
    kind: 'postgate',
    port,
    pid: proc.pid,
    proc,
    receiver,
    count: () => receiver.count(),
    async stop() {
      await stop(proc);
      await receiver.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A competitor that posts each message to its own receiver, which counts:
 * the baseline's naive gateway (lib/naive.mjs) or the floor of one POST per
 * message (lib/floor.mjs).
 */
async function startPosting(kind, script) {
  const receiver = await startHelper('receiver.mjs');
  const server = await startHelper(script, [], [String(receiver.port)]);
  return {
    kind,
    port: server.port,
    pid: server.pid,
    receiver,
    count: () => receiver.count(),
    async stop() {
      await server.stop();
      await receiver.stop();
    },
  };
}

async function startSink() {
  const sink = await startHelper('sink.mjs');
  return { kind: 'sink', port: sink.port, pid: sink.pid, receiver: null, count: () => sink.count(), stop: () => sink.stop() };
}

// ── load ────────────────────────────────────────────────────────────────────

function smtpSource(port, file, sessions, count, reuse, sender = 'bench@client.bench') {
  // -N numbers the recipients (1x@…, 2x@…): every message is a new delivery.
  // With one recipient for all, postgate's skip-store would recognise the
  // identical bytes as a sender's retry of a delivered message and skip the POST.
  const a = ['-N', '-s', String(sessions), '-m', String(count), '-f', sender, '-t', 'x@bench.test', '-M', 'client.bench', '-F', file];
  if (reuse) a.unshift('-d');
  a.push(`127.0.0.1:${port}`);
  return new Promise((resolve) => {
    const t0 = performance.now();
    const p = spawn(SMTP_SOURCE, a, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ seconds: (performance.now() - t0) / 1000, code, err: err.trim(), args: a }));
  });
}

const RUN_SECONDS = QUICK ? 2 : 3;
const WARM_CHUNK_SECONDS = QUICK ? 1.5 : 2;
const WARM_MAX_CHUNKS = QUICK ? 4 : 6;

/**
 * Warm-up to a steady state, then the measured run. A short run estimates
 * the rate; then runs of about WARM_CHUNK_SECONDS each until the server's
 * CPU per message changes by at most 10 % from one to the next (at least
 * two, at most WARM_MAX_CHUNKS). V8 optimises postgate's larger code base
 * over several seconds of load: the first 2 s of a fresh gateway cost about
 * twice the CPU per message of its steady state, most of it in V8's
 * background compiler threads, so a short warm-up measured the JIT rather
 * than the gateway (the sink settles within the first run). Both servers
 * get the same rule. The measured run is sized from the last warm-up to last
 * about RUN_SECONDS, so slow and fast servers get comparable runs.
 * (Warm-ups use other senders: smtp-source numbers the recipients from 1
 * again on each run, and postgate's skip-store would take a repeated
 * sender/recipient/bytes triple for a retry of a delivered message.)
 */
async function warmUp(server, file, sessions, reuse) {
  const first = reuse || sessions > 1 ? 200 : 20;
  const warm = await smtpSource(server.port, file, sessions, first, reuse, 'warmup0@client.bench');
  if (warm.code !== 0) throw new Error(`warm-up failed against ${server.kind}: ${warm.err}`);
  let rate = first / warm.seconds;
  let seconds = warm.seconds;
  let prev = null;
  let chunks = 0;
  while (chunks < WARM_MAX_CHUNKS) {
    const n = Math.max(first, Math.round(rate * WARM_CHUNK_SECONDS));
    const c0 = procStat(server.pid).cpuUs;
    const run = await smtpSource(server.port, file, sessions, n, reuse, `warmup${++chunks}@client.bench`);
    if (run.code !== 0) throw new Error(`warm-up failed against ${server.kind}: ${run.err}`);
    const cpu = (procStat(server.pid).cpuUs - c0) / n;
    rate = n / run.seconds;
    seconds += run.seconds;
    if (prev !== null && Math.abs(cpu - prev) <= 0.1 * prev) break;
    prev = cpu;
  }
  return { rate, seconds, chunks };
}

async function measure(server, file, sessions, reuse) {
  const warm = await warmUp(server, file, sessions, reuse);
  const count = Math.min(60_000, Math.max(20, Math.round(warm.rate * RUN_SECONDS)));
  const before = await server.count();
  const s0 = procStat(server.pid);
  const r0 = server.receiver ? procStat(server.receiver.pid) : null;
  const run = await smtpSource(server.port, file, sessions, count, reuse);
  const s1 = procStat(server.pid);
  const r1 = server.receiver ? procStat(server.receiver.pid) : null;
  const got = (await server.count()) - before;
  return {
    rate: got / run.seconds,
    got,
    sent: count,
    ok: run.code === 0 && got === count,
    err: run.err,
    cpuUsPerMsg: (s1.cpuUs - s0.cpuUs) / Math.max(1, got),
    receiverCpuUsPerMsg: r1 ? (r1.cpuUs - r0.cpuUs) / Math.max(1, got) : null,
    peakRss: s1.hwm,
    warmSeconds: warm.seconds,
  };
}

/** A client that talks before the greeting (from an address that never passed) must get 554. */
function earlyTalkerCaught(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.77' });
    let buf = '';
    s.on('connect', () => s.write('EHLO too.early\r\n'));
    s.on('data', (d) => (buf += d.toString('latin1')));
    s.on('close', () => resolve(/^554 /m.test(buf)));
    s.on('error', () => resolve(/^554 /m.test(buf)));
    setTimeout(() => s.destroy(), 5000).unref();
  });
}

// ── latency, idle connections, a 50 MB message ──────────────────────────────

function runNode(script, argv) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(HERE, 'lib', script), ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${script} exited ${code}`))));
  });
}

async function latency(server, file, rate) {
  // a steady state first (as for throughput), then a warm-up at the rate, then the measured run
  await warmUp(server, file, 20, true);
  await runNode('latency.mjs', [String(server.port), String(rate), '2', '20', file]);
  return JSON.parse(await runNode('latency.mjs', [String(server.port), String(rate), '6', '20', file]));
}

async function idle(server, n) {
  await new Promise((r) => setTimeout(r, 300));
  const before = procStat(server.pid).rss;
  const p = spawn(process.execPath, [join(HERE, 'lib', 'idle.mjs'), String(server.port), String(n)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise((resolve) => {
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.trim());
    });
  });
  await new Promise((r) => setTimeout(r, 1000));
  const after = procStat(server.pid).rss;
  p.stdin.end();
  await new Promise((r) => p.once('exit', r));
  const [, ready, failed] = line.split(' ').map(Number);
  return { ready, failed, before, after };
}

/** Sends one message of `mib` MiB (a 49 MiB base64 attachment for 50) generated on the fly. */
async function bigMessage(server, mib) {
  await new Promise((r) => setTimeout(r, 300));
  const before = procStat(server.pid);
  const s = net.connect(server.port, '127.0.0.1');
  let buf = '';
  s.on('data', (d) => (buf += d.toString('latin1')));
  const reply = async () => {
    for (;;) {
      const m = /^(\d{3}) .*\r\n/m.exec(buf);
      if (m) {
        buf = buf.slice(m.index + m[0].length);
        return m[0].trim();
      }
      await new Promise((r) => s.once('data', r));
    }
  };
  await new Promise((r) => s.once('connect', r));
  for (const cmd of [null, 'EHLO big.bench', 'MAIL FROM:<bench@client.bench>', 'RCPT TO:<x@bench.test>', 'DATA']) {
    if (cmd) s.write(`${cmd}\r\n`);
    await reply();
  }
  s.write(
    'From: bench@client.bench\r\nTo: x@bench.test\r\nSubject: big\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n' +
      '--BB\r\nContent-Type: text/plain\r\n\r\nA large attachment follows.\r\n--BB\r\nContent-Type: application/octet-stream\r\n' +
      'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=big.bin\r\n\r\n',
  );
  const line = Buffer.from(`${Buffer.alloc(57, 0x5a).toString('base64')}\r\n`);
  const block = Buffer.concat(Array(1000).fill(line));
  let sent = 0;
  while (sent < mib * MiB) {
    if (!s.write(block)) await new Promise((r) => s.once('drain', r));
    sent += block.length;
  }
  s.write('--BB--\r\n.\r\n');
  const r = await reply();
  const after = procStat(server.pid);
  s.end();
  return { reply: r, sent, growth: after.hwm - before.rss };
}

// ── run ─────────────────────────────────────────────────────────────────────


const started = new Date();
const t0 = performance.now();
const tmp = mkdtempSync(join(os.tmpdir(), 'postgate-bench-'));
const files = {};
for (const m of await messages()) {
  // smtp-source -F sends each line followed by CRLF (and dot-stuffs): give it LF lines.
  files[m.id] = { ...m, file: join(tmp, `${m.id}.eml`) };
  writeFileSync(files[m.id].file, m.buf.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
}

const TARGET_CASES = [
  { msg: 'plain-4k', sessions: 20, reuse: true },
  { msg: 'realistic-5k', sessions: 20, reuse: true },
  { msg: 'plain-100k', sessions: 20, reuse: true },
  { msg: 'plain-4k', sessions: 20, reuse: false },
];
const key = (c) => `${c.msg}/${c.sessions}/${c.reuse ? 'reuse' : 'new'}`;
const allCases = [];
for (const msg of ['plain-4k', 'realistic-5k', 'realistic-94k', 'plain-100k'])
  for (const sessions of [1, 20, 200]) for (const reuse of [true, false]) allCases.push({ msg, sessions, reuse });
// --case <message>/<sessions>/<reuse|new> (repeatable): only those cases, printed, nothing written
const only = process.argv.flatMap((a, i) => (process.argv[i - 1] === '--case' ? [a] : []));
const cases = only.length ? allCases.filter((c) => only.includes(key(c))) : QUICK ? TARGET_CASES : allCases;
const targetKeys = new Set(TARGET_CASES.map(key));

const results = new Map(); // key → { sink: [], postgate: [] }
let earlyTalker = null;
for (let round = 0; round < ROUNDS; round++) {
  for (const c of cases) {
    // outside the target cases one round is enough
    if (round > 0 && !targetKeys.has(key(c))) continue;
    const msg = files[c.msg];
    const r = results.get(key(c)) ?? { ...c, sink: [], postgate: [], naive: [], floor: [] };
    results.set(key(c), r);
    // the floor and the naive gateway run in the target cases only; the order rotates each round
    const kinds = targetKeys.has(key(c)) ? ['sink', 'postgate', 'floor', 'naive'] : ['sink', 'postgate'];
    for (const kind of [...kinds.slice(round % kinds.length), ...kinds.slice(0, round % kinds.length)]) {
      const server =
        kind === 'sink' ? await startSink() : kind === 'naive' || kind === 'floor' ? await startPosting(kind, `${kind}.mjs`) : await startPostgate(tmp);
      try {
        const m = await measure(server, msg.file, c.sessions, c.reuse);
        r[kind].push(m);
        if (kind === 'postgate' && !c.reuse && earlyTalker === null) earlyTalker = await earlyTalkerCaught(server.port);
        process.stderr.write(
          `round ${round + 1} ${key(c).padEnd(24)} ${kind.padEnd(8)} ${m.rate.toFixed(0).padStart(6)} msg/s  ${m.cpuUsPerMsg.toFixed(0).padStart(5)} µs/msg${m.ok ? '' : `  INCOMPLETE ${m.got}/${m.sent} ${m.err}`}\n`,
        );
      } finally {
        await server.stop();
      }
    }
  }
}

if (only.length) process.exit(0); // --case: the lines above are the result

const summary = [...results.values()].map((r) => {
  const ratios = r.sink.map((s, i) => (r.postgate[i] ? r.postgate[i].rate / s.rate : NaN)).filter(Number.isFinite);
  const med = (side, f) => median(r[side].map(f));
  return {
    ...r,
    target: targetKeys.has(key(r)),
    sinkRate: med('sink', (m) => m.rate),
    pgRate: med('postgate', (m) => m.rate),
    ratio: median(ratios),
    ratioLow: Math.min(...ratios),
    ratioHigh: Math.max(...ratios),
    sinkCpu: med('sink', (m) => m.cpuUsPerMsg),
    pgCpu: med('postgate', (m) => m.cpuUsPerMsg),
    rcvCpu: med('postgate', (m) => m.receiverCpuUsPerMsg),
    sinkRss: Math.max(...r.sink.map((m) => m.peakRss)),
    pgRss: Math.max(...r.postgate.map((m) => m.peakRss)),
    complete: [...r.sink, ...r.postgate, ...r.naive, ...r.floor].every((m) => m.ok),
    naiveRate: r.naive.length ? med('naive', (m) => m.rate) : NaN,
    naiveCpu: r.naive.length ? med('naive', (m) => m.cpuUsPerMsg) : NaN,
    naiveRatio: median(r.sink.map((x, i) => (r.naive[i] ? r.naive[i].rate / x.rate : NaN)).filter(Number.isFinite)),
    floorRate: r.floor.length ? med('floor', (m) => m.rate) : NaN,
    floorCpu: r.floor.length ? med('floor', (m) => m.cpuUsPerMsg) : NaN,
    floorRatio: median(r.sink.map((x, i) => (r.floor[i] ? r.floor[i].rate / x.rate : NaN)).filter(Number.isFinite)),
    // postgate's CPU per message over the floor's, round by round (both measured in the same round)
    overFloor: median(r.postgate.map((x, i) => (r.floor[i] ? x.cpuUsPerMsg / r.floor[i].cpuUsPerMsg : NaN)).filter(Number.isFinite)),
  };
});
const S = (k) => summary.find((s) => key(s) === k);

// latency at half of postgate's measured maximum (4 KB, 20 sessions, reuse)
const maxRate = S('plain-4k/20/reuse').pgRate;
const latRate = Math.max(10, Math.round(maxRate / 2));
process.stderr.write(`latency at ${latRate} msg/s\n`);
const lat = {};
for (const kind of ['sink', 'postgate']) {
  const server = kind === 'sink' ? await startSink() : await startPostgate(tmp);
  try {
    lat[kind] = await latency(server, files['plain-4k'].file, latRate);
  } finally {
    await server.stop();
  }
}

// 10,000 idle connections after EHLO
const IDLE = QUICK ? 2000 : 10_000;
const idleRes = {};
for (const kind of ['sink', 'postgate']) {
  const server = kind === 'sink' ? await startSink() : await startPostgate(tmp);
  try {
    idleRes[kind] = await idle(server, IDLE);
    process.stderr.write(`idle ${kind}: ${JSON.stringify(idleRes[kind])}\n`);
  } finally {
    await server.stop();
  }
}

// one 50 MiB message
const big = {};
for (const kind of ['sink', 'postgate']) {
  const server = kind === 'sink' ? await startSink() : await startPostgate(tmp);
  try {
    big[kind] = await bigMessage(server, 50);
    process.stderr.write(`50 MiB ${kind}: ${JSON.stringify(big[kind])}\n`);
  } finally {
    await server.stop();
  }
}

// CPU profiles of postgate in its steady state, 20 sessions: the three
// throughput target cases with reuse, and 4 KB with one connection per message
const profiles = {};
for (const [label, id, reuse] of [
  ['plain-4k', 'plain-4k', true],
  ['realistic-5k', 'realistic-5k', true],
  ['plain-100k', 'plain-100k', true],
  ['plain-4k, one connection per message', 'plain-4k', false],
]) {
  const dir = mkdtempSync(join(tmp, 'prof-'));
  const server = await startPostgate(tmp, { profileFile: join(dir, `${id}.cpuprofile`) });
  try {
    const warm = await warmUp(server, files[id].file, 20, reuse);
    const written = new Promise((resolve) => server.proc.stdout.on('data', (d) => String(d).includes('profile written') && resolve()));
    const count = Math.round(warm.rate * (QUICK ? 2 : 4));
    server.proc.kill('SIGUSR1');
    const run = await smtpSource(server.port, files[id].file, 20, count, reuse, 'profile@client.bench');
    server.proc.kill('SIGUSR2');
    await written;
    profiles[label] = { ...summarizeProfile(dir, ROOT), messages: run.code === 0 ? count : NaN };
  } finally {
    await server.stop();
  }
}
rmSync(tmp, { recursive: true, force: true });
const seconds = (performance.now() - t0) / 1000;

// ── report ──────────────────────────────────────────────────────────────────

const f0 = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');
const f2 = (n) => (Number.isFinite(n) ? n.toFixed(2) : '–');
const mib = (b) => (b / MiB).toFixed(1);
const pass = (ok) => (ok ? 'PASS' : 'FAIL');

const t4 = S('plain-4k/20/reuse');
const t5 = S('realistic-5k/20/reuse');
const t100 = S('plain-100k/20/reuse');
const tNew = S('plain-4k/20/new');
const added = lat.postgate.p99 - lat.sink.p99;
const idleTotal = idleRes.postgate.after;
const targets = [
  [
    '4 KB, 20 sessions: CPU per message ≤ 1.6× the floor\'s',
    `${f2(t4.overFloor)}× (${f0(t4.pgCpu)} vs ${f0(t4.floorCpu)} µs/msg)`,
    t4.overFloor <= 1.6,
  ],
  ['4 KB, 20 sessions: ≥ 0.40× the sink', `${f2(t4.ratio)}× (${f0(t4.pgRate)} vs ${f0(t4.sinkRate)} msg/s; the floor ${f2(t4.floorRatio)}×)`, t4.ratio >= 0.4],
  ['Realistic MIME 5 KB text+HTML, 20 sessions: ≥ 0.30× the sink', `${f2(t5.ratio)}× (${f0(t5.pgRate)} vs ${f0(t5.sinkRate)} msg/s)`, t5.ratio >= 0.3],
  [
    '100 KB, 20 sessions: CPU per message ≤ 2.0× the floor\'s',
    `${f2(t100.overFloor)}× (${f0(t100.pgCpu)} vs ${f0(t100.floorCpu)} µs/msg)`,
    t100.overFloor <= 2.0,
  ],
  ['100 KB, 20 sessions: ≥ 0.25× the sink', `${f2(t100.ratio)}× (${f0(t100.pgRate)} vs ${f0(t100.sinkRate)} msg/s; the floor ${f2(t100.floorRatio)}×)`, t100.ratio >= 0.25],
  [
    'One connection per message, 4 KB, 20 concurrent: ≥ 1,000 msg/s, early talker still caught',
    `${f0(tNew.pgRate)} msg/s (sink ${f0(tNew.sinkRate)}); early talker ${earlyTalker ? 'got 554' : 'NOT caught'}`,
    tNew.pgRate >= 1000 && earlyTalker === true,
  ],
  [`Added p99 latency at half the maximum rate (${f0(latRate)} msg/s) ≤ 5 ms`, `${added.toFixed(2)} ms (p99 ${lat.postgate.p99.toFixed(2)} vs ${lat.sink.p99.toFixed(2)} ms)`, added <= 5 && lat.postgate.late === 0],
  [`${f0(IDLE)} idle connections: ≤ 250 MB RSS total`, `${mib(idleTotal)} MiB (${idleRes.postgate.ready} connections held)`, idleTotal <= 250e6 && idleRes.postgate.ready === IDLE],
  ['A 50 MB message: peak RSS growth ≤ 64 MB', `${mib(big.postgate.growth)} MiB (${big.postgate.reply.slice(0, 3)})`, big.postgate.growth <= 64e6 && big.postgate.reply.startsWith('250')],
];

const cpu = os.cpus();
const warms = summary.flatMap((r) => [...r.sink, ...r.postgate].map((m) => m.warmSeconds));
const warmRange = `${Math.min(...warms).toFixed(0)}–${Math.max(...warms).toFixed(0)}`;
const L = [];
L.push('## The SMTP pipeline');
L.push('');
L.push('postgate in sync mode — parse, event JSON, Standard Webhooks signature, POST to a local node:http receiver');
L.push('that answers 204, `250` after the 2xx — against the bare smtp-server sink (accept and discard, no parse) in');
L.push('the same run, and against the floor of one POST per message (bench/lib/floor.mjs: smtp-server gathers the');
L.push('bytes as received and posts them once with undici, `250` after the 2xx; no parse, JSON, signature or log line).');
L.push('All are single processes; the load is Postfix\'s `smtp-source` on loopback. postgate runs with its default');
L.push('logging (`info`). Every message is a new delivery (`-N` numbers the recipients). Haraka is not');
L.push('run here; the baseline note\'s figure for Haraka with a discard queue is 0.23× the sink at 4 KB, 20 sessions.');
L.push('');
L.push(`- Command: \`npm run bench\` (\`node bench/smtp.mjs\` after a build; \`--quick\` for a short run that writes nothing)`);
L.push(`- Date: ${started.toISOString()} (run took ${seconds.toFixed(0)} s)`);
L.push(`- Node: ${process.version} (${process.platform} ${process.arch}); smtp-server ${pkg('smtp-server')}; load: \`${SMTP_SOURCE}\``);
L.push(`- Machine: ${cpu[0]?.model?.trim() ?? 'unknown CPU'}, ${cpu.length} cores, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB RAM; client, gateway and receiver share the cores`);
L.push(`- Rounds: ${ROUNDS} for the target cases (sink and postgate alternate which goes first), 1 for the rest; medians reported`);
L.push(`- Each measurement: fresh processes, a warm-up to a steady state (runs of about ${WARM_CHUNK_SECONDS} s until the server's CPU per message changes by at most 10 % from one to the next: ${warmRange} s here), then a run sized to last about ${RUN_SECONDS} s;`);
L.push('  CPU is utime+stime of each process from /proc (the getrusage counters), peak RSS is VmHWM; the receiver\'s');
L.push('  CPU is counted apart. "Complete" means smtp-source exited 0 and the sink or the receiver counted every message.');
L.push('');
L.push('postgate\'s configuration in every case (per-IP and total connection caps raised: the load comes from one address):');
L.push('');
L.push('```yaml');
L.push(postgateConfig('PORT', 'RECEIVER_PORT', 'TMPDIR').trim());
L.push('```');
L.push('');
L.push('The early-talker policy is the default: a new client address waits 300 ms for the final greeting line and is');
L.push('exempt for an hour once it waited (as Postfix\'s postscreen keeps a pass). The load\'s address passes in the');
L.push('warm-up; in the same run a client from another address (127.0.0.77) that talks before the greeting is checked');
L.push(`to get \`554\`: ${earlyTalker === null ? 'not checked' : earlyTalker ? 'it did' : 'it did NOT'}.`);
L.push('');
L.push('### Targets');
L.push('');
L.push('| Target | Measured | Result |');
L.push('|---|---|---|');
for (const [t, m, ok] of targets) L.push(`| ${t} | ${m} | ${pass(ok)} |`);
L.push('');
L.push('### Throughput and CPU per message');
L.push('');
L.push('CPU µs per message is the primary figure (robust to a noisy machine); msg/s and the ratio to the sink come');
L.push('from the same rounds. "new" = one connection per message (no `-d`).');
L.push('');
L.push('| Message | Sessions | Connections | Messages (sink / postgate) | sink msg/s | postgate msg/s | postgate / sink | round ratios | sink µs/msg | postgate µs/msg | receiver µs/msg | sink peak RSS | postgate peak RSS | complete |');
L.push('|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
for (const s of summary) {
  L.push(
    `| ${s.msg} (${(files[s.msg].buf.length / 1024).toFixed(1)} KiB)${s.target ? ' ★' : ''} | ${s.sessions} | ${s.reuse ? 'reuse' : 'new'} | ${f0(median(s.sink.map((m) => m.sent)))} / ${f0(median(s.postgate.map((m) => m.sent)))} | ${f0(s.sinkRate)} | ${f0(s.pgRate)} | ${f2(s.ratio)}× | ${s.sink.length > 1 ? `${f2(s.ratioLow)}–${f2(s.ratioHigh)}` : '–'} | ${f0(s.sinkCpu)} | ${f0(s.pgCpu)} | ${f0(s.rcvCpu)} | ${mib(s.sinkRss)} MiB | ${mib(s.pgRss)} MiB | ${s.complete ? 'yes' : 'NO'} |`,
  );
}
L.push('');
L.push(`★ target case (${ROUNDS} rounds). Messages: composed by bench/messages.mjs (the parse benchmark\'s), sent with \`-F\`.`);
L.push('');
L.push('### Against the floor and the naive gateway');
L.push('');
L.push('In the same rounds as the target cases: the floor (smtp-server plus one POST of the raw bytes: what SMTP and one');
L.push('HTTP request per message cost here, so postgate ÷ floor is the price of postgate\'s own per-message work) and the');
L.push('performance baseline\'s naive gateway (bench/lib/naive.mjs: smtp-server, `simpleParser` with its defaults, the');
L.push('parsed message as JSON posted with undici, `250` after the 2xx; no signature, trace headers, limits or spool).');
L.push('');
L.push('| Message | Sessions | Connections | sink msg/s | floor msg/s | floor / sink | naive msg/s | naive / sink | postgate msg/s | postgate / sink | floor µs/msg | naive µs/msg | postgate µs/msg | postgate CPU / floor CPU | postgate CPU / naive CPU |');
L.push('|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const s of summary.filter((x) => x.target)) {
  L.push(
    `| ${s.msg} | ${s.sessions} | ${s.reuse ? 'reuse' : 'new'} | ${f0(s.sinkRate)} | ${f0(s.floorRate)} | ${f2(s.floorRatio)}× | ${f0(s.naiveRate)} | ${f2(s.naiveRatio)}× | ${f0(s.pgRate)} | ${f2(s.ratio)}× | ${f0(s.floorCpu)} | ${f0(s.naiveCpu)} | ${f0(s.pgCpu)} | ${f2(s.overFloor)} | ${f2(s.pgCpu / s.naiveCpu)} |`,
  );
}
L.push('');
L.push('### Latency');
L.push('');
L.push(`A fixed-rate client (bench/lib/latency.mjs, open loop over 20 connections) sends 4 KB messages at ${f0(latRate)} msg/s,`);
L.push('half of postgate\'s median maximum above, for 6 s after the same steady-state warm-up (smtp-source) and 2 s at the rate; latency is end of data (the final `.`)');
L.push('to the reply. "late" counts messages that found every connection busy (the rate was not sustained).');
L.push('');
L.push('| Server | achieved msg/s | p50 | p90 | p99 | max | late | failed |');
L.push('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const k of ['sink', 'postgate']) {
  const x = lat[k];
  L.push(`| ${k} | ${f0(x.rate)} | ${x.p50.toFixed(2)} ms | ${x.p90.toFixed(2)} ms | ${x.p99.toFixed(2)} ms | ${x.max.toFixed(2)} ms | ${x.late} | ${x.failed} |`);
}
L.push('');
L.push(`Added p99: ${added.toFixed(2)} ms (postgate's p99 includes the POST to the receiver and its 204).`);
L.push('');
L.push('### Memory');
L.push('');
L.push('| Case | sink | postgate |');
L.push('|---|---:|---:|');
L.push(
  `| RSS with ${f0(IDLE)} idle connections after EHLO (before → after) | ${mib(idleRes.sink.before)} → ${mib(idleRes.sink.after)} MiB (${f0((idleRes.sink.after - idleRes.sink.before) / IDLE / 1024)} KiB/conn) | ${mib(idleRes.postgate.before)} → ${mib(idleRes.postgate.after)} MiB (${f0((idleRes.postgate.after - idleRes.postgate.before) / IDLE / 1024)} KiB/conn) |`,
);
L.push(`| Peak RSS growth receiving one ${mib(big.postgate.sent)} MiB message (49 MiB base64 attachment) | ${mib(big.sink.growth)} MiB | ${mib(big.postgate.growth)} MiB |`);
L.push('');
L.push('### Where the time goes');
L.push('');
L.push('Self time in a CPU profile of postgate (V8\'s sampling profiler, started after the same steady-state warm-up');
L.push('and stopped after the load, so start-up and the JIT\'s warm-up are not in it) under the load of each');
L.push('throughput target case (20 sessions), grouped by package or postgate module; idle time excluded. Each profile is a');
L.push('run of its own with the profiler on, which costs CPU itself: its shares are the figure to read, not its µs.');
L.push('');
for (const [id, p] of Object.entries(profiles)) {
  L.push(`**${id}** (${f0(p.totalMs)} ms of CPU sampled over ${f0(p.messages)} messages: ${f0((p.totalMs * 1000) / p.messages)} µs per message on the main thread):`);
  L.push('');
  L.push('| Where | share | top functions |');
  L.push('|---|---:|---|');
  for (const g of p.groups.slice(0, 12)) L.push(`| ${g.name} | ${(g.share * 100).toFixed(1)}% | ${g.top.map((t) => `\`${t.name}\` ${(t.share * 100).toFixed(1)}%`).join(', ')} |`);
  L.push('');
}
const fails = targets.filter(([, , ok]) => !ok);
L.push(...whyNotMet());
L.push(fails.length ? `Targets not met: ${fails.length} of ${targets.length}.` : 'Every target met.');

/**
 * For each target this run did not meet: the CPU budget the target implies,
 * what the profile of that case shows against it (figures from this run),
 * and what would meet it (docs/decisions.md has the measurements behind it).
 */
function whyNotMet() {
  const out = [];
  // The profiles come from separate runs with the profiler on (which costs
  // CPU itself) and sample the main thread only, so their µs per message do
  // not add up to the figures measured above. Their shares do carry over:
  // each part below is its share of the profile times the CPU per message
  // measured from /proc for the same case (all threads).
  const share = (p, micros) => micros / (p.totalMs * 1000);
  const fnShare = (p, names, map = p.byFunctionUs) => share(p, names.reduce((a, n) => a + (map.get(n) ?? 0), 0));
  const ownGroups = (p) => p.groups.filter((g) => g.name.startsWith('postgate '));
  const ownShare = (p) => ownGroups(p).reduce((a, g) => a + g.share, 0);
  const part = (x, cpu) => `${f0(x * cpu)} µs (${(x * 100).toFixed(0)} %)`;
  const SOCKET_WRITES = ['writeUtf8String', 'writev', 'writeBuffer', 'writeLatin1String', 'writeAsciiString'];
  const breakdown = (p, cpu) => {
    const writes = fnShare(p, SOCKET_WRITES);
    const gc = fnShare(p, ['(garbage collector)']);
    const own = ownShare(p);
    const heaviest = ownGroups(p)
      .slice(0, 4)
      .map((g) => `${g.name.slice(9)} ${f0(g.share * cpu)}`)
      .join(', ');
    return (
      `of the ${f0(cpu)} µs, by the profile's shares: socket writes ${part(writes, cpu)} (\`${SOCKET_WRITES.slice(0, 2).join('`, `')}\`), ` +
      `garbage collection ${part(gc, cpu)}, postgate's own modules ${part(own, cpu)} (${heaviest}), ` +
      `everything else — smtp-server, undici, Node's streams, buffers and timers — ${part(1 - writes - gc - own, cpu)}`
    );
  };
  const throughput = (title, s, target, p, extra, meet) => {
    if (s.ratio >= target) return;
    const budget = 1e6 / (target * s.sinkRate);
    const cpu = s.pgCpu;
    const own = ownShare(p) * cpu;
    const outside = cpu - own;
    const need = cpu - budget;
    out.push(`**${title}: ${f2(s.ratio)}×, target ${f2(target)}×.** ${f2(target)}× of the sink's ${f0(s.sinkRate)} msg/s is ${f0(target * s.sinkRate)} msg/s: on its one core postgate may spend at most ${f0(budget)} µs of CPU per message; it spent ${f0(cpu)} (the floor of one POST per message ${f0(s.floorCpu)}, the naive gateway ${f0(s.naiveCpu)}, the sink ${f0(s.sinkCpu)}).`);
    out.push(`Where it goes, ${breakdown(p, cpu)}.`);
    // The floor, measured in the same rounds, is SMTP plus one POST with no
    // per-message work: when it fits the budget, the target is a matter of
    // postgate's own work above it, whatever the profile attributes to Node.
    const trimming = Number.isFinite(s.floorCpu) && s.floorCpu <= budget
      ? `The floor fits the budget (${f0(s.floorCpu)} ≤ ${f0(budget)} µs): of postgate's ${f0(cpu - s.floorCpu)} µs above the floor, ${f0(need)} must go.`
      : Number.isFinite(s.floorCpu)
        ? `Even the floor (${f0(s.floorCpu)} µs) is over the budget here, so only less work per SMTP command and per POST than smtp-server and undici do could meet this target on one process.`
        : outside > budget
        ? `The part outside postgate's own modules, ${f0(outside)} µs, is over the budget by itself (some of it is work postgate causes: allocations, calls into Node), so trimming postgate's code cannot meet this target.`
        : need > own
          ? `The cut needed, ${f0(need)} µs, is more than all ${f0(own)} µs of postgate's own modules, so trimming postgate's code cannot meet this target.`
          : `Trimming alone would have to take ${f0(need)} µs out of the ${f0(own)} µs of postgate's own modules.`;
    out.push(`${trimming}${extra ? ` ${extra(p, cpu)}` : ''} What would meet it: ${f0((100 * need) / cpu)} % less CPU per message (${f0(need)} µs); ${meet}`);
    out.push('');
  };
  out.push('### Why the targets not met are not met');
  out.push('');
  out.push('From this run\'s figures and the profiles above; docs/decisions.md has the stage-by-stage measurements behind the remedies.');
  out.push('');
  const ownWork = 'less of postgate\'s own work per message between the socket and the POST (the floor above shows how much SMTP and one POST leave room for): fewer allocations and copies of the body, no per-stage abort signals or timers, one log write per many lines; several processes behind one port raise throughput per machine but not this single-process ratio.';
  throughput('4 KB, 20 sessions', t4, 0.4, profiles['plain-4k'], null, ownWork);
  throughput('Realistic MIME 5 KB, 20 sessions', t5, 0.3, profiles['realistic-5k'], null, ownWork);
  throughput(
    '100 KB, 20 sessions',
    t100,
    0.25,
    profiles['plain-100k'],
    (p, cpu) =>
      `The event carries the body twice (\`text\` and \`strippedText\`, equal when nothing is stripped): \`Buffer.from\` of the event's JSON takes ${part(fnShare(p, ['fromStringFast'], p.inclusiveUs), cpu)}, \`deliverMessage\` (whose self time includes the \`JSON.stringify\` builtin) ${part(fnShare(p, ['deliverMessage']), cpu)}, the reply stripper ${part(fnShare(p, ['stripReply'], p.inclusiveUs), cpu)}.`,
    'not repeating `strippedText` when it equals `text` (a change to the v1 event schema), a JSON body streamed to the socket instead of one large string and buffer, and the lower fixed cost per message the 4 KB target needs.',
  );
  if (!(tNew.pgRate >= 1000 && earlyTalker === true)) {
    const p = profiles['plain-4k, one connection per message'];
    const sink200 = S('plain-4k/200/new');
    const sink200r = S('plain-4k/200/reuse');
    const sinkConn = sink200 && sink200r ? ` The sink, not held by its greeting pause at 200 sessions, pays ${f0(sink200.sinkCpu - sink200r.sinkCpu)} µs per connection itself.` : '';
    out.push(`**One connection per message: ${f0(tNew.pgRate)} msg/s, target 1,000${earlyTalker === true ? '' : '; the early talker was not caught'}.** 1,000 msg/s on one core allows 1,000 µs of CPU per message and its connection; postgate spent ${f0(tNew.pgCpu)}, ${f0(tNew.pgCpu - t4.pgCpu)} more than per message on a reused connection.${sinkConn}`);
    out.push(`Where it goes, ${breakdown(p, tNew.pgCpu)}; of the whole, accepting connections and setting up their smtp-server sessions ${part(fnShare(p, ['onconnection'], p.inclusiveUs), tNew.pgCpu)} (with what it calls), closing sockets ${part(fnShare(p, ['close']), tNew.pgCpu)}.`);
    out.push('What would meet it: less setup and fewer syscalls per connection than smtp-server makes (socket options, address lookups, stream pipes, a greeting and replies written one by one), and the lower per-message cost above.');
    out.push('');
  }
  if (!(added <= 5 && lat.postgate.late === 0)) {
    const busy = (latRate * t4.pgCpu) / 1e6;
    out.push(`**Added p99 latency: ${added.toFixed(2)} ms at ${f0(latRate)} msg/s, target ≤ 5 ms${lat.postgate.late ? `, and ${f0(lat.postgate.late)} messages found every connection busy` : ''}.** At this rate postgate's CPU per message (${f0(t4.pgCpu)} µs above) keeps its core ≈ ${f0(busy * 100)} % busy and the sink's ≈ ${f0((latRate * t4.sinkCpu) / 1e4)} %, while the receiver and the latency client run on the same two cores; a message waits behind the others' parse, signature and POST (postgate's p50 ${lat.postgate.p50.toFixed(2)} ms against the sink's ${lat.sink.p50.toFixed(2)} ms).`);
    out.push('What would meet it: lower CPU per message (the throughput targets above); at a fixed share of its own maximum rate, the wait shrinks with the time one message takes.');
    out.push('');
  }
  return out;
}

const report = L.join('\n');
process.stdout.write(`${targets.map(([t, m, ok]) => `${pass(ok)}  ${t}: ${m}`).join('\n')}\n`);
if (WRITE) {
  writeSection(DOC, 'smtp', report);
  process.stdout.write(`wrote ${DOC}\n`);
} else process.stdout.write(`${report}\n`);

function pkg(name) {
  try {
    return JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return '?';
  }
}
