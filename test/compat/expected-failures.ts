// The one list of compatibility checks that fail through pgwarden today, each with the issue 13 item (or documented limit) that makes it fail.
import { test } from 'vitest';

export type Driver = 'pg' | 'postgres.js' | 'psycopg' | 'pgjdbc';

/** Why every driver's temporary-table check fails even with ddl.temporary: true. */
const TEMP_TABLE_DML =
  'item 2 as landed: CREATE TEMP TABLE is allowed, but INSERT/SELECT on the new table is refused ("pgwarden cannot resolve": temporary objects are never in the catalog snapshot)';

/**
 * check name → why it fails through pgwarden (never directly). A listed check runs as `test.fails` for the
 * proxied target, so when a fix lands the check passes, its `test.fails` fails, and the entry must be removed:
 * this list can only shrink as the fixes land, never silently hide a regression.
 */
export const EXPECTED_PROXIED_FAILURES: Record<Driver, Record<string, string>> = {
  pg: {
    'TRUNCATE and reload in one transaction':
      "not an issue 13 item: a documented limit (docs/limits.md, lock probe) — a statement on a relation the session's own open transaction locked (TRUNCATE, ALTER, LOCK, CREATE INDEX) is refused with 55P03, since the server's analysis runs on another connection and would wait for that lock",
    'unknown unqualified table is 42P01':
      "item 4 as landed, with item 2's temporary objects: for a role with ddl.temporary an unqualified missing name may be its own temporary table (never in the snapshot), so it is refused with 42501, not 42P01 — the same root as TEMP_TABLE_DML",
    'temporary table': TEMP_TABLE_DML,
  },
  'postgres.js': {
    'temporary table': TEMP_TABLE_DML,
  },
  psycopg: {
    temp_table: TEMP_TABLE_DML,
  },
  pgjdbc: {
    'temporary table': TEMP_TABLE_DML,
  },
};

/** `test` for a check expected to pass on this target, `test.fails` for one listed above (proxied only). */
export function checkTest(driver: Driver, target: 'direct' | 'proxied', name: string): typeof test | typeof test.fails {
  return target === 'proxied' && name in EXPECTED_PROXIED_FAILURES[driver] ? test.fails : test;
}
