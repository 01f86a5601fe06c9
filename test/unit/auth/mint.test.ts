// mintToken: claims and headers it sets, its ttl bound, and that what it mints verifies with the matching verifier.
import { createPrivateKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as jose from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTokenVerifier } from '../../../proxy/auth/jwt.ts';
import { mintToken } from '../../../proxy/auth/mint.ts';
import type { AuthConfig } from '../../../proxy/config/types.ts';
import { generateKeyFiles, makeTempDir, testAuthConfig, writeHmacSecret, writeJwks } from '../../helpers/keys.ts';

const NOW_MS = Date.UTC(2026, 10, 22, 10, 0, 0, 750);
const NOW = Math.floor(NOW_MS / 1000);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const ctx = { roleExists: (role: string) => role === 'analyst' };

let tmp: ReturnType<typeof makeTempDir>;
let dir: string;
beforeEach(() => {
  tmp = makeTempDir('pgwarden-mint-');
  dir = tmp.dir;
});
afterEach(() => tmp.cleanup());

async function verifies(auth: AuthConfig, token: string): Promise<boolean> {
  const verifier = await createTokenVerifier(auth, { now: () => NOW_MS });
  try {
    const result = await verifier.verify(token, ctx);
    return result.ok;
  } finally {
    verifier.close();
  }
}

describe('HS256', () => {
  it('sets iss, aud, sub, role, agent, tenant, iat, exp and a random jti, and verifies', async () => {
    const auth = testAuthConfig({ secretFile: writeHmacSecret(dir).path });
    const token = await mintToken(
      auth,
      { sub: 'alice', role: 'analyst', agent: 'agent-1', tenant: 'acme' },
      5 * 60_000,
      NOW_MS,
    );
    expect(jose.decodeProtectedHeader(token)).toEqual({ alg: 'HS256', typ: 'JWT' });
    const claims = jose.decodeJwt(token);
    expect(claims).toEqual({
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      sub: 'alice',
      role: 'analyst',
      agent: 'agent-1',
      tenant: 'acme',
      iat: NOW,
      exp: NOW + 300,
      jti: expect.stringMatching(UUID),
    });
    expect(await verifies(auth, token)).toBe(true);
  });

  it('uses a given jti, and a different random one each time otherwise', async () => {
    const auth = testAuthConfig({ secretFile: writeHmacSecret(dir).path });
    const given = await mintToken(auth, { sub: 'a', role: 'analyst', jti: 'fixed-1' }, 60_000, NOW_MS);
    expect(jose.decodeJwt(given).jti).toBe('fixed-1');
    const a = jose.decodeJwt(await mintToken(auth, { sub: 'a', role: 'analyst' }, 60_000, NOW_MS)).jti;
    const b = jose.decodeJwt(await mintToken(auth, { sub: 'a', role: 'analyst' }, 60_000, NOW_MS)).jti;
    expect(a).not.toBe(b);
  });

  it('uses the first issuer and audience when several are configured', async () => {
    const auth = testAuthConfig({
      secretFile: writeHmacSecret(dir).path,
      issuer: ['iss-a', 'iss-b'],
      audience: ['aud-a', 'aud-b'],
    });
    const claims = jose.decodeJwt(await mintToken(auth, { sub: 'a', role: 'analyst' }, 60_000, NOW_MS));
    expect(claims.iss).toBe('iss-a');
    expect(claims.aud).toBe('aud-a');
  });

  it('refuses a ttl above maxTokenLifetime and accepts exactly the maximum', async () => {
    const auth = testAuthConfig({ secretFile: writeHmacSecret(dir).path, maxTokenLifetime: 15 * 60_000 });
    await expect(mintToken(auth, { sub: 'a', role: 'analyst' }, 15 * 60_000 + 1, NOW_MS)).rejects.toThrow(RangeError);
    await expect(mintToken(auth, { sub: 'a', role: 'analyst' }, 500, NOW_MS)).rejects.toThrow(RangeError);
    const atMax = await mintToken(auth, { sub: 'a', role: 'analyst' }, 15 * 60_000, NOW_MS);
    const claims = jose.decodeJwt(atMax);
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(900);
    expect(await verifies(auth, atMax)).toBe(true);
  });

  it('refuses empty sub or role', async () => {
    const auth = testAuthConfig({ secretFile: writeHmacSecret(dir).path });
    await expect(mintToken(auth, { sub: '', role: 'analyst' }, 60_000)).rejects.toThrow(TypeError);
    await expect(mintToken(auth, { sub: 'a', role: '' }, 60_000)).rejects.toThrow(TypeError);
  });
});

describe('asymmetric', () => {
  it('signs RS256 with a PKCS8 PEM private key, verified by the SPKI PEM', async () => {
    const rsa = await generateKeyFiles(dir, 'RS256', 'r1');
    const auth = testAuthConfig({
      algorithms: ['RS256'],
      publicKeyFile: rsa.publicPemPath,
      privateKeyFile: rsa.privatePemPath,
    });
    const token = await mintToken(auth, { sub: 'a', role: 'analyst' }, 60_000, NOW_MS);
    expect(jose.decodeProtectedHeader(token)).toEqual({ alg: 'RS256', typ: 'JWT' });
    expect(await verifies(auth, token)).toBe(true);
  });

  it('accepts a PKCS1 ("RSA PRIVATE KEY") PEM too', async () => {
    const rsa = await generateKeyFiles(dir, 'RS256', 'r1');
    const pkcs1 = join(dir, 'pkcs1.pem');
    writeFileSync(
      pkcs1,
      createPrivateKey(await jose.exportPKCS8(rsa.privateKey)).export({ type: 'pkcs1', format: 'pem' }),
    );
    const auth = testAuthConfig({ algorithms: ['RS256'], publicKeyFile: rsa.publicPemPath, privateKeyFile: pkcs1 });
    expect(await verifies(auth, await mintToken(auth, { sub: 'a', role: 'analyst' }, 60_000, NOW_MS))).toBe(true);
  });

  it('signs ES256 with a private JWK and sets its kid, so a JWKS verifier picks the right key', async () => {
    const other = await generateKeyFiles(dir, 'ES256', 'other');
    const ec = await generateKeyFiles(dir, 'ES256', 'ec-2026');
    const auth = testAuthConfig({
      algorithms: ['ES256'],
      publicKeyFile: writeJwks(dir, [other.publicJwk, ec.publicJwk]),
      privateKeyFile: ec.privateJwkPath,
    });
    const token = await mintToken(auth, { sub: 'a', role: 'analyst' }, 60_000, NOW_MS);
    expect(jose.decodeProtectedHeader(token)).toEqual({ alg: 'ES256', typ: 'JWT', kid: 'ec-2026' });
    expect(await verifies(auth, token)).toBe(true);
  });

  it('needs privateKeyFile, fitting the first algorithm', async () => {
    const rsa = await generateKeyFiles(dir, 'RS256', 'r1');
    const ec = await generateKeyFiles(dir, 'ES256', 'e1');
    await expect(
      mintToken(
        testAuthConfig({ algorithms: ['RS256'], publicKeyFile: rsa.publicPemPath }),
        { sub: 'a', role: 'analyst' },
        60_000,
      ),
    ).rejects.toThrow(/privateKeyFile/);
    await expect(
      mintToken(
        testAuthConfig({ algorithms: ['RS256'], publicKeyFile: rsa.publicPemPath, privateKeyFile: ec.privatePemPath }),
        { sub: 'a', role: 'analyst' },
        60_000,
      ),
    ).rejects.toThrow(/RSA/);
    await expect(
      mintToken(
        testAuthConfig({ algorithms: ['RS256'], publicKeyFile: rsa.publicPemPath, privateKeyFile: rsa.publicPemPath }),
        { sub: 'a', role: 'analyst' },
        60_000,
      ),
    ).rejects.toThrow(/private/);
  });
});
