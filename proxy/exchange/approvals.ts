// The approvals API (GET /approvals, GET and POST /approvals/<id>): approvers authenticated by an IdP JWT (Bearer), authorised by the issuance policy's approvers, never for their own requests; every decision and refusal audited.
import {
  decideApprover,
  sameParty,
  subjectMatches,
  type ApproverSubject,
  type CompiledIssuance,
} from '../../policy/issuance.ts';
import { errorMessage } from '../../lib/error-message.ts';
import type { ApprovalRecord } from './approval-store.ts';
import {
  APPROVAL_ID_PATTERN,
  approvalFingerprint,
  approverProbe,
  requestGenuine,
  sweepApprovals,
  type ExchangeDeps,
  type ExchangeResponse,
} from './handler.ts';
import { sealDecision } from './approval-seal.ts';

/** Longest reason an approver may give (it is stored, audited and shown to the requester). */
export const MAX_APPROVAL_REASON_LENGTH = 500;
/** Most pending requests one listing shows. */
export const MAX_APPROVALS_LISTED = 200;

export interface ApprovalsRequest {
  method: string;
  /** The id from /approvals/<id>; undefined for /approvals. */
  id: string | undefined;
  authorization: string | undefined;
  /** The form body of a POST. */
  form: URLSearchParams | undefined;
  requester: string | undefined;
}

const answer = (status: number, body: Record<string, unknown>): ExchangeResponse => ({ status, body });
const keysUnavailable = (): ExchangeResponse => ({
  status: 503,
  body: {
    error: 'temporarily_unavailable',
    error_description: 'the issuing keys that sealed a request could not be fetched; retry later',
  },
  retryAfter: 30,
});
const failure = (status: number, error: string, description: string): ExchangeResponse =>
  answer(status, { error, error_description: description });

/** A record as approvers see it: who asks, for what, and what has happened to it. */
export function approvalView(r: ApprovalRecord, approverSub?: string): Record<string, unknown> {
  const q = r.request;
  return {
    approval_id: r.id,
    status: r.state,
    rule: q.rule,
    subject_issuer: q.subjectIssuer,
    sub: q.sub,
    ...(q.actor === undefined ? {} : { actor: q.actor }),
    ...(q.tenant === undefined ? {} : { tenant: q.tenant }),
    role: q.role,
    ...(q.narrow === undefined ? {} : { narrow: q.narrow }),
    lifetime: q.lifetime,
    single_use: q.singleUse,
    audience: q.audience,
    ...(q.requester === undefined ? {} : { requester: q.requester }),
    created_at: r.createdAt.toISOString(),
    expires_at: r.expiresAt.toISOString(),
    ...(r.decidedAt === undefined ? {} : { decided_at: r.decidedAt.toISOString() }),
    ...(r.decidedBy === undefined ? {} : { decided_by: r.decidedBy.sub, decided_by_issuer: r.decidedBy.issuer }),
    ...(r.reason === undefined ? {} : { reason: r.reason }),
    ...(r.retrievedAt === undefined ? {} : { retrieved_at: r.retrievedAt.toISOString() }),
    ...(approverSub !== undefined &&
    (sameParty(approverSub, q.sub) || (q.actor !== undefined && sameParty(approverSub, q.actor)))
      ? { own: true }
      : {}),
  };
}

/**
 * The approver's claims the approvers entries match on (kept with the decision, so the retrieval can match the
 * approver again under the policy then in force): strings and lists of strings only, as subjectMatches reads them.
 */
export function approverClaims(
  issuance: CompiledIssuance | undefined,
  claims: Readonly<Record<string, unknown>>,
): Record<string, string | string[]> {
  const names = new Set<string>();
  for (const a of issuance?.approvers ?? [])
    for (const m of a.subjects) if (m.claims !== undefined) for (const [name] of m.claims) names.add(name);
  const out: Record<string, string | string[]> = {};
  for (const name of [...names].sort()) {
    if (!Object.hasOwn(claims, name)) continue;
    const v = claims[name];
    if (typeof v === 'string') out[name] = v;
    else if (Array.isArray(v)) out[name] = v.filter((x): x is string => typeof x === 'string');
  }
  return out;
}

/** Handles one approvals call; never throws for a request's content (the caller turns a throw into a 500). */
export async function handleApprovals(req: ApprovalsRequest, deps: ExchangeDeps): Promise<ExchangeResponse> {
  const store = deps.approvals;
  if (store === undefined)
    return failure(503, 'temporarily_unavailable', 'approvals are not available on this pgwarden deployment');
  if (deps.idp === undefined || !deps.idp.approvers)
    return failure(
      404,
      'not_found',
      'approvals need an identity provider audience of their own for approvers (exchange.idp.approverAudience)',
    );
  // RFC 6750 §2.1: the approver's IdP token as a Bearer token.
  const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(req.authorization ?? '');
  if (m === null)
    return {
      ...failure(401, 'invalid_token', 'an approver IdP token is required (Authorization: Bearer)'),
      headers: { 'www-authenticate': 'Bearer realm="pgwarden approvals"' },
    };
  const checked = await deps.idp.verify(m[1] as string, deps.now(), 'approver');
  if (!checked.ok)
    return checked.unavailable
      ? { ...failure(503, 'temporarily_unavailable', checked.message), retryAfter: 30 }
      : {
          ...failure(401, 'invalid_token', `approver token: ${checked.message}`),
          headers: { 'www-authenticate': 'Bearer realm="pgwarden approvals", error="invalid_token"' },
        };
  const approver: ApproverSubject = {
    issuer: checked.subject.issuer,
    sub: checked.subject.sub,
    claims: checked.subject.claims,
  };
  const issuance = deps.policy().issuance;
  // A revoked approver (pgwarden revoke --sub) neither sees nor decides requests, as a revoked subject gets no token.
  const revoked = deps.isRevoked(approverProbe(approver, deps.now()));
  if (revoked !== undefined) {
    const message = `the approver is revoked: ${revoked}`;
    deps.audit({
      event: 'approval_refused',
      ...(req.id !== undefined && APPROVAL_ID_PATTERN.test(req.id) ? { approvalId: req.id } : {}),
      approver: approver.sub,
      approverIssuer: approver.issuer,
      reason: 'revoked',
      message,
      requester: req.requester,
    });
    return failure(403, 'access_denied', message);
  }
  // A decision nobody could audit is not taken (audit.onFailure: refuse), as no token is issued unrecorded.
  if (req.method === 'POST' && !deps.auditable())
    return {
      ...failure(503, 'temporarily_unavailable', 'pgwarden cannot record an audit trail right now; retry later'),
      retryAfter: 30,
    };

  let attempted: { id: string; decision: 'approved' | 'denied'; rec: ApprovalRecord } | undefined;
  try {
    await sweepApprovals(deps);
    if (req.id === undefined) {
      if (req.method !== 'GET')
        return { ...failure(405, 'invalid_request', 'use GET to list pending approvals'), headers: { allow: 'GET' } };
      // The rules this approver decides, asked of the store before its bound (undefined: an entry covers every rule).
      const entries = (issuance?.approvers ?? []).filter((a) => a.subjects.some((m) => subjectMatches(m, approver)));
      const rules = entries.some((a) => a.rules === undefined)
        ? undefined
        : [...new Set(entries.flatMap((a) => [...(a.rules ?? [])]))];
      const pending = rules !== undefined && rules.length === 0 ? [] : await store.list(MAX_APPROVALS_LISTED, rules);
      // Only the requests this approver may decide are listed (their own marked own: they may see, never decide, them).
      const mine = pending.filter(
        (r) =>
          decideApprover(issuance, approver, { ruleId: r.request.rule, sub: r.sub, actor: r.request.actor }, false).ok,
      );
      // Only requests a replica sealed are shown: a row written through the functions by anything else is not.
      const checked = await Promise.all(mine.map(async (r) => ({ r, seal: await requestGenuine(deps, r) })));
      if (checked.some((c) => c.seal === 'unavailable')) return keysUnavailable();
      for (const c of checked)
        if (c.seal === 'invalid')
          deps.log?.('error', 'a stored approval request is not sealed by this deployment', { approvalId: c.r.id });
      return answer(200, {
        approvals: checked.filter((c) => c.seal === 'valid').map((c) => approvalView(c.r, approver.sub)),
      });
    }
    if (!APPROVAL_ID_PATTERN.test(req.id)) return failure(404, 'not_found', 'no approval request has this id');
    const rec = await store.get(req.id);
    if (rec === undefined) return failure(404, 'not_found', 'no approval request has this id');
    const genuine = await requestGenuine(deps, rec);
    if (genuine === 'unavailable') return keysUnavailable();
    if (genuine === 'invalid') {
      deps.log?.('error', 'a stored approval request is not sealed by this deployment', { approvalId: rec.id });
      return failure(404, 'not_found', 'no approval request has this id');
    }
    const parties = { ruleId: rec.request.rule, sub: rec.sub, actor: rec.request.actor };
    const may = decideApprover(issuance, approver, parties, req.method === 'POST');
    const refuse = (status: number, reason: string, message: string): ExchangeResponse => {
      deps.audit({
        event: 'approval_refused',
        approvalId: rec.id,
        approver: approver.sub,
        approverIssuer: approver.issuer,
        reason,
        message,
        requester: req.requester,
        rule: rec.request.rule,
        sub: rec.sub,
        role: rec.request.role,
      });
      return failure(status, 'access_denied', message);
    };
    if (req.method === 'GET') {
      if (!may.ok) return refuse(403, may.reason, may.message);
      return answer(200, approvalView(rec, approver.sub));
    }
    if (req.method !== 'POST')
      return { ...failure(405, 'invalid_request', 'use GET or POST'), headers: { allow: 'GET, POST' } };
    const form = req.form ?? new URLSearchParams();
    for (const name of ['decision', 'reason'])
      if (form.getAll(name).length > 1) return failure(400, 'invalid_request', `${name} is given more than once`);
    const decision = form.get('decision');
    if (decision !== 'approve' && decision !== 'deny')
      return failure(400, 'invalid_request', 'decision must be approve or deny');
    const reasonText = form.get('reason') ?? '';
    if (reasonText.length > MAX_APPROVAL_REASON_LENGTH || reasonText.includes('\0'))
      return failure(400, 'invalid_request', `reason must be at most ${MAX_APPROVAL_REASON_LENGTH} characters`);
    const reason = reasonText === '' ? undefined : reasonText;
    if (!may.ok) return refuse(403, may.reason, may.message);
    const timeoutMs = issuance?.approvalTimeout ?? 0;
    // Signed here, after the approver was verified and authorised: the retrieval issues only for a sealed decision.
    const claims = approverClaims(issuance, approver.claims);
    const seal = await sealDecision(deps.signer.current, {
      issuer: deps.exchange.issuer,
      approvalId: rec.id,
      fingerprint: approvalFingerprint(rec.request),
      decision: decision === 'approve' ? 'approved' : 'denied',
      approverSub: approver.sub,
      approverIssuer: approver.issuer,
      approvers: may.approverRule,
      claims,
    });
    attempted = { id: rec.id, decision: decision === 'approve' ? 'approved' : 'denied', rec };
    let outcome = await store.decide(
      rec.id,
      decision === 'approve',
      { sub: approver.sub, issuer: approver.issuer, approvers: may.approverRule, claims, seal },
      reason,
      timeoutMs,
    );
    // A call asked again after a lost answer sees its own committed write as someone else's: the seal, which only this
    // call made, tells it apart, so the decision taken is audited as taken (and its approver with it).
    if (outcome !== 'decided' && outcome !== 'unknown') {
      const now = await store.get(rec.id);
      if (now?.decidedBy?.seal === seal) outcome = 'decided';
    }
    if (outcome === 'unknown') return failure(404, 'not_found', 'no approval request has this id');
    if (outcome !== 'decided') {
      const message =
        outcome === 'expired' ? 'the request has expired' : `the request is no longer pending (${outcome})`;
      deps.audit({
        event: 'approval_refused',
        approvalId: rec.id,
        approver: approver.sub,
        approverIssuer: approver.issuer,
        reason: 'not_pending',
        message,
        requester: req.requester,
        rule: rec.request.rule,
        sub: rec.sub,
        role: rec.request.role,
      });
      return failure(409, outcome === 'expired' ? 'approval_expired' : 'approval_decided', message);
    }
    attempted = undefined;
    deps.audit({
      event: 'approval_decided',
      approvalId: rec.id,
      decision: decision === 'approve' ? 'approved' : 'denied',
      approver: approver.sub,
      approverIssuer: approver.issuer,
      approvers: may.approverRule,
      ...(reason === undefined ? {} : { reason }),
      requester: req.requester,
      rule: rec.request.rule,
      sub: rec.sub,
      ...(rec.request.actor === undefined ? {} : { actor: rec.request.actor }),
      role: rec.request.role,
    });
    const after = await store.get(rec.id);
    return answer(200, approvalView(after ?? rec, approver.sub));
  } catch (err) {
    deps.log?.('error', 'the approval store failed', { error: errorMessage(err) });
    // The decision may or may not have been recorded (the table may have committed it before the answer was lost):
    // the trail says who tried to decide what, so an approval that later issues a token is never without its approver.
    if (attempted !== undefined)
      deps.audit({
        event: 'approval_refused',
        approvalId: attempted.id,
        approver: approver.sub,
        approverIssuer: approver.issuer,
        reason: 'unavailable',
        decision: attempted.decision,
        message: 'the approvals table failed during the decision: it may have been recorded',
        requester: req.requester,
        rule: attempted.rec.request.rule,
        sub: attempted.rec.sub,
        role: attempted.rec.request.role,
      });
    return {
      ...failure(503, 'temporarily_unavailable', 'the approvals could not be read or recorded; retry later'),
      retryAfter: 30,
    };
  }
}
