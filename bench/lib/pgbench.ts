// Runs `pgbench -S -n` against one target and reads back TPS (its summary) and per-transaction latency (its -l logs).
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { run } from './tools.ts';

export type Mode = 'simple' | 'extended' | 'prepared';

export interface PgbenchOptions {
  pgbench: string;
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  mode: Mode;
  clients: number;
  threads: number;
  seconds: number;
  /** Directory for the -l logs (removed after reading). */
  logDir: string;
  tag: string;
}

export interface PgbenchResult {
  ok: boolean;
  error?: string;
  tps: number;
  transactions: number;
  failedTransactions: number;
  /** Per-transaction latencies in µs from the -l logs. */
  latenciesUs: Float32Array;
  wallSeconds: number;
  command: string;
}

export function pgbenchArgs(
  o: Omit<PgbenchOptions, 'pgbench' | 'password' | 'logDir' | 'tag'> & { logPrefix: string },
): string[] {
  return [
    '-S',
    '-n',
    '-M',
    o.mode,
    '-c',
    String(o.clients),
    '-j',
    String(o.threads),
    '-T',
    String(o.seconds),
    '-l',
    `--log-prefix=${o.logPrefix}`,
    '-h',
    o.host,
    '-p',
    String(o.port),
    '-U',
    o.user,
    o.database,
  ];
}

export async function runPgbench(o: PgbenchOptions): Promise<PgbenchResult> {
  const logPrefix = path.join(o.logDir, o.tag);
  const args = pgbenchArgs({ ...o, logPrefix });
  const started = Date.now();
  const r = await run(o.pgbench, args, {
    env: {
      ...process.env,
      PGPASSWORD: o.password,
      PGAPPNAME: 'pgbench',
      PGCONNECT_TIMEOUT: '20',
      PGSSLMODE: 'disable',
    },
    timeoutMs: o.seconds * 1000 + 90_000,
  });
  const wallSeconds = (Date.now() - started) / 1000;
  const latencies = readLatencies(o.logDir, o.tag);
  const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(r.stdout)?.[1] ?? NaN);
  const transactions = Number(/number of transactions actually processed: (\d+)/.exec(r.stdout)?.[1] ?? NaN);
  const failedTransactions = Number(/number of failed transactions: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  const ok = r.status === 0 && Number.isFinite(tps) && tps > 0;
  const error = ok
    ? undefined
    : (r.timedOut ? 'timed out; ' : '') +
      (r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.trim())
        .slice(-3)
        .join(' | ') || `exit ${r.status}`);
  return {
    ok,
    ...(error !== undefined ? { error } : {}),
    tps: ok ? tps : NaN,
    transactions,
    failedTransactions,
    latenciesUs: latencies,
    wallSeconds,
    command: `PGPASSWORD=… pgbench ${args.join(' ').replace(logPrefix, `<dir>/${o.tag}`)}`,
  };
}

/** Reads and deletes the -l files `<tag>.<pid>[.<thread>]`; field 3 of each line is the latency in µs. */
function readLatencies(dir: string, tag: string): Float32Array {
  const files = readdirSync(dir).filter((f) => f.startsWith(`${tag}.`));
  const parts: Float32Array[] = [];
  let total = 0;
  for (const f of files) {
    const full = path.join(dir, f);
    const text = readFileSync(full, 'utf8');
    rmSync(full, { force: true });
    const lines = text.split('\n');
    const arr = new Float32Array(lines.length);
    let n = 0;
    for (const line of lines) {
      if (!line) continue;
      let a = line.indexOf(' ');
      a = line.indexOf(' ', a + 1);
      const b = line.indexOf(' ', a + 1);
      const v = Number(line.slice(a + 1, b));
      if (Number.isFinite(v)) arr[n++] = v; // 'skipped' / 'failed' entries are not latencies
    }
    parts.push(arr.subarray(0, n));
    total += n;
  }
  const out = new Float32Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export interface LatencyStats {
  n: number;
  avgMs: number;
  p50Ms: number;
  p99Ms: number;
}

export function latencyStats(arrays: Float32Array[]): LatencyStats {
  const total = arrays.reduce((a, x) => a + x.length, 0);
  if (total === 0) return { n: 0, avgMs: NaN, p50Ms: NaN, p99Ms: NaN };
  const all = new Float32Array(total);
  let o = 0;
  let sum = 0;
  for (const a of arrays) {
    all.set(a, o);
    o += a.length;
    for (let i = 0; i < a.length; i++) sum += a[i] as number;
  }
  all.sort();
  const q = (p: number) => (all[Math.min(total - 1, Math.max(0, Math.ceil(p * total) - 1))] as number) / 1000;
  return { n: total, avgMs: sum / total / 1000, p50Ms: q(0.5), p99Ms: q(0.99) };
}
