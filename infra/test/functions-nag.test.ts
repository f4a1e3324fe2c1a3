/**
 * cdk-nag's AwsSolutions pack on the serverless stack: serverless.yml as
 * `osls package` writes its CloudFormation template (offline, with the
 * repository's own osls), included into a CDK stack. No AwsSolutions finding
 * that lib/functions-nag.ts does not acknowledge with its reason; a new
 * resource or permission in serverless.yml that the pack objects to fails here.
 */
import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { App, Stack, Validations } from 'aws-cdk-lib';
import { CfnInclude } from 'aws-cdk-lib/cloudformation-include';
import { AwsSolutionsChecks } from 'cdk-nag';
import { REPO_ROOT } from '../lib/edge-stack.js';
import { acknowledgeFunctionsFindings, functionsFindings } from '../lib/functions-nag.js';

const STAGE = 'nag';
let work: string;
let templateFile: string;

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'postgate-fn-nag-'));
  const osls = path.join(REPO_ROOT, 'node_modules', 'osls', 'bin', 'serverless.js');
  assert.ok(existsSync(osls), 'the repository\'s own dependencies (osls) are installed: run npm ci at the root first');
  await promisify(execFile)(process.execPath, [osls, 'package', '--stage', STAGE, '--region', 'eu-west-1', '--package', path.join(work, 'package')], {
    cwd: REPO_ROOT,
    env: { ...process.env, SLS_TELEMETRY_DISABLED: '1', SLS_NOTIFICATIONS_MODE: 'off', POSTGATE_ESBUILD_WORK: '.esbuild-infra-nag' },
    maxBuffer: 10 * 1024 * 1024,
  });
  templateFile = path.join(work, 'package', 'cloudformation-template-update-stack.json');
});

after(() => {
  rmSync(work, { recursive: true, force: true });
  rmSync(path.join(REPO_ROOT, '.esbuild-infra-nag'), { recursive: true, force: true });
});

interface Violation {
  ruleName: string;
  violatingConstructs: { constructPath: string }[];
}

/** "rule at logical id" for every AwsSolutions finding left after the acknowledgments (when `ack`). */
function findings(ack: boolean): string[] {
  const outdir = mkdtempSync(path.join(os.tmpdir(), 'postgate-fn-nag-out-'));
  try {
    const app = new App({ outdir });
    const stack = new Stack(app, 'functions', { env: { account: '123456789012', region: 'eu-west-1' } });
    const template = new CfnInclude(stack, 'Template', { templateFile });
    if (ack) acknowledgeFunctionsFindings(template, STAGE);
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    try {
      app.synth();
    } catch (err) {
      if (!/Validation failed/.test((err as Error).message)) throw err;
    }
    const report = path.join(outdir, 'validation-report.json');
    if (!existsSync(report)) return [];
    const json = JSON.parse(readFileSync(report, 'utf8')) as { pluginReports: { violations: Violation[] }[] };
    // Only the AwsSolutions pack: CDK's own template lint (CloudFormation-Validate)
    // also reports here, on what the Serverless Framework generates.
    return json.pluginReports
      .flatMap((r) => r.violations)
      .filter((v) => v.ruleName.startsWith('AwsSolutions-'))
      .flatMap((v) => v.violatingConstructs.map((c) => `${v.ruleName} at ${c.constructPath.replace(/^functions\/Template\//, '')}`));
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

test('AwsSolutions: no unacknowledged finding on the serverless stack (serverless.yml as packaged)', { timeout: 120_000 }, () => {
  assert.deepEqual(findings(true), []);
});

test('the pack does run on the template: without the acknowledgments each of them is a finding', { timeout: 120_000 }, () => {
  const got = findings(false).sort();
  const want = functionsFindings(STAGE)
    .map((a) => `AwsSolutions-${a.rule} at ${a.resource}`)
    .sort();
  assert.deepEqual(got, want);
});

test('every acknowledgment says why', () => {
  for (const a of functionsFindings(STAGE)) assert.ok(a.reason.length > 80, `${a.resource} ${a.rule}: a reason, not a label`);
});
