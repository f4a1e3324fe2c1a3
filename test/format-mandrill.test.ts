/**
 * Format mandrill against Action Mailbox's Mandrill ingress (a real Rails
 * app; X-Mandrill-Signature covers the URL exactly as the app sees it):
 * see test/helpers/format-suite.ts for what each test checks.
 */
import { actionMailboxSuite } from './helpers/format-suite.js';

actionMailboxSuite({
  ingress: 'mandrill',
  format: 'mandrill',
  env: { MANDRILL_INGRESS_API_KEY: 'mandrill-webhook-key-8e1a' },
  target: (app, right) => ({ format: 'mandrill', url: `${app.origin}${app.path}`, signingKey: right ? 'mandrill-webhook-key-8e1a' : 'mandrill-wrong-key-2b6c' }),
  secrets: ['mandrill-webhook-key-8e1a', 'mandrill-wrong-key-2b6c'],
});
