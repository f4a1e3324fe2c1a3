/**
 * Problems of a valid configuration that still deserve a word before the
 * gateway runs: `postgate check` prints them on standard error (exit 0) and
 * `postgate serve` logs each once at start.
 *
 * Warnings name the setting and the fix, never a secret's value: a secret
 * may come from `${NAME}` in the environment, and these lines end up in logs.
 */
import type { ResolvedConfig } from './load.js';
import type { TargetConfig, WebhookTargetConfig } from './schema.js';
import { secretKey } from '../delivery/signing.js';

export interface ConfigWarning {
  /** Where in the configuration, e.g. `routes[0].targets[1].secret`. */
  path: string;
  /** One line: what is wrong and how to fix it. */
  message: string;
}

/**
 * Shortest `whsec_` key accepted without a warning: the functions' ingest
 * (POSTGATE_INGEST_SECRETS) refuses shorter ones, and a short HMAC key can be
 * guessed offline from one signed event.
 */
const MIN_KEY_BYTES = 16;

const NEW_SECRET = 'a secret from `postgate webhook-secret`';

/**
 * The HMAC key the JavaScript Standard Webhooks libraries (`standardwebhooks`,
 * and `svix`, which wraps it) derive from a secret by default, or null where
 * they throw. Mirrors their decoding: a leading "whsec_" is dropped, the rest
 * is strict base64 (@stablelib/base64): standard alphabet only, at least 4
 * characters, at most two trailing "=", and an unpaired last character of a
 * group ignored; an empty key is refused. Without the prefix the whole
 * string is decoded as base64, so a plain secret never gives its own bytes.
 */
export function standardWebhooksKey(secret: string): Buffer | null {
  const b64 = secret.startsWith('whsec_') ? secret.slice(6) : secret;
  const pad = /=*$/.exec(b64)![0].length;
  if (b64.length < 4 || pad > 2) return null;
  let body = b64.slice(0, b64.length - pad);
  if (body.length % 4 === 1) body = body.slice(0, -1);
  if (!/^[A-Za-z0-9+/]*$/.test(body)) return null;
  const key = Buffer.from(body, 'base64');
  return key.length ? key : null;
}

/** Warnings of one `secret` value; `at` is its path. The value itself is never quoted. */
function secretWarnings(secret: string, at: string): ConfigWarning[] {
  // What postgate signs with (src/delivery/signing.ts): whsec_ → base64-decoded, else UTF-8 bytes.
  const signed = secretKey(secret);
  if (secret.startsWith('whsec_')) {
    const lib = standardWebhooksKey(secret);
    if (!lib || !lib.equals(signed)) {
      return [
        {
          path: at,
          message:
            'the base64 after "whsec_" is not valid (standard alphabet, "=" only as padding), so Standard Webhooks libraries refuse it or derive another key than postgate signs with; use ' +
            NEW_SECRET,
        },
      ];
    }
    if (signed.length < MIN_KEY_BYTES) {
      return [{ path: at, message: `the key after "whsec_" is only ${signed.length} bytes (at least ${MIN_KEY_BYTES}); use ${NEW_SECRET}` }];
    }
    return [];
  }
  if (/^wh(?:sk|pk)_/.test(secret)) {
    return [
      {
        path: at,
        message: 'this is an ed25519 key (whsk_/whpk_), used here as a plain HMAC secret: put the whsk_ private key in signingKey, or use ' + NEW_SECRET,
      },
    ];
  }
  // {format: 'raw'} makes the libraries take one byte per character
  // (charCodeAt & 0xff), which equals postgate's UTF-8 bytes only for ASCII.
  if (/[^\x00-\x7f]/.test(secret)) {
    return [
      {
        path: at,
        message: `a plain secret with non-ASCII characters: postgate signs its UTF-8 bytes, Standard Webhooks libraries read one byte per character even with {format: 'raw'}, so verification fails; use ${NEW_SECRET}`,
      },
    ];
  }
  return [
    {
      path: at,
      message: `a plain secret (no "whsec_" prefix) fails Standard Webhooks verification by default: receivers must use {format: 'raw'}; prefer ${NEW_SECRET}`,
    },
  ];
}

function webhookWarnings(t: WebhookTargetConfig, at: string): ConfigWarning[] {
  if (t.format !== 'postgate') {
    // Mailgun and Mandrill formats are signed with signingKey (required); the others authenticate with the URL's userinfo.
    if (t.format === 'mailgun' || t.format === 'mailgun-mime' || t.format === 'mandrill' || t.signed === false || /^https?:\/\/[^/@]+@/i.test(t.url)) return [];
    return [{ path: at, message: `format ${t.format} carries no signature: put credentials in the url (https://user:password@host/…, sent as basic auth), or signed: false to send without on purpose` }];
  }
  if (t.secret === undefined && t.signingKey === undefined) {
    if (t.signed === false) return [];
    return [{ path: at, message: 'events are sent unsigned; add a secret from `postgate webhook-secret`, or `signed: false` to send unsigned on purpose' }];
  }
  if (t.secret === undefined) return [];
  if (typeof t.secret === 'string') return secretWarnings(t.secret, `${at}.secret`);
  return t.secret.flatMap((s, i) => secretWarnings(s, `${at}.secret[${i}]`));
}

export function configWarnings(cfg: ResolvedConfig): ConfigWarning[] {
  const out: ConfigWarning[] = [];
  const scan = (targets: readonly TargetConfig[], at: string) =>
    targets.forEach((t, i) => {
      if (t.type === 'webhook') out.push(...webhookWarnings(t, `${at}[${i}]`));
    });
  cfg.routes.forEach((r, i) => scan(r.targets, `routes[${i}].targets`));
  // Without postmaster.targets the postmaster goes to the local store: nothing to warn about.
  if (cfg.postmaster.targets) scan(cfg.postmasterTargets, 'postmaster.targets');
  return out;
}
