/**
 * The webhook target: POST the event as JSON with Standard Webhooks headers,
 * signed at send time, over an undici Pool per origin (keep-alive; POST is
 * never pipelined). 2xx is an acknowledgement; anything else, a timeout or a
 * connection error defers the message (451 4.3.0) so the sender retries.
 */
import { Pool, errors as undiciErrors } from 'undici';
import { GatewayError } from '../core/errors.js';
import { secretKey, signPayload } from './signing.js';
import type { DeliveryMessage, Target } from './types.js';
import { defaultWebhookId } from '../message/ids.js';
import type { WebhookTargetConfig } from '../config/schema.js';

export interface WebhookDeps {
  /** The pool for an origin; shared by the targets of one gateway. */
  pool(origin: string): Pool;
  now(): number;
}

export function createPoolCache(): { pool(origin: string): Pool; close(): Promise<void> } {
  const pools = new Map<string, Pool>();
  return {
    pool(origin) {
      let p = pools.get(origin);
      if (!p) {
        p = new Pool(origin, { connections: 64, connectTimeout: 10_000, keepAliveTimeout: 30_000 });
        pools.set(origin, p);
      }
      return p;
    },
    async close() {
      await Promise.all([...pools.values()].map((p) => p.close().catch(() => undefined)));
      pools.clear();
    },
  };
}

function deferred(message: string, cause?: unknown): GatewayError {
  return new GatewayError({
    code: 'PG_DELIVERY_FAILED',
    message,
    // The sender sees no URL or status of ours, only that it should retry.
    publicMessage: 'Temporary delivery failure, try again later',
    smtp: { code: 451, enhanced: '4.3.0' },
    transient: true,
    cause,
  });
}


export class WebhookTarget implements Target {
  readonly type = 'webhook';
  readonly id: string;
  readonly required: boolean;
  private readonly url: URL;
  private readonly key: Buffer | undefined;

  constructor(
    private readonly cfg: WebhookTargetConfig,
    private readonly deps: WebhookDeps,
  ) {
    this.id = cfg.id ?? defaultWebhookId(cfg.url);
    this.required = cfg.required;
    this.url = new URL(cfg.url);
    this.key = cfg.secret ? secretKey(cfg.secret) : undefined;
  }

  async deliver(msg: DeliveryMessage, deliveryId: string, signal: AbortSignal): Promise<void> {
    const timestamp = Math.floor(this.deps.now() / 1000);
    const headers: Record<string, string> = {
      ...this.cfg.headers,
      'content-type': 'application/json',
      'user-agent': 'postgate',
      'webhook-id': deliveryId,
      'webhook-timestamp': String(timestamp),
    };
    if (this.key) headers['webhook-signature'] = signPayload(this.key, deliveryId, timestamp, msg.eventJson);
    if (this.url.username) {
      headers.authorization = `Basic ${Buffer.from(`${decodeURIComponent(this.url.username)}:${decodeURIComponent(this.url.password)}`).toString('base64')}`;
    }
    let statusCode: number;
    try {
      const res = await this.deps.pool(this.url.origin).request({
        method: 'POST',
        path: `${this.url.pathname}${this.url.search}`,
        headers,
        body: msg.eventJson,
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.cfg.timeout)]),
        headersTimeout: this.cfg.timeout,
        bodyTimeout: this.cfg.timeout,
      });
      statusCode = res.statusCode;
      // Always consume the body so the connection goes back to the pool.
      await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
    } catch (err) {
      const why =
        err instanceof undiciErrors.UndiciError
          ? (err as { code?: string }).code ?? err.name
          : (err as Error).name === 'AbortError' || (err as Error).name === 'TimeoutError'
            ? 'timeout'
            : (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw deferred(`webhook ${this.url.origin}${this.url.pathname}: ${why}`, err);
    }
    if (statusCode < 200 || statusCode > 299) throw deferred(`webhook ${this.url.origin}${this.url.pathname} answered ${statusCode}`);
  }

  async close(): Promise<void> {}
}
