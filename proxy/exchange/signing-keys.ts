// pgwarden's own issuing key: read from exchange.signingKeyFile (ES256 or EdDSA), re-read when it changes with the previous key still published and accepted for auth.keyOverlap, and its public half as a JWKS (kid: RFC 7638 thumbprint).
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import * as jose from 'jose';
import { issuingAlgorithmFor, parseKeyText, readSecretFile, type IssuingAlgorithm } from '../config/key-files.ts';
import { readSettledSecret, WatchedSecret, type SecretWatchOptions } from '../config/secrets.ts';
import {
  KeyAlgorithmMismatchError,
  KeyUnavailableError,
  KEY_OVERLAP_DEFAULT_MS,
  type VerificationKeys,
} from '../auth/keys.ts';
import { errorMessage } from '../../lib/error-message.ts';

export interface IssuingKey {
  alg: IssuingAlgorithm;
  /** RFC 7638 JWK thumbprint (SHA-256) of the public key. */
  kid: string;
  privateKey: jose.CryptoKey;
  publicKey: jose.CryptoKey;
  /** The public JWK as published: kty, crv, x (y), kid, alg, use. */
  publicJwk: jose.JWK;
  /** The file's bytes, to tell a changed file from a touched one. */
  bytes: Buffer;
}

/** Parses the private key file's bytes into an issuing key, or says why it cannot be one (the bytes are never shown). */
export async function parseIssuingKey(
  bytes: Buffer,
): Promise<{ ok: true; key: IssuingKey } | { ok: false; message: string }> {
  const parsed = parseKeyText(bytes.toString('utf8'), 'private');
  if (!parsed.ok) return { ok: false, message: `the file it names ${parsed.message}` };
  const material = parsed.material;
  let keyObject: KeyObject | undefined = material.keys[0];
  if (keyObject === undefined) return { ok: false, message: 'the file it names holds no key' };
  if (keyObject.type !== 'private') keyObject = createPrivateKey(keyObject.export({ type: 'pkcs8', format: 'pem' }));
  const alg = issuingAlgorithmFor(keyObject);
  if (alg === undefined)
    return { ok: false, message: 'the key it names is not an EC P-256 (ES256) or Ed25519 (EdDSA) private key' };
  try {
    const pkcs8 = keyObject.export({ type: 'pkcs8', format: 'pem' }).toString();
    const privateKey = await jose.importPKCS8(pkcs8, alg);
    const pub = createPublicKey(keyObject);
    const jwk = pub.export({ format: 'jwk' }) as jose.JWK;
    const thumbprintInput: jose.JWK =
      jwk.kty === 'EC' ? { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } : { kty: jwk.kty, crv: jwk.crv, x: jwk.x };
    const kid = await jose.calculateJwkThumbprint(thumbprintInput, 'sha256');
    const publicJwk: jose.JWK = { ...thumbprintInput, kid, alg, use: 'sig' };
    const publicKey = await jose.importJWK(publicJwk, alg);
    if (publicKey instanceof Uint8Array) return { ok: false, message: 'the key it names is not asymmetric' };
    return { ok: true, key: { alg, kid, privateKey, publicKey, publicJwk, bytes } };
  } catch (err) {
    return { ok: false, message: `the key it names cannot be used (${errorMessage(err)})` };
  }
}

/**
 * The signing key in force, following its file: a new good key signs from the moment it is read; the one it
 * replaced stays in the JWKS and verifies for `overlapMs`, so tokens it signed (here or, through the published JWKS,
 * on every replica) stay valid to the end of their lives when the overlap is at least auth.maxTokenLifetime.
 */
export class IssuingKeys extends WatchedSecret<IssuingKey> {
  #previous: { key: IssuingKey; until: number } | undefined;
  readonly #overlapMs: number;
  readonly #now: () => number;

  private constructor(
    initial: IssuingKey,
    file: string,
    opts: SecretWatchOptions & { overlapMs?: number; now?: () => number },
  ) {
    super(initial, 'signing_key', [file], opts);
    this.#overlapMs = opts.overlapMs ?? KEY_OVERLAP_DEFAULT_MS;
    this.#now = opts.now ?? Date.now;
  }

  /** Reads the key now (throws when it is unusable: pgwarden does not start without it) and watches the file. */
  static async open(
    file: string,
    opts: SecretWatchOptions & { overlapMs?: number; now?: () => number },
  ): Promise<IssuingKeys> {
    const read = readSecretFile(file);
    if (!read.ok) throw new Error(`exchange.signingKeyFile: ${read.message}`);
    const parsed = await parseIssuingKey(read.data);
    if (!parsed.ok) throw new Error(`exchange.signingKeyFile: ${parsed.message}`);
    const keys = new IssuingKeys(parsed.key, file, opts);
    keys.startWatching();
    return keys;
  }

  /** The key new tokens are signed with. */
  get current(): IssuingKey {
    return this.value;
  }

  /** Keys that verify now: the current one, and the previous one until its overlap ends. */
  active(): IssuingKey[] {
    const prev = this.#previous;
    return prev !== undefined && this.#now() < prev.until ? [this.value, prev.key] : [this.value];
  }

  /** The JWKS published at /.well-known/jwks.json: public halves only. */
  jwks(): jose.JSONWebKeySet {
    return { keys: this.active().map((k) => ({ ...k.publicJwk })) };
  }

  /** Verification by kid (issued tokens always carry one) among the active keys. */
  verificationKeys(): VerificationKeys {
    let closed = false;
    return {
      resolve: async (header) => {
        if (closed) throw new KeyUnavailableError('closed', 'the token verifier is closed');
        const key = this.active().find((k) => k.kid === header.kid);
        if (key === undefined) throw new KeyUnavailableError('no_matching_key', 'no issuing key has this key id');
        if (header.alg !== key.alg)
          throw new KeyAlgorithmMismatchError('the token algorithm does not fit the issuing key');
        return key.publicKey;
      },
      close: () => {
        closed = true;
      },
    };
  }

  protected async read(): Promise<{ ok: true; value: IssuingKey; warning?: string } | { ok: false; message: string }> {
    const [file] = this.files as [string];
    const r = await readSettledSecret(file, true);
    if (!r.ok) return r;
    const parsed = await parseIssuingKey(r.data);
    if (!parsed.ok) return parsed;
    return { ok: true, value: parsed.key, ...(r.warning === undefined ? {} : { warning: r.warning }) };
  }

  protected same(next: IssuingKey): boolean {
    return next.bytes.equals(this.value.bytes);
  }

  protected override replace(next: IssuingKey): void {
    // Only the key just replaced overlaps; one two rotations old stops verifying at once.
    this.#previous =
      this.#overlapMs > 0 && next.kid !== this.value.kid
        ? { key: this.value, until: this.#now() + this.#overlapMs }
        : this.#previous;
    this.value = next;
  }
}
