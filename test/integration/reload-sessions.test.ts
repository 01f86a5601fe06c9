// Issue 11: a policy reload reaches every open session — row caps, prepared statements (Parse and SQL PREPARE),
// portals, cursors and stamped settings — over the simple and the extended protocol, against the real Postgres.
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import postgres from 'postgres';
import { DEFAULT_POLICY, canaryCount, connectPg, pgError, startTestProxy, type TestProxy } from '../helpers/proxy.ts';
import { Bytes, startupPacket, typed } from '../helpers/bytes.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});
afterEach(async () => {
  await setPolicy(DEFAULT_POLICY);
});

async function setPolicy(text: string): Promise<void> {
  const before = tp.proxy.store.version;
  writeFileSync(tp.policyFile, text);
  await tp.proxy.reload();
  expect(tp.proxy.store.version).toBeGreaterThan(before);
}

const CAP_10 = DEFAULT_POLICY.replace('maxRows: 100', 'maxRows: 10');
const NO_CUSTOMERS = DEFAULT_POLICY.replace(
  'relations: [public.orders, public.customers]',
  'relations: [public.orders]',
).replace('    deniedColumns: { public.customers: [ssn] }\n', '');
const WRITER_NO_CANARY = DEFAULT_POLICY.replace('relations: [public.canary] }', 'relations: [public.orders] }');
const TIMEOUT_2S = DEFAULT_POLICY.replace('statementTimeout: 5s', 'statementTimeout: 2s');

// ---- a raw protocol client: every message by hand, so Bind and Execute can name anything ----

interface Msg {
  type: string;
  body: Buffer;
}

class RawClient {
  private buf = Buffer.alloc(0);
  private msgs: Msg[] = [];
  private wake: (() => void) | undefined;
  closed = false;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (chunk: Buffer) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      while (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1);
        if (this.buf.length < 1 + len) break;
        this.msgs.push({ type: String.fromCharCode(this.buf[0] ?? 0), body: this.buf.subarray(5, 1 + len) });
        this.buf = this.buf.subarray(1 + len);
      }
      this.wake?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  static async open(port: number, token: string): Promise<RawClient> {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    const c = new RawClient(sock);
    sock.write(
      startupPacket([
        ['user', 'alice'],
        ['database', 'app'],
      ]),
    );
    await c.next((m) => m.type === 'R');
    sock.write(typed('p', new Bytes().cstr(token)));
    await c.untilReady();
    return c;
  }

  private async next(match: (m: Msg) => boolean, ms = 5000): Promise<Msg[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.msgs.findIndex(match);
      if (i >= 0) return this.msgs.splice(0, i + 1);
      if (this.closed) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('timed out waiting for the proxy');
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  /** Everything up to and including the next ReadyForQuery. */
  untilReady(): Promise<Msg[]> {
    return this.next((m) => m.type === 'Z');
  }

  send(...frames: Buffer[]): void {
    this.sock.write(Buffer.concat(frames));
  }

  async query(sql: string): Promise<Result> {
    this.send(typed('Q', new Bytes().cstr(sql)));
    return result(await this.untilReady());
  }

  /** Bind `statement` to `portal` (no parameters), Execute it with `maxRows`, Sync. */
  async bindExecute(statement: string, portal = '', maxRows = 0): Promise<Result> {
    this.send(
      typed('B', new Bytes().cstr(portal).cstr(statement).i16(0).i16(0).i16(0)),
      typed('E', new Bytes().cstr(portal).i32(maxRows)),
      typed('S'),
    );
    return result(await this.untilReady());
  }

  /** One statement through the extended protocol: Parse (unnamed), Bind, Execute, Sync. */
  async extended(sql: string): Promise<Result> {
    this.send(typed('P', new Bytes().cstr('').cstr(sql).i16(0)));
    return this.bindExecute('');
  }

  /** The next ErrorResponse the proxy sends on its own (e.g. a FATAL ending the session). */
  async nextError(): Promise<{ code: string; message: string }> {
    return result(await this.next((m) => m.type === 'E')).errors[0] ?? { code: '', message: '' };
  }

  async parse(name: string, sql: string): Promise<Result> {
    this.send(typed('P', new Bytes().cstr(name).cstr(sql).i16(0)), typed('S'));
    return result(await this.untilReady());
  }

  async execute(portal: string, maxRows = 0): Promise<Result> {
    this.send(typed('E', new Bytes().cstr(portal).i32(maxRows)), typed('S'));
    return result(await this.untilReady());
  }

  end(): void {
    this.sock.end(typed('X'));
    this.sock.destroy();
  }
}

interface Result {
  rows: number;
  errors: { code: string; message: string }[];
  notices: string[];
  tags: string[];
}

function fields(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const key = String.fromCharCode(body[i] ?? 0);
    const end = body.indexOf(0, i + 1);
    out.set(key, body.subarray(i + 1, end).toString('utf8'));
    i = end + 1;
  }
  return out;
}

function result(msgs: Msg[]): Result {
  const r: Result = { rows: 0, errors: [], notices: [], tags: [] };
  for (const m of msgs) {
    if (m.type === 'D') r.rows++;
    else if (m.type === 'C') r.tags.push(m.body.subarray(0, m.body.length - 1).toString('utf8'));
    else if (m.type === 'E') {
      const f = fields(m.body);
      r.errors.push({ code: f.get('C') ?? '', message: f.get('M') ?? '' });
    } else if (m.type === 'N') r.notices.push(fields(m.body).get('M') ?? '');
  }
  return r;
}

function ok(r: Result): Result {
  expect(r.errors).toEqual([]);
  return r;
}

function collectNotices(c: pg.Client): string[] {
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  return notices;
}

function pgjs(token: string) {
  return postgres({
    host: '127.0.0.1',
    port: tp.proxy.port,
    user: 'alice',
    database: 'app',
    pass: token,
    max: 1,
    onnotice: () => {},
  });
}

async function copyLines(sql: ReturnType<typeof pgjs>, text: string): Promise<number> {
  const stream = await sql.unsafe(text).readable();
  let out = '';
  for await (const chunk of stream) out += chunk.toString();
  return out.trim().split('\n').length;
}

// ---- the four cases of the issue ----

describe('row caps follow the policy in force for each statement', () => {
  it('simple protocol: SELECT and COPY in a session opened under maxRows 100 are capped at 10 after the reload', async () => {
    const c = await connectPg(tp);
    const notices = collectNotices(c);
    const sql = pgjs(await tp.token());
    try {
      expect((await c.query('SELECT id FROM orders')).rows.length).toBe(100);
      expect(await copyLines(sql, 'COPY orders TO STDOUT')).toBe(100);
      await setPolicy(CAP_10);
      const r = await c.query('SELECT id FROM orders');
      expect(r.rows.length).toBe(10);
      expect(r.rowCount).toBe(10);
      expect(notices.join('\n')).toMatch(/truncated the result at 10 rows/);
      expect(await copyLines(sql, 'COPY orders TO STDOUT')).toBe(10);
      expect(await copyLines(sql, 'COPY (SELECT id FROM orders) TO STDOUT')).toBe(10);
      // Loosening applies too.
      await setPolicy(DEFAULT_POLICY);
      expect((await c.query('SELECT id FROM orders')).rows.length).toBe(100);
    } finally {
      await c.end();
      await sql.end({ timeout: 2 });
    }
  });

  it('extended protocol: a named statement and a portal suspended across the reload stop at the new cap', async () => {
    const c = await connectPg(tp);
    const sql = pgjs(await tp.token());
    try {
      const q = { name: 'ids', text: 'SELECT id FROM orders WHERE id > $1', values: [0] };
      expect((await c.query(q)).rows.length).toBe(100);
      await setPolicy(CAP_10);
      expect((await c.query(q)).rows.length).toBe(10);
      await setPolicy(DEFAULT_POLICY);

      let total = 0;
      let reloaded = false;
      await sql`SELECT id FROM orders`.cursor(3, async (rows) => {
        total += rows.length;
        if (!reloaded) {
          reloaded = true;
          await setPolicy(CAP_10);
        }
      });
      expect(total).toBe(10);
    } finally {
      await c.end();
      await sql.end({ timeout: 2 });
    }
  });

  it('cursors: FETCH and protocol Execute of a cursor declared under maxRows 100 stop at 10 rows in all after the reload', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token());
    try {
      ok(await raw.query('DECLARE cur CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id'));
      ok(await raw.query('DECLARE cur2 CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id'));
      expect(ok(await raw.query('FETCH 6 FROM cur')).rows).toBe(6);
      await setPolicy(CAP_10);
      const r = ok(await raw.query('FETCH 100 FROM cur'));
      expect(r.rows).toBe(4);
      expect(r.notices.join('\n')).toMatch(/truncated the result at 10 rows/);
      expect(ok(await raw.query('FETCH 100 FROM cur')).rows).toBe(0);
      // The same through the extended protocol: Execute names the cursor's portal.
      expect(ok(await raw.execute('cur2', 7)).rows).toBe(7);
      expect(ok(await raw.execute('cur2', 7)).rows).toBe(3);
      expect(ok(await raw.execute('cur2', 0)).rows).toBe(0);
      ok(await raw.query('CLOSE cur; CLOSE cur2'));
    } finally {
      raw.end();
    }
  });
});

describe('prepared statements are decided again after a reload, however they were made', () => {
  it('SQL PREPARE over customers: EXECUTE and protocol Bind+Execute are refused saying the policy changed, and it is closed', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token());
    try {
      ok(await raw.query('PREPARE p AS SELECT name FROM customers ORDER BY id'));
      ok(await raw.query('PREPARE q AS SELECT id FROM orders ORDER BY id LIMIT 3'));
      expect(ok(await raw.bindExecute('p')).rows).toBe(50);
      await setPolicy(NO_CUSTOMERS);

      const bound = await raw.bindExecute('p');
      expect(bound.rows).toBe(0);
      expect(bound.errors).toHaveLength(1);
      expect(bound.errors[0]?.code).toBe('42501');
      expect(bound.errors[0]?.message).toMatch(/prepared statement p is no longer allowed: the policy changed/);
      const executed = await raw.query('EXECUTE p');
      expect(executed.rows).toBe(0);
      expect(executed.errors[0]?.code).toBe('42501');
      expect(executed.errors[0]?.message).toMatch(/prepared statement p is no longer allowed: the policy changed/);
      expect((await raw.query('EXPLAIN ANALYZE EXECUTE p')).errors[0]?.code).toBe('42501');

      // One still allowed keeps working, by SQL and by protocol.
      expect(ok(await raw.query('EXECUTE q')).rows).toBe(3);
      expect(ok(await raw.bindExecute('q')).rows).toBe(3);
      // p was closed upstream: the name is free again.
      ok(await raw.query('PREPARE p AS SELECT 1'));
      expect(ok(await raw.query('EXECUTE p')).rows).toBe(1);
    } finally {
      raw.end();
    }
  });

  it('a revoked DELETE never reaches Postgres, by EXECUTE, by Bind+Execute, or inside a transaction (canary rows stay)', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token({ role: 'writer' }));
    const before = await canaryCount();
    expect(before).toBeGreaterThan(0);
    try {
      ok(await raw.query('PREPARE w AS DELETE FROM canary'));
      await setPolicy(WRITER_NO_CANARY);
      expect((await raw.query('EXECUTE w')).errors[0]?.code).toBe('42501');
      expect((await raw.bindExecute('w')).errors[0]?.code).toBe('42501');
      ok(await raw.query('BEGIN'));
      const inTx = await raw.bindExecute('w');
      expect(inTx.errors.map((e) => e.code)).toEqual(['42501']);
      // The refusal failed the transaction, so COMMIT commits nothing.
      expect((await raw.query('COMMIT')).tags).toEqual(['ROLLBACK']);
      await setPolicy(DEFAULT_POLICY);
      // Still refused under a policy that allows DELETE again: it was closed; PREPARE it again to use it.
      expect((await raw.query('EXECUTE w')).errors[0]?.code).toBe('42501');
      expect(await canaryCount()).toBe(before);
    } finally {
      raw.end();
    }
  });

  it('a Parse-made statement refused after the reload stays refused on every later Bind', async () => {
    const c = await connectPg(tp);
    try {
      const q = { name: 'cust', text: 'SELECT name FROM customers WHERE id > $1', values: [0] };
      expect((await c.query(q)).rows.length).toBe(50);
      await setPolicy(NO_CUSTOMERS);
      for (let i = 0; i < 3; i++) {
        const err = await pgError(() => c.query(q));
        expect(err.code).toBe('42501');
        expect(err.message).toMatch(/no longer allowed: the policy changed/);
      }
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });

  it('a refused Parse under the name of an allowed statement leaves neither to run: Bind is refused until it is prepared again', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token());
    try {
      ok(await raw.parse('r', 'SELECT id FROM orders ORDER BY id LIMIT 2'));
      expect(ok(await raw.bindExecute('r')).rows).toBe(2);
      expect((await raw.parse('r', 'SELECT value FROM secrets')).errors[0]?.code).toBe('42501');
      const bound = await raw.bindExecute('r');
      expect(bound.rows).toBe(0);
      expect(bound.errors[0]?.code).toBe('42501');
      // The old statement was closed upstream, so the name can be prepared again.
      ok(await raw.parse('r', 'SELECT 1'));
      expect(ok(await raw.bindExecute('r')).rows).toBe(1);
    } finally {
      raw.end();
    }
  });

  it('a Bind to a statement pgwarden never saw prepared is refused', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token());
    try {
      const r = await raw.bindExecute('nosuch');
      expect(r.errors[0]?.code).toBe('42501');
      expect(ok(await raw.query('SELECT 1')).rows).toBe(1);
    } finally {
      raw.end();
    }
  });
});

describe('cursors are decided again after a reload', () => {
  it('a WITH HOLD cursor over customers is refused by FETCH, MOVE and protocol Execute, and closed; one over orders goes on', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token());
    try {
      ok(await raw.query('DECLARE hc CURSOR WITH HOLD FOR SELECT name FROM customers ORDER BY id'));
      ok(await raw.query('DECLARE ho CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id'));
      expect(ok(await raw.query('FETCH 2 FROM hc')).rows).toBe(2);
      await setPolicy(NO_CUSTOMERS);

      for (const sql of ['FETCH 2 FROM hc', 'MOVE 1 IN hc']) {
        const r = await raw.query(sql);
        expect(r.rows).toBe(0);
        expect(r.errors[0]?.code).toBe('42501');
        expect(r.errors[0]?.message).toMatch(/cursor hc is no longer allowed: the policy changed/);
      }
      const executed = await raw.execute('hc', 5);
      expect(executed.rows).toBe(0);
      expect(executed.errors[0]?.code).toBe('42501');
      expect(executed.errors[0]?.message).toMatch(/cursor hc is no longer allowed: the policy changed/);

      expect(ok(await raw.query('FETCH 2 FROM ho')).rows).toBe(2);
      expect(ok(await raw.execute('ho', 2)).rows).toBe(2);
      // hc was closed upstream: the name can be declared again.
      ok(await raw.query('DECLARE hc CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id'));
      expect(ok(await raw.query('FETCH 1 FROM hc')).rows).toBe(1);
      ok(await raw.query('CLOSE ALL'));
    } finally {
      raw.end();
    }
  });

  it('a protocol Execute of a portal pgwarden never saw bound or declared is refused', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token());
    try {
      expect((await raw.execute('nosuch')).errors[0]?.code).toBe('42501');
    } finally {
      raw.end();
    }
  });
});

describe('stamped settings', () => {
  function ended(c: pg.Client): Promise<{ code?: string; message: string; hint?: string }> {
    // pg reports the FATAL, then the closed socket: keep listening so the second is not an unhandled error.
    return new Promise((resolve) => c.on('error', (e) => resolve(e as never)));
  }

  it('a changed statementTimeout ends an idle session with 57P01; one inside a transaction ends when the transaction does', async () => {
    const idle = new pg.Client(tp.pgConfig(await tp.token()));
    const busy = new pg.Client(tp.pgConfig(await tp.token()));
    const other = new pg.Client(tp.pgConfig(await tp.token({ role: 'capped' })));
    await Promise.all([idle.connect(), busy.connect(), other.connect()]);
    try {
      const idleEnded = ended(idle);
      const busyEnded = ended(busy);
      await busy.query('BEGIN');
      await busy.query('SELECT count(*) FROM orders');
      await setPolicy(TIMEOUT_2S);
      const e = await idleEnded;
      expect(e.code).toBe('57P01');
      expect(e.hint).toMatch(/reconnect/);
      // Still inside its transaction: it runs on, under the new policy, until COMMIT.
      expect((await busy.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      await busy.query('COMMIT');
      expect((await busyEnded).code).toBe('57P01');
      // A role whose settings did not change keeps its session.
      expect((await other.query('SELECT 1 AS one')).rows[0].one).toBe(1);

      // A new session gets the new setting.
      const fresh = await connectPg(tp);
      expect((await fresh.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('2s');
      await fresh.end();
    } finally {
      await Promise.all([idle, busy, other].map((c) => c.end().catch(() => {})));
    }
  });

  it('a changed idleInTransactionTimeout (stamped too) ends an idle session with 57P01', async () => {
    const c = new pg.Client(tp.pgConfig(await tp.token()));
    await c.connect();
    try {
      const gone = ended(c);
      await setPolicy(
        DEFAULT_POLICY.replace('statementTimeout: 5s', 'statementTimeout: 5s\n    idleInTransactionTimeout: 30s'),
      );
      expect((await gone).code).toBe('57P01');
    } finally {
      await c.end().catch(() => {});
    }
  });

  it('extended protocol: a session inside a transaction at the reload ends with 57P01 once it commits', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token());
    try {
      ok(await raw.extended('BEGIN'));
      await setPolicy(TIMEOUT_2S);
      expect(ok(await raw.extended('SELECT id FROM orders ORDER BY id LIMIT 2')).rows).toBe(2);
      ok(await raw.extended('COMMIT'));
      expect((await raw.nextError()).code).toBe('57P01');
    } finally {
      raw.end();
    }
  });

  it('a setting changed and changed back while a transaction is open ends nothing', async () => {
    const c = await connectPg(tp);
    try {
      await c.query('BEGIN');
      await setPolicy(TIMEOUT_2S);
      await setPolicy(DEFAULT_POLICY);
      await c.query('COMMIT');
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });

  it('a change to maxRows or relations alone ends no session', async () => {
    const c = await connectPg(tp);
    try {
      await setPolicy(CAP_10);
      await setPolicy(NO_CUSTOMERS);
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });
});

describe('WITH TIES cursors', () => {
  const TIES = 'SELECT id FROM orders ORDER BY (id > 0) FETCH FIRST 1 ROWS WITH TIES';

  it('repeated FETCHes of a WITH TIES cursor stop at maxRows (simple protocol)', async () => {
    const c = await connectPg(tp);
    try {
      await c.query('BEGIN');
      await c.query(`DECLARE t CURSOR FOR ${TIES}`);
      let total = 0;
      for (let i = 0; i < 20; i++) total += (await c.query('FETCH 30 FROM t')).rows.length;
      expect(total).toBe(100);
      await c.query('COMMIT');
    } finally {
      await c.end();
    }
  });

  it('repeated protocol Executes of a WITH TIES cursor stop at maxRows (extended protocol)', async () => {
    const raw = await RawClient.open(tp.proxy.port, await tp.token());
    try {
      ok(await raw.query('BEGIN'));
      ok(await raw.query(`DECLARE t CURSOR FOR ${TIES}`));
      let total = 0;
      for (let i = 0; i < 20; i++) total += ok(await raw.execute('t', 30)).rows;
      expect(total).toBe(100);
      ok(await raw.query('COMMIT'));
    } finally {
      raw.end();
    }
  });
});
