// JWT password verification: token → Identity, or a FATAL ProxyError that says exactly why (jose does the cryptography).
import * as jose from 'jose';
import { ProxyError } from '../../lib/errors.ts';
import type { AuthConfig } from '../config/types.ts';
import type { Cidr } from '../../lib/cidr.ts';
import { readNetworksClaim } from './networks.ts';
import { NARROW_CLAIM, parseNarrowing, type TokenNarrowing } from '../../policy/narrow.ts';
import {
  KeyAlgorithmMismatchError,
  KeyUnavailableError,
  loadVerificationKeys,
  type KeyResolver,
  type VerificationKeys,
} from './keys.ts';

/** Who a verified token says the session is for; claims are copied out, never the token. */
export interface Identity {
  sub: string;
  role: string;
  /** The `agent` claim, else RFC 8693 `act.sub` (the actor acting for `sub`). */
  agent: string | undefined;
  tenant: string | undefined;
  jti: string | undefined;
  iss: string;
  /** Seconds since the epoch, as in the token. */
  exp: number;
  iat: number;
  nbf: number | undefined;
  /** The token may log in once: its jti is consumed at the first login (claim SINGLE_USE_CLAIM; docs/revocation.md). */
  singleUse?: boolean;
  /** The pgwarden_networks claim: networks this token may be used from (checked at login, auth/networks.ts); absent: any. */
  networks?: readonly Cidr[] | undefined;
  /** The pgwarden_narrow claim (policy/narrow.ts): the session's effective role is its role narrowed by it; absent: the role. */
  narrowing?: TokenNarrowing | undefined;
  /** RFC 8693 `act` chain: the actors' subjects, the current one first (for the audit trail); absent without `act`. */
  act?: readonly string[];
  /**
   * The PARENTS_CLAIM: jtis of the tokens this one was exchanged from, nearest first. Revoking any of them revokes
   * this token (proxy/revocation/entry-index.ts); absent: not exchanged from a pgwarden token.
   */
  parentJtis?: readonly string[];
}

/**
 * The claim the exchange endpoint writes on a token exchanged from a parent token: the parent's jti and the parent's
 * own parent jtis, nearest first (at most MAX_ACT_DEPTH). A JSON list of non-empty strings; any other value is refused.
 */
export const PARENTS_CLAIM = 'pgwarden_parent_jtis';

/** Deepest `act` nesting read; a deeper chain is refused (an issued token adds one level per exchange). */
export const MAX_ACT_DEPTH = 8;

export type AuthFailureReason =
  | 'not_a_jwt'
  | 'bad_signature'
  | 'algorithm_not_allowed'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'lifetime_exceeded'
  | 'invalid_lifetime'
  | 'header_not_allowed'
  | 'missing_claim'
  | 'unknown_role'
  | 'key_unavailable'
  | 'revoked'
  /** The pgwarden_narrow claim is not a narrowing pgwarden can enforce exactly (an unknown key, a wrong type, a bad name). */
  | 'invalid_narrowing';

export type VerifyResult =
  | { ok: true; identity: Identity }
  | { ok: false; reason: AuthFailureReason; error: ProxyError };

export interface TokenVerifier {
  verify(
    token: string,
    ctx: {
      roleExists(role: string): boolean;
      /** Returns a reason text when the identity (e.g. its jti or sub) is revoked. */
      isRevoked?(id: Identity): string | undefined;
      /** Milliseconds since the epoch; overrides the verifier's clock for this call. */
      now?: number;
    },
  ): Promise<VerifyResult>;
  close(): void;
}

/**
 * Longest password treated as a token. Postgres passwords have no limit of their own (the message size cap
 * applies), but no JWT needs 64 KiB and jose should not parse megabytes of attacker-chosen base64.
 */
export const MAX_TOKEN_LENGTH = 64 * 1024;

/**
 * Largest length field of a message a client may send before it is logged in (its PasswordMessage): the longest
 * token, its NUL and the length field, with room to spare. Independent of limits.maxMessageSize, which applies
 * from login on: an unauthenticated client never gets a megabyte of buffer.
 */
export const MAX_PASSWORD_MESSAGE_LENGTH = MAX_TOKEN_LENGTH + 1024;

// JWS compact serialization: three base64url segments. The signature may be empty only for alg "none",
// which is then refused by the algorithm check with a precise reason instead of "not a JWT".
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const REQUIRED_CLAIMS = ['sub', 'role', 'exp', 'iat'];

/**
 * The claim that marks a token single-use (consumed at its first login, proxy/revocation/consumed.ts). A private claim
 * name (RFC 7519 §4.3), prefixed so no other issuer's claim collides with it; its value must be the JSON boolean true
 * (false or absent: an ordinary token; any other value is refused).
 */
export const SINGLE_USE_CLAIM = 'pgwarden_single_use';

/**
 * JWS header parameters that say where to find the key (RFC 7515 §4.1.2–4.1.6). pgwarden takes its keys only from
 * its configuration and never reads these; a token carrying one was made for a verifier that trusts it, or by
 * someone hoping for one, so it is refused rather than ignored.
 */
export const KEY_LOCATION_HEADERS: readonly string[] = ['jku', 'jwk', 'x5u', 'x5c'];

const HINT_NEW_TOKEN = 'Request a new token and reconnect with it as the password.';
const HINT_ROLE = 'Request a token for a role defined in the pgwarden policy and reconnect with it as the password.';
const HINT_KEYS =
  'pgwarden could not obtain the key to check this token. Request a new token and reconnect with it as the password; if this persists, tell the operator.';

/**
 * Build a verifier for `auth`: loads the key source once (throws on misconfiguration) and checks each token with
 * jose, algorithms pinned from config, then lifetime, claims, revocation and role.
 */
export async function createTokenVerifier(
  auth: AuthConfig,
  deps: { now?: () => number; keys?: VerificationKeys } = {},
): Promise<TokenVerifier> {
  // createProxy passes rotating keys (auth/keys.ts openRotatingKeys); `token` commands and tests load them once.
  const keys = deps.keys ?? (await loadVerificationKeys(auth));
  const clock = deps.now ?? Date.now;
  const allowed = new Set(auth.algorithms);
  const maxLifetimeSec = auth.maxTokenLifetime / 1000;
  const skewSec = auth.clockSkew / 1000;

  return {
    async verify(token, ctx) {
      const nowMs = ctx.now ?? clock();

      // Cheap structural checks first, so garbage never reaches jose and the reason is precise.
      if (
        typeof token !== 'string' ||
        token.length === 0 ||
        token.length > MAX_TOKEN_LENGTH ||
        !COMPACT_JWS.test(token)
      ) {
        return fail('not_a_jwt', 'password is not a JWT');
      }
      let header: jose.ProtectedHeaderParameters;
      try {
        header = jose.decodeProtectedHeader(token);
      } catch {
        return fail('not_a_jwt', 'password is not a JWT');
      }
      // Pinned algorithms: the token's alg only selects among the configured ones ("none" is never configured).
      if (typeof header.alg !== 'string' || !allowed.has(header.alg)) {
        return fail('algorithm_not_allowed', `token algorithm is not allowed; accepted: ${auth.algorithms.join(', ')}`);
      }
      const located = KEY_LOCATION_HEADERS.filter((name) => Object.hasOwn(header, name));
      if (located.length > 0) {
        return fail(
          'header_not_allowed',
          `token header parameter ${located.map((n) => `"${n}"`).join(', ')} is not accepted: pgwarden uses only its configured keys`,
        );
      }

      let payload: jose.JWTPayload;
      try {
        ({ payload } = await verifyJwt(token, keys.resolve, {
          algorithms: [...auth.algorithms],
          issuer: auth.issuer,
          audience: auth.audience,
          clockTolerance: skewSec,
          currentDate: new Date(nowMs),
          requiredClaims: REQUIRED_CLAIMS,
        }));
      } catch (err) {
        return joseFailure(err, auth);
      }

      // jose checked exp and nbf; iat and the lifetime bound are ours. An iat in the future would let a
      // token stretch its life past maxTokenLifetime (exp − iat small, exp − now large), so it is refused.
      const nowSec = nowMs / 1000;
      const iat = payload.iat as number;
      const exp = payload.exp as number;
      if (iat > nowSec + skewSec)
        return fail('not_yet_valid', `token is not valid before ${isoTime(iat)} (its issue time is in the future)`);
      if (exp <= iat)
        return fail('invalid_lifetime', `token expires at ${isoTime(exp)}, not after its issue time ${isoTime(iat)}`);
      // The skew forgives an issuer's clock running ahead (iat, nbf), but a session ends at exp by this clock, so a
      // token already past exp would open an upstream connection only to be ended at once.
      if (exp <= nowSec) return fail('expired', `token expired at ${isoTime(exp)}`);
      const lifetime = exp - iat;
      if (lifetime > maxLifetimeSec) {
        return fail(
          'lifetime_exceeded',
          `token lifetime ${formatSeconds(lifetime)}s exceeds the maximum of ${formatSeconds(maxLifetimeSec)}s`,
        );
      }

      const claims = readClaims(payload);
      if (!claims.ok) return claims.result;
      const identity = claims.identity;

      const revoked = ctx.isRevoked?.(identity);
      if (revoked !== undefined) return fail('revoked', `token has been revoked: ${revoked}`);
      if (!ctx.roleExists(identity.role)) {
        return fail('unknown_role', `token role ${quoteClaim(identity.role)} is not defined in the policy`, HINT_ROLE);
      }
      return { ok: true, identity };
    },
    close() {
      keys.close();
    },
  };
}

/** jose's jwtVerify, plus trying each candidate when a key set has several keys matching the header (no kid). */
export async function verifyJwt(
  token: string,
  resolve: KeyResolver,
  options: jose.JWTVerifyOptions,
): Promise<jose.JWTVerifyResult> {
  try {
    return await jose.jwtVerify(token, resolve, options);
  } catch (err) {
    if (!(err instanceof jose.errors.JWKSMultipleMatchingKeys)) throw err;
    for await (const key of err) {
      try {
        return await jose.jwtVerify(token, key, options);
      } catch (inner) {
        if (inner instanceof jose.errors.JWSSignatureVerificationFailed) continue;
        throw inner;
      }
    }
    throw new jose.errors.JWSSignatureVerificationFailed();
  }
}

/**
 * The identity claims are stamped as upstream startup parameters (pgwarden.sub, .agent, .tenant, .jti), and
 * PostgreSQL refuses a startup packet over 10,000 bytes or a parameter with a NUL. Checked here, with the token,
 * so such a token is refused as invalid before anything happens for it (a single-use token's jti is not consumed
 * by a login that could never open its upstream session).
 */
export const MAX_IDENTITY_CLAIM_BYTES = 1024;

function identityClaimProblem(name: string, value: string): string | undefined {
  if (value.includes('\0')) return `token claim "${name}" contains a NUL character`;
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > MAX_IDENTITY_CLAIM_BYTES)
    return `token claim "${name}" is ${bytes} bytes long; pgwarden accepts at most ${MAX_IDENTITY_CLAIM_BYTES}`;
  return undefined;
}

type ClaimsResult = { ok: true; identity: Identity } | { ok: false; result: VerifyResult };

// jose guarantees presence of sub/role/exp/iat and numeric exp/iat/nbf; types of the rest are checked here.
function readClaims(payload: jose.JWTPayload): ClaimsResult {
  const bad = (message: string): ClaimsResult => ({ ok: false, result: fail('missing_claim', message) });
  const sub = payload.sub;
  if (typeof sub !== 'string' || sub.length === 0) return bad('token claim "sub" must be a non-empty string');
  const role = payload['role'];
  if (typeof role !== 'string' || role.length === 0) return bad('token claim "role" must be a non-empty string');

  const subShape = identityClaimProblem('sub', sub);
  if (subShape !== undefined) return bad(subShape);
  const optional: Record<'agent' | 'tenant' | 'jti', string | undefined> = {
    agent: undefined,
    tenant: undefined,
    jti: undefined,
  };
  for (const name of ['agent', 'tenant', 'jti'] as const) {
    const value = payload[name];
    if (value === undefined) continue;
    if (typeof value !== 'string' || value.length === 0) return bad(`token claim "${name}" must be a non-empty string`);
    const shape = identityClaimProblem(name, value);
    if (shape !== undefined) return bad(shape);
    optional[name] = value;
  }
  let agent = optional.agent;
  if (agent === undefined && payload['act'] !== undefined) {
    // RFC 8693 §4.1: `act` names the party acting on behalf of `sub`; its `sub` identifies that actor.
    const act = payload['act'];
    const actSub = typeof act === 'object' && act !== null ? (act as Record<string, unknown>)['sub'] : undefined;
    if (typeof actSub !== 'string' || actSub.length === 0)
      return bad('token claim "act" must be an object with a non-empty "sub"');
    // Stamped as pgwarden.agent like an agent claim, so held to the same rules (else a single-use token is consumed
    // by a login whose upstream startup PostgreSQL then refuses).
    const shape = identityClaimProblem('act.sub', actSub);
    if (shape !== undefined) return bad(shape);
    agent = actSub;
  }
  let act: string[] | undefined;
  if (payload['act'] !== undefined) {
    act = [];
    for (let a: unknown = payload['act']; a !== undefined; a = (a as Record<string, unknown>)['act']) {
      const actor =
        typeof a === 'object' && a !== null && !Array.isArray(a) ? (a as Record<string, unknown>)['sub'] : undefined;
      if (typeof actor !== 'string' || actor.length === 0 || act.length >= MAX_ACT_DEPTH)
        return bad(`token claim "act" must nest at most ${MAX_ACT_DEPTH} objects, each with a non-empty "sub"`);
      act.push(actor);
    }
  }
  // Only the JSON boolean true marks a token single-use; "true", 1 or an object is refused rather than read as
  // ordinary (an issuer that meant single-use must not get a reusable token by a typing slip).
  const once = payload[SINGLE_USE_CLAIM];
  if (once !== undefined && typeof once !== 'boolean')
    return bad(`token claim "${SINGLE_USE_CLAIM}" must be true or false`);
  // A single-use token is consumed by its jti: without one there is nothing to consume, so it cannot be honoured.
  if (once === true && optional.jti === undefined)
    return bad(`token claim "${SINGLE_USE_CLAIM}" needs a "jti" claim (the single use is recorded by it)`);

  // Read only to revoke more: a token naming parents is refused when any of them is revoked.
  let parentJtis: string[] | undefined;
  const parents = payload[PARENTS_CLAIM];
  if (parents !== undefined) {
    if (
      !Array.isArray(parents) ||
      parents.length === 0 ||
      parents.length > MAX_ACT_DEPTH ||
      !parents.every((j) => typeof j === 'string' && j.length > 0 && identityClaimProblem('jti', j) === undefined)
    )
      return bad(`token claim "${PARENTS_CLAIM}" must be a list of 1 to ${MAX_ACT_DEPTH} token ids`);
    parentJtis = parents as string[];
  }

  const networks = readNetworksClaim(payload['pgwarden_networks']);
  if (!networks.ok) return bad(networks.message);

  // Fail closed: a narrowing pgwarden cannot read exactly is a refused login, never a token of the whole role.
  let narrowing: TokenNarrowing | undefined;
  if (payload[NARROW_CLAIM] !== undefined) {
    const n = parseNarrowing(payload[NARROW_CLAIM]);
    if (!n.ok)
      return {
        ok: false,
        result: fail(
          'invalid_narrowing',
          `token claim ${n.problem}`,
          'Request a token whose pgwarden_narrow claim follows docs/policy.md, "Narrowed tokens", and reconnect with it as the password.',
        ),
      };
    narrowing = n.narrowing;
  }

  const identity: Identity = {
    sub,
    role,
    agent,
    tenant: optional.tenant,
    jti: optional.jti,
    iss: payload.iss as string,
    exp: payload.exp as number,
    iat: payload.iat as number,
    nbf: payload.nbf,
    // Present only on single-use tokens, so an ordinary identity is what it was before the claim existed.
    ...(once === true ? { singleUse: true } : {}),
    networks: networks.networks,
    // Present only on narrowed tokens, like singleUse.
    ...(narrowing === undefined ? {} : { narrowing }),
    ...(act === undefined ? {} : { act: Object.freeze(act) }),
    ...(parentJtis === undefined ? {} : { parentJtis: Object.freeze([...parentJtis]) }),
  };
  return { ok: true, identity: Object.freeze(identity) };
}

/** Map a jose (or key source) error to a reason and client-safe text; jose's own messages are never forwarded. */
function joseFailure(err: unknown, auth: AuthConfig): VerifyResult {
  if (err instanceof KeyUnavailableError) {
    switch (err.kind) {
      case 'no_matching_key':
        return fail(
          'key_unavailable',
          'no configured key matches the token (unknown key id or algorithm)',
          HINT_NEW_TOKEN,
          err,
        );
      case 'fetch_failed':
        return fail('key_unavailable', 'the keys to verify the token could not be fetched', HINT_KEYS, err);
      case 'closed':
        return fail('key_unavailable', 'the token verifier is shut down', HINT_KEYS, err);
      default: {
        const never: never = err.kind;
        return never;
      }
    }
  }
  if (err instanceof KeyAlgorithmMismatchError)
    return fail('algorithm_not_allowed', 'token algorithm cannot be used with the configured key');
  if (err instanceof jose.errors.JOSEAlgNotAllowed) {
    return fail('algorithm_not_allowed', `token algorithm is not allowed; accepted: ${auth.algorithms.join(', ')}`);
  }
  // The alg was checked against the configured (supported) list already, so "not supported" here is a `crit`
  // header extension jose does not implement: the token demands processing we cannot do.
  if (err instanceof jose.errors.JOSENotSupported)
    return fail('not_a_jwt', 'token requires a header extension (crit) that is not supported');
  if (err instanceof jose.errors.JWSSignatureVerificationFailed)
    return fail('bad_signature', 'token signature is invalid');
  if (err instanceof jose.errors.JWTExpired) {
    return fail('expired', `token expired at ${isoTime(err.payload.exp)}`);
  }
  if (err instanceof jose.errors.JWTClaimValidationFailed) {
    const claim = err.claim;
    if (err.reason === 'missing') return fail('missing_claim', `token is missing the "${claim}" claim`);
    if (err.reason === 'invalid') return fail('missing_claim', `token claim "${claim}" must be a number`);
    switch (claim) {
      case 'iss':
        return fail('wrong_issuer', `token issuer does not match ${quoteList(auth.issuer)}`);
      case 'aud':
        return fail('wrong_audience', `token audience does not match ${quoteList(auth.audience)}`);
      case 'nbf':
        return fail('not_yet_valid', `token is not valid before ${isoTime(err.payload.nbf)}`);
      default:
        return fail('not_a_jwt', `token claim "${claim}" is not acceptable`);
    }
  }
  if (err instanceof jose.errors.JWSInvalid || err instanceof jose.errors.JWTInvalid) {
    return fail('not_a_jwt', 'token is malformed');
  }
  // Anything else (a TypeError from an unusable key, e.g. a short RSA key in a JWKS) fails closed.
  return fail('key_unavailable', 'token could not be verified with the configured keys', HINT_KEYS);
}

function fail(
  reason: AuthFailureReason,
  message: string,
  hint: string = HINT_NEW_TOKEN,
  cause?: KeyUnavailableError,
): VerifyResult {
  // A malformed narrowing is 28000 (the contract of docs/policy.md, "Narrowed tokens"): the token is authentic, its
  // task scope is what cannot be honoured.
  const code =
    reason === 'unknown_role' || reason === 'revoked' || reason === 'invalid_narrowing'
      ? 'ERR_TOKEN_REJECTED'
      : 'ERR_TOKEN_INVALID';
  const agent =
    reason === 'revoked'
      ? 'credential_revoked'
      : reason === 'unknown_role'
        ? 'credential_rejected'
        : reason === 'expired'
          ? 'credential_expired'
          : reason === 'key_unavailable'
            ? 'unavailable'
            : 'credential_invalid';
  // Only key-source failures carry a cause (network errors, for the log); jose's claim errors hold the payload.
  const error = new ProxyError(code, message, {
    hint,
    severity: 'FATAL',
    reason: agent,
    ...(cause === undefined ? {} : { cause }),
  });
  return { ok: false, reason, error };
}

function isoTime(seconds: unknown): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return 'an invalid time';
  const date = new Date(seconds * 1000);
  return Number.isNaN(date.getTime()) ? `${seconds} (seconds since the epoch)` : date.toISOString();
}

function formatSeconds(s: number): string {
  return Number.isInteger(s) ? String(s) : s.toFixed(3);
}

function quoteList(v: string | readonly string[]): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v.length === 1) return JSON.stringify(v[0]);
  return `any of ${v.map((x) => JSON.stringify(x)).join(', ')}`;
}

// The role claim is echoed so the agent knows which role failed; bound it and escape control characters.
function quoteClaim(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}
