// Test key material generated at test time into temp dirs (never committed), and an independent token signer.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as jose from 'jose';
import type { AuthConfig } from '../../proxy/config/types.ts';

/** A temp directory removed by `cleanup()`; call it in afterEach/afterAll. */
export function makeTempDir(prefix = 'pgwarden-test-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Write a random HMAC secret of `bytes` base64url characters (as `openssl rand -base64` users do), with a
 * trailing newline as `echo` would add, and return its path and bytes. Text, so no byte is a stray CR/LF.
 */
export function writeHmacSecret(dir: string, bytes = 32, name = 'jwt-secret'): { path: string; secret: Uint8Array } {
  const secret = new Uint8Array(Buffer.from(randomBytes(bytes).toString('base64url').slice(0, bytes)));
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([secret, Buffer.from('\n')]), { mode: 0o600 });
  return { path, secret };
}

export interface TestKeyPair {
  alg: string;
  kid: string;
  privateKey: jose.CryptoKey;
  publicKey: jose.CryptoKey;
  publicJwk: jose.JWK;
  privateJwk: jose.JWK;
  /** Files in `dir`: SPKI PEM, PKCS8 PEM, public JWK (with kid and alg), private JWK (with kid). */
  publicPemPath: string;
  privatePemPath: string;
  publicJwkPath: string;
  privateJwkPath: string;
}

/** Generate a key pair for `alg` (RS256, PS256, ES256, EdDSA, …) and write it in every format the proxy reads. */
export async function generateKeyFiles(
  dir: string,
  alg: string,
  kid = `${alg.toLowerCase()}-${randomBytes(4).toString('hex')}`,
): Promise<TestKeyPair> {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true });
  const publicJwk: jose.JWK = { ...(await jose.exportJWK(publicKey)), kid, alg, use: 'sig' };
  const privateJwk: jose.JWK = { ...(await jose.exportJWK(privateKey)), kid, alg };
  const base = join(dir, kid);
  const files = {
    publicPemPath: `${base}.pub.pem`,
    privatePemPath: `${base}.key.pem`,
    publicJwkPath: `${base}.pub.jwk.json`,
    privateJwkPath: `${base}.key.jwk.json`,
  };
  writeFileSync(files.publicPemPath, await jose.exportSPKI(publicKey));
  writeFileSync(files.privatePemPath, await jose.exportPKCS8(privateKey), { mode: 0o600 });
  writeFileSync(files.publicJwkPath, JSON.stringify(publicJwk));
  writeFileSync(files.privateJwkPath, JSON.stringify(privateJwk), { mode: 0o600 });
  return { alg, kid, publicKey, privateKey, publicJwk, privateJwk, ...files };
}

/** Write a JWKS file holding the given public JWKs. */
export function writeJwks(dir: string, keys: jose.JWK[], name = 'jwks.json'): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify({ keys }));
  return path;
}

/** An AuthConfig with test defaults (HS256 unless overridden); no config file needed. */
export function testAuthConfig(overrides: Partial<AuthConfig>): AuthConfig {
  return {
    issuer: 'pgwarden-test',
    audience: 'pgwarden',
    algorithms: ['HS256'],
    secretFile: undefined,
    publicKeyFile: undefined,
    jwksUrl: undefined,
    privateKeyFile: undefined,
    maxTokenLifetime: 15 * 60_000,
    clockSkew: 30_000,
    allowCleartext: 'loopback',
    jwksCooldown: 30_000,
    jwksCacheMaxAge: 600_000,
    jwksTimeout: 2_000,
    ...overrides,
  };
}

/**
 * Sign any payload and header with jose directly, independent of mint.ts, so tests can build tokens the minter
 * would refuse to make (wrong issuer, long lifetime, missing claims, odd headers).
 */
export async function signToken(
  key: jose.CryptoKey | Uint8Array,
  payload: jose.JWTPayload,
  header: jose.JWTHeaderParameters,
): Promise<string> {
  return new jose.SignJWT(payload).setProtectedHeader(header).sign(key);
}

/** Standard valid claims at `nowSec`: iss/aud matching testAuthConfig, 5 minute lifetime. */
export function validClaims(nowSec: number, extra: jose.JWTPayload = {}): jose.JWTPayload {
  return {
    iss: 'pgwarden-test',
    aud: 'pgwarden',
    sub: 'alice',
    role: 'analyst',
    iat: nowSec,
    exp: nowSec + 300,
    ...extra,
  };
}

/** base64url of a JSON value, for hand-built tokens (alg none, malformed segments). */
export function b64json(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}
