#!/usr/bin/env node
/**
 * A parse loop to profile (not a benchmark: no baseline, no doc):
 *
 *   npm run build && node --cpu-prof --cpu-prof-dir=prof bench/profile.mjs [id] [seconds] [--streaming|--stream-input]
 *
 * parses the benchmark message `id` (default realistic-94k; see messages.mjs)
 * with parseMessage for `seconds` (default 4) and prints messages/s. With
 * --streaming it forces the streaming path (MimeGuard + MailParser), with
 * --stream-input it feeds parseMessage a stream instead of a Buffer, as the
 * SMTP session does. Open the .cpuprofile in Chrome DevTools or speedscope.
 */
import { Readable } from 'node:stream';
import { parseMessage, parseMessageStreaming } from '../dist/src/message/parse.js';
import { messages } from './messages.mjs';

const args = process.argv.slice(2);
const flags = new Set(args.filter((a) => a.startsWith('--')));
const [id = 'realistic-94k', seconds = '4'] = args.filter((a) => !a.startsWith('--'));
const msg = (await messages()).find((m) => m.id === id);
if (!msg) throw new Error(`no message ${id}`);
const asStream = (buf) => Readable.from([buf.subarray(0, buf.length >> 1), buf.subarray(buf.length >> 1)], { objectMode: false });
const parse = flags.has('--streaming') ? (b) => parseMessageStreaming(b) : flags.has('--stream-input') ? (b) => parseMessage(asStream(b)) : (b) => parseMessage(b);
const end = Date.now() + Number(seconds) * 1000;
let n = 0;
while (Date.now() < end) {
  await parse(msg.buf);
  n++;
}
console.log(`${id} (${msg.buf.length} bytes): ${(n / Number(seconds)).toFixed(0)} msg/s`);
