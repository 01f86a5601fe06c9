// Single-use tokens: consuming a token's jti at its first login, atomically across replicas (a unique key in an upstream table) or in memory for one replica.
import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import type { Identity } from '../auth/jwt.ts';
import { ProxyError } from '../../lib/errors.ts';
import { errorMessage } from '../../lib/error-message.ts';
import { isConnectionLoss } from '../../lib/sqlstate.ts';
import type { RevocationLog } from './source.ts';

/**
 * Rows are purged this long after their token expired, by the database's clock. pgwarden refuses a token once its own
 * clock passes exp, so a row outlives every login that could replay it unless the clocks differ by more than this.
 */
export const CONSUMED_PURGE_MARGIN_SECONDS = 3600;

/** 'consumed': this login is the token's first and only one; 'used': it was consumed before (here or on another replica). */
export type ConsumeOutcome = 'consumed' | 'used';

/** Records the consumption of a jti; throws when the consumption could not be recorded (the login is then refused). */
export interface JtiConsumer {
  readonly kind: 'table' | 'memory';
  /**
   * `exp`: the token's expiry, seconds since the epoch (the record is kept until then, and a margin). `by`: who consumes,
   * unique to this login attempt, so a retry after a lost answer recognises its own row.
   */
  consume(jti: string, exp: number, by: string): Promise<ConsumeOutcome>;
  close(): Promise<void>;
}

/**
 * The upstream password through a rotation (config/secrets.ts UpstreamPassword): the one the server last accepted,
 * and the other one to try after a 28P01.
 */
export interface ConsumerPassword {
  readonly current: string | undefined;
  alternative(used: string | undefined): Promise<string | undefined>;
  accepted(password: string | undefined): void;
}

/**
 * The key a jti is consumed under: its SHA-256. A jti may be any string a token can carry (64 KiB, NUL characters),
 * which neither a btree key (about 2.7 kB at most) nor PostgreSQL text (no NUL) can hold; the digest always fits.
 */
function jtiKey(jti: string): Buffer {
  return createHash('sha256').update(jti, 'utf8').digest();
}

/** The jti as written to the table for operators: at most 256 characters, NUL replaced (the key is the digest). */
function displayJti(jti: string): string {
  const clean = jti.replace(/\0/g, '\uFFFD');
  return clean.length > 256 ? `${clean.slice(0, 255)}…` : clean;
}

/** Name of the consumed-jti table and its function for the revocation table `table`. */
function consumedNames(schema: string, table: string): { table: string; fn: string } {
  const s = pg.escapeIdentifier(schema);
  return {
    table: `${s}.${pg.escapeIdentifier(`${table}_consumed`)}`,
    fn: `${s}.${pg.escapeIdentifier(`${table}_consume`)}`,
  };
}

/**
 * SQL for the consumed-jti table beside the revocation table `table` and the one function pgwarden calls. The function
 * is SECURITY DEFINER so pgwarden needs only EXECUTE on it, never INSERT or DELETE on the table: the sessions pgwarden
 * brokers log in as the same upstream user and must never be able to delete a consumption (which would make a token
 * usable again). Idempotent; run as an administrator with REVOCATION_TABLE_SQL, then
 * `GRANT EXECUTE ON FUNCTION <schema>.<table>_consume(bytea, text, timestamptz, text) TO pgwarden`.
 */
export function CONSUMED_JTI_SQL(schema: string, table: string): string {
  const n = consumedNames(schema, table);
  const idx = pg.escapeIdentifier(`${table}_consumed_expires_at`);
  const margin = `${CONSUMED_PURGE_MARGIN_SECONDS} seconds`;
  return `CREATE TABLE IF NOT EXISTS ${n.table} (
  jti_sha256  bytea PRIMARY KEY CHECK (length(jti_sha256) = 32),
  jti         text NOT NULL,
  expires_at  timestamptz NOT NULL,
  consumed_at timestamptz NOT NULL DEFAULT now(),
  consumed_by text
);
CREATE INDEX IF NOT EXISTS ${idx} ON ${n.table} (expires_at);
REVOKE ALL ON ${n.table} FROM PUBLIC;
CREATE OR REPLACE FUNCTION ${n.fn}(p_key bytea, p_jti text, p_expires_at timestamptz, p_by text) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  won boolean;
BEGIN
  IF p_key IS NULL OR length(p_key) <> 32 OR p_jti IS NULL OR p_expires_at IS NULL THEN
    RAISE EXCEPTION 'pgwarden: a consumed jti needs its SHA-256, the jti and an expiry';
  END IF;
  -- Expired consumptions go at insert time: the table holds only tokens that could still be presented.
  DELETE FROM ${n.table} WHERE expires_at < now() - interval '${margin}';
  -- The primary key decides between concurrent logins on any number of replicas: exactly one insert returns a row.
  INSERT INTO ${n.table} (jti_sha256, jti, expires_at, consumed_by) VALUES (p_key, p_jti, p_expires_at, p_by)
    ON CONFLICT (jti_sha256) DO NOTHING RETURNING true INTO won;
  IF won IS NULL THEN
    -- The same login asking again (its first answer was lost with the connection) finds its own row: still its use.
    SELECT c.consumed_by = p_by INTO won FROM ${n.table} c WHERE c.jti_sha256 = p_key;
  END IF;
  RETURN coalesce(won, false);
END
$fn$;
REVOKE ALL ON FUNCTION ${n.fn}(bytea, text, timestamptz, text) FROM PUBLIC;
`;
}

/**
 * The fleet consumer: one dedicated connection (never a client session's, never the revocation listener's, whose reads
 * run in read-only transactions), opened at first use and again after a loss. Every failure throws: fail closed.
 */
export class TableJtiConsumer implements JtiConsumer {
  readonly kind = 'table';
  #opts: ConsumerOptions;
  #conn: Conn | undefined;
  #closed = false;
  /** The password the newest connection logged in with (or tried to). */
  #lastPassword: string | undefined;
  readonly #sql: string;

  constructor(opts: ConsumerOptions) {
    this.#opts = opts;
    this.#sql = `SELECT ${consumedNames(opts.schema, opts.table).fn}($1::bytea, $2, to_timestamp($3::double precision), $4) AS won`;
  }

  async consume(jti: string, exp: number, by: string): Promise<ConsumeOutcome> {
    try {
      return await this.#consumeOnce(jti, exp, by);
    } catch (err) {
      // The server refused the password (a rotation between the file and ALTER ROLE, either order): the other one is
      // tried once, as sessions do. Nothing was consumed: the login never reached the function.
      if (
        err instanceof pg.DatabaseError &&
        err.code === '28P01' &&
        this.#opts.password !== undefined &&
        !this.#closed
      ) {
        const other = await this.#opts.password.alternative(this.#lastPassword);
        if (other === undefined) throw err;
        return await this.#consumeOnce(jti, exp, by, other);
      }
      // A connection lost before or while asking (a server restart, a terminated backend not yet noticed) is asked
      // once more on a new one. Never a double use: the key decides, and the same `by` recognises its own row.
      if (err instanceof pg.DatabaseError && !isConnectionLoss(err.code)) throw err;
      if (this.#closed) throw err;
      return await this.#consumeOnce(jti, exp, by);
    }
  }

  async #consumeOnce(jti: string, exp: number, by: string, password?: string): Promise<ConsumeOutcome> {
    if (this.#closed) throw new Error('the single-use consumer is closed');
    const conn = this.#connection(password);
    try {
      await conn.ready;
      const res = await conn.client.query<{ won: boolean | null }>(this.#sql, [jtiKey(jti), displayJti(jti), exp, by]);
      const won = res.rows[0]?.won;
      if (won === true) return 'consumed';
      if (won === false) return 'used';
      throw new Error('unexpected answer from the consume function');
    } catch (err) {
      // A query error on a live connection (function missing, no privilege) leaves it usable; anything else retires it.
      if (!(err instanceof pg.DatabaseError) || isConnectionLoss(err.code)) this.#retire(conn);
      throw err;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    const conn = this.#conn;
    if (conn) {
      this.#retire(conn);
      await conn.ended;
    }
  }

  /** The open connection, or a new one (counted against limits.maxUpstreamConnections while held; at the cap it throws and the login is refused). */
  #connection(password?: string): Conn {
    const current = this.#conn;
    if (current && !current.dead) return current;
    const release = this.#opts.acquire?.();
    // With a rotating password: the one the server last accepted (the newest may not be set on the server yet).
    const pw = password ?? this.#opts.password?.current;
    this.#lastPassword = pw;
    const client = new pg.Client({
      ...this.#opts.connection,
      ...(this.#opts.password !== undefined ? { password: pw } : {}),
      application_name: 'pgwarden:single-use',
    });
    const conn: Conn = { client, release, dead: false, ready: Promise.resolve(), ended: Promise.resolve() };
    client.on('error', (err) => {
      this.#opts.log?.('warn', 'single-use consumer connection lost', { error: err.message });
      this.#retire(conn);
    });
    client.on('end', () => this.#retire(conn));
    conn.ready = client.connect().then(
      () => this.#opts.password?.accepted(pw),
      (err: unknown) => {
        this.#retire(conn);
        throw err;
      },
    );
    // Nobody may be awaiting ready when the connect fails (a login that gave up): no unhandled rejection.
    conn.ready.catch(() => {});
    this.#conn = conn;
    return conn;
  }

  /** Ends one connection once: its events, a failed query and close() may all retire it, and only it (never a newer one). */
  #retire(conn: Conn): void {
    if (conn.dead) return;
    conn.dead = true;
    if (this.#conn === conn) this.#conn = undefined;
    conn.release?.();
    conn.ended = conn.client.end().catch(() => {});
  }
}

interface ConsumerOptions {
  connection: pg.ClientConfig;
  schema: string;
  table: string;
  log?: RevocationLog;
  acquire?: () => () => void;
  /** The rotating upstream password; without it `connection`'s password is used as is. */
  password?: ConsumerPassword;
}

interface Conn {
  client: pg.Client;
  release: (() => void) | undefined;
  dead: boolean;
  ready: Promise<void>;
  ended: Promise<void>;
}

/**
 * One replica without the table: a set in memory, each jti kept until its token expires. A restart forgets it, and
 * another replica never sees it: docs/revocation.md says multi-replica deployments need the table (and pgwarden refuses
 * single-use tokens when cluster peers are configured without one).
 */
export class MemoryJtiConsumer implements JtiConsumer {
  readonly kind = 'memory';
  #used = new Map<string, number>();
  #nextSweep = 0;
  #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  get size(): number {
    return this.#used.size;
  }

  // Synchronous check-and-set: two logins in one process cannot both win.
  async consume(jti: string, exp: number): Promise<ConsumeOutcome> {
    const now = this.#now();
    this.#sweep(now);
    // Keyed by digest: memory per consumed token is bounded whatever the jti's length.
    const key = jtiKey(jti).toString('base64');
    const until = this.#used.get(key);
    if (until !== undefined && until > now) return 'used';
    this.#used.set(key, exp * 1000 + CONSUMED_PURGE_MARGIN_SECONDS * 1000);
    return 'consumed';
  }

  async close(): Promise<void> {
    this.#used.clear();
  }

  // Amortised: at most one pass a second, so memory is bounded by the tokens consumed within their lifetimes.
  #sweep(now: number): void {
    if (now < this.#nextSweep) return;
    this.#nextSweep = now + 1000;
    for (const [jti, until] of this.#used) if (until <= now) this.#used.delete(jti);
  }
}

/** Why a single-use login was refused (the login_refused audit reason), and the FATAL the client gets. */
export interface SingleUseRefusal {
  reason: 'single_use_used' | 'single_use_unavailable' | 'single_use_unsupported' | 'missing_claim';
  error: ProxyError;
}

/** What a session calls once per single-use login, after every other login check and before its upstream connection. */
export type SingleUseCheck = (id: Identity) => Promise<SingleUseRefusal | undefined>;

const HINT_NEW = 'Request a new single-use token for each connection and reconnect with it as the password.';

/**
 * The login-time check over `consumer`. Undefined `consumer` (several replicas, no shared table): every single-use token
 * is refused, since a set in one replica's memory would let the token log in once on each replica.
 */
export function singleUseCheck(
  consumer: JtiConsumer | undefined,
  opts: { by: string; log: RevocationLog },
): SingleUseCheck {
  return async (id) => {
    if (consumer === undefined) {
      return {
        reason: 'single_use_unsupported',
        error: new ProxyError('ERR_TOKEN_REJECTED', 'single-use tokens are not accepted by this pgwarden deployment', {
          hint: 'Request an ordinary (not single-use) token, or tell the operator.',
          reason: 'credential_rejected',
          operatorHint:
            'cluster.peers names other replicas but revocation.table is not configured: single use cannot be enforced across replicas (docs/revocation.md, "Single-use tokens")',
        }),
      };
    }
    // readClaims refuses a single-use token without a jti; checked again so no path consumes nothing and lets it in.
    if (id.jti === undefined) {
      return {
        reason: 'missing_claim',
        error: new ProxyError('ERR_TOKEN_INVALID', 'single-use token has no "jti" claim', {
          hint: HINT_NEW,
          reason: 'credential_invalid',
        }),
      };
    }
    let outcome: ConsumeOutcome;
    try {
      outcome = await consumer.consume(id.jti, id.exp, `${opts.by}, login ${randomUUID()}`);
    } catch (err) {
      opts.log('error', 'could not record the use of a single-use token; login refused', {
        jti: id.jti,
        error: errorMessage(err),
      });
      return {
        reason: 'single_use_unavailable',
        error: new ProxyError(
          'ERR_NOT_READY',
          'pgwarden could not record the use of this single-use token, so it refuses the login',
          {
            hint: 'try again shortly with the same token; if this persists, tell the operator',
            reason: 'unavailable',
            operatorHint: `the consumed-jti table could not be written: ${errorMessage(err)} (docs/revocation.md, "Single-use tokens")`,
          },
        ),
      };
    }
    if (outcome === 'consumed') return undefined;
    return {
      reason: 'single_use_used',
      error: new ProxyError('ERR_TOKEN_REJECTED', 'single-use token has already been used', {
        hint: HINT_NEW,
        reason: 'credential_used',
      }),
    };
  };
}

/** The check of a pgwarden that cannot consume: every single-use token is refused. */
export const refuseSingleUse: SingleUseCheck = singleUseCheck(undefined, { by: '', log: () => {} });
