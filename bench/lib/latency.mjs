/**
 * Fixed-rate SMTP client for latency: unlike smtp-source, which sends the
 * next message only after the previous reply, it starts messages on a fixed
 * schedule (open loop), so a slow reply shows up as latency instead of as a
 * lower rate. Each message goes over one of `conns` pre-opened connections
 * (EHLO done); the time measured is end of data (the final "." written) to
 * the reply. A message due when every connection is busy is counted as
 * `late` and sent when one frees up (its latency still counts from the "."),
 * so `late` > 0 means the rate was above what the server sustains.
 *
 * node bench/lib/latency.mjs PORT RATE SECONDS CONNS MESSAGE_FILE  → JSON on stdout
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';

const [port, rate, seconds, conns, file] = process.argv.slice(2);
const body = Buffer.from(
  readFileSync(file, 'latin1')
    .replace(/\r?\n/g, '\r\n')
    .replace(/^\./gm, '..'),
  'latin1',
);
const payload = Buffer.concat([body, Buffer.from(body.subarray(-2).toString() === '\r\n' ? '.\r\n' : '\r\n.\r\n')]);

function connection() {
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(port), '127.0.0.1');
    let buf = '';
    const waiters = [];
    s.setNoDelay(true);
    s.on('data', (d) => {
      buf += d.toString('latin1');
      let i;
      // one complete reply: its last line has a space after the code
      while ((i = buf.search(/^\d{3} .*\r\n/m)) !== -1) {
        const end = buf.indexOf('\r\n', i) + 2;
        const reply = buf.slice(0, end);
        buf = buf.slice(end);
        waiters.shift()?.(reply);
      }
    });
    s.on('error', reject);
    const read = () => new Promise((r) => waiters.push(r));
    const cmd = (line) => {
      s.write(line);
      return read();
    };
    read().then(async (greet) => {
      if (!greet.startsWith('220')) return reject(new Error(greet));
      await cmd('EHLO latency.bench\r\n');
      resolve({ s, cmd, busy: false });
    });
  });
}

const pool = await Promise.all(Array.from({ length: Number(conns) }, connection));
const latencies = [];
let late = 0;
let seq = Math.floor(Math.random() * 1e9);
let failed = 0;
const total = Math.round(Number(rate) * Number(seconds));
const queue = [];
const t0 = performance.now();

async function send(c) {
  c.busy = true;
  const m = await c.cmd('MAIL FROM:<bench@client.bench>\r\n');
  // a new recipient per message: identical deliveries would be skipped as retries
  const r = await c.cmd(`RCPT TO:<x${++seq}@bench.test>\r\n`);
  const d = await c.cmd('DATA\r\n');
  if (!m.startsWith('250') || !r.startsWith('250') || !d.startsWith('354')) failed++;
  const start = performance.now();
  const reply = await c.cmd(payload);
  latencies.push(performance.now() - start);
  if (!reply.startsWith('250')) failed++;
  c.busy = false;
  const next = queue.shift();
  if (next) next(c);
}

let done = 0;
await new Promise((resolveAll) => {
  const finish = () => {
    if (++done === total) resolveAll();
  };
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / Number(rate);
    setTimeout(() => {
      const c = pool.find((p) => !p.busy);
      if (c) send(c).then(finish);
      else {
        late++;
        queue.push((free) => send(free).then(finish));
      }
    }, Math.max(0, due - performance.now()));
  }
});
const elapsed = (performance.now() - t0) / 1000;
for (const c of pool) c.s.destroy();
latencies.sort((a, b) => a - b);
const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))];
process.stdout.write(JSON.stringify({ sent: total, failed, late, rate: total / elapsed, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: latencies.at(-1) }) + '\n');
