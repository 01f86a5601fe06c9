-- First-start initialisation of the compose PostgreSQL: database `app`, the pgwarden login role (NOSUPERUSER, password from a secret file) and sample tables.
-- Run once by the postgres image's entrypoint (psql, as the superuser) when the data volume is empty.
-- psql reads the password with a backquoted shell command; it never appears in this file or in compose.yaml.
\set ON_ERROR_STOP on
\set upstream_password `cat /run/secrets/upstream-password`

CREATE DATABASE app;
\connect app

-- The role pgwarden logs in as. Not a superuser, no BYPASSRLS, owns nothing: tables below are owned by
-- the superuser, so GRANTs and row-level security apply to every session pgwarden brokers.
CREATE ROLE pgwarden LOGIN PASSWORD :'upstream_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION;
REVOKE ALL ON DATABASE app FROM PUBLIC;
GRANT CONNECT ON DATABASE app TO pgwarden;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO pgwarden;

CREATE TABLE public.customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  ssn text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.orders (
  id serial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES public.customers(id),
  total numeric(10,2) NOT NULL,
  status text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- No role in policy.yaml may read this; the upstream role can, so only pgwarden stands in the way.
CREATE TABLE public.secrets (id serial PRIMARY KEY, value text NOT NULL);

INSERT INTO public.customers (name, email, ssn)
SELECT 'customer ' || g, 'customer' || g || '@example.com', lpad((100000000 + g * 7919)::text, 9, '0')
FROM generate_series(1, 50) g;
INSERT INTO public.orders (customer_id, total, status)
SELECT 1 + (g % 50), round((random() * 500)::numeric, 2), (ARRAY['new','paid','shipped','refunded'])[1 + g % 4]
FROM generate_series(1, 500) g;
INSERT INTO public.secrets (value) VALUES ('launch codes'), ('root password');

GRANT SELECT ON public.customers, public.orders, public.secrets TO pgwarden;
