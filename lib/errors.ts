// The one error type that reaches the wire (ProxyError) and the catalog of its codes.
import { SqlState, type SqlStateCode } from './sqlstate.ts';

export type Severity = 'ERROR' | 'FATAL';

/**
 * The machine-readable reason every error carries, sent as the first line of DETAIL (`reason=scope_missing`) so an
 * agent or a tool can switch on it without parsing prose; any detail the site gives follows on the next line. The set
 * is closed and documented in docs/errors.md: a name, once published, keeps its meaning.
 */
export const Reasons = {
  credential_invalid:
    'the password is not a token pgwarden accepts (malformed, bad signature, wrong issuer or audience, a lifetime over the maximum, not yet valid): get a new token',
  credential_expired: 'the token expired, at login or during the session: get a new token and reconnect',
  credential_revoked: 'the token was revoked: get a new token (the operator revoked this one, usually on purpose)',
  credential_used:
    'a single-use token that already logged in once (on this or another replica): get a new token for each use',
  credential_rejected:
    'a valid token that may not log in here: its role is not in the policy, or this database is not served',
  network_denied:
    'a valid token used from a client address outside the networks its role (or its pgwarden_networks claim) is bound to: connect from an allowed network or ask for a token bound to yours',
  tls_required: 'the connection must use TLS before a token is sent',
  scope_missing:
    'the statement names a relation, column, function, type, channel or setting outside the role (SELECT * FROM pgwarden.scope lists what is inside): ask for a token whose role includes it',
  policy_denied:
    'the role may not run this kind of statement (a write in a read-only role, DDL, DO, a system catalog, a setting it may not change): rewrite the statement or ask for another role',
  statement_invalid:
    'PostgreSQL would reject the statement as written (its own SQLSTATE and message follow), or it names a prepared statement or portal pgwarden does not know',
  unsupported:
    'a protocol feature, startup parameter or statement form pgwarden does not pass: use the supported way the hint names',
  limit_reached:
    'a limit was reached (statement size or depth, maxRows with onRowCap: error, connections or sessions): make the statement or result smaller, or close sessions',
  budget_exceeded:
    "the role's budget (statements, rows or bytes per minute, concurrent statements) is used up: retry after the time in the hint",
  rate_limited: 'too many attempts from this address (failed logins, logins in progress): wait and retry',
  unavailable:
    'pgwarden or the database cannot serve right now (no policy, audit trail unwritable, upstream down, keys unreachable, analysis unavailable): retry later',
  session_ended:
    'the session was ended administratively: shutdown, idle timeout, or the policy of its role changed; reconnect',
  protocol_error: 'the client broke the wire protocol or did not complete a phase in time',
  internal_error: "a fault inside pgwarden or a malformed message from the database; details are in the operator's log",
} as const;

export type ReasonCode = keyof typeof Reasons;

/** The DETAIL sent with `err`: its reason on the first line, the site's own detail (if any) after it. */
export function detailWithReason(reason: ReasonCode, detail: string | undefined): string {
  return detail === undefined || detail === '' ? `reason=${reason}` : `reason=${reason}\n${detail}`;
}

/**
 * The message a client receives for `err`. pgwarden's own messages end with the hint (if any) and the reason, the
 * reason always last: `‹message›; hint: ‹hint› (reason=‹code›)`, or `‹message› (reason=‹code›)` without a hint. Clients
 * that show only the message (the MCP servers of docs/mcp.md, many ORMs and agent frameworks) still show what to do
 * and why; a program reads the reason with /\(reason=([a-z_]+)\)$/, which text earlier in the message (identifiers
 * from the client's SQL, say) cannot fool because nothing follows the suffix. The message is one line: a line break
 * in it (a quoted identifier may hold one) becomes a space, so a reader that goes line by line, or a regex with the m
 * flag, cannot take a line the client wrote for the last one. DETAIL's first line and HINT are sent as well,
 * unchanged. Messages PostgreSQL itself would send (catalog entries marked postgresMessage) go out as they are.
 */
export function clientMessage(err: ProxyError): string {
  if ((ErrorCatalog[err.code] as CatalogEntry).postgresMessage === true) return err.message;
  const hint = err.hint === undefined || err.hint === '' ? '' : `; hint: ${err.hint.replace(/\.$/, '')}`;
  return `${err.message}${hint}`.replace(LINE_BREAKS, ' ') + ` (reason=${err.reason})`;
}

/** What JavaScript's m flag (and most line readers) take as the end of a line. */
const LINE_BREAKS = /\r\n|[\r\n\u2028\u2029]/g;

/**
 * One kind of error pgwarden originates. `message` and `hint` are shapes, ‹placeholders› for what varies by site;
 * docs/errors.md is generated from these fields (tools/errors-doc.ts), and test/unit/errors.test.ts checks them and
 * every construction site against this table. A field added here is one more property and one more column in the
 * generator.
 */
export interface CatalogEntry {
  /** The SQLSTATE sent, one of the named constants in sqlstate.ts. */
  readonly sqlstate: SqlStateCode;
  /** Other named SQLSTATEs a site may send under this code instead (a limit rather than a rule, say). */
  readonly alsoSqlstates?: readonly SqlStateCode[];
  /** Set when the SQLSTATE is normally PostgreSQL's own, passed on from its analysis. */
  readonly serverSqlstate?: true;
  readonly severity: Severity;
  /** When it is sent, in one line. */
  readonly doc: string;
  /** The client-facing message. */
  readonly message: string;
  /** The usual hint, if any; sites may word it for the case. */
  readonly hint: string | undefined;
  /** The reasons this code is sent with; the first is the default, a site sending another names it (`reason:`). */
  readonly reasons: readonly [ReasonCode, ...ReasonCode[]];
  /**
   * Set when the message is the one PostgreSQL itself sends for the same input (its parser's, its analysis', its
   * 42P01): it goes out unchanged, as a client comparing it with PostgreSQL's would expect. Every other message is
   * pgwarden's own and ends with the reason (clientMessage).
   */
  readonly postgresMessage?: true;
}

/** Every error pgwarden can send: its code, SQLSTATE, severity, when it is sent, and the shape of its text. */
export const ErrorCatalog = {
  ERR_PROTOCOL: {
    sqlstate: SqlState.ProtocolViolation,
    severity: 'FATAL',
    doc: 'malformed frame, bad length or a message not allowed in this phase',
    message:
      '‹what was wrong›, e.g. invalid frontend message type ‹n›; expected a password message, got message type ‹n›; invalid UTF-8 in message',
    hint: undefined,
    reasons: ['protocol_error'],
  },
  ERR_STARTUP_PARAM: {
    sqlstate: SqlState.FeatureNotSupported,
    severity: 'FATAL',
    doc: 'a startup parameter refused before login: replication, a client_encoding other than UTF8, a word in options other than -c name=value / --name=value (settings are judged at login as SET is: 42501)',
    message:
      'replication connections are not allowed through pgwarden (or: client_encoding "‹name›" is not supported by pgwarden; options: "‹word›" is not allowed through pgwarden)',
    hint: 'options (PGOPTIONS) may hold only -c name=value and --name=value settings',
    reasons: ['unsupported'],
  },
  ERR_TLS_REQUIRED: {
    sqlstate: SqlState.InvalidAuthorizationSpecification,
    severity: 'FATAL',
    doc: 'a cleartext token on a non-TLS connection from a non-loopback address',
    message: 'pgwarden requires TLS: the token would travel in cleartext',
    hint: 'connect with sslmode=require (or verify-full)',
    reasons: ['tls_required'],
  },
  ERR_TOKEN_INVALID: {
    sqlstate: SqlState.InvalidPassword,
    severity: 'FATAL',
    doc: 'the password is not a valid token: malformed, bad signature, expired, wrong issuer/audience, lifetime over the maximum',
    message:
      'token ‹what is wrong›, e.g. password is not a JWT; token signature is invalid; token expired at ‹time›; token issuer does not match ‹issuers›',
    hint: 'Request a new token and reconnect with it as the password.',
    reasons: ['credential_invalid', 'credential_expired', 'unavailable'],
  },
  ERR_TOKEN_REJECTED: {
    sqlstate: SqlState.InvalidAuthorizationSpecification,
    severity: 'FATAL',
    doc: 'a valid token that may not log in: unknown role, revoked, a single-use token already used, a database this pgwarden does not serve, a client address outside the networks the role or token is bound to, or a pgwarden_narrow claim pgwarden cannot read exactly (reason credential_invalid)',
    message:
      'token role "‹role›" is not defined in the policy; token has been revoked: ‹reason›; single-use token has already been used; database "‹name›" is not served by this pgwarden; token may not be used from address ‹address›: …; token claim pgwarden_narrow‹.key› ‹what is wrong›',
    hint: 'Request a token for a role defined in the pgwarden policy and reconnect with it as the password.',
    reasons: ['credential_rejected', 'credential_revoked', 'credential_used', 'network_denied', 'credential_invalid'],
  },
  ERR_TOKEN_EXPIRED_SESSION: {
    sqlstate: SqlState.AdminShutdown,
    severity: 'FATAL',
    doc: 'the session reached its token expiry and was ended',
    message: 'terminating connection because the credential expired at ‹time›',
    hint: 'request a new token and reconnect with it as the password',
    reasons: ['credential_expired'],
  },
  ERR_STATEMENT_DENIED: {
    sqlstate: SqlState.InsufficientPrivilege,
    // 54000: too much prepared statement text, or a statement that could not be decided; 53000: too many large
    // statements being decided at once; 58000: PostgreSQL's own analysis of it could not be obtained.
    alsoSqlstates: [SqlState.ProgramLimitExceeded, SqlState.InsufficientResources, SqlState.SystemError],
    severity: 'ERROR',
    doc: 'a statement the policy does not allow, or one pgwarden could not decide (then 54000, 53000 or 58000); the detail names the rule',
    message: 'permission denied by pgwarden: ‹statement› ‹why› (or: statement refused by pgwarden: ‹why›)',
    hint: 'what the policy allows instead, when there is something to say',
    reasons: [
      'policy_denied',
      'scope_missing',
      'statement_invalid',
      'limit_reached',
      'unavailable',
      'credential_rejected',
      'internal_error',
    ],
  },
  ERR_SYNTAX: {
    sqlstate: SqlState.SyntaxError,
    // PostgreSQL's grammar raises a few of its errors with another SQLSTATE (policy/parser.ts GRAMMAR_SQLSTATES).
    alsoSqlstates: [SqlState.InvalidEscapeSequence, SqlState.WindowingError],
    severity: 'ERROR',
    doc: 'text PostgreSQL\'s grammar rejects, or several statements in one Parse message: refused before it reaches the database, with what PostgreSQL sends for it (docs/policy.md, "Syntax errors")',
    message:
      'PostgreSQL\'s parser message, with its position: syntax error at or near "‹token›"; unterminated quoted string at or near "‹text›"; … (or: cannot insert multiple commands into a prepared statement)',
    hint: undefined,
    reasons: ['statement_invalid'],
    postgresMessage: true,
  },
  ERR_UNDEFINED_RELATION: {
    sqlstate: SqlState.UndefinedTable,
    severity: 'ERROR',
    doc: 'a relation the role\'s relations cover does not exist; outside them the refusal is ERR_STATEMENT_DENIED whether it exists or not (docs/policy.md, "Unknown and forbidden relations")',
    message: 'relation "‹name as written›" does not exist, with its position',
    hint: 'a relation created since pgwarden last read the catalog is seen after a policy reload',
    reasons: ['statement_invalid'],
    postgresMessage: true,
  },
  ERR_FEATURE: {
    sqlstate: SqlState.FeatureNotSupported,
    severity: 'ERROR',
    doc: "a protocol feature pgwarden does not pass (FunctionCall, COPY FROM STDIN, replication, a simple Query inside an unfinished extended-protocol batch), or a statement it cannot analyse: too large, too deeply nested, or parseable only by the older server's grammar",
    message:
      "‹feature› is not supported by pgwarden (or: permission denied by pgwarden: statement is too large | is too deeply nested; pgwarden cannot parse this statement: ‹the parser's message›)",
    hint: 'the supported way to do the same, e.g. call the function with a SELECT statement instead',
    reasons: ['unsupported', 'limit_reached'],
  },
  ERR_SERVER_ANALYSIS: {
    sqlstate: SqlState.InsufficientPrivilege,
    // 25P02: the session's transaction is aborted, and PostgreSQL refuses every statement in it alike (session analysis).
    alsoSqlstates: [SqlState.ProgramLimitExceeded, SqlState.InFailedSqlTransaction],
    serverSqlstate: true,
    severity: 'ERROR',
    doc: "PostgreSQL's own analysis of the statement failed (it would fail the same way when run); passed on with PostgreSQL's SQLSTATE, message, position and source fields (file, line, routine) (54000 when too complex to analyse)",
    message: "PostgreSQL's own message, values scrubbed as in any upstream error",
    hint: "PostgreSQL's own hint",
    reasons: ['statement_invalid', 'limit_reached'],
    postgresMessage: true,
  },
  ERR_ANALYSIS_LOCKED: {
    sqlstate: SqlState.LockNotAvailable,
    severity: 'ERROR',
    doc: "PostgreSQL's analysis of the statement could not lock a relation it uses: the session's own open transaction holds a conflicting lock (after TRUNCATE, ALTER, DROP, CREATE INDEX or LOCK in it; refused at once, reason unsupported), or another transaction held one for all of analysis.timeout (reason unavailable); the statement was not run and the transaction stays usable",
    message:
      'pgwarden cannot analyse this statement while this session\'s own transaction holds a lock on "‹relation›" (…), so it was not run (or: statement refused by pgwarden: relation "‹relation›" is locked by another transaction; PostgreSQL\'s analysis of it waited ‹n› ms, so it was not run)',
    hint: 'commit the transaction that ran TRUNCATE/ALTER/LOCK on "‹relation›" before using it, or use it in a later transaction (or: retry when the other transaction has ended)',
    reasons: ['unsupported', 'unavailable'],
  },
  ERR_ROW_CAP: {
    sqlstate: SqlState.ProgramLimitExceeded,
    severity: 'ERROR',
    doc: 'a result passed the role maxRows with onRowCap: error',
    message: 'result exceeds the limit of ‹n› rows for this role',
    hint: 'narrow the query with WHERE or add LIMIT so it returns fewer rows',
    reasons: ['limit_reached'],
  },
  ERR_BUDGET: {
    sqlstate: SqlState.ConfigurationLimitExceeded,
    severity: 'ERROR',
    doc: 'a role budget (statements, rows or bytes per minute, or concurrent statements) of the subject or agent is used up; the hint says when to retry',
    message: 'statement refused by pgwarden: the budget of ‹limit› for ‹this agent | this token subject› is used up',
    hint: 'retry in ‹n› s',
    reasons: ['budget_exceeded'],
  },
  ERR_NOT_READY: {
    sqlstate: SqlState.CannotConnectNow,
    severity: 'FATAL',
    doc: 'pgwarden cannot serve yet or now: no valid policy loaded, the audit trail cannot be written (audit.onFailure: refuse), or the use of a single-use token could not be recorded',
    message: 'pgwarden cannot record an audit trail right now, so it accepts no sessions',
    hint: 'try again shortly; the operator has been alerted',
    reasons: ['unavailable'],
  },
  ERR_SHUTDOWN: {
    sqlstate: SqlState.AdminShutdown,
    severity: 'FATAL',
    doc: 'pgwarden is shutting down or ended the session administratively (revoked credential, role removed or changed by a reload)',
    message:
      'terminating connection ‹why›, e.g. due to administrator command; because its credential was revoked: ‹reason›',
    hint: 'reconnect shortly (or what to change first)',
    reasons: ['session_ended', 'credential_revoked'],
  },
  ERR_IDLE_TIMEOUT: {
    sqlstate: SqlState.IdleSessionTimeout,
    severity: 'FATAL',
    doc: 'the session was idle longer than limits.idleSessionTimeout',
    message: 'terminating connection due to idle timeout',
    hint: 'reconnect when you need the database again',
    reasons: ['session_ended'],
  },
  ERR_TOO_MANY: {
    sqlstate: SqlState.TooManyConnections,
    severity: 'FATAL',
    doc: 'a connection limit was reached: clients, sessions per subject or agent, logins in progress, failed logins, upstream connections',
    message: 'too many ‹what› (limits.‹setting› = ‹n›)',
    hint: 'try again later (or which connections to close first)',
    reasons: ['limit_reached', 'rate_limited'],
  },
  ERR_UPSTREAM: {
    sqlstate: SqlState.ConnectionFailure,
    severity: 'FATAL',
    doc: 'the upstream database could not be reached, refused our login, or was lost',
    message: 'could not connect to the upstream database; the connection to the upstream database was lost; …',
    hint: 'reconnect; if it keeps happening, contact the operator',
    reasons: ['unavailable'],
  },
  ERR_UPSTREAM_MALFORMED: {
    sqlstate: SqlState.InternalError,
    severity: 'ERROR',
    doc: 'an ErrorResponse from the database that pgwarden could not parse (so could not scrub) was withheld; this stands in for it and the session goes on',
    message: 'pgwarden withheld a malformed error message from the database',
    hint: undefined,
    reasons: ['internal_error'],
  },
  ERR_TIMEOUT: {
    sqlstate: SqlState.ProtocolViolation,
    severity: 'FATAL',
    doc: 'the client did not complete a protocol phase in time',
    message: 'timed out waiting for the client to complete login (or: verifying the token)',
    hint: undefined,
    reasons: ['protocol_error'],
  },
  ERR_INTERNAL: {
    sqlstate: SqlState.InternalError,
    severity: 'FATAL',
    doc: 'a bug in pgwarden; details are in the log, never sent to the client',
    message: 'internal error in pgwarden',
    hint: undefined,
    reasons: ['internal_error'],
  },
} as const satisfies Record<string, CatalogEntry>;

export type ErrorCode = keyof typeof ErrorCatalog;

/** The ErrorResponse fields naming where in PostgreSQL's source an error was raised (drivers expose `routine`). */
export interface ErrorSource {
  file?: string;
  line?: string;
  routine?: string;
}

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
  /** ERR_SERVER_ANALYSIS: where in PostgreSQL's source the error was raised (F, L, R), as PostgreSQL sends them. */
  source?: ErrorSource;
  /** One of the catalog entry's reasons; its first when left out. */
  reason?: ReasonCode;
  /** What the operator could change, for the audit trail and log only; never sent to the client. */
  operatorHint?: string;
}

/** An error whose `message`, `detail` and `hint` are safe to send to the client. */
export class ProxyError extends Error {
  readonly code: ErrorCode;
  readonly sqlstate: SqlStateCode | string;
  readonly severity: Severity;
  readonly position: number | undefined;
  readonly source: ErrorSource | undefined;
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  readonly reason: ReasonCode;
  readonly operatorHint: string | undefined;

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
    this.source = opts.source;
    // A reason the entry does not list would make docs/errors.md untrue; the entry's first is the honest fallback.
    const reasons: readonly ReasonCode[] = entry.reasons;
    this.reason = opts.reason !== undefined && reasons.includes(opts.reason) ? opts.reason : entry.reasons[0];
    this.operatorHint = opts.operatorHint;
  }
}

/** Anything caught at a session's top level that is not a ProxyError becomes this; the original goes to the log only. */
export function toClientError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  return new ProxyError('ERR_INTERNAL', 'internal error in pgwarden', { cause: err });
}
