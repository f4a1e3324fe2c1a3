/**
 * The configuration shipped for AWS (deploy/edge.yaml, baked into the image
 * and chosen by POSTGATE_CONFIG). On ECS Fargate the task's disk is thrown
 * away at every deploy and scale-in, so a message the edge accepts must never
 * end there: every recipient the edge accepts, postmaster@ of each served
 * domain included (RFC 5321 §4.5.1 makes postgate accept those), goes to a
 * durable target, and a queued mode only with a spool off the task
 * (docs/deploy.md, docs/architecture.md §2.1).
 */
import { test, describe, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { loadConfig, validateConfig, type ResolvedConfig } from '../src/config/load.js';
import { routingTableOf } from '../src/gateway.js';
import { describeRoute } from '../src/cli/route.js';
import { projectRoot } from './helpers/fixtures.js';
import { EDGE_TASK_ENV as TASK_ENV } from './helpers/edge-env.js';

/**
 * Where each of these recipients ends if accepted: a problem per target that
 * keeps the message on the instance's own disk (a local store, or a queued
 * mode whose spool is the local directory).
 */
function taskDiskProblems(cfg: ResolvedConfig, recipients: string[]): string[] {
  const table = routingTableOf(cfg);
  const problems: string[] = [];
  for (const address of recipients) {
    const r = describeRoute(cfg, table, address, { mailFrom: 'sender@elsewhere.example', clientAddress: '192.0.2.10' });
    if (!r.accepted) continue;
    const json = r.json as { route: string; targets: { id: string; type: string }[] };
    for (const t of json.targets) if (t.type === 'local') problems.push(`${address}: target ${t.id} is the local store`);
    const mode = cfg.routes.find((x) => x.name === json.route)?.mode ?? 'sync';
    if (mode !== 'sync' && cfg.queue.backend.type === 'local') problems.push(`${address}: route ${json.route} is "${mode}" with the local spool`);
  }
  return problems;
}

describe('deploy/edge.yaml: nothing accepted ends on the task\'s disk', () => {
  let cfg: ResolvedConfig;
  before(async () => {
    cfg = await loadConfig({ file: path.join(projectRoot(), 'deploy', 'edge.yaml'), env: TASK_ENV });
  });

  test('the served domain, its postmaster (any case) and the bare <postmaster> go to durable targets', () => {
    const recipients = ['someone@example.com', 'postmaster@example.com', 'PostMaster@Example.COM', 'postmaster'];
    for (const d of cfg.servedDomains) recipients.push(`postmaster@${d}`, `someone@${d}`);
    // The domain is served, so its postmaster is accepted: the check below is about something real.
    const table = routingTableOf(cfg);
    assert.equal(describeRoute(cfg, table, 'postmaster@example.com', {}).accepted, true);
    assert.deepEqual(taskDiskProblems(cfg, recipients), []);
  });

  test('the functions route each of those recipients to a downstream webhook (ingest refuses, 500, a recipient with none: the edge would defer it for ever)', async () => {
    const fn = await loadConfig({
      file: path.join(projectRoot(), 'deploy', 'functions.yaml'),
      env: { MAIL_DOMAIN: 'example.com', DOWNSTREAM_URL: 'https://app.example.com/inbound', DOWNSTREAM_SECRET: `whsec_${Buffer.alloc(32, 1).toString('base64')}` },
    });
    const table = routingTableOf(fn);
    for (const address of ['someone@example.com', 'postmaster@example.com', 'postmaster']) {
      const r = describeRoute(fn, table, address, { mailFrom: 'sender@elsewhere.example', clientAddress: '192.0.2.10' });
      const types = r.accepted ? (r.json as { targets: { type: string }[] }).targets.map((t) => t.type) : [];
      assert.ok(types.includes('webhook'), `${address}: no downstream webhook in deploy/functions.yaml (${types.join(', ') || 'refused'})`);
    }
  });

  test('the message as received travels with the event, so ingest archives raw.eml by default', () => {
    assert.equal(cfg.blobs.raw, true);
    assert.equal(cfg.blobs.store?.type, 's3', 'a raw message over the inline limit is linked from the blob store');
  });

  test('the check itself flags a config that stores postmaster@ locally (the default without postmaster.targets)', () => {
    const local = validateConfig({
      routes: [{ recipients: ['*@example.com'], targets: [{ type: 'lambda', functionName: TASK_ENV.INGEST_FUNCTION_ARN }] }],
    });
    assert.deepEqual(taskDiskProblems(local, ['someone@example.com']), []);
    assert.match(taskDiskProblems(local, ['postmaster@example.com']).join('\n'), /postmaster@example\.com: target \S+ is the local store/);
    const queued = validateConfig({
      routes: [{ recipients: ['*@example.com'], mode: 'queue', targets: [{ type: 'lambda', functionName: TASK_ENV.INGEST_FUNCTION_ARN }] }],
    });
    assert.match(taskDiskProblems(queued, ['someone@example.com']).join('\n'), /"queue" with the local spool/);
  });
});
