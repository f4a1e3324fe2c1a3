/**
 * The SMTP edge on AWS: ECS Fargate tasks running the project's Dockerfile
 * behind a network load balancer. The bucket and the ingest function belong
 * to the serverless stack and are imported by their CloudFormation exports.
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, Fn, RemovalPolicy, Stack, type StackProps, CfnOutput } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import * as C from './constants.js';

/** The repository root: the Docker build context of the image. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export interface EdgeStackProps extends StackProps {
  /** Stage of the serverless stack whose exports are imported ("prod"). */
  stage: string;
  /** Mail domain the edge accepts (recipients *@domain). */
  mailDomain: string;
  /** Also listen on 587 (submission) and 465 (smtps); needs TLS and AUTH users in the config secret. */
  submission: boolean;
}

/** One public port of the NLB and the container port behind it. */
interface PortMap {
  name: string;
  publicPort: number;
  containerPort: number;
}

export function edgePorts(submission: boolean): PortMap[] {
  const ports: PortMap[] = [{ name: 'Smtp', publicPort: 25, containerPort: C.SMTP_CONTAINER_PORT }];
  if (submission) {
    ports.push({ name: 'Submission', publicPort: 587, containerPort: C.SUBMISSION_CONTAINER_PORT });
    ports.push({ name: 'Smtps', publicPort: 465, containerPort: C.SMTPS_CONTAINER_PORT });
  }
  return ports;
}

export class EdgeStack extends Stack {
  constructor(scope: Construct, id: string, props: EdgeStackProps) {
    super(scope, id, props);
    const exp = (name: string) => Fn.importValue(`postgate-${props.stage}-${name}`);
    const bucketArn = exp('BucketArn');
    const bucketName = exp('BucketName');
    const ingestFunctionArn = exp('IngestFunctionArn');
    const ports = edgePorts(props.submission);

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
      description: 'postgate edge log group encryption',
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
    const logGroup = new logs.LogGroup(this, 'Logs', {
      retention: logs.RetentionDays.ONE_MONTH,
      encryptionKey: logKey,
      removalPolicy: RemovalPolicy.DESTROY,
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

    taskDef.addContainer('edge', {
      image: ecs.ContainerImage.fromAsset(REPO_ROOT, {
        // Built for the task's architecture (Graviton), also on an x86 machine (docker buildx).
        platform: Platform.LINUX_ARM64,
        exclude: ['node_modules', '**/node_modules', 'infra/cdk.out', 'infra/dist', '.git', 'data'],
      }),
      logging: ecs.LogDrivers.awsLogs({ logGroup, streamPrefix: 'edge' }),
      stopTimeout: Duration.seconds(C.STOP_TIMEOUT_SECONDS),
      environment: {
        POSTGATE_CONFIG: '/app/deploy/edge.yaml',
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
        ...ports.map((p) => ({ containerPort: p.containerPort, protocol: ecs.Protocol.TCP, name: p.name.toLowerCase() })),
        { containerPort: C.OPS_PORT, protocol: ecs.Protocol.TCP, name: 'ops' },
      ],
    });

    const nlbSg = new ec2.SecurityGroup(this, 'NlbSg', { vpc, allowAllOutbound: false, description: 'postgate NLB: public SMTP ports' });
    const taskSg = new ec2.SecurityGroup(this, 'TaskSg', { vpc, allowAllOutbound: true, description: 'postgate tasks: SMTP and health check from the NLB only' });
    for (const p of ports) {
      nlbSg.addIngressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(p.publicPort), `SMTP ${p.publicPort}`);
      nlbSg.addEgressRule(taskSg, ec2.Port.tcp(p.containerPort), `to tasks ${p.containerPort}`);
      taskSg.addIngressRule(nlbSg, ec2.Port.tcp(p.containerPort), `SMTP ${p.publicPort} via NLB`);
    }
    nlbSg.addEgressRule(taskSg, ec2.Port.tcp(C.OPS_PORT), 'health check');
    taskSg.addIngressRule(nlbSg, ec2.Port.tcp(C.OPS_PORT), 'NLB health check on the ops port');

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
      const listener = nlb.addListener(`${p.name}Listener`, { port: p.publicPort, protocol: elbv2.Protocol.TCP });
      const tg = listener.addTargets(`${p.name}Targets`, {
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
          port: String(C.OPS_PORT),
          path: C.HEALTH_PATH,
          healthyHttpCodes: '200',
          interval: Duration.seconds(10),
          healthyThresholdCount: 2,
          unhealthyThresholdCount: 2,
        },
      });
      targetGroups.push(tg);
    }

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
        hosts: targetGroups[0]!.metrics.healthyHostCount({ statistic: 'Minimum', period: Duration.minutes(1) }),
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
    const rate = (id: string, m: cloudwatch.Metric, threshold: number, what: string) =>
      new cloudwatch.Alarm(this, id, {
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
      });
    rate('Reply4xxAlarm', temp, 5, '4xx');
    rate('Reply5xxAlarm', perm, 2, '5xx');

    new CfnOutput(this, 'NlbDnsName', { value: nlb.loadBalancerDnsName, description: 'Point the MX host (A/ALIAS) here.' });
    new CfnOutput(this, 'LogGroupName', { value: logGroup.logGroupName });
    new CfnOutput(this, 'SecretArn', { value: secret.secretArn });
  }
}
