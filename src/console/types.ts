/**
 * The message console's model: what the index holds for each message and
 * what the console's store answers. The store (index, stored copies,
 * retention, actions) and the web pages are separate rooms; both speak
 * these types, so the pages never reach into the index's storage and the
 * REST API (`/api/v1`, docs/console.md) serves the same shapes as JSON.
 *
 * Leaf module: types only.
 */

/** Where a message stands, newest fact first. */
export type MessageStatus =
  /** Every required target has it. */
  | 'delivered'
  /** Accepted into the queue; no attempt has ended yet. */
  | 'queued'
  /** At least one required target failed and will be retried. */
  | 'deferred'
  /** A required target gave up on it (dead letter); `retry` sends it again. */
  | 'dead'
  /** Refused after DATA (5xx or 4xx reply): nothing was accepted, the sender still has it. */
  | 'refused'
  /** Delivered only to the route's quarantine targets (scan policy). */
  | 'quarantined';

/** One delivery attempt to one target, as it ended. */
export interface Attempt {
  /** ISO 8601 time the attempt ended. */
  at: string;
  /** The target's id (routes[].targets[].id or its default). */
  target: string;
  /** The target's type: webhook, lambda, s3, local. */
  kind: string;
  /** `sync` inside the SMTP transaction, `queue` from the retry worker, `replay`/`retry` from an action. */
  via: 'sync' | 'queue' | 'retry' | 'replay';
  outcome: 'delivered' | 'deferred' | 'failed' | 'skipped';
  /** Milliseconds from the attempt's start to its end. */
  latencyMs: number;
  /** The receiver's HTTP status, when there was one. */
  httpStatus?: number;
  /** The stable error code (PG_…) when the attempt did not deliver. */
  code?: string;
  /** A one-line reason, safe to show (no secrets, no body). */
  detail?: string;
}

/** One target of the message's route and where it stands for this message. */
export interface TargetState {
  target: string;
  kind: string;
  required: boolean;
  status: 'delivered' | 'pending' | 'deferred' | 'dead' | 'skipped';
}

/** A row of the list: enough to show and to search, no bodies. */
export interface MessageSummary {
  /** The queue id, as in `250 2.0.0 Ok: queued as <id>`; the console's key. */
  id: string;
  /** ISO 8601 time the last byte of DATA arrived. */
  receivedAt: string;
  client: { address: string; hostname?: string; helo?: string };
  /** Envelope sender (MAIL FROM), "" for the null reverse-path. */
  mailFrom: string;
  /** Envelope recipients (RCPT TO) accepted for the message. */
  rcptTo: string[];
  /** The header From address, when the message has one. */
  from: string | null;
  subject: string | null;
  /** Bytes as received. */
  size: number;
  route: string | null;
  status: MessageStatus;
  /** The SMTP reply the sender got, e.g. "250 2.0.0 Ok: queued as …", "550 5.7.1 …". */
  reply: string;
  spam: { scanner: string; score: number; threshold: number; action: string } | null;
  virus: { scanner: string; infected: boolean; names: string[] } | null;
  attachments: number;
}

export interface AttachmentInfo {
  /** Position in the event's `attachments`, the key for fetching it. */
  index: number;
  filename: string | null;
  contentType: string;
  size: number;
  disposition: string | null;
}

/** One message in full, for the message view and `GET /api/v1/messages/{id}`. */
export interface MessageDetail extends MessageSummary {
  targets: TargetState[];
  /** Oldest first. */
  attempts: Attempt[];
  /** The header fields in order, unfolded, decoded for display. */
  headers: Array<[name: string, value: string]>;
  text: string | null;
  /** The HTML body as the sender wrote it: the console shows it only in a sandboxed frame. */
  html: string | null;
  attachmentList: AttachmentInfo[];
  /** Whether the raw .eml and the event JSON are still stored (retention may have removed them). */
  hasRaw: boolean;
  hasEvent: boolean;
}

/** A search. Every field is optional; given fields are ANDed. */
export interface MessageQuery {
  /** Free text: words matched against subject, From, envelope sender and recipients. */
  q?: string;
  /** An envelope recipient (exact address, case-insensitive). */
  rcpt?: string;
  /** The envelope sender or header From (exact address, case-insensitive). */
  from?: string;
  /** Words that must all occur in the subject. */
  subject?: string;
  route?: string;
  status?: MessageStatus;
  /** ISO 8601 bounds on receivedAt, inclusive. */
  since?: string;
  until?: string;
  /** Opaque cursor from a previous page's `next`. */
  cursor?: string;
  /** Page size; default 50, at most 500. */
  limit?: number;
}

/** A list page, newest first. */
export interface MessagePage {
  items: MessageSummary[];
  /** Cursor for the next (older) page, or null at the end. */
  next: string | null;
}

/** What changed, for live updates (server-sent events). */
export type ConsoleChange =
  | { type: 'added'; summary: MessageSummary }
  | { type: 'updated'; summary: MessageSummary }
  | { type: 'deleted'; id: string };

/** The result of an action, for the API and the buttons. */
export interface ActionResult {
  ok: boolean;
  /** A one-line message for the person who pressed the button. */
  message: string;
  /** The stable error code when `ok` is false. */
  code?: string;
}

/**
 * The console's store: the index, the stored copies and the actions. The
 * web pages and the REST API call only this.
 */
export interface ConsoleStore {
  list(query: MessageQuery): Promise<MessagePage>;
  get(id: string): Promise<MessageDetail | null>;
  /** The event JSON as delivered (postgate.email.v1), or null when not stored. */
  event(id: string): Promise<Buffer | null>;
  /** The raw message (.eml) as received, or null when not stored. */
  raw(id: string): Promise<NodeJS.ReadableStream | null>;
  attachment(id: string, index: number): Promise<{ info: AttachmentInfo; content: NodeJS.ReadableStream } | null>;
  /**
   * The HTML body with the parts the event carries inline that have a
   * Content-ID (its `cid:` images, base64 as in the event), from one read of
   * the stored event; null when the message has no HTML body.
   */
  htmlBody(id: string): Promise<{ html: string; images: Array<{ contentId: string; contentType: string; base64: string }> } | null>;
  /** Send a deferred or dead message's queued items again now. */
  retry(id: string): Promise<ActionResult>;
  /** Deliver the message once more to one target of its route (same delivery id rules as `postgate queue replay`). */
  replay(id: string, target: string): Promise<ActionResult>;
  /** Remove the message's index entry and stored copies. */
  remove(id: string): Promise<ActionResult>;
  /** Listen to changes; returns the unsubscribe function. */
  subscribe(listener: (change: ConsoleChange) => void): () => void;
  /** Null when healthy, else why the console is degraded (for /readyz). */
  degraded(): string | null;
}
