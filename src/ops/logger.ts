/**
 * One pino root logger; children per SMTP session carry { sid } (and txn per
 * transaction). Secrets are redacted by path, bodies are never logged.
 */
import { pino, type Logger, type DestinationStream } from 'pino';
import { isoTime } from '../core/time.js';

export type { Logger } from 'pino';

export const REDACT_PATHS = [
  'password',
  '*.password',
  'secret',
  '*.secret',
  '*.*.secret',
  'signingKey',
  '*.signingKey',
  '*.*.signingKey',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'headers["webhook-signature"]',
];

/**
 * The root logger. Without a destination it writes to standard output
 * through a buffer: pino's default destination issues one write(2) per line,
 * and two lines per message cost about 200 µs of a 4 KB message's CPU in the
 * benchmark (docs/benchmarks.md). The buffer is written when it holds 4 KiB,
 * at least once a second, when the gateway has started or stopped
 * (flushLogs), and synchronously when the process exits, also after an
 * uncaught exception (pino registers that for asynchronous destinations).
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'postgate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      // pino's isoTime, without V8's toISOString (about a microsecond a line; core/time.ts).
      timestamp: () => `,"time":"${isoTime(Date.now())}"`,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? bufferedStdout(),
  );
}

function bufferedStdout(): DestinationStream {
  const dest = pino.destination({ dest: 1, sync: false, minLength: 4096 });
  setInterval(() => flushDestination(dest), 1000).unref();
  return dest;
}

function flushDestination(dest: { flush?: (cb?: (err?: Error | null) => void) => void }): void {
  try {
    // Lines not written yet stay in the buffer for the next flush or the exit.
    dest.flush?.(() => undefined);
  } catch {
    // A destroyed destination (standard output closed): nothing to write to.
  }
}

/** Writes what the root logger has buffered now (a no-op for a synchronous destination). */
export function flushLogs(logger: Logger): void {
  try {
    logger.flush(() => undefined);
  } catch {
    // as in flushDestination
  }
}

type Level = 'debug' | 'info' | 'warn' | 'error';

/**
 * Per root logger, a child that writes without path redaction, for the lines
 * of LazyLog: pino's redaction walks every object logged (its wildcard paths
 * included), about 1 % of the gateway's CPU per message in the benchmark's
 * profile for an 'accepted' line that can hold no secret.
 */
const unredacted = new WeakMap<Logger, Logger>();

function unredactedOf(parent: Logger): Logger {
  let plain = unredacted.get(parent);
  if (!plain) {
    plain = parent.child({}, { redact: [] });
    unredacted.set(parent, plain);
  }
  return plain;
}

/**
 * The logger of an SMTP session or transaction: its bindings ({ sid } and
 * { txn }) and the fields each line names. At the usual levels most sessions
 * never write a line, and the transaction's one line ('accepted') would pay
 * for a pino child() (which serialises its bindings when it is made) for one
 * write: so no child is made; a line is written by the root logger with the
 * bindings in front of its fields, which is the line a child writes.
 *
 * Its lines skip redaction: every call site (src/smtp/session.ts) logs named
 * scalar fields (addresses, codes, counts, a user name, error texts), never
 * a configuration, headers or credentials, which is what REDACT_PATHS is for.
 * A line that could carry those must go through the root logger instead.
 */
export class LazyLog {
  constructor(
    private readonly parent: Logger,
    private readonly bindings: Record<string, unknown>,
  ) {}

  private write(level: Level, obj: object, msg: string): void {
    if (!this.parent.isLevelEnabled(level)) return;
    unredactedOf(this.parent)[level]({ ...this.bindings, ...obj }, msg);
  }

  debug(obj: object, msg: string): void {
    this.write('debug', obj, msg);
  }

  info(obj: object, msg: string): void {
    this.write('info', obj, msg);
  }

  warn(obj: object, msg: string): void {
    this.write('warn', obj, msg);
  }

  error(obj: object, msg: string): void {
    this.write('error', obj, msg);
  }
}
