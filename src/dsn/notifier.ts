/**
 * Sends delivery status notifications (RFC 3461) through a configured relay
 * with nodemailer: a `delivered` report to recipients that asked for
 * NOTIFY=SUCCESS, a `failed` report after the final failure of a message
 * already answered 250 (queued mode), unless NOTIFY=NEVER. Never to the null
 * sender: a report about a report could loop (RFC 3461 §6.2, RFC 5321 §4.5.5).
 *
 * Reports are sent with the null reverse-path `MAIL FROM:<>` (RFC 3464 §2.1
 * via RFC 5321 §4.5.5). A report that cannot be sent is logged, not retried:
 * the message itself is safe either way.
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
}

type Rcpt = EmailEvent['data']['envelope']['rcptTo'][number];

/** RFC 3461 §4.1: without NOTIFY the MTA behaves as for NOTIFY=FAILURE (DELAY is optional). */
const wants = (r: Rcpt, what: 'SUCCESS' | 'FAILURE') => {
  const n = r.notify?.map((x) => x.toUpperCase());
  if (!n || n.length === 0) return what === 'FAILURE';
  return !n.includes('NEVER') && n.includes(what);
};

export class DsnNotifier {
  private readonly transport: ReturnType<typeof nodemailer.createTransport>;

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
    try {
      await this.transport.sendMail({ envelope: { from: '', to: [to] }, raw });
      this.opts.logger.info({ queueId: event.data.id, to, action: recipients[0]!.action, rcpts: recipients.length }, 'DSN sent');
      return true;
    } catch (err) {
      this.opts.logger.error({ queueId: event.data.id, to, code: 'PG_DSN_SEND', err: (err as Error).message }, 'DSN could not be sent');
      return false;
    }
  }

  close(): void {
    this.transport.close();
  }
}
