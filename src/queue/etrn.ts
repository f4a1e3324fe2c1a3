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
import { reply, type Reply } from '../transaction/replies.js';
import type { SpoolMeta } from './spool.js';

export interface EtrnQueue {
  flush(match: (meta: SpoolMeta) => boolean): number;
}

const DOMAIN_RE = /^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

export function etrnReply(node: string, allowed: boolean, queue: EtrnQueue): Reply {
  if (!allowed) return reply('PG_ETRN_NOT_ALLOWED', { node });
  let match: (meta: SpoolMeta) => boolean;
  if (node.startsWith('#')) {
    const name = node.slice(1);
    if (!name) return reply('PG_ETRN_SYNTAX_QUEUE');
    match = (m) => m.route === name;
  } else {
    const sub = node.startsWith('@');
    const domain = (sub ? node.slice(1) : node).toLowerCase().replace(/\.$/, '');
    if (!DOMAIN_RE.test(domain)) return reply('PG_ETRN_SYNTAX_NODE');
    const inDomain = (addr: string) => {
      const d = addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();
      return d === domain || (sub && d.endsWith(`.${domain}`));
    };
    match = (m) => m.rcptTo.some(inDomain);
  }
  const n = queue.flush(match);
  if (n === 0) return reply('PG_ETRN_NOTHING_WAITING', { node });
  return reply('PG_ETRN_STARTED', { count: n, node });
}
