// loadConfig: the documented example loads with its defaults, and every kind of mistake is reported at once with its key path.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatConfigIssues, loadConfig, type ConfigIssue } from '../../../proxy/config/load.ts';
import type { Config } from '../../../proxy/config/types.ts';
import { generateKeyFiles, makeTempDir, writeHmacSecret, writeJwks } from '../../helpers/keys.ts';
import { exampleConfigYaml } from '../../fixtures/example.ts';

const EXAMPLE = exampleConfigYaml();

// The smallest valid config, for tests that vary one thing; `auth` lines are replaced by callers as needed.
function minimal(auth = '  algorithms: [HS256]\n  secretFile: ./secrets/jwt-secret\n', extra = ''): string {
  return `upstream: { host: db.internal, database: app, user: pgwarden }
auth:
  issuer: pgwarden-dev
  audience: pgwarden
${auth}policyFile: ./policy.yaml
${extra}`;
}

let tmp: ReturnType<typeof makeTempDir>;
let dir: string;

beforeEach(() => {
  tmp = makeTempDir('pgwarden-config-');
  dir = tmp.dir;
  mkdirSync(join(dir, 'secrets'));
  writeHmacSecret(join(dir, 'secrets'), 48, 'jwt-secret');
  writeFileSync(join(dir, 'secrets', 'upstream-password'), 's3cret-upstream\n');
  writeFileSync(join(dir, 'policy.yaml'), 'roles: {}\n');
});
afterEach(() => tmp.cleanup());

function write(text: string, name = 'pgwarden.yaml'): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

function loadOk(text: string, env: NodeJS.ProcessEnv = {}): Config {
  const result = loadConfig(write(text), { env });
  if (!result.ok) throw new Error(`expected the config to load:\n${formatConfigIssues(result.issues)}`);
  return result.config;
}

function loadIssues(text: string, env: NodeJS.ProcessEnv = {}): ConfigIssue[] {
  const result = loadConfig(write(text), { env });
  if (result.ok) throw new Error('expected config issues');
  return result.issues;
}

function paths(issues: ConfigIssue[]): string[] {
  return issues.map((i) => i.path);
}

describe('the documented example', () => {
  it('loads, resolving paths against the file and filling every default', () => {
    const config = loadOk(EXAMPLE);
    expect(config.baseDir).toBe(dir);
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 6432, tls: undefined });
    expect(config.upstream).toEqual({
      host: '127.0.0.1',
      port: 5432,
      database: 'app',
      user: 'pgwarden',
      password: 's3cret-upstream',
      passwordFile: join(dir, 'secrets', 'upstream-password'),
      sslmode: 'disable',
      sslRootCert: undefined,
      connectTimeout: 10_000,
      checkInterval: 30_000,
      checkTimeout: 10_000,
    });
    expect(config.auth).toEqual({
      issuer: 'pgwarden-dev',
      audience: 'pgwarden',
      algorithms: ['HS256'],
      secretFile: join(dir, 'secrets', 'jwt-secret'),
      publicKeyFile: undefined,
      jwksUrl: undefined,
      privateKeyFile: undefined,
      maxTokenLifetime: 900_000,
      clockSkew: 30_000,
      allowCleartext: 'loopback',
      jwksCooldown: 30_000,
      jwksCacheMaxAge: 600_000,
      jwksTimeout: 5_000,
      keyOverlap: 600_000,
    });
    expect(config.policyFile).toBe(join(dir, 'policy.yaml'));
    expect(config.metrics).toEqual({ host: '127.0.0.1', port: 9187 });
    expect(config.limits).toEqual({
      maxMessageSize: 1024 * 1024,
      handshakeTimeout: 5_000,
      expiryGrace: 0,
      maxClientConnections: 1000,
      maxUnauthenticated: 256,
      maxUnauthenticatedPerAddress: 32,
      idleSessionTimeout: 5 * 60_000,
      maxSessionsPerSub: 50,
      maxSessionsPerAgent: 100,
      loginFailuresPerMinute: 30,
      cancelRequestsPerMinute: 60,
      maxUpstreamConnections: 0,
      decisionCacheBytes: 64 * 1024 * 1024,
      decideWorkers: 0,
      decideWorkerHeap: 512 * 1024 * 1024,
    });
    expect(config.log).toEqual({ level: 'info' });
  });

  it('is deeply frozen', () => {
    const config = loadOk(EXAMPLE);
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.auth)).toBe(true);
    expect(Object.isFrozen(config.auth.algorithms)).toBe(true);
    expect(() => {
      (config.auth.algorithms as string[]).push('none');
    }).toThrow(TypeError);
  });

  it('loads the same settings from JSON', () => {
    const json = {
      upstream: { host: '127.0.0.1', database: 'app', user: 'pgwarden', passwordFile: './secrets/upstream-password' },
      auth: {
        issuer: ['a', 'b'],
        audience: 'pgwarden',
        algorithms: ['HS256', 'HS512'],
        secretFile: './secrets/jwt-secret',
      },
      policyFile: './policy.yaml',
    };
    const result = loadConfig(write(JSON.stringify(json), 'pgwarden.json'), { env: {} });
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.config.auth.issuer).toEqual(['a', 'b']);
    expect(result.config.auth.algorithms).toEqual(['HS256', 'HS512']);
    expect(result.config.metrics).toBeUndefined();
  });
});

describe('reporting', () => {
  it('reports every issue at once, each with its key path', () => {
    const issues = loadIssues(`listen: { hots: 0.0.0.0, port: 70000 }
upstream:
  host: 127.0.0.1
  database: app
  user: pgwarden
  password: hunter2
  sslmode: prefer
auth:
  issuer: pgwarden-dev
  audience: pgwarden
  algorithms: [none, HS256]
  secretFile: ./secrets/missing-secret
  maxTokenLifetime: 15 mins
  clockSkew: -5s
limits: { maxMessageSize: 1 MBs, maxClientConnections: 0 }
log: { level: loud }
policyFile: ./nope.yaml
extra: true
`);
    expect(paths(issues).sort()).toEqual(
      [
        'listen.hots',
        'listen.port',
        'upstream.password',
        'upstream.sslmode',
        'auth.algorithms',
        'auth.secretFile',
        'auth.maxTokenLifetime',
        'auth.clockSkew',
        'limits.maxMessageSize',
        'limits.maxClientConnections',
        'log.level',
        'policyFile',
        'extra',
      ].sort(),
    );
    const byPath = new Map(issues.map((i) => [i.path, i.message]));
    // Contract: this exact text is in the operator docs.
    expect(byPath.get('auth.maxTokenLifetime')).toBe('not a duration ("15 mins")');
    expect(byPath.get('listen.hots')).toContain('did you mean "host"');
    expect(byPath.get('upstream.password')).toMatch(/passwordFile/);
    expect(byPath.get('upstream.password')).not.toContain('hunter2');
    expect(byPath.get('auth.algorithms')).toMatch(/none/);
  });

  it('formats issues as one "path: message" line each', () => {
    const text = formatConfigIssues([
      { path: 'auth.maxTokenLifetime', message: 'not a duration ("15 mins")' },
      { path: 'policyFile', message: 'is required' },
    ]);
    expect(text.split('\n')).toEqual([
      'configuration has 2 issues:',
      '  auth.maxTokenLifetime: not a duration ("15 mins")',
      '  policyFile: is required',
    ]);
  });

  it('reports required settings that are missing', () => {
    const issues = loadIssues('auth: { algorithms: [HS256], secretFile: ./secrets/jwt-secret }\n');
    expect(paths(issues).sort()).toEqual(
      ['auth.audience', 'auth.issuer', 'policyFile', 'upstream.database', 'upstream.host', 'upstream.user'].sort(),
    );
  });

  it('reports an unreadable config file and YAML syntax errors under "(file)"', () => {
    const missing = loadConfig(join(dir, 'absent.yaml'), { env: {} });
    expect(missing.ok).toBe(false);
    if (!missing.ok)
      expect(missing.issues).toEqual([{ path: '(file)', message: expect.stringContaining('does not exist') }]);

    const syntax = loadIssues('auth: [1, 2\npolicyFile: x\n');
    expect(paths(syntax)[0]).toBe('(file)');
    const dup = loadIssues(minimal() + 'policyFile: ./policy.yaml\n');
    expect(dup[0]?.message).toMatch(/unique/);
    expect(paths(loadIssues('- a\n- b\n'))).toEqual(['(file)']);
  });

  it('reports a section given as a scalar', () => {
    expect(paths(loadIssues(minimal(undefined, 'limits: 5\n')))).toEqual(['limits']);
  });
});

describe('upstream', () => {
  it('reads the password from the env var named by passwordEnv', () => {
    const config = loadOk(minimal(undefined, ''), {}).upstream;
    expect(config.password).toBeUndefined();
    const text = minimal().replace('user: pgwarden }', 'user: pgwarden, passwordEnv: PG_UP_PASS }');
    expect(loadOk(text, { PG_UP_PASS: 'from-env' }).upstream.password).toBe('from-env');
    const issues = loadIssues(text, {});
    expect(issues).toEqual([
      {
        path: 'upstream.passwordEnv',
        message: expect.stringContaining('the environment variable it names is not set'),
      },
    ]);
  });

  it('never echoes a secret written where its name or path belongs', () => {
    // A password pasted into passwordEnv: not a variable name, or (name-shaped) a variable that is not set.
    for (const pasted of ['hunter2!Secret#pw', 'Tr0ub4dorAndThree']) {
      const text = minimal().replace('user: pgwarden }', `user: pgwarden, passwordEnv: "${pasted}" }`);
      const issues = loadIssues(text, {});
      expect(paths(issues)).toEqual(['upstream.passwordEnv']);
      expect(formatConfigIssues(issues)).not.toContain(pasted);
    }
    // The same through the environment variable is impossible (passwordEnv has none), and a password pasted into
    // passwordFile or secretFile is a path that does not exist: the error says so without naming it.
    const file = loadIssues(
      minimal().replace('user: pgwarden }', 'user: pgwarden, passwordFile: "c0rrect-horse-battery" }'),
    );
    expect(file).toEqual([{ path: 'upstream.passwordFile', message: 'the file it names does not exist' }]);
    const hmac = loadIssues(minimal('  algorithms: [HS256]\n  secretFile: "kQ8vZ2-not-a-path-but-a-key"\n'));
    expect(hmac).toEqual([{ path: 'auth.secretFile', message: 'the file it names does not exist' }]);
    expect(formatConfigIssues(hmac)).not.toContain('kQ8vZ2');
  });

  it("refuses secret files others can write and warns about ones others can read (libpq's rule for key files)", () => {
    const pw = join(dir, 'secrets', 'upstream-password');
    const secretFile = join(dir, 'secrets', 'jwt-secret');
    const text = minimal().replace('user: pgwarden }', 'user: pgwarden, passwordFile: ./secrets/upstream-password }');
    chmodSync(pw, 0o600);
    chmodSync(secretFile, 0o600);
    const tight = loadConfig(write(text), { env: {} });
    expect(tight.ok && tight.warnings).toEqual([]);
    chmodSync(pw, 0o644);
    const readable = loadConfig(write(text), { env: {} });
    expect(readable.ok && readable.warnings).toEqual([
      { path: 'upstream.passwordFile', message: expect.stringMatching(/readable by every user \(mode 0644\).*0600/) },
    ]);
    // Group-readable is fine only for a file root owns (as libpq allows); the test user is not root.
    chmodSync(pw, 0o640);
    const group = loadConfig(write(text), { env: {} });
    if (process.getuid?.() !== 0)
      expect(group.ok && group.warnings).toEqual([
        { path: 'upstream.passwordFile', message: expect.stringContaining('readable by its group') },
      ]);
    chmodSync(pw, 0o600);
    chmodSync(secretFile, 0o620);
    expect(loadIssues(text)).toEqual([
      { path: 'auth.secretFile', message: expect.stringMatching(/writable by its group \(mode 0620\)/) },
    ]);
    chmodSync(secretFile, 0o602);
    expect(loadIssues(text)).toEqual([
      { path: 'auth.secretFile', message: expect.stringMatching(/writable by others/) },
    ]);
  });

  it('refuses both passwordFile and passwordEnv, a missing passwordFile, and a CA without verify-full', () => {
    const both = minimal().replace(
      'user: pgwarden }',
      'user: pgwarden, passwordEnv: X, passwordFile: ./secrets/upstream-password }',
    );
    expect(paths(loadIssues(both, { X: 'y' }))).toEqual(['upstream']);
    const missing = minimal().replace('user: pgwarden }', 'user: pgwarden, passwordFile: ./secrets/nope }');
    expect(loadIssues(missing)).toEqual([
      { path: 'upstream.passwordFile', message: expect.stringContaining('does not exist') },
    ]);
    writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    const ca = minimal().replace('user: pgwarden }', 'user: pgwarden, sslRootCert: ./ca.pem }');
    expect(paths(loadIssues(ca))).toEqual(['upstream.sslRootCert']);
    const verify = minimal().replace(
      'user: pgwarden }',
      'user: pgwarden, sslmode: verify-full, sslRootCert: ./ca.pem }',
    );
    expect(loadOk(verify).upstream.sslRootCert).toContain('BEGIN CERTIFICATE');
  });
});

describe('auth', () => {
  it('needs exactly one key source', () => {
    expect(paths(loadIssues(minimal('  algorithms: [HS256]\n')))).toEqual(['auth']);
    const two = loadIssues(
      minimal('  algorithms: [HS256]\n  secretFile: ./secrets/jwt-secret\n  jwksUrl: https://issuer.example/jwks\n'),
    );
    expect(paths(two)).toContain('auth');
  });

  it('needs a non-empty list of supported algorithms', () => {
    expect(loadIssues(minimal('  secretFile: ./secrets/jwt-secret\n'))).toEqual([
      { path: 'auth.algorithms', message: 'is required' },
    ]);
    expect(loadIssues(minimal('  algorithms: []\n  secretFile: ./secrets/jwt-secret\n'))).toEqual([
      { path: 'auth.algorithms', message: 'must not be empty' },
    ]);
    expect(paths(loadIssues(minimal('  algorithms: [HS257]\n  secretFile: ./secrets/jwt-secret\n')))).toEqual([
      'auth.algorithms',
    ]);
    expect(paths(loadIssues(minimal('  algorithms: [NONE]\n  secretFile: ./secrets/jwt-secret\n')))).toEqual([
      'auth.algorithms',
    ]);
  });

  it('keeps HMAC algorithms with secretFile and asymmetric ones with public keys', async () => {
    const rsa = await generateKeyFiles(dir, 'RS256', 'rsa1');
    const hsWithPublicKey = loadIssues(minimal(`  algorithms: [HS256]\n  publicKeyFile: ${rsa.publicPemPath}\n`));
    expect(hsWithPublicKey).toEqual([{ path: 'auth.algorithms', message: expect.stringContaining('secretFile') }]);
    const rsWithSecret = loadIssues(minimal('  algorithms: [RS256]\n  secretFile: ./secrets/jwt-secret\n'));
    expect(paths(rsWithSecret)).toEqual(['auth.algorithms']);
    const hsWithJwks = loadIssues(minimal('  algorithms: [RS256, HS256]\n  jwksUrl: https://issuer.example/jwks\n'));
    expect(paths(hsWithJwks)).toEqual(['auth.algorithms']);
  });

  it('refuses an HMAC secret shorter than 32 bytes (trailing newline not counted)', () => {
    writeFileSync(join(dir, 'secrets', 'short'), `${'x'.repeat(31)}\n`);
    expect(loadIssues(minimal('  algorithms: [HS256]\n  secretFile: ./secrets/short\n'))).toEqual([
      { path: 'auth.secretFile', message: 'secret is 31 bytes; at least 32 are required' },
    ]);
  });

  it('accepts jwksUrl over https, or http to loopback only', () => {
    const auth = (url: string) => minimal(`  algorithms: [RS256]\n  jwksUrl: ${url}\n`);
    expect(loadOk(auth('https://issuer.example/.well-known/jwks.json')).auth.jwksUrl).toBe(
      'https://issuer.example/.well-known/jwks.json',
    );
    expect(loadOk(auth('http://127.0.0.1:8080/jwks')).auth.jwksUrl).toBe('http://127.0.0.1:8080/jwks');
    expect(loadOk(auth('http://localhost:8080/jwks')).auth.jwksUrl).toBeDefined();
    expect(loadOk(auth('"http://[::1]:8080/jwks"')).auth.jwksUrl).toBeDefined();
    expect(paths(loadIssues(auth('http://issuer.example/jwks')))).toEqual(['auth.jwksUrl']);
    expect(paths(loadIssues(auth('http://127.0.0.1.evil.example/jwks')))).toEqual(['auth.jwksUrl']);
    expect(paths(loadIssues(auth('ftp://127.0.0.1/jwks')))).toEqual(['auth.jwksUrl']);
    expect(paths(loadIssues(auth('not a url')))).toEqual(['auth.jwksUrl']);
  });

  it('checks public and private key files against the algorithms', async () => {
    const rsa = await generateKeyFiles(dir, 'RS256', 'rsa1');
    const ec = await generateKeyFiles(dir, 'ES256', 'ec1');
    const ok = loadOk(
      minimal(`  algorithms: [RS256, PS256]\n  publicKeyFile: ./rsa1.pub.pem\n  privateKeyFile: ./rsa1.key.pem\n`),
    );
    expect(ok.auth.publicKeyFile).toBe(rsa.publicPemPath);
    expect(ok.auth.privateKeyFile).toBe(rsa.privatePemPath);
    loadOk(
      minimal(`  algorithms: [ES256]\n  publicKeyFile: ./ec1.pub.jwk.json\n  privateKeyFile: ./ec1.key.jwk.json\n`),
    );
    const jwks = writeJwks(dir, [rsa.publicJwk, ec.publicJwk]);
    loadOk(minimal(`  algorithms: [ES256, RS256]\n  publicKeyFile: ${jwks}\n  privateKeyFile: ./ec1.key.pem\n`));

    const wrongAlg = loadIssues(minimal(`  algorithms: [ES256]\n  publicKeyFile: ./rsa1.pub.pem\n`));
    expect(wrongAlg).toEqual([{ path: 'auth.algorithms', message: expect.stringContaining('EC P-256') }]);
    const privateAsPublic = loadIssues(minimal(`  algorithms: [RS256]\n  publicKeyFile: ./rsa1.key.pem\n`));
    expect(paths(privateAsPublic)).toEqual(['auth.publicKeyFile']);
    const privateJwkAsPublic = loadIssues(minimal(`  algorithms: [RS256]\n  publicKeyFile: ./rsa1.key.jwk.json\n`));
    expect(paths(privateJwkAsPublic)).toEqual(['auth.publicKeyFile']);
    const mismatchedPair = loadIssues(
      minimal(
        `  algorithms: [ES256]\n  publicKeyFile: ./ec1.pub.pem\n  privateKeyFile: ${(await generateKeyFiles(dir, 'ES256', 'ec2')).privatePemPath}\n`,
      ),
    );
    expect(mismatchedPair).toEqual([{ path: 'auth.privateKeyFile', message: expect.stringContaining('private half') }]);
    writeFileSync(join(dir, 'garbage.pem'), 'hello');
    expect(paths(loadIssues(minimal(`  algorithms: [RS256]\n  publicKeyFile: ./garbage.pem\n`)))).toEqual([
      'auth.publicKeyFile',
    ]);
    expect(paths(loadIssues(minimal(`  algorithms: [RS256]\n  publicKeyFile: ./absent.pem\n`)))).toEqual([
      'auth.publicKeyFile',
    ]);
  });
});

describe('values and sources', () => {
  it('accepts byte sizes and durations in every documented form', () => {
    const config = loadOk(
      minimal(
        undefined,
        'limits: { maxMessageSize: 512kB, handshakeTimeout: 5, idleSessionTimeout: 1h, expiryGrace: 250ms }\n',
      ),
    );
    expect(config.limits.maxMessageSize).toBe(512 * 1024);
    expect(config.limits.handshakeTimeout).toBe(5_000);
    expect(config.limits.idleSessionTimeout).toBe(3_600_000);
    expect(config.limits.expiryGrace).toBe(250);
    expect(loadOk(minimal(undefined, 'limits: { maxMessageSize: 65536 }\n')).limits.maxMessageSize).toBe(65_536);
  });

  it('refuses durations that Node timers cannot wait for and lifetimes over a day', () => {
    const issues = loadIssues(
      minimal(
        '  algorithms: [HS256]\n  secretFile: ./secrets/jwt-secret\n  maxTokenLifetime: 2d\n',
        'limits: { idleSessionTimeout: 30d }\n',
      ),
    );
    expect(paths(issues).sort()).toEqual(['auth.maxTokenLifetime', 'limits.idleSessionTimeout']);
  });

  it('lets env vars override the file, and says where a bad value came from', () => {
    const config = loadOk(EXAMPLE, {
      PGWARDEN_LISTEN_PORT: '7000',
      PGWARDEN_LOG_LEVEL: 'debug',
      PGWARDEN_UPSTREAM_HOST: 'db',
    });
    expect(config.listen.port).toBe(7000);
    expect(config.log.level).toBe('debug');
    expect(config.upstream.host).toBe('db');
    expect(loadIssues(EXAMPLE, { PGWARDEN_LISTEN_PORT: 'abc' })).toEqual([
      { path: 'listen.port', message: 'not a port number ("abc") (from PGWARDEN_LISTEN_PORT)' },
    ]);
  });

  it('lets overrides (flags) win over env and file', () => {
    const result = loadConfig(write(EXAMPLE), {
      env: { PGWARDEN_LISTEN_PORT: '7000' },
      overrides: { 'listen.port': 7001 },
    });
    expect(result.ok && result.config.listen.port).toBe(7001);
  });

  it('enables metrics only when given, defaulting the host', () => {
    expect(loadOk(minimal()).metrics).toBeUndefined();
    expect(loadOk(minimal(undefined, 'metrics: { port: 9100 }\n')).metrics).toEqual({ host: '127.0.0.1', port: 9100 });
    expect(loadOk(minimal(), { PGWARDEN_METRICS_PORT: '9101' }).metrics).toEqual({ host: '127.0.0.1', port: 9101 });
    expect(loadIssues(minimal(undefined, 'metrics: { host: 0.0.0.0 }\n'))).toEqual([
      { path: 'metrics.port', message: 'is required when metrics is given' },
    ]);
  });

  it('checks listen.tls files when the section is given', () => {
    writeFileSync(join(dir, 'cert.pem'), '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
    writeFileSync(join(dir, 'key.pem'), '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n');
    const tls = loadOk(minimal(undefined, 'listen: { tls: { certFile: ./cert.pem, keyFile: ./key.pem } }\n')).listen
      .tls;
    expect(tls).toEqual({ certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem') });
    expect(loadIssues(minimal(undefined, 'listen: { tls: { certFile: ./cert.pem } }\n'))).toEqual([
      { path: 'listen.tls.keyFile', message: 'is required when listen.tls is given' },
    ]);
    expect(
      paths(loadIssues(minimal(undefined, 'listen: { tls: { certFile: ./key.pem, keyFile: ./cert.pem } }\n'))).sort(),
    ).toEqual(['listen.tls.certFile', 'listen.tls.keyFile']);
  });
});

describe('cluster, limits, audit and revocation sections', () => {
  it('parses peers as id@host:port and defaults to a lone replica 0', () => {
    expect(loadOk(minimal()).cluster).toEqual({ replicaId: 0, peers: [] });
    const c = loadOk(
      minimal(undefined, 'cluster: { replicaId: 1, peers: ["2@pgwarden-1.pgwarden:6432", "3@10.0.0.3:6432"] }\n'),
    );
    expect(c.cluster).toEqual({
      replicaId: 1,
      peers: [
        { id: 2, host: 'pgwarden-1.pgwarden', port: 6432 },
        { id: 3, host: '10.0.0.3', port: 6432 },
      ],
    });
  });

  it('refuses malformed peers, our own id and duplicates', () => {
    const issues = loadIssues(minimal(undefined, 'cluster: { replicaId: 1, peers: ["nope", "1@a:1", "200@a:1"] }\n'));
    expect(paths(issues).filter((p) => p === 'cluster.peers').length).toBe(3);
    expect(paths(loadIssues(minimal(undefined, 'cluster: { replicaId: 300 }\n')))).toContain('cluster.replicaId');
  });

  it('audit defaults to stdout, normalized SQL and refusing when it fails; a relative file resolves against the config', () => {
    expect(loadOk(minimal()).audit).toEqual({ destination: 'stdout', sql: 'normalized', onFailure: 'refuse' });
    expect(loadOk(minimal(undefined, 'audit: { destination: ./audit.jsonl }\n')).audit?.destination).toBe(
      join(dir, 'audit.jsonl'),
    );
    expect(paths(loadIssues(minimal(undefined, 'audit: { sql: everything }\n')))).toContain('audit.sql');
  });

  it('a revocation table section needs its schema and name', () => {
    expect(
      loadOk(minimal(undefined, 'revocation: { table: { schema: ops, name: revocations } }\n')).revocation?.table,
    ).toMatchObject({ schema: 'ops', name: 'revocations', channel: 'pgwarden_revocations' });
    expect(paths(loadIssues(minimal(undefined, 'revocation: { table: { schema: ops } }\n')))).toContain(
      'revocation.table.name',
    );
  });
});
