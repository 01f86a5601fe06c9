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
import { Deparser } from 'pgsql-deparser';
import type { AnyNode } from './analyze.ts';
import { REG_TYPES } from './analyze.ts';
import { canonicalTree, parseStatements } from './parser.ts';
import { typeNameSuffix, type DeparseContext } from './ddl.ts';
import type { CatalogSnapshot, RelationPattern, RolePolicy } from './types.ts';
import { quoteIdent, quoteLiteral } from '../lib/ident.ts';
import { INTROSPECTION_RELATION_NAMES, SESSION_RELATIONS, SYSTEM_DENIED_COLUMNS } from './introspection.ts';
import { READABLE_SETTINGS } from './functions.ts';

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

/**
 * SQL text of the visible types' OIDs: every type that is not a relation's row type (or an array of one), and the
 * row types of visible relations. A table's row type is named after the table.
 */
function visibleTypes(vis: string): string {
  return `SELECT vt.oid FROM pg_catalog.pg_type vt LEFT JOIN pg_catalog.pg_type ve ON ve.oid = vt.typelem AND vt.typelem <> 0 WHERE (vt.typrelid = 0 OR vt.typrelid IN (${vis})) AND (ve.oid IS NULL OR ve.typrelid = 0 OR ve.typrelid IN (${vis}))`;
}

/** Fixed OIDs of the catalogs pg_depend and pg_description point into (the same in every release). */
const CLASS = {
  pg_class: 1259,
  pg_proc: 1255,
  pg_type: 1247,
  pg_namespace: 2615,
  pg_constraint: 2606,
  pg_attrdef: 2604,
  pg_operator: 2617,
  pg_rewrite: 2618,
  pg_trigger: 2620,
} as const;

/** The role's visibility predicates as SQL text. */
interface Predicates {
  /** OIDs of the role's relations (kinds r v m p f). */
  vis: string;
  /** OIDs of indexes of those relations whose columns and expressions name only visible objects. */
  idx: string;
  types: string;
  /** OIDs of functions the role may see: pg_catalog's and information_schema's, and its functions.allow. */
  fns: string;
  cons: string;
  trigs: string;
  /** A row of pg_namespace under this alias is visible. */
  nspVisible: (n: string) => string;
  /** A row of pg_attribute under this alias is a visible column. */
  attrVisible: (a: string) => string;
  /** Object (classid, objid) depends on nothing the role may not see. */
  depsOk: (classid: number, objid: string) => string;
  /** The WITH clause defining the sets a text names (empty when it names none). */
  withCtes: (text: string) => string;
}

/** SQL predicate: column (relid, attnum) is one of the role's denied columns. */
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
 * narrowing limits to some columns (allowedColumns, policy/narrow.ts), or of an inheritance child or partition of one
 * at any depth (narrowedColumns: a list limits the relation's children too), and not one of them.
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
  // The relation and its ancestors, read from pg_inherits at the time the statement runs (not from the snapshot).
  return `EXISTS (WITH RECURSIVE pgwarden_up(oid) AS (SELECT ${relid} UNION SELECT ui.inhparent FROM pg_catalog.pg_inherits ui JOIN pgwarden_up uu ON ui.inhrelid = uu.oid) SELECT 1 FROM pgwarden_up uo JOIN pg_catalog.pg_class ac ON ac.oid = uo.oid JOIN pg_catalog.pg_namespace an ON an.oid = ac.relnamespace WHERE ${terms.join(' OR ')})`;
}

function predicates(role: RolePolicy): Predicates {
  // Each set is a CTE (WITH pgwarden_vis AS (…), …) the filters name by reference, so a filter's text holds each
  // definition once however often it is used (withCtes adds the ones a text needs).
  const vis = 'SELECT oid FROM pgwarden_vis';
  const types = 'SELECT oid FROM pgwarden_types';
  const fns = 'SELECT oid FROM pgwarden_fns';
  const paths = new Set<string>(['pg_catalog', 'information_schema', ...role.searchPath]);
  for (const p of role.relations) if (p.name === '*') paths.add(p.schema);
  if (!role.readOnly) for (const p of role.write?.relations ?? []) if (p.name === '*') paths.add(p.schema);
  const schemas = [...paths].map(quoteLiteral).join(', ');
  // A column the role may not see: denied, or (a narrowed token) outside its allowedColumns.
  const denied = (relid: string, attnum: string) => {
    const d = deniedAttribute(role, relid, attnum);
    const o = outsideAllowed(role, relid, 'hx.attname');
    if (o === 'false') return d;
    const byNum = `EXISTS (SELECT 1 FROM pg_catalog.pg_attribute hx WHERE hx.attrelid = ${relid} AND hx.attnum = ${attnum} AND ${o})`;
    return d === 'false' ? byNum : `(${d} OR ${byNum})`;
  };
  const allowed = [...role.functions.allow].flatMap((k) => {
    const dot = k.indexOf('.');
    return dot < 0 ? [] : [`(${quoteLiteral(k.slice(0, dot))}, ${quoteLiteral(k.slice(dot + 1))})`];
  });
  const defFns = `SELECT fp.oid FROM pg_catalog.pg_proc fp JOIN pg_catalog.pg_namespace fn ON fn.oid = fp.pronamespace WHERE (fn.nspname IN ('pg_catalog', 'information_schema')${allowed.length === 0 ? '' : ` OR (fn.nspname::text, fp.proname::text) IN (${allowed.join(', ')})`}) AND fp.prorettype IN (${types}) AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(fp.proargtypes::pg_catalog.oid[]) fa(t) WHERE fa.t NOT IN (${types}))`;
  // What an object's definition names, by pg_depend: relations (and their columns), functions, types, operators.
  const bad = (d: string) =>
    `(${d}.refclassid = ${CLASS.pg_class} AND ((${d}.refobjid NOT IN (${vis}) AND ${d}.refobjid NOT IN (SELECT bi.indexrelid FROM pg_catalog.pg_index bi WHERE bi.indrelid IN (${vis}))) OR (${d}.refobjsubid > 0 AND ${denied(`${d}.refobjid`, `${d}.refobjsubid`)}))) OR (${d}.refclassid = ${CLASS.pg_proc} AND ${d}.refobjid NOT IN (${fns})) OR (${d}.refclassid = ${CLASS.pg_type} AND ${d}.refobjid NOT IN (${types})) OR (${d}.refclassid = ${CLASS.pg_operator} AND ${d}.refobjid NOT IN (SELECT bo.oid FROM pg_catalog.pg_operator bo JOIN pg_catalog.pg_namespace bn ON bn.oid = bo.oprnamespace WHERE bn.nspname = 'pg_catalog'))`;
  const depsOk = (classid: number, objid: string) =>
    `NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend dd WHERE dd.classid = ${classid} AND dd.objid = ${objid} AND (${bad('dd')}))`;
  const noDeniedIn = (relid: string, list: string) =>
    denied('0', '0') === 'false'
      ? 'true'
      : `NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(${list}) nk(n) WHERE ${denied(relid, 'nk.n')})`;
  const defIdx = `SELECT xi.indexrelid AS oid FROM pg_catalog.pg_index xi WHERE xi.indrelid IN (${vis}) AND ${noDeniedIn('xi.indrelid', 'xi.indkey::pg_catalog.int2[]')} AND ${depsOk(CLASS.pg_class, 'xi.indexrelid')}`;
  const defCons = `SELECT xc.oid FROM pg_catalog.pg_constraint xc WHERE ((xc.conrelid <> 0 AND xc.conrelid IN (${vis})) OR (xc.conrelid = 0 AND xc.contypid <> 0 AND xc.contypid IN (${types}))) AND (xc.confrelid = 0 OR xc.confrelid IN (${vis})) AND ${noDeniedIn('xc.conrelid', 'xc.conkey')} AND ${noDeniedIn('xc.confrelid', 'xc.confkey')} AND ${depsOk(CLASS.pg_constraint, 'xc.oid')}`;
  const defTrigs = `SELECT xt.oid FROM pg_catalog.pg_trigger xt WHERE xt.tgrelid IN (${vis}) AND (xt.tgconstrrelid = 0 OR xt.tgconstrrelid IN (${vis})) AND xt.tgfoid IN (${fns}) AND ${noDeniedIn('xt.tgrelid', 'xt.tgattr::pg_catalog.int2[]')} AND ${depsOk(CLASS.pg_trigger, 'xt.oid')}`;
  // In dependency order: each may name the ones before it.
  const ctes: [string, string][] = [
    ['pgwarden_vis', visibleRelations(role)],
    ['pgwarden_types', visibleTypes(vis)],
    ['pgwarden_fns', defFns],
    ['pgwarden_idx', defIdx],
    ['pgwarden_cons', defCons],
    ['pgwarden_trigs', defTrigs],
  ];
  return {
    vis,
    idx: 'SELECT oid FROM pgwarden_idx',
    types,
    fns,
    cons: 'SELECT oid FROM pgwarden_cons',
    trigs: 'SELECT oid FROM pgwarden_trigs',
    withCtes: (text) => {
      const needed = new Set<string>();
      for (let i = ctes.length - 1; i >= 0; i--) {
        const [name] = ctes[i] ?? [''];
        const users = [text, ...ctes.filter(([n]) => needed.has(n)).map(([, d]) => d)];
        if (users.some((u) => new RegExp(`\\b${name}\\b`).test(u))) needed.add(name);
      }
      const defs = ctes.filter(([n]) => needed.has(n)).map(([n, d]) => `${n} AS (${d})`);
      return defs.length === 0 ? '' : `WITH ${defs.join(', ')} `;
    },
    nspVisible: (n) =>
      `(${n}.oid IN (SELECT sc.relnamespace FROM pg_catalog.pg_class sc WHERE sc.oid IN (${vis})) OR ${n}.nspname IN (${schemas}))`,
    attrVisible: (a) =>
      `${a}.attrelid IN (${vis}) AND NOT ${denied(`${a}.attrelid`, `${a}.attnum`)} AND ${a}.atttypid IN (${types})`,
    depsOk,
  };
}

/** A filter: the predicate over INNER and the columns read as NULL instead (ACLs name roles; expressions name anything). */
interface FilterSpec {
  where: string;
  nulled: readonly string[];
  /** Columns shown only on rows where the condition (over INNER) holds, NULL on the others. */
  shownWhen?: Readonly<Record<string, string>>;
}

/** Everything the rewrite needs for one role and catalog snapshot. */
interface Filters {
  /** `schema.name` → the wrapper SelectStmt node (cloned at each use). */
  wrappers: Map<string, AnyNode>;
  /** Guard conditions (a SelectStmt's first target) by kind, with placeholder columns `pgwarden_x`, `pgwarden_y`. */
  guards: Map<GuardKind, AnyNode>;
}

/** Catalog relations a scoped role may name, each with its filter; any other system relation is refused. */
function filterSpecs(role: RolePolicy): Map<string, FilterSpec> {
  const { vis, idx, types, fns, cons, trigs, nspVisible, attrVisible, depsOk } = predicates(role);
  const f = INNER;
  const relPair = (schema: string, name: string) =>
    `(${f}.${schema}::text, ${f}.${name}::text) IN (SELECT tn.nspname::text, tc.relname::text FROM pg_catalog.pg_class tc JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace WHERE tc.oid IN (${vis}))`;
  const conPair = (schema: string, name: string) =>
    `(${f}.${schema}::text, ${f}.${name}::text) IN (SELECT kn.nspname::text, kc.conname::text FROM pg_catalog.pg_constraint kc JOIN pg_catalog.pg_namespace kn ON kn.oid = kc.connamespace WHERE kc.oid IN (${cons}))`;
  const colTriple = (schema: string, table: string, column: string) =>
    `(${f}.${schema}::text, ${f}.${table}::text, ${f}.${column}::text) IN (SELECT tn.nspname::text, tc.relname::text, ta.attname::text FROM pg_catalog.pg_attribute ta JOIN pg_catalog.pg_class tc ON tc.oid = ta.attrelid JOIN pg_catalog.pg_namespace tn ON tn.oid = tc.relnamespace WHERE ta.attnum > 0 AND NOT ta.attisdropped AND ${attrVisible('ta')})`;
  const nsps = `SELECT gn.oid FROM pg_catalog.pg_namespace gn WHERE ${nspVisible('gn')}`;
  const m = new Map<string, FilterSpec>();
  const none = { where: 'false', nulled: [] };
  m.set('pg_catalog.pg_class', { where: `${f}.oid IN (${vis}) OR ${f}.oid IN (${idx})`, nulled: ['relacl'] });
  m.set('pg_catalog.pg_attribute', { where: attrVisible(f), nulled: ['attacl', 'attmissingval'] });
  m.set('pg_catalog.pg_namespace', { where: nspVisible(f), nulled: ['nspacl'] });
  // Access methods (heap, btree, …) and collations name no relation, column, function or role.
  m.set('pg_catalog.pg_am', { where: 'true', nulled: [] });
  m.set('pg_catalog.pg_collation', { where: 'true', nulled: [] });
  m.set('pg_catalog.pg_type', { where: `${f}.oid IN (${types})`, nulled: ['typacl', 'typdefaultbin', 'typdefault'] });
  m.set('pg_catalog.pg_enum', { where: `${f}.enumtypid IN (${types})`, nulled: [] });
  m.set('pg_catalog.pg_index', { where: `${f}.indexrelid IN (${idx})`, nulled: [] });
  m.set('pg_catalog.pg_constraint', { where: `${f}.oid IN (${cons})`, nulled: [] });
  m.set('pg_catalog.pg_attrdef', {
    where: `EXISTS (SELECT 1 FROM pg_catalog.pg_attribute aa WHERE aa.attrelid = ${f}.adrelid AND aa.attnum = ${f}.adnum AND ${attrVisible('aa')}) AND ${depsOk(CLASS.pg_attrdef, `${f}.oid`)}`,
    nulled: [],
  });
  m.set('pg_catalog.pg_inherits', { where: `${f}.inhrelid IN (${vis}) AND ${f}.inhparent IN (${vis})`, nulled: [] });
  m.set('pg_catalog.pg_partitioned_table', { where: `${f}.partrelid IN (${vis})`, nulled: ['partexprs'] });
  m.set('pg_catalog.pg_trigger', { where: `${f}.oid IN (${trigs})`, nulled: [] });
  m.set('pg_catalog.pg_proc', {
    where: `${f}.oid IN (${fns})`,
    // A function's body may name anything; its settings and ACL name roles and paths.
    nulled: ['proacl', 'prosrc', 'probin', 'prosqlbody', 'proconfig'],
    // Its argument defaults (pg_get_expr decompiles them) may call a function or name a type the role may not see.
    shownWhen: { proargdefaults: depsOk(CLASS.pg_proc, `${f}.oid`) },
  });
  m.set('pg_catalog.pg_description', {
    where: `(${f}.classoid = ${CLASS.pg_class} AND (${f}.objoid IN (${vis}) OR ${f}.objoid IN (${idx})) AND (${f}.objsubid = 0 OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute oa WHERE oa.attrelid = ${f}.objoid AND oa.attnum = ${f}.objsubid AND ${attrVisible('oa')}))) OR (${f}.classoid = ${CLASS.pg_namespace} AND ${f}.objoid IN (${nsps})) OR (${f}.classoid = ${CLASS.pg_proc} AND ${f}.objoid IN (${fns})) OR (${f}.classoid = ${CLASS.pg_type} AND ${f}.objoid IN (${types})) OR (${f}.classoid = ${CLASS.pg_constraint} AND ${f}.objoid IN (${cons}))`,
    nulled: [],
  });
  // Only the session's own database role, and the current database.
  m.set('pg_catalog.pg_roles', { where: `${f}.rolname = CURRENT_USER`, nulled: [] });
  m.set('pg_catalog.pg_database', { where: `${f}.datname = pg_catalog.current_database()`, nulled: ['datacl'] });
  m.set('pg_catalog.pg_extension', { where: 'true', nulled: ['extconfig', 'extcondition'] });
  // The settings SHOW and current_setting() may read, and the server's compile-time limits drivers ask for.
  const readable = READABLE_SETTINGS.map((e) =>
    e.pattern.includes('*')
      ? `${f}.name LIKE ${quoteLiteral(e.pattern.replaceAll('_', '\\_').replaceAll('*', '%'))}`
      : `${f}.name = ${quoteLiteral(e.pattern)}`,
  );
  m.set('pg_catalog.pg_settings', {
    where: `${readable.join(' OR ')} OR ${f}.name IN (${LIMIT_SETTINGS.map(quoteLiteral).join(', ')})`,
    nulled: [],
  });
  // Shown empty: what they hold (rules, row-security and statistics expressions, publications, memberships,
  // sequences' state) may name anything; psql's \d reads them.
  for (const k of [
    'pg_rewrite',
    'pg_policy',
    'pg_statistic_ext',
    'pg_publication',
    'pg_publication_rel',
    'pg_publication_namespace',
    'pg_auth_members',
    'pg_sequence',
  ])
    m.set(`pg_catalog.${k}`, none);
  m.set('pg_catalog.pg_tables', { where: relPair('schemaname', 'tablename'), nulled: ['tableowner'] });
  m.set('pg_catalog.pg_views', { where: relPair('schemaname', 'viewname'), nulled: ['viewowner', 'definition'] });
  m.set('pg_catalog.pg_matviews', {
    where: relPair('schemaname', 'matviewname'),
    nulled: ['matviewowner', 'definition'],
  });
  m.set('pg_catalog.pg_indexes', {
    where: `(${f}.schemaname::text, ${f}.indexname::text) IN (SELECT iin.nspname::text, iic.relname::text FROM pg_catalog.pg_class iic JOIN pg_catalog.pg_namespace iin ON iin.oid = iic.relnamespace WHERE iic.oid IN (${idx}))`,
    nulled: [],
  });
  m.set('information_schema.tables', { where: relPair('table_schema', 'table_name'), nulled: [] });
  m.set('information_schema.views', { where: relPair('table_schema', 'table_name'), nulled: ['view_definition'] });
  m.set('information_schema.columns', {
    where: colTriple('table_schema', 'table_name', 'column_name'),
    // A default or generation expression may name a sequence, function or column the role may not see.
    nulled: ['column_default', 'generation_expression'],
  });
  m.set('information_schema.schemata', {
    where: `${f}.schema_name::text IN (SELECT gn.nspname::text FROM pg_catalog.pg_namespace gn WHERE ${nspVisible('gn')})`,
    nulled: ['schema_owner'],
  });
  m.set('information_schema.table_constraints', {
    where: `${relPair('table_schema', 'table_name')} AND ${conPair('constraint_schema', 'constraint_name')}`,
    nulled: [],
  });
  m.set('information_schema.key_column_usage', {
    where: `${conPair('constraint_schema', 'constraint_name')} AND ${colTriple('table_schema', 'table_name', 'column_name')}`,
    nulled: [],
  });
  m.set('information_schema.constraint_column_usage', {
    where: `${conPair('constraint_schema', 'constraint_name')} AND ${colTriple('table_schema', 'table_name', 'column_name')}`,
    nulled: [],
  });
  m.set('information_schema.referential_constraints', {
    where: `${conPair('constraint_schema', 'constraint_name')} AND ${conPair('unique_constraint_schema', 'unique_constraint_name')}`,
    nulled: [],
  });
  m.set('information_schema.check_constraints', { where: conPair('constraint_schema', 'constraint_name'), nulled: [] });
  return m;
}

/** Settings fixed when the server was built or started that drivers read (pgJDBC's getImportedKeys reads max_index_keys). */
const LIMIT_SETTINGS = [
  'max_index_keys',
  'max_function_args',
  'max_identifier_length',
  'block_size',
  'segment_size',
  'wal_block_size',
  'integer_datetimes',
  'server_version',
  'server_version_num',
];

/** Relations the wrappers and guards themselves read: allowed in a rewritten text (every client reference is wrapped or refused). */
export const SCOPED_INNER_RELATIONS: ReadonlySet<string> = new Set([
  'pg_catalog.pg_class',
  'pg_catalog.pg_namespace',
  'pg_catalog.pg_attribute',
  'pg_catalog.pg_type',
  'pg_catalog.pg_roles',
  'pg_catalog.pg_index',
  'pg_catalog.pg_constraint',
  'pg_catalog.pg_depend',
  'pg_catalog.pg_proc',
  'pg_catalog.pg_operator',
  'pg_catalog.pg_trigger',
  'pg_catalog.pg_rewrite',
  'pg_catalog.pg_inherits',
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

/** What a guarded call's object must be for the call to run. */
type GuardKind =
  | 'relation'
  | 'regclass'
  | 'index'
  | 'type'
  | 'role'
  | 'namespace'
  | 'constraint'
  | 'function'
  | 'trigger'
  | 'view'
  | 'exprrel'
  | 'family'
  | 'fndef'
  | 'partdef'
  | 'column'
  | 'never';

/** A guarded function: the guard, and which arguments it reads (x, and y for a column's number). */
interface GuardedFunction {
  kind: GuardKind;
  x: number;
  y?: number;
}

/**
 * pg_catalog functions a scoped role may call, guarded: the call gets its argument only when the object it names is
 * visible (else NULL), so an OID or a name the client makes up reveals nothing. Every other introspection function
 * is refused under scoped, as for catalog: none (obj_description is handled apart: its guard depends on its catalog).
 */
export const SCOPED_FUNCTIONS: ReadonlyMap<string, GuardedFunction> = new Map<string, GuardedFunction>([
  ['pg_table_is_visible', { kind: 'relation', x: 0 }],
  ['pg_type_is_visible', { kind: 'type', x: 0 }],
  ['pg_function_is_visible', { kind: 'function', x: 0 }],
  ['format_type', { kind: 'type', x: 0 }],
  ['pg_get_userbyid', { kind: 'role', x: 0 }],
  ['to_regclass', { kind: 'regclass', x: 0 }],
  ['to_regtype', { kind: 'type', x: 0 }],
  ['to_regnamespace', { kind: 'namespace', x: 0 }],
  ['pg_get_indexdef', { kind: 'index', x: 0 }],
  ['pg_get_constraintdef', { kind: 'constraint', x: 0 }],
  ['pg_get_triggerdef', { kind: 'trigger', x: 0 }],
  ['pg_get_viewdef', { kind: 'view', x: 0 }],
  // pg_get_expr(tree, relation): the tree comes from a filtered row; the relation names its columns.
  ['pg_get_expr', { kind: 'exprrel', x: 1 }],
  ['pg_get_partkeydef', { kind: 'partdef', x: 0 }],
  ['pg_get_partition_constraintdef', { kind: 'partdef', x: 0 }],
  ['pg_get_function_arguments', { kind: 'fndef', x: 0 }],
  ['pg_get_function_result', { kind: 'function', x: 0 }],
  ['pg_get_function_identity_arguments', { kind: 'function', x: 0 }],
  ['col_description', { kind: 'column', x: 0, y: 1 }],
  ['pg_relation_size', { kind: 'relation', x: 0 }],
  ['pg_table_size', { kind: 'relation', x: 0 }],
  ['pg_total_relation_size', { kind: 'relation', x: 0 }],
  ['pg_indexes_size', { kind: 'relation', x: 0 }],
  ['pg_relation_is_publishable', { kind: 'relation', x: 0 }],
  ['pg_partition_ancestors', { kind: 'family', x: 0 }],
  ['pg_partition_root', { kind: 'family', x: 0 }],
  ['pg_partition_tree', { kind: 'family', x: 0 }],
  // Their catalogs are shown empty under scoped.
  ['pg_get_statisticsobjdef_columns', { kind: 'never', x: 0 }],
  ['pg_get_ruledef', { kind: 'never', x: 0 }],
]);

/** obj_description(oid, catalog): the guard its (constant) catalog name calls for. */
const DESCRIPTION_GUARDS: ReadonlyMap<string, GuardKind> = new Map<string, GuardKind>([
  ['pg_class', 'relation'],
  ['pg_namespace', 'namespace'],
  ['pg_proc', 'function'],
  ['pg_type', 'type'],
  ['pg_constraint', 'constraint'],
  ['pg_trigger', 'trigger'],
]);

/** Introspection functions a scoped role may call unguarded: they name nothing of the database. */
export const SCOPED_FREE_FUNCTIONS: ReadonlySet<string> = new Set(['pg_catalog.pg_get_keywords']);

/** reg* types a cast may produce under scoped, with the to_reg* function that looks a name up without an error. */
const REG_CASTS: ReadonlyMap<string, { guard: GuardKind; lookup: string }> = new Map([
  ['regclass', { guard: 'regclass', lookup: 'to_regclass' }],
  ['regtype', { guard: 'type', lookup: 'to_regtype' }],
  ['regnamespace', { guard: 'namespace', lookup: 'to_regnamespace' }],
]);

/**
 * reg* types a filtered text may carry: those of guarded casts and lookups, and regproc, the type of pg_type's and
 * pg_proc's own columns the filters read (a client's cast to regproc is refused, and the wrappers hand out every reg*
 * column as its oid).
 */
export const SCOPED_REG_TYPES: ReadonlySet<string> = new Set([...REG_CASTS.keys(), 'regproc']);

/** The lookup a string constant naming a guard's object goes through (hidden and missing names both give NULL). */
const LOOKUPS: Partial<Record<GuardKind, string>> = {
  relation: 'to_regclass',
  regclass: 'to_regclass',
  view: 'to_regclass',
  exprrel: 'to_regclass',
  family: 'to_regclass',
  partdef: 'to_regclass',
  type: 'to_regtype',
  namespace: 'to_regnamespace',
};

/** Functions the rewritten text itself calls (the guards and their lookups): allowed with catalogFiltered. */
export const SCOPED_INNER_FUNCTIONS: ReadonlySet<string> = new Set([
  ...[...SCOPED_FUNCTIONS.keys()].map((n) => `pg_catalog.${n}`),
  'pg_catalog.obj_description',
  'pg_catalog.regclassout',
  'pg_catalog.regtypeout',
  'pg_catalog.regnamespaceout',
]);

/** Functions a filtered text may call that the rewrite does not guard: the guards' own, never the client's. */
const UNGUARDED_INNER_FUNCTIONS: ReadonlySet<string> = new Set(['regclassout', 'regtypeout', 'regnamespaceout']);

/** A reg* type by its name or its array's (`_regclass`). */
function isRegTypeName(name: string): boolean {
  return REG_TYPES.has(name) || (name.startsWith('_') && REG_TYPES.has(name.slice(1)));
}

/** A name that, called in field notation, a filtered text would let through unguarded. */
function namesFilterFunction(name: string): boolean {
  return (
    SCOPED_FUNCTIONS.has(name) ||
    name === 'obj_description' ||
    UNGUARDED_INNER_FUNCTIONS.has(name) ||
    isRegTypeName(name)
  );
}

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
  const p = predicates(role);
  const wrappers = new Map<string, AnyNode>();
  for (const [key, spec] of filterSpecs(role)) {
    const rel = catalog.relations.get(key);
    // Without the catalog's column list the wrapper cannot keep the relation's shape: such a name is refused.
    if (rel === undefined || rel.columns.length === 0) continue;
    const hidden = SYSTEM_DENIED_COLUMNS.get(key);
    const cols = rel.columns.map((c) => {
      const name = quoteIdent(c.name);
      const array = c.type.endsWith('[]');
      if (spec.nulled.includes(c.name) || hidden?.has(c.name) === true) return `NULL::${nullType(c.type)} AS ${name}`;
      const when = spec.shownWhen?.[c.name];
      if (when !== undefined) return `CASE WHEN ${when} THEN ${INNER}.${name} END AS ${name}`;
      // A reg* column prints the name of whatever its OID names: the wrapper hands out the OID.
      if (REG_TYPES.has(array ? c.type.slice(0, -2) : c.type))
        return `${INNER}.${name}::pg_catalog.oid${array ? '[]' : ''} AS ${name}`;
      return `${INNER}.${name}`;
    });
    const [schema, name] = key.split('.') as [string, string];
    // OFFSET 0 is the planner's fence: without it Postgres pushes the client's WHERE conditions on the wrapper's
    // output down into the wrapper, next to the filter, and runs the cheaper first, so a client expression would see
    // the rows the filter drops (`CASE WHEN relname LIKE 'a%' THEN 1/0 END` raising on a hidden row is an oracle of
    // its name, a character at a time). Fenced, the client's conditions only ever see filtered rows.
    wrappers.set(
      key,
      selectNode(
        `${p.withCtes(`${spec.where} ${cols.join(', ')}`)}SELECT ${cols.join(', ')} FROM ${schema}.${name} ${INNER} WHERE ${spec.where} OFFSET 0`,
      ),
    );
  }
  const x = '(pgwarden_x)::pg_catalog.oid';
  /** `x IN (<the query>)`, the query with the sets it names: x stays outside the WITH's scope. */
  const among = (query: string) => `${x} IN (${p.withCtes(query)}${query})`;
  /**
   * `SELECT 1 FROM <x's inheritance family: x, its ancestors (up) and descendants, any depth, by pg_inherits> WHERE
   * <a member is not the role's, or matches the condition>`: one recursive query, so x stays outside the WITH's scope
   * only where it seeds the recursion.
   */
  const family = (cond: string): string => {
    const outside = `pgwarden_fam.oid NOT IN (${p.vis} UNION ALL ${p.idx})`;
    const body = `SELECT 1 FROM (SELECT oid, true AS up FROM pgwarden_up UNION ALL SELECT oid, false FROM pgwarden_down) pgwarden_fam WHERE ${outside} OR (${cond})`;
    const defs = p
      .withCtes(body)
      .replace(/^WITH /, '')
      .trimEnd();
    const sets = defs === '' ? '' : `${defs}, `;
    return `WITH RECURSIVE ${sets}pgwarden_up(oid) AS (SELECT ${x} UNION SELECT fu.inhparent FROM pg_catalog.pg_inherits fu JOIN pgwarden_up fuu ON fu.inhrelid = fuu.oid), pgwarden_down(oid) AS (SELECT ${x} UNION SELECT fd.inhrelid FROM pg_catalog.pg_inherits fd JOIN pgwarden_down fdd ON fd.inhparent = fdd.oid) ${body}`;
  };
  const conds: Record<GuardKind, string> = {
    relation: among(`${p.vis} UNION ALL ${p.idx}`),
    // A regclass also names the system catalogs themselves (`'pg_class'::regclass`, as drivers write), which are the
    // same in every database.
    regclass: among(
      `${p.vis} UNION ALL ${p.idx} UNION ALL SELECT sc.oid FROM pg_catalog.pg_class sc JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace WHERE sn.nspname IN ('pg_catalog', 'information_schema') AND sc.relkind IN ('r', 'v')`,
    ),
    index: among(p.idx),
    type: among(p.types),
    role: `${x} IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER)`,
    namespace: among(`SELECT gn.oid FROM pg_catalog.pg_namespace gn WHERE ${p.nspVisible('gn')}`),
    constraint: among(p.cons),
    function: among(p.fns),
    // An argument list prints its defaults, whose expressions may call a function or name a type the role may not see.
    fndef: (() => {
      const d = p.depsOk(CLASS.pg_proc, x);
      return `${among(p.fns)} AND (${p.withCtes(d)}SELECT ${d})`;
    })(),
    trigger: among(p.trigs),
    // A view's text names what its rule depends on.
    view: among(
      `SELECT gv.oid FROM pgwarden_vis gv WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite gr WHERE gr.ev_class = gv.oid AND NOT ${p.depsOk(CLASS.pg_rewrite, 'gr.oid')})`,
    ),
    // Any of the relation's column names may appear: none may be denied or hidden.
    exprrel: among(
      `SELECT gv.oid FROM pgwarden_vis gv WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute ga WHERE ga.attrelid = gv.oid AND ga.attnum > 0 AND NOT ga.attisdropped AND NOT (${p.attrVisible('ga')}))`,
    ),
    // The relation's partition or inheritance family, which pg_partition_root / _ancestors / _tree hand out as
    // regclass values (printed as names), must be the role's at every depth, up and down.
    family: `${among(`${p.vis} UNION ALL ${p.idx}`)} AND NOT EXISTS (${family('false')})`,
    // A partition key or a partition's constraint is built from every ancestor's key, whose expressions may call
    // functions or name columns: each ancestor (and the relation) must name nothing hidden and have no denied column.
    partdef: `${among(`${p.vis} UNION ALL ${p.idx}`)} AND NOT EXISTS (${family('false')}) AND NOT EXISTS (${family(`pgwarden_fam.up AND NOT (${p.depsOk(CLASS.pg_class, 'pgwarden_fam.oid')} AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute ga WHERE ga.attrelid = pgwarden_fam.oid AND ga.attnum > 0 AND NOT ga.attisdropped AND NOT (${p.attrVisible('ga')})))`)})`,
    column: (() => {
      const q = `SELECT ga.attrelid, ga.attnum::pg_catalog.int4 FROM pg_catalog.pg_attribute ga WHERE ${p.attrVisible('ga')}`;
      return `(${x}, (pgwarden_y)::pg_catalog.int4) IN (${p.withCtes(q)}${q})`;
    })(),
    never: `false AND ${x} IS NULL`,
  };
  const guards = new Map<GuardKind, AnyNode>();
  for (const [k, cond] of Object.entries(conds)) guards.set(k as GuardKind, firstTarget(`SELECT ${cond}`));
  return { wrappers, guards };
}

/** A type a NULL can be cast to: pseudo-types (attmissingval's anyarray) read as text[]. */
function nullType(t: string): string {
  return t === 'anyarray' ? 'text[]' : t;
}

/** The pg_catalog types the grammar itself names for SQL's keyword types (`integer`, `varchar(n)`, `timestamp with time zone`, …). */
const GRAMMAR_TYPES: ReadonlySet<string> = new Set([
  'bool',
  'int2',
  'int4',
  'int8',
  'float4',
  'float8',
  'numeric',
  'bpchar',
  'varchar',
  'bit',
  'varbit',
  'timestamp',
  'timestamptz',
  'time',
  'timetz',
  'interval',
]);

/**
 * The deparser, except that a type the client qualified with pg_catalog (`polcmd::pg_catalog.text`, as psql writes) is
 * printed qualified: the stock one prints it bare (`text`), which parses back as another tree, and the round-trip check
 * then refused psql's \dp. The grammar's own keyword types keep the stock printing, which parses back the same.
 */
class CatalogDeparser extends Deparser {
  override TypeName(node: Parameters<Deparser['TypeName']>[0], context: DeparseContext): string {
    const names = strings(node.names);
    const name = names?.[1];
    if (names?.length !== 2 || names[0] !== 'pg_catalog' || name === undefined || GRAMMAR_TYPES.has(name))
      return super.TypeName(node, context);
    if (node.setof === true || node.pct_type === true) return super.TypeName(node, context);
    return `pg_catalog.${quoteIdent(name) === name ? `"${name}"` : quoteIdent(name)}${typeNameSuffix(this, node, context)}`;
  }
}

/** A deep copy of a template with each `pgwarden_x` / `pgwarden_y` column reference replaced by x / y (not copied, not searched). */
function instantiate(template: AnyNode, subs: Readonly<Record<string, AnyNode>>): AnyNode {
  const copy = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(copy);
    if (v === null || typeof v !== 'object') return v;
    const o = v as AnyNode;
    const fields = o.ColumnRef?.fields;
    const name = Array.isArray(fields) && fields.length === 1 ? fields[0]?.String?.sval : undefined;
    if (typeof name === 'string' && Object.hasOwn(subs, name)) return subs[name];
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

const MAY_NAME_CATALOG = /pg_|information_schema|format_type|reg|description|u&/i;

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
  // pg_*, format_type, *_description, to_reg* or reg*; U& identifiers may spell any of them in escapes.
  // A plan names what the statement reaches beyond what it names: the tables a view reads, a parent's partitions,
  // indexes (on denied columns too), inheritance children. None of that is the role's to see, and no filter applies
  // to a plan's text, so EXPLAIN of anything is refused under scoped.
  if (/explain/i.test(sql)) {
    const p = parseStatements(sql);
    if (p.ok && p.stmts.some((s) => (s.stmt as AnyNode | undefined)?.ExplainStmt !== undefined))
      return {
        ok: false,
        why: 'EXPLAIN under catalog: scoped: a plan names the relations a view reads, partitions and indexes',
      };
  }
  if (!MAY_NAME_CATALOG.test(sql) && !role.searchPath.includes('information_schema')) return undefined;
  const parsed = parseStatements(sql);
  if (!parsed.ok) return undefined;
  const filters = filtersFor(role, catalog);
  if (typeof filters === 'string') return { ok: false, why: filters };
  const systemNames = new Set<string>();
  for (const key of catalog.relations.keys()) if (key.startsWith('pg_catalog.')) systemNames.add(key.slice(11));
  // Every name a filtered text may read (SCOPED_RELATIONS, SCOPED_INNER_RELATIONS) must be known here, so that a
  // client's reference to it is wrapped or refused, never left as written.
  for (const key of [...SCOPED_RELATIONS, ...SCOPED_INNER_RELATIONS, ...INTROSPECTION_RELATION_NAMES])
    if (key.startsWith('pg_catalog.')) systemNames.add(key.slice(11));
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
      // load.ts refuses information_schema on a scoped role's searchPath; a role built otherwise is refused here.
      if (role.searchPath.includes('information_schema') && catalog.relations.has(`information_schema.${rel}`))
        throw new Refusal(`an unqualified ${rel} may name information_schema.${rel} through the search path`);
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

  /**
   * `(SELECT CASE WHEN <g.v is visible> THEN <result> END FROM (SELECT <bound> AS v[, <y> AS w]) g)`: the client's
   * expression is evaluated once, and what the guard checks is what the call gets. Written `CASE WHEN <x is
   * visible> THEN x END`, a volatile x (`CASE WHEN random() < 0.5 THEN <visible> ELSE <hidden> END`) was checked as
   * one object and used as another. The result is g.v unless given (built from g.v and g.w).
   */
  const guard = (
    kind: GuardKind,
    bound: AnyNode,
    y?: AnyNode,
    result?: (v: AnyNode, w: AnyNode) => AnyNode,
  ): AnyNode => {
    const t = filters.guards.get(kind);
    if (t === undefined) throw new Refusal(`no guard for ${kind}`);
    changed = true;
    const col = (name: string): AnyNode => ({
      ColumnRef: { fields: [{ String: { sval: 'pgwarden_g' } }, { String: { sval: name } }] },
    });
    const v = col('pgwarden_v');
    const w = col('pgwarden_w');
    const targets: AnyNode[] = [{ ResTarget: { name: 'pgwarden_v', val: bound } }];
    if (y !== undefined) targets.push({ ResTarget: { name: 'pgwarden_w', val: y } });
    const cond = instantiate(t, y === undefined ? { pgwarden_x: v } : { pgwarden_x: v, pgwarden_y: w });
    const select: AnyNode = {
      SelectStmt: {
        targetList: [
          {
            ResTarget: {
              val: {
                CaseExpr: { args: [{ CaseWhen: { expr: cond, result: result === undefined ? v : result(v, w) } }] },
              },
            },
          },
        ],
        fromClause: [
          {
            RangeSubselect: {
              subquery: { SelectStmt: { targetList: targets, limitOption: 'LIMIT_OPTION_DEFAULT', op: 'SETOP_NONE' } },
              alias: { aliasname: 'pgwarden_g' },
            },
          },
        ],
        limitOption: 'LIMIT_OPTION_DEFAULT',
        op: 'SETOP_NONE',
      },
    };
    return { SubLink: { subLinkType: 'EXPR_SUBLINK', subselect: select } };
  };

  /** `(x)::pg_catalog.<type>`. */
  const castTo = (x: AnyNode, type: string): AnyNode => ({
    TypeCast: {
      arg: x,
      typeName: {
        names: [{ String: { sval: 'pg_catalog' } }, { String: { sval: type } }],
        typemod: -1,
      },
    },
  });

  /** `pg_catalog.<lookup>(constant)`: a name looked up without an error. */
  const lookup = (fn: string, arg: AnyNode): AnyNode => ({
    FuncCall: {
      funcname: [{ String: { sval: 'pg_catalog' } }, { String: { sval: fn } }],
      args: [arg],
      funcformat: 'COERCE_EXPLICIT_CALL',
    },
  });

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
    if (out.A_Indirection !== undefined) fieldNotation(out.A_Indirection as AnyNode);
    // `g.f` is f(g) when g (a FROM item's alias; a function returning a scalar makes it that scalar) has no column f.
    if (out.ColumnRef !== undefined && Array.isArray(out.ColumnRef.fields) && out.ColumnRef.fields.length > 1) {
      const last = (out.ColumnRef.fields.at(-1) as AnyNode)?.String?.sval;
      if (typeof last === 'string' && namesFilterFunction(last))
        throw new Refusal(`${last} in column notation (g.${last}), which the rewrite cannot guard`, undefined, true);
    }
    return out;
  };

  /**
   * `(x).f` is `f(x)` to Postgres when x has no field f (field notation), and `(x).regclass` a cast (column notation
   * `g.f` likewise, checked in walk): neither is a
   * FuncCall or a TypeCast, so neither would be guarded, while a filtered text may call the guards' functions and
   * carry their reg* values. A field named like a guarded function or a reg* type is refused.
   */
  const fieldNotation = (ind: AnyNode): void => {
    for (const i of Array.isArray(ind.indirection) ? ind.indirection : []) {
      const field = (i as AnyNode)?.String?.sval;
      if (typeof field === 'string' && namesFilterFunction(field))
        throw new Refusal(`${field} in field notation ((x).${field}), which the rewrite cannot guard`, undefined, true);
    }
  };

  const guardCall = (node: AnyNode): AnyNode => {
    const f = node.FuncCall as AnyNode;
    const names = strings(f.funcname);
    if (names === undefined) return node;
    const name = names[names.length - 1] ?? '';
    // `app.pg_catalog.format_type` names pg_catalog's function too (the database part must be the current one).
    if (names.length > 2 && (SCOPED_FUNCTIONS.has(name) || name === 'obj_description'))
      throw new Refusal(`a three-part name of ${name}`, undefined, true);
    if (names.length > 2 || (names.length === 2 && names[0] !== 'pg_catalog')) return node;
    const args: AnyNode[] = Array.isArray(f.args) ? f.args : [];
    // The guards' own output functions (regclassout(oid) prints any relation's name) and reg* casts written as
    // function calls (regclass(x)) are the filters' alone.
    if (UNGUARDED_INNER_FUNCTIONS.has(name) || isRegTypeName(name))
      throw new Refusal(`a call of ${name}, which prints the name of any object its OID names`, undefined, true);
    let spec = SCOPED_FUNCTIONS.get(name);
    if (name === 'obj_description') {
      // Its guard depends on the catalog it is asked about, which must be a constant.
      const cat = args[1]?.A_Const?.sval?.sval;
      const kind = typeof cat === 'string' && args.length === 2 ? DESCRIPTION_GUARDS.get(cat) : undefined;
      spec = { kind: kind ?? 'never', x: 0 };
    }
    if (spec === undefined) return node;
    if (f.func_variadic === true || f.agg_star === true || args.some((a) => a?.NamedArgExpr !== undefined))
      throw new Refusal(`${name} called with named or variadic arguments`);
    const x = args[spec.x];
    const y = spec.y === undefined ? undefined : args[spec.y];
    if (x === undefined || (spec.y !== undefined && y === undefined))
      throw new Refusal(`${name} called without the argument its guard reads`);
    // to_regclass / to_regtype / to_regnamespace: the looked-up value itself is what must be visible.
    if (name.startsWith('to_reg')) return guard(spec.kind, node);
    // col_description(relation, column): both arguments are bound once and the call made inside the guard.
    if (spec.y !== undefined && y !== undefined)
      return guard(spec.kind, castTo(value0(spec.kind, x), 'oid'), castTo(y, 'int4'), (v, w) => ({
        FuncCall: { ...f, args: args.map((a, i) => (i === spec.x ? v : i === spec.y ? w : a)) },
      }));
    // The argument is guarded, not the call: `f(CASE WHEN <visible> THEN x END)`, so the call stays where a function
    // call must be (a set-returning function in FROM) and gets NULL for an object the role may not see (every guarded
    // function is strict or answers NULL for NULL). A string constant naming the object is looked up without an
    // error, so hidden and missing names read alike.
    // The bound value is the argument as an oid (every guarded function takes an oid, or a reg* an oid casts to
    // implicitly), so an untyped parameter is typed as before.
    const guarded = guard(spec.kind, castTo(value0(spec.kind, x), 'oid'));
    return { FuncCall: { ...f, args: args.map((a, i) => (i === spec.x ? guarded : a)) } };
  };

  /** A guarded argument: a string constant naming the object is looked up without an error. */
  const value0 = (kind: GuardKind, x: AnyNode): AnyNode => {
    const fn = LOOKUPS[kind];
    return x.A_Const?.sval !== undefined && fn !== undefined ? lookup(fn, x) : x;
  };

  const guardCast = (node: AnyNode): AnyNode => {
    const t = node.TypeCast as AnyNode;
    const names = strings(t.typeName?.names);
    if (names === undefined) return node;
    const name = names[names.length - 1] ?? '';
    if (names.length > 2 && REG_TYPES.has(name.replace(/^_/, '')))
      throw new Refusal(`a three-part name of type ${name}`, undefined, true);
    if (names.length > 2 || (names.length === 2 && names[0] !== 'pg_catalog')) return node;
    // `_regclass` is regclass[] by its catalog name.
    if (name.startsWith('_') && REG_TYPES.has(name.slice(1)))
      throw new Refusal(`a cast to ${name.slice(1)}[]`, undefined, true);
    if (!REG_TYPES.has(name)) return node;
    const reg = REG_CASTS.get(name);
    // regproc, regrole, regoper, …: no guard, so refused (the rewritten text may carry reg* types only from guards).
    if (reg === undefined)
      throw new Refusal(`a cast to ${name}, which prints the name of any object its OID names`, undefined, true);
    if ((t.typeName?.arrayBounds ?? []).length > 0) throw new Refusal(`a cast to ${name}[]`, undefined, true);
    const arg = t.arg as AnyNode;
    if (arg?.A_Const?.sval !== undefined) {
      return guard(reg.guard, lookup(reg.lookup, arg));
    }
    return guard(reg.guard, node);
  };

  try {
    for (const raw of stmts) {
      const stmt = raw.stmt as AnyNode | undefined;
      const kind = stmt === undefined ? undefined : Object.keys(stmt)[0];
      if (kind === undefined) continue;
      if (kind === 'ExplainStmt' || kind === 'PrepareStmt' || kind === 'DeclareCursorStmt' || kind === 'CopyStmt') {
        const inner = (stmt as AnyNode)[kind] as AnyNode;
        const before: boolean = changed;
        if (inner.query !== undefined) inner.query = walk(inner.query);
        else walk(inner);
        // EXPLAIN prints the filter, which names the role's denied columns.
        if (kind === 'ExplainStmt' && changed && !before)
          throw new Refusal('EXPLAIN of a statement that reads system catalogs would print their filters');
        continue;
      }
      if (!QUERY_KINDS.has(kind)) {
        // Anything else (DDL, EXECUTE's arguments, CALL) is not rewritten: a catalog relation or a guarded call in it
        // is refused.
        const before: boolean = changed;
        walk(stmt);
        if (changed !== before)
          throw new Refusal('a statement other than a query reads system catalogs or calls a catalog function');
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
    let text: string | undefined;
    try {
      text = new CatalogDeparser(raw.stmt as never, { pretty: false }).deparseQuery();
    } catch {
      text = undefined;
    }
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
