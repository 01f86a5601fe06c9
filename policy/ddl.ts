// Scoped DDL, maintenance, LOCK, LISTEN/NOTIFY and DO: where a utility statement's objects live, and the queries its bodies and expressions amount to.
//
// PostgreSQL's parse analysis does not look inside utility statements, so neither analysis sees what a
// CREATE VIEW's body reads or what a column DEFAULT calls. This file restates those parts as plain
// SELECTs (the view or CTAS body itself; `SELECT <expressions> FROM <the table>` for defaults, checks,
// generated columns, index expressions and predicates, USING clauses; `SELECT <columns> FROM ONLY
// <referenced table>` for foreign keys), which both analyses then judge like any read. Every restated text
// is parsed again and accepted only if each piece taken from the client's statement comes back as the
// same tree, so the deparser can never make the analysed text differ from what will run.
// The object rules (which schema a name lands in) are decided here from the parse tree alone.
import { Deparser } from 'pgsql-deparser';
import { canonicalTree, parseStatements } from './parser.ts';
import { quoteIdent } from '../lib/ident.ts';
import type { CatalogSnapshot, ChannelPattern, RolePolicy } from './types.ts';
import type { AnyNode } from './analyze.ts';

/** What the relations a name-resolution query finds must be: LOCK and maintenance name existing relations. */
export type NamedNeed = 'writable' | 'readable';

/** A SELECT whose analysis covers part of a utility statement. */
export interface UtilityQuery {
  text: string;
  /** The relations it names are judged by this need instead of as reads (LOCK, ANALYZE, VACUUM). */
  named?: NamedNeed;
}

export type UtilityQueries = { ok: true; queries: UtilityQuery[] } | { ok: false; why: string };

/** Utility statement kinds this file restates for analysis. */
export const UTILITY_ANALYSED_KINDS: ReadonlySet<string> = new Set([
  'CreateStmt',
  'IndexStmt',
  'ViewStmt',
  'CreateTableAsStmt',
  'AlterTableStmt',
  'LockStmt',
  'VacuumStmt',
  'CompositeTypeStmt',
  'CreateDomainStmt',
  'CreateRangeStmt',
]);

/** Utility statement kinds decided by this file (beyond the ones above: names only, or nothing to analyse). */
export const UTILITY_KINDS: ReadonlySet<string> = new Set([
  ...UTILITY_ANALYSED_KINDS,
  'RefreshMatViewStmt',
  'CreateSeqStmt',
  'AlterSeqStmt',
  'RenameStmt',
  'DropStmt',
  'CommentStmt',
  'ListenStmt',
  'NotifyStmt',
  'DoStmt',
  'CreateEnumStmt',
  'AlterEnumStmt',
  'CreateSchemaStmt',
]);

/**
 * Kinds that change what names and column numbers mean (DO can run any of them): once one is allowed, facts the server's
 * analysis cached about the catalog may be stale, so they are dropped (proxy/session/policy-gate.ts).
 */
export const CATALOG_CHANGING_KINDS: ReadonlySet<string> = new Set([
  'CreateStmt',
  'CreateTableAsStmt',
  'ViewStmt',
  'IndexStmt',
  'AlterTableStmt',
  'RenameStmt',
  'DropStmt',
  'CreateSeqStmt',
  'AlterSeqStmt',
  'DoStmt',
  'CompositeTypeStmt',
  'CreateDomainStmt',
  'CreateRangeStmt',
  'CreateEnumStmt',
  'AlterEnumStmt',
  'CreateSchemaStmt',
]);

/** PostgreSQL's lock modes (storage/lockdefs.h); 1 is ACCESS SHARE, what every SELECT takes. */
const ACCESS_SHARE_LOCK = 1;

/** The String nodes' values of a name list (others skipped). */
export function stringsOf(list: unknown): string[] {
  if (!Array.isArray(list)) return [];
  return list.map((x) => (x as AnyNode)?.String?.sval).filter((s): s is string => typeof s === 'string');
}

function same(a: unknown, b: unknown): boolean {
  return canonicalTree(a) === canonicalTree(b);
}

export type DeparseContext = Parameters<Deparser['TypeName']>[1];

/**
 * A type's typmods and array bounds (`(10, 2)`, `[3]`, `[]`), printed after the name by the TypeName overrides here and
 * in catalog-scope.ts, which print the name themselves.
 */
export function typeNameSuffix(
  deparser: Deparser,
  node: Parameters<Deparser['TypeName']>[0],
  context: DeparseContext,
): string {
  let text = '';
  if (node.typmods !== undefined && node.typmods.length > 0)
    text += `(${node.typmods.map((m) => deparser.deparse(m, context)).join(', ')})`;
  for (const b of node.arrayBounds ?? []) {
    const n = (b as AnyNode)?.Integer?.ival;
    text += typeof n === 'number' && n !== -1 ? `[${n}]` : '[]';
  }
  return text;
}

/**
 * The deparser, except that a type name the client wrote is printed quoted, part by part. The stock deparser leaves a
 * keyword-like name bare (`"numeric"`, `"int4"`, `"varchar"`, `"interval"` come out as `numeric`, …), which the grammar
 * then reads as pg_catalog's type: a different tree (and, with a type of that name in the search path, a different
 * type), so the restated text was refused. Names the grammar itself made for keyword types (`pg_catalog.…`) keep the
 * stock printing, whose special forms (`timestamp with time zone`, `interval day to second`) parse back the same.
 */
class RestatingDeparser extends Deparser {
  override TypeName(node: Parameters<Deparser['TypeName']>[0], context: DeparseContext): string {
    const names = stringsOf(node.names);
    if (names.length === 0 || names.length !== (node.names?.length ?? 0) || names[0] === 'pg_catalog')
      return super.TypeName(node, context);
    if (node.setof === true || node.pct_type === true) return super.TypeName(node, context);
    return names.map((n) => `"${n.replace(/"/g, '""')}"`).join('.') + typeNameSuffix(this, node, context);
  }
}

function deparseNode(node: AnyNode): string | undefined {
  try {
    const t = new RestatingDeparser(node as never, { pretty: false }).deparseQuery();
    return typeof t === 'string' && t.trim() !== '' ? t : undefined;
  } catch {
    return undefined;
  }
}

function parseOne(text: string): AnyNode | undefined {
  const p = parseStatements(text);
  if (!p.ok || p.stmts.length !== 1) return undefined;
  return p.stmts[0]?.stmt as AnyNode | undefined;
}

/** A RangeVar as SQL: `ONLY "schema"."name"`, built from the parser's identifiers. */
function rangeVarText(rv: AnyNode): string | undefined {
  if (typeof rv.relname !== 'string' || rv.catalogname !== undefined) return undefined;
  return `ONLY ${typeof rv.schemaname === 'string' ? `${quoteIdent(rv.schemaname)}.` : ''}${quoteIdent(rv.relname)}`;
}

/** serial types are column shorthands, not types: a NULL of one is cast to the integer it stands for. */
const SERIAL_TYPES: Record<string, string> = {
  serial: 'int4',
  serial4: 'int4',
  bigserial: 'int8',
  serial8: 'int8',
  smallserial: 'int2',
  serial2: 'int2',
};

function castTypeName(tn: AnyNode): AnyNode {
  const names = stringsOf(tn.names);
  const only = names.length === 1 ? names[0] : undefined;
  const mapped = only !== undefined ? SERIAL_TYPES[only] : undefined;
  if (mapped === undefined || tn.arrayBounds !== undefined) return tn;
  return { ...tn, names: [{ String: { sval: 'pg_catalog' } }, { String: { sval: mapped } }] };
}

/**
 * A default or generated value as stored: converted to its column's type, which can call a cast function. An explicit
 * cast allows every conversion an assignment does, so the analysis sees at least the functions the column will call.
 */
function asColumnType(expr: AnyNode, typeName: AnyNode): AnyNode {
  return { TypeCast: { arg: expr, typeName: castTypeName(typeName) } };
}

interface NewColumn {
  name: string;
  typeName: AnyNode;
}

/**
 * `SELECT (e1), (e2) FROM <scope> [WHERE pred]`, where the scope is an existing relation (`ONLY rel`), optionally with
 * columns being added, or only the columns of a table being created. Verified by parsing it again.
 */
function restate(
  targets: readonly AnyNode[],
  scope: { rv?: AnyNode; alias?: string; newColumns: readonly NewColumn[] },
  where?: AnyNode,
): string | undefined {
  const exprs: string[] = [];
  for (const t of targets) {
    const s = deparseNode(t);
    if (s === undefined) return undefined;
    exprs.push(`(${s})`);
  }
  const casts: string[] = [];
  for (const c of scope.newColumns) {
    const s = deparseNode({ TypeCast: { arg: { A_Const: { isnull: true } }, typeName: castTypeName(c.typeName) } });
    if (s === undefined) return undefined;
    casts.push(`${s} AS ${quoteIdent(c.name)}`);
  }
  const from: string[] = [];
  if (scope.rv !== undefined) {
    const rel = rangeVarText(scope.rv);
    if (rel === undefined) return undefined;
    from.push(rel);
  }
  if (casts.length > 0)
    from.push(`(SELECT ${casts.join(', ')}) AS ${quoteIdent(scope.alias ?? 'pgwarden new columns')}`);
  let whereText = '';
  if (where !== undefined) {
    const w = deparseNode(where);
    if (w === undefined) return undefined;
    whereText = ` WHERE (${w})`;
  }
  const text = `SELECT ${exprs.join(', ')}${from.length > 0 ? ` FROM ${from.join(' CROSS JOIN ')}` : ''}${whereText}`;
  // Each piece taken from the client's statement must come back unchanged.
  const sel = parseOne(text)?.SelectStmt;
  if (sel === undefined) return undefined;
  const tl: AnyNode[] = Array.isArray(sel.targetList) ? sel.targetList : [];
  if (tl.length !== targets.length) return undefined;
  for (let i = 0; i < targets.length; i++) if (!same(tl[i]?.ResTarget?.val, targets[i])) return undefined;
  if (where !== undefined ? !same(sel.whereClause, where) : sel.whereClause !== undefined) return undefined;
  const fc: AnyNode[] = Array.isArray(sel.fromClause) ? sel.fromClause : [];
  const items: AnyNode[] =
    fc.length === 1 && fc[0]?.JoinExpr !== undefined ? [fc[0].JoinExpr.larg, fc[0].JoinExpr.rarg] : fc;
  if (items.length !== from.length) return undefined;
  let k = 0;
  if (scope.rv !== undefined) {
    const rv = items[k++]?.RangeVar;
    if (rv === undefined || rv.relname !== scope.rv.relname || rv.schemaname !== scope.rv.schemaname || rv.inh === true)
      return undefined;
  }
  if (casts.length > 0) {
    const sub: AnyNode[] = items[k]?.RangeSubselect?.subquery?.SelectStmt?.targetList ?? [];
    if (sub.length !== scope.newColumns.length) return undefined;
    for (let i = 0; i < sub.length; i++) {
      const rt = sub[i]?.ResTarget;
      const col = scope.newColumns[i];
      if (col === undefined || rt?.name !== col.name || !same(rt?.val?.TypeCast?.typeName, castTypeName(col.typeName)))
        return undefined;
    }
  }
  return text;
}

/** A statement body (view, CTAS, materialized view) as its own text, verified by parsing it again. */
function bodyText(query: AnyNode | undefined): string | undefined {
  if (query?.SelectStmt === undefined) return undefined;
  const text = deparseNode(query);
  if (text === undefined) return undefined;
  const again = parseOne(text);
  return again !== undefined && same(again, query) ? text : undefined;
}

/** Column names of an IndexElem list (plain columns) and its expressions. */
function indexTargets(params: unknown): AnyNode[] | undefined {
  const out: AnyNode[] = [];
  for (const p of Array.isArray(params) ? params : []) {
    const e: AnyNode | undefined = (p as AnyNode)?.IndexElem;
    if (e === undefined) return undefined;
    if (typeof e.name === 'string') out.push({ ColumnRef: { fields: [{ String: { sval: e.name } }] } });
    else if (e.expr !== undefined) out.push(e.expr);
    else return undefined;
  }
  return out;
}

function columnRefs(names: readonly string[]): AnyNode[] {
  return names.map((n) => ({ ColumnRef: { fields: [{ String: { sval: n } }] } }));
}

/** The query a FOREIGN KEY amounts to: it reads the referenced columns (or, unnamed, the whole referenced row). */
function foreignKeyQuery(c: AnyNode): string | undefined {
  const pk: AnyNode | undefined = c.pktable;
  if (pk === undefined || typeof pk.relname !== 'string') return undefined;
  const cols = stringsOf(c.pk_attrs);
  const targets = cols.length > 0 ? columnRefs(cols) : [{ ColumnRef: { fields: [{ String: { sval: pk.relname } }] } }];
  return restate(targets, { rv: pk, newColumns: [] });
}

interface ExprSink {
  exprs: AnyNode[];
  queries: UtilityQuery[];
  bad: string | undefined;
}

/**
 * A foreign key of a table being created that references that table itself, as PostgreSQL resolves it: the same
 * name, qualified alike. Both qualified with the same schema is the same relation. Both unqualified: the table is
 * created in the first schema of the search_path and the reference is looked up after it exists, so it finds the new
 * table — unless a temporary table or a system catalog of that name comes first, and PostgreSQL refuses a foreign key
 * from a permanent table to either (a temporary table referencing its own name finds itself in pg_temp). Anything
 * else (one side qualified) is not taken for the table itself.
 */
export function referencesItself(pk: AnyNode | undefined, self: AnyNode | undefined): boolean {
  if (pk === undefined || self === undefined || typeof pk.relname !== 'string') return false;
  if (pk.catalogname !== undefined || self.catalogname !== undefined) return false;
  return pk.relname === self.relname && (pk.schemaname ?? null) === (self.schemaname ?? null);
}

/**
 * The expressions and foreign keys of column or table constraints; exclusion constraints are refused (their operators
 * run user code). `self` is the table being created: a foreign key to it reads only its own (still empty) columns.
 */
function constraintParts(
  list: unknown,
  sink: ExprSink,
  ownColumns: readonly string[],
  columnType?: AnyNode,
  self?: AnyNode,
): void {
  for (const item of Array.isArray(list) ? list : []) {
    const c: AnyNode | undefined = (item as AnyNode)?.Constraint;
    if (c === undefined) {
      sink.bad ??= 'an unknown constraint form';
      continue;
    }
    switch (c.contype) {
      case 'CONSTR_DEFAULT':
      case 'CONSTR_GENERATED':
        if (c.raw_expr !== undefined)
          sink.exprs.push(columnType === undefined ? c.raw_expr : asColumnType(c.raw_expr, columnType));
        break;
      case 'CONSTR_CHECK':
        // Coerced to boolean as a CHECK is (an explicit cast allows every conversion the implicit one does).
        if (c.raw_expr !== undefined)
          sink.exprs.push({
            TypeCast: {
              arg: c.raw_expr,
              typeName: { names: [{ String: { sval: 'pg_catalog' } }, { String: { sval: 'bool' } }], typemod: -1 },
            },
          });
        break;
      case 'CONSTR_FOREIGN': {
        // Nothing to read elsewhere: PostgreSQL checks the referenced columns exist when it creates the table.
        if (referencesItself(c.pktable, self)) break;
        const q = foreignKeyQuery(c);
        if (q === undefined) sink.bad ??= 'a foreign key pgwarden cannot restate';
        else sink.queries.push({ text: q });
        // The referencing columns are read too: whether the constraint can be added, and which referenced rows can then
        // be deleted, answers questions about their values.
        for (const k of stringsOf(c.fk_attrs)) if (!ownColumns.includes(k)) sink.exprs.push(...columnRefs([k]));
        break;
      }
      case 'CONSTR_PRIMARY':
      case 'CONSTR_UNIQUE':
        // Uniqueness answers questions about the key columns' values: they are read.
        for (const k of stringsOf(c.keys)) if (!ownColumns.includes(k)) sink.exprs.push(...columnRefs([k]));
        for (const k of stringsOf(c.including)) if (!ownColumns.includes(k)) sink.exprs.push(...columnRefs([k]));
        break;
      case 'CONSTR_NULL':
      case 'CONSTR_NOTNULL':
      case 'CONSTR_IDENTITY':
      case 'CONSTR_ATTR_DEFERRABLE':
      case 'CONSTR_ATTR_NOT_DEFERRABLE':
      case 'CONSTR_ATTR_DEFERRED':
      case 'CONSTR_ATTR_IMMEDIATE':
        break;
      default:
        sink.bad ??= `a ${String(c.contype)
          .replace(/^CONSTR_/, '')
          .toLowerCase()} constraint`;
    }
  }
}

/**
 * The queries whose analysis covers a utility statement's reads and calls, or why it cannot be restated (the
 * statement is then refused). Depends on the statement alone, so both analyses restate it the same way.
 */
export function utilityQueries(kind: string, body: AnyNode): UtilityQueries {
  const fail = (why: string): UtilityQueries => ({ ok: false, why });
  const sink: ExprSink = { exprs: [], queries: [], bad: undefined };
  switch (kind) {
    case 'ViewStmt':
    case 'CreateTableAsStmt': {
      const q = bodyText(body.query);
      if (q === undefined)
        return fail(`the ${kind === 'ViewStmt' ? 'view' : 'statement'}'s query could not be restated for analysis`);
      return { ok: true, queries: [{ text: q }] };
    }
    case 'CreateStmt': {
      const cols: NewColumn[] = [];
      for (const e of Array.isArray(body.tableElts) ? body.tableElts : []) {
        const cd: AnyNode | undefined = (e as AnyNode)?.ColumnDef;
        if (cd !== undefined) {
          if (typeof cd.colname !== 'string' || cd.typeName === undefined)
            return fail('a column without a name or type');
          cols.push({ name: cd.colname, typeName: cd.typeName });
          if (cd.raw_default !== undefined) sink.exprs.push(asColumnType(cd.raw_default, cd.typeName));
          constraintParts(
            cd.constraints,
            sink,
            cols.map((c) => c.name),
            cd.typeName,
            body.relation,
          );
        } else if ((e as AnyNode)?.Constraint !== undefined) {
          constraintParts([e], sink, [], undefined, body.relation);
        } else return fail('a table element other than a column or constraint (LIKE)');
      }
      if (sink.bad !== undefined) return fail(sink.bad);
      // Table constraints name the new table's columns, which exist only in the restated scope.
      const own = sink.exprs.filter(
        (x) =>
          !(
            x.ColumnRef !== undefined &&
            cols.some((c) => c.name === x.ColumnRef.fields?.[0]?.String?.sval && x.ColumnRef.fields.length === 1)
          ),
      );
      // Restated even without expressions: each column's type is judged (a domain's CHECK and DEFAULT run on insert).
      if (own.length > 0 || cols.length > 0) {
        const t = restate(own, { alias: String(body.relation?.relname ?? 'pgwarden new table'), newColumns: cols });
        if (t === undefined) return fail('a column expression could not be restated for analysis');
        sink.queries.push({ text: t });
      }
      return { ok: true, queries: sink.queries };
    }
    case 'IndexStmt': {
      const targets = indexTargets(body.indexParams);
      const incl = indexTargets(body.indexIncludingParams);
      if (targets === undefined || incl === undefined || body.relation === undefined)
        return fail('an index element pgwarden cannot restate');
      const t = restate([...targets, ...incl], { rv: body.relation, newColumns: [] }, body.whereClause);
      if (t === undefined) return fail('the index expressions could not be restated for analysis');
      return { ok: true, queries: [{ text: t }] };
    }
    case 'AlterTableStmt': {
      const added: NewColumn[] = [];
      for (const item of Array.isArray(body.cmds) ? body.cmds : []) {
        const cmd: AnyNode | undefined = (item as AnyNode)?.AlterTableCmd;
        if (cmd === undefined) return fail('an unknown ALTER TABLE form');
        const def: AnyNode | undefined = cmd.def;
        if (cmd.subtype === 'AT_AddColumn') {
          const cd: AnyNode | undefined = def?.ColumnDef;
          if (cd === undefined || typeof cd.colname !== 'string' || cd.typeName === undefined)
            return fail('ADD COLUMN without a name or type');
          added.push({ name: cd.colname, typeName: cd.typeName });
          if (cd.raw_default !== undefined) sink.exprs.push(asColumnType(cd.raw_default, cd.typeName));
          constraintParts(cd.constraints, sink, [cd.colname], cd.typeName);
        } else if (cmd.subtype === 'AT_ColumnDefault' && def !== undefined) {
          sink.exprs.push(def);
        } else if (cmd.subtype === 'AT_AlterColumnType') {
          const cd: AnyNode | undefined = def?.ColumnDef;
          if (cd?.typeName === undefined) return fail('ALTER COLUMN TYPE without a type');
          // The converted column is read (USING, or the column itself) and converted to the new type, maybe by a cast function.
          sink.exprs.push(
            asColumnType(
              cd.raw_default ?? { ColumnRef: { fields: [{ String: { sval: String(cmd.name ?? '') } }] } },
              cd.typeName,
            ),
          );
        } else if (cmd.subtype === 'AT_SetNotNull' || cmd.subtype === 'AT_SetStatistics') {
          // SET NOT NULL scans the column and fails on a NULL; statistics are gathered from its values.
          sink.exprs.push({ ColumnRef: { fields: [{ String: { sval: String(cmd.name ?? '') } }] } });
        } else if (cmd.subtype === 'AT_AddConstraint') {
          constraintParts([def], sink, []);
        }
      }
      if (sink.bad !== undefined) return fail(sink.bad);
      if (sink.exprs.length > 0) {
        const t = restate(sink.exprs, { rv: body.relation, newColumns: added });
        if (t === undefined) return fail('an expression of ALTER TABLE could not be restated for analysis');
        sink.queries.push({ text: t });
      } else if (added.length > 0) {
        // The added columns' types alone (a domain's DEFAULT is computed for every existing row, its CHECK run on it).
        const t = restate([], { newColumns: added });
        if (t === undefined) return fail('a column type of ALTER TABLE could not be restated for analysis');
        sink.queries.push({ text: t });
      }
      return { ok: true, queries: sink.queries };
    }
    case 'CompositeTypeStmt': {
      // A composite type's attributes are only names and types (the grammar allows a COLLATE, nothing else): each type
      // is judged as a column of a new table is, by the restated NULL::type.
      const cols: NewColumn[] = [];
      for (const e of Array.isArray(body.coldeflist) ? body.coldeflist : []) {
        const cd: AnyNode | undefined = (e as AnyNode)?.ColumnDef;
        if (cd === undefined || typeof cd.colname !== 'string' || cd.typeName === undefined)
          return fail('an attribute without a name or type');
        if (cd.raw_default !== undefined || (cd.constraints?.length ?? 0) > 0)
          return fail('an attribute with a default or constraint');
        cols.push({ name: cd.colname, typeName: cd.typeName });
      }
      if (cols.length === 0) return { ok: true, queries: [] };
      const t = restate([], { alias: String(body.typevar?.relname ?? 'pgwarden new type'), newColumns: cols });
      if (t === undefined) return fail('an attribute type could not be restated for analysis');
      return { ok: true, queries: [{ text: t }] };
    }
    case 'CreateDomainStmt': {
      // The domain's DEFAULT and CHECK run in every statement that stores a value of it, in any session: restated as a
      // read over one column named value, of the base type (a CHECK's VALUE is that column reference).
      if (body.typeName === undefined) return fail('a domain without a base type');
      for (const item of Array.isArray(body.constraints) ? body.constraints : []) {
        const c = (item as AnyNode)?.Constraint?.contype;
        if (c !== 'CONSTR_CHECK' && c !== 'CONSTR_DEFAULT' && c !== 'CONSTR_NULL' && c !== 'CONSTR_NOTNULL')
          return fail('a domain constraint other than CHECK, DEFAULT, NULL or NOT NULL');
      }
      constraintParts(body.constraints, sink, ['value'], body.typeName);
      if (sink.bad !== undefined) return fail(sink.bad);
      const t = restate(sink.exprs, {
        alias: 'pgwarden new domain',
        newColumns: [{ name: 'value', typeName: body.typeName }],
      });
      if (t === undefined) return fail('an expression of the domain could not be restated for analysis');
      return { ok: true, queries: [{ text: t }] };
    }
    case 'CreateRangeStmt': {
      // Only the subtype: a canonical or subtype_diff function, an operator class or a collation of the role's
      // choosing would run user code or reach objects elsewhere.
      let subtype: AnyNode | undefined;
      for (const p of Array.isArray(body.params) ? body.params : []) {
        const d: AnyNode | undefined = (p as AnyNode)?.DefElem;
        if (d?.defname !== 'subtype' || d.arg?.TypeName === undefined || subtype !== undefined)
          return fail('a range type option other than subtype');
        subtype = d.arg.TypeName;
      }
      if (subtype === undefined) return fail('a range type without a subtype');
      const t = restate([], { alias: 'pgwarden new range', newColumns: [{ name: 'subtype', typeName: subtype }] });
      if (t === undefined) return fail('the range subtype could not be restated for analysis');
      return { ok: true, queries: [{ text: t }] };
    }
    case 'LockStmt':
    case 'VacuumStmt': {
      const rels: AnyNode[] =
        kind === 'LockStmt'
          ? (Array.isArray(body.relations) ? body.relations : []).map((r: AnyNode) => r?.RangeVar)
          : (Array.isArray(body.rels) ? body.rels : []).map((r: AnyNode) => r?.VacuumRelation?.relation);
      if (rels.length === 0) return fail('no relation is named');
      const names: string[] = [];
      for (const rv of rels) {
        const t = rv === undefined ? undefined : rangeVarText(rv);
        if (t === undefined) return fail('a relation name pgwarden cannot restate');
        names.push(t);
      }
      const text = `SELECT FROM ${names.join(', ')}`;
      const sel = parseOne(text)?.SelectStmt;
      const fc: AnyNode[] = sel?.fromClause ?? [];
      if (
        fc.length !== rels.length ||
        fc.some((f, i) => f?.RangeVar?.relname !== rels[i]?.relname || f?.RangeVar?.schemaname !== rels[i]?.schemaname)
      )
        return fail('a relation name pgwarden cannot restate');
      const named: NamedNeed = kind === 'LockStmt' && body.mode === ACCESS_SHARE_LOCK ? 'readable' : 'writable';
      return { ok: true, queries: [{ text, named }] };
    }
    default:
      return { ok: true, queries: [] };
  }
}

// ------------------------------------------------------------------ object rules

/** Schemas where no DDL is ever allowed, whatever the policy says. */
const SYSTEM_SCHEMAS = /^(pg_catalog|information_schema|pg_toast|pg_toast_temp_\d+|pg_temp_\d+)$/;

export type Placement =
  | { ok: true; temporary: boolean; schema: string | undefined }
  | { ok: false; why: string; hint: string | undefined };

function qualifyHint(role: RolePolicy): string | undefined {
  const first = role.ddl?.schemas[0];
  return first === undefined
    ? 'only temporary objects are allowed: CREATE TEMP …'
    : `qualify the name with its schema, e.g. ${quoteIdent(first)}.name`;
}

/**
 * Where an object named by `schema` (undefined: unqualified) lives or will be created. An unqualified name is
 * accepted only when every schema of the role's pinned search_path is one it may change, so wherever PostgreSQL
 * resolves it (the first schema the role can use, or an existing object in any of them) is allowed; pg_catalog,
 * also searched, holds only objects owned by the bootstrap superuser, which DDL by any other role cannot change.
 */
export function placeObject(
  schema: string | undefined,
  temporary: boolean,
  role: RolePolicy,
  catalog: CatalogSnapshot,
  catalogName?: string,
): Placement {
  const ddl = role.ddl;
  if (ddl === undefined) return { ok: false, why: 'has no ddl section', hint: undefined };
  if (catalogName !== undefined && catalogName !== catalog.database)
    return { ok: false, why: `names database ${catalogName}`, hint: 'use one- or two-part names' };
  if (temporary || schema === 'pg_temp') {
    if (schema !== undefined && schema !== 'pg_temp')
      return {
        ok: false,
        why: `puts a temporary object in schema ${quoteIdent(schema)}`,
        hint: 'leave temporary objects unqualified',
      };
    return ddl.temporary
      ? { ok: true, temporary: true, schema: 'pg_temp' }
      : { ok: false, why: 'makes or changes a temporary object and ddl.temporary is not set', hint: undefined };
  }
  if (schema !== undefined) {
    if (SYSTEM_SCHEMAS.test(schema))
      return {
        ok: false,
        why: `touches system schema ${quoteIdent(schema)}, which pgwarden never allows`,
        hint: undefined,
      };
    return ddl.schemas.includes(schema)
      ? { ok: true, temporary: false, schema }
      : {
          ok: false,
          why: `touches schema ${quoteIdent(schema)}, which is not in ddl.schemas`,
          hint: `schemas this role may change: ${ddl.schemas.map(quoteIdent).join(', ') || 'none'}`,
        };
  }
  const path = role.searchPath;
  const covered = path.length > 0 && path.every((s) => ddl.schemas.includes(s) || (s === 'pg_temp' && ddl.temporary));
  if (!covered)
    return {
      ok: false,
      why: `uses an unqualified name and the search_path (${path.map(quoteIdent).join(', ') || 'empty'}) reaches schemas outside ddl.schemas`,
      hint: qualifyHint(role),
    };
  return { ok: true, temporary: false, schema: undefined };
}

/** A channel allowed by the patterns: exact, or by prefix (`jobs_*`). Channel names are compared exactly as PostgreSQL stores them. */
export function channelAllowed(patterns: readonly ChannelPattern[] | undefined, channel: string): boolean {
  for (const p of patterns ?? []) if (p.prefix ? channel.startsWith(p.name) : channel === p.name) return true;
  return false;
}
