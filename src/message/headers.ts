/**
 * Minimal header access for the edge: where the header block ends, the
 * ordered, unfolded header list (RFC 5322 §2.2.3), and counting Received
 * headers for loop detection. Decoding of encoded words, addresses and bodies
 * belongs to the full parser. Leaf module.
 */

export interface HeaderField {
  name: string;
  value: string;
}

/** Index just past the blank line ending the header block, or buf.length when there is no body. */
export function headerBlockEnd(buf: Buffer): number {
  const crlf = buf.indexOf('\r\n\r\n');
  const lf = buf.indexOf('\n\n');
  if (crlf !== -1 && (lf === -1 || crlf < lf)) return crlf + 4;
  if (lf !== -1) return lf + 2;
  return buf.length;
}

/** The header fields in order, unfolded (CRLF + WSP → the WSP), names as written. */
export function parseHeaderBlock(buf: Buffer): HeaderField[] {
  const text = buf.subarray(0, headerBlockEnd(buf)).toString('utf8');
  const fields: HeaderField[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line === '') continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length) {
      fields[fields.length - 1]!.value += line;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue; // not a header field; the parser reports it
    fields.push({ name: line.slice(0, colon).trimEnd(), value: line.slice(colon + 1).trim() });
  }
  return fields;
}

export function headerValue(fields: readonly HeaderField[], name: string): string | null {
  const lower = name.toLowerCase();
  return fields.find((f) => f.name.toLowerCase() === lower)?.value ?? null;
}
