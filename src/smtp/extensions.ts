/**
 * Every place postgate reaches into smtp-server's internals lives here, and
 * `assertSmtpServerInternals()` checks at startup that each one still exists,
 * so an incompatible smtp-server release fails fast with PG_SMTP_INTERNALS
 * instead of misbehaving on live mail.
 *
 * Internals used (checked against smtp-server 3.21.x):
 * - SMTPConnection.prototype.send(code, data, context): the one write site of
 *   replies. Wrapped to choose the enhanced status code per reply (RFC 3463,
 *   RFC 2034) instead of smtp-server's fixed table, and to count replies.
 * - SMTPServer#connect(socket, opts): hands an accepted socket to a session;
 *   postgate runs its own net.Server (PROXY protocol, implicit TLS).
 * - SMTPServer#secureContext: Map of TLS contexts; '*' is the default, swapped
 *   on certificate hot reload.
 * - SMTPServer#connections: Set of live sessions, for draining.
 */
import { SMTPServer } from 'smtp-server';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { GatewayError } from '../core/errors.js';

/** A reply whose text starts with an enhanced code ("4.5.3 …") is sent as written. */
const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

/**
 * Replies smtp-server words itself whose table code is wrong for what they
 * mean: 538 is RFC 4954 §6 "Encryption required" (5.7.11); 552 is only ever
 * the size limit here (RFC 3463 5.3.4, "message too big for system").
 */
const ENHANCED_OVERRIDES: Record<number, string> = { 538: '5.7.11', 552: '5.3.4' };

export const REPLY_HOOK = Symbol.for('postgate.replyHook');

export type ReplyHook = (code: number) => void;

interface ConnectionInternals {
  send(code: number, data?: string | string[], context?: string | false): void;
  _server: { [REPLY_HOOK]?: ReplyHook; options: Record<string, unknown> };
}

let patched = false;

export function assertSmtpServerInternals(): void {
  const missing: string[] = [];
  const proto = SMTPConnection?.prototype as unknown as Record<string, unknown> | undefined;
  if (typeof proto?.send !== 'function') missing.push('SMTPConnection.prototype.send');
  if (typeof proto?._getEnhancedStatusCode !== 'function') missing.push('SMTPConnection.prototype._getEnhancedStatusCode');
  if (typeof (SMTPServer.prototype as unknown as Record<string, unknown>).connect !== 'function') missing.push('SMTPServer.prototype.connect');
  const probe = new SMTPServer({ logger: false, disabledCommands: ['STARTTLS'] }) as unknown as Record<string, unknown>;
  if (!(probe.secureContext instanceof Map)) missing.push('SMTPServer#secureContext');
  if (!(probe.connections instanceof Set)) missing.push('SMTPServer#connections');
  if (missing.length) {
    throw new GatewayError({
      code: 'PG_SMTP_INTERNALS',
      message: `the installed smtp-server lacks internals postgate extends: ${missing.join(', ')}; install a tested version (see package.json)`,
      transient: false,
    });
  }
}

/** Installs the extensions once per process (they are prototype-wide). */
export function installSmtpExtensions(): void {
  if (patched) return;
  assertSmtpServerInternals();
  const proto = SMTPConnection.prototype as unknown as ConnectionInternals;
  const originalSend = proto.send;
  proto.send = function send(this: ConnectionInternals, code, data, context) {
    this._server[REPLY_HOOK]?.(code);
    if (typeof data === 'string' && ENHANCED_PREFIX.test(data)) {
      return originalSend.call(this, code, data, false);
    }
    const override = ENHANCED_OVERRIDES[code];
    if (override && context !== false && typeof data === 'string' && this._server.options.hideENHANCEDSTATUSCODES === false) {
      return originalSend.call(this, code, `${override} ${data}`, false);
    }
    return originalSend.call(this, code, data, context);
  };
  patched = true;
}

export interface SmtpServerInternals {
  secureContext: Map<string, unknown>;
  connections: Set<{ send(code: number, text: string): void; close(): void; session: unknown }>;
  connect(socket: import('node:net').Socket, opts: { remoteAddress?: string; remotePort?: number; localAddress?: string; localPort?: number }): void;
  [REPLY_HOOK]?: ReplyHook;
}

export function internals(server: SMTPServer): SmtpServerInternals {
  return server as unknown as SmtpServerInternals;
}
