// The soak benchmark (issue 12 item 7): a bounded run of mixed legitimate and hostile traffic through one pgwarden
// process, with policy reloads and revocations, reporting RSS over time, latency per traffic class, errors by
// SQLSTATE, and that nothing was lost.
//
//   node --import tsx bench/soak.ts [--sessions 200] [--seconds 300] [--out DIR] [--think-ms 400] [--without CLASSES]
//                                   [--reload-every 10] [--cancel-rate 250] [--keep] [--limit-minutes N]
//
// Starts a throwaway PostgreSQL and pgwarden (bench/lib/soak-server.ts, its own process, --expose-gc), sets up
// soak_ledger (what writers insert) and soak_big (wider than any row cap), then runs --sessions client sessions for
// --seconds (bench/lib/soak-traffic.ts); meanwhile rewrites the policy file every 10 s (alternately an irrelevant
// change and the readers' row cap) and revokes a few sessions by jti, sub or agent through the revocation file.
// Writes DIR/soak.md and DIR/rss.svg (bench/SOAK.md and bench/soak-rss.svg when DIR is bench/). Exits 1 when an
// acknowledged insert is missing or a refused write arrived, the canary changed, a revoked session lived on or its
// identity logged in again, the audit trail is short, the last policy rewrite is not in force, a runaway agent ran
// past its budget, pgwarden crashed, or any error was not one its traffic class expects. Loopback only; every process
// it starts is ended by pid, also on failure, on SIGINT/SIGTERM and at --limit-minutes.
import { randomBytes, randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startPostgres, freePort, type EmbeddedPostgres } from '../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER, sampleSchemaSql } from '../proxy/embedded/sample.ts';
import { mintToken } from '../proxy/auth/mint.ts';
import { revoke } from '../proxy/revocation/file.ts';
import { benchConfig } from './lib/pgwarden-config.ts';
import { startSoakServer, type SoakServer, type SoakServerSpec } from './lib/soak-server.ts';
import {
  errorTable,
  latencyTable,
  latencyTimeline,
  mostWithin,
  readAudit,
  reloadDurations,
  rssSvg,
  type Marker,
  type RssSample,
} from './lib/soak-report.ts';
import { percentile } from './lib/timing.ts';
import {
  cappedRead,
  hostileBadToken,
  hostileCancelFlood,
  hostileDenied,
  hostileLarge,
  hostileMalformed,
  readExtended,
  readPostgresJs,
  readSimple,
  reconnector,
  Recorder,
  revocable,
  runaway,
  selectOne,
  Semaphore,
  sessionHog,
  slowReader,
  writer,
  type Ledger,
  type RevocationKind,
  type RevocationTarget,
  type SoakContext,
} from './lib/soak-traffic.ts';
import { cpuSeconds, endStartedChildren, firstLine, machineInfo, procStatusKb, startedChildren } from './lib/tools.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const log = (s: string) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

interface Options {
  sessions: number;
  /** Traffic classes left out (--without large,slow): to isolate what one kind of traffic does. */
  without: ReadonlySet<string>;
  seconds: number;
  outDir: string;
  thinkMs: number;
  reloadEveryS: number;
  slowPauseMs: number;
  /** CancelRequests per second each cancel-flood session sends at most. */
  cancelRate: number;
  /** Keep the run's directory (pgwarden's log, audit trail, policy and revocation files) instead of deleting it. */
  keep: boolean;
  limitMs: number;
}

function parseArgs(argv: string[]): Options {
  const val = (name: string) => {
    const i = argv.indexOf(name);
    if (i >= 0) return argv[i + 1];
    return argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
  };
  const num = (name: string, def: number) => {
    const v = Number(val(name) ?? def);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number`);
    return v;
  };
  const sessions = Math.floor(num('--sessions', 200));
  if (sessions < MIX.length + 1)
    throw new Error(`--sessions must be at least ${MIX.length + 1} (one per traffic class)`);
  const seconds = num('--seconds', 300);
  const without = new Set(
    (val('--without') ?? '')
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean),
  );
  for (const w of without)
    if (!MIX_KEYS.includes(w)) throw new Error(`--without: unknown class ${w} (classes: ${MIX_KEYS.join(', ')})`);
  return {
    without,
    sessions,
    seconds,
    outDir: path.resolve(val('--out') ?? mkdtempSync(path.join(os.tmpdir(), 'pgwarden-soak-out-'))),
    thinkMs: num('--think-ms', 400),
    reloadEveryS: num('--reload-every', 10),
    slowPauseMs: num('--slow-pause-ms', 10_000),
    cancelRate: num('--cancel-rate', 250),
    keep: argv.includes('--keep'),
    limitMs: num('--limit-minutes', seconds / 60 + 6) * 60_000,
  };
}

/** The soak's session mix: key, label, share of --sessions (at least one each unless --without names it); what is left
 * over runs SELECT 1. Large statements and slow readers are four at most (the issue's target), cancel floods two. */
const MIX = [
  ['read-simple', 'read (pg, simple)', 0.15, Infinity],
  ['read-extended', 'read (pg, extended)', 0.15, Infinity],
  ['read-postgresjs', 'read (postgres.js, prepared)', 0.15, Infinity],
  ['capped', 'capped read', 0.05, Infinity],
  ['writer', 'writer', 0.15, Infinity],
  ['short-token', 'short token', 0.08, Infinity],
  ['revocable', 'revocable', 0.04, Infinity],
  ['denied', 'hostile: refused statements', 0.05, Infinity],
  ['large', 'hostile: large statements', 0.02, 4],
  ['malformed', 'hostile: malformed frames', 0.03, Infinity],
  ['bad-token', 'hostile: bad tokens', 0.03, Infinity],
  ['cancel', 'hostile: cancel flood', 0.01, 2],
  ['slow', 'hostile: slow reader', 0.02, 4],
  ['hog', 'hostile: one subject over its session limit', 0.005, 1],
  ['runaway', 'runaway agent (budget)', 0.01, 2],
] as const;
type MixKey = (typeof MIX)[number][0] | 'select1';
const MIX_KEYS: readonly string[] = ['select1', ...MIX.map((m) => m[0])];

function allocate(sessions: number, without: ReadonlySet<string>): Map<MixKey, { label: string; n: number }> {
  const out = new Map<MixKey, { label: string; n: number }>();
  let used = 0;
  for (const [key, label, share, cap] of MIX) {
    const n = without.has(key) ? 0 : Math.min(cap, Math.max(1, Math.round(sessions * share)));
    out.set(key, { label, n });
    used += n;
  }
  out.set('select1', { label: 'SELECT 1', n: without.has('select1') ? 0 : Math.max(1, sessions - used) });
  return out;
}

const ROW_CAPS = [1000, 500] as const;
/** Statements per minute the runaway agents' role may run (its budget). */
const RUNAWAY_BUDGET = 300;

function policyYaml(revision: number, rowCap: number, spare: string): string {
  return `# pgwarden soak policy (written by bench/soak.ts), revision ${revision}
roles:
  soak_reader:
    readOnly: true
    relations: [public.orders, public.customers, public.soak_big]
    deniedColumns: { public.customers: [ssn] }
    maxRows: ${rowCap}
    onRowCap: truncate
    catalog: introspection
  soak_writer:
    readOnly: false
    relations: [public.soak_ledger]
    write: { statements: [insert], relations: [public.soak_ledger] }
    catalog: introspection
  soak_spare:
    readOnly: true
    relations: [${spare}]
  soak_runaway:
    readOnly: true
    relations: [public.orders]
    budget: { per: agent, statementsPerMinute: ${RUNAWAY_BUDGET} }
`;
}

/** Replaces the file in one step (temp file + rename), as editors and ConfigMap updates do. */
function writeAtomically(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

/** One gauge or counter value from pgwarden's /metrics (summed over label sets), or undefined. */
async function metric(port: number, name: string): Promise<number | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2_000) });
    const text = await res.text();
    let sum: number | undefined;
    for (const line of text.split('\n')) {
      if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{'))
        sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds of the postmaster and every backend it forked (its children in /proc), including backends that already
 * exited (the postmaster's cutime/cstime), so connection churn is counted.
 */
function postgresCpuSeconds(postmaster: number): number {
  let total = 0;
  try {
    const stat = readFileSync(`/proc/${postmaster}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime, stime, cutime, cstime: fields 14-17 (1-based), 11-14 in `rest`.
    total += (Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) / 100;
    for (const pid of readFileSync(`/proc/${postmaster}/task/${postmaster}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)) {
      // A backend that exits between the listing and the read is counted in cutime/cstime instead, later.
      const c = cpuSeconds(Number(pid));
      if (Number.isFinite(c)) total += c;
    }
  } catch {
    return NaN;
  }
  return total;
}

async function superQuery(
  pgsrv: EmbeddedPostgres,
  db: string,
  sql: string,
  params?: unknown[],
): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: pgsrv.url(db) });
  await c.connect();
  try {
    return await c.query(sql, params as never[]);
  } finally {
    await c.end();
  }
}

const CANARY_FINGERPRINT = `SELECT count(*)::int AS n, coalesce(md5(string_agg(id || ':' || note, ',' ORDER BY id)), '') AS digest FROM public.canary`;

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

async function main(): Promise<number> {
  const opts = parseArgs(process.argv.slice(2));
  const started = new Date();
  const command = `node --import tsx bench/soak.ts ${process.argv.slice(2).join(' ')}`.trim();
  const machine = machineInfo();
  // What code ran: the commit, and whether the working tree held changes to pgwarden itself at the time.
  const gitHead = firstLine('git', ['-C', repo, 'rev-parse', '--short', 'HEAD']) || 'unknown';
  const dirty =
    spawnSync('git', ['-C', repo, 'status', '--porcelain', '--', 'proxy', 'policy'], { encoding: 'utf8' })
      .stdout?.split('\n')
      .filter(Boolean).length ?? 0;
  const gitDirty = dirty ? `${dirty} file(s) under proxy/ and policy/` : '';
  const loadStart = os.loadavg();
  const notes: string[] = [];
  const work = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-soak-'));
  let pgsrv: EmbeddedPostgres | undefined;
  let server: SoakServer | undefined;
  const live = new Set<{ close(): void }>();
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      for (const l of [...live]) l.close();
      await server?.stop().catch(() => {});
      await pgsrv?.stop().catch(() => {});
      await endStartedChildren();
      if (opts.keep) log(`kept ${work} (pgwarden.log, audit.jsonl, policy.yaml, revoked.yaml)`);
      else rmSync(work, { recursive: true, force: true });
    })());
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: ending every process this run started`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // A throw or rejection nobody catches must not leave PostgreSQL running: end everything, then exit 1. From the
  // start of the traffic on, they are recorded as unexpected errors instead (onStray, below) and the run goes on.
  let onStray: ((err: unknown) => void) | undefined;
  const fatal = (err: unknown) => {
    if (onStray) return onStray(err);
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    void cleanup().finally(() => process.exit(1));
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  const watchdog = setTimeout(() => {
    log(`time limit of ${(opts.limitMs / 60_000).toFixed(1)} min reached: stopping`);
    void cleanup().finally(() => process.exit(124));
  }, opts.limitMs);
  watchdog.unref();

  try {
    log(`machine: ${machine.nproc} CPUs (${machine.cpu}), ${machine.memory}, node ${machine.node}`);
    // 1. PostgreSQL: every session holds its own upstream connection; reconnects and the analysis pool need room too.
    const maxConnections = opts.sessions * 2 + 100;
    pgsrv = await startPostgres({
      settings: {
        max_connections: String(maxConnections),
        shared_buffers: '128MB',
        fsync: 'off',
        synchronous_commit: 'off',
        full_page_writes: 'off',
        log_min_messages: 'warning',
      },
    });
    const pgs = pgsrv;
    const pgVersion = String((await superQuery(pgs, 'postgres', 'SHOW server_version')).rows[0].server_version);
    const upstreamPassword = `soak-${randomBytes(12).toString('hex')}`;
    await superQuery(pgs, 'postgres', `CREATE DATABASE ${SAMPLE_DATABASE}`);
    await superQuery(pgs, SAMPLE_DATABASE, sampleSchemaSql(upstreamPassword));
    await superQuery(
      pgs,
      SAMPLE_DATABASE,
      `CREATE TABLE public.soak_ledger (id bigint PRIMARY KEY, writer int NOT NULL, note text NOT NULL, at timestamptz NOT NULL DEFAULT now());
       CREATE TABLE public.soak_big (id int PRIMARY KEY, pad text NOT NULL);
       INSERT INTO public.soak_big SELECT g, repeat(md5(g::text), 512) FROM generate_series(1, ${2 * ROW_CAPS[0]}) g;
       GRANT SELECT, INSERT ON public.soak_ledger TO ${SAMPLE_UPSTREAM_USER};
       GRANT SELECT ON public.soak_big TO ${SAMPLE_UPSTREAM_USER};`,
    );
    const canaryBefore = (await superQuery(pgs, SAMPLE_DATABASE, CANARY_FINGERPRINT)).rows[0] as {
      n: number;
      digest: string;
    };
    log(
      `PostgreSQL ${pgVersion} on port ${pgs.port} (max_connections ${maxConnections}); canary ${canaryBefore.n} rows`,
    );

    // 2. pgwarden in its own process, watching its policy and revocation files.
    const secretFile = path.join(work, 'jwt-secret');
    writeFileSync(secretFile, randomBytes(32).toString('base64url'), { mode: 0o600 });
    const policyFile = path.join(work, 'policy.yaml');
    let revision = 0;
    let capIndex = 0;
    writeFileSync(policyFile, policyYaml(revision, ROW_CAPS[capIndex] as number, 'public.orders'));
    const revocationFile = path.join(work, 'revoked.yaml');
    writeFileSync(revocationFile, 'revoked: []\n');
    const longTtlMs = opts.seconds * 1000 + 10 * 60_000;
    const spec: SoakServerSpec = {
      listenPort: await freePort(),
      upstream: {
        host: pgs.host,
        port: pgs.port,
        database: SAMPLE_DATABASE,
        user: SAMPLE_UPSTREAM_USER,
        password: upstreamPassword,
      },
      secretFile,
      policyFile,
      logFile: path.join(work, 'pgwarden.log'),
      auditFile: path.join(work, 'audit.jsonl'),
      logLevel: 'info',
      maxTokenLifetimeMs: longTtlMs + 60_000,
      maxClientConnections: opts.sessions * 2 + 200,
      maxLifetimeMs: opts.limitMs,
      baseDir: work,
      revocationFile,
      // pgwarden's defaults: the soak's legitimate sessions each have their own sub and share 8 agents per class.
      maxSessionsPerSub: 50,
      maxSessionsPerAgent: 100,
      maxUnauthenticated: 256,
      maxUnauthenticatedPerAddress: 32,
      handshakeTimeoutMs: 5_000,
      loginFailuresPerMinute: 30,
      cancelRequestsPerMinute: 60,
      maxUpstreamConnections: 0,
      idleSessionTimeoutMs: 5 * 60_000,
    };
    const specFile = path.join(work, 'soak-spec.json');
    writeFileSync(specFile, JSON.stringify(spec, null, 2));
    server = await startSoakServer(specFile);
    const srv = server;
    const auth = benchConfig(spec).auth;
    log(`pgwarden on port ${srv.port} (pid ${srv.pid}), admin listener on ${srv.metricsPort}`);

    // Warm-up: one reader session, so lazily loaded code and the catalog are in the baseline (and the row cap holds).
    {
      const token = await mintToken(auth, { sub: 'soak-warmup', role: 'soak_reader' }, 60_000);
      const c = new pg.Client({
        host: '127.0.0.1',
        port: srv.port,
        user: 'soak',
        database: SAMPLE_DATABASE,
        password: token,
      });
      await c.connect();
      const r = await c.query('SELECT id FROM soak_big');
      if (r.rows.length !== ROW_CAPS[0])
        throw new Error(
          `warm-up: SELECT id FROM soak_big returned ${r.rows.length} rows, expected the row cap ${ROW_CAPS[0]}`,
        );
      await c.end();
    }
    await sleep(1_000);
    const gcStart = await srv.gc();
    await sleep(200);
    const rssStartKb = procStatusKb(srv.pid, 'VmRSS');
    log(
      `pgwarden after warm-up and gc: RSS ${(rssStartKb / 1024).toFixed(0)} MiB, heap used ${gcStart ? (gcStart.heapUsed / 2 ** 20).toFixed(0) : '?'} MiB`,
    );

    // 3. Traffic.
    const rec = new Recorder();
    // A driver's promise nobody awaits (postgres.js's own type fetch, a socket error after close) is an error of the
    // run, not a crash of it.
    onStray = (err) =>
      rec.error('unhandled rejection', 'unhandled', false, err instanceof Error ? err.message : String(err));
    const ledger: Ledger = { acked: new Set(), inDoubt: new Set() };
    // This process's own event-loop delay: every latency below includes it, so the report says how large it was.
    const ownLoop = monitorEventLoopDelay({ resolution: 10 });
    ownLoop.enable();
    const t0 = Date.now();
    rec.origin = t0;
    const cpu0 = { pgwarden: cpuSeconds(srv.pid), postgres: postgresCpuSeconds(pgs.pid), self: process.cpuUsage() };
    const ctx: SoakContext = {
      port: srv.port,
      database: SAMPLE_DATABASE,
      stopAt: t0 + opts.seconds * 1000,
      mint: (claims, ttlMs, now) => mintToken(auth, claims, ttlMs, now),
      longTtlMs,
      rec,
      rowCaps: ROW_CAPS,
      live,
      thinkMs: opts.thinkMs,
      loginSlots: new Semaphore(16),
    };
    const mix = allocate(opts.sessions, opts.without);
    const mixText = [...mix.values()]
      .filter((m) => m.n > 0)
      .map((m) => `${m.n} ${m.label}`)
      .join(', ');
    log(`traffic: ${opts.sessions} sessions for ${opts.seconds} s — ${mixText}`);
    const kinds: RevocationKind[] = ['jti', 'sub', 'agent'];
    const targets: RevocationTarget[] = Array.from({ length: mix.get('revocable')?.n ?? 0 }, (_, k) => ({
      kind: kinds[k % 3] as RevocationKind,
      sub: `soak-rev-sub-${k}`,
      agent: `soak-rev-agent-${k}`,
      jti: randomUUID(),
      connected: false,
    }));
    const workers: Promise<void>[] = [];
    const spawnWorker = (name: string, p: () => Promise<void>) =>
      workers.push(
        p().catch((err) => {
          rec.error(
            name,
            'crash',
            false,
            err instanceof Error ? (err.stack ?? err.message).split('\n').slice(0, 2).join(' ') : String(err),
          );
        }),
      );
    const n = (k: MixKey) => mix.get(k)?.n ?? 0;
    for (let i = 0; i < n('select1'); i++) spawnWorker('SELECT 1', () => selectOne(ctx, i));
    for (let i = 0; i < n('read-simple'); i++) spawnWorker('read simple', () => readSimple(ctx, i));
    for (let i = 0; i < n('read-extended'); i++) spawnWorker('read extended', () => readExtended(ctx, i));
    for (let i = 0; i < n('read-postgresjs'); i++) spawnWorker('read postgres.js', () => readPostgresJs(ctx, i));
    for (let i = 0; i < n('capped'); i++) spawnWorker('capped read', () => cappedRead(ctx, i));
    for (let i = 0; i < n('writer'); i++) spawnWorker('writer', () => writer(ctx, i, ledger));
    for (let i = 0; i < n('short-token'); i++) spawnWorker('short token', () => reconnector(ctx, i));
    for (const t of targets) spawnWorker('revocable', () => revocable(ctx, t));
    for (let i = 0; i < n('denied'); i++) spawnWorker('hostile denied', () => hostileDenied(ctx, i));
    for (let i = 0; i < n('large'); i++) spawnWorker('hostile large', () => hostileLarge(ctx, i));
    for (let i = 0; i < n('malformed'); i++) spawnWorker('hostile malformed', () => hostileMalformed(ctx, i));
    for (let i = 0; i < n('bad-token'); i++) spawnWorker('hostile bad token', () => hostileBadToken(ctx, i));
    for (let i = 0; i < n('cancel'); i++)
      spawnWorker('hostile cancel flood', () => hostileCancelFlood(ctx, opts.cancelRate));
    for (let i = 0; i < n('slow'); i++) spawnWorker('hostile slow reader', () => slowReader(ctx, i, opts.slowPauseMs));
    for (let i = 0; i < n('hog'); i++)
      spawnWorker('hostile session hog', () => sessionHog(ctx, i, spec.maxSessionsPerSub));
    const runawayOk: [number, number][][] = [];
    for (let i = 0; i < n('runaway'); i++) {
      const ok: [number, number][] = [];
      runawayOk.push(ok);
      spawnWorker('runaway', () => runaway(ctx, i, 'soak_runaway', ok));
    }

    // 4. Meanwhile: RSS every second (sessions from /metrics), reloads, revocations.
    const samples: RssSample[] = [{ t: -1, rssKb: rssStartKb }];
    const markers: Marker[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const t = (Date.now() - t0) / 1000;
        const rssKb = procStatusKb(srv.pid, 'VmRSS');
        const sessions = await metric(srv.metricsPort, 'pgwarden_sessions_active');
        samples.push({ t, rssKb, ...(sessions !== undefined ? { sessions } : {}) });
        await sleep(1_000 - ((Date.now() - t0) % 1_000));
      }
    })();
    const reloads: { t: number; what: string; appliedMs?: number }[] = [];
    const reloader = (async () => {
      for (let k = 1; ; k++) {
        await sleep(t0 + k * opts.reloadEveryS * 1000 - Date.now());
        if (Date.now() >= ctx.stopAt - 2_000) return;
        // The version before the rewrite (retried: a stalled pgwarden answers /metrics late too).
        let before: number | undefined;
        for (let i = 0; i < 5 && before === undefined; i++)
          before = await metric(srv.metricsPort, 'pgwarden_policy_version');
        revision++;
        let what: string;
        if (k % 2 === 1) what = 'irrelevant change (soak_spare relations)';
        else {
          capIndex = 1 - capIndex;
          what = `soak_reader maxRows → ${ROW_CAPS[capIndex]}`;
        }
        const tr = Date.now();
        writeAtomically(
          policyFile,
          policyYaml(revision, ROW_CAPS[capIndex] as number, revision % 2 ? 'public.customers' : 'public.orders'),
        );
        const entry: { t: number; what: string; appliedMs?: number } = { t: (tr - t0) / 1000, what };
        reloads.push(entry);
        markers.push({ t: entry.t, kind: 'reload', label: what });
        const deadline = tr + 15_000;
        while (Date.now() < deadline) {
          const v = await metric(srv.metricsPort, 'pgwarden_policy_version');
          if (v !== undefined && before !== undefined && v > before) {
            entry.appliedMs = Date.now() - tr;
            break;
          }
          await sleep(100);
        }
      }
    })();
    const revoker = (async () => {
      const span = Math.max(1, opts.seconds - 10) * 1000;
      for (let k = 0; k < targets.length; k++) {
        const t = targets[k] as RevocationTarget;
        await sleep(t0 + 5_000 + ((k + 0.5) * span) / targets.length - Date.now());
        if (Date.now() >= ctx.stopAt - 3_000) break;
        t.liveAtRevocation = t.connected;
        t.revokedAt = Date.now();
        await revoke(revocationFile, {
          [t.kind]: t.kind === 'jti' ? t.jti : t.kind === 'sub' ? t.sub : t.agent,
          reason: `soak revocation ${k + 1}`,
        });
        markers.push({
          t: (t.revokedAt - t0) / 1000,
          kind: 'revocation',
          label: `revoked ${t.kind} of session ${k + 1}`,
        });
      }
    })();

    let lastReport = Date.now();
    let crashed: string | undefined;
    while (Date.now() < ctx.stopAt) {
      await sleep(Math.min(1_000, ctx.stopAt - Date.now()));
      if (srv.exited()) {
        // Still a result: stop the traffic, then check and report what there is.
        crashed = `pgwarden exited ${((Date.now() - t0) / 1000).toFixed(0)} s into the traffic: ${srv.stderr().trim().slice(-600) || '(no stderr)'}`;
        notes.push(`**${crashed}**`);
        log(crashed);
        ctx.stopAt = Date.now();
        break;
      }
      if (Date.now() - lastReport >= 15_000) {
        lastReport = Date.now();
        const last = samples[samples.length - 1];
        const unexpected = rec.unexpected().reduce((a, e) => a + e.count, 0);
        log(
          `  t=${((Date.now() - t0) / 1000).toFixed(0)} s: RSS ${last ? (last.rssKb / 1024).toFixed(0) : '?'} MiB, ${last?.sessions ?? '?'} sessions, ${rec.counters.get('statements ok') ?? 0} statements ok, ${ledger.acked.size} inserts acknowledged, ${unexpected} unexpected errors`,
        );
      }
    }
    ownLoop.disable();
    const wall = (Date.now() - t0) / 1000;
    const selfCpu = process.cpuUsage(cpu0.self);
    const cores = {
      pgwarden: (cpuSeconds(srv.pid) - cpu0.pgwarden) / wall,
      postgres: (postgresCpuSeconds(pgs.pid) - cpu0.postgres) / wall,
      clients: (selfCpu.user + selfCpu.system) / 1e6 / wall,
    };
    log('traffic stopped; waiting for sessions to finish (30 s at most)…');
    await Promise.race([Promise.all(workers), sleep(30_000)]);
    const stragglers = live.size;
    for (const l of [...live]) l.close();
    await Promise.race([Promise.all(workers), sleep(10_000)]);
    await Promise.all([reloader, revoker]);
    if (stragglers)
      notes.push(
        `${stragglers} connection(s) were still open 30 s after the traffic stopped and were closed by force.`,
      );

    // 5. Settle: pgwarden must still serve, and give back what the soak took.
    let finalQuery = 'ok';
    // The row cap of the last rewrite must be the one in force: the policy pgwarden ends with is the file's.
    const finalCap = ROW_CAPS[capIndex] as number;
    let finalRows: number | undefined;
    {
      const token = await mintToken(auth, { sub: 'soak-final', role: 'soak_reader' }, 60_000);
      const c = new pg.Client({
        host: '127.0.0.1',
        port: srv.port,
        user: 'soak',
        database: SAMPLE_DATABASE,
        password: token,
        connectionTimeoutMillis: 10_000,
        query_timeout: 10_000,
      });
      try {
        await c.connect();
        const t = process.hrtime.bigint();
        await c.query('SELECT 1');
        finalQuery = `ok (${(Number(process.hrtime.bigint() - t) / 1e6).toFixed(2)} ms)`;
        finalRows = (await c.query('SELECT id FROM soak_big')).rows.length;
      } catch (err) {
        finalQuery = `failed: ${err instanceof Error ? err.message : String(err)}`;
      } finally {
        await c.end().catch(() => {});
      }
    }
    await sleep(3_000);
    const sessionsAfter = await metric(srv.metricsPort, 'pgwarden_sessions_active');
    const gcEnd = await srv.gc();
    await sleep(200);
    const rssEndKb = procStatusKb(srv.pid, 'VmRSS');
    sampling = false;
    await sampler;
    samples.push({
      t: (Date.now() - t0) / 1000,
      rssKb: rssEndKb,
      ...(sessionsAfter !== undefined ? { sessions: sessionsAfter } : {}),
    });
    const peak = samples.reduce((a, s) => (s.rssKb > a.rssKb ? s : a), samples[0] as RssSample);
    log(
      `pgwarden after the soak and gc: RSS ${(rssEndKb / 1024).toFixed(0)} MiB (start ${(rssStartKb / 1024).toFixed(0)}, peak ${(peak.rssKb / 1024).toFixed(0)} at ${peak.t.toFixed(0)} s); final SELECT 1 ${finalQuery}`,
    );
    const metricsText = await fetch(`http://127.0.0.1:${srv.metricsPort}/metrics`, {
      signal: AbortSignal.timeout(3_000),
    })
      .then((r) => r.text())
      .catch(() => '');
    await srv.stop();

    // 6. Nothing lost: the database, the canary, revocations, the audit trail.
    const checks: Check[] = [];
    const dbIds = new Set<string>(
      (await superQuery(pgs, SAMPLE_DATABASE, 'SELECT id::text AS id FROM public.soak_ledger')).rows.map(
        (r: { id: string }) => r.id,
      ),
    );
    const missing = [...ledger.acked].filter((id) => !dbIds.has(id));
    const unknown = [...dbIds].filter((id) => !ledger.acked.has(id) && !ledger.inDoubt.has(id));
    const inDoubtPresent = [...ledger.inDoubt].filter((id) => dbIds.has(id)).length;
    checks.push({
      name: 'every acknowledged insert is in soak_ledger',
      ok: missing.length === 0 && (ledger.acked.size > 0 || n('writer') === 0),
      detail: `${ledger.acked.size.toLocaleString('en-US')} acknowledged, ${dbIds.size.toLocaleString('en-US')} rows in the table, ${missing.length} acknowledged ids missing${missing.length ? ` (e.g. ${missing.slice(0, 5).join(', ')})` : ''}; ${ledger.inDoubt.size} inserts failed or in doubt, ${inDoubtPresent} of them present`,
    });
    checks.push({
      name: 'no row in soak_ledger that no writer sent (refused inserts never reached the database)',
      ok: unknown.length === 0,
      detail: `${unknown.length} unexplained ids${unknown.length ? ` (e.g. ${unknown.slice(0, 5).join(', ')})` : ''}`,
    });
    const canaryAfter = (await superQuery(pgs, SAMPLE_DATABASE, CANARY_FINGERPRINT)).rows[0] as {
      n: number;
      digest: string;
    };
    checks.push({
      name: 'canary unchanged',
      ok: canaryAfter.n === canaryBefore.n && canaryAfter.digest === canaryBefore.digest,
      detail: `${canaryBefore.n} rows md5 ${canaryBefore.digest.slice(0, 12)} before, ${canaryAfter.n} rows md5 ${canaryAfter.digest.slice(0, 12)} after`,
    });
    const revoked = targets.filter((t) => t.revokedAt !== undefined);
    const liveRevoked = revoked.filter((t) => t.liveAtRevocation);
    // Every revoked identity's session must end: a live one with 57P01, one logging in at that moment by a refusal
    // (or, if the login won the race, by 57P01 once admitted): a session that never ended outlived its revocation.
    const notEnded = revoked.filter((t) => t.endedAt === undefined || (t.liveAtRevocation && t.endCode !== '57P01'));
    const endDelays = liveRevoked
      .filter((t) => t.endedAt !== undefined)
      .map((t) => (t.endedAt as number) - (t.revokedAt as number));
    checks.push({
      name: 'every revoked session ended (57P01)',
      ok: (revoked.length > 0 || targets.length === 0) && notEnded.length === 0,
      detail: `${revoked.length} revoked (${revoked.map((t) => t.kind).join(', ')}), ${liveRevoked.length} live at the time; ${notEnded.length} not ended${notEnded.length ? `: ${notEnded.map((t) => `${t.kind} ${t.endCode ?? 'still open'}`).join('; ')}` : ''}; time from revoke() to the FATAL: ${endDelays.length ? `${Math.min(...endDelays)}–${Math.max(...endDelays)} ms` : '–'}`,
    });
    const badRelogin = revoked.filter((t) => t.reloginCode !== '28000');
    checks.push({
      name: 'every revoked identity is refused at its next login (28000)',
      ok: (revoked.length > 0 || targets.length === 0) && badRelogin.length === 0,
      detail: `${revoked.length - badRelogin.length} of ${revoked.length} refused${badRelogin.length ? `; others: ${badRelogin.map((t) => `${t.kind} → ${t.reloginCode ?? 'not tried'}`).join(', ')}` : ''}`,
    });
    const audit = readAudit(spec.auditFile);
    if (audit.error) notes.push(`The audit trail could not be read: ${audit.error}`);
    const { events, allow, deny, fileReloads } = audit;
    const statementsOk = rec.counters.get('statements ok') ?? 0;
    const refused = rec.counters.get('statements refused (42501)') ?? 0;
    const ends = events.get('statement_end') ?? 0;
    checks.push({
      name: 'audit trail: a statement_end for every statement a client saw succeed, a deny for every 42501',
      ok: ends >= statementsOk && deny >= refused && (events.get('audit_gap') ?? 0) === 0,
      detail: `${audit.lines.toLocaleString('en-US')} lines: ${[...events]
        .sort()
        .map(([k, v]) => `${k} ${v.toLocaleString('en-US')}`)
        .join(
          ', ',
        )} (statement: ${allow.toLocaleString('en-US')} allow, ${deny.toLocaleString('en-US')} deny); clients saw ${statementsOk.toLocaleString('en-US')} statements succeed and ${refused.toLocaleString('en-US')} refused with 42501`,
    });
    checks.push({
      name: 'the audit trail records every revocation',
      ok: (events.get('revocation') ?? 0) >= revoked.length,
      detail: `${events.get('revocation') ?? 0} revocation events for ${revoked.length} revocations`,
    });
    // pgwarden's own account of each reload's duration (read file, compile, read the catalog, swap), from its log.
    const reloadMs = reloadDurations(spec.logFile);
    const applied = reloads.filter((r) => r.appliedMs !== undefined);
    const applyMs = applied.map((r) => r.appliedMs as number).sort((a, b) => a - b);
    checks.push({
      name: 'the last policy rewrite is in force at the end (its row cap)',
      ok: reloads.length === 0 || finalRows === finalCap,
      detail: `${reloads.length} rewrites; SELECT id FROM soak_big returned ${finalRows ?? '–'} rows after the soak, the last rewrite's cap is ${finalCap}. ${fileReloads} policy_reload audit events (reason file); pgwarden_policy_version moved within 15 s of ${applied.length} of the rewrites, ${applyMs.length ? `median ${percentile(applyMs, 0.5)} ms, max ${applyMs[applyMs.length - 1]} ms after the rename` : ''}${applied.length < reloads.length ? ` (the others were applied only together with a later rewrite, or later)` : ''}${reloadMs.length ? `; pgwarden's log: each reload took median ${percentile(reloadMs, 0.5)} ms, max ${reloadMs[reloadMs.length - 1]} ms` : ''}`,
    });
    checks.push({
      name: 'pgwarden ran through and still serves after the soak',
      ok: crashed === undefined && finalQuery.startsWith('ok'),
      detail: `${crashed ? `${crashed}; ` : ''}SELECT 1 through a new session: ${finalQuery}`,
    });
    // pgwarden counted each statement at some moment between its send and its result; statements whose sends and
    // results all lie within 59 s fell into one of its 60-second windows of one-second buckets, whatever the delays.
    const busiest = runawayOk.map((ts) => mostWithin(ts, 59_000));
    const budgetRefusals = [...rec.errors.values()]
      .filter((e) => e.cls === 'runaway agent (budget)' && e.code === '53400')
      .reduce((a, e) => a + e.count, 0);
    checks.push({
      name: `runaway agents stay within their budget (${RUNAWAY_BUDGET} statements a minute; the rest 53400)`,
      ok:
        busiest.every((b) => b <= RUNAWAY_BUDGET) &&
        (runawayOk.length === 0 || opts.seconds < 60 || budgetRefusals > 0),
      detail: runawayOk.length
        ? `${runawayOk.length} agent(s): ${runawayOk.map((ts, k) => `${ts.length} statements ran, at most ${busiest[k]} certainly within one minute window`).join('; ')}; ${budgetRefusals.toLocaleString('en-US')} refused with 53400`
        : 'not run (--without runaway)',
    });
    const unexpected = rec.unexpected();
    checks.push({
      name: 'no unexpected error',
      ok: unexpected.length === 0,
      detail: unexpected.length
        ? `${unexpected.reduce((a, e) => a + e.count, 0)} unexpected: ${unexpected.map((e) => `${e.cls} ${e.code} ×${e.count}`).join('; ')}`
        : 'every error was one its traffic class expects',
    });

    // 7. Report.
    const lost = checks.filter((c) => !c.ok);
    const mib = (kb: number) => (Number.isFinite(kb) ? `${(kb / 1024).toFixed(0)} MiB` : '–');
    const mibB = (b: number | undefined) => (b === undefined ? '–' : `${(b / 2 ** 20).toFixed(1)} MiB`);
    const metricLine = (name: string) =>
      metricsText
        .split('\n')
        .filter((l) => l.startsWith(name) && !l.startsWith('#'))
        .map((l) => `\`${l}\``)
        .join(', ') || '–';
    mkdirSync(opts.outDir, { recursive: true });
    const inBench = path.resolve(opts.outDir) === here;
    const svgName = inBench ? 'soak-rss.svg' : 'rss.svg';
    const mdName = inBench ? 'SOAK.md' : 'soak.md';
    const subtitle = `${opts.sessions} sessions, ${opts.seconds} s; reload every ${opts.reloadEveryS} s; ${revoked.length} revocations; ${machine.nproc} CPUs shared with PostgreSQL and the clients; ${started.toISOString().slice(0, 10)}`;
    writeFileSync(
      path.join(opts.outDir, svgName),
      rssSvg(
        samples,
        markers,
        latencyTimeline(rec.timeline),
        'pgwarden RSS and legitimate latency during the soak',
        subtitle,
      ),
    );
    const md: string[] = [];
    md.push('# pgwarden soak');
    md.push('');
    md.push(
      `Generated by \`${command}\` (bench/soak.ts) on ${started.toISOString().replace('T', ' ').slice(0, 16)} UTC, in ${((Date.now() - started.getTime()) / 60_000).toFixed(1)} min. **${lost.length === 0 ? 'Nothing lost, no unexpected error.' : `${lost.length} check(s) failed.`}**`,
    );
    md.push('');
    md.push('## Checks');
    md.push('');
    md.push('| check | result | detail |');
    md.push('|---|---|---|');
    for (const c of checks)
      md.push(`| ${c.name} | ${c.ok ? 'ok' : '**FAILED**'} | ${c.detail.replace(/\|/g, '\\|')} |`);
    md.push('');
    md.push('## Setup');
    md.push('');
    md.push(
      `- Code: commit ${gitHead}${gitDirty ? ` plus uncommitted changes in ${gitDirty} (other work in progress in the same tree when this ran)` : ''}.`,
    );
    md.push(
      `- ${machine.nproc} CPUs × ${machine.cpu}; ${machine.memory}; ${machine.kernel}; Node ${machine.node}; PostgreSQL ${pgVersion} (max_connections ${maxConnections}, fsync off). Clients, pgwarden and PostgreSQL share the machine over loopback.`,
    );
    const loadEnd = os.loadavg();
    md.push(
      `- Load average (1/5/15 min) at start ${loadStart.map((x) => x.toFixed(2)).join(' / ')}, at end ${loadEnd.map((x) => x.toFixed(2)).join(' / ')}.${(loadStart[0] ?? 0) > machine.nproc ? ` The machine was already busy with other work when the run started (load average above its ${machine.nproc} CPUs): every latency below includes waiting for a CPU.` : ''}`,
    );
    md.push(
      `- pgwarden: its own process (bench/lib/soak-server.ts, \`--expose-gc\`), log to a file at info, audit trail to a file (\`sql: normalized\`, \`onFailure: refuse\`), policy and revocation files watched; limits: maxClientConnections ${spec.maxClientConnections}, maxSessionsPerSub ${spec.maxSessionsPerSub}, maxSessionsPerAgent ${spec.maxSessionsPerAgent}, maxUnauthenticated ${spec.maxUnauthenticated} (${spec.maxUnauthenticatedPerAddress} per address), handshakeTimeout ${spec.handshakeTimeoutMs / 1000} s, loginFailuresPerMinute ${spec.loginFailuresPerMinute} and cancelRequestsPerMinute ${spec.cancelRequestsPerMinute} per address, maxUpstreamConnections ${spec.maxUpstreamConnections} (derived from max_connections), idleSessionTimeout ${spec.idleSessionTimeoutMs / 60_000} min, maxMessageSize 1 MiB (pgwarden's defaults, except maxClientConnections).`,
    );
    md.push(
      `- Sessions (${opts.sessions}): ${mixText}${opts.without.size ? ` (left out with --without: ${[...opts.without].join(', ')})` : ''}. Legitimate sessions pause ${opts.thinkMs / 2}–${(opts.thinkMs * 3) / 2} ms between statements and log in from 127.0.0.1 (at most 16 logins at once); each hostile kind connects from its own loopback address (127.0.0.3 bad tokens, .4 cancels, .5 malformed frames before login, .7 after login, .6 slow readers, .8 the session hog), so per-address limits land on it.`,
    );
    md.push(
      '- Legitimate: `SELECT 1` (pg, simple protocol); reads of orders/customers (pg simple, pg extended, postgres.js with named prepared statements); capped reads of `soak_big` (2,000 rows; the rows returned must equal one of the two row caps); writers inserting unique ids into `soak_ledger` (pg extended, postgres.js prepared), each acknowledged id remembered; short tokens (5–8 s, minted when pgwarden asks for the password) that are ended at `exp` (57P01) and log in again; revocable readers.',
    );
    md.push(
      '- Hostile: statements the policy refuses (denied column `customers.ssn`, `secrets`, writes to `canary` and `soak_ledger` from a read-only role, DELETE/UPDATE/TRUNCATE from the insert-only writer, DDL, a multi-statement Query hiding a DELETE); 256 KiB–1 MiB statements back to back, distinct each time (`SELECT 1,1,…`, nested parentheses, `1+1+…`, a huge IN list on `secrets`, a huge literal against `ssn`); malformed frames before and after login (startup length 2³¹−1, protocol 2.0, 100 KiB password message, Query with length 3, second StartupMessage, unknown type byte, Query declaring 2 MiB); bad tokens (garbage, wrong key, expired, unknown role); CancelRequest floods with made-up keys (4 connections at a time, at most ' +
        String(opts.cancelRate) +
        '/s per flooding session); slow readers that read 256 KiB of a 16 MiB result, stop reading for 10 s, then read the rest; one subject opening ' +
        String(spec.maxSessionsPerSub + 5) +
        ' sessions every 30 s (exactly ' +
        String(spec.maxSessionsPerSub) +
        ' must get in, the rest 53300). A runaway agent runs `SELECT 1` in a tight loop under a role budget of ' +
        String(RUNAWAY_BUDGET) +
        ' statements a minute (the rest must be refused with 53400).',
    );
    md.push(
      `- Every ${opts.reloadEveryS} s the policy file is replaced atomically (temp file + rename), alternately an irrelevant change (another role's relations) and \`soak_reader\`'s \`maxRows\` (${ROW_CAPS.join(' ↔ ')}). ${targets.length} revocable sessions are revoked one at a time across the run, by jti, sub and agent in turn, with \`revoke()\` (what \`pgwarden revoke\` does) on the watched revocation file; the session must end with 57P01 and the identity's next login must be refused with 28000.`,
    );
    md.push(
      `- CPU during the traffic (cores = CPU seconds / wall seconds, from /proc): pgwarden ${cores.pgwarden.toFixed(2)} (its worker threads included), PostgreSQL ${Number.isFinite(cores.postgres) ? cores.postgres.toFixed(2) : '–'} (postmaster and backends), the clients ${cores.clients.toFixed(2)}, of ${machine.nproc}; the rest of the machine (other work) is in the load average.`,
    );
    md.push(
      `- The clients run in one Node.js process (this script); its own event-loop delay during the traffic, which every client-side latency below includes: p50 ${(ownLoop.percentile(50) / 1e6).toFixed(1)} ms, p99 ${(ownLoop.percentile(99) / 1e6).toFixed(1)} ms, max ${(ownLoop.max / 1e6).toFixed(0)} ms.`,
    );
    for (const note of notes) md.push(`- ${note}`);
    md.push('');
    md.push('## Memory');
    md.push('');
    md.push(`![pgwarden RSS over the soak](${svgName})`);
    md.push('');
    md.push('| | RSS (VmRSS) | V8 heap used | external | array buffers |');
    md.push('|---|---:|---:|---:|---:|');
    md.push(
      `| start (after warm-up, gc) | ${mib(rssStartKb)} | ${mibB(gcStart?.heapUsed)} | ${mibB(gcStart?.external)} | ${mibB(gcStart?.arrayBuffers)} |`,
    );
    md.push(`| peak during the soak (1 s samples) | ${mib(peak.rssKb)} at ${peak.t.toFixed(0)} s | | | |`);
    md.push(
      `| end (sessions closed, 3 s, gc) | ${mib(rssEndKb)} (${rssEndKb >= rssStartKb ? '+' : ''}${((rssEndKb - rssStartKb) / 1024).toFixed(0)} MiB) | ${mibB(gcEnd?.heapUsed)} | ${mibB(gcEnd?.external)} | ${mibB(gcEnd?.arrayBuffers)} |`,
    );
    md.push('');
    const grown = (rssEndKb - rssStartKb) / 1024;
    md.push(
      `RSS after the soak is ${grown >= 0 ? `${grown.toFixed(0)} MiB above` : `${(-grown).toFixed(0)} MiB below`} where it started (issue 12 item 1's target: back within 50 MB). Logged-in sessions after the soak (pgwarden_sessions_active): ${sessionsAfter ?? '–'}. The lower panel of the plot is the latency of every legitimate statement (reads, inserts, SELECT 1) by the second it finished in.`,
    );
    md.push('');
    md.push('## Latency per traffic class');
    md.push('');
    md.push(
      "Client-side, from sending a statement to its result (or refusal); ms. `SELECT 1 (pg, simple)` is the event-loop canary: it waits behind whatever pgwarden's main thread is doing.",
    );
    md.push('');
    md.push(latencyTable(rec));
    md.push('');
    md.push('## Errors');
    md.push('');
    md.push(
      'Every error a client saw, by traffic class and SQLSTATE (or socket outcome); *expected* means the class is meant to get it (a refusal, a token expiry, a revocation).',
    );
    md.push('');
    md.push(errorTable([...rec.errors.values()]));
    md.push('');
    md.push('## Counters');
    md.push('');
    for (const [k, v] of [...rec.counters].sort()) md.push(`- ${k}: ${v.toLocaleString('en-US')}`);
    md.push(
      `- policy rewrites: ${reloads.map((r) => `${r.t.toFixed(0)} s ${r.what}${r.appliedMs !== undefined ? ` (applied in ${r.appliedMs} ms)` : ' (not seen applied)'}`).join('; ') || 'none'}`,
    );
    md.push(
      `- revocations: ${revoked.map((t) => `${(((t.revokedAt as number) - t0) / 1000) | 0} s ${t.kind}${t.endedAt !== undefined ? ` → ended ${t.endCode} after ${(t.endedAt as number) - (t.revokedAt as number)} ms` : t.liveAtRevocation ? ' → NOT ENDED' : ' (not logged in at the time)'}, relogin ${t.reloginCode ?? '–'}`).join('; ') || 'none'}`,
    );
    md.push(
      `- pgwarden metrics at the end: ${metricLine('pgwarden_logins_total')}; ${metricLine('pgwarden_sessions_ended_total')}`,
    );
    md.push('');
    md.push('## Not exercised');
    md.push('');
    md.push(
      'The revocation table (only the file is used), TLS, scale-out cancel forwarding between replicas, and `statementTimeout` / `idleInTransactionTimeout` changes in a reload (they end sessions at their next idle point by design, which would blur the revocation and expiry checks).',
    );
    md.push('');
    writeFileSync(path.join(opts.outDir, mdName), md.join('\n'));
    log(`wrote ${path.join(opts.outDir, mdName)} and ${path.join(opts.outDir, svgName)}`);
    for (const c of checks) log(`  ${c.ok ? 'ok    ' : 'FAILED'} ${c.name}: ${c.detail}`);
    return lost.length === 0 ? 0 : 1;
  } finally {
    clearTimeout(watchdog);
    await cleanup();
    const left = startedChildren();
    if (left.length) log(`warning: still running after cleanup: ${left.map((c) => `${c.pid} ${c.cmd}`).join(', ')}`);
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    process.exit(1);
  },
);
