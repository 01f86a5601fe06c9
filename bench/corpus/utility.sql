-- Utility, session and transaction statements that read-only clients, drivers and tools send. Hand-written from the
-- tools' known behaviour; validated on PG 15 (with the `-- setup:` statements run first, in the same transaction unless `-- notx`).
-- name: show-one
SHOW work_mem
-- name: show-all
SHOW ALL
-- name: show-time-zone
SHOW TIME ZONE
-- name: show-tx-isolation
SHOW TRANSACTION ISOLATION LEVEL
-- name: show-server-version
SHOW server_version_num
-- name: explain-plain
EXPLAIN SELECT * FROM pgbench_accounts WHERE aid = 42
-- name: explain-options
EXPLAIN (COSTS OFF, VERBOSE, FORMAT JSON) SELECT region, count(*) FROM sales."Orders" GROUP BY region
-- name: explain-analyze
EXPLAIN (ANALYZE, BUFFERS, TIMING OFF, SUMMARY ON) SELECT count(*) FROM pgbench_branches
-- name: explain-analyze-verbose-legacy
EXPLAIN ANALYZE VERBOSE SELECT abalance FROM pgbench_accounts WHERE aid = 7
-- name: explain-settings-wal
EXPLAIN (SETTINGS true, FORMAT YAML) SELECT 1
-- name: begin
BEGIN
-- name: begin-read-only
BEGIN READ ONLY
-- name: begin-iso
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY
-- name: start-transaction
START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE
-- name: commit
COMMIT
-- name: end
END
-- name: rollback
ROLLBACK
-- name: abort
ABORT
-- name: commit-and-chain
COMMIT AND NO CHAIN
-- name: savepoint
SAVEPOINT sp1
-- name: release-savepoint
-- setup: SAVEPOINT sp1
RELEASE SAVEPOINT sp1
-- name: release-short
-- setup: SAVEPOINT sp2
RELEASE sp2
-- name: rollback-to-savepoint
-- setup: SAVEPOINT sp1
ROLLBACK TO SAVEPOINT sp1
-- name: rollback-to-short
-- setup: SAVEPOINT "my sp"
ROLLBACK TO "my sp"
-- name: set-transaction
SET TRANSACTION ISOLATION LEVEL READ COMMITTED
-- name: set-transaction-read-only
SET TRANSACTION READ ONLY
-- name: set-session-characteristics
SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY
-- name: set-work-mem
SET work_mem = '64MB'
-- name: set-local
SET LOCAL statement_timeout TO 5000
-- name: set-time-zone
SET TIME ZONE 'UTC'
-- name: set-time-zone-local
SET TIME ZONE LOCAL
-- name: set-names
SET NAMES 'UTF8'
-- name: set-datestyle
SET datestyle TO ISO, MDY
-- name: set-search-path
SET search_path TO sales, public
-- name: reset-one
RESET work_mem
-- name: reset-all
RESET ALL
-- name: discard-all
-- notx
DISCARD ALL
-- name: discard-plans
DISCARD PLANS
-- name: discard-temp
DISCARD TEMP
-- name: deallocate
-- setup: PREPARE get_acct(int) AS SELECT abalance FROM pgbench_accounts WHERE aid = $1
DEALLOCATE get_acct
-- name: deallocate-prepare-quoted
-- setup: PREPARE "get-acct"(int) AS SELECT abalance FROM pgbench_accounts WHERE aid = $1
DEALLOCATE PREPARE "get-acct"
-- name: deallocate-all
DEALLOCATE ALL
-- name: prepare
PREPARE q1(int, text) AS SELECT * FROM sales."Orders" WHERE customer_id = $1 AND status = $2
-- name: execute
-- setup: PREPARE q1(int, text) AS SELECT * FROM sales."Orders" WHERE customer_id = $1 AND status = $2
EXECUTE q1(3, 'paid')
-- name: declare-cursor
DECLARE c1 CURSOR FOR SELECT * FROM pgbench_accounts ORDER BY aid
-- name: declare-binary-scroll
DECLARE c2 BINARY SCROLL CURSOR WITHOUT HOLD FOR SELECT aid FROM pgbench_accounts
-- name: fetch-forward
-- setup: DECLARE c1 CURSOR FOR SELECT * FROM pgbench_accounts ORDER BY aid
FETCH FORWARD 100 FROM c1
-- name: fetch-next
-- setup: DECLARE c1 CURSOR FOR SELECT * FROM pgbench_accounts ORDER BY aid
FETCH NEXT IN c1
-- name: fetch-all
-- setup: DECLARE c1 SCROLL CURSOR FOR SELECT * FROM victim
FETCH ALL c1
-- name: fetch-absolute
-- setup: DECLARE c1 SCROLL CURSOR FOR SELECT * FROM victim
FETCH ABSOLUTE 2 FROM c1
-- name: move
-- setup: DECLARE c1 SCROLL CURSOR FOR SELECT * FROM victim
MOVE LAST IN c1
-- name: close
-- setup: DECLARE c1 CURSOR FOR SELECT 1
CLOSE c1
-- name: close-all
CLOSE ALL
-- name: copy-to-stdout
COPY public.victim TO STDOUT
-- name: copy-query-csv
COPY (SELECT id, region, amount FROM sales."Orders" WHERE status = 'paid') TO STDOUT WITH (FORMAT csv, HEADER true, DELIMITER ';')
-- name: copy-binary
COPY pgbench_branches (bid, bbalance) TO STDOUT (FORMAT binary)
-- name: unlisten
UNLISTEN *
-- name: listen
LISTEN pgwarden_bench
-- name: checkpoint-free-show
SHOW max_connections
-- name: jdbc-extra-float
SET extra_float_digits = 3
-- name: jdbc-application-name
SET application_name = 'PostgreSQL JDBC Driver'
-- name: rails-client-min-messages
SET client_min_messages TO 'warning'
-- name: rails-intervalstyle
SET intervalstyle = iso_8601
-- name: sqlalchemy-standard-strings
show standard_conforming_strings
-- name: sqlalchemy-version
select pg_catalog.version()
-- name: sqlalchemy-current-schema
select current_schema()
-- name: rails-type-map
SELECT t.oid, t.typname, t.typelem, t.typdelim, t.typinput, r.rngsubtype, t.typtype, t.typbasetype
FROM pg_type as t LEFT JOIN pg_range as r ON oid = rngtypid
WHERE t.typname IN ('int2', 'int4', 'int8', 'oid', 'float4', 'float8', 'numeric', 'bool', 'timestamp', 'timestamptz')
-- name: pg-dump-search-path
SELECT pg_catalog.set_config('search_path', '', false)
-- name: dbeaver-set-app
SET application_name = 'DBeaver 23.1.0 - Main <corpus>'
-- name: pgadmin-set-bytea
SET bytea_output = 'escape'
-- name: psql-set-client-encoding
SET client_encoding TO 'UTF8'
-- name: multi-simple
SELECT 1; SELECT 2; SHOW work_mem
-- name: multi-comments-semicolons
SELECT ';' AS semi; /* ; */ SELECT $$;$$ AS dollar;; -- trailing ;
SELECT 3
-- name: multi-tx
BEGIN READ ONLY; SELECT count(*) FROM victim; COMMIT
-- name: multi-set-select
SET LOCAL work_mem = '8MB'; SELECT count(*) FROM pgbench_branches
