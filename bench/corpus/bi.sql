-- BI / ORM-style read-only statements (hand-written to imitate what BI tools and ORMs send). Validated on PG 15.
-- name: win-running-total
SELECT id, amount, sum(amount) OVER (PARTITION BY region ORDER BY created_at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running
FROM sales."Orders" ORDER BY region, created_at
-- name: win-moving-avg
SELECT created_at::date AS day, avg(amount) OVER (ORDER BY created_at ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS ma7 FROM sales."Orders"
-- name: win-range-interval
SELECT id, count(*) OVER (ORDER BY created_at RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) FROM sales."Orders"
-- name: win-groups-exclude
SELECT id, sum(amount) OVER (ORDER BY amount GROUPS BETWEEN 1 PRECEDING AND 1 FOLLOWING EXCLUDE CURRENT ROW) FROM sales."Orders"
-- name: win-named
SELECT id, rank() OVER w, dense_rank() OVER w, percent_rank() OVER w, ntile(4) OVER w
FROM sales."Orders" WINDOW w AS (PARTITION BY region ORDER BY amount DESC)
-- name: win-lag-lead
SELECT id, lag(amount, 1, 0) OVER (ORDER BY id), lead(amount) OVER (ORDER BY id), first_value(amount) OVER (PARTITION BY status ORDER BY id),
       nth_value(amount, 2) OVER (PARTITION BY status ORDER BY id RANGE BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
FROM sales."Orders"
-- name: win-row-number-top-n
SELECT * FROM (SELECT o.*, row_number() OVER (PARTITION BY customer_id ORDER BY amount DESC) AS rn FROM sales."Orders" o) t WHERE rn <= 3
-- name: win-filter
SELECT region, count(*) FILTER (WHERE status = 'paid') AS paid, count(*) FILTER (WHERE status <> 'paid') AS other,
       sum(amount) FILTER (WHERE attrs ->> 'channel' = 'web') OVER (PARTITION BY region) AS web_total
FROM sales."Orders" GROUP BY region, amount, attrs, status
-- name: cte-multi
WITH paid AS (SELECT * FROM sales."Orders" WHERE status = 'paid'),
     by_region AS (SELECT region, sum(amount) AS total FROM paid GROUP BY region)
SELECT r.region, r.total, r.total / NULLIF(sum(r.total) OVER (), 0) AS share FROM by_region r ORDER BY total DESC
-- name: cte-recursive
WITH RECURSIVE tree(id, parent_id, depth, path) AS (
  SELECT id, parent_id, 0, ARRAY[id] FROM customers WHERE parent_id IS NULL
  UNION ALL
  SELECT c.id, c.parent_id, t.depth + 1, t.path || c.id FROM customers c JOIN tree t ON c.parent_id = t.id WHERE NOT c.id = ANY(t.path)
)
SELECT * FROM tree ORDER BY path
-- name: cte-recursive-search-cycle
WITH RECURSIVE tree(id, parent_id) AS (
  SELECT id, parent_id FROM customers WHERE parent_id IS NULL
  UNION ALL
  SELECT c.id, c.parent_id FROM customers c JOIN tree t ON c.parent_id = t.id
) SEARCH DEPTH FIRST BY id SET ordercol CYCLE id SET is_cycle USING cpath
SELECT * FROM tree ORDER BY ordercol
-- name: cte-materialized
WITH x AS MATERIALIZED (SELECT id, amount FROM sales."Orders"), y AS NOT MATERIALIZED (SELECT * FROM x WHERE amount > 10)
SELECT count(*) FROM y
-- name: cte-generate-series-dates
WITH days AS (SELECT generate_series(date '2024-01-01', date '2024-01-31', interval '1 day')::date AS d)
SELECT d, coalesce(sum(o.amount), 0) FROM days LEFT JOIN sales."Orders" o ON o.created_at::date = d GROUP BY d ORDER BY d
-- name: lateral-top-per-group
SELECT c.id, c.name, o.id AS order_id, o.amount
FROM customers c
CROSS JOIN LATERAL (SELECT id, amount FROM sales."Orders" WHERE customer_id = c.id ORDER BY amount DESC LIMIT 2) o
-- name: lateral-left-join
SELECT c.name, last.at FROM customers c LEFT JOIN LATERAL (SELECT at FROM events e WHERE e.customer_id = c.id ORDER BY at DESC LIMIT 1) last ON true
-- name: lateral-function
SELECT o.id, t.tag, t.ord FROM sales."Orders" o, LATERAL unnest(o.tags) WITH ORDINALITY AS t(tag, ord)
-- name: grouping-sets
SELECT region, status, sum(amount), grouping(region, status) FROM sales."Orders" GROUP BY GROUPING SETS ((region, status), (region), ())
-- name: rollup
SELECT region, status, count(*) FROM sales."Orders" GROUP BY ROLLUP (region, status) ORDER BY 1 NULLS LAST, 2 NULLS FIRST
-- name: cube
SELECT region, status, date_trunc('month', created_at) AS m, sum(amount) FROM sales."Orders" GROUP BY CUBE (region, status), m
-- name: group-by-distinct
SELECT region, status, count(*) FROM sales."Orders" GROUP BY DISTINCT ROLLUP (region, status), ROLLUP (region)
-- name: json-ops
SELECT attrs -> 'items' -> 0, attrs ->> 'channel', attrs #> '{items,1}', attrs #>> '{items,0}' FROM sales."Orders" WHERE attrs @> '{"vip": true}'
-- name: json-exists-ops
SELECT count(*) FROM sales."Orders" WHERE attrs ? 'channel' AND attrs ?| array['vip', 'x'] AND attrs ?& array['channel'] AND NOT attrs <@ '{}'
-- name: jsonpath
SELECT id, jsonb_path_query_array(attrs, '$.items[*] ? (@ > 10)') FROM sales."Orders" WHERE attrs @? '$.items[*] ? (@ > 100)' AND attrs @@ '$.vip == true'
-- name: jsonb-subscript
SELECT attrs['channel'], attrs['items'][0] FROM sales."Orders" WHERE attrs['vip'] = 'true'
-- name: json-agg
SELECT region, json_agg(json_build_object('id', id, 'amount', amount) ORDER BY id) AS items, jsonb_object_agg(id, status) FROM sales."Orders" GROUP BY region
-- name: json-to-recordset
SELECT * FROM json_to_recordset('[{"a":1,"b":"x"},{"a":2,"b":"y"}]') AS t(a int, b text)
-- name: jsonb-each
SELECT o.id, kv.key, kv.value FROM sales."Orders" o, jsonb_each(o.attrs) kv WHERE kv.key <> 'items'
-- name: json-col-payload
SELECT payload->>'kind', (payload->'n')::text::int FROM events WHERE payload IS NOT NULL
-- name: array-ops
SELECT id FROM sales."Orders" WHERE tags && ARRAY['t1'] AND tags @> '{t1}' AND 't2' = ANY (tags) AND array_length(tags, 1) > 1
-- name: array-slices
SELECT tags[1], tags[2:3], tags[:1], tags[2:], cardinality(tags), array_position(tags, 't1') FROM sales."Orders"
-- name: array-agg-ordered
SELECT customer_id, array_agg(DISTINCT status ORDER BY status), string_agg(id::text, ',' ORDER BY id DESC) FROM sales."Orders" GROUP BY customer_id
-- name: ilike-escape
SELECT * FROM customers WHERE name ILIKE 'c1%' OR email LIKE '%!_%' ESCAPE '!' OR name NOT ILIKE '%x%'
-- name: similar-to
SELECT name FROM customers WHERE name SIMILAR TO 'c(1|2)%' AND name NOT SIMILAR TO '%9'
-- name: regex-ops
SELECT name, email ~ '^c\d+@', email ~* 'EXAMPLE', email !~ 'nope', email !~* 'NOPE', regexp_replace(email, '@.*$', '') FROM customers
-- name: starts-with-op
SELECT name FROM customers WHERE name ^@ 'c1' AND starts_with(email, 'c')
-- name: casts-typmods
SELECT amount::numeric(10,1), CAST(id AS varchar(10)), created_at::timestamp(0), note::char(3), '42'::int8, CAST('1.5' AS double precision), 'x'::"char" FROM sales."Orders"
-- name: typed-literals
SELECT date '2024-02-29', time '12:34:56', timestamp '2024-01-01 00:00', timestamptz '2024-01-01 00:00+02', interval '2 days 3 hours', numeric '1.50', bool 'yes', int4 '7'
-- name: interval-fields
SELECT interval '1-2' year to month, interval '3 4:05' day to minute, interval '10' second, interval '1' day * 3, INTERVAL '5' MINUTE
-- name: extract-date-parts
SELECT extract(epoch from created_at), extract(dow from created_at), date_part('quarter', created_at), date_trunc('week', created_at, 'UTC') FROM sales."Orders"
-- name: at-time-zone
SELECT created_at AT TIME ZONE 'UTC', (created_at AT TIME ZONE 'Europe/Paris')::date, now() AT TIME ZONE 'America/New_York' FROM sales."Orders"
-- name: distinct-on
SELECT DISTINCT ON (customer_id) customer_id, id, amount FROM sales."Orders" ORDER BY customer_id, amount DESC, id
-- name: operator-collate
SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default
-- name: collate-order
SELECT name FROM customers ORDER BY name COLLATE "C" DESC, email COLLATE "POSIX"
-- name: e-strings
SELECT E'line1\nline2', E'tab\there', E'\x41\102', E'it\'s', E'\u00e9'
-- name: unicode-strings
SELECT U&'d\0061t\+000061', U&'\00e9t\00e9' UESCAPE '\', U&"n\0061me" FROM (SELECT 1 AS "name") s
-- name: bit-hex-strings
SELECT B'1010', X'1F', B'1010' | B'0101', X'FF'::int
-- name: string-continuation
SELECT 'abc'
'def' AS joined, 'x' || 'y'
-- name: dollar-quoting
SELECT $$it's $1 ; not a param$$ AS a, $tag$nested $$ inside$tag$ AS b, length($q$;$q$)
-- name: dollar-quoted-filter
SELECT * FROM customers WHERE name <> $x$O'Brien; DROP TABLE t;$x$
-- name: nested-comments
SELECT /* outer /* inner */ still comment */ 1 AS one -- trailing
, 2 AS two
-- name: comment-quote
SELECT /* it's a report */ count(*) FROM victim
-- name: tablesample
SELECT * FROM sales."Orders" TABLESAMPLE SYSTEM (10) REPEATABLE (42)
-- name: tablesample-bernoulli
SELECT count(*) FROM pgbench_accounts TABLESAMPLE BERNOULLI (1)
-- name: fetch-first-ties
SELECT id, amount FROM sales."Orders" ORDER BY amount DESC FETCH FIRST 5 ROWS WITH TIES
-- name: fetch-first-row-only
SELECT id FROM sales."Orders" ORDER BY id OFFSET 2 ROWS FETCH FIRST ROW ONLY
-- name: limit-all
SELECT id FROM sales."Orders" ORDER BY id LIMIT ALL OFFSET 10
-- name: offset-before-limit
SELECT id FROM sales."Orders" ORDER BY id OFFSET 5 LIMIT 10
-- name: values-order-limit
VALUES (1, 'one'), (2, 'two'), (3, 'three') ORDER BY 1 DESC LIMIT 2
-- name: values-in-from
SELECT * FROM (VALUES ('emea', 1), ('amer', 2)) AS v(region, prio) JOIN sales."Orders" o USING (region)
-- name: subqueries
SELECT c.name,
       (SELECT count(*) FROM sales."Orders" o WHERE o.customer_id = c.id) AS n,
       EXISTS (SELECT 1 FROM events e WHERE e.customer_id = c.id) AS has_events
FROM customers c
WHERE c.id IN (SELECT customer_id FROM sales."Orders") AND c.id > ALL (SELECT -1) AND c.id <> ANY (ARRAY[0, -1])
-- name: row-constructors
SELECT * FROM sales."Orders" WHERE (customer_id, status) = (3, 'paid') OR ROW(customer_id, region) IN (SELECT 1, 'emea') OR (id, amount) > (10, 5)
-- name: set-ops
SELECT id FROM sales."Orders" UNION SELECT id FROM customers EXCEPT SELECT x FROM victim INTERSECT SELECT 1
-- name: set-ops-parenthesised
(SELECT id FROM sales."Orders" ORDER BY amount DESC LIMIT 5) UNION ALL (SELECT id FROM customers ORDER BY id LIMIT 5) ORDER BY 1 LIMIT 8
-- name: union-limit
SELECT x FROM victim UNION ALL SELECT x FROM victim LIMIT 1
-- name: case-expressions
SELECT CASE status WHEN 'paid' THEN 1 WHEN 'new' THEN 2 ELSE 3 END,
       CASE WHEN amount > 1000 THEN 'big' WHEN amount IS NULL THEN 'unknown' ELSE 'small' END
FROM sales."Orders"
-- name: null-predicates
SELECT * FROM customers WHERE country IS DISTINCT FROM 'FR' AND parent_id IS NOT DISTINCT FROM NULL OR country IS NULL OR (country = 'DE') IS NOT TRUE OR (country = 'DE') IS UNKNOWN
-- name: between-symmetric
SELECT * FROM sales."Orders" WHERE amount BETWEEN SYMMETRIC 500 AND 100 AND id NOT BETWEEN 1000 AND 2000
-- name: special-functions
SELECT current_date, current_timestamp(2), localtimestamp, current_user, session_user, current_schema, current_catalog,
       trim(both 'x' from 'xxaxx'), trim(leading from '  a'), position('b' in 'abc'), overlay('abcdef' placing 'XY' from 2 for 3),
       substring('abcdef' from 2), substring('abcdef', 2, 3), coalesce(NULL, 1), nullif(1, 1), greatest(1, 2), least(1, 2)
-- name: within-group
SELECT region, percentile_cont(0.5) WITHIN GROUP (ORDER BY amount), percentile_disc(ARRAY[0.25, 0.75]) WITHIN GROUP (ORDER BY amount), mode() WITHIN GROUP (ORDER BY status)
FROM sales."Orders" GROUP BY region
-- name: ordinality-rows-from
SELECT * FROM ROWS FROM (generate_series(1, 3), unnest(ARRAY['a', 'b'])) WITH ORDINALITY AS t(n, s, ord)
-- name: joins-every-kind
SELECT count(*) FROM sales."Orders" o
  INNER JOIN customers c ON c.id = o.customer_id
  LEFT OUTER JOIN events e ON e.customer_id = c.id
  RIGHT JOIN victim v ON v.x = o.id
  FULL JOIN pgbench_branches b ON b.bid = v.x
  CROSS JOIN (SELECT 1 AS one) k
  NATURAL JOIN (SELECT 1 AS one) k2
-- name: join-using-alias
SELECT * FROM pgbench_accounts a JOIN pgbench_branches b USING (bid) AS j WHERE j.bid = 1 LIMIT 5
-- name: quoted-identifiers
SELECT "o"."id" AS "Order Id", "o"."amount" AS "Amount ($)" FROM "sales"."Orders" AS "o"
-- name: three-part-name
SELECT count(*) FROM corpus.public.customers
-- name: only-and-table
SELECT * FROM ONLY public.customers WHERE id < 3
-- name: table-statement
TABLE public.victim
-- name: unicode-identifiers
SELECT 1 AS "naïve", 'é' AS "ünïcødé"
-- name: text-search
SELECT name, ts_rank(doc, q) FROM customers, to_tsquery('english', 'customer & number') q WHERE doc @@ q ORDER BY 2 DESC
-- name: order-by-using
SELECT id FROM sales."Orders" ORDER BY amount USING >, id USING <
-- name: system-columns
SELECT ctid, xmin, tableoid::regclass, id FROM sales."Orders" WHERE ctid = '(0,1)'
-- name: regclass
SELECT 'sales."Orders"'::regclass::oid, pg_relation_size('sales."Orders"'::regclass), pg_total_relation_size('public.customers')
-- name: information-schema-columns
SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY table_schema, table_name, ordinal_position
-- name: information-schema-tables
SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' AND table_type IN ('BASE TABLE', 'VIEW')
-- name: metabase-style
SELECT "sales"."Orders"."region" AS "region", date_trunc('month', CAST("sales"."Orders"."created_at" AS timestamp)) AS "created_at", sum("sales"."Orders"."amount") AS "sum"
FROM "sales"."Orders"
WHERE ("sales"."Orders"."created_at" >= CAST((now() + INTERVAL '-30 day') AS date) AND "sales"."Orders"."created_at" < CAST(now() AS date))
GROUP BY "sales"."Orders"."region", date_trunc('month', CAST("sales"."Orders"."created_at" AS timestamp))
ORDER BY "sales"."Orders"."region" ASC, date_trunc('month', CAST("sales"."Orders"."created_at" AS timestamp)) ASC
-- name: superset-style
SELECT region AS region, status AS status, count(*) AS count FROM sales."Orders" GROUP BY region, status ORDER BY count DESC LIMIT 10000
-- name: tableau-style
SELECT CAST("Orders"."region" AS TEXT) AS "region", SUM("Orders"."amount") AS "sum:amount:ok" FROM "sales"."Orders" "Orders" GROUP BY 1
-- name: looker-style
WITH order_facts AS (SELECT customer_id, COUNT(*) AS lifetime_orders, MIN(created_at) AS first_order FROM sales."Orders" GROUP BY 1)
SELECT TO_CHAR(DATE_TRUNC('month', of.first_order), 'YYYY-MM') AS "cohort", COUNT(DISTINCT of.customer_id) AS "customers"
FROM order_facts AS of GROUP BY 1 ORDER BY 1 DESC NULLS LAST FETCH NEXT 500 ROWS ONLY
-- name: prisma-find-many
SELECT "public"."customers"."id", "public"."customers"."name", "public"."customers"."email" FROM "public"."customers" WHERE ("public"."customers"."country" = $1 AND "public"."customers"."id" > $2) ORDER BY "public"."customers"."id" ASC LIMIT $3 OFFSET $4
-- name: prisma-relation-lateral
SELECT "t1"."id", "t1"."name", "customers_orders"."__prisma_data__" AS "orders" FROM "public"."customers" AS "t1"
LEFT JOIN LATERAL (SELECT COALESCE(JSONB_AGG("__prisma_data__"), '[]') AS "__prisma_data__" FROM (SELECT "t4"."__prisma_data__" FROM (SELECT JSONB_BUILD_OBJECT('id', "t3"."id", 'amount', "t3"."amount") AS "__prisma_data__", "t3"."id" FROM (SELECT "t2".* FROM "sales"."Orders" AS "t2" WHERE "t1"."id" = "t2"."customer_id") AS "t3") AS "t4" ORDER BY "t4"."id" ASC) AS "t5") AS "customers_orders" ON true
WHERE "t1"."id" = $1 LIMIT $2
-- name: typeorm-find
SELECT "Customer"."id" AS "Customer_id", "Customer"."name" AS "Customer_name" FROM "customers" "Customer" WHERE ("Customer"."email" = $1) LIMIT 1
-- name: sequelize-find-all
SELECT "id", "name", "email", "created_at" AS "createdAt" FROM "customers" AS "Customer" WHERE "Customer"."country" IN ($1, $2) ORDER BY "Customer"."id" DESC LIMIT 20
-- name: knex-count
select count("id") as "count" from "sales"."Orders" where "status" = $1 and "amount" > $2
-- name: hibernate-select
select c1_0.id,c1_0.email,c1_0.name from customers c1_0 where c1_0.id=$1
-- name: drizzle-select
select "id", "name" from "customers" where ("customers"."country" = $1 or "customers"."country" is null) order by "customers"."name" desc
-- name: pgjdbc-typeinfo
SELECT pg_type.oid, typname FROM pg_catalog.pg_type LEFT JOIN (select ns.oid as nspoid, ns.nspname, r.r from pg_namespace as ns join ( select s.r, (current_schemas(false))[s.r] as nspname from generate_series(1, array_upper(current_schemas(false), 1)) as s(r) ) as r using ( nspname ) ) as sp ON sp.nspoid = typnamespace WHERE typname = $1 ORDER BY sp.r, pg_type.oid DESC LIMIT 1
-- name: sqlalchemy-has-table
SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relname = $1::VARCHAR AND pg_catalog.pg_class.relkind = ANY (ARRAY[$2::VARCHAR, $3::VARCHAR, $4::VARCHAR, $5::VARCHAR, $6::VARCHAR]) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != $7::VARCHAR
-- name: node-pg-jsonb-param
SELECT id FROM sales."Orders" WHERE attrs @> $1::jsonb AND created_at >= $2::timestamptz AND tags && $3::text[]
-- name: activerecord-pk
SELECT "customers".* FROM "customers" WHERE "customers"."id" = $1 LIMIT $2
-- name: django-annotate
SELECT "customers"."id", "customers"."name", COUNT("events"."id") AS "n_events" FROM "customers" LEFT OUTER JOIN "events" ON ("customers"."id" = "events"."customer_id") GROUP BY "customers"."id" HAVING COUNT("events"."id") >= 0 ORDER BY "n_events" DESC
-- name: pgadmin-dashboard
SELECT (SELECT sum(xact_commit) + sum(xact_rollback) FROM pg_catalog.pg_stat_database WHERE datname = (SELECT datname FROM pg_catalog.pg_database WHERE oid = 1)) AS "Transactions",
       (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE state = 'active') AS "Active"
-- name: dbeaver-columns
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid)
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE c.relnamespace = 'sales'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum
-- name: grafana-timeseries-expanded
SELECT floor(extract(epoch from created_at)/60)*60 AS "time", region AS metric, avg(amount) AS value FROM sales."Orders"
WHERE created_at BETWEEN '2020-01-01T00:00:00Z' AND '2030-01-01T00:00:00Z' GROUP BY 1, 2 ORDER BY 1
-- name: percentile-and-stddev
SELECT stddev_samp(amount), var_pop(amount), corr(amount, customer_id), regr_slope(amount, customer_id), bool_and(amount > 0), every(amount > 0), bit_or(customer_id) FROM sales."Orders"
-- name: format-and-string-funcs
SELECT format('%s-%I-%L', name, 'Col', email), lpad(id::text, 5, '0'), split_part(email, '@', 2), initcap(name), md5(name), to_char(created_at, 'YYYY-MM-DD HH24:MI') FROM customers
-- name: generate-series-join
SELECT g, (SELECT count(*) FROM victim WHERE x <= g) FROM generate_series(1, 5) AS g
-- name: exists-correlated-not
SELECT * FROM customers c WHERE NOT EXISTS (SELECT FROM sales."Orders" o WHERE o.customer_id = c.id)
-- name: pgbench-history-report
SELECT a.bid, sum(a.abalance), count(*) FILTER (WHERE a.abalance <> 0) FROM pgbench_accounts a WHERE a.aid BETWEEN 1 AND 1000 GROUP BY a.bid
-- name: select-for-nothing
SELECT
-- name: numeric-literals
SELECT 1.5e10, .5, 5., 1e-3, -2147483648, 9223372036854775807, 1.0::numeric(3,1)
-- name: is-json-operators
SELECT '{"a":[1,2]}'::jsonb #- '{a,0}', '{"a":1}'::jsonb || '{"b":2}', '{"a":1}'::jsonb - 'a', jsonb_typeof('1'), to_jsonb(now())::text IS NOT NULL
-- name: array-constructors
SELECT ARRAY[1, 2, 3], ARRAY(SELECT x FROM victim ORDER BY x), '{1,2}'::int[], (ARRAY[[1, 2], [3, 4]])[2][1], array_to_string(ARRAY['a', NULL, 'c'], ',', '*')
-- name: range-types
SELECT int4range(1, 10) @> 5, tstzrange(now() - interval '1 day', now()) && tstzrange(now(), now() + interval '1 hour'), daterange('2024-01-01', '2024-02-01', '[]') * daterange('2024-01-15', NULL)
-- name: xmlish-and-misc
SELECT pg_typeof(1), quote_ident('A b'), quote_literal('it''s'), current_setting('search_path'), pg_backend_pid() > 0, version() LIKE 'PostgreSQL%'
-- name: having-without-group
SELECT count(*) FROM victim HAVING count(*) > 0
-- name: group-by-ordinal-expr
SELECT date_trunc('day', at) AS d, kind, count(*) FROM events GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1 DESC, 3 DESC
