/**
 * ClamAV through clamd's INSTREAM command (clamd(8)): `zINSTREAM\0`, then
 * the message in chunks, each preceded by its length as a 4-byte unsigned
 * integer in network byte order, ended by a zero-length chunk. clamd answers
 * one NUL-terminated line: `stream: OK`, `stream: <signature> FOUND`, or
 * `<reason> ERROR` (for instance past its StreamMaxLength). Anything else is
 * a protocol violation (docs/scanning.md).
 *
 * Leaf module: imports only scan/.
 */
import { exchange, writeAll } from './socket.js';
import { cleanName, ScanError, type ScanInput, type Scanner, type VirusResult } from './types.js';

/** Chunk size of INSTREAM; clamd reads chunks of any size up to its StreamMaxLength. */
const CHUNK = 64 * 1024;

export interface ClamdOptions {
  id: string;
  /** host:port of clamd's TCPSocket, or the path of its LocalSocket. */
  address: string;
}

export function clamdScanner(opts: ClamdOptions): Scanner {
  const name = `clamav ${opts.id}`;
  return {
    id: opts.id,
    type: 'clamav',
    async scan(input: ScanInput): Promise<VirusResult> {
      const answer = await exchange(name, opts.address, input.timeoutMs, async (socket) => {
        await writeAll(socket, Buffer.from('zINSTREAM\0', 'latin1'));
        const body = await input.content();
        for await (const piece of (Buffer.isBuffer(body) ? [body] : body) as AsyncIterable<Buffer>) {
          for (let i = 0; i < piece.length; i += CHUNK) {
            const part = piece.subarray(i, i + CHUNK);
            const frame = Buffer.allocUnsafe(4);
            frame.writeUInt32BE(part.length, 0);
            await writeAll(socket, frame);
            await writeAll(socket, part);
          }
        }
        await writeAll(socket, Buffer.alloc(4));
      });
      return parseClamdAnswer(name, answer);
    },
    async close() {},
  };
}

/** The verdict in clamd's answer line; throws ScanError for anything else. */
export function parseClamdAnswer(name: string, answer: Buffer): VirusResult {
  const nul = answer.indexOf(0);
  // zINSTREAM answers end in NUL; accept a newline too, refuse anything longer than one line.
  const line = answer.subarray(0, nul === -1 ? answer.length : nul).toString('latin1').replace(/\r?\n$/, '');
  if (line.length === 0) throw new ScanError('protocol', `${name}: empty answer`);
  if (/[\r\n]/.test(line) || line.length > 1024) throw new ScanError('protocol', `${name}: answer is not one line`);
  if (line.endsWith(' ERROR')) throw new ScanError('refused', `${name}: ${line.slice(0, 200)}`);
  const m = /^(?:stream|\S+): (.*)$/.exec(line);
  if (!m) throw new ScanError('protocol', `${name}: unexpected answer ${JSON.stringify(line.slice(0, 80))}`);
  const verdict = m[1]!;
  if (verdict === 'OK') return { kind: 'virus', infected: false, names: [] };
  const found = /^(.+) FOUND$/.exec(verdict);
  if (!found) throw new ScanError('protocol', `${name}: unexpected answer ${JSON.stringify(line.slice(0, 80))}`);
  // The name of a signature found; an unprintable one is still a virus.
  return { kind: 'virus', infected: true, names: [cleanName(found[1]!) ?? 'unnamed'] };
}
