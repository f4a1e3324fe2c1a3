/**
 * The AwsSolutions checks (cdk-nag) the serverless stack does not follow,
 * each with why. That stack is deployed by serverless.yml, not by this app:
 * infra/test/functions-nag.test.ts packages it with osls (offline), includes
 * the CloudFormation template it wrote (CfnInclude), runs the pack over it
 * and fails on any finding not acknowledged here. An acknowledgment names the
 * template's logical id it covers, so a new resource is checked afresh.
 */
import { Validations } from 'aws-cdk-lib';
import type { CfnInclude } from 'aws-cdk-lib/cloudformation-include';

export interface FunctionsAck {
  /** Logical id in serverless.yml's template. */
  resource: string;
  /** cdk-nag rule id, with the finding's own part for IAM5 ("IAM5[Resource::…]"). */
  rule: string;
  reason: string;
}

/** Service name of serverless.yml: part of the log group names in the IAM5 finding ids. */
const SERVICE = 'postgate';

const logGroupReason = (fn: string) =>
  `Lambda writes ${fn}'s logs into streams it names at run time, one per execution environment, in the log group /aws/lambda/${SERVICE}-<stage>-${fn}: ` +
  'the group\'s ":*" (every stream of that one group) is the narrowest ARN for CreateLogStream and PutLogEvents, and those two the only actions.';

const messagesReason = (what: string) =>
  `Object keys under messages/ are the message ids made at run time (messages/<id>/event.json, raw.eml, per-destination copies); the prefix is the narrowest scope, and ${what} the only actions.`;

export function functionsFindings(stage: string): FunctionsAck[] {
  const logs = (fn: string) => `IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/lambda/${SERVICE}-${stage}-${fn}:*]`;
  return [
    {
      resource: 'MessagesBucket',
      rule: 'S1',
      reason:
        'Server access logs would go to a second bucket that needs its own lifecycle and is read by nobody: every object written here is written by the ingest or route function, which logs the message id it stores, and the bucket refuses public access and requests without TLS. Enable CloudTrail S3 data events on the bucket where an audit of reads is required (docs/deploy.md).',
    },
    {
      resource: 'ServerlessDeploymentBucket',
      rule: 'S1',
      reason:
        'The bucket the Serverless Framework creates for its deployment artifacts (the function zips and templates, no mail): it is written only by the deploying principal, encrypted, and refuses requests without TLS; access logs would record only deployments, which CloudTrail already does.',
    },
    { resource: 'IngestRole', rule: logs('ingest'), reason: logGroupReason('ingest') },
    { resource: 'RouteRole', rule: logs('route'), reason: logGroupReason('route') },
    { resource: 'RedriveRole', rule: logs('redrive'), reason: logGroupReason('redrive') },
    { resource: 'IngestRole', rule: 'IAM5[Resource::<MessagesBucket.Arn>/messages/*]', reason: messagesReason('s3:PutObject and s3:AbortMultipartUpload') },
    { resource: 'RouteRole', rule: 'IAM5[Resource::<MessagesBucket.Arn>/messages/*]', reason: messagesReason('s3:GetObject and s3:PutObject') },
    ...['IngestRole', 'RouteRole'].map((resource) => ({
      resource,
      rule: 'IAM5[Resource::<MessagesBucket.Arn>/config/*]',
      reason:
        'The routes may be kept under config/ of the bucket to change them without a deploy (routesConfig in serverless.yml); the operator names the object at deploy, so the prefix is the narrowest scope, and s3:GetObject the only action.',
    })),
  ];
}

/** Records every acknowledgment of `functionsFindings(stage)` on the included template's resources. */
export function acknowledgeFunctionsFindings(template: CfnInclude, stage: string): void {
  for (const a of functionsFindings(stage)) {
    Validations.of(template.getResource(a.resource)).acknowledge({ id: `AwsSolutions-${a.rule}`, reason: a.reason });
  }
}
