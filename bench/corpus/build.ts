// Builds bench/corpus/corpus.json: captures psql 15 `-E` catalog queries and pgbench's statements from a real
// throwaway PostgreSQL, adds the hand-written TPC-H / BI-ORM / utility files, and keeps only statements that run on it.
//
//   node --import tsx bench/corpus/build.ts
//
// Every statement is executed through psql (simple-query protocol, the exact string) inside BEGIN READ ONLY … ROLLBACK
// on a scratch database (`corpus`) holding pgbench's tables (-s 1), the TPC-H schema and a few BI tables
// (bench/corpus/schema.sql); statements with $n parameters are checked with PREPARE. Statements that fail are dropped
// and listed in corpus.json under `dropped`, so the corpus is honest about what a real PG 15 accepts.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startPostgres, type EmbeddedPostgres } from '../../proxy/embedded/postgres.ts';
import { findClientBinary, isMain, run } from '../lib/tools.ts';
import { CORPUS_JSON, type Category, type CorpusEntry, type CorpusFile } from './corpus.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Reads a hand-written corpus file: `-- name: x`, optional `-- setup: …` / `-- notx` lines, then the statement. */
export function readSqlFile(file: string, category: Category): CorpusEntry[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out: CorpusEntry[] = [];
  let cur: CorpusEntry | undefined;
  let body: string[] = [];
  let inHeader = false;
  const flush = () => {
    if (cur) {
      cur.sql = body.join('\n').replace(/\s+$/, '');
      out.push(cur);
    }
  };
  for (const line of lines) {
    const m = /^-- name: (\S+)\s*$/.exec(line);
    if (m) {
      flush();
      cur = { name: m[1] ?? '', category, sql: '' };
      body = [];
      inHeader = true;
      continue;
    }
    if (!cur) continue; // file header comment
    if (inHeader) {
      const s = /^-- setup: (.*)$/.exec(line);
      if (s) {
        (cur.setup ??= []).push(s[1] ?? '');
        continue;
      }
      if (/^-- notx\s*$/.test(line)) {
        cur.notx = true;
        continue;
      }
      inHeader = false;
    }
    body.push(line);
  }
  flush();
  return out;
}

/** psql meta-commands whose ECHO_HIDDEN queries make up the psql part of the corpus. */
const PSQL_COMMANDS = [
  '\\d',
  '\\d+',
  '\\dt',
  '\\dt+',
  '\\dt sales.*',
  '\\d sales."Orders"',
  '\\d pgbench_accounts',
  '\\d+ customers',
  '\\d+ sales.big_orders',
  '\\dn',
  '\\dn+',
  '\\df',
  '\\df add_one',
  '\\df+ add_one',
  '\\l',
  '\\l+',
  '\\dv',
  '\\di',
  '\\di+',
  '\\ds',
  '\\du',
  '\\dg',
  '\\dx',
  '\\dx+ plpgsql',
  '\\dT',
  '\\dp',
  '\\z victim',
  '\\dD',
  '\\dC',
  '\\do',
  '\\dd',
  '\\dX',
  '\\dconfig work_mem',
  '\\dE',
  '\\dm',
  '\\dy',
  '\\dL',
  '\\db',
  '\\dF',
  '\\dc',
  '\\des',
  '\\dRp',
  '\\dRs',
  '\\dA',
  '\\dAc',
  '\\da',
  '\\dO',
  '\\sf add_one',
  '\\sv sales.big_orders',
  '\\dP',
  '\\drds',
];

async function capturePsql(psql: string, env: NodeJS.ProcessEnv, port: number): Promise<CorpusEntry[]> {
  const seen = new Set<string>();
  const out: CorpusEntry[] = [];
  for (const cmd of PSQL_COMMANDS) {
    const r = await run(
      psql,
      ['-X', '-E', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'corpus', '-c', cmd],
      { env, timeoutMs: 20_000 },
    );
    const text = r.stdout ?? '';
    const re = /\*{9} QUERY \*{10}\n([\s\S]*?)\n\*{26}\n/g;
    let m: RegExpExecArray | null;
    let i = 0;
    while ((m = re.exec(text))) {
      const sql = (m[1] ?? '').trim();
      i++;
      // Queries that differ only in literals (the OID of the table being described, its name) count once.
      const shape = sql.replace(/'(?:[^']|'')*'/g, "'?'").replace(/\b\d+\b/g, 'N');
      if (seen.has(shape)) continue;
      seen.add(shape);
      out.push({ name: `psql ${cmd}${i > 1 ? ` #${i}` : ''}`, category: 'psql15-E', sql });
    }
  }
  return out;
}

/** Runs pgbench in each protocol mode with log_statement=all and keeps its distinct read-only statements. */
async function capturePgbench(
  pgbench: string,
  env: NodeJS.ProcessEnv,
  port: number,
  logLines: string[],
): Promise<CorpusEntry[]> {
  logLines.length = 0;
  const runs: [string, string[]][] = [
    ['select-only simple', ['-S', '-M', 'simple']],
    ['select-only extended', ['-S', '-M', 'extended']],
    ['select-only prepared', ['-S', '-M', 'prepared']],
    ['tpcb simple', ['-M', 'simple']],
  ];
  for (const [, args] of runs) {
    const r = await run(
      pgbench,
      ['-n', '-t', '3', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', ...args, 'corpus'],
      {
        env: { ...env, PGAPPNAME: 'pgbench' },
        timeoutMs: 30_000,
      },
    );
    if (r.status !== 0) throw new Error(`pgbench ${args.join(' ')} failed: ${r.stderr.trim()}`);
  }
  await new Promise((r) => setTimeout(r, 300)); // let the server's log lines arrive
  // log_line_prefix '%a|' keeps only pgbench's own sessions; continuation lines start with a tab.
  const stmts: string[] = [];
  let inPgbench = false;
  for (const line of logLines) {
    const m = /^pgbench\|LOG:\s+(?:statement|execute [^:]+): (.*)$/.exec(line);
    if (m) {
      stmts.push(m[1] ?? '');
      inPgbench = true;
    } else if (line.startsWith('\t') && inPgbench && stmts.length > 0) {
      stmts[stmts.length - 1] += '\n' + line.slice(1);
    } else {
      inPgbench = false;
    }
  }
  const seen = new Set<string>();
  const out: CorpusEntry[] = [];
  for (const sql of stmts) {
    const shape = sql.replace(/\b\d+\b/g, 'N').trim();
    // Writes (the TPC-B part) are not read-only traffic; `vacuum`/`truncate` come from pgbench's setup.
    if (/^\s*(insert|update|delete|vacuum|truncate)\b/i.test(sql) || seen.has(shape)) continue;
    seen.add(shape);
    out.push({ name: `pgbench ${sql.slice(0, 40).replace(/\s+/g, ' ')}`, category: 'pgbench', sql: sql.trim() });
  }
  return out;
}

async function validate(
  psql: string,
  env: NodeJS.ProcessEnv,
  port: number,
  e: CorpusEntry,
): Promise<string | undefined> {
  const hasParams = !/^\s*PREPARE\b/i.test(e.sql) && /\$\d/.test(e.sql.replace(/\$([A-Za-z_]*)\$[\s\S]*?\$\1\$/g, ''));
  const stmt = hasParams ? `PREPARE _corpus_check AS ${e.sql}` : e.sql;
  const cmds = [...(e.notx ? [] : ['BEGIN READ ONLY']), ...(e.setup ?? []), stmt, ...(e.notx ? [] : ['ROLLBACK'])];
  const args = [
    '-X',
    '-q',
    '-v',
    'ON_ERROR_STOP=1',
    '-h',
    '127.0.0.1',
    '-p',
    String(port),
    '-U',
    'postgres',
    '-d',
    'corpus',
  ];
  for (const c of cmds) args.push('-c', c);
  const r = await run(psql, args, { env, timeoutMs: 30_000 });
  if (r.status === 0) return undefined;
  return (r.timedOut ? 'timed out' : r.stderr || `exit ${r.status}`).trim().split('\n')[0] ?? 'failed';
}

async function main(): Promise<void> {
  const psql = findClientBinary('psql');
  const pgbench = findClientBinary('pgbench');
  if (!psql || !pgbench)
    throw new Error(
      'psql and pgbench are needed to build the corpus (apt-get install postgresql-client postgresql-contrib)',
    );
  const logLines: string[] = [];
  let server: EmbeddedPostgres | undefined;
  const stop = async () => {
    await server?.stop();
  };
  process.once('SIGINT', () => void stop().then(() => process.exit(130)));
  process.once('SIGTERM', () => void stop().then(() => process.exit(143)));
  try {
    server = await startPostgres({
      settings: { log_statement: 'all', log_line_prefix: '%a|', log_min_messages: 'warning', lc_messages: 'C' },
      log: (l) => logLines.push(l),
    });
    const env = {
      ...process.env,
      PGPASSWORD: server.superPassword,
      PGCONNECT_TIMEOUT: '10',
      PGAPPNAME: 'corpus-build',
    };
    const admin = new pg.Client({ connectionString: server.url() });
    await admin.connect();
    await admin.query('CREATE DATABASE corpus');
    const serverVersion = (await admin.query('SHOW server_version')).rows[0].server_version as string;
    await admin.end();
    const init = await run(
      pgbench,
      ['-i', '-s', '1', '-q', '-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres', 'corpus'],
      { env, timeoutMs: 120_000 },
    );
    if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
    const db = new pg.Client({ connectionString: server.url('corpus') });
    await db.connect();
    await db.query(readFileSync(path.join(here, 'schema.sql'), 'utf8'));
    await db.end();

    const entries: CorpusEntry[] = [
      ...(await capturePsql(psql, env, server.port)),
      ...(await capturePgbench(pgbench, env, server.port, logLines)),
      ...readSqlFile(path.join(here, 'tpch.sql'), 'tpch'),
      ...readSqlFile(path.join(here, 'bi.sql'), 'bi/orm'),
      ...readSqlFile(path.join(here, 'utility.sql'), 'utility'),
    ];
    const kept: CorpusEntry[] = [];
    const dropped: CorpusFile['dropped'] = [];
    for (const e of entries) {
      const err = await validate(psql, env, server.port, e);
      if (err === undefined) kept.push(e);
      else dropped.push({ name: e.name, category: e.category, error: err });
    }
    const version = (bin: string) => spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
    const file: CorpusFile = {
      generated: new Date().toISOString(),
      server: `PostgreSQL ${serverVersion} (${server.binDir})`,
      psql: version(psql),
      pgbench: version(pgbench),
      method:
        'each statement ran through psql -c (simple protocol, exact string) inside BEGIN READ ONLY … ROLLBACK after its setup; $n statements via PREPARE; failures dropped',
      statements: kept,
      dropped,
    };
    writeFileSync(CORPUS_JSON, JSON.stringify(file, null, 1) + '\n');
    const counts = new Map<string, number>();
    for (const e of kept) counts.set(e.category, (counts.get(e.category) ?? 0) + 1);
    console.log(
      `corpus: ${kept.length} statements kept (${[...counts].map(([k, v]) => `${k} ${v}`).join(', ')}), ${dropped.length} dropped`,
    );
    for (const d of dropped) console.log(`  dropped [${d.category}] ${d.name}: ${d.error}`);
    console.log(`wrote ${path.relative(process.cwd(), CORPUS_JSON)}`);
  } finally {
    await stop();
  }
}

if (isMain(import.meta.url)) {
  main().catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
}
