// Scoped DDL for types, domains and schemas (create_type, alter_type, create_schema): pgwarden's own decisions and the queries restated for analysis.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser, parseStatements } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { utilityQueries } from '../../../policy/ddl.ts';
import { planServerAnalysis } from '../../../policy/server-plan.ts';
import { CATALOG, ROLES, makeRole, sessionFor } from '../../fixtures/catalog.ts';
import type { RolePolicy } from '../../../policy/types.ts';
import { decisionFamilies } from '../../helpers/decision-cases.ts';
import { compilePolicy, parsePolicyText } from '../../../policy/load.ts';

const writer = ROLES.writer;
const typer: RolePolicy = makeRole({
  ...writer,
  name: 'typer',
  relations: [...writer.relations, { schema: 'scratch', name: '*' }],
  ddl: {
    kinds: ['create_table', 'drop', 'create_type', 'alter_type', 'create_schema'],
    schemas: ['scratch'],
    temporary: true,
  },
});
/** Every schema of its search_path is one it may change: unqualified names are fine. */
const typerPath: RolePolicy = { ...typer, name: 'typerPath', searchPath: ['scratch'] };
/** The DDL kinds that existed before: none of them reaches types or schemas. */
const tables: RolePolicy = {
  ...typer,
  name: 'tables',
  ddl: { kinds: ['create_table', 'alter_table', 'drop', 'comment'], schemas: ['scratch'], temporary: true },
};
/** May make types but not drop anything. */
const noDrop: RolePolicy = {
  ...typer,
  name: 'noDrop',
  ddl: { kinds: ['create_type', 'create_schema'], schemas: ['scratch'], temporary: false },
};
/** Names pg_catalog after its own schema: an unqualified type name is looked up in scratch first. */
const catalogLast: RolePolicy = { ...typer, name: 'catalogLast', searchPath: ['scratch', 'pg_catalog'] };
const roles = { typer, typerPath, tables, noDrop, catalogLast };
type Case = [keyof typeof roles, string, 'allow' | 'deny', string?];

const families: Record<string, Case[]> = {
  'types in allowed schemas': [
    ['typer', "CREATE TYPE scratch.prepenum AS ENUM ('foo', 'bar', 'baz')", 'allow', 'roles.typer.ddl'],
    ['typer', `create type scratch."a-b" as enum ('a', 'b')`, 'allow'],
    ['typer', `create type scratch."€" as enum ('€')`, 'allow'],
    ['typer', 'CREATE TYPE scratch.t AS (a int, b text, c numeric(10, 2)[])', 'allow'],
    ['typer', 'CREATE TYPE scratch.t AS (a int, b text COLLATE "C")', 'allow'],
    ['typer', 'CREATE TYPE scratch.t AS ()', 'allow'],
    ['typer', 'CREATE DOMAIN scratch.d AS int DEFAULT 1 NOT NULL CHECK (VALUE > 0)', 'allow'],
    ['typer', "CREATE DOMAIN scratch.d AS text CHECK (length(VALUE) < 10) CHECK (VALUE <> 'x')", 'allow'],
    ['typer', 'CREATE TYPE scratch.r AS RANGE (subtype = int4)', 'allow'],
    ['typer', 'CREATE TYPE scratch.r AS RANGE (subtype = float8)', 'allow'],
    ['typer', "ALTER TYPE scratch.e ADD VALUE IF NOT EXISTS 'x' BEFORE 'y'", 'allow'],
    ['typer', "ALTER TYPE scratch.e RENAME VALUE 'a' TO 'b'", 'allow'],
    ['typer', 'ALTER TYPE scratch.e RENAME TO f', 'allow'],
    ['typer', 'ALTER DOMAIN scratch.d RENAME TO f', 'allow'],
    ['typer', 'DROP TYPE scratch.e, scratch.t', 'allow'],
    ['typer', 'DROP TYPE IF EXISTS scratch.e', 'allow'],
    ['typer', 'DROP DOMAIN scratch.d', 'allow'],
    ['typer', "CREATE TYPE app.scratch.e AS ENUM ('a')", 'allow'],
    ['typerPath', "CREATE TYPE e AS ENUM ('a')", 'allow'],
    ['typerPath', 'CREATE TYPE t AS (a int)', 'allow'],
    ['typerPath', 'DROP TYPE e', 'allow'],
    ['typerPath', `create type "a-b" as enum ('a')`, 'allow'],
  ],
  'types elsewhere': [
    ['typer', "CREATE TYPE public.e AS ENUM ('a')", 'deny', 'ddl_denied'],
    // Unqualified: made in the first schema of the search_path (public), which the role may not change.
    ['typer', "CREATE TYPE e AS ENUM ('a')", 'deny', 'ddl_denied'],
    ['typer', 'CREATE TYPE t AS (a int)', 'deny', 'ddl_denied'],
    ['typer', 'CREATE DOMAIN d AS int', 'deny', 'ddl_denied'],
    ['typer', `CREATE TYPE "Scratch".e AS ENUM ('a')`, 'deny', 'ddl_denied'],
    ['typer', `CREATE TYPE "scratch.e" AS ENUM ('a')`, 'deny', 'ddl_denied'],
    ['typer', "CREATE TYPE pg_catalog.e AS ENUM ('a')", 'deny', 'ddl_denied'],
    ['typer', "CREATE TYPE other.scratch.e AS ENUM ('a')", 'deny', 'ddl_denied'],
    ['typer', 'CREATE TYPE public.t AS (a int)', 'deny', 'ddl_denied'],
    ['typer', 'CREATE DOMAIN public.d AS int', 'deny', 'ddl_denied'],
    ['typer', 'CREATE TYPE public.r AS RANGE (subtype = int4)', 'deny', 'ddl_denied'],
    ['typer', "ALTER TYPE public.e ADD VALUE 'x'", 'deny', 'ddl_denied'],
    ['typer', "ALTER TYPE e ADD VALUE 'x'", 'deny', 'ddl_denied'],
    ['typer', 'ALTER TYPE public.e RENAME TO f', 'deny', 'ddl_denied'],
    ['typer', 'DROP TYPE public.e', 'deny', 'ddl_denied'],
    ['typer', 'DROP TYPE scratch.e, public.f', 'deny', 'ddl_denied'],
    ['typer', 'DROP TYPE e', 'deny', 'ddl_denied'],
    ['typer', 'DROP DOMAIN public.d', 'deny', 'ddl_denied'],
  ],
  'what a type definition may use': [
    // A column of a relation's row type reads that relation's shape: the role may not read public.secrets.
    ['typer', 'CREATE TYPE scratch.t AS (a secrets)', 'deny', 'relation_not_allowed'],
    ['typer', 'CREATE TYPE scratch.t AS (a int, b public.secrets[])', 'deny', 'relation_not_allowed'],
    ['typer', 'CREATE TYPE scratch.t AS (a public.nosuchtype)', 'deny'],
    ['typer', 'CREATE DOMAIN scratch.d AS public.secrets', 'deny', 'relation_not_allowed'],
    [
      'typer',
      'CREATE DOMAIN scratch.d AS int CHECK (VALUE > (SELECT count(*) FROM secrets))',
      'deny',
      'relation_not_allowed',
    ],
    ['typer', 'CREATE DOMAIN scratch.d AS int DEFAULT (SELECT max(id) FROM secrets)', 'deny', 'relation_not_allowed'],
    // What a domain calls runs later, in other sessions' statements.
    ['typer', 'CREATE DOMAIN scratch.d AS int CHECK (pg_sleep(1) IS NOT NULL)', 'deny', 'function_denied'],
    ['typer', "CREATE DOMAIN scratch.d AS text DEFAULT pg_read_file('/etc/passwd')", 'deny', 'function_denied'],
    ['typer', 'CREATE DOMAIN scratch.d AS int CONSTRAINT c UNIQUE', 'deny', 'statement_kind_denied'],
    [
      'typer',
      'CREATE TYPE scratch.r AS RANGE (subtype = int4, subtype_diff = scratch.f)',
      'deny',
      'statement_kind_denied',
    ],
    [
      'typer',
      'CREATE TYPE scratch.r AS RANGE (subtype = int4, canonical = scratch.f)',
      'deny',
      'statement_kind_denied',
    ],
    [
      'typer',
      'CREATE TYPE scratch.r AS RANGE (subtype = int4, subtype_opclass = scratch.o)',
      'deny',
      'statement_kind_denied',
    ],
    ['typer', 'CREATE TYPE scratch.r AS RANGE (subtype = scratch.e)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE TYPE scratch.r AS RANGE (subtype = int4[])', 'deny', 'statement_kind_denied'],
    ['catalogLast', 'CREATE TYPE scratch.r AS RANGE (subtype = int4)', 'deny', 'statement_kind_denied'],
    ['catalogLast', 'CREATE TYPE scratch.r AS RANGE (subtype = pg_catalog.int4)', 'allow'],
    ['catalogLast', "CREATE TYPE scratch.int4 AS ENUM ('a')", 'deny', 'statement_kind_denied'],
    ['catalogLast', 'CREATE TYPE scratch.text AS (a int)', 'deny', 'statement_kind_denied'],
    ['catalogLast', 'CREATE DOMAIN scratch.bool AS int', 'deny', 'statement_kind_denied'],
    ['catalogLast', 'ALTER TYPE scratch.e RENAME TO numeric', 'deny', 'statement_kind_denied'],
    ['catalogLast', "CREATE TYPE scratch.mood AS ENUM ('a')", 'allow'],
    ['typer', "CREATE TYPE scratch.int4 AS ENUM ('a')", 'allow'],
    // Base and shell types name input/output functions: refused whatever the policy says.
    ['typer', 'CREATE TYPE scratch.b (input = scratch.f_in, output = scratch.f_out)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE TYPE scratch.b', 'deny', 'statement_kind_denied'],
    ['typer', 'ALTER DOMAIN scratch.d SET DEFAULT 1', 'deny', 'statement_kind_denied'],
    ['typer', 'ALTER DOMAIN scratch.d ADD CONSTRAINT c CHECK (VALUE > 0)', 'deny', 'statement_kind_denied'],
    ['typer', 'ALTER TYPE scratch.t ADD ATTRIBUTE x int', 'deny', 'statement_kind_denied'],
    ['typer', 'ALTER TYPE scratch.t RENAME ATTRIBUTE a TO b', 'deny', 'statement_kind_denied'],
    ['typer', 'ALTER TYPE scratch.e OWNER TO postgres', 'deny'],
    ['typer', 'ALTER TYPE scratch.e SET SCHEMA public', 'deny'],
    ['typer', 'DROP TYPE scratch.e CASCADE', 'deny', 'statement_kind_denied'],
    ['typer', 'DROP DOMAIN scratch.d CASCADE', 'deny', 'statement_kind_denied'],
    ['typer', 'COMMENT ON TYPE scratch.e IS $$x$$', 'deny'],
  ],
  // PostgreSQL looks up a bare type name in the session's pg_temp before pg_catalog and the search path; pgwarden's
  // analysis never looks there, so a temporary type or table named like a known type would be judged as the other.
  'types that would stand in for known ones': [
    ['typer', "CREATE TYPE pg_temp.int4 AS ENUM ('a')", 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE DOMAIN pg_temp.text AS int CHECK (VALUE > 0)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE TYPE pg_temp.point AS (a int)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE TYPE pg_temp.numrange AS RANGE (subtype = int4)', 'deny', 'statement_kind_denied'],
    // The multirange of pg_temp.num is pg_temp.num_multirange, of pg_temp.int8range int8multirange (both refused).
    ['typer', 'CREATE TYPE pg_temp.int8range AS RANGE (subtype = int4)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE TEMP TABLE numeric (a int)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE TABLE pg_temp.bool (a int)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE TEMP TABLE regclass AS SELECT 1 AS a', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE TEMP TABLE _int4 (a int)', 'deny', 'statement_kind_denied'],
    ['typer', 'ALTER TYPE pg_temp.e RENAME TO bool', 'deny', 'statement_kind_denied'],
    ['tables', 'ALTER TABLE pg_temp.t RENAME TO int8', 'deny', 'statement_kind_denied'],
    ['tables', 'ALTER TABLE pg_temp.t RENAME COLUMN a TO int8', 'allow'],
    // A sequence has no row type.
    ['tables', 'ALTER SEQUENCE pg_temp.s RENAME TO int8', 'allow'],
    ['typer', "CREATE TYPE pg_temp.mood AS ENUM ('a')", 'allow'],
    ['typer', 'CREATE TEMP TABLE scratchpad (a int)', 'allow'],
    // A table's row type: pgwarden judges `NULL::orders` as a read of public.orders, never less strictly.
    ['typer', 'CREATE TEMP TABLE orders (a int)', 'allow'],
    // Off the search path, a type is found by its qualified name only.
    ['typer', "CREATE TYPE scratch.int4 AS ENUM ('a')", 'allow'],
    ['typer', 'CREATE TABLE scratch.numeric (a int)', 'allow'],
    // In a schema before pg_catalog on the path: a table's row type stands in too.
    ['catalogLast', 'CREATE TABLE scratch.numeric (a int)', 'deny', 'statement_kind_denied'],
  ],
  'kinds are separate switches': [
    ['tables', "CREATE TYPE scratch.e AS ENUM ('a')", 'deny', 'ddl_denied'],
    ['tables', 'DROP TYPE scratch.e', 'deny', 'ddl_denied'],
    ['tables', 'DROP SCHEMA scratch', 'deny', 'ddl_denied'],
    ['tables', 'CREATE SCHEMA scratch', 'deny', 'ddl_denied'],
    ['tables', 'ALTER TYPE scratch.e RENAME TO f', 'deny', 'ddl_denied'],
    ['noDrop', "CREATE TYPE scratch.e AS ENUM ('a')", 'allow'],
    ['noDrop', "ALTER TYPE scratch.e ADD VALUE 'b'", 'deny', 'ddl_denied'],
    ['noDrop', 'DROP TYPE scratch.e', 'deny', 'ddl_denied'],
    ['noDrop', 'DROP SCHEMA scratch', 'deny', 'ddl_denied'],
  ],
  schemas: [
    ['typer', 'CREATE SCHEMA scratch', 'allow', 'roles.typer.ddl'],
    ['typer', 'create schema if not exists scratch', 'allow'],
    ['typer', 'CREATE SCHEMA SCRATCH', 'allow'],
    ['typer', 'DROP SCHEMA scratch', 'allow'],
    ['typer', 'DROP SCHEMA IF EXISTS scratch', 'allow'],
    ['typer', 'CREATE SCHEMA public', 'deny', 'ddl_denied'],
    ['typer', 'CREATE SCHEMA other', 'deny', 'ddl_denied'],
    ['typer', 'CREATE SCHEMA "Scratch"', 'deny', 'ddl_denied'],
    ['typer', 'CREATE SCHEMA pg_temp', 'deny', 'ddl_denied'],
    ['typer', 'CREATE SCHEMA scratch AUTHORIZATION postgres', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE SCHEMA AUTHORIZATION scratch', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE SCHEMA IF NOT EXISTS AUTHORIZATION scratch', 'deny', 'statement_kind_denied'],
    // Elements are refused, even ones a standalone statement may run (they would be decided without their schema).
    ['typer', 'CREATE SCHEMA scratch CREATE TABLE t (a int)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE SCHEMA scratch CREATE TABLE public.t (a int)', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE SCHEMA scratch CREATE VIEW v AS SELECT * FROM public.secrets', 'deny', 'statement_kind_denied'],
    ['typer', 'CREATE SCHEMA scratch GRANT ALL ON SCHEMA scratch TO PUBLIC', 'deny', 'statement_kind_denied'],
    ['typer', 'DROP SCHEMA public', 'deny', 'ddl_denied'],
    ['typer', 'DROP SCHEMA scratch, public', 'deny', 'ddl_denied'],
    ['typer', 'DROP SCHEMA pg_catalog', 'deny', 'ddl_denied'],
    // CASCADE would drop what depends on its objects in other schemas (a view, a column of one of its types).
    ['typer', 'DROP SCHEMA scratch CASCADE', 'deny', 'statement_kind_denied'],
    ['typer', 'ALTER SCHEMA scratch RENAME TO other', 'deny'],
    ['typer', 'ALTER SCHEMA scratch OWNER TO postgres', 'deny'],
  ],
};

beforeAll(async () => {
  await initParser();
});

decisionFamilies(families, roles, CATALOG);

describe('restated queries', () => {
  const body = (sql: string) => {
    const p = parseStatements(sql);
    if (!p.ok) throw new Error(p.message);
    const n = p.stmts[0]?.stmt as unknown as Record<string, Record<string, unknown>>;
    const kind = Object.keys(n)[0] ?? '';
    return utilityQueries(kind, n[kind] ?? {});
  };
  it("a domain's DEFAULT and CHECK are read over one column named value, of the base type", () => {
    expect(body('CREATE DOMAIN scratch.d AS "text" DEFAULT upper(\'x\') CHECK (length(VALUE) > 2)')).toEqual({
      ok: true,
      queries: [
        {
          text: `SELECT (CAST(upper('x') AS "text")), (CAST(length(value) > 2 AS boolean)) FROM (SELECT CAST(NULL AS "text") AS value) AS "pgwarden new domain"`,
        },
      ],
    });
  });
  it("a composite type's attribute types and a range's subtype are judged as new columns", () => {
    expect(body('CREATE TYPE scratch.t AS (a int, b "numeric")')).toEqual({
      ok: true,
      queries: [{ text: 'SELECT  FROM (SELECT NULL::int AS a, CAST(NULL AS "numeric") AS b) AS t' }],
    });
    expect(body('CREATE TYPE scratch.r AS RANGE (subtype = int4)')).toEqual({
      ok: true,
      queries: [{ text: 'SELECT  FROM (SELECT CAST(NULL AS "int4") AS subtype) AS "pgwarden new range"' }],
    });
  });
  it('the server analyses what a domain reads; an enum needs nothing', () => {
    const plan = planServerAnalysis(
      "CREATE TYPE scratch.e AS ENUM ('a'); CREATE DOMAIN scratch.d AS int CHECK (VALUE > 0)",
      [],
    );
    expect(plan.ok && plan.texts.map((t) => [t.kind, t.text])).toEqual([
      [
        'CreateDomainStmt',
        'SELECT (CAST(value > 0 AS boolean)) FROM (SELECT NULL::int AS value) AS "pgwarden new domain"',
      ],
    ]);
  });
});

describe('an unknown relation where the role may create one', () => {
  const local: RolePolicy = { ...typerPath, name: 'local', ddl: { ...typer.ddl!, temporary: false } };
  const deny = (role: RolePolicy, sql: string, view: Partial<ReturnType<typeof sessionFor>> = {}) => {
    const d = evaluate(sql, 'simple', { ...sessionFor(role), ...view }, CATALOG);
    if (d.allow) throw new Error(`allowed: ${sql}`);
    return d;
  };
  it('is refused as unresolved, carrying the 42P01 a fresh catalog read confirms (with its position)', () => {
    const d = deny(local, 'SELECT 1, x FROM  nosuch');
    expect([d.sqlstate, d.reason]).toEqual(['42501', 'unknown_relation']);
    expect(d.confirmAbsent).toEqual({
      message: 'relation "nosuch" does not exist',
      detail:
        'pgwarden read the catalog again: no relation nosuch is in a schema role "local" may create in (rule: roles.local.ddl.schemas)',
      position: 19,
    });
    // Counted in characters, as PostgreSQL does.
    expect(deny(local, "SELECT '€€', x FROM nosuch").confirmAbsent?.position).toBe(21);
  });
  it("without a position for COPY's and TRUNCATE's own table, as PostgreSQL opens them outside parse analysis", () => {
    const truncater: RolePolicy = {
      ...local,
      name: 'truncater',
      write: { ...local.write!, kinds: [...local.write!.kinds, 'truncate'] },
    };
    expect(deny(local, 'COPY nosuch TO STDOUT').confirmAbsent).toEqual({
      message: 'relation "nosuch" does not exist',
      detail: expect.any(String),
    });
    expect(deny(truncater, 'TRUNCATE nosuch').confirmAbsent).toEqual({
      message: 'relation "nosuch" does not exist',
      detail: expect.any(String),
    });
    expect(deny(local, 'COPY (SELECT * FROM nosuch) TO STDOUT').confirmAbsent?.position).toBe(21);
  });
  it('nor one a statement earlier in the same text may make', () => {
    const d = deny(local, 'CREATE TABLE nosuch (a int); SELECT * FROM nosuch');
    expect([d.reason, d.confirmAbsent]).toEqual(['unknown_relation', undefined]);
    expect(deny(local, 'SELECT 1; SELECT * FROM nosuch').confirmAbsent?.message).toBe(
      'relation "nosuch" does not exist',
    );
  });
  it("a name that may be one of the session's temporary relations is never confirmed absent", () => {
    expect(deny(typerPath, 'SELECT * FROM nosuch', { tempObjects: true }).confirmAbsent).toBeUndefined();
    expect(deny(typerPath, 'SELECT * FROM nosuch').confirmAbsent).toBeUndefined();
    expect(deny(typerPath, 'SELECT * FROM nosuch', { tempObjects: false }).confirmAbsent?.message).toBe(
      'relation "nosuch" does not exist',
    );
  });
  it('nor for a role that may only make the schema: it could not learn names there otherwise', () => {
    const schemer: RolePolicy = {
      ...local,
      name: 'schemer',
      relations: [{ schema: 'public', name: 'orders' }],
      ddl: { kinds: ['create_schema'], schemas: ['scratch'], temporary: false },
    };
    const d = deny(schemer, 'SELECT * FROM nosuch');
    expect([d.sqlstate, d.reason, d.confirmAbsent]).toEqual(['42501', 'relation_not_allowed', undefined]);
  });
  it("a name that could resolve outside the role's relations stays 42501 without a confirmation", () => {
    const mixed: RolePolicy = { ...local, name: 'mixed', searchPath: ['scratch', 'public'] };
    const d = deny(mixed, 'SELECT * FROM nosuch');
    expect([d.sqlstate, d.reason, d.confirmAbsent]).toEqual(['42501', 'relation_not_allowed', undefined]);
    expect(deny(typer, 'SELECT * FROM public.nosuch').confirmAbsent).toBeUndefined();
  });
});

describe('validation', () => {
  it('accepts the new kinds', () => {
    const r = parsePolicyText(
      JSON.stringify({
        roles: {
          m: {
            readOnly: false,
            relations: ['public.orders'],
            write: { statements: ['insert'], relations: ['public.orders'] },
            ddl: { kinds: ['create_type', 'alter_type', 'create_schema', 'drop'], schemas: ['scratch'] },
          },
        },
      }),
      'json',
      'p.json',
    );
    expect(r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`)).toEqual([]);
    if (!r.ok) return;
    expect(compilePolicy(r.doc, 1, 'x').roles.get('m')?.ddl?.kinds).toEqual([
      'create_type',
      'alter_type',
      'create_schema',
      'drop',
    ]);
  });
});
