/**
 * Load shedding. Two resources protect the promise "nothing accepted is
 * lost": free disk under the store (a full disk cannot fsync the next message)
 * and memory held by messages in flight (an OOM kill loses every open
 * transaction). Over a limit, new work is deferred with a 4xx, which the
 * sender retries (RFC 5321 §4.2.5 452 "insufficient system storage").
 */
import { statfs } from 'node:fs/promises';

export class MemoryBudget {
  private used = 0;
  constructor(readonly limit: number) {}
  get inUse(): number {
    return this.used;
  }
  /**
   * Past 90% of the budget no new transaction or connection starts: the ones
   * already receiving need the rest to finish (and get their 250).
   */
  get exhausted(): boolean {
    return this.used >= this.limit * 0.9;
  }
  /** Takes n bytes; false (nothing taken) when that would pass the budget. */
  tryTake(n: number): boolean {
    if (this.used + n > this.limit) return false;
    this.used += n;
    return true;
  }
  release(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}

/** Free bytes for unprivileged users under a path, sampled at most once per `ttlMs`. */
export class DiskWatch {
  private last = 0;
  private free = Number.POSITIVE_INFINITY;
  private pending: Promise<number> | null = null;

  constructor(
    private readonly dir: string,
    readonly minFree: number,
    private readonly now: () => number,
    private readonly ttlMs = 1000,
    private readonly probe: (dir: string) => Promise<number> = async (d) => {
      const s = await statfs(d);
      return s.bavail * s.bsize;
    },
  ) {}

  async freeBytes(): Promise<number> {
    if (this.now() - this.last < this.ttlMs) return this.free;
    this.pending ??= this.probe(this.dir)
      .then((n) => {
        this.free = n;
        this.last = this.now();
        return n;
      })
      // An unreadable path is reported by the store itself when it writes.
      .catch(() => this.free)
      .finally(() => {
        this.pending = null;
      });
    return this.pending;
  }

  async low(): Promise<boolean> {
    return this.minFree > 0 && (await this.freeBytes()) < this.minFree;
  }
}
