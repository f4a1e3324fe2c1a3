/**
 * What the benchmark's helper processes (sink.mjs, naive.mjs, receiver.mjs)
 * share with bench/smtp.mjs's startHelper: the line protocol on stdio, and
 * the smtp-server options of the two bare-smtp-server competitors, so the
 * sink and the naive gateway differ only in what they do with a message.
 */

/** smtp-server options of the sink and the naive gateway. */
export const SMTP_OPTIONS = {
  authOptional: true,
  disabledCommands: ['AUTH', 'STARTTLS'],
  logger: false,
  size: 100 * 1024 * 1024,
};

/**
 * POSTs `body` to the receiver through `pool` and settles smtp-server's
 * DATA callback `cb`: `250` after a 2xx, `451` otherwise. `count` runs on
 * success. What the naive gateway and the floor do with a message once
 * they have its body.
 */
export function postThenReply(pool, contentType, body, cb, count) {
  pool
    .request({ method: 'POST', path: '/inbound', headers: { 'content-type': contentType }, body })
    .then(async (res) => {
      await res.body.dump();
      if (res.statusCode >= 300) throw new Error(`receiver answered ${res.statusCode}`);
      count();
      cb(null);
    })
    .catch((err) => cb(Object.assign(err, { responseCode: 451 })));
}

/**
 * Listens on a free loopback port, prints `ready <port>`, answers `count` on
 * stdin with `count <n>` from `getCount()`, and exits on SIGTERM.
 * `server` is a net.Server (or anything with its listen/address).
 */
export function serveHelper(server, getCount) {
  server.listen(0, '127.0.0.1', () => process.stdout.write(`ready ${server.address().port}\n`));
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (line) => {
    if (line.trim() === 'count') process.stdout.write(`count ${getCount()}\n`);
  });
  process.on('SIGTERM', () => process.exit(0));
}
