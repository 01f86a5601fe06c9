// Token login through the real proxy: acceptance, every refusal by SQLSTATE, identity stamping and its protection.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import {
  connectPg,
  pgError,
  startTestProxy,
  superClient,
  testPg,
  type TestProxy,
  loginError,
} from '../helpers/proxy.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});

const now = () => Math.floor(Date.now() / 1000);
const base = () => ({
  sub: 'alice',
  role: 'analyst',
  iss: 'pgwarden-test',
  aud: 'pgwarden',
  iat: now(),
  exp: now() + 120,
});

const refusedLogin = (password: string) => loginError(tp.pgConfig(password));

describe('login with a JWT as the password', () => {
  it('accepts a minted HS256 token and stamps the identity on the upstream session', async () => {
    const token = await tp.token({ sub: 'alice', agent: 'report-bot', tenant: 'acme', jti: 'jti-1' });
    const c = await connectPg(tp, token, { application_name: 'psql' });
    try {
      const r = await c.query(
        `SELECT current_setting('pgwarden.sub') AS sub, current_setting('pgwarden.agent') AS agent,
                current_setting('pgwarden.tenant') AS tenant, current_setting('pgwarden.jti') AS jti,
                current_setting('pgwarden.role') AS role, current_setting('pgwarden.session_id') AS sid,
                current_setting('application_name') AS app, current_setting('default_transaction_read_only') AS ro,
                current_setting('statement_timeout') AS st, pg_backend_pid() AS pid`,
      );
      const row = r.rows[0];
      expect(row).toMatchObject({
        sub: 'alice',
        agent: 'report-bot',
        tenant: 'acme',
        jti: 'jti-1',
        role: 'analyst',
        ro: 'on',
        st: '5s',
      });
      expect(row.app).toBe('pgwarden:alice/report-bot psql');
      expect(row.sid).toMatch(/^[0-9a-f-]{36}$/);
      // What pg_stat_activity shows an operator, read directly from Postgres.
      const su = await superClient();
      try {
        const a = await su.query('SELECT application_name, usename FROM pg_stat_activity WHERE pid = $1', [row.pid]);
        expect(a.rows[0]).toEqual({ application_name: 'pgwarden:alice/report-bot psql', usename: 'pgwarden' });
      } finally {
        await su.end();
      }
    } finally {
      await c.end();
    }
  });

  it('reports application_name to the client as ParameterStatus', async () => {
    const c = await connectPg(tp, await tp.token({ agent: 'bot' }));
    try {
      // node-postgres keeps ParameterStatus values in connection.parameters (not public API, but stable).
      const params = (c as unknown as { connection: { parameters?: Record<string, string> } }).connection.parameters;
      const r = await c.query('SHOW application_name');
      expect(r.rows[0].application_name).toBe('pgwarden:alice/bot');
      if (params) expect(params.application_name).toBe('pgwarden:alice/bot');
    } finally {
      await c.end();
    }
  });

  it.each([
    ['expired', () => tp.sign({ ...base(), iat: now() - 300, exp: now() - 60 }), '28P01', /expired at \d{4}-/],
    ['bad signature', async () => (await tp.token()).slice(0, -3) + 'AAA', '28P01', /signature/],
    ['wrong audience', () => tp.sign({ ...base(), aud: 'someone-else' }), '28P01', /audience/],
    ['wrong issuer', () => tp.sign({ ...base(), iss: 'evil' }), '28P01', /issuer/],
    ['lifetime over maximum', () => tp.sign({ ...base(), exp: now() + 3600 }), '28P01', /lifetime/],
    ['not yet valid', () => tp.sign({ ...base(), nbf: now() + 600 }), '28P01', /not valid before|not yet valid/],
    ['not a JWT', async () => 'hunter2', '28P01', /not a JWT/],
    ['unknown role', () => tp.sign({ ...base(), role: 'dba' }), '28000', /role "dba"/],
    [
      'missing sub',
      () => tp.sign({ role: 'analyst', iss: 'pgwarden-test', aud: 'pgwarden', iat: now(), exp: now() + 60 }),
      '28P01',
      /sub/,
    ],
  ])('refuses a token: %s', async (_name, make, code, message) => {
    const token = await make();
    const err = await refusedLogin(token);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
    expect(err.severity).toBe('FATAL');
    expect(err.hint).toMatch(/request a (new )?token/i);
    // The token never travels back in an error.
    for (const part of token.split('.')) if (part.length > 8) expect(JSON.stringify(err)).not.toContain(part);
  });

  it('refuses alg=none and HS256 tokens signed with another key', async () => {
    const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
    const payload = Buffer.from(JSON.stringify(base())).toString('base64url');
    expect((await refusedLogin(`${header}.${payload}.`)).code).toBe('28P01');
    const { SignJWT } = await import('jose');
    const forged = await new SignJWT(base()).setProtectedHeader({ alg: 'HS256' }).sign(Buffer.alloc(32, 7));
    expect((await refusedLogin(forged)).code).toBe('28P01');
  });

  it('accepts a token several kilobytes long', async () => {
    const token = await tp.sign({ ...base(), padding: 'x'.repeat(6000) });
    expect(token.length).toBeGreaterThan(6000);
    const c = await connectPg(tp, token);
    try {
      expect((await c.query(`SELECT current_setting('pgwarden.sub') AS s`)).rows[0].s).toBe('alice');
    } finally {
      await c.end();
    }
  });

  it('never writes a token to its logs', async () => {
    const token = await tp.token({ sub: 'log-check' });
    const c = await connectPg(tp, token);
    await c.query('SELECT 1');
    await c.end();
    await refusedLogin(token.slice(0, -2) + 'xx');
    const all = tp.logs.join('');
    expect(all.length).toBeGreaterThan(0);
    expect(all).not.toContain(token.split('.')[2]!);
    expect(all).not.toContain(token.split('.')[1]!);
  });

  it('refuses startup options that could change identity or lexing', async () => {
    // Settings in options are judged as SET is (42501); other switches are refused before login (0A000).
    for (const [options, code] of [
      ['-c pgwarden.sub=mallory', '42501'],
      ['-c standard_conforming_strings=off', '42501'],
      ['--search-path=evil', '42501'],
      ['-P', '0A000'],
      ['-c x', '0A000'],
    ]) {
      const token = await tp.token();
      const err = await loginError({ ...tp.pgConfig(token), options } as pg.ClientConfig);
      expect([err.severity, err.code], options).toEqual(['FATAL', code]);
    }
  });

  it('refuses a database other than the one it serves', async () => {
    const token = await tp.token();
    const err = await loginError(tp.pgConfig(token, { database: 'postgres' }));
    expect(err.code).toBe('28000');
  });
});

describe('the stamped identity cannot be changed by the client', () => {
  it.each([
    `SET pgwarden.sub = 'mallory'`,
    `SET SESSION pgwarden.sub TO 'mallory'`,
    `SET LOCAL pgwarden.agent = 'x'`,
    `RESET pgwarden.sub`,
    `SELECT set_config('pgwarden.sub', 'mallory', false)`,
    // A SET of one value is allowed and rewritten under the prefix (app-name.test.ts); one it cannot rewrite is refused.
    `SET application_name = 'innocent', 'other'`,
    `SELECT set_config('application_name', 'innocent', false)`,
    `SET ROLE NONE`,
    `RESET ROLE`,
    `SET SESSION AUTHORIZATION DEFAULT`,
    `SET search_path = evil, public`,
    `SET default_transaction_read_only = off`,
    `SET statement_timeout = 0`,
    `SET standard_conforming_strings = off`,
  ])('refuses %s with 42501 and keeps the session usable', async (sql) => {
    const c = await connectPg(tp, await tp.token({ sub: 'alice' }));
    try {
      const err = await pgError(() => c.query(sql));
      expect(err.code).toBe('42501');
      const r = await c.query(
        `SELECT current_setting('pgwarden.sub') AS sub, current_setting('application_name') AS app`,
      );
      expect(r.rows[0].sub).toBe('alice');
      expect(r.rows[0].app).toMatch(/^pgwarden:alice/);
    } finally {
      await c.end();
    }
  });

  it('RESET ALL and DISCARD ALL fall back to the stamped identity and limits', async () => {
    const c = await connectPg(tp, await tp.token({ sub: 'alice' }));
    try {
      await c.query(`SET DateStyle = 'German'`);
      await c.query('RESET ALL');
      await c.query('DISCARD ALL');
      const r = await c.query(
        `SELECT current_setting('pgwarden.sub') AS sub, current_setting('default_transaction_read_only') AS ro, current_setting('statement_timeout') AS st, current_setting('search_path') AS sp`,
      );
      expect(r.rows[0]).toEqual({ sub: 'alice', ro: 'on', st: '5s', sp: 'public' });
    } finally {
      await c.end();
    }
  });
});

describe('brokered upstream', () => {
  it('an upstream login failure reaches the client as FATAL 08006 without upstream names or secrets', async () => {
    // A dedicated upstream role, so changing its password cannot disturb suites running in parallel.
    const su = await superClient();
    const info = testPg();
    await su.query(
      `DROP ROLE IF EXISTS pgwarden_flaky; CREATE ROLE pgwarden_flaky LOGIN PASSWORD 'right-password'; GRANT SELECT ON orders, customers TO pgwarden_flaky`,
    );
    const own = await startTestProxy({
      config: {
        upstream: {
          host: info.host,
          port: info.port,
          database: 'app',
          user: 'pgwarden_flaky',
          password: 'right-password',
          sslmode: 'disable',
          sslRootCert: undefined,
          connectTimeout: 5_000,
        },
      },
    });
    try {
      await su.query(`ALTER ROLE pgwarden_flaky PASSWORD 'temporarily-wrong'`);
      const err = await loginError(own.pgConfig(await own.token()));
      expect(err.code).toBe('08006');
      expect(err.severity).toBe('FATAL');
      const text = JSON.stringify(err);
      expect(text).not.toContain('right-password');
      expect(text).not.toContain('temporarily-wrong');
      expect(text).not.toMatch(/pgwarden_flaky/);
      // And the proxy recovers as soon as the upstream accepts it again.
      await su.query(`ALTER ROLE pgwarden_flaky PASSWORD 'right-password'`);
      const c = await connectPg(own);
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      await c.end();
    } finally {
      await own.close();
      await su.query('DROP OWNED BY pgwarden_flaky; DROP ROLE pgwarden_flaky').catch(() => {});
      await su.end();
    }
  });
});
