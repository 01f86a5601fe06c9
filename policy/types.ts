// Shared shapes of the policy engine: compiled roles, the catalog snapshot, statements and decisions.

/** Milliseconds. */
import type { Cidr } from '../lib/cidr.ts';
import type { TokenNarrowing } from './narrow.ts';
import type { CompiledIssuance } from './issuance.ts';

export type Millis = number;

/** A relation pattern from the policy: an exact `schema.name` or every relation of a schema (`schema.*`). */
export interface RelationPattern {
  schema: string;
  /** '*' matches every relation in the schema. */
  name: string;
}

export type WriteKind = 'insert' | 'update' | 'delete' | 'merge' | 'truncate' | 'copy_from';

/** DDL a role may run on objects in its `ddl.schemas` (docs/policy.md, "Scoped DDL"); each is off unless listed. */
export type DdlKind =
  | 'create_table'
  | 'create_index'
  | 'create_view'
  | 'create_materialized_view'
  | 'create_sequence'
  | 'alter_table'
  | 'drop'
  | 'comment'
  | 'create_type'
  | 'alter_type'
  | 'create_schema';

/** Scoped DDL: the kinds, the schemas they may touch, and whether temporary objects (pg_temp) may be made. */
export interface RoleDdl {
  kinds: readonly DdlKind[];
  schemas: readonly string[];
  temporary: boolean;
}

/** Maintenance commands a role may run on relations it may write. */
export type MaintenanceKind = 'analyze' | 'vacuum';

/** A channel name from the policy: exact, or every channel starting with `prefix` (`jobs_*`). */
/**
 * pg_notify's channel given as the bare text parameter $param: allowed only if the value bound for it is a channel in
 * `channels` (the role's channels.notify when decided). Text and binary format of text are the same bytes.
 */
export type BindCheck =
  | {
      kind: 'notify_channel';
      param: number;
      channels: readonly ChannelPattern[];
    }
  | {
      /**
       * pg_terminate_backend / pg_cancel_backend of the bare integer parameter $param: allowed only if the value bound
       * is the backend of a live session of the same token subject and agent on this pgwarden (or NULL, which ends
       * nothing), as PostgreSQL lets a role signal its own backends.
       */
      kind: 'sibling_backend';
      param: number;
    };

export interface ChannelPattern {
  name: string;
  prefix: boolean;
}

/** One role of a policy file after validation and compilation. Names are compared exactly as the parser returns them. */
export interface RolePolicy {
  name: string;
  /** 'shadow' logs what would be denied and allows it. */
  mode: 'enforce' | 'shadow';
  readOnly: boolean;
  /** Relations the role may read. */
  relations: RelationPattern[];
  /** Read-write roles: statement kinds they may run and the relations they may write. */
  write: { kinds: WriteKind[]; relations: RelationPattern[] } | undefined;
  /** `schema.relation` → denied column names. */
  deniedColumns: ReadonlyMap<string, ReadonlySet<string>>;
  /**
   * `schema.relation` → the only column names of it that may be used: every other column, including one added later,
   * is denied as a deniedColumns entry is, and a whole-row use (`*`, `t`, `t.*`, NATURAL JOIN) is refused outright.
   * Set by a token narrowing only (policy/narrow.ts); absent: no such limit.
   */
  allowedColumns?: ReadonlyMap<string, ReadonlySet<string>> | undefined;
  /** The token narrowing this effective role was made with (policy/narrow.ts narrowRole); absent: the role as the policy has it. */
  narrowing?: TokenNarrowing | undefined;
  /**
   * Set with `narrowing`: what the policy's own role has where a lower value from the narrowing must not grant
   * anything (the sleeps are callable only when the role itself has a statementTimeout, policy/functions.ts).
   */
  narrowedFrom?: { statementTimeout: Millis | undefined } | undefined;
  /** Qualified `schema.function` names added to (allow) or removed from (deny) the default function policy. */
  functions: { allow: ReadonlySet<string>; deny: ReadonlySet<string> };
  /** Extra session settings the role may SET beyond the built-in harmless list. */
  settings: ReadonlySet<string>;
  /**
   * 'introspection' allows the catalog queries psql's \d family and drivers issue; 'scoped' allows them through filters
   * that show only what the role may use (policy/catalog-scope.ts).
   */
  catalog: 'none' | 'introspection' | 'scoped';
  maxRows: number | undefined;
  onRowCap: 'truncate' | 'error';
  statementTimeout: Millis | undefined;
  /** Stamped idle_in_transaction_session_timeout; absent means the built-in default (60 s, policy/settings.ts), 0 none. */
  idleInTransactionTimeout?: Millis | undefined;
  /** WITH HOLD cursors one session may have open; absent means the default for the role (holdCursorLimit in evaluate.ts). */
  holdCursors?: number;
  /** Per-agent budget (docs/policy.md, "Budgets"); absent: none. */
  budget?: RoleBudget | undefined;
  dbRole: string | undefined;
  /** Client networks its tokens may log in from (the socket's address; IPv4-mapped IPv6 matched as IPv4); absent: any. */
  networks?: readonly Cidr[] | undefined;
  /** Schemas pinned as search_path on the upstream session (default ['public']). */
  searchPath: string[];
  /** Scoped DDL; absent: none. */
  ddl?: RoleDdl | undefined;
  /** ANALYZE / VACUUM on writable relations; absent: none. */
  maintenance?: readonly MaintenanceKind[] | undefined;
  /** LOCK: any mode on writable relations, ACCESS SHARE on readable ones; absent: false. */
  lock?: boolean | undefined;
  /** LISTEN and NOTIFY / pg_notify() channels; absent: none (UNLISTEN is always allowed). */
  channels?: { listen: readonly ChannelPattern[]; notify: readonly ChannelPattern[] } | undefined;
  /** DO blocks: a full escape from statement-level policy; absent: false. */
  do?: boolean | undefined;
  /** PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED and reading pg_prepared_xacts; read-write roles only. */
  twoPhase?: boolean | undefined;
  /** 'required': only single-use tokens log in as this role (checked at login); absent: any token. */
  singleUse?: 'required' | undefined;
}

/**
 * Use a role's sessions may make of the database, counted together for every session of one token subject (`sub`)
 * or of one agent (`agent` claim, else `sub`) in one pgwarden process. Each limit is optional.
 */
export interface RoleBudget {
  per: 'subject' | 'agent';
  /** Statements forwarded in any 60 s window (each statement of a simple Query, each Execute). */
  statementsPerMinute: number | undefined;
  /** Rows (DataRow, COPY rows) relayed to clients in any 60 s window. */
  rowsPerMinute: number | undefined;
  /** Result bytes relayed from the database to clients in any 60 s window. */
  bytesPerMinute: number | undefined;
  /** Sessions running a statement at the same time. */
  concurrentStatements: number | undefined;
}

export interface CompiledPolicy {
  /** Bumped on every successful load; part of every cache key. */
  version: number;
  /** sha256 of the source text, for audit. */
  digest: string;
  roles: ReadonlyMap<string, RolePolicy>;
  /** The issuance section: who may obtain which tokens from the exchange endpoint; absent: none. */
  issuance?: CompiledIssuance;
}

/** Column of a relation in the upstream catalog. */
export interface CatalogColumn {
  name: string;
  type: string;
}

export interface CatalogRelation {
  schema: string;
  name: string;
  /** r table, v view, m matview, p partitioned table, f foreign table. */
  kind: string;
  columns: CatalogColumn[];
  /** It has (or has had: PostgreSQL clears the flag lazily) inheritance children or partitions (relhassubclass). */
  hasChildren?: boolean;
  /**
   * `schema.name` of every relation it inherits from or is a partition of, at any depth (pg_inherits): its rows are
   * theirs too, so a token narrowing's column list of one of them limits it as well (policy/evaluate.ts).
   */
  ancestors?: readonly string[];
}

export interface CatalogFunction {
  schema: string;
  name: string;
  /** i immutable, s stable, v volatile. */
  volatility: 'i' | 's' | 'v';
  /** f function, a aggregate, w window, p procedure. */
  kind: string;
  argTypes: string[];
  returnsSet: boolean;
}

/** A type in the upstream catalog. Table rowtypes matter: `NULL::secrets` reads the shape of a relation. */
export interface CatalogType {
  oid: number;
  schema: string;
  name: string;
  /** `schema.name` of the table/view whose row type this is (or whose row type this is an array of). */
  relation: string | undefined;
  /** A string constant of this type runs SQL or PL code when it is converted, i.e. during parse analysis (catalog.ts inputRunsCode). */
  inputRunsCode?: boolean;
}

/** What pgwarden knows of the upstream database, read at startup, on reload and on demand. */
export interface CatalogSnapshot {
  /** current_database() upstream; 3-part names must match it. */
  database: string;
  schemas: ReadonlySet<string>;
  /** key `schema.name` */
  relations: ReadonlyMap<string, CatalogRelation>;
  /** key `schema.name` → every overload */
  functions: ReadonlyMap<string, CatalogFunction[]>;
  /** key `schema.name` of operators outside pg_catalog → their function */
  userOperators: ReadonlySet<string>;
  /** Types by `schema.name` and by OID; a statement naming a type that is not here is denied. */
  types?: ReadonlyMap<string, CatalogType>;
  typesByOid?: ReadonlyMap<number, CatalogType>;
  /**
   * Optional: the upstream server's keywords (pg_get_keywords: word → catcode U, C, T or R), to tell a syntax error
   * of pgwarden's newer grammar from one the server would make too (evaluate.ts syntaxDenial).
   */
  keywords?: ReadonlyMap<string, string>;
  /** Optional: operator key `schema.name` → the `schema.function`s implementing its overloads (from pg_operator.oprcode). */
  userOperatorFunctions?: ReadonlyMap<string, readonly string[]>;
  /**
   * Optional: a hash of everything the snapshot was built from (loadCatalog's rows and the relation patterns it read):
   * two snapshots with the same digest are the same, so a refresh that reads one changes nothing (policy/store.ts).
   */
  digest?: string;
}

/** Per-session facts the policy reads (never mutates). */
export interface SessionView {
  role: RolePolicy;
  /** SQL-level PREPARE names that passed the policy. */
  preparedNames: ReadonlySet<string>;
  /** Cursors declared in this session. */
  cursorNames: ReadonlySet<string>;
  /** Of those, the ones declared WITH HOLD (names no longer in cursorNames are closed and not counted). */
  holdCursorNames?: ReadonlySet<string>;
  /** The session's upstream backend pid: the server's analysis tells a lock the session's own transaction holds from another's. */
  backendPid?: number;
  /**
   * False when the session has made no temporary object (so an unqualified name cannot be one of them); true or
   * undefined when it may have (a role with ddl.temporary), so its temporary schema is among the places a name resolves.
   */
  tempObjects?: boolean;
  /**
   * Judge unqualified relation names (and pg_temp ones) as the session's own temporary relations, leaving the truth to
   * the server's analysis on the session's own connection (proxy/session/policy-gate.ts): used only to ask again about
   * a statement refused over a relation, for a session that has temporary objects.
   */
  deferTemporary?: boolean;
  /**
   * Leave a type name the snapshot lacks, in a schema the role may create in, to the server's analysis on the session's
   * own connection (proxy/session/policy-gate.ts): used only to ask again about a statement refused over a type, for a
   * session that may have made it (in its open transaction, as a temporary object, or earlier in the same text).
   */
  deferTypes?: boolean;
}

/** What a statement does, for the session, the audit trail and `policy explain`. */
export interface StatementSummary {
  /** libpg-query node name, e.g. SelectStmt, VariableSetStmt. */
  kind: string;
  relations: string[];
  columns: string[];
  functions: string[];
}

/** Session-visible side effects of an allowed statement, applied by the session once it succeeds. */
export type Effect =
  | { type: 'prepare'; name: string }
  | { type: 'deallocate'; name: string | null }
  | { type: 'declare'; name: string; hold?: boolean }
  | { type: 'close'; name: string | null }
  /** RESET ALL / DISCARD ALL: the session must re-apply the stamped identity and limits. */
  | { type: 'restamp' };

export type Decision =
  | {
      allow: true;
      ruleId: string;
      statements: StatementSummary[];
      /** SQL to send instead of the client's (LIMIT capping); already re-parsed and re-checked. */
      rewrittenSql: string | undefined;
      rowCap: { maxRows: number; onRowCap: 'truncate' | 'error' } | undefined;
      effects: Effect[];
      /** Set in shadow mode when enforcement would have denied. */
      shadowDenied: { reason: string; message: string } | undefined;
      /** Values the session must check when the statement is bound (Bind), before it runs. */
      bindChecks?: readonly BindCheck[];
      /**
       * The text run lists pgwarden.scope / pgwarden.session (or SHOW pgwarden.<name>) as the policy has it now: a
       * prepared statement, portal or cursor made from it keeps that copy upstream, so it is not decided again after a
       * reload but refused (the client prepares it again and gets the new listing).
       */
      listsScope?: true;
      /** The text run is policy/catalog-scope.ts's filtered rewrite: the server's analysis judges it as such. */
      catalogFiltered?: true;
      /** Where PostgreSQL's own analysis ran, when not on pgwarden's analysis connections (audit field analysedOn). */
      analysedOn?: 'session';
      /**
       * Allowed only as the session's temporary relations resolve now (SessionView.deferTemporary): valid where it was
       * analysed, so a prepared statement of it is analysed again before each later use.
       */
      dependsOnTemporary?: true;
      /**
       * Type names the snapshot does not know (SessionView.deferTypes), by the index of the statement naming them: the
       * server's analysis on the session's own connection resolves each and allows only a type in a schema the role may
       * create in (server-check.ts); anywhere else this decision is refused.
       */
      deferredTypes?: readonly { statement: number; names: readonly string[]; fromString: boolean }[];
    }
  | {
      allow: false;
      ruleId: string | undefined;
      /** 42501 or 0A000 for pgwarden's own refusals; PostgreSQL's own code when its analysis of the statement failed. */
      sqlstate: string;
      /** Client-safe text naming the statement kind and the reason. */
      message: string;
      detail: string | undefined;
      /** For the agent; speaks of what it can do itself. */
      hint: string | undefined;
      /** For the operator (what to change in the policy): the audit event and log only, never the client. */
      operatorHint?: string;
      /** Low-cardinality reason for metrics, e.g. 'write_in_read_only', 'relation_not_allowed'. */
      reason: string;
      statements: StatementSummary[];
      /** 1-based character position in the client's text, when PostgreSQL's analysis reported one. */
      position?: number;
      /** reason server_error: where in its source PostgreSQL raised the error (ErrorResponse F, L, R), passed on as sent. */
      source?: { file?: string; line?: string; routine?: string };
      /**
       * An unknown relation in a schema the role may create in (reason unknown_relation): the 42P01 to answer instead
       * once a catalog read that started after the statement arrived does not have it either (proxy/session/policy-gate.ts).
       */
      confirmAbsent?: { message: string; detail: string; position?: number };
      /** Where PostgreSQL's own analysis ran, when not on pgwarden's analysis connections (audit field analysedOn). */
      analysedOn?: 'session';
    };
