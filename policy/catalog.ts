// Reads the upstream catalog the policy engine needs (relations, columns, functions, operators) and checks the upstream user's privileges.
import { createHash } from 'node:crypto';
import { frozenMap, frozenSet, relationKey } from './load.ts';
import { quoteIdent } from '../lib/ident.ts';
import type { CatalogType, CatalogFunction, CatalogRelation, CatalogSnapshot, RelationPattern } from './types.ts';

/** What loadCatalog needs from a database connection: node-postgres's `client.query` or `pool.query` fit. */
// biome-ignore lint/suspicious/noExplicitAny: rows of node-postgres's untyped result; each reader checks the fields it uses
export type CatalogQuery = (sql: string, params?: unknown[]) => Promise<{ rows: any[] }>;

/** Relation kinds the engine reasons about: table, view, matview, partitioned table, foreign table. */
const RELKINDS = `('r','v','m','p','f')`;

/**
 * The catalog reads. Every object is schema-qualified (pg_catalog.*) so a hostile object earlier on the
 * upstream search_path cannot stand in for a system catalog. Patterns travel as one JSON parameter
 * (`[[schema, name|null], …]`, null meaning `schema.*`) because text parameters work with every driver.
 */
export const CATALOG_QUERIES = {
  database: `select pg_catalog.current_database() as database`,

  // Per-backend temp and toast schemas come and go and never hold policy objects.
  schemas: `select n.nspname as name from pg_catalog.pg_namespace n where n.nspname !~ '^pg_(toast|temp_)'`,

  relations: `
    with wanted as (
      select x->>0 as schema, x->>1 as name from pg_catalog.json_array_elements($1::json) x
    )
    select n.nspname as schema, c.relname as name, c.relkind::text as kind, c.relhassubclass as has_children,
      (select pg_catalog.json_agg(pg_catalog.json_build_array(a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) order by a.attnum)
         from pg_catalog.pg_attribute a
        where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped) as columns
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ${RELKINDS}
      and exists (select 1 from wanted w where w.schema = n.nspname and (w.name is null or w.name = c.relname))
    order by n.nspname, c.relname`,

  // Inheritance and partition edges (child → parent): a token narrowing's column list of a parent limits its
  // children and partitions too (CatalogRelation.ancestors).
  inherits: `
    select cn.nspname as schema, c.relname as name, pn.nspname as parent_schema, p.relname as parent_name
    from pg_catalog.pg_inherits i
    join pg_catalog.pg_class c on c.oid = i.inhrelid
    join pg_catalog.pg_namespace cn on cn.oid = c.relnamespace
    join pg_catalog.pg_class p on p.oid = i.inhparent
    join pg_catalog.pg_namespace pn on pn.oid = p.relnamespace`,

  // Every schema: the engine must know the volatility and kind of any function a statement can name.
  functions: `
    select n.nspname as schema, p.proname as name, p.provolatile::text as volatility, p.prokind::text as kind,
      pg_catalog.oidvectortypes(p.proargtypes) as args, p.proretset as retset
    from pg_catalog.pg_proc p
    join pg_catalog.pg_namespace n on n.oid = p.pronamespace`,

  // Operators outside pg_catalog run user (or extension) code; the engine checks the function behind them.
  operators: `
    select n.nspname as schema, o.oprname as name, fn.nspname as fschema, p.proname as fname
    from pg_catalog.pg_operator o
    join pg_catalog.pg_namespace n on n.oid = o.oprnamespace
    left join pg_catalog.pg_proc p on p.oid = o.oprcode
    left join pg_catalog.pg_namespace fn on fn.oid = p.pronamespace
    where n.nspname <> 'pg_catalog'`,

  // Every type, with the relation behind a row type (or an array of one): type names in SQL and Parse
  // parameter type OIDs are resolved against this, so a relation cannot be reached through its type.
  types: `
    select t.oid::int8 as oid, n.nspname as schema, t.typname as name,
      coalesce(rn.nspname || '.' || r.relname, ern.nspname || '.' || er.relname) as relation,
      t.typtype::text as typtype, (case when t.typcategory = 'A' then t.typelem else 0 end)::int8 as elem, t.typbasetype::int8 as base,
      exists (select 1 from pg_catalog.pg_constraint k where k.contypid = t.oid and k.contype = 'c') as checks,
      (select g.rngsubtype::int8 from pg_catalog.pg_range g where g.rngtypid = t.oid) as rngsub,
      exists (select 1 from pg_catalog.pg_range g join pg_catalog.pg_opclass oc on oc.oid = g.rngsubopc
          join pg_catalog.pg_amproc pr on pr.amprocfamily = oc.opcfamily and pr.amprocnum = 1
          join pg_catalog.pg_proc p on p.oid = pr.amproc join pg_catalog.pg_language l on l.oid = p.prolang
        where g.rngtypid = t.oid and l.lanname not in ('c', 'internal')) as rngusercmp,
      (select g.rngtypid::int8 from pg_catalog.pg_range g where g.rngmultitypid = t.oid) as mrrange,
      (select pg_catalog.array_agg(a.atttypid::int8) from pg_catalog.pg_attribute a
        where t.typtype = 'c' and a.attrelid = t.typrelid and a.attnum > 0 and not a.attisdropped) as cols
    from pg_catalog.pg_type t
    join pg_catalog.pg_namespace n on n.oid = t.typnamespace
    left join pg_catalog.pg_class r on r.oid = t.typrelid and r.relkind in ${RELKINDS}
    left join pg_catalog.pg_namespace rn on rn.oid = r.relnamespace
    left join pg_catalog.pg_type e on e.oid = t.typelem and t.typcategory = 'A'
    left join pg_catalog.pg_class er on er.oid = e.typrelid and er.relkind in ${RELKINDS}
    left join pg_catalog.pg_namespace ern on ern.oid = er.relnamespace
    where n.nspname !~ '^pg_(toast|temp_)'`,

  // The server's own keyword categories: a word pgwarden's grammar (libpg-query, PostgreSQL 18) reserves more strictly
  // than an older server does makes text the server accepts fail to parse in pgwarden (evaluate.ts syntaxDenial).
  keywords: `select word, catcode::text as catcode from pg_catalog.pg_get_keywords()`,

  currentUser: `
    select r.rolname as name, r.rolsuper as super, r.rolbypassrls as bypassrls
    from pg_catalog.pg_roles r where r.rolname = current_user`,

  // Relations whose owner's privileges the given role holds (owners bypass RLS and GRANTs, and may ALTER or DROP).
  ownedRelations: `
    with wanted as (
      select x->>0 as schema, x->>1 as name from pg_catalog.json_array_elements($1::json) x
    )
    select n.nspname as schema, c.relname as name, pg_catalog.pg_get_userbyid(c.relowner) as owner
    from pg_catalog.pg_class c
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ${RELKINDS}
      and exists (select 1 from wanted w where w.schema = n.nspname and (w.name is null or w.name = c.relname))
      and pg_catalog.pg_has_role($2::text, c.relowner, 'USAGE')
    order by 1, 2`,

  dbRoles: `
    select r.rolname as name, r.rolsuper as super, r.rolbypassrls as bypassrls,
      pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') as member
    from pg_catalog.pg_roles r where r.rolname = any (select pg_catalog.json_array_elements_text($1::json))`,
} as const;

/** System schemas loaded whole so an introspection role's catalog queries can be checked column by column. */
export const SYSTEM_SCHEMAS = ['pg_catalog', 'information_schema'] as const;

export interface LoadCatalogOptions {
  /** Relations the policy mentions: compiled patterns, or catalog keys `schema.name` / `schema.*` (see toPatterns). */
  relations?: readonly (string | RelationPattern)[];
  /** Also load pg_catalog and information_schema relations (default true). */
  includeSystem?: boolean;
}

/**
 * Strings are catalog keys (`schema.name` or `schema.*`, raw names joined by the first dot, as in
 * CatalogSnapshot.relations), not policy syntax: `sales.Orders` means the relation named `Orders`.
 * Pass RolePolicy.relations (RelationPattern objects) to be exact about names that contain dots.
 */
function toPatterns(list: readonly (string | RelationPattern)[] | undefined): RelationPattern[] {
  const out: RelationPattern[] = [];
  for (const item of list ?? []) {
    if (typeof item !== 'string') {
      out.push(item);
      continue;
    }
    const dot = item.indexOf('.');
    // Our own caller passes names from the compiled policy; an unqualified one is a programming error.
    if (dot <= 0 || dot === item.length - 1)
      throw new TypeError(`loadCatalog: relation ${JSON.stringify(item)} must be schema.name or schema.*`);
    out.push({ schema: item.slice(0, dot), name: item.slice(dot + 1) });
  }
  return out;
}

function patternsParam(patterns: readonly RelationPattern[]): string {
  return JSON.stringify(patterns.map((p) => [p.schema, p.name === '*' ? null : p.name]));
}

/** Drivers differ on whether json columns arrive parsed; accept both. */
function json<T>(v: unknown, fallback: T): T {
  if (v == null) return fallback;
  return (typeof v === 'string' ? JSON.parse(v) : v) as T;
}

/** `integer, "my type", text[]` → items, splitting on commas outside double quotes (format_type quotes odd names). */
export function splitTypeList(s: string): string[] {
  if (s === '') return [];
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const ch of s) {
    if (ch === '"') quoted = !quoted;
    if (ch === ',' && !quoted) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  out.push(cur.trim());
  return out;
}

function asVolatility(v: unknown): CatalogFunction['volatility'] {
  // Unknown values are treated as volatile: the most restrictive reading.
  return v === 'i' || v === 's' ? v : 'v';
}

/**
 * Reads a CatalogSnapshot: the database name, schemas, the relations the policy mentions (every relation of
 * `schema.*` schemas, and of pg_catalog/information_schema) with columns, all functions and user operators.
 * The reads are separate statements; a DDL landing between them is picked up by the next refresh.
 */
export async function loadCatalog(query: CatalogQuery, opts: LoadCatalogOptions = {}): Promise<CatalogSnapshot> {
  const patterns = toPatterns(opts.relations);
  if (opts.includeSystem !== false) for (const schema of SYSTEM_SCHEMAS) patterns.push({ schema, name: '*' });

  const db = await query(CATALOG_QUERIES.database);
  const schemas = await query(CATALOG_QUERIES.schemas);
  const rels = patterns.length > 0 ? await query(CATALOG_QUERIES.relations, [patternsParam(patterns)]) : { rows: [] };
  const edges = patterns.length > 0 ? await query(CATALOG_QUERIES.inherits) : { rows: [] };
  const fns = await query(CATALOG_QUERIES.functions);
  const ops = await query(CATALOG_QUERIES.operators);
  const typeRows = await query(CATALOG_QUERIES.types);
  const keywordRows = await query(CATALOG_QUERIES.keywords);

  const database = String(db.rows[0]?.database ?? '');
  if (database === '') throw new Error('loadCatalog: current_database() returned nothing');
  // The snapshot below is a function of these rows and the patterns alone: equal digests, equal snapshots.
  const digest = createHash('sha256')
    .update(
      JSON.stringify([
        patterns,
        db.rows,
        schemas.rows,
        rels.rows,
        edges.rows,
        fns.rows,
        ops.rows,
        typeRows.rows,
        keywordRows.rows,
      ]),
    )
    .digest('base64');

  const parents = new Map<string, string[]>();
  for (const e of edges.rows) {
    const child = relationKey(e.schema, e.name);
    parents.set(child, [...(parents.get(child) ?? []), relationKey(e.parent_schema, e.parent_name)]);
  }
  /** Every relation `key` inherits from or is a partition of, at any depth (pg_inherits has no cycles; guarded anyway). */
  const ancestorsOf = (key: string): string[] => {
    const seen = new Set<string>();
    const todo = [...(parents.get(key) ?? [])];
    for (let up = todo.pop(); up !== undefined; up = todo.pop()) {
      if (seen.has(up) || up === key) continue;
      seen.add(up);
      todo.push(...(parents.get(up) ?? []));
    }
    return [...seen];
  };

  const relations = new Map<string, CatalogRelation>();
  for (const r of rels.rows) {
    const columns = json<[string, string][]>(r.columns, []).map(([name, type]) => Object.freeze({ name, type }));
    const ancestors = ancestorsOf(relationKey(r.schema, r.name));
    relations.set(
      relationKey(r.schema, r.name),
      Object.freeze({
        schema: r.schema,
        name: r.name,
        kind: r.kind,
        columns: Object.freeze(columns) as typeof columns,
        ...(r.has_children === true || r.has_children === 't' ? { hasChildren: true } : {}),
        ...(ancestors.length > 0 ? { ancestors: Object.freeze(ancestors) } : {}),
      }),
    );
  }

  const functions = new Map<string, CatalogFunction[]>();
  for (const f of fns.rows) {
    const key = relationKey(f.schema, f.name);
    const list = functions.get(key) ?? [];
    list.push(
      Object.freeze({
        schema: f.schema,
        name: f.name,
        volatility: asVolatility(f.volatility),
        kind: String(f.kind),
        argTypes: Object.freeze(splitTypeList(String(f.args ?? ''))) as string[],
        returnsSet: f.retset === true || f.retset === 't',
      }),
    );
    functions.set(key, list);
  }

  const userOperators = new Set<string>();
  const operatorFunctions = new Map<string, Set<string>>();
  for (const o of ops.rows) {
    const key = relationKey(o.schema, o.name);
    userOperators.add(key);
    if (o.fschema != null && o.fname != null) {
      const set = operatorFunctions.get(key) ?? new Set<string>();
      set.add(relationKey(o.fschema, o.fname));
      operatorFunctions.set(key, set);
    }
  }

  const types = new Map<string, CatalogType>();
  const typesByOid = new Map<number, CatalogType>();
  const shapes = new Map<number, TypeShape>();
  for (const t of typeRows.rows) {
    shapes.set(Number(t.oid), {
      schema: String(t.schema),
      typtype: String(t.typtype ?? 'b'),
      elem: Number(t.elem ?? 0),
      base: Number(t.base ?? 0),
      checks: t.checks === true,
      rangeSubtype: t.rngsub == null ? 0 : Number(t.rngsub),
      rangeUserCompare: t.rngusercmp === true,
      multirangeOf: t.mrrange == null ? 0 : Number(t.mrrange),
      columns: Array.isArray(t.cols) ? t.cols.map(Number) : [],
    });
  }
  for (const t of typeRows.rows) {
    const oid = Number(t.oid);
    const type: CatalogType = Object.freeze({
      oid,
      schema: String(t.schema),
      name: String(t.name),
      relation: t.relation == null ? undefined : String(t.relation),
      inputRunsCode: inputRunsCode(oid, shapes, false, new Set()),
    });
    types.set(relationKey(type.schema, type.name), type);
    typesByOid.set(type.oid, type);
  }

  return Object.freeze({
    database,
    types: frozenMap(types),
    typesByOid: frozenMap(typesByOid),
    schemas: frozenSet(schemas.rows.map((s) => String(s.name))),
    relations: frozenMap(relations),
    functions: frozenMap([...functions].map(([k, v]) => [k, Object.freeze(v) as CatalogFunction[]] as const)),
    userOperators: frozenSet(userOperators),
    userOperatorFunctions: frozenMap(
      [...operatorFunctions].map(([k, v]) => [k, Object.freeze([...v]) as string[]] as const),
    ),
    keywords: frozenMap(keywordRows.rows.map((k) => [String(k.word), String(k.catcode)] as const)),
    digest,
  });
}

interface TypeShape {
  schema: string;
  typtype: string;
  elem: number;
  base: number;
  checks: boolean;
  rangeSubtype: number;
  /** The range's subtype operator class compares with SQL or PL code. */
  rangeUserCompare: boolean;
  multirangeOf: number;
  columns: number[];
}

/**
 * Whether converting a string to this type (a constant's input, which parse analysis runs) can reach SQL or
 * PL code: an array, composite, range or multirange whose elements, fields or bounds include a domain with
 * CHECK constraints (domain_in runs them), or a range over a type outside pg_catalog or whose subtype operator
 * class compares with SQL or PL code (range_in compares the bounds with it). A plain domain's CHECK runs later, at execution, where the
 * server's analysis sees it.
 */
function inputRunsCode(
  oid: number,
  shapes: ReadonlyMap<number, TypeShape>,
  inContainer: boolean,
  seen: Set<number>,
): boolean {
  const t = shapes.get(oid);
  if (t === undefined || seen.has(oid)) return false;
  seen.add(oid);
  if (t.typtype === 'd') return (inContainer && t.checks) || inputRunsCode(t.base, shapes, inContainer, seen);
  if (t.elem !== 0) return inputRunsCode(t.elem, shapes, true, seen);
  if (t.typtype === 'c') return t.columns.some((c) => inputRunsCode(c, shapes, true, seen));
  if (t.typtype === 'r')
    return (
      t.rangeUserCompare ||
      shapes.get(t.rangeSubtype)?.schema !== 'pg_catalog' ||
      inputRunsCode(t.rangeSubtype, shapes, true, seen)
    );
  if (t.typtype === 'm') return inputRunsCode(t.multirangeOf, shapes, true, seen);
  return false;
}

/** An empty snapshot (no relations, functions or operators), for tests and for tools that run without a database. */
export function emptyCatalog(database = 'postgres'): CatalogSnapshot {
  return Object.freeze({
    database,
    schemas: frozenSet(['pg_catalog', 'information_schema', 'public']),
    relations: frozenMap<string, CatalogRelation>([]),
    functions: frozenMap<string, CatalogFunction[]>([]),
    userOperators: frozenSet<string>([]),
  });
}

/** Exact relations the policy names that the catalog does not hold (typos, or objects not created yet). */
export function missingRelations(patterns: readonly RelationPattern[], catalog: CatalogSnapshot): string[] {
  const out: string[] = [];
  for (const p of patterns) {
    if (p.name === '*') {
      if (!catalog.schemas.has(p.schema)) out.push(`${quoteIdent(p.schema)}.*`);
    } else if (!catalog.relations.has(relationKey(p.schema, p.name))) {
      out.push(`${quoteIdent(p.schema)}.${quoteIdent(p.name)}`);
    }
  }
  return out;
}

function listSome(names: string[], max = 10): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')} and ${names.length - max} more`;
}

/**
 * Defense in depth: warnings when the upstream user (or a role's dbRole) could step around the policy's
 * effect on the database side — a superuser, a BYPASSRLS role, or an owner of an allowed relation.
 */
export async function checkUpstreamPrivileges(
  query: CatalogQuery,
  relations: readonly (string | RelationPattern)[],
  opts: { dbRoles?: readonly string[] } = {},
): Promise<string[]> {
  const warnings: string[] = [];
  // System catalogs are owned by the bootstrap superuser; leave them out of ownership checks.
  const patterns = toPatterns(relations).filter((p) => !(SYSTEM_SCHEMAS as readonly string[]).includes(p.schema));
  const param = patternsParam(patterns);

  const check = async (who: string, label: string, isSuper: boolean, bypassRls: boolean): Promise<void> => {
    if (isSuper) {
      // A superuser owns everything in effect; listing owned relations would only repeat this warning.
      warnings.push(
        `${label} ${quoteIdent(who)} is a superuser: it bypasses every GRANT and row-level security policy; use a dedicated NOSUPERUSER role`,
      );
      return;
    }
    if (bypassRls)
      warnings.push(`${label} ${quoteIdent(who)} has BYPASSRLS: row-level security policies do not apply to it`);
    if (patterns.length === 0) return;
    const owned = await query(CATALOG_QUERIES.ownedRelations, [param, who]);
    if (owned.rows.length > 0) {
      const names = owned.rows.map((r) => `${quoteIdent(r.schema)}.${quoteIdent(r.name)}`);
      warnings.push(
        `${label} ${quoteIdent(who)} owns (or has its owner's privileges on) ${listSome(names)}: owners bypass row-level security and may ALTER or DROP; grant access from a non-owner role`,
      );
    }
  };

  const me = await query(CATALOG_QUERIES.currentUser);
  const row = me.rows[0];
  if (row) await check(String(row.name), 'upstream user', row.super === true, row.bypassrls === true);

  const wanted = [...new Set(opts.dbRoles ?? [])];
  if (wanted.length > 0) {
    const found = await query(CATALOG_QUERIES.dbRoles, [JSON.stringify(wanted)]);
    const byName = new Map(found.rows.map((r) => [String(r.name), r] as const));
    for (const name of wanted) {
      const r = byName.get(name);
      if (!r) {
        warnings.push(`dbRole ${quoteIdent(name)} does not exist upstream: sessions for roles using it will fail`);
        continue;
      }
      if (r.member !== true)
        warnings.push(
          `upstream user cannot SET ROLE ${quoteIdent(name)} (not a member): sessions for roles using it will fail`,
        );
      await check(name, 'dbRole', r.super === true, r.bypassrls === true);
    }
  }
  return warnings;
}
