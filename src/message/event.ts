/**
 * The event a target receives (DESIGN §4): `{type, timestamp, data}` with
 * `data` an InboundEmail of schema postgate.email.v1 (src/message/schema.ts is
 * the one source of its types and JSON Schema). This joins the SMTP envelope
 * with the parsed message.
 */
import { parseMessage, type ParseLimits } from './parse.js';
import { buildEmailEvent, buildInboundEmail, type EmailEvent, type Envelope } from './schema.js';

export type { EmailEvent, Envelope, InboundEmail } from './schema.js';

export async function buildEvent(opts: {
  queueId: string;
  receivedAt: Date;
  envelope: Envelope;
  /** The message as stored and delivered (with trace headers). */
  message: Buffer;
  /** SHA-256 (hex) of the bytes as received. */
  rawSha256: string;
  rawSize: number;
  limits?: Partial<ParseLimits>;
}): Promise<EmailEvent> {
  // Hostile or broken MIME yields parseErrors, never a rejection; a rejection
  // here is an internal fault and the caller defers the message (451).
  const content = await parseMessage(opts.message, opts.limits ? { limits: opts.limits } : {});
  const data = buildInboundEmail({
    id: opts.queueId,
    receivedAt: opts.receivedAt,
    envelope: opts.envelope,
    raw: { size: opts.rawSize, sha256: opts.rawSha256 },
    content,
  });
  return buildEmailEvent(data, opts.receivedAt);
}
