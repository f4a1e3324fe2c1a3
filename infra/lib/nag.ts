/**
 * The AwsSolutions checks (cdk-nag) this stack does not follow, each with
 * why. infra/test/nag.test.ts runs the pack and fails on any finding not
 * acknowledged here; an acknowledgment names the construct it covers, so a
 * new resource of the same kind is checked afresh.
 */
import { Validations } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import type * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type { Construct } from 'constructs';

export interface NaggedConstructs {
  nlb: elbv2.NetworkLoadBalancer;
  nlbSg: ec2.SecurityGroup;
  taskDef: ecs.FargateTaskDefinition;
  secret: secretsmanager.Secret;
  blobPrefix: string;
  /** Stage of the imported exports: part of the IAM5 finding's id. */
  stage: string;
}

const ack = (scope: Construct, id: string, reason: string) => Validations.of(scope).acknowledge({ id: `AwsSolutions-${id}`, reason });

export function acknowledgeEdgeFindings(c: NaggedConstructs): void {
  ack(
    c.nlbSg,
    'EC23',
    'The NLB is a public mail exchanger: any host on the internet may deliver mail to the SMTP ports it publishes, and only those ports are open (the tasks admit the NLB alone).',
  );
  ack(
    c.nlb,
    'ELB2',
    'An NLB writes access logs only for TLS listeners; these are plain TCP (TLS, when offered, is between the sender and postgate). postgate logs every connection and transaction with the client address it learns from the PROXY v2 header.',
  );
  ack(
    c.secret,
    'SMG4',
    'The secret holds BLOB_SIGNING_KEY, which signs blob links valid for blobs.ttl (7 days) and is read once at task start: a scheduled rotation would break every outstanding link. Rotate by hand with a rolling deploy (docs/deploy.md).',
  );
  ack(
    c.taskDef,
    'ECS2',
    'The environment holds only non-secret values (mail domain, host name, ingest function ARN, bucket name, VPC range, region, config path); the one secret, BLOB_SIGNING_KEY, is an ECS secret from Secrets Manager.',
  );
  ack(
    c.taskDef.taskRole,
    `IAM5[Resource::postgate-${c.stage}-BucketArn/${c.blobPrefix}*]`,
    `Blob keys are content hashes made at run time under the ${c.blobPrefix} prefix: the prefix is the narrowest scope, and GetObject/PutObject the only actions.`,
  );
  ack(
    c.taskDef.obtainExecutionRole(),
    'IAM5[Resource::*]',
    'ecr:GetAuthorizationToken, which the execution role needs to pull the image, has no resource-level permissions (it only accepts "*"); the pull itself is scoped to the image repository.',
  );
}
