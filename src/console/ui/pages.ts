/**
 * The console's pages, rendered on the server from the store's shapes
 * (src/console/types.ts): the inbox list and the message view. They are
 * complete without JavaScript: reading is plain links and forms, the
 * actions are forms that carry the CSRF token. The static script
 * (static/console.js) only adds live updates, search without a reload and
 * the actions through the REST API (docs/console.md, "The web console").
 *
 * Every value from mail goes through `html` (html.ts), which escapes it;
 * the HTML body is never part of these pages, only of the sandboxed frame's
 * own document (body.ts).
 */
import type { Attempt, MessageDetail, MessagePage, MessageQuery, MessageStatus, MessageSummary } from '../types.js';
import { html, Safe, escapeAttr, pathSegment } from './html.js';

/** What every page needs besides its data. */
export interface RenderContext {
  csrfToken: string;
  /** Who is signed in, when the console asked (token or basic auth); shown in the header. */
  identity: string | null;
  /** A one-line notice after an action without JavaScript. */
  notice?: { ok: boolean; text: string } | null;
}

/** The statuses in the order the filter offers them; anything else is shown as "unknown". */
export const STATUSES: readonly MessageStatus[] = ['delivered', 'queued', 'deferred', 'dead', 'refused', 'quarantined'];

/** Header values longer than this are cut in the view (the raw source has them whole). */
const MAX_SHOWN = 4000;
/** Subjects and addresses in list rows are cut here; CSS ellipsis does the rest. */
const MAX_CELL = 300;

function statusClass(status: string): string {
  return (STATUSES as readonly string[]).includes(status) ? status : 'unknown';
}

function badge(status: string): Safe {
  const known = statusClass(status);
  return html`<span class="badge badge-${known}">${known === 'unknown' ? status : known}</span>`;
}

function clip(value: string | null | undefined, max: number): string {
  const s = value ?? '';
  return s.length > max ? `${s.slice(0, max)}… (${s.length - max} more characters)` : s;
}

/** "2026-12-07 18:20:01" (UTC), inside a <time> with the exact value. */
function when(iso: string): Safe {
  const d = new Date(iso);
  const shown = Number.isNaN(d.getTime()) ? iso : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  return html`<time datetime="${iso}">${shown}</time>`;
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function layout(title: string, ctx: RenderContext, body: Safe, bodyAttrs: { page: string; id?: string }): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="postgate-csrf" content="${ctx.csrfToken}">
<title>${new Safe(escapeAttr(clip(title, 200)))} · postgate</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head>
<body data-page="${bodyAttrs.page}" data-id="${bodyAttrs.id ?? ''}">
<header class="top">
  <a class="brand" href="/">postgate</a>
  <span class="where">Messages</span>
  <span class="live" id="live" hidden>live</span>
  ${ctx.identity ? html`<span class="who">${ctx.identity}</span>` : ''}
</header>
<main>
${ctx.notice ? html`<p class="notice ${ctx.notice.ok ? 'notice-ok' : 'notice-error'}" role="status">${ctx.notice.text}</p>` : ''}
${body}
</main>
</body>
</html>
`.value;
}

function searchForm(query: MessageQuery): Safe {
  return html`<form class="search" method="get" action="/" role="search" id="search">
  <input type="search" name="q" value="${query.q ?? ''}" placeholder="Search subject, sender, recipient" aria-label="Search" autocomplete="off">
  <select name="status" aria-label="Status">
    <option value="">any status</option>
    ${STATUSES.map((s) => html`<option value="${s}"${query.status === s ? new Safe(' selected') : ''}>${s}</option>`)}
  </select>
  <button type="submit">Search</button>
</form>`;
}

function row(m: MessageSummary): Safe {
  const href = `/messages/${pathSegment(m.id)}`;
  const to = m.rcptTo.join(', ');
  return html`<tr data-id="${m.id}" data-status="${statusClass(m.status)}">
  <td class="c-status">${badge(m.status)}</td>
  <td class="c-from" title="${m.from ?? m.mailFrom}">${clip(m.from ?? (m.mailFrom || '<>'), MAX_CELL)}</td>
  <td class="c-to" title="${to}">${clip(to, MAX_CELL)}</td>
  <td class="c-subject"><a href="${href}">${m.subject === null || m.subject === '' ? html`<em class="none">(no subject)</em>` : clip(m.subject, MAX_CELL)}</a>${m.attachments > 0 ? html` <span class="clip">${m.attachments === 1 ? '1 file' : `${m.attachments} files`}</span>` : ''}</td>
  <td class="c-when">${when(m.receivedAt)}</td>
  <td class="c-size">${formatSize(m.size)}</td>
</tr>`;
}

/** The query string for a list link: only the fields the form sets, plus the cursor. */
export function listHref(query: MessageQuery, cursor?: string | null): string {
  const p = new URLSearchParams();
  if (query.q) p.set('q', query.q);
  if (query.status) p.set('status', query.status);
  if (cursor) p.set('cursor', cursor);
  const s = p.toString();
  return s ? `/?${s}` : '/';
}

export function renderList(page: MessagePage, query: MessageQuery, ctx: RenderContext): string {
  const searching = Boolean(query.q || query.status);
  const body = html`<section class="list">
${searchForm(query)}
<table class="messages" id="messages" data-first-page="${query.cursor ? '' : 'yes'}">
<thead><tr><th class="c-status">Status</th><th class="c-from">From</th><th class="c-to">To</th><th class="c-subject">Subject</th><th class="c-when">Received</th><th class="c-size">Size</th></tr></thead>
<tbody id="rows">
${page.items.map(row)}
</tbody>
</table>
${page.items.length === 0 ? html`<p class="empty" id="empty">${searching ? 'No message matches this search.' : 'No messages yet. Send one over SMTP and it appears here.'}</p>` : ''}
<nav class="pager" id="pager">
  ${query.cursor ? html`<a href="${listHref(query)}">« Newest</a>` : ''}
  ${page.next ? html`<a rel="next" href="${listHref(query, page.next)}">Older »</a>` : ''}
</nav>
</section>`;
  return layout(searching ? `Search: ${query.q ?? query.status ?? ''}` : 'Messages', ctx, body, { page: 'list' });
}

function attemptItem(a: Attempt): Safe {
  const outcome = ['delivered', 'deferred', 'failed', 'skipped'].includes(a.outcome) ? a.outcome : 'unknown';
  return html`<li class="attempt attempt-${outcome}">
  <span class="a-when">${when(a.at)}</span>
  <span class="a-target">${a.target} <small>${a.kind}</small></span>
  <span class="a-via">${a.via}</span>
  <span class="a-outcome">${outcome === 'unknown' ? a.outcome : outcome}</span>
  <span class="a-http">${a.httpStatus !== undefined ? `HTTP ${a.httpStatus}` : ''}</span>
  <span class="a-latency">${a.latencyMs} ms</span>
  ${a.code || a.detail ? html`<span class="a-detail">${a.code ? html`<code>${a.code}</code> ` : ''}${a.detail ?? ''}</span>` : ''}
</li>`;
}

function actions(m: MessageDetail, ctx: RenderContext): Safe {
  // The forms post to the API (the server checks the token and the origin)
  // and come back to this page, or to the list after a delete.
  const base = `/api/v1/messages/${pathSegment(m.id)}`;
  const back = `/messages/${pathSegment(m.id)}`;
  const csrf = (done: string, to = back) => html`<input type="hidden" name="csrf" value="${ctx.csrfToken}"><input type="hidden" name="redirect" value="${to}?done=${done}">`;
  const canRetry = m.status === 'deferred' || m.status === 'dead';
  return html`<div class="actions" id="actions">
  ${canRetry ? html`<form method="post" action="${base}/retry" data-action="retry">${csrf('retry')}<button type="submit" class="primary">Retry now</button></form>` : ''}
  ${m.targets.length > 0 && m.status !== 'refused'
    ? html`<form method="post" action="${base}/replay" data-action="replay">${csrf('replay')}<label>Replay to <select name="target">${m.targets.map((t) => html`<option value="${t.target}">${t.target} (${t.kind})</option>`)}</select></label> <button type="submit">Replay</button></form>`
    : ''}
  <form method="post" action="${base}/delete" data-action="delete" data-confirm="Delete this message and its stored copies?">${csrf('delete', '/')}<button type="submit" class="danger">Delete</button></form>
</div>`;
}

function timeline(m: MessageDetail): Safe {
  return html`<section class="timeline" id="timeline" data-status="${statusClass(m.status)}">
<h2>Delivery ${badge(m.status)}</h2>
<p class="reply"><span class="label">Reply to the sender</span> <code>${clip(m.reply, 1000)}</code></p>
${m.targets.length > 0
  ? html`<table class="targets"><thead><tr><th>Target</th><th>Kind</th><th>Required</th><th>Status</th></tr></thead><tbody>
${m.targets.map((t) => html`<tr data-target="${t.target}"><td>${t.target}</td><td>${t.kind}</td><td>${t.required ? 'yes' : 'no'}</td><td><span class="badge badge-t-${['delivered', 'pending', 'deferred', 'dead', 'skipped'].includes(t.status) ? t.status : 'unknown'}">${t.status}</span></td></tr>`)}
</tbody></table>`
  : ''}
<ol class="attempts" id="attempts">
${m.attempts.length === 0 ? html`<li class="attempt attempt-none">No attempt has ended yet.</li>` : m.attempts.map(attemptItem)}
</ol>
</section>`;
}

export function renderMessage(m: MessageDetail, ctx: RenderContext): string {
  const id = pathSegment(m.id);
  const api = `/api/v1/messages/${id}`;
  const verdicts: Safe[] = [];
  if (m.spam) verdicts.push(html`<dt>Spam</dt><dd>${m.spam.scanner}: ${m.spam.score} / ${m.spam.threshold} (${m.spam.action})</dd>`);
  if (m.virus) verdicts.push(html`<dt>Virus</dt><dd>${m.virus.scanner}: ${m.virus.infected ? `infected (${m.virus.names.join(', ')})` : 'clean'}</dd>`);
  const body = html`<p class="back"><a href="/">« All messages</a></p>
<article class="message" id="message" data-id="${m.id}">
<h1 class="subject">${m.subject === null || m.subject === '' ? html`<em class="none">(no subject)</em>` : clip(m.subject, 500)}</h1>
<dl class="meta">
  <dt>From</dt><dd>${clip(m.from ?? '', MAX_SHOWN)}</dd>
  <dt>Envelope</dt><dd>${m.mailFrom || '<>'} → ${m.rcptTo.join(', ')}</dd>
  <dt>Client</dt><dd>${m.client.address}${m.client.hostname ? ` (${m.client.hostname})` : ''}${m.client.helo ? `, HELO ${m.client.helo}` : ''}</dd>
  <dt>Received</dt><dd>${when(m.receivedAt)}</dd>
  <dt>Size</dt><dd>${formatSize(m.size)}</dd>
  <dt>Route</dt><dd>${m.route ?? '—'}</dd>
  <dt>Queue id</dt><dd><code>${m.id}</code></dd>
  ${verdicts}
</dl>
${actions(m, ctx)}
<p class="action-result" id="action-result" role="status" hidden></p>
${timeline(m)}
<section class="bodies">
${m.html !== null
  ? html`<h2>HTML</h2>
<iframe class="html-body" title="HTML body (sandboxed, no scripts, no remote content)" src="/messages/${id}/body" sandbox="" referrerpolicy="no-referrer"></iframe>`
  : ''}
${m.text !== null ? html`<h2>Text</h2><pre class="text-body">${m.text}</pre>` : ''}
${m.html === null && m.text === null ? html`<p class="none">This message has no text or HTML body.</p>` : ''}
</section>
${m.attachmentList.length > 0
  ? html`<section class="attachments"><h2>Attachments</h2><ul>
${m.attachmentList.map((a) => html`<li><a href="${api}/attachments/${a.index}" download>${a.filename ?? `attachment ${a.index + 1}`}</a> <small>${a.contentType}, ${formatSize(a.size)}${a.disposition ? `, ${a.disposition}` : ''}</small></li>`)}
</ul></section>`
  : ''}
<details class="headers"><summary>Headers (${m.headers.length})</summary>
<table><tbody>
${m.headers.map(([name, value]) => html`<tr><th>${clip(name, 200)}</th><td>${clip(value, MAX_SHOWN)}</td></tr>`)}
</tbody></table>
</details>
<p class="sources">
  ${m.hasRaw ? html`<a href="${api}/raw" download="${m.id}.eml">Raw source (.eml)</a>` : html`<span class="none">Raw source removed by retention</span>`}
  ${m.hasEvent ? html`<a href="${api}/event">Event JSON</a>` : ''}
</p>
</article>`;
  return layout(m.subject ?? '(no subject)', ctx, body, { page: 'message', id: m.id });
}

export function renderNotFound(ctx: RenderContext, what: string): string {
  return layout('Not found', ctx, html`<p class="back"><a href="/">« All messages</a></p><h1>Not found</h1><p>${what}</p>`, { page: 'error' });
}
