// Unqualified names judged as the session's temporary relations (SessionView.deferTemporary): only in statements whose relations PostgreSQL's analysis resolves.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { planServerAnalysis } from '../../../policy/server-plan.ts';
import { DEFERRABLE_KINDS } from '../../../policy/analyze.ts';
import { CATALOG, ROLES, makeRole, sessionFor } from '../../fixtures/catalog.ts';
import type { RolePolicy, SessionView } from '../../../policy/types.ts';

/** writer with temporary objects and TRUNCATE; public.customers it may read but not write. */
const temp: RolePolicy = makeRole({
  ...ROLES.writer,
  name: 'temp',
  write: { kinds: ['insert', 'update', 'delete', 'truncate'], relations: ROLES.writer.write?.relations ?? [] },
  ddl: { kinds: ['create_table', 'drop'], schemas: [], temporary: true },
  lock: true,
});
const deferring: SessionView = { ...sessionFor(temp), tempObjects: true, deferTemporary: true };

beforeAll(async () => {
  await initParser();
});

describe('deferTemporary', () => {
  it('takes an unqualified name as pg_temp in a statement the server analyses', () => {
    const d = evaluate('SELECT * FROM customers; DELETE FROM customers', 'simple', deferring, CATALOG);
    expect(d.allow).toBe(true);
    expect(d.statements.flatMap((s) => s.relations)).toEqual(['pg_temp.customers', 'pg_temp.customers']);
  });

  it('never in one the server does not analyse: TRUNCATE customers is the permanent relation, refused', () => {
    const d = evaluate('TRUNCATE customers; SELECT 1', 'simple', deferring, CATALOG);
    expect(d.allow).toBe(false);
    // Written pg_temp.x, it can be nothing else.
    expect(evaluate('TRUNCATE pg_temp.customers; SELECT 1', 'simple', deferring, CATALOG).allow).toBe(true);
  });

  it('every deferrable kind is one server-plan.ts gives a text for the statement', () => {
    const samples: Record<string, string> = {
      SelectStmt: 'SELECT * FROM t',
      InsertStmt: 'INSERT INTO t VALUES (1)',
      UpdateStmt: 'UPDATE t SET a = 1',
      DeleteStmt: 'DELETE FROM t',
      MergeStmt: 'MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE',
      ExplainStmt: 'EXPLAIN SELECT * FROM t',
      DeclareCursorStmt: 'DECLARE c CURSOR FOR SELECT * FROM t',
      PrepareStmt: 'PREPARE p AS SELECT * FROM t',
      CopyStmt: 'COPY t TO STDOUT',
      LockStmt: 'LOCK t',
      CreateTableAsStmt: 'CREATE TEMP TABLE n AS SELECT * FROM t',
      ViewStmt: 'CREATE TEMP VIEW n AS SELECT * FROM t',
    };
    expect(Object.keys(samples).sort()).toEqual([...DEFERRABLE_KINDS].sort());
    for (const [kind, sql] of Object.entries(samples)) {
      const plan = planServerAnalysis(sql, []);
      expect(plan.ok && plan.texts.length > 0, kind).toBe(true);
    }
    // The body's names are what the server resolves there; the new object's own name is never taken as temporary.
    const ctas = evaluate('CREATE TABLE n AS SELECT * FROM orders', 'simple', deferring, CATALOG);
    expect(ctas).toMatchObject({ allow: false, reason: 'ddl_denied' });
    const truncate = planServerAnalysis('TRUNCATE t', []);
    expect(truncate.ok && truncate.texts.length).toBe(0);
  });
});
