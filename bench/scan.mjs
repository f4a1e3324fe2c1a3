#!/usr/bin/env node
/**
 * Scanning benchmark: what rspamd scanning adds per 4 KB message, measured
 * against postgate without scanning in the same run. The postgates are the
 * same build and configuration but for `scan:` (one rspamd scanner, the
 * default policy `tag`), post to a local node:http receiver, and run as
 * single processes.
 *
 *   - postgate's own added CPU per message (the target: at most 100 µs), two
 *     ways: the scan step alone in this process (ScanStep.run with the rspamd
 *     client over HTTP and over milter, beside bare socket exchanges and
 *     undici's Pool in the same rounds); and end to end, postgate against
 *     stand-ins that answer with the real rspamd's recorded answer at once
 *     (lib/rspamd-replay.mjs over HTTP, lib/rspamd-milter-replay.mjs over
 *     milter) minus postgate without scanning, running side by side and fed
 *     alternating batches, so each difference is of two figures taken
 *     seconds apart; what rspamd spends is not in it;
 *   - with the real rspamd (a private instance with one normal worker and a
 *     milter proxy worker, the test suite's, dist/test/helpers/scanners.js):
 *     rspamd's CPU per message (its main and worker processes) and the added
 *     latency at a fixed rate, over HTTP and over milter.
 *
 *   node bench/scan.mjs             needs a build; rewrites the scan section of docs/benchmarks.md
 *   node bench/scan.mjs --quick     one short round; prints, writes nothing
 *   node bench/scan.mjs --no-write  prints only
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { messages } from './messages.mjs';
import { writeSection } from './lib/doc.mjs';
import { CLK_TCK, findSmtpSource, freePort, procStat, startHelper, stop, waitPort } from './lib/processes.mjs';
import { median } from './lib/stats.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const DOC = join(ROOT, 'docs', 'benchmarks.md');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'index.js');
const args = new Set(process.argv.slice(2));
const QUICK = args.has('--quick');
const WRITE = !QUICK && !args.has('--no-write');
const ROUNDS = QUICK ? 1 : 3;
const SESSIONS = 20;
const WARM = QUICK ? 800 : 1000;
const COUNT = QUICK ? 800 : 1000;
/** End to end: sets of batches (without scanning, the HTTP stand-in over TCP and its Unix socket, the milter stand-in) per round, each a fixed rate for some seconds. */
const PAIRS = QUICK ? 2 : 4;
const PAIR_RATE = 150;
const PAIR_SECONDS = 3;
const LAT_RATE = 50;
const LAT_SECONDS = QUICK ? 5 : 8;
const TARGET_US = 100;
const STEP_COUNT = QUICK ? 1000 : 2000;

const SMTP_SOURCE = findSmtpSource();
const RSPAMD = ['/usr/bin/rspamd', '/usr/sbin/rspamd'].find((p) => existsSync(p));
if (!SMTP_SOURCE || !RSPAMD) {
  process.stderr.write(
    'bench/scan.mjs needs smtp-source (Postfix) and rspamd. On Debian/Ubuntu:\n' +
      '  echo "postfix postfix/main_mailer_type select No configuration" | sudo debconf-set-selections\n' +
      '  sudo apt-get install -y --no-install-recommends postfix rspamd\n',
  );
  process.exit(1);
}
if (!globalThis.gc) {
  // The in-process kinds collect the garbage of the kind measured before theirs (see stepCost), as
  // bench/stages.mjs does between stages: run again with --expose-gc.
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const { startRspamd } = await import(join(ROOT, 'dist', 'test', 'helpers', 'scanners.js'));
// libmilter's framing, written apart from postgate's client (test/helpers/milter.ts).
const { milterFrame: frame } = await import(join(ROOT, 'dist', 'test', 'helpers', 'milter.js'));

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

/**
 * The scanner of a scanning postgate: `{ url, socket }` for rspamd over HTTP,
 * `{ milter }` (host:port or a socket path) for rspamd's proxy over milter.
 */
function scannerYaml(sc) {
  return sc.milter ? `    - type: rspamd\n      protocol: milter\n      address: ${sc.milter}` : `    - type: rspamd\n      url: ${sc.url}${sc.socket ? `\n      socket: ${sc.socket}` : ''}`;
}

/** The configuration of the postgates; `scan` only in the scanning ones (stated in the doc). */
function config(port, receiverPort, dataDir, scanner) {
  return `# bench/scan.mjs: postgate in sync mode posting to the local receiver${scanner ? ', every message scanned by rspamd' : ''}
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
  scanner
    ? `scan:
  scanners:
${scannerYaml(scanner)}
  # the defaults: spam is tagged (verdict in the event), onError tempfail
`
    : ''
}`;
}

async function startPostgate(tmp, scanner) {
  const receiver = await startHelper('receiver.mjs');
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmp, 'pg-'));
  const cfgFile = join(dataDir, 'postgate.yml');
  writeFileSync(cfgFile, config(port, receiver.port, dataDir, scanner));
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

function latency(port, file, rate = LAT_RATE, seconds = LAT_SECONDS) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(HERE, 'lib', 'latency.mjs'), String(port), String(rate), String(seconds), '20', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`latency.mjs exited ${code}`))));
  });
}

/** A fresh postgate, warmed up (its first messages pay for compilation and pools). */
async function warmPostgate(tmp, file, scanner, warmCount = WARM) {
  const pg = await startPostgate(tmp, scanner);
  const warm = await smtpSource(pg.port, file, warmCount);
  if (warm.code !== 0) {
    await pg.stop();
    throw new Error(`warm-up failed: ${warm.err}`);
  }
  return pg;
}

/** `n` messages as fast as postgate answers (smtp-source, closed loop): its CPU per message and msg/s, as in bench/smtp.mjs. */
async function batch(pg, file, n) {
  const before = await pg.receiver.count();
  const p0 = cpuUs(pg.pid);
  const run = await smtpSource(pg.port, file, n);
  const p1 = cpuUs(pg.pid);
  const got = (await pg.receiver.count()) - before;
  if (run.code !== 0 || got !== n) throw new Error(`run incomplete: exit ${run.code}, ${got}/${n} delivered ${run.err}`);
  return { pgCpuUs: (p1 - p0) / n, rate: n / run.seconds };
}

/** A fixed-rate run at LAT_RATE: latency, and postgate's and the scanner's CPU per message at that rate. */
async function fixedRate(pg, file, scanner) {
  const p0 = cpuUs(pg.pid);
  const r0 = scanner?.pid ? treeCpuUs(scanner.pid) : 0;
  const lat = await latency(pg.port, file);
  const r1 = scanner?.pid ? treeCpuUs(scanner.pid) : 0;
  const p1 = cpuUs(pg.pid);
  if (lat.failed) throw new Error(`${lat.failed} messages failed in the fixed-rate run`);
  return { pgCpuUs: (p1 - p0) / lat.sent, scannerCpuUs: (r1 - r0) / lat.sent, p50: lat.p50, p99: lat.p99, late: lat.late };
}

/**
 * One batch of the end-to-end comparison: a fixed PAIR_RATE for PAIR_SECONDS (bench/lib/latency.mjs,
 * open loop), so both postgates do the same work per second whatever a scan's latency: postgate's CPU
 * per message over the batch, and the latency.
 */
async function pairBatch(pg, file) {
  const before = await pg.receiver.count();
  const p0 = cpuUs(pg.pid);
  const lat = await latency(pg.port, file, PAIR_RATE, PAIR_SECONDS);
  const p1 = cpuUs(pg.pid);
  const got = (await pg.receiver.count()) - before;
  if (lat.failed || got !== lat.sent) throw new Error(`batch incomplete: ${lat.failed} failed, ${got}/${lat.sent} delivered`);
  return { pgCpuUs: (p1 - p0) / lat.sent, p50: lat.p50, p99: lat.p99, late: lat.late };
}

/**
 * One round of the end-to-end comparison: four postgates side by side — without scanning, against the
 * HTTP stand-in over TCP and over its Unix socket (scan.scanners[].socket), and against the milter
 * stand-in over TCP (protocol: milter) — fed PAIRS sets of batches, the order rotating from set to set,
 * so a drift of the machine's load hits all alike; then the one without scanning at LAT_RATE, the
 * baseline of the real rspamd's added latency.
 */
async function pairedRound(tmp, file, stand) {
  const pgs = {};
  try {
    pgs.plain = await warmPostgate(tmp, file, null);
    pgs.replay = await warmPostgate(tmp, file, { url: stand.url });
    pgs.unix = await warmPostgate(tmp, file, { url: stand.url, socket: stand.socket });
    pgs.milter = await warmPostgate(tmp, file, { milter: stand.milter });
    const kinds = Object.keys(pgs);
    const pairs = [];
    for (let i = 0; i < PAIRS; i++) {
      const got = {};
      for (const k of kinds.map((_, j) => kinds[(i + j) % kinds.length])) got[k] = await pairBatch(pgs[k], file);
      pairs.push(got);
    }
    return { pairs, latPlain: await fixedRate(pgs.plain, file, null) };
  } finally {
    for (const pg of Object.values(pgs)) await pg.stop();
  }
}

/**
 * The real rspamd over HTTP: postgate's CPU and msg/s at rspamd's pace, then the fixed-rate run with
 * rspamd's CPU; over milter (its proxy worker scanning itself), the fixed-rate run only.
 */
async function rspamdRound(tmp, file, rspamd) {
  const out = {};
  const pg = await warmPostgate(tmp, file, { url: rspamd.address });
  try {
    const { rate } = await batch(pg, file, COUNT);
    out.http = { rate, ...(await fixedRate(pg, file, { pid: rspamd.pid })) };
  } finally {
    await pg.stop();
  }
  // Half the warm-up: at rspamd's pace it is seconds per round, and only the fixed rate follows.
  const pgm = await warmPostgate(tmp, file, { milter: rspamd.milter }, WARM / 2);
  try {
    out.milter = await fixedRate(pgm, file, { pid: rspamd.pid });
  } finally {
    await pgm.stop();
  }
  return out;
}

/**
 * The scan step alone, in this process: ScanStep.run with the rspamd client against the stand-in,
 * as the session calls it (the message in memory with its trace header, the envelope, the policy),
 * STEP_COUNT scans, 8 at a time; CPU of this process per scan (process.cpuUsage). Beside it, in
 * the same rounds (order rotating):
 *   - floor: the least any client of rspamd's HTTP protocol does, written out here on a bare
 *     socket — connect, write the request head and the message, read the answer to the close;
 *   - socket: the same step with the client on the stand-in's Unix socket (scan.scanners[].socket);
 *   - undici: what the client did before, undici's Pool.request with the same request headers,
 *     reading the answer and parsing it with the same function (one new connection per scan too,
 *     since the stand-in closes each like rspamd);
 *   - milter, milterSocket: the same step with the milter client (protocol: milter) against the
 *     milter stand-in, over TCP and over its Unix socket, 8 connections kept open;
 *   - milterFloor: the least a milter client does, on 8 bare sockets kept open: write the frames
 *     of one message (built once) and the message, read the answer's bytes.
 * The stand-ins run in their own processes, so no kind counts their work. Before each kind's round
 * the garbage of the kinds before it is collected (global.gc, as bench/stages.mjs does).
 */
async function stepCost(stand, message, milterAnswerLength) {
  const { url, socket } = stand;
  const { ScanStep, rspamdScanner, rspamdMilterScanner, parseSocketAddress } = await import(join(ROOT, 'dist', 'src', 'scan', 'index.js'));
  const { parseRspamdAnswer } = await import(join(ROOT, 'dist', 'src', 'scan', 'rspamd.js'));
  const { MessageBytes } = await import(join(ROOT, 'dist', 'src', 'message', 'bytes.js'));
  const { Pool } = await import('undici');
  const bytes = MessageBytes.of(message).prepend(Buffer.from('Received: from client.bench (127.0.0.1) by mx.bench.test with ESMTP id 1; Mon, 07 Dec 2026 10:00:00 +0000\r\n'));
  const stepOf = (scanner) => new ScanStep({ scanners: [{ scanner, timeoutMs: 15_000 }], breaker: { isDown: () => false, record: () => false }, header: false, now: Date.now });
  const scanner = rspamdScanner({ id: 'rspamd', url });
  const viaSocket = rspamdScanner({ id: 'rspamd', url, socket });
  const milter = rspamdMilterScanner({ id: 'rspamd', to: parseSocketAddress(stand.milter), connections: 8 });
  const milterUnix = rspamdMilterScanner({ id: 'rspamd', to: { path: stand.milterSocket }, connections: 8 });
  const step = stepOf(scanner);
  const stepSocket = stepOf(viaSocket);
  const stepMilter = stepOf(milter);
  const stepMilterUnix = stepOf(milterUnix);
  const envelope = { mailFrom: 'bench@client.bench', rcptTo: ['1x@bench.test'], helo: 'client.bench', clientAddress: '127.0.0.1', clientHostname: null, authUser: null, queueId: 'Q1' };
  const policy = { spam: 'tag', virus: 'tag', threshold: null, onError: 'tempfail' };
  const u = new URL(url);
  const pool = new Pool(u.origin, { connections: 32, keepAliveTimeout: 30_000 });
  const body = await bytes.buffer();
  const fields = { From: envelope.mailFrom, Rcpt: envelope.rcptTo[0], IP: envelope.clientAddress, Helo: envelope.helo, 'Queue-Id': envelope.queueId };
  const headers = ['content-length', String(body.length), ...Object.entries(fields).flat()];
  const head = Buffer.from(`POST /checkv2 HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\nContent-Length: ${body.length}\r\n${Object.entries(fields).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, 'latin1');
  const bare = () =>
    new Promise((resolve, reject) => {
      const s = net.connect(Number(u.port), u.hostname);
      const chunks = [];
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => {
        s.destroy();
        resolve(Buffer.concat(chunks));
      });
      s.on('error', reject);
      s.cork();
      s.write(head);
      s.write(body);
      s.uncork();
    });
  // The milter floor: one message's frames built once (libmilter's framing: length, command, data).
  const milterHead = Buffer.concat([
    frame('K', ''),
    frame('C', 'unknown\x004\x00\x00127.0.0.1\x00'),
    frame('D', `C{i}\x00${envelope.queueId}\x00`),
    frame('H', `${envelope.helo}\x00`),
    frame('M', `<${envelope.mailFrom}>\x00`),
    frame('R', `<${envelope.rcptTo[0]}>\x00`),
    frame('B', '').subarray(0, 5),
  ]);
  milterHead.writeUInt32BE(body.length + 1, milterHead.length - 5);
  const eob = frame('E', '');
  const optneg = Buffer.alloc(17);
  optneg.writeUInt32BE(13, 0);
  optneg[4] = 0x4f;
  optneg.writeUInt32BE(6, 5);
  optneg.writeUInt32BE(0x31, 9);
  const [mHost, mPort] = stand.milter.split(':');
  const bareMilter = await Promise.all(
    Array.from(
      { length: 8 },
      () =>
        new Promise((resolve, reject) => {
          const s = net.connect(Number(mPort), mHost);
          s.once('data', () => resolve(s));
          s.once('error', reject);
          s.write(optneg);
        }),
    ),
  );
  const milterOnce = () =>
    new Promise((resolve) => {
      const s = bareMilter.pop();
      let got = 0;
      const on = (d) => {
        got += d.length;
        if (got < milterAnswerLength) return;
        s.off('data', on);
        bareMilter.push(s);
        resolve();
      };
      s.on('data', on);
      s.cork();
      s.write(milterHead);
      s.write(body);
      s.write(eob);
      s.uncork();
    });
  const kinds = {
    step: () => step.run({ content: () => bytes.content(), size: bytes.size, envelope }, policy, 30_000),
    socket: () => stepSocket.run({ content: () => bytes.content(), size: bytes.size, envelope }, policy, 30_000),
    milter: () => stepMilter.run({ content: () => bytes.content(), size: bytes.size, envelope }, policy, 30_000),
    milterSocket: () => stepMilterUnix.run({ content: () => bytes.content(), size: bytes.size, envelope }, policy, 30_000),
    milterFloor: milterOnce,
    undici: async () => {
      const res = await pool.request({ path: '/checkv2', method: 'POST', headers, body, headersTimeout: 15_000, bodyTimeout: 15_000 });
      parseRspamdAnswer('rspamd', Buffer.from(await res.body.arrayBuffer()));
    },
    floor: bare,
  };
  const loop = async (fn, n) => {
    let i = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (i++ < n) await fn();
      }),
    );
  };
  const names = Object.keys(kinds);
  const out = Object.fromEntries(names.map((k) => [k, []]));
  for (const k of names) await loop(kinds[k], STEP_COUNT); // warm-up
  for (let r = 0; r < ROUNDS * 2 + 1; r++) {
    for (const k of names.map((_, i) => names[(i + r) % names.length])) {
      // The garbage of the kind measured before (undici's, a connection per HTTP scan) is collected
      // now, not on this kind's account.
      globalThis.gc();
      const c0 = process.cpuUsage();
      await loop(kinds[k], STEP_COUNT);
      const c = process.cpuUsage(c0);
      out[k].push((c.user + c.system) / STEP_COUNT);
    }
  }
  await scanner.close();
  await viaSocket.close();
  await milter.close();
  await milterUnix.close();
  for (const s of bareMilter) s.destroy();
  await pool.close();
  return Object.fromEntries(names.map((k) => [k, { median: median(out[k]), rounds: out[k] }]));
}


/**
 * The real rspamd's milter answer for `message` (its proxy worker at `address`, host:port), as the
 * frames it wrote, for lib/rspamd-milter-replay.mjs: option negotiation, then the frames postgate
 * sends for one message (docs/scanning.md), read until the final reply.
 */
function recordMilterAnswer(address, message) {
  const [host, port] = address.split(':');
  const optneg = Buffer.alloc(12);
  optneg.writeUInt32BE(6, 0);
  optneg.writeUInt32BE(0x31, 4);
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), host);
    let buf = Buffer.alloc(0);
    let negotiated = false;
    const frames = [];
    s.on('error', reject);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 5 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const f = buf.subarray(0, 4 + buf.readUInt32BE(0));
        buf = buf.subarray(f.length);
        if (!negotiated) {
          negotiated = true;
          s.write(
            Buffer.concat([
              frame('K', ''),
              frame('C', 'unknown\x004\x00\x00127.0.0.1\x00'),
              frame('H', 'client.bench\x00'),
              frame('M', '<bench@client.bench>\x00'),
              frame('R', '<1x@bench.test>\x00'),
              frame('B', message),
              frame('E', ''),
            ]),
          );
          continue;
        }
        frames.push(f);
        if ('acdrty'.includes(String.fromCharCode(f[4]))) {
          s.destroy();
          resolve(Buffer.concat(frames));
        }
      }
    });
    s.write(frame('O', optneg));
  });
}

// ── run ─────────────────────────────────────────────────────────────────────

const started = new Date();
const t0 = performance.now();
const tmp = mkdtempSync(join(os.tmpdir(), 'postgate-bench-scan-'));
const msg = (await messages()).find((m) => m.id === 'plain-4k');
const file = join(tmp, 'plain-4k.eml');
// smtp-source -F sends each line followed by CRLF (and dot-stuffs): give it LF lines.
writeFileSync(file, msg.buf.toString('latin1').replace(/\r\n/g, '\n'), 'latin1');
const rspamd = await startRspamd({ milter: true });
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
  // The milter proxy's milter_headers (X-Spamd-Result, X-Rspamd-Action) adds a "milter" block to every
  // answer of this instance; an rspamd reached only over HTTP has none, so the HTTP stand-in's is left out.
  const answer = await res.json();
  delete answer.milter;
  writeFileSync(answerFile, JSON.stringify(answer));
}
const milterAnswerFile = join(tmp, 'rspamd-answer.milter');
const milterAnswer = await recordMilterAnswer(rspamd.milter, Buffer.from(readFileSync(file, 'latin1').replace(/\n/g, '\r\n'), 'latin1'));
writeFileSync(milterAnswerFile, milterAnswer);
const replaySocket = join(tmp, 'rspamd-replay.sock');
const replay = await startHelper('rspamd-replay.mjs', [], [answerFile, replaySocket]);
const replayUrl = `http://127.0.0.1:${replay.port}`;
const milterSocket = join(tmp, 'rspamd-milter-replay.sock');
const milterReplay = await startHelper('rspamd-milter-replay.mjs', [], [milterAnswerFile, milterSocket]);
const stand = { url: replayUrl, socket: replaySocket, milter: `127.0.0.1:${milterReplay.port}`, milterSocket };
const paired = [];
const real = [];
let step;
const f0 = (x) => x.toFixed(0);
const f1 = (x) => x.toFixed(1);
try {
  for (let round = 0; round < ROUNDS; round++) {
    // The real rspamd's run goes after the pair in odd rounds, before it in even ones.
    const withRspamd = async () => {
      const r = await rspamdRound(tmp, file, rspamd);
      real.push(r);
      process.stdout.write(
        `round ${round + 1} rspamd: ${f0(r.http.rate)} msg/s as fast as it answers; at ${LAT_RATE} msg/s: postgate ${f0(r.http.pgCpuUs)} µs/msg, p50 ${f1(r.http.p50)} ms p99 ${f1(r.http.p99)} ms, rspamd ${f0(r.http.scannerCpuUs)} µs/msg; ` +
          `over milter: postgate ${f0(r.milter.pgCpuUs)} µs/msg, p50 ${f1(r.milter.p50)} ms p99 ${f1(r.milter.p99)} ms, rspamd ${f0(r.milter.scannerCpuUs)} µs/msg\n`,
      );
    };
    if (round % 2) await withRspamd();
    const p = await pairedRound(tmp, file, stand);
    paired.push(p);
    for (const x of p.pairs) {
      process.stdout.write(
        `round ${round + 1} set at ${PAIR_RATE} msg/s: without scanning ${f0(x.plain.pgCpuUs)} µs/msg (p50 ${f1(x.plain.p50)} ms), ` +
          `stand-in ${f0(x.replay.pgCpuUs)} µs/msg (+${f0(x.replay.pgCpuUs - x.plain.pgCpuUs)}), over its Unix socket ${f0(x.unix.pgCpuUs)} µs/msg (+${f0(x.unix.pgCpuUs - x.plain.pgCpuUs)}), ` +
          `over milter ${f0(x.milter.pgCpuUs)} µs/msg (+${f0(x.milter.pgCpuUs - x.plain.pgCpuUs)})` +
          `${x.plain.late + x.replay.late + x.unix.late + x.milter.late ? ` (late: ${x.plain.late} / ${x.replay.late} / ${x.unix.late} / ${x.milter.late})` : ''}\n`,
      );
    }
    if (!(round % 2)) await withRspamd();
  }
  process.stdout.write('the scan step alone, in process, against the stand-in …\n');
  step = await stepCost(stand, Buffer.from(readFileSync(file, 'latin1').replace(/\n/g, '\r\n'), 'latin1'), milterAnswer.length);
  process.stdout.write(
    `scan step ${f0(step.step.median)} µs/scan (over a Unix socket ${f0(step.socket.median)} µs), bare socket ${f0(step.floor.median)} µs, undici Pool ${f0(step.undici.median)} µs; ` +
      `over milter ${f0(step.milter.median)} µs/scan (over a Unix socket ${f0(step.milterSocket.median)} µs), bare milter socket ${f0(step.milterFloor.median)} µs\n`,
  );
} finally {
  await replay.stop();
  await milterReplay.stop();
  await rspamd.stop();
  rmSync(tmp, { recursive: true, force: true });
}
const verdict = (us) => (us <= TARGET_US ? 'PASS' : 'FAIL');
const rounds = (k) => step[k].rounds.map(f0).join(', ');

const pairs = paired.flatMap((p) => p.pairs);
const diffsOf = (kind) => pairs.map((x) => x[kind].pgCpuUs - x.plain.pgCpuUs);
const diffs = diffsOf('replay');
const diffsUnix = diffsOf('unix');
const diffsMilter = diffsOf('milter');
const added = median(diffs);
const addedUnix = median(diffsUnix);
const addedMilter = median(diffsMilter);
const late = pairs.reduce((n, x) => n + x.plain.late + x.replay.late + x.unix.late + x.milter.late, 0);
const mb = (kind, key) => median(pairs.map((x) => x[kind][key]));
const ml = (kind, key) => median(paired.map((p) => p[kind][key]));
const mr = (via, key) => median(real.map((r) => r[via][key]));
const cpuModel = (readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? 'unknown').trim();
const rspamdVersion = execFileSync(RSPAMD, ['--version']).toString().trim().split('\n')[0];
const quartile = (xs, q) => {
  const sorted = [...xs].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * (sorted.length - 1) + 0.5))];
};
const spread = (xs) => `interquartile range ${f0(quartile(xs, 0.25))} to ${f0(quartile(xs, 0.75))} µs; per set: ${xs.map(f0).join(', ')} µs`;
const row = (label, kind) => `| ${label} | ${f0(mb(kind, 'pgCpuUs'))} µs | ${f1(mb(kind, 'p50'))} ms | ${f1(mb(kind, 'p99'))} ms | ${pairs.reduce((n, x) => n + x[kind].late, 0)} |`;

const body = `## Scanning with rspamd

What scanning every message with rspamd adds, for 4 KB text/plain messages (\`plain-4k\` of bench/messages.mjs),
measured against postgate without scanning in the same run. The postgates have the same configuration but for
\`scan:\` (one rspamd scanner, the default policy: spam tagged, \`onError: tempfail\`), deliver in sync mode to a
local node:http receiver (bench/lib/receiver.mjs, its own process) and run as single processes. rspamd is reached
two ways ([scanning](scanning.md#rspamd-over-milter)): over HTTP (\`/checkv2\` on its normal worker, which closes
every connection after its answer, so each scan opens one) and over milter (\`protocol: milter\`, its proxy worker,
over connections that stay open). The kinds:

- **without scanning**;
- **rspamd stand-ins**: scanning on, against a process that answers every message at once with the real rspamd's
  recorded answer for it: over HTTP a node:http process (over TCP, and over a Unix socket it also listens on) that
  closes the connection after every answer as rspamd's normal worker does (bench/lib/rspamd-replay.mjs); over
  milter a process that speaks the proxy's side of the protocol and keeps the connection for the next message
  (bench/lib/rspamd-milter-replay.mjs). postgate does all of its scanning work (the connection or its reuse, the
  envelope, the message, the answer, the policy, the event's \`spam\`) at the same throughput as without
  scanning, so the difference in postgate's CPU per message is **postgate's own cost** of scanning, the target's figure;
- **rspamd**: scanning on against the real rspamd, a private instance on loopback with one normal worker and one
  proxy worker in milter mode scanning itself, and the test suite's configuration (dist/test/helpers/scanners.js:
  DNS answered NXDOMAIN at once by a loopback server, since this machine has no network, a short URL TLD list, and
  milter_headers adding X-Spamd-Result and X-Rspamd-Action); its main and worker processes' CPU is counted apart.

- Command: \`npm run bench\` (\`node bench/scan.mjs\` after a build; \`--quick\` for a short run that writes nothing)
- Date: ${started.toISOString()} (run took ${f0((performance.now() - t0) / 1000)} s)
- Node: ${process.version} (${process.platform} ${process.arch}); ${rspamdVersion}; load: \`${SMTP_SOURCE}\` with ${SESSIONS} sessions, connections reused
- Machine: ${cpuModel}, ${os.cpus().length} cores, ${f0(os.totalmem() / 2 ** 30)} GiB RAM; client, postgate, receiver and scanner share the cores
- rspamd answered its first ping ${f1(rspamdStartupMs / 1000)} s after it was started
- Rounds: ${ROUNDS}. In each, four postgates run side by side — without scanning, against the HTTP stand-in over TCP
  and over its Unix socket, and against the milter stand-in over TCP — each warmed up with ${WARM} messages
  (smtp-source), then fed ${PAIRS} sets of batches, one batch each in turn (which goes first rotates from set to set):
  each batch a fixed ${PAIR_RATE} msg/s for ${PAIR_SECONDS} s (bench/lib/latency.mjs, 20 connections, open loop: latency from
  the end of data to the reply), so all do the same work per second however long a scan takes; CPU per message
  from utime+stime of each postgate's process (/proc) over its batch. The postgate against the real rspamd over
  HTTP, warmed up alike, gets ${COUNT} messages as fast as it answers (msg/s: its single worker's pace), then a fixed
  ${LAT_RATE} msg/s for ${LAT_SECONDS} s (rspamd's CPU per message, latency); one over milter, warmed up with
  ${WARM / 2} messages, the fixed rate only; so does the postgate without scanning, for comparison. The real rspamd runs before the stand-ins in odd
  rounds and after them in even ones. Medians reported.

postgate's own cost, at ${PAIR_RATE} msg/s:

| | postgate CPU per message | latency p50 | latency p99 | late (sent after their time) |
|---|---|---|---|---|
${row('without scanning', 'plain')}
${row('rspamd stand-in, HTTP', 'replay')}
${row('rspamd stand-in, HTTP over its Unix socket', 'unix')}
${row('rspamd stand-in, milter', 'milter')}

With the real rspamd, at ${LAT_RATE} msg/s:

| | postgate CPU per message | rspamd CPU per message | latency p50 | latency p99 | msg/s as fast as it answers (${SESSIONS} sessions) |
|---|---|---|---|---|---|
| without scanning | ${f0(ml('latPlain', 'pgCpuUs'))} µs | — | ${f1(ml('latPlain', 'p50'))} ms | ${f1(ml('latPlain', 'p99'))} ms | — |
| rspamd, HTTP | ${f0(mr('http', 'pgCpuUs'))} µs | ${f0(mr('http', 'scannerCpuUs'))} µs | ${f1(mr('http', 'p50'))} ms | ${f1(mr('http', 'p99'))} ms | ${f0(mr('http', 'rate'))} |
| rspamd, milter | ${f0(mr('milter', 'pgCpuUs'))} µs | ${f0(mr('milter', 'scannerCpuUs'))} µs | ${f1(mr('milter', 'p50'))} ms | ${f1(mr('milter', 'p99'))} ms | — |

- **The scan step alone over milter (\`protocol: milter\`): ${f0(step.milter.median)} µs of CPU per message** (ScanStep.run
  with the milter client in one process, against the milter stand-in over TCP, 8 connections kept open,
  ${STEP_COUNT} scans 8 at a time per round, the garbage of the kind measured before collected first; per round: ${rounds('milter')} µs). Target at most ${TARGET_US} µs:
  **${verdict(step.milter.median)}**. Over the stand-in's Unix socket: ${f0(step.milterSocket.median)} µs (${rounds('milterSocket')} µs):
  **${verdict(step.milterSocket.median)}**. In the same rounds (order rotating):
  - the floor of any milter client, bare sockets kept open that write one message's frames (built once) and read
    the answer: ${f0(step.milterFloor.median)} µs (${rounds('milterFloor')} µs); the step adds ${f0(step.milter.median - step.milterFloor.median)} µs to it: the frames of
    the envelope, the parse of the answer, the pool, the policy and the verdict;
  - **over HTTP (the default \`protocol: http\`): ${f0(step.step.median)} µs** (${rounds('step')} µs): **${verdict(step.step.median)}**;
    over the HTTP stand-in's Unix socket (\`scan.scanners[].socket\`): ${f0(step.socket.median)} µs (${rounds('socket')} µs): **${verdict(step.socket.median)}**;
  - the floor of any client of rspamd's HTTP protocol, a bare socket that connects, writes the request head and the
    message and reads the answer to the close: ${f0(step.floor.median)} µs (${rounds('floor')} µs): the connection and its close
    are most of it, and milter has neither per message;
  - undici's \`Pool.request\` with the same headers and the same parse of the answer, the HTTP client before the
    current one: ${f0(step.undici.median)} µs (${rounds('undici')} µs).
- **End to end over milter: ${f0(addedMilter)} µs** of postgate's CPU per message, stand-in minus without scanning, median of
  the ${diffsMilter.length} sets (${spread(diffsMilter)}). Target at most ${TARGET_US} µs: **${verdict(addedMilter)}**.
- **End to end over HTTP (TCP): ${f0(added)} µs** (${spread(diffs)}): **${verdict(added)}**; over rspamd's Unix socket:
  ${f0(addedUnix)} µs (${spread(diffsUnix)}): **${verdict(addedUnix)}**.
- Each end-to-end figure is the difference of two batches of about ${f0(mb('plain', 'pgCpuUs'))} µs per message taken seconds
  apart on cores shared with the client, the receiver and the stand-ins, and /proc counts CPU in ticks of ${f0(1000 / CLK_TCK)} ms;
  the spread of the sets shows how far one reading can be trusted, and the in-process figures, taken with nothing
  else in the process, are the steadier ones.${late ? ` ${late} messages of the batches were sent late: the machine did not keep up with ${PAIR_RATE} msg/s throughout, so those batches measured less work per second than intended.` : ''}
- With the real rspamd: ${f0(mr('http', 'scannerCpuUs'))} µs of rspamd's CPU per message over HTTP, ${f0(mr('milter', 'scannerCpuUs'))} µs over milter
  (its proxy worker scans itself), and ${f1(mr('http', 'p50') - ml('latPlain', 'p50'))} ms / ${f1(mr('milter', 'p50') - ml('latPlain', 'p50'))} ms (p50) added latency at ${LAT_RATE} msg/s,
  almost all rspamd's own time. postgate's CPU per message there is higher than in the first table because at ${LAT_RATE} msg/s
  its per-second costs (timers, the event loop's wake-ups) spread over fewer messages.
`;
process.stdout.write(`\n${body}`);
if (WRITE) {
  writeSection(DOC, 'scan', body);
  process.stdout.write(`\nwrote the scan section of ${DOC}\n`);
}
