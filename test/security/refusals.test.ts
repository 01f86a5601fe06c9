// Refused statements never reach Postgres, in either protocol, and a refusal inside a transaction fails that transaction upstream.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { canaryCount, connectPg, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});

describe('refusals never reach Postgres', () => {
  it('a multi-statement Query with one refused statement runs none of them', async () => {
    const before = await canaryCount();
    const c = await connectPg(tp);
    try {
      const err = await pgError(() => c.query('SELECT 1; DELETE FROM canary; SELECT 2'));
      expect(err.code).toBe('42501');
      const err2 = await pgError(() => c.query('SELECT 1; COMMIT; DELETE FROM canary'));
      expect(err2.code).toBe('42501');
      // The lexer differential that fooled pgsql-ast-parser: three statements, not one.
      const err3 = await pgError(() => c.query(`SELECT /* ' */ 1; DELETE FROM canary; SELECT /* ' */ 2`));
      expect(err3.code).toBe('42501');
      expect((await c.query('SELECT 3 AS n')).rows[0].n).toBe(3);
    } finally {
      await c.end();
    }
    expect(await canaryCount()).toBe(before);
  });

  it('a refused Parse in a pipelined batch: earlier results arrive first, later messages are discarded until Sync', async () => {
    const before = await canaryCount();
    const sql = postgres({
      host: '127.0.0.1',
      port: tp.proxy.port,
      user: 'alice',
      database: 'app',
      pass: await tp.token(),
      max: 1,
      onnotice: () => {},
    });
    try {
      const [a, b, c] = await Promise.allSettled([
        sql`SELECT ${1}::int AS n`,
        sql`DELETE FROM canary WHERE id > ${0}`,
        sql`SELECT ${3}::int AS n`,
      ]);
      expect(a).toMatchObject({ status: 'fulfilled', value: [{ n: 1 }] });
      expect(b.status).toBe('rejected');
      expect((b as PromiseRejectedResult).reason.code).toBe('42501');
      expect(c).toMatchObject({ status: 'fulfilled', value: [{ n: 3 }] });
    } finally {
      await sql.end({ timeout: 2 });
    }
    expect(await canaryCount()).toBe(before);
  });

  it('a refusal inside an explicit transaction fails it upstream, so COMMIT commits nothing', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'writer' }));
    try {
      await c.query('BEGIN');
      await c.query(`INSERT INTO canary VALUES (1001, 'must not survive')`);
      const err = await pgError(() => c.query('DELETE FROM orders'));
      expect(err.code).toBe('42501');
      // Postgres now has the transaction in failed state, exactly as if the statement had failed there.
      const err2 = await pgError(() => c.query('SELECT 1'));
      expect(err2.code).toBe('25P02');
      const r = await c.query('COMMIT');
      expect(r.command).toBe('ROLLBACK');
    } finally {
      await c.end();
    }
    const su = await superClient();
    try {
      expect((await su.query('SELECT count(*)::int AS n FROM canary WHERE id = 1001')).rows[0].n).toBe(0);
    } finally {
      await su.end();
    }
  });

  it('the same holds for a refused Parse inside an extended-protocol transaction', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'writer' }));
    try {
      await c.query('BEGIN');
      await c.query({ text: 'INSERT INTO canary VALUES ($1, $2)', values: [1002, 'must not survive'] });
      const err = await pgError(() => c.query({ text: 'DELETE FROM orders WHERE id = $1', values: [1] }));
      expect(err.code).toBe('42501');
      const r = await c.query('COMMIT');
      expect(r.command).toBe('ROLLBACK');
    } finally {
      await c.end();
    }
    const su = await superClient();
    try {
      expect((await su.query('SELECT count(*)::int AS n FROM canary WHERE id = 1002')).rows[0].n).toBe(0);
      expect((await su.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBe(500);
    } finally {
      await su.end();
    }
  });
});
