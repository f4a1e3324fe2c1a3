#!/usr/bin/env node
/**
 * One command for postgate on AWS (docs/deploy.md):
 *
 *   npm run deploy -- --domain example.com --region eu-west-1 --alarm-email ops@example.com
 *   npm run remove -- --domain example.com --region eu-west-1 [--delete-data]
 *
 * deploy: the dependencies of both halves, the SSM parameters the functions
 * read (generated once, never printed), CDK's bootstrap, the serverless
 * stack (serverless.yml, with osls), the edge stack (infra/), then the DNS
 * records to publish. remove: the edge stack first (it imports the serverless
 * stack's exports), then the serverless stack; the bucket and the index table
 * are kept (DeletionPolicy Retain in serverless.yml) unless --delete-data.
 *
 * Every step is given the one --region, as an argument and as AWS_REGION and
 * CDK_DEFAULT_REGION: the edge imports the serverless stack's exports, which
 * exist only in the region that stack was deployed to.
 *
 * --dry-run prints every command with its arguments, in order, and runs none
 * (test/deploy-script.test.ts reads that output). Generated secrets appear as
 * a placeholder in both modes.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OSLS = 'node_modules/osls/bin/serverless.js';
const SERVICE = 'postgate';
const USAGE = `usage:
  npm run deploy -- --domain DOMAIN --region REGION --alarm-email ADDRESS
                    [--stage prod] [--downstream-url URL] [--config deploy/FILE.yaml] [--dry-run]
  npm run remove -- --domain DOMAIN --region REGION [--stage prod] [--delete-data] [--dry-run]`;

/** Parses argv into options; returns the problems found, all at once. */
export function parseArgs(command, argv) {
  const opts = { command, stage: 'prod', dryRun: false, deleteData: false };
  const problems = [];
  const valued = { '--domain': 'domain', '--region': 'region', '--alarm-email': 'alarmEmail', '--stage': 'stage', '--downstream-url': 'downstreamUrl', '--config': 'config' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    if (flag === '--dry-run') opts.dryRun = true;
    else if (flag === '--delete-data' && command === 'remove') opts.deleteData = true;
    else if (flag in valued) {
      const v = inline ?? argv[++i];
      if (v === undefined || v.startsWith('--')) problems.push(`${flag} needs a value`);
      else opts[valued[flag]] = v;
    } else problems.push(`unknown option ${a}`);
  }
  if (!opts.domain) problems.push('--domain is required');
  else if (!/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/i.test(opts.domain)) problems.push(`--domain ${opts.domain}: not a domain name`);
  if (!opts.region) problems.push('--region is required (both stacks go to this one region)');
  else if (!/^[a-z]{2}(-[a-z]+)+-\d+$/.test(opts.region)) problems.push(`--region ${opts.region}: not an AWS region name such as eu-west-1`);
  if (!/^[a-z][a-z0-9-]{0,15}$/.test(opts.stage)) problems.push(`--stage ${opts.stage}: lower-case letters, digits and "-", at most 16`);
  if (command === 'deploy') {
    if (!opts.alarmEmail) problems.push('--alarm-email is required: the alarms must reach someone');
    else if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(opts.alarmEmail)) problems.push(`--alarm-email ${opts.alarmEmail}: not an email address`);
    opts.downstreamUrl ??= `https://app.${opts.domain ?? 'example.com'}/inbound`;
    if (!/^https:\/\//.test(opts.downstreamUrl)) problems.push(`--downstream-url ${opts.downstreamUrl}: must be https://`);
    // The edge's configuration is baked into the image, which copies deploy/.
    if (opts.config !== undefined && !/^deploy\/[\w.-]+\.ya?ml$/.test(opts.config)) problems.push(`--config ${opts.config}: a file under deploy/ (deploy/<name>.yaml)`);
  }
  return { opts, problems };
}

/**
 * The steps, in order. A step is a command (argv), with its working
 * directory and extra environment; `capture` names the value its output
 * becomes for later steps, `unless` a command whose success skips it.
 */
export function plan(o) {
  const env = { AWS_REGION: o.region, AWS_DEFAULT_REGION: o.region, CDK_DEFAULT_REGION: o.region };
  const r = ['--region', o.region];
  const edgeStack = `${SERVICE}-edge-${o.stage}`;
  const fnStack = `${SERVICE}-${o.stage}`;
  const params = { ingest: `/${SERVICE}/${o.stage}/ingest-secrets`, downstream: `/${SERVICE}/${o.stage}/downstream-secret` };
  const cdkContext = ['-c', `stage=${o.stage}`, '-c', `mailDomain=${o.domain}`, '-c', `region=${o.region}`, '-c', 'account={account}'];
  // The routes live in the stack's bucket, so they change without a deploy
  // (docs/deploy.md, "Changing routes"): copied there from deploy/ once.
  const bucket = `${SERVICE}-${o.stage}-${o.region}-messages`;
  const edgeObject = 'config/edge.yaml';
  const routesObject = `s3://${bucket}/config/functions.yaml`;
  const steps = [];
  const step = (what, argv, extra = {}) => steps.push({ what, argv, cwd: '.', env, ...extra });

  step('the AWS account of the current credentials', ['aws', 'sts', 'get-caller-identity', '--query', 'Account', '--output', 'text', ...r], { capture: 'account' });
  if (o.command === 'deploy') {
    step('the project\'s dependencies (osls, the functions\' bundler)', ['npm', 'ci', '--no-audit', '--no-fund']);
    step('the CDK app\'s dependencies', ['npm', 'ci', '--prefix', 'infra', '--no-audit', '--no-fund']);
    for (const [name, param] of Object.entries(params)) {
      // The value goes through a file only this user can read, never on the
      // command line (which other users of the machine can see).
      step(`SSM parameter ${param} (${name === 'ingest' ? 'ingest\'s Standard Webhooks secret' : 'the signing secret of the downstream webhook'}), created once`, [
        'aws', 'ssm', 'put-parameter', '--cli-input-json', 'file://{paramfile}', ...r,
      ], { unless: ['aws', 'ssm', 'get-parameter', '--name', param, ...r], secretParam: param });
    }
    step('CDK bootstrap of the account and region (idempotent)', ['npx', '--no-install', 'cdk', 'bootstrap', `aws://{account}/${o.region}`, '--no-notices'], { cwd: 'infra' });
    step(`the serverless stack ${fnStack}`, [
      'node', OSLS, 'deploy', '--stage', o.stage, ...r,
      '--param', `mailDomain=${o.domain}`, '--param', `downstreamUrl=${o.downstreamUrl}`, '--param', `alarmEmail=${o.alarmEmail}`,
      '--param', `routesConfig=${routesObject}`,
    ], { env: { ...env, SLS_TELEMETRY_DISABLED: '1' } });
    step(`the functions' routes, ${routesObject}, from deploy/functions.yaml (only when missing: later edits are yours)`, [
      'aws', 's3', 'cp', 'deploy/functions.yaml', routesObject, ...r,
    ], { unless: ['aws', 's3api', 'head-object', '--bucket', bucket, '--key', 'config/functions.yaml', ...r] });
    // --config names the file to run: it replaces the object. Without it the
    // shipped file only fills an empty place.
    step(`the edge's configuration, s3://${bucket}/${edgeObject}, from ${o.config ?? 'deploy/edge.yaml'}${o.config ? ' (replacing the object)' : ' (only when missing)'}`, [
      'aws', 's3', 'cp', o.config ?? 'deploy/edge.yaml', `s3://${bucket}/${edgeObject}`, ...r,
    ], o.config ? {} : { unless: ['aws', 's3api', 'head-object', '--bucket', bucket, '--key', edgeObject, ...r] });
    step('the CDK app, compiled', ['npm', '--prefix', 'infra', 'run', 'build']);
    step(`the edge stack ${edgeStack} (builds and pushes the image: needs Docker)`, [
      'npx', '--no-install', 'cdk', 'deploy', edgeStack, '--require-approval', 'never', '--no-notices',
      ...cdkContext, '-c', `alarmEmail=${o.alarmEmail}`, '-c', `configObject=${edgeObject}`, ...(o.config ? ['-c', `config=${o.config}`] : []),
    ], { cwd: 'infra' });
    step('the load balancer\'s DNS name', [
      'aws', 'cloudformation', 'describe-stacks', '--stack-name', edgeStack, '--query', "Stacks[0].Outputs[?OutputKey=='NlbDnsName'].OutputValue", '--output', 'text', ...r,
    ], { capture: 'nlb' });
  } else {
    step('the CDK app\'s dependencies', ['npm', 'ci', '--prefix', 'infra', '--no-audit', '--no-fund']);
    step('the CDK app, compiled', ['npm', '--prefix', 'infra', 'run', 'build']);
    step(`the edge stack ${edgeStack} (first: it imports the serverless stack's exports)`, [
      'npx', '--no-install', 'cdk', 'destroy', edgeStack, '--force', '--no-notices', ...cdkContext,
    ], { cwd: 'infra' });
    step(`the serverless stack ${fnStack} (the bucket and the index table stay: DeletionPolicy Retain)`, ['node', OSLS, 'remove', '--stage', o.stage, ...r], {
      env: { ...env, SLS_TELEMETRY_DISABLED: '1' },
    });
    if (o.deleteData) {
      const bucket = `${SERVICE}-${o.stage}-${o.region}-messages`;
      step(`--delete-data: every object of the bucket ${bucket}`, ['aws', 's3', 'rm', `s3://${bucket}`, '--recursive', ...r]);
      step(`--delete-data: the bucket ${bucket}`, ['aws', 's3api', 'delete-bucket', '--bucket', bucket, ...r]);
      step(`--delete-data: the index table ${SERVICE}-${o.stage}-index`, ['aws', 'dynamodb', 'delete-table', '--table-name', `${SERVICE}-${o.stage}-index`, ...r]);
      for (const param of Object.values(params)) step(`--delete-data: the SSM parameter ${param}`, ['aws', 'ssm', 'delete-parameter', '--name', param, ...r]);
    }
  }
  return steps;
}

/** The records to publish once the edge is up. */
export function dnsRecords(o, nlb) {
  // An MX names a host with address records, never a CNAME (RFC 2181 §10.3, RFC 5321 §5.1).
  return [
    `mx.${o.domain}.  A   ALIAS ${nlb}   (Route 53 alias record; elsewhere, A records for the balancer's addresses)`,
    `${o.domain}.  MX  10 mx.${o.domain}.`,
  ];
}

const quote = (s) => (/^[\w@%+=:,./{}-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

function show(s, vars) {
  const placeholder = (k) =>
    k === 'paramfile' ? `<temporary 0600 file: {"Name":"${s.secretParam}","Type":"SecureString","Value":"<generated whsec_ secret>"}>` : `<${k}>`;
  const fill = (a) => a.replace(/\{(account|nlb|paramfile)\}/g, (_, k) => (k !== 'paramfile' && vars[k]) || placeholder(k));
  const envText = Object.entries(s.env).map(([k, v]) => `${k}=${quote(v)}`).join(' ');
  const cmd = s.argv.map((a) => quote(fill(a))).join(' ');
  return `+ (cd ${s.cwd} && env ${envText} ${cmd})${s.unless ? `   # skipped when this succeeds: ${s.unless.map(quote).join(' ')}` : ''}`;
}

function run(s, vars) {
  const opts = { cwd: path.join(ROOT, s.cwd), env: { ...process.env, ...s.env }, encoding: 'utf8' };
  if (s.unless && spawnSync(s.unless[0], s.unless.slice(1), { ...opts, stdio: 'ignore' }).status === 0) {
    console.log(`  (already there: ${s.what})`);
    return;
  }
  let tmp;
  const local = { ...vars };
  if (s.secretParam) {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'postgate-deploy-'));
    local.paramfile = path.join(tmp, 'param.json');
    const value = `whsec_${randomBytes(32).toString('base64')}`;
    writeFileSync(local.paramfile, JSON.stringify({ Name: s.secretParam, Type: 'SecureString', Value: value }), { mode: 0o600 });
  }
  const argv = s.argv.map((a) => a.replace(/\{(account|nlb|paramfile)\}/g, (_, k) => local[k]));
  try {
    const res = spawnSync(argv[0], argv.slice(1), { ...opts, stdio: s.capture ? ['inherit', 'pipe', 'inherit'] : 'inherit' });
    if (res.error) throw new Error(`${s.what}: cannot run ${argv[0]} (${res.error.message})`);
    if (res.status !== 0) throw new Error(`${s.what}: ${argv[0]} exited with ${res.status}`);
    if (s.capture) vars[s.capture] = res.stdout.trim();
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

function main() {
  const [command, ...argv] = process.argv.slice(2);
  if (command !== 'deploy' && command !== 'remove') {
    console.error(USAGE);
    process.exit(2);
  }
  const { opts, problems } = parseArgs(command, argv);
  if (problems.length) {
    console.error(`${problems.map((p) => `error: ${p}`).join('\n')}\n${USAGE}`);
    process.exit(2);
  }
  const steps = plan(opts);
  const vars = {};
  const version = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;
  console.log(`postgate ${version}: ${command} ${opts.domain}, stage ${opts.stage}, region ${opts.region}${opts.dryRun ? ' (dry run: nothing is run)' : ''}`);
  for (const [i, s] of steps.entries()) {
    console.log(`\n[${i + 1}/${steps.length}] ${s.what}`);
    console.log(show(s, vars));
    if (!opts.dryRun) {
      try {
        run(s, vars);
      } catch (err) {
        console.error(`\nstopped at step ${i + 1}: ${err.message}. Fix the cause and run the same command again: every step is safe to repeat.`);
        process.exit(1);
      }
    }
  }
  if (command === 'deploy') {
    console.log(`\nDNS records to publish (docs/deploy.md, "DNS"):`);
    for (const line of dnsRecords(opts, vars.nlb ?? '<NlbDnsName>')) console.log(`  ${line}`);
    console.log(`\nAWS mails ${opts.alarmEmail} a confirmation link for each alarm topic (the functions' and the edge's): confirm both.`);
  } else if (!opts.deleteData) {
    console.log(`\nKept: the bucket ${SERVICE}-${opts.stage}-${opts.region}-messages, the table ${SERVICE}-${opts.stage}-index and the SSM parameters. --delete-data removes them.`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
