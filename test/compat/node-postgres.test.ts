// node-postgres (`pg`) compatibility: each check runs against Postgres directly and through pgwarden with the same assertions.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import {
  blockedUpdate,
  holdKvLock,
  resetCompatTables,
  startCompat,
  waitForActive,
  waitForLockWait,
  type CompatEnv,
  type CompatTarget,
} from '../helpers/compat.ts';
import { pgError } from '../helpers/proxy.ts';
import { checkTest } from './expected-failures.ts';

let env: CompatEnv;
// describe.each needs its rows before beforeAll runs: placeholders filled in by name once the env exists.
const targets = [{ name: 'direct' }, { name: 'proxied' }] as const;
const targetOf = (name: 'direct' | 'proxied'): CompatTarget => env[name];

beforeAll(async () => {
  env = await startCompat('pg');
});
afterAll(async () => {
  await env?.close();
});

describe.each(targets)('node-postgres $name', ({ name }) => {
  const clients: pg.Client[] = [];
  async function connect(extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
    const t = targetOf(name);
    const c = new pg.Client({
      host: t.host,
      port: t.port,
      user: t.user,
      password: t.password,
      database: t.database,
      ...extra,
    });
    c.on('error', () => {});
    clients.push(c);
    await c.connect();
    return c;
  }
  beforeAll(async () => {
    await resetCompatTables(targetOf(name).schema);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.end().catch(() => {})));
  });
  // The check runs as test.fails only where expected-failures.ts lists it for the proxied target.
  const check = (check: string, fn: () => Promise<void>) => checkTest('pg', name, check)(check, fn);
  const s = () => targetOf(name).schema;

  check('connect and server parameters', async () => {
    const c = await connect();
    const r = await c.query('SELECT current_database() AS db, 1 + 1 AS two');
    expect(r.rows[0]).toEqual({ db: 'app', two: 2 });
    expect(typeof keyOf(c).processID).toBe('number');
    expect((await c.query('SHOW server_version')).rows[0].server_version).toMatch(/^\d+/);
    expect((await c.query('SHOW client_encoding')).rows[0].client_encoding).toBe('UTF8');
  });

  check('backend pid is the server process id', async () => {
    const c = await connect();
    const r = await c.query('SELECT pg_backend_pid() AS pid');
    expect(keyOf(c).processID).toBe(r.rows[0].pid);
  });

  check('startup application_name is kept', async () => {
    const c = await connect({ application_name: 'compat-node' });
    const r = await c.query('SHOW application_name');
    expect(r.rows[0].application_name).toMatch(/compat-node$/);
  });

  check('SET application_name', async () => {
    const c = await connect();
    await c.query(`SET application_name = 'compat-set'`);
    expect((await c.query('SHOW application_name')).rows[0].application_name).toMatch(/compat-set$/);
  });

  check('startup statement_timeout', async () => {
    const c = await connect({ statement_timeout: 4321 });
    expect((await c.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('4321ms');
  });

  check('startup options (-c settings)', async () => {
    const c = await connect({ options: '-c lock_timeout=1234 -c DateStyle=ISO,DMY' });
    expect((await c.query('SHOW lock_timeout')).rows[0].lock_timeout).toBe('1234ms');
    expect((await c.query('SHOW DateStyle')).rows[0].DateStyle).toBe('ISO, DMY');
  });

  check('scalar type round trips', async () => {
    const c = await connect();
    const r = await c.query(
      'SELECT $1::int AS i, $2::bigint AS b, $3::numeric AS n, $4::bool AS t, $5::float8 AS f, $6::smallint AS s, $7::text AS x',
      [2147483647, '9223372036854775807', '12345678901234567890.123456789', true, 1.5e-7, -32768, 'plain'],
    );
    expect(r.rows[0]).toEqual({
      i: 2147483647,
      b: '9223372036854775807',
      n: '12345678901234567890.123456789',
      t: true,
      f: 1.5e-7,
      s: -32768,
      x: 'plain',
    });
  });

  check('unicode text', async () => {
    const c = await connect();
    // Multi-byte letters, a 4-byte emoji, control characters and quotes (not NUL: PostgreSQL's text cannot hold it).
    const text = 'naïve café — 日本語 😀 tab\tnewline\n\'quote" \\backslash';
    const r = await c.query('SELECT $1::text AS t, length($1::text) AS n, octet_length($1::text) AS o', [text]);
    expect(r.rows[0]).toEqual({ t: text, n: [...text].length, o: Buffer.byteLength(text) });
  });

  check('bytea', async () => {
    const c = await connect();
    const bytes = Buffer.concat([Buffer.from([0, 1, 0xff, 0x5c, 0x27]), randomBytes(1000)]);
    const r = await c.query('SELECT $1::bytea AS b, length($1::bytea) AS n', [bytes]);
    expect(Buffer.compare(r.rows[0].b, bytes)).toBe(0);
    expect(r.rows[0].n).toBe(bytes.length);
  });

  check('json and jsonb', async () => {
    const c = await connect();
    const doc = { a: [1, 2, { b: 'ü' }], n: null, t: true, big: 1.25 };
    const r = await c.query(`SELECT $1::json AS j, $1::jsonb AS jb, $1::jsonb -> 'a' -> 2 ->> 'b' AS b`, [
      JSON.stringify(doc),
    ]);
    expect(r.rows[0]).toEqual({ j: doc, jb: doc, b: 'ü' });
  });

  check('arrays', async () => {
    const c = await connect();
    const r = await c.query('SELECT $1::int[] AS ints, $2::text[] AS texts, ARRAY[[1,2],[3,4]] AS matrix', [
      [1, null, 3],
      ['a', 'b,c', 'd"e', null, ''],
    ]);
    expect(r.rows[0]).toEqual({
      ints: [1, null, 3],
      texts: ['a', 'b,c', 'd"e', null, ''],
      matrix: [
        [1, 2],
        [3, 4],
      ],
    });
  });

  check('timestamps with time zones', async () => {
    const c = await connect();
    await c.query(`SET TimeZone = 'America/New_York'`);
    const when = new Date('2024-03-10T06:59:59.123Z');
    const r = await c.query(
      `SELECT $1::timestamptz AS ts, $1::timestamptz::text AS local, '2024-07-01 12:00:00+02'::timestamptz AS fixed, '2024-07-01'::date::text AS d`,
      [when],
    );
    expect(r.rows[0].ts.getTime()).toBe(when.getTime());
    expect(r.rows[0].local).toBe('2024-03-10 01:59:59.123-05');
    expect(r.rows[0].fixed.toISOString()).toBe('2024-07-01T10:00:00.000Z');
    expect(r.rows[0].d).toBe('2024-07-01');
  });

  check('uuid, interval and NULLs', async () => {
    const c = await connect();
    const r = await c.query(
      `SELECT $1::uuid AS u, '1 day 02:03:04.5'::interval::text AS iv, $2::int AS ni, $3::text AS nt, NULL::jsonb AS nj`,
      ['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', null, null],
    );
    expect(r.rows[0]).toEqual({
      u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
      iv: '1 day 02:03:04.5',
      ni: null,
      nt: null,
      nj: null,
    });
  });

  check('named prepared statements reused', async () => {
    const c = await connect();
    const q = { name: 'kv_by_key', text: `SELECT v FROM ${s()}.kv WHERE k = $1` };
    for (const k of ['k1', 'k2', 'k3']) {
      const r = await c.query({ ...q, values: [k] });
      expect(r.rows).toEqual([{ v: `v${k.slice(1)}` }]);
    }
  });

  check('queued queries on one connection', async () => {
    const c = await connect();
    const rs = await Promise.all(Array.from({ length: 40 }, (_, i) => c.query('SELECT $1::int * 2 AS d', [i])));
    expect(rs.map((r) => r.rows[0].d)).toEqual(Array.from({ length: 40 }, (_, i) => i * 2));
  });

  check('several statements in one simple query', async () => {
    const c = await connect();
    const rs = (await c.query(
      `SELECT 1 AS a; SELECT 'x' AS b; SELECT count(*)::int AS n FROM ${s()}.kv`,
    )) as unknown as pg.QueryResult[];
    expect(rs.map((r) => r.rows[0])).toEqual([{ a: 1 }, { b: 'x' }, { n: 100 }]);
  });

  check('insert, update, delete with RETURNING', async () => {
    const c = await connect();
    const ins = await c.query(
      `INSERT INTO ${s()}.items (name, qty, price, tags, meta) VALUES ($1, $2, $3, $4, $5) RETURNING id, price`,
      ['widget', 3, '9.99', ['a', 'b'], { k: 1 }],
    );
    expect(ins.rows[0].price).toBe('9.99');
    const id = ins.rows[0].id as number;
    const up = await c.query(`UPDATE ${s()}.items SET qty = qty + 1 WHERE id = $1 RETURNING qty`, [id]);
    expect(up.rows).toEqual([{ qty: 4 }]);
    const del = await c.query(`DELETE FROM ${s()}.items WHERE id = $1`, [id]);
    expect(del.rowCount).toBe(1);
  });

  check('SQL cursor: DECLARE, FETCH, MOVE, CLOSE', async () => {
    const c = await connect();
    await c.query('BEGIN');
    await c.query(`DECLARE cur CURSOR FOR SELECT k FROM ${s()}.kv ORDER BY v`);
    const a = await c.query('FETCH 10 FROM cur');
    expect(a.rows).toHaveLength(10);
    await c.query('MOVE 80 IN cur');
    const b = await c.query('FETCH 100 FROM cur');
    expect(b.rows).toHaveLength(10);
    await c.query('CLOSE cur');
    await c.query('COMMIT');
  });

  check('transactions: commit and rollback', async () => {
    const c = await connect();
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${s()}.wide VALUES (1, 'committed')`);
    await c.query('COMMIT');
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${s()}.wide VALUES (2, 'rolled back')`);
    await c.query('ROLLBACK');
    const r = await c.query(`SELECT id FROM ${s()}.wide WHERE id IN (1, 2) ORDER BY id`);
    expect(r.rows).toEqual([{ id: 1 }]);
  });

  check('TRUNCATE and reload in one transaction', async () => {
    const c = await connect();
    await c.query('BEGIN');
    await c.query(`TRUNCATE ${s()}.copy_t`);
    await c.query(`INSERT INTO ${s()}.copy_t (id, t) VALUES (1, 'reloaded')`);
    await c.query('COMMIT');
    expect((await c.query(`SELECT t FROM ${s()}.copy_t`)).rows).toEqual([{ t: 'reloaded' }]);
  });

  check('savepoints and errors inside a transaction', async () => {
    const c = await connect();
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${s()}.wide VALUES (10, 'kept')`);
    await c.query('SAVEPOINT sp1');
    expect((await pgError(() => c.query('SELECT 1 / 0'))).code).toBe('22012');
    expect((await pgError(() => c.query('SELECT 1'))).code).toBe('25P02');
    await c.query('ROLLBACK TO SAVEPOINT sp1');
    await c.query(`INSERT INTO ${s()}.wide VALUES (11, 'after savepoint')`);
    await c.query('RELEASE SAVEPOINT sp1');
    await c.query('COMMIT');
    const r = await c.query(`SELECT id FROM ${s()}.wide WHERE id >= 10 ORDER BY id`);
    expect(r.rows).toEqual([{ id: 10 }, { id: 11 }]);
  });

  check('constraint errors keep their SQLSTATE and fields', async () => {
    const c = await connect();
    const e = (await pgError(() => c.query(`INSERT INTO ${s()}.kv VALUES ('k1', 'dup')`))) as {
      code?: string;
      constraint?: string;
      table?: string;
    };
    expect(e.code).toBe('23505');
    expect(e.constraint).toBe('kv_pkey');
    expect(e.table).toBe('kv');
    expect((await pgError(() => c.query(`INSERT INTO ${s()}.items (name) VALUES (NULL)`))).code).toBe('23502');
    expect((await c.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
  });

  check('syntax error is 42601 with its position', async () => {
    const c = await connect();
    const e = (await pgError(() => c.query('SELECT 1 FROM WHERE'))) as { code?: string; position?: string };
    expect(e.code).toBe('42601');
    expect(e.position).toBe('15');
  });

  check('unknown table is 42P01', async () => {
    const c = await connect();
    expect((await pgError(() => c.query(`SELECT * FROM ${s()}.no_such_table`))).code).toBe('42P01');
  });

  check('unknown unqualified table is 42P01', async () => {
    const c = await connect();
    const e = (await pgError(() => c.query('SELECT * FROM no_such_table'))) as { code?: string; position?: string };
    expect(e.code).toBe('42P01');
    expect(e.position).toBe('15');
  });

  check('metadata queries (information_schema and pg_catalog)', async () => {
    const c = await connect();
    const cols = await c.query(
      `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'items' ORDER BY ordinal_position`,
      [s()],
    );
    expect(cols.rows.map((r) => r.column_name)).toEqual(['id', 'name', 'qty', 'price', 'tags', 'meta', 'at']);
    const types = await c.query(
      `SELECT oid::int, typname FROM pg_catalog.pg_type WHERE typname = ANY($1) ORDER BY typname`,
      [['int4', 'jsonb', 'uuid']],
    );
    expect(types.rows).toEqual([
      { oid: 23, typname: 'int4' },
      { oid: 3802, typname: 'jsonb' },
      { oid: 2950, typname: 'uuid' },
    ]);
    const pk = await c.query(
      `SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
       WHERE i.indrelid = $1::regclass AND i.indisprimary`,
      [`${s()}.items`],
    );
    expect(pk.rows).toEqual([{ attname: 'id' }]);
  });

  check('function call', async () => {
    const c = await connect();
    expect((await c.query(`SELECT ${s()}.add_one($1) AS r`, [41])).rows).toEqual([{ r: 42 }]);
  });

  check('cancel a running query', async () => {
    const c = await connect();
    const t = targetOf(name);
    const release = await holdKvLock(s());
    try {
      const running = c.query(blockedUpdate(s())).then(
        () => undefined,
        (e: unknown) => e as { code?: string },
      );
      await waitForLockWait(s());
      await sendCancelTo(t.host, t.port, keyOf(c).processID, keyOf(c).secretKey);
      expect((await running)?.code).toBe('57014');
    } finally {
      await release();
    }
    expect((await c.query('SELECT 2 AS after')).rows).toEqual([{ after: 2 }]);
  });

  check('cancel a pg_sleep', async () => {
    const c = await connect();
    const t = targetOf(name);
    const marker = `pgsleep_cancel_${name}`;
    const running = c.query(`SELECT pg_sleep(30) AS ${marker}`).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    );
    await waitForActive(marker);
    await sendCancelTo(t.host, t.port, keyOf(c).processID, keyOf(c).secretKey);
    expect((await running)?.code).toBe('57014');
    expect((await c.query('SELECT 3 AS after')).rows).toEqual([{ after: 3 }]);
  });

  check('statement_timeout ends a pg_sleep', async () => {
    const c = await connect();
    await c.query('SET statement_timeout = 150');
    expect((await pgError(() => c.query('SELECT pg_sleep(10)'))).code).toBe('57014');
    expect((await c.query('SELECT pg_sleep(0.01)::text AS slept')).rows).toEqual([{ slept: '' }]);
  });

  check('SET statement_timeout ends a slow query', async () => {
    const c = await connect();
    const release = await holdKvLock(s());
    try {
      await c.query('SET statement_timeout = 100');
      expect((await pgError(() => c.query(blockedUpdate(s())))).code).toBe('57014');
    } finally {
      await release();
    }
  });

  check('LISTEN / NOTIFY', async () => {
    const c = await connect();
    const got = new Promise<pg.Notification>((resolve) => c.on('notification', resolve));
    await c.query('LISTEN compat_channel');
    await c.query(`NOTIFY compat_channel, 'hello'`);
    const n = await got;
    expect(n.channel).toBe('compat_channel');
    expect(n.payload).toBe('hello');
    expect(n.processId).toBe((await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
  });

  check('temporary table', async () => {
    const c = await connect();
    await c.query('CREATE TEMP TABLE scratch (id int, v text)');
    await c.query(`INSERT INTO scratch VALUES (1, 'a'), (2, 'b')`);
    expect((await c.query('SELECT count(*)::int AS n FROM scratch')).rows).toEqual([{ n: 2 }]);
  });

  check('DDL in a writable schema', async () => {
    const c = await connect();
    const exists = async () =>
      (
        await c.query(
          `SELECT count(*)::int AS n FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = $1 AND r.relname = 'made'`,
          [s()],
        )
      ).rows[0].n;
    await c.query(`CREATE TABLE ${s()}.made (id int PRIMARY KEY, v text)`);
    await c.query(`CREATE INDEX made_v ON ${s()}.made (v)`);
    await c.query(`ALTER TABLE ${s()}.made ADD COLUMN w int`);
    await c.query(`COMMENT ON TABLE ${s()}.made IS 'made by the compat suite'`);
    expect(await exists()).toBe(1);
    await c.query(`DROP TABLE ${s()}.made`);
    expect(await exists()).toBe(0);
  });

  check('ANALYZE, VACUUM and LOCK', async () => {
    const c = await connect();
    await c.query(`ANALYZE ${s()}.items`);
    await c.query(`VACUUM ${s()}.kv`);
    await c.query('BEGIN');
    await c.query(`LOCK TABLE ${s()}.items IN SHARE ROW EXCLUSIVE MODE`);
    await c.query('COMMIT');
  });

  check('server notices reach the client', async () => {
    const c = await connect();
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(`${n.code}: ${n.message}`));
    await c.query(`DROP TABLE IF EXISTS ${s()}.never_made`);
    expect(notices).toEqual([`00000: table "never_made" does not exist, skipping`]);
  });

  check('empty query', async () => {
    const c = await connect();
    const r = await c.query('');
    expect(r.rows).toEqual([]);
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  check('large result (50,000 rows)', async () => {
    const c = await connect();
    const r = await c.query(`SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 50000) g`);
    expect(r.rowCount).toBe(50000);
    expect(r.rows[49999]).toEqual({ g: 50000, pad: 'x'.repeat(100) });
  });

  check('isolation levels and read-only transactions', async () => {
    const c = await connect();
    await c.query('BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY');
    expect((await c.query('SHOW transaction_isolation')).rows[0].transaction_isolation).toBe('serializable');
    expect((await pgError(() => c.query(`INSERT INTO ${s()}.wide VALUES (-1, 'no')`))).code).toBe('25006');
    await c.query('ROLLBACK');
    await c.query('BEGIN');
    await c.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
    expect((await c.query('SHOW transaction_isolation')).rows[0].transaction_isolation).toBe('repeatable read');
    await c.query('COMMIT');
  });

  check('1 MiB text parameter', async () => {
    const c = await connect();
    const big = 'x'.repeat(1024 * 1024 - 7) + 'é✓end';
    const r = await c.query('SELECT length($1::text) AS n, md5($1::text) AS h', [big]);
    expect(r.rows[0]).toEqual({ n: [...big].length, h: createHash('md5').update(big).digest('hex') });
    const ins = await c.query(`INSERT INTO ${s()}.wide VALUES (100, $1) RETURNING length(body) AS n`, [big]);
    expect(ins.rows).toEqual([{ n: [...big].length }]);
  });

  check('10,000 parameters in one statement', async () => {
    const c = await connect();
    const rows = 5000;
    const values: unknown[] = [];
    const tuples: string[] = [];
    for (let i = 0; i < rows; i++) {
      tuples.push(`($${2 * i + 1}::int, $${2 * i + 2}::text)`);
      values.push(1000 + i, `row ${i}`);
    }
    const r = await c.query(`INSERT INTO ${s()}.wide (id, body) VALUES ${tuples.join(', ')}`, values);
    expect(r.rowCount).toBe(rows);
    const n = await c.query(`SELECT count(*)::int AS n FROM ${s()}.wide WHERE id >= 1000`);
    expect(n.rows).toEqual([{ n: rows }]);
  });
});

/** The BackendKeyData node-postgres keeps (public fields its types leave out). */
function keyOf(c: pg.Client): { processID: number; secretKey: number } {
  return c as unknown as { processID: number; secretKey: number };
}

/** A CancelRequest to whichever target the client is connected to, as node-postgres's own cancel would send it. */
function sendCancelTo(host: string, port: number, pid: number, secret: number): Promise<void> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port }, () => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0);
      b.writeInt32BE(80877102, 4);
      b.writeInt32BE(pid, 8);
      b.writeInt32BE(secret, 12);
      sock.end(b);
    });
    sock.on('close', () => resolve());
    sock.on('error', () => resolve());
  });
}
