/**
 * `postgate route ADDRESS`: the built CLI, spawned, on a config file with
 * regex captures, plus tags, IDN, sender conditions and header conditions.
 * Exit codes: 0 accepted, 1 refused, 2 configuration or usage error.
 */
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from './helpers/fixtures.js';

const run = promisify(execFile);
const CLI = path.join(projectRoot(), 'dist/src/cli/index.js');

const CONFIG = `
domains: [other.test]
routes:
  - name: tickets
    recipients:
      - { local: "ticket-(?<id>[0-9]+)", domain: example.test }
    targets:
      - { type: webhook, id: tickets, url: "https://app.example.test/tickets/{id}?to={local}" }
      - { type: webhook, url: "https://pager.example.test/urgent", required: false, when: { header: X-Priority, matches: "^1" } }
  - name: support
    recipients: ["support@example.test", "*@bücher.example"]
    validate: { url: "https://app.example.test/rcpt-check" }
    targets: [{ type: webhook, url: "https://app.example.test/support" }]
  - name: partners
    recipients: ["orders@example.test"]
    from: ["*@partner.test"]
    targets: [{ type: webhook, url: "https://app.example.test/orders" }]
`;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function route(...args: string[]): Promise<Result> {
  return run(process.execPath, [CLI, 'route', ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

describe('postgate route', () => {
  let file: string;
  before(async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-route-'));
    file = path.join(dir, 'postgate.yml');
    await writeFile(file, CONFIG);
  });

  test('a regex capture resolves the target URL; the header condition is shown, not run', async () => {
    const r = await route('Ticket-42@Example.TEST', '--config', file);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.equal(lines[0], 'Ticket-42@Example.TEST: accepted by route "tickets"');
    assert.equal(lines[1], '  normalised   ticket-42@example.test');
    assert.equal(lines[2], '  matched      /ticket-(?<id>[0-9]+)/@example.test, captures id=42');
    assert.equal(lines[3], '  mailboxHash  (none)');
    assert.match(r.stdout, /^ {4}- tickets~[0-9a-f]{12} {2}required {2}https:\/\/app\.example\.test\/tickets\/42\?to=ticket-42$/m);
    assert.match(r.stdout, /^ {4}- webhook:https:\/\/pager\.example\.test\/urgent#[0-9a-f]{12} {2}optional {2}https:\/\/pager\.example\.test\/urgent {2}when X-Priority matches \/\^1\/ \(decided after DATA\)$/m);
  });

  test('--json: plus tag as mailboxHash, IDN, the validation hook', async () => {
    const r = await route('Support+Case-7@example.test', '--config', file, '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.accepted, true);
    assert.equal(j.route, 'support');
    assert.equal(j.normalised, 'support+case-7@example.test');
    assert.equal(j.mailboxHash, 'Case-7');
    assert.deepEqual(j.routes, [{ name: 'support', pattern: 'support@example.test', viaTag: true, captures: {} }]);
    assert.equal(j.targets[0].url, 'https://app.example.test/support');
    assert.deepEqual(j.validate, ['https://app.example.test/rcpt-check']);
    const idn = JSON.parse((await route('Info@xn--bcher-kva.example', '--config', file, '--json')).stdout);
    assert.equal(idn.route, 'support');
    const unicode = JSON.parse((await route('info@BÜCHER.example', '--config', file, '--json')).stdout);
    assert.equal(unicode.route, 'support');
  });

  test('refusals exit 1 with the SMTP reply; a sender condition explains itself', async () => {
    const relay = await route('victim@elsewhere.example', '--config', file);
    assert.equal(relay.code, 1);
    assert.match(relay.stdout, /^victim@elsewhere\.example: refused\n {2}reply {8}550 5\.7\.1 <victim@elsewhere\.example>: Relay access denied\n {2}code {9}PG_RCPT_RELAY_DENIED\n/);
    const unknown = await route('nobody@other.test', '--config', file, '--json');
    assert.equal(unknown.code, 1);
    assert.deepEqual(JSON.parse(unknown.stdout).reply, { code: 550, enhanced: '5.1.1', text: '5.1.1 <nobody@other.test>: Recipient address rejected: User unknown' });
    const evil = await route('orders@example.test', '--config', file, '--from', 'bob@evil.test');
    assert.equal(evil.code, 1);
    assert.match(evil.stdout, /passed over {2}route "partners" \(pattern orders@example\.test\): sender <bob@evil\.test> is not one of \*@partner\.test/);
    const partner = await route('orders@example.test', '--config', file, '--from', 'Bob@Partner.test', '--client', '192.0.2.1');
    assert.equal(partner.code, 0, partner.stdout);
    assert.match(partner.stdout, /accepted by route "partners"/);
    assert.doesNotMatch(partner.stdout, /not checked/);
  });

  test('usage and configuration errors exit 2', async () => {
    const none = await route('--config', file);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /give the recipient ADDRESS/);
    const badIp = await route('a@example.test', '--config', file, '--client', 'not-an-ip');
    assert.equal(badIp.code, 2);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-route-'));
    const bad = path.join(dir, 'bad.yml');
    await writeFile(bad, 'routes:\n  - recipients: [{ local: "(a+)+$", domain: example.test }]\n    targets: [{ type: local }]\n');
    const invalid = await route('a@example.test', '--config', bad);
    assert.equal(invalid.code, 2);
    assert.match(invalid.stderr, /routes\[0\]\.recipients\[0\]\.local: regex "\(a\+\)\+\$": refused: nested quantifiers/);
  });

  test('without --config: the embedded default (localhost and --domain)', async () => {
    const r = await route('someone@example.test', '--domain', 'example.test');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /accepted by route "local"/);
    assert.equal((await route('someone@example.test')).code, 1);
  });
});

describe('docs/routing.md shows real output', () => {
  test('the example file validates, and every documented "postgate route" run prints what the page shows', async () => {
    const doc = await readFile(path.join(projectRoot(), 'docs/routing.md'), 'utf8');
    const example = /## Example\n\n```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(example, 'docs/routing.md has an example');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-route-doc-'));
    await writeFile(path.join(dir, 'postgate.yml'), example);
    const usage = doc.slice(doc.indexOf('## postgate route'));
    const block = /```\n(\$ postgate route[\s\S]*?)```/.exec(usage)?.[1];
    assert.ok(block, 'the usage section shows runs');
    const runs = block.split(/^\$ /m).filter(Boolean);
    assert.ok(runs.length >= 4, `${runs.length} runs`);
    for (const runText of runs) {
      const [command, ...out] = runText.split('\n');
      // words, with '…' quoting
      const args = [...command!.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2]!).slice(2);
      const r = await run(process.execPath, [CLI, 'route', ...args], { cwd: dir }).then(
        ({ stdout }) => stdout,
        (e: { stdout: string }) => e.stdout,
      );
      assert.equal(r.trimEnd(), out.join('\n').trimEnd(), `$ ${command}`);
    }
    const json = /`--json` prints one object for scripts:\n\n```json\n([\s\S]*?)```/.exec(usage)?.[1];
    assert.ok(json);
    const r = await run(process.execPath, [CLI, 'route', 'Ticket-42+Urgent@Bücher.Example', '--config', 'postgate.yml', '--json'], { cwd: dir });
    assert.deepEqual(JSON.parse(r.stdout), JSON.parse(json));
  });
});
