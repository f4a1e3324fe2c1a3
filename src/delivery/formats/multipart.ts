/**
 * A multipart/form-data body (RFC 7578) built in memory: the parsed webhook
 * formats (SendGrid, Mailgun) post their fields this way. Field values are
 * UTF-8 (RFC 7578 §5.1.2); names and file names are quoted with `"` and CR,
 * LF and `"` percent-encoded, as the WHATWG HTML form encoder does, so no
 * value can end a part early. Leaf module.
 */
import { randomBytes } from 'node:crypto';

export type FormPart =
  | { name: string; value: string }
  | { name: string; file: Buffer; filename: string; contentType: string };

const quote = (s: string): string => s.replace(/\r/g, '%0D').replace(/\n/g, '%0A').replace(/"/g, '%22');

export function formData(parts: readonly FormPart[], boundary = `----postgate${randomBytes(16).toString('hex')}`): { body: Buffer; contentType: string } {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    if ('file' in p) {
      chunks.push(
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="${quote(p.name)}"; filename="${quote(p.filename)}"\r\nContent-Type: ${p.contentType.replace(/[\r\n]/g, '')}\r\n\r\n`,
          'utf8',
        ),
        p.file,
        Buffer.from('\r\n'),
      );
    } else {
      chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${quote(p.name)}"\r\n\r\n${p.value}\r\n`, 'utf8'));
    }
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

/** application/x-www-form-urlencoded (WHATWG URL "urlencoded serializer"), for Mandrill's POST. */
export function urlEncoded(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  return Buffer.from(new URLSearchParams(fields.map(([k, v]): [string, string] => [k, v])).toString(), 'utf8');
}
