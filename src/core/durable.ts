/**
 * Durable file writes: data fsync'd before the rename that publishes it, and
 * the directory fsync'd after, so a crash or power loss leaves either the old
 * state or the complete new one (the classic write-temp / fsync / rename /
 * fsync-directory sequence). Leaf module.
 */
import { open, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';

export function tmpName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
}

/** Writes `data` (a stream is written as it is read) to `file` atomically (temp file, fsync, rename). The caller fsyncs the directory. */
export async function writeDurably(file: string, data: Buffer | string | Readable): Promise<void> {
  const tmp = tmpName(file);
  const fh = await open(tmp, 'w', 0o640);
  try {
    // A stream is written as it is read (FileHandle.writeFile takes a Readable).
    await fh.writeFile(data as Parameters<typeof fh.writeFile>[0]);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}

/** fsync a directory, making the entries created or renamed in it durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
