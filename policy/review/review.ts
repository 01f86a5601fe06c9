// The reviewed classification of every pg_catalog and information_schema function and relation, and the check of a server's catalog against it.
//
// functions.json and relations.json are data, reviewed by hand (see docs/functions.md, "The catalog review"):
// judgeFunction denies a system function whose name is not in functions.json (`unclassified`), so a
// function that a new PostgreSQL version adds stays denied until someone classifies it. The checker
// (tools/catalog-review/review.ts, test/integration/catalog-review.test.ts) lists what a live server has
// that the review does not. Nothing here touches a socket: callers pass a query function.
import functionsData from './functions.json' with { type: 'json' };
import relationsData from './relations.json' with { type: 'json' };

/**
 * What a reviewed system function is:
 * - `safe`: computes on its arguments (or this session's own state); allowed by default.
 * - `volatile_allowed`: volatile, but only in the sense of "a different value per call"; allowed.
 * - `volatile`: volatile with possible side effects; denied by default, a role may list it in functions.allow.
 * - `introspection`: catalog metadata or names; allowed only with `catalog: introspection`.
 * - `denied`: other sessions' activity, server files, others' settings, side effects, runs SQL text…;
 *   never allowed, whatever the policy says.
 */
export type FunctionClass = 'safe' | 'volatile_allowed' | 'volatile' | 'introspection' | 'denied';

export const FUNCTION_CLASSES: readonly FunctionClass[] = [
  'safe',
  'volatile_allowed',
  'volatile',
  'introspection',
  'denied',
];

export interface ReviewedFunction {
  readonly class: FunctionClass;
  /** PostgreSQL major versions whose catalog had this name when it was reviewed. */
  readonly versions: readonly number[];
  /** Why (required for every class but `safe`). */
  readonly reason?: string;
}

/**
 * What a reviewed system relation is:
 * - `introspection`: in INTROSPECTION_RELATIONS (catalog: introspection reads it, minus SYSTEM_DENIED_COLUMNS).
 * - `denied`: in DENIED_SYSTEM_RELATIONS, never readable.
 * - `session`: in SESSION_RELATIONS, this session's own state (prepared statements, cursors): every role reads it.
 * - `listed_only`: none of these; denied unless an introspection role lists it in its relations.
 */
export type RelationClass = 'introspection' | 'denied' | 'session' | 'listed_only';

export interface ReviewedRelation {
  readonly class: RelationClass;
  readonly versions: readonly number[];
  readonly reason?: string;
  /** Introspection relations: every column that was reviewed (denied ones are in SYSTEM_DENIED_COLUMNS). */
  readonly columns?: readonly string[];
}

interface ReviewFile<T> {
  readonly versions: readonly number[];
  readonly entries: Readonly<Record<string, T>>;
}

const FUNCTIONS = functionsData as unknown as ReviewFile<ReviewedFunction>;
const RELATIONS = relationsData as unknown as ReviewFile<ReviewedRelation>;

/** The PostgreSQL major versions the review covers. */
export const REVIEWED_VERSIONS: readonly number[] = FUNCTIONS.versions;

/** `schema.name` → classification, for pg_catalog and information_schema functions. */
export const REVIEWED_FUNCTIONS: ReadonlyMap<string, ReviewedFunction> = new Map(Object.entries(FUNCTIONS.entries));

/** `schema.name` → classification, for pg_catalog and information_schema tables and views. */
export const REVIEWED_RELATIONS: ReadonlyMap<string, ReviewedRelation> = new Map(Object.entries(RELATIONS.entries));

/** Schemas whose functions must be in the review. */
export const REVIEWED_SCHEMAS: ReadonlySet<string> = new Set(['pg_catalog', 'information_schema']);

/** The review's entry for a system function, or undefined (unclassified, or not a reviewed schema). */
export function reviewedFunction(schema: string, name: string): ReviewedFunction | undefined {
  return REVIEWED_FUNCTIONS.get(`${schema}.${name}`);
}

// ------------------------------------------------------------------ the server's catalog

/** What the checker reads from a server. */
export const REVIEW_QUERIES = {
  version: `select pg_catalog.current_setting('server_version_num')::int / 10000 as major`,
  functions: `
    select n.nspname as schema, p.proname as name,
      pg_catalog.array_agg(distinct p.provolatile::text) as volatility,
      pg_catalog.array_agg(distinct p.prokind::text) as kinds,
      pg_catalog.bool_or(p.proretset) as retset,
      pg_catalog.array_agg(distinct pg_catalog.format_type(p.prorettype, null)) as returns,
      pg_catalog.array_agg(distinct pg_catalog.oidvectortypes(p.proargtypes)) as args,
      pg_catalog.bool_or(p.proacl is not null and not pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')) as revoked,
      pg_catalog.string_agg(distinct pg_catalog.obj_description(p.oid, 'pg_proc'), ' | ') as description
    from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname in ('pg_catalog', 'information_schema')
    group by 1, 2
    order by 1, 2`,
  relations: `
    select n.nspname as schema, c.relname as name, c.relkind::text as kind,
      (select pg_catalog.array_agg(a.attname::text order by a.attnum) from pg_catalog.pg_attribute a
        where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) as columns
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where n.nspname in ('pg_catalog', 'information_schema') and c.relkind in ('r', 'v', 'm', 'p', 'f')
    order by 1, 2`,
} as const;

/** One function name of the server, all overloads folded together. */
export interface ServerFunction {
  schema: string;
  name: string;
  volatility: string[];
  kinds: string[];
  retset: boolean;
  returns: string[];
  /** One entry per distinct argument list, as oidvectortypes prints it. */
  args: string[];
  /** EXECUTE is revoked from PUBLIC on some overload. */
  revoked: boolean;
  description: string | null;
}

export interface ServerRelation {
  schema: string;
  name: string;
  kind: string;
  columns: string[];
}

export interface ServerCatalog {
  major: number;
  functions: ServerFunction[];
  relations: ServerRelation[];
}

// biome-ignore lint/suspicious/noExplicitAny: rows of node-postgres's untyped result; each reader checks the fields it uses
export type ReviewQuery = (sql: string) => Promise<{ rows: any[] }>;

/** node-postgres returns Postgres arrays as JS arrays; other drivers may return `{a,b}` text. */
function arr(v: unknown): string[] {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string' && v.startsWith('{') && v.endsWith('}'))
    return v
      .slice(1, -1)
      .split(',')
      .filter((s) => s !== '');
  return [];
}

/** Reads the server's system functions and relations. */
export async function readServerCatalog(query: ReviewQuery): Promise<ServerCatalog> {
  const major = Number((await query(REVIEW_QUERIES.version)).rows[0]?.major);
  const functions = (await query(REVIEW_QUERIES.functions)).rows.map(
    (r): ServerFunction => ({
      schema: String(r.schema),
      name: String(r.name),
      volatility: arr(r.volatility),
      kinds: arr(r.kinds),
      retset: r.retset === true,
      returns: arr(r.returns),
      args: arr(r.args),
      revoked: r.revoked === true,
      description: r.description === null || r.description === undefined ? null : String(r.description),
    }),
  );
  const relations = (await query(REVIEW_QUERIES.relations)).rows.map(
    (r): ServerRelation => ({
      schema: String(r.schema),
      name: String(r.name),
      kind: String(r.kind),
      columns: arr(r.columns),
    }),
  );
  return { major, functions, relations };
}

// ------------------------------------------------------------------ the comparison

export interface ReviewGaps {
  major: number;
  /** Functions of the server missing from the review (denied as `unclassified` until reviewed). */
  functions: ServerFunction[];
  /** Relations of the server missing from the review. */
  relations: ServerRelation[];
  /** Columns of introspection relations missing from the review, as `schema.relation.column`. */
  columns: string[];
  /** Reviewed entries the server does not have (informational: removed or renamed in this version). */
  absentFunctions: string[];
  absentRelations: string[];
}

/** What the server has that the review does not classify. */
export function compareWithReview(catalog: ServerCatalog): ReviewGaps {
  const functions = catalog.functions.filter((f) => !REVIEWED_FUNCTIONS.has(`${f.schema}.${f.name}`));
  const relations: ServerRelation[] = [];
  const columns: string[] = [];
  for (const r of catalog.relations) {
    const key = `${r.schema}.${r.name}`;
    const reviewed = REVIEWED_RELATIONS.get(key);
    if (reviewed === undefined) {
      relations.push(r);
      continue;
    }
    if (reviewed.class !== 'introspection') continue;
    const known = new Set(reviewed.columns ?? []);
    for (const c of r.columns) if (!known.has(c)) columns.push(`${key}.${c}`);
  }
  const seenF = new Set(catalog.functions.map((f) => `${f.schema}.${f.name}`));
  const seenR = new Set(catalog.relations.map((r) => `${r.schema}.${r.name}`));
  const absentFunctions = [...REVIEWED_FUNCTIONS]
    .filter(([k, v]) => !seenF.has(k) && v.versions.includes(catalog.major))
    .map(([k]) => k);
  const absentRelations = [...REVIEWED_RELATIONS]
    .filter(([k, v]) => !seenR.has(k) && v.versions.includes(catalog.major))
    .map(([k]) => k);
  return { major: catalog.major, functions, relations, columns, absentFunctions, absentRelations };
}

/** True when the server has nothing the review leaves unclassified. */
export function reviewComplete(gaps: ReviewGaps): boolean {
  return gaps.functions.length === 0 && gaps.relations.length === 0 && gaps.columns.length === 0;
}
