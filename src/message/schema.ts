/**
 * The message model, `postgate.email.v1`: one zod schema from which the
 * TypeScript types, runtime validation and the published JSON Schema
 * (schema/email.v1.json, see `emailJsonSchema()`) are all derived, so they
 * cannot drift apart. docs/payload.md documents every field; a test checks
 * the two name the same fields.
 *
 * Versioning: adding an optional field, a new `parseErrors` code or a new
 * value in a field documented as open keeps v1; renaming, removing or
 * retyping a field is v2 (a new schema id and a new file). Objects are open
 * (no `additionalProperties: false`) so consumers validating v1 keep working
 * when fields are added.
 *
 * Leaf module apart from zod and the Transport type of trace.ts.
 */
import { z } from 'zod';
import { authResultsSchema, type AuthResults } from './mailauth.js';
import type { Transport } from './trace.js';
import { isoTime } from '../core/time.js';

export const EMAIL_SCHEMA_ID = 'postgate.email.v1';
export const EMAIL_JSON_SCHEMA_URL = 'https://postgate.dev/schema/email.v1.json';

const isoDateTime = () => z.iso.datetime({ offset: false });

// ── addresses (RFC 5322 §3.4, RFC 6532, IDNA RFC 5891) ──────────────────────

export const addressSchema = z
  .object({
    name: z
      .string()
      .describe(
        'Display name: RFC 2047 encoded words decoded, quotes and quoted-pairs removed. For the legacy `addr (Full Name)` form (a bare address without `<>`) the comment is taken as the name, a legacy convention (as mailparser and postal-mime do); other comments are dropped. "" when none was given.',
      ),
    address: z
      .string()
      .describe(
        'The normalised address `local@domain`: the local part unquoted unless quoting is required (RFC 5322 §3.4.1) and kept as written otherwise (case, SMTPUTF8 / RFC 6532 characters), the domain lower-cased in its ASCII (A-label, punycode) form. "" when the address is invalid (then `original` holds what was written and parseErrors has an `invalid_address` entry).',
      ),
    original: z.string().describe('The mailbox exactly as written in the header (after unfolding), display name and comments included.'),
    local: z
      .string()
      .optional()
      .describe('Local part as it appears in `address` (quoted only when it is not a dot-atom). Absent when the address is invalid.'),
    domain: z
      .string()
      .optional()
      .describe('Domain in ASCII form: lower-cased, IDNA A-labels (`xn--…`, RFC 5891), or an address literal such as `[192.0.2.1]`. Absent when the address is invalid.'),
    unicodeDomain: z
      .string()
      .optional()
      .describe('Domain in Unicode form (U-labels), equal to `domain` when it is plain ASCII. Absent when the address is invalid.'),
  })
  .meta({ id: 'Address', description: 'One mailbox of an address header (RFC 5322 §3.4).' });

export const groupSchema = z
  .object({
    group: z.string().describe('The group display name, decoded (e.g. "undisclosed-recipients").'),
    members: z.array(addressSchema).describe('The mailboxes of the group, possibly none (`undisclosed-recipients:;`).'),
  })
  .meta({ id: 'Group', description: 'A named group of mailboxes, `name: a@x, b@y;` (RFC 5322 §3.4).' });

const addressListSchema = (header: string, extra = '') =>
  z
    .array(z.union([addressSchema, groupSchema]))
    .nullable()
    .describe(
      `The ${header} header as a list of Address and Group entries in header order; [] when the header is present but empty, null when it is absent.${extra}`,
    );

// ── envelope (RFC 5321, DSN RFC 3461) ───────────────────────────────────────

export const envelopeSchema = z
  .object({
    mailFrom: z.string().describe('The reverse-path of MAIL FROM, without angle brackets; "" for the null sender `<>` (bounces, RFC 5321 §4.5.5).'),
    rcptTo: z
      .array(
        z.object({
          address: z.string().describe('The forward-path of RCPT TO, without angle brackets.'),
          notify: z.array(z.string()).optional().describe('DSN NOTIFY values (NEVER, SUCCESS, FAILURE, DELAY), RFC 3461 §4.1; absent when not given.'),
          orcpt: z.string().optional().describe('DSN ORCPT original recipient, `type;xtext`, RFC 3461 §4.2; absent when not given.'),
          mailboxHash: z
            .string()
            .nullable()
            .optional()
            .describe('The subaddress tag of the recipient (RFC 5233): "abc" for `user+abc@example.com`, null without one (Postmark\'s MailboxHash).'),
        }),
      )
      .describe('The recipients accepted in this transaction (all routed to this target), in RCPT order.'),
    dsn: z
      .object({
        ret: z.enum(['FULL', 'HDRS']).nullable().describe('DSN RET parameter of MAIL FROM, RFC 3461 §4.3; null when not given.'),
        envid: z.string().nullable().describe('DSN ENVID parameter of MAIL FROM, RFC 3461 §4.4; null when not given.'),
      })
      .optional()
      .describe('DSN parameters of MAIL FROM; absent when DSN is not offered.'),
    helo: z.string().describe('The name the client gave in HELO/EHLO.'),
    clientAddress: z.string().describe('IP address of the SMTP client (the PROXY protocol source when used).'),
    clientHostname: z.string().optional().describe('Forward-confirmed reverse DNS name of the client (RFC 8601 §3 iprev); present only with `smtp.reverseDns.enabled` and a confirmed name.'),
    dnsbl: z
      .array(
        z.object({
          zone: z.string().describe('The DNS block list zone that lists the client (smtp.dnsbl[].zone).'),
          answers: z.array(z.string()).describe('Its A records that count as listed, e.g. ["127.0.0.2"] (RFC 5782 §2.1).'),
        }),
      )
      .optional()
      .describe('DNS block lists of smtp.dnsbl that list the client and let the message through (action tag, or postmaster/abuse under reject-rcpt); absent when none does (docs/blocklists.md).'),
    tls: z
      .object({
        protocol: z.string().describe('TLS version, e.g. "TLSv1.3".'),
        cipher: z.string().describe('Negotiated cipher suite, e.g. "TLS_AES_256_GCM_SHA384".'),
      })
      .nullable()
      .describe('The TLS session (STARTTLS or implicit TLS); null for a cleartext session.'),
    authUser: z.string().nullable().describe('The user authenticated with SMTP AUTH (RFC 4954); null when unauthenticated.'),
    transport: z
      .enum(['SMTP', 'ESMTP', 'ESMTPS', 'ESMTPA', 'ESMTPSA'])
      .describe('The protocol as written in the Received header, RFC 3848: ESMTP after EHLO, S with TLS, A with AUTH.'),
    queueId: z.string().describe('The queue id of the transaction (also in the 250 reply and the Received header).'),
    listener: z.string().describe('The name of the listener that received the message.'),
  })
  .meta({ id: 'Envelope', description: 'The SMTP envelope (RFC 5321) of the transaction.' });

// ── content kept in the blob store (claim check) ────────────────────────────

export const blobRefSchema = z
  .object({
    url: z.string().describe('Where the content was stored; fetch it before `expiresAt`.'),
    expiresAt: isoDateTime().describe('When `url` stops working (ISO-8601, UTC).'),
    size: z.number().int().nonnegative().describe('Size of the stored content in bytes (UTF-8 for text).'),
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .describe('SHA-256 of the stored content, lower-case hex.'),
  })
  .meta({ id: 'BlobRef', description: 'Content moved out of the event into the blob store (claim check), with a signed, expiring link.' });

// ── attachments (RFC 2045-2049, 2183, 2231, 2387) ───────────────────────────

export const attachmentSchema = z
  .object({
    filename: z
      .string()
      .nullable()
      .describe('File name from Content-Disposition `filename` or Content-Type `name`, RFC 2231 and RFC 2047 encodings decoded; null when none.'),
    contentType: z.string().describe('The declared media type, lower-cased, without parameters (e.g. "application/pdf").'),
    disposition: z
      .enum(['attachment', 'inline'])
      .nullable()
      .describe('Content-Disposition (RFC 2183); an unrecognised value counts as "attachment" (RFC 2183 §2.8); null when the header is absent.'),
    contentId: z.string().nullable().describe('Content-ID without angle brackets, the target of `cid:` URLs (RFC 2392); null when absent.'),
    related: z
      .boolean()
      .describe('True when the part sits inside multipart/related and has a Content-ID, i.e. it is a resource of the HTML body (an inline image), RFC 2387.'),
    size: z.number().int().nonnegative().describe('Size of the decoded content in bytes.'),
    sha256: z
      .string()
      .regex(/^[0-9a-f]{64}$/)
      .describe('SHA-256 of the decoded content, lower-case hex.'),
    content: z
      .base64()
      .optional()
      .describe('The decoded content, base64. Present when the content is carried inline (small parts, or no blob store).'),
    url: z.string().optional().describe('Where the content was stored (claim check) when it is not inline; fetch it before `expiresAt`.'),
    expiresAt: isoDateTime().optional().describe('When `url` stops working (ISO-8601, UTC). Present exactly when `url` is.'),
  })
  .superRefine((a, ctx) => {
    if (a.content !== undefined && a.url !== undefined) ctx.addIssue({ code: 'custom', message: 'content and url are mutually exclusive' });
    if ((a.url === undefined) !== (a.expiresAt === undefined)) ctx.addIssue({ code: 'custom', message: 'url and expiresAt go together' });
  })
  .meta({
    id: 'Attachment',
    description:
      'A non-body MIME part. Exactly one of `content` or `url`+`expiresAt` is present, except when a limit stopped the content from being kept: then neither is, and parseErrors says why (`decoded_too_large`).',
  });

export const parseErrorSchema = z
  .object({
    code: z.string().describe('Stable machine-readable code; see docs/payload.md#parse-errors. New codes may be added within v1.'),
    message: z.string().describe('Human-readable detail. Do not match on it.'),
  })
  .meta({ id: 'ParseError', description: 'Something in the message was malformed or over a limit; the rest was parsed anyway.' });

// ── machine mail (RFC 3834, RFC 2369/2919, RFC 3464) ───────────────────────

export const bouncedRecipientSchema = z
  .object({
    address: z.string().describe('The recipient whose delivery failed: the `Final-Recipient` of the report (RFC 3464 §2.3.2), without its address type.'),
    originalRecipient: z.string().nullable().describe('`Original-Recipient` (RFC 3464 §2.3.1), the address as the sender gave it; null when absent.'),
    action: z.string().nullable().describe('`Action` (RFC 3464 §2.3.3), lower-case: "failed" for every listed recipient.'),
    status: z
      .string()
      .nullable()
      .describe('`Status`: the enhanced status code (RFC 3463), e.g. "5.1.1" (bad mailbox); null when the report has none.'),
    diagnostic: z
      .string()
      .nullable()
      .describe('`Diagnostic-Code` without its type (RFC 3464 §2.3.6): for SMTP, the remote server\'s reply (its code, enhanced code and text, e.g. a 550 with 5.1.1 for an unknown user); null when absent.'),
    remoteMta: z.string().nullable().describe('`Remote-MTA` without its type (RFC 3464 §2.3.5): the server that refused; null when absent.'),
  })
  .meta({ id: 'BouncedRecipient', description: 'One failed recipient of a delivery status notification (RFC 3464 §2.3).' });

export const bounceSchema = z
  .object({
    recipients: z
      .array(bouncedRecipientSchema)
      .describe('The recipients whose delivery failed (`Action: failed`), in report order (at most 100); [] when the report itself was not kept (over a limit or in the blob store).'),
    reportingMta: z.string().nullable().describe('`Reporting-MTA` without its type (RFC 3464 §2.2.2): the server that wrote the report; null when absent.'),
    originalMessageId: z
      .string()
      .nullable()
      .describe('Message-ID of the message that bounced, without angle brackets, from the returned message or its headers (message/rfc822 or text/rfc822-headers, RFC 6522 §3); null when the report returns neither or it has no Message-ID.'),
  })
  .meta({ id: 'Bounce', description: 'A bounce: a delivery status notification (multipart/report; report-type=delivery-status, RFC 3464) reporting at least one failed recipient.' });

export const classificationSchema = z
  .object({
    autoReply: z
      .boolean()
      .describe('An automatic reply (vacation, out-of-office, auto-responder) or other machine-sent message: `Auto-Submitted` other than "no" (RFC 3834 §5), `Precedence: auto_reply`, `X-Autoreply` or `X-Autorespond`, or a delivery report without failures (delays, successes). False for a bounce.'),
    bulk: z.boolean().describe('Bulk or list mail: `Precedence: bulk`, `list` or `junk`, or a `List-Id` (RFC 2919) or `List-Unsubscribe` (RFC 2369, RFC 8058) header.'),
    bounce: bounceSchema.nullable().describe('The bounce, when the message is a delivery status notification with a failed recipient (RFC 3464); null otherwise.'),
  })
  .meta({ id: 'Classification', description: 'Whether a machine sent the message, and what kind: automatic reply, bulk or list mail, bounce.' });

// ── the message ─────────────────────────────────────────────────────────────

// ── content scanning (docs/scanning.md) ─────────────────────────────────────

const spamVerdictSchema = z
  .object({
    scanner: z.string().describe('Id of the scanner whose verdict this is (scan.scanners[].id, default its type): the first that called the message spam, else the first that answered.'),
    score: z.number().describe('The scanner\'s score; higher is spammier.'),
    threshold: z.number().describe('The score from which the message counts as spam: the route\'s scan.threshold, else the scanner\'s own required score.'),
    action: z
      .enum(['none', 'tag', 'quarantine'])
      .describe('What postgate did: "none" (not spam), "tag" (spam, delivered with this verdict), "quarantine" (spam, delivered only to the quarantine targets). A rejected message has no event. Open: accept other values.'),
    symbols: z.array(z.string()).describe('Names of the rules that matched (rspamd symbols, SpamAssassin tests), strongest first for rspamd; at most 100.'),
  })
  .meta({ id: 'SpamVerdict' });

const virusVerdictSchema = z
  .object({
    scanner: z.string().describe('Id of the virus scanner (scan.scanners[].id, default its type).'),
    infected: z.boolean().describe('Whether malware was found.'),
    names: z.array(z.string()).describe('Signature names found; [] when clean.'),
  })
  .meta({ id: 'VirusVerdict' });

export type SpamVerdictData = z.infer<typeof spamVerdictSchema>;
export type VirusVerdictData = z.infer<typeof virusVerdictSchema>;

export const inboundEmailSchema = z
  .object({
    schema: z.literal(EMAIL_SCHEMA_ID).describe('The schema id of this object; a breaking change gets a new id.'),
    id: z.string().describe('The queue id: unique per accepted transaction, sortable by arrival.'),
    receivedAt: isoDateTime().describe('When the message was received (end of DATA), ISO-8601 UTC.'),
    envelope: envelopeSchema,
    headers: z
      .array(
        z.object({
          name: z.string().describe('Field name as written (case kept).'),
          value: z.string().describe('Field body unfolded (CRLF removed, RFC 5322 §2.2.3), trimmed, not decoded.'),
        }),
      )
      .describe('Every header field of the message, in order, exactly as received (trace headers added by postgate first).'),
    messageId: z
      .string()
      .nullable()
      .describe('Message-ID without angle brackets (`id-left@id-right`, RFC 5322 §3.6.4); null when absent.'),
    date: isoDateTime()
      .nullable()
      .describe('The Date header (RFC 5322 §3.3, obsolete forms of §4.3 accepted) as ISO-8601 UTC; null when absent or unparseable, never replaced by the receive time.'),
    subject: z.string().nullable().describe('Subject with RFC 2047 encoded words decoded; null when absent.'),
    from: addressListSchema('From'),
    sender: addressListSchema('Sender'),
    replyTo: addressListSchema('Reply-To'),
    to: addressListSchema('To', ' Repeated To headers are concatenated.'),
    cc: addressListSchema('Cc', ' Repeated Cc headers are concatenated.'),
    bcc: addressListSchema('Bcc', ' Only present in the rare messages that carry a Bcc header; envelope recipients not in To/Cc are not listed here.'),
    inReplyTo: z.string().nullable().describe('The first message id of In-Reply-To, without angle brackets; null when absent.'),
    references: z.array(z.string()).describe('The message ids of References, in order, without angle brackets; [] when absent.'),
    text: z
      .string()
      .nullable()
      .describe('The text/plain body (all inline text/plain parts, joined), decoded to UTF-8 from its charset, line ends LF; when there is no text/plain part, text derived from the HTML body (`textSource` "html"); null when the message has neither, or when the body was larger than `blobs.bodyInlineLimit` and went to the blob store (then `textBlob` links it).'),
    textSource: z
      .enum(['text', 'html'])
      .nullable()
      .describe('Where `text` came from: "text" from text/plain parts, "html" derived from the HTML body (links as `text [url]`, no script or style content); null when the message has neither body.'),
    textBlob: blobRefSchema
      .nullable()
      .describe('The text body when it was too large to carry inside the event (claim check): fetch `url` for the UTF-8 text; null when `text` is inline or absent.'),
    html: z
      .string()
      .nullable()
      .describe('The text/html body (all inline text/html parts, joined), decoded to UTF-8; `cid:` links left as they are; null when the message has none, or when it went to the blob store (then `htmlBlob` links it).'),
    htmlBlob: blobRefSchema
      .nullable()
      .describe('The HTML body when it was too large to carry inside the event (claim check); null when `html` is inline or absent.'),
    strippedText: z
      .string()
      .nullable()
      .describe('The text body without quoted history (">" lines, "On … wrote:" and Outlook "Original Message" / "From: … Sent:" blocks) and without the signature (after a "-- " line, or a mail app\'s "Sent from my iPhone" line); for text derived from HTML, the text of `strippedHtml` so stripped. Null when there is no text body, or when even the stripped reply is larger than `blobs.bodyInlineLimit`.'),
    strippedSignature: z
      .string()
      .nullable()
      .describe('The signature block taken off the reply: the lines after a "-- " separator (RFC 3676 §4.3) up to any quoted history, or a mail app\'s sign-off line ("Sent from my iPhone", "Get Outlook for iOS") and what follows it; null when none was recognised.'),
    strippedHtml: z
      .string()
      .nullable()
      .describe('The HTML body without the quoted message, for the markup of Gmail (div.gmail_quote), Outlook (divRplyFwdMsg, the border-top separator, the From/Sent block), Apple Mail (blockquote type=cite), Thunderbird (div.moz-cite-prefix) and Yahoo (div.yahoo_quoted); equal to `html` when no quote is recognised; null when there is no HTML body, or when the HTML went to the blob store and even the stripped HTML is larger than `blobs.bodyInlineLimit`.'),
    classification: classificationSchema,
    attachments: z.array(attachmentSchema).describe('Every non-body part (attachments and inline resources), in message order.'),
    raw: z
      .object({
        size: z.number().int().nonnegative().describe('Size in bytes of the message as received (before trace headers): the bytes `sha256` covers.'),
        sha256: z.string().regex(/^[0-9a-f]{64}$/).describe('SHA-256 of the message as received (before trace headers), lower-case hex.'),
        content: z
          .base64()
          .optional()
          .describe('The message as received, base64; present when `blobs.raw` is on and the message is at most `blobs.rawInlineLimit` bytes.'),
        url: z
          .string()
          .optional()
          .describe('Where the message as received (RFC 5322 .eml) was stored (claim check); present when `blobs.raw` is on and the message is larger than `blobs.rawInlineLimit`.'),
        expiresAt: isoDateTime().optional().describe('When `url` stops working (ISO-8601 UTC). Present exactly when `url` is.'),
      })
      .superRefine((r, ctx) => {
        if (r.content !== undefined && r.url !== undefined) ctx.addIssue({ code: 'custom', message: 'content and url are mutually exclusive' });
        if ((r.url === undefined) !== (r.expiresAt === undefined)) ctx.addIssue({ code: 'custom', message: 'url and expiresAt go together' });
      })
      .describe('The message as a whole. Neither `content` nor `url` is present unless `blobs.raw` is on.'),
    auth: authResultsSchema
      .nullable()
      .describe('SPF (MAIL FROM and HELO), DKIM per signature, DMARC and ARC verdicts (RFC 7208, 6376, 7489, 8617), with the Authentication-Results value postgate added (RFC 8601); null unless `mailAuth.enabled` is set.'),
    spam: spamVerdictSchema
      .nullable()
      .describe('The spam verdict of the route\'s scanners (docs/scanning.md); null when the route is not scanned or no spam scanner gave a verdict (then, under onError accept, parseErrors has a `scan_unavailable` entry).'),
    virus: virusVerdictSchema
      .nullable()
      .optional()
      .describe('The malware verdict of the route\'s virus scanner; null or absent when the route is not scanned by one or it gave no verdict.'),
    parseErrors: z.array(parseErrorSchema).describe('Problems met while parsing; [] for a clean message. The message was delivered anyway.'),
  })
  .meta({ id: 'InboundEmail', description: 'A received email, schema postgate.email.v1.' });

export const emailEventSchema = z.object({
  type: z.literal('email.received').describe('The event type.'),
  timestamp: isoDateTime().describe('When the event was created, ISO-8601 UTC (the webhook-timestamp header carries the same instant in Unix seconds).'),
  data: inboundEmailSchema,
});

export type Address = z.infer<typeof addressSchema>;
export type Group = z.infer<typeof groupSchema>;
export type AddressListItem = Address | Group;
export type Envelope = z.infer<typeof envelopeSchema>;
export type Attachment = z.infer<typeof attachmentSchema>;
export type BlobRef = z.infer<typeof blobRefSchema>;
export type ParseError = z.infer<typeof parseErrorSchema>;
export type Classification = z.infer<typeof classificationSchema>;
export type Bounce = z.infer<typeof bounceSchema>;
export type BouncedRecipient = z.infer<typeof bouncedRecipientSchema>;
export type InboundEmail = z.infer<typeof inboundEmailSchema>;
export type EmailEvent = z.infer<typeof emailEventSchema>;

/** What the parser produces: everything the message bytes alone determine. */
export type ParsedContent = Omit<InboundEmail, 'schema' | 'id' | 'receivedAt' | 'envelope' | 'raw' | 'auth' | 'spam' | 'virus' | 'textBlob' | 'htmlBlob'>;

// The envelope transport is the same union as trace.ts's (compile-time check both ways).
const transportCheck: [Transport, Envelope['transport']] = ['SMTP', 'SMTP'] as [Envelope['transport'], Transport];
void transportCheck;

/**
 * Stable `parseErrors` codes with the line docs/payload.md must carry for
 * each (a test checks it). Adding a code is an additive (v1) change.
 */
export const PARSE_ERROR_CODES = {
  invalid_date: 'The Date header is present but not a parseable RFC 5322 date; `date` is null.',
  invalid_address: 'An address in From/Sender/Reply-To/To/Cc/Bcc is not a valid mailbox; it is kept with `original` and an empty `address`.',
  duplicate_header: 'A header that may appear once (RFC 5322 §3.6) appears more than once; the first is used (To/Cc/Bcc are concatenated).',
  unknown_charset: 'A body or encoded word declares a charset that is not known (or is refused, like UTF-7); it was decoded as UTF-8.',
  invalid_encoding: 'Broken base64 in a part, or an unknown Content-Transfer-Encoding; the content was decoded on a best-effort basis.',
  malformed_mime: 'Broken MIME structure: a multipart without a boundary, a boundary that never appears, a missing closing delimiter, or a parser error.',
  invalid_content_type: 'A Content-Type without a type/subtype (`text; charset=us-ascii`); the part was read as text/plain, or application/octet-stream when it is an attachment (RFC 2045 §5.2), its charset kept.',
  missing_header_separator: 'A header block ends at a line that is not a header field, without the empty line before the body (RFC 5322 §2.1); that line and the rest were taken as the body.',
  too_many_parts: 'The message has more MIME parts than limits.maxParts; parts after the limit were not parsed.',
  too_deep: 'MIME nesting deeper than limits.maxDepth; the deeper parts were not parsed.',
  header_too_large: 'A header block is larger than limits.maxHeaderBytes; the rest of the message was not parsed.',
  decoded_too_large: 'Kept decoded content would exceed limits.maxDecodedBytes; later content was not kept (attachment metadata still is).',
  scan_unavailable: 'A scanner gave no verdict (down, slow or a broken answer) and onError is "accept": the message was delivered without that verdict (`spam` or `virus` null).',
  too_many_errors: 'More than 100 problems; the rest are not listed.',
} as const;

export type ParseErrorCode = keyof typeof PARSE_ERROR_CODES;

/** The JSON Schema of the webhook body; InboundEmail and its parts are under `$defs`. */
export function emailJsonSchema(): Record<string, unknown> {
  const generated = z.toJSONSchema(emailEventSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  const { $schema, ...rest } = generated;
  return {
    $schema,
    $id: EMAIL_JSON_SCHEMA_URL,
    title: 'postgate email.received event (postgate.email.v1)',
    description:
      'The JSON body postgate POSTs to a webhook for each received message: {type, timestamp, data}. `data` is an InboundEmail (#/$defs/InboundEmail). See docs/payload.md.',
    ...rest,
  };
}

/** Puts an InboundEmail together from the transaction facts and the parsed content. */
export function buildInboundEmail(opts: {
  id: string;
  receivedAt: Date | string;
  envelope: Envelope;
  raw: InboundEmail['raw'];
  content: ParsedContent;
  auth?: AuthResults | null;
  /** Verdicts of the scan step (absent: not scanned). */
  scan?: { spam: SpamVerdictData | null; virus: VirusVerdictData | null; notes: ParseError[] } | undefined;
  /** Bodies moved to the blob store (their `text`/`html` in `content` are then null). */
  bodies?: { text?: BlobRef | null; html?: BlobRef | null };
}): InboundEmail {
  const c = opts.content;
  return {
    schema: EMAIL_SCHEMA_ID,
    id: opts.id,
    receivedAt: typeof opts.receivedAt === 'string' ? opts.receivedAt : isoTime(opts.receivedAt.getTime()),
    envelope: opts.envelope,
    headers: c.headers,
    messageId: c.messageId,
    date: c.date,
    subject: c.subject,
    from: c.from,
    sender: c.sender,
    replyTo: c.replyTo,
    to: c.to,
    cc: c.cc,
    bcc: c.bcc,
    inReplyTo: c.inReplyTo,
    references: c.references,
    text: c.text,
    textSource: c.textSource,
    textBlob: opts.bodies?.text ?? null,
    html: c.html,
    htmlBlob: opts.bodies?.html ?? null,
    strippedText: c.strippedText,
    strippedSignature: c.strippedSignature,
    strippedHtml: c.strippedHtml,
    classification: c.classification,
    attachments: c.attachments,
    raw: opts.raw,
    auth: opts.auth ?? null,
    spam: opts.scan?.spam ?? null,
    ...(opts.scan ? { virus: opts.scan.virus } : {}),
    parseErrors: opts.scan?.notes.length ? [...c.parseErrors, ...opts.scan.notes] : c.parseErrors,
  };
}

/** The webhook body for an InboundEmail. */
export function buildEmailEvent(data: InboundEmail, timestamp: Date | string = data.receivedAt): EmailEvent {
  return { type: 'email.received', timestamp: typeof timestamp === 'string' ? timestamp : isoTime(timestamp.getTime()), data };
}
