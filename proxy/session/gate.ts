// What a session needs from the policy side: the current roles and a decision per statement, synchronous when cached.
import type { Decision, RolePolicy, SessionView } from '../../policy/types.ts';

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
  ): Decision | Promise<Decision>;
}
