/**
 * The message the format tests send: text and HTML bodies and one
 * attachment, with a Message-ID of its own, so each test can find what the
 * app's mailbox made of it.
 */
import { randomBytes } from 'node:crypto';

export interface TestMail {
  messageId: string;
  subject: string;
  text: string;
  attachment: { filename: string; bytes: Buffer };
  /** The message, CRLF line ends. */
  source: string;
}

export function testMail(opts: { to?: string; cc?: string; subject?: string } = {}): TestMail {
  const tag = randomBytes(6).toString('hex');
  const messageId = `${tag}@sender.example`;
  const subject = opts.subject ?? `Quarterly report ${tag}`;
  const text = `Hello from the test ${tag}.\nSecond line.\n`;
  const bytes = Buffer.concat([Buffer.from('%PDF-1.4\n'), randomBytes(600)]);
  const source = [
    'From: Ann Sender <ann@sender.example>',
    `To: ${opts.to ?? 'Support <support@app.test>'}`,
    ...(opts.cc ? [`Cc: ${opts.cc}`] : []),
    `Subject: ${subject}`,
    `Message-ID: <${messageId}>`,
    'Date: Mon, 07 Dec 2026 10:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="outer"',
    '',
    '--outer',
    'Content-Type: multipart/alternative; boundary="alt"',
    '',
    '--alt',
    'Content-Type: text/plain; charset=utf-8',
    '',
    text.replace(/\n/g, '\r\n').trimEnd(),
    '--alt',
    'Content-Type: text/html; charset=utf-8',
    '',
    `<p>Hello from the test ${tag}.</p>`,
    '--alt--',
    '--outer',
    'Content-Type: application/pdf; name="report.pdf"',
    'Content-Disposition: attachment; filename="report.pdf"',
    'Content-Transfer-Encoding: base64',
    '',
    ...(bytes.toString('base64').match(/.{1,76}/g) ?? []),
    '--outer--',
    '',
  ].join('\r\n');
  return { messageId, subject, text, attachment: { filename: 'report.pdf', bytes }, source };
}
