/**
 * Format rfc822 against Action Mailbox's relay ingress (a real Rails app):
 * see test/helpers/format-suite.ts for what each test checks.
 */
import { actionMailboxSuite } from './helpers/format-suite.js';

actionMailboxSuite({
  ingress: 'relay',
  format: 'rfc822',
  env: { RAILS_INBOUND_EMAIL_PASSWORD: 'relay-pass-4c1f' },
  target: (app, right) => ({
    format: 'rfc822',
    url: `http://actionmailbox:${right ? 'relay-pass-4c1f' : 'wrong-pass-77aa'}@${app.origin.slice(7)}${app.path}`,
  }),
  secrets: ['relay-pass-4c1f', 'wrong-pass-77aa', Buffer.from('actionmailbox:relay-pass-4c1f').toString('base64')],
});
