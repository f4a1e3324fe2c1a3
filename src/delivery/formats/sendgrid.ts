/**
 * `sendgrid` and `sendgrid-raw`: multipart/form-data as SendGrid Inbound
 * Parse posts it (docs/formats.md), parsed (bodies, attachments as files
 * `attachment1…N`) or raw (the message as the plain field `email`: Action
 * Mailbox's SendGrid ingress answers 500 when it is a file part). Basic auth
 * comes from the URL, as SendGrid sends it. Leaf module.
 */
import type { InboundEmail } from '../../message/schema.js';
import { attachmentBytes, bodies, fileName, listText } from './message.js';
import { formData, type FormPart } from './multipart.js';
import type { FormatInput, WebhookFormat } from './types.js';

// SendGrid Inbound Parse takes messages up to 30 MB, the whole post included.
const MAX = 30 * 1024 * 1024;

/** The fields both modes post: envelope, charsets and the sender checks. */
function common(d: InboundEmail, rcptTo: readonly string[]): FormPart[] {
  const parts: FormPart[] = [
    { name: 'from', value: listText(d.from) },
    { name: 'to', value: listText(d.to) },
    { name: 'subject', value: d.subject ?? '' },
    { name: 'envelope', value: JSON.stringify({ to: rcptTo, from: d.envelope.mailFrom }) },
    // Every text field here is UTF-8 (the parser decoded the message's charsets).
    { name: 'charsets', value: JSON.stringify({ to: 'UTF-8', from: 'UTF-8', subject: 'UTF-8', cc: 'UTF-8', text: 'UTF-8', html: 'UTF-8' }) },
    { name: 'sender_ip', value: d.envelope.clientAddress },
  ];
  if (d.cc) parts.push({ name: 'cc', value: listText(d.cc) });
  if (d.auth) {
    // SendGrid's own shapes: `{@domain : pass}` per DKIM signature, and the SPF result word.
    parts.push({ name: 'dkim', value: `{${d.auth.dkim.map((s) => `@${s.domain} : ${s.result}`).join(', ')}}` });
    parts.push({ name: 'SPF', value: d.auth.spf.mailFrom.result });
  }
  if (d.spam) {
    // When a scanner ran (docs/scanning.md): its score, and a report line in place of SpamAssassin's report.
    parts.push({ name: 'spam_score', value: String(d.spam.score) });
    parts.push({ name: 'spam_report', value: `${d.spam.scanner}: score ${d.spam.score}, required ${d.spam.threshold}; ${d.spam.symbols.join(', ') || 'no rules matched'}` });
  }
  return parts;
}

function headerBlock(d: InboundEmail): string {
  return d.headers.map((h) => `${h.name}: ${h.value}\n`).join('');
}

export const sendgrid: WebhookFormat = {
  maxBytes: MAX,
  permanentOn: [],
  parsed: true,
  keyed: false,
  build: ({ event, rcptTo }: FormatInput) => {
    const d = event.data;
    const { text, html } = bodies(d, 'sendgrid');
    const parts = [...common(d, rcptTo), { name: 'headers', value: headerBlock(d) }];
    // SendGrid sends `text` only for a text part: none when postgate derived it from the HTML.
    if (d.text !== null && d.textSource === 'text') parts.push({ name: 'text', value: text });
    if (d.html !== null) parts.push({ name: 'html', value: html });
    const info: Record<string, { filename: string; name: string; type: string; 'content-id'?: string }> = {};
    const cids: Record<string, string> = {};
    d.attachments.forEach((a, i) => {
      const key = `attachment${i + 1}`;
      const name = fileName(a, i);
      info[key] = { filename: name, name, type: a.contentType, ...(a.contentId ? { 'content-id': a.contentId } : {}) };
      if (a.contentId) cids[a.contentId] = key;
      parts.push({ name: key, file: attachmentBytes(a, 'sendgrid'), filename: name, contentType: a.contentType });
    });
    parts.push({ name: 'attachments', value: String(d.attachments.length) });
    if (d.attachments.length) {
      parts.push({ name: 'attachment-info', value: JSON.stringify(info) });
      parts.push({ name: 'content-ids', value: JSON.stringify(cids) });
    }
    return formData(parts);
  },
};

export const sendgridRaw: WebhookFormat = {
  maxBytes: MAX,
  permanentOn: [],
  parsed: false,
  keyed: false,
  // Action Mailbox's ingress prepends X-Original-To from `envelope.to`
  // itself, so the message goes as it is.
  build: ({ event, raw, rcptTo }: FormatInput) => formData([...common(event.data, rcptTo), { name: 'email', value: raw.toString('utf8') }]),
};
