/**
 * The response headers of the console's pages and of the HTML body's frame
 * (docs/console.md, "The web console"; docs/security.md for the console's
 * place among the gateway's defences).
 *
 * Leaf module: no imports.
 */

/**
 * The console's own pages: scripts and styles only from the console itself,
 * no inline script, no plugins, no framing by other sites (clickjacking on
 * the action buttons), frames only from the console (the HTML body's frame).
 */
export const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-src 'self'",
  "form-action 'self'",
  "base-uri 'none'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * The HTML body's own document. `sandbox` (no allow-scripts, no
 * allow-same-origin) applies even when the document is opened outside its
 * frame; nothing loads from anywhere (no tracking pixel fires, no remote
 * font, no form posts), only inline styles and data: images. The console
 * itself may frame it (`frame-ancestors 'self'`), nobody else.
 */
export const BODY_CSP = [
  'sandbox',
  "default-src 'none'",
  "style-src 'unsafe-inline'",
  'img-src data:',
  'font-src data:',
  "form-action 'none'",
  "base-uri 'none'",
  "frame-ancestors 'self'",
].join('; ');

/** Headers every console response carries. */
export const COMMON_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

/**
 * The console's pages send no referrer to any other site. To the console
 * itself they do (`same-origin`, not `no-referrer`): under `no-referrer` a
 * browser sends `Origin: null` with a form's POST, and the server's CSRF
 * check, which wants the console's own origin, would refuse every button
 * pressed without JavaScript (docs/console.md, "The web console").
 */
export const PAGE_REFERRER_POLICY = 'same-origin';

export function pageHeaders(contentType = 'text/html; charset=utf-8'): Record<string, string> {
  return {
    ...COMMON_HEADERS,
    'content-type': contentType,
    'content-security-policy': PAGE_CSP,
    'referrer-policy': PAGE_REFERRER_POLICY,
    'x-frame-options': 'DENY',
    'cache-control': 'no-store',
  };
}

/** The HTML body's document sends no referrer at all, wherever a link in it leads. */
export function bodyHeaders(): Record<string, string> {
  return { ...COMMON_HEADERS, 'content-type': 'text/html; charset=utf-8', 'content-security-policy': BODY_CSP, 'referrer-policy': 'no-referrer', 'cache-control': 'no-store' };
}
