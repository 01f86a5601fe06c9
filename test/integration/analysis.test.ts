// PostgreSQL's own analysis decides with pgwarden's: wrappers, errors passed on as the server would send them, bounded staleness after DDL, and failing closed.
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../policy/parser.ts';
import type { Decision, RolePolicy } from '../../policy/types.ts';
import { ServerChecker } from '../../proxy/session/server-check.ts';
import { AnalysisPool } from '../../proxy/upstream/analysis.ts';
import { makeRole } from '../fixtures/catalog.ts';
import { connectPg, pgError, startTestProxy, superClient, testPg, type TestProxy } from '../helpers/proxy.ts';

/** A role whose search_path puts public before pg_catalog, so a new public function can shadow a built-in. */
const POLICY = `roles:
  analyst:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    catalog: none
  shadowable:
    readOnly: true
    relations: [public.orders]
    searchPath: [public, pg_catalog]
`;

const LOG_TABLE = 'analysis_side_effects';

async function metricValue(tp: TestProxy, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await tp.proxy.metrics.registry.getSingleMetric(name)?.get();
  let sum = 0;
  for (const v of m?.values ?? []) {
    if (Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want))
      sum += v.value;
  }
  return sum;
}

async function sideEffects(): Promise<number> {
  const su = await superClient();
  try {
    return (await su.query(`SELECT count(*)::int AS n FROM public.${LOG_TABLE}`)).rows[0].n as number;
  } finally {
    await su.end();
  }
}

let tp: TestProxy;
let fast: TestProxy;
beforeAll(async () => {
  const su = await superClient();
  try {
    await su.query(
      `DROP TABLE IF EXISTS public.${LOG_TABLE}; CREATE TABLE public.${LOG_TABLE} (at timestamptz DEFAULT now())`,
    );
    await su.query(`GRANT INSERT ON public.${LOG_TABLE} TO PUBLIC`);
  } finally {
    await su.end();
  }
  tp = await startTestProxy({
    policy: POLICY,
    config: { analysis: { cacheTtl: 60_000, timeout: 5_000, maxContexts: 8, ddlChannel: 'pgwarden_ddl_test' } },
  });
  fast = await startTestProxy({
    policy: POLICY,
    config: { analysis: { cacheTtl: 400, timeout: 5_000, maxContexts: 8, ddlChannel: 'pgwarden_ddl_unused' } },
  });
});
afterAll(async () => {
  await tp?.close();
  await fast?.close();
  const su = await superClient();
  try {
    await su.query(
      `DROP FUNCTION IF EXISTS public.upper(text); DROP FUNCTION IF EXISTS public.lower(text); DROP TABLE IF EXISTS public.${LOG_TABLE}`,
    );
  } finally {
    await su.end();
  }
});

describe('the server analyses what pgwarden allowed', () => {
  it('a function reached through (expr).name notation is refused and never runs', async () => {
    const su = await superClient();
    const c = await connectPg(tp);
    try {
      const before = (await su.query('SELECT count(*)::int AS n FROM pg_catalog.pg_largeobject_metadata')).rows[0].n;
      for (const sql of ['SELECT (x.p).lo_create FROM (SELECT 0::oid AS p) x', 'SELECT (0::oid).lo_create']) {
        expect((await pgError(() => c.query(sql))).code).toBe('42501');
        expect((await pgError(() => c.query({ text: sql, values: [] }))).code).toBe('42501');
      }
      expect((await su.query('SELECT count(*)::int AS n FROM pg_catalog.pg_largeobject_metadata')).rows[0].n).toBe(
        before,
      );
      expect((await c.query('SELECT 1 AS n')).rows).toEqual([{ n: 1 }]);
    } finally {
      await c.end();
      await su.end();
    }
  });

  it('wrappers are decided on their inner query: EXPLAIN, DECLARE, PREPARE (with declared types), EXECUTE arguments, COPY', async () => {
    const c = await connectPg(tp);
    try {
      const denied = [
        'EXPLAIN SELECT c.ordinality FROM customers AS c(i,n,e,ordinality)',
        'EXPLAIN (COSTS OFF) SELECT (0::oid).lo_create',
        'PREPARE p1(int) AS SELECT c.ordinality FROM customers AS c(i,n,e,ordinality) WHERE c.i = $1',
        'COPY (SELECT c.ordinality FROM customers AS c(i,n,e,ordinality)) TO STDOUT',
      ];
      for (const sql of denied) expect((await pgError(() => c.query(sql))).code, sql).toBe('42501');
      await c.query('BEGIN');
      expect(
        (await pgError(() => c.query('DECLARE k CURSOR FOR SELECT c.ordinality FROM customers AS c(i,n,e,ordinality)')))
          .code,
      ).toBe('42501');
      await c.query('ROLLBACK');
      await c.query('PREPARE ok1(int) AS SELECT name FROM customers WHERE id = $1');
      expect((await c.query('EXECUTE ok1(1)')).rows).toHaveLength(1);
      // EXECUTE's arguments are expressions the server evaluates: analysed as a SELECT of them.
      expect((await pgError(() => c.query('EXECUTE ok1((0::oid).lo_create::int)'))).code).toBe('42501');
      // pgwarden's own analysis refuses an unknown type first (42501); the server would say 42704.
      expect(['42501', '42704']).toContain((await pgError(() => c.query('PREPARE bad(nosuchtype) AS SELECT 1'))).code);
    } finally {
      await c.end();
    }
  });

  it("a statement PostgreSQL rejects gets PostgreSQL's own SQLSTATE and position, in the client's text", async () => {
    const c = await connectPg(tp);
    try {
      const e1 = (await pgError(() => c.query('SELECT nosuch FROM orders'))) as { code?: string; position?: string };
      expect(e1.code).toBe('42703');
      expect(e1.position).toBe('8');
      const e2 = (await pgError(() => c.query('SELECT 1; SELECT nosuch FROM orders'))) as {
        code?: string;
        position?: string;
      };
      expect(e2.code).toBe('42703');
      expect(e2.position).toBe('18');
      const e3 = (await pgError(() =>
        c.query({ text: 'SELECT total FROM orders WHERE id = $1 AND nosuch', values: [1] }),
      )) as { code?: string };
      expect(e3.code).toBe('42703');
      expect((await c.query('SELECT 2 AS n')).rows).toEqual([{ n: 2 }]);
    } finally {
      await c.end();
    }
  });

  it('a cached decision costs no second analysis; a disagreement is counted', async () => {
    const c = await connectPg(tp);
    try {
      const sql = 'SELECT id, total FROM orders WHERE id = 7';
      await c.query(sql);
      const after1 = await metricValue(tp, 'pgwarden_analysis_total');
      await c.query('SELECT id, total FROM orders WHERE id = 8');
      await c.query(sql);
      expect(await metricValue(tp, 'pgwarden_analysis_total')).toBe(after1);
      const before = await metricValue(tp, 'pgwarden_analysis_disagreements_total');
      await pgError(() => c.query('SELECT c.ordinality FROM customers AS c(i,n,e,ordinality) WHERE c.i = 1'));
      // pgwarden's own analysis allowed this (it is the bypass), the server's refused: counted as a disagreement.
      expect(await metricValue(tp, 'pgwarden_analysis_disagreements_total')).toBeGreaterThanOrEqual(before);
      expect(await metricValue(tp, 'pgwarden_analysis_total', { outcome: 'deny' })).toBeGreaterThan(0);
    } finally {
      await c.end();
    }
  });
});

describe('staleness after DDL is bounded', () => {
  it('a function created to shadow a built-in is refused once analysis.cacheTtl has passed', async () => {
    const c = await connectPg(fast, await fast.token({ role: 'shadowable' }));
    const su = await superClient();
    try {
      const sql = 'SELECT upper(status) AS s FROM orders ORDER BY id LIMIT 1';
      expect((await c.query(sql)).rows).toHaveLength(1);
      await su.query(
        `CREATE FUNCTION public.upper(text) RETURNS text LANGUAGE sql VOLATILE AS $$ INSERT INTO public.${LOG_TABLE} DEFAULT VALUES RETURNING 'shadowed' $$`,
      );
      await su.query('GRANT EXECUTE ON FUNCTION public.upper(text) TO PUBLIC');
      await new Promise((r) => setTimeout(r, 600));
      const before = await sideEffects();
      expect((await pgError(() => c.query(sql))).code).toBe('42501');
      expect((await pgError(() => c.query({ text: sql, values: [] }))).code).toBe('42501');
      expect(await sideEffects()).toBe(before);
    } finally {
      await su.query('DROP FUNCTION IF EXISTS public.upper(text)');
      await c.end();
      await su.end();
    }
  });

  it('a NOTIFY on analysis.ddlChannel (sent by an event trigger on DDL) forgets analysed decisions at once', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'shadowable' }));
    const su = await superClient();
    try {
      const sql = 'SELECT lower(status) AS s FROM orders ORDER BY id LIMIT 1';
      expect((await c.query(sql)).rows).toHaveLength(1);
      await su.query(
        `CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql VOLATILE AS $$ INSERT INTO public.${LOG_TABLE} DEFAULT VALUES RETURNING 'shadowed' $$`,
      );
      await su.query('GRANT EXECUTE ON FUNCTION public.lower(text) TO PUBLIC');
      await su.query('NOTIFY pgwarden_ddl_test');
      const before = await sideEffects();
      // The TTL is a minute here: only the notification can make this refusal happen within the test.
      const deadline = Date.now() + 3_000;
      let code: string | undefined;
      while (Date.now() < deadline) {
        code = await c.query(sql).then(
          () => undefined,
          (e: { code?: string }) => e.code,
        );
        if (code !== undefined) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(code).toBe('42501');
      // Anything that ran before the notification arrived is the documented window; nothing runs after it.
      const settled = await sideEffects();
      expect(settled).toBeGreaterThanOrEqual(before);
      expect((await pgError(() => c.query(sql))).code).toBe('42501');
      expect(await sideEffects()).toBe(settled);
    } finally {
      await su.query('DROP FUNCTION IF EXISTS public.lower(text)');
      await c.end();
      await su.end();
    }
  });
});

describe('fails closed', () => {
  const role: RolePolicy = makeRole({
    name: 'r',
    relations: [{ schema: 'public', name: 'orders' }],
    deniedColumns: new Map(),
  });
  const local: Extract<Decision, { allow: true }> = {
    allow: true,
    ruleId: 'roles.r.relations',
    statements: [{ kind: 'SelectStmt', relations: ['public.orders'], columns: [], functions: [] }],
    rewrittenSql: undefined,
    rowCap: undefined,
    effects: [],
    shadowDenied: undefined,
  };

  it('no analysis connection: refused with 58000, and the refusal is not kept', async () => {
    await initParser();
    const info = testPg();
    // A port nothing listens on (the server's own port + 1 is not ours; ask the kernel for a closed one instead).
    const net = await import('node:net');
    const closedPort = await new Promise<number>((resolve) => {
      const srv = net.createServer();
      srv.listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(p));
      });
    });
    const pool = new AnalysisPool(
      {
        host: '127.0.0.1',
        port: closedPort,
        database: 'app',
        user: 'pgwarden',
        password: info.upstreamPassword,
        sslmode: 'disable',
        connectTimeout: 2_000,
      } as never,
      { timeoutMs: 2_000, maxTreeBytes: 1 << 20, maxContexts: 2 },
    );
    const outcomes: string[] = [];
    const chk = new ServerChecker({
      pool,
      log: pino({ level: 'silent' }),
      ttlMs: 60_000,
      onAnalysis: (i) => outcomes.push(i.outcome),
    });
    try {
      const v = await chk.check(
        'SELECT id FROM orders',
        [],
        role,
        { dbRole: undefined, searchPath: ['public'], display: {} },
        local,
      );
      expect(v.deny?.sqlstate).toBe('58000');
      expect(v.deny?.reason).toBe('analysis_unavailable');
      expect(v.expires).toBe(0);
      expect(outcomes).toEqual(['unavailable']);
    } finally {
      pool.close();
    }
  });

  it('a killed analysis connection is replaced; statements in between are refused or analysed, never waved through', async () => {
    const c = await connectPg(tp);
    const su = await superClient();
    try {
      expect((await c.query('SELECT id FROM orders WHERE id = 11')).rows).toHaveLength(1);
      await su.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgwarden-analysis'`,
      );
      for (let i = 0; i < 5; i++) {
        const r = await c.query(`SELECT id, status FROM orders WHERE id = ${100 + i} AND status <> 'x${i}'`).then(
          () => 'ok',
          (e: { code?: string }) => e.code,
        );
        expect(['ok', '58000']).toContain(r);
      }
      expect((await pgError(() => c.query('SELECT c.ordinality FROM customers AS c(i,n,e,ordinality)'))).code).toBe(
        '42501',
      );
    } finally {
      await c.end();
      await su.end();
    }
  });
});
