/**
 * MIME parse of one message into the content fields of
 * InboundEmail (postgate.email.v1, see schema.ts and docs/payload.md).
 *
 * Two paths, one result:
 *
 * - Fast path (mime.ts): a message of at most FAST_PATH_MAX_BYTES (a Buffer,
 *   or a stream that ends within that size) is first parsed in one synchronous
 *   pass. It answers only for well-formed MIME it reads unambiguously and
 *   declines everything else (null), so it never has to report a MIME problem.
 *   Profiled on a 5 KB text+HTML message, the streaming path spent most of its
 *   time in stream machinery (setImmediate hops, per-line Buffer slices) and
 *   garbage collection rather than MIME work; the fast path is several times
 *   faster than mailparser's simpleParser on such mail (docs/benchmarks.md).
 * - Streaming path, for larger messages and whatever the fast path declines:
 *
 *     input ─▶ MimeGuard ─▶ mailparser's MailParser ─▶ attachments / text
 *
 *   memory stays flat however large the message is.
 *
 * test/parse-diff.test.ts requires both paths to give deep-equal results on
 * the corpus and on mutated and composed messages wherever the fast path
 * answers.
 *
 * The streaming path:
 *
 * - MimeGuard is our own line-level scan of the MIME structure (RFC 2045 §5,
 *   RFC 2046 §5.1.1 delimiters). It enforces the
 *   limits *before* mailparser sees the bytes: when a limit is crossed it
 *   stops forwarding at that line (everything before it is parsed normally,
 *   nothing after it) and reports it, so hostile input can neither make the
 *   parse throw nor make memory grow without bound. It also captures the raw
 *   top-level header block for the ordered `headers` list, and notes MIME
 *   problems (missing boundary, broken base64, unknown charsets). Where
 *   mailparser would lose text it hands it corrected header blocks (a
 *   Content-Type without subtype, a header block without its empty line, a
 *   digest part without Content-Type; docs/payload.md, "Odd mail"), and it
 *   keeps a copy of each inline text part that names a file, which is listed
 *   under attachments as well.
 * - MailParser (streaming, not simpleParser) decodes transfer encodings and
 *   charsets; its text↔HTML conversions are off. Attachments are consumed as
 *   streams: hashed and measured while read, kept inline when small, handed to
 *   a BlobSink when large (claim check), so a 50 MB attachment does not
 *   inflate memory.
 * - Header-level fields (addresses, Date, Message-ID, Subject) are decoded by
 *   our own code from the raw header block (address.ts), because mailparser
 *   turns an invalid Date into "now" and mangles invalid addresses.
 *
 * parseMessage never rejects because of message content: problems become
 * `parseErrors` entries. It rejects only when the input stream fails or the
 * BlobSink fails (the content could not be represented, so the caller must
 * defer the message rather than deliver it incomplete).
 */
import { createHash } from 'node:crypto';
import { TextDecoder } from 'node:util';
import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { MailParser, type AttachmentStream, type MessageText, type StructuredHeader } from 'mailparser';
import { parseHeaderBlock, type HeaderField } from './headers.js';
import { decodeWords, isKnownCharset, charsetEncoding, parseAddressList, type ProblemSink } from './address.js';
import { fastParse, type FastResult } from './mime.js';
import { bodyFields } from './derived.js';
import { classify } from './classify.js';
import type { AddressListItem, Attachment, ParseError } from './schema.js';
import { isoTime } from '../core/time.js';

export type { ParsedContent } from './schema.js';
import type { ParsedContent } from './schema.js';

export interface ParseLimits {
  /** Largest header block of one MIME part (each line counts at least 64 bytes, as in mailsplit). */
  maxHeaderBytes: number;
  /** Most MIME nodes, the top level and every part and container included. */
  maxParts: number;
  /** Deepest nesting of multiparts (the top level is depth 0). */
  maxDepth: number;
  /** Most decoded content kept: text bodies plus attachment content inline or handed to the sink. */
  maxDecodedBytes: number;
  /** Attachments up to this size are inline (base64 `content`); larger ones go to the BlobSink when there is one. */
  inlineLimit: number;
}

export const DEFAULT_PARSE_LIMITS: Readonly<ParseLimits> = Object.freeze({
  maxHeaderBytes: 1024 * 1024,
  maxParts: 1000,
  maxDepth: 50,
  maxDecodedBytes: 100 * 1024 * 1024,
  inlineLimit: 256 * 1024,
});

/**
 * Claim-check store for large content. `put` must consume `content` to its end
 * before resolving; if the stream errors (postgate aborts a part that went over
 * a limit) it should discard what it stored. The parser stores attachments;
 * large bodies (message/bodies.ts), the raw message (blob/raw-capture.ts) and
 * whole events (delivery/claim-check.ts) go through the same interface.
 */
export interface BlobSink {
  put(
    kind: BlobKind,
    meta: { filename: string | null; contentType: string },
    content: Readable,
  ): Promise<{ url: string; expiresAt: string; size?: number; sha256?: string }>;
}

/** What a blob holds: a part of the message, the raw message, or a whole event (claim check). */
export type BlobKind = 'attachment' | 'text' | 'html' | 'raw' | 'event';

export interface ParseOptions {
  limits?: Partial<ParseLimits>;
  blobSink?: BlobSink;
}

const MAX_PARSE_ERRORS = 100;
const clip = (s: string, n = 60) => (s.length > n ? `${s.slice(0, n)}…` : s);

// ── charset decoding for bodies ─────────────────────────────────────────────

/**
 * An `Iconv`-compatible class for MailParser's `Iconv` option (documented
 * there as "anything with the same interface"), so that body charsets are
 * decoded by the same WHATWG decoders as header encoded words, and an unknown
 * label decodes as UTF-8 (MimeGuard reports it).
 */
class WhatwgIconv extends Transform {
  private readonly decoder: TextDecoder;
  constructor(fromCharset: string, _toCharset: string) {
    super();
    this.decoder = new TextDecoder(charsetEncoding(fromCharset) ?? 'utf-8');
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const s = this.decoder.decode(chunk, { stream: true });
    if (s) this.push(Buffer.from(s, 'utf8'));
    done();
  }
  override _flush(done: TransformCallback): void {
    const s = this.decoder.decode();
    if (s) this.push(Buffer.from(s, 'utf8'));
    done();
  }
}

// ── MimeGuard: limits and structure, ahead of mailparser ───────────────────

interface GuardNode {
  parent: GuardNode | null;
  /** the multipart whose delimiter lines end this node */
  owner: GuardNode | null;
  depth: number;
  path: string;
  boundary: Buffer | null;
  contentType: string;
  children: number;
  closed: boolean;
  /** its body is collected as text by mailparser (inline text/plain or text/html) */
  text: boolean;
  b64: { chars: number; bad: boolean; pad: boolean } | null;
  /** an inline text part with a file name: its raw body, to list it under attachments too */
  capture: TextFileCapture | null;
}

/**
 * An inline text/plain or text/html part that names a file (RFC 2183 §2.3
 * `filename`, or Content-Type `name`): mailparser collects it as body text
 * only, so MimeGuard keeps its header and raw body, and streamingParse turns
 * them into the attachment entry as well (docs/payload.md, attachments).
 */
interface TextFileCapture {
  path: string;
  header: Buffer;
  chunks: Buffer[];
  len: number;
  disposition: 'inline' | null;
  related: boolean;
  /** set when the body ended normally (not cut by a limit) */
  body: Buffer | null;
}

const B64 = new Uint8Array(256);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') B64[c.charCodeAt(0)] = 1;
const KNOWN_CTE = new Set(['', '7bit', '8bit', 'binary', 'quoted-printable', 'base64']);
const CRLF = Buffer.from('\r\n');
const LF = Buffer.from('\n');

/** First value of each header field of a (latin1-decoded) header block, names lower-cased. */
function headerMap(block: string): Map<string, string> {
  const map = new Map<string, string>();
  let name = '';
  let value = '';
  const commit = () => {
    if (name && !map.has(name)) map.set(name, value.trim());
  };
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(' ') || line.startsWith('\t')) {
      value += line;
      continue;
    }
    commit();
    const colon = line.indexOf(':');
    name = colon > 0 ? line.slice(0, colon).trim().toLowerCase() : '';
    value = colon > 0 ? line.slice(colon + 1) : '';
  }
  commit();
  return map;
}

/** `type/subtype; a=b; c="d"` (RFC 2045 §5.1) → value and params, comments removed. */
function structured(v: string | undefined): { value: string; params: Map<string, string> } {
  const params = new Map<string, string>();
  if (!v) return { value: '', params };
  let s = v;
  // drop comments (outside quoted strings)
  let out = '';
  let depth = 0;
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && (quoted || depth) && i + 1 < s.length) {
      if (!depth) out += c + s[i + 1];
      i++;
      continue;
    }
    if (!depth && c === '"') quoted = !quoted;
    else if (!quoted && c === '(') {
      depth++;
      continue;
    } else if (!quoted && depth && c === ')') {
      depth--;
      continue;
    }
    if (!depth) out += c;
  }
  s = out;
  const re = /;\s*([^=;\s]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))/g;
  const semi = s.indexOf(';');
  const value = (semi === -1 ? s : s.slice(0, semi)).trim().toLowerCase();
  for (let m = re.exec(s); m; m = re.exec(s)) {
    const key = m[1]!.toLowerCase();
    if (!params.has(key)) params.set(key, m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3]!.trim());
  }
  // RFC 2231 §4: an extended boundary (`boundary*=us-ascii''abc`), as mailsplit (libmime) reads it
  const extended = params.get('boundary*');
  if (!params.has('boundary') && extended !== undefined) {
    const q = /^[^']*'[^']*'(.*)$/.exec(extended);
    params.set('boundary', (q ? q[1]! : extended).replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16))));
  }
  return { value, params };
}

class MimeGuard extends Transform {
  /** The raw top-level header block as received (bounded by maxHeaderBytes). */
  rootHeader: Buffer = Buffer.alloc(0);
  hasPlain = false;
  hasHtml = false;
  cut = false;
  /** Inline text parts with a file name, in message order (TextFileCapture). */
  readonly textFiles: TextFileCapture[] = [];

  private cur: GuardNode;
  private head = true;
  private held: Buffer[] = [];
  private heldCost = 0;
  private inEpilogue = false;
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private continuation = false;
  private out: Buffer[] = [];
  private outLen = 0;
  private nodes = 1;
  private rootCaptured = false;

  constructor(
    private readonly limits: ParseLimits,
    private readonly budget: { kept: number },
    private readonly report: ProblemSink,
  ) {
    super();
    this.cur = this.node(null, null, 0, '');
  }

  private node(parent: GuardNode | null, owner: GuardNode | null, depth: number, path: string): GuardNode {
    return { parent, owner, depth, path, boundary: null, contentType: '', children: 0, closed: false, text: false, b64: null, capture: null };
  }

  private label(n: GuardNode): string {
    return n.path ? `part ${n.path}` : 'message';
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.scan(chunk);
    } catch (err) {
      this.internalError(err);
    }
    this.drain();
    done();
  }

  /** A bug here must not take the process down or lose the message: stop scanning, report, keep what we have. */
  private internalError(err: unknown): void {
    if (!this.cut) this.stop('malformed_mime', `internal error while scanning the MIME structure: ${(err as Error)?.message ?? String(err)}`);
  }

  private scan(chunk: Buffer): void {
    let pos = 0;
    while (!this.cut) {
      const nl = chunk.indexOf(0x0a, pos);
      if (nl === -1) {
        if (pos < chunk.length) this.addPending(chunk.subarray(pos));
        break;
      }
      let line = chunk.subarray(pos, nl + 1);
      if (this.pendingLen) {
        this.pending.push(line);
        line = Buffer.concat(this.pending);
        this.pending = [];
        this.pendingLen = 0;
      }
      pos = nl + 1;
      this.line(line, false);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      this.finishScan();
    } catch (err) {
      this.internalError(err);
    }
    if (!this.rootCaptured) this.captureRoot(Buffer.concat(this.held));
    this.drain();
    done();
  }

  private finishScan(): void {
    if (!this.cut && this.pendingLen) {
      const last = Buffer.concat(this.pending);
      this.pending = [];
      this.pendingLen = 0;
      this.line(last, true);
    }
    if (!this.cut) {
      if (this.head && this.held.length) this.endHeader();
      this.leave();
      this.unwind(null);
    }
  }

  private forward(buf: Buffer): void {
    // Lines cut from one input chunk lie next to each other in memory: they are joined back
    // into one view instead of being copied by drain(), so a large body is not copied once
    // more here (less memory waiting for the garbage collector).
    const last = this.out[this.out.length - 1];
    if (last && last.buffer === buf.buffer && last.byteOffset + last.length === buf.byteOffset) {
      this.out[this.out.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + buf.length);
    } else {
      this.out.push(buf);
    }
    this.outLen += buf.length;
    if (this.outLen >= 65536) this.drain();
  }

  private drain(): void {
    if (!this.outLen) return;
    const buf = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out, this.outLen);
    this.out = [];
    this.outLen = 0;
    this.push(buf);
  }

  private stop(code: string, message: string): void {
    this.report(code, message);
    this.cut = true;
    this.pending = [];
    this.pendingLen = 0;
  }

  private captureRoot(buf: Buffer): void {
    if (this.rootCaptured) return;
    this.rootCaptured = true;
    this.rootHeader = buf;
  }

  private longestBoundary(): number {
    let max = this.cur.boundary?.length ?? 0;
    for (let o = this.cur.owner; o; o = o.owner) max = Math.max(max, o.boundary?.length ?? 0);
    return max;
  }

  private addPending(buf: Buffer): void {
    this.pending.push(buf);
    this.pendingLen += buf.length;
    if (this.head) {
      // an unterminated header line counts against the header limit while it grows
      if (this.heldCost + Math.max(this.pendingLen, 64) > this.limits.maxHeaderBytes) this.headerTooLarge();
      return;
    }
    // A body line too long to be a delimiter (RFC 2046 limits boundaries to 70
    // characters; mailsplit accepts ~1000 more of trailing space) is passed on
    // now instead of being held; its tail is not checked as a delimiter.
    if (this.pendingLen > Math.max(8192, this.longestBoundary() + 1100)) {
      const b = Buffer.concat(this.pending);
      this.pending = [];
      this.pendingLen = 0;
      this.body(b);
      this.continuation = true;
    }
  }

  private line(buf: Buffer, final: boolean): void {
    const continuation = this.continuation;
    this.continuation = false;
    if (!continuation && buf.length >= 3 && buf[0] === 0x2d && buf[1] === 0x2d && this.delimiter(buf)) return;
    if (this.head) this.headerLine(buf, final);
    else this.body(buf);
  }

  /** 0: not a delimiter of `b`, 1: `--b`, 2: `--b--` (trailing SP/HT and CR/LF allowed, RFC 2046 §5.1.1). */
  private static match(line: Buffer, b: Buffer): 0 | 1 | 2 {
    let end = line.length;
    while (end > 0 && (line[end - 1] === 0x0a || line[end - 1] === 0x0d)) end--;
    while (end > 0 && (line[end - 1] === 0x20 || line[end - 1] === 0x09)) end--;
    if (end === b.length + 2 && line.compare(b, 0, b.length, 2, end) === 0) return 1;
    if (end === b.length + 4 && line[end - 1] === 0x2d && line[end - 2] === 0x2d && line.compare(b, 0, b.length, 2, end - 2) === 0) return 2;
    return 0;
  }

  private delimiter(buf: Buffer): boolean {
    if (!this.inEpilogue && !this.head && this.cur.boundary) {
      const r = MimeGuard.match(buf, this.cur.boundary);
      if (r === 1) {
        this.open(this.cur, buf);
        return true;
      }
      if (r === 2) {
        // closing delimiter in the preamble: ignored, as mailsplit does
        this.forward(buf);
        return true;
      }
    }
    // a delimiter of any enclosing multipart ends everything below it
    for (let o = this.cur.owner; o; o = o.owner) {
      if (!o.boundary) continue;
      const r = MimeGuard.match(buf, o.boundary);
      if (r === 1) {
        this.open(o, buf);
        return true;
      }
      if (r === 2) {
        this.leave();
        this.unwind(o);
        o.closed = true;
        this.cur = o;
        this.head = false;
        this.inEpilogue = true;
        this.forward(buf);
        return true;
      }
    }
    return false;
  }

  /** Reports the multiparts between the current node and `target` that end without being closed. */
  private unwind(target: GuardNode | null): void {
    for (let n: GuardNode | null = this.cur; n && n !== target; n = n.parent) {
      if (!n.boundary || n.closed) continue;
      n.closed = true;
      if (n.children === 0) {
        this.report('malformed_mime', `${this.label(n)} (${n.contentType}): no delimiter line of its boundary was found; its content was not parsed`);
      } else {
        this.report('malformed_mime', `${this.label(n)} (${n.contentType}) ends without its closing delimiter (truncated message?)`);
      }
    }
  }

  /** The current node's body ends. */
  private leave(): void {
    if (this.head && this.held.length) {
      // a part with headers and no body
      const raw = Buffer.concat(this.held);
      this.held = [];
      this.heldCost = 0;
      if (!this.cur.parent && this.cur.path === '') this.captureRoot(raw);
      this.forward(raw);
    }
    const c = this.cur.capture;
    if (c) {
      this.cur.capture = null;
      let body = c.chunks.length === 1 ? c.chunks[0]! : Buffer.concat(c.chunks, c.len);
      // The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1); a
      // single-part message's body runs to the end of the input.
      if (this.cur.parent) {
        let end = body.length;
        if (end && body[end - 1] === 0x0a) {
          end--;
          if (end && body[end - 1] === 0x0d) end--;
        }
        body = body.subarray(0, end);
      }
      c.body = body;
      c.chunks = [];
      this.textFiles.push(c);
    }
    const b = this.cur.b64;
    if (b && !b.bad && b.chars % 4 !== 0) {
      this.report('invalid_encoding', `${this.label(this.cur)}: base64 content is truncated (${b.chars} characters, not a multiple of 4)`);
    }
    this.cur.b64 = null;
  }

  private open(parent: GuardNode, delimiterLine: Buffer): void {
    this.leave();
    this.unwind(parent);
    const next = parent.path ? `${parent.path}.${parent.children + 1}` : String(parent.children + 1);
    if (++this.nodes > this.limits.maxParts) {
      this.closeInstead(parent, delimiterLine);
      return this.stop('too_many_parts', `more than ${this.limits.maxParts} MIME parts; the parts from part ${clip(next)} on were not parsed`);
    }
    const depth = parent.depth + 1;
    if (depth > this.limits.maxDepth) {
      this.closeInstead(parent, delimiterLine);
      return this.stop('too_deep', `MIME nesting deeper than ${this.limits.maxDepth} levels; part ${clip(next)} and what follows were not parsed`);
    }
    parent.children++;
    this.cur = this.node(parent, parent, depth, parent.path ? `${parent.path}.${parent.children}` : String(parent.children));
    this.head = true;
    this.inEpilogue = false;
    this.forward(delimiterLine);
  }

  /**
   * Where parsing stops at a delimiter line, a closing delimiter is forwarded
   * instead, so the part before it ends exactly as it would have (the line
   * break before a delimiter belongs to the delimiter, RFC 2046 §5.1.1) and
   * the multipart is well formed for mailparser.
   */
  private closeInstead(parent: GuardNode, delimiterLine: Buffer): void {
    const eol = delimiterLine[delimiterLine.length - 2] === 0x0d ? '\r\n' : '\n';
    this.forward(Buffer.concat([Buffer.from('--'), parent.boundary ?? Buffer.alloc(0), Buffer.from(`--${eol}`)]));
  }

  private headerTooLarge(): void {
    const raw = Buffer.concat(this.held);
    this.held = [];
    if (!this.cur.parent && this.cur.path === '') this.captureRoot(raw);
    this.forward(raw); // the fields that fit are still parsed
    this.stop('header_too_large', `the header block of ${this.label(this.cur)} is larger than ${this.limits.maxHeaderBytes} bytes; the rest of the message was not parsed`);
  }

  private headerLine(buf: Buffer, final: boolean): void {
    const blank = (buf.length === 1 && buf[0] === 0x0a) || (buf.length === 2 && buf[0] === 0x0d && buf[1] === 0x0a);
    if (!blank && !this.fieldLine(buf)) {
      // RFC 5322 §2.1: the body follows the header block after an empty line. A line that is
      // neither a field nor a continuation ends the header block here and starts the body (as
      // Python's email package reads it, recording MissingHeaderBodySeparatorDefect);
      // mailparser would take it and everything up to the next empty line as header lines and
      // drop them. It gets the empty line it expects.
      this.report('missing_header_separator', `${this.label(this.cur)}: the header block ends at a line that is not a header field, without the empty line before the body (RFC 5322 §2.1); that line and what follows are the body`);
      this.held.push(buf[buf.length - 2] === 0x0d ? CRLF : LF);
      this.endHeader();
      this.line(buf, final);
      return;
    }
    if (!blank) {
      const cost = this.heldCost + Math.max(buf.length, 64);
      if (cost > this.limits.maxHeaderBytes) return this.headerTooLarge();
      this.heldCost = cost;
    }
    this.held.push(buf);
    if (blank || final) this.endHeader();
  }

  /**
   * A header field line (RFC 5322 §2.2: a name of printable characters other than the colon,
   * then ":"; the obsolete syntax of §4.5 allows white space before the colon) or a continuation line;
   * an mbox "From " or HTTP "POST " first line, which mailsplit sets aside, counts as one too.
   */
  private fieldLine(buf: Buffer): boolean {
    const c0 = buf[0]!;
    if (c0 === 0x20 || c0 === 0x09) return true;
    let i = 0;
    while (i < buf.length && buf[i]! > 0x20 && buf[i]! < 0x7f && buf[i] !== 0x3a) i++;
    if (i > 0 && i < buf.length && buf[i] !== 0x3a) {
      if (!this.held.length && !this.cur.parent && i === 4 && /^(?:from|post)$/i.test(buf.toString('latin1', 0, 4)) && buf[i] === 0x20) return true;
      while (i < buf.length && (buf[i] === 0x20 || buf[i] === 0x09)) i++;
    }
    return i > 0 && buf[i] === 0x3a;
  }

  private endHeader(): void {
    const node = this.cur;
    const raw = Buffer.concat(this.held);
    this.held = [];
    this.heldCost = 0;
    const isRoot = !node.parent && node.path === '';
    if (isRoot) this.captureRoot(raw);
    const fields = headerMap(raw.toString('latin1'));
    const ctField = fields.get('content-type');
    const ct = structured(ctField);
    const cd = structured(fields.get('content-disposition'));
    const disposition = cd.value;
    const cte = structured(fields.get('content-transfer-encoding')).value;
    let type = ct.value;
    let forwarded = raw;
    const slash = type.indexOf('/');
    if (slash <= 0 || slash === type.length - 1) {
      // RFC 2045 §5.2: a syntactically invalid Content-Type (`text; charset=us-ascii`, no
      // subtype) is taken as text/plain. mailparser would make such a part an attachment of type
      // "text" and lose its text, so it is handed the corrected field, its parameters (the
      // charset) kept. A type and subtype followed by junk are left as they are. A missing
      // Content-Type keeps mailsplit's default (application/octet-stream for an attachment).
      if (ctField !== undefined) {
        type = 'text/plain';
        this.report('invalid_content_type', `${this.label(node)}: Content-Type "${clip(ctField, 40)}" has no type/subtype (RFC 2045 §5.1); read as text/plain (RFC 2045 §5.2)`);
        forwarded = Buffer.from(rewriteContentType(raw.toString('latin1'), ctField), 'latin1');
      } else if (node.parent?.contentType === 'multipart/digest') {
        // RFC 2046 §5.1.5: in a digest the default type of a part is message/rfc822 (mailsplit
        // would default it to text/plain and splice the digested messages' headers into text)
        type = 'message/rfc822';
        forwarded = Buffer.from(addContentType(raw.toString('latin1'), type), 'latin1');
      } else type = disposition === 'attachment' ? 'application/octet-stream' : 'text/plain';
    }
    node.contentType = type;
    this.head = false;

    if (type.startsWith('multipart/')) {
      const boundary = (ct.params.get('boundary') ?? '').trimEnd();
      // A boundary is 1-70 ASCII characters (RFC 2046 §5.1.1); mailsplit ignores a non-ASCII one.
      // eslint-disable-next-line no-control-regex
      if (boundary && /^[\x20-\x7e]+$/.test(boundary)) {
        node.boundary = Buffer.from(boundary, 'latin1');
        this.forward(raw);
        return;
      }
      // Best effort: without a usable boundary the parts cannot be found, and mailparser
      // would drop the whole body as preamble. Declare it text/plain so it is kept.
      this.report('malformed_mime', `${this.label(node)} is ${type} without a usable boundary parameter; its body is kept as text/plain`);
      node.contentType = 'text/plain';
      this.forward(Buffer.from(rewriteContentType(raw.toString('latin1')), 'latin1'));
      this.bodyStarts(node, 'text/plain', '', cte, undefined);
      return;
    }
    this.forward(forwarded);
    this.bodyStarts(node, type, disposition, cte, ct.params.get('charset'));
    if (node.text && hasFileName(cd.params, ct.params)) {
      let related = false;
      if (fields.get('content-id')) for (let p = node.parent; p; p = p.parent) if (p.contentType === 'multipart/related') related = true;
      node.capture = { path: node.path, header: forwarded, chunks: [], len: 0, disposition: disposition === 'inline' ? 'inline' : null, related, body: null };
    }
  }

  private bodyStarts(node: GuardNode, type: string, disposition: string, cte: string, charset: string | undefined): void {
    // mailparser collects inline text/plain and text/html as text (message/delivery-status
    // too, unless keepDeliveryStatus); any disposition other than "inline" makes a part an
    // attachment.
    const textType = type === 'text/plain' || type === 'text/html';
    node.text = textType && (disposition === '' || disposition === 'inline');
    if (node.text) {
      if (type === 'text/html') this.hasHtml = true;
      else this.hasPlain = true;
      if (charset !== undefined && !isKnownCharset(charset)) {
        this.report('unknown_charset', `${this.label(node)}: unknown charset "${charset.slice(0, 40)}"; decoded as UTF-8`);
      }
    }
    if (cte === 'base64') node.b64 = { chars: 0, bad: false, pad: false };
    else if (!KNOWN_CTE.has(cte)) {
      this.report('invalid_encoding', `${this.label(node)}: unknown Content-Transfer-Encoding "${cte.slice(0, 40)}"; content kept undecoded`);
    }
  }

  private body(buf: Buffer): void {
    const node = this.cur;
    if (node.text) {
      this.budget.kept += buf.length;
      if (this.budget.kept > this.limits.maxDecodedBytes) {
        return this.stop('decoded_too_large', `text bodies exceed ${this.limits.maxDecodedBytes} bytes; ${this.label(node)} was cut there and later parts were not parsed`);
      }
    }
    const c = node.capture;
    if (c) {
      if (this.budget.kept + c.len + buf.length > this.limits.maxDecodedBytes) {
        // a second copy of this text would not fit: it stays in `text`, unlisted
        node.capture = null;
        this.report('decoded_too_large', `${this.label(node)}: its text is kept, but it is not also listed under attachments (the copy would exceed ${this.limits.maxDecodedBytes} bytes)`);
      } else {
        // a copy: the line views borrow the input chunk, which is forwarded on
        c.chunks.push(Buffer.from(buf));
        c.len += buf.length;
      }
    }
    const b = node.b64;
    if (b && !b.bad) {
      for (let i = 0; i < buf.length; i++) {
        const c = buf[i]!;
        if (B64[c]) {
          if (b.pad) b.bad = true;
          b.chars++;
        } else if (c === 0x3d) {
          b.pad = true;
          b.chars++;
        } else if (c !== 0x0d && c !== 0x0a && c !== 0x20 && c !== 0x09) {
          b.bad = true;
        }
        if (b.bad) {
          this.report('invalid_encoding', `${this.label(node)}: invalid base64 content (RFC 2045 §6.8); decoded on a best-effort basis`);
          break;
        }
      }
    }
    this.forward(buf);
  }
}

/** A header block (its empty line included) with a Content-Type field added before the empty line. */
function addContentType(block: string, type: string): string {
  const eol = /\r?\n$/.exec(block)?.[0] ?? '\r\n';
  return `${block.slice(0, block.length - (block.endsWith(eol) ? eol.length : 0))}Content-Type: ${type}${eol}${eol}`;
}

/** A file name parameter with a value: `filename` (RFC 2183 §2.3) or `name`, plain or RFC 2231 (`filename*`, `filename*0*`…). */
function hasFileName(disposition: Map<string, string>, type: Map<string, string>): boolean {
  for (const [params, name] of [[disposition, 'filename'], [type, 'name']] as const) {
    for (const [k, v] of params) if (v && (k === name || k.startsWith(`${name}*`))) return true;
  }
  return false;
}

/**
 * Replaces the Content-Type field of a header block with `text/plain`; with
 * `keepParams` (the field's value) its parameters are kept, but a boundary
 * (RFC 2046 §5.1.1: only for multiparts).
 */
function rewriteContentType(block: string, keepParams?: string): string {
  let params = '';
  if (keepParams !== undefined) {
    const unfolded = keepParams.replace(/\r?\n/g, '');
    const semi = unfolded.indexOf(';');
    if (semi !== -1) params = unfolded.slice(semi).replace(/;\s*boundary\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^;]*)/gi, '').trimEnd();
  }
  const lines = block.split(/(?<=\n)/);
  const out: string[] = [];
  let skipping = false;
  for (const line of lines) {
    if (skipping && (line.startsWith(' ') || line.startsWith('\t'))) continue;
    skipping = false;
    if (/^content-type\s*:/i.test(line)) {
      out.push(`Content-Type: text/plain${params}${line.endsWith('\r\n') ? '\r\n' : '\n'}`);
      skipping = true;
      continue;
    }
    out.push(line);
  }
  return out.join('');
}

// ── header fields ───────────────────────────────────────────────────────────

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
// RFC 5322 §4.3 obs-zone, in minutes east of UTC
const ZONES: Record<string, number> = { ut: 0, utc: 0, gmt: 0, z: 0, est: -300, edt: -240, cst: -360, cdt: -300, mst: -420, mdt: -360, pst: -480, pdt: -420 };

function stripComments(s: string): string {
  if (!s.includes('(')) return s; // most values have no comment: no copy
  let out = '';
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && depth) {
      i++;
      continue;
    }
    if (c === '(') depth++;
    else if (c === ')' && depth) depth--;
    else if (!depth) out += c;
  }
  return out;
}

/**
 * Parses an RFC 5322 §3.3 date-time (with the obsolete syntax of §4.3:
 * two- and three-digit years, alphabetic zones, missing seconds) into an
 * ISO-8601 UTC string; null when it is not a date. ISO-8601 itself is
 * accepted too (some generators write it). Nothing is guessed: a date that
 * does not parse is null, never "now".
 */
export function parseMailDate(value: string): string | null {
  const s = stripComments(value).replace(/\s+/g, ' ').trim();
  const iso = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})$/i.exec(s);
  if (iso) {
    const t = Date.parse(s.replace(' ', 'T').replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
    return Number.isNaN(t) ? null : new Date(t).toISOString();
  }
  const m =
    /^(?:([A-Za-z]+) ?, ?)?(\d{1,2}) ?-?([A-Za-z]+)\.?-? ?(\d{2,4}) (\d{1,2}) ?: ?(\d{2})(?: ?: ?(\d{2}))?(?:\.\d+)?(?: ?([+-]\d{2}:?\d{2}|[A-Za-z]{1,5}))?$/.exec(
      s,
    );
  if (!m) return null;
  const [, dow, dd, mon, yy, hh, mi, ss, zone] = m;
  if (dow && !DAYS.includes(dow.slice(0, 3).toLowerCase())) return null;
  const month = MONTHS.indexOf(mon!.slice(0, 3).toLowerCase());
  if (month === -1 || (mon!.length > 3 && !/^(january|february|march|april|may|june|july|august|september|october|november|december|sept)$/i.test(mon!))) {
    return null;
  }
  let year = Number(yy);
  if (yy!.length === 2) year += year < 50 ? 2000 : 1900; // RFC 5322 §4.3
  else if (yy!.length === 3) year += 1900;
  const day = Number(dd);
  const hour = Number(hh);
  const minute = Number(mi);
  let second = ss === undefined ? 0 : Number(ss);
  if (hour > 23 || minute > 59 || second > 60 || day < 1) return null;
  if (second === 60) second = 59; // a leap second is not representable; the nearest instant
  let offset = 0; // minutes east of UTC; "-0000" and unknown zones mean UTC (RFC 5322 §3.3, §4.3)
  if (zone) {
    const num = /^([+-])(\d{2}):?(\d{2})$/.exec(zone);
    if (num) {
      if (Number(num[3]) > 59) return null;
      offset = (num[1] === '-' ? -1 : 1) * (Number(num[2]) * 60 + Number(num[3]));
    } else {
      offset = ZONES[zone.toLowerCase()] ?? 0;
    }
  }
  if (day > daysInMonth(year, month)) return null; // e.g. 31 Feb
  // Date.UTC maps years 0-99 to 1900-1999: those (only a three-digit year
  // below 100 can be one here, after the §4.3 mapping above) take the slow way.
  let t: number;
  if (year >= 100) t = Date.UTC(year, month, day, hour, minute, second);
  else {
    const d = new Date(0);
    d.setUTCFullYear(year, month, day);
    d.setUTCHours(hour, minute, second, 0);
    t = d.getTime();
  }
  t -= offset * 60_000;
  // ±8.64e15 ms is the range of a Date; past it toISOString would throw.
  if (Number.isNaN(t) || Math.abs(t) > 8.64e15) return null;
  return isoTime(t);
}

/** Days of `month` (0-11) in the proleptic Gregorian `year`. */
function daysInMonth(year: number, month: number): number {
  if (month !== 1) return [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month]!;
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
}

/** The msg-ids of a Message-ID / In-Reply-To / References value, without angle brackets (RFC 5322 §3.6.4). */
export function messageIds(value: string): string[] {
  const ids: string[] = [];
  for (const m of value.matchAll(/<([^<>]*)>/g)) {
    const id = m[1]!.replace(/\s+/g, '');
    if (id) ids.push(id);
  }
  if (ids.length) return ids;
  // no angle brackets at all (seen from broken generators): the words themselves
  for (const w of stripComments(value).split(/[\s,]+/)) if (w) ids.push(w);
  return ids;
}

// ── attachments ─────────────────────────────────────────────────────────────

function attachmentMeta(att: AttachmentStream): Omit<Attachment, 'size' | 'sha256'> {
  const declared = att.headers.get('content-type') as StructuredHeader | undefined;
  const contentType = (declared?.value || att.contentType || 'application/octet-stream').toLowerCase().trim();
  const disp = att.contentDisposition?.toLowerCase().trim();
  const cid = att.cid?.trim();
  return {
    filename: att.filename ?? null,
    contentType,
    // RFC 2183 §2.8: an unrecognised disposition is treated as "attachment"
    disposition: disp === undefined || disp === '' ? null : disp === 'inline' ? 'inline' : 'attachment',
    contentId: cid ? cid : null,
    related: att.related === true,
  };
}

function waitDrain(stream: PassThrough, done: Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(new Error('the blob sink closed the content stream early'));
    };
    stream.on('drain', onDrain);
    stream.on('close', onClose);
    done.then(
      () => {
        cleanup();
        reject(new Error('the blob sink returned before reading all the content'));
      },
      (err: unknown) => {
        cleanup();
        reject(err);
      },
    );
  });
}

// ── the parse ───────────────────────────────────────────────────────────────

function toReadable(input: Readable | Buffer): Readable {
  if (!Buffer.isBuffer(input)) return input;
  const size = 64 * 1024;
  return Readable.from(
    (function* () {
      for (let i = 0; i < input.length; i += size) yield input.subarray(i, i + size);
    })(),
    { objectMode: false },
  );
}

const SINGLE = ['from', 'sender', 'reply-to', 'to', 'cc', 'bcc', 'subject', 'date', 'message-id', 'in-reply-to', 'references'];

function headerFields(
  headers: HeaderField[],
  report: ProblemSink,
): Omit<ParsedContent, 'text' | 'textSource' | 'html' | 'strippedText' | 'strippedSignature' | 'strippedHtml' | 'classification' | 'attachments' | 'parseErrors' | 'headers'> {
  // One pass over the fields: every lookup below is by lower-case name.
  const byName = new Map<string, string[]>();
  for (const h of headers) {
    const key = h.name.toLowerCase();
    const list = byName.get(key);
    if (list) list.push(h.value);
    else byName.set(key, [h.value]);
  }
  const values = (name: string): readonly string[] => byName.get(name) ?? [];
  for (const name of SINGLE) {
    const n = values(name).length;
    if (n > 1) report('duplicate_header', `${n} ${name} headers (RFC 5322 §3.6 allows one); ${['to', 'cc', 'bcc', 'references'].includes(name) ? 'their values were joined' : 'the first is used'}`);
  }
  const addresses = (name: string, joinAll: boolean): AddressListItem[] | null => {
    const v = values(name);
    if (!v.length) return null;
    return (joinAll ? v : v.slice(0, 1)).flatMap((x) => parseAddressList(x, name.replace(/(^|-)\w/g, (c) => c.toUpperCase()), report));
  };
  const first = (name: string) => values(name)[0] ?? null;
  const dateRaw = first('date');
  let date: string | null = null;
  if (dateRaw !== null) {
    date = parseMailDate(dateRaw);
    if (date === null) report('invalid_date', `Date "${dateRaw.slice(0, 80)}" is not a valid RFC 5322 date`);
  }
  const subjectRaw = first('subject');
  const messageIdRaw = first('message-id');
  const inReplyToRaw = first('in-reply-to');
  return {
    messageId: messageIdRaw === null ? null : (messageIds(messageIdRaw)[0] ?? null),
    date,
    subject: subjectRaw === null ? null : decodeWords(subjectRaw, report, 'Subject'),
    from: addresses('from', false),
    sender: addresses('sender', false),
    replyTo: addresses('reply-to', false),
    to: addresses('to', true),
    cc: addresses('cc', true),
    bcc: addresses('bcc', true),
    inReplyTo: inReplyToRaw === null ? null : (messageIds(inReplyToRaw)[0] ?? null),
    references: values('references').flatMap(messageIds),
  };
}

/**
 * Parses a message (a stream or a Buffer) into the content fields of
 * InboundEmail. Resolves once the input has been read to its end.
 */
export function parseMessage(input: Readable | Buffer, opts: ParseOptions = {}): Promise<ParsedContent> {
  const limits: ParseLimits = { ...DEFAULT_PARSE_LIMITS, ...opts.limits };
  if (Buffer.isBuffer(input)) {
    if (input.length <= FAST_PATH_MAX_BYTES) {
      const fast = fastParse(input, limits, opts.blobSink !== undefined);
      if (fast) return Promise.resolve(fromFast(fast));
    }
    return streamingParse(input, limits, opts.blobSink);
  }
  return readUpTo(input, FAST_PATH_MAX_BYTES).then((got) => {
    if (Buffer.isBuffer(got)) {
      const fast = fastParse(got, limits, opts.blobSink !== undefined);
      if (fast) return fromFast(fast);
    }
    return streamingParse(got, limits, opts.blobSink);
  });
}

/**
 * The fast path alone: the parse of `buf`, or null when the fast path does not
 * answer for it. For the differential test and the benchmark.
 */
export function parseMessageFast(buf: Buffer, opts: ParseOptions = {}): ParsedContent | null {
  const fast = fastParse(buf, { ...DEFAULT_PARSE_LIMITS, ...opts.limits }, opts.blobSink !== undefined);
  return fast ? fromFast(fast) : null;
}

/** The streaming path alone (what every message over FAST_PATH_MAX_BYTES takes). For the differential test. */
export function parseMessageStreaming(input: Readable | Buffer, opts: ParseOptions = {}): Promise<ParsedContent> {
  return streamingParse(input, { ...DEFAULT_PARSE_LIMITS, ...opts.limits }, opts.blobSink);
}

/**
 * Messages up to this size (nearly all mail) are held whole and tried on the
 * fast path (mime.ts) first; larger ones stream through MimeGuard and
 * MailParser, so memory stays flat however large the message is.
 */
export const FAST_PATH_MAX_BYTES = 1024 * 1024;

/**
 * Reads a stream to its end when it holds at most `max` bytes (resolving the
 * bytes), or else resolves a stream that replays what was read and then the
 * rest (backpressure applies from there on). Rejects if the input fails first.
 */
function readUpTo(source: Readable, max: number): Promise<Buffer | Readable> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let len = 0;
    const cleanup = () => {
      source.off('data', onData);
      source.off('end', onEnd);
      source.off('error', onError);
    };
    const onData = (chunk: Buffer | string) => {
      const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      chunks.push(b);
      len += b.length;
      if (len <= max) return;
      cleanup();
      source.pause();
      const rest = new PassThrough({ highWaterMark: 64 * 1024 });
      for (const c of chunks) rest.write(c);
      chunks.length = 0;
      source.once('error', (err) => rest.destroy(err));
      source.pipe(rest);
      resolve(rest);
    };
    const onEnd = () => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, len));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    source.on('data', onData);
    source.once('end', onEnd);
    source.once('error', onError);
  });
}

function problemList(): { parseErrors: ParseError[]; report: ProblemSink } {
  const parseErrors: ParseError[] = [];
  const report: ProblemSink = (code, message) => {
    if (parseErrors.length < MAX_PARSE_ERRORS) parseErrors.push({ code, message });
    else if (parseErrors.length === MAX_PARSE_ERRORS) parseErrors.push({ code: 'too_many_errors', message: `more than ${MAX_PARSE_ERRORS} problems; the rest are not listed` });
  };
  return { parseErrors, report };
}

/** The event fields from the top-level header block and the bodies, shared by both paths. */
function assemble(rootHeader: Buffer, text: string | null, html: string | null, attachments: Attachment[], parseErrors: ParseError[], report: ProblemSink): ParsedContent {
  const headers = parseHeaderBlock(rootHeader);
  const fields = headerFields(headers, report);
  return {
    headers,
    ...fields,
    // text derived from the HTML when there is no text part, and the reply without quote and signature (derived.ts)
    ...bodyFields(text, html),
    classification: classify(headers, attachments),
    attachments,
    parseErrors,
  };
}

function fromFast(r: FastResult): ParsedContent {
  const { parseErrors, report } = problemList();
  const attachments: Attachment[] = r.attachments.map((a) => ({
    filename: a.filename,
    contentType: a.contentType,
    disposition: a.disposition,
    contentId: a.contentId,
    related: a.related,
    size: a.content.length,
    sha256: createHash('sha256').update(a.content).digest('hex'),
    content: a.content.toString('base64'),
  }));
  return assemble(r.rootHeader, r.text, r.html, attachments, parseErrors, report);
}

/** MailParser's options for the streaming path. */
function parserOptions(limits: ParseLimits): ConstructorParameters<typeof MailParser>[0] {
  return {
    // Bodies as sent: no HTML→text, no text→HTML, no linkifying, no cid: rewriting.
    // (keepCidLinks is a simpleParser option; MailParser never rewrites cid: links.)
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipTextLinks: true,
    skipImageLinks: true,
    checksumAlgo: false, // we hash with SHA-256 ourselves
    // An attached message (message/rfc822) is one attachment, even when marked inline:
    // parsing it in place would splice its headers into text and html as rendered markup.
    ignoreEmbedded: true,
    // A DSN's machine-readable message/delivery-status part (RFC 3464 §2, RFC 6522 §3) is an
    // attachment, not more body text.
    keepDeliveryStatus: true,
    Iconv: WhatwgIconv,
    // Backstops only: MimeGuard enforces the real limits before these can trigger.
    maxHeadSize: limits.maxHeaderBytes * 2 + 65536,
    maxChildNodes: limits.maxParts + 16,
  };
}

/** IMAP-style part numbers ("1.2") in message order; "" (the message itself) first. */
function comparePartIds(a: string, b: string): number {
  const x = a ? a.split('.') : [];
  const y = b ? b.split('.') : [];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = Number(x[i]) - Number(y[i]);
    if (d) return d;
  }
  return x.length - y.length;
}

/** The header block with its Content-Disposition value set to `attachment` (parameters kept), or such a field added. */
function dispositionAttachment(block: string): string {
  const re = /^(content-disposition[ \t]*:[ \t]*)[^;\r\n]*/im;
  if (re.test(block)) return block.replace(re, '$1attachment');
  const blank = /\r?\n(\r?\n)$/.exec(block);
  if (blank) return `${block.slice(0, block.length - blank[1]!.length)}Content-Disposition: attachment${blank[1]}${blank[1]}`;
  const eol = block.includes('\r\n') ? '\r\n' : '\n';
  return `${block}${block && !block.endsWith('\n') ? eol : ''}Content-Disposition: attachment${eol}${eol}`;
}

/** The streaming path: MimeGuard ahead of mailparser's MailParser, attachments streamed (to the BlobSink when large). */
function streamingParse(input: Readable | Buffer, limits: ParseLimits, sink: BlobSink | undefined): Promise<ParsedContent> {
  const { parseErrors, report } = problemList();
  const budget = { kept: 0 };
  const guard = new MimeGuard(limits, budget, report);
  const parser = new MailParser(parserOptions(limits));
  const source = toReadable(input);
  const attachments: Attachment[] = [];
  /** the attachments mailparser emitted, with their part numbers (IMAP style, as MimeGuard's paths) */
  const found: { partId: string; record: Attachment }[] = [];
  let textResult: MessageText | null = null;
  let sinkFailure: unknown = null;
  let chain: Promise<void> = Promise.resolve();
  let inFlight: AttachmentStream | null = null;
  let parserFailed = false;

  async function takeAttachment(att: AttachmentStream): Promise<Attachment> {
    const meta = attachmentMeta(att);
    const hash = createHash('sha256');
    let size = 0;
    let chunks: Buffer[] = [];
    let kept = 0;
    let mode: 'buffer' | 'sink' | 'drop' = sinkFailure ? 'drop' : 'buffer';
    let stream: PassThrough | null = null;
    let stored: Promise<{ url: string; expiresAt: string }> | null = null;
    let aborted = false;
    const where = meta.filename ? `attachment "${meta.filename.slice(0, 80)}"` : `attachment ${att.partId ?? ''}`.trim();
    const dropContent = () => {
      budget.kept -= kept;
      chunks = [];
      kept = 0;
      if (stream) {
        aborted = true;
        stream.destroy(new Error('postgate: content over maxDecodedBytes'));
      }
      mode = 'drop';
    };
    try {
      for await (const chunk of att.content as AsyncIterable<Buffer>) {
        hash.update(chunk);
        size += chunk.length;
        if (mode === 'drop') continue;
        if (budget.kept + chunk.length > limits.maxDecodedBytes) {
          dropContent();
          report('decoded_too_large', `${where}: content not kept, decoded content would exceed ${limits.maxDecodedBytes} bytes (size and sha256 are exact)`);
          continue;
        }
        budget.kept += chunk.length;
        kept += chunk.length;
        try {
          if (mode === 'buffer') {
            chunks.push(chunk);
            if (sink && kept > limits.inlineLimit) {
              // Past the inline limit: stream the rest to the blob store (claim check).
              stream = new PassThrough({ highWaterMark: 64 * 1024 });
              // We destroy this stream with an error when the part goes over a limit or the sink
              // fails; a sink that no longer listens must not turn that into an uncaught exception.
              stream.on('error', () => undefined);
              stored = sink.put('attachment', { filename: meta.filename, contentType: meta.contentType }, stream);
              stored.catch(() => undefined);
              mode = 'sink';
              const buffered = chunks;
              chunks = [];
              for (const c of buffered) if (!stream.write(c)) await waitDrain(stream, stored);
            }
          } else if (stream && stored && !stream.write(chunk)) {
            await waitDrain(stream, stored);
          }
        } catch (err) {
          // The sink failed: keep reading (the parse must go on) but the message cannot be delivered whole.
          sinkFailure ??= err;
          dropContent();
        }
      }
    } catch {
      // The content stream broke off (the parser failed mid-part); that is reported by the parser's error.
      if (mode !== 'drop') dropContent();
    }
    const record: Attachment = { ...meta, size, sha256: hash.digest('hex') };
    if (mode === 'buffer') {
      record.content = Buffer.concat(chunks, kept).toString('base64');
    } else if (mode === 'sink' && stream && stored) {
      stream.end();
      try {
        const r = await stored;
        record.url = r.url;
        record.expiresAt = r.expiresAt;
      } catch (err) {
        sinkFailure ??= err;
        budget.kept -= kept;
      }
    } else if (stored && !aborted) {
      await stored.catch((err: unknown) => {
        sinkFailure ??= err;
      });
    }
    return record;
  }

  /**
   * The attachment entry of an inline text part with a file name (MimeGuard
   * kept its header and raw body): the part alone, its disposition set to
   * `attachment`, goes through a MailParser of its own, so its file name and
   * content are decoded exactly as every other attachment's; the entry keeps
   * the part's own disposition and `related`.
   */
  async function textFileAttachment(c: TextFileCapture): Promise<Attachment | null> {
    const one = new MailParser(parserOptions(limits));
    let record: Promise<Attachment> | null = null;
    one.on('data', (obj: AttachmentStream | MessageText) => {
      if (obj.type !== 'attachment' || record) return;
      record = takeAttachment(obj).finally(() => obj.release?.());
    });
    const ended = new Promise<void>((resolve, reject) => {
      one.once('end', resolve);
      one.once('error', reject);
    });
    one.end(Buffer.concat([Buffer.from(dispositionAttachment(c.header.toString('latin1')), 'latin1'), c.body!]));
    try {
      await ended;
    } catch (err) {
      report('malformed_mime', `part ${c.path || '(message)'}: its text is kept, but it could not be listed under attachments: ${(err as Error).message}`);
      return null;
    }
    if (!record) return null;
    const got: Attachment = await record;
    return { ...got, disposition: c.disposition, related: c.related };
  }

  return new Promise<ParsedContent>((resolve, reject) => {
    let settled = false;
    let guardEnded = false;
    guard.once('end', () => {
      guardEnded = true;
    });

    const finish = () => {
      if (settled) return;
      settled = true;
      chain
        .then(async () => {
          // Inline text parts with a file name join the attachments in message order.
          for (const c of guard.textFiles) {
            const record = await textFileAttachment(c);
            if (!record) continue;
            let at = found.length;
            while (at > 0 && comparePartIds(found[at - 1]!.partId, c.path) > 0) at--;
            found.splice(at, 0, { partId: c.path, record });
          }
          for (const f of found) attachments.push(f.record);
        })
        .then(
        () => {
          if (sinkFailure) return reject(sinkFailure);
          const text = guard.hasPlain ? (textResult?.text ?? '') : null;
          const html = guard.hasHtml ? (textResult?.html ?? '') : null;
          resolve(assemble(guard.rootHeader, text, html, attachments, parseErrors, report));
        },
        (err: unknown) => reject(err),
      );
    };

    source.once('error', (err) => {
      if (settled) return;
      settled = true;
      guard.destroy();
      parser.destroy();
      reject(err);
    });

    parser.on('data', (obj: AttachmentStream | MessageText) => {
      if (obj.type === 'text') {
        textResult = obj;
        return;
      }
      const att = obj;
      chain = chain.then(async () => {
        inFlight = att;
        try {
          found.push({ partId: att.partId ?? '', record: await takeAttachment(att) });
        } finally {
          inFlight = null;
          att.release?.();
        }
      });
    });
    parser.once('end', finish);
    parser.on('error', (err: Error & { code?: string }) => {
      if (parserFailed) return;
      parserFailed = true;
      const code = err.code === 'EMAXLEN' ? (/header/i.test(err.message) ? 'header_too_large' : 'too_many_parts') : 'malformed_mime';
      report(code, `parser: ${err.message}`);
      // Keep reading the input to its end (the sender's stream must be drained), discard it.
      guard.unpipe(parser);
      guard.resume();
      (inFlight?.content as Readable | undefined)?.destroy();
      if (guardEnded) finish();
      else guard.once('end', finish);
    });

    source.pipe(guard).pipe(parser);
  });
}

