// The audit gate: while the trail cannot be written and the operator chose 'refuse', no login and no statement proceeds.
import { ProxyError } from '../../lib/errors.ts';
import type { Decision } from '../../policy/types.ts';
import type { StatementGate } from '../session/gate.ts';
import type { Audit } from './sink.ts';
import { SqlState } from '../../lib/sqlstate.ts';

/** True when a new login or statement may proceed: the trail is healthy, or the operator chose 'continue'. */
export function auditGate(audit: Pick<Audit, 'healthy' | 'onFailure'>): boolean {
  return audit.healthy || audit.onFailure === 'continue';
}

/** The FATAL for a login refused while the audit trail is down (57P03, like "not ready"). */
export function auditUnavailableError(): ProxyError {
  return new ProxyError('ERR_NOT_READY', 'pgwarden cannot record an audit trail right now, so it accepts no sessions', {
    hint: 'try again shortly; the operator has been alerted',
  });
}

/**
 * Wraps a StatementGate so every statement is denied while `auditGate(audit)` is false ('refuse' and unhealthy).
 * The denial goes through the normal refusal path (42501 with a message and hint), so the batch and any explicit
 * transaction fail exactly as for a policy denial and nothing reaches the database.
 */
export function withAuditGate(gate: StatementGate, audit: Pick<Audit, 'healthy' | 'onFailure'>): StatementGate {
  return {
    get version() {
      return gate.version;
    },
    role: (name) => gate.role(name),
    catalogSettled: () => gate.catalogSettled(),
    decide(sql, mode, view, paramTypes, own): Decision | Promise<Decision> {
      if (auditGate(audit)) return gate.decide(sql, mode, view, paramTypes, own);
      return {
        allow: false,
        ruleId: undefined,
        sqlstate: SqlState.InsufficientPrivilege,
        message: 'statement refused by pgwarden: the audit trail cannot be written right now',
        detail: 'pgwarden is configured to refuse statements it cannot record (audit.onFailure: refuse)',
        hint: 'retry shortly; the operator has been alerted',
        reason: 'audit_unavailable',
        statements: [],
      };
    },
  };
}
