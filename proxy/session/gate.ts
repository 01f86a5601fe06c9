// What a session needs from the policy side: the current roles and a decision per statement, synchronous when cached.
import type { Decision, RolePolicy, SessionView } from '../../policy/types.ts';
import type { AnalysisTarget } from '../upstream/analysis.ts';

/** The session's offer of its own upstream connection for the server's analysis (own-analysis.ts). */
export interface OwnAnalysis {
  /** The session's connection, or undefined when no analysis can run on it before this message (an open batch). */
  target: AnalysisTarget | undefined;
  /**
   * pgwarden's analysis connections cannot tell what this session sees (it has made temporary objects, or its open
   * transaction changed or locked relations): statements are analysed on `target` when it can be used.
   */
  required: boolean;
  /** What the session's own analysis allowed since the session last changed what names resolve to (OwnMemo). */
  memo?: OwnMemo;
}

/**
 * Allowed decisions of the session's own analysis, by statement, valid while the session has run nothing that can
 * change what its names resolve to (the session clears it when it sends DDL, DISCARD, DO, CALL, transaction control,
 * or executes a prepared statement of such a kind) and for MEMO_MS at most (another session's committed DDL). A
 * statement in the middle of an extended-protocol batch, where no analysis can run, reuses one made at an idle point
 * (a driver's batch Parses the same INSERT into a temporary table again and again before its Sync).
 */
export class OwnMemo {
  static readonly MEMO_MS = 5_000;
  static readonly MAX = 256;
  private readonly entries = new Map<string, { decision: Decision; at: number }>();

  get(key: string, now: number): Decision | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (now - e.at > OwnMemo.MEMO_MS) {
      this.entries.delete(key);
      return undefined;
    }
    return e.decision;
  }

  set(key: string, decision: Decision, now: number): void {
    if (this.entries.size >= OwnMemo.MAX) this.entries.clear();
    this.entries.set(key, { decision, at: now });
  }

  clear(): void {
    this.entries.clear();
  }
}

export interface StatementGate {
  /** Version of the policy in force; a named statement decided under another version is decided again. */
  readonly version: number;
  role(name: string): RolePolicy | undefined;
  /**
   * Never throws or rejects (an internal failure is a deny). A Promise when the server's own analysis must be
   * obtained first (a miss); the session holds the client's later messages until it settles.
   * `paramTypes` are a Parse message's type OIDs.
   */
  decide(
    sql: string,
    mode: 'simple' | 'parse',
    view: SessionView,
    paramTypes?: readonly number[],
    own?: OwnAnalysis,
  ): Decision | Promise<Decision>;
  /**
   * The session's upstream is idle outside a transaction block after allowed DDL: what it made is committed and visible
   * to every connection now, so what other connections' analyses concluded before may no longer hold.
   */
  catalogSettled(): void;
}
