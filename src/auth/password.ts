/**
 * Password hashes for SMTP AUTH users, stored in the configuration as PHC
 * strings (https://github.com/P-H-C/phc-string-format):
 *
 *   $scrypt$ln=15,r=8,p=3$<salt>$<hash>
 *
 * with salt and hash in standard base64 without padding, as the PHC format
 * specifies. scrypt (RFC 7914) is memory-hard, so guessing a leaked hash on
 * GPUs/ASICs costs memory as well as time. Defaults: N=2^15, r=8, p=3, one
 * of OWASP's recommended equivalents (the other, N=2^17, p=1, needs 128 MiB
 * per attempt, which a burst of AUTH attempts would turn into memory
 * pressure); 32 MiB and roughly 0.4 s of CPU per attempt here.
 *
 * The password is hashed as its UTF-8 bytes, unnormalized, so hashes made by
 * other scrypt/PHC tools for the same bytes verify here.
 *
 * Leaf module: node built-ins only.
 */

import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import type { ScryptOptions } from 'node:crypto';

export interface ScryptParams {
  /** log2 of the CPU/memory cost N. */
  log2N: number;
  /** Block size. */
  r: number;
  /** Parallelism. */
  p: number;
}

const DEFAULTS: ScryptParams = { log2N: 15, r: 8, p: 3 };
const SALT_BYTES = 16;
const KEY_BYTES = 32;

/*
 * Bounds on parameters read from a stored string. The configuration is an
 * input like any other: without them a hash with ln=30 would make every AUTH
 * attempt allocate terabytes or run for hours. Each scrypt call needs about
 * 128*N*r bytes (RFC 7914 §5) and time proportional to N*r*p, so the product
 * is bounded too: ln=20 with r=16 alone would need 2 GiB per attempt.
 */
const BOUNDS = { log2N: [10, 20], r: [1, 16], p: [1, 4] } as const;
const MAX_MEMORY_BYTES = 1024 * 1024 * 1024;
/** Salts and hashes from other tools vary in length; accept sane ones only. */
const SALT_LENGTH = [8, 64] as const;
const HASH_LENGTH = [16, 64] as const;

const PHC_RE = /^\$scrypt\$ln=(0|[1-9][0-9]{0,2}),r=(0|[1-9][0-9]{0,2}),p=(0|[1-9][0-9]{0,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;

interface ParsedHash {
  params: ScryptParams;
  salt: Buffer;
  hash: Buffer;
}

/**
 * Hashes a password with a fresh 16-byte random salt into a PHC string.
 * Throws a RangeError for parameters outside the bounds verifyPassword
 * accepts, so it never produces a hash that could not be verified.
 */
export async function hashPassword(password: string, opts?: { log2N?: number; r?: number; p?: number }): Promise<string> {
  if (typeof password !== 'string') throw new TypeError('password must be a string');
  const params: ScryptParams = {
    log2N: opts?.log2N ?? DEFAULTS.log2N,
    r: opts?.r ?? DEFAULTS.r,
    p: opts?.p ?? DEFAULTS.p,
  };
  const problem = paramsProblem(params);
  if (problem) throw new RangeError(`invalid scrypt parameters: ${problem}`);

  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(password, salt, params, KEY_BYTES);
  return `$scrypt$ln=${params.log2N},r=${params.r},p=${params.p}$${b64(salt)}$${b64(hash)}`;
}

/**
 * True when `password` matches `stored`. Resolves false, never rejects, for
 * a malformed string or parameters outside the bounds, so a bad entry in
 * the configuration fails authentication instead of the connection.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  try {
    if (typeof password !== 'string') return false;
    const parsed = parse(stored);
    if (!parsed) return false;
    const candidate = await derive(password, parsed.salt, parsed.params, parsed.hash.length);
    // Constant time: the comparison must not reveal how many leading bytes matched.
    return candidate.length === parsed.hash.length && timingSafeEqual(candidate, parsed.hash);
  } catch {
    return false;
  }
}

/** Whether `s` is a scrypt PHC string this module can verify (for configuration validation). */
export function isPasswordHash(s: string): boolean {
  return parse(s) !== undefined;
}

function parse(stored: unknown): ParsedHash | undefined {
  if (typeof stored !== 'string' || stored.length > 512) return undefined;
  const m = PHC_RE.exec(stored);
  if (!m) return undefined;
  const [, ln, r, p, saltText, hashText] = m;
  if (ln === undefined || r === undefined || p === undefined || saltText === undefined || hashText === undefined) return undefined;
  const params: ScryptParams = { log2N: Number(ln), r: Number(r), p: Number(p) };
  if (paramsProblem(params)) return undefined;
  const salt = unb64(saltText);
  const hash = unb64(hashText);
  if (!salt || salt.length < SALT_LENGTH[0] || salt.length > SALT_LENGTH[1]) return undefined;
  if (!hash || hash.length < HASH_LENGTH[0] || hash.length > HASH_LENGTH[1]) return undefined;
  return { params, salt, hash };
}

function paramsProblem(params: ScryptParams): string | undefined {
  for (const name of ['log2N', 'r', 'p'] as const) {
    const value = params[name];
    const [min, max] = BOUNDS[name];
    if (!Number.isInteger(value) || value < min || value > max) return `${name} must be an integer from ${min} to ${max}, got ${String(value)}`;
  }
  if (memoryNeeded(params) > MAX_MEMORY_BYTES) return `128 * 2^log2N * r must not exceed ${MAX_MEMORY_BYTES} bytes (1 GiB)`;
  return undefined;
}

function memoryNeeded(params: ScryptParams): number {
  return 128 * 2 ** params.log2N * params.r;
}

function derive(password: string, salt: Buffer, params: ScryptParams, keylen: number): Promise<Buffer> {
  const options: ScryptOptions = {
    N: 2 ** params.log2N,
    r: params.r,
    p: params.p,
    // Node refuses to run when 128*N*r exceeds maxmem (default 32 MiB, which
    // the defaults themselves hit); allow twice the need for its overhead.
    maxmem: 2 * memoryNeeded(params) + 1024 * 1024,
  };
  // The async form runs on the libuv thread pool, keeping the event loop free.
  return new Promise((resolve, reject) => {
    scrypt(Buffer.from(password, 'utf8'), salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function b64(buf: Buffer): string {
  return buf.toString('base64').replace(/=+$/, '');
}

/** Decodes unpadded base64, rejecting non-canonical text (it would not re-encode the same). */
function unb64(text: string): Buffer | undefined {
  if (text.length % 4 === 1) return undefined;
  const buf = Buffer.from(text, 'base64');
  return b64(buf) === text ? buf : undefined;
}
