// The decision cache: by the text with its literals taken out when the decision cannot depend on their values, else by exact text.
//
// The normalised key is policy/literals.ts's: the text outside constants verbatim, each constant replaced by its
// class, so pgbench's `… WHERE aid = 123` for every aid shares one entry. Whether a decision may be shared under it
// is the evaluation's call (EvaluationFacts.literalSensitive), and only for the statement kinds below.
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { CatalogSnapshot, Decision, SessionView } from './types.ts';
import { literalShape } from './literals.ts';
import { evaluateWithFacts, type EvaluationFacts } from './evaluate.ts';
import { deepFreeze } from '../lib/freeze.ts';

/** Statement kinds whose decision depends only on structure once literal-sensitive constructs are excluded. */
const NORMALIZABLE_KINDS = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** Reasons that say something about pgwarden's state, not the statement: never cached. */
const UNCACHEABLE_REASONS = new Set([
  'internal',
  'parser_trap',
  'parser_unavailable',
  'decide_pool_busy',
  'decide_timeout',
  'decide_worker_failed',
]);

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
 * Where a miss is to be stored once its decision is known (DecisionCache.probe → DecisionCache.store). A class, so a
 * probe's answer is told apart with instanceof and a hit allocates nothing.
 */
export class CacheMiss {
  constructor(
    readonly sql: string,
    /** The exact map's key for `sql` (the text, or its hash when long). */
    readonly key: string,
    readonly prefix: string,
    readonly normKey: string | undefined,
    readonly shapeTail: number,
    /** The snapshot the decision was asked under: a decision made under another one is not stored. */
    readonly catalog: CatalogSnapshot,
  ) {}
}

/** A cached decision and its slot. */
export interface CacheEntry {
  decision: Decision;
  slot: DecisionSlot;
}

/**
 * Texts longer than this are keyed by their SHA-256 rather than by themselves: a cache of denied 1 MiB hostile texts
 * would otherwise hold a MiB per entry for the key alone. A NUL first keeps such keys apart from every SQL text (no
 * query text can contain a NUL). Hashing reads the text once, as the map's own string hash does.
 */
export const HASHED_KEY_ABOVE = 4096;

function exactKey(sql: string): string {
  return sql.length > HASHED_KEY_ABOVE ? `\u0000${createHash('sha256').update(sql, 'utf8').digest('base64')}` : sql;
}

/** Default byte budget of the cache (both of its maps together). */
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;

/** Bytes an entry costs beyond its strings: the map entry, the decision object and its arrays (a rough, fixed figure). */
const ENTRY_OVERHEAD = 256;

/** An estimate of the memory a decision holds (strings at 2 bytes per UTF-16 unit), computed once when it is stored. */
export function decisionBytes(d: Decision): number {
  let n = ENTRY_OVERHEAD;
  const str = (x: string | undefined) => (x === undefined ? 0 : 2 * x.length + 16);
  for (const st of d.statements) {
    n += 64 + str(st.kind);
    for (const r of st.relations) n += str(r);
    for (const c of st.columns) n += str(c);
    for (const f of st.functions) n += str(f);
  }
  if (d.allow) {
    n += str(d.rewrittenSql) + 32 * d.effects.length;
  } else {
    n += str(d.message) + str(d.detail) + str(d.hint);
  }
  return n;
}

/**
 * LRU of decisions keyed by policy version, role, protocol mode and SQL, bounded in entries and in bytes (the SQL
 * text of an entry is its key, so without a byte bound 10,000 distinct 1 MiB statements would hold 20 GB). A
 * different catalog snapshot object clears it (decisions depend on relation and function resolution). Decisions that
 * read session state (EXECUTE, FETCH) or pgwarden's own health are never cached; decisions that read a literal's
 * value are cached by exact text only.
 */
export class DecisionCache {
  /**
   * SQL text (its SHA-256 above HASHED_KEY_ABOVE) → (version/role/mode prefix → decision): the hot path hashes the
   * client's string as is, without concatenating.
   */
  private readonly exact: LRUCache<string, Map<string, { decision: Decision; slot: DecisionSlot }>>;
  private readonly normalized: LRUCache<string, SharedDecision>;
  private catalog: CatalogSnapshot | undefined;
  readonly stats: DecisionCacheStats = { exactHits: 0, normalizedHits: 0, misses: 0 };
  /** Bytes of each exact entry's decisions (its key is counted by sizeCalculation). */
  private readonly decisionSizes = new WeakMap<Map<string, { decision: Decision; slot: DecisionSlot }>, number>();

  /**
   * `max` entries per map (default 10,000) and `maxBytes` in all (default 64 MiB): three quarters for entries by exact
   * text (their keys are the statements, up to 4 KiB, or a hash), one quarter for the shared, literal-normalised ones
   * (keys ≤ 8 KiB).
   */
  constructor(opts: { max?: number; maxBytes?: number } = {}) {
    const max = opts.max ?? 10_000;
    const maxBytes = opts.maxBytes ?? DEFAULT_CACHE_BYTES;
    if (!(maxBytes >= 4096)) throw new TypeError('DecisionCache maxBytes must be at least 4096');
    const exactBytes = Math.floor((maxBytes * 3) / 4);
    this.exact = new LRUCache<string, Map<string, { decision: Decision; slot: DecisionSlot }>>({
      max,
      maxSize: exactBytes,
      sizeCalculation: (m, sql) => 2 * sql.length + (this.decisionSizes.get(m) ?? ENTRY_OVERHEAD),
    });
    this.normalized = new LRUCache<string, SharedDecision>({
      max,
      maxSize: maxBytes - exactBytes,
      sizeCalculation: (v, key) => 2 * key.length + 2 * v.append.length + ENTRY_OVERHEAD,
    });
  }

  /** Bytes held now (as the bound counts them), both maps. */
  get bytes(): number {
    return this.exact.calculatedSize + this.normalized.calculatedSize;
  }

  /** Entries held now, both maps. */
  get size(): number {
    return this.exact.size + this.normalized.size;
  }

  private lastPrefix = { version: -1, role: '', narrowing: '', mode: '', prefix: '' };

  /**
   * The key prefix of (version, role, token narrowing, mode); the same tuple repeats for every statement of a session.
   * A narrowed role (policy/narrow.ts) keys by its narrowing's digest: it shares no entry with the role as the policy
   * has it or with another narrowing of it. A role name has no NUL and a digest is hex, so the parts cannot run together.
   */
  private prefixFor(version: number, role: string, narrowing: string, mode: string): string {
    const p = this.lastPrefix;
    if (p.version !== version || p.role !== role || p.narrowing !== narrowing || p.mode !== mode) {
      this.lastPrefix = {
        version,
        role,
        narrowing,
        mode,
        prefix: `${version}\u0000${role}\u0000${narrowing}\u0000${mode}\u0000`,
      };
    }
    return this.lastPrefix.prefix;
  }

  clear(): void {
    this.exact.clear();
    this.normalized.clear();
  }

  /** The decision for `sql`, from the cache or from evaluate(); same contract as evaluate(). */
  decide(
    sql: string,
    mode: 'simple' | 'parse',
    session: SessionView,
    catalog: CatalogSnapshot,
    policyVersion: number,
  ): Decision {
    return this.lookup(sql, mode, session, catalog, policyVersion).decision;
  }

  /** decide(), with the entry's slot (a fresh, unshared one when the decision is not cached). */
  lookup(
    sql: string,
    mode: 'simple' | 'parse',
    session: SessionView,
    catalog: CatalogSnapshot,
    policyVersion: number,
  ): { decision: Decision; slot: DecisionSlot } {
    const p = this.probe(sql, mode, session, catalog, policyVersion);
    if (!(p instanceof CacheMiss)) return p;
    return this.store(p, evaluateWithFacts(sql, mode, session, catalog, policyVersion));
  }

  /**
   * The cached decision for `sql`, or where to store the one evaluateWithFacts gives for it (store()): the two halves
   * of lookup(), for a caller that evaluates elsewhere (a decide worker) in between.
   */
  probe(
    sql: string,
    mode: 'simple' | 'parse',
    session: SessionView,
    catalog: CatalogSnapshot,
    policyVersion: number,
  ): CacheEntry | CacheMiss {
    if (catalog !== this.catalog) {
      this.clear();
      this.catalog = catalog;
    }
    // The session's temporary objects change how unqualified names resolve (SessionView.tempObjects, deferTemporary).
    const temporaryMode =
      session.tempObjects === false
        ? session.deferTemporary === true
          ? `${mode}-+`
          : `${mode}-`
        : session.deferTemporary === true
          ? `${mode}+`
          : mode;
    const prefix = this.prefixFor(
      policyVersion,
      session.role.name,
      session.role.narrowing?.digest ?? '',
      session.deferTypes === true ? `${temporaryMode}~` : temporaryMode,
    );
    // The shared entry first: a text with literals rarely repeats exactly (pgbench's simple mode never does).
    const shape = literalShape(sql);
    const normKey = shape === undefined ? undefined : prefix + shape.key;
    if (normKey !== undefined) {
      const shared = this.normalized.get(normKey);
      if (shared !== undefined) {
        this.stats.normalizedHits++;
        const d = shared.decision;
        if (shared.dropTail < 0 || !d.allow) return shared;
        return {
          decision: { ...d, rewrittenSql: sql.slice(0, sql.length - shared.dropTail) + shared.append },
          slot: shared.slot,
        };
      }
    }
    const key = exactKey(sql);
    const hit = this.exact.get(key)?.get(prefix);
    if (hit !== undefined) {
      this.stats.exactHits++;
      return hit;
    }
    this.stats.misses++;
    return new CacheMiss(sql, key, prefix, normKey, shape?.tail ?? 0, catalog);
  }

  /** Keeps the decision evaluateWithFacts gave for a probe's miss (when it may be kept) and returns its entry. */
  store(miss: CacheMiss, facts: EvaluationFacts): { decision: Decision; slot: DecisionSlot } {
    const { sql, key, prefix, normKey } = miss;
    const d = facts.decision;
    const entry = { decision: d, slot: newSlot() };
    if (facts.sessionDependent) return entry;
    if (!d.allow && UNCACHEABLE_REASONS.has(d.reason)) return entry;
    // The catalog changed while this was decided elsewhere: the decision belongs to the old snapshot.
    if (miss.catalog !== this.catalog) return entry;
    deepFreeze(d);
    const size = decisionBytes(d);
    const bySql = this.exact.get(key);
    if (bySql !== undefined) {
      // A new map under the same key, so the LRU counts the added decision (it keeps the size of a value set again).
      const m = new Map(bySql);
      m.set(prefix, entry);
      this.decisionSizes.set(m, (this.decisionSizes.get(bySql) ?? 0) + size);
      this.exact.set(key, m);
    } else {
      const m = new Map([[prefix, entry]]);
      this.decisionSizes.set(m, size);
      this.exact.set(key, m);
    }
    if (normKey === undefined || facts.literalSensitive) return entry;
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
      if (dropTail > miss.shapeTail) return entry;
      append = r.slice(p);
    }
    // The exact and the shared entry are one decision, so they share one slot.
    this.normalized.set(normKey, { decision: d, slot: entry.slot, dropTail, append });
    return entry;
  }
}
