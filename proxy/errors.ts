// The one error type that reaches the wire (ProxyError) and the catalog of its codes.
import { SqlState, type SqlStateCode } from './sqlstate.ts';

export type Severity = 'ERROR' | 'FATAL';

/** Every error pgwarden can send, with its SQLSTATE, severity and one doc line. Tested for uniqueness. */
export const ErrorCatalog = {
  ERR_PROTOCOL: { sqlstate: SqlState.ProtocolViolation, severity: 'FATAL', doc: 'malformed frame, bad length or a message not allowed in this phase' },
  ERR_STARTUP_PARAM: { sqlstate: SqlState.FeatureNotSupported, severity: 'FATAL', doc: 'a startup parameter that could change identity, limits or lexing (options, replication, …)' },
  ERR_TLS_REQUIRED: { sqlstate: SqlState.InvalidAuthorizationSpecification, severity: 'FATAL', doc: 'a cleartext token on a non-TLS connection from a non-loopback address' },
  ERR_TOKEN_INVALID: { sqlstate: SqlState.InvalidPassword, severity: 'FATAL', doc: 'the password is not a valid token: malformed, bad signature, expired, wrong issuer/audience, lifetime over the maximum' },
  ERR_TOKEN_REJECTED: { sqlstate: SqlState.InvalidAuthorizationSpecification, severity: 'FATAL', doc: 'a valid token that may not log in: unknown role, revoked' },
  ERR_TOKEN_EXPIRED_SESSION: { sqlstate: SqlState.AdminShutdown, severity: 'FATAL', doc: 'the session reached its token expiry and was ended' },
  ERR_STATEMENT_DENIED: { sqlstate: SqlState.InsufficientPrivilege, severity: 'ERROR', doc: 'a statement the policy does not allow' },
  ERR_FEATURE: { sqlstate: SqlState.FeatureNotSupported, severity: 'ERROR', doc: 'a protocol feature pgwarden does not pass (FunctionCall, COPY FROM STDIN, replication)' },
  ERR_SERVER_ANALYSIS: { sqlstate: SqlState.InsufficientPrivilege, severity: 'ERROR', doc: 'PostgreSQL\'s own analysis of the statement failed (it would fail the same way when run); passed on with PostgreSQL\'s SQLSTATE, message and position' },
  ERR_ROW_CAP: { sqlstate: SqlState.ProgramLimitExceeded, severity: 'ERROR', doc: 'a result passed the role maxRows with onRowCap: error' },
  ERR_BUDGET: { sqlstate: SqlState.ConfigurationLimitExceeded, severity: 'ERROR', doc: 'a role budget (statements, rows or bytes per minute, or concurrent statements) of the subject or agent is used up; the hint says when to retry' },
  ERR_NOT_READY: { sqlstate: SqlState.CannotConnectNow, severity: 'FATAL', doc: 'no valid policy is loaded yet' },
  ERR_SHUTDOWN: { sqlstate: SqlState.AdminShutdown, severity: 'FATAL', doc: 'pgwarden is shutting down or ended the session administratively' },
  ERR_IDLE_TIMEOUT: { sqlstate: SqlState.IdleSessionTimeout, severity: 'FATAL', doc: 'the session was idle longer than limits.idleSessionTimeout' },
  ERR_TOO_MANY: { sqlstate: SqlState.TooManyConnections, severity: 'FATAL', doc: 'the connection limit was reached' },
  ERR_UPSTREAM: { sqlstate: SqlState.ConnectionFailure, severity: 'FATAL', doc: 'the upstream database could not be reached, refused our login, or was lost' },
  ERR_TIMEOUT: { sqlstate: SqlState.ProtocolViolation, severity: 'FATAL', doc: 'the client did not complete a protocol phase in time' },
  ERR_INTERNAL: { sqlstate: SqlState.InternalError, severity: 'FATAL', doc: 'a bug in pgwarden; details are in the log, never sent to the client' },
} as const satisfies Record<string, { sqlstate: SqlStateCode; severity: Severity; doc: string }>;

export type ErrorCode = keyof typeof ErrorCatalog;

export interface ProxyErrorOptions {
  detail?: string;
  hint?: string;
  cause?: unknown;
  /** Override the catalog severity (e.g. a denial that must end the session). */
  severity?: Severity;
  /** A catalog constant, or (ERR_SERVER_ANALYSIS) the SQLSTATE PostgreSQL itself reported. */
  sqlstate?: SqlStateCode | string;
  /** 1-based character position in the client's query text. */
  position?: number;
}

/** An error whose `message`, `detail` and `hint` are safe to send to the client. */
export class ProxyError extends Error {
  readonly code: ErrorCode;
  readonly sqlstate: SqlStateCode | string;
  readonly severity: Severity;
  readonly position: number | undefined;
  readonly detail: string | undefined;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, opts: ProxyErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ProxyError';
    this.code = code;
    const entry = ErrorCatalog[code];
    this.sqlstate = opts.sqlstate ?? entry.sqlstate;
    this.severity = opts.severity ?? entry.severity;
    this.detail = opts.detail;
    this.hint = opts.hint;
    this.position = opts.position;
  }
}

/** Anything caught at a session's top level that is not a ProxyError becomes this; the original goes to the log only. */
export function toClientError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  return new ProxyError('ERR_INTERNAL', 'internal error in pgwarden', { cause: err });
}
