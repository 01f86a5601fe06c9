// Per-agent budgets: statements, rows and bytes per sliding minute and concurrent statements, shared by every session of one subject or agent in this process.
//
// Counting is per process (per replica): N replicas behind a load balancer let one agent use up to N times its
// budget. Windows are 60 one-second buckets, so "per minute" means in any 60 s window (to the second), and the time
// to wait is exact to the second: the moment enough of the oldest usage leaves the window.
import type { Identity } from '../auth/jwt.ts';
import type { RoleBudget } from '../../policy/types.ts';

export type BudgetKind = 'statements' | 'rows' | 'bytes' | 'concurrency';

const WINDOW_SECONDS = 60;

/** Usage in the last 60 seconds, in one-second buckets. */
export class MinuteWindow {
  private readonly buckets = new Float64Array(WINDOW_SECONDS);
  /** The second the newest bucket stands for. */
  private second = -Infinity;
  private sum = 0;

  /** Usage in the window ending at `nowMs`. */
  total(nowMs: number): number {
    this.advance(nowMs);
    return this.sum;
  }

  add(n: number, nowMs: number): void {
    this.advance(nowMs);
    const i = this.second % WINDOW_SECONDS;
    this.buckets[i] = (this.buckets[i] ?? 0) + n;
    this.sum += n;
  }

  /**
   * Milliseconds from `nowMs` until the window holds at most `allowed`: 0 when it already does. Usage leaves the
   * window a whole second at a time, oldest first.
   */
  waitUntilAtMost(allowed: number, nowMs: number): number {
    this.advance(nowMs);
    let left = this.sum;
    if (left <= allowed) return 0;
    for (let s = this.second - WINDOW_SECONDS + 1; s <= this.second; s++) {
      left -= this.buckets[((s % WINDOW_SECONDS) + WINDOW_SECONDS) % WINDOW_SECONDS] ?? 0;
      // Bucket `s` leaves the window when second s + 60 begins.
      if (left <= allowed) return Math.max(1, (s + WINDOW_SECONDS) * 1000 - nowMs);
    }
    return WINDOW_SECONDS * 1000;
  }

  /** True when nothing in the window counts any more (the account may be forgotten). */
  isEmpty(nowMs: number): boolean {
    return this.total(nowMs) === 0;
  }

  private advance(nowMs: number): void {
    const now = Math.floor(nowMs / 1000);
    if (now <= this.second) return;
    if (now - this.second >= WINDOW_SECONDS) {
      this.buckets.fill(0);
      this.sum = 0;
    } else {
      for (let s = this.second + 1; s <= now; s++) {
        const i = s % WINDOW_SECONDS;
        this.sum -= this.buckets[i] ?? 0;
        this.buckets[i] = 0;
      }
      // Float sums of whole numbers stay exact far beyond any budget; guard against drift anyway.
      if (this.sum < 0.5) this.sum = 0;
    }
    this.second = now;
  }
}

/** The usage of one subject or agent under one role. */
export class BudgetAccount {
  readonly statements = new MinuteWindow();
  readonly rows = new MinuteWindow();
  readonly bytes = new MinuteWindow();
  /** Sessions of this account running a statement now. */
  running = 0;
  /** Sessions attached to the account (it is kept while any is, and while its windows hold usage). */
  sessions = 0;

  constructor(readonly key: string) {}
}

/** A refusal: which limit, its value, and how long until a retry can succeed (undefined: when a running statement ends). */
export interface BudgetRefusal {
  kind: BudgetKind;
  limit: number;
  retryInMs: number | undefined;
}

/**
 * Checks a statement about to be forwarded: `count` statements (a simple Query's statement count, 1 for an Execute),
 * `holdsSlot` whether this session already runs one (a pipelined Execute does not take a second slot). Usage
 * already at a rows or bytes limit refuses the next statement: a statement is never cut once it runs.
 */
export function checkBudget(
  account: BudgetAccount,
  budget: RoleBudget,
  count: number,
  holdsSlot: boolean,
  nowMs: number,
): BudgetRefusal | undefined {
  const c = budget.concurrentStatements;
  if (c !== undefined && !holdsSlot && account.running >= c)
    return { kind: 'concurrency', limit: c, retryInMs: undefined };
  const s = budget.statementsPerMinute;
  if (s !== undefined) {
    // A Query with more statements than the whole budget could never run: refuse it now, saying so, rather than forever.
    const wait = account.statements.waitUntilAtMost(Math.max(0, s - count), nowMs);
    if (wait > 0 || count > s) return { kind: 'statements', limit: s, retryInMs: count > s ? undefined : wait };
  }
  const r = budget.rowsPerMinute;
  if (r !== undefined) {
    const wait = account.rows.waitUntilAtMost(r - 1, nowMs);
    if (wait > 0) return { kind: 'rows', limit: r, retryInMs: wait };
  }
  const b = budget.bytesPerMinute;
  if (b !== undefined) {
    const wait = account.bytes.waitUntilAtMost(b - 1, nowMs);
    if (wait > 0) return { kind: 'bytes', limit: b, retryInMs: wait };
  }
  return undefined;
}

/** Every budget account of this process, by role and subject or agent. */
export class BudgetLedger {
  private readonly accounts = new Map<string, BudgetAccount>();
  private lastSweep = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /** The account `identity` is counted under for `budget` of `role`: its sub, or its agent (its sub when it has none). */
  account(role: string, budget: RoleBudget, identity: Identity): BudgetAccount {
    const who = budget.per === 'agent' ? `agent:${identity.agent ?? identity.sub}` : `subject:${identity.sub}`;
    const key = `${role}\u0000${who}`;
    let a = this.accounts.get(key);
    if (a === undefined) {
      this.sweep();
      a = new BudgetAccount(key);
      this.accounts.set(key, a);
    }
    return a;
  }

  get size(): number {
    return this.accounts.size;
  }

  /**
   * Forgets accounts no session uses whose windows are empty, at most every 10 s (on a new account). An account
   * with usage in its window is kept after its sessions end, so reconnecting does not reset a budget.
   */
  private sweep(): void {
    const now = this.now();
    if (now - this.lastSweep < 10_000) return;
    this.lastSweep = now;
    for (const [key, a] of this.accounts) {
      if (
        a.sessions === 0 &&
        a.running === 0 &&
        a.statements.isEmpty(now) &&
        a.rows.isEmpty(now) &&
        a.bytes.isEmpty(now)
      )
        this.accounts.delete(key);
    }
  }

  /** The time base the windows are kept in. */
  nowMs(): number {
    return this.now();
  }
}
