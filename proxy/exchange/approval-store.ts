// Requests waiting for approval (docs/issuance.md, "Approvals"): kept in an upstream table beside the revocation table, reached only through SECURITY DEFINER functions, so every replica sees one state; or in memory for a lone replica.
import pg from 'pg';
import { errorMessage } from '../../lib/error-message.ts';
import { isConnectionLoss } from '../../lib/sqlstate.ts';

/** `expired`: not decided, or approved and not retrieved, within its window (by the store's clock). */
export type ApprovalState = 'pending' | 'approved' | 'denied' | 'retrieved' | 'expired';

/** What the requester asked for and what the policy would grant: shown to approvers, compared at retrieval. */
export interface ApprovalRequestInfo {
  rule: string;
  subjectIssuer: string;
  sub: string;
  actor?: string;
  tenant?: string;
  role: string;
  /** The narrowing the token will carry (the request composed with the rule's bound), as the claim. */
  narrow?: Record<string, unknown>;
  /** The `narrow` parameter as read, as a claim; absent when the request gave none. */
  requestedNarrow?: Record<string, unknown>;
  /** The `ttl` parameter (seconds); absent when the request gave none. */
  requestedTtl?: number;
  /** The lifetime the token will have from its retrieval (seconds). */
  lifetime: number;
  singleUse: boolean;
  requestedSingleUse: boolean;
  audience: string;
  /** The client address the request came from. */
  requester?: string;
  /** The storing replica's seal of the request (approval-seal.ts, `requested`): approvers see only sealed requests. */
  seal?: string;
}

/** Who decided: the approver's IdP subject and the approvers entry that let them. */
export interface ApproverInfo {
  sub: string;
  issuer: string;
  approvers: string;
  /**
   * The approver's verified claims that the policy's approvers entries match on (string or list of strings), so the
   * retrieval can ask again whether they are still an approver.
   */
  claims?: Record<string, string | string[]>;
  /** The deciding replica's signature of the decision (approval-seal.ts); checked before a token is issued. */
  seal?: string;
}

export interface ApprovalRecord {
  id: string;
  state: ApprovalState;
  sub: string;
  request: ApprovalRequestInfo;
  createdAt: Date;
  expiresAt: Date;
  decidedAt?: Date;
  decidedBy?: ApproverInfo;
  reason?: string;
  retrievedAt?: Date;
}

export interface NewApproval {
  id: string;
  sub: string;
  /** SHA-256 of what must match at retrieval (handler.ts approvalFingerprint). */
  fingerprint: Buffer;
  request: ApprovalRequestInfo;
  timeoutMs: number;
  /** Open (pending or approved) requests one subject may have at once. */
  maxOpen: number;
  /** Which replica stored it. */
  by: string;
}

export type DecideOutcome = 'decided' | 'unknown' | ApprovalState;
/** `taken`: this call retrieved it (the one caller that may issue the token); `retrieved`: an earlier call did. */
export type RetrieveOutcome = 'taken' | 'unknown' | 'mismatch' | ApprovalState;

export interface ApprovalStore {
  readonly kind: 'table' | 'memory';
  /**
   * Stores a pending request; undefined when the subject already has `maxOpen` open requests or
   * MAX_KEPT_APPROVALS_PER_SUBJECT in any state (or a memory store is full).
   */
  create(a: NewApproval): Promise<{ expiresAt: Date } | undefined>;
  get(id: string): Promise<ApprovalRecord | undefined>;
  /** Pending requests, oldest first; only those of `rules` when given (an approver's rules: a bound after the filter). */
  list(limit: number, rules?: readonly string[]): Promise<ApprovalRecord[]>;
  /** Approves or denies a pending request; an approval opens a new window of `timeoutMs` for the retrieval. */
  decide(
    id: string,
    approve: boolean,
    by: ApproverInfo,
    reason: string | undefined,
    timeoutMs: number,
  ): Promise<DecideOutcome>;
  /** Marks an approved request retrieved, once (`taken` to exactly one caller): `sub` and `fingerprint` must be the request's. */
  retrieve(id: string, sub: string, fingerprint: Buffer, by: string): Promise<RetrieveOutcome>;
  /** Marks open requests past their window expired and returns them (each to exactly one caller, on any replica). */
  expire(limit: number): Promise<ApprovalRecord[]>;
  close(): Promise<void>;
}

/** Terminal rows are purged this long after their window closed (by the store's clock). */
export const APPROVAL_PURGE_MARGIN_SECONDS = 3600;
/**
 * Requests one subject may have in the store in any state (decided, retrieved and expired ones are kept until purged):
 * the open cap alone let a subject add ten more each time ten were denied or expired.
 */
export const MAX_KEPT_APPROVALS_PER_SUBJECT = 100;
/** Requests a memory store holds at most, whoever asked (a lone replica's memory). */
export const MAX_APPROVALS_IN_MEMORY = 10_000;

function names(schema: string, table: string) {
  const s = pg.escapeIdentifier(schema);
  const q = (suffix: string) => `${s}.${pg.escapeIdentifier(`${table}${suffix}`)}`;
  return {
    table: q('_approvals'),
    request: q('_approval_request'),
    get: q('_approval_get'),
    list: q('_approval_list'),
    decide: q('_approval_decide'),
    retrieve: q('_approval_retrieve'),
    expire: q('_approval_expire'),
  };
}

/** The functions and their argument types, for GRANT EXECUTE. */
export function approvalFunctions(schema: string, table: string): string[] {
  const n = names(schema, table);
  return [
    `${n.request}(text, text, bytea, jsonb, bigint, integer, text)`,
    `${n.get}(text)`,
    `${n.list}(integer, text[])`,
    `${n.decide}(text, boolean, jsonb, text, bigint)`,
    `${n.retrieve}(text, text, bytea, text)`,
    `${n.expire}(integer)`,
  ];
}

/** The grant pgwarden's upstream role needs (EXECUTE only: never a privilege on the table). */
export function APPROVALS_GRANT_SQL(schema: string, table: string, role: string): string {
  return `GRANT EXECUTE ON FUNCTION ${approvalFunctions(schema, table).join(', ')} TO ${pg.escapeIdentifier(role)};\n`;
}

const COLUMNS = `o_id text, o_state text, o_sub text, o_request jsonb, o_created_at timestamptz, o_expires_at timestamptz,
  o_decided_at timestamptz, o_decided_by jsonb, o_reason text, o_retrieved_at timestamptz`;

/**
 * SQL for the approvals table beside the revocation table `table` and the functions pgwarden calls. Every function is
 * SECURITY DEFINER with a pinned search_path, and the table is closed to PUBLIC: pgwarden's upstream role needs only
 * EXECUTE, never a privilege on the table, so the sessions pgwarden brokers (the same upstream role) cannot read who
 * asked for what, nor approve a request by writing a row. Each state change is one conditional UPDATE, so concurrent
 * replicas agree: one decision, one retrieval, one expiry per request. Idempotent; run as an administrator, then
 * APPROVALS_GRANT_SQL.
 */
export function APPROVALS_SQL(schema: string, table: string): string {
  const n = names(schema, table);
  const idx = (suffix: string) => pg.escapeIdentifier(`${table}_approvals_${suffix}`);
  const effective = `CASE WHEN a.state IN ('pending', 'approved') AND a.expires_at <= now() THEN 'expired' ELSE a.state END`;
  const row = `a.id, ${effective}, a.sub, a.request, a.created_at, a.expires_at, a.decided_at, a.decided_by, a.decision_reason, a.retrieved_at`;
  const definer = 'SECURITY DEFINER SET search_path = pg_catalog, pg_temp';
  return `CREATE SCHEMA IF NOT EXISTS ${pg.escapeIdentifier(schema)};
CREATE TABLE IF NOT EXISTS ${n.table} (
  id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{16,128}$'),
  sub             text NOT NULL,
  fingerprint     bytea NOT NULL CHECK (length(fingerprint) = 32),
  request         jsonb NOT NULL,
  state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'denied', 'retrieved', 'expired')),
  created_at      timestamptz NOT NULL DEFAULT now(),
  created_by      text,
  expires_at      timestamptz NOT NULL,
  decided_at      timestamptz,
  decided_by      jsonb,
  decision_reason text,
  retrieved_at    timestamptz,
  retrieved_by    text
);
CREATE INDEX IF NOT EXISTS ${idx('open')} ON ${n.table} (expires_at) WHERE state IN ('pending', 'approved');
CREATE INDEX IF NOT EXISTS ${idx('sub')} ON ${n.table} (sub) WHERE state IN ('pending', 'approved');
CREATE INDEX IF NOT EXISTS ${idx('sub_kept')} ON ${n.table} (sub);
REVOKE ALL ON ${n.table} FROM PUBLIC;
CREATE OR REPLACE FUNCTION ${n.request}(p_id text, p_sub text, p_fingerprint bytea, p_request jsonb, p_timeout_ms bigint, p_max_open integer, p_by text)
  RETURNS timestamptz LANGUAGE plpgsql ${definer} AS $fn$
DECLARE
  open_count integer;
  kept_count integer;
  expires timestamptz;
BEGIN
  IF p_id IS NULL OR p_sub IS NULL OR p_fingerprint IS NULL OR p_request IS NULL OR coalesce(p_timeout_ms, 0) < 1 THEN
    RAISE EXCEPTION 'pgwarden: an approval request needs an id, a subject, a fingerprint, the request and a timeout';
  END IF;
  -- Decided, retrieved and expired requests go an hour after their window: the table holds what is still answered.
  DELETE FROM ${n.table} WHERE state IN ('denied', 'retrieved', 'expired') AND expires_at < now() - interval '${APPROVAL_PURGE_MARGIN_SECONDS} seconds';
  -- One subject's requests are counted and added one at a time, on any replica.
  PERFORM pg_advisory_xact_lock(hashtextextended('pgwarden approvals ' || p_sub, 0));
  -- Open requests are capped, and so is every request kept (until purged), so cycling through denials is bounded too.
  SELECT count(*) FILTER (WHERE a.state IN ('pending', 'approved') AND a.expires_at > now()), count(*)
    INTO open_count, kept_count FROM ${n.table} a WHERE a.sub = p_sub;
  IF open_count >= p_max_open OR kept_count >= ${MAX_KEPT_APPROVALS_PER_SUBJECT} THEN
    RETURN NULL;
  END IF;
  expires := now() + p_timeout_ms * interval '1 millisecond';
  INSERT INTO ${n.table} (id, sub, fingerprint, request, expires_at, created_by)
    VALUES (p_id, p_sub, p_fingerprint, p_request, expires, p_by);
  RETURN expires;
END
$fn$;
CREATE OR REPLACE FUNCTION ${n.get}(p_id text) RETURNS TABLE (${COLUMNS})
  LANGUAGE sql STABLE ${definer} AS $fn$
  SELECT ${row} FROM ${n.table} a WHERE a.id = p_id
$fn$;
CREATE OR REPLACE FUNCTION ${n.list}(p_limit integer, p_rules text[]) RETURNS TABLE (${COLUMNS})
  LANGUAGE sql STABLE ${definer} AS $fn$
  -- The approver's rules filter before the limit: requests of other rules never crowd theirs out of a listing.
  SELECT ${row} FROM ${n.table} a WHERE a.state = 'pending' AND a.expires_at > now()
    AND (p_rules IS NULL OR a.request->>'rule' = ANY (p_rules))
    ORDER BY a.created_at, a.id LIMIT p_limit
$fn$;
CREATE OR REPLACE FUNCTION ${n.decide}(p_id text, p_approve boolean, p_by jsonb, p_reason text, p_timeout_ms bigint)
  RETURNS text LANGUAGE plpgsql ${definer} AS $fn$
DECLARE
  outcome text;
BEGIN
  IF p_approve IS NULL OR p_by IS NULL OR coalesce(p_timeout_ms, 0) < 1 THEN
    RAISE EXCEPTION 'pgwarden: a decision needs approve or deny, the approver and a timeout';
  END IF;
  -- Only a pending request inside its window is decided, once; an approval opens the window for its retrieval.
  UPDATE ${n.table} a SET state = CASE WHEN p_approve THEN 'approved' ELSE 'denied' END, decided_at = now(),
      decided_by = p_by, decision_reason = p_reason,
      expires_at = CASE WHEN p_approve THEN now() + p_timeout_ms * interval '1 millisecond' ELSE a.expires_at END
    WHERE a.id = p_id AND a.state = 'pending' AND a.expires_at > now()
    RETURNING 'decided' INTO outcome;
  IF outcome IS NOT NULL THEN
    RETURN outcome;
  END IF;
  SELECT ${effective} INTO outcome FROM ${n.table} a WHERE a.id = p_id;
  RETURN coalesce(outcome, 'unknown');
END
$fn$;
CREATE OR REPLACE FUNCTION ${n.retrieve}(p_id text, p_sub text, p_fingerprint bytea, p_by text)
  RETURNS text LANGUAGE plpgsql ${definer} AS $fn$
DECLARE
  outcome text;
BEGIN
  -- Exactly once: the first retrieval of an approved request by its subject, with what was approved.
  UPDATE ${n.table} a SET state = 'retrieved', retrieved_at = now(), retrieved_by = p_by
    WHERE a.id = p_id AND a.sub = p_sub AND a.fingerprint = p_fingerprint AND a.state = 'approved' AND a.expires_at > now()
    RETURNING 'taken' INTO outcome;
  IF outcome IS NOT NULL THEN
    RETURN outcome;
  END IF;
  -- Another subject's id is answered like an id that does not exist.
  SELECT CASE
      WHEN a.sub IS DISTINCT FROM p_sub THEN 'unknown'
      WHEN ${effective} IN ('denied', 'retrieved', 'expired') THEN ${effective}
      WHEN a.fingerprint IS DISTINCT FROM p_fingerprint THEN 'mismatch'
      ELSE ${effective} END
    INTO outcome FROM ${n.table} a WHERE a.id = p_id;
  RETURN coalesce(outcome, 'unknown');
END
$fn$;
CREATE OR REPLACE FUNCTION ${n.expire}(p_limit integer) RETURNS TABLE (${COLUMNS})
  LANGUAGE sql ${definer} AS $fn$
  -- SKIP LOCKED: replicas sweeping at once each take other rows; every expiry is reported once.
  WITH due AS (
    SELECT d.id FROM ${n.table} d WHERE d.state IN ('pending', 'approved') AND d.expires_at <= now()
    ORDER BY d.expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED
  )
  UPDATE ${n.table} a SET state = 'expired' FROM due WHERE a.id = due.id
  RETURNING a.id, a.state, a.sub, a.request, a.created_at, a.expires_at, a.decided_at, a.decided_by, a.decision_reason, a.retrieved_at
$fn$;
${approvalFunctions(schema, table)
  .map((f) => `REVOKE ALL ON FUNCTION ${f} FROM PUBLIC;`)
  .join('\n')}
`;
}

interface Conn {
  client: pg.Client;
  ready: Promise<void>;
  release: (() => void) | undefined;
  dead: boolean;
}

interface Row {
  o_id: string;
  o_state: ApprovalState;
  o_sub: string;
  o_request: ApprovalRequestInfo;
  o_created_at: Date;
  o_expires_at: Date;
  o_decided_at: Date | null;
  o_decided_by: ApproverInfo | null;
  o_reason: string | null;
  o_retrieved_at: Date | null;
}

function fromRow(r: Row): ApprovalRecord {
  return {
    id: r.o_id,
    state: r.o_state,
    sub: r.o_sub,
    request: r.o_request,
    createdAt: r.o_created_at,
    expiresAt: r.o_expires_at,
    ...(r.o_decided_at === null ? {} : { decidedAt: r.o_decided_at }),
    ...(r.o_decided_by === null ? {} : { decidedBy: r.o_decided_by }),
    ...(r.o_reason === null ? {} : { reason: r.o_reason }),
    ...(r.o_retrieved_at === null ? {} : { retrievedAt: r.o_retrieved_at }),
  };
}

export interface TableApprovalOptions {
  /** A dedicated connection's settings (revocationClientConfig: the live upstream password at each connect). */
  connection: pg.ClientConfig;
  schema: string;
  table: string;
  /** Counts the connection against limits.maxUpstreamConnections while it is open. */
  acquire?: () => () => void;
  log?: (level: 'warn' | 'error', msg: string, fields?: object) => void;
}

/** The fleet store: one dedicated connection, opened at first use and again after a loss. Every failure throws. */
export class TableApprovalStore implements ApprovalStore {
  readonly kind = 'table';
  #opts: TableApprovalOptions;
  #n: ReturnType<typeof names>;
  #conn: Conn | undefined;
  #closed = false;

  constructor(opts: TableApprovalOptions) {
    this.#opts = opts;
    this.#n = names(opts.schema, opts.table);
  }

  async create(a: NewApproval): Promise<{ expiresAt: Date } | undefined> {
    const r = await this.#query<{ e: Date | null }>(
      `SELECT ${this.#n.request}($1, $2, $3::bytea, $4::jsonb, $5::bigint, $6::integer, $7) AS e`,
      [a.id, a.sub, a.fingerprint, JSON.stringify(a.request), a.timeoutMs, a.maxOpen, a.by],
    );
    const e = r[0]?.e;
    return e === null || e === undefined ? undefined : { expiresAt: e };
  }

  async get(id: string): Promise<ApprovalRecord | undefined> {
    const rows = await this.#query<Row>(`SELECT * FROM ${this.#n.get}($1)`, [id]);
    return rows[0] === undefined ? undefined : fromRow(rows[0]);
  }

  async list(limit: number, rules?: readonly string[]): Promise<ApprovalRecord[]> {
    return (
      await this.#query<Row>(`SELECT * FROM ${this.#n.list}($1, $2::text[])`, [
        limit,
        rules === undefined ? null : [...rules],
      ])
    ).map(fromRow);
  }

  async decide(
    id: string,
    approve: boolean,
    by: ApproverInfo,
    reason: string | undefined,
    timeoutMs: number,
  ): Promise<DecideOutcome> {
    const r = await this.#query<{ o: DecideOutcome }>(
      `SELECT ${this.#n.decide}($1, $2, $3::jsonb, $4, $5::bigint) AS o`,
      [id, approve, JSON.stringify(by), reason ?? null, timeoutMs],
    );
    return r[0]?.o ?? 'unknown';
  }

  async retrieve(id: string, sub: string, fingerprint: Buffer, by: string): Promise<RetrieveOutcome> {
    const r = await this.#query<{ o: RetrieveOutcome }>(`SELECT ${this.#n.retrieve}($1, $2, $3::bytea, $4) AS o`, [
      id,
      sub,
      fingerprint,
      by,
    ]);
    return r[0]?.o ?? 'unknown';
  }

  async expire(limit: number): Promise<ApprovalRecord[]> {
    return (await this.#query<Row>(`SELECT * FROM ${this.#n.expire}($1)`, [limit])).map(fromRow);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const c = this.#conn;
    if (c !== undefined) {
      this.#retire(c);
      await c.client.end().catch(() => {});
    }
  }

  /** One query; a connection lost before or while asking is asked once more on a new one (each function is one statement). */
  async #query<T extends object>(sql: string, params: unknown[]): Promise<T[]> {
    try {
      return await this.#queryOnce<T>(sql, params);
    } catch (err) {
      if (this.#closed || (err instanceof pg.DatabaseError && !isConnectionLoss(err.code))) throw err;
      return await this.#queryOnce<T>(sql, params);
    }
  }

  async #queryOnce<T extends object>(sql: string, params: unknown[]): Promise<T[]> {
    if (this.#closed) throw new Error('the approval store is closed');
    let c = this.#conn;
    if (c === undefined || c.dead) {
      const release = this.#opts.acquire?.();
      const client = new pg.Client({ ...this.#opts.connection, application_name: 'pgwarden:approvals' });
      const conn: Conn = { client, release, dead: false, ready: Promise.resolve() };
      client.on('error', (err) => {
        this.#opts.log?.('warn', 'approval store connection lost', { error: errorMessage(err) });
        this.#retire(conn);
      });
      client.on('end', () => this.#retire(conn));
      conn.ready = client.connect().then(
        () => {},
        (err: unknown) => {
          this.#retire(conn);
          throw err;
        },
      );
      conn.ready.catch(() => {});
      this.#conn = conn;
      c = conn;
    }
    try {
      await c.ready;
      return (await c.client.query<T>(sql, params)).rows;
    } catch (err) {
      if (!(err instanceof pg.DatabaseError) || isConnectionLoss(err.code)) {
        this.#retire(c);
        c.client.end().catch(() => {});
      }
      throw err;
    }
  }

  #retire(c: Conn): void {
    if (c.dead) return;
    c.dead = true;
    if (this.#conn === c) this.#conn = undefined;
    c.release?.();
  }
}

interface MemoryRow extends ApprovalRecord {
  fingerprint: Buffer;
}

/**
 * One replica without the table: requests in memory. A restart forgets them (their requesters ask again), and another
 * replica never sees them, so a pgwarden with cluster peers and no revocation.table answers approval requests 503.
 */
export class MemoryApprovalStore implements ApprovalStore {
  readonly kind = 'memory';
  #rows = new Map<string, MemoryRow>();
  #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  #state(r: MemoryRow): ApprovalState {
    return (r.state === 'pending' || r.state === 'approved') && r.expiresAt.getTime() <= this.#now()
      ? 'expired'
      : r.state;
  }

  #view(r: MemoryRow): ApprovalRecord {
    const { fingerprint: _fingerprint, ...rest } = r;
    return structuredClone({ ...rest, state: this.#state(r) });
  }

  async create(a: NewApproval): Promise<{ expiresAt: Date } | undefined> {
    const now = this.#now();
    for (const [id, r] of this.#rows)
      if (
        (r.state === 'denied' || r.state === 'retrieved' || r.state === 'expired') &&
        r.expiresAt.getTime() < now - APPROVAL_PURGE_MARGIN_SECONDS * 1000
      )
        this.#rows.delete(id);
    let open = 0;
    let kept = 0;
    for (const r of this.#rows.values())
      if (r.sub === a.sub) {
        kept++;
        if (this.#state(r) === 'pending' || this.#state(r) === 'approved') open++;
      }
    if (open >= a.maxOpen || kept >= MAX_KEPT_APPROVALS_PER_SUBJECT || this.#rows.size >= MAX_APPROVALS_IN_MEMORY)
      return undefined;
    if (this.#rows.has(a.id)) throw new Error('approval id collision');
    const expiresAt = new Date(now + a.timeoutMs);
    this.#rows.set(a.id, {
      id: a.id,
      state: 'pending',
      sub: a.sub,
      request: structuredClone(a.request),
      createdAt: new Date(now),
      expiresAt,
      fingerprint: Buffer.from(a.fingerprint),
    });
    return { expiresAt };
  }

  async get(id: string): Promise<ApprovalRecord | undefined> {
    const r = this.#rows.get(id);
    return r === undefined ? undefined : this.#view(r);
  }

  async list(limit: number, rules?: readonly string[]): Promise<ApprovalRecord[]> {
    return [...this.#rows.values()]
      .filter((r) => this.#state(r) === 'pending' && (rules === undefined || rules.includes(r.request.rule)))
      .slice(0, limit)
      .map((r) => this.#view(r));
  }

  async decide(
    id: string,
    approve: boolean,
    by: ApproverInfo,
    reason: string | undefined,
    timeoutMs: number,
  ): Promise<DecideOutcome> {
    const r = this.#rows.get(id);
    if (r === undefined) return 'unknown';
    const state = this.#state(r);
    if (state !== 'pending') return state;
    const now = this.#now();
    r.state = approve ? 'approved' : 'denied';
    r.decidedAt = new Date(now);
    r.decidedBy = { ...by };
    if (reason !== undefined) r.reason = reason;
    if (approve) r.expiresAt = new Date(now + timeoutMs);
    return 'decided';
  }

  async retrieve(id: string, sub: string, fingerprint: Buffer, _by: string): Promise<RetrieveOutcome> {
    const r = this.#rows.get(id);
    if (r === undefined || r.sub !== sub) return 'unknown';
    const state = this.#state(r);
    if (state === 'denied' || state === 'retrieved' || state === 'expired') return state;
    if (!r.fingerprint.equals(fingerprint)) return 'mismatch';
    if (state !== 'approved') return state;
    r.state = 'retrieved';
    r.retrievedAt = new Date(this.#now());
    return 'taken';
  }

  async expire(limit: number): Promise<ApprovalRecord[]> {
    const out: ApprovalRecord[] = [];
    for (const r of this.#rows.values()) {
      if (out.length >= limit) break;
      if ((r.state === 'pending' || r.state === 'approved') && this.#state(r) === 'expired') {
        r.state = 'expired';
        out.push(this.#view(r));
      }
    }
    return out;
  }

  async close(): Promise<void> {
    this.#rows.clear();
  }
}
