/**
 * Claim check for whole events (Enterprise Integration Patterns, "Claim
 * Check"): when a target cannot take the event (a receiver answering 413, a
 * Lambda payload limit), the event JSON is stored once in the blob store and
 * the target gets a small pointer event instead, with a signed, expiring link.
 */
import { Readable } from 'node:stream';
import { failure } from '../transaction/replies.js';
import type { EmailEvent } from '../message/event.js';
import type { BlobSink } from '../message/parse.js';
import type { ClaimCheck } from './types.js';

/** The event type of a pointer; `data.event.url` serves the full `email.received` event. */
export const POINTER_EVENT_TYPE = 'email.received.pointer';

/** A once-only store of one message's event; every caller gets the same link. */
export function claimCheckOnce(eventJson: Buffer, blobs: BlobSink | null): () => Promise<ClaimCheck> {
  let stored: Promise<ClaimCheck> | null = null;
  return () => {
    if (!blobs) {
      return Promise.reject(
        failure('PG_EVENT_TOO_LARGE', { message: 'the event is too large for the target and no blob store is configured for a claim check (http is disabled)' }),
      );
    }
    stored ??= blobs
      .put('event', { filename: null, contentType: 'application/json' }, Readable.from([eventJson]))
      .then((r) => {
        if (r.sha256 === undefined || r.size === undefined) throw new Error('blob store did not report size and sha256');
        return { url: r.url, expiresAt: r.expiresAt, size: r.size, sha256: r.sha256 };
      });
    // A failed store is retried by the next caller rather than cached.
    stored.catch(() => {
      stored = null;
    });
    return stored;
  };
}

/** The pointer event sent in place of `event` (documented in docs/delivery.md). */
export function pointerEvent(event: EmailEvent, link: ClaimCheck): Record<string, unknown> {
  const d = event.data;
  return {
    type: POINTER_EVENT_TYPE,
    timestamp: event.timestamp,
    data: {
      schema: d.schema,
      id: d.id,
      receivedAt: d.receivedAt,
      envelope: d.envelope,
      messageId: d.messageId,
      subject: d.subject,
      raw: { size: d.raw.size, sha256: d.raw.sha256 },
      event: link,
    },
  };
}
