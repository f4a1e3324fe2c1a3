#!/usr/bin/env node
/**
 * Per-stage micro-benchmark of the hot path for a 4 KB message: the CPU
 * each stage between the socket and the 250 costs, in one process, each
 * against its budget. The budget is what the 4 KB target of the SMTP
 * pipeline (postgate ≤ 1.6× the floor's CPU per message, docs/benchmarks.md)
 * leaves for postgate's own work above the floor, split by stage, so a
 * stage over its share is visible on its own and an end-to-end miss can be
 * traced to the stages that cause it.
 *
 * Stages, in the order the session runs them (src/smtp/session.ts):
 *   receive    counting, SHA-256, the bare line-ending check, the spill buffer, loop detection
 *   parse      parseMessage fed through a stream, as while the message arrives
 *   event      the trace headers and the event (postgate.email.v1)
 *   serialize  the event's JSON, once per message
 *   sign       the Standard Webhooks signature
 *   webhook    WebhookTarget.deliver (sign, POST, read the answer) minus a bare undici POST of the same bytes
 *   fan-out    deliverToTargets around that one target (the deadline, the delivery id, the skip-store,
 *              the outcome) minus WebhookTarget.deliver
 *   log        the one `info` line of an accepted message, to the buffered destination
 * and, for reference, the bare undici POST itself (the HTTP half of the floor, which postgate pays too).
 * Messages are distinct (each has its own Message-ID and first line).
 *
 *   node bench/stages.mjs            needs a build; rewrites the stages section of docs/benchmarks.md
 *   node bench/stages.mjs --quick    one short round; prints, writes nothing
 *   node bench/stages.mjs --no-write prints only
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { setMaxListeners } from 'node:events';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { request } from 'undici';
import { prose, wrap } from './messages.mjs';
import { writeSection } from './lib/doc.mjs';
import { startHelper } from './lib/processes.mjs';
import { median } from './lib/stats.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const DIST = join(ROOT, 'dist', 'src');
const DOC = join(ROOT, 'docs', 'benchmarks.md');
const args = new Set(process.argv.slice(2));
const QUICK = args.has('--quick');
const WRITE = !QUICK && !args.has('--no-write');
const ROUNDS = QUICK ? 1 : 5;
const N = QUICK ? 1500 : 4000;
const CONCURRENCY = 20;

const { SpillBuffer } = await import(join(DIST, 'message', 'bytes.js'));
const { parseMessage } = await import(join(DIST, 'message', 'parse.js'));
const { traceHeaders } = await import(join(DIST, 'message', 'trace.js'));
const { buildEvent } = await import(join(DIST, 'message', 'event.js'));
const { signPayload, secretKey } = await import(join(DIST, 'delivery', 'signing.js'));
const { WebhookTarget, createPoolCache } = await import(join(DIST, 'delivery', 'webhook.js'));
const { deliverToTargets, MemorySkipStore } = await import(join(DIST, 'delivery', 'index.js'));
const { hasBareLineEnding, countReceived, HEADER_SCAN_BYTES } = await import(join(DIST, 'smtp', 'session.js'));
const { loadConfig } = await import(join(DIST, 'config', 'load.js'));

if (!globalThis.gc) {
  // Collect between stages (see measure): run again with --expose-gc.
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

/** A 4 KB text/plain message, distinct per `i` (the plain-4k shape of bench/messages.mjs). */
function message(i) {
  const body = wrap(`message ${i} ${prose(600, 7)}`).replace(/\n/g, '\r\n');
  const head =
    `From: Alice Example <alice@example.net>\r\nTo: Bob <bob@bench.test>\r\nSubject: quarterly update ${i}\r\n` +
    `Date: Mon, 03 Mar 2025 10:00:00 +0000\r\nMessage-ID: <stage-${i}@example.net>\r\nMIME-Version: 1.0\r\n` +
    'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n';
  return Buffer.from(head + body.slice(0, 4096 - head.length) + '\r\n', 'utf8');
}

/** CPU µs per operation of `op(i)` over N operations, CONCURRENCY at a time, after a warm-up. */
async function measure(op, warm = Math.min(N, 1500)) {
  const run = async (count, offset) => {
    let next = 0;
    const worker = async () => {
      while (next < count) await op(offset + next++);
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  };
  await run(warm, 1e6);
  // The garbage of the stage measured before is collected now, not on this stage's account.
  globalThis.gc?.();
  const t0 = process.cpuUsage();
  await run(N, 0);
  const d = process.cpuUsage(t0);
  return (d.user + d.system) / N;
}


const dir = mkdtempSync(join(os.tmpdir(), 'postgate-stages-'));
const receiver = await startHelper('receiver.mjs');
const url = `http://127.0.0.1:${receiver.port}/inbound`;
const cfg = await loadConfig({
  overrides: () => ({ routes: [{ recipients: ['*@bench.test'], mode: 'sync', targets: [{ type: 'webhook', url, secret: SECRET }] }], storage: { path: dir } }),
});
const targetCfg = cfg.routes[0].targets[0];
const pools = createPoolCache();
const target = new WebhookTarget(targetCfg, { pool: pools.pool, now: Date.now });
const bare = pools.pool(new URL(url).origin);
const key = secretKey(SECRET);
// The caller's signal for the webhook stage: deliverToTargets makes one per message, and the
// fan-out stage counts it; here every operation shares one that never aborts.
const callerSignal = new AbortController().signal;
setMaxListeners(CONCURRENCY * 2, callerSignal);
const skip = new MemorySkipStore(Date.now);
// Every fan-out operation has its own delivery id, so the skip-store never skips one.
let fanOutSeq = 0;
const deliveryMessage = (p, rawSha256) => ({ queueId: p.queueId, mailFrom: 'alice@example.net', rcptTo: ['bob@bench.test'], receivedAt: p.receivedAt, message: p.received, rawSha256, event: p.event, eventJson: p.eventJson, claimCheck: () => Promise.reject(new Error('no claim check')) });
const devNull = pino.destination({ dest: '/dev/null', sync: false, minLength: 4096 });
const logger = pino({ level: 'info', base: { service: 'postgate' }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } }, devNull);

const msgs = new Map();
const msgOf = (i) => {
  let m = msgs.get(i);
  if (!m) {
    m = message(i);
    if (msgs.size < 8000) msgs.set(i, m);
  }
  return m;
};

/** What each stage hands the next, prepared outside the measured loop. */
async function prepared(i) {
  const raw = msgOf(i);
  const spill = new SpillBuffer(join(dir, 'spill'), `Q${i}`, cfg.storage.spillAbove);
  spill.write(raw);
  const received = await spill.end();
  const content = await parseMessage(raw, { limits: { inlineLimit: Number.MAX_SAFE_INTEGER } });
  const queueId = `Q${i.toString(36).toUpperCase()}`;
  const receivedAt = new Date();
  const trace = traceHeaders({ mailFrom: 'alice@example.net', rcptTo: ['bob@bench.test'], helo: 'client.example.net', clientAddress: '127.0.0.1', hostname: 'mx.bench.test', transport: 'ESMTP', queueId, date: receivedAt });
  const envelope = { mailFrom: 'alice@example.net', rcptTo: [{ address: 'bob@bench.test', mailboxHash: null }], helo: 'client.example.net', clientAddress: '127.0.0.1', tls: null, authUser: null, transport: 'ESMTP', queueId, listener: 'mx' };
  const event = buildEvent({ queueId, receivedAt, envelope, trace, content, rawSha256: createHash('sha256').update(raw).digest('hex'), rawSize: raw.length });
  const eventJson = Buffer.from(JSON.stringify(event));
  return { raw, received, content, queueId, receivedAt, trace, envelope, event, eventJson };
}

const cache = new Map();
const prep = async (i) => {
  let p = cache.get(i % 4000);
  if (!p) cache.set(i % 4000, (p = await prepared(i % 4000)));
  return p;
};
// Every stage reads prepared inputs; build them before any measurement.
for (let i = 0; i < 4000; i++) await prep(i);

const STAGES = [
  {
    id: 'receive',
    what: 'count, SHA-256, bare line-ending check, spill buffer (in memory), loop detection',
    budget: 15,
    op: async (i) => {
      const raw = msgOf(i % 4000);
      const hash = createHash('sha256');
      const spill = new SpillBuffer(join(dir, 'spill'), `R${i}`, cfg.storage.spillAbove);
      hasBareLineEnding(raw, -1);
      hash.update(raw);
      spill.write(raw);
      hash.digest('hex');
      const received = await spill.end();
      countReceived(received.headerBlock(HEADER_SCAN_BYTES));
      await spill.discard();
    },
  },
  {
    id: 'parse',
    what: 'parseMessage fed through a PassThrough, as the session does while the message arrives',
    budget: 55,
    op: async (i) => {
      const input = new PassThrough();
      const done = parseMessage(input, { limits: { inlineLimit: Number.MAX_SAFE_INTEGER } });
      input.end(msgOf(i % 4000));
      await done;
    },
  },
  {
    id: 'event',
    what: 'trace headers and the event (postgate.email.v1) from the parsed content',
    budget: 20,
    op: async (i) => {
      const p = await prep(i);
      const trace = traceHeaders({ mailFrom: 'alice@example.net', rcptTo: ['bob@bench.test'], helo: 'client.example.net', clientAddress: '127.0.0.1', hostname: 'mx.bench.test', transport: 'ESMTP', queueId: p.queueId, date: p.receivedAt });
      buildEvent({ queueId: p.queueId, receivedAt: p.receivedAt, envelope: p.envelope, trace, content: p.content, rawSha256: 'a'.repeat(64), rawSize: p.raw.length });
    },
  },
  {
    id: 'serialize',
    what: "the event's JSON, once per message (JSON.stringify and the UTF-8 buffer)",
    budget: 15,
    op: async (i) => {
      Buffer.from(JSON.stringify((await prep(i)).event));
    },
  },
  {
    id: 'sign',
    what: 'the Standard Webhooks signature (HMAC-SHA256 over id, time and body)',
    budget: 5,
    op: async (i) => {
      const p = await prep(i);
      signPayload(key, `msg_${p.queueId}`, 1_700_000_000, p.eventJson);
    },
  },
  {
    id: 'post',
    what: 'a bare undici POST of the event bytes, reading the 204 (the HTTP half of the floor: not postgate’s own)',
    budget: null,
    op: async (i) => {
      const p = await prep(i);
      const res = await request(url, { dispatcher: bare, method: 'POST', body: p.eventJson, headers: { 'content-type': 'application/json' } });
      await res.body.dump();
    },
  },
  {
    id: 'webhook',
    what: 'WebhookTarget.deliver (slots, signature, headers, POST, outcome) of the same bytes',
    budget: null,
    op: async (i) => {
      const p = await prep(i);
      await target.deliver(deliveryMessage(p, 'a'.repeat(64)), `msg_${p.queueId}_${i}`, callerSignal);
    },
  },
  {
    id: 'fan-out',
    what: 'deliverToTargets with that one webhook target, as the session calls it',
    budget: null,
    op: async (i) => {
      const p = await prep(i);
      const msg = deliveryMessage(p, (fanOutSeq++).toString(16).padStart(64, '0'));
      const o = await deliverToTargets([{ target, msg }], { deadlineMs: cfg.delivery.deadline, skip, now: Date.now, retry: { initialDelayMs: cfg.delivery.retry.initialDelay, maxDelayMs: cfg.delivery.retry.maxDelay } });
      if (!o.ok) throw o.error;
    },
  },
  {
    id: 'log',
    what: 'the `accepted` line at info, to a buffered destination',
    budget: 5,
    op: async (i) => {
      logger.info({ queueId: `Q${i}`, route: 'route-0', size: 4096, rcpts: 1, ms: 1.2, reply: 250 }, 'accepted');
    },
  },
];

const results = Object.fromEntries(STAGES.map((s) => [s.id, []]));
for (let r = 0; r < ROUNDS; r++) {
  // Rotate the order so no stage always runs first (JIT, GC and the machine's load).
  const order = STAGES.map((_, k) => STAGES[(k + r) % STAGES.length]);
  for (const s of order) results[s.id].push(await measure(s.op));
  process.stderr.write(`round ${r + 1}/${ROUNDS}: ${STAGES.map((s) => `${s.id} ${results[s.id].at(-1).toFixed(1)}`).join(', ')}\n`);
}
await new Promise((resolve) => devNull.flush(() => resolve()));
await pools.close();
await receiver.stop();
rmSync(dir, { recursive: true, force: true });

const med = Object.fromEntries(STAGES.map((s) => [s.id, median(results[s.id])]));
const overhead = med.webhook - med.post;
const rows = [
  ...STAGES.filter((s) => s.budget !== null).map((s) => ({ id: s.id, what: s.what, us: med[s.id], budget: s.budget, rounds: results[s.id] })),
  { id: 'webhook − post', what: 'what WebhookTarget adds to a bare POST (its signature included)', us: overhead, budget: 15, rounds: results.webhook.map((w, k) => w - results.post[k]) },
  {
    id: 'fan-out − webhook',
    what: 'what deliverToTargets adds around the target (the deadline, the delivery id, the skip-store, the outcome)',
    us: med['fan-out'] - med.webhook,
    budget: 10,
    rounds: results['fan-out'].map((f, k) => f - results.webhook[k]),
  },
];
const own = rows.filter((r) => r.id !== 'sign').reduce((a, r) => a + r.us, 0);
const ownBudget = rows.filter((r) => r.id !== 'sign').reduce((a, r) => a + r.budget, 0);

/** The floor's CPU per message at 4 KB, 20 sessions, from the SMTP section of the same file, when it has one. */
function floorFromDoc() {
  try {
    const m = /\| plain-4k \| 20 \| reuse \|(?:[^|]*\|){7}\s*([\d,]+)\s*\|/.exec(readFileSync(DOC, 'utf8'));
    return m ? Number(m[1].replace(/,/g, '')) : null;
  } catch {
    return null;
  }
}
const floor = floorFromDoc();
const us = (x) => `${x.toFixed(1)} µs`;
const lines = [];
lines.push('## The hot path, stage by stage');
lines.push('');
lines.push(
  'The CPU each stage between the socket and the `250` costs for a 4 KB text/plain message, measured in one process',
  'by calling the stage itself (the compiled modules of `dist/src`), 20 operations at a time, after a warm-up, each',
  'message distinct. The budget is the share of postgate’s own work the 4 KB target allows: at most 1.6× the floor’s',
  'CPU per message, so 0.6× the floor for everything postgate adds to smtp-server and one POST — about 160 µs for a',
  'floor near 270 µs — split by stage as below. The SMTP session’s own glue (smtp/session.ts, smtp/extensions.ts,',
  'the listener) and smtp-server are not micro-benchmarked here: the difference between the pipeline figure of the',
  'SMTP section and the sum below is theirs, plus what the processes’ interplay costs.',
);
lines.push('');
lines.push('- Command: `npm run bench` (`node bench/stages.mjs` after a build; `--quick` for one short round that writes nothing)');
lines.push(`- Date: ${new Date().toISOString()}`);
lines.push(`- Node: ${process.version} (${process.platform} ${process.arch}); CPU: utime+stime of this process (\`process.cpuUsage\`)`);
lines.push(`- Rounds: ${ROUNDS} of ${N} operations per stage, the order of the stages rotated per round; medians reported`);
lines.push('');
lines.push('| Stage | What | CPU per message | Budget | Result | Per round |');
lines.push('|---|---|---:|---:|---|---|');
for (const r of rows) {
  lines.push(`| ${r.id} | ${r.what} | ${us(r.us)} | ${us(r.budget)} | ${r.us <= r.budget ? 'within' : '**over**'} | ${r.rounds.map((x) => x.toFixed(0)).join(', ')} |`);
}
lines.push(`| **postgate’s own work** | the stages above but sign (counted inside webhook) | **${us(own)}** | ${us(ownBudget)} | ${own <= ownBudget ? 'within' : '**over**'} | |`);
lines.push('');
lines.push(`For reference: the bare undici POST of the same event bytes (half of the floor, paid by every gateway) costs ${us(med.post)}; WebhookTarget.deliver ${us(med.webhook)}; deliverToTargets with it ${us(med['fan-out'])}.`);
if (floor) {
  const allowed = 0.6 * floor;
  lines.push(
    `With the floor of the SMTP section (${floor} µs per message at 4 KB, 20 sessions; another run), the own-work budget is ${us(allowed)};`,
    `the stages measured here use ${us(own)}, ${own <= allowed ? 'within it' : `${us(own - allowed)} over it before any of the session's glue`}.`,
  );
}
const body = lines.join('\n');
process.stdout.write(`${body}\n`);
if (WRITE) writeSection(DOC, 'stages', body);
process.exit(0);
