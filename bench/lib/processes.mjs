/**
 * Processes the benchmark scripts start and measure (bench/smtp.mjs,
 * bench/scan.mjs): a free loopback port, the CPU a process used (utime +
 * stime from /proc, the getrusage counters), a helper of bench/lib in its
 * own process, and a stop that escalates. Benchmark tooling only.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU (µs) and memory of a process: utime + stime (fields 14 and 15 of stat), VmRSS and VmHWM. */
export function procStat(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) * 1024;
  // fields 14 and 15 of stat (utime, stime), here offset by the two fields before ')'
  return { cpuUs: ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK, rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Postfix's load generator, where Debian installs it; undefined when it is missing. */
export function findSmtpSource() {
  return ['/usr/sbin/smtp-source', '/usr/bin/smtp-source'].find((p) => existsSync(p));
}

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** SIGTERM, then SIGKILL after 10 s; resolves at the exit. */
export function stop(proc) {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once('exit', () => resolve());
    proc.kill('SIGTERM');
    setTimeout(() => proc.kill('SIGKILL'), 10_000).unref();
  });
}

/** A helper of bench/lib in its own process: it prints `ready <port>` and answers `count` on stdin. */
export async function startHelper(script, nodeArgs = [], scriptArgs = []) {
  const proc = spawn(process.execPath, [...nodeArgs, join(HERE, script), ...scriptArgs], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = [];
  let waiter = null;
  let buf = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (waiter) {
        const w = waiter;
        waiter = null;
        w(line);
      } else lines.push(line);
    }
  });
  const next = () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => (waiter = r)));
  const ready = await next();
  return {
    proc,
    pid: proc.pid,
    port: Number(ready.split(' ')[1]),
    async count() {
      proc.stdin.write('count\n');
      return Number((await next()).split(' ')[1]);
    },
    stop: () => stop(proc),
  };
}

/** Resolves once `proc` (a postgate) accepts connections on `port`; fails if it exits or takes 15 s. */
export async function waitPort(port, proc) {
  for (let i = 0; i < 300; i++) {
    if (proc.exitCode !== null) throw new Error(`postgate exited with ${proc.exitCode}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`postgate did not listen on ${port}`);
}
