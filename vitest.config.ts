// Test projects: `fast` needs no database (unit and property tests); `db` starts one real Postgres for the run (integration, security, regressions, compat).
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // CI also writes a JSON report so .ci/run can print one plain 'N passed, N failed' line.
    reporters: process.env.PGWARDEN_TEST_REPORT ? ['default', 'json'] : ['default'],
    outputFile: process.env.PGWARDEN_TEST_REPORT ? { json: process.env.PGWARDEN_TEST_REPORT } : undefined,
    // `vitest run` (npm test) runs both; `vitest run --project fast` (npm run test:fast) never starts Postgres.
    // A file path filter picks files from either project, and the database starts only when a `db` file is picked.
    projects: [
      {
        extends: true,
        test: {
          name: 'fast',
          // A test here that reaches for the database (inject('pg'), a real connection) belongs in `db` instead.
          include: ['test/unit/**/*.test.ts', 'test/property/**/*.test.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'db',
          include: [
            'test/integration/**/*.test.ts',
            'test/security/**/*.test.ts',
            'test/regressions/**/*.test.ts',
            'test/compat/**/*.test.ts',
          ],
          globalSetup: ['./test/helpers/global-setup.ts'],
        },
      },
    ],
  },
});
