/**
 * Format sendgrid-raw against Action Mailbox's SendGrid ingress (a real
 * Rails app; `email` must be a plain form field, not a file part): see
 * test/helpers/format-suite.ts for what each test checks.
 */
import { actionMailboxSuite } from './helpers/format-suite.js';

actionMailboxSuite({
  ingress: 'sendgrid',
  format: 'sendgrid-raw',
  env: { RAILS_INBOUND_EMAIL_PASSWORD: 'sendgrid-pass-0b7e' },
  target: (app, right) => ({
    format: 'sendgrid-raw',
    url: `http://actionmailbox:${right ? 'sendgrid-pass-0b7e' : 'wrong-pass-3c9d'}@${app.origin.slice(7)}${app.path}`,
  }),
  secrets: ['sendgrid-pass-0b7e', 'wrong-pass-3c9d', Buffer.from('actionmailbox:sendgrid-pass-0b7e').toString('base64')],
});
