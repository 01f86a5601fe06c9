// The pgwarden command line and psql's catalog commands through the proxy.
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_POLICY, startTestProxy, testPg, type TestProxy } from '../helpers/proxy.ts';

const run = promisify(execFile);
const BIN = path.resolve('bin/pgwarden.js');

/** Runs the CLI; resolves with exit code and output instead of throwing on non-zero. */
async function pgwarden(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run('node', [BIN, ...args], { env: { ...process.env, ...env }, timeout: 30_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : 1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

let tp: TestProxy;
let dir: string;
beforeAll(async () => {
  tp = await startTestProxy();
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-cli-'));
});
afterAll(async () => {
  await tp?.close();
});

describe('pgwarden policy check', () => {
  it('exits 0 for a valid policy and 1 with every issue and its path for an invalid one', async () => {
    const good = path.join(dir, 'good.yaml');
    writeFileSync(good, DEFAULT_POLICY);
    expect((await pgwarden(['policy', 'check', good])).code).toBe(0);
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      'roles:\n  analyst:\n    readOnly: maybe\n    relations: [orders]\n    maxRows: -3\n    colour: blue\n',
    );
    const r = await pgwarden(['policy', 'check', bad]);
    expect(r.code).toBe(1);
    const out = r.stdout + r.stderr;
    expect(out).toMatch(/roles\.analyst\.readOnly/);
    expect(out).toMatch(/roles\.analyst\.relations/);
    expect(out).toMatch(/roles\.analyst\.maxRows/);
    expect(out).toMatch(/roles\.analyst\.colour/);
  });
});

describe('pgwarden with a config file', () => {
  let configFile: string;
  beforeAll(() => {
    const info = testPg();
    writeFileSync(path.join(dir, 'upstream-password'), info.upstreamPassword + '\n');
    writeFileSync(path.join(dir, 'jwt-secret'), 'k'.repeat(48) + '\n');
    writeFileSync(path.join(dir, 'policy.yaml'), DEFAULT_POLICY);
    configFile = path.join(dir, 'pgwarden.yaml');
    writeFileSync(
      configFile,
      `listen: { host: 127.0.0.1, port: 0 }
upstream: { host: ${info.host}, port: ${info.port}, database: app, user: pgwarden, passwordFile: ./upstream-password }
auth: { issuer: pgwarden-dev, audience: pgwarden, algorithms: [HS256], secretFile: ./jwt-secret, maxTokenLifetime: 15m }
policyFile: ./policy.yaml
`,
    );
  });

  it('policy explain prints the decision as JSON', async () => {
    const deny = await pgwarden([
      'policy',
      'explain',
      '--config',
      configFile,
      '--role',
      'analyst',
      '--sql',
      'SELECT * FROM customers',
    ]);
    expect(deny.code).toBe(0);
    const d = JSON.parse(deny.stdout);
    expect(d).toMatchObject({ role: 'analyst', decision: 'deny', reason: 'column_denied' });
    expect(d.message).toMatch(/ssn/);
    const allow = JSON.parse(
      (
        await pgwarden([
          'policy',
          'explain',
          '--config',
          configFile,
          '--role',
          'analyst',
          '--sql',
          'SELECT id, total FROM orders',
        ])
      ).stdout,
    );
    expect(allow).toMatchObject({ decision: 'allow', rewrittenSql: 'SELECT id, total FROM orders\nLIMIT 101' });
    expect(allow.statements[0].relations).toEqual(['public.orders']);
  });

  it('token mint prints only a JWT, and refuses a ttl over the maximum', async () => {
    const r = await pgwarden([
      'token',
      'mint',
      '--config',
      configFile,
      '--sub',
      'alice',
      '--role',
      'analyst',
      '--ttl',
      '60s',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    const long = await pgwarden([
      'token',
      'mint',
      '--config',
      configFile,
      '--sub',
      'alice',
      '--role',
      'analyst',
      '--ttl',
      '2h',
    ]);
    expect(long.code).not.toBe(0);
  });

  it('token mint --single-use marks the token single-use (with a jti); without the flag the claim is absent', async () => {
    const claims = (jwt: string) =>
      JSON.parse(Buffer.from(jwt.trim().split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
    const once = await pgwarden([
      'token',
      'mint',
      '--config',
      configFile,
      '--sub',
      'alice',
      '--role',
      'analyst',
      '--ttl',
      '60s',
      '--single-use',
    ]);
    expect(once.code).toBe(0);
    expect(claims(once.stdout)).toMatchObject({ pgwarden_single_use: true, jti: expect.any(String) });
    const plain = await pgwarden([
      'token',
      'mint',
      '--config',
      configFile,
      '--sub',
      'alice',
      '--role',
      'analyst',
      '--ttl',
      '60s',
    ]);
    expect(claims(plain.stdout)).not.toHaveProperty('pgwarden_single_use');
  });

  it('reports every configuration error at once with its key path and exits non-zero', async () => {
    const broken = path.join(dir, 'broken.yaml');
    writeFileSync(
      broken,
      `listen: { port: notaport }\nupstream: { host: 127.0.0.1 }\nauth: { issuer: x, audience: y, algorithms: [none], maxTokenLifetime: soon }\npolicyFile: ./missing.yaml\n`,
    );
    const r = await pgwarden(['serve', '--config', broken]);
    expect(r.code).not.toBe(0);
    for (const key of [
      'listen.port',
      'upstream.database',
      'upstream.user',
      'auth.algorithms',
      'auth.maxTokenLifetime',
      'policyFile',
    ]) {
      expect(r.stderr).toContain(key);
    }
  });
});

const hasPsql = spawnSync('psql', ['--version']).status === 0;

describe.skipIf(!hasPsql)('psql catalog commands for the analyst (catalog: introspection)', () => {
  it.each([['\\dt'], ['\\d orders'], ['\\d'], ['\\dn'], ['\\d customers']])(
    '%s works through the proxy',
    async (cmd) => {
      const token = await tp.token();
      const r = await run(
        'psql',
        [
          '-X',
          '-v',
          'ON_ERROR_STOP=1',
          '-c',
          cmd,
          `host=127.0.0.1 port=${tp.proxy.port} dbname=app user=alice sslmode=disable`,
        ],
        {
          env: { ...process.env, PGPASSWORD: token },
          timeout: 15_000,
        },
      );
      expect(r.stderr).not.toMatch(/ERROR/);
      if (cmd.includes('orders')) expect(r.stdout).toMatch(/customer_id/);
      if (cmd === '\\dt') expect(r.stdout).toMatch(/orders/);
    },
  );
});
