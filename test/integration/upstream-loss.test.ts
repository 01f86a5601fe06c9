// A lost upstream (terminated backend, reset, silently dead connection, slow login) ends the session promptly with a clear error; metrics stay true.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Identity } from '../../proxy/auth/jwt.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { startForwarder, type ForwardedPair, type Forwarder } from '../helpers/forwarder.ts';
import { connectPg, loginError, startTestProxy, superClient, testPg, type TestProxy } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';

const CHECK_INTERVAL = 300;
const CHECK_TIMEOUT = 500;

let fwd: Forwarder;
let tp: TestProxy;

beforeAll(async () => {
  const info = testPg();
  fwd = await startForwarder({ host: info.host, port: info.port });
  tp = await startTestProxy({
    limits: { handshakeTimeout: 1_000 },
    config: {
      upstream: {
        host: '127.0.0.1',
        port: fwd.port,
        database: SAMPLE_DATABASE,
        user: SAMPLE_UPSTREAM_USER,
        password: info.upstreamPassword,
        sslmode: 'disable',
        sslRootCert: undefined,
        connectTimeout: 5_000,
        checkInterval: CHECK_INTERVAL,
        checkTimeout: CHECK_TIMEOUT,
      },
    },
  });
});
afterAll(async () => {
  await tp?.close();
  await fwd?.close();
});

/** A client through the proxy, the forwarded connection that is its upstream, and its first error. */
async function session(): Promise<{
  c: pg.Client;
  pair: ForwardedPair;
  error: Promise<Error & { code?: string; severity?: string }>;
}> {
  fwd.setNewConnections('forward');
  const before = fwd.pairs.length;
  const c = await connectPg(tp);
  // Kept attached: after the FATAL the driver also reports the closed connection, which must not go unhandled.
  const error = new Promise<Error & { code?: string }>((resolve) => c.on('error', resolve));
  // The login opened exactly one upstream connection: the session's own (the catalog and analysis connections are older).
  expect(fwd.pairs.length).toBe(before + 1);
  const pair = fwd.pairs[before] as ForwardedPair;
  expect((await c.query('SELECT id FROM orders ORDER BY id LIMIT 1')).rows).toHaveLength(1);
  return { c, pair, error };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms)),
  ]);
}

function sessionEnds(reason: string): number {
  return tp.auditLines().filter((l) => {
    const e = JSON.parse(l) as { event: string; reason?: string };
    return e.event === 'session_end' && e.reason === reason;
  }).length;
}

describe('the upstream goes away under a live session', () => {
  it("pg_terminate_backend: Postgres's own FATAL reaches the client and the session ends", async () => {
    const { c, pair, error } = await session();
    const ended = sessionEnds('upstream_lost');
    const su = await superClient();
    try {
      const r = await su.query('SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE client_port = $1', [
        pair.server?.localPort,
      ]);
      expect(r.rows).toEqual([{ ok: true }]);
    } finally {
      await su.end();
    }
    const err = await within(error, 5_000, 'the client error');
    expect(err).toMatchObject({ code: '57P01', severity: 'FATAL' });
    await until(() => sessionEnds('upstream_lost') === ended + 1, 5_000);
    await c.end().catch(() => {});
  });

  it('a reset without a word ends the session with 08006 "the connection to the upstream database was lost"', async () => {
    const { c, pair, error } = await session();
    pair.cut();
    const err = await within(error, 5_000, 'the client error');
    expect(err).toMatchObject({ code: '08006', severity: 'FATAL' });
    expect(err.message).toMatch(/upstream database was lost/);
    await c.end().catch(() => {});
  });

  it('a silently dead upstream (black-holed, socket still open) ends an idle session with 08006 within checkInterval + checkTimeout', async () => {
    const { c, pair, error } = await session();
    const t0 = Date.now();
    pair.blackhole();
    const err = await within(error, CHECK_INTERVAL + CHECK_TIMEOUT + 3_000, 'the client error');
    expect(err).toMatchObject({ code: '08006', severity: 'FATAL' });
    expect(err.message).toMatch(/upstream connection was lost: no answer to a check within 500 ms/);
    // Hang guard, not a timing measurement: the bound is one interval plus the timeout, with slack for a busy machine.
    expect(Date.now() - t0).toBeLessThan(CHECK_INTERVAL + CHECK_TIMEOUT + 3_000);
    await c.end().catch(() => {});
  });

  it('a statement sent into a silently dead upstream ends with 08006 once statementTimeout + checkTimeout pass without a byte', async () => {
    // The analyst role has statementTimeout 5s: PostgreSQL itself would have answered (or cancelled) by then.
    const { c, pair } = await session();
    pair.blackhole();
    const t0 = Date.now();
    // With a query in flight the driver hands the FATAL to that query.
    const running = c.query('SELECT id FROM orders WHERE id = 3').then(
      () => undefined,
      (e: Error & { code?: string; severity?: string }) => e,
    );
    const err = await within(running, 5_000 + CHECK_TIMEOUT + CHECK_INTERVAL + 4_000, 'the query error');
    expect(err).toMatchObject({ code: '08006', severity: 'FATAL' });
    expect(err?.message).toMatch(
      /upstream connection was lost: no answer for \d+ ms while a statement ran \(its statementTimeout is 5000 ms\)/,
    );
    expect(Date.now() - t0).toBeGreaterThanOrEqual(5_000);
    await c.end().catch(() => {});
  }, 20_000);

  it('idle checks do not disturb a working session, in or out of a transaction', async () => {
    const { c, error } = await session();
    let failed: unknown;
    void error.then((e) => (failed = e));
    for (let i = 0; i < 12; i++) {
      const r = await c.query('SELECT id FROM orders WHERE id = $1', [1 + (i % 3)]);
      expect(r.rows).toEqual([{ id: 1 + (i % 3) }]);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Inside a transaction no check is sent (it would restart idle_in_transaction_session_timeout); the transaction goes on.
    await c.query('BEGIN');
    await new Promise((r) => setTimeout(r, CHECK_INTERVAL * 3));
    expect((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBeGreaterThan(0);
    await c.query('COMMIT');
    const p = c.query('PREPARE one AS SELECT id FROM orders WHERE id = 1');
    await p;
    await new Promise((r) => setTimeout(r, CHECK_INTERVAL * 2));
    expect((await c.query('EXECUTE one')).rows).toEqual([{ id: 1 }]);
    expect(failed).toBeUndefined();
    await c.end();
  });
});

describe('logging in to a slow or failing upstream', () => {
  it("a slow upstream login is reported as the upstream's fault, not as the client being slow", async () => {
    fwd.setNewConnections('blackhole');
    try {
      const err = await loginError(tp.pgConfig(await tp.token()));
      expect(err.code).toBe('08006');
      expect(err.message).toMatch(/timed out waiting for the upstream database/);
      expect(err.message).not.toMatch(/client/);
    } finally {
      fwd.setNewConnections('forward');
    }
  });

  it('pgwarden_sessions_active never goes negative after upstream login failures', async () => {
    const active = async () => (await tp.proxy.metrics.activeSessions.get()).values[0]?.value ?? 0;
    const live = await connectPg(tp);
    expect(await active()).toBe(1);
    for (const mode of ['reset', 'blackhole'] as const) {
      fwd.setNewConnections(mode);
      try {
        expect((await loginError(tp.pgConfig(await tp.token()))).code).toBe('08006');
      } finally {
        fwd.setNewConnections('forward');
      }
      expect(await active()).toBe(1);
    }
    await live.end();
    await until(async () => (await active()) === 0, 3_000);
  });
});

describe("a revocation does not wait for the policy's catalog read", () => {
  it('SIGHUP applies a new revocation while the catalog read hangs on a slow upstream', async () => {
    const mallory = {
      sub: 'mallory',
      role: 'analyst',
      jti: 'jti-mallory',
      exp: Math.floor(Date.now() / 1000) + 300,
    } as Identity;
    expect(tp.proxy.revocations.match(mallory)).toBeUndefined();
    writeFileSync(path.join(tp.dir, 'revocations.yaml'), 'revoked:\n  - { sub: mallory, reason: test }\n');
    const version = tp.proxy.store.version;
    // The policy's catalog read now waits for upstream.connectTimeout (5 s).
    fwd.setNewConnections('blackhole');
    let reloaded = false;
    const reload = tp.proxy.reload().then(() => (reloaded = true));
    try {
      await until(() => tp.proxy.revocations.match(mallory) !== undefined, 2_000);
      // The policy reload is past its settle time and waiting for the catalog: still not done, the revocation is.
      await new Promise((r) => setTimeout(r, 1_500));
      expect(reloaded).toBe(false);
      expect(tp.proxy.store.version).toBe(version);
      expect(tp.proxy.revocations.match(mallory)).toMatchObject({ reason: expect.stringContaining('test') });
    } finally {
      fwd.setNewConnections('forward');
    }
    await within(reload, 15_000, 'the reload');
    // Applied with the previous catalog once the read timed out (a new policy never waits for the database either).
    expect(tp.proxy.store.version).toBeGreaterThan(version);
    expect(tp.logs.some((l) => l.includes('catalog reload failed'))).toBe(true);
  });
});
