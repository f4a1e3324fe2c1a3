/**
 * Slowloris clients for test/abuse.test.ts (behaviour: nobody is dropped
 * early, the slow ones are cut at their timeout) and test/soak.ts (a normal
 * client's latency with and without them, measured and printed). They live
 * in another process, so their own work is not counted against the gateway
 * in this one. Also a normal client's timed transaction.
 */
import { spawn } from 'node:child_process';
import { RawSmtp, sendMail, simpleMessage } from './smtp-client.js';

/** What the idle slow connections saw, from `SlowClients.idle()`. */
export interface IdleReport {
  connections: number;
  /** Connections whose last reply before the server closed them was the timeout, 421 4.4.2. */
  cutWith421: number;
  /** The distinct last reply lines (421 … or "(none)"), for a failure message. */
  lastReplies: string[];
  /** Milliseconds from just before each connect to its 421 (or to its close, without one): the least and the most. */
  minMs: number;
  maxMs: number;
}

export interface SlowClients {
  /**
   * Opens `addresses` × `perAddress` connections (from 127.0.1.1 on), each
   * dribbling a byte of a command every 200 ms and never finishing a line;
   * resolves once all are connected.
   */
  dribble(): Promise<void>;
  /** How many of the dribbling connections are still open (none closed by the server); then closes them. */
  close(): Promise<number>;
  /**
   * Opens `addresses` × `perAddress` connections (from 127.0.3.1 on), each
   * sending the start of a command as it connects and then nothing; resolves
   * once all are connected, with `cut`: resolves when the server has closed
   * every one of them (rejects after `waitMs`).
   */
  idle(waitMs: number): Promise<{ cut: Promise<IdleReport> }>;
  /** Kills the process (its connections go with it). */
  stop(): Promise<void>;
}

const SCRIPT = `
  const net = require('node:net');
  const [port, addresses, perAddress] = process.argv.slice(1).map(Number);
  const total = addresses * perAddress;
  let socks = [];
  const say = (s) => process.stdout.write(s + '\\n');
  const dribble = () => {
    let n = 0;
    socks = [];
    for (let a = 0; a < addresses; a++) for (let i = 0; i < perAddress; i++) {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.1.' + (a + 1) });
      s.on('connect', () => { if (++n === total) say('open'); });
      s.on('error', () => {});
      socks.push(s);
    }
  };
  const close = () => {
    say('alive ' + socks.filter((s) => !s.destroyed).length);
    for (const s of socks) s.destroy();
    socks = [];
    say('closed');
  };
  const idle = () => {
    const rows = [];
    let connected = 0;
    let left = total;
    for (let a = 0; a < addresses; a++) for (let i = 0; i < perAddress; i++) {
      const row = { t0: performance.now(), text: '', t421: null, tClose: null };
      rows.push(row);
      const s = net.connect({ port, host: '127.0.0.1', localAddress: '127.0.3.' + (a + 1) });
      s.setEncoding('latin1');
      s.write('EHLO slow.exa'); // sent on connect; the line never ends
      s.on('connect', () => { if (++connected === total) say('idle-open'); });
      s.on('data', (d) => {
        row.text += d;
        if (row.t421 === null && /^421 /m.test(row.text)) row.t421 = performance.now();
      });
      s.on('error', () => {});
      s.on('close', () => {
        row.tClose = performance.now();
        if (--left > 0) return;
        const last = (r) => r.text.split('\\r\\n').filter(Boolean).at(-1) || '(none)';
        const ms = rows.map((r) => (r.t421 ?? r.tClose) - r.t0);
        say('idle ' + JSON.stringify({
          connections: rows.length,
          cutWith421: rows.filter((r) => r.t421 !== null && /^421 4\\.4\\.2 /.test(last(r))).length,
          lastReplies: [...new Set(rows.map(last))].slice(0, 5),
          minMs: Math.min(...ms),
          maxMs: Math.max(...ms),
        }));
      });
    }
  };
  process.stdin.on('data', (d) => {
    for (const c of String(d).split('\\n')) c === 'dribble' ? dribble() : c === 'close' ? close() : c === 'idle' ? idle() : null;
  });
  // Each dribbling connection writes a byte every 200 ms: a tenth of them
  // every 20 ms, as independent clients are spread in time (all 1,000 in the
  // same millisecond would make a burst every 200 ms, and a latency
  // percentile would then measure how long that burst takes).
  let next = 0;
  setInterval(() => {
    for (let k = 0; k < total / 10 && socks.length; k++, next = (next + 1) % socks.length) if (!socks[next].destroyed) socks[next].write('E');
  }, 20);
`;

export function startSlowClients(port: number, { addresses = 50, perAddress = 20 } = {}): SlowClients {
  const child = spawn(process.execPath, ['-e', SCRIPT, String(port), String(addresses), String(perAddress)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: string[] = [];
  let partial = '';
  let waiter: (() => void) | null = null;
  child.stdout!.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop()!;
    lines.push(...parts);
    waiter?.();
  });
  child.once('exit', () => waiter?.());
  const exited = new Promise((resolve) => child.once('exit', resolve));
  /** The next line starting with `prefix` (earlier lines are dropped). */
  const next = async (prefix: string, waitMs: number): Promise<string> => {
    const until = Date.now() + waitMs;
    for (;;) {
      const i = lines.findIndex((l) => l.startsWith(prefix));
      if (i >= 0) return lines.splice(0, i + 1).at(-1)!;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the slow-client process exited before "${prefix}"`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`the slow-client process did not say "${prefix}" within ${waitMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      waiter = null;
    }
  };
  const send = (cmd: string) => child.stdin!.write(`${cmd}\n`);
  return {
    async dribble() {
      send('dribble');
      await next('open', 30_000);
    },
    async close() {
      send('close');
      const alive = Number((await next('alive ', 30_000)).slice('alive '.length));
      await next('closed', 30_000);
      return alive;
    },
    async idle(waitMs) {
      send('idle');
      await next('idle-open', 30_000);
      const cut = next('idle ', waitMs).then((l) => JSON.parse(l.slice('idle '.length)) as IdleReport);
      cut.catch(() => undefined); // awaited by the caller; not an unhandled rejection meanwhile
      return { cut };
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** One whole transaction on a new connection; resolves with the milliseconds from MAIL to the final 250 (throws on another reply). */
export async function timedTransaction(port: number): Promise<number> {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    await c.cmd('EHLO normal.example');
    const t0 = performance.now();
    const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], simpleMessage('normal'));
    if (data?.code !== 250) throw new Error(`the normal client's message was not accepted: ${data?.raw ?? 'no DATA reply'}`);
    return performance.now() - t0;
  } finally {
    c.close();
  }
}
