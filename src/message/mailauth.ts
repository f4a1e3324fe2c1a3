/**
 * Message authentication: SPF (MAIL FROM and HELO identities, RFC 7208),
 * DKIM (RFC 6376), DMARC (RFC 7489) and ARC (RFC 8617) verdicts for a
 * received message, and the Authentication-Results header (RFC 8601) postgate
 * would add. The checks themselves are mailauth's (postalsys/mailauth 4.x);
 * this module feeds it the envelope, puts every DNS query under one time
 * budget, and turns its results into the stable `AuthResults` shape below.
 *
 * DNS trouble (timeouts, SERVFAIL, a resolver that throws) never makes
 * `verifyMessage` reject: the affected verdicts become `temperror`. Only a
 * bug (a configuration error such as an empty authserv-id, or mailauth
 * failing on the message itself) rejects.
 *
 * Order in the pipeline: verify the message as received, then
 * `stripOwnAuthResults` (RFC 8601 §5: an Authentication-Results header
 * carrying our authserv-id that arrives from outside is forged), then prepend
 * `formatAuthResultsHeader(results.authenticationResults)`.
 *
 * Deviations from mailauth, on purpose:
 * - a DKIM body hash mismatch is `fail` (RFC 6376 §6.1.3 PERMFAIL, RFC 8601
 *   §2.7.1), where mailauth, like Gmail, says `neutral`;
 * - DMARC strict alignment (`adkim=s`, `aspf=s`) is enforced here: mailauth
 *   4.13.3 checks organisational-domain alignment in both modes;
 * - ARC verification that failed because of DNS trouble is `temperror`
 *   (mailauth reports every ARC problem as `fail`);
 * - BIMI is not evaluated.
 *
 * Leaf module apart from zod and mailauth.
 */
import { promises as dnsPromises } from 'node:dns';
import { isIP } from 'node:net';
import { domainToASCII } from 'node:url';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import type * as MailauthLib from 'mailauth';
import type { ARCData, DNSResolver } from 'mailauth';

/** Default time budget for all DNS queries of one verification. */
export const DEFAULT_AUTH_TIMEOUT_MS = 10_000;

// ── the result shape (plugged into InboundEmail.auth) ───────────────────────

const spfResultEnum = z.enum(['pass', 'fail', 'softfail', 'neutral', 'none', 'temperror', 'permerror']);
const dkimResultEnum = z.enum(['pass', 'fail', 'neutral', 'none', 'policy', 'temperror', 'permerror']);
const dmarcResultEnum = z.enum(['pass', 'fail', 'none', 'temperror', 'permerror']);
const arcResultEnum = z.enum(['pass', 'fail', 'none', 'temperror']);

export const verdictSchema = z
  .object({
    result: spfResultEnum.describe('The SPF result, RFC 7208 §2.6.'),
    domain: z.string().optional().describe('The domain whose SPF record was checked (lower case); absent when there was none to check.'),
    info: z.string().optional().describe('Human-readable detail. Do not match on it.'),
  })
  .meta({ id: 'SpfVerdict', description: 'The SPF verdict for one identity (RFC 7208).' });

export const dkimVerdictSchema = z
  .object({
    domain: z.string().describe('The signing domain, the `d=` tag.'),
    selector: z.string().describe('The key selector, the `s=` tag.'),
    result: dkimResultEnum.describe(
      'RFC 8601 §2.7.1: pass; fail (bad signature or the body hash did not verify); neutral (unusable signature or key); policy (e.g. key shorter than 1024 bits); temperror (DNS trouble); permerror.',
    ),
    aligned: z
      .boolean()
      .optional()
      .describe('Whether `domain` aligns with the From domain (relaxed: same organisational domain; exact match when the DMARC record says `adkim=s`), whatever `result` is.'),
    algorithm: z.string().optional().describe('The `a=` tag, e.g. "rsa-sha256".'),
    info: z.string().optional().describe('Human-readable detail. Do not match on it.'),
  })
  .meta({ id: 'DkimVerdict', description: 'The verdict for one DKIM-Signature header (RFC 6376).' });

export const authResultsSchema = z
  .object({
    spf: z
      .object({
        mailFrom: verdictSchema.describe('SPF for the MAIL FROM identity; for the null sender `<>` this is postmaster@<HELO name> (RFC 7208 §2.4).'),
        helo: verdictSchema.describe('SPF for the HELO identity (RFC 7208 §2.3); `none` when the HELO name is an address literal or not a domain.'),
      })
      .describe('SPF verdicts.'),
    dkim: z.array(dkimVerdictSchema).describe('One entry per DKIM-Signature header, in header order; [] when the message is not signed.'),
    dmarc: z
      .object({
        result: dmarcResultEnum.describe('pass: an aligned DKIM or SPF pass; fail; none: no DMARC record; temperror: DNS trouble.'),
        policy: z
          .string()
          .nullable()
          .describe('The policy the domain owner asks for a failing message ("none", "quarantine" or "reject"; `sp` for a subdomain); null without a record. Advisory: postgate does not act on it.'),
        domain: z.string().nullable().describe('The RFC5322.From domain (lower case, ASCII) the policy was looked up for.'),
        info: z.string().optional().describe('Human-readable detail. Do not match on it.'),
      })
      .nullable()
      .describe('The DMARC verdict; null when the message does not have exactly one From address (DMARC cannot be evaluated).'),
    arc: z
      .object({
        result: arcResultEnum.describe('The ARC chain validation result, RFC 8617 §4.4 (none: no chain); temperror on DNS trouble.'),
        instance: z.number().int().nonnegative().optional().describe('The highest ARC instance (`i=`) seen; absent without a chain.'),
        info: z.string().optional().describe('Human-readable detail. Do not match on it.'),
      })
      .nullable()
      .describe('The ARC verdict.'),
    authenticationResults: z
      .string()
      .describe('The Authentication-Results header value postgate adds (RFC 8601), authserv-id first, unfolded.'),
  })
  .meta({ id: 'AuthResults', description: 'SPF / DKIM / DMARC / ARC verdicts computed when the message was received.' });

export type Verdict = z.infer<typeof verdictSchema>;
export type DkimVerdict = z.infer<typeof dkimVerdictSchema>;
export type AuthResults = z.infer<typeof authResultsSchema>;

export interface MailAuthOptions {
  /** Our authserv-id (RFC 8601 §2.5), usually the host name the MX answers as. */
  authservId: string;
  /**
   * DNS lookups, `(name, 'TXT' | 'A' | 'AAAA' | 'MX' | 'PTR' …)`, resolving like
   * `dns.promises.resolve`: TXT as string[][] (a string[] row list is accepted),
   * errors with `code` ENOTFOUND / ENODATA for "no such record". Default:
   * `dns.promises.resolve` (the system resolvers).
   */
  resolver?: (name: string, rrtype: string) => Promise<unknown>;
  /** Budget for all DNS queries of one verification; queries still open when it runs out count as timeouts (temperror). Default 10 s. */
  timeoutMs?: number;
}

export interface AuthEnvelope {
  /** The SMTP client's IP address. */
  clientAddress: string;
  /** The HELO/EHLO name. */
  helo: string;
  /** The MAIL FROM reverse-path without brackets; "" for the null sender. */
  mailFrom: string;
}

// ── DNS: one budget, errors normalised ──────────────────────────────────────

interface DnsStats {
  /** Queries that failed for another reason than "no such record". */
  trouble: number;
}

function dnsError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}

const VOID_CODES = new Set(['ENOTFOUND', 'ENODATA']);
const KEPT_CODES = new Set(['ETIMEOUT', 'EREFUSED', 'ESERVFAIL']);

/**
 * Wraps the resolver so that every query ends by `deadline`, a malformed
 * answer is an error, and every failure carries a code mailauth understands:
 * ENOTFOUND / ENODATA for "no record", anything else a temporary failure.
 */
function budgetedResolver(base: (name: string, rrtype: string) => Promise<unknown>, deadline: number, stats: DnsStats): DNSResolver {
  return async (name: string, rrtype: string) => {
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      stats.trouble++;
      throw dnsError('ETIMEOUT', `DNS ${rrtype} ${name}: time budget exhausted`);
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      const answer = await Promise.race([
        Promise.resolve().then(() => base(name, rrtype)),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(dnsError('ETIMEOUT', `DNS ${rrtype} ${name}: timed out`)), remaining);
        }),
      ]);
      if (!Array.isArray(answer)) throw dnsError('EBADRESP', `DNS ${rrtype} ${name}: malformed answer`);
      if (rrtype.toUpperCase() === 'TXT') {
        return answer.map((row: unknown) => (Array.isArray(row) ? row.map((s) => String(s)) : [String(row)]));
      }
      return answer as string[];
    } catch (err) {
      const code = (err as { code?: unknown } | null)?.code;
      const message = err instanceof Error ? err.message : String(err);
      if (typeof code === 'string' && VOID_CODES.has(code)) throw dnsError(code, message);
      stats.trouble++;
      throw dnsError(typeof code === 'string' && KEPT_CODES.has(code) ? code : 'ESERVFAIL', message);
    } finally {
      if (timer) clearTimeout(timer);
    }
  };
}

// ── helpers ─────────────────────────────────────────────────────────────────

/** Lower-case ASCII (A-label) form of a domain, without a trailing dot. */
function asciiDomain(domain: string): string {
  const d = domain.trim().toLowerCase().replace(/\.$/, '');
  return domainToASCII(d) || d;
}

function addressDomain(address: string): string {
  const at = address.lastIndexOf('@');
  return asciiDomain(at >= 0 ? address.slice(at + 1) : address);
}

function cleanInfo(text: unknown): string | undefined {
  if (typeof text !== 'string') return undefined;
  const t = text.replace(/[\x00-\x1f\x7f]+/g, ' ').replace(/\s+/g, ' ').trim();
  if (!t) return undefined;
  return t.length > 200 ? `${t.slice(0, 197)}...` : t;
}

function pick<T extends string>(allowed: readonly T[], value: unknown, fallback: T): T {
  const v = typeof value === 'string' ? value.toLowerCase() : '';
  if (v === 'temperr') return (allowed.includes('temperror' as T) ? 'temperror' : fallback) as T;
  return allowed.includes(v as T) ? (v as T) : fallback;
}

const TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$/;
const MAILBOX = /^[!#$%&'*+\-/=?^_`{|}~.0-9A-Za-z]*@[0-9A-Za-z.\-_]+$/;

/** An RFC 8601 pvalue: a token, `[local]@domain`, or a quoted string. */
function pvalue(value: string): string {
  const v = value.replace(/[\x00-\x1f\x7f]/g, '');
  if (TOKEN.test(v) || MAILBOX.test(v)) return v;
  return `"${v.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

function comment(text: string | undefined): string {
  return text ? ` (${text.replace(/[\\()]/g, (c) => `\\${c}`)})` : '';
}

function resinfo(method: string, result: string, info: string | undefined, props: Array<[string, string | undefined]>): string {
  let s = `${method}=${result}${comment(info)}`;
  for (const [k, v] of props) if (v) s += ` ${k}=${pvalue(v)}`;
  return s;
}

function requireAuthservId(authservId: string): string {
  const id = authservId.trim();
  if (!id) throw new TypeError('mailauth: authservId must not be empty');
  return id;
}

// ── verification ────────────────────────────────────────────────────────────

async function checkSpf(
  identity: 'mailFrom' | 'helo',
  envelope: AuthEnvelope,
  ip: string | null,
  heloArg: string,
  authservId: string,
  resolver: DNSResolver,
): Promise<{ verdict: Verdict; sender: string; passDomain: string | null }> {
  const helo = envelope.helo.trim();
  // RFC 7208 §2.4: the null sender is checked as postmaster@<HELO>.
  const sender = identity === 'helo' || envelope.mailFrom === '' ? `postmaster@${helo}` : envelope.mailFrom;
  if (ip === null) {
    return { verdict: { result: 'none', info: 'client address is not an IP address' }, sender, passDomain: null };
  }
  if (identity === 'helo' && (helo === '' || isIP(helo.replace(/^\[(?:IPv6:)?|\]$/gi, '')) !== 0)) {
    return { verdict: { result: 'none', info: 'HELO name is not a domain' }, sender, passDomain: null };
  }
  const r = await (await mailauth()).spf({ sender, ip, helo: heloArg, mta: authservId, resolver });
  const result = pick(spfResultEnum.options, r.status?.result, 'temperror');
  const verdict: Verdict = { result };
  if (typeof r.domain === 'string' && r.domain !== '-') verdict.domain = r.domain;
  const info = cleanInfo(r.status?.comment);
  if (info) verdict.info = info;
  return { verdict, sender, passDomain: result === 'pass' && verdict.domain ? verdict.domain : null };
}

interface MailauthDkimRow {
  signingDomain?: string;
  selector?: string;
  algo?: string;
  status?: { result?: string; comment?: string; aligned?: string | false; header?: Record<string, unknown> };
}

/**
 * mailauth is loaded on first use: verification is off by default, and the
 * library takes about 0.4 s to load, a fifth of the gateway's start.
 */
let mailauthLoading: Promise<typeof MailauthLib> | undefined;
const mailauth = () => (mailauthLoading ??= import('mailauth'));

/**
 * Verifies SPF (MAIL FROM and HELO), DKIM, DMARC and ARC for a received
 * message. Never rejects for DNS trouble (those verdicts are temperror).
 */
/** `message` may be a stream (a large message is read from its spill file, never loaded whole). */
export async function verifyMessage(message: Buffer | Readable, envelope: AuthEnvelope, opts: MailAuthOptions): Promise<AuthResults> {
  const authservId = requireAuthservId(opts.authservId);
  const { arc: mailauthArc, dkimVerify, dmarc: mailauthDmarc } = await mailauth();
  const deadline = Date.now() + Math.max(1, opts.timeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS);
  const base = opts.resolver ?? ((name: string, rrtype: string) => dnsPromises.resolve(name, rrtype));
  const spfStats: DnsStats = { trouble: 0 };
  const dkimStats: DnsStats = { trouble: 0 };
  const arcStats: DnsStats = { trouble: 0 };
  const dmarcStats: DnsStats = { trouble: 0 };

  const address = envelope.clientAddress.trim().replace(/^\[(?:IPv6:)?|\]$/gi, '');
  const ip = isIP(address) ? address : null;
  const heloName = envelope.helo.trim();
  const heloArg = isIP(heloName) ? `[${heloName}]` : heloName;
  const spfResolver = budgetedResolver(base, deadline, spfStats);

  const [dkimResult, mailFromSpf, heloSpf] = await Promise.all([
    dkimVerify(message, { resolver: budgetedResolver(base, deadline, dkimStats), ...(envelope.mailFrom ? { sender: envelope.mailFrom } : {}) }),
    checkSpf('mailFrom', envelope, ip, heloArg, authservId, spfResolver),
    checkSpf('helo', envelope, ip, heloArg, authservId, budgetedResolver(base, deadline, { trouble: 0 })),
  ]);

  // DKIM
  const rows = ((dkimResult.results ?? []) as unknown as MailauthDkimRow[]).filter((r) => typeof r.signingDomain === 'string' && r.signingDomain);
  const dkim: DkimVerdict[] = rows.map((r) => {
    let result = pick(dkimResultEnum.options, r.status?.result, 'temperror');
    const info = cleanInfo(r.status?.comment);
    if (result === 'neutral' && info === 'body hash did not verify') result = 'fail';
    const v: DkimVerdict = { domain: asciiDomain(r.signingDomain ?? ''), selector: r.selector ?? '', result };
    if (r.status && 'aligned' in r.status) v.aligned = Boolean(r.status.aligned);
    if (typeof r.algo === 'string') v.algorithm = r.algo;
    if (info) v.info = info;
    return v;
  });

  // ARC and DMARC
  const headerFrom = Array.isArray(dkimResult.headerFrom) ? dkimResult.headerFrom : [];
  const arcData = (dkimResult as unknown as { arc?: ARCData }).arc;
  const dkimPass = dkim.filter((d) => d.result === 'pass');

  const [arcOut, dmarcOut] = await Promise.all([
    (async (): Promise<NonNullable<AuthResults['arc']>> => {
      if (!arcData) return { result: 'none' };
      try {
        const a = await mailauthArc(arcData, { resolver: budgetedResolver(base, deadline, arcStats) });
        let result = pick(arcResultEnum.options, a.status?.result, 'fail');
        if (result === 'fail' && arcStats.trouble > 0) result = 'temperror';
        const out: NonNullable<AuthResults['arc']> = { result };
        if (typeof a.i === 'number' && a.i > 0) out.instance = a.i;
        const info = cleanInfo(a.status?.comment);
        if (info) out.info = info;
        return out;
      } catch (err) {
        // mailauth 4.13.3 throws on some broken chains (e.g. a short ARC key).
        return { result: arcStats.trouble > 0 ? 'temperror' : 'fail', info: cleanInfo(`ARC verification error: ${err instanceof Error ? err.message : String(err)}`) ?? 'ARC verification error' };
      }
    })(),
    (async (): Promise<AuthResults['dmarc']> => {
      if (headerFrom.length !== 1 || typeof headerFrom[0] !== 'string') return null;
      const fromDomain = addressDomain(headerFrom[0]);
      const d = await mailauthDmarc({
        headerFrom: headerFrom[0],
        spfDomains: mailFromSpf.passDomain ? [mailFromSpf.passDomain] : [],
        dkimDomains: rows
          .filter((_, i) => dkim[i]?.result === 'pass')
          .map((r) => ({ domain: r.signingDomain ?? '', aligned: Boolean(r.status?.aligned) })),
        resolver: budgetedResolver(base, deadline, dmarcStats),
      });
      if (!d) return null;
      let result = pick(dmarcResultEnum.options, d.status?.result, 'temperror');
      const policy = result === 'pass' || result === 'fail' ? (typeof d.policy === 'string' && d.policy ? d.policy.toLowerCase() : null) : null;
      // mailauth 4.13.3 checks relaxed alignment even for adkim=s / aspf=s.
      const strictDkim = d.alignment?.dkim?.strict === true;
      const strictSpf = d.alignment?.spf?.strict === true;
      if ((result === 'pass' || result === 'fail') && (strictDkim || strictSpf)) {
        const dkimOk = strictDkim ? dkimPass.some((x) => x.domain === fromDomain) : Boolean(d.alignment.dkim.result);
        const spfOk = strictSpf
          ? mailFromSpf.passDomain !== null && asciiDomain(mailFromSpf.passDomain) === fromDomain
          : Boolean(d.alignment.spf.result);
        result = dkimOk || spfOk ? 'pass' : 'fail';
      }
      if (strictDkim) for (const v of dkim) v.aligned = v.domain === fromDomain;
      const out: NonNullable<AuthResults['dmarc']> = { result, policy, domain: fromDomain };
      const info = result === 'temperror' ? cleanInfo(d.error ?? 'DNS failure') : policy ? `p=${policy.toUpperCase()}` : undefined;
      if (info) out.info = info;
      return out;
    })(),
  ]);

  // Authentication-Results (RFC 8601), methods in the order mailauth writes them.
  const parts: string[] = [];
  if (dkim.length === 0) parts.push('dkim=none (message not signed)');
  for (const [i, v] of dkim.entries()) {
    const header = rows[i]?.status?.header ?? {};
    const b = typeof header['b'] === 'string' ? header['b'] : undefined;
    parts.push(
      resinfo('dkim', v.result, v.info, [
        ['header.d', v.domain],
        ['header.i', `@${v.domain}`],
        ['header.s', v.selector],
        ['header.a', v.algorithm],
        ['header.b', b],
      ]),
    );
  }
  parts.push(resinfo('spf', mailFromSpf.verdict.result, mailFromSpf.verdict.info, [['smtp.mailfrom', mailFromSpf.sender]]));
  parts.push(resinfo('spf', heloSpf.verdict.result, heloSpf.verdict.info, [['smtp.helo', heloName]]));
  parts.push(resinfo('arc', arcOut.result, arcOut.info, []));
  if (dmarcOut) parts.push(resinfo('dmarc', dmarcOut.result, dmarcOut.info, [['header.from', dmarcOut.domain ?? undefined]]));

  return {
    spf: { mailFrom: mailFromSpf.verdict, helo: heloSpf.verdict },
    dkim,
    dmarc: dmarcOut,
    arc: arcOut,
    authenticationResults: `${pvalue(authservId)}; ${parts.join('; ')}`,
  };
}

/**
 * The full header line for an unfolded Authentication-Results value, folded
 * after each top-level `;` (CRLF + space), ending with CRLF, ready to prepend.
 */
export function formatAuthResultsHeader(value: string): string {
  let out = '';
  let quoted = false;
  let depth = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\' && (quoted || depth > 0)) {
      out += c + (value[i + 1] ?? '');
      i++;
      continue;
    }
    if (quoted) quoted = c !== '"';
    else if (c === '"' && depth === 0) quoted = true;
    else if (c === '(') depth++;
    else if (c === ')' && depth > 0) depth--;
    else if (c === ';' && depth === 0 && value[i + 1] === ' ') {
      out += ';\r\n';
      continue; // the following space starts the continuation line
    }
    out += c;
  }
  return `Authentication-Results: ${out}\r\n`;
}

// ── RFC 8601 §5: remove forged Authentication-Results ───────────────────────

/** The authserv-id at the start of an Authentication-Results value (comments skipped, quotes removed), or null. */
function authservIdOf(value: string): string | null {
  let i = 0;
  const n = value.length;
  for (;;) {
    while (i < n && /\s/.test(value[i]!)) i++;
    if (value[i] !== '(') break;
    let depth = 0;
    for (; i < n; i++) {
      const c = value[i];
      if (c === '\\') i++;
      else if (c === '(') depth++;
      else if (c === ')' && --depth === 0) {
        i++;
        break;
      }
    }
  }
  if (i >= n) return null;
  if (value[i] === '"') {
    let id = '';
    for (i++; i < n && value[i] !== '"'; i++) {
      if (value[i] === '\\') i++;
      id += value[i] ?? '';
    }
    return id;
  }
  const m = /^[^\s;()]+/.exec(value.slice(i));
  return m ? m[0] : null;
}

/**
 * Removes the Authentication-Results header fields (folded lines included)
 * whose authserv-id is `authservId` (case-insensitive) from the header block.
 * Every other byte, header and body, is kept as it was.
 */
export function stripOwnAuthResults(message: Buffer, authservId: string): { message: Buffer; removed: number } {
  const ours = requireAuthservId(authservId).replace(/^"|"$/g, '').toLowerCase();
  const keep: Buffer[] = [];
  let removed = 0;
  let pos = 0;
  let keptFrom = 0;
  while (pos < message.length) {
    const nl = message.indexOf(0x0a, pos);
    const lineEnd = nl === -1 ? message.length : nl + 1;
    // Blank line: end of the header block.
    if (message[pos] === 0x0a || (message[pos] === 0x0d && message[pos + 1] === 0x0a)) break;
    // One field: this line and its continuation lines (starting with SP / HTAB).
    let fieldEnd = lineEnd;
    while (fieldEnd < message.length && (message[fieldEnd] === 0x20 || message[fieldEnd] === 0x09)) {
      const next = message.indexOf(0x0a, fieldEnd);
      fieldEnd = next === -1 ? message.length : next + 1;
    }
    const field = message.subarray(pos, fieldEnd).toString('latin1');
    const colon = field.indexOf(':');
    if (colon > 0 && field.slice(0, colon).trim().toLowerCase() === 'authentication-results') {
      const id = authservIdOf(field.slice(colon + 1).replace(/\r?\n/g, ''));
      if (id !== null && id.toLowerCase() === ours) {
        if (pos > keptFrom) keep.push(message.subarray(keptFrom, pos));
        keptFrom = fieldEnd;
        removed++;
      }
    }
    pos = fieldEnd;
  }
  if (removed === 0) return { message, removed: 0 };
  keep.push(message.subarray(keptFrom));
  return { message: Buffer.concat(keep), removed };
}
