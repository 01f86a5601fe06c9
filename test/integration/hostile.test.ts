// A huge hostile statement is refused with its SQLSTATE, decided off the event loop, while another session keeps working; long legitimate statements still run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectAs, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});

const client = (role: string) => connectAs(tp, role);

async function sqlstate(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

/** ~`bytes` of nested parentheses around `inner`. */
function nested(head: string, inner: string, bytes: number): string {
  const depth = Math.floor((bytes - head.length - inner.length) / 2);
  return `${head}${'('.repeat(depth)}${inner}${')'.repeat(depth)}`;
}

describe('hostile statements', () => {
  it('a huge nested statement is refused (0A000) and never reaches Postgres, while another session keeps running queries', {
    timeout: 120_000,
  }, async () => {
    const sup = await superClient();
    const hostile = await client('writer');
    const other = await client('analyst');
    try {
      const before = Number((await sup.query('SELECT count(*) AS n FROM canary')).rows[0].n);
      const refused = sqlstate(hostile.query(nested('INSERT INTO canary (note) SELECT ', "'hostile'", 512 * 1024)));
      // The other session's statements are answered while the hostile one is being decided (and after).
      let answered = 0;
      let done = false;
      void refused.finally(() => (done = true));
      while (!done || answered < 5) {
        const r = await other.query('SELECT count(*) AS n FROM orders');
        expect(Number(r.rows[0].n)).toBeGreaterThan(0);
        answered++;
      }
      expect(await refused).toBe('0A000');
      // The hostile session is still usable, and nothing of the refused statement ran.
      expect((await hostile.query('SELECT 1 AS x')).rows[0].x).toBe(1);
      expect(Number((await sup.query('SELECT count(*) AS n FROM canary')).rows[0].n)).toBe(before);
    } finally {
      await Promise.all([hostile.end(), other.end(), sup.end()]);
    }
  });

  it('through the extended protocol too (Parse), and a Query of more than 1000 statements is refused as too large', {
    timeout: 120_000,
  }, async () => {
    const c = await client('analyst');
    try {
      expect(await sqlstate(c.query({ text: `SELECT $1::int + ${'1+'.repeat(64 * 1024)}1`, values: [1] }))).toBe(
        '0A000',
      );
      expect(await sqlstate(c.query('SELECT 1;'.repeat(1001)))).toBe('0A000');
      expect((await c.query({ text: 'SELECT $1::int AS x', values: [7] })).rows[0].x).toBe(7);
    } finally {
      await c.end();
    }
  });

  it('long legitimate statements are decided on a worker with the same answer: allowed ones run, denied ones are denied', {
    timeout: 120_000,
  }, async () => {
    const c = await client('analyst');
    try {
      const literal = 'x'.repeat(256 * 1024);
      const r = await c.query(`SELECT length('${literal}') AS n, (SELECT count(*) FROM orders) > 0 AS ok`);
      expect(r.rows[0]).toEqual({ n: 256 * 1024, ok: true });
      // Extended protocol, with the row cap's rewrite of a long text.
      const ids = Array.from({ length: 2000 }, (_, i) => i + 1).join(', ');
      const e = await c.query({
        text: `SELECT id FROM orders WHERE id IN (${ids}) AND $1::int = 1 ORDER BY id`,
        values: [1],
      });
      expect(e.rows.length).toBeGreaterThan(0);
      // A denied column in a long statement is denied as in a short one.
      expect(await sqlstate(c.query(`SELECT ssn FROM customers WHERE name <> '${literal}'`))).toBe('42501');
      expect(await sqlstate(c.query('SELECT ssn FROM customers'))).toBe('42501');
    } finally {
      await c.end();
    }
  });

  it('the decide pool is on /metrics: what it decided and how busy it is', async () => {
    const text = await tp.proxy.metrics.registry.metrics();
    const decided = /^pgwarden_decide_pool_jobs_total\{outcome="decided"\} (\d+)$/m.exec(text);
    // The tests above sent long statements, each decided on a worker (the refused ones too: the worker refused them).
    expect(Number(decided?.[1] ?? 0)).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/^pgwarden_decide_pool_jobs\{state="queued"\} 0$/m);
    expect(Number(/^pgwarden_decide_pool_workers_started_total (\d+)$/m.exec(text)?.[1] ?? 0)).toBeGreaterThanOrEqual(
      1,
    );
    expect(text).toMatch(/^pgwarden_decide_pool_workers \d+$/m);
  });
});
