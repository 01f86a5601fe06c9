// LIMIT capping: the rewritten SQL carries min(limit, maxRows + 1), re-parses, and is re-checked.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser, parseStatements } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { cappedLimit } from '../../../policy/rowcap.ts';
import { CATALOG, ROLES, makeRole, sessionFor } from '../../fixtures/catalog.ts';

const capped = () => sessionFor(ROLES.capped, ['p'], ['c']); // maxRows 100 → LIMIT 101

function rewrite(sql: string, mode: 'simple' | 'parse' = 'simple'): string | undefined {
  const d = evaluate(sql, mode, capped(), CATALOG);
  expect(d.allow, d.allow ? '' : d.message).toBe(true);
  if (!d.allow) return undefined;
  expect(d.rowCap).toEqual({ maxRows: 100, onRowCap: 'truncate' });
  return d.rewrittenSql;
}

beforeAll(async () => {
  await initParser();
});

describe('LIMIT rewrite', () => {
  it.each([
    [
      'SELECT abalance FROM pgbench_accounts WHERE aid = 123',
      'SELECT abalance FROM pgbench_accounts WHERE aid = 123\nLIMIT 101',
    ],
    [
      'SELECT abalance FROM pgbench_accounts WHERE aid = $1',
      'SELECT abalance FROM pgbench_accounts WHERE aid = $1\nLIMIT 101',
    ],
    ['SELECT id FROM orders LIMIT 1000', 'SELECT id FROM orders LIMIT 101'],
    ['SELECT id FROM orders LIMIT ALL', 'SELECT id FROM orders LIMIT 101'],
    ['SELECT id FROM orders LIMIT NULL', 'SELECT id FROM orders LIMIT 101'],
    ['SELECT id FROM orders LIMIT $1', 'SELECT id FROM orders LIMIT LEAST($1, 101)'],
    ['SELECT id FROM orders LIMIT 10 + 1000', 'SELECT id FROM orders LIMIT LEAST(10 + 1000, 101)'],
    ['SELECT id FROM orders OFFSET 5', 'SELECT id FROM orders OFFSET 5\nLIMIT 101'],
    ['SELECT id FROM orders ORDER BY id FETCH FIRST 500 ROWS ONLY', 'SELECT id FROM orders ORDER BY id LIMIT 101'],
    [
      'SELECT id FROM orders UNION ALL SELECT order_id FROM order_items',
      'SELECT id FROM orders UNION ALL SELECT order_id FROM order_items\nLIMIT 101',
    ],
    [
      'SELECT id FROM orders UNION SELECT order_id FROM order_items ORDER BY 1 LIMIT 5000',
      'SELECT id FROM orders UNION SELECT order_id FROM order_items ORDER BY 1 LIMIT 101',
    ],
    ['VALUES (1), (2)', 'VALUES (1), (2)\nLIMIT 101'],
    ['TABLE orders', 'TABLE orders\nLIMIT 101'],
    [
      'WITH t AS (SELECT id FROM orders) SELECT id FROM t',
      'WITH t AS (SELECT id FROM orders) SELECT id FROM t\nLIMIT 101',
    ],
    ['SELECT 1; SELECT 2 LIMIT 5', 'SELECT 1 LIMIT 101;\nSELECT 2 LIMIT 5'],
  ])('%s', (sql, expected) => {
    expect(rewrite(sql)).toBe(expected);
  });

  it.each([
    ['SELECT id FROM orders LIMIT 0'],
    ['SELECT id FROM orders LIMIT 101'],
    ['SELECT id FROM orders LIMIT 50 OFFSET 1000'],
    ['SELECT id FROM orders ORDER BY id FETCH FIRST 500 ROWS WITH TIES'],
    ['SELECT id FROM orders LIMIT LEAST($1, 5)'],
    ['SHOW TimeZone'],
    ['BEGIN'],
    ['EXPLAIN SELECT id FROM orders'],
    ['FETCH 1000 FROM c'],
  ])('no rewrite: %s', (sql) => {
    expect(rewrite(sql)).toBeUndefined();
  });

  it('LIMIT 0 is { A_Const: { ival: {} } } and is left alone', () => {
    const p = parseStatements('SELECT 1 LIMIT 0');
    expect(p.ok).toBe(true);
    if (!p.ok) return;
    const sel = (p.stmts[0]!.stmt as { SelectStmt: Record<string, unknown> }).SelectStmt;
    expect(sel.limitCount).toMatchObject({ A_Const: { ival: {} } });
    expect(cappedLimit(sel, 101)).toBeUndefined();
  });

  it('the rewritten SQL is itself allowed and reads the same relations', () => {
    const d = evaluate(
      'SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer_id',
      'simple',
      capped(),
      CATALOG,
    );
    expect(d.allow).toBe(true);
    if (!d.allow || d.rewrittenSql === undefined) throw new Error('expected a rewrite');
    const again = evaluate(d.rewrittenSql, 'simple', capped(), CATALOG);
    expect(again.allow).toBe(true);
    expect(again.statements[0]?.relations.sort()).toEqual(d.statements[0]?.relations.sort());
    expect(again.allow && again.rewrittenSql).toBeUndefined();
  });

  it('non-ASCII text keeps the untouched statements byte-exact', () => {
    expect(rewrite("SELECT 'é' LIMIT 1; SELECT 'ü'")).toBe("SELECT 'é' LIMIT 1;\nSELECT 'ü' LIMIT 101");
  });

  it('parse mode rewrites the single statement', () => {
    expect(rewrite('SELECT id FROM orders WHERE id = $1', 'parse')).toBe(
      'SELECT id FROM orders WHERE id = $1\nLIMIT 101',
    );
  });

  it('no rowCap and no rewrite without maxRows; error mode is passed through', () => {
    const d = evaluate('SELECT id FROM orders', 'simple', sessionFor(ROLES.analyst), CATALOG);
    expect(d.allow && d.rowCap).toBeUndefined();
    expect(d.allow && d.rewrittenSql).toBeUndefined();
    const e = evaluate(
      'SELECT id FROM orders',
      'simple',
      sessionFor(makeRole({ maxRows: 10, onRowCap: 'error' })),
      CATALOG,
    );
    expect(e.allow && e.rowCap).toEqual({ maxRows: 10, onRowCap: 'error' });
    expect(e.allow && e.rewrittenSql).toBe('SELECT id FROM orders\nLIMIT 11');
  });
});

describe('cursor caps', () => {
  it('a cursor query is capped at maxRows exactly: FETCHes cannot page past it', () => {
    expect(rewrite('DECLARE c CURSOR FOR SELECT id FROM orders')).toBe(
      'DECLARE c CURSOR FOR SELECT id FROM orders LIMIT 100',
    );
    // A read-only role needs holdCursors for WITH HOLD at all.
    const held = evaluate(
      'DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT id FROM orders LIMIT ALL',
      'simple',
      sessionFor({ ...ROLES.capped, holdCursors: 1 }, ['p'], ['c']),
      CATALOG,
    );
    expect(held.allow && held.rewrittenSql).toBe(
      'DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT id FROM orders LIMIT 100',
    );
    expect(rewrite('DECLARE c CURSOR FOR SELECT id FROM orders LIMIT 7')).toBeUndefined();
  });

  it('a FETCH may follow its DECLARE in the same Query, but not precede it', () => {
    const none = sessionFor(ROLES.capped, [], []);
    const d = evaluate('BEGIN; DECLARE k CURSOR FOR SELECT id FROM orders; FETCH 10 FROM k', 'simple', none, CATALOG);
    expect(d.allow).toBe(true);
    expect(evaluate('FETCH 10 FROM k; DECLARE k CURSOR FOR SELECT id FROM orders', 'simple', none, CATALOG).allow).toBe(
      false,
    );
    expect(evaluate('PREPARE q AS SELECT id FROM orders; EXECUTE q', 'simple', none, CATALOG).allow).toBe(true);
  });
});

describe('LIMIT splice (no deparse)', () => {
  it('appends after a newline, so a trailing line comment cannot swallow the limit', () => {
    expect(rewrite('SELECT id FROM orders -- all of them')).toBe('SELECT id FROM orders -- all of them\nLIMIT 101');
    expect(rewrite('SELECT id FROM orders;  ')).toBe('SELECT id FROM orders\nLIMIT 101');
  });

  it('falls back to the deparser whenever the spliced text would not be the same tree plus a limit', () => {
    // Existing limits, multi-statement text and FOR … clauses take the deparse path and are still capped.
    expect(rewrite('SELECT id FROM orders LIMIT 5000')).toBe('SELECT id FROM orders LIMIT 101');
    expect(rewrite('SELECT 1; SELECT id FROM orders')).toBe('SELECT 1 LIMIT 101;\nSELECT id FROM orders LIMIT 101');
  });
});
