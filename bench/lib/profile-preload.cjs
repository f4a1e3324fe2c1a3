/**
 * Preloaded into postgate (`node -r`) when bench/smtp.mjs profiles it: the
 * CPU profiler starts on SIGUSR1 and writes `$POSTGATE_BENCH_PROFILE` on
 * SIGUSR2, so the profile covers only the measured load, not start-up
 * (module loading) or the JIT's warm-up, which `node --cpu-prof` would
 * include. Benchmark tooling only, never part of the product.
 */
'use strict';
const inspector = require('node:inspector');
const { writeFileSync } = require('node:fs');

const out = process.env.POSTGATE_BENCH_PROFILE;
const session = new inspector.Session();
session.connect();
session.post('Profiler.enable');
process.on('SIGUSR1', () => session.post('Profiler.start'));
process.on('SIGUSR2', () =>
  session.post('Profiler.stop', (err, res) => {
    if (err) process.stderr.write(`profile: ${err.message}\n`);
    else writeFileSync(out, JSON.stringify(res.profile));
    process.stdout.write('profile written\n');
  }),
);
