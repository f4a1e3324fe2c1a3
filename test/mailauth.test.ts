/**
 * src/message/mailauth.ts: SPF (MAIL FROM and HELO), DKIM, DMARC and ARC
 * verdicts against a fixture resolver (no network), DNS trouble as temperror,
 * the Authentication-Results value, and RFC 8601 §5 stripping of forged
 * Authentication-Results headers. Test messages are signed with the test-only
 * key in test/fixtures/dkim/.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { dkimSign, sealMessage } from 'mailauth';
import {
  authResultsSchema,
  formatAuthResultsHeader,
  stripOwnAuthResults,
  verifyMessage,
  type AuthResults,
  type MailAuthOptions,
} from '../src/message/mailauth.js';
import { parseHeaderBlock } from '../src/message/headers.js';
import { fixturePath } from './helpers/fixtures.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { SpillBuffer } from '../src/message/bytes.js';

const AUTHSERV = 'mx.postgate.test';
const PRIVATE_KEY = readFileSync(fixturePath('dkim', 'test-rsa2048.private.pem'));
const KEY_RECORD = readFileSync(fixturePath('dkim', 'test-rsa2048.dns.txt'), 'utf8').trim();

/** A TXT record as DNS carries it: character-strings of at most 255 bytes. */
function txt(record: string): string[] {
  const chunks: string[] = [];
  for (let i = 0; i < record.length; i += 255) chunks.push(record.slice(i, i + 255));
  return chunks;
}

const ZONE: Record<string, Record<string, unknown[]>> = {
  'example.test': { TXT: [txt('v=spf1 ip4:192.0.2.0/24 -all')] },
  'mx.example.test': { TXT: [txt('v=spf1 ip4:192.0.2.10 -all')], A: ['192.0.2.10'] },
  'sel1._domainkey.example.test': { TXT: [txt(KEY_RECORD)] },
  '_dmarc.example.test': { TXT: [txt('v=DMARC1; p=reject')] },
  '_dmarc.strict.example.test': { TXT: [txt('v=DMARC1; p=quarantine; adkim=s; aspf=s')] },
  '_dmarc.relaxed.example.test': { TXT: [txt('v=DMARC1; p=quarantine')] },
  'sel1._domainkey.signer.test': { TXT: [txt(KEY_RECORD)] },
  'nospf.test': { MX: [{ exchange: 'mx.nospf.test', priority: 10 }] },
};

function dnsError(code: string): Error {
  return Object.assign(new Error(`queryTxt ${code}`), { code });
}

/** Serves ZONE; counts queries. */
function fixtureResolver(): { resolver: NonNullable<MailAuthOptions['resolver']>; queries: string[] } {
  const queries: string[] = [];
  const resolver = async (name: string, rrtype: string) => {
    queries.push(`${rrtype} ${name}`);
    const node = ZONE[name.toLowerCase()];
    if (!node) throw dnsError('ENOTFOUND');
    const rr = node[rrtype];
    if (!rr) throw dnsError('ENODATA');
    return rr;
  };
  return { resolver, queries };
}

function message(head: string, body = 'Hello.\n'): Buffer {
  const crlf = (s: string) => s.replace(/\r?\n/g, '\r\n');
  return Buffer.from(`${crlf(head.trim())}\r\n\r\n${crlf(body)}`, 'utf8');
}

function plain(from = 'Alice <alice@example.test>'): Buffer {
  return message(`From: ${from}
To: bob@example.org
Subject: auth test
Date: Mon, 03 Mar 2025 10:00:00 +0000
Message-ID: <auth-test@example.test>`);
}

async function sign(msg: Buffer, signingDomain = 'example.test', selector = 'sel1'): Promise<Buffer> {
  // mailauth 4.13.3's typings declare top-level signingDomain/selector/privateKey, but only signatureData signs.
  // signTime is given: without it mailauth reads the clock twice, for the header it signs and for the one it
  // returns (t= rounded to the nearest second), and about one signature in a hundred came out "bad" when the
  // two readings fell on either side of a half second.
  const res = await dkimSign(msg, { signTime: new Date(), signatureData: [{ signingDomain, selector, privateKey: PRIVATE_KEY }] } as unknown as Parameters<typeof dkimSign>[1]);
  assert.deepEqual(res.errors, []);
  assert.match(res.signatures, /^DKIM-Signature: /);
  return Buffer.concat([Buffer.from(res.signatures), msg]);
}

const env = (clientAddress: string, mailFrom = 'alice@example.test', helo = 'mx.example.test') => ({ clientAddress, helo, mailFrom });

async function verify(msg: Buffer | Readable, envelope: ReturnType<typeof env>, opts: Partial<MailAuthOptions> = {}): Promise<AuthResults> {
  const res = await verifyMessage(msg, envelope, { authservId: AUTHSERV, resolver: fixtureResolver().resolver, ...opts });
  authResultsSchema.parse(res); // every result fits the published shape
  assert.ok(res.authenticationResults.startsWith(`${AUTHSERV}; `), res.authenticationResults);
  return res;
}

describe('SPF', () => {
  test('MAIL FROM pass from an address in the record', async () => {
    const r = await verify(plain(), env('192.0.2.10'));
    assert.equal(r.spf.mailFrom.result, 'pass');
    assert.equal(r.spf.mailFrom.domain, 'example.test');
    assert.match(r.authenticationResults, /; spf=pass \([^)]*\) smtp\.mailfrom=alice@example\.test;/);
  });

  test('MAIL FROM fail from an address outside it (-all)', async () => {
    const r = await verify(plain(), env('203.0.113.5'));
    assert.equal(r.spf.mailFrom.result, 'fail');
    assert.match(r.authenticationResults, /spf=fail .*smtp\.mailfrom=alice@example\.test/);
  });

  test('none for a domain without an SPF record', async () => {
    const r = await verify(plain(), env('192.0.2.10', 'carol@nospf.test'));
    assert.equal(r.spf.mailFrom.result, 'none');
    assert.equal(r.spf.mailFrom.domain, 'nospf.test');
  });

  test('HELO identity checked separately', async () => {
    const pass = await verify(plain(), env('192.0.2.10', 'carol@nospf.test'));
    assert.equal(pass.spf.helo.result, 'pass');
    assert.equal(pass.spf.helo.domain, 'mx.example.test');
    assert.match(pass.authenticationResults, /spf=pass \([^)]*\) smtp\.helo=mx\.example\.test/);

    const fail = await verify(plain(), env('192.0.2.11'));
    assert.equal(fail.spf.helo.result, 'fail');
    assert.equal(fail.spf.mailFrom.result, 'pass'); // 192.0.2.0/24 for example.test

    const literal = await verify(plain(), env('192.0.2.10', 'alice@example.test', '[192.0.2.10]'));
    assert.equal(literal.spf.helo.result, 'none');
  });

  test('null sender: MAIL FROM is checked as postmaster@<HELO>', async () => {
    const r = await verify(plain(), env('192.0.2.10', ''));
    assert.equal(r.spf.mailFrom.result, 'pass');
    assert.equal(r.spf.mailFrom.domain, 'mx.example.test');
    assert.match(r.authenticationResults, /smtp\.mailfrom=postmaster@mx\.example\.test/);
  });

  test('IPv4-mapped IPv6 client address', async () => {
    const r = await verify(plain(), env('::ffff:192.0.2.10'));
    assert.equal(r.spf.mailFrom.result, 'pass');
  });
});

describe('DKIM', () => {
  test('pass for a message signed with the fixture key', async () => {
    const r = await verify(await sign(plain()), env('203.0.113.5'));
    assert.equal(r.dkim.length, 1);
    assert.deepEqual(
      { domain: r.dkim[0]?.domain, selector: r.dkim[0]?.selector, result: r.dkim[0]?.result, aligned: r.dkim[0]?.aligned, algorithm: r.dkim[0]?.algorithm },
      { domain: 'example.test', selector: 'sel1', result: 'pass', aligned: true, algorithm: 'rsa-sha256' },
    );
    assert.match(r.authenticationResults, /^mx\.postgate\.test; dkim=pass header\.d=example\.test header\.i=@example\.test header\.s=sel1 header\.a=rsa-sha256 header\.b=(?:[A-Za-z0-9+]{8}|"[A-Za-z0-9+/]{8}");/);
  });

  test('a large message read as a stream from memory and a spill file: pass, and fail once a byte in the file part changes', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'postgate-dkim-'));
    try {
      const body = Array.from({ length: 40_000 }, (_, i) => `line ${i} of a long signed message`).join('\n');
      const signed = await sign(message(`From: Alice <alice@example.test>\nTo: bob@example.org\nSubject: big`, body));
      const bytesOf = async (buf: Buffer) => {
        const sb = new SpillBuffer(dir, `m${Math.random()}`, 64 * 1024);
        for (let i = 0; i < buf.length; i += 16 * 1024) sb.write(buf.subarray(i, i + 16 * 1024));
        const b = await sb.end();
        assert.equal(b.spilled, true);
        return b;
      };
      const ok = await verify((await bytesOf(signed)).stream(), env('192.0.2.25'));
      assert.equal(ok.dkim[0]?.result, 'pass');
      const altered = Buffer.from(signed);
      altered[altered.length - 100] = 0x58; // in the part that went to the file
      const bad = await verify((await bytesOf(altered)).stream(), env('192.0.2.25'));
      assert.equal(bad.dkim[0]?.result, 'fail');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('fail once the body is altered', async () => {
    const signed = await sign(plain());
    const altered = Buffer.from(signed.toString('utf8').replace('Hello.', 'Hello!'), 'utf8');
    assert.notDeepEqual(altered, signed);
    const r = await verify(altered, env('203.0.113.5'));
    assert.equal(r.dkim[0]?.result, 'fail');
    assert.match(r.dkim[0]?.info ?? '', /body hash/);
    assert.match(r.authenticationResults, /dkim=fail \(body hash did not verify\) header\.d=example\.test/);
  });

  test('fail once a signed header is altered', async () => {
    const signed = await sign(plain());
    const altered = Buffer.from(signed.toString('utf8').replace('Subject: auth test', 'Subject: auth TEST'), 'utf8');
    const r = await verify(altered, env('203.0.113.5'));
    assert.equal(r.dkim[0]?.result, 'fail');
  });

  test('no signature: [] and dkim=none', async () => {
    const r = await verify(plain(), env('192.0.2.10'));
    assert.deepEqual(r.dkim, []);
    assert.match(r.authenticationResults, /^mx\.postgate\.test; dkim=none \(message not signed\);/);
  });

  test('no key published for the selector is not a pass', async () => {
    const r = await verify(await sign(plain(), 'example.test', 'missing'), env('203.0.113.5'));
    assert.equal(r.dkim[0]?.selector, 'missing');
    assert.notEqual(r.dkim[0]?.result, 'pass');
    assert.equal(r.dmarc?.result, 'fail');
  });
});

describe('DMARC', () => {
  test('pass through aligned DKIM alone (SPF fails)', async () => {
    const r = await verify(await sign(plain()), env('203.0.113.5'));
    assert.equal(r.spf.mailFrom.result, 'fail');
    assert.deepEqual(r.dmarc, { result: 'pass', policy: 'reject', domain: 'example.test', info: 'p=REJECT' });
    assert.match(r.authenticationResults, /; dmarc=pass \(p=REJECT\) header\.from=example\.test$/);
  });

  test('pass through aligned SPF alone (unsigned)', async () => {
    const r = await verify(plain(), env('192.0.2.10'));
    assert.equal(r.dmarc?.result, 'pass');
  });

  test('fail with policy reject: no SPF pass, unsigned', async () => {
    const r = await verify(plain(), env('203.0.113.5'));
    assert.equal(r.dmarc?.result, 'fail');
    assert.equal(r.dmarc?.policy, 'reject');
    assert.equal(r.dmarc?.domain, 'example.test');
    assert.match(r.authenticationResults, /dmarc=fail \(p=REJECT\) header\.from=example\.test/);
  });

  test('fail when the DKIM pass is from an unaligned domain', async () => {
    const r = await verify(await sign(plain(), 'signer.test'), env('203.0.113.5', 'alice@signer.test'));
    assert.equal(r.dkim[0]?.result, 'pass');
    assert.equal(r.dkim[0]?.aligned, false);
    assert.equal(r.dmarc?.result, 'fail');
  });

  test('adkim=s: a parent-domain signature does not align; relaxed does', async () => {
    const strict = await verify(await sign(plain('a@strict.example.test')), env('203.0.113.5'));
    assert.equal(strict.dkim[0]?.result, 'pass');
    assert.equal(strict.dkim[0]?.aligned, false);
    assert.deepEqual(strict.dmarc, { result: 'fail', policy: 'quarantine', domain: 'strict.example.test', info: 'p=QUARANTINE' });

    const relaxed = await verify(await sign(plain('a@relaxed.example.test')), env('203.0.113.5'));
    assert.equal(relaxed.dkim[0]?.aligned, true);
    assert.equal(relaxed.dmarc?.result, 'pass');
  });

  test('none without a record; null without exactly one From address', async () => {
    const none = await verify(plain('c@nospf.test'), env('192.0.2.10'));
    assert.deepEqual(none.dmarc, { result: 'none', policy: null, domain: 'nospf.test' });
    const two = await verify(plain('a@example.test, b@example.test'), env('192.0.2.10'));
    assert.equal(two.dmarc, null);
    assert.doesNotMatch(two.authenticationResults, /dmarc=/);
  });
});

describe('ARC', () => {
  test('none without a chain, pass for a chain sealed with the fixture key', async () => {
    const unsealed = await verify(await sign(plain()), env('192.0.2.10'));
    assert.deepEqual(unsealed.arc, { result: 'none' });
    assert.match(unsealed.authenticationResults, /; arc=none;/);

    const signed = await sign(plain());
    const seal = await sealMessage(signed, {
      signingDomain: 'example.test',
      selector: 'sel1',
      privateKey: PRIVATE_KEY,
      authResults: `relay.example.test; dkim=pass header.d=example.test; spf=pass smtp.mailfrom=alice@example.test`,
      cv: 'none',
    } as Parameters<typeof sealMessage>[1]);
    const sealed = await verify(Buffer.concat([seal, signed]), env('203.0.113.5'));
    assert.equal(sealed.arc?.result, 'pass', JSON.stringify(sealed.arc));
    assert.equal(sealed.arc?.instance, 1);
  });
});

describe('DNS trouble', () => {
  test('a resolver that throws gives temperror verdicts, not an exception', async () => {
    const broken = async () => {
      throw new Error('resolver exploded');
    };
    const r = await verify(await sign(plain()), env('192.0.2.10'), { resolver: broken });
    assert.equal(r.spf.mailFrom.result, 'temperror');
    assert.equal(r.spf.helo.result, 'temperror');
    assert.equal(r.dkim[0]?.result, 'temperror');
    assert.equal(r.dmarc?.result, 'temperror');
    assert.equal(r.dmarc?.policy, null);
    assert.match(r.authenticationResults, /dkim=temperror/);
  });

  test('SERVFAIL-style codes and garbage answers are temperror too', async () => {
    const servfail = async () => {
      throw dnsError('ESERVFAIL');
    };
    const r1 = await verify(plain(), env('192.0.2.10'), { resolver: servfail });
    assert.equal(r1.spf.mailFrom.result, 'temperror');
    const garbage = async () => 'not an array';
    const r2 = await verify(plain(), env('192.0.2.10'), { resolver: garbage });
    assert.equal(r2.spf.mailFrom.result, 'temperror');
    assert.equal(r2.dmarc?.result, 'temperror');
  });

  test('a resolver that never answers times out within the budget', async () => {
    const hang = () => new Promise<never>(() => {});
    const signed = await sign(plain());
    const started = performance.now();
    // 100 ms: without the budget it would never end, with the default one
    // (10 s) after 10 s; the bound leaves 20 budgets for a busy machine.
    const r = await verify(signed, env('192.0.2.10'), { resolver: hang, timeoutMs: 100 });
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 2000, `took ${elapsed} ms`);
    assert.equal(r.spf.mailFrom.result, 'temperror');
    assert.equal(r.spf.helo.result, 'temperror');
    assert.equal(r.dkim[0]?.result, 'temperror');
    assert.equal(r.dmarc?.result, 'temperror');
  });

  test('one slow name only spoils what depends on it', async () => {
    const { resolver } = fixtureResolver();
    const slowDmarc = (name: string, rrtype: string) => (name.startsWith('_dmarc.') ? new Promise<never>(() => {}) : resolver(name, rrtype));
    const r = await verify(await sign(plain()), env('192.0.2.10'), { resolver: slowDmarc, timeoutMs: 300 });
    assert.equal(r.spf.mailFrom.result, 'pass');
    assert.equal(r.dkim[0]?.result, 'pass');
    assert.equal(r.dmarc?.result, 'temperror');
  });

  test('empty authserv-id is a programming error', async () => {
    await assert.rejects(verifyMessage(plain(), env('192.0.2.10'), { authservId: ' ', resolver: fixtureResolver().resolver }), TypeError);
  });
});

describe('Authentication-Results header', () => {
  test('formatAuthResultsHeader folds at top-level semicolons and unfolds back to the value', async () => {
    const r = await verify(await sign(plain()), env('192.0.2.10'));
    const line = formatAuthResultsHeader(r.authenticationResults);
    assert.ok(line.startsWith(`Authentication-Results: ${AUTHSERV};\r\n dkim=pass`), line);
    assert.ok(line.endsWith('\r\n'));
    assert.ok(line.split('\r\n').every((l) => l.length < 998));
    const fields = parseHeaderBlock(Buffer.from(`${line}\r\n`));
    assert.deepEqual(fields, [{ name: 'Authentication-Results', value: r.authenticationResults }]);
    // semicolons inside comments and quoted strings do not fold
    assert.equal(formatAuthResultsHeader('a; x=y (c; d) z="q; r"; w=1'), 'Authentication-Results: a;\r\n x=y (c; d) z="q; r";\r\n w=1\r\n');
  });

  test('50 verifications with the fixture resolver: the same verdicts and DNS queries each time (timing printed, not asserted)', async (t) => {
    const signed = await sign(plain());
    const first = fixtureResolver();
    const expected = await verifyMessage(signed, env('192.0.2.10'), { authservId: AUTHSERV, resolver: first.resolver });
    assert.match(expected.authenticationResults, /dkim=pass/);
    assert.ok(first.queries.length > 0);
    const n = 50;
    let same = 0;
    const started = performance.now();
    for (let i = 0; i < n; i++) {
      const f = fixtureResolver();
      const r = await verifyMessage(signed, env('192.0.2.10'), { authservId: AUTHSERV, resolver: f.resolver });
      if (r.authenticationResults === expected.authenticationResults && JSON.stringify(f.queries.sort()) === JSON.stringify([...first.queries].sort())) same++;
    }
    const per = (performance.now() - started) / n;
    t.diagnostic(`verifyMessage: ${per.toFixed(2)} ms per signed message (fixture resolver, ${n} runs; measured, not asserted)`);
    assert.equal(same, n);
  });
});

describe('stripOwnAuthResults', () => {
  const head = [
    'Received: from relay.example.org by mx.postgate.test; Mon, 3 Mar 2025 10:00:00 +0000\r\n',
    'Authentication-Results: mx.postgate.test; spf=pass smtp.mailfrom=forged@example.test\r\n',
    'Authentication-Results: relay.example.org; dkim=pass header.d=example.org\r\n',
    'Authentication-Results: (forged) MX.Postgate.Test 1;\r\n\tdkim=pass header.d=bank.test;\r\n   dmarc=pass\r\n',
    'ARC-Authentication-Results: i=1; mx.postgate.test; spf=pass\r\n',
    'Authentication-Results: mx.postgate.test.evil.test; none\r\n',
    'Authentication-Results: "mx.postgate.test"; none\r\n',
    'X-Note: Authentication-Results: mx.postgate.test; none\r\n',
    'Subject: hi\r\n',
  ];
  const body = '\r\nAuthentication-Results: mx.postgate.test; in the body\r\n';

  test('removes only our authserv-id, folded and quoted forms included, and keeps every other byte', () => {
    const input = Buffer.from(head.join('') + body, 'latin1');
    const { message: out, removed } = stripOwnAuthResults(input, 'mx.postgate.test');
    assert.equal(removed, 3);
    const expected = [head[0], head[2], head[4], head[5], head[7], head[8]].join('') + body;
    assert.equal(out.toString('latin1'), expected);
    assert.deepEqual(out, Buffer.from(expected, 'latin1'));
  });

  test('LF line ends and 8-bit bytes elsewhere are kept as they were', () => {
    const input = Buffer.concat([
      Buffer.from('Authentication-Results: mx.postgate.test;\n dkim=pass\nSubject: caf'),
      Buffer.from([0xc3, 0xa9, 0xff]),
      Buffer.from('\n\nbody\n'),
    ]);
    const { message: out, removed } = stripOwnAuthResults(input, 'MX.POSTGATE.TEST');
    assert.equal(removed, 1);
    assert.deepEqual(out, input.subarray(input.indexOf('Subject:')));
  });

  test('a message without our header comes back unchanged', () => {
    const input = Buffer.from(head[2]! + head[4]! + body, 'latin1');
    const { message: out, removed } = stripOwnAuthResults(input, AUTHSERV);
    assert.equal(removed, 0);
    assert.equal(out, input);
  });

  test('a header block without a body, our header last and unterminated', () => {
    const input = Buffer.from('Subject: x\r\nAuthentication-Results: mx.postgate.test; none', 'latin1');
    const { message: out, removed } = stripOwnAuthResults(input, AUTHSERV);
    assert.equal(removed, 1);
    assert.equal(out.toString('latin1'), 'Subject: x\r\n');
  });
});
