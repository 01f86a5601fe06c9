// The server's analysis and relation locks: after a lock the session's own transaction took, its statements are analysed on its own connection and run; another session's lock is waited for, and past analysis.timeout refused as a lock wait (55P03, unavailable), never as the client's 57014.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  canaryCount,
  connectAs,
  pgError,
  startTestProxy,
  superClient,
  withSuperClient as su,
  type TestProxy,
} from '../helpers/proxy.ts';

/** The schema this file creates (tables owned by pgwarden's upstream user, so ALTER and TRUNCATE are the server's to allow) and drops. */
const S = 'alocks';
const TABLES = ['t_trunc', 't_alter', 't_lock', 't_index', 't_param', 't_queue', 't_other', 't_slow', 't_view_base'];
const ANALYSIS_TIMEOUT = 5_000;

const POLICY = `roles:
  migrator:
    readOnly: false
    relations: [${S}.*, public.canary]
    write: { statements: [insert, update, delete, truncate], relations: [${S}.*] }
    ddl: { kinds: [alter_table, create_index], schemas: [${S}] }
    lock: true
`;

async function rowsOf(table: string): Promise<number[]> {
  return su(async (c) => (await c.query(`SELECT a FROM ${S}.${table} ORDER BY a`)).rows.map((r) => r.a as number));
}

let tp: TestProxy;
let slow: TestProxy;
const clients: pg.Client[] = [];
async function as(proxy: TestProxy): Promise<pg.Client> {
  const c = await connectAs(proxy, 'migrator');
  clients.push(c);
  return c;
}

/** Another session of the same role (so the same analysis connections) gets a statement analysed and run. */
let probeNo = 0;
async function analysisHealthy(proxy: TestProxy): Promise<void> {
  const c = await as(proxy);
  // A text no earlier statement had: the verdict cache cannot answer it, so the analysis connection must.
  const col = `healthy_${++probeNo}`;
  const r = await c.query(`SELECT count(*)::int AS ${col} FROM ${S}.t_view_base WHERE a > ${probeNo} - ${probeNo}`);
  expect(r.rows[0][col]).toBeTypeOf('number');
  await c.end();
}

/** Runs `sql` on `c`, which must succeed well before analysis.timeout (a hang guard: the analysis must not wait for the session's own lock). */
async function runsAtOnce(c: pg.Client, sql: string, params?: unknown[]): Promise<pg.QueryResult> {
  const t0 = performance.now();
  const r = await c.query(sql, params);
  expect(performance.now() - t0).toBeLessThan(ANALYSIS_TIMEOUT - 1_000);
  return r;
}

beforeAll(async () => {
  await su((c) =>
    c.query(`
    DROP SCHEMA IF EXISTS ${S} CASCADE;
    CREATE SCHEMA ${S};
    GRANT USAGE, CREATE ON SCHEMA ${S} TO pgwarden;
    ${TABLES.map((t) => `CREATE TABLE ${S}.${t} (a int); INSERT INTO ${S}.${t} VALUES (10), (20); ALTER TABLE ${S}.${t} OWNER TO pgwarden;`).join('\n')}
    CREATE VIEW ${S}.v_over_base AS SELECT a FROM ${S}.t_view_base; ALTER VIEW ${S}.v_over_base OWNER TO pgwarden;
  `),
  );
  tp = await startTestProxy({
    policy: POLICY,
    config: {
      analysis: { cacheTtl: 60_000, timeout: ANALYSIS_TIMEOUT, maxContexts: 8, ddlChannel: 'pgwarden_ddl_alocks' },
    },
  });
  slow = await startTestProxy({
    policy: POLICY,
    config: { analysis: { cacheTtl: 60_000, timeout: 1_500, maxContexts: 8, ddlChannel: 'pgwarden_ddl_alocks2' } },
  });
}, 30_000);
afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await slow?.close();
  await su((c) => c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`));
});

describe("a lock the session's own transaction holds", () => {
  it("TRUNCATE then INSERT: analysed on the session's own connection and run; ROLLBACK undoes both", async () => {
    const canary = await canaryCount();
    const c = await as(tp);
    await c.query('BEGIN');
    await c.query(`TRUNCATE ${S}.t_trunc`);
    await runsAtOnce(c, `INSERT INTO ${S}.t_trunc VALUES (1)`);
    expect((await runsAtOnce(c, `SELECT a FROM ${S}.t_trunc`)).rows).toEqual([{ a: 1 }]);
    await c.query('ROLLBACK');
    expect(await rowsOf('t_trunc')).toEqual([10, 20]);
    // The session goes on: the same statement outside the transaction is analysed and runs.
    await c.query(`INSERT INTO ${S}.t_trunc VALUES (1)`);
    expect(await rowsOf('t_trunc')).toEqual([1, 10, 20]);
    expect(await canaryCount()).toBe(canary);
    await analysisHealthy(tp);
  });

  it('ALTER TABLE then SELECT of the new column, and the same through the extended protocol after TRUNCATE', async () => {
    const c = await as(tp);
    await c.query('BEGIN');
    await c.query(`ALTER TABLE ${S}.t_alter ADD COLUMN b int`);
    expect((await runsAtOnce(c, `SELECT a, b FROM ${S}.t_alter ORDER BY a`)).rows).toEqual([
      { a: 10, b: null },
      { a: 20, b: null },
    ]);
    await c.query('ROLLBACK');
    expect(
      await su(
        async (s) =>
          (
            await s.query(
              `SELECT count(*)::int AS n FROM information_schema.columns WHERE table_schema = $1 AND table_name = 't_alter'`,
              [S],
            )
          ).rows[0].n,
      ),
    ).toBe(1);
    // Outside the transaction the column is gone again, as PostgreSQL says.
    expect((await pgError(() => c.query(`SELECT b FROM ${S}.t_alter`))).code).toBe('42703');

    await c.query('BEGIN');
    await c.query(`TRUNCATE ${S}.t_param`);
    await runsAtOnce(c, `INSERT INTO ${S}.t_param VALUES ($1)`, [5]);
    await c.query('ROLLBACK');
    expect(await rowsOf('t_param')).toEqual([10, 20]);
    await analysisHealthy(tp);
  });

  it('LOCK ... IN ACCESS EXCLUSIVE MODE, CREATE INDEX (SHARE) then a write, and a view over the locked table', async () => {
    const c = await as(tp);
    await c.query('BEGIN');
    await c.query(`LOCK TABLE ${S}.t_lock IN ACCESS EXCLUSIVE MODE`);
    await runsAtOnce(c, `UPDATE ${S}.t_lock SET a = a + 1`);
    await c.query('ROLLBACK');
    expect(await rowsOf('t_lock')).toEqual([10, 20]);

    await c.query('BEGIN');
    await c.query(`CREATE INDEX t_index_a ON ${S}.t_index (a)`);
    await runsAtOnce(c, `DELETE FROM ${S}.t_index WHERE a = 10`);
    await c.query('ROLLBACK');
    expect(await rowsOf('t_index')).toEqual([10, 20]);

    // The statement names the view, the lock is on its base table.
    await c.query('BEGIN');
    await c.query(`LOCK TABLE ${S}.t_view_base IN ACCESS EXCLUSIVE MODE`);
    expect((await runsAtOnce(c, `SELECT a FROM ${S}.v_over_base ORDER BY a`)).rows).toEqual([{ a: 10 }, { a: 20 }]);
    await c.query('ROLLBACK');
    await analysisHealthy(tp);
  });

  it("another transaction queued behind the session's own lock does not block the session", async () => {
    const c = await as(tp);
    await c.query('BEGIN');
    await c.query(`TRUNCATE ${S}.t_queue`);
    const other = await superClient();
    try {
      await other.query('BEGIN');
      // Queued behind the session's ACCESS EXCLUSIVE: an analysis on another connection would queue behind it.
      const queued = other.query(`LOCK TABLE ${S}.t_queue IN ACCESS EXCLUSIVE MODE`);
      await su(async (s) => {
        for (let i = 0; i < 100; i++) {
          const r = await s.query(
            `SELECT 1 FROM pg_catalog.pg_locks WHERE relation = '${S}.t_queue'::regclass AND NOT granted`,
          );
          if (r.rowCount === 1) return;
          await new Promise((res) => setTimeout(res, 20));
        }
        throw new Error('the other transaction never queued');
      });
      await runsAtOnce(c, `INSERT INTO ${S}.t_queue VALUES (3)`);
      await c.query('ROLLBACK');
      await queued;
      await other.query('COMMIT');
    } finally {
      await other.end();
    }
    expect(await rowsOf('t_queue')).toEqual([10, 20]);
    await analysisHealthy(tp);
  });
});

describe("another session's lock", () => {
  it('is waited for: the statement runs once the other transaction commits', async () => {
    const holder = await superClient();
    try {
      await holder.query('BEGIN');
      await holder.query(`LOCK TABLE ${S}.t_other IN ACCESS EXCLUSIVE MODE`);
      const c = await as(tp);
      let settled = false;
      const insert = c.query(`INSERT INTO ${S}.t_other VALUES (7)`).finally(() => {
        settled = true;
      });
      // Past the short first wait: pgwarden saw the lock is another session's and keeps waiting, as PostgreSQL would.
      await new Promise((r) => setTimeout(r, 1_000));
      expect(settled).toBe(false);
      await holder.query('COMMIT');
      await insert;
      expect(await rowsOf('t_other')).toEqual([7, 10, 20]);
    } finally {
      await holder.end();
    }
    await analysisHealthy(tp);
  });

  it("held past analysis.timeout: refused as a lock wait (55P03, unavailable), not as the client's 57014", async () => {
    const holder = await superClient();
    try {
      await holder.query('BEGIN');
      await holder.query(`LOCK TABLE ${S}.t_slow IN ACCESS EXCLUSIVE MODE`);
      const c = await as(slow);
      await c.query('BEGIN');
      const e = await pgError(() => c.query(`SELECT a FROM ${S}.t_slow`));
      expect(e.code, e.message).toBe('55P03');
      expect(e.message).toMatch(
        /^statement refused by pgwarden: relation "t_slow" is locked by another transaction; PostgreSQL's analysis of it waited \d+ ms, so it was not run; hint: retry when the other transaction has ended \(reason=unavailable\)$/,
      );
      expect(e.detail?.split('\n')[0]).toBe('reason=unavailable');
      await c.query('ROLLBACK');
      await holder.query('COMMIT');
      // The same text, now that the lock is gone, is analysed again (a lock wait is never cached) and runs.
      expect((await c.query(`SELECT a FROM ${S}.t_slow`)).rows).toEqual([{ a: 10 }, { a: 20 }]);
    } finally {
      await holder.end();
    }
    await analysisHealthy(slow);
  }, 15_000);
});
