/**
 * Configuration reload (docs/operations.md, "Configuration reload"): what a
 * new configuration may change in a running gateway, and the holder through
 * which every route lookup goes.
 *
 * Only the routing table and its targets change without a restart: the
 * listeners, TLS, limits, the queue and everything else were built into
 * sockets, pools and workers at start, so a difference there is reported
 * (the gateway logs a warning naming the keys) and waits for the next start.
 */
import type { ResolvedConfig } from './load.js';

/** Top-level keys a reload applies; `servedDomains` and `postmasterTargets` derive from them. */
export const LIVE_KEYS: readonly string[] = ['routes', 'postmaster', 'domains', 'servedDomains', 'postmasterTargets'];

/** The top-level keys, other than the live ones, whose values differ: they need a restart. */
export function restartOnlyChanges(current: ResolvedConfig, next: ResolvedConfig): string[] {
  const keys = new Set([...Object.keys(current), ...Object.keys(next)]);
  const changed: string[] = [];
  for (const k of keys) {
    if (LIVE_KEYS.includes(k) || k === 'reload') continue;
    const a = JSON.stringify((current as unknown as Record<string, unknown>)[k]);
    const b = JSON.stringify((next as unknown as Record<string, unknown>)[k]);
    if (a !== b) changed.push(k);
  }
  return changed.sort();
}

/**
 * One value swapped whole, never edited in place: a reader holds the
 * generation it read (a transaction keeps its routes to the end), a swap is a
 * single assignment, so no reader sees half of two generations.
 */
export class Holder<T> {
  private value: T;
  private gen = 1;
  constructor(initial: T) {
    this.value = initial;
  }
  current(): T {
    return this.value;
  }
  /** Starts at 1; one more per swap. */
  get generation(): number {
    return this.gen;
  }
  swap(next: T): T {
    const previous = this.value;
    this.value = next;
    this.gen++;
    return previous;
  }
}
