// Keys that verify and sign tokens: built from the key files config/key-files.ts reads (re-read when they change, with an overlap), or fetched from a remote JWKS, and imported with jose.
import * as jose from 'jose';
import type { AuthConfig } from '../config/types.ts';
import {
  algorithmMismatch,
  describeKey,
  HMAC_MIN_BYTES,
  isHmacAlgorithm,
  parseKeyText,
  readHmacSecret,
  readKeyFile,
  readTrustedFile,
  trimTrailingNewlines,
  usableAlgorithms,
} from '../config/key-files.ts';
import {
  readSettledSecret,
  SECRET_DEBOUNCE_MS,
  type SecretReloadResult,
  type SecretWatchOptions,
} from '../config/secrets.ts';
import { Coalescer } from '../../lib/coalesce.ts';
import { errorMessage } from '../../lib/error-message.ts';
import { FileWatcher } from '../../lib/watch.ts';

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
export type KeyResolver = (
  header: jose.JWSHeaderParameters,
  token: jose.FlattenedJWSInput,
) => Promise<jose.CryptoKey | Uint8Array>;

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
    checkHmacOnly(auth);
    return hmacKeys(readHmacSecret(auth.secretFile), auth.algorithms);
  }
  checkNoHmac(auth);
  if (auth.publicKeyFile !== undefined) {
    const read = readTrustedFile(auth.publicKeyFile);
    if (!read.ok) throw new Error(read.message);
    return publicKeys(auth.publicKeyFile, read.data, auth.algorithms);
  }
  return remoteKeys(auth);
}

function checkHmacOnly(auth: AuthConfig): void {
  const nonHmac = auth.algorithms.filter((a) => !isHmacAlgorithm(a));
  if (nonHmac.length > 0)
    throw new TypeError(`auth.secretFile can only verify HS* algorithms, not ${nonHmac.join(', ')}`);
}

function checkNoHmac(auth: AuthConfig): void {
  if (auth.algorithms.some(isHmacAlgorithm)) {
    // A public key used as an HMAC secret is the classic algorithm-confusion attack; never allow the mix.
    throw new TypeError('HS* algorithms need auth.secretFile; they cannot be used with a public key or JWKS');
  }
}

function hmacKeys(secret: Uint8Array, algorithms: readonly string[]): VerificationKeys {
  return staticKeys(new Map(algorithms.map((alg) => [alg, secret])));
}

/** Default auth.keyOverlap for hand-built configs (loadConfig sets it from settings.ts). */
export const KEY_OVERLAP_DEFAULT_MS = 10 * 60_000;

export interface RotatingKeys extends VerificationKeys {
  /** Re-read the key file (coalesced; file watch and SIGHUP): a good, different key becomes current, the old one overlaps. */
  reload(): Promise<SecretReloadResult>;
}

/**
 * Verification keys that follow auth.secretFile or auth.publicKeyFile (a JWKS URL already follows its publisher and
 * is returned as is, with a reload that does nothing). After a change, tokens signed with the previous key still
 * verify for auth.keyOverlap by `now`, then never again; a file that is unreadable, group/other-writable (secret
 * files), too short or not parsing never replaces the key in use.
 */
export async function openRotatingKeys(
  auth: AuthConfig,
  opts: SecretWatchOptions & { now?: () => number },
): Promise<RotatingKeys> {
  const initial = await loadVerificationKeys(auth);
  const file = auth.secretFile ?? auth.publicKeyFile;
  if (file === undefined) return { ...initial, reload: async () => 'unchanged' as const };
  const now = opts.now ?? Date.now;
  const overlapMs = auth.keyOverlap ?? KEY_OVERLAP_DEFAULT_MS;
  const isSecret = auth.secretFile !== undefined;
  // Bytes read just after loading: were the file to change in between, the first reload sees a difference and reloads.
  const initialRead = readKeyFile(file);
  let current = { keys: initial, bytes: initialRead.ok ? initialRead.data : Buffer.alloc(0) };
  let previous: { keys: VerificationKeys; until: number } | undefined;
  let closed = false;

  const read = async (): Promise<
    { ok: true; keys: VerificationKeys; bytes: Buffer; warning: string | undefined } | { ok: false; message: string }
  > => {
    const r = await readSettledSecret(file, isSecret ? true : 'trusted');
    if (!r.ok) return r;
    try {
      if (isSecret) {
        const secret = trimTrailingNewlines(r.data);
        if (secret.length < HMAC_MIN_BYTES)
          return {
            ok: false,
            message: `the HMAC secret is ${secret.length} bytes; at least ${HMAC_MIN_BYTES} are required`,
          };
        return { ok: true, keys: hmacKeys(new Uint8Array(secret), auth.algorithms), bytes: r.data, warning: r.warning };
      }
      return { ok: true, keys: await publicKeys(file, r.data, auth.algorithms), bytes: r.data, warning: undefined };
    } catch (err) {
      return { ok: false, message: errorMessage(err) };
    }
  };

  const reloads = new Coalescer<SecretReloadResult>(async () => {
    let result: SecretReloadResult;
    const next = await read();
    if (!next.ok) {
      opts.log('warn', `verification key not reloaded, the one in use is kept: ${next.message}`, {
        secret: 'verification_key',
      });
      result = 'failed';
    } else if (next.bytes.equals(current.bytes)) {
      result = 'unchanged';
    } else {
      if (next.warning) opts.log('warn', `verification key: ${next.warning}`, { secret: 'verification_key' });
      // Only the key just replaced overlaps: a key two rotations old stops verifying at once.
      previous?.keys.close();
      previous = overlapMs > 0 ? { keys: current.keys, until: now() + overlapMs } : undefined;
      if (overlapMs <= 0) current.keys.close();
      current = { keys: next.keys, bytes: next.bytes };
      opts.log('info', 'verification key reloaded: tokens signed with the previous key verify until the overlap ends', {
        secret: 'verification_key',
        overlapUntil: previous ? new Date(previous.until).toISOString() : undefined,
      });
      result = 'changed';
    }
    opts.onReload?.('verification_key', result);
    return result;
  });

  const watchers: FileWatcher[] = [];
  if (opts.watch !== false) {
    watchers.push(
      new FileWatcher(file, {
        debounceMs: SECRET_DEBOUNCE_MS,
        persistent: false,
        what: 'verification key',
        warn: (msg, fields) => opts.log('warn', msg, fields),
        onChange: () =>
          void reloads
            .run()
            .catch((err) => opts.log('error', 'verification key reload crashed', { error: errorMessage(err) })),
      }),
    );
  }

  return {
    resolve: async (header, token) => {
      if (closed) throw new KeyUnavailableError('closed', 'the token verifier is closed');
      const overlap = previous !== undefined && now() < previous.until ? previous : undefined;
      if (overlap === undefined) return await current.keys.resolve(header, token);
      // Both keys are candidates during the overlap; jwt.ts tries each (the JWKSMultipleMatchingKeys path).
      const candidates: (jose.CryptoKey | Uint8Array)[] = [];
      let firstError: unknown;
      for (const set of [current.keys, overlap.keys]) {
        try {
          candidates.push(await set.resolve(header, token));
        } catch (err) {
          if (err instanceof jose.errors.JWKSMultipleMatchingKeys) {
            for await (const key of err as unknown as AsyncIterable<jose.CryptoKey>) candidates.push(key);
          } else {
            firstError ??= err;
          }
        }
      }
      if (candidates.length === 0) throw firstError;
      if (candidates.length === 1) return candidates[0] as jose.CryptoKey | Uint8Array;
      throw severalCandidates(candidates);
    },
    close: () => {
      closed = true;
      for (const w of watchers) w.close();
      current.keys.close();
      previous?.keys.close();
    },
    reload: () => reloads.run(),
  };
}

/** jose's "several keys match" error carrying `keys`, which jwt.ts's verifyJwt tries one by one. */
function severalCandidates(keys: (jose.CryptoKey | Uint8Array)[]): jose.errors.JWKSMultipleMatchingKeys {
  const err = new jose.errors.JWKSMultipleMatchingKeys();
  Object.defineProperty(err, Symbol.asyncIterator, {
    value: async function* () {
      yield* keys;
    },
  });
  return err;
}

function staticKeys(byAlg: Map<string, jose.CryptoKey | Uint8Array>): VerificationKeys {
  let closed = false;
  return {
    resolve: async (header) => {
      if (closed) throw new KeyUnavailableError('closed', 'the token verifier is closed');
      const key = typeof header.alg === 'string' ? byAlg.get(header.alg) : undefined;
      if (key === undefined)
        throw new KeyAlgorithmMismatchError('the token algorithm cannot be used with the configured key');
      return key;
    },
    close: () => {
      closed = true;
    },
  };
}

async function publicKeys(path: string, data: Buffer, algorithms: readonly string[]): Promise<VerificationKeys> {
  const parsed = parseKeyText(data.toString('utf8'), 'public');
  if (!parsed.ok) throw new Error(`auth.publicKeyFile ${path} ${parsed.message}`);
  const material = parsed.material;
  const usable = usableAlgorithms(material, algorithms);
  if (usable.length === 0) {
    throw new Error(
      `the key in ${path} (${material.keys.map(describeKey).join(', ')}) fits none of auth.algorithms (${algorithms.join(', ')})`,
    );
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
    const key =
      material.format === 'pem'
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
      throw new KeyUnavailableError(
        'fetch_failed',
        'the token signing keys could not be fetched',
        new Error(`JWKS endpoint answered HTTP ${response.status}`),
      );
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
  return new KeyUnavailableError(
    'fetch_failed',
    'the token signing keys could not be fetched',
    new Error(`JWKS response is larger than ${maxBytes} bytes`),
  );
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
