// BackendKeyData carries the upstream backend's pid (pg_backend_pid(), pg_stat_activity, pg_terminate_backend agree with it) and pgwarden's own secret: cancel works and stays isolated.
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectPg,
  pgError,
  sendCancel,
  startTestProxy,
  superClient,
  testPg,
  type TestProxy,
} from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';
import { RawClient, errorCode, execute, parse, query, sync } from '../helpers/raw-client.ts';
import { typed } from '../helpers/bytes.ts';

/** Bind of `statement` to `portal` with one text parameter. */
function bindText(portal: string, statement: string, value: string): Buffer {
  const v = Buffer.from(value, 'utf8');
  const len = Buffer.alloc(4);
  len.writeInt32BE(v.length, 0);
  const cs = (x: string) => Buffer.from(`${x}\0`, 'utf8');
  return typed('B', Buffer.concat([cs(portal), cs(statement), Buffer.from([0, 0, 0, 1]), len, v, Buffer.from([0, 0])]));
}

/** The first column of a DataRow body, as text. */
function dataText(body: Buffer): string | undefined {
  const n = body.readInt32BE(2);
  return n < 0 ? undefined : body.subarray(6, 6 + n).toString('utf8');
}

let tp: TestProxy;
let su: pg.Client;
beforeAll(async () => {
  tp = await startTestProxy();
  su = await superClient();
});
afterAll(async () => {
  await su?.end();
  await tp?.close();
});

type Keyed = pg.Client & { processID: number; secretKey: number };

async function keyed(): Promise<Keyed> {
  const c = (await connectPg(tp)) as Keyed;
  c.on('error', () => {});
  return c;
}

// Slow enough to still be running when the cancel arrives; the role's statementTimeout (5 s) bounds it regardless.
const SLOW_SQL = 'SELECT count(*) FROM orders a, orders b, orders c, orders d';

/** Waits until the upstream backend `pid` is running a statement. */
async function running(pid: number): Promise<void> {
  await until(
    async () =>
      (await su.query(`SELECT state FROM pg_stat_activity WHERE pid = $1`, [pid])).rows[0]?.state === 'active',
    5_000,
  );
}

describe("the reported backend pid is the server's", () => {
  it('pg: BackendKeyData pid = pg_backend_pid(), and pg_stat_activity shows this session under it', async () => {
    const c = await keyed();
    try {
      const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      expect(c.processID).toBe(pid);
      const a = await su.query('SELECT application_name, usename FROM pg_stat_activity WHERE pid = $1', [pid]);
      expect(a.rows[0]).toEqual({ application_name: 'pgwarden:alice/test-agent', usename: 'pgwarden' });
    } finally {
      await c.end();
    }
  });

  it('postgres.js: pg_backend_pid() names this very session in pg_stat_activity', async () => {
    const sql = postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      user: 'alice',
      database: 'app',
      pass: await tp.token(),
      max: 1,
      onnotice: () => {},
    });
    try {
      const [{ pid }] = (await sql`SELECT pg_backend_pid() AS pid`) as unknown as [{ pid: number }];
      const a = await su.query('SELECT application_name FROM pg_stat_activity WHERE pid = $1', [pid]);
      // postgres.js sends application_name 'postgres.js' at startup.
      expect(a.rows[0]?.application_name).toBe('pgwarden:alice/test-agent postgres.js');
    } finally {
      await sql.end({ timeout: 2 });
    }
  });

  it('pg_terminate_backend(reported pid) by an operator ends the session as it would directly (57P01)', async () => {
    const c = await keyed();
    const errors: { code?: string }[] = [];
    c.removeAllListeners('error');
    c.on('error', (e) => errors.push(e as { code?: string }));
    const ended = new Promise<void>((r) => c.once('end', () => r()));
    const r = await su.query('SELECT pg_terminate_backend($1) AS ok', [c.processID]);
    expect(r.rows[0].ok).toBe(true);
    await ended;
    expect(errors.map((e) => e.code)).toContain('57P01');
    const left = await su.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [c.processID]);
    expect(left.rows[0].n).toBe(0);
  });

  /** What `sql` does to a session: the error it gets (if any) and whether the session is still usable after. */
  async function outcome(c: pg.Client, sql: string): Promise<{ code: string | undefined; usable: boolean }> {
    c.on('error', () => {});
    let code: string | undefined;
    try {
      await c.query(sql);
    } catch (e) {
      code = (e as { code?: string }).code;
    }
    const usable = await c.query('SELECT 1').then(
      () => true,
      () => false,
    );
    await c.end().catch(() => {});
    return { code, usable };
  }

  it.each([
    ['SELECT pg_terminate_backend(pg_backend_pid())', { code: '57P01', usable: false }],
    ['SELECT pg_cancel_backend(pg_backend_pid())', { code: '57014', usable: true }],
  ])('%s from inside the session behaves as it does directly', async (sql, expected) => {
    const direct = new pg.Client({ connectionString: testPg().superUrl });
    await direct.connect();
    expect(await outcome(direct, sql)).toEqual(expected);
    expect(await outcome(await keyed(), sql)).toEqual(expected);
  });

  it.each([
    'SELECT pg_terminate_backend(pg_backend_pid() + 1)',
    'SELECT pg_terminate_backend(pid) FROM pg_stat_activity',
    'SELECT pg_cancel_backend(pg_backend_pid()), pg_cancel_backend(1)',
  ])('%s (another backend, possibly) stays refused (42501)', async (sql) => {
    expect(await outcome(await keyed(), sql)).toEqual({ code: '42501', usable: true });
  });
});

describe("another session of the same subject and agent, given as a bound parameter (psycopg's and postgres.js's own tests)", () => {
  /** A pg client with this token's claims; errors of its own ending are expected and collected. */
  async function as(
    claims: Partial<{ sub: string; agent: string; tenant: string }> = {},
  ): Promise<Keyed & { errors: string[] }> {
    const c = new pg.Client(tp.pgConfig(await tp.token(claims))) as Keyed & { errors: string[] };
    c.errors = [];
    c.on('error', (e) => c.errors.push(String((e as { code?: string }).code)));
    await c.connect();
    return c;
  }
  const alive = async (pid: number) =>
    (await su.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid])).rows[0].n === 1;

  it('pg_terminate_backend($1) ends a sibling session (57P01 there), in text and as $1::int', async () => {
    for (const sql of [
      'SELECT pg_terminate_backend($1) AS ok',
      'SELECT pg_catalog.pg_terminate_backend($1::int) AS ok',
    ]) {
      const killer = await as();
      const victim = await as();
      const ended = new Promise<void>((r) => victim.once('end', () => r()));
      expect((await killer.query(sql, [victim.processID])).rows[0].ok).toBe(true);
      await ended;
      expect(victim.errors).toContain('57P01');
      await until(async () => !(await alive(victim.processID)), 5_000);
      await killer.end();
    }
  });

  it("pg_cancel_backend($1) cancels a sibling's running statement (57014) and the sibling stays usable", async () => {
    const canceller = await as();
    const busy = await as();
    try {
      const q = busy.query(SLOW_SQL);
      await running(busy.processID);
      expect((await canceller.query('SELECT pg_cancel_backend($1) AS ok', [busy.processID])).rows[0].ok).toBe(true);
      expect((await pgError(() => q)).code).toBe('57014');
      expect((await busy.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await canceller.end();
      await busy.end();
    }
  });

  it.each([
    ['another subject', { sub: 'mallory' }],
    ['the same subject with another agent', { agent: 'other-agent' }],
    ['the same subject and agent for another tenant', { tenant: 'other-tenant' }],
  ])('a session of %s cannot signal it (42501 at Bind), and it lives on', async (_n, claims) => {
    const victim = await as();
    const attacker = await as(claims);
    try {
      for (const sql of ['SELECT pg_terminate_backend($1)', 'SELECT pg_cancel_backend($1)']) {
        const e = await pgError(() => attacker.query(sql, [victim.processID]));
        expect(e.code).toBe('42501');
        expect(e.message).toContain('not the process id of a session of this token');
      }
      // Not a live pgwarden session at all (the superuser's own backend): refused too.
      const suPid = (await su.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      expect((await pgError(() => attacker.query('SELECT pg_terminate_backend($1)', [suPid]))).code).toBe('42501');
      expect((await attacker.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      expect(await alive(victim.processID)).toBe(true);
      expect((await victim.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await attacker.end();
      await victim.end();
    }
  });

  it('a portal bound while the sibling lived is checked again at Execute: once the sibling has ended it is refused', async () => {
    // The portal outlives its batch inside a transaction block, so its Execute can come long after the Bind; by then the
    // pid is no sibling's (the kernel may even have given it to another subject's backend).
    const raw = await RawClient.connect(tp.proxy.port, await tp.token());
    const seen: { type: string; code?: string; text?: string }[] = [];
    raw.onMessage = (type, body) =>
      seen.push(
        type === 'E' ? { type, code: errorCode(body) } : type === 'D' ? { type, text: dataText(body) } : { type },
      );
    const batch = async (...frames: Buffer[]) => {
      seen.length = 0;
      const ready = raw.next((t) => t === 'Z');
      raw.socket.write(Buffer.concat(frames));
      await ready;
      return seen.filter((m) => m.type !== 'N' && m.type !== 'S');
    };
    const ended = await as();
    const living = await as();
    try {
      expect(await batch(query('BEGIN'))).toEqual([{ type: 'C' }, { type: 'Z' }]);
      const bound = await batch(
        parse('pk', 'SELECT pg_terminate_backend($1) AS ok'),
        bindText('gone', 'pk', String(ended.processID)),
        bindText('live', 'pk', String(living.processID)),
        sync(),
      );
      expect(bound.map((m) => m.type)).toEqual(['1', '2', '2', 'Z']);
      const gone = new Promise<void>((r) => ended.once('end', () => r()));
      await ended.end();
      await gone;
      await until(async () => !(await alive(ended.processID)), 5_000);
      // The ended sibling's portal: refused before it reaches PostgreSQL.
      const late = await batch(execute('gone'), sync());
      expect(late[0]).toEqual({ type: 'E', code: '42501' });
      expect(late.some((m) => m.type === 'D')).toBe(false);
      // A sibling still alive at Execute: signalled as before (the block was aborted by the refusal, so a new one).
      await batch(query('ROLLBACK'));
      expect(await batch(query('BEGIN'))).toEqual([{ type: 'C' }, { type: 'Z' }]);
      expect((await batch(bindText('live', 'pk', String(living.processID)), sync())).map((m) => m.type)).toEqual([
        '2',
        'Z',
      ]);
      const killed = new Promise<void>((r) => living.once('end', () => r()));
      expect(await batch(execute('live'), sync())).toEqual([{ type: 'D', text: 't' }, { type: 'C' }, { type: 'Z' }]);
      await killed;
      expect(living.errors).toContain('57P01');
    } finally {
      raw.close();
      await ended.end().catch(() => {});
      await living.end().catch(() => {});
    }
  });

  it.each([
    // Only a bare parameter (or one cast to an integer type) is checked at Bind: anything computed from it is not.
    'SELECT pg_terminate_backend($1 + 0)',
    'SELECT pg_terminate_backend($1::text::int)',
    'SELECT pg_terminate_backend($1), $1',
    'SELECT pg_terminate_backend(CASE WHEN true THEN $1::int END)',
  ])('%s stays refused (42501)', async (sql) => {
    const c = await as();
    const sib = await as();
    try {
      expect((await pgError(() => c.query(sql, [sib.processID]))).code).toBe('42501');
      expect(await alive(sib.processID)).toBe(true);
    } finally {
      await c.end();
      await sib.end();
    }
  });

  it('a literal pid in the simple protocol stays refused: nothing is bound to check', async () => {
    const c = await as();
    const sib = await as();
    try {
      expect((await pgError(() => c.query(`SELECT pg_terminate_backend(${sib.processID})`))).code).toBe('42501');
      expect(await alive(sib.processID)).toBe(true);
    } finally {
      await c.end();
      await sib.end();
    }
  });

  it("postgres.js: one client's connection ends its other one, which reconnects on its next query (its reconnect tests)", async () => {
    const opts = {
      host: '127.0.0.1',
      port: tp.proxy.port,
      user: 'alice',
      database: 'app',
      pass: await tp.token(),
      max: 1,
      onnotice: () => {},
    };
    const s1 = postgres(opts);
    const s2 = postgres(opts);
    try {
      const [{ pid }] = (await s1`SELECT pg_backend_pid() AS pid`) as unknown as [{ pid: number }];
      const [{ ok }] = (await s2`SELECT pg_terminate_backend(${pid}) AS ok`) as unknown as [{ ok: boolean }];
      expect(ok).toBe(true);
      await until(async () => !(await alive(pid)), 5_000);
      // postgres.js may report the ended connection on the first query it sends after the end (CONNECTION_CLOSED or
      // 57P01) before reconnecting: the next one reconnects.
      const next = async () => (await s1`SELECT pg_backend_pid() AS pid`) as unknown as [{ pid: number }];
      const [{ pid: again }] = await next().catch(() => next());
      expect(again).not.toBe(pid);
    } finally {
      await s1.end({ timeout: 2 });
      await s2.end({ timeout: 2 });
    }
  });
});

describe('cancel still works and is still isolated', () => {
  it("the client's own key (server pid, pgwarden secret) cancels its running statement (57014)", async () => {
    const c = await keyed();
    try {
      const q = c.query(SLOW_SQL);
      await running(c.processID);
      await sendCancel(tp.proxy.port, c.processID, c.secretKey);
      expect((await pgError(() => q)).code).toBe('57014');
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });

  it("a client that knows another session's pid cannot cancel it: not with its own secret, a guessed one, or the server's own key sent to pgwarden", async () => {
    const victim = await keyed();
    const attacker = await keyed();
    try {
      const q = victim.query(SLOW_SQL);
      await running(victim.processID);
      await sendCancel(tp.proxy.port, victim.processID, attacker.secretKey);
      await sendCancel(tp.proxy.port, victim.processID, victim.secretKey ^ 1);
      await sendCancel(tp.proxy.port, victim.processID, 0);
      await sendCancel(tp.proxy.port, attacker.processID, victim.secretKey);
      // Still running after all of them: give the proxy time to have acted on each.
      await new Promise((r) => setTimeout(r, 300));
      expect(
        (await su.query(`SELECT state FROM pg_stat_activity WHERE pid = $1`, [victim.processID])).rows[0]?.state,
      ).toBe('active');
      // Then the right key ends it: the statement really was cancellable.
      await sendCancel(tp.proxy.port, victim.processID, victim.secretKey);
      expect((await pgError(() => q)).code).toBe('57014');
    } finally {
      await victim.end();
      await attacker.end();
    }
  });

  it('a cancel for a session that has ended does nothing to the session that reuses nothing of it', async () => {
    const a = await keyed();
    const old = { pid: a.processID, secret: a.secretKey };
    await a.end();
    const b = await keyed();
    try {
      const q = b.query('SELECT count(*)::int AS n FROM orders a, orders b');
      await sendCancel(tp.proxy.port, old.pid, old.secret);
      await sendCancel(tp.proxy.port, b.processID, old.secret);
      await expect(q).resolves.toBeDefined();
    } finally {
      await b.end();
    }
  });
});
