// Allowed long statements whose analysed trees are big (IN lists, VALUES lists, array constants) are read in slices and still give the right rows; a tree over the cap is refused as before.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { connectAs, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});

const client = (role: string) => connectAs(tp, role);

async function refusal(p: Promise<unknown>): Promise<{ code?: string; message?: string } | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return { code: (err as { code?: string }).code, message: (err as Error).message };
  }
}

/** Multiples of 7 up to 7·n, largest first: n elements, of which only those ≤ 500 are order ids (71, under analyst's row cap of 100). */
const multiplesOf7 = (n: number): number[] => Array.from({ length: n }, (_, i) => (n - i) * 7);

describe('big analysed trees', () => {
  it('a 20,000-element IN list, VALUES list and ARRAY constant are allowed and return the rows PostgreSQL returns; three at once too', {
    timeout: 180_000,
  }, async () => {
    const sup = await superClient();
    const cs = await Promise.all([client('analyst'), client('analyst'), client('analyst')]);
    try {
      const ids = multiplesOf7(20_000);
      const want = (await sup.query('SELECT id, total FROM orders WHERE id % 7 = 0 ORDER BY id')).rows;
      expect(want.length).toBe(71);
      const statements = [
        `SELECT id, total FROM orders WHERE id IN (${ids.join(',')}) ORDER BY id`,
        `SELECT o.id, o.total FROM orders o JOIN (VALUES (${ids.join('),(')})) v(x) ON o.id = v.x ORDER BY o.id`,
        `SELECT id, total FROM orders WHERE id = ANY (ARRAY[${ids.join(',')}]) ORDER BY id`,
      ];
      // Each text is over 100 KiB and its tree about 3 MB (read in slices); all three are in flight at once.
      const results = await Promise.all(statements.map((sql, i) => (cs[i] as pg.Client).query(sql)));
      for (const r of results) expect(r.rows).toEqual(want);
      // Again through the extended protocol, on one session, after the verdicts are cached: the same rows.
      const r = await (cs[0] as pg.Client).query({ text: statements[0] as string, values: [] });
      expect(r.rows).toEqual(want);
    } finally {
      await Promise.all([...cs.map((c) => c.end()), sup.end()]);
    }
  });

  it('an IN list whose analysed tree is over the 16 MiB cap is refused with 54000, as before, and the session goes on', {
    timeout: 180_000,
  }, async () => {
    const c = await client('analyst');
    try {
      // 120,000 elements: ~800 KiB of text (under the 1 MiB message cap), ~18 MB of tree.
      const ids = multiplesOf7(120_000);
      const sql = `SELECT id FROM orders WHERE id IN (${ids.join(',')})`;
      expect(sql.length).toBeLessThan(1024 * 1024 - 64);
      const r = await refusal(c.query(sql));
      expect(r?.code).toBe('54000');
      expect(r?.message).toBe(
        'statement is too complex for pgwarden to analyse; hint: split the statement into simpler ones (reason=limit_reached)',
      );
      expect((await c.query('SELECT count(*)::int AS n FROM orders WHERE id IN (7, 14)')).rows[0]).toEqual({ n: 2 });
    } finally {
      await c.end();
    }
  });
});
