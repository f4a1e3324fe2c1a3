/**
 * Starts a real gateway on 127.0.0.1 port 0 with a temporary store and
 * captured log lines, for tests.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { validateConfig } from '../../src/config/load.js';
import { buildGateway, type Gateway, type GatewayDeps } from '../../src/gateway.js';
import { createLogger } from '../../src/ops/logger.js';
import { createMetrics } from '../../src/ops/metrics.js';

export interface TestGateway {
  gw: Gateway;
  /** Port of each listener, in config order. */
  ports: number[];
  port: number;
  opsPort: number | null;
  dataDir: string;
  logs: Array<Record<string, unknown>>;
  logText(): string;
  close(): Promise<void>;
}

export async function startGateway(doc: Record<string, unknown>, deps: Omit<GatewayDeps, 'logger' | 'metrics'> = {}): Promise<TestGateway> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'postgate-test-'));
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  const cfg = validateConfig(
    {
      // The early-talker pause is off unless a test turns it on: it would only slow other tests.
      smtp: { listen: '127.0.0.1:0', hostname: 'mx.test.local', earlyTalker: { mode: 'off' }, ...((doc.smtp as object | undefined) ?? {}) },
      http: { listen: '127.0.0.1:0' },
      storage: { path: dataDir, ...((doc.storage as object | undefined) ?? {}) },
      logging: { level: 'debug' },
      ...Object.fromEntries(Object.entries(doc).filter(([k]) => k !== 'smtp' && k !== 'storage')),
    },
    { hostname: 'mx.test.local' },
  );
  const gw = await buildGateway(cfg, { ...deps, logger: createLogger('debug', sink), metrics: createMetrics({ defaultMetrics: false }) });
  await gw.start();
  const ports = gw.addresses().map((a) => a.port);
  return {
    gw,
    ports,
    port: ports[0]!,
    opsPort: gw.opsAddress()?.port ?? null,
    dataDir,
    get logs() {
      return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    logText: () => lines.join('\n'),
    async close() {
      await gw.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Lists files under a directory, recursively, relative paths sorted. */
export async function listFiles(dir: string): Promise<string[]> {
  const { readdir } = await import('node:fs/promises');
  const out: string[] = [];
  const walk = async (d: string, rel: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(path.join(d, e.name), path.join(rel, e.name));
      else out.push(path.join(rel, e.name));
    }
  };
  await walk(dir, '');
  return out.sort();
}
