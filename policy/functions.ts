// The curated function policy: which SQL functions a role may call by default, and why; shared by evaluate, tests and docs/functions.md.
import type { CatalogFunction, RolePolicy } from './types.ts';
import { REVIEWED_SCHEMAS, reviewedFunction } from './review/review.ts';

/** One curated entry: an exact function name or a `prefix*` pattern, with a one-line reason. */
export interface FunctionEntry {
  readonly pattern: string;
  readonly reason: string;
}

/**
 * Never callable, whatever the role's `functions.allow` says. Matched on the bare function name in
 * every schema (extensions such as dblink live wherever they were installed). Each one either runs
 * SQL the policy never sees, touches the server's files or processes, changes session or server
 * state behind the proxy's back, or is a cheap denial-of-service lever.
 */
export const ALWAYS_DENIED: readonly FunctionEntry[] = [
  {
    pattern: 'set_config',
    reason:
      "changes settings (search_path, read-only mode, lexer settings) behind the SET policy; a plain SELECT set_config('name', 'value', is_local) of constants is decided as that SET (policy.md, settings)",
  },
  {
    pattern: 'txid_current',
    reason: 'marked stable but assigns a transaction id: a write to server state from a read-only session',
  },
  {
    pattern: 'pg_current_xact_id',
    reason: 'marked stable but assigns a transaction id: a write to server state from a read-only session',
  },
  {
    pattern: 'pg_terminate_backend',
    reason:
      "ends other sessions (allowed: pg_terminate_backend(pg_backend_pid()), the session's own backend, and a Parse's bare pid parameter bound to a session of the same subject and agent)",
  },
  {
    pattern: 'pg_cancel_backend',
    reason:
      "cancels other sessions' queries (allowed: pg_cancel_backend(pg_backend_pid()), and a Parse's bare pid parameter bound to a session of the same subject and agent)",
  },
  { pattern: 'pg_reload_conf', reason: 'reloads the server configuration' },
  { pattern: 'pg_rotate_logfile*', reason: 'rotates the server log' },
  { pattern: 'lo_*', reason: 'large objects: server-side file import/export and data the relation policy cannot see' },
  { pattern: 'loread', reason: 'reads large objects the relation policy cannot see' },
  { pattern: 'lowrite', reason: 'writes large objects' },
  { pattern: 'pg_advisory_*', reason: 'advisory locks outlive the statement and can block other clients' },
  { pattern: 'pg_try_advisory_*', reason: 'advisory locks outlive the statement and can block other clients' },
  { pattern: 'nextval', reason: 'advances a sequence (a write, even in a read-only transaction)' },
  { pattern: 'setval', reason: 'sets a sequence (a write)' },
  { pattern: 'dblink*', reason: 'runs SQL on another connection, outside the proxy' },
  { pattern: 'query_to_xml*', reason: 'runs the SQL text in its argument, which the policy never parses' },
  { pattern: 'query_to_xmlschema', reason: 'runs the SQL text in its argument, which the policy never parses' },
  {
    pattern: 'table_to_xml*',
    reason: 'reads a whole table named by a runtime value, bypassing relation and column rules',
  },
  { pattern: 'table_to_xmlschema', reason: 'describes a table named by a runtime value' },
  { pattern: 'cursor_to_xml*', reason: 'reads from a cursor by name at run time' },
  { pattern: 'schema_to_xml*', reason: 'reads every table of a schema, bypassing relation and column rules' },
  { pattern: 'database_to_xml*', reason: 'reads every table of the database, bypassing relation and column rules' },
  { pattern: 'ts_stat', reason: 'runs the SQL text in its argument' },
  { pattern: 'ts_rewrite', reason: 'one overload runs the SQL text in its argument' },
  { pattern: 'pg_read_file*', reason: 'reads server files' },
  { pattern: 'pg_read_binary_file', reason: 'reads server files' },
  { pattern: 'pg_ls_*', reason: 'lists server directories' },
  { pattern: 'pg_stat_file', reason: 'inspects server files' },
  { pattern: 'pg_file_*', reason: 'adminpack: writes, renames and removes server files' },
  { pattern: 'pg_logdir_ls', reason: 'adminpack: lists the server log directory' },
  { pattern: 'pg_notify', reason: 'sends notifications to other sessions (NOTIFY is denied too)' },
  { pattern: 'pg_promote', reason: 'promotes a standby' },
  { pattern: 'pg_switch_wal', reason: 'forces a WAL switch' },
  { pattern: 'pg_create_restore_point', reason: 'writes a WAL restore point' },
  { pattern: 'pg_backup_*', reason: 'starts or stops a base backup' },
  { pattern: 'pg_wal_replay_*', reason: 'pauses or resumes WAL replay' },
  { pattern: 'pg_logical_*', reason: 'logical decoding: reads every change in the database' },
  { pattern: 'pg_create_*_replication_slot', reason: 'creates replication slots (retains WAL)' },
  { pattern: 'pg_copy_*_replication_slot', reason: 'creates replication slots (retains WAL)' },
  { pattern: 'pg_drop_replication_slot', reason: 'drops replication slots' },
  { pattern: 'pg_replication_*', reason: 'replication origin and slot management' },
  { pattern: 'pg_stat_reset*', reason: 'resets statistics other tools rely on' },
  { pattern: 'pg_log_backend_memory_contexts', reason: 'writes to the server log for another backend' },
  { pattern: 'binary_upgrade_*', reason: 'pg_upgrade internals that rewrite catalog state' },
  { pattern: 'pg_import_system_collations', reason: 'writes to the catalog' },
  { pattern: 'pg_stat_get_activity', reason: "shows other sessions' query text" },
  { pattern: 'pg_stat_get_backend_*', reason: "shows other sessions' activity" },
  { pattern: 'pg_export_snapshot', reason: 'exports a snapshot for use by other sessions' },
  { pattern: 'pg_current_logfile', reason: 'reveals server log file paths' },
  { pattern: 'pg_show_all_file_settings', reason: 'reads the server configuration files' },
  { pattern: 'pg_hba_file_rules', reason: 'reads pg_hba.conf' },
  { pattern: 'pg_ident_file_mappings', reason: 'reads pg_ident.conf' },
  { pattern: 'pg_get_backend_memory_contexts', reason: 'server internals of this backend' },
  { pattern: 'pg_get_shmem_allocations*', reason: 'server shared-memory internals' },
  // From the catalog review (policy/review/): functions behind denied views, other sessions' activity, data, writes.
  { pattern: 'pg_lock_status', reason: 'locks of every session: produces the denied pg_locks view' },
  {
    pattern: 'pg_prepared_xact',
    reason: 'prepared transactions of every session: produces the denied pg_prepared_xacts view',
  },
  { pattern: 'pg_config', reason: 'server build paths: produces the denied pg_config view' },
  {
    pattern: 'pg_stat_get_progress_info',
    reason: "other sessions' running commands by pid (produces pg_stat_progress_*)",
  },
  {
    pattern: 'pg_stat_get_wal_senders',
    reason: 'replication connections and their client addresses (produces pg_stat_replication)',
  },
  {
    pattern: 'pg_stat_get_wal_receiver',
    reason: "the WAL receiver's connection string and sender host (produces pg_stat_wal_receiver)",
  },
  {
    pattern: 'pg_stat_get_subscription',
    reason: 'logical replication workers of other sessions (produces pg_stat_subscription)',
  },
  {
    pattern: 'pg_get_replication_slots',
    reason: 'replication slots and the pids using them (produces pg_replication_slots)',
  },
  { pattern: 'pg_show_replication_origin_status', reason: 'replication origin progress' },
  { pattern: 'pg_get_aios', reason: 'in-progress I/O of every backend' },
  { pattern: 'pg_get_loaded_modules', reason: 'server library files loaded into the backend' },
  { pattern: 'pg_blocking_pids', reason: "which sessions block a given pid: other sessions' activity" },
  { pattern: 'pg_safe_snapshot_blocking_pids', reason: "which sessions block a given pid: other sessions' activity" },
  {
    pattern: 'pg_isolation_test_session_is_blocked',
    reason: "whether a given pid is blocked: other sessions' activity",
  },
  { pattern: 'pg_get_multixact_members', reason: "the transactions locking a row: other sessions' activity" },
  { pattern: 'pg_last_committed_xact', reason: 'the latest commit of any session' },
  { pattern: 'pg_xact_commit_timestamp*', reason: "commit time of any transaction: other sessions' activity" },
  { pattern: 'txid_status', reason: "commit status of any transaction: other sessions' activity" },
  { pattern: 'pg_xact_status', reason: "commit status of any transaction: other sessions' activity" },
  { pattern: 'pg_current_snapshot', reason: 'the transaction ids other sessions have in progress' },
  { pattern: 'txid_current_snapshot', reason: 'the transaction ids other sessions have in progress' },
  {
    pattern: 'pg_sequence_last_value',
    reason: 'the current value of any sequence: data (pg_sequences.last_value is hidden too)',
  },
  { pattern: 'pg_get_sequence_data', reason: 'the current value of any sequence: data' },
  {
    pattern: 'pg_mcv_list_*',
    reason: 'sampled column values of extended statistics (pg_statistic_ext_data is denied)',
  },
  { pattern: 'currtid2', reason: 'reads a row location in a table named by a runtime value' },
  { pattern: 'pg_log_standby_snapshot', reason: 'writes to the WAL' },
  { pattern: 'brin_summarize_*', reason: 'index maintenance: writes' },
  { pattern: 'brin_desummarize_range', reason: 'index maintenance: writes' },
  { pattern: 'gin_clean_pending_list', reason: 'index maintenance: writes' },
  { pattern: 'pg_extension_config_dump', reason: "changes an extension's catalog entry" },
  { pattern: 'pg_nextoid', reason: 'initdb and pg_upgrade internals' },
  { pattern: 'pg_stop_making_pinned_objects', reason: 'initdb internals' },
  { pattern: 'pg_clear_*_stats', reason: 'writes planner statistics into the catalog' },
  { pattern: 'pg_restore_*_stats', reason: 'writes planner statistics into the catalog' },
  { pattern: 'pg_sync_replication_slots', reason: 'replication slot management' },
  { pattern: 'pg_stat_have_stats', reason: 'statistics-system internals (EXECUTE revoked from PUBLIC)' },
  { pattern: 'pg_available_wal_summaries', reason: 'lists server WAL summary files' },
  { pattern: 'pg_wal_summary_contents', reason: 'reads server WAL summary files' },
  { pattern: 'fmgr_*_validator', reason: 'validator support functions, not meant to be called from SQL' },
  { pattern: 'plpgsql_validator', reason: 'validator support function, not meant to be called from SQL' },
  { pattern: 'postgresql_fdw_validator', reason: 'validator support function, not meant to be called from SQL' },
  { pattern: 'amvalidate', reason: 'validator support function, not meant to be called from SQL' },
];

/**
 * pg_catalog's sleeps: callable only by a role with a `statementTimeout`, which pgwarden stamps on the upstream
 * session and which the client may only lower (never RESET or raise): the server ends the sleep, with 57014, by
 * then at the latest, and the role's concurrency budget bounds how many sleep at once. Without it a sleep would hold
 * a backend and its snapshot for as long as the client asks, and functions.allow cannot change that. With it, a
 * read-write role (an application's: drivers' cancel and timeout tests sleep) may sleep by default, since it can
 * already hold row locks as long with a write; a read-only role (an agent reading data, for which a sleep is only a
 * way to hold a backend) sleeps only when its functions.allow lists the function. A stored expression (DEFAULT,
 * CHECK, view body) that would sleep later, in someone else's statement, is refused whatever the role
 * (policy/evaluate.ts restatedChecks).
 */
export const TIMEOUT_BOUNDED: readonly FunctionEntry[] = [
  { pattern: 'pg_sleep', reason: 'holds a backend and its snapshot for as long as it sleeps' },
  { pattern: 'pg_sleep_for', reason: 'holds a backend and its snapshot for as long as it sleeps' },
  { pattern: 'pg_sleep_until', reason: 'holds a backend and its snapshot for as long as it sleeps' },
];

/**
 * pg_catalog functions that describe database objects by name or oid (sizes, definitions,
 * privileges, visibility, comments). They read catalog state rather than table data, are
 * existence oracles for relations the role may not read, and are what psql's \d family and
 * drivers' metadata queries use: allowed when `role.catalog === 'introspection'`, denied otherwise.
 */
export const INTROSPECTION_FUNCTIONS: readonly FunctionEntry[] = [
  { pattern: 'pg_relation_size', reason: 'size of any relation by name or oid (existence and size oracle)' },
  { pattern: 'pg_total_relation_size', reason: 'size of any relation' },
  { pattern: 'pg_table_size', reason: 'size of any table' },
  { pattern: 'pg_indexes_size', reason: "size of any table's indexes" },
  { pattern: 'pg_database_size', reason: 'size of any database' },
  { pattern: 'pg_tablespace_size', reason: 'size of any tablespace' },
  { pattern: 'pg_tablespace_location', reason: 'server filesystem path of a tablespace' },
  { pattern: 'pg_tablespace_databases', reason: 'databases using a tablespace' },
  { pattern: 'pg_relation_filenode', reason: 'storage details of a relation' },
  { pattern: 'pg_relation_filepath', reason: 'server file path of a relation' },
  { pattern: 'pg_filenode_relation', reason: 'maps storage back to relations' },
  { pattern: 'pg_relation_is_publishable', reason: 'replication metadata of a relation' },
  { pattern: 'pg_relation_is_updatable', reason: 'metadata of a relation' },
  { pattern: 'pg_column_is_updatable', reason: 'metadata of a column' },
  { pattern: 'pg_partition_tree', reason: 'partition hierarchy of a relation' },
  { pattern: 'pg_partition_ancestors', reason: 'partition hierarchy of a relation' },
  { pattern: 'pg_partition_root', reason: 'partition hierarchy of a relation' },
  {
    pattern: 'pg_get_*',
    reason: 'definitions of objects (views, functions, constraints, indexes, rules, triggers, users)',
  },
  { pattern: 'pg_describe_object', reason: 'describes any catalog object' },
  { pattern: 'pg_identify_object*', reason: 'describes any catalog object' },
  { pattern: 'pg_*_is_visible', reason: 'search-path visibility of any object' },
  { pattern: 'has_*_privilege', reason: 'privilege checks on objects by name (existence oracle)' },
  { pattern: 'pg_has_role', reason: 'role membership checks' },
  { pattern: 'obj_description', reason: 'comments on any object' },
  { pattern: 'col_description', reason: 'comments on columns of any relation' },
  { pattern: 'shobj_description', reason: 'comments on shared objects' },
  { pattern: 'to_reg*', reason: 'looks up object names at run time (existence oracle)' },
  { pattern: 'reg*in', reason: 'input function of a reg* type: looks up object names at run time' },
  { pattern: 'reg*recv', reason: 'receive function of a reg* type: looks up objects' },
  { pattern: 'pg_stat_get_*', reason: 'per-object activity counters (row counts, scans)' },
  { pattern: 'pg_show_all_settings', reason: 'every server setting (the pg_settings view)' },
  { pattern: 'pg_settings_get_flags', reason: 'server setting metadata' },
  { pattern: 'pg_options_to_table', reason: 'decodes reloptions from the catalog' },
  { pattern: 'pg_indexam_has_property', reason: 'index access method metadata' },
  { pattern: 'pg_index_has_property', reason: 'index metadata' },
  { pattern: 'pg_index_column_has_property', reason: 'index metadata' },
  { pattern: 'pg_sequence_parameters', reason: 'sequence metadata' },
  { pattern: 'pg_is_other_temp_schema', reason: 'temp-schema metadata' },
  { pattern: 'pg_my_temp_schema', reason: 'temp-schema metadata' },
  { pattern: 'pg_collation_actual_version', reason: 'collation metadata' },
  { pattern: 'pg_database_collation_actual_version', reason: 'collation metadata' },
  { pattern: 'pg_control_*', reason: 'control file contents' },
  { pattern: 'pg_last_*', reason: 'replication position' },
  { pattern: 'pg_current_wal_*', reason: 'WAL position' },
  // From the catalog review (policy/review/): names of catalog objects and server-wide state.
  { pattern: 'reg*out', reason: 'output function of a reg* type: prints the catalog name of any oid' },
  { pattern: 'reg*send', reason: 'send function of a reg* type: the catalog name of any oid' },
  { pattern: 'regclass', reason: 'looks up a relation name at run time (existence oracle)' },
  { pattern: 'oidvectortypes', reason: 'prints the type names of oids (table row types name tables)' },
  { pattern: 'format_type', reason: 'prints the name of any type by oid (table row types name tables)' },
  { pattern: 'acl*', reason: 'ACL values name roles (aclitemout prints role names for oids)' },
  { pattern: 'makeaclitem', reason: 'an ACL naming roles given by oid' },
  { pattern: 'row_security_active', reason: 'looks up a table by name or oid (existence oracle)' },
  { pattern: 'satisfies_hash_partition', reason: 'looks up a partitioned table by oid' },
  { pattern: 'pg_indexam_progress_phasename', reason: 'index access method metadata' },
  { pattern: 'pg_basetype', reason: 'type metadata by oid' },
  { pattern: 'pg_input_is_valid', reason: 'resolves a type name at run time (table row types too: existence oracle)' },
  {
    pattern: 'pg_input_error_info',
    reason: 'resolves a type name at run time (table row types too: existence oracle)',
  },
  { pattern: 'record_in', reason: 'input function taking a type oid: reads that type (row types name tables)' },
  { pattern: 'enum_in', reason: "input function taking a type oid: reads that enum's labels" },
  { pattern: 'domain_in', reason: 'input function taking a type oid: reads that domain' },
  { pattern: 'array_in', reason: 'input function taking a type oid' },
  { pattern: '*range_in', reason: 'input function taking a type oid' },
  { pattern: 'pg_available_*', reason: 'extensions installed on the server (produces pg_available_extensions)' },
  { pattern: 'pg_extension_update_paths', reason: 'extension scripts installed on the server' },
  {
    pattern: 'pg_timezone_*',
    reason: "the server's time zone database (produces pg_timezone_names, pg_timezone_abbrevs)",
  },
  { pattern: 'inet_server_*', reason: "the upstream server's address: infrastructure behind the proxy" },
  { pattern: 'inet_client_*', reason: "pgwarden's own address as the server sees it" },
  { pattern: 'pg_postmaster_start_time', reason: 'server-wide state: when the server started' },
  { pattern: 'pg_conf_load_time', reason: 'server-wide state: when the configuration was last loaded' },
];

/**
 * Volatile pg_catalog functions allowed anyway: their volatility is about returning a different
 * value per call, not about side effects.
 */
export const VOLATILE_ALLOWED: readonly FunctionEntry[] = [
  { pattern: 'random', reason: "a random number; no side effect beyond this session's seed" },
  { pattern: 'clock_timestamp', reason: 'the wall clock' },
  { pattern: 'timeofday', reason: 'the wall clock as text' },
  { pattern: 'gen_random_uuid', reason: 'a random UUID' },
  { pattern: 'pg_is_in_recovery', reason: 'whether the server is a standby (HA-aware drivers ask)' },
  { pattern: 'pg_jit_available', reason: 'whether JIT is available' },
  { pattern: 'random_normal', reason: 'a random number (PostgreSQL 16 and later)' },
  { pattern: 'array_sample', reason: 'random elements of an array (PostgreSQL 16 and later)' },
  { pattern: 'array_shuffle', reason: 'an array in random order (PostgreSQL 16 and later)' },
  { pattern: 'uuidv4', reason: 'a random UUID (PostgreSQL 18 and later)' },
  { pattern: 'uuidv7', reason: 'a time-ordered random UUID (PostgreSQL 18 and later)' },
];

/**
 * Setting names `current_setting()` may read (its first argument must be a string constant).
 * Others may reveal server paths or secrets an extension keeps in a custom setting.
 */
export const READABLE_SETTINGS: readonly FunctionEntry[] = [
  { pattern: 'pgwarden.*', reason: 'the identity pgwarden stamps on the session' },
  { pattern: 'application_name', reason: 'client identification' },
  { pattern: 'search_path', reason: 'name resolution (pinned by pgwarden)' },
  { pattern: 'timezone', reason: 'display setting' },
  { pattern: 'datestyle', reason: 'display setting' },
  { pattern: 'intervalstyle', reason: 'display setting' },
  { pattern: 'server_version', reason: 'drivers branch on it' },
  { pattern: 'server_version_num', reason: 'drivers branch on it' },
  { pattern: 'server_encoding', reason: 'drivers branch on it' },
  { pattern: 'statement_timeout', reason: 'the limit in force' },
  { pattern: 'lock_timeout', reason: 'the limit in force' },
  { pattern: 'transaction_read_only', reason: 'the transaction mode' },
  { pattern: 'default_transaction_read_only', reason: 'the session mode' },
  { pattern: 'transaction_isolation', reason: 'the transaction mode' },
  { pattern: 'client_encoding', reason: 'drivers check it' },
  { pattern: 'standard_conforming_strings', reason: 'drivers check it' },
  { pattern: 'integer_datetimes', reason: 'drivers check it' },
  { pattern: 'max_identifier_length', reason: 'drivers check it' },
  { pattern: 'extra_float_digits', reason: 'display setting' },
  { pattern: 'bytea_output', reason: 'display setting' },
  { pattern: 'lc_*', reason: 'locale display settings' },
];

/** `current_setting` is handled with READABLE_SETTINGS rather than volatility. */
export const SETTING_READERS = new Set(['current_setting']);

/** Glob match where `*` is any run of characters (names are compared case-sensitively, as the parser returns them). */
export function matchesPattern(name: string, pattern: string): boolean {
  const star = pattern.indexOf('*');
  if (star < 0) return name === pattern;
  const parts = pattern.split('*');
  let pos = 0;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] ?? '';
    if (i === 0) {
      if (!name.startsWith(part)) return false;
      pos = part.length;
    } else if (i === parts.length - 1) {
      return name.length - part.length >= pos && name.endsWith(part);
    } else {
      const at = name.indexOf(part, pos);
      if (at < 0) return false;
      pos = at + part.length;
    }
  }
  return true;
}

/** The first entry matching `name`, if any. */
export function findEntry(entries: readonly FunctionEntry[], name: string): FunctionEntry | undefined {
  for (const e of entries) if (matchesPattern(name, e.pattern)) return e;
  return undefined;
}

export function isReadableSetting(name: string): boolean {
  return findEntry(READABLE_SETTINGS, name.toLowerCase()) !== undefined;
}

export type FunctionVerdict =
  | { allow: true; via: 'role_allow' | 'default' | 'volatile_allowed' | 'introspection' | 'timeout_bounded' }
  | {
      allow: false;
      /** 'builtin' rules cannot be lifted by a policy; 'role' is the role's own deny; 'default' can be lifted with functions.allow. */
      rule: 'builtin' | 'role' | 'default';
      code:
        | 'always_denied'
        | 'needs_statement_timeout'
        | 'role_denied'
        | 'not_pg_catalog'
        | 'volatile'
        | 'introspection_only'
        | 'unknown_function'
        | 'unclassified';
      why: string;
      /** What an operator can do about it, when there is something (set for 'unclassified'). */
      hint?: string;
    };

/** The reason given for a system function the catalog review has not classified. */
export const UNCLASSIFIED_REASON = 'not yet reviewed for this PostgreSQL version';
export const UNCLASSIFIED_HINT =
  "an operator can classify it in pgwarden's catalog review (policy/review/functions.json, see docs/functions.md) or allow it with functions.allow";

/**
 * Judges one resolved function name against the curated lists, the catalog review and the role.
 * `overloads` are the catalog's entries for `schema.name` (undefined when the catalog has none).
 *
 * Order: ALWAYS_DENIED (any schema) → the role's functions.deny → unknown to the catalog → pg_catalog's sleeps
 * (TIMEOUT_BOUNDED: only with statementTimeout; read-only roles also need functions.allow) → the review's
 * `denied` class (builtin) → the role's functions.allow → outside pg_catalog/information_schema →
 * not in the review (`unclassified`) → the review's class (introspection, volatile, volatile_allowed, safe).
 * functions.allow lifts `unclassified` like every other 'default' rule, but never a `denied` one.
 */
export function judgeFunction(
  schema: string,
  name: string,
  overloads: readonly CatalogFunction[] | undefined,
  role: RolePolicy,
): FunctionVerdict {
  const qualified = `${schema}.${name}`;
  const always = findEntry(ALWAYS_DENIED, name);
  if (always !== undefined) return { allow: false, rule: 'builtin', code: 'always_denied', why: always.reason };
  if (role.functions.deny.has(qualified)) {
    return { allow: false, rule: 'role', code: 'role_denied', why: "denied by the role's functions.deny" };
  }
  if (overloads === undefined || overloads.length === 0) {
    return { allow: false, rule: 'default', code: 'unknown_function', why: "not found in pgwarden's catalog snapshot" };
  }
  const sleep = schema === 'pg_catalog' ? findEntry(TIMEOUT_BOUNDED, name) : undefined;
  if (sleep !== undefined) {
    // Both the session's timeout and the policy's: a token narrowing that adds a timeout grants nothing (policy/narrow.ts).
    if (
      role.statementTimeout === undefined ||
      (role.narrowedFrom?.statementTimeout === undefined && role.narrowedFrom !== undefined)
    )
      return {
        allow: false,
        rule: 'builtin',
        code: 'needs_statement_timeout',
        why: `${sleep.reason}: callable only by a role with statementTimeout, which ends it`,
        hint: 'set statementTimeout on the role',
      };
    // A narrowing may make the role read-only (never the reverse), and grants no function: both read off `role`.
    if (!role.readOnly || role.functions.allow.has(`pg_catalog.${sleep.pattern}`))
      return { allow: true, via: 'timeout_bounded' };
    return {
      allow: false,
      rule: 'default',
      code: 'volatile',
      why: `${sleep.reason}: a read-only role sleeps only if its functions.allow lists pg_catalog.${sleep.pattern}`,
      hint: `add pg_catalog.${sleep.pattern} to functions.allow`,
    };
  }
  const system = REVIEWED_SCHEMAS.has(schema);
  const reviewed = system ? reviewedFunction(schema, name) : undefined;
  if (reviewed?.class === 'denied') {
    return {
      allow: false,
      rule: 'builtin',
      code: 'always_denied',
      why: reviewed.reason ?? "denied by pgwarden's catalog review",
    };
  }
  if (role.functions.allow.has(qualified)) return { allow: true, via: 'role_allow' };
  if (!system) {
    return {
      allow: false,
      rule: 'default',
      code: 'not_pg_catalog',
      why: 'functions outside pg_catalog must be listed in functions.allow',
    };
  }
  if (reviewed === undefined) {
    return { allow: false, rule: 'default', code: 'unclassified', why: UNCLASSIFIED_REASON, hint: UNCLASSIFIED_HINT };
  }
  switch (reviewed.class) {
    case 'introspection': {
      if (role.catalog === 'introspection') return { allow: true, via: 'introspection' };
      const why = reviewed.reason ?? findEntry(INTROSPECTION_FUNCTIONS, name)?.reason ?? 'catalog metadata';
      return { allow: false, rule: 'default', code: 'introspection_only', why: `${why}; needs catalog: introspection` };
    }
    case 'volatile_allowed':
      return { allow: true, via: 'volatile_allowed' };
    case 'volatile':
      return { allow: false, rule: 'default', code: 'volatile', why: 'volatile functions may have side effects' };
    case 'safe':
      // Reviewed as computation; a server whose overloads are volatile is not the catalog that was reviewed.
      if (overloads.some((f) => f.volatility === 'v')) {
        return { allow: false, rule: 'default', code: 'volatile', why: 'volatile functions may have side effects' };
      }
      return { allow: true, via: 'default' };
  }
}

/** Every curated list, for docs and tests. */
export const FUNCTION_LISTS = {
  ALWAYS_DENIED,
  TIMEOUT_BOUNDED,
  INTROSPECTION_FUNCTIONS,
  VOLATILE_ALLOWED,
  READABLE_SETTINGS,
} as const;
