// pgwarden's own short queries against the upstream database (catalog reads, privilege and slot checks), one connection each.
import pg from 'pg';
import type { CatalogQuery } from '../../policy/catalog.ts';
import type { Config } from '../config/types.ts';
import { pgSslOptions, type CountedUpstream } from './connect.ts';

/** Runs one query against the upstream database with pgwarden's own credentials (catalog reads, checks). */
export function upstreamQuerier(config: Config, counted: CountedUpstream = {}): CatalogQuery {
  const u = config.upstream;
  return async (sql, params) => {
    // Counted against limits.maxUpstreamConnections once the cap is known (it is derived with this querier).
    const release = counted.cap?.acquireOwn();
    const client = new pg.Client({
      host: u.host,
      port: u.port,
      database: u.database,
      user: u.user,
      password: u.password,
      application_name: 'pgwarden:catalog',
      connectionTimeoutMillis: u.connectTimeout,
      ssl: pgSslOptions(u),
    });
    try {
      await client.connect();
      // biome-ignore lint/suspicious/noExplicitAny: rows of node-postgres's untyped result; each reader checks the fields it uses
      return await client.query(sql, params as any[]);
    } finally {
      await client.end().catch(() => {});
      release?.();
    }
  };
}
