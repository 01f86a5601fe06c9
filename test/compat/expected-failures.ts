// The one list of compatibility checks that fail through pgwarden today, each with the issue 13 item (or documented limit) that makes it fail.
import { test } from 'vitest';

export type Driver = 'pg' | 'postgres.js' | 'psycopg' | 'pgjdbc';

/**
 * check name → why it fails through pgwarden (never directly). A listed check runs as `test.fails` for the
 * proxied target, so when a fix lands the check passes, its `test.fails` fails, and the entry must be removed:
 * this list can only shrink as the fixes land, never silently hide a regression.
 */
export const EXPECTED_PROXIED_FAILURES: Record<Driver, Record<string, string>> = {
  pg: {},
  'postgres.js': {},
  psycopg: {},
  pgjdbc: {},
};

/** `test` for a check expected to pass on this target, `test.fails` for one listed above (proxied only). */
export function checkTest(driver: Driver, target: 'direct' | 'proxied', name: string): typeof test | typeof test.fails {
  return target === 'proxied' && name in EXPECTED_PROXIED_FAILURES[driver] ? test.fails : test;
}
