// Verifying pgwarden-issued tokens at login: their issuer routes them to a verifier of their own (this replica's issuing keys and the peers' published JWKS), every other token to the configured auth verifier.
import * as jose from 'jose';
import type { AuthConfig, ExchangeConfig } from '../config/types.ts';
import { createTokenVerifier, type TokenVerifier } from '../auth/jwt.ts';
import { KeyUnavailableError, loadVerificationKeys, type VerificationKeys } from '../auth/keys.ts';
import { ISSUING_ALGORITHMS } from '../config/key-files.ts';
import type { IssuingKeys } from './signing-keys.ts';

/**
 * Key sources tried in order for a token's kid: the first that has it answers. "No such key" from every source is
 * no_matching_key; a source that could not be fetched is reported when nothing else had the key.
 */
export function anyOfKeys(sources: readonly VerificationKeys[]): VerificationKeys {
  return {
    resolve: async (header, token) => {
      let failure: unknown;
      for (const source of sources) {
        try {
          return await source.resolve(header, token);
        } catch (err) {
          if (err instanceof KeyUnavailableError && err.kind === 'no_matching_key') continue;
          failure ??= err;
        }
      }
      throw failure ?? new KeyUnavailableError('no_matching_key', 'no issuing key of this deployment has this key id');
    },
    close: () => {
      for (const s of sources) s.close();
    },
  };
}

/** The auth settings issued tokens are verified with: auth's audience, lifetime and skew; exchange.issuer; pinned ES256/EdDSA. */
export function issuedAuthConfig(auth: AuthConfig, exchange: ExchangeConfig): AuthConfig {
  return {
    ...auth,
    issuer: exchange.issuer,
    algorithms: [...ISSUING_ALGORITHMS],
    secretFile: undefined,
    publicKeyFile: undefined,
    jwksUrl: undefined,
    privateKeyFile: undefined,
  };
}

/** The keys issued tokens verify with: this replica's own (when it issues) and every peer's JWKS. */
export async function issuedTokenKeys(
  auth: AuthConfig,
  exchange: ExchangeConfig,
  local: IssuingKeys | undefined,
): Promise<VerificationKeys> {
  const sources: VerificationKeys[] = local ? [local.verificationKeys()] : [];
  for (const url of exchange.peerJwksUrls)
    sources.push(
      await loadVerificationKeys({
        ...issuedAuthConfig(auth, exchange),
        jwksUrl: url,
      }),
    );
  return anyOfKeys(sources);
}

/** The issuer a token claims, read without verifying it, only to choose the verifier (each checks iss again). */
export function claimedIssuer(token: string): string | undefined {
  try {
    const iss = jose.decodeJwt(token).iss;
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    return undefined;
  }
}

/** One verifier for logins: tokens claiming `issuer` go to `issued`, the rest to `primary`. */
export function routeByIssuer(primary: TokenVerifier, issued: TokenVerifier, issuer: string): TokenVerifier {
  return {
    verify: (token, ctx) =>
      (typeof token === 'string' && token.length <= 64 * 1024 && claimedIssuer(token) === issuer
        ? issued
        : primary
      ).verify(token, ctx),
    close() {
      primary.close();
      issued.close();
    },
  };
}

/** The verifier of issued tokens alone (the exchange endpoint checks parent tokens with it). */
export async function createIssuedTokenVerifier(
  auth: AuthConfig,
  exchange: ExchangeConfig,
  keys: VerificationKeys,
  now?: () => number,
): Promise<TokenVerifier> {
  return await createTokenVerifier(issuedAuthConfig(auth, exchange), { keys, ...(now ? { now } : {}) });
}
