// Red team of the login-time features against a real pgwarden and Postgres: network binding, single-use tokens, key rotation and identity claims.
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as jose from 'jose';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProxy } from '../../proxy/index.ts';
import { mintToken } from '../../proxy/auth/mint.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { REVOCATION_TABLE_SQL } from '../../proxy/revocation/table.ts';
import { generateKeyFiles } from '../helpers/keys.ts';
import {
  DEFAULT_POLICY,
  loginError,
  pgError,
  startTestProxy,
  superClient,
  testPg,
  type TestProxy,
} from '../helpers/proxy.ts';

const POLICY = `${DEFAULT_POLICY}  bound:
    readOnly: true
    relations: [public.orders]
    networks: [10.0.0.0/8]
  local:
    readOnly: true
    relations: [public.orders]
    networks: [127.0.0.1/32]
`;

async function selectOne(cfg: pg.ClientConfig): Promise<number> {
  const c = new pg.Client(cfg);
  c.on('error', () => {});
  await c.connect();
  try {
    return (await c.query<{ n: number }>('SELECT 1 AS n')).rows[0]!.n;
  } finally {
    await c.end();
  }
}

/** Sessions the upstream holds whose application_name contains `probe` (a refused login must open none). */
async function upstreamSessions(probe: string): Promise<number> {
  const su = await superClient();
  try {
    return (
      await su.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE '%' || $1 || '%'`,
        [probe],
      )
    ).rows[0]!.n;
  } finally {
    await su.end();
  }
}

describe('network binding: claim shapes and families (IPv4 client 127.0.0.1)', () => {
  let tp: TestProxy;
  beforeAll(async () => {
    tp = await startTestProxy({ policy: POLICY });
  });
  afterAll(async () => {
    await tp?.close();
  });
  const now = () => Math.floor(Date.now() / 1000);
  const signed = (role: string, networks: unknown) =>
    tp.sign({
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      sub: 'alice',
      role,
      agent: 'redteam',
      iat: now(),
      exp: now() + 120,
      pgwarden_networks: networks,
    });

  // Every malformed claim is refused with the token (28P01), never read as "no claim" (which would mean anywhere).
  const malformed: [string, unknown][] = [
    ['a string instead of a list', '127.0.0.1/32'],
    ['an empty list (nowhere or anywhere: refused)', []],
    ['a nested list', [['127.0.0.1/32']]],
    ['null', null],
    ['an object', { '127.0.0.1/32': true }],
    ['a number', [2130706433]],
    ['leading zeros (octal in inet_aton)', ['127.000.000.001/32']],
    ['a zero-padded prefix', ['127.0.0.1/032']],
    ['full-width digits', ['１２７.0.0.1/32']],
    ['Arabic-Indic digits', ['١٢٧.0.0.1/32']],
    ['an IPv4-mapped network', ['::ffff:0:0/96']],
    ['an IPv4-mapped host', ['::ffff:127.0.0.1/128']],
    ['a zone id', ['fe80::1%lo/128']],
    ['host bits set', ['127.0.0.1/8']],
    ['a host name', ['localhost']],
    ['a short IPv4 form', ['127.1/32']],
    ['a hex IPv4', ['0x7f000001/32']],
    ['a prefix over 32', ['127.0.0.1/33']],
    ['a negative prefix', ['127.0.0.1/-1']],
    ['a trailing space', ['127.0.0.1/32 ']],
    ['one good and one bad entry', ['127.0.0.1/32', 'nonsense']],
  ];
  for (const [what, claim] of malformed) {
    it(`a pgwarden_networks claim that is ${what} is refused with 28P01`, async () => {
      const probe = `rt-net-${randomUUID().slice(0, 8)}`;
      const err = await loginError(tp.pgConfig(await signed('analyst', claim), { application_name: probe }));
      expect(err.code).toBe('28P01');
      expect(err.severity).toBe('FATAL');
      expect(await upstreamSessions(probe)).toBe(0);
    });
  }

  it('IPv6 networks never admit an IPv4 client: ::/0 and ::/96 (IPv4-compatible) are refused as network_denied', async () => {
    for (const claim of [['::/0'], ['::/96'], ['::7f00:1/128'], ['64:ff9b::/96']]) {
      const err = await loginError(tp.pgConfig(await signed('analyst', claim)));
      expect(err.code, JSON.stringify(claim)).toBe('28000');
      expect(err.detail).toMatch(/^reason=network_denied/);
    }
  });

  it('a claim only narrows: 0.0.0.0/0 does not widen a role bound to 10.0.0.0/8, and a claim narrows a role without networks', async () => {
    const widened = await loginError(tp.pgConfig(await signed('bound', ['0.0.0.0/0'])));
    expect(widened.code).toBe('28000');
    expect(widened.detail).toMatch(/^reason=network_denied/);
    const narrowed = await loginError(tp.pgConfig(await signed('analyst', ['10.0.0.0/8'])));
    expect(narrowed.code).toBe('28000');
    expect(narrowed.message).toMatch(/pgwarden_networks/);
    // Both sets contain the address: in.
    expect(await selectOne(tp.pgConfig(await signed('local', ['0.0.0.0/0', '127.0.0.0/8', '127.0.0.1/32'])))).toBe(1);
    // Duplicates and /0 of the client's family are harmless.
    expect(await selectOne(tp.pgConfig(await signed('analyst', ['127.0.0.1/32', '127.0.0.1/32'])))).toBe(1);
  });

  it('a reload that narrows a role ends its open sessions from outside, and new logins from there are refused', async () => {
    const c = new pg.Client(tp.pgConfig(await signed('local', ['127.0.0.1/32'])));
    const ended = new Promise<Error>((resolve) => c.on('error', resolve));
    await c.connect();
    expect((await c.query<{ n: number }>('SELECT 1 AS n')).rows[0]!.n).toBe(1);
    writeFileSync(tp.policyFile, POLICY.replace('networks: [127.0.0.1/32]', 'networks: [10.9.9.9/32]'));
    try {
      await tp.proxy.reload();
      const err = (await Promise.race([
        ended,
        c.query('SELECT 1').then(
          () => undefined,
          (e: Error) => e,
        ),
      ])) as (Error & { code?: string }) | undefined;
      expect(err).toBeDefined();
      const late = await loginError(tp.pgConfig(await signed('local', ['127.0.0.1/32'])));
      expect(late.code).toBe('28000');
    } finally {
      await c.end().catch(() => {});
      writeFileSync(tp.policyFile, POLICY);
      await tp.proxy.reload();
    }
  });
});

describe('single-use tokens: the consumption table and function seen from a client session', () => {
  const SCHEMA = 'pgwarden_rt_single_use';
  const FN = `${SCHEMA}.revocations_consume(bytea, text, timestamptz, text)`;
  let tp: TestProxy;
  beforeAll(async () => {
    const su = await superClient();
    await su.query(REVOCATION_TABLE_SQL(SCHEMA, 'revocations', 'pgwarden_rt_single_use'));
    await su.query(
      `GRANT USAGE ON SCHEMA ${SCHEMA} TO pgwarden; GRANT SELECT ON ${SCHEMA}.revocations TO pgwarden; GRANT EXECUTE ON FUNCTION ${FN} TO pgwarden`,
    );
    await su.end();
    const revocation = {
      file: undefined,
      table: { schema: SCHEMA, name: 'revocations', channel: 'pgwarden_rt_single_use', refreshMs: 30_000 },
    };
    tp = await startTestProxy({ policy: POLICY, config: { revocation } });
  });
  afterAll(async () => {
    await tp?.close();
  });

  const consumedCount = async (): Promise<number> => {
    const su = await superClient();
    try {
      return (await su.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${SCHEMA}.revocations_consumed`)).rows[0]!
        .n;
    } finally {
      await su.end();
    }
  };

  it('the SECURITY DEFINER function pins its search_path and is not executable by PUBLIC', async () => {
    const su = await superClient();
    try {
      const r = await su.query<{ secdef: boolean; config: string[] | null; public_exec: boolean }>(
        `SELECT p.prosecdef AS secdef, p.proconfig AS config, has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = 'revocations_consume'`,
        [SCHEMA],
      );
      expect(r.rows).toHaveLength(1);
      expect(r.rows[0]!.secdef).toBe(true);
      expect(r.rows[0]!.config).toEqual(['search_path=pg_catalog, pg_temp']);
      expect(r.rows[0]!.public_exec).toBe(false);
    } finally {
      await su.end();
    }
  });

  it('a session cannot call the consume function, read the consumed table or the revocation table (consume, learn jtis, DoS)', async () => {
    const jti = randomUUID();
    const token = await mintToken(
      tp.config.auth,
      { sub: 'alice', role: 'analyst', agent: 'rt', singleUse: true, jti },
      120_000,
    );
    const before = await consumedCount();
    const c = new pg.Client(tp.pgConfig(await tp.token()));
    await c.connect();
    try {
      const attempts = [
        `SELECT ${SCHEMA}.revocations_consume(sha256(convert_to('${jti}', 'UTF8')), '${jti}', now() + interval '1 hour', 'x')`,
        `SELECT * FROM ${SCHEMA}.revocations_consume('\\x00'::bytea, 'x', now(), 'x')`,
        `SELECT jti, consumed_by FROM ${SCHEMA}.revocations_consumed`,
        `SELECT * FROM ${SCHEMA}.revocations`,
        `SELECT count(*) FROM public.orders WHERE ${SCHEMA}.revocations_consume(sha256('a'::bytea), 'a', now(), 'x')`,
      ];
      for (const sql of attempts) {
        const err = await pgError(() => c.query(sql));
        expect(err.code, sql).toBe('42501');
      }
      // The extended protocol, with the jti as a parameter.
      const err = await pgError(() =>
        c.query(
          `SELECT ${SCHEMA}.revocations_consume(sha256(convert_to($1, 'UTF8')), $1, now() + interval '1 hour', 'x')`,
          [jti],
        ),
      );
      expect(err.code).toBe('42501');
    } finally {
      await c.end();
    }
    expect(await consumedCount()).toBe(before);
    // The token the session tried to burn still logs in, once.
    expect(await selectOne(tp.pgConfig(token))).toBe(1);
    expect((await loginError(tp.pgConfig(token))).detail).toMatch(/^reason=credential_used/);
  });

  it('a single-use token refused for its network is not consumed', async () => {
    const jti = randomUUID();
    const before = await consumedCount();
    const off = await mintToken(tp.config.auth, { sub: 'alice', role: 'bound', singleUse: true, jti }, 120_000);
    expect((await loginError(tp.pgConfig(off))).code).toBe('28000');
    expect(await consumedCount()).toBe(before);
  });

  it('jtis differing only in case or Unicode normal form are different tokens (each logs in once)', async () => {
    for (const jti of [`RT-${randomUUID()}`, `é-${randomUUID()}`]) {
      const variants = [jti, jti.toLowerCase(), jti.normalize('NFD')].filter((v, i, all) => all.indexOf(v) === i);
      for (const v of variants) {
        const t = await mintToken(tp.config.auth, { sub: 'alice', role: 'analyst', singleUse: true, jti: v }, 120_000);
        expect(await selectOne(tp.pgConfig(t))).toBe(1);
        expect((await loginError(tp.pgConfig(t))).detail).toMatch(/^reason=credential_used/);
      }
    }
  });
});

describe('verification key rotation: who may write the public key file decides which tokens verify', () => {
  let dir: string;
  let tp: TestProxy;
  let keyFile: string;
  let legit: Awaited<ReturnType<typeof generateKeyFiles>>;
  let attacker: Awaited<ReturnType<typeof generateKeyFiles>>;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-rt-keys-'));
    legit = await generateKeyFiles(dir, 'ES256', 'legit');
    attacker = await generateKeyFiles(dir, 'ES256', 'attacker');
    keyFile = path.join(dir, 'verify.pem');
    writeFileSync(keyFile, await jose.exportSPKI(legit.publicKey), { mode: 0o644 });
    chmodSync(keyFile, 0o644);
    tp = await startTestProxy({
      auth: { algorithms: ['ES256'], secretFile: undefined, publicKeyFile: keyFile, keyOverlap: 60_000 },
      deps: { watchSecrets: true },
    });
  });
  afterAll(async () => {
    await tp?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const now = () => Math.floor(Date.now() / 1000);
  const sign = (key: jose.CryptoKey) =>
    new jose.SignJWT({ sub: 'alice', role: 'analyst', agent: 'rt' })
      .setProtectedHeader({ alg: 'ES256' })
      .setIssuer('pgwarden-test')
      .setAudience('pgwarden')
      .setIssuedAt(now())
      .setExpirationTime(now() + 120)
      .sign(key);

  it("a public key file swapped for one others may write is kept out: the attacker's tokens never verify", async () => {
    expect(await selectOne(tp.pgConfig(await sign(legit.privateKey)))).toBe(1);
    for (const mode of [0o666, 0o664, 0o646]) {
      // An attacker with write access to a world/group-writable file (or its replacement by rename) puts their key there.
      const tmp = `${keyFile}.${mode.toString(8)}.tmp`;
      writeFileSync(tmp, await jose.exportSPKI(attacker.publicKey), { mode });
      chmodSync(tmp, mode);
      renameSync(tmp, keyFile);
      await tp.proxy.reload();
      const err = await loginError(tp.pgConfig(await sign(attacker.privateKey)));
      expect(err.code, `mode ${mode.toString(8)}`).toBe('28P01');
      expect(await selectOne(tp.pgConfig(await sign(legit.privateKey)))).toBe(1);
    }
    expect(tp.logs.join('')).toMatch(/verification key not reloaded, the one in use is kept: .*writable by/);
  });

  it('pgwarden does not start with a group- or other-writable public key file', async () => {
    const file = path.join(dir, 'open.pem');
    writeFileSync(file, await jose.exportSPKI(legit.publicKey));
    chmodSync(file, 0o666);
    const base = tp.config;
    const started = await createProxy(
      { ...base, listen: { ...base.listen, port: 0 }, auth: { ...base.auth, publicKeyFile: file } },
      { watchPolicy: false },
    ).then(
      (p) => p,
      (e: Error) => e,
    );
    // A regression would have started a proxy: stop it before failing.
    if (!(started instanceof Error)) await started.close(0);
    expect(started).toBeInstanceOf(Error);
    expect((started as Error).message).toMatch(/writable by/);
  });
});

describe('a public key file holding private key material', () => {
  it('an RSA JWK without "d" but with its primes (p, q, dp, dq, qi) is refused: pgwarden does not start with it', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-rt-jwk-'));
    const tp = await startTestProxy();
    try {
      const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
      const { d: _d, ...primes } = await jose.exportJWK(privateKey);
      expect(primes.p).toBeDefined();
      for (const [name, text] of [
        ['one.jwk.json', JSON.stringify({ ...primes, alg: 'RS256' })],
        ['set.jwks.json', JSON.stringify({ keys: [{ ...primes, alg: 'RS256', kid: 'k1' }] })],
      ] as const) {
        const file = path.join(dir, name);
        writeFileSync(file, text, { mode: 0o644 });
        const base = tp.config;
        const started = await createProxy(
          {
            ...base,
            listen: { ...base.listen, port: 0 },
            auth: { ...base.auth, algorithms: ['RS256'], secretFile: undefined, publicKeyFile: file },
          },
          { watchPolicy: false },
        ).then(
          (p) => p,
          (e: Error) => e,
        );
        if (!(started instanceof Error)) await started.close(0);
        expect(started, name).toBeInstanceOf(Error);
        expect((started as Error).message).toMatch(/private key material/);
      }
    } finally {
      await tp.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('identity claims that reach stamps, audit and application_name', () => {
  let tp: TestProxy;
  beforeAll(async () => {
    tp = await startTestProxy({ policy: POLICY });
  });
  afterAll(async () => {
    await tp?.close();
  });
  const now = () => Math.floor(Date.now() / 1000);

  it('an agent given by act.sub is held to the identity-claim rules: over 1,024 bytes or with a NUL is refused (28P01) and a single-use token is not consumed', async () => {
    for (const actSub of ['x'.repeat(20_000), 'agent\u0000admin']) {
      const jti = randomUUID();
      const claims = {
        iss: 'pgwarden-test',
        aud: 'pgwarden',
        sub: 'alice',
        role: 'analyst',
        iat: now(),
        exp: now() + 120,
        jti,
        pgwarden_single_use: true,
      };
      const err = await loginError(tp.pgConfig(await tp.sign({ ...claims, act: { sub: actSub } })));
      expect(err.code).toBe('28P01');
      expect(err.message).toMatch(/act\.sub/);
      // Same jti, a sane actor: its one login is still there (the refused one consumed nothing).
      expect(await selectOne(tp.pgConfig(await tp.sign({ ...claims, act: { sub: 'sane-agent' } })))).toBe(1);
      expect((await loginError(tp.pgConfig(await tp.sign({ ...claims, act: { sub: 'sane-agent' } })))).detail).toMatch(
        /^reason=credential_used/,
      );
    }
  });

  it('control characters, RTL overrides and a long agent never reach pg_stat_activity raw, and audit lines stay one JSON object each', async () => {
    const agents = ['ag\u202eent', 'ag\u001b[31ment', 'ag\nent', 'a'.repeat(1_000)];
    for (const agent of agents) {
      const token = await tp.sign({
        iss: 'pgwarden-test',
        aud: 'pgwarden',
        sub: 'alice',
        role: 'analyst',
        agent,
        iat: now(),
        exp: now() + 120,
      });
      const c = new pg.Client(tp.pgConfig(token, { application_name: 'rt-id' }));
      c.on('error', () => {});
      try {
        await c.connect();
      } catch (err) {
        // Refused is fine; what matters is nothing raw reached the database.
        expect((err as { code?: string }).code).toMatch(/^28/);
        continue;
      }
      try {
        const su = await superClient();
        try {
          const r = await su.query<{ a: string }>(`SELECT application_name AS a FROM pg_stat_activity WHERE pid = $1`, [
            (c as unknown as { processID: number }).processID,
          ]);
          expect(r.rows).toHaveLength(1);
          // PostgreSQL shows only printable ASCII in application_name; the prefix stays within NAMEDATALEN.
          expect(r.rows[0]!.a).not.toMatch(/[\u0000-\u001f\u007f-\uffff]/);
          expect(Buffer.byteLength(r.rows[0]!.a)).toBeLessThan(64);
        } finally {
          await su.end();
        }
      } finally {
        await c.end();
      }
    }
    const lines = tp.auditLines();
    for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
    // The RTL override reached the trail as its escape, never raw (a terminal would display the line reordered).
    expect(lines.some((l) => l.includes('ag\\u202eent'))).toBe(true);
    expect(lines.join('\n')).not.toMatch(/[\u202a-\u202e\u2066-\u2069]/);
  });
});

describe('single-use tokens through an upstream password rotation', () => {
  const ROLE = 'pgwarden_rt_single_use_rotation';
  const SCHEMA = 'pgwarden_rt_single_use';
  const FN = `${SCHEMA}.revocations_consume(bytea, text, timestamptz, text)`;
  let dir: string;
  let passwordFile: string;
  let tp: TestProxy;
  let admin: pg.Client;
  const writeAtomically = (file: string, data: string) => {
    const tmp = `${file}.${randomUUID()}.tmp`;
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, file);
  };
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-rt-su-rotation-'));
    passwordFile = path.join(dir, 'upstream-password');
    admin = await superClient();
    await admin.query(REVOCATION_TABLE_SQL(SCHEMA, 'revocations', 'pgwarden_rt_single_use'));
    await admin.query(
      `GRANT USAGE ON SCHEMA ${SCHEMA} TO pgwarden; GRANT SELECT ON ${SCHEMA}.revocations TO pgwarden; GRANT EXECUTE ON FUNCTION ${FN} TO pgwarden`,
    );
    await admin.query(`DROP ROLE IF EXISTS ${ROLE}`);
    await admin.query(`CREATE ROLE ${ROLE} LOGIN PASSWORD 'first-password' IN ROLE ${SAMPLE_UPSTREAM_USER}`);
    writeAtomically(passwordFile, 'first-password\n');
    const info = testPg();
    tp = await startTestProxy({
      config: {
        upstream: {
          host: info.host,
          port: info.port,
          database: SAMPLE_DATABASE,
          user: ROLE,
          password: 'first-password',
          passwordFile,
          sslmode: 'disable',
          sslRootCert: undefined,
          connectTimeout: 5_000,
        },
        revocation: {
          file: undefined,
          table: { schema: SCHEMA, name: 'revocations', channel: 'pgwarden_rt_single_use', refreshMs: 30_000 },
        },
      },
      deps: { watchSecrets: true },
    });
  });
  afterAll(async () => {
    await tp?.close();
    await admin.query(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => {});
    await admin.end();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the consumer connects with the password the server accepts: single-use logins work between the file write and ALTER ROLE, and after it', async () => {
    const single = () =>
      mintToken(tp.config.auth, { sub: 'alice', role: 'analyst', singleUse: true, jti: randomUUID() }, 120_000);
    // The runbook's order: the new file first (the consumer has not connected yet: its first use is below).
    writeAtomically(passwordFile, 'second-password\n');
    await tp.proxy.reload();
    expect(await selectOne(tp.pgConfig(await single()))).toBe(1);
    await admin.query(`ALTER ROLE ${ROLE} PASSWORD 'second-password'`);
    // The consumer's connection is lost after the change (a server restart, a failover): it reconnects with the new one.
    await admin.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgwarden:single-use'`,
    );
    expect(await selectOne(tp.pgConfig(await single()))).toBe(1);
    expect(await selectOne(tp.pgConfig(await single()))).toBe(1);
  });
});
