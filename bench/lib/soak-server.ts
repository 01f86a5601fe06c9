// pgwarden as its own process for the soak benchmark: bench/pgwarden-server.ts's lifecycle plus what the soak needs
// (policy and revocation files watched, the admin /metrics listener, production limits), from a JSON spec
// bench/soak.ts wrote; and startSoakServer, the parent's side (READY, "gc" answers, stop by pid).
//
//   node --expose-gc --import tsx bench/lib/soak-server.ts <spec.json>
//
// Prints "READY <port> <metricsPort>"; answers a "gc" line on stdin with "GC <process.memoryUsage() JSON>"; exits on
// SIGTERM/SIGINT, when its stdin closes (its parent went away, even by SIGKILL), or at spec.maxLifetimeMs.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { createProxy } from '../../proxy/index.ts';
import type { Config } from '../../proxy/config/types.ts';
import { benchConfig, type PgwardenSpec } from './pgwarden-config.ts';
import type { MemoryFigures } from './connections.ts';
import { gcAnswers, serveUntilStopped, stopChild } from './pgwarden-process.ts';
import { isMain, track } from './tools.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

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
  serveUntilStopped(proxy, logger, spec.maxLifetimeMs, 10_000);
  process.stdout.write(`READY ${proxy.port} ${proxy.metricsPort ?? 0}\n`);
}

/** The running pgwarden child, as the soak's parent sees it. */
export interface SoakServer {
  port: number;
  metricsPort: number;
  pid: number;
  gc(): Promise<MemoryFigures | undefined>;
  stderr(): string;
  exited(): boolean;
  stop(): Promise<void>;
}

/** Starts this file as a child (--expose-gc) with `specFile`; resolves at its READY line. Tracked, so it is ended by pid. */
export async function startSoakServer(specFile: string): Promise<SoakServer> {
  const child: ChildProcessWithoutNullStreams = track(
    spawn(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), specFile], {
      cwd: repo,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_ENV: 'production' },
    }),
  );
  let stderr = '';
  let exited = false;
  child.once('exit', () => (exited = true));
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-4000)));
  const answers = gcAnswers(child, () => exited);
  const [port, metricsPort] = await new Promise<[number, number]>((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`pgwarden did not report READY within 60 s; stderr: ${stderr.trim()}`)),
      60_000,
    );
    const onData = () => {
      const m = /READY (\d+) (\d+)/.exec(answers.out());
      if (!m) return;
      clearTimeout(t);
      child.stdout.off('data', onData);
      resolve([Number(m[1]), Number(m[2])]);
    };
    child.stdout.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(t);
      reject(new Error(`pgwarden exited during startup (code ${code}, signal ${sig}): ${stderr.trim()}`));
    });
  });
  return {
    port,
    metricsPort,
    pid: child.pid ?? -1,
    stderr: () => stderr,
    exited: () => exited,
    gc: answers.gc,
    stop: () => stopChild(child, () => exited, 12_000),
  };
}

// Imported by the parent for startSoakServer; runs only as the child's entry point.
if (isMain(import.meta.url)) await main();
