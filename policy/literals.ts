// A conservative scanner that finds the literal constants of short statements, so statements that differ only in those values share one cached decision.
//
// Why hand-written: the real scanner (libpg-query's scanSync) costs about 16 µs per pgbench statement, more than
// the decision it would save. This scanner walks the text once, accepts only the part of PostgreSQL's lexical
// grammar it fully understands (identifiers, quoted identifiers, plain numbers, plain '…' strings, $n parameters,
// operators and punctuation) and gives up on everything else: comments, dollar quotes, E'', B'', X'', N'', U&'',
// backslashes inside strings (standard_conforming_strings may be off), string continuation across newlines,
// PG 16's 0x / 1_000 numbers, numbers glued to identifiers (`1abc`: PG 14 read it as `1 AS abc`, 15 rejects it),
// `..`, `""`, precisions that change the tree (`float(24)`, `current_timestamp(3)`), control characters.
// Giving up is always safe: the statement is then cached by its exact text only.
//
// The key keeps every character outside the constants verbatim and puts a NUL (which no query text can contain:
// the wire format ends the text at the first NUL) and a class letter in place of each constant. Two texts with
// one key are therefore the same text apart from the contents of constants of the same class. For the statement
// kinds the decision cache shares (SELECT, INSERT, UPDATE, DELETE, MERGE) they parse to the same tree apart from
// those values (test/property/literals.test.ts checks this against the real parser); utility statements keep some
// values outside constant nodes (FETCH 5, COPY … TO 'file'), which is one reason the cache shares no other kind.
// Whether a decision may be shared under the key (it must not read a literal's value, e.g. LIMIT 10 or
// 'secret'::regclass) is the evaluation's call: EvaluationFacts.literalSensitive.

/** Longer texts are cached by exact text only: the key would cost more than it saves and such texts rarely repeat with new literals. */
export const MAX_SHAPE_LENGTH = 8192;

export interface LiteralShape {
  /** The text with each constant replaced by NUL + class: 'i' int4, 'l' int8, 'n' numeric, 's' string. */
  key: string;
  /** Start and end (exclusive) of each constant, in UTF-16 units: [s0, e0, s1, e1, …]. */
  spans: number[];
  /** Characters after the end of the last constant: identical in every text with this key. */
  tail: number;
  /** Highest $n parameter number in the text (0 if none). */
  maxParam: number;
}

const SPACE = 32;
const QUOTE = 39; // '
const DQUOTE = 34; // "
const DOLLAR = 36;
const DOT = 46;
const MINUS = 45;
const SLASH = 47;
const STAR = 42;
const AMP = 38;
const BACKSLASH = 92;
const LPAREN = 40;

/** Words whose parenthesised integer is a precision that changes the tree, not a constant node. */
const PRECISION_WORDS: ReadonlySet<string> = new Set([
  'float',
  'current_time',
  'current_timestamp',
  'localtime',
  'localtimestamp',
]);

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

/** PostgreSQL's ident_start: letters, underscore and any non-ASCII character. */
export function isIdentStart(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95 || c >= 128;
}

/** PostgreSQL's ident_cont: ident_start plus digits and `$`. */
export function isIdentCont(c: number): boolean {
  return isIdentStart(c) || isDigit(c) || c === DOLLAR;
}

/** PostgreSQL 15's whitespace: space, tab, newline, carriage return, form feed. */
function isSpace(c: number): boolean {
  return c === SPACE || c === 9 || c === 10 || c === 13 || c === 12;
}

/** Operator characters and punctuation (self tokens), which the key keeps verbatim. */
const PUNCT = new Uint8Array(128);
for (const ch of '()[],;:.+-*/%^<>=~!@#&|`?') PUNCT[ch.charCodeAt(0)] = 1;

const INT4_MAX = '2147483647';
const INT8_MAX = '9223372036854775807';

/** Class of an integer literal as PostgreSQL types it: int4, int8 if it does not fit, numeric beyond that. */
function integerClass(digits: string): string {
  let k = 0;
  while (k < digits.length - 1 && digits.charCodeAt(k) === 48) k++;
  const d = k === 0 ? digits : digits.slice(k);
  if (d.length < INT4_MAX.length || (d.length === INT4_MAX.length && d <= INT4_MAX)) return 'i';
  if (d.length < INT8_MAX.length || (d.length === INT8_MAX.length && d <= INT8_MAX)) return 'l';
  return 'n';
}

/**
 * The literal shape of `sql`, or undefined when the text holds no constant, is too long, or uses anything this
 * scanner does not handle exactly as PostgreSQL would.
 */
export function literalShape(sql: string): LiteralShape | undefined {
  const shape = scanLiterals(sql);
  return shape === undefined || shape.spans.length === 0 ? undefined : shape;
}

/**
 * Like literalShape, but a text this scanner reads completely and that holds no constant (an extended-protocol
 * statement with only $n parameters, say) has a shape with no spans rather than none.
 */
export function scanLiterals(sql: string): LiteralShape | undefined {
  // The decision cache and the audit trail ask about the same string one after the other.
  if (sql === memoSql) return memoShape;
  const shape = scan(sql);
  memoSql = sql;
  memoShape = shape;
  return shape;
}

let memoSql: string | undefined;
let memoShape: LiteralShape | undefined;

function scan(sql: string): LiteralShape | undefined {
  const n = sql.length;
  if (n === 0 || n > MAX_SHAPE_LENGTH) return undefined;
  let key = '';
  let last = 0;
  let maxParam = 0;
  const spans: number[] = [];
  // A string constant followed, across whitespace only, by another one is a continuation (if a newline separates
  // them) or an error: either way not something to key on.
  let afterString = false;
  // The last identifier, and whether `(` followed it: `float(24)` picks float4 or float8 by the value, and
  // `current_timestamp(3)` keeps its precision outside any constant node, so those integers are not mere values.
  let lastIdent = -1;
  let lastIdentEnd = -1;
  let parenAfterIdent = false;
  let i = 0;
  while (i < n) {
    // Set by the number and string branches: a constant of class `cls` ends at `end`.
    let cls: string;
    let end: number;
    const c = sql.charCodeAt(i);
    if (isSpace(c)) {
      i++;
      continue;
    }
    if (isIdentStart(c)) {
      let j = i + 1;
      while (j < n && isIdentCont(sql.charCodeAt(j))) j++;
      // E'…', B'…', X'…', N'…' and the like: prefixed strings with rules of their own.
      if (j < n && sql.charCodeAt(j) === QUOTE) return undefined;
      lastIdent = i;
      lastIdentEnd = j;
      parenAfterIdent = false;
      i = j;
      afterString = false;
      continue;
    }
    if (isDigit(c) || (c === DOT && i + 1 < n && isDigit(sql.charCodeAt(i + 1)))) {
      let j = i;
      while (j < n && isDigit(sql.charCodeAt(j))) j++;
      let float = false;
      if (j < n && sql.charCodeAt(j) === DOT) {
        // `1..5` is an integer followed by `..` in PostgreSQL's lexer: leave it alone.
        if (j + 1 < n && sql.charCodeAt(j + 1) === DOT) return undefined;
        float = true;
        j++;
        while (j < n && isDigit(sql.charCodeAt(j))) j++;
      }
      if (j < n && (sql.charCodeAt(j) | 32) === 101) {
        let k = j + 1;
        if (k < n && (sql.charCodeAt(k) === 43 || sql.charCodeAt(k) === MINUS)) k++;
        if (k >= n || !isDigit(sql.charCodeAt(k))) return undefined;
        float = true;
        j = k;
        while (j < n && isDigit(sql.charCodeAt(j))) j++;
      }
      // Junk after a number (`1abc`, `0x1F`, `1_000`, `1.2.3`) means different things in different releases.
      if (j < n && (isIdentCont(sql.charCodeAt(j)) || sql.charCodeAt(j) === DOT)) return undefined;
      if (parenAfterIdent && PRECISION_WORDS.has(sql.slice(lastIdent, lastIdentEnd).toLowerCase())) return undefined;
      cls = float ? 'n' : integerClass(sql.slice(i, j));
      end = j;
      afterString = false;
    } else if (c === QUOTE) {
      if (afterString) return undefined;
      const j = closingQuote(sql, i, QUOTE);
      if (j < 0) return undefined;
      cls = 's';
      end = j + 1;
      afterString = true;
    } else if (c === DQUOTE) {
      const j = closingQuote(sql, i, DQUOTE);
      // `""` is a lexical error (zero-length delimited identifier).
      if (j < 0 || j === i + 1) return undefined;
      i = j + 1;
      afterString = false;
      parenAfterIdent = false;
      lastIdent = -1;
      continue;
    } else if (c === DOLLAR) {
      // $n is a parameter; anything else starting with $ is a dollar quote.
      let j = i + 1;
      while (j < n && isDigit(sql.charCodeAt(j))) j++;
      if (j === i + 1 || j - i > 6) return undefined;
      if (j < n && isIdentCont(sql.charCodeAt(j))) return undefined;
      const p = Number(sql.slice(i + 1, j));
      if (p > maxParam) maxParam = p;
      i = j;
      afterString = false;
      parenAfterIdent = false;
      lastIdent = -1;
      continue;
    } else if (c < 128 && PUNCT[c] === 1) {
      const next = i + 1 < n ? sql.charCodeAt(i + 1) : 0;
      // Comments, and U&'…' / U&"…" (Unicode escapes with a UESCAPE clause of their own).
      if ((c === MINUS && next === MINUS) || (c === SLASH && next === STAR)) return undefined;
      if (c === AMP && (next === QUOTE || next === DQUOTE)) return undefined;
      // `..` is one token (DOT_DOT) in PostgreSQL's lexer, so `..5` is not `.` then `.5`.
      if (c === DOT && next === DOT) return undefined;
      parenAfterIdent = c === LPAREN && lastIdent >= 0;
      if (c !== LPAREN) lastIdent = -1;
      i++;
      afterString = false;
      continue;
    } else {
      // Control characters, backslashes, braces and anything else unexpected.
      return undefined;
    }
    // A constant at [i, end).
    key += sql.slice(last, i) + '\u0000' + cls;
    spans.push(i, end);
    last = end;
    i = end;
    parenAfterIdent = false;
    lastIdent = -1;
  }
  key += sql.slice(last);
  return { key, spans, tail: n - last, maxParam };
}

/**
 * Index of the quote that closes the one at `open` (a doubled quote stands for itself), or -1 when there is none
 * or the text holds something whose meaning depends on settings: a backslash in a string (standard_conforming_strings)
 * or a NUL.
 */
function closingQuote(sql: string, open: number, quote: number): number {
  const n = sql.length;
  for (let j = open + 1; j < n; j++) {
    const d = sql.charCodeAt(j);
    if (d === quote) {
      if (j + 1 < n && sql.charCodeAt(j + 1) === quote) {
        j++;
        continue;
      }
      return j;
    }
    if (d === 0 || (d === BACKSLASH && quote === QUOTE)) return -1;
  }
  return -1;
}

/**
 * The text with each constant replaced by a parameter symbol, numbered after the text's own parameters, as
 * PostgreSQL's query normalisation (pg_stat_statements) does: what the audit trail records in `normalized` mode.
 */
export function replaceLiterals(sql: string, shape: LiteralShape): string {
  let out = '';
  let last = 0;
  let p = shape.maxParam;
  const spans = shape.spans;
  for (let k = 0; k < spans.length; k += 2) {
    out += sql.slice(last, spans[k]) + '$' + String(++p);
    last = spans[k + 1] ?? last;
  }
  return out + sql.slice(last);
}
