// Narrowed tokens (issue 16, pgwarden_narrow) against the real Postgres: relations, only-columns (a column added later too), readOnly, limits, both protocols, cache isolation, reload, malformed claims.
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginError, pgError, startTestProxy, withSuperClient, type TestProxy } from '../helpers/proxy.ts';
import { SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { until } from '../helpers/until.ts';

const S = 'narrow_it';

const POLICY = `roles:
  wide:
    readOnly: false
    relations: [${S}.people, ${S}.notes, ${S}.canary, ${S}.later, ${S}.people_v]
    deniedColumns: { ${S}.people: [ssn] }
    write: { statements: [insert, update, delete], relations: [${S}.people, ${S}.notes, ${S}.canary] }
    maxRows: 100
    onRowCap: truncate
    statementTimeout: 5s
    channels: { listen: [jobs] }
  cat:
    readOnly: true
    relations: [${S}.people, ${S}.notes]
    catalog: scoped
`;

let tp: TestProxy;
const clients: pg.Client[] = [];

/** A token for role `wide` (unless `claims` says otherwise) with the given pgwarden_narrow claim (absent: none). */
async function token(narrow?: unknown, claims: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return tp.sign({
    iss: 'pgwarden-test',
    aud: 'pgwarden',
    sub: 'narrow-sub',
    agent: 'narrow-agent',
    role: 'wide',
    iat: now,
    exp: now + 300,
    jti: `narrow-${Math.random()}`,
    ...(narrow === undefined ? {} : { pgwarden_narrow: narrow }),
    ...claims,
  });
}

async function connect(narrow?: unknown): Promise<pg.Client> {
  const c = new pg.Client(tp.pgConfig(await token(narrow)));
  c.on('error', () => {});
  await c.connect();
  clients.push(c);
  return c;
}

async function refused(
  c: pg.Client,
  q: string | pg.QueryConfig,
): Promise<{ code?: string; message: string; detail?: string }> {
  return await pgError(() => c.query(q));
}

const canaryRows = () =>
  withSuperClient(async (c) => (await c.query(`SELECT id, note FROM ${S}.canary ORDER BY id`)).rows);

beforeAll(async () => {
  await withSuperClient(async (c) => {
    await c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`);
    await c.query(`CREATE SCHEMA ${S}`);
    await c.query(`CREATE TABLE ${S}.people (id int PRIMARY KEY, name text, email text, ssn text)`);
    await c.query(`CREATE TABLE ${S}.notes (id int PRIMARY KEY, body text)`);
    await c.query(`CREATE TABLE ${S}.canary (id int PRIMARY KEY, note text NOT NULL)`);
    await c.query(`CREATE TABLE ${S}.later (id int PRIMARY KEY, name text)`);
    await c.query(`INSERT INTO ${S}.later VALUES (1, 'one')`);
    await c.query(`CREATE VIEW ${S}.people_v AS SELECT id, email AS contact FROM ${S}.people`);
    await c.query(
      `INSERT INTO ${S}.people SELECT g, 'person ' || g, 'p' || g || '@example.com', 'ssn-' || g FROM generate_series(1, 20) g`,
    );
    await c.query(`INSERT INTO ${S}.notes VALUES (1, 'note one'), (2, 'note two')`);
    await c.query(`INSERT INTO ${S}.canary VALUES (1, 'still here')`);
    await c.query(`GRANT USAGE ON SCHEMA ${S} TO ${SAMPLE_UPSTREAM_USER}`);
    await c.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${S} TO ${SAMPLE_UPSTREAM_USER}`);
  });
  tp = await startTestProxy({ policy: POLICY });
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await withSuperClient((c) => c.query(`DROP SCHEMA IF EXISTS ${S} CASCADE`));
});

describe('narrowed relations', () => {
  it('narrowed to one relation: another relation of the role is refused 42501 with its reason; the role itself reads it', async () => {
    const narrow = await connect({ relations: [`${S}.people`] });
    expect((await narrow.query(`SELECT id, name FROM ${S}.people WHERE id = 1`)).rows).toEqual([
      { id: 1, name: 'person 1' },
    ]);
    const e = await refused(narrow, `SELECT body FROM ${S}.notes`);
    expect(e.code).toBe('42501');
    expect(e.message).toMatch(/permission denied by pgwarden/);
    expect(e.detail).toMatch(/^reason=scope_missing\n.*as narrowed by the token/);
    // Writes are narrowed by relations too when the claim has no write.relations.
    expect((await refused(narrow, `DELETE FROM ${S}.canary`)).code).toBe('42501');
    expect(await canaryRows()).toEqual([{ id: 1, note: 'still here' }]);
    const wide = await connect();
    expect((await wide.query(`SELECT body FROM ${S}.notes ORDER BY id`)).rows).toHaveLength(2);
  });

  it('pgwarden.scope lists the narrowed scope and pgwarden.session / SHOW say the token is narrowed', async () => {
    const c = await connect({ relations: [`${S}.people`], columns: { [`${S}.people`]: ['id', 'name'] }, maxRows: 7 });
    const scope = await c.query(
      `SELECT table_schema || '.' || table_name || '.' || column_name AS c FROM pgwarden.scope ORDER BY 1`,
    );
    expect(scope.rows.map((r) => r.c)).toEqual([`${S}.people.id`, `${S}.people.name`]);
    const s = await c.query('SELECT narrowed, narrowing, max_rows FROM pgwarden.session');
    expect(s.rows[0].narrowed).toBe(true);
    expect(JSON.parse(s.rows[0].narrowing)).toEqual({
      relations: [`${S}.people`],
      columns: { [`${S}.people`]: ['id', 'name'] },
      maxRows: 7,
    });
    expect(s.rows[0].max_rows).toBe('7');
    expect((await c.query('SHOW pgwarden.narrowed')).rows[0]['pgwarden.narrowed']).toBe('true');
    const wide = await connect();
    expect((await wide.query('SHOW pgwarden.narrowed')).rows[0]['pgwarden.narrowed']).toBe('false');
  });
});

describe('catalog: scoped', () => {
  it("the catalog queries of a scoped role show only the narrowing's relations and columns", async () => {
    const list = async (narrow?: unknown) => {
      const c = new pg.Client(tp.pgConfig(await token(narrow, { role: 'cat' })));
      c.on('error', () => {});
      await c.connect();
      clients.push(c);
      const cols = await c.query(
        `SELECT table_name || '.' || column_name AS c FROM information_schema.columns WHERE table_schema = '${S}' ORDER BY 1`,
      );
      const tables = await c.query(
        `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '${S}' AND c.relkind = 'r' ORDER BY 1`,
      );
      const atts = await c.query(
        `SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = 'people' AND a.attnum > 0 ORDER BY a.attnum`,
      );
      return {
        cols: cols.rows.map((r) => r.c),
        tables: tables.rows.map((r) => r.relname),
        atts: atts.rows.map((r) => r.attname),
      };
    };
    expect(await list({ relations: [`${S}.people`], columns: { [`${S}.people`]: ['id', 'name'] } })).toEqual({
      cols: ['people.id', 'people.name'],
      tables: ['people'],
      atts: ['id', 'name'],
    });
    const wide = await list();
    expect(wide.tables).toEqual(['notes', 'people']);
    expect(wide.atts).toEqual(['id', 'name', 'email', 'ssn']);
  });
});

describe('only these columns', () => {
  const P = `${S}.people`;
  const narrowing = { columns: { [P]: ['id', 'name', 'ssn'] } };

  it('every other column is refused in every access form, simple and extended protocol; listed ones work', async () => {
    const c = await connect(narrowing);
    expect((await c.query(`SELECT id, name FROM ${P} WHERE id = 2`)).rows).toEqual([{ id: 2, name: 'person 2' }]);
    expect(
      (await c.query({ text: `SELECT name FROM ${P} WHERE id = $1`, values: [3], name: 'ok_named' })).rows,
    ).toEqual([{ name: 'person 3' }]);
    expect((await c.query(`SELECT count(*)::int AS n FROM ${P} p JOIN ${P} q USING (id)`)).rows[0].n).toBe(20);
    const forms = [
      `SELECT email FROM ${P}`,
      `SELECT * FROM ${P}`,
      `SELECT p.* FROM ${P} p`,
      `SELECT p FROM ${P} p`,
      `SELECT row_to_json(p) FROM ${P} p`,
      `SELECT id FROM ${P} WHERE email LIKE 'p1%'`,
      `SELECT id FROM ${P} ORDER BY email`,
      `SELECT count(*) FROM ${P} GROUP BY email`,
      `SELECT p.id FROM ${P} p JOIN ${P} q USING (email)`,
      `SELECT id FROM ${P} NATURAL JOIN ${S}.notes`,
      `INSERT INTO ${P} (id, name) VALUES (100, 'x') RETURNING *`,
      `INSERT INTO ${P} (id, name) VALUES (101, 'x') RETURNING email`,
      `UPDATE ${P} SET name = email WHERE id = 1`,
      // The role's deniedColumns still apply to a column the narrowing lists.
      `SELECT ssn FROM ${P}`,
    ];
    for (const sql of forms) {
      for (const q of [sql, { text: sql, values: [] }, { text: sql, values: [], name: `n${forms.indexOf(sql)}` }]) {
        const e = await refused(c, q);
        expect(e.code, sql).toBe('42501');
        expect(e.detail, sql).toMatch(/^reason=scope_missing/);
      }
    }
    // Nothing reached the table: no row was inserted, no name changed.
    await withSuperClient(async (s) => {
      expect((await s.query(`SELECT count(*)::int AS n FROM ${P} WHERE id >= 100`)).rows[0].n).toBe(0);
      expect((await s.query(`SELECT name FROM ${P} WHERE id = 1`)).rows[0].name).toBe('person 1');
    });
  });

  it('a long statement (decided on a worker thread) is judged with the narrowed role too', async () => {
    const c = await connect(narrowing);
    const pad = `/* ${'x'.repeat(6000)} */`;
    expect((await c.query(`SELECT id ${pad} FROM ${P} WHERE id = 1`)).rows).toEqual([{ id: 1 }]);
    for (const q of [`SELECT email ${pad} FROM ${P}`, { text: `SELECT * ${pad} FROM ${P}`, values: [] }]) {
      const e = await refused(c, q);
      expect(e.code).toBe('42501');
      expect(e.detail).toMatch(/^reason=scope_missing\n.*narrowing/);
    }
  });

  it('a view over the limited relation is refused unless the narrowing names it (it shows email as contact)', async () => {
    const c = await connect(narrowing);
    for (const q of [`SELECT contact FROM ${S}.people_v`, { text: `SELECT id FROM ${S}.people_v`, values: [] }]) {
      const e = await refused(c, q);
      expect(e.code).toBe('42501');
      expect(e.detail).toMatch(/^reason=scope_missing\n.*names the view itself/);
    }
    const named = await connect({ ...narrowing, relations: [P, `${S}.people_v`] });
    expect((await named.query(`SELECT contact FROM ${S}.people_v WHERE id = 1`)).rows).toEqual([
      { contact: 'p1@example.com' },
    ]);
  });

  it('a column added to the table after the token was issued is refused, by name and in a whole row', async () => {
    // ${S}.later has not been analysed by the server yet in this process: the column is new to both analyses.
    const L = `${S}.later`;
    const c = await connect({ columns: { [L]: ['id', 'name'] } });
    await withSuperClient((s) => s.query(`ALTER TABLE ${L} ADD COLUMN added_later text DEFAULT 'hidden'`));
    for (const sql of [
      `SELECT added_later FROM ${L}`,
      `SELECT l.added_later FROM ${L} l`,
      `SELECT * FROM ${L}`,
      `SELECT id FROM ${L} WHERE added_later = 'hidden'`,
      `SELECT id, name FROM ${L} ORDER BY added_later`,
    ]) {
      for (const q of [sql, { text: sql, values: [] }]) {
        const e = await refused(c, q);
        expect(e.code, sql).toBe('42501');
        expect(e.message, sql).toMatch(/this token may not use|whose columns the token limits/);
        expect(e.detail, sql).toMatch(/^reason=scope_missing\n.*narrowing/);
      }
    }
    expect((await c.query(`SELECT id, name FROM ${L} ORDER BY id`)).rows).toEqual([{ id: 1, name: 'one' }]);
    // The wide token (no column list) reads it: the refusal is the narrowing's.
    const wide = await connect();
    expect((await wide.query(`SELECT added_later FROM ${L}`)).rows).toEqual([{ added_later: 'hidden' }]);
  });
});

describe('readOnly and limits', () => {
  it('readOnly: true refuses INSERT (42501) and the canary row is unchanged; the session is read-only upstream too', async () => {
    const c = await connect({ readOnly: true });
    for (const q of [
      `INSERT INTO ${S}.canary VALUES (2, 'planted')`,
      { text: `UPDATE ${S}.canary SET note = $1`, values: ['overwritten'] },
      `DELETE FROM ${S}.canary`,
    ]) {
      const e = await refused(c, q);
      expect(e.code).toBe('42501');
      expect(e.detail).toMatch(/^reason=policy_denied\n.*read-only as narrowed by the token/);
    }
    expect((await c.query('SHOW default_transaction_read_only')).rows[0].default_transaction_read_only).toBe('on');
    expect(await canaryRows()).toEqual([{ id: 1, note: 'still here' }]);
    const s = await c.query('SELECT read_only FROM pgwarden.session');
    expect(s.rows[0].read_only).toBe(true);
  });

  it('write narrows the kinds: insert allowed, delete refused', async () => {
    const c = await connect({ write: { kinds: ['insert'], relations: [`${S}.notes`] } });
    await c.query(`INSERT INTO ${S}.notes VALUES (50, 'added by a narrowed token')`);
    expect((await refused(c, `DELETE FROM ${S}.notes WHERE id = 50`)).code).toBe('42501');
    expect((await refused(c, `INSERT INTO ${S}.canary VALUES (3, 'x')`)).code).toBe('42501');
    await withSuperClient((s) => s.query(`DELETE FROM ${S}.notes WHERE id = 50`));
    expect(await canaryRows()).toEqual([{ id: 1, note: 'still here' }]);
  });

  it('maxRows and statementTimeout: the lower of role and claim; the client cannot raise the timeout', async () => {
    const c = await connect({ maxRows: 3, statementTimeout: 1500 });
    expect((await c.query(`SELECT id FROM ${S}.people`)).rows).toHaveLength(3);
    expect((await c.query({ text: `SELECT id FROM ${S}.people WHERE id > $1`, values: [0] })).rows).toHaveLength(3);
    expect((await c.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('1500ms');
    for (const sql of ["SET statement_timeout = '10s'", "SET statement_timeout = '2s'", 'SET statement_timeout = 0']) {
      expect((await refused(c, sql)).code, sql).toBe('42501');
    }
    expect((await refused(c, "SELECT set_config('statement_timeout', '10s', false)")).code).toBe('42501');
    await c.query("SET statement_timeout = '1s'");
    expect((await c.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('1s');
    // A claim above the role's values leaves the role's.
    // A startup setting is judged as SET is: above the narrowed timeout, the login is refused.
    const err = await loginError(
      tp.pgConfig(await token({ statementTimeout: 1500 }), { options: '-c statement_timeout=10s' }),
    );
    expect(err.code).toBe('42501');
    const ok = new pg.Client(
      tp.pgConfig(await token({ statementTimeout: 1500 }), { options: '-c statement_timeout=1s' }),
    );
    await ok.connect();
    clients.push(ok);
    expect((await ok.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('1s');
    const high = await connect({ maxRows: 1000, statementTimeout: 60_000 });
    expect((await high.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('5s');
    expect((await high.query(`SELECT g FROM ${S}.people, generate_series(1, 10) g`)).rows).toHaveLength(100);
  });

  it('utility: false turns off LISTEN the role allows', async () => {
    const off = await connect({ utility: false });
    expect((await refused(off, 'LISTEN jobs')).code).toBe('42501');
    const on = await connect({ relations: [`${S}.people`] });
    await on.query('LISTEN jobs');
  });
});

describe('decision cache isolation', () => {
  it('the same SQL allowed for the wide token, then refused for the narrowed one in the same process, and back', async () => {
    const sql = `SELECT email FROM ${S}.people WHERE id = 4`;
    const wide = await connect();
    const narrow = await connect({ columns: { [`${S}.people`]: ['id'] } });
    for (let i = 0; i < 2; i++) {
      expect((await wide.query(sql)).rows).toEqual([{ email: 'p4@example.com' }]);
      expect((await refused(narrow, sql)).code).toBe('42501');
      expect((await refused(narrow, { text: sql, values: [] })).code).toBe('42501');
    }
    // Vice versa: the narrowed token first, with another narrowing that allows it, then one that does not.
    const sql2 = `SELECT body FROM ${S}.notes WHERE id = 2`;
    const notesOnly = await connect({ relations: [`${S}.notes`] });
    const peopleOnly = await connect({ relations: [`${S}.people`] });
    expect((await notesOnly.query(sql2)).rows).toEqual([{ body: 'note two' }]);
    expect((await refused(peopleOnly, sql2)).code).toBe('42501');
    expect((await wide.query(sql2)).rows).toEqual([{ body: 'note two' }]);
    expect((await refused(peopleOnly, { text: sql2, values: [] })).code).toBe('42501');
  });
});

describe('reload', () => {
  it('keeps the narrowing: the effective role is the new role ∩ the narrowing', async () => {
    const c = await connect({ relations: [`${S}.people`], maxRows: 5 });
    const before = tp.proxy.store.version;
    // The new policy lowers maxRows below the claim's and keeps everything else.
    writeFileSync(tp.policyFile, POLICY.replace('maxRows: 100', 'maxRows: 2'));
    await tp.proxy.reload();
    expect(tp.proxy.store.version).toBeGreaterThan(before);
    try {
      expect((await c.query(`SELECT id FROM ${S}.people`)).rows).toHaveLength(2);
      expect((await refused(c, `SELECT body FROM ${S}.notes`)).code).toBe('42501');
      writeFileSync(tp.policyFile, POLICY.replace('maxRows: 100', 'maxRows: 50'));
      await tp.proxy.reload();
      expect((await c.query(`SELECT id FROM ${S}.people`)).rows).toHaveLength(5);
      expect((await refused(c, `SELECT body FROM ${S}.notes`)).code).toBe('42501');
    } finally {
      writeFileSync(tp.policyFile, POLICY);
      await tp.proxy.reload();
    }
  });
});

describe('malformed claims', () => {
  it.each([
    ['not an object', 'narrow_it.people', /pgwarden_narrow must be a JSON object/],
    ['an unknown key', { relations: [`${S}.people`], tables: [] }, /pgwarden_narrow has an unknown key "tables"/],
    [
      'an unqualified relation',
      { relations: ['people'] },
      /pgwarden_narrow.relations\[0\] "people" must be schema-qualified/,
    ],
    ['a wrong type', { readOnly: 'yes' }, /pgwarden_narrow.readOnly must be true or false/],
    ['an invalid name', { columns: { [`${S}.people`]: ['a b'] } }, /must not contain spaces/],
  ])('refuses %s at login: 28000, reason credential_invalid, audited, no session', async (_what, value, message) => {
    const jti = `malformed-${Math.random()}`;
    const refusals = () =>
      tp
        .auditLines()
        .map((l) => JSON.parse(l))
        .filter((e) => e.event === 'login_refused' && e.reason === 'invalid_narrowing').length;
    const before = refusals();
    const err = await loginError(tp.pgConfig(await token(value, { jti })));
    expect(err.code).toBe('28000');
    expect(err.severity).toBe('FATAL');
    expect(err.message).toMatch(message);
    expect(err.detail).toMatch(/^reason=credential_invalid/);
    await until(() => refusals() > before);
    expect(tp.auditLines().some((l) => l.includes(jti) && JSON.parse(l).event === 'session_start')).toBe(false);
  });
});

describe('audit', () => {
  it('session_start carries the narrowing and every event of the session its digest', async () => {
    const c = await connect({ relations: [`${S}.notes`] });
    await c.query(`SELECT id FROM ${S}.notes WHERE id = 1`);
    await until(() => tp.auditLines().some((l) => l.includes(`"narrow":{"relations":["${S}.notes"]}`)));
    const events = tp.auditLines().map((l) => JSON.parse(l));
    const start = events.find(
      (e) => e.event === 'session_start' && JSON.stringify(e.narrow) === JSON.stringify({ relations: [`${S}.notes`] }),
    );
    expect(start).toBeDefined();
    expect(start.narrowing).toMatch(/^[0-9a-f]{64}$/);
    const stmt = events.find((e) => e.event === 'statement' && e.sessionId === start.sessionId);
    expect(stmt?.narrowing).toBe(start.narrowing);
    const plain = events.find((e) => e.event === 'session_start' && e.narrow === undefined && e.role === 'wide');
    expect(plain?.narrowing).toBeUndefined();
  });
});
