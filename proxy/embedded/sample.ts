// The sample database the demo and the tests run against: orders, customers with PII, a table no role may read, a canary.

/** The upstream login pgwarden uses in the demo and tests: not a superuser, owns nothing. */
export const SAMPLE_UPSTREAM_USER = 'pgwarden';
export const SAMPLE_DATABASE = 'app';

/** Run as the superuser in the `app` database. `password` is the upstream user's password. */
export function sampleSchemaSql(password: string): string {
  const pw = password.replace(/'/g, "''");
  return `
CREATE ROLE ${SAMPLE_UPSTREAM_USER} LOGIN PASSWORD '${pw}' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE ROLE analyst_ro NOLOGIN;
GRANT analyst_ro TO ${SAMPLE_UPSTREAM_USER};

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
-- No role in any policy may read this; the upstream user can, so only pgwarden stands in the way.
CREATE TABLE public.secrets (id serial PRIMARY KEY, value text NOT NULL);
-- Tests prove refused statements never reach Postgres by checking these rows are still here.
CREATE TABLE public.canary (id int PRIMARY KEY, note text NOT NULL);

INSERT INTO public.customers (name, email, ssn)
SELECT 'customer ' || g, 'customer' || g || '@example.com', lpad((100000000 + g * 7919)::text, 9, '0')
FROM generate_series(1, 50) g;
INSERT INTO public.orders (customer_id, total, status)
SELECT 1 + (g % 50), round((random() * 500)::numeric, 2), (ARRAY['new','paid','shipped','refunded'])[1 + g % 4]
FROM generate_series(1, 500) g;
INSERT INTO public.secrets (value) VALUES ('launch codes'), ('root password');
INSERT INTO public.canary VALUES (1, 'still here'), (2, 'still here');

GRANT USAGE ON SCHEMA public TO ${SAMPLE_UPSTREAM_USER}, analyst_ro;
GRANT SELECT ON public.customers, public.orders, public.secrets TO ${SAMPLE_UPSTREAM_USER};
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON public.canary TO ${SAMPLE_UPSTREAM_USER};
GRANT SELECT ON public.customers, public.orders TO analyst_ro;
`;
}

/** The demo's policy file. */
export const SAMPLE_POLICY_YAML = `# pgwarden policy — edit and save: pgwarden reloads it on change (an invalid file never replaces a good one).
roles:
  analyst:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    maxRows: 100
    onRowCap: truncate
    statementTimeout: 5s
    catalog: introspection
`;
