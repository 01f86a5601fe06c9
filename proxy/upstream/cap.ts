// pgwarden's upstream connections counted against one cap, derived at startup from the server's max_connections so pgwarden never takes the server's last slots.
import { ProxyError } from '../../lib/errors.ts';

/**
 * Room a login leaves free for pgwarden's own connections (an analysis connection, a readiness check, a catalog
 * read): sessions stop this many short of the cap, so they can never make pgwarden unable to check a statement.
 */
export const OWN_HEADROOM = 3;

/** Slots kept free below what the server lets pgwarden's role have: a tenth of it, at least 3 (an operator's psql, a migration). */
export function derivedMargin(available: number): number {
  return Math.max(3, Math.ceil(available / 10));
}

/** What the server says about its connection slots, read at startup. */
export interface ServerSlots {
  maxConnections: number;
  superuserReserved: number;
  /** `reserved_connections` (PostgreSQL 16+; 0 before). */
  reserved: number;
  /** Client backends already connected, pgwarden's own reading connection excluded. */
  inUse: number;
  /** `rolconnlimit` of pgwarden's upstream role (-1: none). */
  roleConnLimit: number;
  /** Connections of pgwarden's upstream role already open, the reading one excluded. */
  roleInUse: number;
  /** Whether pgwarden's upstream role is a superuser (it could take the superuser-reserved slots; the cap does not). */
  superuser: boolean;
}

export interface CapChoice {
  /** The cap in force. */
  max: number;
  /** The cap derived from the server (before the configured value, if lower, was taken). */
  derived: number;
  /** How `derived` was computed, for the startup log line. */
  reason: string;
}

/**
 * The cap: what the server leaves to non-superusers (max_connections − superuser_reserved_connections −
 * reserved_connections), minus connections already in use, minus a margin; also within the role's own
 * CONNECTION LIMIT. A configured value (`configured` > 0) is used when it is lower. At least 1.
 */
export function chooseCap(slots: ServerSlots, configured: number): CapChoice {
  const available = slots.maxConnections - slots.superuserReserved - slots.reserved;
  const free = available - slots.inUse;
  let derived = free - derivedMargin(available);
  let reason = `max_connections ${slots.maxConnections} − superuser_reserved_connections ${slots.superuserReserved} − reserved_connections ${slots.reserved} − ${slots.inUse} in use − margin ${derivedMargin(available)}`;
  if (slots.roleConnLimit >= 0) {
    const byRole = slots.roleConnLimit - slots.roleInUse;
    if (byRole < derived) {
      derived = byRole;
      reason = `the upstream role's CONNECTION LIMIT ${slots.roleConnLimit} − ${slots.roleInUse} of its connections in use`;
    }
  }
  derived = Math.max(1, derived);
  const max = configured > 0 ? Math.min(configured, derived) : derived;
  return { max, derived, reason };
}

/** Reads the server's connection slots with pgwarden's own credentials. */
// biome-ignore lint/suspicious/noExplicitAny: rows of node-postgres's untyped result; each reader checks the fields it uses
export async function readServerSlots(query: (sql: string) => Promise<{ rows: any[] }>): Promise<ServerSlots> {
  const { rows } = await query(`SELECT current_setting('max_connections')::int AS max_connections,
      current_setting('superuser_reserved_connections')::int AS superuser_reserved,
      coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
      (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid())::int AS in_use,
      (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid() AND usename = current_user)::int AS role_in_use,
      r.rolconnlimit AS role_conn_limit, r.rolsuper AS superuser
    FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`);
  const r = rows[0];
  if (r === undefined) throw new Error('could not read the upstream role');
  return {
    maxConnections: Number(r.max_connections),
    superuserReserved: Number(r.superuser_reserved),
    reserved: Number(r.reserved),
    inUse: Number(r.in_use),
    roleConnLimit: Number(r.role_conn_limit),
    roleInUse: Number(r.role_in_use),
    superuser: r.superuser === true,
  };
}

/**
 * Counts pgwarden's upstream connections: client sessions from admission at login until they end, pgwarden's own
 * (analysis, revocation listener, readiness and catalog reads) while open. A login is refused (53300) once
 * sessions would leave fewer than OWN_HEADROOM slots; pgwarden's own connections may use those slots, never more.
 */
export class UpstreamCap {
  sessions = 0;
  own = 0;

  constructor(
    readonly max: number,
    readonly headroom = OWN_HEADROOM,
  ) {}

  get inUse(): number {
    return this.sessions + this.own;
  }

  /** Counts one more session, or returns the refusal when it would pass the cap. */
  admitSession(): ProxyError | undefined {
    if (this.inUse + 1 > this.max - this.headroom) {
      return new ProxyError(
        'ERR_TOO_MANY',
        `too many upstream connections (limits.maxUpstreamConnections = ${this.max})`,
        {
          detail: `pgwarden holds ${this.sessions} session and ${this.own} own connections to the database and keeps ${this.headroom} free for checking statements`,
          hint: "try again later; pgwarden keeps its upstream connections below the database server's max_connections",
          reason: 'limit_reached',
        },
      );
    }
    this.sessions++;
    return undefined;
  }

  releaseSession(): void {
    this.sessions = Math.max(0, this.sessions - 1);
  }

  /** Counts one of pgwarden's own connections and returns its release (idempotent); throws 53300 at the cap. */
  acquireOwn(): () => void {
    if (this.inUse >= this.max) {
      throw new ProxyError(
        'ERR_TOO_MANY',
        `too many upstream connections (limits.maxUpstreamConnections = ${this.max})`,
        {
          hint: 'pgwarden is at its upstream connection cap; try again later',
          reason: 'limit_reached',
        },
      );
    }
    this.own++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.own = Math.max(0, this.own - 1);
    };
  }
}
