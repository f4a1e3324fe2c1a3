/**
 * The s3 target against a local S3-compatible server (fauxqs): both objects
 * under their templated keys, the .eml exactly as stored, the event as
 * delivered, and a store that is down defers the message (451) so the
 * sender's retry archives it later.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { RawSmtp, sendMail, simpleMessage, sendOne } from './helpers/smtp-client.js';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { startS3, TEST_REGION, type LocalS3 } from './helpers/aws.js';
import { deliveryId } from '../src/message/ids.js';
import { validateConfig } from '../src/config/load.js';

const send = sendOne;

/** The bytes the server receives for `body` sent by sendMail (CRLF, unstuffed). */
const wireBytes = (body: string) => {
  const crlf = body.replace(/\r?\n/g, '\r\n');
  return Buffer.from(crlf.endsWith('\r\n') ? crlf : `${crlf}\r\n`, 'latin1');
};

const queueIdOf = (text: string) => /queued as ([0-9A-Z]{20})/.exec(text)?.[1]!;

describe('s3 target (fauxqs)', () => {
  let s3: LocalS3;
  let tg: TestGateway;

  const keysUnder = async (prefix: string) =>
    ((await s3.client.send(new ListObjectsV2Command({ Bucket: 'archive', Prefix: prefix }))).Contents ?? []).map((o) => o.Key!).sort();
  const getObject = async (key: string) => {
    const r = await s3.client.send(new GetObjectCommand({ Bucket: 'archive', Key: key }));
    return { body: Buffer.from(await r.Body!.transformToByteArray()), contentType: r.ContentType };
  };

  before(async () => {
    s3 = await startS3();
    await s3.createBucket('archive');
    const base = { type: 's3', bucket: 'archive', endpoint: s3.endpoint, region: TEST_REGION, forcePathStyle: true, timeout: '5s' };
    tg = await startGateway({
      routes: [
        { name: 'archive', recipients: ['*@archive.example.test'], targets: [{ ...base, prefix: 'mail/', serverSideEncryption: 'AES256' }] },
        {
          name: 'hourly',
          recipients: ['*@hourly.example.test'],
          targets: [{ ...base, id: 'hourly', emlKey: 'by-hour/{yyyy}{mm}{dd}{hh}/{id}.eml', eventKey: 'events/{deliveryId}.json', storageClass: 'STANDARD_IA' }],
        },
      ],
    });
  });
  after(async () => {
    await tg?.close();
    await s3?.stop();
  });

  test('the .eml (as stored) and the event are archived under the default delivery-id keys', async () => {
    const body = simpleMessage('archive me');
    const data = await send(tg.port, 'a@archive.example.test', body);
    assert.equal(data.code, 250, data.raw);
    const queueId = queueIdOf(data.text);
    const keys = await keysUnder('mail/');
    assert.equal(keys.length, 2, keys.join(' '));
    const d = new Date();
    const day = `${d.getUTCFullYear()}/${String(d.getUTCMonth() + 1).padStart(2, '0')}/${String(d.getUTCDate()).padStart(2, '0')}`;
    const sent = wireBytes(body);
    const sha = createHash('sha256').update(sent).digest('hex');
    const id = deliveryId('sender@example.org', ['a@archive.example.test'], sha, 's3:archive/mail/');
    assert.deepEqual(keys, [`mail/${day}/${id}.eml`, `mail/${day}/${id}.json`]);

    const eml = await getObject(keys[0]!);
    const json = await getObject(keys[1]!);
    assert.equal(eml.contentType, 'message/rfc822');
    assert.equal(json.contentType, 'application/json');
    const event = JSON.parse(json.body.toString('utf8'));
    assert.equal(event.type, 'email.received');
    assert.equal(event.data.id, queueId);
    assert.equal(event.data.subject, 'archive me');
    // raw.sha256 / raw.size describe the bytes as received; the .eml is those
    // bytes after postgate's trace headers (as the local store keeps them).
    assert.equal(event.data.raw.sha256, sha);
    assert.equal(event.data.raw.size, sent.length);
    assert.ok(eml.body.subarray(eml.body.length - sent.length).equals(sent), 'the .eml ends with the bytes as received');
    const trace = eml.body.subarray(0, eml.body.length - sent.length).toString('latin1');
    assert.match(trace, /^Return-Path: <sender@example\.org>\r\nReceived: from client\.example .*/s);
    assert.match(trace, new RegExp(`id ${queueId}`));
    const head = await s3.client.send(new HeadObjectCommand({ Bucket: 'archive', Key: keys[0]! }));
    assert.equal(head.Metadata?.['raw-sha256'], sha);
    assert.equal(head.Metadata?.['delivery-id'], id);
    assert.equal(head.ContentLength, eml.body.length);

    // The sender's retry of the same bytes adds no copy.
    const again = await send(tg.port, 'a@archive.example.test', body);
    assert.equal(again.code, 250, again.raw);
    assert.deepEqual(await keysUnder('mail/'), keys);
  });

  test('key templates: {yyyy}{mm}{dd}{hh} and the queue id, the event by delivery id', async () => {
    const hourOf = (d: Date) => d.toISOString().slice(0, 13).replace(/[-T]/g, '');
    const t0 = hourOf(new Date());
    const data = await send(tg.port, 'b@hourly.example.test', simpleMessage('hourly'));
    const t1 = hourOf(new Date());
    assert.equal(data.code, 250, data.raw);
    const queueId = queueIdOf(data.text);
    const emls = await keysUnder('by-hour/');
    assert.equal(emls.length, 1);
    assert.match(emls[0]!, new RegExp(`^by-hour/\\d{10}/${queueId}\\.eml$`));
    // (a test running across the turn of an hour may see either hour)
    assert.ok([t0, t1].includes(emls[0]!.split('/')[1]!), `${emls[0]} vs ${t0}`);
    const events = await keysUnder('events/');
    assert.equal(events.length, 1);
    assert.match(events[0]!, /^events\/msg_[0-9a-f]{32}\.json$/);
    assert.equal(JSON.parse((await getObject(events[0]!)).body.toString('utf8')).data.id, queueId);
  });

  test('a message over 5 MiB goes up as a multipart upload and arrives intact', async () => {
    const line = 'y'.repeat(998);
    const body = simpleMessage('large') + `${line}\r\n`.repeat(6 * 1024);
    const data = await send(tg.port, 'big@hourly.example.test', body);
    assert.equal(data.code, 250, data.raw);
    const queueId = queueIdOf(data.text);
    const key = (await keysUnder('by-hour/')).find((k) => k.endsWith(`/${queueId}.eml`))!;
    assert.ok(key, 'the .eml is there');
    const head = await s3.client.send(new HeadObjectCommand({ Bucket: 'archive', Key: key }));
    // A multipart object's ETag is "<md5 of the part md5s>-<parts>".
    assert.match(String(head.ETag), /-2"?$/);
    const eml = (await getObject(key)).body;
    const sent = wireBytes(body);
    assert.ok(sent.length > 5 * 1024 * 1024);
    assert.ok(eml.subarray(eml.length - sent.length).equals(sent), 'the .eml ends with the bytes as received');
    assert.equal(head.Metadata?.['raw-sha256'], createHash('sha256').update(sent).digest('hex'));
  });

  test('S3 down: 451 and nothing is lost — the retry is archived once it is back', async () => {
    const body = simpleMessage('while down');
    const port = s3.port;
    await s3.stop();
    const data = await send(tg.port, 'c@archive.example.test', body);
    assert.equal(data.code, 451, data.raw);
    assert.match(data.text, /^4\.4\.[12] Temporary delivery failure/);
    assert.ok(tg.logs.some((l) => l.msg === 'delivery' && l.ok === false && /^s3 archive\/mail\//.test(String(l.err))), 'the failure is logged');
    // The store comes back (empty: fauxqs keeps objects in memory) and the sender retries.
    s3 = await startS3(port);
    await s3.createBucket('archive');
    const retry = await send(tg.port, 'c@archive.example.test', body);
    assert.equal(retry.code, 250, retry.raw);
    const keys = await keysUnder('mail/');
    assert.equal(keys.length, 2, keys.join(' '));
    const event = JSON.parse((await getObject(keys.find((k) => k.endsWith('.json'))!)).body.toString('utf8'));
    assert.equal(event.data.subject, 'while down');
  });

  test('key templates are checked when the config is loaded', () => {
    const cfg = (t: Record<string, unknown>) => () =>
      validateConfig({ routes: [{ recipients: ['a@x.test'], targets: [{ type: 's3', bucket: 'b', ...t }] }] });
    assert.throws(cfg({ emlKey: '{yyyy}/{minute}/{id}.eml' }), /routes\[0\]\.targets\[0\]\.emlKey: unknown placeholder \{minute\}/);
    assert.throws(cfg({ emlKey: '{yyyy}/{mm}.eml' }), /emlKey: needs \{deliveryId\} or \{id\}/);
    assert.throws(cfg({ eventKey: '{id}.json}' }), /eventKey: a "\{" or "\}" that is not part of a placeholder/);
    assert.throws(cfg({ emlKey: '{id}', eventKey: '{id}' }), /eventKey: must differ from emlKey/);
    assert.throws(cfg({ kmsKeyId: 'k' }), /kmsKeyId: kmsKeyId needs serverSideEncryption/);
    const ok = validateConfig({ routes: [{ recipients: ['a@x.test'], targets: [{ type: 's3', bucket: 'b', prefix: 'p/' }] }] });
    assert.equal(ok.routes[0]!.targets[0]!.id, 's3:b/p/');
  });
});

test('AWS clients are shared per (service, region, endpoint) and destroyed together', async () => {
  const { createAwsClients } = await import('../src/delivery/aws-clients.js');
  const aws = createAwsClients();
  const a = aws.s3({ region: 'eu-west-1', endpoint: 'http://127.0.0.1:1' });
  assert.equal(aws.s3({ region: 'eu-west-1', endpoint: 'http://127.0.0.1:1' }), a);
  assert.notEqual(aws.s3({ region: 'eu-west-1', endpoint: 'http://127.0.0.1:2' }), a);
  assert.notEqual(aws.s3({ region: 'eu-west-2', endpoint: 'http://127.0.0.1:1' }), a);
  assert.notEqual(aws.s3({ region: 'eu-west-1', endpoint: 'http://127.0.0.1:1', forcePathStyle: true }), a);
  assert.equal(aws.lambda({ region: 'eu-west-1' }), aws.lambda({ region: 'eu-west-1' }));
  assert.equal(await aws.lambda({ region: 'eu-west-1' }).config.maxAttempts(), 1, 'Lambda invocations are never retried by the SDK');
  let destroyed = 0;
  const orig = a.destroy.bind(a);
  a.destroy = () => {
    destroyed++;
    orig();
  };
  aws.destroy();
  assert.equal(destroyed, 1);
  assert.notEqual(aws.s3({ region: 'eu-west-1', endpoint: 'http://127.0.0.1:1' }), a, 'a new client after destroy');
  aws.destroy();
});
