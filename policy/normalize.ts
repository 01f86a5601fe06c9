// The decision cache: by the text with its literals taken out when the decision cannot depend on their values, else by exact text.
//
// The normalised key is policy/literals.ts's: the text outside constants verbatim, each constant replaced by its
// class, so pgbench's `… WHERE aid = 123` for every aid shares one entry. Whether a decision may be shared under it
// is the evaluation's call (EvaluationFacts.literalSensitive), and only for the statement kinds below.
import { LRUCache } from 'lru-cache';
import type { CatalogSnapshot, Decision, SessionView } from './types.ts';
import { literalShape } from './literals.ts';
import { evaluateWithFacts } from './evaluate.ts';

/** Statement kinds whose decision depends only on structure once literal-sensitive constructs are excluded. */
const NORMALIZABLE_KINDS = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** Reasons that say something about pgwarden's state, not the statement: never cached. */
const UNCACHEABLE_REASONS = new Set(['internal', 'parser_trap', 'parser_unavailable']);

/**
 * Per-entry state a caller may attach to a cached decision (the server analysis verdicts): it lives and dies
 * with the entry, so a reload, a catalog change or an eviction forgets it too.
 */
export interface DecisionSlot {
  server: Map<string, unknown> | undefined;
}

function newSlot(): DecisionSlot {
  return { server: undefined };
}

export interface DecisionCacheStats {
  exactHits: number;
  normalizedHits: number;
  misses: number;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

/**
 * A decision shared under a normalised key. A LIMIT-capping rewrite of the form "the text without
 * its last `dropTail` characters, then `append`" is shared too when the dropped end lies after the
 * last constant: every text with the key has those same characters there, so its rewrite is its own
 * prefix plus the same `append` (what the rewrite would have produced for it).
 */
interface SharedDecision {
  decision: Decision;
  slot: DecisionSlot;
  /** Characters dropped from the end of the text before `append`; -1 when the decision has no rewrite. */
  dropTail: number;
  append: string;
}

/**
 * LRU of decisions keyed by policy version, role, protocol mode and SQL. A different catalog
 * snapshot object clears it (decisions depend on relation and function resolution). Decisions
 * that read session state (EXECUTE, FETCH) or pgwarden's own health are never cached; decisions
 * that read a literal's value are cached by exact text only.
 */
export class DecisionCache {
  /** SQL text → (version/role/mode prefix → decision): the hot path hashes the client's string as is, without concatenating. */
  private readonly exact: LRUCache<string, Map<string, { decision: Decision; slot: DecisionSlot }>>;
  private readonly normalized: LRUCache<string, SharedDecision>;
  private catalog: CatalogSnapshot | undefined;
  readonly stats: DecisionCacheStats = { exactHits: 0, normalizedHits: 0, misses: 0 };

  constructor(opts: { max?: number } = {}) {
    const max = opts.max ?? 10_000;
    this.exact = new LRUCache<string, Map<string, { decision: Decision; slot: DecisionSlot }>>({ max });
    this.normalized = new LRUCache<string, SharedDecision>({ max });
  }

  private lastPrefix = { version: -1, role: '', mode: '', prefix: '' };

  /** The key prefix of (version, role, mode); the same triple repeats for every statement of a session. */
  private prefixFor(version: number, role: string, mode: string): string {
    const p = this.lastPrefix;
    if (p.version !== version || p.role !== role || p.mode !== mode) {
      this.lastPrefix = { version, role, mode, prefix: `${version}\u0000${role}\u0000${mode}\u0000` };
    }
    return this.lastPrefix.prefix;
  }

  clear(): void {
    this.exact.clear();
    this.normalized.clear();
  }

  /** The decision for `sql`, from the cache or from evaluate(); same contract as evaluate(). */
  decide(sql: string, mode: 'simple' | 'parse', session: SessionView, catalog: CatalogSnapshot, policyVersion: number): Decision {
    return this.lookup(sql, mode, session, catalog, policyVersion).decision;
  }

  /** decide(), with the entry's slot (a fresh, unshared one when the decision is not cached). */
  lookup(sql: string, mode: 'simple' | 'parse', session: SessionView, catalog: CatalogSnapshot, policyVersion: number): { decision: Decision; slot: DecisionSlot } {
    if (catalog !== this.catalog) {
      this.clear();
      this.catalog = catalog;
    }
    const prefix = this.prefixFor(policyVersion, session.role.name, mode);
    // The shared entry first: a text with literals rarely repeats exactly (pgbench's simple mode never does).
    const shape = literalShape(sql);
    const normKey = shape === undefined ? undefined : prefix + shape.key;
    if (normKey !== undefined) {
      const shared = this.normalized.get(normKey);
      if (shared !== undefined) {
        this.stats.normalizedHits++;
        const d = shared.decision;
        if (shared.dropTail < 0 || !d.allow) return shared;
        return { decision: { ...d, rewrittenSql: sql.slice(0, sql.length - shared.dropTail) + shared.append }, slot: shared.slot };
      }
    }
    const bySql = this.exact.get(sql);
    const hit = bySql?.get(prefix);
    if (hit !== undefined) {
      this.stats.exactHits++;
      return hit;
    }
    this.stats.misses++;
    const facts = evaluateWithFacts(sql, mode, session, catalog, policyVersion);
    const d = facts.decision;
    const entry = { decision: d, slot: newSlot() };
    if (facts.sessionDependent) return entry;
    if (!d.allow && UNCACHEABLE_REASONS.has(d.reason)) return entry;
    deepFreeze(d);
    if (bySql !== undefined) bySql.set(prefix, entry);
    else this.exact.set(sql, new Map([[prefix, entry]]));
    if (normKey === undefined || shape === undefined || facts.literalSensitive) return entry;
    if (d.statements.length === 0 || !d.statements.every((s) => NORMALIZABLE_KINDS.has(s.kind))) return entry;
    if (d.allow && d.effects.length > 0) return entry;
    let dropTail = -1;
    let append = '';
    if (d.allow && d.rewrittenSql !== undefined) {
      const r = d.rewrittenSql;
      let p = 0;
      const max = Math.min(sql.length, r.length);
      while (p < max && sql.charCodeAt(p) === r.charCodeAt(p)) p++;
      dropTail = sql.length - p;
      // The rewrite changed text before the last constant (a deparsed rewrite): exact text only.
      if (dropTail > shape.tail) return entry;
      append = r.slice(p);
    }
    // The exact and the shared entry are one decision, so they share one slot.
    this.normalized.set(normKey, { decision: d, slot: entry.slot, dropTail, append });
    return entry;
  }
}
