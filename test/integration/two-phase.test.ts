// Two-phase commit through pgwarden: the twoPhase role key (PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED, pg_prepared_xacts), and a refused PREPARE TRANSACTION or COMMIT that ends the transaction as PostgreSQL's failure would.
import type { EventEmitter } from 'node:events';
import type pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { connectPg, pgError, startTestProxy, withSuperClient, type TestProxy } from '../helpers/proxy.ts';

const TABLE = 'public.twophase_items';
const rw = (extra = '') => `    readOnly: false
    relations: [${TABLE}]
    write: { statements: [insert, update, delete], relations: [${TABLE}] }
${extra}`;
const POLICY = `roles:
  tpc:
${rw('    twoPhase: true\n')}  notpc:
${rw('    catalog: introspection\n')}  budgeted:
${rw('    budget: { per: subject, statementsPerMinute: 3 }\n')}  reader:
    readOnly: true
    relations: [${TABLE}]
    catalog: introspection
`;

let tp: TestProxy;
beforeAll(async () => {
  await withSuperClient((c) =>
    c.query(`DROP TABLE IF EXISTS ${TABLE};
      CREATE TABLE ${TABLE} (id int PRIMARY KEY, note text NOT NULL);
      INSERT INTO ${TABLE} VALUES (0, 'canary');
      GRANT SELECT, INSERT, UPDATE, DELETE ON ${TABLE} TO ${SAMPLE_UPSTREAM_USER};`),
  );
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  await tp?.close();
  // A prepared transaction outlives its session and holds its locks: none of this file's may stay behind.
  await withSuperClient(async (c) => {
    const left = await c.query<{ gid: string }>("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'tp-%'");
    for (const { gid } of left.rows) await c.query(`ROLLBACK PREPARED '${gid}'`);
    await c.query(`DROP TABLE IF EXISTS ${TABLE}`);
  });
});

/** The ids in the table as the superuser sees them (committed rows only). */
async function ids(): Promise<number[]> {
  return withSuperClient(async (c) =>
    (await c.query<{ id: number }>(`SELECT id FROM ${TABLE} ORDER BY id`)).rows.map((r) => r.id),
  );
}

async function preparedGids(): Promise<string[]> {
  return withSuperClient(async (c) =>
    (await c.query<{ gid: string }>("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'tp-%' ORDER BY gid")).rows.map(
      (r) => r.gid,
    ),
  );
}

/** A pg client for `role` whose last ReadyForQuery status is readable. */
async function client(role: string): Promise<{ c: pg.Client; status: () => string }> {
  const c = await connectPg(tp, await tp.token({ sub: `tp-${role}-${Math.random()}`, role }));
  c.on('error', () => {});
  let last = '';
  (c as unknown as { connection: EventEmitter }).connection.on('readyForQuery', (m: { status: string }) => {
    last = m.status;
  });
  return { c, status: () => last };
}

function js(role: string, pass: string) {
  return postgres({
    host: '127.0.0.1',
    port: tp.proxy.port,
    user: `tp-${role}`,
    database: 'app',
    pass,
    max: 1,
    onnotice: () => {},
    fetch_types: false,
    connect_timeout: 5,
  });
}

/** Hang guard: a driver left waiting on an aborted transaction never answers. */
function answered<T>(p: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer within 10 s`)), 10_000)),
  ]);
}

describe('twoPhase: true', () => {
  it('pg: PREPARE TRANSACTION, pg_prepared_xacts, COMMIT PREPARED and ROLLBACK PREPARED', async () => {
    const { c } = await client('tpc');
    try {
      await c.query('BEGIN');
      await c.query(`INSERT INTO ${TABLE} VALUES (1, 'two-phase committed')`);
      expect((await c.query("PREPARE TRANSACTION 'tp-pg-1'")).command).toBe('PREPARE');
      // Prepared, not committed: invisible until COMMIT PREPARED, and listed in pg_prepared_xacts.
      expect(await ids()).toEqual([0]);
      const seen = await c.query("SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE gid = 'tp-pg-1'");
      expect(seen.rows).toEqual([{ gid: 'tp-pg-1' }]);
      await c.query("COMMIT PREPARED 'tp-pg-1'");
      expect(await ids()).toEqual([0, 1]);

      // The extended protocol, and finished from another session of the role (they share the upstream login).
      await c.query('BEGIN');
      await c.query({ text: `INSERT INTO ${TABLE} VALUES ($1, 'rolled back')`, values: [2] });
      await c.query({ text: "PREPARE TRANSACTION 'tp-pg-2'", queryMode: 'extended' } as pg.QueryConfig);
      expect(await preparedGids()).toEqual(['tp-pg-2']);
    } finally {
      await c.end();
    }
    const other = await client('tpc');
    try {
      await other.c.query({ text: "ROLLBACK PREPARED 'tp-pg-2'", queryMode: 'extended' } as pg.QueryConfig);
    } finally {
      await other.c.end();
    }
    expect(await preparedGids()).toEqual([]);
    expect(await ids()).toEqual([0, 1]);
  });

  it("postgres.js: sql.prepare() in sql.begin, then COMMIT PREPARED (the driver's own test)", async () => {
    const sql = js('tpc', await tp.token({ sub: 'tp-js-tpc', role: 'tpc' }));
    try {
      await sql.begin(async (tx) => {
        await tx`insert into public.twophase_items values (3, 'postgres.js')`;
        await tx.prepare('tp-js-1');
      });
      expect(await preparedGids()).toEqual(['tp-js-1']);
      await sql.unsafe("commit prepared 'tp-js-1'");
      expect(await ids()).toEqual([0, 1, 3]);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  it('does not reach past the write policy: a prepared transaction carries only statements the role may run', async () => {
    const { c } = await client('tpc');
    try {
      await c.query('BEGIN');
      expect((await pgError(() => c.query('INSERT INTO public.canary VALUES (990, $1)', ['x']))).code).toBe('42501');
      // Aborted by the refusal: PostgreSQL's PREPARE of a failed transaction rolls it back (tag ROLLBACK).
      expect((await c.query("PREPARE TRANSACTION 'tp-failed'")).command).toBe('ROLLBACK');
      expect(await preparedGids()).toEqual([]);
      expect((await pgError(() => c.query('SELECT * FROM public.canary'))).code).toBe('42501');
    } finally {
      await c.end();
    }
  });
});

describe('without twoPhase', () => {
  it.each([
    ['simple', undefined],
    ['extended', 'extended'],
  ] as const)(
    'pg (%s): a refused PREPARE TRANSACTION rolls the transaction back and leaves it ended',
    async (_, mode) => {
      const { c, status } = await client('notpc');
      try {
        await c.query('BEGIN');
        await c.query(`INSERT INTO ${TABLE} VALUES (10, 'never committed')`);
        expect(status()).toBe('T');
        const err = await pgError(() =>
          c.query({ text: "PREPARE TRANSACTION 'tp-refused'", queryMode: mode } as pg.QueryConfig),
        );
        expect(err.code).toBe('42501');
        expect(err.message).toMatch(/two-phase/);
        // As after PostgreSQL's own failed PREPARE: idle, not an aborted block (which would answer 25P02 here).
        expect(status()).toBe('I');
        expect((await c.query('SELECT count(*)::int AS n FROM public.twophase_items WHERE id = 10')).rows[0].n).toBe(0);
        // A COMMIT now commits nothing: there is no transaction.
        await c.query('COMMIT');
      } finally {
        await c.end();
      }
      expect(await ids()).not.toContain(10);
      expect(await preparedGids()).toEqual([]);
    },
  );

  it('postgres.js: a refused sql.prepare() fails the transaction, the next query answers and the row is not there', async () => {
    const sql = js('notpc', await tp.token({ sub: 'tp-js-notpc', role: 'notpc' }));
    try {
      const err = (await sql
        .begin(async (tx) => {
          await tx`insert into public.twophase_items values (11, 'refused prepare')`;
          await tx.prepare('tp-js-refused');
        })
        .then(
          () => undefined,
          (e: unknown) => e,
        )) as { code?: string } | undefined;
      expect(err?.code).toBe('42501');
      const [row] = await answered(sql`select count(*)::int as n from public.twophase_items where id = 11`, 'select');
      expect(row?.n).toBe(0);
    } finally {
      await sql.end({ timeout: 1 });
    }
    expect(await ids()).not.toContain(11);
    expect(await preparedGids()).toEqual([]);
  });

  it('COMMIT PREPARED, ROLLBACK PREPARED and pg_prepared_xacts are refused (42501)', async () => {
    await withSuperClient(async (s) => {
      await s.query('BEGIN');
      await s.query("PREPARE TRANSACTION 'tp-foreign'");
    });
    try {
      for (const role of ['notpc', 'reader']) {
        const { c } = await client(role);
        try {
          for (const text of [
            "COMMIT PREPARED 'tp-foreign'",
            "ROLLBACK PREPARED 'tp-foreign'",
            'SELECT gid FROM pg_prepared_xacts',
            'SELECT count(*) FROM pg_catalog.pg_prepared_xacts',
          ]) {
            expect((await pgError(() => c.query(text))).code, `${role}: ${text}`).toBe('42501');
          }
        } finally {
          await c.end();
        }
      }
      expect(await preparedGids()).toEqual(['tp-foreign']);
    } finally {
      await withSuperClient((s) => s.query("ROLLBACK PREPARED 'tp-foreign'"));
    }
  });

  it('a read-only role cannot prepare a transaction either', async () => {
    const { c, status } = await client('reader');
    try {
      await c.query('BEGIN');
      expect((await pgError(() => c.query("PREPARE TRANSACTION 'tp-ro'"))).code).toBe('42501');
      expect(status()).toBe('I');
    } finally {
      await c.end();
    }
    expect(await preparedGids()).toEqual([]);
  });

  it('a COMMIT refused by the budget rolls the transaction back, as a failed COMMIT does', async () => {
    const { c, status } = await client('budgeted');
    try {
      await c.query('BEGIN');
      await c.query(`INSERT INTO ${TABLE} VALUES (12, 'over budget')`);
      await c.query(`INSERT INTO ${TABLE} VALUES (13, 'over budget')`);
      expect((await pgError(() => c.query('COMMIT'))).code).toBe('53400');
      expect(status()).toBe('I');
    } finally {
      await c.end();
    }
    expect(await ids()).not.toContain(12);
  });
});
