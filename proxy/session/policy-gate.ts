// The StatementGate sessions use: the policy store's current policy and catalog, and the decision cache in front of evaluate().
import type { Decision, SessionView } from '../../policy/types.ts';
import { judgeParameterTypes } from '../../policy/evaluate.ts';
import { DecisionCache } from '../../policy/normalize.ts';
import type { PolicyStore } from '../../policy/store.ts';
import type { StatementGate } from './gate.ts';

export function createPolicyGate(
  store: PolicyStore,
  opts: { cacheSize?: number; onLookup?: (hit: boolean) => void } = {},
): StatementGate {
  // Keyed by policy version, role, mode and the SQL (exact, then literal-normalised): a reload bumps the version, so
  // stale entries are never read, and a new catalog snapshot empties it.
  const cache = new DecisionCache({ max: opts.cacheSize ?? 10_000 });
  return {
    get version() {
      return store.current.policy.version;
    },
    role(name) {
      return store.current.policy.roles.get(name);
    },
    decide(sql: string, mode: 'simple' | 'parse', view: SessionView, paramTypes?: readonly number[]): Decision {
      // One read of the store per decision: policy and catalog come from the same swap.
      const { policy, catalog } = store.current;
      // The session's role object may predate a reload; decide with the role as the policy now defines it.
      const role = policy.roles.get(view.role.name);
      if (!role) {
        return {
          allow: false,
          ruleId: undefined,
          sqlstate: '42501',
          message: `permission denied by pgwarden: role "${view.role.name}" no longer exists in the policy`,
          detail: undefined,
          hint: 'reconnect with a token for a role defined in the current policy',
          reason: 'role_removed',
          statements: [],
        };
      }
      const current = view.role === role ? view : { ...view, role };
      if (paramTypes !== undefined && paramTypes.some((oid) => oid !== 0)) {
        const refused = judgeParameterTypes(paramTypes, current, catalog);
        if (refused !== undefined) return refused;
      }
      const misses = cache.stats.misses;
      const decision = cache.decide(sql, mode, current, catalog, policy.version);
      opts.onLookup?.(cache.stats.misses === misses);
      return decision;
    },
  };
}
