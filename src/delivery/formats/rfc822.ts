/**
 * `rfc822`: the raw message, `Content-Type: message/rfc822` — Action
 * Mailbox's relay ingress and Laravel Mailbox's raw driver (docs/formats.md).
 * One `X-Original-To` per envelope recipient goes in front, so a Bcc
 * recipient routes; the bytes are equal on every retry. Leaf module.
 */
import { withOriginalTo } from './message.js';
import type { WebhookFormat } from './types.js';

export const rfc822: WebhookFormat = {
  // A relay ingress reads the request body whole; 64 MiB bounds what one request may hold in memory here and there.
  maxBytes: 64 * 1024 * 1024,
  permanentOn: [],
  parsed: false,
  keyed: false,
  build: ({ raw, rcptTo }) => ({ body: withOriginalTo(raw, rcptTo), contentType: 'message/rfc822' }),
};
