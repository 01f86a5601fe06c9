// pgwarden as its own process for the end-to-end benchmark: reads the JSON spec bench/run.ts wrote, calls
// createProxy, prints "READY <port>" and runs until SIGTERM/SIGINT, its parent going away (stdin closes), or
// spec.maxLifetimeMs. Operational log and audit trail go to files in the run's temp dir.
//
//   node --import tsx bench/pgwarden-server.ts <spec.json>
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { createProxy } from '../proxy/index.ts';
import { benchConfig, type PgwardenSpec } from './lib/pgwarden-config.ts';

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
let closing = false;
async function shutdown(code: number): Promise<void> {
  if (closing) return;
  closing = true;
  const hard = setTimeout(() => process.exit(code), 5_000);
  hard.unref();
  try {
    await proxy.close(0);
  } finally {
    logger.flush();
    process.exit(code);
  }
}
process.on('SIGTERM', () => void shutdown(0));
process.on('SIGINT', () => void shutdown(0));
// The parent holds our stdin open: when it goes away (even by SIGKILL), so do we.
process.stdin.on('end', () => void shutdown(0));
process.stdin.on('error', () => void shutdown(0));
// A line "gc" on stdin: collect garbage (started with --expose-gc) and answer "GC <process.memoryUsage() JSON>", so
// the parent reads settled memory figures.
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d: string) => {
  if (!d.includes('gc')) return;
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  process.stdout.write(`GC ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers })}\n`);
});
setTimeout(() => void shutdown(3), spec.maxLifetimeMs).unref();
process.stdout.write(`READY ${proxy.port}\n`);
