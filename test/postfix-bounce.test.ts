/**
 * A bounce written by a real MTA, end to end: a private Postfix relays a
 * message for two recipients to postgate, which refuses one of them at RCPT
 * (550 5.1.1, a user no route takes). Postfix then writes its own
 * non-delivery report (RFC 3464 inside RFC 6522 multipart/report) to the
 * original sender, whose domain also relays to postgate; there the sender's
 * route sends it, by its classification (docs/routing.md, target
 * conditions), to its own webhook and not to the app's. The event must name
 * the failed recipient with Postfix's status and postgate's own diagnostic,
 * and the original's Message-ID (docs/payload.md, `classification`).
 * Needs the Debian `postfix` package and root (CI installs it).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { RawSmtp } from './helpers/smtp-client.js';
import { waitFor } from './helpers/wait.js';
import { freePort, postfixAvailable, startPostfix, type PostfixInstance } from './postfix/instance.js';

const skip = postfixAvailable() ?? false;

interface EventBody {
  data: {
    messageId: string | null;
    subject: string | null;
    envelope: { mailFrom: string; rcptTo: Array<{ address: string }> };
    headers: Array<{ name: string; value: string }>;
    classification: {
      autoReply: boolean;
      bulk: boolean;
      bounce: {
        recipients: Array<{ address: string; originalRecipient: string | null; action: string | null; status: string | null; diagnostic: string | null; remoteMta: string | null }>;
        reportingMta: string | null;
        originalMessageId: string | null;
      } | null;
    };
    attachments: Array<{ contentType: string }>;
  };
}

describe('a bounce written by a real Postfix', { skip }, () => {
  let tg: TestGateway;
  let postfix: PostfixInstance;
  /** The sender's route: bounces only, and everything else (the sender's own inbox). */
  let bounces: Receiver;
  let senderInbox: Receiver;
  /** The app that receives the original message for its known recipient. */
  let app: Receiver;

  before(async () => {
    bounces = await startReceiver(() => ({ status: 204 }), { path: '/bounces' });
    senderInbox = await startReceiver(() => ({ status: 204 }), { path: '/inbox' });
    app = await startReceiver(() => ({ status: 204 }), { path: '/app' });
    tg = await startGateway({
      routes: [
        // app.test is served, so a recipient no route takes is an unknown user: 550 5.1.1
        { recipients: ['known@app.test'], targets: [{ type: 'webhook', url: app.url }] },
        {
          recipients: ['*@sender.test'],
          targets: [
            { type: 'webhook', url: bounces.url, when: { classification: 'bounce' } },
            { type: 'webhook', url: senderInbox.url, when: { classification: { not: 'bounce' } } },
          ],
        },
      ],
    });
    // Postfix relays every domain, the sender's included, to postgate: its
    // bounce to the sender arrives there like any other message.
    postfix = await startPostfix({ dir: mkdtempSync(path.join(os.tmpdir(), 'postgate-pfb-')), smtpPort: await freePort(), relayPort: tg.port });
  });

  after(async () => {
    await postfix?.stop();
    await tg?.close();
    await Promise.all([bounces?.close(), senderInbox?.close(), app?.close()]);
  });

  /**
   * Hands a message for known@ and nobody@app.test to Postfix's smtpd (it
   * answers 250 once queued); `mailParams` and `nobodyParams` (for the
   * recipient postgate refuses) are DSN parameters (RFC 3461 §4).
   */
  async function submit(messageId: string, mailParams = '', nobodyParams = ''): Promise<void> {
    const c = await RawSmtp.connect(postfix.smtpPort);
    try {
      assert.equal((await c.read(30_000)).code, 220);
      assert.equal((await c.cmd('EHLO client.sender.test', 30_000)).code, 250);
      assert.equal((await c.cmd(`MAIL FROM:<alice@sender.test>${mailParams}`)).code, 250);
      assert.equal((await c.cmd('RCPT TO:<known@app.test>')).code, 250);
      assert.equal((await c.cmd(`RCPT TO:<nobody@app.test>${nobodyParams}`)).code, 250);
      assert.equal((await c.cmd('DATA')).code, 354);
      const msg = [
        'From: Alice <alice@sender.test>',
        'To: known@app.test, nobody@app.test',
        `Subject: Are you there? (${messageId})`,
        'Date: Mon, 07 Dec 2026 10:00:00 +0000',
        `Message-ID: <${messageId}>`,
        '',
        'Is anybody there?',
        '.',
        '',
      ].join('\r\n');
      c.write(msg);
      const queued = await c.read(30_000);
      assert.equal(queued.code, 250, queued.raw);
      await c.cmd('QUIT').catch(() => undefined);
    } finally {
      c.close();
    }
  }

  const maillog = () => {
    try {
      return readFileSync(path.join(postfix.dir, 'maillog'), 'utf8').slice(-3000);
    } catch {
      return '(no maillog)';
    }
  };

  const events = (r: Receiver): EventBody[] => r.got.map((g) => JSON.parse(g.body.toString('utf8')) as EventBody);

  /**
   * Submits through Postfix and waits until the app has the original and the
   * sender's route has one more message (at either of its targets: a
   * misclassified bounce fails the assertions, not the wait). Polls; a flush
   * at most once a second only hurries a retry if postgate answered 4xx.
   */
  async function relayAndBounce(messageId: string, ...params: [string?, string?]): Promise<{ original: EventBody; report: EventBody; at: 'bounces' | 'inbox' }> {
    const before = bounces.got.length + senderInbox.got.length;
    await submit(messageId, ...params);
    let flushed = Date.now();
    await waitFor(
      async () => {
        if (events(app).some((e) => e.data.messageId === messageId) && bounces.got.length + senderInbox.got.length > before) return true;
        if (Date.now() - flushed > 1000) {
          flushed = Date.now();
          await postfix.flush();
        }
        return false;
      },
      25_000,
      `the original ${messageId} at the app and a message back to its sender`,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; Postfix log:\n${maillog()}`);
    });
    const original = events(app).find((e) => e.data.messageId === messageId)!;
    const at = senderInbox.got.length > 0 ? 'inbox' : 'bounces';
    return { original, report: events(at === 'inbox' ? senderInbox : bounces).at(-1)!, at };
  }

  test('the whole message returned (message/rfc822): the failed recipient, status 5.1.1, our diagnostic, the original Message-ID; the bounce reaches only the bounce target', async () => {
    const { original, report: bounce, at } = await relayAndBounce('first@sender.test');

    // the original went to the app for the recipient postgate took, and only for it
    assert.deepEqual(original.data.envelope.rcptTo.map((r) => r.address), ['known@app.test']);
    assert.equal(original.data.classification.bounce, null);
    assert.equal(at, 'bounces', 'the bounce went to the bounce target');

    // Postfix's own non-delivery report, as postgate received it
    assert.equal(bounce.data.envelope.mailFrom, '', 'a bounce has the null reverse-path (RFC 5321 §4.5.5)');
    assert.deepEqual(bounce.data.envelope.rcptTo.map((r) => r.address), ['alice@sender.test']);
    assert.ok(bounce.data.attachments.some((a) => a.contentType === 'message/delivery-status'));
    assert.ok(bounce.data.attachments.some((a) => a.contentType === 'message/rfc822'), 'the whole message returned');
    // Postfix marks its bounce Auto-Submitted (RFC 3834 §5): still a bounce, not an auto-reply
    assert.ok(bounce.data.headers.some((h) => h.name.toLowerCase() === 'auto-submitted' && h.value.startsWith('auto-replied')), JSON.stringify(bounce.data.headers));
    const c = bounce.data.classification;
    assert.equal(c.autoReply, false);
    assert.equal(c.bulk, false);
    assert.equal(c.bounce!.reportingMta, 'relay.postfix.test');
    assert.equal(c.bounce!.originalMessageId, 'first@sender.test');
    assert.equal(c.bounce!.recipients.length, 1, JSON.stringify(c.bounce));
    const r = c.bounce!.recipients[0]!;
    assert.equal(r.address, 'nobody@app.test');
    // without ORCPT, Postfix reports the address as it received it
    assert.equal(r.originalRecipient, 'nobody@app.test');
    assert.equal(r.action, 'failed');
    assert.equal(r.status, '5.1.1');
    // postgate's own refusal (src/transaction/replies.ts, PG_RCPT_UNKNOWN_USER) as Postfix recorded it, unfolded
    assert.equal(r.diagnostic, '550 5.1.1 <nobody@app.test>: Recipient address rejected: User unknown');
    assert.equal(r.remoteMta, '127.0.0.1');

    // by its classification: the bounce target has it, the sender's other target has nothing
    assert.equal(bounces.got.length, 1);
    assert.equal(senderInbox.got.length, 0);
    assert.equal(app.got.length, 1);
  });

  test('only the headers returned (DSN RET=HDRS, text/rfc822-headers), the original recipient from ORCPT', async () => {
    // ENVID adds an Original-Envelope-Id field to the report's per-message block (RFC 3464 §2.2.1)
    const { report: bounce, at } = await relayAndBounce('second@sender.test', ' RET=HDRS ENVID=env-second', ' NOTIFY=FAILURE ORCPT=rfc822;Nobody@App.test');
    assert.equal(at, 'bounces', 'the bounce went to the bounce target');
    assert.ok(bounce.data.attachments.some((a) => a.contentType === 'text/rfc822-headers'), 'only the headers returned');
    assert.ok(!bounce.data.attachments.some((a) => a.contentType === 'message/rfc822'));
    const c = bounce.data.classification;
    assert.equal(c.autoReply, false);
    assert.equal(c.bounce!.originalMessageId, 'second@sender.test');
    assert.equal(c.bounce!.reportingMta, 'relay.postfix.test');
    assert.deepEqual(
      c.bounce!.recipients.map((r) => [r.address, r.originalRecipient, r.action, r.status]),
      [['nobody@app.test', 'Nobody@App.test', 'failed', '5.1.1']],
    );
    assert.equal(c.bounce!.recipients[0]!.diagnostic, '550 5.1.1 <nobody@app.test>: Recipient address rejected: User unknown');
    assert.equal(senderInbox.got.length, 0);
  });
});
