// The audit event shape (fixed fields, schema version) and the JSON fragments statement events are built from by hand.
import type { Identity } from '../auth/jwt.ts';
import type { ExchangeAuditEvent } from '../exchange/handler.ts';
import type { RevocationEntry } from '../revocation/entry-index.ts';
import type { EndReason, Session } from '../session/session.ts';
import type { Decision } from '../../policy/types.ts';
import type { ReasonCode } from '../../lib/errors.ts';
import { refusalReason } from '../../policy/reasons.ts';
import { mayHoldJwt, scrub, scrubText } from './redact.ts';

/** Bumped when a field changes meaning or is removed (adding a field does not bump it). */
export const AUDIT_SCHEMA_VERSION = 1;

/** Identity fields shared by every session-scoped event. Absent values are omitted from the JSON. */
export interface AuditSessionFields {
  sessionId: string;
  clientAddress?: string;
  sub?: string;
  agent?: string;
  tenant?: string;
  role?: string;
  jti?: string;
  /** Token expiry, ISO 8601. */
  tokenExp?: string;
  /** sha256 (hex) of the token's pgwarden_narrow claim as read (policy/narrow.ts); session_start carries the claim itself. */
  narrowing?: string;
}

export type AuditEvent =
  /**
   * `singleUse: 'consumed'`: the login consumed a single-use token (no later login with its jti is accepted).
   * `narrow`: the token's narrowing (policy/narrow.ts). `act`: its RFC 8693 actor chain, current actor first (docs/issuance.md).
   */
  | ({
      event: 'session_start';
      singleUse?: 'consumed';
      narrow?: Record<string, unknown>;
      act?: string[];
    } & AuditSessionFields)
  /** Token exchange: a token issued (jti, exp, role, narrowing, act chain) or a request refused; never a token. */
  | ExchangeAuditEvent
  | ({
      event: 'login_refused';
      reason: string;
      refusal: ReasonCode;
      sqlstate: string;
      code: string;
      message: string;
      operatorHint?: string;
    } & AuditSessionFields)
  | ({
      event: 'statement';
      /** Decision number within the session; the matching statement_end carries the same seq. */
      seq?: number;
      mode: 'simple' | 'parse' | 'bind';
      /** libpg-query node names, e.g. ['SelectStmt']; empty when the text did not parse. */
      kinds: string[];
      /** Per the `sql` setting; absent with 'none'. */
      sql?: string;
      sqlTruncated?: boolean;
      relations: string[];
      decision: 'allow' | 'deny' | 'shadow_deny';
      rule?: string;
      /** Why it was denied (or would have been, for shadow_deny). */
      reason?: string;
      policyVersion?: number;
      decisionMicros: number;
      /** Filled by the relay when available: rows returned, execution time and the final SQLSTATE. For a deny, sqlstate is the refusal's. */
      rows?: number;
      durationMs?: number;
      sqlstate?: string;
    } & AuditSessionFields)
  /**
   * Written when an allowed statement has finished: rows sent to the client, time from send to completion,
   * and its SQLSTATE if it failed. The decision is written first, before the statement runs, so nothing ever
   * runs unaudited; this event completes it (matched by sessionId + seq).
   */
  /** A statement the policy allowed, refused because a role budget of its subject or agent was used up (53400). */
  | ({
      event: 'budget_exceeded';
      seq: number;
      kind: string;
      per: string;
      limit: number;
      retryInMs?: number;
      sqlstate: string;
    } & AuditSessionFields)
  | ({
      event: 'statement_end';
      seq: number;
      rows: number;
      durationMs: number;
      sqlstate?: string;
      truncated?: boolean;
      rowCapError?: boolean;
    } & AuditSessionFields)
  | ({
      event: 'session_end';
      reason: EndReason;
      durationMs?: number;
      statements: number;
      denied: number;
    } & AuditSessionFields)
  | ({ event: 'policy_reload' } & PolicyReloadInfo)
  | ({ event: 'revocation' } & RevocationInfo)
  /**
   * Written first when the trail recovers from a failure: `dropped` events between failedAt and recoveredAt are
   * missing (those that fit in memory follow this line).
   */
  | { event: 'audit_gap'; failedAt: string; recoveredAt?: string; error: string; dropped: number };

export interface PolicyReloadInfo {
  version: number;
  previousVersion?: number;
  /** 'file' | 'signal' | 'api' | 'catalog'. */
  reason: string;
  digest?: string;
  addedRoles?: string[];
  removedRoles?: string[];
  changedRoles?: string[];
  /** Sessions ended because their role disappeared. */
  sessionsEnded?: number;
  [extra: string]: unknown;
}

export interface RevocationInfo {
  /** 'file' | 'table'. */
  source: string;
  /** Entries in force after the change. */
  entries: number;
  added?: RevocationEntry[];
  removed?: RevocationEntry[];
  /** Live sessions ended because of this change. */
  sessionsEnded?: number;
  [extra: string]: unknown;
}

// ---------------------------------------------------------------------------------------------
// Event construction: explicit fields only, so whatever else a Session or Identity carries stays out.

export function sessionFields(s: Pick<Session, 'id' | 'remoteAddress' | 'identity' | 'role'>): AuditSessionFields {
  const id: Identity | undefined = s.identity;
  const out: AuditSessionFields = { sessionId: s.id };
  if (s.remoteAddress !== undefined) out.clientAddress = s.remoteAddress;
  if (id) {
    out.sub = id.sub;
    if (id.agent !== undefined) out.agent = id.agent;
    if (id.tenant !== undefined) out.tenant = id.tenant;
    out.role = id.role;
    if (id.jti !== undefined) out.jti = id.jti;
    if (Number.isFinite(id.exp)) out.tokenExp = new Date(id.exp * 1000).toISOString();
    if (id.narrowing !== undefined) out.narrowing = id.narrowing.digest;
  } else if (s.role) {
    out.role = s.role.name;
  }
  return out;
}

/** The session fields as a JSON fragment (`,"sessionId":…`), JWT-looking values scrubbed like every other field. */
export function sessionFragment(fields: AuditSessionFields): string {
  const json = escapeSeparators(JSON.stringify(mayHoldJwt(fields) ? scrub(fields) : fields));
  return json.length > 2 ? `,${json.slice(1, -1)}` : '';
}

let lastMs = 0;
let lastIso = '';
/** ISO 8601 time of now, formatted once per millisecond. */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/**
 * `x` rounded to 3 decimals, as JSON: the same number `Math.round(x * 1000) / 1000` is, written with integer
 * arithmetic (V8 prints a fractional double by a slow general algorithm, and there are two per statement).
 */
export function fixed3(x: number): string {
  const n = Math.round(x * 1000);
  if (!(n >= 0 && n <= 0x3fffffff)) return Number.isFinite(n) ? String(n / 1000) : 'null';
  const whole = Math.floor(n / 1000);
  const frac = n - whole * 1000;
  if (frac === 0) return String(whole);
  // Trailing zeros dropped, as JSON.stringify would: 0.5, not 0.500.
  if (frac % 100 === 0) return `${whole}.${frac / 100}`;
  if (frac % 10 === 0) return `${whole}.${frac < 100 ? '0' : ''}${frac / 10}`;
  return `${whole}.${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}`;
}

/**
 * The decision's part of a statement event (kinds, relations, outcome, rule, reason), cached per decision: the
 * decision cache hands out the same decision object (or a copy with its own rewrite and the same statement list)
 * for every repeat, so this is built once per distinct statement shape.
 */
const decisionFragments = new WeakMap<object, { d: Decision; json: string }>();
export function decisionFragment(d: Decision): string {
  const cached = decisionFragments.get(d.statements);
  if (cached !== undefined && sameOutcome(cached.d, d)) return cached.json;
  const relations = [...new Set(d.statements.flatMap((st) => st.relations))];
  let json = `,"kinds":${JSON.stringify(d.statements.map((st) => st.kind))},"relations":${JSON.stringify(relations)}`;
  json += `,"decision":"${d.allow ? (d.shadowDenied ? 'shadow_deny' : 'allow') : 'deny'}"`;
  if (d.ruleId !== undefined) json += `,"rule":${JSON.stringify(d.ruleId)}`;
  if (!d.allow) {
    json += `,"reason":${JSON.stringify(d.reason)},"refusal":${JSON.stringify(refusalReason(d))},"sqlstate":${JSON.stringify(d.sqlstate)}`;
    if (d.operatorHint !== undefined) json += `,"operatorHint":${JSON.stringify(d.operatorHint)}`;
  } else if (d.shadowDenied) json += `,"reason":${JSON.stringify(d.shadowDenied.reason)}`;
  if (d.analysedOn !== undefined) json += `,"analysedOn":"${d.analysedOn}"`;
  json = scrubText(json);
  decisionFragments.set(d.statements, { d, json });
  return json;
}

function sameOutcome(a: Decision, b: Decision): boolean {
  if (a === b) return true;
  if (a.allow !== b.allow || a.ruleId !== b.ruleId || a.analysedOn !== b.analysedOn) return false;
  if (!a.allow && !b.allow)
    return a.reason === b.reason && a.sqlstate === b.sqlstate && a.operatorHint === b.operatorHint;
  if (a.allow && b.allow) return a.shadowDenied?.reason === b.shadowDenied?.reason;
  return false;
}

/**
 * `JSON.stringify(text)` with U+2028, U+2029 and the C1 controls (U+0080–U+009F) escaped too, without the call when
 * nothing in the text needs an escape (the usual statement): no quote, backslash, control character or surrogate
 * (JSON.stringify escapes a lone one; a pair is left to it too). Valid JSON either way; the extra escapes keep a line
 * one line for readers that split on Unicode line separators (JavaScript before ES2019, some log shippers) and keep
 * C1 controls, which some terminals act on, and bidi controls (an RTL override reorders a line as displayed) out of the raw text.
 */
export function jsonString(text: string): string {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (
      c < 32 ||
      c === 34 ||
      c === 92 ||
      (c >= 0xd800 && c <= 0xdfff) ||
      (c >= 0x80 && c <= 0x9f) ||
      c === 0x2028 ||
      c === 0x2029 ||
      isBidiControl(c)
    )
      return escapeSeparators(JSON.stringify(text));
  }
  return `"${text}"`;
}

// Bidirectional formatting characters (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069) too: an agent or sub
// carrying an RTL override would otherwise display reordered in a terminal or viewer reading the trail.
const SEPARATORS = /[\u0080-\u009f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function isBidiControl(c: number): boolean {
  return c === 0x061c || c === 0x200e || c === 0x200f || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/** JSON text with U+2028, U+2029, C1 controls and bidi controls written as \uXXXX (they can only occur inside strings). */
export function escapeSeparators(json: string): string {
  SEPARATORS.lastIndex = 0;
  if (!SEPARATORS.test(json)) return json;
  SEPARATORS.lastIndex = 0;
  return json.replace(SEPARATORS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
