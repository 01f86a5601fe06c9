// pgwarden as its own process for the end-to-end benchmark: reads the JSON spec bench/run.ts wrote, calls
// createProxy, prints "READY <port>" and runs until SIGTERM/SIGINT, its parent going away (stdin closes), or
// spec.maxLifetimeMs. Operational log and audit trail go to files in the run's temp dir.
//
//   node --import tsx bench/pgwarden-server.ts <spec.json>
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { createProxy } from '../proxy/index.ts';
import { benchConfig, type PgwardenSpec } from './lib/pgwarden-config.ts';
import { serveUntilStopped } from './lib/pgwarden-process.ts';

const specFile = process.argv[2];
if (!specFile) {
  console.error('usage: node --import tsx bench/pgwarden-server.ts <spec.json>');
  process.exit(2);
}
const spec = JSON.parse(readFileSync(specFile, 'utf8')) as PgwardenSpec;
const config = benchConfig(spec);
// Logs go to a file (asynchronously), as in production; not to the pipe the parent reads.
const logger = pino({ level: spec.logLevel }, pino.destination({ dest: spec.logFile, sync: false, mkdir: true }));

const proxy = await createProxy(config, { logger, watchPolicy: false });
serveUntilStopped(proxy, logger, spec.maxLifetimeMs, 5_000);
process.stdout.write(`READY ${proxy.port}\n`);
