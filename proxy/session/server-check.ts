// The second opinion on every statement pgwarden allows: PostgreSQL's own analysis of the text, judged by the same rules, with verdicts cached for a bounded time.
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { checkFacts, checkNamed, toDeny, type Denial, type FactsContext } from '../../policy/evaluate.ts';
import { UTILITY_ANALYSED_KINDS } from '../../policy/ddl.ts';
import {
  COOPERATIVE_READ_BYTES,
  IncrementalTreeRead,
  NodeReadError,
  readNodeTree,
  type Incremental,
  type PgValue,
} from '../../policy/pgnode.ts';
import {
  collectReferences,
  factsFromTrees,
  hasMissing,
  incrementalReferenceWalk,
  ServerAnalysisError,
  unanalysable,
  type OidCatalog,
  type OidSets,
  type ServerFunction,
  type ServerOperator,
  type ServerRelation,
  type ServerType,
} from '../../policy/server-analysis.ts';
import { planServerAnalysis, type AnalysisPlan, type AnalysisText } from '../../policy/server-plan.ts';
import type { Decision, RolePolicy } from '../../policy/types.ts';
import { parseStatements } from '../../policy/parser.ts';
import { BackendType } from '../wire/codes.ts';
import { SqlState } from '../../lib/sqlstate.ts';
import { scrubErrorFrame } from './scrub.ts';
import {
  AnalysisUnavailable,
  fetchOids,
  serverError,
  type TreeResult,
  type AnalysisConnection,
  type AnalysisContext,
  type AnalysisTarget,
  type ReplayTarget,
  type AnalysisPool,
  type RelationLock,
  type ServerError,
} from '../upstream/analysis.ts';
import { errorMessage } from '../../lib/error-message.ts';

type Allow = Extract<Decision, { allow: true }>;
type Deny = Extract<Decision, { allow: false }>;

/** A cached server verdict for one statement text (or shape) and parameter types. */
export interface ServerVerdict {
  /** The denial, or undefined when the server's analysis allows. */
  deny: Deny | undefined;
  /** Valid until (ms since the epoch). */
  expires: number;
  /** Set when the verdict holds for this exact text only (it read a constant's value). */
  sql: string | undefined;
  /** The checker's generation when the analysis started; a DDL announcement starts a new one. */
  generation: number;
  /** Set when the verdict is about the session with this upstream backend pid only (its own transaction's locks). */
  forPid?: number;
  /**
   * A lock wait's refusal: the backends that held or queued the locks. A session among them that was waiting for this
   * analysis asks again (its own lock is what the analysis waited for, which its own analysis tells at once).
   */
  lockHolders?: readonly number[];
}

export interface ServerCheckOptions {
  pool: AnalysisPool;
  log: Logger;
  /** Longest time a verdict or a catalog fact is reused before the server is asked again. */
  ttlMs: number;
  /** Catalog facts kept (OIDs). */
  maxOids?: number;
  now?: () => number;
  /** Called once per analysed statement (cache miss) with its duration and outcome. */
  onAnalysis?(info: { ms: number; outcome: 'allow' | 'deny' | 'error' | 'unavailable' }): void;
  /** Called when pgwarden's own analysis allowed and the server's denied: each one is a bug in one of them. */
  onDisagreement?(info: { reason: string; role: string; sql: string }): void;
}

/**
 * Makes the analysis plan of a text: policy/server-plan.ts here, or on a decide worker for a long text (it parses the
 * text again). A refusal instead of a plan (the worker pool was busy or failed) is the statement's answer.
 */
export type AnalysisPlanner = (
  text: string,
  paramTypes: readonly number[],
) => Promise<AnalysisPlan | { refused: Deny }>;

/**
 * Statements of one Query analysed at most: each is one round trip to the server and one tree to read, so a Query of
 * tens of thousands of statements would keep the analysis busy for minutes. More are refused with 54000.
 */
export const MAX_ANALYSED_STATEMENTS = 1000;

/** Statement kinds whose decision the server's analysis must confirm. */
const ANALYSED_KINDS = new Set([
  'SelectStmt',
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'ExplainStmt',
  'DeclareCursorStmt',
  'PrepareStmt',
  'CopyStmt',
  'ExecuteStmt',
  ...UTILITY_ANALYSED_KINDS,
]);

/**
 * Kinds that cannot change what a later statement's names resolve to (or what it sees of the catalog): DML, reads,
 * cursors, settings (search_path is pinned), locks. Everything else (DDL, DISCARD, DO, CALL, …) may.
 */
const RESOLUTION_NEUTRAL_KINDS = new Set([
  'SelectStmt',
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'ExplainStmt',
  'DeclareCursorStmt',
  'FetchStmt',
  'ClosePortalStmt',
  'PrepareStmt',
  'ExecuteStmt',
  'DeallocateStmt',
  'VariableSetStmt',
  'VariableShowStmt',
  'CopyStmt',
  'LockStmt',
  'TruncateStmt',
  'VacuumStmt',
  'ListenStmt',
  'UnlistenStmt',
  'NotifyStmt',
  'CommentStmt',
]);

/** Transaction statements that leave every object as it was: the ones that end or roll back a (sub)transaction do not. */
const NEUTRAL_TRANSACTION_KINDS = new Set([
  'TRANS_STMT_BEGIN',
  'TRANS_STMT_START',
  'TRANS_STMT_SAVEPOINT',
  'TRANS_STMT_RELEASE',
]);

/**
 * Catalog-changing statements the session's own analysis may run itself, inside its wrapper that is rolled back, so
 * that a later statement of the same text is analysed against what they make (`CREATE TEMP TABLE t …; INSERT INTO t …`,
 * `CREATE TYPE e AS ENUM (…); CREATE TABLE t (a e)`): DDL the policy allowed, cheap and undone by the rollback (making
 * a type, domain or schema runs none of its expressions). Not DO (any code), CREATE TABLE AS (runs its query),
 * DISCARD, or what ends or rolls back a transaction.
 */
const REPLAYABLE_KINDS = new Set([
  'CreateStmt',
  'IndexStmt',
  'AlterTableStmt',
  'RenameStmt',
  'DropStmt',
  'CreateSeqStmt',
  'AlterSeqStmt',
  'ViewStmt',
  'CreateEnumStmt',
  'AlterEnumStmt',
  'CompositeTypeStmt',
  'CreateDomainStmt',
  'CreateRangeStmt',
  'CreateSchemaStmt',
]);

/** A statement the own analysis runs before analysing the later ones: its text, and its offset in the client's text (characters). */
export interface Replayed {
  text: string;
  clientOffset: number;
}

/**
 * How the session's own connection, idle before `sql` runs, can show each analysed statement of it the catalog that
 * statement will run against: the statements to run first (by index), in the analysis's own wrapper, or undefined
 * when a statement before an analysed one may change the catalog in a way that cannot be run there (DISCARD TEMP,
 * ROLLBACK, DO, …): such a text is analysed on pgwarden's connections, which never see temporary tables.
 */
export function replayPlan(d: Allow, sql: string): Map<number, Replayed> | undefined {
  const replay = new Map<number, Replayed>();
  if (d.statements.length <= 1) return replay;
  let blocked = false;
  let raws: readonly { stmt?: unknown; stmt_location?: number; stmt_len?: number }[] | undefined;
  const raw = (i: number) => {
    if (raws === undefined) {
      const parsed = parseStatements(sql);
      raws = parsed.ok && parsed.stmts.length === d.statements.length ? parsed.stmts : [];
    }
    return raws[i];
  };
  for (let i = 0; i < d.statements.length; i++) {
    const kind = d.statements[i]?.kind ?? '';
    if (blocked && ANALYSED_KINDS.has(kind)) return undefined;
    if (RESOLUTION_NEUTRAL_KINDS.has(kind)) continue;
    const r = raw(i);
    if (r === undefined) return undefined;
    if (kind === 'TransactionStmt') {
      const t = (r.stmt as { TransactionStmt?: { kind?: unknown } } | undefined)?.TransactionStmt?.kind;
      if (typeof t === 'string' && NEUTRAL_TRANSACTION_KINDS.has(t)) continue;
    }
    if (!REPLAYABLE_KINDS.has(kind)) {
      blocked = true;
      continue;
    }
    const buf = Buffer.from(sql, 'utf8');
    const start = r.stmt_location ?? 0;
    const len = r.stmt_len ?? 0;
    replay.set(i, {
      text: buf.subarray(start, len > 0 ? start + len : buf.length).toString('utf8'),
      clientOffset: buf.subarray(0, start).toString('utf8').length,
    });
  }
  return replay;
}

/**
 * Whether running the statements of `d` cannot change what names resolve to for the session afterwards (OwnMemo):
 * only the neutral kinds; every transaction statement counts as a change (ROLLBACK, COMMIT … do change it).
 */
export function resolutionNeutral(d: Allow): boolean {
  return d.statements.every((st) => RESOLUTION_NEUTRAL_KINDS.has(st.kind));
}

/** Whether replayPlan finds a way (the gate's question before offering the session's own connection). */
export function analysableInOrder(d: Allow, sql: string): boolean {
  return replayPlan(d, sql) !== undefined;
}

export function needsServerAnalysis(d: Allow): boolean {
  for (const s of d.statements) if (ANALYSED_KINDS.has(s.kind)) return true;
  return false;
}

function unavailable(why: string): Deny {
  return {
    allow: false,
    ruleId: 'builtin.analysis',
    sqlstate: SqlState.SystemError,
    message:
      "statement refused by pgwarden: the database's own analysis of it could not be obtained, so it was not run",
    detail: `${why} (rule: builtin.analysis)`,
    hint: "retry shortly; if it keeps failing, the operator should check pgwarden's connection to the database",
    reason: 'analysis_unavailable',
    statements: [],
  };
}

/** The statement would fail on the server with this error: say so exactly as PostgreSQL would, values scrubbed as for any upstream error. */
function fromServerError(raw: ServerError, t: AnalysisText, statements: Deny['statements']): Deny {
  if (raw.own === true) {
    // pgwarden's own limit, not PostgreSQL's error: a refusal like pgwarden's others (ERR_STATEMENT_DENIED, its
    // SQLSTATE kept), so its message carries the reason as theirs do; PostgreSQL would have run the statement.
    return {
      allow: false,
      ruleId: 'builtin.analysis',
      sqlstate: raw.sqlstate,
      message: raw.message,
      detail: raw.detail,
      hint: raw.hint,
      reason: 'statement_too_complex',
      statements,
    };
  }
  let e = raw;
  if (raw.body !== undefined) {
    const scrubbed = scrubErrorFrame({ type: BackendType.ErrorResponse, body: raw.body, raw: raw.body });
    if (scrubbed !== undefined) e = serverError(scrubbed.subarray(5));
  }
  return {
    allow: false,
    ruleId: 'builtin.analysis',
    sqlstate: e.sqlstate,
    message: e.message,
    detail: e.detail,
    hint: e.hint,
    reason: 'server_error',
    statements,
    position: e.position !== undefined && t.clientOffset !== undefined ? e.position + t.clientOffset : undefined,
    ...(e.source !== undefined ? { source: e.source } : {}),
  };
}

/** One LRU of catalog facts by OID; a boxed null records "does not exist" (lru-cache stores no null). */
class OidLru<V> {
  private readonly lru: LRUCache<number, { v: V | null }>;

  constructor(max: number, ttl: number) {
    this.lru = new LRUCache<number, { v: V | null }>({ max, ttl });
  }

  pick(keys: Iterable<number>): Map<number, V | null> {
    const out = new Map<number, V | null>();
    for (const k of keys) {
      const e = this.lru.get(k);
      if (e !== undefined) out.set(k, e.v);
    }
    return out;
  }

  store(m: ReadonlyMap<number, V | null>): void {
    for (const [k, v] of m) this.lru.set(k, { v });
  }

  clear(): void {
    this.lru.clear();
  }
}

/** Catalog facts shared by every session; entries expire with the verdict TTL, so DDL is seen within it. */
class OidCache {
  readonly relations: OidLru<ServerRelation>;
  readonly functions: OidLru<ServerFunction>;
  readonly operators: OidLru<ServerOperator>;
  readonly types: OidLru<ServerType>;

  constructor(max: number, ttl: number) {
    this.relations = new OidLru(max, ttl);
    this.functions = new OidLru(max, ttl);
    this.operators = new OidLru(max, ttl);
    this.types = new OidLru(max, ttl);
  }

  snapshot(want: OidSets): OidCatalog {
    return {
      relations: this.relations.pick(want.relations),
      functions: this.functions.pick(want.functions),
      operators: this.operators.pick(want.operators),
      types: this.types.pick(want.types),
    };
  }

  store(f: OidCatalog): void {
    this.relations.store(f.relations);
    this.functions.store(f.functions);
    this.operators.store(f.operators);
    this.types.store(f.types);
  }

  clear(): void {
    this.relations.clear();
    this.functions.clear();
    this.operators.clear();
    this.types.clear();
  }
}

/** Merges `b` into `a` (mutating `a`'s maps). */
function merge(
  a: {
    relations: Map<number, ServerRelation | null>;
    functions: Map<number, ServerFunction | null>;
    operators: Map<number, ServerOperator | null>;
    types: Map<number, ServerType | null>;
  },
  b: OidCatalog,
): void {
  for (const [k, v] of b.relations) a.relations.set(k, v);
  for (const [k, v] of b.functions) a.functions.set(k, v);
  for (const [k, v] of b.operators) a.operators.set(k, v);
  for (const [k, v] of b.types) a.types.set(k, v);
}

/** Catalog facts are looked up in at most this many rounds (operators → functions, domains → constraints → …). */
const MAX_LOOKUP_ROUNDS = 12;

const NOT_ANALYSED = 'could not be analysed, so it was not run';

/**
 * How long a statement's first analysis waits for a relation lock before pgwarden looks at who holds it. Parse
 * analysis locks every relation the statement uses (ACCESS SHARE, ROW EXCLUSIVE on a write's target); when the
 * session's own open transaction holds a lock that conflicts (TRUNCATE, ALTER TABLE, CREATE INDEX, DROP, LOCK in it),
 * the analysis connection would wait for a transaction that is itself waiting for the analysis, until analysis.timeout.
 * A lock held by another transaction is then waited for as before, up to analysis.timeout.
 */
export const LOCK_PROBE_MS = 200;

type Locked = { locked: Deny; forPid?: number; lockHolders?: number[] };

export class ServerChecker {
  private oids: OidCache;
  private readonly now: () => number;
  /** Bumped when DDL is announced: every verdict and catalog fact from before is forgotten at once. */
  private generation = 0;

  constructor(private readonly opts: ServerCheckOptions) {
    this.now = opts.now ?? Date.now;
    this.oids = this.freshOids();
  }

  private freshOids(): OidCache {
    return new OidCache(this.opts.maxOids ?? 50_000, this.opts.ttlMs);
  }

  /**
   * Forgets every verdict and catalog fact (DDL was announced). O(1): a new generation and a new fact cache, so
   * a storm of notifications costs re-analysis, never a long pause.
   */
  invalidate(): void {
    this.generation++;
    this.oids = this.freshOids();
  }

  /** A cached verdict for `sql` with these parameter types, if still valid. */
  cached(slot: Map<string, unknown> | undefined, paramKey: string, sql: string): ServerVerdict | undefined {
    const v = slot?.get(paramKey) as ServerVerdict | undefined;
    if (
      v === undefined ||
      v.generation !== this.generation ||
      v.expires <= this.now() ||
      (v.sql !== undefined && v.sql !== sql)
    )
      return undefined;
    return v;
  }

  /**
   * Asks the server to analyse what `local` allowed and judges the result with the role. Never rejects:
   * every failure is a denial.
   */
  async check(
    sql: string,
    paramTypes: readonly number[],
    role: RolePolicy,
    ctx: AnalysisContext,
    local: Allow,
    planner?: AnalysisPlanner,
  ): Promise<ServerVerdict> {
    const generation = this.generation;
    const v = await this.analyse(sql, paramTypes, role, ctx, local, planner);
    // DDL announced while the server was analysing: the verdict may predate it, so it is used once and not kept.
    return { ...v, generation, expires: generation === this.generation ? v.expires : 0 };
  }

  private async analyse(
    sql: string,
    paramTypes: readonly number[],
    role: RolePolicy,
    ctx: AnalysisContext,
    local: Allow,
    planner?: AnalysisPlanner,
  ): Promise<Omit<ServerVerdict, 'generation'>> {
    const t0 = performance.now();
    const expires = this.now() + this.opts.ttlMs;
    const text = local.rewrittenSql ?? sql;
    if (local.statements.length > MAX_ANALYSED_STATEMENTS) {
      this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'error' });
      return { deny: tooManyStatements(local.statements), expires, sql: undefined };
    }
    const planned = planner === undefined ? planServerAnalysis(text, paramTypes) : await planner(text, paramTypes);
    if ('refused' in planned) {
      this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
      return { deny: { ...planned.refused, statements: local.statements }, expires: 0, sql };
    }
    const plan = planned;
    // A type name the snapshot does not know is resolved only where the session may have made it: its own connection.
    if (local.deferredTypes !== undefined && ctx.own === undefined) {
      this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'deny' });
      return {
        deny: toDeny(undefined, unresolvedType(local.deferredTypes[0]?.names ?? [], role), local.statements),
        expires: 0,
        sql,
      };
    }
    if (!plan.ok) {
      this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'error' });
      return { deny: toDeny(undefined, unanalysable(NOT_ANALYSED, plan.why), local.statements), expires, sql };
    }
    let conn: AnalysisTarget;
    const own = ctx.own !== undefined;
    try {
      conn = ctx.own ?? (await this.opts.pool.connection(ctx));
    } catch (err) {
      this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
      return { deny: { ...unavailable(errorMessage(err)), statements: local.statements }, expires: 0, sql };
    }
    // On the session's own connection, a text of several statements may need earlier DDL of it run first (replayPlan).
    const replay = own ? replayPlan(local, text) : new Map<number, Replayed>();
    if (replay === undefined) {
      this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
      return {
        deny: {
          ...unavailable('an earlier statement of the text changes what it resolves to'),
          statements: local.statements,
        },
        expires: 0,
        sql,
      };
    }
    if (replay.size > 0) {
      const target = ctx.own;
      if (target?.within === undefined) {
        this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
        return {
          deny: { ...unavailable('no replay on this connection'), statements: local.statements },
          expires: 0,
          sql,
        };
      }
      try {
        return await target.within((scoped) =>
          this.judgeTexts(scoped, plan, sql, role, ctx, local, t0, expires, own, replay, scoped),
        );
      } catch (err) {
        this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
        return { deny: { ...unavailable(errorMessage(err)), statements: local.statements }, expires: 0, sql };
      }
    }
    return this.judgeTexts(conn, plan, sql, role, ctx, local, t0, expires, own, replay, undefined);
  }

  /**
   * The analysis of each text of the plan on `conn`, judged. With `replayer`, the statements of `replay` are run on it
   * (inside the analysis's wrapper) before the first text of a later statement is analysed.
   */
  private async judgeTexts(
    conn: AnalysisTarget,
    plan: Extract<AnalysisPlan, { ok: true }>,
    sql: string,
    role: RolePolicy,
    ctx: AnalysisContext,
    local: Allow,
    t0: number,
    expires: number,
    own: boolean,
    replay: ReadonlyMap<number, Replayed>,
    replayer: ReplayTarget | undefined,
  ): Promise<Omit<ServerVerdict, 'generation'>> {
    let literalSensitive = false;
    const pending = [...replay.keys()].sort((a, b) => a - b);
    // Statements whose type names left to this analysis (local.deferredTypes) are still to be resolved; the relations
    // whose row types they turned out to be, by statement.
    const unresolved = new Set((local.deferredTypes ?? []).map((d) => d.statement));
    const rowTypesOf = new Map<number, readonly number[]>();
    for (const t of plan.texts) {
      if (replayer !== undefined) {
        if (t.statement === undefined) {
          this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
          return {
            deny: { ...unavailable('a text without its statement'), statements: local.statements },
            expires: 0,
            sql,
          };
        }
        while (pending.length > 0 && (pending[0] as number) < t.statement) {
          const r = replay.get(pending.shift() as number) as Replayed;
          let failed: ServerError | undefined;
          try {
            failed = await replayer.replay(r.text);
          } catch (err) {
            this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
            return { deny: { ...unavailable(errorMessage(err)), statements: local.statements }, expires: 0, sql };
          }
          if (failed !== undefined) {
            // The earlier statement itself fails as it will when it runs: its error is the text's answer.
            this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'error' });
            return {
              deny: fromServerError(failed, { ...t, clientOffset: r.clientOffset }, local.statements),
              expires: 0,
              sql,
            };
          }
        }
      }
      if (t.statement !== undefined && unresolved.delete(t.statement)) {
        // After the earlier statements of the text ran (replay): the names resolve as they will when this one runs.
        let resolved: Denial | { error: ServerError } | { rowTypes: number[] };
        try {
          resolved = await resolveDeferredTypes(
            conn,
            (local.deferredTypes ?? []).filter((d) => d.statement === t.statement),
            role,
          );
        } catch (err) {
          this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
          return { deny: { ...unavailable(errorMessage(err)), statements: local.statements }, expires: 0, sql };
        }
        if ('error' in resolved) {
          this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'error' });
          return { deny: fromServerError(resolved.error, t, local.statements), expires: 0, sql };
        }
        if ('reason' in resolved) {
          this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'deny' });
          return { deny: toDeny(t.kind, resolved, local.statements), expires: 0, sql };
        }
        rowTypesOf.set(t.statement, resolved.rowTypes);
      }
      let parsedTypes: readonly number[] = [];
      let result: TreeResult;
      try {
        let types: readonly number[] | ServerError = t.paramTypes;
        if (t.paramTypeNames !== undefined && t.paramTypeNames.length > 0) {
          const r = await conn.typeOids(t.paramTypeNames);
          types = r.ok ? r.oids : r.error;
        }
        if (Array.isArray(types)) parsedTypes = types;
        const parsed: TreeResult | Locked = Array.isArray(types)
          ? own
            ? await this.parseOwn(conn, t.text, types, local.statements)
            : await this.parseWaitingForLocks(
                conn as AnalysisConnection,
                t.text,
                types,
                ctx.sessionPid,
                local.statements,
              )
          : { ok: false, error: types as ServerError };
        if ('locked' in parsed) {
          this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'deny' });
          // Never kept: it holds while a transaction holds its locks, and (forPid) for one session only.
          return { deny: parsed.locked, expires: 0, sql, forPid: parsed.forPid, lockHolders: parsed.lockHolders };
        }
        result = parsed;
        if (!result.ok && 'userCode' in result) {
          this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'deny' });
          return { deny: toDeny(t.kind, ranUserCode(), local.statements), expires, sql };
        }
      } catch (err) {
        this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
        return { deny: { ...unavailable(errorMessage(err)), statements: local.statements }, expires: 0, sql };
      }
      if (!result.ok && 'error' in result) {
        this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'error' });
        // An error can depend on a constant's value (invalid input syntax), so it holds for this text only.
        return { deny: fromServerError(result.error, t, local.statements), expires, sql };
      }
      let judged: { denial: Denial | undefined; literalSensitive: boolean };
      try {
        judged = await this.judge(
          conn,
          t,
          await readTree(result.tree),
          role,
          parsedTypes,
          { catalogFiltered: local.catalogFiltered === true },
          own,
          t.statement === undefined ? [] : (rowTypesOf.get(t.statement) ?? []),
        );
      } catch (err) {
        if (err instanceof AnalysisUnavailable) {
          this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'unavailable' });
          return { deny: { ...unavailable(err.message), statements: local.statements }, expires: 0, sql };
        }
        if (!(err instanceof NodeReadError || err instanceof ServerAnalysisError))
          this.opts.log.error({ err }, 'server analysis failed');
        this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'error' });
        return { deny: toDeny(t.kind, unanalysable(NOT_ANALYSED, errorMessage(err)), local.statements), expires, sql };
      }
      literalSensitive ||= judged.literalSensitive;
      if (judged.denial !== undefined) {
        const deny = toDeny(t.kind, judged.denial, local.statements);
        this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'deny' });
        this.opts.onDisagreement?.({ reason: deny.reason, role: role.name, sql });
        return { deny, expires, sql: judged.literalSensitive ? sql : undefined };
      }
    }
    if (unresolved.size > 0) {
      // A statement whose type names no analysed text stood for: they were never resolved, so it is refused.
      const first = (local.deferredTypes ?? []).find((d) => unresolved.has(d.statement));
      this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'deny' });
      return { deny: toDeny(undefined, unresolvedType(first?.names ?? [], role), local.statements), expires: 0, sql };
    }
    this.opts.onAnalysis?.({ ms: performance.now() - t0, outcome: 'allow' });
    return { deny: undefined, expires, sql: literalSensitive ? sql : undefined };
  }

  /**
   * parseTree, minding relation locks. With the session's backend pid known, the first attempt waits LOCK_PROBE_MS for
   * a lock; when it times out and the only conflicting locks are the session's own, the statement is refused at once
   * (waiting could only end at analysis.timeout). Otherwise it is analysed again, waiting up to analysis.timeout as
   * the statement itself would wait; a wait that reaches it is refused as a lock wait, not as PostgreSQL's 57014.
   */
  private async parseWaitingForLocks(
    conn: AnalysisConnection,
    text: string,
    types: readonly number[],
    sessionPid: number | undefined,
    statements: Deny['statements'],
  ): Promise<TreeResult | Locked> {
    const t0 = performance.now();
    if (sessionPid !== undefined) {
      const probe = await conn.parseTree(text, types, LOCK_PROBE_MS);
      if (!serverFailed(probe, SqlState.LockNotAvailable)) return probe;
      const held = splitLocks(await conn.relationLocks(), sessionPid);
      if (held.others.length === 0 && held.own.length > 0)
        return { locked: selfLocked(held.own, statements), forPid: sessionPid };
    }
    const result = await conn.parseTree(text, types, 0);
    if (!serverFailed(result, OPERATOR_INTERVENTION)) return result;
    const held = splitLocks(await conn.relationLocks(), sessionPid);
    if (held.others.length === 0 && held.own.length > 0 && sessionPid !== undefined)
      return { locked: selfLocked(held.own, statements), forPid: sessionPid };
    const waited = Math.round(performance.now() - t0);
    // Nothing else holds a conflicting lock: the analysis was slow for another reason (or the lock is gone); say so as before.
    if (held.others.length === 0)
      return { locked: { ...unavailable(`the analysis did not finish within ${waited} ms`), statements } };
    const lockHolders = [...new Set(held.others.flatMap((l) => (l.pid === undefined ? [] : [l.pid])))];
    return { locked: lockWaitTimedOut(waited, held.others, statements), lockHolders };
  }

  /**
   * parseTree on the session's own connection: no lock probe (the session's own locks cannot block it there), and a
   * wait for another transaction's lock ends at the statement_timeout the analysis sets for itself.
   */
  private async parseOwn(
    conn: AnalysisTarget,
    text: string,
    types: readonly number[],
    statements: Deny['statements'],
  ): Promise<TreeResult | Locked> {
    const t0 = performance.now();
    const result = await conn.parseTree(text, types);
    if (!serverFailed(result, OPERATOR_INTERVENTION)) return result;
    return {
      locked: {
        ...unavailable(
          `the analysis on the session's own connection did not finish within ${Math.round(performance.now() - t0)} ms`,
        ),
        statements,
      },
    };
  }

  /** `own`: the facts come from the session's own connection and are neither read from nor kept in the shared cache. */
  private async judge(
    conn: AnalysisTarget,
    t: AnalysisText,
    tree: PgValue,
    role: RolePolicy,
    paramTypes: readonly number[],
    factsCtx: FactsContext,
    own: boolean,
    rowTypes: readonly number[] = [],
  ): Promise<{ denial: Denial | undefined; literalSensitive: boolean }> {
    const known = {
      relations: new Map<number, ServerRelation | null>(),
      functions: new Map<number, ServerFunction | null>(),
      operators: new Map<number, ServerOperator | null>(),
      types: new Map<number, ServerType | null>(),
    };
    // Facts come from the cache where it has them; only what it lacks is fetched (each round can reveal more:
    // an operator's function, a domain's constraint, a type's members).
    for (let round = 0; ; round++) {
      const { missing } = collectReferences([tree], known, paramTypes);
      if (!hasMissing(missing)) break;
      if (round >= MAX_LOOKUP_ROUNDS) throw new ServerAnalysisError('catalog references nest too deeply');
      const cached: OidCatalog = own
        ? { relations: new Map(), functions: new Map(), operators: new Map(), types: new Map() }
        : this.oids.snapshot(missing);
      merge(known, cached);
      const lacking: OidSets = {
        relations: new Set([...missing.relations].filter((o) => !cached.relations.has(o))),
        functions: new Set([...missing.functions].filter((o) => !cached.functions.has(o))),
        operators: new Set([...missing.operators].filter((o) => !cached.operators.has(o))),
        types: new Set([...missing.types].filter((o) => !cached.types.has(o))),
      };
      if (!hasMissing(lacking)) continue;
      const fetched = await fetchOids(conn, lacking);
      if (!own) this.oids.store(fetched);
      merge(known, fetched);
    }
    const facts = factsFromTrees(t.kind, [tree], known, { copyFrom: t.copyFrom, extraTypes: paramTypes });
    if (facts.denial !== undefined) return { denial: facts.denial, literalSensitive: facts.literalSensitive };
    if (facts.analysis === undefined)
      return { denial: unanalysable(NOT_ANALYSED, 'no facts'), literalSensitive: false };
    if (rowTypes.length > 0) {
      // A row type the statement named, which pgwarden's snapshot did not know: it reads its relation's whole row, as
      // pgwarden's own analysis counts a known one (analyze.ts resolveType).
      const lacking = new Set(rowTypes.filter((o) => !known.relations.has(o)));
      if (lacking.size > 0)
        merge(
          known,
          await fetchOids(conn, { relations: lacking, functions: new Set(), operators: new Set(), types: new Set() }),
        );
      for (const oid of rowTypes) {
        const r = known.relations.get(oid);
        if (!r)
          return {
            denial: unanalysable(NOT_ANALYSED, `relation OID ${oid} is not in the server's catalog`),
            literalSensitive: false,
          };
        const key = `${r.schema}.${r.name}`;
        const columns = [...r.columns.values()].map((name) => ({ name, type: '' }));
        facts.analysis.relations.push({
          schema: r.schema,
          name: r.name,
          key,
          access: 'read',
          writeKind: undefined,
          relation: { schema: r.schema, name: r.name, kind: r.kind, columns },
        });
        facts.analysis.columns.push({ relation: key, column: '*', how: 'whole_row' });
      }
    }
    const verdict =
      t.named !== undefined ? checkNamed(facts.analysis, role, t.named) : checkFacts(facts.analysis, role, factsCtx);
    return { denial: 'reason' in verdict ? verdict : undefined, literalSensitive: facts.literalSensitive };
  }
}

/** The refusal of a type name pgwarden's snapshot does not know, as its own analysis words it (evaluate.ts checkFacts). */
function unresolvedType(names: readonly string[], role: RolePolicy): Denial {
  const display = names.join('.');
  return {
    reason: 'type_denied',
    ruleId: `roles.${role.name}.relations`,
    sqlstate: SqlState.InsufficientPrivilege,
    what: `uses type ${display}, which pgwarden cannot resolve`,
    detail: `type ${display} is not in pgwarden's catalog snapshot, nor a type this session may have made in a schema role "${role.name}" may create in (rule: roles.${role.name}.ddl.schemas)`,
    hint: 'use built-in types',
  };
}

/** A name part quoted, as regtype's input reads it (so `a-b` and `Mixed` are the names written, not folded or split). */
function quotedPart(part: string): string {
  return `"${part.replaceAll('"', '""')}"`;
}

/**
 * Resolves type names the snapshot does not know on the session's own connection, as PostgreSQL resolves them there
 * now (its search_path, its open transaction, its temporary schema): each must be a type in a schema the role may
 * create in (ddl.schemas), or, written unqualified or as pg_temp's, in the session's own temporary schema for a role
 * that may make temporary objects. A string constant cast to one must be an enum: its input runs no user code while
 * the statement is analysed. When all are: the relations whose row types they are (judge() counts each as a whole-row
 * read of it, as pgwarden's own analysis counts a known row type); otherwise the refusal of an unknown type, or
 * PostgreSQL's 25P02 in an aborted transaction.
 */
async function resolveDeferredTypes(
  conn: AnalysisTarget,
  deferred: readonly { names: readonly string[]; fromString: boolean }[],
  role: RolePolicy,
): Promise<Denial | { error: ServerError } | { rowTypes: number[] }> {
  const rowTypes: number[] = [];
  if (deferred.length === 0) return { rowTypes };
  const first = deferred[0] as { names: readonly string[] };
  const r = await conn.typeOids(deferred.map((d) => d.names.map(quotedPart).join('.')));
  // The transaction is aborted: PostgreSQL's own answer to any statement (25P02), whatever its names are.
  if (!r.ok) return r.error.sqlstate === '25P02' ? { error: r.error } : unresolvedType(first.names, role);
  const oids = r.oids.filter((o) => Number.isSafeInteger(o) && o > 0);
  if (oids.length !== deferred.length) return unresolvedType(first.names, role);
  const rows = await conn.rows(
    `select t.oid::pg_catalog.text, n.nspname::pg_catalog.text, t.typtype::pg_catalog.text,
       (n.oid = pg_catalog.pg_my_temp_schema())::pg_catalog.text,
       (select c.oid::pg_catalog.text from pg_catalog.pg_class c where c.oid = t.typrelid and c.relkind <> 'c')
     from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
     where t.oid = any('{${oids.join(',')}}'::pg_catalog.oid[])`,
  );
  const byOid = new Map(rows.map((row) => [Number(row[0]), row]));
  for (let i = 0; i < deferred.length; i++) {
    const d = deferred[i] as { names: readonly string[]; fromString: boolean };
    const row = byOid.get(oids[i] as number);
    if (row === undefined) return unresolvedType(d.names, role);
    const [, schema, typtype, temp, relation] = row;
    const writtenTemp = d.names.length === 1 || d.names[0] === 'pg_temp';
    const placed =
      (typeof schema === 'string' && role.ddl?.schemas.includes(schema) === true) ||
      (temp === 'true' && writtenTemp && role.ddl?.temporary === true);
    if (!placed || (d.fromString && typtype !== 'e')) return unresolvedType(d.names, role);
    if (typeof relation === 'string') rowTypes.push(Number(relation));
  }
  return { rowTypes };
}

/** Longest stretch of tree work, all trees together, in one turn of the event loop. */
const TREE_SLICE_MS = 3;

interface TreeJob {
  job: Incremental;
  resolve(): void;
  reject(err: unknown): void;
}

/** Tree work waiting for its next slice, oldest first. */
const treeJobs: TreeJob[] = [];
let treeTurnScheduled = false;

/**
 * One turn's tree work: TREE_SLICE_MS for all jobs together, then the event loop's turn (every other session's I/O
 * and timers). The budget is shared so that four big trees in flight cost a `SELECT 1` what one does, instead of four
 * slices per turn. The oldest job is finished before the next starts: the total work is the same as taking turns,
 * but only one big tree is being built at a time (four built side by side left RSS ~100 MiB higher after a burst of
 * IN lists), and the first statement is answered first instead of all of them last.
 */
function treeTurn(): void {
  const until = performance.now() + TREE_SLICE_MS;
  while (treeJobs.length > 0 && performance.now() < until) {
    const t = treeJobs[0] as TreeJob;
    let done: boolean;
    try {
      done = t.job.run(until);
    } catch (err) {
      treeJobs.shift();
      t.reject(err);
      continue;
    }
    if (!done) break;
    treeJobs.shift();
    t.resolve();
  }
  if (treeJobs.length > 0) setImmediate(treeTurn);
  else treeTurnScheduled = false;
}

/** Runs `job` in the shared slices of treeTurn; rejects with what it throws. */
function inSlices(job: Incremental): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    treeJobs.push({ job, resolve, reject });
    if (!treeTurnScheduled) {
      treeTurnScheduled = true;
      setImmediate(treeTurn);
    }
  });
}

/** Reads a tree, then walks it for its references, as one job (so the walk does not queue behind other trees' reads). */
class ReadAndWalk implements Incremental {
  private readonly read: IncrementalTreeRead;
  private walk: Incremental | undefined;
  tree: PgValue | undefined;

  constructor(text: string) {
    this.read = new IncrementalTreeRead(text);
  }

  run(until: number): boolean {
    if (this.walk === undefined) {
      if (!this.read.run(until)) return false;
      this.tree = this.read.value;
      this.walk = incrementalReferenceWalk(this.tree);
      if (performance.now() >= until) return false;
    }
    return this.walk.run(until);
  }
}

/**
 * Reads a statement's analysed tree. A big one (a long IN list, VALUES list or array constant that the role may run:
 * 3 MB of tree for 20,000 elements, up to the 16 MiB cap) is read and walked for its references in slices, so other
 * sessions are served meanwhile; judge() then finds the walk done. A small one (every ordinary statement) is read at
 * once, as before.
 */
async function readTree(text: string): Promise<PgValue> {
  if (text.length < COOPERATIVE_READ_BYTES) return readNodeTree(text);
  const job = new ReadAndWalk(text);
  await inSlices(job);
  return job.tree as PgValue;
}

function tooManyStatements(statements: Deny['statements']): Deny {
  return {
    allow: false,
    ruleId: 'builtin.analysis',
    sqlstate: SqlState.ProgramLimitExceeded,
    message: `statement refused by pgwarden: the query holds ${statements.length} statements, more than the ${MAX_ANALYSED_STATEMENTS} its analysis takes in one query`,
    detail: 'each statement is analysed by the database before it runs (rule: builtin.analysis)',
    hint: `send at most ${MAX_ANALYSED_STATEMENTS} statements per query`,
    reason: 'too_many_statements',
    statements,
  };
}

function ranUserCode(): Denial {
  return {
    reason: 'analysis_ran_user_code',
    ruleId: 'builtin.analysis',
    sqlstate: SqlState.InsufficientPrivilege,
    what: "makes PostgreSQL run user-defined code while merely analysing it (a constant whose type's input reaches a domain CHECK or a comparison function)",
    detail: 'such code runs before anything could be decided; what it said is not passed on (rule: builtin.analysis)',
    hint: 'use constants of built-in types, or ask the operator to allow the function the type relies on',
  };
}

/**
 * PostgreSQL's SQLSTATE class 57, operator intervention: statement_timeout on the analysis connection raises its
 * query_canceled (57014), as would an operator's pg_cancel_backend; a class, because pgwarden itself never sends it.
 */
const OPERATOR_INTERVENTION = { class: '57' } as const;

/**
 * The server's analysis failed with `code` (a SQLSTATE, or every SQLSTATE of a class), raised by the server itself:
 * not from user code, whose errors carry a CONTEXT.
 */
function serverFailed(r: TreeResult, code: string | { class: string }): boolean {
  if (r.ok || !('error' in r) || r.error.context !== undefined) return false;
  return typeof code === 'string' ? r.error.sqlstate === code : r.error.sqlstate.startsWith(code.class);
}

/**
 * The session's own granted locks, and the others that can block the analysis. A request queued on a relation the
 * session itself holds waits for the session, so it counts as the session's: the analysis waits behind it because of
 * the session's own lock.
 */
function splitLocks(
  locks: readonly RelationLock[],
  sessionPid: number | undefined,
): { own: RelationLock[]; others: RelationLock[] } {
  const own = locks.filter((l) => sessionPid !== undefined && l.pid === sessionPid && l.granted);
  const ownRelations = new Set(own.map((l) => l.relation));
  const others = locks.filter((l) => !own.includes(l) && !(!l.granted && ownRelations.has(l.relation)));
  return { own, others };
}

function qualified(l: RelationLock): string {
  return l.schema === '' ? l.name : `${l.schema}.${l.name}`;
}

/** Names the client wrote itself (the statement's relations) among `locks`, as "name"; others are not named to it. */
function namedByStatement(locks: readonly RelationLock[], statements: Deny['statements']): string[] {
  const written = new Set(statements.flatMap((s) => s.relations));
  const out = new Set<string>();
  for (const l of locks) if (written.has(qualified(l)) || written.has(l.name)) out.add(`"${l.name}"`);
  return [...out];
}

function selfLocked(own: readonly RelationLock[], statements: Deny['statements']): Deny {
  const names = namedByStatement(own, statements);
  const on = names.length > 0 ? `on ${names.join(', ')}` : 'on a relation it uses';
  const what = names.length > 0 ? names.join(', ') : 'that relation';
  return {
    allow: false,
    ruleId: 'builtin.analysis',
    sqlstate: SqlState.LockNotAvailable,
    message: `pgwarden cannot analyse this statement while this session's own transaction holds a lock ${on} (taken by TRUNCATE, ALTER, DROP, CREATE INDEX or LOCK in it), so it was not run`,
    detail:
      "every statement is analysed by PostgreSQL on a connection of pgwarden's own, which would wait for that lock until this transaction ends (rule: builtin.analysis)",
    hint: `commit the transaction that ran TRUNCATE/ALTER/LOCK on ${what} before using it, or use it in a later transaction; this transaction is still open and usable (ROLLBACK or COMMIT it)`,
    operatorHint: `locks held by the session's own transaction: ${[...new Set(own.map(qualified))].join(', ')}`,
    reason: 'analysis_self_locked',
    statements,
  };
}

function lockWaitTimedOut(waited: number, others: readonly RelationLock[], statements: Deny['statements']): Deny {
  const names = namedByStatement(others, statements);
  return {
    allow: false,
    ruleId: 'builtin.analysis',
    sqlstate: SqlState.LockNotAvailable,
    message: `statement refused by pgwarden: ${names.length > 0 ? `relation ${names.join(', ')} is locked by another transaction; ` : 'a relation it uses is locked by another transaction; '}PostgreSQL's analysis of it waited ${waited} ms, so it was not run`,
    detail: 'pgwarden waits for a lock up to analysis.timeout before the statement runs (rule: builtin.analysis)',
    hint: 'retry when the other transaction has ended',
    operatorHint: `conflicting locks held or requested by other transactions: ${others.map((l) => `${qualified(l)} (${l.pid === undefined ? 'prepared transaction' : `pid ${l.pid}`}${l.granted ? '' : ', queued'})`).join(', ')}`,
    reason: 'analysis_lock_timeout',
    statements,
  };
}
