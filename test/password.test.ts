import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { scryptSync } from 'node:crypto';

import { hashPassword, isPasswordHash, verifyPassword } from '../src/auth/password.js';

// Small cost for speed; one test below checks the defaults.
const FAST = { log2N: 10 } as const;
const PHC = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;

const b64 = (buf: Buffer): string => buf.toString('base64').replace(/=+$/, '');

/** A PHC string computed independently of the module under test. */
function referenceHash(password: string, salt: Buffer, ln: number, r: number, p: number, keylen = 32): string {
  const hash = scryptSync(password, salt, keylen, { N: 2 ** ln, r, p, maxmem: 256 * 1024 * 1024 });
  return `$scrypt$ln=${ln},r=${r},p=${p}$${b64(salt)}$${b64(hash)}`;
}

describe('hashPassword / verifyPassword', () => {
  test('round-trip, and a wrong password is refused', async () => {
    const stored = await hashPassword('correct horse battery staple', FAST);
    assert.equal(await verifyPassword('correct horse battery staple', stored), true);
    assert.equal(await verifyPassword('correct horse battery stapl', stored), false);
    assert.equal(await verifyPassword('Correct horse battery staple', stored), false);
    assert.equal(await verifyPassword('', stored), false);
  });

  test('PHC format: parameters, 16-byte salt and 32-byte hash in unpadded base64', async () => {
    const stored = await hashPassword('pw', { log2N: 11, r: 4, p: 2 });
    const m = PHC.exec(stored);
    assert.ok(m, stored);
    assert.deepEqual(m.slice(1, 4), ['11', '4', '2']);
    assert.equal(Buffer.from(m[4] ?? '', 'base64').length, 16);
    assert.equal(Buffer.from(m[5] ?? '', 'base64').length, 32);
    assert.ok(!stored.includes('=$') && !stored.endsWith('='), 'no base64 padding');
  });

  test('the hash is plain scrypt(UTF-8 password, raw salt), verifiable by other tools', async () => {
    const stored = await hashPassword('pässwörd ✉', FAST);
    const m = PHC.exec(stored);
    assert.ok(m);
    const salt = Buffer.from(m[4] ?? '', 'base64');
    assert.equal(stored, referenceHash('pässwörd ✉', salt, 10, 8, 3));
    // And the other way round: a hash made elsewhere verifies here.
    const foreign = referenceHash('s3cret', Buffer.from('0123456789abcdef'), 12, 8, 1);
    assert.equal(await verifyPassword('s3cret', foreign), true);
    assert.equal(await verifyPassword('s3creT', foreign), false);
  });

  test('two hashes of the same password differ (random salt) and both verify', async () => {
    const a = await hashPassword('same', FAST);
    const b = await hashPassword('same', FAST);
    assert.notEqual(a, b);
    assert.notEqual(a.split('$')[4], b.split('$')[4], 'salts differ');
    assert.equal(await verifyPassword('same', a), true);
    assert.equal(await verifyPassword('same', b), true);
  });

  test('default parameters are ln=15, r=8, p=3', async () => {
    const stored = await hashPassword('default cost');
    assert.match(stored, /^\$scrypt\$ln=15,r=8,p=3\$/);
    assert.equal(await verifyPassword('default cost', stored), true);
    assert.equal(await verifyPassword('default cost!', stored), false);
  });

  test('a tampered hash or salt is refused', async () => {
    const stored = await hashPassword('pw', FAST);
    const parts = stored.split('$');
    const flip = (text: string): string => (text[0] === 'A' ? 'B' : 'A') + text.slice(1);
    const badHash = [...parts.slice(0, 4), flip(parts[4] ?? '')].join('$');
    const badSalt = [...parts.slice(0, 3), flip(parts[3] ?? ''), parts[4]].join('$');
    assert.equal(isPasswordHash(badHash), true, 'still well-formed');
    assert.equal(await verifyPassword('pw', badHash), false);
    assert.equal(await verifyPassword('pw', badSalt), false);
    // Changing a parameter changes the derived key.
    assert.equal(await verifyPassword('pw', stored.replace('ln=10', 'ln=11')), false);
  });

  test('hashPassword rejects parameters outside the verifiable bounds', async () => {
    for (const opts of [{ log2N: 9 }, { log2N: 21 }, { log2N: 10.5 }, { r: 0 }, { r: 17 }, { p: 0 }, { p: 5 }, { log2N: 20, r: 16 }]) {
      await assert.rejects(hashPassword('pw', opts), RangeError, JSON.stringify(opts));
    }
    // The bounds themselves are accepted (cheap corners only).
    const edge = await hashPassword('pw', { log2N: 10, r: 1, p: 4 });
    assert.equal(await verifyPassword('pw', edge), true);
  });
});

/**
 * `{ value }` when `p` settles within ten microtask turns, else null (it goes
 * on and is awaited before returning). scrypt works on libuv's thread pool
 * and its result comes back through the event loop, never within a run of
 * microtasks: a verdict that settles at once computed nothing. No clock is
 * involved, so how busy the machine is cannot change the outcome.
 */
async function settlesAtOnce<T>(p: Promise<T>): Promise<{ value: T } | null> {
  let settled: { value: T } | undefined;
  const watched = p.then((value) => (settled = { value }));
  for (let i = 0; i < 10 && settled === undefined; i++) await Promise.resolve();
  const result = settled ?? null;
  await watched;
  return result;
}

describe('verifyPassword / isPasswordHash on hostile or malformed strings', () => {
  test('correct hashes with out-of-bound parameters are refused, not computed', async () => {
    const salt = Buffer.from('0123456789abcdef');
    // ln=9 is cheap to compute, so this is a genuinely correct hash that is
    // refused only because of the bound.
    const lowN = referenceHash('pw', salt, 9, 8, 1);
    assert.equal(isPasswordHash(lowN), false);
    assert.equal(await verifyPassword('pw', lowN), false);

    const valid = referenceHash('pw', salt, 10, 8, 1);
    assert.equal(await verifyPassword('pw', valid), true, 'control: in-bound parameters verify');
    assert.equal(await settlesAtOnce(verifyPassword('pw', valid)), null, 'control: a verification that runs scrypt does not settle at once');
    for (const [from, to] of [
      ['ln=10', 'ln=21'],
      ['ln=10', 'ln=64'],
      ['ln=10', 'ln=0'],
      ['r=8', 'r=17'],
      ['r=8', 'r=0'],
      ['p=1', 'p=5'],
      ['ln=10,r=8', 'ln=20,r=16'],
    ] as const) {
      const hostile = valid.replace(from, to);
      assert.notEqual(hostile, valid);
      assert.equal(isPasswordHash(hostile), false, hostile);
      assert.deepEqual(await settlesAtOnce(verifyPassword('pw', hostile)), { value: false }, `${hostile} must be refused without running scrypt`);
    }
  });

  test('malformed strings are false and never throw', async () => {
    const valid = await hashPassword('pw', FAST);
    const [, , params, salt, hash] = valid.split('$');
    const malformed: unknown[] = [
      '',
      'pw',
      '$scrypt$',
      valid.slice(0, -1) + '!',
      valid + '$',
      valid + '=',
      ' ' + valid,
      valid + '\n',
      valid.replace('$scrypt$', '$argon2id$'),
      valid.replace('$scrypt$', '$SCRYPT$'),
      `$scrypt$${params}$${salt}`,
      `$scrypt$$${salt}$${hash}`,
      `$scrypt$ln=10,p=1,r=8$${salt}$${hash}`,
      `$scrypt$ln=010,r=8,p=1$${salt}$${hash}`,
      `$scrypt$ln=10,r=8,p=1,x=1$${salt}$${hash}`,
      `$scrypt$ln=1e1,r=8,p=1$${salt}$${hash}`,
      `$scrypt$${params}$${salt}==$${hash}`,
      `$scrypt$${params}$${salt}$${hash}==`,
      `$scrypt$${params}$${(salt ?? '').replace(/[+/]/g, '-')}-_$${hash}`,
      `$scrypt$${params}$QUJD$${hash}`, // 3-byte salt
      `$scrypt$${params}$${salt}$QUJD`, // 3-byte hash
      `$scrypt$${params}$${salt}$${'A'.repeat(200)}`, // 150-byte hash
      '$scrypt$' + 'x'.repeat(10_000),
      null,
      undefined,
      42,
      {},
    ];
    for (const s of malformed) {
      assert.equal(isPasswordHash(s as string), false, String(s));
      assert.equal(await verifyPassword('pw', s as string), false, String(s));
    }
    // Control: the valid string the variants came from.
    assert.equal(isPasswordHash(valid), true);
    assert.equal(await verifyPassword('pw', valid), true);
    // A non-string password is false too, not an exception.
    assert.equal(await verifyPassword(undefined as unknown as string, valid), false);
  });
});
