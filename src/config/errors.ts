/**
 * The configuration's error, apart from the schema: the command line reports
 * it (and decides its exit code) without loading zod and the schema, which
 * are most of the start-up cost of a small command such as `--help`.
 */
import { GatewayError } from '../core/errors.js';

export interface ConfigProblem {
  path: string;
  message: string;
}

export class ConfigError extends GatewayError {
  readonly problems: ConfigProblem[];
  constructor(code: 'PG_CONFIG_INVALID' | 'PG_CONFIG_READ', problems: ConfigProblem[], cause?: unknown) {
    super({
      code,
      message: problems.map((p) => (p.path ? `${p.path}: ${p.message}` : p.message)).join('\n'),
      transient: false,
      cause,
    });
    this.name = 'ConfigError';
    this.problems = problems;
  }
}
