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
  /**
   * Starts the matching waiting deliveries; how many, or null when the queue
   * is shared and the others' part is not known here (S3 + SQS: the request
   * is passed on to every instance by its node, which each matches itself).
   */
  flush(match: (meta: SpoolMeta) => boolean, node: string): number | null;
}

const DOMAIN_RE = /^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/** Which items a node names, or the syntax error's reply. */
export function nodeMatcher(node: string): ((meta: SpoolMeta) => boolean) | Reply {
  if (node.startsWith('#')) {
    const name = node.slice(1);
    if (!name) return reply('PG_ETRN_SYNTAX_QUEUE');
    return (m) => m.route === name;
  }
  const sub = node.startsWith('@');
  const domain = (sub ? node.slice(1) : node).toLowerCase().replace(/\.$/, '');
  if (!DOMAIN_RE.test(domain)) return reply('PG_ETRN_SYNTAX_NODE');
  const inDomain = (addr: string) => {
    const d = addr.slice(addr.lastIndexOf('@') + 1).toLowerCase();
    return d === domain || (sub && d.endsWith(`.${domain}`));
  };
  return (m) => m.rcptTo.some(inDomain);
}

export function etrnReply(node: string, allowed: boolean, queue: EtrnQueue): Reply {
  if (!allowed) return reply('PG_ETRN_NOT_ALLOWED', { node });
  const match = nodeMatcher(node);
  if (typeof match !== 'function') return match;
  const n = queue.flush(match, node);
  // RFC 1985 §5: 250 when the server does not know how many are pending.
  if (n === null) return reply('PG_ETRN_QUEUING', { node });
  if (n === 0) return reply('PG_ETRN_NOTHING_WAITING', { node });
  return reply('PG_ETRN_STARTED', { count: n, node });
}
