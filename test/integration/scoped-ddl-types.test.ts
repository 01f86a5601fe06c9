// Scoped DDL of types, domains and schemas, and 42P01 for an unknown table where the role may create one, through a real pgwarden and Postgres with pg and psql: what is allowed runs, the rest is refused and never reaches the database.
import { execFile, spawnSync } from 'node:child_process';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  canaryCount,
  connectAs,
  pgError,
  startTestProxy,
  withSuperClient as su,
  type TestProxy,
} from '../helpers/proxy.ts';

/** A schema the superuser makes and grants CREATE on; one the role makes itself; one it may not make. */
const S = 'ddl_types';
const M = 'ddl_made';
const OUT = 'ddl_elsewhere';

const POLICY = `roles:
  typer:
    readOnly: false
    relations: [public.orders, public.canary, ${S}.*, ${M}.*]
    write: { statements: [insert, delete], relations: [public.canary, ${S}.*, ${M}.*] }
    ddl:
      kinds: [create_table, drop, create_type, alter_type, create_schema]
      schemas: [${S}, ${M}]
  local:
    readOnly: false
    relations: [${S}.*]
    write: { statements: [insert], relations: [${S}.*] }
    ddl: { kinds: [create_table, drop], schemas: [${S}] }
    searchPath: [${S}]
  inmade:
    readOnly: false
    relations: [${M}.*]
    write: { statements: [insert], relations: [${M}.*] }
    ddl: { kinds: [create_table, drop, create_schema], schemas: [${M}] }
    searchPath: [${M}]
  tables:
    readOnly: false
    relations: [${S}.*]
    write: { statements: [insert], relations: [${S}.*] }
    ddl: { kinds: [create_table, alter_table, drop, comment], schemas: [${S}] }
`;

async function typeExists(schema: string, name: string): Promise<boolean> {
  return su(
    async (c) =>
      (
        await c.query(
          'SELECT 1 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typname = $2',
          [schema, name],
        )
      ).rowCount === 1,
  );
}

async function schemaExists(name: string): Promise<boolean> {
  return su(
    async (c) => (await c.query('SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1', [name])).rowCount === 1,
  );
}

let tp: TestProxy;
const clients: pg.Client[] = [];
async function as(role: string): Promise<pg.Client> {
  const c = await connectAs(tp, role);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  await su((c) =>
    c.query(`
    DROP SCHEMA IF EXISTS ${S} CASCADE;
    DROP SCHEMA IF EXISTS ${M} CASCADE;
    DROP SCHEMA IF EXISTS ${OUT} CASCADE;
    CREATE SCHEMA ${S};
    GRANT USAGE, CREATE ON SCHEMA ${S} TO pgwarden;
    -- CREATE SCHEMA needs CREATE on the database upstream: granted so that only pgwarden's policy stands in the way.
    GRANT CREATE ON DATABASE app TO pgwarden;
  `),
  );
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await su((c) =>
    c.query(
      `DROP SCHEMA IF EXISTS ${S} CASCADE; DROP SCHEMA IF EXISTS ${M} CASCADE; DROP SCHEMA IF EXISTS ${OUT} CASCADE; REVOKE CREATE ON DATABASE app FROM pgwarden`,
    ),
  );
});

describe('types in an allowed schema', () => {
  it('enums (quoted names too), composites, domains and ranges are made, used, altered and dropped', async () => {
    const c = await as('typer');
    await c.query(`CREATE TYPE ${S}.prepenum AS ENUM ('foo', 'bar', 'baz')`);
    await c.query(`create type ${S}."a-b" as enum ('a', 'b')`);
    await c.query(`create type ${S}."€" as enum ('€')`);
    await c.query(`CREATE TYPE ${S}.comp AS (a int, b text)`);
    await c.query(`CREATE DOMAIN ${S}.small AS int DEFAULT 1 NOT NULL CHECK (VALUE < 10)`);
    await c.query(`CREATE TYPE ${S}.irange AS RANGE (subtype = int4)`);
    await c.query(`CREATE TYPE ${S}.empty AS ()`);
    await c.query(`DROP TYPE ${S}.empty`);
    for (const n of ['prepenum', 'a-b', '€', 'comp', 'small', 'irange']) expect(await typeExists(S, n), n).toBe(true);
    // Used at once: pgwarden's snapshot learns them from a catalog read after the DDL.
    expect((await c.query(`SELECT 'bar'::${S}.prepenum AS e, ROW(1, 'x')::${S}.comp AS r`)).rows).toEqual([
      { e: 'bar', r: '(1,x)' },
    ]);
    await c.query(`CREATE TABLE ${S}.uses (e ${S}.prepenum, s ${S}.small, r ${S}.irange)`);
    await c.query(`INSERT INTO ${S}.uses (e, r) VALUES ('baz', '[1,5)')`);
    expect((await c.query(`SELECT e, s, r FROM ${S}.uses`)).rows).toEqual([{ e: 'baz', s: 1, r: '[1,5)' }]);
    // The domain's CHECK runs in PostgreSQL as it always does.
    expect((await pgError(() => c.query(`INSERT INTO ${S}.uses (s) VALUES (42)`))).code).toBe('23514');
    await c.query(`ALTER TYPE ${S}.prepenum ADD VALUE IF NOT EXISTS 'qux' AFTER 'baz'`);
    await c.query(`ALTER TYPE ${S}.prepenum RENAME VALUE 'foo' TO 'fu'`);
    await c.query(`ALTER TYPE ${S}."a-b" RENAME TO "c-d"`);
    expect(
      (
        await su((s) =>
          s.query(
            `SELECT pg_catalog.array_agg(enumlabel ORDER BY enumsortorder)::text AS v FROM pg_catalog.pg_enum WHERE enumtypid = '${S}.prepenum'::regtype`,
          ),
        )
      ).rows,
    ).toEqual([{ v: '{fu,bar,baz,qux}' }]);
    expect(await typeExists(S, 'c-d')).toBe(true);
    // Without CASCADE, PostgreSQL refuses to drop a type a column still uses.
    expect((await pgError(() => c.query(`DROP TYPE ${S}.prepenum`))).code).toBe('2BP01');
    await c.query(`DROP TABLE ${S}.uses`);
    await c.query(`DROP TYPE ${S}.prepenum, ${S}."c-d", ${S}."€", ${S}.comp, ${S}.irange`);
    await c.query(`DROP DOMAIN ${S}.small`);
    for (const n of ['prepenum', 'c-d', '€', 'comp', 'small', 'irange']) expect(await typeExists(S, n), n).toBe(false);
  });

  it('types elsewhere, what a definition may not use, and the kinds never allowed are refused and made nothing', async () => {
    const c = await as('typer');
    const tables = await as('tables');
    await su((s) => s.query(`CREATE TYPE ${S}.kept AS ENUM ('x')`));
    const refused: [pg.Client, string][] = [
      [c, "CREATE TYPE public.escaped AS ENUM ('a')"],
      // Unqualified: made in public, the first schema of the role's search_path.
      [c, "CREATE TYPE escaped AS ENUM ('a')"],
      [c, `CREATE TYPE "DDL_TYPES".escaped AS ENUM ('a')`],
      [c, `CREATE TYPE "${S}.escaped" AS ENUM ('a')`],
      [c, "CREATE TYPE pg_catalog.escaped AS ENUM ('a')"],
      [c, 'CREATE DOMAIN public.escaped AS int'],
      // A composite of a relation's row type reads that relation's shape: public.customers is not the role's.
      [c, `CREATE TYPE ${S}.escaped AS (a public.customers)`],
      [c, `CREATE DOMAIN ${S}.escaped AS int CHECK (VALUE > (SELECT count(*) FROM public.customers))`],
      [c, `CREATE DOMAIN ${S}.escaped AS int CHECK (pg_catalog.pg_sleep(1) IS NOT NULL)`],
      [c, `CREATE TYPE ${S}.escaped AS RANGE (subtype = float8, subtype_diff = float8mi)`],
      [c, `CREATE TYPE ${S}.escaped AS RANGE (subtype = ${S}.kept)`],
      [c, `CREATE TYPE ${S}.escaped (input = int4in, output = int4out)`],
      [c, `CREATE TYPE ${S}.escaped`],
      [c, `ALTER TYPE ${S}.kept OWNER TO analyst_ro`],
      [c, `ALTER TYPE ${S}.kept SET SCHEMA public`],
      [c, `DROP TYPE ${S}.kept CASCADE`],
      [c, 'DROP TYPE public.escaped'],
      // The kinds that existed before reach no type.
      [tables, `CREATE TYPE ${S}.escaped AS ENUM ('a')`],
      [tables, `DROP TYPE ${S}.kept`],
      [tables, `ALTER TYPE ${S}.kept ADD VALUE 'escaped'`],
    ];
    for (const [client, sql] of refused) expect((await pgError(() => client.query(sql))).code, sql).toBe('42501');
    for (const schema of [S, 'public', 'pg_catalog']) expect(await typeExists(schema, 'escaped'), schema).toBe(false);
    expect(await typeExists(S, 'ddl_types.escaped')).toBe(false);
    expect(await typeExists('DDL_TYPES', 'escaped')).toBe(false);
    expect(
      (await su((s) => s.query(`SELECT enumlabel FROM pg_catalog.pg_enum WHERE enumtypid = '${S}.kept'::regtype`)))
        .rows,
    ).toEqual([{ enumlabel: 'x' }]);
    expect(await canaryCount()).toBe(2);
  });
});

describe('schemas', () => {
  it('CREATE SCHEMA of one of ddl.schemas, its tables usable at once, DROP SCHEMA once it is empty', async () => {
    const c = await as('typer');
    // Connected before the schema exists: its searchPath names it all the same.
    const inmade = await as('inmade');
    // postgres.js's 'Escaping supports schemas and tables', with the schema named in ddl.schemas.
    await c.query(`create schema if not exists ${M}`);
    await c.query(`create schema if not exists ${M}`);
    expect(await schemaExists(M)).toBe(true);
    await c.query(`create table ${M}.b (c int)`);
    await c.query(`insert into ${M}.b values (1)`);
    expect((await c.query(`select * from ${M}.b`)).rows).toEqual([{ c: 1 }]);
    // By its unqualified name too, for a role whose searchPath is the new schema: the catalog is read again.
    await inmade.query('insert into b values (2)');
    expect((await inmade.query('select c from b order by c')).rows).toEqual([{ c: 1 }, { c: 2 }]);
    // CASCADE would drop what depends on its objects in other schemas too.
    expect((await pgError(() => c.query(`drop schema ${M} cascade`))).code).toBe('42501');
    expect(await schemaExists(M)).toBe(true);
    // Not empty: PostgreSQL itself refuses.
    expect((await pgError(() => c.query(`drop schema ${M}`))).code).toBe('2BP01');
    await c.query(`drop table ${M}.b`);
    await c.query(`drop schema ${M}`);
    expect(await schemaExists(M)).toBe(false);
  });

  it('other schemas, AUTHORIZATION, schema elements and CASCADE are refused and made nothing', async () => {
    const c = await as('typer');
    const tables = await as('tables');
    const refused: [pg.Client, string][] = [
      [c, `CREATE SCHEMA ${OUT}`],
      [c, `CREATE SCHEMA "DDL_MADE"`],
      [c, `CREATE SCHEMA ${M} AUTHORIZATION analyst_ro`],
      [c, `CREATE SCHEMA AUTHORIZATION ${M}`],
      [c, `CREATE SCHEMA ${M} CREATE TABLE t (a int)`],
      [c, `CREATE SCHEMA ${M} CREATE VIEW v AS SELECT * FROM public.customers`],
      [c, `CREATE SCHEMA ${M} CREATE TABLE ${OUT}.t (a int)`],
      [c, 'DROP SCHEMA public'],
      [c, `DROP SCHEMA ${S} CASCADE`],
      [c, `ALTER SCHEMA ${S} RENAME TO ${OUT}`],
      [tables, `CREATE SCHEMA ${M}`],
    ];
    for (const [client, sql] of refused) expect((await pgError(() => client.query(sql))).code, sql).toBe('42501');
    for (const name of [OUT, M, 'DDL_MADE', 'analyst_ro']) expect(await schemaExists(name), name).toBe(false);
    expect(await schemaExists(S)).toBe(true);
    expect(await schemaExists('public')).toBe(true);
  });
});

describe('an unknown table where the role may create one is 42P01', () => {
  it("answers PostgreSQL's error once a catalog read confirms it absent, with its position, over both protocols", async () => {
    const c = await as('local');
    const simple = await pgError(() => c.query('SELECT * FROM nosuch_here'));
    expect([simple.code, simple.message, (simple as { position?: string }).position]).toEqual([
      '42P01',
      'relation "nosuch_here" does not exist',
      '15',
    ]);
    const direct = await su(async (s) => {
      await s.query(`SET search_path = ${S}`);
      return pgError(() => s.query('SELECT * FROM nosuch_here'));
    });
    expect([direct.code, direct.message, (direct as { position?: string }).position]).toEqual([
      simple.code,
      simple.message,
      (simple as { position?: string }).position,
    ]);
    const extended = await pgError(() => c.query('SELECT $1::int, x FROM nosuch_here', [1]));
    expect([extended.code, extended.message, (extended as { position?: string }).position]).toEqual([
      '42P01',
      'relation "nosuch_here" does not exist',
      '24',
    ]);
    // Where the session itself may have made it, no catalog read can say it is absent: the 42501 stands. Made earlier
    // in the same Query (refused whole, so never made) …
    const sameQuery = await pgError(() => c.query('CREATE TABLE same_query (a int); SELECT * FROM same_query'));
    expect([sameQuery.code, sameQuery.message]).toEqual([
      '42501',
      expect.stringContaining('which pgwarden cannot resolve'),
    ]);
    // … or in the session's open transaction, which no other connection sees.
    await c.query('BEGIN');
    await c.query('CREATE TABLE in_block (a int)');
    const inBlock = await pgError(() => c.query('SELECT * FROM in_block'));
    expect(inBlock.code).toBe('42501');
    await c.query('ROLLBACK');
    expect((await pgError(() => c.query('SELECT * FROM in_block'))).code).toBe('42P01');
    expect(
      await su(
        async (s) =>
          (await s.query(`SELECT to_regclass('${S}.same_query') AS r, to_regclass('${S}.in_block') AS b`)).rows[0],
      ),
    ).toEqual({ r: null, b: null });
    // A table made outside pgwarden since its last catalog read is not answered as absent: the read finds it.
    await su((s) => s.query(`CREATE TABLE ${S}.made_outside (a int); GRANT SELECT ON ${S}.made_outside TO pgwarden`));
    expect((await c.query('SELECT count(*)::int AS n FROM made_outside')).rows).toEqual([{ n: 0 }]);
    // A schema the role may not create in keeps 42501, whether the relation exists or not.
    const typer = await as('typer');
    expect((await pgError(() => typer.query('SELECT * FROM public.customers'))).code).toBe('42501');
    expect((await pgError(() => typer.query('SELECT * FROM public.nosuch_there'))).code).toBe('42501');
  });

  const hasPsql = spawnSync('psql', ['--version']).status === 0;
  it.skipIf(!hasPsql)('psql shows the undefined table with its LINE and caret, as PostgreSQL does', async () => {
    const token = await tp.token({ role: 'local', sub: 'psql-42p01' });
    const run = await new Promise<{ stderr: string }>((resolve) => {
      execFile(
        'psql',
        [
          '-X',
          '-c',
          'select * from nosuch_psql',
          `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=local sslmode=disable`,
        ],
        { env: { ...process.env, PGPASSWORD: token }, timeout: 10_000, encoding: 'utf8' },
        (_err, _stdout, stderr) => resolve({ stderr }),
      );
    });
    expect(run.stderr).toContain(
      'ERROR:  relation "nosuch_psql" does not exist\nLINE 1: select * from nosuch_psql\n                      ^',
    );
  });
});
