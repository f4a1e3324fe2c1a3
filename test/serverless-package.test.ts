/**
 * serverless.yml as it deploys: `osls package` (the open-source Serverless
 * Framework v3 line, offline, no AWS account) bundles the functions with
 * esbuild and writes the CloudFormation template; this checks the template's
 * promises (least-privilege roles, encryption, retention, the dead-letter
 * queue, the exports the edge stack imports) and the artifacts. The shipped
 * routes file for the functions (deploy/functions.yaml) is loaded as the
 * functions load it.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { projectRoot } from './helpers/fixtures.js';
import { loadRoutes, readSettings } from '../src/functions/settings.js';
import { loadConfig } from '../src/config/load.js';
import { EDGE_TASK_ENV } from './helpers/edge-env.js';

const run = promisify(execFile);

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('serverless.yml: osls package offline', { timeout: 180_000 }, () => {
  let dir: string;
  let template: Json;
  const root = projectRoot();

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-sls-'));
    const osls = path.join(path.dirname(createRequire(import.meta.url).resolve('osls/package.json')), 'bin', 'serverless.js');
    await run(process.execPath, [osls, 'package', '--stage', 'ci', '--package', dir], {
      cwd: root,
      env: {
        ...process.env,
        SLS_TELEMETRY_DISABLED: '1',
        SLS_NOTIFICATIONS_MODE: 'off',
        POSTGATE_ESBUILD_WORK: '.esbuild-package-test',
      },
      maxBuffer: 10 * 1024 * 1024,
    });
    template = JSON.parse(await readFile(path.join(dir, 'cloudformation-template-update-stack.json'), 'utf8')) as Json;
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(path.join(root, '.esbuild-package-test'), { recursive: true, force: true });
  });

  const resources = (type: string): [string, Json][] => Object.entries(template.Resources as Json).filter(([, r]) => r.Type === type) as [string, Json][];
  const res = (name: string): Json => (template.Resources as Json)[name];

  test('three functions on a current Node runtime, arm64, each with its own role; no HTTP API', () => {
    const fns = Object.fromEntries(resources('AWS::Lambda::Function')) as Json;
    assert.deepEqual(Object.keys(fns).sort(), ['IngestLambdaFunction', 'RedriveLambdaFunction', 'RouteLambdaFunction']);
    for (const [name, f] of Object.entries(fns)) {
      assert.match(f.Properties.Runtime, /^nodejs(22|24)\.x$/, name);
      assert.deepEqual(f.Properties.Architectures, ['arm64'], name);
      assert.equal(f.Properties.Handler.endsWith('.handler'), true);
    }
    assert.deepEqual(fns.IngestLambdaFunction.Properties.Role, { 'Fn::GetAtt': ['IngestRole', 'Arn'] });
    assert.deepEqual(fns.RouteLambdaFunction.Properties.Role, { 'Fn::GetAtt': ['RouteRole', 'Arn'] });
    assert.deepEqual(fns.RedriveLambdaFunction.Properties.Role, { 'Fn::GetAtt': ['RedriveRole', 'Arn'] });
    // The edge invokes ingest through the Lambda API (IAM): nothing public in front of it.
    const api = Object.values(template.Resources as Json).filter((r) => /^AWS::(ApiGateway|ApiGatewayV2)::/.test(r.Type) || r.Type === 'AWS::Lambda::Url');
    assert.deepEqual(api, []);
    assert.ok(!resources('AWS::Lambda::Permission').some(([, r]) => r.Properties.FunctionName?.['Fn::GetAtt']?.[0] === 'IngestLambdaFunction'), 'no service may invoke ingest by a resource policy');
  });

  test('concurrency: ingest keeps its own (no other function can take it), the route trigger cannot take more than its share', () => {
    const ingest = res('IngestLambdaFunction').Properties;
    assert.equal(ingest.ReservedConcurrentExecutions, 50);
    const mapping = resources('AWS::Lambda::EventSourceMapping')[0]![1];
    assert.deepEqual(mapping.Properties.FunctionName, { 'Fn::GetAtt': ['RouteLambdaFunction', 'Arn'] });
    assert.deepEqual(mapping.Properties.ScalingConfig, { MaximumConcurrency: 10 });
    assert.ok(mapping.Properties.ScalingConfig.MaximumConcurrency < ingest.ReservedConcurrentExecutions);
  });

  test('the edge stops waiting for ingest before ingest\'s own timeout, and within its delivery deadline', async () => {
    const edge = await loadConfig({ file: path.join(root, 'deploy', 'edge.yaml'), env: EDGE_TASK_ENV });
    const targets = [...edge.routes.flatMap((r) => r.targets), ...(edge.postmaster?.targets ?? [])].filter((t) => t.type === 'lambda');
    assert.ok(targets.length >= 2, 'the route and postmaster both invoke ingest');
    const ingestTimeoutMs = res('IngestLambdaFunction').Properties.Timeout * 1000;
    for (const t of targets) {
      assert.ok(t.timeout < ingestTimeoutMs, `edge invoke timeout ${t.timeout} ms must be below ingest's ${ingestTimeoutMs} ms`);
      assert.ok(t.timeout <= edge.delivery.deadline, 'the deadline would cut a longer wait anyway');
    }
  });

  test('alarms: dead letters, ingest errors and throttles, the oldest routing job, each notifying the alarm topic; the email subscription only when given', () => {
    const alarms = Object.fromEntries(resources('AWS::CloudWatch::Alarm')) as Json;
    const metric = (a: Json) => `${a.Properties.Namespace} ${a.Properties.MetricName} ${JSON.stringify(a.Properties.Dimensions[0].Value)}`;
    assert.deepEqual(Object.values(alarms).map(metric).sort(), [
      'AWS/Lambda Errors {"Ref":"IngestLambdaFunction"}',
      'AWS/Lambda Throttles {"Ref":"IngestLambdaFunction"}',
      'AWS/SQS ApproximateAgeOfOldestMessage {"Fn::GetAtt":["RouteQueue","QueueName"]}',
      'AWS/SQS ApproximateNumberOfMessagesVisible {"Fn::GetAtt":["RouteDeadLetterQueue","QueueName"]}',
    ]);
    for (const [name, a] of Object.entries(alarms) as [string, Json][]) {
      assert.deepEqual(a.Properties.AlarmActions, [{ Ref: 'AlarmTopic' }], name);
      assert.deepEqual(a.Properties.OKActions, [{ Ref: 'AlarmTopic' }], name);
      assert.equal(a.Properties.TreatMissingData, 'notBreaching', `${name}: no data is no trouble`);
    }
    const dlq = Object.values(alarms).find((a: Json) => a.Properties.MetricName === 'ApproximateNumberOfMessagesVisible') as Json;
    assert.equal(dlq.Properties.Threshold, 0);
    assert.equal(dlq.Properties.ComparisonOperator, 'GreaterThanThreshold');
    // The oldest job alarms only past the whole retry schedule: 30 s doubling, capped at 900 s, over maxAttempts receives.
    let schedule = 0;
    for (let i = 0; i < 8 - 1; i++) schedule += Math.min(900, 30 * 2 ** i);
    const age = Object.values(alarms).find((a: Json) => a.Properties.MetricName === 'ApproximateAgeOfOldestMessage') as Json;
    assert.ok(age.Properties.Threshold > schedule, `${age.Properties.Threshold} s vs a retry schedule of ${schedule} s`);
    assert.equal(res('AlarmTopic').Type, 'AWS::SNS::Topic');
    const policy = JSON.stringify(res('AlarmTopicPolicy').Properties.PolicyDocument);
    assert.match(policy, /cloudwatch\.amazonaws\.com/);
    assert.match(policy, /aws:SecureTransport/);
    // Packaged without --param alarmEmail: the subscription's condition is false.
    assert.equal(res('AlarmEmailSubscription').Condition, 'HasAlarmEmail');
    assert.deepEqual(template.Conditions.HasAlarmEmail, { 'Fn::Not': [{ 'Fn::Equals': ['', ''] }] });
  });

  test('least privilege: each role allows exactly the calls its function makes, on its own resources, never "*"', () => {
    const statements = (role: string) =>
      (res(role).Properties.Policies as Json[]).flatMap((p) => p.PolicyDocument.Statement as Json[]).map((s) => ({ actions: [s.Action].flat().sort(), resource: JSON.stringify(s.Resource) }));
    const actions = (role: string) => statements(role).flatMap((s) => s.actions).sort();
    assert.deepEqual(actions('IngestRole'), [
      'dynamodb:GetItem',
      'dynamodb:PutItem',
      'dynamodb:UpdateItem',
      'logs:CreateLogStream',
      'logs:PutLogEvents',
      's3:AbortMultipartUpload',
      's3:GetObject',
      's3:PutObject',
      'sqs:GetQueueUrl',
      'sqs:SendMessage',
      'ssm:GetParameter',
    ]);
    assert.deepEqual(actions('RouteRole'), [
      'dynamodb:GetItem',
      'dynamodb:UpdateItem',
      'logs:CreateLogStream',
      'logs:PutLogEvents',
      's3:GetObject',
      's3:GetObject',
      's3:PutObject',
      'sqs:ChangeMessageVisibility',
      'sqs:DeleteMessage',
      'sqs:GetQueueAttributes',
      'sqs:GetQueueUrl',
      'sqs:GetQueueUrl',
      'sqs:ReceiveMessage',
      'sqs:SendMessage',
      'ssm:GetParameter',
    ]);
    assert.deepEqual(actions('RedriveRole'), [
      'dynamodb:Scan',
      'dynamodb:UpdateItem',
      'logs:CreateLogStream',
      'logs:PutLogEvents',
      'sqs:ChangeMessageVisibility',
      'sqs:DeleteMessage',
      'sqs:GetQueueUrl',
      'sqs:GetQueueUrl',
      'sqs:ReceiveMessage',
      'sqs:SendMessage',
    ]);
    for (const role of ['IngestRole', 'RouteRole', 'RedriveRole']) {
      for (const s of statements(role)) {
        assert.ok(!s.actions.some((a: string) => a.includes('*')), `${role}: wildcard action`);
        assert.notEqual(s.resource, '"*"', `${role}: wildcard resource`);
      }
      assert.deepEqual(res(role).Properties.AssumeRolePolicyDocument.Statement[0].Principal, { Service: 'lambda.amazonaws.com' });
    }
    const ssmOf = (role: string) => statements(role).find((st) => st.actions.includes('ssm:GetParameter'))?.resource ?? '';
    // S3 access is limited to the messages/ prefix, and reads of the routes under config/.
    for (const role of ['IngestRole', 'RouteRole']) {
      const s3 = statements(role).filter((s) => s.actions.some((a: string) => a.startsWith('s3:')));
      assert.deepEqual(s3.map((s) => /messages\/\*/.test(s.resource) || (/config\/\*/.test(s.resource) && s.actions.join() === 's3:GetObject')), [true, true], role);
      assert.match(ssmOf(role), /parameter\/postgate\/ci\/config"/, `${role} may read the routes parameter`);
    }
    // Each function reads only its own secrets.
    const ssm = ssmOf;
    assert.match(ssm('IngestRole'), /ingest-secrets/);
    assert.match(ssm('RouteRole'), /downstream-secret/);
    assert.doesNotMatch(ssm('RouteRole'), /ingest-secrets/);
    // Only route may send to the dead-letter queue; only redrive may read it.
    const redrive = statements('RedriveRole').find((s) => s.actions.includes('sqs:ReceiveMessage'))!;
    assert.match(redrive.resource, /RouteDeadLetterQueue/);
    // Only redrive may scan the index (its from: "index" form), and only the index.
    assert.match(statements('RedriveRole').find((s) => s.actions.includes('dynamodb:Scan'))!.resource, /IndexTable/);
    assert.ok(!statements('IngestRole').concat(statements('RouteRole')).some((s) => s.actions.includes('dynamodb:Scan')), 'only redrive scans');
  });

  test('every AWS call in src/functions is allowed to some function role (a command added without its permission fails here)', async () => {
    const { readdir } = await import('node:fs/promises');
    const dir = path.join(root, 'src', 'functions');
    const needed = new Set<string>();
    const service: Record<string, string> = { 'client-s3': 's3', 'client-sqs': 'sqs', 'client-dynamodb': 'dynamodb', 'client-ssm': 'ssm' };
    for (const f of await readdir(dir)) {
      const text = await readFile(path.join(dir, f), 'utf8');
      const commands = new Map<string, string>();
      for (const m of text.matchAll(/import \{([^}]+)\} from '@aws-sdk\/(client-[a-z0-9]+)'/g)) {
        for (const name of m[1]!.split(',').map((n) => n.trim().replace(/^type /, ''))) if (name.endsWith('Command')) commands.set(name, service[m[2]!]!);
      }
      for (const m of text.matchAll(/new (\w+Command)\(/g)) {
        const svc = commands.get(m[1]!);
        assert.ok(svc, `${f}: ${m[1]} from an unknown client`);
        // Batch commands are authorised by the single action.
        needed.add(`${svc}:${m[1]!.replace(/Command$/, '').replace(/Batch$/, '')}`);
      }
      if (/new Upload\(/.test(text)) ['s3:PutObject', 's3:AbortMultipartUpload'].forEach((a) => needed.add(a));
    }
    assert.ok(needed.size >= 10, `found ${needed.size} calls`);
    const granted = new Set(
      ['IngestRole', 'RouteRole', 'RedriveRole'].flatMap((r) => (res(r).Properties.Policies as Json[]).flatMap((p) => (p.PolicyDocument.Statement as Json[]).flatMap((st) => [st.Action].flat()))),
    );
    for (const a of needed) assert.ok(granted.has(a), `${a} is called but no role allows it`);
  });

  test('bucket encrypted, private, TLS only, with retention and incomplete uploads aborted; table with TTL and encryption', () => {
    const b = res('MessagesBucket').Properties;
    assert.equal(b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, 'AES256');
    assert.deepEqual(b.PublicAccessBlockConfiguration, { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true });
    const rules = b.LifecycleConfiguration.Rules as Json[];
    assert.equal(rules.find((r) => r.Prefix === 'messages/')?.ExpirationInDays, 30);
    assert.equal(rules.find((r) => r.AbortIncompleteMultipartUpload)?.AbortIncompleteMultipartUpload.DaysAfterInitiation, 1);
    const deny = res('MessagesBucketTlsOnly').Properties.PolicyDocument.Statement[0];
    assert.equal(deny.Effect, 'Deny');
    assert.deepEqual(deny.Condition, { Bool: { 'aws:SecureTransport': 'false' } });
    // The mail outlives the stack: npm run remove keeps both unless --delete-data (scripts/deploy.mjs).
    for (const name of ['MessagesBucket', 'IndexTable']) {
      assert.equal(res(name).DeletionPolicy, 'Retain', name);
      assert.equal(res(name).UpdateReplacePolicy, 'Retain', name);
    }
    const t = res('IndexTable').Properties;
    assert.deepEqual(t.TimeToLiveSpecification, { AttributeName: 'expiresAt', Enabled: true });
    assert.equal(t.SSESpecification.SSEEnabled, true);
    assert.deepEqual(t.KeySchema, [{ AttributeName: 'id', KeyType: 'HASH' }]);
  });

  test('routing queue: dead-letter queue after maxAttempts, visibility six times route\'s timeout, partial batch responses', () => {
    const q = res('RouteQueue').Properties;
    assert.deepEqual(q.RedrivePolicy, { deadLetterTargetArn: { 'Fn::GetAtt': ['RouteDeadLetterQueue', 'Arn'] }, maxReceiveCount: 8 });
    assert.equal(q.VisibilityTimeout, 6 * res('RouteLambdaFunction').Properties.Timeout);
    assert.equal(q.SqsManagedSseEnabled, true);
    const mapping = resources('AWS::Lambda::EventSourceMapping')[0]?.[1];
    assert.deepEqual(mapping!.Properties.FunctionResponseTypes, ['ReportBatchItemFailures']);
    assert.deepEqual(mapping!.Properties.EventSourceArn, { 'Fn::GetAtt': ['RouteQueue', 'Arn'] });
    // Both queues refuse requests without TLS (cdk-nag AwsSolutions-SQS4, infra/test/functions-nag.test.ts).
    const tls = res('RouteQueuesTlsOnly').Properties;
    assert.deepEqual(tls.Queues, [{ Ref: 'RouteQueue' }, { Ref: 'RouteDeadLetterQueue' }]);
    assert.deepEqual(tls.PolicyDocument.Statement[0].Condition, { Bool: { 'aws:SecureTransport': 'false' } });
    assert.equal(tls.PolicyDocument.Statement[0].Effect, 'Deny');
  });

  test('every export the edge stack (infra/) imports is exported, under the name it imports', async () => {
    const stack = await readFile(path.join(root, 'infra', 'lib', 'edge-stack.ts'), 'utf8');
    const imported = [...stack.matchAll(/exp\('([A-Za-z]+)'\)/g)].map((m) => m[1]!);
    assert.ok(imported.length >= 3, 'edge-stack.ts imports exports through exp(...)');
    const exported = Object.values(template.Outputs as Json)
      .map((o) => o.Export?.Name)
      .filter(Boolean);
    for (const name of imported) assert.ok(exported.includes(`postgate-ci-${name}`), `postgate-ci-${name} is not exported`);
  });

  test('artifacts: one bundle per function with the routes file, no node_modules', async () => {
    for (const fn of ['ingest', 'route', 'redrive']) {
      const zip = await readFile(path.join(dir, `${fn}.zip`));
      // File names are stored uncompressed in a zip's headers.
      assert.ok(zip.includes(`src/functions/${fn}.mjs`), `${fn}.zip lacks its bundle`);
      assert.ok(zip.includes('deploy/functions.yaml'), `${fn}.zip lacks the routes file`);
      assert.ok(!zip.includes('node_modules/'), `${fn}.zip ships node_modules`);
    }
  });

  test('the shipped routes file loads as the functions load it; missing settings are reported together', async () => {
    const env = { MAIL_DOMAIN: 'example.com', DOWNSTREAM_URL: 'https://app.example.com/inbound', DOWNSTREAM_SECRET: 'whsec_cGFja2FnZS1jaGVjay1kb3duc3RyZWFt' };
    const cfg = await loadRoutes(path.join(root, 'deploy', 'functions.yaml'), env);
    assert.equal(cfg.routes.length, 1);
    assert.equal(cfg.routes[0]!.targets[0]!.type, 'webhook');
    assert.throws(
      () => readSettings({ POSTGATE_BUCKET: 'b', POSTGATE_INGEST_SECRETS: 'nope', POSTGATE_RETRY_BASE: '-1' }),
      (err: Error & { code?: string }) =>
        err.code === 'PG_FN_CONFIG' &&
        /POSTGATE_TABLE is not set/.test(err.message) &&
        /POSTGATE_QUEUE is not set/.test(err.message) &&
        /whsec_/.test(err.message) &&
        /POSTGATE_RETRY_BASE/.test(err.message),
    );
    // A route to anything but webhooks is refused: the functions deliver to webhooks only.
    const file = path.join(dir, 'lambda-routes.yaml');
    await writeFile(file, 'routes:\n  - recipients: ["*@example.com"]\n    targets:\n      - type: lambda\n        functionName: f\n');
    await assert.rejects(loadRoutes(file, {}), (err: Error & { code?: string }) => err.code === 'PG_FN_CONFIG' && /webhooks only/.test(err.message));
  });
});
