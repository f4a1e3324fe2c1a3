/**
 * What every target implements. Targets translate their own failures into
 * GatewayError at the border (transient → 4xx, permanent → 5xx), so the
 * outcome logic never parses another library's error text.
 */
import type { EmailEvent } from '../message/event.js';

export interface DeliveryMessage {
  queueId: string;
  mailFrom: string;
  rcptTo: readonly string[];
  receivedAt: Date;
  /** The message as stored and delivered: trace headers + the bytes as received. */
  message: Buffer;
  /** SHA-256 (hex) of the bytes as received, before trace headers. */
  rawSha256: string;
  event: EmailEvent;
  /** The event serialized once, shared by every target. */
  eventJson: Buffer;
}

export interface Target {
  readonly id: string;
  readonly type: string;
  readonly required: boolean;
  /** Resolves when the target has acknowledged; rejects with a GatewayError. */
  deliver(msg: DeliveryMessage, deliveryId: string, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}
