// The one list of compatibility checks that fail through pgwarden today, each with the issue 13 item whose fix makes it pass.
import { test } from 'vitest';

export type Driver = 'pg' | 'postgres.js' | 'psycopg' | 'pgjdbc';

/**
 * check name → why it fails through pgwarden (never directly). A listed check runs as `test.fails` for the
 * proxied target, so when a fix lands the check passes, its `test.fails` fails, and the entry must be removed:
 * this list can only shrink as the fixes land, never silently hide a regression.
 */
const JDBC_CONNECT = "item 1: pgJDBC's connect sends SET application_name, refused with 42501";

export const EXPECTED_PROXIED_FAILURES: Record<Driver, Record<string, string>> = {
  pg: {
    'backend pid is the server process id': 'item 5: BackendKeyData carries pgwarden\'s pid, not the server\'s',
    'SET application_name': 'item 1: SET application_name is refused (42501)',
    'startup statement_timeout and options': 'item 3: startup parameters are refused where the same SET is allowed (FATAL 0A000)',
    'syntax error is 42601 with its position': 'item 4: a syntax error comes back as 42501',
    'unknown table is 42P01': 'item 4: an unknown table comes back as 42501',
    'LISTEN / NOTIFY': 'item 2: LISTEN/NOTIFY is refused whatever the policy says',
    'temporary table': 'item 2: CREATE TEMP TABLE is refused whatever the policy says',
  },
  'postgres.js': {
    'syntax error is 42601 with its position': 'item 4: a syntax error comes back as 42501',
    'unknown table is 42P01': 'item 4: an unknown table comes back as 42501',
    'LISTEN / NOTIFY': 'item 2: LISTEN/NOTIFY is refused whatever the policy says',
    'temporary table': 'item 2: CREATE TEMP TABLE is refused whatever the policy says',
  },
  psycopg: {
    backend_pid: 'item 5: BackendKeyData carries pgwarden\'s pid, not the server\'s',
    startup_options: 'item 3: the options startup parameter is refused (FATAL) where the same SET is allowed',
    prepared_statements_view: 'not an issue 13 item: pg_catalog.pg_prepared_statements is not among catalog: introspection\'s relations (psycopg\'s own prepare tests read it)',
    syntax_error_class: 'item 4: a syntax error comes back as 42501, so psycopg raises InsufficientPrivilege, not SyntaxError',
    undefined_table_class: 'item 4: an unknown table comes back as 42501, not UndefinedTable',
    listen_notify: 'item 2: LISTEN/NOTIFY is refused whatever the policy says',
    temp_table: 'item 2: CREATE TEMP TABLE is refused whatever the policy says',
  },
  // Every pgJDBC check connects with default settings, so all fail at connect until item 1 lands; the ones
  // that name another item still fail after it (measured with application_name allowed through settings:).
  pgjdbc: {
    'connect': JDBC_CONNECT,
    'database metadata: product and driver': JDBC_CONNECT,
    'application name (setClientInfo)': JDBC_CONNECT,
    'scalar types': JDBC_CONNECT,
    'bytea and intervals': JDBC_CONNECT,
    'timestamps with time zones': JDBC_CONNECT,
    'arrays': JDBC_CONNECT,
    'server-side prepare after prepareThreshold': JDBC_CONNECT,
    'batch inserts': JDBC_CONNECT,
    'getGeneratedKeys': JDBC_CONNECT,
    'DatabaseMetaData.getTables': JDBC_CONNECT,
    'DatabaseMetaData.getColumns': JDBC_CONNECT,
    'DatabaseMetaData.getPrimaryKeys and getIndexInfo': JDBC_CONNECT,
    'ResultSetMetaData': JDBC_CONNECT,
    'transactions: commit and rollback': JDBC_CONNECT,
    'savepoints and an error inside a transaction': JDBC_CONNECT,
    'SQLState of constraint violations': JDBC_CONNECT,
    'SQLState 42601 for a syntax error': 'item 4 (and item 1): a syntax error comes back as 42501',
    'SQLState 42P01 for an unknown table': 'item 4 (and item 1): an unknown table comes back as 42501',
    'setFetchSize cursor (portal with row limit)': JDBC_CONNECT,
    'several statements in one execute': JDBC_CONNECT,
    'CallableStatement': JDBC_CONNECT,
    'large strings (1 MiB)': JDBC_CONNECT,
    '10,000 parameters in one statement': JDBC_CONNECT,
    'CopyManager copyIn and copyOut': JDBC_CONNECT,
    'setQueryTimeout cancels a waiting statement': JDBC_CONNECT,
    'Statement.cancel from another thread': JDBC_CONNECT,
    'LISTEN / NOTIFY': 'item 2 (and item 1): LISTEN/NOTIFY is refused whatever the policy says',
    'backend pid': 'item 5 (and item 1): BackendKeyData carries pgwarden\'s pid, not the server\'s',
    'temporary table': 'item 2 (and item 1): CREATE TEMP TABLE is refused whatever the policy says',
  },
};

/** `test` for a check expected to pass on this target, `test.fails` for one listed above (proxied only). */
export function checkTest(driver: Driver, target: 'direct' | 'proxied', name: string): typeof test | typeof test.fails {
  return target === 'proxied' && name in EXPECTED_PROXIED_FAILURES[driver] ? test.fails : test;
}
