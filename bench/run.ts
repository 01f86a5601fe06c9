// The benchmark suite: `npm run bench` (about 12–15 min on 2 cores) or `npm run bench -- --quick` (under 3 min).
//
// 1. Parser comparison (bench/parsers.bench.ts), framing / parse+decide micro-benchmarks (bench/framing.bench.ts) and
//    the server-analysis miss cost (bench/analysis.bench.ts).
// 2. End to end: a throwaway PostgreSQL 15 tuned for benchmarking, `pgbench -i -s 10`, PgBouncer (session mode; skipped
//    with a clear note when not installed), a bare Node.js relay (bench/node-relay.ts: the platform's floor) and
//    pgwarden in its own process (bench/pgwarden-server.ts); then `pgbench -S -n` in -M simple/extended/prepared at
//    -c 1/8/64 (-j 2) against each, interleaved over several rounds, with -l logs for latency; the proxies' CPU and
//    RSS from /proc.
// 3. Connection figures: login latency and rate (pg clients) direct vs PgBouncer vs pgwarden, and pgwarden's RSS per
//    idle session at 1,000 and 5,000 sessions.
// 4. bench/RESULTS.md and bench/tps.svg.
//
// Options: --quick, --seconds N, --rounds N, --clients 1,8,64, --modes simple,extended,prepared, --sessions 1000,5000,
//          --no-micro (skip 1.), --no-idle, --no-relay, --out DIR (default bench/), --profile [--profile-dir D] (V8 CPU
//          profile of pgwarden, written when it exits), --limit-minutes N (hard stop), --logins N, --scale N.
// Loopback only. Every child process is tracked and ended by pid at the end, on error, on SIGINT/SIGTERM, and when the
// whole run exceeds its time limit.
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startPostgres, type EmbeddedPostgres } from '../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER, sampleSchemaSql } from '../proxy/embedded/sample.ts';
import { mintToken } from '../proxy/auth/mint.ts';
import { runParserBench } from './parsers.bench.ts';
import { runFramingBench } from './framing.bench.ts';
import { runAnalysisBench } from './analysis.bench.ts';
import { BENCH_POLICY_YAML, BENCH_ROLE } from './lib/policy.ts';
import { readyPort, startPgwardenProcess, stopChild, type PgwardenProcess } from './lib/pgwarden-process.ts';
import { runPgbench, type Mode } from './lib/pgbench.ts';
import { findPgbouncer, pgbouncerVersion, startPgbouncer, type PgBouncer } from './lib/pgbouncer.ts';
import { idleSessions, loginStats, type IdlePoint, type LoginStats } from './lib/connections.ts';
import {
  latencyTable,
  proxyCostTable,
  summarize,
  tpsSvg,
  tpsTable,
  ratio,
  fmtRatio,
  type RunRecord,
  type Target,
} from './lib/report.ts';
import {
  cpuSeconds,
  endStartedChildren,
  findClientBinary,
  firstLine,
  machineInfo,
  nofileLimit,
  procStatusKb,
  run,
  startedChildren,
  track,
} from './lib/tools.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');

interface Options {
  quick: boolean;
  seconds: number;
  rounds: number;
  clients: number[];
  modes: Mode[];
  sessions: number[];
  micro: boolean;
  idle: boolean;
  /** Run the bare Node.js relay (bench/node-relay.ts) as a fourth target. */
  relay: boolean;
  outDir: string;
  loginN: number;
  scale: number;
  /** Hard limit for the whole run. */
  limitMs: number;
  /** Write a V8 CPU profile of pgwarden (--cpu-prof) into this directory. */
  profileDir: string | undefined;
}

const FLAGS = new Set(['--quick', '--no-micro', '--no-idle', '--no-relay', '--profile']);
const VALUED = new Set([
  '--seconds',
  '--rounds',
  '--clients',
  '--modes',
  '--sessions',
  '--out',
  '--logins',
  '--scale',
  '--limit-minutes',
  '--profile-dir',
]);

/** Options this file's header lists; anything else (a typo, --help) stops before a 15-minute run starts. */
function checkArgs(argv: string[]): void {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (FLAGS.has(a)) continue;
    if (VALUED.has(a) && i + 1 < argv.length) {
      i++;
      continue;
    }
    if (VALUED.has(a.split('=')[0] as string) && a.includes('=')) continue;
    const help = a === '--help' || a === '-h';
    (help ? console.log : console.error)(
      `${help ? '' : `unknown option ${a}\n`}usage: node --import tsx bench/run.ts [${[...FLAGS].join('] [')}] [${[...VALUED].map((v) => `${v} V`).join('] [')}]\n(see the header of bench/run.ts)`,
    );
    process.exit(help ? 0 : 2);
  }
}

function parseArgs(argv: string[]): Options {
  checkArgs(argv);
  const quick = argv.includes('--quick');
  const val = (name: string) => {
    const i = argv.indexOf(name);
    if (i >= 0) return argv[i + 1];
    return argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
  };
  const list = (name: string, def: string) =>
    (val(name) ?? def)
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const modes = list('--modes', 'simple,extended,prepared') as Mode[];
  for (const m of modes) if (!['simple', 'extended', 'prepared'].includes(m)) throw new Error(`unknown mode ${m}`);
  return {
    quick,
    seconds: Number(val('--seconds') ?? (quick ? 2 : 5)),
    rounds: Number(val('--rounds') ?? (quick ? 1 : 3)),
    clients: list('--clients', '1,8,64').map(Number),
    modes,
    sessions: list('--sessions', quick ? '1000' : '1000,5000').map(Number),
    micro: !argv.includes('--no-micro'),
    idle: !argv.includes('--no-idle'),
    relay: !argv.includes('--no-relay'),
    outDir: path.resolve(val('--out') ?? here),
    loginN: Number(val('--logins') ?? (quick ? 50 : 200)),
    scale: Number(val('--scale') ?? 10),
    limitMs: Number(val('--limit-minutes') ?? (quick ? 6 : 25)) * 60_000,
    profileDir: argv.includes('--profile')
      ? path.resolve(val('--profile-dir') ?? path.join(here, 'profiles'))
      : undefined,
  };
}

const log = (s: string) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}`);

type Pgwarden = PgwardenProcess;

/**
 * The before/after table of bench/HISTORY.md (rows added by hand after each performance change, from full runs),
 * so RESULTS.md shows it next to this run's figures; the notes on each change stay in HISTORY.md.
 */
function historyTable(): string {
  const file = path.join(here, 'HISTORY.md');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return '(bench/HISTORY.md is missing)';
  }
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith('|'));
  if (start < 0) return '(no table in bench/HISTORY.md)';
  let end = start;
  while (end < lines.length && (lines[end] ?? '').startsWith('|')) end++;
  return [
    'TPS at 8 clients (median) and pgwarden / PgBouncer in the same run, from earlier full runs on this kind of machine; what each change was and how it was measured: [HISTORY.md](HISTORY.md).',
    '',
    ...lines.slice(start, end),
  ].join('\n');
}

/** The `## ` sections of an existing RESULTS.md that this run does not write, each with its lines, in file order. */
function foreignSections(file: string, own: ReadonlySet<string>): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  let keep = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('## ')) keep = !own.has(line);
    if (keep) out.push(line);
  }
  if (out.length > 0 && out[out.length - 1] !== '') out.push('');
  return out;
}

/** pgwarden (bench/pgwarden-server.ts) in its own process with the benchmark policy; `profileDir` adds a V8 CPU profile. */
function startPgwarden(
  dir: string,
  pgsrv: EmbeddedPostgres,
  upstreamPassword: string,
  maxClients: number,
  limitMs: number,
  profileDir: string | undefined,
): Promise<Pgwarden> {
  return startPgwardenProcess({
    dir,
    pgsrv,
    upstreamPassword,
    policyYaml: BENCH_POLICY_YAML,
    maxClients,
    limitMs,
    nodeArgs: profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [],
  });
}

interface Relay {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** bench/node-relay.ts in its own process (so its CPU is measured like the other proxies'), relaying to Postgres. */
async function startRelay(pgsrv: EmbeddedPostgres, limitMs: number): Promise<Relay> {
  const child = track(
    spawn(
      process.execPath,
      ['--import', 'tsx', path.join(here, 'node-relay.ts'), pgsrv.host, String(pgsrv.port), String(limitMs)],
      {
        cwd: repo,
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, NODE_ENV: 'production' },
      },
    ),
  );
  let out = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (out = (out + d.toString('utf8')).slice(-1000)));
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-4000)));
  const port = await readyPort(
    child,
    'the Node.js relay',
    () => out,
    () => stderr,
    30_000,
  );
  let exited = false;
  child.once('exit', () => (exited = true));
  return { port, pid: child.pid ?? -1, stop: () => stopChild(child, () => exited, 5_000) };
}

async function superQuery(pgsrv: EmbeddedPostgres, db: string, sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: pgsrv.url(db) });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

/** Raises this process's open-file limit (children inherit it) when the idle-session test needs more. */
async function ensureNofile(needed: number): Promise<string> {
  const before = nofileLimit();
  if (before.soft >= needed) return `open files: soft limit ${before.soft} (enough for ${needed})`;
  const target = Math.max(needed, before.soft);
  const r = await run(
    'prlimit',
    ['--pid', String(process.pid), `--nofile=${target}:${Math.max(target, before.hard)}`],
    { timeoutMs: 10_000 },
  );
  const after = nofileLimit();
  return after.soft >= needed
    ? `open files: raised from ${before.soft} to ${after.soft} with prlimit`
    : `open files: soft limit ${after.soft} < ${needed} needed and prlimit failed (${r.stderr.trim() || `exit ${r.status}`}); the idle-session test is capped`;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const started = new Date();
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const notes: string[] = [];
  const pgbench = findClientBinary('pgbench');
  const psql = findClientBinary('psql');
  if (!pgbench)
    throw new Error(
      'pgbench not found (Debian: apt-get install postgresql-contrib or postgresql-client; or set PGWARDEN_PG_CLIENT_BIN)',
    );
  const bouncerBin = findPgbouncer();
  if (!bouncerBin) {
    notes.push(
      `**PgBouncer ${process.env.PGWARDEN_PGBOUNCER === 'none' ? 'was turned off (PGWARDEN_PGBOUNCER=none)' : 'is not installed on this machine'}**: the PgBouncer column is omitted (Debian: \`apt-get install -y pgbouncer\`).`,
    );
    log('PgBouncer not installed: running direct and pgwarden only (apt-get install -y pgbouncer to compare)');
  }
  const work = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-bench-'));
  const pglogDir = path.join(work, 'pgbench-logs');
  mkdirSync(pglogDir);
  let pgsrv: EmbeddedPostgres | undefined;
  let bouncer: PgBouncer | undefined;
  let warden: Pgwarden | undefined;
  let relay: Relay | undefined;

  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      await warden?.stop().catch(() => {});
      await relay?.stop().catch(() => {});
      await bouncer?.stop().catch(() => {});
      await pgsrv?.stop().catch(() => {});
      await endStartedChildren();
      rmSync(work, { recursive: true, force: true });
    })());
  let aborting = false;
  const onSignal = (sig: NodeJS.Signals) => {
    aborting = true;
    log(`${sig}: ending every process this run started`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const watchdog = setTimeout(() => {
    aborting = true;
    log(`time limit of ${opts.limitMs / 60_000} min reached: stopping`);
    void cleanup().finally(() => process.exit(124));
  }, opts.limitMs);
  watchdog.unref();

  try {
    const machine = machineInfo();
    const loadStart = os.loadavg();
    log(`machine: ${machine.nproc} CPUs (${machine.cpu}), ${machine.memory}, node ${machine.node}`);
    const maxSessions = opts.idle ? Math.max(0, ...opts.sessions) : 0;
    if (maxSessions > 0) notes.push(await ensureNofile(2 * maxSessions + 2048));

    // 1. Micro-benchmarks (in this process, before anything else loads the machine).
    let parserMd = '_skipped (--no-micro)_';
    let framingMd = '_skipped (--no-micro)_';
    let analysisMd = '_skipped (--no-micro)_';
    if (opts.micro) {
      log('parser comparison (libpg-query vs pgsql-ast-parser)…');
      parserMd = (await runParserBench({ quick: opts.quick, log })).markdown;
      log('framing and parse+decide micro-benchmarks…');
      try {
        framingMd = (await runFramingBench({ quick: opts.quick, log })).markdown;
      } catch (err) {
        framingMd = `_failed: ${err instanceof Error ? err.message : String(err)}_`;
        log(`framing bench failed: ${String(err)}`);
      }
      log('server analysis (decision-cache miss) micro-benchmark…');
      try {
        analysisMd = (await runAnalysisBench({ quick: opts.quick, log })).markdown;
      } catch (err) {
        analysisMd = `_failed: ${err instanceof Error ? err.message : String(err)}_`;
        log(`analysis bench failed: ${String(err)}`);
      }
    }

    // 2. Postgres, tuned for a read-only benchmark; max_connections covers the idle-session test.
    const maxConnections = Math.max(300, maxSessions + 200);
    const pgSettings: Record<string, string> = {
      max_connections: String(maxConnections),
      shared_buffers: '256MB',
      fsync: 'off',
      synchronous_commit: 'off',
      full_page_writes: 'off',
      autovacuum: 'off',
      jit: 'off',
      huge_pages: 'off',
      max_wal_size: '2GB',
      log_min_messages: 'warning',
      log_connections: 'off',
      log_disconnections: 'off',
      password_encryption: 'scram-sha-256',
    };
    log(`starting PostgreSQL (max_connections=${maxConnections})…`);
    pgsrv = await startPostgres({ settings: pgSettings });
    const pgVersion = (await superQuery(pgsrv, 'postgres', 'SELECT version()')).rows[0].version as string;
    const upstreamPassword = `bench-${randomBytes(12).toString('hex')}`;
    await superQuery(pgsrv, 'postgres', `CREATE DATABASE ${SAMPLE_DATABASE}`);
    await superQuery(pgsrv, SAMPLE_DATABASE, sampleSchemaSql(upstreamPassword));
    log(`pgbench -i -s ${opts.scale}…`);
    const t0 = Date.now();
    const init = await run(
      pgbench,
      [
        '-i',
        '-q',
        '-s',
        String(opts.scale),
        '-h',
        pgsrv.host,
        '-p',
        String(pgsrv.port),
        '-U',
        pgsrv.superuser,
        SAMPLE_DATABASE,
      ],
      {
        env: { ...process.env, PGPASSWORD: pgsrv.superPassword },
        timeoutMs: 300_000,
      },
    );
    if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr.trim()}`);
    const accounts = Number(
      (await superQuery(pgsrv, SAMPLE_DATABASE, 'SELECT count(*) AS n FROM pgbench_accounts')).rows[0].n,
    );
    if (accounts !== opts.scale * 100_000)
      throw new Error(
        `pgbench -i -s ${opts.scale} left ${accounts} rows in pgbench_accounts, expected ${opts.scale * 100_000}`,
      );
    log(`  initialised in ${((Date.now() - t0) / 1000).toFixed(1)} s (${accounts.toLocaleString('en-US')} accounts)`);
    await superQuery(
      pgsrv,
      SAMPLE_DATABASE,
      `GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO ${SAMPLE_UPSTREAM_USER}`,
    );

    // 3. PgBouncer and pgwarden.
    const targets: Target[] = ['direct'];
    let bouncerVersion = 'not installed';
    if (bouncerBin) {
      bouncerVersion = pgbouncerVersion(bouncerBin);
      try {
        bouncer = await startPgbouncer({
          bin: bouncerBin,
          pgHost: pgsrv.host,
          pgPort: pgsrv.port,
          database: SAMPLE_DATABASE,
          user: SAMPLE_UPSTREAM_USER,
          password: upstreamPassword,
          poolSize: Math.max(...opts.clients) + 16,
          maxClientConn: Math.max(...opts.clients) * 2 + 100,
        });
        targets.push('pgbouncer');
        log(`PgBouncer ${bouncer.version} on port ${bouncer.port} (pid ${bouncer.pid})`);
      } catch (err) {
        notes.push(`PgBouncer is installed but failed to start: ${err instanceof Error ? err.message : String(err)}`);
        log(`PgBouncer failed to start: ${String(err)}`);
      }
    }
    if (opts.relay) {
      try {
        relay = await startRelay(pgsrv, opts.limitMs);
        targets.push('relay');
        log(`bare Node.js relay on port ${relay.port} (pid ${relay.pid})`);
      } catch (err) {
        notes.push(`The bare Node.js relay failed to start: ${err instanceof Error ? err.message : String(err)}`);
        log(`Node.js relay failed to start: ${String(err)}`);
      }
    }
    log('starting pgwarden (separate process)…');
    warden = await startPgwarden(
      work,
      pgsrv,
      upstreamPassword,
      Math.max(1000, maxSessions + 500),
      opts.limitMs,
      opts.profileDir,
    );
    if (opts.profileDir)
      notes.push(
        `pgwarden ran with --cpu-prof (profile in ${path.relative(repo, opts.profileDir)}/): its numbers include the profiler's overhead.`,
      );
    log(`pgwarden on port ${warden.port} (pid ${warden.pid})`);
    const w = warden;
    const token = () => mintToken(w.auth, { sub: 'bench', role: BENCH_ROLE, agent: 'pgbench' }, 10 * 60_000);
    // Sanity: the statement pgbench runs must go through, or every pgwarden number below is meaningless.
    let wardenOk = true;
    {
      const c = new pg.Client({
        host: '127.0.0.1',
        port: w.port,
        user: 'bench',
        database: SAMPLE_DATABASE,
        password: await token(),
      });
      try {
        await c.connect();
        const r = await c.query('SELECT abalance FROM pgbench_accounts WHERE aid = $1', [1]);
        if (r.rows.length !== 1) throw new Error(`expected 1 row, got ${r.rows.length}`);
        targets.push('pgwarden');
      } catch (err) {
        wardenOk = false;
        const e = err as { code?: string; message?: string; detail?: string };
        notes.push(
          `**pgwarden failed the sanity query** (SELECT abalance FROM pgbench_accounts WHERE aid = $1): ${e.code ?? ''} ${e.message ?? String(err)}${e.detail ? ` — ${e.detail}` : ''}`,
        );
        log(`pgwarden sanity query failed: ${e.code ?? ''} ${e.message ?? String(err)}`);
      } finally {
        await c.end().catch(() => {});
      }
    }

    const endpoint = async (t: Target) => {
      if (t === 'direct') return { port: pgsrv!.port, user: SAMPLE_UPSTREAM_USER, password: upstreamPassword };
      if (t === 'pgbouncer') return { port: bouncer!.port, user: SAMPLE_UPSTREAM_USER, password: upstreamPassword };
      // The relay passes the client's own SCRAM login through to Postgres, byte for byte.
      if (t === 'relay') return { port: relay!.port, user: SAMPLE_UPSTREAM_USER, password: upstreamPassword };
      return { port: w.port, user: 'bench', password: await token() };
    };
    const proxyPid = (t: Target) =>
      t === 'pgwarden' ? w.pid : t === 'pgbouncer' ? bouncer?.pid : t === 'relay' ? relay?.pid : undefined;

    // 4. The matrix, interleaved: for every (mode, clients) cell, each target in turn; the order rotates each round.
    const records: RunRecord[] = [];
    const runOne = async (
      round: number,
      mode: Mode,
      clients: number,
      target: Target,
      seconds: number,
      record: boolean,
    ) => {
      if (aborting) throw new Error('run aborted');
      const ep = await endpoint(target);
      const pid = proxyPid(target);
      const cpu0 = pid !== undefined ? cpuSeconds(pid) : NaN;
      const r = await runPgbench({
        pgbench,
        host: '127.0.0.1',
        port: ep.port,
        user: ep.user,
        password: ep.password,
        database: SAMPLE_DATABASE,
        mode,
        clients,
        threads: Math.min(2, clients),
        seconds,
        logDir: pglogDir,
        tag: `r${round}-${target}-${mode}-c${clients}`,
      });
      const cpu1 = pid !== undefined ? cpuSeconds(pid) : NaN;
      const rss = pid !== undefined ? procStatusKb(pid, 'VmRSS') : NaN;
      if (!record) return r;
      records.push({
        round,
        mode,
        clients,
        target,
        ok: r.ok,
        ...(r.error !== undefined ? { error: r.error } : {}),
        tps: r.tps,
        transactions: r.transactions,
        latenciesUs: r.latenciesUs,
        wallSeconds: r.wallSeconds,
        ...(pid !== undefined ? { proxyCpuSeconds: cpu1 - cpu0, proxyRssKb: rss } : {}),
      });
      log(
        `  r${round} ${mode.padEnd(8)} c=${String(clients).padStart(2)} ${target.padEnd(9)} ${r.ok ? `${Math.round(r.tps).toString().padStart(6)} tps` : `FAILED: ${r.error}`}${pid !== undefined && r.ok ? `, proxy ${((cpu1 - cpu0) / r.wallSeconds).toFixed(2)} cores` : ''}`,
      );
      return r;
    };
    log('warm-up (1 s per target)…');
    for (const t of targets) await runOne(0, 'simple', 8, t, 1, false);
    const estimate = opts.rounds * opts.modes.length * opts.clients.length * targets.length * (opts.seconds + 1);
    log(
      `pgbench matrix: ${opts.rounds} rounds × ${opts.modes.length} modes × ${opts.clients.length} client counts × ${targets.length} targets × ${opts.seconds} s (≈ ${Math.round(estimate / 60)} min)`,
    );
    for (let round = 1; round <= opts.rounds; round++) {
      for (const mode of opts.modes) {
        for (const clients of opts.clients) {
          const order = targets.map((_, i) => targets[(i + round - 1) % targets.length] as Target);
          for (const t of order) await runOne(round, mode, clients, t, opts.seconds, true);
        }
      }
    }

    // 5. Connection figures.
    log(`login latency: ${opts.loginN} sequential + ${opts.loginN} with 8 concurrent connects per target…`);
    const logins = new Map<Target, LoginStats>();
    // The relay's login is direct's plus one hop: it says nothing the other rows do not.
    for (const t of targets.filter((x) => x !== 'relay')) {
      const ep = await endpoint(t);
      const tokens = t === 'pgwarden' ? await Promise.all(Array.from({ length: opts.loginN * 2 }, () => token())) : [];
      const s = await loginStats(
        (i) => ({
          host: '127.0.0.1',
          port: ep.port,
          user: ep.user,
          database: SAMPLE_DATABASE,
          password: t === 'pgwarden' ? (tokens[i] ?? ep.password) : ep.password,
        }),
        opts.loginN,
        8,
      );
      logins.set(t, s);
      log(
        `  ${t}: p50 ${s.p50Ms.toFixed(2)} ms, p99 ${s.p99Ms.toFixed(2)} ms, ${s.sequentialPerS.toFixed(0)}/s sequential, ${s.concurrentPerS.toFixed(0)}/s with 8 concurrent${s.failures ? `, ${s.failures} failed (${s.firstError})` : ''}`,
      );
    }
    let idle: IdlePoint[] = [];
    if (opts.idle && wardenOk) {
      const nofile = nofileLimit().soft;
      const steps = opts.sessions.filter((n) => 2 * n + 2048 <= nofile);
      for (const n of opts.sessions)
        if (!steps.includes(n))
          notes.push(
            `Idle sessions: ${n} skipped (open-file limit ${nofile} too low for ${n} client + ${n} proxy sockets).`,
          );
      if (steps.length) {
        // A fresh pgwarden process, so the baseline is not a heap grown by the throughput runs.
        log(`idle sessions through a fresh pgwarden process: ${steps.join(', ')}…`);
        await warden.stop();
        warden = await startPgwarden(
          work,
          pgsrv,
          upstreamPassword,
          Math.max(1000, maxSessions + 500),
          opts.limitMs,
          undefined,
        );
        const w2 = warden;
        const tok = await mintToken(w2.auth, { sub: 'bench', role: BENCH_ROLE, agent: 'idle' }, 10 * 60_000);
        // One session first, so lazily loaded code and the catalog are in the baseline.
        const first = new pg.Client({
          host: '127.0.0.1',
          port: w2.port,
          user: 'bench',
          database: SAMPLE_DATABASE,
          password: tok,
        });
        await first.connect();
        await first.query('SELECT abalance FROM pgbench_accounts WHERE aid = 1');
        await first.end();
        idle = await idleSessions({
          steps,
          pid: w2.pid,
          gc: () => w2.gc(),
          configFor: () => ({
            host: '127.0.0.1',
            port: w2.port,
            user: 'bench',
            database: SAMPLE_DATABASE,
            password: tok,
          }),
          parallel: 16,
          settleMs: 3_000,
          deadlineMs: opts.quick ? 60_000 : 240_000,
          log,
        });
      }
    }

    // 6. Report.
    const pgbenchVersion = firstLine(pgbench, ['--version']);
    const summary = summarize(records, opts.modes, opts.clients, targets);
    const subtitle = `${opts.modes.length > 0 ? 'pgbench -S -n' : ''}, scale ${opts.scale}, ${opts.seconds} s × ${opts.rounds} round(s), -j 2; ${machine.nproc} CPUs shared by client, proxies and Postgres; ${started.toISOString().slice(0, 10)}`;
    mkdirSync(opts.outDir, { recursive: true });
    const svgPath = path.join(opts.outDir, 'tps.svg');
    writeFileSync(svgPath, tpsSvg(summary, opts.modes, opts.clients, targets, subtitle));
    const md: string[] = [];
    md.push('# pgwarden benchmarks');
    md.push('');
    md.push(
      `Generated by \`${command}\` (bench/run.ts) on ${started.toISOString().replace('T', ' ').slice(0, 16)} UTC, in ${((Date.now() - started.getTime()) / 60_000).toFixed(1)} min.${opts.quick ? ' **Quick run**: short runs, one round — indicative only.' : ''}`,
    );
    md.push('');
    md.push('## Machine and software');
    md.push('');
    md.push(`- CPUs (nproc): ${machine.nproc} × ${machine.cpu}; memory: ${machine.memory}; ${machine.kernel}`);
    md.push(
      `- Node ${machine.node}; ${pgVersion.split(',')[0]} (${pgsrv.binDir}); ${pgbenchVersion}; PgBouncer: ${bouncerVersion}${psql ? `; ${firstLine(psql, ['--version'])}` : ''}`,
    );
    md.push(
      `- PostgreSQL settings: ${Object.entries(pgSettings)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ')}`,
    );
    md.push(
      `- PgBouncer: ${bouncer ? `session pooling, auth_type scram-sha-256 (plaintext userlist), default_pool_size ${Math.max(...opts.clients) + 16}` : 'not run'}; pgwarden: separate process, log level info to a file, policy role \`${BENCH_ROLE}\` (read-only, pgbench_* tables, maxRows 1000, catalog introspection), HS256 token as password.`,
    );
    md.push(
      `- Everything (pgbench, PostgreSQL, PgBouncer, the bare Node.js relay, pgwarden) runs on the same ${machine.nproc}-CPU machine over loopback, so a proxy's CPU is taken from the same cores the client and the server use.`,
    );
    const loadEnd = os.loadavg();
    md.push(
      `- Load average (1/5/15 min) at start ${loadStart.map((x) => x.toFixed(2)).join(' / ')}, at end ${loadEnd.map((x) => x.toFixed(2)).join(' / ')}: anything else running on the machine shows up as noise in every column (the interleaving spreads it across targets).`,
    );
    for (const n of notes) md.push(`- ${n}`);
    md.push('');
    md.push('## Throughput (`pgbench -S -n`)');
    md.push('');
    md.push(
      `Each cell: median TPS over ${opts.rounds} round(s) of ${opts.seconds} s (min–max in parentheses); ratios are per-round TPS ratios, median (min–max). Targets run interleaved (every cell runs each target in turn, order rotated each round). Users: direct, PgBouncer and the relay log in as \`${SAMPLE_UPSTREAM_USER}\` with SCRAM; pgwarden with a JWT, then logs in upstream as \`${SAMPLE_UPSTREAM_USER}\`.`,
    );
    md.push('');
    md.push(tpsTable(summary, records, opts.modes, opts.clients, targets));
    md.push('');
    md.push('![TPS by mode and client count](tps.svg)');
    md.push('');
    if (targets.includes('relay')) {
      md.push(
        "`relay` is [node-relay.ts](node-relay.ts): a bare Node.js TCP relay (sockets with Nagle off, each chunk written on as it arrives; no framing, no policy, no audit, no metrics), in its own process like pgwarden. It is the floor for any proxy written on Node.js on this machine: *relay / PgBouncer* is what the platform alone allows, *pgwarden / relay* is what pgwarden's own work (framing, policy decisions, row caps, audit trail, metrics) costs on top of it.",
      );
      md.push('');
    }
    md.push('## What each change bought');
    md.push('');
    md.push(historyTable());
    md.push('');
    md.push('## Latency (from `pgbench -l` per-transaction logs, all rounds pooled)');
    md.push('');
    md.push(latencyTable(summary, opts.modes, opts.clients, targets));
    md.push('');
    const proxies = targets.filter((t) => t !== 'direct');
    md.push('## Proxy cost');
    md.push('');
    md.push(
      'CPU from `/proc/<pid>/stat` (utime+stime) over each pgbench run (including its connection setup): cores = CPU seconds / wall seconds, µs/txn = CPU seconds / transactions. RSS from `/proc/<pid>/status` VmRSS at the end of each run.',
    );
    md.push('');
    md.push(proxyCostTable(summary, opts.modes, opts.clients, proxies));
    md.push('');
    md.push('## Connections');
    md.push('');
    md.push(
      `Login = \`pg\` Client \`connect()\` until ReadyForQuery, then \`end()\`. ${opts.loginN} sequential logins (latency), then ${opts.loginN} more with 8 connecting at once (rate). Direct and PgBouncer: SCRAM-SHA-256. pgwarden: JWT (cleartext password over loopback), verified, then pgwarden's own SCRAM login upstream (a new upstream connection per session).`,
    );
    md.push('');
    md.push('| target | p50 ms | p99 ms | mean ms | logins/s sequential | logins/s, 8 concurrent | failures |');
    md.push('|---|---:|---:|---:|---:|---:|---:|');
    for (const [t, s] of logins) {
      md.push(
        `| ${t} | ${s.p50Ms.toFixed(2)} | ${s.p99Ms.toFixed(2)} | ${s.meanMs.toFixed(2)} | ${s.sequentialPerS.toFixed(0)} | ${s.concurrentPerS.toFixed(0)} | ${s.failures}${s.firstError ? ` (${s.firstError})` : ''} |`,
      );
    }
    md.push('');
    if (idle.length) {
      md.push(
        'pgwarden memory with idle sessions, measured on a fresh pgwarden process (each session holds a client socket and its own upstream connection). After each step: wait, `gc()` in the server (`--expose-gc`), then VmRSS from /proc and V8 heap used + external from `process.memoryUsage()`; per session = (value − value before the first session) / sessions open.',
      );
      md.push('');
      md.push(
        '| idle sessions | opened | pgwarden RSS | RSS per session | heap+external per session | time to open (16 at once) |',
      );
      md.push('|---:|---:|---:|---:|---:|---:|');
      for (const p of idle) {
        md.push(
          `| ${p.sessions.toLocaleString('en-US')} | ${p.opened.toLocaleString('en-US')} | ${(p.rssKb / 1024).toFixed(0)} MiB (base ${(p.baseRssKb / 1024).toFixed(0)} MiB) | ${p.perSessionKb.toFixed(1)} KiB | ${Number.isFinite(p.perSessionHeapKb) ? `${p.perSessionHeapKb.toFixed(1)} KiB` : '–'} | ${p.openSeconds.toFixed(1)} s${p.error ? ` — ${p.error}` : ''} |`,
        );
      }
      md.push('');
    } else {
      md.push(
        `Idle sessions: ${opts.idle ? (wardenOk ? 'not measured (see notes above)' : 'not measured: pgwarden failed its sanity query') : 'skipped (--no-idle)'}.`,
      );
      md.push('');
    }
    md.push('## Parsers: libpg-query vs pgsql-ast-parser');
    md.push('');
    md.push(parserMd);
    md.push('');
    md.push('## Framing and parse + decide micro-benchmarks');
    md.push('');
    md.push(framingMd);
    md.push('');
    md.push("## PostgreSQL's own analysis: the cost of a decision-cache miss");
    md.push('');
    md.push(analysisMd);
    md.push('');
    const failures = records.filter((r) => !r.ok);
    if (failures.length) {
      md.push('## Failed runs');
      md.push('');
      for (const f of failures.slice(0, 30))
        md.push(`- round ${f.round}, ${f.target}, -M ${f.mode}, -c ${f.clients}: ${f.error}`);
      md.push('');
    }
    // Sections other benchmarks write (bench/revocation.ts, bench/hostile.ts, …) stay as they were in the file.
    const mdPath = path.join(opts.outDir, 'RESULTS.md');
    const own = new Set(md.filter((l) => l.startsWith('## ')).concat('## Reproduce', '## Failed runs'));
    md.push(...foreignSections(mdPath, own));
    md.push('## Reproduce');
    md.push('');
    md.push('```sh');
    md.push('npm ci');
    md.push('apt-get install -y pgbouncer   # optional: without it the PgBouncer column is skipped');
    md.push(`${command}`);
    md.push('node --import tsx bench/parsers.bench.ts    # parser comparison alone (~25 s)');
    md.push('node --import tsx bench/framing.bench.ts    # framing and parse+decide alone (~15 s)');
    md.push('node --import tsx bench/analysis.bench.ts   # the server-analysis miss cost alone (~20 s)');
    md.push(
      'node --import tsx bench/corpus/build.ts     # re-capture and re-validate the parser corpus (needs psql, pgbench)',
    );
    md.push('```');
    md.push('');
    writeFileSync(mdPath, md.join('\n'));
    log(`wrote ${path.relative(process.cwd(), mdPath)} and ${path.relative(process.cwd(), svgPath)}`);
    // A short summary on the console.
    for (const mode of opts.modes) {
      for (const c of opts.clients) {
        const cell = summary.get(`${mode}/${c}`);
        const r = (x: Target, y: Target) =>
          targets.includes(x) && targets.includes(y) ? `, ${x}/${y} ${fmtRatio(ratio(records, mode, c, x, y))}` : '';
        log(
          `  ${mode.padEnd(8)} c=${String(c).padStart(2)}: ${targets.map((t) => `${t} ${Math.round(cell?.get(t)?.tpsMedian ?? NaN)}`).join(', ')}${r('pgwarden', 'direct')}${r('pgwarden', 'pgbouncer')}${r('relay', 'pgbouncer')}${r('pgwarden', 'relay')}`,
        );
      }
    }
  } finally {
    clearTimeout(watchdog);
    await cleanup();
    const left = startedChildren();
    if (left.length) log(`warning: still running after cleanup: ${left.map((c) => `${c.pid} ${c.cmd}`).join(', ')}`);
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : err);
  process.exitCode = 1;
});
