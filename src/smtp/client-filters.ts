/**
 * Connection-time filters (docs/blocklists.md): `smtp.clients.deny` and the
 * DNS block lists of `smtp.dnsbl`, turned into the replies of the reply table.
 * The listener asks `denied` and `screen` before the greeting
 * (smtp/listener.ts) and hands the lookups to the session, which asks
 * `rcptRefusal` for each recipient (smtp/session.ts). The address is always
 * the real client's: the one from the PROXY header when there is one.
 *
 * A block list that cannot be asked (timeout, DNS failure) never refuses
 * mail: the client counts as not listed (fail open), the failure is logged
 * and counted.
 */
import type { GatewayError } from '../core/errors.js';
import type { DnsblZoneConfig } from '../config/schema.js';
import { createAddressMatcher, type AddressMatcher } from '../net/cidr.js';
import { DnsblChecker, type DnsblResult } from '../net/dnsbl.js';
import type { Logger } from '../ops/logger.js';
import type { Metrics } from '../ops/metrics.js';
import { failure, reply, type Reply } from '../transaction/replies.js';

/** Local parts a listed client may still write to at RCPT: RFC 5321 §4.5.1 (postmaster), RFC 2142 §4 (abuse). */
export const DNSBL_EXEMPT_LOCAL_PARTS: readonly string[] = ['postmaster', 'abuse'];

export interface ConnectRefusal {
  reply: Reply;
  code: 'PG_CLIENT_DENIED' | 'PG_DNSBL_LISTED';
  zone?: string;
}

export interface ClientFilterOptions {
  hostname: string;
  deny: readonly string[];
  dnsbl: readonly DnsblZoneConfig[];
  logger: Logger;
  metrics: Metrics;
  now: () => number;
}

type Listed = Extract<DnsblResult, { status: 'listed' }>;
/** A zone that lists the client, with what the zone does about it. */
export type SessionListing = Listed & { action: DnsblZoneConfig['action'] };

export interface Screening {
  refusal: Promise<ConnectRefusal | null>;
  listings: Promise<SessionListing[]>;
}

interface ZoneCheck {
  action: DnsblZoneConfig['action'];
  result: Promise<DnsblResult>;
}

function listingsOf(checks: readonly ZoneCheck[]): Promise<SessionListing[]> {
  return Promise.all(checks.map((c) => c.result.then((r) => (r.status === 'listed' ? { ...r, action: c.action } : null)))).then((rs) =>
    rs.filter((r): r is SessionListing => r !== null),
  );
}

/** RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, CRLF included. */
const MAX_REPLY_LINE = 510;

/**
 * "; <text>" for a reason the list gave (already sanitized, net/dnsbl.ts),
 * cut so that the reply line `without` it gets stays within 512 octets; ""
 * without a reason or without room for one.
 */
function reasonSuffix(r: Listed, without: Reply): string {
  if (!r.reason) return '';
  const room = MAX_REPLY_LINE - without.line.length - 2;
  if (room < 10) return '';
  return `; ${r.reason.length > room ? `${r.reason.slice(0, room - 3).trimEnd()}...` : r.reason}`;
}

export class ClientFilters {
  private readonly deny: AddressMatcher;
  private readonly denyActive: boolean;
  private readonly zones: { checker: DnsblChecker; action: DnsblZoneConfig['action'] }[];
  private readonly handed = new Map<string, Promise<SessionListing[]>>();

  constructor(private readonly opts: ClientFilterOptions) {
    this.deny = createAddressMatcher(opts.deny);
    this.denyActive = opts.deny.length > 0;
    const { metrics, logger } = opts;
    this.zones = opts.dnsbl.map((z) => ({
      action: z.action,
      checker: new DnsblChecker(
        {
          zone: z.zone,
          servers: z.servers,
          answers: z.answers,
          timeoutMs: z.timeout,
          cacheTtlMs: z.cacheTtl,
          negativeCacheTtlMs: z.negativeCacheTtl,
          cacheSize: z.cacheSize,
          // A tag zone shows no reply, so its TXT record is not asked for.
          showReason: z.showReason && z.action !== 'tag',
        },
        {
          now: opts.now,
          onCacheHit: (zone) => metrics.dnsblCacheHits.inc({ zone }),
          onLookup: (e) => {
            metrics.dnsblLookups.inc({ zone: e.zone, result: e.result });
            metrics.dnsblLookupDuration.observe({ zone: e.zone }, e.seconds);
            if (e.ignored.length) {
              metrics.dnsblIgnoredAnswers.inc({ zone: e.zone }, e.ignored.length);
              logger.debug({ zone: e.zone, answers: e.ignored }, 'DNS block list answer outside its answers setting, not counted as listed');
            }
            if (e.result === 'timeout' || e.result === 'error') {
              logger.warn({ zone: e.zone, code: 'PG_DNSBL_LOOKUP', err: e.error, ms: Math.round(e.seconds * 1000) }, 'DNS block list lookup failed, client treated as not listed');
            }
          },
        },
      ),
    }));
  }

  /**
   * Before anything else (connection limits included): a client in
   * `smtp.clients.deny` gets the refusal instead of the greeting, and never a
   * 421 that would invite it back.
   */
  denied(address: string): ConnectRefusal | null {
    if (!this.denyActive || !this.deny.matches(address)) return null;
    const { hostname, metrics, logger } = this.opts;
    metrics.clientRefusals.inc({ reason: 'deny', zone: '', stage: 'connect' });
    logger.info({ client: address, code: 'PG_CLIENT_DENIED' }, 'client in smtp.clients.deny, refused at connect');
    return { reply: reply('PG_CLIENT_DENIED', { hostname, address }), code: 'PG_CLIENT_DENIED' };
  }

  /**
   * Before the greeting: every zone's lookup is started at once. `refusal`
   * settles when the `reject-connect` zones have answered (the others are
   * usually answered by the time the client sends RCPT); `listings` when all
   * have, for the session (RCPT, and `envelope.dnsbl` of the event). Null
   * when no zone is configured.
   */
  screen(address: string): Screening | null {
    const checks = this.lookups(address);
    if (!checks) return null;
    const { hostname, metrics, logger } = this.opts;
    for (const { action, result } of checks) {
      if (action !== 'tag') continue;
      void result.then((r) => {
        if (r.status === 'listed') logger.info({ client: address, zone: r.zone, answers: r.answers }, 'client listed by a DNS block list (tag only)');
      });
    }
    const refusal = Promise.all(checks.filter((c) => c.action === 'reject-connect').map((c) => c.result)).then((results) => {
      const r = results.find((x): x is Listed => x.status === 'listed');
      if (!r) return null;
      metrics.clientRefusals.inc({ reason: 'dnsbl', zone: r.zone, stage: 'connect' });
      logger.info({ client: address, zone: r.zone, answers: r.answers, code: 'PG_DNSBL_LISTED' }, 'client listed by a DNS block list, refused at connect');
      const vars = { hostname, address, zone: r.zone };
      const reason = reasonSuffix(r, reply('PG_DNSBL_LISTED_CONNECTION', { ...vars, reason: '' }));
      return { reply: reply('PG_DNSBL_LISTED_CONNECTION', { ...vars, reason }), code: 'PG_DNSBL_LISTED' as const, zone: r.zone };
    });
    return { refusal, listings: listingsOf(checks) };
  }

  /**
   * The listener hands the listings of a screened client to the session it
   * starts, so the session asks each zone once (a failing list costs one
   * timeout per session, not one more at RCPT). Forgotten when the session closes.
   */
  handOver(sessionId: string, listings: Promise<SessionListing[]>): void {
    this.handed.set(sessionId, listings);
  }

  forget(sessionId: string): void {
    this.handed.delete(sessionId);
  }

  /** A session's listings: those the listener handed over, else asked now (cached answers cost nothing). Null without zones. */
  sessionListings(sessionId: string, address: string): Promise<SessionListing[]> | null {
    const handed = this.handed.get(sessionId);
    if (handed) {
      this.handed.delete(sessionId);
      return handed;
    }
    const checks = this.lookups(address);
    return checks ? listingsOf(checks) : null;
  }

  private lookups(address: string): ZoneCheck[] | null {
    if (!this.zones.length) return null;
    return this.zones.map((z) => ({ action: z.action, result: z.checker.check(address) }));
  }

  /**
   * The refusal of one recipient by the first listing, or null when the
   * client is not listed or the recipient is exempt (postmaster, abuse).
   */
  rcptRefusal(listings: readonly SessionListing[], client: string, rcpt: string): GatewayError | null {
    const first = listings.find((l) => l.action === 'reject-rcpt');
    if (!first) return null;
    // "postmaster" alone (RFC 5321 §4.1.1.3) or the local part before the last "@".
    const at = rcpt.lastIndexOf('@');
    const localPart = (at === -1 ? rcpt : rcpt.slice(0, at)).toLowerCase();
    if (DNSBL_EXEMPT_LOCAL_PARTS.includes(localPart)) return null;
    this.opts.metrics.clientRefusals.inc({ reason: 'dnsbl', zone: first.zone, stage: 'rcpt' });
    const vars = { address: rcpt, client, zone: first.zone };
    const reason = reasonSuffix(first, reply('PG_DNSBL_LISTED', { ...vars, reason: '' }));
    return failure('PG_DNSBL_LISTED', { vars: { ...vars, reason } });
  }
}
