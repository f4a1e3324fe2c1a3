/**
 * ETRN (RFC 1985): a client asks the server to start delivering what is
 * queued for a node. In postgate the queue holds deliveries to targets, so
 * ETRN starts the waiting deliveries whose recipients are in that domain.
 *
 * Node forms (RFC 1985 §3, §5): `example.com` — recipients in that domain;
 * `@example.com` — that domain and its subdomains; `#name` — a queue by
 * name, here a route name.
 *
 * Replies (RFC 1985 §5): 250 started, 251 nothing waiting, 253 n pending and
 * started, 458 cannot start, 459 not allowed; 501 bad syntax.
 */
import type { SpoolMeta } from './spool.js';

export interface EtrnQueue {
  flush(match: (meta: SpoolMeta) => boolean): number;
}

const DOMAIN_RE = /^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

export function etrnReply(node: string, allowed: boolean, queue: EtrnQueue): [number, string] {
  if (!allowed) return [459, `5.7.1 Node ${node} not allowed: this client may not start the queue`];
  let match: (meta: SpoolMeta) => boolean;
  if (node.startsWith('#')) {
    const name = node.slice(1);
    if (!name) return [501, '5.5.4 Syntax: ETRN #<queue name>'];
    match = (m) => m.route === name;
  } else {
    const sub = node.startsWith('@');
    const domain = (sub ? node.slice(1) : node).toLowerCase().replace(/\.$/, '');
    if (!DOMAIN_RE.test(domain)) return [501, '5.5.4 Syntax: ETRN <domain>, @<domain> or #<queue name>'];
    const inDomain = (addr: string) => {
      const d = addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();
      return d === domain || (sub && d.endsWith(`.${domain}`));
    };
    match = (m) => m.rcptTo.some(inDomain);
  }
  const n = queue.flush(match);
  if (n === 0) return [251, `2.0.0 OK, no messages waiting for node ${node}`];
  return [253, `2.0.0 OK, ${n} pending messages for node ${node} started`];
}
