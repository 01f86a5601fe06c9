// Key files as configuration: HMAC secret files and PEM / JWK / JWKS files read and parsed with node:crypto, checked against the pinned algorithms (auth/keys.ts imports them from here).
import { createPrivateKey, createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync, type Stats } from 'node:fs';
import type * as jose from 'jose';

/** Shortest HMAC secret accepted: HS256's output size; shorter secrets can be brute-forced offline from one token. */
export const HMAC_MIN_BYTES = 32;

/**
 * JWS algorithms pgwarden accepts in auth.algorithms: those jose implements on Node 20's WebCrypto.
 * `none` is absent on purpose; ML-DSA is absent because Node 20 has no WebCrypto support for it.
 */
export const SUPPORTED_ALGORITHMS = [
  'HS256',
  'HS384',
  'HS512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
] as const;
export type SupportedAlgorithm = (typeof SUPPORTED_ALGORITHMS)[number];

export function isSupportedAlgorithm(alg: string): alg is SupportedAlgorithm {
  return (SUPPORTED_ALGORITHMS as readonly string[]).includes(alg);
}

/** The algorithms pgwarden signs issued tokens with: asymmetric, so replicas verify each other with public keys only. */
export const ISSUING_ALGORITHMS = ['ES256', 'EdDSA'] as const;
export type IssuingAlgorithm = (typeof ISSUING_ALGORITHMS)[number];

/** ES256 for an EC P-256 key, EdDSA for an Ed25519 key; any other key is not used for issuing. */
export function issuingAlgorithmFor(key: KeyObject): IssuingAlgorithm | undefined {
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  return undefined;
}

export function isHmacAlgorithm(alg: string): boolean {
  return alg === 'HS256' || alg === 'HS384' || alg === 'HS512';
}

// ---------------------------------------------------------------------------------------------
// Files

/** Read a file for config, turning fs errors into a one-line reason ("does not exist", "is not readable"). */
export function readKeyFile(path: string): { ok: true; data: Buffer } | { ok: false; message: string } {
  try {
    return { ok: true, data: readFileSync(path) };
  } catch (err) {
    return { ok: false, message: describeFsError(path, err) };
  }
}

/**
 * Read a file that decides whom pgwarden trusts without being secret (the public verification key): anyone who could
 * write it could put their own key there and mint tokens, so group- or other-writable is refused as for secret files.
 */
export function readTrustedFile(path: string): { ok: true; data: Buffer } | { ok: false; message: string } {
  let st: Stats;
  try {
    st = statSync(path);
  } catch (err) {
    return { ok: false, message: describeFsError(path, err) };
  }
  const mode = st.mode & 0o777;
  if ((mode & 0o022) !== 0) {
    return {
      ok: false,
      message: `file ${path} is writable by ${mode & 0o020 ? 'its group' : 'others'} (mode ${mode.toString(8).padStart(4, '0')}), so anyone in them could replace the key; chmod go-w it`,
    };
  }
  return readKeyFile(path);
}

/**
 * Read a file holding a secret (HMAC key, private key, upstream password). Its permissions are checked the way libpq
 * checks a client key file, with one difference: writable by group or others is refused (anyone in them could
 * replace the secret), readable by them is a warning (libpq refuses; container runtimes often mount secrets 0644 or
 * 0440 with a group, see docs/deploy.md). Messages never name the file: a secret written where its path belongs
 * must not be echoed.
 */
export function readSecretFile(
  path: string,
): { ok: true; data: Buffer; warning: string | undefined } | { ok: false; message: string } {
  let st: Stats;
  let data: Buffer;
  try {
    st = statSync(path);
    data = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    const why =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'EACCES' || code === 'EPERM'
          ? 'is not readable (permission denied)'
          : code === 'EISDIR'
            ? 'is a directory'
            : `cannot be read (${code ?? 'error'})`;
    return { ok: false, message: `the file it names ${why}` };
  }
  const mode = st.mode & 0o777;
  const octal = mode.toString(8).padStart(4, '0');
  if ((mode & 0o022) !== 0) {
    return {
      ok: false,
      message: `the file it names is writable by ${mode & 0o020 ? 'its group' : 'others'} (mode ${octal}), so it could be replaced; chmod go-w it`,
    };
  }
  // libpq's rule for key files: 0600 or less, or 0640 or less when owned by root (a group of readers the admin chose).
  const tooOpen = (mode & 0o004) !== 0 || ((mode & 0o040) !== 0 && st.uid !== 0);
  const warning = tooOpen
    ? `the file it names is readable by ${(mode & 0o004) !== 0 ? 'every user' : 'its group'} (mode ${octal}); make it 0600 (or 0640 owned by root), as libpq requires of key files`
    : undefined;
  return { ok: true, data, warning };
}

export function describeFsError(path: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return `file ${path} does not exist`;
    case 'EACCES':
    case 'EPERM':
      return `file ${path} is not readable (permission denied)`;
    case 'EISDIR':
      return `${path} is a directory, not a file`;
    default:
      return `file ${path} cannot be read (${code ?? String(err)})`;
  }
}

/** Strip trailing CR/LF: secret files are usually written with `echo`, and the newline is not part of the secret. */
export function trimTrailingNewlines(data: Uint8Array): Uint8Array {
  let end = data.length;
  while (end > 0 && (data[end - 1] === 0x0a || data[end - 1] === 0x0d)) end--;
  return data.subarray(0, end);
}

/** Read an HMAC secret file: raw bytes, trailing newline trimmed, at least HMAC_MIN_BYTES. Throws on misconfiguration. */
export function readHmacSecret(path: string): Uint8Array {
  const read = readKeyFile(path);
  if (!read.ok) throw new Error(read.message);
  const secret = trimTrailingNewlines(read.data);
  if (secret.length < HMAC_MIN_BYTES) {
    throw new Error(`HMAC secret in ${path} is ${secret.length} bytes; at least ${HMAC_MIN_BYTES} are required`);
  }
  // Copy so the returned secret does not keep the whole read buffer alive or share it.
  return new Uint8Array(secret);
}

// ---------------------------------------------------------------------------------------------
// Parsing key files (synchronous, so config loading can report problems with every other issue)

export type KeyMaterial =
  | { format: 'pem'; pem: string; keys: [KeyObject] }
  | { format: 'jwk'; jwk: jose.JWK; keys: [KeyObject] }
  | { format: 'jwks'; jwks: jose.JSONWebKeySet; keys: KeyObject[] };

type ParseResult = { ok: true; material: KeyMaterial } | { ok: false; message: string };

/**
 * Parse the text of a key file: PEM (SPKI public key or X.509 certificate for 'public'; PKCS8, PKCS1 or SEC1 for
 * 'private'), a single JWK, or a JWKS. Public files must not hold private material.
 */
export function parseKeyText(text: string, want: 'public' | 'private'): ParseResult {
  const trimmed = text.trim();
  if (trimmed.startsWith('-----BEGIN')) return parsePem(trimmed, want);
  if (trimmed.startsWith('{')) {
    let json: unknown;
    try {
      json = JSON.parse(trimmed);
    } catch {
      return { ok: false, message: 'looks like JSON but does not parse' };
    }
    if (!isPlainObject(json)) return { ok: false, message: 'is not a JWK or JWKS object' };
    if ('keys' in json) return parseJwks(json, want);
    return parseSingleJwk(json, want);
  }
  return {
    ok: false,
    message:
      want === 'public'
        ? 'is neither a PEM public key ("-----BEGIN PUBLIC KEY-----") nor JWK / JWKS JSON'
        : 'is neither a PEM private key ("-----BEGIN PRIVATE KEY-----") nor a JWK JSON',
  };
}

function parsePem(pem: string, want: 'public' | 'private'): ParseResult {
  const isPrivatePem = /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem);
  if (want === 'public' && isPrivatePem) {
    return {
      ok: false,
      message: 'holds a private key; give the public key (SPKI PEM) instead, the proxy only verifies',
    };
  }
  if (want === 'private' && !isPrivatePem) return { ok: false, message: 'is not a PEM private key' };
  if (/ENCRYPTED/.test(pem)) return { ok: false, message: 'holds an encrypted private key, which is not supported' };
  try {
    const key = want === 'public' ? createPublicKey(pem) : createPrivateKey(pem);
    return { ok: true, material: { format: 'pem', pem, keys: [key] } };
  } catch (err) {
    return { ok: false, message: `is not a valid PEM ${want} key (${(err as Error).message})` };
  }
}

function parseSingleJwk(jwk: Record<string, unknown>, want: 'public' | 'private'): ParseResult {
  const key = jwkToKeyObject(jwk, want);
  if (typeof key === 'string') return { ok: false, message: key };
  return { ok: true, material: { format: 'jwk', jwk: jwk as jose.JWK, keys: [key] } };
}

function parseJwks(jwks: Record<string, unknown>, want: 'public' | 'private'): ParseResult {
  const list = jwks['keys'];
  if (!Array.isArray(list) || list.length === 0)
    return { ok: false, message: 'is a JWKS whose "keys" is not a non-empty list' };
  const keys: KeyObject[] = [];
  for (const [i, jwk] of list.entries()) {
    if (!isPlainObject(jwk)) return { ok: false, message: `JWKS key ${i} is not an object` };
    // Encryption keys may share a published set; they are never used to verify signatures.
    if (jwk['use'] === 'enc') continue;
    const key = jwkToKeyObject(jwk, want);
    if (typeof key === 'string') return { ok: false, message: `JWKS key ${i} ${key}` };
    keys.push(key);
  }
  if (keys.length === 0) return { ok: false, message: 'is a JWKS with no signature keys' };
  if (want === 'private') {
    if (keys.length !== 1)
      return { ok: false, message: 'is a JWKS with several keys; a private key file must hold exactly one' };
    const only = list.find((k) => isPlainObject(k) && k['use'] !== 'enc') as jose.JWK;
    return { ok: true, material: { format: 'jwk', jwk: only, keys: [keys[0] as KeyObject] } };
  }
  return { ok: true, material: { format: 'jwks', jwks: jwks as unknown as jose.JSONWebKeySet, keys } };
}

function jwkToKeyObject(jwk: Record<string, unknown>, want: 'public' | 'private'): KeyObject | string {
  if (typeof jwk['kty'] !== 'string') return 'is not a JWK (no "kty")';
  if (jwk['kty'] === 'oct') return 'is a symmetric ("oct") JWK; use auth.secretFile for HMAC secrets';
  // Not only "d": an RSA JWK's primes (p, q) or CRT values are the private key too, and "k" is a symmetric secret.
  const hasPrivate = ['d', 'priv', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'].some((m) => jwk[m] !== undefined);
  if (want === 'public' && hasPrivate) {
    return 'holds private key material ("d"); publish only the public key, the proxy only verifies';
  }
  if (want === 'private' && !hasPrivate) return 'is a public JWK; minting needs the private key ("d")';
  try {
    const input = { key: jwk as JsonWebKey, format: 'jwk' as const };
    return want === 'public' ? createPublicKey(input) : createPrivateKey(input);
  } catch (err) {
    return `is not a valid ${want} JWK (${(err as Error).message})`;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A short human description of a key: "RSA 2048-bit", "EC P-256", "Ed25519". */
export function describeKey(key: KeyObject): string {
  const details = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      return `${key.asymmetricKeyType === 'rsa' ? 'RSA' : 'RSA-PSS'} ${details?.modulusLength ?? '?'}-bit`;
    case 'ec':
      return `EC ${curveName(details?.namedCurve)}`;
    case 'ed25519':
      return 'Ed25519';
    default:
      return key.asymmetricKeyType ?? key.type;
  }
}

function curveName(nodeName: string | undefined): string {
  switch (nodeName) {
    case 'prime256v1':
      return 'P-256';
    case 'secp384r1':
      return 'P-384';
    case 'secp521r1':
      return 'P-521';
    default:
      return nodeName ?? '?';
  }
}

const EC_CURVE_FOR_ALG: Record<string, string> = { ES256: 'P-256', ES384: 'P-384', ES512: 'P-521' };

/**
 * Why `key` cannot be used with `alg`, or undefined when it can. jwk restrictions ("alg", "use") count too.
 * RSA keys under 2048 bits are refused as jose does at verification time, but here at startup.
 */
export function algorithmMismatch(key: KeyObject, alg: string, jwk?: jose.JWK): string | undefined {
  if (jwk?.alg !== undefined && jwk.alg !== alg) return `the key is restricted to ${jwk.alg}`;
  if (jwk?.use !== undefined && jwk.use !== 'sig') return `the key's "use" is ${jwk.use}, not sig`;
  const type = key.asymmetricKeyType;
  const desc = describeKey(key);
  if (alg.startsWith('RS') || alg.startsWith('PS')) {
    const fits = type === 'rsa' || (alg.startsWith('PS') && type === 'rsa-pss');
    if (!fits) return `${alg} needs an RSA key, not ${desc}`;
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) return `${alg} needs an RSA key of at least 2048 bits, not ${desc}`;
    return undefined;
  }
  if (alg.startsWith('ES')) {
    const want = EC_CURVE_FOR_ALG[alg];
    if (type !== 'ec' || curveName(key.asymmetricKeyDetails?.namedCurve) !== want)
      return `${alg} needs an EC ${want} key, not ${desc}`;
    return undefined;
  }
  if (alg === 'EdDSA' || alg === 'Ed25519') {
    return type === 'ed25519' ? undefined : `${alg} needs an Ed25519 key, not ${desc}`;
  }
  return `${alg} is not an asymmetric signature algorithm`;
}

/** Algorithms among `algorithms` that at least one key in the material can verify (or sign) with. */
export function usableAlgorithms(material: KeyMaterial, algorithms: readonly string[]): string[] {
  return algorithms.filter(
    (alg) =>
      !isHmacAlgorithm(alg) &&
      material.keys.some((key, i) => {
        const jwk =
          material.format === 'jwk'
            ? material.jwk
            : material.format === 'jwks'
              ? material.jwks.keys.filter((k) => k.use !== 'enc')[i]
              : undefined;
        return algorithmMismatch(key, alg, jwk) === undefined;
      }),
  );
}
