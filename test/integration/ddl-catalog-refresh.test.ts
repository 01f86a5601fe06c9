// After scoped DDL, pgwarden reads the catalog again (coalesced, rate-bounded) before refusing a statement the new objects may explain: a table made by CREATE TABLE is usable by its unqualified name in the next statement.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectAs, pgError, startTestProxy, withSuperClient as su, type TestProxy } from '../helpers/proxy.ts';

/** The schema the role may change and whose name its search_path holds; created and dropped by this file. */
const S = 'ddl_refresh';

const POLICY = `roles:
  app:
    readOnly: false
    relations: [${S}.*]
    write: { statements: [insert, update, delete], relations: [${S}.*] }
    ddl: { kinds: [create_table, alter_table, drop], schemas: [${S}] }
    searchPath: [${S}]
  reader:
    readOnly: true
    relations: [${S}.*]
    searchPath: [${S}]
`;

let tp: TestProxy;
const clients: pg.Client[] = [];
async function as(role: string): Promise<pg.Client> {
  const c = await connectAs(tp, role);
  clients.push(c);
  return c;
}

/** How many catalog refreshes pgwarden has logged so far. */
const refreshes = () => tp.logs.filter((l) => l.includes('"catalog refreshed"')).length;

/** Rows of a table in the test schema, as the superuser sees them. */
async function rows(table: string): Promise<unknown[]> {
  return su(async (c) => (await c.query(`SELECT * FROM ${S}.${table} ORDER BY 1`)).rows);
}

beforeAll(async () => {
  await su((c) =>
    c.query(`
    DROP SCHEMA IF EXISTS ${S} CASCADE;
    CREATE SCHEMA ${S};
    GRANT USAGE, CREATE ON SCHEMA ${S} TO pgwarden;
  `),
  );
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await su((c) => c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`));
});

describe('a table made by scoped DDL is known to the next statement', () => {
  it('CREATE TABLE, then INSERT and SELECT by the unqualified name', async () => {
    const c = await as('app');
    await c.query(`CREATE TABLE ${S}.made (id int PRIMARY KEY, v text)`);
    await c.query(`INSERT INTO made VALUES (1, 'one')`);
    expect((await c.query('SELECT id, v FROM made')).rows).toEqual([{ id: 1, v: 'one' }]);
    // Extended protocol too (node-postgres sends parameters with Parse/Bind).
    await c.query('INSERT INTO made VALUES ($1, $2)', [2, 'two']);
    expect(await rows('made')).toEqual([
      { id: 1, v: 'one' },
      { id: 2, v: 'two' },
    ]);
    // Another session of another role sees it too.
    const r = await as('reader');
    expect((await r.query('SELECT count(*)::int AS n FROM made')).rows).toEqual([{ n: 2 }]);
  });

  it('a column added by ALTER TABLE, and DDL inside a transaction once it commits', async () => {
    const c = await as('app');
    await c.query(`CREATE TABLE ${S}.tx_made (id int)`);
    await c.query('INSERT INTO tx_made VALUES (1)');
    await c.query(`ALTER TABLE ${S}.tx_made ADD COLUMN note text`);
    await c.query(`UPDATE tx_made SET note = 'added' WHERE id = 1`);
    await c.query('BEGIN');
    await c.query(`CREATE TABLE ${S}.in_tx (id int)`);
    await c.query('COMMIT');
    await c.query('INSERT INTO in_tx VALUES (7)');
    expect(await rows('tx_made')).toEqual([{ id: 1, note: 'added' }]);
    expect(await rows('in_tx')).toEqual([{ id: 7 }]);
  });

  it('a refresh changes no verdict on what the role may not touch', async () => {
    await su((c) =>
      c.query('CREATE TABLE public.refresh_canary (id int); INSERT INTO public.refresh_canary VALUES (1)'),
    );
    try {
      const c = await as('app');
      await c.query(`CREATE TABLE ${S}.another (id int)`);
      // Known after the refresh, and still outside the role's relations.
      expect((await pgError(() => c.query('DELETE FROM public.refresh_canary'))).code).toBe('42501');
      expect((await pgError(() => c.query('SELECT * FROM public.refresh_canary'))).code).toBe('42501');
      // A name that exists nowhere stays refused (42P01 inside the role's relations).
      expect((await pgError(() => c.query('SELECT * FROM never_made'))).code).toMatch(/^(42P01|42501)$/);
      expect(
        await su(async (s) => (await s.query('SELECT count(*)::int AS n FROM public.refresh_canary')).rows[0].n),
      ).toBe(1);
    } finally {
      await su((c) => c.query('DROP TABLE public.refresh_canary'));
    }
  });

  it('many sessions doing DDL share refreshes: fewer refreshes than statements that waited for one', async () => {
    const before = refreshes();
    const sessions = await Promise.all(Array.from({ length: 8 }, () => as('app')));
    await Promise.all(
      sessions.map(async (c, i) => {
        await c.query(`CREATE TABLE ${S}.par_${i} (id int)`);
        await c.query(`INSERT INTO par_${i} VALUES (${i})`);
        await c.query(`INSERT INTO par_${i} VALUES (${i + 100})`);
      }),
    );
    for (let i = 0; i < 8; i++) expect(await rows(`par_${i}`)).toEqual([{ id: i }, { id: i + 100 }]);
    const used = refreshes() - before;
    expect(used).toBeGreaterThan(0);
    expect(used).toBeLessThanOrEqual(8);
  });
});
