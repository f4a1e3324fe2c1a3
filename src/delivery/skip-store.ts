/**
 * Delivery ids that already succeeded (docs/architecture.md §2.5, "at least once, with
 * idempotency"): when a sender retries a transaction after a lost 250, or
 * after another target of the route failed, targets that already have the
 * message are skipped. Receivers still deduplicate on `webhook-id`.
 *
 * The store is advisory: a lookup that fails means "deliver again" (a
 * duplicate the receiver can drop), never "skip" (a loss).
 */

export interface SkipStore {
  /** True when the delivery id succeeded before and is still remembered. */
  has(deliveryId: string): Promise<boolean>;
  /** Remember a success. May reject; the caller logs and goes on. */
  add(deliveryId: string): Promise<void>;
  close(): Promise<void>;
}

/** In-process store: bounded (oldest evicted first) and expiring. */
export class MemorySkipStore implements SkipStore {
  private readonly done = new Map<string, number>();
  constructor(
    private readonly now: () => number,
    private readonly max = 100_000,
    private readonly ttlMs = 24 * 3600_000,
  ) {}
  async has(id: string): Promise<boolean> {
    const t = this.done.get(id);
    return t !== undefined && this.now() - t < this.ttlMs;
  }
  async add(id: string): Promise<void> {
    this.done.delete(id);
    this.done.set(id, this.now());
    if (this.done.size > this.max) this.done.delete(this.done.keys().next().value!);
  }
  async close(): Promise<void> {}
}
