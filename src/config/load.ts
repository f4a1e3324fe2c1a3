/**
 * Loading the configuration: YAML file → `${ENV}` references → POSTGATE_*
 * environment overrides → schema validation (every problem at once, with its
 * path, renamed keys with a hint) → derived values → frozen.
 *
 * This is the only module that reads process.env (callers pass `env` in).
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { parseHostPort } from './units.js';
import { configSchema, type Config, type ConfigInput, type TargetConfig } from './schema.js';
import { defaultLambdaId, defaultS3Id, defaultWebhookId } from '../message/ids.js';
import { patternDomains } from '../routing/index.js';

import { ConfigError, type ConfigProblem } from './errors.js';

export { ConfigError, type ConfigProblem };

/**
 * Keys people bring from other tools or older drafts, with what to write
 * instead. Matched against the path with array indexes replaced by `[]`.
 */
export const RENAMED_KEYS: Record<string, string> = {
  'smtp.port': 'use smtp.listen: "host:port"',
  'smtp.host': 'use smtp.listen: "host:port"',
  'smtp.address': 'use smtp.listen: "host:port"',
  'smtp.size': 'use smtp.maxMessageSize',
  'smtp.maxSize': 'use smtp.maxMessageSize',
  'smtp.name': 'use smtp.hostname',
  'smtp.tls': 'use the top-level tls: { certificates: [{ cert, key }] }',
  'listeners[].port': 'use listen: "host:port"',
  'listeners[].type': 'use role: mx | submission | smtps',
  'listeners[].secure': 'use role: smtps',
  'listeners[].proxy': 'use proxyProtocol: { trustedSources: [...] }',
  'routes[].match': 'use recipients: [...]',
  'routes[].to': 'use recipients: [...]',
  'routes[].rcpt': 'use recipients: [...]',
  'routes[].webhooks': 'use targets: [{ type: webhook, url }]',
  'routes[].destinations': 'use targets: [...]',
  'routes[].webhook': 'use targets: [{ type: webhook, url }]',
  'routes[].targets[].endpoint': 'use url',
  'routes[].targets[].signingSecret': 'use secret',
  'routes[].targets[].secretKey': 'use secret',
  'routes[].targets[].timeoutMs': 'use timeout (a number of ms or "25s")',
  'tls.cert': 'use tls.certificates: [{ cert, key }]',
  'tls.key': 'use tls.certificates: [{ cert, key }]',
  'auth.allowInsecureAuth': 'use auth.allowInsecure',
  'storage.dir': 'use storage.path',
  'storage.directory': 'use storage.path',
  'http.port': 'use http.listen: "host:port"',
  'log': 'use logging: { level }',
  'logLevel': 'use logging: { level }',
  'webhooks': 'use routes: [{ recipients, targets }]',
};

function formatPath(p: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const seg of p) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${String(seg)}` : String(seg);
  }
  return out;
}

function renamedHint(parent: ReadonlyArray<PropertyKey>, key: string): string | undefined {
  const generic = [...parent.map((s) => (typeof s === 'number' ? '[]' : String(s))), key]
    .join('.')
    .replace(/\.\[\]/g, '[]');
  return RENAMED_KEYS[generic] ?? RENAMED_KEYS[generic.replace(/^postmaster\.targets/, 'routes[].targets')];
}

/**
 * Replaces `${NAME}` in every string with the environment variable's value
 * (`$${` escapes a literal `${`). Unset variables are problems, reported with
 * the others. Values are never echoed in messages (they may be secrets).
 */
export function resolveEnvRefs(
  value: unknown,
  env: Record<string, string | undefined>,
  problems: ConfigProblem[],
  at: PropertyKey[] = [],
  wholeRefs?: PropertyKey[][],
): unknown {
  if (typeof value === 'string') {
    // A value that is exactly one reference is remembered: if the schema
    // wants a number or boolean there, loadConfig retries with the typed value
    // (so `maxClients: ${MAX}` works while `hostname: ${H}` with H=007 stays text).
    const whole = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(value);
    if (whole && env[whole[1]!] !== undefined) {
      wholeRefs?.push(at);
      return env[whole[1]!]!;
    }
    return value.replace(/\$?\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (whole, name: string) => {
      if (whole.startsWith('$$')) return whole.slice(1);
      const v = env[name];
      if (v === undefined) {
        problems.push({ path: formatPath(at), message: `environment variable ${name} is not set (referenced as \${${name}})` });
        return whole; // left as written, so validation does not add a second, confusing problem
      }
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => resolveEnvRefs(v, env, problems, [...at, i], wholeRefs));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveEnvRefs(v, env, problems, [...at, k], wholeRefs)]));
  }
  return value;
}

const ENV_PREFIX = 'POSTGATE_';

/**
 * `POSTGATE_SMTP__MAX_MESSAGE_SIZE=10MiB` sets smtp.maxMessageSize: `__`
 * separates levels, single `_` separates words (camelCased). Values are read
 * as YAML scalars, so `false`, `100` and `"x"` keep their types. Only object
 * keys can be set this way, not array elements.
 */
export function applyEnvOverrides(doc: Record<string, unknown>, env: Record<string, string | undefined>): Record<string, unknown> {
  const out = structuredClone(doc);
  const sections = new Set(Object.keys(configSchema.shape));
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || raw === undefined || name === 'POSTGATE_CONFIG') continue;
    const keys = name
      .slice(ENV_PREFIX.length)
      .split('__')
      .map((part) => part.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()));
    if (keys.some((k) => k === '')) continue;
    // Only variables that name a configuration section are overrides; others
    // (POSTGATE_WEBHOOK_SECRET for a ${...} reference, say) are left alone.
    if (!sections.has(keys[0]!)) continue;
    let node: Record<string, unknown> = out;
    for (const k of keys.slice(0, -1)) {
      const next = node[k];
      if (!next || typeof next !== 'object' || Array.isArray(next)) node[k] = {};
      node = node[k] as Record<string, unknown>;
    }
    let parsed: unknown;
    try {
      parsed = parseYaml(raw);
    } catch {
      parsed = raw;
    }
    node[keys[keys.length - 1]!] = parsed ?? raw;
  }
  return out;
}

function withTypedRefs(doc: Record<string, unknown>, refs: PropertyKey[][], failed: ConfigProblem[]): Record<string, unknown> | null {
  const failedPaths = new Set(failed.filter((p) => /expected (number|boolean)|Invalid input/.test(p.message)).map((p) => p.path));
  const out = structuredClone(doc);
  let changed = false;
  for (const at of refs) {
    if (!failedPaths.has(formatPath(at))) continue;
    let node: unknown = out;
    for (const k of at.slice(0, -1)) node = (node as Record<PropertyKey, unknown>)[k as string];
    const last = at[at.length - 1] as string;
    const raw = (node as Record<string, unknown>)[last];
    let typed: unknown;
    try {
      typed = parseYaml(String(raw));
    } catch {
      continue;
    }
    if (typeof typed === 'number' || typeof typed === 'boolean') {
      (node as Record<string, unknown>)[last] = typed;
      changed = true;
    }
  }
  return changed ? out : null;
}

export interface ResolvedListener {
  name: string;
  role: 'mx' | 'submission' | 'smtps';
  host: string;
  port: number;
  auth: boolean;
  /** MAIL only after STARTTLS (RFC 3207 §4). */
  requireTls: boolean;
  proxyProtocol: { trustedSources: string[]; timeout: number } | undefined;
}

/** The validated config plus values derived once, so nothing downstream re-derives them. */
export interface ResolvedConfig extends Config {
  hostname: string;
  resolvedListeners: ResolvedListener[];
  /** Lower-case domains postgate accepts mail for (routes, domains, postmaster). */
  servedDomains: string[];
  postmasterTargets: TargetConfig[];
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

function withTargetIds(targets: TargetConfig[], storagePath: string): TargetConfig[] {
  return targets.map((t) => {
    if (t.type === 'webhook') return { ...t, id: t.id ?? defaultWebhookId(t.url, t.format) };
    if (t.type === 'lambda') return { ...t, id: t.id ?? defaultLambdaId(t) };
    if (t.type === 's3') return { ...t, id: t.id ?? defaultS3Id(t) };
    const p = path.resolve(t.path ?? storagePath);
    return { ...t, path: p, id: t.id ?? `local:${p}` };
  });
}

/**
 * One line per problem: a safety net under the schema's own `abort`s, so two
 * checks that reach the same verdict on one option never print it twice.
 */
function uniqueProblems(problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>();
  return problems.filter((p) => {
    const key = `${p.path}\n${p.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * Validates a parsed document (after env refs and overrides) and derives the
 * resolved config. Throws ConfigError with every problem at once.
 */
export function validateConfig(doc: unknown, opts: { hostname?: string; cwd?: string } = {}): ResolvedConfig {
  const result = configSchema.safeParse(doc ?? {});
  if (!result.success) {
    const problems: ConfigProblem[] = [];
    for (const issue of result.error.issues) {
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) {
          const hint = renamedHint(issue.path, key);
          problems.push({
            path: formatPath([...issue.path, key]),
            message: hint ? `unknown key (renamed: ${hint})` : 'unknown key',
          });
        }
      } else {
        problems.push({ path: formatPath(issue.path), message: issue.message });
      }
    }
    throw new ConfigError('PG_CONFIG_INVALID', uniqueProblems(problems));
  }
  const cfg = result.data;
  const cwd = opts.cwd ?? process.cwd();
  const storagePath = path.resolve(cwd, cfg.storage.path);
  const listeners: ResolvedListener[] = (cfg.listeners ?? [{ role: 'mx' as const, listen: cfg.smtp.listen, requireTls: false }]).map((l, i) => {
    // The schema has validated the form already.
    const { host, port } = parseHostPort(l.listen)!;
    const role = l.role ?? 'mx';
    return {
      name: l.name ?? (cfg.listeners ? `${role}-${i}` : 'mx'),
      role,
      host,
      port,
      auth: role === 'submission' ? true : (l.auth ?? role !== 'mx'),
      requireTls: l.requireTls,
      proxyProtocol: 'proxyProtocol' in l ? l.proxyProtocol : undefined,
    };
  });
  const domains = new Set<string>(cfg.domains);
  // Served domains in ASCII (IDNA A-labels), the form routing compares; "*" adds none.
  for (const r of cfg.routes) for (const p of r.recipients) for (const d of patternDomains(p)) domains.add(d);
  const resolved: ResolvedConfig = {
    ...cfg,
    storage: { ...cfg.storage, path: storagePath },
    queue: { ...cfg.queue, path: path.resolve(cwd, cfg.queue.path ?? path.join(storagePath, 'spool')) },
    routes: cfg.routes.map((r, i) => ({
      ...r,
      name: r.name ?? `route-${i}`,
      targets: withTargetIds(r.targets, storagePath),
      ...(r.scan?.quarantine ? { scan: { ...r.scan, quarantine: withTargetIds(r.scan.quarantine, storagePath) } } : {}),
    })),
    hostname: cfg.smtp.hostname ?? opts.hostname ?? os.hostname(),
    resolvedListeners: listeners,
    servedDomains: [...domains].sort(),
    postmasterTargets: withTargetIds(cfg.postmaster.targets ?? [{ type: 'local', required: true }], storagePath),
  };
  const shared = sharedIdProblems(resolved);
  if (shared.length) throw new ConfigError('PG_CONFIG_INVALID', shared);
  return deepFreeze(resolved);
}

/** How a route uses a target, not what the target is: these may differ between routes that share it. */
const USAGE_KEYS = new Set(['id', 'required', 'when']);

/**
 * Targets with one id are one instance (gateway.ts): its URL, format,
 * secrets and limits come from the first route that names it. Two targets
 * that share an id — given, or derived from the same URL — but differ in
 * anything else would silently lose the second one's settings, so the
 * configuration is refused instead.
 */
function sharedIdProblems(cfg: ResolvedConfig): ConfigProblem[] {
  const seen = new Map<string, { at: string; settings: string }>();
  const problems: ConfigProblem[] = [];
  const check = (targets: readonly TargetConfig[], at: string) =>
    targets.forEach((t, i) => {
      const settings = JSON.stringify(Object.entries(t).filter(([k]) => !USAGE_KEYS.has(k)).sort(([a], [b]) => (a < b ? -1 : 1)));
      const first = seen.get(t.id!);
      if (!first) return void seen.set(t.id!, { at: `${at}[${i}]`, settings });
      if (first.settings !== settings) {
        problems.push({ path: `${at}[${i}]`, message: `has the id "${t.id}" of ${first.at} but other settings: one id is one target; give this one its own id` });
      }
    });
  cfg.routes.forEach((r, i) => {
    check(r.targets, `routes[${i}].targets`);
    if (r.scan?.quarantine) check(r.scan.quarantine, `routes[${i}].scan.quarantine`);
  });
  check(cfg.postmasterTargets, 'postmaster.targets');
  return problems;
}

export interface LoadOptions {
  /** Path of the YAML file; omitted → the embedded default (no file). */
  file?: string | undefined;
  /**
   * The file's content, already read (a configuration kept in S3 or SSM,
   * config/source.ts); `file` then only names it in messages.
   */
  text?: string | undefined;
  /** Environment for `${NAME}` references and POSTGATE_* overrides. */
  env?: Record<string, string | undefined>;
  /** Applied after the file and the environment (command-line flags). */
  overrides?: (doc: Record<string, unknown>) => Record<string, unknown>;
  hostname?: string;
  cwd?: string;
}

/** Reads, resolves and validates the configuration. Throws ConfigError. */
export async function loadConfig(opts: LoadOptions = {}): Promise<ResolvedConfig> {
  const env = opts.env ?? process.env;
  let doc: Record<string, unknown> = {};
  if (opts.file || opts.text !== undefined) {
    let text: string;
    try {
      text = opts.text ?? (await readFile(opts.file!, 'utf8'));
    } catch (err) {
      throw new ConfigError('PG_CONFIG_READ', [{ path: '', message: `cannot read ${opts.file}: ${(err as Error).message}` }], err);
    }
    try {
      const parsed: unknown = parseYaml(text, { prettyErrors: true });
      if (parsed !== null && parsed !== undefined && (typeof parsed !== 'object' || Array.isArray(parsed))) {
        throw new ConfigError('PG_CONFIG_READ', [{ path: '', message: `${opts.file}: the top level must be a mapping` }]);
      }
      doc = (parsed as Record<string, unknown> | null) ?? {};
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      const msg = err instanceof YAMLParseError ? err.message : String(err);
      throw new ConfigError('PG_CONFIG_READ', [{ path: '', message: `${opts.file}: invalid YAML: ${msg}` }], err);
    }
  }
  const problems: ConfigProblem[] = [];
  const wholeRefs: PropertyKey[][] = [];
  doc = resolveEnvRefs(doc, env, problems, [], wholeRefs) as Record<string, unknown>;
  doc = applyEnvOverrides(doc, env);
  if (opts.overrides) doc = opts.overrides(doc);
  const vopts = { ...(opts.hostname ? { hostname: opts.hostname } : {}), ...(opts.cwd ? { cwd: opts.cwd } : {}) };
  try {
    let cfg: ResolvedConfig;
    try {
      cfg = validateConfig(doc, vopts);
    } catch (err) {
      // Retry with typed values where a whole ${VAR} failed as text.
      const typed = err instanceof ConfigError && wholeRefs.length ? withTypedRefs(doc, wholeRefs, err.problems) : null;
      if (!typed) throw err;
      cfg = validateConfig(typed, vopts);
    }
    if (problems.length) throw new ConfigError('PG_CONFIG_INVALID', problems);
    return cfg;
  } catch (err) {
    if (err instanceof ConfigError && problems.length && err.problems !== problems) {
      // A value left as "${NAME}" because NAME is unset fails its own check
      // too; the unset variable is the one problem worth reporting there.
      const unset = new Set(problems.map((p) => p.path));
      throw new ConfigError('PG_CONFIG_INVALID', [...problems, ...err.problems.filter((p) => !unset.has(p.path))]);
    }
    throw err;
  }
}

/** Paths whose values are secrets: never logged, masked in `postgate check --print`. */
export const SECRET_KEYS = ['secret', 'signingKey', 'password', 'authorization', 'Authorization'];

/** A copy of the config safe to print or log. */
export function redactConfig(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactConfig);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, SECRET_KEYS.includes(k) && (typeof v === 'string' || Array.isArray(v)) ? '[redacted]' : redactConfig(v)]),
    );
  }
  // Credentials inside URLs (https://user:pass@host/) are secrets too.
  if (typeof value === 'string' && /^[a-z][a-z0-9+.-]*:\/\/[^/@\s]*:[^/@\s]*@/i.test(value)) {
    return value.replace(/^([a-z][a-z0-9+.-]*:\/\/[^/:@\s]*):[^/@\s]*@/i, '$1:[redacted]@');
  }
  return value;
}

export type { Config, ConfigInput };
