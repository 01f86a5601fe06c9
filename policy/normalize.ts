// The decision cache: exact-text hits first, then a literal-normalised key from the real scanner when the decision cannot depend on literal values.
import { LRUCache } from 'lru-cache';
import type { CatalogSnapshot, Decision, SessionView } from './types.ts';
import { scanTokens } from './parser.ts';
import { evaluateWithFacts } from './evaluate.ts';

// Token types of libpg-query 18's scanner (gram.y order): constants are replaced, comments dropped.
const FCONST = 260;
const SCONST = 261;
const USCONST = 262;
const BCONST = 263;
const XCONST = 264;
const ICONST = 266;
const SQL_COMMENT = 275;
const C_COMMENT = 276;
const CONSTANT_TYPES = new Set([FCONST, SCONST, USCONST, BCONST, XCONST, ICONST]);

/** Longer texts are only cached by exact text: scanning them costs more than a cache saves. */
export const MAX_NORMALIZE_LENGTH = 4096;

/**
 * A key under which statements that differ only in the values of literal constants (and in
 * whitespace and comments) coincide, e.g. pgbench's `… WHERE aid = 123` for every aid.
 * Built from the real scanner's tokens, so comment and quoting rules are PostgreSQL's: each token
 * is length-prefixed (no two token sequences share a key), and a constant keeps its token type.
 * Returns undefined when the text should not be cached by a normalised form (too long, does not
 * lex, contains no constant). Whether a given decision may be shared under the key is decided by
 * the evaluation (EvaluationFacts.literalSensitive), not here.
 */
export function cacheKeyFor(sql: string): string | undefined {
  if (sql.length > MAX_NORMALIZE_LENGTH) return undefined;
  const tokens = scanTokens(sql);
  if (tokens === undefined) return undefined;
  let key = '';
  let constants = 0;
  for (const t of tokens) {
    const type = t.tokenType;
    if (type === SQL_COMMENT || type === C_COMMENT) continue;
    if (CONSTANT_TYPES.has(type)) {
      key += `?${type};`;
      constants++;
    } else {
      key += `${type}:${t.text.length}:${t.text};`;
    }
  }
  return constants === 0 ? undefined : key;
}

/** Statement kinds whose decision depends only on structure once literal-sensitive constructs are excluded. */
const NORMALIZABLE_KINDS = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** Reasons that say something about pgwarden's state, not the statement: never cached. */
const UNCACHEABLE_REASONS = new Set(['internal', 'parser_trap', 'parser_unavailable']);

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
 * LRU of decisions keyed by policy version, role, protocol mode and SQL. A different catalog
 * snapshot object clears it (decisions depend on relation and function resolution). Decisions
 * that read session state (EXECUTE, FETCH) or pgwarden's own health are never cached; decisions
 * with a LIMIT rewrite are cached by exact text only (the rewrite embeds the literals).
 */
export class DecisionCache {
  /** SQL text → (version/role/mode prefix → decision): the hot path hashes the client's string as is, without concatenating. */
  private readonly exact: LRUCache<string, Map<string, Decision>>;
  private readonly normalized: LRUCache<string, Decision>;
  private catalog: CatalogSnapshot | undefined;
  readonly stats: DecisionCacheStats = { exactHits: 0, normalizedHits: 0, misses: 0 };

  constructor(opts: { max?: number } = {}) {
    const max = opts.max ?? 10_000;
    this.exact = new LRUCache<string, Map<string, Decision>>({ max });
    this.normalized = new LRUCache<string, Decision>({ max });
  }

  clear(): void {
    this.exact.clear();
    this.normalized.clear();
  }

  /** The decision for `sql`, from the cache or from evaluate(); same contract as evaluate(). */
  decide(sql: string, mode: 'simple' | 'parse', session: SessionView, catalog: CatalogSnapshot, policyVersion: number): Decision {
    if (catalog !== this.catalog) {
      this.clear();
      this.catalog = catalog;
    }
    const prefix = `${policyVersion}\u0000${session.role.name}\u0000${mode}\u0000`;
    const bySql = this.exact.get(sql);
    const hit = bySql?.get(prefix);
    if (hit !== undefined) {
      this.stats.exactHits++;
      return hit;
    }
    const norm = cacheKeyFor(sql);
    const normKey = norm === undefined ? undefined : prefix + norm;
    if (normKey !== undefined) {
      const nhit = this.normalized.get(normKey);
      if (nhit !== undefined) {
        this.stats.normalizedHits++;
        return nhit;
      }
    }
    this.stats.misses++;
    const facts = evaluateWithFacts(sql, mode, session, catalog, policyVersion);
    const d = facts.decision;
    if (facts.sessionDependent) return d;
    if (!d.allow && UNCACHEABLE_REASONS.has(d.reason)) return d;
    deepFreeze(d);
    if (bySql !== undefined) bySql.set(prefix, d);
    else this.exact.set(sql, new Map([[prefix, d]]));
    const shareable =
      normKey !== undefined &&
      !facts.literalSensitive &&
      d.statements.length > 0 &&
      d.statements.every((s) => NORMALIZABLE_KINDS.has(s.kind)) &&
      (!d.allow || (d.rewrittenSql === undefined && d.effects.length === 0));
    if (shareable) this.normalized.set(normKey, d);
    return d;
  }
}
