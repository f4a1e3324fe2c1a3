/**
 * The event fields derived from the bodies (docs/payload.md): `text` for a
 * message without a text part, `textSource`, and the reply without its quoted
 * history and signature (`strippedText`, `strippedSignature`, `strippedHtml`).
 * Both parse paths (fast and streaming, message/parse.ts) take these fields
 * from here, so they agree by construction.
 */
import { htmlToText, stripHtmlQuote } from './html.js';
import { splitReply } from './reply.js';
import type { ParsedContent } from './schema.js';

export type BodyFields = Pick<ParsedContent, 'text' | 'textSource' | 'html' | 'strippedText' | 'strippedSignature' | 'strippedHtml'>;

/**
 * `text` and `html` as the MIME parse found them (null: no such part).
 * The HTML is converted to text only when there is no text part: most mail
 * has one. Then the HTML is searched for quoted history only when the text
 * has some: the two are renditions of the same content (RFC 2046 §5.1.4,
 * multipart/alternative), and the scan of the markup costs about as much as
 * the rest of the derived fields together.
 */
export function bodyFields(text: string | null, html: string | null): BodyFields {
  if (text !== null) {
    const { reply, signature, quoted } = splitReply(text);
    const strippedHtml = html === null ? null : quoted ? stripHtmlQuote(html) : html;
    return { text, textSource: 'text', html, strippedText: reply, strippedSignature: signature, strippedHtml };
  }
  if (html === null) return { text: null, textSource: null, html: null, strippedText: null, strippedSignature: null, strippedHtml: null };
  const strippedHtml = stripHtmlQuote(html);
  const derived = htmlToText(html);
  // The quote markers are in the markup: the reply is the text of the HTML without its quote.
  const replyText = strippedHtml === html ? derived : htmlToText(strippedHtml!);
  const { reply, signature } = splitReply(replyText);
  return { text: derived, textSource: 'html', html, strippedText: reply, strippedSignature: signature, strippedHtml };
}
