/**
 * Delivery status notifications (RFC 3464 format, RFC 3461 semantics): a
 * multipart/report (RFC 6522) with a human-readable part, a
 * message/delivery-status part, and the original message (RET=FULL) or its
 * header (RET=HDRS, and by default: a report should not carry a large
 * message back without being asked, RFC 3461 §4.3).
 *
 * Pure: builds bytes, sends nothing. Leaf module apart from randomness.
 */
import { randomBytes } from 'node:crypto';

export interface DsnRecipient {
  /** The final recipient (RCPT TO). */
  address: string;
  /** ORCPT as given (`type;xtext`), echoed as Original-Recipient (RFC 3464 §2.3.1). */
  orcpt?: string | undefined;
  action: 'delivered' | 'failed' | 'delayed';
  /** RFC 3463 status, e.g. "2.0.0", "5.7.1". */
  status: string;
  /** The reply that decided it, e.g. "550 5.7.1 No such user" (Diagnostic-Code: smtp; …). */
  diagnostic?: string | undefined;
  lastAttempt?: Date | undefined;
  /** For `delayed`: when the queue gives up (Will-Retry-Until, RFC 3464 §2.3.9). */
  willRetryUntil?: Date | undefined;
}

export interface DsnInput {
  reportingMta: string;
  /** From: of the report (the DSN's envelope sender is always <>). */
  from: string;
  /** The original envelope sender: the report's only recipient. */
  to: string;
  envid?: string | null | undefined;
  ret?: 'FULL' | 'HDRS' | null | undefined;
  arrivalDate: Date;
  queueId: string;
  recipients: readonly DsnRecipient[];
  /** The original message as received. */
  original: Buffer;
  date: Date;
}

/** RFC 5322 date-time, e.g. "Mon, 23 Nov 2026 21:30:00 +0000". */
export function rfc5322Date(d: Date): string {
  return d.toUTCString().replace(/GMT$/, '+0000');
}

/** Only the header block of a message (up to the first empty line). */
function headerBlock(msg: Buffer): Buffer {
  const end = msg.indexOf('\r\n\r\n');
  if (end !== -1) return msg.subarray(0, end + 2);
  const lf = msg.indexOf('\n\n');
  return lf !== -1 ? msg.subarray(0, lf + 1) : msg;
}

/** One line, printable US-ASCII: a field value we did not write must not break the report. */
const clean = (s: string) => s.replace(/[\r\n]+/g, ' ').replace(/[^\x20-\x7e]/g, '?');

export function buildDsn(input: DsnInput): Buffer {
  const boundary = `=_postgate_report_${randomBytes(12).toString('hex')}`;
  const failed = input.recipients.filter((r) => r.action === 'failed');
  const delayed = !failed.length && input.recipients.some((r) => r.action === 'delayed');
  const subject = failed.length ? 'Undelivered Mail Returned to Sender' : delayed ? 'Delayed Mail (still being retried)' : 'Successful Mail Delivery Report';
  const human = [
    `This is the mail system at host ${input.reportingMta}.`,
    '',
    failed.length
      ? 'Your message could not be delivered to one or more recipients. It is attached below.'
      : delayed
        ? 'Your message could not be delivered yet to the recipient(s) below. It is still being retried; you do not need to send it again.'
        : 'Your message was successfully delivered to the destination(s) listed below.',
    '',
    ...input.recipients.map((r) => `<${clean(r.address)}>: ${r.action}${r.diagnostic ? `: ${clean(r.diagnostic)}` : ''}`),
    '',
  ].join('\r\n');

  // RFC 3464 §2.2: per-message fields, then a blank line and per-recipient groups (§2.3).
  const perMessage = [
    `Reporting-MTA: dns; ${clean(input.reportingMta)}`,
    `X-Postgate-Queue-ID: ${clean(input.queueId)}`,
    ...(input.envid ? [`Original-Envelope-Id: ${clean(input.envid)}`] : []),
    `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`,
  ];
  const perRecipient = input.recipients.map((r) =>
    [
      ...(r.orcpt ? [`Original-Recipient: ${clean(r.orcpt)}`] : []),
      `Final-Recipient: rfc822; ${clean(r.address)}`,
      `Action: ${r.action}`,
      `Status: ${r.status}`,
      ...(r.diagnostic ? [`Diagnostic-Code: smtp; ${clean(r.diagnostic)}`] : []),
      ...(r.lastAttempt ? [`Last-Attempt-Date: ${rfc5322Date(r.lastAttempt)}`] : []),
      ...(r.willRetryUntil ? [`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`] : []),
    ].join('\r\n'),
  );
  const status = [perMessage.join('\r\n'), ...perRecipient].join('\r\n\r\n');

  const full = input.ret === 'FULL';
  const head = [
    `From: ${input.from}`,
    `To: <${input.to}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(input.date)}`,
    `Message-ID: <${input.queueId}.dsn.${randomBytes(6).toString('hex')}@${clean(input.reportingMta)}>`,
    // RFC 3834 §5: a report is an automatic response; no auto-replies to it.
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
  ].join('\r\n');
  const parts = [
    `--${boundary}\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n${human}\r\n`,
    `--${boundary}\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n${status}\r\n\r\n`,
    `--${boundary}\r\nContent-Description: ${full ? 'Undelivered Message' : 'Message Headers'}\r\nContent-Type: ${full ? 'message/rfc822' : 'text/rfc822-headers'}\r\n\r\n`,
  ];
  const tail = `\r\n--${boundary}--\r\n`;
  return Buffer.concat([Buffer.from(head + parts.join(''), 'latin1'), full ? input.original : headerBlock(input.original), Buffer.from(tail)]);
}
