// One RFC 8693 token-exchange request: form parameters → verified subject (and actor) → decideIssuance (policy/issuance.ts) → a signed token, or an RFC 6749 §5.2 error; every outcome audited, no token ever in the trail.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import * as jose from 'jose';
import type { AuthConfig, ExchangeConfig } from '../config/types.ts';
import {
  MAX_ACT_DEPTH,
  MAX_IDENTITY_CLAIM_BYTES,
  PARENTS_CLAIM,
  SINGLE_USE_CLAIM,
  type Identity,
  type TokenVerifier,
} from '../auth/jwt.ts';
import type { CatalogSnapshot, CompiledPolicy } from '../../policy/types.ts';
import {
  decideApprover,
  decideIssuance,
  NARROW_CLAIM,
  narrowingClaim,
  readNarrowing,
  type ApproverSubject,
  type IssuanceSubject,
  type Narrowing,
} from '../../policy/issuance.ts';
import { parseNarrowing } from '../../policy/narrow.ts';
import { KeyUnavailableError, type VerificationKeys } from '../auth/keys.ts';
import { sealDecision, sealHolds, type SealedDecision } from './approval-seal.ts';
import {
  MAX_KEPT_APPROVALS_PER_SUBJECT,
  type ApprovalRecord,
  type ApprovalRequestInfo,
  type ApprovalStore,
} from './approval-store.ts';
import type { IdpVerifier } from './subject.ts';
import type { IssuingKeys } from './signing-keys.ts';
import { claimedIssuer } from './trust.ts';
import { errorMessage } from '../../lib/error-message.ts';

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
  'approval_id',
] as const;

/** Open (pending or approved) requests one subject may have at once; a further one is answered 429. */
export const MAX_OPEN_APPROVALS_PER_SUBJECT = 10;
/** Seconds a requester should wait between retrievals of a pending request (RFC 8628 §3.5 `interval`). */
export const APPROVAL_POLL_INTERVAL_SECONDS = 5;
/** An approval id: apr_ and 32 random bytes, base64url (the store accepts 16 to 128 such characters). */
export const APPROVAL_ID_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;

/**
 * RFC 6749 §5.2 / RFC 8693 §2.2.2 error codes; RFC 8628 §3.5's authorization_pending for a request still waiting;
 * and pgwarden's approval_required, approval_denied and approval_expired (RFC 6749 §8.5 extensions).
 */
export type OAuthError =
  | 'invalid_request'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'approval_required'
  | 'authorization_pending'
  | 'approval_denied'
  | 'approval_expired'
  | 'temporarily_unavailable';

export interface ExchangeResponse {
  status: number;
  body: Record<string, unknown>;
  /** Seconds, for a 429 or 503. */
  retryAfter?: number;
  /** More response headers (WWW-Authenticate on a 401). */
  headers?: Record<string, string>;
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
      /** The approval it was retrieved with. */
      approvalId?: string;
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
      approvalId?: string;
    }
  /** A request needing approval stored as pending: what will be approved, never a token. */
  | ({
      event: 'approval_requested';
      approvalId: string;
      /** ISO 8601. */
      expiresAt: string;
    } & Omit<ApprovalRequestInfo, 'requestedNarrow' | 'requestedTtl' | 'requestedSingleUse' | 'audience'>)
  | {
      event: 'approval_decided';
      approvalId: string;
      decision: 'approved' | 'denied';
      /** The approver's IdP subject and issuer, and the approvers entry that let them decide. */
      approver: string;
      approverIssuer: string;
      approvers: string;
      reason?: string;
      requester: string | undefined;
      rule: string;
      sub: string;
      actor?: string;
      role: string;
    }
  | {
      event: 'approval_refused';
      /** Absent for a listing (GET /approvals). */
      approvalId?: string;
      approver: string;
      approverIssuer: string;
      /** not_an_approver | self_approval | not_pending (already decided, retrieved or expired) | revoked | unavailable */
      reason: string;
      /** With `unavailable`: the decision tried (the store failed while recording it; it may have been). */
      decision?: 'approved' | 'denied';
      message: string;
      requester: string | undefined;
      rule?: string;
      sub?: string;
      role?: string;
    }
  | {
      event: 'approval_retrieved';
      approvalId: string;
      requester: string | undefined;
      rule: string;
      sub: string;
      role: string;
      approver?: string;
      /** The token issued (its jti; the token itself never). */
      jti: string;
    }
  | {
      event: 'approval_expired';
      approvalId: string;
      /** Whether it expired waiting for a decision or, approved, waiting for its retrieval. */
      expiredWhile: 'pending' | 'approved';
      rule: string;
      sub: string;
      actor?: string;
      role: string;
      approver?: string;
    };

export interface ExchangeDeps {
  exchange: ExchangeConfig;
  auth: AuthConfig;
  /** The policy in force (read once per request). */
  policy: () => CompiledPolicy;
  /**
   * The catalog in force: what a relation a request names is (a view under a column-limited bound is refused,
   * policy/issuance.ts composeNarrowing); absent: no relation is known, so such names are refused.
   */
  catalog?: () => CatalogSnapshot;
  idp: IdpVerifier | undefined;
  /** Verifies parent pgwarden tokens: signature by an issuing key, lifetime, claims, revocation. */
  issued: TokenVerifier;
  /** The deployment's issuing keys (this replica's and the peers' JWKS): approval seals are checked with them. */
  issuedKeys: VerificationKeys;
  isRevoked: (id: Identity) => string | undefined;
  signer: IssuingKeys;
  now: () => number;
  audit: (event: ExchangeAuditEvent) => void;
  /** False while the audit trail is down and audit.onFailure is refuse: no token is issued unrecorded. */
  auditable: () => boolean;
  /**
   * Where requests needing approval wait (approval-store.ts); undefined: approvals cannot be kept consistently here
   * (several replicas without revocation.table), and such requests are answered 503.
   */
  approvals: ApprovalStore | undefined;
  /** Names this replica in the approvals table. */
  replica: string;
  log?: (level: 'warn' | 'error', msg: string, fields?: object) => void;
}

class Refusal {
  constructor(
    readonly status: number,
    readonly error: OAuthError,
    readonly reason: string,
    readonly message: string,
    readonly retryAfter?: number,
    readonly ruleId?: string,
    /** Extra members of the error body (approval_id, expires_at, interval). */
    readonly extra?: Record<string, unknown>,
    /** Not written to the trail (a pending request polled again changes nothing). */
    readonly quiet?: boolean,
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
  /** The parent's own PARENTS_CLAIM (the tokens it was exchanged from). */
  parentJtis: readonly string[] | undefined;
}

/** Handles one request's parameters; `requester` is the client address, for the audit trail only. */
export async function exchangeToken(
  form: URLSearchParams,
  requester: string | undefined,
  deps: ExchangeDeps,
): Promise<ExchangeResponse> {
  const seen: Seen = {};
  try {
    return await exchange(form, requester, deps, seen);
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    if (!err.quiet)
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
        ...(seen.approvalId === undefined ? {} : { approvalId: seen.approvalId }),
      });
    return {
      status: err.status,
      body: { error: err.error, error_description: err.message, ...err.extra },
      ...(err.retryAfter === undefined ? {} : { retryAfter: err.retryAfter }),
    };
  }
}

interface Seen {
  sub?: string;
  subjectIssuer?: string;
  actor?: string;
  role?: string;
  narrow?: Narrowing;
  approvalId?: string;
}

async function exchange(
  form: URLSearchParams,
  requester: string | undefined,
  deps: ExchangeDeps,
  seen: Seen,
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
  const approvalId = param('approval_id');
  if (approvalId !== undefined) {
    if (!APPROVAL_ID_PATTERN.test(approvalId))
      throw bad('invalid_approval_id', 'approval_id is not an approval id this endpoint gave');
    seen.approvalId = approvalId;
  }

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
  const relations = deps.catalog?.().relations;
  const decision = decideIssuance(policy.issuance, policy.roles, {
    subject: subject.decide,
    actor,
    role,
    narrow,
    ttlMs,
    singleUse: singleUseParam === 'true',
    nowMs,
    maxLifetimeMs: deps.auth.maxTokenLifetime,
    relationKind: (schema, name) => relations?.get(`${schema}.${name}`)?.kind,
  });
  if (decision.outcome === 'deny')
    throw new Refusal(400, decision.error, decision.reason, decision.message, undefined, decision.ruleId);

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
  // The tokens this one is exchanged from, nearest first: revoking any of them revokes it (Identity.parentJtis), so a
  // revoked parent cannot live on through a child it was exchanged for.
  const parentJtis =
    subject.parentJti === undefined ? subject.parentJtis : [subject.parentJti, ...(subject.parentJtis ?? [])];
  if (parentJtis !== undefined && parentJtis.length > MAX_ACT_DEPTH)
    throw new Refusal(
      400,
      'invalid_grant',
      'delegation_chain_too_long',
      `the token would descend from more than ${MAX_ACT_DEPTH} exchanged tokens`,
    );

  if (!deps.auditable())
    throw new Refusal(
      503,
      'temporarily_unavailable',
      'audit_unavailable',
      'pgwarden cannot record an audit trail right now, so it issues no token',
      30,
      decision.ruleId,
    );
  // Approvals (docs/issuance.md, "Approvals"): what would be granted is stored as pending, or retrieved once approved.
  // The decision above is taken again at retrieval with the policy then in force, and must grant what was approved.
  let approved: ApprovalRecord | undefined;
  if (approvalId !== undefined || decision.outcome === 'approval_required') {
    const info: ApprovalRequestInfo = {
      rule: decision.ruleId,
      subjectIssuer: subject.issuer,
      sub: subject.sub,
      ...(actor === undefined ? {} : { actor }),
      ...(subject.tenant === undefined ? {} : { tenant: subject.tenant }),
      role: decision.role,
      ...(decision.narrow === undefined ? {} : { narrow: narrowingClaim(decision.narrow) }),
      ...(narrow === undefined ? {} : { requestedNarrow: narrowingClaim(narrow) }),
      ...(ttlMs === undefined ? {} : { requestedTtl: ttlMs / 1000 }),
      lifetime: decision.lifetimeMs / 1000,
      singleUse: decision.singleUse,
      requestedSingleUse: singleUseParam === 'true',
      audience,
      ...(requester === undefined ? {} : { requester }),
    };
    if (approvalId === undefined) return await requestApproval(info, deps);
    approved = await retrieveApproval(approvalId, info, deps);
  }

  const key = deps.signer.current;
  const iat = Math.floor(nowMs / 1000);
  const exp = iat + decision.lifetimeMs / 1000;
  const jti = randomUUID();
  const claims: jose.JWTPayload = { role: decision.role };
  if (agent !== undefined) claims['agent'] = agent;
  if (subject.tenant !== undefined) claims['tenant'] = subject.tenant;
  if (act !== undefined) claims['act'] = act;
  if (parentJtis !== undefined && parentJtis.length > 0) claims[PARENTS_CLAIM] = parentJtis;
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
    ...(approved === undefined ? {} : { approvalId: approved.id }),
  });
  if (approved !== undefined)
    deps.audit({
      event: 'approval_retrieved',
      approvalId: approved.id,
      requester,
      rule: decision.ruleId,
      sub: subject.sub,
      role: decision.role,
      ...(approved.decidedBy === undefined ? {} : { approver: approved.decidedBy.sub }),
      jti,
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
    // The tokens it is exchanged from: a parent's were checked with it; an IdP token's jti is checked here.
    ...(subject.parentJtis === undefined ? {} : { parentJtis: subject.parentJtis }),
    iss: subject.issuer,
    exp: nowSec + 1,
    iat: nowSec,
    nbf: undefined,
  };
}

/**
 * JSON text of `value` with every object's keys sorted: the same for a value and its round trip through jsonb (which
 * orders keys by length, then bytes), so what was stored and what is asked again compare equal when they are.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, (v as Record<string, unknown>)[k]]),
        )
      : v,
  );
}

/** What must be the same at retrieval as when approved: the request's parameters and what the policy grants for them. */
export function approvalFingerprint(info: ApprovalRequestInfo): Buffer {
  const canonical = canonicalJson([
    info.rule,
    info.subjectIssuer,
    info.sub,
    info.actor ?? null,
    info.tenant ?? null,
    info.role,
    info.narrow ?? null,
    info.requestedNarrow ?? null,
    info.requestedTtl ?? null,
    info.lifetime,
    info.singleUse,
    info.requestedSingleUse,
    info.audience,
  ]);
  return createHash('sha256').update(canonical, 'utf8').digest();
}

/** The fields of a retrieval that differ from the approved request (names as the request gives them). */
function approvalDifferences(approved: ApprovalRequestInfo, now: ApprovalRequestInfo): string[] {
  const same = (a: unknown, b: unknown) => canonicalJson(a ?? null) === canonicalJson(b ?? null);
  const fields: [string, unknown, unknown][] = [
    ['subject_token issuer', approved.subjectIssuer, now.subjectIssuer],
    ['actor_token', approved.actor, now.actor],
    ['tenant', approved.tenant, now.tenant],
    ['role', approved.role, now.role],
    ['narrow', approved.requestedNarrow, now.requestedNarrow],
    ['ttl', approved.requestedTtl, now.requestedTtl],
    ['single_use', approved.requestedSingleUse, now.requestedSingleUse],
    ['audience', approved.audience, now.audience],
    ['issuance rule', approved.rule, now.rule],
    ['granted narrowing', approved.narrow, now.narrow],
    ['granted lifetime', approved.lifetime, now.lifetime],
    ['granted single use', approved.singleUse, now.singleUse],
  ];
  return fields.filter(([, a, b]) => !same(a, b)).map(([name]) => name);
}

function approvalsUnavailable(deps: ExchangeDeps): ApprovalStore {
  // No approver could authenticate (approvals.ts): a pending request would only wait to expire.
  if (deps.idp?.approvers !== true) {
    deps.log?.(
      'error',
      'a request needs approval, but exchange.idp.approverAudience is not set, so no approver can decide it (docs/issuance.md, "Approvals")',
    );
    throw new Refusal(
      503,
      'temporarily_unavailable',
      'approvals_unavailable',
      'approvals are not available on this pgwarden deployment; tell the operator',
    );
  }
  if (deps.approvals === undefined) {
    deps.log?.(
      'error',
      'a request needs approval, but approvals cannot be kept across replicas: cluster.peers is set without revocation.table (docs/issuance.md, "Approvals")',
    );
    throw new Refusal(
      503,
      'temporarily_unavailable',
      'approvals_unavailable',
      'approvals are not available on this pgwarden deployment; tell the operator',
    );
  }
  return deps.approvals;
}

/** A store failure is a 503 (fail closed: no pending request and no token without the shared state). */
async function stored<T>(deps: ExchangeDeps, what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    deps.log?.('error', `the approval store failed (${what})`, { error: errorMessage(err) });
    throw new Refusal(
      503,
      'temporarily_unavailable',
      'approvals_unavailable',
      'the approval could not be read or recorded; retry later',
      30,
    );
  }
}

/** What a request's seal binds (approval-seal.ts, `requested`): its id, what was asked, and who asked. */
export function requestSealed(
  deps: ExchangeDeps,
  id: string,
  fingerprint: Buffer,
  info: ApprovalRequestInfo,
): SealedDecision {
  return {
    issuer: deps.exchange.issuer,
    approvalId: id,
    fingerprint,
    decision: 'requested',
    approverSub: info.sub,
    approverIssuer: info.subjectIssuer,
    approvers: '',
  };
}

/** Whether a stored request is one a replica of this deployment made (its seal), or its keys cannot tell now. */
export async function requestGenuine(
  deps: ExchangeDeps,
  rec: ApprovalRecord,
): Promise<'valid' | 'invalid' | 'unavailable'> {
  if (rec.sub !== rec.request.sub) return 'invalid';
  return await sealHolds(
    deps.issuedKeys,
    rec.request.seal,
    requestSealed(deps, rec.id, approvalFingerprint(rec.request), rec.request),
  );
}

/** Audits the requests that expired since the last sweep (on any replica, each once). */
export async function sweepApprovals(deps: ExchangeDeps): Promise<void> {
  if (deps.approvals === undefined) return;
  for (const r of await deps.approvals.expire(1000))
    deps.audit({
      event: 'approval_expired',
      approvalId: r.id,
      expiredWhile: r.decidedAt === undefined ? 'pending' : 'approved',
      rule: r.request.rule,
      sub: r.sub,
      ...(r.request.actor === undefined ? {} : { actor: r.request.actor }),
      role: r.request.role,
      ...(r.decidedBy === undefined ? {} : { approver: r.decidedBy.sub }),
    });
}

async function requestApproval(info: ApprovalRequestInfo, deps: ExchangeDeps): Promise<ExchangeResponse> {
  const store = approvalsUnavailable(deps);
  const timeoutMs = deps.policy().issuance?.approvalTimeout ?? 0;
  // A prefix, so an id never starts with '-' (a command line would read it as an option).
  const id = `apr_${randomBytes(32).toString('base64url')}`;
  const fingerprint = approvalFingerprint(info);
  const seal = await sealDecision(deps.signer.current, requestSealed(deps, id, fingerprint, info));
  const created = await stored(deps, 'request', () =>
    store.create({
      id,
      sub: info.sub,
      fingerprint,
      request: { ...info, seal },
      timeoutMs,
      maxOpen: MAX_OPEN_APPROVALS_PER_SUBJECT,
      by: deps.replica,
    }),
  );
  if (created === undefined)
    throw new Refusal(
      429,
      'temporarily_unavailable',
      'approval_limit',
      `this subject already has ${MAX_OPEN_APPROVALS_PER_SUBJECT} requests waiting for approval or retrieval, or ${MAX_KEPT_APPROVALS_PER_SUBJECT} made within the last hour or so (or this replica holds as many requests as it may)`,
      60,
      info.rule,
    );
  const { requestedNarrow: _n, requestedTtl: _t, requestedSingleUse: _s, audience: _a, seal: _x, ...shown } = info;
  deps.audit({ event: 'approval_requested', approvalId: id, expiresAt: created.expiresAt.toISOString(), ...shown });
  return {
    status: 400,
    body: {
      error: 'approval_required',
      error_description: `issuance rule ${info.rule} requires approval: an approver must approve request ${id}, then repeat this request with approval_id`,
      approval_id: id,
      expires_at: created.expiresAt.toISOString(),
      expires_in: Math.max(0, Math.round((created.expiresAt.getTime() - deps.now()) / 1000)),
      interval: APPROVAL_POLL_INTERVAL_SECONDS,
    },
  };
}

/** The approval `id` retrieved once for `info`, or the refusal saying why not. */
async function retrieveApproval(id: string, info: ApprovalRequestInfo, deps: ExchangeDeps): Promise<ApprovalRecord> {
  const store = approvalsUnavailable(deps);
  await stored(deps, 'sweep', () => sweepApprovals(deps));
  const rec = await stored(deps, 'get', () => store.get(id));
  const unknown = () =>
    new Refusal(400, 'invalid_grant', 'approval_unknown', 'no approval request of this subject has this approval_id');
  // Another subject's request is answered as an unknown id: its existence is not revealed.
  if (rec === undefined || rec.sub !== info.sub || rec.request.subjectIssuer !== info.subjectIssuer) throw unknown();
  const refusal = (state: string): Refusal => {
    switch (state) {
      case 'pending':
        return new Refusal(
          400,
          'authorization_pending',
          'approval_pending',
          'the request is waiting for an approver; repeat it later',
          undefined,
          rec.request.rule,
          {
            approval_id: id,
            expires_at: rec.expiresAt.toISOString(),
            interval: APPROVAL_POLL_INTERVAL_SECONDS,
          },
          true,
        );
      case 'denied':
        return new Refusal(
          400,
          'approval_denied',
          'approval_denied',
          `the request was denied${rec.reason === undefined ? '' : `: ${rec.reason}`}`,
          undefined,
          rec.request.rule,
        );
      case 'expired':
        return new Refusal(
          400,
          'approval_expired',
          'approval_expired',
          rec.decidedAt === undefined
            ? 'the request expired before an approver decided it; ask again'
            : 'the approved request was not retrieved in time; ask again',
          undefined,
          rec.request.rule,
        );
      case 'retrieved':
        return new Refusal(
          400,
          'invalid_grant',
          'approval_used',
          'the token of this approval was already retrieved; an approval gives one token',
          undefined,
          rec.request.rule,
        );
      default:
        return unknown();
    }
  };
  if (rec.state !== 'approved') throw refusal(rec.state);
  const differs = approvalDifferences(rec.request, info);
  if (differs.length > 0)
    throw new Refusal(
      400,
      'invalid_grant',
      'approval_mismatch',
      `the request differs from the approved one in: ${differs.join(', ')}; repeat it exactly, or ask for a new approval`,
      undefined,
      rec.request.rule,
    );
  // The row may have been written by anything holding the upstream role's EXECUTE (a DO block): only a decision a
  // replica of this deployment signed, for this request and this approver, issues a token (approval-seal.ts).
  const fingerprint = approvalFingerprint(info);
  const by = rec.decidedBy;
  const check =
    by === undefined
      ? 'invalid'
      : await sealHolds(deps.issuedKeys, by.seal, {
          issuer: deps.exchange.issuer,
          approvalId: id,
          fingerprint,
          decision: 'approved',
          approverSub: by.sub,
          approverIssuer: by.issuer,
          approvers: by.approvers,
          ...(by.claims === undefined ? {} : { claims: by.claims }),
        });
  // A peer's keys that could not be fetched say nothing either way: ask again (the approval stays usable).
  if (check === 'unavailable')
    throw new Refusal(
      503,
      'temporarily_unavailable',
      'issuing_keys_unavailable',
      'the issuing keys that signed the approval could not be fetched; retry later',
      30,
      rec.request.rule,
    );
  const sealed = check === 'valid';
  // The approver's authority is checked again with the policy and revocations in force: withdrawing it (removing the
  // approvers entry, revoking the approver's subject) stops the approvals they gave that are not yet retrieved.
  const withdrawn =
    !sealed || by === undefined
      ? undefined
      : approverWithdrawn(deps, { issuer: by.issuer, sub: by.sub, claims: by.claims ?? {} }, rec);
  if (withdrawn !== undefined)
    throw new Refusal(400, 'invalid_grant', withdrawn.reason, withdrawn.message, undefined, rec.request.rule);
  if (!sealed) {
    deps.log?.('error', 'an approved request carries no decision signed by this deployment: no token is issued', {
      approvalId: id,
    });
    throw new Refusal(
      400,
      'invalid_grant',
      'approval_unverified',
      'the approval was not signed by this deployment (forged, or signed with a key rotated out since); ask for a new approval',
      undefined,
      rec.request.rule,
    );
  }
  const outcome = await stored(deps, 'retrieve', () => store.retrieve(id, info.sub, fingerprint, deps.replica));
  // Only `taken` is this call's retrieval; `retrieved` means another (concurrent) call had it first.
  if (outcome === 'taken') return rec;
  if (outcome === 'mismatch')
    throw new Refusal(
      400,
      'invalid_grant',
      'approval_mismatch',
      'the request differs from the approved one',
      undefined,
      rec.request.rule,
    );
  throw refusal(outcome);
}

/** The identity a revocation entry is matched against for an approver (an IdP subject: its `sub`, also as an agent). */
export function approverProbe(approver: { issuer: string; sub: string }, nowMs: number): Identity {
  const nowSec = Math.floor(nowMs / 1000);
  return {
    sub: approver.sub,
    role: '',
    agent: approver.sub,
    tenant: undefined,
    jti: undefined,
    iss: approver.issuer,
    exp: nowSec + 1,
    iat: nowSec,
    nbf: undefined,
  };
}

/** Why `approver` may no longer stand behind an approval of `rec` (policy or revocations in force), or undefined. */
function approverWithdrawn(
  deps: ExchangeDeps,
  approver: ApproverSubject,
  rec: ApprovalRecord,
): { reason: string; message: string } | undefined {
  const revoked = deps.isRevoked(approverProbe(approver, deps.now()));
  if (revoked !== undefined)
    return {
      reason: 'approver_revoked',
      message: `the approver ${approver.sub} is revoked (${revoked}); ask for a new approval`,
    };
  const may = decideApprover(deps.policy().issuance, approver, {
    ruleId: rec.request.rule,
    sub: rec.sub,
    actor: rec.request.actor,
  });
  if (!may.ok)
    return {
      reason: 'approver_withdrawn',
      message: `${approver.sub} is no longer an approver of this request under the policy in force (${may.reason}); ask for a new approval`,
    };
  return undefined;
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
      parentJtis: id.parentJtis,
    };
  }
  if (deps.idp === undefined)
    throw new Refusal(400, 'invalid_grant', 'subject_issuer_unknown', 'subject_token: its issuer is not accepted here');
  const checked = await deps.idp.verify(token, nowMs);
  if (!checked.ok) throw idpRefusal(checked, 'subject_token');
  const s = checked.subject;
  seen.sub = s.sub;
  seen.subjectIssuer = s.issuer;
  // The IdP token's jti is carried like a parent's (PARENTS_CLAIM): revoking a leaked IdP token by its jti revokes the
  // pgwarden tokens obtained with it. One that could not be carried (not a usable id) is refused, not dropped.
  const idpJti = s.claims['jti'];
  if (
    idpJti !== undefined &&
    (typeof idpJti !== 'string' ||
      idpJti.length === 0 ||
      idpJti.includes('\0') ||
      Buffer.byteLength(idpJti, 'utf8') > MAX_IDENTITY_CLAIM_BYTES)
  )
    throw new Refusal(
      400,
      'invalid_grant',
      'subject_token_malformed',
      `subject_token: its "jti" is not a non-empty string of at most ${MAX_IDENTITY_CLAIM_BYTES} bytes without NUL`,
    );
  return {
    decide: { kind: 'idp', issuer: s.issuer, sub: s.sub, claims: s.claims },
    issuer: s.issuer,
    sub: s.sub,
    tenant: s.tenant,
    agent: undefined,
    act: undefined,
    parentJti: undefined,
    parentJtis: idpJti === undefined ? undefined : [idpJti],
  };
}
