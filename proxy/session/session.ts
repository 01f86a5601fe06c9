// One client session: handshake, token login, brokered upstream, per-statement decisions, relay and expiry. The only place that does socket I/O for a client.
import { randomUUID } from 'node:crypto';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { Config } from '../config/types.ts';
import { networkRefusal } from '../auth/networks.ts';
import { ProxyError, toClientError, type ErrorCode } from '../../lib/errors.ts';
import { SqlState } from '../../lib/sqlstate.ts';
import type { Identity, TokenVerifier } from '../auth/jwt.ts';
import { MAX_PASSWORD_MESSAGE_LENGTH } from '../auth/jwt.ts';
import type { BindCheck, Decision, RoleBudget, RolePolicy, SessionView, StatementSummary } from '../../policy/types.ts';
import { BackendType, FrontendType } from '../wire/codes.ts';
import {
  FRONTEND_MESSAGE_TYPES,
  MessageFramer,
  UnansweredStartupPacket,
  isPart,
  type Frame,
  type FramePart,
  type StartupMessage,
} from '../wire/framer.ts';
import {
  encodeAuthenticationCleartextPassword,
  encodeAuthenticationOk,
  encodeBackendKeyData,
  encodeNegotiateProtocolVersion,
  encodeParameterStatus,
  decodeParameterStatus,
  encodeProxyError,
  encodeReadyForQuery,
  encodeSSLResponse,
} from '../wire/backend.ts';
import { decodeBind, decodeClose, decodeExecute, decodeParse, decodePassword, decodeQuery } from '../wire/frontend.ts';
import { NO_VALUES, bindRefusal, type BindContext } from './bind-checks.ts';
import type { BindMessage } from '../wire/frontend.ts';
import {
  encodeBind,
  encodeClose,
  encodeExecute,
  encodeFlush,
  encodeParse,
  encodeQuery,
  encodeSync,
  encodeTerminate,
} from '../wire/frontend.ts';
import {
  tcpUpstream,
  UPSTREAM_MAX_MESSAGE,
  type UpstreamConnection,
  type UpstreamConnector,
} from '../upstream/connect.ts';
import type { CancelRegistry } from './cancel.ts';
import type { StatementGate } from './gate.ts';
import { Phase, canTransition } from './phase.ts';
import { ResponseTracker, SENTINEL_SQL, fatalFrame, type RowCap, type StatementTrace } from './pipeline.ts';
import { checkBudget, type BudgetAccount, type BudgetKind, type BudgetLedger, type BudgetRefusal } from './budget.ts';
import { parseStatements, type ParseOutcome } from '../../policy/parser.ts';
import { refusalReason } from '../../policy/reasons.ts';
import { effectiveRole } from '../../policy/narrow.ts';
import { quoteIdent } from '../../lib/ident.ts';
import { scrubForwarded } from './scrub.ts';
import { acceptStartupSettings, readClientStartup, stampParameters, type ClientStartup } from './startup.ts';
import { rewriteApplicationName } from './app-name.ts';
import { refuseSingleUse, type SingleUseCheck } from '../revocation/consumed.ts';
import { OwnMemo, type OwnAnalysis } from './gate.ts';
import { CATALOG_CHANGING_KINDS } from '../../policy/ddl.ts';
import { resolutionNeutral } from './server-check.ts';
import { SessionAnalysis, UpstreamExchange, type SessionExchange, type TxStatus } from '../upstream/own-analysis.ts';
import { AnalysisUnavailable } from '../upstream/analysis.ts';

/** Why a session ended; a low-cardinality metric label. */
export type EndReason =
  | 'client'
  | 'expired'
  | 'revoked'
  | 'policy_reload'
  | 'upstream_lost'
  | 'shutdown'
  | 'auth_failed'
  | 'protocol_error'
  | 'timeout'
  | 'internal';

export interface StatementOutcome {
  /** The `seq` of the decision this execution belongs to. */
  seq: number;
  rows: number;
  durationMs: number;
  sqlstate: string | undefined;
  truncated: boolean;
  rowCapError: boolean;
}

/** Observers of a session (metrics, audit); every method is optional and must not throw. */
export interface SessionEvents {
  loginSucceeded?(s: Session): void;
  loginFailed?(s: Session, reason: string, err: ProxyError): void;
  statementDecided?(
    s: Session,
    info: { seq: number; mode: 'simple' | 'parse' | 'bind'; sql: string; decision: Decision; micros: number },
  ): void;
  /** A statement (Query, Execute or FunctionCall) finished: rows sent, time from send to completion, its SQLSTATE if it failed. */
  statementFinished?(s: Session, info: StatementOutcome): void;
  /** Bytes read from the client and written to it since the last report (reported per statement and at the end). */
  traffic?(s: Session, bytesIn: number, bytesOut: number): void;
  upstreamConnected?(s: Session, ms: number): void;
  /** A statement the policy allowed was refused because its subject's or agent's budget is used up (53400). */
  budgetExceeded?(
    s: Session,
    info: { seq: number; kind: BudgetKind; per: 'subject' | 'agent'; limit: number; retryInMs: number | undefined },
  ): void;
  sessionEnded?(s: Session, reason: EndReason): void;
}

export interface SessionDeps {
  config: Config;
  verifier: TokenVerifier;
  gate: StatementGate;
  cancels: CancelRegistry;
  log: Logger;
  tlsContext: tls.SecureContext | undefined;
  events?: SessionEvents;
  /** Per-identity admission (session limits per sub/agent); an error refuses the login. */
  admitIdentity?(id: Identity, self: Session): ProxyError | undefined;
  /**
   * Upstream backend pids of the live sessions of `self`'s token issuer, subject, agent and tenant on this pgwarden, `self` included:
   * the backends pg_terminate_backend / pg_cancel_backend of a bound pid may signal (bind-checks.ts). Without it,
   * only the session's own backend.
   */
  siblingBackends?(self: Session): ReadonlySet<number>;
  /** Per-agent budget accounts shared by the sessions of this process; without it budgets are not enforced. */
  budgets?: BudgetLedger;
  /** Revocation check at login; returns a reason when the identity is revoked. */
  isRevoked?(id: Identity): string | undefined;
  /** Consumes a single-use token's jti (proxy/revocation/consumed.ts); without it single-use tokens are refused. */
  singleUse?: SingleUseCheck;
  now?: () => number;
  /** How the session reaches Postgres (default tcpUpstream); a test passes a scripted in-memory backend. */
  upstream?: UpstreamConnector;
}

/**
 * The client's byte stream: the accepted net.Socket in real use, any Duplex in a test (bytes in, bytes out). The
 * address decides allowCleartext 'loopback'; a stream without one counts as remote.
 */
export type ClientStream = Duplex & Partial<Pick<net.Socket, 'remoteAddress' | 'setNoDelay'>>;

/** Refusal SQLSTATEs with an error catalog entry of their own; any other SQLSTATE rides on ERR_STATEMENT_DENIED. */
const DENIAL_CODES: ReadonlyMap<string, ErrorCode> = new Map<string, ErrorCode>([
  [SqlState.InsufficientPrivilege, 'ERR_STATEMENT_DENIED'],
  [SqlState.FeatureNotSupported, 'ERR_FEATURE'],
  [SqlState.SyntaxError, 'ERR_SYNTAX'],
  [SqlState.UndefinedTable, 'ERR_UNDEFINED_RELATION'],
  [SqlState.InvalidEscapeSequence, 'ERR_SYNTAX'],
  [SqlState.WindowingError, 'ERR_SYNTAX'],
  [SqlState.LockNotAvailable, 'ERR_ANALYSIS_LOCKED'],
]);

/**
 * Largest TLS record pgwarden sends a client: libpq reads with 8192 bytes free at least, so a record this size is
 * read whole and no decrypted byte waits inside OpenSSL unseen by a driver that polls the socket (see upgradeToTls).
 */
export const TLS_MAX_RECORD = 8192;

const TOKEN_HINT = 'request a new token from your token issuer and reconnect with it as the password';

// ---- memory bounds (docs/limits.md, "Memory") ----------------------------------------------------

/** Upstream DataRow and CopyData messages longer than this are streamed to the client in parts as they arrive, never assembled. */
export const STREAM_THRESHOLD = 64 * 1024;
/**
 * Other upstream messages are assembled whole, up to this length. PostgreSQL's largest are far below it: a
 * ParameterDescription of 65,535 parameters is 256 KiB, a RowDescription of 1,664 columns about 150 KiB.
 */
export const UPSTREAM_MAX_ASSEMBLED = 1024 * 1024;
/**
 * An upstream ErrorResponse or NoticeResponse longer than STREAM_THRESHOLD (a RAISE of a huge text) keeps its first
 * this many bytes, which are scrubbed and forwarded as a message of their own; the rest is dropped as it arrives.
 */
export const NOTICE_KEEP = STREAM_THRESHOLD;
/**
 * Messages sent upstream whose responses are still due. A client that pipelines without reading would otherwise
 * grow the tracker's queue by one entry per message for as long as the server keeps up: at this depth the client
 * is not read until half of them are answered. Safe from deadlock because PostgreSQL flushes its 8 KiB output
 * buffer when full, so at most ~1,600 (5-byte) responses can be held back there.
 */
export const MAX_PIPELINE_DEPTH = 4096;
/**
 * SQL text a session keeps for its named prepared statements and its SQL-level PREPAREs and cursors (to decide them
 * again after a reload), in UTF-16 code units. A named Parse past it is refused (54000, close some first); a PREPARE
 * or DECLARE past it runs but keeps no text, so it is refused after the next reload rather than decided again.
 */
export const MAX_RETAINED_SQL = 4 * 1024 * 1024;

/** A Map of named statements or cursors that keeps the total length of the SQL text its values hold. */
class TextMap<V extends { sql: string | undefined }> extends Map<string, V> {
  textLength = 0;

  override set(key: string, value: V): this {
    const old = super.get(key);
    if (old?.sql !== undefined) this.textLength -= old.sql.length;
    if (value.sql !== undefined) this.textLength += value.sql.length;
    return super.set(key, value);
  }

  override delete(key: string): boolean {
    const old = super.get(key);
    if (old?.sql !== undefined) this.textLength -= old.sql.length;
    return super.delete(key);
  }

  override clear(): void {
    this.textLength = 0;
    super.clear();
  }
}

/**
 * Why a socket is not being read. Each reason is set and cleared on its own, so (say) the upstream draining cannot
 * resume a client that is paused because a decision is pending.
 */
const Hold = {
  /** The upstream socket's write buffer is full: stop reading the client (backpressure client → database). */
  UpstreamFull: 1,
  /** A decision is being obtained: the client's later messages wait, in order, in the kernel. */
  Deciding: 2,
  /** Verifying the token and connecting upstream. */
  Login: 4,
  /** The token expired while a statement runs (limits.expiryGrace): nothing new is read. */
  Expiring: 8,
  /** MAX_PIPELINE_DEPTH responses are due. */
  PipelineDepth: 16,
  /** The client socket's write buffer is full: stop reading upstream (backpressure database → client). */
  ClientFull: 32,
} as const;

/**
 * An ErrorResponse or NoticeResponse cut to `prefix` (its first bytes, header included): the last field is cut
 * short and terminated, the length field rewritten. PostgreSQL sends S, V, C and M first, so severity, SQLSTATE and
 * the start of the message survive.
 */
function truncatedMessage(type: number, prefix: Buffer): Frame {
  const fields = prefix.subarray(5);
  const terminated = fields.length > 0 && fields[fields.length - 1] === 0;
  const body = Buffer.concat([fields, terminated ? Buffer.from([0]) : Buffer.from([0, 0])]);
  const raw = Buffer.allocUnsafe(5 + body.length);
  raw[0] = type;
  raw.writeInt32BE(4 + body.length, 1);
  body.copy(raw, 5);
  return { type, body: raw.subarray(5), raw };
}

function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

interface NamedStatement {
  sql: string;
  paramTypes: readonly number[];
  version: number;
  allowed: boolean;
  /** Decision sequence number, so executions of the statement are reported against it. */
  seq: number;
  rowCap: RowCap | undefined;
  /** Allowed once, refused when decided again after a reload: it still exists upstream until closed. */
  revoked?: string;
  /** Set with `revoked` when the refusal was of a new Parse under the name of an allowed statement (not a reload). */
  replaced?: boolean;
  /**
   * While its Parse is unanswered: the statement the name held before (or null for none), which stays upstream if
   * PostgreSQL fails or skips the Parse (name in use, an earlier error in the batch) and is the name's again then.
   */
  previous?: NamedStatement | null;
  /** The client batch its Parse was sent in (Session.batchSeq), while unanswered. */
  batch?: number;
  /** Called once its Parse is answered (a Bind of a later batch waits for that). */
  onSettled?: () => void;
  /** What the decision left to check at Bind (bind-checks.ts). */
  bindChecks?: readonly BindCheck[] | undefined;
  /**
   * Allowed as the session's temporary relations resolved when it was decided (Decision.dependsOnTemporary): the
   * session's execution count then. PostgreSQL analyses a prepared statement again when what it uses changes (a
   * temporary table dropped), so once anything has run since, it is decided again before it is bound.
   */
  temporaryAt?: number;
  /** Running it cannot change what names resolve to (server-check.ts resolutionNeutral): its Execute keeps the OwnMemo. */
  neutral?: boolean;
  /** A COPY statement: its Execute may put PostgreSQL in COPY IN (ResponseTracker.copySync). */
  copy?: boolean;
}

/**
 * A prepared statement made by SQL PREPARE, or a cursor made by DECLARE: the text of that one statement and the
 * policy version it was decided under, so that after a reload it is decided again before its next use.
 */
interface SqlObject {
  /** The PREPARE or DECLARE statement alone; undefined when it could not be told apart (then it is refused after a reload). */
  sql: string | undefined;
  version: number;
  rowCap: RowCap | undefined;
}

/** A portal bound by a Bind message: what to decide again if it is executed under a newer policy. */
interface BoundPortal {
  /**
   * While its Bind is unanswered: the portal the name held before (or null), which stays upstream if PostgreSQL fails
   * or skips the Bind (a portal that survived ROLLBACK TO SAVEPOINT can be executed after), and the batch it was sent in.
   */
  previous?: BoundPortal | null;
  batch?: number;
  onSettled?: () => void;
  seq: number;
  sql: string;
  mode: 'simple' | 'bind';
  paramTypes: readonly number[];
  version: number;
  rowCap: RowCap | undefined;
  /** The Bind, kept when values in it were checked (bind-checks.ts): checked again if decided again at Execute. */
  bind?: BindMessage;
  /**
   * Its decision's sibling-backend checks (pg_terminate_backend / pg_cancel_backend of a bound pid): checked again at
   * every Execute, as the sibling may have ended since the Bind (a portal outlives its batch in a transaction block).
   */
  signals?: readonly BindCheck[];
  /** Executing it cannot change what names resolve to (NamedStatement.neutral; SQL PREPAREs are DML). */
  neutral?: boolean;
  /** NamedStatement.copy. */
  copy?: boolean;
}

/** A decision's sibling-backend checks, as a portal keeps them to check again at Execute (BoundPortal.signals). */
function siblingChecks(checks: readonly BindCheck[] | undefined): { signals?: readonly BindCheck[] } {
  const signals = checks?.filter((c) => c.kind === 'sibling_backend') ?? [];
  return signals.length > 0 ? { signals } : {};
}

/** A statement or portal whose Parse or Bind is unanswered: what its name held before, and who waits for the answer. */
interface Settling<T> {
  previous?: T | null;
  batch?: number;
  onSettled?: () => void;
}

/**
 * The answer to the message that made `entry` under `name` (a Parse for statements, a Bind for portals). Failed or
 * skipped, the name holds upstream what it held before, so it does here too: the previous entry is the name's again
 * (or none), or, when a later message for the name is pending behind this one, that one falls back to it instead.
 */
function settleName<T extends Settling<T>>(map: Map<string, T>, name: string, entry: T, ok: boolean): void {
  const previous = entry.previous;
  if (previous === undefined) return;
  entry.previous = undefined;
  entry.batch = undefined;
  if (!ok) {
    if (map.get(name) === entry) {
      if (previous === null) map.delete(name);
      else map.set(name, previous);
    } else {
      for (let e: T | null | undefined = map.get(name); e; e = e.previous)
        if (e.previous === entry) {
          e.previous = previous;
          break;
        }
    }
  }
  const waiting = entry.onSettled;
  entry.onSettled = undefined;
  waiting?.();
}

/**
 * The refusal of a prepared statement, portal or cursor over pgwarden.scope / pgwarden.session, or over system
 * catalogs filtered for a `catalog: scoped` role, after a reload: its upstream copy lists the scope (or holds the
 * filter) the role had when it was prepared, which may name relations the role no longer has.
 */
function staleScopeListing(d: Extract<Decision, { allow: true }>): Decision {
  const filtered = d.catalogFiltered === true;
  return {
    allow: false,
    ruleId: filtered ? 'builtin.catalog' : 'builtin.scope',
    sqlstate: SqlState.InsufficientPrivilege,
    message: filtered
      ? 'permission denied by pgwarden: statement reads system catalogs filtered as the policy was when it was prepared'
      : 'permission denied by pgwarden: statement lists pgwarden.scope or pgwarden.session as the policy was when it was prepared',
    detail: filtered
      ? 'the catalog filter was fixed when the statement was prepared and the policy has changed since (rule: builtin.catalog)'
      : 'the listing was fixed when the statement was prepared and the policy has changed since (rule: builtin.scope)',
    hint: 'prepare the statement again for the current listing',
    reason: 'policy_denied',
    statements: d.statements,
  };
}

/** Why a prepared statement, portal or cursor is refused after a reload (client-facing). */
function policyChangedError(what: string, name: string, refusal: string | undefined): ProxyError {
  return new ProxyError(
    'ERR_STATEMENT_DENIED',
    `${what} ${quoteIdent(name)} is no longer allowed: the policy changed`,
    {
      detail: refusal,
      reason: 'policy_denied',
      hint:
        what === 'cursor'
          ? 'declare the cursor again if the current policy allows its query'
          : 'prepare the statement again if the current policy allows it',
    },
  );
}

/**
 * The text of the PREPARE (or DECLARE) statement named `name` within `sql` (`parsed` is parseStatements(sql)), or
 * undefined. Offsets count UTF-8 bytes.
 */
function statementText(
  sql: string,
  parsed: ParseOutcome,
  kind: 'prepare' | 'declare',
  name: string,
): string | undefined {
  if (!parsed.ok) return undefined;
  const buf = Buffer.from(sql, 'utf8');
  for (const raw of parsed.stmts) {
    // biome-ignore lint/suspicious/noExplicitAny: a parse-tree node, read through checked field access
    const node = raw.stmt as Record<string, any> | undefined;
    const hit = kind === 'prepare' ? node?.PrepareStmt?.name === name : node?.DeclareCursorStmt?.portalname === name;
    if (!hit) continue;
    const start = raw.stmt_location ?? 0;
    const len = raw.stmt_len ?? 0;
    return buf
      .subarray(start, len > 0 ? start + len : buf.length)
      .toString('utf8')
      .trim();
  }
  return undefined;
}

/** Per top-level statement of `sql`: the cursor a FETCH reads, else undefined. */
function fetchedCursors(sql: string): (string | undefined)[] | undefined {
  const parsed = parseStatements(sql);
  if (!parsed.ok) return undefined;
  return parsed.stmts.map((raw) => {
    // biome-ignore lint/suspicious/noExplicitAny: a parse-tree node, read through checked field access
    const f = (raw.stmt as Record<string, any> | undefined)?.FetchStmt;
    return f !== undefined && f.ismove !== true && typeof f.portalname === 'string' ? f.portalname : undefined;
  });
}

/** Names `sql` runs through EXECUTE (anywhere, e.g. under EXPLAIN) and reads through FETCH/MOVE. */
function usedNames(sql: string): { prepared: Set<string>; cursors: Set<string> } {
  const prepared = new Set<string>();
  const cursors = new Set<string>();
  const parsed = parseStatements(sql);
  if (!parsed.ok) return { prepared, cursors };
  const walk = (n: unknown): void => {
    if (Array.isArray(n)) {
      for (const x of n) walk(x);
      return;
    }
    if (n === null || typeof n !== 'object') return;
    for (const [k, v] of Object.entries(n as Record<string, unknown>)) {
      if (k === 'ExecuteStmt' && typeof (v as { name?: unknown }).name === 'string')
        prepared.add((v as { name: string }).name);
      if (k === 'FetchStmt' && typeof (v as { portalname?: unknown }).portalname === 'string')
        cursors.add((v as { portalname: string }).portalname);
      walk(v);
    }
  };
  walk(parsed.stmts.map((r) => r.stmt));
  return { prepared, cursors };
}

/** Largest parse tree read from the session's own connection, as from pgwarden's analysis connections. */
const OWN_ANALYSIS_MAX_TREE = 16 * 1024 * 1024;

/**
 * SQL PREPARE of a statement allowed only as the session's temporary relations resolve now: PostgreSQL would resolve
 * its unqualified names again whenever they change (a temporary table dropped makes the name the permanent one), long
 * after pgwarden decided, so it is refused; written pg_temp.name, a name can only ever be the temporary relation.
 */
function temporaryPrepare(d: Extract<Decision, { allow: true }>): Decision {
  return {
    allow: false,
    ruleId: 'builtin.analysis',
    sqlstate: SqlState.InsufficientPrivilege,
    message: 'permission denied by pgwarden: PREPARE of a statement that uses a temporary table by an unqualified name',
    detail:
      'PostgreSQL resolves the names of a prepared statement again when the tables change, after pgwarden decided (rule: builtin.analysis)',
    hint: 'write temporary tables as pg_temp.name in prepared statements',
    reason: 'policy_denied',
    statements: d.statements,
    analysedOn: d.analysedOn,
  };
}

/**
 * Whether `sql`, refused, is one PostgreSQL would have failed by ending the transaction: its first statement is COMMIT
 * (END), PREPARE TRANSACTION or ROLLBACK (ABORT), and nothing after it starts a block. A failed COMMIT or PREPARE
 * TRANSACTION rolls the transaction back (ReadyForQuery 'I'), and a driver that does not roll back after one
 * (postgres.js after a failed prepare) would otherwise wait on an aborted transaction forever; PostgreSQL then runs
 * whatever follows in the text outside a block, so a refusal there leaves 'I' too. Parsed only when the decision saw
 * a transaction statement (or could not list the statements).
 */
function endsTransaction(sql: string, statements: readonly StatementSummary[]): boolean {
  if (statements.length > 0 && !statements.some((st) => st.kind === 'TransactionStmt')) return false;
  const parsed = parseStatements(sql);
  if (!parsed.ok) return false;
  const kinds = parsed.stmts.map(
    // biome-ignore lint/suspicious/noExplicitAny: a parse-tree node, read through checked field access
    (raw) => (raw.stmt as Record<string, any> | undefined)?.TransactionStmt?.kind as string | undefined,
  );
  const first = kinds[0];
  return (
    (first === 'TRANS_STMT_COMMIT' || first === 'TRANS_STMT_PREPARE' || first === 'TRANS_STMT_ROLLBACK') &&
    !kinds.some((k) => k === 'TRANS_STMT_BEGIN' || k === 'TRANS_STMT_START')
  );
}

/**
 * Goes before the sentinel of a refused statement that ends the transaction (endsTransaction): a ROLLBACK of
 * pgwarden's own, whose answers the client never sees, so the refusal leaves the client where PostgreSQL's own failure
 * would (the transaction rolled back, ReadyForQuery 'I'). A ROLLBACK runs no code (a failing PREPARE TRANSACTION
 * sentinel would fire deferred triggers first). In a batch it is the unnamed statement and portal, which the session
 * then forgets (a later Bind of the unnamed statement is refused as never prepared); after an earlier error in the
 * batch PostgreSQL skips it like the rest, and the batch ends as that error left it.
 */
function rollbackFirst(tracker: ResponseTracker, extended: boolean, o: Buffer[]): void {
  const own = { internal: true, quiet: true } as const;
  if (!extended) {
    tracker.expect(FrontendType.Query, undefined, undefined, undefined, own);
    o.push(encodeQuery('ROLLBACK'));
    return;
  }
  tracker.expect(FrontendType.Parse, undefined, undefined, undefined, own);
  tracker.expect(FrontendType.Bind, undefined, undefined, undefined, own);
  tracker.expect(FrontendType.Execute, undefined, undefined, undefined, own);
  o.push(
    encodeParse('', 'ROLLBACK', []),
    encodeBind({ portal: '', statement: '', paramFormats: [], params: [], resultFormats: [] }),
    encodeExecute('', 0),
  );
}

/** A refused extended-protocol message: the sentinel makes the refusal land where PostgreSQL would put the error. */
function refuseMessage(tracker: ResponseTracker, err: ProxyError, o: Buffer[]): void {
  tracker.expect(FrontendType.Parse, err);
  o.push(encodeParse('', SENTINEL_SQL, []));
}

/** What a client sees when a budget is used up: 53400, the limit, and when to retry. */
function budgetError(r: BudgetRefusal, per: 'subject' | 'agent', count: number): ProxyError {
  const whose = per === 'agent' ? 'this agent' : 'this token subject';
  const what: Record<BudgetKind, string> = {
    statements: `${r.limit} statements per minute`,
    rows: `${r.limit} rows per minute`,
    bytes: `${r.limit} result bytes per minute`,
    concurrency: `${r.limit} concurrent statements`,
  };
  let hint: string;
  if (r.retryInMs !== undefined) hint = `retry in ${Math.ceil(r.retryInMs / 1000)} s`;
  else if (r.kind === 'concurrency') hint = `retry when one of the ${r.limit} running statements of ${whose} finishes`;
  else hint = `send fewer statements at once: this query has ${count}, more than the ${r.limit} a minute allowed`;
  return new ProxyError(
    'ERR_BUDGET',
    `statement refused by pgwarden: the budget of ${what[r.kind]} for ${whose} is used up`,
    {
      detail: `rule: role budget ${r.kind === 'concurrency' ? 'concurrentStatements' : `${r.kind}PerMinute`}, counted per ${per} on this pgwarden instance`,
      hint,
    },
  );
}

export class Session {
  readonly id = randomUUID();
  phase: Phase = Phase.AwaitingStartup;
  identity: Identity | undefined;
  role: RolePolicy | undefined;
  readonly remoteAddress: string | undefined;
  endReason: EndReason | undefined;
  private socket: ClientStream;
  private isTls = false;
  private readonly framer: MessageFramer;
  private upstream: UpstreamConnection | undefined;
  private upstreamFramer: MessageFramer | undefined;
  private tracker: ResponseTracker | undefined;
  private startup: ClientStartup | undefined;
  private backendKey: { processId: number; secretKey: Buffer } | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly statements = new TextMap<NamedStatement>();
  private readonly preparedNames = new Set<string>();
  private readonly cursorNames = new Set<string>();
  /** Of those, the ones declared WITH HOLD, counted against the role's holdCursors (only names still in cursorNames count). */
  private readonly holdCursorNames = new Set<string>();
  /** SQL-level PREPAREs and DECLAREs (the names in preparedNames / cursorNames) with their text, for deciding again. */
  private readonly sqlPrepared = new TextMap<SqlObject>();
  private readonly sqlCursors = new TextMap<SqlObject>();
  /** Names refused when decided again after a reload → the refusal, so a use says the policy changed. */
  private readonly revokedPrepared = new Map<string, string>();
  private readonly revokedCursors = new Map<string, string>();
  /** Refused statements ('S') and cursors ('P') still open upstream: closed at the next batch boundary. */
  private readonly pendingClose: { target: 'S' | 'P'; name: string }[] = [];
  /** Policy version the SQL-level statements and cursors were last checked against. */
  private checkedVersion = -1;
  /** Set when a reload changed a setting stamped at login: the session ends at its next idle point outside a transaction. */
  private stampChange: ProxyError | undefined;
  private readonly log: Logger;
  private readonly now: () => number;
  private closed = false;
  private processingClient = false;
  /** Decisions made in this session; each audit 'statement' event and its outcome share the number. */
  private seq = 0;
  /** Portals bound by Bind messages. */
  private readonly portals = new Map<string, BoundPortal>();
  private bytesIn = 0;
  /** The chunk most recently received from the client: forwarded whole when it held exactly the frames relayed unchanged. */
  private lastClientChunk: Buffer | undefined;
  private bytesOut = 0;
  /** Bytes received from the upstream (checkRunning: has a running statement's upstream gone silent). */
  private upstreamBytesRead = 0;
  /** Bits of Hold: why the client socket, and the upstream socket, are not being read now. */
  private clientHolds = 0;
  private upstreamHolds = 0;
  /** While a large DataRow or CopyData is streamed through: whether its parts go to the client (a row cap may drop it). */
  private streamForward = false;
  /** While a large ErrorResponse or NoticeResponse arrives: its first NOTICE_KEEP bytes. */
  private cutMessage: { kept: Buffer[]; size: number } | undefined;
  /** The budget account this session counts against (set at its first statement under a role budget). */
  private budgetAccount: BudgetAccount | undefined;
  /** Statements of this session in flight that were counted against a budget; the account's `running` holds one slot while any are. */
  private budgetRunning = 0;
  /** The role's budget under policy version `budgetVersion`. */
  private budget: RoleBudget | undefined;
  private budgetVersion = -1;
  /** Whether the session may have temporary objects: set when its role, which may make them, ran a statement that can. */
  private tempObjects = false;
  /** Set when an allowed statement changed or locked relations (DDL, TRUNCATE, LOCK): until no transaction is open, its changes are the session's alone. */
  private txChanged = false;
  /**
   * Allowed DDL has been sent and the upstream has not been idle outside a transaction block since: at that
   * ReadyForQuery (I) it is committed, and the server analysis's verdicts are forgotten (the gate forgot them when the
   * DDL was allowed, but another connection's analysis may have run before the DDL completed or its block committed).
   */
  private catalogPending = false;
  /** True after an extended-protocol message that opens or continues a batch, until the Sync (or Query) that ends it. */
  private batchOpen = false;
  /** Counts the client's batches: bumped by each Sync, Query and FunctionCall sent. */
  private batchSeq = 0;
  /** Statements run (Query, Execute, Sync, FunctionCall sent): a temporary-dependent prepared statement decided at another count is decided again. */
  private executions = 0;
  /** The server's analysis on this session's own upstream connection (own-analysis.ts). */
  private ownTarget: SessionAnalysis | undefined;
  /** Exchanges of pgwarden's own messages waiting for the upstream connection to be idle, and the one running. */
  private readonly exchanges: {
    make: Parameters<SessionExchange>[0];
    resolve(r: { status: TxStatus; frames: Frame[] }): void;
    reject(err: Error): void;
  }[] = [];
  private exchange:
    | {
        reader: UpstreamExchange;
        status: TxStatus;
        resolve(r: { status: TxStatus; frames: Frame[] }): void;
        reject(err: Error): void;
        timer: NodeJS.Timeout;
      }
    | undefined;

  constructor(
    socket: ClientStream,
    private readonly deps: SessionDeps,
  ) {
    this.socket = socket;
    this.remoteAddress = socket.remoteAddress;
    this.now = deps.now ?? Date.now;
    this.log = deps.log.child({ sessionId: this.id });
    // Until login only a PasswordMessage is expected: capped at the longest token, not limits.maxMessageSize (raised
    // in login). A startup-shaped packet after the startup phase starts with 0x00 and is refused at its first byte.
    // CopyData (COPY FROM STDIN) is relayed unchanged: past STREAM_THRESHOLD it streams through in parts, never
    // assembled; it is still held to the same length limit as every other message.
    this.framer = new MessageFramer({
      maxMessageSize: MAX_PASSWORD_MESSAGE_LENGTH,
      validTypes: FRONTEND_MESSAGE_TYPES,
      stream: { types: [FrontendType.CopyData], threshold: STREAM_THRESHOLD, maxSize: MAX_PASSWORD_MESSAGE_LENGTH },
    });
    socket.setNoDelay?.(true);
    this.attachClient(socket);
    this.handshakeTimer = setTimeout(() => {
      // Past the password the client has done its part: a slow token check or upstream login is not its fault.
      // No startup packet yet (none, or half of one): PostgreSQL's authentication_timeout closes without a message.
      if (this.phase === Phase.AwaitingStartup) this.close('timeout');
      else if (this.phase !== Phase.ConnectingUpstream)
        this.fail(new ProxyError('ERR_TIMEOUT', 'timed out waiting for the client to complete login'), 'timeout');
      else if (this.identity === undefined)
        this.fail(new ProxyError('ERR_TIMEOUT', 'timed out verifying the token (limits.handshakeTimeout)'), 'timeout');
      else
        this.fail(
          new ProxyError(
            'ERR_UPSTREAM',
            'timed out waiting for the upstream database to complete login (limits.handshakeTimeout)',
            { hint: 'the database behind pgwarden is slow or unreachable; try again later or contact the operator' },
          ),
          'upstream_lost',
        );
    }, deps.config.limits.handshakeTimeout);
  }

  // ---- socket plumbing -------------------------------------------------------------------------

  private attachClient(socket: ClientStream): void {
    socket.on('data', this.onClientData);
    socket.on('error', this.onClientError);
    socket.on('close', this.onClientClose);
  }

  private detachClient(socket: ClientStream): void {
    socket.off('data', this.onClientData);
    socket.off('error', this.onClientError);
    socket.off('close', this.onClientClose);
  }

  private readonly onClientError = (err: Error): void => {
    this.log.debug({ err }, 'client socket error');
    this.close('client');
  };

  private readonly onClientClose = (): void => {
    this.close('client');
  };

  private transition(to: Phase): void {
    if (!canTransition(this.phase, to)) {
      throw new ProxyError('ERR_INTERNAL', 'internal error in pgwarden', {
        cause: new Error(`illegal transition ${this.phase} → ${to}`),
      });
    }
    this.log.trace({ from: this.phase, to }, 'phase');
    this.phase = to;
  }

  private writeClient(data: Buffer | Buffer[]): void {
    if (this.closed) return;
    const buf = Array.isArray(data)
      ? data.length === 1
        ? (data[0] as Buffer)
        : data.length === 0
          ? undefined
          : Buffer.concat(data)
      : data;
    if (buf === undefined) return;
    this.bytesOut += buf.length;
    if (!this.socket.write(buf)) this.holdUpstream(Hold.ClientFull);
  }

  /** Stops reading the client for `reason` (a Hold bit) until releaseClient(reason) and every other reason is cleared. */
  private holdClient(reason: number): void {
    if (this.clientHolds === 0) this.socket.pause();
    this.clientHolds |= reason;
  }

  private releaseClient(reason: number): void {
    if ((this.clientHolds & reason) === 0) return;
    this.clientHolds &= ~reason;
    if (this.clientHolds === 0 && !this.closed) this.socket.resume();
  }

  private holdUpstream(reason: number): void {
    const up = this.upstream;
    if (!up) return;
    if (this.upstreamHolds === 0) up.socket.pause();
    this.upstreamHolds |= reason;
  }

  private releaseUpstream(reason: number): void {
    if ((this.upstreamHolds & reason) === 0) return;
    this.upstreamHolds &= ~reason;
    if (this.upstreamHolds === 0 && !this.closed) this.upstream?.socket.resume();
  }

  /**
   * Bytes this session holds in pgwarden's memory now: both framers, both sockets' read and write buffers, and a
   * cut error or notice. Bounded by construction (docs/limits.md, "Memory"); what the kernel buffers is not counted.
   */
  get bufferedBytes(): number {
    const up = this.upstream?.socket;
    return (
      this.framer.buffered +
      (this.upstreamFramer?.buffered ?? 0) +
      this.socket.readableLength +
      this.socket.writableLength +
      (up ? up.readableLength + up.writableLength : 0) +
      (this.cutMessage?.size ?? 0)
    );
  }

  private reportTraffic(): void {
    if (this.bytesIn === 0 && this.bytesOut === 0) return;
    this.deps.events?.traffic?.(this, this.bytesIn, this.bytesOut);
    this.bytesIn = 0;
    this.bytesOut = 0;
  }

  private trace(seq: number): StatementTrace {
    return { seq, startedAt: performance.now(), rows: 0, sqlstate: undefined, truncated: false, rowCapError: false };
  }

  private writeUpstream(data: Buffer[]): void {
    const up = this.upstream;
    // Once closed (a protocol error found in the middle of a client chunk), what was read before it goes nowhere.
    if (!up || data.length === 0 || this.closed) return;
    const ok = up.socket.write(data.length === 1 ? (data[0] as Buffer) : Buffer.concat(data));
    if (!ok) this.holdClient(Hold.UpstreamFull);
  }

  // ---- client input ----------------------------------------------------------------------------

  private readonly onClientData = (chunk: Buffer): void => {
    if (this.closed) return;
    this.bytesIn += chunk.length;
    try {
      this.framer.push(chunk);
      this.lastClientChunk = chunk;
      this.processClient();
    } catch (err) {
      if (err instanceof UnansweredStartupPacket) {
        // As PostgreSQL: a first packet it cannot frame gets no answer, only a log line.
        this.log.debug({ msg: err.message, detail: err.detail }, 'startup packet dropped');
        this.close('protocol_error');
        return;
      }
      this.fail(err, err instanceof ProxyError && err.code === 'ERR_PROTOCOL' ? 'protocol_error' : 'internal');
    }
  };

  private processClient(): void {
    if (this.processingClient) return;
    this.processingClient = true;
    try {
      for (;;) {
        if (this.closed) return;
        if (this.phase === Phase.AwaitingStartup) {
          const msg = this.framer.nextStartup();
          if (!msg) return;
          this.onStartupMessage(msg);
        } else if (this.phase === Phase.Authenticating) {
          const frame = this.framer.nextPart();
          if (!frame) return;
          if (isPart(frame))
            throw new ProxyError('ERR_PROTOCOL', `expected a password message, got message type ${frame.type}`);
          this.onPassword(frame);
        } else if (this.phase === Phase.Ready) {
          this.relayClientFrames();
          return;
        } else {
          // TLS handshake or upstream connect in progress: keep bytes buffered (pipelining drivers send ahead).
          return;
        }
      }
    } finally {
      this.processingClient = false;
      // An analysis on this session's connection, asked for by a message just handled, may start now.
      this.pumpExchanges();
    }
  }

  private onStartupMessage(msg: StartupMessage): void {
    switch (msg.kind) {
      case 'ssl': {
        if (!this.deps.tlsContext || this.isTls) {
          this.writeClient(encodeSSLResponse(false));
          return;
        }
        // Bytes sent after SSLRequest but before the handshake would be read as if encrypted: refuse (CVE-2021-23214 class).
        if (this.framer.buffered > 0) {
          throw new ProxyError('ERR_PROTOCOL', 'received unencrypted data after SSL request');
        }
        this.writeClient(encodeSSLResponse(true));
        this.transition(Phase.TlsHandshake);
        this.upgradeToTls();
        return;
      }
      case 'gssenc':
        this.writeClient(encodeSSLResponse(false));
        return;
      case 'cancel':
        this.deps.cancels.cancel(msg.processId, msg.secretKey, this.remoteAddress);
        this.close('client');
        return;
      case 'startup':
        this.onStartup(msg);
        return;
      default: {
        const never: never = msg;
        throw new ProxyError('ERR_PROTOCOL', `unexpected startup message ${String(never)}`);
      }
    }
  }

  private upgradeToTls(): void {
    const raw = this.socket;
    this.detachClient(raw);
    const secure = new tls.TLSSocket(raw, { isServer: true, secureContext: this.deps.tlsContext });
    // Records of at most 8192 bytes, as PostgreSQL's own 8 KiB send buffer makes them. libpq reads with at least
    // 8192 bytes free (pqReadData), so it then always takes a whole record; Node's default 16 KiB records left the
    // rest decrypted inside OpenSSL, where a driver waiting on the socket itself (psycopg) never sees it: a
    // response whose last record was split that way hung (docs/compat.md, "TLS record size").
    secure.setMaxSendFragment(TLS_MAX_RECORD);
    this.socket = secure;
    secure.once('secure', () => {
      this.isTls = true;
      this.transition(Phase.AwaitingStartup);
      this.processClient();
    });
    this.attachClient(secure);
  }

  private onStartup(msg: Extract<StartupMessage, { kind: 'startup' }>): void {
    const cfg = this.deps.config;
    this.startup = readClientStartup(msg.params, cfg.upstream.database);
    if (msg.minor > 0 || this.startup.unsupportedProtocolOptions.length > 0) {
      // We speak 3.0; tell a newer client so it can fall back instead of failing.
      this.writeClient(encodeNegotiateProtocolVersion(0, this.startup.unsupportedProtocolOptions));
    }
    if (!this.isTls) {
      const mode = cfg.auth.allowCleartext;
      if (mode === 'never' || (mode === 'loopback' && !isLoopback(this.remoteAddress))) {
        throw new ProxyError('ERR_TLS_REQUIRED', 'pgwarden requires TLS: the token would travel in cleartext', {
          hint: 'connect with sslmode=require (or verify-full)',
        });
      }
    }
    this.transition(Phase.Authenticating);
    this.writeClient(encodeAuthenticationCleartextPassword());
  }

  private onPassword(frame: Frame): void {
    if (frame.type !== FrontendType.PasswordMessage) {
      throw new ProxyError('ERR_PROTOCOL', `expected a password message, got message type ${frame.type}`);
    }
    const token = decodePassword(frame.body);
    this.transition(Phase.ConnectingUpstream);
    // Stop reading while we verify and connect: what the client pipelines stays in the kernel's buffers, not ours.
    this.holdClient(Hold.Login);
    void this.login(token);
  }

  private async login(token: string): Promise<void> {
    const { config, verifier, gate } = this.deps;
    const result = await verifier.verify(token, {
      roleExists: (name: string) => gate.role(name) !== undefined,
      isRevoked: this.deps.isRevoked,
      now: this.now(),
    });
    if (this.closed) return;
    if (!result.ok) {
      this.deps.events?.loginFailed?.(this, result.reason, result.error);
      this.log.warn({ reason: result.reason }, 'login refused');
      this.fail(result.error, 'auth_failed');
      return;
    }
    const identity = result.identity;
    const defined = gate.role(identity.role);
    // The effective role: the policy's, narrowed by the token's pgwarden_narrow claim (policy/narrow.ts); every
    // statement, the stamped limits and pgwarden.scope follow it.
    const role = defined === undefined ? undefined : effectiveRole(defined, identity.narrowing);
    if (!role) {
      this.fail(
        new ProxyError('ERR_TOKEN_REJECTED', `token role "${identity.role}" is not defined in the policy`, {
          hint: TOKEN_HINT,
          reason: 'credential_rejected',
        }),
        'auth_failed',
      );
      return;
    }
    const offNetwork = networkRefusal(this.remoteAddress, role, identity.networks);
    if (offNetwork) {
      this.deps.events?.loginFailed?.(this, 'network_denied', offNetwork);
      this.log.warn(
        {
          reason: 'network_denied',
          role: role.name,
          clientAddress: this.remoteAddress,
          networks: role.networks?.map((n) => n.text),
          claim: identity.networks?.map((n) => n.text),
        },
        'login refused',
      );
      this.fail(offNetwork, 'auth_failed');
      return;
    }
    // Verification may have waited for a JWKS fetch: a token that expired meanwhile opens no upstream connection.
    if (identity.exp * 1000 <= this.now()) {
      const expired = new ProxyError(
        'ERR_TOKEN_INVALID',
        `token expired at ${new Date(identity.exp * 1000).toISOString()}`,
        { hint: TOKEN_HINT, severity: 'FATAL', reason: 'credential_expired' },
      );
      this.deps.events?.loginFailed?.(this, 'expired', expired);
      this.fail(expired, 'auth_failed');
      return;
    }
    if (this.startup !== undefined) {
      try {
        // Startup settings follow the role's SET rules: a refused one ends the login before any upstream connection.
        acceptStartupSettings(this.startup.settings, role);
      } catch (err) {
        const e = toClientError(err);
        this.deps.events?.loginFailed?.(this, 'startup_parameter', e);
        this.fail(e, 'auth_failed');
        return;
      }
    }
    // A role that requires single-use tokens refuses a reusable one here, before anything is consumed or counted.
    if (role.singleUse === 'required' && identity.singleUse !== true) {
      const reusable = new ProxyError('ERR_TOKEN_REJECTED', `role "${role.name}" accepts only single-use tokens`, {
        hint: 'Request a single-use token for this role and reconnect with it as the password.',
        reason: 'credential_rejected',
      });
      this.deps.events?.loginFailed?.(this, 'single_use_required', reusable);
      this.fail(reusable, 'auth_failed');
      return;
    }
    const refusal = this.deps.admitIdentity?.(identity, this);
    if (refusal) {
      this.deps.events?.loginFailed?.(this, 'session_limit', refusal);
      this.fail(refusal, 'auth_failed');
      return;
    }
    this.identity = identity;
    this.role = role;
    this.log.info(
      {
        sub: identity.sub,
        agent: identity.agent,
        role: identity.role,
        jti: identity.jti,
        narrowing: identity.narrowing?.digest,
      },
      'token accepted',
    );
    // Last check before the upstream connection, with the session already counted as logged in (admitIdentity), so a
    // refusal by another check never burns the token and concurrent logins cannot overshoot the session limits.
    if (identity.singleUse === true) {
      // No consumer wired (a hand-built server): the token cannot be consumed, so it is refused.
      const refused = await (this.deps.singleUse ?? refuseSingleUse)(identity);
      if (this.closed) return;
      if (refused) {
        this.log.warn({ reason: refused.reason, jti: identity.jti }, 'login refused');
        this.deps.events?.loginFailed?.(this, refused.reason, refused.error);
        this.fail(refused.error, 'auth_failed');
        return;
      }
    }
    try {
      const startup = this.startup;
      if (!startup) throw new Error('startup missing');
      // Every stamped setting goes through stamps(), which a reload is compared against (policyChanged).
      const params = this.stamps(identity, role, startup);
      const t0 = performance.now();
      const up = await (this.deps.upstream ?? tcpUpstream).connect(config.upstream, params);
      this.deps.events?.upstreamConnected?.(this, performance.now() - t0);
      if (this.closed) {
        up.socket.destroy();
        return;
      }
      this.upstream = up;
      this.framer.setMaxMessageSize(config.limits.maxMessageSize, config.limits.maxMessageSize);
      this.onUpstreamReady(up);
    } catch (err) {
      const e = toClientError(err);
      if (e.code === 'ERR_UPSTREAM') this.log.error({ err }, 'upstream connect failed');
      this.deps.events?.loginFailed?.(this, 'upstream', e);
      this.fail(e, e.code === 'ERR_UPSTREAM' ? 'upstream_lost' : 'internal');
    }
  }

  private onUpstreamReady(up: UpstreamConnection): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    // Rows and COPY data are relayed unchanged: a large one streams through in parts instead of being assembled, and
    // so do errors and notices, which are cut to NOTICE_KEEP bytes (onUpstreamPart). Other messages are small.
    this.upstreamFramer = new MessageFramer({
      maxMessageSize: UPSTREAM_MAX_ASSEMBLED,
      stream: {
        types: [BackendType.DataRow, BackendType.CopyData, BackendType.ErrorResponse, BackendType.NoticeResponse],
        threshold: STREAM_THRESHOLD,
        maxSize: UPSTREAM_MAX_MESSAGE,
      },
    });
    const leftover = up.framer.takeRemaining();
    if (leftover.length > 0) this.upstreamFramer.push(leftover);
    // Each entry carries its own decision's row cap; there is no session-wide default.
    this.tracker = new ResponseTracker(undefined);
    this.ownTarget = new SessionAnalysis(this.exchangeUpstream, {
      timeoutMs: this.deps.config.analysis?.timeout ?? 5_000,
      onBroken: (err) => {
        this.log.error({ err }, "the analysis on the session's own connection left it in an unknown state");
        this.fail(
          new ProxyError('ERR_UPSTREAM', 'terminating connection: pgwarden lost track of the transaction state', {
            hint: 'reconnect; if it keeps happening, contact the operator',
          }),
          'internal',
        );
      },
    });
    this.checkedVersion = this.deps.gate.version;
    this.tracker.onFinish = (t) => {
      if (t.budgeted === true) this.endBudgeted();
      this.deps.events?.statementFinished?.(this, {
        seq: t.seq,
        rows: t.rows,
        durationMs: performance.now() - t.startedAt,
        sqlstate: t.sqlstate,
        truncated: t.truncated,
        rowCapError: t.rowCapError,
      });
      this.reportTraffic();
    };
    // The upstream backend's pid (what pg_backend_pid() and pg_stat_activity say) with a secret of pgwarden's own.
    const key = this.deps.cancels.issue({ cancelUpstream: () => this.cancelUpstream() }, up.processId);
    this.backendKey = key;
    const out: Buffer[] = [encodeAuthenticationOk()];
    for (const [name, value] of up.parameters) out.push(encodeParameterStatus(name, value));
    out.push(...up.notices);
    out.push(encodeBackendKeyData(key.processId, key.secretKey));
    out.push(encodeReadyForQuery('I'));
    this.writeClient(out);
    up.socket.on('data', this.onUpstreamData);
    up.socket.on('error', this.onUpstreamError);
    up.socket.on('close', this.onUpstreamClose);
    up.socket.on('drain', () => this.releaseClient(Hold.UpstreamFull));
    this.socket.on('drain', () => this.releaseUpstream(Hold.ClientFull));
    this.transition(Phase.Ready);
    this.releaseClient(Hold.Login);
    this.scheduleExpiry();
    this.armIdle();
    this.deps.events?.loginSucceeded?.(this);
    // Anything the client pipelined behind its password is handled now.
    this.processClient();
  }

  // ---- expiry ----------------------------------------------------------------------------------

  private scheduleExpiry(): void {
    const exp = this.identity?.exp;
    if (exp === undefined) return;
    const due = exp * 1000 - this.now();
    // setTimeout caps at 2^31-1 ms; re-arm for longer lifetimes.
    const delay = Math.max(0, Math.min(due, 2 ** 31 - 1));
    this.expiryTimer = setTimeout(() => {
      if (exp * 1000 - this.now() > 0) this.scheduleExpiry();
      else this.onExpired();
    }, delay);
    this.expiryTimer.unref?.();
  }

  private onExpired(): void {
    const grace = this.deps.config.limits.expiryGrace;
    if (grace > 0 && this.tracker?.busy) {
      // A documented grace for the running statement only; no new statement is accepted meanwhile.
      this.holdClient(Hold.Expiring);
      const t = setTimeout(() => this.expireNow(), grace);
      t.unref?.();
      return;
    }
    this.expireNow();
  }

  private expireNow(): void {
    const exp = this.identity?.exp ?? 0;
    this.endWith(
      new ProxyError(
        'ERR_TOKEN_EXPIRED_SESSION',
        `terminating connection because the credential expired at ${new Date(exp * 1000).toISOString()}`,
        {
          hint: 'request a new token and reconnect with it as the password',
        },
      ),
      'expired',
    );
  }

  /** Ends a live session administratively (expiry, revocation, role removed, shutdown): cancel running work, FATAL, close. */
  endWith(err: ProxyError, reason: EndReason): void {
    if (this.closed) return;
    if (this.tracker?.busy) this.cancelUpstream();
    this.fail(err, reason);
  }

  private armIdle(): void {
    const ms = this.deps.config.limits.idleSessionTimeout;
    if (!ms) return;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.tracker?.busy) return this.armIdle();
      this.endWith(
        new ProxyError('ERR_IDLE_TIMEOUT', 'terminating connection due to idle timeout', {
          hint: 'reconnect when you need the database again',
        }),
        'timeout',
      );
    }, ms);
    this.idleTimer.unref?.();
  }

  // ---- ready: client → upstream ----------------------------------------------------------------

  private cachedView: SessionView | undefined;

  /** What the policy sees of the session; the name sets are live, so one object serves until the role changes. */
  private view(): SessionView {
    const role = this.role;
    if (!role) throw new Error('no role');
    const v = this.cachedView;
    // Only a role that may make temporary objects can have them (and only such a role's names are looked up in pg_temp).
    const tempObjects = role.ddl?.temporary === true ? this.tempObjects : undefined;
    if (
      v !== undefined &&
      v.role === role &&
      v.backendPid === this.upstream?.processId &&
      v.tempObjects === tempObjects
    )
      return v;
    this.cachedView = {
      role,
      preparedNames: this.preparedNames,
      cursorNames: this.cursorNames,
      holdCursorNames: this.holdCursorNames,
      backendPid: this.upstream?.processId,
      tempObjects,
    };
    return this.cachedView;
  }

  /**
   * The decision for one statement: at once when it is cached, else a Promise (PostgreSQL's own analysis is
   * being obtained). Bookkeeping (sequence number, audit event, effects) happens when the decision is known.
   */
  /** `again`: an existing prepared statement, portal or cursor is being decided again; its effects make nothing new. */
  private decide(
    sql: string,
    mode: 'simple' | 'parse' | 'bind',
    paramTypes?: readonly number[],
    again = false,
  ): Decision | Promise<Decision> {
    const version = this.deps.gate.version;
    const t0 = performance.now();
    const decision = this.deps.gate.decide(
      sql,
      mode === 'bind' ? 'parse' : mode,
      this.view(),
      paramTypes,
      this.ownAnalysis(),
    );
    if (decision instanceof Promise) return decision.then((d) => this.decided(d, sql, mode, t0, version, again));
    return this.decided(decision, sql, mode, t0, version, again);
  }

  private decided(
    decision: Decision,
    sql: string,
    mode: 'simple' | 'parse' | 'bind',
    t0: number,
    version: number,
    again = false,
  ): Decision {
    const micros = (performance.now() - t0) * 1000;
    this.seq++;
    // Decided again after a reload, the statement upstream still holds the listing rewritten under the old policy.
    if (again && decision.allow && decision.listsScope === true) decision = staleScopeListing(decision);
    if (!decision.allow) decision = this.explainRevokedUse(decision, sql);
    else if (decision.statements.some((st) => st.kind === 'VariableSetStmt'))
      decision = this.withApplicationName(decision, sql);
    if (
      decision.allow &&
      decision.dependsOnTemporary === true &&
      decision.statements.some((st) => st.kind === 'PrepareStmt')
    )
      decision = temporaryPrepare(decision);
    if (decision.allow) this.noteChanges(decision);
    // What the session's own analysis allowed may no longer hold once this runs (a Query runs as soon as it is sent).
    if (decision.allow && !resolutionNeutral(decision)) this.ownMemo.clear();
    this.deps.events?.statementDecided?.(this, { seq: this.seq, mode, sql, decision, micros });
    if (decision.allow) {
      // The text is parsed once for all the PREPAREs and DECLAREs it holds, not once for each.
      let parsed: ParseOutcome | undefined;
      for (const e of decision.effects) {
        if (e.type === 'prepare') {
          this.preparedNames.add(e.name);
          parsed ??= parseStatements(sql);
          this.sqlPrepared.set(e.name, {
            sql: this.retainable(statementText(sql, parsed, 'prepare', e.name), this.sqlPrepared.get(e.name)?.sql),
            version,
            rowCap: decision.rowCap,
          });
          this.revokedPrepared.delete(e.name);
        } else if (e.type === 'deallocate') {
          // DEALLOCATE drops protocol-level (Parse) statements too: one namespace upstream.
          if (e.name === null) {
            this.preparedNames.clear();
            this.sqlPrepared.clear();
            this.revokedPrepared.clear();
            this.statements.clear();
          } else {
            this.preparedNames.delete(e.name);
            this.sqlPrepared.delete(e.name);
            this.revokedPrepared.delete(e.name);
            this.statements.delete(e.name);
          }
        } else if (e.type === 'declare') {
          this.cursorNames.add(e.name);
          if (e.hold === true) this.holdCursorNames.add(e.name);
          else this.holdCursorNames.delete(e.name);
          parsed ??= parseStatements(sql);
          this.sqlCursors.set(e.name, {
            sql: this.retainable(statementText(sql, parsed, 'declare', e.name), this.sqlCursors.get(e.name)?.sql),
            version,
            rowCap: decision.rowCap,
          });
          this.revokedCursors.delete(e.name);
          if (!again) {
            // A new cursor: its rows are counted from zero.
            this.portals.delete(e.name);
            this.tracker?.cursorReset(e.name);
          }
        } else if (e.type === 'close') {
          if (e.name === null) {
            this.cursorNames.clear();
            this.holdCursorNames.clear();
            this.sqlCursors.clear();
            this.revokedCursors.clear();
          } else {
            this.cursorNames.delete(e.name);
            this.holdCursorNames.delete(e.name);
            this.sqlCursors.delete(e.name);
            this.revokedCursors.delete(e.name);
          }
          this.tracker?.cursorReset(e.name);
        }
        // 'restamp' needs nothing here: identity and limits are startup parameters, which RESET ALL restores.
      }
      if (decision.shadowDenied) this.log.warn({ reason: decision.shadowDenied.reason }, 'shadow mode: would deny');
    } else {
      this.log.info({ reason: decision.reason, rule: decision.ruleId }, 'statement denied');
    }
    return decision;
  }

  /**
   * What an allowed statement means for where the server's analysis can run: DDL may make temporary objects (for a role
   * that may) and, like TRUNCATE and LOCK, changes or locks relations for the rest of its transaction.
   */
  private noteChanges(d: Extract<Decision, { allow: true }>): void {
    for (const st of d.statements) {
      if (CATALOG_CHANGING_KINDS.has(st.kind)) {
        this.txChanged = true;
        this.catalogPending = true;
        if (this.role?.ddl?.temporary === true) this.tempObjects = true;
      } else if (st.kind === 'TruncateStmt' || st.kind === 'LockStmt') {
        this.txChanged = true;
      }
    }
  }

  /**
   * An allowed text that sets application_name is sent with the value rewritten to pgwarden's identity prefix plus
   * the client's name (app-name.ts), in every mode: the server applies the prefixed name itself, and undoes it itself
   * when the transaction rolls back. A SET it cannot rewrite with certainty refuses the message.
   */
  private withApplicationName(d: Extract<Decision, { allow: true }>, sql: string): Decision {
    const id = this.identity;
    if (id === undefined) throw new Error('no identity');
    const r = rewriteApplicationName(d.rewrittenSql ?? sql, id.sub, id.agent);
    if (r.kind === 'unchanged') return d;
    if (r.kind === 'rewritten') return { ...d, rewrittenSql: r.sql };
    return {
      allow: false,
      ruleId: 'builtin.settings',
      sqlstate: SqlState.InsufficientPrivilege,
      message: 'permission denied by pgwarden: SET changes a setting pgwarden does not allow',
      detail: `application_name: ${r.why} (rule: builtin.settings)`,
      hint: "SET application_name = 'my-app'",
      reason: 'setting_pinned',
      statements: d.statements,
    };
  }

  /** A use of a prepared statement or cursor that a reload revoked is refused saying so, not as if it never existed. */
  private explainRevokedUse(d: Extract<Decision, { allow: false }>, sql: string): Decision {
    if (d.reason !== 'unknown_prepared_statement' && d.reason !== 'unknown_cursor') return d;
    if (this.revokedPrepared.size === 0 && this.revokedCursors.size === 0) return d;
    const used = usedNames(sql);
    for (const [name, refusal] of this.revokedPrepared) {
      if (used.prepared.has(name))
        return this.revokedDecision(d, policyChangedError('prepared statement', name, refusal));
    }
    for (const [name, refusal] of this.revokedCursors) {
      if (used.cursors.has(name)) return this.revokedDecision(d, policyChangedError('cursor', name, refusal));
    }
    return d;
  }

  private revokedDecision(d: Extract<Decision, { allow: false }>, err: ProxyError): Decision {
    return { ...d, reason: 'policy_changed', message: err.message, detail: err.detail, hint: err.hint };
  }

  /**
   * After a reload, decides every SQL-level prepared statement and cursor again, before the client's next message
   * is handled. Those now refused are forgotten as allowed (so EXECUTE, FETCH, MOVE, Bind and Execute of them are
   * refused, saying the policy changed) and queued to be closed upstream. Returns a Promise while decisions are
   * being obtained.
   */
  private revalidate(): Promise<void> | undefined {
    const version = this.deps.gate.version;
    if (version === this.checkedVersion) return undefined;
    this.checkedVersion = version;
    const jobs: { kind: 'S' | 'P'; name: string; d: Decision | Promise<Decision> }[] = [];
    const refusedText: Decision = {
      allow: false,
      ruleId: undefined,
      sqlstate: SqlState.InsufficientPrivilege,
      message: 'its statement text could not be decided again',
      detail: undefined,
      hint: undefined,
      reason: 'internal',
      statements: [],
    };
    for (const [name, obj] of this.sqlPrepared) {
      if (obj.version !== version)
        jobs.push({
          kind: 'S',
          name,
          d: obj.sql === undefined ? refusedText : this.decide(obj.sql, 'simple', undefined, true),
        });
    }
    for (const [name, obj] of this.sqlCursors) {
      if (obj.version !== version)
        jobs.push({
          kind: 'P',
          name,
          d: obj.sql === undefined ? refusedText : this.decide(obj.sql, 'simple', undefined, true),
        });
    }
    const apply = (decisions: Decision[]): void => {
      jobs.forEach((job, i) => {
        const d = decisions[i];
        if (d === undefined || d.allow) return;
        const refusal = this.denial(d).message;
        if (job.kind === 'S') {
          this.preparedNames.delete(job.name);
          this.sqlPrepared.delete(job.name);
          this.revokedPrepared.set(job.name, refusal);
        } else {
          this.cursorNames.delete(job.name);
          this.sqlCursors.delete(job.name);
          this.revokedCursors.set(job.name, refusal);
        }
        this.pendingClose.push({ target: job.kind, name: job.name });
        this.log.info(
          { kind: job.kind === 'S' ? 'prepared statement' : 'cursor', name: job.name, version },
          'refused after a policy change; closing it',
        );
      });
    };
    if (jobs.every((j) => !(j.d instanceof Promise))) {
      apply(jobs.map((j) => j.d as Decision));
      return undefined;
    }
    return Promise.all(jobs.map((j) => j.d)).then(apply);
  }

  /** Closes refused statements and cursors upstream: a Close per name and a Sync, all pgwarden's own (responses not forwarded). */
  private flushCloses(tracker: ResponseTracker, out: Buffer[]): void {
    for (const c of this.pendingClose.splice(0)) {
      tracker.expect(FrontendType.Close, undefined, undefined, undefined, { internal: true });
      out.push(encodeClose(c.target, c.name));
    }
    tracker.expect(FrontendType.Sync, undefined, undefined, undefined, { internal: true });
    out.push(encodeSync());
  }

  /**
   * Called after every policy swap. A change to a setting stamped on the upstream session at login (readOnly,
   * statementTimeout, dbRole, searchPath) cannot be applied under a running transaction or statement: the session
   * ends (57P01) at its next idle point outside a transaction, or at once when it is idle now.
   */
  policyChanged(): void {
    const login = this.role;
    if (this.closed || login === undefined || this.stampChange !== undefined) return;
    if (!this.stampedSettingsChanged()) return;
    this.stampChange = new ProxyError(
      'ERR_SHUTDOWN',
      'terminating connection because the policy for this role changed its session settings',
      {
        detail:
          'readOnly, statementTimeout, dbRole or searchPath changed, or a setting the session started with is no longer allowed; they are applied when a session starts',
        hint: 'reconnect to continue under the current policy',
        reason: 'session_ended',
      },
    );
    this.log.info({ role: login.name }, 'session settings changed by a reload; ending the session when it is idle');
    this.endIfIdle();
  }

  /**
   * The upstream startup parameters for this session under `role`: what login stamps, and what a reload is compared
   * against, so every setting stamped here (now or later) is one whose change ends the session.
   */
  private stamps(identity: Identity, role: RolePolicy, startup: ClientStartup): Record<string, string> {
    return stampParameters({
      sessionId: this.id,
      sub: identity.sub,
      agent: identity.agent,
      tenant: identity.tenant,
      jti: identity.jti,
      roleName: identity.role,
      expiresAt: identity.exp,
      readOnly: role.readOnly,
      statementTimeoutMs: role.statementTimeout,
      idleInTransactionTimeoutMs: role.idleInTransactionTimeout,
      dbRole: role.dbRole,
      searchPath: role.searchPath,
      clientApplicationName: startup.applicationName,
      forwarded: startup.forwarded,
      settings: acceptStartupSettings(startup.settings, role),
    });
  }

  /** Whether the current policy's role would stamp this session differently from its login-time role (a removed role does not count here). */
  private stampedSettingsChanged(): boolean {
    const login = this.role;
    const identity = this.identity;
    const startup = this.startup;
    const defined = login ? this.deps.gate.role(login.name) : undefined;
    const now = defined === undefined ? undefined : effectiveRole(defined, identity?.narrowing);
    if (login === undefined || now === undefined || identity === undefined || startup === undefined) return false;
    const a = this.stamps(identity, login, startup);
    let b: Record<string, string>;
    try {
      b = this.stamps(identity, now, startup);
    } catch {
      // A startup setting the role no longer allows: the session cannot go on as it started.
      return true;
    }
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const k of keys) if (a[k] !== b[k]) return true;
    return false;
  }

  /** Ends the session for a stamped-setting change when nothing is running and no transaction is open. */
  private endIfIdle(): boolean {
    const err = this.stampChange;
    const tracker = this.tracker;
    if (err === undefined || tracker === undefined || this.closed || this.holding) return false;
    if (tracker.busy || tracker.txStatus !== 'I') return false;
    if (!this.stampedSettingsChanged()) {
      // Changed back before the session was idle: nothing to apply.
      this.stampChange = undefined;
      return false;
    }
    this.endWith(err, 'policy_reload');
    return true;
  }

  /** True while a decision is being obtained: the client's later messages wait (in order) until it is known. */
  private get holding(): boolean {
    return (this.clientHolds & Hold.Deciding) !== 0;
  }

  /** The decisions the client was held for are known: read it again, starting with the messages already framed. */
  private decisionsKnown(): void {
    this.releaseClient(Hold.Deciding);
    this.processClient();
  }

  /**
   * Runs `then` with the decision now, or once it is known; in the meantime nothing more is read from the client,
   * so the messages after this one keep their order.
   */
  private withDecision<T>(d: T | Promise<T>, out: Buffer[], then: (d: T, out: Buffer[]) => void): void {
    if (!(d instanceof Promise)) {
      then(d, out);
      return;
    }
    this.holdClient(Hold.Deciding);
    d.then(
      (decision) => {
        if (this.closed) return;
        const later: Buffer[] = [];
        try {
          then(decision, later);
        } catch (err) {
          this.fail(err, 'internal');
          return;
        }
        this.writeUpstream(later);
        this.decisionsKnown();
      },
      // The gate never rejects, but the session's own bookkeeping of a decision (decided(), its audit event) may
      // throw: the client is held until this settles, so it must end the session, never leave the client waiting.
      (err: unknown) => {
        if (!this.closed) this.fail(err, 'internal');
      },
    );
  }

  private denial(decision: Extract<Decision, { allow: false }>): ProxyError {
    if (decision.reason === 'server_error') {
      // PostgreSQL's own analysis failed: the client sees what running the statement would have shown.
      return new ProxyError('ERR_SERVER_ANALYSIS', decision.message, {
        detail: decision.detail,
        hint: decision.hint,
        sqlstate: decision.sqlstate,
        position: decision.position,
        source: decision.source,
        reason: refusalReason(decision),
      });
    }
    const code = DENIAL_CODES.get(decision.sqlstate);
    return new ProxyError(code ?? 'ERR_STATEMENT_DENIED', decision.message, {
      detail: decision.detail,
      hint: decision.hint,
      reason: refusalReason(decision),
      operatorHint: decision.operatorHint,
      // The decision's own SQLSTATE: the catalog's for the code, or another the code lists (42P20 for ERR_SYNTAX, say).
      sqlstate: decision.sqlstate,
      position: decision.position,
    });
  }

  /**
   * The answer to the Parse that made `entry` (or a Close of its name, `ok` false, which ends the wait for it). Failed
   * or skipped, the name holds upstream what it held before: that statement is the name's again (or none), here too.
   */
  private parseSettled(name: string, entry: NamedStatement, ok: boolean): void {
    settleName(this.statements, name, entry, ok);
  }

  /** rollbackFirst in a batch for the refused statement `name`: upstream the unnamed statement and portal are now its ROLLBACK. */
  private rollbackFirstInBatch(tracker: ResponseTracker, name: string, o: Buffer[]): void {
    rollbackFirst(tracker, true, o);
    if (name !== '') this.statements.delete('');
    this.portals.delete('');
  }

  /**
   * Bind of a named statement decided as it is now (st.version, st.rowCap and st.bindChecks current): the values are
   * checked against what the decision left to Bind (bind-checks.ts), then the portal is bound under that decision.
   */
  private bindStatement(tracker: ResponseTracker, st: NamedStatement, b: BindMessage, frame: Frame, o: Buffer[]): void {
    const unbound = bindRefusal(st.bindChecks, b, st.paramTypes, this.bindContext);
    if (unbound !== undefined) {
      refuseMessage(tracker, unbound, o);
      return;
    }
    this.bindPortal(tracker, b.portal, frame, o, {
      seq: st.seq,
      sql: st.sql,
      mode: 'bind',
      paramTypes: st.paramTypes,
      neutral: st.neutral,
      copy: st.copy,
      version: st.version,
      rowCap: st.rowCap,
      ...(st.bindChecks !== undefined ? { bind: b } : {}),
      ...siblingChecks(st.bindChecks),
    });
  }

  /** Bind of an allowed statement: the portal is tracked with the decision it runs under. */
  private bindPortal(tracker: ResponseTracker, name: string, frame: Frame, o: Buffer[], portal: BoundPortal): void {
    tracker.portalBound(name);
    portal.previous = this.portals.get(name) ?? null;
    portal.batch = this.batchSeq;
    this.portals.set(name, portal);
    tracker.expect(FrontendType.Bind, undefined, undefined, undefined, {
      settled: (ok) => this.bindSettled(name, portal, ok),
    });
    o.push(frame.raw);
  }

  /** The answer to the Bind that made `portal`: failed or skipped, the name holds upstream what it held before, here too. */
  private bindSettled(name: string, portal: BoundPortal, ok: boolean): void {
    settleName(this.portals, name, portal, ok);
  }

  /** Execute of a portal (or of a DECLAREd cursor read through the protocol) under its decision's row cap. */
  private executePortal(
    tracker: ResponseTracker,
    name: string,
    isCursor: boolean,
    frame: Frame,
    o: Buffer[],
    cap: RowCap | undefined,
    seq: number,
    copy = false,
  ): void {
    const overBudget = this.spendBudget(1, seq);
    if (overBudget !== undefined) {
      refuseMessage(tracker, overBudget, o);
      return;
    }
    tracker.expect(FrontendType.Execute, undefined, name, this.startBudgeted(this.trace(seq)), {
      cap,
      cursors: isCursor ? [name] : undefined,
      copy,
    });
    o.push(frame.raw);
    // A COPY's first answer (CopyInResponse or not) decides what a Sync after it means (ResponseTracker.copySync):
    // ask for it now rather than at that Sync.
    if (copy) o.push(encodeFlush());
  }

  // ---- per-agent budgets (budget.ts) -------------------------------------------------------------

  /**
   * For `count` statements about to be forwarded: the 53400 refusal when the role's budget for this subject or
   * agent is used up, else undefined, the statements counted. Read from the policy in force, so a reload applies at
   * the next statement.
   */
  private spendBudget(count: number, seq = this.seq): ProxyError | undefined {
    const ledger = this.deps.budgets;
    const identity = this.identity;
    const name = this.role?.name;
    if (ledger === undefined || identity === undefined || name === undefined) return undefined;
    // The role as the policy in force defines it, and the account it counts under, looked up once per policy version
    // (this runs per statement). The account stays the same until a reload: this session's attachment keeps it in the ledger.
    const version = this.deps.gate.version;
    if (version !== this.budgetVersion) {
      this.budgetVersion = version;
      this.budget = this.deps.gate.role(name)?.budget;
      const account = this.budget !== undefined ? ledger.account(name, this.budget, identity) : undefined;
      if (account !== undefined && account !== this.budgetAccount) {
        // First statement under a budget, or a reload changed what it is counted per.
        if (this.budgetAccount !== undefined) {
          this.budgetAccount.sessions--;
          if (this.budgetRunning > 0) this.budgetAccount.running--;
        }
        account.sessions++;
        if (this.budgetRunning > 0) account.running++;
        this.budgetAccount = account;
      }
    }
    const budget = this.budget;
    const account = this.budgetAccount;
    if (budget === undefined || account === undefined) return undefined;
    const now = ledger.nowMs();
    const refusal = checkBudget(account, budget, count, this.budgetRunning > 0, now);
    if (refusal === undefined) {
      account.statements.add(count, now);
      return undefined;
    }
    this.log.info(
      { kind: refusal.kind, limit: refusal.limit, per: budget.per, retryInMs: refusal.retryInMs },
      'statement refused: budget used up',
    );
    this.deps.events?.budgetExceeded?.(this, {
      seq,
      kind: refusal.kind,
      per: budget.per,
      limit: refusal.limit,
      retryInMs: refusal.retryInMs,
    });
    return budgetError(refusal, budget.per, count);
  }

  /** Marks a forwarded statement as counted against the budget account: it holds the session's concurrency slot until it finishes. */
  private startBudgeted(trace: StatementTrace): StatementTrace {
    const account = this.budgetAccount;
    if (account === undefined) return trace;
    if (this.budgetRunning === 0) account.running++;
    this.budgetRunning++;
    trace.budgeted = true;
    return trace;
  }

  private endBudgeted(): void {
    if (this.budgetRunning === 0) return;
    this.budgetRunning--;
    if (this.budgetRunning === 0 && this.budgetAccount !== undefined) this.budgetAccount.running--;
  }

  /** Rows and result bytes relayed, counted against the budget account (a running statement is never cut for them). */
  private chargeBudget(rows: number, bytes: number): void {
    const account = this.budgetAccount;
    const ledger = this.deps.budgets;
    if (account === undefined || ledger === undefined) return;
    const now = ledger.nowMs();
    if (rows > 0) account.rows.add(rows, now);
    account.bytes.add(bytes, now);
  }

  private relayClientFrames(): void {
    const tracker = this.tracker;
    if (!tracker || this.holding) return;
    if (this.framer.buffered > 0) {
      // A reload since the last message: decide SQL-level prepared statements and cursors again before anything uses them.
      const pending = this.revalidate();
      if (pending !== undefined) {
        this.holdClient(Hold.Deciding);
        pending.then(
          () => {
            if (!this.closed) this.decisionsKnown();
          },
          (err: unknown) => this.fail(err, 'internal'),
        );
        return;
      }
    }
    const out: Buffer[] = [];
    let sawTerminate = false;
    // Whether `out` is the client's last chunk, frame for frame and unchanged (the common case: one round trip's
    // messages in one segment); then that chunk is written as received instead of a concatenation of its views.
    let verbatim = true;
    let bytes = 0;
    for (let frame = this.framer.nextPart(); frame; frame = this.framer.nextPart()) {
      if (isPart(frame)) {
        // A large CopyData, passed on as it arrives (as whole ones are; Postgres ignores it outside COPY FROM STDIN).
        out.push(frame.bytes);
        bytes += frame.bytes.length;
        verbatim = false;
        continue;
      }
      // A stamped setting changed and the session is idle outside a transaction: end it instead of running more.
      if (this.stampChange !== undefined && out.length === 0 && this.endIfIdle()) return;
      // Shutting down: no new statement starts (an open extended-protocol batch may complete); the session ends when idle.
      if (this.drainError !== undefined && tracker.atBatchBoundary) {
        if (out.length === 0 && !tracker.busy) {
          this.fail(this.drainError, 'shutdown');
          return;
        }
        break;
      }
      if (this.pendingClose.length > 0 && tracker.atBatchBoundary) {
        this.flushCloses(tracker, out);
        verbatim = false;
      }
      const before = out.length;
      const end = this.handleClientFrame(frame, tracker, out);
      this.noteSent(frame.type);
      if (verbatim && (out.length !== before + 1 || out[before] !== frame.raw)) verbatim = false;
      bytes += frame.raw.length;
      if (end) {
        sawTerminate = true;
        break;
      }
      if (this.holding) break;
      if (tracker.outstanding >= MAX_PIPELINE_DEPTH) {
        // The rest stays in the framer (and the kernel) until responses are read: see MAX_PIPELINE_DEPTH.
        this.holdClient(Hold.PipelineDepth);
        break;
      }
    }
    const chunk = this.lastClientChunk;
    this.lastClientChunk = undefined;
    const first = out[0];
    if (
      verbatim &&
      first !== undefined &&
      chunk !== undefined &&
      bytes === chunk.length &&
      first.buffer === chunk.buffer &&
      first.byteOffset === chunk.byteOffset
    ) {
      // The framer hands out consecutive views of a chunk, so these views laid end to end are the chunk itself.
      this.writeUpstream([chunk]);
    } else {
      this.writeUpstream(out);
    }
    this.armIdle();
    if (sawTerminate) this.close('client');
  }

  /** Returns true on Terminate. */
  private handleClientFrame(frame: Frame, tracker: ResponseTracker, out: Buffer[]): boolean {
    switch (frame.type) {
      case FrontendType.Query: {
        if (this.batchOpen) {
          // After an error in the batch PostgreSQL ignores a Query until Sync, otherwise it runs it: which one is not
          // known when it is sent, so neither its effects (PREPARE, DECLARE) nor the batch's end could be recorded truly.
          // Refused, answered as PostgreSQL answers a failed Query (or not at all when it is ignored); the batch stays open.
          tracker.expect(
            FrontendType.Query,
            new ProxyError(
              'ERR_FEATURE',
              'a simple Query inside an unfinished extended-protocol batch is not supported by pgwarden',
              { hint: 'send Sync to end the batch before a simple Query', reason: 'unsupported' },
            ),
          );
          out.push(encodeQuery(SENTINEL_SQL));
          return false;
        }
        const { sql } = decodeQuery(frame.body);
        this.withDecision(this.decide(sql, 'simple'), out, (d, o) => {
          const overBudget = d.allow ? this.spendBudget(Math.max(1, d.statements.length)) : undefined;
          if (overBudget !== undefined) {
            // Refused like a denied statement: the sentinel runs nothing, and the session stays usable.
            if (endsTransaction(sql, d.statements)) rollbackFirst(tracker, false, o);
            tracker.expect(FrontendType.Query, overBudget);
            o.push(encodeQuery(SENTINEL_SQL));
          } else if (d.allow) {
            const text = d.rewrittenSql ?? sql;
            // FETCHes are counted per cursor too, so paging through a cursor cannot read past the cap.
            const cursors =
              d.rowCap !== undefined && d.statements.some((st) => st.kind === 'FetchStmt')
                ? fetchedCursors(text)
                : undefined;
            tracker.expect(FrontendType.Query, undefined, undefined, this.startBudgeted(this.trace(this.seq)), {
              cap: d.rowCap,
              cursors,
              copy: d.statements.some((st) => st.kind === 'CopyStmt'),
              copySingle: d.statements.length === 1,
            });
            o.push(d.rewrittenSql !== undefined ? encodeQuery(d.rewrittenSql) : frame.raw);
          } else {
            if (endsTransaction(sql, d.statements)) rollbackFirst(tracker, false, o);
            tracker.expect(FrontendType.Query, this.denial(d));
            o.push(encodeQuery(SENTINEL_SQL));
          }
        });
        return false;
      }
      case FrontendType.Parse: {
        const p = decodeParse(frame.body);
        if (
          p.name !== '' &&
          this.retainedSql() - (this.statements.get(p.name)?.sql?.length ?? 0) + p.sql.length > MAX_RETAINED_SQL
        ) {
          // Before any decision: the text would not be kept, and a named statement must be decidable again after a reload.
          refuseMessage(
            tracker,
            new ProxyError(
              'ERR_STATEMENT_DENIED',
              `too much prepared statement text in this session (over ${MAX_RETAINED_SQL} characters)`,
              {
                sqlstate: SqlState.ProgramLimitExceeded,
                reason: 'limit_reached',
                hint: 'close (or DEALLOCATE) prepared statements the session no longer needs, or use unnamed statements',
              },
            ),
            out,
          );
          return false;
        }
        const version = this.deps.gate.version;
        this.withDecision(this.decide(p.sql, 'parse', p.paramTypes), out, (d, o) => {
          const previous = this.statements.get(p.name);
          const entry: NamedStatement = {
            sql: p.sql,
            paramTypes: p.paramTypes,
            version,
            allowed: d.allow,
            seq: this.seq,
            rowCap: d.allow ? d.rowCap : undefined,
            bindChecks: d.allow ? d.bindChecks : undefined,
            temporaryAt: d.allow && d.dependsOnTemporary === true ? this.executions : undefined,
            neutral: d.allow && resolutionNeutral(d),
            copy: d.allow && d.statements.some((st) => st.kind === 'CopyStmt'),
          };
          if (
            !d.allow &&
            p.name !== '' &&
            previous !== undefined &&
            (previous.allowed || previous.revoked !== undefined)
          ) {
            // The sentinel fails before the name is checked, so the earlier statement of that name stays upstream: keep refusing it.
            entry.revoked = this.denial(d).message;
            entry.replaced = true;
            this.pendingClose.push({ target: 'S', name: p.name });
          }
          this.statements.set(p.name, entry);
          if (d.allow) {
            entry.previous = previous ?? null;
            entry.batch = this.batchSeq;
            tracker.expect(FrontendType.Parse, undefined, undefined, undefined, {
              settled: (ok) => this.parseSettled(p.name, entry, ok),
            });
            o.push(d.rewrittenSql !== undefined ? encodeParse(p.name, d.rewrittenSql, p.paramTypes) : frame.raw);
          } else {
            if (endsTransaction(p.sql, d.statements)) this.rollbackFirstInBatch(tracker, p.name, o);
            tracker.expect(FrontendType.Parse, this.denial(d));
            // Same statement name, so a later Bind to it fails as the name was never created.
            o.push(encodeParse(p.name, SENTINEL_SQL, []));
          }
        });
        return false;
      }
      case FrontendType.Bind: {
        const b = decodeBind(frame.body);
        const st = this.statements.get(b.statement);
        const sp = st === undefined ? this.sqlPrepared.get(b.statement) : undefined;
        const version = this.deps.gate.version;
        if (st?.previous !== undefined && st.batch !== this.batchSeq) {
          // Its Parse, sent in an earlier batch, is unanswered: if PostgreSQL failed or skipped it, the name still holds
          // the statement before it, and this Bind would run that under this one's decision. Decided once it is known
          // (that batch's Sync is sent, so the answer comes without anything more from the client).
          const known = new Promise<void>((resolve) => {
            const before = st.onSettled;
            st.onSettled = () => {
              before?.();
              resolve();
            };
          });
          this.withDecision(known, out, (_, o) => {
            this.handleClientFrame(frame, tracker, o);
          });
          return false;
        }
        // Methods, not closures: a named closure per message costs more than the rest of this path.
        if (st !== undefined) {
          if (st.revoked !== undefined) {
            refuseMessage(
              tracker,
              st.replaced
                ? new ProxyError(
                    'ERR_STATEMENT_DENIED',
                    `permission denied by pgwarden: prepared statement ${quoteIdent(b.statement)} was refused when it was last prepared`,
                    {
                      detail: st.revoked,
                      hint: 'prepare it again with a statement the policy allows',
                      reason: 'policy_denied',
                    },
                  )
                : policyChangedError('prepared statement', b.statement, st.revoked),
              out,
            );
            return false;
          }
          const temporary = st.temporaryAt !== undefined && st.temporaryAt !== this.executions;
          if (st.allowed && st.version === version && temporary) {
            // Allowed as the session's temporary relations were when it was parsed, and statements have run since:
            // PostgreSQL resolves its names again if they changed, so pgwarden analyses it again first.
            this.withDecision(this.decide(st.sql, 'bind', st.paramTypes, true), out, (d, o) => {
              st.seq = this.seq;
              if (!d.allow) {
                refuseMessage(tracker, this.denial(d), o);
                return;
              }
              st.temporaryAt = d.dependsOnTemporary === true ? this.executions : undefined;
              st.rowCap = d.rowCap;
              st.bindChecks = d.bindChecks;
              this.bindStatement(tracker, st, b, frame, o);
            });
            return false;
          }
          if (st.allowed && st.version !== version) {
            // Decided under an older policy: decide again before it runs.
            this.withDecision(this.decide(st.sql, 'bind', st.paramTypes, true), out, (d, o) => {
              st.version = version;
              st.seq = this.seq;
              st.temporaryAt = d.allow && d.dependsOnTemporary === true ? this.executions : undefined;
              if (!d.allow) {
                st.allowed = false;
                st.revoked = this.denial(d).message;
                this.pendingClose.push({ target: 'S', name: b.statement });
                // A cached PREPARE TRANSACTION (postgres.js keeps its statements) whose key a reload removed.
                if (endsTransaction(st.sql, d.statements)) this.rollbackFirstInBatch(tracker, b.statement, o);
                refuseMessage(
                  tracker,
                  b.statement === ''
                    ? this.denial(d)
                    : policyChangedError('prepared statement', b.statement, st.revoked),
                  o,
                );
                return;
              }
              st.rowCap = d.rowCap;
              st.bindChecks = d.bindChecks;
              this.bindStatement(tracker, st, b, frame, o);
            });
            return false;
          }
          this.bindStatement(tracker, st, b, frame, out);
          return false;
        }
        if (sp !== undefined && sp.sql !== undefined) {
          // Made by SQL PREPARE: decided again after every reload (revalidate), so it is current here.
          this.bindPortal(tracker, b.portal, frame, out, {
            seq: this.seq,
            sql: sp.sql,
            mode: 'simple',
            paramTypes: [],
            version: sp.version,
            rowCap: sp.rowCap,
            neutral: true,
          });
          return false;
        }
        const revoked = this.revokedPrepared.get(b.statement);
        if (revoked !== undefined) {
          refuseMessage(tracker, policyChangedError('prepared statement', b.statement, revoked), out);
          return false;
        }
        // Not made through pgwarden (or already closed): Postgres would run whatever holds the name, unchecked.
        refuseMessage(
          tracker,
          new ProxyError(
            'ERR_STATEMENT_DENIED',
            `permission denied by pgwarden: prepared statement ${quoteIdent(b.statement)} was not prepared through pgwarden`,
            {
              detail:
                'Bind may use only statements whose Parse or PREPARE passed the policy in this session (rule: builtin.prepared)',
              reason: 'statement_invalid',
              hint: 'prepare it first',
            },
          ),
          out,
        );
        return false;
      }
      case FrontendType.Execute: {
        const e = decodeExecute(frame.body);
        const portal = this.portals.get(e.portal);
        const cursor = portal === undefined ? this.sqlCursors.get(e.portal) : undefined;
        const version = this.deps.gate.version;
        if (portal?.previous !== undefined && portal.batch !== this.batchSeq) {
          // Its Bind, sent in an earlier batch, is unanswered: executed once it is known which portal the name holds.
          const known = new Promise<void>((resolve) => {
            const before = portal.onSettled;
            portal.onSettled = () => {
              before?.();
              resolve();
            };
          });
          this.withDecision(known, out, (_, o) => {
            this.handleClientFrame(frame, tracker, o);
          });
          return false;
        }
        if (portal !== undefined) {
          // A prepared DDL or transaction statement runs now: what the session's own analysis allowed may not hold.
          if (portal.neutral !== true) this.ownMemo.clear();
          if (portal.version !== version) {
            // Bound under an older policy: decide its statement again before it runs.
            this.withDecision(this.decide(portal.sql, portal.mode, portal.paramTypes, true), out, (d, o) => {
              if (!d.allow) {
                this.portals.delete(e.portal);
                refuseMessage(tracker, policyChangedError('portal', e.portal, this.denial(d).message), o);
                return;
              }
              // Its bound values against the new policy's checks (a channel the reload took away).
              const unbound =
                d.bindChecks === undefined
                  ? undefined
                  : bindRefusal(d.bindChecks, portal.bind ?? NO_VALUES, portal.paramTypes, this.bindContext);
              if (unbound !== undefined) {
                this.portals.delete(e.portal);
                refuseMessage(tracker, policyChangedError('portal', e.portal, unbound.message), o);
                return;
              }
              portal.version = version;
              portal.rowCap = d.rowCap;
              portal.signals = siblingChecks(d.bindChecks).signals;
              this.executePortal(tracker, e.portal, false, frame, o, d.rowCap, portal.seq, portal.copy === true);
            });
            return false;
          }
          // The backend it signals must still be a sibling's: checked at Bind, the sibling may have ended since.
          const gone =
            portal.signals === undefined
              ? undefined
              : bindRefusal(portal.signals, portal.bind ?? NO_VALUES, portal.paramTypes, this.bindContext);
          if (gone !== undefined) {
            refuseMessage(tracker, gone, out);
            return false;
          }
          this.executePortal(tracker, e.portal, false, frame, out, portal.rowCap, portal.seq, portal.copy === true);
          return false;
        }
        if (cursor !== undefined) {
          // A cursor made by DECLARE, read through the protocol: the cursor's current decision and its row count apply.
          this.executePortal(tracker, e.portal, true, frame, out, cursor.rowCap, 0);
          return false;
        }
        const revoked = this.revokedCursors.get(e.portal);
        refuseMessage(
          tracker,
          revoked !== undefined
            ? policyChangedError('cursor', e.portal, revoked)
            : new ProxyError(
                'ERR_STATEMENT_DENIED',
                `permission denied by pgwarden: portal ${quoteIdent(e.portal)} was not bound or declared through pgwarden`,
                {
                  detail:
                    'Execute may use only portals bound to allowed statements and cursors whose DECLARE passed the policy (rule: builtin.cursors)',
                  reason: 'statement_invalid',
                  hint: 'bind the statement or declare the cursor first',
                },
              ),
          out,
        );
        return false;
      }
      case FrontendType.Describe:
        tracker.expect(FrontendType.Describe);
        out.push(frame.raw);
        return false;
      case FrontendType.Close: {
        const c = decodeClose(frame.body);
        if (c.target === 'S') {
          // Prepared statements made by Parse and by SQL PREPARE share one namespace upstream.
          this.statements.delete(c.name);
          this.preparedNames.delete(c.name);
          this.sqlPrepared.delete(c.name);
          // Skipped after an error, it left the statement upstream: closed by pgwarden after the batch (as forgotten here).
          tracker.expect(FrontendType.Close, undefined, undefined, undefined, {
            settled: (ok) => {
              if (!ok) this.pendingClose.push({ target: 'S', name: c.name });
            },
          });
          out.push(frame.raw);
          return false;
        }
        {
          tracker.portalClosed(c.name);
          this.portals.delete(c.name);
          // Portals and cursors share one namespace too.
          this.cursorNames.delete(c.name);
          this.sqlCursors.delete(c.name);
          tracker.cursorReset(c.name);
        }
        tracker.expect(FrontendType.Close);
        out.push(frame.raw);
        return false;
      }
      case FrontendType.Sync: {
        if (tracker.copyQueryRunning) {
          // PostgreSQL reads a Sync sent during a simple Query's COPY FROM STDIN as part of its input and ignores it,
          // or answers it once the Query is done, depending on which of the Query's statements is running when it
          // is read: pgwarden could not tell which, and would expect answers that never come. No client library
          // sends one there.
          this.fail(
            new ProxyError('ERR_PROTOCOL', 'Sync received while a simple Query with COPY is running'),
            'protocol_error',
          );
          return true;
        }
        const copy = tracker.copySync();
        // PostgreSQL is in COPY IN for the client's COPY and ignores this Sync: so does pgwarden.
        if (copy === 'drop') return false;
        if (copy instanceof Promise) {
          // Sent with the COPY's Execute, before its first answer (libpq does): only that answer tells whether
          // PostgreSQL will read this Sync. The Execute was followed by a Flush, so the answer comes. Read, it may
          // still have to wait for an error-mode row cap (a COPY TO's rows), as below.
          const known = copy.then(async (copyIn) => {
            if (!copyIn && tracker.errorCapPending) await this.answersIn();
            return copyIn;
          });
          this.withDecision(known, out, (copyIn, o) => {
            if (!copyIn) this.syncBatch(tracker, frame, o);
          });
          return false;
        }
        if (tracker.errorCapPending) {
          // An Execute of this batch may still pass its error-mode row cap, an error only pgwarden would report: the
          // Sync waits until every answer is in (a Flush asks for them), so the batch can be made to fail before it.
          this.withDecision(this.answersIn(), out, (_, o) => this.syncBatch(tracker, frame, o));
          return false;
        }
        this.syncBatch(tracker, frame, out);
        return false;
      }
      case FrontendType.Flush:
        out.push(frame.raw);
        return false;
      case FrontendType.FunctionCall:
        // The fast-path function call runs a function by OID with no SQL for the policy to see.
        tracker.expect(
          FrontendType.FunctionCall,
          new ProxyError('ERR_FEATURE', 'the FunctionCall protocol message is not supported by pgwarden', {
            hint: 'call the function with a SELECT statement instead',
            reason: 'unsupported',
          }),
        );
        out.push(encodeQuery(SENTINEL_SQL));
        return false;
      case FrontendType.CopyDone:
      case FrontendType.CopyFail:
        // The COPY's input ends: PostgreSQL answers a Sync after it again.
        tracker.copyInputEnded();
        out.push(frame.raw);
        return false;
      case FrontendType.CopyData:
        // Only reachable upstream when a policy allowed COPY FROM STDIN; otherwise Postgres ignores them.
        out.push(frame.raw);
        return false;
      case FrontendType.Terminate:
        out.push(frame.raw);
        return true;
      default:
        throw new ProxyError('ERR_PROTOCOL', `invalid frontend message type ${frame.type}`);
    }
  }

  // ---- ready: upstream → client ----------------------------------------------------------------

  private readonly onUpstreamData = (chunk: Buffer): void => {
    // Counted here rather than read from net.Socket's bytesRead, so an in-memory upstream is checked the same way.
    this.upstreamBytesRead += chunk.length;
    if (this.exchange !== undefined) {
      this.feedExchange(chunk);
      return;
    }
    this.relayUpstream(chunk);
  };

  /** Upstream bytes answering the client's messages (everything but pgwarden's own exchanges). */
  private relayUpstream(chunk: Buffer): void {
    const framer = this.upstreamFramer;
    const tracker = this.tracker;
    if (!framer || !tracker || this.closed) return;
    try {
      const clean = framer.buffered === 0;
      framer.push(chunk);
      const out: Buffer[] = [];
      let verbatim = clean;
      const rowsBefore = tracker.rowsRelayed;
      for (let next = framer.nextPart(); next; next = framer.nextPart()) {
        let frame: Frame | undefined;
        if (isPart(next)) {
          verbatim = false;
          frame = this.onUpstreamPart(next, tracker, out);
          if (frame === undefined) continue;
        } else {
          frame = next;
        }
        const relayed = this.relayUpstreamFrame(frame, tracker, out);
        if (relayed === 'closed') return;
        if (!relayed) verbatim = false;
      }
      // Fast path: nothing was changed or held back, so the chunk goes out as received.
      if (verbatim && framer.buffered === 0) this.writeClient(chunk);
      else this.writeClient(out);
      if (this.budgetAccount !== undefined) this.chargeBudget(tracker.rowsRelayed - rowsBefore, chunk.length);
      // Portals made by Bind end with their transaction (PostgreSQL drops them at commit or rollback): idle outside a
      // transaction with nothing outstanding, none the session tracks exists any more, so the map cannot grow forever.
      if (this.portals.size > 0 && tracker.idleSinceReady) {
        this.portals.clear();
        tracker.transactionEnded();
      }
      if ((this.clientHolds & Hold.PipelineDepth) !== 0 && tracker.outstanding <= MAX_PIPELINE_DEPTH / 2) {
        this.releaseClient(Hold.PipelineDepth);
        // Messages already read wait in the framer.
        this.processClient();
      }
      // A reload changed a stamped setting: the session ends once it is idle outside a transaction.
      if (this.stampChange !== undefined) this.endIfIdle();
      // Shutting down: the running statement has completed, so the session ends now.
      if (this.drainError !== undefined && !tracker.busy && !this.holding) this.fail(this.drainError, 'shutdown');
      // An analysis waiting for the connection to be idle may start now.
      this.pumpExchanges();
    } catch (err) {
      this.fail(err, 'internal');
    }
  }

  // ---- the server's analysis on this session's own connection (own-analysis.ts) ------------------

  /** SessionExchange for SessionAnalysis: queued until the upstream connection is idle (pumpExchanges). */
  private readonly exchangeUpstream: SessionExchange = (make) =>
    new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new AnalysisUnavailable('the session has ended'));
        return;
      }
      this.exchanges.push({ make, resolve, reject });
      this.pumpExchanges();
    });

  /**
   * Starts the next exchange once the upstream connection is idle from the client's view: every message sent has
   * been answered through its ReadyForQuery, no extended-protocol batch is open (the session offers its connection
   * only then: OwnAnalysis.target), and no client message is being handled. The client is held meanwhile (a decision
   * is pending), so nothing of its can come between.
   */
  private pumpExchanges(): void {
    if (this.exchange !== undefined || this.exchanges.length === 0 || this.processingClient) return;
    const tracker = this.tracker;
    const up = this.upstream;
    const framer = this.upstreamFramer;
    if (this.closed || tracker === undefined || up === undefined || framer === undefined) {
      for (const x of this.exchanges.splice(0)) x.reject(new AnalysisUnavailable('the session has ended'));
      return;
    }
    // In the middle of the client's batch (offered only inside an explicit transaction block: ownAnalysis), PostgreSQL
    // keeps its answers to the batch until a Sync or Flush: a Flush of pgwarden's own asks for them, and changes nothing
    // else. The exchange waits for every one of them, so it knows how the batch went before it adds to it.
    const midBatch = !tracker.atBatchBoundary;
    if (midBatch && tracker.awaitingCopyData) {
      this.rejectNextExchange("the session's connection is in the middle of a COPY");
      return;
    }
    if (tracker.busy) {
      if (midBatch && !this.flushAsked) {
        this.flushAsked = true;
        this.writeUpstream([encodeFlush()]);
      }
      return;
    }
    this.flushAsked = false;
    let status = tracker.txStatus;
    if (midBatch) {
      // A Sync of pgwarden's own in the client's batch ends neither an explicit transaction block nor its portals, and
      // an error before it would already have made PostgreSQL skip the rest (then the client's message is skipped too,
      // and no analysis is needed). Anywhere else (an implicit transaction that Sync would commit, a batch whose
      // transaction control may have ended the block, an error) the messages cannot go there.
      if (!tracker.inExplicitBlock || tracker.skipping) {
        this.rejectNextExchange("the session's connection is in the middle of a batch outside a transaction block");
        return;
      }
      status = 'T';
    }
    const next = this.exchanges.shift();
    if (next === undefined) return;
    // batchOpen may already count the message whose decision asked for this exchange (it is sent only once decided):
    // the connection was offered only when no batch was open before it (ownAnalysis), and nothing is sent meanwhile.
    if (framer.buffered > 0) {
      next.reject(new AnalysisUnavailable("the session's connection is not idle"));
      this.pumpExchanges();
      return;
    }
    const plan = next.make(status);
    if (plan === undefined) {
      next.resolve({ status, frames: [] });
      this.pumpExchanges();
      return;
    }
    const timeoutMs = (this.deps.config.analysis?.timeout ?? 5_000) + 2_000;
    const timer = setTimeout(() => {
      this.log.warn({ timeoutMs }, "the analysis on the session's own connection got no answer; ending the session");
      this.fail(
        new ProxyError('ERR_UPSTREAM', `the upstream connection did not answer within ${timeoutMs} ms`, {
          hint: 'reconnect; if it keeps happening, contact the operator',
        }),
        'upstream_lost',
      );
    }, timeoutMs);
    timer.unref?.();
    this.exchange = {
      reader: new UpstreamExchange(plan.readyCount, OWN_ANALYSIS_MAX_TREE),
      status,
      resolve: next.resolve,
      reject: next.reject,
      timer,
    };
    // Nothing of the answers goes to the client: read them even while the client is slow to read its results.
    if (up.socket.isPaused()) up.socket.resume();
    this.writeUpstream(plan.messages);
  }

  /**
   * ParameterStatus that PostgreSQL sent during an exchange: a setting the client changed (in the middle of its batch:
   * SET DateStyle, TimeZone, application_name before the statement analysed there), reported at the wrapper's
   * ReadyForQuery and never again. In the middle of a batch they wait for the client's own ReadyForQuery, where
   * PostgreSQL alone would have put them (a report PostgreSQL makes there of the same setting is newer and replaces
   * it); elsewhere they go to the client at once, as asynchronous messages may.
   */
  private holdParameters(frames: Buffer[]): void {
    if (this.tracker === undefined || this.tracker.atBatchBoundary) {
      this.writeClient(frames);
      return;
    }
    this.heldParameters ??= new Map();
    for (const f of frames) this.heldParameters.set(decodeParameterStatus(f.subarray(5)).name, f);
  }

  /** ParameterStatus frames from exchanges in the middle of the client's batch, by name, for its next ReadyForQuery. */
  private heldParameters: Map<string, Buffer> | undefined;

  /** What Bind checks read from the session besides the bound values (bind-checks.ts). */
  private readonly bindContext: BindContext = {
    siblingBackends: () => {
      const own = this.backendPid;
      return this.deps.siblingBackends?.(this) ?? new Set(own === undefined ? [] : [own]);
    },
  };

  /** The upstream backend's process id once connected (what pg_backend_pid() answers for this session). */
  get backendPid(): number | undefined {
    return this.closed ? undefined : this.upstream?.processId;
  }

  /** Settles once every message sent upstream is answered (a Flush asks for the answers in an open batch). */
  private answersIn(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.exchangeUpstream(() => undefined).then(
        () => resolve(),
        () => resolve(),
      );
    });
  }

  /**
   * The client's Sync. After a row cap error pgwarden reported in the batch (onRowCap: error), PostgreSQL, which never
   * saw that error, ran the rest of the batch: a statement of pgwarden's own that fails (its error is not the
   * client's) goes before the Sync, so PostgreSQL rolls the batch's implicit transaction back, or leaves an explicit
   * one aborted, as an error of its own would have. Nothing the client was told failed commits.
   */
  private syncBatch(tracker: ResponseTracker, frame: Frame, out: Buffer[]): void {
    if (tracker.capErrorInBatch) {
      tracker.expect(FrontendType.Parse, undefined, undefined, undefined, { internal: true });
      // A named statement: a failed Parse of it leaves the client's unnamed statement alone.
      out.push(encodeParse(`pgwarden_${randomUUID().replaceAll('-', '')}`, SENTINEL_SQL, []));
    }
    tracker.expect(FrontendType.Sync);
    out.push(frame.raw);
  }

  /** Refuses the next waiting exchange (its analysis is unavailable: the decision refuses) and tries the one after. */
  private rejectNextExchange(why: string): void {
    this.flushAsked = false;
    this.exchanges.shift()?.reject(new AnalysisUnavailable(why));
    this.pumpExchanges();
  }

  /** Set when pumpExchanges sent a Flush in the client's open batch and waits for its answers. */
  private flushAsked = false;

  /** Upstream bytes while an exchange runs: its answers, then (once complete) whatever follows, relayed as usual. */
  private feedExchange(chunk: Buffer): void {
    const ex = this.exchange;
    if (ex === undefined) return;
    let rest: Buffer | undefined;
    try {
      rest = ex.reader.push(chunk);
    } catch (err) {
      clearTimeout(ex.timer);
      this.exchange = undefined;
      ex.reject(err instanceof Error ? err : new AnalysisUnavailable(String(err)));
      this.fail(
        new ProxyError('ERR_UPSTREAM', 'the connection to the upstream database was lost', {
          hint: 'reconnect; if it keeps happening, contact the operator',
        }),
        'upstream_lost',
      );
      return;
    }
    // A notification (LISTEN) is the client's, whenever it arrives.
    if (ex.reader.notifications.length > 0) this.writeClient(ex.reader.notifications.splice(0));
    if (ex.reader.parameters.length > 0) this.holdParameters(ex.reader.parameters.splice(0));
    if (rest === undefined) return;
    clearTimeout(ex.timer);
    this.exchange = undefined;
    if (this.upstreamHolds !== 0) this.upstream?.socket.pause();
    ex.resolve({ status: ex.status, frames: ex.reader.frames });
    if (rest.length > 0) this.relayUpstream(rest);
    this.pumpExchanges();
  }

  /**
   * What the session offers the server's analysis: its own connection, usable when no batch is open, and required
   * when pgwarden's analysis connections cannot tell what this session sees.
   */
  private ownAnalysis(): OwnAnalysis | undefined {
    const target = this.ownTarget;
    const tracker = this.tracker;
    if (target === undefined || tracker === undefined) return undefined;
    // Idle outside a transaction: whatever the session's statements changed is committed (or gone) and visible to all.
    if (this.txChanged && !tracker.busy && !this.batchOpen && tracker.txStatus === 'I') this.txChanged = false;
    // In an open batch the connection is offered only inside an explicit transaction block with no error so far (as
    // far as answered: pumpExchanges checks again once every answer is in).
    const usable = !this.batchOpen || (tracker.inExplicitBlock && !tracker.skipping && !tracker.awaitingCopyData);
    const i = (usable ? 1 : 0) + (this.tempObjects || this.txChanged ? 2 : 0);
    // Four fixed offers, made once: this runs for every statement decided.
    const memo = this.ownMemo;
    this.ownOffers ??= [
      { target: undefined, required: false, memo },
      { target, required: false, memo },
      { target: undefined, required: true, memo },
      { target, required: true, memo },
    ];
    return this.ownOffers[i];
  }

  /** What the session's own analysis allowed since the session last ran something that may change name resolution. */
  private readonly ownMemo = new OwnMemo();

  /** ownAnalysis()'s answers: [batch open, idle] × [not required, required]. */
  private ownOffers: readonly OwnAnalysis[] | undefined;

  /** Bookkeeping of what was sent upstream for a client message: batches and executions (see batchOpen, executions). */
  private noteSent(type: number): void {
    switch (type) {
      case FrontendType.Query:
      case FrontendType.FunctionCall:
        // Inside a batch it may be ignored (after an error, until Sync): the batch is open until the client's Sync.
        if (this.batchOpen) return;
        this.batchSeq++;
        this.executions++;
        return;
      case FrontendType.Sync:
        this.batchOpen = false;
        this.batchSeq++;
        this.executions++;
        return;
      case FrontendType.Execute:
        this.batchOpen = true;
        this.executions++;
        return;
      case FrontendType.Parse:
      case FrontendType.Bind:
      case FrontendType.Describe:
      case FrontendType.Close:
        this.batchOpen = true;
        return;
      default:
        return;
    }
  }

  /**
   * One whole upstream message: the tracker decides what the client gets (pushed onto `out`). Returns true when that
   * is the message unchanged, false when it was changed or held back, 'closed' when the session ended.
   */
  private relayUpstreamFrame(frame: Frame, tracker: ResponseTracker, out: Buffer[]): boolean | 'closed' {
    if (frame.type === BackendType.ReadyForQuery && tracker.capErrorInQuery && frame.body[0] === 0x54) {
      // A simple Query pgwarden failed with a row cap error ran on in PostgreSQL, whose transaction block is still
      // usable: a failing Query of pgwarden's own aborts it, and its ReadyForQuery (E) is the one the client gets, so
      // nothing the client was told failed can be committed.
      tracker.onFrame(frame, []);
      tracker.expect(FrontendType.Query, undefined, undefined, undefined, { internal: true, forwardReady: true });
      this.writeUpstream([encodeQuery(SENTINEL_SQL)]);
      return false;
    }
    let held = false;
    if (this.heldParameters !== undefined) {
      if (frame.type === BackendType.ParameterStatus) {
        this.heldParameters.delete(decodeParameterStatus(frame.body).name);
      } else if (frame.type === BackendType.ReadyForQuery) {
        for (const f of this.heldParameters.values()) out.push(f);
        this.heldParameters = undefined;
        held = true;
      }
    }
    const before = out.length;
    let verbatim = tracker.onFrame(frame, out) && !held;
    // Every answer in, idle outside a block: the DDL sent so far has run and is committed (or rolled back).
    if (
      this.catalogPending &&
      frame.type === BackendType.ReadyForQuery &&
      frame.body[0] === 0x49 &&
      !tracker.busy &&
      !this.batchOpen
    ) {
      this.catalogPending = false;
      this.deps.gate.catalogSettled();
    }
    // Postgres quotes row values in some errors and notices (constraint violations, rejected input); the
    // scrubbed copy replaces the original. Only these two types are looked at, so rows stay on the fast path.
    if (
      (frame.type === BackendType.ErrorResponse || frame.type === BackendType.NoticeResponse) &&
      scrubForwarded(frame, out, before)
    ) {
      verbatim = false;
    }
    if (frame.type === BackendType.ErrorResponse && this.isFatalFrame(frame)) {
      // Postgres is ending the session (e.g. admin shutdown): pass its FATAL on and close.
      this.writeClient(out);
      this.close('upstream_lost');
      return 'closed';
    }
    return verbatim;
  }

  /**
   * One part of an upstream message too large to hold whole (STREAM_THRESHOLD). A row's bytes go to the client as
   * they arrive, counted against its row cap at the first part; an error or notice keeps its first NOTICE_KEEP bytes
   * and comes back, cut, as a whole message once its last part is here.
   */
  private onUpstreamPart(part: FramePart, tracker: ResponseTracker, out: Buffer[]): Frame | undefined {
    if (part.type === BackendType.ErrorResponse || part.type === BackendType.NoticeResponse) {
      if (part.first) this.cutMessage = { kept: [], size: 0 };
      const cut = this.cutMessage;
      if (cut === undefined) throw new Error('a message part without its first part');
      const room = NOTICE_KEEP - cut.size;
      if (room > 0) {
        // Copied: a view would pin the whole chunk it arrived in.
        const piece = Buffer.from(part.bytes.subarray(0, room));
        cut.kept.push(piece);
        cut.size += piece.length;
      }
      if (!part.last) return undefined;
      this.cutMessage = undefined;
      this.log.debug(
        { type: String.fromCharCode(part.type), length: part.length },
        'upstream message cut to NOTICE_KEEP bytes',
      );
      return truncatedMessage(part.type, Buffer.concat(cut.kept, cut.size));
    }
    if (part.first) this.streamForward = tracker.onStreamStart(part.type, out);
    if (this.streamForward) out.push(part.bytes);
    return undefined;
  }

  private isFatalFrame(frame: Frame): boolean {
    // Severity field 'S' comes first in Postgres's ErrorResponse; check for FATAL/PANIC without a full decode.
    const body = frame.body;
    return (
      body[0] === 0x53 &&
      (body.subarray(1, 6).toString('latin1') === 'FATAL' || body.subarray(1, 6).toString('latin1') === 'PANIC')
    );
  }

  private readonly onUpstreamError = (err: Error): void => {
    // A reset after we ended the session is expected; one during a live session is worth a warning.
    if (this.closed) this.log.debug({ err }, 'upstream socket error after close');
    else this.log.warn({ err }, 'upstream socket error');
  };

  private readonly onUpstreamClose = (): void => {
    if (this.closed) return;
    this.fail(
      new ProxyError('ERR_UPSTREAM', 'the connection to the upstream database was lost', {
        hint: 'reconnect; if it keeps happening, contact the operator',
      }),
      'upstream_lost',
    );
  };

  private cancelUpstream(): void {
    const up = this.upstream;
    if (!up) return;
    void (this.deps.upstream ?? tcpUpstream).cancel(this.deps.config.upstream, up.processId, up.secretKey);
  }

  // ---- ending ----------------------------------------------------------------------------------

  /** Sends the error to the client (FATAL unless it is a plain ERROR, which is still followed by close) and closes. */
  private fail(err: unknown, reason: EndReason): void {
    if (this.closed) return;
    const e = toClientError(err);
    if (e.code === 'ERR_INTERNAL') this.log.error({ err }, 'internal error');
    else this.log.debug({ code: e.code, msg: e.message }, 'session failed');
    this.writeClient(e.severity === 'FATAL' ? encodeProxyError(e) : fatalFrame(e));
    this.close(reason);
  }

  /** Closes both sides once; idempotent. */
  close(reason: EndReason): void {
    if (this.closed) return;
    this.closed = true;
    this.endReason = reason;
    if (this.phase !== Phase.Closing) this.phase = Phase.Closing;
    for (const t of [this.handshakeTimer, this.expiryTimer, this.idleTimer, this.upstreamCheck]) if (t) clearTimeout(t);
    const ex = this.exchange;
    this.exchange = undefined;
    if (ex !== undefined) {
      clearTimeout(ex.timer);
      ex.reject(new AnalysisUnavailable('the session has ended'));
    }
    for (const x of this.exchanges.splice(0)) x.reject(new AnalysisUnavailable('the session has ended'));
    if (this.backendKey) this.deps.cancels.release(this.backendKey);
    if (this.budgetAccount !== undefined) {
      this.budgetAccount.sessions--;
      if (this.budgetRunning > 0) this.budgetAccount.running--;
      this.budgetRunning = 0;
    }
    this.reportTraffic();
    const up = this.upstream;
    if (up) {
      up.socket.off('data', this.onUpstreamData);
      up.socket.off('close', this.onUpstreamClose);
      // Terminate politely so Postgres logs a normal disconnect, then drop the socket.
      if (!up.socket.destroyed) up.socket.end(encodeTerminate());
      setTimeout(() => up.socket.destroy(), 1000).unref?.();
    }
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref?.();
    this.deps.events?.sessionEnded?.(this, reason);
  }

  /** Set when shutdown began: nothing new runs, and the session ends with this error at its next idle point. */
  private drainError: ProxyError | undefined;
  private upstreamCheck: NodeJS.Timeout | undefined;

  /** Shutdown has begun: ends the session now when nothing is running, else once the running statement (or open batch) completes. */
  drain(err: ProxyError): void {
    if (this.closed) return;
    this.drainError = err;
    if (this.phase !== Phase.Ready || (!this.busy && !this.holding)) this.fail(err, 'shutdown');
  }

  /**
   * Dead-upstream check of an idle session: a Sync, which runs nothing and is answered by ReadyForQuery. Never sent
   * inside a transaction (it would restart idle_in_transaction_session_timeout) or while anything is outstanding.
   * No byte back within `timeoutMs` means the upstream is gone though its socket looks open: the session ends (08006).
   */
  checkUpstream(timeoutMs: number): void {
    const up = this.upstream;
    const tracker = this.tracker;
    if (
      this.closed ||
      up === undefined ||
      tracker === undefined ||
      this.phase !== Phase.Ready ||
      this.upstreamCheck !== undefined
    )
      return;
    if (tracker.busy) {
      this.checkRunning(up.socket, tracker.atBatchBoundary, timeoutMs);
      return;
    }
    this.quiet = undefined;
    if (tracker.txStatus !== 'I' || this.holding || this.framer.buffered > 0 || this.drainError !== undefined) return;
    // Not while reading the upstream is paused (a client slow to read its last result): an answer could not be seen.
    if (up.socket.isPaused() || this.socket.writableLength > 0) return;
    let answered = false;
    const onAnswer = (): void => {
      answered = true;
    };
    up.socket.once('data', onAnswer);
    tracker.expect(FrontendType.Sync, undefined, undefined, undefined, { internal: true });
    this.writeUpstream([encodeSync()]);
    this.upstreamCheck = setTimeout(() => {
      this.upstreamCheck = undefined;
      up.socket.off('data', onAnswer);
      if (answered || this.closed) return;
      this.log.warn({ timeoutMs }, 'the upstream did not answer an idle check; ending the session');
      this.fail(
        new ProxyError(
          'ERR_UPSTREAM',
          `the upstream connection was lost: no answer to a check within ${timeoutMs} ms`,
          { hint: 'reconnect; if it keeps happening, contact the operator' },
        ),
        'upstream_lost',
      );
    }, timeoutMs);
    this.upstreamCheck.unref?.();
  }

  /** Upstream bytes read at the last check of a running statement, and since when that count has not moved. */
  private quiet: { bytesRead: number; since: number } | undefined;

  /**
   * A statement running on an upstream gone silent. PostgreSQL answers within the statement_timeout stamped at login
   * (the role's statementTimeout; lock waits and COPY count too), so no byte for statementTimeout + `timeoutMs`, with
   * a whole batch sent (nothing awaited from the client) and reading not paused by pgwarden, means it is gone.
   */
  private checkRunning(up: Duplex, batchSent: boolean, timeoutMs: number): void {
    const limit = this.role?.statementTimeout;
    const now = Date.now();
    if (
      limit === undefined ||
      !batchSent ||
      up.isPaused() ||
      this.quiet === undefined ||
      this.quiet.bytesRead !== this.upstreamBytesRead
    ) {
      this.quiet = { bytesRead: this.upstreamBytesRead, since: now };
      return;
    }
    const silent = now - this.quiet.since;
    if (silent < limit + timeoutMs) return;
    this.log.warn(
      { silentMs: silent, statementTimeout: limit },
      'the upstream sent nothing for longer than the statement timeout allows; ending the session',
    );
    this.endWith(
      new ProxyError(
        'ERR_UPSTREAM',
        `the upstream connection was lost: no answer for ${silent} ms while a statement ran (its statementTimeout is ${limit} ms)`,
        {
          hint: 'reconnect; if it keeps happening, contact the operator',
        },
      ),
      'upstream_lost',
    );
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** SQL text kept for named statements, SQL-level prepared statements and cursors (see MAX_RETAINED_SQL). */
  private retainedSql(): number {
    return this.statements.textLength + this.sqlPrepared.textLength + this.sqlCursors.textLength;
  }

  /** `text` if keeping it (in place of `replaced`) stays within MAX_RETAINED_SQL, else undefined (decided again never: refused after a reload). */
  private retainable(text: string | undefined, replaced: string | undefined): string | undefined {
    if (text === undefined || this.retainedSql() - (replaced?.length ?? 0) + text.length <= MAX_RETAINED_SQL)
      return text;
    this.log.info(
      { length: text.length },
      'statement text not kept: MAX_RETAINED_SQL reached; the name is refused after the next reload',
    );
    return undefined;
  }

  /** Messages sent upstream whose responses are still due (bounded by MAX_PIPELINE_DEPTH plus one read's worth). */
  get pendingResponses(): number {
    return this.tracker?.outstanding ?? 0;
  }

  /** True while a statement is running or a batch awaits Sync. */
  get busy(): boolean {
    return this.tracker?.busy ?? false;
  }
}
