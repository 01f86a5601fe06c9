// The curated function policy: which SQL functions a role may call by default, and why; shared by evaluate, tests and docs/functions.md.
import type { CatalogFunction, RolePolicy } from './types.ts';

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
  { pattern: 'set_config', reason: 'changes settings (search_path, read-only mode, lexer settings) behind the SET policy' },
  { pattern: 'txid_current', reason: 'marked stable but assigns a transaction id: a write to server state from a read-only session' },
  { pattern: 'pg_current_xact_id', reason: 'marked stable but assigns a transaction id: a write to server state from a read-only session' },
  { pattern: 'pg_terminate_backend', reason: 'ends other sessions' },
  { pattern: 'pg_cancel_backend', reason: 'cancels other sessions\' queries' },
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
  { pattern: 'pg_sleep*', reason: 'holds a backend and its snapshot: denial of service' },
  { pattern: 'query_to_xml*', reason: 'runs the SQL text in its argument, which the policy never parses' },
  { pattern: 'query_to_xmlschema', reason: 'runs the SQL text in its argument, which the policy never parses' },
  { pattern: 'table_to_xml*', reason: 'reads a whole table named by a runtime value, bypassing relation and column rules' },
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
  { pattern: 'pg_stat_get_activity', reason: 'shows other sessions\' query text' },
  { pattern: 'pg_stat_get_backend_*', reason: 'shows other sessions\' activity' },
  { pattern: 'pg_export_snapshot', reason: 'exports a snapshot for use by other sessions' },
  { pattern: 'pg_current_logfile', reason: 'reveals server log file paths' },
  { pattern: 'pg_show_all_file_settings', reason: 'reads the server configuration files' },
  { pattern: 'pg_hba_file_rules', reason: 'reads pg_hba.conf' },
  { pattern: 'pg_ident_file_mappings', reason: 'reads pg_ident.conf' },
  { pattern: 'pg_get_backend_memory_contexts', reason: 'server internals of this backend' },
  { pattern: 'pg_get_shmem_allocations', reason: 'server shared-memory internals' },
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
  { pattern: 'pg_indexes_size', reason: 'size of any table\'s indexes' },
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
  { pattern: 'pg_get_*', reason: 'definitions of objects (views, functions, constraints, indexes, rules, triggers, users)' },
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
  { pattern: 'pg_sequence_last_value', reason: 'sequence state' },
  { pattern: 'pg_is_other_temp_schema', reason: 'temp-schema metadata' },
  { pattern: 'pg_my_temp_schema', reason: 'temp-schema metadata' },
  { pattern: 'pg_blocking_pids', reason: 'lock waits of other sessions' },
  { pattern: 'pg_collation_actual_version', reason: 'collation metadata' },
  { pattern: 'pg_database_collation_actual_version', reason: 'collation metadata' },
  { pattern: 'pg_lock_status', reason: 'locks of every session (pg_locks)' },
  { pattern: 'pg_prepared_xact', reason: 'prepared transactions of every session' },
  { pattern: 'pg_control_*', reason: 'control file contents' },
  { pattern: 'pg_last_*', reason: 'replication position' },
  { pattern: 'pg_current_wal_*', reason: 'WAL position' },
  { pattern: 'pg_mcv_list_items', reason: 'extended statistics sample values' },
];

/**
 * Volatile pg_catalog functions allowed anyway: their volatility is about returning a different
 * value per call, not about side effects.
 */
export const VOLATILE_ALLOWED: readonly FunctionEntry[] = [
  { pattern: 'random', reason: 'a random number; no side effect beyond this session\'s seed' },
  { pattern: 'clock_timestamp', reason: 'the wall clock' },
  { pattern: 'timeofday', reason: 'the wall clock as text' },
  { pattern: 'gen_random_uuid', reason: 'a random UUID' },
  { pattern: 'pg_is_in_recovery', reason: 'whether the server is a standby (HA-aware drivers ask)' },
  { pattern: 'pg_jit_available', reason: 'whether JIT is available' },
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
  | { allow: true; via: 'role_allow' | 'default' | 'volatile_allowed' | 'introspection' }
  | {
      allow: false;
      /** 'builtin' rules cannot be lifted by a policy; 'role' is the role's own deny; 'default' can be lifted with functions.allow. */
      rule: 'builtin' | 'role' | 'default';
      code: 'always_denied' | 'role_denied' | 'not_pg_catalog' | 'volatile' | 'introspection_only' | 'unknown_function';
      why: string;
    };

/**
 * Judges one resolved function name against the curated lists and the role.
 * `overloads` are the catalog's entries for `schema.name` (undefined when the catalog has none).
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
    return { allow: false, rule: 'role', code: 'role_denied', why: 'denied by the role\'s functions.deny' };
  }
  if (overloads === undefined || overloads.length === 0) {
    return { allow: false, rule: 'default', code: 'unknown_function', why: 'not found in pgwarden\'s catalog snapshot' };
  }
  if (role.functions.allow.has(qualified)) return { allow: true, via: 'role_allow' };
  if (schema !== 'pg_catalog') {
    return { allow: false, rule: 'default', code: 'not_pg_catalog', why: 'functions outside pg_catalog must be listed in functions.allow' };
  }
  const intro = findEntry(INTROSPECTION_FUNCTIONS, name);
  if (intro !== undefined) {
    if (role.catalog === 'introspection') return { allow: true, via: 'introspection' };
    return { allow: false, rule: 'default', code: 'introspection_only', why: `${intro.reason}; needs catalog: introspection` };
  }
  // Postgres picks an overload by argument types, so every overload of the name must be acceptable.
  if (overloads.some((f) => f.volatility === 'v')) {
    if (findEntry(VOLATILE_ALLOWED, name) !== undefined) return { allow: true, via: 'volatile_allowed' };
    return { allow: false, rule: 'default', code: 'volatile', why: 'volatile functions may have side effects' };
  }
  return { allow: true, via: 'default' };
}

/** Every curated list, for docs and tests. */
export const FUNCTION_LISTS = {
  ALWAYS_DENIED,
  INTROSPECTION_FUNCTIONS,
  VOLATILE_ALLOWED,
  READABLE_SETTINGS,
} as const;
