/**
 * AUTH brute-force limits per client address: each failed attempt delays
 * the 535 reply a little more (so a guessing client waits, and a slow hash
 * cannot be turned into a CPU amplifier by parallel attempts), and after
 * `maxFailures` within `window` the address gets 454 4.7.0 (RFC 4954 §6,
 * temporary authentication failure) without its password being checked,
 * until the window has passed. Leaf module.
 */
export interface AuthThrottleOptions {
  maxFailures: number;
  windowMs: number;
  /** Delay of the first 535; doubled per further failure, capped at maxDelayMs. */
  delayMs: number;
  maxDelayMs: number;
  now(): number;
}

/** Tracked addresses at most (oldest forgotten first): a flood of sources cannot grow it without bound. */
const MAX_TRACKED = 100_000;

export class AuthThrottle {
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly o: AuthThrottleOptions) {}

  private recent(address: string): number[] {
    const since = this.o.now() - this.o.windowMs;
    const list = (this.failures.get(address) ?? []).filter((t) => t > since);
    if (list.length) this.failures.set(address, list);
    else this.failures.delete(address);
    return list;
  }

  /** Whether this address may try now (false: answer 454 without checking). */
  allowed(address: string): boolean {
    return this.recent(address).length < this.o.maxFailures;
  }

  /** Records a failure; returns how long to hold the 535. */
  failed(address: string): number {
    const list = this.recent(address);
    list.push(this.o.now());
    this.failures.delete(address);
    this.failures.set(address, list);
    if (this.failures.size > MAX_TRACKED) this.failures.delete(this.failures.keys().next().value!);
    return Math.min(this.o.maxDelayMs, this.o.delayMs * 2 ** (list.length - 1));
  }

  succeeded(address: string): void {
    this.failures.delete(address);
  }
}
