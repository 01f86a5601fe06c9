// policy/catalog-scope.ts: catalog: scoped wraps every catalog relation a query names in its filter, guards OID→name calls and reg* casts, and refuses what it cannot filter.
import { beforeAll, describe, expect, it } from 'vitest';
import type { AnyNode } from '../../../policy/analyze.ts';
import { rewriteCatalog } from '../../../policy/catalog-scope.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { parsePolicyText } from '../../../policy/load.ts';
import { canonicalTree, initParser, parseStatements } from '../../../policy/parser.ts';
import type { CatalogRelation, CatalogSnapshot } from '../../../policy/types.ts';
import { CATALOG, makeRole, sessionFor } from '../../fixtures/catalog.ts';

beforeAll(async () => {
  await initParser();
});

/** The test catalog with column lists for the catalog relations the wrappers rebuild (the fixture has none). */
function withColumns(): CatalogSnapshot {
  const relations = new Map(CATALOG.relations);
  const cols = (schema: string, name: string, columns: [string, string][]): void => {
    const rel: CatalogRelation = { schema, name, kind: 'r', columns: columns.map(([n, type]) => ({ name: n, type })) };
    relations.set(`${schema}.${name}`, rel);
  };
  cols('pg_catalog', 'pg_class', [
    ['oid', 'oid'],
    ['relname', 'name'],
    ['relnamespace', 'oid'],
    ['relkind', '"char"'],
    ['relacl', 'aclitem[]'],
  ]);
  cols('pg_catalog', 'pg_namespace', [
    ['oid', 'oid'],
    ['nspname', 'name'],
    ['nspacl', 'aclitem[]'],
  ]);
  cols('pg_catalog', 'pg_am', [
    ['oid', 'oid'],
    ['amname', 'name'],
    ['amhandler', 'regproc'],
  ]);
  return { ...CATALOG, relations };
}

const catalog = withColumns();
const scoped = makeRole({ name: 'scoped', catalog: 'scoped' });

function rewrite(sql: string, role = scoped) {
  return rewriteCatalog(sql, role, catalog);
}

/** The RangeSubselect nodes of a text's first statement, with their aliases. */
function subselectAliases(sql: string): string[] {
  const p = parseStatements(sql);
  if (!p.ok) throw new Error(p.message);
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) for (const x of v) walk(x);
    else if (v !== null && typeof v === 'object') {
      const o = v as AnyNode;
      if (o.RangeSubselect !== undefined) out.push(String(o.RangeSubselect.alias?.aliasname));
      for (const c of Object.values(o)) walk(c);
    }
  };
  walk(p.stmts[0]?.stmt);
  return out;
}

describe('rewriteCatalog', () => {
  it('leaves texts alone for other catalog modes and for texts that name no catalog', () => {
    expect(rewrite('SELECT relname FROM pg_class', makeRole({ catalog: 'none' }))).toBeUndefined();
    expect(rewrite('SELECT relname FROM pg_class', makeRole({ catalog: 'introspection' }))).toBeUndefined();
    expect(rewrite('SELECT id FROM orders')).toBeUndefined();
    expect(rewrite('SELECT id FROM orders WHERE note = $1')).toBeUndefined();
  });

  it('wraps qualified, unqualified, quoted and joined references, keeping the alias the client wrote', () => {
    const r = rewrite(
      'SELECT c.relname, n.nspname FROM pg_catalog.pg_class c JOIN "pg_catalog".pg_namespace AS n ON n.oid = c.relnamespace, pg_am',
    );
    expect(r?.ok).toBe(true);
    if (r?.ok !== true) return;
    expect(subselectAliases(r.sql)).toEqual(['c', 'n', 'pg_am']);
    // The ACL names roles; a reg* column is handed out as its OID.
    expect(r.sql).toMatch(/CAST\(NULL AS aclitem\[\]\) AS relacl/);
    expect(r.sql).toMatch(/CAST\(pgwarden_f\.amhandler AS pg_catalog\."?oid"?\) AS amhandler/);
    // The filter names the role's relations and nothing else of the catalog.
    expect(r.sql).toContain("'orders'");
    expect(r.sql).toContain("vn.nspname = 'sales'");
  });

  it('wraps references in subqueries of every clause, CTE bodies, LATERAL and set operations', () => {
    const r = rewrite(
      'WITH x AS (SELECT oid FROM pg_class) SELECT (SELECT count(*) FROM pg_namespace) FROM x, LATERAL (SELECT relname FROM pg_class) l WHERE EXISTS (SELECT 1 FROM pg_am) UNION SELECT 1 FROM pg_class',
    );
    expect(r?.ok).toBe(true);
    if (r?.ok !== true) return;
    expect(subselectAliases(r.sql).filter((a) => a.startsWith('pg_'))).toHaveLength(5);
  });

  it('guards OID→name functions and reg* casts: the argument becomes CASE WHEN <visible> THEN … END', () => {
    const r = rewrite('SELECT format_type(atttypid, NULL), 16400::regclass, pg_table_is_visible(1) FROM orders');
    expect(r?.ok).toBe(true);
    if (r?.ok !== true) return;
    const cases = r.sql.match(/CASE WHEN/g) ?? [];
    expect(cases).toHaveLength(3);
    // A string constant is looked up without an error.
    const c = rewrite("SELECT 'orders'::regclass");
    expect(c?.ok === true && c.sql).toMatch(/pg_catalog\.to_regclass\('orders'\)/);
  });

  it('refuses catalog relations without a filter, and every place a filter cannot stand', () => {
    const refused: [string, RegExp][] = [
      ['SELECT * FROM pg_catalog.pg_depend', /pg_depend has no scoped filter/],
      ['SELECT * FROM pg_catalog.pg_stat_user_tables', /no scoped filter/],
      ['SELECT * FROM pg_operator', /pg_operator has no scoped filter/],
      ['WITH pg_class AS (SELECT 1) SELECT * FROM pg_class', /WITH query is named like system catalog pg_class/],
      ['COPY pg_class TO STDOUT', /named where it cannot be filtered/],
      ['SELECT 1 FROM pg_class; COPY pg_catalog.pg_class TO STDOUT', /named where it cannot be filtered/],
      ['SELECT * FROM app.pg_catalog.pg_class', /three-part name/],
      ['SELECT relname FROM pg_class TABLESAMPLE SYSTEM (10)', /named where it cannot be filtered/],
      ['EXPLAIN SELECT * FROM pg_class', /EXPLAIN/],
      ['SELECT 10::regrole', /regrole/],
      ["SELECT '{1}'::_regclass", /regclass\[\]/],
      ['SELECT ARRAY[1]::regclass[]', /regclass\[\]/],
      ['CREATE VIEW v AS SELECT format_type(1, NULL)', /other than a query/],
      ['SELECT format_type(VARIADIC ARRAY[1])', /named or variadic/],
      ['SELECT app.pg_catalog.format_type(1, NULL)', /three-part name of format_type/],
      ['SELECT 16400::app.pg_catalog.regclass', /three-part name of type regclass/],
    ];
    for (const [sql, why] of refused) {
      const r = rewrite(sql);
      expect(r?.ok, sql).toBe(false);
      if (r?.ok === false) expect(r.why, sql).toMatch(why);
    }
  });

  it('parses back to exactly the tree it built', () => {
    const r = rewrite("SELECT c.relname FROM pg_class c WHERE c.relname ~ '^(orders)$' COLLATE pg_catalog.default");
    expect(r?.ok).toBe(true);
    if (r?.ok !== true) return;
    const again = parseStatements(r.sql);
    expect(again.ok).toBe(true);
    if (again.ok) expect(canonicalTree(again.stmts.map((s) => s.stmt))).toContain('pgwarden_f');
  });

  it("computes filters from the RolePolicy object it is given: two roles' filters differ", () => {
    const narrow = makeRole({ name: 'scoped', catalog: 'scoped', relations: [{ schema: 'public', name: 'orders' }] });
    const a = rewrite('SELECT relname FROM pg_class', scoped);
    const b = rewrite('SELECT relname FROM pg_class', narrow);
    expect(a?.ok === true && a.sql).toContain("vn.nspname = 'sales'");
    expect(b?.ok === true && b.sql).not.toContain("vn.nspname = 'sales'");
  });
});

describe("a scoped role's search path", () => {
  it('may not hold information_schema, whose views an unqualified name would reach unfiltered', () => {
    const text = (sp: string) =>
      `roles:\n  s:\n    relations: [public.orders]\n    catalog: scoped\n    searchPath: ${sp}\n`;
    const bad = parsePolicyText(text('[public, information_schema]'), 'yaml', 'p.yaml');
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.issues.map((i) => i.message).join('\n')).toMatch(/information_schema with catalog: scoped/);
    expect(parsePolicyText(text('[public]'), 'yaml', 'p.yaml').ok).toBe(true);
    const built = makeRole({ catalog: 'scoped', searchPath: ['public', 'information_schema'] });
    const r = rewrite('SELECT table_name FROM tables', built);
    expect(r?.ok).toBe(false);
  });
});

describe('evaluate under catalog: scoped', () => {
  it('allows the filtered text, refuses the same catalog reads for a role without catalog access', () => {
    const d = evaluate('SELECT relname FROM pg_class', 'simple', sessionFor(scoped), catalog);
    expect(d.allow).toBe(true);
    if (d.allow) {
      expect(d.rewrittenSql).toMatch(/pgwarden_f/);
      expect(d.catalogFiltered).toBe(true);
      expect(d.listsScope).toBe(true);
    }
    const none = evaluate('SELECT relname FROM pg_class', 'simple', sessionFor(makeRole()), catalog);
    expect(none.allow).toBe(false);
  });

  it("a text the client writes in the wrappers' own shape is wrapped again, never trusted", () => {
    const d = evaluate(
      'SELECT relname FROM (SELECT * FROM pg_catalog.pg_class pgwarden_f WHERE true) AS c',
      'simple',
      sessionFor(scoped),
      catalog,
    );
    expect(d.allow).toBe(true);
    if (d.allow) expect(d.rewrittenSql).toMatch(/SELECT \* FROM \(\s*WITH pgwarden_vis AS/);
  });

  it('an unfiltered catalog relation is refused with the catalog rule and a hint toward pgwarden.scope', () => {
    const d = evaluate('SELECT * FROM pg_depend', 'simple', sessionFor(scoped), catalog);
    expect(d.allow).toBe(false);
    if (!d.allow) {
      expect(d.sqlstate).toBe('42501');
      expect(d.reason).toBe('catalog_denied');
      expect(d.hint).toMatch(/pgwarden\.scope/);
    }
  });
});
