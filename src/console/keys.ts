/**
 * The console's search keys (recipient, sender), held in memory and built
 * again from the index's records when the index opens (docs/decisions.md,
 * "The console's database").
 *
 * Kept in LMDB, each key was one insert at a random place of a B-tree: for a
 * batch of messages, one dirty page per key, copied and written at commit.
 * That was a third of what recording a message cost. The keys are derived
 * from the records, which LMDB keeps; so they live here, cost a Map lookup
 * and an array push per key, and a restart reads them back from the records.
 *
 * Per key, the ids of its messages in ascending order (queue ids sort by
 * time, message/ids.ts), so a search is a binary search and a walk down.
 *
 * Leaf module.
 */

export type KeyKind = 'r' | 'f';
export type KeyParts = [kind: KeyKind, value: string];

/** The first index of `ids` whose id is ≥ `id`. */
function lowerBound(ids: readonly string[], id: string): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid]! < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class SearchKeys {
  /** Per kind, per lower-cased address, the ids. */
  private readonly ids = { r: new Map<string, string[]>(), f: new Map<string, string[]>() };

  add(id: string, keys: readonly KeyParts[]): void {
    for (const [kind, value] of keys) {
      const map = this.ids[kind];
      const list = map.get(value);
      if (!list) {
        map.set(value, [id]);
        continue;
      }
      // Ids come almost in order (made at MAIL, recorded after DATA): an append, or a short step back.
      if (list[list.length - 1]! < id) list.push(id);
      else {
        const at = lowerBound(list, id);
        if (list[at] !== id) list.splice(at, 0, id);
      }
    }
  }

  /**
   * Removes ids, grouped by key so that retention, which removes the oldest
   * first, costs one splice per key and chunk rather than one per message.
   */
  remove(gone: ReadonlyArray<{ id: string; keys: readonly KeyParts[] }>): void {
    const byKey = { r: new Map<string, Set<string>>(), f: new Map<string, Set<string>>() };
    for (const { id, keys } of gone) {
      for (const [kind, value] of keys) {
        let set = byKey[kind].get(value);
        if (!set) byKey[kind].set(value, (set = new Set()));
        set.add(id);
      }
    }
    for (const kind of ['r', 'f'] as const) {
      const map = this.ids[kind];
      for (const [value, set] of byKey[kind]) {
        const list = map.get(value);
        if (!list) continue;
        let front = 0;
        while (front < list.length && set.has(list[front]!)) front++;
        const kept = front === set.size ? (list.splice(0, front), list) : list.filter((id) => !set.has(id));
        if (kept.length) map.set(value, kept);
        else map.delete(value);
      }
    }
  }

  /** Ids of one key, newest first, below `before` (exclusive) and at or above `from`. */
  *below(kind: KeyKind, value: string, before: string, from: string): Generator<string> {
    const list = this.ids[kind].get(value);
    if (!list) return;
    for (let i = lowerBound(list, before) - 1; i >= 0; i--) {
      const id = list[i]!;
      if (id < from) return;
      yield id;
    }
  }
}
