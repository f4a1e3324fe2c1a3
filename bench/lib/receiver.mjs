/**
 * The webhook postgate posts to in the benchmark: node:http, answers 204
 * after reading the body. Its own process, so its CPU is counted apart from
 * postgate's. Prints `ready <port>`; answers `count` on stdin.
 */
import http from 'node:http';
import { serveHelper } from './helper.mjs';

let count = 0;
const server = http.createServer((req, res) => {
  req.on('data', () => undefined);
  req.on('end', () => {
    count++;
    res.writeHead(204).end();
  });
});
server.keepAliveTimeout = 60_000;
serveHelper(server, () => count);
