/**
 * The edge's configuration file (deploy/edge.yaml unless `-c config=...`
 * names another) as the stack needs it: which SMTP listeners the container
 * really opens. The NLB publishes a port only for a listener the file has, so
 * the balancer can never offer a port nobody answers on, and no port number
 * is written down twice.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parse } from 'yaml';
import { PUBLIC_PORT_BY_ROLE, type ListenerRole } from './constants.js';

/** One SMTP listener of the file and the public port the NLB maps to it. */
export interface EdgeListener {
  /** listeners[].name, or `<role>-<index>` as postgate names it. */
  name: string;
  role: ListenerRole;
  /** The port of listeners[].listen: what the task's target group points at. */
  containerPort: number;
  /** The NLB's port for this role (25, 587, 465). */
  publicPort: number;
}

/**
 * Where a certificate of tls.certificates[].source lives, as the task role
 * must be allowed to read it: an object of the stack's own bucket, or an SSM
 * parameter (a Secrets Manager secret through its /aws/reference/ name).
 */
export type TlsSource = { type: 's3'; key: string } | { type: 'ssm'; parameter: string } | { type: 'secret'; parameter: string; secretName: string };

export interface EdgeConfig {
  /** Path relative to the repository root, as the image has it under /app. */
  file: string;
  listeners: EdgeListener[];
  /** Port of http.listen: the operations endpoint (/readyz). */
  opsPort: number;
  /** Certificates kept in S3 or SSM (docs/deploy.md, "TLS certificate"): the task role may read exactly these. */
  tlsSources: TlsSource[];
  /** SHA-256 of the file: a changed file is a new task definition, so the tasks restart with it. */
  sha256: string;
}

const SECRET_REFERENCE = '/aws/reference/secretsmanager/';

function tlsSourcesOf(doc: Record<string, any>, rel: string): TlsSource[] {
  const certs: unknown = doc.tls?.certificates;
  if (!Array.isArray(certs)) return [];
  return certs.flatMap((c: Record<string, any>, i: number): TlsSource[] => {
    const src = c?.source as Record<string, unknown> | undefined;
    if (!src) return [];
    const where = `${rel}: tls.certificates[${i}].source`;
    if (src.type === 's3') {
      // The stack grants reads on its own bucket only: the one the task knows as BLOB_BUCKET.
      if (src.bucket !== '${BLOB_BUCKET}') throw new Error(`${where}: bucket must be "\${BLOB_BUCKET}" (the stack's bucket), got ${JSON.stringify(src.bucket)}`);
      if (typeof src.key !== 'string' || !src.key || src.key.includes('*') || src.key.includes('${')) throw new Error(`${where}: key must be a literal object key`);
      return [{ type: 's3', key: src.key }];
    }
    if (src.type === 'ssm') {
      const parameter = src.parameter;
      if (typeof parameter !== 'string' || !parameter.startsWith('/') || parameter.includes('*') || parameter.includes('${')) {
        throw new Error(`${where}: parameter must be a literal name starting with "/"`);
      }
      if (parameter.startsWith(SECRET_REFERENCE)) return [{ type: 'secret', parameter, secretName: parameter.slice(SECRET_REFERENCE.length) }];
      return [{ type: 'ssm', parameter }];
    }
    throw new Error(`${where}: unknown type ${JSON.stringify(src.type)}`);
  });
}

function portOf(listen: unknown, where: string): number {
  const m = typeof listen === 'string' ? /:(\d+)$/.exec(listen) : null;
  if (!m) throw new Error(`${where}: expected "host:port", got ${JSON.stringify(listen)}`);
  return Number(m[1]);
}

/**
 * Reads the listeners of `file` (relative to `repoRoot`). Throws when the
 * file cannot work behind this stack's NLB: no listeners, a port the
 * unprivileged container cannot bind, a listener without PROXY protocol (every
 * target group sends PROXY v2 headers), two listeners of one role.
 */
export function readEdgeConfig(repoRoot: string, file: string): EdgeConfig {
  const abs = path.resolve(repoRoot, file);
  const rel = path.relative(repoRoot, abs);
  // The image is built from the repository: a file outside it is not in /app.
  if (rel.startsWith('..') || path.isAbsolute(rel)) throw new Error(`config ${file}: must be a file inside the repository (it is baked into the image)`);
  const text = readFileSync(abs, 'utf8');
  const doc = (parse(text) ?? {}) as Record<string, any>;
  const raw = doc.listeners;
  if (!Array.isArray(raw) || raw.length === 0) {
    throw new Error(`${rel}: the edge stack publishes the file's listeners[]; it has none (add an mx listener with proxyProtocol)`);
  }
  const listeners: EdgeListener[] = raw.map((l: Record<string, unknown>, i: number) => {
    const role = (l.role ?? 'mx') as ListenerRole;
    const where = `${rel}: listeners[${i}]`;
    if (!(role in PUBLIC_PORT_BY_ROLE)) throw new Error(`${where}: unknown role ${JSON.stringify(role)}`);
    const containerPort = portOf(l.listen, `${where}.listen`);
    if (containerPort < 1024) throw new Error(`${where}: port ${containerPort} is below 1024, which the container's non-root user cannot bind`);
    if (!l.proxyProtocol) throw new Error(`${where}: no proxyProtocol, but the NLB sends a PROXY v2 header on every connection`);
    return { name: typeof l.name === 'string' ? l.name : `${role}-${i}`, role, containerPort, publicPort: PUBLIC_PORT_BY_ROLE[role] };
  });
  const roles = listeners.map((l) => l.role);
  const twice = roles.find((r, i) => roles.indexOf(r) !== i);
  if (twice) throw new Error(`${rel}: two ${twice} listeners, but the NLB has one public port (${PUBLIC_PORT_BY_ROLE[twice]}) per role`);
  return { file: rel.split(path.sep).join('/'), listeners, opsPort: portOf(doc.http?.listen, `${rel}: http.listen`), tlsSources: tlsSourcesOf(doc, rel), sha256: createHash('sha256').update(text).digest('hex') };
}

/**
 * `-c submission=true` asks for 587 and 465. They are published only when the
 * file has submission and smtps listeners, which postgate refuses to start
 * without auth.users and tls.certificates: a certificate the repository
 * cannot ship. Asking without them is an error rather than two dead ports.
 */
export function checkSubmission(cfg: EdgeConfig, submission: boolean): void {
  if (!submission) return;
  const missing = (['submission', 'smtps'] as const).filter((r) => !cfg.listeners.some((l) => l.role === r));
  if (missing.length) {
    throw new Error(
      `-c submission=true: ${cfg.file} has no ${missing.join(' or ')} listener, so the NLB would publish ` +
        `${missing.map((r) => PUBLIC_PORT_BY_ROLE[r]).join(' and ')} with nothing behind them. ` +
        'Add the listeners (with proxyProtocol, tls.certificates and auth.users) to a copy of the file under deploy/ ' +
        'and pass it with -c config=deploy/<file>.yaml (docs/deploy.md, "TLS certificate"), or drop -c submission=true.',
    );
  }
}
