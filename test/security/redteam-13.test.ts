// Red team 13: scoped DDL, LISTEN/NOTIFY, maintenance, LOCK, application_name and startup parameters attacked through a real pgwarden and Postgres, each asserting what reached the database.
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  canaryCount,
  connectPg,
  pgError,
  startTestProxy,
  superClient,
  withSuperClient as su,
  type TestProxy,
} from '../helpers/proxy.ts';

/** The schema the role may change (CREATE granted to pgwarden's upstream user). */
const S = 'rt13_scratch';
/** A schema the upstream user may also CREATE in, but which is not in the role's ddl.schemas: nothing may land here. */
const O = 'rt13_other';

const POLICY = `roles:
  builder:
    readOnly: false
    relations: [public.orders, public.canary, ${S}.*]
    deniedColumns: { ${S}.people: [secret] }
    write: { statements: [insert, update, delete], relations: [public.canary, ${S}.*] }
    ddl:
      kinds: [create_table, create_index, create_view, create_sequence, alter_table, drop, comment]
      schemas: [${S}]
      temporary: true
    maintenance: [analyze, vacuum]
    lock: true
    channels: { listen: [jobs_*], notify: [jobs_done] }
  scoped:
    readOnly: false
    relations: [${S}.*]
    deniedColumns: { ${S}.people: [secret] }
    write: { statements: [insert], relations: [${S}.*] }
    ddl: { kinds: [create_table, alter_table, drop], schemas: [${S}] }
    searchPath: [${S}]
  ddlonly:
    readOnly: false
    relations: [public.orders]
    write: { statements: [insert], relations: [public.canary] }
    ddl: { kinds: [create_index, alter_table, drop], schemas: [${S}] }
  reader:
    relations: [public.orders]
    channels: { listen: [jobs_done] }
  shadowro:
    mode: shadow
    relations: [public.orders]
  shadowrw:
    mode: shadow
    readOnly: false
    relations: [public.orders]
    write: { statements: [insert], relations: [public.canary] }
`;

/** Relations named `name` in `schema`, as the superuser sees them. */
async function relExists(schema: string, name: string): Promise<boolean> {
  return su(
    async (c) =>
      (
        await c.query(
          `SELECT 1 FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace WHERE k.relname = $1 AND n.nspname = $2`,
          [name, schema],
        )
      ).rowCount === 1,
  );
}

/** Relations in the other schema besides the inheritance child and partition the setup puts there: none, whatever the role tries. */
async function otherSchemaObjects(): Promise<string[]> {
  return su(async (c) =>
    (
      await c.query(
        `SELECT k.relname FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace WHERE n.nspname = $1 AND k.relname NOT IN ('child', 'ptab_1') ORDER BY 1`,
        [O],
      )
    ).rows.map((r) => r.relname as string),
  );
}

/** Constraints on the people table, as the superuser sees them. */
async function peopleConstraints(): Promise<string[]> {
  return su(async (c) =>
    (
      await c.query(`SELECT conname FROM pg_catalog.pg_constraint WHERE conrelid = '${S}.people'::regclass ORDER BY 1`)
    ).rows.map((r) => r.conname as string),
  );
}

/** The people table's columns and relation name, as the superuser sees them. */
async function peopleShape(): Promise<{ table: boolean; columns: string[] }> {
  return su(async (c) => ({
    table: (await c.query(`SELECT 1 FROM pg_catalog.pg_class WHERE oid = to_regclass('${S}.people')`)).rowCount === 1,
    columns: (
      await c.query(
        `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'people' ORDER BY ordinal_position`,
        [S],
      )
    ).rows.map((r) => r.column_name as string),
  }));
}

const SECRET = 'hunter2-top-secret';

let tp: TestProxy;
const clients: pg.Client[] = [];
async function as(role: string, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = await connectPg(tp, await tp.token({ role, sub: 'mallory', agent: 'bot' }), extra);
  c.on('error', () => {});
  clients.push(c);
  return c;
}

beforeAll(async () => {
  await su((c) =>
    c.query(`
    DROP SCHEMA IF EXISTS ${S} CASCADE;
    DROP SCHEMA IF EXISTS ${O} CASCADE;
    CREATE SCHEMA ${S};
    CREATE SCHEMA ${O};
    GRANT USAGE, CREATE ON SCHEMA ${S} TO pgwarden;
    GRANT USAGE, CREATE ON SCHEMA ${O} TO pgwarden;
    CREATE TABLE ${S}.people (id int PRIMARY KEY, name text, secret text);
    INSERT INTO ${S}.people VALUES (1, 'ann', '${SECRET}'), (2, 'bob', NULL);
    ALTER TABLE ${S}.people OWNER TO pgwarden;
    CREATE TABLE ${S}.probe (v text PRIMARY KEY);
    ALTER TABLE ${S}.probe OWNER TO pgwarden;
    CREATE TABLE ${S}.parent (a text);
    CREATE TABLE ${O}.child (b text) INHERITS (${S}.parent);
    INSERT INTO ${O}.child VALUES ('child-a', 'child-b');
    CREATE TABLE ${S}.ptab (k int, v text) PARTITION BY RANGE (k);
    CREATE TABLE ${O}.ptab_1 PARTITION OF ${S}.ptab FOR VALUES FROM (0) TO (100);
    INSERT INTO ${S}.ptab VALUES (1, 'kept');
    ALTER TABLE ${S}.parent OWNER TO pgwarden; ALTER TABLE ${O}.child OWNER TO pgwarden;
    ALTER TABLE ${S}.ptab OWNER TO pgwarden; ALTER TABLE ${O}.ptab_1 OWNER TO pgwarden;
  `),
  );
  // A domain whose DEFAULT, and one whose CHECK, call a function no role may call; each call is recorded.
  await su((c) =>
    c.query(`
    DROP TABLE IF EXISTS public.rt13_calls; CREATE TABLE public.rt13_calls (what text); GRANT INSERT ON public.rt13_calls TO pgwarden;
    DROP DOMAIN IF EXISTS public.rt13_dom_default; DROP DOMAIN IF EXISTS public.rt13_dom_check;
    CREATE OR REPLACE FUNCTION public.rt13_leak(w text) RETURNS text LANGUAGE sql VOLATILE AS $$ INSERT INTO public.rt13_calls VALUES (w) RETURNING w $$;
    CREATE DOMAIN public.rt13_dom_default AS text DEFAULT public.rt13_leak('domain default');
    CREATE DOMAIN public.rt13_dom_check AS text CHECK (public.rt13_leak('domain check') IS NOT NULL);
  `),
  );
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await su((c) =>
    c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE; DROP SCHEMA IF EXISTS ${O} CASCADE;
    DROP DOMAIN IF EXISTS public.rt13_dom_default; DROP DOMAIN IF EXISTS public.rt13_dom_check; DROP FUNCTION IF EXISTS public.rt13_leak(text); DROP TABLE IF EXISTS public.rt13_calls`),
  );
});

describe('deniedColumns cannot be escaped by DDL on the table that holds them', () => {
  it('the denied column itself is refused, before and after a reload', async () => {
    const c = await as('builder');
    expect((await pgError(() => c.query(`SELECT secret FROM ${S}.people`))).code).toBe('42501');
  });

  it('RENAME of the table or of the denied column is refused (the deny list is by name)', async () => {
    const c = await as('builder');
    const scoped = await as('scoped');
    for (const [client, sql] of [
      [c, `ALTER TABLE ${S}.people RENAME TO people_x`],
      [c, `ALTER TABLE ${S}.people RENAME COLUMN secret TO not_secret`],
      [c, `ALTER INDEX ${S}.people RENAME TO people_x`],
      [c, `ALTER TABLE IF EXISTS ${S}.people RENAME secret TO not_secret`],
      [scoped, 'ALTER TABLE people RENAME TO people_x'],
      [scoped, 'ALTER TABLE people RENAME COLUMN secret TO not_secret'],
    ] as const) {
      expect((await pgError(() => client.query(sql))).code, sql).toBe('42501');
    }
    expect(await peopleShape()).toEqual({ table: true, columns: ['id', 'name', 'secret'] });
    // Even had it been renamed, the next reload must not make the column readable under its new name.
    await tp.proxy.reload();
    expect((await pgError(() => c.query(`SELECT secret FROM ${S}.people`))).code).toBe('42501');
  });

  it('a foreign key FROM the denied column (an oracle on its values) is refused', async () => {
    const c = await as('builder');
    await c.query(`INSERT INTO ${S}.probe VALUES ('guess')`);
    for (const sql of [
      `ALTER TABLE ${S}.people ADD CONSTRAINT people_secret_fk FOREIGN KEY (secret) REFERENCES ${S}.probe (v) NOT VALID`,
      `ALTER TABLE ${S}.people ADD FOREIGN KEY (secret) REFERENCES ${S}.probe`,
      `ALTER TABLE ${S}.people ADD CONSTRAINT people_secret_fk2 FOREIGN KEY (id, secret) REFERENCES ${S}.people (id, secret)`,
    ]) {
      expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    }
    expect(await peopleConstraints()).toEqual(['people_pkey']);
  });

  it('SET NOT NULL on the denied column (it fails exactly when a value is NULL) is refused', async () => {
    const c = await as('builder');
    expect((await pgError(() => c.query(`ALTER TABLE ${S}.people ALTER COLUMN secret SET NOT NULL`))).code).toBe(
      '42501',
    );
    expect(
      await su(
        async (s) =>
          (
            await s.query(
              `SELECT attnotnull FROM pg_catalog.pg_attribute WHERE attrelid = '${S}.people'::regclass AND attname = 'secret'`,
            )
          ).rows[0].attnotnull,
      ),
    ).toBe(false);
  });

  it('indexes, checks, generated columns, USING and copies over the denied column stay refused', async () => {
    const c = await as('builder');
    for (const sql of [
      `CREATE UNIQUE INDEX people_secret_u ON ${S}.people (secret)`,
      `CREATE INDEX people_secret_i ON ${S}.people (id) INCLUDE (secret)`,
      `ALTER TABLE ${S}.people ADD CONSTRAINT people_secret_u UNIQUE (secret)`,
      `ALTER TABLE ${S}.people ADD CONSTRAINT people_secret_chk CHECK (secret <> 'x') NOT VALID`,
      `ALTER TABLE ${S}.people ADD COLUMN leak text GENERATED ALWAYS AS (upper(secret)) STORED`,
      `ALTER TABLE ${S}.people ALTER COLUMN name TYPE text USING secret`,
      `ALTER TABLE ${S}.people ALTER COLUMN secret TYPE varchar(3)`,
      `CREATE TABLE ${S}.leak AS SELECT id FROM ${S}.people WHERE secret LIKE 'h%'`,
      `CREATE VIEW ${S}.leak AS SELECT id FROM ${S}.people ORDER BY secret`,
    ]) {
      expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    }
    expect(await peopleShape()).toEqual({ table: true, columns: ['id', 'name', 'secret'] });
    expect(await relExists(S, 'leak')).toBe(false);
  });
});

describe('column types a role chooses bring their code into the decision', () => {
  it('a column of a domain whose DEFAULT or CHECK calls a denied function is refused when made, and nothing runs', async () => {
    const c = await as('builder');
    await c.query(`CREATE TABLE ${S}.dom_base (id int)`);
    await c.query(`INSERT INTO ${S}.dom_base VALUES (1)`);
    for (const sql of [
      `CREATE TABLE ${S}.dom_t (id int, c public.rt13_dom_default)`,
      `CREATE TABLE ${S}.dom_t (id int, c public.rt13_dom_check)`,
      // Adding the column computes the domain's DEFAULT for every existing row, there and then.
      `ALTER TABLE ${S}.dom_base ADD COLUMN c public.rt13_dom_default`,
      `ALTER TABLE ${S}.dom_base ADD COLUMN c public.rt13_dom_check`,
      `ALTER TABLE ${S}.dom_base ADD COLUMN c public.rt13_dom_default[]`,
    ]) {
      expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    }
    expect(await relExists(S, 'dom_t')).toBe(false);
    expect(await su(async (s) => (await s.query('SELECT what FROM public.rt13_calls')).rows)).toEqual([]);
    // Plain types are unaffected.
    await c.query(`ALTER TABLE ${S}.dom_base ADD COLUMN plain text[], ADD COLUMN n numeric(10, 2)`);
    await c.query(`CREATE TABLE ${S}.dom_ok (id serial, note varchar(20))`);
  });
});

describe('objects land only in ddl.schemas', () => {
  it('DDL on a parent does not reach its inheritance children or partitions in another schema', async () => {
    const childShape = () =>
      su(async (c) => ({
        child: (
          await c.query(
            `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'child' ORDER BY ordinal_position`,
            [O],
          )
        ).rows.map((r) => r.column_name as string),
        partition: (await c.query(`SELECT count(*)::int AS n FROM ${O}.ptab_1`)).rows[0].n as number,
        indexes: (await c.query(`SELECT count(*)::int AS n FROM pg_catalog.pg_indexes WHERE schemaname = $1`, [O]))
          .rows[0].n as number,
        constraints: (
          await c.query(
            `SELECT count(*)::int AS n FROM pg_catalog.pg_constraint WHERE conrelid = '${O}.child'::regclass`,
          )
        ).rows[0].n as number,
      }));
    const before = await childShape();
    expect(before).toEqual({ child: ['a', 'b'], partition: 1, indexes: 0, constraints: 0 });
    for (const role of ['builder', 'ddlonly']) {
      const c = await as(role);
      for (const sql of [
        `ALTER TABLE ${S}.parent ADD COLUMN z int`,
        `ALTER TABLE ${S}.parent ALTER COLUMN a TYPE varchar(100)`,
        `ALTER TABLE ${S}.parent ADD CONSTRAINT parent_chk CHECK (a <> 'x')`,
        `ALTER TABLE ${S}.parent RENAME COLUMN a TO renamed`,
        `ALTER TABLE ${S}.parent ALTER COLUMN a SET NOT NULL`,
        `CREATE INDEX ptab_v ON ${S}.ptab (v)`,
        `ALTER TABLE ${S}.ptab ADD COLUMN z int`,
        `DROP TABLE ${S}.ptab`,
        `DROP TABLE ${S}.probe, ${S}.ptab`,
      ]) {
        expect((await pgError(() => c.query(sql))).code, `${role}: ${sql}`).toBe('42501');
      }
    }
    expect(await childShape()).toEqual(before);
    expect(await relExists(S, 'probe')).toBe(true);
  });

  it("an identity column's SEQUENCE NAME in another schema is refused (CREATE TABLE, ADD COLUMN, ADD IDENTITY)", async () => {
    const c = await as('builder');
    await c.query(`CREATE TABLE ${S}.ident_base (id int NOT NULL)`);
    // PostgreSQL looks the table of the identity's OWNED BY up in the sequence's schema: with a table of the same name
    // there (a common case), the sequence is made in that schema and tied to the other table's column.
    await su((s) => s.query(`CREATE TABLE ${O}.twin (id int NOT NULL); ALTER TABLE ${O}.twin OWNER TO pgwarden`));
    await c.query(`CREATE TABLE ${S}.twin (id int NOT NULL)`);
    for (const sql of [
      `ALTER TABLE ${S}.twin ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ${O}.twin_seq)`,
      `ALTER TABLE ${S}.twin ADD COLUMN id2 int GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ${O}.twin_seq2)`,
      `CREATE TABLE ${S}.twin2 (id int GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ${O}.twin_seq3), CHECK (id > 0))`,
    ]) {
      const e = await pgError(() => c.query(sql)).catch((err: unknown) => ({ code: `succeeded (${String(err)})` }));
      expect(e.code, sql).toBe('42501');
    }
    expect(await otherSchemaObjects()).toEqual(['twin']);
    await su((s) => s.query(`DROP TABLE ${O}.twin`));
    for (const sql of [
      `CREATE TABLE ${S}.ident1 (id int GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ${O}.seq1))`,
      `CREATE TABLE ${S}.ident2 (id bigint GENERATED BY DEFAULT AS IDENTITY (START 5 SEQUENCE NAME ${O}.seq2))`,
      `ALTER TABLE ${S}.ident_base ADD COLUMN id2 int GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ${O}.seq3)`,
      `ALTER TABLE ${S}.ident_base ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ${O}.seq4)`,
      `CREATE TABLE ${S}.ident5 (id int GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME public.seq5))`,
    ]) {
      expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    }
    expect(await otherSchemaObjects()).toEqual([]);
    expect(await relExists('public', 'seq5')).toBe(false);
    for (const t of ['ident1', 'ident2', 'ident5']) expect(await relExists(S, t), t).toBe(false);
    // The same identity with its sequence in the allowed schema (or unnamed) is fine.
    await c.query(`CREATE TABLE ${S}.ident_ok (id int GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME ${S}.ident_ok_seq))`);
    expect(await relExists(S, 'ident_ok_seq')).toBe(true);
  });

  it("a foreign key to a relation the role may only read (it adds triggers there and blocks others' deletes) is refused", async () => {
    const c = await as('builder');
    const triggers = () =>
      su(
        async (x) =>
          (
            await x.query(
              `SELECT count(*)::int AS n FROM pg_catalog.pg_trigger WHERE tgrelid = 'public.orders'::regclass`,
            )
          ).rows[0].n as number,
      );
    const before = await triggers();
    await su((x) => x.query('GRANT REFERENCES ON public.orders TO pgwarden'));
    try {
      await c.query(`CREATE TABLE ${S}.fk_base (order_id int)`);
      for (const sql of [
        `CREATE TABLE ${S}.fk_orders (order_id int REFERENCES public.orders (id))`,
        `CREATE TABLE ${S}.fk_orders (order_id int, FOREIGN KEY (order_id) REFERENCES public.orders (id) ON DELETE CASCADE)`,
        `ALTER TABLE ${S}.fk_base ADD CONSTRAINT fk FOREIGN KEY (order_id) REFERENCES public.orders (id) NOT VALID`,
        `ALTER TABLE ${S}.fk_base ADD COLUMN o2 int REFERENCES public.orders`,
      ]) {
        expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
      }
      expect(await relExists(S, 'fk_orders')).toBe(false);
      expect(await triggers()).toBe(before);
      // Within the schema it may change, foreign keys are fine.
      await c.query(`CREATE TABLE ${S}.fk_ok (v text REFERENCES ${S}.probe (v))`);
    } finally {
      await su((x) => x.query('REVOKE REFERENCES ON public.orders FROM pgwarden'));
    }
  });

  it('OWNED BY a table in another schema is refused on CREATE SEQUENCE, ALTER SEQUENCE and identity options', async () => {
    const c = await as('builder');
    await su((s) => s.query(`CREATE TABLE ${O}.owner_t (a int); ALTER TABLE ${O}.owner_t OWNER TO pgwarden`));
    try {
      await c.query(`CREATE SEQUENCE ${S}.free_seq`);
      for (const sql of [
        `CREATE SEQUENCE ${S}.owned_seq OWNED BY ${O}.owner_t.a`,
        `ALTER SEQUENCE ${S}.free_seq OWNED BY ${O}.owner_t.a`,
        `ALTER TABLE ${S}.free_seq OWNER TO PUBLIC`,
      ]) {
        expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
      }
      expect(
        await su(
          async (s) =>
            (
              await s.query(
                `SELECT count(*)::int AS n FROM pg_catalog.pg_depend WHERE refobjid = '${O}.owner_t'::regclass AND deptype = 'a'`,
              )
            ).rows[0].n,
        ),
      ).toBe(0);
    } finally {
      await su((s) => s.query(`DROP TABLE ${O}.owner_t`));
    }
  });

  it('extended protocol (Parse) and multi-statement texts: one refused statement sends none', async () => {
    const c = await as('builder');
    expect((await pgError(() => c.query({ text: `CREATE TABLE ${O}.via_parse (a int)`, values: [] }))).code).toBe(
      '42501',
    );
    expect(
      (await pgError(() => c.query(`CREATE TABLE ${S}.multi_ok (a int); CREATE TABLE ${O}.multi_bad (a int)`))).code,
    ).toBe('42501');
    expect(
      (
        await pgError(() =>
          c.query(`CREATE TABLE ${S}.multi_ok2 (a int); SET search_path = ${O}; CREATE TABLE multi_bad2 (a int)`),
        )
      ).code,
    ).toBe('42501');
    // DDL wrapped in EXPLAIN ANALYZE (which runs it) is not a way around the DDL rules.
    for (const sql of [
      `EXPLAIN ANALYZE CREATE TABLE ${O}.via_explain AS SELECT 1 AS a`,
      `EXPLAIN (ANALYZE) CREATE MATERIALIZED VIEW ${O}.via_explain_mv AS SELECT 1 AS a`,
      `EXPLAIN ANALYZE SELECT 1 AS a INTO ${O}.via_explain_into`,
      `EXPLAIN (ANALYZE, FORMAT JSON) CREATE TABLE ${S}.via_explain AS SELECT secret FROM ${S}.people`,
    ]) {
      expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    }
    expect(await relExists(S, 'via_explain')).toBe(false);
    expect(await otherSchemaObjects()).toEqual([]);
    expect(await relExists(S, 'multi_ok')).toBe(false);
    expect(await relExists(S, 'multi_ok2')).toBe(false);
  });
});

describe('LISTEN / NOTIFY / pg_notify', () => {
  it('case, quoting and casts cannot reach a channel that is not allowed', async () => {
    const listener = await superClient();
    const got: string[] = [];
    listener.on('notification', (n) => got.push(n.channel));
    try {
      for (const ch of ['"Jobs_done"', 'job', '"jobs_done "', 'jobs_done_x']) await listener.query(`LISTEN ${ch}`);
      const c = await as('builder');
      for (const sql of [
        `NOTIFY "Jobs_done"`,
        `NOTIFY "jobs_done "`,
        `SELECT pg_notify('Jobs_done', 'x')`,
        `SELECT pg_notify('jobs_done'::char(3), 'x')`,
        `SELECT pg_notify('jobs_done'::varchar(3), 'x')`,
        `SELECT pg_notify(('jobs_done'::name)::text, 'x')`,
        `SELECT pg_notify(left('jobs_done', 3), 'x')`,
        `WITH c(ch) AS (SELECT 'job') SELECT pg_notify(ch, 'x') FROM c`,
        `SELECT pg_notify('jobs_done_x', 'x')`,
      ]) {
        expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
      }
      // Allowed once, then the same text with another channel constant: the decision is not reused across literals.
      await c.query(`SELECT pg_notify('jobs_done', 'ok')`);
      expect((await pgError(() => c.query(`SELECT pg_notify('job', 'ok')`))).code).toBe('42501');
      expect((await pgError(() => c.query({ text: 'SELECT pg_notify($1, $2)', values: ['job', 'x'] }))).code).toBe(
        '42501',
      );
      const r = await as('reader');
      expect((await pgError(() => r.query(`SELECT pg_notify('jobs_done', 'ro')`))).code).toBe('42501');
      expect((await pgError(() => r.query(`NOTIFY jobs_done`))).code).toBe('42501');
      await listener.query('SELECT 1');
      await new Promise((res) => setTimeout(res, 100));
      await listener.query('SELECT 1');
      expect(got).toEqual([]);
    } finally {
      await listener.end();
    }
  });
});

describe('maintenance and LOCK', () => {
  it('ANALYZE / VACUUM of the whole database, FULL in every spelling, and unlisted relations are refused', async () => {
    const c = await as('builder');
    for (const sql of [
      'ANALYZE',
      'VACUUM',
      'VACUUM ANALYZE',
      'VACUUM (ANALYZE)',
      'VACUUM FULL',
      'VACUUM FULL public.canary',
      'VACUUM (FULL) public.canary',
      'VACUUM (FULL true) public.canary',
      'VACUUM (FULL 1) public.canary',
      'VACUUM (FULL on) public.canary',
      'VACUUM FULL ANALYZE public.canary',
      'ANALYZE public.orders',
      'VACUUM public.orders',
      'ANALYZE public.canary, public.orders',
      'VACUUM pg_catalog.pg_class',
      'ANALYZE pg_catalog.pg_authid',
    ]) {
      expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    }
  });

  it("LOCK of a relation outside the role's reach, a system catalog, or through an unqualified name is refused", async () => {
    const c = await as('builder');
    await c.query('BEGIN');
    try {
      for (const sql of [
        'LOCK public.customers IN ACCESS SHARE MODE',
        'LOCK pg_catalog.pg_class IN ACCESS SHARE MODE',
        'LOCK public.orders IN ROW EXCLUSIVE MODE',
        'LOCK TABLE ONLY public.orders',
      ]) {
        expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
        await c.query('ROLLBACK');
        await c.query('BEGIN');
      }
    } finally {
      await c.query('ROLLBACK');
    }
  });
});

describe('shadow mode keeps the pinned settings pinned', () => {
  it("pg_settings' UPDATE rule, DO blocks and functions the role would make cannot change them", async () => {
    const rw = await as('shadowrw');
    const ro = await as('shadowro');
    const shown = async (c: pg.Client, name: string) =>
      (await c.query(`SELECT current_setting('${name}') AS v`)).rows[0].v as string;
    for (const [c, sql] of [
      [rw, `UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'`],
      [rw, `UPDATE pg_catalog.pg_settings SET setting = 'pgwarden:admin' WHERE name = 'application_name'`],
      [ro, `DO $$ BEGIN PERFORM set_config('pgwarden.sub', 'admin', false); END $$`],
      [rw, `SELECT 1; DO $$ BEGIN PERFORM set_config('client_encoding', 'SJIS', false); END $$`],
      [
        rw,
        `CREATE FUNCTION ${S}.pin_escape() RETURNS text LANGUAGE sql AS $f$ SELECT set_config('pgwarden.sub', 'admin', false) $f$`,
      ],
    ] as const) {
      expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
    }
    for (const c of [rw, ro]) {
      expect(await shown(c, 'client_encoding')).toBe('UTF8');
      expect(await shown(c, 'pgwarden.sub')).toBe('mallory');
      expect((await shown(c, 'application_name')).startsWith('pgwarden:mallory/bot')).toBe(true);
    }
    expect(
      await su(
        async (x) =>
          (await x.query(`SELECT count(*)::int AS n FROM pg_catalog.pg_proc WHERE proname = 'pin_escape'`)).rows[0].n,
      ),
    ).toBe(0);
    // Still shadow mode: what only the data policy would refuse runs, and is logged.
    expect((await rw.query('SELECT count(*)::int AS n FROM public.customers')).rows[0].n).toBeGreaterThan(0);
  });
});

describe('application_name and startup parameters', () => {
  const PREFIX = 'pgwarden:mallory/bot';
  async function shown(c: pg.Client): Promise<string> {
    return (await c.query('SHOW application_name')).rows[0].application_name as string;
  }

  it('no statement can set a name without the identity prefix', async () => {
    const c = await as('builder');
    for (const sql of [
      `SELECT set_config('application_name', 'pgwarden:admin', false)`,
      `SELECT * FROM (SELECT set_config('application_name', 'pgwarden:admin', false)) s`,
      `UPDATE pg_catalog.pg_settings SET setting = 'pgwarden:admin' WHERE name = 'application_name'`,
      `SET application_name = 'a', 'b'`,
      `ALTER ROLE CURRENT_USER SET application_name = 'pgwarden:admin'`,
      `DO $$ BEGIN PERFORM set_config('application_name', 'pgwarden:admin', false); END $$`,
    ]) {
      expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
      expect(await shown(c), sql).toBe(PREFIX);
    }
    await c.query(`SET "Application_Name" = 'pgwarden:admin'`);
    expect(await shown(c)).toBe(`${PREFIX} pgwarden:admin`);
    await c.query(`SET application_name = '${'x'.repeat(100)}'`);
    expect((await shown(c)).startsWith(`${PREFIX} x`)).toBe(true);
    await c.query('RESET application_name');
    expect(await shown(c)).toBe(PREFIX);
  });

  it('options (PGOPTIONS) cannot name the session without the prefix or carry a pinned setting', async () => {
    for (const options of [
      '-c application_name=pgwarden:admin',
      '--application-name=pgwarden:admin',
      '-capplication_name=pgwarden:admin',
      '-c Application_Name=pgwarden:admin',
    ]) {
      const c = await as('builder', { options });
      expect((await shown(c)).startsWith(`${PREFIX} `), options).toBe(true);
    }
    for (const options of [
      // The role's own search_path is a no-op and accepted since c4ae6ed (docs/policy.md, settings); any other is not.
      '-c search_path=pg_temp,public',
      '--search-path=evil,public',
      '-c client_encoding=SJIS',
      '-c pgwarden.sub=admin',
      '-c standard_conforming_strings=off',
      '-c session_authorization=postgres',
      '-c role=postgres',
      '-c default_transaction_read_only=off',
    ]) {
      const role = options.includes('read_only') ? 'reader' : 'builder';
      const e = await pgError(async () => {
        const c = new pg.Client(tp.pgConfig(await tp.token({ role, sub: 'mallory', agent: 'bot' }), { options }));
        c.on('error', () => {});
        try {
          await c.connect();
          await c.query('SELECT 1');
        } finally {
          await c.end().catch(() => {});
        }
      });
      expect(e.code, options).toBe('42501');
    }
  });

  it('identities too long for NAMEDATALEN still show different names (cut, then a digest of the whole)', async () => {
    const long = 'tenant-0123456789-'.repeat(3);
    const seen: string[] = [];
    for (const [sub, agent] of [
      [long, 'agent-a'],
      [long, 'agent-b'],
      [`${long}x`, undefined],
      [long, undefined],
    ] as const) {
      const c = await connectPg(tp, await tp.token({ role: 'reader', sub, ...(agent ? { agent } : {}) }), {
        application_name: 'app',
      });
      clients.push(c);
      const name = (await c.query('SHOW application_name')).rows[0].application_name as string;
      const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      expect(
        await su(
          async (s) =>
            (await s.query('SELECT application_name FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0]
              .application_name,
        ),
      ).toBe(name);
      expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
      expect(name.startsWith(`pgwarden:${long.slice(0, 41)}`)).toBe(true);
      seen.push(name);
    }
    expect(new Set(seen).size).toBe(seen.length);
  });

  it('read-only enforcement cannot be switched off by a startup parameter in any spelling', async () => {
    const spellings: Record<string, string>[] = [
      { Default_Transaction_Read_Only: 'off' },
      { transaction_read_only: 'off' },
      { TRANSACTION_READ_ONLY: 'false' },
      { default_transaction_read_only: '0' },
    ];
    for (const connection of spellings) {
      const sql = postgres({
        host: '127.0.0.1',
        port: tp.proxy.port,
        user: 'rt13-ro',
        database: 'app',
        pass: await tp.token({ role: 'reader', sub: 'rt13-ro' }),
        max: 1,
        fetch_types: false,
        connection,
        onnotice: () => {},
      });
      try {
        const err = await sql`SELECT current_setting('transaction_read_only') AS ro`.then(
          (r) => r,
          (e: { code?: string; severity?: string }) => e,
        );
        expect(
          [(err as { code?: string }).code, (err as { severity?: string }).severity],
          JSON.stringify(connection),
        ).toEqual(['42501', 'FATAL']);
      } finally {
        await sql.end({ timeout: 2 });
      }
    }
  });
});

it('the canary is untouched', async () => {
  expect(await canaryCount()).toBe(2);
});
