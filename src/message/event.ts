/**
 * The event a target receives (docs/payload.md): `{type, timestamp, data}` with
 * `data` an InboundEmail of schema postgate.email.v1 (src/message/schema.ts is
 * the one source of its types and JSON Schema). This joins the SMTP envelope,
 * the trace headers postgate added, and the parsed message.
 */
import { parseHeaderBlock } from './headers.js';
import { buildEmailEvent, buildInboundEmail, type BlobRef, type EmailEvent, type Envelope, type ParsedContent, type ParseError, type SpamVerdictData, type VirusVerdictData } from './schema.js';
import type { AuthResults } from './mailauth.js';

export type { EmailEvent, Envelope, InboundEmail } from './schema.js';

export function buildEvent(opts: {
  queueId: string;
  receivedAt: Date;
  envelope: Envelope;
  /** The trace header block postgate prepended (Return-Path, Received). */
  trace: string;
  /** The parsed message as received (without the trace headers). */
  content: ParsedContent;
  /** SHA-256 (hex) and size of the bytes as received. */
  rawSha256: string;
  rawSize: number;
  /** The raw message inline (`content`) or stored (`url`, `expiresAt`), when `blobs.raw` is on. */
  raw?: { content: string } | { url: string; expiresAt: string } | Record<string, never>;
  /** Bodies moved to the blob store. */
  bodies?: { text?: BlobRef | null; html?: BlobRef | null };
  auth?: AuthResults | null;
  /** Verdicts of the scan step, when the route is scanned (docs/scanning.md). */
  scan?: { spam: SpamVerdictData | null; virus: VirusVerdictData | null; notes: ParseError[] } | undefined;
  /** Incoming Authentication-Results claiming this authserv-id are dropped (RFC 8601 §5). */
  authservId?: string;
}): EmailEvent {
  // `headers` lists the message as stored and delivered: our trace headers first.
  const own = opts.authservId?.toLowerCase();
  const received = own
    ? opts.content.headers.filter((h) => !(h.name.toLowerCase() === 'authentication-results' && h.value.split(';')[0]!.trim().toLowerCase() === own))
    : opts.content.headers;
  const content = { ...opts.content, headers: [...parseHeaderBlock(Buffer.from(`${opts.trace}\r\n`, 'latin1')), ...received] };
  const data = buildInboundEmail({
    id: opts.queueId,
    receivedAt: opts.receivedAt,
    envelope: opts.envelope,
    raw: { size: opts.rawSize, sha256: opts.rawSha256, ...opts.raw },
    content,
    ...(opts.bodies ? { bodies: opts.bodies } : {}),
    auth: opts.auth ?? null,
    ...(opts.scan ? { scan: opts.scan } : {}),
  });
  return buildEmailEvent(data, opts.receivedAt);
}

/**
 * The event as one target sees it when it takes only some of the
 * transaction's recipients: the envelope lists just those (docs/architecture.md §2.3), so no
 * target learns of recipients routed elsewhere.
 */
export function eventForRecipients(event: EmailEvent, only: ReadonlySet<string>): EmailEvent {
  const data = event.data;
  return { ...event, data: { ...data, envelope: { ...data.envelope, rcptTo: data.envelope.rcptTo.filter((x) => only.has(x.address)) } } };
}
