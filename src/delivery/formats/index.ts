/**
 * The webhook formats by name (docs/formats.md). `postgate` (the
 * `email.received` event with Standard Webhooks headers) is the webhook
 * target's own and is not listed here.
 */
import { mailgun, mailgunMime } from './mailgun.js';
import { mandrill } from './mandrill.js';
import { postmark } from './postmark.js';
import { rfc822 } from './rfc822.js';
import { sendgrid, sendgridRaw } from './sendgrid.js';
import type { WebhookFormat } from './types.js';

export const FORMATS = {
  rfc822,
  sendgrid,
  'sendgrid-raw': sendgridRaw,
  mailgun,
  'mailgun-mime': mailgunMime,
  postmark,
  mandrill,
} as const satisfies Record<string, WebhookFormat>;

export type FormatName = keyof typeof FORMATS;
export { NotInline, type FormatInput, type FormattedRequest, type WebhookFormat } from './types.js';
export { withoutOwnReceived } from './message.js';
