/**
 * What the three functions share: settings, routes and clients made once per
 * cold start (a failed start is retried by the next invocation, not cached),
 * and one JSON log line per outcome on stdout (CloudWatch Logs).
 */
import { routingTableOf } from '../routing/from-config.js';
import type { RoutingTable } from '../routing/index.js';
import type { ResolvedConfig } from '../config/load.js';
import type { TargetConfig } from '../config/schema.js';
import { loadRoutes, readSettings, type FunctionSettings } from './settings.js';
import { Store } from './store.js';

export interface Runtime {
  settings: FunctionSettings;
  store: Store;
  config: ResolvedConfig;
  routing: RoutingTable<TargetConfig & { id: string }>;
}

let runtime: Promise<Runtime> | null = null;

export function getRuntime(): Promise<Runtime> {
  if (!runtime) {
    runtime = (async () => {
      const settings = readSettings();
      const config = await loadRoutes(settings.configFile);
      return { settings, store: new Store(settings), config, routing: routingTableOf(config) };
    })();
    runtime.catch(() => {
      runtime = null;
    });
  }
  return runtime;
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
