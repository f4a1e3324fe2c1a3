/**
 * A stand-in for rspamd that answers every /checkv2 at once with one
 * recorded answer of the real rspamd (its first argument, a file). bench/scan.mjs
 * uses it to measure what postgate itself spends on a scan at the same
 * throughput as without scanning: the real rspamd's own time and CPU are
 * measured apart. Prints `ready <port>`; answers `count` on stdin.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { serveHelper } from './helper.mjs';

const answer = readFileSync(process.argv[2]);
let count = 0;
const server = http.createServer((req, res) => {
  req.on('data', () => undefined);
  req.on('end', () => {
    count++;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length }).end(answer);
  });
});
server.keepAliveTimeout = 60_000;
serveHelper(server, () => count);
