// A client's SET application_name is applied by the server as pgwarden's identity prefix plus the client's name, through pg, postgres.js and psql, and cannot replace or forge the prefix.
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY, connectPg, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

// analyst has no `settings:` entry: application_name needs none. shadowy is a shadow-mode role.
const POLICY = `${DEFAULT_POLICY}  shadowy:
    mode: shadow
    readOnly: true
    relations: [public.orders]
`;

let tp: TestProxy;
let su: pg.Client;
beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY });
  su = await superClient();
});
afterAll(async () => {
  await su?.end();
  await tp?.close();
});

const PREFIX = 'pgwarden:alice/bot';

/** What the session shows (SHOW), and what an operator sees for its backend in pg_stat_activity. */
async function names(c: pg.Client): Promise<{ show: string; activity: string }> {
  const r = await c.query('SHOW application_name');
  const pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
  const a = await su.query('SELECT application_name FROM pg_stat_activity WHERE pid = $1', [pid]);
  return { show: r.rows[0].application_name as string, activity: a.rows[0]?.application_name as string };
}

async function client(extra: Partial<pg.ClientConfig> = {}, role = 'analyst'): Promise<pg.Client> {
  const c = await connectPg(tp, await tp.token({ sub: 'alice', agent: 'bot', role }), extra);
  c.on('error', () => {});
  return c;
}

describe('SET application_name through pg (simple and extended protocol)', () => {
  it.each([
    [`SET application_name = 'PostgreSQL JDBC Driver'`, `${PREFIX} PostgreSQL JDBC Driver`],
    [`SET SESSION application_name TO 'bi-tool'`, `${PREFIX} bi-tool`],
    [`set Application_Name = plain_ident`, `${PREFIX} plain_ident`],
    [`SET application_name = 42`, `${PREFIX} 42`],
    [`SET application_name = -1.50`, `${PREFIX} -1.50`],
    [`SET application_name = 'it''s'`, `${PREFIX} it's`],
    [`SET application_name = E'tab\\there\\x01'`, `${PREFIX} tab?here?`],
    [`SET application_name = $q$pgwarden:root/admin$q$`, `${PREFIX} pgwarden:root/admin`],
    [`SET application_name = ''`, PREFIX],
    [`SET application_name = '${'é'.repeat(40)}'`, `${PREFIX} ${'?'.repeat(40)}`],
    [`SET application_name = '${'é'.repeat(60)}'`, `${PREFIX} ${'?'.repeat(44)}`],
    [`SET application_name = '${'x'.repeat(100)}'`, `${PREFIX} ${'x'.repeat(44)}`],
    [`/* c */ SET application_name = 'after-comment' -- trailing`, `${PREFIX} after-comment`],
    [`SET "Application_Name" = 'quoted-name'`, `${PREFIX} quoted-name`],
    [`SET /* a */ application_name /* b */ TO /* c */ U&'\\0041pp'`, `${PREFIX} App`],
  ])('%s → %s, in SHOW and pg_stat_activity', async (sql, expected) => {
    const c = await client();
    try {
      await c.query(sql);
      expect(await names(c)).toEqual({ show: expected, activity: expected });
      expect(Buffer.byteLength(expected)).toBeLessThanOrEqual(63);
    } finally {
      await c.end();
    }
  });

  it('a named prepared SET (Parse/Bind/Execute) is rewritten the same way', async () => {
    const c = await client();
    try {
      await c.query({ name: 'set-app', text: `SET application_name = 'extended'` });
      expect((await names(c)).show).toBe(`${PREFIX} extended`);
      await c.query(`SET application_name = 'between'`);
      // Executing the prepared statement again runs the rewritten text prepared upstream.
      await c.query({ name: 'set-app', text: `SET application_name = 'extended'` });
      expect(await names(c)).toEqual({ show: `${PREFIX} extended`, activity: `${PREFIX} extended` });
    } finally {
      await c.end();
    }
  });

  it('the client is told the new name by ParameterStatus, prefix first', async () => {
    const c = await client();
    try {
      await c.query(`SET application_name = 'reported'`);
      const params = (c as unknown as { connection: { parameters?: Record<string, string> } }).connection.parameters;
      if (params) expect(params.application_name).toBe(`${PREFIX} reported`);
    } finally {
      await c.end();
    }
  });

  it('inside a multi-statement Query, only that statement changes and later ones see the prefixed name', async () => {
    const c = await client();
    try {
      const r = (await c.query(
        `SELECT 1 AS a; SET application_name = 'multi'; SELECT current_setting('application_name') AS app`,
      )) as unknown as pg.QueryResult[];
      expect(r[0]!.rows[0].a).toBe(1);
      expect(r[2]!.rows[0].app).toBe(`${PREFIX} multi`);
      await c.query(`SET application_name = 'one'; SET LOCAL application_name = 'two'; SET application_name = 'three'`);
      expect((await names(c)).show).toBe(`${PREFIX} three`);
    } finally {
      await c.end();
    }
  });

  it('beside a statement the row cap rewrites (LIMIT added), both rewrites apply', async () => {
    const c = await client();
    try {
      const r = (await c.query(
        `SELECT id FROM orders ORDER BY id; SET application_name = 'capped'; SELECT current_setting('application_name') AS app`,
      )) as unknown as pg.QueryResult[];
      expect(r[0]!.rows.length).toBeLessThanOrEqual(100);
      expect(r[2]!.rows[0].app).toBe(`${PREFIX} capped`);
    } finally {
      await c.end();
    }
  });

  it('RESET and SET … TO DEFAULT go back to the login name (prefix plus the startup parameter)', async () => {
    const c = await client({ application_name: 'startup-app' });
    try {
      expect((await names(c)).show).toBe(`${PREFIX} startup-app`);
      await c.query(`SET application_name = 'changed'`);
      await c.query('RESET application_name');
      expect((await names(c)).show).toBe(`${PREFIX} startup-app`);
      await c.query(`SET application_name = 'changed'`);
      await c.query('SET application_name TO DEFAULT');
      expect((await names(c)).show).toBe(`${PREFIX} startup-app`);
      await c.query(`SET application_name = 'changed'`);
      await c.query('RESET ALL');
      expect((await names(c)).show).toBe(`${PREFIX} startup-app`);
    } finally {
      await c.end();
    }
  });

  it('transactions: SET LOCAL ends with the transaction, a rolled-back or aborted SET is undone by the server', async () => {
    const c = await client();
    try {
      await c.query(`SET application_name = 'base'`);
      await c.query('BEGIN');
      await c.query(`SET LOCAL application_name = 'local'`);
      expect((await names(c)).show).toBe(`${PREFIX} local`);
      await c.query('COMMIT');
      expect((await names(c)).show).toBe(`${PREFIX} base`);

      await c.query('BEGIN');
      await c.query(`SET application_name = 'rolled-back'`);
      await c.query('ROLLBACK');
      expect(await names(c)).toEqual({ show: `${PREFIX} base`, activity: `${PREFIX} base` });

      await c.query('BEGIN');
      await c.query(`SET application_name = 'aborted'`);
      expect((await pgError(() => c.query('SELECT 1/0'))).code).toBe('22012');
      await c.query('ROLLBACK');
      expect((await names(c)).show).toBe(`${PREFIX} base`);

      await c.query('BEGIN; SAVEPOINT s');
      await c.query(`SET application_name = 'in-savepoint'`);
      await c.query('ROLLBACK TO SAVEPOINT s');
      await c.query('COMMIT');
      expect((await names(c)).show).toBe(`${PREFIX} base`);
    } finally {
      await c.end();
    }
  });

  it('forms that could not be rewritten are refused with 42501 and change nothing', async () => {
    const c = await client();
    try {
      for (const sql of [
        `SET application_name = 'a', 'b'`,
        `SELECT set_config('application_name', 'evil', false)`,
        `SELECT set_config('application_name', 'evil', true)`,
      ]) {
        const err = await pgError(() => c.query(sql));
        expect(err.code, sql).toBe('42501');
      }
      expect((await names(c)).show).toBe(PREFIX);
    } finally {
      await c.end();
    }
  });
});

describe('shadow mode', () => {
  it('rewrites application_name too, and keeps client_encoding UTF8 with the enforce-mode error', async () => {
    const c = await client({}, 'shadowy');
    try {
      // Allowed in shadow mode although the role has no relation for it: the rewrite still applies.
      await c.query(`SELECT count(*) FROM customers; SET application_name = 'shadow-app'`);
      expect((await names(c)).show).toBe(`${PREFIX} shadow-app`);
      for (const sql of [
        `SET client_encoding = 'SJIS'`,
        `SET NAMES 'LATIN1'`,
        `SELECT set_config('client_encoding', 'SJIS', false)`,
      ]) {
        const err = await pgError(() => c.query(sql));
        expect(err.code, sql).toBe('42501');
        expect(err.message).toMatch(/permission denied by pgwarden/);
      }
      await c.query(`SET client_encoding = 'UTF8'`);
      expect((await c.query('SHOW client_encoding')).rows[0].client_encoding).toBe('UTF8');
      // Non-ASCII text still round-trips: the connection was not switched to another encoding.
      expect((await c.query(`SELECT 'ü€' AS t`)).rows[0].t).toBe('ü€');
    } finally {
      await c.end();
    }
  });

  it('refuses SET client_encoding in enforce mode with the same error', async () => {
    const c = await client();
    try {
      const err = await pgError(() => c.query(`SET client_encoding = 'SJIS'`));
      expect(err.code).toBe('42501');
      expect(err.message).toMatch(/permission denied by pgwarden/);
    } finally {
      await c.end();
    }
  });
});

describe('postgres.js', () => {
  it('a startup application_name and a SET (extended protocol) both land under the prefix', async () => {
    const sql = postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      user: 'alice',
      database: 'app',
      pass: await tp.token({ sub: 'alice', agent: 'bot' }),
      max: 1,
      onnotice: () => {},
      connection: { application_name: 'pjs' },
    });
    try {
      expect((await sql`SHOW application_name`)[0]!.application_name).toBe(`${PREFIX} pjs`);
      await sql`SET application_name = 'pjs-set'`;
      const [{ app, pid }] =
        (await sql`SELECT current_setting('application_name') AS app, pg_backend_pid() AS pid`) as unknown as [
          { app: string; pid: number },
        ];
      expect(app).toBe(`${PREFIX} pjs-set`);
      const a = await su.query('SELECT application_name FROM pg_stat_activity WHERE pid = $1', [pid]);
      expect(a.rows[0].application_name).toBe(`${PREFIX} pjs-set`);
      await sql.unsafe(`SET application_name = 'pjs-simple'`, [], { prepare: false });
      expect((await sql`SHOW application_name`)[0]!.application_name).toBe(`${PREFIX} pjs-simple`);
    } finally {
      await sql.end({ timeout: 2 });
    }
  });
});

const hasPsql = spawnSync('psql', ['--version']).status === 0;

describe.skipIf(!hasPsql)('psql', () => {
  it('PGAPPNAME and \\set-free SET both come out under the prefix', async () => {
    const token = await tp.token({ sub: 'alice', agent: 'bot' });
    const { stdout } = await promisify(execFile)(
      'psql',
      [
        '-X',
        '-A',
        '-t',
        '-c',
        'SHOW application_name',
        '-c',
        `SET application_name = 'psql-set'`,
        '-c',
        'SHOW application_name',
        `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=alice sslmode=disable`,
      ],
      { env: { ...process.env, PGPASSWORD: token, PGAPPNAME: 'psql-app' }, timeout: 10_000 },
    );
    expect(stdout.trim().split('\n')).toEqual([`${PREFIX} psql-app`, 'SET', `${PREFIX} psql-set`]);
  });
});

const JDBC_JAR = '/usr/share/java/postgresql.jar';
const hasJdbc = existsSync(JDBC_JAR) && spawnSync('java', ['-version']).status === 0;

describe.skipIf(!hasJdbc)('pgJDBC', () => {
  it('connects with default settings (it sends SET application_name after login) and shows its name under the prefix', {
    timeout: 60_000,
  }, async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-jdbc-'));
    try {
      const src = path.join(dir, 'AppName.java');
      writeFileSync(
        src,
        `import java.sql.*;
public class AppName {
  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(a[0], a[1], a[2]); Statement s = c.createStatement()) {
      try (ResultSet r = s.executeQuery("SHOW application_name")) { r.next(); System.out.println(r.getString(1)); }
      c.setClientInfo("ApplicationName", "jdbc-set");
      try (ResultSet r = s.executeQuery("SELECT current_setting('application_name'), pg_backend_pid()")) { r.next(); System.out.println(r.getString(1)); System.out.println(r.getInt(2)); }
    }
  }
}
`,
      );
      const token = await tp.token({ sub: 'alice', agent: 'bot' });
      const url = `jdbc:postgresql://127.0.0.1:${tp.proxy.port}/app?sslmode=disable`;
      const { stdout } = await promisify(execFile)('java', ['-cp', JDBC_JAR, src, url, 'alice', token], {
        timeout: 50_000,
      });
      const [first, second, pid] = stdout.trim().split('\n');
      // pgJDBC's own default name.
      expect(first).toBe(`${PREFIX} PostgreSQL JDBC Driver`);
      expect(second).toBe(`${PREFIX} jdbc-set`);
      expect(Number(pid)).toBeGreaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
