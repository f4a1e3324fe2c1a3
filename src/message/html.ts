/**
 * HTML bodies as the event needs them (docs/payload.md): plain text derived
 * from HTML when a message has no text part (`htmlToText`), and the reply's
 * HTML without the quoted history (`stripHtmlQuote`).
 *
 * Both run on one tokenizer of our own rather than on an HTML-to-text library:
 * HTML reaches it from any sender, and the well-kept converters measured here
 * were not linear on hostile input (docs/decisions.md, "HTML to text"). The
 * tokenizer only moves forward through the string (every search starts where
 * the previous one ended), keeps no tree, and bounds every look-back, so the
 * whole pass is linear in the length of the HTML. Character references are
 * decoded by the `entities` package (the WHATWG named-reference table).
 */
import { decodeHTML } from 'entities';

// ── tokenizer ───────────────────────────────────────────────────────────────

interface StartTag {
  kind: 'start';
  name: string;
  /** The source between the tag name and `>` (attributes), at most ATTR_SOURCE_MAX characters. */
  attrs: string;
  selfClosing: boolean;
  /** Offset of `<` and just after `>`. */
  from: number;
  to: number;
}
interface EndTag {
  kind: 'end';
  name: string;
  from: number;
  to: number;
}
interface Text {
  kind: 'text';
  /** Raw text: character references not yet decoded. */
  raw: string;
  from: number;
  to: number;
}
type Token = StartTag | EndTag | Text;

/** Attributes past this length are not looked at (real mail's tags are far shorter; it bounds the work per tag). */
const ATTR_SOURCE_MAX = 4096;
/** Elements whose content is not text (HTML §13.1.2 raw text elements, and friends). */
const RAW_TEXT = new Set(['script', 'style', 'title', 'textarea', 'xmp', 'template', 'noscript', 'iframe', 'noembed', 'noframes']);

const isNameStart = (c: number) => (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a);
const isNameChar = (c: number) => isNameStart(c) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x3a || c === 0x5f;

/** Visits every token of `html` in order; the visitor returns false to stop. */
function tokenize(html: string, visit: (t: Token) => boolean | void): void {
  const n = html.length;
  let pos = 0;
  let textFrom = 0;
  const flushText = (to: number): boolean => {
    if (to > textFrom) return visit({ kind: 'text', raw: html.slice(textFrom, to), from: textFrom, to }) !== false;
    return true;
  };
  while (pos < n) {
    const lt = html.indexOf('<', pos);
    if (lt === -1 || lt + 1 >= n) break;
    const c = html.charCodeAt(lt + 1);
    if (c === 0x21 /* ! */ || c === 0x3f /* ? */) {
      // comment, doctype, CDATA, processing instruction: no text of the message
      if (!flushText(lt)) return;
      let end: number;
      if (html.startsWith('<!--', lt)) {
        const close = html.indexOf('-->', lt + 4);
        end = close === -1 ? n : close + 3;
      } else {
        const close = html.indexOf('>', lt + 2);
        end = close === -1 ? n : close + 1;
      }
      pos = textFrom = end;
      continue;
    }
    const isEnd = c === 0x2f; /* / */
    const nameAt = isEnd ? lt + 2 : lt + 1;
    if (nameAt >= n || !isNameStart(html.charCodeAt(nameAt))) {
      pos = lt + 1; // a "<" that starts no tag is text
      continue;
    }
    let i = nameAt + 1;
    while (i < n && isNameChar(html.charCodeAt(i))) i++;
    const name = html.slice(nameAt, i).toLowerCase();
    // the end of the tag: the first ">" outside a quoted attribute value
    let quote = 0;
    let j = i;
    for (; j < n; j++) {
      const d = html.charCodeAt(j);
      if (quote) {
        if (d === quote) quote = 0;
      } else if (d === 0x22 || d === 0x27) {
        // quotes only open a value after "=" (an apostrophe elsewhere is just a character)
        let k = j - 1;
        while (k > i && (html.charCodeAt(k) === 0x20 || html.charCodeAt(k) === 0x09 || html.charCodeAt(k) === 0x0a || html.charCodeAt(k) === 0x0d)) k--;
        if (html.charCodeAt(k) === 0x3d /* = */) quote = d;
      } else if (d === 0x3e /* > */) break;
    }
    const to = j < n ? j + 1 : n;
    if (!flushText(lt)) return;
    if (isEnd) {
      if (visit({ kind: 'end', name, from: lt, to }) === false) return;
      pos = textFrom = to;
      continue;
    }
    const attrEnd = j < n ? j : n;
    const selfClosing = attrEnd > i && html.charCodeAt(attrEnd - 1) === 0x2f;
    const attrs = html.slice(i, Math.min(attrEnd, i + ATTR_SOURCE_MAX));
    if (visit({ kind: 'start', name, attrs, selfClosing, from: lt, to }) === false) return;
    pos = textFrom = to;
    if (RAW_TEXT.has(name) && !selfClosing) {
      // skip to the matching end tag (case-insensitive); its content is not text
      let k = to;
      for (;;) {
        const close = html.indexOf('</', k);
        if (close === -1) {
          pos = textFrom = n;
          break;
        }
        if (html.slice(close + 2, close + 2 + name.length).toLowerCase() === name && !isNameChar(html.charCodeAt(close + 2 + name.length) || 0x20)) {
          pos = textFrom = close; // the end tag itself is the next token
          break;
        }
        k = close + 2;
      }
    }
  }
  flushText(n);
}

/**
 * The value of attribute `want` (lower-case name) in a start tag's attribute
 * source, character references decoded; null when absent. One forward pass.
 */
export function attribute(attrs: string, want: string): string | null {
  const n = attrs.length;
  let i = 0;
  while (i < n) {
    // skip white space and stray slashes
    while (i < n && (attrs.charCodeAt(i) <= 0x20 || attrs.charCodeAt(i) === 0x2f)) i++;
    const nameFrom = i;
    while (i < n && attrs.charCodeAt(i) > 0x20 && attrs.charCodeAt(i) !== 0x3d && attrs.charCodeAt(i) !== 0x2f) i++;
    const name = attrs.slice(nameFrom, i).toLowerCase();
    while (i < n && attrs.charCodeAt(i) <= 0x20) i++;
    let value = '';
    if (i < n && attrs.charCodeAt(i) === 0x3d) {
      i++;
      while (i < n && attrs.charCodeAt(i) <= 0x20) i++;
      const q = attrs.charCodeAt(i);
      if (q === 0x22 || q === 0x27) {
        const close = attrs.indexOf(q === 0x22 ? '"' : "'", i + 1);
        const end = close === -1 ? n : close;
        value = attrs.slice(i + 1, end);
        i = end + 1;
      } else {
        const from = i;
        while (i < n && attrs.charCodeAt(i) > 0x20) i++;
        value = attrs.slice(from, i);
      }
    }
    if (name === want) return decodeHTML(value);
    if (i === nameFrom) i++; // no progress: skip one character
  }
  return null;
}

// ── HTML to text ────────────────────────────────────────────────────────────

/** Elements that start and end a line. */
const BLOCK = new Set([
  'address', 'article', 'aside', 'body', 'center', 'dd', 'details', 'dialog', 'div', 'dl', 'dt', 'fieldset', 'figcaption', 'figure', 'footer', 'form', 'header', 'hgroup', 'html', 'li', 'main', 'nav', 'section', 'summary', 'tr', 'td', 'th', 'caption', 'tbody', 'thead', 'tfoot', 'hr',
]);
/** Blocks set off by a blank line. */
const PARAGRAPH = new Set(['p', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'ul', 'ol', 'table', 'blockquote', 'pre']);

/**
 * Plain text of an HTML body, for messages that have no text part
 * (docs/payload.md `textSource`): blocks and `<br>` become line breaks,
 * paragraphs, headings, lists, tables and quotes are set off by a blank line,
 * list items start with `* ` (or their number), `<blockquote>` lines with
 * `> ` (RFC 3676 §4.5 quote marks, so the reply stripper sees them), a link
 * becomes `text [url]` (the URL alone is dropped when it equals the text, as
 * for `mailto:` links showing the address; fragment and `javascript:` links
 * keep only their text), images become nothing except their `alt` text inside
 * a link, and script, style and other non-text elements are left out. White
 * space collapses as a browser does, except inside `<pre>`. Line ends `\n`.
 */
export function htmlToText(html: string): string {
  const out: string[] = [];
  let quote = 0; // blockquote depth
  let pre = 0;
  let breaks = 0; // line breaks owed before the next text (2 = a blank line)
  let atStart = true; // nothing written yet
  let lineOpen = false; // the current line has text
  let space = false; // a collapsed space owed before the next word
  const lists: { ordered: boolean; n: number }[] = [];
  const links: { href: string | null; text: number }[] = [];
  let linkText = ''; // text written inside the innermost open link

  const prefix = () => (quote ? '> '.repeat(quote) : '');
  let gapQuote = 0; // quote depth where the owed breaks began: a blank line before a quote is not quoted
  const need = (k: number) => {
    if (!breaks) gapQuote = quote;
    if (k > breaks) breaks = k;
  };
  const write = (s: string) => {
    if (!s) return;
    if (atStart) {
      atStart = false;
      breaks = 0;
      out.push(prefix());
    } else if (breaks) {
      // a quoted blank line is ">" (no trailing space)
      const gap = Math.min(gapQuote, quote);
      for (let b = 0; b < breaks; b++) out.push(b < breaks - 1 ? `\n${'>'.repeat(gap)}` : `\n${prefix()}`);
      breaks = 0;
      space = false;
    } else if (space && lineOpen) {
      out.push(' ');
    }
    space = false;
    out.push(s);
    lineOpen = true;
    if (links.length) linkText += s;
  };
  const text = (raw: string) => {
    const s = decodeHTML(raw);
    if (pre) {
      // preformatted: every line end is kept, blank lines included
      const lines = s.replace(/\r\n?/g, '\n').split('\n');
      lines.forEach((l, i) => {
        if (i > 0 && !atStart) {
          if (!breaks) gapQuote = quote;
          breaks = lineOpen ? Math.max(breaks, 1) : breaks + 1;
          lineOpen = false;
          space = false;
        }
        if (l) write(l.replace(/\u00a0/g, ' '));
      });
      return;
    }
    // collapse ASCII white space (not U+00A0, which is then a plain space)
    const words = s.split(/[ \t\n\r\f]+/);
    for (let i = 0; i < words.length; i++) {
      const w = words[i]!;
      if (i > 0) space = true;
      const v = w.replace(/\u00a0/g, ' ');
      // a paragraph holding only &nbsp; (Outlook's empty lines) is an empty line, not text
      if (v.trim()) write(v);
      else if (v) space = true;
    }
  };
  const block = (k: number) => {
    if (!atStart) need(k);
    lineOpen = false;
    space = false;
  };

  tokenize(html, (t) => {
    if (t.kind === 'text') {
      text(t.raw);
      return;
    }
    const name = t.name;
    if (t.kind === 'start') {
      if (name === 'br') {
        if (atStart) return;
        // consecutive <br> each end a line
        if (breaks >= 1) out.push(`\n${'>'.repeat(quote)}`);
        else need(1);
        lineOpen = false;
        space = false;
        return;
      }
      if (name === 'img') {
        if (links.length) {
          const alt = attribute(t.attrs, 'alt');
          if (alt) text(alt);
        }
        return;
      }
      if (name === 'a' && !t.selfClosing) {
        links.push({ href: attribute(t.attrs, 'href'), text: linkText.length });
        return;
      }
      if (PARAGRAPH.has(name)) block(2);
      else if (BLOCK.has(name)) block(1);
      if (name === 'blockquote') quote++;
      else if (name === 'pre') pre++;
      else if (name === 'ul' || name === 'ol') lists.push({ ordered: name === 'ol', n: 0 });
      else if (name === 'li') {
        const list = lists[lists.length - 1];
        const marker = list?.ordered ? `${++list.n}. ` : '* ';
        write(marker.trimEnd());
        space = true;
      }
      return;
    }
    // end tags
    if (name === 'a') {
      const link = links.pop();
      if (!link) return;
      const shown = linkText.slice(link.text).trim();
      if (!links.length) linkText = '';
      let href = (link.href ?? '').trim();
      if (/^mailto:/i.test(href)) href = href.slice(7);
      if (!href || href.startsWith('#') || /^javascript:/i.test(href) || href === shown) return;
      if (shown) {
        space = true;
        write(`[${href}]`);
      }
      // an <a> with no text (an image without alt) shows nothing: its URL alone reads as noise
      return;
    }
    if (name === 'blockquote' && quote > 0) {
      block(2);
      quote--;
      return;
    }
    if (name === 'pre' && pre > 0) pre--;
    if ((name === 'ul' || name === 'ol') && lists.length) lists.pop();
    if (PARAGRAPH.has(name)) block(2);
    else if (BLOCK.has(name)) block(1);
  });
  // trailing white space of each line goes (a "-- " signature line reads as "--", which the reply stripper knows)
  // and no more than one blank line in a row, as a browser shows empty paragraphs and <br>s in a row
  return out
    .join('')
    .replace(/[ \t]+\n/g, '\n')
    .replace(/\n{3,}/g, '\n\n')
    .trimEnd();
}

// ── the reply's HTML without the quoted part ────────────────────────────────

/** Cheap pre-scan: HTML without any of these substrings has no quote marker, and is returned as it is. */
const MAY_QUOTE = /gmail_quote|divRplyFwdMsg|appendonsend|moz-cite-prefix|yahoo_quoted|cite|border-top|(?:From|De|Von|Van|Da|Från|Fra):/i;
/** The first words of an Outlook header block ("From: … Sent: …"). */
const OUTLOOK_FROM = /^(?:From|De|Von|Van|Da|Från|Fra):/i;
const OUTLOOK_SENT = /(?:^|\s)(?:Sent|Date|Envoyé|Gesendet|Verzonden|Enviado|Inviato|Skickat|Sendt):/i;
/** How far ahead (characters of HTML) a candidate marker may be confirmed, and how many candidates are checked. */
const LOOKAHEAD = 1500;
const MAX_CANDIDATES = 50;
const VOID = new Set(['area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta', 'param', 'source', 'track', 'wbr']);
/** How deep the open-element stack is searched for an end tag's element (bounds the work per tag). */
const STACK_SEARCH = 32;

/** The visible text at the start of `html` from `from`, up to LOOKAHEAD characters, tags removed. */
function textAhead(html: string, from: number): string {
  let s = '';
  tokenize(html.slice(from, from + LOOKAHEAD), (t) => {
    if (t.kind === 'text') s += decodeHTML(t.raw);
    else if (t.kind === 'start' && t.name === 'br') s += '\n';
  });
  return s.replace(/\s+/g, ' ').trimStart();
}

const hasClass = (attrs: string, ...names: string[]): boolean => {
  const cls = attribute(attrs, 'class');
  if (!cls) return false;
  const list = cls.split(/\s+/);
  return names.some((n) => list.includes(n));
};

/**
 * The HTML of a reply without the quoted message, or `html` itself when no
 * quote marker is found. The markers, as the common clients write them:
 *
 * - Gmail: `<div class="gmail_quote">` (newer: `gmail_quote_container`), the
 *   attribution and the quoted message inside it;
 * - Outlook on the web and new Outlook: `<div id="appendonsend">`, an `<hr>`,
 *   then `<div id="divRplyFwdMsg">` with the From/Sent header block; the
 *   quoted message follows;
 * - Outlook for Windows: a `<div>` with a `border-top:solid` style holding the
 *   "From: … Sent: …" block, or the block alone in a paragraph;
 * - Apple Mail: `<blockquote type="cite">`;
 * - Thunderbird: `<div class="moz-cite-prefix">` (the attribution) before
 *   `<blockquote type="cite">`;
 * - Yahoo: `<div class="yahoo_quoted">`.
 *
 * Everything from the first marker on is cut (the clients put the quote after
 * the reply), with a `<hr>` and line breaks right before it, and the elements
 * still open there are closed. Linear: one forward pass, confirmations look a
 * bounded distance ahead, and at most MAX_CANDIDATES of them are tried.
 */
export function stripHtmlQuote(html: string): string {
  if (!MAY_QUOTE.test(html)) return html;
  const stack: string[] = [];
  let cut = -1;
  let lastBlock = -1; // where the innermost <p>/<div> whose text we are in began
  let lastBlockDepth = 0;
  let hr = -1; // a <hr> with no text after it yet
  let candidates = 0;
  tokenize(html, (t) => {
    if (t.kind === 'text') {
      const plain = t.raw.trim();
      if (!plain) return;
      // Outlook's header block without a separator: "From:" (often in <b>) and, shortly after, "Sent:"
      if (candidates < MAX_CANDIDATES && OUTLOOK_FROM.test(decodeHTML(plain)) && lastBlock !== -1) {
        candidates++;
        if (OUTLOOK_SENT.test(textAhead(html, t.from))) {
          cut = lastBlock;
          stack.length = lastBlockDepth;
          return false;
        }
      }
      hr = -1;
      return;
    }
    if (t.kind === 'end') {
      // pop to the element this tag closes, when it is near the top of the stack
      for (let i = stack.length - 1; i >= 0 && i >= stack.length - STACK_SEARCH; i--) {
        if (stack[i] === t.name) {
          stack.length = i;
          break;
        }
      }
      // the block a "From:" line would be cut at must still be open
      if (stack.length <= lastBlockDepth) lastBlock = -1;
      return;
    }
    const { name, attrs } = t;
    let marker = false;
    if (name === 'blockquote') marker = (attribute(attrs, 'type') ?? '').toLowerCase() === 'cite' || hasClass(attrs, 'gmail_quote');
    else if (name === 'div') {
      const id = attribute(attrs, 'id');
      marker = id === 'divRplyFwdMsg' || id === 'appendonsend' || hasClass(attrs, 'gmail_quote', 'gmail_quote_container', 'moz-cite-prefix', 'yahoo_quoted');
      if (!marker && candidates < MAX_CANDIDATES) {
        const style = (attribute(attrs, 'style') ?? '').replace(/\s+/g, '').toLowerCase();
        if (style.includes('border-top:solid')) {
          candidates++;
          const ahead = textAhead(html, t.to);
          marker = OUTLOOK_FROM.test(ahead) && OUTLOOK_SENT.test(ahead);
        }
      }
    }
    if (marker) {
      cut = hr !== -1 ? hr : t.from;
      return false;
    }
    if (name === 'hr') hr = t.from;
    if (name === 'p' || name === 'div') {
      lastBlock = t.from;
      lastBlockDepth = stack.length;
    }
    if (!VOID.has(name) && !t.selfClosing) stack.push(name);
  });
  if (cut === -1) return html;
  let head = html.slice(0, cut);
  // line breaks and white space the client put before the quote
  for (;;) {
    const trimmed = head.trimEnd();
    const br = /<br\s*\/?>$/i.exec(trimmed.slice(-12));
    if (!br) {
      head = trimmed;
      break;
    }
    head = trimmed.slice(0, trimmed.length - br[0].length);
  }
  let closing = '';
  for (let i = stack.length - 1; i >= 0; i--) closing += `</${stack[i]}>`;
  return head + closing;
}
