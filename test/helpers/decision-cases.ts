// Tables of policy decisions (role, SQL, allow or deny, and the rule or reason), each family a describe block of cases.
import { describe, expect, it } from 'vitest';
import { evaluate } from '../../policy/evaluate.ts';
import type { CatalogSnapshot, RolePolicy } from '../../policy/types.ts';
import { sessionFor } from '../fixtures/catalog.ts';

/** A case: the role's key, the SQL (simple protocol), what pgwarden decides, and for a refusal its reason (or the allowing rule). */
export type DecisionCase<R extends string> = readonly [R, string, 'allow' | 'deny', string?];

/** One `describe` per family, one test per case; every refusal is 42501. */
export function decisionFamilies<R extends string>(
  families: Record<string, readonly DecisionCase<R>[]>,
  roles: Record<R, RolePolicy>,
  catalog: CatalogSnapshot,
): void {
  for (const [family, cases] of Object.entries(families)) {
    describe(family, () => {
      it.each(cases.map((c) => [...c]))('%s: %s → %s', (role, sql, expected, why) => {
        const d = evaluate(sql, 'simple', sessionFor(roles[role as R]), catalog);
        const got = d.allow ? 'allow' : 'deny';
        expect(got, d.allow ? 'allowed' : `${d.reason}: ${d.message} / ${d.detail}`).toBe(expected);
        if (why !== undefined) expect(d.allow ? d.ruleId : d.reason).toBe(why);
        if (!d.allow) expect(d.sqlstate).toBe('42501');
      });
    });
  }
}
