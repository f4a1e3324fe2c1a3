/**
 * What the SMTP session and the queue hand the console when something
 * happens to a message (docs/console.md, "What is recorded"). The recorder
 * takes these on the hot path: it only queues them, and writes them in
 * batches later, so a message's 250 never waits for the console and a
 * console that cannot write never fails a message (docs/architecture.md §2.1).
 *
 * Leaf module: types only.
 */
import type { EmailEvent } from '../message/event.js';
import type { MessageBytes } from '../message/bytes.js';
import type { Attempt, TargetState } from './types.js';

/** One message as the SMTP transaction ended for it: accepted (delivered, queued, quarantined) or refused after DATA. */
export interface RecordedMessage {
  queueId: string;
  receivedAt: Date;
  route: string | null;
  client: { address: string; hostname?: string | undefined; helo?: string | undefined };
  mailFrom: string;
  rcptTo: string[];
  /** Bytes as received. */
  size: number;
  /** The reply the sender got, code first ("250 2.0.0 Ok: queued as …"). */
  reply: string;
  refused: boolean;
  quarantined: boolean;
  /** The verdicts of a scanner that refused the message after DATA (the event, when there is one, has none). */
  verdicts?: {
    spam: { scanner: string; score: number; threshold: number; action: string } | null;
    virus: { scanner: string; infected: boolean; names: string[] } | null;
  };
  /** The event as built for the message (null when the transaction failed before it was built). */
  event: EmailEvent | null;
  /** The event serialized once, as the targets that take every recipient got it. */
  eventJson: Buffer | null;
  /** The message as delivered (trace headers included), or null when there is none to keep. */
  message: MessageBytes | null;
  /** SHA-256 of the message as received: with the envelope, the input of every delivery id (docs/architecture.md §2.5). */
  rawSha256: string;
  /** The targets chosen for the message; `spooled` when its delivery went to the queue. */
  targets: Array<{ target: string; kind: string; required: boolean; spooled: boolean }>;
  /** Attempts that ended inside the transaction (sync delivery), oldest first. */
  attempts: Attempt[];
}

/** The recorder's side the gateway's stages call; every method returns at once. */
export interface MessageRecorder {
  received(m: RecordedMessage): void;
  /** An attempt outside the transaction ended (queue worker, retry, replay); `state` is where its target now stands. */
  attempt(queueId: string, a: Attempt, state: TargetState['status'], required?: boolean): void;
}
