// Catalog relations and functions a role with `catalog: introspection` may use: what psql's \d family and common drivers query.
//
// Curated from the catalog queries psql 15 issues for \d, \dt, \d <table>, \dn, \df, \l, \dv, \di,
// \du, \dx, \dT, \ds, \dp, \dm, \db, \dconfig (captured with `psql -E` against PostgreSQL 15.18),
// pgJDBC's TypeInfoCache, SQLAlchemy's has_table and information_schema-based tools. Everything
// here is metadata (names, types, definitions, comments, sizes); relations holding data samples,
// credentials, other sessions' activity or server files are left out and listed in
// DENIED_SYSTEM_RELATIONS with the reason. Note: the information_schema views and pg_class show the
// names of every relation the upstream database role can see, including ones the pgwarden role may
// not read; introspection reveals names and shapes, never rows.

/** pg_catalog relations allowed for introspection roles. */
export const INTROSPECTION_PG_CATALOG: readonly string[] = [
  'pg_aggregate',
  'pg_am',
  'pg_amop',
  'pg_amproc',
  'pg_attrdef',
  'pg_attribute',
  'pg_auth_members',
  'pg_available_extension_versions',
  'pg_available_extensions',
  'pg_cast',
  'pg_class',
  'pg_collation',
  'pg_constraint',
  'pg_conversion',
  'pg_database',
  'pg_default_acl',
  'pg_depend',
  'pg_description',
  'pg_enum',
  'pg_event_trigger',
  'pg_extension',
  'pg_foreign_data_wrapper',
  'pg_foreign_server',
  'pg_foreign_table',
  'pg_group',
  'pg_index',
  'pg_indexes',
  'pg_inherits',
  'pg_init_privs',
  'pg_language',
  'pg_largeobject_metadata',
  'pg_matviews',
  'pg_namespace',
  'pg_opclass',
  'pg_operator',
  'pg_opfamily',
  'pg_parameter_acl',
  'pg_partitioned_table',
  'pg_policies',
  'pg_policy',
  'pg_proc',
  'pg_publication',
  'pg_publication_namespace',
  'pg_publication_rel',
  'pg_publication_tables',
  'pg_range',
  'pg_rewrite',
  'pg_roles',
  'pg_rules',
  'pg_seclabel',
  'pg_seclabels',
  'pg_sequence',
  'pg_sequences',
  'pg_settings',
  'pg_shdepend',
  'pg_shdescription',
  'pg_shseclabel',
  'pg_statistic_ext',
  'pg_subscription_rel',
  'pg_tables',
  'pg_tablespace',
  'pg_timezone_abbrevs',
  'pg_timezone_names',
  'pg_transform',
  'pg_trigger',
  'pg_ts_config',
  'pg_ts_config_map',
  'pg_ts_dict',
  'pg_ts_parser',
  'pg_ts_template',
  'pg_type',
  'pg_user',
  'pg_views',
];

/** information_schema views allowed for introspection roles (all of them describe metadata only). */
export const INTROSPECTION_INFORMATION_SCHEMA: readonly string[] = [
  'administrable_role_authorizations',
  'applicable_roles',
  'attributes',
  'character_sets',
  'check_constraint_routine_usage',
  'check_constraints',
  'collation_character_set_applicability',
  'collations',
  'column_column_usage',
  'column_domain_usage',
  'column_options',
  'column_privileges',
  'column_udt_usage',
  'columns',
  'constraint_column_usage',
  'constraint_table_usage',
  'data_type_privileges',
  'domain_constraints',
  'domain_udt_usage',
  'domains',
  'element_types',
  'enabled_roles',
  'foreign_data_wrapper_options',
  'foreign_data_wrappers',
  'foreign_server_options',
  'foreign_servers',
  'foreign_table_options',
  'foreign_tables',
  'information_schema_catalog_name',
  'key_column_usage',
  'parameters',
  'referential_constraints',
  'role_column_grants',
  'role_routine_grants',
  'role_table_grants',
  'role_udt_grants',
  'role_usage_grants',
  'routine_column_usage',
  'routine_privileges',
  'routine_routine_usage',
  'routine_sequence_usage',
  'routine_table_usage',
  'routines',
  'schemata',
  'sequences',
  'sql_features',
  'sql_implementation_info',
  'sql_parts',
  'sql_sizing',
  'table_constraints',
  'table_privileges',
  'tables',
  'transforms',
  'triggered_update_columns',
  'triggers',
  'udt_privileges',
  'usage_privileges',
  'user_defined_types',
  'view_column_usage',
  'view_routine_usage',
  'view_table_usage',
  'views',
];

/** System relations never allowed, even for introspection roles, and why. */
export const DENIED_SYSTEM_RELATIONS: ReadonlyMap<string, string> = new Map([
  ['pg_catalog.pg_authid', 'password hashes'],
  ['pg_catalog.pg_shadow', 'password hashes'],
  ['pg_catalog.pg_user_mapping', 'foreign-server credentials'],
  ['pg_catalog.pg_user_mappings', 'foreign-server credentials'],
  ['information_schema.user_mappings', 'foreign-server credentials'],
  ['information_schema.user_mapping_options', 'foreign-server credentials'],
  ['pg_catalog.pg_statistic', 'sampled column values (most common values, histograms) of every table'],
  ['pg_catalog.pg_stats', 'sampled column values, including columns the role may not read'],
  ['pg_catalog.pg_stats_ext', 'sampled values of extended statistics'],
  ['pg_catalog.pg_stats_ext_exprs', 'sampled values of extended statistics'],
  ['pg_catalog.pg_statistic_ext_data', 'sampled values of extended statistics'],
  ['pg_catalog.pg_largeobject', 'large-object contents'],
  ['pg_catalog.pg_file_settings', 'server configuration files'],
  ['pg_catalog.pg_hba_file_rules', 'pg_hba.conf'],
  ['pg_catalog.pg_ident_file_mappings', 'pg_ident.conf'],
  ['pg_catalog.pg_stat_activity', "other sessions' query text"],
  ['pg_catalog.pg_locks', "other sessions' locks"],
  ['pg_catalog.pg_prepared_xacts', "other sessions' prepared transactions"],
  ['pg_catalog.pg_subscription', 'connection strings that may hold passwords'],
  ['pg_catalog.pg_config', 'server build paths'],
  ['pg_catalog.pg_db_role_setting', 'settings of other roles'],
  ['information_schema._pg_user_mappings', 'foreign-server credentials'],
  // Other sessions' activity: the views behind the per-backend functions judgeFunction denies.
  ['pg_catalog.pg_stat_ssl', "other sessions' TLS details (client certificate names)"],
  ['pg_catalog.pg_stat_gssapi', "other sessions' GSSAPI principals"],
  ['pg_catalog.pg_stat_progress_analyze', "other sessions' running commands"],
  ['pg_catalog.pg_stat_progress_basebackup', "other sessions' running commands"],
  ['pg_catalog.pg_stat_progress_cluster', "other sessions' running commands"],
  ['pg_catalog.pg_stat_progress_copy', "other sessions' running commands"],
  ['pg_catalog.pg_stat_progress_create_index', "other sessions' running commands"],
  ['pg_catalog.pg_stat_progress_vacuum', "other sessions' running commands"],
  ['pg_catalog.pg_stat_replication', 'replication connections and their client addresses'],
  ['pg_catalog.pg_stat_wal_receiver', "the WAL receiver's connection string"],
  ['pg_catalog.pg_stat_subscription', 'logical replication workers of other sessions'],
  ['pg_catalog.pg_replication_slots', 'replication slots and the sessions using them'],
  ['pg_catalog.pg_replication_origin_status', 'replication progress (EXECUTE of its function is revoked from PUBLIC)'],
  ['pg_catalog.pg_backend_memory_contexts', 'server memory internals'],
  ['pg_catalog.pg_shmem_allocations', 'server shared-memory internals'],
  ['pg_catalog.pg_shmem_allocations_numa', 'server shared-memory internals'],
  ['pg_catalog.pg_aios', "other sessions' in-progress I/O"],
]);

/**
 * System views that show only this session's own state, readable by every role whatever its `catalog` mode:
 * pgwarden gives each client its own upstream session (never pooled), so they list what this client itself
 * prepared or declared, no more than the client already knows. Drivers' tests read them to check that a
 * statement was prepared (psycopg, postgres.js). Their functions (pg_prepared_statement, pg_cursor) are
 * reviewed `safe` for the same reason.
 */
export const SESSION_RELATIONS: ReadonlyMap<string, string> = new Map([
  ['pg_catalog.pg_prepared_statements', "this session's own prepared statements"],
  ['pg_catalog.pg_cursors', "this session's own open cursors"],
]);

/**
 * What those views and their functions show is the text pgwarden sent upstream, not only what the client wrote: under
 * `catalog: scoped`, a statement over the catalogs is sent rewritten, and its filters name the role's denied columns
 * (catalog-scope.ts deniedAttribute), which that mode hides everywhere else. For a scoped role these columns (and any
 * whole-row or `*` use of the view) and the functions behind them are refused; their other columns stay readable.
 */
export const SESSION_TEXT_COLUMNS: ReadonlyMap<string, string> = new Map([
  ['pg_catalog.pg_prepared_statements', 'statement'],
  ['pg_catalog.pg_cursors', 'statement'],
]);
export const SESSION_TEXT_FUNCTIONS: ReadonlySet<string> = new Set([
  'pg_catalog.pg_prepared_statement',
  'pg_catalog.pg_cursor',
]);

/**
 * Columns of allowed introspection relations that no role may read, and why: other roles' settings,
 * data values and server file paths. Reading one by name, through `*` or a whole-row reference is
 * refused as if the role's deniedColumns listed it. Keys are qualified relation names.
 */
export const SYSTEM_DENIED_COLUMN_REASONS: ReadonlyMap<string, ReadonlyMap<string, string>> = new Map([
  ['pg_catalog.pg_roles', new Map([['rolconfig', 'per-role settings of every role (what pg_db_role_setting holds)']])],
  ['pg_catalog.pg_user', new Map([['useconfig', 'per-role settings of every role (what pg_db_role_setting holds)']])],
  [
    'pg_catalog.pg_attribute',
    new Map([['attmissingval', 'a stored column value (the default of rows written before ADD COLUMN)']]),
  ],
  ['pg_catalog.pg_sequences', new Map([['last_value', 'the current value of every sequence: data']])],
  [
    'pg_catalog.pg_settings',
    new Map([
      ['sourcefile', 'server configuration file paths'],
      ['sourceline', 'positions in the server configuration files'],
    ]),
  ],
]);

/** `schema.relation` → columns no role may read (SYSTEM_DENIED_COLUMN_REASONS without the reasons). */
export const SYSTEM_DENIED_COLUMNS: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  [...SYSTEM_DENIED_COLUMN_REASONS].map(([rel, cols]) => [rel, new Set(cols.keys())]),
);

/** Functions outside pg_catalog that introspection queries call (pgJDBC uses _pg_expandarray). */
export const INTROSPECTION_EXTRA_FUNCTIONS: readonly string[] = [
  'information_schema._pg_expandarray',
  'information_schema._pg_char_max_length',
  'information_schema._pg_char_octet_length',
  'information_schema._pg_numeric_precision',
  'information_schema._pg_numeric_precision_radix',
  'information_schema._pg_numeric_scale',
  'information_schema._pg_datetime_precision',
  'information_schema._pg_interval_type',
  'information_schema._pg_truetypid',
  'information_schema._pg_truetypmod',
  'information_schema._pg_index_position',
  'information_schema._pg_keysequal',
];

/** Every allowed introspection relation, as `schema.name`. */
export const INTROSPECTION_RELATIONS: ReadonlySet<string> = new Set([
  ...INTROSPECTION_PG_CATALOG.map((n) => `pg_catalog.${n}`),
  ...INTROSPECTION_INFORMATION_SCHEMA.map((n) => `information_schema.${n}`),
]);

/**
 * System relation names the analyzer treats as existing even when the catalog snapshot carries only
 * user schemas, so that an unqualified `pg_class` resolves to pg_catalog as Postgres would.
 */
export const INTROSPECTION_RELATION_NAMES: ReadonlySet<string> = new Set([
  ...INTROSPECTION_RELATIONS,
  ...SESSION_RELATIONS.keys(),
  ...[...DENIED_SYSTEM_RELATIONS.keys()].filter((k) => k.startsWith('pg_catalog.')),
]);

export const SYSTEM_SCHEMAS: ReadonlySet<string> = new Set(['pg_catalog', 'information_schema', 'pg_toast']);

/** True for relations in a system schema. */
export function isSystemRelation(schema: string): boolean {
  return SYSTEM_SCHEMAS.has(schema) || schema.startsWith('pg_temp') || schema.startsWith('pg_toast');
}
