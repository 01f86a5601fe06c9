// SQL text → RawStmt[] with PostgreSQL's own grammar (libpg-query WASM), failing closed and containing the parser's own failure modes.
//
// Containment of the WASM stack-overflow trap (see /work/shared/notes/parsers.md §5.7):
// libpg-query turns the raw parse tree into JSON with recursive C code on a fixed WASM stack. A tree
// nested deeper than roughly 7,000 nodes (e.g. `SELECT 1+1+…` with ~7,400 terms, 1,960 nested
// scalar subqueries, 4,200 nested function calls) overflows it: parseSync throws a RangeError, and
// after ~30 such traps the instance hangs or misbehaves. Measured on 18.1.5 (bison's own stack limit
// turns deeper *parenthesised* nesting into an ordinary "memory exhausted" SqlError first).
// Defence in three layers:
//   1. Hard size cap (`maxBytes`, default 1 MiB): bigger inputs are denied before any work. (And at most
//      `maxStatements`, 1,000, statements per text, checked after parsing: each one costs work downstream.)
//   2. Nesting pre-screen for inputs above `screenAboveBytes` (default 4 KiB). Below that size no
//      statement can come near the trap depth (the shallowest trap needs ~13 KB of text), so short
//      statements pay nothing. Above it, a cheap upper bound is computed in JS first (every
//      operator character and nesting keyword counted, parentheses weighted); only when that bound
//      exceeds `maxNestingEstimate` do we look closer: a small JS lexer's lower bound of the estimate first (over the
//      limit: denied without scanning; see lexicalNestingLowerBound), then the real scanner (scanSync) and a per-level
//      estimate of the tree depth (operator chains and set operations/joins at each parenthesis
//      level, plus a weight per open parenthesis). Inputs over the bound are denied as too complex.
//      The JS bound is always ≥ the scanner estimate, so skipping the scan never lets more through.
//   3. If parseSync still throws something that is not a SqlError (RangeError, WebAssembly
//      RuntimeError), the statement is denied, the trap counted, and the instance retired: a spare
//      instance (loaded at init) takes over synchronously and a new spare loads in the background.
//      A fresh instance is obtained by importing the library's ESM entry under a distinct URL
//      (`…/index.js?instance=N`), which gives a new module record and so a new WASM instance.
//      Retired instances cannot be unloaded, so replacements are capped; past the cap, and while
//      no healthy instance is available, every input is denied ('parser_unavailable').
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import type { RawStmt, ParseResult, ScanResult, ScanToken } from 'libpg-query';
import { isIdentCont, isIdentStart } from './literals.ts';
import { SqlState } from '../lib/sqlstate.ts';
import { errorMessage } from '../lib/error-message.ts';

export type { RawStmt, ScanToken };

export interface ParserLimits {
  /** Inputs longer than this many UTF-8 bytes are denied outright. */
  maxBytes: number;
  /** Inputs at or below this many bytes skip the nesting pre-screen. */
  screenAboveBytes: number;
  /** Upper bound on the estimated parse-tree nesting; above it the input is denied. */
  maxNestingEstimate: number;
  /** How many times a trapped instance may be replaced before the parser gives up (fail closed). */
  maxReplacements: number;
  /**
   * Statements one text may hold; more are denied as too large. Every statement is analysed, summarised, audited and
   * (when allowed) confirmed by the server one by one, so a Query of 70,000 `SELECT 1;` kept pgwarden busy for minutes.
   */
  maxStatements: number;
}

export const DEFAULT_PARSER_LIMITS: Readonly<ParserLimits> = Object.freeze({
  maxBytes: 1024 * 1024,
  screenAboveBytes: 4096,
  // Traps start at ~7,000 nesting levels; 2,000 leaves a 3.5× margin and is far above real SQL.
  maxNestingEstimate: 2000,
  maxReplacements: 8,
  maxStatements: 1000,
});

export type ParseFailureReason =
  | 'parse_error'
  | 'invalid_input'
  | 'statement_too_large'
  | 'statement_too_complex'
  | 'parser_trap'
  | 'parser_unavailable';

export type ParseOutcome =
  | { ok: true; stmts: RawStmt[] }
  | {
      ok: false;
      reason: ParseFailureReason;
      message: string;
      /**
       * Set when PostgreSQL's grammar itself rejected the text (a SqlError from the parser or its scanner): the
       * parser's own message and, when it reported one, the 1-based character (code point) position in `sql`,
       * exactly what PostgreSQL puts in the ErrorResponse. Absent for pgwarden's own refusals (size, nesting,
       * traps) and for failures of the library around the grammar.
       */
      syntax?: { message: string; position: number | undefined; sqlstate: string; hint: string | undefined };
    };

interface LibPgQuery {
  loadModule(): Promise<void>;
  parseSync(sql: string): ParseResult;
  scanSync(sql: string): ScanResult;
  SqlError: new (...args: never[]) => Error & { sqlDetails?: { cursorPosition?: number } };
}

interface Instance {
  lib: LibPgQuery;
  traps: number;
}

let limits: ParserLimits = { ...DEFAULT_PARSER_LIMITS };
let primary: Instance | undefined;
let spare: Instance | undefined;
let spareLoading: Promise<void> | undefined;
let instanceCounter = 0;
let replacements = 0;
let totalTraps = 0;
let esmEntry: string | undefined;
/** False in a decide worker: a worker whose parser traps is replaced whole, so it keeps no spare instance. */
let keepSpare = true;

/** A trapped instance may still be used for a couple more inputs while no spare is ready. */
const MAX_TRAPS_PER_INSTANCE = 3;

/** Locates the library's ESM entry (wasm/index.js) so fresh instances can be imported by URL. */
function resolveEsmEntry(): string | undefined {
  try {
    const require = createRequire(import.meta.url);
    const main = require.resolve('libpg-query');
    if (!/index\.c?js$/.test(main)) return undefined;
    return pathToFileURL(main.replace(/index\.c?js$/, 'index.js')).href;
  } catch {
    return undefined;
  }
}

async function loadInstance(): Promise<Instance> {
  let lib: LibPgQuery;
  if (esmEntry !== undefined) {
    instanceCounter += 1;
    lib = (await import(`${esmEntry}?instance=${instanceCounter}`)) as LibPgQuery;
  } else {
    lib = (await import('libpg-query')) as unknown as LibPgQuery;
  }
  await lib.loadModule();
  // Smoke test: an instance that cannot parse a trivial statement is not used.
  const probe = lib.parseSync('SELECT 1');
  if (probe.stmts?.length !== 1) throw new Error('libpg-query instance failed its self-test');
  return { lib, traps: 0 };
}

function startSpare(): void {
  if (!keepSpare) return;
  if (spare !== undefined || spareLoading !== undefined || esmEntry === undefined) return;
  if (replacements >= limits.maxReplacements) return;
  spareLoading = loadInstance()
    .then((inst) => {
      spare = inst;
    })
    .catch(() => {
      // No spare: a later trap leaves the parser unavailable (fail closed) rather than crashing.
    })
    .finally(() => {
      spareLoading = undefined;
    });
}

/**
 * Loads the WASM parser (and a spare instance, unless `opts.spare` is false); must finish before the first
 * parseStatements call.
 */
export async function initParser(overrides: Partial<ParserLimits> = {}, opts: { spare?: boolean } = {}): Promise<void> {
  limits = { ...DEFAULT_PARSER_LIMITS, ...overrides };
  keepSpare = opts.spare ?? true;
  if (primary !== undefined) return;
  esmEntry ??= resolveEsmEntry();
  try {
    primary = await loadInstance();
  } catch {
    // The query-string import is a convenience; fall back to the package entry (no replacement).
    esmEntry = undefined;
    primary = await loadInstance();
  }
  startSpare();
  if (spareLoading !== undefined) await spareLoading;
}

/** The limits in force (a decide worker starts its own parser with the same ones, so it decides alike). */
export function currentParserLimits(): Readonly<ParserLimits> {
  return { ...limits };
}

/** The longest text (UTF-16 units) handed to the WASM parser or scanner since this thread loaded it. */
let wasmInputHighWater = 0;

function noteWasmInput(sql: string): void {
  if (sql.length > wasmInputHighWater) wasmInputHighWater = sql.length;
}

/**
 * The longest text handed to the WASM parser or scanner so far: its memory's pages stay touched up to what that
 * input needed (a decide worker is replaced when this is large; a text refused before reaching WASM costs nothing).
 */
export function wasmInputHighWaterMark(): number {
  return wasmInputHighWater;
}

/** True once initParser has completed and a healthy instance is available. */
export function isParserReady(): boolean {
  return primary !== undefined && primary.traps < MAX_TRAPS_PER_INSTANCE;
}

/** Counters for metrics and health checks. */
export function parserStats(): { traps: number; replacements: number; ready: boolean; spareReady: boolean } {
  return { traps: totalTraps, replacements, ready: isParserReady(), spareReady: spare !== undefined };
}

function recordTrap(inst: Instance): void {
  totalTraps += 1;
  inst.traps += 1;
  if (inst !== primary) return;
  if (spare !== undefined && replacements < limits.maxReplacements) {
    primary = spare;
    spare = undefined;
    replacements += 1;
  }
  startSpare();
}

function usable(): Instance | undefined {
  if (primary === undefined || primary.traps >= MAX_TRAPS_PER_INSTANCE) return undefined;
  return primary;
}

/** UTF-8 length, computed only when the UTF-16 length alone cannot decide. */
function exceedsBytes(sql: string, max: number): boolean {
  if (sql.length > max) return true;
  if (sql.length * 3 <= max) return false;
  return Buffer.byteLength(sql, 'utf8') > max;
}

function byteLengthAbove(sql: string, threshold: number): boolean {
  if (sql.length > threshold) return true;
  if (sql.length * 3 <= threshold) return false;
  return Buffer.byteLength(sql, 'utf8') > threshold;
}

// Weights of the nesting estimate. An open parenthesis or bracket can start a scalar subquery
// (≈3.8 tree levels each at the trap point), CASE adds ≈3.7; operators and set operations add ≤ 2.
const PAREN_WEIGHT = 4;
const CASE_WEIGHT = 4;
const OPERATOR_CHARS = new Set('+-*/%^<>=~!@#&|`?:'.split('').map((c) => c.charCodeAt(0)));
/** Keywords that build left- or right-deep trees without parentheses. AND/OR are absent: Postgres flattens them. */
const NESTING_KEYWORDS = new Set([
  'UNION',
  'INTERSECT',
  'EXCEPT',
  'JOIN',
  'NOT',
  'IS',
  'ISNULL',
  'NOTNULL',
  'LIKE',
  'ILIKE',
  'SIMILAR',
  'BETWEEN',
  'COLLATE',
  'AT',
  'OVERLAPS',
  'IN',
  'WHEN',
]);
const NESTING_KEYWORD_RE =
  /\b(?:union|intersect|except|join|not|is|isnull|notnull|like|ilike|similar|between|collate|at|overlaps|in|when)\b/gi;
const CASE_RE = /\bcase\b/gi;
/** Keywords that do not reset the chain at a comma: set operations and joins chain across select lists. */
const CHAINING_KEYWORDS = new Set(['UNION', 'INTERSECT', 'EXCEPT', 'JOIN']);

/** Upper bound of the scanner-based estimate, from raw characters (counts inside strings and comments too). */
function cheapNestingBound(sql: string): number {
  let total = 0;
  for (let i = 0; i < sql.length; i++) {
    const c = sql.charCodeAt(i);
    if (c === 40 /* ( */ || c === 91 /* [ */) total += PAREN_WEIGHT;
    else if (OPERATOR_CHARS.has(c)) total += 1;
  }
  total += (sql.match(NESTING_KEYWORD_RE)?.length ?? 0) + CASE_WEIGHT * (sql.match(CASE_RE)?.length ?? 0);
  return total;
}

/**
 * Estimates the deepest parse-tree nesting from real scanner tokens: per parenthesis level, the
 * length of the current operator chain (reset at a comma, AND and OR) plus set operations and joins (never
 * reset), summed over the enclosing levels plus a weight per level.
 */
function scannedNestingEstimate(tokens: ScanToken[]): number {
  const chain: number[] = [0];
  const setops: number[] = [0];
  let enclosing = 0; // sum over enclosing levels, excluding the innermost
  let max = 0;
  for (const t of tokens) {
    const type = t.tokenType;
    let top = chain.length - 1;
    if (type === 40 || type === 91) {
      enclosing += (chain[top] ?? 0) + (setops[top] ?? 0) + PAREN_WEIGHT;
      chain.push(0);
      setops.push(0);
    } else if (type === 41 || type === 93) {
      if (chain.length > 1) {
        chain.pop();
        setops.pop();
        top = chain.length - 1;
        enclosing -= (chain[top] ?? 0) + (setops[top] ?? 0) + PAREN_WEIGHT;
      }
    } else if (type === 44 /* , */) {
      chain[top] = 0;
    } else if (type === 59 /* ; */) {
      chain.length = 1;
      setops.length = 1;
      chain[0] = 0;
      setops[0] = 0;
      enclosing = 0;
    } else if (t.keywordKind !== 0) {
      const kw = t.text.toUpperCase();
      if (CHAINING_KEYWORDS.has(kw)) setops[top] = (setops[top] ?? 0) + 1;
      // Postgres flattens AND/OR chains into one BoolExpr: each operand is a subtree of its own.
      else if (kw === 'AND' || kw === 'OR') chain[top] = 0;
      else if (kw === 'CASE') chain[top] = (chain[top] ?? 0) + CASE_WEIGHT;
      else if (NESTING_KEYWORDS.has(kw)) chain[top] = (chain[top] ?? 0) + 1;
    } else if (type < 256 ? OPERATOR_CHARS.has(type) : type >= 265 && type <= 274 && type !== 266 && type !== 267) {
      // Single-character operators, Op, TYPECAST, DOT_DOT, :=, =>, <=, >=, <> (not ICONST/PARAM).
      chain[top] = (chain[top] ?? 0) + 1;
    }
    top = chain.length - 1;
    const here = enclosing + (chain[top] ?? 0) + (setops[top] ?? 0);
    if (here > max) max = here;
  }
  return max;
}

/** PostgreSQL's operator characters (scan.l `op_chars`); ':' is a self character, not one of them. */
const PG_OP_CHARS = new Set('~!@#^&|`?+-*/%<>='.split('').map((c) => c.charCodeAt(0)));

function isPgSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 12 || c === 11;
}

/**
 * A lower bound of scannedNestingEstimate computed by a small JS lexer, without the real scanner, or undefined when
 * the text uses anything this lexer does not follow exactly (then the scanner decides).
 *
 * Why: the scanner (scanSync) costs seconds and up to ~1 GB of WASM memory on a 1 MiB hostile text, only to find a
 * nesting far beyond the limit. This lexer sees every token the estimate reacts to at least as the scanner does:
 * parentheses, brackets, commas and semicolons exactly; each run of operator characters, `:` and `::` as one counted
 * token (the scanner may split a run into several, each counted: more, never fewer); AND and OR reset a chain as
 * keywords do. It never counts what the scanner does not: the keywords the estimate counts are left out (fewer), and
 * it gives up (undefined) on everything whose tokenisation it does not know for certain: quotes with a prefix (E'',
 * B'', X'', N'', U&), backslashes in strings, dollar quotes, unterminated strings or comments, operator runs holding a
 * comment start, numbers glued to letters, and any character outside the plain grammar. So when this bound exceeds
 * the limit, the scanner's estimate does too, and the text is denied without scanning it.
 */
function lexicalNestingLowerBound(sql: string): number | undefined {
  const chain: number[] = [0];
  let enclosing = 0;
  let max = 0;
  const n = sql.length;
  let i = 0;
  const counted = () => {
    const top = chain.length - 1;
    chain[top] = (chain[top] ?? 0) + 1;
  };
  while (i < n) {
    const c = sql.charCodeAt(i);
    if (isPgSpace(c)) {
      i++;
      continue;
    }
    const next = i + 1 < n ? sql.charCodeAt(i + 1) : -1;
    if (c === 40 /* ( */ || c === 91 /* [ */) {
      enclosing += (chain[chain.length - 1] ?? 0) + PAREN_WEIGHT;
      chain.push(0);
      i++;
    } else if (c === 41 /* ) */ || c === 93 /* ] */) {
      if (chain.length > 1) {
        chain.pop();
        enclosing -= (chain[chain.length - 1] ?? 0) + PAREN_WEIGHT;
      }
      i++;
    } else if (c === 44 /* , */) {
      chain[chain.length - 1] = 0;
      i++;
    } else if (c === 59 /* ; */) {
      chain.length = 1;
      chain[0] = 0;
      enclosing = 0;
      i++;
    } else if (c === 45 /* - */ && next === 45) {
      // -- comment, to the end of the line.
      while (i < n && sql.charCodeAt(i) !== 10 && sql.charCodeAt(i) !== 13) i++;
    } else if (c === 47 /* / */ && next === 42 /* * */) {
      // /* comment */, nested as PostgreSQL nests them.
      let depth = 1;
      i += 2;
      while (depth > 0) {
        if (i + 1 >= n) return undefined;
        const a = sql.charCodeAt(i);
        const b = sql.charCodeAt(i + 1);
        if (a === 47 && b === 42) {
          depth++;
          i += 2;
        } else if (a === 42 && b === 47) {
          depth--;
          i += 2;
        } else i++;
      }
    } else if (PG_OP_CHARS.has(c)) {
      let j = i + 1;
      while (j < n && PG_OP_CHARS.has(sql.charCodeAt(j))) {
        const d = sql.charCodeAt(j);
        // A comment start inside the run ends the operator there: not followed here.
        if ((d === 45 && sql.charCodeAt(j - 1) === 45) || (d === 42 && sql.charCodeAt(j - 1) === 47)) return undefined;
        j++;
      }
      counted();
      i = j;
    } else if (c === 58 /* : */) {
      counted();
      i += next === 58 || next === 61 ? 2 : 1;
    } else if (c === 39 /* ' */) {
      // A plain string (standard_conforming_strings): '' stands for a quote; a backslash is given up on.
      let j = i + 1;
      for (;;) {
        if (j >= n) return undefined;
        const d = sql.charCodeAt(j);
        if (d === 92) return undefined;
        if (d === 39) {
          if (j + 1 < n && sql.charCodeAt(j + 1) === 39) {
            j += 2;
            continue;
          }
          break;
        }
        j++;
      }
      i = j + 1;
    } else if (c === 34 /* " */) {
      const j = sql.indexOf('"', i + 1);
      if (j < 0) return undefined;
      // "" inside a quoted identifier stands for a quote: the identifier goes on.
      i = j + 1;
      while (i < n && sql.charCodeAt(i) === 34) {
        const k = sql.indexOf('"', i + 1);
        if (k < 0) return undefined;
        i = k + 1;
      }
    } else if (c === 36 /* $ */) {
      // $n is a parameter; anything else starting with $ is a dollar quote.
      let j = i + 1;
      while (j < n && sql.charCodeAt(j) >= 48 && sql.charCodeAt(j) <= 57) j++;
      if (j === i + 1 || (j < n && isIdentCont(sql.charCodeAt(j)))) return undefined;
      i = j;
    } else if ((c >= 48 && c <= 57) || (c === 46 /* . */ && next >= 48 && next <= 57)) {
      let j = i;
      while (j < n && sql.charCodeAt(j) >= 48 && sql.charCodeAt(j) <= 57) j++;
      if (j < n && sql.charCodeAt(j) === 46) {
        if (j + 1 < n && sql.charCodeAt(j + 1) === 46) return undefined;
        j++;
        while (j < n && sql.charCodeAt(j) >= 48 && sql.charCodeAt(j) <= 57) j++;
      }
      if (j < n && (sql.charCodeAt(j) | 32) === 101 /* e */) {
        let k = j + 1;
        if (k < n && (sql.charCodeAt(k) === 43 || sql.charCodeAt(k) === 45)) k++;
        if (k >= n || sql.charCodeAt(k) < 48 || sql.charCodeAt(k) > 57) return undefined;
        while (k < n && sql.charCodeAt(k) >= 48 && sql.charCodeAt(k) <= 57) k++;
        j = k;
      }
      // 1abc, 0x1F, 1_000, 1.2.3: forms whose tokens differ between releases.
      if (j < n && (isIdentCont(sql.charCodeAt(j)) || sql.charCodeAt(j) === 46)) return undefined;
      i = j;
    } else if (isIdentStart(c)) {
      let j = i + 1;
      while (j < n && isIdentCont(sql.charCodeAt(j))) j++;
      // E'…', B'…', X'…', N'…' and U&'…' / U&"…" are one token of another kind.
      if (j < n && sql.charCodeAt(j) === 39) return undefined;
      if (
        j < n &&
        sql.charCodeAt(j) === 38 /* & */ &&
        j + 1 < n &&
        (sql.charCodeAt(j + 1) === 39 || sql.charCodeAt(j + 1) === 34)
      )
        return undefined;
      if (j - i === 3 ? /^and$/i.test(sql.slice(i, j)) : j - i === 2 && /^or$/i.test(sql.slice(i, j)))
        chain[chain.length - 1] = 0;
      i = j;
    } else if (c === 46 /* . */) {
      if (next === 46) return undefined;
      i++;
    } else {
      // Backslashes, braces, control characters: left to the scanner.
      return undefined;
    }
    const here = enclosing + (chain[chain.length - 1] ?? 0);
    if (here > max) max = here;
  }
  return max;
}

type Screen = { ok: true } | { ok: false; reason: ParseFailureReason; message: string };

/** C0 control characters scanSync copies raw into its JSON output, which then does not parse: all but tab, LF and CR. */
const RAW_CONTROL = /[\u0001-\u0008\u000b\u000c\u000e-\u001f]/;
const RAW_CONTROLS = /[\u0001-\u0008\u000b\u000c\u000e-\u001f]/g;

/**
 * scanSync's tokens for any text it can lex. A raw control character (in a text that parses, only inside a string, a
 * quoted identifier or a comment, where any other ordinary character lexes the same; form feed is whitespace, as a space
 * is) would break scanSync's JSON, so it is scanned as a space: one byte for one, so every token keeps its byte
 * offsets, and each token's text is cut again from the original.
 */
function scanReadable(lib: LibPgQuery, sql: string): ScanToken[] {
  if (!RAW_CONTROL.test(sql)) return lib.scanSync(sql).tokens;
  const tokens = lib.scanSync(sql.replace(RAW_CONTROLS, ' ')).tokens;
  const buf = Buffer.from(sql, 'utf8');
  return tokens.map((t) => ({ ...t, text: buf.subarray(t.start, t.end).toString('utf8') }));
}

function screen(sql: string, inst: Instance): Screen {
  if (exceedsBytes(sql, limits.maxBytes)) {
    return { ok: false, reason: 'statement_too_large', message: `statement text exceeds ${limits.maxBytes} bytes` };
  }
  if (!byteLengthAbove(sql, limits.screenAboveBytes)) return { ok: true };
  if (cheapNestingBound(sql) <= limits.maxNestingEstimate) return { ok: true };
  const lower = lexicalNestingLowerBound(sql);
  if (lower !== undefined && lower > limits.maxNestingEstimate) {
    return {
      ok: false,
      reason: 'statement_too_complex',
      message: `statement nesting estimate of at least ${lower} exceeds ${limits.maxNestingEstimate}`,
    };
  }
  let tokens: ScanToken[];
  try {
    noteWasmInput(sql);
    tokens = scanReadable(inst.lib, sql);
  } catch (err) {
    if (err instanceof RangeError || isWasmRuntimeError(err)) {
      recordTrap(inst);
      return { ok: false, reason: 'parser_trap', message: 'the SQL scanner failed on this input' };
    }
    // scanSync reports lexical errors (e.g. an unterminated string) as unreadable plain Errors (its own JSON fails):
    // the parser reports the same error properly. It cannot trap on such text: a lexical error ends the parse before
    // any tree is turned into JSON, and bison's own stack limit still applies.
    return { ok: true };
  }
  const estimate = scannedNestingEstimate(tokens);
  if (estimate > limits.maxNestingEstimate) {
    return {
      ok: false,
      reason: 'statement_too_complex',
      message: `statement nesting estimate ${estimate} exceeds ${limits.maxNestingEstimate}`,
    };
  }
  return { ok: true };
}

function isWasmRuntimeError(err: unknown): boolean {
  // WebAssembly.RuntimeError (traps such as `unreachable` or out-of-bounds memory); the WebAssembly
  // namespace is not in this project's lib typings, so it is recognised by name.
  return err instanceof Error && (err.constructor?.name === 'RuntimeError' || err.name === 'RuntimeError');
}

/**
 * The grammar's errors PostgreSQL raises with a SQLSTATE other than syntax_error (42601), by message (libpg-query
 * passes no SQLSTATE): an E'' string's bad \u escape (scan.l, 22025, with its hint) and the window frame checks of
 * gram.y (42P20). Everything else the raw parser raises for a SELECT-like text is 42601; DDL-only checks of gram.y
 * that use other codes (0A000 for some constraint options) are answered 42601.
 */
function grammarSqlstate(err: unknown, message: string): { sqlstate: string; hint: string | undefined } {
  const fn = (err as { sqlDetails?: { functionName?: unknown } }).sqlDetails?.functionName;
  if (message === 'invalid Unicode escape' && fn === 'core_yylex')
    return { sqlstate: SqlState.InvalidEscapeSequence, hint: 'Unicode escapes must be \\uXXXX or \\UXXXXXXXX.' };
  if (/^frame (start cannot be|end cannot be|starting from (current|following) row cannot )/.test(message))
    return { sqlstate: SqlState.WindowingError, hint: undefined };
  return { sqlstate: SqlState.SyntaxError, hint: undefined };
}

/** libpg-query's 0-based cursor position of a SqlError, or undefined when it has none. */
function cursorOf(err: unknown): number | undefined {
  const details = (err as { sqlDetails?: { cursorPosition?: unknown } }).sqlDetails;
  const pos = details?.cursorPosition;
  return typeof pos === 'number' && Number.isInteger(pos) && pos >= 0 ? pos : undefined;
}

/**
 * The 1-based character position PostgreSQL reports for a parse error of `sql`, or undefined when it reports none.
 * libpg-query passes PostgreSQL's cursorpos (1-based, counted in characters of the UTF-8 text, as the server counts
 * them) minus one, and maps "no position" (0) to 0 too. A 0 is told apart by parsing the text again behind one space,
 * which moves a real position by exactly one and leaves "none" at 0 (whitespace changes nothing else; only error
 * paths pay for it).
 */
function errorPosition(inst: Instance, sql: string, err: unknown): number | undefined {
  const pos = cursorOf(err);
  if (pos === undefined) return undefined;
  if (pos > 0) return pos + 1;
  try {
    inst.lib.parseSync(` ${sql}`);
  } catch (again) {
    return cursorOf(again) === 1 ? 1 : undefined;
  }
  return undefined;
}

/** True for text Postgres treats as an empty query (only whitespace); libpg-query throws on ''. */
function isBlank(sql: string): boolean {
  for (let i = 0; i < sql.length; i++) {
    const c = sql.charCodeAt(i);
    // Postgres scanner whitespace: space, \t, \n, \r, \f, \v.
    if (c !== 32 && c !== 9 && c !== 10 && c !== 13 && c !== 12 && c !== 11) return false;
  }
  return true;
}

/**
 * Parses every statement in `sql`. Never throws: any failure is a value, and callers deny on it.
 * Zero statements (blank, `;`, comment only) is `{ ok: true, stmts: [] }`.
 */
export function parseStatements(sql: string): ParseOutcome {
  try {
    if (typeof sql !== 'string')
      return { ok: false, reason: 'invalid_input', message: 'statement text is not a string' };
    // The wire layer rejects NUL too; the parser would silently stop at it (a statement hidden behind
    // a NUL would never be classified), so it is checked again here.
    if (sql.includes('\0'))
      return { ok: false, reason: 'invalid_input', message: 'statement text contains a NUL byte' };
    if (isBlank(sql)) return { ok: true, stmts: [] };
    const inst = usable();
    if (inst === undefined) {
      startSpare();
      return {
        ok: false,
        reason: 'parser_unavailable',
        message:
          primary === undefined
            ? 'the SQL parser is not initialised'
            : 'the SQL parser is unavailable after repeated failures',
      };
    }
    const screened = screen(sql, inst);
    if (!screened.ok) return screened;
    let result: ParseResult;
    try {
      noteWasmInput(sql);
      result = inst.lib.parseSync(sql);
    } catch (err) {
      if (err instanceof inst.lib.SqlError || (err instanceof Error && err.name === 'SqlError')) {
        const message = errorMessage(err);
        const own = grammarSqlstate(err, message);
        return {
          ok: false,
          reason: 'parse_error',
          message,
          syntax: { message, position: errorPosition(inst, sql, err), sqlstate: own.sqlstate, hint: own.hint },
        };
      }
      if (err instanceof RangeError || isWasmRuntimeError(err)) {
        recordTrap(inst);
        return { ok: false, reason: 'parser_trap', message: 'the SQL parser failed on this input' };
      }
      // Any other exception (a JSON error, an allocation failure) denies without retiring the instance.
      return { ok: false, reason: 'parse_error', message: errorMessage(err) };
    }
    const stmts = result?.stmts;
    if (!Array.isArray(stmts)) return { ok: true, stmts: [] };
    if (stmts.length > limits.maxStatements) {
      return {
        ok: false,
        reason: 'statement_too_large',
        message: `the text holds ${stmts.length} statements, more than the ${limits.maxStatements} one query may hold`,
      };
    }
    return { ok: true, stmts };
  } catch (err) {
    return { ok: false, reason: 'parse_error', message: errorMessage(err) };
  }
}

/** Fields that only record where something was written (byte offsets): they differ between a text and its restatement or rewrite. */
const POSITION_FIELDS = new Set([
  'location',
  'list_start',
  'list_end',
  'rexpr_list_start',
  'rexpr_list_end',
  'name_location',
  'stmt_location',
  'stmt_len',
]);

/** A parse tree as text without its positions, keys sorted: two pieces of SQL with the same canonical form are the same statement for PostgreSQL. */
export function canonicalTree(n: unknown): string {
  return JSON.stringify(n, (k, v: unknown) => {
    if (POSITION_FIELDS.has(k) && typeof v === 'number') return undefined;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(o)
          .sort()
          .map((key) => [key, o[key]]),
      );
    }
    return v;
  });
}

/**
 * Scanner tokens of `sql` (for cache-key normalisation), or undefined when the input is too large,
 * does not lex, or the parser is unavailable.
 */
export function scanTokens(sql: string): ScanToken[] | undefined {
  try {
    const inst = usable();
    if (inst === undefined || sql.includes('\0') || exceedsBytes(sql, limits.maxBytes)) return undefined;
    noteWasmInput(sql);
    return scanReadable(inst.lib, sql);
  } catch (err) {
    const inst = usable();
    if (inst !== undefined && (err instanceof RangeError || isWasmRuntimeError(err))) recordTrap(inst);
    return undefined;
  }
}

/** For tests: the nesting estimate of the pre-screen, scanner-based (undefined if the text does not lex). */
export function nestingEstimateForTest(sql: string): {
  cheap: number;
  scanned: number | undefined;
  lower: number | undefined;
} {
  const tokens = scanTokens(sql);
  return {
    cheap: cheapNestingBound(sql),
    scanned: tokens === undefined ? undefined : scannedNestingEstimate(tokens),
    lower: lexicalNestingLowerBound(sql),
  };
}

/** For tests: simulate a trap on the current instance (exercises the replacement path). */
export function simulateTrapForTest(): void {
  if (primary !== undefined) recordTrap(primary);
}

/** Waits for a background spare load, if any (tests). */
export async function spareSettledForTest(): Promise<void> {
  if (spareLoading !== undefined) await spareLoading;
}
