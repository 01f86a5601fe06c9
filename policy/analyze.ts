// Walks one libpg-query statement tree and reports what it touches: relations, columns, functions, operators, casts, writes, locking.
//
// The walk is generic (every object and array of the tree is visited, so a node type this file
// does not know still has its RangeVars, ColumnRefs and FuncCalls found) with node-specific
// handling where meaning depends on position: FROM items and their scopes, CTE visibility, the
// bare (untagged) RangeVars held by typed fields such as InsertStmt.relation, and write targets.
// Nothing here decides; evaluate.ts applies the role to these facts. Where a fact is uncertain
// (an unqualified column that several FROM items could supply) every possibility is reported, so
// the decision errs towards denying.
import { narrowedColumns } from './narrow.ts';
import { plainSetConfigCalls, type SetConfigCall } from './settings.ts';
import type { CatalogType, CatalogFunction, CatalogRelation, CatalogSnapshot, RolePolicy, WriteKind } from './types.ts';
import { INTROSPECTION_RELATION_NAMES, SYSTEM_DENIED_COLUMNS, SYSTEM_DENIED_COLUMN_REASONS } from './introspection.ts';

/* The parse tree is a JSON value; handlers read it through this loose shape and check every field. */
// biome-ignore lint/suspicious/noExplicitAny: the parse tree is untyped JSON; every handler checks the fields it reads
export type AnyNode = Record<string, any>;

export interface RelationUse {
  schema: string;
  name: string;
  /** `schema.name`, exactly as the parser produced the parts. */
  key: string;
  access: 'read' | 'write';
  writeKind: WriteKind | undefined;
  /** The catalog entry, undefined for system relations the snapshot does not carry (and for `absent` ones). */
  relation: CatalogRelation | undefined;
  /** The name's parts as the statement first wrote them (`secrets`, `public.secrets`): refusals name it so, whether it exists or not. */
  written?: readonly string[];
  /**
   * True when the name resolves to nothing and lies outside the role's relations: it is reported as if it existed
   * (in the first schema on its path the role may not use), so the refusal is the one an existing relation gets.
   */
  absent?: boolean;
  /** Named as a type (`NULL::secrets`, a row type): refused as a type the role may not use, whether the relation exists or not. */
  viaType?: boolean;
}

export interface ColumnUse {
  /** `schema.name` of a base relation. */
  relation: string;
  /** Column name, or '*' for a star / whole-row reference. */
  column: string;
  /**
   * 'natural' with column '*': the relation is an input of a NATURAL JOIN, whose compared columns are whatever the
   * table has when the statement runs (the columns the snapshot knows are reported by name too, as 'join_using'). Only
   * a role limited to some columns of the relation (allowedColumns) refuses it; deniedColumns goes by the names.
   */
  how: 'column' | 'star' | 'whole_row' | 'join_using' | 'write' | 'natural';
}

export interface FunctionUse {
  schema: string;
  name: string;
  key: string;
  overloads: CatalogFunction[] | undefined;
  /** String constants passed as arguments (undefined for non-constant arguments). */
  constArgs: (string | undefined)[];
  /** Number of arguments. */
  argc: number;
  /** The first argument is a call of pg_catalog.pg_backend_pid() (see SELF_BACKEND_FUNCTIONS in evaluate.ts). */
  ownBackend?: true;
  /**
   * pg_notify's channel is the bare parameter $n (1-based), of type text in the server's analysis: its value is only
   * known at Bind, where the session checks it against channels.notify (evaluate.ts attaches that check).
   */
  channelParam?: number;
  /**
   * pg_terminate_backend / pg_cancel_backend's pid is the parameter $n (1-based), bare or cast to an integer type: its
   * value is only known at Bind, where the session checks it is one of its subject's own backends (evaluate.ts).
   */
  pidParam?: number;
}

/** `pg_backend_pid()` or `pg_catalog.pg_backend_pid()` as written: a call with no arguments, no aggregate or window parts. */
function isOwnBackendPid(n: AnyNode | undefined): boolean {
  const f = n?.FuncCall;
  if (f === undefined) return false;
  const names = stringsOf(f.funcname);
  const named =
    (names.length === 1 && names[0] === 'pg_backend_pid') ||
    (names.length === 2 && names[0] === 'pg_catalog' && names[1] === 'pg_backend_pid');
  const bare =
    (f.args === undefined || (Array.isArray(f.args) && f.args.length === 0)) &&
    f.agg_order === undefined &&
    f.agg_filter === undefined &&
    f.over === undefined &&
    f.agg_star !== true &&
    f.agg_distinct !== true &&
    f.func_variadic !== true;
  return named && bare;
}

export interface OperatorUse {
  schema: string | undefined;
  name: string;
}

export type ProblemCode =
  | 'unknown_relation'
  /** A relation the role's relations cover (or a system catalog name) that does not exist: PostgreSQL's 42P01. */
  | 'undefined_relation'
  | 'cross_database'
  | 'unknown_function'
  | 'user_operator'
  | 'unknown_type'
  | 'input_runs_code'
  | 'too_complex';

export interface Problem {
  code: ProblemCode;
  subject: string;
  message: string;
  /** Byte offset of the construct in the statement text (libpg-query's `location`), when known. */
  location?: number;
  /**
   * unknown_relation only: every place the name could resolve is a schema the role may create in (never pg_temp), so
   * once a catalog read after the statement arrived confirms it absent, it is PostgreSQL's 42P01.
   */
  confirmable?: true;
}

export interface WriteUse {
  kind: 'InsertStmt' | 'UpdateStmt' | 'DeleteStmt' | 'MergeStmt' | 'TruncateStmt' | 'CopyFrom';
  writeKind: WriteKind;
  relation: RelationUse | undefined;
  /** False for the statement's own top-level write, true for one nested in a CTE, EXPLAIN, PREPARE, … */
  nested: boolean;
}

export interface LimitInfo {
  option: string;
  count: AnyNode | undefined;
  offset: AnyNode | undefined;
}

export interface Analysis {
  kind: string;
  relations: RelationUse[];
  columns: ColumnUse[];
  functions: FunctionUse[];
  operators: OperatorUse[];
  /** Type names of casts (and other type references) to reg* types. */
  regTypes: string[];
  writes: WriteUse[];
  /** SELECT … INTO anywhere in the tree. */
  hasInto: boolean;
  /** FOR UPDATE / SHARE anywhere in the tree. */
  hasLocking: boolean;
  /** LIMIT of the top-level SELECT (undefined for other kinds). */
  limit: LimitInfo | undefined;
  problems: Problem[];
  /** True when the decision may depend on the value of a literal (so the cache must not normalise it away). */
  literalSensitive: boolean;
  /** Columns are exactly those the server will check (PostgreSQL's own analysis), not pgwarden's estimate. */
  exactColumns?: boolean;
  /** pgwarden's own analysis: how often each parameter $n occurs anywhere in the statement. */
  paramRefs?: Map<number, number>;
  /**
   * The statement is a plain `SELECT set_config(…)` with constant arguments (settings.ts plainSetConfigCalls; for the
   * server's analysis, server-analysis.ts serverSetConfigCalls): its calls, decided as SETs by checkFacts.
   */
  setConfigs?: SetConfigCall[];
  /**
   * Type names the snapshot does not know, left to PostgreSQL's analysis on the session's own connection because the
   * session may have made them (TemporaryNames.deferTypes): each as written, at most its last two parts.
   */
  deferredTypes?: DeferredType[];
}

/** A type name judged by the server's analysis on the session's own connection (evaluate.ts, server-check.ts). */
export interface DeferredType {
  /** The name's parts as written (schema and name, or name). */
  names: readonly string[];
  /** A string constant is cast to it: PostgreSQL converts it while analysing, so it must be an enum (no user code). */
  fromString: boolean;
}

/** Object-identifier types whose input function looks names up in the catalog. */
export const REG_TYPES: ReadonlySet<string> = new Set([
  'regclass',
  'regproc',
  'regprocedure',
  'regoper',
  'regoperator',
  'regtype',
  'regnamespace',
  'regrole',
  'regconfig',
  'regdictionary',
  'regcollation',
]);

/** Recursion guard: deeper trees are reported as too complex rather than risking the JS stack. */
const MAX_DEPTH = 1500;

class TooDeep extends Error {}

interface FromItem {
  /** Name used to qualify columns: alias, relation name, CTE name; undefined when unreferenceable. */
  refname: string | undefined;
  /** Base relation, for column checks. */
  base:
    | {
        key: string;
        schema: string;
        name: string;
        /** Visible column names (after `AS t(a, b)` renaming); undefined = unknown. */
        columns: readonly string[] | undefined;
        /** Catalog column names, position for position with `columns`. */
        original: readonly string[] | undefined;
        /** Renamed but the catalog columns are unknown: any column reference counts as a whole-row read. */
        opaque: boolean;
      }
    | undefined;
  /** Output columns of a derived item (subquery, CTE, function); undefined = unknown. */
  columns: readonly string[] | undefined;
  /** Join inputs; visible by their own names unless the join has an alias. */
  children: FromItem[] | undefined;
  hidesChildren: boolean;
  /** `(a JOIN b) AS j(x, y)`: renamed join output columns (mapped conservatively to whole rows). */
  joinRenamed?: readonly string[];
  /** A join without USING or NATURAL: its output columns are its inputs' columns, left then right. */
  joinPlain?: boolean;
}

interface Scope {
  parent: Scope | undefined;
  items: FromItem[];
}

interface CteDef {
  name: string;
  columns: readonly string[] | undefined;
}

interface CteChain {
  parent: CteChain | undefined;
  defs: Map<string, CteDef>;
}

interface Ctx {
  scope: Scope | undefined;
  ctes: CteChain | undefined;
  depth: number;
}

function stringsOf(list: unknown): string[] {
  const out: string[] = [];
  if (!Array.isArray(list)) return out;
  for (const n of list) {
    if (n !== null && typeof n === 'object' && 'String' in n) out.push(String((n as AnyNode).String?.sval ?? ''));
  }
  return out;
}

function lookupCte(chain: CteChain | undefined, name: string): CteDef | undefined {
  for (let c = chain; c !== undefined; c = c.parent) {
    const d = c.defs.get(name);
    if (d !== undefined) return d;
  }
  return undefined;
}

/** Leaves (non-join items) under an item. */
function leaves(item: FromItem, out: FromItem[] = []): FromItem[] {
  if (item.children === undefined) out.push(item);
  else for (const c of item.children) leaves(c, out);
  return out;
}

/** Items addressable by refname at one scope level (join children unless the join is aliased). */
function named(items: readonly FromItem[], out: FromItem[] = []): FromItem[] {
  for (const it of items) {
    if (it.refname !== undefined) out.push(it);
    if (it.children !== undefined && !it.hidesChildren) named(it.children, out);
  }
  return out;
}

function outputColumns(item: FromItem): readonly string[] | undefined {
  if (item.base !== undefined) return item.base.columns;
  if (item.children === undefined) return item.columns;
  const all: string[] = [];
  for (const c of item.children) {
    const cols = outputColumns(c);
    if (cols === undefined) return undefined;
    all.push(...cols);
  }
  return all;
}

/** The parameter number of a bare `$n` (no cast, no expression around it). */
function bareParam(n: AnyNode | undefined): number | undefined {
  const k = n?.ParamRef?.number;
  return typeof k === 'number' && k > 0 ? k : undefined;
}

/** CREATE TABLE's serial pseudo-types (PostgreSQL's transformColumnDefinition), never resolved as types. */
const SERIAL_NAMES: ReadonlySet<string> = new Set([
  'serial',
  'serial2',
  'serial4',
  'serial8',
  'smallserial',
  'bigserial',
]);

/** Integer type names a pid parameter may be cast to as written (`$1::int`): the value reaches the call unchanged. */
const INT_CAST_NAMES: ReadonlySet<string> = new Set(['int2', 'int4', 'int8', 'smallint', 'integer', 'int', 'bigint']);

/** `$n`, or `$n::int` (any integer type, pg_catalog's or unqualified): the parameter's number. */
function intParam(n: AnyNode | undefined): number | undefined {
  const tc = n?.TypeCast;
  if (tc === undefined) return bareParam(n);
  const names = stringsOf(tc.typeName?.names);
  const last = names[names.length - 1];
  const qualified = names.length === 1 || (names.length === 2 && names[0] === 'pg_catalog');
  const array = Array.isArray(tc.typeName?.arrayBounds) && tc.typeName.arrayBounds.length > 0;
  if (!qualified || last === undefined || !INT_CAST_NAMES.has(last) || array || tc.typeName?.typmods !== undefined)
    return undefined;
  return bareParam(tc.arg);
}

function constString(n: AnyNode | undefined): string | undefined {
  if (n === undefined || n === null) return undefined;
  const c = n.A_Const;
  if (c !== undefined) {
    if (c.sval !== undefined) return String(c.sval.sval ?? '');
    return undefined;
  }
  // 'x'::text — look through a cast of a constant.
  const tc = n.TypeCast;
  if (tc !== undefined) return constString(tc.arg);
  return undefined;
}

/** The analyzer of one statement; create one per statement. */
class Analyzer {
  readonly out: Analysis;
  private readonly catalog: CatalogSnapshot;
  private readonly role: RolePolicy;
  private readonly relPath: string[];
  private readonly funcPath: string[];
  private readonly seenRel = new Map<string, RelationUse>();
  private readonly seenCol = new Set<string>();
  private readonly seenFn = new Set<string>();
  private root: unknown;

  /** The session's temporary objects (SessionView.tempObjects, deferTemporary). */
  private readonly temporary: TemporaryNames;

  /**
   * RangeVars PostgreSQL opens outside parse analysis (COPY's table, TRUNCATE's): its 42P01 for them carries no
   * position, so pgwarden's does not either.
   */
  private readonly unpositioned = new Set<AnyNode>();

  constructor(kind: string, catalog: CatalogSnapshot, role: RolePolicy, temporary: TemporaryNames = {}) {
    this.catalog = catalog;
    this.role = role;
    this.temporary = temporary;
    const path: string[] = [];
    for (const s of role.searchPath) {
      if (s === '$user') {
        if (role.dbRole !== undefined) path.push(role.dbRole);
      } else path.push(s);
    }
    // Postgres searches pg_catalog first unless the path names it explicitly.
    this.relPath = path.includes('pg_catalog') ? path : ['pg_catalog', ...path];
    this.funcPath = this.relPath;
    this.out = {
      kind,
      relations: [],
      columns: [],
      functions: [],
      operators: [],
      regTypes: [],
      writes: [],
      hasInto: false,
      hasLocking: false,
      limit: undefined,
      problems: [],
      literalSensitive: false,
      paramRefs: new Map(),
    };
  }

  run(stmt: AnyNode): Analysis {
    this.root = stmt;
    try {
      this.walk(stmt, { scope: undefined, ctes: undefined, depth: 0 });
    } catch (err) {
      if (!(err instanceof TooDeep) && !(err instanceof RangeError)) throw err;
      this.problem('too_complex', 'statement', 'statement nesting is too deep to analyse');
    }
    return this.out;
  }

  private problem(code: ProblemCode, subject: string, message: string, location?: number): void {
    this.out.problems.push(location === undefined ? { code, subject, message } : { code, subject, message, location });
  }

  private deeper(ctx: Ctx): Ctx {
    if (ctx.depth + 1 > MAX_DEPTH) throw new TooDeep();
    return { scope: ctx.scope, ctes: ctx.ctes, depth: ctx.depth + 1 };
  }

  // ---------------------------------------------------------------- generic walk

  /** Visits every node below `node`, dispatching tagged nodes to their handlers. */
  private walk(node: unknown, ctx: Ctx): void {
    if (node === null || typeof node !== 'object') return;
    if (ctx.depth > MAX_DEPTH) throw new TooDeep();
    if (Array.isArray(node)) {
      for (const n of node) this.walk(n, ctx);
      return;
    }
    const obj = node as AnyNode;
    for (const key in obj) {
      const value = obj[key];
      if (value === null || typeof value !== 'object') continue;
      const c0 = key.charCodeAt(0);
      if (c0 >= 65 && c0 <= 90) this.visitTagged(key, value as AnyNode, ctx);
      else this.walkField(key, value, ctx);
    }
  }

  /** An untagged field: a bare struct of a known shape, or a list/struct to walk. */
  private walkField(key: string, value: unknown, ctx: Ctx): void {
    if (Array.isArray(value)) {
      this.walk(value, this.deeper(ctx));
      return;
    }
    const v = value as AnyNode;
    // Typed fields hold bare structs without their tag: recognise the ones that matter by shape.
    if (typeof v.relname === 'string') {
      this.readRangeVar(v, ctx);
      return;
    }
    if (key === 'typeName' || (Array.isArray(v.names) && 'typemod' in v)) {
      this.typeName(v);
      this.walk(v, this.deeper(ctx));
      return;
    }
    if (typeof v.op === 'string' && typeof v.limitOption === 'string') {
      this.select(v, this.deeper(ctx), false);
      return;
    }
    if (Array.isArray(v.ctes)) {
      // A WithClause reached generically: analyse the CTE bodies (their names scope nothing here).
      this.withClause(v, this.deeper(ctx));
      return;
    }
    this.walk(v, this.deeper(ctx));
  }

  private visitTagged(tag: string, n: AnyNode, ctx0: Ctx): void {
    const ctx = this.deeper(ctx0);
    switch (tag) {
      case 'SelectStmt':
        this.select(n, ctx, n === (this.root as AnyNode)?.SelectStmt);
        return;
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        this.dml(tag, n, ctx);
        return;
      case 'TruncateStmt':
        for (const r of n.relations ?? []) {
          if (r?.RangeVar !== undefined) this.unpositioned.add(r.RangeVar);
          const rel = r?.RangeVar !== undefined ? this.relation(r.RangeVar, 'write', 'truncate') : undefined;
          this.out.writes.push({
            kind: 'TruncateStmt',
            writeKind: 'truncate',
            relation: rel,
            nested: n !== (this.root as AnyNode)?.TruncateStmt,
          });
        }
        return;
      case 'CopyStmt':
        this.copy(n, ctx);
        return;
      case 'RangeVar':
        this.readRangeVar(n, ctx);
        return;
      case 'ColumnRef':
        this.columnRef(n, ctx);
        return;
      case 'FuncCall':
        this.funcCall(n, ctx);
        return;
      case 'A_Expr':
        if (
          n.kind !== 'AEXPR_BETWEEN' &&
          n.kind !== 'AEXPR_NOT_BETWEEN' &&
          n.kind !== 'AEXPR_BETWEEN_SYM' &&
          n.kind !== 'AEXPR_NOT_BETWEEN_SYM'
        ) {
          this.operator(stringsOf(n.name));
        }
        this.walk(n.lexpr, ctx);
        this.walk(n.rexpr, ctx);
        return;
      case 'SubLink':
        if (n.operName !== undefined) this.operator(stringsOf(n.operName));
        this.walk(n.testexpr, ctx);
        this.subquery(n.subselect, ctx);
        return;
      case 'SortBy':
        if (n.useOp !== undefined) this.operator(stringsOf(n.useOp));
        this.walk(n.node, ctx);
        return;
      case 'TypeCast':
        if (n.typeName !== undefined) this.typeName(n.typeName, constString(n.arg) !== undefined);
        if (n.typeName !== undefined && isRegType(n.typeName)) this.out.literalSensitive = true;
        this.walk(n.arg, ctx);
        return;
      case 'TypeName':
        this.typeName(n);
        this.walk(n, ctx);
        return;
      case 'RangeSubselect':
      case 'RangeFunction':
      case 'JoinExpr':
      case 'RangeTableFunc':
      case 'RangeTableSample':
      case 'JsonTable': {
        // A FROM item outside a FROM list (not produced by the grammar today): analyse it in a scope of its own.
        const scope: Scope = { parent: ctx.scope, items: [] };
        this.fromItem({ [tag]: n }, { scope, ctes: ctx.ctes, depth: ctx.depth }, scope);
        return;
      }
      case 'WithClause':
        this.withClause(n, ctx);
        return;
      case 'ParamRef': {
        const k = Number(n.number ?? 0);
        this.out.paramRefs?.set(k, (this.out.paramRefs.get(k) ?? 0) + 1);
        return;
      }
      case 'String':
      case 'A_Const':
      case 'Integer':
      case 'Float':
      case 'Boolean':
      case 'BitString':
      case 'A_Star':
        return;
      default:
        this.walk(n, ctx);
    }
  }

  // ---------------------------------------------------------------- relations

  /** Resolves a RangeVar to a catalog relation (or reports why it cannot be). */
  private relation(
    rv: AnyNode,
    access: 'read' | 'write',
    writeKind?: WriteKind,
    asType?: { written: string[] },
  ): RelationUse | undefined {
    const relname = typeof rv.relname === 'string' ? rv.relname : '';
    const schemaname = typeof rv.schemaname === 'string' && rv.schemaname !== '' ? rv.schemaname : undefined;
    const catalogname = typeof rv.catalogname === 'string' && rv.catalogname !== '' ? rv.catalogname : undefined;
    const display = [catalogname, schemaname, relname].filter((x) => x !== undefined).join('.');
    if (catalogname !== undefined && catalogname !== this.catalog.database) {
      this.problem(
        'cross_database',
        display,
        `relation ${display} names database ${catalogname}, not ${this.catalog.database}`,
      );
      return undefined;
    }
    let schema: string | undefined;
    // The session's own temporary relations are never in the snapshot: a name written pg_temp.x is one of them (it can
    // be nothing else), and so, when deferring, is an unqualified name (PostgreSQL searches pg_temp first). The server's
    // analysis, which always follows for statements that read or write relations, resolves it and judges what it is.
    // Only in a statement whose every relation that analysis resolves, though: TRUNCATE, DROP, COMMENT, … are decided by
    // their names alone, so there an unqualified name stays what the snapshot says (DEFERRABLE_KINDS).
    const temporary =
      this.role.ddl?.temporary === true &&
      (schemaname === 'pg_temp' ||
        (schemaname === undefined && this.temporary.defer === true && DEFERRABLE_KINDS.has(this.out.kind)));
    if (temporary) {
      schema = 'pg_temp';
    } else if (schemaname !== undefined) {
      if (this.relationExists(schemaname, relname)) schema = schemaname;
    } else {
      for (const s of this.relPath) {
        if (this.relationExists(s, relname)) {
          schema = s;
          break;
        }
      }
    }
    // A relation written with its schema, in a schema the role may change (docs/policy.md, "Scoped DDL"), may have been
    // created after the snapshot was read. Its name needs no search_path, and the server's analysis, which always follows
    // for statements that read or write relations, resolves it and judges its columns.
    if (schema === undefined && schemaname !== undefined && this.role.ddl?.schemas.includes(schemaname) === true)
      schema = schemaname;
    // Where PostgreSQL points its 42P01 for this name (nowhere for COPY's and TRUNCATE's own table).
    const at = typeof rv.location === 'number' && !this.unpositioned.has(rv) ? rv.location : undefined;
    // PostgreSQL names a relation in its errors as written, without the database part.
    const written = schemaname !== undefined ? `${schemaname}.${relname}` : relname;
    let absent = false;
    if (schema === undefined) {
      // Unknown and forbidden relations (docs/policy.md, "Unknown and forbidden relations"). Where PostgreSQL could
      // resolve the name (the schema written, else pg_temp for a role that may make temporary objects, which is
      // searched first, then the path): if one of those lies outside the role's relations (and is not a schema it
      // may change), the name is analysed as the forbidden relation it may be, so whether it exists never shows;
      // else, if one is a schema the role may change (ddl.schemas, pg_temp), the role may have just made it and the
      // snapshot cannot know: refused as unresolved; else it does not exist: PostgreSQL's 42P01.
      const candidates =
        schemaname !== undefined
          ? [schemaname]
          : this.role.ddl?.temporary === true && this.temporary.objects !== false
            ? ['pg_temp', ...this.relPath]
            : this.relPath;
      const outside = candidates.find((s) => !this.inScope(s, relname) && !this.ownSchema(s));
      if (outside === undefined) {
        const where = schemaname !== undefined ? '' : ` on the search path (${this.relPath.join(', ')})`;
        if (candidates.some((s) => this.ownSchema(s))) {
          const problem: Problem = {
            code: 'unknown_relation',
            subject: written,
            message: `relation ${display} is not in pgwarden's catalog snapshot${where}; objects made since pgwarden read the catalog are known after a reload`,
          };
          // Absent from a catalog read after the statement arrived, it does not exist (the session's own temporary
          // relations are never in the catalog, so a name that may be one of them is never confirmed absent).
          if (!candidates.includes('pg_temp')) {
            problem.confirmable = true;
            if (at !== undefined) problem.location = at;
          }
          this.out.problems.push(problem);
        } else {
          this.problem(
            'undefined_relation',
            written,
            `pgwarden's catalog snapshot holds no table, view, materialized view, partitioned or foreign table ${display}${where}`,
            at,
          );
        }
        return undefined;
      }
      schema = outside;
      absent = true;
    }
    const key = `${schema}.${relname}`;
    const seenKey = `${access}:${writeKind ?? ''}:${key}`;
    const seen = this.seenRel.get(seenKey);
    if (seen !== undefined) return seen;
    const use: RelationUse = {
      schema,
      name: relname,
      key,
      access,
      writeKind,
      relation: absent ? undefined : this.catalog.relations.get(key),
      written: asType?.written ?? (schemaname !== undefined ? [schemaname, relname] : [relname]),
    };
    if (absent) use.absent = true;
    if (asType !== undefined) use.viaType = true;
    this.seenRel.set(seenKey, use);
    this.out.relations.push(use);
    return use;
  }

  /**
   * True when `schema.name` is one the role may know about: in its relations or write relations, or a system catalog
   * name (pg_catalog and information_schema are the same in every database of a server version, and loaded whole).
   */
  private inScope(schema: string, name: string): boolean {
    if (schema === 'pg_catalog' || schema === 'information_schema') return true;
    for (const list of [this.role.relations, this.role.write?.relations ?? []]) {
      for (const p of list) if (p.schema === schema && (p.name === '*' || p.name === name)) return true;
    }
    return false;
  }

  /**
   * A schema the role may make objects in (ddl.schemas, or pg_temp with ddl.temporary): the snapshot lags behind it,
   * and whether a name exists there is no secret to the role, which sees "already exists" (or "is a table's row
   * type", or the object it drops or comments on). Not for a role whose only kind is create_schema: it makes the
   * schema and nothing in it, so names there are as hidden from it as in any schema outside its relations.
   */
  private ownSchema(schema: string): boolean {
    const ddl = this.role.ddl;
    if (ddl === undefined) return false;
    if (schema === 'pg_temp') return ddl.temporary;
    return ddl.schemas.includes(schema) && ddl.kinds.some((k) => k !== 'create_schema');
  }

  private relationExists(schema: string, name: string): boolean {
    if (this.catalog.relations.has(`${schema}.${name}`)) return true;
    // System relations are resolvable even when the snapshot only carries user schemas.
    return schema === 'pg_catalog' && INTROSPECTION_RELATION_NAMES.has(`pg_catalog.${name}`);
  }

  /** A RangeVar met outside a FROM list (LOCK, VACUUM, INTO, …): a CTE name or a relation read. */
  private readRangeVar(rv: AnyNode, ctx: Ctx): void {
    if (
      rv.schemaname === undefined &&
      rv.catalogname === undefined &&
      typeof rv.relname === 'string' &&
      lookupCte(ctx.ctes, rv.relname) !== undefined
    )
      return;
    this.relation(rv, 'read');
  }

  private baseItem(use: RelationUse, refname: string, aliasColnames: string[] = []): FromItem {
    const cols = use.relation?.columns;
    const original = cols !== undefined && cols.length > 0 ? cols.map((c) => c.name) : undefined;
    // `FROM customers AS x(a, b, c, d)` renames columns by position: x.d is customers.ssn.
    let columns = original;
    if (aliasColnames.length > 0 && original !== undefined)
      columns = [...aliasColnames, ...original.slice(aliasColnames.length)];
    return {
      refname,
      // A relation of a ddl schema made after the snapshot was read has unknown columns: any use of one counts as the whole row.
      base: {
        key: use.key,
        schema: use.schema,
        name: use.name,
        columns,
        original,
        opaque:
          (aliasColnames.length > 0 && original === undefined) ||
          (use.relation === undefined && this.role.ddl?.schemas.includes(use.schema) === true),
      },
      columns: undefined,
      children: undefined,
      hidesChildren: false,
    };
  }

  /** Records a column of a base leaf under its catalog name (undoing alias renaming). */
  private useLeaf(leaf: FromItem, name: string, how: ColumnUse['how']): void {
    const b = leaf.base;
    if (b === undefined) return;
    if (b.opaque) {
      this.useColumn(b.key, '*', 'whole_row');
      return;
    }
    const idx = b.columns !== undefined ? b.columns.indexOf(name) : -1;
    const orig = idx >= 0 && b.original !== undefined ? (b.original[idx] ?? name) : name;
    this.useColumn(b.key, orig, how);
  }

  /** Aliased joins with a column list under `item` that expose `name`: read their inputs in full. */
  private renamedJoinColumn(item: FromItem, name: string): boolean {
    if (item.children === undefined) return false;
    if (item.joinRenamed?.includes(name)) {
      // `(a JOIN b ON …) AS j(x, y)` renames the join's output columns by position: left's, then right's.
      const i = item.joinRenamed.indexOf(name);
      const [left, right] = item.children;
      const lc = left === undefined ? undefined : outputColumns(left);
      const rc = right === undefined ? undefined : outputColumns(right);
      if (
        item.joinPlain === true &&
        item.children.length === 2 &&
        item.joinRenamed.lastIndexOf(name) === i &&
        lc !== undefined &&
        rc !== undefined
      ) {
        const side = i < lc.length ? left : right;
        const orig = i < lc.length ? lc[i] : rc[i - lc.length];
        if (side !== undefined && orig !== undefined) {
          this.qualifiedColumn(side, orig);
          return true;
        }
      }
      this.wholeItem(item, 'whole_row');
      return true;
    }
    let hit = false;
    for (const c of item.children) if (this.renamedJoinColumn(c, name)) hit = true;
    return hit;
  }

  // ---------------------------------------------------------------- columns

  private useColumn(relation: string, column: string, how: ColumnUse['how']): void {
    const k = `${relation}\u0000${column}\u0000${how}`;
    if (this.seenCol.has(k)) return;
    this.seenCol.add(k);
    this.out.columns.push({ relation, column, how });
    // Columns no role may read (other roles' settings, data values): reported through the problem list,
    // which every caller of the analysis refuses, as the role's deniedColumns would be. Only introspection
    // roles can read system relations at all; `*` counts the hidden columns the relation has (all when
    // unknown, but a snapshot without system columns turns every `t.oid` into a possible whole-row read:
    // there only real stars count).
    const hidden = SYSTEM_DENIED_COLUMNS.get(relation);
    if (hidden !== undefined && this.role.catalog === 'introspection') {
      const known = this.catalog.relations.get(relation)?.columns.map((c) => c.name);
      const whole = column === '*' && (known !== undefined || how === 'star');
      const cols = whole
        ? [...hidden].filter((c) => known === undefined || known.includes(c))
        : hidden.has(column)
          ? [column]
          : [];
      if (cols.length === 0) return;
      const why = cols
        .map((c) => `${c} (${SYSTEM_DENIED_COLUMN_REASONS.get(relation)?.get(c) ?? 'hidden'})`)
        .join(', ');
      const what =
        column === '*' ? `* or a whole-row reference to ${relation} includes` : `column ${column} of ${relation} holds`;
      this.problem(
        'unknown_relation',
        `${relation}.${column}`,
        `${what} ${why}: pgwarden lets no role read it (rule: builtin.catalog)`,
      );
    }
  }

  /** Marks every column of every base relation under `item` as read in full (star or whole row). */
  private wholeItem(item: FromItem, how: 'star' | 'whole_row'): void {
    for (const leaf of leaves(item)) if (leaf.base !== undefined) this.useColumn(leaf.base.key, '*', how);
  }

  /**
   * Records the possible sources of an unqualified column name: at the nearest level with a
   * definite match, every leaf that has (or may have) the column; levels with only uncertain
   * matches do not stop the search outward.
   */
  private resolveBare(name: string, scope: Scope | undefined): boolean {
    let matched = false;
    for (let s = scope; s !== undefined; s = s.parent) {
      let definite = false;
      for (const item of s.items) {
        if (this.renamedJoinColumn(item, name)) {
          matched = true;
          definite = true;
        }
        for (const leaf of leaves(item)) {
          const cols = leaf.base !== undefined ? leaf.base.columns : leaf.columns;
          const has = cols === undefined ? 'maybe' : cols.includes(name) ? 'yes' : 'no';
          if (has === 'no') continue;
          this.useLeaf(leaf, name, 'column');
          matched = true;
          if (has === 'yes') definite = true;
        }
      }
      if (definite) return true;
    }
    return matched;
  }

  /** The nearest FROM item called `name` (Postgres: the innermost level that has one). */
  private findRef(name: string, scope: Scope | undefined): FromItem | undefined {
    for (let s = scope; s !== undefined; s = s.parent) {
      for (const it of named(s.items)) if (it.refname === name) return it;
    }
    return undefined;
  }

  /** An unaliased base relation `schema.name` in scope (for 3-part column references). */
  private findQualified(schema: string, name: string, scope: Scope | undefined): FromItem | undefined {
    for (let s = scope; s !== undefined; s = s.parent) {
      for (const it of named(s.items)) {
        if (it.base !== undefined && it.base.schema === schema && it.base.name === name && it.refname === name)
          return it;
      }
    }
    return undefined;
  }

  /** `item.col`: a column of the item, or functional notation `col(item)` when it has no such column. */
  private qualifiedColumn(item: FromItem, col: string): void {
    let found = this.renamedJoinColumn(item, col);
    for (const leaf of leaves(item)) {
      const cols = leaf.base !== undefined ? leaf.base.columns : leaf.columns;
      if (cols === undefined) {
        // Unknown columns: it may be this column.
        this.useLeaf(leaf, col, 'column');
      } else if (cols.includes(col)) {
        found = true;
        this.useLeaf(leaf, col, 'column');
      }
    }
    if (found) return;
    // Postgres reads `t.f` as f(t) when t has no column f: a whole-row reference passed to a
    // function. Only possible when a function of that name exists on the path.
    if (this.funcPath.some((s) => this.catalog.functions.has(`${s}.${col}`))) {
      this.wholeItem(item, 'whole_row');
      this.resolveFunction([col], [], 1);
      return;
    }
    // A column the snapshot does not know of a relation the token limits to some columns: one added since the
    // snapshot was read, judged by its name (the server's analysis would see it too, but a cached verdict may not).
    for (const leaf of leaves(item)) {
      if (
        leaf.base !== undefined &&
        narrowedColumns(this.role, leaf.base.key, this.catalog.relations.get(leaf.base.key)) !== undefined
      )
        this.useLeaf(leaf, col, 'column');
    }
  }

  private columnRef(n: AnyNode, ctx: Ctx): void {
    const fields: AnyNode[] = Array.isArray(n.fields) ? n.fields : [];
    const star = fields.length > 0 && fields[fields.length - 1]?.A_Star !== undefined;
    const names = stringsOf(fields);
    const scope = ctx.scope;
    if (star) {
      if (names.length === 0) {
        // `*`: every item of the current level.
        for (const it of scope?.items ?? []) this.wholeItem(it, 'star');
        return;
      }
      const item = this.refItem(names, scope);
      if (item !== undefined) this.wholeItem(item, 'star');
      else this.unresolvedStar(names, scope);
      return;
    }
    if (names.length === 1) {
      const name = names[0] ?? '';
      if (this.resolveBare(name, scope)) return;
      const item = this.findRef(name, scope);
      if (item !== undefined) this.wholeItem(item, 'whole_row');
      return;
    }
    if (names.length === 2) {
      const [a = '', b = ''] = names;
      const item = this.findRef(a, scope);
      if (item !== undefined) this.qualifiedColumn(item, b);
      else this.resolveBare(b, scope); // Postgres will error; report the possible column anyway
      return;
    }
    if (names.length === 3) {
      const [a = '', b = '', c = ''] = names;
      // schema.table.column …
      const q = this.findQualified(a, b, scope);
      if (q !== undefined) this.qualifiedColumn(q, c);
      // … or table.column.field
      const t = this.findRef(a, scope);
      if (t !== undefined) this.qualifiedColumn(t, b);
      if (q === undefined && t === undefined) {
        this.resolveBare(c, scope);
        this.resolveBare(b, scope);
      }
      return;
    }
    if (names.length === 4) {
      const [cat = '', a = '', b = '', c = ''] = names;
      if (cat !== this.catalog.database) {
        this.problem('cross_database', names.join('.'), `column reference ${names.join('.')} names database ${cat}`);
        return;
      }
      const q = this.findQualified(a, b, scope);
      if (q !== undefined) this.qualifiedColumn(q, c);
      else this.resolveBare(c, scope);
      return;
    }
    for (const name of names) this.resolveBare(name, scope);
  }

  /** The item named by the qualifier of `q.*` / `s.t.*` / `db.s.t.*`. */
  private refItem(names: string[], scope: Scope | undefined): FromItem | undefined {
    if (names.length === 1) return this.findRef(names[0] ?? '', scope);
    if (names.length === 2) return this.findQualified(names[0] ?? '', names[1] ?? '', scope);
    if (names.length === 3 && names[0] === this.catalog.database)
      return this.findQualified(names[1] ?? '', names[2] ?? '', scope);
    return undefined;
  }

  /** `x.*` where x names no FROM item: Postgres errors, but be safe and treat it as every item. */
  private unresolvedStar(_names: string[], scope: Scope | undefined): void {
    for (let s = scope; s !== undefined; s = s.parent) for (const it of s.items) this.wholeItem(it, 'star');
  }

  // ---------------------------------------------------------------- functions, operators, types

  private funcCall(n: AnyNode, ctx: Ctx): void {
    const names = stringsOf(n.funcname);
    const args: AnyNode[] = Array.isArray(n.args) ? n.args : [];
    this.resolveFunction(
      names,
      args.map((a) => constString(a)),
      args.length,
      isOwnBackendPid(args[0]),
      bareParam(args[0]),
      intParam(args[0]),
    );
    this.walk(n.args, ctx);
    this.walk(n.agg_order, ctx);
    this.walk(n.agg_filter, ctx);
    this.walk(n.over, ctx);
  }

  /** Records every function a call may reach (all schemas of the path that define the name). */
  resolveFunction(
    names: string[],
    constArgs: (string | undefined)[],
    argc: number,
    ownBackend = false,
    firstParam?: number,
    firstIntParam?: number,
  ): void {
    let candidates: string[];
    let fname: string;
    if (names.length === 1) {
      fname = names[0] ?? '';
      candidates = this.funcPath.filter((s) => this.catalog.functions.has(`${s}.${fname}`));
      if (candidates.length === 0) candidates = ['pg_catalog'];
    } else if (names.length === 2) {
      fname = names[1] ?? '';
      candidates = [names[0] ?? ''];
    } else if (names.length === 3 && names[0] === this.catalog.database) {
      fname = names[2] ?? '';
      candidates = [names[1] ?? ''];
    } else {
      this.problem('unknown_function', names.join('.'), `function ${names.join('.')} cannot be resolved`);
      return;
    }
    for (const schema of candidates) {
      const key = `${schema}.${fname}`;
      const overloads = this.catalog.functions.get(key);
      if (fname === 'current_setting' || fname === 'set_config' || fname === 'pg_notify' || /^to_reg/.test(fname))
        this.out.literalSensitive = true;
      // Only pg_notify's channel is ever checked at Bind; for other functions the parameter is irrelevant.
      const channelParam = fname === 'pg_notify' ? firstParam : undefined;
      // Only the backend-signalling functions' pid is ever checked at Bind (evaluate.ts SELF_BACKEND_FUNCTIONS).
      const pidParam = fname === 'pg_terminate_backend' || fname === 'pg_cancel_backend' ? firstIntParam : undefined;
      const dedupe = `${key}\u0000${constArgs.join('\u0001')}\u0000${ownBackend ? 'own' : ''}\u0000${channelParam ?? ''}\u0000${pidParam ?? ''}`;
      if (this.seenFn.has(dedupe)) continue;
      this.seenFn.add(dedupe);
      this.out.functions.push({
        schema,
        name: fname,
        key,
        overloads,
        constArgs,
        argc,
        ...(ownBackend ? { ownBackend: true as const } : {}),
        ...(channelParam !== undefined ? { channelParam } : {}),
        ...(pidParam !== undefined ? { pidParam } : {}),
      });
    }
  }

  private operator(names: string[]): void {
    if (names.length === 0) return;
    if (names.length === 1) {
      const op = names[0] ?? '';
      // An operator defined in a schema on the path may win over pg_catalog's by argument types.
      for (const s of this.funcPath) {
        if (s !== 'pg_catalog' && this.catalog.userOperators.has(`${s}.${op}`)) {
          this.out.operators.push({ schema: s, name: op });
          this.problem(
            'user_operator',
            `${s}.${op}`,
            `operator ${op} may resolve to the user-defined operator ${s}.${op}`,
          );
          return;
        }
      }
      this.out.operators.push({ schema: undefined, name: op });
      return;
    }
    const schema = names[0] ?? '';
    const op = names[names.length - 1] ?? '';
    this.out.operators.push({ schema, name: op });
    if (schema !== 'pg_catalog' || names.length > 2) {
      this.problem('user_operator', names.join('.'), `operator OPERATOR(${names.join('.')}) is outside pg_catalog`);
    }
  }

  private typeName(t: AnyNode, fromString = false): void {
    const names = stringsOf(t.names);
    const last = names[names.length - 1];
    // `_regclass` is regclass[] by its catalog name: an array of them prints every element's name.
    const reg = last?.replace(/^_/, '');
    if (
      reg !== undefined &&
      REG_TYPES.has(reg) &&
      (names.length === 1 || names[0] === 'pg_catalog' || (names.length === 3 && names[1] === 'pg_catalog'))
    ) {
      this.out.regTypes.push(reg);
      this.out.literalSensitive = true;
    }
    const found = this.resolveType(names, fromString);
    // `'{1}'::some_domain[]`: the server converts the constant while analysing the statement, before any
    // decision, and that conversion would run the domain's CHECK (or a range subtype's comparison function).
    const isArray = Array.isArray(t.arrayBounds) && t.arrayBounds.length > 0;
    // `t[]` is t's array type, named `_t` in t's schema.
    const elemRunsCode =
      isArray &&
      found !== undefined &&
      this.catalog.types?.get(`${found.schema}._${found.name}`)?.inputRunsCode === true;
    if (fromString && found !== undefined && (found.inputRunsCode === true || elemRunsCode)) {
      const display = names.join('.') + (isArray ? '[]' : '');
      this.problem(
        'input_runs_code',
        display,
        `converting a string to ${display} runs SQL code (a domain CHECK or a comparison function) while PostgreSQL merely analyses the statement (rule: builtin.types)`,
      );
    }
  }

  /**
   * Resolves a type name as Postgres would (pg_catalog, then the pinned search path). A table's row
   * type (`NULL::secrets`, `json_populate_record(NULL::t, …)`) reads that relation's shape, so it is
   * a relation reference and a whole-row use; a name that resolves to nothing is denied.
   */
  private resolveType(names: string[], fromString = false): CatalogType | undefined {
    const types = this.catalog.types;
    if (types === undefined || names.length === 0) return undefined;
    const last = names[names.length - 1] ?? '';
    const display = names.join('.');
    let found: CatalogType | undefined;
    if (names.length === 1) {
      for (const schema of this.relPath) {
        found = types.get(`${schema}.${last}`);
        if (found !== undefined) break;
      }
    } else {
      if (names.length === 3 && names[0] !== this.catalog.database) {
        this.problem(
          'cross_database',
          display,
          `type ${display} names database ${names[0]}, not ${this.catalog.database}`,
        );
        return undefined;
      }
      found = types.get(`${names[names.length - 2]}.${last}`);
    }
    // A row type names its relation: written as in the statement, so that the refusal of `NULL::secrets` and of
    // `NULL::missing` read alike (docs/policy.md, "Unknown and forbidden relations").
    const written = names.slice(-2);
    if (found === undefined) {
      const schemaname = names.length > 1 ? names[names.length - 2] : undefined;
      const candidates = schemaname !== undefined ? [schemaname] : this.relPath;
      if (candidates.every((s) => this.inScope(s, last))) {
        // The session may have made it (its open transaction, its temporary objects, an earlier statement of the
        // text): where PostgreSQL could find it is a schema the role may create in (pg_temp, searched first for types,
        // when it may make temporary objects). PostgreSQL's analysis on the session's own connection resolves it and
        // judges what it is (server-check.ts); the session asks for that only after this refusal (policy-gate.ts).
        const mine =
          schemaname === undefined && this.role.ddl?.temporary === true ? ['pg_temp', ...candidates] : candidates;
        // serial and its kin are no types: CREATE TABLE turns them into an integer column and a sequence (no lookup
        // resolves them, so leaving them to the server refused what the snapshot's own handling allows).
        if (
          this.temporary.deferTypes === true &&
          !SERIAL_NAMES.has(names[names.length - 1] ?? '') &&
          mine.some((s) => this.ownSchema(s))
        ) {
          (this.out.deferredTypes ??= []).push({ names: names.slice(-2), fromString });
          return undefined;
        }
        this.problem(
          'unknown_type',
          display,
          `type ${display} was not found in pgwarden's catalog snapshot (search_path: ${this.relPath.join(', ')})`,
        );
      } else {
        // It may be the row type of a relation outside the role's relations: refused as that, existing or not.
        const use = this.relation({ schemaname, relname: last }, 'read', undefined, { written });
        if (use !== undefined) this.useColumn(use.key, '*', 'whole_row');
      }
      return undefined;
    }
    if (found.relation !== undefined) {
      const dot = found.relation.indexOf('.');
      const use = this.relation(
        { schemaname: found.relation.slice(0, dot), relname: found.relation.slice(dot + 1) },
        'read',
        undefined,
        { written },
      );
      if (use !== undefined) this.useColumn(use.key, '*', 'whole_row');
    }
    return found;
  }

  // ---------------------------------------------------------------- statements

  private subquery(node: unknown, ctx: Ctx): void {
    if (node === null || typeof node !== 'object') return;
    const n = node as AnyNode;
    if (n.SelectStmt !== undefined) this.select(n.SelectStmt, this.deeper(ctx), false);
    else this.walk(n, ctx);
  }

  /** WITH: CTE bodies analysed with the right visibility; returns the chain later parts see. */
  private withClause(w: AnyNode, ctx: Ctx): CteChain {
    const chain: CteChain = { parent: ctx.ctes, defs: new Map() };
    const ctes: AnyNode[] = [];
    for (const c of Array.isArray(w.ctes) ? w.ctes : [])
      if (c?.CommonTableExpr !== undefined) ctes.push(c.CommonTableExpr);
    const recursive = w.recursive === true;
    if (recursive) {
      // WITH RECURSIVE: every CTE name is visible in every body (including its own).
      for (const c of ctes)
        chain.defs.set(String(c.ctename ?? ''), { name: String(c.ctename ?? ''), columns: cteColumns(c) });
    }
    for (const c of ctes) {
      const name = String(c.ctename ?? '');
      // A non-recursive CTE sees only the CTEs before it (and enclosing ones).
      const bodyCtx: Ctx = { scope: ctx.scope, ctes: chain, depth: ctx.depth + 1 };
      const q: AnyNode | undefined = c.ctequery;
      if (q?.SelectStmt !== undefined) this.select(q.SelectStmt, bodyCtx, false);
      else this.walk(q, bodyCtx);
      this.walk(c.search_clause, bodyCtx);
      this.walk(c.cycle_clause, bodyCtx);
      if (!recursive) chain.defs.set(name, { name, columns: cteColumns(c) });
    }
    return chain;
  }

  /** SELECT / VALUES / set operation, as its own scope level. */
  private select(s: AnyNode, ctx0: Ctx, topLevel: boolean): void {
    const ctx: Ctx = { ...ctx0 };
    if (s.withClause !== undefined) ctx.ctes = this.withClause(s.withClause, ctx);
    if (topLevel) {
      this.out.limit = {
        option: String(s.limitOption ?? 'LIMIT_OPTION_DEFAULT'),
        count: s.limitCount,
        offset: s.limitOffset,
      };
    }
    if (s.intoClause !== undefined) this.out.hasInto = true;
    if (Array.isArray(s.lockingClause) && s.lockingClause.length > 0) this.out.hasLocking = true;
    const scope: Scope = { parent: ctx.scope, items: [] };
    const inner: Ctx = { scope, ctes: ctx.ctes, depth: ctx.depth + 1 };
    if (s.op !== undefined && s.op !== 'SETOP_NONE') {
      // Each branch is its own query; ORDER BY / LIMIT of the set operation see only its output.
      const branchCtx: Ctx = { scope: ctx.scope, ctes: ctx.ctes, depth: ctx.depth + 1 };
      if (s.larg !== undefined) this.select(s.larg, branchCtx, false);
      if (s.rarg !== undefined) this.select(s.rarg, branchCtx, false);
    }
    for (const f of Array.isArray(s.fromClause) ? s.fromClause : []) this.fromItem(f, inner, scope);
    this.walk(s.valuesLists, inner);
    this.walk(s.targetList, inner);
    this.walk(s.whereClause, inner);
    this.walk(s.groupClause, inner);
    this.walk(s.havingClause, inner);
    this.walk(s.windowClause, inner);
    // ORDER BY and DISTINCT ON a bare name that is an output column's alias use that output column
    // (PostgreSQL's findTargetlistEntrySQL92), whose own references the target list walk above has recorded.
    const aliases = new Set<string>();
    for (const t of Array.isArray(s.targetList) ? s.targetList : [])
      if (typeof t?.ResTarget?.name === 'string') aliases.add(t.ResTarget.name);
    const isAlias = (node: AnyNode | undefined): boolean => {
      const fields = node?.ColumnRef?.fields;
      const only = Array.isArray(fields) && fields.length === 1 ? fields[0]?.String?.sval : undefined;
      return typeof only === 'string' && aliases.has(only);
    };
    for (const item of Array.isArray(s.distinctClause) ? s.distinctClause : [])
      if (!isAlias(item)) this.walk(item, inner);
    for (const item of Array.isArray(s.sortClause) ? s.sortClause : []) {
      const by: AnyNode | undefined = item?.SortBy;
      if (isAlias(by?.node)) {
        this.walk({ ...by, node: undefined }, inner);
        continue;
      }
      this.walk(item, inner);
    }
    this.walk(s.limitCount, inner);
    this.walk(s.limitOffset, inner);
    if (Array.isArray(s.lockingClause)) {
      for (const l of s.lockingClause) this.walk(l?.LockingClause?.lockedRels, inner);
    }
    // Anything else on the node (future fields) is still walked, minus what was handled above.
    for (const key in s) {
      if (HANDLED_SELECT_FIELDS.has(key)) continue;
      const v = s[key];
      if (v !== null && typeof v === 'object') this.walkField(key, v, inner);
    }
  }

  /** Adds one FROM item (and everything inside it) to `scope`. */
  private fromItem(node: AnyNode, ctx: Ctx, scope: Scope): FromItem | undefined {
    const item = this.buildFromItem(node, ctx, scope);
    if (item !== undefined) scope.items.push(item);
    return item;
  }

  private buildFromItem(node: AnyNode, ctx: Ctx, scope: Scope): FromItem | undefined {
    if (node === null || typeof node !== 'object') return undefined;
    if (ctx.depth > MAX_DEPTH) throw new TooDeep();
    if (node.RangeVar !== undefined) {
      const rv: AnyNode = node.RangeVar;
      const alias: string | undefined = rv.alias?.aliasname;
      if (rv.schemaname === undefined && rv.catalogname === undefined) {
        const cte = lookupCte(ctx.ctes, String(rv.relname ?? ''));
        if (cte !== undefined) {
          return {
            refname: alias ?? cte.name,
            base: undefined,
            columns: aliasColumns(rv.alias, cte.columns),
            children: undefined,
            hidesChildren: false,
          };
        }
      }
      const use = this.relation(rv, 'read');
      if (use === undefined)
        return {
          refname: alias ?? rv.relname,
          base: undefined,
          columns: undefined,
          children: undefined,
          hidesChildren: false,
        };
      return this.baseItem(use, alias ?? use.name, stringsOf(rv.alias?.colnames));
    }
    if (node.RangeSubselect !== undefined) {
      const rs: AnyNode = node.RangeSubselect;
      // LATERAL sees the items before it on this level; otherwise only enclosing levels.
      const subCtx: Ctx = { scope: rs.lateral === true ? scope : scope.parent, ctes: ctx.ctes, depth: ctx.depth + 1 };
      let cols: readonly string[] | undefined;
      if (rs.subquery?.SelectStmt !== undefined) {
        this.select(rs.subquery.SelectStmt, subCtx, false);
        cols = selectColumns(rs.subquery.SelectStmt);
      } else this.walk(rs.subquery, subCtx);
      return {
        refname: rs.alias?.aliasname,
        base: undefined,
        columns: aliasColumns(rs.alias, cols),
        children: undefined,
        hidesChildren: false,
      };
    }
    if (node.RangeFunction !== undefined) {
      const rf: AnyNode = node.RangeFunction;
      // Function arguments may refer to earlier items (functions in FROM are implicitly LATERAL).
      this.walk(rf.functions, { scope, ctes: ctx.ctes, depth: ctx.depth + 1 });
      this.walk(rf.coldeflist, ctx);
      let cols: string[] | undefined;
      if (Array.isArray(rf.coldeflist) && rf.coldeflist.length > 0) {
        cols = rf.coldeflist.map((c: AnyNode) => String(c?.ColumnDef?.colname ?? ''));
      } else if (Array.isArray(rf.alias?.colnames)) cols = stringsOf(rf.alias.colnames);
      if (cols !== undefined && rf.ordinality === true) cols.push('ordinality');
      return {
        refname: rf.alias?.aliasname,
        base: undefined,
        columns: cols,
        children: undefined,
        hidesChildren: false,
      };
    }
    if (node.JoinExpr !== undefined) {
      const j: AnyNode = node.JoinExpr;
      // Both inputs go on a temporary level so the join's own ON/USING see them.
      const joinScope: Scope = { parent: scope.parent, items: [...scope.items] };
      const jctx: Ctx = { scope: joinScope, ctes: ctx.ctes, depth: ctx.depth + 1 };
      const left = this.fromItem(j.larg, jctx, joinScope);
      const right = this.fromItem(j.rarg, jctx, joinScope);
      const children = [left, right].filter((x): x is FromItem => x !== undefined);
      for (const name of stringsOf(j.usingClause)) {
        for (const side of children) this.joinColumn(side, name);
      }
      if (j.isNatural === true && left !== undefined && right !== undefined) this.naturalJoin(left, right);
      this.walk(j.quals, jctx);
      const alias: string | undefined = j.alias?.aliasname;
      const item: FromItem = {
        refname: alias,
        base: undefined,
        columns: undefined,
        children,
        hidesChildren: alias !== undefined,
      };
      const renamed = stringsOf(j.alias?.colnames);
      if (renamed.length > 0) item.joinRenamed = renamed;
      item.joinPlain = stringsOf(j.usingClause).length === 0 && j.isNatural !== true;
      if (j.join_using_alias?.aliasname !== undefined) {
        // `USING (a) AS x`: x.a names the merged column of both sides.
        const using = stringsOf(j.usingClause);
        children.push({
          refname: j.join_using_alias.aliasname,
          base: undefined,
          columns: using,
          children: undefined,
          hidesChildren: false,
        });
      }
      return item;
    }
    if (node.RangeTableSample !== undefined) {
      const ts: AnyNode = node.RangeTableSample;
      const inner = this.buildFromItem(ts.relation, ctx, scope);
      this.walk(ts.args, { scope, ctes: ctx.ctes, depth: ctx.depth + 1 });
      this.walk(ts.repeatable, { scope, ctes: ctx.ctes, depth: ctx.depth + 1 });
      return inner;
    }
    if (node.RangeTableFunc !== undefined) {
      const tf: AnyNode = node.RangeTableFunc;
      this.walk(tf, { scope, ctes: ctx.ctes, depth: ctx.depth + 1 });
      const cols = (Array.isArray(tf.columns) ? tf.columns : []).map((c: AnyNode) =>
        String(c?.RangeTableFuncCol?.colname ?? ''),
      );
      return {
        refname: tf.alias?.aliasname,
        base: undefined,
        columns: aliasColumns(tf.alias, cols),
        children: undefined,
        hidesChildren: false,
      };
    }
    // JSON_TABLE and anything newer: walk it, expose unknown columns.
    const tag = Object.keys(node)[0] ?? '';
    const body: AnyNode | undefined = node[tag];
    // The body's fields, not the tagged node: walking `{JsonTable: …}` would come straight back here.
    this.walk(body, { scope, ctes: ctx.ctes, depth: ctx.depth + 1 });
    return {
      refname: body?.alias?.aliasname,
      base: undefined,
      columns: undefined,
      children: undefined,
      hidesChildren: false,
    };
  }

  /** A USING column: read on every base leaf of the side that has (or may have) it. */
  private joinColumn(side: FromItem, name: string): void {
    this.renamedJoinColumn(side, name);
    for (const leaf of leaves(side)) {
      if (leaf.base === undefined) continue;
      const cols = leaf.base.columns;
      if (cols === undefined || cols.includes(name)) this.useLeaf(leaf, name, 'join_using');
    }
  }

  /** NATURAL JOIN compares every common column; when a side's columns are unknown, assume all of the other's. */
  private naturalJoin(left: FromItem, right: FromItem): void {
    for (const leaf of [...leaves(left), ...leaves(right)]) {
      if (leaf.base === undefined) continue;
      const k = `${leaf.base.key}\u0000*\u0000natural`;
      if (this.seenCol.has(k)) continue;
      this.seenCol.add(k);
      this.out.columns.push({ relation: leaf.base.key, column: '*', how: 'natural' });
    }
    const lc = outputColumns(left);
    const rc = outputColumns(right);
    let common: readonly string[];
    if (lc !== undefined && rc !== undefined) common = lc.filter((c) => rc.includes(c));
    else if (lc !== undefined) common = lc;
    else if (rc !== undefined) common = rc;
    else {
      this.wholeItem(left, 'whole_row');
      this.wholeItem(right, 'whole_row');
      return;
    }
    for (const name of common) {
      this.joinColumn(left, name);
      this.joinColumn(right, name);
    }
  }

  private dml(tag: 'InsertStmt' | 'UpdateStmt' | 'DeleteStmt' | 'MergeStmt', s: AnyNode, ctx0: Ctx): void {
    const ctx: Ctx = { ...ctx0 };
    const nested = s !== (this.root as AnyNode)?.[tag];
    if (s.withClause !== undefined) ctx.ctes = this.withClause(s.withClause, ctx);
    const writeKind: WriteKind =
      tag === 'InsertStmt' ? 'insert' : tag === 'UpdateStmt' ? 'update' : tag === 'DeleteStmt' ? 'delete' : 'merge';
    const rv: AnyNode | undefined = s.relation;
    const target = rv !== undefined ? this.relation(rv, 'write', writeKind) : undefined;
    this.out.writes.push({ kind: tag, writeKind, relation: target, nested });
    const scope: Scope = { parent: ctx.scope, items: [] };
    const inner: Ctx = { scope, ctes: ctx.ctes, depth: ctx.depth + 1 };
    const targetItem = target !== undefined ? this.baseItem(target, rv?.alias?.aliasname ?? target.name) : undefined;
    const written = (name: string): void => {
      if (target !== undefined) this.useColumn(target.key, name, 'write');
    };
    if (tag === 'InsertStmt') {
      const cols: AnyNode[] = Array.isArray(s.cols) ? s.cols : [];
      if (cols.length === 0) {
        if (target !== undefined) this.useColumn(target.key, '*', 'write');
      }
      for (const c of cols) written(String(c?.ResTarget?.name ?? ''));
      this.walk(
        cols.map((c) => c?.ResTarget?.indirection),
        inner,
      );
      // The VALUES / SELECT source cannot see the target.
      this.subquery(s.selectStmt, { scope: ctx.scope, ctes: ctx.ctes, depth: ctx.depth + 1 });
      const oc: AnyNode | undefined = s.onConflictClause;
      if (oc !== undefined && targetItem !== undefined) {
        // ON CONFLICT sees the target and `excluded` (the proposed row, same columns).
        scope.items.push(targetItem, { ...targetItem, refname: 'excluded' });
        for (const ie of oc.infer?.indexElems ?? []) {
          const name = ie?.IndexElem?.name;
          if (typeof name === 'string') this.useColumn(target?.key ?? '', name, 'column');
          this.walk(ie?.IndexElem?.expr, inner);
        }
        this.walk(oc.infer?.whereClause, inner);
        for (const t of oc.targetList ?? []) {
          if (typeof t?.ResTarget?.name === 'string') written(t.ResTarget.name);
          this.walk(t?.ResTarget?.val, inner);
          this.walk(t?.ResTarget?.indirection, inner);
        }
        this.walk(oc.whereClause, inner);
      }
    } else if (tag === 'UpdateStmt') {
      if (targetItem !== undefined) scope.items.push(targetItem);
      for (const f of Array.isArray(s.fromClause) ? s.fromClause : []) this.fromItem(f, inner, scope);
      for (const t of s.targetList ?? []) {
        if (typeof t?.ResTarget?.name === 'string') written(t.ResTarget.name);
        this.walk(t?.ResTarget?.val, inner);
        this.walk(t?.ResTarget?.indirection, inner);
      }
      this.walk(s.whereClause, inner);
    } else if (tag === 'DeleteStmt') {
      if (targetItem !== undefined) scope.items.push(targetItem);
      for (const f of Array.isArray(s.usingClause) ? s.usingClause : []) this.fromItem(f, inner, scope);
      this.walk(s.whereClause, inner);
    } else {
      if (targetItem !== undefined) scope.items.push(targetItem);
      if (s.sourceRelation !== undefined) this.fromItem(s.sourceRelation, inner, scope);
      this.walk(s.joinCondition, inner);
      for (const w of s.mergeWhenClauses ?? []) {
        const mw: AnyNode | undefined = w?.MergeWhenClause;
        if (mw === undefined) {
          this.walk(w, inner);
          continue;
        }
        this.walk(mw.condition, inner);
        const tl: AnyNode[] = Array.isArray(mw.targetList) ? mw.targetList : [];
        if (mw.commandType === 'CMD_INSERT' && tl.length === 0 && target !== undefined)
          this.useColumn(target.key, '*', 'write');
        for (const t of tl) {
          if (typeof t?.ResTarget?.name === 'string') written(t.ResTarget.name);
          this.walk(t?.ResTarget?.val, inner);
          this.walk(t?.ResTarget?.indirection, inner);
        }
        this.walk(mw.values, inner);
      }
    }
    if (s.returningClause !== undefined) {
      if (targetItem !== undefined && !scope.items.includes(targetItem)) scope.items.push(targetItem);
      this.walk(s.returningClause, inner);
    }
    // Future fields are still walked.
    for (const key in s) {
      if (HANDLED_DML_FIELDS.has(key)) continue;
      const v = s[key];
      if (v !== null && typeof v === 'object') this.walkField(key, v, inner);
    }
  }

  private copy(c: AnyNode, ctx: Ctx): void {
    const nested = c !== (this.root as AnyNode)?.CopyStmt;
    if (c.relation !== undefined) {
      this.unpositioned.add(c.relation);
      const from = c.is_from === true;
      const use = this.relation(c.relation, from ? 'write' : 'read', from ? 'copy_from' : undefined);
      if (from) this.out.writes.push({ kind: 'CopyFrom', writeKind: 'copy_from', relation: use, nested });
      if (use !== undefined) {
        const cols = stringsOf(c.attlist);
        if (cols.length === 0) this.useColumn(use.key, '*', from ? 'write' : 'star');
        for (const col of cols) this.useColumn(use.key, col, from ? 'write' : 'column');
        if (c.whereClause !== undefined) {
          const scope: Scope = { parent: undefined, items: [this.baseItem(use, use.name)] };
          this.walk(c.whereClause, { scope, ctes: ctx.ctes, depth: ctx.depth + 1 });
        }
      }
    }
    if (c.query !== undefined) this.subquery(c.query, ctx);
    this.walk(c.options, ctx);
    // COPY options and file names are literals the decision depends on.
    this.out.literalSensitive = true;
  }
}

const HANDLED_SELECT_FIELDS = new Set([
  'withClause',
  'intoClause',
  'lockingClause',
  'larg',
  'rarg',
  'fromClause',
  'valuesLists',
  'targetList',
  'whereClause',
  'groupClause',
  'havingClause',
  'windowClause',
  'distinctClause',
  'sortClause',
  'limitCount',
  'limitOffset',
]);

const HANDLED_DML_FIELDS = new Set([
  'withClause',
  'relation',
  'cols',
  'selectStmt',
  'onConflictClause',
  'fromClause',
  'targetList',
  'whereClause',
  'usingClause',
  'sourceRelation',
  'joinCondition',
  'mergeWhenClauses',
  'returningClause',
]);

function isRegType(t: AnyNode): boolean {
  const names = stringsOf(t.names);
  const last = names[names.length - 1];
  return last !== undefined && REG_TYPES.has(last.replace(/^_/, ''));
}

function aliasColumns(alias: AnyNode | undefined, cols: readonly string[] | undefined): readonly string[] | undefined {
  const names = stringsOf(alias?.colnames);
  if (names.length === 0) return cols;
  if (cols === undefined) return undefined;
  return [...names, ...cols.slice(names.length)];
}

function cteColumns(c: AnyNode): readonly string[] | undefined {
  const q: AnyNode | undefined = c.ctequery;
  let cols: readonly string[] | undefined;
  if (q?.SelectStmt !== undefined) cols = selectColumns(q.SelectStmt);
  else {
    const dml: AnyNode | undefined = q?.InsertStmt ?? q?.UpdateStmt ?? q?.DeleteStmt ?? q?.MergeStmt;
    cols = dml?.returningClause !== undefined ? targetColumns(dml.returningClause.exprs) : [];
  }
  const names = stringsOf(c.aliascolnames);
  if (names.length === 0) return cols;
  if (cols === undefined) return undefined;
  return [...names, ...cols.slice(names.length)];
}

/** Output column names of a SELECT, or undefined when a star makes them unknown. */
function selectColumns(s: AnyNode): readonly string[] | undefined {
  if (s.op !== undefined && s.op !== 'SETOP_NONE') return s.larg !== undefined ? selectColumns(s.larg) : undefined;
  if (Array.isArray(s.valuesLists) && s.valuesLists.length > 0) {
    const first: AnyNode | undefined = s.valuesLists[0];
    const n = Array.isArray(first?.List?.items) ? first.List.items.length : 0;
    return Array.from({ length: n }, (_, i) => `column${i + 1}`);
  }
  return targetColumns(s.targetList);
}

function targetColumns(list: unknown): readonly string[] | undefined {
  const out: string[] = [];
  for (const t of Array.isArray(list) ? list : []) {
    const rt: AnyNode | undefined = t?.ResTarget;
    if (rt === undefined) return undefined;
    if (typeof rt.name === 'string') {
      out.push(rt.name);
      continue;
    }
    const v: AnyNode | undefined = rt.val;
    if (v?.ColumnRef !== undefined) {
      const fields: AnyNode[] = v.ColumnRef.fields ?? [];
      const last = fields[fields.length - 1];
      if (last?.A_Star !== undefined) return undefined;
      out.push(String(last?.String?.sval ?? '?column?'));
    } else if (v?.FuncCall !== undefined) {
      const names = stringsOf(v.FuncCall.funcname);
      out.push(names[names.length - 1] ?? '?column?');
    } else out.push('?column?');
  }
  return out;
}

/**
 * Statement kinds whose every relation PostgreSQL's analysis resolves (policy/server-plan.ts gives each a text naming
 * them), so that an unqualified name in them may be judged as the session's temporary relation (deferTemporary): the
 * server's answer then says what the name really is when the statement runs. Not TRUNCATE, DROP, COMMENT, RENAME,
 * REFRESH, … which server-plan.ts leaves to pgwarden alone: there a name taken as temporary was never checked, and
 * `TRUNCATE secrets; SELECT 1` emptied the permanent relation when no temporary one of that name existed.
 */
export const DEFERRABLE_KINDS: ReadonlySet<string> = new Set([
  'SelectStmt',
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'ExplainStmt',
  'DeclareCursorStmt',
  'PrepareStmt',
  'CopyStmt',
  'LockStmt',
  // Their bodies (the query a table is created from, a view's query); the new object's name is placed by ddl.ts.
  'CreateTableAsStmt',
  'ViewStmt',
]);

/** What the session's temporary objects mean for name resolution (from SessionView). */
export interface TemporaryNames {
  /** False: the session has none, so pg_temp is not searched. */
  objects?: boolean;
  /** Unqualified relation names are judged as the session's temporary relations (SessionView.deferTemporary). */
  defer?: boolean;
  /** Type names the snapshot lacks, where the session may have made them, are left to the server (SessionView.deferTypes). */
  deferTypes?: boolean;
}

/** Analyses one statement (the `stmt` of a RawStmt). Throws only on programming errors; evaluate catches. */
export function analyzeStatement(
  stmt: AnyNode,
  catalog: CatalogSnapshot,
  role: RolePolicy,
  temporary: TemporaryNames = {},
): Analysis {
  const kind = Object.keys(stmt)[0] ?? 'Unknown';
  const a = new Analyzer(kind, catalog, role, temporary).run(stmt);
  if (kind === 'SelectStmt') {
    const calls = plainSetConfigCalls(stmt.SelectStmt ?? {});
    if (calls !== undefined) a.setConfigs = calls;
  }
  return a;
}
