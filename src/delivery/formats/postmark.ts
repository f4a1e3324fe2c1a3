/**
 * `postmark`: Postmark's inbound webhook JSON (docs/formats.md), posted with
 * `Content-Type: application/json` and basic auth from the URL. `RawEmail`
 * is always included (Action Mailbox's Postmark ingress reads only that
 * field), with one `X-Original-To` per envelope recipient in front so a
 * Bcc recipient routes. Postmark treats a `403` answer as "stop retrying
 * this message": a permanent refusal here too. Leaf module.
 */
import { attachmentBytes, bodies, fileName, header, listText, mailboxes, receivedHeaders, withOriginalTo } from './message.js';
import type { WebhookFormat } from './types.js';

const full = (list: ReturnType<typeof mailboxes>, hashOf: (a: string) => string) =>
  list.map((m) => ({ Email: m.address, Name: m.name ?? '', MailboxHash: hashOf(m.address) }));

export const postmark: WebhookFormat = {
  // Postmark takes inbound messages up to 35 MB, the JSON included.
  maxBytes: 35 * 1024 * 1024,
  permanentOn: [403],
  parsed: true,
  keyed: false,
  build: ({ event, raw, rcptTo }) => {
    const d = event.data;
    const { text, html } = bodies(d, 'postmark');
    const hashes = new Map(d.envelope.rcptTo.map((r) => [r.address.toLowerCase(), r.mailboxHash ?? '']));
    const hashOf = (a: string) => hashes.get(a.toLowerCase()) ?? '';
    const from = mailboxes(d.from)[0];
    const bcc = mailboxes(d.bcc);
    const body = {
      FromName: from?.name ?? '',
      MessageStream: 'inbound',
      From: from?.address ?? '',
      FromFull: from ? { Email: from.address, Name: from.name ?? '', MailboxHash: '' } : null,
      To: listText(d.to),
      ToFull: full(mailboxes(d.to), hashOf),
      Cc: listText(d.cc),
      CcFull: full(mailboxes(d.cc), hashOf),
      Bcc: listText(d.bcc),
      BccFull: full(bcc, hashOf),
      OriginalRecipient: rcptTo[0] ?? '',
      Subject: d.subject ?? '',
      MessageID: d.messageId ?? '',
      ReplyTo: listText(d.replyTo),
      MailboxHash: d.envelope.rcptTo[0]?.mailboxHash ?? '',
      Date: header(d, 'Date'),
      TextBody: text,
      HtmlBody: html,
      StrippedTextReply: d.strippedText ?? '',
      Tag: '',
      Headers: receivedHeaders(d).map((h) => ({ Name: h.name, Value: h.value })),
      Attachments: d.attachments.map((a, i) => ({
        Name: fileName(a, i),
        Content: attachmentBytes(a, 'postmark').toString('base64'),
        ContentType: a.contentType,
        ContentLength: a.size,
        ContentID: a.contentId ? `${a.contentId}` : '',
      })),
      RawEmail: withOriginalTo(raw, rcptTo).toString('utf8'),
    };
    return { body: Buffer.from(JSON.stringify(body)), contentType: 'application/json' };
  },
};
