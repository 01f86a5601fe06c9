// Connection figures: login latency (sequential connects), login throughput (concurrent connects), and the memory
// pgwarden spends per idle session.
import pg from 'pg';
import { percentile } from './timing.ts';
import { procStatusKb } from './tools.ts';

export interface LoginStats {
  n: number;
  failures: number;
  firstError?: string;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** Sequential: 1000 / mean. */
  sequentialPerS: number;
  /** With `concurrency` connectors at once. */
  concurrentPerS: number;
  concurrency: number;
}

type ConfigFor = (i: number) => Promise<pg.ClientConfig> | pg.ClientConfig;

/** Connect (through authentication to ReadyForQuery), then end; `n` times in a row, then `n` more with `concurrency` at once. */
export async function loginStats(configFor: ConfigFor, n: number, concurrency: number): Promise<LoginStats> {
  const times: number[] = [];
  let failures = 0;
  let firstError: string | undefined;
  const once = async (i: number): Promise<number | undefined> => {
    const cfg = await configFor(i);
    const t0 = process.hrtime.bigint();
    const c = new pg.Client({ ...cfg, connectionTimeoutMillis: 20_000 });
    try {
      await c.connect();
      const dt = Number(process.hrtime.bigint() - t0) / 1e6;
      return dt;
    } catch (err) {
      failures++;
      firstError ??= err instanceof Error ? err.message : String(err);
      return undefined;
    } finally {
      await c.end().catch(() => {});
    }
  };
  for (let i = 0; i < n; i++) {
    const dt = await once(i);
    if (dt !== undefined) times.push(dt);
  }
  // Concurrent: `concurrency` workers share n connects.
  let next = 0;
  const t0 = Date.now();
  let done = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = n + next++;
        if ((await once(i)) !== undefined) done++;
      }
    }),
  );
  const concurrentPerS = done / ((Date.now() - t0) / 1000);
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / Math.max(1, times.length);
  return {
    n,
    failures,
    ...(firstError !== undefined ? { firstError } : {}),
    p50Ms: percentile(times, 0.5),
    p99Ms: percentile(times, 0.99),
    meanMs: mean,
    sequentialPerS: 1000 / mean,
    concurrentPerS,
    concurrency,
  };
}

/** process.memoryUsage() of the server after a gc(), in bytes. */
export interface MemoryFigures {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

export interface IdlePoint {
  sessions: number;
  opened: number;
  rssKb: number;
  baseRssKb: number;
  perSessionKb: number;
  /** V8 heap used + external memory per session (from the server's process.memoryUsage() after gc), KiB. */
  perSessionHeapKb: number;
  openSeconds: number;
  error?: string;
}

/**
 * Opens idle sessions through `port` in steps (e.g. [1000, 5000] total), measuring the server's VmRSS after each step
 * settles, relative to its RSS before the first. Every client is ended before returning.
 */
export async function idleSessions(opts: {
  steps: number[];
  pid: number;
  /** Makes the server collect garbage before its RSS is read, and returns its memory figures. */
  gc: () => Promise<MemoryFigures | undefined>;
  configFor: ConfigFor;
  parallel: number;
  settleMs: number;
  deadlineMs: number;
  log: (s: string) => void;
}): Promise<IdlePoint[]> {
  const clients: pg.Client[] = [];
  const out: IdlePoint[] = [];
  // Settle first: let in-flight logins finish, have the server collect garbage, then read VmRSS.
  const settled = async () => {
    await new Promise((r) => setTimeout(r, opts.settleMs));
    const m = await opts.gc();
    await new Promise((r) => setTimeout(r, 200));
    return { rssKb: procStatusKb(opts.pid, 'VmRSS'), heapKb: m ? (m.heapUsed + m.external) / 1024 : NaN };
  };
  const base = await settled();
  const baseRssKb = base.rssKb;
  const deadline = Date.now() + opts.deadlineMs;
  let error: string | undefined;
  try {
    for (const target of opts.steps) {
      const t0 = Date.now();
      let next = clients.length;
      await Promise.all(
        Array.from({ length: opts.parallel }, async () => {
          while (next < target && error === undefined) {
            if (Date.now() > deadline) {
              error = `gave up: deadline reached at ${clients.length} sessions`;
              return;
            }
            const i = next++;
            const c = new pg.Client({ ...(await opts.configFor(i)), connectionTimeoutMillis: 30_000 });
            c.on('error', () => {}); // an idle session ended by the server must not crash the benchmark
            try {
              await c.connect();
              clients.push(c);
            } catch (err) {
              error ??= `session ${i + 1}: ${err instanceof Error ? err.message : String(err)}`;
              await c.end().catch(() => {});
            }
          }
        }),
      );
      const openSeconds = (Date.now() - t0) / 1000;
      const now = await settled();
      const rssKb = now.rssKb;
      const point: IdlePoint = {
        sessions: target,
        opened: clients.length,
        rssKb,
        baseRssKb,
        perSessionKb: (rssKb - baseRssKb) / Math.max(1, clients.length),
        perSessionHeapKb: (now.heapKb - base.heapKb) / Math.max(1, clients.length),
        openSeconds,
        ...(error !== undefined ? { error } : {}),
      };
      out.push(point);
      opts.log(
        `  ${clients.length} idle sessions: pgwarden RSS ${(rssKb / 1024).toFixed(0)} MiB (+${point.perSessionKb.toFixed(1)} KiB/session RSS, +${point.perSessionHeapKb.toFixed(1)} KiB/session heap+external), opened in ${openSeconds.toFixed(1)} s${error ? ` — ${error}` : ''}`,
      );
      if (error !== undefined) break;
    }
  } finally {
    // End in batches so the proxy and Postgres see orderly Terminates.
    for (let i = 0; i < clients.length; i += 200)
      await Promise.all(clients.slice(i, i + 200).map((c) => c.end().catch(() => {})));
  }
  return out;
}
