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
}
