// One RFC 8693 token-exchange request: form parameters → verified subject (and actor) → decideIssuance (policy/issuance.ts) → a signed token, or an RFC 6749 §5.2 error; every outcome audited, no token ever in the trail.
import { randomUUID } from 'node:crypto';
import * as jose from 'jose';
import type { AuthConfig, ExchangeConfig } from '../config/types.ts';
import { MAX_ACT_DEPTH, SINGLE_USE_CLAIM, type Identity, type TokenVerifier } from '../auth/jwt.ts';
import type { CompiledPolicy } from '../../policy/types.ts';
import {
  decideIssuance,
  NARROW_CLAIM,
  narrowingClaim,
  readNarrowing,
  type IssuanceSubject,
  type Narrowing,
} from '../../policy/issuance.ts';
import { parseNarrowing } from '../../policy/narrow.ts';
import { KeyUnavailableError } from '../auth/keys.ts';
import type { IdpVerifier } from './subject.ts';
import type { IssuingKeys } from './signing-keys.ts';
import { claimedIssuer } from './trust.ts';

export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
/** RFC 8693 §3 token type identifiers pgwarden reads: all three are JWTs here, told apart by their issuer. */
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const SUBJECT_TOKEN_TYPES: readonly string[] = [
  TOKEN_TYPE_JWT,
  'urn:ietf:params:oauth:token-type:id_token',
  'urn:ietf:params:oauth:token-type:access_token',
];

/** Longest lifetime a request may ask for in `ttl` (seconds); auth.maxTokenLifetime and the policy cap it further. */
const MAX_TTL_SECONDS = 24 * 3600;

/** Parameters that may appear once only (RFC 6749 §3.2); audience and resource may repeat (RFC 8693 §2.1). */
const SINGLE_PARAMS = [
  'grant_type',
  'subject_token',
  'subject_token_type',
  'actor_token',
  'actor_token_type',
  'requested_token_type',
  'scope',
  'role',
  'narrow',
  'ttl',
  'single_use',
] as const;

/** RFC 6749 §5.2 / RFC 8693 §2.2.2 error codes, plus pgwarden's approval_required (RFC 6749 §8.5 extension). */
export type OAuthError =
  | 'invalid_request'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'approval_required'
  | 'temporarily_unavailable';

export interface ExchangeResponse {
  status: number;
  body: Record<string, unknown>;
  /** Seconds, for a 429 or 503. */
  retryAfter?: number;
}

/** An RFC 8693 actor claim: who acts, and before them who acted (RFC 8693 §4.1). */
export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

/** What the audit trail records of an exchange: names and ids, never a token. */
export type ExchangeAuditEvent =
  | {
      event: 'token_issued';
      requester: string | undefined;
      rule: string;
      subjectIssuer: string;
      sub: string;
      actor?: string;
      /** The issued token's actor chain, outermost (current) actor first. */
      act?: string[];
      role: string;
      narrow?: Record<string, unknown>;
      jti: string;
      /** ISO 8601. */
      exp: string;
      singleUse?: true;
      tenant?: string;
      parentJti?: string;
    }
  | {
      event: 'token_refused';
      requester: string | undefined;
      error: OAuthError;
      reason: string;
      message: string;
      rule?: string;
      subjectIssuer?: string;
      sub?: string;
      actor?: string;
      role?: string;
      narrow?: Record<string, unknown>;
    };

export interface ExchangeDeps {
  exchange: ExchangeConfig;
  auth: AuthConfig;
  /** The policy in force (read once per request). */
  policy: () => CompiledPolicy;
  idp: IdpVerifier | undefined;
  /** Verifies parent pgwarden tokens: signature by an issuing key, lifetime, claims, revocation. */
  issued: TokenVerifier;
  isRevoked: (id: Identity) => string | undefined;
  signer: IssuingKeys;
  now: () => number;
  audit: (event: ExchangeAuditEvent) => void;
  /** False while the audit trail is down and audit.onFailure is refuse: no token is issued unrecorded. */
  auditable: () => boolean;
}

class Refusal {
  constructor(
    readonly status: number,
    readonly error: OAuthError,
    readonly reason: string,
    readonly message: string,
    readonly retryAfter?: number,
    readonly ruleId?: string,
  ) {}
}

const bad = (reason: string, message: string) => new Refusal(400, 'invalid_request', reason, message);

/** The chain as the audit trail writes it: actor subjects, current first. */
export function actChain(act: ActClaim | undefined): string[] | undefined {
  const out: string[] = [];
  for (let a = act; a !== undefined; a = a.act) out.push(a.sub);
  return out.length === 0 ? undefined : out;
}

/** Reads a verified token's `act` claim (only `sub` and nested `act` are kept); undefined when absent. */
export function readAct(v: unknown, depth = 1): { ok: true; act: ActClaim | undefined } | { ok: false } {
  if (v === undefined) return { ok: true, act: undefined };
  if (depth > MAX_ACT_DEPTH || typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false };
  const o = v as Record<string, unknown>;
  if (typeof o.sub !== 'string' || o.sub.length === 0) return { ok: false };
  const inner = readAct(o.act, depth + 1);
  if (!inner.ok) return inner;
  return { ok: true, act: inner.act === undefined ? { sub: o.sub } : { sub: o.sub, act: inner.act } };
}

function actDepth(act: ActClaim | undefined): number {
  return actChain(act)?.length ?? 0;
}

interface Subject {
  decide: IssuanceSubject;
  issuer: string;
  sub: string;
  tenant: string | undefined;
  agent: string | undefined;
  act: ActClaim | undefined;
  parentJti: string | undefined;
}

/** Handles one request's parameters; `requester` is the client address, for the audit trail only. */
export async function exchangeToken(
  form: URLSearchParams,
  requester: string | undefined,
  deps: ExchangeDeps,
): Promise<ExchangeResponse> {
  const seen: { sub?: string; subjectIssuer?: string; actor?: string; role?: string; narrow?: Narrowing } = {};
  try {
    return await exchange(form, requester, deps, seen);
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    deps.audit({
      event: 'token_refused',
      requester,
      error: err.error,
      reason: err.reason,
      message: err.message,
      ...(err.ruleId === undefined ? {} : { rule: err.ruleId }),
      ...(seen.subjectIssuer === undefined ? {} : { subjectIssuer: seen.subjectIssuer }),
      ...(seen.sub === undefined ? {} : { sub: seen.sub }),
      ...(seen.actor === undefined ? {} : { actor: seen.actor }),
      ...(seen.role === undefined ? {} : { role: seen.role }),
      ...(seen.narrow === undefined ? {} : { narrow: narrowingClaim(seen.narrow) }),
    });
    return {
      status: err.status,
      body: { error: err.error, error_description: err.message },
      ...(err.retryAfter === undefined ? {} : { retryAfter: err.retryAfter }),
    };
  }
}

async function exchange(
  form: URLSearchParams,
  requester: string | undefined,
  deps: ExchangeDeps,
  seen: { sub?: string; subjectIssuer?: string; actor?: string; role?: string; narrow?: Narrowing },
): Promise<ExchangeResponse> {
  for (const name of SINGLE_PARAMS)
    if (form.getAll(name).length > 1) throw bad('duplicate_parameter', `parameter ${name} is given more than once`);
  const param = (name: string): string | undefined => {
    const v = form.get(name);
    return v === null || v === '' ? undefined : v;
  };

  const grantType = param('grant_type');
  if (grantType === undefined) throw bad('missing_parameter', 'grant_type is required');
  if (grantType !== GRANT_TYPE_TOKEN_EXCHANGE)
    throw new Refusal(
      400,
      'unsupported_grant_type',
      'unsupported_grant_type',
      `grant_type must be ${GRANT_TYPE_TOKEN_EXCHANGE}`,
    );
  const subjectToken = param('subject_token');
  const subjectType = param('subject_token_type');
  if (subjectToken === undefined || subjectType === undefined)
    throw bad('missing_parameter', 'subject_token and subject_token_type are required');
  if (!SUBJECT_TOKEN_TYPES.includes(subjectType))
    throw bad('unsupported_token_type', `subject_token_type must be one of ${SUBJECT_TOKEN_TYPES.join(', ')}`);
  const actorToken = param('actor_token');
  const actorType = param('actor_token_type');
  if ((actorToken === undefined) !== (actorType === undefined))
    throw bad('missing_parameter', 'actor_token and actor_token_type go together (RFC 8693 §2.1)');
  if (actorType !== undefined && !SUBJECT_TOKEN_TYPES.includes(actorType))
    throw bad('unsupported_token_type', `actor_token_type must be one of ${SUBJECT_TOKEN_TYPES.join(', ')}`);
  const requestedType = param('requested_token_type');
  if (requestedType !== undefined && requestedType !== TOKEN_TYPE_JWT)
    throw bad('unsupported_token_type', `requested_token_type can only be ${TOKEN_TYPE_JWT}`);

  // audience / resource name where the token will be used: pgwarden's own audience(s), nothing else.
  const audiences = typeof deps.auth.audience === 'string' ? [deps.auth.audience] : deps.auth.audience;
  const targets = [...form.getAll('audience'), ...form.getAll('resource')].filter((t) => t !== '');
  const foreign = targets.find((t) => !audiences.includes(t));
  if (foreign !== undefined)
    throw new Refusal(
      400,
      'invalid_target',
      'invalid_target',
      `pgwarden issues tokens only for ${audiences.map((a) => JSON.stringify(a)).join(', ')}`,
    );
  if (new Set(targets).size > 1) throw new Refusal(400, 'invalid_target', 'invalid_target', 'name one audience');
  const audience = targets[0] ?? deps.exchange.audience;

  // The role: role=NAME, or scope="role:NAME" (RFC 8693 §2.1 scope); nothing else is a scope here.
  let role = param('role');
  const scope = param('scope');
  if (scope !== undefined) {
    const items = scope.split(' ').filter((s) => s !== '');
    const roles = items.filter((s) => s.startsWith('role:')).map((s) => s.slice(5));
    const other = items.find((s) => !s.startsWith('role:'));
    if (other !== undefined || roles.length !== 1)
      throw new Refusal(
        400,
        'invalid_scope',
        'invalid_scope',
        'scope may only be "role:NAME" (or use the role parameter)',
      );
    if (role !== undefined && role !== roles[0])
      throw new Refusal(400, 'invalid_scope', 'invalid_scope', 'scope and role name different roles');
    role = roles[0];
  }
  if (role === undefined) throw bad('missing_parameter', 'role is required (role=NAME or scope=role:NAME)');
  // A role name as the policy file allows it (policy/load.ts ROLE_NAME): anything else is no role, and is not
  // written to the audit trail as one.
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(role))
    throw new Refusal(400, 'invalid_scope', 'unknown_role', 'role is not a role name (letters, digits and _)');
  seen.role = role;

  let narrow: Narrowing | undefined;
  const narrowText = param('narrow');
  if (narrowText !== undefined) {
    let json: unknown;
    try {
      json = JSON.parse(narrowText);
    } catch {
      throw bad('invalid_narrow', 'narrow is not valid JSON');
    }
    const r = readNarrowing(json);
    if (!r.ok) throw bad('invalid_narrow', `narrow ${r.message}`);
    narrow = r.value;
    seen.narrow = narrow;
  }

  let ttlMs: number | undefined;
  const ttl = param('ttl');
  if (ttl !== undefined) {
    if (!/^[0-9]{1,6}$/.test(ttl) || Number(ttl) < 1 || Number(ttl) > MAX_TTL_SECONDS)
      throw bad('invalid_ttl', `ttl must be a whole number of seconds from 1 to ${MAX_TTL_SECONDS}`);
    ttlMs = Number(ttl) * 1000;
  }
  const singleUseParam = param('single_use');
  if (singleUseParam !== undefined && singleUseParam !== 'true' && singleUseParam !== 'false')
    throw bad('invalid_single_use', 'single_use must be true or false');

  const nowMs = deps.now();
  const subject = await verifySubject(subjectToken, deps, nowMs, seen);
  let actor: string | undefined;
  if (actorToken !== undefined) {
    // Actors are verified like IdP subjects: an agent's workload identity from the same identity provider.
    if (deps.idp === undefined || claimedIssuer(actorToken) === deps.exchange.issuer)
      throw new Refusal(
        400,
        'invalid_grant',
        'actor_not_accepted',
        'actor_token must be a token of the identity provider',
      );
    const checked = await deps.idp.verify(actorToken, nowMs);
    if (!checked.ok) throw idpRefusal(checked, 'actor_token');
    actor = checked.subject.sub;
    seen.actor = actor;
  }

  // A revoked subject or agent gets no new token (its logins would be refused anyway; say so here, with the reason).
  const revoked = deps.isRevoked(revocationProbe(subject, actor, nowMs));
  if (revoked !== undefined)
    throw new Refusal(400, 'invalid_grant', 'revoked', `the subject or actor is revoked: ${revoked}`);

  const policy = deps.policy();
  const decision = decideIssuance(policy.issuance, policy.roles, {
    subject: subject.decide,
    actor,
    role,
    narrow,
    ttlMs,
    singleUse: singleUseParam === 'true',
    nowMs,
    maxLifetimeMs: deps.auth.maxTokenLifetime,
  });
  if (decision.outcome === 'deny')
    throw new Refusal(400, decision.error, decision.reason, decision.message, undefined, decision.ruleId);
  if (decision.outcome === 'approval_required')
    throw new Refusal(400, 'approval_required', 'approval_required', decision.message, undefined, decision.ruleId);

  // The new actor acts for the subject on top of whoever acted before (RFC 8693 §4.1: the current actor outermost).
  const act: ActClaim | undefined =
    actor === undefined ? subject.act : { sub: actor, ...(subject.act === undefined ? {} : { act: subject.act }) };
  if (actDepth(act) > MAX_ACT_DEPTH)
    throw new Refusal(
      400,
      'invalid_grant',
      'act_chain_too_long',
      `the actor chain would be longer than ${MAX_ACT_DEPTH}`,
    );
  const agent = actor ?? subject.agent;

  if (!deps.auditable())
    throw new Refusal(
      503,
      'temporarily_unavailable',
      'audit_unavailable',
      'pgwarden cannot record an audit trail right now, so it issues no token',
      30,
      decision.ruleId,
    );
  const key = deps.signer.current;
  const iat = Math.floor(nowMs / 1000);
  const exp = iat + decision.lifetimeMs / 1000;
  const jti = randomUUID();
  const claims: jose.JWTPayload = { role: decision.role };
  if (agent !== undefined) claims['agent'] = agent;
  if (subject.tenant !== undefined) claims['tenant'] = subject.tenant;
  if (act !== undefined) claims['act'] = act;
  const narrowClaim = decision.narrow === undefined ? undefined : narrowingClaim(decision.narrow);
  if (narrowClaim !== undefined) {
    // Never sign a narrowing enforcement would read otherwise (or refuse): a bug here must fail closed.
    if (!parseNarrowing(narrowClaim).ok) throw new TypeError('the narrowing to be issued does not parse as a claim');
    claims[NARROW_CLAIM] = narrowClaim;
  }
  if (decision.singleUse) claims[SINGLE_USE_CLAIM] = true;
  const token = await new jose.SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
    .setIssuer(deps.exchange.issuer)
    .setSubject(subject.sub)
    .setAudience(audience)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .setJti(jti)
    .sign(key.privateKey);

  const chain = actChain(act);
  deps.audit({
    event: 'token_issued',
    requester,
    rule: decision.ruleId,
    subjectIssuer: subject.issuer,
    sub: subject.sub,
    ...(actor === undefined ? {} : { actor }),
    ...(chain === undefined ? {} : { act: chain }),
    role: decision.role,
    ...(narrowClaim === undefined ? {} : { narrow: narrowClaim }),
    jti,
    exp: new Date(exp * 1000).toISOString(),
    ...(decision.singleUse ? { singleUse: true as const } : {}),
    ...(subject.tenant === undefined ? {} : { tenant: subject.tenant }),
    ...(subject.parentJti === undefined ? {} : { parentJti: subject.parentJti }),
  });
  return {
    status: 200,
    body: {
      access_token: token,
      issued_token_type: TOKEN_TYPE_JWT,
      // Not an OAuth access token: a credential for the Postgres wire protocol (RFC 8693 §2.2.1 "N_A").
      token_type: 'N_A',
      expires_in: decision.lifetimeMs / 1000,
      scope: `role:${decision.role}`,
    },
  };
}

/** The identity a revocation entry is matched against: the subject and the agent the token would carry (no jti yet). */
function revocationProbe(subject: Subject, actor: string | undefined, nowMs: number): Identity {
  const nowSec = Math.floor(nowMs / 1000);
  return {
    sub: subject.sub,
    role: subject.decide.kind === 'parent' ? subject.decide.role : '',
    agent: actor ?? subject.agent,
    tenant: subject.tenant,
    jti: undefined,
    iss: subject.issuer,
    exp: nowSec + 1,
    iat: nowSec,
    nbf: undefined,
  };
}

function idpRefusal(checked: { unavailable: boolean; message: string }, what: string): Refusal {
  return checked.unavailable
    ? new Refusal(503, 'temporarily_unavailable', 'idp_keys_unavailable', checked.message, 30)
    : new Refusal(400, 'invalid_grant', `${what}_invalid`, `${what}: ${checked.message}`);
}

/** The subject token by its issuer: a parent pgwarden token (checked like a login, revocation included) or an IdP token. */
async function verifySubject(
  token: string,
  deps: ExchangeDeps,
  nowMs: number,
  seen: { sub?: string; subjectIssuer?: string },
): Promise<Subject> {
  const iss = claimedIssuer(token);
  if (iss !== undefined && iss === deps.exchange.issuer) {
    const policy = deps.policy();
    const r = await deps.issued.verify(token, {
      roleExists: (name) => policy.roles.has(name),
      isRevoked: deps.isRevoked,
      now: nowMs,
    });
    if (!r.ok) {
      // Keys that could not be fetched (a peer's JWKS) may be back soon; a kid no source has is a bad token.
      const cause = r.error.cause;
      if (r.reason === 'key_unavailable' && cause instanceof KeyUnavailableError && cause.kind === 'fetch_failed')
        throw new Refusal(
          503,
          'temporarily_unavailable',
          'issuing_keys_unavailable',
          'the issuing keys could not be fetched; retry later',
          30,
        );
      throw new Refusal(400, 'invalid_grant', `subject_token_${r.reason}`, `subject_token: ${r.error.message}`);
    }
    const id = r.identity;
    seen.sub = id.sub;
    seen.subjectIssuer = id.iss;
    // Verified just above: its other claims are read from the same bytes.
    const payload = jose.decodeJwt(token);
    const narrowRaw = payload[NARROW_CLAIM];
    let parentNarrow: Narrowing | undefined;
    if (narrowRaw !== undefined) {
      const n = readNarrowing(narrowRaw);
      if (!n.ok)
        throw new Refusal(
          400,
          'invalid_grant',
          'subject_token_malformed',
          `subject_token: its ${NARROW_CLAIM} ${n.message}`,
        );
      parentNarrow = n.value;
    }
    const act = readAct(payload['act']);
    if (!act.ok)
      throw new Refusal(400, 'invalid_grant', 'subject_token_malformed', 'subject_token: its act claim is malformed');
    return {
      decide: {
        kind: 'parent',
        sub: id.sub,
        role: id.role,
        narrow: parentNarrow,
        expMs: id.exp * 1000,
        singleUse: id.singleUse === true,
      },
      issuer: id.iss,
      sub: id.sub,
      tenant: id.tenant,
      agent: typeof payload['agent'] === 'string' ? payload['agent'] : undefined,
      act: act.act,
      parentJti: id.jti,
    };
  }
  if (deps.idp === undefined)
    throw new Refusal(400, 'invalid_grant', 'subject_issuer_unknown', 'subject_token: its issuer is not accepted here');
  const checked = await deps.idp.verify(token, nowMs);
  if (!checked.ok) throw idpRefusal(checked, 'subject_token');
  const s = checked.subject;
  seen.sub = s.sub;
  seen.subjectIssuer = s.issuer;
  return {
    decide: { kind: 'idp', issuer: s.issuer, sub: s.sub, claims: s.claims },
    issuer: s.issuer,
    sub: s.sub,
    tenant: s.tenant,
    agent: undefined,
    act: undefined,
    parentJti: undefined,
  };
}
