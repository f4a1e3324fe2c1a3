/**
 * A pass-through that hashes (SHA-256) and counts what flows through it, so
 * a blob's digest and size come from the bytes actually stored. Leaf module.
 */
import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';

export function hashingTap(): { stream: Transform; result(): { sha256: string; size: number } } {
  const hash = createHash('sha256');
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  return { stream, result: () => ({ sha256: hash.digest('hex'), size }) };
}
