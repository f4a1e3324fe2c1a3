/**
 * Every failure postgate reports carries a stable `code` (match on it, never on
 * the message), the SMTP reply it turns into, and whether it is transient.
 *
 * The temporary-vs-permanent split is decided at each failure site on purpose
 * (like Haraka's DENY / DENYSOFT): a transient error becomes a 4xx and the
 * sending MTA keeps the message and retries; a permanent one becomes a 5xx and
 * the sender bounces it. When in doubt a site chooses transient: deferring mail
 * costs minutes, bouncing it loses it (docs/errors.md).
 *
 * The replies themselves are rows of src/transaction/replies.ts
 * (docs/architecture.md §3.14), which makes a GatewayError from a row
 * (`failure`) and turns any other failure into PG_INTERNAL (`toGatewayError`).
 *
 * Leaf module: imports nothing from the rest of postgate.
 */

export interface SmtpReply {
  /** Basic reply code, RFC 5321 §4.2 (e.g. 451). */
  code: number;
  /** Enhanced status code, RFC 3463 (e.g. "4.3.0"); its class matches `code`. */
  enhanced: string;
}

export interface GatewayErrorOptions {
  code: string;
  /** For logs and operators: may name URLs, paths, statuses. */
  message: string;
  /** For the SMTP reply, seen by the sending MTA and its user: no internal details. Default: message. */
  publicMessage?: string | undefined;
  smtp?: SmtpReply | undefined;
  transient?: boolean | undefined;
  /** A receiver asked for this pause before the next attempt (HTTP Retry-After). */
  retryAfterMs?: number | undefined;
  /**
   * Whether another attempt within the delivery deadline may succeed. Default:
   * `transient`. False for transient failures that seconds will not fix (a
   * misconfigured URL, a receiver that asked to defer): the sender's queue retries.
   */
  retryable?: boolean | undefined;
  cause?: unknown;
}

export class GatewayError extends Error {
  readonly code: string;
  readonly smtp: SmtpReply | undefined;
  readonly transient: boolean;
  readonly publicMessage: string;
  readonly retryAfterMs: number | undefined;
  readonly retryable: boolean;
  /**
   * The HTTP status of the answer behind this failure (a webhook, a function
   * URL), for the message console's timeline; set by the target that read it.
   */
  httpStatus: number | undefined;

  constructor(opts: GatewayErrorOptions) {
    super(opts.message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'GatewayError';
    this.publicMessage = opts.publicMessage ?? opts.message;
    this.code = opts.code;
    this.smtp = opts.smtp;
    this.transient = opts.transient ?? (opts.smtp ? opts.smtp.code < 500 : true);
    this.retryAfterMs = opts.retryAfterMs;
    this.retryable = this.transient && (opts.retryable ?? true);
    this.httpStatus = undefined;
  }

  /**
   * The reply line text for smtp-server: the enhanced code first, so the
   * extension in src/smtp/ sends it instead of smtp-server's fixed table.
   */
  get replyText(): string {
    return this.smtp ? `${this.smtp.enhanced} ${this.publicMessage}` : this.publicMessage;
  }

  /** The `responseCode` smtp-server reads from a callback error. */
  get responseCode(): number | undefined {
    return this.smtp?.code;
  }
}

/**
 * How an attempt ended, as the console records it (docs/console.md, "What is
 * recorded"): the HTTP status when the target answered one, and of a
 * failure its stable code and its message on one line of at most 300
 * characters. Here because both the SMTP session and the queue's side of
 * the gateway record attempts, and the session imports console types only.
 */
export function attemptEnd(httpStatus: number | undefined, error: GatewayError | null | undefined): { httpStatus?: number; code?: string; detail?: string } {
  return {
    ...(httpStatus === undefined ? {} : { httpStatus }),
    ...(error ? { code: error.code, detail: error.message.replace(/[\r\n]+/g, ' ').slice(0, 300) } : {}),
  };
}

/** Every stable error code, with the documentation line `docs/errors.md` must carry. */
export const ERROR_CODES = {
  PG_CONFIG_INVALID: 'The configuration failed validation; every problem is listed with its path.',
  PG_CONFIG_READ: 'The configuration file could not be read or is not valid YAML.',
  PG_CONFIG_RELOAD: 'A newer configuration read from S3 or SSM was not applied; the configuration in force stays.',
  PG_SMTP_INTERNALS: 'The installed smtp-server lacks an internal that postgate extends; install a tested version.',
  PG_RCPT_SYNTAX: 'RCPT TO is not a routable address (553 5.1.3).',
  PG_RCPT_UNKNOWN_USER: 'RCPT TO names an unknown user in a served domain (550 5.1.1).',
  PG_RCPT_RELAY_DENIED: 'RCPT TO names a domain postgate does not serve (550 5.7.1).',
  PG_RCPT_OTHER_ROUTE: 'RCPT TO belongs to another route than the transaction\'s (452 4.5.3).',
  PG_RCPT_VALIDATION_UNAVAILABLE: 'The route\'s RCPT validation hook did not answer in time or failed; the recipient is deferred (451 4.4.3).',
  PG_RCPT_TOO_MANY: 'Too many recipients in one transaction (452 4.5.3).',
  PG_TLS_REQUIRED: 'MAIL or RCPT on a session without TLS where the listener or the route sets requireTls (530 5.7.0).',
  PG_MESSAGE_TOO_BIG: 'The message exceeds the size limit (552 5.3.4).',
  PG_MESSAGE_BARE_EOL: 'The message has a bare CR or LF and smtp.bareLineEndings is "reject" (554 5.6.0).',
  PG_MAIL_LOOP: 'More Received headers than smtp.maxReceivedHeaders: a mail loop (554 5.4.6).',
  PG_EARLY_TALKER: 'The client talked before the greeting (554 5.7.1).',
  PG_TOO_MANY_CONNECTIONS: 'Too many connections in all, or from one address (421).',
  PG_AUTH_FAILED: 'AUTH credentials were wrong (535 5.7.8).',
  PG_AUTH_THROTTLED: 'Too many failed AUTH attempts from this client address within auth.failureWindow (454 4.7.0).',
  PG_SHED_DISK: 'Free disk is under the configured floor; new transactions are deferred (452 4.3.1).',
  PG_SHED_MEMORY: 'In-flight message memory is over budget; transactions are deferred (451 4.3.2 / 421).',
  PG_SHUTTING_DOWN: 'The gateway is draining for shutdown (421 4.3.2).',
  // Connection-time filters (docs/blocklists.md).
  PG_CLIENT_DENIED: 'The client address is in smtp.clients.deny; the greeting is 554 5.7.1 and the connection ends at QUIT.',
  PG_DNSBL_LISTED: 'A DNS block list of smtp.dnsbl lists the client (554 5.7.1 at connect, 550 5.7.1 at RCPT).',
  PG_DNSBL_LOOKUP: 'A DNS block list lookup failed or timed out; the client is treated as not listed (fail open).',
  PG_PROXY_HEADER: 'A PROXY protocol header was missing, malformed or came from an untrusted source.',
  PG_TLS_CERT: 'A TLS certificate or key could not be loaded.',
  PG_DELIVERY_FAILED: 'A target did not acknowledge the message; the sender retries (451 4.x.x).',
  PG_TARGET_DOWN: 'A required target of the route failed repeatedly and is marked down; RCPT gets 451 4.4.1 until its cooldown ends.',
  PG_TARGET_REJECTED: 'A target refused the message on purpose (a JSON reject, or a status listed in permanentOn): 5xx with its reason.',
  PG_EVENT_TOO_LARGE: 'The event is larger than a target accepts and could not be sent as a claim-check pointer (552 5.3.4).',
  PG_TARGET_DISABLED: 'A webhook answered 410 Gone: the target is disabled until restart and its routes defer mail (451).',
  PG_QUEUE_FULL: 'The spool holds queue.maxItems items; queued routes defer new mail (452 4.3.1) and readiness is false.',
  PG_QUEUE_WRITE: 'A message could not be written to the spool durably (451 4.3.0); nothing was accepted.',
  PG_QUEUE_READ: 'A queued item could not be read from the spool; it stays there and is tried again at its next attempt.',
  PG_QUEUE_TARGET_GONE: 'A queued item names a target that is no longer configured; it became a dead letter.',
  PG_DSN_SEND: 'A delivery status notification could not be handed to the dsn.relay; it is tried again per dsn.retry, then given up.',
  PG_STORE_WRITE: 'The local store could not write the message durably (451 4.3.0).',
  PG_SCAN_SPAM: 'A spam scanner judged the message spam and the route\'s scan.spam is "reject" (550 5.7.1).',
  PG_SCAN_VIRUS: 'A virus scanner found malware and the route\'s scan.virus is "reject" (554 5.7.1).',
  PG_SCAN_UNAVAILABLE: 'A scanner gave no verdict (down, slow, broken answer, or its breaker open) and onError is "tempfail" (451 4.3.0).',
  PG_TRANSACTION_ABORTED: 'The client left or reset the transaction before it ended; nothing was accepted.',
  PG_LISTEN: 'A listener could not bind its address (in use, or not permitted).',
  PG_FN_CONFIG: 'A cloud function\'s settings (environment variables or routes file) are missing or invalid; every problem is listed.',
  PG_FN_UNAUTHORIZED: 'The ingest function refused an HTTP request whose Standard Webhooks signature or timestamp did not verify (401).',
  PG_CONSOLE_UNAVAILABLE: 'The message console cannot open or write its index; mail still flows and /readyz lists the console as degraded.',
  PG_CONSOLE_AUTH: 'A console request without a valid token or user when console.auth is set (HTTP 401).',
  PG_CONSOLE_CSRF: 'A console state change without the session\'s CSRF token, or from a foreign Origin (HTTP 403).',
  PG_CONSOLE_HOST: 'A console request whose Host is not this console (DNS rebinding guard, HTTP 403).',
  PG_CONSOLE_NOT_FOUND: 'The console has no such message, attachment or route (HTTP 404).',
  PG_CONSOLE_BAD_REQUEST: 'A console request the API cannot use: a bad query parameter, body or target id (HTTP 400, 409 for an unknown target).',
  PG_CONSOLE_NO_QUEUE: 'A console retry with no queued route: a synchronous delivery is retried by its sender (HTTP 409).',
  PG_CONSOLE_NOTHING_TO_RETRY: 'A console retry of a message with nothing waiting or dead in the queue (HTTP 409).',
  PG_CONSOLE_NOT_STORED: 'A console replay of a message whose stored copy retention removed (HTTP 409).',
  PG_FN_BAD_EVENT: 'A cloud function got input it cannot use: not a postgate event, a direct invocation without a delivery id, a bad redrive filter (400).',
  PG_INTERNAL: 'An unexpected internal error; the message is deferred, never accepted (451 4.3.0).',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;
