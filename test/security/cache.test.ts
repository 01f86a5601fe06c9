// The decision cache shared across literal values cannot be primed: a statement that reads a literal is decided on its own text, through the real proxy.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPg, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

/** The text Postgres received last from the live backend that ran a statement starting with `prefix`. */
async function receivedText(prefix: string): Promise<string[]> {
  const su = await superClient();
  try {
    const r = await su.query(`SELECT query FROM pg_stat_activity WHERE starts_with(query, $1)`, [prefix]);
    return r.rows.map((row: { query: string }) => row.query);
  } finally {
    await su.end();
  }
}

let tp: TestProxy;
const auditDir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-cache-audit-'));
const auditFile = path.join(auditDir, 'audit.jsonl');
const auditLines = (): string[] => {
  try {
    return readFileSync(auditFile, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
};
beforeAll(async () => {
  tp = await startTestProxy({ config: { audit: { destination: auditFile, sql: 'normalized', onFailure: 'refuse' } } });
});
afterAll(async () => {
  await tp?.close();
  rmSync(auditDir, { recursive: true, force: true });
});

describe('priming the shared decision cache', () => {
  it('statements differing only in a literal share a decision, and the row cap still holds for every literal', async () => {
    // capped: maxRows 10, onRowCap error; orders has 500 rows.
    const c = await connectPg(tp, await tp.token({ role: 'capped' }));
    try {
      const few = await c.query('SELECT id FROM orders WHERE id <= 3 ORDER BY id');
      expect(few.rows.map((r) => r.id)).toEqual([1, 2, 3]);
      // Same shape, other literal: served from the shared entry with its own LIMIT splice, so the cap still bites.
      const err = await pgError(() => c.query('SELECT id FROM orders WHERE id <= 300 ORDER BY id'));
      expect(err.code).toBe('54000');
      // Postgres got the capped text, with this statement's own literal (not just the wire-level cap as a backstop).
      expect(await receivedText('SELECT id FROM orders WHERE id <= 300')).toEqual([
        'SELECT id FROM orders WHERE id <= 300 ORDER BY id\nLIMIT 11',
      ]);
      const again = await c.query('SELECT id FROM orders WHERE id <= 7 ORDER BY id');
      expect(again.rows).toHaveLength(7);
    } finally {
      await c.end();
    }
  });

  it('a LIMIT value is read by the decision: a small LIMIT allowed first does not let a large one through', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'capped' }));
    try {
      expect((await c.query('SELECT id FROM orders ORDER BY id LIMIT 5')).rows).toHaveLength(5);
      const err = await pgError(() => c.query('SELECT id FROM orders ORDER BY id LIMIT 500'));
      expect(err.code).toBe('54000');
      // Postgres never saw LIMIT 500: the statement was decided on its own text and rewritten to the cap.
      const seen = await receivedText('SELECT id FROM orders ORDER BY id');
      expect(seen).toHaveLength(1);
      expect(seen[0]).not.toContain('500');
      expect(seen[0]).toMatch(/LIMIT 11\b/);
      // The same in the extended protocol, where the LIMIT is a literal of the Parse text.
      expect(
        (await c.query({ text: 'SELECT id FROM orders WHERE id > $1 ORDER BY id LIMIT 4', values: [0] })).rows,
      ).toHaveLength(4);
      const err2 = await pgError(() =>
        c.query({ text: 'SELECT id FROM orders WHERE id > $1 ORDER BY id LIMIT 400', values: [0] }),
      );
      expect(err2.code).toBe('54000');
    } finally {
      await c.end();
    }
  });

  it('current_setting of a display setting does not open current_setting of another one', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'capped' }));
    try {
      expect((await c.query(`SELECT current_setting('TimeZone') AS d`)).rows).toHaveLength(1);
      // Postgres would answer this one for the upstream role (no superuser needed), so only pgwarden refuses it.
      const err = await pgError(() => c.query(`SELECT current_setting('listen_addresses') AS d`));
      expect(err.code).toBe('42501');
      expect(err.message).toContain('listen_addresses');
      // Text the literal scanner gives up on (a comment) is decided by its exact text, and still refused.
      const err2 = await pgError(() => c.query(`SELECT current_setting(/* x */ 'listen_addresses') AS d`));
      expect(err2.code).toBe('42501');
    } finally {
      await c.end();
    }
  });

  it('a reg* cast is decided on its literal: an allowed-looking shape never resolves another name', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'capped' }));
    try {
      // capped has no catalog access, so reg* casts are refused whatever the name; the refusal must not be
      // replaced by a shared allow of the same shape.
      const err = await pgError(() => c.query(`SELECT 'public.orders'::regclass::oid AS o`));
      expect(err.code).toBe('42501');
      const err2 = await pgError(() => c.query(`SELECT 'public.secrets'::regclass::oid AS o`));
      expect(err2.code).toBe('42501');
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
  });

  it('statements that look alike but touch another relation are never shared', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'capped' }));
    try {
      expect((await c.query('SELECT id FROM orders WHERE id = 1')).rows).toHaveLength(1);
      const err = await pgError(() => c.query('SELECT id FROM secrets WHERE id = 1'));
      expect(err.code).toBe('42501');
      const err2 = await pgError(() => c.query('SELECT id FROM "secrets" WHERE id = 2'));
      expect(err2.code).toBe('42501');
    } finally {
      await c.end();
    }
  });

  it('the audit trail records literals as $n for statements served from the shared entry', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'capped', agent: 'cache-audit-probe' }));
    try {
      await c.query('SELECT id FROM orders WHERE id = 424242');
      await c.query('SELECT id FROM orders WHERE id = 434343');
    } finally {
      await c.end();
    }
    // session_end flushes the batch of statement events; the file write itself is asynchronous.
    let lines: Record<string, unknown>[] = [];
    for (let i = 0; i < 100; i++) {
      lines = auditLines()
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((e) => e['agent'] === 'cache-audit-probe' && e['event'] === 'statement');
      if (lines.length >= 2) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(lines.map((e) => e['sql'])).toEqual([
      'SELECT id FROM orders WHERE id = $1',
      'SELECT id FROM orders WHERE id = $1',
    ]);
    expect(auditLines().join('\n')).not.toMatch(/42424|43434/);
  });
});
