// The server's analysis on the session's own connection (issue 13): temporary tables and the session's open transaction, through a real pgwarden and Postgres, and the red team's disagreements (a temporary name gone, the permanent one read) refused.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectAs, pgError, startTestProxy, withSuperClient as su, type TestProxy } from '../helpers/proxy.ts';

/** A permanent relation the role may not read, whose value must never reach the client. */
const SECRET = 'sa_secret_canary_7f3a';

const POLICY = `roles:
  tmp:
    readOnly: false
    relations: [public.orders, public.canary, sa_scratch.*]
    write: { statements: [insert, update, delete, truncate], relations: [public.canary, sa_scratch.*] }
    ddl:
      kinds: [create_table, create_index, create_sequence, alter_table, drop]
      schemas: [sa_scratch]
      temporary: true
    lock: true
`;

let tp: TestProxy;
const clients: pg.Client[] = [];
async function as(role = 'tmp'): Promise<pg.Client> {
  const c = await connectAs(tp, role);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  await su((c) =>
    c.query(`
    DROP TABLE IF EXISTS public.secrets;
    CREATE TABLE public.secrets (id int, v text);
    INSERT INTO public.secrets VALUES (1, '${SECRET}');
    GRANT SELECT, INSERT, UPDATE, DELETE ON public.secrets TO pgwarden;
    DROP SCHEMA IF EXISTS sa_scratch CASCADE;
    CREATE SCHEMA sa_scratch;
    GRANT USAGE, CREATE ON SCHEMA sa_scratch TO pgwarden;
  `),
  );
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await su((c) => c.query('DROP TABLE IF EXISTS public.secrets; DROP SCHEMA IF EXISTS sa_scratch CASCADE'));
});

describe('temporary tables', () => {
  it('are created, written, read, updated, deleted and dropped', async () => {
    const c = await as();
    await c.query('CREATE TEMP TABLE t1 (id int PRIMARY KEY, note text)');
    await c.query("INSERT INTO t1 VALUES (1, 'a'), (2, 'b')");
    await c.query('INSERT INTO t1 VALUES ($1, $2)', [3, 'c']);
    expect((await c.query('SELECT id, note FROM t1 ORDER BY id')).rows).toEqual([
      { id: 1, note: 'a' },
      { id: 2, note: 'b' },
      { id: 3, note: 'c' },
    ]);
    await c.query("UPDATE t1 SET note = 'B' WHERE id = $1", [2]);
    await c.query('DELETE FROM t1 WHERE id = 1');
    expect((await c.query('SELECT note FROM pg_temp.t1 ORDER BY id')).rows).toEqual([{ note: 'B' }, { note: 'c' }]);
    await c.query('DROP TABLE pg_temp.t1');
    expect((await pgError(() => c.query('SELECT * FROM pg_temp.t1'))).code).toBe('42P01');
  });

  it('a temporary table shadowing a denied permanent name is read, never the permanent one', async () => {
    const c = await as();
    expect((await pgError(() => c.query('SELECT * FROM secrets'))).code).toBe('42501');
    await c.query('CREATE TEMP TABLE secrets (id int, v text)');
    await c.query("INSERT INTO secrets VALUES (9, 'mine')");
    expect((await c.query('SELECT * FROM secrets')).rows).toEqual([{ id: 9, v: 'mine' }]);
    await c.query('DROP TABLE pg_temp.secrets');
    const err = await pgError(() => c.query('SELECT * FROM secrets'));
    expect(err.code).toBe('42501');
    expect(JSON.stringify(err)).not.toContain(SECRET);
  });
});

describe("the session's open transaction", () => {
  it('TRUNCATE then SELECT in one transaction', async () => {
    const c = await as();
    await c.query('CREATE TABLE sa_scratch.tr (a int)');
    await c.query('INSERT INTO sa_scratch.tr VALUES (1)');
    await c.query('BEGIN');
    await c.query('TRUNCATE sa_scratch.tr');
    expect((await c.query('SELECT count(*)::int AS n FROM sa_scratch.tr')).rows).toEqual([{ n: 0 }]);
    await c.query('INSERT INTO sa_scratch.tr VALUES (2)');
    await c.query('COMMIT');
    expect((await c.query('SELECT a FROM sa_scratch.tr')).rows).toEqual([{ a: 2 }]);
  });

  it('CREATE TABLE then INSERT in one transaction', async () => {
    const c = await as();
    await c.query('BEGIN');
    await c.query('CREATE TABLE sa_scratch.fresh (a int)');
    await c.query('INSERT INTO sa_scratch.fresh VALUES (1)');
    expect((await c.query('SELECT a FROM sa_scratch.fresh')).rows).toEqual([{ a: 1 }]);
    await c.query('ROLLBACK');
    expect((await pgError(() => c.query('SELECT a FROM sa_scratch.fresh'))).code).toBe('42P01');
  });
});
