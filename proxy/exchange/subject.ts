// Subject and actor tokens from the identity provider: an OIDC JWT verified with jose against exchange.idp (issuer, audience, pinned algorithms, JWKS URL or key file, expiry), or why not in words safe to return.
import * as jose from 'jose';
import type { AuthConfig, IdpConfig } from '../config/types.ts';
import { KEY_LOCATION_HEADERS, MAX_IDENTITY_CLAIM_BYTES, MAX_TOKEN_LENGTH, verifyJwt } from '../auth/jwt.ts';
import { KeyAlgorithmMismatchError, KeyUnavailableError, loadVerificationKeys } from '../auth/keys.ts';

/** A verified IdP token: who it names, and its claims for the issuance rules (claims never leave the process). */
export interface IdpSubject {
  issuer: string;
  sub: string;
  /** The `tenant` claim when the IdP sets one: copied to the issued token, never chosen by the requester. */
  tenant: string | undefined;
  claims: Readonly<Record<string, unknown>>;
  /** Seconds since the epoch. */
  exp: number;
}

export type IdpCheck =
  | { ok: true; subject: IdpSubject }
  /** `unavailable`: the IdP's keys could not be fetched (the requester may retry); otherwise the token is refused. */
  | { ok: false; unavailable: boolean; message: string };

/**
 * What an IdP token is presented for: `subject` (a subject or actor token, exchange.idp.audience) or `approver` (the
 * approvals API, exchange.idp.approverAudience). The audiences are disjoint and a token naming both is refused for
 * either, so the tokens users hand to agents for exchanges never approve.
 */
export type IdpPurpose = 'subject' | 'approver';

export interface IdpVerifier {
  /** Whether approver tokens are accepted at all (exchange.idp.approverAudience is set). */
  readonly approvers: boolean;
  verify(token: string, nowMs: number, purpose?: IdpPurpose): Promise<IdpCheck>;
  close(): void;
}

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** The key-source settings of `auth` reused for the IdP (JWKS fetch timeouts, cache and cooldown). */
function idpAuthConfig(idp: IdpConfig, auth: AuthConfig): AuthConfig {
  return {
    ...auth,
    issuer: idp.issuer,
    audience: idp.audience,
    algorithms: idp.algorithms,
    secretFile: undefined,
    publicKeyFile: idp.publicKeyFile,
    jwksUrl: idp.jwksUrl,
    privateKeyFile: undefined,
  };
}

/** Loads the IdP's keys (throws on misconfiguration: pgwarden does not start with an IdP it cannot check). */
export async function createIdpVerifier(idp: IdpConfig, auth: AuthConfig): Promise<IdpVerifier> {
  const config = idpAuthConfig(idp, auth);
  const keys = await loadVerificationKeys(config);
  const allowed = new Set(idp.algorithms);
  const issuers = typeof idp.issuer === 'string' ? [idp.issuer] : idp.issuer;
  const refuse = (message: string): IdpCheck => ({ ok: false, unavailable: false, message });
  const subjectAudiences = typeof idp.audience === 'string' ? [idp.audience] : idp.audience;
  const approverAudiences =
    idp.approverAudience === undefined
      ? []
      : typeof idp.approverAudience === 'string'
        ? [idp.approverAudience]
        : idp.approverAudience;
  return {
    approvers: approverAudiences.length > 0,
    async verify(token, nowMs, purpose = 'subject') {
      if (purpose === 'approver' && approverAudiences.length === 0)
        return refuse('approver tokens are not accepted: exchange.idp.approverAudience is not set');
      if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) return refuse('the token is not a signed JWT');
      let header: jose.ProtectedHeaderParameters;
      try {
        header = jose.decodeProtectedHeader(token);
      } catch {
        return refuse('the token is not a signed JWT');
      }
      if (typeof header.alg !== 'string' || !allowed.has(header.alg))
        return refuse(`the token algorithm is not accepted; accepted: ${idp.algorithms.join(', ')}`);
      if (KEY_LOCATION_HEADERS.some((h) => Object.hasOwn(header, h)))
        return refuse('the token names its own key (jku, jwk, x5u or x5c), which is never used');
      let payload: jose.JWTPayload;
      try {
        ({ payload } = await verifyJwt(token, keys.resolve, {
          algorithms: idp.algorithms,
          issuer: issuers,
          audience: purpose === 'approver' ? approverAudiences : idp.audience,
          clockTolerance: auth.clockSkew / 1000,
          currentDate: new Date(nowMs),
          requiredClaims: ['sub', 'exp'],
        }));
      } catch (err) {
        return failure(err);
      }
      // A token for both purposes is refused for either: an approver's credential is never handed to an agent.
      const aud = typeof payload.aud === 'string' ? [payload.aud] : Array.isArray(payload.aud) ? payload.aud : [];
      const other = purpose === 'approver' ? subjectAudiences : approverAudiences;
      if (aud.some((a) => other.includes(a)))
        return refuse(
          purpose === 'approver'
            ? 'the token is also for token exchange (exchange.idp.audience): an approver token must be for approvals only'
            : 'the token is an approver token (exchange.idp.approverAudience): it is never exchanged',
        );
      const sub = payload.sub;
      if (typeof sub !== 'string' || sub.length === 0) return refuse('the token has no "sub"');
      // The subject is stamped on every session of the issued token (pgwarden.sub), so held to the login rules.
      if (sub.includes('\0') || Buffer.byteLength(sub, 'utf8') > MAX_IDENTITY_CLAIM_BYTES)
        return refuse(`the token's "sub" is longer than ${MAX_IDENTITY_CLAIM_BYTES} bytes or holds a NUL`);
      const tenant = payload['tenant'];
      if (
        tenant !== undefined &&
        (typeof tenant !== 'string' ||
          tenant.length === 0 ||
          tenant.includes('\0') ||
          Buffer.byteLength(tenant, 'utf8') > MAX_IDENTITY_CLAIM_BYTES)
      )
        return refuse('the token\'s "tenant" claim is not a usable name');
      return {
        ok: true,
        subject: {
          issuer: payload.iss as string,
          sub,
          tenant: tenant as string | undefined,
          claims: Object.freeze({ ...payload }),
          exp: payload.exp as number,
        },
      };
    },
    close: () => keys.close(),
  };
}

/** jose's and the key source's errors as safe text; jose's own messages are never returned (they may quote claims). */
function failure(err: unknown): IdpCheck {
  const refuse = (message: string): IdpCheck => ({ ok: false, unavailable: false, message });
  if (err instanceof KeyUnavailableError) {
    if (err.kind === 'no_matching_key') return refuse('no key of the identity provider matches the token');
    return { ok: false, unavailable: true, message: "the identity provider's keys could not be fetched; retry later" };
  }
  if (err instanceof KeyAlgorithmMismatchError || err instanceof jose.errors.JOSEAlgNotAllowed)
    return refuse('the token algorithm cannot be used with the identity provider key');
  if (err instanceof jose.errors.JWSSignatureVerificationFailed) return refuse('the token signature is invalid');
  if (err instanceof jose.errors.JWTExpired) return refuse('the token has expired');
  if (err instanceof jose.errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'iss':
        return refuse('the token issuer is not a configured identity provider');
      case 'aud':
        return refuse('the token audience is not pgwarden');
      case 'nbf':
        return refuse('the token is not valid yet');
      default:
        return refuse(`the token claim "${err.claim}" is missing or invalid`);
    }
  }
  return refuse('the token could not be verified');
}
