/**
 * A skip-store shared by every gateway instance, in a DynamoDB table:
 *
 *   partition key  id         (S)  the delivery id
 *   attribute      expiresAt  (N)  epoch seconds; the table's TTL attribute
 *   attribute      doneAt     (N)  epoch milliseconds of the success
 *
 * DynamoDB's TTL deletes expired items lazily (typically within days), so a
 * lookup also compares expiresAt itself. Like every skip-store it is advisory
 * (skip-store.ts): a lookup that fails or times out means "not seen", and the
 * target is called again (a duplicate the receiver drops by its id).
 */
import { ConditionalCheckFailedException, GetItemCommand, PutItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createAwsClients, type AwsClientCache } from './aws-clients.js';
import type { SkipStore } from './skip-store.js';

export interface DynamoSkipStoreOptions {
  table: string;
  region?: string | undefined;
  endpoint?: string | undefined;
  /** How long a success is remembered, in ms. */
  ttl: number;
  /** Budget of one call, in ms. */
  timeout: number;
  now: () => number;
}

export class DynamoSkipStore implements SkipStore {
  private readonly client: DynamoDBClient;
  private readonly own: AwsClientCache | null;

  constructor(
    private readonly opts: DynamoSkipStoreOptions,
    aws?: AwsClientCache,
  ) {
    this.own = aws ? null : createAwsClients();
    this.client = (aws ?? this.own!).dynamodb({ region: opts.region, endpoint: opts.endpoint });
  }

  async has(deliveryId: string): Promise<boolean> {
    const out = await this.client.send(
      new GetItemCommand({
        TableName: this.opts.table,
        Key: { id: { S: deliveryId } },
        // A success written by another instance a moment ago must be seen.
        ConsistentRead: true,
        ProjectionExpression: 'expiresAt',
      }),
      { abortSignal: AbortSignal.timeout(this.opts.timeout) },
    );
    const expires = Number(out.Item?.expiresAt?.N);
    return Number.isFinite(expires) && expires > Math.floor(this.opts.now() / 1000);
  }

  async add(deliveryId: string): Promise<void> {
    const now = this.opts.now();
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.opts.table,
          Item: {
            id: { S: deliveryId },
            expiresAt: { N: String(Math.ceil((now + this.opts.ttl) / 1000)) },
            doneAt: { N: String(now) },
          },
          // The first success is kept; an expired item TTL has not removed yet is replaced.
          ConditionExpression: 'attribute_not_exists(id) OR expiresAt <= :now',
          ExpressionAttributeValues: { ':now': { N: String(Math.floor(now / 1000)) } },
        }),
        { abortSignal: AbortSignal.timeout(this.opts.timeout) },
      );
    } catch (err) {
      // Already remembered (by this instance or another): nothing to do.
      if (err instanceof ConditionalCheckFailedException || (err as { name?: string }).name === 'ConditionalCheckFailedException') return;
      throw err;
    }
  }

  async close(): Promise<void> {
    this.own?.destroy();
  }
}
