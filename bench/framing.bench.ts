// Micro-benchmarks of the per-message work pgwarden adds: MessageFramer splitting a stream of DataRows, and the
// parse + decide path (policy/parser.ts + policy/evaluate.ts, cold and through the session gate's decision cache).
//
//   node --import tsx bench/framing.bench.ts [--quick]
//
// The decide part needs a catalog snapshot, so it starts a throwaway PostgreSQL (startPostgres) with pgbench's and
// the TPC-H tables (empty), reads the catalog the way pgwarden does (loadCatalog), and stops it again.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { MessageFramer } from '../proxy/wire/framer.ts';
import { startPostgres } from '../proxy/embedded/postgres.ts';
import { fmtUs, keep, measure } from './lib/timing.ts';
import { isMain } from './lib/tools.ts';
import { BENCH_ROLE, DECIDE_POLICY_YAML, PGBENCH_DDL } from './lib/policy.ts';
import { loadCorpus } from './corpus/corpus.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface FramingBenchResult {
  markdown: string;
  framing: { label: string; chunk: number; msgBytes: number; mbPerS: number; msgsPerS: number }[];
  decide: { label: string; mode: string; us: Record<string, number | undefined>; decision: string }[] | string;
  elapsedMs: number;
}

/** A DataRow ('D') with the given text column values. */
function dataRow(cols: string[]): Buffer {
  const parts = cols.map((c) => Buffer.from(c, 'utf8'));
  const len = 4 + 2 + parts.reduce((a, p) => a + 4 + p.length, 0);
  const b = Buffer.allocUnsafe(1 + len);
  b[0] = 0x44;
  b.writeInt32BE(len, 1);
  b.writeInt16BE(cols.length, 5);
  let o = 7;
  for (const p of parts) {
    b.writeInt32BE(p.length, o);
    o += 4;
    p.copy(b, o);
    o += p.length;
  }
  return b;
}

/** About `totalBytes` of back-to-back copies of `row`, cut into `chunk`-byte pieces as a socket would deliver them. */
function stream(row: Buffer, totalBytes: number, chunk: number): { chunks: Buffer[]; messages: number; bytes: number } {
  const messages = Math.max(1, Math.floor(totalBytes / row.length));
  const all = Buffer.allocUnsafe(messages * row.length);
  for (let i = 0; i < messages; i++) row.copy(all, i * row.length);
  const chunks: Buffer[] = [];
  // Fresh buffers per chunk, like socket reads (the framer keeps views into what it is given).
  for (let o = 0; o < all.length; o += chunk)
    chunks.push(Buffer.from(all.subarray(o, Math.min(all.length, o + chunk))));
  return { chunks, messages, bytes: all.length };
}

function benchFramer(quick: boolean): FramingBenchResult['framing'] {
  const rows: [string, Buffer][] = [
    ['pgbench -S row (1 int column)', dataRow(['-4821'])],
    [
      '5 columns, ~120 B',
      dataRow(['123456', 'customer 123456', 'customer123456@example.com', '2024-05-01 12:34:56.789+00', '1234.56']),
    ],
    ['1 column, 8 KiB', dataRow(['x'.repeat(8192)])],
  ];
  const chunkSizes = [65_536, 1_460];
  const total = quick ? 4 << 20 : 16 << 20;
  const out: FramingBenchResult['framing'] = [];
  for (const [label, row] of rows) {
    for (const chunk of chunkSizes) {
      const s = stream(row, total, chunk);
      let seen = 0;
      const m = measure(
        () => {
          const f = new MessageFramer({ maxMessageSize: 1 << 20 });
          let n = 0;
          for (const c of s.chunks) {
            f.push(c);
            let fr = f.next();
            while (fr !== null) {
              n++;
              fr = f.next();
            }
          }
          seen = n;
          return n;
        },
        { budgetMs: quick ? 300 : 1200, warmupMs: quick ? 100 : 300, minWarmupCalls: 2, sampleUs: 1, minSamples: 3 },
      );
      if (seen !== s.messages) throw new Error(`framer returned ${seen} messages, expected ${s.messages}`);
      const sec = m.medianUs / 1e6;
      out.push({ label, chunk, msgBytes: row.length, mbPerS: s.bytes / 1e6 / sec, msgsPerS: s.messages / sec });
    }
  }
  return out;
}

async function benchDecide(quick: boolean, log: (s: string) => void): Promise<FramingBenchResult['decide']> {
  let parserMod: typeof import('../policy/parser.ts');
  let evalMod: typeof import('../policy/evaluate.ts');
  let gateMod: typeof import('../proxy/session/policy-gate.ts');
  let loadMod: typeof import('../policy/load.ts');
  let catalogMod: typeof import('../policy/catalog.ts');
  try {
    parserMod = await import('../policy/parser.ts');
    evalMod = await import('../policy/evaluate.ts');
    gateMod = await import('../proxy/session/policy-gate.ts');
    loadMod = await import('../policy/load.ts');
    catalogMod = await import('../policy/catalog.ts');
  } catch (err) {
    return `skipped: the policy engine could not be loaded (${err instanceof Error ? err.message : String(err)})`;
  }
  await parserMod.initParser();
  const parsed = loadMod.parsePolicyText(DECIDE_POLICY_YAML, 'yaml', 'bench');
  if (!parsed.ok)
    return `skipped: bench policy invalid: ${parsed.issues.map((i) => loadMod.formatIssue(i, 'bench')).join('; ')}`;
  const policy = loadMod.compilePolicy(parsed.doc, 1, loadMod.digestOf(DECIDE_POLICY_YAML));
  const role = policy.roles.get(BENCH_ROLE);
  if (!role) return 'skipped: bench role missing after compile';

  // A real catalog snapshot, read the way pgwarden reads it.
  const server = await startPostgres({});
  let catalog: Awaited<ReturnType<typeof catalogMod.loadCatalog>>;
  try {
    const c = new pg.Client({ connectionString: server.url() });
    await c.connect();
    try {
      await c.query(PGBENCH_DDL);
      await c.query(readFileSync(path.join(here, 'corpus', 'schema.sql'), 'utf8'));
      catalog = await catalogMod.loadCatalog((sql, params) => c.query(sql, params as unknown[]), {
        relations: loadMod.policyRelations(policy),
      });
    } finally {
      await c.end();
    }
  } finally {
    await server.stop();
  }

  const corpus = loadCorpus().statements;
  const q3 = corpus.find((e) => e.name === 'tpch-q3')?.sql;
  const simple =
    corpus.find((e) => e.category === 'pgbench' && /aid = \d+;/.test(e.sql))?.sql ??
    'SELECT abalance FROM pgbench_accounts WHERE aid = 63493;';
  const cases: [string, string, 'simple' | 'parse'][] = [
    ['pgbench -S, extended/prepared (Parse)', 'SELECT abalance FROM pgbench_accounts WHERE aid = $1;', 'parse'],
    ['pgbench -S, simple (literal aid)', simple, 'simple'],
  ];
  if (q3) cases.push(['TPC-H Q3 (simple)', q3, 'simple']);
  const view = { role, preparedNames: new Set<string>(), cursorNames: new Set<string>() };
  const store = { current: { policy, catalog } } as unknown as import('../policy/store.ts').PolicyStore;
  const gate = gateMod.createPolicyGate(store);
  const budget = quick ? 300 : 1000;
  const out: Exclude<FramingBenchResult['decide'], string> = [];
  for (const [label, sql, mode] of cases) {
    const d = evalMod.evaluate(sql, mode, view, catalog, policy.version);
    const decision = d.allow
      ? `allow${d.rewrittenSql ? ' (rewritten with LIMIT)' : ''}${d.rowCap ? `, row cap ${d.rowCap.maxRows}` : ''}`
      : `deny: ${d.message}`;
    const parseOnly = measure(() => parserMod.parseStatements(sql), { budgetMs: budget });
    const cold = measure(() => evalMod.evaluate(sql, mode, view, catalog, policy.version), { budgetMs: budget });
    gate.decide(sql, mode, view);
    const cached = measure(() => gate.decide(sql, mode, view), { budgetMs: budget });
    // Simple-protocol pgbench sends a different literal every time: exact-text caching never hits.
    let i = 0;
    const varying =
      mode === 'simple' && /aid = \d+/.test(sql)
        ? measure(() => gate.decide(sql.replace(/aid = \d+/, `aid = ${(i++ % 1_000_000) + 1}`), mode, view), {
            budgetMs: budget,
          })
        : undefined;
    const us: Record<string, number | undefined> = {
      parse: parseOnly.medianUs,
      cold: cold.medianUs,
      cached: cached.medianUs,
      varying: varying?.medianUs,
    };
    keep(us);
    out.push({ label, mode, us, decision });
    log(
      `  ${label}: parse ${fmtUs(parseOnly.medianUs)}, parse+decide ${fmtUs(cold.medianUs)}, cached ${fmtUs(cached.medianUs)} — ${decision}`,
    );
  }
  return out;
}

export async function runFramingBench(
  opts: { quick?: boolean; log?: (s: string) => void } = {},
): Promise<FramingBenchResult> {
  const started = Date.now();
  const log = opts.log ?? (() => {});
  const framing = benchFramer(opts.quick ?? false);
  for (const f of framing)
    log(
      `  framer ${f.label}, ${f.chunk} B chunks: ${f.mbPerS.toFixed(0)} MB/s, ${(f.msgsPerS / 1e6).toFixed(2)} M msg/s`,
    );
  const decide = await benchDecide(opts.quick ?? false, log);
  const md: string[] = [];
  md.push(
    '`MessageFramer` (proxy/wire/framer.ts) splitting a stream of DataRows pushed in socket-sized chunks (new framer per pass; median of passes):',
  );
  md.push('');
  md.push('| message | bytes/msg | chunk | MB/s | messages/s |');
  md.push('|---|---:|---:|---:|---:|');
  for (const f of framing)
    md.push(
      `| ${f.label} | ${f.msgBytes} | ${f.chunk === 65_536 ? '64 KiB' : `${f.chunk} B`} | ${f.mbPerS.toFixed(0)} | ${(f.msgsPerS / 1e6).toFixed(2)} M |`,
    );
  md.push('');
  if (typeof decide === 'string') {
    md.push(`Parse + decide: ${decide}`);
  } else {
    md.push(
      'Parse + decide (policy/parser.ts `parseStatements`, policy/evaluate.ts `evaluate`, proxy/session/policy-gate.ts decision cache; role `bench`, maxRows 1000; median per call):',
    );
    md.push('');
    md.push(
      '| statement | message | parse only | parse + decide (cold) | cached decision | varying literal via gate | decision |',
    );
    md.push('|---|---|---:|---:|---:|---:|---|');
    for (const d of decide) {
      md.push(
        `| ${d.label} | ${d.mode === 'parse' ? 'Parse' : 'Query'} | ${fmtUs(d.us.parse ?? NaN)} | ${fmtUs(d.us.cold ?? NaN)} | ${fmtUs(d.us.cached ?? NaN)} | ${d.us.varying === undefined ? '–' : fmtUs(d.us.varying)} | ${d.decision} |`,
      );
    }
  }
  return { markdown: md.join('\n'), framing, decide, elapsedMs: Date.now() - started };
}

if (isMain(import.meta.url)) {
  runFramingBench({ quick: process.argv.includes('--quick'), log: (s) => console.error(s) })
    .then((r) => {
      console.log(r.markdown);
      console.error(`(framing bench took ${(r.elapsedMs / 1000).toFixed(1)} s)`);
    })
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    });
}
