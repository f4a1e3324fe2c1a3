/**
 * `postgate queue list|show|retry|replay|purge`: the operator's view of the
 * spool of queued mode. Works on the spool directory directly, so it runs
 * with or without a gateway: a running gateway picks up revived and replayed
 * items within 30 seconds and forgets purged ones.
 */
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config/load.js';
import { parseDuration } from '../config/units.js';
import { LocalSpool, type SpoolArea, type SpoolEntry } from '../queue/spool.js';
import { deliveryId } from '../message/ids.js';

export const QUEUE_HELP = `Usage:
  postgate queue list   [filters] [--json]
  postgate queue show   ITEM
  postgate queue retry  [filters] [--dry-run]             (dead letters back into the queue, due now)
  postgate queue replay --target ID [filters] [--dry-run] (copies to another target id, e.g. staging)
  postgate queue purge  [filters] [--dry-run]

Filters: --status active|dead|all  --route NAME  --target ID  --rcpt ADDRESS
         --since TIME  --until TIME  (TIME: ISO-8601, or a duration ago such as 2h or 3d)
The spool is taken from --config FILE (or POSTGATE_CONFIG), or given with --spool DIR.
`;

interface Filters {
  status: SpoolArea | 'all';
  route?: string | undefined;
  target?: string | undefined;
  rcpt?: string | undefined;
  since?: number | undefined;
  until?: number | undefined;
}

function parseTime(v: string | undefined, now: number): number | undefined | null {
  if (v === undefined) return undefined;
  const ago = parseDuration(v);
  if (ago !== null && !/^\d{4}-/.test(v)) return now - ago;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

function matches(e: SpoolEntry, f: Filters): boolean {
  const received = Date.parse(e.meta.receivedAt);
  if (f.route && e.meta.route !== f.route) return false;
  if (f.target && e.meta.targetId !== f.target) return false;
  if (f.rcpt && !e.meta.rcptTo.some((r) => r.toLowerCase() === f.rcpt!.toLowerCase())) return false;
  if (f.since !== undefined && received < f.since) return false;
  if (f.until !== undefined && received > f.until) return false;
  return true;
}

/** Progress on standard error for long runs, only when it is a terminal. */
function progress(done: number, total: number, verb: string): void {
  if (!process.stderr.isTTY || total < 20) return;
  const width = 30;
  const filled = Math.round((done / total) * width);
  process.stderr.write(`\r${verb} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${done}/${total}${done === total ? '\n' : ''}`);
}

export async function queueCommand(argv: string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        spool: { type: 'string' },
        status: { type: 'string' },
        route: { type: 'string' },
        target: { type: 'string' },
        rcpt: { type: 'string' },
        since: { type: 'string' },
        until: { type: 'string' },
        json: { type: 'boolean' },
        'dry-run': { type: 'boolean' },
      },
    });
  } catch (err) {
    process.stderr.write(`postgate queue: ${(err as Error).message}\n\n${QUEUE_HELP}`);
    return 2;
  }
  const { values: v, positionals } = parsed;
  const sub = positionals[0];
  const usage = (why: string) => {
    process.stderr.write(`postgate queue: ${why}\n\n${QUEUE_HELP}`);
    return 2;
  };
  if (!sub || !['list', 'show', 'retry', 'replay', 'purge'].includes(sub)) return usage(sub ? `unknown subcommand "${sub}"` : 'a subcommand is required');

  let root = v.spool;
  if (!root) {
    try {
      const cfg = await loadConfig({ file: v.config ?? (process.env.POSTGATE_CONFIG || undefined) });
      root = cfg.queue.path!;
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`postgate queue: the configuration is invalid; run "postgate check"\n`);
        return 2;
      }
      throw err;
    }
  }
  const spool = new LocalSpool(root);
  const now = Date.now();
  const since = parseTime(v.since, now);
  const until = parseTime(v.until, now);
  if (since === null || until === null) return usage('--since/--until take an ISO-8601 time or a duration such as 2h');
  const defaultStatus = sub === 'retry' ? 'dead' : 'all';
  const status = (v.status ?? defaultStatus) as Filters['status'];
  if (!['active', 'dead', 'all'].includes(status)) return usage('--status is active, dead or all');
  if (sub === 'retry' && status !== 'dead') return usage('retry works on dead letters; queued items run on their schedule (ETRN starts them at once)');
  const filters: Filters = { status, route: v.route, target: sub === 'replay' ? undefined : v.target, rcpt: v.rcpt, since, until };
  const areas: SpoolArea[] = status === 'all' ? ['active', 'dead'] : [status];
  const select = async () => {
    const found: Array<{ area: SpoolArea; e: SpoolEntry }> = [];
    for (const area of areas) for (const e of await spool.list(area)) if (matches(e, filters)) found.push({ area, e });
    return found;
  };

  switch (sub) {
    case 'list': {
      const items = await select();
      if (v.json) {
        out.write(`${JSON.stringify(items.map(({ area, e }) => ({ status: area, ...e.meta, ...e.state })), null, 2)}\n`);
        return 0;
      }
      out.write(`${['ITEM', 'STATUS', 'RECEIVED', 'ATTEMPTS', 'NEXT', 'TARGET', 'RECIPIENTS', 'LAST ERROR'].join('\t')}\n`);
      for (const { area, e } of items) {
        const last = e.state.history.at(-1);
        out.write(
          `${[
            e.meta.itemId,
            area,
            e.meta.receivedAt,
            e.state.attempts,
            area === 'active' ? new Date(e.state.nextAt).toISOString() : '-',
            e.meta.targetId,
            e.meta.rcptTo.join(','),
            last ? `${last.reply ?? last.code ?? ''} ${e.state.deadReason ?? ''}`.trim() : '-',
          ].join('\t')}\n`,
        );
      }
      process.stderr.write(`${items.length} item(s)\n`);
      return 0;
    }
    case 'show': {
      const id = positionals[1];
      if (!id) return usage('show needs an item id (see "postgate queue list")');
      for (const area of ['active', 'dead'] as const) {
        if (await spool.exists(area, id)) {
          const e = await spool.entry(area, id);
          const { message } = await spool.content(area, id);
          const block = await message.readHead(1024 * 1024);
          const head = block.subarray(0, Math.max(0, block.indexOf('\r\n\r\n'))).toString('latin1');
          out.write(`${JSON.stringify({ status: area, meta: e.meta, state: e.state, size: message.size }, null, 2)}\n\n${head}\n`);
          return 0;
        }
      }
      process.stderr.write(`postgate queue: no item "${id}"\n`);
      return 1;
    }
    case 'retry':
    case 'purge':
    case 'replay': {
      if (sub === 'replay' && !v.target) return usage('replay needs --target ID (the target that gets the copies)');
      const items = await select();
      const verb = sub === 'retry' ? 'retrying' : sub === 'purge' ? 'purging' : 'replaying';
      if (v['dry-run']) {
        for (const { area, e } of items) out.write(`would ${sub} ${e.meta.itemId} (${area}, ${e.meta.targetId})\n`);
        process.stderr.write(`${items.length} item(s) (dry run, nothing changed)\n`);
        return 0;
      }
      let done = 0;
      for (const { area, e } of items) {
        if (sub === 'retry') {
          await spool.revive(e.meta.itemId, now);
        } else if (sub === 'purge') {
          await spool.purge(area, e.meta.itemId);
        } else {
          const { message, eventJson } = await spool.content(area, e.meta.itemId);
          const target = v.target!;
          const meta = {
            ...e.meta,
            itemId: `${e.meta.queueId}-r${now.toString(36)}${done}`,
            targetId: target,
            deliveryId: deliveryId(e.meta.mailFrom, e.meta.rcptTo, e.meta.rawSha256, target),
            spooledAt: new Date(now).toISOString(),
          };
          await spool.put([{ meta, message, eventJson }], now);
        }
        progress(++done, items.length, verb);
      }
      process.stderr.write(`${items.length} item(s) ${sub === 'retry' ? 'due now' : sub === 'purge' ? 'purged' : `copied to ${v.target}`}\n`);
      return 0;
    }
  }
  return 2;
}
