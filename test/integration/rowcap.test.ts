// Row caps enforced on the wire: truncate (WARNING + honest tag) and error (54000), in simple, extended, portals, cursors and COPY.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import postgres from 'postgres';
import { connectPg, pgError, startTestProxy, type TestProxy } from '../helpers/proxy.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy();
});
afterAll(async () => {
  await tp?.close();
});

function collectNotices(c: pg.Client): string[] {
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  return notices;
}

describe('truncate mode (analyst: maxRows 100)', () => {
  it('simple protocol: 100 rows, a WARNING, and a tag that says 100', async () => {
    const c = await connectPg(tp);
    const notices = collectNotices(c);
    try {
      const r = await c.query('SELECT id FROM orders');
      expect(r.rows.length).toBe(100);
      expect(r.rowCount).toBe(100);
      expect(notices.join('\n')).toMatch(/truncated the result at 100 rows/);
      // A result under the cap is untouched.
      const small = await c.query('SELECT id FROM orders ORDER BY id LIMIT 7');
      expect(small.rows.length).toBe(7);
    } finally {
      await c.end();
    }
  });

  it('extended protocol with parameters', async () => {
    const c = await connectPg(tp);
    try {
      const r = await c.query({ text: 'SELECT id FROM orders WHERE total >= $1', values: [0] });
      expect(r.rows.length).toBe(100);
    } finally {
      await c.end();
    }
  });

  it('a multi-statement Query is capped per statement', async () => {
    const c = await connectPg(tp);
    try {
      const r = (await c.query('SELECT id FROM orders; SELECT id FROM customers')) as unknown as pg.QueryResult[];
      expect(r[0]!.rows.length).toBe(100);
      expect(r[1]!.rows.length).toBe(50);
    } finally {
      await c.end();
    }
  });

  it('cursors: one FETCH and the cursor as a whole stop at the cap', async () => {
    const c = await connectPg(tp);
    try {
      await c.query('BEGIN');
      await c.query('DECLARE cur CURSOR FOR SELECT id FROM orders');
      const r = await c.query('FETCH 400 FROM cur');
      expect(r.rows.length).toBe(100);
      // Paging on does not reach row 101: the cursor's own query was capped in the database.
      expect((await c.query('FETCH 100 FROM cur')).rows.length).toBe(0);
      await c.query('DECLARE cur2 CURSOR FOR SELECT id FROM orders ORDER BY id');
      let total = 0;
      for (let i = 0; i < 10; i++) total += (await c.query('FETCH 30 FROM cur2')).rows.length;
      expect(total).toBe(100);
      await c.query('COMMIT');
    } finally {
      await c.end();
    }
  });

  it('portals executed with a row limit (postgres.js cursor) stop at the cap', async () => {
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
      let total = 0;
      await sql`SELECT id FROM orders`.cursor(30, async (rows) => {
        total += rows.length;
      });
      expect(total).toBe(100);
    } finally {
      await sql.end({ timeout: 2 });
    }
  });

  it('COPY … TO STDOUT is capped too', async () => {
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
      const stream = await sql`COPY (SELECT id FROM orders) TO STDOUT`.readable();
      let text = '';
      for await (const chunk of stream) text += chunk.toString();
      expect(text.trim().split('\n').length).toBe(100);
    } finally {
      await sql.end({ timeout: 2 });
    }
  });
});

describe('error mode (capped: maxRows 10, onRowCap error)', () => {
  it('fails the statement with 54000 and keeps the session usable', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'capped' }));
    try {
      const err = await pgError(() => c.query('SELECT id FROM orders'));
      expect(err.code).toBe('54000');
      expect(err.hint).toMatch(/LIMIT|WHERE/);
      const ok = await c.query('SELECT id FROM orders ORDER BY id LIMIT 5');
      expect(ok.rows.length).toBe(5);
      const err2 = await pgError(() => c.query({ text: 'SELECT id FROM orders WHERE id > $1', values: [0] }));
      expect(err2.code).toBe('54000');
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });
});
