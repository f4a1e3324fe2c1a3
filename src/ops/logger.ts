/**
 * One pino root logger; children per SMTP session carry { sid } (and txn per
 * transaction). Secrets are redacted by path, bodies are never logged.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

export const REDACT_PATHS = [
  'password',
  '*.password',
  'secret',
  '*.secret',
  '*.*.secret',
  'signingKey',
  '*.signingKey',
  '*.*.signingKey',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'headers["webhook-signature"]',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'postgate' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
