/**
 * What the three functions share: settings, routes and clients made once per
 * cold start (a failed start is retried by the next invocation, not cached),
 * the destinations of an event, and one JSON log line per outcome on stdout
 * (CloudWatch Logs).
 */
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { routingTableOf } from '../routing/from-config.js';
import { headerConditionHolds, resolveTargets, routeRecipient, type RoutingTable } from '../routing/index.js';
import type { ResolvedConfig } from '../config/load.js';
import type { TargetConfig, WebhookTargetConfig } from '../config/schema.js';
import { configError, openRoutes, readSettings, type FunctionSettings, type RoutesSource } from './settings.js';
import { Store } from './store.js';

export interface Runtime {
  settings: FunctionSettings;
  store: Store;
  config: ResolvedConfig;
  routing: RoutingTable<TargetConfig & { id: string }>;
}

let runtime: Promise<{ settings: FunctionSettings; store: Store; routes: RoutesSource }> | null = null;
/** The routes in force: replaced whole when a newer configuration validates, never edited. */
let current: Runtime | null = null;
let checkedAt = 0;

/**
 * Settings, clients and the routes in force. A configuration kept in S3 or
 * SSM (POSTGATE_CONFIG=s3://… or ssm:/…) is asked for a newer version at most
 * every POSTGATE_CONFIG_INTERVAL seconds, at the start of an invocation; a
 * version that validates replaces the routes for the invocations after it,
 * one that fails is logged (PG_CONFIG_RELOAD, and a CloudWatch metric) and
 * the routes in force stay (docs/functions.md, "Routes").
 */
export async function getRuntime(): Promise<Runtime> {
  if (!runtime) {
    runtime = (async () => {
      await secretsFromSsm(process.env);
      const settings = readSettings();
      const routes = await openRoutes(settings.configFile);
      const store = new Store(settings);
      current = { settings, store, config: routes.config, routing: routingTableOf(routes.config) };
      checkedAt = Date.now();
      return { settings, store, routes };
    })();
    runtime.catch(() => {
      runtime = null;
    });
  }
  const { settings, store, routes } = await runtime;
  if (Date.now() - checkedAt >= settings.configIntervalSeconds * 1000) {
    checkedAt = Date.now();
    try {
      const next = await routes.next();
      if (next) {
        current = { settings, store, config: next, routing: routingTableOf(next) };
        log('info', 'routes reloaded', { source: routes.where, routes: next.routes.length });
        metric('ConfigReloads', 'reloaded');
      }
    } catch (err) {
      log('error', 'configuration reload failed; the configuration in force stays', { source: routes.where, code: 'PG_CONFIG_RELOAD', ...errorFields(err) });
      metric('ConfigReloads', 'failed');
    }
  }
  return current!;
}

/**
 * One count as a CloudWatch metric, by the embedded metric format: a log
 * line CloudWatch Logs turns into a metric (namespace postgate/functions),
 * with no API call and no permission beyond writing the log.
 */
function metric(name: string, result: string): void {
  console.log(
    JSON.stringify({
      _aws: { Timestamp: Date.now(), CloudWatchMetrics: [{ Namespace: 'postgate/functions', Dimensions: [['result']], Metrics: [{ Name: name, Unit: 'Count' }] }] },
      result,
      [name]: 1,
    }),
  );
}

let base: { settings: FunctionSettings; store: Store } | null = null;

/** Settings and clients without the routes (redrive needs no routes and no secrets). */
export function getBase(): { settings: FunctionSettings; store: Store } {
  if (!base) {
    const settings = readSettings();
    base = { settings, store: new Store(settings) };
  }
  return base;
}

/**
 * Secrets are fetched from SSM Parameter Store at cold start and kept in
 * memory: `NAME_SSM=/path/of/parameter` sets `NAME` (unless `NAME` is already
 * set, as offline). So they appear neither in the CloudFormation template nor
 * in the function's configuration, and each role may read only its own.
 */
export async function secretsFromSsm(env: Record<string, string | undefined>): Promise<void> {
  const wanted = Object.entries(env).filter(([k, v]) => k.endsWith('_SSM') && v && !env[k.slice(0, -4)]);
  if (!wanted.length) return;
  const ssm = new SSMClient({});
  try {
    for (const [k, name] of wanted) {
      try {
        const r = await ssm.send(new GetParameterCommand({ Name: name, WithDecryption: true }));
        const value = r.Parameter?.Value;
        if (!value) throw new Error('empty value');
        env[k.slice(0, -4)] = value;
      } catch (err) {
        throw configError([`${k}: cannot read SSM parameter ${name} (${(err as Error).name}: ${(err as Error).message})`], err);
      }
    }
  } finally {
    ssm.destroy();
  }
}

export interface Destination {
  /** The destination id: the target id, per resolved URL for templated targets (as at the edge). */
  id: string;
  spec: WebhookTargetConfig & { id: string };
  /** The resolved URL of a templated target, null otherwise. */
  url: string | null;
  /** The recipients routed to it, in envelope order. */
  recipients: string[];
}

/**
 * The destinations of an event: the webhook targets of each recipient's
 * route(s) whose header condition holds, once each, with the recipients
 * routed to each — the edge's grouping (planDeliveries) for the same
 * envelope and routes. ingest enqueues one job per destination; route
 * recomputes them from the stored event, so a job names a destination and
 * never carries a URL or recipients of its own.
 */
export function destinationsOf(
  rt: Pick<Runtime, 'routing'>,
  data: { envelope: { mailFrom: string; rcptTo: readonly { address: string }[]; clientAddress?: string }; headers?: readonly { name: string; value: string }[]; classification?: { autoReply: boolean; bulk: boolean; bounce: unknown } | null },
): { destinations: Destination[]; unrouted: string[] } {
  const out = new Map<string, Destination>();
  const unrouted: string[] = [];
  for (const r of data.envelope.rcptTo) {
    const decision = routeRecipient(rt.routing, r.address, { mailFrom: data.envelope.mailFrom, clientAddress: data.envelope.clientAddress });
    if (decision.kind !== 'accept') {
      unrouted.push(r.address);
      continue;
    }
    let any = false;
    for (const t of resolveTargets(decision)) {
      if (t.spec.type !== 'webhook') continue;
      if (!headerConditionHolds(rt.routing, t.spec.when, data.headers ?? [], data.classification)) continue;
      any = true;
      const d = out.get(t.id);
      if (!d) out.set(t.id, { id: t.id, spec: t.spec, url: t.templated ? t.url : null, recipients: [r.address] });
      else if (!d.recipients.includes(r.address)) d.recipients.push(r.address);
    }
    if (!any) unrouted.push(r.address);
  }
  return { destinations: [...out.values()], unrouted };
}

export function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  const line = JSON.stringify({ level, time: new Date().toISOString(), msg, ...fields });
  if (level === 'info') console.log(line);
  else console.error(line);
}

export function errorFields(err: unknown): Record<string, unknown> {
  const e = err as { code?: unknown; name?: unknown; message?: unknown };
  return { err: { code: typeof e?.code === 'string' ? e.code : undefined, name: typeof e?.name === 'string' ? e.name : 'Error', message: String(e?.message ?? err) } };
}
