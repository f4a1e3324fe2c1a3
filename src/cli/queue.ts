/**
 * `postgate queue list|show|retry|replay|purge`: the operator's view of the
 * spool of queued mode. Works on the stored items directly — the spool
 * directory, or with `queue.backend.type: s3-sqs` the bucket and the queue —
 * so it runs with or without a gateway: a running gateway picks up revived
 * and replayed items within 30 seconds (at once on S3 + SQS) and forgets
 * purged ones. The subcommands are
 * declared here as tables (options, help, run); index.ts parses the command
 * line and prints the help for every command alike.
 */
import type { CommandGroup, LeafCommand, OptionSpecs, RunContext } from './command.js';
import { ConfigError } from '../config/errors.js';
import { parseDuration } from '../config/units.js';
import { LocalSpool, type SpoolArea, type SpoolEntry } from '../queue/spool.js';
import type { S3Spool } from '../queue/s3-spool.js';
import { deliveryId } from '../message/ids.js';

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

/** What each subcommand reads; parsed by the dispatcher in index.ts from the option tables below. */
interface QueueValues {
  config?: string;
  spool?: string;
  status?: string;
  route?: string;
  target?: string;
  rcpt?: string;
  since?: string;
  until?: string;
  json?: boolean;
  'dry-run'?: boolean;
}

type Subcommand = 'list' | 'show' | 'retry' | 'replay' | 'purge';

const SPOOL_OPTIONS: OptionSpecs = {
  config: { type: 'string', short: 'c', value: 'FILE', help: 'the configuration whose queue to work on: queue.path, or the S3 + SQS backend (or POSTGATE_CONFIG)' },
  spool: { type: 'string', value: 'DIR', help: 'the spool directory itself, without a configuration' },
};

const FILTER_OPTIONS: OptionSpecs = {
  status: { type: 'string', value: 'active|dead|all', help: 'queued items, dead letters or both (default: all)' },
  route: { type: 'string', value: 'NAME', help: 'items of this route' },
  target: { type: 'string', value: 'ID', help: 'items for this target id' },
  rcpt: { type: 'string', value: 'ADDRESS', help: 'items with this recipient' },
  since: { type: 'string', value: 'TIME', help: 'received at or after TIME: ISO-8601, or a duration ago such as 2h or 3d' },
  until: { type: 'string', value: 'TIME', help: 'received at or before TIME' },
};

const DRY_RUN: OptionSpecs = { 'dry-run': { type: 'boolean', help: 'print what would be done, change nothing' } };

const subcommand = (name: Subcommand, spec: Omit<LeafCommand, 'run'>): LeafCommand => ({
  ...spec,
  run: (values, args, ctx) => queueCommand(name, values as QueueValues, args, ctx),
});

/** `postgate queue`: the subcommands with their own options and help. */
export const QUEUE_COMMAND: CommandGroup = {
  synopsis: 'queue SUBCOMMAND [options]',
  summary: 'list and manage the spool of queued routes (docs/queue.md)',
  about:
    'Works on the stored items directly, with or without a running gateway: a running\n' +
    'gateway picks up revived and replayed items within 30 seconds and forgets purged ones.\n' +
    'The queue is taken from --config FILE (or POSTGATE_CONFIG): the spool directory, or the\n' +
    'bucket and SQS queue of queue.backend s3-sqs; or given with --spool DIR.',
  subcommands: {
    list: subcommand('list', {
      synopsis: 'queue list [filters] [--json]',
      summary: 'the items, one tab-separated line each',
      options: { ...SPOOL_OPTIONS, ...FILTER_OPTIONS, json: { type: 'boolean', help: 'one JSON array instead of lines' } },
      maxArgs: 0,
    }),
    show: subcommand('show', {
      synopsis: 'queue show ITEM',
      summary: 'one item: its state, attempts and message header',
      options: SPOOL_OPTIONS,
      maxArgs: 1,
    }),
    retry: subcommand('retry', {
      synopsis: 'queue retry [filters] [--dry-run]',
      summary: 'dead letters back into the queue, due now',
      about: 'Queued items run on their schedule (ETRN starts them at once), so retry takes dead letters only.',
      options: { ...SPOOL_OPTIONS, ...FILTER_OPTIONS, status: { type: 'string', value: 'dead', help: 'dead letters (the only choice)' }, ...DRY_RUN },
      maxArgs: 0,
    }),
    replay: subcommand('replay', {
      synopsis: 'queue replay --target ID [filters] [--dry-run]',
      summary: 'copies items to another target id, e.g. staging',
      options: {
        ...SPOOL_OPTIONS,
        ...FILTER_OPTIONS,
        // Here --target names the target that gets the copies, not a filter.
        target: { type: 'string', value: 'ID', help: 'the target id that gets the copies (required)' },
        ...DRY_RUN,
      },
      maxArgs: 0,
    }),
    purge: subcommand('purge', {
      synopsis: 'queue purge [filters] [--dry-run]',
      summary: 'removes items from the spool',
      options: { ...SPOOL_OPTIONS, ...FILTER_OPTIONS, ...DRY_RUN },
      maxArgs: 0,
    }),
  },
};

async function queueCommand(sub: Subcommand, v: QueueValues, positionals: string[], ctx: RunContext): Promise<number> {
  const out = process.stdout;
  const usage = ctx.usage;
  if (sub === 'show' && !positionals[0]) return usage('give the ITEM id (see "postgate queue list")');
  const now = Date.now();
  const since = parseTime(v.since, now);
  const until = parseTime(v.until, now);
  if (since === null || until === null) return usage('--since/--until take an ISO-8601 time or a duration such as 2h');
  const defaultStatus = sub === 'retry' ? 'dead' : 'all';
  const status = (v.status ?? defaultStatus) as Filters['status'];
  if (!['active', 'dead', 'all'].includes(status)) return usage('--status is active, dead or all');
  if (sub === 'retry' && status !== 'dead') return usage('retry works on dead letters; queued items run on their schedule (ETRN starts them at once)');
  if (sub === 'replay' && !v.target) return usage('replay needs --target ID (the target that gets the copies)');
  const filters: Filters = { status, route: v.route, target: sub === 'replay' ? undefined : v.target, rcpt: v.rcpt, since, until };

  // The command line is sound; only now read a configuration for the spool's place.
  let spool: LocalSpool | S3Spool;
  let release = () => {};
  if (v.spool) {
    spool = new LocalSpool(v.spool);
  } else {
    try {
      const { loadConfig } = await import('../config/load.js');
      const cfg = await loadConfig({ file: v.config ?? (process.env.POSTGATE_CONFIG || undefined) });
      const backend = cfg.queue.backend;
      if (backend.type === 's3-sqs') {
        const [{ S3Spool }, { createAwsClients }] = await Promise.all([import('../queue/s3-spool.js'), import('../delivery/aws-clients.js')]);
        const aws = createAwsClients();
        const at = { region: backend.region, endpoint: backend.endpoint };
        spool = new S3Spool({ s3: aws.s3({ ...at, forcePathStyle: backend.forcePathStyle }), sqs: aws.sqs(at), bucket: backend.bucket, prefix: backend.prefix, queueUrl: backend.queueUrl });
        release = () => aws.destroy();
      } else {
        spool = new LocalSpool(cfg.queue.path!);
      }
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`postgate queue: the configuration is invalid; run "postgate check"\n`);
        return 2;
      }
      throw err;
    }
  }
  try {
    return await runOn(spool, sub, v, positionals, filters, status, now);
  } finally {
    release();
  }
}

async function runOn(spool: LocalSpool | S3Spool, sub: Subcommand, v: QueueValues, positionals: string[], filters: Filters, status: Filters['status'], now: number): Promise<number> {
  const out = process.stdout;
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
            // No state yet (S3 + SQS: not tried, or its first attempt is running): due now.
            area === 'active' ? (e.state.nextAt ? new Date(e.state.nextAt).toISOString() : 'now') : '-',
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
      const id = positionals[0]!;
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
          // Its own copy of the message: the original's last item may be removed meanwhile (NewSpoolItem.ownCopy).
          await spool.put([{ meta, message, eventJson, ownCopy: true }], now);
        }
        progress(++done, items.length, verb);
      }
      process.stderr.write(`${items.length} item(s) ${sub === 'retry' ? 'due now' : sub === 'purge' ? 'purged' : `copied to ${v.target}`}\n`);
      return 0;
    }
  }
  return 2;
}
