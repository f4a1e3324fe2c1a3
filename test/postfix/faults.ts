/**
 * The Postfix fault run: a real sending MTA (a private Postfix instance)
 * relays N messages to postgate, whose webhook receiver fails on a schedule
 * (503 bursts, connection resets, answers slower than the target's timeout,
 * and 30 % random 503s), while postgate is SIGKILLed and restarted mid-run.
 * Postfix retries every 4xx. At the end every message must have reached the
 * receiver at least once, every duplicate must carry the same webhook-id, and
 * none may be lost. Used by `npm run postfix-faults` (full) and
 * test/postfix-faults.test.ts (short).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { projectRoot } from '../helpers/fixtures.js';
import { freePort, startPostfix } from './instance.js';

export interface FaultRunOptions {
  messages: number;
  mode: 'sync' | 'queue';
  /** SIGKILLs of postgate, spread over the injection. */
  kills: number;
  /** Give up waiting for the last messages after this long. */
  timeoutMs: number;
  log?: (line: string) => void;
}

export interface FaultRunResult {
  mode: 'sync' | 'queue';
  sent: number;
  acceptedByPostfix: number;
  delivered: number;
  duplicates: number;
  duplicatesWithOtherId: number;
  lost: number;
  kills: number;
  receiverAnswers: Record<string, number>;
  seconds: number;
}

/** A seeded PRNG (mulberry32), so a run's fault schedule can be repeated. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function faultRun(o: FaultRunOptions): Promise<FaultRunResult> {
  const log = o.log ?? (() => undefined);
  const t0 = performance.now();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'postgate-pf-'));
  const random = prng(20261124);
  // message id → webhook-ids seen with a 2xx
  const seen = new Map<string, Set<string>>();
  let deliveries = 0;
  const answers: Record<string, number> = { '204': 0, '503 burst': 0, '503 random': 0, reset: 0, slow: 0 };
  let n = 0;
  const receiver = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const i = n++;
      const record = () => {
        const e = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { data: { messageId: string | null } };
        const id = e.data.messageId ?? '';
        const ids = seen.get(id) ?? new Set<string>();
        ids.add(String(req.headers['webhook-id']));
        seen.set(id, ids);
        deliveries++;
      };
      if (i % 250 < 25) {
        answers['503 burst']!++;
        res.writeHead(503).end();
      } else if (i % 97 === 0) {
        answers.reset!++;
        req.socket.destroy();
      } else if (i % 89 === 0) {
        // slower than the target's timeout: postgate gives up (451), but the
        // receiver still takes the message — a duplicate on the retry
        answers.slow!++;
        setTimeout(() => {
          record();
          res.writeHead(204).end();
        }, 2500);
      } else if (random() < 0.3) {
        answers['503 random']!++;
        res.writeHead(503).end();
      } else {
        answers['204']!++;
        record();
        res.writeHead(204).end();
      }
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  const receiverPort = (receiver.address() as net.AddressInfo).port;

  const pgPort = await freePort();
  const pgData = path.join(dir, 'postgate');
  const cfgFile = path.join(dir, 'postgate.yml');
  writeFileSync(
    cfgFile,
    [
      'smtp:',
      `  listen: 127.0.0.1:${pgPort}`,
      '  hostname: mx.faults.test',
      '  maxConnectionsPerIp: 100',
      'routes:',
      '  - recipients: ["*@example.test"]',
      `    mode: ${o.mode}`,
      '    targets:',
      '      - type: webhook',
      `        url: http://127.0.0.1:${receiverPort}/inbound`,
      '        secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      '        timeout: 1s',
      'delivery:',
      '  deadline: 3s',
      'queue:',
      '  retry: { initialDelay: 500, maxDelay: 2s }',
      'storage:',
      `  path: ${pgData}`,
      'logging:',
      '  level: warn',
      'http: false',
      '',
    ].join('\n'),
  );
  let pg: ChildProcess | null = null;
  const startPg = async () => {
    pg = spawn(process.execPath, [path.join(projectRoot(), 'dist', 'src', 'cli', 'index.js'), 'serve', '--config', cfgFile], { stdio: ['ignore', 'ignore', 'inherit'] });
    for (let i = 0; i < 200; i++) {
      const up = await new Promise<boolean>((resolve) => {
        const s = net.connect(pgPort, '127.0.0.1');
        s.once('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.once('error', () => resolve(false));
      });
      if (up) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('postgate did not start');
  };
  const killPg = async () => {
    const p = pg!;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  };
  await startPg();

  const postfix = await startPostfix({ dir: path.join(dir, 'postfix'), smtpPort: await freePort(), relayPort: pgPort }).catch(async (err: unknown) => {
    await killPg();
    receiver.close();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  let accepted = 0;
  let kills = 0;
  try {
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: postfix.smtpPort, secure: false, ignoreTLS: true, pool: true, maxConnections: 4, maxMessages: Infinity });
    const killAt = new Set(Array.from({ length: o.kills }, (_, k) => Math.floor((o.messages * (k + 1)) / (o.kills + 1))));
    const body = 'A message relayed by Postfix to postgate under faults.\n'.repeat(20);
    let next = 0;
    const inject = async () => {
      while (next < o.messages) {
        const i = next++;
        if (killAt.has(i)) {
          kills++;
          log(`SIGKILL postgate at message ${i}`);
          await killPg();
          setTimeout(() => void startPg().catch((err: Error) => log(`restart failed: ${err.message}`)), 1000);
        }
        const info = await transport.sendMail({ from: 'sender@client.test', to: `rcpt${i % 50}@example.test`, subject: `fault run ${i}`, text: body, messageId: `<fault-${i}@client.test>` });
        if (/^250 /.test(info.response)) accepted++;
        if (i % 1000 === 0) log(`injected ${i}, delivered ${seen.size}`);
      }
    };
    await Promise.all(Array.from({ length: 4 }, inject));
    transport.close();
    log(`injected ${accepted}; waiting for delivery`);
    const until = Date.now() + o.timeoutMs;
    while (seen.size < o.messages && Date.now() < until) {
      await postfix.flush();
      await new Promise((r) => setTimeout(r, 1000));
      log(`delivered ${seen.size}/${o.messages}, Postfix queue ${await postfix.queued()}`);
    }
  } finally {
    await postfix.stop();
    if (pg) await killPg().catch(() => undefined);
    await new Promise((r) => receiver.close(() => r(undefined)));
    receiver.closeAllConnections?.();
    rmSync(dir, { recursive: true, force: true });
  }
  let duplicatesWithOtherId = 0;
  for (const ids of seen.values()) if (ids.size > 1) duplicatesWithOtherId++;
  const delivered = [...Array(o.messages).keys()].filter((i) => seen.has(`fault-${i}@client.test`)).length;
  return {
    mode: o.mode,
    sent: o.messages,
    acceptedByPostfix: accepted,
    delivered,
    duplicates: deliveries - seen.size,
    duplicatesWithOtherId,
    lost: o.messages - delivered,
    kills,
    receiverAnswers: answers,
    seconds: (performance.now() - t0) / 1000,
  };
}
