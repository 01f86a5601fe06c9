// CatalogFollower: which refusals wait for a catalog refresh after DDL, and how refreshes are shared and spaced.
import { describe, expect, it, vi } from 'vitest';
import { CatalogFollower } from '../../../proxy/session/catalog-follow.ts';
import type { Decision } from '../../../policy/types.ts';

const allowed = (...kinds: string[]): Decision => ({
  allow: true,
  ruleId: 'r',
  statements: kinds.map((kind) => ({ kind, relations: [], columns: [], functions: [] })),
  rewrittenSql: undefined,
  rowCap: undefined,
  effects: [],
  shadowDenied: undefined,
});
const refused = (reason: string): Decision => ({
  allow: false,
  ruleId: 'r',
  sqlstate: '42501',
  message: 'm',
  detail: undefined,
  hint: undefined,
  reason,
  statements: [{ kind: 'InsertStmt', relations: [], columns: [], functions: [] }],
});

function follower(minIntervalMs = 0) {
  const starts: number[] = [];
  let release: (() => void)[] = [];
  const f = new CatalogFollower({
    minIntervalMs,
    waitMs: 2_000,
    refresh: () =>
      new Promise<boolean>((resolve) => {
        starts.push(Date.now());
        release.push(() => resolve(true));
      }),
  });
  const finish = () => {
    const r = release;
    release = [];
    for (const x of r) x();
  };
  return { f, starts, finish };
}

describe('CatalogFollower', () => {
  it('no refusal waits before any DDL, nor one a catalog cannot explain', () => {
    const { f } = follower();
    expect(f.mayBeStale(refused('unknown_relation'))).toBe(false);
    f.note(allowed('CreateStmt'), 10);
    f.note(refused('function_denied'), 10);
    expect(f.mayBeStale(refused('function_denied'))).toBe(false);
    expect(f.mayBeStale(allowed('InsertStmt'))).toBe(false);
  });

  it("a DDL statement counts once the session's next decision shows it ran; then until a refresh starts", async () => {
    const { f, starts, finish } = follower();
    f.note(allowed('CreateStmt'), 10);
    // Another session's refusal before session 10 has sent anything else: the DDL may not have run yet.
    f.note(refused('unknown_relation'), 11);
    expect(f.mayBeStale(refused('unknown_relation'))).toBe(false);
    f.note(refused('unknown_relation'), 10);
    expect(f.mayBeStale(refused('unknown_relation'))).toBe(true);
    const waiting = f.awaitRefresh();
    await new Promise((r) => setTimeout(r, 10));
    expect(starts).toHaveLength(1);
    // Started after the change: covered, so later refusals do not ask again.
    expect(f.mayBeStale(refused('unknown_relation'))).toBe(false);
    finish();
    expect(await waiting).toBe(true);
  });

  it('DDL inside a transaction block counts when the block ends, not before; a block without DDL does not count', () => {
    const { f } = follower();
    f.note(allowed('TransactionStmt'), 20, 'BEGIN');
    f.note(allowed('TransactionStmt'), 20, 'COMMIT');
    f.note(refused('unknown_relation'), 20);
    expect(f.mayBeStale(refused('unknown_relation'))).toBe(false);
    f.note(allowed('TransactionStmt'), 21, 'begin isolation level serializable');
    f.note(allowed('CreateStmt'), 21, 'CREATE TABLE app.t (a int)');
    f.note(allowed('InsertStmt'), 21, 'INSERT INTO t VALUES (1)');
    f.note(allowed('TransactionStmt'), 21, 'SAVEPOINT s');
    f.note(allowed('TransactionStmt'), 21, 'ROLLBACK TO s');
    // Still inside the block: a refresh could not see the table, so a refusal does not wait for one.
    f.note(refused('unknown_relation'), 21);
    expect(f.mayBeStale(refused('unknown_relation'))).toBe(false);
    f.note(allowed('TransactionStmt'), 21, 'COMMIT'); // the CREATE is visible once this has run
    f.note(refused('unknown_relation'), 21);
    expect(f.mayBeStale(refused('unknown_relation'))).toBe(true);
  });

  it('a whole block in one simple Query counts once it has run', () => {
    const { f } = follower();
    f.note(
      allowed('TransactionStmt', 'CreateStmt', 'TransactionStmt'),
      22,
      'BEGIN; CREATE TABLE app.t (a int); COMMIT',
    );
    f.note(refused('unknown_relation'), 22);
    expect(f.mayBeStale(refused('unknown_relation'))).toBe(true);
  });

  it('refusals while a refresh runs share one queued behind it (it may predate them), and starts are spaced', async () => {
    vi.useFakeTimers();
    try {
      const { f, starts, finish } = follower(150);
      f.note(allowed('CreateStmt'), 30);
      f.note(refused('unknown_relation'), 30);
      const first = f.awaitRefresh();
      await vi.advanceTimersByTimeAsync(10);
      const later = Array.from({ length: 20 }, () => f.awaitRefresh());
      finish();
      expect(await first).toBe(true);
      // The queued refresh waits out the interval since the first one started.
      await vi.advanceTimersByTimeAsync(100);
      expect(starts).toHaveLength(1);
      await vi.advanceTimersByTimeAsync(50);
      expect(starts).toHaveLength(2);
      finish();
      expect(await Promise.all(later)).toEqual(later.map(() => true));
      expect(starts).toHaveLength(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a refresh that takes longer than the wait leaves the refusal standing', async () => {
    const f = new CatalogFollower({ waitMs: 30, refresh: () => new Promise<boolean>(() => {}) });
    expect(await f.awaitRefresh()).toBe(false);
  });
});
