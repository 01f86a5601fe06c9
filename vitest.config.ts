// Test projects: unit and property run without a database; integration and security start a real Postgres once.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['./test/helpers/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    // CI also writes a JSON report so .ci/run can print one plain 'N passed, N failed' line.
    reporters: process.env.PGWARDEN_TEST_REPORT ? ['default', 'json'] : ['default'],
    outputFile: process.env.PGWARDEN_TEST_REPORT ? { json: process.env.PGWARDEN_TEST_REPORT } : undefined,
  },
});
