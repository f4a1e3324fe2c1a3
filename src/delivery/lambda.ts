/**
 * The lambda target: a synchronous (RequestResponse) Invoke of an AWS Lambda
 * function with the `email.received` event — the same JSON a webhook gets —
 * as its payload, and the delivery id in the client context
 * (`context.clientContext.custom.deliveryId`, equal to a webhook's
 * `webhook-id`) so the function can deduplicate.
 *
 * The function's return decides: a structured answer (`{"action":"reject"}`,
 * `"tempfail"`, `"accept"`, as a webhook's JSON body) is followed; any other
 * successful return acknowledges. A function error (thrown or returned as an
 * error), throttling, a missing function or permission, and network trouble
 * all defer the message (451): a bug or a misconfiguration is fixed by an
 * operator while senders retry, it never bounces mail.
 *
 * Events over `maxEventSize` (Lambda takes at most 6 MB synchronously) go as a
 * claim-check pointer; the function fetches the full event from its URL.
 */
import { InvokeCommand, type InvokeCommandOutput, type LambdaClient } from '@aws-sdk/client-lambda';
import { GatewayError } from '../core/errors.js';
import { failure, type FailureName } from '../transaction/replies.js';
import type { LambdaTargetConfig } from '../config/schema.js';
import { defaultLambdaId } from '../message/ids.js';
import { pointerEvent } from './claim-check.js';
import { interpretReceiverAnswer } from './reply.js';
import { createAwsClients, sdkErrorInfo, sdkFailure, type AwsClientCache } from './aws-clients.js';
import type { DeliveryMessage, Target } from './types.js';

type Deferral = Extract<FailureName, 'PG_DELIVERY_CONGESTED' | 'PG_DELIVERY_NO_ANSWER' | 'PG_DELIVERY_CONNECTION_BROKEN' | 'PG_DELIVERY_RECEIVER_FAULT'>;

function deferred(message: string, reply: Deferral, cause?: unknown, retryAfterMs?: number, retryable = true): GatewayError {
  // The sender learns nothing of our function names or errors: the reply's text is the table's.
  // A code bug or a misconfiguration is not fixed by trying again within seconds (retryable).
  return failure(reply, { message, retryAfterMs, retryable, cause });
}

export class LambdaTarget implements Target {
  readonly type = 'lambda';
  readonly id: string;
  readonly required: boolean;
  private readonly client: LambdaClient;
  /** Set when this target made its own clients (no shared cache was given). */
  private readonly own: AwsClientCache | null;

  constructor(
    private readonly cfg: LambdaTargetConfig,
    aws?: AwsClientCache,
  ) {
    this.id = cfg.id ?? defaultLambdaId(cfg);
    this.required = cfg.required;
    this.own = aws ? null : createAwsClients();
    this.client = (aws ?? this.own!).lambda({ region: cfg.region, endpoint: cfg.endpoint });
  }

  private get name(): string {
    return `lambda ${this.cfg.functionName}${this.cfg.qualifier ? `:${this.cfg.qualifier}` : ''}`;
  }

  async deliver(msg: DeliveryMessage, deliveryId: string, signal: AbortSignal): Promise<void> {
    let payload: Uint8Array = msg.eventJson;
    let pointer = false;
    if (msg.eventJson.length > this.cfg.maxEventSize) {
      payload = Buffer.from(JSON.stringify(pointerEvent(msg.event, await msg.claimCheck())));
      pointer = true;
    }
    let out: InvokeCommandOutput;
    try {
      out = await this.invoke(payload, msg, deliveryId, signal);
    } catch (err) {
      // Lambda measured the request as too large after all (its limit counts
      // the whole request): send the pointer once instead, like a webhook's 413.
      if (!pointer && sdkErrorInfo(err).name === 'RequestTooLargeException') {
        payload = Buffer.from(JSON.stringify(pointerEvent(msg.event, await msg.claimCheck())));
        out = await this.invoke(payload, msg, deliveryId, signal).catch((e: unknown) => {
          throw this.translate(e);
        });
      } else {
        throw this.translate(err);
      }
    }
    this.outcome(out);
  }

  private invoke(payload: Uint8Array, msg: DeliveryMessage, deliveryId: string, signal: AbortSignal): Promise<InvokeCommandOutput> {
    // Lambda hands ClientContext (base64 JSON, at most 3583 bytes) to the
    // function for synchronous invocations; the Node.js runtime exposes it as
    // context.clientContext.
    const clientContext = Buffer.from(JSON.stringify({ custom: { deliveryId, queueId: msg.queueId, source: 'postgate' } })).toString('base64');
    return this.client.send(
      new InvokeCommand({
        FunctionName: this.cfg.functionName,
        ...(this.cfg.qualifier ? { Qualifier: this.cfg.qualifier } : {}),
        InvocationType: 'RequestResponse',
        ClientContext: clientContext,
        Payload: payload,
      }),
      { abortSignal: AbortSignal.any([signal, AbortSignal.timeout(this.cfg.timeout)]) },
    );
  }

  /** SDK errors → GatewayError, at the border. */
  private translate(err: unknown): GatewayError {
    if (err instanceof GatewayError) return err;
    const { name, status } = sdkErrorInfo(err);
    if (name === 'TooManyRequestsException' || status === 429) {
      // RFC 3463 X.4.5: mail system congestion. Lambda may say when to retry.
      const after = Number((err as { retryAfterSeconds?: unknown }).retryAfterSeconds);
      return deferred(`${this.name}: throttled (${name})`, 'PG_DELIVERY_CONGESTED', err, Number.isFinite(after) && after > 0 ? after * 1000 : undefined);
    }
    // ResourceNotFound, AccessDenied, a function still being created, a
    // service error: an operator's matter, never a reason to bounce.
    const f = sdkFailure(err);
    return deferred(`${this.name}: ${f.why}`, f.reply, err, undefined, !(status !== undefined && status >= 400 && status < 500));
  }

  private outcome(out: InvokeCommandOutput): void {
    const text = out.Payload && out.Payload.length ? Buffer.from(out.Payload).toString('utf8') : '';
    if (out.FunctionError) {
      // "Unhandled" (thrown, timed out, out of memory) or "Handled": a code
      // or environment problem. Defer: the sender retries once it is fixed.
      let detail = '';
      try {
        const e = JSON.parse(text) as { errorType?: unknown; errorMessage?: unknown };
        detail = [e.errorType, e.errorMessage].filter((v) => typeof v === 'string').join(': ').slice(0, 300);
      } catch {
        /* not JSON: the type alone is logged */
      }
      throw deferred(`${this.name}: function error ${out.FunctionError}${detail ? ` (${detail})` : ''}`, 'PG_DELIVERY_RECEIVER_FAULT', undefined, undefined, false);
    }
    if (out.StatusCode !== undefined && (out.StatusCode < 200 || out.StatusCode > 299)) {
      throw deferred(`${this.name}: invoke answered status ${out.StatusCode}`, 'PG_DELIVERY_RECEIVER_FAULT');
    }
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: an ordinary return value, and so an acknowledgement.
    }
    const answer = interpretReceiverAnswer(body, this.id);
    if (answer.action === 'refuse') throw answer.error;
  }

  async close(): Promise<void> {
    this.own?.destroy();
  }
}
