/**
 * `mailgun` and `mailgun-mime`: multipart/form-data as a Mailgun route's
 * `forward()` posts it (docs/formats.md), parsed or with the message as
 * `body-mime`. Always signed the way Mailgun signs: `timestamp` (Unix
 * seconds), `token` (50 random hex digits) and `signature`, the hex
 * HMAC-SHA256 of timestamp + token under the signing key, computed at send
 * time (Action Mailbox refuses a timestamp older than two minutes). A `406`
 * answer is a permanent refusal, as Mailgun treats it. Leaf module.
 */
import { createHmac } from 'node:crypto';
import { attachmentBytes, bodies, fileName, listText, receivedHeaders, withOriginalTo } from './message.js';
import { formData, type FormPart } from './multipart.js';
import type { FormatInput, WebhookFormat } from './types.js';

// Mailgun accepts messages up to 25 MB.
const MAX = 25 * 1024 * 1024;

export function mailgunSignature(key: string, timestamp: string, token: string): string {
  return createHmac('sha256', key).update(timestamp + token).digest('hex');
}

function signed(input: FormatInput): FormPart[] {
  const timestamp = String(Math.floor(input.now / 1000));
  const token = input.random(25).toString('hex');
  return [
    { name: 'timestamp', value: timestamp },
    { name: 'token', value: token },
    { name: 'signature', value: mailgunSignature(input.key ?? '', timestamp, token) },
  ];
}

function envelopeFields(input: FormatInput, recipient: string): FormPart[] {
  const d = input.event.data;
  return [
    { name: 'recipient', value: recipient },
    { name: 'sender', value: d.envelope.mailFrom },
    { name: 'from', value: listText(d.from) },
    { name: 'subject', value: d.subject ?? '' },
  ];
}

export const mailgun: WebhookFormat = {
  maxBytes: MAX,
  permanentOn: [406],
  parsed: true,
  keyed: true,
  build: (input) => {
    const d = input.event.data;
    const { text, html } = bodies(d, 'mailgun');
    const cids: Record<string, string> = {};
    const files: FormPart[] = d.attachments.map((a, i) => {
      if (a.contentId) cids[`<${a.contentId}>`] = `attachment-${i + 1}`;
      return { name: `attachment-${i + 1}`, file: attachmentBytes(a, 'mailgun'), filename: fileName(a, i), contentType: a.contentType };
    });
    // Mailgun names the one recipient a route matched; postgate posts once per
    // target, so every envelope recipient of the target, comma-separated: the
    // parsed format has no other place to name a Bcc recipient.
    return formData([
      ...envelopeFields(input, input.rcptTo.join(', ')),
      { name: 'body-plain', value: text },
      { name: 'body-html', value: html },
      { name: 'stripped-text', value: d.strippedText ?? '' },
      // Empty when no signature was recognised, as Mailgun sends it.
      { name: 'stripped-signature', value: d.strippedSignature ?? '' },
      { name: 'stripped-html', value: d.strippedHtml ?? html },
      { name: 'message-headers', value: JSON.stringify(receivedHeaders(d).map((h) => [h.name, h.value])) },
      { name: 'attachment-count', value: String(d.attachments.length) },
      { name: 'content-id-map', value: JSON.stringify(cids) },
      ...files,
      ...signed(input),
    ]);
  },
};

export const mailgunMime: WebhookFormat = {
  maxBytes: MAX,
  permanentOn: [406],
  parsed: false,
  keyed: true,
  // `recipient` is the first envelope recipient (Action Mailbox writes it into
  // one X-Original-To, which must hold one address); every recipient gets its
  // own X-Original-To in body-mime, so a Bcc routes.
  build: (input) =>
    formData([
      ...envelopeFields(input, input.rcptTo[0] ?? ''),
      { name: 'body-mime', value: withOriginalTo(input.raw, input.rcptTo).toString('utf8') },
      ...signed(input),
    ]),
};
