/**
 * The SMTP edge on AWS: ECS Fargate tasks running the project's Dockerfile
 * behind a network load balancer. The bucket and the ingest function belong
 * to the serverless stack and are imported by their CloudFormation exports.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArnFormat, Duration, Fn, RemovalPolicy, Stack, type StackProps, CfnOutput } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import { Construct } from 'constructs';
import * as C from './constants.js';
import { checkSubmission, readEdgeConfig } from './edge-config.js';
import { acknowledgeEdgeFindings } from './nag.js';

/** The repository root: the Docker build context of the image. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface EdgeStackProps extends StackProps {
  /** Stage of the serverless stack whose exports are imported ("prod"). */
  stage: string;
  /** Mail domain the edge accepts (recipients *@domain). */
  mailDomain: string;
  /**
   * The configuration baked into the image, relative to the repository root
   * (default deploy/edge.yaml). Its listeners decide the NLB's ports.
   */
  configFile?: string;
  /**
   * Insist on 587 (submission) and 465 (smtps): synth fails unless the
   * configuration has those listeners (they need TLS and AUTH users).
   */
  submission: boolean;
  /** Subscribed by email to the alarm topic; the topic exists either way. */
  alarmEmail?: string;
  /**
   * A key of the stack's bucket (config/edge.yaml) the task reads its
   * configuration from instead of the file in the image, and polls for new
   * routes (docs/operations.md, "Configuration reload"). The file in the
   * repository still decides the NLB's ports: keep the object's listeners
   * the same (a change of listeners needs a deploy either way).
   */
  configObject?: string;
}

/** Construct id of a role's listener and target group ("Smtp" keeps the mx ids of earlier deploys). */
const ID_BY_ROLE = { mx: 'Smtp', submission: 'Submission', smtps: 'Smtps' } as const;

export class EdgeStack extends Stack {
  constructor(scope: Construct, id: string, props: EdgeStackProps) {
    super(scope, id, props);
    const exp = (name: string) => Fn.importValue(`postgate-${props.stage}-${name}`);
    const bucketArn = exp('BucketArn');
    const bucketName = exp('BucketName');
    const ingestFunctionArn = exp('IngestFunctionArn');
    const config = readEdgeConfig(REPO_ROOT, props.configFile ?? 'deploy/edge.yaml');
    checkSubmission(config, props.submission);
    const ports = config.listeners.map((l) => ({ ...l, id: ID_BY_ROLE[l.role] }));
    const mx = ports.find((p) => p.role === 'mx');
    if (!mx) throw new Error(`${config.file}: no mx listener, so nothing would receive mail on port 25`);

    // Two AZs, public subnets for the NLB, private subnets with one NAT gateway
    // for the tasks' outbound HTTPS (Lambda, S3, image pulls).
    const vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr(C.VPC_CIDR),
      maxAzs: 2,
      natGateways: 1,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
      ],
    });
    // S3 traffic stays off the NAT gateway (no per-GB NAT processing charge).
    vpc.addGatewayEndpoint('S3Endpoint', { service: ec2.GatewayVpcEndpointAwsService.S3 });

    const logKey = new kms.Key(this, 'LogKey', {
      enableKeyRotation: true,
      description: 'postgate edge log group and alarm topic encryption',
    });
    // CloudWatch Logs must be allowed to use the key
    // (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html).
    logKey.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal(`logs.${this.region}.amazonaws.com`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
      }),
    );
    // CloudWatch alarms publish to the encrypted alarm topic
    // (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html).
    logKey.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
    const logGroup = new logs.LogGroup(this, 'Logs', {
      retention: logs.RetentionDays.ONE_MONTH,
      encryptionKey: logKey,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // Refused packets only: what probes the tasks or the NLB on other ports.
    // Accepted SMTP traffic is in postgate's own log with the real client
    // address, so logging it again per flow would only add ingestion cost.
    vpc.addFlowLog('RejectedFlows', {
      trafficType: ec2.FlowLogTrafficType.REJECT,
      destination: ec2.FlowLogDestination.toCloudWatchLogs(
        new logs.LogGroup(this, 'FlowLogs', { retention: logs.RetentionDays.ONE_MONTH, encryptionKey: logKey, removalPolicy: RemovalPolicy.DESTROY }),
      ),
    });

    // Values the operator keeps out of the template (blob signing key, TLS
    // material for 587/465). Created empty here and filled in by the operator.
    const secret = new secretsmanager.Secret(this, 'EdgeSecrets', {
      description: 'postgate edge secrets: BLOB_SIGNING_KEY (JSON key)',
      generateSecretString: { secretStringTemplate: '{}', generateStringKey: 'BLOB_SIGNING_KEY', excludePunctuation: true, passwordLength: 48 },
    });

    const cluster = new ecs.Cluster(this, 'Cluster', { vpc, containerInsightsV2: ecs.ContainerInsights.ENABLED });

    const taskDef = new ecs.FargateTaskDefinition(this, 'Task', {
      cpu: C.TASK_CPU_UNITS,
      memoryLimitMiB: C.TASK_MEMORY_MIB,
      runtimePlatform: { cpuArchitecture: ecs.CpuArchitecture.ARM64, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
    });

    // Least privilege: invoke the ingest function, read and write blobs under
    // their prefix. Nothing else (asserted in test/stack.test.ts).
    taskDef.taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [ingestFunctionArn] }),
    );
    taskDef.taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({ actions: ['s3:GetObject', 's3:PutObject'], resources: [Fn.join('', [bucketArn, '/', C.BLOB_PREFIX, '*'])] }),
    );

    // A certificate kept in S3 or SSM (tls.certificates[].source of the
    // file): the task reads exactly that object or parameter, and polls it
    // for renewals (docs/deploy.md, "TLS certificate").
    for (const src of config.tlsSources) {
      if (src.type === 's3') {
        taskDef.taskRole.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [Fn.join('', [bucketArn, '/', src.key])] }));
        continue;
      }
      taskDef.taskRole.addToPrincipalPolicy(
        new iam.PolicyStatement({ actions: ['ssm:GetParameter'], resources: [this.formatArn({ service: 'ssm', resource: 'parameter', resourceName: src.parameter.slice(1) })] }),
      );
      if (src.type === 'secret') {
        // Parameter Store reads the secret with the caller's own rights. A
        // secret's ARN ends in "-" and six random characters.
        taskDef.taskRole.addToPrincipalPolicy(
          new iam.PolicyStatement({
            actions: ['secretsmanager:GetSecretValue'],
            resources: [this.formatArn({ service: 'secretsmanager', resource: 'secret', resourceName: `${src.secretName}-??????`, arnFormat: ArnFormat.COLON_RESOURCE_NAME })],
          }),
        );
      }
    }

    if (props.configObject) {
      if (!/^config\/[\w.-]+\.ya?ml$/.test(props.configObject)) throw new Error(`-c configObject=${props.configObject}: a key under config/ of the bucket (config/edge.yaml)`);
      taskDef.taskRole.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [Fn.join('', [bucketArn, '/', props.configObject])] }));
    }

    taskDef.addContainer('edge', {
      image: ecs.ContainerImage.fromAsset(REPO_ROOT, {
        // Built for the task's architecture (Graviton), also on an x86 machine (docker buildx).
        platform: Platform.LINUX_ARM64,
        exclude: ['node_modules', '**/node_modules', 'infra/cdk.out', 'infra/dist', '.git', 'data'],
      }),
      logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: 'edge' }),
      stopTimeout: Duration.seconds(C.STOP_TIMEOUT_SECONDS),
      environment: {
        POSTGATE_CONFIG: props.configObject ? Fn.join('', ['s3://', bucketName, '/', props.configObject]) : `/app/${config.file}`,
        // Read from the bucket, the file is not in the image: this makes a
        // deploy of a changed file a new task definition, so settings that
        // need a restart (listeners, tls …) reach the tasks.
        ...(props.configObject ? { EDGE_CONFIG_SHA256: config.sha256 } : {}),
        MAIL_DOMAIN: props.mailDomain,
        MAIL_HOSTNAME: `mx.${props.mailDomain}`,
        INGEST_FUNCTION_ARN: ingestFunctionArn,
        BLOB_BUCKET: bucketName,
        TRUSTED_PROXY_CIDR: C.VPC_CIDR,
        AWS_REGION: this.region,
      },
      secrets: {
        BLOB_SIGNING_KEY: ecs.Secret.fromSecretsManager(secret, 'BLOB_SIGNING_KEY'),
      },
      portMappings: [
        ...ports.map((p) => ({ containerPort: p.containerPort, protocol: ecs.Protocol.TCP, name: p.id.toLowerCase() })),
        { containerPort: config.opsPort, protocol: ecs.Protocol.TCP, name: 'ops' },
      ],
      // The NLB's check asks /readyz, which the operations server answers:
      // it says whether the task should get new flows, not whether the SMTP
      // listener answers (a target group has one health check, and a TCP
      // connect is accepted by the kernel even when the process is stuck).
      // This check speaks SMTP: a PROXY v2 LOCAL header, then it waits for
      // the greeting (220, or 421 while draining or shedding load, both
      // alive). ECS replaces a task that fails it.
      healthCheck: {
        command: ['CMD', 'node', '/app/deploy/smtp-probe.mjs', String(mx.containerPort)],
        interval: Duration.seconds(C.SMTP_PROBE_INTERVAL_SECONDS),
        timeout: Duration.seconds(5),
        retries: 3,
        startPeriod: Duration.seconds(30),
      },
    });

    const nlbSg = new ec2.SecurityGroup(this, 'NlbSg', { vpc, allowAllOutbound: false, description: 'postgate NLB: public SMTP ports' });
    const taskSg = new ec2.SecurityGroup(this, 'TaskSg', { vpc, allowAllOutbound: true, description: 'postgate tasks: SMTP and health check from the NLB only' });
    for (const p of ports) {
      nlbSg.addIngressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(p.publicPort), `SMTP ${p.publicPort}`);
      nlbSg.addEgressRule(taskSg, ec2.Port.tcp(p.containerPort), `to tasks ${p.containerPort}`);
      taskSg.addIngressRule(nlbSg, ec2.Port.tcp(p.containerPort), `SMTP ${p.publicPort} via NLB`);
    }
    nlbSg.addEgressRule(taskSg, ec2.Port.tcp(config.opsPort), 'health check');
    taskSg.addIngressRule(nlbSg, ec2.Port.tcp(config.opsPort), 'NLB health check on the ops port');

    const service = new ecs.FargateService(this, 'Service', {
      cluster,
      taskDefinition: taskDef,
      desiredCount: 2,
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      securityGroups: [taskSg],
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      circuitBreaker: { rollback: true },
      // Let a new task start and pass /readyz before the NLB's checks count.
      healthCheckGracePeriod: Duration.seconds(60),
    });

    const nlb = new elbv2.NetworkLoadBalancer(this, 'Nlb', {
      vpc,
      internetFacing: true,
      crossZoneEnabled: true,
      securityGroups: [nlbSg],
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
    });

    const targetGroups: elbv2.NetworkTargetGroup[] = [];
    for (const p of ports) {
      const listener = nlb.addListener(`${p.id}Listener`, { port: p.publicPort, protocol: elbv2.Protocol.TCP });
      const tg = listener.addTargets(`${p.id}Targets`, {
        port: p.containerPort,
        protocol: elbv2.Protocol.TCP,
        // The client address reaches postgate in the PROXY v2 header
        // (listeners[].proxyProtocol in deploy/edge.yaml).
        proxyProtocolV2: true,
        // Packets reach the task from the NLB's own addresses, so the task's
        // security group can admit the NLB alone (and PROXY trust the VPC range).
        preserveClientIp: false,
        deregistrationDelay: Duration.seconds(C.DEREGISTRATION_DELAY_SECONDS),
        targets: [service.loadBalancerTarget({ containerName: 'edge', containerPort: p.containerPort })],
        healthCheck: {
          protocol: elbv2.Protocol.HTTP,
          port: String(config.opsPort),
          path: C.HEALTH_PATH,
          healthyHttpCodes: '200',
          interval: Duration.seconds(10),
          healthyThresholdCount: 2,
          unhealthyThresholdCount: 2,
        },
      });
      // An unhealthy target (draining, or shedding load) keeps its open
      // flows for the drain instead of having them reset (constants.ts).
      tg.setAttribute('target_health_state.unhealthy.connection_termination.enabled', 'false');
      tg.setAttribute('target_health_state.unhealthy.draining_interval_seconds', String(C.UNHEALTHY_DRAINING_SECONDS));
      targetGroups.push(tg);
    }
    const mxTargets = targetGroups[ports.indexOf(mx)]!;

    const scaling = service.autoScaleTaskCount({ minCapacity: 2, maxCapacity: 20 });
    scaling.scaleOnCpuUtilization('Cpu', {
      targetUtilizationPercent: C.TARGET_CPU_PERCENT,
      scaleInCooldown: Duration.seconds(300),
      scaleOutCooldown: Duration.seconds(60),
    });
    // Connections per task: NLB active flows over healthy tasks of the mx target group.
    const flowsPerTask = new cloudwatch.MathExpression({
      expression: 'IF(hosts > 0, flows / hosts, flows)',
      label: 'Active SMTP flows per task',
      period: Duration.minutes(1),
      usingMetrics: {
        flows: nlb.metrics.activeFlowCount({ statistic: 'Average', period: Duration.minutes(1) }),
        hosts: mxTargets.metrics.healthyHostCount({ statistic: 'Minimum', period: Duration.minutes(1) }),
      },
    });
    scaling.scaleOnMetric('Connections', {
      metric: flowsPerTask,
      scalingSteps: [
        { upper: C.TARGET_CONNECTIONS_PER_TASK / 3, change: -1 },
        { lower: C.TARGET_CONNECTIONS_PER_TASK, change: +1 },
        { lower: C.TARGET_CONNECTIONS_PER_TASK * 1.4, change: +3 },
      ],
      cooldown: Duration.seconds(120),
    });

    // Reply-rate alarms from the JSON log lines (docs/operations.md, "Logs"):
    // "accepted" per message, "transaction not accepted" with its reply code.
    const ns = `postgate/${props.stage}`;
    const filter = (id: string, pattern: string, metricName: string) =>
      new logs.MetricFilter(this, id, {
        logGroup,
        filterPattern: logs.FilterPattern.literal(pattern),
        metricNamespace: ns,
        metricName,
        metricValue: '1',
        defaultValue: 0,
      }).metric({ statistic: 'Sum', period: Duration.minutes(5) });
    const accepted = filter('AcceptedFilter', '{ $.msg = "accepted" }', 'Accepted');
    const temp = filter('TempFailFilter', '{ $.msg = "transaction not accepted" && $.reply = "4*" }', 'Replies4xx');
    const perm = filter('PermFailFilter', '{ $.msg = "transaction not accepted" && $.reply = "5*" }', 'Replies5xx');
    // Every alarm of the stack notifies this topic; an address given at
    // deploy (-c alarmEmail=...) is subscribed, others can be added later.
    const alarmTopic = new sns.Topic(this, 'AlarmTopic', {
      displayName: `postgate edge alarms (${props.stage})`,
      masterKey: logKey,
      enforceSSL: true,
    });
    if (props.alarmEmail) alarmTopic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    const notify = (alarm: cloudwatch.Alarm) => {
      alarm.addAlarmAction(new cwActions.SnsAction(alarmTopic));
      alarm.addOkAction(new cwActions.SnsAction(alarmTopic));
      return alarm;
    };

    const rate = (id: string, m: cloudwatch.Metric, threshold: number, what: string) =>
      notify(new cloudwatch.Alarm(this, id, {
        metric: new cloudwatch.MathExpression({
          expression: 'IF(bad + ok > 0, 100 * bad / (bad + ok), 0)',
          usingMetrics: { bad: m, ok: accepted },
          period: Duration.minutes(5),
          label: `${what} reply rate (%)`,
        }),
        threshold,
        evaluationPeriods: 3,
        datapointsToAlarm: 2,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: `More than ${threshold}% of SMTP transactions answered ${what} (postgate edge, ${props.stage}).`,
      }));
    rate('Reply4xxAlarm', temp, 5, '4xx');
    rate('Reply5xxAlarm', perm, 2, '5xx');
    // No task passes /readyz: port 25 is answered by nobody (or, as the NLB
    // then sends to every target, by tasks that are all shedding load).
    notify(
      new cloudwatch.Alarm(this, 'NoHealthyTaskAlarm', {
        metric: mxTargets.metrics.healthyHostCount({ statistic: 'Maximum', period: Duration.minutes(1) }),
        threshold: 1,
        evaluationPeriods: 3,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        alarmDescription: `No healthy postgate edge task behind the NLB for 3 minutes (${props.stage}).`,
      }),
    );

    new CfnOutput(this, 'NlbDnsName', { value: nlb.loadBalancerDnsName, description: 'Point the MX host (A/ALIAS) here.' });
    new CfnOutput(this, 'LogGroupName', { value: logGroup.logGroupName });
    new CfnOutput(this, 'SecretArn', { value: secret.secretArn });
    new CfnOutput(this, 'AlarmTopicArn', { value: alarmTopic.topicArn, description: 'Subscribe more endpoints to the edge alarms here.' });

    acknowledgeEdgeFindings({ nlb, nlbSg, taskDef, secret, blobPrefix: C.BLOB_PREFIX, stage: props.stage });
  }
}
