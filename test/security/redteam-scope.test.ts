// Red team of pgwarden.scope's statement rewrite and of the unknown-vs-forbidden refusals: no channel tells an out-of-scope relation that exists from one that does not, and no rewrite reaches a real relation.
import { writeFileSync } from 'node:fs';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canaryCount, connectAs, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

const POLICY = `roles:
  reader:
    readOnly: true
    relations: [public.orders, public.customers, public.rt_missing_in_scope]
    deniedColumns: { public.customers: [ssn] }
  other:
    readOnly: true
    relations: [public.secrets]
  dotted:
    readOnly: true
    relations: ['rt_a."b.c"']
    deniedColumns: { 'rt_a."b.c"': [secret] }
  dotted2:
    readOnly: true
    relations: ['"rt_a.b".*']
  maker:
    readOnly: false
    relations: [public.orders]
    write: { statements: [insert, update, delete], relations: [public.canary] }
    ddl: { kinds: [create_table, alter_table], schemas: [rt_ddl] }
`;

let tp: TestProxy;
let su: pg.Client;
beforeAll(async () => {
  su = await superClient();
  await su.query(
    'DROP SCHEMA IF EXISTS rt_hidden CASCADE; DROP SCHEMA IF EXISTS rt_ddl CASCADE; DROP SCHEMA IF EXISTS pgwarden CASCADE',
  );
  await su.query(
    'CREATE SCHEMA rt_hidden; CREATE TABLE rt_hidden.rt_tbl (id int); CREATE SEQUENCE rt_hidden.rt_seq; GRANT USAGE ON SCHEMA rt_hidden TO pgwarden; GRANT SELECT ON rt_hidden.rt_tbl TO pgwarden; GRANT USAGE, SELECT ON rt_hidden.rt_seq TO pgwarden',
  );
  await su.query(
    'CREATE SCHEMA rt_ddl; GRANT USAGE, CREATE ON SCHEMA rt_ddl TO pgwarden; CREATE TABLE rt_ddl.rt_pre (id int); GRANT SELECT ON rt_ddl.rt_pre TO pgwarden',
  );
  // A real pgwarden.scope holding a row the agent must never see.
  await su.query(`CREATE SCHEMA pgwarden; CREATE TABLE pgwarden.scope (table_schema text, table_name text, column_name text, data_type text, readable boolean, writable boolean);
    INSERT INTO pgwarden.scope VALUES ('public', 'secrets', 'REAL-TABLE-ROW', 'text', true, true);
    GRANT USAGE ON SCHEMA pgwarden TO pgwarden; GRANT SELECT ON pgwarden.scope TO pgwarden`);
  // Two relations whose schema and name joined by a dot read alike: rt_a."b.c" (in the role, a denied column) and "rt_a.b".c (not).
  await su.query(`DROP SCHEMA IF EXISTS rt_a CASCADE; DROP SCHEMA IF EXISTS "rt_a.b" CASCADE; CREATE SCHEMA rt_a; CREATE SCHEMA "rt_a.b";
    CREATE TABLE rt_a."b.c" (id int, secret text); INSERT INTO rt_a."b.c" VALUES (1, 'DOTTED-SECRET');
    CREATE TABLE "rt_a.b".c (x int, other text); INSERT INTO "rt_a.b".c VALUES (2, 'OTHER-TABLE-ROW');
    GRANT USAGE ON SCHEMA rt_a, "rt_a.b" TO pgwarden; GRANT SELECT ON rt_a."b.c", "rt_a.b".c TO pgwarden`);
  tp = await startTestProxy({ policy: POLICY });
  // Made after the proxy's catalog snapshot: the server knows it, pgwarden's snapshot does not.
  await su.query('CREATE TABLE rt_hidden.rt_late (id int); GRANT SELECT ON rt_hidden.rt_late TO pgwarden');
});
afterAll(async () => {
  await tp?.close();
  await su?.query(
    'DROP SCHEMA IF EXISTS rt_a CASCADE; DROP SCHEMA IF EXISTS "rt_a.b" CASCADE; DROP SCHEMA IF EXISTS rt_hidden CASCADE; DROP SCHEMA IF EXISTS rt_ddl CASCADE; DROP SCHEMA IF EXISTS pgwarden CASCADE',
  );
  await su?.end();
});

type Seen = { code?: string; message: string; detail?: string; hint?: string; position?: string };
let seq = 0;
async function refusal(c: pg.Client, text: string, protocol: 'simple' | 'parse'): Promise<Seen | 'ok'> {
  try {
    await c.query(protocol === 'parse' ? { name: `rt_${++seq}`, text } : text);
    return 'ok';
  } catch (err) {
    const e = err as Seen;
    return { code: e.code, message: e.message, detail: e.detail, hint: e.hint, position: e.position };
  } finally {
    await c.query('ROLLBACK').catch(() => {});
  }
}

// Each template names a relation X; the existing and the missing out-of-scope names must be refused alike.
const TEMPLATES = [
  'SELECT * FROM @R@',
  'TABLE @R@',
  'SELECT * FROM ONLY @R@',
  'SELECT * FROM @R@ TABLESAMPLE system (1)',
  'SELECT * FROM @R@ AS a(p, q, r, s, t, u, v, w)',
  'SELECT NULL::@R@',
  'SELECT NULL::@R@[]',
  'SELECT CAST(NULL AS @R@)',
  "SELECT '@R@'::regclass",
  "SELECT to_regclass('@R@')",
  "SELECT pg_relation_size('@R@')",
  "SELECT has_table_privilege('@R@', 'select')",
  "SELECT pg_table_is_visible('@R@'::regclass)",
  "SELECT nextval('@R@')",
  "SELECT currval('@R@'::regclass)",
  'COPY @R@ TO STDOUT',
  'COPY (SELECT * FROM @R@) TO STDOUT',
  'LOCK @R@',
  'TRUNCATE @R@',
  'DELETE FROM @R@',
  'INSERT INTO @R@ VALUES (1)',
  'UPDATE @R@ SET id = 1',
  'EXPLAIN SELECT * FROM @R@',
  'PREPARE rtp AS SELECT * FROM @R@',
  'WITH w AS (SELECT * FROM @R@) SELECT * FROM w',
  'SELECT (SELECT 1 FROM @R@ LIMIT 1)',
  'SELECT * FROM pgwarden.scope, @R@',
  'SELECT * FROM pgwarden.scope JOIN @R@ ON true',
  'SELECT * FROM pgwarden.scope s WHERE EXISTS (SELECT 1 FROM @R@)',
  'SELECT * FROM orders, LATERAL (SELECT * FROM @R@) l',
  'SELECT 1 UNION SELECT 1 FROM @R@',
  'SELECT @R@.id FROM @R@',
  'SELECT * FROM @R@ WHERE',
  'SELECT * FROM @R@ x1 JOIN @R@ x2 USING (nope)',
  'ANALYZE @R@',
  'VACUUM @R@',
  'SELECT * FROM @R@ FOR UPDATE',
  'SELECT @R@ FROM @R@',
  'DECLARE rtc CURSOR FOR SELECT * FROM @R@',
  'CREATE TABLE rt_ddl.n (LIKE @R@)',
  'CREATE TABLE rt_ddl.n () INHERITS (@R@)',
  'CREATE TABLE rt_ddl.n (id int REFERENCES @R@)',
  'CREATE TABLE @R@ (id int)',
  'CREATE INDEX ON @R@ (id)',
  "COMMENT ON TABLE @R@ IS 'x'",
  // Relation names as types, in places where pgwarden might leave them to the server's analysis.
  "SELECT * FROM jsonb_to_record('{}') AS j(a @R@)",
  'CREATE TABLE rt_ddl.n (c @R@)',
  'ALTER TABLE rt_ddl.rt_owned ADD COLUMN c @R@',
  'SELECT * FROM orders WHERE id = ANY (ARRAY[]::@R@[])',
  "SELECT jsonb_populate_record(NULL::@R@, '{}')",
  "SELECT * FROM json_populate_recordset(NULL::@R@, '[]')",
  'PREPARE rtq(@R@) AS SELECT 1',
  'SELECT 1 FROM orders WHERE (SELECT count(*) FROM @R@) > 0',
  'SELECT * FROM orders NATURAL JOIN @R@',
  'SELECT rt_nocol FROM @R@',
  'SELECT * FROM @R@ WHERE rt_nocol = 1',
  'INSERT INTO canary SELECT * FROM @R@',
  'COPY @R@ FROM STDIN',
  'COPY @R@ (rt_nocol) TO STDOUT',
  'CREATE TABLE rt_ddl.n AS SELECT * FROM @R@',
  'DROP TABLE @R@',
  'ALTER TABLE @R@ RENAME TO rt_new',
  'ALTER TABLE @R@ ADD COLUMN z int',
  'GRANT SELECT ON @R@ TO PUBLIC',
  'REINDEX TABLE @R@',
  'CLUSTER @R@',
  'REFRESH MATERIALIZED VIEW @R@',
  'EXPLAIN ANALYZE DELETE FROM @R@',
  'SELECT * FROM @R@ x WHERE x IS NULL',
  "CREATE FUNCTION rt_ddl.f(a @R@.id%TYPE) RETURNS int LANGUAGE sql AS 'SELECT 1'",
  'DROP FUNCTION IF EXISTS rt_ddl.f(@R@.id%TYPE)',
  'DROP TABLE IF EXISTS @R@',
  'COMMENT ON COLUMN @R@.id IS NULL',
  "SELECT * FROM orders, ROWS FROM (jsonb_populate_record(NULL::@R@, '{}')) r",
  'CREATE TABLE IF NOT EXISTS @R@ (id int)',
  "SELECT pg_get_viewdef('@R@')",
  "SELECT '@R@'::regclass::oid",
  'WITH d AS (DELETE FROM canary RETURNING *) SELECT * FROM d, @R@',
];
// [existing, missing] pairs, each outside the role's relations.
const PAIRS: [string, string][] = [
  ['public.secrets', 'public.rt_nothing_here'],
  ['secrets', 'rt_nothing_here'],
  ['rt_hidden.rt_tbl', 'rt_hidden.rt_nothing_here'],
  ['rt_hidden.rt_tbl', 'rt_no_schema.rt_tbl'],
  ['rt_hidden.rt_late', 'rt_hidden.rt_nothing_here'],
  ['rt_hidden.rt_seq', 'rt_hidden.rt_nothing_here'],
  ['pgwarden.scope_x', 'pgwarden.rt_nothing_here'],
  ['"public"."secrets"', '"public"."rt_nothing_here"'],
  // In the maker's ddl schema, made by the operator (not by the role) and outside its relations.
  ['rt_ddl.rt_pre', 'rt_ddl.rt_nothing_here'],
];

describe('an out-of-scope relation that exists is refused exactly like one that does not', () => {
  for (const role of ['reader', 'maker'] as const) {
    for (const protocol of ['simple', 'parse'] as const) {
      it(`${role}, ${protocol}: every channel gives the same code, message, detail and hint`, async () => {
        const c = await connectAs(tp, role);
        const before = await canaryCount();
        const diffs: string[] = [];
        try {
          for (const t of TEMPLATES) {
            for (const [there, absent] of PAIRS) {
              // In a schema the role may create in, existence is the server's to tell (CREATE of a taken name fails
              // with 42P07 as it does directly; ALTER of another owner's table with "must be owner"): not a pgwarden refusal.
              if (there.startsWith('rt_ddl.') && /^(CREATE TABLE (IF NOT EXISTS )?|ALTER TABLE )@R@/.test(t)) continue;
              const a = await refusal(c, t.replaceAll('@R@', there), protocol);
              const b = await refusal(c, t.replaceAll('@R@', absent), protocol);
              const norm = (s: Seen | 'ok', name: string) => {
                let out = JSON.stringify(s);
                for (const n of [
                  name.replaceAll('"', '\\"'),
                  name.replaceAll('"', ''),
                  ...name.replaceAll('"', '').split('.'),
                ])
                  out = out.replaceAll(n, '@R@');
                return out;
              };
              // Positions after the name shift with its length: compared apart from them (code, message, detail, hint).
              const na = norm(a, there);
              const nb = norm(b, absent);
              // Every refusal names its reason on DETAIL's first line and never carries the operator's hint.
              for (const r of [a, b])
                if (r !== 'ok' && !/^reason=[a-z_]+$/.test(r.detail?.split('\n')[0] ?? ''))
                  diffs.push(`no reason: ${t} ${JSON.stringify(r)}`);
              for (const r of [a, b])
                if (
                  r !== 'ok' &&
                  /classify it|functions\.allow|policy file|operator/i.test(`${r.hint ?? ''} ${r.detail ?? ''}`)
                )
                  diffs.push(`operator hint: ${t} ${JSON.stringify(r)}`);
              if (a === 'ok' || na.replace(/"position":"\d+"/, '') !== nb.replace(/"position":"\d+"/, ''))
                diffs.push(`${t} [${there} | ${absent}]\n  ${na}\n  ${nb}`);
            }
          }
        } finally {
          await c.end();
        }
        expect(await canaryCount()).toBe(before);
        expect(diffs).toEqual([]);
      }, 120_000);
    }
  }
});

/** Rows a query returns, or its error code. */
async function rows(
  c: pg.Client,
  text: string,
  protocol: 'simple' | 'parse' = 'simple',
  values?: unknown[],
): Promise<Record<string, unknown>[] | string> {
  try {
    const r = await c.query(protocol === 'parse' ? { name: `rr_${++seq}`, text, values } : text);
    const all = Array.isArray(r) ? r.flatMap((x) => x.rows) : r.rows;
    return all as Record<string, unknown>[];
  } catch (err) {
    return `ERR ${(err as Seen).code}: ${(err as Seen).message} [${(err as Seen).detail?.split('\n')[0]}]`;
  } finally {
    await c.query('ROLLBACK').catch(() => {});
  }
}

describe('pgwarden.scope rewrite: the text run means what was decided and never reaches a real relation', () => {
  it('forms the rewrite does not handle reach neither the real pgwarden.scope nor a relation outside the role', async () => {
    const c = await connectAs(tp, 'maker');
    const before = await canaryCount();
    try {
      const forms = [
        'SELECT * FROM (pgwarden.scope)',
        'SELECT * FROM ONLY pgwarden.scope',
        'SELECT * FROM pgwarden.scope TABLESAMPLE system (100)',
        'SELECT * FROM pgwarden.scope * ',
        'DELETE FROM canary USING pgwarden.scope WHERE true',
        "UPDATE canary SET note = note FROM pgwarden.scope s WHERE s.table_name = 'x'",
        'MERGE INTO canary USING pgwarden.scope s ON false WHEN NOT MATCHED THEN DO NOTHING',
        'SELECT NULL::pgwarden.scope',
        'SELECT (NULL::pgwarden.scope).*',
        'SELECT * FROM sample.pgwarden.scope',
        'TABLE pgwarden.scope',
        'COPY pgwarden.scope TO STDOUT',
        'SELECT pgwarden.scope.* FROM pgwarden.scope',
        'SELECT s FROM pgwarden.scope s',
        'SELECT to_jsonb(s) FROM pgwarden.scope s',
        'SELECT * FROM pgwarden.scope AS s(a, b, c, d, e, f, g)',
        'SELECT * FROM pgwarden . /* é */ scope',
        'SELECT \'ééé\' AS e, * FROM pgwarden/*ü*/./*ü*/"scope"',
        'SELECT * FROM "PGWARDEN"."SCOPE"',
        'SELECT * FROM PGWARDEN.Scope',
        "SELECT E'\\'' AS q, * FROM pgwarden.scope",
        'SELECT $$ $$ AS d, * FROM pgwarden.scope, LATERAL (SELECT $q$pgwarden.scope$q$) l',
        'WITH s AS (SELECT * FROM pgwarden.scope) SELECT * FROM s',
        'WITH RECURSIVE s AS (SELECT * FROM pgwarden.scope UNION SELECT * FROM s) SELECT * FROM s',
        "SELECT * FROM orders o WHERE EXISTS (SELECT 1 FROM pgwarden.scope WHERE table_name = 'secrets')",
        'SELECT table_name FROM pgwarden.scope UNION ALL SELECT table_name FROM pgwarden.scope',
        'SELECT * FROM pgwarden.scope, pgwarden.session',
        'SELECT * FROM pgwarden.scope FOR UPDATE',
        'SELECT * FROM pgwarden.scope s FOR SHARE OF s',
        'EXPLAIN (ANALYZE) SELECT * FROM pgwarden.scope',
        "SELECT * FROM pgwarden.scope WHERE table_name = 'x' LIMIT 1",
        'SELECT * FROM pgwarden.scope; DELETE FROM canary WHERE id < 0',
        'SHOW pgwarden.role; SELECT * FROM pgwarden.scope',
        'SELECT * FROM pgwarden.session(1)',
        'SELECT * FROM pgwarden.scope()',
        'SELECT pgwarden.scope()',
        'INSERT INTO canary (id, note) SELECT 900 + row_number() OVER (), table_name FROM pgwarden.scope WHERE false',
        'SELECT * FROM rows from (pgwarden.scope())',
        'SELECT * FROM pgwarden.scope s JOIN public.secrets x ON true',
        // Objects that would keep a copy of this role's scope (or read the real table later).
        'SELECT * INTO rt_ddl.scope_copy FROM pgwarden.scope',
        'EXPLAIN ANALYZE SELECT * INTO rt_ddl.scope_copy FROM pgwarden.scope',
        'CREATE TABLE rt_ddl.scope_copy AS SELECT * FROM pgwarden.scope',
        'CREATE TABLE rt_ddl.scope_copy (LIKE pgwarden.scope)',
        'CREATE VIEW rt_ddl.scope_copy AS SELECT * FROM pgwarden.scope',
        'CREATE TABLE rt_ddl.scope_copy (c text DEFAULT (SELECT table_name FROM pgwarden.scope LIMIT 1))',
      ];
      for (const f of forms) {
        const got = await rows(c, f);
        const text = JSON.stringify(got);
        // The real table's row and relations outside the role never come back.
        expect(text, f).not.toContain('REAL-TABLE-ROW');
        expect(text, f).not.toMatch(/"table_name":"(secrets|rt_tbl|rt_seq|scope)"/);
        if (f.includes('scope_copy')) expect(got, f).toMatch(/^ERR /);
        if (typeof got === 'string')
          expect(got, f).toMatch(
            /^ERR (42501|0A000|42601|42P01|42P10|42809|42883|XX000|42803|55000|0A000): .*\[reason=\w+\]$/,
          );
      }
    } finally {
      await c.end();
    }
    expect(await canaryCount()).toBe(before);
    expect((await su.query(`SELECT to_regclass('rt_ddl.scope_copy') AS r`)).rows[0].r).toBeNull();
  });
});

describe("pgwarden.scope and the decision cache: one role's rewritten text never serves another role or a later policy", () => {
  const TEXT = "SELECT DISTINCT table_schema || '.' || table_name AS r FROM pgwarden.scope ORDER BY 1";
  const names = (got: Record<string, unknown>[] | string) =>
    typeof got === 'string' ? [got] : got.map((x) => String(x.r));
  it('the same text, both protocols, interleaved between two roles', async () => {
    const reader = await connectAs(tp, 'reader');
    const other = await connectAs(tp, 'other');
    try {
      for (let round = 0; round < 3; round++) {
        for (const protocol of ['simple', 'parse'] as const) {
          expect(names(await rows(reader, TEXT, protocol))).toEqual(['public.customers', 'public.orders']);
          expect(names(await rows(other, TEXT, protocol))).toEqual(['public.secrets']);
        }
      }
    } finally {
      await reader.end();
      await other.end();
    }
  });

  it('after a reload narrows the role, neither a cached text nor a statement prepared before lists what was removed', async () => {
    const c = await connectAs(tp, 'reader');
    try {
      await c.query(`PREPARE rt_listing AS ${TEXT}`);
      await c.query({ name: 'rt_named_listing', text: TEXT });
      expect(names(await rows(c, TEXT))).toEqual(['public.customers', 'public.orders']);
      await c.query(`BEGIN; DECLARE rt_cur CURSOR FOR ${TEXT}`);
      writeFileSync(
        tp.policyFile,
        POLICY.replace(
          'relations: [public.orders, public.customers, public.rt_missing_in_scope]',
          'relations: [public.orders]',
        ).replace('    deniedColumns: { public.customers: [ssn] }\n', ''),
      );
      await tp.proxy.reload();
      // The cursor, PREPARE and the named Parse hold upstream the listing made under the wider policy: refused, saying why.
      const fetched = await pgError(() => c.query('FETCH ALL FROM rt_cur'));
      expect(fetched.code).toBe('42501');
      expect(fetched.message).toMatch(/no longer allowed: the policy changed/);
      await c.query('ROLLBACK');
      for (const run of [
        () => c.query('EXECUTE rt_listing'),
        () => c.query({ name: 'rt_named_listing', text: TEXT }),
      ]) {
        const err = await pgError(run);
        expect(err.code).toBe('42501');
        expect(err.message).toMatch(/no longer allowed: the policy changed/);
        expect(err.detail?.split('\n')[0]).toBe('reason=policy_denied');
        expect(JSON.stringify(err)).not.toMatch(/customers|operatorHint/);
      }
      expect(names(await rows(c, TEXT))).toEqual(['public.orders']);
      expect(names(await rows(c, TEXT, 'parse'))).toEqual(['public.orders']);
      // Prepared again, it lists the scope the role has now.
      await c.query(`PREPARE rt_listing_2 AS ${TEXT}`);
      expect(names((await c.query('EXECUTE rt_listing_2')).rows)).toEqual(['public.orders']);
    } finally {
      writeFileSync(tp.policyFile, POLICY);
      await tp.proxy.reload();
      await c.end();
    }
  });
});

describe('relations whose schema and name joined by a dot collide', () => {
  // rt_a."b.c" (role dotted, with a denied column) and "rt_a.b".c (role dotted2) share relationKey 'rt_a.b.c' in the catalog snapshot.
  it('the denied column stays denied and the other relation stays out, both protocols', async () => {
    const c = await connectAs(tp, 'dotted');
    try {
      for (const protocol of ['simple', 'parse'] as const) {
        for (const q of [
          'SELECT * FROM rt_a."b.c"',
          'SELECT secret FROM rt_a."b.c"',
          'SELECT t FROM rt_a."b.c" t',
          'SELECT to_jsonb(t) FROM rt_a."b.c" t',
          'SELECT * FROM "rt_a.b".c',
          'SELECT x, other FROM "rt_a.b".c',
        ]) {
          const got = await rows(c, q, protocol);
          expect(got, q).toMatch(/^ERR 42501: .*\[reason=scope_missing\]$/);
        }
        expect(await rows(c, 'SELECT id FROM rt_a."b.c"', protocol)).toEqual([{ id: 1 }]);
      }
    } finally {
      await c.end();
    }
  });

  // OPEN: policy/catalog.ts keys the snapshot by relationKey(schema, name) = `${schema}.${name}`, so of two relations
  // whose parts joined by a dot read alike only one is kept: dotted's rt_a."b.c" is missing from its pgwarden.scope
  // (and pgwarden's own column lists for it are the other relation's; PostgreSQL's analysis still decides columns, as
  // the test above shows). Fixing it means an unambiguous key at every `${schema}.${name}` site (some 30 in policy/).
  // The catalog is read in (schema, name) order, so "rt_a.b".c is read after rt_a."b.c" and wins every run.
  it.fails("pgwarden.scope lists the role's relation, not nothing", async () => {
    const c = await connectAs(tp, 'dotted');
    try {
      expect(
        await rows(c, 'SELECT table_schema, table_name, column_name FROM pgwarden.scope ORDER BY 1, 2, 3'),
      ).toEqual([{ table_schema: 'rt_a', table_name: 'b.c', column_name: 'id' }]);
    } finally {
      await c.end();
    }
  });
});

describe('unqualified names and search_path', () => {
  it('search_path cannot be set (a role may not even be given it), so an unqualified name resolves in public only and is refused alike', async () => {
    const c = await connectAs(tp, 'reader');
    try {
      for (const set of [
        'SET search_path = public, rt_hidden, pgwarden',
        "SELECT set_config('search_path', 'rt_hidden', false)",
        'SET LOCAL search_path TO pgwarden',
      ]) {
        expect(await rows(c, set), set).toMatch(/^ERR 42501: .*\[reason=\w+\]$/);
      }
      for (const protocol of ['simple', 'parse'] as const) {
        for (const t of [
          'SELECT * FROM @R@',
          'SELECT NULL::@R@',
          'COPY @R@ TO STDOUT',
          'SELECT * FROM pgwarden.scope JOIN @R@ ON true',
        ]) {
          const a = JSON.stringify(await rows(c, t.replace('@R@', 'rt_tbl'), protocol)).replaceAll('rt_tbl', '@R@');
          const b = JSON.stringify(await rows(c, t.replace('@R@', 'rt_qqq'), protocol)).replaceAll('rt_qqq', '@R@');
          expect(a, t).toBe(b);
        }
      }
    } finally {
      await c.end();
    }
  });
});
