// The SQL text a statement event records: as sent or with its literals taken out ('normalized'), cut to a bound before any pass over it.
import { normalizeSync } from 'libpg-query';
import { replaceLiterals, scanLiterals } from '../../policy/literals.ts';
import { scanTokens } from '../../policy/parser.ts';

export type AuditSqlMode = 'full' | 'normalized' | 'none';

/** Longest SQL text written per statement event; longer text is cut and `sqlTruncated` set. */
export const MAX_AUDIT_SQL = 16 * 1024;

/**
 * Longest SQL text normalised per statement event ('normalized' mode): longer text is cut to this *before* it is
 * normalised (and `sqlTruncated` set), because the normaliser's passes (the server's normaliser in WASM, the scanner)
 * cost about 1 ms per KiB on a hostile text and grow the WASM memory for good; a 1 MiB statement used to stall the
 * event loop for seconds here. 8 KiB is policy/literals.ts's MAX_SHAPE_LENGTH, so the cut text still takes the
 * exact JS fast path when it can.
 */
export const MAX_NORMALIZED_SQL_INPUT = 8 * 1024;

// Token types of PostgreSQL's scanner (gram.h) that are literal values; names first, numbers as a fallback
// because libpg-query reports some (BCONST, XCONST, USCONST) as UNKNOWN by name.
const LITERAL_TOKEN_NAMES = new Set(['SCONST', 'USCONST', 'BCONST', 'XCONST', 'ICONST', 'FCONST']);
const LITERAL_TOKEN_TYPES = new Set([260, 261, 262, 263, 264, 266]);
const COMMENT_TOKEN_NAMES = new Set(['SQL_COMMENT', 'C_COMMENT']);
// Any quoted-string form, whatever the scanner calls it: '…', E'…', B'…', X'…', N'…', U&'…', $tag$…$tag$.
const QUOTED_LITERAL = /^(?:[eEbBxXnN]|[uU]&)?'|^\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$/;

/**
 * The SQL text a statement event records, cut *before* any pass over it: at most MAX_NORMALIZED_SQL_INPUT characters
 * are normalised ('normalized') and at most MAX_AUDIT_SQL written. A cut text is normalised as a prefix of the
 * statement: the scanner reads a prefix exactly as it reads the whole text up to the cut, so every complete token is
 * classified as in the whole; only the last one can be cut short, and a cut literal, quoted identifier or comment does
 * not scan. Then the cut moves back to before the last quote, dollar sign or comment start and tries again, a few
 * times, and writes a placeholder rather than anything the normaliser has not accepted.
 */
export function auditSqlText(sql: string, mode: 'full' | 'normalized'): { text: string; truncated: boolean } {
  if (mode === 'full')
    return sql.length > MAX_AUDIT_SQL
      ? { text: sql.slice(0, MAX_AUDIT_SQL), truncated: true }
      : { text: sql, truncated: false };
  if (sql.length <= MAX_NORMALIZED_SQL_INPUT) {
    const text = normalizeSql(sql);
    return text.length > MAX_AUDIT_SQL
      ? { text: text.slice(0, MAX_AUDIT_SQL), truncated: true }
      : { text, truncated: false };
  }
  let prefix = sql.slice(0, MAX_NORMALIZED_SQL_INPUT);
  // A cut between the two halves of a surrogate pair would leave a lone half.
  if (/[\ud800-\udbff]$/.test(prefix)) prefix = prefix.slice(0, -1);
  for (let attempt = 0; attempt < 4 && prefix.length > 0; attempt++) {
    const text = tryNormalize(prefix);
    if (text !== undefined) return { text: text.slice(0, MAX_AUDIT_SQL), truncated: true };
    const back = Math.max(
      prefix.lastIndexOf("'"),
      prefix.lastIndexOf('"'),
      prefix.lastIndexOf('$'),
      prefix.lastIndexOf('/*'),
      prefix.lastIndexOf('--'),
    );
    if (back < 0) break;
    prefix = prefix.slice(0, back);
  }
  return {
    text: `[statement of ${Buffer.byteLength(sql)} bytes; its first ${MAX_NORMALIZED_SQL_INPUT} characters could not be normalised]`,
    truncated: true,
  };
}

/**
 * SQL with every literal replaced by `?` and comments dropped, rebuilt from scanner tokens only (whitespace between
 * tokens becomes one space), so nothing the scanner did not classify can leak. Text the scanner rejects (an
 * unterminated quote) is not written at all.
 */
export function normalizeSql(sql: string): string {
  return tryNormalize(sql) ?? `[unscannable statement, ${Buffer.byteLength(sql)} bytes]`;
}

/** normalizeSql(), or undefined when the scanner cannot read the text. */
function tryNormalize(sql: string): string | undefined {
  // Fastest path: the statement has only the plain lexical forms policy/literals.ts handles exactly (the common
  // case: the decision cache has just scanned it); its constants become $n as the server's normalizer does, and
  // a statement without constants (only $n parameters) is written as it is.
  const shape = scanLiterals(sql);
  if (shape !== undefined) return tidy(shape.spans.length === 0 ? sql : replaceLiterals(sql, shape));
  // Fast path: the server's own normalizer (pg_stat_statements style, constants become $n), in C.
  let quick: string | undefined;
  try {
    quick = normalizeSync(sql);
  } catch {
    quick = undefined;
  }
  if (quick !== undefined && isCleanNormalization(quick)) return tidy(quick);
  return normalizeByTokens(sql);
}

/** Whitespace runs become one space, no space at either end, no final semicolon (regular expressions only when needed). */
function tidy(text: string): string {
  let t = text;
  if (needsCollapse(t)) t = t.replace(/\s+/g, ' ');
  if (t.charCodeAt(0) === 32 || t.charCodeAt(t.length - 1) === 32) t = t.trim();
  return t.charCodeAt(t.length - 1) === 59 ? t.slice(0, -1) : t;
}

/**
 * Whether `t` holds two whitespace characters in a row or any whitespace but a space: what `/\s\s|[\t\n\r\f\v]/`
 * tests, by hand, because V8 ran that expression through its slow runtime path on every statement.
 */
export function needsCollapse(t: string): boolean {
  let previous = false;
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    let space = c === 32;
    if (!space) {
      if (c >= 9 && c <= 13) return true;
      // The rest of \s: no-break and typographic spaces, separators, the byte-order mark.
      space =
        c >= 0xa0 &&
        (c === 0xa0 ||
          c === 0x1680 ||
          (c >= 0x2000 && c <= 0x200a) ||
          c === 0x2028 ||
          c === 0x2029 ||
          c === 0x202f ||
          c === 0x205f ||
          c === 0x3000 ||
          c === 0xfeff);
    }
    if (space && previous) return true;
    previous = space;
  }
  return false;
}

/**
 * The normalizer keeps comments (which may hold data) and returns some scanner errors as if they were
 * results ("unterminated quoted string at or near \"'…\""). Its output is used only when it cannot be
 * either: no comment markers, no quote of any kind left, no dollar quote, no error phrasing.
 */
function isCleanNormalization(text: string): boolean {
  return (
    !text.includes('--') &&
    !text.includes('/*') &&
    !text.includes("'") &&
    !/\$\$|\$[A-Za-z_][A-Za-z_0-9]*\$/.test(text) &&
    !text.includes(' at or near ') &&
    !text.includes('at end of input')
  );
}

/**
 * Rebuilds the statement from scanner tokens: literals become `?`, comments are dropped; undefined when it does not scan.
 * The policy parser's scanTokens, not libpg-query's scanSync: scanSync fails on any raw control byte (it copies them
 * into its JSON), so a statement with one in a comment, a dollar quote or an identifier was audited as an unscannable
 * placeholder, its text lost, although the policy parser had read it (e90df77); the two now read the same tokens.
 */
function normalizeByTokens(sql: string): string | undefined {
  const tokens = scanTokens(sql);
  if (tokens === undefined) return undefined;
  let out = '';
  let prevEnd = 0;
  for (const t of tokens) {
    if (COMMENT_TOKEN_NAMES.has(t.tokenName)) {
      prevEnd = t.end;
      if (out.length > 0 && !out.endsWith(' ')) out += ' ';
      continue;
    }
    if (t.start > prevEnd && out.length > 0 && !out.endsWith(' ')) out += ' ';
    const literal =
      LITERAL_TOKEN_NAMES.has(t.tokenName) || LITERAL_TOKEN_TYPES.has(t.tokenType) || QUOTED_LITERAL.test(t.text);
    // Offsets are UTF-8 byte positions, so the token's own text is used, never a slice of the JS string.
    out += literal ? '?' : t.text;
    prevEnd = t.end;
  }
  return out.trimEnd();
}
