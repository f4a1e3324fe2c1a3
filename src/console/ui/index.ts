/**
 * The web console's pages handler: the console's HTTP server hands it every
 * request outside `/api/v1`, with the store, the session's CSRF token and
 * who is signed in. It answers the pages (list, message view), the HTML
 * body's sandboxed document, the static script and stylesheet, and the
 * action forms that work without JavaScript; anything else is left to the
 * server (`false`). docs/console.md, "The web console".
 */
import type http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ActionResult, ConsoleStore, MessageQuery, MessageStatus } from '../types.js';
import { bodyHeaders, pageHeaders } from './headers.js';
import { renderList, renderMessage, renderNotFound, STATUSES, type PageContext } from './pages.js';

/** What the server hands the pages for one request. */
export interface PagesContext {
  store: ConsoleStore;
  /** The token the action forms and the script's API calls must carry. */
  csrfToken: string;
  /** Who is signed in, when the console requires it; null on open loopback. */
  identity: string | null;
}

export interface ConsolePages {
  /** Answers the request and resolves true, or resolves false for a path the pages do not serve. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, ctx: PagesContext): Promise<boolean>;
}

/** An action form is a few short fields; anything longer is refused before it is parsed. */
const MAX_FORM_BYTES = 8 * 1024;
const PAGE_SIZE = 50;

interface StaticFile {
  body: Buffer;
  type: string;
}

/**
 * The script and stylesheet are plain files beside this module's source
 * (src/console/ui/static/), read once at start. tsc copies no other file into
 * dist/, so from dist/src/console/ui/ they are found in the source tree,
 * which the package ships too (package.json "files").
 */
function loadStatic(): Map<string, StaticFile> {
  const candidates = [new URL('./static/', import.meta.url), new URL('../../../../src/console/ui/static/', import.meta.url)];
  const files: Array<[string, string]> = [
    ['console.js', 'text/javascript; charset=utf-8'],
    ['console.css', 'text/css; charset=utf-8'],
  ];
  for (const dir of candidates) {
    try {
      return new Map(files.map(([name, type]) => [`/static/${name}`, { body: readFileSync(fileURLToPath(new URL(name, dir))), type }]));
    } catch {
      // not in this place; try the next
    }
  }
  throw new Error('console: static/console.js and static/console.css not found beside src/console/ui');
}

function send(res: http.ServerResponse, status: number, headers: Record<string, string>, body: string | Buffer): void {
  res.writeHead(status, headers);
  res.end(body);
}

function sameToken(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return expected.length > 0 && a.length === b.length && timingSafeEqual(a, b);
}

async function readForm(req: http.IncomingMessage): Promise<URLSearchParams | null> {
  const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') return null;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) return null;
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/**
 * A form post from another site is refused even with a valid token: the
 * browser says where the request comes from (Fetch Metadata, and Origin on
 * every POST), and only the console itself may press its buttons.
 */
function crossSite(req: http.IncomingMessage): boolean {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return true;
  const origin = req.headers.origin;
  if (origin === undefined || origin === 'null') return origin === 'null';
  try {
    return new URL(origin).host !== req.headers.host;
  } catch {
    return true;
  }
}

function queryOf(url: URL): MessageQuery {
  const q: MessageQuery = { limit: PAGE_SIZE };
  const text = url.searchParams.get('q')?.trim();
  if (text) q.q = text.slice(0, 500);
  const status = url.searchParams.get('status');
  if (status && (STATUSES as readonly string[]).includes(status)) q.status = status as MessageStatus;
  const cursor = url.searchParams.get('cursor');
  if (cursor) q.cursor = cursor.slice(0, 500);
  return q;
}

/** The notice after an action without JavaScript: fixed words, only the action, the result and a stable code come from the URL. */
const ACTION_WORDS: Record<string, [ok: string, failed: string]> = {
  retry: ['Retry started: the queued items are being sent again now.', 'Retry failed'],
  replay: ['Replay started.', 'Replay failed'],
  delete: ['Message deleted.', 'Delete failed'],
};

function noticeOf(url: URL): PageContext['notice'] {
  const done = url.searchParams.get('done');
  const words = done ? ACTION_WORDS[done] : undefined;
  if (!words) return null;
  const ok = url.searchParams.get('ok') === '1';
  const code = url.searchParams.get('code') ?? '';
  return { ok, text: ok ? words[0] : `${words[1]}${/^PG_[A-Z0-9_]{1,60}$/.test(code) ? ` (${code})` : ''}.` };
}

export function createConsolePages(): ConsolePages {
  const statics = loadStatic();

  async function action(req: http.IncomingMessage, res: http.ServerResponse, ctx: PagesContext, id: string, verb: string): Promise<void> {
    const form = await readForm(req);
    if (form === null) return send(res, 400, pageHeaders('text/plain; charset=utf-8'), 'expected a short application/x-www-form-urlencoded form\n');
    if (crossSite(req) || !sameToken(form.get('_csrf') ?? '', ctx.csrfToken)) {
      return send(res, 403, pageHeaders('text/plain; charset=utf-8'), 'refused: the form did not come from this console (CSRF token or origin)\n');
    }
    let result: ActionResult;
    if (verb === 'retry') result = await ctx.store.retry(id);
    else if (verb === 'replay') result = await ctx.store.replay(id, form.get('target') ?? '');
    else result = await ctx.store.remove(id);
    const p = new URLSearchParams({ done: verb, ok: result.ok ? '1' : '0', ...(result.code ? { code: result.code } : {}) });
    const where = verb === 'delete' && result.ok ? '/' : `/messages/${encodeURIComponent(id)}`;
    res.writeHead(303, { ...pageHeaders('text/plain; charset=utf-8'), location: `${where}?${p}` });
    res.end();
  }

  return {
    async handle(req, res, ctx) {
      const url = new URL(req.url ?? '/', 'http://console.invalid');
      const method = req.method ?? 'GET';
      const page: PageContext = { csrfToken: ctx.csrfToken, identity: ctx.identity, notice: noticeOf(url) };
      const file = statics.get(url.pathname);
      if (file && (method === 'GET' || method === 'HEAD')) {
        send(res, 200, { ...pageHeaders(file.type), 'cache-control': 'no-cache' }, method === 'HEAD' ? '' : file.body);
        return true;
      }
      if (url.pathname === '/' && (method === 'GET' || method === 'HEAD')) {
        const query = queryOf(url);
        const list = await ctx.store.list(query);
        send(res, 200, pageHeaders(), method === 'HEAD' ? '' : renderList(list, query, page));
        return true;
      }
      const m = /^\/messages\/([^/]+)(?:\/(body|retry|replay|delete))?$/.exec(url.pathname);
      if (!m) return false;
      let id: string;
      try {
        id = decodeURIComponent(m[1]!);
      } catch {
        return false;
      }
      const sub = m[2];
      if (sub === 'retry' || sub === 'replay' || sub === 'delete') {
        if (method !== 'POST') {
          send(res, 405, { ...pageHeaders('text/plain; charset=utf-8'), allow: 'POST' }, 'use the button on the message page\n');
          return true;
        }
        await action(req, res, ctx, id, sub);
        return true;
      }
      if (method !== 'GET' && method !== 'HEAD') {
        send(res, 405, { ...pageHeaders('text/plain; charset=utf-8'), allow: 'GET, HEAD' }, 'method not allowed\n');
        return true;
      }
      const detail = await ctx.store.get(id);
      if (sub === 'body') {
        // The body's own document: only the sender's HTML, under its own CSP (headers.ts).
        if (!detail || detail.html === null) send(res, 404, bodyHeaders(), '');
        else send(res, 200, bodyHeaders(), method === 'HEAD' ? '' : detail.html);
        return true;
      }
      if (!detail) {
        send(res, 404, pageHeaders(), renderNotFound(page, 'No message with this id: it may have been deleted or removed by retention.'));
        return true;
      }
      send(res, 200, pageHeaders(), method === 'HEAD' ? '' : renderMessage(detail, page));
      return true;
    },
  };
}
