// The audit trail's sink: one JSON event per login, statement decision, session end, policy reload and revocation change, on its own pino destination.
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
import { loadModule } from 'libpg-query';
import pino, { type Logger } from 'pino';
import type { ProxyError } from '../../lib/errors.ts';
import type { Session, SessionEvents } from '../session/session.ts';
import {
  AUDIT_SCHEMA_VERSION,
  decisionFragment,
  escapeSeparators,
  fixed3,
  isoNow,
  jsonString,
  sessionFields,
  sessionFragment,
  type AuditEvent,
  type PolicyReloadInfo,
  type RevocationInfo,
} from './events.ts';
import { AUDIT_REDACT_PATHS, mayHoldJwt, scrub, scrubText } from './redact.ts';
import { auditSqlText, type AuditSqlMode } from './sql-text.ts';
import { narrowingJson } from '../../policy/narrow.ts';

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
    if (opts.onFailure === 'refuse')
      report.error(fields, 'audit destination failed: refusing new logins and statements until it recovers');
    else
      report.error(fields, 'audit destination failed: continuing without a complete audit trail (onFailure: continue)');
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
  const lineBase = (event: string) =>
    `","hostname":${host},"pid":${process.pid},"auditVersion":${AUDIT_SCHEMA_VERSION},"event":"${event}"`;
  const statementBase = lineBase('statement');
  const statementEndBase = lineBase('statement_end');
  const fieldsOf = (s: Session) => perSession.get(s)?.fields ?? sessionFragment(sessionFields(s));

  const events: SessionEvents = {
    loginSucceeded(s) {
      const fields = sessionFields(s);
      perSession.set(s, { start: Date.now(), statements: 0, denied: 0, fields: sessionFragment(fields) });
      emit({
        event: 'session_start',
        ...fields,
        ...(s.identity?.singleUse === true ? { singleUse: 'consumed' as const } : {}),
        // What the session may do is its role narrowed by this (its digest is on every event of the session).
        ...(s.identity?.narrowing !== undefined ? { narrow: narrowingJson(s.identity.narrowing) } : {}),
        ...(s.identity?.act === undefined ? {} : { act: [...s.identity.act] }),
      });
    },
    loginFailed(s, reason, err: ProxyError) {
      emit({
        event: 'login_refused',
        ...sessionFields(s),
        reason,
        refusal: err.reason,
        sqlstate: err.sqlstate,
        code: err.code,
        message: err.message,
        ...(err.operatorHint === undefined ? {} : { operatorHint: err.operatorHint }),
      });
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
      emit({
        event: 'budget_exceeded',
        ...sessionFields(s),
        seq: info.seq,
        kind: info.kind,
        per: info.per,
        limit: info.limit,
        retryInMs: info.retryInMs,
        sqlstate: '53400',
      });
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

function openDestination(dest: AuditOptions['destination']): {
  stream: Destination;
  filePath: string | undefined;
  isStd: boolean;
} {
  if (typeof dest !== 'string') return { stream: dest as Destination, filePath: undefined, isStd: false };
  // Buffer mode: the audit trail hands SonicBoom bytes it has already encoded (see the batch in createAudit).
  // No maxLength: SonicBoom would drop silently past it; createAudit keeps the bound and treats reaching it as a failure.
  const common = { sync: false, contentMode: 'buffer' as const };
  if (dest === 'stdout')
    return {
      stream: pino.destination({ ...common, dest: 1 }) as unknown as Destination,
      filePath: undefined,
      isStd: true,
    };
  if (dest === 'stderr')
    return {
      stream: pino.destination({ ...common, dest: 2 }) as unknown as Destination,
      filePath: undefined,
      isStd: true,
    };
  return {
    stream: pino.destination({ ...common, dest, mkdir: true }) as unknown as Destination,
    filePath: dest,
    isStd: false,
  };
}

function stderrReporter(): Pick<Logger, 'error' | 'warn' | 'info'> {
  const line = (level: string) => (fields: object, msg?: string) => {
    process.stderr.write(
      JSON.stringify({
        level,
        time: new Date().toISOString(),
        service: 'pgwarden',
        component: 'audit',
        ...fields,
        msg,
      }) + '\n',
    );
  };
  return { error: line('error'), warn: line('warn'), info: line('info') } as unknown as Pick<
    Logger,
    'error' | 'warn' | 'info'
  >;
}

/** Events in a chunk of JSON lines (each ends with a newline). */
function countLines(chunk: Buffer): number {
  let n = 0;
  for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) n++;
  return Math.max(n, 1);
}
