/**
 * The ceiling: a bare smtp-server that accepts every message and discards
 * it (no parse, no delivery). Started by bench/smtp.mjs in its own process;
 * prints `ready <port>` and answers `count` on stdin with the messages taken.
 */
import { SMTPServer } from 'smtp-server';

let count = 0;
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  logger: false,
  size: 100 * 1024 * 1024,
  onData(stream, _session, cb) {
    stream.on('data', () => undefined);
    stream.on('end', () => {
      count++;
      cb(null);
    });
  },
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`ready ${server.server.address().port}\n`));
process.stdin.setEncoding('utf8');
process.stdin.on('data', (line) => {
  if (line.trim() === 'count') process.stdout.write(`count ${count}\n`);
});
process.on('SIGTERM', () => process.exit(0));
