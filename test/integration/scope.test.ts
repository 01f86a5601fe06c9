// Scope discovery through the real proxy: pgwarden.scope, pgwarden.session and SHOW pgwarden.<name> with no catalog access, over both protocols, pg, postgres.js and psql; refusals carry their reason.
import { execFile, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/until.ts';
import { canaryCount, connectPg, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

// Names that try to break out of a string literal or an identifier in the rewritten text.
const WEIRD_TABLE = `w'); DROP TABLE public.canary; --`;
const WEIRD_COLUMN = `c'::text, true, true); DELETE FROM public.canary; --`;

const POLICY = `roles:
  agent:
    readOnly: true
    relations: [public.orders, public.customers, scope_t.*, public.missing_table]
    deniedColumns: { public.customers: [ssn] }
    maxRows: 1000
    statementTimeout: 4s
  nothing:
    readOnly: true
    relations: [public.missing_table]
  writer:
    readOnly: false
    relations: [public.orders]
    write: { statements: [insert], relations: [public.canary] }
`;

let tp: TestProxy;
let su: pg.Client;
beforeAll(async () => {
  su = await superClient();
  // Made before the proxy starts, so its catalog snapshot holds them.
  await su.query('DROP SCHEMA IF EXISTS scope_t CASCADE; DROP SCHEMA IF EXISTS pgwarden CASCADE');
  await su.query('CREATE SCHEMA scope_t');
  await su.query(
    `CREATE TABLE scope_t."${WEIRD_TABLE.replaceAll('"', '""')}" ("${WEIRD_COLUMN.replaceAll('"', '""')}" int, plain varchar(12))`,
  );
  // A real schema named pgwarden with a table named scope: the virtual relation is what the agent gets.
  await su.query(
    'CREATE SCHEMA pgwarden; CREATE TABLE pgwarden.scope (table_schema text, table_name text, column_name text, data_type text, readable boolean, writable boolean)',
  );
  await su.query(`INSERT INTO pgwarden.scope VALUES ('public', 'secrets', 'value', 'text', true, true)`);
  await su.query('GRANT USAGE ON SCHEMA pgwarden TO pgwarden; GRANT SELECT ON pgwarden.scope TO pgwarden');
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  await tp?.close();
  await su?.query('DROP SCHEMA IF EXISTS scope_t CASCADE; DROP SCHEMA IF EXISTS pgwarden CASCADE');
  await su?.end();
});

type ScopeRow = {
  table_schema: string;
  table_name: string;
  column_name: string;
  data_type: string;
  readable: boolean;
  writable: boolean;
};

describe('pgwarden.scope', () => {
  it('lists every existing relation and column the role may use, with types, and nothing else, to a role with no catalog access', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'agent', sub: 'scope-1' }));
    try {
      const r = await c.query<ScopeRow>('SELECT * FROM pgwarden.scope ORDER BY table_schema, table_name, column_name');
      // Typed columns as the server sent them: text and boolean.
      expect(r.fields.map((f) => [f.name, f.dataTypeID])).toEqual([
        ['table_schema', 25],
        ['table_name', 25],
        ['column_name', 25],
        ['data_type', 25],
        ['readable', 16],
        ['writable', 16],
      ]);
      const names = r.rows.map((x) => `${x.table_schema}.${x.table_name}.${x.column_name}:${x.data_type}`);
      expect(names).toContain('public.orders.total:numeric(10,2)');
      expect(names).toContain('public.customers.email:text');
      expect(names).toContain(`scope_t.${WEIRD_TABLE}.${WEIRD_COLUMN}:integer`);
      expect(names).toContain(`scope_t.${WEIRD_TABLE}.plain:character varying(12)`);
      // Denied columns, relations outside the role and the real pgwarden.scope's rows never appear; a missing relation is not listed.
      const ordinary = names.filter((n) => !n.startsWith('scope_t.'));
      expect(
        ordinary.some(
          (n) => n.includes('ssn') || n.includes('secrets') || n.includes('canary') || n.includes('missing_table'),
        ),
      ).toBe(false);
      expect(names.filter((n) => n.startsWith('scope_t.'))).toHaveLength(2);
      expect(r.rows.every((x) => x.readable && !x.writable)).toBe(true);
      expect(await canaryCount()).toBe(2);
      // The catalog stays closed to this role; the refusal says where to look instead.
      const err = await pgError(() => c.query('SELECT relname FROM pg_class'));
      expect(err.code).toBe('42501');
      expect(err.detail?.split('\n')[0]).toBe('reason=policy_denied');
      expect(err.hint).toMatch(/pgwarden\.scope/);
    } finally {
      await c.end();
    }
  });

  it('runs under WHERE, ORDER BY, joins with real relations and the extended protocol with parameters', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'agent', sub: 'scope-2' }));
    try {
      const p = await c.query<{ column_name: string }>({
        text: 'SELECT column_name FROM pgwarden.scope WHERE table_name = $1 ORDER BY 1',
        values: ['customers'],
      });
      expect(p.rows.map((x) => x.column_name)).toEqual(['created_at', 'email', 'id', 'name']);
      const j = await c.query(
        "SELECT count(*)::int AS n FROM orders o JOIN pgwarden.scope s ON s.table_name = 'orders' AND s.column_name = 'id' WHERE o.id <= 3",
      );
      expect(j.rows[0].n).toBe(3);
      // Aliased, quoted and commented spellings are the same relation.
      const q = await c.query(
        'SELECT count(*)::int AS n FROM "pgwarden" /* here */ . "scope" AS s (a, b) WHERE b = \'orders\'',
      );
      expect(q.rows[0].n).toBe(5);
      // A join with a relation outside the role is still refused.
      const err = await pgError(() => c.query('SELECT * FROM pgwarden.scope JOIN public.secrets ON true'));
      expect(err.code).toBe('42501');
      expect(err.detail?.split('\n')[0]).toBe('reason=scope_missing');
      // Forms that cannot be rewritten exactly are refused, never passed on.
      expect((await pgError(() => c.query('SELECT * FROM ONLY pgwarden.scope'))).code).toBe('0A000');
    } finally {
      await c.end();
    }
  });

  it('is empty with the right columns and types when nothing in the role exists', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'nothing', sub: 'scope-3' }));
    try {
      const r = await c.query('SELECT * FROM pgwarden.scope');
      expect(r.rows).toEqual([]);
      expect(r.fields.map((f) => [f.name, f.dataTypeID])).toEqual([
        ['table_schema', 25],
        ['table_name', 25],
        ['column_name', 25],
        ['data_type', 25],
        ['readable', 16],
        ['writable', 16],
      ]);
    } finally {
      await c.end();
    }
  });

  it('marks the relations a writer may write', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'writer', sub: 'scope-4' }));
    try {
      const r = await c.query<ScopeRow>(
        'SELECT DISTINCT table_name, readable, writable FROM pgwarden.scope ORDER BY 1',
      );
      expect(r.rows).toEqual([
        { table_name: 'canary', readable: false, writable: true },
        { table_name: 'orders', readable: true, writable: false },
      ]);
    } finally {
      await c.end();
    }
  });

  it('follows a hot reload in a session already open', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'agent', sub: 'scope-5' }));
    try {
      const before = await c.query(
        "SELECT DISTINCT table_name FROM pgwarden.scope WHERE table_schema = 'public' ORDER BY 1",
      );
      expect(before.rows.map((x) => x.table_name)).toEqual(['customers', 'orders']);
      const narrowed = POLICY.replace(
        'relations: [public.orders, public.customers, scope_t.*, public.missing_table]',
        'relations: [public.orders]',
      )
        .replace('    deniedColumns: { public.customers: [ssn] }\n', '')
        .replace('maxRows: 1000', 'maxRows: 7');
      expect(narrowed).not.toBe(POLICY);
      writeFileSync(tp.policyFile, narrowed);
      await tp.proxy.reload();
      const after = await c.query('SELECT DISTINCT table_name FROM pgwarden.scope ORDER BY 1');
      expect(after.rows.map((x) => x.table_name)).toEqual(['orders']);
      expect((await c.query('SHOW pgwarden.max_rows')).rows).toEqual([{ 'pgwarden.max_rows': '7' }]);
    } finally {
      writeFileSync(tp.policyFile, POLICY);
      await tp.proxy.reload();
      await c.end();
    }
  });
});

describe('pgwarden.session and SHOW pgwarden.<name>', () => {
  it('gives the identity, limits and token expiry of the session', async () => {
    const token = await tp.token({ role: 'agent', sub: 'scope-6', agent: 'bot-6', tenant: 'acme' });
    const exp = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).exp as number;
    const c = await connectPg(tp, token);
    try {
      const r = await c.query('SELECT * FROM pgwarden.session');
      expect(r.rows).toHaveLength(1);
      const row = r.rows[0];
      expect(row).toMatchObject({
        role: 'agent',
        sub: 'scope-6',
        agent: 'bot-6',
        tenant: 'acme',
        read_only: true,
        max_rows: '1000',
        on_row_cap: 'truncate',
        statement_timeout: '4s',
        catalog: 'none',
      });
      expect((row.expires_at as Date).getTime()).toBe(exp * 1000);
      expect(typeof row.session_id).toBe('string');
      // Prepared, with a parameter.
      const p = await c.query({ text: 'SELECT sub FROM pgwarden.session WHERE role = $1', values: ['agent'] });
      expect(p.rows).toEqual([{ sub: 'scope-6' }]);
      for (const [name, value] of [
        ['sub', 'scope-6'],
        ['agent', 'bot-6'],
        ['tenant', 'acme'],
        ['role', 'agent'],
        ['max_rows', '1000'],
        ['statement_timeout', '4s'],
        ['read_only', 'true'],
      ]) {
        expect((await c.query(`SHOW pgwarden.${name}`)).rows, name).toEqual([{ [`pgwarden.${name}`]: value }]);
      }
      // The stamps cannot be changed.
      expect((await pgError(() => c.query("SET pgwarden.sub = 'mallory'"))).code).toBe('42501');
    } finally {
      await c.end();
    }
  });

  it('works through postgres.js (extended protocol, its own type parsing)', async () => {
    const sql = postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      database: 'app',
      username: 'alice',
      password: await tp.token({ role: 'agent', sub: 'scope-7' }),
      max: 1,
      fetch_types: false,
      onnotice: () => {},
    });
    try {
      const rows =
        await sql`SELECT table_name, column_name, data_type FROM pgwarden.scope WHERE table_name = ${'orders'} ORDER BY column_name`;
      expect(rows.map((r) => r.column_name)).toEqual(['created_at', 'customer_id', 'id', 'status', 'total']);
      const [s] = await sql`SELECT role, max_rows, expires_at FROM pgwarden.session`;
      expect(s?.role).toBe('agent');
      expect(s?.expires_at).toBeInstanceOf(Date);
    } finally {
      await sql.end();
    }
  });
});

const hasPsql = spawnSync('psql', ['--version']).status === 0;
describe.skipIf(!hasPsql)('psql', () => {
  it('shows the scope and SHOW values, and a refusal with its reason on the DETAIL line', async () => {
    const token = await tp.token({ role: 'agent', sub: 'scope-8' });
    // Asynchronously: the proxy runs in this process. The last command fails, so psql exits non-zero; its output counts.
    const run = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
      execFile(
        'psql',
        [
          '-X',
          '-A',
          '-t',
          '-c',
          "SELECT table_name, column_name FROM pgwarden.scope WHERE table_schema = 'public' ORDER BY 1, 2 LIMIT 2",
          '-c',
          'SHOW pgwarden.role',
          '-c',
          'SELECT * FROM public.canary',
          `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=alice sslmode=disable`,
        ],
        { env: { ...process.env, PGPASSWORD: token }, timeout: 10_000, encoding: 'utf8' },
        (_err, stdout, stderr) => resolve({ stdout, stderr }),
      );
    });
    expect(run.stdout.trim().split('\n')).toEqual(['customers|created_at', 'customers|email', 'agent']);
    expect(run.stderr).toMatch(/ERROR: {2}permission denied by pgwarden[^\n]*\nDETAIL: {2}reason=scope_missing\n/);
  });
});

describe('refusals name their reason and keep the operator hint in the audit trail', () => {
  it('a relation outside the role: reason=scope_missing first in DETAIL, the agent hint on the wire, operatorHint only in the audit event', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'agent', sub: 'scope-9' }));
    try {
      // public.canary is in the catalog snapshot (another role has it), outside this role.
      const err = await pgError(() => c.query('SELECT note FROM public.canary'));
      expect(err.code).toBe('42501');
      const [first, ...rest] = (err.detail ?? '').split('\n');
      expect(first).toBe('reason=scope_missing');
      expect(rest.join('\n')).toMatch(/public\.canary is not in roles\.agent\.relations/);
      expect(err.hint).toMatch(/request a token whose role includes public\.canary/);
      expect(`${err.message} ${err.detail} ${err.hint}`).not.toMatch(/add public\.canary to/);
      const denial = (): Record<string, unknown> | undefined =>
        tp
          .auditLines()
          .map((l) => JSON.parse(l) as Record<string, unknown>)
          .find((e) => e.event === 'statement' && e.sub === 'scope-9' && e.decision === 'deny');
      // The trail is written in batches.
      await until(() => denial() !== undefined);
      const event = denial();
      expect(event).toMatchObject({
        reason: 'relation_not_allowed',
        refusal: 'scope_missing',
        operatorHint: 'add public.canary to roles.agent.relations',
      });
      // A write in a read-only role is a policy refusal, not a scope one.
      expect((await pgError(() => c.query('DELETE FROM orders'))).detail?.split('\n')[0]).toBe('reason=policy_denied');
      expect(await canaryCount()).toBe(2);
    } finally {
      await c.end();
    }
  });
});
