// MCP PostgreSQL servers from npm, unchanged, pointed at pgwarden with a token as the password, spoken to over stdio with the MCP SDK's client.
import { createRequire } from 'node:module';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLE_DATABASE } from '../../proxy/embedded/sample.ts';
import { until } from '../helpers/until.ts';
import { canaryCount, connectPg, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

// catalog: introspection shows both servers' list and describe queries (information_schema, and pg_constraint and pg_index
// for the second) every name; catalog: scoped (its own describe block) the role's own; secrets and canary stay outside
// the role, ssn is denied.
const POLICY = `roles:
  agent:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    maxRows: 100
    statementTimeout: 5s
    catalog: introspection
  plain:
    readOnly: true
    relations: [public.orders]
  newcomer:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    maxRows: 5
    onRowCap: error
    catalog: none
  scoped:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    catalog: scoped
`;

const REQUEST = { timeout: 5_000 };
const ALLOWED_SQL = 'SELECT id, name, email FROM public.customers ORDER BY id LIMIT 3';

const require = createRequire(import.meta.url);
/** A package's own bin entry, run with this Node as an MCP host runs `npx <package>`. */
function binOf(pkg: string, bin: string): string {
  const manifest = require.resolve(`${pkg}/package.json`);
  const { bin: bins } = require(manifest) as { bin: Record<string, string> };
  return path.join(path.dirname(manifest), bins[bin]!);
}

interface Spawned {
  client: Client;
  transport: StdioClientTransport;
  pid: number | null;
  stderr: string[];
}
const spawned: Spawned[] = [];

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function spawnServer(args: string[]): Promise<Spawned> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args,
    // The SDK adds only HOME, PATH, USER and the like: no PG* variable of the test run reaches the server, the URL is all it has.
    // NODE_ENV=production keeps the second server's pg-monitor from attaching.
    env: { NODE_ENV: 'production' },
    stderr: 'pipe',
  });
  const s: Spawned = {
    client: new Client({ name: 'pgwarden-test', version: '0.0.0' }),
    transport,
    pid: null,
    stderr: [],
  };
  transport.stderr?.on('data', (b: Buffer) => s.stderr.push(String(b)));
  spawned.push(s);
  // start() spawns before initialize is sent: the pid is known even when the handshake fails.
  const connecting = s.client.connect(transport, REQUEST);
  s.pid = transport.pid;
  await connecting;
  s.pid = transport.pid;
  return s;
}

/** Ends a server as a host does (the transport closes stdin, then SIGTERM, then SIGKILL) and checks by pid that it is gone. */
async function stop(s: Spawned): Promise<void> {
  const pid = s.pid ?? s.transport.pid;
  await s.client.close().catch(() => {});
  await s.transport.close().catch(() => {});
  if (pid !== null && alive(pid)) process.kill(pid, 'SIGKILL');
  if (pid !== null) await until(() => !alive(pid), 3_000);
}

function text(r: unknown): string {
  return ((r as { content?: { type: string; text?: string }[] }).content ?? []).map((c) => c.text ?? '').join('\n');
}

/** The error an MCP tool call ends in, whether the server answers with a JSON-RPC error or an isError result. */
async function toolError(p: Promise<unknown>): Promise<string> {
  try {
    const r = (await p) as { isError?: boolean };
    if (r.isError === true) return text(r);
  } catch (err) {
    return String(err);
  }
  throw new Error('expected the tool call to fail');
}

let tp: TestProxy;
let su: pg.Client;
let url: string;
/** What the same token gets from pgwarden.scope through node-postgres: the MCP servers must show the same. */
let scopeRows: Record<string, unknown>[];
let allowedRows: Record<string, unknown>[];
beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY });
  su = await superClient();
  const token = await tp.token({ role: 'agent', sub: 'mcp-user', agent: 'mcp-agent' });
  // sslmode=disable: the test proxy listens without TLS on loopback, where pgwarden accepts a cleartext token.
  url = `postgresql://mcp-user:${encodeURIComponent(token)}@127.0.0.1:${tp.proxy.port}/${SAMPLE_DATABASE}?sslmode=disable`;
  const c = await connectPg(tp, token);
  try {
    scopeRows = (await c.query('SELECT table_schema, table_name, column_name, data_type FROM pgwarden.scope')).rows;
  } finally {
    await c.end();
  }
  allowedRows = (await su.query(ALLOWED_SQL)).rows;
});

afterAll(async () => {
  const pids = spawned.map((s) => s.pid ?? s.transport.pid);
  for (const s of spawned) await stop(s);
  await su?.end();
  await tp?.close();
  for (const pid of pids) if (pid !== null) expect(alive(pid), `MCP server pid ${pid} still running`).toBe(false);
});

/** The statement event pgwarden's audit trail holds for a refusal of `sql` from this test's agent. */
async function auditedRefusal(sql: string): Promise<Record<string, unknown>> {
  const find = () =>
    tp
      .auditLines()
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find(
        (e) =>
          e.event === 'statement' && e.agent === 'mcp-agent' && e.decision === 'deny' && String(e.sql).includes(sql),
      );
  await until(() => find() !== undefined);
  return find()!;
}

/** The messages pgwarden refuses this test's statements with: each ends with its hint and reason (docs/errors.md). */
const REFUSED = {
  ssn: 'permission denied by pgwarden: SELECT references column public.customers.ssn, which role "agent" may not read; hint: allowed columns of public.customers: id, name, email, created_at (reason=scope_missing)',
  secrets:
    'permission denied by pgwarden: SELECT reads relation public.secrets, which role "agent" may not read; hint: allowed relations: public.orders, public.customers; otherwise request a token whose role includes public.secrets (reason=scope_missing)',
  deleteCanary:
    'permission denied by pgwarden: DELETE writes to public.canary and role "agent" is read-only; hint: read-only roles may run SELECT, VALUES, TABLE, SHOW, EXPLAIN, transaction control, cursors and COPY … TO STDOUT (reason=policy_denied)',
};

/**
 * What a refusal looks like to the MCP client: the server's own words, then pgwarden's whole message, which ends with
 * the hint and the reason. Both servers drop DETAIL and HINT, so the message is the only way these reach the agent.
 */
function expectReadableRefusal(err: string, message: string): void {
  expect(err.endsWith(message), err).toBe(true);
  expect(/\(reason=([a-z_]+)\)$/.exec(err)?.[1]).toBe(/\(reason=([a-z_]+)\)$/.exec(message)?.[1]);
}

describe('@modelcontextprotocol/server-postgres (the reference server)', () => {
  let s: Spawned;
  beforeAll(async () => {
    s = await spawnServer([binOf('@modelcontextprotocol/server-postgres', 'mcp-server-postgres'), url]);
  });

  it('lists its query tool and one schema resource per table of information_schema, every table in public', async () => {
    expect((await s.client.listTools(undefined, REQUEST)).tools.map((t) => t.name)).toEqual(['query']);
    const { resources } = await s.client.listResources(undefined, REQUEST);
    // Without a catalog filtered to the role, the agent sees names it may never read (secrets, canary).
    const names = resources.map((r) => r.name).sort();
    const expected = (
      await su.query(
        `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name`,
      )
    ).rows.map((r) => `"${r.table_name}" database schema`);
    expect(names).toEqual(expected.sort());
    expect(names).toEqual(
      expect.arrayContaining(['"customers" database schema', '"orders" database schema', '"secrets" database schema']),
    );
    // The token never shows in what the server hands the agent.
    for (const r of resources) expect(r.uri).not.toContain(url.split(':')[2]!.split('@')[0]!);
  });

  it('describes a table (information_schema.columns), denied columns included', async () => {
    const { resources } = await s.client.listResources(undefined, REQUEST);
    const customers = resources.find((r) => r.name === '"customers" database schema')!;
    const read = await s.client.readResource({ uri: customers.uri }, REQUEST);
    const columns = JSON.parse((read.contents[0] as { text: string }).text) as {
      column_name: string;
      data_type: string;
    }[];
    expect(columns.map((c) => c.column_name).sort()).toEqual(['created_at', 'email', 'id', 'name', 'ssn']);
  });

  it('runs an allowed query in its read-only transaction and returns the rows', async () => {
    const r = await s.client.callTool({ name: 'query', arguments: { sql: ALLOWED_SQL } }, undefined, REQUEST);
    expect(r.isError).toBe(false);
    expect(JSON.parse(text(r))).toEqual(allowedRows);
  });

  it('a denied column and a relation outside the role come back as readable MCP errors; the audit trail has the reason', async () => {
    const col = await toolError(
      s.client.callTool(
        { name: 'query', arguments: { sql: 'SELECT name, ssn FROM public.customers' } },
        undefined,
        REQUEST,
      ),
    );
    expectReadableRefusal(col, REFUSED.ssn);
    expect(col).toMatch(/MCP error -32603/);
    expect((await auditedRefusal('SELECT name, ssn FROM public.customers')).refusal).toBe('scope_missing');
    const rel = await toolError(
      s.client.callTool({ name: 'query', arguments: { sql: 'SELECT value FROM public.secrets' } }, undefined, REQUEST),
    );
    expectReadableRefusal(rel, REFUSED.secrets);
    expect(rel).not.toMatch(/launch codes/);
    // The server's own BEGIN READ ONLY is not the guard here: pgwarden refuses the write before it reaches the database.
    const del = await toolError(
      s.client.callTool({ name: 'query', arguments: { sql: 'DELETE FROM public.canary' } }, undefined, REQUEST),
    );
    expectReadableRefusal(del, REFUSED.deleteCanary);
    expect(await canaryCount()).toBe(2);
    // The session is still usable after the refusals (the server rolls back and reuses its pooled connection).
    const again = await s.client.callTool({ name: 'query', arguments: { sql: ALLOWED_SQL } }, undefined, REQUEST);
    expect(JSON.parse(text(again))).toEqual(allowedRows);
  });

  it('a result cut at maxRows arrives cut, with nothing saying so: the server drops the WARNING notice', async () => {
    const total = (await su.query('SELECT count(*)::int AS n FROM public.orders')).rows[0].n as number;
    expect(total).toBeGreaterThan(100);
    const r = await s.client.callTool(
      { name: 'query', arguments: { sql: 'SELECT id FROM public.orders' } },
      undefined,
      REQUEST,
    );
    expect(JSON.parse(text(r))).toHaveLength(100);
    expect(text(r)).not.toMatch(/WARNING|truncat|max_rows/i);
  });

  it('pgwarden.scope and pgwarden.session through the query tool tell the agent what it may touch', async () => {
    const scope = await s.client.callTool(
      {
        name: 'query',
        arguments: { sql: 'SELECT table_schema, table_name, column_name, data_type FROM pgwarden.scope' },
      },
      undefined,
      REQUEST,
    );
    const rows = JSON.parse(text(scope)) as Record<string, unknown>[];
    expect(rows).toEqual(scopeRows);
    expect(rows.map((r) => `${r.table_name}.${r.column_name}`)).toContain('customers.email');
    expect(rows.map((r) => r.column_name)).not.toContain('ssn');
    expect(rows.map((r) => r.table_name)).not.toContain('secrets');
    const session = await s.client.callTool(
      { name: 'query', arguments: { sql: 'SELECT role, sub, agent, read_only, max_rows FROM pgwarden.session' } },
      undefined,
      REQUEST,
    );
    expect(JSON.parse(text(session))).toEqual([
      { role: 'agent', sub: 'mcp-user', agent: 'mcp-agent', read_only: true, max_rows: expect.anything() },
    ]);
  });
});

describe('@henkey/postgres-mcp-server', () => {
  let s: Spawned;
  beforeAll(async () => {
    s = await spawnServer([binOf('@henkey/postgres-mcp-server', 'postgres-mcp'), '--connection-string', url]);
  });

  /** The rows of a successful pg_execute_query select: the server prefixes its JSON with a sentence. */
  async function select(query: string): Promise<Record<string, unknown>[]> {
    const r = await s.client.callTool(
      { name: 'pg_execute_query', arguments: { operation: 'select', query } },
      undefined,
      REQUEST,
    );
    const t = text(r);
    expect(r.isError, t).toBeFalsy();
    return JSON.parse(t.slice(t.indexOf('Results:\n') + 'Results:\n'.length)) as Record<string, unknown>[];
  }

  it('lists its tools and the tables of information_schema, every base table in public', async () => {
    const tools = (await s.client.listTools(undefined, REQUEST)).tools.map((t) => t.name);
    expect(tools).toEqual(expect.arrayContaining(['pg_manage_schema', 'pg_execute_query', 'pg_execute_sql']));
    const r = await s.client.callTool(
      { name: 'pg_manage_schema', arguments: { operation: 'get_info' } },
      undefined,
      REQUEST,
    );
    expect(r.isError, text(r)).toBeFalsy();
    const listed = JSON.parse(text(r).slice(text(r).indexOf('['))) as string[];
    const expected = (
      await su.query(
        `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name`,
      )
    ).rows.map((x) => x.table_name as string);
    expect(listed).toEqual(expected);
    expect(listed).toEqual(expect.arrayContaining(['customers', 'orders', 'secrets']));
  });

  it('describes a table: columns from information_schema, constraints from pg_constraint, indexes from pg_index', async () => {
    const r = await s.client.callTool(
      { name: 'pg_manage_schema', arguments: { operation: 'get_info', tableName: 'orders' } },
      undefined,
      REQUEST,
    );
    expect(r.isError, text(r)).toBeFalsy();
    const info = JSON.parse(text(r).slice(text(r).indexOf('{'))) as {
      columns: { name: string }[];
      constraints: { type: string; definition: string }[];
      indexes: { name: string }[];
    };
    expect(info.columns.map((c) => c.name).sort()).toEqual(['created_at', 'customer_id', 'id', 'status', 'total']);
    expect(info.constraints.map((c) => c.type).sort()).toEqual(['FOREIGN KEY', 'PRIMARY KEY']);
    expect(info.indexes.map((i) => i.name)).toContain('orders_pkey');
    const customers = await s.client.callTool(
      { name: 'pg_manage_schema', arguments: { operation: 'get_info', tableName: 'customers' } },
      undefined,
      REQUEST,
    );
    expect(text(customers)).toMatch(/"name": "ssn"/);
  });

  it('runs an allowed query and returns the rows', async () => {
    expect(await select(ALLOWED_SQL)).toEqual(allowedRows);
  });

  it('a denied column, a relation outside the role and a write come back as readable tool errors; the audit trail has the reason', async () => {
    const col = await toolError(
      s.client.callTool(
        {
          name: 'pg_execute_query',
          arguments: { operation: 'select', query: 'SELECT name, ssn FROM public.customers' },
        },
        undefined,
        REQUEST,
      ),
    );
    expectReadableRefusal(col, REFUSED.ssn);
    expect((await auditedRefusal('SELECT name, ssn FROM public.customers')).refusal).toBe('scope_missing');
    // count wraps the agent's query in a subquery: still refused, still named.
    const count = await toolError(
      s.client.callTool(
        { name: 'pg_execute_query', arguments: { operation: 'count', query: 'SELECT * FROM public.secrets' } },
        undefined,
        REQUEST,
      ),
    );
    expectReadableRefusal(count, REFUSED.secrets);
    const del = await toolError(
      s.client.callTool(
        { name: 'pg_execute_sql', arguments: { sql: 'DELETE FROM public.canary' } },
        undefined,
        REQUEST,
      ),
    );
    expectReadableRefusal(del, REFUSED.deleteCanary);
    expect((await auditedRefusal('DELETE FROM public.canary')).refusal).toBe('policy_denied');
    const create = await toolError(
      s.client.callTool(
        {
          name: 'pg_manage_schema',
          arguments: { operation: 'create_table', tableName: 'mcp_made', columns: [{ name: 'x', type: 'int' }] },
        },
        undefined,
        REQUEST,
      ),
    );
    expect(create).toMatch(/pgwarden/);
    expect(await canaryCount()).toBe(2);
    expect((await su.query(`SELECT to_regclass('public.mcp_made') AS r`)).rows[0].r).toBeNull();
    expect(await select(ALLOWED_SQL)).toEqual(allowedRows);
  });

  it('pgwarden.scope through pg_execute_query tells the agent what it may touch', async () => {
    expect(await select('SELECT table_schema, table_name, column_name, data_type FROM pgwarden.scope')).toEqual(
      scopeRows,
    );
    const [session] = await select('SELECT role, agent FROM pgwarden.session');
    expect(session).toEqual({ role: 'agent', agent: 'mcp-agent' });
  });
});

describe('a role without catalog access', () => {
  it('the reference server cannot list tables (refused), and its query tool still answers pgwarden.scope', async () => {
    const token = await tp.token({ role: 'plain', sub: 'mcp-user', agent: 'mcp-plain' });
    const s = await spawnServer([
      binOf('@modelcontextprotocol/server-postgres', 'mcp-server-postgres'),
      url.replace(/:[^:@]+@/, `:${encodeURIComponent(token)}@`),
    ]);
    await expect(s.client.listResources(undefined, REQUEST)).rejects.toThrow(
      /permission denied by pgwarden: .*information_schema.*; hint: .* \(reason=policy_denied\)$/,
    );
    const denial = () =>
      tp
        .auditLines()
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((e) => e.agent === 'mcp-plain' && e.decision === 'deny');
    await until(() => denial() !== undefined);
    expect(denial()!.refusal).toBe('policy_denied');
    const scope = await s.client.callTool(
      { name: 'query', arguments: { sql: 'SELECT DISTINCT table_name FROM pgwarden.scope' } },
      undefined,
      REQUEST,
    );
    expect(JSON.parse(text(scope))).toEqual([{ table_name: 'orders' }]);
  });
});

/** How the agent runs a query through each server, and what it gets: the rows, or the error text the MCP client sees. */
const SERVERS = [
  {
    name: '@modelcontextprotocol/server-postgres',
    args: (u: string) => [binOf('@modelcontextprotocol/server-postgres', 'mcp-server-postgres'), u],
    async query(s: Spawned, sql: string): Promise<Record<string, unknown>[] | string> {
      try {
        const r = await s.client.callTool({ name: 'query', arguments: { sql } }, undefined, REQUEST);
        return r.isError === true ? text(r) : (JSON.parse(text(r)) as Record<string, unknown>[]);
      } catch (err) {
        return String(err);
      }
    },
    /** Its table list: one resource per row of information_schema.tables. */
    async listTables(s: Spawned): Promise<string> {
      return s.client.listResources(undefined, REQUEST).then(
        (r) => JSON.stringify(r.resources),
        (err: unknown) => String(err),
      );
    },
  },
  {
    name: '@henkey/postgres-mcp-server',
    args: (u: string) => [binOf('@henkey/postgres-mcp-server', 'postgres-mcp'), '--connection-string', u],
    async query(s: Spawned, sql: string): Promise<Record<string, unknown>[] | string> {
      const r = await s.client.callTool(
        { name: 'pg_execute_query', arguments: { operation: 'select', query: sql } },
        undefined,
        REQUEST,
      );
      const t = text(r);
      return r.isError === true
        ? t
        : (JSON.parse(t.slice(t.indexOf('Results:\n') + 'Results:\n'.length)) as Record<string, unknown>[]);
    },
    async listTables(s: Spawned): Promise<string> {
      const r = await s.client.callTool(
        { name: 'pg_manage_schema', arguments: { operation: 'get_info' } },
        undefined,
        REQUEST,
      );
      return text(r);
    },
  },
];

describe.each(SERVERS)('a new agent with only a token and no catalog access, through $name', (server) => {
  it('finds its scope, describes a table from it, queries it, and reads the reason of each refusal and of the row cap', async () => {
    const token = await tp.token({ role: 'newcomer', sub: 'mcp-user', agent: `mcp-newcomer-${server.name}` });
    const s = await spawnServer(server.args(url.replace(/:[^:@]+@/, `:${encodeURIComponent(token)}@`)));
    const ends = (got: unknown, message: string) => {
      expect(typeof got, JSON.stringify(got)).toBe('string');
      expect((got as string).endsWith(message), got as string).toBe(true);
    };
    // The server's own table list reads information_schema: refused, and the reason says it is the policy.
    expect(await server.listTables(s)).toMatch(
      /permission denied by pgwarden: [^\n]*information_schema\.tables[^\n]*; hint: [^\n]* \(reason=policy_denied\)/,
    );
    // What it may query, whole (9 rows; maxRows is 5): the same as node-postgres gets from the same role.
    const truth = await connectPg(tp, await tp.token({ role: 'newcomer', sub: 'mcp-truth' }));
    const listing = 'SELECT table_name, column_name, data_type FROM pgwarden.scope ORDER BY table_name, column_name';
    let expected: Record<string, unknown>[];
    try {
      expected = (await truth.query(listing)).rows;
    } finally {
      await truth.end();
    }
    expect(expected.length).toBeGreaterThan(5);
    expect(expected.map((r) => `${r.table_name}.${r.column_name}`)).not.toContain('customers.ssn');
    expect(await server.query(s, listing)).toEqual(expected);
    // A description of one table, from the listing.
    expect(
      await server.query(
        s,
        "SELECT column_name, data_type FROM pgwarden.scope WHERE table_name = 'customers' ORDER BY column_name",
      ),
    ).toEqual(expected.filter((r) => r.table_name === 'customers').map(({ table_name: _, ...rest }) => rest));
    expect(await server.query(s, ALLOWED_SQL)).toEqual(allowedRows);
    // Refusals: the whole message reaches the MCP client, the hint and the reason at its end.
    ends(
      await server.query(s, 'SELECT name, ssn FROM public.customers'),
      'permission denied by pgwarden: SELECT references column public.customers.ssn, which role "newcomer" may not read; hint: allowed columns of public.customers: id, name, email, created_at (reason=scope_missing)',
    );
    ends(
      await server.query(s, 'SELECT value FROM public.secrets'),
      'permission denied by pgwarden: SELECT reads relation public.secrets, which role "newcomer" may not read; hint: allowed relations: public.orders, public.customers; otherwise request a token whose role includes public.secrets (reason=scope_missing)',
    );
    // The row cap: both servers drop notices, so this role's cap is an error, which they pass on.
    ends(
      await server.query(s, 'SELECT id FROM public.orders'),
      'result exceeds the limit of 5 rows for this role; hint: narrow the query with WHERE or add LIMIT so it returns fewer rows (reason=limit_reached)',
    );
    expect(await server.query(s, 'SELECT max_rows, on_row_cap FROM pgwarden.session')).toEqual([
      { max_rows: '5', on_row_cap: 'error' },
    ]);
    expect(await server.query(s, 'SELECT id FROM public.orders ORDER BY id LIMIT 5')).toHaveLength(5);
    await stop(s);
  });
});

describe('catalog: scoped', () => {
  /** The URL of this test's server, with a token for the scoped role. */
  async function scopedUrl(agent: string): Promise<string> {
    const token = await tp.token({ role: 'scoped', sub: 'mcp-user', agent });
    return url.replace(/:[^:@]+@/, `:${encodeURIComponent(token)}@`);
  }

  it("the reference server lists and describes only the role's tables, denied columns absent", async () => {
    const s = await spawnServer([
      binOf('@modelcontextprotocol/server-postgres', 'mcp-server-postgres'),
      await scopedUrl('mcp-scoped-ref'),
    ]);
    const { resources } = await s.client.listResources(undefined, REQUEST);
    expect(resources.map((r) => r.name).sort()).toEqual(['"customers" database schema', '"orders" database schema']);
    const customers = resources.find((r) => r.name === '"customers" database schema')!;
    const read = await s.client.readResource({ uri: customers.uri }, REQUEST);
    const columns = JSON.parse((read.contents[0] as { text: string }).text) as { column_name: string }[];
    expect(columns.map((c) => c.column_name).sort()).toEqual(['created_at', 'email', 'id', 'name']);
    const r = await s.client.callTool({ name: 'query', arguments: { sql: ALLOWED_SQL } }, undefined, REQUEST);
    expect(JSON.parse(text(r))).toEqual(allowedRows);
    await stop(s);
  });

  it("@henkey/postgres-mcp-server lists only the role's tables and describes them with constraints and indexes", async () => {
    const s = await spawnServer([
      binOf('@henkey/postgres-mcp-server', 'postgres-mcp'),
      '--connection-string',
      await scopedUrl('mcp-scoped-henkey'),
    ]);
    const r = await s.client.callTool(
      { name: 'pg_manage_schema', arguments: { operation: 'get_info' } },
      undefined,
      REQUEST,
    );
    expect(r.isError, text(r)).toBeFalsy();
    expect(JSON.parse(text(r).slice(text(r).indexOf('[')))).toEqual(['customers', 'orders']);
    const d = await s.client.callTool(
      { name: 'pg_manage_schema', arguments: { operation: 'get_info', tableName: 'orders' } },
      undefined,
      REQUEST,
    );
    expect(d.isError, text(d)).toBeFalsy();
    const info = JSON.parse(text(d).slice(text(d).indexOf('{'))) as {
      columns: { name: string }[];
      constraints: { type: string }[];
      indexes: { name: string }[];
    };
    expect(info.columns.map((c) => c.name).sort()).toEqual(['created_at', 'customer_id', 'id', 'status', 'total']);
    // The foreign key to customers (also the role's) is shown.
    expect(info.constraints.map((c) => c.type).sort()).toEqual(['FOREIGN KEY', 'PRIMARY KEY']);
    expect(info.indexes.map((i) => i.name)).toContain('orders_pkey');
    const hidden = await s.client.callTool(
      { name: 'pg_manage_schema', arguments: { operation: 'get_info', tableName: 'secrets' } },
      undefined,
      REQUEST,
    );
    expect(text(hidden)).not.toMatch(/"name": "(id|value)"/);
    const customers = await s.client.callTool(
      { name: 'pg_manage_schema', arguments: { operation: 'get_info', tableName: 'customers' } },
      undefined,
      REQUEST,
    );
    expect(text(customers)).not.toMatch(/ssn/);
    await stop(s);
  });
});

describe('a token that expires under running servers', () => {
  it('pgwarden ends the sessions at exp: the reference server exits, the other reports the expired token', async () => {
    // Three seconds or a little more (exp is whole seconds): long enough for both servers to start and run one query.
    const token = await tp.token({ role: 'agent', sub: 'mcp-user', agent: 'mcp-short' }, 4_000);
    const exp = (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp * 1000;
    const shortUrl = url.replace(/:[^:@]+@/, `:${encodeURIComponent(token)}@`);
    const [ref, henkey] = await Promise.all([
      spawnServer([binOf('@modelcontextprotocol/server-postgres', 'mcp-server-postgres'), shortUrl]),
      spawnServer([binOf('@henkey/postgres-mcp-server', 'postgres-mcp'), '--connection-string', shortUrl]),
    ]);
    const refQuery = () => ref.client.callTool({ name: 'query', arguments: { sql: ALLOWED_SQL } }, undefined, REQUEST);
    const henkeyQuery = () =>
      henkey.client.callTool(
        { name: 'pg_execute_query', arguments: { operation: 'select', query: ALLOWED_SQL } },
        undefined,
        REQUEST,
      );
    // Both hold a pooled connection, idle, when the token expires.
    expect(JSON.parse(text(await refQuery()))).toEqual(allowedRows);
    expect(text(await henkeyQuery())).toMatch(/Retrieved 3 rows/);
    expect(Date.now()).toBeLessThan(exp);
    // The reference server has no 'error' listener on its pg.Pool: the FATAL on its idle connection kills the process.
    await until(() => !alive(ref.pid!), exp - Date.now() + 5_000);
    await expect(refQuery()).rejects.toThrow(/Not connected|Connection closed/);
    expect(ref.stderr.join('')).toMatch(/credential expired/);
    // The other logs the lost connection, opens a new one on the next call and passes pgwarden's login refusal on.
    const err = await toolError(henkeyQuery());
    expect(err).toMatch(/token expired at /);
    expect(alive(henkey.pid!)).toBe(true);
  });
});
