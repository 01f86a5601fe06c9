// The issuing key: ES256 / EdDSA from a PKCS8 file, kid = RFC 7638 thumbprint, a rotated key signs at once while the replaced one stays published and verifying for the overlap only.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as jose from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IssuingKeys } from '../../../proxy/exchange/signing-keys.ts';
import { KeyUnavailableError } from '../../../proxy/auth/keys.ts';
import { makeTempDir } from '../../helpers/keys.ts';

let tmp: ReturnType<typeof makeTempDir>;
beforeEach(() => {
  tmp = makeTempDir();
});
afterEach(() => tmp.cleanup());

async function writeKey(file: string, alg: 'ES256' | 'EdDSA' | 'RS256'): Promise<void> {
  const { privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  writeFileSync(file, await jose.exportPKCS8(privateKey), { mode: 0o600 });
}

const quiet = { watch: false, log: () => {} };

describe('IssuingKeys', () => {
  it.each(['ES256', 'EdDSA'] as const)(
    'signs %s with a kid that is the public key thumbprint, publishing no private part',
    async (alg) => {
      const file = join(tmp.dir, 'k.pem');
      await writeKey(file, alg);
      const keys = await IssuingKeys.open(file, quiet);
      try {
        const { kid } = keys.current;
        expect(keys.current.alg).toBe(alg);
        const [jwk] = keys.jwks().keys;
        expect(jwk).toMatchObject({ kid, alg, use: 'sig' });
        expect(Object.keys(jwk ?? {}).some((k) => ['d', 'p', 'q', 'dp', 'dq', 'qi'].includes(k))).toBe(false);
        expect(await jose.calculateJwkThumbprint(jwk as jose.JWK)).toBe(kid);
        const token = await new jose.SignJWT({}).setProtectedHeader({ alg, kid }).sign(keys.current.privateKey);
        await expect(jose.jwtVerify(token, keys.verificationKeys().resolve)).resolves.toBeDefined();
      } finally {
        keys.close();
      }
    },
  );

  it('refuses a key that cannot issue', async () => {
    const file = join(tmp.dir, 'rsa.pem');
    await writeKey(file, 'RS256');
    await expect(IssuingKeys.open(file, quiet)).rejects.toThrow(/EC P-256 \(ES256\) or Ed25519/);
  });

  it('rotates with an overlap: the new key signs, the old one verifies until the overlap ends', async () => {
    const file = join(tmp.dir, 'k.pem');
    await writeKey(file, 'ES256');
    let now = 1_000_000;
    const keys = await IssuingKeys.open(file, { ...quiet, overlapMs: 60_000, now: () => now });
    try {
      const old = keys.current;
      const oldToken = await new jose.SignJWT({})
        .setProtectedHeader({ alg: 'ES256', kid: old.kid })
        .sign(old.privateKey);
      expect(await keys.reload()).toBe('unchanged');
      await writeKey(file, 'EdDSA');
      expect(await keys.reload()).toBe('changed');
      expect(keys.current.kid).not.toBe(old.kid);
      expect(keys.jwks().keys.map((k) => k.kid)).toEqual([keys.current.kid, old.kid]);
      const resolve = keys.verificationKeys().resolve;
      await expect(jose.jwtVerify(oldToken, resolve)).resolves.toBeDefined();
      now += 60_001;
      expect(keys.jwks().keys.map((k) => k.kid)).toEqual([keys.current.kid]);
      await expect(jose.jwtVerify(oldToken, resolve)).rejects.toBeInstanceOf(KeyUnavailableError);
      // A file that does not parse never replaces the key in use.
      writeFileSync(file, 'not a key', { mode: 0o600 });
      expect(await keys.reload()).toBe('failed');
      expect(keys.jwks().keys).toHaveLength(1);
    } finally {
      keys.close();
    }
  });
});
