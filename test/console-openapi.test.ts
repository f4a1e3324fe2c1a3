/**
 * docs/console-openapi.json stays in step with the console's routes: the same
 * (method, path) pairs as CONSOLE_ROUTES, the list's query parameters as
 * MessageQuery's, each route answering one of its documented statuses over
 * real HTTP, and the documented fields present in real answers.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CONSOLE_ROUTES, MESSAGE_QUERY_PARAMS } from '../src/console/http.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { sendOne, simpleMessage } from './helpers/smtp-client.js';
import { waitFor } from './helpers/wait.js';
import { browserSession, consoleRequest } from './helpers/console.js';
import { projectRoot } from './helpers/fixtures.js';

interface Operation {
  parameters?: Array<{ name: string; in: string }>;
  responses: Record<string, unknown>;
}
interface Doc {
  paths: Record<string, Record<string, Operation | unknown>>;
  components: { schemas: Record<string, { required?: string[]; allOf?: Array<{ required?: string[] }> }> };
}

const METHODS = ['get', 'post', 'delete', 'put', 'patch'];
const doc = JSON.parse(await readFile(path.join(projectRoot(), 'docs/console-openapi.json'), 'utf8')) as Doc;
const operations = Object.entries(doc.paths).flatMap(([p, item]) =>
  Object.entries(item)
    .filter(([m]) => METHODS.includes(m))
    .map(([m, op]) => ({ method: m.toUpperCase(), path: p, op: op as Operation })),
);

describe('docs/console-openapi.json', () => {
  test('documents exactly the routes of the console', () => {
    const documented = operations.map((o) => `${o.method} ${o.path}`).sort();
    const served = CONSOLE_ROUTES.map((r) => `${r.method} ${r.path}`).sort();
    assert.deepEqual(documented, served);
  });

  test("the list's query parameters are MessageQuery's fields", () => {
    const list = operations.find((o) => o.method === 'GET' && o.path === '/api/v1/messages')!;
    assert.deepEqual((list.op.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name).sort(), [...MESSAGE_QUERY_PARAMS].sort());
  });

  test('docs/console.md names every route', async () => {
    const md = await readFile(path.join(projectRoot(), 'docs/console.md'), 'utf8');
    for (const r of CONSOLE_ROUTES) assert.ok(md.includes(`${r.method} ${r.path}`), `docs/console.md lacks "${r.method} ${r.path}"`);
  });

  describe('against a running console', () => {
    let tg: TestGateway;
    let port: number;
    let id: string;
    before(async () => {
      tg = await startGateway({ console: { listen: '127.0.0.1:0' }, routes: [{ name: 'local', recipients: ['*@a.test'], targets: [{ type: 'local' }] }] });
      port = tg.gw.consoleAddress()!.port;
      id = /queued as (\S+)/.exec((await sendOne(tg.port, 'x@a.test', simpleMessage('openapi'))).text)![1]!;
      await waitFor(async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${id}`)).status === 200, 5000, 'listed');
    });
    after(() => tg.close());

    test('every route answers one of its documented statuses', async () => {
      const s = await browserSession(port);
      // Reads first, the delete last.
      const ordered = [...operations].sort((a, b) => Number(a.method !== 'GET') - Number(b.method !== 'GET') || Number(a.path.endsWith('/delete') || a.method === 'DELETE') - Number(b.path.endsWith('/delete') || b.method === 'DELETE'));
      for (const o of ordered) {
        const p = o.path.replace('{id}', id).replace('{index}', '0');
        let status: number;
        if (o.path === '/api/v1/events') {
          status = await new Promise<number>((resolve, reject) => {
            const req = http.get({ host: '127.0.0.1', port, path: p, headers: { host: `127.0.0.1:${port}` } }, (res) => {
              resolve(res.statusCode ?? 0);
              req.destroy();
            });
            req.on('error', reject);
          });
        } else {
          const body = o.path.endsWith('/replay') ? JSON.stringify({ target: 'local' }) : undefined;
          const r = await consoleRequest(port, o.method, p, { headers: { ...s.headers, 'x-csrf-token': s.csrf, 'content-type': 'application/json' }, ...(body ? { body } : {}) });
          status = r.status;
        }
        assert.ok(String(status) in o.op.responses, `${o.method} ${p}: ${status} is not among ${Object.keys(o.op.responses).join(', ')}`);
      }
    });

    test('real answers carry every required field of their schemas', async () => {
      const tg2 = tg;
      const other = /queued as (\S+)/.exec((await sendOne(tg2.port, 'y@a.test', simpleMessage('fields'))).text)![1]!;
      await waitFor(async () => (await consoleRequest(port, 'GET', `/api/v1/messages/${other}`)).status === 200, 5000, 'listed');
      const summaryRequired = doc.components.schemas.MessageSummary!.required!;
      const detailRequired = doc.components.schemas.MessageDetail!.allOf![1]!.required!;
      const page = (await consoleRequest(port, 'GET', '/api/v1/messages?limit=1')).json<{ items: Array<Record<string, unknown>>; next: unknown }>();
      for (const k of summaryRequired) assert.ok(k in page.items[0]!, `summary lacks ${k}`);
      const detail = (await consoleRequest(port, 'GET', `/api/v1/messages/${other}`)).json();
      for (const k of [...summaryRequired, ...detailRequired]) assert.ok(k in detail, `detail lacks ${k}`);
      assert.equal(Object.keys(detail).length, new Set([...summaryRequired, ...detailRequired]).size, `undocumented fields: ${Object.keys(detail).filter((k) => ![...summaryRequired, ...detailRequired].includes(k)).join(', ')}`);
    });
  });
});
