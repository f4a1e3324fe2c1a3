/**
 * smtp.reverseDns: the client's host name is a forward-confirmed PTR name
 * (RFC 8601 §3 iprev), looked up with an injected resolver serving fixture
 * records; it appears in the Received header and envelope.clientHostname.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { confirmedHostname, reverseName } from '../src/net/rdns.js';
import { startGateway } from './helpers/gateway.js';
import { startReceiver } from './helpers/receiver.js';
import { RawSmtp, sendMail, simpleMessage } from './helpers/smtp-client.js';

function fixture(
  records: Record<string, string[]>,
  delayMs = 0,
): { resolver: (name: string, rrtype: string) => Promise<unknown>; asked: string[]; answered: () => number; cancel: () => void } {
  const asked: string[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let answered = 0;
  return {
    asked,
    answered: () => answered,
    /** Drops the answers still waiting for their delay (they would keep the process alive). */
    cancel: () => timers.forEach((t) => clearTimeout(t)),
    resolver: async (name, rrtype) => {
      asked.push(`${name} ${rrtype}`);
      if (delayMs)
        await new Promise<void>((r) => {
          const t = setTimeout(() => {
            timers.delete(t);
            r();
          }, delayMs);
          timers.add(t);
        });
      answered++;
      const r = records[`${name} ${rrtype}`];
      if (!r) throw Object.assign(new Error(`queryNotFound ${name}`), { code: 'ENOTFOUND' });
      return r;
    },
  };
}

describe('reverse DNS (forward-confirmed)', () => {
  test('reverse names for IPv4 and IPv6 (RFC 3596 §2.5)', () => {
    assert.equal(reverseName('192.0.2.25'), '25.2.0.192.in-addr.arpa');
    assert.equal(reverseName('2001:db8::1'), `1.0.0.0.${'0.'.repeat(20)}8.b.d.0.1.0.0.2.ip6.arpa`);
    assert.equal(reverseName('not an ip'), null);
  });

  test('a PTR name is kept only when it resolves back to the client', async () => {
    const ok = fixture({ '25.2.0.192.in-addr.arpa PTR': ['Mail.Example.COM.'], 'mail.example.com A': ['192.0.2.25'] });
    assert.equal(await confirmedHostname('192.0.2.25', 1000, ok.resolver), 'mail.example.com');
    const forged = fixture({ '25.2.0.192.in-addr.arpa PTR': ['mail.bank.example'], 'mail.bank.example A': ['198.51.100.7'] });
    assert.equal(await confirmedHostname('192.0.2.25', 1000, forged.resolver), null, 'the name does not point back: not used');
    const second = fixture({ '25.2.0.192.in-addr.arpa PTR': ['a.example', 'b.example'], 'b.example A': ['192.0.2.25'] });
    assert.equal(await confirmedHostname('::ffff:192.0.2.25', 1000, second.resolver), 'b.example', 'IPv4-mapped address, second PTR confirmed');
    assert.equal(await confirmedHostname('192.0.2.25', 1000, fixture({}).resolver), null, 'no PTR');
    // The slow resolver answers after a minute: only the 100 ms timeout can end the wait before that.
    const slow = fixture({ '25.2.0.192.in-addr.arpa PTR': ['mail.example.com'], 'mail.example.com A': ['192.0.2.25'] }, 60_000);
    try {
      assert.equal(await confirmedHostname('192.0.2.25', 100, slow.resolver), null, 'past the timeout: left out');
      assert.deepEqual(slow.asked, ['25.2.0.192.in-addr.arpa PTR']);
      assert.equal(slow.answered(), 0, 'the timeout bounds the wait: the lookup returned before the resolver answered');
    } finally {
      slow.cancel();
    }
  });

  test('the Received header and envelope.clientHostname carry the confirmed name; without the option no lookup is made', async () => {
    const dns = fixture({ '1.0.0.127.in-addr.arpa PTR': ['client.example.test'], 'client.example.test A': ['127.0.0.1'] });
    const hook = await startReceiver(() => ({ status: 204 }));
    const on = await startGateway({ smtp: { reverseDns: { enabled: true } }, routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }] }, { dnsResolver: dns.resolver });
    const off = await startGateway({ routes: [{ recipients: ['*@example.test'], targets: [{ type: 'webhook', url: hook.url }] }] }, { dnsResolver: dns.resolver });
    try {
      for (const tg of [on, off]) {
        const c = await RawSmtp.connect(tg.port);
        await c.read();
        await c.cmd('EHLO helo.example.test');
        const { data } = await sendMail(c, 'a@b.example', ['x@example.test'], simpleMessage('rdns'));
        c.close();
        assert.equal(data?.code, 250);
      }
      const [withName, without] = hook.got.map((g) => JSON.parse(g.body.toString('utf8')).data);
      assert.equal(withName.envelope.clientHostname, 'client.example.test');
      const received = (withName.headers as Array<{ name: string; value: string }>).find((h) => h.name === 'Received')!.value;
      assert.match(received, /^from helo\.example\.test \(client\.example\.test \[127\.0\.0\.1\]\)/);
      assert.equal(without.envelope.clientHostname, undefined);
      assert.equal(dns.asked.length, 2, 'one PTR and one A lookup, both by the gateway with the option on');
    } finally {
      await on.close();
      await off.close();
      await hook.close();
    }
  });
});
