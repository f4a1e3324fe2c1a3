/**
 * The webhook postgate posts to in the benchmark: node:http, answers 204
 * after reading the body. Its own process, so its CPU is counted apart from
 * postgate's. Prints `ready <port>`; answers `count` on stdin.
 */
import http from 'node:http';

let count = 0;
const server = http.createServer((req, res) => {
  req.on('data', () => undefined);
  req.on('end', () => {
    count++;
    res.writeHead(204).end();
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`ready ${server.address().port}\n`));
process.stdin.setEncoding('utf8');
process.stdin.on('data', (line) => {
  if (line.trim() === 'count') process.stdout.write(`count ${count}\n`);
});
process.on('SIGTERM', () => process.exit(0));
