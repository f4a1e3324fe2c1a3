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
import { isPasswordHash } from '../auth/password.js';

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

const listenAddress = z
  .string()
  .describe('host:port to listen on, e.g. "127.0.0.1:2525", "[::]:25", ":25" (all interfaces).')
  .refine((v) => parseHostPort(v) !== null, { message: 'expected host:port, e.g. "127.0.0.1:2525" or "[::]:25"' });

// RFC 1035 §2.3.1 preferred name syntax (lenient on label starts, as real mail is).
const DOMAIN_RE = /^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9_](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

const domain = z
  .string()
  .refine((v) => DOMAIN_RE.test(v), { message: 'not a domain name' })
  .transform((v) => v.toLowerCase());

/**
 * A recipient pattern: `user@domain` (exact), `*@domain` (any user of the
 * domain), or a local part with `*` wildcards (`support+*@domain`). The domain
 * part is always literal, so the served domains are known (never an open relay).
 */
const recipientPattern = z.string().refine(
  (v) => {
    const at = v.lastIndexOf('@');
    return at > 0 && DOMAIN_RE.test(v.slice(at + 1)) && !/\s/.test(v);
  },
  { message: 'expected "user@domain", "*@domain" or a local part with * wildcards' },
);

const secretRef = z.string().min(1);

const webhookTarget = z
  .strictObject({
    type: z.literal('webhook'),
    id: z.string().min(1).optional().describe('Stable target id (part of the idempotent delivery id). Default: "webhook:<url>".'),
    url: z
      .string()
      .url()
      .refine((u) => /^https?:/i.test(u), { message: 'webhook url must be http:// or https://' }),
    secret: secretRef
      .optional()
      .describe('Standard Webhooks signing secret ("whsec_" + base64). Use "${ENV_NAME}" to keep it out of the file.'),
    headers: z.record(z.string(), z.string()).default({}).describe('Extra request headers.'),
    timeout: duration('Time allowed for the receiver to answer.').default(25_000),
    required: z.boolean().default(true).describe('The 250 waits for this target. Every route needs at least one.'),
  })
  .describe('POST the event as JSON with Standard Webhooks headers.');

const localTarget = z
  .strictObject({
    type: z.literal('local'),
    id: z.string().min(1).optional(),
    path: z.string().min(1).optional().describe('Directory of the store. Default: storage.path.'),
    required: z.boolean().default(true),
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
    .min(1)
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
  .url()
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
      .default(5 * 1024 * 1024),
    timeout: duration('Time allowed for the function to return.').default(25_000),
    required: z.boolean().default(true).describe('The 250 waits for this target. Every route needs at least one.'),
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
  })
  .superRefine((t, ctx) => {
    if (t.kmsKeyId !== undefined && t.serverSideEncryption !== 'aws:kms') {
      ctx.addIssue({ code: 'custom', path: ['kmsKeyId'], message: 'kmsKeyId needs serverSideEncryption: "aws:kms"' });
    }
    if (t.emlKey === t.eventKey) ctx.addIssue({ code: 'custom', path: ['eventKey'], message: 'must differ from emlKey, or the event would overwrite the message' });
  })
  .describe('Archive the raw .eml and the JSON event in an S3 bucket (or an S3-compatible store).');

/** The default id of a lambda target (logged; part of every delivery id). */
export function defaultLambdaId(t: { functionName: string; qualifier?: string | undefined }): string {
  return `lambda:${t.functionName}${t.qualifier ? `:${t.qualifier}` : ''}`;
}

/** The default id of an s3 target (logged; part of every delivery id). */
export function defaultS3Id(t: { bucket: string; prefix: string }): string {
  return `s3:${t.bucket}/${t.prefix}`;
}

export const targetSchema = z.discriminatedUnion('type', [webhookTarget, localTarget, lambdaTarget, s3Target]);

/**
 * Where delivery ids that succeeded are remembered (DESIGN §2): in-process, or
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


const routeSchema = z.strictObject({
  name: z.string().min(1).optional().describe('Name used in logs and metrics. Default: "route-<n>".'),
  recipients: z.array(recipientPattern).min(1).describe('Recipient patterns this route accepts.'),
  targets: z.array(targetSchema).min(1).describe('Where accepted messages go.'),
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
});

const certificateSchema = z.strictObject({
  cert: z.string().min(1).describe('PEM certificate (chain) file.'),
  key: z.string().min(1).describe('PEM private key file.'),
  hostnames: z
    .array(
      z
        .string()
        .refine((v) => DOMAIN_RE.test(v.replace(/^\*\./, '')), { message: 'not a host name (a leading "*." wildcard is allowed)' })
        .transform((v) => v.toLowerCase()),
    )
    .optional()
    .describe('SNI names served with this certificate ("*.example.test" allowed). Default: from the certificate.'),
});

const userSchema = z.strictObject({
  username: z.string().min(1),
  password: secretRef
    .describe('scrypt hash from "postgate hash-password" (PHC format "$scrypt$..."), or "${ENV_NAME}" holding one.')
    // Plain-text passwords in a config file end up in backups and tickets.
    .refine((v) => isPasswordHash(v) || /^\$\{[A-Za-z_][A-Za-z0-9_]*\}$/.test(v), {
      message: 'expected a scrypt hash: run "postgate hash-password" and paste its output',
    }),
});

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
        earlyTalker: z
          .strictObject({
            mode: z.enum(['off', 'pause', 'multiline']).default('multiline'),
            delay: duration('How long a new client must wait before talking.', 0).default(300),
            passTtl: duration('How long a client that waited is exempt from the pause.').default(3_600_000),
          })
          .prefault({})
          .describe('Pre-greeting test: clients that talk before the greeting get 554.'),
      })
      .prefault({}),
    listeners: z.array(listenerSchema).min(1).optional().describe('Several listeners with roles; default: one mx listener at smtp.listen.'),
    tls: z
      .strictObject({
        certificates: z.array(certificateSchema).min(1),
        minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
        watch: z.boolean().default(true).describe('Reload certificates when the files change.'),
        watchInterval: duration('How often certificate files are checked for changes.', 10).default(5_000),
      })
      .optional(),
    auth: z
      .strictObject({
        users: z.array(userSchema).min(1),
        allowInsecure: z.boolean().default(false).describe('Allow AUTH without TLS (testing only; RFC 4954 §4).'),
      })
      .optional(),
    domains: z.array(domain).default([]).describe('Extra served domains (their unknown users get 550 5.1.1).'),
    routes: z.array(routeSchema).default([]),
    postmaster: z
      .strictObject({
        targets: z.array(targetSchema).min(1).optional().describe('Where postmaster@ mail goes. Default: the local store.'),
      })
      .prefault({}),
    storage: z.strictObject({ path: z.string().min(1).default('./data') }).prefault({}),
    delivery: z
      .strictObject({
        deadline: duration('Budget for all targets of one message before the reply becomes 451.').default(30_000),
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
    http: z
      .union([
        z.literal(false),
        z.strictObject({ listen: listenAddress.default('127.0.0.1:9025') }),
      ])
      .default({ listen: '127.0.0.1:9025' })
      .describe('Operations endpoint (/healthz, /readyz, /metrics); false to disable.'),
    mailAuth: z
      .strictObject({
        enabled: z.boolean().default(false).describe('Verify SPF, DKIM, DMARC and ARC of every accepted message (DNS lookups).'),
        authservId: z.string().min(1).optional().describe('authserv-id of the Authentication-Results header (RFC 8601). Default: smtp.hostname.'),
        timeout: duration('Budget for all DNS lookups of one message; past it the verdicts are temperror.').default(10_000),
      })
      .prefault({})
      .describe('Sender authentication verdicts in the event (`auth`) and an Authentication-Results header.'),
    blobs: z
      .strictObject({
        inlineLimit: bytes('Attachments up to this size travel inside the event (base64); larger ones are stored and linked (claim check).').default(
          256 * 1024,
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
        // an explicit `required: false` on every target (the default is true)
        if (list.length && list.every((t) => t.required === false)) {
          ctx.addIssue({ code: 'custom', path: at, message: 'needs at least one required target (the 250 waits for it)' });
        }
      };
      const routes = arr<unknown>(cfg.routes).map(obj);
      routes.forEach((r, i) => checkRequired(r.targets, ['routes', i, 'targets']));
      checkRequired(obj(cfg.postmaster).targets, ['postmaster', 'targets']);
      // A pattern listed by two routes would make the route of a recipient depend on order.
      const seen = new Map<string, number>();
      routes.forEach((r, i) =>
        arr<unknown>(r.recipients).forEach((p, j) => {
          if (typeof p !== 'string') return;
          const key = p.toLowerCase();
          const prev = seen.get(key);
          if (prev !== undefined && prev !== i) {
            ctx.addIssue({ code: 'custom', path: ['routes', i, 'recipients', j], message: `"${p}" is already listed by routes[${prev}]` });
          }
          seen.set(key, i);
        }),
      );
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
