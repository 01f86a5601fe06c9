// What a session needs from the policy side: the current roles and a synchronous decision per statement.
import type { Decision, RolePolicy, SessionView } from '../../policy/types.ts';

export interface StatementGate {
  /** Version of the policy in force; a named statement decided under another version is decided again. */
  readonly version: number;
  role(name: string): RolePolicy | undefined;
  /** Pure and synchronous; never throws (an internal failure is a deny). `paramTypes` are a Parse message's type OIDs. */
  decide(sql: string, mode: 'simple' | 'parse', view: SessionView, paramTypes?: readonly number[]): Decision;
}
