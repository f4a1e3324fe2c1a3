/**
 * Format mailgun-mime against Action Mailbox's Mailgun ingress (a real
 * Rails app; it checks the HMAC-SHA256 signature and that the timestamp is
 * within two minutes): see test/helpers/format-suite.ts for what each test
 * checks.
 */
import { actionMailboxSuite } from './helpers/format-suite.js';

actionMailboxSuite({
  ingress: 'mailgun',
  format: 'mailgun-mime',
  env: { MAILGUN_INGRESS_SIGNING_KEY: 'key-mailgun-signing-6a2f' },
  target: (app, right) => ({ format: 'mailgun-mime', url: `${app.origin}${app.path}`, signingKey: right ? 'key-mailgun-signing-6a2f' : 'key-wrong-signing-1d4c' }),
  secrets: ['key-mailgun-signing-6a2f', 'key-wrong-signing-1d4c'],
});
