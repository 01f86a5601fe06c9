// What PostgreSQL's own analysis costs per decision-cache miss (round trip, tree, catalog facts, judging), and what a cached decision costs with it on.
//
//   node --import tsx bench/analysis.bench.ts [--quick]
//
// A real PostgreSQL from npm, pgbench's and TPC-H's tables, the bench policy (bench/lib/policy.ts); the analysis
// connection logs in as a non-superuser, as pgwarden's does. Statements: pgbench -S (Parse with $1, and the
// simple-protocol text with a literal), TPC-H Q3, and the catalog query psql 15 sends for \dt.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import { startPostgres } from '../proxy/embedded/postgres.ts';
import { fmtUs, keep, measure } from './lib/timing.ts';
import { isMain } from './lib/tools.ts';
import { BENCH_ROLE, DECIDE_POLICY_YAML, PGBENCH_DDL } from './lib/policy.ts';
import { loadCorpus } from './corpus/corpus.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface AnalysisBenchRow {
  label: string;
  treeBytes: number;
  /** Median and p99 of a whole miss with warm catalog facts, of one with none cached, of the Parse round trip alone, and of reading the tree. */
  missUs: { p50: number; p99: number };
  coldUs: { p50: number; p99: number };
  roundTripUs: { p50: number; p99: number };
  readUs: number;
  /** A decision served from the cache, with the server's verdict cached beside it. */
  cachedUs: number;
}

export interface AnalysisBenchResult {
  markdown: string;
  rows: AnalysisBenchRow[] | string;
  elapsedMs: number;
}

function percentiles(xs: number[]): { p50: number; p99: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99) };
}

async function timeAsync(n: number, fn: () => Promise<unknown>, before?: () => void): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    before?.();
    const t0 = performance.now();
    await fn();
    out.push((performance.now() - t0) * 1000);
  }
  return out;
}

export async function runAnalysisBench(
  opts: { quick?: boolean; log?: (s: string) => void } = {},
): Promise<AnalysisBenchResult> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  const n = opts.quick ? 60 : 400;
  const parserMod = await import('../policy/parser.ts');
  const loadMod = await import('../policy/load.ts');
  const catalogMod = await import('../policy/catalog.ts');
  const evalMod = await import('../policy/evaluate.ts');
  const gateMod = await import('../proxy/session/policy-gate.ts');
  const checkMod = await import('../proxy/session/server-check.ts');
  const analysisMod = await import('../proxy/upstream/analysis.ts');
  const nodeMod = await import('../policy/pgnode.ts');
  await parserMod.initParser();
  const parsed = loadMod.parsePolicyText(DECIDE_POLICY_YAML, 'yaml', 'bench');
  if (!parsed.ok) throw new Error('bench policy invalid');
  const policy = loadMod.compilePolicy(parsed.doc, 1, loadMod.digestOf(DECIDE_POLICY_YAML));
  const role = policy.roles.get(BENCH_ROLE);
  if (!role) throw new Error('bench role missing');

  const server = await startPostgres({});
  const rows: AnalysisBenchRow[] = [];
  let pool: InstanceType<typeof analysisMod.AnalysisPool> | undefined;
  try {
    const su = new pg.Client({ connectionString: server.url() });
    await su.connect();
    let catalog: Awaited<ReturnType<typeof catalogMod.loadCatalog>>;
    const password = `bench-${Math.random().toString(36).slice(2)}`;
    try {
      await su.query(PGBENCH_DDL);
      await su.query(readFileSync(path.join(here, 'corpus', 'schema.sql'), 'utf8'));
      await su.query(`CREATE ROLE bench_analysis LOGIN PASSWORD '${password}' NOSUPERUSER`);
      catalog = await catalogMod.loadCatalog((sql, params) => su.query(sql, params as unknown[]), {
        relations: loadMod.policyRelations(policy),
      });
    } finally {
      await su.end();
    }
    pool = new analysisMod.AnalysisPool(
      {
        host: server.host,
        port: server.port,
        database: 'postgres',
        user: 'bench_analysis',
        password,
        sslmode: 'disable',
        connectTimeout: 5_000,
      } as never,
      { timeoutMs: 5_000, maxTreeBytes: 16 << 20, maxContexts: 4 },
    );
    const checker = new checkMod.ServerChecker({ pool, log: pino({ level: 'silent' }), ttlMs: 3_600_000 });
    const ctx = { dbRole: role.dbRole, searchPath: role.searchPath, display: {} };
    const view = { role, preparedNames: new Set<string>(), cursorNames: new Set<string>() };
    const store = { current: { policy, catalog } } as unknown as import('../policy/store.ts').PolicyStore;
    const gate = gateMod.createPolicyGate(store, { server: checker });

    const corpus = loadCorpus().statements;
    const q3 = corpus.find((e) => e.name === 'tpch-q3')?.sql;
    const psql = JSON.parse(
      readFileSync(path.join(here, '..', 'test', 'fixtures', 'psql15-queries.json'), 'utf8'),
    ) as Record<string, string[]>;
    const dt = psql['\\dt']?.[0];
    const cases: [string, string, 'simple' | 'parse', number[]][] = [
      ['pgbench -S (Parse, $1)', 'SELECT abalance FROM pgbench_accounts WHERE aid = $1;', 'parse', [23]],
      ['pgbench -S (simple, literal)', 'SELECT abalance FROM pgbench_accounts WHERE aid = 63493;', 'simple', []],
    ];
    if (q3) cases.push(['TPC-H Q3', q3, 'simple', []]);
    if (dt) cases.push(['psql \\dt catalog query', dt, 'simple', []]);
    const conn = await pool.connection(ctx);
    for (const [label, sql, mode, types] of cases) {
      const local = evalMod.evaluate(sql, mode, view, catalog, policy.version);
      if (!local.allow) throw new Error(`${label}: pgwarden's own analysis refused it: ${local.message}`);
      const text = local.rewrittenSql ?? sql;
      const first = await conn.parseTree(text, types);
      if (!first.ok)
        throw new Error(`${label}: the server refused it: ${'error' in first ? first.error.message : 'user code'}`);
      const tree = first.tree;
      const verdict = await checker.check(sql, types, role, ctx, local);
      if (verdict.deny !== undefined)
        throw new Error(`${label}: the server's analysis denied it: ${verdict.deny.message}`);
      const miss = await timeAsync(n, () => checker.check(sql, types, role, ctx, local));
      const cold = await timeAsync(
        Math.max(20, n / 4),
        () => checker.check(sql, types, role, ctx, local),
        () => checker.invalidate(),
      );
      const rt = await timeAsync(n, () => conn.parseTree(text, types));
      const read = measure(() => nodeMod.readNodeTree(tree), { budgetMs: opts.quick ? 200 : 800 });
      await gate.decide(sql, mode, view, types);
      const cached = measure(() => gate.decide(sql, mode, view, types), { budgetMs: opts.quick ? 200 : 800 });
      keep(cached);
      const row: AnalysisBenchRow = {
        label,
        treeBytes: tree.length,
        missUs: percentiles(miss),
        coldUs: percentiles(cold),
        roundTripUs: percentiles(rt),
        readUs: read.medianUs,
        cachedUs: cached.medianUs,
      };
      rows.push(row);
      log(
        `  ${label}: miss ${fmtUs(row.missUs.p50)} (p99 ${fmtUs(row.missUs.p99)}), cold ${fmtUs(row.coldUs.p50)}, round trip ${fmtUs(row.roundTripUs.p50)}, tree ${row.treeBytes} B read in ${fmtUs(row.readUs)}, cached ${fmtUs(row.cachedUs)}`,
      );
    }
  } finally {
    pool?.close();
    await server.stop();
  }
  const md: string[] = [];
  md.push(
    "PostgreSQL's own analysis on a decision-cache miss (bench/analysis.bench.ts; a real PostgreSQL on loopback, one analysis connection, sequential misses):",
  );
  md.push('');
  md.push(
    '| statement | tree | miss p50 / p99 | miss, no catalog facts cached, p50 / p99 | Parse round trip alone p50 / p99 | reading the tree | cached decision (hit) |',
  );
  md.push('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    md.push(
      `| ${r.label} | ${(r.treeBytes / 1024).toFixed(1)} KiB | ${fmtUs(r.missUs.p50)} / ${fmtUs(r.missUs.p99)} | ${fmtUs(r.coldUs.p50)} / ${fmtUs(r.coldUs.p99)} | ${fmtUs(r.roundTripUs.p50)} / ${fmtUs(r.roundTripUs.p99)} | ${fmtUs(r.readUs)} | ${fmtUs(r.cachedUs)} |`,
    );
  }
  md.push('');
  md.push(
    'A miss is one pipelined round trip (BEGIN READ ONLY, Parse, Sync, ROLLBACK and an advisory-lock reset) plus reading and judging the tree; "no catalog facts cached" adds the catalog lookup of every OID the tree names. A hit is the cached decision with the server\'s verdict kept beside it.',
  );
  return { markdown: md.join('\n'), rows, elapsedMs: Date.now() - started };
}

if (isMain(import.meta.url)) {
  runAnalysisBench({ quick: process.argv.includes('--quick'), log: (s) => console.error(s) })
    .then((r) => {
      console.log(r.markdown);
      process.exit(0);
    })
    .catch((err) => {
      console.error(err);
      process.exit(1);
    });
}
