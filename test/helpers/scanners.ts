/**
 * Private instances of the real scanning daemons for tests (docs/scanning.md):
 * rspamd, SpamAssassin's spamd and ClamAV's clamd, each on loopback with its
 * own configuration, sockets, pid file and database directory under a
 * temporary folder, started by the test and stopped by it. Nothing of the
 * system's own instances is touched.
 *
 * pause()/resume() stop and continue the daemon's processes (SIGSTOP/SIGCONT):
 * the kernel still accepts connections, nobody answers — a scanner made slow.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { deflateRawSync, crc32 } from 'node:zlib';
import { startGateway, type TestGateway } from './gateway.js';
import { startReceiver, type Receiver } from './receiver.js';
import { sendOne, simpleMessage } from './smtp-client.js';

export interface Daemon {
  /** rspamd: the base URL; spamd: host:port; clamd: its Unix socket path. */
  address: string;
  /** rspamd: its normal worker's Unix socket (it listens on both). */
  socket?: string;
  /** rspamd started with `milter`: its proxy worker's milter host:port, and its Unix socket. */
  milter?: string;
  milterSocket?: string;
  /** Milliseconds from spawn to the first answer to a ping. */
  startupMs: number;
  /** The process the test started (its children are the daemon's workers); 0 when not running. */
  readonly pid: number;
  /** The daemon's processes (main and children) stop answering; connections still open. */
  pause(): void;
  resume(): void;
  /** Stops the daemon (SIGTERM to the process the test started), waits for it, removes its folder. */
  stop(): Promise<void>;
  /** Stops the daemon but keeps its folder, so start() can run it again with the same configuration. */
  kill(): Promise<void>;
  start(): Promise<void>;
}

/** Whether a daemon's program is installed (the CI script installs them; see .ci/run). */
export function installed(program: 'rspamd' | 'spamd' | 'clamd'): boolean {
  return ['/usr/bin', '/usr/sbin', '/bin', '/sbin'].some((d) => existsSync(path.join(d, program)));
}

const isRoot = process.getuid?.() === 0;

export const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

/** A plain test message carrying the GTUBE line, which every spam scanner calls spam. */
export const gtube = (subject: string): string => simpleMessage(subject).replace('Hello there.', `This is the GTUBE:\r\n${GTUBE}`);

/** The events a receiver got, parsed (postgate's own JSON format). */
export const eventsOf = <T>(r: Receiver): T[] => r.got.map((g) => JSON.parse(g.body.toString('utf8')) as T);
/** What the scanner tests read of the events a receiver got. */
export interface ScannedEvent {
  data: {
    subject: string;
    headers: { name: string; value: string }[];
    spam: { scanner: string; score: number; threshold: number; action: string; symbols: string[] } | null;
    virus?: { scanner: string; infected: boolean; names: string[] } | null;
    parseErrors: { code: string; message: string }[];
    attachments: { filename: string }[];
  };
}
export const scannedEvents = (r: Receiver): ScannedEvent[] => eventsOf<ScannedEvent>(r);
export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
/** Matched by the test's own ClamAV signature (Postgate.Test.Pattern). */
export const TEST_MALWARE = 'POSTGATE-TEST-MALWARE-PATTERN-7f3a';

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The process and every descendant (from /proc), for SIGSTOP/SIGCONT. */
function tree(pid: number): number[] {
  const out = [pid];
  try {
    for (const t of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(/\s+/).filter(Boolean)) out.push(...tree(Number(t)));
  } catch {
    // gone
  }
  return out;
}

async function waitUntil(ping: () => Promise<boolean>, child: () => ChildProcess | null, ms: number, what: string, log: string): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await ping().catch(() => false)) return;
    const c = child();
    if (!c || c.exitCode !== null || c.signalCode !== null) throw new Error(`${what} exited during start-up: ${tail(log)}`);
    if (Date.now() > end) throw new Error(`${what} did not answer within ${ms} ms: ${tail(log)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-8).join('\n');
  } catch {
    return '(no log)';
  }
}

/** One request/answer over a socket, for pings. */
function ask(where: net.NetConnectOpts, request: string, ms = 1000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(where);
    const chunks: Buffer[] = [];
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error('ping timeout'));
    }, ms);
    s.on('connect', () => s.end(request));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** Whether a milter answers option negotiation (version 6) on the port. */
function milterPing(port: number, ms = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = 0;
    const done = (ok: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), ms);
    const optneg = Buffer.alloc(17);
    optneg.writeUInt32BE(13, 0);
    optneg[4] = 0x4f; // SMFIC_OPTNEG
    optneg.writeUInt32BE(6, 5);
    s.on('connect', () => s.write(optneg));
    s.on('data', (c: Buffer) => {
      got += c.length;
      if (got >= 17) done(c[4] === 0x4f);
    });
    s.on('error', () => done(false));
  });
}

function daemon(dir: string, address: string, argv: [string, string[]], env: NodeJS.ProcessEnv, log: string, ping: () => Promise<boolean>, what: string, budgetMs: number): Daemon {
  let child: ChildProcess | null = null;
  const d: Daemon = {
    address,
    startupMs: 0,
    get pid() {
      return child?.pid ?? 0;
    },
    pause() {
      if (child?.pid) for (const p of tree(child.pid)) process.kill(p, 'SIGSTOP');
    },
    resume() {
      if (child?.pid) for (const p of tree(child.pid)) process.kill(p, 'SIGCONT');
    },
    async start() {
      const started = Date.now();
      child = spawn(argv[0], argv[1], { cwd: dir, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'ignore'] });
      child.on('error', () => undefined);
      await waitUntil(ping, () => child, budgetMs, what, log);
      d.startupMs = Date.now() - started;
    },
    async kill() {
      const c = child;
      child = null;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      for (const p of tree(c.pid!)) process.kill(p, 'SIGCONT');
      const exited = once(c, 'exit');
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
    async stop() {
      await d.kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return d;
}

/**
 * A DNS server on loopback that answers every query at once with NXDOMAIN
 * (RFC 1035 §4.1.1: the query's id and question, QR set, RCODE 3): rspamd's
 * SPF, DKIM, DMARC and RBL lookups get a fast "no such name" instead of
 * leaving the machine or waiting for a timeout.
 */
export async function startNxdomainDns(): Promise<{ address: string; close(): Promise<void> }> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (q, rinfo) => {
    if (q.length < 12) return;
    const a = Buffer.from(q);
    a[2] = 0x80 | (q[2]! & 0x79); // QR, the query's opcode and RD
    a[3] = 0x80 | 3; // RA, NXDOMAIN
    a.writeUInt16BE(0, 6); // no answers
    a.writeUInt16BE(0, 8);
    a.writeUInt16BE(0, 10); // and no additional records (EDNS OPT dropped)
    const qd = q.readUInt16BE(4);
    let end = 12;
    for (let i = 0; i < qd && end < q.length; i++) {
      while (end < q.length && q[end] !== 0) end += q[end]! + 1;
      end += 5;
    }
    sock.send(a.subarray(0, Math.min(end, a.length)), rinfo.port, rinfo.address);
  });
  sock.bind(0, '127.0.0.1');
  await once(sock, 'listening');
  return { address: `127.0.0.1:${sock.address().port}`, close: () => new Promise((r) => sock.close(() => r())) };
}

/**
 * rspamd with one normal worker on a free loopback port and on a Unix socket
 * in its folder (`socket`). Its DNS is a local
 * NXDOMAIN server (startNxdomainDns; no lookup leaves the machine), and the
 * URL TLD list is a short one: compiling the full public suffix list costs
 * about 50 s of CPU at the first start, the short one about 5 s. Hyperscan's
 * cache is in the instance's own folder, and so is the local configuration
 * folder (local.d, override.d): nothing of the system's applies.
 *
 * `milter`: also a proxy worker in milter mode that scans itself
 * (`self_scan`), on a free port (`milter`) and a Unix socket
 * (`milterSocket`), with milter_headers adding X-Spamd-Result and
 * X-Rspamd-Action for every client, local and authenticated ones too: what
 * docs/scanning.md asks of an rspamd that postgate reaches over milter.
 */
export async function startRspamd(opts: { milter?: boolean } = {}): Promise<Daemon> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-rspamd-'));
  const port = await freePort();
  const dns = await startNxdomainDns();
  await writeFile(path.join(dir, 'tld.dat'), 'com\norg\nnet\nexample\ntest\ninvalid\nlocal\n');
  await writeFile(path.join(dir, 'options-override.inc'), `url_tld = "${dir}/tld.dat";\nhs_cache_dir = "${dir}/";\n`);
  await mkdir(path.join(dir, 'local.d'));
  const milterPort = opts.milter ? await freePort() : 0;
  if (opts.milter) {
    await writeFile(path.join(dir, 'local.d', 'milter_headers.conf'), 'use = ["x-spamd-result", "x-rspamd-action"];\nskip_local = false;\nskip_authenticated = false;\n');
  }
  await writeFile(
    path.join(dir, 'rspamd.conf'),
    `.include "$CONFDIR/common.conf"
options {
  pidfile = "$RUNDIR/rspamd.pid";
  .include "$CONFDIR/options.inc"
  .include(priority=10) "${dir}/options-override.inc"
  dns { nameserver = ["${dns.address}"]; timeout = 1s; retransmits = 1; }
}
logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "warning"; }
worker "normal" {
  bind_socket = "127.0.0.1:${port}";
  bind_socket = "${dir}/rspamd.sock mode=0666";
  .include "$CONFDIR/worker-normal.inc"
  count = 1;
}
${
  opts.milter
    ? `worker "rspamd_proxy" {
  bind_socket = "127.0.0.1:${milterPort}";
  bind_socket = "${dir}/milter.sock mode=0666";
  milter = yes;
  timeout = 120s;
  upstream "local" { default = yes; self_scan = yes; }
  count = 1;
}
`
    : ''
}`,
  );
  const args = ['-f', ...(isRoot ? ['-i'] : []), '-c', path.join(dir, 'rspamd.conf'), `--var=LOCAL_CONFDIR=${dir}`, `--var=RUNDIR=${dir}`, `--var=DBDIR=${dir}`, `--var=LOGDIR=${dir}`];
  const url = `http://127.0.0.1:${port}`;
  const ping = async () => (await ask({ host: '127.0.0.1', port }, 'GET /ping HTTP/1.0\r\n\r\n')).includes('pong') && (!opts.milter || (await milterPing(milterPort)));
  const d = daemon(dir, url, ['rspamd', args], {}, path.join(dir, 'rspamd.log'), ping, 'rspamd', 90_000);
  d.socket = path.join(dir, 'rspamd.sock');
  if (opts.milter) {
    d.milter = `127.0.0.1:${milterPort}`;
    d.milterSocket = path.join(dir, 'milter.sock');
  }
  await d.start();
  const stopDaemon = d.stop;
  d.stop = async () => {
    await stopDaemon();
    await dns.close();
  };
  return d;
}

/** spamd with one child, local tests only (-L: no DNS or network rules). */
export async function startSpamd(): Promise<Daemon> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-spamd-'));
  // spamd run by root drops to nobody, who must be able to write its home here.
  if (isRoot) await chmod(dir, 0o777);
  const port = await freePort();
  const args = [
    '-L',
    `--listen=127.0.0.1:${port}`,
    `--pidfile=${dir}/spamd.pid`,
    '--max-children=1',
    '--min-children=1',
    '--min-spare=1',
    '--max-spare=1',
    '--nouser-config',
    ...(isRoot ? ['-u', 'nobody'] : []),
    '-s',
    `${dir}/spamd.log`,
  ];
  const d = daemon(dir, `127.0.0.1:${port}`, ['spamd', args], { HOME: dir }, path.join(dir, 'spamd.log'), async () => (await ask({ host: '127.0.0.1', port }, 'PING SPAMC/1.5\r\n\r\n')).includes('PONG'), 'spamd', 90_000);
  await d.start();
  return d;
}

/**
 * clamd on a Unix socket, with a signature database the test writes: freshclam
 * cannot download here, and clamd starts in well under a second on two
 * signatures. Postgate.Test.Eicar matches the EICAR test string,
 * Postgate.Test.Pattern the test's own TEST_MALWARE.
 */
export async function startClamd(): Promise<Daemon> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-clamd-'));
  await mkdir(path.join(dir, 'db'));
  const hex = (s: string) => Buffer.from(s, 'latin1').toString('hex');
  await writeFile(path.join(dir, 'db', 'postgate-test.ndb'), `Postgate.Test.Eicar:0:*:${hex(EICAR)}\nPostgate.Test.Pattern:0:*:${hex(TEST_MALWARE)}\n`);
  const sock = path.join(dir, 'clamd.sock');
  await writeFile(
    path.join(dir, 'clamd.conf'),
    ['Foreground yes', `LocalSocket ${sock}`, `DatabaseDirectory ${dir}/db`, `PidFile ${dir}/clamd.pid`, `LogFile ${dir}/clamd.log`, 'MaxThreads 2', ...(isRoot ? ['User root'] : []), ''].join('\n'),
  );
  const d = daemon(dir, sock, ['clamd', ['-c', path.join(dir, 'clamd.conf')]], {}, path.join(dir, 'clamd.log'), async () => (await ask({ path: sock }, 'zPING\0')).startsWith('PONG'), 'clamd', 60_000);
  await d.start();
  return d;
}

/** A zip archive holding one deflated file: what the archive scanner must open to see it. */
export function zipOf(name: string, content: Buffer): Buffer {
  const data = deflateRawSync(content);
  const crc = crc32(content);
  const nameBuf = Buffer.from(name, 'latin1');
  const local = Buffer.alloc(30);
  local.writeUInt32LE(0x04034b50, 0);
  local.writeUInt16LE(20, 4);
  local.writeUInt16LE(0, 6);
  local.writeUInt16LE(8, 8); // deflate
  local.writeUInt32LE(0, 10);
  local.writeUInt32LE(crc, 14);
  local.writeUInt32LE(data.length, 18);
  local.writeUInt32LE(content.length, 22);
  local.writeUInt16LE(nameBuf.length, 26);
  local.writeUInt16LE(0, 28);
  const central = Buffer.alloc(46);
  central.writeUInt32LE(0x02014b50, 0);
  central.writeUInt16LE(20, 4);
  central.writeUInt16LE(20, 6);
  central.writeUInt16LE(0, 8);
  central.writeUInt16LE(8, 10);
  central.writeUInt32LE(0, 12);
  central.writeUInt32LE(crc, 16);
  central.writeUInt32LE(data.length, 20);
  central.writeUInt32LE(content.length, 24);
  central.writeUInt16LE(nameBuf.length, 28);
  central.writeUInt32LE(0, 42); // offset of the local header
  const cdOffset = local.length + nameBuf.length + data.length;
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(1, 8);
  end.writeUInt16LE(1, 10);
  end.writeUInt32LE(central.length + nameBuf.length, 12);
  end.writeUInt32LE(cdOffset, 16);
  return Buffer.concat([local, nameBuf, data, central, nameBuf, end]);
}

/** A multipart message with one base64 attachment. */
export function messageWithAttachment(filename: string, content: Buffer, subject = 'see attached'): string {
  const b64 = content.toString('base64').replace(/.{76}/g, '$&\r\n');
  return [
    'From: Sender <sender@example.org>',
    'To: user@example.com',
    `Subject: ${subject}`,
    `Message-ID: <${Math.random().toString(36).slice(2)}@example.org>`,
    'Date: Mon, 07 Dec 2026 10:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b1"',
    '',
    '--b1',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Please find the file attached.',
    '--b1',
    `Content-Type: application/octet-stream; name="${filename}"`,
    `Content-Disposition: attachment; filename="${filename}"`,
    'Content-Transfer-Encoding: base64',
    '',
    b64,
    '--b1--',
    '',
  ].join('\r\n');
}


/** What a scanner test file runs against: the daemon, the app's and the quarantine's receivers, a gateway. */
export interface ScanSuite {
  daemon: Daemon;
  app: Receiver;
  quarantine: Receiver;
  tg: TestGateway;
  close(): Promise<void>;
}

/**
 * Starts a daemon and a gateway with one route per policy for `kind`
 * (`<policy>.test`: reject, tag, quarantine, and tempfail / accept for
 * onError with `onErrorPolicy`), each delivering to the app and
 * quarantining to its own receiver; `extraRoutes` adds a file's own.
 */
export async function startScanSuite(opts: {
  /** For the start-up line: rspamd, spamd, clamd. */
  name: string;
  start: () => Promise<Daemon>;
  scanner: (d: Daemon) => Record<string, unknown> | Promise<Record<string, unknown>>;
  kind: 'spam' | 'virus';
  onErrorPolicy: 'reject' | 'tag';
  scan?: Record<string, unknown>;
  extraRoutes?: Record<string, unknown>[];
}): Promise<ScanSuite> {
  const daemon = await opts.start();
  // Measured start-up, for the suite's budget (docs/scanning.md "Testing").
  console.log(`${opts.name} private instance answered after ${daemon.startupMs} ms`);
  const app = await startReceiver(() => ({ status: 200 }));
  const quarantine = await startReceiver(() => ({ status: 200 }));
  const route = (name: string, scan: Record<string, unknown>) => ({
    name,
    recipients: [`*@${name}.test`],
    targets: [{ type: 'webhook', url: app.url, timeout: '5s' }],
    scan: { ...scan, quarantine: [{ type: 'webhook', url: quarantine.url, timeout: '5s' }] },
  });
  const k = opts.kind;
  const tg = await startGateway({
    scan: { scanners: [await opts.scanner(daemon)], breaker: { failures: 100, cooldown: '1h' }, ...opts.scan },
    routes: [
      route('reject', { [k]: 'reject' }),
      route('tag', { [k]: 'tag' }),
      route('quarantine', { [k]: 'quarantine' }),
      route('tempfail', { [k]: opts.onErrorPolicy, onError: 'tempfail' }),
      route('accept', { [k]: opts.onErrorPolicy, onError: 'accept' }),
      ...(opts.extraRoutes ?? []),
    ],
  });
  return {
    daemon,
    app,
    quarantine,
    tg,
    async close() {
      await tg.close();
      await daemon.stop();
      await app.close();
      await quarantine.close();
    },
  };
}

/**
 * The suite's scanner made slow (SIGSTOP): under onError tempfail the
 * sender gets 451 4.3.0 within the scanner's timeout (well under the
 * delivery deadline of 30 s) and no target has the message; under accept
 * it is delivered with `verdict` null and one `scan_unavailable` note whose
 * message is `note`. The daemon is resumed whatever happens.
 */
export async function assertSlowScanner(s: Pick<ScanSuite, 'daemon' | 'app' | 'tg'>, verdict: 'spam' | 'virus', note: string): Promise<void> {
  const events = () => scannedEvents(s.app);
  s.daemon.pause();
  try {
    const t0 = Date.now();
    const r = await sendOne(s.tg.port, 'user@tempfail.test', simpleMessage('slow-tempfail'));
    assert.equal(r.code, 451, r.raw);
    assert.match(r.raw, /^451 4\.3\.0 Content scan unavailable/);
    assert.ok(Date.now() - t0 < 10_000, `answered after ${Date.now() - t0} ms`);
    assert.ok(!events().some((e) => e.data.subject === 'slow-tempfail'), '451: the sender still has it, no target does');
    const a = await sendOne(s.tg.port, 'user@accept.test', simpleMessage('slow-accept'));
    assert.equal(a.code, 250, a.raw);
    const ev = events().find((e) => e.data.subject === 'slow-accept');
    assert.equal(ev?.data[verdict], null);
    assert.deepEqual(ev?.data.parseErrors.map((p) => `${p.code} ${p.message}`), [`scan_unavailable ${note}`]);
  } finally {
    s.daemon.resume();
  }
}
