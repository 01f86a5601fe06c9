// Scoped DDL, maintenance, LOCK, LISTEN/NOTIFY and DO: pgwarden's own decisions, and the queries handed to the server's analysis.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser, parseStatements } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { utilityQueries } from '../../../policy/ddl.ts';
import { planServerAnalysis } from '../../../policy/server-plan.ts';
import { CATALOG, ROLES, makeRole, sessionFor } from '../../fixtures/catalog.ts';
import type { CatalogSnapshot, RolePolicy } from '../../../policy/types.ts';
import { decisionFamilies } from '../../helpers/decision-cases.ts';
import { compilePolicy, parsePolicyText, policyWarnings } from '../../../policy/load.ts';

const writer = ROLES.writer;
const migrator: RolePolicy = makeRole({
  ...writer,
  name: 'migrator',
  relations: [...writer.relations, { schema: 'scratch', name: '*' }],
  write: {
    kinds: ['insert', 'update', 'delete', 'merge', 'copy_from'],
    relations: [...(writer.write?.relations ?? []), { schema: 'scratch', name: '*' }],
  },
  ddl: {
    kinds: [
      'create_table',
      'create_index',
      'create_view',
      'create_materialized_view',
      'create_sequence',
      'alter_table',
      'drop',
      'comment',
    ],
    schemas: ['scratch'],
    temporary: true,
  },
  maintenance: ['analyze', 'vacuum'],
  lock: true,
  channels: { listen: [{ name: 'jobs_', prefix: true }], notify: [{ name: 'jobs_done', prefix: false }] },
  deniedColumns: new Map([...writer.deniedColumns, ['scratch.newp', new Set(['secret'])]]),
});
/** Every schema of its search_path is one it may change: unqualified names are fine. */
const scratchPath: RolePolicy = { ...migrator, name: 'scratchpath', searchPath: ['scratch'] };
/** migrator with a statementTimeout: its own sleeps are allowed, stored ones never. */
const timedMigrator: RolePolicy = { ...migrator, name: 'timedMigrator', statementTimeout: 5000 };
/** DDL on its schema, but no temporary objects and only some kinds. */
const narrow: RolePolicy = {
  ...migrator,
  name: 'narrow',
  ddl: { kinds: ['create_table'], schemas: ['scratch'], temporary: false },
  maintenance: ['analyze'],
  lock: undefined,
  channels: undefined,
};
/** Reads only some relations of its ddl schema, and has a denied column there. */
const narrowRead: RolePolicy = {
  ...migrator,
  name: 'narrowRead',
  relations: [
    ...writer.relations,
    { schema: 'scratch', name: 'open' },
    { schema: 'scratch', name: 'people' },
    { schema: 'scratch', name: 'other' },
  ],
  write: { kinds: ['insert'], relations: [{ schema: 'scratch', name: '*' }] },
  deniedColumns: new Map([...migrator.deniedColumns, ['scratch.people', new Set(['secret'])]]),
};
const doer: RolePolicy = { ...writer, name: 'doer', do: true };
const reader: RolePolicy = {
  ...ROLES.analyst,
  name: 'reader',
  lock: true,
  channels: { listen: [{ name: 'news', prefix: false }], notify: [] },
};

/** The test catalog plus a table and a view in the role's ddl schema. */
const catalog: CatalogSnapshot = {
  ...CATALOG,
  relations: new Map([
    ...CATALOG.relations,
    ['scratch.t', { schema: 'scratch', name: 't', kind: 'r', columns: [{ name: 'x', type: 'text' }] }],
    ['scratch.v', { schema: 'scratch', name: 'v', kind: 'v', columns: [{ name: 'x', type: 'text' }] }],
    [
      'scratch.people',
      {
        schema: 'scratch',
        name: 'people',
        kind: 'r',
        columns: [
          { name: 'id', type: 'int' },
          { name: 'name', type: 'text' },
          { name: 'secret', type: 'text' },
        ],
      },
    ],
    ['scratch.private', { schema: 'scratch', name: 'private', kind: 'r', columns: [{ name: 'a', type: 'int' }] }],
  ]),
};

const roles = {
  migrator,
  timedMigrator,
  narrowRead,
  scratchPath,
  narrow,
  doer,
  reader,
  writer,
  analyst: ROLES.analyst,
};
type Case = [keyof typeof roles, string, 'allow' | 'deny', string?];

const families: Record<string, Case[]> = {
  'off by default': [
    ['writer', 'CREATE TABLE scratch.t (a int)', 'deny', 'ddl_denied'],
    ['analyst', 'CREATE TABLE scratch.t (a int)', 'deny', 'write_in_read_only'],
    ['writer', 'CREATE TEMP TABLE t (a int)', 'deny', 'ddl_denied'],
    ['writer', 'ANALYZE orders', 'deny', 'statement_kind_denied'],
    ['writer', 'LOCK orders', 'deny', 'statement_kind_denied'],
    ['writer', 'LISTEN jobs_a', 'deny', 'channel_denied'],
    ['writer', 'NOTIFY jobs_done', 'deny', 'channel_denied'],
    ['writer', "SELECT pg_notify('jobs_done', 'x')", 'deny', 'function_denied'],
    ['writer', 'DO $$ BEGIN END $$', 'deny', 'statement_kind_denied'],
    ['writer', 'UNLISTEN *', 'allow'],
  ],
  'tables in allowed schemas': [
    [
      'migrator',
      'CREATE TABLE scratch.t (a int PRIMARY KEY, b text NOT NULL DEFAULT now()::text)',
      'allow',
      'roles.migrator.ddl',
    ],
    ['migrator', 'CREATE TABLE IF NOT EXISTS scratch.t (id serial, b text CHECK (length(b) > 2))', 'allow'],
    ['migrator', 'CREATE TABLE public.t (a int)', 'deny', 'ddl_denied'],
    ['migrator', 'CREATE TABLE t (a int)', 'deny', 'ddl_denied'],
    ['migrator', 'CREATE TABLE "Scratch".t (a int)', 'deny', 'ddl_denied'],
    ['migrator', 'CREATE TABLE SCRATCH.t (a int)', 'allow'],
    ['migrator', 'CREATE TABLE pg_catalog.t (a int)', 'deny', 'ddl_denied'],
    ['migrator', 'CREATE TABLE app.scratch.t (a int)', 'allow'],
    ['migrator', 'CREATE TABLE other.scratch.t (a int)', 'deny', 'ddl_denied'],
    ['scratchPath', 'CREATE TABLE t (a int)', 'allow'],
    ['scratchPath', 'DROP TABLE t', 'allow'],
    // A view made on the search_path could stand in for a relation of the same name in the same transaction.
    ['scratchPath', 'CREATE VIEW scratch.orders AS SELECT x FROM victim', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE VIEW v AS SELECT x FROM victim', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE TABLE scratch.t (LIKE public.customers)', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE TABLE scratch.t () INHERITS (public.orders)', 'deny', 'statement_kind_denied'],
    [
      'migrator',
      'CREATE TABLE scratch.t PARTITION OF public.orders FOR VALUES IN (1)',
      'deny',
      'statement_kind_denied',
    ],
  ],
  'temporary objects': [
    ['migrator', 'CREATE TEMP TABLE t (a int) ON COMMIT DROP', 'allow'],
    ['migrator', 'CREATE TEMPORARY TABLE t (a int)', 'allow'],
    ['migrator', 'CREATE TABLE pg_temp.t (a int)', 'allow'],
    ['migrator', 'CREATE TEMP TABLE public.t (a int)', 'deny', 'ddl_denied'],
    ['migrator', 'CREATE TABLE pg_temp_3.t (a int)', 'deny', 'ddl_denied'],
    ['narrow', 'CREATE TEMP TABLE t (a int)', 'deny', 'ddl_denied'],
    ['narrow', 'CREATE TABLE scratch.t (a int)', 'allow'],
    ['narrow', 'CREATE INDEX ON scratch.t (a)', 'deny', 'ddl_denied'],
    ['migrator', 'CREATE TEMP VIEW orders AS SELECT x FROM victim', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE VIEW pg_temp.orders AS SELECT x FROM victim', 'deny', 'statement_kind_denied'],
    ['migrator', 'DROP TABLE pg_temp.t', 'allow'],
  ],
  'bodies are reads': [
    ['migrator', 'CREATE VIEW scratch.v AS SELECT id, name FROM customers', 'allow'],
    ['migrator', 'CREATE VIEW scratch.v AS SELECT ssn FROM customers', 'deny', 'column_denied'],
    ['migrator', 'CREATE VIEW scratch.v AS SELECT * FROM customers', 'deny', 'column_denied'],
    ['migrator', 'CREATE VIEW scratch.v AS SELECT c FROM customers c', 'deny', 'column_denied'],
    ['migrator', 'CREATE VIEW scratch.v AS SELECT value FROM secrets', 'deny', 'relation_not_allowed'],
    ['migrator', 'CREATE OR REPLACE VIEW scratch.v AS SELECT id FROM orders WITH CHECK OPTION', 'allow'],
    ['migrator', 'CREATE RECURSIVE VIEW scratch.r (n) AS SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3', 'allow'],
    ['migrator', 'CREATE TABLE scratch.c AS SELECT id, total FROM orders WITH NO DATA', 'allow'],
    ['migrator', 'CREATE TABLE scratch.c AS SELECT value FROM secrets', 'deny', 'relation_not_allowed'],
    ['migrator', 'CREATE TABLE scratch.c AS SELECT ssn FROM customers', 'deny', 'column_denied'],
    ['migrator', 'CREATE MATERIALIZED VIEW scratch.m AS SELECT ssn FROM customers', 'deny', 'column_denied'],
    ['migrator', 'CREATE MATERIALIZED VIEW scratch.m AS SELECT id FROM orders', 'allow'],
    ['migrator', 'REFRESH MATERIALIZED VIEW scratch.m', 'allow'],
    ['migrator', 'CREATE TABLE scratch.c AS EXECUTE p', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE TABLE scratch.c AS SELECT id FROM customers FOR UPDATE', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE VIEW scratch.v AS SELECT id FROM customers FOR SHARE', 'deny', 'statement_kind_denied'],
    [
      'migrator',
      'CREATE VIEW scratch.v AS SELECT id FROM (SELECT id FROM customers FOR KEY SHARE) s',
      'deny',
      'statement_kind_denied',
    ],
    ['migrator', 'SELECT id INTO scratch.c FROM orders', 'deny', 'statement_kind_denied'],
    [
      'migrator',
      'CREATE VIEW scratch.v AS WITH d AS (DELETE FROM victim RETURNING x) SELECT x FROM d',
      'deny',
      'relation_not_allowed',
    ],
  ],
  'expressions call functions': [
    ['migrator', "CREATE TABLE scratch.t (a text DEFAULT public.leak('x'))", 'deny', 'function_denied'],
    ['migrator', 'CREATE TABLE scratch.t (a int DEFAULT public.add_one(1))', 'deny', 'function_denied'],
    ['migrator', 'CREATE TABLE scratch.t (a text CHECK (public.leak(a) IS NOT NULL))', 'deny', 'function_denied'],
    [
      'migrator',
      'CREATE TABLE scratch.t (a int, b int GENERATED ALWAYS AS (public.add_one(a)) STORED)',
      'deny',
      'function_denied',
    ],
    [
      'migrator',
      'CREATE TABLE scratch.t (a int DEFAULT (SELECT count(*) FROM secrets))',
      'deny',
      'relation_not_allowed',
    ],
    ['migrator', 'CREATE TABLE scratch.t (a int, CHECK (a > 0))', 'allow'],
    // Restated through the deparser: IN lists and ARRAY constructors carry extra position fields, ignored.
    [
      'migrator',
      "CREATE TABLE scratch.t (a varchar(20) DEFAULT 'new' CHECK (a IN ('new', 'paid')), b text[] DEFAULT ARRAY[]::text[], c int DEFAULT 1 CHECK (c = ANY (ARRAY[1, 2])))",
      'allow',
    ],
    ['migrator', 'ALTER TABLE scratch.t ALTER COLUMN a TYPE int', 'allow'],
    // Quoted type names (psycopg quotes every one): restated quoted, so they parse back the same as written.
    [
      'migrator',
      'CREATE TABLE scratch.t (a "numeric", b "int4"[] DEFAULT \'{}\', c "varchar"(20) DEFAULT \'x\', d "interval", e "timestamp", f "bit", g "numeric"(10, 2) CHECK (g > 0), h "char", i "time"[3][4], j "text")',
      'allow',
    ],
    ['migrator', 'ALTER TABLE scratch.t ADD COLUMN z "numeric" DEFAULT 1.5', 'allow'],
    ['migrator', 'ALTER TABLE scratch.t ALTER COLUMN a TYPE "int8" USING a::"int8"', 'allow'],
    // "decimal" is no type (decimal is the grammar's word for numeric): PostgreSQL refuses it too.
    ['migrator', 'CREATE TABLE scratch.t (a "decimal")', 'deny', 'relation_not_allowed'],
    ['migrator', 'CREATE TABLE scratch.t (a int DEFAULT pg_sleep(1)::text::int)', 'deny', 'function_denied'],
    // A stored sleep runs later in other sessions' statements: refused even for a role whose own sleeps its timeout ends.
    ['timedMigrator', 'CREATE TABLE scratch.t (a int DEFAULT pg_sleep(1)::text::int)', 'deny', 'function_denied'],
    ['timedMigrator', 'CREATE TABLE scratch.t (a int CHECK (pg_sleep(1) IS NULL))', 'deny', 'function_denied'],
    [
      'timedMigrator',
      'ALTER TABLE scratch.t ADD COLUMN b int DEFAULT 1 + pg_sleep(1)::text::int',
      'deny',
      'function_denied',
    ],
    ['timedMigrator', 'CREATE TABLE scratch.t (a int DEFAULT 1)', 'allow'],
    ['migrator', 'CREATE TABLE scratch.t (a int REFERENCES public.orders (id))', 'allow'],
    // A new table referencing itself (PostgreSQL resolves the reference once the table exists).
    ['migrator', 'CREATE TABLE scratch.tree (id int PRIMARY KEY, parent int REFERENCES scratch.tree)', 'allow'],
    [
      'migrator',
      'CREATE TABLE scratch.tree (id int PRIMARY KEY, parent int, FOREIGN KEY (parent) REFERENCES scratch.tree (id))',
      'allow',
    ],
    ['migrator', 'CREATE TEMP TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree)', 'allow'],
    ['scratchPath', 'CREATE TABLE tree (id int PRIMARY KEY, parent int REFERENCES tree (id))', 'allow'],
    // Qualified on one side only: not taken for the table itself (the reference resolves through the search_path).
    [
      'migrator',
      'CREATE TABLE scratch.tree (id int PRIMARY KEY, parent int REFERENCES tree)',
      'deny',
      'relation_not_allowed',
    ],
    // The same name in another schema is another table.
    [
      'migrator',
      'CREATE TABLE scratch.customers (id int PRIMARY KEY, o int REFERENCES public.customers (id))',
      'deny',
      'relation_not_allowed',
    ],
    // A foreign key changes the referenced table (its triggers, others' deletes there): readable is not enough.
    ['migrator', 'CREATE TABLE scratch.t (a int REFERENCES public.customers (id))', 'deny', 'relation_not_allowed'],
    [
      'migrator',
      'ALTER TABLE scratch.t ADD FOREIGN KEY (a) REFERENCES public.customers (id)',
      'deny',
      'relation_not_allowed',
    ],
    ['migrator', 'CREATE TABLE scratch.t (a int REFERENCES scratch.other (id))', 'allow'],
    ['migrator', 'CREATE TABLE scratch.t (a int REFERENCES public.secrets (id))', 'deny', 'relation_not_allowed'],
    ['migrator', 'CREATE TABLE scratch.t (a text REFERENCES public.customers (ssn))', 'deny', 'column_denied'],
    ['migrator', 'CREATE TABLE scratch.t (a int REFERENCES public.customers)', 'deny', 'column_denied'],
    [
      'migrator',
      'CREATE TABLE scratch.t (a int, FOREIGN KEY (a) REFERENCES public.secrets (id))',
      'deny',
      'relation_not_allowed',
    ],
    ['migrator', 'CREATE TABLE scratch.t (a int, EXCLUDE USING gist (a WITH =))', 'deny', 'statement_kind_denied'],
  ],
  indexes: [
    ['migrator', 'CREATE INDEX ON scratch.t (a)', 'allow'],
    ['migrator', 'CREATE INDEX i ON public.customers (name)', 'deny', 'ddl_denied'],
    ['migrator', 'CREATE INDEX ON scratch.t ((public.leak(a)))', 'deny', 'function_denied'],
    ['migrator', 'CREATE INDEX ON scratch.t (a) WHERE public.leak(b) IS NULL', 'deny', 'function_denied'],
    ['migrator', 'CREATE INDEX ON scratch.t (a public.my_ops)', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON scratch.t (upper(a)) INCLUDE (b)', 'allow'],
  ],
  'alter, drop, comment': [
    ['migrator', 'ALTER TABLE scratch.t ADD COLUMN c int DEFAULT 0', 'allow'],
    ['migrator', "ALTER TABLE scratch.t ADD COLUMN c text DEFAULT public.leak('x')", 'deny', 'function_denied'],
    ['migrator', 'ALTER TABLE scratch.t ALTER COLUMN a TYPE bigint USING public.add_one(a)', 'deny', 'function_denied'],
    ['migrator', 'ALTER TABLE scratch.t ALTER COLUMN a SET DEFAULT 3, ALTER COLUMN b SET NOT NULL', 'allow'],
    [
      'migrator',
      'ALTER TABLE scratch.t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES public.secrets (id)',
      'deny',
      'relation_not_allowed',
    ],
    ['migrator', 'ALTER TABLE scratch.t OWNER TO postgres', 'deny', 'statement_kind_denied'],
    ['migrator', 'ALTER TABLE scratch.t ENABLE ROW LEVEL SECURITY', 'deny', 'statement_kind_denied'],
    ['migrator', 'ALTER TABLE scratch.t DROP COLUMN a CASCADE', 'deny', 'statement_kind_denied'],
    ['migrator', 'ALTER TABLE scratch.t DROP COLUMN a', 'allow'],
    ['migrator', 'ALTER TABLE public.orders ADD COLUMN x int', 'deny', 'ddl_denied'],
    ['migrator', 'ALTER TABLE scratch.t SET SCHEMA public', 'deny'],
    ['migrator', 'ALTER TABLE scratch.t RENAME TO u', 'allow'],
    ['migrator', 'ALTER TABLE scratch.t RENAME COLUMN a TO b', 'allow'],
    ['migrator', 'ALTER TABLE public.orders RENAME TO o', 'deny', 'ddl_denied'],
    // Renames may not move data from under one rule to another.
    ['narrowRead', 'ALTER TABLE scratch.private RENAME TO open', 'deny', 'relation_not_allowed'],
    ['narrowRead', 'ALTER TABLE scratch.open RENAME TO private', 'deny', 'relation_not_allowed'],
    ['narrowRead', 'ALTER TABLE scratch.private RENAME TO hidden', 'allow'],
    ['narrowRead', 'ALTER TABLE scratch.private RENAME TO other', 'deny', 'relation_not_allowed'],
    ['narrowRead', 'ALTER TABLE scratch.people RENAME TO folk', 'deny', 'relation_not_allowed'],
    ['narrowRead', 'ALTER TABLE scratch.people RENAME COLUMN secret TO name2', 'deny', 'column_denied'],
    ['narrowRead', 'ALTER TABLE scratch.people ALTER COLUMN secret SET NOT NULL', 'deny', 'column_denied'],
    ['narrowRead', 'ALTER TABLE scratch.people ALTER COLUMN name SET NOT NULL', 'allow'],
    ['narrowRead', 'ALTER TABLE scratch.people ADD PRIMARY KEY (secret)', 'deny', 'column_denied'],
    ['narrowRead', 'CREATE UNIQUE INDEX ON scratch.people (secret)', 'deny', 'column_denied'],
    ['narrowRead', "ALTER TABLE scratch.people ADD CHECK (secret <> 'guess')", 'deny', 'column_denied'],
    ['narrowRead', 'ALTER TABLE scratch.people ALTER COLUMN secret TYPE varchar(9)', 'deny', 'column_denied'],
    ['narrowRead', 'ALTER TABLE scratch.private ADD CHECK (a > 0)', 'deny', 'relation_not_allowed'],
    ['migrator', 'DROP TABLE scratch.t, scratch.u', 'allow'],
    ['migrator', 'DROP TABLE IF EXISTS scratch.t', 'allow'],
    ['migrator', 'DROP TABLE scratch.t, public.orders', 'deny', 'ddl_denied'],
    ['migrator', 'DROP TABLE scratch.t CASCADE', 'deny', 'statement_kind_denied'],
    ['migrator', 'DROP TABLE t', 'deny', 'ddl_denied'],
    ['migrator', 'DROP SCHEMA scratch', 'deny', 'ddl_denied'],
    ['migrator', 'DROP FUNCTION public.leak', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE SEQUENCE scratch.s OWNED BY scratch.t.a', 'allow'],
    ['migrator', 'CREATE SEQUENCE scratch.s OWNED BY public.orders.id', 'deny', 'ddl_denied'],
    ['migrator', "COMMENT ON TABLE scratch.t IS 'x'", 'allow'],
    ['migrator', "COMMENT ON COLUMN scratch.t.a IS 'x'", 'allow'],
    ['migrator', "COMMENT ON COLUMN public.orders.id IS 'x'", 'deny', 'ddl_denied'],
    ['migrator', "COMMENT ON FUNCTION public.leak(text) IS 'x'", 'deny', 'statement_kind_denied'],
  ],
  'always refused': [
    [
      'migrator',
      'CREATE FUNCTION scratch.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$',
      'deny',
      'statement_kind_denied',
    ],
    [
      'migrator',
      'CREATE TRIGGER t BEFORE INSERT ON scratch.t FOR EACH ROW EXECUTE FUNCTION scratch.f()',
      'deny',
      'statement_kind_denied',
    ],
    ['migrator', 'CREATE RULE r AS ON INSERT TO scratch.t DO INSTEAD NOTHING', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE SCHEMA s2', 'deny', 'ddl_denied'],
    ['migrator', 'CREATE EXTENSION dblink', 'deny', 'statement_kind_denied'],
    ['migrator', 'GRANT SELECT ON scratch.t TO PUBLIC', 'deny', 'statement_kind_denied'],
    ['migrator', 'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC', 'deny', 'statement_kind_denied'],
    ['migrator', 'CREATE POLICY p ON scratch.t USING (true)', 'deny', 'statement_kind_denied'],
    ['migrator', "SELECT lo_import('/etc/passwd')", 'deny', 'function_denied'],
    ['migrator', 'DO $$ BEGIN END $$', 'deny', 'statement_kind_denied'],
  ],
  'views the role may have made': [
    ['migrator', 'DELETE FROM scratch.v', 'deny', 'relation_not_allowed'],
    ['migrator', "UPDATE scratch.v SET x = 'y'", 'deny', 'relation_not_allowed'],
    ['migrator', "INSERT INTO scratch.t VALUES ('y')", 'allow'],
    ['migrator', 'LOCK scratch.v IN ACCESS EXCLUSIVE MODE', 'deny', 'relation_not_allowed'],
    ['migrator', 'LOCK scratch.v IN ACCESS SHARE MODE', 'allow'],
    ['migrator', 'LOCK scratch.t IN ACCESS EXCLUSIVE MODE', 'allow'],
  ],
  'objects made after the snapshot was read': [
    // Qualified names in a ddl schema are resolved by name; the server's analysis judges their columns.
    ['narrowRead', 'SELECT a, b FROM scratch.other_new', 'deny', 'relation_not_allowed'],
    ['migrator', 'SELECT a, b FROM scratch.made_later', 'allow'],
    ['migrator', 'INSERT INTO scratch.made_later (a) VALUES (1)', 'allow'],
    // Outside the role's relations and ddl schemas a missing name is refused as a forbidden one would be (docs/policy.md,
    // "Unknown and forbidden relations"); in its temporary schema it stays unresolved (the role may have just made it).
    ['migrator', 'SELECT a FROM made_later', 'deny', 'relation_not_allowed'],
    ['migrator', 'SELECT a FROM public.made_later', 'deny', 'relation_not_allowed'],
    ['migrator', 'SELECT a FROM pg_temp.made_later', 'allow'],
    ['writer', 'SELECT a FROM scratch.made_later', 'deny', 'relation_not_allowed'],
    ['narrowRead', 'SELECT secret FROM scratch.people', 'deny', 'column_denied'],
    // Denied columns of a relation pgwarden has not seen: a named one, a star or a whole row are refused here already.
    ['migrator', 'SELECT secret FROM scratch.newp', 'deny', 'column_denied'],
    ['migrator', 'SELECT * FROM scratch.newp', 'deny', 'column_denied'],
    ['migrator', 'SELECT n FROM scratch.newp n', 'deny', 'column_denied'],
    // Until the snapshot knows its columns, any column of such a relation with denied columns counts as all of them.
    ['migrator', 'SELECT id FROM scratch.newp', 'deny', 'column_denied'],
    ['migrator', 'SELECT count(*) FROM scratch.newp', 'allow'],
  ],
  'maintenance and LOCK': [
    ['migrator', 'ANALYZE orders', 'allow', 'roles.migrator.maintenance'],
    ['migrator', 'VACUUM pgbench_branches', 'allow'],
    ['migrator', 'VACUUM (ANALYZE) orders', 'allow'],
    ['narrow', 'VACUUM orders', 'deny', 'statement_kind_denied'],
    ['narrow', 'VACUUM ANALYZE orders', 'deny', 'statement_kind_denied'],
    ['migrator', 'VACUUM FULL orders', 'deny', 'statement_kind_denied'],
    ['migrator', 'ANALYZE customers', 'deny', 'relation_not_allowed'],
    ['migrator', 'ANALYZE', 'deny', 'statement_kind_denied'],
    ['migrator', 'ANALYZE pg_class', 'deny', 'relation_not_allowed'],
    ['migrator', 'LOCK orders IN ACCESS EXCLUSIVE MODE', 'allow', 'roles.migrator.lock'],
    ['migrator', 'LOCK customers IN SHARE MODE', 'deny', 'relation_not_allowed'],
    ['migrator', 'LOCK customers IN ACCESS SHARE MODE', 'allow'],
    ['migrator', 'LOCK secrets IN ACCESS SHARE MODE', 'deny', 'relation_not_allowed'],
    ['reader', 'LOCK orders IN ACCESS SHARE MODE', 'allow'],
    ['reader', 'LOCK orders', 'deny', 'write_in_read_only'],
    ['narrow', 'LOCK orders', 'deny', 'statement_kind_denied'],
  ],
  'LISTEN and NOTIFY': [
    ['migrator', 'LISTEN jobs_a', 'allow', 'roles.migrator.channels.listen'],
    ['migrator', 'LISTEN "jobs_A"', 'allow'],
    ['migrator', 'LISTEN JOBS_A', 'allow'],
    ['migrator', 'LISTEN other', 'deny', 'channel_denied'],
    ['migrator', 'LISTEN "Jobs_a"', 'deny', 'channel_denied'],
    ['migrator', 'NOTIFY jobs_done', 'allow'],
    ['migrator', "NOTIFY jobs_done, 'payload'", 'allow'],
    ['migrator', 'NOTIFY jobs_a', 'deny', 'channel_denied'],
    ['migrator', "SELECT pg_notify('jobs_done', 'x')", 'allow'],
    ['migrator', "SELECT pg_notify('jobs_other', 'x')", 'deny', 'channel_denied'],
    ['migrator', "SELECT pg_notify(lower('JOBS_DONE'), 'x')", 'deny', 'channel_denied'],
    ['migrator', "SELECT pg_notify(status, 'x') FROM orders", 'deny', 'channel_denied'],
    ['migrator', "SELECT pg_notify('jobs_' || 'done', 'x')", 'deny', 'channel_denied'],
    ['migrator', "SELECT pg_notify($1, 'x')", 'deny', 'channel_denied'],
    ['migrator', "SELECT pg_catalog.pg_notify('jobs_done', 'x')", 'allow'],
    ['migrator', "SELECT pg_notify('jobs_done', status) FROM orders", 'allow'],
    ['migrator', 'UNLISTEN *', 'allow'],
    ['reader', 'LISTEN news', 'allow'],
    ['reader', 'NOTIFY news', 'deny'],
    ['reader', "SELECT pg_notify('news', 'x')", 'deny', 'function_denied'],
  ],
  DO: [
    ['doer', 'DO $$ BEGIN PERFORM 1; END $$', 'allow', 'roles.doer.do'],
    ['analyst', 'DO $$ BEGIN END $$', 'deny'],
  ],
};

beforeAll(async () => {
  await initParser();
});

decisionFamilies(families, roles, catalog);

describe('messages', () => {
  it('names the schema, the rule and what is allowed', () => {
    const d = evaluate('CREATE TABLE public.t (a int)', 'simple', sessionFor(migrator), CATALOG);
    expect(d.allow).toBe(false);
    if (d.allow) return;
    expect(d.message).toBe(
      'permission denied by pgwarden: CREATE TABLE touches schema public, which is not in ddl.schemas',
    );
    expect(d.detail).toContain('(rule: roles.migrator.ddl.schemas)');
    expect(d.hint).toBe('schemas this role may change: scratch');
  });
  it('tells an unqualified name to qualify', () => {
    const d = evaluate('CREATE TABLE t (a int)', 'simple', sessionFor(migrator), CATALOG);
    expect(!d.allow && d.hint).toBe('qualify the name with its schema, e.g. scratch.name');
  });
});

describe('restated queries', () => {
  const body = (sql: string) => {
    const p = parseStatements(sql);
    if (!p.ok) throw new Error(p.message);
    const n = p.stmts[0]?.stmt as unknown as Record<string, Record<string, unknown>>;
    const kind = Object.keys(n)[0] ?? '';
    return utilityQueries(kind, n[kind] ?? {});
  };
  it("a table's expressions are selected over its own columns", () => {
    expect(body('CREATE TABLE scratch."T" (a serial, b text DEFAULT upper(\'x\') CHECK (b <> a::text))')).toEqual({
      ok: true,
      queries: [
        {
          // A type name as written (text) is restated quoted; pg_catalog's keyword types (int, boolean) as the grammar makes them.
          text: `SELECT (CAST(upper('x') AS "text")), (CAST(b <> CAST(a AS "text") AS boolean)) FROM (SELECT NULL::int AS a, CAST(NULL AS "text") AS b) AS "T"`,
        },
      ],
    });
  });
  it('an index reads its columns, expressions and predicate from the table alone', () => {
    expect(body('CREATE INDEX ON scratch.t (a, (lower(b))) WHERE c > 0')).toEqual({
      ok: true,
      queries: [{ text: 'SELECT (a), (lower(b)) FROM ONLY scratch.t WHERE (c > 0)' }],
    });
  });
  it('LOCK names its relations for the server to resolve', () => {
    expect(body('LOCK orders, scratch.t IN ACCESS SHARE MODE')).toEqual({
      ok: true,
      queries: [{ text: 'SELECT FROM ONLY orders, ONLY scratch.t', named: 'readable' }],
    });
    expect(body('VACUUM ANALYZE orders (id)')).toEqual({
      ok: true,
      queries: [{ text: 'SELECT FROM ONLY orders', named: 'writable' }],
    });
  });
  it('the server analyses the body of a view and a CTAS', () => {
    const plan = planServerAnalysis(
      'CREATE VIEW scratch.v AS SELECT id FROM orders WHERE total > 10; DROP TABLE scratch.t',
      [],
    );
    expect(plan).toEqual({
      ok: true,
      texts: [
        {
          text: 'SELECT id FROM orders WHERE total > 10',
          paramTypes: [],
          kind: 'ViewStmt',
          copyFrom: false,
          statement: 0,
        },
      ],
    });
  });
});

describe('validation', () => {
  const check = (role: Record<string, unknown>) => {
    const r = parsePolicyText(
      JSON.stringify({
        roles: { m: { readOnly: false, write: { statements: ['insert'], relations: ['app.t'] }, ...role } },
      }),
      'json',
      'p.json',
    );
    return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
  };
  it('suggests the nearest key and kind', () => {
    expect(check({ dll: { kinds: ['create_table'], schemas: ['s'] } })).toEqual([
      'roles.m.dll: unknown key (did you mean "ddl"?)',
    ]);
    expect(check({ ddl: { kinds: ['create_tabel'], schemas: ['s'], temprary: true } })).toEqual([
      'roles.m.ddl.temprary: unknown key (did you mean "temporary"?)',
      'roles.m.ddl.kinds[0]: must be one of create_table, create_index, create_view, create_materialized_view, create_sequence, alter_table, drop, comment, create_type, alter_type, create_schema (did you mean "create_table"?)',
    ]);
    expect(check({ ddl: { kinds: ['create_view'], schemas: ['app', 'public'] } })).toEqual([
      "roles.m.ddl.kinds: cannot include create_view while public is also on searchPath: a view made there in a transaction could stand in for a relation of the same name, which pgwarden's analysis would resolve to the other one",
    ]);
    expect(check({ maintenance: ['analyse'] })).toEqual([
      'roles.m.maintenance[0]: must be one of analyze, vacuum (did you mean "analyze"?)',
    ]);
    expect(check({ channels: { listn: ['a'] } })).toEqual([
      'roles.m.channels.listn: unknown key (did you mean "listen"?)',
    ]);
  });
  it('says why system and temporary schemas cannot be listed', () => {
    expect(check({ ddl: { kinds: ['drop'], schemas: ['pg_catalog', 'pg_temp'] } })).toEqual([
      'roles.m.ddl.schemas[0]: cannot be pg_catalog: pgwarden never allows DDL on system schemas',
      'roles.m.ddl.schemas[1]: cannot be a temporary schema: use ddl.temporary: true for temporary objects',
    ]);
  });
  it('refuses side effects on a read-only role', () => {
    const r = parsePolicyText(
      JSON.stringify({
        roles: {
          ro: {
            ddl: { kinds: ['drop'], schemas: ['s'] },
            channels: { notify: ['x'] },
            do: true,
            maintenance: ['analyze'],
          },
        },
      }),
      'json',
      'p.json',
    );
    expect(r.ok ? [] : r.issues.map((i) => i.path)).toEqual([
      'roles.ro.ddl',
      'roles.ro.maintenance',
      'roles.ro.channels.notify',
      'roles.ro.do',
    ]);
  });
  it('compiles channels folded like LISTEN, and warns about DO at every load', () => {
    const r = parsePolicyText(
      JSON.stringify({
        roles: {
          m: {
            readOnly: false,
            write: { statements: ['insert'], relations: ['app.t'] },
            channels: { listen: ['Jobs_*', '"Q"'] },
            do: true,
          },
        },
      }),
      'json',
      'p.json',
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const policy = compilePolicy(r.doc, 1, 'x');
    expect(policy.roles.get('m')?.channels?.listen).toEqual([
      { name: 'jobs_', prefix: true },
      { name: 'Q', prefix: false },
    ]);
    expect(policyWarnings(policy)).toEqual([
      "roles.m.do: DO blocks run any SQL as the database role; pgwarden cannot see inside them, so only that role's privileges limit what this role's sessions can do",
    ]);
  });
});

describe("pg_notify's channel as a parameter", () => {
  const parse = (sql: string, role: RolePolicy = migrator) => evaluate(sql, 'parse', sessionFor(role), CATALOG);
  it('a bare $n in a Parse message is allowed with a Bind check of the role channels', () => {
    const d = parse('SELECT pg_notify($1, $2)');
    expect(d).toMatchObject({
      allow: true,
      bindChecks: [{ kind: 'notify_channel', param: 1, channels: migrator.channels?.notify }],
    });
    // Two calls with the same parameter: one check; a constant channel needs none.
    expect(parse(`SELECT pg_notify($2, 'a'), pg_notify($2, 'b'), pg_notify('jobs_done', $1)`)).toMatchObject({
      allow: true,
      bindChecks: [{ param: 2 }],
    });
    expect(parse(`SELECT pg_notify('jobs_done', $1)`)).not.toHaveProperty('bindChecks');
  });
  it.each([
    ['the simple protocol, where nothing is bound', 'simple', 'SELECT pg_notify($1, $2)'],
    ['PREPARE (EXECUTE binds nothing pgwarden sees)', 'parse', `PREPARE p (text) AS SELECT pg_notify($1, 'x')`],
    ['$1 also used elsewhere', 'parse', 'SELECT pg_notify($1, $2) WHERE $1 IS NOT NULL'],
    ['$1 in an expression', 'parse', `SELECT pg_notify($1 || '', 'x')`],
    ['$1 cast', 'parse', `SELECT pg_notify($1::varchar, 'x')`],
    ['a stored expression', 'parse', `CREATE TABLE scratch.t (a text DEFAULT pg_notify($1, 'x')::text)`],
  ] as const)('refused: %s', (_n, mode, sql) => {
    expect(evaluate(sql, mode, sessionFor(migrator), CATALOG)).toMatchObject({ allow: false, sqlstate: '42501' });
  });
  it('a role without channels.notify may not call pg_notify at all', () => {
    expect(parse('SELECT pg_notify($1, $2)', ROLES.writer)).toMatchObject({ allow: false, reason: 'function_denied' });
  });
});
