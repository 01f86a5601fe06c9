// Secrets rotated without a restart, against the real test Postgres: the upstream password under live logins, the verification key with its overlap, the TLS pair.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SignJWT } from 'jose';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { pgError, startTestProxy, superClient, testPg, type TestProxy } from '../helpers/proxy.ts';

/** Replace `file` by rename, as Vault Agent and Kubernetes do, mode 0600. */
function writeAtomically(file: string, data: string | Buffer, mode = 0o600): void {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, file);
}

/** The count of pgwarden_secret_reloads_total{secret, result}. */
async function reloads(tp: TestProxy, secret: string, result: string): Promise<number> {
  const metric = await tp.proxy.metrics.registry.getSingleMetric('pgwarden_secret_reloads_total')?.get();
  return metric?.values.find((v) => v.labels['secret'] === secret && v.labels['result'] === result)?.value ?? 0;
}

/** Waits (hang guard: 10 s) until the reload counter passes `before`. */
async function reloaded(tp: TestProxy, secret: string, result: string, before: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while ((await reloads(tp, secret, result)) <= before) {
    if (Date.now() > deadline) throw new Error(`no ${result} reload of ${secret} within 10 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function selectOne(cfg: pg.ClientConfig): Promise<void> {
  const c = new pg.Client(cfg);
  c.on('error', () => {});
  await c.connect();
  try {
    await c.query('SELECT id FROM public.orders LIMIT 1');
  } finally {
    await c.end();
  }
}

describe('upstream password rotation', () => {
  const ROLE = 'pgwarden_rotation_test';
  let dir: string;
  let passwordFile: string;
  let tp: TestProxy;
  let admin: pg.Client;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-rotation-'));
    passwordFile = path.join(dir, 'upstream-password');
    admin = await superClient();
    await admin.query(`DROP ROLE IF EXISTS ${ROLE}`);
    // A role of its own, so changing its password disturbs no other test; membership gives it the upstream user's grants.
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

  it('no login fails while the file is rewritten and then the server password changed; open sessions keep working', async () => {
    const open = new pg.Client(tp.pgConfig(await tp.token()));
    await open.connect();
    try {
      let stop = false;
      let ok = 0;
      const failures: string[] = [];
      const loop = (async () => {
        while (!stop) {
          try {
            await selectOne(tp.pgConfig(await tp.token()));
            ok++;
          } catch (err) {
            failures.push(`${(err as { code?: string }).code}: ${(err as Error).message}`);
          }
        }
      })();
      const atLeast = async (n: number) => {
        const deadline = Date.now() + 20_000;
        while (ok < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      };
      await atLeast(3);
      // The runbook's order: the secrets manager writes the new file, then the password changes in the database.
      const before = await reloads(tp, 'upstream_password', 'changed');
      writeAtomically(passwordFile, 'second-password\n');
      await reloaded(tp, 'upstream_password', 'changed', before);
      await atLeast(ok + 3);
      await admin.query(`ALTER ROLE ${ROLE} PASSWORD 'second-password'`);
      await atLeast(ok + 5);
      stop = true;
      await loop;
      expect(failures).toEqual([]);
      expect(ok).toBeGreaterThanOrEqual(11);
      // The session opened before the rotation still runs statements on its old connection.
      expect((await open.query('SELECT count(*)::int AS n FROM public.orders')).rows[0].n).toBeGreaterThan(0);
    } finally {
      await open.end();
    }
    // The old password is gone from the server, and pgwarden logs in with the new one.
    const direct = await pgError(() =>
      selectOne({
        host: testPg().host,
        port: testPg().port,
        user: ROLE,
        password: 'first-password',
        database: SAMPLE_DATABASE,
      }),
    );
    expect(direct.code).toBe('28P01');
    await selectOne(tp.pgConfig(await tp.token()));
  });

  it('with no logins in between, catalog reads (policy reload, readiness) follow the rotation too', async () => {
    const catalogFailures = () => tp.logs.filter((l) => l.includes('catalog reload failed')).length;
    const failuresBefore = catalogFailures();
    const before = await reloads(tp, 'upstream_password', 'changed');
    writeAtomically(passwordFile, 'quiet-password\n');
    await reloaded(tp, 'upstream_password', 'changed', before);
    // The policy reload reads the catalog with pgwarden's own credentials, before and after the server's change.
    await tp.proxy.reload();
    await admin.query(`ALTER ROLE ${ROLE} PASSWORD 'quiet-password'`);
    await tp.proxy.reload();
    expect(catalogFailures()).toBe(failuresBefore);
    await selectOne(tp.pgConfig(await tp.token()));
  });

  it('the other order (server first, then file) heals at the next login once the file is written', async () => {
    await admin.query(`ALTER ROLE ${ROLE} PASSWORD 'third-password'`);
    // Until the file follows, pgwarden has no password the server takes: the login is refused as an upstream failure.
    const err = await pgError(async () => selectOne(tp.pgConfig(await tp.token())));
    expect(err.message).toMatch(/SQLSTATE 28P01/);
    // Written but not yet noticed by the watcher: the 28P01 retry re-reads the file at once.
    writeAtomically(passwordFile, 'third-password\n');
    await selectOne(tp.pgConfig(await tp.token()));
  });

  it('a file that is empty, group-writable or missing never replaces the password in use', async () => {
    for (const bad of [
      () => writeAtomically(passwordFile, '\n'),
      () => writeAtomically(passwordFile, 'intruder-password\n', 0o622),
      () => rmSync(passwordFile),
    ]) {
      const before = await reloads(tp, 'upstream_password', 'failed');
      bad();
      await tp.proxy.reload();
      expect(await reloads(tp, 'upstream_password', 'failed')).toBeGreaterThan(before);
      await selectOne(tp.pgConfig(await tp.token()));
    }
    expect(tp.logs.join('')).toMatch(
      /upstream_password not reloaded, the one in use is kept: the file it names is writable by its group/,
    );
    expect(tp.logs.join('')).not.toMatch(/intruder-password/);
    writeAtomically(passwordFile, 'third-password\n');
  });
});

describe('verification key rotation with an overlap', () => {
  let tp: TestProxy;
  let offset = 0;
  beforeAll(async () => {
    tp = await startTestProxy({
      auth: { keyOverlap: 60_000 },
      deps: { watchSecrets: true, now: () => Date.now() + offset },
    });
  });
  afterAll(async () => {
    await tp?.close();
  });
  afterEach(() => {
    offset = 0;
  });

  const sign = (secret: Buffer | Uint8Array) =>
    new SignJWT({ sub: 'alice', role: 'analyst' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('pgwarden-test')
      .setAudience('pgwarden')
      .setIssuedAt(Math.floor((Date.now() + offset) / 1000))
      .setExpirationTime(Math.floor((Date.now() + offset) / 1000) + 600)
      .sign(secret);

  it('a token signed by the previous key verifies within keyOverlap, then not; the new key at once; a bad file is kept out', async () => {
    const oldToken = await tp.token();
    const newSecret = Buffer.from(randomBytes(32).toString('base64url'));
    const before = await reloads(tp, 'verification_key', 'changed');
    writeAtomically(tp.config.auth.secretFile as string, newSecret);
    await reloaded(tp, 'verification_key', 'changed', before);

    await selectOne(tp.pgConfig(oldToken));
    await selectOne(tp.pgConfig(await sign(newSecret)));
    const stranger = await pgError(async () => selectOne(tp.pgConfig(await sign(randomBytes(32)))));
    expect(stranger.code).toBe('28P01');

    // A secret too short to be safe, or one others may write, is refused; the new key stays in use.
    for (const [bytes, mode] of [
      [Buffer.from('short'), 0o600],
      [Buffer.from(randomBytes(32).toString('base64url')), 0o602],
    ] as const) {
      const failed = await reloads(tp, 'verification_key', 'failed');
      writeAtomically(tp.config.auth.secretFile as string, bytes, mode);
      await reloaded(tp, 'verification_key', 'failed', failed);
      await selectOne(tp.pgConfig(await sign(newSecret)));
    }
    writeAtomically(tp.config.auth.secretFile as string, newSecret);
    await tp.proxy.reload();

    offset = 61_000; // past auth.keyOverlap
    const late = await pgError(async () => selectOne(tp.pgConfig(await sign(Buffer.from(tp.secret)))));
    expect(late.code).toBe('28P01');
    expect(late.message).toMatch(/signature/);
    await selectOne(tp.pgConfig(await sign(newSecret)));
  });

  it('only the key just replaced overlaps: a key two rotations old is refused at once (the leaked-key runbook)', async () => {
    const leaked = Buffer.from(randomBytes(32).toString('base64url'));
    const b = Buffer.from(randomBytes(32).toString('base64url'));
    const c = Buffer.from(randomBytes(32).toString('base64url'));
    for (const key of [leaked, b, c]) {
      const before = await reloads(tp, 'verification_key', 'changed');
      writeAtomically(tp.config.auth.secretFile as string, key);
      await reloaded(tp, 'verification_key', 'changed', before);
    }
    const err = await pgError(async () => selectOne(tp.pgConfig(await sign(leaked))));
    expect(err.code).toBe('28P01');
    await selectOne(tp.pgConfig(await sign(b)));
    await selectOne(tp.pgConfig(await sign(c)));
  });
});

const openssl = spawnSync('openssl', ['version']).status === 0;

describe.skipIf(!openssl)('TLS pair rotation', () => {
  let dir: string;
  let tp: TestProxy;
  const certFile = () => path.join(dir, 'cert.pem');
  const keyFile = () => path.join(dir, 'key.pem');
  const makePair = (name: string): { cert: string; key: string } => {
    const key = path.join(dir, `${name}.key`);
    const cert = path.join(dir, `${name}.crt`);
    const r = spawnSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ]);
    if (r.status !== 0) throw new Error(String(r.stderr));
    return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
  };
  let first: { cert: string; key: string };
  let second: { cert: string; key: string };
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-rotation-tls-'));
    first = makePair('first');
    second = makePair('second');
    writeAtomically(certFile(), first.cert, 0o644);
    writeAtomically(keyFile(), first.key);
    tp = await startTestProxy({
      listen: { tls: { certFile: certFile(), keyFile: keyFile() } },
      auth: { allowCleartext: 'never' },
      deps: { watchSecrets: true },
    });
  });
  afterAll(async () => {
    await tp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('new handshakes get the new pair; a session opened before keeps its connection; a mismatched pair is kept out', async () => {
    const open = new pg.Client(tp.pgConfig(await tp.token(), { ssl: { ca: first.cert, servername: 'localhost' } }));
    await open.connect();
    try {
      // The certificate first, then the key (a secrets manager writing two files): the pair in between does not match.
      const failed = await reloads(tp, 'tls', 'failed');
      const changed = await reloads(tp, 'tls', 'changed');
      writeAtomically(certFile(), second.cert, 0o644);
      await reloaded(tp, 'tls', 'failed', failed);
      await selectOne(tp.pgConfig(await tp.token(), { ssl: { ca: first.cert, servername: 'localhost' } }));
      writeAtomically(keyFile(), second.key);
      await reloaded(tp, 'tls', 'changed', changed);

      await selectOne(tp.pgConfig(await tp.token(), { ssl: { ca: second.cert, servername: 'localhost' } }));
      // A client that trusts only the old certificate no longer completes a handshake.
      const refused = await pgError(async () =>
        selectOne(tp.pgConfig(await tp.token(), { ssl: { ca: first.cert, servername: 'localhost' } })),
      );
      expect(refused.message).toMatch(/certificate|self.signed/i);
      expect((await open.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await open.end();
    }
  });
});
