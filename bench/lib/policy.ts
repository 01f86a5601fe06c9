// The policy the benchmarks run pgwarden with: one read-only role on pgbench's tables (and the TPC-H tables the
// decide benchmark uses), row cap 1000, catalog introspection so pgbench's startup catalog query is allowed.

export const BENCH_ROLE = 'bench';

export const BENCH_POLICY_YAML = `# pgwarden benchmark policy (written by bench/)
roles:
  ${BENCH_ROLE}:
    readOnly: true
    relations:
      - public.pgbench_accounts
      - public.pgbench_branches
      - public.pgbench_tellers
      - public.pgbench_history
    maxRows: 1000
    onRowCap: truncate
    catalog: introspection
`;

/** The same role plus the TPC-H tables, for the in-process parse + decide micro-benchmark. */
export const DECIDE_POLICY_YAML = BENCH_POLICY_YAML.replace(
  '      - public.pgbench_history\n',
  '      - public.pgbench_history\n' +
    ['region', 'nation', 'part', 'supplier', 'partsupp', 'customer', 'orders', 'lineitem']
      .map((t) => `      - public.${t}\n`)
      .join(''),
);

/** pgbench's four tables, empty, for catalogs built without running `pgbench -i`. */
export const PGBENCH_DDL = `
CREATE TABLE IF NOT EXISTS pgbench_branches (bid int NOT NULL PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE IF NOT EXISTS pgbench_tellers (tid int NOT NULL PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE IF NOT EXISTS pgbench_accounts (aid int NOT NULL PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE IF NOT EXISTS pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
`;
