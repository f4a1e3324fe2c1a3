/**
 * A private Postfix instance for tests: its own config, queue and data
 * directories in a temporary directory, an smtpd on a loopback port for
 * injection, and everything relayed to one host:port (postgate) with retry
 * timings in seconds, so a 4xx is retried quickly. Needs the Debian `postfix`
 * package and root (Postfix drops to its `postfix` user itself).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import { chmodSync, chownSync, closeSync, existsSync, openSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os, { userInfo } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A free TCP port on 127.0.0.1: Postfix is told its listener's port, it cannot bind port 0 and report back. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.once('error', reject);
  });
}

export function postfixAvailable(): string | null {
  if (!existsSync('/usr/sbin/postfix') || !existsSync('/etc/postfix/master.cf')) return 'Postfix is not installed (Debian package "postfix")';
  if (userInfo().uid !== 0) return 'a private Postfix instance needs root';
  try {
    execFileSync('id', ['postfix'], { stdio: 'ignore' });
  } catch {
    return 'no "postfix" user';
  }
  return null;
}

export interface PostfixInstance {
  dir: string;
  smtpPort: number;
  flush(): Promise<void>;
  /** Messages still in Postfix's queue (incoming, active, deferred, hold). */
  queued(): Promise<number>;
  stop(): Promise<void>;
}

export async function startPostfix(opts: { dir: string; smtpPort: number; relayPort: number; concurrency?: number }): Promise<PostfixInstance> {
  const conf = path.join(opts.dir, 'conf');
  const queue = path.join(opts.dir, 'queue');
  const data = path.join(opts.dir, 'data');
  for (const d of [conf, queue, data]) mkdirSync(d, { recursive: true, mode: 0o755 });
  // Postfix's own user must reach its data directory: open up the path to it
  // (a temporary directory is created 0700).
  for (let d = opts.dir; d !== path.dirname(d) && d.startsWith(os.tmpdir()); d = path.dirname(d)) chmodSync(d, 0o755);
  // Postfix keeps its lock and caches in data_directory, as its own user.
  const pf = Number(execFileSync('id', ['-u', 'postfix']).toString().trim());
  chownSync(data, pf, -1);
  writeFileSync(
    path.join(conf, 'main.cf'),
    [
      'compatibility_level = 3.6',
      `queue_directory = ${queue}`,
      `data_directory = ${data}`,
      'command_directory = /usr/sbin',
      'daemon_directory = /usr/lib/postfix/sbin',
      'meta_directory = /etc/postfix',
      'shlib_directory = /usr/lib/postfix',
      'mail_owner = postfix',
      'setgid_group = postdrop',
      'myhostname = relay.postfix.test',
      'mydestination =',
      'relay_domains =',
      'inet_interfaces = 127.0.0.1',
      'inet_protocols = ipv4',
      'mynetworks = 127.0.0.0/8',
      'smtpd_relay_restrictions = permit_mynetworks, reject',
      `relayhost = [127.0.0.1]:${opts.relayPort}`,
      'smtp_tls_security_level = none',
      'smtputf8_enable = no',
      // retry in seconds, not minutes: the run tests retries, not patience
      'minimal_backoff_time = 1s',
      'maximal_backoff_time = 4s',
      'queue_run_delay = 1s',
      `default_destination_concurrency_limit = ${opts.concurrency ?? 20}`,
      // a failed connection must not make Postfix give up on the destination for long
      'smtp_connect_timeout = 5s',
      'default_destination_concurrency_failed_cohort_limit = 100',
      // logged to start-fg's stdout (our log file): a file path needs postlogd up first
      'maillog_file = /dev/stdout',
      'bounce_queue_lifetime = 1d',
      'maximal_queue_lifetime = 1d',
    ].join('\n') + '\n',
  );
  // The packaged master.cf, with the port-25 listener replaced by ours.
  const masterCf = readFileSync('/etc/postfix/master.cf', 'utf8')
    .split('\n')
    .map((l) => (/^smtp\s+inet\b/.test(l) ? `#${l}` : l))
    .join('\n');
  writeFileSync(path.join(conf, 'master.cf'), `${masterCf}\n127.0.0.1:${opts.smtpPort} inet n - n - - smtpd\n`);
  // start-fg: `postfix start` detaches and reports failures only to its log;
  // in the foreground (our child) its exit says when it could not start.
  const logFd = openSync(path.join(opts.dir, 'maillog'), 'a');
  const master = spawn('postfix', ['-c', conf, 'start-fg'], { stdio: ['ignore', logFd, 'pipe'] });
  closeSync(logFd);
  let stderr = '';
  master.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => master.once('exit', (code) => resolve(code)));
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(opts.smtpPort, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (up) break;
    const code = await Promise.race([exited, new Promise<'running'>((r) => setTimeout(() => r('running'), 100))]);
    if (code !== 'running' || i > 100) {
      let logText = '';
      try {
        logText = readFileSync(path.join(opts.dir, 'maillog'), 'utf8').slice(-2000);
      } catch {
        // no log yet
      }
      throw new Error(`Postfix did not start (exit ${String(code)}): ${stderr.trim()} ${logText}`);
    }
  }
  return {
    dir: opts.dir,
    smtpPort: opts.smtpPort,
    async flush() {
      await run('postqueue', ['-c', conf, '-f']).catch(() => undefined);
    },
    async queued() {
      const { stdout } = await run('postqueue', ['-c', conf, '-j']).catch(() => ({ stdout: '' }));
      return stdout.split('\n').filter((l) => l.trim().startsWith('{')).length;
    },
    async stop() {
      await run('postfix', ['-c', conf, 'stop']).catch(() => undefined);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 5000)))]);
      // cleared, or the pending timer keeps the test process alive for its 5 s
      clearTimeout(timer);
      if (master.exitCode === null) master.kill('SIGKILL');
      rmSync(opts.dir, { recursive: true, force: true });
    },
  };
}
