/**
 * The console's pages without a browser: what they answer over real HTTP
 * (a node:http server around the pages handler), for hostile values put
 * straight into the store's shapes. The store here is a small in-memory
 * one; the browser test (console-browser.test.ts) runs the same pages
 * against the real gateway and its real store.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { createConsolePages } from '../src/console/ui/index.js';
import { escapeAttr, escapeText, html } from '../src/console/ui/html.js';
import type { ActionResult, ConsoleChange, ConsoleStore, MessageDetail, MessageQuery } from '../src/console/types.js';

const CSRF = 'csrf-token-for-tests-0123456789';
const EVIL = `<script>alert(1)</script>"'><img src=x onerror=alert(2)>\u202Egpj.exe`;

function detail(id: string, over: Partial<MessageDetail> = {}): MessageDetail {
  return {
    id,
    receivedAt: '2026-12-07T18:00:00.000Z',
    client: { address: '127.0.0.1', helo: EVIL },
    mailFrom: 'sender@example.org',
    rcptTo: ['someone@localhost'],
    from: EVIL,
    subject: EVIL,
    size: 1234,
    route: 'default',
    status: 'dead',
    reply: '250 2.0.0 Ok: queued as ' + id,
    spam: null,
    virus: null,
    attachments: 1,
    targets: [{ target: `hook"><b>x</b>`, kind: 'webhook', required: true, status: 'dead' }],
    attempts: [{ at: '2026-12-07T18:00:01.000Z', target: 'hook', kind: 'webhook', via: 'queue', outcome: 'failed', latencyMs: 12, httpStatus: 500, code: 'PG_TARGET_5XX', detail: EVIL }],
    headers: [
      ['Subject', EVIL],
      [`X-</th><script>`, `</td><script>alert(3)</script>`],
      ['X-Huge', 'A'.repeat(50_000)],
    ],
    text: `</pre>${EVIL}`,
    html: `<script>alert(4)</script><img src="http://tracker.example/p.gif">`,
    attachmentList: [{ index: 0, filename: `receipt\u202Egpj.svg"><script>`, contentType: 'image/svg+xml', size: 10, disposition: 'attachment' }],
    hasRaw: true,
    hasEvent: true,
    ...over,
  };
}

class MemoryStore implements ConsoleStore {
  messages = new Map<string, MessageDetail>();
  calls: string[] = [];
  queries: MessageQuery[] = [];
  async list(query: MessageQuery) {
    this.queries.push(query);
    const items = [...this.messages.values()].filter((m) => !query.q || (m.subject ?? '').includes(query.q));
    // Two to a page, so the pager shows: the cursor is the index of the next item.
    const from = Number(query.cursor ?? 0);
    return { items: items.slice(from, from + 2), next: from + 2 < items.length ? String(from + 2) : null };
  }
  async htmlBody(id: string) {
    const html = this.messages.get(id)?.html;
    return typeof html === 'string' ? { html, images: [] } : null;
  }
  async get(id: string) {
    return this.messages.get(id) ?? null;
  }
  async event() {
    return null;
  }
  async raw() {
    return Readable.from([]);
  }
  async attachment() {
    return null;
  }
  async retry(id: string): Promise<ActionResult> {
    this.calls.push(`retry ${id}`);
    return { ok: true, message: 'retrying' };
  }
  async replay(id: string, target: string): Promise<ActionResult> {
    this.calls.push(`replay ${id} ${target}`);
    return { ok: false, message: 'no', code: 'PG_CONSOLE_UNKNOWN_TARGET' };
  }
  async remove(id: string): Promise<ActionResult> {
    this.calls.push(`remove ${id}`);
    return { ok: true, message: 'deleted' };
  }
  subscribe(_listener: (change: ConsoleChange) => void) {
    return () => undefined;
  }
  degraded() {
    return null;
  }
}

describe('console pages', () => {
  const store = new MemoryStore();
  let server: http.Server;
  let base: string;

  before(async () => {
    store.messages.set('Q1', detail('Q1'));
    store.messages.set('Q2', detail('Q2', { html: null, text: null, status: 'delivered', subject: null }));
    const pages = createConsolePages();
    server = http.createServer((req, res) => {
      pages.handle(req, res, { store, csrfToken: CSRF, identity: { name: 'local', via: 'none' }, url: new URL(req.url ?? '/', 'http://console.test') }).then(
        (handled) => {
          if (!handled) res.writeHead(404).end('not mine');
        },
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  test('html escapes every value, in text and in attributes; bidi controls are made visible', () => {
    assert.equal(escapeText('<a href="x">&'), '&lt;a href=&quot;x&quot;&gt;&amp;');
    assert.match(escapeText('a\u202Eb'), /^a<span class="bidi"[^>]*>U\+202E<\/span>b$/);
    assert.equal(escapeAttr('"\u202E'), '&quot;U+202E');
    assert.equal(html`<p title="${'"><x'}">${'<y>'}</p>`.value, '<p title="&quot;&gt;&lt;x">&lt;y&gt;</p>');
  });

  test('the list and the message view carry no markup from mail', async () => {
    for (const path of ['/', '/messages/Q1', '/?q=%3Cscript%3E']) {
      const res = await fetch(base + path);
      assert.equal(res.status, 200, path);
      const body = await res.text();
      // The only <script> is the console's own, loaded from /static.
      assert.deepEqual(body.match(/<script[^>]*>/g), ['<script src="/static/console.js" defer>'], path);
      assert.doesNotMatch(body, /<img|<\/td><script|\u202E/, path);
      // No tag of the page has an event handler attribute.
      for (const tag of body.match(/<[a-z][^>]*>/gi) ?? []) assert.doesNotMatch(tag.replace(/"[^"]*"/g, '""'), /\son\w+=/i, `${path}: ${tag}`);
      assert.doesNotMatch(body, /<iframe[^>]*srcdoc/, path);
    }
    const view = await (await fetch(`${base}/messages/Q1`)).text();
    assert.match(view, /<iframe class="html-body"[^>]* src="\/messages\/Q1\/body" sandbox=""/);
    assert.match(view, /A{4000}… \(46000 more characters\)/, 'a huge header is cut');
    assert.match(view, /U\+202E/);
    assert.doesNotMatch(view, /class="who"/, 'nobody signed in on an open console');
  });

  test('every page carries the strict headers; the body document its own CSP with sandbox', async () => {
    for (const path of ['/', '/messages/Q1', '/static/console.js', '/static/console.css']) {
      const res = await fetch(base + path);
      assert.equal(res.status, 200, path);
      const csp = res.headers.get('content-security-policy') ?? '';
      assert.match(csp, /script-src 'self'/, path);
      assert.match(csp, /frame-ancestors 'none'/, path);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, path);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', path);
      // No referrer to other sites; the console's own origin on its forms' posts (headers.ts).
      assert.equal(res.headers.get('referrer-policy'), 'same-origin', path);
    }
    const body = await fetch(`${base}/messages/Q1/body`);
    assert.equal(body.status, 200);
    const csp = body.headers.get('content-security-policy') ?? '';
    assert.match(csp, /^sandbox;/);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /img-src data:(;|$)/);
    assert.doesNotMatch(csp, /script-src|allow-scripts|allow-same-origin/);
    assert.equal(body.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(body.headers.get('referrer-policy'), 'no-referrer');
    assert.equal((await fetch(`${base}/messages/Q2/body`)).status, 404, 'no HTML body, no document');
    assert.equal((await fetch(`${base}/messages/nope`)).status, 404);
    assert.equal((await fetch(`${base}/elsewhere`)).status, 404);
    assert.equal(await (await fetch(`${base}/elsewhere`)).text(), 'not mine', 'paths the pages do not own go back to the server');
  });

  test('the list pages with the store\'s cursor and keeps the search in its links', async () => {
    store.messages.set('Q3', detail('Q3', { subject: 'third', status: 'queued' }));
    const first = await (await fetch(`${base}/?status=queued&bogus=1`)).text();
    assert.deepEqual(store.queries.at(-1), { limit: 50, status: 'queued' }, 'only known parameters reach the store');
    const all = await (await fetch(`${base}/`)).text();
    assert.match(all, /data-first-page="yes"/);
    assert.match(all, /<a rel="next" href="\/\?cursor=2">Older »<\/a>/);
    assert.doesNotMatch(all, /« Newest/);
    const older = await (await fetch(`${base}/?cursor=2`)).text();
    assert.match(older, /data-first-page=""/, 'an older page does not follow live updates');
    assert.match(older, /<a href="\/">« Newest<\/a>/);
    assert.equal((older.match(/<tr data-id=/g) ?? []).length, 1);
    assert.match(first, /<option value="queued" selected>/);
    store.messages.delete('Q3');
  });

  test('action forms post to the API with the CSRF token and come back to the page', async () => {
    const view = await (await fetch(`${base}/messages/Q1`)).text();
    const forms = view.match(/<form method="post"[\s\S]*?<\/form>/g) ?? [];
    assert.deepEqual(
      forms.map((f) => /action="([^"]+)"/.exec(f)![1]),
      ['/api/v1/messages/Q1/retry', '/api/v1/messages/Q1/replay', '/api/v1/messages/Q1/delete'],
    );
    for (const f of forms) assert.match(f, /<input type="hidden" name="csrf" value="csrf-token-for-tests-0123456789">/);
    assert.match(forms[0]!, /name="redirect" value="\/messages\/Q1\?done=retry"/);
    assert.match(forms[2]!, /name="redirect" value="\/\?done=delete"/);
    const delivered = await (await fetch(`${base}/messages/Q2`)).text();
    assert.doesNotMatch(delivered, /data-action="retry"/, 'a delivered message has nothing to retry');
    const notice = await (await fetch(`${base}/messages/Q1?done=retry`)).text();
    assert.match(notice, /<p class="notice notice-ok" role="status">Retry requested/);
    const forged = await (await fetch(`${base}/messages/Q1?done=%3Cscript%3E`)).text();
    assert.doesNotMatch(forged, /class="notice/, 'only known actions give a notice, in fixed words');
    assert.equal((await fetch(`${base}/messages/Q1`, { method: 'POST' })).status, 405);
    assert.deepEqual(store.calls, [], 'the pages change nothing themselves');
  });
});
