// The server's analysis on the session's own connection (issue 13): temporary tables and the session's open transaction, through a real pgwarden and Postgres, and the red team's disagreements (a temporary name gone, the permanent one read) refused.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import type pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tcpUpstream } from '../../proxy/upstream/connect.ts';
import { BackendType } from '../../proxy/wire/codes.ts';
import { MessageFramer } from '../../proxy/wire/framer.ts';
import { connectAs, pgError, startTestProxy, withSuperClient as su, type TestProxy } from '../helpers/proxy.ts';
import { bind, errorCode, execute, parse, query, RawClient, sync } from '../helpers/raw-client.ts';

/** A permanent relation the role may not read, whose value must never reach the client. */
const SECRET = 'sa_secret_canary_7f3a';

const POLICY = `roles:
  tmp:
    readOnly: false
    relations: [public.orders, public.canary, sa_scratch.*]
    write: { statements: [insert, update, delete, truncate, copy_from], relations: [public.canary, sa_scratch.*] }
    ddl:
      kinds: [create_table, create_index, create_sequence, alter_table, drop]
      schemas: [sa_scratch]
      temporary: true
    lock: true
`;

let tp: TestProxy;
const clients: pg.Client[] = [];
async function as(role = 'tmp'): Promise<pg.Client> {
  const c = await connectAs(tp, role);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  await su((c) =>
    c.query(`
    DROP TABLE IF EXISTS public.sa_secrets;
    CREATE TABLE public.sa_secrets (id int, v text);
    INSERT INTO public.sa_secrets VALUES (1, '${SECRET}');
    GRANT SELECT, INSERT, UPDATE, DELETE ON public.sa_secrets TO pgwarden;
    DROP SCHEMA IF EXISTS sa_scratch CASCADE;
    CREATE SCHEMA sa_scratch;
    GRANT USAGE, CREATE ON SCHEMA sa_scratch TO pgwarden;
  `),
  );
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await su((c) => c.query('DROP TABLE IF EXISTS public.sa_secrets; DROP SCHEMA IF EXISTS sa_scratch CASCADE'));
});

describe('temporary tables', () => {
  it('are created, written, read, updated, deleted and dropped', async () => {
    const c = await as();
    await c.query('CREATE TEMP TABLE t1 (id int PRIMARY KEY, note text)');
    await c.query("INSERT INTO t1 VALUES (1, 'a'), (2, 'b')");
    await c.query('INSERT INTO t1 VALUES ($1, $2)', [3, 'c']);
    expect((await c.query('SELECT id, note FROM t1 ORDER BY id')).rows).toEqual([
      { id: 1, note: 'a' },
      { id: 2, note: 'b' },
      { id: 3, note: 'c' },
    ]);
    await c.query("UPDATE t1 SET note = 'B' WHERE id = $1", [2]);
    await c.query('DELETE FROM t1 WHERE id = 1');
    expect((await c.query('SELECT note FROM pg_temp.t1 ORDER BY id')).rows).toEqual([{ note: 'B' }, { note: 'c' }]);
    await c.query('DROP TABLE pg_temp.t1');
    expect((await pgError(() => c.query('SELECT * FROM pg_temp.t1'))).code).toBe('42P01');
  });

  it('a temporary table shadowing a denied permanent name is read, never the permanent one', async () => {
    const c = await as();
    expect((await pgError(() => c.query('SELECT * FROM sa_secrets'))).code).toBe('42501');
    await c.query('CREATE TEMP TABLE sa_secrets (id int, v text)');
    await c.query("INSERT INTO sa_secrets VALUES (9, 'mine')");
    expect((await c.query('SELECT * FROM sa_secrets')).rows).toEqual([{ id: 9, v: 'mine' }]);
    await c.query('DROP TABLE pg_temp.sa_secrets');
    const err = await pgError(() => c.query('SELECT * FROM sa_secrets'));
    expect(err.code).toBe('42501');
    expect(JSON.stringify(err)).not.toContain(SECRET);
  });
});

describe('a temporary table made and used in one query', () => {
  it('is analysed with the earlier DDL run first, inside the analysis wrapper, and rolled back there', async () => {
    const c = await as();
    await c.query(
      'CREATE TEMP TABLE boom (age integer); INSERT INTO boom (age) VALUES (1); INSERT INTO boom (age) VALUES (2)',
    );
    const r = (await c.query('SELECT age FROM boom WHERE age < 2; SELECT count(*)::int AS n FROM boom')) as unknown as {
      rows: unknown[];
    }[];
    expect(r.map((x) => x.rows)).toEqual([[{ age: 1 }], [{ n: 2 }]]);
    // The same inside a transaction, with a table in a ddl schema.
    await c.query('BEGIN');
    await c.query('CREATE TABLE sa_scratch.q (a int); INSERT INTO sa_scratch.q VALUES (1)');
    expect((await c.query('SELECT a FROM sa_scratch.q')).rows).toEqual([{ a: 1 }]);
    await c.query('ROLLBACK');
  });

  it('a temporary sa_secrets made, filled and read in one query; made and dropped before the read: refused', async () => {
    const c = await as();
    const r = (await c.query(
      "CREATE TEMP TABLE sa_secrets (id int, v text); INSERT INTO sa_secrets VALUES (3, 'own'); SELECT * FROM sa_secrets",
    )) as unknown as { rows: unknown[] }[];
    expect(r[2]?.rows).toEqual([{ id: 3, v: 'own' }]);
    await c.query('DROP TABLE pg_temp.sa_secrets');
    const err = await pgError(() =>
      c.query('CREATE TEMP TABLE sa_secrets (id int, v text); DROP TABLE pg_temp.sa_secrets; SELECT * FROM sa_secrets'),
    );
    expect(err.code).toBe('42501');
    expect(seen(err)).not.toContain(SECRET);
    // Refused whole: the first CREATE did not run either.
    expect((await pgError(() => c.query('SELECT * FROM pg_temp.sa_secrets'))).code).toBe('42P01');
  });

  it('an earlier statement that fails when replayed refuses the text, and nothing of it stays', async () => {
    const c = await as();
    await pgError(() => c.query('CREATE TEMP TABLE dup (a int); CREATE TEMP TABLE dup (a int); SELECT * FROM dup'));
    expect((await pgError(() => c.query('SELECT * FROM pg_temp.dup'))).code).toBe('42P01');
  });
});

describe("the session's open transaction", () => {
  it('TRUNCATE then SELECT in one transaction', async () => {
    const c = await as();
    await c.query('CREATE TABLE sa_scratch.tr (a int)');
    await c.query('INSERT INTO sa_scratch.tr VALUES (1)');
    await c.query('BEGIN');
    await c.query('TRUNCATE sa_scratch.tr');
    expect((await c.query('SELECT count(*)::int AS n FROM sa_scratch.tr')).rows).toEqual([{ n: 0 }]);
    await c.query('INSERT INTO sa_scratch.tr VALUES (2)');
    await c.query('COMMIT');
    expect((await c.query('SELECT a FROM sa_scratch.tr')).rows).toEqual([{ a: 2 }]);
  });

  it('CREATE TABLE then INSERT in one transaction', async () => {
    const c = await as();
    await c.query('BEGIN');
    await c.query('CREATE TABLE sa_scratch.fresh (a int)');
    await c.query('INSERT INTO sa_scratch.fresh VALUES (1)');
    expect((await c.query('SELECT a FROM sa_scratch.fresh')).rows).toEqual([{ a: 1 }]);
    await c.query('ROLLBACK');
    expect((await pgError(() => c.query('SELECT a FROM sa_scratch.fresh'))).code).toBe('42P01');
  });
});

/** Every value the client got, as text: the canary must never be among them. */
function seen(x: unknown): string {
  return JSON.stringify(x);
}

/** The relation an unqualified `sa_secrets` means to the session, as PostgreSQL resolves it now (superuser view of the backend is not needed: the result tells). */
async function readsSecrets(c: pg.Client): Promise<'refused' | 'temporary'> {
  try {
    const r = await c.query('SELECT * FROM sa_secrets');
    expect(seen(r.rows)).not.toContain(SECRET);
    return 'temporary';
  } catch (err) {
    expect(seen(err)).not.toContain(SECRET);
    expect((err as { code?: string }).code).toBe('42501');
    return 'refused';
  }
}

describe('disagreements: the temporary name gone, the permanent one must not be read', () => {
  it('ROLLBACK of the transaction that created it', async () => {
    const c = await as();
    await c.query('BEGIN');
    await c.query('CREATE TEMP TABLE sa_secrets (id int, v text)');
    expect(await readsSecrets(c)).toBe('temporary');
    await c.query('ROLLBACK');
    expect(await readsSecrets(c)).toBe('refused');
  });

  it('ON COMMIT DROP, DISCARD TEMP, savepoint rollback', async () => {
    const c = await as();
    await c.query('BEGIN');
    await c.query('CREATE TEMP TABLE sa_secrets (id int, v text) ON COMMIT DROP');
    expect(await readsSecrets(c)).toBe('temporary');
    await c.query('COMMIT');
    expect(await readsSecrets(c)).toBe('refused');

    await c.query('CREATE TEMP TABLE sa_secrets (id int, v text)');
    expect(await readsSecrets(c)).toBe('temporary');
    await c.query('DISCARD TEMP');
    expect(await readsSecrets(c)).toBe('refused');

    await c.query('BEGIN');
    await c.query('SAVEPOINT a');
    await c.query('CREATE TEMP TABLE sa_secrets (id int, v text)');
    expect(await readsSecrets(c)).toBe('temporary');
    await c.query('ROLLBACK TO SAVEPOINT a');
    expect(await readsSecrets(c)).toBe('refused');
    await c.query('COMMIT');
  });

  it('dropped earlier in the same query, or in the same pipeline', async () => {
    const c = await as();
    for (const drop of ['DROP TABLE pg_temp.sa_secrets', 'DISCARD TEMP']) {
      await c.query('CREATE TEMP TABLE sa_secrets (id int, v text)');
      const err = await pgError(() => c.query(`${drop}; SELECT * FROM sa_secrets`));
      expect(err.code, drop).toBe('42501');
      expect(seen(err)).not.toContain(SECRET);
      await c.query('DROP TABLE IF EXISTS pg_temp.sa_secrets');
    }
    // The extended protocol: the DROP and the read in one batch before Sync.
    const raw = await RawClient.connect(port(), await tp.token({ role: 'tmp' }));
    try {
      const got: { type: string; body: Buffer }[] = [];
      raw.onMessage = (type, body) => got.push({ type, body });
      let ready = raw.next((t) => t === 'Z');
      raw.socket.write(query('CREATE TEMP TABLE sa_secrets (id int, v text)'));
      await ready;
      got.length = 0;
      ready = raw.next((t) => t === 'Z');
      raw.socket.write(
        Buffer.concat([
          parse('', 'DROP TABLE pg_temp.sa_secrets'),
          bind('', ''),
          execute(''),
          parse('', 'SELECT * FROM sa_secrets'),
          bind('', ''),
          execute(''),
          sync(),
        ]),
      );
      await ready;
      // ParseComplete, BindComplete, DROP's CommandComplete, then the refusal where the second Parse's error goes.
      expect(got.map((m) => m.type).join('')).toBe('12CEZ');
      const e = got.find((m) => m.type === 'E');
      expect(e && errorCode(e.body)).toBe('42501');
      expect(Buffer.concat(got.map((m) => m.body)).toString('latin1')).not.toContain(SECRET);
    } finally {
      raw.close();
    }
  });

  it('a prepared statement made while the temporary table existed is analysed again before it runs', async () => {
    const c = await as();
    await c.query('CREATE TEMP TABLE sa_secrets (id int, v text)');
    await c.query("INSERT INTO sa_secrets VALUES (5, 'temp')");
    const named = { name: 'read_secrets', text: 'SELECT * FROM sa_secrets WHERE id > $1', values: [0] };
    expect((await c.query(named)).rows).toEqual([{ id: 5, v: 'temp' }]);
    await c.query('DROP TABLE pg_temp.sa_secrets');
    const err = await pgError(() => c.query(named));
    expect(err.code).toBe('42501');
    expect(seen(err)).not.toContain(SECRET);
    // SQL PREPARE of it is refused: PostgreSQL would resolve its names again long after.
    await c.query('CREATE TEMP TABLE sa_secrets (id int, v text)');
    expect((await pgError(() => c.query('PREPARE p AS SELECT * FROM sa_secrets'))).code).toBe('42501');
    await c.query('PREPARE q AS SELECT * FROM pg_temp.sa_secrets');
    await c.query('DROP TABLE pg_temp.sa_secrets');
    const gone = await pgError(() => c.query('EXECUTE q'));
    expect(seen(gone)).not.toContain(SECRET);
  });
});

describe('a batch of several Parse/Bind/Execute before one Sync', () => {
  /** Sends `messages` on a raw pgwarden connection and returns what came back up to the ReadyForQuery, as in the transcript test. */
  async function batch(raw: RawClient, messages: Buffer[]): Promise<string[]> {
    const got: string[] = [];
    raw.onMessage = (type, body) => {
      const d = describeMessage(type, body);
      if (d !== undefined) got.push(d);
    };
    const ready = raw.next((t) => t === 'Z');
    raw.socket.write(Buffer.concat(messages));
    await ready;
    return got;
  }

  it("reuses the session's own analysis made at the batch's start while nothing that changes names has run", async () => {
    const raw = await RawClient.connect(port(), await tp.token({ role: 'tmp' }));
    try {
      await batch(raw, [query('CREATE TEMP TABLE tb (a int)')]);
      const insert = 'INSERT INTO tb VALUES (1)';
      const got = await batch(raw, [
        ...[1, 2, 3].flatMap(() => [parse('', insert), bind('', ''), execute('')]),
        sync(),
      ]);
      expect(got).toEqual(['1', '2', 'CINSERT 0 1', '1', '2', 'CINSERT 0 1', '1', '2', 'CINSERT 0 1', 'ZI']);
      expect(await batch(raw, [query('SELECT count(*) FROM tb')])).toEqual(['T', 'D3', 'CSELECT 1', 'ZI']);
    } finally {
      raw.close();
    }
  });

  it('not once a prepared DROP of the temporary table has run in the batch: the read is the permanent relation, refused', async () => {
    const raw = await RawClient.connect(port(), await tp.token({ role: 'tmp' }));
    try {
      await batch(raw, [query('CREATE TEMP TABLE sa_secrets (id int, v text)')]);
      await batch(raw, [parse('dropper', 'DROP TABLE pg_temp.sa_secrets'), sync()]);
      const read = 'SELECT v FROM sa_secrets';
      // Analysed at an idle point while the temporary table exists: allowed.
      expect(await batch(raw, [parse('', read), bind('', ''), execute(''), sync()])).toEqual([
        '1',
        '2',
        'CSELECT 0',
        'ZI',
      ]);
      const got = await batch(raw, [
        bind('', 'dropper'),
        execute(''),
        parse('', read),
        bind('', ''),
        execute(''),
        sync(),
      ]);
      expect(got).toEqual(['2', 'CDROP TABLE', 'E42501', 'ZI']);
      expect(got.join()).not.toContain(SECRET);
    } finally {
      raw.close();
    }
  });
});

describe('postgres.js and COPY', () => {
  it('temporary tables through postgres.js (named statements reused), COPY in and out', async () => {
    const sql = postgres({ ...pjsConfig(await tp.token({ role: 'tmp' })), max: 1, onnotice: () => {} });
    try {
      await sql`CREATE TEMP TABLE pj (id int, note text)`;
      for (let i = 0; i < 3; i++) await sql`INSERT INTO pj VALUES (${i}, ${`n${i}`})`;
      expect(await sql`SELECT id, note FROM pj ORDER BY id`).toEqual([
        { id: 0, note: 'n0' },
        { id: 1, note: 'n1' },
        { id: 2, note: 'n2' },
      ]);
      const out: string[] = [];
      const reader = await sql`COPY pj TO STDOUT`.readable();
      for await (const chunk of reader) out.push(chunk.toString());
      expect(out.join('')).toBe('0\tn0\n1\tn1\n2\tn2\n');
      const writer = await sql`COPY pj FROM STDIN`.writable();
      await new Promise<void>((resolve, reject) => {
        writer.on('error', reject);
        writer.end('7\tseven\n', () => resolve());
      });
      expect(await sql`SELECT count(*)::int AS n FROM pj`).toEqual([{ n: 4 }]);
      await sql`DROP TABLE pg_temp.pj`;
    } finally {
      await sql.end();
    }
  });
});

const hasPsql = spawnSync('psql', ['--version']).status === 0;

describe.skipIf(!hasPsql)('psql', () => {
  it('a temporary table made, filled with \\copy, read, and the permanent name refused once it is gone', async () => {
    const token = await tp.token({ role: 'tmp' });
    const { stdout } = await promisify(execFile)(
      'psql',
      [
        '-X',
        '-A',
        '-t',
        '-v',
        'ON_ERROR_STOP=0',
        '-c',
        'CREATE TEMP TABLE sa_secrets (id int, v text)',
        '-c',
        '\\copy sa_secrets from program \'printf "4\\tfour\\n"\'',
        '-c',
        'SELECT id, v FROM sa_secrets',
        '-c',
        'DROP TABLE pg_temp.sa_secrets',
        '-c',
        'SELECT v FROM sa_secrets',
        `host=127.0.0.1 port=${port()} dbname=app user=alice sslmode=disable`,
      ],
      { env: { ...process.env, PGPASSWORD: token }, timeout: 10_000 },
    ).catch((err: { stdout: string; stderr: string }) => err);
    expect(stdout.trim().split('\n')).toEqual(['CREATE TABLE', 'COPY 1', '4|four', 'DROP TABLE']);
    expect(stdout).not.toContain(SECRET);
  });
});

describe('the stream the client sees', () => {
  it("is PostgreSQL's own, message for message and status for status, and the unnamed statement and portal survive", async () => {
    // One sequence sent directly and through pgwarden: after the temporary table, every statement through pgwarden is
    // analysed on the session's own connection, between the client's messages.
    const steps: Buffer[] = [
      query('CREATE TEMP TABLE st (a int)'),
      query('INSERT INTO st VALUES (1), (2), (3)'),
      query('BEGIN'),
      Buffer.concat([parse('', 'SELECT a FROM st ORDER BY a'), bind('', ''), execute('', 1), sync()]),
      Buffer.concat([parse('n1', 'SELECT a FROM st WHERE a > 1 ORDER BY a'), bind('p1', 'n1'), execute('p1'), sync()]),
      Buffer.concat([execute('', 1), sync()]),
      Buffer.concat([bind('', ''), execute(''), sync()]),
      Buffer.concat([
        parse('bad', 'SELECT nope FROM st'),
        bind('pb', 'bad'),
        execute('pb'),
        parse('n3', 'SELECT a FROM st'),
        bind('p3', 'n3'),
        execute('p3'),
        sync(),
      ]),
      query('SELECT a FROM st'),
      query('ROLLBACK'),
      query('SELECT count(*) FROM st'),
    ];
    const proxied = await RawClient.connect(port(), await tp.token({ role: 'tmp' }));
    const viaProxy = await transcript(steps, (b) => proxied.socket.write(b), proxied);
    proxied.close();
    const direct = await directTranscript(steps);
    expect(viaProxy).toEqual(direct);
    // The statuses, spelled out: the unnamed portal continued (2), was bound again (1, 2, 3), the batch failed.
    expect(viaProxy.filter((m) => m.startsWith('Z'))).toEqual([
      'ZI',
      'ZI',
      'ZT',
      'ZT',
      'ZT',
      'ZT',
      'ZT',
      'ZE',
      'ZE',
      'ZI',
      'ZI',
    ]);
  });
});

describe('in the middle of a batch inside a transaction block (psycopg executemany after its own CREATE TABLE)', () => {
  it("is analysed there, between the client's messages, and the stream is PostgreSQL's own", async () => {
    // A table the open transaction made: pgwarden's analysis connections cannot see it, and each statement on it comes
    // in the middle of a batch. pgwarden asks for the batch's answers (Flush), then runs its wrapper (with Syncs of its
    // own, which inside a transaction block end nothing) and goes on with the client's messages.
    const steps: Buffer[] = [
      query('BEGIN'),
      query('CREATE TABLE sa_scratch.mb (a int, b text)'),
      Buffer.concat([
        parse('', 'SELECT 42'),
        bind('early', ''),
        parse('i1', "INSERT INTO sa_scratch.mb VALUES (1, 'x')"),
        bind('', 'i1'),
        execute(''),
        parse('i2', "INSERT INTO sa_scratch.mb VALUES (2, 'y') RETURNING a"),
        bind('', 'i2'),
        execute(''),
        parse('', 'SELECT a || b FROM sa_scratch.mb ORDER BY a'),
        bind('', ''),
        execute('', 1),
        execute('early'),
        execute(''),
        sync(),
      ]),
      // An error earlier in the batch: PostgreSQL skips the rest, the statement needing analysis too.
      Buffer.concat([
        parse('bad', 'SELECT nope FROM sa_scratch.mb'),
        bind('pb', 'bad'),
        execute('pb'),
        parse('n3', 'SELECT a FROM sa_scratch.mb WHERE a > 0'),
        bind('p3', 'n3'),
        execute('p3'),
        sync(),
      ]),
      query('ROLLBACK'),
    ];
    const proxied = await RawClient.connect(port(), await tp.token({ role: 'tmp' }));
    const viaProxy = await transcript(steps, (b) => proxied.socket.write(b), proxied);
    proxied.close();
    const direct = await directTranscript(steps);
    expect(viaProxy).toEqual(direct);
    expect(viaProxy).toEqual([
      'CBEGIN',
      'ZT',
      'CCREATE TABLE',
      'ZT',
      '1',
      '2',
      '1',
      '2',
      'CINSERT 0 1',
      '1',
      '2',
      'D2',
      'CINSERT 0 1',
      '1',
      '2',
      'D1x',
      's',
      'D42',
      'CSELECT 1',
      'D2y',
      'CSELECT 1',
      'ZT',
      'E42703',
      'ZE',
      'CROLLBACK',
      'ZI',
    ]);
    // The rollback took the table with it: nothing of pgwarden's wrapper committed anything.
    const left = await su((c) => c.query("SELECT count(*)::int AS n FROM pg_class WHERE relname = 'mb'"));
    expect(left.rows).toEqual([{ n: 0 }]);
  });

  it('sees what the batch did before it: a temporary table dropped there leaves the permanent one, refused', async () => {
    const raw = await RawClient.connect(port(), await tp.token({ role: 'tmp' }));
    try {
      const steps = [
        query('BEGIN'),
        query('CREATE TEMP TABLE sa_secrets (id int, v text)'),
        Buffer.concat([
          parse('', 'DROP TABLE pg_temp.sa_secrets'),
          bind('', ''),
          execute(''),
          parse('', 'SELECT v FROM sa_secrets'),
          bind('', ''),
          execute(''),
          sync(),
        ]),
        query('ROLLBACK'),
      ];
      const got = await transcript(steps, (b) => raw.socket.write(b), raw);
      expect(got).toEqual([
        'CBEGIN',
        'ZT',
        'CCREATE TABLE',
        'ZT',
        '1',
        '2',
        'CDROP TABLE',
        'E42501',
        'ZE',
        'CROLLBACK',
        'ZI',
      ]);
      expect(got.join()).not.toContain(SECRET);
    } finally {
      raw.close();
    }
  });

  it('not once the batch may have ended the block (COMMIT in it): refused as before', async () => {
    const raw = await RawClient.connect(port(), await tp.token({ role: 'tmp' }));
    try {
      const steps = [
        query('CREATE TEMP TABLE mbc (a int)'),
        query('BEGIN'),
        Buffer.concat([
          parse('', 'COMMIT'),
          bind('', ''),
          execute(''),
          parse('', 'INSERT INTO mbc VALUES (7)'),
          bind('', ''),
          execute(''),
          sync(),
        ]),
        query('SELECT count(*) FROM pg_temp.mbc'),
      ];
      const got = await transcript(steps, (b) => raw.socket.write(b), raw);
      // The INSERT was not analysed in the middle of that batch (pgwarden's Sync would have committed PostgreSQL's
      // implicit transaction): refused, and nothing was inserted.
      expect(got.slice(0, 7)).toEqual(['CCREATE TABLE', 'ZI', 'CBEGIN', 'ZT', '1', '2', 'CCOMMIT']);
      expect(got[7]?.startsWith('E')).toBe(true);
      expect(got.slice(-3)).toEqual(['D0', 'CSELECT 1', 'ZI']);
    } finally {
      raw.close();
    }
  });
});

function port(): number {
  return tp.proxy.port;
}

function pjsConfig(password: string): postgres.Options<Record<string, never>> {
  const c = tp.pgConfig(password);
  // No type fetch at connect: the role has no catalog access.
  return {
    host: '127.0.0.1',
    port: port(),
    user: String(c.user),
    password,
    database: String(c.database),
    fetch_types: false,
  };
}

/** Each message as a short string: type, and for the ones that carry it the status, SQLSTATE, row or tag. */
function describeMessage(type: string, body: Buffer): string | undefined {
  switch (type) {
    case 'Z':
      return `Z${String.fromCharCode(body[0] ?? 0)}`;
    case 'E':
      return `E${errorCode(body)}`;
    case 'D':
      return `D${body.subarray(6).toString('utf8')}`;
    case 'C':
      return `C${body.subarray(0, body.length - 1).toString('utf8')}`;
    case 'N':
    case 'S':
      return undefined;
    default:
      return type;
  }
}

async function transcript(steps: Buffer[], write: (b: Buffer) => void, raw: RawClient): Promise<string[]> {
  const out: string[] = [];
  raw.onMessage = (type, body) => {
    const d = describeMessage(type, body);
    if (d !== undefined) out.push(d);
  };
  for (const step of steps) {
    const ready = raw.next((t) => t === 'Z');
    write(step);
    await ready;
  }
  return out;
}

/** The same steps on a direct connection as pgwarden's upstream user, read with pgwarden's own framer. */
async function directTranscript(steps: Buffer[]): Promise<string[]> {
  const up = await tcpUpstream.connect(tp.config.upstream, { application_name: 'direct' });
  const framer = new MessageFramer({ maxMessageSize: 1024 * 1024 });
  const out: string[] = [];
  let onReady: (() => void) | undefined;
  up.socket.on('data', (chunk: Buffer) => {
    framer.push(chunk);
    for (let f = framer.next(); f; f = framer.next()) {
      const d = describeMessage(String.fromCharCode(f.type), f.body);
      if (d !== undefined) out.push(d);
      if (f.type === BackendType.ReadyForQuery) onReady?.();
    }
  });
  try {
    for (const step of steps) {
      await new Promise<void>((resolve) => {
        onReady = resolve;
        up.socket.write(step);
      });
    }
  } finally {
    up.socket.destroy();
  }
  return out;
}
