// pgwarden's analysis connections: upstream sessions that return PostgreSQL's analysed tree of a statement without running it, and look OIDs up in the catalog.
//
// Each connection logs in with pgwarden's own credentials and the session context that changes name
// resolution (the role's dbRole as `role`, its pinned search_path), with debug_print_parse on and
// client_min_messages at LOG, so a Parse message answers with a LOG notice whose DETAIL is the Query tree
// after parse analysis. Parse analysis resolves names, functions, operators and coercions but neither plans
// nor executes. Requests are pipelined: each is a run of messages ending in Sync, answered in order.
import type { UpstreamConfig } from '../config/types.ts';
import { ProxyError, type ErrorSource } from '../../lib/errors.ts';
import { splitErrorFields } from '../wire/backend.ts';
import { BackendType } from '../wire/codes.ts';
import { MessageFramer, type Frame } from '../wire/framer.ts';
import { encodeBind, encodeExecute, encodeParse, encodeQuery, encodeSync, encodeTerminate } from '../wire/frontend.ts';
import { tcpUpstream, type UpstreamConnection, type UpstreamConnector } from './connect.ts';
import type {
  OidSets,
  ServerFunction,
  ServerOperator,
  ServerRelation,
  ServerType,
} from '../../policy/server-analysis.ts';
import { readNodeTree, type PgValue } from '../../policy/pgnode.ts';
import { quoteIdent } from '../../lib/ident.ts';

/** An error the server raised while analysing (the statement would fail the same way). */
export interface ServerError {
  /** The ErrorResponse body as received (for the scrubber). */
  body?: Buffer;
  sqlstate: string;
  message: string;
  detail: string | undefined;
  hint: string | undefined;
  position: number | undefined;
  /** CONTEXT: present when the error came from inside a function, i.e. from user code run by the analysis. */
  context: string | undefined;
  /** Where PostgreSQL raised it (F, L, R): passed on as PostgreSQL sends them (drivers expose the routine). */
  source?: ErrorSource;
  /** Set when pgwarden made this error itself (no server sent it): the client gets it as pgwarden's, reason in the message. */
  own?: true;
}

/** A relation lock that can block parse analysis, from pg_locks. */
export interface RelationLock {
  relation: number;
  /** The backend that holds or waits for it; undefined for a prepared transaction. */
  pid: number | undefined;
  granted: boolean;
  schema: string;
  name: string;
}

export type TreeResult =
  | { ok: true; tree: string }
  | { ok: false; error: ServerError }
  /** Analysing the statement ran SQL of its own (a domain CHECK or a comparison function reached by a constant's input function). */
  | { ok: false; userCode: true };

/**
 * What the server's analysis needs of a connection: the analysed tree of a text, type OIDs of type names, catalog rows.
 * AnalysisConnection (pgwarden's own connections) and SessionAnalysis (own-analysis.ts: the session's own upstream
 * connection, for what only the session can see) both provide it.
 */
export interface AnalysisTarget {
  parseTree(text: string, paramTypes: readonly number[], lockTimeoutMs?: number): Promise<TreeResult>;
  typeOids(names: readonly string[]): Promise<{ ok: true; oids: number[] } | { ok: false; error: ServerError }>;
  rows(sql: string): Promise<(string | null)[][]>;
  /**
   * Whether each unqualified relation name resolves, as the session would resolve it now, to one of the session's own
   * temporary relations (only the session's own connection can tell).
   */
  temporaryNames?(names: readonly string[]): Promise<boolean>;
  /**
   * Runs `fn` with the connection held inside one wrapper of the analysis's own, where statements can be run (replay)
   * before others are analysed, all undone when `fn` is done (only the session's own connection can).
   */
  within?<T>(fn: (scoped: ReplayTarget) => Promise<T>): Promise<T>;
}

/** An AnalysisTarget inside SessionAnalysis.within: `replay` runs one statement there, returning its error if it fails. */
export interface ReplayTarget extends AnalysisTarget {
  replay(text: string): Promise<ServerError | undefined>;
}

/** Raised when the connection cannot answer (down, timed out, protocol trouble): the caller denies. */
export class AnalysisUnavailable extends Error {
  override readonly name = 'AnalysisUnavailable';
}

export interface AnalysisContext {
  dbRole: string | undefined;
  searchPath: readonly string[];
  /** Settings that change how constants are read (DateStyle, IntervalStyle, TimeZone), as the session has them at login. */
  display: Readonly<Record<string, string>>;
  /**
   * The upstream backend pid of the session whose statement is analysed (not part of the context's key): a lock its
   * own open transaction holds would make the analysis wait for a transaction that waits for the analysis.
   */
  sessionPid?: number;
  /**
   * The session's own connection (own-analysis.ts; not part of the context's key): when set, the statement is analysed
   * there, where the session's temporary tables and its open transaction's changes are visible, instead of on one of
   * pgwarden's connections. Its catalog facts are the session's own and are never shared.
   */
  own?: AnalysisTarget;
}

export function contextKey(c: AnalysisContext): string {
  return JSON.stringify([c.dbRole ?? null, c.searchPath, Object.entries(c.display).sort()]);
}

interface Pending {
  /** ReadyForQuery messages still to come before this request is complete. */
  readyLeft: number;
  frames: Frame[];
  resolve(frames: Frame[]): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** Fields of an ErrorResponse/NoticeResponse body by type letter, as raw bytes (node text is read as latin1, one character per byte). */
export function rawFields(body: Buffer): Map<string, Buffer> {
  const fields = splitErrorFields(body);
  if (fields === undefined) throw new AnalysisUnavailable('malformed notice or error from the analysis connection');
  return new Map(fields.map((f) => [String.fromCharCode(f.code), f.bytes]));
}

export function serverError(body: Buffer): ServerError {
  const f = rawFields(body);
  const text = (k: string) => f.get(k)?.toString('utf8');
  const pos = text('P');
  return {
    body,
    sqlstate: text('C') ?? 'XX000',
    message: text('M') ?? 'error',
    detail: text('D'),
    hint: text('H'),
    position: pos === undefined ? undefined : Number(pos),
    context: text('W'),
    ...(f.has('R') || f.has('F') || f.has('L')
      ? { source: { file: text('F'), line: text('L'), routine: text('R') } }
      : {}),
  };
}

/** Parse trees carried by LOG notices among `frames`. */
export function parseTrees(frames: readonly Frame[]): string[] {
  const out: string[] = [];
  for (const fr of frames) {
    if (fr.type !== BackendType.NoticeResponse) continue;
    const f = rawFields(fr.body);
    if (f.get('V')?.toString('latin1') !== 'LOG' || f.get('M')?.toString('latin1') !== 'parse tree:') continue;
    const d = f.get('D');
    if (d === undefined) throw new AnalysisUnavailable('parse tree notice without its tree');
    out.push(d.toString('latin1'));
  }
  return out;
}

/** The frames answering the n-th message run that ends in ReadyForQuery (0-based), without that ReadyForQuery. */
export function segment(frames: readonly Frame[], n: number): Frame[] {
  let seen = 0;
  const out: Frame[] = [];
  for (const f of frames) {
    if (f.type === BackendType.ReadyForQuery) {
      if (seen++ === n) break;
      continue;
    }
    if (seen === n) out.push(f);
  }
  return out;
}

export function firstError(frames: readonly Frame[]): ServerError | undefined {
  const e = frames.find((f) => f.type === BackendType.ErrorResponse);
  return e === undefined ? undefined : serverError(e.body);
}

export interface AnalysisConnectionOptions {
  /** Longest wait for one answer; past it the connection is dropped and pending requests fail. */
  timeoutMs: number;
  /** Largest tree accepted, in bytes. */
  maxTreeBytes: number;
  /** A NOTIFY channel that announces DDL: the connection LISTENs and calls onDdl for each notification. */
  ddlChannel?: string;
  onDdl?(): void;
  /** How connections are opened (default tcpUpstream; a test may script the backend). */
  connector?: UpstreamConnector;
}

/** NotificationResponse: process id, channel, payload. */
function notificationChannel(body: Buffer): string | undefined {
  const end = body.indexOf(0, 4);
  return end < 0 ? undefined : body.subarray(4, end).toString('utf8');
}

export class AnalysisConnection implements AnalysisTarget {
  private readonly framer = new MessageFramer({ maxMessageSize: 64 * 1024 * 1024 });
  private readonly queue: Pending[] = [];
  private failed: Error | undefined;
  /** The server's major version (server_version_num / 10000). */
  readonly major: number;

  private constructor(
    private readonly up: UpstreamConnection,
    private readonly opts: AnalysisConnectionOptions,
  ) {
    const num = Number(
      up.parameters.get('server_version_num') ??
        up.parameters
          .get('server_version')
          ?.replace(/^(\d+)\.?(\d*).*/, (_m, a, b) => String(Number(a) * 10000 + Number(b || 0))) ??
        0,
    );
    this.major = Math.floor(num / 10000);
    const leftover = up.framer.takeRemaining();
    if (leftover.length > 0) this.framer.push(leftover);
    up.socket.setNoDelay?.(true);
    up.socket.setKeepAlive?.(true, 10_000);
    up.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    up.socket.on('error', (err) => this.fail(new AnalysisUnavailable(`analysis connection error: ${err.message}`)));
    up.socket.on('close', () => this.fail(new AnalysisUnavailable('analysis connection closed')));
  }

  static async open(
    cfg: UpstreamConfig,
    ctx: AnalysisContext,
    opts: AnalysisConnectionOptions,
  ): Promise<AnalysisConnection> {
    const params: Record<string, string> = {
      ...ctx.display,
      client_encoding: 'UTF8',
      standard_conforming_strings: 'on',
      application_name: 'pgwarden-analysis',
      search_path: ctx.searchPath.map(quoteIdent).join(', '),
      default_transaction_read_only: 'on',
      statement_timeout: String(opts.timeoutMs),
      debug_print_parse: 'on',
      debug_pretty_print: 'off',
      client_min_messages: 'log',
    };
    if (ctx.dbRole !== undefined) params.role = ctx.dbRole;
    const up = await (opts.connector ?? tcpUpstream).connect(cfg, params);
    const conn = new AnalysisConnection(up, opts);
    if (opts.ddlChannel !== undefined) {
      const frames = await conn.request([encodeQuery(`LISTEN ${quoteIdent(opts.ddlChannel)}`)], 1);
      const err = firstError(frames);
      if (err !== undefined) {
        conn.close();
        throw new AnalysisUnavailable(`LISTEN ${opts.ddlChannel} failed: ${err.message}`);
      }
    }
    return conn;
  }

  get isFailed(): boolean {
    return this.failed !== undefined;
  }

  get pending(): number {
    return this.queue.length;
  }

  private onData(chunk: Buffer): void {
    try {
      this.framer.push(chunk);
      for (let f = this.framer.next(); f; f = this.framer.next()) {
        if (f.type === BackendType.NotificationResponse) {
          if (this.opts.ddlChannel !== undefined && notificationChannel(f.body) === this.opts.ddlChannel)
            this.opts.onDdl?.();
          continue;
        }
        const head = this.queue[0];
        if (head === undefined) {
          // Nothing asked: a notice or parameter change from the server is fine, anything else is not.
          if (
            f.type === BackendType.NoticeResponse ||
            f.type === BackendType.ParameterStatus ||
            f.type === BackendType.NotificationResponse
          )
            continue;
          throw new AnalysisUnavailable(`unexpected message ${String.fromCharCode(f.type)} on the analysis connection`);
        }
        if (f.type === BackendType.ErrorResponse && rawFields(f.body).get('V')?.toString('latin1') === 'FATAL') {
          throw new AnalysisUnavailable(`analysis connection ended by the server: ${serverError(f.body).message}`);
        }
        if (f.type === BackendType.NoticeResponse && f.body.length > this.opts.maxTreeBytes) {
          // Too large to read safely; keep the request's place and fail it when it completes.
          head.frames.push({ type: BackendType.ErrorResponse, body: Buffer.alloc(0), raw: Buffer.alloc(0) });
          continue;
        }
        // Copy: the framer's views would pin whole chunks.
        head.frames.push({ type: f.type, body: Buffer.from(f.body), raw: Buffer.alloc(0) });
        if (f.type === BackendType.ReadyForQuery && --head.readyLeft === 0) {
          this.queue.shift();
          clearTimeout(head.timer);
          head.resolve(head.frames);
        }
      }
    } catch (err) {
      this.fail(err instanceof Error ? err : new AnalysisUnavailable(String(err)));
    }
  }

  private fail(err: Error): void {
    if (this.failed === undefined) this.failed = err;
    for (const p of this.queue.splice(0)) {
      clearTimeout(p.timer);
      p.reject(this.failed);
    }
    if (!this.up.socket.destroyed) this.up.socket.destroy();
  }

  close(): void {
    if (!this.up.socket.destroyed) this.up.socket.end(encodeTerminate());
    this.fail(new AnalysisUnavailable('analysis connection closed by pgwarden'));
  }

  private request(messages: Buffer[], readyCount: number): Promise<Frame[]> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<Frame[]>((resolve, reject) => {
      // The server's own statement_timeout (the same value) cancels a slow analysis first and the connection
      // lives on; this timer is for a server that does not answer at all.
      const timer = setTimeout(
        () =>
          this.fail(new AnalysisUnavailable(`the analysis connection did not answer within ${this.opts.timeoutMs} ms`)),
        this.opts.timeoutMs + 2_000,
      );
      timer.unref?.();
      this.queue.push({ readyLeft: readyCount, frames: [], resolve, reject, timer });
      this.up.socket.write(messages.length === 1 ? (messages[0] as Buffer) : Buffer.concat(messages));
    });
  }

  private static oversized(frames: readonly Frame[]): boolean {
    return frames.some((f) => f.type === BackendType.ErrorResponse && f.body.length === 0);
  }

  /**
   * The analysed tree of one statement sent as a Parse message (never bound or executed).
   *
   * Parse analysis runs a constant's input function, and for arrays, composites and ranges of user types that
   * can reach SQL: a domain's CHECK, a range subtype's comparison function. So the Parse runs inside a READ ONLY
   * transaction that is rolled back, followed by releasing every session advisory lock: whatever such code does
   * to this connection (settings, LISTEN, locks) is undone before the next analysis. Such code also prints parse
   * trees of its own statements (or could RAISE a forged one): more than one tree means it ran, and the statement
   * is refused without reading any of them.
   */
  async parseTree(text: string, paramTypes: readonly number[], lockTimeoutMs = 0): Promise<TreeResult> {
    // lock_timeout is set for this transaction only, always: 0 (the server's statement_timeout bounds the wait) unless
    // the caller asks for a short probe, and never what the server's configuration happens to say.
    const lockTimeout = Number.isSafeInteger(lockTimeoutMs) && lockTimeoutMs > 0 ? lockTimeoutMs : 0;
    const frames = await this.request(
      [
        encodeQuery(`BEGIN READ ONLY; SET LOCAL lock_timeout = ${lockTimeout}`),
        encodeParse('', text, [...paramTypes]),
        encodeSync(),
        encodeQuery('ROLLBACK; SELECT pg_catalog.pg_advisory_unlock_all()'),
      ],
      3,
    );
    const own = segment(frames, 1);
    if (AnalysisConnection.oversized(own)) return { ok: false, error: tooLarge() };
    const err = firstError(own);
    if (err !== undefined) return err.context !== undefined ? { ok: false, userCode: true } : { ok: false, error: err };
    const trees = parseTrees(own);
    if (trees.length > 1) return { ok: false, userCode: true };
    if (trees.length !== 1) throw new AnalysisUnavailable('the server sent no parse tree');
    const cleanup = firstError(segment(frames, 2));
    if (cleanup !== undefined)
      throw new AnalysisUnavailable(`could not reset the analysis connection: ${cleanup.message}`);
    return { ok: true, tree: trees[0] as string };
  }

  /**
   * Type OIDs of type names as written in SQL (PREPARE's parameter list), resolved on this connection's
   * search_path as PREPARE would; a name that does not resolve is an error the caller passes on.
   */
  async typeOids(names: readonly string[]): Promise<{ ok: true; oids: number[] } | { ok: false; error: ServerError }> {
    const oids: number[] = [];
    for (const name of names) {
      // The name travels as a bind parameter, never spliced into SQL.
      // Parsing this fixed text prints a tree we do not read; regtypein and typmod input functions are C.
      const frames = await this.request(
        [
          encodeParse('', 'SELECT $1::pg_catalog.regtype::pg_catalog.oid::pg_catalog.int8', [25]),
          encodeBind({
            portal: '',
            statement: '',
            paramFormats: [],
            params: [Buffer.from(name, 'utf8')],
            resultFormats: [],
          }),
          encodeExecute('', 0),
          encodeSync(),
        ],
        1,
      );
      const err = firstError(frames);
      if (err !== undefined) return { ok: false, error: err };
      const row = frames.find((f) => f.type === BackendType.DataRow);
      if (row === undefined) throw new AnalysisUnavailable('type lookup returned no row');
      const cols = dataRow(row.body);
      oids.push(Number(cols[0]));
    }
    return { ok: true, oids };
  }

  /**
   * Relation locks that can block parse analysis (which takes ACCESS SHARE, or ROW SHARE / ROW EXCLUSIVE on a target):
   * SHARE and stronger, granted or queued, of every backend but this connection (pid null: a prepared transaction).
   * Names are [schema, name], or ['', 'OID n'] for a relation this connection's snapshot does not see. Run on the idle
   * connection, after a lock wait ended.
   */
  async relationLocks(): Promise<RelationLock[]> {
    const rows =
      await this.rows(`select l.relation::pg_catalog.text, l.pid::pg_catalog.text, l.granted::pg_catalog.text,
        coalesce(n.nspname::pg_catalog.text, ''), coalesce(c.relname::pg_catalog.text, 'OID ' || l.relation::pg_catalog.text)
      from pg_catalog.pg_locks l
      left join pg_catalog.pg_class c on c.oid = l.relation
      left join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where l.locktype = 'relation'
       and l.mode in ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
       and l.database in (0, (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()))
       and l.pid is distinct from pg_catalog.pg_backend_pid()`);
    return rows.map(([relation, pid, granted, schema, name]) => {
      if (relation == null || granted == null || schema == null || name == null)
        throw new AnalysisUnavailable('lock lookup returned a null field');
      return {
        relation: Number(relation),
        pid: pid == null ? undefined : Number(pid),
        granted: granted === 'true',
        schema,
        name,
      };
    });
  }

  /** Runs a catalog query (text results) and returns its rows. */
  async rows(sql: string): Promise<(string | null)[][]> {
    // Our own catalog queries need no tree: printing one would only cost bytes.
    const frames = await this.request(
      [encodeQuery(`SET debug_print_parse = off; ${sql}; SET debug_print_parse = on`)],
      1,
    );
    const err = firstError(frames);
    if (err !== undefined) throw new AnalysisUnavailable(`catalog lookup failed: ${err.message}`);
    return frames.filter((f) => f.type === BackendType.DataRow).map((f) => dataRow(f.body));
  }
}

/** A DataRow's columns as text (null for SQL NULL). */
export function dataRow(b: Buffer): (string | null)[] {
  const n = b.readInt16BE(0);
  let p = 2;
  const row: (string | null)[] = [];
  for (let i = 0; i < n; i++) {
    const len = b.readInt32BE(p);
    p += 4;
    if (len < 0) row.push(null);
    else {
      row.push(b.subarray(p, p + len).toString('utf8'));
      p += len;
    }
  }
  return row;
}

export function tooLarge(): ServerError {
  return {
    sqlstate: '54000',
    message: 'statement is too complex for pgwarden to analyse',
    detail: undefined,
    hint: 'split the statement into simpler ones',
    position: undefined,
    context: undefined,
    own: true,
  };
}

export interface FetchedOids {
  relations: Map<number, ServerRelation | null>;
  functions: Map<number, ServerFunction | null>;
  operators: Map<number, ServerOperator | null>;
  types: Map<number, ServerType | null>;
}

function oidArray(s: ReadonlySet<number>): string {
  return `'{${[...s].filter((n) => Number.isSafeInteger(n) && n > 0).join(',')}}'::pg_catalog.oid[]`;
}

/**
 * Looks the OIDs up in one round trip. Every object is schema-qualified so nothing on the search_path can
 * stand in for a catalog. OIDs not found come back as null (the caller denies statements that use them).
 */
export async function fetchOids(conn: Pick<AnalysisTarget, 'rows'>, want: OidSets): Promise<FetchedOids> {
  const parts: string[] = [];
  if (want.relations.size > 0) {
    // The session's own temporary schema is named pg_temp, as a statement names it: only the session's own connection
    // has one (pgwarden's analysis connections never make temporary objects), and pg_temp_N of another session is not it.
    parts.push(`select 'r', c.oid::pg_catalog.text,
      case when c.relnamespace = pg_catalog.pg_my_temp_schema() then 'pg_temp' else n.nspname::pg_catalog.text end,
      c.relname::pg_catalog.text, c.relkind::pg_catalog.text,
      coalesce((select pg_catalog.json_agg(pg_catalog.json_build_array(a.attnum, a.attname))::pg_catalog.text
        from pg_catalog.pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped), '[]')
      from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace where c.oid = any(${oidArray(want.relations)})`);
  }
  if (want.functions.size > 0) {
    parts.push(`select 'f', p.oid::pg_catalog.text, n.nspname::pg_catalog.text, p.proname::pg_catalog.text, p.prokind::pg_catalog.text,
      pg_catalog.json_build_array(p.provolatile, p.proretset, pg_catalog.oidvectortypes(p.proargtypes))::pg_catalog.text
      from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace where p.oid = any(${oidArray(want.functions)})`);
  }
  if (want.operators.size > 0) {
    parts.push(`select 'o', o.oid::pg_catalog.text, n.nspname::pg_catalog.text, o.oprname::pg_catalog.text, o.oprcode::pg_catalog.oid::pg_catalog.text, ''
      from pg_catalog.pg_operator o join pg_catalog.pg_namespace n on n.oid = o.oprnamespace where o.oid = any(${oidArray(want.operators)})`);
  }
  if (want.types.size > 0) {
    parts.push(`select 't', t.oid::pg_catalog.text, n.nspname::pg_catalog.text, t.typname::pg_catalog.text, t.typtype::pg_catalog.text,
      pg_catalog.json_build_array(t.typrelid, t.typbasetype, t.typelem,
        -- a domain's CHECK expressions and its DEFAULT (computed for a column of the domain that has none of its own)
        (select pg_catalog.json_agg(d.e) from (
            select k.conbin::pg_catalog.text as e from pg_catalog.pg_constraint k where k.contypid = t.oid and k.contype = 'c'
            union all
            select t.typdefaultbin::pg_catalog.text where t.typtype = 'd' and t.typdefaultbin is not null) d),
        (select pg_catalog.json_agg(x.f) from (
            select pr.amproc::pg_catalog.oid as f
              from pg_catalog.pg_opclass oc join pg_catalog.pg_am am on am.oid = oc.opcmethod
              join pg_catalog.pg_amproc pr on pr.amprocfamily = oc.opcfamily and pr.amproclefttype = oc.opcintype and pr.amprocrighttype = oc.opcintype
             where oc.opcintype = t.oid and oc.opcdefault and am.amname in ('btree', 'hash') and pr.amprocnum in (1, 2)
            union
            select o.oprcode::pg_catalog.oid
              from pg_catalog.pg_opclass oc join pg_catalog.pg_am am on am.oid = oc.opcmethod
              join pg_catalog.pg_amop ao on ao.amopfamily = oc.opcfamily and ao.amoplefttype = oc.opcintype and ao.amoprighttype = oc.opcintype
              join pg_catalog.pg_operator o on o.oid = ao.amopopr
             where oc.opcintype = t.oid and oc.opcdefault and am.amname in ('btree', 'hash')
            union
            -- range_in, range comparison and DISTINCT compare bounds with the range's subtype operator class
            select pr.amproc::pg_catalog.oid
              from pg_catalog.pg_range r join pg_catalog.pg_opclass oc on oc.oid = r.rngsubopc
              join pg_catalog.pg_amproc pr on pr.amprocfamily = oc.opcfamily and pr.amproclefttype = oc.opcintype and pr.amprocrighttype = oc.opcintype
             where r.rngtypid = t.oid and pr.amprocnum = 1
            union
            select r.rngcanonical::pg_catalog.oid from pg_catalog.pg_range r where r.rngtypid = t.oid
            union
            select r.rngsubdiff::pg_catalog.oid from pg_catalog.pg_range r where r.rngtypid = t.oid
            union
            -- to_json, json_agg, row_to_json, … use a type's cast to json(b) when it has one
            select c.castfunc from pg_catalog.pg_cast c
             where c.castsource = t.oid and c.casttarget in ('pg_catalog.json'::pg_catalog.regtype, 'pg_catalog.jsonb'::pg_catalog.regtype)
          ) x join pg_catalog.pg_proc xp on xp.oid = x.f join pg_catalog.pg_language xl on xl.oid = xp.prolang
          -- C and internal functions are the server's own or a superuser's; SQL and PL code is what can be judged
          where xl.lanname not in ('c', 'internal')),
        (select pg_catalog.json_agg(y.m) from (
            select a.atttypid as m from pg_catalog.pg_attribute a where a.attrelid = t.typrelid and t.typrelid <> 0 and a.attnum > 0 and not a.attisdropped
            union
            select r.rngsubtype from pg_catalog.pg_range r where r.rngtypid = t.oid
            union
            select r.rngtypid from pg_catalog.pg_range r where r.rngmultitypid = t.oid) y))::pg_catalog.text
      from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace where t.oid = any(${oidArray(want.types)})`);
  }
  const out: FetchedOids = { relations: new Map(), functions: new Map(), operators: new Map(), types: new Map() };
  for (const o of want.relations) out.relations.set(o, null);
  for (const o of want.functions) out.functions.set(o, null);
  for (const o of want.operators) out.operators.set(o, null);
  for (const o of want.types) out.types.set(o, null);
  if (parts.length === 0) return out;
  const rows = await conn.rows(parts.join('\nunion all\n'));
  for (const [k, oidText, schema, name, kind, extra] of rows) {
    const oid = Number(oidText);
    if (schema == null || name == null || kind == null || extra == null) continue;
    if (k === 'r') {
      const cols = new Map<number, string>();
      for (const [attnum, attname] of JSON.parse(extra) as [unknown, string][]) cols.set(Number(attnum), attname);
      out.relations.set(oid, { schema, name, kind, columns: cols });
    } else if (k === 'f') {
      const [vol, retset, args] = JSON.parse(extra) as [string, boolean, string];
      if (vol !== 'i' && vol !== 's' && vol !== 'v') continue;
      out.functions.set(oid, {
        schema,
        name,
        kind,
        volatility: vol,
        returnsSet: retset,
        argTypes: args === '' ? [] : args.split(', '),
      });
    } else if (k === 'o') {
      out.operators.set(oid, { schema, name, funcOid: Number(kind) });
    } else if (k === 't') {
      // json_build_array writes OIDs as strings (oid has no JSON form); Number() reads both.
      const [relid, base, elem, cons, implicit, members] = JSON.parse(extra) as [
        unknown,
        unknown,
        unknown,
        string[] | null,
        unknown[] | null,
        unknown[] | null,
      ];
      const constraints: PgValue[] = (cons ?? []).map((text) =>
        readNodeTree(Buffer.from(text, 'utf8').toString('latin1')),
      );
      out.types.set(oid, {
        schema,
        name,
        typtype: kind,
        relid: Number(relid),
        baseType: Number(base),
        elemType: Number(elem),
        constraints,
        implicitFunctions: (implicit ?? []).map(Number).filter((n) => n !== 0),
        memberTypes: (members ?? []).map(Number).filter((n) => n !== 0),
      });
    }
  }
  return out;
}

export interface AnalysisPoolOptions extends AnalysisConnectionOptions {
  /** Most contexts kept open at once; the least recently used context's connections are closed past it. */
  maxContexts: number;
  /**
   * Connections per context. A statement whose analysis is slow (it waits for a lock, or a constant's input runs
   * a slow CHECK) holds only its own connection: others go to an idle one, opened on demand up to this many.
   */
  perContext?: number;
}

/** Analysis connections per context, opened on first use and replaced when they fail. */
export class AnalysisPool {
  private readonly contexts = new Map<string, Promise<AnalysisConnection>[]>();
  private closed = false;

  constructor(
    private readonly cfg: UpstreamConfig,
    private readonly opts: AnalysisPoolOptions,
  ) {}

  private open(_key: string, ctx: AnalysisContext, list: Promise<AnalysisConnection>[]): Promise<AnalysisConnection> {
    const opening = AnalysisConnection.open(this.cfg, ctx, this.opts).catch((err: unknown) => {
      const i = list.indexOf(opening);
      if (i >= 0) list.splice(i, 1);
      throw new AnalysisUnavailable(err instanceof ProxyError || err instanceof Error ? err.message : String(err));
    });
    list.push(opening);
    return opening;
  }

  async connection(ctx: AnalysisContext): Promise<AnalysisConnection> {
    if (this.closed) throw new AnalysisUnavailable('pgwarden is shutting down');
    const key = contextKey(ctx);
    let list = this.contexts.get(key);
    if (list === undefined) {
      list = [];
      this.contexts.set(key, list);
      while (this.contexts.size > this.opts.maxContexts) {
        const oldest = this.contexts.keys().next().value as string;
        const conns = this.contexts.get(oldest) ?? [];
        this.contexts.delete(oldest);
        for (const p of conns)
          void p.then(
            (c) => c.close(),
            () => undefined,
          );
      }
    } else {
      // Refresh the context's place in the LRU order.
      this.contexts.delete(key);
      this.contexts.set(key, list);
    }
    const settled = await Promise.all(
      list.map((p) =>
        p.then(
          (c) => c,
          () => undefined,
        ),
      ),
    );
    // Forget failed connections; their requests were already rejected.
    for (let i = settled.length - 1; i >= 0; i--) {
      const c = settled[i];
      if (c === undefined || c.isFailed) list.splice(i, 1);
    }
    const live = settled.filter((c): c is AnalysisConnection => c !== undefined && !c.isFailed);
    const idle = live.find((c) => c.pending === 0);
    if (idle !== undefined) return idle;
    if (list.length < (this.opts.perContext ?? 4)) return this.open(key, ctx, list);
    let best = live[0];
    for (const c of live) if (best === undefined || c.pending < best.pending) best = c;
    return best ?? this.open(key, ctx, list);
  }

  close(): void {
    this.closed = true;
    for (const list of this.contexts.values())
      for (const p of list)
        void p.then(
          (c) => c.close(),
          () => undefined,
        );
    this.contexts.clear();
  }
}
