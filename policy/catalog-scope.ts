// `catalog: scoped`: every system catalog relation a statement names becomes a subquery filtered to what the role may see, and functions that map an OID to a name or definition are guarded.
//
// The statement's tree is rewritten and deparsed; the text PostgreSQL runs is that rewrite, judged again by both
// analyses with `catalogFiltered` set. The rewrite is total or refused (fail closed):
// - every RangeVar resolving to pg_catalog / information_schema (qualified, or unqualified with a pg_catalog
//   name: pg_catalog is searched first) in a FROM position is replaced by `(SELECT <columns> FROM <catalog> WHERE
//   <filter>) AS <the client's alias or the relation's name>`; one without a filter, or in any other position
//   (COPY, a DML target, …), or shadowed by a CTE of the same name, is left for the policy, which refuses it;
// - every call of a guarded function becomes `CASE WHEN <its object is visible> THEN <the call> END`;
// - every cast to a reg* type becomes `CASE WHEN <the OID is visible> THEN <the cast> END` (a string constant is
//   looked up with to_reg*, so a hidden name and a missing one both give NULL, never an error);
// - the deparsed text must parse back to exactly the rewritten tree.
// What the role sees: its relations (relations and write.relations patterns, kinds r v m p f), their columns minus
// deniedColumns (and, for a narrowed token, minus those outside its allowedColumns) and columns whose type is another relation's row type, their schemas, its own database role's name;
// nothing of other relations, columns, functions or roles (docs/policy.md, "catalog: scoped").
import { deparseSync } from 'pgsql-deparser';
import type { AnyNode } from './analyze.ts';
import { REG_TYPES } from './analyze.ts';
import { canonicalTree, parseStatements } from './parser.ts';
import type { CatalogSnapshot, RelationPattern, RolePolicy } from './types.ts';
import { quoteIdent, quoteLiteral } from '../lib/ident.ts';
import { SESSION_RELATIONS, SYSTEM_DENIED_COLUMNS } from './introspection.ts';

/** The alias the wrapped catalog relation has inside its filter subquery. */
const INNER = 'pgwarden_f';

/** Relation kinds a policy pattern covers (catalog.ts reads the same). */
const POLICY_KINDS = "('r','v','m','p','f')";

/** SQL text of the role's visible relations' OIDs: a subquery over pg_class and pg_namespace. */
function visibleRelations(role: RolePolicy): string {
  const patterns: RelationPattern[] = [...role.relations];
  if (!role.readOnly && role.write !== undefined) patterns.push(...role.write.relations);
  const terms = patterns.map((p) =>
    p.name === '*'
      ? `vn.nspname = ${quoteLiteral(p.schema)}`
      : `(vn.nspname = ${quoteLiteral(p.schema)} AND vc.relname = ${quoteLiteral(p.name)})`,
  );
  const pred = terms.length === 0 ? 'false' : terms.join(' OR ');
  return `SELECT vc.oid FROM pg_catalog.pg_class vc JOIN pg_catalog.pg_namespace vn ON vn.oid = vc.relnamespace WHERE vc.relkind IN ${POLICY_KINDS} AND (${pred})`;
}

/** SQL predicate: attribute (attrelid, attnum) given by the two expressions is one of the role's denied columns. */
function deniedAttribute(role: RolePolicy, relid: string, attnum: string): string {
  const rows: string[] = [];
  for (const [rel, cols] of role.deniedColumns) {
    const dot = rel.indexOf('.');
    if (dot < 0) continue;
    for (const c of cols)
      rows.push(`(${quoteLiteral(rel.slice(0, dot))}, ${quoteLiteral(rel.slice(dot + 1))}, ${quoteLiteral(c)})`);
  }
  if (rows.length === 0) return 'false';
  return `EXISTS (SELECT 1 FROM pg_catalog.pg_attribute da JOIN pg_catalog.pg_class dc ON dc.oid = da.attrelid JOIN pg_catalog.pg_namespace dn ON dn.oid = dc.relnamespace WHERE da.attrelid = ${relid} AND da.attnum = ${attnum} AND (dn.nspname::text, dc.relname::text, da.attname::text) IN (${rows.join(', ')}))`;
}

/**
 * SQL predicate: attribute (attrelid, attname) given by the two expressions is a column of a relation the token
 * narrowing limits to some columns (allowedColumns, policy/narrow.ts) and not one of them.
 */
function outsideAllowed(role: RolePolicy, relid: string, attname: string): string {
  const terms: string[] = [];
  for (const [rel, cols] of role.allowedColumns ?? []) {
    const dot = rel.indexOf('.');
    if (dot < 0) continue;
    const listed = [...cols].map(quoteLiteral).join(', ');
    terms.push(
      `(an.nspname::text = ${quoteLiteral(rel.slice(0, dot))} AND ac.relname::text = ${quoteLiteral(rel.slice(dot + 1))}${listed === '' ? '' : ` AND ${attname}::text NOT IN (${listed})`})`,
    );
  }
  if (terms.length === 0) return 'false';
  return `EXISTS (SELECT 1 FROM pg_catalog.pg_class ac JOIN pg_catalog.pg_namespace an ON an.oid = ac.relnamespace WHERE ac.oid = ${relid} AND (${terms.join(' OR ')}))`;
}

/**
 * SQL text of the visible types' OIDs: every type that is not a relation's row type (or an array of one), and the
 * row types of visible relations. A table's row type is named after the table.
 */
function visibleTypes(vis: string): string {
  return `SELECT vt.oid FROM pg_catalog.pg_type vt LEFT JOIN pg_catalog.pg_type ve ON ve.oid = vt.typelem AND vt.typelem <> 0 WHERE (vt.typrelid = 0 OR vt.typrelid IN (${vis})) AND (ve.oid IS NULL OR ve.typrelid = 0 OR ve.typrelid IN (${vis}))`;
}

/** A filter: the predicate over INNER and the columns read as NULL instead (ACLs name roles; expressions name anything). */
interface FilterSpec {
  where: string;
  nulled: readonly string[];
}

/** Everything the rewrite needs for one role and catalog snapshot. */
interface Filters {
  /** `schema.name` → the wrapper SelectStmt node (cloned at each use). */
  wrappers: Map<string, AnyNode>;
  /** Expression templates (a SelectStmt's first target) for the guards, with placeholder column `pgwarden_x`. */
  relGuard: AnyNode;
  typeGuard: AnyNode;
  nspGuard: AnyNode;
  roleGuard: AnyNode;
}

/** The role's visibility predicates as SQL text: relations' OIDs, types' OIDs, a namespace row, an attribute row. */
function predicates(role: RolePolicy): {
  vis: string;
  types: string;
  nspVisible: (n: string) => string;
  attrVisible: (a: string) => string;
} {
  const vis = visibleRelations(role);
  const types = visibleTypes(vis);
  const paths = new Set<string>(['pg_catalog', 'information_schema', ...role.searchPath]);
  for (const p of role.relations) if (p.name === '*') paths.add(p.schema);
  if (!role.readOnly) for (const p of role.write?.relations ?? []) if (p.name === '*') paths.add(p.schema);
  const schemas = [...paths].map(quoteLiteral).join(', ');
  return {
    vis,
    types,
    nspVisible: (n) =>
      `(${n}.oid IN (SELECT sc.relnamespace FROM pg_catalog.pg_class sc WHERE sc.oid IN (${vis})) OR ${n}.nspname IN (${schemas}))`,
    attrVisible: (a) =>
      `${a}.attrelid IN (${vis}) AND NOT ${deniedAttribute(role, `${a}.attrelid`, `${a}.attnum`)} AND NOT ${outsideAllowed(role, `${a}.attrelid`, `${a}.attname`)} AND ${a}.atttypid IN (${types})`,
  };
}

/** Catalog relations a scoped role may name, each with its filter; any other system relation is refused. */
function filterSpecs(role: RolePolicy): Map<string, FilterSpec> {
  const { vis, nspVisible, attrVisible } = predicates(role);
  const m = new Map<string, FilterSpec>();
  m.set('pg_catalog.pg_class', { where: `${INNER}.oid IN (${vis})`, nulled: ['relacl'] });
  m.set('pg_catalog.pg_attribute', { where: attrVisible(INNER), nulled: ['attacl', 'attmissingval'] });
  m.set('pg_catalog.pg_namespace', {
    where: nspVisible(INNER),
    nulled: ['nspacl'],
  });
  // Access methods (heap, btree, …) name no relation, column, function or role.
  m.set('pg_catalog.pg_am', { where: 'true', nulled: [] });
  m.set('information_schema.tables', {
    where: `(${INNER}.table_schema::text, ${INNER}.table_name::text) IN (SELECT tn.nspname::text, tc.relname::text FROM pg_catalog.pg_class tc JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace WHERE tc.oid IN (${vis}))`,
    nulled: [],
  });
  m.set('information_schema.columns', {
    where: `(${INNER}.table_schema::text, ${INNER}.table_name::text, ${INNER}.column_name::text) IN (SELECT tn.nspname::text, tc.relname::text, ta.attname::text FROM pg_catalog.pg_attribute ta JOIN pg_catalog.pg_class tc ON tc.oid = ta.attrelid JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace WHERE ta.attnum > 0 AND NOT ta.attisdropped AND ${attrVisible('ta')})`,
    // A default or generation expression may name a sequence, function or column the role may not see.
    nulled: ['column_default', 'generation_expression'],
  });
  return m;
}

/** Relations the wrappers and guards themselves read: allowed in a rewritten text (every client reference is wrapped or refused). */
export const SCOPED_INNER_RELATIONS: ReadonlySet<string> = new Set([
  'pg_catalog.pg_class',
  'pg_catalog.pg_namespace',
  'pg_catalog.pg_attribute',
  'pg_catalog.pg_type',
  'pg_catalog.pg_roles',
]);

/** Every catalog relation a scoped role may name (each through its filter). */
export const SCOPED_RELATIONS: ReadonlySet<string> = new Set(filterSpecs(emptyRole()).keys());

function emptyRole(): RolePolicy {
  return {
    name: '_',
    mode: 'enforce',
    readOnly: true,
    relations: [],
    write: undefined,
    deniedColumns: new Map(),
    functions: { allow: new Set(), deny: new Set() },
    settings: new Set(),
    catalog: 'scoped',
    maxRows: undefined,
    onRowCap: 'truncate',
    statementTimeout: undefined,
    dbRole: undefined,
    searchPath: ['public'],
  };
}

/** How a guarded function's first argument names its object. */
type GuardKind = 'relation' | 'type' | 'role' | 'namespace';

/**
 * pg_catalog functions a scoped role may call, guarded: the call runs only when its first argument names a visible
 * object (else NULL), so an OID or a name the client makes up reveals nothing. Every other introspection function is
 * refused under scoped.
 */
export const SCOPED_FUNCTIONS: ReadonlyMap<string, GuardKind> = new Map([
  ['pg_table_is_visible', 'relation'],
  ['format_type', 'type'],
  ['pg_get_userbyid', 'role'],
  ['to_regclass', 'relation'],
  ['to_regtype', 'type'],
  ['to_regnamespace', 'namespace'],
]);

/** reg* types a cast may produce under scoped, with the to_reg* function that looks a name up without an error. */
const REG_CASTS: ReadonlyMap<string, { guard: GuardKind; lookup: string }> = new Map([
  ['regclass', { guard: 'relation', lookup: 'to_regclass' }],
  ['regtype', { guard: 'type', lookup: 'to_regtype' }],
  ['regnamespace', { guard: 'namespace', lookup: 'to_regnamespace' }],
]);

/** Functions the rewritten text itself calls (the guards' lookups): allowed with catalogFiltered. */
export const SCOPED_INNER_FUNCTIONS: ReadonlySet<string> = new Set([
  ...[...SCOPED_FUNCTIONS.keys()].map((n) => `pg_catalog.${n}`),
  ...[...REG_CASTS.values()].map((r) => `pg_catalog.${r.lookup}`),
  'pg_catalog.regclassout',
  'pg_catalog.regtypeout',
  'pg_catalog.regnamespaceout',
]);

function firstTarget(sql: string): AnyNode {
  const p = parseStatements(sql);
  const sel = p.ok ? (p.stmts[0]?.stmt as AnyNode | undefined)?.SelectStmt : undefined;
  const val = sel?.targetList?.[0]?.ResTarget?.val as AnyNode | undefined;
  if (val === undefined) throw new Error(`catalog-scope: template did not parse: ${sql}`);
  return val;
}

function selectNode(sql: string): AnyNode {
  const p = parseStatements(sql);
  const stmt = p.ok ? (p.stmts[0]?.stmt as AnyNode | undefined) : undefined;
  if (stmt?.SelectStmt === undefined) throw new Error(`catalog-scope: filter did not parse: ${sql}`);
  return stmt;
}

const cache = new WeakMap<RolePolicy, { catalog: CatalogSnapshot; filters: Filters | string }>();

/** The role's filters for this catalog snapshot, built once per (RolePolicy object, snapshot), or why they cannot be. */
function filtersFor(role: RolePolicy, catalog: CatalogSnapshot): Filters | string {
  const hit = cache.get(role);
  if (hit !== undefined && hit.catalog === catalog) return hit.filters;
  let filters: Filters | string;
  try {
    filters = buildFilters(role, catalog);
  } catch (err) {
    filters = err instanceof Error ? err.message : String(err);
  }
  cache.set(role, { catalog, filters });
  return filters;
}

function buildFilters(role: RolePolicy, catalog: CatalogSnapshot): Filters {
  const { vis, types, nspVisible } = predicates(role);
  const wrappers = new Map<string, AnyNode>();
  for (const [key, spec] of filterSpecs(role)) {
    const rel = catalog.relations.get(key);
    // Without the catalog's column list the wrapper cannot keep the relation's shape: the name stays unfiltered,
    // and the policy refuses it.
    if (rel === undefined || rel.columns.length === 0) continue;
    const hidden = SYSTEM_DENIED_COLUMNS.get(key);
    const cols = rel.columns.map((c) =>
      spec.nulled.includes(c.name) || hidden?.has(c.name) === true
        ? `NULL::${nullType(c.type)} AS ${quoteIdent(c.name)}`
        : // A reg* column prints the name of whatever its OID names: the wrapper hands out the OID.
          REG_TYPES.has(c.type)
          ? `${INNER}.${quoteIdent(c.name)}::pg_catalog.oid AS ${quoteIdent(c.name)}`
          : `${INNER}.${quoteIdent(c.name)}`,
    );
    const [schema, name] = key.split('.') as [string, string];
    wrappers.set(key, selectNode(`SELECT ${cols.join(', ')} FROM ${schema}.${name} ${INNER} WHERE ${spec.where}`));
  }
  const x = '(pgwarden_x)::pg_catalog.oid';
  return {
    wrappers,
    relGuard: firstTarget(`SELECT ${x} IN (${vis})`),
    typeGuard: firstTarget(`SELECT ${x} IN (${types})`),
    nspGuard: firstTarget(`SELECT ${x} IN (SELECT gn.oid FROM pg_catalog.pg_namespace gn WHERE ${nspVisible('gn')})`),
    roleGuard: firstTarget(`SELECT ${x} IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER)`),
  };
}

/** A type a NULL can be cast to: pseudo-types (attmissingval's anyarray) read as text[]. */
function nullType(t: string): string {
  return t === 'anyarray' ? 'text[]' : t;
}

/** A deep copy of a template with each `pgwarden_x` column reference replaced by `x` (not copied, not searched). */
function instantiate(template: AnyNode, x: AnyNode): AnyNode {
  const copy = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(copy);
    if (v === null || typeof v !== 'object') return v;
    const o = v as AnyNode;
    const fields = o.ColumnRef?.fields;
    if (Array.isArray(fields) && fields.length === 1 && fields[0]?.String?.sval === 'pgwarden_x') return x;
    const out: AnyNode = {};
    for (const [k, c] of Object.entries(o)) out[k] = copy(c);
    return out;
  };
  return copy(template) as AnyNode;
}

function strings(list: unknown): string[] | undefined {
  if (!Array.isArray(list)) return undefined;
  const out: string[] = [];
  for (const x of list) {
    const s = (x as AnyNode)?.String?.sval;
    if (typeof s !== 'string') return undefined;
    out.push(s);
  }
  return out;
}

const MAY_NAME_CATALOG = /pg_|information_schema|format_type|reg|u&/i;

export type CatalogRewrite =
  | { ok: true; sql: string }
  | { ok: false; why: string; relation?: string; denied?: boolean };

/** Why a text cannot be rewritten: a catalog relation no filter covers (refused as the catalog rule), or a form the rewrite does not take. */
class Refusal extends Error {
  constructor(
    message: string,
    readonly relation?: string,
    /** A form refused as the catalog rule refuses it (42501), not one merely unsupported (0A000). */
    readonly denied?: boolean,
  ) {
    super(message);
  }
}

/** Statement kinds whose text is rewritten; any other statement naming a catalog relation is left to the policy. */
const QUERY_KINDS = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/**
 * The statement text with every catalog reference filtered and every guarded call guarded, `undefined` when it has
 * none (the text is then judged as written), or a refusal.
 */
export function rewriteCatalog(sql: string, role: RolePolicy, catalog: CatalogSnapshot): CatalogRewrite | undefined {
  if (role.catalog !== 'scoped') return undefined;
  // Every catalog relation name starts with pg_ or is in information_schema, every guarded call and reg* cast names
  // pg_*, format_type, to_reg* or reg*; U& identifiers may spell any of them in escapes.
  if (!MAY_NAME_CATALOG.test(sql)) return undefined;
  const parsed = parseStatements(sql);
  if (!parsed.ok) return undefined;
  const filters = filtersFor(role, catalog);
  if (typeof filters === 'string') return { ok: false, why: filters };
  const systemNames = new Set<string>();
  for (const key of catalog.relations.keys()) if (key.startsWith('pg_catalog.')) systemNames.add(key.slice(11));
  for (const key of SCOPED_RELATIONS) if (key.startsWith('pg_catalog.')) systemNames.add(key.slice(11));
  const stmts = structuredClone(parsed.stmts);
  let changed = false;
  const cteNames = new Set<string>();
  const collectCtes = (v: unknown): void => {
    if (Array.isArray(v)) for (const x of v) collectCtes(x);
    else if (v !== null && typeof v === 'object') {
      const o = v as AnyNode;
      if (typeof o.CommonTableExpr?.ctename === 'string') cteNames.add(o.CommonTableExpr.ctename);
      for (const c of Object.values(o)) collectCtes(c);
    }
  };
  collectCtes(stmts);

  /** `schema.name` of the catalog relation a RangeVar names, or undefined for a user relation. */
  const catalogKey = (rv: AnyNode): string | undefined => {
    const rel = String(rv.relname ?? '');
    const schema = typeof rv.schemaname === 'string' ? rv.schemaname : undefined;
    if (schema === undefined) {
      if (!systemNames.has(rel)) return undefined;
      // A CTE of a catalog's name: which one a reference means depends on scoping; refused rather than guessed.
      // The session's own prepared statements and cursors: open to every role, as written.
      if (SESSION_RELATIONS.has(`pg_catalog.${rel}`)) return undefined;
      if (cteNames.has(rel)) throw new Refusal(`a WITH query is named like system catalog ${rel}`);
      return `pg_catalog.${rel}`;
    }
    if (schema === 'pg_catalog' || schema === 'information_schema' || schema.startsWith('pg_toast')) {
      if (typeof rv.catalogname === 'string') throw new Refusal(`a three-part name of system catalog ${schema}.${rel}`);
      if (SESSION_RELATIONS.has(`${schema}.${rel}`)) return undefined;
      return `${schema}.${rel}`;
    }
    return undefined;
  };

  const wrapRangeVar = (rv: AnyNode): AnyNode | undefined => {
    const key = catalogKey(rv);
    if (key === undefined) return undefined;
    const wrapper = filters.wrappers.get(key);
    // Every catalog reference is filtered or the statement refused: nothing unfiltered reaches a rewritten text.
    if (wrapper === undefined) throw new Refusal(`${key} has no scoped filter`, key);
    changed = true;
    const alias: AnyNode = rv.alias ?? { aliasname: String(rv.relname) };
    return { RangeSubselect: { subquery: structuredClone(wrapper), alias } };
  };

  const guard = (kind: GuardKind, x: AnyNode, result: AnyNode): AnyNode => {
    const t =
      kind === 'relation'
        ? filters.relGuard
        : kind === 'type'
          ? filters.typeGuard
          : kind === 'role'
            ? filters.roleGuard
            : filters.nspGuard;
    changed = true;
    return { CaseExpr: { args: [{ CaseWhen: { expr: instantiate(t, x), result } }] } };
  };

  /** A FROM item: a catalog RangeVar is replaced; joins are searched on both sides. */
  const fromItem = (item: AnyNode): AnyNode => {
    if (item.RangeVar !== undefined) return wrapRangeVar(item.RangeVar) ?? item;
    if (item.JoinExpr !== undefined) {
      const j = item.JoinExpr as AnyNode;
      return {
        JoinExpr: {
          ...j,
          larg: fromItem(j.larg),
          rarg: fromItem(j.rarg),
          quals: walk(j.quals),
        },
      };
    }
    return walk(item) as AnyNode;
  };

  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk);
    if (v === null || typeof v !== 'object') return v;
    const o = v as AnyNode;
    // Outside a FROM list (COPY, a DML target, SELECT INTO, LOCK) a catalog relation cannot be replaced by a
    // subquery. Typed fields (CopyStmt.relation, InsertStmt.relation, IntoClause.rel) hold a RangeVar's fields bare.
    const bare = typeof o.relname === 'string' ? o : undefined;
    const rv = (o.RangeVar as AnyNode | undefined) ?? bare;
    if (rv !== undefined) {
      const key = catalogKey(rv);
      if (key !== undefined) throw new Refusal(`${key} is named where it cannot be filtered`, key);
      if (bare === undefined) return o;
    }
    const out: AnyNode = {};
    for (const [k, c] of Object.entries(o)) {
      if ((k === 'fromClause' || k === 'usingClause') && Array.isArray(c)) out[k] = c.map((i) => fromItem(i));
      else if (k === 'sourceRelation' && c !== null && typeof c === 'object') out[k] = fromItem(c as AnyNode);
      else out[k] = walk(c);
    }
    if (out.FuncCall !== undefined) return guardCall(out);
    if (out.TypeCast !== undefined) return guardCast(out);
    return out;
  };

  const guardCall = (node: AnyNode): AnyNode => {
    const f = node.FuncCall as AnyNode;
    const names = strings(f.funcname);
    if (names === undefined) return node;
    const name = names[names.length - 1] ?? '';
    if (names.length > 2 || (names.length === 2 && names[0] !== 'pg_catalog')) return node;
    const kind = SCOPED_FUNCTIONS.get(name);
    if (kind === undefined) return node;
    const args: unknown[] = Array.isArray(f.args) ? f.args : [];
    const first = args[0] as AnyNode | undefined;
    if (first === undefined || f.func_variadic === true || first.NamedArgExpr !== undefined)
      throw new Refusal(`${name} called without a plain first argument`);
    // A string constant names the object: looked up without an error, so hidden and missing read alike.
    // to_regclass / to_regtype: the looked-up value itself is what must be visible.
    if (name.startsWith('to_reg')) return guard(kind, node, node);
    if (first.A_Const?.sval !== undefined && kind !== 'role') {
      const lookup = kind === 'relation' ? 'to_regclass' : 'to_regtype';
      const looked: AnyNode = {
        FuncCall: {
          funcname: [{ String: { sval: 'pg_catalog' } }, { String: { sval: lookup } }],
          args: [first],
          funcformat: 'COERCE_EXPLICIT_CALL',
        },
      };
      return guard(kind, looked, { FuncCall: { ...f, args: [looked, ...args.slice(1)] } });
    }
    return guard(kind, first, node);
  };

  const guardCast = (node: AnyNode): AnyNode => {
    const t = node.TypeCast as AnyNode;
    const names = strings(t.typeName?.names);
    if (names === undefined) return node;
    const name = names[names.length - 1] ?? '';
    if (!REG_TYPES.has(name) || (names.length === 2 && names[0] !== 'pg_catalog') || names.length > 2) return node;
    const reg = REG_CASTS.get(name);
    // regproc, regrole, regoper, …: no guard, so refused (the rewritten text may carry reg* types only from guards).
    if (reg === undefined)
      throw new Refusal(`a cast to ${name}, which prints the name of any object its OID names`, undefined, true);
    if ((t.typeName?.arrayBounds ?? []).length > 0) throw new Refusal(`a cast to ${name}[]`);
    const arg = t.arg as AnyNode;
    if (arg?.A_Const?.sval !== undefined) {
      const looked: AnyNode = {
        FuncCall: {
          funcname: [{ String: { sval: 'pg_catalog' } }, { String: { sval: reg.lookup } }],
          args: [arg],
          funcformat: 'COERCE_EXPLICIT_CALL',
        },
      };
      return guard(reg.guard, looked, looked);
    }
    return guard(reg.guard, arg, node);
  };

  try {
    for (const raw of stmts) {
      const stmt = raw.stmt as AnyNode | undefined;
      const kind = stmt === undefined ? undefined : Object.keys(stmt)[0];
      if (kind === undefined) continue;
      if (kind === 'ExplainStmt' || kind === 'PrepareStmt' || kind === 'DeclareCursorStmt' || kind === 'CopyStmt') {
        const inner = (stmt as AnyNode)[kind] as AnyNode;
        const before = changed;
        if (inner.query !== undefined) inner.query = walk(inner.query);
        else walk(inner);
        // EXPLAIN prints the filter, which names the role's denied columns.
        if (kind === 'ExplainStmt' && changed && !before)
          throw new Refusal('EXPLAIN of a statement that reads system catalogs would print their filters');
        continue;
      }
      if (!QUERY_KINDS.has(kind)) {
        walk(stmt);
        continue;
      }
      raw.stmt = walk(stmt) as typeof raw.stmt;
    }
  } catch (err) {
    if (err instanceof Refusal)
      return {
        ok: false,
        why: err.message,
        ...(err.relation === undefined ? {} : { relation: err.relation }),
        ...(err.denied === true ? { denied: true } : {}),
      };
    throw err;
  }
  if (!changed) return undefined;
  const pieces: string[] = [];
  for (const raw of stmts) {
    const text = deparseSync({ version: 0, stmts: [{ stmt: raw.stmt }] } as never, { pretty: false });
    if (typeof text !== 'string' || text.trim() === '')
      return { ok: false, why: 'the rewritten statement did not deparse' };
    pieces.push(text);
  }
  const out = pieces.join(';\n');
  const again = parseStatements(out);
  if (!again.ok || again.stmts.length !== stmts.length)
    return { ok: false, why: 'the rewritten statement did not parse back' };
  if (canonicalTree(again.stmts.map((s) => s.stmt)) !== canonicalTree(stmts.map((s) => s.stmt)))
    return { ok: false, why: 'the rewritten statement did not parse back to the rewritten tree' };
  return { ok: true, sql: out };
}
