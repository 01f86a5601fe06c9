// Scoped DDL, maintenance, LOCK, LISTEN/NOTIFY and DO through a real pgwarden and Postgres: what is allowed runs, every bypass attempt is refused and never reaches the database.
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  canaryCount,
  connectAs,
  pgError,
  startTestProxy,
  superClient,
  withSuperClient as su,
  type TestProxy,
} from '../helpers/proxy.ts';

/** The schema the test grants CREATE on to pgwarden's upstream user; created and dropped by this file. */
const S = 'ddl_scratch';

const POLICY = `roles:
  migrator:
    readOnly: false
    relations: [public.orders, public.customers, public.canary, ${S}.*]
    deniedColumns: { public.customers: [ssn], ${S}.people: [secret] }
    write: { statements: [insert, update, delete], relations: [public.canary, ${S}.*] }
    ddl:
      kinds: [create_table, create_index, create_view, create_materialized_view, create_sequence, alter_table, drop, comment]
      schemas: [${S}]
      temporary: true
    maintenance: [analyze, vacuum]
    lock: true
    channels: { listen: [jobs_*], notify: [jobs_done] }
  pathgame:
    readOnly: false
    relations: [public.orders]
    write: { statements: [insert], relations: [public.canary] }
    ddl: { kinds: [create_table, drop], schemas: [${S}] }
    searchPath: [${S}, public]
  scoped:
    readOnly: false
    relations: [public.orders]
    write: { statements: [insert], relations: [public.canary] }
    ddl: { kinds: [create_table, drop], schemas: [${S}] }
    searchPath: [${S}]
  doer:
    readOnly: false
    relations: [public.orders]
    write: { statements: [insert], relations: [public.canary] }
    do: true
  reader:
    relations: [public.orders]
    channels: { listen: [jobs_done] }
    lock: true
`;

/** Relations of that name in the test schema (or any schema, for `anywhere`), as the superuser sees them. */
async function exists(name: string, anywhere = false): Promise<boolean> {
  return su(
    async (c) =>
      (
        await c.query(
          `SELECT 1 FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace WHERE k.relname = $1 AND ($2 OR n.nspname = $3)`,
          [name, anywhere, S],
        )
      ).rowCount === 1,
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
    CREATE SCHEMA ${S};
    GRANT USAGE, CREATE ON SCHEMA ${S} TO pgwarden;
    CREATE OR REPLACE FUNCTION public.ddl_leak(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
  `),
  );
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await su((c) => c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE; DROP FUNCTION IF EXISTS public.ddl_leak(text)`));
});

describe('DDL in an allowed schema', () => {
  it('creates, alters, indexes, comments and drops tables, views and sequences there', async () => {
    const c = await as('migrator');
    await c.query(
      `CREATE TABLE ${S}.items (id serial PRIMARY KEY, note text NOT NULL DEFAULT 'x' CHECK (length(note) < 100), qty int)`,
    );
    expect(await exists('items')).toBe(true);
    await c.query(`CREATE INDEX items_note ON ${S}.items (note) WHERE qty > 0`);
    await c.query(`ALTER TABLE ${S}.items ADD COLUMN added int DEFAULT 0, ALTER COLUMN qty SET DEFAULT 1`);
    await c.query(`COMMENT ON COLUMN ${S}.items.note IS 'free text'`);
    await c.query(`CREATE VIEW ${S}.paid AS SELECT id, total FROM public.orders WHERE status = 'paid'`);
    await c.query(`CREATE TABLE ${S}.snapshot AS SELECT id, name FROM public.customers WITH NO DATA`);
    await c.query(`CREATE SEQUENCE ${S}.seq OWNED BY ${S}.items.qty`);
    await c.query(`CREATE TABLE "${S}"."Quoted" (a int REFERENCES ${S}.items (id))`);
    for (const name of ['items_note', 'paid', 'snapshot', 'seq', 'Quoted']) expect(await exists(name), name).toBe(true);
    await c.query(`DROP TABLE ${S}."Quoted"`);
    expect(await exists('Quoted')).toBe(false);
    expect(
      (
        await su((s) =>
          s.query(
            `SELECT column_default FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'items' AND column_name = 'added'`,
            [S],
          ),
        )
      ).rows,
    ).toEqual([{ column_default: '0' }]);
    // Usable at once, by its qualified name, though pgwarden's snapshot has not seen it (the server's analysis resolves it).
    await c.query(`INSERT INTO ${S}.items (note) VALUES ('hello')`);
    expect((await c.query(`SELECT note, qty, added FROM ${S}.items`)).rows).toEqual([
      { note: 'hello', qty: 1, added: 0 },
    ]);
  });

  it('temporary objects, and unqualified names when the whole search_path is allowed', async () => {
    const c = await as('migrator');
    await c.query('CREATE TEMP TABLE scratch_tmp (a int) ON COMMIT PRESERVE ROWS');
    expect(
      await su(
        async (s) =>
          (await s.query(`SELECT 1 FROM pg_catalog.pg_class WHERE relname = 'scratch_tmp' AND relpersistence = 't'`))
            .rowCount,
      ),
    ).toBe(1);
    const scoped = await as('scoped');
    await scoped.query('CREATE TABLE unqualified_ok (a int)');
    expect(await exists('unqualified_ok')).toBe(true);
    // No temporary objects for this role.
    expect((await pgError(() => scoped.query('CREATE TEMP TABLE nope (a int)'))).code).toBe('42501');
    expect(await exists('nope', true)).toBe(false);
  });
});

describe('bypass attempts are refused and never reach the database', () => {
  it('bodies and expressions are read by the policy', async () => {
    const c = await as('migrator');
    const attempts: [string, string][] = [
      [`CREATE VIEW ${S}.v_ssn AS SELECT name, ssn FROM public.customers`, 'v_ssn'],
      [`CREATE VIEW ${S}.v_star AS SELECT * FROM public.customers`, 'v_star'],
      [`CREATE MATERIALIZED VIEW ${S}.m_ssn AS SELECT ssn FROM public.customers`, 'm_ssn'],
      [`CREATE TABLE ${S}.t_secrets AS SELECT value FROM public.secrets`, 't_secrets'],
      [`CREATE TABLE ${S}.t_default (a text DEFAULT public.ddl_leak('x'))`, 't_default'],
      [`CREATE TABLE ${S}.t_check (a text CHECK (public.ddl_leak(a) IS NOT NULL))`, 't_check'],
      [`CREATE TABLE ${S}.t_fk (a int REFERENCES public.secrets (id))`, 't_fk'],
      [`CREATE TABLE ${S}.t_fkssn (a text REFERENCES public.customers (ssn))`, 't_fkssn'],
    ];
    for (const [sql, name] of attempts) {
      const e = await pgError(() => c.query(sql));
      expect(e.code, sql).toBe('42501');
      expect(await exists(name), name).toBe(false);
    }
  });

  it('an index or a column change over a denied column is judged by the server on a table pgwarden has not seen yet', async () => {
    const c = await as('migrator');
    await c.query(`CREATE TABLE ${S}.people (id int, name text, secret text)`);
    // Until pgwarden's snapshot knows its columns, any column of a relation with denied columns counts as all of them:
    // that refusal waits for the catalog refresh the CREATE TABLE asks for (catalog-follow.ts), so the index on an
    // allowed column is made at once.
    await c.query(`CREATE INDEX people_early ON ${S}.people (upper(name))`);
    expect(await exists('people_early')).toBe(true);
    await c.query(`CREATE INDEX people_name ON ${S}.people (upper(name))`);
    for (const [sql, what] of [
      [`CREATE INDEX people_secret ON ${S}.people ((upper(secret)))`, 'people_secret'],
      [`CREATE INDEX people_pred ON ${S}.people (id) WHERE secret = 'x'`, 'people_pred'],
      [`CREATE VIEW ${S}.people_v AS SELECT name, secret FROM ${S}.people`, 'people_v'],
      [`CREATE TABLE ${S}.people_copy AS SELECT * FROM ${S}.people`, 'people_copy'],
    ]) {
      const e = await pgError(() => c.query(sql as string));
      expect(e.code).toBe('42501');
      expect(`${e.message} ${e.detail ?? ''}`, sql).toContain('secret');
      expect(await exists(what as string)).toBe(false);
    }
    expect(await exists('people_name')).toBe(true);
    expect((await c.query(`SELECT name FROM ${S}.people`)).rows).toEqual([]);
    expect((await pgError(() => c.query(`SELECT secret FROM ${S}.people`))).code).toBe('42501');
    expect((await pgError(() => c.query(`ALTER TABLE ${S}.people ALTER COLUMN id TYPE text USING secret`))).code).toBe(
      '42501',
    );
    // Renames would move the values out from under the deniedColumns entry.
    expect((await pgError(() => c.query(`ALTER TABLE ${S}.people RENAME COLUMN secret TO leaked`))).code).toBe('42501');
    expect((await pgError(() => c.query(`ALTER TABLE ${S}.people RENAME TO folks`))).code).toBe('42501');
    expect((await pgError(() => c.query(`ALTER TABLE ${S}.people ALTER COLUMN secret SET NOT NULL`))).code).toBe(
      '42501',
    );
    expect(await exists('folks')).toBe(false);
    expect(
      (
        await su((s) =>
          s.query(
            `SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = '${S}.people'::regclass AND attnum > 0 ORDER BY attnum`,
          ),
        )
      ).rows.map((x) => x.attname),
    ).toEqual(['id', 'name', 'secret']);
    expect(
      (
        await su((s) =>
          s.query(
            `SELECT data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'people' AND column_name = 'id'`,
            [S],
          ),
        )
      ).rows,
    ).toEqual([{ data_type: 'integer' }]);
  });

  it('objects outside the schema, search_path games, quoted look-alikes, CASCADE and the always-refused kinds', async () => {
    const c = await as('migrator');
    const game = await as('pathgame');
    const refused: [pg.Client, string][] = [
      [c, 'CREATE TABLE public.escaped (a int)'],
      [c, 'CREATE TABLE escaped (a int)'],
      [c, `CREATE TABLE "DDL_SCRATCH".escaped (a int)`],
      [c, 'CREATE TABLE pg_catalog.escaped (a int)'],
      [c, 'CREATE TEMP TABLE public.escaped (a int)'],
      [game, 'CREATE TABLE escaped (a int)'],
      [game, 'SET search_path = public'],
      [c, 'ALTER TABLE public.canary ADD COLUMN escaped int'],
      [c, 'DROP TABLE public.canary'],
      [c, `DROP TABLE ${S}.items CASCADE`],
      [c, `ALTER TABLE ${S}.items OWNER TO analyst_ro`],
      [c, `CREATE FUNCTION ${S}.escaped() RETURNS int LANGUAGE sql AS 'SELECT 1'`],
      [c, `GRANT SELECT ON ${S}.items TO PUBLIC`],
      [c, 'CREATE SCHEMA escaped'],
      [c, `CREATE TRIGGER escaped BEFORE INSERT ON ${S}.items FOR EACH ROW EXECUTE FUNCTION public.ddl_leak()`],
      [c, 'DO $$ BEGIN DELETE FROM public.canary; END $$'],
    ];
    for (const [client, sql] of refused) expect((await pgError(() => client.query(sql))).code, sql).toBe('42501');
    expect(await exists('escaped', true)).toBe(false);
    expect(await canaryCount()).toBe(2);
    expect(
      await su(
        async (s) =>
          (
            await s.query(
              `SELECT pg_catalog.pg_get_userbyid(relowner) AS o FROM pg_catalog.pg_class WHERE oid = '${S}.items'::regclass`,
            )
          ).rows[0].o,
      ),
    ).toBe('pgwarden');
    expect(
      await su(
        async (s) =>
          (
            await s.query(
              `SELECT count(*)::int AS n FROM pg_catalog.pg_trigger WHERE tgrelid = '${S}.items'::regclass AND NOT tgisinternal`,
            )
          ).rows[0].n,
      ),
    ).toBe(0);
  });
});

describe('every path to the server is decided the same way', () => {
  it('the extended protocol, a Query of several statements, PREPARE and EXPLAIN', async () => {
    const c = await as('migrator');
    // Parse/Bind/Execute (node-postgres sends a Parse when values are given).
    await c.query({ text: `CREATE TABLE ${S}.via_parse (a int DEFAULT 1)`, values: [] });
    expect(await exists('via_parse')).toBe(true);
    expect(
      (
        await pgError(() =>
          c.query({ text: `CREATE VIEW ${S}.parse_ssn AS SELECT ssn FROM public.customers`, values: [] }),
        )
      ).code,
    ).toBe('42501');
    // One refused statement refuses the whole Query: the allowed CREATE before it never runs.
    expect(
      (
        await pgError(() =>
          c.query(
            `CREATE TABLE ${S}.first_ok (a int); CREATE VIEW ${S}.second_bad AS SELECT ssn FROM public.customers`,
          ),
        )
      ).code,
    ).toBe('42501');
    // PREPARE cannot hold a CREATE in PostgreSQL's grammar: the syntax error PostgreSQL itself sends.
    expect((await pgError(() => c.query(`PREPARE p AS CREATE TABLE ${S}.prepared (a int)`))).code).toBe('42601');
    expect(
      (await pgError(() => c.query(`EXPLAIN ANALYZE CREATE TABLE ${S}.explained AS SELECT ssn FROM public.customers`)))
        .code,
    ).toBe('42501');
    for (const name of ['parse_ssn', 'first_ok', 'second_bad', 'prepared', 'explained'])
      expect(await exists(name), name).toBe(false);
  });
});

describe('views the role made cannot redirect writes or locks', () => {
  it("a write or strong LOCK through a view in a ddl schema is refused, also once pgwarden's snapshot knows the view", async () => {
    const c = await as('migrator');
    await c.query(`CREATE VIEW ${S}.canary_v AS SELECT id, note FROM public.canary`);
    expect((await pgError(() => c.query('CREATE TEMP VIEW canary AS SELECT id, note FROM public.canary'))).code).toBe(
      '42501',
    );
    const attempts = [
      `DELETE FROM ${S}.canary_v`,
      `UPDATE ${S}.canary_v SET note = 'gone'`,
      `BEGIN; LOCK ${S}.canary_v IN ACCESS EXCLUSIVE MODE; COMMIT`,
    ];
    for (const sql of attempts) expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    await c.query('ROLLBACK');
    // The catalog re-read (a reload) makes pgwarden's own analysis know the view; both analyses still refuse.
    await tp.proxy.reload();
    expect((await pgError(() => c.query(`SELECT p FROM ${S}.people p`))).code).toBe('42501');
    for (const sql of attempts) expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    await c.query('ROLLBACK');
    expect(await canaryCount()).toBe(2);
    expect(
      await su(
        async (s) =>
          (await s.query(`SELECT count(*)::int AS n FROM public.canary WHERE note = 'still here'`)).rows[0].n,
      ),
    ).toBe(2);
  });
});

describe('maintenance and LOCK', () => {
  it('ANALYZE, VACUUM and LOCK on writable relations; ACCESS SHARE on readable ones', async () => {
    const c = await as('migrator');
    await c.query('ANALYZE public.canary');
    await c.query('VACUUM public.canary');
    expect((await pgError(() => c.query('ANALYZE public.orders'))).code).toBe('42501');
    expect((await pgError(() => c.query('VACUUM FULL public.canary'))).code).toBe('42501');
    await c.query('BEGIN');
    await c.query('LOCK public.canary IN ACCESS EXCLUSIVE MODE');
    await c.query('LOCK public.orders IN ACCESS SHARE MODE');
    expect((await pgError(() => c.query('LOCK public.orders IN EXCLUSIVE MODE'))).code).toBe('42501');
    await c.query('ROLLBACK');
    const r = await as('reader');
    await r.query('BEGIN');
    await r.query('LOCK public.orders IN ACCESS SHARE MODE');
    expect((await pgError(() => r.query('LOCK public.orders'))).code).toBe('42501');
    await r.query('ROLLBACK');
  });
});

describe('LISTEN, NOTIFY and pg_notify on named channels', () => {
  it('delivers on allowed channels and refuses the rest, including a channel that is not a constant', async () => {
    const listener = await as('reader');
    const got: string[] = [];
    listener.on('notification', (n) => got.push(`${n.channel}:${n.payload ?? ''}`));
    await listener.query('LISTEN jobs_done');
    expect((await pgError(() => listener.query('LISTEN other'))).code).toBe('42501');
    const c = await as('migrator');
    await c.query(`NOTIFY jobs_done, 'one'`);
    await c.query(`SELECT pg_notify('jobs_done', 'two')`);
    expect((await pgError(() => c.query(`NOTIFY jobs_other, 'x'`))).code).toBe('42501');
    expect((await pgError(() => c.query(`SELECT pg_notify(status, 'x') FROM public.orders LIMIT 1`))).code).toBe(
      '42501',
    );
    expect((await pgError(() => c.query(`SELECT pg_notify('jobs_' || 'done', 'three')`))).code).toBe('42501');
    expect((await pgError(() => listener.query(`NOTIFY jobs_done, 'ro'`))).code).toBe('42501');
    await listener.query('SELECT 1'); // a round trip after the notifications were sent
    for (let i = 0; i < 50 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(got).toEqual(['jobs_done:one', 'jobs_done:two']);
    await listener.query('UNLISTEN *');
  });
});

describe('pg_notify with the channel as a parameter (postgres.js sql.notify)', () => {
  it('is checked when bound, in text and binary format; a refused one never notifies', async () => {
    const spy = await superClient();
    try {
      const got: string[] = [];
      spy.on('notification', (n) => got.push(`${n.channel}:${n.payload ?? ''}`));
      for (const ch of ['jobs_done', 'jobs_other', 'other']) await spy.query(`LISTEN ${ch}`);
      const c = await as('migrator');
      await c.query('SELECT pg_notify($1, $2)', ['jobs_done', 'text']);
      // node-postgres sends a Buffer in binary format.
      await c.query('SELECT pg_notify($1, $2)', [Buffer.from('jobs_done'), 'binary']);
      // A named statement bound again with another channel: each Bind is checked.
      const named = { name: 'notify_named', text: 'SELECT pg_notify($1, $2)' };
      await c.query({ ...named, values: ['jobs_done', 'named'] });
      expect((await pgError(() => c.query({ ...named, values: ['jobs_other', 'x'] }))).code).toBe('42501');
      for (const values of [
        ['jobs_other', 'x'],
        [Buffer.from('other'), 'x'],
        [null, 'x'],
        [Buffer.from([0xff, 0xfe]), 'x'],
      ] as unknown[][]) {
        const e = await pgError(() => c.query('SELECT pg_notify($1, $2)', values));
        expect(e.code, String(values[0])).toBe('42501');
      }
      // Refused at Parse: $1 used elsewhere too (it might not be text there), or nothing bound (PREPARE, simple Query).
      expect((await pgError(() => c.query('SELECT pg_notify($1, $2) WHERE $1 <> $2', ['jobs_done', 'x']))).code).toBe(
        '42501',
      );
      expect((await pgError(() => c.query(`PREPARE pn (text) AS SELECT pg_notify($1, 'x')`))).code).toBe('42501');
      // The connection stays usable after a refused Bind.
      expect((await c.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
      await spy.query('SELECT 1');
      for (let i = 0; i < 50 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 100));
      await spy.query('SELECT 1');
      expect(got).toEqual(['jobs_done:text', 'jobs_done:binary', 'jobs_done:named']);
    } finally {
      await spy.end();
    }
  });
});

describe('DO', () => {
  it('runs only for a role with do: true', async () => {
    const d = await as('doer');
    await d.query(
      `DO $$ BEGIN INSERT INTO public.canary VALUES (3, 'from DO'); DELETE FROM public.canary WHERE id = 3; END $$`,
    );
    expect(await canaryCount()).toBe(2);
    const m = await as('migrator');
    expect((await pgError(() => m.query('DO $$ BEGIN PERFORM 1; END $$'))).code).toBe('42501');
  });
});
