/**
 * The naive gateway of the performance baseline, for comparison in the same
 * run: smtp-server, mailparser's simpleParser with its defaults, the parsed
 * message as JSON posted with undici over a keep-alive pool, `250` after the
 * receiver's 2xx (451 otherwise). No signature, no trace headers, no
 * limits, no spool: what a few dozen lines of glue do. Started by
 * bench/smtp.mjs with the receiver's port as its argument; prints
 * `ready <port>` and answers `count` on stdin with the messages accepted.
 */
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { Pool } from 'undici';
import { SMTP_OPTIONS, postThenReply, serveHelper } from './helper.mjs';

const pool = new Pool(`http://127.0.0.1:${process.argv[2]}`, { connections: 64 });
let count = 0;
const server = new SMTPServer({
  ...SMTP_OPTIONS,
  onData(stream, session, cb) {
    simpleParser(stream).then(
      (mail) => postThenReply(pool, 'application/json', JSON.stringify({ envelope: session.envelope, mail }), cb, () => count++),
      (err) => cb(Object.assign(err, { responseCode: 451 })),
    );
  },
});
// bench/smtp.mjs reads the receiver's count; this one answers the same protocol
serveHelper(server.server, () => count);
