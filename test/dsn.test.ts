/**
 * Delivery status notifications (RFC 3461/3464) sent through a real relay
 * (a local smtp-server) with nodemailer, parsed back with mailparser and
 * checked field by field.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SMTPServer } from 'smtp-server';
import { simpleParser } from 'mailparser';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { RawSmtp, type Reply } from './helpers/smtp-client.js';
import { startReceiver, type Receiver } from './helpers/receiver.js';
import { waitFor } from './helpers/wait.js';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { startS3, TEST_REGION, type LocalS3 } from './helpers/aws.js';

interface Relayed {
  from: string | false;
  to: string[];
  raw: Buffer;
}

/** A relay that takes every report, or refuses the first `refuse` with 451 (a relay that is busy). */
async function startRelay(opts: { refuse?: number } = {}): Promise<{ port: number; got: Relayed[]; refused: number; close(): Promise<void> }> {
  const got: Relayed[] = [];
  const state = { refused: 0 };
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        if (state.refused < (opts.refuse ?? 0)) {
          state.refused++;
          return cb(Object.assign(new Error('Try again later'), { responseCode: 451 }));
        }
        got.push({ from: session.envelope.mailFrom ? session.envelope.mailFrom.address : false, to: session.envelope.rcptTo.map((r) => r.address), raw: Buffer.concat(chunks) });
        cb();
      });
    },
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.server.address() as { port: number }).port;
  return {
    port,
    got,
    get refused() {
      return state.refused;
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** One transaction with DSN parameters, by hand. */
async function sendWithDsn(port: number, from: string, mailParams: string, rcpt: string, rcptParams: string, body: string): Promise<{ ehlo: Reply; mail: Reply; rcpt: Reply; data: Reply | null }> {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    const ehlo = await c.cmd('EHLO client.example');
    const mail = await c.cmd(`MAIL FROM:<${from}>${mailParams ? ` ${mailParams}` : ''}`);
    const r = await c.cmd(`RCPT TO:<${rcpt}>${rcptParams ? ` ${rcptParams}` : ''}`);
    if (r.code !== 250) return { ehlo, mail, rcpt: r, data: null };
    await c.cmd('DATA');
    c.write(`${body}.\r\n`);
    return { ehlo, mail, rcpt: r, data: await c.read(30_000) };
  } finally {
    c.close();
  }
}

const BODY = 'From: <author@sender.test>\r\nTo: <in@q.test>\r\nSubject: report me\r\nMessage-ID: <m1@sender.test>\r\n\r\nThe secret body line.\r\n';

/**
 * Fields of the message/delivery-status part: per-message block, then one
 * block per recipient. mailparser decodes that part as text and appends it
 * to `text` after the human-readable part, so it starts at Reporting-MTA.
 */
function statusFields(text: string): Array<Record<string, string>> {
  const at = text.indexOf('Reporting-MTA:');
  assert.ok(at !== -1, `no delivery-status fields in: ${text}`);
  return text
    .slice(at)
    .trim()
    .split(/\r?\n\r?\n/)
    .map((block) => Object.fromEntries(block.split(/\r?\n/).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()])));
}

describe('DSN (RFC 3461/3464) through a relay', () => {
  let relay: Awaited<ReturnType<typeof startRelay>>;
  let hook: Receiver;
  let tg: TestGateway;

  before(async () => {
    relay = await startRelay();
    hook = await startReceiver((r) =>
      /subject":"report me/.test(r.body.toString('utf8')) && /"address":"no@q\.test"/.test(r.body.toString('utf8'))
        ? { status: 200, json: { action: 'reject', code: 550, enhanced: '5.1.1', message: 'No such mailbox' } }
        : { status: 204 },
    );
    tg = await startGateway({
      dsn: { relay: { host: '127.0.0.1', port: relay.port } },
      queue: { retry: { initialDelay: '50ms', maxDelay: '50ms' } },
      routes: [
        { name: 'queued', recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url }] },
        { name: 'direct', recipients: ['*@s.test'], targets: [{ type: 'webhook', id: 'hook-sync', url: hook.url }] },
      ],
    });
  });
  after(async () => {
    await tg.close();
    await hook.close();
    await relay.close();
  });

  test('EHLO advertises DSN when a relay is configured; DSN parameters are accepted', async () => {
    const r = await sendWithDsn(tg.port, 'a@sender.test', 'RET=HDRS ENVID=probe', 'ok@s.test', 'NOTIFY=NEVER', BODY.replace('report me', 'probe'));
    assert.ok(r.ehlo.lines.some((l) => /^250[ -]DSN$/.test(l)));
    assert.equal(r.mail.code, 250);
    assert.equal(r.rcpt.code, 250);
    assert.equal(r.data?.code, 250);
  });

  test('a queued message refused later → one "failed" DSN to the sender from <>, with RET=HDRS, ENVID and ORCPT echoed', async () => {
    const before = relay.got.length;
    const r = await sendWithDsn(tg.port, 'author@sender.test', 'RET=HDRS ENVID=env-42', 'no@q.test', 'NOTIFY=FAILURE ORCPT=rfc822;orig+no@q.test', BODY);
    assert.equal(r.data?.code, 250, 'queued mode answers 250 before the receiver decides');
    await waitFor(() => relay.got.length > before, 5000, 'the DSN');
    const dsn = relay.got.at(-1)!;
    assert.equal(dsn.from, '', 'sent with the null reverse-path');
    assert.deepEqual(dsn.to, ['author@sender.test']);
    const parsed = await simpleParser(dsn.raw);
    assert.match(String(parsed.headers.get('content-type') && (parsed.headers.get('content-type') as { value: string }).value), /^multipart\/report$/);
    assert.equal((parsed.headers.get('content-type') as { params: Record<string, string> }).params['report-type'], 'delivery-status');
    assert.equal(parsed.subject, 'Undelivered Mail Returned to Sender');
    assert.equal(parsed.headers.get('auto-submitted'), 'auto-replied');
    assert.match(dsn.raw.toString('latin1'), /\r\nContent-Type: message\/delivery-status\r\n/);
    const [perMessage, perRcpt] = statusFields(String(parsed.text));
    assert.equal(perMessage!['reporting-mta'], 'dns; mx.test.local');
    assert.equal(perMessage!['original-envelope-id'], 'env-42');
    assert.ok(Date.parse(perMessage!['arrival-date']!) > 0);
    assert.equal(perRcpt!['final-recipient'], 'rfc822; no@q.test');
    assert.equal(perRcpt!['original-recipient'], 'rfc822;orig+no@q.test');
    assert.equal(perRcpt!.action, 'failed');
    assert.equal(perRcpt!.status, '5.1.1');
    assert.equal(perRcpt!['diagnostic-code'], 'smtp; 550 5.1.1 No such mailbox');
    const headersPart = parsed.attachments.find((a) => a.contentType === 'text/rfc822-headers');
    assert.ok(headersPart, 'RET=HDRS returns the header only');
    assert.match(headersPart.content.toString('utf8'), /Subject: report me/);
    assert.doesNotMatch(dsn.raw.toString('latin1'), /The secret body line/);
    // one report only, whatever happens next
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(relay.got.length, before + 1);
  });

  test('RET=FULL returns the whole message as message/rfc822', async () => {
    const before = relay.got.length;
    await sendWithDsn(tg.port, 'author@sender.test', 'RET=FULL', 'no@q.test', '', BODY);
    await waitFor(() => relay.got.length > before, 5000, 'the DSN');
    const raw = relay.got.at(-1)!.raw.toString('latin1');
    assert.match(raw, /Content-Type: message\/rfc822/);
    assert.match(raw, /The secret body line/);
    assert.doesNotMatch(raw, /Original-Envelope-Id/, 'no ENVID given, none echoed');
  });

  test('NOTIFY=SUCCESS in sync mode → a "delivered" DSN after the 250', async () => {
    const before = relay.got.length;
    const r = await sendWithDsn(tg.port, 'author@sender.test', '', 'ok@s.test', 'NOTIFY=SUCCESS,FAILURE', BODY.replace('report me', 'deliver me'));
    assert.equal(r.data?.code, 250);
    await waitFor(() => relay.got.length > before, 5000, 'the DSN');
    const parsed = await simpleParser(relay.got.at(-1)!.raw);
    const [, perRcpt] = statusFields(String(parsed.text));
    assert.equal(perRcpt!.action, 'delivered');
    assert.equal(perRcpt!.status, '2.0.0');
    assert.equal(perRcpt!['final-recipient'], 'rfc822; ok@s.test');
  });

  test('no DSN for NOTIFY=NEVER, for a success without NOTIFY=SUCCESS, or to the null sender', async () => {
    const before = relay.got.length;
    const deadBefore = tg.logs.filter((l) => l.msg === 'queued delivery dead-lettered').length;
    await sendWithDsn(tg.port, 'author@sender.test', '', 'no@q.test', 'NOTIFY=NEVER', BODY);
    await sendWithDsn(tg.port, 'author@sender.test', '', 'ok@s.test', '', BODY.replace('report me', 'plain'));
    await sendWithDsn(tg.port, '', '', 'no@q.test', '', BODY);
    await waitFor(() => tg.logs.filter((l) => l.msg === 'queued delivery dead-lettered').length >= deadBefore + 2, 5000, 'dead letters');
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(relay.got.length, before);
  });
});

describe('delay reports (RFC 3464 Action: delayed) and reports the relay refuses', () => {
  let relay: Awaited<ReturnType<typeof startRelay>>;
  let hook: Receiver;
  let tg: TestGateway;
  before(async () => {
    // The relay refuses the first two reports it is offered.
    relay = await startRelay({ refuse: 2 });
    hook = await startReceiver(() => ({ status: 503 }));
    tg = await startGateway({
      dsn: { relay: { host: '127.0.0.1', port: relay.port }, delayedAfter: '300ms', retry: { initialDelay: '200ms', attempts: 4 } },
      queue: { retry: { initialDelay: '100ms', maxDelay: '150ms', maxAge: '1h' } },
      routes: [{ recipients: ['*@slow.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url }] }],
    });
  });
  after(async () => {
    await tg.close();
    await hook.close();
    await relay.close();
  });

  test('a queued message still failing after dsn.delayedAfter → one "delayed" report to NOTIFY=DELAY, sent on the relay\'s third try', async () => {
    const r = await sendWithDsn(tg.port, 'author@sender.test', 'ENVID=slow-1', 'wait@slow.test', 'NOTIFY=DELAY,FAILURE', BODY.replace('report me', 'slow one'));
    assert.equal(r.data?.code, 250);
    // No report for a recipient that did not ask for DELAY.
    await sendWithDsn(tg.port, 'author@sender.test', '', 'quiet@slow.test', 'NOTIFY=FAILURE', BODY.replace('report me', 'quiet one'));
    await waitFor(() => relay.got.length >= 1, 15_000, 'the delay report');
    assert.equal(relay.refused, 2, 'the relay refused twice before it took the report');
    assert.ok(tg.logs.some((l) => l.msg === 'DSN could not be sent, will retry' && l.code === 'PG_DSN_SEND'));
    const dsn = relay.got[0]!;
    assert.equal(dsn.from, '');
    const parsed = await simpleParser(dsn.raw);
    assert.equal(parsed.subject, 'Delayed Mail (still being retried)');
    const [perMessage, perRcpt] = statusFields(String(parsed.text));
    assert.equal(perMessage!['original-envelope-id'], 'slow-1');
    assert.equal(perRcpt!['final-recipient'], 'rfc822; wait@slow.test');
    assert.equal(perRcpt!.action, 'delayed');
    assert.match(perRcpt!.status!, /^4\.\d+\.\d+$/);
    assert.match(perRcpt!['diagnostic-code']!, /^smtp; 451 4\./);
    assert.ok(Date.parse(perRcpt!['will-retry-until']!) - Date.parse(perMessage!['arrival-date']!) >= 3_599_000, 'Will-Retry-Until is the arrival plus queue.retry.maxAge');
    // More failed attempts follow: still one delay report for the message, none for the other.
    const attempts = hook.got.length;
    await waitFor(() => hook.got.length >= attempts + 4, 10_000, 'more attempts');
    assert.equal(relay.got.length, 1, 'one delay report in all');
    assert.ok(hook.got.length > 4);
  });
});

describe('DSN for queued items on the S3 + SQS backend (fauxqs)', () => {
  let relay: Awaited<ReturnType<typeof startRelay>>;
  let hook: Receiver;
  let second: Receiver;
  let secondUp = false;
  let down: Receiver;
  let aws: LocalS3;
  let sqs: SQSClient;
  let tg: TestGateway;

  before(async () => {
    relay = await startRelay();
    aws = await startS3();
    await aws.createBucket('dsn-spool');
    sqs = new SQSClient({ region: TEST_REGION, endpoint: aws.endpoint });
    const queueUrl = (await sqs.send(new CreateQueueCommand({ QueueName: 'postgate-dsn' }))).QueueUrl!;
    hook = await startReceiver((r) =>
      /subject":"report me/.test(r.body.toString('utf8')) ? { status: 200, json: { action: 'reject', code: 550, enhanced: '5.1.1', message: 'No such mailbox' } } : { status: 204 },
    );
    second = await startReceiver(() => ({ status: secondUp ? 204 : 503 }));
    down = await startReceiver(() => ({ status: 503 }));
    tg = await startGateway({
      dsn: { relay: { host: '127.0.0.1', port: relay.port }, delayedAfter: '500ms' },
      queue: {
        retry: { initialDelay: '200ms', maxDelay: '300ms' },
        backend: { type: 's3-sqs', bucket: 'dsn-spool', prefix: 'q/', queueUrl, endpoint: aws.endpoint, region: TEST_REGION, forcePathStyle: true, pollWait: '1s' },
      },
      routes: [
        { recipients: ['*@q.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'hook', url: hook.url }] },
        { recipients: ['*@two.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'one', url: hook.url }, { type: 'webhook', id: 'two', url: second.url }] },
        { recipients: ['*@late.test'], mode: 'queue', targets: [{ type: 'webhook', id: 'late', url: down.url }] },
      ],
    });
  });
  after(async () => {
    await tg.close();
    await hook.close();
    await second.close();
    await down.close();
    await relay.close();
    sqs.destroy();
    await aws.stop();
  });

  test('a refused item → one "failed" report, claimed once in the bucket', async () => {
    const before = relay.got.length;
    const r = await sendWithDsn(tg.port, 'author@sender.test', 'RET=HDRS ENVID=s3-1', 'no@q.test', 'NOTIFY=FAILURE', BODY);
    assert.equal(r.data?.code, 250);
    await waitFor(() => relay.got.length > before, 10_000, 'the DSN');
    const dsn = relay.got.at(-1)!;
    assert.equal(dsn.from, '');
    assert.deepEqual(dsn.to, ['author@sender.test']);
    const [perMessage, perRcpt] = statusFields(String((await simpleParser(dsn.raw)).text));
    assert.equal(perMessage!['original-envelope-id'], 's3-1');
    assert.equal(perRcpt!.action, 'failed');
    assert.equal(perRcpt!.status, '5.1.1');
    const markers = (await aws.client.send(new ListObjectsV2Command({ Bucket: 'dsn-spool', Prefix: 'q/dsn/' }))).Contents ?? [];
    assert.equal(markers.length, 1, 'the report is claimed in the bucket');
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(relay.got.length, before + 1, 'one report');
  });

  test('NOTIFY=SUCCESS with two targets → one "delivered" report, only after both have it', async () => {
    const before = relay.got.length;
    const r = await sendWithDsn(tg.port, 'author@sender.test', '', 'ok@two.test', 'NOTIFY=SUCCESS', BODY.replace('report me', 'two targets'));
    assert.equal(r.data?.code, 250);
    await waitFor(() => second.got.length >= 2, 10_000, 'the second target failing twice');
    assert.ok(hook.got.some((g) => /two targets/.test(g.body.toString('utf8'))), 'the first target has it');
    assert.equal(relay.got.length, before, 'no report while the second target has not got it');
    secondUp = true;
    await waitFor(() => relay.got.length > before, 10_000, 'the delivered report');
    const [, perRcpt] = statusFields(String((await simpleParser(relay.got.at(-1)!.raw)).text));
    assert.equal(perRcpt!.action, 'delivered');
    assert.equal(perRcpt!['final-recipient'], 'rfc822; ok@two.test');
    await new Promise((res) => setTimeout(res, 500));
    assert.equal(relay.got.length, before + 1, 'one report for the message');
  });

  test('NOTIFY=DELAY: one "delayed" report once the message has waited dsn.delayedAfter, claimed in the bucket', async () => {
    const before = relay.got.length;
    assert.equal((await sendWithDsn(tg.port, 'author@sender.test', '', 'wait@late.test', 'NOTIFY=DELAY,FAILURE', BODY.replace('report me', 'late one'))).data?.code, 250);
    await waitFor(() => relay.got.length > before, 15_000, 'the delay report');
    const [, perRcpt] = statusFields(String((await simpleParser(relay.got.at(-1)!.raw)).text));
    assert.equal(perRcpt!.action, 'delayed');
    assert.equal(perRcpt!['final-recipient'], 'rfc822; wait@late.test');
    const markers = ((await aws.client.send(new ListObjectsV2Command({ Bucket: 'dsn-spool', Prefix: 'q/dsn/' }))).Contents ?? []).map((o) => o.Key!);
    assert.ok(markers.some((k) => k.endsWith('.delayed')), markers.join(', '));
    const attempts = down.got.length;
    await waitFor(() => down.got.length >= attempts + 3, 15_000, 'more failed attempts');
    assert.equal(relay.got.length, before + 1, 'still one delay report');
  });
});

describe('DSN without a relay', () => {
  test('not advertised, and its parameters are refused (555)', async () => {
    const tg = await startGateway({ routes: [{ recipients: ['*@s.test'], targets: [{ type: 'local' }] }] });
    try {
      const r = await sendWithDsn(tg.port, 'a@b.test', 'RET=FULL', 'x@s.test', '', BODY);
      assert.ok(!r.ehlo.lines.some((l) => /DSN/.test(l)));
      assert.equal(r.mail.code, 555);
    } finally {
      await tg.close();
    }
  });
});
