// Starts one real Postgres for the whole run (npm's embedded build by default) and loads the sample database.
// PGWARDEN_TEST_PG_VERSION=18 picks PostgreSQL 18 (npm's alias package); unset, it is PostgreSQL 15.
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startPostgres, type EmbeddedPostgres } from '../../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, sampleSchemaSql } from '../../proxy/embedded/sample.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    /** `version` is the server's major version (15, 18, ...). */
    pg: { host: string; port: number; superUrl: string; upstreamPassword: string; binDir: string; version: number };
  }
}

let server: EmbeddedPostgres | undefined;

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const upstreamPassword = `up-${Math.random().toString(36).slice(2)}`;
  let host: string;
  let port: number;
  let superUrl: string;
  let binDir = '';
  const external = process.env.PGWARDEN_TEST_PG_URL;
  if (external) {
    // An operator-provided server: we need a superuser URL to create the sample database.
    const u = new URL(external);
    host = u.hostname;
    port = Number(u.port || 5432);
    superUrl = external;
  } else {
    const source = process.env.PGWARDEN_TEST_PG === 'system' ? 'system' : 'auto';
    server = await startPostgres({
      source,
      version: process.env.PGWARDEN_TEST_PG_VERSION ? Number(process.env.PGWARDEN_TEST_PG_VERSION) : undefined,
      // max_prepared_transactions: two-phase commit (role key twoPhase) is tested; PostgreSQL's default 0 refuses PREPARE TRANSACTION.
      settings: { log_statement: 'all', log_min_messages: 'warning', max_prepared_transactions: '10' },
    });
    host = server.host;
    port = server.port;
    superUrl = server.url();
    binDir = server.binDir;
  }
  const admin = new pg.Client({ connectionString: superUrl });
  await admin.connect();
  // The major version of whichever server this is (ours or the operator's): server_version_num is e.g. 180004.
  const version = Math.floor(
    Number((await admin.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v) / 10000,
  );
  await admin.query(`DROP DATABASE IF EXISTS ${SAMPLE_DATABASE}`);
  await admin.query(`CREATE DATABASE ${SAMPLE_DATABASE}`);
  await admin.end();
  const appUrl = new URL(superUrl);
  appUrl.pathname = `/${SAMPLE_DATABASE}`;
  const app = new pg.Client({ connectionString: appUrl.toString() });
  await app.connect();
  await app.query(`DROP ROLE IF EXISTS pgwarden; DROP ROLE IF EXISTS analyst_ro;`).catch(() => {});
  await app.query(sampleSchemaSql(upstreamPassword));
  await app.end();
  project.provide('pg', { host, port, superUrl: appUrl.toString(), upstreamPassword, binDir, version });
  return async () => {
    await server?.stop();
  };
}
