// The server check on big analysed trees (read and walked in slices): the same verdict as for a small tree of the same content, the event loop turning meanwhile, and trees in flight together each judged on its own.
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { COOPERATIVE_READ_BYTES } from '../../../policy/pgnode.ts';
import { initParser } from '../../../policy/parser.ts';
import type { Decision, RolePolicy } from '../../../policy/types.ts';
import { ServerChecker } from '../../../proxy/session/server-check.ts';
import type { AnalysisPool, TreeResult } from '../../../proxy/upstream/analysis.ts';
import { makeRole } from '../../fixtures/catalog.ts';

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
const ctx = { dbRole: undefined, searchPath: ['public'], display: {} };

/** A checker whose analysis connection answers every statement with the tree `treeFor(sql)` gives. */
function checker(treeFor: (sql: string) => string): ServerChecker {
  const conn = { parseTree: async (sql: string): Promise<TreeResult> => ({ ok: true, tree: treeFor(sql) }) };
  const pool = { connection: async () => conn } as unknown as AnalysisPool;
  return new ServerChecker({ pool, log: pino({ level: 'silent' }), ttlMs: 60_000 });
}

/** A Query tree holding `n` nodes of a type the server analysis does not know (no OIDs, so no catalog look-ups). */
const queryWith = (type: string, n: number): string =>
  `{QUERY :commandType 1 :rtable <> :targetList (${`{${type} :a 1 :location 7} `.repeat(n)})}`;

beforeAll(async () => {
  await initParser();
});

describe('server check of big trees', () => {
  it('a big tree gets the verdict a small one of the same content gets, and the event loop turns while it is read', async () => {
    const big = queryWith('WIDGET', 20_000);
    expect(big.length).toBeGreaterThan(10 * COOPERATIVE_READ_BYTES);
    const small = queryWith('WIDGET', 3);
    expect(small.length).toBeLessThan(COOPERATIVE_READ_BYTES);
    const chk = checker((sql) => (sql.includes('big') ? big : small));
    let turns = 0;
    let ticking = true;
    const tick = (): void => {
      turns++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const [vBig, vSmall] = await Promise.all([
      chk.check("SELECT id FROM orders WHERE status = 'big'", [], role, ctx, local),
      chk.check("SELECT id FROM orders WHERE status = 'small'", [], role, ctx, local),
    ]);
    ticking = false;
    expect(vBig.deny?.reason).toBe('analysis_failed');
    expect(vBig.deny?.detail).toContain('WIDGET');
    expect({ ...vBig.deny, statements: undefined }).toEqual({ ...vSmall.deny, statements: undefined });
    // Other callbacks ran between the slices (reading 20,000 nodes takes well over one 3 ms slice).
    expect(turns).toBeGreaterThan(2);
  });

  it('big trees in flight together are each judged on their own; a malformed big tree fails closed as a small one does', async () => {
    const trees: Record<string, string> = {
      a: queryWith('ALPHA', 10_000),
      b: queryWith('BETA', 12_000),
      // Cut in the middle of a node: the reader's error, a refusal.
      broken: queryWith('GAMMA', 10_000).slice(0, 200_000),
      brokenSmall: queryWith('GAMMA', 10).slice(0, 200),
    };
    const chk = checker((sql) => trees[/'(\w+)'/.exec(sql)?.[1] ?? ''] as string);
    const [a, b, broken, brokenSmall] = await Promise.all(
      ['a', 'b', 'broken', 'brokenSmall'].map((k) =>
        chk.check(`SELECT id FROM orders WHERE status = '${k}'`, [], role, ctx, local),
      ),
    );
    expect(a?.deny?.detail).toContain('ALPHA');
    expect(a?.deny?.detail).not.toContain('BETA');
    expect(b?.deny?.detail).toContain('BETA');
    expect(b?.deny?.detail).not.toContain('ALPHA');
    expect(broken?.deny?.reason).toBe('analysis_failed');
    expect(broken?.deny?.detail).toContain('not closed');
    expect({ ...broken?.deny, detail: undefined, statements: undefined }).toEqual({
      ...brokenSmall?.deny,
      detail: undefined,
      statements: undefined,
    });
  });
});
