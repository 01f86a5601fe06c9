// The StatementGate sessions use: the policy store's current policy and catalog, evaluate(), and a decision cache.
import { LRUCache } from 'lru-cache';
import type { Decision, SessionView } from '../../policy/types.ts';
import { evaluateWithFacts, judgeParameterTypes } from '../../policy/evaluate.ts';
import type { PolicyStore } from '../../policy/store.ts';
import type { StatementGate } from './gate.ts';

export function createPolicyGate(
  store: PolicyStore,
  opts: { cacheSize?: number; onLookup?: (hit: boolean) => void } = {},
): StatementGate {
  // Key: policy version, role, mode and the exact SQL. A reload bumps the version, so stale entries are never read.
  const cache = new LRUCache<string, Decision>({ max: opts.cacheSize ?? 10_000 });
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
      if (paramTypes !== undefined && paramTypes.some((oid) => oid !== 0)) {
        const refused = judgeParameterTypes(paramTypes, { ...view, role }, catalog);
        if (refused !== undefined) return refused;
      }
      const key = `${policy.version}\u0000${role.name}\u0000${mode}\u0000${sql}`;
      const hit = cache.get(key);
      if (hit) {
        opts.onLookup?.(true);
        return hit;
      }
      opts.onLookup?.(false);
      // evaluate() reports whether the decision read session state (prepared names, cursors); those are never cached.
      const { decision, sessionDependent } = evaluateWithFacts(sql, mode, { ...view, role }, catalog, policy.version);
      if (!sessionDependent) cache.set(key, decision);
      return decision;
    },
  };
}
