// An approver's decision sealed with the deciding replica's issuing key and checked at retrieval: the approvals table's functions are reachable by anything holding the upstream role's EXECUTE (a DO block of a session pgwarden brokers), so a row saying "approved" proves nothing unless a replica signed it after verifying the approver.
import * as jose from 'jose';
import { ISSUING_ALGORITHMS } from '../config/key-files.ts';
import { KeyUnavailableError, type VerificationKeys } from '../auth/keys.ts';
import type { IssuingKey } from './signing-keys.ts';

/** The JWS `typ` of a seal: never a token (its payload is not JSON, so no JWT verifier reads it as one). */
const SEAL_TYP = 'pgwarden-approval-decision';
/** The payload's first line: a text, not a JSON claims set (RFC 7519 §7.2 step 10 fails on it). */
const SEAL_PREFIX = 'pgwarden approval decision v1\n';

/**
 * What a seal binds: one request (its id and the fingerprint of what was asked), one decision, one approver. A
 * request is sealed too when stored (`requested`, its subject in the approver fields), so approvers are shown and
 * decide only requests a replica made: a row written through the functions by anything else is never listed.
 */
export interface SealedDecision {
  /** exchange.issuer: a seal of another deployment sharing a key file is not this one's. */
  issuer: string;
  approvalId: string;
  /** approvalFingerprint of the request (handler.ts): at retrieval, of the request as repeated. */
  fingerprint: Buffer;
  decision: 'approved' | 'denied' | 'requested';
  approverSub: string;
  approverIssuer: string;
  approvers: string;
  /** The approver's claims kept beside the decision (ApproverInfo.claims); absent: none. */
  claims?: Readonly<Record<string, unknown>>;
}

/** Claims in one order whatever the store did to it (jsonb orders an object's keys its own way). */
function canonicalClaims(claims: Readonly<Record<string, unknown>> | undefined): [string, unknown][] {
  return Object.keys(claims ?? {})
    .sort()
    .map((k) => [k, (claims as Record<string, unknown>)[k]]);
}

function payload(d: SealedDecision): Uint8Array {
  const body = JSON.stringify([
    d.issuer,
    d.approvalId,
    d.fingerprint.toString('hex'),
    d.decision,
    d.approverSub,
    d.approverIssuer,
    d.approvers,
    canonicalClaims(d.claims),
  ]);
  return new TextEncoder().encode(`${SEAL_PREFIX}${body}`);
}

/** Signs the decision with the key new tokens are signed with (compact JWS). */
export async function sealDecision(key: IssuingKey, d: SealedDecision): Promise<string> {
  return await new jose.CompactSign(payload(d))
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: SEAL_TYP })
    .sign(key.privateKey);
}

/**
 * Whether `seal` is a signature, by an issuing key of this deployment (this replica's or a peer's), of exactly `d`:
 * `valid`; `unavailable` when the keys that could tell could not be fetched (a peer's JWKS: ask again later);
 * `invalid` for anything else (forged, another request's, a key rotated out past its overlap). Only `valid` issues.
 */
export async function sealHolds(
  keys: VerificationKeys,
  seal: unknown,
  d: SealedDecision,
): Promise<'valid' | 'invalid' | 'unavailable'> {
  if (typeof seal !== 'string' || seal.length > 4096) return 'invalid';
  try {
    const r = await jose.compactVerify(seal, keys.resolve, { algorithms: [...ISSUING_ALGORITHMS] });
    if (r.protectedHeader.typ !== SEAL_TYP) return 'invalid';
    return Buffer.from(r.payload).equals(Buffer.from(payload(d))) ? 'valid' : 'invalid';
  } catch (err) {
    return err instanceof KeyUnavailableError && err.kind === 'fetch_failed' ? 'unavailable' : 'invalid';
  }
}
