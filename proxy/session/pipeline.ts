// Matches upstream responses to the client messages that caused them: swaps in refusals, counts rows and enforces row caps.
//
// How a refusal lands where Postgres would put it: in place of a refused message the session sends
// upstream a message Postgres is certain to reject (a Parse or Query of text that cannot parse).
// Postgres then produces the ErrorResponse at exactly the right point of the stream, discards the
// rest of the extended-protocol batch until Sync, and marks an explicit transaction failed, so a
// later COMMIT commits nothing. This tracker recognises that ErrorResponse (it belongs to the
// pending entry carrying a `denial`) and replaces it with pgwarden's own error. Nothing the client
// wrote in the refused message ever reaches Postgres.
//
// Row caps come from each statement's own decision (the policy in force when it was decided), passed
// with its entry; rows read from a cursor are also counted per cursor, across every FETCH and Execute,
// so a cursor whose own query is not capped in the database (WITH TIES, or a cap tightened after its
// DECLARE) still stops at the cap. Entries marked `internal` are messages pgwarden itself sent (closing
// a prepared statement or cursor the policy no longer allows): their responses are not forwarded.
import { BackendType, FrontendType } from '../wire/codes.ts';
import type { Frame } from '../wire/framer.ts';
import {
  decodeCommandComplete,
  decodeErrorFields,
  decodeReadyForQuery,
  encodeCommandComplete,
  encodeErrorResponse,
  encodeNoticeResponse,
  encodeProxyError,
} from '../wire/backend.ts';
import { clientMessage, detailWithReason, ProxyError } from '../../lib/errors.ts';
import { SqlState } from '../../lib/sqlstate.ts';

/** SQL that every Postgres version rejects at parse time, without touching any object. */
export const SENTINEL_SQL = 'pgwarden refused this statement';

export interface RowCap {
  maxRows: number;
  onRowCap: 'truncate' | 'error';
}

/** What happened to one executed statement (a simple Query, an Execute, a FunctionCall), for audit and metrics. */
export interface StatementTrace {
  /** Sequence number of the decision it belongs to within the session. */
  seq: number;
  startedAt: number;
  rows: number;
  sqlstate: string | undefined;
  truncated: boolean;
  rowCapError: boolean;
  /** Counted against a per-agent budget: its session holds a concurrency slot until it finishes. */
  budgeted?: boolean;
}

interface Pending {
  /** FrontendType of the message this entry answers for. */
  kind: number;
  /** Set when the message was refused: its upstream ErrorResponse is replaced by this error. */
  denial: ProxyError | undefined;
  /** Execute: the portal, so row caps count across Executes of one portal. */
  portal: string | undefined;
  /** Query, Execute and FunctionCall entries carry a trace that is reported when they finish. */
  trace: StatementTrace | undefined;
  /** The row cap of this statement's decision (Query, Execute). */
  cap: RowCap | undefined;
  /** Query: the cursor each statement reads (FETCH), by position; Execute: the cursor when the portal is one. */
  cursors: readonly (string | undefined)[] | undefined;
  /** Query: index of the statement whose results are streaming. */
  statement: number;
  /** Sent by pgwarden itself: successful responses are swallowed. */
  internal: boolean;
  /** Internal: its notices are dropped too (a ROLLBACK's "there is no transaction in progress" is not the client's). */
  quiet: boolean;
  /** Told once whether the message took effect upstream (its own completion) or not (it failed, or PostgreSQL skipped it). */
  settled: ((ok: boolean) => void) | undefined;
  /**
   * Execute of a COPY statement: 'pending' until its first answer tells whether PostgreSQL went into COPY IN ('in'),
   * which makes it ignore every Sync until the client's CopyDone or CopyFail, or not ('other').
   */
  copy?: 'pending' | 'in' | 'other';
  /** Told once `copy` is settled: true for COPY IN. */
  copyWaiters?: ((copyIn: boolean) => void)[];
  /**
   * Query: its text is one COPY statement, and the client has sent CopyDone or CopyFail since: no COPY of it can
   * read a later Sync any more, so PostgreSQL answers that Sync after the Query's ReadyForQuery like any other.
   */
  copyInputDone?: boolean;
  /** Query: its text is that one COPY statement alone (see copyInputDone). */
  copySingle?: boolean;
  /** Internal: its ReadyForQuery is the client's (it stands for one the client's Query would have had). */
  forwardReady?: boolean;
}

/** Per-entry options of `expect`. */
export interface ExpectOptions {
  cap?: RowCap | undefined;
  cursors?: readonly (string | undefined)[];
  internal?: boolean;
  /** Execute of a COPY statement (FROM STDIN or TO STDOUT): see Pending.copy. */
  copy?: boolean;
  /** Query with copy: its text is that one statement alone (Pending.copySingle). */
  copySingle?: boolean;
  /** With internal: the message's notices are not forwarded either. */
  quiet?: boolean;
  /** Internal: see Pending.forwardReady. */
  forwardReady?: boolean;
  /**
   * Parse, Bind, Close: told whether PostgreSQL carried the message out. One it failed or skipped (after an error
   * until Sync) left the name as it was upstream, whatever the session recorded when it sent it.
   */
  settled?: (ok: boolean) => void;
}

/** Per result set being streamed: how many rows went to the client and whether the cap cut it. */
interface RowState {
  sent: number;
  truncated: boolean;
  errored: boolean;
}

export type TxStatus = 'I' | 'T' | 'E';

/**
 * CommandComplete tags (NUL-terminated, as in the message) that open or may end a transaction block. PREPARE
 * TRANSACTION's tag is PREPARE, the same as SQL PREPARE's: either is taken as possibly ending the block. COMMIT PREPARED
 * and ROLLBACK PREPARED answer COMMIT and ROLLBACK (and run only outside a block); ROLLBACK TO SAVEPOINT answers
 * ROLLBACK too, so it counts as possibly ending the block.
 */
const TX_TAGS: readonly (readonly [Buffer, 'begin' | 'end'])[] = (
  [
    ['BEGIN', 'begin'],
    ['START TRANSACTION', 'begin'],
    ['COMMIT', 'end'],
    ['ROLLBACK', 'end'],
    ['PREPARE', 'end'],
  ] as const
).map(([t, e]) => [Buffer.from(`${t}\0`, 'latin1'), e] as const);

export class ResponseTracker {
  private queue: Pending[] = [];
  private head = 0;
  private rows: RowState = { sent: 0, truncated: false, errored: false };
  /** Rows already sent per suspended portal, so `Execute(portal, maxRows)` repeated cannot evade the cap. */
  private readonly portalRows = new Map<string, { sent: number; truncated: boolean }>();
  /** Rows sent from each cursor since it was declared, so repeated FETCHes cannot read past the cap. */
  private readonly cursorRows = new Map<string, number>();
  /** Set after an error inside a simple Query so later results of the same Query are not forwarded (capped error mode). */
  private swallowUntilReady = false;

  /**
   * Set when pgwarden reported a row cap error (onRowCap: error) for an Execute of the open batch: PostgreSQL never
   * saw that error and goes on running the batch, so the session makes it fail before the client's Sync (see
   * errorCapPending), or the rest of the batch would commit while the client was told it failed.
   */
  capErrorInBatch = false;

  /**
   * Set when pgwarden reported a row cap error for a simple Query: PostgreSQL ran the rest of it. Inside a transaction
   * block (its ReadyForQuery says T) the session makes the transaction fail before the client gets that
   * ReadyForQuery, as PostgreSQL's own error would have; outside one PostgreSQL has committed already (docs/policy.md).
   */
  capErrorInQuery = false;

  /** Whether an Execute under an error-mode row cap is still unanswered: only its answer tells whether it failed. */
  get errorCapPending(): boolean {
    for (let i = this.head; i < this.queue.length; i++) {
      const p = this.queue[i] as Pending;
      if (p.kind === FrontendType.Execute && p.cap?.onRowCap === 'error') return true;
    }
    return false;
  }
  txStatus: TxStatus = 'I';

  /** Rows (DataRow and CopyData) forwarded to the client since the tracker was made; per-agent budgets read the growth. */
  rowsRelayed = 0;

  /** Called once for every traced entry when its responses are complete. */
  onFinish: ((trace: StatementTrace) => void) | undefined;

  /** `rowCap` is the default for entries whose `expect` names none (unit tests); sessions pass each decision's cap. */
  constructor(public rowCap: RowCap | undefined) {}

  /**
   * True from a ReadyForQuery that ended every outstanding message outside a transaction until the next message is
   * sent: then no transaction, implicit or explicit, is open upstream (a Bind followed by Flush alone opens one
   * that only ReadyForQuery reports ended).
   */
  idleSinceReady = false;

  /**
   * After an error in an extended-protocol batch with no Sync sent yet, PostgreSQL discards every message until the
   * next Sync and answers none of them: while this is set, messages sent are not queued (a client could otherwise
   * grow the queue without bound, and a queue waiting for answers that never come would stall the session's depth
   * bound until the Sync it holds back). The code is the batch error's, for the traces of discarded statements.
   */
  private skippingToSync = false;
  private skipCode: string | undefined;

  /** True while PostgreSQL is discarding the open batch's messages after an error in it (until the client's Sync). */
  get skipping(): boolean {
    return this.skippingToSync;
  }

  /**
   * Whether the statements answered so far leave the connection inside an explicit transaction block ('T' at the last
   * ReadyForQuery or a BEGIN since, and nothing since that may have ended it): read from the CommandComplete tags of
   * the open batch, since only Sync brings a ReadyForQuery. ROLLBACK TO SAVEPOINT and ROLLBACK share the tag
   * ROLLBACK, so either ends what this can tell ('other'), which errs on the side of "not known to be in a block".
   */
  private batchTx: 'I' | 'T' | 'other' = 'I';

  /** In an explicit transaction block by everything answered so far (see batchTx); the own analysis may sync there. */
  get inExplicitBlock(): boolean {
    return this.batchTx === 'T';
  }

  /** Set by CopyInResponse until its COPY ends: PostgreSQL waits for the client's CopyData, so nothing else is answered. */
  awaitingCopyData = false;

  private noteTag(frame: Frame): void {
    // Only the tags of transaction control matter, compared as bytes (a SELECT's tag is never decoded).
    const body = frame.body;
    for (const [tag, effect] of TX_TAGS) {
      if (body.length !== tag.length || !body.equals(tag)) continue;
      if (effect === 'begin') {
        if (this.batchTx !== 'other') this.batchTx = 'T';
      } else this.batchTx = 'other';
      return;
    }
  }

  /** Records a message sent upstream that will produce responses. */
  expect(kind: number, denial?: ProxyError, portal?: string, trace?: StatementTrace, opts?: ExpectOptions): void {
    this.idleSinceReady = false;
    // A Query or FunctionCall inside an open batch may be ignored by PostgreSQL (after an error, until Sync): only Sync
    // is sure to end it.
    if (kind === FrontendType.Sync) this.batchOpen = false;
    else if (kind !== FrontendType.Query && kind !== FrontendType.FunctionCall) this.batchOpen = true;
    if (this.skippingToSync) {
      if (kind === FrontendType.Sync) {
        // This Sync ends the skipping upstream; it and what follows are answered again.
        this.skippingToSync = false;
      } else {
        // Discarded upstream: never ran, reported with the batch's error.
        opts?.settled?.(false);
        if (trace !== undefined) {
          trace.sqlstate ??= this.skipCode;
          this.onFinish?.(trace);
        }
        return;
      }
    }
    const cap = opts !== undefined && 'cap' in opts ? opts.cap : this.rowCap;
    const entry: Pending = {
      kind,
      denial,
      portal,
      trace,
      cap,
      cursors: opts?.cursors,
      statement: 0,
      internal: opts?.internal ?? false,
      quiet: opts?.quiet ?? false,
      settled: opts?.settled,
    };
    if (opts?.forwardReady === true) entry.forwardReady = true;
    if (kind === FrontendType.Execute && opts?.copy === true) {
      entry.copy = 'pending';
      this.copyExecute = entry;
    } else if (kind === FrontendType.Query && opts?.copy === true) {
      entry.copy = 'pending';
      if (opts.copySingle === true) entry.copySingle = true;
    }
    this.queue.push(entry);
  }

  /**
   * The Execute of a COPY whose input has not ended (no CopyDone or CopyFail from the client since, and it is not
   * answered): while PostgreSQL is in COPY IN for it, it reads Flush and Sync and ignores them (libpq sends Execute
   * and Sync together, then waits for CopyInResponse), so such a Sync gets no ReadyForQuery.
   */
  private copyExecute: Pending | undefined;

  /**
   * What to do with a Sync of the client's now: 'drop' when PostgreSQL is in COPY IN for the client's COPY and would
   * ignore it (expecting an answer to it would leave every later answer one ReadyForQuery behind, and the session's
   * own analysis waiting forever for the connection to be idle); a promise when the COPY's first answer is still due
   * (true: COPY IN, drop it); otherwise 'forward'.
   */
  copySync(): 'forward' | 'drop' | Promise<boolean> {
    const c = this.copyExecute;
    if (c === undefined || c.copy === 'other') return 'forward';
    if (c.copy === 'in') return 'drop';
    return new Promise((resolve) => {
      c.copyWaiters ??= [];
      c.copyWaiters.push(resolve);
    });
  }

  /** A simple Query with a COPY statement is unanswered (see Session's handling of Sync). */
  get copyQueryRunning(): boolean {
    for (let i = this.head; i < this.queue.length; i++) {
      const p = this.queue[i] as Pending;
      if (p.kind === FrontendType.Query && p.copy !== undefined && !(p.copySingle === true && p.copyInputDone === true))
        return true;
    }
    return false;
  }

  /** The client's CopyDone or CopyFail was sent: PostgreSQL answers Sync again after it. */
  copyInputEnded(): void {
    this.copyExecute = undefined;
    for (let i = this.head; i < this.queue.length; i++) {
      const p = this.queue[i] as Pending;
      // The oldest Query still reading input: a pipelined later one has not started its COPY.
      if (p.kind === FrontendType.Query && p.copy !== undefined && p.copyInputDone !== true) {
        p.copyInputDone = true;
        break;
      }
    }
  }

  private settleCopy(entry: Pending, copyIn: boolean): void {
    if (entry.copy !== 'pending') return;
    entry.copy = copyIn ? 'in' : 'other';
    for (const w of entry.copyWaiters?.splice(0) ?? []) w(copyIn);
  }

  /** A cursor was declared (or closed): its row count starts again. */
  cursorReset(name: string | null): void {
    if (name === null) this.cursorRows.clear();
    else this.cursorRows.delete(name);
  }

  /**
   * True when no extended-protocol batch is open: the last message sent ends one (Sync, Query, FunctionCall), or none
   * was sent. Not "nothing pending": a batch whose messages are all answered (after a Flush, or just quickly) is still
   * open until its Sync, and a message of pgwarden's own put there (a Sync closing refused statements) would end the
   * client's implicit transaction, drop its portals and stop PostgreSQL skipping after an error, so the client would
   * get replies PostgreSQL never sends for its batch (and a driver counting them waits forever).
   */
  get atBatchBoundary(): boolean {
    return !this.batchOpen;
  }

  /** Set by every extended-protocol message sent (Parse, Bind, Describe, Execute, Close), cleared by Sync, Query, FunctionCall. */
  private batchOpen = false;

  /** A Bind resets the row count of its portal. */
  portalBound(portal: string): void {
    this.portalRows.delete(portal);
  }

  portalClosed(portal: string): void {
    this.portalRows.delete(portal);
  }

  /** No transaction is open any more: every portal is gone upstream, and so are their row counts. */
  transactionEnded(): void {
    this.portalRows.clear();
  }

  /** Messages sent upstream whose responses have not all arrived: the pipeline depth a session bounds. */
  get outstanding(): number {
    return this.queue.length - this.head;
  }

  /** True while any response is outstanding (a statement is running or a batch awaits Sync). */
  get busy(): boolean {
    return this.head < this.queue.length;
  }

  private current(): Pending | undefined {
    return this.queue[this.head];
  }

  private pop(ok = false): void {
    const done = this.queue[this.head];
    done?.settled?.(ok);
    if (done?.trace !== undefined) this.onFinish?.(done.trace);
    if (done?.copy !== undefined) {
      // Answered (or skipped after an earlier error): its COPY, if any, is over.
      this.settleCopy(done, false);
      if (done === this.copyExecute) this.copyExecute = undefined;
    }
    this.head++;
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    } else if (this.head > 1024) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }

  private resetRows(): void {
    this.rows = { sent: 0, truncated: false, errored: false };
  }

  /**
   * Handles one upstream frame. Pushes what the client should receive onto `out` and returns
   * true when that is exactly `frame.raw` (so the caller may forward the original chunk).
   */
  onFrame(frame: Frame, out: Buffer[]): boolean {
    const head = this.current();
    // A ReadyForQuery is the internal entry's only when it closes one of pgwarden's own (its Sync or Query). An error
    // earlier in the batch pops pgwarden's skipped messages with the client's (onError), so this holds already; checked
    // anyway because swallowing the ReadyForQuery of the client's Sync would leave the client waiting forever.
    if (head?.internal && (frame.type !== BackendType.ReadyForQuery || this.readyIsInternal()))
      return this.onInternal(frame, out);
    if (
      head?.copy === 'pending' &&
      frame.type !== BackendType.NoticeResponse &&
      frame.type !== BackendType.ParameterStatus &&
      frame.type !== BackendType.NotificationResponse
    )
      this.settleCopy(head, frame.type === BackendType.CopyInResponse);
    switch (frame.type) {
      case BackendType.DataRow:
      case BackendType.CopyData:
        return this.onRow(frame, head, out);
      case BackendType.CommandComplete:
        return this.onCommandComplete(frame, head, out);
      case BackendType.EmptyQueryResponse:
        if (head?.kind === FrontendType.Execute) this.pop();
        if (this.swallowUntilReady) return false;
        return this.forward(frame, out);
      case BackendType.PortalSuspended:
        if (head?.kind === FrontendType.Execute) {
          if (head.portal !== undefined) this.notePortalSuspended(head.portal);
          this.pop();
        }
        if (this.swallowUntilReady) return false;
        return this.forward(frame, out);
      case BackendType.ParseComplete:
      case BackendType.BindComplete:
      case BackendType.CloseComplete:
      case BackendType.NoData:
        this.pop(true);
        // After a row cap error in a batch: answers PostgreSQL would not have sent after an error (it runs on, unaware).
        if (this.swallowUntilReady) return false;
        return this.forward(frame, out);
      case BackendType.RowDescription:
        // Describe answers with RowDescription and is done; a simple Query or Execute streams rows next.
        if (head?.kind === FrontendType.Describe) this.pop();
        else this.resetRows();
        if (this.swallowUntilReady) return false;
        return this.forward(frame, out);
      case BackendType.CopyInResponse:
        this.awaitingCopyData = true;
        if (this.swallowUntilReady) return false;
        return this.forward(frame, out);
      case BackendType.CopyOutResponse:
        this.resetRows();
        if (this.swallowUntilReady) return false;
        return this.forward(frame, out);
      case BackendType.ErrorResponse:
        return this.onError(frame, head, out);
      case BackendType.ReadyForQuery: {
        this.txStatus = decodeReadyForQuery(frame.body);
        this.batchTx = this.txStatus === 'E' ? 'other' : this.txStatus;
        this.capErrorInBatch = false;
        this.capErrorInQuery = false;
        this.awaitingCopyData = false;
        this.skippingToSync = false;
        this.popThroughReady();
        this.swallowUntilReady = false;
        this.resetRows();
        this.idleSinceReady = this.txStatus === 'I' && !this.busy;
        return this.forward(frame, out);
      }
      default:
        // ParameterDescription, NoticeResponse, NotificationResponse, ParameterStatus, Copy* and the rest pass.
        if (
          this.swallowUntilReady &&
          frame.type !== BackendType.ParameterStatus &&
          frame.type !== BackendType.NotificationResponse
        ) {
          return false;
        }
        return this.forward(frame, out);
    }
  }

  /** Responses to pgwarden's own messages: only asynchronous messages (notices, parameter changes) reach the client. */
  private onInternal(frame: Frame, out: Buffer[]): boolean {
    switch (frame.type) {
      case BackendType.ReadyForQuery: {
        this.txStatus = decodeReadyForQuery(frame.body);
        const client = this.current()?.forwardReady === true;
        this.popThroughReady();
        if (!client) return false;
        this.batchTx = this.txStatus === 'E' ? 'other' : this.txStatus;
        this.idleSinceReady = this.txStatus === 'I' && !this.busy;
        return this.forward(frame, out);
      }
      case BackendType.ErrorResponse:
        // Postgres skips to the internal Sync; its ReadyForQuery closes the entry.
        while (
          this.busy &&
          this.current()?.internal &&
          this.current()?.kind !== FrontendType.Sync &&
          this.current()?.kind !== FrontendType.Query
        )
          this.pop();
        return false;
      case BackendType.NoticeResponse:
        if (this.current()?.quiet) return false;
        return this.forward(frame, out);
      case BackendType.ParameterStatus:
      case BackendType.NotificationResponse:
        return this.forward(frame, out);
      case BackendType.CommandComplete:
        // pgwarden's own ROLLBACK (an Execute, or a Query) ends the transaction: noted as the client's would be.
        this.noteTag(frame);
        if (this.current()?.kind === FrontendType.Execute) this.pop();
        return false;
      default:
        if (this.current()?.kind !== FrontendType.Query) this.pop();
        return false;
    }
  }

  /** Whether the next ReadyForQuery answers a message of pgwarden's own (the first Query, Sync or FunctionCall pending). */
  private readyIsInternal(): boolean {
    for (let i = this.head; i < this.queue.length; i++) {
      const p = this.queue[i];
      if (p?.kind === FrontendType.Query || p?.kind === FrontendType.Sync || p?.kind === FrontendType.FunctionCall)
        return p.internal;
    }
    return true;
  }

  /** ReadyForQuery closes a simple Query, a FunctionCall or a Sync: pops that entry and anything before it Postgres skipped. */
  private popThroughReady(): void {
    while (this.busy) {
      const k = this.current()?.kind;
      this.pop();
      if (k === FrontendType.Query || k === FrontendType.Sync || k === FrontendType.FunctionCall) break;
    }
  }

  private forward(frame: Frame, out: Buffer[]): boolean {
    out.push(frame.raw);
    return true;
  }

  private onRow(frame: Frame, head: Pending | undefined, out: Buffer[]): boolean {
    return this.admitRow(frame.type, head, out) ? this.forward(frame, out) : false;
  }

  /**
   * A DataRow or CopyData too large to hold whole is starting (the session streams its bytes through as they
   * arrive): counted and capped exactly as onFrame would count a whole one. True when its bytes go to the client;
   * anything pgwarden sends instead (a row-cap error) is pushed onto `out`.
   */
  onStreamStart(type: number, out: Buffer[]): boolean {
    const head = this.current();
    // pgwarden's own messages produce no rows; nothing of theirs reaches the client.
    if (head?.internal) return false;
    return this.admitRow(type, head, out);
  }

  /** Counts one row against its statement's cap; true when it is forwarded. */
  private admitRow(type: number, head: Pending | undefined, out: Buffer[]): boolean {
    if (this.swallowUntilReady) return false;
    const cap = head?.cap;
    if (
      cap === undefined ||
      (type === BackendType.CopyData && head?.kind !== FrontendType.Query && head?.kind !== FrontendType.Execute)
    ) {
      if (head?.trace) head.trace.rows++;
      this.rowsRelayed++;
      return true;
    }
    const portalBase =
      head?.kind === FrontendType.Execute && head.portal !== undefined
        ? (this.portalRows.get(head.portal)?.sent ?? 0)
        : 0;
    const cursor = head?.cursors?.[head.kind === FrontendType.Query ? head.statement : 0];
    const cursorSent = cursor !== undefined ? (this.cursorRows.get(cursor) ?? 0) : 0;
    if (portalBase + this.rows.sent < cap.maxRows && cursorSent < cap.maxRows) {
      this.rows.sent++;
      if (cursor !== undefined) this.cursorRows.set(cursor, cursorSent + 1);
      if (head?.trace) head.trace.rows++;
      this.rowsRelayed++;
      return true;
    }
    if (cap.onRowCap === 'truncate') {
      this.rows.truncated = true;
      if (head?.trace) head.trace.truncated = true;
      return false;
    }
    if (!this.rows.errored) {
      this.rows.errored = true;
      if (head?.trace) {
        head.trace.rowCapError = true;
        head.trace.sqlstate ??= SqlState.ProgramLimitExceeded;
      }
      out.push(
        encodeProxyError(
          new ProxyError('ERR_ROW_CAP', `result exceeds the limit of ${cap.maxRows} rows for this role`, {
            detail: 'rule: role maxRows with onRowCap: error',
            hint: 'narrow the query with WHERE or add LIMIT so it returns fewer rows',
          }),
        ),
      );
      // The rest of this Query's (or batch's) results are not the client's to see after an error.
      this.swallowUntilReady = true;
      if (head?.kind === FrontendType.Execute) this.capErrorInBatch = true;
      else if (head?.kind === FrontendType.Query) this.capErrorInQuery = true;
    }
    return false;
  }

  private onCommandComplete(frame: Frame, head: Pending | undefined, out: Buffer[]): boolean {
    this.awaitingCopyData = false;
    this.noteTag(frame);
    // Each statement of a simple Query ends with one CommandComplete: the next rows belong to the next statement.
    if (head?.kind === FrontendType.Query) head.statement++;
    if (this.swallowUntilReady) {
      if (head?.kind === FrontendType.Execute) this.pop();
      return false;
    }
    let verbatim = true;
    const suspended =
      head?.kind === FrontendType.Execute && head.portal !== undefined ? this.portalRows.get(head.portal) : undefined;
    const cap = head?.cap;
    if ((this.rows.truncated || suspended?.truncated) && cap) {
      const tag = decodeCommandComplete(frame.body);
      const sent = this.rows.sent;
      out.push(
        encodeNoticeResponse({
          severity: 'WARNING',
          sqlstate: SqlState.Warning,
          message: `pgwarden truncated the result at ${cap.maxRows} rows`,
          // The same first line an error has, so a program's notice handler can switch on it (docs/policy.md, row cap);
          // the tag keeps its plain `SELECT n` (n = rows sent): pgJDBC and libpq reject any other shape.
          detail: detailWithReason(
            'limit_reached',
            `max_rows=${cap.maxRows}\nrule: role maxRows with onRowCap: truncate`,
          ),
          hint: 'add WHERE conditions or LIMIT/OFFSET to fetch a smaller slice',
        }),
      );
      out.push(encodeCommandComplete(rewriteTagCount(tag, sent)));
      verbatim = false;
    } else {
      out.push(frame.raw);
    }
    if (head?.kind === FrontendType.Execute) {
      if (head.portal !== undefined) this.portalRows.delete(head.portal);
      this.pop();
    }
    this.resetRows();
    return verbatim;
  }

  private onError(frame: Frame, head: Pending | undefined, out: Buffer[]): boolean {
    this.awaitingCopyData = false;
    let verbatim = true;
    // Only errors of traced entries are decoded: the fast path never reads error text.
    const extended = head !== undefined && head.kind !== FrontendType.Query && head.kind !== FrontendType.FunctionCall;
    // An extended batch's error is always decoded: statements sent before its Sync are reported with it (skipCode).
    const needsCode = head?.trace !== undefined || extended;
    const code = needsCode ? (head?.denial?.sqlstate ?? decodeErrorFields(frame.body).sqlstate) : undefined;
    if (head?.trace && head.trace.sqlstate === undefined) head.trace.sqlstate = code;
    if (head?.denial) {
      out.push(encodeProxyError(head.denial));
      verbatim = false;
    } else if (this.swallowUntilReady) {
      // The cap already reported an error for this Query; a cancel-induced error is not news.
      verbatim = false;
    } else {
      out.push(frame.raw);
    }
    if (extended) {
      // Extended protocol: Postgres skips every message until Sync; so do our expectations.
      // A skipped Execute never ran: its trace reports the batch's error, not success.
      while (this.busy && this.current()?.kind !== FrontendType.Sync) {
        const skipped = this.current()?.trace;
        if (skipped && skipped.sqlstate === undefined) skipped.sqlstate = code;
        this.pop();
      }
      // No Sync sent yet: what is sent until one is will be discarded too (see skippingToSync).
      this.skippingToSync = !this.busy;
      this.skipCode = code;
    }
    this.resetRows();
    return verbatim;
  }

  /** Called when Execute finishes with PortalSuspended: remember rows so the next Execute continues the count. */
  private notePortalSuspended(portal: string): void {
    const prev = this.portalRows.get(portal);
    this.portalRows.set(portal, {
      sent: (prev?.sent ?? 0) + this.rows.sent,
      truncated: (prev?.truncated ?? false) || this.rows.truncated,
    });
    this.resetRows();
  }
}

/** `SELECT 150` → `SELECT 100`; `INSERT 0 5` → `INSERT 0 n`; keeps the command words. */
export function rewriteTagCount(tag: string, count: number): string {
  const parts = tag.split(' ');
  const last = parts[parts.length - 1];
  if (last !== undefined && /^\d+$/.test(last)) parts[parts.length - 1] = String(count);
  return parts.join(' ');
}

/** An ErrorResponse the proxy originates outside any pending message (e.g. a FATAL before closing). */
export function fatalFrame(err: ProxyError): Buffer {
  return encodeErrorResponse({
    severity: 'FATAL',
    sqlstate: err.sqlstate,
    message: clientMessage(err),
    detail: detailWithReason(err.reason, err.detail),
    hint: err.hint,
  });
}
