// The server's analysis on the session's own upstream connection: the messages that obtain a tree there without changing what the client sees, and the reading of their answers.
//
// pgwarden's analysis connections (analysis.ts) cannot see what only the session sees: its temporary tables, and what
// its own open transaction created, altered or locked. For those statements the same Parse (debug_print_parse, LOG
// notice with the tree) is sent on the session's own connection, at a point where that connection is idle (a
// ReadyForQuery seen, nothing of the client's in flight; the session guarantees it), wrapped so that nothing stays:
//
//   outside a transaction   BEGIN READ ONLY … ROLLBACK
//   inside one              SAVEPOINT pgwarden_<random> … ROLLBACK TO SAVEPOINT …; RELEASE SAVEPOINT …
//
// with the settings the analysis needs (client_min_messages, debug_print_parse, statement_timeout) made by
// set_config(…, true) inside that wrapper, so the rollback restores the client's values. Only the extended protocol is
// used, with statement and portal names nobody can guess, each closed again: a simple Query message would destroy the
// client's unnamed prepared statement and portal. Every answer to these messages is the session's to swallow; only
// notifications (LISTEN) and ParameterStatus are the client's, and are handed back to it: PostgreSQL reports a setting
// changed by the client's batch (SET DateStyle, TimeZone, application_name before the statement analysed in the middle
// of it) at the next ReadyForQuery, which is the wrapper's, and never again.
import { randomBytes } from 'node:crypto';
import { BackendType } from '../wire/codes.ts';
import { MessageFramer, type Frame } from '../wire/framer.ts';
import { encodeBind, encodeClose, encodeExecute, encodeParse, encodeSync } from '../wire/frontend.ts';
import {
  AnalysisUnavailable,
  dataRow,
  firstError,
  parseTrees,
  rawFields,
  segment,
  serverError,
  tooLarge,
  type AnalysisTarget,
  type ReplayTarget,
  type ServerError,
  type TreeResult,
} from './analysis.ts';

export type TxStatus = 'I' | 'T' | 'E';

/**
 * The session's side: runs `make(status)` once its upstream connection is idle (status: the last ReadyForQuery's),
 * sends the messages it returns and resolves with every answer up to the `readyCount`-th ReadyForQuery. `make`
 * returning undefined sends nothing (resolves with no frames).
 */
export type SessionExchange = (
  make: (status: TxStatus) => { messages: Buffer[]; readyCount: number } | undefined,
) => Promise<{ status: TxStatus; frames: Frame[] }>;

/** The wrapper could not be undone as planned: the client's session state is no longer known, so the session must end. */
export class SessionAnalysisBroken extends Error {
  override readonly name = 'SessionAnalysisBroken';
}

/** PostgreSQL's own refusal of any statement but ROLLBACK/COMMIT in an aborted transaction. */
export function abortedTransaction(): ServerError {
  return {
    sqlstate: '25P02',
    message: 'current transaction is aborted, commands ignored until end of transaction block',
    detail: undefined,
    hint: undefined,
    position: undefined,
    context: undefined,
  };
}

/** What `make` answers when the transaction is aborted: nothing is sent, and the caller reports 25P02. */
const ABORTED = Symbol('aborted');

interface Names {
  savepoint: string;
  statements: string[];
  portals: string[];
}

function newNames(): Names {
  return { savepoint: `pgwarden_${randomBytes(12).toString('hex')}`, statements: [], portals: [] };
}

function unique(names: Names, list: 'statements' | 'portals'): string {
  const name = `pgwarden_${randomBytes(12).toString('hex')}`;
  names[list].push(name);
  return name;
}

/** Parse, Bind and Execute of one fixed statement under fresh names (never the unnamed statement or portal). */
function run(names: Names, sql: string, params: Buffer[] = [], types: number[] = []): Buffer[] {
  const st = unique(names, 'statements');
  const portal = unique(names, 'portals');
  return [
    encodeParse(st, sql, types),
    encodeBind({ portal, statement: st, paramFormats: [], params, resultFormats: [] }),
    encodeExecute(portal, 0),
  ];
}

export interface SessionAnalysisOptions {
  /** statement_timeout for the analysis's own statements (analysis.timeout). */
  timeoutMs: number;
  /** Called when the wrapper could not be undone (SessionAnalysisBroken): the session must end. */
  onBroken(err: SessionAnalysisBroken): void;
}

/** The wrapper SessionAnalysis.within holds open: the status before it, and its savepoint and statement names. */
interface Outer {
  status: 'I' | 'T';
  names: Names;
}

/** The analysis's requests, each in its own wrapper; inside `outer` (within), a savepoint nested in it. */
class Requests implements ReplayTarget {
  constructor(
    private readonly exchange: SessionExchange,
    private readonly opts: SessionAnalysisOptions,
    private readonly outer: Outer | undefined,
  ) {}

  private broken(why: string): never {
    const err = new SessionAnalysisBroken(
      `the analysis wrapper on the session's connection did not run as planned (${why})`,
    );
    this.opts.onBroken(err);
    throw err;
  }

  /**
   * Runs `middle` (messages ending in Sync, built with the wrapper's names) inside the wrapper and returns its answers
   * (without their ReadyForQuery), or ABORTED when the client's transaction is aborted (nothing was sent).
   */
  private async wrapped(middle: (names: Names) => Buffer[], tree: boolean): Promise<Frame[] | typeof ABORTED> {
    const names = newNames();
    const sp = names.savepoint;
    const settings = [
      `pg_catalog.set_config('statement_timeout', '${Math.max(1, Math.floor(this.opts.timeoutMs))}', true)`,
      ...(tree
        ? [
            "pg_catalog.set_config('client_min_messages', 'log', true)",
            "pg_catalog.set_config('debug_pretty_print', 'off', true)",
            "pg_catalog.set_config('debug_print_parse', 'on', true)",
          ]
        : []),
    ];
    // Inside `within`'s wrapper the connection is in a transaction of pgwarden's own, whatever the client's status was.
    const { status, frames } = await this.exchange((status) => {
      if (status === 'E') return undefined;
      const inTx = this.outer !== undefined || status === 'T';
      const messages = [
        ...run(names, inTx ? `SAVEPOINT ${sp}` : 'BEGIN READ ONLY'),
        ...run(names, `SELECT ${settings.join(', ')}`),
        encodeSync(),
        ...middle(names),
        ...run(names, inTx ? `ROLLBACK TO SAVEPOINT ${sp}` : 'ROLLBACK'),
        ...(inTx ? run(names, `RELEASE SAVEPOINT ${sp}`) : []),
        ...names.statements.map((n) => encodeClose('S', n)),
        ...names.portals.map((n) => encodeClose('P', n)),
        encodeSync(),
      ];
      return { messages, readyCount: 3 };
    });
    if (status === 'E') return ABORTED;
    const ready = frames
      .filter((f) => f.type === BackendType.ReadyForQuery)
      .map((f) => String.fromCharCode(f.body[0] ?? 0));
    const opened = firstError(segment(frames, 0));
    const closed = firstError(segment(frames, 2));
    const end = this.outer !== undefined ? 'T' : status;
    if (opened !== undefined || closed !== undefined || ready[0] !== 'T' || ready[2] !== end)
      this.broken(opened?.message ?? closed?.message ?? `status ${ready.join('')}`);
    return segment(frames, 1);
  }

  async parseTree(text: string, paramTypes: readonly number[]): Promise<TreeResult> {
    const own = await this.wrapped((names) => {
      const st = unique(names, 'statements');
      return [encodeParse(st, text, [...paramTypes]), encodeSync()];
    }, true);
    if (own === ABORTED) return { ok: false, error: abortedTransaction() };
    if (own.some((f) => f.type === BackendType.ErrorResponse && f.body.length === 0))
      return { ok: false, error: tooLarge() };
    const err = firstError(own);
    if (err !== undefined) return err.context !== undefined ? { ok: false, userCode: true } : { ok: false, error: err };
    const trees = parseTrees(own);
    if (trees.length > 1) return { ok: false, userCode: true };
    if (trees.length !== 1) throw new AnalysisUnavailable('the server sent no parse tree');
    return { ok: true, tree: trees[0] as string };
  }

  async typeOids(names: readonly string[]): Promise<{ ok: true; oids: number[] } | { ok: false; error: ServerError }> {
    const own = await this.wrapped(
      (n) => [
        // The names travel as bind parameters, never spliced into SQL.
        ...names.flatMap((name) =>
          run(n, 'SELECT $1::pg_catalog.regtype::pg_catalog.oid::pg_catalog.int8', [Buffer.from(name, 'utf8')], [25]),
        ),
        encodeSync(),
      ],
      false,
    );
    if (own === ABORTED) return { ok: false, error: abortedTransaction() };
    const err = firstError(own);
    if (err !== undefined) return { ok: false, error: err };
    const oids = own.filter((f) => f.type === BackendType.DataRow).map((f) => Number(dataRow(f.body)[0]));
    if (oids.length !== names.length) throw new AnalysisUnavailable('type lookup returned no row');
    return { ok: true, oids };
  }

  async temporaryNames(names: readonly string[]): Promise<boolean> {
    const own = await this.wrapped(
      (n) => [
        // The names travel as bind parameters; to_regclass resolves each as the session's search_path does (pg_temp first).
        ...names.flatMap((name) =>
          run(
            n,
            `SELECT coalesce((SELECT c.relnamespace = pg_catalog.pg_my_temp_schema() FROM pg_catalog.pg_class c
                WHERE c.oid = pg_catalog.to_regclass(pg_catalog.quote_ident($1))), false)::pg_catalog.text`,
            [Buffer.from(name, 'utf8')],
            [25],
          ),
        ),
        encodeSync(),
      ],
      false,
    );
    if (own === ABORTED || firstError(own) !== undefined) return false;
    const answers = own.filter((f) => f.type === BackendType.DataRow).map((f) => dataRow(f.body)[0]);
    return answers.length === names.length && answers.every((a) => a === 'true');
  }

  async rows(sql: string): Promise<(string | null)[][]> {
    const own = await this.wrapped((n) => [...run(n, sql), encodeSync()], false);
    if (own === ABORTED) throw new AnalysisUnavailable('the transaction is aborted');
    const err = firstError(own);
    if (err !== undefined) throw new AnalysisUnavailable(`catalog lookup failed: ${err.message}`);
    return own.filter((f) => f.type === BackendType.DataRow).map((f) => dataRow(f.body));
  }

  /**
   * Runs one statement of the client's text (DDL the policy allowed) inside `within`'s wrapper, which rolls it back;
   * its error, if it fails (then the wrapper's transaction is aborted and the caller stops). Its statement and portal
   * are closed after the Sync, so they are closed even then.
   */
  async replay(text: string): Promise<ServerError | undefined> {
    if (this.outer === undefined) return abortedTransaction();
    const names = newNames();
    const { frames } = await this.exchange(() => ({
      messages: [
        ...run(names, text),
        encodeSync(),
        ...names.statements.map((n) => encodeClose('S', n)),
        ...names.portals.map((n) => encodeClose('P', n)),
        encodeSync(),
      ],
      readyCount: 2,
    }));
    return firstError(segment(frames, 0));
  }

  /** Opens `within`'s wrapper: BEGIN (read-write: statements are run in it) or a savepoint, with the analysis's timeout. */
  static async open(exchange: SessionExchange, opts: SessionAnalysisOptions): Promise<Outer | typeof ABORTED> {
    const names = newNames();
    const { status, frames } = await exchange((status) => {
      if (status === 'E') return undefined;
      return {
        messages: [
          ...run(names, status === 'T' ? `SAVEPOINT ${names.savepoint}` : 'BEGIN'),
          ...run(
            names,
            `SELECT pg_catalog.set_config('statement_timeout', '${Math.max(1, Math.floor(opts.timeoutMs))}', true)`,
          ),
          encodeSync(),
        ],
        readyCount: 1,
      };
    });
    if (status === 'E') return ABORTED;
    const ready = frames.find((f) => f.type === BackendType.ReadyForQuery);
    const err = firstError(frames);
    if (err !== undefined || ready === undefined || ready.body[0] !== 0x54) {
      const broken = new SessionAnalysisBroken(`could not open the analysis wrapper (${err?.message ?? 'status'})`);
      opts.onBroken(broken);
      throw broken;
    }
    return { status: status === 'T' ? 'T' : 'I', names };
  }

  /** Undoes `within`'s wrapper and everything run in it; the connection must be back where it was. */
  static async close(exchange: SessionExchange, opts: SessionAnalysisOptions, outer: Outer): Promise<void> {
    const names = outer.names;
    const inTx = outer.status === 'T';
    const { frames } = await exchange(() => {
      const end = [
        ...run(names, inTx ? `ROLLBACK TO SAVEPOINT ${names.savepoint}` : 'ROLLBACK'),
        ...(inTx ? run(names, `RELEASE SAVEPOINT ${names.savepoint}`) : []),
      ];
      return {
        messages: [
          ...end,
          ...names.statements.map((n) => encodeClose('S', n)),
          ...names.portals.map((n) => encodeClose('P', n)),
          encodeSync(),
        ],
        readyCount: 1,
      };
    });
    const ready = frames.find((f) => f.type === BackendType.ReadyForQuery);
    const err = firstError(frames);
    if (err !== undefined || ready === undefined || String.fromCharCode(ready.body[0] ?? 0) !== outer.status) {
      const broken = new SessionAnalysisBroken(`could not undo the analysis wrapper (${err?.message ?? 'status'})`);
      opts.onBroken(broken);
      throw broken;
    }
  }
}

/**
 * An AnalysisTarget over the session's own connection (see the file header). Its requests run one at a time, so one
 * decision's `within` (statements run, then analyses, then all undone) is never interleaved with another's.
 */
export class SessionAnalysis implements AnalysisTarget {
  private readonly requests: Requests;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly exchange: SessionExchange,
    private readonly opts: SessionAnalysisOptions,
  ) {
    this.requests = new Requests(exchange, opts, undefined);
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  parseTree(text: string, paramTypes: readonly number[]): Promise<TreeResult> {
    return this.exclusive(() => this.requests.parseTree(text, paramTypes));
  }

  typeOids(names: readonly string[]): Promise<{ ok: true; oids: number[] } | { ok: false; error: ServerError }> {
    return this.exclusive(() => this.requests.typeOids(names));
  }

  temporaryNames(names: readonly string[]): Promise<boolean> {
    return this.exclusive(() => this.requests.temporaryNames(names));
  }

  rows(sql: string): Promise<(string | null)[][]> {
    return this.exclusive(() => this.requests.rows(sql));
  }

  within<T>(fn: (scoped: ReplayTarget) => Promise<T>): Promise<T> {
    return this.exclusive(async () => {
      const outer = await Requests.open(this.exchange, this.opts);
      // An aborted transaction: nothing was opened, and every request answers PostgreSQL's 25P02.
      if (outer === ABORTED) return fn(this.requests);
      try {
        return await fn(new Requests(this.exchange, this.opts, outer));
      } finally {
        await Requests.close(this.exchange, this.opts, outer);
      }
    });
  }
}

/**
 * Reads the answers to one exchange from the session's upstream bytes: whole messages (a parse tree can be megabytes),
 * up to the `readyCount`-th ReadyForQuery. Notifications and ParameterStatus are set aside for the client; a FATAL ends the exchange with
 * an error; a notice larger than `maxTreeBytes` is kept as an empty ErrorResponse (the caller refuses: too large).
 */
export class UpstreamExchange {
  private readonly framer = new MessageFramer({ maxMessageSize: 64 * 1024 * 1024 });
  readonly frames: Frame[] = [];
  /** NotificationResponse messages that arrived meanwhile, whole, for the client. */
  readonly notifications: Buffer[] = [];
  /** ParameterStatus messages that arrived meanwhile (settings the client changed), whole, for the client. */
  readonly parameters: Buffer[] = [];
  private readyLeft: number;

  constructor(
    readyCount: number,
    private readonly maxTreeBytes: number,
  ) {
    this.readyLeft = readyCount;
  }

  get done(): boolean {
    return this.readyLeft === 0;
  }

  /** Takes upstream bytes; once done, returns what followed the last ReadyForQuery (the session's to read). */
  push(chunk: Buffer): Buffer | undefined {
    this.framer.push(chunk);
    while (!this.done) {
      const f = this.framer.next();
      if (!f) break;
      if (f.type === BackendType.NotificationResponse) {
        this.notifications.push(Buffer.from(f.raw));
        continue;
      }
      if (f.type === BackendType.ParameterStatus) {
        this.parameters.push(Buffer.from(f.raw));
        continue;
      }
      if (f.type === BackendType.ErrorResponse && rawFields(f.body).get('V')?.toString('latin1') === 'FATAL')
        throw new AnalysisUnavailable(
          `the session's connection was ended by the server: ${serverError(f.body).message}`,
        );
      if (f.type === BackendType.NoticeResponse && f.body.length > this.maxTreeBytes) {
        this.frames.push({ type: BackendType.ErrorResponse, body: Buffer.alloc(0), raw: Buffer.alloc(0) });
        continue;
      }
      // Copied: the framer's views would pin whole chunks.
      this.frames.push({ type: f.type, body: Buffer.from(f.body), raw: Buffer.alloc(0) });
      if (f.type === BackendType.ReadyForQuery) this.readyLeft--;
    }
    return this.done ? this.framer.takeRemaining() : undefined;
  }
}
