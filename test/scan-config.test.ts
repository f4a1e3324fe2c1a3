/**
 * The scan configuration (docs/configuration.md "scan"): defaults, what is
 * refused at load with its path, and the policy a route gets.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, validateConfig } from '../src/config/load.js';
import { scanPolicyOf } from '../src/smtp/session.js';
import { routingTableOf } from '../src/routing/from-config.js';
import { routeRecipient } from '../src/routing/index.js';

function problems(doc: unknown): string[] {
  try {
    validateConfig(doc, { hostname: 'mx.test' });
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map((p) => `${p.path}: ${p.message}`);
  }
  return [];
}

const hook = { type: 'webhook', url: 'https://app.example.com/in' };

describe('scan configuration', () => {
  test('defaults: no scanners; tag, tempfail, breaker 5 / 30 s, timeouts per type', () => {
    const cfg = validateConfig({ scan: { scanners: [{ type: 'rspamd' }, { type: 'spamassassin' }, { type: 'clamav' }] } }, { hostname: 'mx.test' });
    assert.deepEqual(
      cfg.scan.scanners.map((s) => [s.type, 'url' in s ? s.url : s.address, s.timeout]),
      [
        ['rspamd', 'http://127.0.0.1:11333', 15_000],
        ['spamassassin', '127.0.0.1:783', 15_000],
        ['clamav', '127.0.0.1:3310', 30_000],
      ],
    );
    assert.deepEqual([cfg.scan.spam, cfg.scan.virus, cfg.scan.onError, cfg.scan.header, cfg.scan.breaker], ['tag', 'tag', 'tempfail', false, { failures: 5, cooldown: 30_000 }]);
    assert.deepEqual(validateConfig({}, { hostname: 'mx.test' }).scan.scanners, []);
  });

  test('refused with their paths: duplicate ids, quarantine without targets, templated quarantine URLs, bad addresses', () => {
    const p = problems({
      scan: { scanners: [{ type: 'clamav' }, { type: 'clamav', address: 'nowhere' }], spam: 'quarantine' },
      routes: [
        { recipients: ['*@a.test'], targets: [hook] },
        { recipients: ['*@b.test'], targets: [hook], scan: { spam: 'tag', quarantine: [{ type: 'webhook', url: 'https://q.example.com/{user}' }] } },
        { recipients: ['*@c.test'], targets: [hook], scan: { enabled: false } },
      ],
    });
    for (const want of [
      /^scan\.scanners\[1\]\.address: expected host:port or the path of a Unix socket$/,
      /^scan\.scanners\[1\]\.id: duplicate scanner id "clamav"/,
      /^routes\[0\]\.scan\.quarantine: the route quarantines/,
      /^routes\[1\]\.scan\.quarantine\[0\]\.url: a quarantine target takes no URL placeholders$/,
    ]) {
      assert.ok(p.some((x) => want.test(x)), `missing ${want} in:\n${p.join('\n')}`);
    }
    assert.ok(!p.some((x) => x.startsWith('routes[2]')), 'a route that is not scanned needs no quarantine');
  });

  test('a route\'s policy: its own over the defaults; not scanned when disabled or when no scanner is configured', () => {
    const cfg = validateConfig(
      {
        scan: { scanners: [{ type: 'rspamd' }], virus: 'reject', threshold: 12 },
        routes: [
          { name: 'a', recipients: ['*@a.test'], targets: [hook], scan: { spam: 'reject', onError: 'accept' } },
          { name: 'b', recipients: ['*@b.test'], targets: [hook], scan: { enabled: false } },
        ],
      },
      { hostname: 'mx.test' },
    );
    const table = routingTableOf(cfg);
    const routeOf = (a: string) => {
      const d = routeRecipient(table, a);
      assert.equal(d.kind, 'accept');
      return (d as Extract<typeof d, { kind: 'accept' }>).route;
    };
    assert.deepEqual(scanPolicyOf(cfg, routeOf('u@a.test')), { spam: 'reject', virus: 'reject', threshold: 12, onError: 'accept' });
    assert.equal(scanPolicyOf(cfg, routeOf('u@b.test')), null);
    assert.equal(scanPolicyOf(cfg, routeOf('postmaster@a.test')), null, 'postmaster mail is never scanned');
    const none = validateConfig({ routes: [{ recipients: ['*@a.test'], targets: [hook], scan: { spam: 'reject' } }] }, { hostname: 'mx.test' });
    assert.equal(scanPolicyOf(none, (routeRecipient(routingTableOf(none), 'u@a.test') as { route: Parameters<typeof scanPolicyOf>[1] }).route), null);
  });
  test('rspamd over milter: address and connections, defaults; the other protocol\'s fields refused with their paths', () => {
    const cfg = validateConfig({ scan: { scanners: [{ type: 'rspamd', protocol: 'milter' }, { type: 'rspamd', id: 'unix', protocol: 'milter', address: '/run/rspamd/milter.sock', connections: 2 }] } }, { hostname: 'mx.test' });
    assert.deepEqual(
      cfg.scan.scanners.map((s) => (s.type === 'rspamd' ? [s.protocol, s.address, s.connections, s.timeout] : null)),
      [
        ['milter', undefined, 8, 15_000],
        ['milter', '/run/rspamd/milter.sock', 2, 15_000],
      ],
    );
    assert.equal((validateConfig({ scan: { scanners: [{ type: 'rspamd' }] } }, { hostname: 'mx.test' }).scan.scanners[0] as { protocol: string }).protocol, 'http');
    const p = problems({
      scan: {
        scanners: [
          { type: 'rspamd', id: 'a', protocol: 'milter', socket: '/run/x.sock', password: 'p' },
          { type: 'rspamd', id: 'b', address: '127.0.0.1:11332' },
          { type: 'rspamd', id: 'c', protocol: 'milter', address: 'nowhere', connections: 0 },
          { type: 'rspamd', id: 'd', protocol: 'smtp' },
        ],
      },
    });
    for (const want of [
      /^scan\.scanners\[0\]\.socket: socket is for protocol http; the milter protocol takes address/,
      /^scan\.scanners\[0\]\.password: password is for protocol http/,
      /^scan\.scanners\[1\]\.address: address is for protocol milter/,
      /^scan\.scanners\[2\]\.address: expected host:port or the path of a Unix socket$/,
      /^scan\.scanners\[2\]\.connections: /,
      /^scan\.scanners\[3\]\.protocol: /,
    ]) {
      assert.ok(p.some((x) => want.test(x)), `missing ${want} in:\n${p.join('\n')}`);
    }
  });
});
