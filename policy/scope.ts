// Scope discovery: pgwarden.scope, pgwarden.session and SHOW pgwarden.<name> rewritten into VALUES the server runs.
//
// An agent with no catalog access asks what its token allows with plain SQL. The statement's references to the two
// virtual relations (in FROM, joins included) become subqueries over typed literals computed from the role the
// session has now and the catalog snapshot, and `SHOW pgwarden.<name>` becomes a one-row SELECT; the rewritten text
// then goes through the normal decision and PostgreSQL's own analysis, so WHERE, ORDER BY, joins, both protocols and
// every driver work unchanged. The server sees only constants and current_setting() of pgwarden's own stamps.
import { narrowedColumns } from './narrow.ts';
import type { AnyNode } from './analyze.ts';
import { parseStatements, scanTokens, type RawStmt } from './parser.ts';
import type { CatalogRelation, CatalogSnapshot, RelationPattern, RolePolicy } from './types.ts';
import { quoteLiteral } from '../lib/ident.ts';
import { narrowingJson } from './narrow.ts';

/** The schema the virtual relations live in; a real schema of that name is shadowed for these two names only. */
const SCOPE_SCHEMA = 'pgwarden';

/** Columns of pgwarden.scope, one row per column of each relation the role may read or write. */
const SCOPE_COLUMNS = ['table_schema', 'table_name', 'column_name', 'data_type', 'readable', 'writable'] as const;

/** A text literal (lib/ident.ts quoteLiteral) typed as text. */
function sqlText(value: string): string {
  return `${quoteLiteral(value)}::text`;
}

/**
 * Columns of pgwarden.session (one row) and the expression each is computed with: identity from the settings pgwarden
 * stamped at login (so a cached rewrite serves every session of the role), limits from the role as the policy has it now.
 */
function sessionColumns(role: RolePolicy): [name: string, expr: string][] {
  return [
    ['role', sqlText(role.name)],
    ['sub', "current_setting('pgwarden.sub')"],
    ['agent', "nullif(current_setting('pgwarden.agent'), '')"],
    ['tenant', "nullif(current_setting('pgwarden.tenant'), '')"],
    ['read_only', role.readOnly ? 'true' : 'false'],
    ['max_rows', role.maxRows === undefined ? 'NULL::bigint' : `${Math.trunc(role.maxRows)}::bigint`],
    ['on_row_cap', sqlText(role.onRowCap)],
    ['statement_timeout', "current_setting('statement_timeout')"],
    ['expires_at', "nullif(current_setting('pgwarden.expires_at'), '')::timestamptz"],
    ['catalog', sqlText(role.catalog)],
    ['session_id', "current_setting('pgwarden.session_id')"],
    // A token narrowing (policy/narrow.ts): the limits above and pgwarden.scope are already the narrowed ones.
    ['narrowed', role.narrowing === undefined ? 'false' : 'true'],
    ['narrowing', role.narrowing === undefined ? 'NULL::text' : sqlText(JSON.stringify(narrowingJson(role.narrowing)))],
  ];
}

function matches(patterns: readonly RelationPattern[], rel: CatalogRelation): boolean {
  return patterns.some((p) => p.schema === rel.schema && (p.name === '*' || p.name === rel.name));
}

/** One row per column of each existing relation the role may read or write, denied columns left out, sorted. */
export function scopeRows(
  role: RolePolicy,
  catalog: CatalogSnapshot,
): { schema: string; relation: string; column: string; type: string; readable: boolean; writable: boolean }[] {
  const out: {
    schema: string;
    relation: string;
    column: string;
    type: string;
    readable: boolean;
    writable: boolean;
  }[] = [];
  const rels = [...catalog.relations.values()].sort((a, b) =>
    a.schema === b.schema ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.schema < b.schema ? -1 : 1,
  );
  for (const rel of rels) {
    const readable = matches(role.relations, rel);
    const writable = !role.readOnly && role.write !== undefined && matches(role.write.relations, rel);
    if (!readable && !writable) continue;
    const denied = role.deniedColumns.get(`${rel.schema}.${rel.name}`);
    // A narrowed token's column lists, its own and those of what it inherits from (policy/narrow.ts).
    const only = narrowedColumns(role, `${rel.schema}.${rel.name}`, rel);
    for (const c of rel.columns) {
      if (denied?.has(c.name) === true) continue;
      if (only !== undefined && !only.has(c.name)) continue;
      out.push({ schema: rel.schema, relation: rel.name, column: c.name, type: c.type, readable, writable });
    }
  }
  return out;
}

/** The subquery standing for pgwarden.scope: VALUES of typed literals, or the same columns and types with no row. */
function scopeSubquery(role: RolePolicy, catalog: CatalogSnapshot): string {
  const rows = scopeRows(role, catalog);
  if (rows.length === 0) {
    const types = ['text', 'text', 'text', 'text', 'boolean', 'boolean'];
    return `(SELECT ${SCOPE_COLUMNS.map((c, i) => `NULL::${types[i]} AS ${c}`).join(', ')} WHERE false)`;
  }
  const values = rows.map(
    (r) =>
      `(${sqlText(r.schema)}, ${sqlText(r.relation)}, ${sqlText(r.column)}, ${sqlText(r.type)}, ${r.readable}, ${r.writable})`,
  );
  return `(SELECT * FROM (VALUES ${values.join(', ')}) AS pgwarden_scope(${SCOPE_COLUMNS.join(', ')}))`;
}

/** The subquery standing for pgwarden.session: one row. */
function sessionSubquery(role: RolePolicy): string {
  return `(SELECT ${sessionColumns(role)
    .map(([n, e]) => `${e} AS ${n}`)
    .join(', ')})`;
}

/** One replacement of bytes [start, end) of the text. */
interface Splice {
  start: number;
  end: number;
  text: string;
}

export type ScopeRewrite = { ok: true; sql: string } | { ok: false; why: string; tooLarge?: true };

/** A scanned identifier's value as the parser reads it (unquoted: lower-cased), or undefined for U&"…" and the like. */
function identValue(text: string): string | undefined {
  if (text.startsWith('"') && text.endsWith('"') && text.length >= 2) return text.slice(1, -1).replaceAll('""', '"');
  if (/^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*$/.test(text)) return text.toLowerCase();
  return undefined;
}

/**
 * Where the name `pgwarden.<relname>` written at byte `loc` ends: its three tokens (comments between them skipped)
 * must read back as exactly that name, else undefined (then the statement is refused rather than guessed at).
 */
function nameEnd(buf: Buffer, loc: number, relname: string): number | undefined {
  const tokens = scanTokens(buf.subarray(loc).toString('utf8'));
  if (tokens === undefined) return undefined;
  const words = tokens.filter((t) => t.tokenName !== 'C_COMMENT' && t.tokenName !== 'SQL_COMMENT').slice(0, 3);
  const [a, dot, b] = words;
  if (a === undefined || dot === undefined || b === undefined) return undefined;
  if (a.start !== 0 || identValue(a.text) !== SCOPE_SCHEMA || dot.text !== '.' || identValue(b.text) !== relname)
    return undefined;
  return loc + b.end;
}

/** Calls `visit` for each RangeVar in a FROM position (a fromClause item or either side of a join) under `node`. */
function fromRangeVars(node: unknown, visit: (rv: AnyNode) => void): void {
  const fromItem = (item: unknown): void => {
    if (item === null || typeof item !== 'object') return;
    const n = item as AnyNode;
    if (n.RangeVar !== undefined) visit(n.RangeVar as AnyNode);
    else if (n.JoinExpr !== undefined) {
      fromItem((n.JoinExpr as AnyNode).larg);
      fromItem((n.JoinExpr as AnyNode).rarg);
    }
  };
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x);
      return;
    }
    if (v === null || typeof v !== 'object') return;
    for (const [k, child] of Object.entries(v as AnyNode)) {
      if (k === 'fromClause' && Array.isArray(child)) for (const item of child) fromItem(item);
      walk(child);
    }
  };
  walk(node);
}

/** Statements whose FROM lists are rewritten: queries and DML, not DDL (a view or function would keep a copy of the scope). */
const QUERY_KINDS = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** Whether a top-level statement is (or wraps, in EXPLAIN, PREPARE, DECLARE or COPY) a query or DML. */
function rewritable(stmt: AnyNode | undefined): boolean {
  if (stmt === undefined) return false;
  const [kind, body] = Object.entries(stmt)[0] ?? [];
  if (kind === undefined) return false;
  if (QUERY_KINDS.has(kind)) return true;
  const b = body as AnyNode | undefined;
  if (kind === 'ExplainStmt' || kind === 'PrepareStmt' || kind === 'DeclareCursorStmt')
    return rewritable(b?.query as AnyNode | undefined);
  if (kind === 'CopyStmt') return b?.query !== undefined && rewritable(b.query as AnyNode);
  return false;
}

/** Whether a RangeVar names one of the virtual relations (a three-part name never does). */
function virtualName(rv: AnyNode): 'scope' | 'session' | undefined {
  if (rv.schemaname !== SCOPE_SCHEMA || (rv.catalogname ?? '') !== '') return undefined;
  return rv.relname === 'scope' || rv.relname === 'session' ? rv.relname : undefined;
}

/**
 * The text with pgwarden.scope / pgwarden.session in FROM and `SHOW pgwarden.<name>` replaced, `undefined` when it
 * names none of them (the common case, decided without parsing when the text does not mention pgwarden at all), or a
 * refusal when a reference could not be rewritten exactly.
 */
export function rewriteScope(sql: string, role: RolePolicy, catalog: CatalogSnapshot): ScopeRewrite | undefined {
  if (!/pgwarden/i.test(sql)) return undefined;
  const parsed = parseStatements(sql);
  if (!parsed.ok) return undefined;
  const buf = Buffer.from(sql, 'utf8');
  const splices: Splice[] = [];
  let failure: string | undefined;
  for (const raw of parsed.stmts as RawStmt[]) {
    const stmt = raw.stmt as AnyNode | undefined;
    const show = stmt?.VariableShowStmt as AnyNode | undefined;
    if (show !== undefined && typeof show.name === 'string' && show.name.startsWith(`${SCOPE_SCHEMA}.`)) {
      const name = show.name.slice(SCOPE_SCHEMA.length + 1);
      const col = sessionColumns(role).find(([n]) => n === name);
      if (col !== undefined) {
        const start = raw.stmt_location ?? 0;
        const len = raw.stmt_len ?? 0;
        // A statement's span never includes its `;`; a trailing one (or the text's end) stays as written.
        splices.push({
          start,
          end: len > 0 ? start + len : buf.length,
          text: `SELECT (${col[1]})::text AS "${SCOPE_SCHEMA}.${name}"`,
        });
      }
      continue;
    }
    // In DDL the names stay as written: the policy then judges them as ordinary relations (and refuses them).
    if (!rewritable(stmt)) continue;
    fromRangeVars(stmt, (rv) => {
      const which = virtualName(rv);
      if (which === undefined) return;
      const loc = typeof rv.location === 'number' ? rv.location : -1;
      const end = loc < 0 ? undefined : nameEnd(buf, loc, which);
      if (end === undefined) {
        failure ??= `the reference to ${SCOPE_SCHEMA}.${which} could not be located in the text`;
        return;
      }
      const sub = which === 'scope' ? scopeSubquery(role, catalog) : sessionSubquery(role);
      // The user's alias (and column aliases) follow the name and now follow the subquery; else it is named after it.
      splices.push({ start: loc, end, text: rv.alias === undefined ? `${sub} AS ${which}` : sub });
    });
  }
  if (failure !== undefined) return { ok: false, why: failure };
  if (splices.length === 0) return undefined;
  splices.sort((a, b) => a.start - b.start);
  for (let i = 1; i < splices.length; i++) {
    const prev = splices[i - 1];
    const cur = splices[i];
    if (prev !== undefined && cur !== undefined && cur.start < prev.end)
      return { ok: false, why: "overlapping references to pgwarden's virtual relations" };
  }
  const parts: Buffer[] = [];
  let at = 0;
  for (const s of splices) {
    parts.push(buf.subarray(at, s.start), Buffer.from(s.text, 'utf8'));
    at = s.end;
  }
  parts.push(buf.subarray(at));
  const out = Buffer.concat(parts).toString('utf8');
  // The result must parse, hold as many statements, and name the virtual relations nowhere in FROM any more.
  const again = parseStatements(out);
  if (!again.ok && (again.reason === 'statement_too_large' || again.reason === 'statement_too_complex')) {
    return {
      ok: false,
      why: `the role's scope is too large to list in one statement (${again.message})`,
      tooLarge: true,
    };
  }
  if (!again.ok || again.stmts.length !== parsed.stmts.length)
    return { ok: false, why: 'the rewritten text did not parse as the original did' };
  let left = false;
  for (const raw of again.stmts)
    fromRangeVars(raw.stmt, (rv) => {
      if (virtualName(rv) !== undefined) left = true;
    });
  if (left) return { ok: false, why: "a reference to pgwarden's virtual relations was left in place" };
  return { ok: true, sql: out };
}
