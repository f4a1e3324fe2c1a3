/**
 * Recipient routing: decides at RCPT time which route takes a recipient, and
 * after DATA which of the route's targets receive the message.
 * Pure: no I/O, no clock, so a decision is a function of (table, envelope).
 *
 * Addresses are normalised before matching: the domain lower-cased in its
 * ASCII (A-label) form (RFC 5890/5891; patterns written with U-labels are
 * converted too, so both spellings match), unnecessary quotes removed from the
 * local part (`"john.doe"@x` ≡ `john.doe@x`, RFC 5321 §4.1.2), and the local
 * part compared case-insensitively (Unicode NFC, RFC 6531), as every mail
 * system in practice treats it although RFC 5321 §2.4 allows otherwise.
 *
 * Precedence (docs/routing.md): an exact address; then `postmaster@` of a
 * served domain (RFC 5321 §4.5.1 requires accepting it); then every other
 * pattern — `*` globs, regexes, the user part of a subaddress (RFC 5233:
 * `user+tag@d` matches `user@d`), `*` the catch-all — most specific (most
 * literal characters) first, configuration order among equals. A route whose
 * sender or client-network condition fails is passed over. The chosen route
 * ends the search unless it says `stop: false`: then the next matching route
 * is added too (its targets also receive the message), and so on.
 *
 * An address in a served domain that nothing takes is an unknown user
 * (550 5.1.1); any other domain is refused (550 5.7.1): postgate is never an
 * open relay, so every pattern names its domain literally and the catch-all
 * only covers the served domains.
 */
import { createHash } from 'node:crypto';
import { domainToASCII, domainToUnicode } from 'node:url';
import { normaliseAddress } from '../message/address.js';
import { defaultWebhookId } from '../message/ids.js';
import { createAddressMatcher, type AddressMatcher } from '../net/cidr.js';
import { checkRegex } from './regex-safety.js';

export { checkRegex, MAX_PATTERN_LENGTH } from './regex-safety.js';

/** A header condition on a target: chooses, after DATA, whether it receives the message. */
export interface HeaderCondition {
  /** Header field name (case-insensitive). */
  header: string;
  /** Regex (case-insensitive) tested on each value of the field; absent: the field is present. */
  matches?: string | undefined;
}

/** The kinds of machine mail a target condition can name (docs/routing.md "Classification conditions"). */
export type MailKind = 'bounce' | 'autoReply' | 'bulk' | 'machine';

/** A classification condition on a target: the message is (or, with `not`, is not) of a kind. */
export interface ClassificationCondition {
  classification: MailKind | { not: MailKind };
}

export type TargetCondition = HeaderCondition | ClassificationCondition;

/** The parsed message's classification, as the event carries it (message/schema.ts). */
export interface MessageClass {
  autoReply: boolean;
  bulk: boolean;
  bounce: unknown;
}

export interface RoutableTarget {
  id: string;
  required?: boolean | undefined;
  /** A webhook URL; `{name}` placeholders in its path and query take recipient values. */
  url?: string | undefined;
  /** A webhook's format (docs/formats.md); part of its default id. */
  format?: string | undefined;
  when?: TargetCondition | undefined;
}

/** `local@domain` with `*` wildcards in the local part, `*` alone (catch-all), or a regex on the local part. */
export type RecipientPattern = string | { local?: string | undefined; domain: string | readonly string[] };

export interface RouteDef<T extends RoutableTarget = RoutableTarget> {
  name: string;
  recipients: readonly RecipientPattern[];
  targets: readonly T[];
  /** Sender patterns (MAIL FROM, `*` wildcards, `<>` for the null sender); absent: any sender. */
  from?: readonly string[] | undefined;
  /** Client networks (CIDR or addresses); absent: any client. */
  clients?: readonly string[] | undefined;
  /** false: a recipient this route takes is also offered to the next matching route. Default true. */
  stop?: boolean | undefined;
}

export interface Route<T extends RoutableTarget = RoutableTarget> {
  name: string;
  /** Position in the configuration (postmaster: -1). */
  index: number;
  targets: readonly T[];
  stop: boolean;
}

/** The routes that take a recipient, in order: usually one. */
export interface ResolvedRoute<T extends RoutableTarget = RoutableTarget> {
  /** Equal for recipients that may share a transaction (docs/architecture.md §2.3). */
  key: string;
  name: string;
  routes: readonly Route<T>[];
  targets: readonly T[];
}

export interface NormalisedAddress {
  /** `local@domain` as matched: local part lower-cased, domain in ASCII. */
  address: string;
  local: string;
  domain: string;
  unicodeDomain: string;
  /** RFC 5233 subaddress: `user+tag` → user `user`, tag `tag` (as written: tags are often case-sensitive tokens); tag null without one. */
  user: string;
  tag: string | null;
}

export interface RouteMatch<T extends RoutableTarget = RoutableTarget> {
  route: Route<T>;
  /** The pattern as configured (for `postgate route` and logs). */
  pattern: string;
  /** Matched the user part of a subaddress rather than the whole local part. */
  viaTag: boolean;
  /** Named captures of a regex pattern (lower-case, as matched). */
  captures: Readonly<Record<string, string>>;
}

export interface PassedOver {
  route: string;
  pattern: string;
  reason: string;
}

export interface SenderContext {
  /** MAIL FROM address ('' for the null reverse-path `<>`); undefined: not known, sender conditions are not checked. */
  mailFrom?: string | undefined;
  /** Client IP address; undefined: not known, network conditions are not checked. */
  clientAddress?: string | undefined;
}

export type RcptDecision<T extends RoutableTarget = RoutableTarget> =
  | {
      kind: 'accept';
      route: ResolvedRoute<T>;
      matches: readonly RouteMatch<T>[];
      address: NormalisedAddress | null;
      /** The subaddress tag (Postmark's MailboxHash), null without one. */
      mailboxHash: string | null;
      /** More specific routes whose sender or client condition failed. */
      passedOver: readonly PassedOver[];
    }
  | { kind: 'unknown-user'; domain: string; passedOver: readonly PassedOver[] }
  | { kind: 'relay-denied'; domain: string }
  | { kind: 'invalid' };

interface Matcher<T extends RoutableTarget> {
  route: Route<T>;
  cond: RouteConditions;
  pattern: string;
  /** Domains (ASCII) this matcher applies to; null: every served domain (catch-all). */
  domains: ReadonlySet<string> | null;
  specificity: number;
  order: number;
  test(local: string): Record<string, string> | null;
}

interface RouteConditions {
  from: RegExp[] | null;
  clients: AddressMatcher | null;
  fromText: string;
}

export interface RoutingTable<T extends RoutableTarget = RoutableTarget> {
  readonly exact: ReadonlyMap<string, Matcher<T>>;
  readonly patterns: readonly Matcher<T>[];
  readonly served: ReadonlySet<string>;
  readonly postmaster: Route<T>;
  readonly headerRegex: ReadonlyMap<string, RegExp>;
  /** ResolvedRoute objects by key, so equal chains are one object. */
  readonly resolved: Map<string, ResolvedRoute<T>>;
}

export const POSTMASTER_ROUTE_NAME = 'postmaster';

/** Regexes only run on local parts up to this length (RFC 5321 §4.5.3.1.1 allows 64 octets). */
export const MAX_REGEX_INPUT = 128;

/** Built-in placeholders of a target URL template. */
export const URL_PLACEHOLDERS = ['local', 'user', 'tag', 'domain'] as const;

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function globRegExp(glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map(escapeRe).join('.*')}$`, 'iu');
}

/** Lower-case ASCII form of a domain (IDNA, RFC 5891), trailing dot dropped; '' when not a valid name. */
export function asciiDomain(domain: string): string {
  return domainToASCII(domain.replace(/\.$/, '').toLowerCase());
}

const foldLocal = (local: string) => local.normalize('NFC').toLowerCase();

/**
 * Normalises a recipient or sender address for matching; null when it has
 * no `@` with something on both sides.
 */
export function normaliseForRouting(address: string): NormalisedAddress | null {
  const at = address.lastIndexOf('@');
  if (at <= 0 || at === address.length - 1) return null;
  const domainPart = address.slice(at + 1).replace(/\.$/, '');
  const n = normaliseAddress(`${address.slice(0, at)}@${domainPart}`);
  let local: string;
  let domain: string;
  if (n?.local && n.domain) {
    local = n.local;
    domain = n.domain;
  } else {
    // smtp-server accepted it, so route it as written (split at the last @).
    local = address.slice(0, at);
    domain = asciiDomain(domainPart) || domainPart.toLowerCase();
  }
  const written = local.normalize('NFC');
  local = foldLocal(local);
  const plus = local.indexOf('+');
  // RFC 5233 §1: the separator is a site convention; "+" is the common one.
  // A leading "+" has no user part, so it is no subaddress.
  const user = plus > 0 ? local.slice(0, plus) : local;
  const tag = plus > 0 ? written.slice(written.indexOf('+') + 1) : null;
  return { address: `${local}@${domain}`, local, domain, unicodeDomain: domainToUnicode(domain) || domain, user, tag };
}

/** Splits a configured pattern string into local part and ASCII domain. */
export function splitPattern(pattern: string): { local: string; domain: string } | null {
  const at = pattern.lastIndexOf('@');
  if (at <= 0) return null;
  const domain = asciiDomain(pattern.slice(at + 1));
  return domain ? { local: pattern.slice(0, at), domain } : null;
}

/** The domains (ASCII) a pattern serves; empty for the catch-all. */
export function patternDomains(p: RecipientPattern): string[] {
  if (typeof p === 'string') {
    const s = splitPattern(p);
    return s ? [s.domain] : [];
  }
  return (typeof p.domain === 'string' ? [p.domain] : [...p.domain]).map(asciiDomain).filter(Boolean);
}

export function describePattern(p: RecipientPattern): string {
  if (typeof p === 'string') return p;
  const d = typeof p.domain === 'string' ? p.domain : p.domain.join(',');
  return p.local === undefined ? `*@${d}` : `/${p.local}/@${d}`;
}

/** A sender pattern: `<>` is the null reverse-path; a literal domain is compared in ASCII form. */
function senderGlob(p: string): RegExp {
  if (p === '<>') return /^$/;
  const at = p.lastIndexOf('@');
  if (at === -1) return globRegExp(foldLocal(p));
  const domain = p.slice(at + 1);
  const d = domain.includes('*') ? domain.toLowerCase() : asciiDomain(domain) || domain.toLowerCase();
  return globRegExp(`${foldLocal(p.slice(0, at))}@${d}`);
}

function conditions(def: RouteDef<RoutableTarget>): RouteConditions {
  return {
    from: def.from ? def.from.map(senderGlob) : null,
    clients: def.clients ? createAddressMatcher(def.clients) : null,
    fromText: def.from ? def.from.join(', ') : '',
  };
}

/** Why a route's conditions exclude this transaction, or null when they hold. */
function conditionFailure(c: RouteConditions, ctx: SenderContext): string | null {
  if (c.from && ctx.mailFrom !== undefined) {
    const raw = ctx.mailFrom;
    const sender = raw === '' ? '' : (normaliseForRouting(raw)?.address ?? raw.toLowerCase());
    if (!c.from.some((re) => re.test(sender))) return `sender <${raw}> is not one of ${c.fromText}`;
  }
  if (c.clients && ctx.clientAddress !== undefined && !c.clients.matches(ctx.clientAddress)) return `client ${ctx.clientAddress} is not in the route's networks`;
  return null;
}

export function buildRoutingTable<T extends RoutableTarget>(
  routes: readonly RouteDef<T>[],
  servedDomains: readonly string[],
  postmasterTargets: readonly T[],
): RoutingTable<T> {
  const exact = new Map<string, Matcher<T>>();
  const patterns: Matcher<T>[] = [];
  const headerRegex = new Map<string, RegExp>();
  let order = 0;
  const addHeaderRegex = (t: RoutableTarget) => {
    const when = t.when;
    if (when && 'header' in when && when.matches !== undefined && !headerRegex.has(when.matches)) {
      const checked = checkRegex(when.matches);
      if ('problem' in checked) throw new Error(`header regex ${JSON.stringify(when.matches)}: ${checked.problem}`);
      headerRegex.set(when.matches, new RegExp(when.matches, 'iu'));
    }
  };
  routes.forEach((def, index) => {
    const route: Route<T> = { name: def.name, index, targets: def.targets, stop: def.stop ?? true };
    def.targets.forEach(addHeaderRegex);
    const cond = conditions(def);
    for (const p of def.recipients) {
      const base = { route, cond, pattern: describePattern(p), order: order++ };
      if (typeof p === 'string') {
        if (p === '*') {
          patterns.push({ ...base, domains: null, specificity: -1, test: () => ({}) });
          continue;
        }
        const s = splitPattern(p)!;
        const local = foldLocal(s.local);
        if (!local.includes('*')) {
          // Normalised like recipients, so `"john.doe"@x` in the file is `john.doe@x`.
          const key = normaliseForRouting(`${s.local}@${s.domain}`)?.address ?? `${local}@${s.domain}`;
          if (!exact.has(key)) exact.set(key, { ...base, domains: new Set([s.domain]), specificity: Infinity, test: () => ({}) });
          continue;
        }
        const re = globRegExp(local);
        patterns.push({ ...base, domains: new Set([s.domain]), specificity: local.replace(/\*/g, '').length, test: (l) => (re.test(l) ? {} : null) });
        continue;
      }
      const domains = new Set(patternDomains(p));
      if (p.local === undefined) {
        patterns.push({ ...base, domains, specificity: 0, test: () => ({}) });
        continue;
      }
      const checked = checkRegex(p.local);
      if ('problem' in checked) throw new Error(`recipient regex ${JSON.stringify(p.local)}: ${checked.problem}`);
      // Anchored: the regex matches the whole local part, never a piece of it.
      const re = new RegExp(`^(?:${p.local})$`, 'iu');
      patterns.push({
        ...base,
        domains,
        specificity: checked.info.literals,
        test: (l) => {
          if (l.length > MAX_REGEX_INPUT) return null;
          const m = re.exec(l);
          return m ? { ...(m.groups ?? {}) } : null;
        },
      });
    }
  });
  postmasterTargets.forEach(addHeaderRegex);
  // Stable sort: equal specificity keeps configuration order.
  patterns.sort((a, b) => b.specificity - a.specificity || a.order - b.order);
  return {
    exact,
    patterns,
    served: new Set(servedDomains.map((d) => asciiDomain(d) || d.toLowerCase())),
    postmaster: { name: POSTMASTER_ROUTE_NAME, index: -1, targets: postmasterTargets, stop: true },
    headerRegex,
    resolved: new Map(),
  };
}

/**
 * Splits an address into local part and lower-cased domain (kept for
 * callers that only need the domain).
 */
export function splitAddress(address: string): { local: string; domain: string } | null {
  const n = normaliseForRouting(address);
  return n ? { local: n.local, domain: n.domain } : null;
}

function resolvedRoute<T extends RoutableTarget>(table: RoutingTable<T>, routes: Route<T>[]): ResolvedRoute<T> {
  const key = routes.map((r) => r.index).join(',');
  let r = table.resolved.get(key);
  if (!r) {
    r = { key, name: routes.map((x) => x.name).join('+'), routes, targets: routes.flatMap((x) => x.targets) };
    table.resolved.set(key, r);
  }
  return r;
}

export function routeRecipient<T extends RoutableTarget>(table: RoutingTable<T>, address: string, ctx: SenderContext = {}): RcptDecision<T> {
  const passedOver: PassedOver[] = [];
  const accept = (routes: Route<T>[], matches: RouteMatch<T>[], n: NormalisedAddress | null): RcptDecision<T> => ({
    kind: 'accept',
    route: resolvedRoute(table, routes),
    matches,
    address: n,
    mailboxHash: n?.tag ?? null,
    passedOver,
  });
  // RFC 5321 §4.1.1.3: "postmaster" may be used without a domain, and §4.5.1
  // requires accepting it.
  if (address.toLowerCase() === 'postmaster') {
    return accept([table.postmaster], [{ route: table.postmaster, pattern: 'postmaster', viaTag: false, captures: {} }], null);
  }
  const n = normaliseForRouting(address);
  if (!n) return { kind: 'invalid' };
  const served = table.served.has(n.domain);
  // Candidates in precedence order: [matcher, captures, viaTag].
  const candidates: { m: Matcher<T>; captures: Record<string, string>; viaTag: boolean }[] = [];
  const exact = table.exact.get(n.address);
  if (exact) candidates.push({ m: exact, captures: {}, viaTag: false });
  if (!served && !exact) return { kind: 'relay-denied', domain: n.domain };
  // RFC 5321 §4.5.1: "postmaster" is case-insensitive and must be accepted
  // (an exact route pattern for it comes first, as configured).
  const postmaster = n.local === 'postmaster';
  if (served && !postmaster) {
    const scored: { m: Matcher<T>; captures: Record<string, string>; viaTag: boolean; score: number }[] = [];
    const userExact = n.tag !== null ? table.exact.get(`${n.user}@${n.domain}`) : undefined;
    // user@d for user+tag@d ranks just above any pattern with as many literal characters.
    if (userExact) scored.push({ m: userExact, captures: {}, viaTag: true, score: n.user.length + 0.5 });
    for (const m of table.patterns) {
      if (m.domains && !m.domains.has(n.domain)) continue;
      const whole = m.test(n.local);
      if (whole) scored.push({ m, captures: whole, viaTag: false, score: m.specificity });
      else if (n.tag !== null) {
        const viaUser = m.test(n.user);
        if (viaUser) scored.push({ m, captures: viaUser, viaTag: true, score: m.specificity - 0.25 });
      }
    }
    scored.sort((a, b) => b.score - a.score || a.m.order - b.m.order);
    candidates.push(...scored);
  }
  const chain: Route<T>[] = [];
  const matches: RouteMatch<T>[] = [];
  for (const c of candidates) {
    if (chain.includes(c.m.route)) continue;
    const why = conditionFailure(c.m.cond, ctx);
    if (why) {
      passedOver.push({ route: c.m.route.name, pattern: c.m.pattern, reason: why });
      continue;
    }
    chain.push(c.m.route);
    matches.push({ route: c.m.route, pattern: c.m.pattern, viaTag: c.viaTag, captures: c.captures });
    if (c.m.route.stop) break;
  }
  if (chain.length) return accept(chain, matches, n);
  if (postmaster && served) {
    return accept([table.postmaster], [{ route: table.postmaster, pattern: 'postmaster@', viaTag: false, captures: {} }], n);
  }
  return { kind: 'unknown-user', domain: n.domain, passedOver };
}

// ── targets ──────────────────────────────────────────────────────────────────

const PLACEHOLDER = /\{([A-Za-z_$][\w$]*)\}/g;

/** Placeholders of a URL template. */
export function urlPlaceholders(url: string): string[] {
  return [...url.matchAll(PLACEHOLDER)].map((m) => m[1]!);
}

/**
 * Why a URL template is unsafe, or null. Placeholders may only stand in the
 * path and the query: a recipient must never choose the scheme, host or port
 * the gateway connects to (SSRF).
 */
export function urlTemplateProblem(url: string): string | null {
  const authorityEnd = url.indexOf('/', url.indexOf('//') + 2);
  const head = authorityEnd === -1 ? url : url.slice(0, authorityEnd);
  if (head.includes('{') || head.includes('}')) return 'placeholders may only appear in the URL path and query, never in its scheme, host or port';
  if (url.includes('#')) return 'a webhook URL has no fragment';
  const rest = url.replace(PLACEHOLDER, '');
  if (rest.includes('{') || rest.includes('}')) return 'write a literal "{" or "}" as %7B / %7D; placeholders are {name}';
  return null;
}

/**
 * Percent-encodes a value for a path segment or query value. A value of "."
 * or ".." would climb the path, and URL parsers (WHATWG URL §4.4) treat
 * "%2E%2E" as ".." too, so those two are encoded twice ("%252E%252E").
 */
function encodeValue(v: string): string {
  const e = encodeURIComponent(v);
  return e === '.' || e === '..' ? e.replace(/\./g, '%252E') : e;
}

export function expandUrl(template: string, vars: Readonly<Record<string, string>>): string {
  return template.replace(PLACEHOLDER, (_, name: string) => encodeValue(vars[name] ?? ''));
}

/** One target of a recipient's route, with its URL resolved for that recipient. */
export interface ResolvedTarget<T extends RoutableTarget = RoutableTarget> {
  spec: T;
  /** The target id deliveries use: the configured one, or for a templated URL one per resolved URL. */
  id: string;
  /** The resolved URL (webhooks), null for other targets. */
  url: string | null;
  templated: boolean;
}

/**
 * The id of a templated target for one resolved URL: the target's own id and
 * a digest of the URL, so it is stable across retries and instances (it is
 * part of the delivery id) and carries no query token into the logs.
 */
export function resolvedTargetId(baseId: string, url: string): string {
  return `${baseId}~${createHash('sha256').update(url).digest('hex').slice(0, 12)}`;
}

/** The values a URL template can use for this recipient and match. */
export function templateVars(n: NormalisedAddress | null, match: RouteMatch): Record<string, string> {
  return {
    ...match.captures,
    local: n?.local ?? 'postmaster',
    user: n?.user ?? 'postmaster',
    tag: n?.tag ?? '',
    domain: n?.domain ?? '',
  };
}

/** Every target of an accepted recipient's route(s), URLs resolved. */
export function resolveTargets<T extends RoutableTarget>(decision: Extract<RcptDecision<T>, { kind: 'accept' }>): ResolvedTarget<T>[] {
  const out: ResolvedTarget<T>[] = [];
  for (const m of decision.matches) {
    const vars = templateVars(decision.address, m as RouteMatch);
    for (const spec of m.route.targets) {
      const templated = spec.url !== undefined && urlPlaceholders(spec.url).length > 0;
      if (!templated) {
        out.push({ spec, id: spec.id, url: spec.url ?? null, templated: false });
        continue;
      }
      const url = expandUrl(spec.url!, vars);
      // A default id is the default id of the resolved URL; a configured one gets a digest of it.
      const id = spec.id === defaultWebhookId(spec.url!, spec.format) ? defaultWebhookId(url, spec.format) : resolvedTargetId(spec.id, url);
      out.push({ spec, id, url, templated: true });
    }
  }
  return out;
}

/** Whether a message is of a kind: `machine` is any of the three. */
export function isKind(c: MessageClass, kind: MailKind): boolean {
  if (kind === 'bounce') return c.bounce !== null && c.bounce !== undefined;
  if (kind === 'autoReply') return c.autoReply;
  if (kind === 'bulk') return c.bulk;
  return c.autoReply || c.bulk || (c.bounce !== null && c.bounce !== undefined);
}

/**
 * Whether a target's condition holds for a message (after DATA): a header
 * condition on its headers, a classification condition on its
 * classification (an event without one is no machine mail). A target without
 * a condition always receives the message.
 */
export function headerConditionHolds(
  table: RoutingTable,
  when: TargetCondition | undefined,
  headers: readonly { name: string; value: string }[],
  classification?: MessageClass | null,
): boolean {
  if (!when) return true;
  if ('classification' in when) {
    const c = classification ?? { autoReply: false, bulk: false, bounce: null };
    const cond = when.classification;
    return typeof cond === 'string' ? isKind(c, cond) : !isKind(c, cond.not);
  }
  const name = when.header.toLowerCase();
  const values = headers.filter((h) => h.name.toLowerCase() === name).map((h) => h.value);
  if (when.matches === undefined) return values.length > 0;
  const re = table.headerRegex.get(when.matches) ?? new RegExp(when.matches, 'iu');
  // Header values are sender-chosen: only the first 1000 characters are tested.
  return values.some((v) => re.test(v.slice(0, 1000)));
}
