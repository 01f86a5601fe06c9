// policy/scope.ts: the pgwarden.scope / pgwarden.session / SHOW pgwarden.<name> rewrite lists only the role's scope, quotes every name as a literal, and refuses what it cannot rewrite exactly.
import { beforeAll, describe, expect, it } from 'vitest';
import { evaluate } from '../../../policy/evaluate.ts';
import { initParser, parseStatements } from '../../../policy/parser.ts';
import { rewriteScope, scopeRows } from '../../../policy/scope.ts';
import { refusalReason } from '../../../policy/reasons.ts';
import type { AnyNode } from '../../../policy/analyze.ts';
import type { CatalogRelation, CatalogSnapshot } from '../../../policy/types.ts';
import { CATALOG, makeRole, sessionFor } from '../../fixtures/catalog.ts';

beforeAll(async () => {
  await initParser();
});

const role = makeRole();

/** Every string constant of a parse tree, in order. */
function strings(sql: string): string[] {
  const parsed = parseStatements(sql);
  if (!parsed.ok) throw new Error(parsed.message);
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v !== null && typeof v === 'object') {
      const n = v as AnyNode;
      if (n.A_Const?.sval !== undefined) out.push(n.A_Const.sval.sval as string);
      Object.values(n).forEach(walk);
    }
  };
  walk(parsed.stmts);
  return out;
}

function rewritten(sql: string, catalog: CatalogSnapshot = CATALOG, r = role): string {
  const out = rewriteScope(sql, r, catalog);
  if (out === undefined || !out.ok) throw new Error(`not rewritten: ${JSON.stringify(out)}`);
  return out.sql;
}

describe('pgwarden.scope rows', () => {
  it("lists the role's existing relations and columns, without denied columns, relations outside it or patterns with no relation", () => {
    const rows = scopeRows(role, CATALOG);
    const rels = new Set(rows.map((r) => `${r.schema}.${r.relation}`));
    expect(rels.has('public.orders')).toBe(true);
    expect(rels.has('public.secrets')).toBe(false);
    expect(rows.some((r) => r.relation === 'customers' && r.column === 'ssn')).toBe(false);
    expect(rows.some((r) => r.relation === 'customers' && r.column === 'email')).toBe(true);
    // Every listed relation is one the role's patterns name and the catalog holds.
    for (const r of rows) {
      expect(CATALOG.relations.has(`${r.schema}.${r.relation}`)).toBe(true);
      expect(role.relations.some((p) => p.schema === r.schema && (p.name === '*' || p.name === r.relation))).toBe(true);
    }
    // schema.* lists the schema's relations from the catalog.
    const sales = [...CATALOG.relations.values()].filter((r) => r.schema === 'sales').map((r) => `sales.${r.name}`);
    expect(sales.length).toBeGreaterThan(0);
    for (const s of sales) expect(rels.has(s)).toBe(true);
  });
});

describe('rewriteScope', () => {
  it('leaves texts that do not name the virtual relations alone', () => {
    expect(rewriteScope('SELECT * FROM orders', role, CATALOG)).toBeUndefined();
    expect(rewriteScope("SELECT 'pgwarden.scope'", role, CATALOG)).toBeUndefined();
    expect(rewriteScope('SHOW pgwarden.jti', role, CATALOG)).toBeUndefined();
  });

  it('quotes names as literals: a relation or column name full of quotes comes back as exactly that string, with no statement added', () => {
    const evilRel = `x'); DROP TABLE orders; --`;
    const evilCol = `a'', ''b''); SELECT pg_sleep(1); --\\`;
    const rel: CatalogRelation = {
      schema: 'sales',
      name: evilRel,
      kind: 'r',
      columns: [
        { name: evilCol, type: 'integer' },
        { name: '"quoted"', type: 'text' },
      ],
    };
    const catalog: CatalogSnapshot = { ...CATALOG, relations: new Map([[`sales.${evilRel}`, rel]]) };
    const sql = rewritten('SELECT * FROM pgwarden.scope', catalog);
    const parsed = parseStatements(sql);
    expect(parsed.ok && parsed.stmts.length).toBe(1);
    expect(strings(sql)).toEqual(['sales', evilRel, evilCol, 'integer', 'sales', evilRel, '"quoted"', 'text']);
    // And the decision on the rewritten text allows it, reading no relation.
    const d = evaluate('SELECT * FROM pgwarden.scope', 'simple', sessionFor(role), catalog);
    expect(d.allow).toBe(true);
    if (d.allow) expect(d.statements.flatMap((s) => s.relations)).toEqual([]);
  });

  it('an empty scope is a typed subquery with no row', () => {
    const sql = rewritten('SELECT * FROM pgwarden.scope', { ...CATALOG, relations: new Map() });
    expect(sql).toMatch(/NULL::text AS table_schema.*NULL::boolean AS writable WHERE false/);
  });

  it('rewrites inside EXPLAIN, PREPARE, DECLARE, COPY (query), CTEs and subqueries', () => {
    for (const sql of [
      'EXPLAIN SELECT * FROM pgwarden.scope',
      'PREPARE p AS SELECT * FROM pgwarden.session',
      'DECLARE c CURSOR FOR SELECT * FROM pgwarden.scope',
      'COPY (SELECT * FROM pgwarden.scope) TO STDOUT',
      'WITH x AS (SELECT * FROM pgwarden.scope) SELECT * FROM x',
      'SELECT * FROM orders WHERE EXISTS (SELECT 1 FROM pgwarden.scope)',
    ]) {
      expect(rewritten(sql), sql).toMatch(/VALUES|current_setting/);
    }
  });

  it('keeps aliases, column aliases, comments and quoting around the name, and rewrites every reference', () => {
    expect(rewritten('SELECT s.table_name FROM pgwarden.scope s')).toMatch(
      /^SELECT s\.table_name FROM \(SELECT \* FROM \(VALUES .*\)\) s$/,
    );
    expect(rewritten('SELECT a FROM "pgwarden"/* x */."scope" AS t(a)')).toMatch(/\)\) AS t\(a\)$/);
    const two = rewritten('SELECT * FROM pgwarden.scope JOIN pgwarden.session ON true; SELECT 1 FROM PGWARDEN.SESSION');
    expect(two).not.toMatch(/pgwarden\.(scope|session)\b(?!')/i);
    expect(parseStatements(two).ok).toBe(true);
  });

  it('counts byte offsets: multi-byte text before the reference and in names', () => {
    const sql = rewritten(
      "SELECT 'héllo ✓' AS \"naïve\", s.table_name FROM pgwarden.scope s WHERE s.column_name <> 'ü'",
    );
    expect(sql.startsWith('SELECT \'héllo ✓\' AS "naïve", s.table_name FROM (SELECT * FROM (VALUES ')).toBe(true);
    expect(sql.endsWith(")) s WHERE s.column_name <> 'ü'")).toBe(true);
  });

  it('answers SHOW pgwarden.<name> for the session columns, from the role as the policy has it now', () => {
    expect(rewritten('SHOW pgwarden.max_rows', CATALOG, makeRole({ maxRows: 42 }))).toBe(
      'SELECT (42::bigint)::text AS "pgwarden.max_rows"',
    );
    expect(rewritten('SHOW pgwarden.role;', CATALOG, makeRole({ name: "o'brien" }))).toBe(
      "SELECT ('o''brien'::text)::text AS \"pgwarden.role\";",
    );
    expect(rewritten('SELECT 1; SHOW pgwarden.sub')).toBe(
      'SELECT 1; SELECT (current_setting(\'pgwarden.sub\'))::text AS "pgwarden.sub"',
    );
  });

  it('refuses references it cannot rewrite exactly, and leaves other positions to the policy (which refuses them)', () => {
    expect(rewriteScope('SELECT * FROM ONLY pgwarden.scope', role, CATALOG)).toMatchObject({ ok: false });
    expect(rewriteScope('SELECT * FROM U&"\\0070gwarden".scope, pgwarden.session', role, CATALOG)).toMatchObject({
      ok: false,
    });
    // DDL keeps the name (a view or SQL function would keep a copy of this role's scope for whoever reads it).
    const ddl = [
      'CREATE VIEW v AS SELECT * FROM pgwarden.scope',
      'CREATE TABLE t AS SELECT * FROM pgwarden.scope',
      'EXPLAIN ANALYZE CREATE TABLE t AS SELECT * FROM pgwarden.scope',
      'CREATE FUNCTION f() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM pgwarden.scope; END',
    ];
    for (const sql of [
      'INSERT INTO pgwarden.scope VALUES (1)',
      'DELETE FROM orders USING pgwarden.scope',
      'LOCK pgwarden.scope',
      'SELECT * FROM app.pgwarden.scope',
      ...ddl,
    ]) {
      expect(rewriteScope(sql, role, CATALOG), sql).toBeUndefined();
      expect(evaluate(sql, 'simple', sessionFor(role), CATALOG).allow, sql).toBe(false);
    }
    const d = evaluate('SELECT * FROM ONLY pgwarden.scope', 'simple', sessionFor(role), CATALOG);
    expect(d.allow === false && [d.sqlstate, d.reason]).toEqual(['0A000', 'scope_unrewritable']);
  });

  it('a scope too large to list in one statement is refused as a limit, not sent', () => {
    const columns = Array.from({ length: 12_000 }, (_, i) => ({
      name: `column_number_${i}`,
      type: 'character varying(200)',
    }));
    const rel: CatalogRelation = { schema: 'sales', name: 'wide', kind: 'r', columns };
    const d = evaluate('SELECT count(*) FROM pgwarden.scope', 'simple', sessionFor(role), {
      ...CATALOG,
      relations: new Map([['sales.wide', rel]]),
    });
    expect(d.allow === false && [d.sqlstate, d.reason, refusalReason(d)]).toEqual([
      '0A000',
      'statement_too_large',
      'limit_reached',
    ]);
  });

  it('is decided on the rewritten text: a join with a relation outside the role is refused, the row cap applies', () => {
    const denied = evaluate(
      'SELECT * FROM pgwarden.scope JOIN public.secrets ON true',
      'simple',
      sessionFor(role),
      CATALOG,
    );
    expect(denied.allow === false && denied.reason).toBe('relation_not_allowed');
    // Beside a relation the role reads, the role's own cap.
    const capped = evaluate(
      'SELECT * FROM pgwarden.scope, public.orders',
      'simple',
      sessionFor(makeRole({ maxRows: 5 })),
      CATALOG,
    );
    expect(capped.allow && [capped.rewrittenSql?.match(/LIMIT (\d+)$/)?.[1], capped.rowCap?.maxRows]).toEqual(['6', 5]);
  });

  it('lists the whole scope in one statement whatever maxRows is, and no more than that without a relation or function', () => {
    const small = makeRole({ maxRows: 5, onRowCap: 'error' });
    const listed = scopeRows(small, CATALOG).length;
    expect(listed).toBeGreaterThan(5);
    const cap = (sql: string) => {
      const d = evaluate(sql, 'simple', sessionFor(small), CATALOG);
      if (!d.allow) throw new Error(`${sql}: refused (${d.message})`);
      return [d.rewrittenSql?.match(/LIMIT (\d+)$/)?.[1], d.rowCap];
    };
    const whole = [String(listed + 1), { maxRows: listed, onRowCap: 'error' }];
    const role5 = ['6', { maxRows: 5, onRowCap: 'error' }];
    expect(cap('SELECT * FROM pgwarden.scope')).toEqual(whole);
    expect(cap("SELECT column_name || ' ' || data_type FROM pgwarden.scope WHERE table_name <> 'x'")).toEqual(whole);
    // A self-join gets no further than the listing's size.
    expect(cap('SELECT * FROM pgwarden.scope a, pgwarden.scope b')).toEqual(whole);
    // A function beside it (a set-returning one makes rows of its own) or a relation: the role's cap.
    expect(cap('SELECT * FROM pgwarden.scope, generate_series(1, 1000000) g')).toEqual(role5);
    expect(cap('SELECT * FROM pgwarden.scope, public.orders')).toEqual(role5);
    // A role whose scope fits in maxRows keeps its cap.
    const roomy = makeRole({ maxRows: listed + 10 });
    const d = evaluate('SELECT * FROM pgwarden.scope', 'simple', sessionFor(roomy), CATALOG);
    expect(d.allow && d.rowCap?.maxRows).toBe(listed + 10);
  });
});
