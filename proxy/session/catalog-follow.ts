// After scoped DDL, the catalog snapshot is read again before a statement the DDL may explain is refused: one refresh at a time, shared by every session, at most one started per interval.
//
// pgwarden decides against a snapshot of the upstream catalog, read at startup and on reload. A table a session has
// just created (CREATE TABLE app.t, then INSERT INTO t) is not in it, so the INSERT was refused as "cannot resolve"
// until the next SIGHUP. Refreshing after every DDL statement would cost a catalog read per statement; instead a
// refusal that a stale snapshot can explain (an unknown or absent relation, type or column set), made once an allowed
// DDL statement (or the end of a transaction that held one) has run — which the same session's next decision shows —
// waits for one refresh that starts after that point and is decided again. Refreshes are coalesced (one running, at most one pending, shared by every waiting session) and at
// most one starts per `minIntervalMs`, so sessions doing DDL cost at most one catalog read per interval; a refusal
// waits at most `waitMs` and otherwise stands. Deciding again against a newer snapshot is as sound as deciding against
// the old one: it only ever replaces the refusal with the newer catalog's own verdict.
import type { Decision } from '../../policy/types.ts';
import { CATALOG_CHANGING_KINDS } from '../../policy/ddl.ts';
import { Coalescer } from '../../lib/coalesce.ts';

/** Refusals a catalog snapshot that predates the DDL can explain: names it does not know, or knows without columns. */
export const STALE_CATALOG_REASONS: ReadonlySet<string> = new Set([
  'unknown_relation',
  'undefined_relation',
  'relation_not_allowed',
  'type_denied',
  'column_denied',
]);

/** A transaction statement that opens a block; ENDS one that ends it (not ROLLBACK TO a savepoint, nor … PREPARED). */
const BEGINS = /^\s*(begin|start\s+transaction)\b/i;
const ENDS = /^\s*(commit|end|abort|prepare\s+transaction|rollback(?!\s+(to|prepared)\b))\b/i;

/** Sessions whose transaction may hold uncommitted DDL are remembered up to this many (oldest forgotten first). */
const MAX_TRACKED_SESSIONS = 10_000;

export interface CatalogFollowOptions {
  /** Reads the catalog again and swaps it in (PolicyStore.refreshCatalog); true when it succeeded. */
  refresh: () => Promise<boolean>;
  /** Least time between the starts of two refreshes (default 200 ms). */
  minIntervalMs?: number;
  /** Longest a refusal waits for a refresh before it stands (default 5 s). */
  waitMs?: number;
  now?: () => number;
}

export class CatalogFollower {
  readonly #refresh: () => Promise<boolean>;
  readonly #minIntervalMs: number;
  readonly #waitMs: number;
  readonly #now: () => number;
  /** Counts the moments the catalog may have changed. */
  #seq = 0;
  /** The latest such moment: a statement that may change the catalog is known to have run. */
  #changed = 0;
  /** The value of #seq when the last refresh started: what it can have seen. */
  #covered = 0;
  #lastStart = Number.NEGATIVE_INFINITY;
  /** Upstream pids of sessions whose DDL was allowed and has not been counted yet (it may await its block's end). */
  readonly #ddlSessions = new Set<number>();
  /** Upstream pids of sessions inside a transaction block (BEGIN or START TRANSACTION seen, no end yet). */
  readonly #inBlock = new Set<number>();
  /**
   * Upstream pids of sessions whose last allowed statement may change the catalog once it has run. The session's next
   * decision is the sign that it has (a client sends it after the answer; one that pipelines past its own DDL may
   * find the refresh too early, and its statement is refused as before).
   */
  readonly #running = new Set<number>();
  readonly #runs: Coalescer<boolean>;

  constructor(opts: CatalogFollowOptions) {
    this.#refresh = opts.refresh;
    this.#minIntervalMs = opts.minIntervalMs ?? 200;
    this.#waitMs = opts.waitMs ?? 5_000;
    this.#now = opts.now ?? Date.now;
    this.#runs = new Coalescer(async () => {
      const gap = this.#lastStart + this.#minIntervalMs - this.#now();
      if (gap > 0) await new Promise((r) => setTimeout(r, gap));
      this.#covered = this.#seq;
      this.#lastStart = this.#now();
      return this.#refresh();
    });
  }

  /**
   * Notes a decision of the session with upstream pid `pid` (before its verdict is used); `sql` is its text. The
   * session's previous statement has run by now; if that one could change the catalog, the change counts from here.
   * DDL outside a transaction block changes the catalog once run; DDL inside one only when the block ends (COMMIT,
   * ROLLBACK, END, ABORT, PREPARE TRANSACTION: what it made is visible to a new read, or gone). A refresh while the
   * block is open could not see it, and every refresh makes sessions decide their prepared statements again, so a
   * refusal inside the block does not ask for one.
   *
   * True when the catalog changes (or has just changed) for every other connection with this decision: the statement
   * ends a block that held DDL, is DDL outside a block, or follows either. What other connections' analyses
   * concluded before then may no longer hold (proxy/session/policy-gate.ts forgets the server's verdicts).
   */
  note(decision: Decision, pid: number | undefined, sql = ''): boolean {
    if (pid === undefined) return false;
    let settles = false;
    if (this.#running.delete(pid)) {
      this.#changed = ++this.#seq;
      settles = true;
    }
    if (!decision.allow) return settles;
    let ddl = false;
    let ended = false;
    for (const s of decision.statements) {
      if (CATALOG_CHANGING_KINDS.has(s.kind)) ddl = true;
      else if (s.kind === 'TransactionStmt') {
        // A simple Query with DDL and a transaction statement after it ("BEGIN; CREATE …; COMMIT"): counted as ended.
        if (ddl || ENDS.test(sql)) ended = true;
        else if (BEGINS.test(sql)) remember(this.#inBlock, pid);
      }
    }
    if (ddl) remember(this.#ddlSessions, pid);
    if (ended) this.#inBlock.delete(pid);
    if (!this.#ddlSessions.has(pid)) return settles;
    if (ended || !this.#inBlock.has(pid)) {
      this.#ddlSessions.delete(pid);
      remember(this.#running, pid);
      settles = true;
    }
    return settles;
  }

  /**
   * True when the session with upstream pid `pid` ran allowed DDL in a transaction block that is still open: what it
   * made is invisible to any catalog read until the block ends, so no read can show a name absent for that session.
   */
  uncommittedDdl(pid: number | undefined): boolean {
    return pid !== undefined && this.#ddlSessions.has(pid);
  }

  /** True when `decision` is a refusal that a refresh started now could change. */
  mayBeStale(decision: Decision): boolean {
    return !decision.allow && STALE_CATALOG_REASONS.has(decision.reason) && this.#changed > this.#covered;
  }

  /**
   * Waits for a refresh that starts after now (joining one pending, or queuing one behind the one running); true when
   * it succeeded within the wait, false when it failed or took longer (the refusal then stands).
   */
  async awaitRefresh(): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), this.#waitMs);
    });
    try {
      return await Promise.race([this.#runs.run().catch(() => false), late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Adds `pid` as the newest entry of a bounded set, forgetting the oldest beyond MAX_TRACKED_SESSIONS. */
function remember(set: Set<number>, pid: number): void {
  set.delete(pid);
  if (set.size >= MAX_TRACKED_SESSIONS) {
    const oldest = set.values().next().value;
    if (oldest !== undefined) set.delete(oldest);
  }
  set.add(pid);
}
