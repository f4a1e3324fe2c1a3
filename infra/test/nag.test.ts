/**
 * cdk-nag's AwsSolutions pack on the edge stack, shipped and with submission
 * listeners: no finding, of any severity, that lib/nag.ts does not
 * acknowledge with its reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import { App, Stack, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { EdgeStack } from '../lib/edge-stack.js';

interface Violation {
  ruleName: string;
  severity: string;
  violatingConstructs: { constructPath: string }[];
}

/** Synthesises what `build` adds to an app with the pack on; returns "rule at path" per finding. */
function findings(build: (app: App) => void): string[] {
  const outdir = mkdtempSync(path.join(os.tmpdir(), 'postgate-nag-'));
  try {
    const app = new App({ outdir, context: { stage: 'test' } });
    build(app);
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    try {
      app.synth();
    } catch (err) {
      if (!/Validation failed/.test((err as Error).message)) throw err;
    }
    const report = path.join(outdir, 'validation-report.json');
    if (!existsSync(report)) return [];
    const json = JSON.parse(readFileSync(report, 'utf8')) as { pluginReports: { violations: Violation[] }[] };
    return json.pluginReports.flatMap((r) => r.violations.flatMap((v) => v.violatingConstructs.map((c) => `${v.severity} ${v.ruleName} at ${c.constructPath}`)));
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

const edge = (configFile?: string) => (app: App) =>
  new EdgeStack(app, 'edge-nag', {
    stage: 'test',
    mailDomain: 'example.com',
    submission: configFile !== undefined,
    ...(configFile ? { configFile } : {}),
    alarmEmail: 'ops@example.com',
    env: { account: '123456789012', region: 'us-east-1' },
  });

test('AwsSolutions: no unacknowledged finding on the edge stack as shipped', () => {
  assert.deepEqual(findings(edge()), []);
});

test('AwsSolutions: no unacknowledged finding with submission and smtps listeners', () => {
  assert.deepEqual(findings(edge('infra/test/fixtures/edge-submission.yaml')), []);
});

test('AwsSolutions: no unacknowledged finding with the certificate in Secrets Manager (exact parameter and secret)', () => {
  const got = findings(
    (app) =>
      new EdgeStack(app, 'edge-nag-tls', {
        stage: 'test',
        mailDomain: 'example.com',
        submission: false,
        configFile: 'infra/test/fixtures/edge-tls-secret.yaml',
        env: { account: '123456789012', region: 'us-east-1' },
      }),
  );
  assert.deepEqual(got, []);
});

test('the pack does run: a bucket without access logs or a TLS-only policy is reported', () => {
  const got = findings((app) => new s3.Bucket(new Stack(app, 'probe'), 'Unchecked'));
  assert.ok(got.some((f) => f.includes('AwsSolutions-S1 ')), got.join('\n'));
  assert.ok(got.some((f) => f.includes('AwsSolutions-S10 ')), got.join('\n'));
});

test('every acknowledgment says why', () => {
  const app = new App({ context: { stage: 'test' } });
  const stack = edge()(app);
  // Recorded per construct as { "<prefix>::<rule id>": reason }.
  const acks = stack.node
    .findAll()
    .flatMap((c) => c.node.metadata.filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY).flatMap((m) => Object.entries(m.data as Record<string, string>)))
    .filter(([id]) => id.includes('AwsSolutions-'));
  assert.ok(acks.length >= 6, JSON.stringify(acks));
  for (const [id, reason] of acks) assert.ok(reason.length > 60, `${id}: a reason, not a label`);
});
