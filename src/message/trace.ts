/**
 * Trace headers added to every accepted message (RFC 5321 §4.4): a
 * `Return-Path` with the envelope sender and a `Received` line naming the
 * client, this host, the protocol (RFC 3848: ESMTP, ESMTPS, ESMTPA, ESMTPSA)
 * and the queue id. They go into what is stored and delivered; the
 * idempotency hash uses the bytes as received, before them. Leaf module.
 */

export interface TraceInfo {
  mailFrom: string;
  rcptTo: readonly string[];
  helo: string;
  clientAddress: string;
  clientHostname?: string | undefined;
  hostname: string;
  transport: Transport;
  tls?: { protocol: string; cipher: string } | undefined;
  queueId: string;
  date: Date;
}

export type Transport = 'SMTP' | 'ESMTP' | 'ESMTPS' | 'ESMTPA' | 'ESMTPSA';

/** RFC 3848 §2: "with" keyword from what the session used. */
export function transportOf(ehlo: boolean, tls: boolean, auth: boolean): Transport {
  if (!ehlo) return 'SMTP';
  return `ESMTP${tls ? 'S' : ''}${auth ? 'A' : ''}` as Transport;
}

/** RFC 5322 §3.3 date-time, e.g. "Mon, 23 Nov 2026 18:57:43 +0000". */
export function rfc5322Date(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${p(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}

// Client-supplied words end up in a header: keep only printable, non-structural characters.
function clean(s: string, max = 255): string {
  return s.replace(/[^\x21-\x7e\u00a0-\uffff]/g, '').replace(/[()\\;]/g, '').slice(0, max);
}

/** The trace header block, CRLF-terminated, to prepend to the message. */
export function traceHeaders(t: TraceInfo): string {
  const client = t.clientAddress.includes(':') ? `IPv6:${t.clientAddress}` : t.clientAddress;
  const from = `from ${clean(t.helo) || 'unknown'} (${t.clientHostname ? `${clean(t.clientHostname)} ` : ''}[${client}])`;
  const by = `by ${clean(t.hostname)} (postgate)`;
  const tls = t.tls ? ` (${clean(t.tls.protocol)} cipher ${clean(t.tls.cipher)})` : '';
  // One recipient is named (RFC 5321 §4.4 "for" clause); naming many would disclose Bcc.
  const forClause = t.rcptTo.length === 1 ? `\r\n\tfor <${clean(t.rcptTo[0]!)}>` : '';
  return (
    `Return-Path: <${clean(t.mailFrom, 512)}>\r\n` +
    `Received: ${from}\r\n\t${by} with ${t.transport}${tls}\r\n\tid ${t.queueId}${forClause};\r\n\t${rfc5322Date(t.date)}\r\n`
  );
}
