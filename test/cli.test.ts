/**
 * The postgate command line as a newcomer meets it: every command and queue
 * subcommand answers --help/-h with its own usage and does nothing else; a
 * wrong option or argument gets one line of ours and the command's usage
 * (exit 2); output into a closed pipe ends quietly; webhook-secret prints a
 * secret that Standard Webhooks libraries accept. The built CLI is spawned,
 * each time in an empty directory, so anything it writes there shows.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Webhook } from 'standardwebhooks';
import { secretKey, signPayload } from '../src/delivery/signing.js';
import { projectRoot } from './helpers/fixtures.js';

const CLI = fileURLToPath(new URL('../src/cli/index.js', import.meta.url));

/** Long enough for a cold start on a busy machine; a command that starts serving or waits for stdin is killed by it. */
const KILL_AFTER_MS = 20_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Close our end of its standard output before it writes: a reader that went away. */
  closeStdout?: boolean;
}

/**
 * Runs the CLI with standard input left open, so a command that reads it
 * hangs (and is killed) instead of seeing end of input. POSTGATE_CONFIG is
 * cleared so the caller's environment cannot choose a configuration.
 */
function cli(args: string[], opts: RunOptions = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: opts.cwd ?? os.tmpdir(),
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, POSTGATE_CONFIG: '', ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    if (opts.closeStdout) child.stdout.destroy();
    else child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A fresh, empty working directory; removed after `fn`. */
async function inEmptyDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-cli-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Every command and queue subcommand, with the start of its usage line and
 * options its help must list (which are also the ones it must accept).
 */
const COMMANDS: Array<{ args: string[]; usage: string; options: string[] }> = [
  { args: ['serve'], usage: 'Usage: postgate serve [', options: ['--config', '--domain', '--listen', '--data', '--http'] },
  { args: ['check'], usage: 'Usage: postgate check --config FILE', options: ['--config', '--print', '--domain'] },
  { args: ['route'], usage: 'Usage: postgate route ADDRESS', options: ['--config', '--from', '--client', '--json'] },
  { args: ['queue'], usage: 'Usage: postgate queue SUBCOMMAND', options: ['queue list', 'queue show', 'queue retry', 'queue replay', 'queue purge'] },
  { args: ['queue', 'list'], usage: 'Usage: postgate queue list ', options: ['--spool', '--status', '--rcpt', '--since', '--json'] },
  { args: ['queue', 'show'], usage: 'Usage: postgate queue show ITEM', options: ['--spool', '--config'] },
  { args: ['queue', 'retry'], usage: 'Usage: postgate queue retry ', options: ['--spool', '--dry-run'] },
  { args: ['queue', 'replay'], usage: 'Usage: postgate queue replay --target ID', options: ['--target', '--dry-run'] },
  { args: ['queue', 'purge'], usage: 'Usage: postgate queue purge ', options: ['--spool', '--dry-run'] },
  { args: ['hash-password'], usage: 'Usage: postgate hash-password\n', options: [] },
  { args: ['webhook-secret'], usage: 'Usage: postgate webhook-secret\n', options: [] },
  { args: ['webhook-keys'], usage: 'Usage: postgate webhook-keys\n', options: [] },
  { args: ['schema'], usage: 'Usage: postgate schema\n', options: [] },
  { args: ['help'], usage: 'Usage: postgate help ', options: [] },
];

/** The runtime's own parseArgs wording, which must never reach the user. */
const RAW_PARSE_ARGS = /place it at the end|To specify a positional argument|argument missing|does not take positional arguments/;

describe('postgate COMMAND --help / -h', () => {
  for (const { args, usage, options } of COMMANDS) {
    for (const flag of ['--help', '-h']) {
      test(`postgate ${args.join(' ')} ${flag}: its own usage on stdout, exit 0, nothing run or written`, async () => {
        await inEmptyDir(async (dir) => {
          const r = await cli([...args, flag], { cwd: dir });
          assert.equal(r.signal, null, `killed after ${KILL_AFTER_MS} ms: it ran instead of printing its help`);
          assert.equal(r.code, 0, r.stderr);
          assert.equal(r.stderr, '');
          assert.ok(r.stdout.startsWith(usage), `stdout starts with ${JSON.stringify(usage)}:\n${r.stdout}`);
          for (const o of options) assert.match(r.stdout, new RegExp(`${escape(o)}\\b`), `the help names ${o}`);
          if (args[0] !== 'queue' || args.length > 1) assert.match(r.stdout, /^ {2}-h, --help +print this help$/m);
          assert.deepEqual(await readdir(dir), [], 'nothing written into the working directory');
        });
      });
    }
  }

  test('--help wins over other problems on the line', async () => {
    const r = await cli(['check', '--bogus', 'extra', '--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout.startsWith('Usage: postgate check '));
  });

  test('postgate --help, -h and help: the global usage, listing every command', async () => {
    const runs = await Promise.all([cli(['--help']), cli(['-h']), cli(['help'])]);
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.match(r.stdout, /^postgate — SMTP-to-HTTP gateway\n\nUsage: postgate COMMAND/);
      for (const name of ['serve', 'check', 'route', 'queue', 'hash-password', 'webhook-secret', 'webhook-keys', 'schema', 'help']) {
        assert.match(r.stdout, new RegExp(`^ {2}${name} +\\S`, 'm'), `lists ${name}`);
      }
    }
    assert.equal(runs[0]!.stdout, runs[2]!.stdout);
  });

  test('postgate help COMMAND [SUBCOMMAND] prints what COMMAND --help prints', async () => {
    for (const args of [['check'], ['queue'], ['queue', 'purge']]) {
      const [viaHelp, viaFlag] = await Promise.all([cli(['help', ...args]), cli([...args, '--help'])]);
      assert.equal(viaHelp.code, 0, viaHelp.stderr);
      assert.equal(viaHelp.stdout, viaFlag.stdout, `postgate help ${args.join(' ')}`);
    }
  });

  test('--version at the top level prints the package version', async () => {
    const { version } = JSON.parse(await readFile(path.join(projectRoot(), 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-v']) {
      const r = await cli([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${version}\n`);
    }
  });
});

describe('wrong options and arguments: one line of ours, the usage, exit 2', () => {
  // Every command with an unknown long option; short ones for a few (the same path through the parser).
  const unknown = [
    ...COMMANDS.map((c) => ({ ...c, bogus: '--bogus' })),
    ...COMMANDS.filter((c) => ['serve', 'check', 'list'].includes(c.args.at(-1)!)).map((c) => ({ ...c, bogus: '-x' })),
  ];
  for (const { args, usage, bogus } of unknown) {
    test(`postgate ${args.join(' ')} ${bogus}`, async () => {
      await inEmptyDir(async (dir) => {
        const r = await cli([...args, bogus], { cwd: dir });
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stdout, '');
        const [first, ...rest] = r.stderr.split('\n');
        assert.equal(first, `postgate ${args.join(' ')}: Unknown option '${bogus}'`);
        assert.ok(rest.join('\n').includes(usage.trimEnd()), `its usage follows:\n${r.stderr}`);
        assert.doesNotMatch(r.stderr, RAW_PARSE_ARGS);
        assert.deepEqual(await readdir(dir), [], 'nothing written into the working directory');
      });
    });
  }

  const cases: Array<{ args: string[]; line: string | RegExp; usage: string }> = [
    { args: ['check', 'x'], line: 'postgate check: unexpected argument "x"', usage: 'Usage: postgate check ' },
    { args: ['check', '--print=yes'], line: 'postgate check: option --print takes no value', usage: 'Usage: postgate check ' },
    { args: ['check'], line: 'postgate check: --config FILE is required', usage: 'Usage: postgate check ' },
    // each command parses only its own options
    { args: ['check', '--from', 'a@example.test'], line: "postgate check: Unknown option '--from'", usage: 'Usage: postgate check ' },
    { args: ['serve', '--print'], line: "postgate serve: Unknown option '--print'", usage: 'Usage: postgate serve ' },
    { args: ['route', 'a@example.test', '--listen', ':25'], line: "postgate route: Unknown option '--listen'", usage: 'Usage: postgate route ' },
    { args: ['queue', 'show', 'ITEM1', '--json'], line: "postgate queue show: Unknown option '--json'", usage: 'Usage: postgate queue show ' },
    { args: ['route', 'a@example.test', '--from'], line: 'postgate route: option --from needs a value', usage: 'Usage: postgate route ' },
    {
      args: ['route', 'a@example.test', '--from', '-x'],
      line: 'postgate route: option --from needs a value (for one that starts with "-", write --from=-x)',
      usage: 'Usage: postgate route ',
    },
    { args: ['route', 'a@example.test', 'b@example.test'], line: 'postgate route: unexpected argument "b@example.test"', usage: 'Usage: postgate route ' },
    { args: ['route'], line: /^postgate route: give the recipient ADDRESS/, usage: 'Usage: postgate route ' },
    { args: ['queue'], line: /^postgate queue: a subcommand is required/, usage: 'Usage: postgate queue SUBCOMMAND' },
    { args: ['queue', 'frob'], line: 'postgate queue: unknown subcommand "frob"', usage: 'Usage: postgate queue SUBCOMMAND' },
    { args: ['queue', 'constructor'], line: 'postgate queue: unknown subcommand "constructor"', usage: 'Usage: postgate queue SUBCOMMAND' },
    { args: ['queue', 'show'], line: /^postgate queue show: give the ITEM id/, usage: 'Usage: postgate queue show ' },
    { args: ['queue', 'list', 'extra'], line: 'postgate queue list: unexpected argument "extra"', usage: 'Usage: postgate queue list ' },
    { args: ['frob'], line: 'postgate: unknown command "frob"', usage: 'Usage: postgate COMMAND' },
    { args: ['toString'], line: 'postgate: unknown command "toString"', usage: 'Usage: postgate COMMAND' },
    { args: ['help', 'frob'], line: 'postgate help: unknown command "frob"', usage: 'Usage: postgate help ' },
    { args: ['webhook-secret', 'extra'], line: 'postgate webhook-secret: unexpected argument "extra"', usage: 'Usage: postgate webhook-secret' },
    // serve is the default command, so options first reach serve: it says where the command goes
    { args: ['--config', 'x.yml', 'check'], line: /^postgate serve: unexpected argument "check" \(the command comes first: postgate check/, usage: 'Usage: postgate serve ' },
  ];
  for (const c of cases) {
    test(`postgate ${c.args.join(' ')}`, async () => {
      await inEmptyDir(async (dir) => {
        const r = await cli(c.args, { cwd: dir });
        assert.equal(r.code, 2, r.stderr);
        assert.equal(r.stdout, '');
        const [first, ...rest] = r.stderr.split('\n');
        if (typeof c.line === 'string') assert.equal(first, c.line);
        else assert.match(first!, c.line);
        assert.ok(rest.join('\n').includes(c.usage), `its usage follows:\n${r.stderr}`);
        assert.doesNotMatch(r.stderr, RAW_PARSE_ARGS);
        assert.deepEqual(await readdir(dir), []);
      });
    });
  }
});

describe('output into a closed pipe ends quietly', () => {
  test('postgate schema | head -1: exit 0, no EPIPE, no stack trace', async () => {
    // pipefail: the exit status is postgate's, not head's. The schema is larger than a pipe's buffer, so postgate is still writing when head leaves.
    const r = await new Promise<Run>((resolve) => {
      const child = spawn('bash', ['-c', 'set -o pipefail; "$0" "$1" schema | head -1', process.execPath, CLI], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    });
    assert.equal(r.stdout, '{\n');
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /EPIPE|Error|\n\s+at /);
  });

  test('every writing command, its reader gone before it writes: exit 0 and nothing on stderr but its own lines', async () => {
    await inEmptyDir(async (spool) => {
      const runs: Array<[string[], RegExp]> = [
        [['schema'], /^$/],
        [['webhook-secret'], /^$/],
        [['webhook-keys'], /^$/],
        [['--help'], /^$/],
        [['check', '--help'], /^$/],
        [['queue', 'list', '--spool', spool], /^0 item\(s\)\n$/],
      ];
      for (const [args, stderr] of runs) {
        const r = await cli(args, { closeStdout: true });
        assert.equal(r.code, 0, `postgate ${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, stderr, `postgate ${args.join(' ')}`);
      }
    });
  });
});

describe('postgate webhook-secret', () => {
  test('a new whsec_ secret of 32 random bytes each time, which Standard Webhooks libraries sign and verify with', async () => {
    const [a, b] = await Promise.all([cli(['webhook-secret']), cli(['webhook-secret'])]);
    for (const r of [a, b]) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.match(r.stdout, /^whsec_[A-Za-z0-9+/]{43}=\n$/);
    }
    assert.notEqual(a.stdout, b.stdout);
    const secret = a.stdout.trim();
    assert.equal(secretKey(secret).length, 32);

    const wh = new Webhook(secret);
    const id = 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W';
    const now = new Date();
    const payload = '{"event":"email.received"}';
    const headers = { 'webhook-id': id, 'webhook-timestamp': String(Math.floor(now.getTime() / 1000)) };
    assert.deepEqual(wh.verify(payload, { ...headers, 'webhook-signature': wh.sign(id, now, payload) }), { event: 'email.received' });
    // The gateway's own signer with the same secret: the library accepts its signature too.
    const ours = signPayload(secretKey(secret), id, Math.floor(now.getTime() / 1000), Buffer.from(payload));
    assert.deepEqual(wh.verify(payload, { ...headers, 'webhook-signature': ours }), { event: 'email.received' });
    // and a different secret does not verify: the check above is not vacuous
    assert.throws(() => new Webhook(b.stdout.trim()).verify(payload, { ...headers, 'webhook-signature': ours }));
  });
});

describe('postgate check', () => {
  test('a valid file: the summary on stdout, exit 0; anything on stderr is a warning line; POSTGATE_CONFIG stands in for --config', async () => {
    await inEmptyDir(async (dir) => {
      const file = path.join(dir, 'postgate.yml');
      await writeFile(file, 'routes:\n  - recipients: ["*@example.test"]\n    targets: [{ type: local }]\n');
      for (const r of [await cli(['check', '--config', file], { cwd: dir }), await cli(['check'], { cwd: dir, env: { POSTGATE_CONFIG: file } })]) {
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, `${file}: ok — 1 listener(s), 1 route(s), domains: example.test\n`);
        for (const line of r.stderr.split('\n').filter(Boolean)) assert.match(line, /^postgate: warning: \S+: \S.*$/);
      }
    });
  });

  test('warnings: a webhook without a secret and one with a plain secret each get one line on stderr, exit 0, the secret never printed', async () => {
    await inEmptyDir(async (dir) => {
      const file = path.join(dir, 'postgate.yml');
      await writeFile(
        file,
        'routes:\n  - recipients: ["*@example.test"]\n    targets:\n' +
          '      - { type: webhook, url: "http://127.0.0.1:9/a" }\n' +
          '      - { type: webhook, url: "http://127.0.0.1:9/b", secret: hunter2-plain }\n',
      );
      const r = await cli(['check', '--config', file], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stderr.split('\n').filter(Boolean);
      assert.equal(lines.length, 2, r.stderr);
      assert.match(lines[0]!, /^postgate: warning: routes\[0\]\.targets\[0\]: events are sent unsigned; .*signed: false/);
      assert.match(lines[1]!, /^postgate: warning: routes\[0\]\.targets\[1\]\.secret: .*format: 'raw'.*postgate webhook-secret/);
      assert.ok(!r.stderr.includes('hunter2-plain') && !r.stdout.includes('hunter2-plain'), 'the secret is never printed');
    });
  });
});

describe('queue: options may come before the subcommand', () => {
  test('postgate queue --spool DIR list --json', async () => {
    await inEmptyDir(async (spool) => {
      const r = await cli(['queue', '--spool', spool, 'list', '--json']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout), []);
    });
  });
});
