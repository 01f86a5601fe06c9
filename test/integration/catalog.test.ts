// loadCatalog and checkUpstreamPrivileges against a real Postgres: snapshot contents, mixed-case names, privilege warnings, timing.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type EmbeddedPostgres } from '../../proxy/embedded/postgres.ts';
import {
  CATALOG_QUERIES,
  checkUpstreamPrivileges,
  loadCatalog,
  missingRelations,
  type CatalogQuery,
} from '../../policy/catalog.ts';
import { compilePolicy, parsePolicyText, policyRelations } from '../../policy/load.ts';

const POLICY = `roles:
  analyst:
    relations: [public.orders, public.customers, 'sales."Orders"', public.ghost]
    deniedColumns: { public.customers: [ssn] }
  reporting:
    relations: [reports.*]
`;

let server: EmbeddedPostgres;
const clients: pg.Client[] = [];

async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  clients.push(c);
  return c;
}

function querier(c: pg.Client): CatalogQuery {
  return (sql, params) => c.query(sql, params as unknown[] | undefined);
}

function userUrl(user: string, password: string): string {
  return `postgres://${user}:${password}@${server.host}:${server.port}/catalogdb`;
}

function compiled() {
  const r = parsePolicyText(POLICY, 'yaml', 'policy.yaml');
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return compilePolicy(r.doc, 1, 'd');
}

beforeAll(async () => {
  server = await startPostgres();
  const admin = await connect(server.url());
  await admin.query('CREATE DATABASE catalogdb');
  const su = await connect(server.url('catalogdb'));
  await su.query(`
    CREATE TABLE public.orders (id bigint PRIMARY KEY, customer_id int, total numeric(10,2), note varchar(40), created_at timestamptz);
    CREATE TABLE public.customers (id int PRIMARY KEY, name text, ssn text, email text);
    ALTER TABLE public.customers DROP COLUMN email;
    CREATE SCHEMA sales;
    CREATE TABLE sales."Orders" ("Id" int, "Amount" numeric);
    CREATE TABLE sales.orders (x int);
    CREATE SCHEMA reports;
    CREATE VIEW reports.daily AS SELECT 1 AS n;
    CREATE MATERIALIZED VIEW reports.monthly AS SELECT 2 AS m;
    CREATE TABLE reports.parted (d date, v int) PARTITION BY RANGE (d);
    CREATE TABLE public.unmentioned (secret text);
    CREATE FUNCTION public.add_one(integer) RETURNS integer LANGUAGE sql IMMUTABLE AS 'select $1 + 1';
    CREATE FUNCTION public.add_one(numeric, "char") RETURNS numeric LANGUAGE sql STABLE AS 'select $1 + 1';
    CREATE FUNCTION public.gen(n int) RETURNS SETOF int LANGUAGE sql AS 'select generate_series(1, n)';
    CREATE PROCEDURE public.do_it() LANGUAGE sql AS 'select 1';
    CREATE FUNCTION public.text_eq_ci(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'select lower($1) = lower($2)';
    CREATE OPERATOR public.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_eq_ci);
    CREATE ROLE reader LOGIN PASSWORD 'reader-pw' NOSUPERUSER;
    GRANT USAGE ON SCHEMA sales, reports TO reader;
    GRANT SELECT ON public.orders, public.customers, sales."Orders" TO reader;
    CREATE ROLE owner_user LOGIN PASSWORD 'owner-pw' NOSUPERUSER;
    ALTER TABLE public.orders OWNER TO owner_user;
    CREATE ROLE bypasser LOGIN PASSWORD 'bypass-pw' NOSUPERUSER BYPASSRLS;
    CREATE ROLE agent_role NOLOGIN NOSUPERUSER;
    GRANT agent_role TO reader;
    CREATE ROLE super_agent NOLOGIN SUPERUSER;
  `);
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await server?.stop();
});

describe('loadCatalog', () => {
  it('reads the database, schemas, the relations the policy mentions, functions and user operators', async () => {
    const su = await connect(server.url('catalogdb'));
    const policy = compiled();
    const started = performance.now();
    const catalog = await loadCatalog(querier(su), { relations: policyRelations(policy) });
    const ms = performance.now() - started;
    console.log(
      `loadCatalog: ${ms.toFixed(1)} ms, ${catalog.relations.size} relations, ${catalog.functions.size} function names, ${catalog.userOperators.size} user operators`,
    );
    expect(ms).toBeLessThan(1000);

    expect(catalog.database).toBe('catalogdb');
    for (const s of ['public', 'sales', 'reports', 'pg_catalog', 'information_schema'])
      expect(catalog.schemas.has(s)).toBe(true);
    expect([...catalog.schemas].some((s) => s.startsWith('pg_toast') || s.startsWith('pg_temp'))).toBe(false);

    expect(catalog.relations.get('public.orders')).toEqual({
      schema: 'public',
      name: 'orders',
      kind: 'r',
      columns: [
        { name: 'id', type: 'bigint' },
        { name: 'customer_id', type: 'integer' },
        { name: 'total', type: 'numeric(10,2)' },
        { name: 'note', type: 'character varying(40)' },
        { name: 'created_at', type: 'timestamp with time zone' },
      ],
    });
    // Dropped columns and system columns are not columns.
    expect(catalog.relations.get('public.customers')?.columns.map((c) => c.name)).toEqual(['id', 'name', 'ssn']);
    // sales."Orders" and sales.orders are different relations; only the mentioned one is loaded.
    expect(catalog.relations.get('sales.Orders')?.columns.map((c) => c.name)).toEqual(['Id', 'Amount']);
    expect(catalog.relations.has('sales.orders')).toBe(false);
    // schema.* loads the whole schema, with each relkind.
    expect(catalog.relations.get('reports.daily')?.kind).toBe('v');
    expect(catalog.relations.get('reports.monthly')?.kind).toBe('m');
    expect(catalog.relations.get('reports.parted')?.kind).toBe('p');
    expect(catalog.relations.has('public.unmentioned')).toBe(false);
    // System relations for introspection roles.
    expect(catalog.relations.get('pg_catalog.pg_class')?.columns.some((c) => c.name === 'relname')).toBe(true);
    expect(catalog.relations.get('information_schema.columns')?.kind).toBe('v');

    // Functions from every schema, each overload with its argument types.
    const addOne = catalog.functions.get('public.add_one') ?? [];
    expect(addOne.map((f) => [f.volatility, f.argTypes]).sort()).toEqual([
      ['i', ['integer']],
      ['s', ['numeric', '"char"']],
    ]);
    expect(catalog.functions.get('public.gen')?.[0]).toMatchObject({
      kind: 'f',
      returnsSet: true,
      volatility: 'v',
      argTypes: ['integer'],
    });
    expect(catalog.functions.get('public.do_it')?.[0]?.kind).toBe('p');
    expect(catalog.functions.get('pg_catalog.now')?.[0]).toMatchObject({ volatility: 's', argTypes: [] });
    expect(catalog.functions.get('pg_catalog.count')?.some((f) => f.kind === 'a')).toBe(true);
    expect(catalog.functions.get('pg_catalog.row_number')?.[0]?.kind).toBe('w');
    expect(catalog.functions.get('pg_catalog.pg_sleep')?.[0]?.volatility).toBe('v');

    expect([...catalog.userOperators]).toEqual(['public.===']);
    expect(catalog.userOperatorFunctions?.get('public.===')).toEqual(['public.text_eq_ci']);

    // The policy mentions public.ghost, which does not exist.
    expect(missingRelations(policyRelations(policy), catalog)).toEqual(['public.ghost']);
  });

  it('works for a non-superuser, with catalog keys as strings, and without system relations', async () => {
    const reader = await connect(userUrl('reader', 'reader-pw'));
    const catalog = await loadCatalog(querier(reader), {
      relations: ['public.orders', 'sales.Orders', 'reports.*'],
      includeSystem: false,
    });
    expect([...catalog.relations.keys()].sort()).toEqual([
      'public.orders',
      'reports.daily',
      'reports.monthly',
      'reports.parted',
      'sales.Orders',
    ]);
    expect(catalog.functions.size).toBeGreaterThan(1000);
  });

  it('loads quickly on an empty database', async () => {
    const admin = await connect(server.url());
    await admin.query('CREATE DATABASE emptydb');
    const c = await connect(server.url('emptydb'));
    await loadCatalog(querier(c)); // warm the connection's catalog caches like a long-running proxy would
    const started = performance.now();
    const catalog = await loadCatalog(querier(c));
    const ms = performance.now() - started;
    console.log(
      `loadCatalog on an empty database: ${ms.toFixed(1)} ms (${catalog.relations.size} system relations, ${catalog.functions.size} function names)`,
    );
    expect(ms).toBeLessThan(1000);
    expect(catalog.userOperators.size).toBe(0);
  });

  it('uses only schema-qualified catalog objects', () => {
    // A table called pg_class in a schema on the search_path must not be able to stand in for the catalog.
    for (const sql of Object.values(CATALOG_QUERIES)) {
      for (const m of sql.matchAll(/\b(from|join)\s+([a-z_.]+)/gi)) {
        if (m[2] !== 'wanted') expect(m[2], sql).toMatch(/^pg_catalog\./);
      }
    }
  });
});

describe('checkUpstreamPrivileges', () => {
  const relations = () => policyRelations(compiled());

  it('warns when the upstream user is a superuser', async () => {
    const su = await connect(server.url('catalogdb'));
    const warnings = await checkUpstreamPrivileges(querier(su), relations());
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/postgres is a superuser/);
  });

  it('does not warn for a NOSUPERUSER role that owns none of the relations', async () => {
    const reader = await connect(userUrl('reader', 'reader-pw'));
    expect(await checkUpstreamPrivileges(querier(reader), relations())).toEqual([]);
  });

  it('warns when the upstream user owns an allowed relation', async () => {
    const owner = await connect(userUrl('owner_user', 'owner-pw'));
    const warnings = await checkUpstreamPrivileges(querier(owner), relations());
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/owner_user owns .*public\.orders/);
  });

  it('warns when the upstream user has BYPASSRLS', async () => {
    const bypasser = await connect(userUrl('bypasser', 'bypass-pw'));
    const warnings = await checkUpstreamPrivileges(querier(bypasser), relations());
    expect(warnings).toEqual([expect.stringMatching(/bypasser has BYPASSRLS/)]);
  });

  it('checks dbRoles: missing, not a member, superuser', async () => {
    const reader = await connect(userUrl('reader', 'reader-pw'));
    const warnings = await checkUpstreamPrivileges(querier(reader), relations(), {
      dbRoles: ['agent_role', 'nobody', 'super_agent', 'owner_user'],
    });
    expect(warnings.some((w) => /agent_role/.test(w))).toBe(false);
    expect(warnings).toContainEqual(expect.stringMatching(/dbRole nobody does not exist/));
    expect(warnings).toContainEqual(expect.stringMatching(/cannot SET ROLE super_agent/));
    expect(warnings).toContainEqual(expect.stringMatching(/dbRole super_agent is a superuser/));
    expect(warnings).toContainEqual(expect.stringMatching(/dbRole owner_user owns .*public\.orders/));
  });
});
