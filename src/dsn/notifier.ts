/**
 * Sends delivery status notifications (RFC 3461) through a configured relay
 * with nodemailer: a `delivered` report to recipients that asked for
 * NOTIFY=SUCCESS, a `failed` report after the final failure of a message
 * already answered 250 (queued mode), unless NOTIFY=NEVER. Never to the null
 * sender: a report about a report could loop (RFC 3461 §6.2, RFC 5321 §4.5.5).
 *
 * A `delayed` report (RFC 3464 §2.3.3) goes to recipients that asked for
 * NOTIFY=DELAY once a queued message has waited `dsn.delayedAfter`.
 *
 * Reports are sent with the null reverse-path `MAIL FROM:<>` (RFC 3464 §2.1
 * via RFC 5321 §4.5.5). A report the relay does not take is tried again
 * after `dsn.retry` pauses (a minute, doubling) while the process runs; a
 * report still not sent after the last is logged as given up. The message
 * itself is safe either way.
 */
import nodemailer from 'nodemailer';
import type { Logger } from 'pino';
import type { GatewayError } from '../core/errors.js';
import type { EmailEvent } from '../message/event.js';
import { buildDsn, type DsnRecipient } from './report.js';

export interface DsnRelayConfig {
  host: string;
  port: number;
  secure: boolean;
  requireTls: boolean;
  user?: string | undefined;
  password?: string | undefined;
  ca?: Buffer | undefined;
}

export interface DsnNotifierOptions {
  relay: DsnRelayConfig;
  from: string;
  reportingMta: string;
  logger: Logger;
  now(): number;
  /** Pauses before the second, third … try of a report the relay did not take. */
  retryDelaysMs?: readonly number[];
}

/** A minute, then doubling: the last try about two hours after the first. */
export const DEFAULT_DSN_RETRY_DELAYS_MS: readonly number[] = [60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_840_000];

type Rcpt = EmailEvent['data']['envelope']['rcptTo'][number];

/** RFC 3461 §4.1: without NOTIFY the MTA behaves as for NOTIFY=FAILURE (DELAY is optional, and not sent). */
const wants = (r: Rcpt, what: 'SUCCESS' | 'FAILURE' | 'DELAY') => {
  const n = r.notify?.map((x) => x.toUpperCase());
  if (!n || n.length === 0) return what === 'FAILURE';
  return !n.includes('NEVER') && n.includes(what);
};

export class DsnNotifier {
  private readonly transport: ReturnType<typeof nodemailer.createTransport>;
  private readonly retries = new Set<NodeJS.Timeout>();

  constructor(private readonly opts: DsnNotifierOptions) {
    const r = opts.relay;
    this.transport = nodemailer.createTransport({
      host: r.host,
      port: r.port,
      secure: r.secure,
      requireTLS: r.requireTls,
      ...(r.user ? { auth: { user: r.user, pass: r.password ?? '' } } : {}),
      ...(r.ca ? { tls: { ca: r.ca } } : {}),
      connectionTimeout: 10_000,
      socketTimeout: 30_000,
    });
  }

  /** Every required target has the message: report to recipients that asked for SUCCESS. */
  async delivered(event: EmailEvent, original: Buffer): Promise<boolean> {
    const rcpts = event.data.envelope.rcptTo.filter((r) => wants(r, 'SUCCESS'));
    // RFC 3461 §4.3: RET (FULL or HDRS) applies to failure reports; a
    // success report carries the headers only.
    return this.send(
      event,
      original,
      rcpts.map((r) => ({ address: r.address, orcpt: r.orcpt, action: 'delivered', status: '2.0.0', lastAttempt: new Date(this.opts.now()) })),
      'HDRS',
    );
  }

  /** The final failure of a message answered 250: report unless NOTIFY=NEVER / not FAILURE. */
  async failed(event: EmailEvent, original: Buffer, error: GatewayError): Promise<boolean> {
    const status = error.smtp && error.smtp.code >= 500 ? error.smtp.enhanced : '5.4.7';
    const diagnostic = error.smtp ? `${error.smtp.code} ${error.smtp.enhanced} ${error.publicMessage}` : undefined;
    const rcpts = event.data.envelope.rcptTo.filter((r) => wants(r, 'FAILURE'));
    return this.send(
      event,
      original,
      rcpts.map((r) => ({ address: r.address, orcpt: r.orcpt, action: 'failed', status, diagnostic, lastAttempt: new Date(this.opts.now()) })),
    );
  }

  /**
   * The message has waited `since` and is still being retried until
   * `willRetryUntil`: report to recipients that asked for NOTIFY=DELAY.
   */
  async delayed(event: EmailEvent, original: Buffer, error: GatewayError, willRetryUntil: Date): Promise<boolean> {
    const status = error.smtp && error.smtp.code < 500 ? error.smtp.enhanced : '4.4.7';
    const diagnostic = error.smtp ? `${error.smtp.code} ${error.smtp.enhanced} ${error.publicMessage}` : undefined;
    const rcpts = event.data.envelope.rcptTo.filter((r) => wants(r, 'DELAY'));
    return this.send(
      event,
      original,
      rcpts.map((r) => ({ address: r.address, orcpt: r.orcpt, action: 'delayed', status, diagnostic, lastAttempt: new Date(this.opts.now()), willRetryUntil })),
      'HDRS',
    );
  }

  /**
   * Sends a report: true when it went out or is being retried (the caller
   * records it as sent and never asks again), false when there is nobody to
   * report to.
   */
  private async send(event: EmailEvent, original: Buffer, recipients: DsnRecipient[], ret = event.data.envelope.dsn?.ret): Promise<boolean> {
    const to = event.data.envelope.mailFrom;
    if (!to || recipients.length === 0) return false;
    const raw = buildDsn({
      reportingMta: this.opts.reportingMta,
      from: this.opts.from,
      to,
      envid: event.data.envelope.dsn?.envid,
      ret,
      arrivalDate: new Date(event.data.receivedAt),
      queueId: event.data.id,
      recipients,
      original,
      date: new Date(this.opts.now()),
    });
    const action = recipients[0]!.action;
    const delays = this.opts.retryDelaysMs ?? DEFAULT_DSN_RETRY_DELAYS_MS;
    const attempt = async (n: number): Promise<void> => {
      try {
        await this.transport.sendMail({ envelope: { from: '', to: [to] }, raw });
        this.opts.logger.info({ queueId: event.data.id, to, action, rcpts: recipients.length, ...(n ? { tries: n + 1 } : {}) }, 'DSN sent');
      } catch (err) {
        const last = n >= delays.length;
        this.opts.logger.error(
          { queueId: event.data.id, to, action, code: 'PG_DSN_SEND', err: (err as Error).message, tries: n + 1, ...(last ? {} : { nextInMs: delays[n] }) },
          last ? 'DSN could not be sent, given up' : 'DSN could not be sent, will retry',
        );
        if (last) return;
        const t = setTimeout(() => {
          this.retries.delete(t);
          void attempt(n + 1);
        }, delays[n]);
        t.unref();
        this.retries.add(t);
      }
    };
    await attempt(0);
    return true;
  }

  /** Stops the retries still waiting (logged: those reports are not sent). */
  close(): void {
    if (this.retries.size) this.opts.logger.warn({ pending: this.retries.size, code: 'PG_DSN_SEND' }, 'DSN retries dropped at shutdown');
    for (const t of this.retries) clearTimeout(t);
    this.retries.clear();
    this.transport.close();
  }
}
