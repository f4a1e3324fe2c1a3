/**
 * Helpers the formats share: the raw message as every raw format posts it,
 * address lists written back as header text, and the parts of the event a
 * parsed format needs inline. Leaf module.
 */
import type { AddressListItem, Attachment, InboundEmail } from '../../message/schema.js';
import { NotInline } from './types.js';

/**
 * The stored message without postgate's `Received` line. The stored message
 * starts with the trace block `message/trace.ts` writes: `Return-Path`, then
 * one `Received` field (folded over continuation lines). The Return-Path is
 * the envelope sender, equal on every retry; the Received line names this
 * attempt's queue id and time, so it is dropped: a consumer that
 * deduplicates on a checksum of the bytes (Action Mailbox: Message-ID and
 * SHA-1 of the source) must see the same bytes on every retry.
 */
export function withoutOwnReceived(stored: Buffer): Buffer {
  if (!stored.subarray(0, 12).equals(Buffer.from('Return-Path:'))) return stored;
  const first = stored.indexOf('\r\n');
  if (first === -1 || !stored.subarray(first + 2, first + 11).equals(Buffer.from('Received:'))) return stored;
  let end = first + 2;
  // RFC 5322 §2.2.3: a field continues on lines that start with white space.
  do {
    const next = stored.indexOf('\r\n', end);
    if (next === -1) return stored;
    end = next + 2;
  } while (stored[end] === 0x20 || stored[end] === 0x09);
  return Buffer.concat([stored.subarray(0, first + 2), stored.subarray(end)]);
}

const oneLine = (s: string): string => s.replace(/[\r\n]+/g, ' ');

/**
 * One `X-Original-To` per envelope recipient, after the Return-Path (where
 * Postfix's local delivery writes it). Action Mailbox routes on it
 * (`mail.recipients` includes X-Original-To), so a Bcc recipient, named in
 * no header of the message, still reaches its mailbox.
 */
export function withOriginalTo(raw: Buffer, rcptTo: readonly string[]): Buffer {
  const lines = Buffer.from(rcptTo.map((a) => `X-Original-To: ${oneLine(a)}\r\n`).join(''), 'utf8');
  const at = raw.subarray(0, 12).equals(Buffer.from('Return-Path:')) ? raw.indexOf('\r\n') + 2 : 0;
  return Buffer.concat([raw.subarray(0, at), lines, raw.subarray(at)]);
}

/** RFC 5322 §3.4 text of one address: `"Name" <a@b>` or `a@b`. */
export function mailboxText(a: { name?: string | null; address: string }): string {
  return a.name ? `${JSON.stringify(a.name)} <${a.address}>` : a.address;
}

/** The mailboxes of an address list, groups flattened. */
export function mailboxes(list: readonly AddressListItem[] | null | undefined): Array<{ name: string | null; address: string }> {
  const out: Array<{ name: string | null; address: string }> = [];
  for (const item of list ?? []) {
    if ('members' in item) for (const m of item.members) out.push({ name: m.name || null, address: m.address });
    else out.push({ name: item.name || null, address: item.address });
  }
  return out;
}

export const listText = (list: readonly AddressListItem[] | null | undefined): string => mailboxes(list).map(mailboxText).join(', ');

/** The header field's raw value (first occurrence), or ''. */
export function header(data: InboundEmail, name: string): string {
  const n = name.toLowerCase();
  return data.headers.find((h) => h.name.toLowerCase() === n)?.value ?? '';
}

/** The message's header fields as received: without the trace block postgate put first. */
export function receivedHeaders(data: InboundEmail): InboundEmail['headers'] {
  const h = data.headers;
  return h[0]?.name === 'Return-Path' && h[1]?.name === 'Received' ? h.slice(2) : h;
}

/** The decoded bytes of an attachment; throws NotInline when it went to the blob store. */
export function attachmentBytes(a: Attachment, format: string): Buffer {
  if (a.content === undefined) {
    throw new NotInline(`${format} carries attachments inline, and "${a.filename ?? a.contentType}" (${a.size} bytes) went to the blob store: raise blobs.inlineLimit, or use a raw format`);
  }
  return Buffer.from(a.content, 'base64');
}

/** The text and HTML bodies; throws NotInline when one went to the blob store. */
export function bodies(data: InboundEmail, format: string): { text: string; html: string } {
  if (data.textBlob || data.htmlBlob) {
    throw new NotInline(`${format} carries the bodies inline, and a body went to the blob store: raise blobs.bodyInlineLimit, or use a raw format`);
  }
  return { text: data.text ?? '', html: data.html ?? '' };
}

/** A file name for a part without one, as the services name them. */
export const fileName = (a: Attachment, i: number): string => a.filename ?? `attachment-${i + 1}`;
