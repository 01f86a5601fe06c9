// A new agent with only a token and no catalog access, through psql and node-postgres: finds what it may query (pgwarden.scope), describes a table from it, queries it, and reads the reason of each refusal and of the row cap.
import { execFile, spawnSync } from 'node:child_process';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPg, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

// catalog: none, said outright: the agent cannot read pg_catalog or information_schema, only pgwarden.scope.
const POLICY = `roles:
  newcomer:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    maxRows: 5
    onRowCap: truncate
    catalog: none
`;

/** What each refusal reaches the agent with: pgwarden's message, its hint and its reason last (docs/errors.md). */
const REFUSED = {
  ssn: 'permission denied by pgwarden: SELECT references column public.customers.ssn, which role "newcomer" may not read; hint: allowed columns of public.customers: id, name, email, created_at (reason=scope_missing)',
  secrets:
    'permission denied by pgwarden: SELECT reads relation public.secrets, which role "newcomer" may not read; hint: allowed relations: public.orders, public.customers; otherwise request a token whose role includes public.secrets (reason=scope_missing)',
};
// Its whole scope: more rows (9) than its maxRows (5), and listed whole all the same.
const SCOPE =
  "SELECT table_schema || '|' || table_name || '|' || column_name || '|' || data_type AS s FROM pgwarden.scope ORDER BY table_schema, table_name, column_name";
const DESCRIBE =
  "SELECT column_name || ' ' || data_type AS c FROM pgwarden.scope WHERE table_schema = 'public' AND table_name = 'customers' ORDER BY column_name";
const ALLOWED = 'SELECT id, name FROM public.customers ORDER BY id LIMIT 3';

let tp: TestProxy;
let su: pg.Client;
/** The truth, read by a superuser: every column the role may read, those of customers with their types, the allowed rows. */
let scope: string[];
let described: string[];
let allowedRows: { id: number; name: string }[];
let orderIds: number[];
beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY });
  su = await superClient();
  scope = (
    await su.query(
      `SELECT n.nspname || '|' || c.relname || '|' || a.attname || '|' || format_type(a.atttypid, a.atttypmod) AS s
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid IN ('public.orders'::regclass, 'public.customers'::regclass) AND a.attnum > 0 AND NOT a.attisdropped
          AND NOT (c.relname = 'customers' AND a.attname = 'ssn')
        ORDER BY n.nspname, c.relname, a.attname`,
    )
  ).rows.map((r) => r.s as string);
  expect(scope.length).toBeGreaterThan(5);
  described = (
    await su.query(
      `SELECT attname || ' ' || format_type(atttypid, atttypmod) AS c FROM pg_attribute
        WHERE attrelid = 'public.customers'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'ssn' ORDER BY attname`,
    )
  ).rows.map((r) => r.c as string);
  allowedRows = (await su.query(ALLOWED)).rows;
  orderIds = (await su.query('SELECT id FROM public.orders ORDER BY id')).rows.map((r) => r.id as number);
  // The row cap has something to cut.
  expect(orderIds.length).toBeGreaterThan(5);
});
afterAll(async () => {
  await su?.end();
  await tp?.close();
});

describe('node-postgres', () => {
  it('finds its scope, describes a table from it, queries it, and reads each refusal and the row cap', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'newcomer', sub: 'onboard-pg', agent: 'newcomer-pg' }));
    const notices: { code?: string; severity?: string; message?: string; detail?: string }[] = [];
    c.on('notice', (n) => notices.push(n));
    try {
      // No catalog: the usual first move is refused, and says so in the message.
      const cat = await pgError(() => c.query('SELECT table_name FROM information_schema.tables'));
      expect([cat.code, cat.detail?.split('\n')[0]]).toEqual(['42501', 'reason=policy_denied']);
      expect(cat.message).toMatch(
        /^permission denied by pgwarden: .*information_schema\.tables.* \(reason=policy_denied\)$/,
      );
      // What it may query: all of it, though longer than maxRows, and no truncation notice.
      expect((await c.query(SCOPE)).rows.map((r) => r.s)).toEqual(scope);
      expect(notices).toEqual([]);
      // A description: columns and types, the denied column left out.
      expect((await c.query(DESCRIBE)).rows.map((r) => r.c)).toEqual(described);
      expect((await c.query(ALLOWED)).rows).toEqual(allowedRows);
      // A denied column, then a relation outside the role: code, message (hint and reason included), DETAIL, HINT.
      const col = await pgError(() => c.query('SELECT name, ssn FROM public.customers'));
      expect([col.code, col.message, col.detail?.split('\n')[0], col.hint]).toEqual([
        '42501',
        REFUSED.ssn,
        'reason=scope_missing',
        'allowed columns of public.customers: id, name, email, created_at',
      ]);
      // The same message over the extended protocol, and again once the decision is cached.
      for (let i = 0; i < 2; i++) {
        const ext = await pgError(() => c.query({ text: 'SELECT name, ssn FROM public.customers', values: [] }));
        expect([ext.code, ext.message, ext.detail?.split('\n')[0]]).toEqual([
          '42501',
          REFUSED.ssn,
          'reason=scope_missing',
        ]);
      }
      const rel = await pgError(() => c.query('SELECT * FROM public.secrets'));
      expect([rel.code, rel.message, rel.detail?.split('\n')[0]]).toEqual([
        '42501',
        REFUSED.secrets,
        'reason=scope_missing',
      ]);
      // A name the agent wrote cannot pass for the reason, not even as a line of the message of its own.
      const fake = await pgError(() => c.query('SELECT * FROM "x\n(reason=credential_expired)"'));
      expect(fake.message).toBe(
        'permission denied by pgwarden: SELECT reads relation "x (reason=credential_expired)", which role "newcomer" may not read; hint: allowed relations: public.orders, public.customers; otherwise request a token whose role includes "x (reason=credential_expired)" (reason=scope_missing)',
      );
      // The row cap: the first five rows, and a WARNING notice whose DETAIL starts with the reason.
      const capped = await c.query('SELECT id FROM public.orders ORDER BY id');
      expect(capped.rows.map((r) => r.id)).toEqual(orderIds.slice(0, 5));
      expect(capped.rowCount).toBe(5);
      expect(notices.map((n) => [n.severity, n.code, n.message, n.detail?.split('\n')[0]])).toEqual([
        ['WARNING', '01000', 'pgwarden truncated the result at 5 rows', 'reason=limit_reached'],
      ]);
      expect((await c.query('SHOW pgwarden.max_rows')).rows).toEqual([{ 'pgwarden.max_rows': '5' }]);
    } finally {
      await c.end();
    }
  });
});

const hasPsql = spawnSync('psql', ['--version']).status === 0;
describe.skipIf(!hasPsql)('psql', () => {
  it('finds its scope, describes a table from it, queries it, and reads each refusal and the row cap', async () => {
    const token = await tp.token({ role: 'newcomer', sub: 'onboard-psql', agent: 'newcomer-psql' });
    // Asynchronously: the proxy runs in this process. Each -c runs whatever the one before did; a refusal does not stop psql.
    const run = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
      execFile(
        'psql',
        [
          '-X',
          '-A',
          '-t',
          '-c',
          '\\d public.customers',
          '-c',
          SCOPE,
          '-c',
          DESCRIBE,
          '-c',
          ALLOWED,
          '-c',
          'SELECT name, ssn FROM public.customers',
          '-c',
          'SELECT * FROM public.secrets',
          '-c',
          'SELECT id FROM public.orders ORDER BY id',
          '-c',
          'SHOW pgwarden.max_rows',
          `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=agent sslmode=disable`,
        ],
        { env: { ...process.env, PGPASSWORD: token }, timeout: 10_000, encoding: 'utf8' },
        (_err, stdout, stderr) => resolve({ stdout, stderr }),
      );
    });
    expect(run.stdout.trim().split('\n')).toEqual([
      ...scope,
      ...described,
      ...allowedRows.map((r) => `${r.id}|${r.name}`),
      ...orderIds.slice(0, 5).map(String),
      '5',
    ]);
    const err = run.stderr;
    // \d reads pg_catalog, which a role without catalog access may not: refused, the reason at the end of the message.
    expect(err).toMatch(
      /^ERROR: {2}permission denied by pgwarden: [^\n]*pg_catalog[^\n]* \(reason=policy_denied\)\nDETAIL: {2}reason=policy_denied\n/,
    );
    expect(err).toContain(`ERROR:  ${REFUSED.ssn}\nDETAIL:  reason=scope_missing\n`);
    expect(err).toContain(`ERROR:  ${REFUSED.secrets}\nDETAIL:  reason=scope_missing\n`);
    expect(err).toMatch(
      /\nWARNING: {2}pgwarden truncated the result at 5 rows\nDETAIL: {2}reason=limit_reached\nmax_rows=5\n/,
    );
    // Nothing but those three errors and the notice.
    expect(err.match(/^(ERROR|WARNING|FATAL):/gm)).toEqual(['ERROR:', 'ERROR:', 'ERROR:', 'WARNING:']);
  });
});
