/**
 * The web console's pages handler: the console's HTTP server hands it every
 * request outside `/api/v1`, with the store, the session's CSRF token and
 * who is signed in. It answers the pages (list, message view), the HTML
 * body's sandboxed document, the static script and stylesheet; anything
 * else is left to the server (`false`). docs/console.md, "The web console".
 */
import type http from 'node:http';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
// The server's side of the contract: it has already checked the Host,
// authentication and, for anything that changes state, the CSRF token, so
// the pages' forms post to the API and the pages answer only GET and HEAD.
import type { ConsolePages } from '../http.js';
import type { MessageQuery, MessageStatus } from '../types.js';
import { bodyHeaders, pageHeaders } from './headers.js';
import { withInlineImages } from './cid.js';
import { renderList, renderMessage, renderNotFound, STATUSES, type RenderContext } from './pages.js';

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

/**
 * The notice after an action without JavaScript: the form posted to the API,
 * which sent the browser back here with `?done=<action>`. Fixed words only;
 * the outcome itself is in the timeline below.
 */
const ACTION_WORDS: Record<string, string> = {
  retry: 'Retry requested: the queued items are sent again now; their attempts appear below.',
  replay: 'Replay requested: the attempt appears below.',
  delete: 'Message deleted.',
};

function noticeOf(url: URL): RenderContext['notice'] {
  const done = url.searchParams.get('done');
  const text = done ? ACTION_WORDS[done] : undefined;
  return text ? { ok: true, text } : null;
}

export function createConsolePages(): ConsolePages {
  const statics = loadStatic();

  return {
    async handle(req, res, ctx) {
      const url = ctx.url;
      const method = req.method ?? 'GET';
      const who = ctx.identity.via !== 'none' ? ctx.identity.name : null;
      const page: RenderContext = { csrfToken: ctx.csrfToken, identity: who, notice: noticeOf(url) };
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
      const m = /^\/messages\/([^/]+)(\/body)?$/.exec(url.pathname);
      if (!m) return false;
      let id: string;
      try {
        id = decodeURIComponent(m[1]!);
      } catch {
        return false;
      }
      const sub = m[2];
      if (method !== 'GET' && method !== 'HEAD') {
        send(res, 405, { ...pageHeaders('text/plain; charset=utf-8'), allow: 'GET, HEAD' }, 'method not allowed\n');
        return true;
      }
      if (sub === '/body') {
        // The body's own document: only the sender's HTML, under its own CSP (headers.ts).
        const body = await ctx.store.htmlBody(id);
        if (!body) send(res, 404, bodyHeaders(), '');
        else send(res, 200, bodyHeaders(), method === 'HEAD' ? '' : withInlineImages(body.html, body.images));
        return true;
      }
      const detail = await ctx.store.get(id);
      if (!detail) {
        send(res, 404, pageHeaders(), renderNotFound(page, 'No message with this id: it may have been deleted or removed by retention.'));
        return true;
      }
      send(res, 200, pageHeaders(), method === 'HEAD' ? '' : renderMessage(detail, page));
      return true;
    },
  };
}
