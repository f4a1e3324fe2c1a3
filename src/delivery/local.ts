/**
 * The local store: each message as `<queueId>.eml` (the bytes delivered,
 * trace headers included) and `<queueId>.json` (the event) under
 * `<path>/<yyyy>/<mm>/<dd>/`. Both are written to a temporary name, fsync'd,
 * renamed into place and the directory fsync'd, so after the 250 a crash or
 * power loss cannot leave a missing or half-written file.
 */
import { mkdir, rm } from 'node:fs/promises';
import { syncDir, tmpName, writeDurably } from '../core/durable.js';
import path from 'node:path';
import { failure } from '../transaction/replies.js';
import type { DeliveryMessage, Target } from './types.js';

export function storedPaths(root: string, queueId: string, receivedAt: Date): { dir: string; eml: string; json: string } {
  const p = (n: number) => String(n).padStart(2, '0');
  const dir = path.join(root, String(receivedAt.getUTCFullYear()), p(receivedAt.getUTCMonth() + 1), p(receivedAt.getUTCDate()));
  return { dir, eml: path.join(dir, `${queueId}.eml`), json: path.join(dir, `${queueId}.json`) };
}

export class LocalStoreTarget implements Target {
  readonly type = 'local';
  private readonly made = new Set<string>();

  constructor(
    readonly id: string,
    readonly root: string,
    readonly required: boolean,
  ) {}

  async deliver(msg: DeliveryMessage): Promise<void> {
    const { dir, eml, json } = storedPaths(this.root, msg.queueId, msg.receivedAt);
    try {
      if (!this.made.has(dir)) {
        const first = await mkdir(dir, { recursive: true, mode: 0o750 });
        // A new directory is durable only once its parent's entry is: fsync
        // every parent from the first one created up to the store root.
        if (first) {
          for (let d = path.dirname(dir); d.length >= path.dirname(first).length; d = path.dirname(d)) {
            await syncDir(d);
            if (d === path.dirname(d)) break;
          }
        }
        this.made.add(dir);
      }
      await writeDurably(eml, await msg.message.content());
      await writeDurably(json, msg.eventJson);
      await syncDir(dir);
    } catch (err) {
      // Leave nothing half-done behind: the sender retries the whole message.
      for (const f of [eml, json, tmpName(eml), tmpName(json)]) await rm(f, { force: true }).catch(() => undefined);
      this.made.delete(dir);
      // Disk full, permissions, a vanished mount: all fixable by an operator,
      // so the sender keeps the message and retries (451), never a bounce.
      throw failure('PG_STORE_WRITE', { message: `local store ${this.root}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, cause: err });
    }
  }

  async close(): Promise<void> {}
}
