// The fleet revocation source: a table in the upstream database, read incrementally (only rows changed since the last read) on LISTEN/NOTIFY and a timer, and in full, page by page, on connect, on a schedule and when rows were deleted or updated.
//
// Incremental reads: every row carries `changed_xid`, the id of the transaction that last wrote it (a BEFORE trigger
// sets it). A read in one REPEATABLE READ snapshot takes the rows with changed_xid >= the previous read's snapshot
// xmin, the oldest transaction still running then: whatever committed since, or was still open, is at or above it,
// whatever order the transactions commit in. Rows are re-read at most a little (idempotent), never missed.
// Incremental reads only add: a DELETE, an UPDATE that shortens or moves a revocation, or a TRUNCATE lifts it at the
// next full read (their NOTIFY asks for one, rate-limited; the schedule and SIGHUP also run one). Until then the old
// revocation stays in force, which is the safe direction.
//
// A NOTIFY from anyone costs at most an incremental read: notifications only set flags, one read runs at a time,
// reads are spaced, and full reads asked for by a notification come from a small budget refilled at a rate that
// keeps them under a tenth of the time. A full read pages through the table by primary key, yielding to the event
// loop between pages (scheduled and notification-asked ones pausing three times each page's duration), and the
// index in force keeps answering until the read sweeps what it did not see.
//
// Staleness: while the connection is down the last list read stays in force (fail closed for what is known) and
// revocations made meanwhile are seen on reconnect; health() exports that state for metrics and readiness.
import pg from 'pg';
import type { Identity } from '../auth/jwt.ts';
import type { UpstreamConfig } from '../config/types.ts';
import { pgSslOptions } from '../upstream/connect.ts';
import { CONSUMED_JTI_SQL } from './consumed.ts';
import { emptyChangeList, MAX_LISTED_CHANGES, RevocationIndex, type ChangeList } from './entry-index.ts';
import type { RevocationEntry } from './file.ts';
import {
  emitChange,
  reasonText,
  type RevocationHealth,
  type RevocationListener,
  type RevocationLog,
  type RevocationReadInfo,
  type RevocationSource,
} from './source.ts';
import { errorMessage } from '../../lib/error-message.ts';

export const DEFAULT_REVOCATION_CHANNEL = 'pgwarden_revocations';

/** A listener down for longer than this makes /readyz answer not ready: the replica may be missing revocations. */
export const REVOCATION_LISTENER_DOWN_NOT_READY_MS = 60_000;

export interface TableRevocationsOptions {
  /** How to reach the database: pgwarden's upstream credentials (see `revocationClientConfig`). */
  connection: pg.ClientConfig;
  schema: string;
  table: string;
  /** NOTIFY channel the trigger signals. Default 'pgwarden_revocations'. */
  channel?: string;
  /** Safety-net incremental read (a NOTIFY lost to a dead connection). Default 30 s; 0 turns it off. */
  refreshMs?: number;
  /** Scheduled full read (deletes whose NOTIFY was lost, expired rows pruned). Default 5 min; 0 turns it off. */
  fullRefreshMs?: number;
  /**
   * Full reads asked for by notifications (DELETE, UPDATE, TRUNCATE): one at once, then one per this interval or ten
   * times the last full read's duration, whichever is longer. Default 10 s.
   */
  minFullReadIntervalMs?: number;
  /** Least time between the end of one read and the start of the next. Default 50 ms. */
  minReadIntervalMs?: number;
  /** Rows per page of a read. Default 5,000. */
  pageSize?: number;
  /** Reconnect backoff bounds. Defaults 250 ms … 30 s (doubling, with jitter). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  log?: RevocationLog;
  /** Called after every read (metrics). */
  onRead?: (info: RevocationReadInfo) => void;
}

/** pg settings for the listener from the upstream config (a dedicated connection, never a client session's). */
export function revocationClientConfig(u: UpstreamConfig): pg.ClientConfig {
  return {
    host: u.host,
    port: u.port,
    database: u.database,
    user: u.user,
    // Read at each (re)connect, so a rotated upstream password is used (config/secrets.ts livePassword).
    password: u.password === undefined ? undefined : () => u.password ?? '',
    application_name: 'pgwarden:revocations',
    connectionTimeoutMillis: u.connectTimeout,
    keepAlive: true,
    // A wedged read must not hold the list hostage; the next tick retries. Each query is one page.
    query_timeout: 10_000,
    ssl: pgSslOptions(u),
  };
}

/**
 * SQL that creates the revocation table (one of jti/sub/agent per row), the `changed_xid` column and its BEFORE
 * trigger (incremental reads), a statement-level trigger that NOTIFYs on INSERT/UPDATE/DELETE/TRUNCATE with the
 * operation as payload, and closes it to PUBLIC. Idempotent, and it migrates a table created by an older pgwarden
 * (adds the column, its index and trigger). Run it as an administrator, then
 * `GRANT USAGE ON SCHEMA <schema> TO pgwarden; GRANT SELECT ON <schema>.<table> TO pgwarden;` — pgwarden needs only
 * SELECT, so the sessions it brokers (which log in as the same upstream user) can never delete a revocation.
 * Needs PostgreSQL 13 or later (xid8). It also creates the consumed-jti table of single-use tokens and its function
 * (CONSUMED_JTI_SQL); pgwarden additionally needs EXECUTE on that function to accept single-use tokens.
 */
export function REVOCATION_TABLE_SQL(
  schema: string,
  table: string,
  channel: string = DEFAULT_REVOCATION_CHANNEL,
): string {
  const s = pg.escapeIdentifier(schema);
  const t = `${s}.${pg.escapeIdentifier(table)}`;
  const fn = `${s}.${pg.escapeIdentifier(`${table}_notify`)}`;
  const trg = pg.escapeIdentifier(`${table}_notify`);
  const stampFn = `${s}.${pg.escapeIdentifier(`${table}_stamp`)}`;
  const stamp = pg.escapeIdentifier(`${table}_stamp`);
  const idx = pg.escapeIdentifier(`${table}_changed_xid`);
  const ch = pg.escapeLiteral(channel);
  return `CREATE SCHEMA IF NOT EXISTS ${s};
CREATE TABLE IF NOT EXISTS ${t} (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  jti         text CHECK (jti <> ''),
  sub         text CHECK (sub <> ''),
  agent       text CHECK (agent <> ''),
  reason      text,
  expires_at  timestamptz,
  created_at  timestamptz NOT NULL DEFAULT now(),
  created_by  text NOT NULL DEFAULT current_user,
  changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  CONSTRAINT ${pg.escapeIdentifier(`${table}_one_key`)} CHECK (num_nonnulls(jti, sub, agent) = 1)
);
ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS ${idx} ON ${t} (changed_xid);
REVOKE ALL ON ${t} FROM PUBLIC;
CREATE OR REPLACE FUNCTION ${stampFn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  NEW.changed_xid := pg_current_xact_id();
  RETURN NEW;
END
$fn$;
DROP TRIGGER IF EXISTS ${stamp} ON ${t};
CREATE TRIGGER ${stamp} BEFORE INSERT OR UPDATE ON ${t}
  FOR EACH ROW EXECUTE FUNCTION ${stampFn}();
CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify(${ch}, TG_OP);
  RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS ${trg} ON ${t};
CREATE TRIGGER ${trg} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${t}
  FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
${CONSUMED_JTI_SQL(schema, table)}`;
}

/**
 * Table rows as entries. A row is never skipped for what it holds: identifiers of any length (even empty) are
 * matched exactly, an empty or over-long reason only changes the message (see reasonText), and a row naming several
 * keys (a table made without the CHECK) revokes by each. Only a row naming none revokes nothing; it is logged.
 */
export function rowsToEntries(
  rows: readonly {
    jti: string | null;
    sub: string | null;
    agent: string | null;
    reason: string | null;
    expires_at: Date | number | null;
  }[],
  log: RevocationLog = () => {},
): RevocationEntry[] {
  const out: RevocationEntry[] = [];
  for (const r of rows) {
    const entry: RevocationEntry = {};
    if (r.jti !== null) entry.jti = r.jti;
    if (r.sub !== null) entry.sub = r.sub;
    if (r.agent !== null) entry.agent = r.agent;
    if (entry.jti === undefined && entry.sub === undefined && entry.agent === undefined) {
      log('warn', 'a revocation row names none of jti, sub, agent; it revokes nothing', {});
      continue;
    }
    const reason = reasonText(r.reason);
    if (reason !== undefined) entry.reason = reason;
    // 'infinity' arrives as a number, not a Date: no expiry, like NULL.
    const exp: unknown = r.expires_at;
    if (exp instanceof Date && Number.isFinite(exp.getTime())) entry.expiresAt = exp.toISOString();
    out.push(entry);
  }
  return out;
}

/**
 * Row of a read, as an array: id (text), jti, sub, agent, reason, expiry in ms since the epoch (null: never; in JSON
 * PostgreSQL writes an infinite double as the string "Infinity").
 */
type Row = [string | null, string | null, string | null, string | null, string | null, number | string | null];

/** Counts since open, for metrics and tests. */
export interface TableRevocationStats {
  notifications: number;
  fullReads: number;
  incrementalReads: number;
  failedReads: number;
}

const FULL_READ_BUDGET = 1;
/** A paced full read waits this many times each page's duration before the next page (a 25 % duty cycle). */
const FULL_READ_PACE = 3;
/** Longest pause between two pages of a paced full read (a page slowed by a busy database must not stall it for long). */
const MAX_PAUSE_MS = 1_000;
/** A full read asked for by a notification waits until full reads have taken at most this share of the time. */
const FULL_READ_SHARE = 0.1;

export class TableRevocations implements RevocationSource {
  #opts: TableRevocationsOptions;
  #log: RevocationLog;
  #index = new RevocationIndex();
  #listeners = new Set<RevocationListener>();
  #client: pg.Client | undefined;
  #closed = false;
  #connected = false;
  #downSince: number | undefined;
  #lastLoadedAt: number | undefined;
  #backoff: number;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #refreshTimer: NodeJS.Timeout | undefined;
  #fullTimer: NodeJS.Timeout | undefined;
  #budgetTimer: NodeJS.Timeout | undefined;
  /** The table has changed_xid (incremental reads) and id (paged full reads); learnt at each connect. */
  #hasXid = false;
  #hasId = false;
  /** Snapshot xmin of the last incremental (or first full) read: the next incremental read starts there. */
  #watermark: string | undefined;
  #wantIncremental = false;
  /** A full read wanted: 'now' (SIGHUP), 'scheduled' (paced), 'asked' by a notification (budgeted, paced). */
  #wantFull: 'now' | 'scheduled' | 'asked' | undefined;
  #fullWaiters: (() => void)[] = [];
  #pumping: Promise<void> | undefined;
  #lastReadEnd = 0;
  #budget = FULL_READ_BUDGET;
  #lastFullMs = 0;
  #stats: TableRevocationStats = { notifications: 0, fullReads: 0, incrementalReads: 0, failedReads: 0 };
  readonly #t: string;
  readonly #listenSql: string;
  readonly #channel: string;

  private constructor(opts: TableRevocationsOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? (() => {});
    this.#backoff = opts.minBackoffMs ?? 250;
    this.#t = `${pg.escapeIdentifier(opts.schema)}.${pg.escapeIdentifier(opts.table)}`;
    this.#channel = opts.channel ?? DEFAULT_REVOCATION_CHANNEL;
    this.#listenSql = `LISTEN ${pg.escapeIdentifier(this.#channel)}`;
  }

  /**
   * Connects, LISTENs and reads the table; throws if that first attempt fails (missing table, no privilege, database
   * down), so a misconfiguration is reported at startup instead of running without revocations. Later drops reconnect.
   */
  static async open(opts: TableRevocationsOptions): Promise<TableRevocations> {
    const src = new TableRevocations(opts);
    await src.#connect();
    src.#armTimers();
    return src;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Milliseconds since the epoch of the last successful read. */
  get lastLoadedAt(): number | undefined {
    return this.#lastLoadedAt;
  }

  /** Every entry, one per identifier (built on demand; O(entries)). */
  get entries(): readonly RevocationEntry[] {
    return this.#index.entries;
  }

  /** Identifiers revoked now. */
  get size(): number {
    return this.#index.size;
  }

  /** Whether reads are incremental (the table has changed_xid) or every read is a full one (a table not yet migrated). */
  get incremental(): boolean {
    return this.#hasXid;
  }

  get stats(): Readonly<TableRevocationStats> {
    return { ...this.#stats };
  }

  match(id: Identity, now = Date.now()): { reason: string } | undefined {
    return this.#index.match(id, now);
  }

  onChange(listener: RevocationListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  health(): RevocationHealth {
    return {
      source: 'table',
      up: this.#connected,
      downSince: this.#downSince,
      entries: this.#index.size,
      lastReadAt: this.#lastLoadedAt,
      notifications: this.#stats.notifications,
    };
  }

  /** Re-reads the whole table now (SIGHUP); resolves once a full read that started after this call has ended. */
  reload(): Promise<void> {
    if (this.#closed || !this.#client) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.#fullWaiters.push(resolve);
      this.#wantFull = 'now';
      this.#kick();
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const t of [this.#reconnectTimer, this.#fullTimer, this.#budgetTimer]) if (t) clearTimeout(t);
    if (this.#refreshTimer) clearInterval(this.#refreshTimer);
    this.#listeners.clear();
    this.#resolveFullWaiters();
    const c = this.#client;
    this.#client = undefined;
    this.#connected = false;
    if (c) await c.end().catch(() => {});
    await this.#pumping;
  }

  async #connect(): Promise<void> {
    const client = new pg.Client(this.#opts.connection);
    // Attach before connecting: a terminated backend emits 'error' and then 'end'; either one means reconnect.
    client.on('error', (err) => this.#lost(client, err));
    client.on('end', () => this.#lost(client, undefined));
    client.on('notification', (n) => {
      if (n.channel !== this.#channel) return;
      this.#stats.notifications++;
      // Anyone with CONNECT can NOTIFY: the payload is only a hint, and what it can cost is bounded (see #pump).
      if (n.payload === 'DELETE' || n.payload === 'UPDATE' || n.payload === 'TRUNCATE') this.#wantFull ??= 'asked';
      this.#wantIncremental = true;
      this.#kick();
    });
    try {
      await client.connect();
      await client.query(this.#listenSql);
      const cols = await client.query<{ attname: string }>(
        `SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attname IN ('id', 'changed_xid') AND attnum > 0 AND NOT attisdropped`,
        [this.#t],
      );
      const names = new Set(cols.rows.map((r) => r.attname));
      this.#hasXid = names.has('changed_xid');
      this.#hasId = names.has('id');
      if (!this.#hasXid) {
        this.#log(
          'warn',
          'revocation table has no changed_xid column: every read is a full read; run REVOCATION_TABLE_SQL again to migrate it (docs/revocation.md)',
          {
            schema: this.#opts.schema,
            table: this.#opts.table,
          },
        );
      }
      // LISTEN first, then read: a change committed between the two is either in the read or NOTIFYs us. Whatever
      // happened while disconnected is in this full read; incremental reads continue from its snapshot.
      this.#watermark = undefined;
      // Not paced: the list in force may be missing what changed while disconnected. At open there are no listeners
      // yet; on reconnect they hear what changed meanwhile, so live sessions revoked meanwhile are ended.
      await this.#fullRead(client, false);
      if (this.#closed) {
        await client.end().catch(() => {});
        return;
      }
      this.#client = client;
      this.#connected = true;
      this.#downSince = undefined;
      this.#backoff = this.#opts.minBackoffMs ?? 250;
      this.#log('info', 'revocation table listener connected', {
        schema: this.#opts.schema,
        table: this.#opts.table,
        entries: this.#index.size,
        incremental: this.#hasXid,
      });
      if (this.#wantIncremental || this.#wantFull) this.#kick();
    } catch (err) {
      client.removeAllListeners('end');
      client.removeAllListeners('error');
      client.removeAllListeners('notification');
      client.on('error', () => {});
      await client.end().catch(() => {});
      throw err;
    }
  }

  #lost(client: pg.Client, err: Error | undefined): void {
    if (client !== this.#client || this.#closed) return;
    this.#client = undefined;
    this.#connected = false;
    this.#downSince = Date.now();
    client.removeAllListeners('notification');
    // pg may emit 'error' again while ending; swallow it, the connection is already abandoned.
    client.on('error', () => {});
    client.end().catch(() => {});
    this.#resolveFullWaiters();
    this.#log('warn', 'revocation table listener lost its connection; keeping the last list and reconnecting', {
      error: err?.message,
      entries: this.#index.size,
    });
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#reconnectTimer) return;
    const max = this.#opts.maxBackoffMs ?? 30_000;
    // Full jitter on the upper half: a fleet restarted by a database failover does not reconnect in lockstep.
    const delay = Math.min(this.#backoff, max) * (0.5 + Math.random() / 2);
    this.#backoff = Math.min(this.#backoff * 2, max);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (this.#closed) return;
      this.#connect().catch((err: unknown) => {
        this.#log('warn', 'revocation table reconnect failed', {
          error: errorMessage(err),
          retryInMs: Math.round(this.#backoff),
        });
        this.#scheduleReconnect();
      });
    }, delay);
    this.#reconnectTimer.unref();
  }

  #armTimers(): void {
    const refresh = this.#opts.refreshMs ?? 30_000;
    if (refresh > 0) {
      this.#refreshTimer = setInterval(() => {
        this.#wantIncremental = true;
        this.#kick();
      }, refresh);
      this.#refreshTimer.unref();
    }
    this.#scheduleFull();
  }

  #scheduleFull(): void {
    const full = this.#opts.fullRefreshMs ?? 300_000;
    if (full <= 0 || this.#closed) return;
    if (this.#fullTimer) clearTimeout(this.#fullTimer);
    this.#fullTimer = setTimeout(() => {
      this.#fullTimer = undefined;
      if (this.#wantFull !== 'now') this.#wantFull = 'scheduled';
      this.#kick();
    }, full);
    this.#fullTimer.unref();
  }

  /** Starts the read loop unless it runs already (then the flags it will see are set: one read queued at most). */
  #kick(): void {
    if (this.#pumping || this.#closed || !this.#client) return;
    this.#pumping = this.#pump().finally(() => {
      this.#pumping = undefined;
      // A flag set while the loop was finishing (after its last check) starts it again.
      if (
        (this.#wantIncremental || this.#wantFull === 'now' || this.#wantFull === 'scheduled') &&
        this.#client &&
        !this.#closed
      )
        this.#kick();
    });
  }

  async #pump(): Promise<void> {
    for (;;) {
      const client = this.#client;
      if (!client || this.#closed) return;
      // Reads are spaced: a storm of notifications is at most one read per interval, whatever its rate.
      const wait = this.#lastReadEnd + (this.#opts.minReadIntervalMs ?? 50) - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (this.#client !== client || this.#closed) return;
      let full = this.#wantFull === 'now' || this.#wantFull === 'scheduled';
      const paced = this.#wantFull !== 'now';
      if (!full && this.#wantFull === 'asked') {
        if (this.#budget > 0) {
          this.#budget--;
          full = true;
        } else this.#refillLater();
      }
      // A table without changed_xid can only be read in full; notifications then draw on the same budget.
      if (!full && this.#wantIncremental && !this.#hasXid) {
        this.#wantIncremental = false;
        this.#wantFull ??= 'asked';
        if (this.#budget > 0) {
          this.#budget--;
          full = true;
        } else {
          this.#refillLater();
          return;
        }
      }
      try {
        if (full) await this.#fullRead(client, paced);
        else if (this.#wantIncremental) await this.#incrementalRead(client);
        else return;
      } catch (err) {
        // Closed, or already replaced by a new connection: nothing to report.
        if (this.#closed || this.#client !== client) return;
        // A failed read on a live-looking connection means it is not live: drop it and reconnect.
        this.#log('warn', 'revocation table read failed', { error: errorMessage(err) });
        this.#lost(client, err instanceof Error ? err : new Error(String(err)));
        return;
      } finally {
        this.#lastReadEnd = Date.now();
      }
    }
  }

  /** Gives back one full read to the notification budget after the interval that keeps full reads rare. */
  #refillLater(): void {
    if (this.#budgetTimer || this.#closed) return;
    const interval = Math.max(this.#opts.minFullReadIntervalMs ?? 10_000, this.#lastFullMs / FULL_READ_SHARE);
    this.#budgetTimer = setTimeout(() => {
      this.#budgetTimer = undefined;
      this.#budget = Math.min(FULL_READ_BUDGET, this.#budget + 1);
      if (this.#budget < FULL_READ_BUDGET) this.#refillLater();
      if (this.#wantFull) this.#kick();
    }, interval);
    this.#budgetTimer.unref();
  }

  #resolveFullWaiters(): void {
    const waiters = this.#fullWaiters;
    this.#fullWaiters = [];
    for (const w of waiters) w();
  }

  #select(): string {
    // date_part gives double precision: 'infinity' arrives as Infinity, NULL as null; no Date object per row.
    // The id is aliased: ORDER BY id must sort by the bigint column, not by this text. A table made without one
    // (not the shipped definition) is read without it.
    const id = this.#hasId ? 'id::text' : 'NULL::text';
    return `SELECT ${id} AS row_id, jti, sub, agent, reason, date_part('epoch', expires_at) * 1000 FROM ${this.#t}`;
  }

  /**
   * Reads every row, page by page in primary-key order (each page its own statement, so notifications and
   * incremental reads interleave), marking what it sees; then sweeps what it did not see and what has expired.
   * `paced`: pause between pages (scheduled and notification-asked reads; not at connect or on SIGHUP).
   */
  async #fullRead(client: pg.Client, paced: boolean): Promise<void> {
    const started = performance.now();
    this.#wantFull = undefined;
    const waiters = this.#fullWaiters;
    this.#fullWaiters = [];
    const added = emptyChangeList();
    const live = '(expires_at IS NULL OR expires_at > now())';
    let ok = false;
    let busyMs = 0;
    const gen = this.#index.beginFullRead();
    try {
      if (this.#hasXid) {
        const x = await client.query<{ x: string }>('SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS x');
        // On (re)connect incremental reads start from this read's start: what commits meanwhile is read by them.
        this.#watermark ??= x.rows[0]?.x;
      }
      const size = this.#opts.pageSize ?? 5_000;
      if (!this.#hasId) {
        const res = await client.query<Row>({ text: `${this.#select()} WHERE ${live}`, rowMode: 'array' });
        for (const row of res.rows) this.#applyRow(row, added);
      } else {
        // Each page arrives as one JSON text: JSON.parse is several times cheaper than decoding as many DataRows,
        // which on a loaded 2-core machine was most of a full read's cost (and of the sessions' lost throughput).
        const page =
          `SELECT count(*)::int, max(id)::text, coalesce(json_agg(json_build_array(row_id, jti, sub, agent, reason, exp)), '[]')::text ` +
          `FROM (SELECT id, id::text AS row_id, jti, sub, agent, reason, date_part('epoch', expires_at) * 1000 AS exp FROM ${this.#t} ` +
          `WHERE id > $1 AND ${live} ORDER BY id LIMIT ${size}) p`;
        let after = '-9223372036854775808';
        for (;;) {
          const pageStarted = performance.now();
          const res = await client.query<[number, string | null, string]>({
            text: page,
            values: [after],
            rowMode: 'array',
          });
          const [n, last, json] = res.rows[0] ?? [0, null, '[]'];
          const rows = JSON.parse(json) as Row[];
          for (let i = 0; i < rows.length; i++) this.#applyRow(rows[i] as Row, added);
          busyMs += performance.now() - pageStarted;
          if (n < size || last === null) break;
          after = last;
          // Scheduled and notification-asked reads are paced: the index in force answers meanwhile, and sessions keep
          // most of the CPU (this process's and the database's) however large the table.
          if (paced) {
            await new Promise((r) =>
              setTimeout(r, Math.min(MAX_PAUSE_MS, FULL_READ_PACE * (performance.now() - pageStarted))),
            );
            // Closed or reconnected during the pause: this read is over (the new connection makes its own).
            if (this.#closed || this.#client !== client)
              throw new Error('revocation table listener closed or reconnected during a full read');
          }
          // A revocation inserted meanwhile is enforced now, not after the last page.
          if (this.#wantIncremental && this.#hasXid && this.#watermark !== undefined)
            await this.#incrementalRead(client);
        }
      }
      const removed = await this.#index.sweep(Date.now(), gen);
      ok = true;
      this.#stats.fullReads++;
      this.#lastLoadedAt = Date.now();
      // The refill interval of the notification budget scales with the work a full read takes, pauses excluded.
      this.#lastFullMs = this.#hasId ? busyMs : performance.now() - started;
      this.#scheduleFull();
      if (added.count > 0 || removed.count > 0)
        emitChange(this.#listeners, this.#log, 'table', this.#index.size, added, removed);
    } finally {
      if (!ok) {
        this.#index.abandonFullRead(gen);
        this.#stats.failedReads++;
      }
      this.#opts.onRead?.({ source: 'table', kind: 'full', ok, ms: performance.now() - started });
      for (const w of waiters) w();
    }
  }

  /** Rows written by transactions at or after the watermark, in one snapshot, fetched in pages from a cursor. */
  async #incrementalRead(client: pg.Client): Promise<void> {
    const started = performance.now();
    this.#wantIncremental = false;
    const w = this.#watermark;
    let ok = false;
    try {
      if (w === undefined || !/^\d+$/.test(w)) throw new Error('internal error: no incremental read watermark');
      const size = this.#opts.pageSize ?? 5_000;
      const added = emptyChangeList();
      // One round trip for the usual case: snapshot, its xmin, the cursor and its first page.
      const results = (await client.query({
        text:
          'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;' +
          'SELECT pg_snapshot_xmin(pg_current_snapshot())::text;' +
          `DECLARE pgwarden_revocations_changed NO SCROLL CURSOR FOR ${this.#select()} WHERE changed_xid >= '${w}'::xid8 AND (expires_at IS NULL OR expires_at > now());` +
          `FETCH ${size} FROM pgwarden_revocations_changed`,
        rowMode: 'array',
      })) as unknown as pg.QueryArrayResult[];
      const next = results[1]?.rows[0]?.[0];
      let page = results[3]?.rows as Row[] | undefined;
      if (typeof next !== 'string' || page === undefined)
        throw new Error('unexpected answer to the incremental revocation read');
      for (;;) {
        for (const row of page) this.#applyRow(row, added);
        if (page.length < size) break;
        page = (await client.query<Row>({ text: `FETCH ${size} FROM pgwarden_revocations_changed`, rowMode: 'array' }))
          .rows;
      }
      // Live sessions are checked now, not after one more round trip: the rows are in force already.
      if (added.count > 0) emitChange(this.#listeners, this.#log, 'table', this.#index.size, added, emptyChangeList());
      await client.query('COMMIT');
      this.#watermark = next;
      ok = true;
      this.#stats.incrementalReads++;
      this.#lastLoadedAt = Date.now();
    } finally {
      if (!ok) this.#stats.failedReads++;
      this.#opts.onRead?.({ source: 'table', kind: 'incremental', ok, ms: performance.now() - started });
    }
  }

  /** One row into the index, by each key it names (a row naming none revokes nothing and is logged). */
  #applyRow(row: Row, added: ChangeList): void {
    const [, jti, sub, agent, rawReason, exp] = row;
    if (jti === null && sub === null && agent === null) {
      this.#log('warn', 'a revocation row names none of jti, sub, agent; it revokes nothing', { id: row[0] });
      return;
    }
    const reason = reasonText(rawReason);
    const expiresMs = exp === null ? Number.POSITIVE_INFINITY : typeof exp === 'string' ? Number(exp) : exp;
    let changed = false;
    if (jti !== null && this.#index.addKey('jti', jti, expiresMs, reason)) changed = true;
    if (sub !== null && this.#index.addKey('sub', sub, expiresMs, reason)) changed = true;
    if (agent !== null && this.#index.addKey('agent', agent, expiresMs, reason)) changed = true;
    if (!changed) return;
    added.count++;
    if (added.listed.length < MAX_LISTED_CHANGES) {
      const e: RevocationEntry = {};
      if (jti !== null) e.jti = jti;
      if (sub !== null) e.sub = sub;
      if (agent !== null) e.agent = agent;
      if (reason !== undefined) e.reason = reason;
      if (Number.isFinite(expiresMs)) e.expiresAt = new Date(expiresMs).toISOString();
      added.listed.push(e);
    }
  }
}

/**
 * Why /readyz should say not ready because of revocations: a table listener down for longer than
 * REVOCATION_LISTENER_DOWN_NOT_READY_MS (this replica may be missing revocations made since). Undefined when fine.
 */
export function revocationListenerNotReady(
  sources: readonly RevocationSource[],
  now = Date.now(),
  boundMs = REVOCATION_LISTENER_DOWN_NOT_READY_MS,
): string | undefined {
  for (const s of sources) {
    const h = s.health?.();
    if (h === undefined || h.source !== 'table' || h.up || h.downSince === undefined) continue;
    const down = now - h.downSince;
    if (down > boundMs)
      return `revocation table listener down for ${Math.round(down / 1000)} s (revocations made since may be missing)`;
  }
  return undefined;
}
