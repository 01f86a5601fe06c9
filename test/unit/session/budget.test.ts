// Budget windows and checks: sliding 60 s windows in one-second buckets, exact retry times, per-subject/per-agent accounts.
import { describe, expect, it } from 'vitest';
import { BudgetLedger, MinuteWindow, checkBudget } from '../../../proxy/session/budget.ts';
import type { Identity } from '../../../proxy/auth/jwt.ts';
import type { RoleBudget } from '../../../policy/types.ts';

const budget = (b: Partial<RoleBudget>): RoleBudget => ({
  per: 'agent',
  statementsPerMinute: undefined,
  rowsPerMinute: undefined,
  bytesPerMinute: undefined,
  concurrentStatements: undefined,
  ...b,
});

const id = (sub: string, agent?: string) => ({ sub, agent }) as unknown as Identity;

describe('MinuteWindow', () => {
  it('counts what was added in the last 60 seconds, to the second', () => {
    const w = new MinuteWindow();
    w.add(3, 10_500); // second 10
    w.add(2, 40_000); // second 40
    expect(w.total(40_100)).toBe(5);
    expect(w.total(69_999)).toBe(5); // second 69: second 10 is still inside (10..69)
    expect(w.total(70_000)).toBe(2); // second 70: second 10 has left
    expect(w.total(100_000)).toBe(0);
    expect(w.total(10_000_000)).toBe(0);
  });

  it('says exactly when usage falls to a level: when the oldest buckets leave', () => {
    const w = new MinuteWindow();
    w.add(3, 10_500);
    w.add(2, 40_000);
    expect(w.waitUntilAtMost(5, 41_000)).toBe(0);
    expect(w.waitUntilAtMost(2, 41_000)).toBe(70_000 - 41_000);
    expect(w.waitUntilAtMost(0, 41_000)).toBe(100_000 - 41_000);
    // After waiting that long, it holds.
    expect(w.total(70_000)).toBeLessThanOrEqual(2);
  });
});

describe('checkBudget', () => {
  it('statements: refuses when the count would pass the limit, with the time until room is made', () => {
    const ledger = new BudgetLedger(() => 0);
    const b = budget({ statementsPerMinute: 3 });
    const a = ledger.account('r', b, id('s', 'x'));
    a.statements.add(2, 1_000);
    expect(checkBudget(a, b, 1, false, 2_000)).toBeUndefined();
    expect(checkBudget(a, b, 2, false, 2_000)).toEqual({ kind: 'statements', limit: 3, retryInMs: 59_000 });
    // More statements in one Query than the whole budget: refused with no retry time that could help.
    expect(checkBudget(a, b, 4, false, 2_000)).toEqual({ kind: 'statements', limit: 3, retryInMs: undefined });
  });

  it('rows and bytes: usage at the limit refuses the next statement (a running one is never cut)', () => {
    const ledger = new BudgetLedger(() => 0);
    const b = budget({ rowsPerMinute: 10, bytesPerMinute: 100 });
    const a = ledger.account('r', b, id('s', 'x'));
    a.rows.add(9, 0);
    expect(checkBudget(a, b, 1, false, 500)).toBeUndefined();
    a.rows.add(5, 5_000);
    expect(checkBudget(a, b, 1, false, 6_000)).toEqual({ kind: 'rows', limit: 10, retryInMs: 54_000 });
    const c = ledger.account('r2', b, id('s', 'x'));
    c.bytes.add(100, 0);
    expect(checkBudget(c, b, 1, false, 0)?.kind).toBe('bytes');
  });

  it('concurrency: a session already running one of its statements does not take a second slot', () => {
    const ledger = new BudgetLedger(() => 0);
    const b = budget({ concurrentStatements: 2 });
    const a = ledger.account('r', b, id('s', 'x'));
    a.running = 2;
    expect(checkBudget(a, b, 1, false, 0)).toEqual({ kind: 'concurrency', limit: 2, retryInMs: undefined });
    expect(checkBudget(a, b, 1, true, 0)).toBeUndefined();
  });
});

describe('BudgetLedger', () => {
  it('per agent shares one account across subjects; per subject across agents; roles apart; no agent counts as its sub', () => {
    const ledger = new BudgetLedger(() => 0);
    const perAgent = budget({ per: 'agent', statementsPerMinute: 1 });
    const perSub = budget({ per: 'subject', statementsPerMinute: 1 });
    expect(ledger.account('r', perAgent, id('alice', 'bot'))).toBe(ledger.account('r', perAgent, id('bob', 'bot')));
    expect(ledger.account('r', perSub, id('alice', 'bot'))).toBe(ledger.account('r', perSub, id('alice', 'other')));
    expect(ledger.account('r', perAgent, id('alice', 'bot'))).not.toBe(
      ledger.account('r2', perAgent, id('alice', 'bot')),
    );
    expect(ledger.account('r', perAgent, id('carol'))).not.toBe(ledger.account('r', perAgent, id('dave')));
  });

  it('forgets accounts with no sessions and an empty window, keeps those with usage', () => {
    let now = 0;
    const ledger = new BudgetLedger(() => now);
    const b = budget({ statementsPerMinute: 5 });
    ledger.account('r', b, id('idle', 'a'));
    const used = ledger.account('r', b, id('used', 'b'));
    used.statements.add(1, 0);
    now = 20_000;
    ledger.account('r', b, id('new', 'c')); // a new account sweeps
    expect(ledger.size).toBe(2);
    expect(ledger.account('r', b, id('used', 'b'))).toBe(used);
  });
});
