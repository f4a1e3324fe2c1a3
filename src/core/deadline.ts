/**
 * Abort signals with a timeout that is *cleared* once the work is done.
 * `AbortSignal.timeout(ms)` keeps its timer until it fires: at a thousand
 * messages a second with a 30 s deadline that is 30,000 live timers and
 * signals, paid for in timer-heap work and garbage collection on every
 * message (profiled in docs/benchmarks.md). Leaf module.
 */

export interface Deadline {
  readonly signal: AbortSignal;
  /** Whether this deadline's own timer fired (not the parent's). */
  readonly timedOut: boolean;
  /** Clears the timer and detaches from the parent; call when the work is done. */
  done(): void;
}

/**
 * `onTimeout`, when given, is called with the abort reason when this
 * deadline's own timer fires: what a listener on the signal would learn,
 * without adding one (a listener on an AbortSignal costs an EventTarget
 * registration per deadline, and the fan-out makes one per message).
 */
export function deadline(ms: number, parent?: AbortSignal, onTimeout?: (reason: Error) => void): Deadline {
  const ac = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    const reason = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    ac.abort(reason);
    onTimeout?.(reason);
  }, ms);
  timer.unref();
  const onParent = () => ac.abort(parent!.reason);
  if (parent) {
    if (parent.aborted) onParent();
    else parent.addEventListener('abort', onParent, { once: true });
  }
  return {
    signal: ac.signal,
    get timedOut() {
      return timedOut;
    },
    done() {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onParent);
    },
  };
}
