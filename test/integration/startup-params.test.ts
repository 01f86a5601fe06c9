// Startup parameters follow the role's SET rules: what SET would allow is applied (a timeout only lower than the role's), the rest is a FATAL 42501 before any upstream connection.
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import type pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_POLICY,
  connectPg,
  loginError,
  startTestProxy,
  superClient,
  type TestProxy,
} from '../helpers/proxy.ts';

// analyst: statementTimeout 5s, idle-in-transaction 60 s (the default). tenanted lists a custom setting.
const POLICY = `${DEFAULT_POLICY}  tenanted:
    readOnly: true
    relations: [public.orders]
    statementTimeout: 3s
    idleInTransactionTimeout: 20s
    settings: [myapp.tenant]
`;

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  await tp?.close();
});

async function show(c: pg.Client, name: string): Promise<string> {
  return (await c.query(`SHOW ${name}`)).rows[0][name] as string;
}

/** Upstream sessions of `sub`, as pg_stat_activity shows them (their application_name starts with the identity). */
async function upstreamSessions(sub: string): Promise<number> {
  const su = await superClient();
  try {
    const r = await su.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1`, [
      `pgwarden:${sub}%`,
    ]);
    return r.rows[0].n as number;
  } finally {
    await su.end();
  }
}

describe('pg (node-postgres sends these as startup parameters)', () => {
  it("statement_timeout and idle_in_transaction_session_timeout below the role's are applied, and are what RESET ALL returns to", async () => {
    const c = await connectPg(tp, await tp.token({ sub: 'sp-lower' }), {
      statement_timeout: 1000,
      idle_in_transaction_session_timeout: 2000,
      lock_timeout: 500,
    });
    try {
      expect(await show(c, 'statement_timeout')).toBe('1s');
      expect(await show(c, 'idle_in_transaction_session_timeout')).toBe('2s');
      expect(await show(c, 'lock_timeout')).toBe('500ms');
      await c.query('RESET ALL');
      expect(await show(c, 'statement_timeout')).toBe('1s');
      expect(await show(c, 'idle_in_transaction_session_timeout')).toBe('2s');
      // The client's limit is enforced by the server.
      await expect(
        c.query('SELECT count(*) FROM orders a, orders b, orders c, orders d, orders e'),
      ).rejects.toMatchObject({ code: '57014' });
    } finally {
      await c.end();
    }
  });

  it.each([
    [
      "statement_timeout above the role's",
      { statement_timeout: 10_000 },
      'statement_timeout may be set between 1 and 5000 ms',
    ],
    [
      'idle_in_transaction_session_timeout above the stamped 60 s',
      { idle_in_transaction_session_timeout: 3_600_000 },
      'idle_in_transaction_session_timeout may be set between 1 and 60000 ms',
    ],
  ] as [string, Partial<pg.ClientConfig>, string][])(
    '%s is refused FATAL 42501 as the SET would be, and no upstream session opens',
    async (_what, extra, hint) => {
      const sub = `sp-refused-${Object.keys(extra)[0]}-${Object.values(extra)[0]}`;
      const err = await loginError(tp.pgConfig(await tp.token({ sub }), extra));
      expect([err.code, err.severity]).toEqual(['42501', 'FATAL']);
      expect(err.message).toBe(
        `permission denied by pgwarden: SET changes a setting pgwarden does not allow; hint: ${hint} (reason=scope_missing)`,
      );
      expect(err.hint).toBe(hint);
      expect(err.detail).toMatch(/^reason=scope_missing\nstartup parameter "/);
      expect(await upstreamSessions(sub)).toBe(0);
    },
  );

  it('options (PGOPTIONS): its -c settings are judged the same way; its other switches are refused before login', async () => {
    const c = await connectPg(tp, await tp.token({ sub: 'sp-options' }), {
      options: '-c statement_timeout=1500 --lock-timeout=250ms',
    });
    try {
      expect(await show(c, 'statement_timeout')).toBe('1500ms');
      expect(await show(c, 'lock_timeout')).toBe('250ms');
    } finally {
      await c.end();
    }
    const zero = await loginError(tp.pgConfig(await tp.token(), { options: '-c statement_timeout=0' }));
    expect([zero.code, zero.severity]).toEqual(['42501', 'FATAL']);
    const other = await loginError(tp.pgConfig(await tp.token(), { options: '-P' }));
    expect([other.code, other.severity]).toEqual(['0A000', 'FATAL']);
  });
});

describe('postgres.js (arbitrary startup parameters through `connection`)', () => {
  const connect = async (role: string, connection: Record<string, string>, sub = 'sp-js') =>
    postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      user: sub,
      database: 'app',
      pass: await tp.token({ sub, role }),
      max: 1,
      onnotice: () => {},
      fetch_types: false,
      connection,
    });

  it("a custom setting the role lists is applied; the timeouts within the role's", async () => {
    const sql = await connect('tenanted', {
      'myapp.tenant': 'acme',
      statement_timeout: '2s',
      idle_in_transaction_session_timeout: '5s',
    });
    try {
      const [row] =
        await sql`SELECT current_setting('myapp.tenant') AS t, current_setting('statement_timeout') AS st, current_setting('idle_in_transaction_session_timeout') AS it`;
      expect(row).toEqual({ t: 'acme', st: '2s', it: '5s' });
    } finally {
      await sql.end({ timeout: 2 });
    }
  });

  it.each([
    [
      'a custom setting the role does not list',
      'analyst',
      { 'myapp.tenant': 'acme' },
      '; hint: settings this role may change: datestyle, timezone, intervalstyle, extra_float_digits, bytea_output, lc_messages, lc_monetary, lc_numeric, lc_time, xmloption, client_min_messages, statement_timeout, lock_timeout, idle_in_transaction_session_timeout, transaction_isolation, default_transaction_isolation, default_transaction_deferrable, transaction_deferrable (reason=scope_missing)',
    ],
    [
      "a timeout above the role's",
      'tenanted',
      { statement_timeout: '4s' },
      '; hint: statement_timeout may be set between 1 and 3000 ms (reason=scope_missing)',
    ],
    [
      'statement_timeout 0 (no limit)',
      'tenanted',
      { statement_timeout: '0' },
      '; hint: statement_timeout may be set between 1 and 3000 ms (reason=scope_missing)',
    ],
    [
      'statement_timeout in octal',
      'tenanted',
      { statement_timeout: '010' },
      '; hint: statement_timeout may be set between 1 and 3000 ms (reason=scope_missing)',
    ],
    ['search_path', 'tenanted', { search_path: 'evil, public' }, ' (reason=scope_missing)'],
    ['role', 'tenanted', { role: 'postgres' }, ' (reason=scope_missing)'],
    ['session_authorization', 'tenanted', { session_authorization: 'postgres' }, ' (reason=scope_missing)'],
    ['a pgwarden.* stamp', 'tenanted', { 'pgwarden.sub': 'mallory' }, ' (reason=policy_denied)'],
    ['a pgwarden.* stamp in another case', 'tenanted', { 'PGWARDEN.SUB': 'mallory' }, ' (reason=policy_denied)'],
    ['standard_conforming_strings', 'tenanted', { standard_conforming_strings: 'off' }, ' (reason=policy_denied)'],
    [
      'client_encoding in another case',
      'tenanted',
      { Client_Encoding: 'SJIS' },
      "; hint: pgwarden speaks UTF8 only; SET client_encoding TO 'UTF8' is allowed (reason=policy_denied)",
    ],
    [
      'default_transaction_read_only for a read-only role',
      'tenanted',
      { default_transaction_read_only: 'off' },
      ' (reason=scope_missing)',
    ],
  ] as [string, string, Record<string, string>, string][])(
    '%s is refused FATAL 42501 with the SET refusal',
    async (_what, role, connection, tail) => {
      const sql = await connect(role, connection, 'sp-js-refused');
      try {
        const err = await sql`SELECT 1`.then(
          () => undefined,
          (e: { code?: string; severity?: string; message: string }) => e,
        );
        expect(err).toBeDefined();
        expect([err?.code, err?.severity]).toEqual(['42501', 'FATAL']);
        // The refusal's message ends with its hint and reason (docs/errors.md): postgres.js shows only the message.
        expect(err?.message).toBe(
          `permission denied by pgwarden: SET changes a setting pgwarden does not allow${tail}`,
        );
      } finally {
        await sql.end({ timeout: 2 });
      }
      expect(await upstreamSessions('sp-js-refused')).toBe(0);
    },
  );

  it('a stamped name in another case that the policy allows is overridden by the stamp, not applied', async () => {
    // Application_Name (not the exact startup key) is judged as SET application_name, allowed, and the stamp wins.
    const sql = await connect('tenanted', { Application_Name: 'forged', Client_Encoding: 'UTF8' }, 'sp-js-case');
    try {
      const [row] =
        await sql`SELECT current_setting('application_name') AS app, current_setting('client_encoding') AS enc`;
      expect(row?.app).toMatch(/^pgwarden:sp-js-case\/test-agent/);
      expect(row?.enc).toBe('UTF8');
    } finally {
      await sql.end({ timeout: 2 });
    }
  });
});

const hasPsql = spawnSync('psql', ['--version']).status === 0;

describe.skipIf(!hasPsql)('psql', () => {
  it("PGOPTIONS -c settings within the role's bounds are applied", async () => {
    const { stdout } = await promisify(execFile)(
      'psql',
      [
        '-X',
        '-A',
        '-t',
        '-c',
        'SHOW statement_timeout',
        '-c',
        'SHOW lock_timeout',
        `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=alice sslmode=disable`,
      ],
      {
        env: { ...process.env, PGPASSWORD: await tp.token(), PGOPTIONS: '-c statement_timeout=2s -c lock_timeout=100' },
        timeout: 10_000,
      },
    );
    expect(stdout.trim().split('\n')).toEqual(['2s', '100ms']);
  });
});
