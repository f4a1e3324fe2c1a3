/**
 * The console's HTTP listener (console.listen): the REST API under
 * `/api/v1/` (docs/console.md, docs/console-openapi.json), server-sent events,
 * and every other request handed to the web pages (`ConsolePages`).
 *
 * Every request passes the Host allow-list and, when `console.auth` is set,
 * authentication; every state change passes the CSRF check unless a bearer
 * token authorised it (security.ts). Files from mail are served as downloads
 * that a browser neither sniffs nor runs (`Content-Disposition: attachment`,
 * `nosniff`, `CSP: sandbox`). Ids are checked against the queue id's form
 * before anything is looked up; nothing here opens a file by name.
 */
import http from 'node:http';
import type net from 'node:net';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { QUEUE_ID_RE } from './db.js';
import { ConsoleSecurity, type ConsoleAuthConfig, type Identity } from './security.js';
import type { ActionResult, ConsoleChange, ConsoleStore, MessageQuery, MessageStatus } from './types.js';

/** What the pages get with each request. */
export interface PageContext {
  store: ConsoleStore;
  /** The CSRF token of this browser session: a hidden `csrf` field in forms, `X-CSRF-Token` from scripts. */
  csrfToken: string;
  identity: Identity;
  url: URL;
}

/** The web pages (src/console/ui/): true when they answered the request, false to let the server answer 404. */
export interface ConsolePages {
  handle(req: http.IncomingMessage, res: http.ServerResponse, ctx: PageContext): Promise<boolean>;
}

export interface ConsoleServerOptions {
  store: ConsoleStore;
  pages?: ConsolePages | null;
  auth: ConsoleAuthConfig | null;
  allowedHosts: readonly string[];
  logger: Logger;
  now: () => number;
}

/** The API's routes; docs/console-openapi.json documents exactly these (test/console-openapi.test.ts). */
export const CONSOLE_ROUTES = [
  { method: 'GET', path: '/api/v1/session' },
  { method: 'GET', path: '/api/v1/messages' },
  { method: 'GET', path: '/api/v1/messages/{id}' },
  { method: 'DELETE', path: '/api/v1/messages/{id}' },
  { method: 'GET', path: '/api/v1/messages/{id}/event' },
  { method: 'GET', path: '/api/v1/messages/{id}/raw' },
  { method: 'GET', path: '/api/v1/messages/{id}/attempts' },
  { method: 'GET', path: '/api/v1/messages/{id}/attachments/{index}' },
  { method: 'POST', path: '/api/v1/messages/{id}/retry' },
  { method: 'POST', path: '/api/v1/messages/{id}/replay' },
  { method: 'POST', path: '/api/v1/messages/{id}/delete' },
  { method: 'GET', path: '/api/v1/events' },
] as const;

/** The query parameters of `GET /api/v1/messages`: the fields of MessageQuery. */
export const MESSAGE_QUERY_PARAMS = ['q', 'rcpt', 'from', 'subject', 'route', 'status', 'since', 'until', 'cursor', 'limit'] as const satisfies ReadonlyArray<keyof MessageQuery>;

const STATUSES: readonly MessageStatus[] = ['delivered', 'queued', 'deferred', 'dead', 'refused', 'quarantined'];
const MAX_BODY = 64 * 1024;
const MAX_SSE_CLIENTS = 100;
const SSE_HEARTBEAT_MS = 25_000;
/** JSON answers are data, never a document to render. */
const API_HEADERS = {
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { ...API_HEADERS, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...extra });
  res.end(text);
}

function sendError(res: http.ServerResponse, err: HttpError, extra: Record<string, string> = {}): void {
  sendJson(res, err.status, { ok: false, code: err.code, message: err.message }, extra);
}

/** RFC 6266 §4.3: an ASCII fallback and the UTF-8 name. */
function disposition(name: string): string {
  const clean = name.replace(/[\u0000-\u001f\u007f"\\/]/g, '_').slice(0, 200) || 'download';
  const ascii = clean.replace(/[^\x20-\x7e]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(clean)}`;
}

/** Headers of a file from mail: a download the browser neither sniffs nor runs. */
function downloadHeaders(contentType: string, name: string): Record<string, string> {
  const safeType = /^[a-z0-9][a-z0-9.+-]*\/[a-z0-9][a-z0-9.+-]*$/i.test(contentType) ? contentType : 'application/octet-stream';
  return {
    'content-type': safeType,
    'content-disposition': disposition(name),
    'x-content-type-options': 'nosniff',
    'content-security-policy': "sandbox; default-src 'none'",
    'cache-control': 'no-store',
    'referrer-policy': 'no-referrer',
  };
}

function messageId(raw: string): string {
  const id = decodeURIComponent(raw);
  if (!QUEUE_ID_RE.test(id)) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'no such message');
  return id;
}

/** The MessageQuery fields from the query string, each checked. */
export function parseQuery(sp: URLSearchParams): MessageQuery {
  const q: MessageQuery = {};
  const bad = (m: string) => new HttpError(400, 'PG_CONSOLE_BAD_REQUEST', m);
  for (const k of sp.keys()) if (!(MESSAGE_QUERY_PARAMS as readonly string[]).includes(k)) throw bad(`unknown parameter ${k} (${MESSAGE_QUERY_PARAMS.join(', ')})`);
  for (const k of ['q', 'rcpt', 'from', 'subject', 'route'] as const) {
    const v = sp.get(k);
    if (v !== null && v !== '') {
      if (v.length > 1000) throw bad(`${k} is longer than 1000 characters`);
      q[k] = v;
    }
  }
  const status = sp.get('status');
  if (status) {
    if (!STATUSES.includes(status as MessageStatus)) throw bad(`status is one of ${STATUSES.join(', ')}`);
    q.status = status as MessageStatus;
  }
  for (const k of ['since', 'until'] as const) {
    const v = sp.get(k);
    if (v) {
      if (Number.isNaN(Date.parse(v))) throw bad(`${k} is not an ISO 8601 time`);
      q[k] = new Date(Date.parse(v)).toISOString();
    }
  }
  const cursor = sp.get('cursor');
  if (cursor) {
    if (!QUEUE_ID_RE.test(cursor)) throw bad('cursor is not one this API gave');
    q.cursor = cursor;
  }
  const limit = sp.get('limit');
  if (limit) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > 500) throw bad('limit is an integer from 1 to 500');
    q.limit = n;
  }
  return q;
}

async function readBody(req: http.IncomingMessage): Promise<Record<string, string>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > MAX_BODY) throw new HttpError(413, 'PG_CONSOLE_BAD_REQUEST', 'request body too large');
    chunks.push(c);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'application/x-www-form-urlencoded') return Object.fromEntries(new URLSearchParams(text));
  if (type === 'application/json' || type === '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new HttpError(400, 'PG_CONSOLE_BAD_REQUEST', 'the body is not JSON');
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new HttpError(400, 'PG_CONSOLE_BAD_REQUEST', 'the body is not a JSON object');
    return Object.fromEntries(Object.entries(parsed).filter(([, v]) => typeof v === 'string')) as Record<string, string>;
  }
  throw new HttpError(415, 'PG_CONSOLE_BAD_REQUEST', 'send JSON or a form');
}

export function createConsoleServer(o: ConsoleServerOptions): http.Server {
  const security = new ConsoleSecurity(o.auth, o.allowedHosts, o.now);
  const sse = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) {
        if (!res.headersSent) sendError(res, err);
        else res.destroy();
        return;
      }
      const code = (err as { code?: string }).code === 'PG_CONSOLE_UNAVAILABLE' ? 'PG_CONSOLE_UNAVAILABLE' : 'PG_INTERNAL';
      o.logger.warn({ err: (err as Error).message, url: req.url, code }, 'console request failed');
      if (!res.headersSent) sendError(res, new HttpError(code === 'PG_CONSOLE_UNAVAILABLE' ? 503 : 500, code, code === 'PG_CONSOLE_UNAVAILABLE' ? 'the console index is unavailable' : 'internal error'));
      else res.destroy();
    });
  });
  server.on('close', () => {
    for (const r of sse) r.end();
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const port = (server.address() as net.AddressInfo | null)?.port ?? 0;
    if (!security.hostAllowed(req.headers.host, port)) {
      // DNS rebinding: a foreign name that resolves to us is not us.
      return sendError(res, new HttpError(403, 'PG_CONSOLE_HOST', 'this Host is not allowed (console.allowedHosts)'));
    }
    const identity = await security.identify(req);
    if (!identity) {
      return sendError(res, new HttpError(401, 'PG_CONSOLE_AUTH', 'authentication required'), { 'www-authenticate': security.challenge() });
    }
    const session = security.session(req);
    if (session.fresh) res.setHeader('set-cookie', security.sessionCookie(session.id));
    const csrfToken = security.csrfToken(session.id, identity);
    const url = new URL(req.url ?? '/', 'http://console.invalid');
    const method = req.method ?? 'GET';
    const changes = !['GET', 'HEAD', 'OPTIONS'].includes(method);
    let body: Record<string, string> = {};
    if (changes) {
      body = await readBody(req);
      const token = (req.headers['x-csrf-token'] as string | undefined) ?? body.csrf;
      if (identity.via !== 'bearer' && !security.csrfOk(req, token, session.id, identity)) {
        o.logger.warn({ url: url.pathname, origin: req.headers.origin, code: 'PG_CONSOLE_CSRF' }, 'console request refused: CSRF check failed');
        return sendError(res, new HttpError(403, 'PG_CONSOLE_CSRF', 'missing or wrong CSRF token, or a foreign Origin'));
      }
    }
    if (url.pathname.startsWith('/api/')) return api(req, res, url, method, body, { identity, csrfToken });
    const pages = o.pages;
    if (pages && (await pages.handle(req, res, { store: o.store, csrfToken, identity, url }))) return;
    if (!res.headersSent) sendError(res, new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'not found'));
  }

  async function api(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    url: URL,
    method: string,
    body: Record<string, string>,
    who: { identity: Identity; csrfToken: string },
  ): Promise<void> {
    const parts = url.pathname.split('/').slice(1); // ['api', 'v1', ...]
    if (parts[0] !== 'api' || parts[1] !== 'v1') throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'not found');
    const [resource, rawId, sub, rawIndex, ...rest] = parts.slice(2);
    const get = method === 'GET' || method === 'HEAD';
    if (resource === 'session' && rawId === undefined && get) {
      return sendJson(res, 200, { identity: who.identity.name, auth: who.identity.via, csrfToken: who.csrfToken });
    }
    if (resource === 'events' && rawId === undefined && get) return events(req, res);
    if (resource !== 'messages' || rest.length) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'not found');
    if (rawId === undefined || rawId === '') {
      if (!get) throw new HttpError(405, 'PG_CONSOLE_BAD_REQUEST', 'method not allowed');
      return sendJson(res, 200, await o.store.list(parseQuery(url.searchParams)));
    }
    const id = messageId(rawId);
    const action = (r: ActionResult, okStatus = 200) => {
      const status = r.ok ? okStatus : r.code === 'PG_CONSOLE_NOT_FOUND' ? 404 : 409;
      // A form of the pages (no script) goes back to where it came from.
      const back = body.redirect;
      if (back && /^\/(?!\/)[^\\\r\n]*$/.test(back)) {
        res.writeHead(303, { location: back, 'cache-control': 'no-store' });
        res.end();
        return;
      }
      sendJson(res, status, r);
    };
    if (sub === undefined) {
      if (get) {
        const m = await o.store.get(id);
        if (!m) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', `no message ${id}`);
        return sendJson(res, 200, m);
      }
      if (method === 'DELETE') return action(await o.store.remove(id));
      throw new HttpError(405, 'PG_CONSOLE_BAD_REQUEST', 'method not allowed');
    }
    if (sub === 'attachments' && rawIndex !== undefined && get) {
      if (!/^\d{1,4}$/.test(rawIndex)) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'no such attachment');
      const a = await o.store.attachment(id, Number(rawIndex));
      if (!a) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'no such attachment (or its copy is gone)');
      res.writeHead(200, downloadHeaders(a.info.contentType, a.info.filename ?? `attachment-${a.info.index}`));
      await pipeline(a.content as NodeJS.ReadableStream & AsyncIterable<Buffer>, res);
      return;
    }
    if (rawIndex !== undefined) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'not found');
    if (get && sub === 'event') {
      const ev = await o.store.event(id);
      if (!ev) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'no stored event for this message');
      res.writeHead(200, { ...API_HEADERS, 'content-type': 'application/json; charset=utf-8', 'content-length': ev.length });
      res.end(method === 'HEAD' ? undefined : ev);
      return;
    }
    if (get && sub === 'raw') {
      const raw = await o.store.raw(id);
      if (!raw) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'no stored .eml for this message');
      res.writeHead(200, downloadHeaders('message/rfc822', `${id}.eml`));
      await pipeline(raw as NodeJS.ReadableStream & AsyncIterable<Buffer>, res);
      return;
    }
    if (get && sub === 'attempts') {
      const m = await o.store.get(id);
      if (!m) throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', `no message ${id}`);
      return sendJson(res, 200, { id, status: m.status, targets: m.targets, attempts: m.attempts });
    }
    if (method === 'POST' && sub === 'retry') return action(await o.store.retry(id), 202);
    if (method === 'POST' && sub === 'replay') {
      const target = body.target;
      if (!target || target.length > 200) throw new HttpError(400, 'PG_CONSOLE_BAD_REQUEST', 'give the target id in "target"');
      return action(await o.store.replay(id, target), 202);
    }
    if (method === 'POST' && sub === 'delete') return action(await o.store.remove(id));
    throw new HttpError(404, 'PG_CONSOLE_NOT_FOUND', 'not found');
  }

  /** Server-sent events: one ConsoleChange per event, named by its type. */
  function events(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (sse.size >= MAX_SSE_CLIENTS) throw new HttpError(503, 'PG_CONSOLE_BAD_REQUEST', 'too many live connections');
    res.writeHead(200, { ...API_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
    res.write('retry: 3000\n\n');
    sse.add(res);
    const send = (c: ConsoleChange) => res.write(`event: ${c.type}\ndata: ${JSON.stringify(c)}\n\n`);
    const off = o.store.subscribe(send);
    const beat = setInterval(() => res.write(': keep-alive\n\n'), SSE_HEARTBEAT_MS);
    beat.unref();
    const done = () => {
      clearInterval(beat);
      off();
      sse.delete(res);
    };
    req.on('close', done);
    res.on('close', done);
  }

  return server;
}
