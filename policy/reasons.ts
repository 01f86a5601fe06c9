// The agent-facing reason (lib/errors.ts Reasons) for each low-cardinality reason a refusing Decision carries.
import type { ReasonCode } from '../lib/errors.ts';
import type { ParseFailureReason } from './parser.ts';

/**
 * Decision reasons are the policy's own vocabulary (metrics, audit); agents see the smaller, documented set. Every
 * reason a refusal is built with is a key here (test/unit/errors.test.ts reads the sources to check), so a new one
 * cannot reach a client unclassified.
 */
export const DECISION_REASONS = {
  // Outside what the role may touch: pgwarden.scope lists what is inside.
  relation_not_allowed: 'scope_missing',
  column_denied: 'scope_missing',
  function_denied: 'scope_missing',
  type_denied: 'scope_missing',
  operator_denied: 'scope_missing',
  channel_denied: 'scope_missing',
  setting_denied: 'scope_missing',
  unknown_relation: 'scope_missing',
  // The kind of statement, not its objects.
  statement_kind_denied: 'policy_denied',
  write_in_read_only: 'policy_denied',
  write_kind_denied: 'policy_denied',
  ddl_denied: 'policy_denied',
  catalog_denied: 'policy_denied',
  setting_pinned: 'policy_denied',
  hold_cursor_denied: 'policy_denied',
  analysis_ran_user_code: 'policy_denied',
  analysis_failed: 'policy_denied',
  parser_trap: 'policy_denied',
  scope_unrewritable: 'unsupported',
  catalog_unrewritable: 'unsupported',
  // What PostgreSQL would reject too, or names pgwarden does not know.
  parse_error: 'statement_invalid',
  invalid_input: 'statement_invalid',
  server_error: 'statement_invalid',
  multiple_statements_in_parse: 'statement_invalid',
  // A relation inside the role's relations that does not exist (42P01, docs/policy.md "Unknown and forbidden relations").
  undefined_relation: 'statement_invalid',
  unknown_prepared_statement: 'statement_invalid',
  unknown_cursor: 'statement_invalid',
  policy_changed: 'policy_denied',
  role_removed: 'credential_rejected',
  // Size, depth, time.
  statement_too_large: 'limit_reached',
  statement_too_complex: 'limit_reached',
  too_many_statements: 'limit_reached',
  hold_cursor_limit: 'limit_reached',
  decide_timeout: 'limit_reached',
  decide_worker_failed: 'unavailable',
  decide_pool_busy: 'unavailable',
  parser_unavailable: 'unavailable',
  analysis_unavailable: 'unavailable',
  // PostgreSQL's analysis could not lock a relation: the session's own transaction holds the lock (commit first), or another's did until analysis.timeout.
  analysis_self_locked: 'unsupported',
  analysis_lock_timeout: 'unavailable',
  internal: 'internal_error',
} as const satisfies Record<string, ReasonCode> & Record<ParseFailureReason, ReasonCode>;

/** The agent-facing reason of a decision reason; one pgwarden has not classified is a policy refusal (it was refused). */
function agentReason(decisionReason: string): ReasonCode {
  return Object.hasOwn(DECISION_REASONS, decisionReason)
    ? DECISION_REASONS[decisionReason as keyof typeof DECISION_REASONS]
    : 'policy_denied';
}

/**
 * The reason a refusing decision is sent with (and recorded as `refusal` in its audit event): PostgreSQL's own
 * 54000 is a limit; pgwarden's 0A000 is a form it does not pass, unless the statement was merely too big for it.
 */
export function refusalReason(d: { reason: string; sqlstate: string }): ReasonCode {
  const r = agentReason(d.reason);
  if (d.reason === 'server_error') return d.sqlstate === '54000' ? 'limit_reached' : 'statement_invalid';
  if (d.sqlstate === '0A000') return r === 'limit_reached' ? 'limit_reached' : 'unsupported';
  return r;
}
