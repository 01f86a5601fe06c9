// Table-driven policy decisions: each bypass family in one line, and the legitimate traffic that must pass.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { CATALOG, PSQL15_QUERIES, ROLES, makeCatalog, sessionFor, type RoleName } from '../../fixtures/catalog.ts';

/** [role, sql, expected, reason or ruleId (optional)] */
type Case = [RoleName, string, 'allow' | 'deny', string?];

const LONG = `public_data_${'x'.repeat(51)}_secret_suffix`; // 77 bytes: truncated to the allowed 63-byte name

const families: Record<string, Case[]> = {
  // Several statements in one simple Query are all checked; one denial denies the message.
  'multi-statement': [
    ['analyst', 'SELECT 1; COMMIT; DROP TABLE x', 'deny', 'write_in_read_only'],
    ['analyst', 'SELECT 1; DELETE FROM orders', 'deny', 'write_in_read_only'],
    ['analyst', 'SELECT 1;;SELECT 2;', 'allow'],
    ['analyst', "SELECT ';'; SELECT $$;$$", 'allow'],
    ['analyst', 'SELECT id FROM orders; SELECT * FROM secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'BEGIN; SELECT id FROM orders; COMMIT', 'allow'],
  ],
  // The real lexer: comments hiding quotes do not swallow a later statement.
  'lexer differentials': [
    ['analyst', "SELECT /* ' */ 1; DELETE FROM victim; SELECT /* ' */ 2", 'deny', 'write_in_read_only'],
    ['analyst', 'SELECT /* $$ */ 1; DELETE FROM victim; SELECT /* $$ */ 2', 'deny', 'write_in_read_only'],
    ['analyst', '/* -- */ DELETE FROM victim', 'deny', 'write_in_read_only'],
    ['analyst', "/* it's a report */ SELECT count(*) FROM victim", 'allow'],
    ['analyst', "SELECT E'\\' , '; DELETE FROM victim; --'", 'deny', 'write_in_read_only'],
    ['analyst', 'SELECT 1 FROM\u00a0secrets', 'allow'],
    ['analyst', 'SELECT 1 -- note\u2028; DELETE FROM victim', 'allow'],
    ['analyst', "SELECT 'a'\n'b'", 'allow'],
    ['analyst', 'SELECT 123abc', 'deny', 'parse_error'],
  ],
  // Embedded NUL: the parser would stop at it, hiding what follows.
  'embedded NUL': [
    ['analyst', 'SELECT 1\0; DELETE FROM victim', 'deny', 'invalid_input'],
    ['analyst', '\0', 'deny', 'invalid_input'],
  ],
  // Unparsable text fails closed.
  unparsable: [
    ['analyst', 'SELEC 1', 'deny', 'parse_error'],
    ['analyst', 'SELECT (', 'deny', 'parse_error'],
    ['analyst', "SELECT 'unterminated", 'deny', 'parse_error'],
  ],
  // Empty queries are EmptyQueryResponse.
  empty: [
    ['analyst', '', 'allow', 'builtin.empty'],
    ['analyst', '   \n\t', 'allow', 'builtin.empty'],
    ['analyst', ';', 'allow', 'builtin.empty'],
    ['analyst', '-- nothing', 'allow', 'builtin.empty'],
  ],
  // Data-modifying CTEs run even when the outer query only reads.
  'data-modifying CTEs': [
    ['analyst', 'WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d', 'deny', 'write_in_read_only'],
    [
      'analyst',
      'WITH i AS (INSERT INTO orders(id) VALUES (1) RETURNING id) SELECT id FROM i',
      'deny',
      'write_in_read_only',
    ],
    ['analyst', "WITH u AS (UPDATE orders SET status = 'x' RETURNING id) SELECT 1", 'deny', 'write_in_read_only'],
    [
      'analyst',
      'SELECT * FROM (WITH d AS (DELETE FROM victim RETURNING x) SELECT x FROM d) s',
      'deny',
      'write_in_read_only',
    ],
    [
      'analyst',
      'SELECT (WITH d AS (DELETE FROM victim RETURNING x) SELECT x FROM d LIMIT 1)',
      'deny',
      'write_in_read_only',
    ],
    [
      'writer',
      'WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING id) SELECT id FROM d',
      'allow',
      'roles.writer.write.relations',
    ],
    ['writer', 'WITH d AS (DELETE FROM victim RETURNING x) SELECT x FROM d', 'deny', 'relation_not_allowed'],
  ],
  // SELECT INTO creates a table.
  'SELECT INTO': [
    ['analyst', 'SELECT * INTO newtab FROM orders', 'deny', 'write_in_read_only'],
    ['analyst', 'SELECT id INTO TEMP t FROM orders', 'deny', 'write_in_read_only'],
    ['writer', 'SELECT id INTO t FROM orders', 'deny', 'statement_kind_denied'],
    ['analyst', 'CREATE TABLE t AS SELECT id FROM orders', 'deny', 'write_in_read_only'],
  ],
  // Row locks are writes.
  'FOR UPDATE/SHARE': [
    ['analyst', 'SELECT id FROM orders FOR UPDATE', 'deny', 'write_in_read_only'],
    ['analyst', 'SELECT id FROM orders FOR SHARE', 'deny', 'write_in_read_only'],
    ['analyst', 'SELECT id FROM orders FOR NO KEY UPDATE SKIP LOCKED', 'deny', 'write_in_read_only'],
    ['analyst', 'SELECT * FROM (SELECT id FROM orders FOR UPDATE) s', 'deny', 'write_in_read_only'],
    ['writer', 'SELECT id FROM orders WHERE id = 1 FOR UPDATE', 'allow'],
    ['writer', 'SELECT id FROM victim FOR UPDATE', 'deny', 'write_in_read_only'],
  ],
  // EXPLAIN ANALYZE executes its statement.
  EXPLAIN: [
    ['analyst', 'EXPLAIN ANALYZE DELETE FROM orders', 'deny', 'write_in_read_only'],
    ['analyst', 'EXPLAIN DELETE FROM orders', 'deny', 'write_in_read_only'],
    ['analyst', 'EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM orders', 'allow'],
    ['analyst', 'EXPLAIN SELECT * FROM secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'EXPLAIN SELECT ssn FROM customers', 'deny', 'column_denied'],
    ['analyst', 'EXPLAIN CREATE TABLE t AS SELECT 1', 'deny', 'write_in_read_only'],
    ['analyst', 'EXPLAIN EXECUTE p', 'allow'],
    ['analyst', 'EXPLAIN EXECUTE nope', 'deny', 'unknown_prepared_statement'],
    ['writer', 'EXPLAIN ANALYZE UPDATE orders SET status = status', 'allow'],
  ],
  // COPY only to the client.
  COPY: [
    ['analyst', "COPY orders TO PROGRAM 'curl evil'", 'deny', 'statement_kind_denied'],
    ['analyst', "COPY orders TO '/tmp/x'", 'deny', 'statement_kind_denied'],
    ['analyst', "COPY orders FROM '/etc/passwd'", 'deny', 'statement_kind_denied'],
    ['analyst', 'COPY orders FROM STDIN', 'deny', 'write_in_read_only'],
    ['analyst', 'COPY orders TO STDOUT', 'allow'],
    ['analyst', 'COPY orders (id, total) TO STDOUT WITH (FORMAT csv, HEADER)', 'allow'],
    ['analyst', 'COPY (SELECT id FROM orders) TO STDOUT', 'allow'],
    ['analyst', 'COPY customers TO STDOUT', 'deny', 'column_denied'],
    ['analyst', 'COPY customers (id, name) TO STDOUT', 'allow'],
    ['analyst', 'COPY customers (ssn) TO STDOUT', 'deny', 'column_denied'],
    ['analyst', 'COPY secrets TO STDOUT', 'deny', 'relation_not_allowed'],
    ['analyst', 'COPY (DELETE FROM orders RETURNING id) TO STDOUT', 'deny', 'write_in_read_only'],
    ['writer', 'COPY orders FROM STDIN', 'allow'],
    ['writer', 'COPY victim FROM STDIN', 'deny', 'relation_not_allowed'],
    ['writer', "COPY orders FROM PROGRAM 'x'", 'deny', 'statement_kind_denied'],
  ],
  // Procedural code is opaque to the policy.
  'DO/CALL': [
    ['analyst', 'DO $$ BEGIN DELETE FROM victim; END $$', 'deny', 'statement_kind_denied'],
    ['writer', 'DO $$ BEGIN PERFORM 1; END $$', 'deny', 'statement_kind_denied'],
    ['analyst', 'CALL p()', 'deny', 'statement_kind_denied'],
  ],
  // The transaction access mode cannot be flipped to READ WRITE.
  'transaction-mode escapes': [
    ['analyst', 'BEGIN READ WRITE', 'deny', 'write_in_read_only'],
    ['analyst', 'START TRANSACTION READ WRITE', 'deny', 'write_in_read_only'],
    ['analyst', 'BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE', 'deny', 'write_in_read_only'],
    ['analyst', 'SET TRANSACTION READ WRITE', 'deny', 'setting_denied'],
    ['analyst', 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', 'deny', 'setting_denied'],
    ['analyst', 'SET default_transaction_read_only = off', 'deny', 'setting_denied'],
    ['analyst', 'SET transaction_read_only = off', 'deny', 'setting_denied'],
    ['analyst', 'RESET default_transaction_read_only', 'deny', 'setting_denied'],
    // A plain set_config of constants is decided as the SET it is (the same refusal, in the same words).
    ['analyst', "SELECT set_config('default_transaction_read_only','off',false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT pg_catalog.set_config('transaction_read_only','off',true)", 'deny', 'setting_denied'],
    ['fnallow', "SELECT set_config('default_transaction_read_only','off',false)", 'deny', 'builtin.settings'],
    ['writer', "SELECT set_config('default_transaction_read_only','off',false)", 'allow'],
    ['analyst', 'BEGIN READ ONLY', 'allow'],
    ['analyst', 'START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE', 'allow'],
    ['analyst', 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', 'allow'],
    ['analyst', 'SET TRANSACTION READ ONLY', 'allow'],
    ['writer', 'BEGIN READ WRITE', 'allow'],
    ['writer', 'SET TRANSACTION READ WRITE', 'allow'],
    ['writer', 'SET default_transaction_read_only = off', 'allow'],
    ['analyst', "PREPARE TRANSACTION 'x'", 'deny', 'statement_kind_denied'],
    ['analyst', "COMMIT PREPARED 'x'", 'deny', 'statement_kind_denied'],
  ],
  // Identity changes.
  'SET ROLE / SESSION AUTHORIZATION': [
    ['analyst', 'SET ROLE postgres', 'deny', 'setting_denied'],
    ['analyst', 'SET LOCAL ROLE postgres', 'deny', 'setting_denied'],
    ['analyst', 'RESET ROLE', 'deny', 'setting_denied'],
    ['analyst', 'SET SESSION AUTHORIZATION postgres', 'deny', 'setting_denied'],
    ['analyst', 'RESET SESSION AUTHORIZATION', 'deny', 'setting_denied'],
    ['fnallow', 'SET ROLE postgres', 'deny', 'builtin.settings'],
  ],
  // pgwarden.* carries the stamped identity.
  'pgwarden.* tampering': [
    ['analyst', "SET pgwarden.identity = 'admin'", 'deny', 'setting_pinned'],
    ['analyst', "SET LOCAL pgwarden.role = 'admin'", 'deny', 'setting_pinned'],
    ['analyst', 'RESET pgwarden.identity', 'deny', 'setting_pinned'],
    ['fnallow', "SET pgwarden.identity = 'admin'", 'deny', 'builtin.settings'],
    ['analyst', "SELECT set_config('pgwarden.user','admin',false)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT current_setting('pgwarden.user')", 'allow'],
  ],
  // search_path is pinned; unqualified names resolve as the policy resolved them.
  'search_path tampering': [
    ['analyst', 'SET search_path = evil, public', 'deny', 'setting_denied'],
    ['analyst', "SET SCHEMA 'evil'", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('search_path','evil',false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('Search_Path','evil',false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('search_path','evil, public',false)", 'deny', 'setting_denied'],
    // A no-op: the role's own searchPath (public), as PostgreSQL reads the list; RESET restores the stamped value.
    ['analyst', 'SET LOCAL search_path TO DEFAULT', 'allow'],
    ['analyst', 'RESET search_path', 'allow'],
    ['analyst', 'SET search_path = public', 'allow'],
    ['analyst', 'SET search_path TO "public"', 'allow'],
    ['analyst', 'SET search_path = Public', 'allow'],
    ['analyst', "SET search_path = 'public'", 'allow'],
    ['analyst', 'SET search_path = "Public"', 'deny', 'setting_denied'],
    ['analyst', "SET search_path = 'public, evil'", 'deny', 'setting_denied'],
    ['analyst', "SET search_path = ' public'", 'deny', 'setting_denied'],
    ['analyst', 'SET search_path = public, public', 'deny', 'setting_denied'],
    ['analyst', 'SET search_path = public, pg_catalog', 'deny', 'setting_denied'],
    ['analyst', 'SET search_path = pg_temp, public', 'deny', 'setting_denied'],
    ['analyst', "SET search_path = ''", 'deny', 'setting_denied'],
    ['analyst', 'SET search_path = 1', 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('search_path', 'public', false)", 'allow'],
    ['analyst', "SELECT set_config('search_path', ' PUBLIC ', true)", 'allow'],
    ['analyst', "SELECT set_config('search_path', '\"public\"', false)", 'allow'],
    ['analyst', "SELECT set_config('search_path', '\"PUBLIC\"', false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('search_path', 'public,', false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('search_path', 'public, pg_temp', false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('search_path', NULL, false)", 'allow'],
    ['analyst', "SET SCHEMA 'public'", 'allow'],
    ['fnallow', 'SET search_path = evil', 'deny', 'builtin.settings'],
  ],
  // Lexer-relevant settings stay pinned.
  'standard_conforming_strings / encoding': [
    ['analyst', 'SET standard_conforming_strings = off', 'deny', 'setting_pinned'],
    ['analyst', "SET client_encoding = 'SJIS'", 'deny', 'setting_pinned'],
    ['analyst', "SET NAMES 'SJIS'", 'deny', 'setting_pinned'],
    ['analyst', "SET client_encoding = 'SQL_ASCII'", 'deny', 'setting_pinned'],
    ['analyst', 'SET client_encoding = DEFAULT', 'allow'],
    ['analyst', 'RESET client_encoding', 'allow'],
    ['analyst', "SET client_encoding = 'UTF8'", 'allow'],
    ['analyst', "SET LOCAL client_encoding TO 'utf-8'", 'allow'],
    ['analyst', "SET NAMES 'unicode'", 'allow'],
    ['analyst', 'SET client_encoding = 8', 'deny', 'setting_pinned'],
    ['analyst', 'SET backslash_quote = on', 'deny', 'setting_pinned'],
    ['analyst', 'SET escape_string_warning = off', 'deny', 'setting_denied'],
    // A no-op: any spelling PostgreSQL reads as on (the stamped value); RESET restores the stamp.
    ['analyst', 'RESET standard_conforming_strings', 'allow'],
    ['analyst', 'SET standard_conforming_strings = on', 'allow'],
    ['analyst', "SET standard_conforming_strings = 'ON'", 'allow'],
    ['analyst', 'SET standard_conforming_strings = true', 'allow'],
    ['analyst', 'SET standard_conforming_strings = 1', 'allow'],
    ['analyst', "SET LOCAL standard_conforming_strings TO 'y'", 'allow'],
    ['analyst', 'SET standard_conforming_strings TO DEFAULT', 'allow'],
    ['analyst', "SET standard_conforming_strings = 'o'", 'deny', 'setting_pinned'],
    ['analyst', "SET standard_conforming_strings = ' on'", 'deny', 'setting_pinned'],
    ['analyst', "SET standard_conforming_strings = 'onn'", 'deny', 'setting_pinned'],
    ['analyst', 'SET standard_conforming_strings = 0', 'deny', 'setting_pinned'],
    ['analyst', "SET standard_conforming_strings = 'of'", 'deny', 'setting_pinned'],
    ['analyst', 'SET standard_conforming_strings = on, off', 'deny', 'setting_pinned'],
    ['analyst', 'SET standard_conforming_strings FROM CURRENT', 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('standard_conforming_strings', 'on', false)", 'allow'],
    ['analyst', "SELECT set_config('standard_conforming_strings', 'off', false)", 'deny', 'setting_pinned'],
    ['shadow', 'SET standard_conforming_strings = on', 'allow'],
    ['shadow', "SELECT set_config('standard_conforming_strings', 'off', true)", 'deny', 'setting_pinned'],
  ],
  // Settings: harmless list, limits and the role's extras.
  settings: [
    ['analyst', 'SET DateStyle = ISO, MDY', 'allow'],
    ['analyst', "SET TIME ZONE 'UTC'", 'allow'],
    ['analyst', 'SET extra_float_digits = 3', 'allow'],
    ['analyst', "SET LOCAL lock_timeout = '5s'", 'allow'],
    ['analyst', 'SET intervalstyle = postgres', 'allow'],
    ['analyst', 'SET bytea_output = hex', 'allow'],
    ['analyst', "SET lc_messages = 'C'", 'allow'],
    ['analyst', 'RESET DateStyle', 'allow'],
    ['analyst', "SET work_mem = '1GB'", 'deny', 'setting_denied'],
    ['fnallow', "SET work_mem = '64MB'", 'allow'],
    // application_name needs no settings entry: the session rewrites the value under the identity prefix.
    ['analyst', "SET application_name = 'x'", 'allow'],
    ['analyst', 'SET application_name = 42', 'allow'],
    ['analyst', 'SET LOCAL application_name TO x', 'allow'],
    ['analyst', 'RESET application_name', 'allow'],
    ['analyst', 'SET application_name TO DEFAULT', 'allow'],
    ['analyst', "SET application_name = 'a', 'b'", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('application_name', 'x', false)", 'deny', 'setting_pinned'],
    ['fnallow', "SET application_name = 'x'", 'allow'],
    ['analyst', 'SET session_replication_role = replica', 'deny', 'setting_denied'],
    ['analyst', "SET local_preload_libraries = 'x'", 'deny', 'setting_denied'],
    ['analyst', 'SET statement_timeout = 0', 'allow'],
    ['timed', 'SET statement_timeout = 0', 'deny', 'setting_denied'],
    ['timed', 'SET statement_timeout = 1000', 'allow'],
    ['timed', "SET statement_timeout = '4s'", 'allow'],
    ['timed', "SET statement_timeout = '10s'", 'deny', 'setting_denied'],
    ['timed', "SET statement_timeout = '1min'", 'deny', 'setting_denied'],
    ['timed', 'SET statement_timeout = 6000', 'deny', 'setting_denied'],
    ['timed', 'RESET statement_timeout', 'deny', 'setting_denied'],
    ['timed', 'SET statement_timeout TO DEFAULT', 'deny', 'setting_denied'],
    ['timed', "SET statement_timeout = 'abc'", 'deny', 'setting_denied'],
    ['analyst', 'SET foo.bar = 1', 'deny', 'setting_denied'],
  ],
  // RESET ALL / DISCARD ALL undo pgwarden's stamp: allowed with a restamp effect.
  'RESET ALL / DISCARD': [
    ['analyst', 'RESET ALL', 'allow'],
    ['analyst', 'DISCARD ALL', 'allow'],
    ['analyst', 'DISCARD PLANS', 'allow'],
    ['analyst', 'DISCARD TEMP', 'allow'],
    ['analyst', 'DEALLOCATE ALL', 'allow'],
    ['analyst', 'DEALLOCATE p', 'allow'],
    ['analyst', 'UNLISTEN *', 'allow'],
  ],
  // Functions with side effects or reaching files, in SELECT lists and in FROM.
  'side-effecting / file functions': [
    ['analyst', "SELECT pg_read_file('/etc/passwd')", 'deny', 'function_denied'],
    ['analyst', "SELECT * FROM pg_read_file('/etc/passwd')", 'deny', 'function_denied'],
    ['analyst', "SELECT pg_read_binary_file('x')", 'deny', 'function_denied'],
    ['analyst', "SELECT * FROM pg_ls_dir('.')", 'deny', 'function_denied'],
    ['analyst', "SELECT pg_stat_file('x')", 'deny', 'function_denied'],
    ['analyst', "SELECT lo_import('/etc/passwd')", 'deny', 'function_denied'],
    ['analyst', "SELECT lo_export(1, '/tmp/x')", 'deny', 'function_denied'],
    ['analyst', 'SELECT lo_get(1)', 'deny', 'function_denied'],
    ['analyst', "SELECT nextval('s')", 'deny', 'function_denied'],
    ['analyst', "SELECT setval('s', 1)", 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_sleep(10)', 'deny', 'function_denied'],
    ['analyst', "SELECT pg_sleep_for('1 hour')", 'deny', 'function_denied'],
    // Sleeps: only a role with statementTimeout (which ends them) may sleep; a read-write role by default, a read-only
    // one only with functions.allow naming the function.
    ['writer', 'SELECT pg_sleep(10)', 'allow'],
    ['writer', "SELECT pg_catalog.pg_sleep_for('1 hour')", 'allow'],
    ['writer', "SELECT pg_sleep_until(now() + '1 hour')", 'allow'],
    ['timed', 'SELECT pg_sleep(10)', 'deny', 'function_denied'],
    ['timed', "SELECT pg_catalog.pg_sleep_for('1 hour')", 'deny', 'function_denied'],
    ['sleeper', 'SELECT pg_sleep(1)', 'allow'],
    ['sleeper', "SELECT pg_sleep_for('1 second')", 'deny', 'function_denied'],
    ['analyst', "SELECT pg_sleep_until(now() + '1 hour')", 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_catalog.pg_sleep(0)', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_terminate_backend(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_cancel_backend(1)', 'deny', 'function_denied'],
    // The session's own backend, and only it: the argument must be a bare pg_backend_pid() call.
    ['analyst', 'SELECT pg_terminate_backend(pg_backend_pid())', 'allow'],
    ['analyst', 'SELECT pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid(), 1000)', 'allow'],
    ['analyst', 'SELECT pg_cancel_backend(pg_backend_pid())', 'allow'],
    ['analyst', 'SELECT pg_terminate_backend(pg_backend_pid() + 1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_terminate_backend((SELECT pg_backend_pid()))', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_terminate_backend(pg_backend_pid()), pg_terminate_backend(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_terminate_backend(1), pg_terminate_backend(pg_backend_pid())', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_terminate_backend(pg_backend_pid(1))', 'deny', 'function_denied'],
    ['analyst', 'SELECT public.pg_terminate_backend(pg_backend_pid())', 'deny'],
    ['analyst', 'SELECT pg_terminate_backend(public.pg_backend_pid())', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_reload_conf()', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_rotate_logfile()', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_advisory_lock(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_try_advisory_xact_lock(1)', 'deny', 'function_denied'],
    ['analyst', "SELECT pg_notify('c', 'x')", 'deny', 'function_denied'],
    ['analyst', 'SELECT txid_status(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT currval(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT id FROM orders WHERE id = pg_backend_pid() OR pg_sleep(1) IS NULL', 'deny', 'function_denied'],
    ['analyst', 'SELECT id FROM orders ORDER BY pg_sleep(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT id FROM orders LIMIT pg_sleep(1)::int', 'deny', 'function_denied'],
    ['analyst', 'VALUES (pg_sleep(1))', 'deny', 'function_denied'],
    ['analyst', 'SELECT id FROM orders GROUP BY id HAVING pg_sleep(1) IS NULL', 'deny', 'function_denied'],
    ['analyst', 'SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM orders', 'deny', 'function_denied'],
    ['analyst', 'SELECT * FROM ROWS FROM (generate_series(1,2), pg_sleep(1)) x', 'deny', 'function_denied'],
    ['analyst', "SELECT dblink('host=evil', 'select 1')", 'deny', 'function_denied'],
    ['fnallow', "SELECT dblink('host=evil', 'select 1')", 'deny', 'builtin.functions'],
    ['analyst', 'SELECT random(), clock_timestamp(), timeofday(), gen_random_uuid()', 'allow'],
    ['analyst', 'SELECT setseed(0.5)', 'deny', 'function_denied'],
    ['analyst', 'SELECT pg_is_in_recovery()', 'allow'],
    ['analyst', 'SELECT pg_current_logfile()', 'deny', 'function_denied'],
    ['analyst', 'SELECT * FROM pg_stat_get_activity(NULL)', 'deny', 'function_denied'],
  ],
  // SQL text in a string argument runs unparsed.
  'query_to_xml and friends': [
    ['analyst', "SELECT query_to_xml('select * from secrets', true, false, '')", 'deny', 'function_denied'],
    ['analyst', "SELECT query_to_xml_and_xmlschema('select 1', true, false, '')", 'deny', 'function_denied'],
    ['analyst', "SELECT table_to_xml('secrets', true, false, '')", 'deny', 'function_denied'],
    ['analyst', "SELECT schema_to_xml('public', true, false, '')", 'deny', 'function_denied'],
    ['analyst', "SELECT database_to_xml(true, false, '')", 'deny', 'function_denied'],
    ['analyst', "SELECT cursor_to_xml('c', 1, true, false, '')", 'deny', 'function_denied'],
    ['analyst', "SELECT * FROM ts_stat('select to_tsvector(value) from secrets')", 'deny', 'function_denied'],
    ['analyst', "SELECT ts_rewrite('a'::tsquery, 'select * from secrets')", 'deny', 'function_denied'],
  ],
  // reg* casts and object-info functions are catalog lookups (existence oracles).
  'reg* casts and object functions': [
    ['analyst', "SELECT 'secrets'::regclass", 'deny', 'catalog_denied'],
    ['analyst', "SELECT CAST('secrets' AS regclass)", 'deny', 'catalog_denied'],
    ['analyst', "SELECT regclass 'secrets'", 'deny', 'catalog_denied'],
    ['analyst', "SELECT 'secrets'::pg_catalog.regclass::oid", 'deny', 'catalog_denied'],
    ['analyst', "SELECT '{secrets}'::regclass[]", 'deny', 'catalog_denied'],
    ['analyst', 'SELECT tableoid::regclass, id FROM orders', 'deny', 'catalog_denied'],
    ['analyst', "SELECT 'now'::regproc", 'deny', 'catalog_denied'],
    ['analyst', "SELECT 'int4'::regtype", 'deny', 'catalog_denied'],
    ['analyst', "SELECT 'public'::regnamespace", 'deny', 'catalog_denied'],
    ['analyst', "SELECT 'postgres'::regrole", 'deny', 'catalog_denied'],
    ['analyst', "SELECT 'english'::regconfig", 'deny', 'catalog_denied'],
    ['analyst', 'PREPARE q(regclass) AS SELECT $1', 'deny', 'catalog_denied'],
    ['analyst', "SELECT pg_relation_size('secrets')", 'deny', 'function_denied'],
    ['analyst', "SELECT pg_total_relation_size('orders')", 'deny', 'function_denied'],
    ['analyst', "SELECT to_regclass('secrets')", 'deny', 'function_denied'],
    ['analyst', "SELECT regclassin('secrets')", 'deny', 'function_denied'],
    ['analyst', "SELECT has_table_privilege('secrets', 'select')", 'deny', 'function_denied'],
    ['analyst', "SELECT pg_get_viewdef('v_orders')", 'deny', 'function_denied'],
    ['analyst', "SELECT obj_description(1, 'pg_class')", 'deny', 'function_denied'],
    ['fnallow', "SELECT pg_relation_size('orders')", 'allow'],
    ['intro', "SELECT 'orders'::regclass", 'allow'],
    ['intro', "SELECT pg_relation_size('orders'), pg_get_viewdef('v_orders'::regclass)", 'allow'],
    ['analyst', 'SELECT pg_size_pretty(1024::bigint)', 'allow'],
    // format_type prints any type's name, table row types included: a name oracle like regtypeout.
    ['analyst', 'SELECT format_type(23, NULL)', 'deny', 'function_denied'],
    ['intro', 'SELECT format_type(23, NULL)', 'allow'],
  ],
  // current_setting reads only an allow list of settings.
  current_setting: [
    ['analyst', "SELECT current_setting('data_directory')", 'deny', 'function_denied'],
    ['analyst', "SELECT current_setting('config_file')", 'deny', 'function_denied'],
    ['analyst', "SELECT current_setting('my.secret', true)", 'deny', 'function_denied'],
    ['analyst', "SELECT current_setting(name) FROM (VALUES ('x')) v(name)", 'deny', 'function_denied'],
    ['analyst', "SELECT current_setting('server_version_num')::int", 'allow'],
    ['analyst', "SELECT current_setting('TimeZone'), current_setting('search_path')", 'allow'],
    ['analyst', "SELECT current_setting('lc_collate')", 'allow'],
    ['analyst', "SELECT current_setting('statement_timeout'), current_setting('transaction_read_only')", 'allow'],
  ],
  // Relations: every position, every spelling.
  'relations in every position': [
    ['analyst', 'SELECT * FROM secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM orders JOIN secrets s ON s.id = orders.id', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM orders WHERE id IN (SELECT id FROM secrets)', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM orders WHERE EXISTS (SELECT 1 FROM secrets)', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT (SELECT value FROM secrets LIMIT 1)', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM orders UNION SELECT id FROM secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM orders EXCEPT SELECT id FROM secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'WITH s AS (SELECT * FROM secrets) SELECT 1', 'deny', 'relation_not_allowed'],
    [
      'analyst',
      'SELECT * FROM orders o, LATERAL (SELECT value FROM secrets WHERE id = o.id) s',
      'deny',
      'relation_not_allowed',
    ],
    ['analyst', 'TABLE secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT * FROM ONLY secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT * FROM secrets TABLESAMPLE SYSTEM (10)', 'deny', 'relation_not_allowed'],
    ['analyst', 'DECLARE c CURSOR FOR SELECT * FROM secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'PREPARE q AS SELECT * FROM secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM orders ORDER BY (SELECT max(id) FROM secrets)', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM orders LIMIT (SELECT count(*) FROM secrets)', 'deny', 'relation_not_allowed'],
    ['analyst', 'VALUES ((SELECT value FROM secrets))', 'deny', 'relation_not_allowed'],
    [
      'analyst',
      'SELECT count(*) FILTER (WHERE EXISTS (SELECT 1 FROM secrets)) FROM orders',
      'deny',
      'relation_not_allowed',
    ],
    // A name outside the role's relations is refused alike whether it exists or not (temporary relations too).
    ['analyst', 'SELECT * FROM nosuchtable', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT * FROM pg_temp.x', 'deny', 'relation_not_allowed'],
  ],
  // CTE names are scoped: a CTE only hides a relation where it is visible.
  'CTE shadowing': [
    [
      'analyst',
      'SELECT * FROM secrets, (WITH secrets AS (SELECT 1) SELECT * FROM secrets) s',
      'deny',
      'relation_not_allowed',
    ],
    ['analyst', 'WITH secrets AS (SELECT 1 AS x) SELECT * FROM secrets', 'allow'],
    [
      'analyst',
      'WITH a AS (SELECT * FROM secrets), secrets AS (SELECT 1) SELECT * FROM a',
      'deny',
      'relation_not_allowed',
    ],
    [
      'analyst',
      'WITH RECURSIVE secrets(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM secrets WHERE n < 3) SELECT n FROM secrets',
      'allow',
    ],
    [
      'analyst',
      '(WITH secrets AS (SELECT 1) SELECT 1) UNION ALL SELECT 1 FROM secrets',
      'deny',
      'relation_not_allowed',
    ],
    [
      'analyst',
      'SELECT (WITH secrets AS (SELECT 1 AS v) SELECT v FROM secrets), (SELECT value FROM secrets LIMIT 1)',
      'deny',
      'relation_not_allowed',
    ],
    ['analyst', 'WITH x AS (SELECT 1) SELECT * FROM public.x', 'deny', 'relation_not_allowed'],
    ['analyst', 'WITH orders AS (SELECT 1 AS id) SELECT * FROM public.orders', 'allow'],
  ],
  // Quoting, case, Unicode escapes, 3-part and over-long names resolve as Postgres does.
  'identifier tricks': [
    ['analyst', 'SELECT * FROM "Secrets"', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT * FROM SECRETS', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT * FROM Public.Secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT * FROM U&"s\\0065crets"', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT * FROM "public"."secrets"', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT * FROM app.public.secrets', 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM app.public.orders', 'allow'],
    ['analyst', 'SELECT id FROM other.public.orders', 'deny', 'relation_not_allowed'],
    ['analyst', `SELECT id FROM ${LONG}`, 'allow'],
    ['analyst', `SELECT * FROM secrets_${'y'.repeat(70)}`, 'deny', 'relation_not_allowed'],
    ['analyst', 'SELECT id FROM sales."Orders"', 'allow'],
    // sales.* is the analyst's: a missing relation there is PostgreSQL's 42P01.
    ['analyst', 'SELECT id FROM sales.orders', 'deny', 'undefined_relation'],
    ['analyst', 'SELECT * FROM pg_class', 'deny', 'catalog_denied'],
    ['analyst', 'SELECT * FROM public.pg_class', 'deny', 'relation_not_allowed'],
  ],
  // System catalogs need catalog: introspection; some never.
  catalogs: [
    ['analyst', 'SELECT relname FROM pg_catalog.pg_class', 'deny', 'catalog_denied'],
    ['analyst', 'SELECT table_name FROM information_schema.tables', 'deny', 'catalog_denied'],
    ['analyst', 'SELECT * FROM pg_settings', 'deny', 'catalog_denied'],
    ['intro', 'SELECT relname FROM pg_class', 'allow', 'roles.intro.catalog'],
    ['intro', 'SELECT table_name FROM information_schema.tables', 'allow'],
    ['intro', 'SELECT rolpassword FROM pg_authid', 'deny', 'builtin.catalog'],
    ['intro', 'SELECT passwd FROM pg_shadow', 'deny', 'catalog_denied'],
    ['intro', 'SELECT * FROM pg_statistic', 'deny', 'catalog_denied'],
    ['intro', 'SELECT most_common_vals FROM pg_stats', 'deny', 'catalog_denied'],
    ['intro', 'SELECT query FROM pg_stat_activity', 'deny', 'catalog_denied'],
    ['intro', 'SELECT * FROM pg_user_mappings', 'deny', 'catalog_denied'],
    ['intro', 'SELECT * FROM pg_largeobject', 'deny', 'catalog_denied'],
    ['intro', 'SELECT * FROM pg_catalog.pg_stat_user_tables', 'deny'],
    ['intro', 'SELECT * FROM secrets', 'deny', 'relation_not_allowed'],
  ],
  // Denied columns in every position.
  'denied columns': [
    ['analyst', 'SELECT ssn FROM customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT c.ssn FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT customers.ssn FROM customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT public.customers.ssn FROM public.customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT app.public.customers.ssn FROM public.customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT "ssn" FROM customers', 'deny', 'column_denied'],
    ['analyst', "SELECT id FROM customers WHERE ssn = '123-45-6789'", 'deny', 'column_denied'],
    ['analyst', 'SELECT id FROM customers ORDER BY ssn', 'deny', 'column_denied'],
    ['analyst', 'SELECT count(*) FROM customers GROUP BY ssn', 'deny', 'column_denied'],
    ['analyst', "SELECT count(*) FROM customers HAVING max(ssn) > '5'", 'deny', 'column_denied'],
    ['analyst', 'SELECT lower(ssn) FROM customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT length(c.ssn) FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT * FROM customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT c.* FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT customers.* FROM customers', 'deny', 'column_denied'],
    ['analyst', 'TABLE customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT c FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT customers FROM customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT row_to_json(c) FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT to_json(c) FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT json_agg(c) FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT ROW(c.*) FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT (c).ssn FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT (c.*)::text FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT x FROM (SELECT ssn AS x FROM customers) s', 'deny', 'column_denied'],
    ['analyst', 'SELECT * FROM (SELECT * FROM customers) s', 'deny', 'column_denied'],
    ['analyst', 'WITH c AS (SELECT ssn FROM customers) SELECT 1', 'deny', 'column_denied'],
    [
      'analyst',
      "SELECT o.id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c WHERE c.ssn = 'x')",
      'deny',
      'column_denied',
    ],
    ['analyst', 'SELECT (SELECT ssn) FROM customers', 'deny', 'column_denied'],
    ['analyst', "SELECT id FROM customers c JOIN (VALUES ('x')) v(ssn) USING (ssn)", 'deny', 'column_denied'],
    ['analyst', "SELECT id FROM customers NATURAL JOIN (SELECT 'x' AS ssn) v", 'deny', 'column_denied'],
    ['analyst', 'SELECT 1 FROM customers a JOIN customers b ON a.ssn = b.ssn', 'deny', 'column_denied'],
    ['analyst', "SELECT id FROM customers WHERE (ssn, id) = ('x', 1)", 'deny', 'column_denied'],
    ['analyst', 'SELECT max(ssn) OVER () FROM customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT id FROM customers WINDOW w AS (PARTITION BY ssn)', 'deny', 'column_denied'],
    ['analyst', 'SELECT DISTINCT ON (ssn) id FROM customers', 'deny', 'column_denied'],
    ['analyst', 'SELECT j.ssn FROM (customers JOIN orders ON true) j', 'deny', 'column_denied'],
    ['analyst', 'SELECT id FROM customers c, LATERAL (SELECT c.ssn) x', 'deny', 'column_denied'],
    ['analyst', 'SELECT hstore(c) FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT c.lower FROM customers c', 'deny', 'column_denied'],
    ['analyst', 'SELECT x.d FROM customers AS x(a, b, c, d)', 'deny', 'column_denied'],
    ['analyst', 'SELECT d FROM customers x(a, b, c, d)', 'deny', 'column_denied'],
    ['analyst', 'SELECT a, b FROM customers x(a, b)', 'allow'],
    ['analyst', 'SELECT j.d FROM (customers c JOIN orders o ON true) AS j(a, b, c, d)', 'deny', 'column_denied'],
    ['analyst', 'SELECT 1 FROM customers x(a, b, c, d) JOIN (SELECT 1 AS d) v USING (d)', 'deny', 'column_denied'],
    ['analyst', 'SELECT id, name, email, created_at FROM customers', 'allow'],
    ['analyst', "SELECT c.id, c.name FROM customers c WHERE c.email LIKE '%@x'", 'allow'],
    ['analyst', 'SELECT name FROM customers JOIN orders ON orders.customer_id = customers.id', 'allow'],
    ['analyst', 'SELECT * FROM orders', 'allow'],
    ['analyst', 'SELECT o.* FROM orders o JOIN customers c ON c.id = o.customer_id', 'allow'],
    ['analyst', 'SELECT id FROM customers c JOIN orders o USING (id)', 'allow'],
    ['analyst', 'SELECT name FROM (SELECT name FROM customers) s', 'allow'],
    ['analyst', 'SELECT s.* FROM (SELECT id, name FROM customers) s', 'allow'],
    ['writer', 'UPDATE orders SET status = (SELECT ssn FROM customers LIMIT 1)', 'deny', 'column_denied'],
  ],
  // Operators resolve to functions; user-defined ones are denied.
  operators: [
    ['analyst', 'SELECT 1 OPERATOR(public.===) 1', 'deny', 'operator_denied'],
    ['analyst', 'SELECT 1 === 1', 'deny', 'operator_denied'],
    ['analyst', "SELECT 'a' @@@ 'b'", 'deny', 'operator_denied'],
    ['analyst', 'SELECT id FROM orders ORDER BY id USING OPERATOR(public.===)', 'deny', 'operator_denied'],
    ['analyst', 'SELECT 1 OPERATOR(pg_catalog.+) 1', 'allow'],
    ['analyst', "SELECT 'a' OPERATOR(pg_catalog.~) '^a' COLLATE pg_catalog.default", 'allow'],
    ['analyst', 'SELECT id FROM orders WHERE id = ANY(ARRAY[1,2])', 'allow'],
    ['analyst', 'SELECT 1 WHERE 1 === ANY(SELECT 1)', 'deny', 'operator_denied'],
  ],
  // Functions outside pg_catalog need functions.allow; unknown ones are denied.
  'user functions': [
    ['analyst', 'SELECT add_one(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT public.add_one(1)', 'deny', 'function_denied'],
    ['fnallow', 'SELECT add_one(1)', 'allow'],
    ['analyst', "SELECT public.leak('x')", 'deny', 'function_denied'],
    ['analyst', 'SELECT lower(1)', 'deny', 'function_denied'],
    // public.lower(int) shadows by argument type: an unqualified call may reach it, so it needs functions.allow.
    ['analyst', "SELECT lower('A')", 'deny', 'function_denied'],
    ['analyst', "SELECT pg_catalog.lower('A')", 'allow'],
    ['analyst', 'SELECT nosuchfunction(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT sales.region_name(1)', 'deny', 'function_denied'],
    ['analyst', 'SELECT other.pg_catalog.now()', 'deny', 'function_denied'],
    ['fnallow', "SELECT md5('x')", 'deny', 'function_denied'],
    ['analyst', "SELECT md5('x')", 'allow'],
  ],
  // Non-read statement kinds are denied to read-only roles.
  'other statement kinds': [
    ['analyst', 'INSERT INTO orders(id) VALUES (1)', 'deny', 'write_in_read_only'],
    ['analyst', "UPDATE orders SET status = 'x'", 'deny', 'write_in_read_only'],
    ['analyst', 'DELETE FROM orders', 'deny', 'write_in_read_only'],
    [
      'analyst',
      'MERGE INTO orders o USING order_items i ON o.id = i.order_id WHEN MATCHED THEN DELETE',
      'deny',
      'write_in_read_only',
    ],
    ['analyst', 'TRUNCATE orders', 'deny', 'write_in_read_only'],
    ['analyst', 'DROP TABLE orders', 'deny', 'write_in_read_only'],
    ['analyst', 'CREATE TABLE x (a int)', 'deny', 'write_in_read_only'],
    ['analyst', 'ALTER TABLE orders ADD COLUMN x int', 'deny', 'write_in_read_only'],
    ['analyst', 'CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$', 'deny', 'write_in_read_only'],
    ['analyst', 'GRANT SELECT ON secrets TO analyst', 'deny', 'write_in_read_only'],
    ['analyst', 'LISTEN chan', 'deny', 'channel_denied'],
    ['analyst', 'NOTIFY chan', 'deny', 'statement_kind_denied'],
    ['analyst', 'LOCK orders', 'deny', 'write_in_read_only'],
    ['analyst', 'VACUUM orders', 'deny', 'write_in_read_only'],
    ['analyst', 'ANALYZE orders', 'deny', 'write_in_read_only'],
    ['analyst', 'CLUSTER orders', 'deny', 'write_in_read_only'],
    ['analyst', 'REINDEX TABLE orders', 'deny', 'write_in_read_only'],
    ['analyst', "ALTER SYSTEM SET work_mem = '1GB'", 'deny', 'write_in_read_only'],
    ['analyst', "LOAD 'evil'", 'deny', 'statement_kind_denied'],
    ['analyst', 'CHECKPOINT', 'deny', 'statement_kind_denied'],
    ['analyst', 'REFRESH MATERIALIZED VIEW mv', 'deny', 'write_in_read_only'],
    ['analyst', 'CREATE EXTENSION dblink', 'deny', 'write_in_read_only'],
    ['analyst', "COMMENT ON TABLE orders IS 'x'", 'deny', 'write_in_read_only'],
    ['analyst', "SECURITY LABEL ON TABLE orders IS 'x'", 'deny', 'write_in_read_only'],
    ['writer', 'DROP TABLE orders', 'deny', 'ddl_denied'],
    ['writer', 'LOCK orders', 'deny', 'statement_kind_denied'],
    ['writer', 'VACUUM orders', 'deny', 'statement_kind_denied'],
  ],
  // Read-write roles: their kinds on their relations, read rules for everything read.
  writes: [
    ['writer', "INSERT INTO orders(id, status) VALUES (1, 'new')", 'allow', 'roles.writer.write.relations'],
    ['writer', "UPDATE orders SET status = 'x' WHERE id = 1", 'allow'],
    ['writer', 'DELETE FROM orders WHERE id = 1 RETURNING id', 'allow'],
    ['writer', 'INSERT INTO orders SELECT * FROM orders', 'allow'],
    ['writer', 'INSERT INTO victim VALUES (1)', 'deny', 'relation_not_allowed'],
    ['writer', "UPDATE customers SET name = 'x'", 'deny', 'relation_not_allowed'],
    ['writer', 'TRUNCATE orders', 'deny', 'write_kind_denied'],
    ['writer', 'INSERT INTO orders SELECT * FROM secrets', 'deny', 'relation_not_allowed'],
    ['writer', 'UPDATE orders SET total = s.value::numeric FROM secrets s', 'deny', 'relation_not_allowed'],
    ['writer', 'DELETE FROM orders USING secrets WHERE secrets.id = orders.id', 'deny', 'relation_not_allowed'],
    ['writer', 'INSERT INTO orders(id) VALUES (1) ON CONFLICT (id) DO UPDATE SET status = excluded.status', 'allow'],
    // writer has a statementTimeout (30s), which ends the sleep.
    ['writer', 'INSERT INTO orders(id) VALUES (1) RETURNING pg_sleep(1)', 'allow'],
    [
      'writer',
      'MERGE INTO orders o USING order_items i ON o.id = i.order_id WHEN MATCHED THEN UPDATE SET total = i.price WHEN NOT MATCHED THEN INSERT (id) VALUES (i.order_id)',
      'allow',
    ],
    [
      'writer',
      'MERGE INTO orders o USING secrets s ON o.id = s.id WHEN MATCHED THEN DELETE',
      'deny',
      'relation_not_allowed',
    ],
    ['writer', 'UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 1', 'allow'],
    [
      'writer',
      'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 5, CURRENT_TIMESTAMP)',
      'allow',
    ],
  ],
  // PREPARE bodies are checked; EXECUTE only of names that passed.
  'PREPARE / EXECUTE': [
    ['analyst', 'PREPARE q AS DELETE FROM orders', 'deny', 'write_in_read_only'],
    ['analyst', 'PREPARE q(int) AS SELECT id FROM orders WHERE id = $1', 'allow'],
    ['analyst', 'EXECUTE p', 'allow'],
    ['analyst', 'EXECUTE p(1)', 'allow'],
    ['analyst', 'EXECUTE nope(1)', 'deny', 'unknown_prepared_statement'],
    ['analyst', 'EXECUTE p(pg_sleep(1))', 'deny', 'function_denied'],
    ['analyst', 'PREPARE q AS EXECUTE p', 'deny', 'parse_error'],
    ['writer', 'PREPARE q AS INSERT INTO orders(id) VALUES ($1)', 'allow'],
  ],
  // Cursors: DECLARE checked, no FOR UPDATE; FETCH only declared names.
  cursors: [
    ['analyst', 'DECLARE c CURSOR FOR SELECT id FROM orders FOR UPDATE', 'deny', 'write_in_read_only'],
    ['analyst', 'DECLARE c2 CURSOR WITH HOLD FOR SELECT id FROM orders', 'deny', 'hold_cursor_denied'],
    ['writer', 'DECLARE c2 CURSOR WITH HOLD FOR SELECT id FROM orders', 'allow'],
    ['analyst', 'DECLARE c2 SCROLL CURSOR FOR SELECT ssn FROM customers', 'deny', 'column_denied'],
    ['analyst', 'FETCH 10 FROM c', 'allow'],
    ['analyst', 'FETCH ALL IN c', 'allow'],
    ['analyst', 'MOVE NEXT IN c', 'allow'],
    ['analyst', 'FETCH 10 FROM unknown_cursor', 'deny', 'unknown_cursor'],
    ['analyst', 'CLOSE c', 'allow'],
    ['analyst', 'CLOSE ALL', 'allow'],
  ],
  // SHOW reads what current_setting may read: never the server's filesystem layout; without catalog: introspection,
  // only display, identity and limit settings and those the role may SET.
  SHOW: [
    // SHOW follows current_setting's rule (policy/settings.ts judgeSettingRead): a setting the role may neither
    // SET nor read with current_setting is refused to a role without catalog: introspection.
    ['analyst', 'SHOW work_mem', 'deny', 'setting_denied'],
    ['analyst', 'SHOW statement_timeout', 'allow'],
    ['analyst', 'SHOW ALL', 'deny', 'setting_denied'],
    ['analyst', 'SHOW TIME ZONE', 'allow'],
    ['analyst', 'SHOW TRANSACTION ISOLATION LEVEL', 'allow'],
    ['analyst', 'SHOW data_directory', 'deny', 'statement_kind_denied'],
    ['analyst', 'SHOW hba_file', 'deny', 'statement_kind_denied'],
  ],
  // Legitimate analytic SQL must pass.
  'legitimate queries': [
    ['analyst', 'SELECT abalance FROM pgbench_accounts WHERE aid = $1', 'allow', 'roles.analyst.relations'],
    ['analyst', 'SELECT abalance FROM pgbench_accounts WHERE aid = 123;', 'allow'],
    ['analyst', 'select count(*) from pgbench_branches', 'allow'],
    ['analyst', 'BEGIN', 'allow'],
    ['analyst', 'END', 'allow'],
    ['analyst', 'COMMIT', 'allow'],
    ['analyst', 'ROLLBACK', 'allow'],
    ['analyst', 'ABORT', 'allow'],
    ['analyst', 'SAVEPOINT a', 'allow'],
    ['analyst', 'RELEASE SAVEPOINT a', 'allow'],
    ['analyst', 'ROLLBACK TO SAVEPOINT a', 'allow'],
    ['analyst', 'COMMIT AND CHAIN', 'allow'],
    [
      'analyst',
      `SELECT o.status, sum(i.qty * i.price) AS revenue, avg(i.price), count(DISTINCT o.customer_id)
      FROM orders o JOIN order_items i ON i.order_id = o.id JOIN customers c ON c.id = o.customer_id
      WHERE o.created_at >= date '1994-01-01' AND o.created_at < date '1994-01-01' + interval '1' year
      GROUP BY o.status HAVING sum(i.qty) > 300 ORDER BY revenue DESC, o.status LIMIT 20`,
      'allow',
    ],
    [
      'analyst',
      `SELECT id, total, rank() OVER w, lag(total) OVER (PARTITION BY customer_id ORDER BY created_at ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
      FROM orders WINDOW w AS (PARTITION BY status ORDER BY total DESC)`,
      'allow',
    ],
    [
      'analyst',
      'SELECT status, customer_id, sum(total) FROM orders GROUP BY GROUPING SETS ((status), (customer_id), ())',
      'allow',
    ],
    ['analyst', 'SELECT status, sum(total) FROM orders GROUP BY ROLLUP (status)', 'allow'],
    [
      'analyst',
      'SELECT c.name, x.total FROM customers c CROSS JOIN LATERAL (SELECT total FROM orders o WHERE o.customer_id = c.id ORDER BY total DESC LIMIT 3) x',
      'allow',
    ],
    [
      'analyst',
      `SELECT info->>'a', info #> '{b,c}', info @> '{"x":1}', info ? 'k', tags[1:2], info['a'] FROM sales."Orders" WHERE info @? '$.a'`,
      'allow',
    ],
    [
      'analyst',
      "SELECT id FROM orders WHERE status ILIKE '%x%' OR status SIMILAR TO 'a%' OR status ~* '^b' OR status ^@ 'c'",
      'allow',
    ],
    [
      'analyst',
      "SELECT extract(year FROM created_at), date_trunc('month', created_at), substring(status from 1 for 2), position('a' in status), overlay(status placing 'x' from 1), trim(both ' ' from status) FROM orders",
      'allow',
    ],
    [
      'analyst',
      "SELECT coalesce(total, 0), nullif(status, ''), greatest(1, 2), least(1, 2), CASE WHEN total > 1 THEN 1 ELSE 0 END FROM orders",
      'allow',
    ],
    [
      'analyst',
      'SELECT current_user, current_date, current_timestamp, session_user, current_schema, now(), version()',
      'allow',
    ],
    [
      'analyst',
      'SELECT DISTINCT ON (customer_id) customer_id, total FROM orders ORDER BY customer_id, total DESC',
      'allow',
    ],
    ['analyst', 'SELECT * FROM generate_series(1, 10) g WHERE g % 2 = 0', 'allow'],
    ['analyst', 'SELECT * FROM unnest(ARRAY[1,2]) WITH ORDINALITY AS t(v, n)', 'allow'],
    ['analyst', 'SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders', 'allow'],
    ['analyst', "SELECT count(*) FILTER (WHERE status = 'x') FROM orders", 'allow'],
    ['analyst', 'WITH t AS MATERIALIZED (SELECT id FROM orders) SELECT * FROM t', 'allow'],
    [
      'analyst',
      'WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT n FROM r',
      'allow',
    ],
    ['analyst', 'SELECT id FROM orders INTERSECT SELECT order_id FROM order_items', 'allow'],
    [
      'analyst',
      'SELECT id FROM orders WHERE id IN (SELECT order_id FROM order_items) AND total > ALL (SELECT price FROM order_items)',
      'allow',
    ],
    ['analyst', 'SELECT x IS DISTINCT FROM 1, x BETWEEN SYMMETRIC 1 AND 2 FROM (VALUES (1)) v(x)', 'allow'],
    ['analyst', "SELECT to_tsvector('english', status) @@ plainto_tsquery('english', 'x') FROM orders", 'allow'],
    [
      'analyst',
      "SELECT id::text, total::numeric(10,2), '2024-01-01'::date, x'ff'::int, b'101', U&'\\0041' FROM orders",
      'allow',
    ],
    [
      'analyst',
      "SELECT json_build_object('id', id), jsonb_agg(total), array_agg(status ORDER BY id) FROM orders",
      'allow',
    ],
    ['analyst', 'SELECT row_to_json(o) FROM orders o', 'allow'],
    ['analyst', 'SELECT o FROM orders o', 'allow'],
    ['analyst', 'SELECT id, ctid, xmin FROM orders', 'allow'],
    ['analyst', 'SELECT * FROM orders TABLESAMPLE BERNOULLI (10) REPEATABLE (1)', 'allow'],
    ['analyst', 'SELECT id FROM v_orders', 'allow'],
    ['analyst', 'VALUES (1, 2), (3, 4)', 'allow'],
    ['analyst', 'TABLE orders', 'allow'],
    ['analyst', 'SELECT id FROM orders ORDER BY id FETCH FIRST 5 ROWS WITH TIES', 'allow'],
    ['analyst', 'SELECT id FROM orders OFFSET 10 LIMIT 5', 'allow'],
    [
      'analyst',
      `SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM orders o, (SELECT 1) t(typname), (SELECT 'x') n(nspname)`,
      'allow',
    ],
    ['analyst', "SELECT id FROM orders WHERE created_at AT TIME ZONE 'UTC' > now() - interval '1 day'", 'allow'],
    ['analyst', 'SELECT xmlelement(name a, id) FROM orders', 'allow'],
    ['analyst', 'SELECT 1 FROM orders o1 JOIN orders o2 USING (id) AS j WHERE j.id = 1', 'allow'],
  ],
  // Shadow mode: allowed, with the would-be denial attached.
  'shadow mode': [
    ['shadow', 'DELETE FROM orders', 'allow', 'roles.shadow.readOnly'],
    ['shadow', 'SELECT * FROM secrets', 'allow'],
    ['shadow', 'SELECT 1\0', 'allow'],
    // What pgwarden itself depends on is held in shadow mode too: the encoding its UTF-8 check assumes, the lexer, the stamps.
    ['shadow', "SET client_encoding = 'SJIS'", 'deny', 'setting_pinned'],
    ['shadow', "SET NAMES 'LATIN1'", 'deny', 'setting_pinned'],
    ['shadow', "SELECT set_config('client_encoding', 'SJIS', false)", 'deny', 'setting_pinned'],
    ['shadow', 'SET standard_conforming_strings = off', 'deny', 'setting_pinned'],
    ['shadow', "SET pgwarden.sub = 'mallory'", 'deny', 'setting_pinned'],
    ['shadow', "SET client_encoding = 'UTF8'", 'allow'],
    // A text the parser cannot read passes in shadow mode, unless it names one of those settings.
    ['shadow', 'SELECT FROM WHERE', 'allow'],
    ['shadow', "SET client_encoding = 'SJIS'; SELECT FROM WHERE", 'deny', 'setting_pinned'],
    ['shadow', "SET application_name = 'x'; SELECT FROM WHERE", 'deny', 'setting_pinned'],
    ['shadow', "SET NAMES 'SJIS' SELECT", 'deny', 'setting_pinned'],
    ['shadow', 'SET work_mem = 1', 'allow'],
  ],
  // set_config(name, value, is_local) of constants in a plain SELECT is decided as SET [LOCAL] name = value.
  'set_config as SET': [
    ['analyst', "select set_config('TimeZone', 'UTC', true)", 'allow'],
    ['analyst', "SELECT set_config('datestyle', 'ISO', false) AS ds", 'allow'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true), pg_catalog.set_config('datestyle', 'ISO', 't')", 'allow'],
    ['analyst', "SELECT set_config('lock_timeout', '5s', NULL)", 'allow'],
    ['analyst', "SELECT set_config('statement_timeout', '1000', false)", 'allow'],
    ['timed', "SELECT set_config('statement_timeout', '1000', true)", 'allow'],
    ['timed', "SELECT set_config('statement_timeout', '10s', true)", 'deny', 'setting_denied'],
    ['timed', "SELECT set_config('statement_timeout', '0', false)", 'deny', 'setting_denied'],
    ['timed', "SELECT set_config('statement_timeout', '400us', false)", 'deny', 'setting_denied'],
    ['timed', "SELECT set_config('statement_timeout', NULL, false)", 'deny', 'setting_denied'],
    ['timed', "SELECT set_config('Statement_Timeout', '1h', false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('idle_in_transaction_session_timeout', '5s', false)", 'allow'],
    ['analyst', "SELECT set_config('idle_in_transaction_session_timeout', '0', false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('idle_in_transaction_session_timeout', '2min', false)", 'deny', 'setting_denied'],
    ['fnallow', "SELECT set_config('work_mem', '64MB', false)", 'allow'],
    ['analyst', "SELECT set_config('work_mem', '64MB', false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('myapp.tenant', 'x', true)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('role', 'postgres', false)", 'deny', 'setting_denied'],
    ['writer', "SELECT set_config('role', 'postgres', false)", 'deny', 'setting_denied'],
    ['writer', "SELECT set_config('session_authorization', 'postgres', false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('transaction_read_only', 'off', true)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('row_security', 'off', true)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('PGWARDEN.sub', 'mallory', false)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('pgwarden.role', NULL, false)", 'deny', 'setting_pinned'],
    ['shadow', "SELECT set_config('pgwarden.sub', 'mallory', false)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('client_encoding', 'utf-8', false)", 'allow'],
    ['analyst', "SELECT set_config('client_encoding', 'LATIN1', false)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('backslash_quote', 'on', false)", 'deny', 'setting_pinned'],
    ['fnallow', "SELECT set_config('application_name', 'x', false)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('application_name', NULL, false)", 'deny', 'setting_pinned'],
    // The name as PostgreSQL's scanner reads it, escapes and all.
    ['analyst', "SELECT set_config(E'search\\x5fpath', 'evil', false)", 'deny', 'setting_denied'],
    // A quoted name is the name with its quotes to set_config (no such setting); SET's quoted identifier keeps its case,
    // which PostgreSQL's setting lookup ignores.
    ['analyst', "SELECT set_config('\"search_path\"', 'evil', false)", 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('search_path ', 'evil', false)", 'deny', 'setting_denied'],
    ['analyst', 'SET "Search_Path" = evil', 'deny', 'setting_denied'],
    ['analyst', 'SET "Search_Path" = public', 'allow'],
    ['analyst', 'SET "STANDARD_CONFORMING_STRINGS" = off', 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('pgwarden.sub', 'alice', false)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config(U&'search\\005fpath', 'evil', false)", 'deny', 'setting_denied'],
    ['analyst', 'SELECT set_config($$search_path$$, $$evil$$, false)', 'deny', 'setting_denied'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true), set_config('search_path', 'evil', true)", 'deny'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true); SELECT set_config('role', 'x', true)", 'deny'],
    // Anything but a plain SELECT of constant calls stays an always-denied function, in shadow mode too.
    ['analyst', "SELECT set_config('timezone', 'UTC', true) FROM orders", 'deny', 'setting_pinned'],
    ['analyst', "SELECT 1 WHERE set_config('timezone', 'UTC', true) IS NOT NULL", 'deny', 'setting_pinned'],
    ['analyst', "WITH c AS (SELECT set_config('timezone', 'UTC', true)) SELECT * FROM c", 'deny', 'setting_pinned'],
    ['analyst', "SELECT * FROM (SELECT set_config('timezone', 'UTC', true)) s", 'deny', 'setting_pinned'],
    ['analyst', "SELECT upper(set_config('timezone', 'UTC', true))", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true)::text", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 'UTC'::text, true)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 'UT' || 'C', true)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', (SELECT 'UTC'), true)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', name, true) FROM customers", 'deny'],
    ['analyst', "SELECT set_config('timezone', $1, true)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config($1, 'UTC', true)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 'UTC', $1)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true), 1", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true) LIMIT 1", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true) ORDER BY 1", 'deny', 'setting_pinned'],
    ['analyst', "SELECT DISTINCT set_config('timezone', 'UTC', true)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true) UNION SELECT 'x'", 'deny', 'setting_pinned'],
    ['analyst', "VALUES (set_config('timezone', 'UTC', true))", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config(VARIADIC ARRAY['timezone', 'UTC', 'true'])", 'deny', 'setting_pinned'],
    ['analyst', "SELECT * FROM set_config('timezone', 'UTC', true)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT public.set_config('timezone', 'UTC', true)", 'deny'],
    ['analyst', "SELECT set_config('timezone', 'UTC', true) OVER ()", 'deny'],
    ['analyst', "SELECT set_config('timezone', 'UTC', 1)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config('timezone', 0, true)", 'deny', 'setting_pinned'],
    ['analyst', "SELECT set_config(NULL, 'UTC', true)", 'deny', 'setting_pinned'],
    ['analyst', "PREPARE p1 AS SELECT set_config('timezone', 'UTC', true)", 'deny', 'setting_pinned'],
    ['analyst', "DECLARE c1 CURSOR FOR SELECT set_config('timezone', 'UTC', true)", 'deny', 'setting_pinned'],
    ['analyst', "EXPLAIN SELECT set_config('timezone', 'UTC', true)", 'deny', 'setting_pinned'],
    ['analyst', "COPY (SELECT set_config('timezone', 'UTC', true)) TO STDOUT", 'deny', 'setting_pinned'],
    ['shadow', "SELECT set_config('timezone', 'UTC', true) FROM orders", 'deny', 'setting_pinned'],
    ['shadow', "SELECT set_config('work_mem', '1GB', true)", 'allow'],
  ],
  // Protocol: a Parse message holds one statement (checked separately below).
};

const cases: Array<[string, ...Case]> = [];
for (const [family, list] of Object.entries(families)) for (const c of list) cases.push([family, ...c]);

beforeAll(async () => {
  await initParser();
});

describe('policy cases', () => {
  it('has hundreds of cases', () => {
    expect(cases.length).toBeGreaterThan(300);
  });

  it.each(cases)('[%s] %s: %s → %s %s', (_family, role, sql, expected, tag) => {
    const d = evaluate(sql, 'simple', sessionFor(ROLES[role], ['p'], ['c']), CATALOG, 1);
    if (expected === 'allow') {
      expect(d.allow, d.allow ? '' : `${d.reason}: ${d.message} / ${d.detail}`).toBe(true);
      if (tag !== undefined && d.allow) expect(d.ruleId).toBe(tag);
    } else {
      expect(d.allow, 'expected a denial').toBe(false);
      if (!d.allow && tag !== undefined) {
        if (tag.includes('.')) expect(d.ruleId).toBe(tag);
        else expect(d.reason).toBe(tag);
      }
      if (!d.allow) {
        // pgwarden's own refusals say so; text PostgreSQL's grammar rejects (42601) and a missing relation the role's
        // relations cover (42P01) get PostgreSQL's own message instead (docs/policy.md, "Refusals as PostgreSQL makes them").
        if (d.sqlstate === '42601') expect(d.reason).toBe('parse_error');
        else if (d.sqlstate === '42P01') expect(d.message).toMatch(/^relation ".+" does not exist$/);
        else {
          expect(d.message).toMatch(/^permission denied by pgwarden: /);
          expect(['42501', '0A000']).toContain(d.sqlstate);
        }
      }
    }
  });
});

describe('pg_terminate_backend / pg_cancel_backend of a parameter: allowed with a Bind check of the value', () => {
  const s = () => sessionFor(ROLES.analyst);
  it.each([
    'SELECT pg_terminate_backend($1)',
    'SELECT pg_catalog.pg_cancel_backend($1)',
    'SELECT pg_terminate_backend($1::int)',
    'SELECT pg_terminate_backend($1::bigint, 1000)',
    'SELECT pg_cancel_backend($1::pg_catalog.int2)',
  ])('%s (Parse): allowed, $1 checked when bound', (sql) => {
    const d = evaluate(sql, 'parse', s(), CATALOG);
    expect(d.allow).toBe(true);
    if (d.allow) expect(d.bindChecks).toEqual([{ kind: 'sibling_backend', param: 1 }]);
  });
  it.each([
    ['the simple protocol (nothing is bound)', 'SELECT pg_terminate_backend($1)', 'simple'],
    ['PREPARE (its EXECUTE binds nothing pgwarden sees)', 'PREPARE p AS SELECT pg_terminate_backend($1)', 'parse'],
    ['an expression of the parameter', 'SELECT pg_terminate_backend($1 + 0)', 'parse'],
    ['a cast through text', 'SELECT pg_terminate_backend($1::text::int)', 'parse'],
    ['a cast to a non-integer type', 'SELECT pg_terminate_backend($1::numeric)', 'parse'],
    ['the parameter used elsewhere too', 'SELECT pg_terminate_backend($1), $1', 'parse'],
    ['a literal', 'SELECT pg_terminate_backend(4242)', 'parse'],
    ['a subquery', 'SELECT pg_terminate_backend((SELECT $1::int))', 'parse'],
    ['a function of that name outside pg_catalog', 'SELECT public.pg_terminate_backend($1)', 'parse'],
  ] as const)('refused: %s', (_n, sql, mode) => {
    expect(evaluate(sql, mode, s(), CATALOG).allow).toBe(false);
  });
});

describe('decision details', () => {
  const s = () => sessionFor(ROLES.analyst, ['p'], ['c']);

  it('a Parse message holding more than one statement is denied as PostgreSQL denies it (42601)', () => {
    const d = evaluate('SELECT 1; SELECT 2', 'parse', s(), CATALOG);
    expect(d.allow).toBe(false);
    if (!d.allow) {
      expect(d.reason).toBe('multiple_statements_in_parse');
      expect(d.sqlstate).toBe('42601');
      expect(d.message).toBe('cannot insert multiple commands into a prepared statement');
    }
    expect(evaluate('SELECT 1', 'parse', s(), CATALOG).allow).toBe(true);
  });

  it('messages name the statement kind, the rule and an actionable hint', () => {
    const d = evaluate('DELETE FROM orders', 'simple', s(), CATALOG);
    expect(d.allow).toBe(false);
    if (d.allow) return;
    expect(d.message).toContain('DELETE');
    expect(d.detail).toBe('role "analyst" is read-only (rule: roles.analyst.readOnly)');
    expect(d.ruleId).toBe('roles.analyst.readOnly');
    expect(d.sqlstate).toBe('42501');
    const r = evaluate('SELECT * FROM secrets', 'simple', s(), CATALOG);
    expect(r.allow).toBe(false);
    if (!r.allow) expect(r.hint).toContain('allowed relations: public.orders, public.customers');
    const c = evaluate('SELECT * FROM customers', 'simple', s(), CATALOG);
    expect(c.allow).toBe(false);
    if (!c.allow) {
      expect(c.message).toContain('ssn');
      expect(c.hint).toContain('allowed columns of public.customers: id, name, email, created_at');
    }
    const col = evaluate('SELECT lower(ssn) FROM customers', 'simple', s(), CATALOG);
    if (!col.allow) expect(col.message).toContain('public.customers.ssn');
  });

  it('effects: PREPARE, DECLARE, CLOSE, DEALLOCATE, DISCARD ALL, RESET ALL', () => {
    const eff = (sql: string) => {
      const d = evaluate(sql, 'simple', s(), CATALOG);
      return d.allow ? d.effects : ['denied'];
    };
    expect(eff('PREPARE q AS SELECT 1')).toEqual([{ type: 'prepare', name: 'q' }]);
    expect(eff('DECLARE k CURSOR FOR SELECT 1')).toEqual([{ type: 'declare', name: 'k' }]);
    expect(eff('CLOSE k')).toEqual([{ type: 'close', name: 'k' }]);
    expect(eff('CLOSE ALL')).toEqual([{ type: 'close', name: null }]);
    expect(eff('DEALLOCATE q')).toEqual([{ type: 'deallocate', name: 'q' }]);
    expect(eff('DEALLOCATE PREPARE "get-acct"')).toEqual([{ type: 'deallocate', name: 'get-acct' }]);
    expect(eff('DEALLOCATE ALL')).toEqual([{ type: 'deallocate', name: null }]);
    expect(eff('RESET ALL')).toEqual([{ type: 'restamp' }]);
    expect(eff('DISCARD ALL')).toEqual([
      { type: 'restamp' },
      { type: 'deallocate', name: null },
      { type: 'close', name: null },
    ]);
    expect(eff('EXPLAIN EXECUTE p')).toEqual([]);
  });

  it('statement summaries list relations, columns and functions', () => {
    const d = evaluate(
      'SELECT upper(c.name), o.total FROM customers c JOIN orders o ON o.customer_id = c.id',
      'simple',
      s(),
      CATALOG,
    );
    expect(d.statements).toHaveLength(1);
    const st = d.statements[0];
    expect(st?.kind).toBe('SelectStmt');
    expect(st?.relations.sort()).toEqual(['public.customers', 'public.orders']);
    expect(st?.functions).toEqual(['pg_catalog.upper']);
    expect(st?.columns).toContain('public.customers.name');
  });

  it('shadow mode reports what would have been denied', () => {
    const d = evaluate('DELETE FROM orders', 'simple', sessionFor(ROLES.shadow), CATALOG);
    expect(d.allow).toBe(true);
    if (d.allow) expect(d.shadowDenied?.reason).toBe('write_in_read_only');
  });

  it('psql \\d catalog queries (captured from psql 15 -E) pass for an introspection role', () => {
    let n = 0;
    for (const [cmd, queries] of Object.entries(PSQL15_QUERIES)) {
      for (const q of queries) {
        n++;
        const d = evaluate(q, 'simple', sessionFor(ROLES.intro), CATALOG);
        expect(d.allow, `${cmd}: ${d.allow ? '' : d.message}`).toBe(true);
        // …also with a catalog snapshot that carries only user schemas.
        const u = evaluate(q, 'simple', sessionFor(ROLES.intro), makeCatalog({ withSystem: false }));
        expect(u.allow, `${cmd} (user-only snapshot): ${u.allow ? '' : u.message}`).toBe(true);
        // …and none of them for a role without catalog access.
        expect(evaluate(q, 'simple', sessionFor(ROLES.analyst), CATALOG).allow, cmd).toBe(false);
      }
    }
    expect(n).toBeGreaterThan(30);
  });

  it('driver metadata queries pass for an introspection role', () => {
    const queries = [
      // pgJDBC TypeInfoCache
      'SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = $1',
      "SELECT typinput='pg_catalog.array_in'::regproc as is_array, typtype, typname, pg_type.oid FROM pg_catalog.pg_type LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r from pg_namespace as ns join ( select s.r, (current_schemas(false))[s.r] as nspname from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r using ( nspname ) ) as sp ON sp.nspoid = typnamespace WHERE pg_type.oid = $1 ORDER BY sp.r, pg_type.oid DESC",
      // SQLAlchemy has_table
      'SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relname = $1::VARCHAR AND pg_catalog.pg_class.relkind = ANY (ARRAY[$2::VARCHAR, $3::VARCHAR]) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != $4::VARCHAR',
      // information_schema-based tools
      "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'orders' ORDER BY ordinal_position",
      'SELECT (information_schema._pg_expandarray(i.indkey)).n FROM pg_catalog.pg_index i',
    ];
    for (const q of queries) {
      const d = evaluate(q, 'parse', sessionFor(ROLES.intro), CATALOG);
      expect(d.allow, d.allow ? q : `${q}: ${d.message}`).toBe(true);
    }
  });
});
