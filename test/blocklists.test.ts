/**
 * Connection-time filters (docs/blocklists.md): smtp.clients.deny and DNS
 * block lists served by a real DNS server of the test's own (UDP on
 * loopback), with real SMTP clients from several 127.0.0.0/8 addresses and
 * through a PROXY-protocol listener.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { listFiles, startGateway, type TestGateway } from './helpers/gateway.js';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';
import { listedName, TestDnsServer } from './helpers/dns-server.js';
import { answerMatcher, DnsblChecker, dnsblQueryName, sanitizeReason, validateAnswerEntry, validateDnsServer, type DnsblZone } from '../src/net/dnsbl.js';
import { validateConfig } from '../src/config/load.js';
import { ConfigError } from '../src/config/errors.js';

const ZONE = 'bl.test';
const ROUTES = [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }];

/** Greets from `local` and returns the greeting reply. */
async function connectFrom(port: number, local: string): Promise<{ c: RawSmtp; greeting: Awaited<ReturnType<RawSmtp['read']>> }> {
  const c = await RawSmtp.connect(port, '127.0.0.1', { localAddress: local });
  return { c, greeting: await c.read() };
}

/** A whole transaction from `local` to x@example.test; the DATA reply code. */
async function deliverFrom(port: number, local: string): Promise<number> {
  return (await deliverFromReply(port, local)).code;
}

async function deliverFromReply(port: number, local: string): Promise<Awaited<ReturnType<RawSmtp['read']>>> {
  const { c, greeting } = await connectFrom(port, local);
  try {
    assert.equal(greeting.code, 220, greeting.raw);
    await c.cmd('EHLO client.example');
    const { rcpt, data } = await sendMail(c, 'a@sender.example', ['x@example.test'], simpleMessage('filters'));
    assert.equal(rcpt[0]!.code, 250, rcpt[0]!.raw);
    return data!;
  } finally {
    c.close();
  }
}

/** The envelope of the stored event of the message a 250 named. */
async function storedEnvelope(tg: TestGateway, reply: string): Promise<Record<string, unknown>> {
  const id = /queued as (\S+)/.exec(reply)?.[1];
  assert.ok(id, reply);
  for (const f of (await listFiles(tg.dataDir)).filter((f) => f.endsWith('.json'))) {
    const ev = JSON.parse(await readFile(path.join(tg.dataDir, f), 'utf8')) as { data?: { envelope?: Record<string, unknown> } };
    if (ev.data?.envelope?.queueId === id) return ev.data.envelope;
  }
  throw new Error(`no stored event for ${id}`);
}

async function metric(tg: TestGateway, name: string): Promise<string> {
  return tg.gw.metrics.registry.getSingleMetricAsString(name);
}

function zoneCfg(over: Partial<DnsblZone> = {}): DnsblZone {
  return { zone: ZONE, servers: [], answers: ['127.0.0.2-127.0.0.11'], timeoutMs: 500, cacheTtlMs: 60_000, negativeCacheTtlMs: 60_000, cacheSize: 100, showReason: true, ...over };
}

describe('DNSBL query names and answers (RFC 5782)', () => {
  test('IPv4 octets reversed (§2.1); IPv6 as 32 nibbles reversed (§2.4); IPv4-mapped queried as IPv4', () => {
    assert.equal(dnsblQueryName('192.0.2.99', 'bl.example'), '99.2.0.192.bl.example');
    // The example of RFC 5782 §2.4.
    assert.equal(
      dnsblQueryName('2001:db8:1:2:3:4:567:89ab', 'ugly.example.com'),
      'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com',
    );
    assert.equal(dnsblQueryName('2001:DB8::1', 'z'), `1.${'0.'.repeat(23)}8.b.d.0.1.0.0.2.z`);
    assert.equal(dnsblQueryName('::ffff:192.0.2.99', 'z'), '99.2.0.192.z');
    assert.equal(dnsblQueryName('::ffff:c000:263', 'z'), '99.2.0.192.z');
    assert.equal(dnsblQueryName('fe80::1%eth0', 'z'), `1.${'0.'.repeat(28)}8.e.f.z`);
    assert.equal(dnsblQueryName('not-an-ip', 'z'), null);
  });

  test('answer codes: addresses, ranges and blocks count; others do not', () => {
    const m = answerMatcher(['127.0.0.2-127.0.0.11', '127.0.1.0/24', '127.0.0.20']);
    for (const a of ['127.0.0.2', '127.0.0.11', '127.0.1.200', '127.0.0.20']) assert.equal(m(a), true, a);
    for (const a of ['127.0.0.1', '127.0.0.12', '127.255.255.254', '192.0.2.1', '::1']) assert.equal(m(a), false, a);
    assert.equal(validateAnswerEntry('127.0.0.2-127.0.0.11'), null);
    assert.match(validateAnswerEntry('127.0.0.11-127.0.0.2')!, /greater than the last/);
    assert.match(validateAnswerEntry('127.0.0/8')!, /a\.b\.c\.d\/n/);
    assert.match(validateAnswerEntry('::1')!, /IPv4/);
    assert.equal(validateDnsServer('127.0.0.1:5353'), null);
    assert.equal(validateDnsServer('[::1]:53'), null);
    assert.equal(validateDnsServer('192.0.2.53'), null);
    assert.match(validateDnsServer('dns.example:53')!, /invalid DNS server/);
    assert.match(validateDnsServer('127.0.0.1:70000')!, /port out of range/);
  });

  test('a TXT reason is one printable line, clamped', () => {
    assert.equal(sanitizeReason('Listed\r\n250 OK\tsee  https://bl.example/q?ip=1'), 'Listed 250 OK see https://bl.example/q?ip=1');
    assert.equal(sanitizeReason('caf\u00e9 \u0000\u007f x'), 'caf x');
    assert.equal(sanitizeReason('  \r\n '), '');
    const long = sanitizeReason('x'.repeat(1000));
    assert.equal(long.length, 200);
    assert.ok(long.endsWith('...'));
  });
});

describe('DnsblChecker against a real DNS server', () => {
  let dns: TestDnsServer;
  before(async () => {
    dns = await TestDnsServer.start({
      [listedName('192.0.2.1', ZONE)]: { a: ['127.0.0.2'], txt: ['Listed: see https://bl.test/192.0.2.1\r\nInjected: 250 ok'], ttl: 300 },
      [listedName('192.0.2.2', ZONE)]: { a: ['127.255.255.254'] }, // an error code of the list, not a listing
      [listedName('192.0.2.3', ZONE)]: { a: ['127.0.0.4'], ttl: 1 }, // listed, no TXT
    });
  });
  after(() => dns.close());

  test('listed with the sanitized TXT reason; NXDOMAIN is clear; answers outside `answers` are clear and reported', async () => {
    const events: { result: string; ignored: string[] }[] = [];
    const c = new DnsblChecker(zoneCfg({ servers: [dns.address] }), { now: Date.now, onLookup: (e) => events.push(e) });
    const listed = await c.check('192.0.2.1');
    assert.deepEqual(listed, { status: 'listed', zone: ZONE, answers: ['127.0.0.2'], reason: 'Listed: see https://bl.test/192.0.2.1 Injected: 250 ok' });
    assert.deepEqual(await c.check('192.0.2.9'), { status: 'clear', zone: ZONE, answers: [] });
    assert.deepEqual(await c.check('192.0.2.2'), { status: 'clear', zone: ZONE, answers: ['127.255.255.254'] });
    assert.deepEqual(await c.check('192.0.2.3'), { status: 'listed', zone: ZONE, answers: ['127.0.0.4'], reason: null });
    assert.deepEqual(
      events.map((e) => [e.result, e.ignored]),
      [['listed', []], ['clear', []], ['clear', ['127.255.255.254']], ['listed', []]],
    );
  });

  test('cache: positive and negative answers are served without a query, a listing for at most its DNS TTL; the size is bounded', async () => {
    let now = 1_000_000;
    const hits: string[] = [];
    const c = new DnsblChecker(zoneCfg({ servers: [dns.address], cacheSize: 2, negativeCacheTtlMs: 10_000 }), { now: () => now, onCacheHit: (z) => hits.push(z) });
    const a = (ip: string) => dns.count(listedName(ip, ZONE), 'A');
    const before1 = a('192.0.2.1');
    const before9 = a('192.0.2.8');
    const before3 = a('192.0.2.3');
    await c.check('192.0.2.1');
    await c.check('192.0.2.1');
    await c.check('192.0.2.8');
    await c.check('192.0.2.8');
    assert.equal(a('192.0.2.1') - before1, 1, 'a listed answer is cached');
    assert.equal(a('192.0.2.8') - before9, 1, 'a not-listed answer is cached');
    assert.equal(hits.length, 2);
    // negativeCacheTtl passes: asked again
    now += 10_001;
    await c.check('192.0.2.8');
    assert.equal(a('192.0.2.8') - before9, 2);
    // 192.0.2.3 has TTL 1 s: kept 1 s although cacheTtl is 60 s
    await c.check('192.0.2.3');
    now += 500;
    await c.check('192.0.2.3');
    assert.equal(a('192.0.2.3') - before3, 1);
    now += 600;
    await c.check('192.0.2.3');
    assert.equal(a('192.0.2.3') - before3, 2);
    // size 2: 192.0.2.8 and .3 are in; .1 was pushed out and is asked again
    const again = a('192.0.2.1');
    await c.check('192.0.2.1');
    assert.equal(a('192.0.2.1') - again, 1);
  });

  test('concurrent checks of one address share one query', async () => {
    const c = new DnsblChecker(zoneCfg({ servers: [dns.address] }), { now: Date.now });
    const before = dns.count(listedName('192.0.2.77', ZONE), 'A');
    await Promise.all([c.check('192.0.2.77'), c.check('192.0.2.77'), c.check('192.0.2.77')]);
    assert.equal(dns.count(listedName('192.0.2.77', ZONE), 'A') - before, 1);
  });

  test('a server that never answers: timeout within the budget, not cached; SERVFAIL: error', async () => {
    const c = new DnsblChecker(zoneCfg({ servers: [dns.address], timeoutMs: 300 }), { now: Date.now });
    dns.mode = 'silent';
    try {
      const t0 = Date.now();
      const r = await c.check('192.0.2.1');
      const ms = Date.now() - t0;
      assert.equal(r.status, 'timeout');
      assert.ok(ms >= 250 && ms < 2_000, `${ms} ms`);
      dns.mode = 'servfail';
      const before = dns.count(listedName('192.0.2.1', ZONE), 'A');
      assert.equal((await c.check('192.0.2.1')).status, 'error');
      assert.equal(dns.count(listedName('192.0.2.1', ZONE), 'A') - before, 1, 'a failure is not cached: asked again');
    } finally {
      dns.mode = 'answer';
    }
    assert.equal((await c.check('192.0.2.1')).status, 'listed');
  });
});

describe('configuration of the connection-time filters', () => {
  const problems = (smtp: Record<string, unknown>): string[] => {
    try {
      validateConfig({ smtp, routes: ROUTES }, { hostname: 'mx.test' });
      return [];
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      return err.message.split('\n');
    }
  };

  test('defaults, and every bad entry reported with its path', () => {
    const cfg = validateConfig({ smtp: { dnsbl: [{ zone: 'Zen.Example.' }] }, routes: ROUTES }, { hostname: 'mx.test' });
    assert.deepEqual(cfg.smtp.clients.deny, []);
    assert.deepEqual(cfg.smtp.dnsbl[0], {
      zone: 'zen.example',
      action: 'reject-rcpt',
      answers: ['127.0.0.2-127.0.0.255'],
      servers: [],
      timeout: 2_000,
      cacheTtl: 300_000,
      negativeCacheTtl: 60_000,
      cacheSize: 10_000,
      showReason: true,
    });
    const p = problems({
      clients: { deny: ['10.0.0.0/8', '10.0.0.0/33', 'host.example'] },
      dnsbl: [
        { zone: 'bl.example', action: 'reject', answers: ['127.0.0.9-127.0.0.2'], servers: ['dns.example'] },
        { zone: 'bad zone' },
      ],
    }).join('\n');
    for (const re of [
      /smtp\.clients\.deny\[1\]: .*prefix length/,
      /smtp\.clients\.deny\[2\]: .*not an IPv4 or IPv6 address/,
      /smtp\.dnsbl\[0\]\.action: /,
      /smtp\.dnsbl\[0\]\.answers\[0\]: .*greater than the last/,
      /smtp\.dnsbl\[0\]\.servers\[0\]: .*invalid DNS server/,
      /smtp\.dnsbl\[1\]\.zone: .*not a DNS zone name/,
    ]) {
      assert.match(p, re);
    }
    assert.match(problems({ dnsbl: [{ zone: 'bl.example' }, { zone: 'BL.example.' }] }).join('\n'), /smtp\.dnsbl\[1\]\.zone: zone "bl\.example" is listed twice/);
  });
});

describe('deny list and DNS block lists over SMTP', () => {
  let dns: TestDnsServer;
  let tg: TestGateway;
  const CONNECT_ZONE = 'connect.bl.test';
  const RCPT_ZONE = 'rcpt.bl.test';
  const TAG_ZONE = 'tag.bl.test';
  before(async () => {
    dns = await TestDnsServer.start({
      [listedName('127.0.0.3', CONNECT_ZONE)]: { a: ['127.0.0.2'], txt: ['Blocked\r\nsee https://connect.bl.test/?127.0.0.3'] },
      [listedName('127.0.0.4', RCPT_ZONE)]: { a: ['127.0.0.10'], txt: ['Spam source'] },
      [listedName('127.0.0.5', TAG_ZONE)]: { a: ['127.0.0.2'] },
    });
    tg = await startGateway({
      smtp: {
        clients: { deny: ['127.0.0.2', '127.0.9.0/24'] },
        dnsbl: [
          { zone: CONNECT_ZONE, action: 'reject-connect', servers: [dns.address] },
          { zone: RCPT_ZONE, action: 'reject-rcpt', servers: [dns.address], answers: ['127.0.0.10'] },
          { zone: TAG_ZONE, action: 'tag', servers: [dns.address] },
        ],
      },
      domains: ['example.test'],
      routes: ROUTES,
    });
  });
  after(async () => {
    await tg.close();
    await dns.close();
  });

  test('a denied client gets 554 5.7.1 instead of the greeting, 503 until QUIT, then 221 (RFC 5321 §3.1); logged and counted', async () => {
    for (const local of ['127.0.0.2', '127.0.9.7']) {
      const { c, greeting } = await connectFrom(tg.port, local);
      assert.equal(greeting.code, 554, greeting.raw);
      assert.equal(greeting.raw, `554 5.7.1 mx.test.local Service unavailable: client [${local}] is denied access\r\n`);
      const ehlo = await c.cmd('EHLO client.example');
      assert.equal(ehlo.raw, '503 5.5.1 Bad sequence of commands: no SMTP service here, send QUIT\r\n');
      assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 503);
      assert.equal((await c.cmd('QUIT')).raw, '221 2.0.0 mx.test.local closing connection\r\n');
      await c.waitClosed();
    }
    assert.ok(tg.logs.some((l) => l.code === 'PG_CLIENT_DENIED' && l.client === '127.0.9.7'), 'a log line names the client');
    assert.match(await metric(tg, 'postgate_client_refusals_total'), /reason="deny",zone="",stage="connect"} 2/);
    // No DNS query for a denied client: the deny list comes first.
    assert.equal(dns.count(listedName('127.0.0.2', CONNECT_ZONE)), 0);
  });

  test('a refused client that never sends QUIT is cut off after a few commands', async () => {
    const { c, greeting } = await connectFrom(tg.port, '127.0.0.2');
    assert.equal(greeting.code, 554);
    c.write('NOOP\r\n'.repeat(20));
    await c.waitClosed();
  });

  test('a client listed by a reject-connect zone gets 554 5.7.1 naming the zone and its sanitized reason; another client is served', async () => {
    const { c, greeting } = await connectFrom(tg.port, '127.0.0.3');
    assert.equal(
      greeting.raw,
      `554 5.7.1 mx.test.local Service unavailable: client [127.0.0.3] blocked using ${CONNECT_ZONE}; Blocked see https://connect.bl.test/?127.0.0.3\r\n`,
    );
    assert.equal((await c.cmd('QUIT')).code, 221);
    c.close();
    assert.equal(await deliverFrom(tg.port, '127.0.0.1'), 250);
    assert.match(await metric(tg, 'postgate_client_refusals_total'), new RegExp(`reason="dnsbl",zone="${CONNECT_ZONE.replace(/\./g, '\\.')}",stage="connect"} 1`));
    assert.ok(tg.logs.some((l) => l.code === 'PG_DNSBL_LISTED' && l.client === '127.0.0.3' && l.zone === CONNECT_ZONE));
  });

  test('a client listed by a reject-rcpt zone is greeted, refused 550 5.7.1 per recipient, and still reaches postmaster and abuse', async () => {
    const { c, greeting } = await connectFrom(tg.port, '127.0.0.4');
    try {
      assert.equal(greeting.code, 220, greeting.raw);
      assert.equal((await c.cmd('EHLO client.example')).code, 250);
      const first = await sendMail(c, 'a@sender.example', ['x@example.test', 'nobody@other.example', 'postmaster@example.test', 'Postmaster'], simpleMessage('to postmaster'));
      assert.equal(first.rcpt[0]!.raw, `550 5.7.1 <x@example.test>: Recipient address rejected: client [127.0.0.4] blocked using ${RCPT_ZONE}; Spam source\r\n`);
      // refused before routing: a domain not served gets the same answer (nothing to probe)
      assert.match(first.rcpt[1]!.raw, /^550 5\.7\.1 <nobody@other\.example>: .*blocked using/);
      assert.equal(first.rcpt[2]!.code, 250, first.rcpt[2]!.raw);
      assert.equal(first.rcpt[3]!.code, 250, first.rcpt[3]!.raw);
      assert.equal(first.data?.code, 250, first.data?.raw);
      assert.deepEqual((await storedEnvelope(tg, first.data!.text)).dnsbl, [{ zone: RCPT_ZONE, answers: ['127.0.0.10'] }]);
      // abuse@ is another route's recipient here, so its own transaction
      const second = await sendMail(c, 'a@sender.example', ['abuse@example.test', 'y@example.test'], simpleMessage('to abuse'));
      assert.equal(second.rcpt[0]!.code, 250, second.rcpt[0]!.raw);
      assert.equal(second.rcpt[1]!.code, 550, second.rcpt[1]!.raw);
      assert.equal(second.data?.code, 250, second.data?.raw);
    } finally {
      c.close();
    }
    assert.match(await metric(tg, 'postgate_client_refusals_total'), new RegExp(`zone="${RCPT_ZONE.replace(/\./g, '\\.')}",stage="rcpt"} 3`));
    // another client is served
    assert.equal(await deliverFrom(tg.port, '127.0.0.1'), 250);
  });

  test('a tag zone logs, counts and names the listing in the event: the listed client is served', async () => {
    const data = await deliverFromReply(tg.port, '127.0.0.5');
    assert.equal(data.code, 250, data.raw);
    assert.deepEqual((await storedEnvelope(tg, data.text)).dnsbl, [{ zone: TAG_ZONE, answers: ['127.0.0.2'] }]);
    // a client no list lists has no dnsbl field
    const clean = await deliverFromReply(tg.port, '127.0.0.1');
    assert.equal((await storedEnvelope(tg, clean.text)).dnsbl, undefined);
    assert.ok(tg.logs.some((l) => l.client === '127.0.0.5' && l.zone === TAG_ZONE && /tag only/.test(String(l.msg))));
    assert.match(await metric(tg, 'postgate_dnsbl_lookups_total'), new RegExp(`zone="${TAG_ZONE.replace(/\./g, '\\.')}",result="listed"} 1`));
    assert.equal(dns.count(listedName('127.0.0.5', TAG_ZONE), 'TXT'), 0, 'a tag zone asks for no TXT record');
  });

  test('the cache: a second connection of a client makes no second query', async () => {
    const name = listedName('127.0.0.6', RCPT_ZONE);
    const before = dns.count(name, 'A');
    assert.equal(await deliverFrom(tg.port, '127.0.0.6'), 250);
    assert.equal(await deliverFrom(tg.port, '127.0.0.6'), 250);
    assert.equal(dns.count(name, 'A') - before, 1);
    // the listed client too: its second connection is refused from the cache
    const listed = listedName('127.0.0.3', CONNECT_ZONE);
    const was = dns.count(listed, 'A');
    const { c, greeting } = await connectFrom(tg.port, '127.0.0.3');
    c.close();
    assert.equal(greeting.code, 554);
    assert.equal(dns.count(listed, 'A') - was, 0);
    assert.match(await metric(tg, 'postgate_dnsbl_cache_hits_total'), /postgate_dnsbl_cache_hits_total\{zone="connect\.bl\.test"\} [1-9]/);
  });
});

describe('DNS block lists: timeouts fail open', () => {
  let dns: TestDnsServer;
  let tg: TestGateway;
  before(async () => {
    dns = await TestDnsServer.start({ [listedName('127.0.0.7', ZONE)]: { a: ['127.0.0.2'] } });
    dns.mode = 'silent';
    tg = await startGateway({
      smtp: {
        dnsbl: [
          { zone: ZONE, action: 'reject-connect', servers: [dns.address], timeout: 400 },
          { zone: `rcpt.${ZONE}`, action: 'reject-rcpt', servers: [dns.address], timeout: 400 },
        ],
        // A pause longer than the timeout: the session starts after every lookup has failed.
        earlyTalker: { mode: 'pause', delay: 600 },
      },
      routes: ROUTES,
    });
  });
  after(async () => {
    await tg.close();
    await dns.close();
  });

  test('a DNS server that never answers: the listed client is greeted after the timeout and its mail accepted; the failures are counted and logged', async () => {
    const t0 = Date.now();
    assert.equal(await deliverFrom(tg.port, '127.0.0.7'), 250);
    const ms = Date.now() - t0;
    assert.ok(ms >= 350 + 600, `the greeting waited for the lookup, then the pause (${ms} ms)`);
    assert.ok(dns.count(listedName('127.0.0.7', ZONE), 'A') >= 1, 'the server was asked');
    // the session's RCPT uses the lookup started at connect: one query, one timeout, not two
    assert.equal(dns.count(listedName('127.0.0.7', `rcpt.${ZONE}`), 'A'), 1);
    const m = await metric(tg, 'postgate_dnsbl_lookups_total');
    assert.match(m, /zone="bl\.test",result="timeout"} [1-9]/);
    assert.match(m, /zone="rcpt\.bl\.test",result="timeout"} [1-9]/);
    assert.ok(tg.logs.some((l) => l.code === 'PG_DNSBL_LOOKUP' && l.zone === ZONE));
    assert.match(await metric(tg, 'postgate_dnsbl_lookup_duration_seconds'), /postgate_dnsbl_lookup_duration_seconds_count\{zone="bl\.test"\} [1-9]/);
  });
});

describe('DNS block lists behind a load balancer (PROXY protocol)', () => {
  let dns: TestDnsServer;
  let tg: TestGateway;
  before(async () => {
    dns = await TestDnsServer.start({
      // The balancer's own address is listed too: it must not be the one looked up.
      [listedName('127.0.0.1', ZONE)]: { a: ['127.0.0.2'] },
      [listedName('203.0.113.7', ZONE)]: { a: ['127.0.0.2'], txt: ['listed proxied client'] },
      // 2001:db8::99 in nibble form (RFC 5782 §2.4)
      [`9.9.0.0.${'0.'.repeat(20)}8.b.d.0.1.0.0.2.${ZONE}`]: { a: ['127.0.0.3'] },
    });
    tg = await startGateway({
      listeners: [{ name: 'lb', role: 'mx', listen: '127.0.0.1:0', proxyProtocol: { trustedSources: ['127.0.0.0/8'] } }],
      smtp: { clients: { deny: ['198.51.100.0/24'] }, dnsbl: [{ zone: ZONE, action: 'reject-connect', servers: [dns.address] }] },
      routes: ROUTES,
    });
  });
  after(async () => {
    await tg.close();
    await dns.close();
  });

  const through = async (client: string) => {
    const c = await RawSmtp.connect(tg.port, '127.0.0.1', { preface: `PROXY TCP4 ${client} 192.0.2.1 40000 25\r\n` });
    return { c, greeting: await c.read() };
  };

  test('the address in the PROXY header is the one looked up and refused; the balancer\'s own is not', async () => {
    const listed = await through('203.0.113.7');
    assert.equal(listed.greeting.raw, `554 5.7.1 mx.test.local Service unavailable: client [203.0.113.7] blocked using ${ZONE}; listed proxied client\r\n`);
    listed.c.close();
    const denied = await through('198.51.100.20');
    assert.equal(denied.greeting.code, 554);
    assert.match(denied.greeting.text, /client \[198\.51\.100\.20\] is denied access/);
    denied.c.close();
    // another client through the same balancer (whose own address is listed) is served
    const ok = await through('203.0.113.8');
    try {
      assert.equal(ok.greeting.code, 220, ok.greeting.raw);
      await ok.c.cmd('EHLO relay.example');
      const { data } = await sendMail(ok.c, 'a@sender.example', ['x@example.test'], simpleMessage('proxied'));
      assert.equal(data?.code, 250);
    } finally {
      ok.c.close();
    }
    // an IPv6 client from a v1 TCP6 header, looked up by its nibbles
    const c6 = await RawSmtp.connect(tg.port, '127.0.0.1', { preface: 'PROXY TCP6 2001:db8::99 2001:db8::1 40000 25\r\n' });
    const g6 = await c6.read();
    c6.close();
    assert.match(g6.raw, /^554 5\.7\.1 mx\.test\.local Service unavailable: client \[2001:db8::99\] blocked using bl\.test\r\n$/);
    assert.equal(dns.count(listedName('203.0.113.7', ZONE), 'A'), 1);
    assert.equal(dns.count(listedName('127.0.0.1', ZONE), 'A'), 0, 'the balancer\'s address was never looked up');
  });
});
