// pgwarden as its own process for the soak benchmark: bench/pgwarden-server.ts's lifecycle plus what the soak needs
// (policy and revocation files watched, the admin /metrics listener, session limits), from a JSON spec bench/soak.ts wrote.
//
//   node --expose-gc --import tsx bench/lib/soak-server.ts <spec.json>
//
// Prints "READY <port> <metricsPort>"; answers a "gc" line on stdin with "GC <process.memoryUsage() JSON>"; exits on
// SIGTERM/SIGINT, when its stdin closes (its parent went away, even by SIGKILL), or at spec.maxLifetimeMs.
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { createProxy } from '../../proxy/index.ts';
import type { Config } from '../../proxy/config/types.ts';
import { benchConfig, type PgwardenSpec } from './pgwarden-config.ts';
import { isMain } from './tools.ts';

export interface SoakServerSpec extends PgwardenSpec {
  revocationFile: string;
  maxSessionsPerSub: number;
  maxSessionsPerAgent: number;
  maxUnauthenticated: number;
  maxUnauthenticatedPerAddress: number;
  handshakeTimeoutMs: number;
  loginFailuresPerMinute: number;
  cancelRequestsPerMinute: number;
  /** 0: derived from the server's max_connections at startup. */
  maxUpstreamConnections: number;
  idleSessionTimeoutMs: number;
}

/** The bench Config (bench/lib/pgwarden-config.ts) with the soak's revocation file, admin listener and limits. */
export function soakConfig(spec: SoakServerSpec): Config {
  const base = benchConfig(spec);
  return {
    ...base,
    metrics: { host: '127.0.0.1', port: 0 },
    limits: {
      ...base.limits,
      handshakeTimeout: spec.handshakeTimeoutMs,
      maxSessionsPerSub: spec.maxSessionsPerSub,
      maxSessionsPerAgent: spec.maxSessionsPerAgent,
      maxUnauthenticated: spec.maxUnauthenticated,
      maxUnauthenticatedPerAddress: spec.maxUnauthenticatedPerAddress,
      loginFailuresPerMinute: spec.loginFailuresPerMinute,
      cancelRequestsPerMinute: spec.cancelRequestsPerMinute,
      maxUpstreamConnections: spec.maxUpstreamConnections,
      idleSessionTimeout: spec.idleSessionTimeoutMs,
    },
    revocation: { file: spec.revocationFile, fileMissing: 'refuse', table: undefined },
  };
}

async function main(): Promise<void> {
  const specFile = process.argv[2];
  if (!specFile) {
    console.error('usage: node --expose-gc --import tsx bench/lib/soak-server.ts <spec.json>');
    process.exit(2);
  }
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as SoakServerSpec;
  const logger = pino({ level: spec.logLevel }, pino.destination({ dest: spec.logFile, sync: false, mkdir: true }));
  // watchPolicy: the soak rewrites the policy and revocation files and expects pgwarden to notice, as in production.
  const proxy = await createProxy(soakConfig(spec), { logger, watchPolicy: true });
  let closing = false;
  const shutdown = async (code: number): Promise<void> => {
    if (closing) return;
    closing = true;
    const hard = setTimeout(() => process.exit(code), 10_000);
    hard.unref();
    try {
      await proxy.close(0);
    } finally {
      logger.flush();
      process.exit(code);
    }
  };
  process.on('SIGTERM', () => void shutdown(0));
  process.on('SIGINT', () => void shutdown(0));
  process.stdin.on('end', () => void shutdown(0));
  process.stdin.on('error', () => void shutdown(0));
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (d: string) => {
    if (!d.includes('gc')) return;
    (globalThis as { gc?: () => void }).gc?.();
    const m = process.memoryUsage();
    process.stdout.write(`GC ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers })}\n`);
  });
  setTimeout(() => void shutdown(3), spec.maxLifetimeMs).unref();
  process.stdout.write(`READY ${proxy.port} ${proxy.metricsPort ?? 0}\n`);
}

// Imported for soakConfig by the parent; runs only as the child's entry point.
if (isMain(import.meta.url)) await main();
