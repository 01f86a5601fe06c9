// catalog: scoped through the real proxy: psql's \d family, information_schema and driver metadata queries show only the role's relations and columns; no hidden name leaks through rows, OID functions, reg* casts or errors.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SCOPED_FUNCTIONS, SCOPED_RELATIONS } from '../../policy/catalog-scope.ts';
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
  plain:
    readOnly: true
    relations: [cs_vis.tags]
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
-- A narrowed token limits cs_open.parent to column a: its inheritance child shares the hidden column.
CREATE TABLE cs_open.parent (a int, nx_narrowed_col int);
CREATE TABLE cs_open.child () INHERITS (cs_open.parent);
-- A view of the role's whose query reads a hidden table: its definition must never be shown.
CREATE VIEW cs_open.peek AS SELECT zz_hidden_col AS peeked FROM cs_zz_hidden.zz_hidden_tbl;
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
/** The OIDs the setup's objects were given: every probe over this range must name nothing hidden. */
let lo: number;
let hi: number;
beforeAll(async () => {
  su = await superClient();
  await su.query(SETUP);
  hiddenOid = Number((await su.query(`SELECT 'cs_zz_hidden.zz_hidden_tbl'::regclass::oid AS o`)).rows[0].o);
  lo = Number((await su.query(`SELECT oid FROM pg_namespace WHERE nspname = 'cs_zz_hidden'`)).rows[0].oid) - 2;
  hi = Number((await su.query(`SELECT max(oid) AS o FROM pg_class`)).rows[0].o) + 40;
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
    // The primary key's index is shown; the index on the denied column is not.
    expect(rels.rows.map((r) => r.r)).toEqual([
      'cs_open.child',
      'cs_open.notes',
      'cs_open.parent',
      'cs_open.peek',
      'cs_open.recent',
      'cs_vis.items',
      'cs_vis.items_pkey',
      'cs_vis.tags',
    ]);
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
      'cs_open.child',
      'cs_open.notes',
      'cs_open.parent',
      'cs_open.peek',
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

describe('catalog: scoped: every filtered relation, every guarded function', () => {
  it('SELECT * from each filtered catalog relation runs and names nothing hidden', async () => {
    for (const key of SCOPED_RELATIONS) {
      const r = await run(`SELECT * FROM ${key}`);
      expect(r.code, `${key}: ${r.text.slice(0, 300)}`).toBeUndefined();
      expect(r.text, key).not.toMatch(HIDDEN);
    }
  });

  it('each guarded function over every OID the setup made names nothing hidden', async () => {
    for (const [name, spec] of SCOPED_FUNCTIONS) {
      if (name.startsWith('to_reg')) continue;
      const args = spec.y === undefined ? (name === 'format_type' ? 'o, NULL' : 'o') : 'o, 1';
      const pad = name === 'pg_get_expr' ? '(SELECT adbin FROM pg_attrdef LIMIT 1), o' : args;
      const r = await run(`SELECT ${name}(${pad})::text AS v FROM generate_series(${lo}, ${hi}) o`);
      expect(r.code, `${name}: ${r.text.slice(0, 300)}`).toBeUndefined();
      expect(r.text, name).not.toMatch(HIDDEN);
    }
    for (const cat of ['pg_class', 'pg_namespace', 'pg_proc', 'pg_type', 'pg_constraint', 'pg_trigger', 'pg_attrdef']) {
      const r = await run(`SELECT obj_description(o, '${cat}') AS v FROM generate_series(${lo}, ${hi}) o`);
      expect(r.code, cat).toBeUndefined();
      expect(r.text, cat).not.toMatch(HIDDEN);
    }
    for (const t of ['regclass', 'regtype', 'regnamespace']) {
      const r = await run(`SELECT o::${t}::text AS v FROM generate_series(${lo}, ${hi}) o`);
      expect(r.text, t).not.toMatch(HIDDEN);
    }
  });

  it('joins through visible rows to hidden ones find nothing: constraints, defaults, indexes, inheritance, types, owners', async () => {
    for (const q of [
      // A visible table's foreign key to a hidden table.
      'SELECT conname, pg_get_constraintdef(oid), confrelid::regclass::text FROM pg_constraint',
      'SELECT c.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid',
      // A default calling a hidden function; the index on the denied column.
      'SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef',
      'SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index',
      'SELECT * FROM pg_indexes',
      // A view of the role's that reads a hidden table: its text is never given.
      "SELECT pg_get_viewdef('cs_open.peek'), pg_get_viewdef('cs_open.peek'::regclass, true)",
      'SELECT definition FROM pg_views',
      'SELECT view_definition FROM information_schema.views',
      'SELECT * FROM information_schema.key_column_usage',
      'SELECT * FROM information_schema.referential_constraints',
      'SELECT * FROM information_schema.table_constraints',
      'SELECT * FROM information_schema.constraint_column_usage',
      // The column typed as a hidden table's row type, and that type.
      'SELECT t.typname FROM pg_type t WHERE t.typrelid <> 0',
      'SELECT format_type(atttypid, atttypmod) FROM pg_attribute',
      // Owners are other roles.
      'SELECT pg_get_userbyid(relowner), pg_get_userbyid(relowner) IS NULL FROM pg_class',
      'SELECT rolname FROM pg_roles',
      'SELECT * FROM pg_tables',
      'SELECT * FROM information_schema.schemata',
      // Functions: only pg_catalog's and the role's.
      "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
      "SELECT * FROM pg_description WHERE classoid = 'pg_class'::regclass",
      `SELECT obj_description(${'$'}{0}, 'pg_class')`,
      // Sizes and statistics of hidden relations.
      `SELECT pg_relation_size(${'$'}{0}), pg_total_relation_size('cs_zz_hidden.zz_hidden_tbl')`,
      'SELECT relname, reltuples, relpages FROM pg_class',
      // Subqueries in every clause, LATERAL, CTEs and set operations.
      'WITH x AS (SELECT oid FROM pg_class) SELECT (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = x.oid) FROM x',
      'SELECT * FROM pg_namespace n, LATERAL (SELECT relname FROM pg_class c WHERE c.relnamespace = n.oid) l',
      'SELECT relname FROM pg_class UNION ALL SELECT table_name FROM information_schema.tables ORDER BY 1',
      'SELECT relname FROM pg_class GROUP BY relname HAVING count(*) > (SELECT 0 FROM pg_attribute LIMIT 1)',
      'SELECT x FROM (SELECT relname AS x FROM pg_catalog."pg_class") s',
      'SELECT relname FROM "pg_catalog" . pg_class ORDER BY (SELECT max(attname) FROM pg_attribute)',
    ]) {
      const text = q.replaceAll(`${'$'}{0}`, String(hiddenOid));
      const r = await run(text);
      expect(r.code, `${text}: ${r.text.slice(0, 300)}`).toBeUndefined();
      expect(r.text, text).not.toMatch(HIDDEN);
    }
  });

  it('prepared statements and cursors are filtered too, and a prepared catalog query is refused after a reload', async () => {
    await c.query('BEGIN');
    await c.query('DECLARE cur CURSOR FOR SELECT relname FROM pg_class ORDER BY 1');
    const f = await c.query('FETCH ALL FROM cur');
    expect(JSON.stringify(f.rows)).not.toMatch(HIDDEN);
    await c.query('COMMIT');
    await c.query('PREPARE pc AS SELECT relname FROM pg_class WHERE relname = $1');
    expect((await c.query("EXECUTE pc('items')")).rows).toEqual([{ relname: 'items' }]);
    expect((await c.query("EXECUTE pc('zz_hidden_tbl')")).rows).toEqual([]);
    // An extended-protocol statement prepared under the old policy.
    const named = { name: 'scoped-named', text: 'SELECT relname FROM pg_class WHERE relname = $1' };
    expect((await c.query({ ...named, values: ['tags'] })).rows).toEqual([{ relname: 'tags' }]);
    // A reload that takes cs_vis.tags away: the statements prepared with the old filter are refused, not run.
    writeFileSync(
      tp.policyFile,
      POLICY.replace('relations: [cs_vis.items, cs_vis.tags, cs_open.*]', 'relations: [cs_vis.items, cs_open.*]'),
    );
    try {
      await tp.proxy.reload();
      const stale = await run("EXECUTE pc('tags')");
      expect(stale.code).toBe('42501');
      expect(stale.text).toMatch(/system catalogs filtered as the policy was when it was prepared/);
      const again = await run('SELECT relname FROM pg_class WHERE relname = $1', ['tags']);
      expect(again.rows).toEqual([]);
    } finally {
      writeFileSync(tp.policyFile, POLICY);
      await tp.proxy.reload();
    }
  });
});

describe('catalog: scoped with a narrowed token', () => {
  it('a column list on a parent leaves the column out of the parent and of its inheritance children', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await tp.sign({
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      sub: 'cs-narrow',
      role: 'scoped',
      iat: now,
      exp: now + 300,
      jti: `cs-narrow-${Math.random()}`,
      pgwarden_narrow: { columns: { 'cs_open.parent': ['a'] } },
    });
    const n = await connectPg(tp, token);
    try {
      const atts = await n.query(
        "SELECT c.relname || '.' || a.attname AS c FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname IN ('parent', 'child') AND a.attnum > 0 ORDER BY 1",
      );
      expect(atts.rows.map((r) => r.c)).toEqual(['child.a', 'parent.a']);
      const cols = await n.query(
        "SELECT table_name || '.' || column_name AS c FROM information_schema.columns WHERE table_schema = 'cs_open' AND table_name IN ('parent', 'child') ORDER BY 1",
      );
      expect(cols.rows.map((r) => r.c)).toEqual(['child.a', 'parent.a']);
    } finally {
      await n.end();
    }
    // Without the narrowing the role sees both columns.
    const all = await run("SELECT attname FROM pg_attribute WHERE attrelid = 'cs_open.child'::regclass AND attnum > 0");
    expect(all.rows.map((r) => r.attname)).toEqual(['a', 'nx_narrowed_col']);
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
    // The system catalogs themselves are named as drivers name them.
    expect((await run("SELECT 'pg_class'::regclass::oid::int AS v")).rows).toEqual([{ v: 1259 }]);
  });

  it('catalog relations without a filter are refused, in every position', async () => {
    for (const q of [
      'SELECT * FROM pg_stat_user_tables',
      'SELECT * FROM pg_statio_user_tables',
      'SELECT * FROM pg_catalog.pg_depend',
      'SELECT * FROM pg_catalog.pg_shdepend',
      'SELECT * FROM pg_catalog.pg_authid',
      'SELECT * FROM pg_catalog.pg_stats',
      'SELECT * FROM pg_catalog.pg_class_oid_index',
      'SELECT * FROM pg_toast.pg_toast_2619',
      'SELECT * FROM information_schema.routines',
      'SELECT * FROM information_schema.role_table_grants',
      "SELECT shobj_description(1, 'pg_database')",
      `SELECT pg_get_functiondef(${hiddenOid})`,
      "SELECT has_table_privilege('cs_zz_hidden.zz_hidden_tbl', 'select')",
      "SELECT pg_get_serial_sequence('cs_vis.items', 'id')",
      'SELECT pg_describe_object(1259, 1259, 0)',
      'SELECT * FROM pg_identify_object(1259, 1259, 0)',
      'SELECT 1::regproc',
      `SELECT '{${'$'}{0}}'::_regclass`,
      `SELECT '{${'$'}{0}}'::pg_catalog._regclass FROM pg_class`,
      `SELECT ARRAY[${'$'}{0}]::regclass[] FROM pg_class`,
      `SELECT array_agg(o)::text::_regclass FROM generate_series(1, 20000) o`,
      'SELECT regclass(relname::text) FROM pg_class',
      `SELECT app.pg_catalog.format_type(t, NULL) FROM pg_class, generate_series(${'$'}{0} - 5, ${'$'}{0} + 5) t`,
      `SELECT ${'$'}{0}::app.pg_catalog.regclass FROM pg_class`,
      `SELECT ${'$'}{0}::app.pg_catalog.regclass`,
      'SELECT relname FROM pg_class TABLESAMPLE SYSTEM (100)',
      "SELECT 'zz_hidden_fn'::regprocedure",
      'SELECT 10::regrole',
      'SELECT pg_get_viewdef(1) FROM pg_class; CREATE VIEW v AS SELECT 1',
      'COPY pg_catalog.pg_class TO STDOUT',
      'SELECT 1 FROM pg_class; COPY pg_class TO STDOUT',
      'SELECT 1 FROM pg_class; COPY (SELECT * FROM pg_depend) TO STDOUT',
      'SELECT * INTO pg_temp.x FROM pg_class',
      'SELECT relname FROM pg_class c, LATERAL (SELECT * FROM pg_catalog.pg_depend d WHERE d.objid = c.oid) x',
      'WITH pg_class AS (SELECT 1) SELECT * FROM pg_class',
      'SELECT * FROM app.pg_catalog.pg_class',
      'EXPLAIN SELECT * FROM pg_class',
      `SELECT ${hiddenOid}::regrole`,
    ]) {
      const text = q.replaceAll(`${'$'}{0}`, String(hiddenOid));
      const r = await run(text);
      expect(r.code ?? `allowed: ${text} ${r.text}`, text).toMatch(/^(42501|0A000)$/);
      expect(r.text, q).not.toMatch(HIDDEN);
    }
  });

  it('a role without catalog access cannot read names through arrays of reg* types either', async () => {
    const p = await connectPg(tp, await tp.token({ role: 'plain', sub: 'cs-plain' }));
    p.on('error', () => {});
    try {
      for (const q of [
        `SELECT '{${hiddenOid}}'::_regclass AS v`,
        `SELECT array_agg(o)::text::pg_catalog._regclass AS v FROM generate_series(1, 20000) o`,
        `SELECT '{10}'::_regrole AS v`,
      ]) {
        const e = await p.query(q).then(
          (r) => ({ code: undefined, text: JSON.stringify(r.rows) }),
          (err: pg.DatabaseError) => ({ code: err.code, text: err.message }),
        );
        expect(e.code ?? `allowed: ${q} ${e.text}`, q).toBe('42501');
        expect(e.text).not.toMatch(HIDDEN);
      }
    } finally {
      await p.end();
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

  it('the \\d family runs to its end: a table with a hidden foreign key, default, column type and index, views, indexes, types, functions', async () => {
    const commands = [
      '\\d items',
      '\\d+ items',
      '\\d cs_vis.tags',
      '\\d+ recent',
      '\\d+ peek',
      '\\sv peek',
      '\\dv',
      '\\di',
      '\\ds',
      '\\dm',
      '\\dT',
      '\\df',
      '\\dn+',
      '\\dt+',
      '\\l',
      '\\du',
      '\\dx',
      '\\dp',
      '\\dD',
      '\\dE',
      '\\z items',
    ];
    for (const cmd of commands) {
      const r = await psql(cmd);
      const out = `${r.stdout}${r.stderr}`;
      expect(out, cmd).not.toMatch(HIDDEN);
      // psql stops a describe at the first refused query.
      expect(r.stderr, `${cmd}: ${r.stderr}`).not.toMatch(/ERROR/);
      if (cmd === '\\d items') {
        expect(out).toMatch(/id +\| integer/);
        expect(out).toMatch(/"items_pkey" PRIMARY KEY, btree \(id\)/);
        expect(out).not.toMatch(/Foreign-key/);
      }
    }
    // Naming a hidden object gets what naming a missing one gets (psql echoes the name it was given).
    for (const [hidden, missing] of [
      ['\\d cs_zz_hidden.zz_hidden_tbl', '\\d cs_zz_hidden.zz_nope_tbl'],
      ['\\d zz_hidden_tbl', '\\d zz_nope_tbl'],
      ['\\df cs_zz_hidden.zz_hidden_fn', '\\df cs_zz_hidden.zz_nope_fn'],
      ['\\dT cs_zz_hidden.zz_hidden_tbl', '\\dT cs_zz_hidden.zz_nope_tbl'],
    ] as const) {
      const a = await psql(hidden);
      const b = await psql(missing);
      expect(`${a.stdout}${a.stderr}`.replace(/zz_hidden_(tbl|fn)/g, 'zz_nope_$1')).toBe(`${b.stdout}${b.stderr}`);
    }
  });
});

const JAR = '/usr/share/java/postgresql.jar';
const hasJava = existsSync(JAR) && spawnSync('javac', ['-version']).status === 0;
describe.skipIf(!hasJava)('pgJDBC DatabaseMetaData', () => {
  it("getTables, getColumns, getPrimaryKeys, getIndexInfo, getImportedKeys run and list only the role's objects", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-scoped-jdbc-'));
    try {
      const source = fileURLToPath(new URL('../fixtures/jdbc/ScopedMetadata.java', import.meta.url));
      execFileSync('javac', ['-encoding', 'UTF-8', '-cp', JAR, '-d', dir, source], { stdio: 'pipe' });
      const token = await tp.token({ role: 'scoped', sub: 'cs-jdbc' });
      // Asynchronously: the proxy runs in this process.
      const out = await new Promise<string>((resolve) => {
        execFile(
          'java',
          ['-Xshare:auto', '-XX:TieredStopAtLevel=1', '-cp', `${dir}:${JAR}`, 'ScopedMetadata'],
          {
            env: {
              ...process.env,
              SCOPED_JDBC_URL: `jdbc:postgresql://127.0.0.1:${tp.proxy.port}/app?sslmode=disable`,
              SCOPED_JDBC_USER: 'alice',
              SCOPED_JDBC_PASSWORD: token,
            },
            timeout: 60_000,
            encoding: 'utf8',
          },
          (_err, stdout, stderr) => resolve(`${stdout}${stderr}`),
        );
      });
      expect(out).not.toMatch(HIDDEN);
      for (const call of ['getTables', 'getColumns', 'getPrimaryKeys', 'getIndexInfo', 'getImportedKeys', 'getSchemas'])
        expect(out, out).toMatch(new RegExp(`^${call} OK `, 'm'));
      const tables = out.split('\n').filter((l) => l.startsWith('getTables ROW'));
      expect(tables.map((l) => /TABLE_NAME=([^ ]+)/.exec(l)?.[1]).sort()).toEqual(
        expect.arrayContaining(['items', 'notes', 'recent', 'tags']),
      );
      const columns = out.split('\n').filter((l) => l.startsWith('getColumns ROW') && / TABLE_NAME=items( |$)/.test(l));
      expect(columns.map((l) => /COLUMN_NAME=([^ ]+)/.exec(l)?.[1])).toEqual(['id', 'name', 'ref', 'computed']);
      expect(out).toMatch(/^getPrimaryKeys ROW .*column_name=id \| key_seq=1 \| pk_name=items_pkey$/m);
      // The index on the denied column is not listed.
      expect(out.split('\n').filter((l) => l.startsWith('getIndexInfo ROW'))).toHaveLength(1);
      expect(out).toMatch(/^getImportedKeys OK 0$/m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
