#!/usr/bin/env node
// The container health check on AWS (infra/lib/edge-stack.ts): proves the
// SMTP listener answers, which the NLB's /readyz check cannot (that is the
// operations server, and a bare TCP connect is accepted by the kernel even
// when the process is stuck). Usage: node smtp-probe.mjs [port] [timeoutMs]
//
// The listener takes PROXY protocol and trusts 127.0.0.1 (deploy/edge.yaml),
// so the probe opens with a v2 LOCAL header, as the balancer's own checks do,
// then waits for the greeting. 220 and 421 (draining, or shedding load) both
// prove the listener is alive: failing on 421 would have ECS kill a task that
// is only busy, with its transactions. Exit 0 when alive, 1 otherwise.
import net from 'node:net';

const port = Number(process.argv[2] ?? 2525);
const timeoutMs = Number(process.argv[3] ?? 4000);
// Signature, version 2 / LOCAL, family UNSPEC, no addresses.
const LOCAL = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x20, 0x00, 0x00, 0x00]);

const socket = net.connect({ host: '127.0.0.1', port });
const done = (ok, why) => {
  if (!ok) process.stderr.write(`smtp-probe: port ${port}: ${why}\n`);
  socket.destroy();
  process.exit(ok ? 0 : 1);
};
socket.setTimeout(timeoutMs, () => done(false, `no greeting within ${timeoutMs} ms`));
socket.on('error', (err) => done(false, err.message));
socket.on('connect', () => socket.write(LOCAL));
let buffered = '';
socket.on('data', (chunk) => {
  buffered += chunk.toString('latin1');
  const end = buffered.indexOf('\r\n');
  if (end < 0) {
    if (buffered.length > 512) done(false, 'greeting line too long');
    return;
  }
  const line = buffered.slice(0, end);
  // A multi-line greeting ("220-") is as good as "220 ".
  if (/^(220|421)[ -]/.test(line)) {
    socket.end('QUIT\r\n', () => done(true));
  } else done(false, `unexpected greeting: ${line.slice(0, 80)}`);
});
socket.on('end', () => done(false, 'closed before a greeting'));
