// Keys that verify and sign tokens: built from the key files config/key-files.ts reads, or fetched from a remote JWKS, and imported with jose.
import * as jose from 'jose';
import type { AuthConfig } from '../config/types.ts';
import { algorithmMismatch, describeKey, isHmacAlgorithm, parseKeyText, readHmacSecret, readKeyFile, usableAlgorithms, type KeyMaterial } from '../config/key-files.ts';

/** Largest JWKS response read; a real key set is a few KB, and the endpoint is not ours to trust with memory. */
export const JWKS_MAX_BYTES = 512 * 1024;
/** JWKS fetch timeout when the config does not set auth.jwksTimeout (jose's own default). */
export const JWKS_DEFAULT_TIMEOUT_MS = 5_000;

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
