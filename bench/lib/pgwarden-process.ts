// pgwarden in its own process for a benchmark (bench/pgwarden-server.ts): spec file, READY port, "gc" answers, stop by pid.
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, type EmbeddedPostgres } from '../../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import type { AuthConfig } from '../../proxy/config/types.ts';
import { benchConfig, type PgwardenSpec } from './pgwarden-config.ts';
import type { MemoryFigures } from './connections.ts';
import { procStatusKb, track } from './tools.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

export interface PgwardenProcess {
  port: number;
  pid: number;
  /** Asks the server to collect garbage and waits for its memory figures (at most 5 s). */
  gc(): Promise<MemoryFigures | undefined>;
  auth: AuthConfig;
  logFile: string;
  /** The last 4 KB of its stderr. */
  stderr(): string;
  /** SIGTERM by pid, SIGKILL after a grace period; resolves once it has exited. */
  stop(): Promise<void>;
}

/** Starts bench/pgwarden-server.ts (with --expose-gc) on a free port in front of `pgsrv`, with `policyYaml`. */
export async function startPgwardenProcess(opts: {
  dir: string;
  pgsrv: EmbeddedPostgres;
  upstreamPassword: string;
  policyYaml: string;
  maxClients: number;
  limitMs: number;
  nodeArgs?: string[];
  /** Extra environment variables for pgwarden only (e.g. MALLOC_ARENA_MAX). */
  env?: Record<string, string>;
}): Promise<PgwardenProcess> {
  const { dir, pgsrv } = opts;
  const secretFile = path.join(dir, 'jwt-secret');
  writeFileSync(secretFile, randomBytes(32).toString('base64url'), { mode: 0o600 });
  const policyFile = path.join(dir, 'policy.yaml');
  writeFileSync(policyFile, opts.policyYaml);
  const spec: PgwardenSpec = {
    listenPort: await freePort(),
    upstream: {
      host: pgsrv.host,
      port: pgsrv.port,
      database: SAMPLE_DATABASE,
      user: SAMPLE_UPSTREAM_USER,
      password: opts.upstreamPassword,
    },
    secretFile,
    policyFile,
    logFile: path.join(dir, 'pgwarden.log'),
    auditFile: path.join(dir, 'pgwarden-audit.jsonl'),
    logLevel: 'info',
    maxTokenLifetimeMs: 30 * 60_000,
    maxClientConnections: opts.maxClients,
    maxLifetimeMs: opts.limitMs,
    baseDir: dir,
  };
  const specFile = path.join(dir, 'pgwarden-spec.json');
  writeFileSync(specFile, JSON.stringify(spec, null, 2));
  const child = track(
    spawn(
      process.execPath,
      [
        '--expose-gc',
        ...(opts.nodeArgs ?? []),
        '--import',
        'tsx',
        path.join(repo, 'bench', 'pgwarden-server.ts'),
        specFile,
      ],
      {
        cwd: repo,
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, NODE_ENV: 'production', ...opts.env },
      },
    ),
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-4000)));
  let exited = false;
  child.once('exit', () => (exited = true));
  const answers = gcAnswers(child, () => exited);
  const port = await readyPort(child, 'pgwarden', answers.out, () => stderr, 60_000);
  return {
    port,
    pid: child.pid ?? -1,
    auth: benchConfig(spec).auth,
    logFile: spec.logFile,
    stderr: () => stderr,
    gc: answers.gc,
    stop: () => stopChild(child, () => exited, 8_000),
  };
}

/**
 * pgwarden's settled VmRSS: gc, 200 ms, gc, 200 ms, then VmRSS from /proc; with the memory figures of the second gc
 * (undefined when it did not answer).
 */
export async function settledRssKb(w: PgwardenProcess): Promise<{ kb: number; figures: MemoryFigures | undefined }> {
  await w.gc();
  await new Promise((r) => setTimeout(r, 200));
  const figures = await w.gc();
  await new Promise((r) => setTimeout(r, 200));
  return { kb: procStatusKb(w.pid, 'VmRSS'), figures };
}

/** Samples `pid`'s VmRSS every 50 ms until stop(); peak() is the highest sample so far, or `fromKb` if higher. */
export function peakRssSampler(pid: number, fromKb: number): { peak(): number; stop(): void } {
  let peakKb = fromKb;
  const timer = setInterval(() => {
    const kb = procStatusKb(pid, 'VmRSS');
    if (kb > peakKb) peakKb = kb;
  }, 50);
  return { peak: () => peakKb, stop: () => clearInterval(timer) };
}

/**
 * The child's side (bench/pgwarden-server.ts, bench/lib/soak-server.ts): keeps `proxy` serving until SIGTERM/SIGINT,
 * its stdin closing (the parent went away, even by SIGKILL) — exit 0 — or `maxLifetimeMs` — exit 3; exits anyway
 * `hardExitMs` after shutdown began. A line "gc" on stdin: collect garbage (started with --expose-gc) and answer
 * "GC <process.memoryUsage() JSON>", so the parent reads settled memory figures.
 */
export function serveUntilStopped(
  proxy: { close(drainMs?: number): Promise<void> },
  logger: { flush(): void },
  maxLifetimeMs: number,
  hardExitMs: number,
): void {
  let closing = false;
  const shutdown = async (code: number): Promise<void> => {
    if (closing) return;
    closing = true;
    const hard = setTimeout(() => process.exit(code), hardExitMs);
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
    process.stdout.write(
      `GC ${JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers })}\n`,
    );
  });
  setTimeout(() => void shutdown(3), maxLifetimeMs).unref();
}

/**
 * Drains a benchmark server's stdout, which carries only its READY line and "GC <memory JSON>" answers: `out()` is
 * what is left of it (for the READY line), `gc()` writes "gc" to its stdin and waits for the answer (at most 5 s).
 */
export function gcAnswers(
  child: ChildProcessWithoutNullStreams,
  exited: () => boolean,
): { out(): string; gc(): Promise<MemoryFigures | undefined> } {
  let out = '';
  const gcWaiters: ((m: MemoryFigures | undefined) => void)[] = [];
  child.stdout.on('data', (d: Buffer) => {
    out = (out + d.toString('utf8')).slice(-4096);
    for (let m = /GC (\{[^\n]*\})\n/.exec(out); m; m = /GC (\{[^\n]*\})\n/.exec(out)) {
      out = out.replace(m[0], '');
      let fig: MemoryFigures | undefined;
      try {
        fig = JSON.parse(m[1] ?? '') as MemoryFigures;
      } catch {
        fig = undefined;
      }
      gcWaiters.shift()?.(fig);
    }
  });
  return {
    out: () => out,
    async gc() {
      if (exited()) return undefined;
      return await new Promise<MemoryFigures | undefined>((resolve) => {
        const t = setTimeout(() => resolve(undefined), 5_000);
        gcWaiters.push((m) => {
          clearTimeout(t);
          resolve(m);
        });
        child.stdin.write('gc\n');
      });
    },
  };
}

/** Waits for the "READY <port>" line a benchmark server prints on stdout; fails if it exits first or is late. */
export function readyPort(
  child: ChildProcessWithoutNullStreams,
  name: string,
  out: () => string,
  stderr: () => string,
  timeoutMs: number,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`${name} did not report READY within ${timeoutMs / 1000} s; stderr: ${stderr().trim()}`)),
      timeoutMs,
    );
    const onData = () => {
      const m = /READY (\d+)/.exec(out());
      if (!m) return;
      clearTimeout(t);
      child.stdout.off('data', onData);
      resolve(Number(m[1]));
    };
    child.stdout.on('data', onData);
    child.once('exit', (code, sig) => {
      clearTimeout(t);
      reject(new Error(`${name} exited during startup (code ${code}, signal ${sig}): ${stderr().trim()}`));
    });
  });
}

/** SIGTERM by pid, then SIGKILL if the child is still there after `graceMs`; resolves once it has exited. */
export async function stopChild(
  child: ChildProcessWithoutNullStreams,
  exited: () => boolean,
  graceMs: number,
): Promise<void> {
  if (exited() || child.pid === undefined) return;
  const done = new Promise<void>((r) => child.once('exit', () => r()));
  process.kill(child.pid, 'SIGTERM');
  const t = setTimeout(() => {
    if (child.pid !== undefined && !exited()) process.kill(child.pid, 'SIGKILL');
  }, graceMs);
  await done;
  clearTimeout(t);
}
