#!/usr/bin/env node
/**
 * The postgate command: serve, check, route, queue, hash-password,
 * webhook-secret, webhook-keys, schema, help. Owns the process: signals,
 * exit codes (0 ok, 1 runtime failure, 2 invalid config or command line) and
 * what happens when standard output goes away.
 *
 * Every command is one entry of COMMANDS: its synopsis, its options (which
 * feed both the parser and its --help) and what it runs. The dispatcher
 * gives each command only its own options, answers --help/-h before
 * anything runs, and turns node:util parseArgs errors into one line of our
 * own followed by the command's usage.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isIP } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { ConfigError } from '../config/errors.js';
import { QUEUE_COMMAND } from './queue.js';
import type { CommandGroup, LeafCommand, OptionSpec, OptionSpecs, OptionValues, RunContext } from './command.js';
import { randomBytes } from 'node:crypto';
import { GatewayError } from '../core/errors.js';
// The SMTP server, the targets' clients (AWS SDK included), routing and TLS are
// imported by the commands that use them: --help and the small commands
// start in a fraction of the time.

type Command = LeafCommand | CommandGroup;

// ---------------------------------------------------------------------------
// The commands.

/** The flags serve reads; check and route take some of them to see the same configuration serve would. */
interface ServeFlags {
  config?: string | undefined;
  domain?: string[] | undefined;
  listen?: string | undefined;
  data?: string | undefined;
  http?: string | undefined;
  console?: string | undefined;
}

const CONFIG_OPTION: OptionSpecs = {
  config: { type: 'string', short: 'c', value: 'FILE', help: 'the configuration file (or POSTGATE_CONFIG; the flag wins)' },
};
const DOMAIN_OPTION: OptionSpecs = {
  domain: { type: 'string', short: 'd', multiple: true, value: 'DOMAIN', help: 'also accept mail for DOMAIN, into the local store (repeatable)' },
};
const DATA_OPTION: OptionSpecs = {
  data: { type: 'string', value: 'DIR', help: 'the local store directory, instead of storage.path' },
};
const SERVE_OPTIONS: OptionSpecs = {
  ...CONFIG_OPTION,
  ...DOMAIN_OPTION,
  listen: { type: 'string', value: 'HOST:PORT', help: 'the SMTP listener, instead of smtp.listen' },
  ...DATA_OPTION,
  http: { type: 'string', value: 'HOST:PORT|off', help: 'the operations endpoint, instead of http.listen; off: none' },
  console: { type: 'string', value: 'HOST:PORT|off', help: 'the message console, instead of console.listen; off: none' },
};

const EMBEDDED_DEFAULT =
  'With no --config, postgate serves its embedded default: SMTP on 127.0.0.1:2525,\n' +
  'mail for localhost (and each --domain) stored under ./data, the message console\n' +
  'on http://127.0.0.1:8025.';

/** Set when a command reads a configuration file, so its problems can name the file. */
let configFile: string | undefined;
/** The command being run (`queue list`), for the exit handling below. */
let commandName = '';

const COMMANDS: Record<string, Command> = {
  serve: {
    synopsis: 'serve [--config FILE] [--domain DOMAIN]... [--listen HOST:PORT] [--data DIR] [--http HOST:PORT|off] [--console HOST:PORT|off]',
    summary: 'receive mail over SMTP and deliver it (the default command)',
    about: `Runs in the foreground until SIGTERM or SIGINT, then drains and exits 0.\n${EMBEDDED_DEFAULT}`,
    options: SERVE_OPTIONS,
    maxArgs: 0,
    run: (values) => serve(withConfigFallback(values as ServeFlags)),
  },
  check: {
    synopsis: 'check --config FILE [--print] [--domain DOMAIN]... [--listen HOST:PORT] [--data DIR] [--http HOST:PORT|off] [--console HOST:PORT|off]',
    summary: 'validate a configuration file (exit 0 valid, 2 invalid)',
    about:
      'Validates the file, opens its TLS certificates and keys, and prints a summary.\n' +
      'Warnings about a valid configuration go to standard error; the exit code stays 0.\n' +
      'The other options change the configuration as they would for serve.',
    options: { ...CONFIG_OPTION, print: { type: 'boolean', help: 'also print the resolved configuration, secrets redacted' }, ...omit(SERVE_OPTIONS, 'config') },
    maxArgs: 0,
    run: (values, _args, ctx) => check(withConfigFallback(values as ServeFlags), values.print === true, ctx),
  },
  route: {
    synopsis: 'route ADDRESS [--config FILE] [--from SENDER] [--client IP] [--json] [--domain DOMAIN]... [--data DIR]',
    summary: 'which route and targets a recipient gets',
    about:
      'Decides as RCPT TO would, without listening or calling anything (header conditions\n' +
      'and the validation hook are shown, not run). Exit 0 accepted, 1 refused, 2 bad\n' +
      'configuration or command line. Without --config, the embedded default decides:\n' +
      'mail for localhost (and each --domain) goes to the local store.',
    options: {
      ...CONFIG_OPTION,
      from: { type: 'string', value: 'SENDER', help: 'the envelope sender (MAIL FROM), for sender conditions; <> for none' },
      client: { type: 'string', value: 'IP', help: 'the client address, for network conditions' },
      json: { type: 'boolean', help: 'one JSON object instead of text' },
      ...DOMAIN_OPTION,
      ...DATA_OPTION,
    },
    maxArgs: 1,
    run: (values, args, ctx) => routeCommand(args[0], withConfigFallback(values as ServeFlags), values as RouteOptions, ctx),
  },
  queue: QUEUE_COMMAND,
  'hash-password': {
    synopsis: 'hash-password',
    summary: 'hash a password for auth.users (reads it from standard input)',
    about: "Reads the first line of standard input and prints its scrypt hash, e.g.\n  printf '%s\\n' 'the password' | postgate hash-password",
    options: {},
    maxArgs: 0,
    run: async (_values, _args, ctx) => {
      const pw = await readStdin();
      if (!pw) return ctx.usage('give the password on standard input');
      const { hashPassword } = await import('../auth/password.js');
      process.stdout.write(`${await hashPassword(pw)}\n`);
      return 0;
    },
  },
  'webhook-secret': {
    synopsis: 'webhook-secret',
    summary: 'print a new secret for v1 (HMAC) webhook signatures',
    about:
      'Prints whsec_ and the base64 of 32 random bytes, a Standard Webhooks secret: it goes\n' +
      "into a webhook target's secret and to the receiver, which verifies with it.",
    options: {},
    maxArgs: 0,
    run: async () => {
      // Standard Webhooks secrets hold 24 to 64 bytes; 32, SHA-256's own length, makes the key as strong as the MAC.
      process.stdout.write(`whsec_${randomBytes(32).toString('base64')}\n`);
      return 0;
    },
  },
  'webhook-keys': {
    synopsis: 'webhook-keys',
    summary: 'print a new ed25519 key pair for v1a webhook signatures',
    about:
      "The whsk_ signing key goes into a webhook target's signingKey; the whpk_ public key\n" +
      'goes to the receiver, which then verifies without holding a secret.',
    options: {},
    maxArgs: 0,
    run: async () => {
      // Standard Webhooks v1a: the gateway signs with whsk_ (the 32-byte
      // seed), receivers verify with whpk_ (the 32-byte public key).
      const { parseSigningKey, publicKeyText } = await import('../delivery/signing.js');
      const seed = randomBytes(32);
      const key = parseSigningKey(`whsk_${seed.toString('base64')}`);
      if (typeof key === 'string') throw new Error(key);
      process.stdout.write(`signingKey: whsk_${seed.toString('base64')}\npublicKey:  ${publicKeyText(key)}\n`);
      return 0;
    },
  },
  schema: {
    synopsis: 'schema',
    summary: 'print the JSON Schema of the configuration',
    about: 'The same schema is shipped as schema/config.json, for editors and CI.',
    options: {},
    maxArgs: 0,
    run: async () => {
      const { configJsonSchema } = await import('../config/json-schema.js');
      process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
      return 0;
    },
  },
  help: {
    synopsis: 'help [COMMAND [SUBCOMMAND]]',
    summary: "print the list of commands, or a command's help",
    options: {},
    maxArgs: 2,
    run: async (_values, args, ctx) => {
      if (!args.length) {
        process.stdout.write(globalHelp());
        return 0;
      }
      const [name, subName] = args as [string, string | undefined];
      const command = lookup(COMMANDS, name);
      if (!command) return ctx.usage(`unknown command "${name}"`);
      if (subName === undefined) {
        process.stdout.write(commandHelp(name, command));
        return 0;
      }
      const sub = 'subcommands' in command ? lookup(command.subcommands, subName) : undefined;
      if (!sub) return ctx.usage(`"${name}" has no subcommand "${subName}"`);
      process.stdout.write(commandHelp(`${name} ${subName}`, sub));
      return 0;
    },
  },
};

/** A table entry by name; `toString` and the like are not commands. */
function lookup<T>(table: Record<string, T>, name: string): T | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
}

function omit(options: OptionSpecs, name: string): OptionSpecs {
  const { [name]: _left, ...rest } = options;
  return rest;
}

function withConfigFallback(flags: ServeFlags): ServeFlags {
  return { ...flags, config: flags.config ?? (process.env.POSTGATE_CONFIG || undefined) };
}

// ---------------------------------------------------------------------------
// Help texts, rendered from the table so they list exactly what is parsed.

const HELP_OPTION: OptionSpec = { type: 'boolean', short: 'h', help: 'print this help' };

function globalHelp(): string {
  const names = Object.keys(COMMANDS);
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return (
    'postgate — SMTP-to-HTTP gateway\n\n' +
    'Usage: postgate COMMAND [options]\n\n' +
    'Commands:\n' +
    names.map((n) => `  ${n.padEnd(width)}${COMMANDS[n]!.summary}\n`).join('') +
    '\n"postgate COMMAND --help" (or "postgate help COMMAND") shows a command\'s options;\n' +
    '"postgate --version" prints the version.\n\n' +
    `${EMBEDDED_DEFAULT}\n` +
    'The config file may also be given as POSTGATE_CONFIG. Docs: docs/configuration.md\n'
  );
}

/** `name` is the command as typed after "postgate", e.g. `queue list`. */
function commandHelp(name: string, command: Command): string {
  const parts = [`Usage: postgate ${command.synopsis}\n`, `${command.summary[0]!.toUpperCase()}${command.summary.slice(1)}.\n`];
  if (command.about) parts.push(`${command.about}\n`);
  if ('subcommands' in command) {
    const subs = Object.values(command.subcommands);
    const width = Math.max(...subs.map((s) => s.synopsis.length)) + 2;
    parts.push(`Subcommands:\n${subs.map((s) => `  postgate ${s.synopsis.padEnd(width)}${s.summary}\n`).join('')}`);
    parts.push(`"postgate ${name} SUBCOMMAND --help" shows a subcommand's options.\n`);
  } else {
    parts.push(`Options:\n${optionLines({ ...command.options, help: HELP_OPTION })}`);
  }
  return parts.join('\n');
}

function optionLines(options: OptionSpecs): string {
  const rows = Object.entries(options).map(([name, o]) => [`${o.short ? `-${o.short}, ` : '    '}--${name}${o.value ? ` ${o.value}` : ''}`, o.help] as const);
  const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
  return rows.map(([flag, help]) => `  ${flag.padEnd(width)}${help}\n`).join('');
}

// ---------------------------------------------------------------------------
// Parsing and dispatch.

type ParseConfig = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;
type Token = NonNullable<ReturnType<typeof parseArgs>['tokens']>[number];
type OptionToken = Extract<Token, { kind: 'option' }>;

function parseConfig(options: OptionSpecs): ParseConfig {
  const out: ParseConfig = {};
  for (const [name, o] of Object.entries({ ...options, help: HELP_OPTION })) {
    out[name] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  }
  return out;
}

/** A lenient pass: never throws, and its tokens say which argument a strict pass stumbles on. */
function tokensOf(argv: string[], config: ParseConfig): Token[] {
  return parseArgs({ args: argv, options: config, strict: false, allowPositionals: true, tokens: true }).tokens;
}

const wantsHelp = (tokens: Token[]) => tokens.some((t) => t.kind === 'option' && t.name === 'help');

// parseArgs refuses a value that looks like an option (`--from -x`) unless it is attached with "=".
const optionLike = (v: string) => v.length > 1 && v.startsWith('-');

/**
 * Our one-line wording for a parseArgs error, chosen by its code and naming
 * the argument from the tokens: the runtime's own text advises `--` and
 * varies between Node versions. "Unknown option '--x'" keeps the runtime's
 * phrase, which scripts (and test/config.test.ts) already look for.
 */
function describeParseError(err: unknown, tokens: Token[], config: ParseConfig): string {
  const options = tokens.filter((t): t is OptionToken => t.kind === 'option');
  switch ((err as { code?: string }).code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      const t = options.find((o) => !Object.hasOwn(config, o.name));
      if (t) return `Unknown option '${t.rawName}'`;
      break;
    }
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      for (const t of options) {
        const type = config[t.name]?.type;
        if (type === 'string' && t.value === undefined) return `option ${t.rawName} needs a value`;
        if (type === 'string' && !t.inlineValue && optionLike(t.value!)) {
          return `option ${t.rawName} needs a value (for one that starts with "-", write --${t.name}=${t.value})`;
        }
        if (type === 'boolean' && t.value !== undefined) return `option ${t.rawName} takes no value`;
      }
      break;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL': {
      const t = tokens.find((p) => p.kind === 'positional');
      if (t) return `unexpected argument ${JSON.stringify(t.value)}`;
      break;
    }
  }
  return 'the command line cannot be read';
}

function usageError(name: string, command: Command, problem: string): number {
  process.stderr.write(`postgate ${name}: ${problem}\n\n${commandHelp(name, command)}`);
  return 2;
}

/** Runs `postgate NAME ARGV…`; a group picks its subcommand from the first positional argument. */
async function runCommand(name: string, command: Command, argv: string[]): Promise<number> {
  commandName = name;
  if ('subcommands' in command) return runGroup(name, command, argv);
  const config = parseConfig(command.options);
  const tokens = tokensOf(argv, config);
  // --help wins over every other problem on the line, and nothing runs.
  if (wantsHelp(tokens)) {
    process.stdout.write(commandHelp(name, command));
    return 0;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: config, strict: true, allowPositionals: true });
  } catch (err) {
    return usageError(name, command, describeParseError(err, tokens, config));
  }
  const { help: _help, ...values } = parsed.values;
  const extra = parsed.positionals[command.maxArgs];
  if (extra !== undefined) {
    // `postgate --config f.yml check` reaches serve, the default command: say where the command goes.
    const hint = name === 'serve' && lookup(COMMANDS, extra) ? ` (the command comes first: postgate ${extra} …)` : '';
    return usageError(name, command, `unexpected argument ${JSON.stringify(extra)}${hint}`);
  }
  return command.run(values, parsed.positionals, { usage: (problem) => usageError(name, command, problem) });
}

async function runGroup(name: string, group: CommandGroup, argv: string[]): Promise<number> {
  // Options may come before the subcommand (`queue --spool DIR list`): read
  // with every subcommand's options, so an option's value is not taken for it.
  const all: OptionSpecs = Object.assign({}, ...Object.values(group.subcommands).map((s) => s.options));
  const config = parseConfig(all);
  const tokens = tokensOf(argv, config);
  const first = tokens.find((t) => t.kind === 'positional');
  if (!first) {
    if (wantsHelp(tokens)) {
      process.stdout.write(commandHelp(name, group));
      return 0;
    }
    try {
      parseArgs({ args: argv, options: config, strict: true, allowPositionals: true });
    } catch (err) {
      return usageError(name, group, describeParseError(err, tokens, config));
    }
    return usageError(name, group, `a subcommand is required: ${Object.keys(group.subcommands).join(', ')}`);
  }
  const sub = lookup(group.subcommands, first.value);
  if (!sub) return usageError(name, group, `unknown subcommand "${first.value}"`);
  return runCommand(`${name} ${first.value}`, sub, argv.filter((_, i) => i !== first.index));
}

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  // --version and --help are the only options before a command.
  if (first === '--version' || first === '-v') {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  if (first === '--help' || first === '-h') {
    process.stdout.write(globalHelp());
    return 0;
  }
  // serve is the default command: `postgate` and `postgate --config f.yml` serve.
  if (first === undefined || first.startsWith('-')) return runCommand('serve', COMMANDS.serve!, argv);
  const command = lookup(COMMANDS, first);
  if (!command) {
    process.stderr.write(`postgate: unknown command "${first}"\n\n${globalHelp()}`);
    return 2;
  }
  return runCommand(first, command, rest);
}

// ---------------------------------------------------------------------------
// What the commands do.

function packageVersion(): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
  try {
    return (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

function printConfigError(err: ConfigError, file: string | undefined): void {
  process.stderr.write(`postgate: ${file ?? 'configuration'} is invalid (${err.problems.length} problem${err.problems.length === 1 ? '' : 's'}):\n`);
  for (const p of err.problems) process.stderr.write(`  - ${p.path ? `${p.path}: ` : ''}${p.message}\n`);
}

async function readStdin(): Promise<string> {
  const rl = createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    rl.close();
    return line;
  }
  return '';
}

function cliOverrides(flags: ServeFlags) {
  return (doc: Record<string, unknown>): Record<string, unknown> => {
    const out = { ...doc };
    const domains = flags.domain ?? [];
    if (!flags.config) {
      // The embedded default: everything for localhost and --domain goes to the local store.
      out.routes = [
        { name: 'local', recipients: ['*@localhost', ...domains.map((d) => `*@${d}`)], targets: [{ type: 'local' }] },
      ];
      // So the first message can be seen in a browser (docs/console.md); loopback only.
      out.console ??= {};
    } else if (domains.length) {
      out.routes = [
        ...((out.routes as unknown[] | undefined) ?? []),
        { name: 'cli-domains', recipients: domains.map((d) => `*@${d}`), targets: [{ type: 'local' }] },
      ];
    }
    if (flags.listen) out.smtp = { ...((out.smtp as object | undefined) ?? {}), listen: flags.listen };
    if (flags.data) out.storage = { ...((out.storage as object | undefined) ?? {}), path: flags.data };
    if (flags.http) out.http = flags.http === 'off' ? false : { listen: flags.http };
    if (flags.console === 'off') delete out.console;
    else if (flags.console) out.console = { ...((out.console as object | undefined) ?? {}), listen: flags.console };
    return out;
  };
}

/** What a closed standard output or error does; serve replaces it with a drain. */
let onOutputClosed = (): void => {
  process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
};

async function serve(flags: ServeFlags): Promise<number> {
  configFile = flags.config;
  const { cfg, source } = await loadFrom(flags);
  const { buildGateway } = await import('../gateway.js');
  const gateway = await buildGateway(cfg, source ? { configSource: source } : {});
  await gateway.start();
  const a = gateway.addresses();
  const c = gateway.consoleAddress();
  const consoleUrl = c ? `http://${c.host.includes(':') ? `[${c.host}]` : c.host}:${c.port}/` : null;
  if (!flags.config) {
    process.stderr.write(
      `postgate: embedded default — SMTP on ${a.map((x) => `${x.host}:${x.port}`).join(', ')}, ` +
        `mail for ${cfg.servedDomains.join(', ')} stored under ${cfg.storage.path}\n` +
        (consoleUrl ? `  console: ${consoleUrl}\n` : '') +
        `  try: swaks --server ${a[0]!.host}:${a[0]!.port} --to someone@localhost\n`,
    );
  }
  let stopping = false;
  return await new Promise<number>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        gateway.logger.warn({ signal: sig }, 'second signal, exiting now');
        process.exit(1);
      }
      stopping = true;
      gateway.logger.info({ signal: sig }, 'shutting down');
      gateway.stop().then(
        () => resolve(0),
        (err: unknown) => {
          gateway.logger.error({ err: (err as Error).message }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // Whoever read our output is gone: stop as for SIGTERM, so accepted mail is still delivered.
    onOutputClosed = () => onSignal('SIGPIPE');
  });
}

async function check(flags: ServeFlags, print: boolean, ctx: RunContext): Promise<number> {
  if (!flags.config) return ctx.usage('--config FILE is required');
  configFile = flags.config;
  const { cfg, source } = await loadFrom(flags);
  source?.close();
  // Certificates are files the schema cannot see into: open them now, not at 3 a.m.
  if (cfg.tls) {
    const { CertificateStore } = await import('../tls/certificates.js');
    const store = await CertificateStore.load({
      certificates: cfg.tls.certificates,
      minVersion: cfg.tls.minVersion,
      watch: false,
    });
    store.close();
  }
  // Valid but questionable: said on standard error, so the exit code and the summary stay as they are.
  const [{ configWarnings }, { redactConfig }] = await Promise.all([import('../config/warnings.js'), import('../config/load.js')]);
  for (const w of configWarnings(cfg)) process.stderr.write(`postgate: warning: ${w.path}: ${w.message}\n`);
  process.stdout.write(
    `${flags.config}: ok — ${cfg.resolvedListeners.length} listener(s), ${cfg.routes.length} route(s), domains: ${cfg.servedDomains.join(', ') || '(none)'}\n`,
  );
  if (print) process.stdout.write(`${JSON.stringify(redactConfig(cfg), null, 2)}\n`);
  return 0;
}

interface RouteOptions {
  from?: string | undefined;
  client?: string | undefined;
  json?: boolean | undefined;
}

async function routeCommand(address: string | undefined, flags: ServeFlags, opts: RouteOptions, ctx: RunContext): Promise<number> {
  if (!address) return ctx.usage('give the recipient ADDRESS, e.g. postgate route support@example.test --config postgate.yml');
  if (opts.client !== undefined && !isIP(opts.client)) return ctx.usage(`--client ${JSON.stringify(opts.client)} is not an IP address`);
  configFile = flags.config;
  const { cfg, source } = await loadFrom(flags);
  source?.close();
  const [{ routingTableOf }, { describeRoute }] = await Promise.all([import('../routing/from-config.js'), import('./route.js')]);
  const { text, json, accepted } = describeRoute(cfg, routingTableOf(cfg), address, { mailFrom: opts.from === '<>' ? '' : opts.from, clientAddress: opts.client });
  process.stdout.write(opts.json ? `${JSON.stringify(json, null, 2)}\n` : text);
  return accepted ? 0 : 1;
}

/**
 * The configuration of --config (or POSTGATE_CONFIG): a file, or an object
 * kept in S3 or SSM (`s3://bucket/key`, `ssm:/name`), loaded the same way and
 * then watched for new versions by the gateway (config/source.ts).
 */
async function loadFrom(flags: ServeFlags): Promise<{ cfg: import('../config/load.js').ResolvedConfig; source?: import('../config/source.js').ConfigSource }> {
  // The AWS clients load only for a configuration kept in AWS.
  const { parseRemote } = await import('../core/remote-location.js');
  const remote = flags.config ? parseRemote(flags.config) : null;
  if (!remote) return { cfg: await loadConfig({ file: flags.config, overrides: cliOverrides(flags) }) };
  const { openConfigSource } = await import('../config/source.js');
  const { config, source } = await openConfigSource(remote, { overrides: cliOverrides(flags) });
  return { cfg: config, source };
}

/**
 * The configuration loader, on first use: it brings zod, the schema and the
 * YAML parser, about two thirds of what `postgate --help` would otherwise load.
 */
const loadConfig = async (...args: Parameters<typeof import('../config/load.js').loadConfig>) => (await import('../config/load.js')).loadConfig(...args);

// ---------------------------------------------------------------------------
// The process.

/**
 * A reader that goes away (`postgate schema | head -1`) is not a failure of
 * ours: the first EPIPE on standard output or error ends the command quietly
 * (serve drains first). Handled once here, so no command has to; later
 * errors of the closed stream are its echo. ECONNRESET is the same news when
 * the output is a socket whose reader left with data unread.
 */
function endQuietlyWhenOutputCloses(): void {
  let closed = false;
  const onError = (err: NodeJS.ErrnoException) => {
    if (closed) return;
    if (err.code !== 'EPIPE' && err.code !== 'ECONNRESET') throw err;
    closed = true;
    onOutputClosed();
  };
  process.stdout.on('error', onError);
  process.stderr.on('error', onError);
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain || (process.argv[1] && path.basename(process.argv[1]) === 'postgate')) {
  endQuietlyWhenOutputCloses();
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      if (code !== 0 || commandName !== 'serve') return;
      // serve resolved: the gateway has stopped; nothing else should hold the loop.
      setTimeout(() => process.exit(code), 100).unref();
    },
    (err: unknown) => {
      if (err instanceof ConfigError) {
        printConfigError(err, configFile);
        process.exitCode = 2;
      } else if (err instanceof GatewayError) {
        process.stderr.write(`postgate: ${err.code}: ${err.message}\n`);
        // A certificate that cannot be loaded is a configuration problem too.
        process.exitCode = err.code === 'PG_TLS_CERT' && commandName === 'check' ? 2 : 1;
      } else {
        process.stderr.write(`postgate: ${(err as Error)?.stack ?? String(err)}\n`);
        process.exitCode = 1;
      }
    },
  );
}
