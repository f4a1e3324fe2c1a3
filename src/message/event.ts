/**
 * The event a target receives (DESIGN §4): `{type, timestamp, data}` with
 * `data` an InboundEmail of schema postgate.email.v1.
 *
 * This builds the envelope, ordered headers, the few header fields the edge
 * can read without a MIME parser, and the raw digest. The full MIME model
 * (bodies, attachments, decoded addresses, auth verdicts) is added by the
 * message parser; fields it has not filled are absent, never invented.
 */
import { parseHeaderBlock, headerValue, type HeaderField } from './headers.js';
import type { Transport } from './trace.js';

export const EMAIL_SCHEMA = 'postgate.email.v1';

export interface EnvelopeRecipient {
  address: string;
  notify?: string[];
  orcpt?: string;
}

export interface Envelope {
  mailFrom: string;
  rcptTo: EnvelopeRecipient[];
  helo: string;
  clientAddress: string;
  clientHostname?: string;
  tls: { protocol: string; cipher: string } | null;
  authUser: string | null;
  transport: Transport;
  queueId: string;
  listener: string;
}

export interface InboundEmail {
  schema: typeof EMAIL_SCHEMA;
  id: string;
  receivedAt: string;
  envelope: Envelope;
  headers: HeaderField[];
  messageId: string | null;
  subject: string | null;
  date: string | null;
  raw: { size: number; sha256: string; url?: string };
}

export interface EmailEvent {
  type: 'email.received';
  timestamp: string;
  data: InboundEmail;
}

export function buildEvent(opts: {
  queueId: string;
  receivedAt: Date;
  envelope: Envelope;
  /** The message as stored and delivered (with trace headers). */
  message: Buffer;
  /** SHA-256 (hex) of the bytes as received. */
  rawSha256: string;
  rawSize: number;
}): EmailEvent {
  const headers = parseHeaderBlock(opts.message);
  const dateHeader = headerValue(headers, 'date');
  const parsedDate = dateHeader ? new Date(dateHeader) : null;
  return {
    type: 'email.received',
    timestamp: opts.receivedAt.toISOString(),
    data: {
      schema: EMAIL_SCHEMA,
      id: opts.queueId,
      receivedAt: opts.receivedAt.toISOString(),
      envelope: opts.envelope,
      headers,
      messageId: headerValue(headers, 'message-id'),
      subject: headerValue(headers, 'subject'),
      // An invalid Date: is reported as null, never replaced by "now".
      date: parsedDate && !Number.isNaN(parsedDate.getTime()) ? parsedDate.toISOString() : null,
      raw: { size: opts.rawSize, sha256: opts.rawSha256 },
    },
  };
}
