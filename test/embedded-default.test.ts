/**
 * The README's first command, for real: `postgate serve` with no config
 * listens on SMTP, accepts mail for localhost (and --domain), stores it under
 * ./data, and stops cleanly on SIGTERM. Also the swaks interop the README shows.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { listFiles } from './helpers/gateway.js';
import { projectRoot } from './helpers/fixtures.js';

const CLI = path.join(projectRoot(), 'dist/src/cli/index.js');


function hasSwaks(): Promise<boolean> {
  return promisify(execFile)('swaks', ['--version']).then(
    () => true,
    () => false,
  );
}

const swaksAvailable = await hasSwaks();

describe('embedded default (postgate serve, no config)', () => {
  let child: ChildProcess;
  let cwd: string;
  let port: number;
  const logLines: Array<Record<string, unknown>> = [];
  const stderrLines: string[] = [];
  let consoleUrl: Promise<string>;

  before(async () => {
    cwd = await mkdtemp(path.join(os.tmpdir(), 'postgate-default-'));
    // Port 0 so parallel test runs never collide; everything else is the default.
    child = spawn(process.execPath, [CLI, 'serve', '--listen', '127.0.0.1:0', '--http', '127.0.0.1:0', '--console', '127.0.0.1:0', '--domain', 'example.test'], {
      cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, POSTGATE_CONFIG: '' },
    });
    // The startup lines on standard error: the SMTP line, then the console's URL.
    consoleUrl = new Promise<string>((resolve) => {
      createInterface({ input: child.stderr! }).on('line', (line) => {
        stderrLines.push(line);
        const m = /^ {2}console: (http:\/\/\S+)$/.exec(line);
        if (m) resolve(m[1]!);
      });
    });
    const rl = createInterface({ input: child.stdout! });
    port = await new Promise<number>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`postgate exited early with ${code}`)));
      rl.on('line', (line) => {
        const rec = JSON.parse(line) as Record<string, unknown>;
        logLines.push(rec);
        if (rec.msg === 'postgate listening') {
          const l = (rec.listeners as string[])[0]!;
          resolve(Number(l.slice(l.lastIndexOf(':') + 1)));
        }
      });
    });
  });

  after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await rm(cwd, { recursive: true, force: true });
  });

  test('accepts mail for localhost and --domain, stores .eml + .json under ./data', async () => {
    const c = await RawSmtp.connect(port);
    assert.equal((await c.read()).code, 220);
    await c.cmd('EHLO laptop');
    const a = await sendMail(c, 'me@example.org', ['someone@localhost'], simpleMessage('first'));
    assert.equal(a.data?.code, 250);
    const b = await sendMail(c, 'me@example.org', ['anyone@example.test'], simpleMessage('second'));
    assert.equal(b.data?.code, 250);
    const relay = await c.cmd('MAIL FROM:<me@example.org>').then(() => c.cmd('RCPT TO:<x@gmail.com>'));
    assert.equal(relay.code, 550);
    await c.cmd('QUIT');
    const files = await listFiles(path.join(cwd, 'data'));
    assert.equal(files.filter((f) => f.endsWith('.eml')).length, 2, files.join(','));
    assert.equal(files.filter((f) => f.endsWith('.json')).length, 2);
    const id = /queued as (\S+)/.exec(a.data!.text)![1]!;
    const eml = await readFile(path.join(cwd, 'data', files.find((f) => f.endsWith(`${id}.eml`))!), 'utf8');
    assert.match(eml, /Subject: first/);
  });

  test('swaks, as the README shows it', { skip: !process.env.CI && !swaksAvailable ? 'swaks not installed (CI installs it)' : false }, async () => {
    const before = (await listFiles(path.join(cwd, 'data'))).length;
    const out = await promisify(execFile)('swaks', ['--server', `127.0.0.1:${port}`, '--to', 'someone@localhost', '--from', 'me@example.org', '--pipeline']);
    assert.match(out.stdout, /<- {2}250 2\.0\.0 Ok: queued as [0-9A-Z]{20}/);
    const after = await listFiles(path.join(cwd, 'data'));
    assert.equal(after.length, before + 2);
  });

  test('the console is on at 127.0.0.1, its URL printed after the SMTP line, and it lists the mail', async () => {
    const url = await consoleUrl;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const smtpLine = stderrLines.findIndex((l) => l.startsWith('postgate: embedded default — SMTP on 127.0.0.1:'));
    assert.ok(smtpLine >= 0 && stderrLines.findIndex((l) => l.startsWith('  console: ')) > smtpLine, stderrLines.join('\n'));
    const sent = await RawSmtp.connect(port);
    await sent.read();
    await sent.cmd('EHLO laptop');
    const r = await sendMail(sent, 'me@example.org', ['viewer@localhost'], simpleMessage('see me in the console'));
    await sent.cmd('QUIT');
    const id = /queued as (\S+)/.exec(r.data!.text)![1]!;
    let found: { id: string; subject: string | null; status: string } | undefined;
    for (let i = 0; i < 100 && !found; i++) {
      const page = (await (await fetch(`${url}api/v1/messages?rcpt=viewer@localhost`)).json()) as { items: Array<{ id: string; subject: string | null; status: string }> };
      found = page.items.find((m) => m.id === id);
      if (!found) await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(found?.subject, 'see me in the console');
    assert.equal(found?.status, 'delivered');
  });

  test('SIGTERM: exits 0 after draining', async () => {
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
    assert.ok(logLines.some((l) => l.msg === 'shutting down'));
  });
});
