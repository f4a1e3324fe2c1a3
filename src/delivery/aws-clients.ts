/**
 * AWS SDK v3 clients shared by the targets and the skip-store of one gateway:
 * one client per (service, region, endpoint), so targets that talk to the same
 * place share one connection pool, and all of them are destroyed on close.
 *
 * Credentials come from the SDK's default chain (environment variables, the
 * shared config files, the container or instance role); postgate never reads,
 * stores or logs them.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { S3Client } from '@aws-sdk/client-s3';
import { SQSClient } from '@aws-sdk/client-sqs';
import type { FailureName } from '../transaction/replies.js';

export interface AwsLocation {
  /** Default: the SDK's chain (AWS_REGION, the shared config file). */
  region?: string | undefined;
  /** An S3-compatible or local endpoint instead of AWS's own. */
  endpoint?: string | undefined;
}

export interface AwsClientCache {
  lambda(at: AwsLocation): LambdaClient;
  s3(at: AwsLocation & { forcePathStyle?: boolean | undefined }): S3Client;
  dynamodb(at: AwsLocation): DynamoDBClient;
  sqs(at: AwsLocation): SQSClient;
  /** Destroys every client made (their sockets close). */
  destroy(): void;
}

const location = (at: AwsLocation) => ({
  ...(at.region ? { region: at.region } : {}),
  ...(at.endpoint ? { endpoint: at.endpoint } : {}),
});

export function createAwsClients(): AwsClientCache {
  const clients = new Map<string, { destroy(): void }>();
  const get = <T extends { destroy(): void }>(key: string, make: () => T): T => {
    let c = clients.get(key) as T | undefined;
    if (!c) {
      c = make();
      clients.set(key, c);
    }
    return c;
  };
  return {
    lambda: (at) =>
      // maxAttempts 1: an invocation the SDK gives up on (a timeout, an
      // abort) may still be running, and a second one would run the function
      // twice in parallel. Retries are the delivery loop's, under its deadline,
      // and the sender's (451).
      get(`lambda|${at.region ?? ''}|${at.endpoint ?? ''}`, () => new LambdaClient({ ...location(at), maxAttempts: 1 })),
    s3: (at) =>
      get(
        `s3|${at.region ?? ''}|${at.endpoint ?? ''}|${at.forcePathStyle ? 'path' : 'host'}`,
        () => new S3Client({ ...location(at), ...(at.forcePathStyle ? { forcePathStyle: true } : {}) }),
      ),
    dynamodb: (at) => get(`dynamodb|${at.region ?? ''}|${at.endpoint ?? ''}`, () => new DynamoDBClient(location(at))),
    sqs: (at) => get(`sqs|${at.region ?? ''}|${at.endpoint ?? ''}`, () => new SQSClient(location(at))),
    destroy() {
      for (const c of clients.values()) c.destroy();
      clients.clear();
    },
  };
}

/** The SDK's error fields postgate looks at, read defensively (they are another library's). */
export function sdkErrorInfo(err: unknown): { name: string; status: number | undefined; code: string | undefined } {
  const e = (err ?? {}) as { name?: unknown; code?: unknown; $metadata?: { httpStatusCode?: unknown } };
  const status = typeof e.$metadata?.httpStatusCode === 'number' ? e.$metadata.httpStatusCode : undefined;
  return {
    name: typeof e.name === 'string' ? e.name : 'Error',
    status,
    code: typeof e.code === 'string' ? e.code : undefined,
  };
}

/** Node network error codes: the endpoint could not be reached at all. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * Why an SDK call failed, in a word for the log, and the reply of the 451
 * (RFC 3463 §3.5, §3.4): no answer from the host (4.4.1), a bad connection
 * or timeout (4.4.2), anything the service itself answered (4.3.0).
 */
export function sdkFailure(err: unknown): {
  why: string;
  reply: Extract<FailureName, 'PG_DELIVERY_NO_ANSWER' | 'PG_DELIVERY_CONNECTION_BROKEN' | 'PG_DELIVERY_RECEIVER_FAULT'>;
  network: boolean;
} {
  const { name, status, code } = sdkErrorInfo(err);
  if (name === 'AbortError' || name === 'TimeoutError') return { why: 'timeout', reply: 'PG_DELIVERY_CONNECTION_BROKEN', network: true };
  if (status === undefined) {
    if (code && UNREACHABLE.has(code)) return { why: code, reply: 'PG_DELIVERY_NO_ANSWER', network: true };
    return { why: code ?? name, reply: 'PG_DELIVERY_CONNECTION_BROKEN', network: true };
  }
  return { why: `${name} (HTTP ${status})`, reply: 'PG_DELIVERY_RECEIVER_FAULT', network: false };
}
