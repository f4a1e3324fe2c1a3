/**
 * What every target implements. Targets translate their own failures into
 * GatewayError at the border (transient → 4xx, permanent → 5xx), so the
 * outcome logic never parses another library's error text.
 */
import type { EmailEvent } from '../message/event.js';
import type { MessageBytes } from '../message/bytes.js';

export interface DeliveryMessage {
  queueId: string;
  mailFrom: string;
  rcptTo: readonly string[];
  receivedAt: Date;
  /** The message as stored and delivered: trace headers + the bytes as received (in memory, or partly in a spill file). */
  message: MessageBytes;
  /** SHA-256 (hex) of the bytes as received, before trace headers. */
  rawSha256: string;
  event: EmailEvent;
  /** The event serialized once, shared by every target. */
  eventJson: Buffer;
  /**
   * Stores the event JSON in the blob store (once per message, however many
   * targets ask) and returns a link to it, for targets that cannot take the
   * whole event (HTTP 413, a Lambda payload limit). Rejects with a GatewayError
   * when no blob store is configured.
   */
  claimCheck(): Promise<ClaimCheck>;
}

/** A stored copy of the event, fetched by the receiver (claim check). */
export interface ClaimCheck {
  url: string;
  /** ISO-8601; the link stops working then. */
  expiresAt: string;
  size: number;
  sha256: string;
}

export interface Target {
  readonly id: string;
  readonly type: string;
  readonly required: boolean;
  /** Resolves when the target has acknowledged; rejects with a GatewayError. */
  /** Resolves when the target has the message; a target that spoke HTTP says the status it got (the console's timeline). */
  deliver(msg: DeliveryMessage, deliveryId: string, signal: AbortSignal): Promise<DeliveryReceipt | void>;
  close(): Promise<void>;
}

/** What a target may tell of a delivery that succeeded. */
export interface DeliveryReceipt {
  httpStatus?: number;
}
