/**
 * Random SMTP sessions for fuzzing the gateway over a real socket: valid
 * transactions with mutated commands and bodies, junk commands, random bytes,
 * over-long lines, BDAT with wrong counts, everything written in random TCP
 * segments. Shared by test/fuzz-smtp.test.ts (short) and `npm run soak`.
 *
 * What a run checks (`runSession`): every reply is a well-formed SMTP reply,
 * the session ends (QUIT answered or the server closed) within its budget,
 * and every message answered 250 is remembered with the exact bytes the
 * server must have received (after dot-unstuffing), so the caller can compare
 * them with what reached the receiver.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import fc from 'fast-check';

export type Step =
  | { kind: 'txn'; from: string; rcpts: string[]; body: string; bdat: boolean; chunkSizes: number[] }
  | { kind: 'junk'; line: string }
  | { kind: 'bytes'; bytes: number[] }
  | { kind: 'long'; length: number }
  | { kind: 'cmd'; line: string }
  | { kind: 'badBdat'; declared: number; actual: number };

export interface Session {
  helo: string;
  steps: Step[];
  /** Segment sizes for splitting every write, cycled. */
  segments: number[];
}

const addressArb = fc.oneof(
  fc.constantFrom('a@example.test', 'x@example.test', 'y+tag@example.test', 'postmaster', 'nobody@elsewhere.example', '"quoted local"@example.test', 'ü@example.test', ''),
  fc.string({ maxLength: 40 }),
);

const bodyLineArb = fc.oneof(
  fc.constantFrom('.', '..', '.leading dot', 'Subject: fuzz', 'From: <a@example.test>', '', 'Content-Type: multipart/mixed; boundary=b', '--b', '--b--', 'x\rbare CR', 'bare LF\ninside'),
  fc.string({ maxLength: 120 }),
  fc.stringMatching(/^[\x20-\x7e]{0,998}$/),
);

export const sessionArb: fc.Arbitrary<Session> = fc.record({
  helo: fc.oneof(fc.constant('fuzz.example'), fc.string({ maxLength: 30 })),
  segments: fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 8 }),
  steps: fc.array(
    fc.oneof(
      { weight: 5, arbitrary: fc.record({
        kind: fc.constant('txn' as const),
        from: addressArb,
        rcpts: fc.array(addressArb, { minLength: 1, maxLength: 4 }),
        body: fc.array(bodyLineArb, { maxLength: 40 }).map((ls) => ls.join('\r\n')),
        bdat: fc.boolean(),
        chunkSizes: fc.array(fc.integer({ min: 1, max: 2000 }), { minLength: 1, maxLength: 4 }),
      }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant('junk' as const), line: fc.string({ maxLength: 200 }).map((s) => s.replace(/[\r\n]/g, ' ')) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('bytes' as const), bytes: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 300 }) }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('long' as const), length: fc.integer({ min: 2000, max: 100_000 }) }) },
      {
        weight: 2,
        arbitrary: fc.record({
          kind: fc.constant('cmd' as const),
          line: fc.constantFrom('RSET', 'NOOP', 'VRFY x@example.test', 'EXPN list', 'HELP', 'ETRN example.test', 'STARTTLS', 'AUTH PLAIN AGZvbwBiYXI=', 'AUTH LOGIN', '*', 'DATA', 'BDAT 0 LAST', 'MAIL FROM:<a@example.test> SIZE=999999999999', 'RCPT TO:<x@example.test> NOTIFY=BOGUS', 'MAIL FROM:<a@example.test> BODY=8BITMIME SMTPUTF8', 'EHLO again.example', 'HELO', 'WIZ', 'SHELL'),
        }),
      },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant('badBdat' as const), declared: fc.integer({ min: 0, max: 5000 }), actual: fc.integer({ min: 0, max: 5000 }) }) },
    ),
    { maxLength: 8 },
  ),
});

export interface Accepted {
  queueId: string;
  sha256: string;
  size: number;
}

export interface SessionResult {
  replies: string[];
  accepted: Accepted[];
  /** Replies that are not `ddd<SP|->text` lines. */
  malformed: string[];
  /** quit: 221; closed: by the server; abandoned: the session chose to stop (after a desynchronising step); timeout: no answer in time. */
  ended: 'quit' | 'closed' | 'abandoned' | 'timeout';
  ms: number;
}

const REPLY_LINE = /^\d{3}[ -]/;

class Conn {
  private buf = '';
  private waiters: Array<() => void> = [];
  closed = false;
  readonly lines: string[] = [];
  constructor(
    readonly socket: net.Socket,
    private readonly segments: number[],
  ) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => {
      this.buf += d.toString('latin1');
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }
  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
  /** One complete reply (all its lines), or null when the connection closed or the wait timed out. */
  async reply(timeoutMs: number): Promise<string | null> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const m = /^(\d{3}) [^\n]*\n/m.exec(this.buf);
      if (m) {
        const end = m.index + m[0].length;
        const text = this.buf.slice(0, end);
        this.buf = this.buf.slice(end);
        for (const l of text.split('\n')) if (l) this.lines.push(l.replace(/\r$/, ''));
        return text;
      }
      if (this.closed || Date.now() >= until) {
        for (const l of this.buf.split('\n')) if (l) this.lines.push(l.replace(/\r$/, ''));
        this.buf = '';
        return null;
      }
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, Math.max(1, until - Date.now())).unref();
      });
    }
  }
  /** Writes `data` in segments of the session's sizes, yielding between them (separate TCP segments). */
  async write(data: Buffer): Promise<void> {
    let i = 0;
    let s = 0;
    while (i < data.length && !this.closed) {
      const n = this.segments[s++ % this.segments.length]!;
      this.socket.write(data.subarray(i, i + n));
      i += n;
      await new Promise((r) => setImmediate(r));
    }
  }
}

/** The bytes a client sends for `body` after DATA (dot-stuffed, CRLF, final dot) and what the server keeps. */
export function dataBytes(body: string): { wire: Buffer; kept: Buffer } {
  const b = body.endsWith('\r\n') || body === '' ? body : `${body}\r\n`;
  const kept = Buffer.from(b, 'latin1');
  const wire = Buffer.concat([Buffer.from(b.replace(/(^|\r\n)\./g, '$1..'), 'latin1'), Buffer.from('.\r\n')]);
  return { wire, kept };
}

export async function runSession(port: number, s: Session, budgetMs = 20_000): Promise<SessionResult> {
  const t0 = Date.now();
  const socket = net.connect(port, '127.0.0.1');
  const c = new Conn(socket, s.segments);
  const accepted: Accepted[] = [];
  const send = async (line: string | Buffer) => c.write(typeof line === 'string' ? Buffer.from(`${line}\r\n`, 'latin1') : line);
  const left = () => Math.max(100, budgetMs - (Date.now() - t0));
  let ended: SessionResult['ended'] = 'timeout';
  run: {
    if ((await c.reply(left())) === null) {
      ended = c.closed ? 'closed' : 'timeout';
      break run;
    }
    await send(`EHLO ${s.helo}`);
    if ((await c.reply(left())) === null) break run;
    for (const step of s.steps) {
      if (c.closed) break;
      switch (step.kind) {
        case 'txn': {
          await send(`MAIL FROM:<${step.from}>`);
          if ((await c.reply(left())) === null) break run;
          let any = false;
          for (const r of step.rcpts) {
            await send(`RCPT TO:<${r}>`);
            const rr = await c.reply(left());
            if (rr === null) break run;
            if (rr.startsWith('250')) any = true;
          }
          const { wire, kept } = dataBytes(step.body);
          let final: string | null;
          if (step.bdat) {
            // BDAT chunks (RFC 3030): the body as is, no dot-stuffing
            const body = kept;
            let at = 0;
            let ok = true;
            for (let i = 0; at < body.length || i === 0; i++) {
              const n = Math.min(step.chunkSizes[i % step.chunkSizes.length]!, body.length - at);
              const last = at + n >= body.length;
              await send(Buffer.concat([Buffer.from(`BDAT ${n}${last ? ' LAST' : ''}\r\n`), body.subarray(at, at + n)]));
              at += n;
              const rr = await c.reply(left());
              if (rr === null) break run;
              if (last) {
                final = rr;
                if (any && rr.startsWith('250')) accepted.push(acceptedOf(rr, body));
                break;
              }
              if (!rr.startsWith('250')) {
                ok = false;
                break;
              }
            }
            if (!ok) {
              await send('RSET');
              if ((await c.reply(left())) === null) break run;
            }
          } else {
            await send('DATA');
            const go = await c.reply(left());
            if (go === null) break run;
            if (go.startsWith('354')) {
              await send(wire);
              final = await c.reply(left());
              if (final === null) break run;
              if (final.startsWith('250')) accepted.push(acceptedOf(final, kept));
            }
          }
          break;
        }
        case 'junk':
          await send(step.line);
          if ((await c.reply(left())) === null) break run;
          break;
        case 'cmd':
          await send(step.line);
          if ((await c.reply(left())) === null) break run;
          if (step.line === 'DATA' || step.line === 'AUTH LOGIN' || step.line === 'STARTTLS') {
            // whatever state that left, end the session here: the point was the server's answer
            ended = 'abandoned';
            break run;
          }
          break;
        case 'bytes':
          await send(Buffer.concat([Buffer.from(step.bytes.filter((b) => b !== 0x0a && b !== 0x0d)), Buffer.from('\r\n')]));
          if ((await c.reply(left())) === null) break run;
          break;
        case 'long':
          await send(Buffer.alloc(step.length, 0x41));
          // an over-long line gets 500 (or the connection closed), possibly once the line ends
          await send('');
          if ((await c.reply(left())) === null) break run;
          break;
        case 'badBdat':
          // wrong counts desynchronise the stream by design: send and end the session
          await send(Buffer.concat([Buffer.from(`BDAT ${step.declared} LAST\r\n`), Buffer.alloc(step.actual, 0x42)]));
          await c.reply(Math.min(left(), 300));
          ended = 'abandoned';
          break run;
      }
    }
    await send('QUIT');
    const q = await c.reply(left());
    ended = q?.startsWith('221') ? 'quit' : c.closed ? 'closed' : 'timeout';
  }
  if (ended === 'timeout' && c.closed) ended = 'closed';
  socket.destroy();
  const malformed = c.lines.filter((l) => !REPLY_LINE.test(l));
  return { replies: c.lines, accepted, malformed, ended, ms: Date.now() - t0 };
}

function acceptedOf(reply: string, kept: Buffer): Accepted {
  const queueId = /queued as ([0-9A-Z]{20})/.exec(reply)?.[1] ?? '';
  return { queueId, sha256: createHash('sha256').update(kept).digest('hex'), size: kept.length };
}
