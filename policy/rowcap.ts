// The row cap's LIMIT rewrite: a top-level SELECT (or a cursor's query) gets a LIMIT no larger than the role's maxRows, by appending to its text or by deparsing.
import { deparseSync } from 'pgsql-deparser';
import type { AnyNode } from './analyze.ts';
import { parseStatements, type RawStmt } from './parser.ts';
import { plainSetConfigCalls } from './settings.ts';

/** Builds an A_Const integer node; 0 is `{ ival: {} }` exactly as the parser produces it. */
function intConst(n: number): AnyNode {
  return { A_Const: { ival: n === 0 ? {} : { ival: n } } };
}

/** The capped LIMIT for a top-level SELECT, or undefined when it needs no change. */
export function cappedLimit(sel: AnyNode, cap: number): { limitCount: AnyNode; limitOption: string } | undefined {
  if (sel.intoClause !== undefined) return undefined;
  const option = String(sel.limitOption ?? 'LIMIT_OPTION_DEFAULT');
  if (option === 'LIMIT_OPTION_WITH_TIES') return undefined; // the wire-level cap handles ties
  const count: AnyNode | undefined = sel.limitCount;
  if (count === undefined) return { limitCount: intConst(cap), limitOption: 'LIMIT_OPTION_COUNT' };
  const c = count.A_Const;
  if (c !== undefined) {
    if (c.isnull === true) return { limitCount: intConst(cap), limitOption: 'LIMIT_OPTION_COUNT' }; // LIMIT ALL / NULL
    if (c.ival !== undefined) {
      const v = Number(c.ival.ival ?? 0);
      return v <= cap ? undefined : { limitCount: intConst(cap), limitOption: 'LIMIT_OPTION_COUNT' };
    }
    if (c.fval !== undefined) {
      const v = Number(c.fval.fval);
      if (Number.isFinite(v) && v <= cap) return undefined;
      if (Number.isFinite(v)) return { limitCount: intConst(cap), limitOption: 'LIMIT_OPTION_COUNT' };
    }
  }
  // $n, expressions, subqueries: LEAST ignores NULL, so LIMIT NULL via a parameter is capped too.
  if (count.MinMaxExpr?.op === 'IS_LEAST') {
    const args: AnyNode[] = count.MinMaxExpr.args ?? [];
    if (args.some((x) => x?.A_Const?.ival !== undefined && Number(x.A_Const.ival.ival ?? 0) <= cap)) return undefined;
  }
  return {
    limitCount: { MinMaxExpr: { op: 'IS_LEAST', args: [count, intConst(cap)] } },
    limitOption: 'LIMIT_OPTION_COUNT',
  };
}

/** Byte-offset slicing: stmt_location / stmt_len count UTF-8 bytes. */
function sliceStatement(buf: Buffer, raw: RawStmt): string {
  const start = raw.stmt_location ?? 0;
  const len = raw.stmt_len ?? 0;
  return buf.subarray(start, len > 0 ? start + len : buf.length).toString('utf8');
}

/**
 * The SELECT a statement's row cap applies to, and the cap: a top-level SELECT gets `cap`
 * (maxRows + 1, so the wire counter sees truncation); a cursor's query gets maxRows exactly,
 * because FETCHes page through it and only a LIMIT inside the cursor bounds their total.
 */
export function cappable(
  stmt: AnyNode | undefined,
  cap: number,
): { sel: AnyNode; cap: number; wrap: (sel: AnyNode) => AnyNode } | undefined {
  // A plain SELECT set_config(…) returns one row, and the server's analysis must see it as written (settings.ts).
  if (stmt?.SelectStmt !== undefined && plainSetConfigCalls(stmt.SelectStmt) !== undefined) return undefined;
  if (stmt?.SelectStmt !== undefined) return { sel: stmt.SelectStmt, cap, wrap: (sel) => ({ SelectStmt: sel }) };
  const decl: AnyNode | undefined = stmt?.DeclareCursorStmt;
  const inner: AnyNode | undefined = decl?.query?.SelectStmt;
  if (decl !== undefined && inner !== undefined) {
    return {
      sel: inner,
      cap: Math.max(0, cap - 1),
      wrap: (sel) => ({ DeclareCursorStmt: { ...decl, query: { SelectStmt: sel } } }),
    };
  }
  return undefined;
}

export function rewriteForCap(
  sql: string,
  stmts: RawStmt[],
  cap: number,
): { sql: string; changed: number[] } | undefined {
  const pieces: string[] = [];
  const changed: number[] = [];
  let buf: Buffer | undefined;
  for (let i = 0; i < stmts.length; i++) {
    const raw = stmts[i];
    if (raw === undefined) return undefined;
    const target = cappable(raw.stmt as AnyNode | undefined, cap);
    const capped = target !== undefined ? cappedLimit(target.sel, target.cap) : undefined;
    if (target !== undefined && capped !== undefined) {
      // Shallow copy: the rest of the tree is shared, never mutated.
      const node = target.wrap({ ...target.sel, limitCount: capped.limitCount, limitOption: capped.limitOption });
      const text = deparseSync({ version: 0, stmts: [{ stmt: node }] } as never, { pretty: false });
      if (typeof text !== 'string' || text.trim() === '') return undefined;
      pieces.push(text);
      changed.push(i);
    } else {
      buf ??= Buffer.from(sql, 'utf8');
      pieces.push(sliceStatement(buf, raw).trim().replace(/;\s*$/, ''));
    }
  }
  if (changed.length === 0) return undefined;
  return { sql: pieces.join(';\n'), changed };
}

/**
 * The common case without deparsing: one top-level SELECT (or VALUES / set operation) with no LIMIT
 * gets `LIMIT cap` appended to its own text. The result is parsed again and accepted only if its tree
 * is the original tree exactly, apart from the new limit, so it needs no second policy check: same
 * relations, columns and functions by construction. (Appended after a newline so a trailing `--`
 * comment cannot swallow it.) Anything else returns undefined and takes the deparse path.
 */
export function spliceLimit(sql: string, stmts: RawStmt[], cap: number): string | undefined {
  if (stmts.length !== 1) return undefined;
  const raw = stmts[0];
  const sel: AnyNode | undefined = (raw?.stmt as AnyNode | undefined)?.SelectStmt;
  if (raw === undefined || sel === undefined || sel.limitCount !== undefined || sel.intoClause !== undefined)
    return undefined;
  if (cappable(raw.stmt as AnyNode, cap) === undefined) return undefined;
  if ((raw.stmt_location ?? 0) !== 0) return undefined;
  const text = sliceStatement(Buffer.from(sql, 'utf8'), raw).trimEnd();
  const candidate = `${text}\nLIMIT ${cap}`;
  const again = parseStatements(candidate);
  if (!again.ok || again.stmts.length !== 1) return undefined;
  const next: AnyNode | undefined = (again.stmts[0]?.stmt as AnyNode | undefined)?.SelectStmt;
  if (next === undefined || next.limitOption !== 'LIMIT_OPTION_COUNT') return undefined;
  // The parser adds a location to the new constant; compare the value itself.
  if (cap <= 0 || Number(next.limitCount?.A_Const?.ival?.ival) !== cap) return undefined;
  const strip = (n: AnyNode) => JSON.stringify({ ...n, limitCount: undefined, limitOption: undefined });
  return strip(next) === strip(sel) ? candidate : undefined;
}
