/**
 * The scan step of the accept stage (docs/architecture.md §1.1 step 6,
 * docs/scanning.md): after the last byte and before delivery, every
 * configured scanner reads the message at once, each under its own timeout
 * and all within what is left of `delivery.deadline`. The route's policy
 * then turns the verdicts into one of: deliver (with the verdicts in the
 * event), deliver to the quarantine targets only, or a failure whose reply is
 * a row of the reply table: 550 5.7.1 spam, 554 5.7.1 virus, 451 when a
 * scanner gave no verdict and onError is tempfail.
 *
 * A scanner that failed repeatedly is skipped while its circuit breaker is
 * open, as a target's is (delivery/index.ts): its outcome is onError's at
 * once, without waiting for a timeout per message.
 */
import type { GatewayError } from '../core/errors.js';
import { failure } from '../transaction/replies.js';
import { ScanError, type ScanInput, type ScanResult, type Scanner, type SpamResult, type VirusResult } from './types.js';

export { ScanError, parseSocketAddress, type Scanner, type ScanInput, type ScanEnvelope } from './types.js';
export { rspamdScanner } from './rspamd.js';
export { rspamdMilterScanner } from './milter.js';
export { spamdScanner } from './spamd.js';
export { clamdScanner } from './clamd.js';

export type VerdictAction = 'tag' | 'reject' | 'quarantine';

/** A route's scan policy (config `routes[].scan`, defaults from `scan`). */
export interface ScanPolicy {
  spam: VerdictAction;
  virus: VerdictAction;
  /** Spam at or above this score; null: each scanner's own call. */
  threshold: number | null;
  onError: 'tempfail' | 'accept';
}

/** The event's `spam` (docs/payload.md). */
export interface SpamVerdict {
  scanner: string;
  score: number;
  threshold: number;
  /** What postgate did: "none" (not spam), "tag" or "quarantine"; a rejected message has no event. */
  action: 'none' | 'tag' | 'quarantine';
  symbols: string[];
}

/** The event's `virus` (docs/payload.md). */
export interface VirusVerdict {
  scanner: string;
  infected: boolean;
  names: string[];
}

export interface ScanOutcome {
  spam: SpamVerdict | null;
  virus: VirusVerdict | null;
  /** Deliver to the route's quarantine targets only, never to its own. */
  quarantine: boolean;
  /** Scanners that gave no verdict (onError accept): for the event's note and the log. */
  unavailable: { scanner: string; kind: ScanError['kind'] | 'down'; message: string }[];
  /** Header fields for the delivered copy (empty unless `scan.header`), CRLF-terminated. */
  header: string;
}

/** The breaker the step shares the shape of with targets' (delivery/index.ts CircuitBreakers). */
export interface ScanBreaker {
  isDown(id: string): boolean;
  /** Returns true when this outcome opened the breaker. */
  record(id: string, ok: boolean, transient: boolean): boolean;
}

export type ScannerOutcome = 'clean' | 'spam' | 'infected' | 'error' | 'down';

export interface ScanStepOptions {
  scanners: readonly { scanner: Scanner; timeoutMs: number }[];
  breaker: ScanBreaker;
  /** Add X-Spam-* / X-Virus-* fields to the delivered copy. */
  header: boolean;
  /** Per scanner and message: what it said and how long it took (metrics, logs). */
  onScanner?(scanner: Scanner, outcome: ScannerOutcome, ms: number, err?: ScanError): void;
  /** A scanner's breaker opened. */
  onDown?(scanner: Scanner): void;
  now(): number;
}

type Settled = { s: Scanner; r: ScanResult } | { s: Scanner; err: ScanError | { kind: 'down'; message: string } };

/** Longest scanner text shown to the sender; longer or unprintable texts are replaced by the row's own. */
export const MAX_REASON = 120;

/** A daemon's text fit for an SMTP reply: one line of printable ASCII (RFC 5321 §4.1.1.6 no CR/LF in text), short; else null. */
export function safeReason(s: string | null | undefined): string | null {
  if (!s) return null;
  const t = s.trim();
  return t.length > 0 && t.length <= MAX_REASON && /^[\x20-\x7e]+$/.test(t) ? t : null;
}

export class ScanStep {
  constructor(private readonly opts: ScanStepOptions) {}

  get scanners(): readonly Scanner[] {
    return this.opts.scanners.map((s) => s.scanner);
  }

  /** The verdicts behind a refusal this step threw (see scanRefusal), for callers that import its types only. */
  refusalOf(err: unknown): ScanRefusal | undefined {
    return scanRefusal(err);
  }

  /** Scanners whose breaker is open now. */
  down(): string[] {
    return this.opts.scanners.filter((s) => this.opts.breaker.isDown(s.scanner.id)).map((s) => s.scanner.id);
  }

  /**
   * Scans and applies the policy. Resolves with what to deliver; rejects with
   * the GatewayError of the reply (spam, virus, scanner unavailable).
   * `budgetMs`: what is left of the delivery deadline.
   */
  async run(input: Omit<ScanInput, 'timeoutMs'>, policy: ScanPolicy, budgetMs: number): Promise<ScanOutcome> {
    const settled = await Promise.all(this.opts.scanners.map((s) => this.one(s.scanner, Math.max(1, Math.min(s.timeoutMs, budgetMs)), input)));
    return decide(settled, policy, this.opts.header);
  }

  private async one(s: Scanner, ms: number, input: Omit<ScanInput, 'timeoutMs'>): Promise<Settled> {
    const { breaker, now } = this.opts;
    if (breaker.isDown(s.id)) {
      this.opts.onScanner?.(s, 'down', 0);
      return { s, err: { kind: 'down', message: `${s.type} ${s.id}: marked down (circuit breaker open)` } };
    }
    const started = now();
    try {
      const r = await s.scan({ ...input, timeoutMs: ms });
      breaker.record(s.id, true, true);
      this.opts.onScanner?.(s, r.kind === 'virus' ? (r.infected ? 'infected' : 'clean') : r.spam ? 'spam' : 'clean', now() - started);
      return { s, r };
    } catch (e) {
      // Anything a client lets through is still this scanner's failure, never the transaction's crash.
      const err = e instanceof ScanError ? e : new ScanError('protocol', `${s.type} ${s.id}: ${(e as Error)?.message ?? String(e)}`, { cause: e });
      if (breaker.record(s.id, false, true)) this.opts.onDown?.(s);
      this.opts.onScanner?.(s, 'error', now() - started, err);
      return { s, err };
    }
  }
}

/** The verdicts behind a refusal of the scan step (a 550 or 554 after DATA). */
export interface ScanRefusal {
  spam: { scanner: string; score: number; threshold: number; action: 'reject' | 'none' } | null;
  virus: VirusVerdict | null;
}

const refusals = new WeakMap<GatewayError, ScanRefusal>();

/** The verdicts of a refusal thrown by the scan step, or undefined for any other error. */
export function scanRefusal(err: unknown): ScanRefusal | undefined {
  return err instanceof Object ? refusals.get(err as GatewayError) : undefined;
}

/**
 * The policy, pure. Precedence: a virus refused, spam refused (an answer of a
 * working scanner is final, as a permanent refusal wins among targets,
 * docs/architecture.md §2.2), then a scanner without a verdict under
 * tempfail, then quarantine, then delivery.
 */
export function decide(settled: readonly Settled[], policy: ScanPolicy, header: boolean): ScanOutcome {
  let virus: { s: Scanner; r: VirusResult } | null = null;
  let firstVirus: { s: Scanner; r: VirusResult } | null = null;
  let spam: { s: Scanner; r: SpamResult; is: boolean } | null = null;
  const unavailable: ScanOutcome['unavailable'] = [];
  for (const x of settled) {
    if ('err' in x) {
      unavailable.push({ scanner: x.s.id, kind: x.err.kind, message: x.err.message });
      continue;
    }
    if (x.r.kind === 'virus') {
      firstVirus ??= { s: x.s, r: x.r };
      if (x.r.infected && !virus) virus = { s: x.s, r: x.r };
    } else {
      const is = policy.threshold !== null ? x.r.score >= policy.threshold : x.r.spam;
      // The first scanner that calls it spam speaks for the message; else the first that answered.
      if (!spam || (is && !spam.is)) spam = { s: x.s, r: x.r, is };
    }
  }
  // A refusal carries the verdicts that made it, for the message console's record (scanRefusal).
  const refused = (err: GatewayError): GatewayError => {
    const v = virus ?? firstVirus;
    refusals.set(err, {
      spam: spam ? { scanner: spam.s.id, score: spam.r.score, threshold: policy.threshold ?? spam.r.threshold, action: spam.is && policy.spam === 'reject' ? 'reject' : 'none' } : null,
      virus: v ? { scanner: v.s.id, infected: v.r.infected, names: v.r.names } : null,
    });
    return err;
  };
  if (virus && policy.virus === 'reject') {
    throw refused(
      failure('PG_SCAN_VIRUS', {
        vars: { reason: safeReason(virus.r.names[0]) ?? 'malware' },
        message: `${virus.s.type} ${virus.s.id}: infected (${virus.r.names.join(', ')})`,
      }),
    );
  }
  if (spam?.is && policy.spam === 'reject') {
    throw refused(
      failure('PG_SCAN_SPAM', {
        vars: { reason: safeReason(spam.r.message) ?? 'spam score above the threshold' },
        message: `${spam.s.type} ${spam.s.id}: spam, score ${spam.r.score} / ${policy.threshold ?? spam.r.threshold}`,
      }),
    );
  }
  if (unavailable.length && policy.onError === 'tempfail') {
    throw failure('PG_SCAN_UNAVAILABLE', { message: unavailable.map((u) => u.message).join('; ') });
  }
  const quarantine = (virus !== null && policy.virus === 'quarantine') || (spam?.is === true && policy.spam === 'quarantine');
  const spamVerdict: SpamVerdict | null = spam
    ? {
        scanner: spam.s.id,
        score: spam.r.score,
        threshold: policy.threshold ?? spam.r.threshold,
        action: !spam.is ? 'none' : quarantine ? 'quarantine' : 'tag',
        symbols: spam.r.symbols,
      }
    : null;
  const v = virus ?? firstVirus;
  const virusVerdict: VirusVerdict | null = v ? { scanner: v.s.id, infected: v.r.infected, names: v.r.names } : null;
  return { spam: spamVerdict, virus: virusVerdict, quarantine, unavailable, header: header ? headerFields(spamVerdict, virusVerdict, unavailable) : '' };
}

/**
 * X-Spam-* and X-Virus-* fields in the form SpamAssassin and most filters
 * write them (one line each, RFC 5322 §2.2 unfolded), for mail clients and
 * stores that read the .eml; the event carries the same verdicts as data.
 */
export function headerFields(spam: SpamVerdict | null, virus: VirusVerdict | null, unavailable: ScanOutcome['unavailable']): string {
  let h = '';
  if (spam) {
    const yes = spam.action !== 'none';
    h += `X-Spam-Flag: ${yes ? 'YES' : 'NO'}\r\n`;
    h += `X-Spam-Score: ${spam.score.toFixed(2)}\r\n`;
    h += `X-Spam-Status: ${yes ? 'Yes' : 'No'}, score=${spam.score.toFixed(2)} required=${spam.threshold.toFixed(2)} scanner=${spam.scanner}\r\n`;
  }
  if (virus) h += `X-Virus-Status: ${virus.infected ? `Infected (${virus.names.join(', ')})` : 'Clean'} scanner=${virus.scanner}\r\n`;
  for (const u of unavailable) h += `X-Scan-Unavailable: ${u.scanner}\r\n`;
  return h;
}
