// set_config of constants decided as the SET it is, no-op SETs of pinned settings, and a role that stamps no idle-in-transaction timeout: through pgwarden to the real server, with what the server then shows.
import type pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_POLICY,
  connectPg,
  loginError,
  pgError,
  startTestProxy,
  withSuperClient,
  type TestProxy,
} from '../helpers/proxy.ts';
import { SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';

// analyst (DEFAULT_POLICY): read-only, statementTimeout 5s, searchPath public, idle-in-transaction 60 s (the default).
// jsrole: what postgres.js's own suite needs (a custom setting), no statement timeout, no idle-in-transaction stamp.
const POLICY = `${DEFAULT_POLICY}  jsrole:
    readOnly: true
    relations: [public.orders]
    settings: [postgres_js.test]
    idleInTransactionTimeout: 0
  pathrole:
    readOnly: true
    relations: [public.orders]
    searchPath: [app, public]
  shadowed:
    readOnly: true
    relations: [public.orders]
    searchPath: [sc_shadow, public]
`;

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  await tp?.close();
});

/** SHOW's one value (its column is the setting's display name: TimeZone, DateStyle). */
async function show(c: pg.Client, name: string): Promise<string> {
  return Object.values((await c.query(`SHOW ${name}`)).rows[0] as Record<string, string>)[0] as string;
}

/** The schemas unqualified names resolve in, as the server computes them from search_path. */
async function schemas(c: pg.Client): Promise<string> {
  return (await c.query("SELECT array_to_string(current_schemas(false), ',') AS s")).rows[0].s as string;
}

async function withClient<T>(role: string, fn: (c: pg.Client) => Promise<T>, extra: Partial<pg.ClientConfig> = {}) {
  const c = await connectPg(tp, await tp.token({ sub: `sc-${role}`, role }), extra);
  c.on('error', () => {});
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

describe('set_config with constant arguments is decided as SET', () => {
  it("postgres.js's sql.begin: a transaction-local custom setting the role lists, read back with current_setting", async () => {
    const sql = postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      user: 'sc-js',
      database: 'app',
      pass: await tp.token({ sub: 'sc-js', role: 'jsrole' }),
      max: 1,
      onnotice: () => {},
      fetch_types: false,
    });
    try {
      const inside = await sql.begin(async (tx) => {
        await tx`select set_config('postgres_js.test', 'testing', true)`;
        return await tx`select current_setting('postgres_js.test') as x`;
      });
      expect(inside[0]?.x).toBe('testing');
      // Transaction-local: gone after COMMIT, as PostgreSQL's is_local says.
      const [after] = await sql`select current_setting('postgres_js.test', true) as x`;
      expect(after?.x).toBe('');
      // A setting the role does not list is refused as SET would be.
      const err = await sql`select set_config('postgres_js.other', 'x', false)`.then(
        () => undefined,
        (e: { code?: string }) => e,
      );
      expect(err?.code).toBe('42501');
    } finally {
      await sql.end({ timeout: 2 });
    }
  });

  it('pg: allowed values reach the server, in the simple and the extended protocol; refused ones do not', async () => {
    await withClient('analyst', async (c) => {
      expect((await c.query("SELECT set_config('TimeZone', 'Pacific/Chatham', false) AS v")).rows).toEqual([
        { v: 'Pacific/Chatham' },
      ]);
      expect(await show(c, 'timezone')).toBe('Pacific/Chatham');
      await c.query({ name: 'sc1', text: "SELECT pg_catalog.set_config('statement_timeout', '1s', false)" });
      expect(await show(c, 'statement_timeout')).toBe('1s');
      // Above the role's 5 s: refused with SET's words, and the server keeps 1s.
      const above = await pgError(() => c.query("SELECT set_config('statement_timeout', '10s', false)"));
      expect(above.code).toBe('42501');
      expect(above.message).toMatch(/^permission denied by pgwarden: /);
      expect(above.detail).toContain('statement_timeout 10000 ms exceeds the role');
      expect(await show(c, 'statement_timeout')).toBe('1s');
      const zero = await pgError(() =>
        c.query({ name: 'sc2', text: "SELECT set_config('statement_timeout', '0', true)" }),
      );
      expect(zero.code).toBe('42501');
      expect(await show(c, 'statement_timeout')).toBe('1s');
      // Several calls: all allowed, all applied.
      await c.query("SELECT set_config('datestyle', 'German', false), set_config('lock_timeout', '250ms', false)");
      expect([await show(c, 'datestyle'), await show(c, 'lock_timeout')]).toEqual(['German, DMY', '250ms']);
    });
  });

  it('every bypass attempt is refused 42501 and the server keeps the stamped values', async () => {
    await withClient('analyst', async (c) => {
      const attempts: [string, unknown[]?][] = [
        ["SELECT set_config('search_path', 'evil', false)"],
        ["SELECT set_config('Search_Path', 'pg_temp, public', false)"],
        ["SELECT set_config(E'search\\x5fpath', 'evil', false)"],
        ["SELECT set_config('role', 'postgres', false)"],
        ["SELECT set_config('session_authorization', 'postgres', false)"],
        ["SELECT set_config('default_transaction_read_only', 'off', false)"],
        ["SELECT set_config('transaction_read_only', 'off', false)"],
        ["SELECT set_config('standard_conforming_strings', 'off', false)"],
        ["SELECT set_config('client_encoding', 'SJIS', false)"],
        ["SELECT set_config('pgwarden.sub', 'mallory', false)"],
        ["SELECT set_config('PGWARDEN.SUB', 'mallory', false)"],
        ["SELECT set_config('pgwarden.role', NULL, false)"],
        ["SELECT set_config('application_name', 'pgwarden:admin', false)"],
        ["SELECT set_config('statement_timeout', NULL, false)"],
        ["SELECT set_config('timezone', 'UTC', false), set_config('search_path', 'evil', false)"],
        ["SELECT set_config('timezone', 'UTC', false) FROM orders"],
        ["SELECT 1 WHERE set_config('search_path', 'public', false) <> ''"],
        ["WITH s AS (SELECT set_config('timezone', 'UTC', false)) SELECT * FROM s"],
        ["SELECT upper(set_config('timezone', 'UTC', false))"],
        ["SELECT set_config('timezone', 'UTC', false)::text"],
        ["SELECT set_config('timezone', 'UT' || 'C', false)"],
        ["SELECT set_config('timezone', (SELECT 'UTC'), false)"],
        ["SELECT * FROM set_config('timezone', 'UTC', false)"],
        ["SELECT set_config('timezone', 'UTC', false), 1"],
        ["SELECT set_config('timezone', $1, false)", ['UTC']],
        ['SELECT set_config($1, $2, false)', ['timezone', 'UTC']],
        ["SELECT set_config('timezone', 'UTC', $1)", [false]],
        ["SELECT set_config(VARIADIC ARRAY['timezone', 'UTC', 'false'])"],
      ];
      for (const [text, values] of attempts) {
        const err = await pgError(() => c.query(text, values));
        expect([text, err.code]).toEqual([text, '42501']);
      }
      expect(await show(c, 'search_path')).toBe('public');
      expect(await show(c, 'timezone')).not.toBe('UTC');
      expect(await show(c, 'statement_timeout')).toBe('5s');
      expect(await show(c, 'default_transaction_read_only')).toBe('on');
      expect(await show(c, 'standard_conforming_strings')).toBe('on');
      expect(await show(c, 'client_encoding')).toBe('UTF8');
      const stamps = await c.query(
        "SELECT current_setting('pgwarden.sub') AS sub, current_setting('pgwarden.role') AS role, current_user AS u, current_setting('application_name') AS app",
      );
      expect(stamps.rows[0].sub).toBe('sc-analyst');
      expect(stamps.rows[0].role).toBe('analyst');
      expect(stamps.rows[0].app).toMatch(/^pgwarden:sc-analyst\//);
    });
  });
});

describe("the server's analysis is the second opinion", () => {
  it("a set_config the server resolves to another schema's function, made after pgwarden read the catalog, is refused", async () => {
    await withSuperClient(async (su) => {
      await su.query(`DROP SCHEMA IF EXISTS sc_shadow CASCADE; CREATE SCHEMA sc_shadow;
        GRANT USAGE ON SCHEMA sc_shadow TO ${SAMPLE_UPSTREAM_USER};
        CREATE FUNCTION sc_shadow.set_config(text, text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'shadowed' $$`);
      // What PostgreSQL itself does with this text on that path: an unknown third argument prefers the text overload.
      await su.query('BEGIN; SET LOCAL search_path = sc_shadow, public');
      const direct = await su.query("SELECT set_config('timezone', 'UTC', 'x') AS v");
      await su.query('ROLLBACK');
      expect(direct.rows[0].v).toBe('shadowed');
    });
    try {
      await withClient('shadowed', async (c) => {
        const err = await pgError(() => c.query("SELECT set_config('timezone', 'UTC', 'x')"));
        expect(err.code).toBe('42501');
        expect(err.message).toContain('calls function sc_shadow.set_config');
        expect(await show(c, 'timezone')).not.toBe('UTC');
      });
    } finally {
      await withSuperClient((su) => su.query('DROP SCHEMA IF EXISTS sc_shadow CASCADE'));
    }
  });
});

describe('SETs that leave a pinned setting as stamped are allowed; other values stay refused', () => {
  it("standard_conforming_strings = on (psycopg's test_quote_roundtrip), RESET search_path (psycopg's test_no_result)", async () => {
    await withClient('analyst', async (c) => {
      await c.query('SET standard_conforming_strings = on');
      await c.query("SET LOCAL standard_conforming_strings TO 'true'");
      await c.query('RESET standard_conforming_strings');
      await c.query('RESET search_path');
      await c.query('SET search_path TO public');
      await c.query('SET search_path = "public"');
      expect(await show(c, 'search_path')).toBe('public');
      // set_config takes the raw list text: the server keeps the spelling, and resolves it as the stamped list.
      await c.query("SELECT set_config('search_path', ' PUBLIC ', false)");
      expect(await show(c, 'search_path')).toBe(' PUBLIC ');
      expect(await schemas(c)).toBe('public');
      await c.query('RESET search_path');
      expect(await show(c, 'search_path')).toBe('public');
      expect(await show(c, 'standard_conforming_strings')).toBe('on');
      for (const text of [
        'SET standard_conforming_strings = off',
        "SET standard_conforming_strings = 'o'",
        'SET search_path = public, pg_temp',
        'SET search_path = "Public"',
        "SET search_path = 'public, public'",
      ]) {
        const err = await pgError(() => c.query(text));
        expect([text, err.code]).toEqual([text, '42501']);
      }
      expect(await show(c, 'search_path')).toBe('public');
      expect(await show(c, 'standard_conforming_strings')).toBe('on');
    });
  });

  it('a role with two schemas: its own list is a no-op in every spelling PostgreSQL reads the same', async () => {
    await withClient('pathrole', async (c) => {
      const stamped = await show(c, 'search_path');
      expect(stamped).toBe('app, public');
      await c.query('SET search_path = app, public');
      expect(await show(c, 'search_path')).toBe(stamped);
      const before = await schemas(c);
      await c.query("SELECT set_config('search_path', 'APP,\"public\"', false)");
      expect(await schemas(c)).toBe(before);
      await c.query('RESET search_path');
      // One SET argument is one schema: 'app, public' names a schema called "app, public".
      expect((await pgError(() => c.query("SET search_path = 'app, public'"))).code).toBe('42501');
      expect((await pgError(() => c.query('SET search_path = public, app'))).code).toBe('42501');
      expect(await show(c, 'search_path')).toBe(stamped);
    });
  });

  it("a vertical tab is not white space to the server's list splitter: a set_config list that would drop a schema is refused", async () => {
    await withClient('pathrole', async (c) => {
      const stamped = await show(c, 'search_path');
      const before = await schemas(c);
      // PostgreSQL 15's SplitIdentifierString (scanner_isspace) keeps \v in the name: 'app\v' and '\vpublic' are other
      // schemas, so the server would resolve unqualified names without app (or public) while pgwarden resolves them in it.
      for (const raw of ['app\v, public', 'app,\vpublic', '\vapp, public', 'app, public\v']) {
        const err = await pgError(() => c.query(`SELECT set_config('search_path', '${raw}', false)`));
        expect([JSON.stringify(raw), err.code]).toEqual([JSON.stringify(raw), '42501']);
        expect(await schemas(c)).toBe(before);
      }
      expect(await show(c, 'search_path')).toBe(stamped);
    });
  });

  it("startup search_path (node-postgres gh-2416's options): the role's own is accepted, another refused FATAL 42501", async () => {
    await withClient('analyst', async (c) => expect(await show(c, 'search_path')).toBe('public'), {
      options: '--search_path=public',
    });
    const err = await loginError(tp.pgConfig(await tp.token({ sub: 'sc-2416' }), { options: '--search_path=foo' }));
    expect([err.code, err.severity]).toEqual(['42501', 'FATAL']);
  });
});

describe('idleInTransactionTimeout: 0 stamps none', () => {
  it("the server's own value shows, and the client's startup value is applied (node-postgres's idle_in_transaction_session_timeout-tests)", async () => {
    const server = await withClient('jsrole', (c) => show(c, 'idle_in_transaction_session_timeout'));
    expect(server).toBe('0');
    await withClient(
      'jsrole',
      async (c) => {
        expect(await show(c, 'idle_in_transaction_session_timeout')).toBe('3s');
        // No statementTimeout on the role: the client's own is applied too.
        expect(await show(c, 'statement_timeout')).toBe('1500ms');
        await c.query('SET idle_in_transaction_session_timeout = 0');
        expect(await show(c, 'idle_in_transaction_session_timeout')).toBe('0');
      },
      { idle_in_transaction_session_timeout: 3000, statement_timeout: 1500 },
    );
  });

  it("a role with the default keeps its 60 s stamp; a client's lower value is applied", async () => {
    expect(await withClient('analyst', (c) => show(c, 'idle_in_transaction_session_timeout'))).toBe('1min');
    await withClient('analyst', async (c) => expect(await show(c, 'idle_in_transaction_session_timeout')).toBe('3s'), {
      idle_in_transaction_session_timeout: 3000,
    });
    const err = await loginError(
      tp.pgConfig(await tp.token({ sub: 'sc-idle0' }), { options: '-c idle_in_transaction_session_timeout=0' }),
    );
    expect([err.code, err.severity]).toEqual(['42501', 'FATAL']);
  });
});
