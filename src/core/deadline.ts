/**
 * Abort signals with a timeout that is *cleared* once the work is done.
 * `AbortSignal.timeout(ms)` keeps its timer until it fires: at a thousand
 * messages a second with a 30 s deadline that is 30,000 live timers and
 * signals, paid for in timer-heap work and garbage collection on every
 * message (profiled in docs/benchmarks.md). Leaf module.
 */
import { EventEmitter } from 'node:events';

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

/**
 * One attempt's timeout for an undici request, made without an
 * AbortController. undici takes an EventEmitter as a request's `signal`
 * (its Dispatcher.request documents `AbortSignal | EventEmitter`) and aborts
 * the request, or the body being read, on its `abort` event. On Node 20 a new
 * AbortController costs several times the rest of this object (its signal is
 * an EventTarget with its own listener map), and the webhook target makes one
 * per attempt (docs/decisions.md, "The webhook target's hot path").
 *
 * The timer is an ordinary unref'd `setTimeout`: Node keeps timers of equal
 * duration in one list with one underlying timer, so every attempt of a
 * target (one timeout) shares it, and starting or clearing one is O(1).
 * The parent signal is followed with this object as the listener
 * (`handleEvent`), so no closure is made per attempt.
 */
export class AttemptTimeout extends EventEmitter {
  aborted = false;
  reason: unknown = undefined;
  /** Whether this attempt's own timer fired (not the parent's). */
  timedOut = false;
  private readonly timer: ReturnType<typeof setTimeout>;

  constructor(
    ms: number,
    private readonly parent: AbortSignal,
  ) {
    super();
    this.timer = setTimeout(expire, ms, this);
    this.timer.unref();
    if (parent.aborted) this.abort(parent.reason);
    else parent.addEventListener('abort', this);
  }

  /** The parent signal aborted (EventTarget listener object). */
  handleEvent(): void {
    this.abort(this.parent.reason);
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.emit('abort');
  }

  /** Clears the timer and detaches from the parent; call when the attempt is over. */
  done(): void {
    clearTimeout(this.timer);
    this.parent.removeEventListener('abort', this);
  }
}

function expire(t: AttemptTimeout): void {
  t.timedOut = true;
  t.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
}
