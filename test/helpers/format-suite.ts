/**
 * One suite per Action Mailbox ingress: mail sent over SMTP through a real
 * gateway whose route posts it in a webhook format to a real Rails app
 * (test/helpers/action-mailbox.ts), whose mailbox must see the recipients
 * (a Bcc included), subject, text and attachment; the same message sent
 * again through a second gateway (a sender retrying after a lost 250 on
 * another instance) is stored once; a wrong credential defers (451) and is
 * never logged.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { actionMailboxUnavailable, startMailboxApp, type Ingress, type MailboxApp } from './action-mailbox.js';
import { startGateway, type TestGateway } from './gateway.js';
import { RawSmtp, sendMail } from './smtp-client.js';
import { testMail } from './mailbox-mail.js';

export interface IngressCase {
  ingress: Ingress;
  format: string;
  /** The app's credentials (RAILS_INBOUND_EMAIL_PASSWORD …). */
  env: Record<string, string>;
  /** The webhook target for the app, with the right or a wrong credential. */
  target(app: MailboxApp, right: boolean): Record<string, unknown>;
  /** Strings that must never appear in a log line (the credentials). */
  secrets: string[];
}

export async function send(port: number, to: string[], source: string): Promise<{ code: number; raw: string }> {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    await c.cmd('EHLO client.example');
    const { data } = await sendMail(c, 'ann@sender.example', to, source);
    if (!data) throw new Error('every recipient was refused');
    return data;
  } finally {
    c.close();
  }
}

const gatewayFor = (target: Record<string, unknown>) =>
  startGateway({ routes: [{ recipients: ['*@app.test'], targets: [{ ...target, type: 'webhook' }] }], delivery: { deadline: '20s' } });

export function actionMailboxSuite(c: IngressCase): void {
  // Skipped where Ruby and Rails are missing, except in CI (.ci/run installs them), where a missing package must fail.
  const skip = process.env.CI ? false : (actionMailboxUnavailable() ?? false);
  describe(`format ${c.format} → Action Mailbox ${c.ingress} ingress`, { skip }, () => {
    let app: MailboxApp;
    let gw: TestGateway;
    const gateways: TestGateway[] = [];
    before(async () => {
      app = await startMailboxApp(c.ingress, c.env);
      gw = await gatewayFor(c.target(app, true));
      gateways.push(gw);
    });
    after(async () => {
      await Promise.all(gateways.map((g) => g.close()));
      await app?.close();
    });

    const seen = async (messageId: string) => (await app.processed()).filter((p) => p.message_id === messageId);

    test('processed by the mailbox: recipients with a Bcc, subject, text, attachment', async (t) => {
      t.diagnostic(`the Rails app answered ${app.bootMs} ms after it was started`);
      const mail = testMail({ cc: 'Team <team@app.test>' });
      const reply = await send(gw.port, ['support@app.test', 'team@app.test', 'hidden@app.test'], mail.source);
      assert.equal(reply.code, 250, `${reply.raw}\n${gw.logText()}\n${app.output().slice(-3000)}`);
      // The ingress answered 2xx only after the inline mailbox ran.
      const [p, more] = await seen(mail.messageId);
      assert.ok(p, `not processed:\n${app.output().slice(-3000)}`);
      assert.equal(more, undefined);
      assert.deepEqual([...new Set(p.recipients)].sort(), ['hidden@app.test', 'support@app.test', 'team@app.test']);
      assert.equal(p.subject, mail.subject);
      assert.equal(p.text?.replace(/\r\n/g, '\n').trimEnd(), mail.text.trimEnd());
      assert.deepEqual(p.attachments, [{ filename: mail.attachment.filename, size: mail.attachment.bytes.length }]);
    });

    test('a Bcc-only recipient (named in no header) still routes to the mailbox', async () => {
      const mail = testMail({ to: 'Someone <someone@elsewhere.example>' });
      const reply = await send(gw.port, ['hidden@app.test'], mail.source);
      assert.equal(reply.code, 250, reply.raw);
      const [p] = await seen(mail.messageId);
      assert.ok(p, `the mailbox did not route the Bcc:\n${app.output().slice(-3000)}`);
      assert.ok(p.recipients.includes('hidden@app.test'), JSON.stringify(p));
    });

    test('sent again through another instance (a sender retry after a lost 250): stored once', async () => {
      const mail = testMail();
      const first = await send(gw.port, ['support@app.test'], mail.source);
      assert.equal(first.code, 250, first.raw);
      const before = (await seen(mail.messageId))[0]!.inbound_emails;
      // A fresh gateway has a fresh skip-store: it posts again, as a second edge instance would.
      const other = await gatewayFor(c.target(app, true));
      gateways.push(other);
      const again = await send(other.port, ['support@app.test'], mail.source);
      assert.equal(again.code, 250, again.raw);
      // Nothing new was processed, and the app holds no second InboundEmail for it.
      assert.equal((await seen(mail.messageId)).length, 1);
      const probe = testMail();
      assert.equal((await send(gw.port, ['support@app.test'], probe.source)).code, 250);
      assert.equal((await seen(probe.messageId))[0]!.inbound_emails, before + 1, 'the redelivery created an InboundEmail');
    });

    test('a wrong credential is refused by the app: the sender gets 451 4.3.5, nothing is processed, no secret is logged', async () => {
      const wrong = await gatewayFor(c.target(app, false));
      gateways.push(wrong);
      const mail = testMail();
      const reply = await send(wrong.port, ['support@app.test'], mail.source);
      assert.equal(reply.code, 451, reply.raw);
      assert.match(reply.raw, /4\.3\.5/);
      assert.deepEqual(await seen(mail.messageId), []);
      assert.match(wrong.logText(), /answered 401/);
      for (const g of gateways) for (const s of c.secrets) assert.ok(!g.logText().includes(s), `a log line holds the secret ${s}`);
    });
  });
}
