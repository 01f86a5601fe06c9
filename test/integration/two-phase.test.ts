// Two-phase commit through pgwarden: the twoPhase role key (PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED, pg_prepared_xacts), and a refused PREPARE TRANSACTION or COMMIT that ends the transaction as PostgreSQL's failure would.
import type { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import type pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { connectPg, pgError, startTestProxy, withSuperClient, type TestProxy } from '../helpers/proxy.ts';
import { RawClient, bind, errorCode, execute, parse, query, sync } from '../helpers/raw-client.ts';

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
  // A prepared transaction outlives its session and holds its locks: none of this file's (tp-i-…) may stay behind; other
  // files' tp- gids (the compat checks) are theirs to finish.
  await withSuperClient(async (c) => {
    const left = await c.query<{ gid: string }>("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'tp-i-%'");
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
    (await c.query<{ gid: string }>("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'tp-i-%' ORDER BY gid")).rows.map(
      (r) => r.gid,
    ),
  );
}

/**
 * A pg client for `role`: status() is the last ReadyForQuery status; nextReady(), called before a query, resolves to the
 * status of the ReadyForQuery that answers it (pg may reject an extended-protocol query at its ErrorResponse, before
 * the ReadyForQuery arrives).
 */
async function client(role: string): Promise<{ c: pg.Client; status: () => string; nextReady: () => Promise<string> }> {
  const c = await connectPg(tp, await tp.token({ sub: `tp-${role}-${Math.random()}`, role }));
  c.on('error', () => {});
  let last = '';
  let seen = 0;
  const waiting: (() => void)[] = [];
  (c as unknown as { connection: EventEmitter }).connection.on('readyForQuery', (m: { status: string }) => {
    last = m.status;
    seen++;
    for (const w of waiting.splice(0)) w();
  });
  const nextReady = (): Promise<string> => {
    const target = seen + 1;
    const wait = async (): Promise<string> => {
      while (seen < target) await new Promise<void>((r) => waiting.push(r));
      return last;
    };
    return answered(wait(), 'ReadyForQuery');
  };
  return { c, status: () => last, nextReady };
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
      expect((await c.query("PREPARE TRANSACTION 'tp-i-pg-1'")).command).toBe('PREPARE');
      // Prepared, not committed: invisible until COMMIT PREPARED, and listed in pg_prepared_xacts.
      expect(await ids()).toEqual([0]);
      const seen = await c.query("SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE gid = 'tp-i-pg-1'");
      expect(seen.rows).toEqual([{ gid: 'tp-i-pg-1' }]);
      await c.query("COMMIT PREPARED 'tp-i-pg-1'");
      expect(await ids()).toEqual([0, 1]);

      // The extended protocol, and finished from another session of the role (they share the upstream login).
      await c.query('BEGIN');
      await c.query({ text: `INSERT INTO ${TABLE} VALUES ($1, 'rolled back')`, values: [2] });
      await c.query({ text: "PREPARE TRANSACTION 'tp-i-pg-2'", queryMode: 'extended' } as pg.QueryConfig);
      expect(await preparedGids()).toEqual(['tp-i-pg-2']);
    } finally {
      await c.end();
    }
    const other = await client('tpc');
    try {
      await other.c.query({ text: "ROLLBACK PREPARED 'tp-i-pg-2'", queryMode: 'extended' } as pg.QueryConfig);
    } finally {
      await other.c.end();
    }
    expect(await preparedGids()).toEqual([]);
    expect(await ids()).toEqual([0, 1]);
  });

  it("postgres.js: sql.prepare() in sql.begin, then COMMIT PREPARED (the driver's own test)", async () => {
    const sql = js('tpc', await tp.token({ sub: 'tp-i-js-tpc', role: 'tpc' }));
    try {
      await sql.begin(async (tx) => {
        await tx`insert into public.twophase_items values (3, 'postgres.js')`;
        await tx.prepare('tp-i-js-1');
      });
      expect(await preparedGids()).toEqual(['tp-i-js-1']);
      await sql.unsafe("commit prepared 'tp-i-js-1'");
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
      expect((await c.query("PREPARE TRANSACTION 'tp-i-failed'")).command).toBe('ROLLBACK');
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
      const { c, status, nextReady } = await client('notpc');
      try {
        await c.query('BEGIN');
        await c.query(`INSERT INTO ${TABLE} VALUES (10, 'never committed')`);
        expect(status()).toBe('T');
        const after = nextReady();
        const err = await pgError(() =>
          c.query({ text: "PREPARE TRANSACTION 'tp-i-refused'", queryMode: mode } as pg.QueryConfig),
        );
        expect(err.code).toBe('42501');
        expect(err.message).toMatch(/two-phase/);
        // As after PostgreSQL's own failed PREPARE: idle, not an aborted block (which would answer 25P02 here).
        expect(await after).toBe('I');
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
    const sql = js('notpc', await tp.token({ sub: 'tp-i-js-notpc', role: 'notpc' }));
    try {
      const err = (await sql
        .begin(async (tx) => {
          await tx`insert into public.twophase_items values (11, 'refused prepare')`;
          await tx.prepare('tp-i-js-refused');
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
      await s.query("PREPARE TRANSACTION 'tp-i-foreign'");
    });
    try {
      for (const role of ['notpc', 'reader']) {
        const { c } = await client(role);
        try {
          for (const text of [
            "COMMIT PREPARED 'tp-i-foreign'",
            "ROLLBACK PREPARED 'tp-i-foreign'",
            'SELECT gid FROM pg_prepared_xacts',
            'SELECT count(*) FROM pg_catalog.pg_prepared_xacts',
          ]) {
            expect((await pgError(() => c.query(text))).code, `${role}: ${text}`).toBe('42501');
          }
        } finally {
          await c.end();
        }
      }
      expect(await preparedGids()).toEqual(['tp-i-foreign']);
    } finally {
      await withSuperClient((s) => s.query("ROLLBACK PREPARED 'tp-i-foreign'"));
    }
  });

  it('a read-only role cannot prepare a transaction either', async () => {
    const { c, nextReady } = await client('reader');
    try {
      await c.query('BEGIN');
      const after = nextReady();
      expect((await pgError(() => c.query("PREPARE TRANSACTION 'tp-i-ro'"))).code).toBe('42501');
      expect(await after).toBe('I');
    } finally {
      await c.end();
    }
    expect(await preparedGids()).toEqual([]);
  });

  it('a COMMIT refused by the budget rolls the transaction back, as a failed COMMIT does', async () => {
    const { c, nextReady } = await client('budgeted');
    try {
      await c.query('BEGIN');
      await c.query(`INSERT INTO ${TABLE} VALUES (12, 'over budget')`);
      await c.query(`INSERT INTO ${TABLE} VALUES (13, 'over budget')`);
      const after = nextReady();
      expect((await pgError(() => c.query('COMMIT'))).code).toBe('53400');
      expect(await after).toBe('I');
    } finally {
      await c.end();
    }
    expect(await ids()).not.toContain(12);
  });

  describe('in one extended-protocol batch (raw messages: nothing of the ROLLBACK reaches the client)', () => {
    /** Writes `msgs` at once and returns what comes back up to the ReadyForQuery: types, SQLSTATEs, tags, status. */
    async function batch(c: RawClient, msgs: Buffer[]): Promise<string[]> {
      const got: string[] = [];
      c.onMessage = (type, body) => {
        if (type === 'E') got.push(`E ${errorCode(body)}`);
        else if (type === 'C') got.push(`C ${body.subarray(0, body.length - 1).toString('utf8')}`);
        else if (type === 'Z') got.push(`Z ${String.fromCharCode(body[0] as number)}`);
        else got.push(type);
      };
      const done = c.next((t) => t === 'Z');
      c.socket.write(Buffer.concat(msgs));
      await answered(done, 'batch');
      return got;
    }
    const prepareTx = (gid: string) => [parse('s1', `PREPARE TRANSACTION '${gid}'`), bind('', 's1'), execute('')];

    it('after an allowed INSERT in the block: the refusal ends the block (I) and the INSERT is rolled back', async () => {
      const c = await RawClient.connect(tp.proxy.port, await tp.token({ sub: 'tp-i-raw-1', role: 'notpc' }));
      try {
        expect(await batch(c, [query('BEGIN')])).toEqual(['C BEGIN', 'Z T']);
        const got = await batch(c, [
          parse('', `INSERT INTO ${TABLE} VALUES (20, 'raw')`),
          bind('', ''),
          execute(''),
          ...prepareTx('tp-i-raw-1'),
          sync(),
        ]);
        expect(got).toEqual(['1', '2', 'C INSERT 0 1', 'E 42501', 'Z I']);
        expect(await batch(c, [query('SELECT 1')])).toEqual(['T', 'D', 'C SELECT 1', 'Z I']);
      } finally {
        c.close();
      }
      expect(await ids()).not.toContain(20);
    });

    it("after an earlier error in the batch PostgreSQL skips pgwarden's ROLLBACK too: the block stays aborted (E), as directly", async () => {
      const c = await RawClient.connect(tp.proxy.port, await tp.token({ sub: 'tp-i-raw-2', role: 'notpc' }));
      try {
        expect(await batch(c, [query('BEGIN')])).toEqual(['C BEGIN', 'Z T']);
        const got = await batch(c, [
          parse('', 'SELECT 1 / 0'),
          bind('', ''),
          execute(''),
          ...prepareTx('tp-i-raw-2'),
          sync(),
        ]);
        // PostgreSQL folds 1 / 0 when it plans the statement at Bind: the error is Bind's.
        expect(got).toEqual(['1', 'E 22012', 'Z E']);
        expect(await batch(c, [query('ROLLBACK')])).toEqual(['C ROLLBACK', 'Z I']);
      } finally {
        c.close();
      }
    });

    it('outside a block: the error and I, with no "no transaction in progress" notice', async () => {
      const c = await RawClient.connect(tp.proxy.port, await tp.token({ sub: 'tp-i-raw-3', role: 'notpc' }));
      try {
        expect(await batch(c, [...prepareTx('tp-i-raw-3'), sync()])).toEqual(['E 42501', 'Z I']);
        expect(await batch(c, [query("PREPARE TRANSACTION 'tp-i-raw-3'")])).toEqual(['E 42501', 'Z I']);
      } finally {
        c.close();
      }
    });
  });

  it('a prepared PREPARE TRANSACTION statement whose key a reload removed: refused at Bind, and the transaction ended', async () => {
    const { c, nextReady } = await client('tpc');
    // pg parses a named statement once and then only binds it: the Bind is decided again under the new policy.
    const prepareTx = { name: 'tp_ptx', text: "PREPARE TRANSACTION 'tp-i-reload'" };
    try {
      await c.query('BEGIN');
      await c.query(prepareTx);
      await c.query("ROLLBACK PREPARED 'tp-i-reload'");
      writeFileSync(tp.policyFile, POLICY.replace('    twoPhase: true\n', ''));
      await tp.proxy.reload();
      await c.query('BEGIN');
      await c.query(`INSERT INTO ${TABLE} VALUES (30, 'after reload')`);
      const after = nextReady();
      expect((await pgError(() => c.query(prepareTx))).code).toBe('42501');
      expect(await after).toBe('I');
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await c.end();
      writeFileSync(tp.policyFile, POLICY);
      await tp.proxy.reload();
    }
    expect(await ids()).not.toContain(30);
    expect(await preparedGids()).toEqual([]);
  });
});
