/**
 * A queued message's final outcome, announced by the queue: `delivered`
 * once every required target of the message has it, `failed` at the first
 * dead letter of a required target — each at most once per message, across
 * targets and restarts. The queue decides when a message is finished (it
 * knows its items); a subscriber such as the DSN notifier only reacts
 * (docs/architecture.md §3.6, §3.7), so any backend that announces this can
 * have delivery status notifications.
 */
import type { GatewayError } from '../core/errors.js';
import type { EmailEvent } from '../message/event.js';
import type { MessageBytes } from '../message/bytes.js';
import type { LocalSpool, SpoolEntry, SpoolMeta } from './spool.js';
import type { S3Spool } from './s3-spool.js';

export type MessageOutcome =
  /** `original` is the message's header block (a success report carries headers only). */
  | { queueId: string; delivered: true; event: EmailEvent; original: Buffer }
  /** `original` is the whole message (RET=FULL returns it, RFC 3461 §4.3). */
  | { queueId: string; delivered: false; event: EmailEvent; original: Buffer; error: GatewayError };

/**
 * Reacts to a message's outcome. For `failed`, true means the report went
 * out, so the queue records that and never sends another for the message.
 */
export type OutcomeListener = (outcome: MessageOutcome) => Promise<boolean>;

/** Enough of a message to hold its header block, for a success report (headers only). */
const HEADER_BYTES = 1024 * 1024;

async function deadOf(spool: LocalSpool, queueId: string): Promise<SpoolEntry[]> {
  const ids = (await spool.ids('dead')).filter((id) => id.startsWith(`${queueId}-`));
  const out: SpoolEntry[] = [];
  for (const id of ids) {
    const e = await spool.entry('dead', id).catch(() => null);
    if (e && e.meta.queueId === queueId) out.push(e);
  }
  return out;
}

/**
 * The local spool's announcement, after one of its items reached its end
 * (delivered, or dead with `error`): whether the message is now finished,
 * and if so, `listener` hears it.
 */
export async function announceLocalOutcome(
  spool: LocalSpool,
  pendingRequired: (queueId: string) => number,
  entry: SpoolEntry,
  delivered: boolean,
  error: GatewayError | undefined,
  content: { message: MessageBytes; eventJson: Buffer } | undefined,
  listener: OutcomeListener,
): Promise<void> {
  if (!entry.meta.required) return;
  const queueId = entry.meta.queueId;
  const eventOf = (json: Buffer) => JSON.parse(json.toString('utf8')) as EmailEvent;
  if (delivered) {
    if (pendingRequired(queueId) > 0) return;
    if ((await deadOf(spool, queueId)).some((e) => e.meta.required)) return;
    if (!content) return;
    await listener({ queueId, delivered: true, event: eventOf(content.eventJson), original: await content.message.readHead(HEADER_BYTES) });
    return;
  }
  if ((await deadOf(spool, queueId)).some((e) => e.state.dsnSent)) return;
  const { message, eventJson } = await spool.content('dead', entry.meta.itemId);
  const sent = await listener({ queueId, delivered: false, event: eventOf(eventJson), original: await message.buffer(), error: error! });
  if (sent) await spool.saveState('dead', entry.meta.itemId, { ...entry.state, dsnSent: true });
}

/**
 * The S3 + SQS backend's announcement, with the same rule as the local
 * spool's, across instances: the message is finished when none of its
 * required items is still waiting in the bucket (a delivered item's objects
 * are deleted before this runs, so of two items finishing at once on two
 * instances at least the later one sees the other gone) and one report per
 * message is claimed in the bucket before it is sent (S3Spool.claimReport).
 */
export async function announceSharedOutcome(
  store: S3Spool,
  meta: SpoolMeta,
  delivered: boolean,
  error: GatewayError | undefined,
  content: { message: MessageBytes; eventJson: Buffer },
  listener: OutcomeListener,
): Promise<void> {
  if (!meta.required) return;
  const { waiting, dead } = await store.siblingsOf(meta.queueId, meta.itemId);
  if (delivered && (waiting.some((m) => m.required) || dead.some((e) => e.meta.required))) return;
  if (!(await store.claimReport(meta.queueId))) return;
  const event = JSON.parse(content.eventJson.toString('utf8')) as EmailEvent;
  const sent = delivered
    ? await listener({ queueId: meta.queueId, delivered: true, event, original: await content.message.readHead(HEADER_BYTES) })
    : await listener({ queueId: meta.queueId, delivered: false, event, original: await content.message.buffer(), error: error! });
  if (!sent) await store.releaseReport(meta.queueId);
}

/** A message still being retried, reported once as `delayed` (RFC 3464 §2.3.3). */
export interface MessageDelay {
  queueId: string;
  event: EmailEvent;
  /** The message's header block (a delay report carries headers only). */
  original: Buffer;
  error: GatewayError;
}

/** Sends the delay report; true when it is sent or being retried (recorded, never asked again). */
export type DelayListener = (delay: MessageDelay) => Promise<boolean>;

/**
 * The local spool's delay announcement for an item that failed again and is
 * old enough (the caller decides): unless another item of the message has
 * already reported it. True means the item records `dsnDelayed`.
 */
export async function announceLocalDelay(
  spool: LocalSpool,
  entry: SpoolEntry,
  error: GatewayError,
  content: { message: MessageBytes; eventJson: Buffer } | undefined,
  listener: DelayListener,
): Promise<boolean> {
  if (!content) return false;
  const queueId = entry.meta.queueId;
  for (const id of await spool.ids('active')) {
    if (id === entry.meta.itemId || !id.startsWith(`${queueId}-`)) continue;
    const other = await spool.entry('active', id).catch(() => null);
    if (other?.state.dsnDelayed) return true;
  }
  const event = JSON.parse(content.eventJson.toString('utf8')) as EmailEvent;
  return listener({ queueId, event, original: await content.message.readHead(HEADER_BYTES), error });
}

/** The S3 + SQS backend's delay announcement: one per message, claimed in the bucket. */
export async function announceSharedDelay(
  store: S3Spool,
  meta: SpoolMeta,
  error: GatewayError,
  content: { message: MessageBytes; eventJson: Buffer },
  listener: DelayListener,
): Promise<void> {
  if (!(await store.claimReport(meta.queueId, 'delayed'))) return;
  const event = JSON.parse(content.eventJson.toString('utf8')) as EmailEvent;
  const sent = await listener({ queueId: meta.queueId, event, original: await content.message.readHead(HEADER_BYTES), error });
  if (!sent) await store.releaseReport(meta.queueId, 'delayed');
}
