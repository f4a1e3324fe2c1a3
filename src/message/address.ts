/**
 * Header-level decoding for the message model: charsets, RFC 2047 encoded
 * words, and RFC 5322 address lists normalised into postgate's Address /
 * Group shape.
 *
 * - Charsets are decoded with the WHATWG Encoding Standard decoders built into
 *   Node (TextDecoder, full ICU), plus a few aliases seen in mail. A label that
 *   is unknown, or refused because it can smuggle markup (UTF-7, RFC 2152),
 *   decodes as UTF-8 and is reported, never guessed.
 * - Addresses: a small tokenizer and recursive-descent parser for
 *   address-list (RFC 5322 §3.4, with the obsolete forms of §4.4: routes,
 *   empty list elements, `addr (Name)` comments), UTF-8 in local parts and
 *   domains (RFC 6532), IDNA domains (RFC 5890/5891 via Node's UTS #46
 *   `domainToASCII`). An address that does not parse is kept with what was
 *   written and reported — never dropped, never turned into junk like "@@".
 *
 * Imports only Node built-ins and types.
 */
import { domainToASCII, domainToUnicode } from 'node:url';
import { isIPv4, isIPv6 } from 'node:net';
import { TextDecoder } from 'node:util';
import type { Address, AddressListItem, Group } from './schema.js';

/** Receives problems as `parseErrors` entries (code, message); the parser caps how many it keeps. */
export type ProblemSink = (code: string, message: string) => void;

const clip = (s: string, n = 120) => (s.length > n ? `${s.slice(0, n)}…` : s);

// ── charsets ────────────────────────────────────────────────────────────────

// Labels seen in mail that the WHATWG list lacks (Windows code page names).
const CHARSET_ALIASES: Record<string, string> = {
  cp949: 'euc-kr',
  uhc: 'euc-kr',
  ks_c_5601: 'euc-kr',
  cp932: 'shift_jis',
  'windows-932': 'shift_jis',
  cp936: 'gbk',
  'windows-936': 'gbk',
  cp950: 'big5',
  'windows-950': 'big5',
  'latin-1': 'iso-8859-1',
  'iso-2022-jp-1': 'iso-2022-jp',
};

// RFC 2045 says us-ascii is the default, but 8-bit bytes under it are UTF-8 in
// practice; mailparser treats these labels as UTF-8 for bodies, and so do we.
const UTF8_LIKE = new Set(['ascii', 'usascii', 'utf8', '7bit', '8bit']);

const encodingCache = new Map<string, string | null>();

/**
 * The WHATWG encoding name for a charset label, or null when it is unknown or
 * refused. UTF-7 is refused on purpose (`+ADw-script+AD4-` is `<script>`); the
 * WHATWG "replacement" encodings (ISO-2022-KR, HZ…) make TextDecoder throw,
 * so they count as unknown too instead of turning the text into one U+FFFD.
 */
export function charsetEncoding(label: string | null | undefined): string | null {
  const l = (label ?? '').trim().replace(/^["']|["']$/g, '').toLowerCase();
  if (!l) return 'utf-8';
  if (UTF8_LIKE.has(l.replace(/[^a-z0-9]/g, ''))) return 'utf-8';
  const cached = encodingCache.get(l);
  if (cached !== undefined) return cached;
  let enc: string | null;
  try {
    enc = new TextDecoder(CHARSET_ALIASES[l] ?? l).encoding;
  } catch {
    enc = null;
  }
  if (encodingCache.size > 512) encodingCache.clear(); // labels are attacker-chosen: bound the cache
  encodingCache.set(l, enc);
  return enc;
}

export function isKnownCharset(label: string | null | undefined): boolean {
  return charsetEncoding(label) !== null;
}

/** Decodes bytes from a charset; unknown → UTF-8 (U+FFFD for invalid bytes) with known=false. */
export function decodeBytes(bytes: Uint8Array, charset: string | null | undefined): { text: string; known: boolean } {
  const enc = charsetEncoding(charset);
  // Decoded in streaming mode on purpose: Node 20's one-shot decode() takes a Latin-1
  // fast path for windows-1252 (and its ISO-8859-1 aliases) that turns 0x80-0x9F into
  // C1 controls instead of “ ” – € (WHATWG Encoding §9.1 maps them).
  const decoder = new TextDecoder(enc ?? 'utf-8');
  return { text: decoder.decode(bytes, { stream: true }) + decoder.decode(), known: enc !== null };
}

// ── RFC 2047 encoded words ──────────────────────────────────────────────────

// =?charset[*lang]?B|Q?text?= (RFC 2047 §2, language suffix RFC 2231 §5).
// Spaces inside the text are tolerated (broken mailers emit them).
const ENCODED_WORD = /=\?([^?\s]+)\?([BbQq])\?([^?]*)\?=/g;

function wordBytes(encoding: string, text: string): Buffer {
  if (encoding === 'B' || encoding === 'b') return Buffer.from(text.replace(/[^A-Za-z0-9+/]/g, ''), 'base64');
  // Q (RFC 2047 §4.2): "_" is a space, =XX a byte, anything else itself.
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5f) out.push(0x20);
    else if (c === 0x3d && /^[0-9A-Fa-f]{2}$/.test(text.slice(i + 1, i + 3))) {
      out.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c < 0x80) out.push(c);
    else out.push(...Buffer.from(text[i]!, 'utf8'));
  }
  return Buffer.from(out);
}

/**
 * Decodes the RFC 2047 encoded words in a header value. Linear white space
 * between two adjacent encoded words is dropped (§6.2); adjacent words of the
 * same charset are decoded together, so a multi-byte character split across
 * two words (common in Japanese and UTF-8 subjects) survives.
 */
export function decodeWords(value: string, report?: ProblemSink, context = 'header'): string {
  if (!value.includes('=?')) return value;
  let out = '';
  let last = 0;
  let pending: { charset: string; chunks: Buffer[] } | null = null;
  const flush = () => {
    if (!pending) return;
    const { text, known } = decodeBytes(Buffer.concat(pending.chunks), pending.charset);
    if (!known) report?.('unknown_charset', `${context}: encoded word in unknown charset "${clip(pending.charset, 40)}" decoded as UTF-8`);
    out += text;
    pending = null;
  };
  ENCODED_WORD.lastIndex = 0;
  for (let m = ENCODED_WORD.exec(value); m; m = ENCODED_WORD.exec(value)) {
    const gap = value.slice(last, m.index);
    const charset = m[1]!.split('*')[0]!.toLowerCase();
    const bytes = wordBytes(m[2]!, m[3]!);
    if (pending && /^[ \t\r\n]*$/.test(gap)) {
      // adjacent encoded words: the white space between them is not displayed (§6.2)
      if (pending.charset === charset) {
        pending.chunks.push(bytes);
      } else {
        flush();
        pending = { charset, chunks: [bytes] };
      }
    } else {
      flush();
      out += gap;
      pending = { charset, chunks: [bytes] };
    }
    last = m.index + m[0].length;
  }
  flush();
  return out + value.slice(last);
}

// ── address lists ───────────────────────────────────────────────────────────

type TokType = 'atom' | 'qs' | 'comment' | 'literal' | 'special';
interface Tok {
  type: TokType;
  /** atom text, quoted-string / comment / literal content (quoted-pairs resolved), or the special character */
  value: string;
  start: number;
  end: number;
  /** white space (or a comment) precedes the token */
  spaced: boolean;
}

const SPECIALS = new Set(['<', '>', '@', ',', ';', ':', '.']);
const isWsp = (c: string) => c === ' ' || c === '\t' || c === '\r' || c === '\n';

function tokenize(s: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  let spaced = false;
  while (i < s.length) {
    const c = s[i]!;
    if (isWsp(c)) {
      spaced = true;
      i++;
      continue;
    }
    const start = i;
    if (c === '"' || c === '(' || c === '[') {
      // quoted-string, comment (nested, RFC 5322 §3.2.2) or domain literal; quoted-pairs
      // resolved; an unterminated one runs to the end of the value (lenient).
      const close = c === '"' ? '"' : c === '(' ? ')' : ']';
      let depth = 1;
      let v = '';
      i++;
      while (i < s.length) {
        const d = s[i]!;
        if (d === '\\' && c !== '[' && i + 1 < s.length) {
          v += s[i + 1];
          i += 2;
          continue;
        }
        if (c === '(' && d === '(') depth++;
        else if (d === close && --depth === 0) {
          i++;
          break;
        }
        v += d;
        i++;
      }
      toks.push({ type: c === '"' ? 'qs' : c === '(' ? 'comment' : 'literal', value: v, start, end: i, spaced });
      spaced = c === '(' ? true : false;
      continue;
    }
    if (SPECIALS.has(c)) {
      toks.push({ type: 'special', value: c, start, end: i + 1, spaced });
      spaced = false;
      i++;
      continue;
    }
    while (i < s.length && !isWsp(s[i]!) && !SPECIALS.has(s[i]!) && s[i] !== '"' && s[i] !== '(' && s[i] !== '[') i++;
    toks.push({ type: 'atom', value: s.slice(start, i), start, end: i, spaced });
    spaced = false;
  }
  return toks;
}

const isSpecial = (t: Tok | undefined, ch: string) => t !== undefined && t.type === 'special' && t.value === ch;

/** A display-name phrase: words joined by single spaces where the source had space, encoded words decoded. */
function phraseText(toks: Tok[], report: ProblemSink | undefined): string {
  let s = '';
  for (const t of toks) {
    if (t.type === 'comment') continue;
    if (s && t.spaced) s += ' ';
    s += t.type === 'literal' ? `[${t.value}]` : t.value;
  }
  // Encoded words inside quoted strings are not allowed (RFC 2047 §5) but are common;
  // decoding them is what every mail client does.
  return decodeWords(s, report, 'display name').replace(/\s+/g, ' ').trim();
}

// atext (RFC 5322 §3.2.3) plus UTF-8 non-ASCII (RFC 6532 §3.2)
const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\u{10FFFF}]+$/u;
const DOT_ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\u{10FFFF}]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\u{10FFFF}]+)*$/u;
// RFC 5321 §4.1.2 Domain: LDH labels
const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

type Spec = { ok: true; local: string; domain: string; unicodeDomain: string } | { ok: false; reason: string };

function normaliseDomain(raw: string): { ascii: string; unicode: string } | string {
  const d = raw.endsWith('.') ? raw.slice(0, -1) : raw; // a trailing root dot is not part of the name
  if (!d) return 'empty domain';
  let ascii: string;
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(d)) {
    ascii = d.toLowerCase();
  } else {
    // IDNA (RFC 5891) via UTS #46 processing: U-labels → A-labels, case folded.
    ascii = domainToASCII(d);
    if (!ascii) return `"${clip(raw, 60)}" is not a valid internationalised domain`;
  }
  const labels = ascii.split('.');
  if (ascii.length > 253 || !labels.every((l) => LDH_LABEL.test(l))) return `"${clip(raw, 60)}" is not a valid domain`;
  let unicode = ascii;
  if (labels.some((l) => l.startsWith('xn--'))) {
    // An A-label must decode, and encode back to itself (RFC 5891 §5.4).
    unicode = domainToUnicode(ascii);
    if (!unicode || domainToASCII(unicode) !== ascii) return `"${clip(raw, 60)}" has an invalid A-label`;
  }
  return { ascii, unicode };
}

function normaliseLiteral(v: string): string | null {
  const inner = v.trim();
  if (isIPv4(inner)) return `[${inner}]`;
  const m = /^ipv6:(.*)$/i.exec(inner);
  if (m && isIPv6(m[1]!)) return `[IPv6:${m[1]!.toLowerCase()}]`;
  return null;
}

/** addr-spec = local-part "@" domain (RFC 5322 §3.4.1), with the obsolete CFWS around dots. */
function parseSpec(toks: Tok[]): Spec {
  const words = toks.filter((t) => t.type !== 'comment');
  if (!words.length) return { ok: false, reason: 'empty address' };
  let at = -1;
  for (let i = words.length - 1; i >= 0; i--) if (isSpecial(words[i], '@')) { at = i; break; }
  if (at === -1) return { ok: false, reason: 'no @' };
  // local part: word *("." word)
  let local = '';
  let expectWord = true;
  for (const t of words.slice(0, at)) {
    if (isSpecial(t, '.')) {
      local += '.';
      expectWord = true;
      continue;
    }
    if (t.type !== 'atom' && t.type !== 'qs') return { ok: false, reason: `unexpected "${clip(t.value, 20)}" in the local part` };
    if (!expectWord) return { ok: false, reason: 'unquoted space in the local part' };
    if (t.type === 'atom' && !ATEXT.test(t.value)) return { ok: false, reason: 'invalid character in the local part' };
    local += t.value;
    expectWord = false;
  }
  if (!local) return { ok: false, reason: 'empty local part' };
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(local)) return { ok: false, reason: 'control character in the local part' };
  // Quoting only where needed: "john.doe"@x is john.doe@x (RFC 5322 §3.4.1: same address).
  const canonicalLocal = DOT_ATOM.test(local) ? local : `"${local.replace(/["\\]/g, '\\$&')}"`;
  // domain: dot-atom or a domain literal
  const dom = words.slice(at + 1);
  if (dom.length === 1 && dom[0]!.type === 'literal') {
    const lit = normaliseLiteral(dom[0]!.value);
    if (!lit) return { ok: false, reason: `unsupported address literal [${clip(dom[0]!.value, 40)}]` };
    return { ok: true, local: canonicalLocal, domain: lit, unicodeDomain: lit };
  }
  let domain = '';
  expectWord = true;
  for (const t of dom) {
    if (isSpecial(t, '.')) {
      domain += '.';
      expectWord = true;
      continue;
    }
    if (t.type !== 'atom' || !expectWord) return { ok: false, reason: 'invalid domain' };
    domain += t.value;
    expectWord = false;
  }
  const nd = normaliseDomain(domain);
  if (typeof nd === 'string') return { ok: false, reason: nd };
  return { ok: true, local: canonicalLocal, domain: nd.ascii, unicodeDomain: nd.unicode };
}

function mailbox(s: string, toks: Tok[], header: string, report: ProblemSink | undefined): Address | null {
  if (!toks.some((t) => t.type !== 'comment')) return null; // an empty list element (obs-addr-list)
  const original = s.slice(toks[0]!.start, toks[toks.length - 1]!.end).trim();
  let name = '';
  let spec: Tok[];
  const lt = toks.findIndex((t) => isSpecial(t, '<'));
  if (lt !== -1) {
    // name-addr = [display-name] angle-addr
    name = phraseText(toks.slice(0, lt), report);
    let gt = toks.findIndex((t, i) => i > lt && isSpecial(t, '>'));
    if (gt === -1) gt = toks.length;
    spec = toks.slice(lt + 1, gt);
    // obs-route "@a,@b:" before the addr-spec (RFC 5322 §4.4): dropped
    const colon = spec.findLastIndex((t) => isSpecial(t, ':'));
    if (colon !== -1) spec = spec.slice(colon + 1);
  } else {
    // bare addr-spec; the legacy "addr (Full Name)" form gives the name in a comment
    spec = toks;
    const comments = toks.filter((t) => t.type === 'comment').map((t) => t.value.trim()).filter(Boolean);
    if (comments.length) name = decodeWords(comments.join(' '), report, 'display name').replace(/\s+/g, ' ').trim();
  }
  const parsed = parseSpec(spec);
  if (!parsed.ok) {
    report?.('invalid_address', `${header}: "${clip(original)}" is not a valid address (${parsed.reason})`);
    return { name, address: '', original };
  }
  return {
    name,
    address: `${parsed.local}@${parsed.domain}`,
    original,
    local: parsed.local,
    domain: parsed.domain,
    unicodeDomain: parsed.unicodeDomain,
  };
}

/** Index of the next top-level `,` (or one of `stops`) outside angle brackets, from i. */
function nextSeparator(toks: Tok[], i: number, stops: string): number {
  let angle = 0;
  for (; i < toks.length; i++) {
    const t = toks[i]!;
    if (t.type !== 'special') continue;
    if (t.value === '<') angle++;
    else if (t.value === '>') angle = Math.max(0, angle - 1);
    else if (angle === 0 && stops.includes(t.value)) return i;
  }
  return toks.length;
}

/**
 * Parses an address-list header value (From, To, Cc, …) into Address and
 * Group entries. Problems (invalid mailboxes, unknown charsets in display
 * names) go to `report`; every mailbox written is kept.
 */
export function parseAddressList(value: string, header = 'address', report?: ProblemSink): AddressListItem[] {
  const toks = tokenize(value);
  const items: AddressListItem[] = [];
  let i = 0;
  while (i < toks.length) {
    if (isSpecial(toks[i], ',') || isSpecial(toks[i], ';')) {
      i++;
      continue;
    }
    // group = display-name ":" [group-list] ";" — a ":" before any "<", "@" or ","
    let colon = -1;
    for (let j = i; j < toks.length; j++) {
      const t = toks[j]!;
      if (t.type !== 'special') continue;
      if (t.value === ':') colon = j;
      if (t.value !== '.') break;
    }
    if (colon !== -1) {
      const group: Group = { group: phraseText(toks.slice(i, colon), report), members: [] };
      i = colon + 1;
      while (i < toks.length && !isSpecial(toks[i], ';')) {
        if (isSpecial(toks[i], ',')) {
          i++;
          continue;
        }
        const end = nextSeparator(toks, i, ',;');
        const m = mailbox(value, toks.slice(i, end), header, report);
        if (m) group.members.push(m);
        i = end;
      }
      if (i >= toks.length) report?.('invalid_address', `${header}: group "${clip(group.group, 60)}" has no closing ";"`);
      i++; // past ";"
      items.push(group);
      continue;
    }
    const end = nextSeparator(toks, i, ',;');
    const m = mailbox(value, toks.slice(i, end), header, report);
    if (m) items.push(m);
    i = end;
  }
  return items;
}

/** Normalises one bare address (e.g. an envelope path); null when it is not valid. */
export function normaliseAddress(spec: string): Pick<Address, 'address' | 'local' | 'domain' | 'unicodeDomain'> | null {
  const parsed = parseSpec(tokenize(spec));
  if (!parsed.ok) return null;
  return { address: `${parsed.local}@${parsed.domain}`, local: parsed.local, domain: parsed.domain, unicodeDomain: parsed.unicodeDomain };
}
