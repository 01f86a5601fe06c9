// pgJDBC compatibility with default settings: JdbcChecks.java, compiled at test time, runs directly and through pgwarden; each of its checks is a test here.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  resetCompatTables,
  runCheckProgram,
  startCompat,
  targetEnv,
  tempDir,
  type CheckRun,
  type CompatEnv,
} from '../helpers/compat.ts';
import { testPg } from '../helpers/proxy.ts';
import { checkTest } from './expected-failures.ts';

// Debian's libpostgresql-jdbc-java and default-jdk-headless (.ci/run installs both when missing).
const JAR = '/usr/share/java/postgresql.jar';
const SOURCE = fileURLToPath(new URL('./JdbcChecks.java', import.meta.url));
// The check names, read from the program's check("…") calls so the list here cannot drift from it.
const CHECK_NAMES = [...readFileSync(SOURCE, 'utf8').matchAll(/^ {4}check\("([^"]+)"/gm)].map((m) => m[1]!);

function hasJdk(): boolean {
  try {
    execFileSync('javac', ['-version'], { stdio: 'ignore' });
    execFileSync('java', ['-version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const missing = !existsSync(JAR)
  ? `${JAR} missing; apt-get install libpostgresql-jdbc-java`
  : !hasJdk()
    ? 'no javac/java; apt-get install default-jdk-headless'
    : undefined;
/** The driver version, from Debian's versioned symlink to the jar (postgresql-<version>.jar beside it). */
const driverVersion = missing
  ? ''
  : ((readdirSync(dirname(JAR))
      .map((f) => /^postgresql-(\d+\.\d+\.\d+)\.jar$/.exec(f))
      .find((m) => m !== null && realpathSync(join(dirname(JAR), m[0])) === realpathSync(JAR)) ?? [])[1] ??
    '(version unknown)');
const targets = [{ name: 'direct' }, { name: 'proxied' }] as const;

describe.skipIf(missing !== undefined)(
  missing ? `pgJDBC (skipped: ${missing})` : `pgJDBC ${driverVersion}, default settings`,
  () => {
    let env: CompatEnv;
    let classes: ReturnType<typeof tempDir>;
    beforeAll(async () => {
      classes = tempDir('pgwarden-jdbc-');
      execFileSync('javac', ['-encoding', 'UTF-8', '-cp', JAR, '-d', classes.dir, SOURCE], { stdio: 'pipe' });
      env = await startCompat('jdbc');
    }, 60_000);
    afterAll(async () => {
      await env?.close();
      classes?.remove();
    });

    describe.each(targets)('$name', ({ name }) => {
      let run: CheckRun;
      beforeAll(async () => {
        await resetCompatTables(env.schema);
        const su = new URL(testPg().superUrl);
        run = await runCheckProgram(
          'java',
          [
            '-Xshare:auto',
            '-XX:TieredStopAtLevel=1',
            '-Dfile.encoding=UTF-8',
            '-cp',
            `${classes.dir}:${JAR}`,
            'JdbcChecks',
          ],
          {
            ...targetEnv(env[name]),
            COMPAT_SUPER_JDBC_URL: `jdbc:postgresql://${su.hostname}:${su.port}${su.pathname}`,
            COMPAT_SUPER_USER: decodeURIComponent(su.username),
            COMPAT_SUPER_PASSWORD: decodeURIComponent(su.password),
          },
          45_000,
        );
      }, 50_000);

      test('every check reported', () => {
        expect([...run.results.keys()], run.ending).toEqual(CHECK_NAMES);
      });
      for (const check of CHECK_NAMES) {
        checkTest(
          'pgjdbc',
          name,
          check,
        )(check, () => {
          const r = run.results.get(check);
          // The driver's own exception is the failure message, so a red check says what pgJDBC threw.
          expect(r?.ok ? 'ok' : (r?.error ?? `not reported (${run.ending})`)).toBe('ok');
        });
      }
    });
  },
);
