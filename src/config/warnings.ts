/**
 * Problems of a valid configuration that still deserve a word before the
 * gateway runs: `postgate check` prints them on standard error (exit 0) and
 * `postgate serve` logs each once at start.
 */
import type { ResolvedConfig } from './load.js';

export interface ConfigWarning {
  /** Where in the configuration, e.g. `routes[0].targets[1].secret`. */
  path: string;
  /** One line: what is wrong and how to fix it. */
  message: string;
}

export function configWarnings(_cfg: ResolvedConfig): ConfigWarning[] {
  return [];
}
