// The operational logger (pino): JSON to stderr, with tokens, passwords and secrets redacted wherever they appear.
import pino, { type Logger } from 'pino';

/** Paths pino blanks out; tokens must never reach a log even by accident. */
export const REDACT_PATHS = [
  'password',
  'token',
  '*.password',
  '*.token',
  'params.password',
  'config.upstream.password',
  'upstream.password',
  'authorization',
];

export function createLogger(level = 'info', destination: pino.DestinationStream = pino.destination(2)): Logger {
  return pino(
    { level, base: { service: 'pgwarden' }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    destination,
  );
}
