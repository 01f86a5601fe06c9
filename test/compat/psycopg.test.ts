// psycopg 3 compatibility: psycopg_checks.py runs once against Postgres directly and once through pgwarden; each of its checks is a test here.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  resetCompatTables,
  runCheckProgram,
  startCompat,
  targetEnv,
  type CheckRun,
  type CompatEnv,
} from '../helpers/compat.ts';
import { testPg } from '../helpers/proxy.ts';
import { checkTest } from './expected-failures.ts';

// Debian's interpreter, where python3-psycopg is installed (the python3 first on PATH may be another one).
const PYTHON = '/usr/bin/python3';
const SCRIPT = fileURLToPath(new URL('./psycopg_checks.py', import.meta.url));
// The check names, read from the script's @check functions so the list here cannot drift from it.
const CHECK_NAMES = [...readFileSync(SCRIPT, 'utf8').matchAll(/^@check\ndef (\w+)\(/gm)].map((m) => m[1]!);

function psycopgVersion(): string | undefined {
  try {
    return execFileSync(PYTHON, ['-c', 'import psycopg; print(psycopg.__version__)'], { encoding: 'utf8' }).trim();
  } catch {
    return undefined;
  }
}
const version = psycopgVersion();
// proxied_tls: the same checks through pgwarden over TLS (sslmode=require), where libpq reads TLS records.
const targets = [{ name: 'direct' }, { name: 'proxied' }, { name: 'proxied_tls' }] as const;

describe.skipIf(version === undefined)(
  version === undefined
    ? `psycopg (skipped: ${PYTHON} cannot import psycopg; apt-get install python3-psycopg)`
    : `psycopg ${version}`,
  () => {
    let env: CompatEnv;
    beforeAll(async () => {
      env = await startCompat('psycopg', { tls: true });
    });
    afterAll(async () => {
      await env?.close();
    });

    describe.each(targets)('$name', ({ name }) => {
      let run: CheckRun;
      beforeAll(async () => {
        await resetCompatTables(env.schema);
        run = await runCheckProgram(
          PYTHON,
          [SCRIPT],
          { ...targetEnv(env[name]!), COMPAT_SUPER_DSN: testPg().superUrl },
          45_000,
        );
      }, 50_000);

      test('every check reported', () => {
        expect([...run.results.keys()].sort(), run.ending).toEqual([...CHECK_NAMES].sort());
      });
      for (const check of CHECK_NAMES) {
        checkTest(
          'psycopg',
          name === 'direct' ? 'direct' : 'proxied',
          check,
        )(check, () => {
          const r = run.results.get(check);
          // The driver's own error text is the failure message, so a red check says what psycopg raised.
          expect(r?.ok ? 'ok' : (r?.error ?? `not reported (${run.ending})`)).toBe('ok');
        });
      }
    });
  },
);
