/**
 * Lambda's SQS event source mapping, played by the test: serverless-offline
 * runs HTTP and Invoke-API functions but does not poll queues. This polls
 * the queue on fauxqs like the mapping does (long poll, batches of up to 10,
 * every attribute), invokes the function through serverless-offline's Invoke
 * API with an `aws:sqs` event, and deletes the records the function did not
 * report in `batchItemFailures` (ReportBatchItemFailures). A function error
 * leaves the whole batch to reappear after its visibility timeout, as on AWS.
 */
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { DeleteMessageCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';

export interface PollResult {
  /** Records handed to the function. */
  records: number;
  /** Records it reported as failed. */
  failed: number;
  /** Invocations that ended in a function error. */
  functionErrors: number;
}

export async function pollOnce(
  sqs: SQSClient,
  lambda: LambdaClient,
  opts: { queueUrl: string; queueArn: string; functionName: string; waitSeconds?: number },
): Promise<PollResult> {
  const r = await sqs.send(
    new ReceiveMessageCommand({
      QueueUrl: opts.queueUrl,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: opts.waitSeconds ?? 0,
      MessageSystemAttributeNames: ['All'],
      AttributeNames: ['All'],
      MessageAttributeNames: ['All'],
    }),
  );
  const messages = r.Messages ?? [];
  if (!messages.length) return { records: 0, failed: 0, functionErrors: 0 };
  const event = {
    Records: messages.map((m) => ({
      messageId: m.MessageId,
      receiptHandle: m.ReceiptHandle,
      body: m.Body,
      attributes: m.Attributes ?? {},
      messageAttributes: m.MessageAttributes ?? {},
      md5OfBody: m.MD5OfBody,
      eventSource: 'aws:sqs',
      eventSourceARN: opts.queueArn,
      awsRegion: 'us-east-1',
    })),
  };
  const out = await lambda.send(new InvokeCommand({ FunctionName: opts.functionName, Payload: Buffer.from(JSON.stringify(event)) }));
  if (out.FunctionError) return { records: messages.length, failed: messages.length, functionErrors: 1 };
  const answer = JSON.parse(Buffer.from(out.Payload ?? []).toString('utf8') || '{}') as { batchItemFailures?: { itemIdentifier: string }[] };
  const failed = new Set((answer.batchItemFailures ?? []).map((f) => f.itemIdentifier));
  for (const m of messages) {
    if (!failed.has(m.MessageId!)) await sqs.send(new DeleteMessageCommand({ QueueUrl: opts.queueUrl, ReceiptHandle: m.ReceiptHandle! }));
  }
  return { records: messages.length, failed: failed.size, functionErrors: 0 };
}

/** Polls until `done()` holds or the time runs out; returns the number of polls. */
export async function pollUntil(
  sqs: SQSClient,
  lambda: LambdaClient,
  opts: { queueUrl: string; queueArn: string; functionName: string },
  done: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
): Promise<number> {
  const end = Date.now() + timeoutMs;
  let polls = 0;
  while (!(await done())) {
    if (Date.now() > end) throw new Error(`event source: condition not met within ${timeoutMs} ms after ${polls} polls`);
    polls++;
    const r = await pollOnce(sqs, lambda, { ...opts, waitSeconds: 0 });
    if (!r.records) await new Promise((res) => setTimeout(res, 100));
  }
  return polls;
}
