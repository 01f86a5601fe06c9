// Turns PostgreSQL's own analysed query trees (by OID) into the facts the policy decides on: relations with the columns the server will check, functions, operators, types.
//
// The trees come from the upstream server (debug_print_parse on pgwarden's analysis connection), so
// name resolution, function and operator choice, coercions and column numbering are the server's,
// not a re-implementation. Permissions are read where the executor will check them: the range table
// entries' requiredPerms and selected/inserted/updated column sets (PostgreSQL ≤ 15) or the Query's
// RTEPermissionInfo list (16+). The facts are handed to evaluate.ts's checkFacts, so both analyses
// are judged by the same rules and speak with the same messages.
//
// Fail closed: a node type this file does not know, an OID the catalog does not return, a column
// number the relation does not have, or a tree shape that is not a Query is a denial.
import type { Analysis, ColumnUse, FunctionUse, RelationUse, WriteUse } from './analyze.ts';
import { REG_TYPES } from './analyze.ts';
import type { SetConfigCall } from './settings.ts';
import type { Denial } from './evaluate.ts';
import {
  bitmapField,
  IncrementalWalk,
  isNode,
  isNumberList,
  numberField,
  walkNodes,
  wordField,
  type Incremental,
  type IncrementalOptions,
  type PgNode,
  type PgValue,
} from './pgnode.ts';
import type { CatalogFunction, CatalogRelation, WriteKind } from './types.ts';
import { SqlState } from '../lib/sqlstate.ts';

export interface ServerRelation {
  schema: string;
  name: string;
  /** pg_class.relkind */
  kind: string;
  /** attnum → attname of live columns (attnum > 0). */
  columns: ReadonlyMap<number, string>;
}

export interface ServerFunction {
  schema: string;
  name: string;
  /** prokind: f, a, w, p */
  kind: string;
  volatility: 'i' | 's' | 'v';
  returnsSet: boolean;
  argTypes: string[];
}

export interface ServerOperator {
  schema: string;
  name: string;
  /** pg_operator.oprcode; 0 for a shell operator. */
  funcOid: number;
}

export interface ServerType {
  schema: string;
  name: string;
  /** pg_type.typtype: b, c, d, e, p, r, m */
  typtype: string;
  /** Relation of a row type (0 when none). */
  relid: number;
  /** Base type of a domain (0 when none). */
  baseType: number;
  /** Element type of an array (0 when none). */
  elemType: number;
  /** CHECK constraint expressions of a domain and its DEFAULT expression, as trees (pg_constraint.conbin, pg_type.typdefaultbin). */
  constraints: readonly PgValue[];
  /**
   * Functions the executor reaches through the type itself, never named in a tree: the default btree and hash
   * operator classes' comparison and hash procedures and operator functions (GREATEST, DISTINCT, array and row
   * comparison, hashing), and a range type's canonical and subtype_diff functions.
   */
  implicitFunctions: readonly number[];
  /** Types compared or hashed along with this one: a composite's column types, a range's subtype. */
  memberTypes: readonly number[];
}

/** What pgwarden has learnt from the server about the OIDs the trees mention; absent = not fetched yet, null = does not exist. */
export interface OidCatalog {
  relations: ReadonlyMap<number, ServerRelation | null>;
  functions: ReadonlyMap<number, ServerFunction | null>;
  operators: ReadonlyMap<number, ServerOperator | null>;
  types: ReadonlyMap<number, ServerType | null>;
}

export interface OidSets {
  relations: Set<number>;
  functions: Set<number>;
  operators: Set<number>;
  types: Set<number>;
}

/** Node types of analysed queries (PostgreSQL 13–18) whose OID-bearing fields this file reads. */
export const KNOWN_NODES: ReadonlySet<string> = new Set([
  // Query structure
  'QUERY',
  'RANGETBLENTRY',
  'RTEPERMISSIONINFO',
  'ALIAS',
  'RANGETBLREF',
  'FROMEXPR',
  'JOINEXPR',
  'TARGETENTRY',
  'SORTGROUPCLAUSE',
  'GROUPINGSET',
  'WINDOWCLAUSE',
  'ROWMARKCLAUSE',
  'COMMONTABLEEXPR',
  'CTESEARCHCLAUSE',
  'CTECYCLECLAUSE',
  'SETOPERATIONSTMT',
  'ONCONFLICTEXPR',
  'MERGEACTION',
  'RANGETBLFUNCTION',
  'TABLESAMPLECLAUSE',
  'TABLEFUNC',
  'INFERENCEELEM',
  'WITHCHECKOPTION',
  // Expressions
  'VAR',
  'CONST',
  'PARAM',
  'AGGREF',
  'GROUPINGFUNC',
  'WINDOWFUNC',
  'SUBSCRIPTINGREF',
  'FUNCEXPR',
  'NAMEDARGEXPR',
  'OPEXPR',
  'DISTINCTEXPR',
  'NULLIFEXPR',
  'SCALARARRAYOPEXPR',
  'BOOLEXPR',
  'SUBLINK',
  'FIELDSELECT',
  'FIELDSTORE',
  'RELABELTYPE',
  'COERCEVIAIO',
  'ARRAYCOERCEEXPR',
  'CONVERTROWTYPEEXPR',
  'COLLATEEXPR',
  'CASEEXPR',
  'CASEWHEN',
  'CASETESTEXPR',
  'ARRAYEXPR',
  'ROWEXPR',
  'ROWCOMPAREEXPR',
  'COALESCEEXPR',
  'MINMAXEXPR',
  'SQLVALUEFUNCTION',
  'XMLEXPR',
  'NULLTEST',
  'BOOLEANTEST',
  'COERCETODOMAIN',
  'COERCETODOMAINVALUE',
  'SETTODEFAULT',
  'CURRENTOFEXPR',
  // SQL/JSON (16+: constructors, IS JSON; 17+: JSON_VALUE/QUERY/EXISTS/TABLE, merge_action(); 18: RETURNING old/new)
  'JSONCONSTRUCTOREXPR',
  'JSONRETURNING',
  'JSONFORMAT',
  'JSONVALUEEXPR',
  'JSONISPREDICATE',
  'JSONEXPR',
  'JSONBEHAVIOR',
  'JSONTABLEPATH',
  'JSONTABLEPATHSCAN',
  'JSONTABLESIBLINGJOIN',
  'MERGESUPPORTFUNC',
  'RETURNINGEXPR',
  // Utility statements whose inner query parse analysis transforms
  'DECLARECURSORSTMT',
  'EXPLAINSTMT',
  'DEFELEM',
]);

/** Fields holding a function OID. */
const FUNCTION_FIELDS = [
  'funcid',
  'aggfnoid',
  'winfnoid',
  'opfuncid',
  'hashfuncid',
  'negfuncid',
  'startInRangeFunc',
  'endInRangeFunc',
  'tsmhandler',
];
/** Fields holding an operator OID or a list of them. */
const OPERATOR_FIELDS = ['opno', 'eqop', 'sortop', 'cycle_mark_neop', 'opnos'];
/** Fields holding a type OID or a list of them. */
const TYPE_FIELDS = [
  'vartype',
  'consttype',
  'paramtype',
  'aggtype',
  'wintype',
  'funcresulttype',
  'opresulttype',
  'resulttype',
  'casetype',
  'array_typeid',
  'element_typeid',
  'row_typeid',
  'coalescetype',
  'minmaxtype',
  'refcontainertype',
  'refelemtype',
  'refrestype',
  'typeId',
  'typid',
  'cycle_mark_type',
  'ctecoltypes',
  'funccoltypes',
  'coltypes',
  'colTypes',
  'aggargtypes',
  'msftype',
];

/** ACL bits of requiredPerms (utils/acl.h / parsenodes.h). */
const ACL_INSERT = 1 << 0;
const ACL_SELECT = 1 << 1;
const ACL_UPDATE = 1 << 2;
const ACL_DELETE = 1 << 3;

/** Bitmapset members are attno - FirstLowInvalidHeapAttributeNumber; that constant is -7 since PostgreSQL 12. */
const ATTNO_OFFSET = 7;

/** CMD_MERGE exists from PostgreSQL 15 on, where it is 5. */
const CMD_MERGE = 5;

const TEXT_OID = 25;

/** CoercionForm: a plain call `f(x)`, not a cast written as `x::t` or inserted implicitly. */
const COERCE_EXPLICIT_CALL = 0;
/** ParamKind PARAM_EXTERN (nodes/primnodes.h): a parameter the client supplies at Bind. */
const PARAM_EXTERN = 0;

/** Functions whose reg* result names only the type of their own argument, which the statement already has. */
const REG_RESULT_HARMLESS = new Set(['pg_catalog.pg_typeof']);

export class ServerAnalysisError extends Error {
  override readonly name = 'ServerAnalysisError';
}

function oidsOf(node: PgNode, field: string): number[] {
  const v = node.fields.get(field);
  if (v === undefined || v === null) return [];
  if (isNumberList(v)) return v.values.filter((n) => n !== 0);
  const n = numberField(node, field);
  return n === undefined || n === 0 ? [] : [n];
}

interface PermUse {
  relid: number;
  perms: number;
  selected: readonly number[];
  inserted: readonly number[];
  updated: readonly number[];
  merge: boolean;
  nested: boolean;
}

/** Everything the trees (and the domain constraints they reach) refer to. */
interface Collected {
  perms: PermUse[];
  /** Relations named by an RTE (with or without permission info). */
  relations: Set<number>;
  functions: Set<number>;
  operators: Set<number>;
  types: Set<number>;
  /** Every plain call's first argument when it is a text constant (undefined otherwise), by function: current_setting's setting names. */
  firstArgs: {
    funcid: number;
    text: string | undefined;
    call?: number;
    param?: number;
    /** An integer client parameter, bare or under one cast function (`cast`, checked against the catalog later). */
    intParam?: { param: number; cast?: number };
  }[];
  /** Types that are the result of a plain function call, with the function: pg_typeof's regtype names no catalog object of its own. */
  resultOf: Map<number, Set<number>>;
  /** Types used by anything other than a function's result. */
  typesElsewhere: Set<number>;
  unknownNodes: Set<string>;
}

function emptyCollected(): Collected {
  return {
    perms: [],
    relations: new Set(),
    functions: new Set(),
    operators: new Set(),
    types: new Set(),
    firstArgs: [],
    resultOf: new Map(),
    typesElsewhere: new Set(),
    unknownNodes: new Set(),
  };
}

/** One walk per tree (a statement's, a domain constraint's): the decision asks for its references several times. */
const walked = new WeakMap<object, Map<number, Collected>>();

function walkedTree(tree: PgValue, baseDepth: number): Collected {
  if (tree === null || typeof tree !== 'object') {
    const c = emptyCollected();
    collectInto(c, tree, baseDepth);
    return c;
  }
  let byDepth = walked.get(tree);
  if (byDepth === undefined) {
    byDepth = new Map();
    walked.set(tree, byDepth);
  }
  let c = byDepth.get(baseDepth);
  if (c === undefined) {
    c = emptyCollected();
    collectInto(c, tree, baseDepth);
    byDepth.set(baseDepth, c);
  }
  return c;
}

function mergeInto(into: Collected, from: Collected): void {
  into.perms.push(...from.perms);
  for (const x of from.relations) into.relations.add(x);
  for (const x of from.functions) into.functions.add(x);
  for (const x of from.operators) into.operators.add(x);
  for (const x of from.types) into.types.add(x);
  into.firstArgs.push(...from.firstArgs);
  for (const [k, v] of from.resultOf) {
    const s = into.resultOf.get(k) ?? new Set<number>();
    for (const f of v) s.add(f);
    into.resultOf.set(k, s);
  }
  for (const x of from.typesElsewhere) into.typesElsewhere.add(x);
  for (const x of from.unknownNodes) into.unknownNodes.add(x);
}

/** A client parameter ($n) of one of `types`, bare (no coercion around it): its number, else undefined. */
function externParam(v: PgValue | undefined, types: ReadonlySet<number>): number | undefined {
  return isNode(v) &&
    v.type === 'PARAM' &&
    numberField(v, 'paramkind') === PARAM_EXTERN &&
    types.has(numberField(v, 'paramtype') ?? -1)
    ? numberField(v, 'paramid')
    : undefined;
}

/** pg_notify's channel parameter: text only (another type is converted on its way in; bpchar trims). */
const TEXT_PARAM_TYPE: ReadonlySet<number> = new Set([TEXT_OID]);

/** Integer types a backend's process id may be bound as (int2, int4, int8). */
const INT_PARAM_TYPES: ReadonlySet<number> = new Set([21, 23, 20]);

/**
 * A client parameter of an integer type as a call's argument: bare, or the single argument of a cast function (its
 * OID returned as `cast`, for the caller to check against the catalog). Anything else (an expression, a coercion
 * via I/O, a Param of another type) is undefined.
 */
function integerParam(v: PgValue | undefined): { param: number; cast?: number } | undefined {
  const bare = (p: PgValue | undefined) => externParam(p, INT_PARAM_TYPES);
  const direct = bare(v);
  if (direct !== undefined) return direct > 0 ? { param: direct } : undefined;
  if (!isNode(v) || v.type !== 'FUNCEXPR') return undefined;
  const args = v.fields.get('args');
  if (!Array.isArray(args) || args.length !== 1) return undefined;
  const inner = bare(args[0] as PgValue);
  const cast = numberField(v, 'funcid');
  return inner !== undefined && inner > 0 && cast !== undefined ? { param: inner, cast } : undefined;
}

/** A text Const's value (varlena, little-endian header), or undefined. */
function constText(v: PgValue | undefined): string | undefined {
  if (!isNode(v) || v.type !== 'CONST') return undefined;
  if (numberField(v, 'consttype') !== TEXT_OID || wordField(v, 'constisnull') !== 'false') return undefined;
  const d = v.fields.get('constvalue');
  if (d === null || d === undefined || typeof d !== 'object' || !('bytes' in d)) return undefined;
  const b = d.bytes;
  if (b.length < 1) return undefined;
  const b0 = b[0] as number;
  let start: number;
  let end: number;
  if ((b0 & 1) === 1) {
    start = 1;
    end = b0 >> 1;
  } else {
    if (b.length < 4) return undefined;
    start = 4;
    end = ((b0 | ((b[1] as number) << 8) | ((b[2] as number) << 16)) + (b[3] as number) * 2 ** 24) / 4;
  }
  if (end < start || end > b.length) return undefined;
  return Buffer.from(b.subarray(start, end)).toString('utf8');
}

function collectInto(c: Collected, root: PgValue, baseDepth: number): void {
  walkNodes(root, collector(c, baseDepth));
}

/**
 * Walks a statement's tree in slices (see Incremental) and, when done, keeps what it found for collectReferences and
 * factsFromTrees, which then do not walk it again. The same visits as their own walk, so the same result; for the big
 * trees of long allowed statements (a 20,000-element IN list: 20,000 nodes), so the caller can pause between slices.
 */
export function incrementalReferenceWalk(tree: PgValue, opts: IncrementalOptions = {}): Incremental {
  if (tree === null || typeof tree !== 'object' || walked.get(tree)?.has(0)) return { run: () => true };
  const c = emptyCollected();
  const walk = new IncrementalWalk(tree, collector(c, 0), opts);
  return {
    run(until: number): boolean {
      if (!walk.run(until)) return false;
      const byDepth = walked.get(tree) ?? new Map<number, Collected>();
      walked.set(tree, byDepth);
      if (!byDepth.has(0)) byDepth.set(0, c);
      return true;
    },
  };
}

/** The visit of one node: records its references into `c`; `baseDepth` is the Query nesting the walk starts at. */
function collector(c: Collected, baseDepth: number): (node: PgNode) => void {
  let queryDepth = baseDepth;
  return (node) => {
    if (!KNOWN_NODES.has(node.type)) {
      c.unknownNodes.add(node.type);
      return;
    }
    for (const f of FUNCTION_FIELDS) for (const oid of oidsOf(node, f)) c.functions.add(oid);
    for (const f of OPERATOR_FIELDS) for (const oid of oidsOf(node, f)) c.operators.add(oid);
    const funcid =
      node.type === 'FUNCEXPR' && numberField(node, 'funcformat') === COERCE_EXPLICIT_CALL
        ? numberField(node, 'funcid')
        : undefined;
    for (const f of TYPE_FIELDS) {
      for (const oid of oidsOf(node, f)) {
        c.types.add(oid);
        if (funcid !== undefined && f === 'funcresulttype') {
          const s = c.resultOf.get(oid) ?? new Set<number>();
          s.add(funcid);
          c.resultOf.set(oid, s);
        } else c.typesElsewhere.add(oid);
      }
    }
    if (node.type === 'FUNCEXPR') {
      const id = numberField(node, 'funcid');
      if (id !== undefined) {
        const args = node.fields.get('args');
        const first = Array.isArray(args) ? (args[0] as PgValue) : undefined;
        // A first argument that is itself a call with no arguments (pg_backend_pid(): evaluate.ts SELF_BACKEND_FUNCTIONS).
        const inner =
          isNode(first) &&
          first.type === 'FUNCEXPR' &&
          !(Array.isArray(first.fields.get('args')) && (first.fields.get('args') as unknown[]).length > 0)
            ? numberField(first, 'funcid')
            : undefined;
        // A first argument that is a bare client parameter of type text, with no coercion around it (pg_notify's channel
        // given as $n: its value is checked at Bind). Any other type would be converted on its way in (bpchar trims).
        const param = externParam(first, TEXT_PARAM_TYPE);
        const intParam = integerParam(first);
        c.firstArgs.push({
          funcid: id,
          text: constText(first),
          ...(inner !== undefined ? { call: inner } : {}),
          ...(param !== undefined && param > 0 ? { param } : {}),
          ...(intParam !== undefined ? { intParam } : {}),
        });
      }
    }
    if (node.type === 'RANGETBLENTRY' && numberField(node, 'rtekind') === 0) {
      const relid = numberField(node, 'relid');
      if (relid === undefined || relid === 0)
        throw new ServerAnalysisError('a relation range table entry without a relation OID');
      c.relations.add(relid);
    }
    if (node.type === 'QUERY') {
      const nested = queryDepth++ > 0;
      const merge = numberField(node, 'commandType') === CMD_MERGE && node.fields.has('mergeActionList');
      const perminfos = node.fields.get('rteperminfos');
      const holders: PgValue[] = [];
      const rtable = node.fields.get('rtable');
      if (Array.isArray(rtable)) holders.push(...rtable);
      if (Array.isArray(perminfos)) holders.push(...perminfos);
      for (const h of holders) {
        if (!isNode(h) || !h.fields.has('requiredPerms')) continue;
        if (h.type === 'RANGETBLENTRY' && numberField(h, 'rtekind') !== 0) continue;
        const relid = numberField(h, 'relid');
        const perms = numberField(h, 'requiredPerms');
        const selected = bitmapField(h, 'selectedCols');
        const inserted = bitmapField(h, 'insertedCols');
        const updated = bitmapField(h, 'updatedCols');
        if (relid === undefined || perms === undefined || !selected || !inserted || !updated) {
          throw new ServerAnalysisError(`${h.type} without readable permission fields`);
        }
        c.perms.push({ relid, perms, selected, inserted, updated, merge, nested });
      }
    }
  };
}

/**
 * Collects what the trees refer to, following operators to their functions and types to their domain
 * constraints, element types and relations, as far as `cat` already knows them. `missing` lists the OIDs
 * to fetch before the facts are complete.
 */
export function collectReferences(
  trees: readonly PgValue[],
  cat: OidCatalog,
  extraTypes: readonly number[] = [],
): { collected: Collected; missing: OidSets } {
  const c = emptyCollected();
  for (const t of trees) mergeInto(c, walkedTree(t, 0));
  // Parameter types the client or PREPARE declared: Bind and EXECUTE values go through their input functions
  // (a domain's CHECK included) whether or not the statement uses the parameter.
  for (const oid of extraTypes) {
    if (oid === 0) continue;
    c.types.add(oid);
    c.typesElsewhere.add(oid);
  }
  const walkedDomains = new Set<number>();
  // Expand until nothing new appears: a domain's constraint can name another domain, an operator, a row type.
  for (let changed = true; changed; ) {
    changed = false;
    for (const oid of [...c.operators]) {
      const op = cat.operators.get(oid);
      if (op && op.funcOid !== 0 && !c.functions.has(op.funcOid)) {
        c.functions.add(op.funcOid);
        changed = true;
      }
    }
    for (const oid of [...c.types]) {
      const t = cat.types.get(oid);
      if (!t) continue;
      for (const next of [t.baseType, t.elemType, ...t.memberTypes]) {
        if (next !== 0 && !c.types.has(next)) {
          c.types.add(next);
          changed = true;
        }
      }
      for (const f of t.implicitFunctions) {
        if (f !== 0 && !c.functions.has(f)) {
          c.functions.add(f);
          changed = true;
        }
      }
      if (t.relid !== 0 && !c.relations.has(t.relid)) {
        c.relations.add(t.relid);
        changed = true;
      }
      if (t.typtype === 'd' && !walkedDomains.has(oid)) {
        walkedDomains.add(oid);
        // Constraint expressions run as part of the statement; their permission entries are none, so depth 1.
        for (const tree of t.constraints) mergeInto(c, walkedTree(tree, 1));
        changed = true;
      }
    }
  }
  const missing: OidSets = { relations: new Set(), functions: new Set(), operators: new Set(), types: new Set() };
  for (const oid of c.relations) if (!cat.relations.has(oid)) missing.relations.add(oid);
  for (const p of c.perms) if (!cat.relations.has(p.relid)) missing.relations.add(p.relid);
  for (const oid of c.functions) if (!cat.functions.has(oid)) missing.functions.add(oid);
  for (const oid of c.operators) if (!cat.operators.has(oid)) missing.operators.add(oid);
  for (const oid of c.types) if (!cat.types.has(oid)) missing.types.add(oid);
  return { collected: c, missing };
}

export function hasMissing(m: OidSets): boolean {
  return m.relations.size + m.functions.size + m.operators.size + m.types.size > 0;
}

/** A statement whose analysis cannot be read or classified: refused, never guessed at. */
export function unanalysable(what: string, detail: string): Denial {
  return {
    reason: 'analysis_failed',
    ruleId: 'builtin.analysis',
    sqlstate: SqlState.InsufficientPrivilege,
    what,
    detail: `${detail} (rule: builtin.analysis)`,
    hint: 'rewrite the statement with ordinary SQL; if it is ordinary SQL, report it to the operator',
  };
}

const RELKINDS_WITH_DATA = new Set(['r', 'v', 'm', 'p', 'f']);

function writeKindFor(
  bit: number,
  merge: boolean,
  copyFrom: boolean,
): { kind: WriteUse['kind']; writeKind: WriteKind } {
  if (copyFrom) return { kind: 'CopyFrom', writeKind: 'copy_from' };
  if (merge) return { kind: 'MergeStmt', writeKind: 'merge' };
  if (bit === ACL_INSERT) return { kind: 'InsertStmt', writeKind: 'insert' };
  if (bit === ACL_UPDATE) return { kind: 'UpdateStmt', writeKind: 'update' };
  return { kind: 'DeleteStmt', writeKind: 'delete' };
}

function catalogFunction(f: ServerFunction): CatalogFunction {
  return {
    schema: f.schema,
    name: f.name,
    volatility: f.volatility,
    kind: f.kind,
    argTypes: f.argTypes,
    returnsSet: f.returnsSet,
  };
}

function catalogRelation(r: ServerRelation): CatalogRelation {
  return {
    schema: r.schema,
    name: r.name,
    kind: r.kind,
    columns: [...r.columns.values()].map((name) => ({ name, type: '' })),
  };
}

export interface ServerFacts {
  /** The facts for checkFacts, or the reason none could be built. */
  analysis: Analysis | undefined;
  denial: Denial | undefined;
  /** The decision may depend on a constant's value (reg* constants, current_setting's argument). */
  literalSensitive: boolean;
}

/**
 * Builds checkFacts' input from the trees once `cat` holds every OID they reach (collectReferences reports
 * none missing). `kind` is the statement kind libpg-query reported, for messages.
 */
export function factsFromTrees(
  kind: string,
  trees: readonly PgValue[],
  cat: OidCatalog,
  opts: { copyFrom?: boolean; extraTypes?: readonly number[] } = {},
): ServerFacts {
  for (const t of trees) {
    if (!isNode(t) || t.type !== 'QUERY')
      return {
        analysis: undefined,
        denial: unanalysable('could not be analysed', "the server's analysis is not a query tree"),
        literalSensitive: false,
      };
  }
  const { collected: c, missing } = collectReferences(trees, cat, opts.extraTypes);
  if (c.unknownNodes.size > 0) {
    const names = [...c.unknownNodes].sort().join(', ');
    return {
      analysis: undefined,
      denial: unanalysable(
        'uses a construct pgwarden does not know',
        `the server's analysis contains ${names}, which pgwarden does not classify`,
      ),
      literalSensitive: false,
    };
  }
  if (hasMissing(missing)) throw new ServerAnalysisError('facts requested before every OID was fetched');
  const relations: RelationUse[] = [];
  const columns: ColumnUse[] = [];
  const writes: WriteUse[] = [];
  const problems: Analysis['problems'] = [];
  const relUse = (oid: number): { r: ServerRelation; key: string } | undefined => {
    const r = cat.relations.get(oid);
    if (!r) {
      problems.push({
        code: 'unknown_relation',
        subject: `OID ${oid}`,
        message: `relation OID ${oid} is not in the server's catalog (rule: builtin.analysis)`,
      });
      return undefined;
    }
    return { r, key: `${r.schema}.${r.name}` };
  };
  const colName = (r: ServerRelation, key: string, member: number): string | undefined => {
    const attno = member - ATTNO_OFFSET;
    if (attno < 0) return undefined; // system columns (ctid, xmin, …) are never policy columns
    if (attno === 0) return '*';
    const name = r.columns.get(attno);
    if (name === undefined)
      problems.push({
        code: 'unknown_relation',
        subject: key,
        message: `${key} has no column ${attno} (rule: builtin.analysis)`,
      });
    return name;
  };
  const permRelids = new Set<number>();
  for (const p of c.perms) {
    permRelids.add(p.relid);
    const u = relUse(p.relid);
    if (!u) continue;
    const { r, key } = u;
    const rel = catalogRelation(r);
    if ((p.perms & ACL_SELECT) !== 0 || p.selected.length > 0) {
      relations.push({ schema: r.schema, name: r.name, key, access: 'read', writeKind: undefined, relation: rel });
      for (const m of p.selected) {
        const col = colName(r, key, m);
        if (col !== undefined) columns.push({ relation: key, column: col, how: col === '*' ? 'whole_row' : 'column' });
      }
    }
    for (const bit of [ACL_INSERT, ACL_UPDATE, ACL_DELETE]) {
      if ((p.perms & bit) === 0) continue;
      const k = writeKindFor(bit, p.merge, opts.copyFrom === true);
      writes.push({
        kind: k.kind,
        writeKind: k.writeKind,
        relation: { schema: r.schema, name: r.name, key, access: 'write', writeKind: k.writeKind, relation: rel },
        nested: p.nested,
      });
    }
    // Any other privilege bit (TRUNCATE, REFERENCES, TRIGGER) cannot come from a DML tree: refuse rather than guess.
    if ((p.perms & ~(ACL_INSERT | ACL_SELECT | ACL_UPDATE | ACL_DELETE)) !== 0) {
      return {
        analysis: undefined,
        denial: unanalysable('asks for privileges pgwarden does not classify', `requiredPerms ${p.perms} on ${key}`),
        literalSensitive: false,
      };
    }
    for (const m of [...p.inserted, ...p.updated]) {
      const col = colName(r, key, m);
      if (col !== undefined) columns.push({ relation: key, column: col, how: 'write' });
    }
  }
  // Relations reached without permission info: row types (`NULL::t`), and RTEs the server checks elsewhere.
  for (const oid of c.relations) {
    if (permRelids.has(oid)) continue;
    const u = relUse(oid);
    if (!u || !RELKINDS_WITH_DATA.has(u.r.kind)) continue;
    relations.push({
      schema: u.r.schema,
      name: u.r.name,
      key: u.key,
      access: 'read',
      writeKind: undefined,
      relation: catalogRelation(u.r),
    });
  }
  const functions: FunctionUse[] = [];
  // current_setting('name'): each constant setting name is judged (policy/settings.ts judgeSettingRead); pg_notify('channel', …):
  // each constant channel (evaluate.ts checkFacts).
  const settingByFunc = new Map<number, { text: string | undefined; param: number | undefined }[]>();
  for (const a of c.firstArgs) {
    const f = cat.functions.get(a.funcid);
    if (f?.schema !== 'pg_catalog' || (f.name !== 'current_setting' && f.name !== 'pg_notify')) continue;
    const param = f.name === 'pg_notify' ? a.param : undefined;
    settingByFunc.set(a.funcid, [...(settingByFunc.get(a.funcid) ?? []), { text: a.text, param }]);
  }
  for (const oid of c.functions) {
    const f = cat.functions.get(oid);
    if (!f) {
      problems.push({
        code: 'unknown_function',
        subject: `OID ${oid}`,
        message: `function OID ${oid} is not in the server's catalog (rule: builtin.analysis)`,
      });
      continue;
    }
    const use: FunctionUse = {
      schema: f.schema,
      name: f.name,
      key: `${f.schema}.${f.name}`,
      overloads: [catalogFunction(f)],
      constArgs: [],
      argc: f.argTypes.length,
    };
    // Every call of it has pg_catalog.pg_backend_pid() as its first argument: it can only reach this session's own backend.
    const calls = c.firstArgs.filter((a) => a.funcid === oid);
    const isOwnPid = (call: number | undefined) => {
      const g = call === undefined ? undefined : cat.functions.get(call);
      return g !== undefined && g !== null && g.schema === 'pg_catalog' && g.name === 'pg_backend_pid';
    };
    if (f.schema === 'pg_catalog' && calls.length > 0 && calls.every((a) => isOwnPid(a.call))) use.ownBackend = true;
    // Every call's pid is one integer client parameter, bare or under pg_catalog's int4(int2) / int4(int8) cast (which
    // keep the value): the session checks the value bound (evaluate.ts backendBindChecks).
    const castKeeps = (cast: number | undefined) => {
      if (cast === undefined) return true;
      const g = cat.functions.get(cast);
      return g !== undefined && g !== null && g.schema === 'pg_catalog' && g.name === 'int4' && g.argTypes.length === 1;
    };
    const pidParams = new Set(
      calls.map((a) => (a.intParam !== undefined && castKeeps(a.intParam.cast) ? a.intParam.param : 0)),
    );
    const pidParam = pidParams.size === 1 ? [...pidParams][0] : undefined;
    if (f.schema === 'pg_catalog' && use.ownBackend !== true && pidParam !== undefined && pidParam > 0)
      use.pidParam = pidParam;
    const settings = settingByFunc.get(oid);
    if (settings === undefined) functions.push(use);
    // One use per call, so each constant setting name is judged.
    else
      for (const s of settings)
        functions.push({ ...use, constArgs: [s.text], ...(s.param !== undefined ? { channelParam: s.param } : {}) });
  }
  for (const oid of c.operators) {
    const op = cat.operators.get(oid);
    if (!op) {
      problems.push({
        code: 'unknown_function',
        subject: `operator OID ${oid}`,
        message: `operator OID ${oid} is not in the server's catalog (rule: builtin.analysis)`,
      });
      continue;
    }
    if (op.schema !== 'pg_catalog')
      problems.push({
        code: 'user_operator',
        subject: `${op.schema}.${op.name}`,
        message: `operator ${op.schema}.${op.name} runs code outside pg_catalog`,
      });
  }
  const regTypes: string[] = [];
  for (const oid of c.types) {
    const t = cat.types.get(oid);
    if (!t) {
      problems.push({
        code: 'unknown_type',
        subject: `OID ${oid}`,
        message: `type OID ${oid} is not in the server's catalog (rule: builtin.analysis)`,
      });
      continue;
    }
    // Text search configurations and dictionaries are named by every full-text query (`to_tsvector('english', …)`)
    // and name nothing a role could not already see; the other reg* types name relations, functions, types, roles
    // (a cast of any number to regclass prints a relation's name), unless the value is pg_typeof's own answer.
    // An array of them (`_regclass`) prints each element's name as the element type does.
    const base = t.name.replace(/^_/, '');
    if (t.schema !== 'pg_catalog' || !REG_TYPES.has(base) || base === 'regconfig' || base === 'regdictionary') continue;
    const onlyHarmless =
      !c.typesElsewhere.has(oid) &&
      [...(c.resultOf.get(oid) ?? [])].every((f) => {
        const fn = cat.functions.get(f);
        return fn !== undefined && fn !== null && REG_RESULT_HARMLESS.has(`${fn.schema}.${fn.name}`);
      });
    if (!onlyHarmless) regTypes.push(base);
  }
  const analysis: Analysis = {
    kind,
    relations,
    columns,
    functions,
    operators: [],
    regTypes,
    writes,
    hasInto: false,
    hasLocking: false,
    limit: undefined,
    problems,
    literalSensitive: regTypes.length > 0 || settingByFunc.size > 0,
    exactColumns: true,
  };
  const setConfigs = serverSetConfigCalls(trees, cat);
  if (setConfigs !== undefined) {
    analysis.setConfigs = setConfigs;
    analysis.literalSensitive = true;
  }
  return { analysis, denial: undefined, literalSensitive: analysis.literalSensitive };
}

const BOOL_OID = 16;
/** CmdType CMD_SELECT (nodes/nodes.h). */
const CMD_SELECT = 1;

/** A field that holds nothing: `<>` (an empty list, a NULL pointer) or absent. */
function empty(node: PgNode, field: string): boolean {
  const v = node.fields.get(field);
  return v === null || v === undefined;
}

/** A Const of type `type`: its value's bytes, or null when it is NULL; undefined for anything else. */
function constOf(v: PgValue | undefined, type: number): PgValue | null | undefined {
  if (!isNode(v) || v.type !== 'CONST' || numberField(v, 'consttype') !== type) return undefined;
  const isNull = wordField(v, 'constisnull');
  if (isNull === 'true') return null;
  if (isNull !== 'false') return undefined;
  return v.fields.get('constvalue') ?? undefined;
}

/**
 * The server's side of settings.ts plainSetConfigCalls: the one analysed query is a SELECT of nothing but
 * pg_catalog.set_config calls (resolved by the server to that function, whatever the client wrote), each with constants
 * as the server coerced them (text, text or NULL, boolean or NULL), and no range table, WHERE, GROUP BY, HAVING, window,
 * ORDER BY, DISTINCT, LIMIT, CTE, set operation or row lock. Undefined otherwise, and set_config is then refused as an
 * always-denied function.
 */
function serverSetConfigCalls(trees: readonly PgValue[], cat: OidCatalog): SetConfigCall[] | undefined {
  const q = trees.length === 1 ? trees[0] : undefined;
  if (!isNode(q) || q.type !== 'QUERY' || numberField(q, 'commandType') !== CMD_SELECT) return undefined;
  const nothing = [
    'utilityStmt',
    'cteList',
    'rtable',
    'groupClause',
    'groupingSets',
    'havingQual',
    'windowClause',
    'distinctClause',
    'sortClause',
    'limitOffset',
    'limitCount',
    'rowMarks',
    'setOperations',
    'returningList',
    'onConflict',
  ];
  if (!nothing.every((f) => empty(q, f))) return undefined;
  const join = q.fields.get('jointree');
  if (!isNode(join) || join.type !== 'FROMEXPR' || !empty(join, 'fromlist') || !empty(join, 'quals')) return undefined;
  const targets = q.fields.get('targetList');
  if (!Array.isArray(targets) || targets.length === 0) return undefined;
  const calls: SetConfigCall[] = [];
  for (const t of targets as PgValue[]) {
    if (!isNode(t) || t.type !== 'TARGETENTRY' || wordField(t, 'resjunk') !== 'false') return undefined;
    const e = t.fields.get('expr');
    if (!isNode(e) || e.type !== 'FUNCEXPR' || numberField(e, 'funcformat') !== COERCE_EXPLICIT_CALL) return undefined;
    if (wordField(e, 'funcvariadic') !== 'false' || wordField(e, 'funcretset') !== 'false') return undefined;
    const fid = numberField(e, 'funcid');
    const fn = fid === undefined ? undefined : cat.functions.get(fid);
    if (fn === undefined || fn === null || fn.schema !== 'pg_catalog' || fn.name !== 'set_config') return undefined;
    const args = e.fields.get('args');
    if (!Array.isArray(args) || args.length !== 3) return undefined;
    const [a0, a1, a2] = args as PgValue[];
    const name = constOf(a0, TEXT_OID) === null ? undefined : constText(a0);
    if (name === undefined) return undefined;
    let value: string | null;
    if (constOf(a1, TEXT_OID) === null) value = null;
    else {
      const text = constText(a1);
      if (text === undefined) return undefined;
      value = text;
    }
    const local = constOf(a2, BOOL_OID);
    if (local === undefined) return undefined;
    const isLocal = local === null ? null : typeof local === 'object' && 'bytes' in local ? local.bytes[0] === 1 : null;
    calls.push({ name, value, isLocal });
  }
  return calls;
}
