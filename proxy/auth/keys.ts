// Key material for tokens: HMAC secret files, PEM / JWK / JWKS files, and remote JWKS, parsed with node:crypto and imported with jose.
import { createPrivateKey, createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { readFileSync, statSync, type Stats } from 'node:fs';
import * as jose from 'jose';
import type { AuthConfig } from '../config/types.ts';

/** Shortest HMAC secret accepted: HS256's output size; shorter secrets can be brute-forced offline from one token. */
export const HMAC_MIN_BYTES = 32;
/** Largest JWKS response read; a real key set is a few KB, and the endpoint is not ours to trust with memory. */
export const JWKS_MAX_BYTES = 512 * 1024;
/** JWKS fetch timeout when the config does not set auth.jwksTimeout (jose's own default). */
export const JWKS_DEFAULT_TIMEOUT_MS = 5_000;

/**
 * JWS algorithms pgwarden accepts in auth.algorithms: those jose implements on Node 20's WebCrypto.
 * `none` is absent on purpose; ML-DSA is absent because Node 20 has no WebCrypto support for it.
 */
export const SUPPORTED_ALGORITHMS = [
  'HS256', 'HS384', 'HS512',
  'RS256', 'RS384', 'RS512',
  'PS256', 'PS384', 'PS512',
  'ES256', 'ES384', 'ES512',
  'EdDSA', 'Ed25519',
] as const;
export type SupportedAlgorithm = (typeof SUPPORTED_ALGORITHMS)[number];

export function isSupportedAlgorithm(alg: string): alg is SupportedAlgorithm {
  return (SUPPORTED_ALGORITHMS as readonly string[]).includes(alg);
}

export function isHmacAlgorithm(alg: string): boolean {
  return alg === 'HS256' || alg === 'HS384' || alg === 'HS512';
}

/** A key source failed to give a key for this token: no matching kid, JWKS unreachable, or the verifier is closed. */
export class KeyUnavailableError extends Error {
  readonly kind: 'no_matching_key' | 'fetch_failed' | 'closed';
  constructor(kind: KeyUnavailableError['kind'], message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'KeyUnavailableError';
    this.kind = kind;
  }
}

/** The token's (allowed) algorithm cannot be used with the configured key, e.g. ES256 against an RSA key. */
export class KeyAlgorithmMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyAlgorithmMismatchError';
  }
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
 * Read a file holding a secret (HMAC key, private key, upstream password). Its permissions are checked the way libpq
 * checks a client key file, with one difference: writable by group or others is refused (anyone in them could
 * replace the secret), readable by them is a warning (libpq refuses; container runtimes often mount secrets 0644 or
 * 0440 with a group, see docs/deploy.md). Messages never name the file: a secret written where its path belongs
 * must not be echoed.
 */
export function readSecretFile(path: string): { ok: true; data: Buffer; warning: string | undefined } | { ok: false; message: string } {
  let st: Stats;
  let data: Buffer;
  try {
    st = statSync(path);
    data = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' || code === 'EPERM' ? 'is not readable (permission denied)' : code === 'EISDIR' ? 'is a directory' : `cannot be read (${code ?? 'error'})`;
    return { ok: false, message: `the file it names ${why}` };
  }
  const mode = st.mode & 0o777;
  const octal = mode.toString(8).padStart(4, '0');
  if ((mode & 0o022) !== 0) {
    return { ok: false, message: `the file it names is writable by ${mode & 0o020 ? 'its group' : 'others'} (mode ${octal}), so it could be replaced; chmod go-w it` };
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
    message: want === 'public'
      ? 'is neither a PEM public key ("-----BEGIN PUBLIC KEY-----") nor JWK / JWKS JSON'
      : 'is neither a PEM private key ("-----BEGIN PRIVATE KEY-----") nor a JWK JSON',
  };
}

function parsePem(pem: string, want: 'public' | 'private'): ParseResult {
  const isPrivatePem = /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem);
  if (want === 'public' && isPrivatePem) {
    return { ok: false, message: 'holds a private key; give the public key (SPKI PEM) instead, the proxy only verifies' };
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
  if (!Array.isArray(list) || list.length === 0) return { ok: false, message: 'is a JWKS whose "keys" is not a non-empty list' };
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
    if (keys.length !== 1) return { ok: false, message: 'is a JWKS with several keys; a private key file must hold exactly one' };
    const only = list.find((k) => isPlainObject(k) && k['use'] !== 'enc') as jose.JWK;
    return { ok: true, material: { format: 'jwk', jwk: only, keys: [keys[0] as KeyObject] } };
  }
  return { ok: true, material: { format: 'jwks', jwks: jwks as unknown as jose.JSONWebKeySet, keys } };
}

function jwkToKeyObject(jwk: Record<string, unknown>, want: 'public' | 'private'): KeyObject | string {
  if (typeof jwk['kty'] !== 'string') return 'is not a JWK (no "kty")';
  if (jwk['kty'] === 'oct') return 'is a symmetric ("oct") JWK; use auth.secretFile for HMAC secrets';
  const hasPrivate = jwk['d'] !== undefined || jwk['priv'] !== undefined;
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
    if (type !== 'ec' || curveName(key.asymmetricKeyDetails?.namedCurve) !== want) return `${alg} needs an EC ${want} key, not ${desc}`;
    return undefined;
  }
  if (alg === 'EdDSA' || alg === 'Ed25519') {
    return type === 'ed25519' ? undefined : `${alg} needs an Ed25519 key, not ${desc}`;
  }
  return `${alg} is not an asymmetric signature algorithm`;
}

/** Algorithms among `algorithms` that at least one key in the material can verify (or sign) with. */
export function usableAlgorithms(material: KeyMaterial, algorithms: readonly string[]): string[] {
  return algorithms.filter((alg) => !isHmacAlgorithm(alg) && material.keys.some((key, i) => {
    const jwk = material.format === 'jwk' ? material.jwk : material.format === 'jwks' ? (material.jwks.keys.filter((k) => k.use !== 'enc')[i]) : undefined;
    return algorithmMismatch(key, alg, jwk) === undefined;
  }));
}

// ---------------------------------------------------------------------------------------------
// Verification keys

/** What jose's jwtVerify accepts as a key resolver. */
export type KeyResolver = (header: jose.JWSHeaderParameters, token: jose.FlattenedJWSInput) => Promise<jose.CryptoKey | Uint8Array>;

export interface VerificationKeys {
  /** Resolve the key for a token's header; throws KeyUnavailableError / KeyAlgorithmMismatchError (never reads jwk/jku/x5u). */
  resolve: KeyResolver;
  /** Stop in-flight JWKS fetches; later resolves fail with KeyUnavailableError('closed'). */
  close(): void;
}

/**
 * Load the verification key source configured in `auth` (exactly one of secretFile, publicKeyFile, jwksUrl).
 * Throws Error on misconfiguration, so a proxy never starts with a key it cannot use.
 */
export async function loadVerificationKeys(auth: AuthConfig): Promise<VerificationKeys> {
  const sources = [auth.secretFile, auth.publicKeyFile, auth.jwksUrl].filter((s) => s !== undefined);
  if (sources.length !== 1) throw new TypeError('auth needs exactly one of secretFile, publicKeyFile, jwksUrl');
  if (auth.algorithms.length === 0) throw new TypeError('auth.algorithms is empty');

  if (auth.secretFile !== undefined) {
    const secret = readHmacSecret(auth.secretFile);
    const nonHmac = auth.algorithms.filter((a) => !isHmacAlgorithm(a));
    if (nonHmac.length > 0) throw new TypeError(`auth.secretFile can only verify HS* algorithms, not ${nonHmac.join(', ')}`);
    return staticKeys(new Map(auth.algorithms.map((alg) => [alg, secret])));
  }
  if (auth.algorithms.some(isHmacAlgorithm)) {
    // A public key used as an HMAC secret is the classic algorithm-confusion attack; never allow the mix.
    throw new TypeError('HS* algorithms need auth.secretFile; they cannot be used with a public key or JWKS');
  }
  if (auth.publicKeyFile !== undefined) return loadPublicKeyFile(auth.publicKeyFile, auth.algorithms);
  return remoteKeys(auth);
}

function staticKeys(byAlg: Map<string, jose.CryptoKey | Uint8Array>): VerificationKeys {
  let closed = false;
  return {
    resolve: async (header) => {
      if (closed) throw new KeyUnavailableError('closed', 'the token verifier is closed');
      const key = typeof header.alg === 'string' ? byAlg.get(header.alg) : undefined;
      if (key === undefined) throw new KeyAlgorithmMismatchError('the token algorithm cannot be used with the configured key');
      return key;
    },
    close: () => {
      closed = true;
    },
  };
}

async function loadPublicKeyFile(path: string, algorithms: readonly string[]): Promise<VerificationKeys> {
  const read = readKeyFile(path);
  if (!read.ok) throw new Error(read.message);
  const parsed = parseKeyText(read.data.toString('utf8'), 'public');
  if (!parsed.ok) throw new Error(`auth.publicKeyFile ${path} ${parsed.message}`);
  const material = parsed.material;
  const usable = usableAlgorithms(material, algorithms);
  if (usable.length === 0) {
    throw new Error(`the key in ${path} (${material.keys.map(describeKey).join(', ')}) fits none of auth.algorithms (${algorithms.join(', ')})`);
  }

  if (material.format === 'jwks') {
    const local = jose.createLocalJWKSet(material.jwks);
    let closed = false;
    return {
      resolve: async (header, token) => {
        if (closed) throw new KeyUnavailableError('closed', 'the token verifier is closed');
        if (typeof header.alg !== 'string' || !usable.includes(header.alg)) {
          throw new KeyAlgorithmMismatchError('the token algorithm cannot be used with the configured keys');
        }
        try {
          return await local(header, token);
        } catch (err) {
          throw translateJwksError(err);
        }
      },
      close: () => {
        closed = true;
      },
    };
  }

  // A single key: import it once per usable algorithm (WebCrypto binds a key to one algorithm).
  const byAlg = new Map<string, jose.CryptoKey>();
  for (const alg of usable) {
    const key = material.format === 'pem'
      ? await jose.importSPKI(material.keys[0].export({ type: 'spki', format: 'pem' }).toString(), alg)
      : await jose.importJWK({ ...material.jwk, alg }, alg);
    if (key instanceof Uint8Array) throw new TypeError('unexpected symmetric key from a public JWK');
    byAlg.set(alg, key);
  }
  return staticKeys(byAlg);
}

// JWKSMultipleMatchingKeys passes through: jwt.ts tries each candidate key, since jose's jwtVerify does not.
function translateJwksError(err: unknown): unknown {
  if (err instanceof jose.errors.JWKSMultipleMatchingKeys) return err;
  if (err instanceof KeyUnavailableError) return err;
  if (err instanceof jose.errors.JWKSNoMatchingKey || err instanceof jose.errors.JOSENotSupported) {
    return new KeyUnavailableError('no_matching_key', 'no configured key matches the token key id and algorithm');
  }
  return new KeyUnavailableError('fetch_failed', 'the token signing keys could not be fetched', sanitize(err));
}

// Keep only name and message of a fetch failure for the log; jose errors about keys never carry token bytes,
// but a cause chain is not ours to vouch for.
function sanitize(err: unknown): Error {
  if (err instanceof Error) {
    const safe = new Error(`${err.name}: ${err.message}`);
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof Error) safe.cause = new Error(`${cause.name}: ${cause.message}`);
    return safe;
  }
  return new Error(String(err));
}

function remoteKeys(auth: AuthConfig): VerificationKeys {
  if (auth.jwksUrl === undefined) throw new TypeError('auth.jwksUrl is not set');
  const closing = new AbortController();
  const remote = jose.createRemoteJWKSet(new URL(auth.jwksUrl), {
    cooldownDuration: auth.jwksCooldown,
    cacheMaxAge: auth.jwksCacheMaxAge,
    timeoutDuration: auth.jwksTimeout ?? JWKS_DEFAULT_TIMEOUT_MS,
    [jose.customFetch]: cappedFetch(JWKS_MAX_BYTES, closing.signal),
  });
  return {
    resolve: async (header, token) => {
      if (closing.signal.aborted) throw new KeyUnavailableError('closed', 'the token verifier is closed');
      try {
        return await remote(header, token);
      } catch (err) {
        throw translateJwksError(err);
      }
    },
    close: () => closing.abort(),
  };
}

/**
 * A fetch for jose's remote JWKS that refuses bodies over `maxBytes` (by Content-Length and while streaming)
 * and aborts when the verifier closes. jose already refuses redirects (redirect: 'manual' + 200 only).
 */
export function cappedFetch(maxBytes: number, closed: AbortSignal): jose.FetchImplementation {
  return async (url, options) => {
    const signal = AbortSignal.any([options.signal, closed]);
    const response = await fetch(url, { ...options, signal });
    if (response.status !== 200) {
      await response.body?.cancel();
      throw new KeyUnavailableError('fetch_failed', 'the token signing keys could not be fetched', new Error(`JWKS endpoint answered HTTP ${response.status}`));
    }
    const declared = Number(response.headers.get('content-length') ?? Number.NaN);
    if (Number.isFinite(declared) && declared > maxBytes) {
      await response.body?.cancel();
      throw tooLarge(maxBytes);
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    if (response.body !== null) {
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > maxBytes) {
          await reader.cancel();
          throw tooLarge(maxBytes);
        }
        chunks.push(value);
      }
    }
    return new Response(Buffer.concat(chunks), { status: 200, headers: { 'content-type': 'application/json' } });
  };
}

function tooLarge(maxBytes: number): KeyUnavailableError {
  return new KeyUnavailableError('fetch_failed', 'the token signing keys could not be fetched', new Error(`JWKS response is larger than ${maxBytes} bytes`));
}

// ---------------------------------------------------------------------------------------------
// Signing keys (for `token mint`)

export interface SigningKey {
  alg: string;
  key: jose.CryptoKey | Uint8Array;
  /** From the private JWK's "kid", so a JWKS-based verifier can select the public key. */
  kid: string | undefined;
}

/** Load the key `token mint` signs with: the HMAC secret, or auth.privateKeyFile, for the first configured algorithm. */
export async function loadSigningKey(auth: AuthConfig): Promise<SigningKey> {
  const alg = auth.algorithms[0];
  if (alg === undefined) throw new TypeError('auth.algorithms is empty');
  if (isHmacAlgorithm(alg)) {
    if (auth.secretFile === undefined) throw new TypeError(`${alg} needs auth.secretFile`);
    return { alg, key: readHmacSecret(auth.secretFile), kid: undefined };
  }
  if (auth.privateKeyFile === undefined) {
    throw new TypeError(`minting ${alg} tokens needs auth.privateKeyFile (the private half of the verification key)`);
  }
  const path = auth.privateKeyFile;
  const read = readKeyFile(path);
  if (!read.ok) throw new Error(read.message);
  const parsed = parseKeyText(read.data.toString('utf8'), 'private');
  if (!parsed.ok) throw new Error(`auth.privateKeyFile ${path} ${parsed.message}`);
  const material = parsed.material;
  const keyObject = material.keys[0];
  if (keyObject === undefined) throw new Error(`auth.privateKeyFile ${path} holds no key`);
  const jwk = material.format === 'jwk' ? material.jwk : undefined;
  const mismatch = algorithmMismatch(keyObject, alg, jwk);
  if (mismatch !== undefined) throw new Error(`auth.privateKeyFile ${path}: ${mismatch}`);
  if (material.format === 'jwk') {
    const key = await jose.importJWK({ ...material.jwk, alg }, alg);
    if (key instanceof Uint8Array) throw new TypeError('unexpected symmetric key from a private JWK');
    return { alg, key, kid: typeof material.jwk.kid === 'string' ? material.jwk.kid : undefined };
  }
  // Re-export as PKCS8 so PKCS1 ("RSA PRIVATE KEY") and SEC1 ("EC PRIVATE KEY") files work too.
  const pkcs8 = keyObject.export({ type: 'pkcs8', format: 'pem' }).toString();
  return { alg, key: await jose.importPKCS8(pkcs8, alg), kid: undefined };
}
