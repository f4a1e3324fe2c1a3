/**
 * A receiver's structured answer (webhook JSON body, Lambda return value):
 *
 *   {"action":"reject","code":550,"enhanced":"5.7.1","message":"No such list"}
 *   {"action":"tempfail","code":451,"enhanced":"4.2.1","message":"Mailbox busy"}
 *
 * becomes the SMTP reply after DATA (docs/delivery.md). The receiver's values
 * are untrusted input that ends up on the wire to the sending MTA, so they are
 * clamped: the basic code to the codes RFC 5321 §4.3.2 allows after DATA, the
 * enhanced code to the same class (RFC 3463 §2: "the class sub-code ... must
 * match" the basic code), the text to one printable ASCII line.
 */
import type { GatewayError } from '../core/errors.js';
import { failure, REPLIES } from '../transaction/replies.js';

/** RFC 5321 §4.3.2, DATA: the 5yz replies a receiver may choose (554 is the generic one). */
const PERMANENT_CODES = new Set([550, 551, 552, 553, 554]);
/** 4yz after DATA; 421 is not offered: it would close the session. */
const TRANSIENT_CODES = new Set([450, 451, 452]);
const ENHANCED_RE = /^[245]\.(\d{1,3})\.(\d{1,3})$/;
const MAX_TEXT = 200;

/** One line of printable US-ASCII (RFC 5321 §4.2: reply text is textstring), at most 200 characters. */
export function sanitizeReplyText(text: unknown, fallback: string): string {
  if (typeof text !== 'string') return fallback;
  const clean = text
    .replace(/[\r\n\t]+/g, ' ')
    .replace(/[^\x20-\x7e]/g, '')
    .replace(/ {2,}/g, ' ')
    .trim();
  if (!clean) return fallback;
  return clean.length > MAX_TEXT ? `${clean.slice(0, MAX_TEXT - 3)}...` : clean;
}

function enhancedFor(cls: 4 | 5, value: unknown, fallback: string): string {
  if (typeof value !== 'string') return fallback;
  const m = ENHANCED_RE.exec(value.trim());
  // The receiver's subject and detail are kept; the class follows the reply.
  return m ? `${cls}.${m[1]}.${m[2]}` : fallback;
}

export type ReceiverAction = { action: 'accept' } | { action: 'refuse'; error: GatewayError } | { action: 'none' };

/**
 * Reads a receiver's JSON answer. `none` when the body is not a structured
 * answer (the HTTP status then decides); `accept` only for an explicit
 * `{"action":"accept"}`.
 */
export function interpretReceiverAnswer(body: unknown, targetId: string): ReceiverAction {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return { action: 'none' };
  const b = body as Record<string, unknown>;
  switch (b.action) {
    case 'accept':
      return { action: 'accept' };
    case 'reject': {
      const row = REPLIES.PG_TARGET_REJECTED;
      const code = typeof b.code === 'number' && PERMANENT_CODES.has(b.code) ? b.code : row.code;
      const enhanced = enhancedFor(5, b.enhanced, row.enhanced);
      const text = sanitizeReplyText(b.message, row.text);
      return {
        action: 'refuse',
        error: failure('PG_TARGET_REJECTED', { message: `target ${targetId} rejected the message: ${code} ${enhanced} ${text}`, chosen: { code, enhanced, text } }),
      };
    }
    case 'tempfail': {
      const row = REPLIES.PG_DELIVERY_TEMPFAIL;
      const code = typeof b.code === 'number' && TRANSIENT_CODES.has(b.code) ? b.code : row.code;
      const enhanced = enhancedFor(4, b.enhanced, row.enhanced);
      const text = sanitizeReplyText(b.message, row.text);
      return {
        action: 'refuse',
        error: failure('PG_DELIVERY_TEMPFAIL', {
          message: `target ${targetId} asked to defer the message: ${code} ${enhanced} ${text}`,
          chosen: { code, enhanced, text },
          // The receiver asked to be left alone: the sender's queue retries later.
          retryable: false,
        }),
      };
    }
    default:
      return { action: 'none' };
  }
}
