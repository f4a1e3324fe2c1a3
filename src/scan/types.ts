/**
 * What every scanner client shares: the input it reads, the verdicts it
 * returns and the one error it throws (docs/scanning.md). A client turns its
 * daemon's protocol into these and nothing else: the policy (tag, reject,
 * quarantine, onError) is the scan step's (scan/index.ts).
 *
 * Leaf module: imports nothing.
 */
import type { Readable } from 'node:stream';

/** The transaction facts a scanner may use (rspamd's SPF, RBL and per-user settings). */
export interface ScanEnvelope {
  mailFrom: string;
  rcptTo: readonly string[];
  helo: string;
  clientAddress: string;
  clientHostname: string | null;
  authUser: string | null;
  queueId: string;
}

export interface ScanInput {
  /**
   * The message as it will be delivered (trace headers included), fresh on
   * every call: one Buffer for a small message held in memory (one write,
   * no stream machinery per scan), a stream otherwise (a spilled message is
   * never read into memory whole).
   */
  content(): Promise<Buffer | Readable>;
  /** Its size in bytes (the stream yields exactly this many). */
  size: number;
  envelope: ScanEnvelope;
  /**
   * Time allowed for the verdict: the scanner's own timeout, or what is left
   * of the delivery deadline. Each client keeps it with the timers of its
   * transport (undici's, a socket's), not an AbortSignal per message.
   */
  timeoutMs: number;
}

export interface SpamResult {
  kind: 'spam';
  score: number;
  /** The score at which the scanner itself calls a message spam. */
  threshold: number;
  /** The scanner's own call: rspamd's action ("reject", "add header" …), or spamd's "Spam: True". */
  spam: boolean;
  /** rspamd's action, verbatim; "spam" or "no action" for SpamAssassin. */
  scannerAction: string;
  /** Names of the rules that matched (at most MAX_SYMBOLS). */
  symbols: string[];
  /** A text the scanner offers for the SMTP reply (rspamd's smtp_message), unfiltered. */
  message: string | null;
}

export interface VirusResult {
  kind: 'virus';
  infected: boolean;
  /** Signature names (at most MAX_SYMBOLS). */
  names: string[];
}

export type ScanResult = SpamResult | VirusResult;

export interface Scanner {
  /** Stable id for logs, metrics, the breaker and the event. */
  readonly id: string;
  readonly type: 'rspamd' | 'spamassassin' | 'clamav';
  scan(input: ScanInput): Promise<ScanResult>;
  close(): Promise<void>;
}

export type ScanErrorKind = 'timeout' | 'connect' | 'protocol' | 'refused';

/**
 * A scanner that did not give a verdict: unreachable, too slow, or an answer
 * that breaks its protocol. Always transient for the message (the policy's
 * onError decides what it becomes); `kind` is for logs and metrics.
 */
export class ScanError extends Error {
  constructor(
    readonly kind: ScanErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ScanError';
  }
}

/** Symbols or signature names kept per verdict: a hostile daemon cannot inflate the event. */
export const MAX_SYMBOLS = 100;
/** Longest symbol or signature name kept. */
export const MAX_NAME = 128;

/** A name from a daemon, kept only when it is short printable ASCII. */
export function cleanName(s: string): string | null {
  return s.length > 0 && s.length <= MAX_NAME && /^[\x21-\x7e]+$/.test(s) ? s : null;
}

/** Parses `host:port`, `[v6]:port` or a Unix socket path (starting with "/"). */
export function parseSocketAddress(address: string): { path: string } | { host: string; port: number } {
  if (address.startsWith('/')) return { path: address };
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(address);
  if (!m) throw new Error(`not host:port or a socket path: ${address}`);
  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

/** The error of a scan that ran out of time. */
export function timeoutError(scanner: string, ms: number): ScanError {
  return new ScanError('timeout', `${scanner}: no verdict within ${ms} ms`);
}
