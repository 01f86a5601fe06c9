// Which texts the upstream server must analyse for a statement pgwarden allowed, cut from the client's own text with the real scanner's offsets.
//
// A statement is sent for analysis in the form whose analysis covers what it will run:
//   - SELECT/INSERT/UPDATE/DELETE/MERGE, EXPLAIN and DECLARE … CURSOR: the statement itself (parse analysis
//     of EXPLAIN and DECLARE transforms the inner query);
//   - PREPARE name (types) AS query: the query, with the declared types resolved by the server as PREPARE would;
//   - COPY (query) TO: the inner query, cut at the parentheses the scanner found;
//   - COPY relation: a SELECT (TO) or INSERT (FROM) of the named relation and columns, built from the
//     parser's identifiers, so the server resolves the name;
//   - EXECUTE with arguments: `SELECT <arguments>`, the argument list cut at its parentheses;
//   - scoped DDL, LOCK, ANALYZE/VACUUM: the queries their bodies and expressions amount to, and the relations they
//     name (policy/ddl.ts utilityQueries; the same texts pgwarden's own analysis judged);
//   - anything else (SET, SHOW, transaction control, FETCH, DROP, …) touches no relation or function the server
//     would resolve differently and is decided by pgwarden alone.
import { parseStatements, scanTokens, type RawStmt } from './parser.ts';
import { quoteIdent } from '../lib/ident.ts';
import { utilityQueries, UTILITY_ANALYSED_KINDS, type NamedNeed } from './ddl.ts';

export interface AnalysisText {
  /** Sent as a Parse message; never bound or executed. */
  text: string;
  /** Parameter type OIDs for the Parse message (the client's own, for the extended protocol). */
  paramTypes: readonly number[];
  /** PREPARE's declared parameter types, as written; the server resolves them to OIDs as PREPARE would. */
  paramTypeNames?: readonly string[];
  /** Statement kind, for messages. */
  kind: string;
  /** The analysed INSERT stands for COPY FROM. */
  copyFrom: boolean;
  /** Characters before `text` in the client's string, when `text` is cut from it unchanged (to map error positions). */
  clientOffset?: number;
  /** The relations `text` names are judged by this need (LOCK, ANALYZE, VACUUM), not as reads. */
  named?: NamedNeed;
  /** Index of the top-level statement of the analysed text this one stands for (texts come in statement order). */
  statement?: number;
}

export type AnalysisPlan = { ok: true; texts: AnalysisText[] } | { ok: false; why: string };

/** Kinds analysed as they stand. */
const AS_IS = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt', 'DeclareCursorStmt']);

/** Kinds that need no server analysis. */
const LOCAL_ONLY = new Set([
  'VariableSetStmt',
  'VariableShowStmt',
  'TransactionStmt',
  'FetchStmt',
  'ClosePortalStmt',
  'DeallocateStmt',
  'DiscardStmt',
  'ListenStmt',
  'UnlistenStmt',
  'NotifyStmt',
  'CheckPointStmt',
  'LoadStmt',
  'TruncateStmt',
  'ConstraintsSetStmt',
  'DoStmt',
  'RefreshMatViewStmt',
  'CreateSeqStmt',
  'AlterSeqStmt',
  'RenameStmt',
  'DropStmt',
  'CommentStmt',
  'CreateEnumStmt',
  'AlterEnumStmt',
  'CreateSchemaStmt',
]);

function byteSlice(buf: Buffer, start: number, end: number): string {
  return buf.subarray(start, end).toString('utf8');
}

/** Bytes of the statement's own text within the query string. */
function stmtSpan(s: RawStmt, total: number): [number, number] {
  const start = s.stmt_location ?? 0;
  const len = s.stmt_len ?? 0;
  return [start, len > 0 ? start + len : total];
}

interface Tok {
  start: number;
  end: number;
  text: string;
}

/** The scanner's tokens within [from, to), with their text; undefined when the text does not lex. */
function tokensIn(sql: string, buf: Buffer, from: number, to: number): Tok[] | undefined {
  const tokens = scanTokens(sql);
  if (tokens === undefined) return undefined;
  return tokens
    .filter((t) => t.start >= from && t.end <= to)
    .map((t) => ({ start: t.start, end: t.end, text: buf.subarray(t.start, t.end).toString('utf8') }));
}

/** Index of the `)` matching the `(` at `open`, or -1. */
function matching(toks: readonly Tok[], open: number): number {
  let depth = 0;
  for (let i = open; i < toks.length; i++) {
    const t = (toks[i] as Tok).text;
    if (t === '(') depth++;
    else if (t === ')' && --depth === 0) return i;
  }
  return -1;
}

/** The text between the first `(` at or after `from` and its matching `)`, by scanner tokens (so strings and comments cannot fool it). */
function parenthesised(sql: string, buf: Buffer, from: number, to: number): string | undefined {
  const toks = tokensIn(sql, buf, from, to);
  if (toks === undefined) return undefined;
  const open = toks.findIndex((t) => t.text === '(');
  if (open < 0) return undefined;
  const close = matching(toks, open);
  if (close < 0) return undefined;
  return byteSlice(buf, (toks[open] as Tok).end, (toks[close] as Tok).start);
}

/** `PREPARE name [(type, …)] AS query`: the declared type texts and the query text. */
function prepareParts(
  sql: string,
  buf: Buffer,
  from: number,
  to: number,
): { types: string[]; query: string } | undefined {
  const toks = tokensIn(sql, buf, from, to);
  if (toks === undefined || toks.length < 4 || toks[0]?.text.toLowerCase() !== 'prepare') return undefined;
  let i = 2; // after PREPARE and the name
  const types: string[] = [];
  if (toks[i]?.text === '(') {
    const close = matching(toks, i);
    if (close < 0) return undefined;
    let depth = 0;
    let start = (toks[i] as Tok).end;
    for (let k = i + 1; k < close; k++) {
      const t = toks[k] as Tok;
      if (t.text === '(' || t.text === '[') depth++;
      else if (t.text === ')' || t.text === ']') depth--;
      else if (t.text === ',' && depth === 0) {
        types.push(byteSlice(buf, start, t.start).trim());
        start = t.end;
      }
    }
    types.push(byteSlice(buf, start, (toks[close] as Tok).start).trim());
    i = close + 1;
  }
  const as = toks[i];
  if (as === undefined || as.text.toLowerCase() !== 'as' || toks[i + 1] === undefined) return undefined;
  return { types, query: byteSlice(buf, (toks[i + 1] as Tok).start, to) };
}

/** `EXPLAIN [(options) | ANALYZE [VERBOSE] | VERBOSE] statement`: the statement's start. */
function explainedStart(sql: string, buf: Buffer, from: number, to: number): number | undefined {
  const toks = tokensIn(sql, buf, from, to);
  if (toks === undefined || toks[0]?.text.toLowerCase() !== 'explain') return undefined;
  let i = 1;
  if (toks[i]?.text === '(') {
    const close = matching(toks, i);
    if (close < 0) return undefined;
    i = close + 1;
  } else {
    const w = () => toks[i]?.text.toLowerCase();
    if (w() === 'analyze' || w() === 'analyse') i++;
    if (w() === 'verbose') i++;
  }
  return toks[i]?.start;
}

function qualified(rv: Record<string, unknown>): string | undefined {
  const rel = rv.relname;
  if (typeof rel !== 'string') return undefined;
  if (rv.catalogname !== undefined) return undefined;
  const schema = rv.schemaname;
  return `${rv.inh === false ? 'ONLY ' : ''}${typeof schema === 'string' ? `${quoteIdent(schema)}.` : ''}${quoteIdent(rel)}`;
}

function columnList(attlist: unknown): string[] | undefined {
  if (attlist === undefined) return [];
  if (!Array.isArray(attlist)) return undefined;
  const out: string[] = [];
  for (const a of attlist) {
    const s = (a as { String?: { sval?: unknown } })?.String?.sval;
    if (typeof s !== 'string') return undefined;
    out.push(quoteIdent(s));
  }
  return out;
}

/**
 * The analysis texts for `sql`, or why it cannot be planned (the caller denies). `paramTypes` are the
 * Parse message's; simple-protocol statements have none.
 */
export function planServerAnalysis(sql: string, paramTypes: readonly number[], depth = 0): AnalysisPlan {
  const parsed = parseStatements(sql);
  if (!parsed.ok) return { ok: false, why: parsed.message };
  const buf = Buffer.from(sql, 'utf8');
  const texts: AnalysisText[] = [];
  // Each text is marked with its statement's index once the statement is done (a statement makes zero or more texts).
  let marked = 0;
  const mark = (index: number): void => {
    for (; marked < texts.length; marked++) (texts[marked] as AnalysisText).statement = index;
  };
  for (const [index, s] of parsed.stmts.entries()) {
    mark(index - 1);
    const node = s.stmt as Record<string, Record<string, unknown>> | undefined;
    const kind = node === undefined ? undefined : Object.keys(node)[0];
    if (node === undefined || kind === undefined) return { ok: false, why: 'a statement without a node' };
    const body = node[kind] ?? {};
    const [start, end] = stmtSpan(s, buf.length);
    const own = byteSlice(buf, start, end);
    if (AS_IS.has(kind)) {
      texts.push({ text: own, paramTypes, kind, copyFrom: false, clientOffset: byteSlice(buf, 0, start).length });
    } else if (kind === 'ExplainStmt') {
      // PostgreSQL 15 cannot print EXPLAIN's analysed statement, so the statement is analysed on its own.
      const at = explainedStart(sql, buf, start, end);
      if (at === undefined || depth > 0) return { ok: false, why: 'could not find the statement EXPLAIN explains' };
      const inner = planServerAnalysis(byteSlice(buf, at, end), paramTypes, depth + 1);
      if (!inner.ok) return inner;
      texts.push(
        ...inner.texts.map((t) => ({
          ...t,
          clientOffset: t.clientOffset === undefined ? undefined : t.clientOffset + byteSlice(buf, 0, at).length,
        })),
      );
    } else if (kind === 'PrepareStmt') {
      const parts = prepareParts(sql, buf, start, end);
      if (parts === undefined) return { ok: false, why: 'could not read the PREPARE statement' };
      texts.push({ text: parts.query, paramTypes: [], paramTypeNames: parts.types, kind, copyFrom: false });
    } else if (kind === 'CopyStmt') {
      if (body.query !== undefined) {
        const inner = parenthesised(sql, buf, start, end);
        if (inner === undefined) return { ok: false, why: 'could not find the query of COPY' };
        texts.push({ text: inner, paramTypes, kind, copyFrom: false });
        continue;
      }
      const rel = body.relation === undefined ? undefined : qualified(body.relation as Record<string, unknown>);
      const cols = columnList(body.attlist);
      if (rel === undefined || cols === undefined) return { ok: false, why: 'could not read the relation of COPY' };
      if (body.is_from === true) {
        if (body.whereClause !== undefined) return { ok: false, why: 'COPY FROM … WHERE is not analysed' };
        const target = rel.replace(/^ONLY /, '');
        // NULLs, not DEFAULTs: each is coerced to its column's type, so a domain column's CHECK is in the tree
        // (COPY converts every field through the column type's input, CHECK included). Without a column list,
        // `(NULL::t).*` is every column with its own type.
        texts.push({
          text:
            cols.length > 0
              ? `INSERT INTO ${target} (${cols.join(', ')}) VALUES (${cols.map(() => 'NULL').join(', ')})`
              : `INSERT INTO ${target} SELECT (NULL::${target}).*`,
          paramTypes: [],
          kind,
          copyFrom: true,
        });
      } else {
        // COPY t TO reads t alone, without its inheritance children.
        const only = rel.startsWith('ONLY ') ? rel : `ONLY ${rel}`;
        texts.push({
          text: `SELECT ${cols.length > 0 ? cols.join(', ') : '*'} FROM ${only}`,
          paramTypes: [],
          kind,
          copyFrom: false,
        });
      }
    } else if (kind === 'ExecuteStmt') {
      if (body.params === undefined) continue;
      const args = parenthesised(sql, buf, start, end);
      if (args === undefined) return { ok: false, why: 'could not find the arguments of EXECUTE' };
      texts.push({ text: `SELECT ${args}`, paramTypes, kind, copyFrom: false });
    } else if (UTILITY_ANALYSED_KINDS.has(kind)) {
      const u = utilityQueries(kind, body as Record<string, unknown>);
      if (!u.ok) return { ok: false, why: u.why };
      for (const q of u.queries)
        texts.push({
          text: q.text,
          paramTypes: [],
          kind,
          copyFrom: false,
          ...(q.named !== undefined ? { named: q.named } : {}),
        });
    } else if (!LOCAL_ONLY.has(kind)) {
      return { ok: false, why: `${kind} is not analysed by the server` };
    }
  }
  mark(parsed.stmts.length - 1);
  return { ok: true, texts };
}
