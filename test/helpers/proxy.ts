// Starts pgwarden in-process on port 0 against the test Postgres, with a temp config, HMAC secret and policy; mints tokens.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import pino from 'pino';
import { inject } from 'vitest';
import { SignJWT } from 'jose';
import type { Config } from '../../proxy/config/types.ts';
import { createProxy, type Proxy, type ProxyDeps } from '../../proxy/index.ts';
import { mintToken } from '../../proxy/auth/mint.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { testAuthConfig } from './keys.ts';

export const DEFAULT_POLICY = `roles:
  analyst:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
    maxRows: 100
    onRowCap: truncate
    statementTimeout: 5s
    catalog: introspection
    holdCursors: 2
  capped:
    readOnly: true
    relations: [public.orders]
    maxRows: 10
    onRowCap: error
  writer:
    readOnly: false
    relations: [public.orders, public.canary]
    write: { statements: [insert, update, delete], relations: [public.canary] }
`;

export interface TestProxy {
  proxy: Proxy;
  config: Config;
  dir: string;
  secret: Buffer;
  /** Log lines written by the proxy (JSON), for redaction checks. */
  logs: string[];
  /** The audit trail written so far (JSON lines). */
  auditLines(): string[];
  policyFile: string;
  token(
    claims?: Partial<{ sub: string; role: string; agent: string; tenant: string; jti: string }>,
    ttlMs?: number,
  ): Promise<string>;
  /** Signs arbitrary claims with the proxy's secret (for malformed-claim tests). */
  sign(claims: Record<string, unknown>, header?: Record<string, unknown>): Promise<string>;
  /** Connection settings for `pg`, with the given token as password. */
  pgConfig(password: string, extra?: Partial<pg.ClientConfig>): pg.ClientConfig;
  close(drainMs?: number): Promise<void>;
}

export const testPg = () => inject('pg');

/** A superuser client on the sample database, to check what really reached Postgres. */
export async function superClient(): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: testPg().superUrl });
  await c.connect();
  return c;
}

export interface StartOptions {
  policy?: string;
  limits?: Partial<Config['limits']>;
  auth?: Partial<Config['auth']>;
  listen?: Partial<Config['listen']>;
  deps?: ProxyDeps;
  config?: Partial<Config>;
  /** HMAC secret to use (replicas of one deployment share it); random by default. */
  secret?: Buffer;
}

export async function startTestProxy(opts: StartOptions = {}): Promise<TestProxy> {
  const info = testPg();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-test-'));
  // Text, not raw bytes: the loader ignores a trailing newline, so random bytes ending in 0x0a would lose one.
  const secret = opts.secret ?? Buffer.from(randomBytes(32).toString('base64url'));
  const secretFile = path.join(dir, 'jwt-secret');
  writeFileSync(secretFile, secret);
  const policyFile = path.join(dir, 'policy.yaml');
  writeFileSync(policyFile, opts.policy ?? DEFAULT_POLICY);
  const config: Config = {
    baseDir: dir,
    listen: { host: '127.0.0.1', port: 0, tls: undefined, ...opts.listen },
    upstream: {
      host: info.host,
      port: info.port,
      database: SAMPLE_DATABASE,
      user: SAMPLE_UPSTREAM_USER,
      password: info.upstreamPassword,
      sslmode: 'disable',
      sslRootCert: undefined,
      connectTimeout: 5_000,
    },
    // No skew, and no jwksTimeout (keys.ts's default) unless the test sets one.
    auth: testAuthConfig({ secretFile, clockSkew: 0, jwksTimeout: undefined, ...opts.auth }),
    policyFile,
    metrics: undefined,
    limits: {
      maxMessageSize: 1024 * 1024,
      handshakeTimeout: 5_000,
      expiryGrace: 0,
      maxClientConnections: 200,
      idleSessionTimeout: 0,
      ...opts.limits,
    },
    log: { level: 'debug' },
    audit: { destination: path.join(dir, 'audit.jsonl'), sql: 'full', onFailure: 'refuse' },
    revocation: { file: path.join(dir, 'revocations.yaml'), table: undefined },
    ...opts.config,
  };
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const logger = pino({ level: 'debug' }, sink);
  const proxy = await createProxy(config, { logger, watchPolicy: false, ...opts.deps });
  return {
    proxy,
    config,
    dir,
    secret,
    logs,
    auditLines: () => {
      try {
        return readFileSync(path.join(dir, 'audit.jsonl'), 'utf8').split('\n').filter(Boolean);
      } catch {
        return [];
      }
    },
    policyFile,
    token: (claims = {}, ttlMs = 5 * 60_000) =>
      mintToken(config.auth, { sub: 'alice', role: 'analyst', agent: 'test-agent', ...claims }, ttlMs),
    sign: (claims, header = {}) => new SignJWT(claims).setProtectedHeader({ alg: 'HS256', ...header }).sign(secret),
    pgConfig: (password, extra = {}) => ({
      host: '127.0.0.1',
      port: proxy.port,
      user: 'alice',
      database: SAMPLE_DATABASE,
      password,
      ...extra,
    }),
    async close(drainMs = 0) {
      await proxy.close(drainMs);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Connects a `pg` client through the proxy; the caller ends it. */
export async function connectPg(
  tp: TestProxy,
  password?: string,
  extra: Partial<pg.ClientConfig> = {},
): Promise<pg.Client> {
  const c = new pg.Client(tp.pgConfig(password ?? (await tp.token()), extra));
  await c.connect();
  return c;
}

/** Connects a `pg` client through the proxy with a token for `role`, its 'error' events ignored (the test looks at what each query returns); the caller ends it. */
export async function connectAs(tp: TestProxy, role: string): Promise<pg.Client> {
  const c = new pg.Client(tp.pgConfig(await tp.token({ role })));
  c.on('error', () => {});
  await c.connect();
  return c;
}

/** Runs `fn` expecting a Postgres error and returns it (fails the test when there is none). */
export async function pgError(
  fn: () => Promise<unknown>,
): Promise<{ code?: string; message: string; hint?: string; detail?: string; severity?: string }> {
  try {
    await fn();
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error('expected a Postgres error, got success');
}

/** Runs `fn` with a superuser client (superClient), closed afterwards also when `fn` throws. */
export async function withSuperClient<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = await superClient();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function canaryCount(): Promise<number> {
  return withSuperClient(
    async (c) => (await c.query('SELECT count(*)::int AS n FROM public.canary')).rows[0].n as number,
  );
}

/** Sends a raw CancelRequest for (pid, secret) to a proxy port, as a client library would. */
export function sendCancel(port: number, pid: number, secret: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0);
      b.writeInt32BE(80877102, 4);
      b.writeInt32BE(pid, 8);
      b.writeInt32BE(secret, 12);
      s.end(b);
    });
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
}

/** Attempts a login that must fail and returns the error (FATAL from the proxy). */
export async function loginError(
  config: pg.ClientConfig,
): Promise<{ code?: string; message: string; hint?: string; detail?: string; severity?: string }> {
  return await pgError(async () => {
    const c = new pg.Client(config);
    c.on('error', () => {});
    try {
      await c.connect();
    } finally {
      await c.end().catch(() => {});
    }
  });
}
