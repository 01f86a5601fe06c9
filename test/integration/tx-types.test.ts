// Types, domains, sequences and schemas the session's own open transaction (or an earlier statement of its text) made, named by its later statements: resolved as PostgreSQL resolves them, through a real pgwarden and Postgres with pg and psql.
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

/** The role's own schema; one on its search path it may read but not create in; one it may not use at all. */
const S = 'txt_mine';
const OUT = 'txt_other';
const HIDDEN = 'txt_hidden';
const MADE = 'txt_made';

const POLICY = `roles:
  maker:
    readOnly: false
    relations: [public.canary, ${S}.*, ${MADE}.*]
    write: { statements: [insert, delete], relations: [${S}.*, ${MADE}.*] }
    ddl:
      kinds: [create_table, create_sequence, drop, create_type, alter_type, create_schema]
      schemas: [${S}, ${MADE}]
      temporary: true
    searchPath: [${S}]
  pathy:
    readOnly: false
    relations: [${OUT}.*, ${S}.*]
    write: { statements: [insert], relations: [${S}.*] }
    ddl:
      kinds: [create_table, drop, create_type]
      schemas: [${S}]
    searchPath: [${OUT}, ${S}]
  cols:
    readOnly: false
    relations: [${S}.*]
    deniedColumns: { ${S}.withsecret: [secret] }
    write: { statements: [insert], relations: [${S}.*] }
    ddl: { kinds: [create_table, drop, create_type], schemas: [${S}], temporary: true }
    searchPath: [${S}]
  plain:
    readOnly: false
    relations: [${S}.*]
    write: { statements: [insert], relations: [${S}.*] }
    searchPath: [${S}]
`;

let tp: TestProxy;
const clients: pg.Client[] = [];
async function as(role: string): Promise<pg.Client> {
  const c = await connectAs(tp, role);
  clients.push(c);
  return c;
}

/** Whether the superuser sees type `schema.name` (committed) upstream. */
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

const UNRESOLVED = (name: string) =>
  `permission denied by pgwarden: SELECT uses type ${name}, which pgwarden cannot resolve; hint: use built-in types (reason=scope_missing)`;

beforeAll(async () => {
  await su((c) =>
    c.query(`
    DROP SCHEMA IF EXISTS ${S} CASCADE;
    DROP SCHEMA IF EXISTS ${OUT} CASCADE;
    DROP SCHEMA IF EXISTS ${HIDDEN} CASCADE;
    DROP SCHEMA IF EXISTS ${MADE} CASCADE;
    CREATE SCHEMA ${S};
    CREATE SCHEMA ${OUT};
    CREATE SCHEMA ${HIDDEN};
    GRANT USAGE, CREATE ON SCHEMA ${S} TO pgwarden;
    GRANT USAGE ON SCHEMA ${OUT}, ${HIDDEN} TO pgwarden;
    CREATE TABLE ${HIDDEN}.secrets (a int);
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
      `DROP SCHEMA IF EXISTS ${S} CASCADE; DROP SCHEMA IF EXISTS ${OUT} CASCADE; DROP SCHEMA IF EXISTS ${HIDDEN} CASCADE; DROP SCHEMA IF EXISTS ${MADE} CASCADE; REVOKE CREATE ON DATABASE app FROM pgwarden`,
    ),
  );
});

describe('a type made in the open transaction', () => {
  it('is used by CREATE TABLE and INSERT in the same transaction (psycopg test_change_type), unqualified and qualified', async () => {
    const c = await as('maker');
    const canary = await canaryCount();
    for (const q of ['', `${S}.`]) {
      await c.query('BEGIN');
      await c.query(`CREATE TYPE ${q}prepenum AS ENUM ('foo', 'bar', 'baz')`);
      await c.query(`CREATE TABLE ${q}preptable (id integer, bar ${q}prepenum[])`);
      await c.query({ text: `INSERT INTO ${q}preptable (bar) VALUES ($1::${q}prepenum[])`, values: ['{foo}'] });
      await c.query(`INSERT INTO ${q}preptable (bar) VALUES ('{bar,baz}'::${q}prepenum[])`);
      const rows = (await c.query(`SELECT bar::text[] AS bar FROM ${q}preptable`)).rows;
      expect(rows.map((r) => r.bar).sort()).toEqual([['bar', 'baz'], ['foo']]);
      await c.query('ROLLBACK');
      expect(await typeExists(S, 'prepenum')).toBe(false);
    }
    expect(await canaryCount()).toBe(canary);
  });

  it('and in one Query text with the statements that use it; what the text made is then committed', async () => {
    const c = await as('maker');
    await c.query(
      `CREATE TYPE mood AS ENUM ('sad', 'ok'); CREATE DOMAIN small AS int CHECK (VALUE < 10); CREATE TABLE moods (m mood, s small); INSERT INTO moods VALUES ('ok', 1)`,
    );
    expect(await typeExists(S, 'mood')).toBe(true);
    expect((await c.query('SELECT m, s FROM moods')).rows).toEqual([{ m: 'ok', s: 1 }]);
    expect((await pgError(() => c.query('INSERT INTO moods VALUES (NULL, 42)'))).code).toBe('23514');
    await c.query('DROP TABLE moods; DROP DOMAIN small; DROP TYPE mood');
  });

  it("a serial column made in the same Query text as its INSERT (node-postgres's simple-query test): serial is no type to leave to the server", async () => {
    const c = await as('maker');
    await c.query("CREATE TEMP TABLE bang (id serial, name varchar(5)); INSERT INTO bang (name) VALUES ('boom')");
    await c.query('CREATE TABLE sbang (id bigserial, n smallserial); INSERT INTO sbang DEFAULT VALUES');
    expect((await c.query('SELECT b.id, b.name, s.id AS sid, s.n FROM bang b, sbang s')).rows).toEqual([
      { id: 1, name: 'boom', sid: '1', n: 1 },
    ]);
    await c.query('DROP TABLE sbang; DROP TABLE pg_temp.bang');
  });

  it('a domain, a composite, a table row type and a temporary table row type made in the transaction', async () => {
    const c = await as('maker');
    await c.query('BEGIN');
    await c.query(`CREATE DOMAIN dsmall AS int CHECK (VALUE < 10)`);
    await c.query(`CREATE TYPE pair AS (a int, b text)`);
    await c.query(`CREATE TABLE rowt (a int, b text)`);
    await c.query(`CREATE TEMP TABLE trow (x int)`);
    await c.query(`CREATE TABLE usesall (d dsmall, p pair, r rowt, t trow)`);
    await c.query(`INSERT INTO usesall (d, p) VALUES (3, ROW(1, 'x')::pair)`);
    expect((await pgError(() => c.query('INSERT INTO usesall (d) VALUES (11)'))).code).toBe('23514');
    await c.query('ROLLBACK');
    expect(await typeExists(S, 'pair')).toBe(false);
  });

  it('a new enum value is refused as PostgreSQL refuses it (55P04), the type being older than the transaction', async () => {
    const c = await as('maker');
    await c.query(`CREATE TYPE later AS ENUM ('a')`);
    await c.query('BEGIN');
    await c.query(`ALTER TYPE later ADD VALUE 'b'`);
    const e = await pgError(() => c.query(`SELECT 'b'::later`));
    expect(e.code).toBe('55P04');
    expect(e.message).toBe('unsafe use of new value "b" of enum type later');
    await c.query('ROLLBACK');
    await c.query('DROP TYPE later');
  });

  it('a sequence made in the transaction is read as a relation and feeds a serial column; nextval stays refused as for any sequence', async () => {
    const c = await as('maker');
    await c.query('BEGIN');
    await c.query('CREATE SEQUENCE seq1');
    await c.query('CREATE TABLE seqt (id serial, v text)');
    await c.query(`INSERT INTO seqt (v) VALUES ('a'), ('b')`);
    expect((await c.query('SELECT id FROM seqt ORDER BY id')).rows).toEqual([{ id: 1 }, { id: 2 }]);
    expect((await c.query('SELECT last_value::int AS n, is_called FROM seq1')).rows).toEqual([
      { n: 1, is_called: false },
    ]);
    // nextval is always refused (docs/functions.md), whether its sequence is new or not: the same answer here.
    const e = await pgError(() => c.query(`SELECT nextval('seq1')`));
    expect(e.code).toBe('42501');
    expect(e.message).toContain('nextval');
    await c.query('ROLLBACK');
  });

  it('a schema made in the transaction, and a type and a table in it', async () => {
    const c = await as('maker');
    await c.query('BEGIN');
    await c.query(`CREATE SCHEMA ${MADE}`);
    await c.query(`CREATE TYPE ${MADE}.e AS ENUM ('x')`);
    await c.query(`CREATE TABLE ${MADE}.t (id int, e ${MADE}.e)`);
    await c.query(`INSERT INTO ${MADE}.t VALUES (1, 'x')`);
    expect((await c.query(`SELECT id, e FROM ${MADE}.t`)).rows).toEqual([{ id: 1, e: 'x' }]);
    await c.query('ROLLBACK');
  });
});

describe('what stays refused', () => {
  it('an unknown type nobody made, with or without DDL in the transaction, gets the same refusal', async () => {
    const c = await as('maker');
    const before = await pgError(() => c.query('SELECT NULL::nosuchtype'));
    expect(before.code).toBe('42501');
    expect(before.message).toBe(UNRESOLVED('nosuchtype'));
    await c.query('BEGIN');
    await c.query('CREATE TABLE madehere (a int)');
    const inside = await pgError(() => c.query('SELECT NULL::nosuchtype'));
    expect(inside.code).toBe('42501');
    expect(inside.message).toBe(before.message);
    expect(inside.detail).toBe(before.detail);
    await c.query('ROLLBACK');
  });

  it("a table's row type outside the search path's schemas is not found, and a hidden one is refused as a read", async () => {
    const c = await as('maker');
    await c.query('BEGIN');
    await c.query('CREATE TABLE madehere (a int)');
    const e = await pgError(() => c.query('SELECT NULL::secrets'));
    expect(e.message).toBe(UNRESOLVED('secrets'));
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    await c.query('CREATE TABLE madehere (a int)');
    const hidden = await pgError(() => c.query(`SELECT NULL::${HIDDEN}.secrets`));
    expect(hidden.code).toBe('42501');
    expect(hidden.message).toContain(`${HIDDEN}.secrets`);
    await c.query('ROLLBACK');
  });

  it('a type someone else made during the transaction, found first on the search path, is refused', async () => {
    const c = await as('pathy');
    await c.query('BEGIN');
    await c.query(`CREATE TYPE ${S}.mood2 AS ENUM ('a')`);
    // Another session commits a type of the same name in a schema earlier on the role's search path, outside ddl.schemas.
    await su((s) => s.query(`CREATE TYPE ${OUT}.mood2 AS ENUM ('evil')`));
    await c.query('SAVEPOINT a');
    const e = await pgError(() => c.query('SELECT NULL::mood2'));
    expect(e.code).toBe('42501');
    expect(e.message).toBe(UNRESOLVED('mood2'));
    // The refusal aborted the transaction, as an error there does: PostgreSQL's own 25P02 for the next statement.
    expect((await pgError(() => c.query(`SELECT 'a'::${S}.mood2`))).code).toBe('25P02');
    await c.query('ROLLBACK TO SAVEPOINT a');
    // Written with its schema, the session's own type is the one used.
    expect((await c.query(`SELECT 'a'::${S}.mood2 AS m`)).rows).toEqual([{ m: 'a' }]);
    await c.query('ROLLBACK');
    await su((s) => s.query(`DROP TYPE ${OUT}.mood2`));
  });

  it("a new table's row type is a whole-row read of it: refused where a column of it is denied", async () => {
    const c = await as('cols');
    await c.query('BEGIN');
    await c.query('CREATE TABLE withsecret (a int, secret text)');
    await c.query('CREATE TABLE plainrow (a int)');
    await c.query('SAVEPOINT a');
    const e = await pgError(() => c.query('SELECT (NULL::withsecret) IS NULL'));
    expect(e.code).toBe('42501');
    // Refused as before (the first refusal, word for word); plainrow below differs from it only by the denied column.
    expect(e.message).toBe(UNRESOLVED('withsecret'));
    await c.query('ROLLBACK TO SAVEPOINT a');
    expect((await c.query('SELECT (NULL::plainrow) IS NULL AS n')).rows).toEqual([{ n: true }]);
    await c.query('ROLLBACK');
  });

  it("pg_temp and other spellings do not reach a type outside the role's schemas", async () => {
    const c = await as('maker');
    await c.query('BEGIN');
    await c.query('CREATE TABLE madehere (a int)');
    // pg_temp's names are the session's own: PostgreSQL's answer (3F000, it has no temporary schema yet), as directly.
    await c.query('SAVEPOINT a');
    expect((await pgError(() => c.query('SELECT NULL::pg_temp.nosuch'))).code).toBe('3F000');
    await c.query('ROLLBACK TO SAVEPOINT a');
    for (const sql of [
      `SELECT NULL::${OUT}.nosuch`,
      'SELECT NULL::"txt_other.nosuch"',
      `SELECT NULL::app.${HIDDEN}.secrets`,
    ]) {
      await c.query('SAVEPOINT a');
      const e = await pgError(() => c.query(sql));
      expect(e.code, sql).toBe('42501');
      await c.query('ROLLBACK TO SAVEPOINT a');
    }
    // The search path is pinned: the session cannot put another schema before its own.
    await c.query('SAVEPOINT a');
    expect((await pgError(() => c.query(`SET search_path = ${OUT}, ${S}`))).code).toBe('42501');
    await c.query('ROLLBACK TO SAVEPOINT a');
    await c.query('ROLLBACK');
  });

  it('a role without DDL, which cannot have made a type, gets the refusal as before', async () => {
    const m = await as('maker');
    await m.query(`CREATE TYPE ${S}.committed_late AS ENUM ('a')`);
    const c = await as('plain');
    await c.query('BEGIN');
    const e = await pgError(() => c.query('SELECT NULL::not_there'));
    expect(e.message).toBe(UNRESOLVED('not_there'));
    await c.query('ROLLBACK');
    await m.query(`DROP TYPE ${S}.committed_late`);
  });
});

const hasPsql = spawnSync('psql', ['--version']).status === 0;
describe.skipIf(!hasPsql)('psql', () => {
  it('one transaction in one script: the type, the table using it, an INSERT; rolled back', async () => {
    const token = await tp.token({ role: 'maker', sub: 'psql-txtypes' });
    const script = [
      'BEGIN;',
      "CREATE TYPE psqlenum AS ENUM ('foo', 'bar');",
      'CREATE TABLE psqltable (id integer, bar psqlenum[]);',
      "INSERT INTO psqltable (bar) VALUES ('{foo}'::psqlenum[]);",
      'SELECT count(*) FROM psqltable;',
      'ROLLBACK;',
    ].join('\n');
    const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(
        'psql',
        [
          '-X',
          '-v',
          'ON_ERROR_STOP=1',
          '-At',
          '-f',
          '-',
          `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=maker sslmode=disable`,
        ],
        { env: { ...process.env, PGPASSWORD: token }, timeout: 10_000, encoding: 'utf8' },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin?.end(script);
    });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout.split('\n')).toContain('1');
    expect(await typeExists(S, 'psqlenum')).toBe(false);
  });
});
