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

/**
 * How many fields of the header block are named `lowerName` (ASCII, lower
 * case): the count of `parseHeaderBlock(buf)` fields with that name, found
 * on the bytes, without decoding the block into strings and field objects
 * (loop detection counts Received fields of every message this way).
 */
export function countFields(buf: Buffer, lowerName: string): number {
  const end = headerBlockEnd(buf);
  const n = lowerName.length;
  let count = 0;
  for (let start = 0; start < end; ) {
    const nl = buf.indexOf(0x0a, start);
    const newline = nl !== -1 && nl < end;
    const next = newline ? nl : end;
    // split(/\r?\n/): a CR just before the LF is not part of the line
    const lineEnd = newline && next > start && buf[next - 1] === 0x0d ? next - 1 : next;
    const first = buf[start];
    // A line beginning with white space is a continuation (or, before the
    // first field, a name that begins with white space): never this name.
    if (first !== 0x20 && first !== 0x09) {
      const colon = buf.indexOf(0x3a, start);
      if (colon !== -1 && colon < lineEnd && colon - start >= n && colon > start && matchesLower(buf, start, lowerName)) {
        // the name is trimmed at its end: only white space may follow the letters
        if (colon - start === n || onlyWhiteSpace(buf, start + n, colon)) count++;
      }
    }
    if (!newline) break;
    start = nl + 1;
  }
  return count;
}

function matchesLower(buf: Buffer, at: number, lowerName: string): boolean {
  for (let i = 0; i < lowerName.length; i++) {
    const b = buf[at + i]!;
    if ((b >= 0x41 && b <= 0x5a ? b + 32 : b) !== lowerName.charCodeAt(i)) return false;
  }
  return true;
}

/** Whether buf[from, to) decodes (UTF-8) to white space only, as String.prototype.trim sees it. */
function onlyWhiteSpace(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const b = buf[i]!;
    if (b >= 0x80) return buf.toString('utf8', from, to).trim() === '';
    if (b !== 0x20 && (b < 0x09 || b > 0x0d)) return false;
  }
  return true;
}

export function headerValue(fields: readonly HeaderField[], name: string): string | null {
  const lower = name.toLowerCase();
  return fields.find((f) => f.name.toLowerCase() === lower)?.value ?? null;
}
