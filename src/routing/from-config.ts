/**
 * The routing table of a resolved configuration: used by the edge, by
 * `postgate route`, and by the cloud functions (which must not pull the SMTP
 * side into their bundles, hence this small module of its own).
 */
import type { ResolvedConfig } from '../config/load.js';
import type { TargetConfig } from '../config/schema.js';
import { buildRoutingTable, type RoutingTable } from './index.js';

export function routingTableOf(cfg: ResolvedConfig): RoutingTable<TargetConfig & { id: string }> {
  // The loader has given every target its id.
  const withIds = (list: readonly TargetConfig[]) => list as (TargetConfig & { id: string })[];
  return buildRoutingTable(
    cfg.routes.map((r) => ({ name: r.name!, recipients: r.recipients, targets: withIds(r.targets), from: r.from, clients: r.clients, stop: r.stop })),
    cfg.servedDomains,
    withIds(cfg.postmasterTargets),
  );
}
