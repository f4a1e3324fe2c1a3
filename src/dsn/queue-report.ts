/**
 * When a queued message is done, decides whether a DSN goes out: a
 * `delivered` report once every required target of the message has it, a
 * `failed` report at the first dead letter of a required target — at most
 * one of each per message, across targets and restarts (the flag is kept in
 * the dead item's state).
 */
import type { GatewayError } from '../core/errors.js';
import type { EmailEvent } from '../message/event.js';
import type { LocalSpool, SpoolEntry } from '../queue/spool.js';
import type { QueueWorker } from '../queue/worker.js';
import type { DsnNotifier } from './notifier.js';
import type { MessageBytes } from '../message/bytes.js';

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

export async function queueReport(
  notifier: DsnNotifier,
  spool: LocalSpool,
  worker: QueueWorker,
  entry: SpoolEntry,
  delivered: boolean,
  error: GatewayError | undefined,
  content: { message: MessageBytes; eventJson: Buffer } | undefined,
): Promise<void> {
  if (!entry.meta.required) return;
  const qid = entry.meta.queueId;
  if (delivered) {
    if (worker.pending((m) => m.queueId === qid && m.required) > 0) return;
    if ((await deadOf(spool, qid)).some((e) => e.meta.required)) return;
    if (!content) return;
    await notifier.delivered(JSON.parse(content.eventJson.toString('utf8')) as EmailEvent, await content.message.readHead(HEADER_BYTES));
    return;
  }
  const dead = await deadOf(spool, qid);
  if (dead.some((e) => e.state.dsnSent)) return;
  const { message, eventJson } = await spool.content('dead', entry.meta.itemId);
  // RET=FULL returns the whole message (RFC 3461 §4.3): read it in for the report.
  const sent = await notifier.failed(JSON.parse(eventJson.toString('utf8')) as EmailEvent, await message.buffer(), error!);
  if (sent) await spool.saveState('dead', entry.meta.itemId, { ...entry.state, dsnSent: true });
}
