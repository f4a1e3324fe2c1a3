/**
 * `npm run deploy` and `npm run remove` (scripts/deploy.mjs) cannot reach
 * AWS here; their --dry-run prints every command they would run, in order,
 * with its arguments and environment. These tests read that output: the one
 * region reaches every step (the edge imports the serverless stack's exports,
 * which exist only in that stack's region), the stack names, the order, and
 * that the data is kept unless --delete-data (docs/deploy.md).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from './helpers/fixtures.js';

const SCRIPT = path.join(projectRoot(), 'scripts', 'deploy.mjs');

interface Step {
  what: string;
  cwd: string;
  env: Record<string, string>;
  argv: string[];
}

/** Runs the script; parses each "[i/n] what" and its "+ (cd DIR && env K=V … CMD)" line. */
function dryRun(...args: string[]): { code: number; out: string; err: string; steps: Step[] } {
  const r = spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } });
  const steps: Step[] = [];
  const lines = r.stdout.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const head = /^\[\d+\/\d+\] (.*)$/.exec(lines[i]!);
    if (!head) continue;
    const cmd = /^\+ \(cd (\S+) && env (.*)\)(?:   # .*)?$/.exec(lines[i + 1] ?? '');
    assert.ok(cmd, `a command line after "${lines[i]}", got ${JSON.stringify(lines[i + 1])}`);
    const words = [...cmd[2]!.matchAll(/'((?:[^']|'\\'')*)'|(\S+)/g)].map((m) => (m[1] !== undefined ? m[1].replace(/'\\''/g, "'") : m[2]!));
    const env: Record<string, string> = {};
    while (words.length && /^[A-Z_]+=/.test(words[0]!)) {
      const w = words.shift()!;
      env[w.slice(0, w.indexOf('='))] = w.slice(w.indexOf('=') + 1);
    }
    steps.push({ what: head[1]!, cwd: cmd[1]!, env, argv: words });
  }
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr, steps };
}

const text = (s: Step) => s.argv.join(' ');
const indexOf = (steps: Step[], re: RegExp) => steps.findIndex((s) => re.test(text(s)));

describe('npm run deploy -- --dry-run', () => {
  const run = dryRun('deploy', '--domain', 'example.com', '--region', 'eu-west-1', '--alarm-email', 'ops@example.com', '--dry-run');

  test('prints the steps and runs nothing', () => {
    assert.equal(run.code, 0, run.err);
    assert.match(run.out, /dry run: nothing is run/);
    assert.ok(run.steps.length >= 9, run.out);
  });

  test('the one region reaches every step: in the environment of each, and as an argument of every AWS, osls and CDK call', () => {
    for (const s of run.steps) {
      assert.equal(s.env.AWS_REGION, 'eu-west-1', s.what);
      assert.equal(s.env.CDK_DEFAULT_REGION, 'eu-west-1', s.what);
      const t = text(s);
      if (/^aws |serverless\.js/.test(t)) assert.match(t, /--region eu-west-1( |$)/, s.what);
      if (/\bcdk (deploy|destroy)\b/.test(t)) assert.match(t, /-c region=eu-west-1( |$)/, s.what);
      if (/\bcdk bootstrap\b/.test(t)) assert.match(t, /aws:\/\/<account>\/eu-west-1/, s.what);
      assert.doesNotMatch(t, /us-east-1/, s.what);
    }
  });

  test('order: dependencies, parameters, bootstrap, the serverless stack, then the edge stack that imports its exports', () => {
    const steps = run.steps;
    const order = [
      indexOf(steps, /^aws sts get-caller-identity/),
      indexOf(steps, /^npm ci --no-audit/),
      indexOf(steps, /^npm ci --prefix infra/),
      indexOf(steps, /^aws ssm put-parameter .*ingest-secrets/),
      indexOf(steps, /^aws ssm put-parameter .*downstream-secret/),
      indexOf(steps, /cdk bootstrap/),
      indexOf(steps, /serverless\.js deploy --stage prod/),
      indexOf(steps, /cdk deploy postgate-edge-prod /),
      indexOf(steps, /^aws cloudformation describe-stacks --stack-name postgate-edge-prod/),
    ];
    assert.ok(!order.includes(-1), JSON.stringify(order));
    assert.deepEqual([...order].sort((a, b) => a - b), order);
    const edge = text(steps[order[7]!]!);
    assert.match(edge, /-c stage=prod -c mailDomain=example\.com/);
    assert.match(edge, /-c alarmEmail=ops@example\.com/);
    assert.equal(steps[order[7]!]!.cwd, 'infra', 'cdk runs where cdk.json is');
    const fn = text(steps[order[6]!]!);
    assert.match(fn, /--param mailDomain=example\.com/);
    assert.match(fn, /--param alarmEmail=ops@example\.com/);
  });

  test('the routes go to the bucket once, after the stack that makes it and before the edge that reads them; both stacks are pointed at them', () => {
    const steps = run.steps;
    const fnDeploy = indexOf(steps, /serverless\.js deploy/);
    const routes = indexOf(steps, /^aws s3 cp deploy\/functions\.yaml s3:\/\/postgate-prod-eu-west-1-messages\/config\/functions\.yaml --region eu-west-1$/);
    const edgeCfg = indexOf(steps, /^aws s3 cp deploy\/edge\.yaml s3:\/\/postgate-prod-eu-west-1-messages\/config\/edge\.yaml --region eu-west-1$/);
    const edge = indexOf(steps, /cdk deploy/);
    assert.ok(fnDeploy < routes && routes < edge && fnDeploy < edgeCfg && edgeCfg < edge, JSON.stringify({ fnDeploy, routes, edgeCfg, edge }));
    assert.match(text(steps[fnDeploy]!), /--param routesConfig=s3:\/\/postgate-prod-eu-west-1-messages\/config\/functions\.yaml/);
    assert.match(text(steps[edge]!), /-c configObject=config\/edge\.yaml/);
    assert.match(run.out, /skipped when this succeeds: aws s3api head-object --bucket postgate-prod-eu-west-1-messages --key config\/functions\.yaml --region eu-west-1/);
  });

  test('parameters are created only when missing, and no secret is printed', () => {
    for (const s of run.steps.filter((x) => /put-parameter/.test(text(x)))) assert.match(text(s), /<generated whsec_ secret>/);
    assert.match(run.out, /skipped when this succeeds: aws ssm get-parameter --name \/postgate\/prod\/ingest-secrets --region eu-west-1/);
    assert.doesNotMatch(run.out, /whsec_[A-Za-z0-9+/]{20,}/);
  });

  test('ends with the DNS records to publish', () => {
    assert.match(run.out, /mx\.example\.com\.\s+A\s+ALIAS <NlbDnsName>/);
    assert.match(run.out, /example\.com\.\s+MX\s+10 mx\.example\.com\./);
  });

  test('a stage and a downstream URL are passed on', () => {
    const r = dryRun('deploy', '--domain', 'example.org', '--region', 'ap-southeast-2', '--alarm-email', 'a@example.org', '--stage', 'staging', '--downstream-url', 'https://hooks.example.org/mail', '--dry-run');
    assert.equal(r.code, 0, r.err);
    assert.ok(r.steps.some((s) => /cdk deploy postgate-edge-staging .*-c stage=staging .*-c region=ap-southeast-2/.test(text(s))));
    assert.ok(r.steps.some((s) => /serverless\.js deploy --stage staging --region ap-southeast-2 .*downstreamUrl=https:\/\/hooks\.example\.org\/mail/.test(text(s))));
  });

  test('--config names the edge configuration (a file under deploy/, baked into the image)', () => {
    const r = dryRun('deploy', '--domain', 'example.com', '--region', 'eu-west-1', '--alarm-email', 'ops@example.com', '--config', 'deploy/edge-tls.yaml', '--dry-run');
    assert.equal(r.code, 0, r.err);
    assert.ok(r.steps.some((s) => /cdk deploy postgate-edge-prod .*-c config=deploy\/edge-tls\.yaml/.test(text(s))), r.out);
    // The named file replaces the edge's configuration object (no "only when missing").
    assert.match(r.out, /\+ \(cd \. && env [^)]*aws s3 cp deploy\/edge-tls\.yaml s3:\/\/postgate-prod-eu-west-1-messages\/config\/edge\.yaml --region eu-west-1\)\n/);
    const outside = dryRun('deploy', '--domain', 'example.com', '--region', 'eu-west-1', '--alarm-email', 'ops@example.com', '--config', '/etc/edge.yaml', '--dry-run');
    assert.equal(outside.code, 2);
    assert.match(outside.err, /--config \/etc\/edge\.yaml: a file under deploy\//);
  });

  test('missing or malformed options are reported together, and nothing runs', () => {
    const r = dryRun('deploy', '--domain', 'not a domain', '--region', 'Europe', '--dry-run');
    assert.equal(r.code, 2);
    assert.match(r.err, /--domain not a domain: not a domain name/);
    assert.match(r.err, /--region Europe: not an AWS region/);
    assert.match(r.err, /--alarm-email is required/);
    assert.equal(r.steps.length, 0);
    const noRegion = dryRun('deploy', '--domain', 'example.com', '--alarm-email', 'ops@example.com', '--dry-run');
    assert.equal(noRegion.code, 2);
    assert.match(noRegion.err, /--region is required/);
  });
});

describe('npm run remove -- --dry-run', () => {
  test('the edge stack first, then the serverless stack; the data is kept', () => {
    const r = dryRun('remove', '--domain', 'example.com', '--region', 'eu-west-1', '--dry-run');
    assert.equal(r.code, 0, r.err);
    const edge = indexOf(r.steps, /cdk destroy postgate-edge-prod .*-c region=eu-west-1/);
    const fn = indexOf(r.steps, /serverless\.js remove --stage prod --region eu-west-1/);
    assert.ok(edge >= 0 && fn > edge, r.out);
    for (const s of r.steps) {
      assert.equal(s.env.AWS_REGION, 'eu-west-1');
      assert.doesNotMatch(text(s), /s3 rm|delete-bucket|delete-table|delete-parameter/, `${s.what}: data kept without --delete-data`);
    }
    assert.match(r.out, /Kept: the bucket postgate-prod-eu-west-1-messages, the table postgate-prod-index/);
  });

  test('--delete-data deletes the bucket, the table and the parameters, after the stacks', () => {
    const r = dryRun('remove', '--domain', 'example.com', '--region', 'eu-west-1', '--delete-data', '--dry-run');
    assert.equal(r.code, 0, r.err);
    const fn = indexOf(r.steps, /serverless\.js remove/);
    const want = [
      /^aws s3 rm s3:\/\/postgate-prod-eu-west-1-messages --recursive --region eu-west-1$/,
      /^aws s3api delete-bucket --bucket postgate-prod-eu-west-1-messages --region eu-west-1$/,
      /^aws dynamodb delete-table --table-name postgate-prod-index --region eu-west-1$/,
      /^aws ssm delete-parameter --name \/postgate\/prod\/ingest-secrets --region eu-west-1$/,
    ];
    for (const re of want) assert.ok(indexOf(r.steps, re) > fn, `${re} after the stack removal`);
  });

  test('--delete-data is an option of remove only', () => {
    const r = dryRun('deploy', '--domain', 'example.com', '--region', 'eu-west-1', '--alarm-email', 'ops@example.com', '--delete-data', '--dry-run');
    assert.equal(r.code, 2);
    assert.match(r.err, /unknown option --delete-data/);
  });
});
