/**
 * The stored copy of one message: its .eml and the event JSON its targets
 * got, as one run of bytes (docs/decisions.md, "The console's database").
 * The copy log (console/log.ts) writes the event whole, straight from the
 * message's buffers. An index of an earlier version kept copies as values
 * of its own, and there the event did not repeat its text body:
 * `strippedText` is often `text` verbatim (nothing quoted or signed was
 * found), and then the stored event kept the bytes once and the read puts
 * them back (the stripped text is the text or its start, without trailing
 * blank lines). What a read returns is byte for byte what the targets got.
 *
 *   byte 0      format (1)
 *   bytes 1-4   length of the .eml (UInt32BE)
 *   bytes 5-8   where the event's strippedText value goes back (0: nothing left out)
 *   bytes 9-12  where, in the stored event, the bytes to put back start
 *   bytes 13-16 how many bytes to put back
 *   then        the .eml, then the stored event
 *
 * Leaf module: Buffers only.
 */

const FORMAT = 1;
const HEAD = 17;
const STRIPPED = Buffer.from(',"strippedText":"');
const TEXT = Buffer.from(',"text":"');
/**
 * The key after `strippedText` in the event (message/schema.ts). Inside a
 * JSON string every `"` is escaped, so `","strippedSignature":` cannot occur
 * in a value: its first occurrence after the value's start is the value's
 * end. Whatever these searches find, the stored event gives back exactly the
 * bytes it was given: only bytes equal to earlier ones are left out.
 */
const AFTER_STRIPPED = Buffer.from('","strippedSignature":');

/**
 * Where the event's strippedText value repeats the start of its text value
 * byte for byte (reply stripping only trims the end, docs/payload.md):
 * [where the repeated bytes start, how many, where they are in the text
 * value], or null. `,"` cannot occur inside a JSON string either, so the
 * first `,"text":"` and `,"strippedText":"` are the event's own keys (no
 * earlier field has them). The closing quote stays stored.
 */
function repeat(event: Buffer): [at: number, length: number, from: number] | null {
  const t = event.indexOf(TEXT);
  if (t < 0) return null;
  const from = t + TEXT.length - 1; // the text value's opening quote
  const s = event.indexOf(STRIPPED, from + 1);
  if (s < 0) return null;
  const at = s + STRIPPED.length - 1;
  const stop = event.indexOf(AFTER_STRIPPED, at + 1);
  if (stop < 0) return null;
  const length = stop - at; // the opening quote and the content, not the closing quote
  if (length < 64) return null; // not worth it
  // Equal bytes lie inside the text value: they hold no unescaped quote, and
  // crossing the value's end would put its `","textSource"` in a string.
  if (from + length > at || event.compare(event, from, from + length, at, stop) !== 0) return null;
  return [at, length, from];
}

/** Bytes of a copy's head. */
export const COPY_HEAD = HEAD;

/** The head of a copy at `pos` of `out`: the .eml's length and where the left-out bytes go back (none when `r` is null). */
function writeHead(out: Buffer, pos: number, rawLength: number, r: [at: number, length: number, from: number] | null): void {
  out[pos] = FORMAT;
  out.writeUInt32BE(rawLength, pos + 1);
  out.writeUInt32BE(r ? r[0] : 0, pos + 5);
  out.writeUInt32BE(r ? r[2] : 0, pos + 9);
  out.writeUInt32BE(r ? r[1] : 0, pos + 13);
}

/**
 * Writes the head of a copy whose event is stored whole into `out` at `pos`
 * (COPY_HEAD bytes): the .eml (`rawLength` bytes) and the event follow it
 * as they are. The copy log writes copies so, straight from the message's
 * buffers: leaving the repeated text out would cost a search and a copy of
 * the event on the hot path to save bytes of an append that costs less.
 */
export function copyHead(out: Buffer, pos: number, rawLength: number): void {
  writeHead(out, pos, rawLength, null);
}

/** The one value for a message: the .eml (segments as received) and the event, its repeated text left out. */
export function encodeCopy(raw: readonly Buffer[], rawLength: number, event: Buffer | null): Buffer {
  const ev = event ?? Buffer.alloc(0);
  const r = event ? repeat(event) : null;
  const out = Buffer.allocUnsafe(HEAD + rawLength + ev.length - (r ? r[1] : 0));
  writeHead(out, 0, rawLength, r);
  let pos = HEAD;
  for (const b of raw) pos += b.copy(out, pos);
  if (r) {
    pos += ev.copy(out, pos, 0, r[0]);
    ev.copy(out, pos, r[0] + r[1]);
  } else ev.copy(out, pos);
  return out;
}

/** The .eml of a stored copy (a view of it). */
export function copyRaw(stored: Buffer): Buffer | null {
  if (stored.length < HEAD || stored[0] !== FORMAT) return null;
  const n = stored.readUInt32BE(1);
  return n ? stored.subarray(HEAD, HEAD + n) : null;
}

/** The event JSON of a stored copy, as its targets got it. */
export function copyEvent(stored: Buffer): Buffer | null {
  if (stored.length < HEAD || stored[0] !== FORMAT) return null;
  const ev = stored.subarray(HEAD + stored.readUInt32BE(1));
  if (ev.length === 0) return null;
  const length = stored.readUInt32BE(13);
  if (!length) return ev;
  const at = stored.readUInt32BE(5);
  const from = stored.readUInt32BE(9);
  return Buffer.concat([ev.subarray(0, at), ev.subarray(from, from + length), ev.subarray(at)]);
}
