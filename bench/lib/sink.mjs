/**
 * The ceiling: a bare smtp-server that accepts every message and discards
 * it (no parse, no delivery). Started by bench/smtp.mjs in its own process;
 * prints `ready <port>` and answers `count` on stdin with the messages taken.
 */
import { SMTPServer } from 'smtp-server';
import { SMTP_OPTIONS, serveHelper } from './helper.mjs';

let count = 0;
const server = new SMTPServer({
  ...SMTP_OPTIONS,
  onData(stream, _session, cb) {
    stream.on('data', () => undefined);
    stream.on('end', () => {
      count++;
      cb(null);
    });
  },
});
serveHelper(server.server, () => count);
