/**
 * Every SMTP reply postgate writes itself, in one table (docs/architecture.md
 * §3.14). Each row is named by a stable code and owns its reply: the basic
 * code (RFC 5321 §4.2), the enhanced status code (RFC 3463, RFC 2034) and the
 * text, with named placeholders such as {hostname} or {address}. Call sites
 * name only the code: `reply('PG_CMD_NOT_IMPLEMENTED')`,
 * `failure('PG_RCPT_UNKNOWN_USER', { vars: { address } })`.
 *
 * A row named after an error code of core/errors.ts is that failure's reply.
 * A failure with more than one reply has further rows that name the code
 * they are raised (and logged) under in `raises`. The other rows answer
 * commands and are not failures. Replies smtp-server words itself (its own
 * syntax and sequence errors) are not here; only the enhanced codes postgate
 * puts on some of them are (SMTP_SERVER_ENHANCED).
 *
 * docs/errors.md lists every row; test/docs.test.ts holds the two against
 * each other, test/replies.test.ts holds the classes and that no reply is
 * written anywhere else in src/.
 *
 * Leaf module: imports only core/errors.ts (GatewayError).
 */
import { GatewayError, type ErrorCode } from '../core/errors.js';

export interface ReplyRow {
  /** Basic reply code, RFC 5321 §4.2.3. */
  readonly code: number;
  /**
   * Enhanced status code, RFC 3463; its class is the basic code's (§3.1).
   * Null only for the greeting, which carries none (RFC 2034 §4).
   */
  readonly enhanced: string | null;
  /** The text; {name} is a placeholder, '\n' separates the lines of a multi-line reply (RFC 5321 §4.2.1). */
  readonly text: string;
  /** The error code a failure with this reply is raised and logged under, when the row is not named after it. */
  readonly raises?: ErrorCode;
}

// Texts that several failures share, written once.
const DELIVERY_DEFERRED = 'Temporary delivery failure, try again later';
const STORAGE_FULL = 'Insufficient system storage, try again later';
const LOCAL_ERROR = 'Temporary local error, try again later';
const TOO_BUSY = 'Too busy, try again later';
const AUTH_REQUIRED = 'Authentication required';

export const REPLIES = {
  // --- The connection (smtp/listener.ts, gateway.ts, smtp/extensions.ts)
  PG_SHUTTING_DOWN: { code: 421, enhanced: '4.3.2', text: '{hostname} Service shutting down, try again later' },
  PG_TOO_MANY_CONNECTIONS: { code: 421, enhanced: '4.3.2', text: '{hostname} Too many connected clients, try again later' },
  PG_TOO_MANY_CONNECTIONS_FROM_ADDRESS: { code: 421, enhanced: '4.7.0', text: '{hostname} Too many connections from your address', raises: 'PG_TOO_MANY_CONNECTIONS' },
  /** smtp-server's own client limit per listener, a backstop behind the count of gateway.ts. */
  PG_LISTENER_FULL: { code: 421, enhanced: '4.3.2', text: '{hostname} Too many connected clients, try again in a moment', raises: 'PG_TOO_MANY_CONNECTIONS' },
  PG_SHED_MEMORY_CONNECTION: { code: 421, enhanced: '4.3.2', text: `{hostname} ${TOO_BUSY}`, raises: 'PG_SHED_MEMORY' },
  /** The first line of a multi-line greeting; smtp-server writes the last one (RFC 5321 §4.2.1). */
  PG_GREETING_PAUSE: { code: 220, enhanced: null, text: '{hostname} ESMTP postgate' },
  PG_EARLY_TALKER: { code: 554, enhanced: '5.7.1', text: '{hostname} Protocol error: talking before the greeting' },

  // --- Connection-time filters: smtp.clients.deny and smtp.dnsbl (docs/blocklists.md)
  // RFC 5321 §3.1: 554 may take the place of the greeting; the server then waits for QUIT.
  PG_CLIENT_DENIED: { code: 554, enhanced: '5.7.1', text: '{hostname} Service unavailable: client [{address}] is denied access' },
  /** {reason} is empty, or "; " and the list's sanitized TXT text. */
  PG_DNSBL_LISTED_CONNECTION: { code: 554, enhanced: '5.7.1', text: '{hostname} Service unavailable: client [{address}] blocked using {zone}{reason}', raises: 'PG_DNSBL_LISTED' },
  // RFC 5321 §4.2.3: 550, not taken for policy reasons; postmaster and abuse stay reachable (§4.5.1).
  PG_DNSBL_LISTED: { code: 550, enhanced: '5.7.1', text: '<{address}>: Recipient address rejected: client [{client}] blocked using {zone}{reason}' },
  /** Every command but QUIT after a 554 in place of the greeting (RFC 5321 §3.1). */
  PG_REFUSED_SEQUENCE: { code: 503, enhanced: '5.5.1', text: 'Bad sequence of commands: no SMTP service here, send QUIT' },
  PG_REFUSED_QUIT: { code: 221, enhanced: '2.0.0', text: '{hostname} closing connection' },
  // --- End of the connection-time filters

  // --- AUTH (RFC 4954 §6)
  PG_AUTH_FAILED: { code: 535, enhanced: '5.7.8', text: 'Authentication credentials invalid' },
  PG_AUTH_THROTTLED: { code: 454, enhanced: '4.7.0', text: 'Too many authentication failures, try again later' },
  PG_AUTH_REQUIRED: { code: 530, enhanced: '5.7.0', text: AUTH_REQUIRED },

  // --- MAIL
  PG_SHED_MEMORY: { code: 451, enhanced: '4.3.2', text: TOO_BUSY },
  PG_SHED_DISK: { code: 452, enhanced: '4.3.1', text: STORAGE_FULL },
  PG_MAIL_PARAM_UNSUPPORTED: { code: 555, enhanced: '5.5.4', text: 'Unsupported MAIL parameter {param}' },
  /** RFC 3207 §4: the reply to a command that needs a TLS session. */
  PG_TLS_REQUIRED: { code: 530, enhanced: '5.7.0', text: 'Must issue a STARTTLS command first' },

  // --- RCPT
  PG_RCPT_SYNTAX: { code: 553, enhanced: '5.1.3', text: '<{address}>: Bad recipient address syntax' },
  PG_RCPT_RELAY_DENIED: { code: 550, enhanced: '5.7.1', text: '<{address}>: Relay access denied' },
  PG_RCPT_UNKNOWN_USER: { code: 550, enhanced: '5.1.1', text: '<{address}>: Recipient address rejected: User unknown' },
  PG_RCPT_OTHER_ROUTE: { code: 452, enhanced: '4.5.3', text: '<{address}>: Too many recipients (other route), send it in a new transaction' },
  PG_RCPT_TOO_MANY: { code: 452, enhanced: '4.5.3', text: 'Too many recipients' },
  PG_RCPT_VALIDATION_UNAVAILABLE: { code: 451, enhanced: '4.4.3', text: '<{address}>: Recipient verification unavailable, try again later' },
  PG_TARGET_DOWN: { code: 451, enhanced: '4.4.1', text: '<{address}>: Destination temporarily unavailable, try again later' },
  PG_RCPT_PARAM_UNSUPPORTED: { code: 555, enhanced: '5.5.4', text: 'Unsupported RCPT parameter {param}' },
  PG_RCPT_TLS_REQUIRED: { code: 530, enhanced: '5.7.0', text: '<{address}>: Must issue a STARTTLS command first', raises: 'PG_TLS_REQUIRED' },

  // --- DATA and BDAT (RFC 3030)
  PG_DATA_SYNTAX: { code: 501, enhanced: '5.5.4', text: 'DATA takes no argument' },
  PG_DATA_AFTER_BDAT: { code: 503, enhanced: '5.5.1', text: 'DATA not allowed after BDAT in one transaction' },
  PG_BINARYMIME_NEEDS_BDAT: { code: 503, enhanced: '5.5.1', text: 'BODY=BINARYMIME requires BDAT' },
  PG_BDAT_SYNTAX: { code: 501, enhanced: '5.5.4', text: 'Syntax: BDAT <size> [LAST]; closing connection' },
  // smtp-server's own wording for the same sequence errors after other commands.
  PG_NEED_HELO: { code: 503, enhanced: '5.5.1', text: 'Error: send HELO/EHLO first' },
  PG_NEED_MAIL: { code: 503, enhanced: '5.5.1', text: 'Error: need MAIL command' },
  PG_NEED_RCPT: { code: 503, enhanced: '5.5.1', text: 'Error: need RCPT command' },
  PG_BDAT_AFTER_FAILURE: { code: 503, enhanced: '5.5.1', text: 'Error: an earlier BDAT chunk of this transaction failed; send RSET' },
  PG_BDAT_CHUNK: { code: 250, enhanced: '2.0.0', text: '{size} octets received' },
  PG_MESSAGE_TOO_BIG: { code: 552, enhanced: '5.3.4', text: 'Message size exceeds fixed limit of {size} bytes' },
  PG_MESSAGE_BARE_EOL: { code: 554, enhanced: '5.6.0', text: 'Message contains a bare CR or LF (RFC 5321 section 2.3.8)' },
  PG_MAIL_LOOP: { code: 554, enhanced: '5.4.6', text: 'Too many Received headers ({hops}): mail loop detected' },
  /** Never written: the client left or reset (docs/errors.md). The reply stands in the log. */
  PG_TRANSACTION_ABORTED: { code: 451, enhanced: '4.3.0', text: 'Transaction aborted, nothing was accepted' },

  // --- The reply after the end of data (docs/architecture.md §2)
  PG_QUEUED: { code: 250, enhanced: '2.0.0', text: 'Ok: queued as {queueId}' },
  /** BDAT LAST when onData gave no text (smtp-server's DATA has its own). */
  PG_QUEUED_WITHOUT_ID: { code: 250, enhanced: '2.0.0', text: 'Ok: queued' },
  PG_DELIVERY_FAILED: { code: 451, enhanced: '4.4.0', text: DELIVERY_DEFERRED },
  // RFC 3463 §3.5 / §3.4: what kept the target from acknowledging.
  PG_DELIVERY_NO_ANSWER: { code: 451, enhanced: '4.4.1', text: DELIVERY_DEFERRED, raises: 'PG_DELIVERY_FAILED' },
  PG_DELIVERY_CONNECTION_BROKEN: { code: 451, enhanced: '4.4.2', text: DELIVERY_DEFERRED, raises: 'PG_DELIVERY_FAILED' },
  PG_DELIVERY_CONGESTED: { code: 451, enhanced: '4.4.5', text: DELIVERY_DEFERRED, raises: 'PG_DELIVERY_FAILED' },
  PG_DELIVERY_MISCONFIGURED: { code: 451, enhanced: '4.3.5', text: DELIVERY_DEFERRED, raises: 'PG_DELIVERY_FAILED' },
  PG_DELIVERY_RECEIVER_FAULT: { code: 451, enhanced: '4.3.0', text: DELIVERY_DEFERRED, raises: 'PG_DELIVERY_FAILED' },
  PG_DELIVERY_EXPIRED: { code: 451, enhanced: '4.4.7', text: 'Delivery time expired, try again later', raises: 'PG_DELIVERY_FAILED' },
  /** A receiver's `tempfail`: its own 45x, enhanced code and text replace these when it gives them (delivery/reply.ts). */
  PG_DELIVERY_TEMPFAIL: { code: 451, enhanced: '4.3.0', text: 'Temporary failure at the recipient, try again later', raises: 'PG_DELIVERY_FAILED' },
  /** A receiver's `reject` or a status in permanentOn: its own 55x, enhanced code and text replace these when it gives them. */
  PG_TARGET_REJECTED: { code: 550, enhanced: '5.7.1', text: 'Message rejected by the recipient' },
  PG_TARGET_DISABLED: { code: 451, enhanced: '4.3.5', text: DELIVERY_DEFERRED },
  PG_EVENT_TOO_LARGE: { code: 552, enhanced: '5.3.4', text: 'Message too large for its destination' },
  PG_QUEUE_FULL: { code: 452, enhanced: '4.3.1', text: STORAGE_FULL },
  PG_QUEUE_WRITE: { code: 451, enhanced: '4.3.0', text: LOCAL_ERROR },
  PG_STORE_WRITE: { code: 451, enhanced: '4.3.0', text: LOCAL_ERROR },
  PG_INTERNAL: { code: 451, enhanced: '4.3.0', text: 'Internal error, try again later' },
  PG_TRANSACTION_LOST: { code: 451, enhanced: '4.3.0', text: 'Transaction state lost, try again', raises: 'PG_INTERNAL' },

  // --- Content scanning after the end of data (scan/, docs/scanning.md)
  // RFC 3463 X.7.1: delivery not authorized, message refused. {reason} is the
  // scanner's text only when it is one short printable line (scan/index.ts safeReason).
  PG_SCAN_SPAM: { code: 550, enhanced: '5.7.1', text: 'Message rejected as spam: {reason}' },
  PG_SCAN_VIRUS: { code: 554, enhanced: '5.7.1', text: 'Message rejected: virus found ({reason})' },
  PG_SCAN_UNAVAILABLE: { code: 451, enhanced: '4.3.0', text: 'Content scan unavailable, try again later' },

  // --- Other commands
  PG_HELP: { code: 214, enhanced: '2.0.0', text: 'Commands supported:\n{commands}\nHELP <command> for more' },
  PG_HELP_TOPIC: { code: 214, enhanced: '2.0.0', text: '{help}' },
  PG_HELP_UNKNOWN: { code: 504, enhanced: '5.5.1', text: 'HELP topic {topic} unknown' },
  // RFC 5321 §3.5.3 / §7.3: no address harvesting; 252 says "send it and see".
  PG_VRFY_SYNTAX: { code: 501, enhanced: '5.5.4', text: 'Syntax: VRFY <address>' },
  PG_VRFY_CANNOT: { code: 252, enhanced: '2.5.2', text: 'Cannot VRFY user, but will accept message and attempt delivery' },
  /** smtp.vrfy "routes": mail for the address is accepted here (RFC 5321 §3.5.3). */
  PG_VRFY_DELIVERABLE: { code: 250, enhanced: '2.1.5', text: '<{address}>' },
  PG_EXPN_SYNTAX: { code: 501, enhanced: '5.5.4', text: 'Syntax: EXPN <list>' },
  PG_EXPN_CANNOT: { code: 252, enhanced: '2.5.2', text: 'Cannot EXPN list, but will accept message and attempt delivery' },
  // ETRN, RFC 1985 §5.
  PG_ETRN_SYNTAX: { code: 501, enhanced: '5.5.4', text: 'Syntax: ETRN <domain>' },
  PG_ETRN_SYNTAX_NODE: { code: 501, enhanced: '5.5.4', text: 'Syntax: ETRN <domain>, @<domain> or #<queue name>' },
  PG_ETRN_SYNTAX_QUEUE: { code: 501, enhanced: '5.5.4', text: 'Syntax: ETRN #<queue name>' },
  PG_ETRN_STARTED: { code: 253, enhanced: '2.0.0', text: 'OK, {count} pending messages for node {node} started' },
  PG_ETRN_QUEUING: { code: 250, enhanced: '2.0.0', text: 'Queuing for node {node} started' },
  PG_ETRN_NOTHING_WAITING: { code: 251, enhanced: '2.0.0', text: 'OK, no messages waiting for node {node}' },
  // 459 is a transient reply (RFC 1985 §5), so its enhanced code is of class
  // 4 too (RFC 3463 §3.1): 4.7.1, delivery not authorized.
  PG_ETRN_NOT_ALLOWED: { code: 459, enhanced: '4.7.1', text: 'Node {node} not allowed: this client may not start the queue' },
  PG_ETRN_UNAVAILABLE: { code: 458, enhanced: '4.3.0', text: 'Unable to queue messages for node {node}: no queue in this mode' },
  // RFC 5321 Appendix F.1: TURN is insecure and removed. RFC 2645 §4: ATRN requires authentication.
  PG_TURN_NOT_SUPPORTED: { code: 502, enhanced: '5.5.1', text: 'TURN is not supported (RFC 5321 Appendix F.1)' },
  PG_ATRN_NO_MAIL: { code: 453, enhanced: '4.3.0', text: 'You have no mail' },
  /** Verbs known but never offered (the Exchange-internal X-EXPS, X-EXCH50, X-LINK2STATE). */
  PG_CMD_NOT_IMPLEMENTED: { code: 502, enhanced: '5.5.1', text: 'Command not implemented' },
} as const satisfies Record<string, ReplyRow>;

type Rows = typeof REPLIES;
export type ReplyName = keyof Rows;

/** Rows a failure is raised with: named after an error code, or naming one in `raises`. */
export type FailureName = { [K in ReplyName]: K extends ErrorCode ? K : Rows[K] extends { raises: ErrorCode } ? K : never }[ReplyName];

/** The placeholders of a template, as a union of names. */
type Placeholders<S extends string> = S extends `${string}{${infer Name}}${infer Rest}` ? Name | Placeholders<Rest> : never;
type NamesOf<K extends ReplyName> = Placeholders<Rows[K]['text']>;
export type ReplyVars<K extends ReplyName> = { readonly [P in NamesOf<K>]: string | number };
type VarsArgs<K extends ReplyName> = [NamesOf<K>] extends [never] ? [] : [vars: ReplyVars<K>];

/**
 * Replies smtp-server words itself whose enhanced code postgate chooses
 * instead of smtp-server's table: 538 is RFC 4954 §6 "Encryption required"
 * (5.7.11); 552 is only ever the size limit here, as PG_MESSAGE_TOO_BIG.
 */
export const SMTP_SERVER_ENHANCED: Readonly<Record<number, string>> = { 538: '5.7.11', 552: REPLIES.PG_MESSAGE_TOO_BIG.enhanced };

/** HELP <topic> texts (PG_HELP_TOPIC), one per command offered. */
export const HELP_TOPICS: Readonly<Record<string, string>> = {
  HELO: 'HELO <domain> - identify yourself (RFC 5321 section 4.1.1.1)',
  EHLO: 'EHLO <domain> - identify yourself and list extensions (RFC 5321 section 4.1.1.1)',
  MAIL: 'MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME|BINARYMIME] [SMTPUTF8] - start a transaction',
  RCPT: 'RCPT TO:<address> - add a recipient',
  DATA: 'DATA - send the message, end with <CRLF>.<CRLF>',
  BDAT: 'BDAT <size> [LAST] - send exactly <size> octets of the message (RFC 3030)',
  RSET: 'RSET - abort the transaction',
  NOOP: 'NOOP - do nothing',
  QUIT: 'QUIT - close the connection',
  HELP: 'HELP [command] - this help',
  VRFY: 'VRFY <address> - answers 252: addresses are not disclosed',
  EXPN: 'EXPN <list> - answers 252: lists are not disclosed',
  STARTTLS: 'STARTTLS - start TLS (RFC 3207)',
  AUTH: 'AUTH PLAIN|LOGIN - authenticate, over TLS only (RFC 4954)',
  ETRN: 'ETRN <domain> - start delivery of queued mail for a domain (RFC 1985)',
};

/** HELP VRFY when smtp.vrfy is "routes". */
export const HELP_VRFY_ROUTES = `VRFY <address> - ${REPLIES.PG_VRFY_DELIVERABLE.code} if mail for the address is accepted here, ${REPLIES.PG_RCPT_UNKNOWN_USER.code} if not`;

/** A rendered reply. */
export interface Reply {
  readonly code: number;
  readonly enhanced: string | null;
  /** The text with its placeholders filled; lines separated by '\n'. */
  readonly text: string;
  /** Each line as smtp-server's send() takes it: the enhanced code, a space, the text (RFC 2034 §4: on every line). */
  readonly lines: readonly string[];
  /** As on the wire, without the final CRLF: "552 5.3.4 Message size …"; lines of a multi-line reply joined by CRLF, "214-…" before the last. */
  readonly line: string;
}

/** Fills {name} placeholders; a placeholder without a value is a programming error. */
export function render(template: string, vars: Readonly<Record<string, string | number>> = {}): string {
  return template.replace(/\{(\w+)\}/g, (_, name: string) => {
    const value = vars[name];
    if (value === undefined) throw new Error(`reply placeholder {${name}} has no value`);
    return String(value);
  });
}

function rendered(code: number, enhanced: string | null, text: string): Reply {
  const lines = text.split('\n').map((l) => (enhanced ? `${enhanced} ${l}` : l));
  const line = lines.map((l, i) => `${code}${i < lines.length - 1 ? '-' : ' '}${l}`).join('\r\n');
  return { code, enhanced, text, lines, line };
}

/** The reply of a row: `reply('PG_BDAT_CHUNK', { size })`. */
export function reply<K extends ReplyName>(name: K, ...vars: VarsArgs<K>): Reply {
  const row: ReplyRow = REPLIES[name];
  return rendered(row.code, row.enhanced, render(row.text, vars[0]));
}

export interface FailureOptions {
  /** For logs and operators: may name URLs, paths, statuses. Default: the reply text. */
  message?: string | undefined;
  cause?: unknown;
  /** See GatewayErrorOptions.retryable (core/errors.ts). */
  retryable?: boolean | undefined;
  retryAfterMs?: number | undefined;
  /**
   * What a receiver chose in place of the row's code, enhanced code or text
   * (PG_TARGET_REJECTED, PG_DELIVERY_TEMPFAIL), already clamped to the row's
   * class and to one printable line by delivery/reply.ts.
   */
  chosen?: { code?: number | undefined; enhanced?: string | undefined; text?: string | undefined } | undefined;
}

type FailureArgs<K extends FailureName> = [NamesOf<K>] extends [never] ? [opts?: FailureOptions] : [opts: FailureOptions & { vars: ReplyVars<K> }];

/**
 * A GatewayError with the reply of a row: its code is the row's (or the one
 * in `raises`), transient exactly when the reply is 4xx (docs/architecture.md
 * §2.2), and its public message is the reply text.
 */
export function failure<K extends FailureName>(name: K, ...args: FailureArgs<K>): GatewayError {
  const row: ReplyRow = REPLIES[name];
  const opts: (FailureOptions & { vars?: Readonly<Record<string, string | number>> }) | undefined = args[0];
  const code = opts?.chosen?.code ?? row.code;
  const enhanced = opts?.chosen?.enhanced ?? row.enhanced ?? '';
  const text = opts?.chosen?.text ?? render(row.text, opts?.vars);
  return new GatewayError({
    code: row.raises ?? (name as ErrorCode),
    message: opts?.message ?? text,
    publicMessage: text,
    smtp: { code, enhanced },
    transient: code < 500,
    retryable: opts?.retryable,
    retryAfterMs: opts?.retryAfterMs,
    cause: opts?.cause,
  });
}

/**
 * Any failure that is not already a GatewayError is an internal fault: the
 * message is deferred (PG_INTERNAL, 451), never accepted, and the reply says
 * nothing of the cause, which is kept for the log.
 */
export function toGatewayError(err: unknown, context = 'internal error'): GatewayError {
  if (err instanceof GatewayError) return err;
  return failure('PG_INTERNAL', { message: `${context}: ${err instanceof Error ? err.message : String(err)}`, cause: err });
}

/**
 * The reply for a recipient no route accepts, by the routing decision's kind,
 * shared by RCPT, VRFY and `postgate route`: never an open relay (550 5.7.1),
 * unknown users 550 5.1.1 (RFC 5321 §3.5.3).
 */
export const RCPT_REFUSALS = {
  invalid: 'PG_RCPT_SYNTAX',
  'relay-denied': 'PG_RCPT_RELAY_DENIED',
  'unknown-user': 'PG_RCPT_UNKNOWN_USER',
} as const satisfies Record<string, FailureName>;

export function recipientRefusal(kind: keyof typeof RCPT_REFUSALS, address: string): GatewayError {
  return failure(RCPT_REFUSALS[kind], { vars: { address } });
}
