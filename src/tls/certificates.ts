/**
 * TLS certificate store: loads PEM certificate/key pairs, picks one per
 * connection by SNI, and reloads them when the files change on disk.
 *
 * postgate offers TLS on submission/relay listeners both as implicit TLS
 * (RFC 8314 §3.3) and through STARTTLS (RFC 3207). Either way the server side
 * is a `tls.TLSSocket` created with `{ isServer: true, secureContext,
 * SNICallback }` (that is what smtp-server does): pass `store.defaultContext`
 * *per connection* and `store.sniCallback`, and clients get the current
 * certificates, reloads included.
 *
 * Two traps when wiring this in:
 *  - `tls.createServer()` has no `secureContext` option; it silently ignores
 *    one and builds its default context from `cert`/`key` only, so clients
 *    that send no SNI would get no certificate at all. Many MTAs send no SNI
 *    for opportunistic STARTTLS, so the default context matters.
 *  - Protocol version bounds are taken from the context a socket starts with;
 *    OpenSSL does not re-apply them when the SNI callback switches context.
 *    Every context here carries the same `minVersion`, so the default context
 *    must be the one a socket is created with.
 *
 * Leaf module apart from core/errors: node built-ins only.
 */

import { EventEmitter } from 'node:events';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import tls from 'node:tls';
import type { SecureContext } from 'node:tls';

import { GatewayError } from '../core/errors.js';
import { describeSource, splitBundle } from './bundle.js';
import type { CertificateSource, SourceReader } from './sources.js';

export type { CertificateSource } from './sources.js';

export type CertificateSpec =
  | {
      /** Path of the PEM certificate; it may hold the leaf followed by its chain. */
      cert: string;
      /** Path of the PEM private key (unencrypted). */
      key: string;
      /** SNI names served with this certificate; read from the certificate when omitted. */
      hostnames?: string[] | undefined;
      source?: undefined;
    }
  | {
      /** One PEM bundle (certificate, chain, key) in S3 or SSM (sources.ts). */
      source: CertificateSource;
      hostnames?: string[] | undefined;
      cert?: undefined;
      key?: undefined;
    };

export interface CertificateStoreOptions {
  /** The first one is the default, served when SNI is absent or matches nothing. */
  certificates: CertificateSpec[];
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  watch?: boolean;
  watchIntervalMs?: number;
  /** How often certificate sources (S3, SSM) are asked for a new version; default 5 minutes. */
  sourceIntervalMs?: number;
  /** Makes the reader of a source; tests hand in their own. Default: sourceReader (AWS SDK). */
  readerFor?: (source: CertificateSource) => SourceReader;
  logger?: { info(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

type Logger = NonNullable<CertificateStoreOptions['logger']>;

interface LoadedCertificate {
  /** Where the certificate and key came from: file paths, or the source. */
  certPath: string;
  keyPath: string;
  context: SecureContext;
  hostnames: string[];
  fingerprint256: string;
  validTo: string;
}

/** One immutable generation of contexts; a reload replaces it in a single assignment. */
interface State {
  loaded: LoadedCertificate[];
  defaultContext: SecureContext;
  exact: Map<string, SecureContext>;
  /** Keyed by the part after "*.": "*.hooks.example.test" is stored as "hooks.example.test". */
  wildcard: Map<string, SecureContext>;
  names: string[];
}

const DEFAULT_WATCH_INTERVAL_MS = 5000;
const DEFAULT_SOURCE_INTERVAL_MS = 5 * 60_000;

/** The last bundle read from each source spec (by its index), and its version. */
type Bundles = Map<number, { cert: Buffer; key: Buffer; version: string }>;
const MIN_VERSIONS: ReadonlySet<string> = new Set(['TLSv1.2', 'TLSv1.3']);

export class CertificateStore extends EventEmitter {
  private state: State;
  private readonly specs: CertificateSpec[];
  private readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  private readonly logger: Logger | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Stat signature of the files as they were just before the current contexts were read. */
  private loadedSignature = '';
  /** Stat signature seen by the previous poll, to wait until the files stop changing. */
  private lastSeenSignature = '';
  private polling = false;
  private sourceTimer: NodeJS.Timeout | undefined;
  private readers = new Map<number, SourceReader>();
  /** The bundles the current contexts were built from. */
  private bundles: Bundles = new Map();
  /** Versions of a source whose bundle failed to load: not tried again until the source changes. */
  private refused = new Map<number, string>();

  private constructor(specs: CertificateSpec[], minVersion: 'TLSv1.2' | 'TLSv1.3', logger: Logger | undefined, state: State) {
    super();
    this.specs = specs;
    this.minVersion = minVersion;
    this.logger = logger;
    this.state = state;
  }

  /**
   * Reads and checks every certificate and key. Rejects with a GatewayError
   * (code PG_TLS_CERT, the offending file named) when a file is missing or
   * unreadable, is not PEM, or the key does not belong to the certificate.
   */
  static async load(opts: CertificateStoreOptions): Promise<CertificateStore> {
    const minVersion = opts.minVersion ?? 'TLSv1.2';
    // TLS 1.0 and 1.1 are deprecated (RFC 8996), so the floor is 1.2 even
    // for a JS caller that bypassed the types or the configuration schema.
    if (!MIN_VERSIONS.has(minVersion)) {
      throw new GatewayError({
        code: 'PG_TLS_CERT',
        message: `invalid TLS minVersion ${JSON.stringify(minVersion)}: use "TLSv1.2" or "TLSv1.3"`,
        transient: false,
      });
    }
    if (!Array.isArray(opts.certificates) || opts.certificates.length === 0) {
      throw new GatewayError({ code: 'PG_TLS_CERT', message: 'no TLS certificate configured', transient: false });
    }
    const interval = opts.watchIntervalMs ?? DEFAULT_WATCH_INTERVAL_MS;
    if (!Number.isFinite(interval) || interval <= 0) {
      throw new GatewayError({
        code: 'PG_TLS_CERT',
        message: `invalid TLS watchIntervalMs ${String(interval)}: must be a positive number of milliseconds`,
        transient: false,
      });
    }
    // Copied, so that a caller mutating its configuration object cannot
    // change what a later reload reads.
    const specs = opts.certificates.map((s) => ({ ...s, ...(s.hostnames ? { hostnames: [...s.hostnames] } : {}) })) as CertificateSpec[];
    const paths = watchedPaths(specs);
    const sourceInterval = opts.sourceIntervalMs ?? DEFAULT_SOURCE_INTERVAL_MS;
    if (!Number.isFinite(sourceInterval) || sourceInterval <= 0) {
      throw new GatewayError({ code: 'PG_TLS_CERT', message: `invalid TLS sourceIntervalMs ${String(sourceInterval)}: must be a positive number of milliseconds`, transient: false });
    }
    const readers = new Map<number, SourceReader>();
    // The AWS SDK loads only when a certificate has a source.
    const readerFor = opts.readerFor ?? (specs.some((s) => s.source) ? (await import('./sources.js')).sourceReader : null);
    specs.forEach((s, i) => {
      if (s.source && readerFor) readers.set(i, readerFor(s.source));
    });

    // Take the stat snapshot *before* reading: a file replaced between the
    // snapshot and the read is then seen as changed by the first poll and
    // reloaded (at worst once for nothing), instead of being missed forever.
    const signature = opts.watch ? await statSignature(paths) : '';
    let state: State;
    const bundles: Bundles = new Map();
    try {
      for (const [i, r] of readers) {
        const got = await r.read();
        if (!got.unchanged) bundles.set(i, { ...splitBundle(got.pem, r.where), version: got.version });
      }
      state = await buildState(specs, minVersion, bundles);
    } catch (err) {
      for (const r of readers.values()) r.close();
      throw err;
    }
    const store = new CertificateStore(specs, minVersion, opts.logger, state);
    store.readers = readers;
    store.bundles = bundles;
    store.logger?.info({ certificates: describe(state) }, 'TLS certificates loaded');

    if (opts.watch) {
      store.loadedSignature = signature;
      store.lastSeenSignature = signature;
      if (paths.length) store.startPolling(paths, interval);
      if (readers.size) store.startSourcePolling(sourceInterval);
    }
    return store;
  }

  /** The context of the first certificate: for clients that send no SNI or an unknown name. */
  get defaultContext(): SecureContext {
    return this.state.defaultContext;
  }

  /**
   * For `SNICallback`. Always answers with a context: RFC 6066 §3 lets a
   * server that does not recognise the name go on with its default
   * certificate instead of aborting, which is what SMTP clients expect (most
   * do not check the name for opportunistic STARTTLS anyway, RFC 7435).
   */
  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void): void => {
    cb(null, this.contextFor(servername));
  };

  /**
   * The context for a server name: an exact match first, then a wildcard
   * certificate covering exactly one more label on the left (RFC 6125 §6.4.3:
   * "*.example.test" matches "a.example.test", neither "example.test" nor
   * "a.b.example.test"), else the default. DNS names compare
   * case-insensitively and a trailing root dot is ignored.
   */
  contextFor(servername: string): SecureContext {
    const state = this.state;
    const name = normalizeHostname(servername);
    if (name === '') return state.defaultContext;
    const exact = state.exact.get(name);
    if (exact) return exact;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const wildcard = state.wildcard.get(name.slice(dot + 1));
      if (wildcard) return wildcard;
    }
    return state.defaultContext;
  }

  /** Every name served by SNI, normalized, in configuration order ("*.x" for wildcards). */
  hostnames(): string[] {
    return [...this.state.names];
  }

  /** Stops watching the files. The current contexts stay usable. */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.sourceTimer) clearInterval(this.sourceTimer);
    this.timer = undefined;
    this.sourceTimer = undefined;
    for (const r of this.readers.values()) r.close();
  }

  /**
   * Asks every source for a new version (the renewal of a certificate kept
   * in S3 or SSM, written there by whoever renews it, docs/deploy.md). When
   * one changed, the whole set is built again and swapped in as one
   * generation, as a file reload is; a bundle that fails (not PEM, a key of
   * another certificate, expired) leaves the current contexts in place and is
   * not tried again until its source changes once more. Public so that an
   * operator's signal or a test can ask at once; the timer calls it too.
   */
  async refreshSources(): Promise<'unchanged' | 'reloaded' | 'failed'> {
    if (this.closed || this.readers.size === 0) return 'unchanged';
    const fresh = new Map<number, { pem: Buffer; version: string; where: string }>();
    try {
      for (const [i, r] of this.readers) {
        const got = await r.read(this.bundles.get(i)?.version);
        if (!got.unchanged && got.version !== this.refused.get(i)) fresh.set(i, { pem: got.pem, version: got.version, where: r.where });
      }
    } catch (err) {
      // The source did not answer (network, permissions): nothing to judge, ask again next time.
      return this.failed(err);
    }
    if (fresh.size === 0 || this.closed) return 'unchanged';
    let state: State;
    const next: Bundles = new Map(this.bundles);
    try {
      for (const [i, f] of fresh) next.set(i, { ...splitBundle(f.pem, f.where), version: f.version });
      state = await buildState(this.specs, this.minVersion, next);
      rejectExpired(state);
    } catch (err) {
      for (const [i, f] of fresh) this.refused.set(i, f.version);
      return this.failed(err);
    }
    if (this.closed) return 'unchanged';
    // The swap, as for files: new connections see only the new generation.
    this.state = state;
    this.bundles = next;
    this.refused.clear();
    this.logger?.info({ certificates: describe(state) }, 'TLS certificates reloaded from their source');
    this.emit('reload');
    return 'reloaded';
  }

  private failed(err: unknown): 'failed' | 'unchanged' {
    if (this.closed) return 'unchanged';
    this.logger?.error({ err }, 'TLS certificate reload from its source failed; still serving the previous certificates');
    this.emit('reloadError', err);
    return 'failed';
  }

  private startSourcePolling(intervalMs: number): void {
    this.sourceTimer = setInterval(() => {
      if (this.polling) return;
      this.polling = true;
      this.refreshSources()
        .catch((err: unknown) => this.logger?.error({ err }, 'TLS certificate reload listener failed'))
        .finally(() => (this.polling = false));
    }, intervalMs);
    this.sourceTimer.unref();
  }

  /**
   * Hot reload by polling stat(), not fs.watch(): inotify events are lost or
   * never delivered on some container filesystems (overlay, network and
   * ConfigMap/Secret volumes, whose files are swapped through symlinks).
   * We poll ourselves rather than through fs.watchFile because its first
   * stat happens asynchronously after it is called, so a file replaced in
   * between would become its baseline and never be reported.
   */
  private startPolling(paths: string[], intervalMs: number): void {
    this.timer = setInterval(() => {
      // A throwing 'reload'/'reloadError' listener must not become an
      // unhandled rejection that takes the whole gateway down.
      this.poll(paths).catch((err: unknown) => this.logger?.error({ err }, 'TLS certificate reload listener failed'));
    }, intervalMs);
    // Never keep the process alive just to watch certificates.
    this.timer.unref();
  }

  private async poll(paths: string[]): Promise<void> {
    if (this.polling || this.closed) return;
    this.polling = true;
    try {
      const signature = await statSignature(paths);
      // Debounce: act only once a poll sees the same files as the previous
      // one. Renewal tools write the certificate and the key one after the
      // other; waiting for them to settle for a full interval lets both land
      // in one reload instead of a reload of a new cert with the old key.
      if (signature !== this.lastSeenSignature) {
        this.lastSeenSignature = signature;
        return;
      }
      if (signature === this.loadedSignature || this.closed) return;
      // Remember what we tried even if it fails: a broken pair is retried on
      // the next change of any file, not on every poll.
      this.loadedSignature = signature;
      await this.reload();
    } finally {
      this.polling = false;
    }
  }

  private async reload(): Promise<void> {
    let next: State;
    try {
      next = await buildState(this.specs, this.minVersion, this.bundles);
    } catch (err) {
      if (this.closed) return;
      this.logger?.error({ err }, 'TLS certificate reload failed; still serving the previous certificates');
      this.emit('reloadError', err);
      return;
    }
    if (this.closed) return;
    // The swap: connections already negotiated keep their context, new ones
    // see only the new generation (never a mix of old and new).
    this.state = next;
    this.logger?.info({ certificates: describe(next) }, 'TLS certificates reloaded');
    this.emit('reload');
  }
}

/** Lowercase, without the trailing root dot (RFC 6066 §3 sends no trailing dot, but be lenient). */
function normalizeHostname(name: string): string {
  if (typeof name !== 'string') return '';
  const lower = name.trim().toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function watchedPaths(specs: CertificateSpec[]): string[] {
  return [...new Set(specs.flatMap((s) => (s.source ? [] : [s.cert, s.key])))];
}

/**
 * A renewal must not make things worse: a certificate from a source that is
 * already past its notAfter (a stale copy written back, a wrong object)
 * keeps the current one in place. At start there is nothing better to serve,
 * so only reloads apply this.
 */
function rejectExpired(state: State): void {
  for (const c of state.loaded) {
    if (Date.parse(c.validTo) < Date.now()) throw certError(`TLS certificate from ${c.certPath} expired on ${c.validTo}`);
  }
}

/**
 * A string that changes whenever any file is replaced (inode), rewritten
 * (mtime, size) or touched (ctime); a missing file has its own marker so
 * that its reappearance is a change too.
 */
async function statSignature(paths: string[]): Promise<string> {
  const parts = await Promise.all(
    paths.map(async (p) => {
      try {
        const s = await stat(p);
        return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
      } catch (err) {
        return `missing:${(err as NodeJS.ErrnoException).code ?? 'error'}`;
      }
    }),
  );
  return parts.join('|');
}

async function buildState(specs: CertificateSpec[], minVersion: 'TLSv1.2' | 'TLSv1.3', bundles: Bundles): Promise<State> {
  // Read everything first, then build: a reload either yields a complete new
  // generation or fails as a whole.
  const loaded: LoadedCertificate[] = [];
  for (const [i, spec] of specs.entries()) {
    if (spec.source) {
      const b = bundles.get(i);
      const where = describeSource(spec.source);
      if (!b) throw certError(`TLS certificate bundle ${where} was never read`);
      loaded.push(fromPem({ certPem: b.cert, keyPem: b.key, certLabel: where, keyLabel: where, hostnames: spec.hostnames }, minVersion));
    } else {
      const certPem = await readPem(spec.cert, 'certificate');
      const keyPem = await readPem(spec.key, 'private key');
      loaded.push(fromPem({ certPem, keyPem, certLabel: spec.cert, keyLabel: spec.key, hostnames: spec.hostnames }, minVersion));
    }
  }

  const exact = new Map<string, SecureContext>();
  const wildcard = new Map<string, SecureContext>();
  const names: string[] = [];
  for (const cert of loaded) {
    for (const name of cert.hostnames) {
      // The first certificate claiming a name wins, as listed in the configuration.
      if (name.startsWith('*.')) {
        const base = name.slice(2);
        if (!wildcard.has(base)) wildcard.set(base, cert.context);
      } else if (!exact.has(name)) {
        exact.set(name, cert.context);
      }
      if (!names.includes(name)) names.push(name);
    }
  }
  const first = loaded[0];
  if (!first) throw new GatewayError({ code: 'PG_TLS_CERT', message: 'no TLS certificate configured', transient: false });
  return { loaded, defaultContext: first.context, exact, wildcard, names };
}

interface PemPair {
  certPem: Buffer;
  keyPem: Buffer;
  /** For messages: the file or the source each came from. */
  certLabel: string;
  keyLabel: string;
  hostnames?: string[] | undefined;
}

function fromPem(pair: PemPair, minVersion: 'TLSv1.2' | 'TLSv1.3'): LoadedCertificate {
  const { certPem, keyPem } = pair;
  const spec = { cert: pair.certLabel, key: pair.keyLabel, hostnames: pair.hostnames };

  let x509: X509Certificate;
  try {
    // Parses the first PEM block: the leaf, with any chain following it.
    x509 = new X509Certificate(certPem);
  } catch (cause) {
    throw certError(`cannot load TLS certificate ${spec.cert}: not a PEM X.509 certificate (${errorText(cause)})`, cause);
  }

  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const why = code === 'ERR_MISSING_PASSPHRASE' ? 'the key is encrypted; postgate needs an unencrypted key' : `not a PEM private key (${errorText(cause)})`;
    // The error text never carries key material: OpenSSL reports only what failed.
    throw certError(`cannot load TLS private key ${spec.key}: ${why}`, cause);
  }

  let matches = false;
  try {
    matches = x509.checkPrivateKey(key);
  } catch {
    matches = false;
  }
  if (!matches) {
    // Typical during a renewal where the certificate is written before its key.
    throw certError(`TLS private key ${spec.key} does not match certificate ${spec.cert}`);
  }

  let context: SecureContext;
  try {
    context = tls.createSecureContext({ cert: certPem, key: keyPem, minVersion });
  } catch (cause) {
    throw certError(`cannot use TLS certificate ${spec.cert} with key ${spec.key}: ${errorText(cause)}`, cause);
  }

  const hostnames = (spec.hostnames ?? hostnamesFromCertificate(x509)).map(normalizeHostname).filter((n) => n !== '');
  return { certPath: spec.cert, keyPath: spec.key, context, hostnames, fingerprint256: x509.fingerprint256, validTo: x509.validTo };
}

async function readPem(path: string, what: 'certificate' | 'private key'): Promise<Buffer> {
  try {
    const data = await readFile(path);
    if (data.length === 0) throw Object.assign(new Error('file is empty'), { code: 'EMPTY' });
    return data;
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT' ? 'file not found'
      : code === 'EACCES' || code === 'EPERM' ? 'permission denied'
      : code === 'EISDIR' ? 'is a directory, not a file'
      : code === 'EMPTY' ? 'file is empty'
      : errorText(cause);
    throw certError(`cannot load TLS ${what} ${path}: ${why}`, cause);
  }
}

/**
 * SNI carries DNS host names only; RFC 6066 §3 forbids IP literals, so IP
 * subjectAltNames are not SNI names. RFC 6125 §6.4.4: the subject CN counts
 * only when the certificate has no DNS subjectAltName.
 */
function hostnamesFromCertificate(x509: X509Certificate): string[] {
  const dns = parseSubjectAltName(x509.subjectAltName ?? '')
    .filter((e) => e.type === 'DNS')
    .map((e) => e.value);
  if (dns.length > 0) return dns;
  const cn = parseDistinguishedName(x509.subject ?? '').filter((e) => e.type === 'CN').map((e) => e.value);
  // With several CNs the last (most specific) one is the host name.
  const last = cn[cn.length - 1];
  return last !== undefined && !/\s/.test(last) ? [last] : [];
}

/**
 * Node renders subjectAltName as `DNS:a, DNS:b, IP Address:1.2.3.4` and,
 * since the CVE-2021-44532 fix, quotes a value holding a separator as a JSON
 * string, so split on ", " outside quotes only.
 */
function parseSubjectAltName(text: string): Array<{ type: string; value: string }> {
  const out: Array<{ type: string; value: string }> = [];
  const re = /([A-Za-z][A-Za-z ]*):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/g;
  for (const m of text.matchAll(re)) {
    const type = m[1];
    const raw = m[2];
    if (type === undefined || raw === undefined) continue;
    out.push({ type, value: unquote(raw) });
  }
  return out;
}

/** Node renders a subject as one `TYPE=value` per line, values quoted like SAN values. */
function parseDistinguishedName(text: string): Array<{ type: string; value: string }> {
  const out: Array<{ type: string; value: string }> = [];
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    out.push({ type: line.slice(0, eq), value: unquote(line.slice(eq + 1)) });
  }
  return out;
}

function unquote(raw: string): string {
  if (raw.startsWith('"')) {
    try {
      const v: unknown = JSON.parse(raw);
      if (typeof v === 'string') return v;
    } catch {
      /* fall through: use the text as it is */
    }
  }
  return raw;
}

function certError(message: string, cause?: unknown): GatewayError {
  return new GatewayError({ code: 'PG_TLS_CERT', message, transient: false, cause });
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** For logs: what is served, never any key material. */
function describe(state: State): object[] {
  return state.loaded.map((c) => ({
    cert: c.certPath,
    key: c.keyPath,
    hostnames: c.hostnames,
    fingerprint256: c.fingerprint256,
    validTo: c.validTo,
  }));
}
