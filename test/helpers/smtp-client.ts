/**
 * A raw SMTP client for tests: exact bytes out, exact replies back, so tests
 * see what a sending MTA sees (codes, enhanced codes, multi-line replies).
 */
import net from 'node:net';
import tls from 'node:tls';
import { once } from 'node:events';

export interface Reply {
  code: number;
  lines: string[];
  /** The text of the last line after the code and separator. */
  text: string;
  raw: string;
}

export class RawSmtp {
  private buf = '';
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(public socket: net.Socket | tls.TLSSocket) {
    this.attach(socket);
  }

  private attach(socket: net.Socket | tls.TLSSocket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
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

  static async connect(port: number, host = '127.0.0.1', opts: { tls?: tls.ConnectionOptions; preface?: Buffer | string; localAddress?: string } = {}): Promise<RawSmtp> {
    let socket: net.Socket | tls.TLSSocket;
    if (opts.tls) {
      socket = tls.connect({ port, host, rejectUnauthorized: false, ...opts.tls });
      await once(socket, 'secureConnect');
    } else {
      socket = net.connect({ port, host, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
      await once(socket, 'connect');
      if (opts.preface) socket.write(opts.preface);
    }
    return new RawSmtp(socket);
  }

  /** Waits for one complete reply (all continuation lines). */
  async read(timeoutMs = 10_000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = /^((?:\d{3}-[^\r\n]*\r\n)*)(\d{3})(?: ([^\r\n]*))?\r\n/.exec(this.buf);
      if (m) {
        const raw = m[0];
        this.buf = this.buf.slice(raw.length);
        const lines = raw.split('\r\n').filter(Boolean);
        return { code: Number(m[2]), lines, text: m[3] ?? '', raw };
      }
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buf)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for reply; unread: ${JSON.stringify(this.buf)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async cmd(line: string, timeoutMs?: number): Promise<Reply> {
    this.socket.write(`${line}\r\n`);
    return this.read(timeoutMs);
  }

  /** Waits until the server closes the connection. */
  async waitClosed(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return;
    await Promise.race([
      once(this.socket, 'close'),
      new Promise((_, reject) => setTimeout(() => reject(new Error('connection not closed')), timeoutMs).unref()),
    ]);
  }

  /** STARTTLS: upgrades this client in place. */
  async startTls(opts: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
    const r = await this.cmd('STARTTLS');
    if (r.code !== 220) throw new Error(`STARTTLS refused: ${r.raw}`);
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
    const secure = tls.connect({ socket: this.socket as net.Socket, rejectUnauthorized: false, ...opts });
    await once(secure, 'secureConnect');
    this.socket = secure;
    this.buf = '';
    this.attach(secure);
    return secure;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Sends one whole message over an open, greeted session; returns the DATA reply. */
export async function sendMail(c: RawSmtp, from: string, to: string[], body: string): Promise<{ rcpt: Reply[]; data: Reply | null }> {
  const mail = await c.cmd(`MAIL FROM:<${from}>`);
  if (mail.code !== 250) throw new Error(`MAIL refused: ${mail.raw}`);
  const rcpt: Reply[] = [];
  for (const r of to) rcpt.push(await c.cmd(`RCPT TO:<${r}>`));
  if (!rcpt.some((r) => r.code === 250)) {
    await c.cmd('RSET');
    return { rcpt, data: null };
  }
  const go = await c.cmd('DATA');
  if (go.code !== 354) throw new Error(`DATA refused: ${go.raw}`);
  const stuffed = body.replace(/\r?\n/g, '\r\n').replace(/^\./gm, '..');
  c.write(`${stuffed}${stuffed.endsWith('\r\n') ? '' : '\r\n'}.\r\n`);
  return { rcpt, data: await c.read(30_000) };
}

/**
 * Connects, greets (EHLO client.example) and sends one message from
 * sender@example.org; returns the DATA reply (throws when no recipient was accepted).
 */
export async function sendOne(port: number, to: string | string[], body: string): Promise<Reply> {
  const c = await RawSmtp.connect(port);
  try {
    await c.read();
    await c.cmd('EHLO client.example');
    const { data } = await sendMail(c, 'sender@example.org', Array.isArray(to) ? to : [to], body);
    if (!data) throw new Error('no DATA reply: every recipient was refused');
    return data;
  } finally {
    c.close();
  }
}

export function simpleMessage(subject = 'hello', extra = ''): string {
  return `From: Sender <sender@example.org>\r\nTo: someone@localhost\r\nSubject: ${subject}\r\nMessage-ID: <${Math.random().toString(36).slice(2)}@example.org>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n${extra}\r\nHello there.\r\n`;
}
