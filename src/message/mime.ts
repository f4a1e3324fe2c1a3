/**
 * The fast path of the MIME parse: one synchronous pass over a message held in
 * a Buffer, for the well-formed messages that make up nearly all mail.
 *
 * Why it exists: the streaming path (MimeGuard → mailparser's MailParser, see
 * parse.ts) pays for streams, setImmediate hops, per-line Buffer slices and a
 * second line scan on every message; profiled on a 5 KB text+HTML message,
 * most of its time went to stream machinery and garbage collection, not to
 * MIME work. Here the header blocks are read line by line, but bodies are never
 * cut into lines: the only places a body can end are delimiter lines, and
 * `Buffer.indexOf('\n--')` finds those candidates natively (RFC 2046 §5.1.1:
 * a delimiter is "--" + boundary at the start of a line). Base64 is decoded by
 * Node's own decoder, quoted-printable and charsets by small loops and
 * TextDecoder.
 *
 * It must give exactly what the streaming path gives. It does so by accepting
 * only input whose meaning is unambiguous, where the streaming path would
 * report nothing about the MIME structure, and by answering `null` ("not
 * mine") for anything else: an unclosed or boundary-less multipart, a
 * delimiter line with trailing white space, broken or truncated base64, an
 * unknown Content-Transfer-Encoding or charset, RFC 2231 or RFC 2047 encoded
 * MIME parameters, comments in MIME headers, format=flowed, a part over a
 * limit, an attachment bound for the BlobSink, a header line that is not a
 * field, a digest part without Content-Type… The caller then runs the
 * streaming path, which handles (and reports) all of those. The differential
 * test (test/parse-diff.test.ts) runs both paths over the corpus and over
 * mutated variants and requires equal results.
 *
 * Leaf module apart from address.ts's charset helpers.
 */
import { charsetEncoding, decodeBytes } from './address.js';

export interface FastLimits {
  maxHeaderBytes: number;
  maxParts: number;
  maxDepth: number;
  maxDecodedBytes: number;
  inlineLimit: number;
}

export interface FastAttachment {
  filename: string | null;
  contentType: string;
  disposition: 'attachment' | 'inline' | null;
  contentId: string | null;
  related: boolean;
  content: Buffer;
}

export interface FastResult {
  /** The top-level header block as received, blank line included. */
  rootHeader: Buffer;
  /** null when there is no inline text/plain part. */
  text: string | null;
  /** null when there is no inline text/html part. */
  html: string | null;
  attachments: FastAttachment[];
}

/** Thrown inside the pass when the input is not one the fast path answers for; caught by fastParse. */
class NotMine {}
const NOT_MINE = new NotMine();
function bail(): never {
  throw NOT_MINE;
}

const NL = 0x0a;
const CR = 0x0d;
const DASH = 0x2d;
const LF_DASHES = Buffer.from('\n--', 'latin1');

interface Node {
  parent: Node | null;
  depth: number;
  /** mailsplit's content type: lower-cased, defaulted when the header is missing */
  type: string;
  boundary: Buffer | null;
  children: Node[];
  /** inline text/plain or text/html: collected as body text, not an attachment */
  isText: boolean;
  /** decoded text of an inline text part */
  textContent: string;
  attachment: FastAttachment | null;
  // header facts, kept until the body is known
  cte: string;
  charset: string | null;
}

// ── header blocks ───────────────────────────────────────────────────────────

interface MimeHeaders {
  contentType: string | null;
  disposition: string | null;
  cte: string | null;
  contentId: string | null;
}

/** RFC 5322 §2.2.3 unfolding as libmime does it (a line break and the white space after it become one space), then the value after the first colon, trimmed. */
function unfoldedValue(logical: string): string {
  const line = logical.replace(/(?:\r?\n|\r)[ \t]*/g, ' ').trim();
  const colon = line.indexOf(':');
  return line.slice(colon + 1).trim();
}

/** Printable US-ASCII, space and tab only (with the line breaks of folding). */
// eslint-disable-next-line no-control-regex
const PLAIN_FIELD = /^[\x20-\x7e\t\r\n]*$/;

/**
 * Reads a header block starting at `start`. Returns the index just past its
 * blank line and the MIME fields of a part. A line that is a delimiter of an
 * enclosing multipart ends a header block without its blank line (the part has
 * no body): the streaming path drops such a part, so it is not ours.
 */
function readHeader(buf: Buffer, start: number, limits: FastLimits, open: Node[], root: boolean): { end: number; fields: MimeHeaders } {
  const fields: MimeHeaders = { contentType: null, disposition: null, cte: null, contentId: null };
  let pos = start;
  let cost = 0;
  let current: { name: string; start: number } | null = null;
  const commit = (end: number) => {
    if (!current) return;
    const name = current.name;
    if (name === 'content-type' || name === 'content-disposition' || name === 'content-transfer-encoding' || name === 'content-id') {
      const raw = buf.toString('latin1', current.start, end);
      // a CR that is not part of a line break: libmime reads it as a fold, MimeGuard as content
      if (!PLAIN_FIELD.test(raw) || /\r(?!\n)/.test(raw)) bail();
      const key = name === 'content-type' ? 'contentType' : name === 'content-disposition' ? 'disposition' : name === 'content-transfer-encoding' ? 'cte' : 'contentId';
      // A repeated MIME field: the two paths pick the first, but there is no reason to bet on it.
      if (fields[key] !== null) bail();
      fields[key] = raw;
    }
    current = null;
  };
  let first = true;
  for (;;) {
    const nl = buf.indexOf(NL, pos);
    if (nl === -1) bail(); // no blank line before the end: a header-only part or message
    const len = nl + 1 - pos;
    if (len === 1 || (len === 2 && buf[pos] === CR)) {
      commit(pos);
      return { end: nl + 1, fields };
    }
    // MimeGuard's and mailsplit's limit: every line counts at least 64 bytes
    cost += len < 64 ? 64 : len;
    if (cost > limits.maxHeaderBytes) bail();
    const c0 = buf[pos]!;
    if (c0 === DASH && open.length && buf[pos + 1] === DASH && delimiterOf(buf, pos, nl, open) !== 0) bail();
    if (c0 === 0x20 || c0 === 0x09) {
      if (first) bail(); // a continuation with nothing to continue
    } else if (c0 < 0x21 || c0 > 0x7e) {
      // a field name starting with a control or 8-bit byte: mailsplit trims a CR off a
      // name ("\rContent-Type"), MimeGuard too; not worth imitating
      bail();
    } else {
      commit(pos);
      if (root && first && (c0 === 0x46 || c0 === 0x66 || c0 === 0x50 || c0 === 0x70)) {
        // an mbox "From " or HTTP "POST " line ahead of the headers: mailsplit treats it specially
        const head = buf.toString('latin1', pos, Math.min(nl, pos + 5)).toLowerCase();
        if (head === 'from ' || head === 'post ') bail();
      }
      // A field name runs up to the colon (RFC 5322 §2.2; white space before the colon is the
      // obsolete syntax of §4.5). A line that is not a field ends the header block without the
      // empty line: the streaming path reads it as the body and reports it.
      const colon = buf.indexOf(0x3a, pos);
      if (colon <= pos || colon > nl) bail();
      let k = pos + 1;
      while (k < colon && buf[k]! > 0x20 && buf[k]! < 0x7f) k++;
      if (k < colon) {
        while (k < colon && (buf[k] === 0x20 || buf[k] === 0x09)) k++;
        if (k < colon) bail();
      }
      if (c0 === 0x43 || c0 === 0x63) {
        // only Content-* fields matter here
        const name = buf.toString('latin1', pos, colon).trim().toLowerCase();
        if (name.startsWith('content-')) current = { name, start: pos };
      }
    }
    first = false;
    pos = nl + 1;
  }
}

// RFC 2045 §5.1 token: any CHAR except SPACE, CTLs and tspecials.
const TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$/;

interface Structured {
  value: string;
  params: Map<string, string>;
}

/**
 * `value; name=token; name="quoted string"` (RFC 2045 §5.1, RFC 2183 §2) in
 * its plain form only. Comments (RFC 5322 §3.2.2), quoted-pairs, RFC 2231
 * extended parameters (`name*=`, `name*0=`), RFC 2047 encoded words, folding
 * inside a quoted string, repeated parameters and anything unparseable are
 * left to the streaming path, whose libmime reading of them is the reference.
 */
function structured(field: string, slash: boolean): Structured {
  if (field.includes('"') && /"[^"]*\n/.test(field.replace(/"[^"\n]*"/g, ''))) {
    // a quoted string folded over lines: libmime collapses the white space of the fold to one
    // space, MimeGuard keeps it; whichever reading a boundary gets, the two would disagree
    bail();
  }
  const s = unfoldedValue(field);
  if (s.includes('=?') || s.includes('(') || s.includes('\\')) bail();
  const params = new Map<string, string>();
  const semi = s.indexOf(';');
  const value = (semi === -1 ? s : s.slice(0, semi)).trim();
  if (slash) {
    const slashAt = value.indexOf('/');
    if (slashAt === -1 || !TOKEN.test(value.slice(0, slashAt)) || !TOKEN.test(value.slice(slashAt + 1))) bail();
  } else if (!TOKEN.test(value)) bail();
  let i = semi === -1 ? s.length : semi;
  const n = s.length;
  while (i < n) {
    // at a ';'
    i++;
    while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
    if (i >= n) break;
    const eq = s.indexOf('=', i);
    if (eq === -1) bail();
    const name = s.slice(i, eq).trim().toLowerCase();
    if (!TOKEN.test(name) || name.includes('*') || params.has(name)) bail();
    i = eq + 1;
    while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
    let v: string;
    if (s[i] === '"') {
      const close = s.indexOf('"', i + 1);
      if (close === -1) bail();
      v = s.slice(i + 1, close);
      i = close + 1;
      while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
      if (i < n && s[i] !== ';') bail();
    } else {
      let end = s.indexOf(';', i);
      if (end === -1) end = n;
      v = s.slice(i, end).trim();
      // an unquoted value is one run without white space or quotes
      if (!v || /[\s"]/.test(v)) bail();
      i = end;
    }
    params.set(name, v);
  }
  return { value, params };
}

// ── delimiter lines (RFC 2046 §5.1.1) ───────────────────────────────────────

/**
 * For a line [pos, nl] (nl is its LF, or buf.length for a last line without
 * one) starting with "--": 1 when it is exactly the delimiter of the innermost
 * open multipart, 2 its close delimiter, 0 when it is no delimiter of any open
 * multipart. Lines that both paths could read differently (trailing white
 * space, stray CRs, a delimiter of an outer multipart that closes inner ones
 * unclosed, an open delimiter without a line end) are not ours.
 */
function delimiterOf(buf: Buffer, pos: number, nl: number, open: Node[]): 0 | 1 | 2 {
  for (let k = open.length - 1; k >= 0; k--) {
    const b = open[k]!.boundary!;
    const at = pos + 2;
    if (nl - at < b.length || buf.compare(b, 0, b.length, at, at + b.length) !== 0) continue;
    let i = at + b.length;
    let kind: 1 | 2 = 1;
    if (buf[i] === DASH && buf[i + 1] === DASH && i + 1 < nl) {
      kind = 2;
      i += 2;
    }
    const c = i < nl ? buf[i]! : -1;
    const exact = nl === buf.length ? i === nl && kind === 2 : i === nl || (c === CR && i + 1 === nl);
    if (exact) {
      if (k !== open.length - 1) bail(); // an outer delimiter would end inner multiparts unclosed
      return kind;
    }
    // "--b" followed by white space, a CR, a dash, or the end of input: a possible delimiter
    if (c === -1 || c === 0x20 || c === 0x09 || c === CR || c === DASH) bail();
  }
  return 0;
}

/** The next delimiter line of the innermost open multipart at or after `from` (a line start). */
function nextDelimiter(buf: Buffer, from: number, open: Node[]): { lineStart: number; lineEnd: number; kind: 1 | 2 } | null {
  // a delimiter can open the region itself
  let cand = from;
  if (!(buf[from] === DASH && buf[from + 1] === DASH)) {
    const hit = buf.indexOf(LF_DASHES, from);
    cand = hit === -1 ? -1 : hit + 1;
  }
  while (cand !== -1) {
    let nl = buf.indexOf(NL, cand);
    const lineEnd = nl === -1 ? buf.length : nl + 1;
    if (nl === -1) nl = buf.length;
    const kind = delimiterOf(buf, cand, nl, open);
    if (kind !== 0) return { lineStart: cand, lineEnd, kind };
    const hit = buf.indexOf(LF_DASHES, cand);
    cand = hit === -1 ? -1 : hit + 1;
  }
  return null;
}

// ── content decoding ────────────────────────────────────────────────────────

const B64_CLASS = new Uint8Array(256); // 1: alphabet, 2: '=', 3: white space
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') B64_CLASS[c.charCodeAt(0)] = 1;
B64_CLASS[0x3d] = 2;
for (const c of [0x0d, 0x0a, 0x20, 0x09]) B64_CLASS[c] = 3;

/**
 * Base64 (RFC 2045 §6.8) that every decoder reads the same way: the alphabet,
 * line breaks, padding only at the end, a whole number of 4-character groups.
 * Anything else (which the streaming path reports as invalid or truncated and
 * decodes best-effort) is not ours.
 *
 * Checking every byte in JavaScript cost more than the decoding itself, so the
 * check is arithmetic instead: mailers write base64 in lines of one length,
 * whose line breaks are found by stepping from one to the next; the last line
 * (with the padding) is checked byte by byte. Node's decoder skips every byte
 * outside the alphabet and stops at "=", so if any byte other than a counted
 * line break were not base64, the decoded length would fall short of
 * 3/4 of the characters counted: comparing the two catches it. Node also
 * accepts the URL-safe "-" and "_" (RFC 4648 §5), which MIME does not: those
 * are looked for natively.
 */
function decodeBase64(body: Buffer): Buffer {
  const n = body.length;
  if (n === 0) return Buffer.alloc(0);
  if (body.indexOf(DASH) !== -1 || body.indexOf(0x5f) !== -1) bail();
  let breaks = 0; // line-break bytes in [0, tail)
  let tail = 0;
  const first = body.indexOf(NL);
  if (first !== -1) {
    const lineLen = first + 1;
    const crlf = first > 0 && body[first - 1] === CR;
    const eol = crlf ? 2 : 1;
    let lines = 0;
    for (let k = first; k < n && body[k] === NL && (body[k - 1] === CR) === crlf; k += lineLen) lines++;
    tail = lines * lineLen;
    // the padding must be in the part checked byte by byte: start that at its line
    const eq = body.indexOf(0x3d);
    if (eq !== -1 && eq < tail) {
      lines = Math.floor(eq / lineLen);
      tail = lines * lineLen;
    }
    breaks = lines * eol;
  }
  let pad = 0;
  for (let i = tail; i < n; i++) {
    const k = B64_CLASS[body[i]!]!;
    if (k === 1) {
      if (pad) bail();
    } else if (k === 2) pad++;
    else if (k === 3) breaks++;
    else bail();
  }
  const chars = n - breaks;
  if (chars % 4 !== 0 || pad > 2) bail();
  const out = Buffer.from(body.toString('latin1'), 'base64');
  if (out.length !== (chars / 4) * 3 - pad) bail();
  return out;
}

function hex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

/**
 * Quoted-printable (RFC 2045 §6.7): white space at the end of a line is
 * dropped (rule 3), "=" at the end of a line is a soft line break (rule 5),
 * "=XX" a byte; an "=" not followed by two hex digits is kept as it is, as
 * libqp (the streaming path's decoder) keeps it.
 */
function decodeQuotedPrintable(body: Buffer): Buffer {
  let s = body.toString('latin1');
  if (/[ \t](?:[\r\n]|$)/.test(s)) s = s.replace(/(^|[^ \t])[ \t]+(?=[\r\n]|$)/g, '$1');
  if (s.includes('=')) s = s.replace(/=(?:\r?\n|$)/g, '');
  const n = s.length;
  const out = Buffer.allocUnsafe(n);
  let o = 0;
  let i = 0;
  while (i < n) {
    const eq = s.indexOf('=', i);
    const stop = eq === -1 ? n : eq;
    if (stop > i) o += out.write(s.slice(i, stop), o, 'latin1');
    if (eq === -1) break;
    if (eq < n - 2) {
      const hi = hex(s.charCodeAt(eq + 1));
      const lo = hex(s.charCodeAt(eq + 2));
      if (hi >= 0 && lo >= 0) {
        out[o++] = hi * 16 + lo;
        i = eq + 3;
        continue;
      }
    }
    out[o++] = 0x3d;
    i = eq + 1;
  }
  return out.subarray(0, o);
}

function decodeTransfer(body: Buffer, cte: string): Buffer {
  if (cte === 'base64') return decodeBase64(body);
  if (cte === 'quoted-printable') return decodeQuotedPrintable(body);
  return body; // 7bit, 8bit, binary and none: the bytes as they are (RFC 2045 §6.2)
}

/**
 * A text body to a JS string. Labels that name UTF-8 or ASCII read as UTF-8
 * (8-bit bytes under "us-ascii" are UTF-8 in practice); every other known
 * label goes through the WHATWG decoder, as the streaming path's Iconv shim
 * does. Line ends become LF.
 */
function decodeText(bytes: Buffer, charset: string): string {
  const norm = charset.toLowerCase().replace(/[^a-z0-9]+/g, '');
  const s = norm === 'utf8' || norm === 'ascii' || norm === 'usascii' ? bytes.toString('utf8') : decodeBytes(bytes, charset).text;
  return s.includes('\r') ? s.replaceAll('\r\n', '\n') : s; // the same as mailparser's replace(/\r?\n/g, '\n')
}

// Charset labels libmime refuses before any decoder sees them (UTF-7 can hide markup; base64 and hex are not charsets).
const REFUSED = /^(?:(?:cs)?unicode11)?utf7(?:imap)?$|^base64$|^hex$/;
const KNOWN_CTE = new Set(['', '7bit', '8bit', 'binary', 'quoted-printable', 'base64']);

// ── the pass ────────────────────────────────────────────────────────────────

function makeNode(parent: Node | null, fields: MimeHeaders, limits: FastLimits): Node {
  const depth = parent ? parent.depth + 1 : 0;
  if (depth > limits.maxDepth) bail();
  const ct = fields.contentType === null ? null : structured(fields.contentType, true);
  const cd = fields.disposition === null ? null : structured(fields.disposition, false);
  const cte = fields.cte === null ? '' : unfoldedValue(fields.cte).toLowerCase();
  if (!KNOWN_CTE.has(cte)) bail();
  const dispValue = cd ? cd.value.toLowerCase() : '';
  let type: string;
  if (ct) type = ct.value.toLowerCase();
  else {
    // RFC 2045 §5.2 default; mailsplit guesses from a file name, which is not ours to imitate
    if (cd?.params.has('filename')) bail();
    // RFC 2046 §5.1.5: message/rfc822 in a digest; the streaming path supplies it
    if (parent?.type === 'multipart/digest') bail();
    type = dispValue === 'attachment' ? 'application/octet-stream' : 'text/plain';
  }
  // mailsplit splits any part that has a boundary parameter, multipart or not; MimeGuard only multiparts
  if (!type.startsWith('multipart/') && ct?.params.has('boundary')) bail();
  const node: Node = { parent, depth, type, boundary: null, children: [], isText: false, textContent: '', attachment: null, cte, charset: null };
  if (type.startsWith('multipart/')) {
    const boundary = (ct?.params.get('boundary') ?? '').trimEnd();
    // eslint-disable-next-line no-control-regex
    if (!boundary || !/^[\x20-\x7e]+$/.test(boundary)) bail();
    node.boundary = Buffer.from(boundary, 'latin1');
    return node;
  }
  // mailparser's rule: an unknown disposition is "attachment"; a part is body text only when
  // it is text/plain or text/html and inline (RFC 2183 §2.8)
  const disposition = dispValue === '' ? '' : dispValue === 'inline' ? 'inline' : 'attachment';
  const textType = type === 'text/plain' || type === 'text/html';
  node.isText = textType && (disposition === '' || disposition === 'inline');
  let filename = cd?.params.get('filename') || ct?.params.get('name') || null;
  if (filename === '') filename = null;
  if (node.isText) {
    const charset = ct?.params.get('charset') ?? '';
    if (REFUSED.test(charset.toLowerCase().replace(/[^a-z0-9]/g, '')) || charsetEncoding(charset) === null) bail();
    // RFC 3676 format=flowed is unwrapped by the streaming path's FlowedDecoder
    if (type === 'text/plain' && (ct?.params.get('format') ?? '').toLowerCase().trim() === 'flowed') bail();
    node.charset = charset || 'utf-8';
    // An inline text part that names a file is body text and, as the sender attached a
    // file, an attachment too (docs/payload.md, attachments)
    if (filename === null) return node;
  }
  let contentId: string | null = null;
  let hasCid = false;
  if (fields.contentId !== null) {
    const v = unfoldedValue(fields.contentId);
    if (v) {
      hasCid = true;
      contentId = v.replace(/^<|>$/g, '').trim() || null;
    }
  }
  let related = false;
  if (hasCid) for (let p = parent; p; p = p.parent) if (p.type === 'multipart/related') related = true;
  node.attachment = {
    filename,
    contentType: type,
    disposition: dispValue === '' ? null : dispValue === 'inline' ? 'inline' : 'attachment',
    contentId,
    related,
    content: Buffer.alloc(0),
  };
  return node;
}

/**
 * `body` is the part's content as the streaming path's text sees it; `fileBody`
 * (an inline text part with a file name) the same without the line break that
 * belongs to the next delimiter, which MimeGuard's copy of the part drops.
 */
function leafBody(node: Node, body: Buffer, limits: FastLimits, hasSink: boolean, fileBody: Buffer = body): void {
  const bytes = decodeTransfer(body, node.cte);
  if (node.isText) node.textContent = decodeText(bytes, node.charset!);
  if (node.attachment) {
    const content = node.isText && fileBody.length !== body.length ? decodeTransfer(fileBody, node.cte) : bytes;
    if (hasSink && content.length > limits.inlineLimit) bail(); // claim check: the streaming path streams it out
    node.attachment.content = content;
  }
}

function run(buf: Buffer, limits: FastLimits, hasSink: boolean): FastResult {
  if (buf.length > limits.maxDecodedBytes) bail();
  // mailsplit also takes "\r--b" after a line break for a delimiter line; rare enough to leave
  if (buf.indexOf('\n\r--', 0, 'latin1') !== -1) bail();
  const open: Node[] = [];
  const head = readHeader(buf, 0, limits, open, true);
  const root = makeNode(null, head.fields, limits);
  const order: Node[] = [root];
  let nodes = 1;
  if (!root.boundary) {
    // a single-part message: the body runs to the end of the input, line break included
    leafBody(root, buf.subarray(head.end), limits, hasSink);
  } else {
    open.push(root);
    let pos = head.end;
    // preamble of the root multipart (RFC 2046 §5.1.1: ignored)
    let d = nextDelimiter(buf, pos, open);
    if (!d || d.kind !== 1) bail();
    while (open.length) {
      // here d is an open delimiter of the innermost open multipart: a part starts
      const parent = open[open.length - 1]!;
      if (++nodes > limits.maxParts) bail();
      const h = readHeader(buf, d.lineEnd, limits, open, false);
      const node = makeNode(parent, h.fields, limits);
      parent.children.push(node);
      order.push(node);
      if (node.boundary) {
        open.push(node);
        d = nextDelimiter(buf, h.end, open);
        if (!d || d.kind !== 1) bail(); // no parts, or no delimiter at all
        continue;
      }
      d = nextDelimiter(buf, h.end, open);
      if (!d) bail(); // unclosed multipart: truncated message
      // the line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1)
      let end = d.lineStart;
      if (end - h.end <= 2 && end > h.end && (end - h.end === 1 || buf[h.end] === CR)) {
        // A body that is one empty line. mailsplit (the streaming path) keeps that
        // line break as the body when a delimiter follows, and drops it when a close
        // delimiter does; matched here so that empty text parts stay on the fast path.
        if (d.kind === 1) end = d.lineStart;
        else end = h.end;
      } else if (end > h.end) {
        end--; // LF
        if (end > h.end && buf[end - 1] === CR) end--;
      } else end = h.end;
      let fileEnd = end;
      if (node.isText && node.attachment) {
        fileEnd = d.lineStart;
        if (fileEnd > h.end && buf[fileEnd - 1] === NL) fileEnd--;
        if (fileEnd > h.end && buf[fileEnd - 1] === CR && buf[fileEnd] === NL) fileEnd--;
      }
      leafBody(node, buf.subarray(h.end, end), limits, hasSink, buf.subarray(h.end, fileEnd));
      pos = d.lineEnd;
      // close delimiters: the epilogue of each closed multipart runs to a delimiter of its parent
      while (d.kind === 2) {
        open.pop();
        if (!open.length) break;
        d = nextDelimiter(buf, pos, open);
        if (!d) bail();
        pos = d.lineEnd;
      }
    }
  }
  return collect(buf.subarray(0, head.end), root, order);
}

/**
 * Body text and attachments as mailparser assembles them with its conversions
 * off: text/plain parts joined with "\n", text/html parts with "<br/>\n"; a text
 * part outside a multipart/alternative adds an empty entry to the other list
 * when the message has both kinds (where mailparser would put a converted copy).
 */
function collect(rootHeader: Buffer, root: Node, order: Node[]): FastResult {
  let hasText = false;
  let hasHtml = false;
  const attachments: FastAttachment[] = [];
  for (const n of order) {
    if (n.isText) {
      if (n.type === 'text/plain') hasText = true;
      else hasHtml = true;
    }
    if (n.attachment) attachments.push(n.attachment);
  }
  const text: string[] = [];
  const html: string[] = [];
  const walk = (n: Node, alternative: boolean) => {
    if (n.isText && n.textContent) {
      if (n.type === 'text/plain') {
        text.push(n.textContent);
        if (!alternative && hasHtml) html.push('');
      } else {
        if ((!alternative && hasText) || (n === root && !hasText)) text.push('');
        html.push(n.textContent);
      }
    }
    const alt = alternative || n.type === 'multipart/alternative';
    for (const c of n.children) walk(c, alt);
  };
  walk(root, false);
  return {
    rootHeader,
    text: hasText ? text.join('\n') : null,
    html: hasHtml ? html.join('<br/>\n') : null,
    attachments,
  };
}

/**
 * Parses `buf` when it is a message the fast path answers for, else null
 * (the caller then runs the streaming path). Never throws for content.
 */
export function fastParse(buf: Buffer, limits: FastLimits, hasSink: boolean): FastResult | null {
  try {
    return run(buf, limits, hasSink);
  } catch (err) {
    if (err === NOT_MINE) return null;
    // A bug here must not lose the message: the streaming path gets it.
    return null;
  }
}
