// catalog: scoped through the real proxy: psql's \d family, information_schema and driver metadata queries show only the role's relations and columns; no hidden name leaks through rows, OID functions, reg* casts or errors.
import { execFile, spawnSync } from 'node:child_process';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPg, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

// Every name the role must never see starts with zz: tables, columns, functions, types, roles, schemas' relations.
const HIDDEN = /zz/i;

const POLICY = `roles:
  scoped:
    readOnly: true
    relations: [cs_vis.items, cs_vis.tags, cs_open.*]
    deniedColumns: { cs_vis.items: [zz_denied_col] }
    searchPath: [public, cs_vis, cs_open]
    catalog: scoped
  other:
    readOnly: true
    relations: [cs_vis.tags]
    catalog: scoped
`;

const SETUP = `
DROP SCHEMA IF EXISTS cs_vis CASCADE; DROP SCHEMA IF EXISTS cs_open CASCADE; DROP SCHEMA IF EXISTS cs_zz_hidden CASCADE;
DROP ROLE IF EXISTS zz_hidden_owner;
CREATE ROLE zz_hidden_owner NOLOGIN;
CREATE SCHEMA cs_zz_hidden;
CREATE TABLE cs_zz_hidden.zz_hidden_tbl (id int PRIMARY KEY, zz_hidden_col text);
CREATE FUNCTION cs_zz_hidden.zz_hidden_fn() RETURNS int LANGUAGE sql IMMUTABLE AS 'select 1';
CREATE SCHEMA cs_vis;
CREATE TABLE cs_vis.items (
  id int PRIMARY KEY,
  name text NOT NULL,
  zz_denied_col text,
  ref int REFERENCES cs_zz_hidden.zz_hidden_tbl (id),
  computed int DEFAULT cs_zz_hidden.zz_hidden_fn(),
  odd cs_zz_hidden.zz_hidden_tbl
);
CREATE INDEX items_zz_idx ON cs_vis.items (zz_denied_col);
CREATE TABLE cs_vis.tags (item_id int, tag text);
CREATE TABLE cs_vis.zz_sibling (x int);
CREATE SCHEMA cs_open;
CREATE TABLE cs_open.notes (id int, body text);
CREATE VIEW cs_open.recent AS SELECT id FROM cs_open.notes;
COMMENT ON TABLE cs_zz_hidden.zz_hidden_tbl IS 'zz hidden comment';
ALTER TABLE cs_vis.items OWNER TO zz_hidden_owner;
GRANT USAGE ON SCHEMA cs_vis, cs_open, cs_zz_hidden TO pgwarden;
GRANT SELECT ON ALL TABLES IN SCHEMA cs_vis, cs_open, cs_zz_hidden TO pgwarden;
INSERT INTO cs_vis.tags VALUES (1, 'a');
`;

let tp: TestProxy;
let su: pg.Client;
let c: pg.Client;
let hiddenOid: number;
beforeAll(async () => {
  su = await superClient();
  await su.query(SETUP);
  hiddenOid = Number((await su.query(`SELECT 'cs_zz_hidden.zz_hidden_tbl'::regclass::oid AS o`)).rows[0].o);
  tp = await startTestProxy({ policy: POLICY });
  c = await connectPg(tp, await tp.token({ role: 'scoped', sub: 'cs' }));
});
afterAll(async () => {
  await c?.end();
  await tp?.close();
  await su?.query(
    'DROP SCHEMA IF EXISTS cs_vis CASCADE; DROP SCHEMA IF EXISTS cs_open CASCADE; DROP SCHEMA IF EXISTS cs_zz_hidden CASCADE; DROP ROLE IF EXISTS zz_hidden_owner',
  );
  await su?.end();
});

/** Runs a query; returns its rows, or the error, as text (both must be free of hidden names). */
async function run(
  sql: string,
  values?: unknown[],
): Promise<{ text: string; rows: Record<string, unknown>[]; code?: string }> {
  try {
    const r = await c.query(values === undefined ? sql : { text: sql, values });
    return { text: JSON.stringify(r.rows), rows: r.rows };
  } catch (err) {
    const e = err as pg.DatabaseError;
    return { text: `${e.message} ${e.detail ?? ''} ${e.hint ?? ''}`, rows: [], code: e.code };
  }
}

describe('catalog: scoped rows', () => {
  it("pg_class, pg_namespace and pg_attribute show the role's relations and allowed columns only", async () => {
    const rels = await run(
      "SELECT n.nspname || '.' || c.relname AS r FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY 1",
    );
    expect(rels.rows.map((r) => r.r)).toEqual(['cs_open.notes', 'cs_open.recent', 'cs_vis.items', 'cs_vis.tags']);
    const cols = await run(
      "SELECT attname FROM pg_attribute WHERE attrelid = (SELECT oid FROM pg_class WHERE relname = 'items') AND attnum > 0 ORDER BY attnum",
    );
    // The denied column and the column typed as a hidden table's row type are absent.
    expect(cols.rows.map((r) => r.attname)).toEqual(['id', 'name', 'ref', 'computed']);
    const all = await run('SELECT * FROM pg_class');
    expect(all.code).toBeUndefined();
    expect(all.text).not.toMatch(HIDDEN);
    const nsp = await run('SELECT nspname FROM pg_namespace ORDER BY 1');
    expect(nsp.rows.map((r) => r.nspname)).toEqual(['cs_open', 'cs_vis', 'information_schema', 'pg_catalog', 'public']);
  });

  it('information_schema.tables and columns list the same', async () => {
    const t = await run(
      "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    );
    expect(t.rows.map((r) => `${r.table_schema}.${r.table_name}`)).toEqual([
      'cs_open.notes',
      'cs_open.recent',
      'cs_vis.items',
      'cs_vis.tags',
    ]);
    const cols = await run('SELECT * FROM information_schema.columns ORDER BY table_name, ordinal_position');
    expect(cols.code).toBeUndefined();
    expect(cols.rows.filter((r) => r.table_name === 'items').map((r) => r.column_name)).toEqual([
      'id',
      'name',
      'ref',
      'computed',
    ]);
    expect(cols.text).not.toMatch(HIDDEN);
  });

  it("another role sees its own relations, not the first role's", async () => {
    const o = await connectPg(tp, await tp.token({ role: 'other', sub: 'cs-o' }));
    try {
      const r = await o.query('SELECT relname FROM pg_class ORDER BY 1');
      expect(r.rows.map((x) => x.relname)).toEqual(['tags']);
    } finally {
      await o.end();
    }
  });
});

describe('catalog: scoped functions, casts and errors', () => {
  it('reg* casts and OID functions name visible objects only; hidden and missing read alike', async () => {
    const probes = [
      `SELECT ${hiddenOid}::regclass AS v`,
      `SELECT ${hiddenOid}::oid::regclass::text AS v`,
      "SELECT 'cs_zz_hidden.zz_hidden_tbl'::regclass AS v",
      "SELECT to_regclass('cs_zz_hidden.zz_hidden_tbl') AS v",
      `SELECT pg_table_is_visible(${hiddenOid}) AS v`,
      `SELECT format_type((SELECT reltype FROM pg_class LIMIT 1) + 0, NULL) IS NULL AS v`,
      `SELECT format_type(t, NULL) AS v FROM generate_series(${hiddenOid - 5}, ${hiddenOid + 5}) t`,
      `SELECT x::regclass::text AS v FROM generate_series(${hiddenOid - 5}, ${hiddenOid + 20}) x`,
      "SELECT 'cs_zz_hidden.zz_hidden_tbl'::regtype AS v",
      'SELECT pg_get_userbyid(relowner) AS v FROM pg_class',
    ];
    for (const q of probes) {
      const r = await run(q);
      expect(r.text, q).not.toMatch(HIDDEN);
    }
    // Hidden and missing give the same answer.
    const hidden = await run("SELECT 'cs_zz_hidden.zz_hidden_tbl'::regclass AS v");
    const missing = await run("SELECT 'cs_zz_hidden.nope'::regclass AS v");
    expect(hidden).toEqual(missing);
    expect(hidden.rows).toEqual([{ v: null }]);
    const visible = await run("SELECT 'cs_vis.items'::regclass::text AS v");
    // On the role's search_path, so unqualified, as PostgreSQL prints it.
    expect(visible.rows).toEqual([{ v: 'items' }]);
  });

  it('catalog relations without a filter are refused, in every position', async () => {
    for (const q of [
      'SELECT * FROM pg_catalog.pg_description',
      'SELECT * FROM pg_stat_user_tables',
      'SELECT * FROM pg_catalog.pg_proc',
      'COPY pg_catalog.pg_class TO STDOUT',
      'SELECT 1 FROM pg_class; COPY pg_class TO STDOUT',
      'SELECT 1 FROM pg_class; COPY (SELECT * FROM pg_proc) TO STDOUT',
      'SELECT * INTO pg_temp.x FROM pg_class',
      'SELECT relname FROM pg_class c, LATERAL (SELECT * FROM pg_catalog.pg_depend d WHERE d.objid = c.oid) x',
      'WITH pg_class AS (SELECT 1) SELECT * FROM pg_class',
      'SELECT * FROM app.pg_catalog.pg_class',
      'EXPLAIN SELECT * FROM pg_class',
      'SELECT obj_description(oid) FROM pg_class',
      `SELECT ${hiddenOid}::regrole`,
      `SELECT pg_relation_size(${hiddenOid})`,
    ]) {
      const r = await run(q);
      expect(r.code ?? `allowed: ${q} ${r.text}`, q).toMatch(/^(42501|0A000)$/);
      expect(r.text, q).not.toMatch(HIDDEN);
    }
  });

  it('the extended protocol with parameters is filtered the same', async () => {
    const r = await run('SELECT relname FROM pg_class WHERE relname = $1 OR oid = $2::oid', [
      'zz_hidden_tbl',
      hiddenOid,
    ]);
    expect(r.rows).toEqual([]);
    const v = await run('SELECT relname FROM pg_class WHERE relname = $1', ['items']);
    expect(v.rows).toEqual([{ relname: 'items' }]);
  });
});

const hasPsql = spawnSync('psql', ['--version']).status === 0;
describe.skipIf(!hasPsql)('psql', () => {
  async function psql(...commands: string[]): Promise<{ stdout: string; stderr: string }> {
    const token = await tp.token({ role: 'scoped', sub: 'cs-psql' });
    const args = ['-X'];
    for (const cmd of commands) args.push('-c', cmd);
    args.push(`host=127.0.0.1 port=${tp.proxy.port} dbname=app user=alice sslmode=disable`);
    // Asynchronously: the proxy runs in this process.
    return new Promise((resolve) => {
      execFile(
        'psql',
        args,
        { env: { ...process.env, PGPASSWORD: token }, timeout: 20_000, encoding: 'utf8' },
        (_err, stdout, stderr) => resolve({ stdout, stderr }),
      );
    });
  }

  it("\\d and \\dt list the role's relations; no hidden name appears", async () => {
    const r = await psql('\\d', '\\dt', '\\dt cs_vis.*', '\\dn');
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/cs_vis \| items/);
    expect(r.stdout).toMatch(/cs_open \| recent/);
    expect(r.stdout).not.toMatch(HIDDEN);
  });
});
