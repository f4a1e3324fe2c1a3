/**
 * A stand-in for rspamd that answers every /checkv2 at once with one
 * recorded answer of the real rspamd (its first argument, a file). bench/scan.mjs
 * uses it to measure what postgate itself spends on a scan at the same
 * throughput as without scanning: the real rspamd's own time and CPU are
 * measured apart. Like rspamd's normal worker it closes the connection after
 * every answer (`Connection: close`, whatever the client asked), so a client
 * pays for one connection per scan here as it does against the real daemon.
 * With a second argument, a path, it also listens on that Unix socket (as
 * rspamd's worker does with a second bind_socket). Prints `ready <port>`;
 * answers `count` on stdin.
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { serveHelper } from './helper.mjs';

const answer = readFileSync(process.argv[2]);
let count = 0;
const handler = (req, res) => {
  req.on('data', () => undefined);
  req.on('end', () => {
    count++;
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': answer.length, connection: 'close' }).end(answer);
  });
};
if (process.argv[3]) http.createServer(handler).listen(process.argv[3]);
serveHelper(http.createServer(handler), () => count);
