// End-to-end bypass corpus: the README's example config and policy served by the real CLI (`node bin/pgwarden.js serve`);
// every entry of test/fixtures/corpus/bypass.sql is refused by pgwarden itself, every entry of legit.sql passes, and the
// database looks exactly the same afterwards.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModule, parseSync } from 'libpg-query';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { freePort } from '../../proxy/embedded/postgres.ts';
import { EXAMPLE_POLICY_YAML, exampleConfigYaml } from '../fixtures/example.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CORPUS_DIR = path.join(ROOT, 'test/fixtures/corpus');
const CLI = path.join(ROOT, 'bin/pgwarden.js');

/** SQLSTATEs a pgwarden refusal may carry (insufficient_privilege, feature_not_supported). */
const REFUSAL_CODES = ['42501', '0A000'];
/** A refusal must come from pgwarden, not from Postgres's own permission checks (which also use 42501/0A000). */
const FROM_PGWARDEN = /pgwarden/i;
/** The role's statementTimeout is 5 s: anything that reaches Postgres ends well within this. */
const QUERY_TIMEOUT_MS = 8_000;
const START_TIMEOUT_MS = 20_000;
/** The policy's maxRows (onRowCap: truncate): no statement returns more. */
const MAX_ROWS = 100;
/** Files a leaked COPY … TO / TO PROGRAM / lo_export would create on the (local) server. */
const LEAK_FILES = [
  '/tmp/pgwarden-corpus-orders.csv',
  '/tmp/pgwarden-corpus-select.csv',
  '/tmp/pgwarden-corpus-pwned',
  '/tmp/pgwarden-corpus-lo',
];

// ------------------------------------------------------------------ corpus files

interface Entry {
  family: string;
  /** 1-based position in its file. */
  n: number;
  /** Line of the SQL's first line in the file. */
  line: number;
  sql: string;
  /** Statements in the text per libpg-query (undefined when it does not parse). */
  statements: number | undefined;
  /** `-- params:` values: the entry runs through the extended protocol only, with these bound. */
  params?: unknown[];
  /** `-- param-types:` type OIDs sent in the Parse message. */
  paramTypes?: number[];
}

const DIRECTIVE = /^-- (params|param-types):\s*(.*)$/;

function loadCorpus(file: string): Entry[] {
  const text = readFileSync(path.join(CORPUS_DIR, file), 'utf8');
  const lines = text.split('\n');
  const entries: Entry[] = [];
  let chunk: { start: number; lines: string[] } = { start: 1, lines: [] };
  const flush = () => {
    const familyIdx = chunk.lines.findIndex((l) => l.startsWith('-- family:'));
    const directives: Record<string, unknown> = {};
    const body: string[] = [];
    chunk.lines.forEach((l, i) => {
      const d = DIRECTIVE.exec(l);
      if (d && familyIdx >= 0) directives[d[1] ?? ''] = JSON.parse(d[2] ?? '');
      else if (i !== familyIdx) body.push(l);
    });
    const sql = body.join('\n').trim();
    if (familyIdx < 0) {
      // Only the file header may lack a family line, and it must be comments only.
      if (body.some((l) => l.trim() !== '' && !l.startsWith('--'))) {
        throw new Error(`${file}:${chunk.start}: entry without a "-- family:" line`);
      }
      return;
    }
    const family = (chunk.lines[familyIdx] ?? '').slice('-- family:'.length).trim();
    if (!family || !sql) throw new Error(`${file}:${chunk.start}: empty family or SQL`);
    const firstSqlLine = body.findIndex((l) => l.trim() !== '');
    const offset = firstSqlLine + 1 + Object.keys(directives).length;
    let statements: number | undefined;
    try {
      statements = parseSync(sql).stmts?.length ?? 0;
    } catch {
      statements = undefined;
    }
    const params = directives.params as unknown[] | undefined;
    const paramTypes = directives['param-types'] as number[] | undefined;
    if (paramTypes && !params) throw new Error(`${file}:${chunk.start}: param-types without params`);
    entries.push({
      family,
      n: entries.length + 1,
      line: chunk.start + offset,
      sql,
      statements,
      ...(params ? { params } : {}),
      ...(paramTypes ? { paramTypes } : {}),
    });
  };
  lines.forEach((l, i) => {
    if (l === '-- ---') {
      flush();
      chunk = { start: i + 2, lines: [] };
    } else {
      chunk.lines.push(l);
    }
  });
  flush();
  return entries;
}

function byFamily(entries: Entry[]): Array<[string, Entry[]]> {
  const m = new Map<string, Entry[]>();
  for (const e of entries) m.set(e.family, [...(m.get(e.family) ?? []), e]);
  return [...m.entries()];
}

function oneLine(sql: string, max = 110): string {
  const s = sql.replace(/\s+/g, ' ').trim();
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

await loadModule();
const BYPASS = loadCorpus('bypass.sql');
const LEGIT = loadCorpus('legit.sql');

// ------------------------------------------------------------------ the proxy, through the CLI

let dir = '';
let configFile = '';
let auditFile = '';
let listenPort = 0;
let token = '';
let child: ChildProcess | undefined;
let childExit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
let childOutput = '';
let before: Fingerprint | undefined;

function configYaml(pgHost: string, pgPort: number, port: number, metricsPort: number): string {
  // The issue's example, with the test server's address and free ports, plus an audit file.
  return exampleConfigYaml({
    listenPort: port,
    upstreamHost: pgHost,
    upstreamPort: pgPort,
    metricsPort,
    extra: 'audit: { destination: ./audit.jsonl }\n',
  });
}

const POLICY_YAML = EXAMPLE_POLICY_YAML;

/** The environment for the CLI, without PGWARDEN_* overrides that would change the config under test. */
function cliEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PGWARDEN_')) env[k] = v;
  return env;
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (child?.exitCode !== null && child?.exitCode !== undefined) {
      throw new Error(`pgwarden serve exited with ${child.exitCode} before listening:\n${childOutput}`);
    }
    if (Date.now() > deadline)
      throw new Error(`pgwarden serve did not listen on ${port} within ${timeoutMs} ms:\n${childOutput}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function mint(): Promise<string> {
  const args = [CLI, 'token', 'mint', '--config', configFile, '--sub', 'corpus', '--role', 'analyst', '--ttl', '300s'];
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, args, { cwd: ROOT, env: cliEnv(), timeout: START_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(`token mint failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
  const jwt = out.trim();
  // stdout is only the JWT
  expect(out).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n?$/);
  return jwt;
}

// ------------------------------------------------------------------ the database fingerprint

type Fingerprint = Record<string, unknown>;

// preparedXacts leaves out gids under tp-: the two-phase tests (test/integration/two-phase.test.ts, psycopg's compat
// check) prepare and finish their own while this file runs; the corpus's roles have no twoPhase.

const FINGERPRINT_SQL = `SELECT json_build_object(
  'canary', (SELECT json_agg(c ORDER BY c.id) FROM public.canary c),
  'secrets', (SELECT json_agg(s ORDER BY s.id) FROM public.secrets s),
  'orders', (SELECT count(*) FROM public.orders),
  'ordersMd5', (SELECT md5(string_agg(o::text, ',' ORDER BY o.id)) FROM public.orders o),
  'customers', (SELECT count(*) FROM public.customers),
  'customersMd5', (SELECT md5(string_agg(c::text, ',' ORDER BY c.id)) FROM public.customers c),
  'relations', (SELECT json_agg(json_build_object(
      'name', c.relname, 'kind', c.relkind, 'owner', pg_get_userbyid(c.relowner), 'acl', c.relacl::text,
      'rls', c.relrowsecurity, 'comment', obj_description(c.oid, 'pg_class'),
      'columns', (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
    ) ORDER BY c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'),
  'functions', (SELECT json_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace),
  'sequences', (SELECT json_agg(json_build_object('name', sequencename, 'last', last_value) ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'),
  'triggers', (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'),
  'rules', (SELECT count(*) FROM pg_rules WHERE schemaname = 'public'),
  'policies', (SELECT count(*) FROM pg_policy),
  'pwnedSchemas', (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pwned%'),
  'roles', (SELECT json_agg(rolname ORDER BY rolname) FROM pg_roles),
  'memberships', (SELECT json_agg(pg_get_userbyid(roleid) || '>' || pg_get_userbyid(member) ORDER BY 1) FROM pg_auth_members),
  'roleSettings', (SELECT json_agg(json_build_object('db', setdatabase, 'role', setrole, 'config', setconfig) ORDER BY setdatabase, setrole) FROM pg_db_role_setting),
  'defaultAcls', (SELECT count(*) FROM pg_default_acl),
  'databases', (SELECT json_agg(datname ORDER BY datname) FROM pg_database),
  'extensions', (SELECT json_agg(extname ORDER BY extname) FROM pg_extension),
  'largeObjects', (SELECT count(*) FROM pg_largeobject_metadata),
  'preparedXacts', (SELECT count(*) FROM pg_prepared_xacts WHERE gid NOT LIKE 'tp-%'),
  'tempRelations', (SELECT count(*) FROM pg_class WHERE relpersistence = 't'),
  'replicationSlots', (SELECT count(*) FROM pg_replication_slots)
) AS f`;

async function fingerprint(): Promise<Fingerprint> {
  const su = new pg.Client({ connectionString: inject('pg').superUrl });
  await su.connect();
  try {
    const f = (await su.query(FINGERPRINT_SQL)).rows[0].f as Fingerprint;
    // ALTER SYSTEM writes postgresql.auto.conf (superuser can read it).
    f.autoConf = await su.query(`SELECT pg_read_file('postgresql.auto.conf') AS t`).then(
      (r) => r.rows[0].t as string,
      (e: Error) => `unreadable: ${e.message}`,
    );
    f.leakFiles = LEAK_FILES.filter((p) => existsSync(p));
    return f;
  } finally {
    await su.end();
  }
}

// ------------------------------------------------------------------ clients

interface Live {
  client: pg.Client;
  dead: boolean;
}

function pgConfig(): pg.ClientConfig {
  return {
    host: '127.0.0.1',
    port: listenPort,
    user: 'corpus',
    database: 'app',
    password: token,
    connectionTimeoutMillis: 10_000,
  };
}

async function openClient(): Promise<Live> {
  const live: Live = { client: new pg.Client(pgConfig()), dead: false };
  live.client.on('error', () => {
    live.dead = true;
  });
  live.client.on('end', () => {
    live.dead = true;
  });
  await live.client.connect();
  return live;
}

async function closeClient(live: Live | undefined): Promise<void> {
  if (!live) return;
  live.dead = true;
  const c = live.client as unknown as { connection?: { stream?: { destroy(): void } } };
  await Promise.race([live.client.end().catch(() => {}), new Promise((r) => setTimeout(r, 2_000))]);
  c.connection?.stream?.destroy();
}

type Outcome =
  | { ok: true; results: pg.QueryResult[] }
  | {
      ok: false;
      code: string | undefined;
      severity: string | undefined;
      message: string;
      detail?: string;
      timedOut?: boolean;
    };

async function run(live: Live, q: string | pg.QueryConfig): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Outcome>((resolve) => {
    timer = setTimeout(
      () =>
        resolve({
          ok: false,
          code: undefined,
          severity: undefined,
          message: `no answer within ${QUERY_TIMEOUT_MS} ms`,
          timedOut: true,
        }),
      QUERY_TIMEOUT_MS,
    );
  });
  const attempt = (live.client.query(q as string) as Promise<pg.QueryResult | pg.QueryResult[]>).then(
    (r): Outcome => ({ ok: true, results: Array.isArray(r) ? r : [r] }),
    (e: { code?: string; severity?: string; message?: string; detail?: string }): Outcome => ({
      ok: false,
      code: e.code,
      severity: e.severity,
      message: String(e.message ?? e),
      detail: e.detail,
    }),
  );
  const out = await Promise.race([attempt, timeout]);
  clearTimeout(timer);
  if (!out.ok && out.timedOut) live.dead = true;
  return out;
}

/** The extended-protocol form of an entry: Parse (with any parameter type OIDs), Bind (its params or none), Execute. */
function extendedQuery(e: Entry): pg.QueryConfig {
  const q: Record<string, unknown> = { text: e.sql, values: e.params ?? [], queryMode: 'extended' };
  // pg sends \`types\` as the Parse message's parameter OIDs and also asks it for result parsers.
  if (e.paramTypes) q.types = Object.assign([...e.paramTypes], { getTypeParser: pg.types.getTypeParser });
  return q as unknown as pg.QueryConfig;
}

function describeOutcome(o: Outcome): string {
  if (o.ok) return `SUCCESS: ${o.results.map((r) => `${r.command ?? '?'} (${r.rows?.length ?? 0} rows)`).join('; ')}`;
  return `${o.code ?? 'no SQLSTATE'} ${o.severity ?? ''} ${o.message}${o.detail ? ` [${o.detail}]` : ''}`.replace(
    /\s+/g,
    ' ',
  );
}

/** `SELECT 1` still works on this session. */
async function sessionWorks(live: Live): Promise<string | undefined> {
  if (live.dead) return 'the session was ended';
  const o = await run(live, 'SELECT 1 AS one');
  if (!o.ok) return `SELECT 1 failed: ${describeOutcome(o)}`;
  if (o.results[0]?.rows[0]?.one !== 1) return 'SELECT 1 returned something else';
  return undefined;
}

// ------------------------------------------------------------------ lifecycle

beforeAll(async () => {
  const info = inject('pg');
  before = await fingerprint();
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-corpus-'));
  mkdirSync(path.join(dir, 'secrets'));
  writeFileSync(path.join(dir, 'secrets', 'upstream-password'), `${info.upstreamPassword}\n`, { mode: 0o600 });
  // Hex keeps the 64-byte secret free of a trailing newline byte (which the loader would strip).
  writeFileSync(path.join(dir, 'secrets', 'jwt-secret'), randomBytes(32).toString('hex'), { mode: 0o600 });
  writeFileSync(path.join(dir, 'policy.yaml'), POLICY_YAML);
  listenPort = await freePort();
  let metricsPort = await freePort();
  while (metricsPort === listenPort) metricsPort = await freePort();
  configFile = path.join(dir, 'pgwarden.yaml');
  auditFile = path.join(dir, 'audit.jsonl');
  writeFileSync(configFile, configYaml(info.host, info.port, listenPort, metricsPort));

  const proc = spawn(process.execPath, [CLI, 'serve', '--config', configFile], {
    cwd: ROOT,
    env: cliEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = proc;
  const keep = (b: Buffer) => {
    childOutput = (childOutput + b.toString()).slice(-64 * 1024);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  childExit = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  await waitForPort(listenPort, START_TIMEOUT_MS);
  token = await mint();
}, 60_000);

afterAll(async () => {
  await closeClient(bypassClient);
  await closeClient(legitClient);
  await copyClient?.end({ timeout: 2 }).catch(() => {});
  if (failures.length > 0) {
    const report = failures
      .map((f) => `${f.file}:${f.line} [${f.family}] ${f.protocol}: ${oneLine(f.sql, 200)}\n    -> ${f.outcome}`)
      .join('\n');
    console.log(`corpus: ${failures.length} failing case(s)\n${report}`);
    if (process.env.PGWARDEN_CORPUS_REPORT)
      writeFileSync(process.env.PGWARDEN_CORPUS_REPORT, JSON.stringify(failures, null, 2));
  }
  try {
    if (child && child.pid !== undefined && child.exitCode === null) {
      child.kill('SIGTERM');
      const res = await Promise.race([
        childExit,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000)),
      ]);
      if (res === undefined) {
        child.kill('SIGKILL');
        await childExit;
        throw new Error(`pgwarden serve did not exit within 15 s of SIGTERM:\n${childOutput}`);
      }
      expect(res, `pgwarden serve output:\n${childOutput}`).toEqual({ code: 0, signal: null });
    }
    // After a clean exit everything the proxy meant to write is in the file.
    if (token && existsSync(auditFile)) expect(readFileSync(auditFile, 'utf8').includes(token)).toBe(false);
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
}, 30_000);

// ------------------------------------------------------------------ bypass corpus

interface Failure {
  file: string;
  line: number;
  family: string;
  protocol: string;
  sql: string;
  outcome: string;
}
const failures: Failure[] = [];
/** Refusals the client saw, by protocol: each must have its deny event in the audit trail. */
const refused = { simple: 0, extended: 0 };

let bypassClient: Live | undefined;
async function bypassSession(): Promise<Live> {
  if (!bypassClient || bypassClient.dead) {
    await closeClient(bypassClient);
    bypassClient = await openClient();
  }
  return bypassClient;
}

interface BypassCase {
  name: string;
  entry: Entry;
  protocol: 'simple' | 'extended';
}

function bypassCases(entries: Entry[]): BypassCase[] {
  const cases: BypassCase[] = [];
  for (const e of entries) {
    const label = `#${String(e.n).padStart(3, '0')} ${oneLine(e.sql)}`;
    if (e.params) {
      // The simple protocol cannot carry parameters.
      const types = e.paramTypes ? ` types ${JSON.stringify(e.paramTypes)}` : '';
      cases.push({
        name: `${label} [extended${types} params ${JSON.stringify(e.params)}]`,
        entry: e,
        protocol: 'extended',
      });
      continue;
    }
    cases.push({ name: `${label} [simple]`, entry: e, protocol: 'simple' });
    // The extended protocol carries one statement per Parse: multi-statement entries are simple-only.
    if (e.statements === undefined || e.statements === 1)
      cases.push({ name: `${label} [extended]`, entry: e, protocol: 'extended' });
  }
  return cases;
}

describe(`bypass corpus: ${BYPASS.length} entries in ${byFamily(BYPASS).length} families, each refused by pgwarden (42501/0A000)`, () => {
  for (const [family, entries] of byFamily(BYPASS)) {
    describe(`${family} (${entries.length} entries)`, () => {
      it.each(bypassCases(entries).map((c) => [c.name, c] as const))('%s', async (_name, { entry, protocol }) => {
        const live = await bypassSession();
        const outcome = await run(live, protocol === 'simple' ? entry.sql : extendedQuery(entry));
        const problems: string[] = [];
        if (outcome.ok) {
          problems.push('reached Postgres and succeeded');
        } else {
          if (!REFUSAL_CODES.includes(outcome.code ?? ''))
            problems.push(`SQLSTATE ${outcome.code ?? 'none'} is not a pgwarden refusal`);
          else if (!FROM_PGWARDEN.test(outcome.message)) problems.push('the refusal came from Postgres, not pgwarden');
          else refused[protocol]++;
        }
        const broken = await sessionWorks(live);
        if (broken) problems.push(`session unusable afterwards: ${broken}`);
        // A leak may have changed session state (role, transaction, prepared names): start the next case clean.
        if (problems.length > 0) {
          await closeClient(live);
          failures.push({
            file: 'bypass.sql',
            line: entry.line,
            family,
            protocol,
            sql: entry.sql,
            outcome: `${describeOutcome(outcome)}${broken ? ` | ${broken}` : ''}`,
          });
        }
        expect(problems, `bypass.sql:${entry.line} ${protocol}: ${describeOutcome(outcome)}`).toEqual([]);
      });
    });
  }
});

// ------------------------------------------------------------------ legitimate traffic

let legitClient: Live | undefined;
async function legitSession(): Promise<Live> {
  if (!legitClient || legitClient.dead) {
    await closeClient(legitClient);
    legitClient = await openClient();
  }
  return legitClient;
}

let copyClient: postgres.Sql | undefined;
async function copyOut(sql: string): Promise<Buffer> {
  copyClient ??= postgres({
    host: '127.0.0.1',
    port: listenPort,
    user: 'corpus',
    database: 'app',
    pass: token,
    max: 1,
    onnotice: () => {},
    connect_timeout: 10,
    fetch_types: false,
  });
  const stream = await copyClient.unsafe(sql).readable();
  const chunks: Buffer[] = [];
  const read = (async () => {
    for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  })();
  await Promise.race([
    read,
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`COPY did not finish within ${QUERY_TIMEOUT_MS} ms`)), QUERY_TIMEOUT_MS),
    ),
  ]);
  return Buffer.concat(chunks);
}

describe(`legitimate corpus: ${LEGIT.length} analyst queries pass and return rows (at most ${MAX_ROWS} per statement)`, () => {
  for (const [family, entries] of byFamily(LEGIT)) {
    describe(`${family} (${entries.length} entries)`, () => {
      const cases = entries.map((e) => ({ name: `#${String(e.n).padStart(3, '0')} ${oneLine(e.sql)}`, entry: e }));
      it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, { entry }) => {
        if (/^COPY\b/i.test(entry.sql)) {
          // COPY … TO STDOUT through postgres.js (pg has no COPY-out stream without pg-copy-streams).
          let data: Buffer | undefined;
          let error = '';
          try {
            data = await copyOut(entry.sql);
          } catch (e) {
            const err = e as { code?: string; message?: string };
            error = `${err.code ?? ''} ${err.message ?? String(e)}`;
            await copyClient?.end({ timeout: 2 }).catch(() => {});
            copyClient = undefined;
          }
          if (error || !data || data.length === 0) {
            failures.push({
              file: 'legit.sql',
              line: entry.line,
              family,
              protocol: 'copy',
              sql: entry.sql,
              outcome: error || 'no COPY data',
            });
          }
          const lines = data ? data.toString('utf8').split('\n').filter(Boolean).length : 0;
          const rows = lines - (/\bHEADER\b/i.test(entry.sql) ? 1 : 0);
          if (!error && rows > MAX_ROWS) {
            failures.push({
              file: 'legit.sql',
              line: entry.line,
              family,
              protocol: 'copy',
              sql: entry.sql,
              outcome: `${rows} COPY rows, over maxRows ${MAX_ROWS}`,
            });
          }
          expect(error, `legit.sql:${entry.line}`).toBe('');
          expect(data?.length ?? 0).toBeGreaterThan(0);
          expect(rows, `legit.sql:${entry.line}: COPY rows`).toBeLessThanOrEqual(MAX_ROWS);
          return;
        }
        const live = await legitSession();
        const outcome = await run(live, entry.params ? extendedQuery(entry) : entry.sql);
        const problems: string[] = [];
        if (!outcome.ok) problems.push(describeOutcome(outcome));
        else {
          for (const r of outcome.results) {
            if ((r.fields?.length ?? 0) > 0 && (r.rows?.length ?? 0) === 0)
              problems.push(`${r.command} returned no rows`);
            if ((r.rows?.length ?? 0) > MAX_ROWS)
              problems.push(`${r.command} returned ${r.rows.length} rows, over maxRows ${MAX_ROWS}`);
          }
        }
        if (problems.length > 0) {
          // Leave no failed transaction behind for the next entry.
          await closeClient(live);
          failures.push({
            file: 'legit.sql',
            line: entry.line,
            family,
            protocol: 'simple',
            sql: entry.sql,
            outcome: problems.join('; '),
          });
        }
        expect(problems, `legit.sql:${entry.line}`).toEqual([]);
      });
    });
  }

  it('the session identity and limits survive the corpus (RESET ALL, DISCARD ALL included)', async () => {
    const live = await legitSession();
    const o = await run(
      live,
      `SELECT current_setting('pgwarden.sub') AS sub, current_setting('pgwarden.role') AS role,
              current_setting('default_transaction_read_only') AS ro, current_setting('statement_timeout') AS st`,
    );
    expect(o.ok, describeOutcome(o)).toBe(true);
    if (o.ok) expect(o.results[0]?.rows[0]).toEqual({ sub: 'corpus', role: 'analyst', ro: 'on', st: '5s' });
  });
});

// ------------------------------------------------------------------ afterwards

describe('after the corpus', () => {
  it('the database is unchanged (canary, secrets, orders, customers, schema, roles, settings, large objects, files)', async () => {
    expect(before).toBeDefined();
    expect(await fingerprint()).toEqual(before);
  });

  it('the audit trail never holds the token and records at least one deny per bypass entry', async () => {
    const deadline = Date.now() + 5_000;
    let lines: string[] = [];
    let denies = 0;
    let byMode: Record<string, number> = {};
    // The audit sink writes asynchronously: wait (bounded) for the last events to land.
    for (;;) {
      lines = existsSync(auditFile) ? readFileSync(auditFile, 'utf8').split('\n').filter(Boolean) : [];
      byMode = {};
      for (const l of lines) {
        try {
          const ev = JSON.parse(l) as { event?: string; decision?: string; mode?: string };
          if (ev.event === 'statement' && ev.decision === 'deny')
            byMode[ev.mode ?? '?'] = (byMode[ev.mode ?? '?'] ?? 0) + 1;
        } catch {
          // not JSON: counted by nothing
        }
      }
      denies = Object.values(byMode).reduce((a, b) => a + b, 0);
      if (
        (denies >= BYPASS.length &&
          (byMode.simple ?? 0) >= refused.simple &&
          (byMode.parse ?? 0) >= refused.extended) ||
        Date.now() > deadline
      )
        break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const all = lines.join('\n');
    const signature = token.split('.')[2] ?? token;
    expect(all.includes(token)).toBe(false);
    expect(all.includes(signature)).toBe(false);
    expect(denies).toBeGreaterThanOrEqual(BYPASS.length);
    // Every refusal a client saw is on record, in the protocol it came through (Parse for the extended cases).
    expect(byMode.simple ?? 0).toBeGreaterThanOrEqual(refused.simple);
    expect(byMode.parse ?? 0).toBeGreaterThanOrEqual(refused.extended);
    expect(refused.extended).toBeGreaterThan(0);
  });
});
