#!/usr/bin/env node
/**
 * cdk app: one EdgeStack per stage. No context lookups, so `cdk synth` needs
 * no AWS credentials; account and region come from context or the CLI's
 * environment and otherwise stay unresolved (env-agnostic).
 */
import { App } from 'aws-cdk-lib';
import { EdgeStack } from '../lib/edge-stack.js';

const app = new App();
const stage = String(app.node.tryGetContext('stage') ?? 'prod');
const account = app.node.tryGetContext('account') ?? process.env.CDK_DEFAULT_ACCOUNT;
const region = app.node.tryGetContext('region') ?? process.env.CDK_DEFAULT_REGION;
new EdgeStack(app, `postgate-edge-${stage}`, {
  stage,
  mailDomain: String(app.node.tryGetContext('mailDomain') ?? 'example.com'),
  submission: String(app.node.tryGetContext('submission') ?? 'false') === 'true',
  ...(app.node.tryGetContext('config') ? { configFile: String(app.node.tryGetContext('config')) } : {}),
  ...(app.node.tryGetContext('alarmEmail') ? { alarmEmail: String(app.node.tryGetContext('alarmEmail')) } : {}),
  ...(app.node.tryGetContext('configObject') ? { configObject: String(app.node.tryGetContext('configObject')) } : {}),
  env: account && region ? { account: String(account), region: String(region) } : undefined,
  description: `postgate SMTP edge (${stage}): NLB + ECS Fargate`,
});
