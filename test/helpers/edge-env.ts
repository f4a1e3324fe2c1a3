/**
 * What infra/lib/edge-stack.ts puts in the edge task's environment, with
 * example values: enough to load deploy/edge.yaml as the task does.
 */
export const EDGE_TASK_ENV = {
  MAIL_HOSTNAME: 'mx.example.com',
  MAIL_DOMAIN: 'example.com',
  TRUSTED_PROXY_CIDR: '10.0.0.0/16',
  BLOB_SIGNING_KEY: Buffer.alloc(32, 7).toString('base64'),
  BLOB_BUCKET: 'postgate-prod-bucket',
  INGEST_FUNCTION_ARN: 'arn:aws:lambda:eu-west-1:123456789012:function:postgate-prod-ingest',
};
