#!/usr/bin/env node
/**
 * Scanning benchmark: what rspamd scanning adds per 4 KB message, measured
 * against postgate without scanning in the same run (rounds rotate which
 * goes first). The postgates are the same build and configuration but for
 * `scan:` (one rspamd scanner, the default policy `tag`), post to a local
 * node:http receiver, and run as single processes.
 *
 *   - postgate's own added CPU per message (the target: at most 100 µs):
 *     postgate against a stand-in that answers with the real rspamd's
 *     recorded answer at once (lib/rspamd-replay.mjs), minus postgate without
 *     scanning, both at the throughput they sustain; what rspamd spends is
 *     not in it;
 *   - with the real rspamd (a private instance with one normal worker, the
 *     test suite's, dist/test/helpers/scanners.js): rspamd's CPU per message
 *     (its main and worker processes) and the added latency at a fixed rate.
 *
 *   node bench/scan.mjs             needs a build; rewrites the scan section of docs/benchmarks.md
 *   node bench/scan.mjs --quick     one short round; prints, writes nothing
 *   node bench/scan.mjs --no-write  prints only
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { messages } from './messages.mjs';
import { writeSection } from './lib/doc.mjs';
import { freePort, procStat, startHelper, stop, waitPort } from './lib/processes.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const DOC = join(ROOT, 'docs', 'benchmarks.md');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'index.js');
const args = new Set(process.argv.slice(2));
const QUICK = args.has('--quick');
const WRITE = !QUICK && !args.has('--no-write');
const ROUNDS = QUICK ? 1 : 3;
const SESSIONS = 20;
const WARM = QUICK ? 800 : 1500;
const COUNT = QUICK ? 800 : 1500;
const LAT_RATE = 50;
const LAT_SECONDS = QUICK ? 5 : 15;
const TARGET_US = 100;
const STEP_COUNT = QUICK ? 2000 : 5000;

const SMTP_SOURCE = ['/usr/sbin/smtp-source', '/usr/bin/smtp-source'].find((p) => existsSync(p));
const RSPAMD = ['/usr/bin/rspamd', '/usr/sbin/rspamd'].find((p) => existsSync(p));
if (!SMTP_SOURCE || !RSPAMD) {
  process.stderr.write(
    'bench/scan.mjs needs smtp-source (Postfix) and rspamd. On Debian/Ubuntu:\n' +
      '  echo "postfix postfix/main_mailer_type select No configuration" | sudo debconf-set-selections\n' +
      '  sudo apt-get install -y --no-install-recommends postfix rspamd\n',
  );
  process.exit(1);
}
const { startRspamd } = await import(join(ROOT, 'dist', 'test', 'helpers', 'scanners.js'));

// ── processes ───────────────────────────────────────────────────────────────

const cpuUs = (pid) => procStat(pid).cpuUs;

/** A process and its descendants, for rspamd's main process and workers. */
function tree(pid) {
  const out = [pid];
  try {
    for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean)) out.push(...tree(Number(c)));
  } catch {
    // gone
  }
  return out;
}
const treeCpuUs = (pid) => tree(pid).reduce((s, p) => s + cpuUs(p), 0);

/** The configuration of both postgates; `scan` only in the scanning one (stated in the doc). */
function config(port, receiverPort, dataDir, rspamdUrl) {
  return `# bench/scan.mjs: postgate in sync mode posting to the local receiver${rspamdUrl ? ', every message scanned by rspamd' : ''}
smtp:
  listen: 127.0.0.1:${port}
  hostname: mx.bench.test
  maxClients: 2000
  maxConnectionsPerIp: 2000
  earlyTalker: { mode: off }
routes:
  - recipients: ["*@bench.test"]
    targets:
      - type: webhook
        url: http://127.0.0.1:${receiverPort}/inbound
        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
storage:
  path: ${dataDir}
http:
  listen: 127.0.0.1:0
${
  rspamdUrl
    ? `scan:
  scanners:
    - type: rspamd
      url: ${rspamdUrl}
  # the defaults: spam is tagged (verdict in the event), onError tempfail
`
    : ''
}`;
}

async function startPostgate(tmp, rspamdUrl) {
  const receiver = await startHelper('receiver.mjs');
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmp, 'pg-'));
  const cfgFile = join(dataDir, 'postgate.yml');
  writeFileSync(cfgFile, config(port, receiver.port, dataDir, rspamdUrl));
  const proc = spawn(process.execPath, [CLI, 'serve', '--config', cfgFile], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitPort(port, proc);
  return {
    port,
    pid: proc.pid,
    receiver,
    async stop() {
      await stop(proc);
      await receiver.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

let runId = 0;
function smtpSource(port, file, count) {
  // -N numbers the recipients: every message is a new delivery (no skip-store hits).
  const a = ['-d', '-N', '-s', String(SESSIONS), '-m', String(count), '-f', `bench${++runId}@client.bench`, '-t', 'x@bench.test', '-M', 'client.bench', '-F', file, `127.0.0.1:${port}`];
  return new Promise((resolve) => {
    const t0 = performance.now();
    const p = spawn(SMTP_SOURCE, a, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ seconds: (performance.now() - t0) / 1000, code, err: err.trim() }));
  });
}

function latency(port, file) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(HERE, 'lib', 'latency.mjs'), String(port), String(LAT_RATE), String(LAT_SECONDS), '20', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`latency.mjs exited ${code}`))));
  });
}

/**
 * One measurement: a fresh postgate, warmed up; COUNT messages as fast as it answers (smtp-source,
 * closed loop), whose CPU per message is the compared figure, as in bench/smtp.mjs; then a
 * fixed-rate run for latency (and rspamd's CPU per message at that rate).
 */
async function measure(tmp, file, scanner) {
  const pg = await startPostgate(tmp, scanner?.url);
  try {
    const warm = await smtpSource(pg.port, file, WARM);
    if (warm.code !== 0) throw new Error(`warm-up failed: ${warm.err}`);
    const before = await pg.receiver.count();
    const p0 = cpuUs(pg.pid);
    const run = await smtpSource(pg.port, file, COUNT);
    const p1 = cpuUs(pg.pid);
    const got = (await pg.receiver.count()) - before;
    if (run.code !== 0 || got !== COUNT) throw new Error(`run incomplete: exit ${run.code}, ${got}/${COUNT} delivered ${run.err}`);
    const r0 = scanner?.pid ? treeCpuUs(scanner.pid) : 0;
    const lat = await latency(pg.port, file);
    const r1 = scanner?.pid ? treeCpuUs(scanner.pid) : 0;
    if (lat.failed) throw new Error(`${lat.failed} messages failed in the fixed-rate run`);
    return { pgCpuUs: (p1 - p0) / COUNT, scannerCpuUs: (r1 - r0) / lat.sent, rate: COUNT / run.seconds, p50: lat.p50, p99: lat.p99, late: lat.late };
  } finally {
    await pg.stop();
  }
}

/**
 * The scan step alone, in this process: ScanStep.run with the rspamd client against the stand-in,
 * as the session calls it (the message in memory with its trace header, the envelope, the policy),
 * STEP_COUNT scans, 8 at a time; CPU of this process per scan (process.cpuUsage). Beside it, the
 * floor of any HTTP scanner client: a bare undici POST of the same bytes to the same stand-in,
 * reading the answer. The stand-in runs in its own process, so neither counts its work.
 */
async function stepCost(url, message) {
  const { ScanStep, rspamdScanner } = await import(join(ROOT, 'dist', 'src', 'scan', 'index.js'));
  const { MessageBytes } = await import(join(ROOT, 'dist', 'src', 'message', 'bytes.js'));
  const { Pool } = await import('undici');
  const bytes = MessageBytes.of(message).prepend(Buffer.from('Received: from client.bench (127.0.0.1) by mx.bench.test with ESMTP id 1; Mon, 07 Dec 2026 10:00:00 +0000\r\n'));
  const scanner = rspamdScanner({ id: 'rspamd', url });
  const step = new ScanStep({ scanners: [{ scanner, timeoutMs: 15_000 }], breaker: { isDown: () => false, record: () => false }, header: false, now: Date.now });
  const envelope = { mailFrom: 'bench@client.bench', rcptTo: ['1x@bench.test'], helo: 'client.bench', clientAddress: '127.0.0.1', clientHostname: null, authUser: null, queueId: 'Q1' };
  const policy = { spam: 'tag', virus: 'tag', threshold: null, onError: 'tempfail' };
  const pool = new Pool(url, { connections: 32 });
  const body = await bytes.buffer();
  const kinds = {
    step: () => step.run({ content: () => bytes.content(), size: bytes.size, envelope }, policy, 30_000),
    floor: async () => {
      const res = await pool.request({ path: '/checkv2', method: 'POST', body });
      await res.body.arrayBuffer();
    },
  };
  const loop = async (fn, n) => {
    let i = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (i++ < n) await fn();
    }));
  };
  const out = { step: [], floor: [] };
  for (const k of Object.keys(kinds)) await loop(kinds[k], STEP_COUNT); // warm-up
  for (let r = 0; r < ROUNDS * 2 + 1; r++) {
    for (const k of r % 2 ? ['floor', 'step'] : ['step', 'floor']) {
      const c0 = process.cpuUsage();
      await loop(kinds[k], STEP_COUNT);
      const c = process.cpuUsage(c0);
      out[k].push((c.user + c.system) / STEP_COUNT);
    }
  }
  await scanner.close();
  await pool.close();
  return { step: median(out.step), floor: median(out.floor), stepRounds: out.step, floorRounds: out.floor };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// ── run ─────────────────────────────────────────────────────────────────────

const started = new Date();
const t0 = performance.now();
const tmp = mkdtempSync(join(os.tmpdir(), 'postgate-bench-scan-'));
const msg = (await messages()).find((m) => m.id === 'plain-4k');
const file = join(tmp, 'plain-4k.eml');
// smtp-source -F sends each line followed by CRLF (and dot-stuffs): give it LF lines.
writeFileSync(file, msg.buf.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
const rspamd = await startRspamd();
// Interrupted: stop the daemon and the helpers this script started, not just this process.
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => void rspamd.stop().finally(() => process.exit(130)));
const rspamdStartupMs = rspamd.startupMs;
// The real rspamd's answer for this message, served by the stand-in (lib/rspamd-replay.mjs).
const answerFile = join(tmp, 'rspamd-answer.json');
{
  const res = await fetch(`${rspamd.address}/checkv2`, {
    method: 'POST',
    body: readFileSync(file, 'latin1').replace(/\n/g, '\r\n'),
    headers: { From: 'bench@client.bench', Rcpt: '1x@bench.test', IP: '127.0.0.1', Helo: 'client.bench' },
  });
  writeFileSync(answerFile, Buffer.from(await res.arrayBuffer()));
}
const replay = await startHelper('rspamd-replay.mjs', [], [answerFile]);
const KINDS = ['plain', 'replay', 'rspamd'];
const results = Object.fromEntries(KINDS.map((k) => [k, []]));
let step;
try {
  for (let round = 0; round < ROUNDS; round++) {
    // Rotate which goes first, so a drift of the machine's load hits all three.
    const order = KINDS.map((_, i) => KINDS[(i + round) % KINDS.length]);
    for (const kind of order) {
      const scanner = kind === 'plain' ? null : kind === 'replay' ? { url: `http://127.0.0.1:${replay.port}`, pid: 0 } : { url: rspamd.address, pid: rspamd.pid };
      const r = await measure(tmp, file, scanner);
      results[kind].push(r);
      process.stdout.write(`round ${round + 1} ${kind.padEnd(6)}: postgate ${r.pgCpuUs.toFixed(0)} µs/msg at ${r.rate.toFixed(0)} msg/s; at ${LAT_RATE} msg/s: latency p50 ${r.p50.toFixed(1)} ms p99 ${r.p99.toFixed(1)} ms, scanner ${r.scannerCpuUs.toFixed(0)} µs/msg\n`);
    }
  }
  process.stdout.write('the scan step alone, in process, against the stand-in …\n');
  step = await stepCost(`http://127.0.0.1:${replay.port}`, Buffer.from(readFileSync(file, 'latin1').replace(/\n/g, '\r\n'), 'latin1'));
  process.stdout.write(`scan step ${step.step.toFixed(0)} µs/scan, bare undici POST ${step.floor.toFixed(0)} µs\n`);
} finally {
  await replay.stop();
  await rspamd.stop();
  rmSync(tmp, { recursive: true, force: true });
}
const stepPass = step.step <= TARGET_US;

const m = (kind, key) => median(results[kind].map((r) => r[key]));
const added = m('replay', 'pgCpuUs') - m('plain', 'pgCpuUs');
const perRound = results.replay.map((r, i) => r.pgCpuUs - results.plain[i].pgCpuUs);
const pass = added <= TARGET_US;
const f0 = (x) => x.toFixed(0);
const f1 = (x) => x.toFixed(1);
const cpuModel = (readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? 'unknown').trim();
const rspamdVersion = execFileSync(RSPAMD, ['--version']).toString().trim().split('\n')[0];
const row = (label, kind, scannerCpu) =>
  `| ${label} | ${f0(m(kind, 'pgCpuUs'))} µs | ${f0(m(kind, 'rate'))} | ${scannerCpu} | ${f1(m(kind, 'p50'))} ms | ${f1(m(kind, 'p99'))} ms |`;

const body = `## Scanning with rspamd

What scanning every message with rspamd adds, for 4 KB text/plain messages (\`plain-4k\` of bench/messages.mjs),
measured against postgate without scanning in the same run. The postgates have the same configuration but for
\`scan:\` (one rspamd scanner, the default policy: spam tagged, \`onError: tempfail\`), deliver in sync mode to a
local node:http receiver (bench/lib/receiver.mjs, its own process) and run as single processes. Three kinds, rounds
rotating which goes first:

- **without scanning**;
- **rspamd stand-in**: scanning on, against a node:http process that answers every \`/checkv2\` at once with the
  real rspamd's recorded answer for this message (bench/lib/rspamd-replay.mjs). postgate does all of its scanning
  work (the request with the envelope headers, the message as the body, the JSON answer, the policy, the event's
  \`spam\`) at the same throughput as without scanning, so the difference in postgate's CPU per message is
  **postgate's own cost** of scanning, the target's figure;
- **rspamd**: scanning on against the real rspamd, a private instance with one normal worker on loopback and the
  test suite's configuration (dist/test/helpers/scanners.js: DNS answered NXDOMAIN at once by a loopback server,
  since this machine has no network, and a short URL TLD list); its main and worker processes' CPU is counted apart.

- Command: \`npm run bench\` (\`node bench/scan.mjs\` after a build; \`--quick\` for a short run that writes nothing)
- Date: ${started.toISOString()} (run took ${f0((performance.now() - t0) / 1000)} s)
- Node: ${process.version} (${process.platform} ${process.arch}); ${rspamdVersion}; load: \`${SMTP_SOURCE}\` with ${SESSIONS} sessions, connections reused
- Machine: ${cpuModel}, ${os.cpus().length} cores, ${f0(os.totalmem() / 2 ** 30)} GiB RAM; client, postgate, receiver and scanner share the cores
- rspamd answered its first ping ${f1(rspamdStartupMs / 1000)} s after it was started
- Rounds: ${ROUNDS}; each measurement a fresh postgate warmed up with ${WARM} messages, then ${COUNT} messages as fast as it
  answers (CPU per message and msg/s: utime+stime of postgate's process from /proc), then a fixed ${LAT_RATE} msg/s for
  ${LAT_SECONDS} s (bench/lib/latency.mjs, 20 connections, open loop: latency from the end of data to the reply, and the
  scanner's CPU per message). Medians reported.

| | postgate CPU per message | msg/s (${SESSIONS} sessions) | scanner CPU per message | latency p50 at ${LAT_RATE} msg/s | latency p99 |
|---|---|---|---|---|---|
${row('without scanning', 'plain', '—')}
${row('rspamd stand-in', 'replay', '(not counted)')}
${row('rspamd', 'rspamd', `${f0(m('rspamd', 'scannerCpuUs'))} µs`)}

- **The scan step alone: ${f0(step.step)} µs of CPU per message** (ScanStep.run with the rspamd client in one process,
  against the stand-in, ${STEP_COUNT} scans 8 at a time per round; per round: ${step.stepRounds.map(f0).join(', ')} µs). A bare undici
  POST of the same bytes to the same stand-in, reading the answer — the floor of any HTTP scanner client — costs
  ${f0(step.floor)} µs in the same rounds (${step.floorRounds.map(f0).join(', ')} µs): the step adds ${f0(step.step - step.floor)} µs to one request.
  Target at most ${TARGET_US} µs: **${stepPass ? 'PASS' : 'FAIL'}**.
- **End to end: ${f0(added)} µs** of postgate's CPU per message, stand-in minus without scanning (per round:
  ${perRound.map((x) => `${f0(x)} µs`).join(', ')}). Target at most ${TARGET_US} µs: **${pass ? 'PASS' : 'FAIL'}**. This is the difference of
  two figures of ${f0(m('plain', 'pgCpuUs'))} µs and more measured minutes apart on a machine shared with other work; the per-round
  spread shows how far it can be trusted, and the in-process figure above is the steadier one.
- With the real rspamd: ${f0(m('rspamd', 'scannerCpuUs'))} µs of rspamd's CPU per message, and ${f1(m('rspamd', 'p50') - m('plain', 'p50'))} ms
  (p50) / ${f1(m('rspamd', 'p99') - m('plain', 'p99'))} ms (p99) added latency, almost all rspamd's own time; its msg/s is its single worker's.
  postgate's CPU per message against the real rspamd is higher than against the stand-in because it answers fewer
  messages per second, over which the same per-second costs spread.
- The added CPU is the difference of two medians on a machine shared with other work, so the per-round figures show
  how far one reading can be trusted.
`;
process.stdout.write(`\n${body}`);
if (WRITE) {
  writeSection(DOC, 'scan', body);
  process.stdout.write(`\nwrote the scan section of ${DOC}\n`);
}
