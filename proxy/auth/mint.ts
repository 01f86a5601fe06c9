// Token minting for `pgwarden token mint` and tests: sign claims with the configured HMAC secret or private key.
import { randomUUID } from 'node:crypto';
import * as jose from 'jose';
import type { AuthConfig } from '../config/types.ts';
import { SINGLE_USE_CLAIM } from './jwt.ts';
import { loadSigningKey } from './keys.ts';
import { NETWORKS_CLAIM, readNetworksClaim } from './networks.ts';
import { parseCidr } from '../../lib/cidr.ts';

export interface MintClaims {
  sub: string;
  role: string;
  agent?: string;
  tenant?: string;
  /** A random UUID when not given, so every token can be revoked on its own. */
  jti?: string;
  /** Mark the token single-use (claim pgwarden_single_use: true): it logs in once, then is refused (credential_used). */
  singleUse?: boolean;
  /** The pgwarden_networks claim: networks the token may be used from (narrowing its role's; auth/networks.ts). */
  networks?: string[];
}

/** Smallest ttl accepted: NumericDate claims are whole seconds, so less would give exp === iat. */
const MIN_TTL_MS = 1_000;

/**
 * Sign a token valid for `ttlMs` from `now` (ms) with the first configured algorithm, setting iss, aud, iat, exp,
 * jti (and the `kid` header when the private key is a JWK with one). Throws RangeError above auth.maxTokenLifetime.
 */
export async function mintToken(
  auth: AuthConfig,
  claims: MintClaims,
  ttlMs: number,
  now: number = Date.now(),
): Promise<string> {
  if (!Number.isFinite(ttlMs) || ttlMs < MIN_TTL_MS) throw new RangeError(`token ttl must be at least ${MIN_TTL_MS}ms`);
  if (ttlMs > auth.maxTokenLifetime) {
    throw new RangeError(
      `token ttl ${Math.round(ttlMs / 1000)}s exceeds auth.maxTokenLifetime (${auth.maxTokenLifetime / 1000}s)`,
    );
  }
  if (typeof claims.sub !== 'string' || claims.sub.length === 0)
    throw new TypeError('claims.sub must be a non-empty string');
  if (typeof claims.role !== 'string' || claims.role.length === 0)
    throw new TypeError('claims.role must be a non-empty string');

  const signing = await loadSigningKey(auth);
  const iat = Math.floor(now / 1000);
  // Round the lifetime down so exp − iat never exceeds the maximum the verifier enforces.
  const exp = iat + Math.floor(ttlMs / 1000);
  const issuer = first(auth.issuer);
  const audience = first(auth.audience);

  const payload: jose.JWTPayload = { role: claims.role };
  if (claims.agent !== undefined) payload['agent'] = claims.agent;
  if (claims.tenant !== undefined) payload['tenant'] = claims.tenant;
  if (claims.singleUse === true) payload[SINGLE_USE_CLAIM] = true;
  if (claims.networks !== undefined) {
    // Refuse here what the verifier would refuse at login, so a mistyped network fails at mint, not at use.
    const read = readNetworksClaim(claims.networks);
    if (!read.ok)
      throw new TypeError(
        `claims.networks: ${claims.networks.map((n) => parseCidr(n)).find((r) => !r.ok)?.message ?? read.message}`,
      );
    payload[NETWORKS_CLAIM] = claims.networks;
  }

  const header: jose.JWTHeaderParameters = { alg: signing.alg, typ: 'JWT' };
  if (signing.kid !== undefined) header.kid = signing.kid;

  return new jose.SignJWT(payload)
    .setProtectedHeader(header)
    .setSubject(claims.sub)
    .setIssuer(issuer)
    .setAudience(audience)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .setJti(claims.jti ?? randomUUID())
    .sign(signing.key);
}

// A token names one issuer and one audience; the first configured is the canonical one.
function first(v: string | readonly string[]): string {
  const value = typeof v === 'string' ? v : v[0];
  if (value === undefined || value.length === 0) throw new TypeError('auth.issuer and auth.audience must not be empty');
  return value;
}
