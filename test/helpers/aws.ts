/**
 * Local stand-ins for AWS, all real servers on loopback, installed from npm
 * as dev dependencies:
 *
 * - S3 (and SQS): fauxqs, in-process, port 0;
 * - DynamoDB: dynalite, in-process, port 0;
 * - Lambda: serverless-offline under osls (the open-source Serverless
 *   Framework v3 line), a child process serving the Lambda Invoke API for a
 *   test service (test/fixtures/lambda).
 *
 * The SDK is pointed at them by the endpoints in each test's config, with a
 * fixed region and dummy credentials in this process's environment (set by
 * awsTestEnv), so a developer's own AWS profile is never used.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { CreateTableCommand, DescribeTableCommand, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { startFauxqs as startFauxqsServer } from 'fauxqs';
import { projectRoot } from './fixtures.js';

export const TEST_REGION = 'us-east-1';

/**
 * Dummy credentials for the SDK's default chain. Environment credentials come
 * first in the chain, so no shared profile, SSO session or instance role is
 * consulted; a developer's session token is removed so it is not mixed in.
 */
export function awsTestEnv(): void {
  process.env.AWS_ACCESS_KEY_ID = 'AKIDPOSTGATETEST';
  process.env.AWS_SECRET_ACCESS_KEY = 'postgate-test-secret';
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
  process.env.AWS_REGION = TEST_REGION;
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
}

/** A free TCP port on 127.0.0.1 (for servers that cannot report the port they bound). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export interface LocalS3 {
  endpoint: string;
  port: number;
  client: S3Client;
  createBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** fauxqs on 127.0.0.1 (port 0 unless given: a test restarts it on the same port). */
export async function startS3(port = 0): Promise<LocalS3> {
  awsTestEnv();
  const server = await startFauxqsServer({ port, host: '127.0.0.1', logger: false });
  const endpoint = `http://127.0.0.1:${server.port}`;
  const client = new S3Client({ region: TEST_REGION, endpoint, forcePathStyle: true });
  return {
    endpoint,
    port: server.port,
    client,
    async createBucket(name) {
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    async stop() {
      client.destroy();
      await server.stop();
    },
  };
}

export interface LocalDynamo {
  endpoint: string;
  client: DynamoDBClient;
  /** A table in the skip-store's layout: partition key `id` (S). */
  createSkipTable(name: string): Promise<void>;
  stop(): Promise<void>;
}

interface DynaliteServer extends net.Server {
  close(cb?: (err?: Error) => void): this;
}

/** dynalite, in memory, on 127.0.0.1 port 0. */
export async function startDynamo(): Promise<LocalDynamo> {
  awsTestEnv();
  const dynalite = createRequire(import.meta.url)('dynalite') as (opts: Record<string, unknown>) => DynaliteServer;
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const endpoint = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const client = new DynamoDBClient({ region: TEST_REGION, endpoint });
  return {
    endpoint,
    client,
    async createSkipTable(name) {
      await client.send(
        new CreateTableCommand({
          TableName: name,
          AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
          KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
          BillingMode: 'PAY_PER_REQUEST',
        }),
      );
      for (let i = 0; i < 100; i++) {
        const d = await client.send(new DescribeTableCommand({ TableName: name }));
        if (d.Table?.TableStatus === 'ACTIVE') return;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`table ${name} did not become ACTIVE`);
    },
    async stop() {
      client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface LocalLambda {
  /** The Lambda Invoke API endpoint (`endpoint` of a lambda target). */
  endpoint: string;
  /** The HTTP API (API Gateway) endpoint, for functions with httpApi events. */
  httpEndpoint: string;
  /** Function names are `<service>-<stage>-<function>`. */
  functionName(fn: string): string;
  /** What osls printed so far (for assertions and failure messages). */
  output(): string;
  /** Milliseconds from spawn to the ready line. */
  startMs: number;
  stop(): Promise<void>;
}

function oslsBin(root: string): string {
  try {
    return path.join(path.dirname(createRequire(import.meta.url).resolve('osls/package.json')), 'bin', 'serverless.js');
  } catch {
    const p = path.join(root, 'node_modules', 'osls', 'bin', 'serverless.js');
    if (existsSync(p)) return p;
    throw new Error('osls is not installed: run npm install');
  }
}

/**
 * Runs `osls offline` for a service directory (test/fixtures/lambda by
 * default) on free loopback ports and waits for its Lambda API to listen.
 * The child runs in its own process group, which stop() ends as a whole.
 */
export interface ServerlessOfflineOptions {
  serviceDir?: string;
  env?: Record<string, string>;
  service?: string;
  stage?: string;
  startTimeoutMs?: number;
  /** More command-line arguments for `osls offline` (`--param name=value`, say). */
  args?: string[];
  /** Also wait until the HTTP API listens (services with httpApi events). */
  waitForHttp?: boolean;
}

export async function startServerlessOffline(opts: ServerlessOfflineOptions = {}): Promise<LocalLambda> {
  try {
    return await startOnce(opts);
  } catch (err) {
    // A free port can be taken by another process between the probe and
    // osls binding it: try once more with new ports.
    if (/EADDRINUSE/.test((err as Error).message)) return startOnce(opts);
    throw err;
  }
}

async function startOnce(opts: ServerlessOfflineOptions): Promise<LocalLambda> {
  awsTestEnv();
  const root = projectRoot();
  const serviceDir = opts.serviceDir ?? path.join(root, 'test', 'fixtures', 'lambda');
  const [httpPort, lambdaPort, websocketPort, albPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const started = performance.now();
  let out = '';
  const child: ChildProcess = spawn(
    process.execPath,
    [
      oslsBin(root),
      'offline',
      '--host', '127.0.0.1',
      '--httpPort', String(httpPort),
      '--lambdaPort', String(lambdaPort),
      '--websocketPort', String(websocketPort),
      '--albPort', String(albPort),
      '--noSponsor',
      ...(opts.stage ? ['--stage', opts.stage] : []),
      ...(opts.args ?? []),
    ],
    {
      cwd: serviceDir,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        // No telemetry, update checks or notifications: the tests run offline.
        SLS_TELEMETRY_DISABLED: '1',
        SLS_TRACKING_DISABLED: '1',
        SLS_NOTIFICATIONS_MODE: 'off',
        SLS_DEPRECATION_DISABLE: '*',
        FORCE_COLOR: '0',
        ...opts.env,
      },
    },
  );
  const ready = new RegExp(`listening on http://127\\.0\\.0\\.1:${lambdaPort}\\b`);
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      return;
    }
    const t = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 5_000);
    await exited;
    clearTimeout(t);
  };
  await new Promise<void>((resolve, reject) => {
    const timeoutMs = opts.startTimeoutMs ?? 30_000;
    const fail = (why: string) => {
      clearTimeout(timer);
      void stop().finally(() => reject(new Error(`serverless-offline did not start (${why}); its output:\n${out}`)));
    };
    const timer = setTimeout(() => fail(`no ready line within ${timeoutMs} ms`), timeoutMs);
    const onData = (d: Buffer) => {
      out += d.toString('utf8');
      if (ready.test(out)) {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code: number | null, signal: string | null) => fail(`exited with ${signal ?? code}`);
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
    child.once('error', (err) => fail(err.message));
  });
  // The Lambda API's ready line can come before the HTTP API listens (a
  // service with httpApi events; without any, no HTTP server starts).
  for (let i = 0; opts.waitForHttp && i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(httpPort, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (i === 99) {
      await stop();
      throw new Error(`serverless-offline: the HTTP API on port ${httpPort} did not listen; its output:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const startMs = Math.round(performance.now() - started);
  const service = opts.service ?? 'postgate-test';
  const stage = opts.stage ?? 'test';
  return {
    endpoint: `http://127.0.0.1:${lambdaPort}`,
    httpEndpoint: `http://127.0.0.1:${httpPort}`,
    functionName: (fn) => `${service}-${stage}-${fn}`,
    output: () => out,
    startMs,
    stop,
  };
}

/** GET a URL on loopback, for claim-check links. */
export async function httpGet(url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}
