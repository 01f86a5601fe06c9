// Test projects: unit and property run without a database; integration and security start a real Postgres once.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['./test/helpers/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    reporters: ['default'],
  },
});
