/**
 * What a webhook format is: a function from the message (its bytes and its
 * parsed event) to one HTTP request body, plus what the consumer it imitates
 * expects of size and answers (docs/formats.md). Leaf module.
 */
import type { EmailEvent } from '../../message/event.js';

export interface FormatInput {
  /** The event as this target sees it (its own recipients only, docs/architecture.md §2.3). */
  event: EmailEvent;
  /**
   * The message as posted raw: postgate's `Return-Path` (and
   * `Authentication-Results` when verified), then the bytes as received.
   * Without the `Received` line, whose queue id and time differ on every
   * retry (docs/formats.md, "Identical bytes on every retry").
   */
  raw: Buffer;
  /** The envelope recipients routed to this target, in RCPT order. */
  rcptTo: readonly string[];
  /** The target URL as the consumer sees it: no userinfo. */
  url: URL;
  /** The Mailgun signing key or the Mandrill webhook key (the target's `signingKey`). */
  key: string | undefined;
  /** Epoch milliseconds, read at send time (signatures carry it). */
  now: number;
  /** Random bytes (Mailgun's token). */
  random(n: number): Buffer;
}

export interface FormattedRequest {
  body: Buffer;
  contentType: string;
  headers?: Record<string, string>;
}

/** A part of the event that a format must carry inline but which went to the blob store. */
export class NotInline extends Error {}

export interface WebhookFormat {
  /** The largest body the consumer takes (docs/formats.md, "Size limits"). */
  maxBytes: number;
  /** Statuses the consumer's own service treats as a deliberate, permanent refusal. */
  permanentOn: readonly number[];
  /** Whether it carries the bodies and attachments themselves (then parts the event links are read back from the message). */
  parsed: boolean;
  /** Whether `signingKey` holds this format's key (and must be set). */
  keyed: boolean;
  /** Throws NotInline when the event lacks a part the format must carry. */
  build(input: FormatInput): FormattedRequest;
}
