/**
 * Machine mail (docs/payload.md `classification`): whether a message is an
 * automatic reply, bulk or list mail, or a bounce, from its header fields and,
 * for a bounce, its delivery status notification (RFC 3464).
 *
 * Cheap on ordinary mail: a handful of header lookups; the report is read only
 * when the message carries a `message/delivery-status` part.
 */
import { parseHeaderBlock, type HeaderField } from './headers.js';
import type { Attachment, Bounce, BouncedRecipient, Classification } from './schema.js';

/** How much of a report or returned message is read (the fields come first; real reports are a few KB). */
const REPORT_READ_MAX = 64 * 1024;
/** Most recipients listed for one bounce (a report lists one block per recipient). */
const MAX_RECIPIENTS = 100;

const REPORT_TYPES = new Set(['message/delivery-status', 'message/global-delivery-status']); // RFC 3464 §2.1, RFC 6533 §6
const RETURNED_TYPES = new Set(['message/rfc822', 'text/rfc822-headers', 'message/global', 'message/global-headers']); // RFC 3462 / 6522 §3, RFC 6533

export function classify(headers: readonly HeaderField[], attachments: readonly Attachment[]): Classification {
  let autoReply = false;
  let bulk = false;
  for (const h of headers) {
    switch (h.name.toLowerCase()) {
      case 'auto-submitted': {
        // RFC 3834 §5: any value but "no" (auto-generated, auto-replied, auto-notified of RFC 5436) is machine-sent
        const v = h.value.split(';')[0]!.trim().toLowerCase();
        if (v && v !== 'no') autoReply = true;
        break;
      }
      case 'precedence': {
        // not standardised (RFC 3834 §3.1.8 describes its use): bulk, list and junk mark mass mail
        const v = h.value.trim().toLowerCase();
        if (v === 'auto_reply') autoReply = true;
        else if (v === 'bulk' || v === 'list' || v === 'junk') bulk = true;
        break;
      }
      case 'x-autoreply':
      case 'x-autorespond':
        // vendor headers of vacation responders (no standard; present means automatic)
        if (h.value.trim().toLowerCase() !== 'no') autoReply = true;
        break;
      case 'list-id': // RFC 2919
      case 'list-unsubscribe': // RFC 2369, RFC 8058
        bulk = true;
        break;
    }
  }
  let bounce: Bounce | null = null;
  const report = attachments.find((a) => REPORT_TYPES.has(a.contentType));
  if (report) {
    const read = readReport(report);
    const returned = attachments.find((a) => RETURNED_TYPES.has(a.contentType));
    const originalMessageId = returned ? returnedMessageId(returned) : null;
    if (read === null) {
      // the report went to the blob store or was not kept: a report it is, its recipients unknown
      bounce = { recipients: [], reportingMta: null, originalMessageId };
    } else {
      const failed = read.recipients.filter((r) => r.action === 'failed');
      if (failed.length) bounce = { recipients: failed.slice(0, MAX_RECIPIENTS), reportingMta: read.reportingMta, originalMessageId };
      // a report of delays or successes only is an automatic notification, not a bounce
      else autoReply = true;
    }
  }
  // A bounce is classified as one thing: a bounce, whatever Auto-Submitted says.
  if (bounce) autoReply = false;
  return { autoReply, bulk, bounce };
}

function content(a: Attachment): string | null {
  if (a.content === undefined) return null;
  const b64 = a.content.length > (REPORT_READ_MAX * 4) / 3 + 4 ? a.content.slice(0, Math.ceil((REPORT_READ_MAX * 4) / 3 / 4) * 4) : a.content;
  return Buffer.from(b64, 'base64').toString('utf8');
}

/** `type; value` (RFC 3464 §2.3: address-type, diagnostic-type, mta-name-type) → value; the whole text without a `;`. */
function typed(v: string | undefined): string | null {
  if (v === undefined) return null;
  const semi = v.indexOf(';');
  const s = (semi === -1 ? v : v.slice(semi + 1)).trim();
  return s || null;
}

/** The fields of a DSN (RFC 3464 §2.1): a per-message block, then one block per recipient, separated by blank lines. */
function readReport(a: Attachment): { reportingMta: string | null; recipients: BouncedRecipient[] } | null {
  const text = content(a);
  if (text === null) return null;
  const blocks = text.replace(/\r\n?/g, '\n').split(/\n[ \t]*\n/);
  const fields = (block: string): Map<string, string> => {
    const map = new Map<string, string>();
    for (const f of parseHeaderBlock(Buffer.from(`${block}\n\n`, 'utf8'))) {
      const k = f.name.toLowerCase();
      if (!map.has(k)) map.set(k, f.value.replace(/\s+/g, ' '));
    }
    return map;
  };
  let reportingMta: string | null = null;
  const recipients: BouncedRecipient[] = [];
  blocks.forEach((block, i) => {
    if (!block.trim()) return;
    const f = fields(block);
    if (i === 0 && !f.has('final-recipient')) {
      reportingMta = typed(f.get('reporting-mta'));
      return;
    }
    const address = typed(f.get('final-recipient'));
    if (!address || recipients.length >= MAX_RECIPIENTS * 2) return;
    // Status is "class.subject.detail" (RFC 3463 §2), sometimes followed by a comment
    const status = /\b[245]\.\d{1,3}\.\d{1,3}\b/.exec(f.get('status') ?? '')?.[0] ?? null;
    recipients.push({
      address: address.replace(/^<(.*)>$/, '$1'),
      originalRecipient: typed(f.get('original-recipient')),
      action: (f.get('action') ?? '').trim().toLowerCase() || null,
      status,
      diagnostic: typed(f.get('diagnostic-code')),
      remoteMta: typed(f.get('remote-mta')),
    });
  });
  return { reportingMta, recipients };
}

/** The Message-ID of the returned message or its headers (RFC 3464 §2, RFC 6522 §3), without angle brackets. */
function returnedMessageId(a: Attachment): string | null {
  const text = content(a);
  if (text === null) return null;
  for (const f of parseHeaderBlock(Buffer.from(text, 'utf8'))) {
    if (f.name.toLowerCase() !== 'message-id') continue;
    const m = /<([^<>\s]+)>/.exec(f.value);
    return m ? m[1]! : f.value.trim() || null;
  }
  return null;
}
