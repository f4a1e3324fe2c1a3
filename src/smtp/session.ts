/**
 * The SMTP transaction handlers of one listener: connection admission, AUTH,
 * MAIL (load shedding), RCPT (routing, one route per transaction), DATA
 * (bounded read, trace headers, delivery, the reply of docs/architecture.md §2).
 */
import { createHash } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession, type SMTPServerAddress, type SMTPServerAuthentication } from 'smtp-server';
import { attemptEnd, type GatewayError } from '../core/errors.js';
import { isoTime } from '../core/time.js';
import { failure, recipientRefusal, reply, REPLIES, toGatewayError } from '../transaction/replies.js';
import type { ResolvedConfig, ResolvedListener } from '../config/load.js';
import {
  headerConditionHolds,
  resolveTargets,
  routeRecipient,
  type ResolvedRoute,
  type ResolvedTarget,
  type RoutingTable,
} from '../routing/index.js';
import type { TargetConfig } from '../config/schema.js';
import type { ValidateRequest } from '../delivery/rcpt-validate.js';
import { newQueueId } from '../message/ids.js';
import { traceHeaders, type Transport } from '../message/trace.js';
import { buildEvent, eventForRecipients, type EmailEvent, type Envelope } from '../message/event.js';
import { parseMessage, type BlobSink } from '../message/parse.js';
import { offloadBodies } from '../message/bodies.js';
import { RawCapture } from '../blob/raw-capture.js';
import { confirmedHostname } from '../net/rdns.js';
import type { AuthThrottle } from '../auth/throttle.js';
import { type MessageBytes, SpillBuffer } from '../message/bytes.js';
import type { ScanEnvelope, ScanOutcome, ScanPolicy, ScanRefusal, ScanStep } from '../scan/index.js';

/**
 * How far into a message the header block is looked for (Received count for
 * loop detection, forged Authentication-Results). storage.spillAbove is at
 * least this, so these bytes are always in memory.
 */
export const HEADER_SCAN_BYTES = 1024 * 1024;
import { formatAuthResultsHeader, stripOwnAuthResults, verifyMessage, type AuthResults } from '../message/mailauth.js';
import type { ParsedContent } from '../message/schema.js';
import { countFields } from '../message/headers.js';
import { claimCheckOnce } from '../delivery/claim-check.js';
import { dispatch, type DeliveryMode, type Queue } from '../queue/dispatch.js';
import type { DsnNotifier } from '../dsn/notifier.js';
import { type CircuitBreakers, type Delivery, type DeliveryMessage, type SkipStore, type Target } from '../delivery/index.js';
import { verifyPassword } from '../auth/password.js';
import { LazyLog, type Logger } from '../ops/logger.js';
import type { Metrics } from '../ops/metrics.js';
import type { DiskWatch, MemoryBudget } from '../ops/shedding.js';
import { internals, POLICY, REPLY_HOOK, type SmtpPolicy } from './extensions.js';
import type { ClientFilters, SessionListing } from './client-filters.js';
import type { MessageRecorder } from '../console/record.js';
import type { Attempt } from '../console/types.js';

export interface SessionContext {
  /** DNS resolver for sender authentication (tests inject fixture records). */
  dnsResolver?: ((name: string, rrtype: string) => Promise<unknown>) | undefined;
  /** Claim-check store for large attachments (null: everything inline). */
  blobs: BlobSink | null;
  /** AUTH failure counting per client address, shared by the listeners. */
  authThrottle: AuthThrottle;
  /** Where the part of a large message past `storage.spillAbove` is kept while it is delivered. */
  spillDir: string;
  /** smtp.clients.deny and smtp.dnsbl; the listener refuses at connect, RCPT asks the `reject-rcpt` lists (null: none). */
  filters?: ClientFilters | null | undefined;
  /** Early-talker pass cache etc., shared by the listeners of a gateway. */
  policy: SmtpPolicy;
  cfg: ResolvedConfig;
  logger: Logger;
  metrics: Metrics;
  /**
   * The routes in force: read once per transaction, at MAIL, so a
   * configuration reloaded meanwhile applies from the next transaction on
   * (docs/operations.md, "Configuration reload").
   */
  routes: { current(): RouteSet };
  memory: MemoryBudget;
  disk: DiskWatch;
  skip: SkipStore;
  breakers: CircuitBreakers;
  /** The scan step after DATA (null: no scanners configured; docs/scanning.md). */
  scan: ScanStep | null;
  /** The spool and worker of queued routes (null when every route is sync). */
  queue: Queue | null;
  /** Sends DSNs when `dsn` is configured. */
  dsn: DsnNotifier | null;
  /** The message console's recorder (null: console off); it only queues what it is given (docs/console.md). */
  console?: MessageRecorder | null | undefined;
  now(): number;
  isDraining(): boolean;
  /** Called around each DATA phase, so shutdown can wait for in-flight transactions. */
  transactionStarted(): void;
  transactionEnded(): void;
  /** The SMTP session closed (releases its connection slot). */
  sessionClosed(sessionId: string): void;
}

/** A configured target with its id resolved by the config loader. */
export type RouteTarget = TargetConfig & { id: string };

/**
 * One generation of what a configuration reload may change: the routing
 * table and the targets it names. A transaction keeps the one it started
 * with to its reply.
 */
export interface RouteSet {
  /** The configuration these routes came from (its routes, postmaster, scan and quarantine settings). */
  cfg: ResolvedConfig;
  routing: RoutingTable<RouteTarget>;
  /** The Target instance of a resolved target (templated URLs get theirs on demand). */
  targetFor(resolved: ResolvedTarget<RouteTarget>): Target;
  /** Runs the RCPT validation hooks of these routes: true accept, false unknown user; throws GatewayError. */
  validateRecipient(routes: readonly { index: number }[], req: ValidateRequest): Promise<boolean>;
  /** Delivery mode per route name (absent: sync). */
  routeModes: ReadonlyMap<string, DeliveryMode>;
}

interface AcceptedRcpt {
  mailboxHash: string | null;
  targets: ResolvedTarget<RouteTarget>[];
}

interface Txn {
  queueId: string;
  /** The routes in force when the transaction began (docs/operations.md, "Configuration reload"). */
  set: RouteSet;
  /** Fixed by the first accepted recipient (docs/architecture.md §2.3). */
  route: ResolvedRoute<RouteTarget> | null;
  /** Accepted recipients by the address as given in RCPT TO. */
  rcpts: Map<string, AcceptedRcpt>;
  log: LazyLog;
}

/** smtp-server reads `responseCode` and `message` from a callback error; one without a reply is internal. */
function replyError(err: GatewayError): Error & { responseCode: number } {
  return Object.assign(new Error(err.replyText), { responseCode: err.smtp?.code ?? REPLIES.PG_INTERNAL.code });
}

function shuttingDown(hostname: string): Error & { responseCode: number } {
  return replyError(failure('PG_SHUTTING_DOWN', { vars: { hostname } }));
}

export function createSmtpServer(
  listener: ResolvedListener,
  ctx: SessionContext,
  tls: { sniCallback?: (name: string, cb: (err: Error | null, c?: import('node:tls').SecureContext) => void) => void } | null,
): SMTPServer {
  const { cfg, logger, metrics } = ctx;
  const txns = new WeakMap<object, Txn>();
  const sessionLogs = new WeakMap<object, { log: LazyLog; started: number; accepted: number; rejected: number; lastError?: string }>();
  const tlsProtocols = new WeakMap<object, string>();
  /** Forward-confirmed client host names (smtp.reverseDns), per session. */
  const hostnames = new WeakMap<object, Promise<string | null>>();
  /** The block lists that list the client, asked once per session (docs/blocklists.md). */
  const listings = new WeakMap<object, Promise<SessionListing[]>>();
  const users = new Map((cfg.auth?.users ?? []).map((u) => [u.username, u.password]));
  const authThrottle = ctx.authThrottle;
  const timingHash = users.values().next().value ?? DUMMY_HASH;
  const authservId = cfg.mailAuth.authservId ?? cfg.hostname;
  /** A route's delivery mode; a chain (stop: false) is delivered in the mode of its first route. */
  const modeOf = (set: RouteSet, route: ResolvedRoute<RouteTarget>): DeliveryMode => set.routeModes.get(route.routes[0]?.name ?? route.name) ?? 'sync';

  const disabled = ['WIZ', 'SHELL', 'KILL'];
  if (!tls || listener.role === 'smtps') disabled.push('STARTTLS');
  if (!listener.auth) disabled.push('AUTH');

  const sessionLog = (session: SMTPServerSession) => {
    let s = sessionLogs.get(session);
    if (!s) {
      s = { log: new LazyLog(logger, { sid: session.id, listener: listener.name }), started: ctx.now(), accepted: 0, rejected: 0 };
      sessionLogs.set(session, s);
    }
    return s;
  };

  const options: SMTPServerOptions = {
    name: cfg.hostname,
    ...(cfg.smtp.banner ? { banner: cfg.smtp.banner } : {}),
    size: cfg.smtp.maxMessageSize,
    secure: listener.role === 'smtps',
    // RFC 8314 §3.3 / RFC 6409: submission ports (587, and 465 with implicit TLS) take mail from authenticated users only.
    authOptional: !(listener.auth && listener.role !== 'mx'),
    authMethods: ['PLAIN', 'LOGIN'],
    allowInsecureAuth: cfg.auth?.allowInsecure ?? false,
    disabledCommands: disabled,
    hideSTARTTLS: disabled.includes('STARTTLS'),
    hideENHANCEDSTATUSCODES: false,
    // DSN (RFC 3461) only when reports can be sent (dsn.relay); otherwise the
    // sending MTA reports "relayed" itself (RFC 3461 §5.2.2).
    hideDSN: !ctx.policy.dsn,
    disableReverseLookup: true,
    maxClients: cfg.smtp.maxClients,
    socketTimeout: cfg.smtp.socketTimeout,
    maxCommandLength: cfg.smtp.maxCommandLength,
    closeTimeout: Math.max(1000, cfg.shutdown.grace),
    logger: false,
    ...(tls?.sniCallback ? { SNICallback: tls.sniCallback } : {}),

    onConnect(session, cb) {
      const s = sessionLog(session);
      s.log.debug({ client: session.remoteAddress }, 'connection');
      if (ctx.isDraining()) return cb(shuttingDown(cfg.hostname));
      // Started now, awaited at the end of DATA: by then it is usually done.
      if (cfg.smtp.reverseDns.enabled) hostnames.set(session, confirmedHostname(session.remoteAddress, cfg.smtp.reverseDns.timeout, ctx.dnsResolver));
      // The listener started these lookups before the greeting and hands them over.
      const listed = ctx.filters?.sessionListings(session.id, session.remoteAddress);
      if (listed) listings.set(session, listed);
      if (ctx.memory.exhausted) {
        metrics.shed.inc({ reason: 'memory' });
        s.log.warn({ inflightBytes: ctx.memory.inUse }, 'memory budget exhausted, refusing connection');
        return cb(replyError(failure('PG_SHED_MEMORY_CONNECTION', { vars: { hostname: cfg.hostname } })));
      }
      cb();
    },

    onSecure(socket, session, cb) {
      // The negotiated protocol (TLSv1.3 …) for the Received header and the event;
      // smtp-server keeps only the cipher.
      const proto = (socket as import('node:tls').TLSSocket).getProtocol?.();
      if (proto) tlsProtocols.set(session, proto);
      cb();
    },

    onAuth(auth: SMTPServerAuthentication, session, cb) {
      const stored = auth.username !== undefined ? users.get(auth.username) : undefined;
      const client = session.remoteAddress;
      if (!authThrottle.allowed(client)) {
        sessionLog(session).log.warn({ user: auth.username, method: auth.method, code: 'PG_AUTH_THROTTLED' }, 'authentication refused: too many failures from this address');
        // RFC 4954 §6: 454 4.7.0 temporary authentication failure
        return cb(replyError(failure('PG_AUTH_THROTTLED')));
      }
      const fail = () => {
        const delay = authThrottle.failed(client);
        sessionLog(session).log.warn({ user: auth.username, method: auth.method, delayMs: delay }, 'authentication failed');
        setTimeout(() => cb(replyError(failure('PG_AUTH_FAILED'))), delay).unref();
      };
      if (stored === undefined || typeof auth.password !== 'string') {
        // Spend the same time as a real check (same parameters as a configured
        // hash), so the reply time does not reveal which usernames exist. The
        // result is ignored: an unknown user always fails.
        void verifyPassword(typeof auth.password === 'string' ? auth.password : '', timingHash).then(fail, fail);
        return;
      }
      verifyPassword(auth.password, stored).then(
        (ok) => {
          if (!ok) return fail();
          authThrottle.succeeded(client);
          cb(null, { user: auth.username });
        },
        () => fail(),
      );
    },

    onMailFrom(_address: SMTPServerAddress, session, cb) {
      const s = sessionLog(session);
      if (ctx.isDraining()) return cb(shuttingDown(cfg.hostname));
      // RFC 3207 §4: 530 to a command that needs TLS; EHLO, STARTTLS, NOOP,
      // RSET and QUIT stay open, so the client can upgrade and go on.
      if (listener.requireTls && !session.secure) return cb(replyError(failure('PG_TLS_REQUIRED')));
      if (ctx.memory.exhausted) {
        metrics.shed.inc({ reason: 'memory' });
        return cb(replyError(failure('PG_SHED_MEMORY')));
      }
      ctx.disk.low().then(
        (low) => {
          if (low) {
            metrics.shed.inc({ reason: 'disk' });
            s.log.warn({ minFreeDisk: cfg.limits.minFreeDisk }, 'free disk under the floor, deferring');
            // RFC 5321 §4.2.5 / RFC 3463 4.3.1: mail system full.
            return cb(replyError(failure('PG_SHED_DISK')));
          }
          const queueId = newQueueId(ctx.now());
          txns.set(session.envelope, { queueId, set: ctx.routes.current(), route: null, rcpts: new Map(), log: new LazyLog(logger, { sid: session.id, listener: listener.name, txn: queueId }) });
          cb();
        },
        (err: unknown) => cb(replyError(toGatewayError(err, 'transaction'))),
      );
    },

    onRcptTo(address: SMTPServerAddress, session, cb) {
      const txn = txns.get(session.envelope);
      if (!txn) return cb(replyError(failure('PG_TRANSACTION_LOST')));
      const refuseRcpt = (err: GatewayError) => {
        txn.log.info({ rcpt: address.address, code: err.code, reply: err.smtp?.code }, 'recipient refused');
        cb(replyError(err));
      };
      const routeRcpt = () => {
        const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
        const { set } = txn;
        const decision = routeRecipient(set.routing, address.address, { mailFrom, clientAddress: session.remoteAddress });
        if (decision.kind !== 'accept') return refuseRcpt(recipientRefusal(decision.kind, address.address));
        if (!session.secure && decision.route.routes.some((r) => r.index >= 0 && set.cfg.routes[r.index]?.requireTls)) {
          return refuseRcpt(failure('PG_RCPT_TLS_REQUIRED', { vars: { address: address.address } }));
        }
        // RFC 5321 §4.5.3.1.10 / docs/architecture.md §2.3: one reply after DATA covers every
        // recipient, so a transaction only takes recipients of one route; the
        // sender retries the others in a new transaction.
        if (txn.route && txn.route.key !== decision.route.key) {
          return refuseRcpt(failure('PG_RCPT_OTHER_ROUTE', { vars: { address: address.address } }));
        }
        if (session.envelope.rcptTo.length >= cfg.smtp.maxRecipients) {
          return refuseRcpt(failure('PG_RCPT_TOO_MANY'));
        }
        const resolved = resolveTargets(decision);
        // The circuit breaker refuses where a refusal helps the sender: a sync
        // route, whose 250 waits for the target. A queued route keeps
        // accepting while a target is down (its spool holds the message;
        // docs/queue.md).
        // A templated target is another destination per recipient, so each is checked.
        if (modeOf(set, decision.route) === 'sync' && resolved.some((t) => (!txn.route || t.templated) && t.spec.required && t.spec.when === undefined && ctx.breakers.isDown(t.id))) {
          // RFC 3463 4.4.1: no answer from host; the sender retries later.
          return refuseRcpt(failure('PG_TARGET_DOWN', { vars: { address: address.address } }));
        }
        // A scanner whose breaker is open would make the reply after DATA a
        // 451 under onError: tempfail (docs/scanning.md): say so now and spare
        // the sender the body. Postmaster mail is never scanned (scanPolicyOf).
        const down = ctx.scan?.down() ?? [];
        if (down.length > 0 && scanPolicyOf(set.cfg, decision.route)?.onError === 'tempfail') {
          return refuseRcpt(failure('PG_SCAN_UNAVAILABLE', { message: `scanner ${down.join(', ')} down (circuit breaker open)` }));
        }
        const take = () => {
          txn.route = decision.route;
          txn.rcpts.set(address.address, { mailboxHash: decision.mailboxHash, targets: resolved });
          cb();
        };
        if (!decision.route.routes.some((r) => r.index >= 0 && set.cfg.routes[r.index]?.validate)) return take();
        set
          .validateRecipient(decision.route.routes, { address: decision.address?.address ?? address.address, mailFrom, clientAddress: session.remoteAddress })
          .then(
            (ok) => (ok ? take() : refuseRcpt(recipientRefusal('unknown-user', address.address))),
            (err: unknown) => refuseRcpt(toGatewayError(err, 'recipient validation')),
          );
      };
      const listed = listings.get(session);
      if (!listed) return routeRcpt();
      // A listed client is refused before routing, so it learns nothing of
      // which addresses exist; postmaster and abuse stay reachable (RFC 5321 §4.5.1).
      listed.then(
        (found) => {
          const refusal = ctx.filters!.rcptRefusal(found, session.remoteAddress, address.address);
          if (!refusal) return routeRcpt();
          txn.log.info({ rcpt: address.address, client: session.remoteAddress, code: refusal.code, reply: refusal.smtp?.code, zone: found[0]?.zone }, 'recipient refused');
          cb(replyError(refusal));
        },
        (err: unknown) => refuseRcpt(toGatewayError(err, 'block list')),
      );
    },

    onData(stream: Readable & { sizeExceeded?: boolean }, session, cb) {
      const txn = txns.get(session.envelope);
      const s = sessionLog(session);
      if (!txn || !txn.route) {
        stream.resume();
        return cb(replyError(failure('PG_TRANSACTION_LOST')));
      }
      ctx.transactionStarted();
      const route = txn.route;
      const hash = createHash('sha256');
      // The message stays in memory up to storage.spillAbove; the rest goes to
      // a file, so a 50 MB message does not hold 50 MB (docs/decisions.md, spill to disk).
      const spill = new SpillBuffer(ctx.spillDir, txn.queueId, cfg.storage.spillAbove);
      let size = 0;
      let held = 0;
      let outcome: 'ok' | 'too-big' | 'memory' | 'bare-eol' = 'ok';
      // RFC 5321 §2.3.8: lines end in CRLF. In "reject" mode a bare CR or LF
      // fails the message (BINARYMIME bodies are exempt: they are binary).
      const checkEol = cfg.smtp.bareLineEndings === 'reject' && session.envelope.bodyType !== 'binarymime';
      let prevByte = -1;
      // The MIME parse runs while the message arrives (same Buffers, no copy),
      // so the reply after the last byte waits only for the rest of the parse.
      const parseInput = new PassThrough();
      const parseOpts = ctx.blobs ? { blobSink: ctx.blobs, limits: { inlineLimit: cfg.blobs.inlineLimit } } : { limits: { inlineLimit: Number.MAX_SAFE_INTEGER } };
      const parsing: Promise<ParsedContent | Error> = parseMessage(parseInput, parseOpts).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
      // The message as received, for the event's `raw` (inline, or streamed to
      // the blob store while it arrives) when `blobs.raw` is on.
      const rawCapture = new RawCapture(cfg.blobs.raw ? ctx.blobs : null, cfg.blobs.rawInlineLimit, `${txn.queueId}.eml`);
      const stopParsing = () => {
        if (!parseInput.destroyed) parseInput.destroy(Object.assign(new Error('transaction ended before the message was complete'), { code: 'EABORTED' }));
        rawCapture.abort();
      };
      // Backpressure: while the spill file or the parser is behind, the SMTP
      // stream is paused (and with it the socket), so chunks do not pile up in
      // memory. Each holder resumes once; the stream flows when none is left.
      let holds = 0;
      let parserBehind = false;
      const hold = (): (() => void) => {
        if (holds++ === 0) stream.pause();
        let done = false;
        return () => {
          if (done) return;
          done = true;
          if (--holds === 0) stream.resume();
        };
      };
      const release = () => {
        ctx.memory.release(held);
        metrics.inflightBytes.set(ctx.memory.inUse);
        held = 0;
      };
      // What the console records of this transaction (docs/console.md): filled in as delivery goes.
      let recorded: {
        receivedAt: Date;
        clientHostname: string | null;
        rawSha256: string;
        event: EmailEvent;
        /** Null when no target got an event (the scan step refused the message). */
        eventJson: Buffer | null;
        delivered: MessageBytes;
        deliveries: Delivery[];
        quarantined: boolean;
        queued: number;
        refusal?: ScanRefusal | undefined;
      } | null = null;
      const syncAttempts: Attempt[] = [];
      /** Set once the console has the transaction: later attempts (optional targets run on after the reply) go to it one by one. */
      let consoleHasIt = false;
      let finished = false;
      const finish = (err: GatewayError | null, text?: string, outcomeLabel?: 'aborted') => {
        if (finished) return;
        finished = true;
        stopParsing();
        release();
        ctx.transactionEnded();
        if (ctx.console && outcomeLabel !== 'aborted') recordMessage(ctx.console, err, text);
        const result = outcomeLabel ?? (err ? (err.transient ? 'deferred' : 'rejected') : 'accepted');
        metrics.transactions.inc({ route: route.name, result });
        const reply = () => {
          if (err) {
            s.rejected++;
            s.lastError = err.replyText;
            txn.log[outcomeLabel ? 'info' : 'warn']({ code: err.code, reply: err.smtp?.code, err: err.message, route: route.name }, outcomeLabel ? 'transaction aborted by the client' : 'transaction not accepted');
            cb(replyError(err));
          } else {
            s.accepted++;
            cb(null, text);
          }
        };
        // Every target has what it needs by now (delivered, spooled or given
        // up): the spill file goes before the reply, so nothing of a finished
        // transaction is left on disk.
        const removing = spill.discard();
        if (removing) removing.then(reply, reply);
        else reply();
      };
      const recordMessage = (recorder: MessageRecorder, err: GatewayError | null, text: string | undefined) => {
        consoleHasIt = true;
        const r = recorded;
        const delivered = new Set(syncAttempts.filter((a) => a.outcome === 'delivered' || a.outcome === 'skipped').map((a) => a.target));
        recorder.received({
          queueId: txn.queueId,
          receivedAt: r?.receivedAt ?? new Date(ctx.now()),
          route: route.name,
          client: { address: session.remoteAddress, hostname: r?.clientHostname ?? undefined, helo: session.hostNameAppearsAs || undefined },
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((x) => x.address),
          size,
          // The reply as the sender read it: code, enhanced code, text (each a row of the reply table).
          reply: err ? `${err.smtp?.code ?? REPLIES.PG_INTERNAL.code} ${err.replyText}` : `${REPLIES.PG_QUEUED.code} ${text ?? ''}`,
          refused: err !== null,
          quarantined: r?.quarantined ?? false,
          ...(r?.refusal ? { verdicts: r.refusal } : {}),
          event: r?.event ?? null,
          eventJson: r?.eventJson ?? null,
          message: r?.delivered ?? null,
          rawSha256: r?.rawSha256 ?? '',
          targets: (r?.deliveries ?? []).map((d) => ({
            target: d.target.id,
            kind: d.target.type,
            required: d.target.required,
            spooled: err === null && r!.queued > 0 && !delivered.has(d.target.id),
          })),
          attempts: [...syncAttempts],
        });
      };
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (outcome !== 'ok') return; // keep draining, stop processing (RFC 1870 §6.3)
        if (size > cfg.smtp.maxMessageSize) {
          outcome = 'too-big';
          void spill.discard();
          stopParsing();
          release();
          return;
        }
        // The memory budget counts what is held in memory; a spilled part is
        // bounded by the backpressure below instead.
        const inMemory = spill.fitsInMemory(chunk.length);
        if (inMemory && !ctx.memory.tryTake(chunk.length)) {
          outcome = 'memory';
          metrics.shed.inc({ reason: 'memory' });
          void spill.discard();
          stopParsing();
          release();
          return;
        }
        if (inMemory) {
          held += chunk.length;
          metrics.inflightBytes.set(ctx.memory.inUse);
        }
        if (checkEol) {
          if (hasBareLineEnding(chunk, prevByte)) outcome = 'bare-eol';
          prevByte = chunk[chunk.length - 1] ?? prevByte;
        }
        hash.update(chunk);
        if (!spill.write(chunk)) spill.onDrain(hold());
        if (!parseInput.write(chunk) && !parserBehind) {
          parserBehind = true;
          const resume = hold();
          const done = () => {
            parserBehind = false;
            parseInput.off('drain', done).off('close', done);
            resume();
          };
          parseInput.on('drain', done).on('close', done);
        }
        rawCapture.write(chunk);
      });
      stream.once('error', (err: Error & { code?: string }) => {
        if (err.code === 'ETOOBIG') {
          // BDAT over the limit: the client already has its 552 (RFC 3030 §4.2).
          return finish(failure('PG_MESSAGE_TOO_BIG', { vars: { size: cfg.smtp.maxMessageSize } }));
        }
        if (err.code === 'ECONNECTION' || err.code === 'EABORTED') {
          // The client left or reset: there is nobody to reply to and nothing was accepted.
          return finish(failure('PG_TRANSACTION_ABORTED', { message: err.message }), undefined, 'aborted');
        }
        finish(toGatewayError(err, 'transaction'));
      });
      stream.once('end', () => {
        if (outcome === 'too-big' || stream.sizeExceeded) {
          return finish(failure('PG_MESSAGE_TOO_BIG', { vars: { size: cfg.smtp.maxMessageSize } }));
        }
        if (outcome === 'memory') {
          return finish(failure('PG_SHED_MEMORY'));
        }
        if (outcome === 'bare-eol') {
          return finish(failure('PG_MESSAGE_BARE_EOL'));
        }
        parseInput.end();
        const rawSha256 = hash.digest('hex');
        spill
          .end()
          .then((received) => {
            const hops = countReceived(received.headerBlock(HEADER_SCAN_BYTES));
            if (hops > cfg.smtp.maxReceivedHeaders) {
              // RFC 5321 §6.3: a message with too many trace headers is looping.
              throw failure('PG_MAIL_LOOP', { vars: { hops } });
            }
            return deliverMessage(received, rawSha256);
          })
          .then(
            (text) => finish(null, text),
            (err: unknown) => finish(toGatewayError(err, 'transaction')),
          );
      });

      const deliverMessage = async (received: MessageBytes, rawSha256: string): Promise<string> => {
        const receivedAt = new Date(ctx.now());
        const env = session.envelope;
        const mailFrom = env.mailFrom ? env.mailFrom.address : '';
        const rcptTo = env.rcptTo.map((r) => r.address);
        const authUser = typeof session.user === 'string' ? session.user : null;
        const tlsInfo = session.tlsOptions
          ? { protocol: tlsProtocols.get(session) ?? session.tlsOptions.version ?? '', cipher: session.tlsOptions.standardName ?? session.tlsOptions.name }
          : null;
        const transport = (session.transmissionType || 'ESMTP') as Transport;
        const clientHostname = (await hostnames.get(session)) ?? null;
        // Lists that list the client but let this message through (tag; postmaster and abuse under reject-rcpt).
        const dnsbl = ((await listings.get(session)) ?? []).map((l) => ({ zone: l.zone, answers: l.answers }));
        const trace = traceHeaders({
          mailFrom,
          rcptTo,
          helo: session.hostNameAppearsAs || '',
          clientAddress: session.remoteAddress,
          clientHostname: clientHostname ?? undefined,
          hostname: cfg.hostname,
          transport,
          tls: tlsInfo ?? undefined,
          queueId: txn.queueId,
          date: receivedAt,
        });
        // Sender authentication (off unless configured): verify the bytes as
        // received, then drop forged Authentication-Results claiming our
        // authserv-id (RFC 8601 §5) and add ours above the trace headers.
        let auth: AuthResults | null = null;
        let body = received;
        let authHeader = '';
        if (cfg.mailAuth.enabled) {
          auth = await verifyMessage(await received.content(), { clientAddress: session.remoteAddress, helo: session.hostNameAppearsAs || '', mailFrom }, {
            authservId,
            timeoutMs: cfg.mailAuth.timeout,
            ...(ctx.dnsResolver ? { resolver: ctx.dnsResolver } : {}),
          });
          // The header block lies in the in-memory head (spillAbove ≥ HEADER_SCAN_BYTES).
          const head = received.head(HEADER_SCAN_BYTES);
          const stripped = stripOwnAuthResults(head, authservId);
          if (stripped.removed > 0) body = received.slice(head.length).prepend(stripped.message);
          authHeader = formatAuthResultsHeader(auth.authenticationResults);
        }
        // No copy: the trace headers are a segment in front of the received chunks.
        const message = body.prepend(Buffer.from(trace + authHeader, 'latin1'));
        const envelope: Envelope = {
          mailFrom,
          rcptTo: env.rcptTo.map((r) => ({
            address: r.address,
            mailboxHash: txn.rcpts.get(r.address)?.mailboxHash ?? null,
            // RFC 3461 §4.1/§4.2, present only when DSN is offered and the client gave them
            ...(r.dsn?.notify?.length ? { notify: [...r.dsn.notify] } : {}),
            ...(r.dsn?.orcpt ? { orcpt: r.dsn.orcpt } : {}),
          })),
          ...(ctx.policy.dsn ? { dsn: { ret: (env.dsn?.ret?.toUpperCase() as 'FULL' | 'HDRS' | undefined) ?? null, envid: env.dsn?.envid ?? null } } : {}),
          helo: session.hostNameAppearsAs || '',
          clientAddress: session.remoteAddress,
          ...(clientHostname ? { clientHostname } : {}),
          ...(dnsbl.length ? { dnsbl } : {}),
          tls: tlsInfo,
          authUser,
          transport,
          queueId: txn.queueId,
          listener: listener.name,
        };
        // The scan step (docs/scanning.md) reads the message as it will be
        // delivered, while the parse finishes and bodies are stored; its time
        // counts against the delivery deadline.
        const scanStarted = ctx.now();
        let scanMs = 0;
        const scanning = scanMessage(ctx, txn.set.cfg, route, message, { mailFrom, rcptTo, helo: envelope.helo, clientAddress: session.remoteAddress, clientHostname, authUser, queueId: txn.queueId }).then((o) => {
          if (o) scanMs = ctx.now() - scanStarted;
          return o;
        });
        // Should the parse fail first, the scan's own failure is not the reply's and not unhandled.
        scanning.catch(() => undefined);
        const parsed = await parsing;
        // Hostile or broken MIME yields parseErrors, never a rejection: a
        // rejection is an internal fault, and the message is deferred (451).
        if (parsed instanceof Error) throw parsed;
        // Claim check of large bodies and of the raw message: a store that
        // fails defers the message (451) rather than deliver an event missing
        // what it should carry.
        const [{ content, bodies }, raw, scanned] = await Promise.all([offloadBodies(parsed, ctx.blobs, cfg.blobs.bodyInlineLimit), rawCapture.result(), scanning]).catch(
          async (err: unknown) => {
            // Refused by the scan step (550/554): the console records what the
            // sender sent and why, from the parsed message; no target had an event.
            const refusal = ctx.scan?.refusalOf(err);
            if (refusal) {
              const event = buildEvent({ queueId: txn.queueId, receivedAt, envelope, trace: trace + authHeader, content: parsed, rawSha256, rawSize: received.size, auth });
              recorded = { receivedAt, clientHostname, rawSha256, event, eventJson: null, delivered: message, deliveries: [], quarantined: false, queued: 0, refusal };
            }
            throw err;
          },
        );
        const scanHeader = scanned?.header ?? '';
        const delivered = scanHeader ? message.prepend(Buffer.from(scanHeader, 'latin1')) : message;
        const event = buildEvent({
          queueId: txn.queueId,
          receivedAt,
          envelope,
          ...(scanned ? { scan: { spam: scanned.spam, virus: scanned.virus, notes: scanned.unavailable.map((u) => ({ code: 'scan_unavailable', message: `${u.scanner}: ${u.kind}` })) } } : {}),
          trace: scanHeader + trace + authHeader,
          content,
          rawSha256,
          rawSize: received.size,
          raw,
          bodies,
          auth,
          ...(cfg.mailAuth.enabled ? { authservId } : {}),
        });
        const eventJson = Buffer.from(JSON.stringify(event));
        const msg = { queueId: txn.queueId, mailFrom, rcptTo, receivedAt, message: delivered, rawSha256, event, eventJson, claimCheck: claimCheckOnce(eventJson, ctx.blobs) };
        // Quarantine: the route's quarantine targets instead of its own, never both.
        const quarantine = scanned?.quarantine ? quarantineTargets(txn.set.cfg, route) : null;
        const deliveries = planDeliveries(
          env.rcptTo.map((r) => ({ address: r.address, targets: quarantine ?? txn.rcpts.get(r.address)?.targets ?? [] })),
          (t) => headerConditionHolds(txn.set.routing, t.when, event.data.headers, event.data.classification),
          msg,
          txn.set.targetFor,
          (json) => claimCheckOnce(json, ctx.blobs),
        );
        // Config validation guarantees a required target without a condition;
        // should that ever fail, defer rather than answer 250 for nothing (docs/architecture.md §2.1).
        if (!deliveries.some((d) => d.target.required)) throw new Error(`route ${route.name}: no required target for this message`);
        recorded = { receivedAt, clientHostname, rawSha256, event, eventJson, delivered, deliveries, quarantined: quarantine !== null, queued: 0 };
        const result = await dispatch(
          modeOf(txn.set, route),
          deliveries,
          {
            queue: ctx.queue,
            route: route.name,
            isDown: (id) => ctx.breakers.isDown(id),
            // One deadline (docs/architecture.md §2.4): the scan took its share.
            deadlineMs: Math.max(1, cfg.delivery.deadline - scanMs),
            skip: ctx.skip,
            now: ctx.now,
            onSkipStoreError: (err) => txn.log.warn({ err: (err as Error).message }, 'skip-store write failed (a sender retry may deliver again)'),
            retry: { initialDelayMs: cfg.delivery.retry.initialDelay, maxDelayMs: cfg.delivery.retry.maxDelay, maxAttempts: cfg.delivery.retry.maxAttempts },
            onRetry: (t, r) =>
              txn.log.info({ target: t.id, attempt: r.attempt, pauseMs: r.pauseMs, code: r.error.code, err: r.error.message }, 'delivery attempt failed, retrying'),
            onTarget: (t, o) => {
              if (o.error?.code === 'PG_TARGET_DISABLED' && !ctx.breakers.isDisabled(t.id)) {
                ctx.breakers.disable(t.id);
                metrics.targetsDisabled.inc();
                // An alert, not a routine failure: nothing reaches this target until restart.
                txn.log.error({ target: t.id, code: 'PG_TARGET_DISABLED', err: o.error.message }, 'target disabled: the receiver answered 410 Gone');
              }
              if (!o.skipped && ctx.breakers.record(t.id, o.ok, o.error?.transient ?? true)) {
                txn.log.warn({ target: t.id, cooldownMs: cfg.delivery.breaker.cooldown, code: 'PG_TARGET_DOWN' }, 'target marked down');
              }
              metrics.deliveryDuration.observe({ target_type: t.type, outcome: o.skipped ? 'skipped' : o.ok ? 'ok' : 'failed' }, o.ms / 1000);
              if (ctx.console) {
                const a: Attempt = {
                  at: isoTime(ctx.now()),
                  target: t.id,
                  kind: t.type,
                  via: 'sync',
                  outcome: o.skipped ? 'skipped' : o.ok ? 'delivered' : o.error?.transient === false ? 'failed' : 'deferred',
                  latencyMs: Math.round(o.ms),
                  ...attemptEnd(o.httpStatus, o.error),
                };
                // An optional target that ends after the reply was never spooled: a failure is final.
                if (consoleHasIt) ctx.console.attempt(txn.queueId, a, o.skipped ? 'skipped' : o.ok ? 'delivered' : 'dead', t.required);
                else syncAttempts.push(a);
              }
              // At info a message that goes well writes one line ('accepted'
              // below); a target's own line is for failures, or for debug.
              const line = { target: t.id, ok: o.ok, skipped: o.skipped, ms: Math.round(o.ms), attempts: o.attempts, ...(o.error ? { code: o.error.code, err: o.error.message } : {}) };
              if (o.ok) txn.log.debug(line, 'delivery');
              else txn.log.info(line, 'delivery');
            },
          },
        );
        recorded.queued = result.queued;
        if (!result.ok) throw result.error!;
        // RFC 3461 NOTIFY=SUCCESS: every required target has it now (what was
        // spooled reports when the queue delivers it).
        if (ctx.dsn && result.queued === 0) void ctx.dsn.delivered(event, delivered.headerBlock(HEADER_SCAN_BYTES));
        txn.log.info(
          {
            route: route.name,
            size: received.size,
            rcpts: rcptTo.length,
            from: mailFrom,
            targets: deliveries.length,
            ...(result.queued ? { queued: result.queued } : {}),
            ...(scanned ? scanLogFields(scanned) : {}),
          },
          'accepted',
        );
        return reply('PG_QUEUED', { queueId: txn.queueId }).lines[0]!;
      };
    },

    onClose(session) {
      ctx.sessionClosed(session.id);
      const s = sessionLogs.get(session);
      if (!s) return;
      // One summary line per session (Haraka-style), never bodies or secrets.
      s.log.info(
        {
          client: session.remoteAddress,
          helo: session.hostNameAppearsAs || undefined,
          tls: session.secure,
          user: typeof session.user === 'string' ? session.user : undefined,
          transactions: s.accepted + s.rejected,
          accepted: s.accepted,
          rejected: s.rejected,
          lastError: s.lastError,
          ms: ctx.now() - s.started,
        },
        'session closed',
      );
    },
  };
  const server = new SMTPServer(options);
  internals(server)[REPLY_HOOK] = (code: number) => metrics.countReply(code);
  internals(server)[POLICY] = ctx.policy;
  // smtp-server reports socket errors here; they are per-connection and never fatal.
  server.on('error', (err: Error) => logger.debug({ listener: listener.name, err: err.message }, 'smtp connection error'));
  return server;
}

/**
 * One delivery per resolved target, each with only its own recipients
 * (docs/architecture.md §2.5: the delivery id hashes the recipients routed to that target).
 * Targets whose header condition fails are left out; recipients resolving to
 * the same target (same URL) share one delivery. A target that takes every
 * recipient shares the transaction's message and serialized event.
 */
export function planDeliveries(
  rcpts: readonly { address: string; targets: readonly ResolvedTarget<RouteTarget>[] }[],
  holds: (t: RouteTarget) => boolean,
  msg: DeliveryMessage,
  targetFor: (r: ResolvedTarget<RouteTarget>) => Target,
  claimCheck: (eventJson: Buffer) => DeliveryMessage['claimCheck'],
): Delivery[] {
  const groups = new Map<string, { resolved: ResolvedTarget<RouteTarget>; addresses: string[] }>();
  const verdicts = new Map<RouteTarget, boolean>();
  for (const r of rcpts) {
    for (const t of r.targets) {
      let ok = verdicts.get(t.spec);
      if (ok === undefined) verdicts.set(t.spec, (ok = holds(t.spec)));
      if (!ok) continue;
      const g = groups.get(t.id);
      if (!g) groups.set(t.id, { resolved: t, addresses: [r.address] });
      else if (!g.addresses.includes(r.address)) g.addresses.push(r.address);
    }
  }
  const all = new Set(rcpts.map((r) => r.address)).size;
  return [...groups.values()].map(({ resolved, addresses }) => {
    const target = targetFor(resolved);
    if (addresses.length === all) return { target, msg };
    const event = eventForRecipients(msg.event, new Set(addresses));
    const eventJson = Buffer.from(JSON.stringify(event));
    return { target, msg: { ...msg, rcptTo: addresses, event, eventJson, claimCheck: claimCheck(eventJson) } };
  });
}

/**
 * The scan policy of a route (routes[].scan over the defaults of scan), or
 * null when its messages are not scanned: no scanners, scanning off for the
 * route, or postmaster mail (RFC 5321 §4.5.1: it must reach a person). A
 * chain (stop: false) is scanned by the policy of its first route.
 */
export function scanPolicyOf(cfg: ResolvedConfig, route: ResolvedRoute<RouteTarget>): ScanPolicy | null {
  const first = route.routes[0];
  const rc = first && first.index >= 0 ? cfg.routes[first.index] : undefined;
  if (!rc || cfg.scan.scanners.length === 0 || rc.scan?.enabled === false) return null;
  const d = cfg.scan;
  return {
    spam: rc.scan?.spam ?? d.spam,
    virus: rc.scan?.virus ?? d.virus,
    threshold: rc.scan?.threshold ?? d.threshold ?? null,
    onError: rc.scan?.onError ?? d.onError,
  };
}

/** Runs the scan step for a route that is scanned; null for one that is not. Rejects with the reply's GatewayError. */
function scanMessage(ctx: SessionContext, routesCfg: ResolvedConfig, route: ResolvedRoute<RouteTarget>, message: MessageBytes, envelope: ScanEnvelope): Promise<ScanOutcome | null> {
  const policy = ctx.scan ? scanPolicyOf(routesCfg, route) : null;
  if (!ctx.scan || !policy) return Promise.resolve(null);
  // A message held in memory is joined into one Buffer once, for every
  // scanner; a spilled one is a fresh stream per scanner.
  let first: Promise<Buffer | Readable> | undefined;
  const content = async (): Promise<Buffer | Readable> => {
    if (first) {
      const b = await first;
      if (Buffer.isBuffer(b)) return b;
    }
    const p = message.content();
    first ??= p;
    return p;
  };
  return ctx.scan.run({ content, size: message.size, envelope }, policy, ctx.cfg.delivery.deadline);
}

/** The quarantine targets of a route (checked present by the config when it quarantines). */
function quarantineTargets(cfg: ResolvedConfig, route: ResolvedRoute<RouteTarget>): ResolvedTarget<RouteTarget>[] {
  const first = route.routes[0];
  const list = (first && first.index >= 0 ? cfg.routes[first.index]?.scan?.quarantine : undefined) ?? [];
  return list.map((t) => ({ spec: t as RouteTarget, id: (t as RouteTarget).id, url: t.type === 'webhook' ? t.url : null, templated: false }));
}

function scanLogFields(o: ScanOutcome): Record<string, unknown> {
  return {
    ...(o.spam ? { spamScore: o.spam.score, spamAction: o.spam.action } : {}),
    ...(o.virus?.infected ? { virus: o.virus.names.join(',') } : {}),
    ...(o.quarantine ? { quarantined: true } : {}),
    ...(o.unavailable.length ? { scanUnavailable: o.unavailable.map((u) => `${u.scanner}:${u.kind}`).join(',') } : {}),
  };
}

/** A CR not followed by LF, or an LF not preceded by CR; `prev` is the byte before the chunk. */
export function hasBareLineEnding(chunk: Buffer, prev: number): boolean {
  for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) {
    const before = i === 0 ? prev : chunk[i - 1];
    if (before !== 0x0d) return true;
  }
  for (let i = chunk.indexOf(0x0d); i !== -1; i = chunk.indexOf(0x0d, i + 1)) {
    // a CR at the very end may be followed by LF in the next chunk
    if (i + 1 < chunk.length && chunk[i + 1] !== 0x0a) return true;
  }
  if (prev === 0x0d && chunk.length && chunk[0] !== 0x0a) return true;
  return false;
}

/** Received header fields in the header block (cheap scan, no full parse). */
export function countReceived(message: Buffer): number {
  return countFields(message, 'received');
}


// A valid hash of a random password, checked when the username is unknown.
const DUMMY_HASH = '$scrypt$ln=15,r=8,p=3$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
