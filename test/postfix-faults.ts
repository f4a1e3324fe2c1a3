/**
 * `npm run postfix-faults`: the full Postfix fault run (10,000 messages, two
 * SIGKILLs of postgate, in sync mode and in queued mode), written into
 * docs/reliability.md (section "postfix"). PF_MESSAGES, PF_KILLS, PF_MODES
 * override the defaults; PF_WRITE=0 prints only.
 */
import os from 'node:os';
import path from 'node:path';
import { projectRoot } from './helpers/fixtures.js';
import { faultRun, type FaultRunResult } from './postfix/faults.js';
import { postfixAvailable } from './postfix/instance.js';
import { writeReliabilitySection } from './fuzz/report.js';

const problem = postfixAvailable();
if (problem) {
  process.stderr.write(`postfix-faults: ${problem}. On Debian: echo "postfix postfix/main_mailer_type select No configuration" | sudo debconf-set-selections && sudo apt-get install -y postfix\n`);
  process.exit(1);
}
const messages = Number(process.env.PF_MESSAGES ?? 10_000);
const kills = Number(process.env.PF_KILLS ?? 2);
const modes = (process.env.PF_MODES ?? 'sync,queue').split(',') as Array<'sync' | 'queue'>;
const started = new Date();
const results: FaultRunResult[] = [];
for (const mode of modes) {
  const r = await faultRun({ messages, mode, kills, timeoutMs: Math.max(120_000, messages * 60), log: (l) => process.stderr.write(`[${mode}] ${l}\n`) });
  results.push(r);
  process.stderr.write(`${JSON.stringify(r)}\n`);
}
const lines = [
  '## Postfix under faults',
  '',
  `- Command: \`PF_MESSAGES=${messages} PF_KILLS=${kills} PF_MODES=${modes.join(',')} npm run postfix-faults\` (test/postfix-faults.ts, test/postfix/)`,
  `- Date: ${started.toISOString()}; Node ${process.version}; ${os.cpus()[0]?.model?.trim() ?? 'CPU'}, ${os.cpus().length} cores`,
  '- A private Postfix instance (retries after 1–4 s) relays every message to postgate; the webhook receiver answers',
  '  503 to 25 of every 250 requests, resets every 97th connection, answers every 89th after 2.5 s (past the',
  '  target\'s 1 s timeout: postgate defers, the receiver keeps it — a duplicate by design), 503 to 30 % of the rest',
  '  at random, 204 otherwise. postgate is killed with SIGKILL and restarted after 1 s, spread over the injection.',
  '',
  '| Mode | Sent | Accepted by Postfix | Delivered (unique) | Duplicates | Duplicates with another webhook-id | Lost | SIGKILLs | Receiver answers | Time |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|',
  ...results.map(
    (r) =>
      `| ${r.mode} | ${r.sent.toLocaleString('en-US')} | ${r.acceptedByPostfix.toLocaleString('en-US')} | ${r.delivered.toLocaleString('en-US')} | ${r.duplicates.toLocaleString('en-US')} | ${r.duplicatesWithOtherId} | **${r.lost}** | ${r.kills} | ${Object.entries(r.receiverAnswers).map(([k, v]) => `${k} ${v}`).join(', ')} | ${r.seconds.toFixed(0)} s |`,
  ),
  '',
  results.every((r) => r.lost === 0 && r.duplicatesWithOtherId === 0) ? 'Nothing lost; every duplicate carried the webhook-id of its first delivery.' : 'FAILED: see the table.',
];
if (process.env.PF_WRITE !== '0') writeReliabilitySection(path.join(projectRoot(), 'docs', 'reliability.md'), 'postfix', lines.join('\n'));
process.stderr.write(`${lines.join('\n')}\n`);
process.exitCode = results.every((r) => r.lost === 0 && r.duplicatesWithOtherId === 0 && r.acceptedByPostfix === r.sent) ? 0 : 1;
