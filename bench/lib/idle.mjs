/**
 * Opens N connections, says EHLO on each and keeps them idle: prints
 * `idle <n>` once all have their EHLO answer, then holds them until stdin
 * closes. node bench/lib/idle.mjs PORT N
 */
import net from 'node:net';

const [port, n] = process.argv.slice(2).map(Number);
const sockets = [];
let ready = 0;
let failed = 0;
const BATCH = 200;
const open = () =>
  new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    let said = false;
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (!said && /^220 .*\r\n/m.test(buf)) {
        said = true;
        buf = '';
        s.write('EHLO idle.bench\r\n');
      } else if (said && /^250 .*\r\n/m.test(buf)) {
        ready++;
        resolve();
      } else if (/^[45]\d\d /m.test(buf)) {
        failed++;
        resolve();
      }
    });
    s.on('error', () => {
      failed++;
      resolve();
    });
    sockets.push(s);
  });
for (let i = 0; i < n; i += BATCH) await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, open));
process.stdout.write(`idle ${ready} ${failed}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  for (const s of sockets) s.destroy();
  process.exit(0);
});
