// The StatementGate sessions use: the policy store's current policy and catalog, the decision cache in front of evaluate(), and PostgreSQL's own analysis behind it.
//
// Long statements (more than `offloadAboveBytes`) that miss the cache are decided on a worker thread (decide-pool.ts)
// by the same evaluate(), and the session waits for that answer as it waits for a server analysis: the event loop
// stays free for every other session whatever one of them sends. Shorter ones are decided here, synchronously.
import type { Decision, RolePolicy, SessionView } from '../../policy/types.ts';
import { judgeParameterTypes } from '../../policy/param-types.ts';
import { CacheMiss, DecisionCache, DEFAULT_CACHE_BYTES, type DecisionSlot } from '../../policy/decision-cache.ts';
import { DEFAULT_PARSER_LIMITS, currentParserLimits } from '../../policy/parser.ts';
import type { PolicyStore } from '../../policy/store.ts';
import type { OwnAnalysis, StatementGate } from './gate.ts';
import { DecidePool, failedRefusal, type DecidePoolOptions } from './decide-pool.ts';
import {
  analysableInOrder,
  needsServerAnalysis,
  type AnalysisPlanner,
  type ServerChecker,
  type ServerVerdict,
} from './server-check.ts';
import { CATALOG_CHANGING_KINDS } from '../../policy/ddl.ts';
import { CatalogFollower, type CatalogFollowOptions } from './catalog-follow.ts';
import { SqlState } from '../../lib/sqlstate.ts';
import { effectiveRole } from '../../policy/narrow.ts';

/**
 * Statements longer than this (UTF-16 units, a lower bound of their UTF-8 bytes) are decided on a worker. It is the
 * parser's nesting pre-screen threshold: below it no text can reach the expensive scan, and parsing and deciding the
 * worst 4 KiB text costs about 10 ms; at 32 KiB a hostile text costs over 100 ms (bench/RESULTS.md, "Hostile statements").
 */
export const DEFAULT_OFFLOAD_ABOVE = DEFAULT_PARSER_LIMITS.screenAboveBytes;

type Allow = Extract<Decision, { allow: true }>;

/** UTF-8 length of `sql` above `bytes`, measured only when the UTF-16 length cannot tell. */
function longerThan(sql: string, bytes: number): boolean {
  if (sql.length > bytes) return true;
  if (sql.length * 3 <= bytes) return false;
  return Buffer.byteLength(sql, 'utf8') > bytes;
}

/** Both analyses must allow; in shadow mode the server's refusal is reported, not enforced. */
function combine(local: Allow, v: ServerVerdict, role: RolePolicy): Decision {
  if (v.deny === undefined) return local;
  if (role.mode === 'shadow') return { ...local, shadowDenied: { reason: v.deny.reason, message: v.deny.message } };
  return v.deny;
}

/**
 * Refusals over a relation that a temporary relation of the session could be behind (an unqualified name is looked
 * up in pg_temp first): for a session with temporary objects, such a statement is judged again with its unqualified
 * names as temporary relations, and PostgreSQL's analysis on the session's own connection tells what they are.
 */
const DEFERRABLE_REASONS = new Set(['unknown_relation', 'relation_not_allowed', 'undefined_relation', 'column_denied']);

/** A refusal over an unknown relation, confirmed absent by a fresh catalog read: PostgreSQL's own 42P01. */
function undefinedTable(
  x: Extract<Decision, { allow: false }>,
  absent: NonNullable<Extract<Decision, { allow: false }>['confirmAbsent']>,
): Decision {
  const { confirmAbsent: _, position: __, ...rest } = x;
  return {
    ...rest,
    sqlstate: SqlState.UndefinedTable,
    reason: 'undefined_relation',
    message: absent.message,
    detail: absent.detail,
    hint: undefined,
    ...(absent.position === undefined ? {} : { position: absent.position }),
  };
}

/** The OwnMemo key of a statement: policy version, role (and its narrowing), protocol mode, parameter types, text. */
function memoKey(
  version: number,
  mode: string,
  role: RolePolicy,
  paramTypes: readonly number[] | undefined,
  sql: string,
): string {
  return `${version}\u0000${role.name}\u0000${role.narrowing?.digest ?? ''}\u0000${mode}\u0000${paramTypes?.join(',') ?? ''}\u0000${sql}`;
}

/** The unqualified names a decision made with deferTemporary took as the session's temporary relations. */
function temporaryNamesOf(d: Decision): string[] {
  const out = new Set<string>();
  for (const st of d.statements) for (const r of st.relations) if (r.startsWith('pg_temp.')) out.add(r.slice(8));
  return [...out];
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
  planner: AnalysisPlanner | undefined,
  sessionPid: number | undefined,
): Promise<ServerVerdict> {
  const map = (slot.server ??= new Map());
  const pending: Promise<ServerVerdict> = server
    .check(
      sql,
      paramTypes ?? [],
      role,
      { dbRole: role.dbRole, searchPath: role.searchPath, display: {}, sessionPid },
      decision,
      planner,
    )
    .then((verdict) => {
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

export interface PolicyGateOptions {
  /** Decision cache entries (per map, default 10,000). */
  cacheSize?: number;
  /** Decision cache bytes (default 64 MiB; limits.decisionCacheBytes). */
  cacheBytes?: number;
  onLookup?: (hit: boolean) => void;
  server?: ServerChecker;
  /** Statements longer than this are decided on a worker thread (default 4096); Infinity decides everything here. */
  offloadAboveBytes?: number;
  /** The worker pool's bounds (decide-pool.ts), or a pool to use. */
  pool?: DecidePool | DecidePoolOptions;
  /**
   * Reads the catalog again after scoped DDL before refusing what it may explain (catalog-follow.ts): its bounds, or
   * false to decide against the snapshot as loaded until the next reload.
   */
  followCatalog?: false | Omit<CatalogFollowOptions, 'refresh'>;
}

/** A StatementGate that can also be closed: close() ends its decide workers. */
export interface PolicyGate extends StatementGate {
  close(): Promise<void>;
  /** The decide pool, once a long statement has made one (for metrics and tests). */
  readonly pool: DecidePool | undefined;
}

export function createPolicyGate(store: PolicyStore, opts: PolicyGateOptions = {}): PolicyGate {
  // Keyed by policy version, role, mode and the SQL (exact, then literal-normalised): a reload bumps the version, so
  // stale entries are never read, and a new catalog snapshot empties it.
  const cache = new DecisionCache({ max: opts.cacheSize ?? 10_000, maxBytes: opts.cacheBytes ?? DEFAULT_CACHE_BYTES });
  const server = opts.server;
  const offloadAbove = opts.offloadAboveBytes ?? DEFAULT_OFFLOAD_ABOVE;
  // Made on the first long statement, so a proxy that never sees one never starts a thread.
  let pool: DecidePool | undefined = opts.pool instanceof DecidePool ? opts.pool : undefined;
  const poolOptions = opts.pool instanceof DecidePool ? undefined : opts.pool;
  const getPool = (): DecidePool => (pool ??= new DecidePool({ parserLimits: currentParserLimits(), ...poolOptions }));
  const follower =
    opts.followCatalog === false
      ? undefined
      : new CatalogFollower({ ...opts.followCatalog, refresh: async () => (await store.refreshCatalog()).ok });
  // The server analysis parses an allowed text again to cut it into statements: a long one is cut on a worker too.
  const workerPlanner: AnalysisPlanner = (text, types) =>
    getPool()
      .plan(text, types)
      .then((a) => (a.ok ? a.plan : { refused: a.decision }));
  const plannerFor = (sql: string): AnalysisPlanner | undefined =>
    longerThan(sql, offloadAbove) ? workerPlanner : undefined;

  /**
   * PostgreSQL's analysis on the session's own connection: never cached (it holds for this session at this point only).
   * Undefined when it cannot run there (no connection offered, or an earlier statement of the same text may change
   * what this one resolves to before it runs).
   */
  const onOwn = (
    decision: Allow,
    sql: string,
    role: RolePolicy,
    paramTypes: readonly number[] | undefined,
    pid: number | undefined,
    own: OwnAnalysis | undefined,
    key: string,
  ): Promise<Decision> | undefined => {
    if (server === undefined || own === undefined) return undefined;
    const now = Date.now();
    const memo = key === '' ? undefined : own.memo;
    if (own.target === undefined) {
      // No analysis can run here (an open batch): what it allowed at an idle point since nothing changed still holds.
      const known = memo?.get(key, now);
      return known === undefined ? undefined : Promise.resolve(known);
    }
    if (!analysableInOrder(decision, sql)) return undefined;
    return server
      .check(
        sql,
        paramTypes ?? [],
        role,
        { dbRole: role.dbRole, searchPath: role.searchPath, display: {}, sessionPid: pid, own: own.target },
        decision,
        plannerFor(sql),
      )
      .then((v) => {
        const d = { ...combine(decision, v, role), analysedOn: 'session' as const };
        if (d.allow && d.shadowDenied === undefined) memo?.set(key, d, now);
        return d;
      });
  };

  /** The local decision is known: PostgreSQL's own analysis confirms what it allows. */
  const confirm = (
    decision: Decision,
    slot: DecisionSlot,
    sql: string,
    role: RolePolicy,
    paramTypes: readonly number[] | undefined,
    pid: number | undefined,
    own?: OwnAnalysis,
    key = '',
  ): Decision | Promise<Decision> => {
    // Scoped DDL (or DO) is about to change the catalog: what the server's analysis cached about it may go stale, and
    // the session's next statement must be analysed against what the DDL made (a column it added, a table it dropped).
    // DDL in a transaction block changes it for other connections only when the block commits: what they had analysed
    // meanwhile (another role's `INSERT INTO t` as public.t, before this block's new app.t, earlier on that role's
    // search_path, became visible) is forgotten then too, at the COMMIT and again at the session's next statement
    // (by then the COMMIT has run), or it would be reused for analysis.cacheTtl against the new catalog.
    const settles = follower?.note(decision, pid, sql) === true;
    if (
      server !== undefined &&
      (settles || (decision.allow && decision.statements.some((s) => CATALOG_CHANGING_KINDS.has(s.kind))))
    )
      server.invalidate();
    if (server === undefined || !decision.allow || !needsServerAnalysis(decision)) return decision;
    if (own?.required === true) {
      const there = onOwn(decision, sql, role, paramTypes, pid, own, key);
      if (there !== undefined) return there;
    }
    const separate = onSeparate(decision, slot, sql, role, paramTypes, pid);
    if (own?.target === undefined) return separate;
    // The session's own open transaction holds a lock the analysis connection would wait for (TRUNCATE, ALTER, LOCK in
    // it): its own connection can analyse the statement, since nothing there waits for itself.
    const again = (d: Decision): Decision | Promise<Decision> =>
      !d.allow && d.reason === 'analysis_self_locked'
        ? (onOwn(decision, sql, role, paramTypes, pid, own, key) ?? d)
        : d;
    return separate instanceof Promise ? separate.then(again) : again(separate);
  };

  /**
   * A statement refused over a relation, for a session with temporary objects: judged again with its unqualified names
   * as the session's temporary relations, it is allowed if PostgreSQL's analysis of it (on the session's own connection
   * where possible) allows what the names really are; otherwise the first refusal stands, so a name that is not a
   * temporary relation gets the answer it always got (and existence outside the role's relations stays hidden).
   *
   * Likewise a statement refused over a type pgwarden's snapshot does not know, for a session that may have made it
   * (DDL in its open transaction, a temporary object, or DDL earlier in the same text): judged again with such type
   * names left to PostgreSQL's analysis on the session's own connection, which resolves them as the statement will and
   * allows only a type in a schema the role may create in (server-check.ts); nowhere else, and the first refusal
   * stands word for word when that does not allow it. Both at once when the statement needs both.
   */
  const deferred = (
    refused: Extract<Decision, { allow: false }>,
    sql: string,
    mode: 'simple' | 'parse',
    view: SessionView,
    role: RolePolicy,
    catalog: typeof store.current.catalog,
    version: number,
    paramTypes: readonly number[] | undefined,
    own: OwnAnalysis | undefined,
  ): Promise<Decision> | undefined => {
    if (server === undefined) return undefined;
    // This very text may make what a later statement of it names (`CREATE TEMP TABLE t …; INSERT INTO t …`).
    const changing = refused.statements.some((st) => CATALOG_CHANGING_KINDS.has(st.kind));
    // The session has temporary objects, or this text may make one.
    const temporary = role.ddl?.temporary === true && (view.tempObjects === true || changing);
    // Its open transaction (or temporary objects) may hold DDL only its own connection sees, or this text may make it.
    const types = own !== undefined && (own.required || changing);
    if (refused.reason === 'type_denied' ? !types : !(temporary && DEFERRABLE_REASONS.has(refused.reason)))
      return undefined;
    const again = cache.lookup(
      sql,
      mode,
      { ...view, ...(temporary ? { deferTemporary: true } : {}), ...(types ? { deferTypes: true } : {}) },
      catalog,
      version,
    );
    const d = again.decision;
    if (!d.allow || !needsServerAnalysis(d)) return undefined;
    const key = `${temporary ? 't' : ''}${types ? 'y' : ''}${memoKey(version, mode, role, paramTypes, sql)}`;
    // Type names left to the server resolve only on the session's own connection (server-check.ts refuses elsewhere).
    const judged =
      onOwn(d, sql, role, paramTypes, view.backendPid, own, key) ??
      (d.deferredTypes === undefined
        ? Promise.resolve(onSeparate(d, again.slot, sql, role, paramTypes, view.backendPid))
        : undefined);
    if (judged === undefined) return undefined;
    return judged.then(async (j) => {
      const out = await judgedAgain(j, refused, d, own);
      // What confirm() does for a decision it is given: the catalog follower learns of it, and the server's verdicts
      // are forgotten when it is DDL or settles a catalog change (the end of a block that held DDL, or after one).
      const settles = follower?.note(out, view.backendPid, sql) === true;
      if (settles || (out.allow && out.statements.some((st) => CATALOG_CHANGING_KINDS.has(st.kind))))
        server.invalidate();
      return out;
    });
  };

  /** The answer to a statement judged again by `deferred`: PostgreSQL's where it speaks about what the session has, else the first refusal. */
  const judgedAgain = async (
    j: Decision,
    refused: Extract<Decision, { allow: false }>,
    d: Allow,
    own: OwnAnalysis | undefined,
  ): Promise<Decision> => {
    // Allowed only as the names resolve now: a prepared statement of it is analysed again before each later use.
    if (j.allow && j.shadowDenied === undefined) return { ...j, dependsOnTemporary: true as const };
    // The transaction is aborted: PostgreSQL refuses every statement alike (25P02), whatever its names are.
    if (!j.allow && j.sqlstate === '25P02' && j.analysedOn === 'session') return j;
    if (j.allow || j.analysedOn !== 'session' || j.reason === 'type_denied') return refused;
    // PostgreSQL itself refused it (an unknown column, a type mismatch, an unsafe new enum value): its answer is the
    // client's when every name taken as temporary is one of the session's temporary relations, and every type name left
    // to it resolved to one the session may have made (server-check.ts refused otherwise), so it can say nothing
    // about another relation or type.
    if (j.reason !== 'server_error') return refused;
    const temporary = temporaryNamesOf(d);
    if (temporary.length === 0) return d.deferredTypes !== undefined ? j : refused;
    const target = own?.target;
    if (target?.temporaryNames !== undefined && (await target.temporaryNames(temporary).catch(() => false))) return j;
    return refused;
  };

  /** PostgreSQL's analysis on pgwarden's own connections, its verdicts kept in the entry's slot. */
  const onSeparate = (
    decision: Allow,
    slot: DecisionSlot,
    sql: string,
    role: RolePolicy,
    paramTypes: readonly number[] | undefined,
    pid: number | undefined,
  ): Decision | Promise<Decision> => {
    if (server === undefined) return decision;
    const paramKey = paramTypes === undefined || paramTypes.length === 0 ? '' : paramTypes.join(',');
    // The hit path first and without allocating: a closure per decision costs more than the lookup.
    const v = server.cached(slot.server, paramKey, sql);
    if (v !== undefined) return combine(decision, v, role);
    const held = slot.server?.get(paramKey);
    if (held instanceof Promise) {
      // One analysis per entry at a time: a concurrent miss waits for it, and asks again if it held for another text
      // only, for another session only (that session's own locks), or was a lock wait on a lock this session holds.
      return (held as Promise<ServerVerdict>)
        .then((w) =>
          (w.sql !== undefined && w.sql !== sql) ||
          (w.forPid !== undefined && w.forPid !== pid) ||
          (pid !== undefined && w.lockHolders?.includes(pid) === true)
            ? analyse(server, slot, paramKey, sql, paramTypes, role, decision, plannerFor(sql), pid)
            : w,
        )
        .then((w) => combine(decision, w, role));
    }
    return analyse(server, slot, paramKey, sql, paramTypes, role, decision, plannerFor(sql), pid).then((w) =>
      combine(decision, w, role),
    );
  };

  return {
    get pool() {
      return pool;
    },
    catalogSettled() {
      server?.invalidate();
    },
    async close() {
      const p = pool;
      pool = undefined;
      await p?.close();
    },
    get version() {
      return store.current.policy.version;
    },
    role(name) {
      return store.current.policy.roles.get(name);
    },
    decide(
      sql: string,
      mode: 'simple' | 'parse',
      view: SessionView,
      paramTypes?: readonly number[],
      own?: OwnAnalysis,
    ): Decision | Promise<Decision> {
      const d = decideNow(sql, mode, view, paramTypes, own);
      if (follower === undefined) return d;
      const refreshed = (x: Decision): Promise<Decision> =>
        follower
          .awaitRefresh()
          .then((ok) =>
            ok ? Promise.resolve(decideNow(sql, mode, view, paramTypes, own)).then((y) => absent(y, true)) : x,
          );
      // An unknown relation in a schema the role may create in (docs/policy.md, "Unknown and forbidden relations"):
      // once a catalog read that started after the statement arrived has not found it either, PostgreSQL's 42P01.
      const absent = (x: Decision, fresh: boolean): Decision | Promise<Decision> => {
        if (x.allow || x.confirmAbsent === undefined) return x;
        // The session's own open transaction may have made it: no catalog read can tell, so the 42501 stands.
        if (follower.uncommittedDdl(view.backendPid)) return x;
        return fresh ? undefinedTable(x, x.confirmAbsent) : refreshed(x);
      };
      // A refusal the snapshot may owe to DDL since it was read: decided again once the catalog has been read again.
      const again = (x: Decision): Decision | Promise<Decision> =>
        follower.mayBeStale(x) ? refreshed(x) : absent(x, false);
      return d instanceof Promise ? d.then(again) : again(d);
    },
  };

  function decideNow(
    sql: string,
    mode: 'simple' | 'parse',
    view: SessionView,
    paramTypes?: readonly number[],
    own?: OwnAnalysis,
  ): Decision | Promise<Decision> {
    // One read of the store per decision: policy and catalog come from the same swap.
    const { policy, catalog } = store.current;
    // The session's role object may predate a reload; decide with the role as the policy now defines it, narrowed
    // again by the session's token narrowing (policy/narrow.ts): the effective role is the new role ∩ the narrowing.
    const defined = policy.roles.get(view.role.name);
    const role = defined === undefined ? undefined : effectiveRole(defined, view.role.narrowing);
    if (!role) {
      return {
        allow: false,
        ruleId: undefined,
        sqlstate: SqlState.InsufficientPrivilege,
        message: `permission denied by pgwarden: role "${view.role.name}" no longer exists in the policy`,
        detail: undefined,
        hint: 'reconnect with a token for a role defined in the current policy',
        reason: 'role_removed',
        statements: [],
      };
    }
    const current = view.role === role ? view : { ...view, role };
    if (paramTypes?.some((oid) => oid !== 0)) {
      const refused = judgeParameterTypes(paramTypes, current, catalog);
      if (refused !== undefined) return refused;
    }
    if (longerThan(sql, offloadAbove)) {
      // A long text: a cache hit is answered here; a miss is decided on a worker, never on the event loop.
      const probe = cache.probe(sql, mode, current, catalog, policy.version);
      opts.onLookup?.(!(probe instanceof CacheMiss));
      if (!(probe instanceof CacheMiss))
        return confirm(probe.decision, probe.slot, sql, role, paramTypes, current.backendPid, own);
      return (
        getPool()
          .decide({ sql, mode, view: current, catalog, policyVersion: policy.version })
          .then((answer) => {
            if (!answer.ok) return answer.decision;
            const { decision, slot } = cache.store(probe, answer.facts);
            return confirm(decision, slot, sql, role, paramTypes, current.backendPid, own);
          })
          // Never rejects: anything unexpected on the way back is a refusal, as on the main thread.
          .catch(() => failedRefusal('decide_worker_failed', 'internal error'))
      );
    }
    const misses = cache.stats.misses;
    const { decision, slot } = cache.lookup(sql, mode, current, catalog, policy.version);
    opts.onLookup?.(cache.stats.misses === misses);
    if (!decision.allow) {
      const temporary = deferred(decision, sql, mode, current, role, catalog, policy.version, paramTypes, own);
      if (temporary !== undefined) return temporary;
    }
    return confirm(
      decision,
      slot,
      sql,
      role,
      paramTypes,
      current.backendPid,
      own,
      memoKey(policy.version, mode, role, paramTypes, sql),
    );
  }
}
