// Per-agent budgets end to end: each kind refuses with 53400 and a retry hint, the refused statement never reaches the database, counting is shared across sessions, and the session stays usable.
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { connectPg, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';

const POLICY = `roles:
  stmts:
    readOnly: false
    relations: [public.orders, public.canary]
    write: { statements: [insert], relations: [public.canary] }
    budget: { per: agent, statementsPerMinute: 4 }
  rows:
    readOnly: false
    relations: [public.orders, public.canary]
    write: { statements: [insert], relations: [public.canary] }
    budget: { per: subject, rowsPerMinute: 50 }
  bytes:
    readOnly: false
    relations: [public.orders, public.canary]
    write: { statements: [insert], relations: [public.canary] }
    budget: { per: agent, bytesPerMinute: 64kB }
  conc:
    readOnly: false
    relations: [public.orders, public.canary]
    write: { statements: [insert, update], relations: [public.canary] }
    budget: { per: agent, concurrentStatements: 1 }
`;

// The budget windows run on the proxy's clock: a test moves it forward instead of waiting a minute.
let offset = 0;
const now = () => Date.now() + offset;

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY, deps: { now } });
});
afterAll(async () => {
  await tp?.close();
});

async function as(role: string, agent: string, sub = 'alice'): Promise<pg.Client> {
  return await connectPg(tp, await tp.token({ role, agent, sub }));
}

async function canaryRows(id: number): Promise<number> {
  const c = await superClient();
  try {
    return (await c.query('SELECT count(*)::int AS n FROM public.canary WHERE id = $1', [id])).rows[0].n as number;
  } finally {
    await c.end();
  }
}

async function budgetMetric(role: string, kind: string): Promise<number> {
  const m = await tp.proxy.metrics.registry.getSingleMetric('pgwarden_budget_exceeded_total')?.get();
  return m?.values.find((v) => v.labels.role === role && v.labels.kind === kind)?.value ?? 0;
}

function budgetEvents(kind: string): Record<string, unknown>[] {
  return tp
    .auditLines()
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((e) => e.event === 'budget_exceeded' && e.kind === kind);
}

/** "retry in 12 s" → 12 */
function retrySeconds(hint: string | undefined): number {
  const m = /^retry in (\d+) s$/.exec(hint ?? '');
  if (m === null) throw new Error(`hint does not say when to retry: ${String(hint)}`);
  return Number(m[1]);
}

describe('statementsPerMinute (per agent, shared across sessions)', () => {
  it('the fifth statement of one agent in a minute is refused with 53400 and a retry time; it never reaches the database; the session goes on', async () => {
    const a = await as('stmts', 'agent-s', 'alice');
    const b = await as('stmts', 'agent-s', 'bob'); // another subject, same agent: same budget
    const other = await as('stmts', 'agent-other');
    try {
      await a.query('SELECT 1');
      await b.query('SELECT 2');
      await a.query({ text: 'SELECT $1::int AS n', values: [3] }); // extended protocol counts too
      await b.query('SELECT 4');
      const err = await pgError(() => a.query("INSERT INTO public.canary VALUES (9101, 'over budget')"));
      expect(err.code).toBe('53400');
      expect(err.message).toMatch(/4 statements per minute/);
      const wait = retrySeconds(err.hint);
      expect(wait).toBeGreaterThanOrEqual(1);
      expect(wait).toBeLessThanOrEqual(60);
      expect(await canaryRows(9101)).toBe(0);
      // Extended protocol: the Execute is refused in place, the same way.
      expect((await pgError(() => b.query({ text: 'SELECT $1::int AS n', values: [5] }))).code).toBe('53400');
      // Another agent has its own budget.
      expect((await other.query('SELECT 6 AS n')).rows[0].n).toBe(6);
      expect(await budgetMetric('stmts', 'statements')).toBe(2);
      await until(() => budgetEvents('statements').length >= 2);
      expect(budgetEvents('statements')[0]).toMatchObject({
        role: 'stmts',
        agent: 'agent-s',
        per: 'agent',
        limit: 4,
        sqlstate: '53400',
      });
      // Once the hinted time has passed, the same sessions run again.
      offset += wait * 1000;
      expect((await a.query('SELECT 7 AS n')).rows[0].n).toBe(7);
      expect((await b.query({ text: 'SELECT $1::int AS n', values: [8] })).rows[0].n).toBe(8);
    } finally {
      await Promise.all([a.end(), b.end(), other.end()]);
    }
  });

  it('a reconnect does not reset the budget', async () => {
    const first = await as('stmts', 'agent-r');
    for (let i = 0; i < 4; i++) await first.query('SELECT 1');
    await first.end();
    const again = await as('stmts', 'agent-r');
    try {
      expect((await pgError(() => again.query('SELECT 1'))).code).toBe('53400');
    } finally {
      await again.end();
    }
  });
});

describe('rowsPerMinute (per subject)', () => {
  it('a statement that crosses the budget runs to completion; the next is refused with a retry time and does not reach the database', async () => {
    const a = await as('rows', 'x', 'rows-sub');
    const b = await as('rows', 'y', 'rows-sub'); // same subject, another agent: counted together
    try {
      expect((await a.query('SELECT id FROM orders ORDER BY id LIMIT 30')).rows).toHaveLength(30);
      // 30 + 30 > 50: not cut, all 30 rows arrive.
      expect((await b.query('SELECT id FROM orders ORDER BY id LIMIT 30')).rows).toHaveLength(30);
      const err = await pgError(() => a.query("INSERT INTO public.canary VALUES (9102, 'over budget')"));
      expect(err.code).toBe('53400');
      expect(err.message).toMatch(/50 rows per minute/);
      const wait = retrySeconds(err.hint);
      expect(await canaryRows(9102)).toBe(0);
      expect(await budgetMetric('rows', 'rows')).toBe(1);
      offset += wait * 1000;
      expect((await a.query('SELECT 1 AS n')).rows[0].n).toBe(1);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  });
});

describe('bytesPerMinute (per agent)', () => {
  it('result bytes relayed count; past 64 kB the next statement is refused', async () => {
    const a = await as('bytes', 'agent-b');
    try {
      expect(((await a.query("SELECT repeat('x', 40000) AS v")).rows[0].v as string).length).toBe(40000);
      expect(((await a.query("SELECT repeat('y', 40000) AS v")).rows[0].v as string).length).toBe(40000);
      const err = await pgError(() => a.query("INSERT INTO public.canary VALUES (9103, 'over budget')"));
      expect(err.code).toBe('53400');
      expect(err.message).toMatch(/65536 result bytes per minute/);
      const wait = retrySeconds(err.hint);
      expect(await canaryRows(9103)).toBe(0);
      expect(await budgetMetric('bytes', 'bytes')).toBe(1);
      offset += wait * 1000;
      expect((await a.query('SELECT 1 AS n')).rows[0].n).toBe(1);
    } finally {
      await a.end();
    }
  });
});

describe('concurrentStatements (per agent)', () => {
  it('while one session of the agent runs a statement, another session of it is refused (53400, retry when it finishes); after, it runs', async () => {
    const a = await as('conc', 'agent-c', 'c1');
    const b = await as('conc', 'agent-c', 'c2');
    // A row lock the superuser holds keeps a's UPDATE running for as long as the test needs (its analysis is not blocked).
    const su = await superClient();
    try {
      await su.query('BEGIN');
      await su.query("UPDATE public.canary SET note = 'still here' WHERE id = 1");
      const slow = a.query("UPDATE public.canary SET note = 'still here' WHERE id = 1");
      await until(() => [...tp.proxy.server.sessions].some((s) => s.identity?.sub === 'c1' && s.busy), 5_000);
      const err = await pgError(() => b.query("INSERT INTO public.canary VALUES (9104, 'over budget')"));
      expect(err.code).toBe('53400');
      expect(err.message).toMatch(/1 concurrent statements/);
      expect(err.hint).toMatch(/retry when one of the 1 running statements of this agent finishes/);
      await su.query('COMMIT');
      expect((await slow).rowCount).toBe(1);
      expect(await canaryRows(9104)).toBe(0);
      expect(await budgetMetric('conc', 'concurrency')).toBe(1);
      // The slot is free again: b runs, and a pipelined batch of one session takes one slot only.
      expect((await b.query('SELECT 1 AS n')).rows[0].n).toBe(1);
      const batch = await Promise.all([
        a.query('SELECT 1 AS n'),
        a.query('SELECT 2 AS n'),
        a.query({ text: 'SELECT $1::int AS n', values: [3] }),
      ]);
      expect(batch.map((r) => r.rows[0].n)).toEqual([1, 2, 3]);
    } finally {
      await su.query('ROLLBACK').catch(() => {});
      await Promise.all([a.end(), b.end(), su.end()]);
    }
  });
});

describe('reloads', () => {
  it('a budget added by a reload applies from the next statement of a session already open', async () => {
    writeFileSync(tp.policyFile, `${POLICY}  later:\n    readOnly: true\n    relations: [public.orders]\n`);
    await tp.proxy.reload();
    const a = await as('later', 'agent-l');
    try {
      for (let i = 0; i < 5; i++) await a.query('SELECT 1');
      writeFileSync(
        tp.policyFile,
        `${POLICY}  later:\n    readOnly: true\n    relations: [public.orders]\n    budget: { per: agent, statementsPerMinute: 2 }\n`,
      );
      await tp.proxy.reload();
      await a.query('SELECT 1');
      await a.query('SELECT 2');
      expect((await pgError(() => a.query('SELECT 3'))).code).toBe('53400');
    } finally {
      await a.end();
    }
  });
});
