// Session behaviour with real clients: expiry, cancel, pipelined extended protocol (pg, postgres.js), psql, TLS termination.
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import postgres from 'postgres';
import {
  connectPg,
  pgError,
  startTestProxy,
  superClient,
  type TestProxy,
  sendCancel,
  loginError,
} from '../helpers/proxy.ts';
import { startForwarder } from '../helpers/forwarder.ts';
import { TLS_MAX_RECORD } from '../../proxy/session/session.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});

/** Waits for the client's error event (the FATAL the proxy sends) or its end. */
function nextClientError(c: pg.Client): Promise<{ code?: string; message: string; hint?: string }> {
  return new Promise((resolve) => c.once('error', (e) => resolve(e as never)));
}

const SLOW_SQL = 'SELECT count(*) FROM orders a, orders b, orders c';

describe('expiry by default', () => {
  it('ends an idle session within a second of exp with 57P01', async () => {
    const token = await tp.sign({
      sub: 'alice',
      role: 'analyst',
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 2,
    });
    const c = new pg.Client(tp.pgConfig(token));
    await c.connect();
    const errP = nextClientError(c);
    const expMs = (Math.floor(Date.now() / 1000) + 2) * 1000;
    const err = await errP;
    const late = Date.now() - expMs;
    expect(err.code).toBe('57P01');
    expect(err.message).toMatch(/expired at/);
    expect(err.hint).toMatch(/new token/);
    expect(late).toBeLessThan(1000);
    await c.end().catch(() => {});
  });

  it('ends a busy session at exp: the running query is cancelled upstream and the backend is gone', async () => {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const token = await tp.sign({
      sub: 'alice',
      role: 'analyst',
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      iat: exp - 60,
      exp,
    });
    const c = new pg.Client(tp.pgConfig(token));
    await c.connect();
    const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    c.on('error', () => {});
    const q = c.query(SLOW_SQL).then(
      () => ({ code: 'none' }),
      (e: { code?: string }) => e,
    );
    const err = await q;
    expect(Date.now() - exp * 1000).toBeLessThan(1500);
    expect(['57P01', undefined]).toContain(err.code === '57P01' ? '57P01' : err.code === 'none' ? 'none' : undefined);
    // The upstream backend must be gone shortly after.
    const su = await superClient();
    try {
      let alive = true;
      for (let i = 0; i < 40 && alive; i++) {
        alive = (await su.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 1;
        if (alive) await new Promise((r) => setTimeout(r, 50));
      }
      expect(alive).toBe(false);
    } finally {
      await su.end();
    }
    await c.end().catch(() => {});
  });
});

describe('cancel requests', () => {
  it('cancels the running statement for a key pgwarden issued, and ignores a forged key', async () => {
    const c = await connectPg(tp);
    try {
      const internals = c as unknown as { processID: number; secretKey: number };
      // A forged secret must not cancel anything.
      const q1 = c.query(`SELECT count(*) FROM orders a, orders b`);
      await sendCancel(tp.proxy.port, internals.processID, internals.secretKey ^ 1);
      await expect(q1).resolves.toBeDefined();
      // The real key cancels a long query with 57014 from Postgres, and the session stays usable.
      const q2 = c.query(SLOW_SQL);
      await new Promise((r) => setTimeout(r, 200));
      await sendCancel(tp.proxy.port, internals.processID, internals.secretKey);
      const err = await pgError(() => q2);
      expect(err.code).toBe('57014');
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });
});

describe('extended protocol with real drivers', () => {
  it('node-postgres: parameterised, named prepared statements, and a refused Parse in between', async () => {
    const c = await connectPg(tp);
    try {
      const r = await c.query({
        name: 'by-status',
        text: 'SELECT count(*)::int AS n FROM orders WHERE status = $1',
        values: ['paid'],
      });
      expect(r.rows[0].n).toBeGreaterThan(0);
      const again = await c.query({
        name: 'by-status',
        text: 'SELECT count(*)::int AS n FROM orders WHERE status = $1',
        values: ['new'],
      });
      expect(again.rows[0].n).toBeGreaterThan(0);
      const err = await pgError(() => c.query({ text: 'DELETE FROM canary WHERE id = $1', values: [1] }));
      expect(err.code).toBe('42501');
      expect((await c.query('SELECT $1::int + 1 AS x', [41])).rows[0].x).toBe(42);
    } finally {
      await c.end();
    }
  });

  it('postgres.js: pipelined queries keep their order and a refusal lands on its own query', async () => {
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
      const results = await Promise.allSettled([
        sql`SELECT 1::int AS n`,
        sql`SELECT ${2}::int AS n`,
        sql`DELETE FROM canary WHERE id = ${1}`,
        sql`SELECT ${4}::int AS n`,
        sql`SELECT count(*)::int AS n FROM orders WHERE total > ${10}`,
      ]);
      expect(results[0]).toMatchObject({ status: 'fulfilled', value: [{ n: 1 }] });
      expect(results[1]).toMatchObject({ status: 'fulfilled', value: [{ n: 2 }] });
      expect(results[2].status).toBe('rejected');
      expect((results[2] as PromiseRejectedResult).reason.code).toBe('42501');
      expect(results[3]).toMatchObject({ status: 'fulfilled', value: [{ n: 4 }] });
      expect(results[4].status).toBe('fulfilled');
    } finally {
      await sql.end({ timeout: 2 });
    }
  });
});

const psql = spawnSync('psql', ['--version']).status === 0;

describe.skipIf(!psql)('psql through the proxy', () => {
  it('connects with a token and reads the stamped identity', async () => {
    const token = await tp.token({ sub: 'psql-user' });
    const { stdout } = await promisify(execFile)(
      'psql',
      [
        '-X',
        '-A',
        '-t',
        '-c',
        `SELECT current_setting('pgwarden.sub')`,
        `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=psql-user sslmode=disable`,
      ],
      { env: { ...process.env, PGPASSWORD: token }, timeout: 10_000 },
    );
    expect(stdout.trim()).toBe('psql-user');
  });
});

const openssl = spawnSync('openssl', ['version']).status === 0;

describe.skipIf(!openssl)('TLS termination', () => {
  let tlsProxy: TestProxy;
  let ca: string;
  beforeAll(async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-tls-'));
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    const r = spawnSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ]);
    if (r.status !== 0) throw new Error(String(r.stderr));
    ca = readFileSync(cert, 'utf8');
    tlsProxy = await startTestProxy({
      listen: { tls: { certFile: cert, keyFile: key } },
      auth: { allowCleartext: 'never' },
    });
  });
  afterAll(async () => {
    await tlsProxy?.close();
  });

  it('accepts a token over TLS with certificate verification', async () => {
    const c = new pg.Client(tlsProxy.pgConfig(await tlsProxy.token(), { ssl: { ca, servername: 'localhost' } }));
    await c.connect();
    try {
      expect((await c.query(`SELECT current_setting('pgwarden.sub') AS s`)).rows[0].s).toBe('alice');
    } finally {
      await c.end();
    }
  });

  it('sends TLS records of at most 8192 bytes, which libpq always reads whole (a psycopg hang otherwise)', async () => {
    // A forwarder between client and pgwarden sees the ciphertext: 5-byte record headers with their lengths.
    const fwd = await startForwarder({ host: '127.0.0.1', port: tlsProxy.proxy.port });
    const records: number[] = [];
    let pending = Buffer.alloc(0);
    const c = new pg.Client({
      ...tlsProxy.pgConfig(await tlsProxy.token(), { ssl: { ca, servername: 'localhost' } }),
      port: fwd.port,
    });
    try {
      await c.connect();
      fwd.pairs[0]!.server!.on('data', (chunk: Buffer) => {
        pending = Buffer.concat([pending, chunk]);
        while (pending.length >= 5 && pending.length >= 5 + pending.readUInt16BE(3)) {
          records.push(pending.readUInt16BE(3));
          pending = pending.subarray(5 + pending.readUInt16BE(3));
        }
      });
      const r = await c.query(`SELECT repeat('x', 200000) AS big, g FROM generate_series(1, 40) g`);
      expect(r.rows).toHaveLength(40);
    } finally {
      await c.end();
      await fwd.close();
    }
    // 8 MB of rows went by; each record's ciphertext is its plaintext plus the AEAD's tag and type byte at most.
    expect(records.reduce((a, b) => a + b, 0)).toBeGreaterThan(8_000_000);
    expect(Math.max(...records)).toBeLessThanOrEqual(TLS_MAX_RECORD + 256);
  });

  it('refuses a cleartext token without TLS when the config says never', async () => {
    const token = await tlsProxy.token();
    const err = await loginError(tlsProxy.pgConfig(token, { ssl: false }));
    expect(err.code).toBe('28000');
    expect(err.message).toMatch(/TLS/);
  });
});
