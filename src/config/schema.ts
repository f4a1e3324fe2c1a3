/**
 * The one schema of postgate's configuration: it gives the TypeScript type,
 * the defaults, the validation, and (through `z.toJSONSchema`) the JSON Schema
 * published as schema/config.json for editor completion.
 *
 * Every object is strict, so a misspelt or renamed key is an error, never a
 * silently ignored setting (see RENAMED_KEYS in load.ts for the hints).
 */
import { z } from 'zod';
import { parseBytes, parseDuration, parseHostPort } from './units.js';
import { validateRange } from '../net/cidr.js';
import { validateAnswerEntry, validateDnsServer } from '../net/dnsbl.js';
import { isPasswordHash } from '../auth/password.js';
import { parseSigningKey } from '../delivery/signing.js';
import { asciiDomain, checkRegex, describePattern, patternDomains, URL_PLACEHOLDERS, urlPlaceholders, urlTemplateProblem, type RecipientPattern } from '../routing/index.js';

const bytes = (description: string, min = 0) =>
  z
    .union([z.number().int().nonnegative(), z.string()])
    .describe(`${description} Bytes: a number or a string with a unit (B, KB, KiB, MB, MiB, GB, GiB).`)
    .transform((v, ctx) => {
      const n = parseBytes(v);
      if (n === null) {
        ctx.addIssue({ code: 'custom', message: `not a size: ${JSON.stringify(v)} (e.g. 26214400 or "25MiB")` });
        return z.NEVER;
      }
      if (n < min) {
        ctx.addIssue({ code: 'custom', message: `must be at least ${min} bytes` });
        return z.NEVER;
      }
      return n;
    });

const duration = (description: string, min = 1) =>
  z
    .union([z.number().nonnegative(), z.string()])
    .describe(`${description} Milliseconds as a number, or a string with a unit (ms, s, m, h, d).`)
    .transform((v, ctx) => {
      const n = parseDuration(v);
      if (n === null) {
        ctx.addIssue({ code: 'custom', message: `not a duration: ${JSON.stringify(v)} (e.g. 30000 or "30s")` });
        return z.NEVER;
      }
      if (n < min) {
        ctx.addIssue({ code: 'custom', message: `must be at least ${min} ms` });
        return z.NEVER;
      }
      return n;
    });

/**
 * Why a listen address is not one, or null. A port past 65535 is named as
 * such (TCP ports are 16 bits, RFC 9293 §3.1), not as a malformed address;
 * port 0 stays valid: the system picks a free port (tests use it).
 */
function listenAddressProblem(v: string): string | null {
  if (parseHostPort(v) !== null) return null;
  const port = /^(?:\[[0-9a-f:.]+\]|[^:[\]\s]*):(\d+)$/i.exec(v.trim())?.[1];
  if (port !== undefined) return `port ${port.replace(/^0+(?=\d)/, '')} is out of range (1–65535, or 0 for any free port)`;
  return 'expected host:port, e.g. "127.0.0.1:2525" or "[::]:25"';
}

/** 127.0.0.0/8, ::1 and localhost: reachable from this machine only. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(?:\.\d{1,3}){3}$/.test(h) || h === '::ffff:127.0.0.1';
}

const listenAddress = z
  .string()
  .describe('host:port to listen on, e.g. "127.0.0.1:2525", "[::]:25", ":25" (all interfaces).')
  .superRefine((v, ctx) => {
    const problem = listenAddressProblem(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });

// RFC 1035 §2.3.1 preferred name syntax (lenient on label starts, as real mail is).
const DOMAIN_RE = /^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

// Served domains are compared in ASCII (IDNA A-labels, RFC 5891): "bücher.example" is "xn--bcher-kva.example".
const domain = z
  .string()
  .refine((v) => DOMAIN_RE.test(asciiDomain(v)), { message: 'not a domain name' })
  .transform((v) => asciiDomain(v));

/**
 * A recipient pattern: `user@domain` (exact), `*@domain` (any user of the
 * domain), a local part with `*` wildcards (`support+*@domain`), `*` alone
 * (catch-all: any user of the served domains), or `{ local: regex, domain }`.
 * The domain is always literal, so the served domains are known (never an
 * open relay). Internationalised domains may be written either way (IDNA).
 */
const literalDomain = z.string().refine((v) => DOMAIN_RE.test(asciiDomain(v)), { message: 'not a domain name (the domain of a pattern is always literal)' });

const recipientPattern = z.union([
  z
    .string()
    .describe('"user@domain", "*@domain", a local part with * wildcards ("support+*@domain"), or "*" (any user of the served domains).')
    .refine(
      (v) => {
        if (v === '*') return true;
        const at = v.lastIndexOf('@');
        return at > 0 && DOMAIN_RE.test(asciiDomain(v.slice(at + 1))) && !/\s/.test(v);
      },
      { message: 'expected "user@domain", "*@domain", a local part with * wildcards, or "*" (catch-all)' },
    ),
  z
    .strictObject({
      local: z
        .string()
        .min(1)
        .optional()
        .describe('Regular expression (JavaScript syntax, case-insensitive) for the whole local part; named groups become URL placeholders. Absent: any user.')
        .superRefine((v, ctx) => {
          if (v === undefined) return;
          const checked = checkRegex(v);
          if ('problem' in checked) ctx.addIssue({ code: 'custom', message: `regex ${JSON.stringify(v)}: ${checked.problem}` });
        }),
      domain: z
        .union([literalDomain, z.array(literalDomain).min(1)])
        .describe('The literal domain (or list of domains) the regex applies to.'),
    })
    .describe('A regex on the local part, tied to literal domains.'),
]);

const mailKind = z.enum(['bounce', 'autoReply', 'bulk', 'machine']);

/**
 * A target condition, decided after DATA: a header field is present (or one
 * of its values matches), or the message's classification (docs/payload.md
 * `classification`) is, or is not, of a kind. One object with both forms'
 * keys, so each problem keeps its own path (a union would report them as one).
 */
const targetWhen = z
  .strictObject({
    header: z
      .string()
      .min(1, { abort: true })
      .regex(/^[\x21-\x39\x3b-\x7e]+$/, { message: 'not a header field name' })
      .optional()
      .describe('Header field name (case-insensitive).'),
    matches: z
      .string()
      .optional()
      .describe('Regular expression (case-insensitive) tested on each value of the field. Absent: the field is present.')
      .superRefine((v, ctx) => {
        if (v === undefined) return;
        const checked = checkRegex(v);
        if ('problem' in checked) ctx.addIssue({ code: 'custom', message: `regex ${JSON.stringify(v)}: ${checked.problem}` });
      }),
    classification: z
      .union([mailKind, z.strictObject({ not: mailKind })])
      .optional()
      .describe('The kind of machine mail: bounce, autoReply, bulk, or machine (any of the three); `{ not: kind }` for every other message.'),
  })
  .superRefine((w, ctx) => {
    if ((w.header === undefined) === (w.classification === undefined)) ctx.addIssue({ code: 'custom', message: 'give either "header" or "classification"' });
    if (w.classification !== undefined && w.matches !== undefined) ctx.addIssue({ code: 'custom', path: ['matches'], message: '"matches" goes with "header"' });
  })
  .transform((w) => (w.classification !== undefined ? { classification: w.classification } : { header: w.header!, ...(w.matches !== undefined ? { matches: w.matches } : {}) }))
  .optional()
  .describe(
    'Condition evaluated after DATA: the target receives the message only when it holds. A route keeps at least one required target without one, or a pair of required targets with `classification: K` and `classification: { not: K }`.',
  );

// abort: an empty value is reported as empty, not also as every format check after it.
const secretRef = z.string().min(1, { abort: true });

/** `${NAME}`, resolved from the environment by load.ts before validation (left as written only when NAME is unset). */
const ENV_REF_RE = /^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/;

/** The webhook formats besides postgate's own (docs/formats.md). */
export const WEBHOOK_FORMATS = ['rfc822', 'sendgrid', 'sendgrid-raw', 'mailgun', 'mailgun-mime', 'postmark', 'mandrill'] as const;
const KEYED_FORMATS: ReadonlySet<string> = new Set(['mailgun', 'mailgun-mime', 'mandrill']);

const oneOrMany = (item: z.ZodType<string>) => z.union([item, z.array(item).min(1)]);

const webhookTarget = z
  .strictObject({
    type: z.literal('webhook'),
    id: z.string().min(1).optional().describe('Stable target id (part of the idempotent delivery id). Default: "webhook:<url>".'),
    url: z
      .string()
      // abort: one problem per URL ("not a url" is not also "must be http").
      .url({ abort: true, message: 'not a URL (a webhook url is http:// or https://)' })
      .refine((u) => /^https?:/i.test(u), { message: 'webhook url must be http:// or https://', abort: true })
      .superRefine((u, ctx) => {
        const problem = urlTemplateProblem(u);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      })
      .describe('Where the event is POSTed. Credentials in the URL (https://user:pass@host/) are sent as HTTP basic auth. {local}, {user}, {tag}, {domain} and named regex groups in the path or query take the recipient\'s values (percent-encoded).'),
    secret: oneOrMany(secretRef)
      .optional()
      .describe(
        'Standard Webhooks v1 signing secret ("whsec_" + base64), or a list of them during a rotation (each signs). Use "${ENV_NAME}" to keep it out of the file.',
      ),
    signingKey: oneOrMany(secretRef)
      .optional()
      .describe(
        'Standard Webhooks v1a ed25519 private key ("whsk_" + base64, from "postgate webhook-keys"), or a list during a rotation. With format mailgun or mailgun-mime: the Mailgun HTTP webhook signing key; with format mandrill: the Mandrill webhook key (one string, required).',
      ),
    format: z
      .enum(['postgate', ...WEBHOOK_FORMATS])
      .default('postgate')
      .describe(
        'The request body: "postgate" (the email.received event, Standard Webhooks headers), or the inbound webhook of another service, for apps written against it (docs/formats.md): rfc822 (the raw message, Action Mailbox relay), sendgrid, sendgrid-raw, mailgun, mailgun-mime, postmark, mandrill.',
      ),
    signed: z
      .boolean()
      .default(true)
      .describe(
        'false: send events without a webhook-signature on purpose (no secret, no signingKey), which silences the "unsigned" warning. Default true: a target without a secret or signingKey is warned about.',
      ),
    headers: z.record(z.string(), z.string()).default({}).describe('Extra request headers.'),
    timeout: duration('Time allowed for one attempt (connect, answer and body).').default(25_000),
    concurrency: z.number().int().positive().default(64).describe('Requests in flight to this target at once; more wait (within the delivery deadline).'),
    maxEventSize: bytes('Events larger than this are sent as a claim-check pointer without trying the full event first (a 413 answer also triggers the pointer).', 1024).default(
      1024 * 1024,
    ),
    permanentOn: z
      .array(z.number().int().min(300).max(599))
      .default([])
      .describe('HTTP statuses that bounce the message (550 5.7.1) instead of deferring it; e.g. [422]. Default: none (only a JSON "reject" bounces).'),
    tls: z
      .strictObject({
        ca: z.string().min(1).optional().describe('PEM file of the CA(s) that sign the receiver\'s certificate (a private CA).'),
        cert: z.string().min(1).optional().describe('PEM client certificate file for mutual TLS.'),
        key: z.string().min(1).optional().describe('PEM private key file of the client certificate.'),
        servername: z.string().min(1).optional().describe('TLS server name (SNI and certificate check) when it differs from the URL host.'),
      })
      .refine((t) => !t.cert === !t.key, { message: 'tls.cert and tls.key go together' })
      .optional()
      .describe('TLS settings for https URLs: a private CA and/or a client certificate (mTLS).'),
    required: z.boolean().default(true).describe('The 250 waits for this target. Every route needs at least one.'),
    when: targetWhen,
  })
  .superRefine((t, ctx) => {
    const keys = t.signingKey === undefined ? [] : Array.isArray(t.signingKey) ? t.signingKey : [t.signingKey];
    if (KEYED_FORMATS.has(t.format)) {
      // Mailgun and Mandrill sign with their own scheme and one key (docs/formats.md).
      if (keys.length !== 1) ctx.addIssue({ code: 'custom', path: ['signingKey'], message: `format ${t.format} signs every request: signingKey must be one key (${t.format === 'mandrill' ? "the Mandrill webhook key" : "the Mailgun HTTP webhook signing key"})` });
    } else {
      keys.forEach((v, i) => {
        if (ENV_REF_RE.test(v)) return;
        const key = parseSigningKey(v);
        if (typeof key === 'string') ctx.addIssue({ code: 'custom', path: typeof t.signingKey === 'string' ? ['signingKey'] : ['signingKey', i], message: key });
      });
    }
    if (t.format !== 'postgate' && t.secret !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['secret'], message: `format ${t.format} sends no Standard Webhooks signature: remove secret (${KEYED_FORMATS.has(t.format) ? 'the format signs with signingKey' : 'authenticate with user:password in the url'})` });
    }
    // "Unsigned on purpose" and a key to sign with contradict each other: which one was meant?
    if (t.signed === false && (t.secret !== undefined || t.signingKey !== undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['signed'],
        message: `signed: false contradicts ${t.secret !== undefined ? 'secret' : 'signingKey'}: remove one (signed: false sends events unsigned)`,
      });
    }
  })
  .describe('POST the event as JSON with Standard Webhooks headers.');

const localTarget = z
  .strictObject({
    type: z.literal('local'),
    id: z.string().min(1).optional(),
    path: z.string().min(1).optional().describe('Directory of the store. Default: storage.path.'),
    required: z.boolean().default(true),
    when: targetWhen,
  })
  .describe('Write the raw .eml and the JSON event to a local directory, fsync\'d before the 250.');

/**
 * Placeholders of an s3 target's key templates. Dates are the message's
 * arrival time in UTC; `{id}` is the queue id (new on every attempt of the
 * sender), `{deliveryId}` the idempotent delivery id (the same on every retry
 * of the same message, so a retry overwrites instead of adding a copy).
 */
export const S3_KEY_PLACEHOLDERS = ['yyyy', 'mm', 'dd', 'hh', 'id', 'deliveryId'] as const;

/** Problems of a key template, or null. */
export function keyTemplateProblem(t: string): string | null {
  const names: string[] = [];
  const rest = t.replace(/\{([A-Za-z]+)\}/g, (_, name: string) => {
    names.push(name);
    return '';
  });
  const unknown = names.filter((n) => !(S3_KEY_PLACEHOLDERS as readonly string[]).includes(n));
  if (unknown.length) return `unknown placeholder {${unknown[0]}} (known: ${S3_KEY_PLACEHOLDERS.map((n) => `{${n}}`).join(' ')})`;
  if (/[{}]/.test(rest)) return 'a "{" or "}" that is not part of a placeholder';
  if (!names.includes('id') && !names.includes('deliveryId')) return 'needs {deliveryId} or {id}, or every message would overwrite the last one';
  if (t.startsWith('/')) return 'must not start with "/"';
  // S3 keys are at most 1024 bytes; leave room for the prefix and the values.
  if (Buffer.byteLength(t) > 512) return 'longer than 512 bytes';
  return null;
}

const keyTemplate = (description: string, dflt: string) =>
  z
    .string()
    .min(1, { abort: true })
    .superRefine((v, ctx) => {
      const problem = keyTemplateProblem(v);
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    })
    .default(dflt)
    .describe(`${description} Placeholders: ${S3_KEY_PLACEHOLDERS.map((n) => `{${n}}`).join(' ')}.`);

const awsRegion = z
  .string()
  .regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, { message: 'not an AWS region name (e.g. "eu-west-1")' })
  .optional()
  .describe('AWS region. Default: the SDK\'s (AWS_REGION, the shared config file).');
const awsEndpoint = z
  .string()
  .url({ abort: true, message: 'not a URL (an endpoint is http:// or https://)' })
  .refine((u) => /^https?:/i.test(u), { message: 'endpoint must be http:// or https://' })
  .optional()
  .describe('Service endpoint URL, for a local or compatible service instead of AWS.');

/** Lambda's limit for a synchronous (RequestResponse) request payload: 6 MB. */
export const LAMBDA_SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024;

const lambdaTarget = z
  .strictObject({
    type: z.literal('lambda'),
    id: z.string().min(1).optional().describe('Stable target id (part of the idempotent delivery id). Default: "lambda:<functionName>[:<qualifier>]".'),
    functionName: z.string().min(1).max(170).describe('Function name, partial ARN or full ARN.'),
    qualifier: z.string().min(1).max(128).optional().describe('Version or alias to invoke. Default: $LATEST (or the one in the ARN).'),
    region: awsRegion,
    endpoint: awsEndpoint,
    maxEventSize: bytes('Events larger than this are sent as a claim-check pointer.', 1024)
      .refine((n) => n <= LAMBDA_SYNC_PAYLOAD_LIMIT, { message: `must be at most ${LAMBDA_SYNC_PAYLOAD_LIMIT} bytes (Lambda's synchronous payload limit)` })
      // 1 MiB: room under every Lambda payload limit (async invocations included) and under SQS's.
      .default(1024 * 1024),
    timeout: duration('Time allowed for the function to return.').default(25_000),
    required: z.boolean().default(true).describe('The 250 waits for this target. Every route needs at least one.'),
    when: targetWhen,
  })
  .describe('Invoke an AWS Lambda function synchronously with the event as its payload.');

const s3Target = z
  .strictObject({
    type: z.literal('s3'),
    id: z.string().min(1).optional().describe('Stable target id (part of the idempotent delivery id). Default: "s3:<bucket>/<prefix>".'),
    bucket: z
      .string()
      .min(1)
      .max(255)
      .refine((b) => !/[/\s]/.test(b), { message: 'a bucket name has no "/" or spaces' }),
    prefix: z.string().default('').describe('Prepended to both keys as written (add the trailing "/" yourself).'),
    emlKey: keyTemplate('Key of the raw message (.eml).', '{yyyy}/{mm}/{dd}/{deliveryId}.eml'),
    eventKey: keyTemplate('Key of the JSON event.', '{yyyy}/{mm}/{dd}/{deliveryId}.json'),
    region: awsRegion,
    endpoint: awsEndpoint,
    forcePathStyle: z.boolean().default(false).describe('Path-style URLs (endpoint/bucket/key), for S3-compatible stores.'),
    storageClass: z
      .enum(['STANDARD', 'STANDARD_IA', 'ONEZONE_IA', 'INTELLIGENT_TIERING', 'GLACIER', 'GLACIER_IR', 'DEEP_ARCHIVE', 'REDUCED_REDUNDANCY'])
      .optional()
      .describe('Storage class of both objects. Default: the bucket\'s (STANDARD).'),
    serverSideEncryption: z.enum(['AES256', 'aws:kms']).optional().describe('Server-side encryption of both objects. Default: the bucket\'s.'),
    kmsKeyId: z.string().min(1).optional().describe('KMS key for serverSideEncryption "aws:kms". Default: the account\'s aws/s3 key.'),
    timeout: duration('Time allowed for both uploads.').default(25_000),
    required: z.boolean().default(true).describe('The 250 waits for this target. Every route needs at least one.'),
    when: targetWhen,
  })
  .superRefine((t, ctx) => {
    if (t.kmsKeyId !== undefined && t.serverSideEncryption !== 'aws:kms') {
      ctx.addIssue({ code: 'custom', path: ['kmsKeyId'], message: 'kmsKeyId needs serverSideEncryption: "aws:kms"' });
    }
    if (t.emlKey === t.eventKey) ctx.addIssue({ code: 'custom', path: ['eventKey'], message: 'must differ from emlKey, or the event would overwrite the message' });
  })
  .describe('Archive the raw .eml and the JSON event in an S3 bucket (or an S3-compatible store).');

export const targetSchema = z.discriminatedUnion('type', [webhookTarget, localTarget, lambdaTarget, s3Target]);

/**
 * Where delivery ids that succeeded are remembered (docs/architecture.md §2.5): in-process, or
 * a DynamoDB table shared by every instance, so a sender's retry on any
 * instance re-runs only the targets that failed.
 */
const skipStoreSchema = z
  .discriminatedUnion('type', [
    z.strictObject({
      type: z.literal('memory'),
      ttl: duration('How long a success is remembered.').default(24 * 3600_000),
    }),
    z.strictObject({
      type: z.literal('dynamodb'),
      table: z
        .string()
        .regex(/^[A-Za-z0-9_.-]{3,255}$/, { message: 'not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)' })
        .describe('Table with partition key "id" (string) and TTL attribute "expiresAt".'),
      region: awsRegion,
      endpoint: awsEndpoint,
      ttl: duration('How long a success is remembered (the item\'s expiresAt).', 60_000).default(7 * 86_400_000),
      timeout: duration('Time allowed for one lookup or write; past it the lookup counts as "not seen".').default(2_000),
    }),
  ])
  .default({ type: 'memory', ttl: 24 * 3600_000 })
  .describe('Skip-store: delivery ids that already succeeded, skipped on the sender\'s retry.');


// ── Content scanning (docs/scanning.md) ─────────────────────────────────────
// In a block of its own: scanners, the default policy, and routes[].scan.

const scannerId = z
  .string()
  .regex(/^[A-Za-z0-9_.:-]{1,64}$/, { message: 'not a scanner id (1-64 of A-Z a-z 0-9 _ . : -)' })
  .optional()
  .describe('Name in logs, metrics, the event and the breaker. Default: the type.');

const socketAddress = z.string().refine((v) => v.startsWith('/') || parseHostPort(v) !== null, { message: 'expected host:port or the path of a Unix socket' });

export const scannerSchema = z.discriminatedUnion('type', [
  z
    .strictObject({
      type: z.literal('rspamd'),
      id: scannerId,
      url: z
        .string()
        .url({ abort: true, message: 'not a URL (rspamd\'s normal worker, http://host:11333)' })
        .refine((u) => /^https?:/i.test(u), { message: 'must be http:// or https://' })
        .default('http://127.0.0.1:11333')
        .describe('Base URL of rspamd\'s normal worker; postgate posts to <url>/checkv2.'),
      socket: z
        .string()
        .refine((v) => v.startsWith('/'), { message: 'expected the absolute path of a Unix socket' })
        .optional()
        .describe('Path of a Unix socket of rspamd\'s normal worker (a bind_socket of its own): postgate connects there instead of to the URL\'s host; the URL still gives the path and the Host header. Cheaper per scan than TCP.'),
      password: secretRef.optional().describe('Sent as the Password header when rspamd requires one; use "${ENV_NAME}".'),
      protocol: z
        .enum(['http', 'milter'])
        .default('http')
        .describe('http: rspamd\'s normal worker (url, socket), one connection per scan. milter: rspamd\'s proxy worker with milter = yes (address), over connections that stay open; cheaper per scan (docs/scanning.md).'),
      address: socketAddress
        .optional()
        .describe('protocol milter: the bind_socket of rspamd\'s proxy worker, host:port or a Unix socket path. Default: 127.0.0.1:11332.'),
      connections: z
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(8)
        .describe('protocol milter: connections to rspamd kept open at most, each carrying one message at a time; more scans at once wait for one.'),
      timeout: duration('Time allowed for one verdict; past it the scanner counts as failed (onError).').default(15_000),
    })
    .superRefine((c, ctx) => {
      // Each protocol takes its own address fields; one of the other is a mistake, not a no-op.
      if (c.protocol === 'milter') {
        for (const k of ['socket', 'password'] as const) {
          if (c[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: `${k} is for protocol http; the milter protocol takes address (rspamd's proxy worker)` });
        }
      } else if (c.address !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['address'], message: 'address is for protocol milter; protocol http takes url (and socket)' });
      }
    })
    .describe('rspamd over HTTP (/checkv2) or over milter to its proxy worker: score, required score, action, symbols.'),
  z
    .strictObject({
      type: z.literal('spamassassin'),
      id: scannerId,
      address: socketAddress.default('127.0.0.1:783').describe('spamd\'s host:port or Unix socket path.'),
      user: z.string().regex(/^[\x21-\x7e]{1,64}$/).optional().describe('spamd user whose settings apply (SPAMC User header). Default: spamd\'s own.'),
      timeout: duration('Time allowed for one verdict; past it the scanner counts as failed (onError).').default(15_000),
    })
    .describe('SpamAssassin\'s spamd over SPAMC/1.5 (SYMBOLS): score, threshold, rules.'),
  z
    .strictObject({
      type: z.literal('clamav'),
      id: scannerId,
      address: socketAddress.default('127.0.0.1:3310').describe('clamd\'s TCPSocket host:port or LocalSocket path.'),
      timeout: duration('Time allowed for one verdict; past it the scanner counts as failed (onError).').default(30_000),
    })
    .describe('ClamAV\'s clamd over INSTREAM: infected, signature names.'),
]);

const verdictAction = z.enum(['tag', 'reject', 'quarantine']);
const scanOnError = z.enum(['tempfail', 'accept']);

const scanSchema = z
  .strictObject({
    scanners: z.array(scannerSchema).default([]).describe('Scanners every message of a scanned route goes through after DATA, all at once. Empty: no scanning.'),
    spam: verdictAction
      .default('tag')
      .describe('Spam: tag (deliver with the verdict in the event), reject (550 5.7.1), quarantine (deliver to the route\'s scan.quarantine targets only). Per route: routes[].scan.spam.'),
    virus: verdictAction.default('tag').describe('Malware: tag, reject (554 5.7.1) or quarantine, as for spam. Per route: routes[].scan.virus.'),
    threshold: z.number().optional().describe('Spam at or above this score. Default: each scanner\'s own call (rspamd\'s action or required score, spamd\'s required score).'),
    onError: scanOnError
      .default('tempfail')
      .describe('A scanner down, slow or broken: tempfail (451, the sender keeps the message and retries) or accept (deliver without its verdict, noted in parseErrors).'),
    header: z.boolean().default(false).describe('Add X-Spam-Flag, X-Spam-Score, X-Spam-Status and X-Virus-Status fields to the delivered copy of the message.'),
    breaker: z
      .strictObject({
        failures: z.number().int().positive().default(5).describe('Consecutive failures that mark a scanner down.'),
        cooldown: duration('How long a scanner stays down (onError at once, no attempt) before it is tried again.').default(30_000),
      })
      .prefault({}),
  })
  .prefault({})
  .describe('Spam and virus scanning after DATA, before delivery (docs/scanning.md).');

const routeScanSchema = z
  .strictObject({
    enabled: z.boolean().default(true).describe('false: this route\'s messages are not scanned.'),
    spam: verdictAction.optional().describe('Default: scan.spam.'),
    virus: verdictAction.optional().describe('Default: scan.virus.'),
    threshold: z.number().optional().describe('Default: scan.threshold.'),
    onError: scanOnError.optional().describe('Default: scan.onError.'),
    quarantine: z
      .array(targetSchema)
      .min(1)
      .optional()
      .describe('Where a message goes instead of the route\'s targets when its spam or virus action is quarantine (never to the route\'s own targets).'),
  })
  .optional()
  .describe('The scan policy of this route (defaults from scan).');

const routeSchema = z.strictObject({
  name: z.string().min(1).optional().describe('Name used in logs and metrics. Default: "route-<n>".'),
  recipients: z.array(recipientPattern).min(1).describe('Recipient patterns this route accepts.'),
  targets: z.array(targetSchema).min(1).describe('Where accepted messages go.'),
  mode: z
    .enum(['sync', 'queue', 'sync-then-queue'])
    .default('sync')
    .describe(
      'sync: 250 only after the required targets acknowledged; queue: 250 once durably spooled, delivered with retries; sync-then-queue: try within delivery.deadline, spool what failed transiently and answer 250.',
    ),
  from: z
    .array(z.string().min(1))
    .min(1)
    .optional()
    .describe('Only for these senders (MAIL FROM patterns with * wildcards, "<>" for the null sender). Default: any sender.'),
  clients: z
    .array(
      z.string().superRefine((v, ctx) => {
        const problem = validateRange(v);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      }),
    )
    .min(1)
    .optional()
    .describe('Only for SMTP clients in these networks (CIDR ranges or addresses). Default: any client.'),
  stop: z.boolean().default(true).describe('false: a recipient this route takes is also offered to the next matching route, whose targets receive the message too.'),
  requireTls: z
    .boolean()
    .default(false)
    .describe('Refuse this route\'s recipients with 530 5.7.0 on a session without TLS (RFC 3207 §4): mail for it never crosses the network in plaintext.'),
  validate: z
    .strictObject({
      url: z
        .string()
        .url({ abort: true, message: 'not a URL (a validate url is http:// or https://)' })
        .refine((u) => /^https?:/i.test(u), { message: 'validate url must be http:// or https://' })
        .describe('Endpoint that answers whether a recipient exists (POST {address, mailFrom, clientAddress}).'),
      timeout: duration('Time allowed for the answer; past it RCPT gets 451 4.4.3.').default(2_000),
      cacheTtl: duration('How long an answer (accept or reject) is remembered per address.', 0).default(300_000),
    })
    .optional()
    .describe('RCPT-time validation hook: unknown users are refused (550 5.1.1) before the body is sent.'),
  scan: routeScanSchema,
});

const proxyProtocolSchema = z.strictObject({
  trustedSources: z
    .array(
      z.string().superRefine((v, ctx) => {
        const problem = validateRange(v);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      }),
    )
    .min(1)
    .describe('Load balancer addresses or CIDR ranges allowed to send PROXY headers; others are refused.'),
  timeout: duration('Time allowed for the PROXY header to arrive.').default(5_000),
});

const listenerSchema = z.strictObject({
  name: z.string().min(1).optional(),
  role: z
    .enum(['mx', 'submission', 'smtps'])
    .default('mx')
    .describe('mx: inbound mail (port 25); submission: AUTH required before MAIL (587); smtps: implicit TLS (465, RFC 8314).'),
  listen: listenAddress,
  proxyProtocol: proxyProtocolSchema.optional().describe('Require a PROXY v1/v2 header (behind a load balancer).'),
  auth: z.boolean().optional().describe('Offer AUTH on this listener. Default: true for submission and smtps, false for mx.'),
  requireTls: z
    .boolean()
    .default(false)
    .describe('Refuse MAIL with 530 5.7.0 until the client has issued STARTTLS (RFC 3207 §4); smtps sessions are always TLS. Not for a public MX: see docs/smtp.md.'),
});

const sniHostnames = z
  .array(
    z
      .string()
      .refine((v) => DOMAIN_RE.test(v.replace(/^\*\./, '')), { message: 'not a host name (a leading "*." wildcard is allowed)' })
      .transform((v) => v.toLowerCase()),
  )
  .optional()
  .describe('SNI names served with this certificate ("*.example.test" allowed). Default: from the certificate.');

/**
 * Where a certificate kept outside the instance lives: one PEM bundle
 * (certificate, chain and key) in an S3 object or an SSM parameter, polled for
 * renewals (src/tls/sources.ts, docs/deploy.md).
 */
const certificateSource = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('s3'),
    bucket: z.string().min(3).max(63).describe('Bucket of the PEM bundle.'),
    key: z.string().min(1).describe('Object key of the PEM bundle (certificate, chain and private key).'),
    region: awsRegion,
    endpoint: awsEndpoint,
    forcePathStyle: z.boolean().default(false).describe('Path-style URLs, for S3-compatible stores.'),
  }),
  z.strictObject({
    type: z.literal('ssm'),
    parameter: z
      .string()
      .regex(/^\/[\w.\-/]+$/, { message: 'an SSM parameter name starting with "/" (a Secrets Manager secret: /aws/reference/secretsmanager/<name>)' })
      .describe('SecureString parameter holding the PEM bundle; /aws/reference/secretsmanager/<name> reads a Secrets Manager secret.'),
    region: awsRegion,
    endpoint: awsEndpoint,
  }),
]);

const certificateSchema = z.union([
  z.strictObject({
    cert: z.string().min(1).describe('PEM certificate (chain) file.'),
    key: z.string().min(1).describe('PEM private key file.'),
    hostnames: sniHostnames,
  }),
  z.strictObject({
    source: certificateSource.describe('A PEM bundle in S3 or SSM (Secrets Manager through SSM), instead of cert and key files.'),
    hostnames: sniHostnames,
  }),
]);

const userSchema = z.strictObject({
  username: z.string().min(1),
  password: secretRef
    .describe('scrypt hash from "postgate hash-password" (PHC format "$scrypt$..."), or "${ENV_NAME}" holding one.')
    // Plain-text passwords in a config file end up in backups and tickets.
    .refine((v) => isPasswordHash(v) || ENV_REF_RE.test(v), {
      message: 'expected a scrypt hash: run "postgate hash-password" and paste its output',
    }),
});

// --- Connection-time filters: smtp.clients and smtp.dnsbl (docs/blocklists.md)

/** A client address or CIDR range, written like routes[].clients and queue.etrn.allowed. */
const clientRange = z.string().superRefine((v, ctx) => {
  const problem = validateRange(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const clientsSchema = z
  .strictObject({
    deny: z
      .array(clientRange)
      .default([])
      .describe('SMTP clients refused at connect with 554 5.7.1 (CIDR ranges or addresses; behind PROXY, the address from the header). Default: none.'),
  })
  .prefault({})
  .describe('Client filters applied to every listener before the greeting.');

/** How a listing is acted on (docs/blocklists.md). */
export const DNSBL_ACTIONS = ['reject-connect', 'reject-rcpt', 'tag'] as const;

const dnsblZoneSchema = z.strictObject({
  zone: z
    .string()
    .refine((v) => DOMAIN_RE.test(v.replace(/\.$/, '')), { message: 'not a DNS zone name (e.g. "zen.spamhaus.org")' })
    .transform((v) => v.replace(/\.$/, '').toLowerCase())
    .describe('The list\'s DNS zone; the client address is queried under it (RFC 5782 §2.1, §2.4).'),
  action: z
    .enum(DNSBL_ACTIONS)
    .default('reject-rcpt')
    .describe(
      'reject-connect: 554 5.7.1 instead of the greeting; reject-rcpt: 550 5.7.1 for every recipient but postmaster and abuse (RFC 5321 §4.5.1); tag: logged and counted only.',
    ),
  answers: z
    .array(
      z.string().superRefine((v, ctx) => {
        const problem = validateAnswerEntry(v);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      }),
    )
    .min(1)
    .default(['127.0.0.2-127.0.0.255'])
    .describe('A records that count as listed: addresses, ranges "a.b.c.d-e.f.g.h" or blocks "a.b.c.d/n". Other answers (a list\'s error codes such as 127.255.255.254) do not.'),
  servers: z
    .array(
      z.string().superRefine((v, ctx) => {
        const problem = validateDnsServer(v);
        if (problem) ctx.addIssue({ code: 'custom', message: problem });
      }),
    )
    .default([])
    .describe('DNS servers asked for this zone ("192.0.2.53", "127.0.0.1:5353", "[::1]:53"). Default: the system\'s resolvers (/etc/resolv.conf).'),
  timeout: duration('Budget of one lookup; past it the client is treated as not listed (fail open) and the failure counted.').default(2_000),
  cacheTtl: duration('A listed answer is remembered for its DNS TTL, at most this long.', 0).default(300_000),
  negativeCacheTtl: duration('A not-listed answer is remembered this long.', 0).default(60_000),
  cacheSize: z.number().int().positive().default(10_000).describe('Answers remembered for this zone at most (least recently used first out).'),
  showReason: z.boolean().default(true).describe('Look up the TXT record of a listed client and show it, sanitized, in the refusal.'),
});

const dnsblSchema = z
  .array(dnsblZoneSchema)
  .default([])
  .superRefine((zones, ctx) => {
    const seen = new Set<string>();
    zones.forEach((z, i) => {
      if (seen.has(z.zone)) ctx.addIssue({ code: 'custom', path: [i, 'zone'], message: `zone "${z.zone}" is listed twice` });
      seen.add(z.zone);
    });
  })
  .describe('DNS block lists, each looked up at connect and acted on at connect, at RCPT, or only tagged.');

// --- End of the connection-time filters

export const configSchema = z
  .strictObject({
    smtp: z
      .strictObject({
        listen: listenAddress.default('127.0.0.1:2525').describe('Address of the default mx listener (used when "listeners" is absent).'),
        hostname: z.string().min(1).optional().describe('Name in the greeting and Received headers. Default: the host name.'),
        banner: z.string().optional(),
        maxMessageSize: bytes('Largest message accepted (SIZE, RFC 1870).', 1024).default(25 * 1024 * 1024),
        maxRecipients: z
          .number()
          .int()
          .min(100, { message: 'RFC 5321 §4.5.3.1.8 requires accepting at least 100 recipients' })
          .default(100),
        maxClients: z.number().int().positive().default(1000).describe('Concurrent SMTP connections across all listeners.'),
        socketTimeout: duration('Idle timeout for commands and data blocks (RFC 5321 §4.5.3.2: 5 minutes).').default(300_000),
        busySocketTimeout: duration('Idle timeout while more than 80% of maxClients are connected.').default(30_000),
        maxConnectionsPerIp: z.number().int().positive().default(20).describe('Concurrent connections from one client address (after PROXY).'),
        maxCommandLength: z.number().int().min(512).default(2048).describe('Longest command line (RFC 5321 §4.5.3.1.4: at least 512).'),
        maxReceivedHeaders: z.number().int().positive().default(50).describe('More Received headers than this is a mail loop: 554 5.4.6 (RFC 5321 §6.3).'),
        vrfy: z
          .enum(['never', 'routes'])
          .default('never')
          .describe('VRFY: never disclose (252, RFC 5321 §7.3), or answer from the routes (250 / 550 5.1.1 / 550 5.7.1).'),
        bareLineEndings: z
          .enum(['accept', 'reject'])
          .default('accept')
          .describe('A bare CR or LF in DATA: accept (kept as received) or reject (554 5.6.0). Only <CRLF>.<CRLF> ends DATA either way.'),
        reverseDns: z
          .strictObject({
            enabled: z.boolean().default(false),
            timeout: duration('Budget for the PTR and forward lookups of one connection; past it the name is left out.', 1).default(2000),
          })
          .prefault({})
          .describe('Look up the client\'s host name (forward-confirmed PTR) for the Received header and envelope.clientHostname.'),
        earlyTalker: z
          .strictObject({
            mode: z.enum(['off', 'pause', 'multiline']).default('multiline'),
            delay: duration('How long a new client must wait before talking.', 0).default(300),
            passTtl: duration('How long a client that waited is exempt from the pause.').default(3_600_000),
          })
          .prefault({})
          .describe('Pre-greeting test: clients that talk before the greeting get 554.'),
        // Connection-time filters (docs/blocklists.md).
        clients: clientsSchema,
        dnsbl: dnsblSchema,
      })
      .prefault({}),
    listeners: z.array(listenerSchema).min(1).optional().describe('Several listeners with roles; default: one mx listener at smtp.listen.'),
    tls: z
      .strictObject({
        certificates: z.array(certificateSchema).min(1),
        minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
        watch: z.boolean().default(true).describe('Reload certificates when the files change.'),
        watchInterval: duration('How often certificate files are checked for changes.', 10).default(5_000),
        sourceInterval: duration('How often certificates with a source (S3, SSM) are checked for a new version.', 1000).default(5 * 60_000),
      })
      .optional(),
    auth: z
      .strictObject({
        users: z.array(userSchema).min(1),
        allowInsecure: z.boolean().default(false).describe('Allow AUTH without TLS (testing only; RFC 4954 §4).'),
        maxFailures: z
          .number()
          .int()
          .positive()
          .default(5)
          .describe('Failed AUTH attempts from one client address within failureWindow before it gets 454 4.7.0 without a check.'),
        failureWindow: duration('How long failed AUTH attempts count against a client address.', 1).default(15 * 60_000),
        failureDelay: duration('Delay of the first 535 after a failed AUTH; doubled per further failure of the address (at most 5 s).', 0).default(500),
      })
      .optional(),
    reload: z
      .strictObject({
        interval: duration('How often a configuration read from S3 or SSM (--config s3://bucket/key or ssm:/name) is checked for a new version.', 1000).default(60_000),
      })
      .prefault({}),
    domains: z.array(domain).default([]).describe('Extra served domains (their unknown users get 550 5.1.1).'),
    routes: z.array(routeSchema).default([]),
    postmaster: z
      .strictObject({
        targets: z.array(targetSchema).min(1).optional().describe('Where postmaster@ mail goes. Default: the local store.'),
      })
      .prefault({}),
    storage: z
      .strictObject({
        path: z.string().min(1).default('./data'),
        spillAbove: bytes(
          'A message larger than this is kept in memory only up to this size while it is received and delivered; the rest goes to a file under storage.path/incoming.',
          1024 * 1024,
        ).default(4 * 1024 * 1024),
      })
      .prefault({}),
    delivery: z
      .strictObject({
        deadline: duration('Budget for all targets of one message before the reply becomes 451.').default(30_000),
        denyPrivateAddresses: z
          .enum(['never', 'templated', 'always'])
          .default('never')
          .describe('SSRF guard: refuse webhook connections to loopback, private, link-local and other non-public addresses — for targets whose URL has recipient placeholders, or for all.'),
        retry: z
          .strictObject({
            initialDelay: duration('Pause before the second attempt; it doubles per attempt, with full jitter.').default(250),
            maxDelay: duration('Longest pause between attempts.').default(5_000),
            maxAttempts: z.number().int().positive().default(10).describe('Attempts per target within one deadline, the first included (1: no retries).'),
          })
          .prefault({})
          .describe('Retries of transient failures inside the deadline (connection errors, timeouts, 408/425/429/5xx).'),
        breaker: z
          .strictObject({
            failures: z.number().int().positive().default(5).describe('Consecutive transient failures that mark a target down.'),
            cooldown: duration('How long a target stays down before traffic is tried again.').default(30_000),
          })
          .prefault({})
          .describe('While a required target is down, RCPT gets 451 4.4.1 at once.'),
        skipStore: skipStoreSchema,
      })
      .prefault({}),
    queue: z
      .strictObject({
        path: z.string().min(1).optional().describe('Spool directory. Default: <storage.path>/spool.'),
        retry: z
          .strictObject({
            initialDelay: duration('Pause after the first failed attempt; doubles per attempt (with jitter).').default(60_000),
            maxDelay: duration('Longest pause between attempts.').default(4 * 3_600_000),
            maxAge: duration('Age after which a message still not delivered becomes a dead letter.').default(3 * 86_400_000),
          })
          .prefault({}),
        concurrency: z.number().int().positive().default(8).describe('Queued deliveries attempted at once.'),
        rescanInterval: duration(
          'How often a running gateway re-reads its spool directory: items revived, replayed or purged by `postgate queue` take effect within it, also when nothing else is queued.',
          100,
        ).default(30_000),
        backend: z
          .discriminatedUnion('type', [
            z.strictObject({ type: z.literal('local') }).describe('The spool directory queue.path on this instance.'),
            z
              .strictObject({
                type: z.literal('s3-sqs'),
                bucket: z.string().min(3).max(63).describe('Bucket holding the queued messages.'),
                prefix: z.string().default('spool/').describe('Key prefix of the items.'),
                // Not z.url(): SQS-compatible servers name queues like
                // http://sqs.<region>.<host>/..., which WHATWG URL parsing refuses for IP hosts.
                queueUrl: z
                  .string()
                  .regex(/^https?:\/\/\S+\/\S+$/, { message: 'expected the queue URL, https://sqs.<region>.amazonaws.com/<account>/<name>' })
                  .describe('SQS queue of the work items (standard queue), as CreateQueue/GetQueueUrl return it.'),
                region: z.string().min(1).optional().describe('Default: the SDK\'s (AWS_REGION).'),
                endpoint: z.string().url().optional().describe('An S3/SQS-compatible endpoint instead of AWS (both services).'),
                forcePathStyle: z.boolean().default(false).describe('Path-style S3 URLs (most S3-compatible servers).'),
                pollWait: duration('Long-poll wait of each ReceiveMessage (at most 20 s).', 0).default(20_000),
              })
              .describe('Shared by several edge instances: items in S3, work items in SQS.'),
          ])
          .default({ type: 'local' })
          .describe('Where queued messages are kept.'),
        maxItems: z.number().int().positive().default(100_000).describe('Spool capacity in items (one per message and target); when full, queued routes answer 452 4.3.1 and readiness is false.'),
        etrn: z
          .strictObject({
            allowed: z
              .array(
                z.string().superRefine((v, ctx) => {
                  const problem = validateRange(v);
                  if (problem) ctx.addIssue({ code: 'custom', message: problem });
                }),
              )
              .default([])
              .describe('Client addresses or CIDR ranges that may use ETRN; others get 459. Default: none.'),
          })
          .prefault({})
          .describe('ETRN (RFC 1985): advertised while a route is queued; starts waiting deliveries for a domain at once.'),
      })
      .prefault({})
      .describe('The spool and retry worker of routes in "queue" and "sync-then-queue" mode.'),
    dsn: z
      .strictObject({
        relay: z
          .strictObject({
            host: z.string().min(1).describe('Outbound SMTP relay that sends the reports.'),
            port: z
              .number()
              .int()
              .min(1, { message: 'port out of range (1–65535)' })
              .max(65535, { message: 'port out of range (1–65535)' })
              .default(25),
            secure: z.boolean().default(false).describe('Implicit TLS (port 465); otherwise STARTTLS when offered.'),
            requireTls: z.boolean().default(false).describe('Refuse to send without STARTTLS.'),
            user: z.string().min(1).optional().describe('AUTH user at the relay.'),
            password: secretRef.optional().describe('AUTH password at the relay; use "${ENV_NAME}".'),
            ca: z.string().min(1).optional().describe('PEM file of the CA that signs the relay\'s certificate (a private CA).'),
          })
          .describe('Where reports are sent through (nodemailer).'),
        from: z.string().min(1).optional().describe('From: of the reports. Default: "Mail Delivery System <MAILER-DAEMON@<smtp.hostname>>".'),
        delayedAfter: duration('Age of a queued message still not delivered after which recipients that asked for NOTIFY=DELAY get one "delayed" report; 0: never.', 0).default(4 * 3_600_000),
        retry: z
          .strictObject({
            initialDelay: duration('Pause before the second try of a report the relay did not take; it doubles with each try.').default(60_000),
            attempts: z.number().int().min(1).max(20).default(8).describe('Tries of one report, the first included, before it is given up (logged).'),
          })
          .prefault({})
          .describe('Reports the relay does not take are tried again while the process runs.'),
      })
      .optional()
      .describe('Delivery status notifications (RFC 3461/3464). When set, EHLO advertises DSN and reports are sent; otherwise DSN is not offered.'),
    http: z
      .union([
        z.literal(false),
        z.strictObject({ listen: listenAddress.default('127.0.0.1:9025') }),
      ])
      .default({ listen: '127.0.0.1:9025' })
      .describe('Operations endpoint (/healthz, /readyz, /metrics); false to disable.'),
    console: z
      .strictObject({
        listen: listenAddress
          .default('127.0.0.1:8025')
          .describe('host:port of the message console and its REST API (docs/console.md). A listener that is not loopback needs console.auth.'),
        path: z.string().min(1).optional().describe('Directory of the console\'s index and stored copies. Default: storage.path/console.'),
        auth: z
          .strictObject({
            tokens: z.array(secretRef).default([]).describe('Bearer tokens (`Authorization: Bearer <token>`); use "${ENV_NAME}".'),
            users: z.array(userSchema).default([]).describe('Basic auth users with scrypt hashes (`postgate hash-password`), as auth.users.'),
          })
          .optional()
          .refine((a) => !a || a.tokens.length + a.users.length > 0, { message: 'give at least one token or user' })
          .describe('When set, every request needs a token or a user, on loopback too; required for a listener that is not loopback.'),
        allowedHosts: z
          .array(z.string().min(1))
          .default([])
          .describe('Host header values besides localhost, 127.0.0.1 and [::1] on the listening port (the name a proxy serves the console under); other Hosts get 403 (DNS rebinding).'),
        retention: z
          .strictObject({
            days: z.number().positive().default(3).describe('Messages older than this are removed from the index with their stored copies.'),
            maxBytes: bytes('Past this much stored .eml and event JSON, the oldest messages are removed.').default(1024 * 1024 * 1024),
          })
          .prefault({}),
      })
      .optional()
      .describe('The message console: an index of every message with its stored .eml and event, a REST API and web pages (docs/console.md). Off unless set; the embedded default turns it on at 127.0.0.1:8025.'),
    mailAuth: z
      .strictObject({
        enabled: z.boolean().default(false).describe('Verify SPF, DKIM, DMARC and ARC of every accepted message (DNS lookups).'),
        authservId: z.string().min(1).optional().describe('authserv-id of the Authentication-Results header (RFC 8601). Default: smtp.hostname.'),
        timeout: duration('Budget for all DNS lookups of one message; past it the verdicts are temperror.').default(10_000),
      })
      .prefault({})
      .describe('Sender authentication verdicts in the event (`auth`) and an Authentication-Results header.'),
    scan: scanSchema,
    blobs: z
      .strictObject({
        inlineLimit: bytes('Attachments up to this size travel inside the event (base64); larger ones are stored and linked (claim check).').default(
          256 * 1024,
        ),
        bodyInlineLimit: bytes(
          'Text and HTML bodies up to this size (UTF-8) travel inside the event; larger ones are stored and linked (`textBlob`/`htmlBlob`).',
        ).default(256 * 1024),
        raw: z
          .boolean()
          .default(false)
          .describe('Put the message as received in the event: inline (`raw.content`) up to rawInlineLimit, otherwise stored and linked (`raw.url`).'),
        rawInlineLimit: bytes('With `raw` on: messages up to this size travel inside the event (base64); larger ones are stored while they arrive.').default(
          64 * 1024,
        ),
        ttl: duration('How long a blob link stays valid (its expiresAt).').default(7 * 86_400_000),
        signingKey: secretRef
          .optional()
          .describe('HMAC key for blob links; use "${ENV_NAME}". Default: random per start (links die with a restart).'),
        publicUrl: z
          .string()
          .url()
          .optional()
          .describe('Base URL receivers use to fetch blobs (the HTTP endpoint behind your proxy). Default: the http.listen address.'),
        store: z
          .discriminatedUnion('type', [
            z.strictObject({ type: z.literal('local') }).describe('Files under storage.path/blobs, served by the http endpoint.'),
            z
              .strictObject({
                type: z.literal('s3'),
                bucket: z.string().min(3).max(63).describe('Bucket of the blobs.'),
                prefix: z.string().default('blobs/').describe('Key prefix.'),
                region: z.string().min(1).optional().describe('Default: the SDK\'s (AWS_REGION).'),
                endpoint: z.string().url().optional().describe('An S3-compatible endpoint instead of AWS.'),
                forcePathStyle: z.boolean().default(false).describe('Path-style URLs (most S3-compatible servers).'),
              })
              .describe('Objects in S3, linked by presigned GET URLs (at most 7 days, and never past the credentials\' expiry).'),
          ])
          .default({ type: 'local' })
          .describe('Where blobs are kept.'),
      })
      .prefault({})
      .describe('Claim check: large attachments are stored under storage.path/blobs and served by the HTTP endpoint through signed, expiring links.'),
    logging: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .prefault({}),
    limits: z
      .strictObject({
        minFreeDisk: bytes('Below this much free disk under storage.path, MAIL gets 452 4.3.1.').default(100 * 1024 * 1024),
        memoryBudget: bytes('In-flight message bytes above which MAIL gets 451 4.3.2 and new connections 421.', 64 * 1024).default(
          256 * 1024 * 1024,
        ),
      })
      .prefault({}),
    shutdown: z
      .strictObject({
        grace: duration('How long in-flight transactions may finish after SIGTERM.', 0).default(30_000),
      })
      .prefault({}),
  })
  .superRefine(
    (cfg, ctx) => {
      // Runs even when fields failed (see `when` below), so every problem of a
      // file is reported in one round: read the value defensively, it may be
      // partly invalid input.
      const arr = <T>(v: unknown): T[] => (Array.isArray(v) ? (v as T[]) : []);
      const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' ? (v as Record<string, unknown>) : {});
      const listeners = arr<Record<string, unknown>>(cfg.listeners).map(obj);
      const auth = cfg.auth ? obj(cfg.auth) : undefined;
      listeners.forEach((l, i) => {
        const role = typeof l.role === 'string' ? l.role : 'mx';
        if (role === 'smtps' && !cfg.tls) {
          ctx.addIssue({ code: 'custom', path: ['listeners', i, 'role'], message: 'role "smtps" needs tls.certificates' });
        }
        const wantsAuth = typeof l.auth === 'boolean' ? l.auth : role !== 'mx';
        if (wantsAuth && !auth) {
          ctx.addIssue({ code: 'custom', path: ['listeners', i], message: `role "${role}" offers AUTH and needs auth.users` });
        }
        if (wantsAuth && role !== 'smtps' && !cfg.tls && auth?.allowInsecure !== true) {
          // RFC 4954 §4: passwords only over TLS; without certificates AUTH could never be used.
          ctx.addIssue({ code: 'custom', path: ['listeners', i], message: `role "${role}" offers AUTH, which needs tls.certificates (or auth.allowInsecure for testing)` });
        }
        if (l.requireTls === true && role !== 'smtps' && !cfg.tls) {
          ctx.addIssue({ code: 'custom', path: ['listeners', i, 'requireTls'], message: 'requireTls needs tls.certificates (without them STARTTLS is never offered and every MAIL would be refused)' });
        }
        if (role === 'submission' && l.auth === false) {
          ctx.addIssue({ code: 'custom', path: ['listeners', i, 'auth'], message: 'a submission listener always requires AUTH' });
        }
      });
      const names = new Set<string>();
      listeners.forEach((l, i) => {
        const name = typeof l.name === 'string' ? l.name : `${String(l.role ?? 'mx')}-${i}`;
        if (names.has(name)) ctx.addIssue({ code: 'custom', path: ['listeners', i, 'name'], message: `duplicate listener name "${name}"` });
        names.add(name);
      });
      const checkRequired = (targets: unknown, at: (string | number)[]) => {
        const list = arr<unknown>(targets).map(obj);
        // a required target (the default) without a condition: the 250 always waits for something.
        // So does a pair of required targets with `classification: K` and `classification: { not: K }`:
        // every message satisfies one of the two.
        const required = list.filter((t) => t.required !== false);
        const kinds = (neg: boolean) =>
          new Set(
            required.flatMap((t) => {
              const c = obj(t.when).classification;
              if (neg) return c && typeof c === 'object' ? [String((c as Record<string, unknown>).not)] : [];
              return typeof c === 'string' ? [c] : [];
            }),
          );
        const pos = kinds(false);
        const covered = [...kinds(true)].some((k) => pos.has(k));
        if (list.length && !required.some((t) => t.when === undefined) && !covered) {
          ctx.addIssue({
            code: 'custom',
            path: at,
            message: 'needs at least one required target without a "when" condition, or required targets with classification K and { not: K } (the 250 waits for it)',
          });
        }
      };
      const routes = arr<unknown>(cfg.routes).map(obj);
      routes.forEach((r, i) => checkRequired(r.targets, ['routes', i, 'targets']));
      routes.forEach((r, i) => {
        if (r.requireTls === true && !cfg.tls) {
          ctx.addIssue({ code: 'custom', path: ['routes', i, 'requireTls'], message: 'requireTls needs tls.certificates (without them STARTTLS is never offered and every recipient of the route would be refused)' });
        }
      });
      checkRequired(obj(cfg.postmaster).targets, ['postmaster', 'targets']);
      // A pattern listed by two routes would make the route of a recipient depend on order.
      const seen = new Map<string, number>();
      const served = new Set<string>(arr<string>(cfg.domains).filter((d) => typeof d === 'string'));
      let catchAll: (string | number)[] | null = null;
      routes.forEach((r, i) =>
        arr<unknown>(r.recipients).forEach((p, j) => {
          if (typeof p !== 'string' && (!p || typeof p !== 'object')) return;
          const pat = p as RecipientPattern;
          if (pat === '*') catchAll ??= ['routes', i, 'recipients', j];
          for (const d of patternDomains(pat)) served.add(d);
          let key = describePattern(pat);
          if (typeof pat === 'string' && pat.includes('@')) key = `${pat.slice(0, pat.lastIndexOf('@'))}@${asciiDomain(pat.slice(pat.lastIndexOf('@') + 1))}`;
          key = key.toLowerCase();
          const prev = seen.get(key);
          if (prev !== undefined && prev !== i) {
            ctx.addIssue({ code: 'custom', path: ['routes', i, 'recipients', j], message: `"${describePattern(pat)}" is already listed by routes[${prev}]` });
          }
          seen.set(key, i);
        }),
      );
      if (catchAll && served.size === 0) {
        // "*" means any user of the served domains, never any domain.
        ctx.addIssue({ code: 'custom', path: catchAll, message: 'the catch-all "*" needs served domains: list them in "domains" or in other patterns' });
      }
      // URL placeholders must have a value for every recipient the route takes.
      const checkPlaceholders = (targets: unknown, at: (string | number)[], patterns: unknown[]) => {
        const regexNames = patterns.map((p) => {
          if (!p || typeof p !== 'object' || typeof (p as { local?: unknown }).local !== 'string') return new Set<string>();
          const checked = checkRegex((p as { local: string }).local);
          return new Set('info' in checked ? checked.info.names : []);
        });
        arr<unknown>(targets).map(obj).forEach((t, k) => {
          if (typeof t.url !== 'string') return;
          for (const name of urlPlaceholders(t.url)) {
            if ((URL_PLACEHOLDERS as readonly string[]).includes(name)) continue;
            if (regexNames.length && regexNames.every((s) => s.has(name))) continue;
            ctx.addIssue({
              code: 'custom',
              path: [...at, k, 'url'],
              message: `placeholder {${name}} is not ${URL_PLACEHOLDERS.map((x) => `{${x}}`).join(', ')} or a named group of every recipient regex of the route`,
            });
          }
        });
      };
      routes.forEach((r, i) => checkPlaceholders(r.targets, ['routes', i, 'targets'], arr<unknown>(r.recipients)));
      // Scanning: unique scanner ids; quarantine needs somewhere to go, and a fixed one.
      const scan = obj(cfg.scan);
      const ids = new Set<string>();
      arr<unknown>(scan.scanners).map(obj).forEach((sc, i) => {
        const id = typeof sc.id === 'string' ? sc.id : String(sc.type);
        if (ids.has(id)) ctx.addIssue({ code: 'custom', path: ['scan', 'scanners', i, 'id'], message: `duplicate scanner id "${id}" (give each scanner of a type an id)` });
        ids.add(id);
      });
      routes.forEach((r, i) => {
        const rs = obj(r.scan);
        if (rs.enabled === false || ids.size === 0) return;
        const quarantines = [rs.spam ?? scan.spam, rs.virus ?? scan.virus].includes('quarantine');
        if (quarantines && !Array.isArray(rs.quarantine)) {
          ctx.addIssue({ code: 'custom', path: ['routes', i, 'scan', 'quarantine'], message: 'the route quarantines (scan.spam or scan.virus) and needs quarantine targets' });
        }
        checkRequired(rs.quarantine, ['routes', i, 'scan', 'quarantine']);
        arr<unknown>(rs.quarantine).map(obj).forEach((t, k) => {
          if (typeof t.url === 'string' && urlPlaceholders(t.url).length) {
            ctx.addIssue({ code: 'custom', path: ['routes', i, 'scan', 'quarantine', k, 'url'], message: 'a quarantine target takes no URL placeholders' });
          }
        });
      });
      checkPlaceholders(obj(cfg.postmaster).targets, ['postmaster', 'targets'], []);
      // The console shows every message: off loopback, only to those who authenticate (docs/console.md).
      const consoleCfg = cfg.console ? obj(cfg.console) : null;
      if (consoleCfg && typeof consoleCfg.listen === 'string' && !consoleCfg.auth) {
        const hp = parseHostPort(consoleCfg.listen);
        if (hp && !isLoopbackHost(hp.host)) {
          ctx.addIssue({ code: 'custom', path: ['console', 'listen'], message: `${consoleCfg.listen} is not a loopback address: set console.auth (a token or users), or listen on 127.0.0.1` });
        }
      }
    },
    { when: () => true },
  );

/** The configuration as written (input side of the schema). */
export type ConfigInput = z.input<typeof configSchema>;
/** The validated configuration with every default filled in. */
export type Config = z.output<typeof configSchema>;
export type TargetConfig = z.output<typeof targetSchema>;
export type WebhookTargetConfig = Extract<TargetConfig, { type: 'webhook' }>;
export type LocalTargetConfig = Extract<TargetConfig, { type: 'local' }>;
export type LambdaTargetConfig = Extract<TargetConfig, { type: 'lambda' }>;
export type S3TargetConfig = Extract<TargetConfig, { type: 's3' }>;
export type SkipStoreConfig = z.output<typeof skipStoreSchema>;
export type ListenerConfig = z.output<typeof listenerSchema>;
export type RouteConfig = z.output<typeof routeSchema>;
export type DnsblZoneConfig = z.output<typeof dnsblZoneSchema>;
export type ScannerConfig = z.output<typeof scannerSchema>;
export type ScanConfig = z.output<typeof scanSchema>;
