// replayPlan / analysableInOrder: which texts the session's own connection can analyse before any of their statements runs, and which earlier DDL it runs first (a change it cannot run, before an analysed statement: not at all).
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser, parseStatements } from '../../../policy/parser.ts';
import type { Decision } from '../../../policy/types.ts';
import { analysableInOrder, replayPlan } from '../../../proxy/session/server-check.ts';

/** An allowed decision whose statements are those of `sql` (only their kinds matter here). */
function allowed(sql: string): Extract<Decision, { allow: true }> {
  const parsed = parseStatements(sql);
  if (!parsed.ok) throw new Error('did not parse');
  return {
    allow: true,
    ruleId: 'test',
    statements: parsed.stmts.map((s) => ({
      kind: Object.keys((s.stmt ?? {}) as object)[0] ?? '',
      relations: [],
      columns: [],
      functions: [],
    })),
    rewrittenSql: undefined,
    rowCap: undefined,
    effects: [],
    shadowDenied: undefined,
  };
}

beforeAll(async () => {
  await initParser();
});

describe('analysableInOrder', () => {
  it.each([
    ['SELECT * FROM t', true],
    ['BEGIN; INSERT INTO t VALUES (1); SELECT * FROM t; COMMIT', true],
    ['SAVEPOINT a; SELECT * FROM t; RELEASE a', true],
    ['SELECT * FROM t; DROP TABLE pg_temp.t', true],
    ['TRUNCATE t; SELECT * FROM t', true],
    ['DROP TABLE pg_temp.secrets; SELECT * FROM secrets', true],
    ['DISCARD TEMP; SELECT * FROM secrets', false],
    ['ROLLBACK; SELECT * FROM secrets', false],
    ['ROLLBACK TO SAVEPOINT a; SELECT * FROM secrets', false],
    ['COMMIT; SELECT * FROM secrets', false],
    ['CREATE TEMP TABLE x (a int); INSERT INTO x VALUES (1)', true],
    ['ALTER TABLE pg_temp.t RENAME TO u; SELECT * FROM t', true],
    ['CREATE TEMP TABLE x AS SELECT 1 AS a; SELECT * FROM x', false],
    ['CREATE TEMP TABLE x (a int); DISCARD TEMP; SELECT * FROM x', false],
    ['DO $$ BEGIN END $$; SELECT 1', false],
    ['SELECT 1; DROP TABLE pg_temp.t; SELECT * FROM t', true],
  ])('%s → %s', (sql, expected) => {
    expect(analysableInOrder(allowed(sql), sql)).toBe(expected);
  });
});

describe('replayPlan', () => {
  it('runs each earlier DDL statement, as written, with its offset in the text', () => {
    const sql = "SELECT 1;  CREATE TEMP TABLE é (a int); INSERT INTO é VALUES (1); DROP TABLE pg_temp.é; SELECT 'x'";
    const plan = replayPlan(allowed(sql), sql);
    expect(plan && [...plan.entries()]).toEqual([
      [1, { text: 'CREATE TEMP TABLE é (a int)', clientOffset: 11 }],
      [3, { text: 'DROP TABLE pg_temp.é', clientOffset: sql.indexOf('DROP') }],
    ]);
    expect(replayPlan(allowed('SELECT 1'), 'SELECT 1')?.size).toBe(0);
  });
});
