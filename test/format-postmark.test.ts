/**
 * Format postmark against Action Mailbox's Postmark ingress (a real Rails
 * app; it reads RawEmail, and needs Content-Type: application/json): see
 * test/helpers/format-suite.ts for what each test checks.
 */
import { actionMailboxSuite } from './helpers/format-suite.js';

actionMailboxSuite({
  ingress: 'postmark',
  format: 'postmark',
  env: { RAILS_INBOUND_EMAIL_PASSWORD: 'postmark-pass-91d0' },
  target: (app, right) => ({
    format: 'postmark',
    url: `http://actionmailbox:${right ? 'postmark-pass-91d0' : 'wrong-pass-5e3b'}@${app.origin.slice(7)}${app.path}`,
  }),
  secrets: ['postmark-pass-91d0', 'wrong-pass-5e3b', Buffer.from('actionmailbox:postmark-pass-91d0').toString('base64')],
});
