/**
 * Large text and HTML bodies leave the event for the blob store (claim check,
 * docs/payload.md "Large bodies"), so a 5 MB newsletter does not turn every webhook call into a
 * 5 MB POST (or a pointer event the receiver must fetch first). The body is
 * stored as UTF-8; `text`/`html` become null and `textBlob`/`htmlBlob` carry
 * the link, size and SHA-256 of exactly the stored bytes.
 */
import { Readable } from 'node:stream';
import type { BlobSink } from './parse.js';
import type { BlobRef, ParsedContent } from './schema.js';

export interface OffloadedBodies {
  content: ParsedContent;
  bodies: { text: BlobRef | null; html: BlobRef | null };
}

/**
 * Moves each body larger than `limit` bytes (UTF-8) to `sink`. Without a sink
 * the content is returned unchanged. A failed store rejects: the event would
 * otherwise silently lose its body, so the caller defers the message.
 */
export async function offloadBodies(content: ParsedContent, sink: BlobSink | null, limit: number): Promise<OffloadedBodies> {
  const bodies: OffloadedBodies['bodies'] = { text: null, html: null };
  if (!sink) return { content, bodies };
  const store = async (kind: 'text' | 'html', value: string | null): Promise<BlobRef | null> => {
    // Cheap bound first: a UTF-16 string of n units is at most 3n UTF-8 bytes.
    if (value === null || value.length * 3 <= limit) return null;
    const bytes = Buffer.from(value, 'utf8');
    if (bytes.length <= limit) return null;
    const stored = await sink.put(kind, { filename: null, contentType: `text/${kind === 'text' ? 'plain' : 'html'}; charset=utf-8` }, Readable.from([bytes]));
    return {
      url: stored.url,
      expiresAt: stored.expiresAt,
      size: stored.size ?? bytes.length,
      sha256: stored.sha256 ?? '',
    };
  };
  const [text, html] = await Promise.all([store('text', content.text), store('html', content.html)]);
  if (!text && !html) return { content, bodies };
  bodies.text = text;
  bodies.html = html;
  const fits = (s: string | null) => (s !== null && Buffer.byteLength(s, 'utf8') > limit ? null : s);
  return {
    content: {
      ...content,
      ...(text ? { text: null, strippedText: fits(content.strippedText) } : {}),
      // strippedHtml is html itself when nothing was stripped: it goes with it
      ...(html ? { html: null, strippedHtml: content.strippedHtml === content.html ? null : fits(content.strippedHtml) } : {}),
    },
    bodies,
  };
}
