/**
 * SpamAssassin through spamd's protocol, SPAMC/1.5 (spamd(1p), the
 * protocol notes shipped with SpamAssassin): one request per connection,
 *
 *   SYMBOLS SPAMC/1.5\r\n  Content-length: <n>\r\n  [User: <name>\r\n]  \r\n  <message>
 *
 * answered with `SPAMD/1.x 0 EX_OK`, a `Spam: True|False ; <score> / <threshold>`
 * header and, after an empty line, the matched rules separated by commas.
 * A status other than 0 (EX_*) is the daemon's refusal; anything that does
 * not parse is a protocol violation (docs/scanning.md).
 *
 * Leaf module: imports only scan/.
 */
import { exchange, writeAll } from './socket.js';
import { cleanName, MAX_SYMBOLS, ScanError, type ScanInput, type Scanner, type SpamResult } from './types.js';

export interface SpamdOptions {
  id: string;
  /** host:port of spamd, or the path of its Unix socket. */
  address: string;
  /** spamd's per-user configuration name (the `User:` header); none by default. */
  user?: string | undefined;
}

export function spamdScanner(opts: SpamdOptions): Scanner {
  const name = `spamassassin ${opts.id}`;
  const user = opts.user && /^[\x21-\x7e]{1,64}$/.test(opts.user) ? `User: ${opts.user}\r\n` : '';
  return {
    id: opts.id,
    type: 'spamassassin',
    async scan(input: ScanInput): Promise<SpamResult> {
      const answer = await exchange(name, opts.address, input.timeoutMs, async (socket) => {
        await writeAll(socket, Buffer.from(`SYMBOLS SPAMC/1.5\r\nContent-length: ${input.size}\r\n${user}\r\n`, 'latin1'));
        let sent = 0;
        const body = await input.content();
        for await (const piece of (Buffer.isBuffer(body) ? [body] : body) as AsyncIterable<Buffer>) {
          sent += piece.length;
          await writeAll(socket, piece);
        }
        if (sent !== input.size) throw new ScanError('protocol', `${name}: message was ${sent} bytes, announced ${input.size}`);
      });
      return parseSpamdAnswer(name, answer);
    },
    async close() {},
  };
}

const NUMBER = '(-?\\d{1,9}(?:\\.\\d{1,6})?)';
const SPAM_HEADER = new RegExp(`^(True|False|Yes|No) ; ${NUMBER} / ${NUMBER}$`, 'i');

export function parseSpamdAnswer(name: string, answer: Buffer): SpamResult {
  const text = answer.toString('latin1');
  const headEnd = text.indexOf('\r\n\r\n');
  if (headEnd === -1) throw new ScanError('protocol', `${name}: answer without a header block`);
  const [status, ...headers] = text.slice(0, headEnd).split('\r\n');
  const st = /^SPAMD\/1\.\d (\d+) (.*)$/.exec(status ?? '');
  if (!st) throw new ScanError('protocol', `${name}: unexpected status line ${JSON.stringify((status ?? '').slice(0, 80))}`);
  if (st[1] !== '0') throw new ScanError('refused', `${name}: spamd answered ${st[1]} ${(st[2] ?? '').replace(/[^\x20-\x7e]/g, '?').slice(0, 80)}`);
  let verdict: RegExpExecArray | null = null;
  for (const h of headers) {
    const colon = h.indexOf(':');
    if (colon > 0 && h.slice(0, colon).toLowerCase() === 'spam') verdict = SPAM_HEADER.exec(h.slice(colon + 1).trim());
  }
  if (!verdict) throw new ScanError('protocol', `${name}: no readable Spam header`);
  const symbols = text
    .slice(headEnd + 4)
    .split(',')
    .map((s) => cleanName(s.trim()))
    .filter((s): s is string => s !== null)
    .slice(0, MAX_SYMBOLS);
  const spam = /^(true|yes)$/i.test(verdict[1]!);
  return {
    kind: 'spam',
    score: Number(verdict[2]),
    threshold: Number(verdict[3]),
    spam,
    scannerAction: spam ? 'spam' : 'no action',
    symbols,
    message: null,
  };
}
