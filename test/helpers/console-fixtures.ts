/**
 * Messages for the console's store without an SMTP round trip: the retention
 * tests and the benchmark fill an index with thousands of them.
 */
import { MessageBytes } from '../../src/message/bytes.js';
import { newQueueId } from '../../src/message/ids.js';
import type { RecordedMessage } from '../../src/console/record.js';
import type { EmailEvent } from '../../src/message/event.js';

/** A delivered message received at `at`, with a ~`size` byte .eml and its event. */
export function fixtureMessage(at: number, i: number, size = 4096): RecordedMessage {
  const queueId = newQueueId(at);
  const rcpt = `user${i % 1000}@example.test`;
  const body = `Subject: fixture ${i}\r\nFrom: sender${i % 50}@example.org\r\nTo: ${rcpt}\r\n\r\n`.padEnd(size, 'x');
  const event = {
    type: 'email.received',
    timestamp: new Date(at).toISOString(),
    data: { id: queueId, subject: `fixture ${i}`, from: [{ name: '', address: `sender${i % 50}@example.org` }], headers: [{ name: 'Subject', value: `fixture ${i}` }], attachments: [], text: 'x' },
  } as unknown as EmailEvent;
  return {
    queueId,
    receivedAt: new Date(at),
    route: 'r',
    client: { address: '127.0.0.1', helo: 'client.example' },
    mailFrom: `sender${i % 50}@example.org`,
    rcptTo: [rcpt],
    size: body.length,
    reply: `250 2.0.0 Ok: queued as ${queueId}`,
    refused: false,
    quarantined: false,
    event,
    eventJson: Buffer.from(JSON.stringify(event)),
    message: MessageBytes.of(Buffer.from(body)),
    rawSha256: '0'.repeat(64),
    targets: [{ target: 'hook', kind: 'webhook', required: true, spooled: false }],
    attempts: [{ at: new Date(at).toISOString(), target: 'hook', kind: 'webhook', via: 'sync', outcome: 'delivered', latencyMs: 3 }],
  };
}
