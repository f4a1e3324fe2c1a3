/**
 * Who may use the console and from where (docs/console.md, "Security"):
 *
 * - a Host allow-list, because DNS rebinding reaches a loopback listener
 *   from any web page;
 * - a bearer token or basic auth (scrypt hashes, as SMTP AUTH's,
 *   auth/password.ts), required when `console.auth` is set, which the
 *   configuration demands for any listener that is not loopback;
 * - a CSRF token tied to the browser's session cookie on every state
 *   change that a bearer token did not authorise (a browser never adds a
 *   bearer token by itself), plus an Origin check.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import { verifyPassword } from '../auth/password.js';

export interface ConsoleAuthConfig {
  /** Bearer tokens (plain; compared through their SHA-256). */
  tokens: readonly string[];
  /** Basic auth users with scrypt hashes (`postgate hash-password`). */
  users: ReadonlyArray<{ username: string; password: string }>;
}

/** Who made a request: `local` on an open loopback console. */
export interface Identity {
  name: string;
  via: 'none' | 'bearer' | 'basic';
}

const SESSION_COOKIE = 'pg_console';
/** A basic auth check costs an scrypt run; a success is remembered this long. */
const BASIC_CACHE_MS = 5 * 60_000;

const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest();

function equal(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export class ConsoleSecurity {
  private readonly tokenHashes: Buffer[];
  private readonly users: Map<string, string>;
  private readonly key = randomBytes(32);
  private readonly basicOk = new Map<string, number>();

  constructor(
    private readonly auth: ConsoleAuthConfig | null,
    private readonly allowedHosts: readonly string[],
    private readonly now: () => number,
  ) {
    this.tokenHashes = (auth?.tokens ?? []).map((t) => sha256(t));
    this.users = new Map((auth?.users ?? []).map((u) => [u.username, u.password]));
  }

  get authRequired(): boolean {
    return this.auth !== null;
  }

  /**
   * The Host header names this console: a loopback name or address on the
   * listening port, or one of console.allowedHosts (a proxy's name).
   */
  hostAllowed(host: string | undefined, port: number): boolean {
    if (!host) return false;
    const h = host.toLowerCase();
    if (this.allowedHosts.some((a) => a.toLowerCase() === h)) return true;
    return [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`].includes(h);
  }

  /** The identity of a request, or null when it must authenticate and did not. */
  async identify(req: http.IncomingMessage): Promise<Identity | null> {
    // An open (loopback) console ignores credentials: nothing to check them against.
    if (!this.auth) return { name: 'local', via: 'none' };
    const header = req.headers.authorization ?? '';
    const [scheme, value = ''] = header.split(/\s+/, 2);
    if (/^bearer$/i.test(scheme ?? '') && value) {
      const h = sha256(value);
      if (this.tokenHashes.some((t) => equal(t, h))) return { name: 'token', via: 'bearer' };
      return null;
    }
    if (/^basic$/i.test(scheme ?? '') && value && this.users.size) {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return null;
      const user = decoded.slice(0, colon);
      const password = decoded.slice(colon + 1);
      const stored = this.users.get(user);
      if (stored === undefined) return null;
      const cacheKey = sha256(`${user}\0${password}`).toString('base64');
      const until = this.basicOk.get(cacheKey);
      if (until !== undefined && until > this.now()) return { name: user, via: 'basic' };
      if (!(await verifyPassword(password, stored).catch(() => false))) return null;
      if (this.basicOk.size > 1000) this.basicOk.clear();
      this.basicOk.set(cacheKey, this.now() + BASIC_CACHE_MS);
      return { name: user, via: 'basic' };
    }
    return null;
  }

  /** What a 401 offers (RFC 7617 basic, RFC 6750 bearer). */
  challenge(): string {
    return this.users.size ? 'Basic realm="postgate console", charset="UTF-8"' : 'Bearer realm="postgate console"';
  }

  /** The session id from the cookie, or a new one to set. */
  session(req: http.IncomingMessage): { id: string; fresh: boolean } {
    const cookie = req.headers.cookie ?? '';
    const m = new RegExp(`(?:^|;\\s*)${SESSION_COOKIE}=([A-Za-z0-9_-]{43})(?:;|$)`).exec(cookie);
    if (m) return { id: m[1]!, fresh: false };
    return { id: randomBytes(32).toString('base64url'), fresh: true };
  }

  sessionCookie(id: string): string {
    return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict`;
  }

  /** The CSRF token of a session and identity: the pages put it in forms (`csrf`) and scripts in `X-CSRF-Token`. */
  csrfToken(sessionId: string, identity: Identity): string {
    return createHmac('sha256', this.key).update(`${sessionId}\0${identity.via}\0${identity.name}`).digest('base64url');
  }

  /**
   * A state-changing request from a browser is the console's own: its
   * Origin (or, without one, its Fetch Metadata) is same-origin, and it
   * carries the session's CSRF token.
   */
  csrfOk(req: http.IncomingMessage, token: string | undefined, sessionId: string, identity: Identity): boolean {
    const host = req.headers.host ?? '';
    const origin = req.headers.origin;
    if (origin !== undefined) {
      if (origin !== `http://${host}` && origin !== `https://${host}`) return false;
    } else {
      const site = req.headers['sec-fetch-site'];
      if (site !== undefined && site !== 'same-origin' && site !== 'none') return false;
    }
    if (!token) return false;
    return equal(Buffer.from(token), Buffer.from(this.csrfToken(sessionId, identity)));
  }
}
