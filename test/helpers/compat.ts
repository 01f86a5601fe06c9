// The compatibility suite's two targets: PostgreSQL directly (pgwarden's own upstream login) and pgwarden with a permissive role on a schema of its own.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile, spawnSync } from 'node:child_process';
import type pg from 'pg';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { startTestProxy, superClient, testPg, type TestProxy } from './proxy.ts';

/** Where a driver connects: the same database, either straight to Postgres or through pgwarden. */
export interface CompatTarget {
  name: 'direct' | 'proxied' | 'proxied_tls';
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
  /** The suite's schema: every name the checks use is qualified with it, so search_path cannot differ. */
  schema: string;
}

export interface CompatEnv {
  schema: string;
  proxy: TestProxy;
  direct: CompatTarget;
  proxied: CompatTarget;
  /** pgwarden again, the driver asked to connect with TLS (sslmode=require); only when startCompat was given tls. */
  proxied_tls: CompatTarget | undefined;
  /** Both targets, in the order describe.each runs them. */
  targets: CompatTarget[];
  close(): Promise<void>;
}

/**
 * The role the issue measured with (issue 13): read-write, every write kind on the suite's schema, catalog
 * introspection, the schema's functions callable; plus what item 2's keys allow a real application role: DDL in
 * the suite's schema and temporary objects, ANALYZE/VACUUM, LOCK, every notification channel and two-phase commit
 * (psycopg's tpc_* and postgres.js's sql.prepare). `do` stays off
 * (a full escape from the policy, which no driver needs). A statement timeout, as a production role has, is what
 * lets it call pg_sleep (docs/functions.md, sleeps); every driver check that sets statement_timeout sets it lower.
 */
export function compatPolicy(schema: string): string {
  return `roles:
  compat:
    readOnly: false
    relations: [public.*, ${schema}.*]
    write:
      statements: [insert, update, delete, merge, truncate, copy_from]
      relations: [${schema}.*]
    functions: { allow: [${schema}.add_one, ${schema}.add_out] }
    catalog: introspection
    statementTimeout: 60s
    ddl:
      kinds: [create_table, create_index, create_sequence, alter_table, drop, comment, create_type, alter_type]
      schemas: [${schema}]
      temporary: true
    maintenance: [analyze, vacuum]
    lock: true
    channels: { listen: ['*'], notify: ['*'] }
    twoPhase: true
`;
}

/** Fixture tables every driver's checks use, created by the superuser and granted (not owned) to the upstream login. */
function schemaSql(schema: string): string {
  const u = SAMPLE_UPSTREAM_USER;
  return `
DROP SCHEMA IF EXISTS ${schema} CASCADE;
CREATE SCHEMA ${schema};
CREATE TABLE ${schema}.items (
  id serial PRIMARY KEY, name text NOT NULL, qty int, price numeric(12,2), tags text[], meta jsonb, at timestamptz
);
CREATE TABLE ${schema}.kv (k text PRIMARY KEY, v text);
CREATE TABLE ${schema}.copy_t (id int NOT NULL, t text, b bytea);
CREATE TABLE ${schema}.wide (id int PRIMARY KEY, body text);
INSERT INTO ${schema}.kv SELECT 'k' || g, 'v' || g FROM generate_series(1, 100) g;
CREATE FUNCTION ${schema}.add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT i + 1';
CREATE FUNCTION ${schema}.add_out(i int, OUT j int, OUT k text) LANGUAGE sql IMMUTABLE AS 'SELECT i + 1, ''x'' || i';
-- CREATE too: the DDL checks make and drop their own objects here (owned by the upstream login, as pgwarden's docs ask).
GRANT USAGE, CREATE ON SCHEMA ${schema} TO ${u};
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA ${schema} TO ${u};
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA ${schema} TO ${u};
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA ${schema} TO ${u};
`;
}

/**
 * Creates the schema `compat_<name>` (one per test file: files run in parallel) and starts pgwarden with the
 * permissive role. maxMessageSize is raised to 8MB, as a deployment whose clients bind 1 MiB values would set it
 * (the default 1MB would refuse such a Bind with 08P01 before it reaches the policy).
 */
export async function startCompat(name: string, opts: { tls?: boolean } = {}): Promise<CompatEnv> {
  const schema = `compat_${name}`;
  const su = await superClient();
  try {
    await rollbackLeftoverPrepared(su, schema);
    await su.query(schemaSql(schema));
  } finally {
    await su.end();
  }
  const certs = opts.tls ? selfSignedPair() : undefined;
  const proxy = await startTestProxy({
    policy: compatPolicy(schema),
    limits: { maxMessageSize: 8 * 1024 * 1024 },
    listen: certs ? { tls: { certFile: certs.certFile, keyFile: certs.keyFile } } : {},
  });
  const info = testPg();
  const direct: CompatTarget = {
    name: 'direct',
    host: info.host,
    port: info.port,
    user: SAMPLE_UPSTREAM_USER,
    password: info.upstreamPassword,
    database: SAMPLE_DATABASE,
    schema,
  };
  // A token long enough for the slowest driver run (the JVM compiles and starts within it).
  const token = await proxy.token({ role: 'compat', sub: 'compat' }, 10 * 60_000);
  const proxied: CompatTarget = {
    name: 'proxied',
    host: '127.0.0.1',
    port: proxy.proxy.port,
    user: 'compat',
    password: token,
    database: SAMPLE_DATABASE,
    schema,
  };
  return {
    schema,
    proxy,
    direct,
    proxied,
    proxied_tls: certs ? { ...proxied, name: 'proxied_tls' } : undefined,
    targets: [direct, proxied],
    async close() {
      await proxy.close();
      certs?.remove();
      const c = await superClient();
      try {
        await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await c.end();
      }
    },
  };
}

/** A self-signed certificate for localhost/127.0.0.1 and its key, made by openssl in a temporary directory. */
function selfSignedPair(): { certFile: string; keyFile: string; remove(): void } {
  const { dir, remove } = tempDir('pgwarden-compat-tls-');
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  const r = spawnSync('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '1',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ]);
  if (r.status !== 0) {
    remove();
    throw new Error(`openssl could not make a test certificate: ${String(r.stderr)}`);
  }
  return { certFile, keyFile, remove };
}

/** Empties the schema's tables between the direct and the proxied run, so each starts from the same rows. */
/**
 * Two-phase checks name their transactions tp-<schema>-…: one a failed check left prepared would hold its locks on the
 * fixture tables forever (past the session), and TRUNCATE or DROP SCHEMA would wait on it.
 */
async function rollbackLeftoverPrepared(c: pg.Client, schema: string): Promise<void> {
  const left = await c.query<{ gid: string }>('SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, $1)', [
    `tp-${schema}-`,
  ]);
  for (const { gid } of left.rows) await c.query(`ROLLBACK PREPARED '${gid.replaceAll("'", "''")}'`);
}

export async function resetCompatTables(schema: string): Promise<void> {
  const c = await superClient();
  try {
    await rollbackLeftoverPrepared(c, schema);
    await c.query(`TRUNCATE ${schema}.items, ${schema}.copy_t, ${schema}.wide RESTART IDENTITY`);
  } finally {
    await c.end();
  }
}

/** One check's outcome as an out-of-process driver program (Python, Java) reports it. */
export interface CheckResult {
  name: string;
  ok: boolean;
  /** What went wrong: the driver's exception class, SQLSTATE and message. */
  error?: string;
}

/** What a driver program reported: its checks by name, and how it ended (for checks it never reported). */
export interface CheckRun {
  results: Map<string, CheckResult>;
  /** Exit status, timeout or spawn error, and the tail of stderr; empty when it exited 0. */
  ending: string;
}

/**
 * Runs a driver program that prints one JSON line per check ({name, ok, error}) and returns them by name.
 * execFile kills the child (by its pid) on timeout, so a hung driver is stopped and its unfinished checks fail.
 */
export function runCheckProgram(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  timeoutMs: number,
): Promise<CheckRun> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const results = new Map<string, CheckResult>();
        for (const line of stdout.split('\n')) {
          if (!line.startsWith('{')) continue;
          const r = JSON.parse(line) as CheckResult;
          results.set(r.name, r);
        }
        const ending = err
          ? `${err.killed ? `killed after ${timeoutMs} ms` : err.message.split('\n')[0]}; stderr: ${stderr.slice(-1500)}`
          : '';
        resolve({ results, ending });
      },
    );
  });
}

/** The environment a driver program reads its target from. */
export function targetEnv(t: CompatTarget): Record<string, string> {
  return {
    COMPAT_HOST: t.host,
    COMPAT_PORT: String(t.port),
    COMPAT_USER: t.user,
    COMPAT_PASSWORD: t.password,
    COMPAT_DATABASE: t.database,
    COMPAT_SCHEMA: t.schema,
    COMPAT_TARGET: t.name,
    // The drivers' programs connect with TLS for this target only (psycopg_checks.py reads it).
    COMPAT_SSLMODE: t.name === 'proxied_tls' ? 'require' : 'disable',
  };
}

/** A temporary directory removed by the returned function (for javac's classes). */
export function tempDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Holds a row lock on kv 'k100' from a superuser session until the returned function is called, so a driver's
 * `UPDATE … WHERE k = 'k100'` waits without using CPU: what cancel and timeout checks interrupt (pg_sleep is
 * refused by pgwarden's built-in function policy whatever the role says, so it cannot be the waiting statement).
 */
export async function holdKvLock(schema: string): Promise<() => Promise<void>> {
  const c = await superClient();
  await c.query('BEGIN');
  await c.query(`SELECT * FROM ${schema}.kv WHERE k = 'k100' FOR UPDATE`);
  return async () => {
    await c.query('ROLLBACK').catch(() => {});
    await c.end();
  };
}

/** The statement that waits on holdKvLock's lock. */
export const blockedUpdate = (schema: string): string => `UPDATE ${schema}.kv SET v = v WHERE k = 'k100'`;

/** Resolves once some session waits on a lock in `schema` (the driver's blocked statement has reached the server). */
export async function waitForLockWait(schema: string, timeoutMs = 5_000): Promise<void> {
  const c = await superClient();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await c.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1`,
        [`%${schema}.kv%`],
      );
      if (r.rows[0].n > 0) return;
      if (Date.now() > deadline) throw new Error(`no statement waited on the lock in ${schema} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await c.end();
  }
}

/**
 * Resolves once a statement whose text contains `marker` is running on the server (a driver's pg_sleep has reached
 * it, so a cancel now interrupts the statement rather than arriving before it).
 */
export async function waitForActive(marker: string, timeoutMs = 5_000): Promise<void> {
  const c = await superClient();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await c.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()`,
        [`%${marker}%`],
      );
      if (r.rows[0].n > 0) return;
      if (Date.now() > deadline) throw new Error(`no statement with ${marker} ran within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await c.end();
  }
}
