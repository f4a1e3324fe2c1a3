/**
 * The configuration baked into the container image (deploy/edge.yaml) loads
 * with the project's own loader, given the variables the infra stack sets, and
 * agrees with what infra/ assumes (listen ports, health port, drain budget).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../src/config/load.js';
import { fixturePath } from './helpers/fixtures.js';

test('deploy/edge.yaml is a valid configuration with the stack\'s environment', async () => {
  const cfg = await loadConfig({
    file: fixturePath('..', '..', 'deploy', 'edge.yaml'),
    env: {
      MAIL_HOSTNAME: 'mx.example.com',
      MAIL_DOMAIN: 'example.com',
      TRUSTED_PROXY_CIDR: '10.40.0.0/16',
      BLOB_SIGNING_KEY: 'k'.repeat(32),
      BLOB_BUCKET: 'postgate-prod-bucket',
      INGEST_FUNCTION_ARN: 'arn:aws:lambda:us-east-1:123456789012:function:postgate-prod-ingest',
    },
  });
  assert.equal(cfg.resolvedListeners[0]?.port, 2525);
  assert.equal(cfg.http && String(cfg.http.listen), '0.0.0.0:9025');
  assert.equal(cfg.delivery.deadline, 30_000);
  assert.equal(cfg.routes[0]?.targets[0]?.type, 'lambda');
  await assert.rejects(loadConfig({ file: fixturePath('..', '..', 'deploy', 'edge.yaml'), env: {} }), /MAIL_HOSTNAME/, 'a missing variable is reported');
});
