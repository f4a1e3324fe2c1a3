/**
 * Delivery status notifications for queued messages: the queue announces
 * each message's final outcome (src/queue/outcome.ts decides when a message
 * is finished); this only turns it into a report.
 */
import type { MessageOutcome } from '../queue/outcome.js';
import type { DsnNotifier } from './notifier.js';

export function queueReport(notifier: DsnNotifier, outcome: MessageOutcome): Promise<boolean> {
  return outcome.delivered ? notifier.delivered(outcome.event, outcome.original) : notifier.failed(outcome.event, outcome.original, outcome.error);
}
