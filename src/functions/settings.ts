/**
 * The cloud functions' settings: environment variables set by serverless.yml,
 * read and validated once per cold start. A missing or malformed value is a
 * deployment mistake, reported with every problem at once (PG_FN_CONFIG),
 * never discovered halfway through a message.
 *
 * The routes (which downstream webhooks get a message) come from a postgate
 * configuration file in the same format as the edge's (`routes:` with webhook
 * targets), so routing behaves the same on both sides.
 */
import path from 'node:path';
import { loadConfig, type ResolvedConfig } from '../config/load.js';
import { openConfigSource, parseRemote } from '../config/source.js';
import { GatewayError } from '../core/errors.js';
import { secretKey } from '../delivery/signing.js';

export interface FunctionSettings {
  bucket: string;
  table: string;
  /** Queue names; URLs are looked up once (sqs:GetQueueUrl), so names are all a template needs. */
  queue: string;
  deadLetterQueue: string;
  /** Standard Webhooks verification keys for HTTP ingest (HMAC `whsec_`, ed25519 `whpk_`); several during a rotation. */
  verify: { hmac: Buffer[]; ed25519: string[] };
  /** Largest accepted difference between webhook-timestamp and now, seconds. */
  toleranceSeconds: number;
  /** Days an index item lives (DynamoDB TTL); the bucket's lifecycle rule uses the same figure. */
  retentionDays: number;
  /** First redelivery delay after a failed delivery, seconds; doubles per attempt up to 900 (SQS visibility). */
  retryBaseSeconds: number;
  /** The routing queue's maxReceiveCount: the attempt after which SQS dead-letters a job. */
  maxAttempts: number;
  /** Lifetime of the presigned link a too-large event is sent as, seconds. */
  linkSeconds: number;
  /** Largest event fetched for a claim-check pointer, bytes. */
  maxFetchBytes: number;
  /** A file in the bundle, or s3://bucket/key or ssm:/name (read again every configIntervalSeconds). */
  configFile: string;
  /** How often a configuration kept in S3 or SSM is asked for a new version, seconds. */
  configIntervalSeconds: number;
}

type Env = Record<string, string | undefined>;

export function readSettings(env: Env = process.env): FunctionSettings {
  const problems: string[] = [];
  const need = (name: string): string => {
    const v = env[name]?.trim();
    if (!v) problems.push(`${name} is not set`);
    return v ?? '';
  };
  const int = (name: string, dflt: number, min: number, max: number): number => {
    const raw = env[name]?.trim();
    if (!raw) return dflt;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
      return dflt;
    }
    return n;
  };
  const keys = (env.POSTGATE_INGEST_SECRETS ?? '').split(/[\s,]+/).filter(Boolean);
  const verify = { hmac: [] as Buffer[], ed25519: [] as string[] };
  for (const k of keys) {
    if (k.startsWith('whsec_')) {
      const key = secretKey(k);
      if (key.length < 16) problems.push('POSTGATE_INGEST_SECRETS: a whsec_ secret must hold at least 16 bytes');
      else verify.hmac.push(key);
    } else if (k.startsWith('whpk_')) {
      if (Buffer.from(k.slice(5), 'base64').length !== 32) problems.push('POSTGATE_INGEST_SECRETS: a whpk_ key must hold 32 bytes of base64');
      else verify.ed25519.push(k);
    } else {
      problems.push('POSTGATE_INGEST_SECRETS: every entry starts with whsec_ (HMAC secret) or whpk_ (ed25519 public key)');
    }
  }
  const settings: FunctionSettings = {
    bucket: need('POSTGATE_BUCKET'),
    table: need('POSTGATE_TABLE'),
    queue: need('POSTGATE_QUEUE'),
    deadLetterQueue: need('POSTGATE_DLQ'),
    verify,
    toleranceSeconds: int('POSTGATE_SIGNATURE_TOLERANCE', 300, 1, 3600),
    retentionDays: int('POSTGATE_RETENTION_DAYS', 30, 1, 3650),
    retryBaseSeconds: int('POSTGATE_RETRY_BASE', 30, 0, 900),
    maxAttempts: int('POSTGATE_MAX_ATTEMPTS', 8, 1, 1000),
    // A link presigned with the function's role credentials stops working when
    // that session ends (hours), whatever it says: 6 h is the most offered.
    linkSeconds: int('POSTGATE_LINK_SECONDS', 3600, 60, 21_600),
    maxFetchBytes: int('POSTGATE_MAX_FETCH_BYTES', 100 * 1024 * 1024, 1024, 1024 * 1024 * 1024),
    configFile: configLocation(env.POSTGATE_CONFIG?.trim() || 'postgate.yml'),
    configIntervalSeconds: int('POSTGATE_CONFIG_INTERVAL', 60, 1, 86_400),
  };
  if (problems.length) throw configError(problems);
  return settings;
}

/** A remote location as given; a file as an absolute path. */
function configLocation(raw: string): string {
  return parseRemote(raw) ? raw : path.resolve(raw);
}

export function configError(problems: string[], cause?: unknown): GatewayError {
  return new GatewayError({ code: 'PG_FN_CONFIG', message: `function configuration: ${problems.join('; ')}`, transient: true, cause });
}

/**
 * The routes file, validated as the edge validates its own. The functions
 * deliver to webhooks only (storage is theirs already; a Lambda calling
 * Lambdas belongs in Step Functions): any other target type is refused here.
 */
export async function loadRoutes(file: string, env: Env = process.env): Promise<ResolvedConfig> {
  return webhooksOnly(await loadConfig({ file, env: routeRefs(env) }));
}

/**
 * The routes and where newer versions come from: a file in the bundle never
 * changes; a configuration in S3 or SSM (config/source.ts) is asked by
 * `next()` and each version validated as `loadRoutes` validates a file.
 */
export interface RoutesSource {
  config: ResolvedConfig;
  readonly where: string;
  /** A newer valid version, or null (unchanged, or the version refused last). Throws for a version that fails. */
  next(): Promise<ResolvedConfig | null>;
}

export async function openRoutes(location: string, env: Env = process.env): Promise<RoutesSource> {
  const remote = parseRemote(location);
  if (!remote) return { config: await loadRoutes(location, env), where: location, next: async () => null };
  const { config, source } = await openConfigSource(remote, { env: routeRefs(env) });
  return {
    config: webhooksOnly(config),
    where: source.where,
    async next() {
      const cfg = await source.next();
      return cfg ? webhooksOnly(cfg) : null;
    },
  };
}

// The functions' own POSTGATE_* settings are not configuration overrides
// (the edge reads POSTGATE_<KEY> as one): the routes file alone decides.
function routeRefs(env: Env): Env {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('POSTGATE_')));
}

function webhooksOnly(cfg: ResolvedConfig): ResolvedConfig {
  const problems: string[] = [];
  cfg.routes.forEach((r, i) =>
    r.targets.forEach((t, j) => {
      if (t.type !== 'webhook') problems.push(`routes[${i}].targets[${j}]: the functions deliver to webhooks only, not "${t.type}"`);
    }),
  );
  if (problems.length) throw configError(problems);
  return cfg;
}
