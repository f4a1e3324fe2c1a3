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
 * Whether any line of `normal` (LF line ends) may be cut or dropped. The
 * rules look only at the lines split at LF, so only those starts are tried:
 * a third of the time of one multiline (`/^…/m`) scan, which tries every
 * position of the text.
 */
function mayStrip(normal: string): boolean {
  for (let i = 0; ; ) {
    MAY_STRIP.lastIndex = i;
    if (MAY_STRIP.test(normal)) return true;
    const nl = normal.indexOf('\n', i);
    if (nl === -1) return false;
    i = nl + 1;
  }
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
  return mayStrip(normal) ? splitReplyLines(normal) : { reply: normal.trimEnd(), signature: null, quoted: false };
}

/** splitReply's reply alone. */
export function stripReply(text: string): string {
  return splitReply(text).reply;
}

/** stripReply's rules line by line, on text with LF line ends (exported for the test that checks the pre-scan). */
export function stripReplyLines(normal: string): string {
  return splitReplyLines(normal).reply;
}

/** The index of the first line of quoted history, or lines.length. */
function quoteStart(lines: readonly string[]): number {
  for (let i = 0; i < lines.length; i++) {
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

export function splitReplyLines(normal: string): SplitReply {
  const lines = normal.split('\n');
  // The signature separator ends the reply: a quote marker below it belongs to the history.
  let sep = lines.findIndex((l) => l === '-- ' || l === '--');
  const end = quoteStart(sep === -1 ? lines : lines.slice(0, sep));
  if (end < (sep === -1 ? lines.length : sep)) sep = -1; // the history starts above any separator
  const quoted = end < lines.length || lines.some((l) => /^\s*>/.test(l));
  const unquoted = (from: number, to: number) =>
    lines
      .slice(from, to)
      .filter((l) => !/^\s*>/.test(l))
      .join('\n')
      .trimEnd(); // the same white space as /\s+$/ (ECMAScript WhiteSpace and LineTerminator), without its rescans
  if (sep !== -1) {
    // the signature runs from the separator to the quoted history, if any follows
    const after = lines.slice(sep + 1);
    const sigEnd = sep + 1 + quoteStart(after);
    const signature = unquoted(sep + 1, sigEnd).replace(/^\s*\n/, '');
    return { reply: unquoted(0, sep), signature: signature.trim() ? signature : null, quoted: quoted || sigEnd < lines.length };
  }
  // a mail app's sign-off line, with at most SIGN_OFF_TAIL non-empty lines after it
  let tail = 0;
  for (let i = end - 1; i >= 0 && tail <= SIGN_OFF_TAIL; i--) {
    const line = lines[i]!;
    if (!line.trim() || /^\s*>/.test(line)) continue;
    if (SIGN_OFF.test(line)) return { reply: unquoted(0, i), signature: unquoted(i, end).trim() || null, quoted };
    tail++;
  }
  return { reply: unquoted(0, end), signature: null, quoted };
}
