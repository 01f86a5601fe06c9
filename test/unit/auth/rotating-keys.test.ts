// Verification keys re-read from a public key file: the previous key overlaps for auth.keyOverlap by the verifier's clock, a bad file never replaces the key in use, JWKS candidates merge.
import { copyFileSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTokenVerifier, type TokenVerifier } from '../../../proxy/auth/jwt.ts';
import { openRotatingKeys, type RotatingKeys } from '../../../proxy/auth/keys.ts';
import {
  generateKeyFiles,
  makeTempDir,
  signToken,
  testAuthConfig,
  validClaims,
  writeJwks,
  type TestKeyPair,
} from '../../helpers/keys.ts';

const ctx = { roleExists: () => true };
const OVERLAP = 60_000;

let tmp: ReturnType<typeof makeTempDir>;
let now: number;
let keys: RotatingKeys;
let verifier: TokenVerifier;
const logs: string[] = [];
const results: string[] = [];

function replace(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

async function open(file: string, algorithms: string[]): Promise<void> {
  const auth = testAuthConfig({ algorithms, secretFile: undefined, publicKeyFile: file, keyOverlap: OVERLAP });
  keys = await openRotatingKeys(auth, {
    watch: false,
    now: () => now,
    log: (_l, msg) => logs.push(msg),
    onReload: (_s, r) => results.push(r),
  });
  verifier = await createTokenVerifier(auth, { keys, now: () => now });
}

const tokenBy = async (pair: TestKeyPair) =>
  await signToken(pair.privateKey, validClaims(Math.floor(now / 1000)), { alg: pair.alg, kid: pair.kid });
const verdict = async (token: string) => {
  const r = await verifier.verify(token, ctx);
  return r.ok ? 'ok' : r.reason;
};

beforeEach(() => {
  tmp = makeTempDir('pgwarden-rotkeys-');
  now = Date.UTC(2026, 10, 22, 10, 0, 0);
  logs.length = 0;
  results.length = 0;
});
afterEach(() => {
  verifier?.close();
  tmp.cleanup();
});

describe('a rotated public key file', () => {
  it('the previous key verifies within the overlap, then not; the new one at once', async () => {
    const a = await generateKeyFiles(tmp.dir, 'ES256');
    const b = await generateKeyFiles(tmp.dir, 'ES256');
    const file = join(tmp.dir, 'verify.pem');
    copyFileSync(a.publicPemPath, file);
    await open(file, ['ES256']);
    const byA = await tokenBy(a);
    expect(await verdict(await tokenBy(b))).toBe('bad_signature');

    replace(file, readFileSync(b.publicPemPath, 'utf8'));
    expect(await keys.reload()).toBe('changed');
    expect(await verdict(byA)).toBe('ok');
    expect(await verdict(await tokenBy(b))).toBe('ok');

    now += OVERLAP + 1;
    expect(await verdict(byA)).toBe('bad_signature');
    expect(await verdict(await tokenBy(b))).toBe('ok');
  });

  it('garbage, a private key, a key no algorithm fits, or a missing file keep the key in use', async () => {
    const a = await generateKeyFiles(tmp.dir, 'ES256');
    const rsa = await generateKeyFiles(tmp.dir, 'RS256');
    const file = join(tmp.dir, 'verify.pem');
    copyFileSync(a.publicPemPath, file);
    await open(file, ['ES256']);
    for (const text of [
      'not a key',
      readFileSync(a.privatePemPath, 'utf8'),
      readFileSync(rsa.publicPemPath, 'utf8'),
      '',
    ]) {
      replace(file, text);
      expect(await keys.reload()).toBe('failed');
      expect(await verdict(await tokenBy(a))).toBe('ok');
    }
    replace(file, 'x');
    renameSync(file, `${file}.gone`);
    expect(await keys.reload()).toBe('failed');
    expect(await verdict(await tokenBy(a))).toBe('ok');
    expect(logs.filter((m) => m.startsWith('verification key not reloaded')).length).toBe(5);
    // The private key's bytes never reach the log.
    expect(logs.join('\n')).not.toMatch(/PRIVATE KEY/);
  });

  it('a JWKS file: old and new sets both give candidates during the overlap (kid or none)', async () => {
    const a = await generateKeyFiles(tmp.dir, 'ES256');
    const b = await generateKeyFiles(tmp.dir, 'ES256');
    const c = await generateKeyFiles(tmp.dir, 'ES256');
    const file = writeJwks(tmp.dir, [a.publicJwk, b.publicJwk]);
    await open(file, ['ES256']);
    replace(file, JSON.stringify({ keys: [b.publicJwk, c.publicJwk] }));
    expect(await keys.reload()).toBe('changed');
    for (const p of [a, b, c]) expect(await verdict(await tokenBy(p))).toBe('ok');
    // Without a kid, every key of both sets is tried.
    expect(await verdict(await signToken(a.privateKey, validClaims(Math.floor(now / 1000)), { alg: 'ES256' }))).toBe(
      'ok',
    );
    now += OVERLAP + 1;
    expect(await verdict(await tokenBy(a))).not.toBe('ok');
    expect(await verdict(await tokenBy(c))).toBe('ok');
    expect(results).toEqual(['changed']);
  });
});
