// The StatementGate sessions use: the policy store's current policy and catalog, the decision cache in front of evaluate(), and PostgreSQL's own analysis behind it.
import type { Decision, RolePolicy, SessionView } from '../../policy/types.ts';
import { judgeParameterTypes } from '../../policy/evaluate.ts';
import { DecisionCache, type DecisionSlot } from '../../policy/normalize.ts';
import type { PolicyStore } from '../../policy/store.ts';
import type { StatementGate } from './gate.ts';
import { needsServerAnalysis, type ServerChecker, type ServerVerdict } from './server-check.ts';

type Allow = Extract<Decision, { allow: true }>;

/** Both analyses must allow; in shadow mode the server's refusal is reported, not enforced. */
function combine(local: Allow, v: ServerVerdict, role: RolePolicy): Decision {
  if (v.deny === undefined) return local;
  if (role.mode === 'shadow') return { ...local, shadowDenied: { reason: v.deny.reason, message: v.deny.message } };
  return v.deny;
}

/** Asks the server and keeps the verdict in the entry's slot; concurrent misses of the entry wait for this one. */
function analyse(
  server: ServerChecker,
  slot: DecisionSlot,
  paramKey: string,
  sql: string,
  paramTypes: readonly number[] | undefined,
  role: RolePolicy,
  decision: Allow,
): Promise<ServerVerdict> {
  const map = (slot.server ??= new Map());
  const pending: Promise<ServerVerdict> = server.check(sql, paramTypes ?? [], role, { dbRole: role.dbRole, searchPath: role.searchPath, display: {} }, decision).then((verdict) => {
    if (map.get(paramKey) === pending) {
      // Kept (for every text of the entry, or for its own text when it read a constant's value) unless it is a
      // failure to analyse, which is never kept.
      if (verdict.expires > 0) map.set(paramKey, verdict);
      else map.delete(paramKey);
    }
    return verdict;
  });
  map.set(paramKey, pending);
  return pending;
}

export function createPolicyGate(
  store: PolicyStore,
  opts: { cacheSize?: number; onLookup?: (hit: boolean) => void; server?: ServerChecker } = {},
): StatementGate {
  // Keyed by policy version, role, mode and the SQL (exact, then literal-normalised): a reload bumps the version, so
  // stale entries are never read, and a new catalog snapshot empties it.
  const cache = new DecisionCache({ max: opts.cacheSize ?? 10_000 });
  const server = opts.server;
  return {
    get version() {
      return store.current.policy.version;
    },
    role(name) {
      return store.current.policy.roles.get(name);
    },
    decide(sql: string, mode: 'simple' | 'parse', view: SessionView, paramTypes?: readonly number[]): Decision | Promise<Decision> {
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
      const { decision, slot } = cache.lookup(sql, mode, current, catalog, policy.version);
      opts.onLookup?.(cache.stats.misses === misses);
      if (server === undefined || !decision.allow || !needsServerAnalysis(decision)) return decision;
      const paramKey = paramTypes === undefined || paramTypes.length === 0 ? '' : paramTypes.join(',');
      // The hit path first and without allocating: a closure per decision costs more than the lookup.
      const v = server.cached(slot.server, paramKey, sql);
      if (v !== undefined) return combine(decision, v, role);
      const held = slot.server?.get(paramKey);
      if (held instanceof Promise) {
        // One analysis per entry at a time: a concurrent miss waits for it, and asks again if it held for another text only.
        return (held as Promise<ServerVerdict>)
          .then((w) => (w.sql !== undefined && w.sql !== sql ? analyse(server, slot, paramKey, sql, paramTypes, role, decision) : w))
          .then((w) => combine(decision, w, role));
      }
      return analyse(server, slot, paramKey, sql, paramTypes, role, decision).then((w) => combine(decision, w, role));
    },
  };
}
