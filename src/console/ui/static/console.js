// postgate console: progressive enhancement of the server-rendered pages
// (docs/console.md, "The web console"). Without this script every page is
// still readable and every button still works as a form. With it: the list
// follows the server-sent events of /api/v1/events, the search answers
// without a reload, and the actions go through the REST API with the CSRF
// header and update the delivery timeline in place.
//
// Every piece of markup it inserts is the server's own rendering of the page
// (fetched and parsed with DOMParser, never run), so escaping stays in one
// place: the server. Nothing here uses innerHTML with data from mail.
'use strict';
(function () {
  var page = document.body.getAttribute('data-page');
  var csrfMeta = document.querySelector('meta[name="postgate-csrf"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute('content') : '';
  var live = document.getElementById('live');

  // Fetches a console page and returns it parsed (inert: DOMParser runs no script).
  function fetchPage(url) {
    return fetch(url, { headers: { accept: 'text/html' }, credentials: 'same-origin', cache: 'no-store' }).then(function (res) {
      if (!res.ok) throw new Error('HTTP ' + res.status);
      return res.text();
    }).then(function (text) {
      return new DOMParser().parseFromString(text, 'text/html');
    });
  }

  // Replaces the element with this id by the one of the fetched document (or removes it).
  function swap(doc, id) {
    var mine = document.getElementById(id);
    var theirs = doc.getElementById(id);
    if (mine && theirs) mine.replaceWith(document.importNode(theirs, true));
    else if (mine && !theirs) mine.remove();
    return theirs;
  }

  function listen(onChange) {
    if (!window.EventSource) return;
    var es = new EventSource('/api/v1/events');
    var handler = function (ev) {
      var change = null;
      try { change = JSON.parse(ev.data); } catch (e) { /* a keep-alive or another shape: still a reason to look */ }
      onChange(change, ev.type);
    };
    ['message', 'added', 'updated', 'deleted', 'change'].forEach(function (t) { es.addEventListener(t, handler); });
    // Changes made between the page's rendering and this subscription (or
    // while the stream was reconnecting) sent no event here: read the page
    // again once the stream is open.
    es.addEventListener('open', function () { if (live) live.hidden = false; onChange(null, 'open'); });
    es.addEventListener('error', function () { if (live) live.hidden = true; });
  }

  function debounce(fn, ms) {
    var t = null;
    return function () { clearTimeout(t); t = setTimeout(fn, ms); };
  }

  // ---- the list ----
  if (page === 'list') {
    var form = document.getElementById('search');
    var current = location.pathname + location.search;
    var refreshing = null;
    var again = false;

    var refresh = function (url) {
      if (url) current = url;
      if (refreshing) { again = true; return refreshing; }
      var before = {};
      document.querySelectorAll('#rows tr[data-id]').forEach(function (tr) { before[tr.getAttribute('data-id')] = true; });
      var table = document.getElementById('messages');
      refreshing = fetchPage(current).then(function (doc) {
        swap(doc, 'rows');
        var empty = document.getElementById('empty');
        var newEmpty = doc.getElementById('empty');
        if (empty && !newEmpty) empty.remove();
        else if (!empty && newEmpty && table) table.after(document.importNode(newEmpty, true));
        else if (empty && newEmpty) empty.replaceWith(document.importNode(newEmpty, true));
        swap(doc, 'pager');
        document.title = doc.title;
        document.querySelectorAll('#rows tr[data-id]').forEach(function (tr) {
          if (!before[tr.getAttribute('data-id')]) tr.classList.add('fresh');
        });
      }).catch(function () { /* the next event tries again */ }).then(function () {
        refreshing = null;
        if (again) { again = false; refresh(); }
      });
      return refreshing;
    };

    // New messages and status changes: the first page follows the events;
    // an older page stays still (its rows would shift under the reader).
    listen(function () {
      var first = document.getElementById('messages');
      if (first && first.getAttribute('data-first-page') === 'yes' && !/[?&]cursor=/.test(current)) refresh();
    });

    if (form) {
      var search = function () {
        var params = new URLSearchParams(new FormData(form));
        params.forEach(function (v, k) { if (!v) params.delete(k); });
        var qs = params.toString();
        var url = '/' + (qs ? '?' + qs : '');
        if (url !== current) history.replaceState(null, '', url);
        refresh(url);
      };
      form.addEventListener('submit', function (ev) { ev.preventDefault(); search(); });
      var typed = debounce(search, 250);
      form.querySelector('input[name="q"]').addEventListener('input', typed);
      form.querySelector('select[name="status"]').addEventListener('change', search);
    }
  }

  // ---- the message view ----
  if (page === 'message') {
    var id = document.body.getAttribute('data-id');
    var api = '/api/v1/messages/' + encodeURIComponent(id);

    var refreshMessage = function () {
      return fetchPage(location.pathname).then(function (doc) {
        swap(doc, 'timeline');
        swap(doc, 'actions');
        bindActions();
      }).catch(function () { /* the next event tries again */ });
    };

    var say = function (ok, text) {
      var box = document.getElementById('action-result');
      if (!box) return;
      box.hidden = false;
      box.className = 'action-result ' + (ok ? 'ok' : 'failed');
      box.textContent = text;
    };

    var requests = {
      retry: function () { return { method: 'POST', url: api + '/retry', body: null }; },
      replay: function (formEl) { return { method: 'POST', url: api + '/replay', body: JSON.stringify({ target: formEl.querySelector('select[name="target"]').value }) }; },
      delete: function () { return { method: 'DELETE', url: api, body: null }; },
    };

    var bindActions = function () {
      document.querySelectorAll('#actions form[data-action]').forEach(function (formEl) {
        formEl.addEventListener('submit', function (ev) {
          var verb = formEl.getAttribute('data-action');
          var confirmText = formEl.getAttribute('data-confirm');
          ev.preventDefault();
          if (confirmText && !window.confirm(confirmText)) return;
          var r = requests[verb](formEl);
          var button = formEl.querySelector('button');
          button.disabled = true;
          var headers = { accept: 'application/json', 'x-csrf-token': csrf };
          if (r.body) headers['content-type'] = 'application/json';
          fetch(r.url, { method: r.method, headers: headers, body: r.body, credentials: 'same-origin' }).then(function (res) {
            // An API that does not know this action: the form does it the plain way.
            if (res.status === 404 || res.status === 405) { formEl.submit(); return null; }
            return res.json().catch(function () { return { ok: res.ok, message: 'HTTP ' + res.status }; }).then(function (result) {
              var ok = res.ok && result.ok !== false;
              say(ok, (result.message || (ok ? 'Done.' : 'Failed.')) + (result.code && !ok ? ' (' + result.code + ')' : ''));
              if (ok && verb === 'delete') { location.assign('/?done=delete&ok=1'); return null; }
              return refreshMessage();
            });
          }).catch(function (e) {
            say(false, 'The console did not answer: ' + e.message);
          }).then(function () { button.disabled = false; });
        });
      });
    };
    bindActions();

    listen(function (change) {
      if (change && change.type === 'deleted' && change.id === id) { say(false, 'This message was deleted.'); return; }
      var changedId = change && (change.id || (change.summary && change.summary.id));
      if (!change || !changedId || changedId === id) refreshMessage();
    });
  }
})();
