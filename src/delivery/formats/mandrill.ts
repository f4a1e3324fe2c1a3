/**
 * `mandrill`: Mandrill's inbound webhook (docs/formats.md), a form post of
 * `mandrill_events`, a JSON array holding one `{event: "inbound", msg}`
 * whose `msg.raw_msg` is the message (with one `X-Original-To` per envelope
 * recipient in front, so a Bcc routes). `X-Mandrill-Signature` is computed
 * as Mandrill does: base64 HMAC-SHA1 under the webhook key of the URL
 * exactly as configured (the consumer checks it against the URL it sees),
 * followed by each POST field name and value in name order. Leaf module.
 */
import { createHmac } from 'node:crypto';
import { attachmentBytes, bodies, fileName, mailboxes, receivedHeaders, withOriginalTo } from './message.js';
import { urlEncoded } from './multipart.js';
import type { WebhookFormat } from './types.js';

export function mandrillSignature(key: string, url: string, fields: ReadonlyArray<readonly [string, string]>): string {
  const mac = createHmac('sha1', key).update(url);
  for (const [k, v] of [...fields].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) mac.update(k).update(v);
  return mac.digest('base64');
}

export const mandrill: WebhookFormat = {
  // Mandrill takes inbound messages up to 25 MB.
  maxBytes: 25 * 1024 * 1024,
  permanentOn: [],
  parsed: true,
  keyed: true,
  build: ({ event, raw, rcptTo, url, key, now }) => {
    const d = event.data;
    const { text, html } = bodies(d, 'mandrill');
    const from = mailboxes(d.from)[0];
    const files: Record<string, { name: string; type: string; content: string; base64: true }> = {};
    const images: Record<string, { name: string; type: string; content: string }> = {};
    d.attachments.forEach((a, i) => {
      const name = fileName(a, i);
      const content = attachmentBytes(a, 'mandrill').toString('base64');
      if (a.related && a.contentId) images[a.contentId] = { name: a.contentId, type: a.contentType, content };
      else files[name] = { name, type: a.contentType, content, base64: true };
    });
    const headers: Record<string, string | string[]> = {};
    for (const h of receivedHeaders(d)) {
      const had = headers[h.name];
      headers[h.name] = had === undefined ? h.value : Array.isArray(had) ? [...had, h.value] : [had, h.value];
    }
    const msg = {
      raw_msg: withOriginalTo(raw, rcptTo).toString('utf8'),
      headers,
      text,
      html,
      from_email: from?.address ?? '',
      from_name: from?.name ?? '',
      to: mailboxes(d.to).map((m) => [m.address, m.name]),
      cc: mailboxes(d.cc).map((m) => [m.address, m.name]),
      email: rcptTo[0] ?? '',
      subject: d.subject ?? '',
      tags: [],
      sender: null,
      attachments: files,
      images,
      spam_report: null,
      ...(d.auth ? { spf: { result: d.auth.spf.mailFrom.result, detail: '' }, dkim: { signed: d.auth.dkim.length > 0, valid: d.auth.dkim.some((s) => s.result === 'pass') } } : {}),
    };
    const fields = [['mandrill_events', JSON.stringify([{ event: 'inbound', ts: Math.floor(now / 1000), msg }])] as const];
    const signedUrl = `${url.protocol}//${url.host}${url.pathname}${url.search}`;
    return {
      body: urlEncoded(fields),
      contentType: 'application/x-www-form-urlencoded',
      headers: { 'x-mandrill-signature': mandrillSignature(key ?? '', signedUrl, fields) },
    };
  },
};
