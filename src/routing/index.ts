/**
 * Recipient routing: decides at RCPT time which route takes a recipient.
 * Pure: no I/O, no clock, so a decision is a function of (table, address).
 *
 * Precedence: an exact address listed by a route; then `postmaster@` of a
 * served domain (RFC 5321 §4.5.1 requires accepting it); then wildcard
 * patterns, most specific (most literal characters) first. An address in a
 * served domain that nothing matches is an unknown user (550 5.1.1); any
 * other domain is refused (550 5.7.1): postgate is never an open relay.
 */

export interface RoutableTarget {
  id: string;
}

export interface RouteDef<T extends RoutableTarget = RoutableTarget> {
  name: string;
  recipients: readonly string[];
  targets: readonly T[];
}

export interface Route<T extends RoutableTarget = RoutableTarget> {
  name: string;
  targets: readonly T[];
}

export type RcptDecision<T extends RoutableTarget = RoutableTarget> =
  | { kind: 'accept'; route: Route<T> }
  | { kind: 'unknown-user'; domain: string }
  | { kind: 'relay-denied'; domain: string }
  | { kind: 'invalid' };

interface WildcardEntry<T extends RoutableTarget> {
  domain: string;
  local: RegExp;
  specificity: number;
  route: Route<T>;
}

export interface RoutingTable<T extends RoutableTarget = RoutableTarget> {
  readonly exact: ReadonlyMap<string, Route<T>>;
  readonly wildcards: readonly WildcardEntry<T>[];
  readonly served: ReadonlySet<string>;
  readonly postmaster: Route<T>;
}

export const POSTMASTER_ROUTE_NAME = 'postmaster';

function localPartRegExp(local: string): RegExp {
  const body = local
    .split('*')
    .map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${body}$`, 'i');
}

export function buildRoutingTable<T extends RoutableTarget>(
  routes: readonly RouteDef<T>[],
  servedDomains: readonly string[],
  postmasterTargets: readonly T[],
): RoutingTable<T> {
  const exact = new Map<string, Route<T>>();
  const wildcards: WildcardEntry<T>[] = [];
  for (const def of routes) {
    const route: Route<T> = { name: def.name, targets: def.targets };
    for (const pattern of def.recipients) {
      const at = pattern.lastIndexOf('@');
      const local = pattern.slice(0, at);
      const domain = pattern.slice(at + 1).toLowerCase();
      if (!local.includes('*')) exact.set(`${local.toLowerCase()}@${domain}`, route);
      else wildcards.push({ domain, local: localPartRegExp(local), specificity: local.replace(/\*/g, '').length, route });
    }
  }
  wildcards.sort((a, b) => b.specificity - a.specificity);
  return {
    exact,
    wildcards,
    served: new Set(servedDomains.map((d) => d.toLowerCase())),
    postmaster: { name: POSTMASTER_ROUTE_NAME, targets: postmasterTargets },
  };
}

/**
 * Splits an address into local part and lower-cased domain. The local part
 * keeps its case (RFC 5321 §2.4) but matching is case-insensitive, as every
 * mail system in practice treats it. A trailing dot in the domain is ignored.
 */
export function splitAddress(address: string): { local: string; domain: string } | null {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return null;
  return { local: address.slice(0, at), domain: address.slice(at + 1).toLowerCase().replace(/\.$/, '') };
}

export function routeRecipient<T extends RoutableTarget>(table: RoutingTable<T>, address: string): RcptDecision<T> {
  // RFC 5321 §4.1.1.3: "postmaster" may be used without a domain, and §4.5.1
  // requires accepting it.
  if (address.toLowerCase() === 'postmaster') return { kind: 'accept', route: table.postmaster };
  const parts = splitAddress(address);
  if (!parts) return { kind: 'invalid' };
  const { local, domain } = parts;
  const exact = table.exact.get(`${local.toLowerCase()}@${domain}`);
  if (exact) return { kind: 'accept', route: exact };
  if (!table.served.has(domain)) return { kind: 'relay-denied', domain };
  // RFC 5321 §4.5.1: "postmaster" is case-insensitive and must be accepted.
  if (local.toLowerCase() === 'postmaster') return { kind: 'accept', route: table.postmaster };
  for (const w of table.wildcards) {
    if (w.domain === domain && w.local.test(local)) return { kind: 'accept', route: w.route };
  }
  return { kind: 'unknown-user', domain };
}
