// postgres.js compatibility: each check runs against Postgres directly and through pgwarden with the same assertions.
import { createHash, randomBytes } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import postgres from 'postgres';
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
const targets = [{ name: 'direct' }, { name: 'proxied' }] as const;
const targetOf = (name: 'direct' | 'proxied'): CompatTarget => env[name];

beforeAll(async () => {
  env = await startCompat('pgjs');
});
afterAll(async () => {
  await env?.close();
});

describe.each(targets)('postgres.js $name', ({ name }) => {
  const pools: postgres.Sql[] = [];
  /** One connection (max: 1), so concurrent queries are pipelined on it as postgres.js does. */
  function connect(extra: postgres.Options<Record<string, postgres.PostgresType>> = {}): postgres.Sql {
    const t = targetOf(name);
    const sql = postgres({
      host: t.host,
      port: t.port,
      user: t.user,
      pass: t.password,
      database: t.database,
      max: 1,
      onnotice: () => {},
      ...extra,
    });
    pools.push(sql);
    return sql;
  }
  beforeAll(async () => {
    await resetCompatTables(targetOf(name).schema);
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end({ timeout: 1 }).catch(() => {})));
  });
  const check = (check: string, fn: () => Promise<void>) => checkTest('postgres.js', name, check)(check, fn);
  const s = () => targetOf(name).schema;

  check('connect, fetch array types and run a query', async () => {
    const sql = connect();
    const [row] = await sql`SELECT current_database() AS db, 1 + 1 AS two`;
    expect(row).toEqual({ db: 'app', two: 2 });
    // fetch_types ran at connect: an int[] parameter is sent and parsed as an array.
    const [a] = await sql`SELECT ${sql.array([1, 2, 3])}::int[] AS a`;
    expect(a!.a).toEqual([1, 2, 3]);
  });

  check('connection application_name', async () => {
    const sql = connect({ connection: { application_name: 'compat-pgjs' } });
    const [r] = await sql`SHOW application_name`;
    expect(r!.application_name).toMatch(/compat-pgjs$/);
  });

  check('type round trips', async () => {
    const sql = connect();
    // sql.array() picks its array type from the types fetched at connect: connect first (a postgres.js requirement).
    await sql`SELECT 1`;
    const bytes = Buffer.concat([Buffer.from([0, 0xff, 0x5c]), randomBytes(500)]);
    const when = new Date('2024-02-29T23:59:59.999Z');
    const doc = { a: [1, 'ü', null], b: { c: true } };
    const [r] = await sql`SELECT
      ${2147483647}::int AS i, ${'9223372036854775807'}::int8 AS b, ${'1.10'}::numeric AS n, ${true}::bool AS t,
      ${'naïve 😀 日本'}::text AS x, ${bytes}::bytea AS y, ${sql.json(doc)}::jsonb AS j, ${when}::timestamptz AS ts,
      ${'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'}::uuid AS u, ${'1 mon 2 days 03:04:05'}::interval AS iv,
      ${null}::int AS ni, ${sql.array(['x', 'y,z', ''])}::text[] AS ta`;
    expect(r).toEqual({
      i: 2147483647,
      b: '9223372036854775807',
      n: '1.10',
      t: true,
      x: 'naïve 😀 日本',
      y: bytes,
      j: doc,
      ts: when,
      u: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
      iv: '1 mon 2 days 03:04:05',
      ni: null,
      ta: ['x', 'y,z', ''],
    });
  });

  check('timestamps under a session time zone', async () => {
    const sql = connect();
    await sql`SET TimeZone = 'Asia/Kolkata'`;
    const [r] = await sql`SELECT '2024-01-01 00:00:00+00'::timestamptz::text AS local, now() - now() AS zero`;
    expect(r).toEqual({ local: '2024-01-01 05:30:00+05:30', zero: '00:00:00' });
  });

  check('prepared statements reused (named) and unnamed', async () => {
    const named = connect({ prepare: true });
    for (const k of ['k1', 'k2', 'k3'])
      expect(await named`SELECT v FROM ${named(s())}.kv WHERE k = ${k}`).toEqual([{ v: `v${k.slice(1)}` }]);
    const unnamed = connect({ prepare: false });
    for (const k of ['k4', 'k5'])
      expect(await unnamed`SELECT v FROM ${unnamed(s())}.kv WHERE k = ${k}`).toEqual([{ v: `v${k.slice(1)}` }]);
  });

  check('pipelined queries on one connection', async () => {
    const sql = connect();
    const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => sql`SELECT ${i}::int * 3 AS d`));
    expect(rs.map((r) => r[0]!.d)).toEqual(Array.from({ length: 50 }, (_, i) => i * 3));
  });

  check('an error in the middle of a pipeline fails only its own query', async () => {
    const sql = connect();
    const rs = await Promise.allSettled([sql`SELECT 1 AS a`, sql`SELECT 1 / ${0}::int AS b`, sql`SELECT 3 AS c`]);
    expect(rs.map((r) => (r.status === 'fulfilled' ? r.value[0] : (r.reason as postgres.PostgresError).code))).toEqual([
      { a: 1 },
      '22012',
      { c: 3 },
    ]);
  });

  check('describe a statement', async () => {
    const sql = connect();
    const d = await sql`SELECT k, v FROM ${sql(s())}.kv WHERE k = ${'k1'}`.describe();
    expect(d.types).toEqual([25]);
    expect(d.columns.map((c) => c.name)).toEqual(['k', 'v']);
  });

  check('simple protocol with several statements', async () => {
    const sql = connect();
    const rs = (await sql.unsafe(`SELECT 1 AS a; SELECT 'two' AS b`).simple()) as unknown as postgres.Row[][];
    expect(rs.map((r) => r[0])).toEqual([{ a: 1 }, { b: 'two' }]);
  });

  check('cursor: portal fetch with a row limit', async () => {
    const sql = connect();
    const batches: number[] = [];
    for await (const rows of sql`SELECT k FROM ${sql(s())}.kv ORDER BY k`.cursor(30)) batches.push(rows.length);
    expect(batches).toEqual([30, 30, 30, 10]);
  });

  check('forEach streams rows', async () => {
    const sql = connect();
    let n = 0;
    const res = await sql`SELECT g FROM generate_series(1, 2000) g`.forEach(() => {
      n++;
    });
    expect(n).toBe(2000);
    expect(res.count).toBe(2000);
  });

  check('COPY FROM STDIN and COPY TO STDOUT', async () => {
    const sql = connect();
    const w = await sql`COPY ${sql(s())}.copy_t (id, t, b) FROM STDIN`.writable();
    const lines = Array.from(
      { length: 1000 },
      (_, i) => `${i}\tline ${i} ü\t\\\\x${(i % 256).toString(16).padStart(2, '0')}\n`,
    );
    await pipeline(Readable.from(lines), w);
    const [c] = await sql`SELECT count(*)::int AS n, sum(length(b))::int AS bytes FROM ${sql(s())}.copy_t`;
    expect(c).toEqual({ n: 1000, bytes: 1000 });
    const r = await sql`COPY (SELECT id, t FROM ${sql(s())}.copy_t WHERE id < 5 ORDER BY id) TO STDOUT`.readable();
    const chunks: Buffer[] = [];
    await pipeline(
      r,
      new Writable({
        write(chunk, _e, cb) {
          chunks.push(Buffer.from(chunk));
          cb();
        },
      }),
    );
    expect(Buffer.concat(chunks).toString()).toBe([0, 1, 2, 3, 4].map((i) => `${i}\tline ${i} ü\n`).join(''));
  });

  check('transaction with savepoints and an error inside', async () => {
    const sql = connect();
    const res = await sql.begin(async (tx) => {
      await tx`INSERT INTO ${tx(s())}.wide VALUES (1, 'outer')`;
      const err = await tx
        .savepoint(async (sp) => {
          await sp`INSERT INTO ${sp(s())}.wide VALUES (2, 'rolled back')`;
          await sp`SELECT 1 / 0`;
        })
        .catch((e: postgres.PostgresError) => e.code);
      await tx.savepoint(async (sp) => sp`INSERT INTO ${sp(s())}.wide VALUES (3, 'kept')`);
      return err;
    });
    expect(res).toBe('22012');
    expect(await sql`SELECT id FROM ${sql(s())}.wide WHERE id < 10 ORDER BY id`).toEqual([{ id: 1 }, { id: 3 }]);
  });

  check('failed transaction is rolled back', async () => {
    const sql = connect();
    const e = await pgError(() =>
      sql.begin(async (tx) => {
        await tx`INSERT INTO ${tx(s())}.wide VALUES (20, 'gone')`;
        await tx`INSERT INTO ${tx(s())}.wide VALUES (20, 'duplicate')`;
      }),
    );
    expect(e.code).toBe('23505');
    expect(await sql`SELECT count(*)::int AS n FROM ${sql(s())}.wide WHERE id = 20`).toEqual([{ n: 0 }]);
  });

  check('two-phase commit: sql.prepare() in sql.begin, then COMMIT PREPARED', async () => {
    const sql = connect();
    // tp-<schema>-: the security corpus's fingerprint leaves tp- gids out, and resetCompatTables rolls back leftovers.
    const gid = `tp-${s()}-${randomBytes(4).toString('hex')}`;
    await sql.begin(async (tx) => {
      await tx`INSERT INTO ${tx(s())}.wide VALUES (30, 'two-phase')`;
      await tx.prepare(gid);
    });
    expect(await sql`SELECT count(*)::int AS n FROM ${sql(s())}.wide WHERE id = 30`).toEqual([{ n: 0 }]);
    expect(await sql`SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE gid = ${gid}`).toEqual([{ gid }]);
    await sql.unsafe(`COMMIT PREPARED '${gid}'`);
    expect(await sql`SELECT count(*)::int AS n FROM ${sql(s())}.wide WHERE id = 30`).toEqual([{ n: 1 }]);
  });

  check('insert many rows with one helper (10,000 parameters)', async () => {
    const sql = connect();
    const rows = Array.from({ length: 5000 }, (_, i) => ({ id: 1000 + i, body: `row ${i}` }));
    const r = await sql`INSERT INTO ${sql(s())}.wide ${sql(rows, 'id', 'body')}`;
    expect(r.count).toBe(5000);
    expect(await sql`SELECT count(*)::int AS n FROM ${sql(s())}.wide WHERE id >= 1000`).toEqual([{ n: 5000 }]);
  });

  check('1 MiB text parameter', async () => {
    const sql = connect();
    const big = 'ab'.repeat(512 * 1024);
    const [r] = await sql`SELECT length(${big}::text) AS n, md5(${big}::text) AS h`;
    expect(r).toEqual({ n: big.length, h: createHash('md5').update(big).digest('hex') });
  });

  check('cancel a running query', async () => {
    const sql = connect();
    const release = await holdKvLock(s());
    try {
      const q = sql.unsafe(blockedUpdate(s()));
      const settled = q.then(
        () => undefined,
        (e: postgres.PostgresError) => e.code,
      );
      await waitForLockWait(s());
      q.cancel();
      expect(await settled).toBe('57014');
    } finally {
      await release();
    }
    expect(await sql`SELECT 1 AS ok`).toEqual([{ ok: 1 }]);
  });

  check('cancel a pg_sleep', async () => {
    const sql = connect();
    const marker = `pgsleep_cancel_pgjs_${name}`;
    const q = sql.unsafe(`SELECT pg_sleep(30) AS ${marker}`);
    const settled = q.then(
      () => undefined,
      (e: postgres.PostgresError) => e.code,
    );
    await waitForActive(marker);
    q.cancel();
    expect(await settled).toBe('57014');
    expect(await sql`SELECT 1 AS ok`).toEqual([{ ok: 1 }]);
  });

  check('errors: unique violation keeps its fields', async () => {
    const sql = connect();
    const e = (await pgError(() => sql`INSERT INTO ${sql(s())}.kv VALUES ('k1', 'x')`)) as {
      code?: string;
      constraint_name?: string;
    };
    expect(e.code).toBe('23505');
    expect(e.constraint_name).toBe('kv_pkey');
  });

  check('syntax error is 42601 with its position', async () => {
    const sql = connect();
    const e = (await pgError(() => sql.unsafe('SELECT FROM FROM'))) as { code?: string; position?: string };
    expect(e.code).toBe('42601');
    expect(e.position).toBe('13');
  });

  check('unknown table is 42P01', async () => {
    const sql = connect();
    expect((await pgError(() => sql`SELECT * FROM ${sql(s())}.missing`)).code).toBe('42P01');
  });

  check('LISTEN / NOTIFY', async () => {
    const sql = connect({ max: 2 });
    let resolve!: (v: string) => void;
    const got = new Promise<string>((r) => (resolve = r));
    await sql.listen('compat_pgjs', (payload) => resolve(payload));
    await sql.notify('compat_pgjs', 'hi there');
    expect(await got).toBe('hi there');
  });

  check('DDL in a writable schema', async () => {
    const sql = connect();
    const exists = async () =>
      (
        await sql`SELECT count(*)::int AS n FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = ${s()} AND r.relname = 'made'`
      )[0]!.n;
    await sql`CREATE TABLE ${sql(s())}.made (id int PRIMARY KEY, v text)`;
    await sql`CREATE INDEX made_v ON ${sql(s())}.made (v)`;
    await sql`ALTER TABLE ${sql(s())}.made ADD COLUMN w int`;
    expect(await exists()).toBe(1);
    await sql`DROP TABLE ${sql(s())}.made`;
    expect(await exists()).toBe(0);
  });

  check('temporary table', async () => {
    const sql = connect();
    await sql`CREATE TEMP TABLE t_scratch (id int)`;
    await sql`INSERT INTO t_scratch SELECT generate_series(1, 3)`;
    expect(await sql`SELECT count(*)::int AS n FROM t_scratch`).toEqual([{ n: 3 }]);
  });
});
