/**
 * Configuration: the documented example verbatim, every error of a broken
 * file at once with its path, renamed keys with hints, ${ENV} references,
 * POSTGATE_* overrides, the published JSON Schema, and `postgate check`.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { defaultWebhookId } from '../src/message/ids.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { Webhook } from 'standardwebhooks';
import { ConfigError, loadConfig, validateConfig } from '../src/config/load.js';
import { configWarnings, standardWebhooksKey } from '../src/config/warnings.js';
import { secretKey, signPayload } from '../src/delivery/signing.js';
import { configJsonSchema } from '../src/config/json-schema.js';
import { projectRoot as root } from './helpers/fixtures.js';

const projectRoot = root();

const run = promisify(execFile);
const CLI = path.join(projectRoot, 'dist/src/cli/index.js');

async function tmpFile(name: string, text: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-cfg-'));
  const file = path.join(dir, name);
  await writeFile(file, text);
  return file;
}

async function problemsOf(p: Promise<unknown>): Promise<string[]> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map((x) => `${x.path}: ${x.message}`);
  }
  assert.fail('expected a ConfigError');
}

describe('configuration', () => {
  test('the README example validates verbatim', async () => {
    const cfg = await loadConfig({ file: path.join(projectRoot, 'examples/postgate.yml'), env: {} });
    assert.equal(cfg.smtp.maxMessageSize, 26214400);
    assert.equal(cfg.hostname, 'mx.example.test');
    assert.deepEqual(cfg.resolvedListeners.map((l) => [l.role, l.host, l.port]), [['mx', '127.0.0.1', 2525]]);
    assert.deepEqual(cfg.servedDomains, ['example.test', 'hooks.example.test']);
    const target = cfg.routes[0]!.targets[0]!;
    assert.equal(target.type, 'webhook');
    assert.match(String(target.id), /^webhook:http:\/\/127\.0\.0\.1:9000\/inbound#[0-9a-f]{12}$/);
    // postmaster defaults to the local store
    assert.equal(cfg.postmasterTargets[0]!.type, 'local');
    assert.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.routes[0]));
  });

  test('every problem of a broken file is reported at once, with paths', async () => {
    const file = await tmpFile(
      'broken.yml',
      [
        'smtp:',
        '  listen: nowhere',
        '  maxMessageSize: lots',
        '  maxRecipients: 10',
        '  port: 25',
        'routes:',
        '  - recipients: ["not-an-address"]',
        '    targets:',
        '      - type: webhook',
        '        url: ftp://example.test/x',
        '      - type: carrier-pigeon',
        'listeners:',
        '  - role: submission',
        '    listen: 127.0.0.1:587',
        'logging: { level: loud }',
      ].join('\n'),
    );
    const problems = await problemsOf(loadConfig({ file, env: {} }));
    const want = [
      /^smtp\.listen: expected host:port/,
      /^smtp\.maxMessageSize: not a size/,
      /^smtp\.maxRecipients: RFC 5321/,
      /^smtp\.port: unknown key \(renamed: use smtp\.listen/,
      /^routes\[0\]\.recipients\[0\]: expected "user@domain"/,
      /^routes\[0\]\.targets\[0\]\.url: webhook url must be http/,
      /^routes\[0\]\.targets\[1\]\.type: /,
      /^logging\.level: /,
    ];
    for (const re of want) assert.ok(problems.some((p) => re.test(p)), `missing ${re} in:\n${problems.join('\n')}`);
  });

  test('cross-field checks: smtps without TLS, AUTH without users, routes without a required target', async () => {
    const problems = await problemsOf(
      Promise.resolve().then(() =>
        validateConfig({
          // a field error too: cross-field checks still run, one round reports all
          smtp: { maxRecipients: 5 },
          listeners: [{ role: 'smtps', listen: '127.0.0.1:465' }, { role: 'submission', listen: '127.0.0.1:587' }],
          routes: [{ recipients: ['a@x.test'], targets: [{ type: 'local', required: false }] }],
        }),
      ),
    );
    assert.ok(problems.some((p) => p.startsWith('listeners[0].role: role "smtps" needs tls')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('listeners[1]: role "submission" offers AUTH and needs auth.users')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('routes[0].targets: needs at least one required target')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('smtp.maxRecipients: ')), problems.join('\n'));
  });

  test('requireTls without certificates is refused for a listener and for a route (STARTTLS would never be offered)', async () => {
    const problems = await problemsOf(
      Promise.resolve().then(() =>
        validateConfig({
          listeners: [{ role: 'mx', listen: '127.0.0.1:25', requireTls: true }],
          routes: [{ recipients: ['a@x.test'], targets: [{ type: 'local' }], requireTls: true }],
        }),
      ),
    );
    assert.ok(problems.some((p) => p.startsWith('listeners[0].requireTls: requireTls needs tls.certificates')), problems.join('\n'));
    assert.ok(problems.some((p) => p.startsWith('routes[0].requireTls: requireTls needs tls.certificates')), problems.join('\n'));
    const ok = validateConfig({
      listeners: [{ role: 'mx', listen: '127.0.0.1:25', requireTls: true }],
      tls: { certificates: [{ cert: 'mx.pem', key: 'mx-key.pem' }] },
      routes: [{ recipients: ['a@x.test'], targets: [{ type: 'local' }], requireTls: true }],
    });
    assert.equal(ok.routes[0]!.requireTls, true);
  });

  test('two targets with one id but other settings are refused (one id is one target instance); the same target in two routes is fine', async () => {
    const hook = { type: 'webhook', url: 'https://hooks.example.test/in' };
    const problems = await problemsOf(
      Promise.resolve().then(() =>
        validateConfig({
          routes: [
            { recipients: ['a@x.test'], targets: [hook] },
            { recipients: ['b@x.test'], targets: [{ ...hook, timeout: '3s' }] },
            { recipients: ['c@x.test'], targets: [{ type: 'local', id: 'archive', path: '/srv/a' }] },
            { recipients: ['d@x.test'], targets: [{ type: 'local', id: 'archive', path: '/srv/b' }] },
          ],
        }),
      ),
    );
    assert.deepEqual(problems, [
      `routes[1].targets[0]: has the id "${defaultWebhookId(hook.url)}" of routes[0].targets[0] but other settings: one id is one target; give this one its own id`,
      'routes[3].targets[0]: has the id "archive" of routes[2].targets[0] but other settings: one id is one target; give this one its own id',
    ]);
    // Used twice with the same settings, required in one route and optional in another: one target.
    const ok = validateConfig({
      routes: [
        { recipients: ['a@x.test'], targets: [hook] },
        { recipients: ['b@x.test'], targets: [{ type: 'local' }, { ...hook, required: false }] },
        { recipients: ['c@x.test'], targets: [{ ...hook, format: 'rfc822' }] },
      ],
    });
    assert.equal(ok.routes[0]!.targets[0]!.id, ok.routes[1]!.targets[1]!.id);
    assert.notEqual(ok.routes[2]!.targets[0]!.id, ok.routes[0]!.targets[0]!.id, 'a format makes its own default id');
  });

  test('renamed keys get a hint', async () => {
    const problems = await problemsOf(
      Promise.resolve().then(() => validateConfig({ routes: [{ match: ['a@x.test'], webhooks: [], recipients: ['a@x.test'], targets: [{ type: 'webhook', endpoint: 'x', url: 'http://h/' }] }] })),
    );
    assert.ok(problems.includes('routes[0].match: unknown key (renamed: use recipients: [...])'), problems.join('\n'));
    assert.ok(problems.includes('routes[0].webhooks: unknown key (renamed: use targets: [{ type: webhook, url }])'), problems.join('\n'));
    assert.ok(problems.includes('routes[0].targets[0].endpoint: unknown key (renamed: use url)'), problems.join('\n'));
  });

  test('${ENV} references resolve; a missing one is a problem that does not echo values', async () => {
    const file = await tmpFile(
      'env.yml',
      'routes:\n  - recipients: ["a@x.test"]\n    targets:\n      - type: webhook\n        url: http://127.0.0.1:1/\n        secret: ${HOOK_SECRET}\n        headers: { x-literal: "$${NOT_A_REF}" }\n',
    );
    const cfg = await loadConfig({ file, env: { HOOK_SECRET: 'whsec_c2VjcmV0' } });
    const t = cfg.routes[0]!.targets[0]!;
    assert.equal(t.type === 'webhook' && t.secret, 'whsec_c2VjcmV0');
    assert.equal(t.type === 'webhook' && t.headers['x-literal'], '${NOT_A_REF}');
    const problems = await problemsOf(loadConfig({ file, env: {} }));
    assert.deepEqual(problems, ['routes[0].targets[0].secret: environment variable HOOK_SECRET is not set (referenced as ${HOOK_SECRET})']);
  });

  test('POSTGATE_* environment overrides', async () => {
    const cfg = await loadConfig({
      env: { POSTGATE_SMTP__LISTEN: '0.0.0.0:25', POSTGATE_SMTP__MAX_MESSAGE_SIZE: '10MiB', POSTGATE_HTTP: 'false', POSTGATE_LOGGING__LEVEL: 'warn' },
    });
    assert.equal(cfg.smtp.listen, '0.0.0.0:25');
    assert.equal(cfg.smtp.maxMessageSize, 10 * 1024 * 1024);
    assert.equal(cfg.http, false);
    assert.equal(cfg.logging.level, 'warn');
    const problems = await problemsOf(loadConfig({ env: { POSTGATE_SMTP__MAX_RECIPIENTS: '5' } }));
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /^smtp\.maxRecipients: /);
  });

  test('schema/config.json is the schema generated from the source', async () => {
    const committed = JSON.parse(await readFile(path.join(projectRoot, 'schema/config.json'), 'utf8'));
    assert.deepEqual(committed, JSON.parse(JSON.stringify(configJsonSchema())), 'run: node dist/src/cli/index.js schema > schema/config.json');
    assert.ok(committed.properties.routes && committed.properties.smtp.properties.maxMessageSize);
  });

  test('postgate check: exit 0 for the example, exit 2 with every problem for a broken file', async () => {
    const ok = await run(process.execPath, [CLI, 'check', '--config', path.join(projectRoot, 'examples/postgate.yml')]);
    assert.match(ok.stdout, /ok — 1 listener\(s\), 1 route\(s\), domains: example\.test, hooks\.example\.test/);
    const bad = await tmpFile('bad.yml', 'smtp:\n  listen: x\n  size: 5\nroutes: 7\n');
    const err = await run(process.execPath, [CLI, 'check', '--config', bad]).then(
      () => assert.fail('expected exit 2'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(err.code, 2);
    assert.match(err.stderr, /is invalid \(3 problems\)/);
    assert.match(err.stderr, /smtp\.listen: /);
    assert.match(err.stderr, /smtp\.size: unknown key \(renamed: use smtp\.maxMessageSize\)/);
    assert.match(err.stderr, /routes: /);
    const yamlErr = await tmpFile('syntax.yml', 'smtp: [unclosed\n');
    const e2 = await run(process.execPath, [CLI, 'check', '--config', yamlErr]).then(
      () => assert.fail('expected exit 2'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(e2.code, 2);
    assert.match(e2.stderr, /invalid YAML/);
  });

  test('check --print redacts secrets', async () => {
    const out = await run(process.execPath, [CLI, 'check', '--print', '--config', path.join(projectRoot, 'examples/postgate.yml')]);
    assert.ok(!out.stdout.includes('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'));
    assert.match(out.stdout, /"secret": "\[redacted\]"/);
  });

  test('target ids and --print never show URL credentials or query tokens', async () => {
    const cfg = validateConfig({
      routes: [{ recipients: ['a@x.test'], targets: [{ type: 'webhook', url: 'https://user:hunter2@hooks.example/in?token=s3cr3t' }] }],
    });
    const id = String(cfg.routes[0]!.targets[0]!.id);
    assert.ok(!id.includes('hunter2') && !id.includes('s3cr3t'), id);
    const other = validateConfig({ routes: [{ recipients: ['a@x.test'], targets: [{ type: 'webhook', url: 'https://user:hunter2@hooks.example/in?token=other' }] }] });
    assert.notEqual(String(other.routes[0]!.targets[0]!.id), id, 'ids stay unique per URL');
    const file = await tmpFile('cred.yml', 'routes:\n  - recipients: ["a@x.test"]\n    targets: [{ type: webhook, url: "https://user:hunter2@hooks.example/in" }]\n');
    const out = await run(process.execPath, [CLI, 'check', '--print', '--config', file]);
    assert.ok(!out.stdout.includes('hunter2'));
    assert.match(out.stdout, /user:\[redacted\]@hooks\.example/);
  });

  test('a value that is one ${VAR} takes its type; unrelated POSTGATE_* variables are not overrides', async () => {
    const file = await tmpFile('typed.yml', 'smtp:\n  maxClients: ${MAX}\n  hostname: ${HOST}\nhttp: ${OPS}\nroutes:\n  - recipients: ["a@x.test"]\n    targets: [{ type: webhook, url: "http://h/", secret: "${POSTGATE_WEBHOOK_SECRET}" }]\n');
    const cfg = await loadConfig({ file, env: { MAX: '42', HOST: '007', OPS: 'false', POSTGATE_WEBHOOK_SECRET: 'whsec_eA' } });
    assert.equal(cfg.smtp.maxClients, 42);
    assert.equal(cfg.hostname, '007', 'text options keep numeric-looking text');
    assert.equal(cfg.http, false);
    const t = cfg.routes[0]!.targets[0]!;
    assert.equal(t.type === 'webhook' && t.secret, 'whsec_eA');
  });

  test('an unset ${VAR} in a url is reported once, not also as a bad url', async () => {
    const file = await tmpFile('unset.yml', 'routes:\n  - recipients: ["a@x.test"]\n    targets: [{ type: webhook, url: "${HOOK_URL}" }]\n');
    const problems = await problemsOf(loadConfig({ file, env: {} }));
    assert.deepEqual(problems, ['routes[0].targets[0].url: environment variable HOOK_URL is not set (referenced as ${HOOK_URL})']);
  });

  test('zero where zero breaks the gateway is refused', async () => {
    const problems = await problemsOf(
      Promise.resolve().then(() =>
        validateConfig({
          delivery: { deadline: 0 },
          limits: { memoryBudget: 0 },
          listeners: [{ listen: '127.0.0.1:25', proxyProtocol: { trustedSources: ['10.0.0.0/8'], timeout: 0 } }],
        }),
      ),
    );
    for (const p of ['delivery.deadline', 'limits.memoryBudget', 'listeners[0].proxyProtocol.timeout']) {
      assert.ok(problems.some((x) => x.startsWith(`${p}: must be at least`)), `${p} in ${problems.join('\n')}`);
    }
  });

  test('postgate check opens the certificate files', async () => {
    const file = await tmpFile('tls.yml', 'tls:\n  certificates: [{ cert: /nonexistent/cert.pem, key: /nonexistent/key.pem }]\n');
    const err = await run(process.execPath, [CLI, 'check', '--config', file]).then(
      () => assert.fail('expected exit 2'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(err.code, 2);
    assert.match(err.stderr, /PG_TLS_CERT: .*\/nonexistent\/cert\.pem/);
  });

  test('unknown command-line options exit 2 with the usage', async () => {
    const err = await run(process.execPath, [CLI, 'serve', '--bogus']).then(
      () => assert.fail('expected exit 2'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(err.code, 2);
    assert.match(err.stderr, /Unknown option '--bogus'[\s\S]*Usage:/);
  });
});

describe('configuration: routes (regexes, conditions, templates)', () => {
  test('a pathological recipient regex is refused at load, with its path and why', async () => {
    const file = await tmpFile(
      'redos.yml',
      'routes:\n  - recipients:\n      - { local: "(a+)+$", domain: example.test }\n    targets: [{ type: local }]\n',
    );
    const problems = await problemsOf(loadConfig({ file, env: {} }));
    assert.deepEqual(problems, [
      'routes[0].recipients[0].local: regex "(a+)+$": refused: nested quantifiers (a repeated group containing a variable-length quantifier, like "(a+)+") can backtrack catastrophically',
    ]);
  });

  test('every routing problem at once: header regexes, template hosts, unknown placeholders, wildcard domains, bad networks', async () => {
    const problems = await problemsOf(
      Promise.resolve().then(() =>
        validateConfig({
          routes: [
            {
              recipients: [{ local: '(?<id>\\d+)', domain: '*.example.test' }, 'x@*.example.test'],
              clients: ['10.0.0.0/33'],
              targets: [
                { type: 'webhook', url: 'https://{domain}.hooks.test/in' },
                { type: 'webhook', url: 'https://hooks.test/{nope}', when: { header: 'X-Priority', matches: '(\\w|\\d)+' } },
              ],
            },
            { recipients: ['ok@example.test'], targets: [{ type: 'local', when: { header: 'X-Spam' } }] },
          ],
        }),
      ),
    );
    const expect = [
      /^routes\[0\]\.recipients\[0\]\.domain: not a domain name/,
      /^routes\[0\]\.recipients\[1\]: expected "user@domain"/,
      /^routes\[0\]\.clients\[0\]: invalid address range "10\.0\.0\.0\/33"/,
      /^routes\[0\]\.targets\[0\]\.url: placeholders may only appear in the URL path and query, never in its scheme, host or port/,
      /^routes\[0\]\.targets\[1\]\.when\.matches: regex "\(.*\)\+": refused: alternatives/,
      /^routes\[0\]\.targets\[1\]\.url: placeholder \{nope\} is not/,
      /^routes\[1\]\.targets: needs at least one required target without a "when" condition/,
    ];
    for (const re of expect) assert.ok(problems.some((p) => re.test(p)), `${re} in\n${problems.join('\n')}`);
    assert.equal(problems.length, expect.length, problems.join('\n'));
  });

  test('a catch-all needs served domains; IDN patterns count once in either spelling', async () => {
    const lonely = await problemsOf(Promise.resolve().then(() => validateConfig({ routes: [{ recipients: ['*'], targets: [{ type: 'local' }] }] })));
    assert.deepEqual(lonely, ['routes[0].recipients[0]: the catch-all "*" needs served domains: list them in "domains" or in other patterns']);
    const ok = validateConfig({ domains: ['example.test', 'München.Example'], routes: [{ recipients: ['*', 'info@Bücher.Example'], targets: [{ type: 'local' }] }] });
    assert.deepEqual(ok.servedDomains, ['example.test', 'xn--bcher-kva.example', 'xn--mnchen-3ya.example']);
    const dup = await problemsOf(
      Promise.resolve().then(() =>
        validateConfig({
          routes: [
            { recipients: ['info@bücher.example'], targets: [{ type: 'local' }] },
            { recipients: ['INFO@xn--bcher-kva.example'], targets: [{ type: 'local' }] },
          ],
        }),
      ),
    );
    assert.deepEqual(dup, ['routes[1].recipients[0]: "INFO@xn--bcher-kva.example" is already listed by routes[0]']);
  });

  test('placeholders may name groups that every regex of the route defines', () => {
    const cfg = validateConfig({
      routes: [
        {
          recipients: [
            { local: 'ticket-(?<id>\\d+)', domain: 'example.test' },
            { local: 'case-(?<id>\\d+)', domain: ['example.org', 'bücher.example'] },
          ],
          from: ['*@partner.test'],
          validate: { url: 'http://127.0.0.1:1/check', timeout: '500ms' },
          targets: [{ type: 'webhook', url: 'https://hooks.test/t/{id}?to={local}' }],
        },
      ],
    });
    const r = cfg.routes[0]!;
    assert.equal(r.stop, true);
    assert.deepEqual(r.validate, { url: 'http://127.0.0.1:1/check', timeout: 500, cacheTtl: 300_000 });
    assert.deepEqual(cfg.servedDomains, ['example.org', 'example.test', 'xn--bcher-kva.example']);
  });
});

/** A one-route config whose webhook target has these extra fields. */
const withWebhook = (fields: Record<string, unknown>) => ({
  routes: [{ recipients: ['a@x.test'], targets: [{ type: 'webhook', url: 'http://127.0.0.1:1/in', ...fields }] }],
});
const warningsOf = (fields: Record<string, unknown>) => configWarnings(validateConfig(withWebhook(fields))).map((w) => `${w.path}: ${w.message}`);
const STRONG = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;

describe('configuration: warnings', () => {
  test('a webhook target without secret or signingKey is warned about; signed: false silences it', () => {
    assert.deepEqual(warningsOf({}), [
      'routes[0].targets[0]: events are sent unsigned; add a secret from `postgate webhook-secret`, or `signed: false` to send unsigned on purpose',
    ]);
    assert.deepEqual(warningsOf({ signed: false }), []);
    assert.deepEqual(warningsOf({ secret: STRONG }), []);
    assert.deepEqual(warningsOf({ signingKey: `whsk_${Buffer.alloc(32, 1).toString('base64')}` }), []);
    // postmaster webhooks too; the default postmaster (the local store) says nothing
    const pm = validateConfig({ postmaster: { targets: [{ type: 'webhook', url: 'http://127.0.0.1:1/pm' }] } });
    assert.deepEqual(configWarnings(pm).map((w) => w.path), ['postmaster.targets[0]']);
    assert.deepEqual(configWarnings(validateConfig({})), []);
  });

  test('signed: false with a secret or signingKey is a contradiction, reported as an error', async () => {
    const withSecret = await problemsOf(Promise.resolve().then(() => validateConfig(withWebhook({ signed: false, secret: STRONG }))));
    assert.deepEqual(withSecret, ['routes[0].targets[0].signed: signed: false contradicts secret: remove one (signed: false sends events unsigned)']);
    const withKey = await problemsOf(Promise.resolve().then(() => validateConfig(withWebhook({ signed: false, signingKey: `whsk_${Buffer.alloc(32, 1).toString('base64')}` }))));
    assert.deepEqual(withKey, ['routes[0].targets[0].signed: signed: false contradicts signingKey: remove one (signed: false sends events unsigned)']);
    const t = validateConfig(withWebhook({ secret: STRONG })).routes[0]!.targets[0]!;
    assert.equal(t.type === 'webhook' && t.signed, true, 'signed defaults to true');
  });

  test("a plain secret warns that receivers need {format: 'raw'}; a whsec_ secret with bad base64 or a short key warns too", () => {
    assert.deepEqual(warningsOf({ secret: 'hunter2' }), [
      "routes[0].targets[0].secret: a plain secret (no \"whsec_\" prefix) fails Standard Webhooks verification by default: receivers must use {format: 'raw'}; prefer a secret from `postgate webhook-secret`",
    ]);
    const list = configWarnings(validateConfig(withWebhook({ secret: [STRONG, 'hunter2', 'whsec_not-base64_url!', 'whsec_c2VjcmV0', 'pässwörd', 'whsk_abcd'] })));
    assert.deepEqual(
      list.map((w) => w.path),
      ['routes[0].targets[0].secret[1]', 'routes[0].targets[0].secret[2]', 'routes[0].targets[0].secret[3]', 'routes[0].targets[0].secret[4]', 'routes[0].targets[0].secret[5]'],
    );
    assert.match(list[0]!.message, /format: 'raw'/);
    assert.match(list[1]!.message, /base64 after "whsec_" is not valid/);
    assert.match(list[2]!.message, /only 6 bytes/);
    assert.match(list[3]!.message, /non-ASCII/);
    assert.match(list[4]!.message, /signingKey/);
    for (const w of list) assert.match(w.message, /postgate webhook-secret/, 'every secret warning names the fix');
  });

  test('warnings never contain the secret, also when it comes from ${ENV}', async () => {
    const file = await tmpFile('plain.yml', 'routes:\n  - recipients: ["a@x.test"]\n    targets: [{ type: webhook, url: "http://h/", secret: "${HOOK_SECRET}" }]\n');
    for (const secret of ['correct-horse-battery', 'whsec_c2VjcmV0', 'whsec_!!bad!!', 'wörd-with-umlaut', 'whsk_keyinthewrongplace']) {
      const warnings = configWarnings(await loadConfig({ file, env: { HOOK_SECRET: secret } }));
      assert.equal(warnings.length, 1, `${secret}: ${JSON.stringify(warnings)}`);
      const text = JSON.stringify(warnings);
      const body = secret.replace(/^wh(sec|sk)_/, '');
      assert.ok(!text.includes(body), `the secret leaks into ${text}`);
      assert.equal(warnings[0]!.path, 'routes[0].targets[0].secret');
    }
  });

  test('the whsec_ check agrees with the standardwebhooks library: no warning exactly when it signs as postgate does', () => {
    const chars = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ !é'];
    const body = Buffer.from('{"type":"email.received"}');
    const ts = 1_700_000_000;
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...chars), { maxLength: 24 }).map((a) => a.join('')), (rest) => {
        const secret = `whsec_${rest}`;
        let libSignature: string | null;
        try {
          libSignature = new Webhook(secret).sign('msg_1', new Date(ts * 1000), body.toString());
        } catch {
          libSignature = null;
        }
        const agrees = libSignature === signPayload(secretKey(secret), 'msg_1', ts, body);
        const key = standardWebhooksKey(secret);
        assert.equal(key !== null && key.equals(secretKey(secret)), agrees, `${JSON.stringify(secret)}: library ${libSignature}`);
        const warned = configWarnings(validateConfig(withWebhook({ secret }))).some((w) => w.message.includes('is not valid'));
        assert.equal(warned, !agrees, JSON.stringify(secret));
      }),
      { numRuns: 500 },
    );
  });
});

describe('configuration: one clear message per problem', () => {
  test('a port out of range says so; port 0 (any free port) stays valid', async () => {
    for (const [listen, port] of [['127.0.0.1:99999', '99999'], [':65536', '65536'], ['[::1]:1234567', '1234567']] as const) {
      const problems = await problemsOf(Promise.resolve().then(() => validateConfig({ smtp: { listen } })));
      assert.deepEqual(problems, [`smtp.listen: port ${port} is out of range (1–65535, or 0 for any free port)`]);
    }
    const http = await problemsOf(Promise.resolve().then(() => validateConfig({ http: { listen: '127.0.0.1:70000' } })));
    assert.deepEqual(http, ['http.listen: port 70000 is out of range (1–65535, or 0 for any free port)']);
    assert.equal(validateConfig({ smtp: { listen: '127.0.0.1:0' } }).resolvedListeners[0]!.port, 0);
    assert.equal(validateConfig({ smtp: { listen: '[::]:65535' } }).resolvedListeners[0]!.port, 65535);
    const malformed = await problemsOf(Promise.resolve().then(() => validateConfig({ smtp: { listen: 'nowhere' } })));
    assert.deepEqual(malformed, ['smtp.listen: expected host:port, e.g. "127.0.0.1:2525" or "[::]:25"']);
  });

  test('a bad url is one problem, not two', async () => {
    const notUrl = await problemsOf(Promise.resolve().then(() => validateConfig(withWebhook({ url: 'not a url' }))));
    assert.deepEqual(notUrl, ['routes[0].targets[0].url: not a URL (a webhook url is http:// or https://)']);
    const ftp = await problemsOf(Promise.resolve().then(() => validateConfig(withWebhook({ url: 'ftp://example.test/x#frag' }))));
    assert.deepEqual(ftp, ['routes[0].targets[0].url: webhook url must be http:// or https://']);
    const validate = await problemsOf(
      Promise.resolve().then(() => validateConfig({ routes: [{ recipients: ['a@x.test'], validate: { url: 'nope' }, targets: [{ type: 'local' }] }] })),
    );
    assert.deepEqual(validate, ['routes[0].validate.url: not a URL (a validate url is http:// or https://)']);
    const endpoint = await problemsOf(
      Promise.resolve().then(() => validateConfig({ routes: [{ recipients: ['a@x.test'], targets: [{ type: 'lambda', functionName: 'f', endpoint: 'nope' }] }] })),
    );
    assert.deepEqual(endpoint, ['routes[0].targets[0].endpoint: not a URL (an endpoint is http:// or https://)']);
  });

  test('an empty value is reported as empty only, not also as a malformed one', async () => {
    const problems = await problemsOf(
      Promise.resolve().then(() =>
        validateConfig({
          auth: { users: [{ username: 'u', password: '' }], allowInsecure: true },
          routes: [
            { recipients: ['a@x.test'], targets: [{ type: 'local' }, { type: 'webhook', url: 'http://h/', signingKey: '', when: { header: '' } }] },
            { recipients: ['b@x.test'], targets: [{ type: 's3', bucket: 'b', emlKey: '' }] },
          ],
        }),
      ),
    );
    const paths = problems.map((p) => p.slice(0, p.indexOf(': ')));
    assert.deepEqual(paths, [...new Set(paths)], `one problem per path:\n${problems.join('\n')}`);
    for (const p of ['auth.users[0].password', 'routes[0].targets[1].when.header', 'routes[1].targets[0].emlKey']) {
      assert.ok(paths.includes(p), `${p} in\n${problems.join('\n')}`);
    }
  });
});
