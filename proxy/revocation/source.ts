// What every revocation source (file, table) shares: the source interface and its change events, entry validation, combining sources, and the FATAL a revoked session gets.
import type { Identity } from '../auth/jwt.ts';
import { ProxyError } from '../../lib/errors.ts';
import { errorMessage } from '../../lib/error-message.ts';
import { KEYS, type ChangeList, type RevocationEntry } from './entry-index.ts';

export type RevocationLogLevel = 'info' | 'warn' | 'error';
export type RevocationLog = (level: RevocationLogLevel, msg: string, fields?: object) => void;

export interface RevocationChange {
  source: 'file' | 'table';
  /** Identifiers revoked after the change (expired ones included until they are pruned). */
  entries: number;
  /** What was added or now revokes differently (at most MAX_LISTED_CHANGES; `addedCount` gives the total when more). */
  added: RevocationEntry[];
  removed: RevocationEntry[];
  addedCount?: number;
  removedCount?: number;
}

export type RevocationListener = (change: RevocationChange) => void;

/** One read of a source, for metrics: a full read, or only what changed since the last one. */
export interface RevocationReadInfo {
  source: 'file' | 'table';
  kind: 'full' | 'incremental';
  ok: boolean;
  ms: number;
}

/** A source's state for metrics and readiness. */
export interface RevocationHealth {
  source: 'file' | 'table';
  /** Table: the listener connection is up. File: the last read succeeded (an invalid or missing file keeps the old list). */
  up: boolean;
  /** Since when it has been down (ms since the epoch); undefined while up. */
  downSince: number | undefined;
  /** Identifiers revoked now. */
  entries: number;
  /** Last successful read (ms since the epoch). */
  lastReadAt: number | undefined;
  /** Table: NOTIFYs received since open. */
  notifications?: number;
}

/** What the proxy needs from any revocation source (file, table, or several combined). */
export interface RevocationSource {
  match(id: Identity, now?: number): { reason: string } | undefined;
  onChange(listener: RevocationListener): () => void;
  close(): void | Promise<void>;
  health?(): RevocationHealth;
}

const ALLOWED_FIELDS = new Set(['jti', 'sub', 'agent', 'reason', 'expiresAt']);
/** Longest reason shown to a refused client and written to the log; a longer one is cut (the entry still revokes). */
export const MAX_REASON = 1024;

/** Validates one entry; returns the entry in canonical form or the problems with it. */
export function validateEntry(
  raw: unknown,
  where = 'entry',
): { ok: true; entry: RevocationEntry } | { ok: false; issues: string[] } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return { ok: false, issues: [`${where}: must be a mapping with one of jti, sub, agent`] };
  const issues: string[] = [];
  const obj = raw as Record<string, unknown>;
  for (const k of Object.keys(obj))
    if (!ALLOWED_FIELDS.has(k))
      issues.push(`${where}.${k}: unknown field (allowed: jti, sub, agent, reason, expiresAt)`);
  const keys = KEYS.filter((k) => obj[k] !== undefined && obj[k] !== null);
  if (keys.length !== 1)
    issues.push(
      `${where}: must have exactly one of jti, sub, agent (has ${keys.length === 0 ? 'none' : keys.join(', ')})`,
    );
  const entry: RevocationEntry = {};
  for (const k of KEYS) {
    const v = obj[k];
    if (v === undefined || v === null) continue;
    // Any length: whatever a token can carry can be revoked. Not a number: YAML reads `jti: 0x1F` as 31, and a
    // revocation of a different value than the operator wrote would never match; quoting it says what is meant.
    if (typeof v !== 'string' || v.length === 0)
      issues.push(`${where}.${k}: must be a non-empty string (quote it in YAML)`);
    else entry[k] = v;
  }
  const reason = reasonText(obj['reason']);
  if (reason !== undefined) entry.reason = reason;
  const exp = obj['expiresAt'];
  if (exp !== undefined && exp !== null) {
    // YAML reads an unquoted timestamp as a Date; accept both forms.
    const ms = exp instanceof Date ? exp.getTime() : typeof exp === 'string' ? Date.parse(exp) : Number.NaN;
    if (!Number.isFinite(ms))
      issues.push(`${where}.expiresAt: must be an ISO 8601 date-time (got ${JSON.stringify(exp)})`);
    else entry.expiresAt = new Date(ms).toISOString();
  }
  return issues.length > 0 ? { ok: false, issues } : { ok: true, entry };
}

/**
 * The reason as shown to a refused client: absent or empty means none (the default "jti revoked" is shown), a
 * non-string is written as text, and anything over MAX_REASON characters is cut. Never a reason to ignore an entry.
 */
export function reasonText(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  const text = typeof v === 'string' ? v : v instanceof Date ? v.toISOString() : (JSON.stringify(v) ?? String(v));
  if (text.trim().length === 0) return undefined;
  return text.length > MAX_REASON ? `${text.slice(0, MAX_REASON - 1)}…` : text;
}

/** Tells listeners about a change; one failing listener never stops the others. */
export function emitChange(
  listeners: Set<RevocationListener>,
  log: RevocationLog,
  source: 'file' | 'table',
  entries: number,
  added: ChangeList,
  removed: ChangeList,
): void {
  const change: RevocationChange = { source, entries, added: added.listed, removed: removed.listed };
  if (added.count > added.listed.length) change.addedCount = added.count;
  if (removed.count > removed.listed.length) change.removedCount = removed.count;
  for (const l of [...listeners]) {
    try {
      l(change);
    } catch (err) {
      log('error', 'revocation change listener failed', { error: errorMessage(err) });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers for the lead: combining sources and ending revoked sessions

/** One source over several (file + table): revoked if any says so; a change in any is a change. */
export function combineRevocations(...sources: RevocationSource[]): RevocationSource {
  return {
    match(id, now = Date.now()) {
      for (const s of sources) {
        const m = s.match(id, now);
        if (m) return m;
      }
      return undefined;
    },
    onChange(listener) {
      const offs = sources.map((s) => s.onChange(listener));
      return () => {
        for (const off of offs) off();
      };
    },
    async close() {
      await Promise.all(sources.map((s) => s.close()));
    },
  };
}

/** The FATAL sent to a live session whose token was revoked (57P01, like expiry). */
export function revokedSessionError(reason: string): ProxyError {
  return new ProxyError('ERR_SHUTDOWN', `terminating connection because its credential was revoked: ${reason}`, {
    hint: 'request a new token from your token issuer; this identity may not be allowed to reconnect',
    reason: 'credential_revoked',
  });
}
