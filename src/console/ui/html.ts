/**
 * HTML made safe by construction: every value interpolated into an `html`
 * template is escaped unless it is itself the result of `html` (a `Safe`).
 * The pages never concatenate strings from mail into markup any other way,
 * so a subject, a header value or a filename cannot open a tag or an
 * attribute (docs/console.md, "The web console").
 *
 * Leaf module: no imports.
 */

/** Markup that was built by `html` (or is a constant), so it is inserted as is. */
export class Safe {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/**
 * Text for an element's content or a quoted attribute value. Besides the five
 * markup characters, the bidirectional controls (U+202A–U+202E, U+2066–U+2069)
 * are shown as their code points: an RTL override in a subject or a filename
 * ("invoice\u202Efdp.exe") would otherwise reorder what the reader sees
 * (docs/console.md, "How the pages stay safe with hostile mail"). Other
 * control characters but tab and newline are dropped.
 */
export function escapeText(value: unknown): string {
  const s = String(value ?? '');
  return s
    .replace(/[&<>"'`]/g, (c) => ESCAPES[c]!)
    .replace(/[\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/g, (c) => `<span class="bidi" title="bidirectional control character">U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}</span>`)
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g, '');
}

/** Escape for an attribute value: as text, but the bidi controls become plain code points (no markup inside an attribute). */
export function escapeAttr(value: unknown): string {
  return String(value ?? '')
    .replace(/[&<>"'`]/g, (c) => ESCAPES[c]!)
    .replace(/[\u202A-\u202E\u2066-\u2069\u200E\u200F\u061C]/g, (c) => `U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`)
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001F\u007F]/g, ' ');
}

type Part = Safe | string | number | boolean | null | undefined | readonly Part[];

function render(part: Part, inAttr: boolean): string {
  if (part === null || part === undefined || part === false) return '';
  if (part instanceof Safe) return part.value;
  if (Array.isArray(part)) return (part as readonly Part[]).map((p) => render(p, inAttr)).join('');
  return inAttr ? escapeAttr(part) : escapeText(part);
}

/**
 * The template tag. Whether a hole sits inside an attribute is read from the
 * literal text before it (an unclosed `="`), so attribute values get the
 * attribute escape; every attribute the pages write is double-quoted.
 */
export function html(strings: TemplateStringsArray, ...values: Part[]): Safe {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) {
    const before = out.slice(out.lastIndexOf('<'));
    const inAttr = /="[^"]*$/.test(before) && !before.includes('>');
    out += render(values[i]!, inAttr) + strings[i + 1]!;
  }
  return new Safe(out);
}

/** A URL for an href or src that the pages build themselves: only relative paths, never a scheme from mail. */
export function pathSegment(value: string): string {
  return encodeURIComponent(value);
}
