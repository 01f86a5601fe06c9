// Literal-normalised cache keys, and the decision cache: literal-insensitive sharing only.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { CacheMiss, DecisionCache } from '../../../policy/decision-cache.ts';
import { literalShape } from '../../../policy/literals.ts';
import { evaluateWithFacts } from '../../../policy/evaluate.ts';

/** The normalised part of the cache key. */
const cacheKeyFor = (sql: string): string | undefined => literalShape(sql)?.key;
import { CATALOG, ROLES, makeCatalog, sessionFor } from '../../fixtures/catalog.ts';

beforeAll(async () => {
  await initParser();
});

describe('the literal-normalised cache key', () => {
  it('maps pgbench statements with changing literals to one key', () => {
    const a = cacheKeyFor('SELECT abalance FROM pgbench_accounts WHERE aid = 123;');
    const b = cacheKeyFor('SELECT abalance FROM pgbench_accounts WHERE aid = 98765;');
    expect(a).toBeDefined();
    expect(a).toBe(b);
    // Everything outside constants is kept verbatim, and a comment is left to the exact-text cache.
    expect(cacheKeyFor('SELECT  abalance FROM pgbench_accounts WHERE aid = 98765;')).not.toBe(a);
    expect(cacheKeyFor('SELECT abalance FROM pgbench_accounts /* c */ WHERE aid = 98765;')).toBeUndefined();
  });

  it('keeps structure, identifiers, operators and the constant type', () => {
    const k = (s: string) => cacheKeyFor(s);
    expect(k('SELECT a FROM t WHERE x = 1')).not.toBe(k('SELECT b FROM t WHERE x = 1'));
    expect(k('SELECT a FROM t WHERE x = 1')).not.toBe(k('SELECT a FROM t WHERE x = 1.5'));
    expect(k('SELECT a FROM t WHERE x = 1')).not.toBe(k("SELECT a FROM t WHERE x = '1'"));
    expect(k('SELECT a FROM t WHERE x = 1')).not.toBe(k('SELECT a FROM t WHERE x < 1'));
    expect(k('SELECT a FROM t WHERE x = 1')).not.toBe(k('SELECT a FROM "t" WHERE x = 1'));
    // the real lexer decides where a literal ends: a comment-looking quote is not a literal
    expect(k("SELECT /* ' */ 1; DELETE FROM victim; SELECT /* ' */ 2")).not.toBe(k('SELECT 1'));
  });

  it('returns undefined when there is no literal, for long text, and for text that does not lex', () => {
    expect(cacheKeyFor('SELECT a FROM t')).toBeUndefined();
    expect(cacheKeyFor(`SELECT ${'1,'.repeat(5000)}1`)).toBeUndefined();
    expect(cacheKeyFor("SELECT 'x")).toBeUndefined();
  });
});

describe('DecisionCache', () => {
  const s = () => sessionFor(ROLES.analyst);

  it('serves exact repeats and shares literal-insensitive decisions', () => {
    const c = new DecisionCache();
    const d1 = c.decide('SELECT abalance FROM pgbench_accounts WHERE aid = 1', 'simple', s(), CATALOG, 1);
    const d2 = c.decide('SELECT abalance FROM pgbench_accounts WHERE aid = 1', 'simple', s(), CATALOG, 1);
    const d3 = c.decide('SELECT abalance FROM pgbench_accounts WHERE aid = 2', 'simple', s(), CATALOG, 1);
    expect(d1.allow && d2 === d1 && d3 === d1).toBe(true);
    // Texts with literals look in the shared entries first; text without any only has the exact one.
    expect(c.stats).toEqual({ exactHits: 0, normalizedHits: 2, misses: 1 });
    c.decide('SELECT abalance FROM pgbench_accounts', 'simple', s(), CATALOG, 1);
    c.decide('SELECT abalance FROM pgbench_accounts', 'simple', s(), CATALOG, 1);
    expect(c.stats).toEqual({ exactHits: 1, normalizedHits: 2, misses: 2 });
  });

  it('current_setting(a) and current_setting(b) are not shared', () => {
    const c = new DecisionCache();
    expect(c.decide("SELECT current_setting('TimeZone')", 'simple', s(), CATALOG, 1).allow).toBe(true);
    expect(c.decide("SELECT current_setting('data_directory')", 'simple', s(), CATALOG, 1).allow).toBe(false);
  });

  it('reg* casts, SET values and LIMITs under a row cap are not shared', () => {
    const c = new DecisionCache();
    const intro = sessionFor(ROLES.timed);
    expect(c.decide("SET statement_timeout = '1s'", 'simple', intro, CATALOG, 1).allow).toBe(true);
    expect(c.decide("SET statement_timeout = '1h'", 'simple', intro, CATALOG, 1).allow).toBe(false);
    const capped = sessionFor(ROLES.capped);
    const small = c.decide('SELECT id FROM orders LIMIT 5', 'simple', capped, CATALOG, 1);
    const large = c.decide('SELECT id FROM orders LIMIT 5000', 'simple', capped, CATALOG, 1);
    expect(small.allow && small.rewrittenSql).toBeUndefined();
    expect(large.allow && large.rewrittenSql).toBe('SELECT id FROM orders LIMIT 101');
    // a rewrite embeds the literals: a new literal gets its own rewrite
    const a = c.decide('SELECT id FROM orders WHERE id = 1', 'simple', capped, CATALOG, 1);
    const b = c.decide('SELECT id FROM orders WHERE id = 2', 'simple', capped, CATALOG, 1);
    expect(a.allow && a.rewrittenSql).toBe('SELECT id FROM orders WHERE id = 1\nLIMIT 101');
    expect(b.allow && b.rewrittenSql).toBe('SELECT id FROM orders WHERE id = 2\nLIMIT 101');
    // the second came from the shared entry, with its own literal spliced in
    expect(c.stats.normalizedHits).toBe(1);
    // a trailing semicolon and newline are dropped by the rewrite; they sit after the last literal, so it is shared
    c.decide('SELECT id FROM orders WHERE id = 7;\n', 'simple', capped, CATALOG, 1);
    const longer = c.decide('SELECT id FROM orders WHERE id = 123456789;\n', 'simple', capped, CATALOG, 1);
    expect(longer.allow && longer.rewrittenSql).toBe('SELECT id FROM orders WHERE id = 123456789\nLIMIT 101');
    expect(c.stats.normalizedHits).toBe(2);
    // the same result as deciding it afresh
    const fresh = new DecisionCache().decide(
      'SELECT id FROM orders WHERE id = 123456789;\n',
      'simple',
      capped,
      CATALOG,
      1,
    );
    expect(fresh.allow && fresh.rewrittenSql).toBe(longer.allow && longer.rewrittenSql);
  });

  it('a rewrite that changed text before the last literal is not shared', () => {
    const c = new DecisionCache();
    const capped = sessionFor(ROLES.capped);
    // A UNION needs the deparse path: its rewrite is re-emitted text, so the next literal must be decided afresh.
    const a = c.decide(
      'SELECT id FROM orders WHERE id = 1 UNION SELECT id FROM orders WHERE id = 2',
      'simple',
      capped,
      CATALOG,
      1,
    );
    const b = c.decide(
      'SELECT id FROM orders WHERE id = 3 UNION SELECT id FROM orders WHERE id = 4',
      'simple',
      capped,
      CATALOG,
      1,
    );
    expect(a.allow && b.allow).toBe(true);
    if (a.allow && b.allow && a.rewrittenSql !== undefined) {
      expect(b.rewrittenSql).toContain('3');
      expect(b.rewrittenSql).toContain('4');
      expect(b.rewrittenSql).not.toContain('= 1');
    }
  });

  it('keys by policy version, role and mode; a new catalog snapshot clears it', () => {
    const c = new DecisionCache();
    const sql = 'SELECT 1; SELECT 2';
    expect(c.decide(sql, 'simple', s(), CATALOG, 1).allow).toBe(true);
    expect(c.decide(sql, 'parse', s(), CATALOG, 1).allow).toBe(false);
    expect(c.decide('DELETE FROM orders WHERE id = 1', 'simple', sessionFor(ROLES.writer), CATALOG, 1).allow).toBe(
      true,
    );
    expect(c.decide('DELETE FROM orders WHERE id = 1', 'simple', s(), CATALOG, 1).allow).toBe(false);
    const base = makeCatalog();
    const relations = new Map(base.relations);
    relations.delete('public.orders');
    const other = { ...base, relations };
    expect(c.decide('SELECT id FROM orders', 'simple', s(), CATALOG, 1).allow).toBe(true);
    expect(c.decide('SELECT id FROM orders', 'simple', s(), other, 1).allow).toBe(false);
    expect(c.decide('SELECT id FROM orders', 'simple', s(), other, 2).allow).toBe(false);
  });

  it('never caches decisions that read session state', () => {
    const c = new DecisionCache();
    expect(c.decide('EXECUTE p', 'simple', sessionFor(ROLES.analyst, ['p']), CATALOG, 1).allow).toBe(true);
    expect(c.decide('EXECUTE p', 'simple', sessionFor(ROLES.analyst, []), CATALOG, 1).allow).toBe(false);
    expect(c.decide('FETCH 1 FROM c', 'simple', sessionFor(ROLES.analyst, [], ['c']), CATALOG, 1).allow).toBe(true);
    expect(c.decide('FETCH 1 FROM c', 'simple', sessionFor(ROLES.analyst), CATALOG, 1).allow).toBe(false);
  });

  it('cached decisions are frozen', () => {
    const c = new DecisionCache();
    const d = c.decide('SELECT id FROM orders WHERE id = 1', 'simple', s(), CATALOG, 1);
    expect(Object.isFrozen(d)).toBe(true);
    expect(Object.isFrozen(d.statements)).toBe(true);
  });

  it('an exact-text hit returns the cached decision without evaluating again (its cost is measured in bench/)', () => {
    const c = new DecisionCache();
    const sql = 'SELECT abalance FROM pgbench_accounts WHERE aid = 123;';
    const first = c.decide(sql, 'simple', s(), CATALOG, 1);
    const before = { ...c.stats };
    const again = c.decide(sql, 'simple', s(), CATALOG, 1);
    expect(again).toBe(first);
    expect(c.stats.misses).toBe(before.misses);
  });
});

describe('DecisionCache byte bound', () => {
  const s = () => sessionFor(ROLES.analyst);
  // A comment keeps the text out of the literal-normalised map: exact entries only.
  const text = (i: number, size: number) =>
    `SELECT id FROM orders /* ${String(i).padStart(6, '0')}${'x'.repeat(size)} */`;
  const long = (i: number) => text(i, 100 * 1024);

  it('holds at most maxBytes, statement texts included: the least recently used go first', () => {
    const budget = 64 * 1024;
    const c = new DecisionCache({ maxBytes: budget });
    // 4 KiB texts are their own keys (8 KiB each as counted): three quarters of 64 KiB hold a handful.
    for (let i = 0; i < 20; i++) c.decide(text(i, 4000), 'simple', s(), CATALOG, 1);
    expect(c.bytes).toBeLessThanOrEqual(budget);
    expect(c.size).toBeLessThan(20);
    expect(c.size).toBeGreaterThan(0);
    const misses = c.stats.misses;
    c.decide(text(19, 4000), 'simple', s(), CATALOG, 1);
    expect(c.stats.misses).toBe(misses);
    c.decide(text(0, 4000), 'simple', s(), CATALOG, 1);
    expect(c.stats.misses).toBe(misses + 1);
  });

  it('keys a long text by its hash: a 100 KiB statement costs its decision, not its text', () => {
    const c = new DecisionCache();
    for (let i = 0; i < 20; i++) c.decide(long(i), 'simple', s(), CATALOG, 1);
    expect(c.size).toBe(20);
    expect(c.bytes).toBeLessThan(20 * 4096);
    const misses = c.stats.misses;
    expect(c.decide(long(3), 'simple', s(), CATALOG, 1).allow).toBe(true);
    expect(c.stats.misses).toBe(misses);
    // Texts differing in their last character are different entries.
    const other = `${long(3).slice(0, -4)}y */`;
    c.decide(other, 'simple', s(), CATALOG, 1);
    expect(c.stats.misses).toBe(misses + 1);
  });

  it('counts every decision a text holds (several roles under one key)', () => {
    const c = new DecisionCache({ maxBytes: 8 * 1024 * 1024 });
    const sql = long(1);
    c.decide(sql, 'simple', s(), CATALOG, 1);
    const one = c.bytes;
    c.decide(sql, 'simple', sessionFor(ROLES.writer), CATALOG, 1);
    expect(c.bytes).toBeGreaterThan(one);
    expect(c.bytes).toBeLessThan(2 * one);
    // A row-capped role's decision holds its rewritten text: counted too, though the key is a hash.
    const before = c.bytes;
    c.decide(sql, 'simple', sessionFor(ROLES.capped), CATALOG, 1);
    expect(c.bytes - before).toBeGreaterThan(2 * sql.length);
  });

  it('a decision made elsewhere under an older catalog snapshot is not stored (probe, then store)', () => {
    const c = new DecisionCache();
    const sql = 'SELECT id FROM orders';
    const p = c.probe(sql, 'simple', s(), CATALOG, 1);
    expect(p).toBeInstanceOf(CacheMiss);
    // The store swaps in a new snapshot while the decision is being made on a worker.
    const other = makeCatalog();
    expect(c.probe('SELECT 1', 'simple', s(), other, 1)).toBeInstanceOf(CacheMiss);
    if (p instanceof CacheMiss) c.store(p, evaluateWithFacts(sql, 'simple', s(), CATALOG, 1));
    expect(c.probe(sql, 'simple', s(), other, 1)).toBeInstanceOf(CacheMiss);
    // Under the current snapshot it is.
    const q = c.probe(sql, 'simple', s(), other, 1);
    if (q instanceof CacheMiss) c.store(q, evaluateWithFacts(sql, 'simple', s(), other, 1));
    expect(c.probe(sql, 'simple', s(), other, 1)).not.toBeInstanceOf(CacheMiss);
  });
});
