/**
 * The new text of a reply (docs/payload.md `strippedText`, `strippedSignature`):
 * quoted history and the signature taken off a text body. Heuristics for the
 * shapes the common clients write; every rule looks at one line (or two, or
 * the next four) at a time, and the regular expressions are anchored with no
 * nested repetition, so hostile text costs time linear in its length.
 */

const WROTE = [
  /^On\b.*\bwrote:\s*$/i, // Gmail, Apple Mail, Thunderbird
  /^Le\b.*\ba écrit\s*:\s*$/i,
  /^Am\b.*\bschrieb\b.*:\s*$/i,
  /^El\b.*\bescribió:\s*$/i,
  /^Op\b.*\bschreef\b.*:\s*$/i,
  /^Il\b.*\bscritto:\s*$/i,
];
const WROTE_START = /^(?:On|Le|Am|El|Op|Il)\b/i;
const ORIGINAL_MESSAGE = /^\s*-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original|Oorspronkelijk bericht)\s*-{2,}\s*$/i;
const OUTLOOK_FROM = /^\s*\*?(?:From|De|Von|Van|Da):\*?\s/i;
const OUTLOOK_SENT = /^\s*\*?(?:Sent|Date|Envoyé|Gesendet|Verzonden|Enviado|Inviato):\*?\s/i;
/**
 * The sign-off lines mail apps append in place of a signature (a line of its
 * own near the end of the reply): "Sent from my iPhone", "Get Outlook for
 * iOS", "Sent from Mail for Windows", and their common translations.
 */
const SIGN_OFF =
  /^\s*(?:Sent from my \S.*|Sent from (?:Mail|Outlook|Yahoo Mail|Samsung|Proton Mail)\b.*|Get Outlook for \S.*|Envoyé de mon \S.*|Envoyé depuis \S.*|Von meinem \S.* gesendet.*|Enviado desde mi \S.*|Inviato da \S.*|Verzonden vanaf mijn \S.*)$/i;
/** A sign-off line counts only this close to the end of the reply (non-empty lines after it). */
const SIGN_OFF_TAIL = 2;

/**
 * The start of a line that could start any of the cuts in stripReply, or a
 * quoted line (a superset: `\s*` may run across line ends; the per-line
 * rules decide). Sticky, tried at each line start (mayStrip).
 */
const MAY_STRIP = /(?:(?:On|Le|Am|El|Op|Il)\b|\s*(?:>|--|_{10}|\*?(?:From|De|Von|Van|Da):|Sent from|Get Outlook|Envoy|Von meinem|Enviado|Inviato|Verzonden))/iy;

/**
 * The start offsets of the lines of `normal` (LF line ends) that any rule
 * below may cut at or drop: the lines whose start MAY_STRIP matches. Only
 * the line starts are tried: a third of the time of one multiline (`/^…/m`)
 * scan, which tries every position.
 */
function candidates(normal: string): number[] {
  const starts: number[] = [];
  for (let i = 0; ; ) {
    MAY_STRIP.lastIndex = i;
    if (MAY_STRIP.test(normal)) starts.push(i);
    const nl = normal.indexOf('\n', i);
    if (nl === -1) return starts;
    i = nl + 1;
  }
}

/** The line of `normal` that starts at `start`, without its LF. */
function lineAt(normal: string, start: number): string {
  const nl = normal.indexOf('\n', start);
  return normal.slice(start, nl === -1 ? normal.length : nl);
}

/**
 * Whether a rule holds on the line at `start` (a candidate), looking at the
 * lines after it as the rules do: when none holds on any candidate, nothing
 * is cut or dropped and the reply is the text itself.
 */
function ruleHolds(normal: string, start: number): boolean {
  const line = lineAt(normal, start);
  if (/^\s*>/.test(line) || line === '-- ' || line === '--' || ORIGINAL_MESSAGE.test(line) || SIGN_OFF.test(line)) return true;
  const after: string[] = [];
  for (let at = start + line.length + 1, k = 0; k < 4 && at <= normal.length; k++) {
    const next = lineAt(normal, at);
    after.push(next);
    at += next.length + 1;
  }
  return quoteStart([line, ...after]) === 0;
}

/** The index of each line of `normal` whose start is in `starts`, as marks. */
function marksOf(normal: string, starts: readonly number[]): Uint8Array {
  const marks = new Uint8Array(normal.split('\n').length);
  let line = 0;
  let at = 0;
  for (const start of starts) {
    while (at < start) {
      at = normal.indexOf('\n', at) + 1;
      line++;
    }
    marks[line] = 1;
  }
  return marks;
}

export interface SplitReply {
  /** The new text: no quoted history, no signature. */
  reply: string;
  /** The signature block taken off the reply, or null when none was recognised. */
  signature: string | null;
  /** Whether quoted history was found (a marker line or "> " lines). */
  quoted: boolean;
}

/**
 * The new text of a reply: cut at the first quoted-history marker (a
 * Gmail-style "On … wrote:" line, possibly wrapped onto two lines; Outlook's
 * "-----Original Message-----", its "____" rule or its "From: … Sent: …"
 * header block), drop the remaining ">" quoted lines (RFC 3676 §4.5
 * quote marks), and cut the signature at the "-- " separator (RFC 3676 §4.3)
 * or at a mail app's sign-off line ("Sent from my iPhone").
 */
export function splitReply(text: string): SplitReply {
  const normal = text.includes('\r') ? text.replace(/\r\n?/g, '\n') : text;
  // Most text has no line any rule below looks at: one scan says so, and the
  // answer is then the text itself (no split, no per-line tests).
  // Prose often has lines that start like a rule ("On …", "From: …") on
  // which none holds: checked one by one, still without a split.
  const starts = candidates(normal);
  if (!starts.some((start) => ruleHolds(normal, start))) return { reply: normal.trimEnd(), signature: null, quoted: false };
  return splitReplyLines(normal, marksOf(normal, starts));
}

/** splitReply's reply alone. */
export function stripReply(text: string): string {
  return splitReply(text).reply;
}

/** stripReply's rules on every line, on text with LF line ends (the reference for the test that checks the pre-scan). */
export function stripReplyLines(normal: string): string {
  return splitReplyLines(normal).reply;
}

/**
 * The index of the first line of quoted history, or lines.length. With
 * `marks`, only the lines marked from index `from` on are tried.
 */
function quoteStart(lines: readonly string[], marks?: Uint8Array, from = 0): number {
  for (let i = 0; i < lines.length; i++) {
    if (marks && !marks[from + i]) continue;
    const line = lines[i]!;
    const next = lines[i + 1] ?? '';
    // every WROTE pattern starts with one of these words: one test instead of six on most lines
    if (WROTE_START.test(line)) {
      if (WROTE.some((re) => re.test(line))) return i;
      // Gmail wraps a long attribution line: "On Mon, … Jane Doe <\njane@example.com> wrote:"
      if (line.length + next.length < 400 && WROTE.some((re) => re.test(`${line} ${next}`))) return i;
    }
    if (ORIGINAL_MESSAGE.test(line)) return i;
    if (/^\s*_{10,}\s*$/.test(line) && OUTLOOK_FROM.test(next)) return i;
    if (OUTLOOK_FROM.test(line) && lines.slice(i + 1, i + 5).some((l) => OUTLOOK_SENT.test(l))) return i;
  }
  return lines.length;
}

/**
 * stripReply's rules line by line. With `marks` (candidates), only the marked
 * lines are tried: a rule can hold only on a line whose start MAY_STRIP
 * matches.
 */
export function splitReplyLines(normal: string, marks?: Uint8Array): SplitReply {
  const lines = normal.split('\n');
  const may = (i: number): boolean => !marks || marks[i] === 1;
  const isQuote = (i: number): boolean => may(i) && /^\s*>/.test(lines[i]!);
  // The signature separator ends the reply: a quote marker below it belongs to the history.
  let sep = lines.findIndex((l, i) => may(i) && (l === '-- ' || l === '--'));
  const end = quoteStart(sep === -1 ? lines : lines.slice(0, sep), marks);
  if (end < (sep === -1 ? lines.length : sep)) sep = -1; // the history starts above any separator
  let quoted = end < lines.length;
  for (let i = 0; !quoted && i < lines.length; i++) quoted = isQuote(i);
  const unquoted = (from: number, to: number) => {
    const kept: string[] = [];
    for (let i = from; i < to; i++) if (!isQuote(i)) kept.push(lines[i]!);
    return kept.join('\n').trimEnd(); // the same white space as /\s+$/ (ECMAScript WhiteSpace and LineTerminator), without its rescans
  };
  if (sep !== -1) {
    // the signature runs from the separator to the quoted history, if any follows
    const after = lines.slice(sep + 1);
    const sigEnd = sep + 1 + quoteStart(after, marks, sep + 1);
    const signature = unquoted(sep + 1, sigEnd).replace(/^\s*\n/, '');
    return { reply: unquoted(0, sep), signature: signature.trim() ? signature : null, quoted: quoted || sigEnd < lines.length };
  }
  // a mail app's sign-off line, with at most SIGN_OFF_TAIL non-empty lines after it
  let tail = 0;
  for (let i = end - 1; i >= 0 && tail <= SIGN_OFF_TAIL; i--) {
    const line = lines[i]!;
    if (!line.trim() || isQuote(i)) continue;
    if (may(i) && SIGN_OFF.test(line)) return { reply: unquoted(0, i), signature: unquoted(i, end).trim() || null, quoted };
    tail++;
  }
  return { reply: unquoted(0, end), signature: null, quoted };
}
