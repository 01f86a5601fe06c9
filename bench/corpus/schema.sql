-- Schema the corpus is validated against (run as superuser in a scratch database after `pgbench -i -s 1`).
CREATE EXTENSION IF NOT EXISTS plpgsql;

-- TPC-H tables (empty: the corpus only has to run, not return rows).
CREATE TABLE region   (r_regionkey int PRIMARY KEY, r_name char(25) NOT NULL, r_comment varchar(152));
CREATE TABLE nation   (n_nationkey int PRIMARY KEY, n_name char(25) NOT NULL, n_regionkey int NOT NULL REFERENCES region, n_comment varchar(152));
CREATE TABLE part     (p_partkey int PRIMARY KEY, p_name varchar(55) NOT NULL, p_mfgr char(25) NOT NULL, p_brand char(10) NOT NULL,
                       p_type varchar(25) NOT NULL, p_size int NOT NULL, p_container char(10) NOT NULL, p_retailprice numeric(15,2) NOT NULL,
                       p_comment varchar(23) NOT NULL);
CREATE TABLE supplier (s_suppkey int PRIMARY KEY, s_name char(25) NOT NULL, s_address varchar(40) NOT NULL, s_nationkey int NOT NULL REFERENCES nation,
                       s_phone char(15) NOT NULL, s_acctbal numeric(15,2) NOT NULL, s_comment varchar(101) NOT NULL);
CREATE TABLE partsupp (ps_partkey int NOT NULL REFERENCES part, ps_suppkey int NOT NULL REFERENCES supplier, ps_availqty int NOT NULL,
                       ps_supplycost numeric(15,2) NOT NULL, ps_comment varchar(199) NOT NULL, PRIMARY KEY (ps_partkey, ps_suppkey));
CREATE TABLE customer (c_custkey int PRIMARY KEY, c_name varchar(25) NOT NULL, c_address varchar(40) NOT NULL, c_nationkey int NOT NULL REFERENCES nation,
                       c_phone char(15) NOT NULL, c_acctbal numeric(15,2) NOT NULL, c_mktsegment char(10) NOT NULL, c_comment varchar(117) NOT NULL);
CREATE TABLE orders   (o_orderkey int PRIMARY KEY, o_custkey int NOT NULL REFERENCES customer, o_orderstatus char(1) NOT NULL,
                       o_totalprice numeric(15,2) NOT NULL, o_orderdate date NOT NULL, o_orderpriority char(15) NOT NULL, o_clerk char(15) NOT NULL,
                       o_shippriority int NOT NULL, o_comment varchar(79) NOT NULL);
CREATE TABLE lineitem (l_orderkey int NOT NULL REFERENCES orders, l_partkey int NOT NULL, l_suppkey int NOT NULL, l_linenumber int NOT NULL,
                       l_quantity numeric(15,2) NOT NULL, l_extendedprice numeric(15,2) NOT NULL, l_discount numeric(15,2) NOT NULL,
                       l_tax numeric(15,2) NOT NULL, l_returnflag char(1) NOT NULL, l_linestatus char(1) NOT NULL, l_shipdate date NOT NULL,
                       l_commitdate date NOT NULL, l_receiptdate date NOT NULL, l_shipinstruct char(25) NOT NULL, l_shipmode char(10) NOT NULL,
                       l_comment varchar(44) NOT NULL, PRIMARY KEY (l_orderkey, l_linenumber));
CREATE INDEX lineitem_shipdate ON lineitem (l_shipdate);

-- BI/ORM-style tables: mixed case, jsonb, arrays, timestamps.
CREATE SCHEMA sales;
CREATE TABLE sales."Orders" (
  id bigserial PRIMARY KEY,
  customer_id int NOT NULL,
  region text NOT NULL,
  status text NOT NULL,
  amount numeric(12,2) NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  attrs jsonb NOT NULL DEFAULT '{}',
  tags text[] NOT NULL DEFAULT '{}',
  note text
);
CREATE INDEX orders_created ON sales."Orders" (created_at);
CREATE INDEX orders_attrs ON sales."Orders" USING gin (attrs);
CREATE TABLE public.customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL, country text, parent_id int, created_at timestamptz DEFAULT now(), doc tsvector);
CREATE TABLE public.events (id bigserial PRIMARY KEY, customer_id int, kind text NOT NULL, payload json, at timestamptz NOT NULL DEFAULT now());
CREATE VIEW sales.big_orders AS SELECT id, customer_id, amount FROM sales."Orders" WHERE amount > 1000;
CREATE FUNCTION public.add_one(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i + 1 $$;
CREATE TABLE public.victim (x int);
INSERT INTO public.victim VALUES (1), (2), (3);
CREATE TABLE public.secret (id int, value text);
INSERT INTO sales."Orders" (customer_id, region, status, amount, attrs, tags, note)
SELECT g % 20, (ARRAY['emea','amer','apac'])[1 + g % 3], (ARRAY['new','paid','shipped'])[1 + g % 3], (g * 37 % 2000)::numeric,
       jsonb_build_object('channel', CASE WHEN g % 2 = 0 THEN 'web' ELSE 'store' END, 'items', jsonb_build_array(g, g + 1), 'vip', g % 7 = 0),
       ARRAY['t' || (g % 4), 't' || (g % 5)], 'note ' || g
FROM generate_series(1, 200) g;
INSERT INTO public.customers (name, email, country, parent_id, doc)
SELECT 'c' || g, 'c' || g || '@example.com', (ARRAY['FR','DE','US', NULL])[1 + g % 4], NULLIF(g / 5, 0), to_tsvector('english', 'customer number ' || g)
FROM generate_series(1, 20) g;
ANALYZE;
