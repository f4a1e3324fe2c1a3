/**
 * Summarises V8 CPU profiles (`node --cpu-prof`): self time per package or
 * postgate module, with the heaviest functions of each, and self and
 * inclusive time by function name. Idle time is left out.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

function groupOf(frame, root) {
  const { url, functionName } = frame;
  if (functionName === '(garbage collector)') return 'garbage collection';
  if (functionName === '(program)') return 'V8 and native code (program)';
  if (!url) return 'native / builtins';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm !== -1) {
    const rest = url.slice(nm + 14).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const src = url.indexOf('/dist/src/');
  if (src !== -1) {
    const rest = url.slice(src + 10).split('/');
    return `postgate ${rest.length > 1 ? rest[0] : rest[0].replace(/\.js$/, '')}`;
  }
  if (url.startsWith('node:')) {
    const parts = url.slice(5).split('/');
    const name = parts[0] === 'internal' ? parts[1] ?? 'internal' : parts[0];
    return `node ${name.replace(/\.js$/, '').replace(/_/g, ' ')}`;
  }
  if (root && url.includes(root)) return 'bench';
  return 'other';
}

export function summarizeProfile(dir, root) {
  const selfUs = new Map(); // group → Map(function → µs)
  const byFunctionUs = new Map(); // bare function name → self µs, across groups
  const inclusiveUs = new Map(); // bare function name → µs with everything it called
  let total = 0;
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.cpuprofile'))) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n);
    for (let i = 0; i < p.samples.length; i++) {
      const node = byId.get(p.samples[i]);
      const dt = p.timeDeltas[i] ?? 0;
      if (!node || node.callFrame.functionName === '(idle)') continue;
      // The sample's stack, each function name once; a sample under the
      // preload's own handlers (the inspector starting and stopping the
      // profiler) is the measurement, not postgate, and is left out.
      const stack = new Set();
      let tooling = false;
      for (let n = node; n && !tooling; n = parent.get(n.id)) {
        tooling = n.callFrame.url.endsWith('profile-preload.cjs');
        stack.add(n.callFrame.functionName || '(anonymous)');
      }
      if (tooling) continue;
      const g = groupOf(node.callFrame, root);
      const fn = `${node.callFrame.functionName || '(anonymous)'}${node.callFrame.url ? ` ${node.callFrame.url.split('/').pop()}:${node.callFrame.lineNumber + 1}` : ''}`;
      const m = selfUs.get(g) ?? new Map();
      m.set(fn, (m.get(fn) ?? 0) + dt);
      selfUs.set(g, m);
      const bare = node.callFrame.functionName || '(anonymous)';
      byFunctionUs.set(bare, (byFunctionUs.get(bare) ?? 0) + dt);
      for (const name of stack) inclusiveUs.set(name, (inclusiveUs.get(name) ?? 0) + dt);
      total += dt;
    }
  }
  const groups = [...selfUs.entries()]
    .map(([name, fns]) => {
      const sum = [...fns.values()].reduce((a, b) => a + b, 0);
      const top = [...fns.entries()]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 3)
        .map(([n, us]) => ({ name: n, share: us / total }));
      return { name, share: sum / total, top };
    })
    .sort((a, b) => b.share - a.share);
  return { totalMs: total / 1000, groups, byFunctionUs, inclusiveUs };
}
