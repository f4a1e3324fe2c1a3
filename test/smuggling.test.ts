/**
 * SMTP smuggling: only <CRLF>.<CRLF> ends DATA (RFC 5321 §4.1.1.4). For each
 * end-of-data look-alike a smuggling attack uses, sent in one write and split
 * across TCP segments, exactly one message is accepted and the "smuggled"
 * commands stay inside it as text. With bareLineEndings "reject" the message
 * is refused instead.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { RawSmtp } from './helpers/smtp-client.js';
import { startGateway, listFiles, type TestGateway } from './helpers/gateway.js';

const VARIANTS: Record<string, string> = {
  'LF.LF': '\n.\n',
  'LF.CRLF': '\n.\r\n',
  'CRLF.LF': '\r\n.\n',
  'CR.CR': '\r.\r',
  'CRLF.CR': '\r\n.\r',
  'CR.CRLF': '\r.\r\n',
  'LF.CR': '\n.\r',
};

const SMUGGLED = 'MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nwire the money\r\n';

let nonce = 0;
function attack(variant: string): string {
  // a unique header per run: identical messages would be deduplicated (same delivery id)
  return `Subject: innocent\r\nX-Run: ${++nonce}\r\n\r\nhello${variant}${SMUGGLED}.\r\n`;
}

const tick = () => new Promise((r) => setTimeout(r, 10));

async function runAttack(tg: TestGateway, variant: string, split: boolean): Promise<{ codes: number[]; stored: string[] }> {
  const before = new Set(await listFiles(tg.dataDir));
  const c = await RawSmtp.connect(tg.port);
  await c.read();
  await c.cmd('EHLO attacker.example');
  assert.equal((await c.cmd('MAIL FROM:<a@b.example>')).code, 250);
  assert.equal((await c.cmd('RCPT TO:<x@example.test>')).code, 250);
  assert.equal((await c.cmd('DATA')).code, 354);
  const payload = attack(variant);
  if (split) {
    (c.socket as net.Socket).setNoDelay(true);
    // cut inside the look-alike and around it, one segment per piece
    const at = payload.indexOf(variant);
    const cuts = [at, at + 1, at + variant.length - 1, at + variant.length, payload.length];
    let from = 0;
    for (const cut of cuts) {
      if (cut > from) c.write(payload.slice(from, cut));
      from = cut;
      await tick();
    }
  } else {
    c.write(payload);
  }
  const codes: number[] = [];
  codes.push((await c.read()).code);
  // anything else the server says before QUIT's 221 would be a reply to a smuggled command
  const quit = await c.cmd('QUIT');
  codes.push(quit.code);
  const added = (await listFiles(tg.dataDir)).filter((f) => !before.has(f) && f.endsWith('.eml'));
  const stored = await Promise.all(added.map((f) => readFile(path.join(tg.dataDir, f), 'latin1')));
  return { codes, stored };
}

describe('SMTP smuggling', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startGateway({ routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }] });
  });
  after(() => tg.close());

  for (const [name, variant] of Object.entries(VARIANTS)) {
    for (const split of [false, true]) {
      test(`${name}${split ? ', split across segments' : ''}: one message, the smuggled commands stay inside it`, async () => {
        const { codes, stored } = await runAttack(tg, variant, split);
        assert.deepEqual(codes, [250, 221], 'one 250 for the one message, then QUIT');
        assert.equal(stored.length, 1, 'exactly one message stored');
        assert.ok(stored[0]!.includes('Subject: innocent'));
        assert.ok(stored[0]!.includes('MAIL FROM:<ceo@example.test>'), 'smuggled text is part of the first message');
        assert.ok(stored[0]!.includes(`hello${variant}`), 'bytes kept as received (bareLineEndings: accept)');
      });
    }
  }
});

describe('SMTP smuggling with bareLineEndings: reject', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startGateway({ smtp: { bareLineEndings: 'reject' }, routes: [{ recipients: ['*@example.test'], targets: [{ type: 'local' }] }] });
  });
  after(() => tg.close());

  for (const [name, variant] of Object.entries(VARIANTS)) {
    test(`${name}: refused with 554 5.6.0, nothing stored`, async () => {
      const { codes, stored } = await runAttack(tg, variant, true);
      assert.deepEqual(codes, [554, 221]);
      assert.equal(stored.length, 0);
    });
  }

  test('a clean message is accepted', async () => {
    const c = await RawSmtp.connect(tg.port);
    await c.read();
    await c.cmd('EHLO clean.example');
    await c.cmd('MAIL FROM:<a@b.example>');
    await c.cmd('RCPT TO:<x@example.test>');
    await c.cmd('DATA');
    c.write('Subject: clean\r\n\r\nline\r\n.\r\n');
    assert.equal((await c.read()).code, 250);
    c.close();
  });
});
