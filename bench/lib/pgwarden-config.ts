// The pgwarden Config the end-to-end benchmark runs with, built like test/helpers/proxy.ts builds one, from a small
// JSON spec that bench/run.ts writes and bench/pgwarden-server.ts (a separate process) reads.
import type { Config } from '../../proxy/config/types.ts';

export interface PgwardenSpec {
  listenPort: number;
  upstream: { host: string; port: number; database: string; user: string; password: string };
  secretFile: string;
  policyFile: string;
  logFile: string;
  /** The audit trail (one JSON event per login and statement), written as in production but to this file. */
  auditFile: string;
  logLevel: string;
  maxTokenLifetimeMs: number;
  maxClientConnections: number;
  /** The server exits by itself after this long, whatever happens to its parent. */
  maxLifetimeMs: number;
  baseDir: string;
}

export const BENCH_ISSUER = 'pgwarden-bench';
export const BENCH_AUDIENCE = 'pgwarden';

export function benchConfig(spec: PgwardenSpec): Config {
  return {
    baseDir: spec.baseDir,
    listen: { host: '127.0.0.1', port: spec.listenPort, tls: undefined },
    upstream: {
      host: spec.upstream.host,
      port: spec.upstream.port,
      database: spec.upstream.database,
      user: spec.upstream.user,
      password: spec.upstream.password,
      sslmode: 'disable',
      sslRootCert: undefined,
      connectTimeout: 10_000,
    },
    auth: {
      issuer: BENCH_ISSUER,
      audience: BENCH_AUDIENCE,
      algorithms: ['HS256'],
      secretFile: spec.secretFile,
      publicKeyFile: undefined,
      jwksUrl: undefined,
      privateKeyFile: undefined,
      maxTokenLifetime: spec.maxTokenLifetimeMs,
      clockSkew: 0,
      allowCleartext: 'loopback',
      jwksCooldown: 30_000,
      jwksCacheMaxAge: 600_000,
    },
    policyFile: spec.policyFile,
    metrics: undefined,
    limits: {
      maxMessageSize: 1024 * 1024,
      handshakeTimeout: 10_000,
      expiryGrace: 0,
      maxClientConnections: spec.maxClientConnections,
      idleSessionTimeout: 0,
    },
    log: { level: spec.logLevel },
    audit: { destination: spec.auditFile, sql: 'normalized', onFailure: 'refuse' },
  };
}
