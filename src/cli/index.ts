#!/usr/bin/env node
/**
 * The postgate command: serve, check, hash-password, webhook-keys, schema, route, queue. Owns the
 * process: signals, exit codes (0 ok, 1 runtime failure, 2 invalid config).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isIP } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, loadConfig, redactConfig } from '../config/load.js';
import { configSchema } from '../config/schema.js';
import { buildGateway, routingTableOf } from '../gateway.js';
import { describeRoute } from './route.js';
import { hashPassword } from '../auth/password.js';
import { parseSigningKey, publicKeyText } from '../delivery/signing.js';
import { queueCommand } from './queue.js';
import { randomBytes } from 'node:crypto';
import { CertificateStore } from '../tls/certificates.js';
import { GatewayError } from '../core/errors.js';

const HELP = `postgate — SMTP-to-HTTP gateway

Usage:
  postgate serve [--config FILE] [--domain DOMAIN]... [--listen HOST:PORT] [--data DIR] [--http HOST:PORT|off]
  postgate check --config FILE [--print]
  postgate hash-password            (reads the password from standard input)
  postgate schema                   (prints the JSON Schema of the configuration)
  postgate webhook-keys             (prints a new ed25519 key pair for v1a webhook signatures)
  postgate queue list|show|retry|replay|purge [filters]   (the spool of queued routes; docs/queue.md)
  postgate route ADDRESS [--config FILE] [--from SENDER] [--client IP] [--json]
                                    (which route and targets a recipient gets;
                                     exit 0 accepted, 1 refused, 2 bad config)

With no --config, postgate serves its embedded default: SMTP on 127.0.0.1:2525,
mail for localhost (and each --domain) stored under ./data.
The config file may also be given as POSTGATE_CONFIG. Docs: docs/configuration.md
`;

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

type Flags = { config?: string | undefined; domain?: string[] | undefined; listen?: string | undefined; data?: string | undefined; http?: string | undefined };

function cliOverrides(flags: Flags) {
  return (doc: Record<string, unknown>): Record<string, unknown> => {
    const out = { ...doc };
    const domains = flags.domain ?? [];
    if (!flags.config) {
      // The embedded default: everything for localhost and --domain goes to the local store.
      out.routes = [
        { name: 'local', recipients: ['*@localhost', ...domains.map((d) => `*@${d}`)], targets: [{ type: 'local' }] },
      ];
    } else if (domains.length) {
      out.routes = [
        ...((out.routes as unknown[] | undefined) ?? []),
        { name: 'cli-domains', recipients: domains.map((d) => `*@${d}`), targets: [{ type: 'local' }] },
      ];
    }
    if (flags.listen) out.smtp = { ...((out.smtp as object | undefined) ?? {}), listen: flags.listen };
    if (flags.data) out.storage = { ...((out.storage as object | undefined) ?? {}), path: flags.data };
    if (flags.http) out.http = flags.http === 'off' ? false : { listen: flags.http };
    return out;
  };
}

async function serve(flags: Flags): Promise<number> {
  const cfg = await loadConfig({ file: flags.config, overrides: cliOverrides(flags) });
  const gateway = await buildGateway(cfg);
  await gateway.start();
  const a = gateway.addresses();
  if (!flags.config) {
    process.stderr.write(
      `postgate: embedded default — SMTP on ${a.map((x) => `${x.host}:${x.port}`).join(', ')}, ` +
        `mail for ${cfg.servedDomains.join(', ')} stored under ${cfg.storage.path}\n` +
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
  });
}

let configFile: string | undefined;

async function main(argv: string[]): Promise<number> {
  // `queue` has options of its own.
  if (argv[0] === 'queue') return queueCommand(argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      domain: { type: 'string', multiple: true, short: 'd' },
      listen: { type: 'string' },
      data: { type: 'string' },
      http: { type: 'string' },
      print: { type: 'boolean' },
      from: { type: 'string' },
      client: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
    });
  } catch (err) {
    process.stderr.write(`postgate: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  const command = positionals[0] ?? (values.help ? 'help' : 'serve');
  const flags: Flags = { ...values, config: values.config ?? (process.env.POSTGATE_CONFIG || undefined) };
  configFile = flags.config;
  switch (command) {
    case 'help':
      process.stdout.write(HELP);
      return 0;
    case 'serve':
      return serve(flags);
    case 'check': {
      if (!flags.config) {
        process.stderr.write('postgate check: --config FILE is required\n');
        return 2;
      }
      const cfg = await loadConfig({ file: flags.config, overrides: cliOverrides(flags) });
      // Certificates are files the schema cannot see into: open them now, not at 3 a.m.
      if (cfg.tls) {
        const store = await CertificateStore.load({
          certificates: cfg.tls.certificates.map((c) => ({ cert: c.cert, key: c.key, ...(c.hostnames ? { hostnames: c.hostnames } : {}) })),
          minVersion: cfg.tls.minVersion,
          watch: false,
        });
        store.close();
      }
      process.stdout.write(
        `${flags.config}: ok — ${cfg.resolvedListeners.length} listener(s), ${cfg.routes.length} route(s), domains: ${cfg.servedDomains.join(', ') || '(none)'}\n`,
      );
      if (values.print) process.stdout.write(`${JSON.stringify(redactConfig(cfg), null, 2)}\n`);
      return 0;
    }
    case 'hash-password': {
      const pw = await readStdin();
      if (!pw) {
        process.stderr.write('postgate hash-password: give the password on standard input\n');
        return 2;
      }
      process.stdout.write(`${await hashPassword(pw)}\n`);
      return 0;
    }
    case 'webhook-keys': {
      // Standard Webhooks v1a: the gateway signs with whsk_ (the 32-byte
      // seed), receivers verify with whpk_ (the 32-byte public key).
      const seed = randomBytes(32);
      const key = parseSigningKey(`whsk_${seed.toString('base64')}`);
      if (typeof key === 'string') throw new Error(key);
      process.stdout.write(`signingKey: whsk_${seed.toString('base64')}\npublicKey:  ${publicKeyText(key)}\n`);
      return 0;
    }
    case 'route':
      return routeCommand(positionals[1], flags, { from: values.from, client: values.client, json: values.json ?? false });
    case 'schema':
      process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
      return 0;
    default:
      process.stderr.write(`postgate: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

async function routeCommand(address: string | undefined, flags: Flags, opts: { from?: string | undefined; client?: string | undefined; json: boolean }): Promise<number> {
  if (!address) {
    process.stderr.write('postgate route: give the recipient ADDRESS, e.g. postgate route support@example.test --config postgate.yml\n');
    return 2;
  }
  if (opts.client !== undefined && !isIP(opts.client)) {
    process.stderr.write(`postgate route: --client ${JSON.stringify(opts.client)} is not an IP address\n`);
    return 2;
  }
  const cfg = await loadConfig({ file: flags.config, overrides: cliOverrides(flags) });
  const { text, json, accepted } = describeRoute(cfg, routingTableOf(cfg), address, { mailFrom: opts.from === '<>' ? '' : opts.from, clientAddress: opts.client });
  process.stdout.write(opts.json ? `${JSON.stringify(json, null, 2)}\n` : text);
  return accepted ? 0 : 1;
}

export function configJsonSchema(): Record<string, unknown> {
  return {
    ...z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }),
    $id: 'https://postgate.dev/schema/config.json',
    title: 'postgate configuration',
  };
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain || (process.argv[1] && path.basename(process.argv[1]) === 'postgate')) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      if (code !== 0 || !['serve', undefined].includes(process.argv[2])) return;
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
        process.exitCode = err.code === 'PG_TLS_CERT' && process.argv[2] === 'check' ? 2 : 1;
      } else {
        process.stderr.write(`postgate: ${(err as Error)?.stack ?? String(err)}\n`);
        process.exitCode = 1;
      }
    },
  );
}
