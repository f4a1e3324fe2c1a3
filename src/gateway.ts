/**
 * buildGateway wires everything from a validated config and injected deps,
 * and never listens; start() listens; stop() drains and closes. The CLI
 * (src/cli) owns signals and the process.
 */
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type net from 'node:net';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { LocalBlobStore } from './blob/local.js';
import { resetSpillDir } from './message/bytes.js';
import { AuthThrottle } from './auth/throttle.js';
import { S3BlobStore } from './blob/s3.js';
import type { BlobSink } from './message/parse.js';
import type http from 'node:http';
import type { SMTPServer } from 'smtp-server';
import type { ResolvedConfig } from './config/load.js';
import { configWarnings } from './config/warnings.js';
import { Holder, restartOnlyChanges } from './config/reload.js';
import type { ConfigSource } from './config/source.js';
import { routingTableOf } from './routing/from-config.js';
import { routeRecipient, urlPlaceholders, type ResolvedTarget, type RoutingTable } from './routing/index.js';
import { RecipientValidator, type ValidateRequest } from './delivery/rcpt-validate.js';
import { LocalSpool, type SpoolMeta } from './queue/spool.js';
import { QueueWorker } from './queue/worker.js';
import { SqsQueue } from './queue/sqs.js';
import type { QueueDeliveryDeps } from './queue/attempt.js';
import type { Queue } from './queue/dispatch.js';
import { etrnReply } from './queue/etrn.js';
import { DsnNotifier } from './dsn/notifier.js';
import { queueReport } from './dsn/queue-report.js';
import { announceLocalDelay, announceLocalOutcome, announceSharedDelay, announceSharedOutcome } from './queue/outcome.js';
import { createAddressMatcher } from './net/cidr.js';
import { queueGauges, scannerGauge } from './ops/metrics.js';
import { clamdScanner, parseSocketAddress, rspamdMilterScanner, rspamdScanner, ScanStep, spamdScanner, type Scanner } from './scan/index.js';
import { CircuitBreakers, createAwsClients, createTarget, DynamoSkipStore, MemorySkipStore, type AwsClientCache, type SkipStore, type Target } from './delivery/index.js';
import { createPoolCache } from './delivery/webhook.js';
import { createLogger, flushLogs, type Logger } from './ops/logger.js';
import { createMetrics, type Metrics } from './ops/metrics.js';
import { createOpsServer } from './ops/http.js';
import { DiskWatch, MemoryBudget } from './ops/shedding.js';
import { installSmtpExtensions, PassCache, sayToEverySession, setDefaultSecureContext, setIdleTimeout, type SmtpPolicy } from './smtp/extensions.js';
import { createSmtpServer, type RouteSet, type SessionContext } from './smtp/session.js';
import { RCPT_REFUSALS, reply, type Reply } from './transaction/replies.js';
import { createListener } from './smtp/listener.js';
import { ClientFilters } from './smtp/client-filters.js';
import { CertificateStore } from './tls/certificates.js';
import type { ScannerConfig, SkipStoreConfig, TargetConfig } from './config/schema.js';
import { parseHostPort, type HostPort } from './config/units.js';
import { attemptEnd, GatewayError } from './core/errors.js';
import { ConsoleService, type ConsoleActions } from './console/store.js';
import { createConsoleServer, type ConsolePages } from './console/http.js';
import { createConsolePages } from './console/ui/index.js';
import type { ActionResult, ConsoleStore } from './console/types.js';
import type { S3Spool } from './queue/s3-spool.js';
import { MessageBytes } from './message/bytes.js';
import { deliveryId } from './message/ids.js';
import { claimCheckOnce } from './delivery/claim-check.js';
import { deliverToTargets } from './delivery/index.js';
import type { EmailEvent } from './message/event.js';

/** How often the local blob store removes blobs whose links expired. */
const BLOB_SWEEP_INTERVAL_MS = 3_600_000;
/** How often console retention runs (it also runs at start). */
const CONSOLE_SWEEP_INTERVAL_MS = 600_000;

export interface GatewayDeps {
  logger?: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** DNS resolver for sender authentication (tests serve fixture records). */
  dnsResolver?: (name: string, rrtype: string) => Promise<unknown>;
  /** Free-disk probe (tests inject a low value to exercise shedding). */
  diskProbe?: (dir: string) => Promise<number>;
  /** AWS SDK clients for the lambda and s3 targets and the DynamoDB skip-store; default: made here, destroyed by stop(). */
  aws?: AwsClientCache;
  /**
   * Where newer versions of the configuration come from (S3 or SSM,
   * config/source.ts): asked every reload.interval from start() to stop(),
   * its routes applied by reloadRoutes. Closed by stop().
   */
  configSource?: ConfigSource;
  /** The console's web pages; default: src/console/ui/. null serves the API only. */
  consolePages?: ConsolePages | null;
  /** Where the console keeps its index (tests point it somewhere unusable to check the degraded path). */
  consoleDir?: string;
}

export interface BoundAddress {
  name: string;
  role: string;
  host: string;
  port: number;
}

export interface Gateway {
  readonly config: ResolvedConfig;
  readonly logger: Logger;
  readonly metrics: Metrics;
  start(): Promise<void>;
  /** Drain (new connections 421, in-flight transactions finish up to shutdown.grace), then close. */
  stop(): Promise<void>;
  /** Addresses actually bound (port 0 resolved), valid after start(). */
  addresses(): BoundAddress[];
  opsAddress(): { host: string; port: number } | null;
  /** The console's address, valid after start(); null when the console is off. */
  consoleAddress(): { host: string; port: number } | null;
  /** The console's store (null when the console is off). */
  readonly console: (ConsoleStore & { check(): string[]; sweep(): Promise<number>; flush(): void }) | null;
  readiness(): { ready: boolean; reasons: string[]; degraded?: string[] };
  readonly draining: boolean;
  /**
   * Applies the routing table and targets of a newer configuration (already
   * validated) to transactions that start from now on; those in progress keep
   * theirs. Other changed settings are logged as needing a restart. Throws a
   * GatewayError (PG_CONFIG_RELOAD) and changes nothing when the routes
   * cannot run in this gateway as built (a queued route without a queue).
   */
  reloadRoutes(next: ResolvedConfig): { restartNeeded: string[] };
  /** The configuration whose routes are in force. */
  readonly routesConfig: ResolvedConfig;
}

/** The routing table of a resolved config (also used by `postgate route`). */
export { routingTableOf };

export async function buildGateway(cfg: ResolvedConfig, deps: GatewayDeps = {}): Promise<Gateway> {
  installSmtpExtensions();
  const logger = deps.logger ?? createLogger(cfg.logging.level);
  const metrics = deps.metrics ?? createMetrics();
  const now = deps.now ?? Date.now;
  const pools = createPoolCache();
  // One AWS client per (service, region, endpoint), shared by targets and the skip-store.
  const aws = deps.aws ?? createAwsClients();
  const targetDeps = { pool: pools.pool, now, aws };

  // One Target instance per distinct target id, shared by routes and by
  // the generations of routes a configuration reload makes: a target whose
  // settings are unchanged keeps its instance (its pool, its breaker state).
  const targets = new Map<string, Target>();
  const targetSpecs = new Map<string, string>();
  /** Instances a reload replaced: a transaction may still hold them, so they close at stop. */
  const retired: Target[] = [];
  const materialize = (list: readonly TargetConfig[]) => {
    for (const t of list) {
      // A templated URL gets its instances per resolved URL (targetFor).
      if (t.type === 'webhook' && urlPlaceholders(t.url).length) continue;
      const spec = JSON.stringify(t);
      if (targetSpecs.get(t.id!) === spec) continue;
      const old = targets.get(t.id!);
      if (old) retired.push(old);
      targets.set(t.id!, createTarget(t, { ...targetDeps, denyPrivate: cfg.delivery.denyPrivateAddresses === 'always' }));
      targetSpecs.set(t.id!, spec);
    }
  };
  // Instances for resolved template URLs, created on demand. Bounded: the
  // URLs come from recipient addresses. Pools are per origin, which a
  // template cannot change, so an evicted instance costs nothing to recreate.
  const resolvedTargets = new Map<string, Target>();
  const MAX_RESOLVED_TARGETS = 1000;
  const validator = new RecipientValidator({ pool: pools.pool, now });
  /** The routing table and targets of a configuration: what a reload swaps (config/reload.ts). */
  const routeSetOf = (rc: ResolvedConfig): RouteSet => {
    for (const r of rc.routes) {
      materialize(r.targets);
      if (r.scan?.quarantine) materialize(r.scan.quarantine);
    }
    materialize(rc.postmasterTargets);
    const specs = new Map<string, string>(targetSpecs);
    const own = new Map<string, Target>(targets);
    return {
      cfg: rc,
      routing: routingTableOf(rc),
      routeModes: new Map(rc.routes.map((r) => [r.name!, r.mode])),
      targetFor: (r: ResolvedTarget<TargetConfig & { id: string }>): Target => {
        if (!r.templated) return own.get(r.id)!;
        // Keyed by the spec as well: a reload that changes a template's settings gets fresh instances.
        const key = `${r.id}|${specs.get(r.id) ?? JSON.stringify(r.spec)}`;
        let inst = resolvedTargets.get(key);
        if (inst) {
          resolvedTargets.delete(key); // most recently used last
        } else {
          inst = createTarget({ ...r.spec, id: r.id, url: r.url! } as TargetConfig, { ...targetDeps, denyPrivate: cfg.delivery.denyPrivateAddresses !== 'never' });
          if (resolvedTargets.size >= MAX_RESOLVED_TARGETS) {
            const oldest = resolvedTargets.keys().next().value!;
            void resolvedTargets.get(oldest)!.close().catch(() => undefined);
            resolvedTargets.delete(oldest);
          }
        }
        resolvedTargets.set(key, inst);
        return inst;
      },
      validateRecipient: async (routes: readonly { index: number }[], req: ValidateRequest): Promise<boolean> => {
        const hooks = routes.map((r) => rc.routes[r.index]?.validate).filter((v) => v !== undefined);
        const answers = await Promise.all(hooks.map((v) => validator.check(v, req)));
        return answers.every(Boolean);
      },
    };
  };
  const routeSets = new Holder<RouteSet>(routeSetOf(cfg));

  await mkdir(cfg.storage.path, { recursive: true });
  const certs = cfg.tls
    ? await CertificateStore.load({
        certificates: cfg.tls.certificates,
        minVersion: cfg.tls.minVersion,
        watch: cfg.tls.watch,
        watchIntervalMs: cfg.tls.watchInterval,
        sourceIntervalMs: cfg.tls.sourceInterval,
        logger,
      })
    : null;

  let draining = false;
  let inflight = 0;
  let idle: (() => void) | null = null;
  const memory = new MemoryBudget(cfg.limits.memoryBudget);
  const disk = new DiskWatch(cfg.storage.path, cfg.limits.minFreeDisk, now, 1000, deps.diskProbe);
  const skip = createSkipStore(cfg.delivery.skipStore, now, aws);
  const breakers = new CircuitBreakers(cfg.delivery.breaker.failures, cfg.delivery.breaker.cooldown, now);
  let diskLow = false;
  const scan = cfg.scan.scanners.length ? buildScanStep(cfg, logger, metrics, now) : null;

  const passCache = new PassCache(cfg.smtp.earlyTalker.passTtl, now);
  const policy: SmtpPolicy = {
    earlyTalker: {
      mode: cfg.smtp.earlyTalker.mode,
      delayMs: cfg.smtp.earlyTalker.delay,
      passed: (a) => passCache.passed(a),
      pass: (a) => passCache.pass(a),
    },
    dsn: Boolean(cfg.dsn),
    etrn: null,
    vrfy:
      cfg.smtp.vrfy === 'routes'
        ? (address) => {
            // RFC 5321 §3.5.3: 250 names a deliverable mailbox; otherwise RCPT's own refusal.
            const d = routeRecipient(routeSets.current().routing, address);
            if (d.kind === 'accept') return reply('PG_VRFY_DELIVERABLE', { address });
            return reply(RCPT_REFUSALS[d.kind], { address });
          }
        : null,
    onEarlyTalker: (client) => {
      metrics.shed.inc({ reason: 'early_talker' });
      logger.warn({ client, code: 'PG_EARLY_TALKER' }, 'client talked before the greeting, refused with 554');
    },
  };

  // Connections across all listeners, and per client address (after PROXY).
  const perIp = new Map<string, number>();
  let activeConnections = 0;
  let busy = false;
  const setBusy = () => {
    // RFC 5321 §4.5.3.2 timeouts are what a server should allow; under load
    // (80% of maxClients) idle sessions are cut sooner to make room.
    const nowBusy = activeConnections > cfg.smtp.maxClients * 0.8;
    if (nowBusy === busy) return;
    busy = nowBusy;
    for (const smtp of smtpServers) setIdleTimeout(smtp, busy ? cfg.smtp.busySocketTimeout : cfg.smtp.socketTimeout);
    logger.info({ activeConnections, socketTimeout: busy ? cfg.smtp.busySocketTimeout : cfg.smtp.socketTimeout }, busy ? 'busy: idle timeout lowered' : 'load normal: idle timeout restored');
  };
  const admission = {
    admit(address: string): Reply | null {
      if (activeConnections >= cfg.smtp.maxClients) return reply('PG_TOO_MANY_CONNECTIONS', { hostname: cfg.hostname });
      if ((perIp.get(address) ?? 0) >= cfg.smtp.maxConnectionsPerIp) return reply('PG_TOO_MANY_CONNECTIONS_FROM_ADDRESS', { hostname: cfg.hostname });
      activeConnections++;
      perIp.set(address, (perIp.get(address) ?? 0) + 1);
      setBusy();
      return null;
    },
    release(address: string): void {
      activeConnections--;
      const n = (perIp.get(address) ?? 1) - 1;
      if (n <= 0) perIp.delete(address);
      else perIp.set(address, n);
      setBusy();
    },
  };

  // smtp.clients.deny and smtp.dnsbl (docs/blocklists.md), shared by the listeners and sessions.
  const filters =
    cfg.smtp.clients.deny.length || cfg.smtp.dnsbl.length
      ? new ClientFilters({ hostname: cfg.hostname, deny: cfg.smtp.clients.deny, dnsbl: cfg.smtp.dnsbl, logger, metrics, now })
      : null;

  // The message console (docs/console.md): recorded off the 250's path; a
  // console that cannot open its index leaves mail flowing and /readyz degraded.
  const consoleSvc = cfg.console
    ? new ConsoleService({
        dir: deps.consoleDir ?? cfg.console.path ?? path.join(cfg.storage.path, 'console'),
        retention: cfg.console.retention,
        sweepIntervalMs: CONSOLE_SWEEP_INTERVAL_MS,
        now,
        logger: logger.child({ component: 'console' }),
      })
    : null;

  const closers = new Map<string, () => void>();
  const sessionCtx: SessionContext = {
    blobs: null,
    spillDir: path.join(cfg.storage.path, 'incoming'),
    authThrottle: new AuthThrottle({
      maxFailures: cfg.auth?.maxFailures ?? 5,
      windowMs: cfg.auth?.failureWindow ?? 15 * 60_000,
      delayMs: cfg.auth?.failureDelay ?? 500,
      maxDelayMs: 5000,
      now,
    }),
    dnsResolver: deps.dnsResolver,
    filters,
    sessionClosed: (id: string) => {
      const fn = closers.get(id);
      if (fn) {
        closers.delete(id);
        fn();
      }
    },
    policy,
    cfg,
    logger,
    metrics,
    routes: routeSets,
    memory,
    disk,
    skip,
    breakers,
    scan,
    queue: null,
    dsn: null,
    console: consoleSvc,
    now,
    isDraining: () => draining,
    transactionStarted: () => {
      inflight++;
    },
    transactionEnded: () => {
      inflight--;
      if (inflight === 0 && idle) idle();
    },
  };

  const smtpServers: SMTPServer[] = [];
  const netServers: { server: net.Server; name: string; role: string }[] = [];
  for (const l of cfg.resolvedListeners) {
    const smtp = createSmtpServer(l, sessionCtx, certs ? { sniCallback: certs.sniCallback } : null);
    if (certs) setDefaultSecureContext(smtp, certs.defaultContext);
    smtpServers.push(smtp);
    const server = createListener(l, smtp, {
      logger,
      metrics,
      certs,
      hostname: cfg.hostname,
      isDraining: () => draining,
      handshakeTimeoutMs: 30_000,
      admission,
      onSessionClose: (id, fn) => closers.set(id, fn),
      filters,
    });
    netServers.push({ server, name: l.name, role: l.role });
  }
  // A renewed certificate also becomes the default for STARTTLS without SNI.
  certs?.on('reload', () => {
    for (const smtp of smtpServers) setDefaultSecureContext(smtp, certs.defaultContext);
    metrics.tlsReloads.inc({ result: 'reloaded' });
  });
  certs?.on('reloadError', () => metrics.tlsReloads.inc({ result: 'failed' }));

  const readiness = () => {
    const reasons: string[] = [];
    if (draining) reasons.push('draining');
    if (memory.exhausted) reasons.push('memory budget exhausted');
    if (diskLow) reasons.push('free disk under the floor');
    if (queue && queue.worker.pending() >= queue.maxItems) reasons.push('spool full');
    // A scanner down defers the mail of every route that tempfails on it, so
    // it is a reason under tempfail; under accept mail still flows: degraded.
    const degraded: string[] = [];
    for (const id of scan?.down() ?? []) (cfg.scan.onError === 'tempfail' ? reasons : degraded).push(`scanner ${id} down`);
    const consoleProblem = consoleSvc?.degraded();
    if (consoleProblem) degraded.push(`console: ${consoleProblem}`);
    return { ready: reasons.length === 0, reasons, ...(degraded.length ? { degraded } : {}) };
  };
  // Readiness is read synchronously; refresh the disk state in the background.
  const diskTimer = setInterval(() => {
    disk.low().then(
      (low) => (diskLow = low),
      () => undefined,
    );
  }, 1000);
  diskTimer.unref();
  diskLow = await disk.low();

  let ops: http.Server | null = null;
  // Claim check needs somewhere to serve links from: the HTTP endpoint.
  const blobStore = cfg.blobs.store;
  const blobs: BlobSink | null =
    blobStore.type === 's3'
      ? new S3BlobStore({
          client: aws.s3({ region: blobStore.region, endpoint: blobStore.endpoint, forcePathStyle: blobStore.forcePathStyle }),
          bucket: blobStore.bucket,
          prefix: blobStore.prefix,
          ttlMs: cfg.blobs.ttl,
          now,
        })
      : cfg.http !== false
      ? new LocalBlobStore({
          dir: path.join(cfg.storage.path, 'blobs'),
          publicUrl: () => {
            if (cfg.blobs.publicUrl) return cfg.blobs.publicUrl.replace(/\/$/, '');
            const a = ops?.address() as net.AddressInfo | null | undefined;
            if (!a) return 'http://127.0.0.1';
            const host = a.address === '::' || a.address === '0.0.0.0' ? cfg.hostname : a.address.includes(':') ? `[${a.address}]` : a.address;
            return `http://${host}:${a.port}`;
          },
          signingKey: cfg.blobs.signingKey ? Buffer.from(cfg.blobs.signingKey, 'utf8') : randomBytes(32),
          ttlMs: cfg.blobs.ttl,
          now,
        })
      : null;
  sessionCtx.blobs = blobs;
  await resetSpillDir(sessionCtx.spillDir);
  // The local store deletes what no link can reach any more (S3: use a
  // lifecycle rule on the bucket, docs/configuration.md).
  let blobSweepTimer: NodeJS.Timeout | null = null;
  if (blobs instanceof LocalBlobStore) {
    const store = blobs;
    const sweep = () =>
      store.sweep().then(
        (r) => r.removed > 0 && logger.info({ removed: r.removed, bytes: r.bytes }, 'expired blobs removed'),
        (err: unknown) => logger.warn({ err: (err as Error).message }, 'blob sweep failed'),
      );
    void sweep();
    blobSweepTimer = setInterval(sweep, BLOB_SWEEP_INTERVAL_MS);
    blobSweepTimer.unref();
  }

  const notifier = cfg.dsn
    ? new DsnNotifier({
        relay: { ...cfg.dsn.relay, ca: cfg.dsn.relay.ca ? readFileSync(cfg.dsn.relay.ca) : undefined },
        from: cfg.dsn.from ?? `Mail Delivery System <MAILER-DAEMON@${cfg.hostname}>`,
        reportingMta: cfg.hostname,
        logger: logger.child({ component: 'dsn' }),
        now,
        retryDelaysMs: Array.from({ length: cfg.dsn.retry.attempts - 1 }, (_, i) => cfg.dsn!.retry.initialDelay * 2 ** i),
      })
    : null;
  // A queued message older than dsn.delayedAfter that failed again: one "delayed" report.
  const dueForDelayReport = (meta: SpoolMeta): boolean =>
    Boolean(cfg.dsn && cfg.dsn.delayedAfter > 0 && meta.required && now() - Date.parse(meta.receivedAt) >= cfg.dsn.delayedAfter);
  const willRetryUntil = (meta: SpoolMeta) => new Date(Date.parse(meta.receivedAt) + cfg.queue.retry.maxAge);
  sessionCtx.dsn = notifier;

  // Queued routes: the spool is recovered (half-written items dropped, whole
  // ones scheduled) before any listener accepts mail.
  let queue: Queue | null = null;
  const queuePolicy = {
    initialDelayMs: cfg.queue.retry.initialDelay,
    maxDelayMs: cfg.queue.retry.maxDelay,
    maxAgeMs: cfg.queue.retry.maxAge,
    concurrency: cfg.queue.concurrency,
  };
  const queueDeps: QueueDeliveryDeps = {
    target: (id) => targets.get(id),
    skip,
    blobs,
    now,
    logger: logger.child({ component: 'queue' }),
    deadlineMs: cfg.delivery.deadline,
    policy: queuePolicy,
    onAttempt: (meta, outcome, detail) => {
      metrics.queueAttempts.inc({ outcome });
      if (!consoleSvc) return;
      const error = detail?.error ?? null;
      consoleSvc.attempt(
        meta.queueId,
        {
          at: new Date(now()).toISOString(),
          target: meta.targetId,
          kind: targets.get(meta.targetId)?.type ?? 'unknown',
          // Items copied by a replay carry "-r" in their id (cli/queue.ts, replayItem below).
          via: meta.itemId.includes('-r') ? 'replay' : retried.delete(meta.itemId) ? 'retry' : 'queue',
          outcome: outcome === 'delivered' ? 'delivered' : outcome === 'retry' ? 'deferred' : 'failed',
          latencyMs: Math.round(detail?.ms ?? 0),
          ...attemptEnd(detail?.httpStatus ?? error?.httpStatus, error),
        },
        outcome === 'delivered' ? 'delivered' : outcome === 'retry' ? 'deferred' : 'dead',
        meta.required,
      );
    },
  };
  /** Items the console sent again, so their next attempt shows as a retry. */
  const retried = new Set<string>();
  /** The spool as `postgate queue` sees it, for the console's actions. */
  let adminSpool: LocalSpool | S3Spool | null = null;
  let localWorker: QueueWorker | null = null;
  const backend = cfg.queue.backend;
  if (cfg.routes.some((r) => r.mode !== 'sync') && backend.type === 's3-sqs') {
    // Several instances share the queue: items in S3, work items in SQS.
    const at = { region: backend.region, endpoint: backend.endpoint };
    const sqsQueue = new SqsQueue({
      s3: aws.s3({ ...at, forcePathStyle: backend.forcePathStyle }),
      sqs: aws.sqs(at),
      bucket: backend.bucket,
      prefix: backend.prefix,
      queueUrl: backend.queueUrl,
      pollWaitS: Math.min(20, Math.round(backend.pollWait / 1000)),
      rescanMs: cfg.queue.rescanInterval,
      onFinal: notifier ? (store, meta, delivered, error, content) => announceSharedOutcome(store, meta, delivered, error, content, (o) => queueReport(notifier, o)) : undefined,
      onRetry: notifier
        ? async (store, meta, error, content) => {
            if (dueForDelayReport(meta)) await announceSharedDelay(store, meta, error, content, (d) => notifier.delayed(d.event, d.original, d.error, willRetryUntil(meta)));
          }
        : undefined,
      ...queueDeps,
    });
    await sqsQueue.start();
    adminSpool = sqsQueue.store;
    queue = { spool: sqsQueue, worker: sqsQueue, maxItems: cfg.queue.maxItems };
    sessionCtx.queue = queue;
    const etrnClients = createAddressMatcher(cfg.queue.etrn.allowed);
    policy.etrn = (node, client) => etrnReply(node, etrnClients.matches(client), sqsQueue);
    for (const g of queueGauges(sqsQueue)) metrics.registry.registerMetric(g);
  } else if (cfg.routes.some((r) => r.mode !== 'sync')) {
    const spool = new LocalSpool(cfg.queue.path!);
    const worker: QueueWorker = new QueueWorker({
      ...queueDeps,
      spool,
      rescanMs: cfg.queue.rescanInterval,
      onFinal: notifier
        ? (entry, delivered, error, content) =>
            announceLocalOutcome(spool, (qid) => worker.pending((m) => m.queueId === qid && m.required), entry, delivered, error, content, (o) => queueReport(notifier, o))
        : undefined,
      onRetry: notifier
        ? async (entry, error, content) =>
            dueForDelayReport(entry.meta) && (await announceLocalDelay(spool, entry, error, content, (d) => notifier.delayed(d.event, d.original, d.error, willRetryUntil(entry.meta))))
        : undefined,
    });
    const { recovered, discarded } = await worker.start();
    if (recovered || discarded) logger.info({ recovered, discarded, spool: spool.root }, 'spool recovered');
    queue = { spool, worker, maxItems: cfg.queue.maxItems };
    adminSpool = spool;
    localWorker = worker;
    sessionCtx.queue = queue;
    const etrnClients = createAddressMatcher(cfg.queue.etrn.allowed);
    policy.etrn = (node, client) => etrnReply(node, etrnClients.matches(client), worker);
    for (const g of queueGauges(worker)) metrics.registry.registerMetric(g);
  }
  if (scan) metrics.registry.registerMetric(scannerGauge(() => scan.scanners.map((x) => ({ id: x.id, down: scan.down().includes(x.id) }))));
  if (cfg.http !== false) ops = createOpsServer(metrics.registry, { readiness }, blobs instanceof LocalBlobStore ? blobs : undefined);

  // The console's buttons: the same operations as `postgate queue retry` and
  // `replay` (cli/queue.ts), on this gateway's spool and worker.
  let replays = 0;
  const consoleActions: ConsoleActions = {
    async retry(id) {
      const q = queue;
      const spool = adminSpool;
      if (!q || !spool) return { ok: false, code: 'PG_CONSOLE_NO_QUEUE', message: 'no queued route: a synchronous delivery is retried by its sender' };
      const mine = (m: SpoolMeta) => m.queueId === id;
      let revived = 0;
      for (const e of await spool.list('dead')) {
        if (!mine(e.meta)) continue;
        await spool.revive(e.meta.itemId, now());
        retried.add(e.meta.itemId);
        revived++;
      }
      if (localWorker && revived) await localWorker.rescan();
      const flushed = q.worker.flush(mine, '') ?? 0;
      const n = Math.max(revived, flushed);
      if (n === 0) return { ok: false, code: 'PG_CONSOLE_NOTHING_TO_RETRY', message: 'nothing of this message is waiting in the queue or dead' };
      return { ok: true, message: `${n} queued item(s) of ${id} due now` };
    },
    async replay(id, target, rec, copy): Promise<ActionResult> {
      const t = targets.get(target);
      if (!t) return { ok: false, code: 'PG_CONSOLE_BAD_REQUEST', message: `no target "${target}" is configured` };
      const at = now();
      const rcptTo = rec.s.rcptTo;
      // Same delivery id as `postgate queue replay`: the message's envelope,
      // its hash as received and the new target (docs/architecture.md §2.5).
      const did = deliveryId(rec.s.mailFrom, rcptTo, rec.sha, target);
      if (queue) {
        const meta: SpoolMeta = {
          itemId: `${id}-r${at.toString(36)}${replays++}`,
          queueId: id,
          deliveryId: did,
          targetId: target,
          required: false,
          route: rec.s.route ?? '',
          mailFrom: rec.s.mailFrom,
          rcptTo: [...rcptTo],
          rawSha256: rec.sha,
          receivedAt: rec.s.receivedAt,
          spooledAt: new Date(at).toISOString(),
        };
        // Its own copy of the message, as `postgate queue replay` stores it (NewSpoolItem.ownCopy).
        await queue.spool.put([{ meta, message: copy.message, eventJson: copy.eventJson, ownCopy: true }], at);
        queue.worker.add([{ meta, state: { attempts: 0, nextAt: at, history: [] } }]);
        return { ok: true, message: `${id} queued for ${target} (delivery id ${did})` };
      }
      // No spool: one attempt now, under the delivery deadline.
      const started = now();
      const outcome = await deliverToTargets(
        [
          {
            target: t,
            msg: {
              queueId: id,
              mailFrom: rec.s.mailFrom,
              rcptTo,
              receivedAt: new Date(rec.s.receivedAt),
              message: copy.message,
              rawSha256: rec.sha,
              event: JSON.parse(copy.eventJson.toString('utf8')) as EmailEvent,
              eventJson: copy.eventJson,
              claimCheck: claimCheckOnce(copy.eventJson, blobs),
            },
          },
        ],
        { deadlineMs: cfg.delivery.deadline, skip, now, retry: false },
      );
      const o = outcome.targets[0];
      const error = outcome.error ?? null;
      consoleSvc?.attempt(
        id,
        {
          at: new Date(now()).toISOString(),
          target,
          kind: t.type,
          via: 'replay',
          outcome: o?.skipped ? 'skipped' : outcome.ok ? 'delivered' : error?.transient === false ? 'failed' : 'deferred',
          latencyMs: Math.round(now() - started),
          ...attemptEnd(o?.httpStatus, error),
        },
        o?.skipped ? 'skipped' : outcome.ok ? 'delivered' : error?.transient === false ? 'dead' : 'deferred',
      );
      return outcome.ok
        ? { ok: true, message: o?.skipped ? `${target} already has ${id} (delivery id ${did})` : `${id} delivered to ${target}` }
        : { ok: false, code: error?.code ?? 'PG_DELIVERY_FAILED', message: `${target}: ${error?.message ?? 'not delivered'}` };
    },
  };
  if (consoleSvc) consoleSvc.actions = consoleActions;
  const consoleServer =
    consoleSvc && cfg.console
      ? createConsoleServer({
          store: consoleSvc,
          // The web pages unless the caller says otherwise (null: the API only).
          pages: deps.consolePages === undefined ? createConsolePages() : deps.consolePages,
          auth: cfg.console.auth ?? null,
          allowedHosts: cfg.console.allowedHosts,
          logger: logger.child({ component: 'console' }),
          now,
        })
      : null;

  const listenOne = async (server: net.Server | http.Server, { host, port }: HostPort) => {
    const hostPort = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.off('listening', onListening);
        reject(
          new GatewayError({
            code: 'PG_LISTEN',
            message: `cannot listen on ${hostPort}: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)' : err.message}`,
            transient: false,
            cause: err,
          }),
        );
      };
      const onListening = () => {
        server.off('error', onError);
        resolve();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({ host, port });
    });
  };

  let started = false;
  // A configuration kept in S3 or SSM (config/source.ts): asked every
  // reload.interval; a version that fails leaves the routes in force and
  // readiness as it is (docs/operations.md, "Configuration reload").
  let configTimer: NodeJS.Timeout | undefined;
  let configPolling = false;
  const pollConfig = (source: ConfigSource) => {
    configTimer = setInterval(() => {
      if (configPolling || draining) return;
      configPolling = true;
      source
        .next()
        .then((next) => {
          if (!next || draining) return;
          gw.reloadRoutes(next);
          metrics.configReloads.inc({ result: 'reloaded' });
        })
        .catch((err: unknown) => {
          metrics.configReloads.inc({ result: 'failed' });
          logger.error({ err, source: source.where, code: 'PG_CONFIG_RELOAD' }, 'configuration reload failed; the configuration in force stays');
        })
        .finally(() => (configPolling = false));
    }, cfg.reload.interval);
    configTimer.unref();
  };

  const gw: Gateway = {
    config: cfg,
    logger,
    metrics,
    get draining() {
      return draining;
    },
    readiness,
    get routesConfig() {
      return routeSets.current().cfg;
    },
    reloadRoutes(next: ResolvedConfig) {
      // A queued route needs the spool and worker built at start.
      if (!queue && next.routes.some((r) => r.mode !== 'sync')) {
        throw new GatewayError({
          code: 'PG_CONFIG_RELOAD',
          message: 'a queue or sync-then-queue route needs the queue, which this gateway did not start (no queued route at start): restart to apply',
          transient: false,
        });
      }
      const restartNeeded = restartOnlyChanges(routeSets.current().cfg, next);
      routeSets.swap(routeSetOf(next));
      logger.info({ routes: next.routes.length, domains: next.servedDomains, generation: routeSets.generation }, 'routes reloaded');
      if (restartNeeded.length) logger.warn({ keys: restartNeeded }, 'configuration changed outside routes, postmaster and domains: those changes apply at the next restart');
      return { restartNeeded };
    },
    async start() {
      if (started) return;
      started = true;
      if (deps.configSource) pollConfig(deps.configSource);
      // Once per gateway, before listening: the same lines `postgate check` prints.
      for (const w of configWarnings(cfg)) logger.warn({ path: w.path }, w.message);
      for (const [i, l] of cfg.resolvedListeners.entries()) {
        await listenOne(netServers[i]!.server, l);
      }
      // validated by the schema
      if (ops && cfg.http !== false) await listenOne(ops, parseHostPort(cfg.http.listen)!);
      if (consoleServer && cfg.console) {
        await listenOne(consoleServer, parseHostPort(cfg.console.listen)!);
        consoleSvc!.start();
      }
      logger.info(
        {
          listeners: gw.addresses().map((a) => `${a.name}(${a.role})=${a.host}:${a.port}`),
          ops: gw.opsAddress(),
          ...(consoleServer ? { console: gw.consoleAddress() } : {}),
          domains: cfg.servedDomains,
          storage: cfg.storage.path,
        },
        'postgate listening',
      );
      flushLogs(logger);
    },
    addresses() {
      return netServers.map(({ server, name, role }) => {
        const a = server.address() as net.AddressInfo;
        return { name, role, host: a.address, port: a.port };
      });
    },
    opsAddress() {
      const a = ops?.address() as net.AddressInfo | null | undefined;
      return a ? { host: a.address, port: a.port } : null;
    },
    consoleAddress() {
      const a = consoleServer?.address() as net.AddressInfo | null | undefined;
      return a ? { host: a.address, port: a.port } : null;
    },
    console: consoleSvc,
    async stop() {
      if (draining) return;
      draining = true;
      logger.info({ inflight }, 'draining: new connections get 421, in-flight transactions may finish');
      if (inflight > 0) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, cfg.shutdown.grace);
          t.unref();
          idle = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      // Idle sessions (and any transaction past the grace period, whose
      // sender has no 250 and so still holds the message) get 421 and close.
      const bye = reply('PG_SHUTTING_DOWN', { hostname: cfg.hostname });
      for (const smtp of smtpServers) sayToEverySession(smtp, bye.code, bye.lines[0]!);
      await Promise.all(
        netServers.map(({ server }) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))),
      );
      if (ops) {
        const o = ops;
        o.closeAllConnections?.();
        await new Promise<void>((resolve) => (o.listening ? o.close(() => resolve()) : resolve()));
      }
      if (consoleServer) {
        const c = consoleServer;
        c.closeAllConnections?.();
        await new Promise<void>((resolve) => (c.listening ? c.close(() => resolve()) : resolve()));
      }
      clearInterval(diskTimer);
      if (blobSweepTimer) clearInterval(blobSweepTimer);
      certs?.close();
      if (configTimer) clearInterval(configTimer);
      deps.configSource?.close();
      await queue?.worker.stop();
      notifier?.close();
      await Promise.all([...targets.values(), ...resolvedTargets.values(), ...retired].map((t) => t.close()));
      await pools.close();
      await Promise.all((scan?.scanners ?? []).map((x) => x.close()));
      await skip.close();
      // After the worker: its last attempts are recorded too.
      await consoleSvc?.close();
      if (!deps.aws) aws.destroy();
      logger.info({ inflightLeft: inflight }, 'stopped');
      flushLogs(logger);
    },
  };
  return gw;
}

/** The skip-store the config asks for (delivery.skipStore). */
export function createSkipStore(cfg: SkipStoreConfig, now: () => number, aws?: AwsClientCache): SkipStore {
  switch (cfg.type) {
    case 'memory':
      return new MemorySkipStore(now, 100_000, cfg.ttl);
    case 'dynamodb':
      return new DynamoSkipStore({ table: cfg.table, region: cfg.region, endpoint: cfg.endpoint, ttl: cfg.ttl, timeout: cfg.timeout, now }, aws);
  }
}

/** A scanner client for its configuration (scan.scanners[]). */
export function createScanner(c: ScannerConfig): Scanner {
  const id = c.id ?? c.type;
  switch (c.type) {
    case 'rspamd':
      return c.protocol === 'milter'
        ? rspamdMilterScanner({ id, to: parseSocketAddress(c.address ?? '127.0.0.1:11332'), connections: c.connections })
        : rspamdScanner({ id, url: c.url, socket: c.socket, password: c.password });
    case 'spamassassin':
      return spamdScanner({ id, address: c.address, user: c.user });
    case 'clamav':
      return clamdScanner({ id, address: c.address });
  }
}

/** The scan step (docs/scanning.md): its clients, its own circuit breakers, metrics and log lines. */
function buildScanStep(cfg: ResolvedConfig, logger: Logger, metrics: Metrics, now: () => number): ScanStep {
  const breaker = new CircuitBreakers(cfg.scan.breaker.failures, cfg.scan.breaker.cooldown, now);
  return new ScanStep({
    scanners: cfg.scan.scanners.map((c) => ({ scanner: createScanner(c), timeoutMs: c.timeout })),
    breaker,
    header: cfg.scan.header,
    now,
    onScanner(s, outcome, ms) {
      metrics.scanVerdicts.inc({ scanner: s.id, verdict: outcome });
      if (outcome !== 'down') metrics.scanDuration.observe({ scanner: s.id }, ms / 1000);
    },
    onDown(s) {
      logger.warn({ scanner: s.id, cooldownMs: cfg.scan.breaker.cooldown, code: 'PG_SCAN_UNAVAILABLE' }, 'scanner marked down');
    },
  });
}
