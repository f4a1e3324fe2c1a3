/**
 * A real Rails Action Mailbox app (test/fixtures/action-mailbox, Debian's
 * ruby-rails 6.1, ruby-sqlite3 and puma, no Bundler) started on loopback for
 * one ingress. Its CaptureMailbox appends what it processed as JSON lines to
 * a file this helper reads. Start it once per test file: a boot costs
 * seconds of CPU.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fixturePath } from './fixtures.js';
import { waitFor } from './wait.js';

export type Ingress = 'relay' | 'postmark' | 'sendgrid' | 'mailgun' | 'mandrill';

/** What the mailbox saw of one processed mail. */
export interface Processed {
  inbound_email_id: number;
  inbound_emails: number;
  message_id: string | null;
  recipients: string[];
  x_original_to: string[];
  subject: string | null;
  text: string | null;
  attachments: Array<{ filename: string; size: number }>;
}

export interface MailboxApp {
  /** http://127.0.0.1:<port> */
  origin: string;
  /** The ingress path, e.g. /rails/action_mailbox/relay/inbound_emails. */
  path: string;
  /** Milliseconds from spawn to the first answered request. */
  bootMs: number;
  processed(): Promise<Processed[]>;
  /** Waits until `n` mails were processed in all; returns them. */
  waitProcessed(n: number, timeoutMs?: number): Promise<Processed[]>;
  /** The app's own log (stdout and stderr). */
  output(): string;
  close(): Promise<void>;
}

/** Why the app cannot run here, or null. */
export function actionMailboxUnavailable(): string | null {
  const puma = spawnSync('puma', ['--version'], { encoding: 'utf8' });
  if (puma.error || puma.status !== 0) return 'puma is not installed (Debian packages ruby-rails ruby-sqlite3 puma; .ci/run installs them)';
  const rails = spawnSync('ruby', ['-e', 'require "action_mailbox/version"; require "sqlite3"; print ActionMailbox.version'], { encoding: 'utf8' });
  if (rails.status !== 0) return 'Action Mailbox or sqlite3 is not installed for the system ruby (Debian packages ruby-rails ruby-sqlite3)';
  return null;
}

const PATHS: Record<Ingress, string> = {
  relay: '/rails/action_mailbox/relay/inbound_emails',
  postmark: '/rails/action_mailbox/postmark/inbound_emails',
  sendgrid: '/rails/action_mailbox/sendgrid/inbound_emails',
  mailgun: '/rails/action_mailbox/mailgun/inbound_emails/mime',
  mandrill: '/rails/action_mailbox/mandrill/inbound_emails',
};

async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Starts the app for `ingress` with the credentials in `env` (RAILS_INBOUND_EMAIL_PASSWORD, MAILGUN_INGRESS_SIGNING_KEY, MANDRILL_INGRESS_API_KEY). */
export async function startMailboxApp(ingress: Ingress, env: Record<string, string>): Promise<MailboxApp> {
  // The free port is found, then given to puma: between the two another test
  // file running beside this one can take it. Only that is tried again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(ingress, env);
    } catch (err) {
      if (attempt >= 3 || !/EADDRINUSE|Address already in use/.test((err as Error).message)) throw err;
    }
  }
}

async function startOnce(ingress: Ingress, env: Record<string, string>): Promise<MailboxApp> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-mailbox-'));
  await cp(fixturePath('action-mailbox'), dir, { recursive: true });
  await Promise.all(['db', 'storage', 'tmp/pids'].map((d) => mkdir(path.join(dir, d), { recursive: true })));
  const log = path.join(dir, 'processed.jsonl');
  const port = await freePort();
  const started = Date.now();
  let out = '';
  const child: ChildProcess = spawn('puma', ['-e', 'production', '-b', `tcp://127.0.0.1:${port}`, '-t', '1:4', '--pidfile', path.join(dir, 'tmp/pids/puma.pid'), 'config.ru'], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, LANG: 'C.UTF-8', RAILS_ENV: 'production', RAILS_LOG_TO_STDOUT: '1', INGRESS: ingress, MAILBOX_LOG: log, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString('utf8')));
  const exited = once(child, 'exit');
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    // Ready when an ingress answers at all (Rails boots lazily parts of itself on the first request).
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`the Rails app exited (${child.exitCode}):\n${out}`);
        try {
          const res = await fetch(`http://127.0.0.1:${port}${PATHS[ingress]}`, { method: 'POST' });
          await res.arrayBuffer();
          return true;
        } catch {
          return false;
        }
      },
      90_000,
      'the Rails app to answer',
    );
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${out}`);
  }
  const bootMs = Date.now() - started;
  const processed = async (): Promise<Processed[]> => {
    const text = await readFile(log, 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Processed);
  };
  return {
    origin: `http://127.0.0.1:${port}`,
    path: PATHS[ingress],
    bootMs,
    processed,
    async waitProcessed(n, timeoutMs = 10_000) {
      let last: Processed[] = [];
      await waitFor(async () => (last = await processed()).length >= n, timeoutMs, `${n} processed mails`);
      return last;
    },
    output: () => out,
    close: stop,
  };
}
