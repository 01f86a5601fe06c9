// The audit trail: one JSON event per login, statement decision, session end, policy reload and revocation change, on its own pino destination.
//
// Why a separate stream: the operational log (log.ts) is for operators and can be turned down to `warn`; the audit
// trail is evidence of who did what and must always be complete, in a fixed shape that SIEMs can parse.
//
// What never reaches it: tokens, passwords, upstream credentials. The Session never holds the token; every event is
// built from an explicit list of fields (never by spreading a session or identity), pino `redact` blanks `password`
// and `token` keys anyway, and any string that looks like a JWT is replaced — even inside SQL text. Statement events,
// one or two per statement, are serialised by hand from fixed fields (no key there can be a secret's), bypassing
// pino's generic path, encoded once into a batch buffer and written to the same destination in batches.
//
// Failure policy (the choice the operator makes with `onFailure`):
//   - 'refuse' (default): when the destination reports an error (unwritable file, disk full, closed pipe) `healthy`
//     turns false and `auditGate()` returns false: the proxy refuses new logins and statements until a write
//     succeeds again. No statement runs unrecorded once the failure is known. Events written just before the
//     failure stay in the destination's buffer and are retried, so nothing already decided is silently lost
//     unless the process dies meanwhile.
//   - 'continue': the failure (and the recovery) is reported on stderr / the operational log and traffic goes on;
//     events queue in memory up to MAX_BUFFERED_BYTES, beyond that they are dropped and counted.
// A destination that stops draining (a paused stdout reader, a stuck pipe) is a failure like any other: once the
// bytes it has not yet taken plus the lines held here would pass MAX_BUFFERED_BYTES, the trail is `stalled` (not
// healthy) with the same consequences per `onFailure`; it recovers when the destination has drained to half that.
// On failure an `audit_gap` marker is queued first; it is written when the trail recovers, with `dropped` counting
// the events lost in between. While unhealthy a probe re-opens a file destination (or flushes an fd) every few
// seconds, and the first successful write (normally of the marker and the queued events) flips `healthy` back.
// A plain stream passed in cannot recover from an error (Node destroys a stream after 'error'), only from a stall.
import os from 'node:os';
import { loadModule, normalizeSync, scanSync } from 'libpg-query';
import pino, { type Logger } from 'pino';
import type { Identity } from './auth/jwt.ts';
import { ProxyError } from '../lib/errors.ts';
import type { StatementGate } from './session/gate.ts';
import type { EndReason, Session, SessionEvents } from './session/session.ts';
import type { Decision } from '../policy/types.ts';
import { replaceLiterals, scanLiterals } from '../policy/literals.ts';

/** Bumped when a field changes meaning or is removed (adding a field does not bump it). */
export const AUDIT_SCHEMA_VERSION = 1;

/** Longest SQL text written per statement event; longer text is cut and `sqlTruncated` set. */
export const MAX_AUDIT_SQL = 16 * 1024;

/**
 * Longest SQL text normalised per statement event ('normalized' mode): longer text is cut to this *before* it is
 * normalised (and `sqlTruncated` set), because the normaliser's passes (the server's normaliser in WASM, the scanner)
 * cost about 1 ms per KiB on a hostile text and grow the WASM memory for good; a 1 MiB statement used to stall the
 * event loop for seconds here. 8 KiB is policy/literals.ts's MAX_SHAPE_LENGTH, so the cut text still takes the
 * exact JS fast path when it can.
 */
export const MAX_NORMALIZED_SQL_INPUT = 8 * 1024;

/** Events are written in batches: at most this long after the first of a batch… */
export const BATCH_MS = 10;
/** …or as soon as a batch holds this many characters. */
const BATCH_BYTES = 64 * 1024;
/** The batch buffer: room for a full batch plus the longest line (16 KiB of SQL, up to 3 bytes a unit, and fields). */
const ARENA_BYTES = 256 * 1024;

/**
 * Memory bound of the trail: bytes handed to the destination and not yet taken by it, plus lines held here while
 * the destination fails. Reaching it is a failure ('stalled'); beyond it events are dropped and counted.
 */
export const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/**
 * The trail is declared stalled when the destination would hold more than this; the rest of the bound is kept for
 * what comes after (the batch that tripped it, statement_end of statements already running, refusals), so with
 * onFailure 'refuse' a statement that was allowed is never the one dropped.
 */
const STALL_BYTES = MAX_BUFFERED_BYTES - 2 * 1024 * 1024;
/** A stalled destination counts as recovered once it holds no more than this. */
const RESUME_BYTES = MAX_BUFFERED_BYTES / 2;

/** Keys pino blanks wherever they appear at the top level or one level down. */
export const AUDIT_REDACT_PATHS = ['password', 'token', 'secret', 'authorization', '*.password', '*.token', '*.secret', '*.authorization'];

// Three base64url segments whose header starts with '{"' (eyJ): a JWS compact token.
const JWT_LIKE = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g;

export type AuditSqlMode = 'full' | 'normalized' | 'none';
export type AuditFailurePolicy = 'refuse' | 'continue';
/** 'failed': the destination reported an error; 'stalled': it stopped taking bytes and the memory bound was reached. */
export type AuditState = 'ok' | 'failed' | 'stalled';

export interface AuditOptions {
  /** 'stdout', 'stderr', a file path (appended to, directories created), or any writable stream. */
  destination: 'stdout' | 'stderr' | string | NodeJS.WritableStream;
  /** SQL text in statement events: as sent, literals replaced by `?`, or left out. */
  sql: AuditSqlMode;
  onFailure: AuditFailurePolicy;
  /** Version of the policy in force, stamped on statement events (the lead passes `() => store.version`). */
  policyVersion?: () => number;
  /** Where failure and recovery of the audit sink are reported; a JSON line on stderr when absent. */
  log?: Pick<Logger, 'error' | 'warn' | 'info'>;
  /** Probe interval while unhealthy. Default 5 s. */
  probeMs?: number;
}

/** Identity fields shared by every session-scoped event. Absent values are omitted from the JSON. */
export interface AuditSessionFields {
  sessionId: string;
  clientAddress?: string;
  sub?: string;
  agent?: string;
  tenant?: string;
  role?: string;
  jti?: string;
  /** Token expiry, ISO 8601. */
  tokenExp?: string;
}

export type AuditEvent =
  | ({ event: 'session_start' } & AuditSessionFields)
  | ({ event: 'login_refused'; reason: string; sqlstate: string; code: string; message: string } & AuditSessionFields)
  | ({
      event: 'statement';
      /** Decision number within the session; the matching statement_end carries the same seq. */
      seq?: number;
      mode: 'simple' | 'parse' | 'bind';
      /** libpg-query node names, e.g. ['SelectStmt']; empty when the text did not parse. */
      kinds: string[];
      /** Per the `sql` setting; absent with 'none'. */
      sql?: string;
      sqlTruncated?: boolean;
      relations: string[];
      decision: 'allow' | 'deny' | 'shadow_deny';
      rule?: string;
      /** Why it was denied (or would have been, for shadow_deny). */
      reason?: string;
      policyVersion?: number;
      decisionMicros: number;
      /** Filled by the relay when available: rows returned, execution time and the final SQLSTATE. For a deny, sqlstate is the refusal's. */
      rows?: number;
      durationMs?: number;
      sqlstate?: string;
    } & AuditSessionFields)
  /**
   * Written when an allowed statement has finished: rows sent to the client, time from send to completion,
   * and its SQLSTATE if it failed. The decision is written first, before the statement runs, so nothing ever
   * runs unaudited; this event completes it (matched by sessionId + seq).
   */
  /** A statement the policy allowed, refused because a role budget of its subject or agent was used up (53400). */
  | ({ event: 'budget_exceeded'; seq: number; kind: string; per: string; limit: number; retryInMs?: number; sqlstate: string } & AuditSessionFields)
  | ({ event: 'statement_end'; seq: number; rows: number; durationMs: number; sqlstate?: string; truncated?: boolean; rowCapError?: boolean } & AuditSessionFields)
  | ({ event: 'session_end'; reason: EndReason; durationMs?: number; statements: number; denied: number } & AuditSessionFields)
  | ({ event: 'policy_reload' } & PolicyReloadInfo)
  | ({ event: 'revocation' } & RevocationInfo)
  /**
   * Written first when the trail recovers from a failure: `dropped` events between failedAt and recoveredAt are
   * missing (those that fit in memory follow this line).
   */
  | { event: 'audit_gap'; failedAt: string; recoveredAt?: string; error: string; dropped: number };

export interface PolicyReloadInfo {
  version: number;
  previousVersion?: number;
  /** 'file' | 'signal' | 'api' | 'catalog'. */
  reason: string;
  digest?: string;
  addedRoles?: string[];
  removedRoles?: string[];
  changedRoles?: string[];
  /** Sessions ended because their role disappeared. */
  sessionsEnded?: number;
  [extra: string]: unknown;
}

export interface RevocationInfo {
  /** 'file' | 'table'. */
  source: string;
  /** Entries in force after the change. */
  entries: number;
  added?: RevocationEntrySummary[];
  removed?: RevocationEntrySummary[];
  /** Live sessions ended because of this change. */
  sessionsEnded?: number;
  [extra: string]: unknown;
}

export interface RevocationEntrySummary {
  jti?: string;
  sub?: string;
  agent?: string;
  reason?: string;
  expiresAt?: string;
}

export interface Audit {
  /** Observers to combine into the proxy's SessionEvents. */
  readonly events: SessionEvents;
  /** False after the destination reported an error or stalled, until it works (or has drained) again. */
  readonly healthy: boolean;
  readonly state: AuditState;
  readonly onFailure: AuditFailurePolicy;
  /** Events dropped because memory was full while the destination failed or stalled (since start). */
  readonly dropped: number;
  /** Bytes waiting: handed to the destination and not yet taken, plus held here. */
  readonly bufferedBytes: number;
  /** Re-opens a file destination (log rotation: SIGUSR2 after the file was moved). No-op for stdout/stderr/streams. */
  reopen(): void;
  policyReloaded(info: PolicyReloadInfo): void;
  revocationChanged(info: RevocationInfo): void;
  /** Writes one event (for the relay's later fields or events defined elsewhere); fields are scrubbed like the rest. */
  write(event: AuditEvent): void;
  /** Hands statement events still batched in memory (at most BATCH_MS old) to the destination now. */
  flush(): void;
  /** Flushes and closes the destination (stdout/stderr are flushed, not closed). */
  close(): Promise<void>;
}

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
    decide(sql, mode, view, paramTypes): Decision | Promise<Decision> {
      if (auditGate(audit)) return gate.decide(sql, mode, view, paramTypes);
      return {
        allow: false,
        ruleId: undefined,
        sqlstate: '42501',
        message: 'statement refused by pgwarden: the audit trail cannot be written right now',
        detail: 'pgwarden is configured to refuse statements it cannot record (audit.onFailure: refuse)',
        hint: 'retry shortly; the operator has been alerted',
        reason: 'audit_unavailable',
        statements: [],
      };
    },
  };
}

type Destination = NodeJS.WritableStream & {
  reopen?: (file?: string) => void;
  flush?: (cb?: (err?: Error) => void) => void;
  flushSync?: () => void;
  end: () => unknown;
};

export async function createAudit(opts: AuditOptions): Promise<Audit> {
  // scanSync needs the wasm module; loading is idempotent and shared with the policy parser.
  if (opts.sql === 'normalized') await loadModule();
  const sqlMode = opts.sql;
  const probeMs = opts.probeMs ?? 5_000;
  const report = opts.log ?? stderrReporter();

  const opened = openDestination(opts.destination);
  const { filePath, isStd } = opened;
  let stream = opened.stream;
  let healthy = true;
  let failure: Exclude<AuditState, 'ok'> | undefined;
  let dropped = 0;
  let probe: NodeJS.Timeout | undefined;
  let closed = false;
  let closing = false;
  // Lines produced while unhealthy are held here, not pushed into the failing destination: a SonicBoom whose
  // first open failed has no fd, and a write into it would wedge it for good.
  // The audit_gap marker is held as a function: its line is built when it is written, with the final count.
  let held: (Buffer | (() => Buffer))[] = [];
  let heldBytes = 0;

  /** Bytes the destination has accepted and not yet written (SonicBoom's buffer, or a Node stream's). */
  const pendingBytes = (): number => {
    const s = stream as { _len?: unknown; writableLength?: unknown };
    if (typeof s._len === 'number') return s._len;
    if (typeof s.writableLength === 'number') return s.writableLength;
    return 0;
  };
  const hold = (line: Buffer) => {
    if (heldBytes + pendingBytes() + line.length > MAX_BUFFERED_BYTES) {
      dropped += countLines(line);
      return;
    }
    held.push(line);
    heldBytes += line.length;
  };
  const release = () => {
    const lines = held;
    held = [];
    heldBytes = 0;
    for (const entry of lines) {
      const line = typeof entry === 'function' ? entry() : entry;
      try {
        stream.write(line);
      } catch {
        dropped += countLines(line);
      }
    }
  };
  // Lines are gathered and handed to the destination in batches (at most BATCH_MS later, or at BATCH_BYTES):
  // each write to a file is a trip through libuv's thread pool, and one trip per event woke a thread per
  // statement, which on a busy machine costs more CPU than building the events. Each line is encoded to UTF-8
  // once, into the batch buffer; the destination takes bytes (SonicBoom in buffer mode), so nothing counts,
  // joins or converts the text again.
  const arena = Buffer.allocUnsafeSlow(ARENA_BYTES);
  let used = 0;
  let batchTimer: NodeJS.Timeout | undefined;
  const writeNow = (chunk: Buffer): void => {
    if (!healthy || closed) {
      hold(chunk);
      return;
    }
    const pending = pendingBytes();
    if (pending > 0 && pending + chunk.length > STALL_BYTES) {
      // The destination is not taking what it was given: a failure, not a reason to grow without bound.
      markUnhealthy(new Error(`audit destination is not draining (${pending} bytes waiting)`), 'stalled');
      hold(chunk);
      return;
    }
    try {
      stream.write(chunk);
    } catch (err) {
      markUnhealthy(err instanceof Error ? err : new Error(String(err)));
      hold(chunk);
    }
  };
  const flushPending = (): void => {
    if (batchTimer !== undefined) {
      clearTimeout(batchTimer);
      batchTimer = undefined;
    }
    if (used === 0) return;
    // A copy: the destination may hold the bytes until its write completes, and the batch buffer is reused.
    const chunk = Buffer.from(arena.subarray(0, used));
    used = 0;
    writeNow(chunk);
  };
  const append = (line: string): void => {
    // A UTF-16 unit never takes more than 3 bytes in UTF-8.
    if (used + line.length * 3 > arena.length) {
      flushPending();
      if (line.length * 3 > arena.length) {
        writeNow(Buffer.from(line, 'utf8'));
        return;
      }
    }
    used += arena.write(line, used, 'utf8');
  };
  /** Statement events: batched. */
  const batch = (line: string): void => {
    if (!healthy || closed) {
      flushPending();
      hold(Buffer.from(line, 'utf8'));
      return;
    }
    append(line);
    if (used >= BATCH_BYTES) flushPending();
    else if (used > 0 && batchTimer === undefined) batchTimer = setTimeout(flushPending, BATCH_MS);
  };
  /** pino's lines (logins, session ends, reloads, revocations, gaps): rare, so written at once, after any batch. */
  const sink = {
    write(line: string): boolean {
      // Behind the batch so far, and handed over with it (or held with it while the destination fails).
      append(line);
      flushPending();
      return true;
    },
  };

  const markUnhealthy = (err: Error, kind: Exclude<AuditState, 'ok'> = 'failed') => {
    if (!healthy || closing) return;
    healthy = false;
    failure = kind;
    const code = kind === 'stalled' ? 'stalled' : (err as NodeJS.ErrnoException).code;
    const fields = { err: { message: err.message, code }, onFailure: opts.onFailure, dropped };
    if (opts.onFailure === 'refuse') report.error(fields, 'audit destination failed: refusing new logins and statements until it recovers');
    else report.error(fields, 'audit destination failed: continuing without a complete audit trail (onFailure: continue)');
    // First in the held queue: its successful write is what proves recovery, and it marks where the gap began.
    // Held whatever the bound (it is one short line); its count is taken when it is written.
    const failedAt = new Date().toISOString();
    const droppedBefore = dropped;
    const marker = () =>
      Buffer.from(
        `{"source":"pgwarden-audit","time":"${isoNow()}${lineBase('audit_gap')},"failedAt":"${failedAt}"${healthy ? `,"recoveredAt":"${new Date().toISOString()}"` : ''},"error":${JSON.stringify(scrubText(code ?? err.message))},"dropped":${dropped - droppedBefore}}\n`,
        'utf8',
      );
    held.push(marker);
    heldBytes += 256;
    if (probe === undefined) {
      probe = setInterval(() => {
        // A stall ends when the destination has drained (its 'drain'/'write' events usually say so first).
        if (failure === 'stalled') {
          markHealthy();
          return;
        }
        try {
          // A file is re-opened (re-creating a deleted file or directory, picking up fixed permissions; the path is
          // passed because SonicBoom only remembers it after a successful open) and the held lines follow on 'ready'.
          // Other destinations get the held lines written again; success shows as a 'write' event.
          if (filePath !== undefined) reopenFile(filePath);
          else release();
        } catch {
          // Still broken; the next tick tries again.
        }
      }, probeMs);
      probe.unref();
    }
  };
  const markHealthy = () => {
    if (healthy || closed) return;
    if (failure === 'stalled' && pendingBytes() > RESUME_BYTES) return;
    healthy = true;
    failure = undefined;
    if (probe) clearInterval(probe);
    probe = undefined;
    release();
    report.info({ dropped }, 'audit destination recovered');
  };
  const attach = (st: Destination) => {
    st.on('error', (err: Error) => markUnhealthy(err));
    // SonicBoom emits 'write' once bytes reached the destination: proof it works (again).
    st.on('write', () => markHealthy());
    // A re-opened file: send what was held; its 'write' then flips healthy.
    st.on('ready', () => {
      if (!healthy) release();
    });
    // A stalled destination that has drained.
    st.on('drain', () => {
      if (failure === 'stalled') markHealthy();
    });
    // SonicBoom's own bound (none is set: the bound is kept above); counted and a stall if it ever fires.
    st.on('drop', (data: Buffer | string) => {
      dropped += typeof data === 'string' ? countLines(Buffer.from(data)) : countLines(data);
      markUnhealthy(new Error('audit destination buffer full'), 'stalled');
    });
    // A plain stream can be closed underneath us (pipe reader gone) without an error.
    if (!isStd) {
      st.on('close', () => {
        if (!closing && st === stream) markUnhealthy(new Error('audit destination closed'));
      });
    }
  };
  attach(stream);

  /**
   * Rotation and recovery for a file. SonicBoom's reopen() needs a first successful open (it learns the path, and
   * closes the old fd, only then), so a destination that never opened is replaced by a fresh one instead.
   */
  const reopenFile = (file: string) => {
    const boom = stream as Destination & { fd?: number; _opening?: boolean };
    if (boom.fd !== -1) {
      boom.reopen?.(file);
      return;
    }
    if (boom._opening) return;
    // 'close' unregisters pino's exit hook, which would otherwise throw "not ready" at process exit; then it is dropped.
    boom.emit('close');
    boom.removeAllListeners();
    boom.on('error', () => {});
    stream = openDestination(file).stream;
    attach(stream);
  };

  const loggerOptions = (paths: string[]) => ({
      base: { hostname: os.hostname(), pid: process.pid, auditVersion: AUDIT_SCHEMA_VERSION },
      timestamp: pino.stdTimeFunctions.isoTime,
      // No level: every audit line matters equally. A constant source tag takes its place (an empty object here
      // would make pino write invalid JSON), so audit lines are recognizable when they share stdout with other logs.
      formatters: { level: () => ({ source: 'pgwarden-audit' }) },
      redact: { paths: paths, censor: '[redacted]' },
      // Line and paragraph separators and C1 controls escaped, as in statement events (escapeSeparators).
      hooks: { streamWrite: escapeSeparators },
  });
  // Statement events (below) are written to the same sink by hand, so all lines keep their order.
  const logger = pino(loggerOptions(AUDIT_REDACT_PATHS), sink);

  function emit(event: AuditEvent): void {
    if (closed) return;
    try {
      // Copy-and-scrub only when some string could hold a JWT: the common event has none.
      logger.info((mayHoldJwt(event) ? scrub(event) : event) as object);
    } catch (err) {
      markUnhealthy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  // Per-session counters for session_end, and the session's identity fields as a ready JSON fragment for the hot
  // statement events; WeakMap so a leaked Session never pins memory here.
  const perSession = new WeakMap<Session, { start: number; statements: number; denied: number; fields: string }>();
  const host = JSON.stringify(os.hostname());
  const lineBase = (event: string) => `","hostname":${host},"pid":${process.pid},"auditVersion":${AUDIT_SCHEMA_VERSION},"event":"${event}"`;
  const statementBase = lineBase('statement');
  const statementEndBase = lineBase('statement_end');
  const fieldsOf = (s: Session) => perSession.get(s)?.fields ?? sessionFragment(sessionFields(s));

  const events: SessionEvents = {
    loginSucceeded(s) {
      const fields = sessionFields(s);
      perSession.set(s, { start: Date.now(), statements: 0, denied: 0, fields: sessionFragment(fields) });
      emit({ event: 'session_start', ...fields });
    },
    loginFailed(s, reason, err: ProxyError) {
      emit({ event: 'login_refused', ...sessionFields(s), reason, sqlstate: err.sqlstate, code: err.code, message: err.message });
    },
    statementDecided(s, info) {
      const counters = perSession.get(s);
      if (counters) {
        counters.statements++;
        if (!info.decision.allow) counters.denied++;
      }
      if (closed) return;
      // Built by hand from fixed fields (what pino would write, without its generic path: about a tenth of the cost).
      let line = `{"source":"pgwarden-audit","time":"${isoNow()}${statementBase}${fieldsOf(s)}`;
      if (info.seq !== undefined) line += `,"seq":${info.seq}`;
      line += `,"mode":"${info.mode}"${decisionFragment(info.decision)},"decisionMicros":${fixed3(info.micros)}`;
      if (sqlMode !== 'none') {
        const audited = auditSqlText(info.sql, sqlMode);
        let text = audited.text;
        const truncated = audited.truncated;
        text = scrubText(text);
        line += `,"sql":${jsonString(text)}`;
        if (truncated) line += ',"sqlTruncated":true';
      }
      const version = opts.policyVersion?.();
      if (version !== undefined) line += `,"policyVersion":${version}`;
      batch(line + '}\n');
    },
    statementFinished(s, o) {
      if (closed) return;
      let line = `{"source":"pgwarden-audit","time":"${isoNow()}${statementEndBase}${fieldsOf(s)},"seq":${o.seq},"rows":${o.rows},"durationMs":${fixed3(o.durationMs)}`;
      if (o.sqlstate !== undefined) line += `,"sqlstate":${JSON.stringify(o.sqlstate)}`;
      if (o.truncated) line += ',"truncated":true';
      if (o.rowCapError) line += ',"rowCapError":true';
      batch(line + '}\n');
    },
    budgetExceeded(s, info) {
      emit({ event: 'budget_exceeded', ...sessionFields(s), seq: info.seq, kind: info.kind, per: info.per, limit: info.limit, retryInMs: info.retryInMs, sqlstate: '53400' });
    },
    sessionEnded(s, reason) {
      const counters = perSession.get(s);
      // Sessions that never logged in (cancel requests, probes, refused logins) have login_refused or nothing.
      if (!counters) return;
      perSession.delete(s);
      emit({
        event: 'session_end',
        ...sessionFields(s),
        reason,
        durationMs: Date.now() - counters.start,
        statements: counters.statements,
        denied: counters.denied,
      });
    },
  };

  return {
    events,
    get healthy() {
      return healthy;
    },
    get state() {
      return failure ?? 'ok';
    },
    onFailure: opts.onFailure,
    get dropped() {
      return dropped;
    },
    get bufferedBytes() {
      return pendingBytes() + heldBytes;
    },
    reopen() {
      if (filePath === undefined || closed) return;
      try {
        reopenFile(filePath);
      } catch (err) {
        markUnhealthy(err instanceof Error ? err : new Error(String(err)));
      }
    },
    policyReloaded(info) {
      emit({ ...info, event: 'policy_reload' });
    },
    revocationChanged(info) {
      // 'source' is every audit line's own field (pgwarden-audit); the revocation's origin goes in revocationSource.
      const { source, ...rest } = info;
      emit({ ...rest, revocationSource: source, event: 'revocation' } as unknown as AuditEvent);
    },
    write(event) {
      emit(event);
    },
    flush() {
      flushPending();
    },
    async close() {
      if (closed || closing) return;
      flushPending();
      // A stalled destination still works, slowly: what is held goes to it too, so that a reader that resumes after
      // shutdown began still gets every event (an erroring destination would only lose them again).
      if (failure === 'stalled') release();
      closing = true;
      if (probe) clearInterval(probe);
      probe = undefined;
      await new Promise<void>((resolve) => {
        const done = () => resolve();
        try {
          if (isStd) {
            // Never close fd 1/2: the operational log may share them.
            if (stream.flush) stream.flush(() => done());
            else done();
          } else if ((stream as { destroyed?: boolean }).destroyed) {
            done();
          } else if (filePath !== undefined && (stream as { fd?: number }).fd === -1) {
            // Never opened: SonicBoom's end() would wait for an open that never comes, and pino's exit hook would
            // throw "not ready" at process exit. 'close' is what unregisters that hook; nothing is left to flush.
            stream.emit('close');
            done();
          } else {
            // SonicBoom's end() takes no callback; it (and a Node stream) emits 'finish' then 'close'.
            stream.once('close', done);
            stream.once('finish', done);
            stream.end();
          }
        } catch {
          done();
        }
        // A broken destination may never call back; do not hang shutdown on it.
        setTimeout(done, 2_000).unref();
      });
      closed = true;
    },
  };
}

function openDestination(dest: AuditOptions['destination']): { stream: Destination; filePath: string | undefined; isStd: boolean } {
  if (typeof dest !== 'string') return { stream: dest as Destination, filePath: undefined, isStd: false };
  // Buffer mode: the audit trail hands SonicBoom bytes it has already encoded (see the batch in createAudit).
  // No maxLength: SonicBoom would drop silently past it; createAudit keeps the bound and treats reaching it as a failure.
  const common = { sync: false, contentMode: 'buffer' as const };
  if (dest === 'stdout') return { stream: pino.destination({ ...common, dest: 1 }) as unknown as Destination, filePath: undefined, isStd: true };
  if (dest === 'stderr') return { stream: pino.destination({ ...common, dest: 2 }) as unknown as Destination, filePath: undefined, isStd: true };
  return { stream: pino.destination({ ...common, dest, mkdir: true }) as unknown as Destination, filePath: dest, isStd: false };
}

function stderrReporter(): Pick<Logger, 'error' | 'warn' | 'info'> {
  const line = (level: string) => (fields: object, msg?: string) => {
    process.stderr.write(JSON.stringify({ level, time: new Date().toISOString(), service: 'pgwarden', component: 'audit', ...fields, msg }) + '\n');
  };
  return { error: line('error'), warn: line('warn'), info: line('info') } as unknown as Pick<Logger, 'error' | 'warn' | 'info'>;
}

// ---------------------------------------------------------------------------------------------
// Event construction: explicit fields only, so whatever else a Session or Identity carries stays out.

export function sessionFields(s: Pick<Session, 'id' | 'remoteAddress' | 'identity' | 'role'>): AuditSessionFields {
  const id: Identity | undefined = s.identity;
  const out: AuditSessionFields = { sessionId: s.id };
  if (s.remoteAddress !== undefined) out.clientAddress = s.remoteAddress;
  if (id) {
    out.sub = id.sub;
    if (id.agent !== undefined) out.agent = id.agent;
    if (id.tenant !== undefined) out.tenant = id.tenant;
    out.role = id.role;
    if (id.jti !== undefined) out.jti = id.jti;
    if (Number.isFinite(id.exp)) out.tokenExp = new Date(id.exp * 1000).toISOString();
  } else if (s.role) {
    out.role = s.role.name;
  }
  return out;
}

/** The session fields as a JSON fragment (`,"sessionId":…`), JWT-looking values scrubbed like every other field. */
function sessionFragment(fields: AuditSessionFields): string {
  const json = escapeSeparators(JSON.stringify(mayHoldJwt(fields) ? scrub(fields) : fields));
  return json.length > 2 ? `,${json.slice(1, -1)}` : '';
}

let lastMs = 0;
let lastIso = '';
/** ISO 8601 time of now, formatted once per millisecond. */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/**
 * `x` rounded to 3 decimals, as JSON: the same number `Math.round(x * 1000) / 1000` is, written with integer
 * arithmetic (V8 prints a fractional double by a slow general algorithm, and there are two per statement).
 */
export function fixed3(x: number): string {
  const n = Math.round(x * 1000);
  if (!(n >= 0 && n <= 0x3fffffff)) return Number.isFinite(n) ? String(n / 1000) : 'null';
  const whole = Math.floor(n / 1000);
  const frac = n - whole * 1000;
  if (frac === 0) return String(whole);
  // Trailing zeros dropped, as JSON.stringify would: 0.5, not 0.500.
  if (frac % 100 === 0) return `${whole}.${frac / 100}`;
  if (frac % 10 === 0) return `${whole}.${frac < 100 ? '0' : ''}${frac / 10}`;
  return `${whole}.${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}`;
}

/**
 * The decision's part of a statement event (kinds, relations, outcome, rule, reason), cached per decision: the
 * decision cache hands out the same decision object (or a copy with its own rewrite and the same statement list)
 * for every repeat, so this is built once per distinct statement shape.
 */
const decisionFragments = new WeakMap<object, { d: Decision; json: string }>();
function decisionFragment(d: Decision): string {
  const cached = decisionFragments.get(d.statements);
  if (cached !== undefined && sameOutcome(cached.d, d)) return cached.json;
  const relations = [...new Set(d.statements.flatMap((st) => st.relations))];
  let json = `,"kinds":${JSON.stringify(d.statements.map((st) => st.kind))},"relations":${JSON.stringify(relations)}`;
  json += `,"decision":"${d.allow ? (d.shadowDenied ? 'shadow_deny' : 'allow') : 'deny'}"`;
  if (d.ruleId !== undefined) json += `,"rule":${JSON.stringify(d.ruleId)}`;
  if (!d.allow) json += `,"reason":${JSON.stringify(d.reason)},"sqlstate":${JSON.stringify(d.sqlstate)}`;
  else if (d.shadowDenied) json += `,"reason":${JSON.stringify(d.shadowDenied.reason)}`;
  json = scrubText(json);
  decisionFragments.set(d.statements, { d, json });
  return json;
}

function sameOutcome(a: Decision, b: Decision): boolean {
  if (a === b) return true;
  if (a.allow !== b.allow || a.ruleId !== b.ruleId) return false;
  if (!a.allow && !b.allow) return a.reason === b.reason && a.sqlstate === b.sqlstate;
  if (a.allow && b.allow) return a.shadowDenied?.reason === b.shadowDenied?.reason;
  return false;
}

// Token types of PostgreSQL's scanner (gram.h) that are literal values; names first, numbers as a fallback
// because libpg-query reports some (BCONST, XCONST, USCONST) as UNKNOWN by name.
const LITERAL_TOKEN_NAMES = new Set(['SCONST', 'USCONST', 'BCONST', 'XCONST', 'ICONST', 'FCONST']);
const LITERAL_TOKEN_TYPES = new Set([260, 261, 262, 263, 264, 266]);
const COMMENT_TOKEN_NAMES = new Set(['SQL_COMMENT', 'C_COMMENT']);
// Any quoted-string form, whatever the scanner calls it: '…', E'…', B'…', X'…', N'…', U&'…', $tag$…$tag$.
const QUOTED_LITERAL = /^(?:[eEbBxXnN]|[uU]&)?'|^\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$/;

/**
 * The SQL text a statement event records, cut *before* any pass over it: at most MAX_NORMALIZED_SQL_INPUT characters
 * are normalised ('normalized') and at most MAX_AUDIT_SQL written. A cut text is normalised as a prefix of the
 * statement: the scanner reads a prefix exactly as it reads the whole text up to the cut, so every complete token is
 * classified as in the whole; only the last one can be cut short, and a cut literal, quoted identifier or comment does
 * not scan. Then the cut moves back to before the last quote, dollar sign or comment start and tries again, a few
 * times, and writes a placeholder rather than anything the normaliser has not accepted.
 */
export function auditSqlText(sql: string, mode: 'full' | 'normalized'): { text: string; truncated: boolean } {
  if (mode === 'full') return sql.length > MAX_AUDIT_SQL ? { text: sql.slice(0, MAX_AUDIT_SQL), truncated: true } : { text: sql, truncated: false };
  if (sql.length <= MAX_NORMALIZED_SQL_INPUT) {
    const text = normalizeSql(sql);
    return text.length > MAX_AUDIT_SQL ? { text: text.slice(0, MAX_AUDIT_SQL), truncated: true } : { text, truncated: false };
  }
  let prefix = sql.slice(0, MAX_NORMALIZED_SQL_INPUT);
  // A cut between the two halves of a surrogate pair would leave a lone half.
  if (/[\ud800-\udbff]$/.test(prefix)) prefix = prefix.slice(0, -1);
  for (let attempt = 0; attempt < 4 && prefix.length > 0; attempt++) {
    const text = tryNormalize(prefix);
    if (text !== undefined) return { text: text.slice(0, MAX_AUDIT_SQL), truncated: true };
    const back = Math.max(prefix.lastIndexOf("'"), prefix.lastIndexOf('"'), prefix.lastIndexOf('$'), prefix.lastIndexOf('/*'), prefix.lastIndexOf('--'));
    if (back < 0) break;
    prefix = prefix.slice(0, back);
  }
  return { text: `[statement of ${Buffer.byteLength(sql)} bytes; its first ${MAX_NORMALIZED_SQL_INPUT} characters could not be normalised]`, truncated: true };
}

/**
 * SQL with every literal replaced by `?` and comments dropped, rebuilt from scanner tokens only (whitespace between
 * tokens becomes one space), so nothing the scanner did not classify can leak. Text the scanner rejects (an
 * unterminated quote) is not written at all.
 */
export function normalizeSql(sql: string): string {
  return tryNormalize(sql) ?? `[unscannable statement, ${Buffer.byteLength(sql)} bytes]`;
}

/** normalizeSql(), or undefined when the scanner cannot read the text. */
function tryNormalize(sql: string): string | undefined {
  // Fastest path: the statement has only the plain lexical forms policy/literals.ts handles exactly (the common
  // case: the decision cache has just scanned it); its constants become $n as the server's normalizer does, and
  // a statement without constants (only $n parameters) is written as it is.
  const shape = scanLiterals(sql);
  if (shape !== undefined) return tidy(shape.spans.length === 0 ? sql : replaceLiterals(sql, shape));
  // Fast path: the server's own normalizer (pg_stat_statements style, constants become $n), in C.
  let quick: string | undefined;
  try {
    quick = normalizeSync(sql);
  } catch {
    quick = undefined;
  }
  if (quick !== undefined && isCleanNormalization(quick)) return tidy(quick);
  return normalizeByTokens(sql);
}

/** Whitespace runs become one space, no space at either end, no final semicolon (regular expressions only when needed). */
function tidy(text: string): string {
  let t = text;
  if (needsCollapse(t)) t = t.replace(/\s+/g, ' ');
  if (t.charCodeAt(0) === 32 || t.charCodeAt(t.length - 1) === 32) t = t.trim();
  return t.charCodeAt(t.length - 1) === 59 ? t.slice(0, -1) : t;
}

/**
 * Whether `t` holds two whitespace characters in a row or any whitespace but a space: what `/\s\s|[\t\n\r\f\v]/`
 * tests, by hand, because V8 ran that expression through its slow runtime path on every statement.
 */
export function needsCollapse(t: string): boolean {
  let previous = false;
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    let space = c === 32;
    if (!space) {
      if (c >= 9 && c <= 13) return true;
      // The rest of \s: no-break and typographic spaces, separators, the byte-order mark.
      space = c >= 0xa0 && (c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff);
    }
    if (space && previous) return true;
    previous = space;
  }
  return false;
}

/**
 * `JSON.stringify(text)` with U+2028, U+2029 and the C1 controls (U+0080–U+009F) escaped too, without the call when
 * nothing in the text needs an escape (the usual statement): no quote, backslash, control character or surrogate
 * (JSON.stringify escapes a lone one; a pair is left to it too). Valid JSON either way; the extra escapes keep a line
 * one line for readers that split on Unicode line separators (JavaScript before ES2019, some log shippers) and keep
 * C1 controls, which some terminals act on, out of the raw text.
 */
export function jsonString(text: string): string {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 32 || c === 34 || c === 92 || (c >= 0xd800 && c <= 0xdfff) || (c >= 0x80 && c <= 0x9f) || c === 0x2028 || c === 0x2029) return escapeSeparators(JSON.stringify(text));
  }
  return `"${text}"`;
}

const SEPARATORS = /[\u0080-\u009f\u2028\u2029]/g;

/** JSON text with U+2028, U+2029 and C1 controls written as \uXXXX (they can only occur inside strings). */
export function escapeSeparators(json: string): string {
  SEPARATORS.lastIndex = 0;
  if (!SEPARATORS.test(json)) return json;
  SEPARATORS.lastIndex = 0;
  return json.replace(SEPARATORS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The normalizer keeps comments (which may hold data) and returns some scanner errors as if they were
 * results ("unterminated quoted string at or near \"'…\""). Its output is used only when it cannot be
 * either: no comment markers, no quote of any kind left, no dollar quote, no error phrasing.
 */
function isCleanNormalization(text: string): boolean {
  return !text.includes('--') && !text.includes('/*') && !text.includes("'") && !/\$\$|\$[A-Za-z_][A-Za-z_0-9]*\$/.test(text) && !text.includes(' at or near ') && !text.includes('at end of input');
}

/** Rebuilds the statement from scanner tokens: literals become `?`, comments are dropped; undefined when it does not scan. */
function normalizeByTokens(sql: string): string | undefined {
  let tokens;
  try {
    tokens = scanSync(sql).tokens;
  } catch {
    return undefined;
  }
  let out = '';
  let prevEnd = 0;
  for (const t of tokens) {
    if (COMMENT_TOKEN_NAMES.has(t.tokenName)) {
      prevEnd = t.end;
      if (out.length > 0 && !out.endsWith(' ')) out += ' ';
      continue;
    }
    if (t.start > prevEnd && out.length > 0 && !out.endsWith(' ')) out += ' ';
    const literal = LITERAL_TOKEN_NAMES.has(t.tokenName) || LITERAL_TOKEN_TYPES.has(t.tokenType) || QUOTED_LITERAL.test(t.text);
    // Offsets are UTF-8 byte positions, so the token's own text is used, never a slice of the JS string.
    out += literal ? '?' : t.text;
    prevEnd = t.end;
  }
  return out.trimEnd();
}

/** Events in a chunk of JSON lines (each ends with a newline). */
function countLines(chunk: Buffer): number {
  let n = 0;
  for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) n++;
  return Math.max(n, 1);
}

/** The text with JWT-looking runs replaced; the regular expression runs only when 'eyJ' occurs. */
function scrubText(text: string): string {
  return text.includes('eyJ') ? text.replace(JWT_LIKE, '[redacted-jwt]') : text;
}

/** True when any string at any depth contains the start of a base64url JSON header ('eyJ'); allocates nothing. */
function mayHoldJwt(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('eyJ');
  if (Array.isArray(value)) return value.some(mayHoldJwt);
  if (typeof value === 'object' && value !== null) {
    for (const k in value) if (mayHoldJwt((value as Record<string, unknown>)[k])) return true;
  }
  return false;
}

/** Replaces JWT-looking strings in every string field, at any depth (defence in depth beside `redact`). */
function scrub(value: unknown): unknown {
  if (typeof value === 'string') return scrubText(value);
  if (Array.isArray(value)) return value.map(scrub);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = scrub(v);
    return out;
  }
  return value;
}
