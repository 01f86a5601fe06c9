// The fleet revocation source: a table in the upstream database, re-read on LISTEN/NOTIFY, on reconnect and on a timer, so every pgwarden sees a revocation within a second.
//
// Staleness: while the connection is down the last list read stays in force (fail closed for what is known) and
// revocations made meanwhile are seen on reconnect; the safety-net timer also covers a NOTIFY lost to a silently
// dead connection. `connected` and `lastLoadedAt` let the lead export that state as health/metrics.
import pg from 'pg';
import type { Identity } from './auth/jwt.ts';
import type { UpstreamConfig } from './config/types.ts';
import { pgSslOptions } from './upstream/connect.ts';
import { reasonText, RevocationIndex, type RevocationEntry, type RevocationListener, type RevocationLog, type RevocationSource } from './revocation.ts';

export const DEFAULT_REVOCATION_CHANNEL = 'pgwarden_revocations';

export interface TableRevocationsOptions {
  /** How to reach the database: pgwarden's upstream credentials (see `revocationClientConfig`). */
  connection: pg.ClientConfig;
  schema: string;
  table: string;
  /** NOTIFY channel the trigger signals. Default 'pgwarden_revocations'. */
  channel?: string;
  /** Safety-net re-read interval. Default 30 s. */
  refreshMs?: number;
  /** Reconnect backoff bounds. Defaults 250 ms … 30 s (doubling, with jitter). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  log?: RevocationLog;
}

/** pg settings for the listener from the upstream config (a dedicated connection, never a client session's). */
export function revocationClientConfig(u: UpstreamConfig): pg.ClientConfig {
  return {
    host: u.host,
    port: u.port,
    database: u.database,
    user: u.user,
    password: u.password,
    application_name: 'pgwarden:revocations',
    connectionTimeoutMillis: u.connectTimeout,
    keepAlive: true,
    // A wedged read must not hold the list hostage; the next tick retries.
    query_timeout: 10_000,
    ssl: pgSslOptions(u),
  };
}

/**
 * SQL that creates the revocation table (one of jti/sub/agent per row), a statement-level trigger that NOTIFYs on
 * INSERT/UPDATE/DELETE/TRUNCATE, and closes it to PUBLIC. Idempotent. Run it as an administrator, then
 * `GRANT USAGE ON SCHEMA <schema> TO pgwarden; GRANT SELECT ON <schema>.<table> TO pgwarden;` — pgwarden needs only
 * SELECT, so the sessions it brokers (which log in as the same upstream user) can never delete a revocation.
 */
export function REVOCATION_TABLE_SQL(schema: string, table: string, channel: string = DEFAULT_REVOCATION_CHANNEL): string {
  const s = pg.escapeIdentifier(schema);
  const t = `${s}.${pg.escapeIdentifier(table)}`;
  const fn = `${s}.${pg.escapeIdentifier(`${table}_notify`)}`;
  const trg = pg.escapeIdentifier(`${table}_notify`);
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
  CONSTRAINT ${pg.escapeIdentifier(`${table}_one_key`)} CHECK (num_nonnulls(jti, sub, agent) = 1)
);
REVOKE ALL ON ${t} FROM PUBLIC;
CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify(${ch}, TG_OP);
  RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS ${trg} ON ${t};
CREATE TRIGGER ${trg} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${t}
  FOR EACH STATEMENT EXECUTE FUNCTION ${fn}();
`;
}

/**
 * Table rows as entries. A row is never skipped for what it holds: identifiers of any length (even empty) are
 * matched exactly, an empty or over-long reason only changes the message (see reasonText), and a row naming several
 * keys (a table made without the CHECK) revokes by each. Only a row naming none revokes nothing; it is logged.
 */
export function rowsToEntries(
  rows: readonly { jti: string | null; sub: string | null; agent: string | null; reason: string | null; expires_at: Date | number | null }[],
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

export class TableRevocations implements RevocationSource {
  #opts: TableRevocationsOptions;
  #log: RevocationLog;
  #index = new RevocationIndex([]);
  #listeners = new Set<RevocationListener>();
  #client: pg.Client | undefined;
  #closed = false;
  #connected = false;
  #lastLoadedAt: number | undefined;
  #backoff: number;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #refreshTimer: NodeJS.Timeout | undefined;
  #refreshing: Promise<void> | undefined;
  #refreshAgain = false;
  readonly #selectSql: string;
  readonly #listenSql: string;

  private constructor(opts: TableRevocationsOptions) {
    this.#opts = opts;
    this.#log = opts.log ?? (() => {});
    this.#backoff = opts.minBackoffMs ?? 250;
    const t = `${pg.escapeIdentifier(opts.schema)}.${pg.escapeIdentifier(opts.table)}`;
    this.#selectSql = `SELECT jti, sub, agent, reason, expires_at FROM ${t} WHERE expires_at IS NULL OR expires_at > now()`;
    this.#listenSql = `LISTEN ${pg.escapeIdentifier(opts.channel ?? DEFAULT_REVOCATION_CHANNEL)}`;
  }

  /**
   * Connects, LISTENs and reads the table; throws if that first attempt fails (missing table, no privilege, database
   * down), so a misconfiguration is reported at startup instead of running without revocations. Later drops reconnect.
   */
  static async open(opts: TableRevocationsOptions): Promise<TableRevocations> {
    const src = new TableRevocations(opts);
    await src.#connect();
    src.#armRefreshTimer();
    return src;
  }

  get connected(): boolean {
    return this.#connected;
  }

  /** Milliseconds since the epoch of the last successful read. */
  get lastLoadedAt(): number | undefined {
    return this.#lastLoadedAt;
  }

  get entries(): readonly RevocationEntry[] {
    return this.#index.entries;
  }

  match(id: Identity, now = Date.now()): { reason: string } | undefined {
    return this.#index.match(id, now);
  }

  onChange(listener: RevocationListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Re-reads the table now (SIGHUP). Concurrent calls coalesce into at most one more read. */
  async reload(): Promise<void> {
    await this.#refresh();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
    if (this.#refreshTimer) clearInterval(this.#refreshTimer);
    this.#listeners.clear();
    const c = this.#client;
    this.#client = undefined;
    this.#connected = false;
    if (c) await c.end().catch(() => {});
  }

  async #connect(): Promise<void> {
    const client = new pg.Client(this.#opts.connection);
    // Attach before connecting: a terminated backend emits 'error' and then 'end'; either one means reconnect.
    client.on('error', (err) => this.#lost(client, err));
    client.on('end', () => this.#lost(client, undefined));
    client.on('notification', (n) => {
      if (n.channel === (this.#opts.channel ?? DEFAULT_REVOCATION_CHANNEL)) void this.#refresh();
    });
    try {
      await client.connect();
      await client.query(this.#listenSql);
      // LISTEN first, then read: a change committed between the two is either in the read or NOTIFYs us.
      const rows = await this.#read(client);
      if (this.#closed) {
        await client.end().catch(() => {});
        return;
      }
      this.#client = client;
      this.#connected = true;
      this.#backoff = this.#opts.minBackoffMs ?? 250;
      this.#apply(rows);
      this.#log('info', 'revocation table listener connected', { schema: this.#opts.schema, table: this.#opts.table, entries: rows.length });
    } catch (err) {
      client.removeAllListeners('end');
      client.removeAllListeners('error');
      client.on('error', () => {});
      await client.end().catch(() => {});
      throw err;
    }
  }

  #lost(client: pg.Client, err: Error | undefined): void {
    if (client !== this.#client || this.#closed) return;
    this.#client = undefined;
    this.#connected = false;
    client.removeAllListeners('notification');
    // pg may emit 'error' again while ending; swallow it, the connection is already abandoned.
    client.on('error', () => {});
    client.end().catch(() => {});
    this.#log('warn', 'revocation table listener lost its connection; keeping the last list and reconnecting', {
      error: err?.message,
      entries: this.#index.entries.length,
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
        this.#log('warn', 'revocation table reconnect failed', { error: err instanceof Error ? err.message : String(err), retryInMs: Math.round(this.#backoff) });
        this.#scheduleReconnect();
      });
    }, delay);
    this.#reconnectTimer.unref();
  }

  #armRefreshTimer(): void {
    const ms = this.#opts.refreshMs ?? 30_000;
    if (ms <= 0) return;
    this.#refreshTimer = setInterval(() => void this.#refresh(), ms);
    this.#refreshTimer.unref();
  }

  /** One read at a time; a NOTIFY during a read schedules exactly one more, so bursts cost two reads. */
  #refresh(): Promise<void> {
    if (this.#refreshing) {
      this.#refreshAgain = true;
      return this.#refreshing;
    }
    const run = async () => {
      do {
        this.#refreshAgain = false;
        const client = this.#client;
        if (!client || this.#closed) return;
        try {
          this.#apply(await this.#read(client));
        } catch (err) {
          // A failed read on a live-looking connection means it is not live: drop it and reconnect.
          this.#log('warn', 'revocation table read failed', { error: err instanceof Error ? err.message : String(err) });
          this.#lost(client, err instanceof Error ? err : new Error(String(err)));
          return;
        }
      } while (this.#refreshAgain);
    };
    this.#refreshing = run().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async #read(client: pg.Client): Promise<RevocationEntry[]> {
    const res = await client.query<{ jti: string | null; sub: string | null; agent: string | null; reason: string | null; expires_at: Date | number | null }>(this.#selectSql);
    return rowsToEntries(res.rows, this.#log);
  }

  #apply(entries: RevocationEntry[]): void {
    this.#lastLoadedAt = Date.now();
    const next = new RevocationIndex(entries);
    const { added, removed } = this.#index.diff(next);
    if (added.length === 0 && removed.length === 0) return;
    this.#index = next;
    const change = { source: 'table' as const, entries: next.entries.length, added, removed };
    for (const l of [...this.#listeners]) {
      try {
        l(change);
      } catch (err) {
        this.#log('error', 'revocation change listener failed', { error: err instanceof Error ? err.message : String(err) });
      }
    }
  }
}
