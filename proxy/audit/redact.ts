// Keeping secrets out of the audit trail: the keys pino blanks, and JWT-looking strings replaced wherever they occur (even inside SQL text).

/** Keys pino blanks wherever they appear at the top level or one level down. */
export const AUDIT_REDACT_PATHS = [
  'password',
  'token',
  'secret',
  'authorization',
  '*.password',
  '*.token',
  '*.secret',
  '*.authorization',
];

// Three base64url segments whose header starts with '{"' (eyJ): a JWS compact token.
const JWT_LIKE = /eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g;

/** The text with JWT-looking runs replaced; the regular expression runs only when 'eyJ' occurs. */
export function scrubText(text: string): string {
  return text.includes('eyJ') ? text.replace(JWT_LIKE, '[redacted-jwt]') : text;
}

/** True when any string at any depth contains the start of a base64url JSON header ('eyJ'); allocates nothing. */
export function mayHoldJwt(value: unknown): boolean {
  if (typeof value === 'string') return value.includes('eyJ');
  if (Array.isArray(value)) return value.some(mayHoldJwt);
  if (typeof value === 'object' && value !== null) {
    for (const k in value) if (mayHoldJwt((value as Record<string, unknown>)[k])) return true;
  }
  return false;
}

/** Replaces JWT-looking strings in every string field, at any depth (defence in depth beside `redact`). */
export function scrub(value: unknown): unknown {
  if (typeof value === 'string') return scrubText(value);
  if (Array.isArray(value)) return value.map(scrub);
  if (typeof value === 'object' && value !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = scrub(v);
    return out;
  }
  return value;
}
