/**
 * Assertions on the synthesised edge template (offline, no credentials).
 * One synth per configuration: each takes seconds on a small machine.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { EdgeStack, REPO_ROOT, type EdgeStackProps } from '../lib/edge-stack.js';
import { readEdgeConfig } from '../lib/edge-config.js';
import * as C from '../lib/constants.js';

type Res = { Type: string; Properties: Record<string, any> };

/** A configuration with submission and smtps listeners, as an operator with a certificate writes it. */
const SUBMISSION_CONFIG = 'infra/test/fixtures/edge-submission.yaml';

function synth(opts: Partial<EdgeStackProps> = {}): Template {
  const app = new App({ context: { stage: 'test' } });
  const stack = new EdgeStack(app, `edge-${app.node.addr}`, {
    stage: 'test',
    mailDomain: 'example.com',
    submission: false,
    env: { account: '123456789012', region: 'us-east-1' },
    ...opts,
  });
  return Template.fromStack(stack);
}

const full = synth({ submission: true, configFile: SUBMISSION_CONFIG, alarmEmail: 'ops@example.com' });
const mxOnly = synth();
/** The shipped configuration, as the stack reads it. */
const shipped = readEdgeConfig(REPO_ROOT, 'deploy/edge.yaml');
const OPS_PORT = shipped.opsPort;
const MX_PORT = shipped.listeners.find((l) => l.role === 'mx')!.containerPort;

/** The container's environment. */
const env = (t: Template) => ofType(t, 'AWS::ECS::TaskDefinition')[0]!.Properties.ContainerDefinitions[0].Environment as { Name: string; Value: unknown }[];

function ofType(t: Template, type: string): Res[] {
  return Object.values(t.findResources(type)) as Res[];
}

test('the NLB publishes exactly the listeners of the configuration: 25 -> 2525 as shipped, 587 and 465 only with such listeners', () => {
  const listeners = ofType(full, 'AWS::ElasticLoadBalancingV2::Listener');
  const tgs = full.findResources('AWS::ElasticLoadBalancingV2::TargetGroup');
  const map = new Map<number, number>();
  for (const l of listeners) {
    assert.equal(l.Properties.Protocol, 'TCP');
    const tgRef = l.Properties.DefaultActions[0].TargetGroupArn.Ref as string;
    map.set(l.Properties.Port, tgs[tgRef]!.Properties.Port);
  }
  assert.deepEqual([...map.entries()].sort((a, b) => a[0] - b[0]), [[25, 2525], [465, 2465], [587, 2587]]);
  for (const containerPort of map.values()) assert.ok(containerPort >= 1024, 'non-root cannot bind below 1024');
  // deploy/edge.yaml has one mx listener: only port 25 is published, to the file's port.
  assert.deepEqual(shipped.listeners.map((l) => [l.role, l.publicPort, l.containerPort]), [['mx', 25, MX_PORT]]);
  const shippedListeners = ofType(mxOnly, 'AWS::ElasticLoadBalancingV2::Listener');
  assert.deepEqual(shippedListeners.map((l) => l.Properties.Port), [25]);
  assert.deepEqual(ofType(mxOnly, 'AWS::ElasticLoadBalancingV2::TargetGroup').map((t) => t.Properties.Port), [MX_PORT]);
  // The container declares the same ports, and the configuration it runs is the one read.
  const td = ofType(full, 'AWS::ECS::TaskDefinition')[0]!;
  const ports = td.Properties.ContainerDefinitions[0].PortMappings.map((p: any) => p.ContainerPort).sort();
  assert.deepEqual(ports, [2465, 2525, 2587, OPS_PORT].sort());
  assert.equal(env(full).find((e) => e.Name === 'POSTGATE_CONFIG')?.Value, `/app/${SUBMISSION_CONFIG}`);
  assert.equal(env(mxOnly).find((e) => e.Name === 'POSTGATE_CONFIG')?.Value, '/app/deploy/edge.yaml');
  assert.deepEqual(ofType(mxOnly, 'AWS::ECS::TaskDefinition')[0]!.Properties.ContainerDefinitions[0].PortMappings.map((p: any) => p.ContainerPort).sort(), [MX_PORT, OPS_PORT].sort());
});

test('-c submission=true without submission and smtps listeners fails synth instead of publishing dead ports', () => {
  assert.throws(() => synth({ submission: true }), (err: Error) => /submission=true: deploy\/edge\.yaml has no submission or smtps listener/.test(err.message) && /587 and 465/.test(err.message) && /tls\.certificates and auth\.users/.test(err.message));
});

test('a configuration the NLB cannot serve is refused at synth: a listener without PROXY protocol, a port below 1024, a file outside the repository', () => {
  const dir = path.join(REPO_ROOT, 'infra', 'dist', 'test-configs');
  mkdirSync(dir, { recursive: true });
  const write = (name: string, text: string) => {
    writeFileSync(path.join(dir, name), text);
    return path.relative(REPO_ROOT, path.join(dir, name));
  };
  const noProxy = write('no-proxy.yaml', 'listeners:\n  - role: mx\n    listen: 0.0.0.0:2525\nhttp:\n  listen: 0.0.0.0:9025\n');
  assert.throws(() => readEdgeConfig(REPO_ROOT, noProxy), /no proxyProtocol/);
  const low = write('low.yaml', 'listeners:\n  - role: mx\n    listen: 0.0.0.0:25\n    proxyProtocol: { trustedSources: ["10.0.0.0/8"] }\nhttp:\n  listen: 0.0.0.0:9025\n');
  assert.throws(() => readEdgeConfig(REPO_ROOT, low), /below 1024/);
  const none = write('none.yaml', 'http:\n  listen: 0.0.0.0:9025\n');
  assert.throws(() => readEdgeConfig(REPO_ROOT, none), /has none/);
  assert.throws(() => readEdgeConfig(REPO_ROOT, '../elsewhere.yaml'), /inside the repository/);
});

test('the baked-in config listens on 0.0.0.0:2525 with PROXY protocol and serves /readyz on the ops port', () => {
  const yaml = readFileSync(path.join(REPO_ROOT, 'deploy', 'edge.yaml'), 'utf8');
  assert.match(yaml, new RegExp(`listen: 0\\.0\\.0\\.0:${MX_PORT}\\b`));
  assert.match(yaml, new RegExp(`listen: 0\\.0\\.0\\.0:${OPS_PORT}\\b`));
  // The VPC range (the NLB's nodes) and loopback (the container's SMTP health check) only.
  assert.match(yaml, /proxyProtocol:\s*\n(?:\s*#[^\n]*\n)*\s*trustedSources: \["\$\{TRUSTED_PROXY_CIDR\}", "127\.0\.0\.1\/32"\]/);
  const env = ofType(full, 'AWS::ECS::TaskDefinition')[0]!.Properties.ContainerDefinitions[0].Environment as { Name: string; Value: unknown }[];
  assert.deepEqual(env.find((e) => e.Name === 'TRUSTED_PROXY_CIDR')?.Value, C.VPC_CIDR);
  assert.equal(ofType(full, 'AWS::EC2::VPC')[0]!.Properties.CidrBlock, C.VPC_CIDR);
});

test('every target group has PROXY protocol v2 enabled', () => {
  for (const t of [full, mxOnly]) {
    const tgs = ofType(t, 'AWS::ElasticLoadBalancingV2::TargetGroup');
    assert.ok(tgs.length >= 1);
    for (const tg of tgs) {
      const attrs = Object.fromEntries((tg.Properties.TargetGroupAttributes as { Key: string; Value: string }[]).map((a) => [a.Key, a.Value]));
      assert.equal(attrs['proxy_protocol_v2.enabled'], 'true', `target group on ${tg.Properties.Port}`);
      assert.equal(attrs['preserve_client_ip.enabled'], 'false', 'the client address travels in the PROXY header');
    }
  }
  assert.equal(ofType(full, 'AWS::ElasticLoadBalancingV2::TargetGroup').length, 3);
});

test('health checks are HTTP GET /readyz on the ops port, not a bare TCP connect', () => {
  for (const tg of ofType(full, 'AWS::ElasticLoadBalancingV2::TargetGroup')) {
    assert.equal(tg.Properties.HealthCheckProtocol, 'HTTP');
    assert.equal(tg.Properties.HealthCheckPort, String(OPS_PORT));
    assert.equal(tg.Properties.HealthCheckPath, '/readyz');
    assert.equal(tg.Properties.Matcher?.HttpCode, '200');
  }
  const yaml = readFileSync(path.join(REPO_ROOT, 'deploy', 'edge.yaml'), 'utf8');
  assert.match(yaml, /http:\s*\n(?:\s*#[^\n]*\n)*\s*listen: 0\.0\.0\.0:9025/);
});

test('deregistration delay <= stopTimeout <= 120 s, and stopTimeout covers the deadline plus the drain', () => {
  const yaml = readFileSync(path.join(REPO_ROOT, 'deploy', 'edge.yaml'), 'utf8');
  // The constants must match what the container is configured with.
  assert.match(yaml, new RegExp(`deadline: ${C.DELIVERY_DEADLINE_SECONDS}s\\b`));
  assert.match(yaml, new RegExp(`grace: ${C.SHUTDOWN_GRACE_SECONDS}s\\b`));
  const stopTimeout = ofType(full, 'AWS::ECS::TaskDefinition')[0]!.Properties.ContainerDefinitions[0].StopTimeout as number;
  assert.equal(stopTimeout, C.STOP_TIMEOUT_SECONDS);
  assert.ok(stopTimeout <= C.MAX_STOP_TIMEOUT_SECONDS);
  assert.ok(stopTimeout >= C.DELIVERY_DEADLINE_SECONDS + C.DRAIN_MARGIN_SECONDS);
  assert.ok(stopTimeout > C.SHUTDOWN_GRACE_SECONDS, 'a stop timeout shorter than shutdown.grace cuts the drain short');
  for (const tg of ofType(full, 'AWS::ElasticLoadBalancingV2::TargetGroup')) {
    const attrs = Object.fromEntries((tg.Properties.TargetGroupAttributes as { Key: string; Value: string }[]).map((a) => [a.Key, a.Value]));
    const dereg = Number(attrs['deregistration_delay.timeout_seconds']);
    assert.equal(dereg, C.DEREGISTRATION_DELAY_SECONDS);
    assert.ok(dereg <= stopTimeout);
    assert.ok(dereg >= C.DELIVERY_DEADLINE_SECONDS, 'an open transaction must reach its reply before the flow is cut');
  }
});

test('security groups: the internet reaches only the SMTP ports on the NLB; tasks accept only the NLB', () => {
  const sgs = full.findResources('AWS::EC2::SecurityGroup');
  const ingress: { group: string; from: number; to: number; cidr?: string; source?: string }[] = [];
  for (const [id, sg] of Object.entries(sgs)) {
    for (const r of (sg.Properties.SecurityGroupIngress ?? []) as any[]) ingress.push({ group: id, from: r.FromPort, to: r.ToPort, cidr: r.CidrIp, source: r.SourceSecurityGroupId?.['Fn::GetAtt']?.[0] });
  }
  for (const [, r] of Object.entries(full.findResources('AWS::EC2::SecurityGroupIngress'))) {
    const p = r.Properties;
    ingress.push({ group: p.GroupId['Fn::GetAtt'][0], from: p.FromPort, to: p.ToPort, cidr: p.CidrIp, source: p.SourceSecurityGroupId?.['Fn::GetAtt']?.[0] });
  }
  const open = ingress.filter((r) => r.cidr === '0.0.0.0/0');
  assert.deepEqual(open.map((r) => r.from).sort((a, b) => a - b), [25, 465, 587]);
  for (const r of open) assert.equal(r.from, r.to, 'single ports, no ranges');
  const nlbSg = open[0]!.group;
  assert.ok(open.every((r) => r.group === nlbSg));
  const taskRules = ingress.filter((r) => r.group !== nlbSg);
  assert.ok(taskRules.length > 0);
  for (const r of taskRules) {
    assert.equal(r.source, nlbSg, 'task ingress only from the NLB security group');
    assert.equal(r.cidr, undefined);
    assert.equal(r.from, r.to);
  }
  assert.deepEqual(taskRules.map((r) => r.from).sort((a, b) => a - b), [2465, 2525, 2587, OPS_PORT]);
  const svc = ofType(full, 'AWS::ECS::Service')[0]!;
  assert.equal(svc.Properties.NetworkConfiguration.AwsvpcConfiguration.AssignPublicIp, 'DISABLED');
});

/** The task role's statements, normalised. */
function taskStatements(t: Template) {
  const td = ofType(t, 'AWS::ECS::TaskDefinition')[0]!;
  const taskRoleId = td.Properties.TaskRoleArn['Fn::GetAtt'][0] as string;
  const policies = ofType(t, 'AWS::IAM::Policy').filter((p) => (p.Properties.Roles as any[]).some((r) => r.Ref === taskRoleId));
  const statements = policies.flatMap((p) => p.Properties.PolicyDocument.Statement as any[]);
  return statements.map((s) => ({ effect: s.Effect, actions: [s.Action].flat().sort(), resources: [s.Resource].flat() }));
}

test('task role: lambda:InvokeFunction on the ingest function, s3 Get/Put under the blob prefix, GetObject on the certificate bundle of the configuration, nothing else', () => {
  const td = ofType(full, 'AWS::ECS::TaskDefinition')[0]!;
  const taskRoleId = td.Properties.TaskRoleArn['Fn::GetAtt'][0] as string;
  const norm = taskStatements(full);
  assert.equal(norm.length, 3, JSON.stringify(norm));
  const invoke = norm.find((s) => s.actions.includes('lambda:InvokeFunction'))!;
  assert.deepEqual(invoke.actions, ['lambda:InvokeFunction']);
  assert.deepEqual(invoke.resources, [{ 'Fn::ImportValue': 'postgate-test-IngestFunctionArn' }]);
  // tls.certificates[].source of the submission configuration: that one object, read only.
  const cert = norm.find((s) => s.actions.length === 1 && s.actions[0] === 's3:GetObject')!;
  assert.deepEqual(cert.resources, [{ 'Fn::Join': ['', [{ 'Fn::ImportValue': 'postgate-test-BucketArn' }, '/tls/mx.example.com.pem']] }]);
  assert.equal(taskStatements(mxOnly).length, 2, 'no certificate source, no read permission for one');
  const s3 = norm.find((s) => s.actions.includes('s3:PutObject'))!;
  assert.deepEqual(s3.actions, ['s3:GetObject', 's3:PutObject']);
  assert.deepEqual(s3.resources, [{ 'Fn::Join': ['', [{ 'Fn::ImportValue': 'postgate-test-BucketArn' }, `/${C.BLOB_PREFIX}*`]] }]);
  for (const s of norm) {
    assert.equal(s.effect, 'Allow');
    for (const r of s.resources) assert.notEqual(r, '*');
  }
  // No managed policies on the task role.
  const role = full.findResources('AWS::IAM::Role')[taskRoleId]!;
  assert.equal(role.Properties.ManagedPolicyArns, undefined);
  assert.deepEqual(role.Properties.AssumeRolePolicyDocument.Statement[0].Principal, { Service: 'ecs-tasks.amazonaws.com' });
});

test('a certificate in Secrets Manager (through Parameter Store): the task may read that parameter and that secret only', () => {
  const t = synth({ configFile: 'infra/test/fixtures/edge-tls-secret.yaml' });
  const norm = taskStatements(t);
  assert.equal(norm.length, 4, JSON.stringify(norm));
  const ssm = norm.find((s) => s.actions.includes('ssm:GetParameter'))!;
  assert.deepEqual(ssm.actions, ['ssm:GetParameter']);
  assert.match(JSON.stringify(ssm.resources), /:ssm:us-east-1:123456789012:parameter\/aws\/reference\/secretsmanager\/postgate\/prod\/mx-tls"/);
  const secret = norm.find((s) => s.actions.includes('secretsmanager:GetSecretValue'))!;
  assert.deepEqual(secret.actions, ['secretsmanager:GetSecretValue']);
  assert.match(JSON.stringify(secret.resources), /:secretsmanager:us-east-1:123456789012:secret:postgate\/prod\/mx-tls-\?{6}"/);
});

test('-c configObject: the task reads its configuration from that key of the bucket (and may read nothing else there but blobs)', () => {
  const t = synth({ configObject: 'config/edge.yaml' });
  assert.deepEqual(env(t).find((e) => e.Name === 'POSTGATE_CONFIG')?.Value, { 'Fn::Join': ['', ['s3://', { 'Fn::ImportValue': 'postgate-test-BucketName' }, '/config/edge.yaml']] });
  const norm = taskStatements(t);
  assert.equal(norm.length, 3, JSON.stringify(norm));
  const read = norm.find((s) => s.actions.join() === 's3:GetObject')!;
  assert.deepEqual(read.resources, [{ 'Fn::Join': ['', [{ 'Fn::ImportValue': 'postgate-test-BucketArn' }, '/config/edge.yaml']] }]);
  // A deploy of a changed file restarts the tasks (a new task definition).
  const hash = (cfgFile: string) => env(synth({ configObject: 'config/edge.yaml', ...(cfgFile ? { configFile: cfgFile } : {}) })).find((e) => e.Name === 'EDGE_CONFIG_SHA256')?.Value;
  assert.match(String(hash('')), /^[0-9a-f]{64}$/);
  assert.notEqual(hash(''), hash('infra/test/fixtures/edge-tls-secret.yaml'));
  assert.equal(env(mxOnly).find((e) => e.Name === 'EDGE_CONFIG_SHA256'), undefined);
  assert.throws(() => synth({ configObject: '../other' }), /a key under config\//);
});

test('a certificate source the stack cannot grant is refused at synth', () => {
  const dir = path.join(REPO_ROOT, 'infra', 'dist', 'test-configs');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'other-bucket.yaml');
  writeFileSync(
    file,
    'listeners:\n  - role: mx\n    listen: 0.0.0.0:2525\n    proxyProtocol: { trustedSources: ["10.0.0.0/8"] }\nhttp:\n  listen: 0.0.0.0:9025\n' +
      'tls:\n  certificates:\n    - source: { type: s3, bucket: someone-elses, key: mx.pem }\n',
  );
  assert.throws(() => readEdgeConfig(REPO_ROOT, path.relative(REPO_ROOT, file)), /tls\.certificates\[0\]\.source: bucket must be "\$\{BLOB_BUCKET\}"/);
});

test('the serverless stack is referenced by its exports only', () => {
  const body = JSON.stringify(full.toJSON());
  const imports = [...body.matchAll(/"Fn::ImportValue":"([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual([...new Set(imports)].sort(), ['postgate-test-BucketArn', 'postgate-test-BucketName', 'postgate-test-IngestFunctionArn']);
});

test('encryption: logs with a rotating KMS key; the blob signing key from Secrets Manager, not the template', () => {
  const groups = ofType(full, 'AWS::Logs::LogGroup');
  assert.equal(groups.length, 2, 'the tasks\' log and the rejected-flows log');
  for (const lg of groups) assert.ok(lg.Properties.KmsKeyId?.['Fn::GetAtt'], 'log group encrypted with the stack key');
  const flowLogs = ofType(full, 'AWS::EC2::FlowLog');
  assert.deepEqual(flowLogs.map((f) => f.Properties.TrafficType), ['REJECT']);
  const keys = ofType(full, 'AWS::KMS::Key');
  assert.equal(keys.length, 1);
  assert.equal(keys[0]!.Properties.EnableKeyRotation, true);
  const c = ofType(full, 'AWS::ECS::TaskDefinition')[0]!.Properties.ContainerDefinitions[0];
  const secret = (c.Secrets as any[]).find((s) => s.Name === 'BLOB_SIGNING_KEY');
  assert.ok(secret, 'signing key injected as an ECS secret');
  assert.ok(JSON.stringify(secret.ValueFrom).includes('BLOB_SIGNING_KEY'));
  assert.ok(!(c.Environment as any[]).some((e) => e.Name === 'BLOB_SIGNING_KEY'), 'never a plain environment variable');
  assert.equal(ofType(full, 'AWS::SecretsManager::Secret').length, 1);
  // The execution role (not the task role) reads the secret.
  const execRoleId = ofType(full, 'AWS::ECS::TaskDefinition')[0]!.Properties.ExecutionRoleArn['Fn::GetAtt'][0];
  const execStatements = ofType(full, 'AWS::IAM::Policy')
    .filter((p) => (p.Properties.Roles as any[]).some((r) => r.Ref === execRoleId))
    .flatMap((p) => p.Properties.PolicyDocument.Statement as any[]);
  assert.ok(execStatements.some((s) => [s.Action].flat().includes('secretsmanager:GetSecretValue')));
});

test('autoscaling on CPU and on connections per task; alarms on 4xx and 5xx reply rates', () => {
  const policies = ofType(full, 'AWS::ApplicationAutoScaling::ScalingPolicy');
  const tt = policies.find((p) => p.Properties.PolicyType === 'TargetTrackingScaling')!;
  assert.equal(tt.Properties.TargetTrackingScalingPolicyConfiguration.PredefinedMetricSpecification.PredefinedMetricType, 'ECSServiceAverageCPUUtilization');
  assert.equal(tt.Properties.TargetTrackingScalingPolicyConfiguration.TargetValue, C.TARGET_CPU_PERCENT);
  assert.ok(policies.some((p) => p.Properties.PolicyType === 'StepScaling'));
  const alarms = ofType(full, 'AWS::CloudWatch::Alarm');
  assert.ok(alarms.some((a) => JSON.stringify(a.Properties.Metrics ?? []).includes('ActiveFlowCount')), 'connection-count scaling alarm');
  const filters = ofType(full, 'AWS::Logs::MetricFilter').map((f) => f.Properties.FilterPattern as string);
  assert.ok(filters.some((f) => f.includes('"4*"')));
  assert.ok(filters.some((f) => f.includes('"5*"')));
  const replyAlarms = alarms.filter((a) => /Replies[45]xx/.test(JSON.stringify(a.Properties.Metrics ?? [])));
  assert.equal(replyAlarms.length, 2);
});

test('the Dockerfile runs as non-root and exposes the ports the stack routes to', () => {
  const df = readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8');
  const lines = df.split('\n').filter((l) => l && !l.startsWith('#'));
  const froms = lines.filter((l) => l.startsWith('FROM '));
  assert.ok(froms.length >= 2, 'multi-stage');
  for (const f of froms) {
    const major = Number(/node:(\d+)/.exec(f)?.[1]);
    assert.ok(major >= 22, `Node 22+ base: ${f}`);
  }
  const userAt = lines.findIndex((l) => l.trim() === 'USER node');
  const cmdAt = lines.findIndex((l) => l.startsWith('CMD '));
  assert.ok(userAt > lines.lastIndexOf(froms.at(-1)!) && userAt < cmdAt, 'USER node in the runtime stage, before CMD');
  assert.equal(lines[cmdAt], 'CMD ["node", "dist/src/cli/index.js", "serve"]');
  const exposed = lines.filter((l) => l.startsWith('EXPOSE ')).flatMap((l) => l.slice(7).trim().split(/\s+/)).map(Number).sort();
  assert.deepEqual(exposed, [MX_PORT, OPS_PORT].sort());
  assert.ok(lines.some((l) => l === 'ENV POSTGATE_CONFIG=/app/deploy/edge.yaml'));
  assert.ok(/npm ci --omit=dev/.test(df), 'runtime stage installs production dependencies only');
  // cdk synth stages the build context; without these it would copy
  // node_modules and its own output (cdk.out) into itself.
  const ignore = readFileSync(path.join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
  for (const entry of ['**/node_modules', 'infra', '.git']) assert.ok(ignore.includes(entry), `.dockerignore lists ${entry}`);
});

const attrsOf = (tg: Res) => Object.fromEntries((tg.Properties.TargetGroupAttributes as { Key: string; Value: string }[]).map((a) => [a.Key, a.Value]));

test('an unhealthy target keeps its open flows for the drain instead of having them reset, within the stop timeout', () => {
  const stopTimeout = ofType(full, 'AWS::ECS::TaskDefinition')[0]!.Properties.ContainerDefinitions[0].StopTimeout as number;
  for (const t of [full, mxOnly]) {
    for (const tg of ofType(t, 'AWS::ElasticLoadBalancingV2::TargetGroup')) {
      const attrs = attrsOf(tg);
      // /readyz turns 503 while shedding load: by default the NLB would then reset every flow, in-DATA transactions included.
      assert.equal(attrs['target_health_state.unhealthy.connection_termination.enabled'], 'false', `target group on ${tg.Properties.Port}`);
      const draining = Number(attrs['target_health_state.unhealthy.draining_interval_seconds']);
      assert.equal(draining, C.UNHEALTHY_DRAINING_SECONDS);
      assert.ok(draining >= C.DELIVERY_DEADLINE_SECONDS, 'a transaction in DATA reaches its reply before the flow is cut');
      assert.ok(draining <= stopTimeout);
    }
  }
});

test('the container health check speaks SMTP to the mx port (the NLB checks /readyz); the probe ships in the image', () => {
  const c = ofType(mxOnly, 'AWS::ECS::TaskDefinition')[0]!.Properties.ContainerDefinitions[0];
  assert.deepEqual(c.HealthCheck.Command, ['CMD', 'node', '/app/deploy/smtp-probe.mjs', String(MX_PORT)]);
  assert.equal(c.HealthCheck.Interval, C.SMTP_PROBE_INTERVAL_SECONDS);
  assert.ok(c.HealthCheck.Timeout < c.HealthCheck.Interval);
  assert.ok(c.HealthCheck.Retries >= 2, 'one slow answer does not replace a task');
  // The probe is in deploy/, which the Dockerfile copies to /app/deploy.
  const probe = readFileSync(path.join(REPO_ROOT, 'deploy', 'smtp-probe.mjs'), 'utf8');
  assert.match(probe, /\b220\|421\b/);
  assert.ok(readFileSync(path.join(REPO_ROOT, 'Dockerfile'), 'utf8').includes('COPY deploy ./deploy'));
});

test('every alarm but the scaling ones notifies the alarm topic; the topic is encrypted and TLS-only; the email is subscribed only when given', () => {
  for (const [t, email] of [[full, true], [mxOnly, false]] as const) {
    const topics = t.findResources('AWS::SNS::Topic');
    assert.equal(Object.keys(topics).length, 1);
    const [topicId, topic] = Object.entries(topics)[0]!;
    assert.ok(topic.Properties.KmsMasterKeyId, 'encrypted with the stack key (CloudWatch cannot publish to an aws/sns-encrypted topic)');
    const subs = ofType(t, 'AWS::SNS::Subscription');
    assert.deepEqual(subs.map((s) => [s.Properties.Protocol, s.Properties.Endpoint]), email ? [['email', 'ops@example.com']] : []);
    const policy = ofType(t, 'AWS::SNS::TopicPolicy')[0]!;
    assert.ok(JSON.stringify(policy.Properties.PolicyDocument).includes('aws:SecureTransport'));
    const scalingPolicies = new Set(Object.keys(t.findResources('AWS::ApplicationAutoScaling::ScalingPolicy')));
    const alarms = ofType(t, 'AWS::CloudWatch::Alarm').filter((a) => !(a.Properties.AlarmActions as { Ref?: string }[]).some((x) => scalingPolicies.has(x.Ref ?? '')));
    assert.ok(alarms.length >= 3, 'the 4xx and 5xx reply rates, no healthy task');
    for (const a of alarms) {
      assert.deepEqual(a.Properties.AlarmActions, [{ Ref: topicId }], a.Properties.AlarmDescription);
      assert.deepEqual(a.Properties.OKActions, [{ Ref: topicId }]);
    }
    assert.ok(alarms.some((a) => a.Properties.MetricName === 'HealthyHostCount' && a.Properties.ComparisonOperator === 'LessThanThreshold'));
    // CloudWatch may use the key to publish.
    const key = ofType(t, 'AWS::KMS::Key')[0]!;
    assert.ok(JSON.stringify(key.Properties.KeyPolicy).includes('cloudwatch.amazonaws.com'));
  }
});
