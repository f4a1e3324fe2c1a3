/**
 * Prometheus metrics (prom-client), in a registry of the gateway's own so
 * several gateways in one process (tests) do not collide.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';

export interface Metrics {
  registry: Registry;
  connections: Counter<'listener'>;
  activeConnections: Gauge<'listener'>;
  transactions: Counter<'route' | 'result'>;
  replies: Counter<'code'>;
  /** Counts one SMTP reply in `replies` (summed in memory, handed to prom-client when the counter is read). */
  countReply(code: number): void;
  deliveryDuration: Histogram<'target_type' | 'outcome'>;
  inflightBytes: Gauge;
  shed: Counter<'reason'>;
  proxyRejected: Counter<'listener'>;
  targetsDisabled: Gauge;
  queueAttempts: Counter<'outcome'>;
  // Connection-time filters (docs/blocklists.md).
  clientRefusals: Counter<'reason' | 'zone' | 'stage'>;
  dnsblLookups: Counter<'zone' | 'result'>;
  dnsblLookupDuration: Histogram<'zone'>;
  dnsblCacheHits: Counter<'zone'>;
  dnsblIgnoredAnswers: Counter<'zone'>;
  /** Content scanning (docs/scanning.md): one count per scanner and message, by what it said. */
  scanVerdicts: Counter<'scanner' | 'verdict'>;
  scanDuration: Histogram<'scanner'>;
  /** Certificate reloads (files or a source), by result: reloaded, failed (the previous certificates stay). */
  tlsReloads: Counter<'result'>;
  /** Configuration reloads from S3 or SSM, by result: reloaded, failed (the configuration in force stays). */
  configReloads: Counter<'result'>;
}

export function createMetrics(opts: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'postgate_' });
  const registers = [registry];
  // Four or more replies per message: a Map increment each, instead of
  // prom-client's label validation and hashing each (its collect() runs
  // before every read, so what is read is the same).
  const pendingReplies = new Map<number, number>();
  const replies = new Counter({
    name: 'postgate_smtp_replies_total',
    help: 'SMTP replies sent, by basic code',
    labelNames: ['code'],
    registers,
    collect() {
      for (const [code, n] of pendingReplies) this.inc({ code: String(code) }, n);
      pendingReplies.clear();
    },
  });
  return {
    registry,
    connections: new Counter({ name: 'postgate_smtp_connections_total', help: 'SMTP connections accepted', labelNames: ['listener'], registers }),
    activeConnections: new Gauge({ name: 'postgate_smtp_connections_active', help: 'Open SMTP connections', labelNames: ['listener'], registers }),
    transactions: new Counter({
      name: 'postgate_smtp_transactions_total',
      help: 'Transactions that reached the end of DATA, by route and result (accepted, deferred, rejected)',
      labelNames: ['route', 'result'],
      registers,
    }),
    replies,
    countReply(code) {
      pendingReplies.set(code, (pendingReplies.get(code) ?? 0) + 1);
    },
    deliveryDuration: new Histogram({
      name: 'postgate_delivery_duration_seconds',
      help: 'Time for one target to acknowledge or fail',
      labelNames: ['target_type', 'outcome'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    inflightBytes: new Gauge({ name: 'postgate_inflight_message_bytes', help: 'Bytes of messages being received or delivered', registers }),
    shed: new Counter({ name: 'postgate_shed_total', help: 'Transactions or connections refused to protect the gateway', labelNames: ['reason'], registers }),
    proxyRejected: new Counter({
      name: 'postgate_proxy_rejected_total',
      help: 'Connections closed for a missing, malformed or untrusted PROXY header',
      labelNames: ['listener'],
      registers,
    }),
    queueAttempts: new Counter({
      name: 'postgate_queue_attempts_total',
      help: 'Attempts of queued deliveries, by outcome (delivered, retry, dead)',
      labelNames: ['outcome'],
      registers,
    }),
    scanVerdicts: new Counter({
      name: 'postgate_scan_verdicts_total',
      help: 'Scanner answers per message, by scanner and verdict (clean, spam, infected, error, down)',
      labelNames: ['scanner', 'verdict'],
      registers,
    }),
    scanDuration: new Histogram({
      name: 'postgate_scan_duration_seconds',
      help: 'Time one scanner took for one message (answers and failures)',
      labelNames: ['scanner'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    targetsDisabled: new Gauge({
      name: 'postgate_targets_disabled',
      help: 'Targets disabled until restart because their receiver answered 410 Gone (alert on > 0)',
      registers,
    }),
    // Connection-time filters (docs/blocklists.md).
    clientRefusals: new Counter({
      name: 'postgate_client_refusals_total',
      help: 'Clients refused by smtp.clients.deny or a DNS block list, by reason (deny, dnsbl), zone and stage (connect, rcpt; rcpt counts recipients)',
      labelNames: ['reason', 'zone', 'stage'],
      registers,
    }),
    dnsblLookups: new Counter({
      name: 'postgate_dnsbl_lookups_total',
      help: 'DNS block list lookups sent, by zone and result (listed, clear, timeout, error); timeout and error fail open',
      labelNames: ['zone', 'result'],
      registers,
    }),
    dnsblLookupDuration: new Histogram({
      name: 'postgate_dnsbl_lookup_duration_seconds',
      help: 'Time of one DNS block list lookup (the A query, and the TXT query of a listed client)',
      labelNames: ['zone'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    configReloads: new Counter({
      name: 'postgate_config_reloads_total',
      help: 'Configurations read from S3 or SSM, by result (reloaded; failed: the configuration in force stays)',
      labelNames: ['result'],
      registers,
    }),
    tlsReloads: new Counter({
      name: 'postgate_tls_reloads_total',
      help: 'TLS certificate reloads, by result (reloaded; failed: the previous certificates are still served)',
      labelNames: ['result'],
      registers,
    }),
    dnsblCacheHits: new Counter({ name: 'postgate_dnsbl_cache_hits_total', help: 'DNS block list answers served from the cache, by zone', labelNames: ['zone'], registers }),
    dnsblIgnoredAnswers: new Counter({
      name: 'postgate_dnsbl_ignored_answers_total',
      help: 'A records of a DNS block list outside its answers setting (such as a list\'s error codes), by zone',
      labelNames: ['zone'],
      registers,
    }),
  };
}

/**
 * Queue gauges read at scrape time from the worker, so they cannot drift
 * from the spool.
 */
export function queueGauges(worker: { stats(): { depth: number; oldestAgeMs: number; dead: number } }): Metric[] {
  const gauge = (name: string, help: string, read: (s: ReturnType<typeof worker.stats>) => number) =>
    new Gauge({
      name,
      help,
      registers: [],
      collect() {
        this.set(read(worker.stats()));
      },
    });
  return [
    gauge('postgate_queue_depth', 'Queued deliveries waiting (one per message and target)', (s) => s.depth),
    gauge('postgate_queue_oldest_seconds', 'Age of the oldest queued delivery, in seconds', (s) => s.oldestAgeMs / 1000),
    gauge('postgate_queue_dead_letters', 'Deliveries in the dead-letter area', (s) => s.dead),
  ];
}

/** 1 while a scanner's circuit breaker is open, read at scrape time (docs/scanning.md). */
export function scannerGauge(read: () => { id: string; down: boolean }[]): Metric {
  return new Gauge({
    name: 'postgate_scanner_down',
    help: 'Scanners marked down by their circuit breaker (1) or in service (0)',
    labelNames: ['scanner'],
    registers: [],
    collect() {
      for (const s of read()) this.set({ scanner: s.id }, s.down ? 1 : 0);
    },
  });
}
