// libpg-query (PostgreSQL's own grammar, WASM) vs pgsql-ast-parser (hand-written JS grammar) on one corpus of real
// read-only statements (bench/corpus/corpus.json, every statement validated on a real PG 15 by bench/corpus/build.ts):
// acceptance, parse time, and the comment/quote lexer differential.
//
//   node --import tsx bench/parsers.bench.ts [--quick]
import { createRequire } from 'node:module';
import { loadModule, parseSync } from 'libpg-query';
import { parse as astParse } from 'pgsql-ast-parser';
import { loadCorpus, type CorpusEntry } from './corpus/corpus.ts';
import { fmtUs, measure, type Measurement } from './lib/timing.ts';
import { isMain } from './lib/tools.ts';

export const DIFFERENTIAL = "SELECT /* ' */ 1; DELETE FROM victim; SELECT /* ' */ 2";

type ParserName = 'libpg-query' | 'pgsql-ast-parser';
const PARSERS: Record<ParserName, (sql: string) => number> = {
  'libpg-query': (sql) => parseSync(sql).stmts?.length ?? 0,
  'pgsql-ast-parser': (sql) => astParse(sql).length,
};

export interface ParserBenchResult {
  markdown: string;
  corpusSize: number;
  accepted: Record<ParserName, number>;
  headline: { label: string; sql: string; us: Record<ParserName, number | undefined> }[];
  differential: Record<ParserName, number | string>;
  elapsedMs: number;
}

function accepts(p: ParserName, sql: string): { ok: true; count: number } | { ok: false; error: string } {
  try {
    return { ok: true, count: PARSERS[p](sql) };
  } catch (err) {
    return { ok: false, error: (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? 'error' };
  }
}

function version(pkg: string): string {
  const require = createRequire(import.meta.url);
  try {
    return (require(`${pkg}/package.json`) as { version: string }).version;
  } catch {
    return '?';
  }
}

function find(corpus: CorpusEntry[], pred: (e: CorpusEntry) => boolean, what: string): CorpusEntry {
  const e = corpus.find(pred);
  if (!e) throw new Error(`corpus has no ${what}; rebuild it with node --import tsx bench/corpus/build.ts`);
  return e;
}

export async function runParserBench(
  opts: { quick?: boolean; log?: (s: string) => void } = {},
): Promise<ParserBenchResult> {
  const log = opts.log ?? (() => {});
  const started = Date.now();
  await loadModule();
  const file = loadCorpus();
  const corpus = file.statements;
  const names = Object.keys(PARSERS) as ParserName[];

  // 1. Acceptance.
  const results = new Map<CorpusEntry, Record<ParserName, ReturnType<typeof accepts>>>();
  for (const e of corpus)
    results.set(e, {
      'libpg-query': accepts('libpg-query', e.sql),
      'pgsql-ast-parser': accepts('pgsql-ast-parser', e.sql),
    });
  const categories = [...new Set(corpus.map((e) => e.category))];
  const accepted = Object.fromEntries(
    names.map((p) => [p, corpus.filter((e) => results.get(e)?.[p].ok).length]),
  ) as Record<ParserName, number>;

  // 2. Headline statements.
  const short = find(corpus, (e) => e.category === 'pgbench' && e.sql.includes('aid = $1'), "pgbench's -S statement");
  const medium = find(corpus, (e) => e.name === 'tpch-q3', 'TPC-H Q3');
  const long = find(corpus, (e) => e.name === 'psql \\dt', 'psql \\dt query');
  const headBudget = opts.quick ? 300 : 1500;
  const headline: ParserBenchResult['headline'] = [];
  for (const [label, e] of [
    ['short: pgbench -S', short],
    ['medium: TPC-H Q3', medium],
    ['long: psql \\dt', long],
  ] as const) {
    const us = {} as Record<ParserName, number | undefined>;
    for (const p of names) {
      if (!results.get(e)?.[p].ok) {
        us[p] = undefined;
        continue;
      }
      const fn = PARSERS[p];
      us[p] = measure(() => fn(e.sql), { budgetMs: headBudget, warmupMs: headBudget / 3 }).medianUs;
    }
    headline.push({ label, sql: e.sql, us });
    log(`  ${label}: ${names.map((p) => `${p} ${fmtUs(us[p] ?? NaN)}`).join(', ')}`);
  }

  // 3. Whole corpus: median per statement, then the mean of those medians.
  const perStmtBudget = opts.quick ? 4 : 15;
  const perStmt = new Map<CorpusEntry, Partial<Record<ParserName, Measurement>>>();
  for (const e of corpus) {
    const m: Partial<Record<ParserName, Measurement>> = {};
    for (const p of names) {
      if (!results.get(e)?.[p].ok) continue;
      const fn = PARSERS[p];
      m[p] = measure(() => fn(e.sql), {
        budgetMs: perStmtBudget,
        warmupMs: perStmtBudget / 3,
        minWarmupCalls: 3,
        minSamples: 3,
      });
    }
    perStmt.set(e, m);
  }
  const both = corpus.filter((e) => names.every((p) => results.get(e)?.[p].ok));
  const meanOf = (set: CorpusEntry[], p: ParserName) => {
    const xs = set.map((e) => perStmt.get(e)?.[p]?.medianUs).filter((x): x is number => x !== undefined);
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
  };
  const ratioWhereBoth = both.map(
    (e) => (perStmt.get(e)?.['pgsql-ast-parser']?.medianUs ?? NaN) / (perStmt.get(e)?.['libpg-query']?.medianUs ?? NaN),
  );
  ratioWhereBoth.sort((a, b) => a - b);

  // 4. The lexer differential: how many statements each parser sees.
  const differential = Object.fromEntries(
    names.map((p) => {
      const r = accepts(p, DIFFERENTIAL);
      return [p, r.ok ? r.count : `error: ${r.error}`];
    }),
  ) as Record<ParserName, number | string>;

  // Markdown.
  const pct = (n: number, d: number) => `${((100 * n) / d).toFixed(1)}%`;
  const md: string[] = [];
  md.push(
    `Corpus: **${corpus.length} read-only statements** (\`bench/corpus/corpus.json\`), every one executed successfully on ${file.server} ` +
      `(${file.method}); built ${file.generated.slice(0, 10)} by \`node --import tsx bench/corpus/build.ts\`. ` +
      `Parsers: libpg-query ${version('libpg-query')} (\`parseSync\`), pgsql-ast-parser ${version('pgsql-ast-parser')} (\`parse\`).`,
  );
  md.push('');
  md.push('| category | n | libpg-query | pgsql-ast-parser |');
  md.push('|---|---:|---:|---:|');
  for (const c of categories) {
    const set = corpus.filter((e) => e.category === c);
    const row = names.map((p) => {
      const n = set.filter((e) => results.get(e)?.[p].ok).length;
      return `${n} (${pct(n, set.length)})`;
    });
    md.push(`| ${c} | ${set.length} | ${row.join(' | ')} |`);
  }
  md.push(
    `| **all** | **${corpus.length}** | ${names.map((p) => `**${accepted[p]} (${pct(accepted[p], corpus.length)})**`).join(' | ')} |`,
  );
  md.push('');
  md.push(
    'Parse time (median of batched `process.hrtime.bigint()` samples after warm-up; one call = one whole string):',
  );
  md.push('');
  md.push('| statement | bytes | libpg-query | pgsql-ast-parser | ratio |');
  md.push('|---|---:|---:|---:|---:|');
  for (const h of headline) {
    const a = h.us['libpg-query'];
    const b = h.us['pgsql-ast-parser'];
    md.push(
      `| ${h.label} | ${Buffer.byteLength(h.sql)} | ${fmtUs(a ?? NaN)} | ${b === undefined ? 'rejected' : fmtUs(b)} | ${a && b ? `${(b / a).toFixed(1)}×` : '–'} |`,
    );
  }
  const la = meanOf(both, 'libpg-query');
  const lb = meanOf(both, 'pgsql-ast-parser');
  md.push(
    `| corpus mean, statements both accept (n=${both.length}) | – | ${fmtUs(la)} | ${fmtUs(lb)} | ${(lb / la).toFixed(1)}× |`,
  );
  md.push(
    `| corpus mean, all libpg-query accepts (n=${accepted['libpg-query']}) | – | ${fmtUs(meanOf(corpus, 'libpg-query'))} | – | – |`,
  );
  const q = (p: number) =>
    ratioWhereBoth[Math.min(ratioWhereBoth.length - 1, Math.floor(p * ratioWhereBoth.length))] ?? NaN;
  md.push('');
  md.push(
    `Per-statement slowdown of pgsql-ast-parser where both accept: median ${q(0.5).toFixed(1)}×, range ${q(0).toFixed(1)}×–${(ratioWhereBoth[ratioWhereBoth.length - 1] ?? NaN).toFixed(1)}×.`,
  );
  md.push('');
  md.push(
    `Lexer differential \`${DIFFERENTIAL}\` (PostgreSQL runs 3 statements, including the DELETE): ` +
      names.map((p) => `${p} sees **${differential[p]}**`).join(', ') +
      '.',
  );
  const rejected = corpus.filter((e) => !results.get(e)?.['pgsql-ast-parser'].ok);
  if (rejected.length) {
    md.push('');
    md.push(`<details><summary>The ${rejected.length} valid statements pgsql-ast-parser rejects</summary>\n`);
    for (const c of categories) {
      const r = rejected.filter((e) => e.category === c);
      if (r.length) md.push(`- **${c}** (${r.length}): ${r.map((e) => `\`${e.name.replace(/`/g, "'")}\``).join(', ')}`);
    }
    md.push('\n</details>');
  }
  const libRejected = corpus.filter((e) => !results.get(e)?.['libpg-query'].ok);
  if (libRejected.length) md.push(`\nlibpg-query rejected: ${libRejected.map((e) => `\`${e.name}\``).join(', ')}`);
  return {
    markdown: md.join('\n'),
    corpusSize: corpus.length,
    accepted,
    headline,
    differential,
    elapsedMs: Date.now() - started,
  };
}

if (isMain(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  runParserBench({ quick, log: (s) => console.error(s) })
    .then((r) => {
      console.log(r.markdown);
      console.error(`(parser bench took ${(r.elapsedMs / 1000).toFixed(1)} s)`);
    })
    .catch((err) => {
      console.error(err);
      process.exitCode = 1;
    });
}
