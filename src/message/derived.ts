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
 * has one, and then pays only for the quote scan of the HTML, which returns
 * at once when no quote marker occurs in it.
 */
export function bodyFields(text: string | null, html: string | null): BodyFields {
  const strippedHtml = html === null ? null : stripHtmlQuote(html);
  if (text !== null) {
    const { reply, signature } = splitReply(text);
    return { text, textSource: 'text', html, strippedText: reply, strippedSignature: signature, strippedHtml };
  }
  if (html === null) return { text: null, textSource: null, html: null, strippedText: null, strippedSignature: null, strippedHtml: null };
  const derived = htmlToText(html);
  // The quote markers are in the markup: the reply is the text of the HTML without its quote.
  const replyText = strippedHtml === html ? derived : htmlToText(strippedHtml!);
  const { reply, signature } = splitReply(replyText);
  return { text: derived, textSource: 'html', html, strippedText: reply, strippedSignature: signature, strippedHtml };
}
