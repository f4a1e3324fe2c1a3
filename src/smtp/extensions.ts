/**
 * Every place postgate reaches into smtp-server's internals lives here, and
 * `assertSmtpServerInternals()` checks at startup that each one still exists,
 * so an incompatible smtp-server release fails fast with PG_SMTP_INTERNALS
 * instead of misbehaving on live mail. CI runs the SMTP tests against both
 * the pinned version and the newest release.
 *
 * Internals used (checked against smtp-server 3.21.x):
 * - SMTPConnection.prototype.send(code, data, context): the one write site of
 *   replies. Wrapped to choose the enhanced status code per reply (RFC 3463,
 *   RFC 2034) instead of smtp-server's fixed table, to count replies, and to
 *   turn its early-talker 421 into our 554.
 * - SMTPConnection.prototype.init / _setListeners / connectionReady: the
 *   hard-coded 100 ms pre-greeting pause becomes a policy (EarlyTalkerPolicy).
 * - SMTPConnection.prototype.handler_<VERB>: command dispatch looks handlers up
 *   by name, so new verbs (BDAT, EXPN, ETRN, ATRN, TURN, X-*) are added as
 *   methods and some built-in ones (EHLO, MAIL, RCPT, DATA, RSET, HELP, VRFY)
 *   are wrapped.
 * - SMTPConnection#_parser (an SMTPStream) and SMTPStream.prototype
 *   ._feedDataStream / _write / _dataMode: BDAT adds a byte-counted data mode
 *   beside the dot-terminated one (RFC 3030).
 * - SMTPConnection#_armTimeout: re-armed on open sessions when the idle timeout changes under load.
 * - SMTPConnection#_parseAddressCommand, #session, #_resetSession,
 *   #_transactionCounter, #_dataStream, #_server, #close: transaction state.
 * - SMTPServer#connect(socket, opts), #secureContext (Map, '*' = default
 *   context), #connections (Set): postgate runs its own net.Server.
 */
import { PassThrough } from 'node:stream';
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { GatewayError } from '../core/errors.js';
import { HELP_TOPICS, HELP_VRFY_ROUTES, reply, REPLIES, SMTP_SERVER_ENHANCED, type Reply } from '../transaction/replies.js';

/** A reply whose text starts with an enhanced code ("4.5.3 …") is sent as written. */
const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

export const REPLY_HOOK = Symbol.for('postgate.replyHook');
export const POLICY = Symbol.for('postgate.smtpPolicy');
const BDAT_STATE = Symbol('postgate.bdat');
const BDAT_BYTES = Symbol('postgate.bdatBytes');

export type ReplyHook = (code: number) => void;

export interface EarlyTalkerPolicy {
  /** off: greet at once; pause: wait `delayMs`; multiline: send "220-" at once, the final "220 " after `delayMs`. */
  mode: 'off' | 'pause' | 'multiline';
  delayMs: number;
  /** Whether a client address already passed (it is not delayed again). */
  passed(address: string): boolean;
  pass(address: string): void;
}

/** Per-listener behaviour the extensions read from the server instance. */
export interface SmtpPolicy {
  earlyTalker: EarlyTalkerPolicy;
  /** DSN (RFC 3461) is advertised and its parameters accepted only with a DSN sender. */
  dsn: boolean;
  /**
   * ETRN (RFC 1985), advertised only in queued mode: starts the queue for a
   * node and returns the reply. Null: no queue (458).
   */
  etrn: ((node: string, clientAddress: string) => Reply) | null;
  onEarlyTalker(remoteAddress: string): void;
  /**
   * VRFY against the routes (smtp.vrfy "routes"): the reply for an address,
   * or null to answer 252 without disclosing anything (the default).
   */
  vrfy: ((address: string) => Reply) | null;
}

// ---------------------------------------------------------------------------
// Typed views of the internals.

interface ParsedAddress {
  address: string;
  args: Record<string, string | boolean> | false;
}

interface Envelope {
  mailFrom: ParsedAddress | false;
  rcptTo: ParsedAddress[];
  bodyType: string;
}

interface Session {
  envelope: Envelope;
  user?: unknown;
}

type Callback = () => void;
type OnData = (stream: PassThrough, session: Session, cb: (err?: (Error & { responseCode?: number }) | null, message?: string) => void) => void;

interface ServerInternals {
  [REPLY_HOOK]?: ReplyHook;
  [POLICY]?: SmtpPolicy;
  options: Record<string, unknown> & { size?: number; hideENHANCEDSTATUSCODES?: boolean; maxClients?: number; authOptional?: boolean };
  connections: Set<unknown>;
  onData: OnData;
}

interface Parser {
  _dataMode: boolean;
  [BDAT_BYTES]?: BdatChunk | null;
  _write(chunk: Buffer, encoding: string, done: (err?: Error) => void): void;
}

interface Conn {
  send(code: number, data?: string | string[], context?: string | false): void;
  close(): void;
  init(): void;
  connectionReady(next?: () => void): void;
  _setListeners(cb: () => void): void;
  _parseAddressCommand(name: string, command: Buffer | string): ParsedAddress | false;
  _resetSession(): void;
  _isSupported(cmd: string): boolean;
  _server: ServerInternals;
  _socket: import('node:net').Socket;
  _parser: Parser | false;
  _ready: boolean;
  _closing: boolean;
  _closed: boolean;
  _transactionCounter: number;
  _unrecognizedCommands: number;
  _dataStream: PassThrough | false | null;
  session: Session;
  secure: boolean;
  name: string;
  remoteAddress: string;
  hostNameAppearsAs: string | false;
  [BDAT_STATE]?: BdatTransaction | null;
  [key: string]: unknown;
}

// ---------------------------------------------------------------------------

export function assertSmtpServerInternals(): void {
  const missing: string[] = [];
  const conn = SMTPConnection?.prototype as unknown as Record<string, unknown> | undefined;
  for (const m of ['send', 'init', 'connectionReady', '_setListeners', '_parseAddressCommand', '_resetSession', '_isSupported', 'close', '_getEnhancedStatusCode', '_armTimeout']) {
    if (typeof conn?.[m] !== 'function') missing.push(`SMTPConnection.prototype.${m}`);
  }
  for (const h of ['EHLO', 'HELO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'HELP', 'VRFY', 'STARTTLS', 'NOOP', 'QUIT']) {
    if (typeof conn?.[`handler_${h}`] !== 'function') missing.push(`SMTPConnection.prototype.handler_${h}`);
  }
  const stream = SMTPStream?.prototype as unknown as Record<string, unknown> | undefined;
  for (const m of ['_feedDataStream', '_write', 'startDataMode']) {
    if (typeof stream?.[m] !== 'function') missing.push(`SMTPStream.prototype.${m}`);
  }
  if (typeof (SMTPServer.prototype as unknown as Record<string, unknown>).connect !== 'function') missing.push('SMTPServer.prototype.connect');
  const probe = new SMTPServer({ logger: false, disabledCommands: ['STARTTLS'] }) as unknown as Record<string, unknown>;
  if (!(probe.secureContext instanceof Map)) missing.push('SMTPServer#secureContext');
  if (!(probe.connections instanceof Set)) missing.push('SMTPServer#connections');
  const parser = new SMTPStream() as unknown as Record<string, unknown>;
  if (typeof parser._dataMode !== 'boolean') missing.push('SMTPStream#_dataMode');
  if (missing.length) {
    throw new GatewayError({
      code: 'PG_SMTP_INTERNALS',
      message: `the installed smtp-server lacks internals postgate extends: ${missing.join(', ')}; install a tested version (see package.json)`,
      transient: false,
    });
  }
}

let patched = false;

/** Installs the extensions once per process (they are prototype-wide; behaviour per server comes from its SmtpPolicy). */
export function installSmtpExtensions(): void {
  if (patched) return;
  assertSmtpServerInternals();
  const proto = SMTPConnection.prototype as unknown as Conn & Record<string, (this: Conn, command: Buffer, cb: Callback) => void>;
  patchSend(proto);
  patchInit(proto);
  patchCommands(proto);
  patchBdat(proto);
  patched = true;
}

// ---------------------------------------------------------------------------
// Replies

/** Writes a reply of the table (src/transaction/replies.ts) through the wrapped send(). */
function answer(conn: Conn, r: Reply): void {
  conn.send(r.code, r.lines.length === 1 ? r.lines[0]! : [...r.lines], false);
}

function patchSend(proto: Conn): void {
  const originalSend = proto.send;
  proto.send = function send(this: Conn, code, data, context) {
    // smtp-server answers a command sent before the greeting with 421; an
    // early talker is a protocol violation (RFC 5321 §4.3.1: the client waits
    // for the greeting), answered 554 like Postfix's postscreen does.
    if (!this._ready && code === 421 && typeof data === 'string' && data.endsWith('You talk too soon')) {
      this._server[POLICY]?.onEarlyTalker(this.remoteAddress);
      const r = reply('PG_EARLY_TALKER', { hostname: this.name });
      this._server[REPLY_HOOK]?.(r.code);
      originalSend.call(this, r.code, r.lines[0], false);
      this.close();
      return;
    }
    this._server[REPLY_HOOK]?.(code);
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data)) {
      return originalSend.call(this, code, data, false);
    }
    const override = SMTP_SERVER_ENHANCED[code];
    if (override && context !== false && typeof data === 'string' && this._server.options.hideENHANCEDSTATUSCODES === false) {
      return originalSend.call(this, code, `${override} ${data}`, false);
    }
    return originalSend.call(this, code, data, context);
  };
}

// ---------------------------------------------------------------------------
// Greeting: the pre-greeting pause as a policy (smtp-server always waits 100 ms).

function patchInit(proto: Conn): void {
  proto.init = function init(this: Conn) {
    this._setListeners(() => {
      const opts = this._server.options;
      if (opts.maxClients && this._server.connections.size > opts.maxClients) {
        return answer(this, reply('PG_LISTENER_FULL', { hostname: this.name }));
      }
      const policy = this._server[POLICY]?.earlyTalker;
      if (!policy || policy.mode === 'off' || policy.passed(this.remoteAddress)) {
        return this.connectionReady();
      }
      if (policy.mode === 'multiline') {
        // Postscreen-style: an honest client waits for the last greeting line
        // (RFC 5321 §4.2.1 multi-line replies); a spam bot talks at the first.
        const first = reply('PG_GREETING_PAUSE', { hostname: this.name });
        this._socket.write(`${first.code}-${first.lines[0]}\r\n`);
      }
      const timer = setTimeout(() => {
        if (this._closing || this._closed) return;
        policy.pass(this.remoteAddress);
        this.connectionReady();
      }, policy.delayMs);
      timer.unref();
      this._socket.once('close', () => clearTimeout(timer));
    });
  };
}

// ---------------------------------------------------------------------------
// Commands

const DSN_MAIL_PARAMS = new Set(['RET', 'ENVID']);
const DSN_RCPT_PARAMS = new Set(['NOTIFY', 'ORCPT']);
const MAIL_PARAMS = new Set(['SIZE', 'BODY', 'SMTPUTF8', 'AUTH']);

function argWord(command: Buffer | string): string {
  return command.toString().trim().split(/\s+/).slice(1).join(' ');
}

function patchCommands(proto: Conn & Record<string, (this: Conn, command: Buffer, cb: Callback) => void>): void {
  const origEHLO = proto.handler_EHLO!;
  const origMAIL = proto.handler_MAIL!;
  const origRCPT = proto.handler_RCPT!;
  const origDATA = proto.handler_DATA!;
  const origRSET = proto.handler_RSET!;
  const origHELO = proto.handler_HELO!;

  // EHLO: smtp-server sends its keywords in one send() call; add ours to it.
  // RFC 3030 CHUNKING and BINARYMIME, RFC 1985 ETRN in queued mode only.
  proto.handler_EHLO = function (this: Conn, command, cb) {
    abortBdat(this);
    const policy = this._server[POLICY];
    const send = this.send;
    this.send = function (code, data, context) {
      if (code === 250 && Array.isArray(data)) {
        // RFC 4954 §4 / docs/security.md: AUTH is offered only over TLS (unless
        // explicitly allowed), so no client is invited to send a password in clear.
        const clearAuth = !this.secure && !this._server.options.allowInsecureAuth;
        data = [...data.filter((l) => !(clearAuth && /^AUTH\b/.test(l))), 'CHUNKING', 'BINARYMIME'];
        if (policy?.etrn) data.push('ETRN');
      }
      return send.call(this, code, data, context);
    };
    try {
      origEHLO.call(this, command, cb);
    } finally {
      this.send = send;
    }
  };

  proto.handler_HELO = function (this: Conn, command, cb) {
    abortBdat(this);
    origHELO.call(this, command, cb);
  };

  // MAIL: unknown parameters are refused (RFC 5321 §4.1.1.11: 555), DSN ones
  // too unless DSN is on; BODY=BINARYMIME is accepted (smtp-server refuses it)
  // and then requires BDAT (RFC 3030 §3).
  proto.handler_MAIL = function (this: Conn, command, cb) {
    const parsed = this._parseAddressCommand('mail from', command);
    const dsn = this._server[POLICY]?.dsn ?? false;
    let binary = false;
    if (parsed && parsed.args) {
      for (const key of Object.keys(parsed.args)) {
        if (MAIL_PARAMS.has(key) || (dsn && DSN_MAIL_PARAMS.has(key))) continue;
        answer(this, reply('PG_MAIL_PARAM_UNSUPPORTED', { param: key.slice(0, 32) }));
        return cb();
      }
      const body = parsed.args.BODY;
      if (typeof body === 'string' && body.toUpperCase() === 'BINARYMIME') {
        binary = true;
        command = Buffer.from(command.toString('binary').replace(/\s+BODY=BINARYMIME(?=\s|$)/i, ''), 'binary');
      }
    }
    if (!binary) return origMAIL.call(this, command, cb);
    origMAIL.call(this, command, () => {
      if (this.session.envelope.mailFrom) this.session.envelope.bodyType = 'binarymime';
      cb();
    });
  };

  proto.handler_RCPT = function (this: Conn, command, cb) {
    const parsed = this._parseAddressCommand('rcpt to', command);
    const dsn = this._server[POLICY]?.dsn ?? false;
    if (parsed && parsed.args) {
      for (const key of Object.keys(parsed.args)) {
        if (dsn && DSN_RCPT_PARAMS.has(key)) continue;
        answer(this, reply('PG_RCPT_PARAM_UNSUPPORTED', { param: key.slice(0, 32) }));
        return cb();
      }
    }
    origRCPT.call(this, command, cb);
  };

  proto.handler_DATA = function (this: Conn, command, cb) {
    // RFC 3030 §3: BDAT and DATA cannot be mixed in one transaction, and a
    // BINARYMIME body can only be sent with BDAT.
    if (this[BDAT_STATE]) {
      answer(this, reply('PG_DATA_AFTER_BDAT'));
      return cb();
    }
    if (this.session.envelope.bodyType === 'binarymime') {
      answer(this, reply('PG_BINARYMIME_NEEDS_BDAT'));
      return cb();
    }
    if (argWord(command)) {
      answer(this, reply('PG_DATA_SYNTAX'));
      return cb();
    }
    origDATA.call(this, command, cb);
  };

  proto.handler_RSET = function (this: Conn, command, cb) {
    abortBdat(this);
    origRSET.call(this, command, cb);
  };

  proto.handler_HELP = function (this: Conn, command, cb) {
    const supported = Object.keys(HELP_TOPICS).filter((v) => {
      if (v === 'ETRN') return Boolean(this._server[POLICY]?.etrn);
      if (v === 'STARTTLS') return this._isSupported(v) && !this.secure;
      // Same rule as EHLO: AUTH only where it can be used (TLS, or explicitly allowed).
      if (v === 'AUTH') return this._isSupported(v) && (this.secure || Boolean(this._server.options.allowInsecureAuth));
      return true;
    });
    const topic = argWord(command).toUpperCase();
    if (topic) {
      let text = supported.includes(topic) ? HELP_TOPICS[topic] : undefined;
      if (topic === 'VRFY' && this._server[POLICY]?.vrfy) text = HELP_VRFY_ROUTES;
      if (!text) {
        answer(this, reply('PG_HELP_UNKNOWN', { topic: topic.slice(0, 32) }));
        return cb();
      }
      answer(this, reply('PG_HELP_TOPIC', { help: text }));
      return cb();
    }
    answer(this, reply('PG_HELP', { commands: supported.join(' ') }));
    cb();
  };

  // RFC 5321 §3.5.3 / §7.3: no address harvesting; 252 says "send it and see".
  proto.handler_VRFY = function (this: Conn, command, cb) {
    const arg = argWord(command);
    const vrfy = this._server[POLICY]?.vrfy;
    if (!arg) answer(this, reply('PG_VRFY_SYNTAX'));
    else if (vrfy) answer(this, vrfy(arg.replace(/^<(.*)>$/, '$1').slice(0, 512)));
    else answer(this, reply('PG_VRFY_CANNOT'));
    cb();
  };
  proto.handler_EXPN = function (this: Conn, command, cb) {
    if (!argWord(command)) answer(this, reply('PG_EXPN_SYNTAX'));
    else answer(this, reply('PG_EXPN_CANNOT'));
    cb();
  };

  // RFC 5321 Appendix F.1: TURN is insecure and removed.
  proto.handler_TURN = function (this: Conn, _command, cb) {
    answer(this, reply('PG_TURN_NOT_SUPPORTED'));
    cb();
  };

  // RFC 2645 §4: ATRN requires authentication; a gateway holds no mail to turn around.
  proto.handler_ATRN = function (this: Conn, _command, cb) {
    if (!this.session.user) answer(this, reply('PG_AUTH_REQUIRED'));
    else answer(this, reply('PG_ATRN_NO_MAIL'));
    cb();
  };

  // RFC 1985 §5: without a queue there is nothing to start.
  proto.handler_ETRN = function (this: Conn, command, cb) {
    const node = argWord(command);
    const etrn = this._server[POLICY]?.etrn;
    if (!node) answer(this, reply('PG_ETRN_SYNTAX'));
    else if (!etrn) answer(this, reply('PG_ETRN_UNAVAILABLE', { node: node.slice(0, 255) }));
    else answer(this, etrn(node.slice(0, 255), this.remoteAddress));
    cb();
  };

  // Exchange-internal verbs: never advertised, always refused.
  for (const verb of ['X-EXPS', 'X-EXCH50', 'X-LINK2STATE']) {
    proto[`handler_${verb}`] = function (this: Conn, _command, cb) {
      answer(this, reply('PG_CMD_NOT_IMPLEMENTED'));
      cb();
    };
  }
}

// ---------------------------------------------------------------------------
// BDAT / CHUNKING (RFC 3030)

interface BdatTransaction {
  /** The stream handed to onData, or null once the transaction failed. */
  stream: PassThrough | null;
  bytes: number;
  failed: boolean;
  aborted: boolean;
  result: { err: (Error & { responseCode?: number }) | null | undefined; message: string | undefined } | null;
  onResult: (() => void) | null;
}

interface BdatChunk {
  remaining: number;
  sink: PassThrough | null;
  complete: (resume: () => void) => void;
}

function abortBdat(conn: Conn): void {
  const t = conn[BDAT_STATE];
  if (!t) return;
  t.aborted = true;
  if (t.stream && !t.stream.destroyed) {
    // The transaction is abandoned (RSET, EHLO): tell onData, which discards it.
    t.stream.destroy(Object.assign(new Error('transaction aborted before BDAT LAST'), { code: 'EABORTED' }));
  }
  t.stream = null;
  conn[BDAT_STATE] = null;
  if (conn._dataStream) conn._dataStream = false;
}

function failBdat(conn: Conn, t: BdatTransaction): void {
  t.failed = true;
  if (t.stream && !t.stream.destroyed) {
    // Only the size limit fails a BDAT transaction (552 already sent).
    t.stream.destroy(Object.assign(new Error('BDAT chunks exceed the message size limit'), { code: 'ETOOBIG' }));
  }
  t.stream = null;
  conn._dataStream = false;
}

function endTransaction(conn: Conn): void {
  conn[BDAT_STATE] = null;
  conn._dataStream = false;
  conn._transactionCounter++;
  conn._unrecognizedCommands = 0;
  conn._resetSession();
}

function patchBdat(proto: Conn & Record<string, (this: Conn, command: Buffer, cb: Callback) => void>): void {
  const streamProto = SMTPStream.prototype as unknown as Parser & { _feedDataStream(chunk: Buffer, done: (err?: Error) => void): void };
  const originalFeed = streamProto._feedDataStream;

  // In BDAT mode the parser takes exactly `remaining` raw octets: no dot
  // handling, no line splitting (RFC 3030 §2). Bytes past the chunk are held
  // until the chunk's reply is sent, like smtp-server does after DATA, so
  // pipelined replies stay in order (RFC 2920).
  streamProto._feedDataStream = function (this: Parser, chunk: Buffer, done: (err?: Error) => void) {
    const b = this[BDAT_BYTES];
    if (!b) return originalFeed.call(this, chunk, done);
    const take = Math.min(b.remaining, chunk.length);
    const part = chunk.subarray(0, take);
    const rest = chunk.subarray(take);
    b.remaining -= take;
    const after = () => {
      if (b.remaining > 0) return done();
      this[BDAT_BYTES] = null;
      this._dataMode = false;
      b.complete(() => {
        if (rest.length) this._write(rest, 'buffer', done);
        else done();
      });
    };
    if (part.length && b.sink && !b.sink.destroyed) {
      if (!b.sink.write(part)) {
        // Backpressure: read no more from the socket until onData catches up.
        const sink = b.sink;
        const go = () => {
          sink.off('drain', go);
          sink.off('close', go);
          after();
        };
        sink.once('drain', go);
        sink.once('close', go);
        return;
      }
    }
    after();
  };

  proto.handler_BDAT = function (this: Conn, command, cb) {
    const m = /^BDAT[ \t]+(\d{1,15})(?:[ \t]+(LAST))?[ \t]*$/i.exec(command.toString('binary'));
    if (!m) {
      // RFC 3030 §2: without a valid size the octets that follow cannot be
      // told apart from commands, so the only safe move is to close.
      answer(this, reply('PG_BDAT_SYNTAX'));
      this.close();
      return cb();
    }
    const size = Number(m[1]);
    const last = Boolean(m[2]);
    const parser = this._parser;
    if (!parser) return cb();

    // Decide the chunk's fate now; its bytes are consumed whatever it is.
    let refusal: Reply | null = null;
    let t = this[BDAT_STATE] ?? null;
    if (!this.hostNameAppearsAs) refusal = reply('PG_NEED_HELO');
    else if (!this.session.user && this._isSupported('AUTH') && !this._server.options.authOptional) refusal = reply('PG_AUTH_REQUIRED');
    else if (!this.session.envelope.mailFrom) refusal = reply('PG_NEED_MAIL');
    else if (!this.session.envelope.rcptTo.length) refusal = reply('PG_NEED_RCPT');
    else if (t?.failed) refusal = reply('PG_BDAT_AFTER_FAILURE');

    if (!refusal && !t) {
      // First chunk: hand the message stream to onData exactly as DATA would.
      const stream = new PassThrough();
      const tx: BdatTransaction = { stream, bytes: 0, failed: false, aborted: false, result: null, onResult: null };
      t = tx;
      this[BDAT_STATE] = tx;
      // A client that goes away mid-transaction: onData must learn it, or
      // whatever it holds for the message would leak. (Not via _dataStream:
      // smtp-server's idle timer never fires while that is set and no data
      // mode is on, and a client idle between chunks must time out.)
      const socket = this._socket;
      const onGone = () => {
        if (!stream.writableEnded && !stream.destroyed) {
          stream.destroy(Object.assign(new Error('Connection closed before BDAT LAST'), { code: 'ECONNECTION' }));
        }
      };
      socket.once('close', onGone);
      stream.once('close', () => socket.off('close', onGone));
      Object.assign(stream, { byteLength: 0, sizeExceeded: false });
      this._server.onData(stream, this.session, (err, message) => {
        tx.result = { err, message };
        tx.onResult?.();
      });
    }
    const limit = this._server.options.size ?? 0;
    if (!refusal && t && limit && t.bytes + size > limit) {
      // RFC 3030 §4.2 / RFC 1870: refuse the chunk that passes the limit; the
      // sender must not send more, and later chunks are consumed and refused.
      failBdat(this, t);
      refusal = reply('PG_MESSAGE_TOO_BIG', { size: limit });
    }
    const tx = refusal ? null : t;
    if (tx) {
      tx.bytes += size;
      Object.assign(tx.stream!, { byteLength: tx.bytes });
    }

    const complete = (resume: () => void) => {
      if (refusal) {
        answer(this, refusal);
        return resume();
      }
      if (!tx || tx.aborted) return resume();
      if (!last) {
        answer(this, reply('PG_BDAT_CHUNK', { size }));
        return resume();
      }
      // LAST: the message is complete; the reply is the delivery outcome. While
      // it is decided, _dataStream keeps smtp-server's idle timer from firing
      // (RFC 5321 §4.5.3.2.6: the client waits up to 10 minutes for it).
      this._dataStream = tx.stream;
      tx.stream!.end();
      const outcome = () => {
        if (tx.aborted) return resume();
        const { err, message } = tx.result!;
        // The session's errors carry their reply (src/smtp/session.ts); one without a code is internal.
        if (err) this.send(err.responseCode ?? REPLIES.PG_INTERNAL.code, err.message);
        else if (typeof message === 'string') this.send(REPLIES.PG_QUEUED.code, message);
        else answer(this, reply('PG_QUEUED_WITHOUT_ID'));
        endTransaction(this);
        resume();
      };
      if (tx.result) outcome();
      else tx.onResult = outcome;
    };

    if (size === 0) {
      complete(cb);
      return;
    }
    parser[BDAT_BYTES] = { remaining: size, sink: tx?.stream ?? null, complete };
    parser._dataMode = true;
    cb();
  };
}

// ---------------------------------------------------------------------------

export interface SmtpServerInternals {
  secureContext: Map<string, unknown>;
  connections: Set<{ send(code: number, text: string): void; close(): void; session: unknown; _armTimeout(): void }>;
  connect(socket: import('node:net').Socket, opts: { id?: string; remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): void;
  options: Record<string, unknown>;
  [REPLY_HOOK]?: ReplyHook;
  [POLICY]?: SmtpPolicy;
}

export function internals(server: SMTPServer): SmtpServerInternals {
  return server as unknown as SmtpServerInternals;
}

// Named operations on smtp-server's private state for the rest of the
// gateway, so that every use of an internal stays in smtp/ (checked at
// start-up by installSmtpExtensions; docs/architecture.md §4.2).

/**
 * The idle timeout of every session, open ones included: their timers were
 * armed with the old value (RFC 5321 §4.5.3.2 gives the minimums; under
 * load the gateway cuts idle sessions sooner to make room).
 */
export function setIdleTimeout(server: SMTPServer, ms: number): void {
  const srv = internals(server);
  srv.options.socketTimeout = ms;
  for (const conn of srv.connections) conn._armTimeout();
}

/** The certificate STARTTLS presents to a client that sends no SNI. */
export function setDefaultSecureContext(server: SMTPServer, context: unknown): void {
  internals(server).secureContext.set('*', context);
}

/** Sends one reply line to every open session (the 421 at shutdown); a session that cannot take it is closed. */
export function sayToEverySession(server: SMTPServer, code: number, text: string): void {
  for (const conn of internals(server).connections) {
    try {
      conn.send(code, text);
    } catch {
      conn.close();
    }
  }
}

/**
 * The set of client addresses that passed the early-talker test, with an
 * expiry (like postscreen's cache): a sender that opens one connection per
 * message pays the pause once, not every time. Bounded in size.
 */
export class PassCache {
  private readonly until = new Map<string, number>();
  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number,
    private readonly max = 100_000,
  ) {}
  passed(address: string): boolean {
    const t = this.until.get(address);
    if (t === undefined) return false;
    if (t < this.now()) {
      this.until.delete(address);
      return false;
    }
    return true;
  }
  pass(address: string): void {
    this.until.delete(address);
    this.until.set(address, this.now() + this.ttlMs);
    if (this.until.size > this.max) this.until.delete(this.until.keys().next().value!);
  }
}
