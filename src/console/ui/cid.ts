/**
 * Inline images of an HTML body (RFC 2392 `cid:` URLs, RFC 2387
 * multipart/related) for the console's sandboxed body document, whose CSP
 * loads images from `data:` only (headers.ts): each `cid:` reference in an
 * image's `src`, a `background` attribute or a CSS `url()` becomes a `data:`
 * URL of the part it names, when that part is a raster image whose bytes the
 * event carries. Anything else stays as it was, and loads nothing.
 *
 * Leaf module: no imports.
 */

/** An inline part the event carries: its Content-ID (no angle brackets), type and base64 content. */
export interface InlineImage {
  contentId: string;
  contentType: string;
  base64: string;
}

/**
 * Raster types only: an SVG can carry script, and although neither an `<img>`
 * nor the sandbox would run it, there is no reason to hand one over.
 */
export const INLINE_IMAGE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

const ATTRIBUTE = /(\s(?:src|background)\s*=\s*)(["']?)cid:([^"'\s>]+)\2/gi;
const CSS_URL = /url\(\s*(["']?)cid:([^"')\s]+)\1\s*\)/gi;

export function withInlineImages(html: string, images: readonly InlineImage[]): string {
  if (images.length === 0 || !/cid:/i.test(html)) return html;
  const byId = new Map<string, string>();
  for (const i of images) {
    if (!INLINE_IMAGE_TYPES.has(i.contentType.toLowerCase())) continue;
    byId.set(i.contentId, `data:${i.contentType.toLowerCase()};base64,${i.base64}`);
  }
  // RFC 2392 §2: the cid URL is the Content-ID, URL-encoded.
  const find = (ref: string): string | undefined => {
    let id = ref;
    try {
      id = decodeURIComponent(ref);
    } catch {
      // kept as written
    }
    return byId.get(id) ?? byId.get(ref);
  };
  return html
    .replace(ATTRIBUTE, (all, before: string, quote: string, ref: string) => {
      const url = find(ref);
      return url ? `${before}"${url}"` : all;
    })
    .replace(CSS_URL, (all, _quote: string, ref: string) => {
      const url = find(ref);
      return url ? `url("${url}")` : all;
    });
}
