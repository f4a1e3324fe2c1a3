/**
 * The command table's types: each command of `postgate` (src/cli/index.ts)
 * and each `queue` subcommand (src/cli/queue.ts) is one entry, whose --help
 * is built from the same option list the parser reads.
 */

/** One option: what parseArgs needs, plus the placeholder and text --help shows. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  /** Placeholder for a string option's value in the help, e.g. FILE. */
  value?: string;
  help: string;
}
export type OptionSpecs = Record<string, OptionSpec>;

/** What parseArgs returns for options declared as OptionSpecs. */
export type OptionValues = Record<string, string | boolean | Array<string | boolean> | undefined>;

export interface RunContext {
  /** Reports a bad command line: one line, the command's usage, exit code 2 (returned). */
  usage(problem: string): number;
}

export interface CommandText {
  /** The usage line after "postgate ", e.g. `check --config FILE [--print]`. */
  synopsis: string;
  /** One line for the list of commands. */
  summary: string;
  /** More for the command's own --help. */
  about?: string;
}

export interface LeafCommand extends CommandText {
  options: OptionSpecs;
  /** How many positional arguments it takes at most; more is a usage error. */
  maxArgs: number;
  run(values: OptionValues, args: string[], ctx: RunContext): Promise<number>;
}

export interface CommandGroup extends CommandText {
  subcommands: Record<string, LeafCommand>;
}
