/**
 * `postgate route ADDRESS`: what RCPT TO would decide for a recipient, and
 * where an accepted message would go — without listening or calling
 * anything (header conditions and the validation hook are shown, not run).
 * The output is documented in docs/routing.md.
 */
import type { ResolvedConfig } from '../config/load.js';
import type { TargetConfig } from '../config/schema.js';
import { resolveTargets, routeRecipient, type RoutingTable, type SenderContext } from '../routing/index.js';
import { recipientRefusal } from '../transaction/replies.js';

type RouteTarget = TargetConfig & { id: string };

export interface RouteReport {
  text: string;
  json: Record<string, unknown>;
  accepted: boolean;
}

export function describeRoute(cfg: ResolvedConfig, table: RoutingTable<RouteTarget>, address: string, ctx: SenderContext): RouteReport {
  const d = routeRecipient(table, address, ctx);
  const lines: string[] = [];
  const notChecked = [ctx.mailFrom === undefined ? 'sender (no --from)' : '', ctx.clientAddress === undefined ? 'client network (no --client)' : ''].filter(Boolean);
  if (d.kind !== 'accept') {
    const refusal = recipientRefusal(d.kind, address);
    const reply = { code: refusal.smtp!.code, enhanced: refusal.smtp!.enhanced, text: refusal.replyText };
    lines.push(`${address}: refused`, `  reply        ${reply.code} ${reply.text}`, `  code         ${refusal.code}`);
    const passedOver = d.kind === 'unknown-user' ? d.passedOver : [];
    for (const p of passedOver) lines.push(`  passed over  route "${p.route}" (pattern ${p.pattern}): ${p.reason}`);
    if (notChecked.length) lines.push(`  not checked  ${notChecked.join(', ')}`);
    return {
      accepted: false,
      text: `${lines.join('\n')}\n`,
      json: { address, accepted: false, decision: d.kind, code: refusal.code, reply, passedOver },
    };
  }
  const targets = resolveTargets(d);
  const hooks = d.route.routes.map((r) => (r.index >= 0 ? cfg.routes[r.index]?.validate : undefined)).filter((v) => v !== undefined);
  lines.push(`${address}: accepted by route "${d.route.name}"`);
  if (d.address && d.address.address !== address) lines.push(`  normalised   ${d.address.address}${d.address.unicodeDomain !== d.address.domain ? ` (${d.address.unicodeDomain})` : ''}`);
  for (const m of d.matches) {
    const caps = Object.entries(m.captures).map(([k, v]) => `${k}=${v}`).join(' ');
    lines.push(`  matched      ${m.pattern}${d.matches.length > 1 ? ` (route "${m.route.name}")` : ''}${m.viaTag ? ' via the user part of the subaddress' : ''}${caps ? `, captures ${caps}` : ''}`);
  }
  for (const p of d.passedOver) lines.push(`  passed over  route "${p.route}" (pattern ${p.pattern}): ${p.reason}`);
  lines.push(`  mailboxHash  ${d.mailboxHash ?? '(none)'}`);
  lines.push('  targets');
  for (const t of targets) {
    const where = t.url ?? (t.spec.type === 'local' ? t.spec.path : '');
    const w = t.spec.when;
    const cond = !w
      ? ''
      : 'classification' in w && w.classification
        ? `the message ${typeof w.classification === 'string' ? `is ${w.classification}` : `is not ${w.classification.not}`}`
        : `${w.header} ${w.matches !== undefined ? `matches /${w.matches}/` : 'is present'}`;
    const when = w ? `  when ${cond} (decided after DATA)` : '';
    lines.push(`    - ${t.id}  ${t.spec.required ? 'required' : 'optional'}  ${where ?? ''}${when}`);
  }
  for (const h of hooks) lines.push(`  validate     ${h.url} (asked at RCPT; not called by this command)`);
  if (notChecked.length) lines.push(`  not checked  ${notChecked.join(', ')}`);
  return {
    accepted: true,
    text: `${lines.join('\n')}\n`,
    json: {
      address,
      accepted: true,
      normalised: d.address?.address ?? address,
      route: d.route.name,
      routes: d.matches.map((m) => ({ name: m.route.name, pattern: m.pattern, viaTag: m.viaTag, captures: m.captures })),
      mailboxHash: d.mailboxHash,
      passedOver: d.passedOver,
      targets: targets.map((t) => ({
        id: t.id,
        type: t.spec.type,
        required: t.spec.required,
        url: t.url,
        ...(t.spec.type === 'local' ? { path: t.spec.path } : {}),
        when: t.spec.when ?? null,
      })),
      validate: hooks.map((h) => h.url),
      reply: { code: 250 },
    },
  };
}
