/**
 * The floor of one POST per message, for comparison in the same run:
 * smtp-server, the message's bytes as received gathered and posted once with
 * undici over a keep-alive pool, `250` after the receiver's 2xx (451
 * otherwise). No parse, no JSON, no signature, no log line: what SMTP plus
 * one HTTP request per message costs on this machine, so postgate's own
 * per-message work is what it costs above this. Started by bench/smtp.mjs
 * with the receiver's port as its argument; prints `ready <port>` and
 * answers `count` on stdin with the messages accepted.
 */
import { SMTPServer } from 'smtp-server';
import { Pool } from 'undici';
import { SMTP_OPTIONS, postThenReply, serveHelper } from './helper.mjs';

const pool = new Pool(`http://127.0.0.1:${process.argv[2]}`, { connections: 64 });
let count = 0;
const server = new SMTPServer({
  ...SMTP_OPTIONS,
  onData(stream, session, cb) {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => postThenReply(pool, 'message/rfc822', Buffer.concat(chunks), cb, () => count++));
  },
});
serveHelper(server.server, () => count);
