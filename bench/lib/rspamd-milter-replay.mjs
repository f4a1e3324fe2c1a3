/**
 * A stand-in for rspamd's proxy in milter mode (scan.scanners[].protocol:
 * milter) that answers every message at once with one recorded answer of the
 * real rspamd (its first argument, a file of milter reply frames as the
 * proxy wrote them). Like the proxy it negotiates version 6 with no replies
 * to anything but the end of the message, keeps the connection open for the
 * next message, and closes it on SMFIC_QUIT. bench/scan.mjs uses it to
 * measure what postgate itself spends on a scan over a connection that stays
 * open. With a second argument, a path, it also listens on that Unix socket.
 * Prints `ready <port>`; answers `count` on stdin (messages answered).
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { serveHelper } from './helper.mjs';

const answer = readFileSync(process.argv[2]);
// Version 6; actions as the client offered them; no reply but to the end of the message (SMFIP_NR_* as rspamd sets them).
const optneg = (actions) => {
  const b = Buffer.alloc(17);
  b.writeUInt32BE(13, 0);
  b[4] = 0x4f;
  b.writeUInt32BE(6, 5);
  b.writeUInt32BE(actions, 9);
  b.writeUInt32BE(0xff080, 13);
  return b;
};
let count = 0;
const handler = (s) => {
  let buf = Buffer.alloc(0);
  s.on('error', () => undefined);
  s.on('data', (d) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    while (buf.length >= 5 && buf.length >= 4 + buf.readUInt32BE(0)) {
      const n = buf.readUInt32BE(0);
      const cmd = buf[4];
      if (cmd === 0x4f) s.write(optneg(buf.readUInt32BE(9)));
      else if (cmd === 0x45) {
        count++;
        s.write(answer);
      } else if (cmd === 0x51) return void s.end();
      buf = buf.subarray(4 + n);
    }
  });
};
if (process.argv[3]) net.createServer(handler).listen(process.argv[3]);
serveHelper(net.createServer(handler), () => count);
