/**
 * Pure pieces: size/duration/address syntax, routing precedence, delivery ids,
 * the bare line-ending scanner, and the startup check of smtp-server internals.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { parseBytes, parseDuration, parseHostPort } from '../src/config/units.js';
import { buildRoutingTable, routeRecipient } from '../src/routing/index.js';
import { deliveryId, newQueueId } from '../src/message/ids.js';
import { hasBareLineEnding, countReceived } from '../src/smtp/session.js';
import { parseHeaderBlock } from '../src/message/headers.js';
import { assertSmtpServerInternals } from '../src/smtp/extensions.js';
import { GatewayError } from '../src/core/errors.js';

describe('config units', () => {
  test('sizes', () => {
    assert.equal(parseBytes(26214400), 26214400);
    assert.equal(parseBytes('25MiB'), 26214400);
    assert.equal(parseBytes('25 MB'), 25_000_000);
    assert.equal(parseBytes('1.5KiB'), 1536);
    assert.equal(parseBytes('lots'), null);
    assert.equal(parseBytes('5 parsecs'), null);
    assert.equal(parseBytes(-1), null);
  });
  test('durations', () => {
    assert.equal(parseDuration(1500), 1500);
    assert.equal(parseDuration('30s'), 30_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('soon'), null);
  });
  test('listen addresses', () => {
    assert.deepEqual(parseHostPort('127.0.0.1:2525'), { host: '127.0.0.1', port: 2525 });
    assert.deepEqual(parseHostPort('[::1]:25'), { host: '::1', port: 25 });
    assert.deepEqual(parseHostPort(':25'), { host: '::', port: 25 });
    assert.equal(parseHostPort('nowhere'), null);
    assert.equal(parseHostPort('1.2.3.4:70000'), null);
  });
});

describe('routing', () => {
  const t = (id: string) => ({ id });
  const table = buildRoutingTable(
    [
      { name: 'exact', recipients: ['Sales@Example.test'], targets: [t('a')] },
      { name: 'wild', recipients: ['*@example.test'], targets: [t('b')] },
      { name: 'plus', recipients: ['support+*@example.test'], targets: [t('c')] },
    ],
    ['example.test', 'other.test'],
    [t('pm')],
  );
  const route = (a: string) => {
    const d = routeRecipient(table, a);
    return d.kind === 'accept' ? d.route.name : d.kind;
  };
  test('exact beats wildcard, case-insensitively', () => assert.equal(route('sales@EXAMPLE.test'), 'exact'));
  test('the more specific wildcard wins', () => {
    assert.equal(route('support+123@example.test'), 'plus');
    assert.equal(route('anyone@example.test'), 'wild');
  });
  test('postmaster of every served domain, before wildcards', () => {
    assert.equal(route('postmaster@example.test'), 'postmaster');
    assert.equal(route('PostMaster@other.test'), 'postmaster');
  });
  test('unknown user in a served domain vs another domain', () => {
    assert.equal(route('nobody@other.test'), 'unknown-user');
    assert.equal(route('x@gmail.com'), 'relay-denied');
    assert.equal(route('postmaster@gmail.com'), 'relay-denied');
    assert.equal(route('no-at-sign'), 'invalid');
  });
});

describe('ids', () => {
  test('delivery id is deterministic over sender, sorted recipients, raw digest and target', () => {
    const a = deliveryId('A@x.test', ['b@y.test', 'c@y.test'], 'f'.repeat(64), 'webhook:u');
    assert.equal(a, deliveryId('a@x.test', ['c@y.test', 'B@y.test'], 'f'.repeat(64), 'webhook:u'));
    assert.notEqual(a, deliveryId('a@x.test', ['b@y.test', 'c@y.test'], 'e'.repeat(64), 'webhook:u'));
    assert.notEqual(a, deliveryId('a@x.test', ['b@y.test', 'c@y.test'], 'f'.repeat(64), 'webhook:v'));
    assert.match(a, /^msg_[0-9a-f]{32}$/);
  });
  test('queue ids sort by time and are unique', () => {
    const ids = [newQueueId(1000), newQueueId(2000), newQueueId(2000)];
    assert.ok(ids[0]! < ids[1]!);
    assert.notEqual(ids[1], ids[2]);
    assert.match(ids[0]!, /^[0-9A-HJKMNP-TV-Z]{20}$/);
  });
});

describe('bare line endings', () => {
  const b = (s: string) => Buffer.from(s, 'latin1');
  test('CRLF only is clean, across chunk boundaries too', () => {
    assert.equal(hasBareLineEnding(b('a\r\nb\r\n'), -1), false);
    assert.equal(hasBareLineEnding(b('a\r'), -1), false, 'CR at the end may meet its LF in the next chunk');
    assert.equal(hasBareLineEnding(b('\nb'), 0x0d), false);
  });
  test('bare LF, bare CR, and a CR whose next chunk does not start with LF', () => {
    assert.equal(hasBareLineEnding(b('a\nb'), -1), true);
    assert.equal(hasBareLineEnding(b('a\rb'), -1), true);
    assert.equal(hasBareLineEnding(b('\nb'), 0x61), true);
    assert.equal(hasBareLineEnding(b('b'), 0x0d), true);
  });
  test('Received headers are counted in the header block only', () => {
    const msg = b('Received: a\r\nReceived: b\r\n  folded\r\nSubject: x\r\n\r\nReceived: not a header\r\n');
    assert.equal(countReceived(msg), 2);
  });
  test('the count on the bytes equals the count of the parsed header fields', () => {
    // What loop detection counted before it scanned bytes: the fields of
    // parseHeaderBlock named "received", whatever the case, spacing, line ends.
    const parts = ['Received', 'received', 'RECEIVED', 'Received ', 'Received\t', 'Received\u00a0', 'Received\u2003', 'Receivedx', ' Received', '\tReceived', 'Re ceived', 'X', ':', 'Subject'];
    const tails = [': a', ':', ':b:c', ' no colon', ''];
    const ends = ['\r\n', '\n', '\r', '\r\r\n'];
    let seed = 7;
    const pick = <T>(xs: readonly T[]): T => xs[(seed = (seed * 1103515245 + 12345) & 0x7fffffff) % xs.length]!;
    for (let i = 0; i < 3000; i++) {
      let text = '';
      for (let j = pick([0, 1, 2, 3, 5, 8]); j > 0; j--) text += pick(parts) + pick(tails) + pick(ends);
      text += pick(['', '\r\n', '\n', '\r\n\r\nReceived: body\r\n', '\n\nReceived: body\n']);
      const buf = Buffer.from(text, 'utf8');
      const expected = parseHeaderBlock(buf).filter((f) => f.name.toLowerCase() === 'received').length;
      assert.equal(countReceived(buf), expected, JSON.stringify(text));
    }
    // bytes that are not UTF-8 after the name
    assert.equal(countReceived(Buffer.from([...Buffer.from('Received'), 0xc2, 0x3a, 0x20, 0x61, 0x0d, 0x0a])), 0);
  });
});

describe('smtp-server internals check', () => {
  test('passes on the installed version', () => assert.doesNotThrow(() => assertSmtpServerInternals()));
  test('fails fast, naming what is missing', () => {
    const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
    const saved = proto._parseAddressCommand;
    delete proto._parseAddressCommand;
    try {
      assert.throws(
        () => assertSmtpServerInternals(),
        (err: unknown) => err instanceof GatewayError && err.code === 'PG_SMTP_INTERNALS' && /_parseAddressCommand/.test(err.message),
      );
    } finally {
      proto._parseAddressCommand = saved;
    }
  });
});
