/**
 * rspamd through the milter protocol of its proxy worker (`rspamd_proxy`
 * with `milter = yes`), over connections that stay open: rspamd's HTTP
 * workers close every connection after their answer, so each HTTP scan pays
 * for a connect and a close, which alone cost more than the whole scan over
 * a connection already open (docs/scanning.md, "rspamd over milter").
 *
 * The milter protocol (Sendmail's libmilter; docs/scanning.md lists what
 * postgate sends) frames every command as a 4-byte big-endian length, one
 * command byte and its data. Per message postgate writes, at once:
 * SMFIC_QUIT_NC (forget the previous message's client), SMFIC_CONNECT (the
 * client's host name and address), SMFIC_MACRO (queue id, authenticated
 * user), SMFIC_HELO, SMFIC_MAIL, one SMFIC_RCPT per recipient, the message
 * whole as SMFIC_BODY chunks (rspamd joins header and body commands into the
 * message it scans, so the raw bytes as body are the message itself) and
 * SMFIC_BODYEOB. rspamd's proxy declares at option negotiation that it
 * answers none of these but the last (the SMFIP_NR_* flags); postgate
 * requires that, so a message is one write and one answer. The answer is
 * header changes (milter_headers' X-Spamd-Result with the score, required
 * score and symbols, X-Rspamd-Action) and one final reply (accept, reject,
 * tempfail, discard, a reply code).
 *
 * A pool of connections, one message on each at a time; a connection that
 * fails or times out mid-message is closed, never reused.
 *
 * Leaf module: imports only scan/.
 */
import net from 'node:net';
import type { Readable } from 'node:stream';
import { writeAll } from './socket.js';
import { cleanName, MAX_SYMBOLS, ScanError, timeoutError, type ScanInput, type Scanner, type SpamResult } from './types.js';

export interface MilterOptions {
  id: string;
  /** rspamd_proxy's milter socket: a Unix socket path, or host and port. */
  to: { path: string } | { host: string; port: number };
  /** Connections kept open at most (each carries one message at a time). */
  connections: number;
  /** How long a connection may sit idle before it is closed (default IDLE_MS). */
  idleMs?: number;
}

/** Command bytes postgate sends (libmilter's SMFIC_*). */
const C = {
  optneg: 0x4f, // 'O'
  quitNc: 0x4b, // 'K'
  connect: 0x43, // 'C'
  macro: 0x44, // 'D'
  helo: 0x48, // 'H'
  mail: 0x4d, // 'M'
  rcpt: 0x52, // 'R'
  body: 0x42, // 'B'
  eob: 0x45, // 'E'
  quit: 0x51, // 'Q'
} as const;

/** Milter protocol version 6, the one rspamd speaks (and the oldest it takes). */
const VERSION = 6;
/** Actions we allow the filter (SMFIF_ADDHDRS | CHGHDRS | QUARANTINE): we read them, apply none. */
const ACTIONS = 0x01 | 0x10 | 0x20;
/** No reply for connect, helo, mail, rcpt and body (SMFIP_NR_CONN, NR_HELO, NR_MAIL, NR_RCPT, NR_BODY): one answer per message. */
const NO_REPLIES = 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x80000;
/** Largest SMFIC_BODY chunk (libmilter's MILTER_CHUNK_SIZE; rspamd refuses commands over 128 KiB). */
const CHUNK = 65535;
/** Largest answer frame read; rspamd's header values are a few KB. */
const MAX_FRAME = 256 * 1024;
/** Longest answer to one message (all its frames). */
const MAX_ANSWER = 1024 * 1024;
/**
 * How often the pool looks for scans past their timeout. One interval per
 * pool instead of a timer per scan: making and clearing a timer per message
 * measured at 10–20 µs of CPU per scan in the scanning benchmark, a large
 * part of the whole; a scan ends at most this much after its timeout.
 */
const TICK_MS = 25;
/** An idle connection is closed after this long (a third more at most: the sweep runs every third of it); rspamd's proxy closes idle ones itself (its worker `timeout`, 120 s by default). */
const IDLE_MS = 30_000;

const OPTNEG = (() => {
  const b = Buffer.alloc(17);
  b.writeUInt32BE(13, 0);
  b[4] = C.optneg;
  b.writeUInt32BE(VERSION, 5);
  b.writeUInt32BE(ACTIONS, 9);
  b.writeUInt32BE(0, 13);
  return b;
})();

/** A value the milter protocol can carry as a C string, and rspamd as a header: printable ASCII, short. */
const printable = (v: string): boolean => v.length <= 1024 && /^[\x20-\x7e]*$/.test(v);

/** A frame's 4-byte big-endian length as latin1 characters (one byte each). */
const len32 = (n: number): string => String.fromCharCode((n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);

/** One frame as latin1 text: length, command, data (latin1 too). */
const frameText = (cmd: number, data: string): string => len32(data.length + 1) + String.fromCharCode(cmd) + data;

/** One frame: length, command, data. */
const frame = (cmd: number, data: string): Buffer => Buffer.from(frameText(cmd, data), 'latin1');

/**
 * The frames before the message, built as one string and one Buffer: who
 * sent it, to whom; then the first SMFIC_BODY frame's head when the message
 * is one chunk (`bodyLength`), so the message follows it as it is.
 */
function envelopeFrames(input: ScanInput, bodyLength: number): Buffer {
  const e = input.envelope;
  const ip = e.clientAddress.startsWith('::ffff:') ? e.clientAddress.slice(7) : e.clientAddress;
  const family = net.isIPv4(ip) ? '4' : net.isIPv6(ip) ? '6' : '';
  const host = e.clientHostname && printable(e.clientHostname) ? e.clientHostname : 'unknown';
  // SMFIC_CONNECT: host NUL, family, port (unknown: 0), address NUL; family 'U' (unknown) alone.
  let s = QUIT_NC + frameText(C.connect, family ? `${host}\0${family}\0\0${ip}\0` : `${host}\0U`);
  let macros = '';
  if (e.queueId && printable(e.queueId)) macros += `{i}\0${e.queueId}\0`;
  if (e.authUser && printable(e.authUser)) macros += `{auth_authen}\0${e.authUser}\0`;
  if (macros) s += frameText(C.macro, `C${macros}`);
  if (e.helo && printable(e.helo)) s += frameText(C.helo, `${e.helo}\0`);
  s += frameText(C.mail, `<${printable(e.mailFrom) ? e.mailFrom : ''}>\0`);
  for (const r of e.rcptTo) if (r && printable(r)) s += frameText(C.rcpt, `<${r}>\0`);
  if (bodyLength > 0) s += len32(bodyLength + 1) + 'B';
  return Buffer.from(s, 'latin1');
}

const QUIT_NC = frameText(C.quitNc, '');

/** The head of an SMFIC_BODY frame of `n` bytes. */
const bodyHead = (n: number): Buffer => Buffer.from(len32(n + 1) + 'B', 'latin1');
const EOB = frame(C.eob, '');

/** What one message's answer said, as it arrives. */
interface Answer {
  /** The final reply's command byte, once it came. */
  final: number;
  /** A reply code's text (SMFIR_REPLYCODE): "554 5.7.1 Gtube pattern". */
  code: string | null;
  spamdResult: string | null;
  action: string | null;
  /** Header changes rspamd asked for besides its own (X-Spam, Subject). */
  changed: string[];
  quarantine: boolean;
}

const newAnswer = (): Answer => ({ final: 0, code: null, spamdResult: null, action: null, changed: [], quarantine: false });

/** A C string at `at` in `b`, up to its NUL or `limit` (the frame's end); and where the next one starts. */
function cstr(b: Buffer, at: number, limit: number): [string, number] {
  if (at >= limit) return ['', limit];
  const z = b.indexOf(0, at);
  const end = z === -1 || z > limit ? limit : z;
  return [b.toString('latin1', at, end), end + 1];
}

class Connection {
  readonly socket: net.Socket;
  ready = false;
  closed = false;
  /** Messages this connection has carried: a failure on a reused one is retried once on a fresh one. */
  used = 0;
  /** The peer closed or reset it. */
  gone = false;
  /** Bytes of an answer to the current message arrived. */
  get answered(): boolean {
    return this.got > 0;
  }
  private buf: Buffer | null = null;
  private got = 0;
  private answer: Answer | null = null;
  private pending: { resolve: (a: Answer) => void; reject: (e: ScanError) => void } | null = null;
  private opened: { resolve: () => void; reject: (e: ScanError) => void } | null = null;
  /** When it last went idle (ms since the epoch), for the sweep that closes idle ones. */
  idleSince = 0;

  constructor(
    private readonly name: string,
    to: MilterOptions['to'],
    private readonly onClose: (c: Connection) => void,
  ) {
    this.socket = 'path' in to ? net.connect({ path: to.path }) : net.connect({ host: to.host, port: to.port });
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => this.data(d));
    this.socket.on('error', (err: Error & { code?: string }) => this.lost(new ScanError(this.ready ? 'protocol' : 'connect', `${this.name}: ${err.code ?? err.message}`, { cause: err })));
    this.socket.on('close', () => this.lost(new ScanError(this.ready ? 'protocol' : 'connect', `${this.name}: connection closed${this.ready ? '' : ' before option negotiation'}`)));
    this.socket.write(OPTNEG);
  }

  /** The peer closed or reset the connection (not a failure of ours). */
  private lost(err: ScanError): void {
    if (!this.closed) this.gone = true;
    this.fail(err);
  }

  /** Resolves once option negotiation is done. */
  open(): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve, reject) => (this.opened = { resolve, reject }));
  }

  /** Sends one message; resolves with rspamd's answer. */
  send(input: ScanInput, content: Buffer | Readable): Promise<Answer> {
    const size = input.size;
    const inline = Buffer.isBuffer(content) && size > 0 && size <= CHUNK;
    const head = envelopeFrames(input, inline ? size : 0);
    this.used++;
    this.answer = newAnswer();
    this.got = 0;
    const p = new Promise<Answer>((resolve, reject) => (this.pending = { resolve, reject }));
    if (Buffer.isBuffer(content)) {
      if (content.length !== size) this.fail(new ScanError('protocol', `${this.name}: message was ${content.length} bytes, announced ${size}`));
      else {
        // One writev: the envelope with the body frame's head, the message, the end.
        const s = this.socket;
        s.cork();
        s.write(head);
        if (inline) s.write(content);
        else for (let at = 0; at < size; at += CHUNK) this.bodyFrame(content.subarray(at, Math.min(at + CHUNK, size)));
        s.write(EOB);
        s.uncork();
      }
    } else {
      void this.stream(head, content, size).catch((err: Error & { code?: string }) => {
        this.fail(err instanceof ScanError ? err : new ScanError('protocol', `${this.name}: ${err.code ?? err.message}`, { cause: err }));
      });
    }
    return p;
  }

  private async stream(head: Buffer, content: Readable, size: number): Promise<void> {
    const s = this.socket;
    await writeAll(s, head);
    let sent = 0;
    for await (const chunk of content as AsyncIterable<Buffer>) {
      if (this.closed) return;
      for (let at = 0; at < chunk.length; at += CHUNK) {
        const piece = chunk.subarray(at, Math.min(at + CHUNK, chunk.length));
        this.socket.write(bodyHead(piece.length));
        await writeAll(s, piece);
      }
      sent += chunk.length;
    }
    if (sent !== size) throw new ScanError('protocol', `${this.name}: message was ${sent} bytes, announced ${size}`);
    await writeAll(s, EOB);
  }

  private bodyFrame(piece: Buffer): void {
    this.socket.write(bodyHead(piece.length));
    this.socket.write(piece);
  }

  /** Closes the connection (at once, unless `flushed` ends it); whatever waits on it fails with `err`. */
  fail(err: ScanError, flushed = false): void {
    if (this.closed) return;
    this.closed = true;
    if (!flushed) this.socket.destroy();
    const p = this.pending;
    const o = this.opened;
    this.pending = null;
    this.opened = null;
    o?.reject(err);
    p?.reject(err);
    this.onClose(this);
  }

  /** Says goodbye (SMFIC_QUIT) when no message is in flight, and closes. */
  quit(): void {
    if (this.closed) return;
    const polite = this.ready && !this.pending;
    if (polite) {
      const s = this.socket;
      s.end(frame(C.quit, ''), () => s.destroy());
    }
    this.fail(new ScanError('protocol', `${this.name}: closed`), polite);
  }

  private data(d: Buffer): void {
    this.got += d.length;
    if (this.got > MAX_ANSWER) return this.fail(new ScanError('protocol', `${this.name}: answer longer than ${MAX_ANSWER} bytes`));
    // Frames are read where they lie (offsets, no view per frame); only a frame cut by the chunk's end is kept.
    const b = this.buf === null ? d : Buffer.concat([this.buf, d]);
    this.buf = null;
    let at = 0;
    while (b.length - at >= 5) {
      const n = b.readUInt32BE(at);
      if (n < 1 || n > MAX_FRAME) return this.fail(new ScanError('protocol', `${this.name}: answer frame of ${n} bytes`));
      if (b.length - at < 4 + n) break;
      if (!this.reply(b[at + 4]!, b, at + 5, at + 4 + n)) return;
      at += 4 + n;
    }
    if (at < b.length) this.buf = b.subarray(at);
  }

  /** One reply frame, its data `b[start, end)`; false when the connection failed over it. */
  private reply(cmd: number, b: Buffer, start: number, end: number): boolean {
    if (!this.ready) {
      if (cmd !== C.optneg || end - start < 12) {
        this.fail(new ScanError('protocol', `${this.name}: no option negotiation (not a milter?)`));
        return false;
      }
      const version = b.readUInt32BE(start);
      const protocol = b.readUInt32BE(start + 8);
      // Without these flags the filter answers each command and the framing of one write per message no longer holds.
      if (version < VERSION || (protocol & NO_REPLIES) !== NO_REPLIES) {
        this.fail(new ScanError('protocol', `${this.name}: milter version ${version}, flags ${protocol.toString(16)}: not rspamd's proxy`));
        return false;
      }
      this.ready = true;
      const o = this.opened;
      this.opened = null;
      o?.resolve();
      return true;
    }
    const a = this.answer;
    if (!a || !this.pending) {
      this.fail(new ScanError('protocol', `${this.name}: reply with no message in flight`));
      return false;
    }
    switch (cmd) {
      case 0x68: // 'h' SMFIR_ADDHEADER: name, value
      case 0x69: // 'i' SMFIR_INSHEADER: index, name, value
      case 0x6d: {
        // 'm' SMFIR_CHGHEADER: index, name, value
        const [name, next] = cstr(b, cmd === 0x68 ? start : start + 4, end);
        const [value] = cstr(b, next, end);
        const lower = name.toLowerCase();
        if (lower === 'x-spamd-result') a.spamdResult = value;
        else if (lower === 'x-rspamd-action') a.action = value;
        else if (cmd === 0x6d) a.changed.push(lower);
        return true;
      }
      case 0x71: // 'q' SMFIR_QUARANTINE, followed by accept
        a.quarantine = true;
        return true;
      case 0x79: // 'y' SMFIR_REPLYCODE: "554 5.7.1 text"
        a.code = cstr(b, start, end)[0];
        break;
      case 0x61: // 'a' accept
      case 0x63: // 'c' continue
      case 0x64: // 'd' discard
      case 0x72: // 'r' reject
      case 0x74: // 't' tempfail
        break;
      default:
        return true; // other changes (recipients, body, progress): nothing we apply
    }
    a.final = cmd;
    const p = this.pending;
    this.pending = null;
    this.answer = null;
    p.resolve(a);
    return true;
  }
}

/** The rspamd action an answer stands for: its X-Rspamd-Action, else what its final reply means. */
function actionOf(a: Answer): string {
  if (a.action !== null && /^[a-z ]{1,32}$/.test(a.action)) return a.action;
  if (a.final === 0x72 || (a.final === 0x79 && a.code?.startsWith('5'))) return 'reject';
  if (a.final === 0x74 || (a.final === 0x79 && a.code?.startsWith('4'))) return 'soft reject';
  if (a.final === 0x64) return 'discard';
  if (a.quarantine) return 'quarantine';
  if (a.changed.includes('subject')) return 'rewrite subject';
  if (a.changed.length) return 'add header';
  return 'no action';
}

/**
 * milter_headers' X-Spamd-Result (rspamd's modules documentation):
 * `default: False [0.40 / 15.00]; SYMBOL(score)[options]; …`, folded with
 * newlines and tabs, symbols by decreasing |score|.
 */
export function parseSpamdResult(v: string): { score: number; threshold: number; symbols: string[] } | null {
  const m = /^\s*[^:;]*:\s*(?:True|False)\s*\[\s*(-?\d+(?:\.\d+)?)\s*\/\s*(-?\d+(?:\.\d+)?)\s*\]/.exec(v);
  if (!m) return null;
  const symbols: string[] = [];
  const re = /;\s*([^\s;()[\]]+)\(/g;
  for (let s = re.exec(v); s && symbols.length < MAX_SYMBOLS; s = re.exec(v)) {
    const n = cleanName(s[1]!);
    if (n) symbols.push(n);
  }
  return { score: Number(m[1]), threshold: Number(m[2]), symbols };
}

/** A scanner whose verdicts are always spam verdicts. */
export interface SpamScanner extends Scanner {
  scan(input: ScanInput): Promise<SpamResult>;
}

export function rspamdMilterScanner(opts: MilterOptions): SpamScanner {
  const name = `rspamd ${opts.id}`;
  const idle: Connection[] = [];
  const all = new Set<Connection>();
  const waiting: ((c: Connection | null) => void)[] = [];
  let closing = false;
  /**
   * rspamd's reject score, from the last answer that carried one: a
   * verdict rspamd reaches before any scoring (the GTUBE test pattern, a
   * prefilter) has no X-Spamd-Result, and rspamd's own convention for it is
   * score = required score (its HTTP answer says so). 15 is the shipped
   * default (rspamd's actions.conf) until an answer says otherwise.
   */
  let rejectScore = 15;

  const dropped = (c: Connection) => {
    all.delete(c);
    const i = idle.indexOf(c);
    if (i !== -1) idle.splice(i, 1);
    // A slot opened: the first waiting scan gets a new connection.
    const w = waiting.shift();
    if (w) w(null);
  };
  const release = (c: Connection) => {
    if (c.closed) return;
    const w = waiting.shift();
    if (w) return w(c);
    if (closing) return c.quit();
    c.idleSince = Date.now();
    idle.push(c);
  };
  /** Scans under way, each with its deadline (ms since the epoch) and what ends it when it passes. */
  const running = new Set<{ deadline: number; expire(): void }>();
  // One interval for the pool (TICK_MS): the scans' timeouts and the idle
  // connections, rather than a timer per scan or per idle connection.
  const idleMs = opts.idleMs ?? IDLE_MS;
  let nextIdleCheck = 0;
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const r of running) if (r.deadline <= now) r.expire();
    if (now < nextIdleCheck) return;
    nextIdleCheck = now + Math.min(idleMs / 3, 1000);
    // The longest idle are first (idle is a stack: pushed on release, popped on use).
    while (idle.length && idle[0]!.idleSince <= now - idleMs) idle.shift()!.quit();
  }, TICK_MS);
  sweep.unref();
  /** A connection for one message: an idle one, a new one (`fresh`: always), or the next one freed. */
  const acquire = async (fresh: boolean, using: (c: Connection) => void): Promise<Connection> => {
    for (;;) {
      if (!fresh) {
        const c = idle.pop();
        if (c) {
          using(c);
          return c;
        }
      }
      if (closing) throw new ScanError('connect', `${name}: closed`);
      if (fresh || all.size < opts.connections) {
        const c = new Connection(name, opts.to, dropped);
        all.add(c);
        using(c);
        await c.open();
        return c;
      }
      const c = await new Promise<Connection | null>((r) => waiting.push(r));
      if (c) {
        using(c);
        return c;
      }
    }
  };

  return {
    id: opts.id,
    type: 'rspamd',
    scan(input: ScanInput): Promise<SpamResult> {
      return new Promise<SpamResult>((resolve, reject) => {
        let settled = false;
        let current: Connection | null = null;
        // One deadline bounds the wait for a connection, the exchange and rspamd's scan.
        const timer = {
          deadline: Date.now() + input.timeoutMs,
          expire() {
            running.delete(timer);
            if (settled) return;
            settled = true;
            const err = timeoutError(name, input.timeoutMs);
            // The message is half-sent or unanswered: that connection cannot carry another.
            current?.fail(err);
            reject(err);
          },
        };
        running.add(timer);
        const using = (c: Connection) => {
          if (settled) release(c);
          else current = c;
        };
        void (async () => {
          for (let attempt = 0; ; attempt++) {
            const c = await acquire(attempt > 0, using);
            if (settled) return;
            const reused = c.used > 0;
            let answer: Answer;
            try {
              answer = await c.send(input, await input.content());
            } catch (err) {
              // rspamd may close an idle connection as we write to it (its
              // worker timeout): once more, on a fresh one, if it said nothing.
              if (settled || !reused || attempt > 0 || !c.gone || c.answered) throw err;
              continue;
            }
            current = null;
            release(c);
            return verdict(answer);
          }
        })().then(
          (v) => {
            if (settled || v === undefined) return;
            settled = true;
            running.delete(timer);
            resolve(v);
          },
          (err: unknown) => {
            if (settled) return;
            settled = true;
            running.delete(timer);
            reject(err instanceof ScanError ? err : new ScanError('protocol', `${name}: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
          },
        );
      });
    },
    async close() {
      closing = true;
      clearInterval(sweep);
      for (const c of [...all]) c.quit();
      for (const w of waiting.splice(0)) w(null);
    },
  };

  function verdict(a: Answer): SpamResult {
    const act = actionOf(a);
    const parsed = a.spamdResult !== null ? parseSpamdResult(a.spamdResult) : null;
    if (parsed) rejectScore = parsed.threshold;
    else if (act !== 'reject' && act !== 'discard' && act !== 'quarantine') {
      // A scored verdict without its scores: milter_headers is not set up (docs/scanning.md).
      throw new ScanError('protocol', `${name}: answer without X-Spamd-Result (enable rspamd's milter_headers x-spamd-result)`);
    }
    const score = parsed?.score ?? rejectScore;
    const threshold = parsed?.threshold ?? rejectScore;
    const text = a.code !== null ? /^\d{3}(?: \d\.\d{1,3}\.\d{1,3})? ?(.*)$/.exec(a.code)?.[1] ?? null : null;
    return {
      kind: 'spam',
      score,
      threshold,
      spam: act === 'reject' || act === 'discard' || score >= threshold,
      scannerAction: act,
      symbols: parsed?.symbols ?? [],
      message: text || null,
    };
  }
}
