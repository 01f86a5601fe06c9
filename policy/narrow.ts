// Task narrowing (the pgwarden_narrow token claim): claim value → TokenNarrowing, and role ∩ narrowing → the effective role.
//
// A narrowing only ever takes away: every field of the effective role is the role's own or a subset of it (relations
// and write relations intersected, limits the lower, switches turned off), never more. The contract lives in
// docs/policy.md, "Narrowed tokens"; parsing reuses the policy file's name rules (policy/load.ts), so a relation in a
// claim reads exactly as the same text in the policy file.
import { createHash } from 'node:crypto';
import type { CatalogRelation, Millis, RelationPattern, RolePolicy, WriteKind } from './types.ts';
import {
  describe,
  frozenMap,
  frozenSet,
  isRecord,
  MAX_TIMEOUT_MS,
  parseIdentifier,
  parseRelationPattern,
  relationKey,
  WRITE_KINDS,
} from './load.ts';

/** The claim that carries a narrowing (a JSON object; docs/policy.md, "Narrowed tokens"). */
export const NARROW_CLAIM = 'pgwarden_narrow';

/** Keys a narrowing may have; any other key makes the claim malformed. */
export const NARROW_KEYS = [
  'relations',
  'columns',
  'readOnly',
  'write',
  'maxRows',
  'statementTimeout',
  'utility',
] as const;
export const NARROW_WRITE_KEYS = ['kinds', 'relations'] as const;

/** Largest number of entries in any list or mapping of a narrowing (a token is at most 64 KiB anyway). */
export const MAX_NARROW_ITEMS = 1000;

/** A parsed pgwarden_narrow claim. Absent fields narrow nothing; every present one only narrows. */
export interface TokenNarrowing {
  /** Readable relations are the role's that one of these patterns also matches. */
  relations?: readonly RelationPattern[];
  /** `schema.relation` → the only columns of it that may be used (every other column is treated as denied). */
  columns?: ReadonlyMap<string, ReadonlySet<string>>;
  /** true: the effective role is read-only. */
  readOnly?: boolean;
  /** Write kinds and relations, each intersected with the role's. */
  write?: { kinds?: readonly WriteKind[]; relations?: readonly RelationPattern[] };
  maxRows?: number;
  statementTimeout?: Millis;
  /** false: no DDL, maintenance, LOCK, LISTEN/NOTIFY or DO, whatever the role allows. */
  utility?: boolean;
  /** sha256 (hex) of the canonical form: decision cache keys, audit events and pgwarden.session name the narrowing by it. */
  digest: string;
}

export type NarrowingResult = { ok: true; narrowing: TokenNarrowing } | { ok: false; problem: string };

class Malformed extends Error {}

function fail(path: string, message: string): never {
  throw new Malformed(`${path} ${message}`);
}

/** No PostgreSQL name holds a NUL; one in a claim could only reach SQL text pgwarden builds from the narrowing. */
function noNul(s: string, path: string): string {
  if (s.includes('\0')) fail(path, 'contains a NUL character, which no PostgreSQL name can');
  return s;
}

function stringList(v: unknown, path: string): string[] {
  if (!Array.isArray(v)) fail(path, `must be a list (got ${describe(v)})`);
  if (v.length > MAX_NARROW_ITEMS) fail(path, `has more than ${MAX_NARROW_ITEMS} entries`);
  return v.map((s, i) => {
    if (typeof s !== 'string') fail(`${path}[${i}]`, `must be a string (got ${describe(s)})`);
    return noNul(s, `${path}[${i}]`);
  });
}

function patterns(v: unknown, path: string): RelationPattern[] {
  const out = new Map<string, RelationPattern>();
  stringList(v, path).forEach((s, i) => {
    const r = parseRelationPattern(s);
    if (!r.ok) fail(`${path}[${i}]`, `${JSON.stringify(s)} ${r.message}`);
    out.set(relationKey(r.pattern.schema, r.pattern.name), Object.freeze(r.pattern));
  });
  return [...out.values()];
}

function positiveInt(v: unknown, path: string, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1 || v > max)
    fail(path, `must be an integer from 1 to ${max} (got ${describe(v)})`);
  return v;
}

function checkKeys(obj: Record<string, unknown>, allowed: readonly string[], path: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k))
      fail(path, `has an unknown key ${JSON.stringify(k)} (expected one of: ${allowed.join(', ')})`);
  }
}

/** Canonical text of a parsed narrowing: sorted, folded names, so two spellings of one narrowing share a digest. */
function canonical(n: Omit<TokenNarrowing, 'digest'>): string {
  const pat = (ps: readonly RelationPattern[] | undefined) =>
    ps === undefined ? null : ps.map((p) => [p.schema, p.name]).sort((a, b) => cmp(a.join('\0'), b.join('\0')));
  return JSON.stringify([
    pat(n.relations),
    n.columns === undefined
      ? null
      : [...n.columns].map(([k, cols]) => [k, [...cols].sort(cmp)]).sort((a, b) => cmp(String(a[0]), String(b[0]))),
    n.readOnly ?? null,
    n.write === undefined
      ? null
      : [n.write.kinds === undefined ? null : [...n.write.kinds].sort(cmp), pat(n.write.relations)],
    n.maxRows ?? null,
    n.statementTimeout ?? null,
    n.utility ?? null,
  ]);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Reads a pgwarden_narrow claim value. Fails closed: an unknown key, a wrong type, an unqualified or invalid relation
 * or column name is a problem (the login is refused), never ignored. Unknown relations are not a problem: they match
 * nothing.
 */
export function parseNarrowing(value: unknown): NarrowingResult {
  const at = NARROW_CLAIM;
  try {
    if (!isRecord(value)) fail(at, `must be a JSON object (got ${describe(value)})`);
    checkKeys(value, NARROW_KEYS, at);
    const n: Omit<TokenNarrowing, 'digest'> = {};
    if ('relations' in value) n.relations = Object.freeze(patterns(value.relations, `${at}.relations`));
    if ('columns' in value) {
      const c = value.columns;
      if (!isRecord(c))
        fail(`${at}.columns`, `must be an object of schema.relation to a list of columns (got ${describe(c)})`);
      const entries = Object.entries(c);
      if (entries.length > MAX_NARROW_ITEMS) fail(`${at}.columns`, `has more than ${MAX_NARROW_ITEMS} entries`);
      const map = new Map<string, Set<string>>();
      for (const [rel, cols] of entries) {
        const path = `${at}.columns[${JSON.stringify(rel)}]`;
        noNul(rel, path);
        const r = parseRelationPattern(rel, { allowWildcard: false });
        if (!r.ok) fail(path, `names no single relation: ${JSON.stringify(rel)} ${r.message}`);
        const key = relationKey(r.pattern.schema, r.pattern.name);
        // Two spellings of one relation ("public.t" and "public.T") would otherwise mean whichever came last.
        if (map.has(key)) fail(path, `names relation ${key} a second time`);
        const set = new Set<string>();
        stringList(cols, path).forEach((s, i) => {
          const id = parseIdentifier(s);
          if (!id.ok) fail(`${path}[${i}]`, `${JSON.stringify(s)} ${id.message}`);
          set.add(id.name);
        });
        map.set(key, set);
      }
      n.columns = frozenMap([...map].map(([k, v]) => [k, frozenSet(v)] as const));
    }
    if ('readOnly' in value) {
      if (typeof value.readOnly !== 'boolean')
        fail(`${at}.readOnly`, `must be true or false (got ${describe(value.readOnly)})`);
      n.readOnly = value.readOnly;
    }
    if ('write' in value) {
      const w = value.write;
      if (!isRecord(w)) fail(`${at}.write`, `must be an object with kinds and/or relations (got ${describe(w)})`);
      checkKeys(w, NARROW_WRITE_KEYS, `${at}.write`);
      const write: { kinds?: readonly WriteKind[]; relations?: readonly RelationPattern[] } = {};
      if ('kinds' in w) {
        const kinds = stringList(w.kinds, `${at}.write.kinds`).map((k, i) => {
          if (!(WRITE_KINDS as readonly string[]).includes(k))
            fail(`${at}.write.kinds[${i}]`, `must be one of ${WRITE_KINDS.join(', ')} (got ${JSON.stringify(k)})`);
          return k as WriteKind;
        });
        write.kinds = Object.freeze([...new Set(kinds)]);
      }
      if ('relations' in w) write.relations = Object.freeze(patterns(w.relations, `${at}.write.relations`));
      n.write = Object.freeze(write);
    }
    if ('maxRows' in value) n.maxRows = positiveInt(value.maxRows, `${at}.maxRows`, Number.MAX_SAFE_INTEGER);
    if ('statementTimeout' in value)
      n.statementTimeout = positiveInt(value.statementTimeout, `${at}.statementTimeout`, MAX_TIMEOUT_MS);
    if ('utility' in value) {
      if (typeof value.utility !== 'boolean')
        fail(`${at}.utility`, `must be true or false (got ${describe(value.utility)})`);
      n.utility = value.utility;
    }
    const digest = createHash('sha256').update(canonical(n), 'utf8').digest('hex');
    return { ok: true, narrowing: Object.freeze({ ...n, digest }) };
  } catch (err) {
    if (err instanceof Malformed) return { ok: false, problem: err.message };
    throw err;
  }
}

/** The relations both pattern lists match, as patterns (the meet of `schema.name` / `schema.*` is always one of them). */
export function intersectPatterns(a: readonly RelationPattern[], b: readonly RelationPattern[]): RelationPattern[] {
  const out = new Map<string, RelationPattern>();
  for (const p of a) {
    for (const q of b) {
      if (p.schema !== q.schema) continue;
      let name: string | undefined;
      if (p.name === '*') name = q.name;
      else if (q.name === '*' || q.name === p.name) name = p.name;
      if (name === undefined) continue;
      out.set(relationKey(p.schema, name), Object.freeze({ schema: p.schema, name }));
    }
  }
  return [...out.values()];
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

/**
 * The effective role of a session whose token carries `n`: `role` with everything the narrowing leaves out taken
 * away (docs/policy.md, "Narrowed tokens"). Pure; the result is frozen and records `n` (its digest keys the decision
 * cache apart from the un-narrowed role's and every other narrowing's).
 */
export function narrowRole(role: RolePolicy, n: TokenNarrowing): RolePolicy {
  const relations = n.relations === undefined ? role.relations : intersectPatterns(role.relations, n.relations);
  const readOnly = role.readOnly || n.readOnly === true;
  let write: RolePolicy['write'];
  if (!readOnly && role.write !== undefined) {
    const kinds =
      n.write?.kinds === undefined ? role.write.kinds : role.write.kinds.filter((k) => n.write?.kinds?.includes(k));
    // Write relations narrow by write.relations and by relations: the narrowing's relations bound everything the token
    // touches, so a token narrowed to some relations does not keep writing others (and a token exchanged from it for
    // other write.relations gets nothing outside them).
    let writeRelations = role.write.relations;
    if (n.write?.relations !== undefined) writeRelations = intersectPatterns(writeRelations, n.write.relations);
    if (n.relations !== undefined) writeRelations = intersectPatterns(writeRelations, n.relations);
    write = Object.freeze({
      kinds: Object.freeze([...kinds]) as WriteKind[],
      relations: Object.freeze(writeRelations) as RelationPattern[],
    });
  }
  let allowedColumns = role.allowedColumns;
  if (n.columns !== undefined) {
    const merged = new Map<string, ReadonlySet<string>>(allowedColumns ?? []);
    for (const [rel, cols] of n.columns) {
      const before = merged.get(rel);
      merged.set(rel, before === undefined ? cols : frozenSet([...cols].filter((c) => before.has(c))));
    }
    allowedColumns = frozenMap(merged);
  }
  const utility = n.utility !== false;
  const out: RolePolicy = {
    ...role,
    // A narrowing is the task scope the token was issued for: enforced even when the role is on trial in shadow mode
    // (which would only log its refusals). Enforcing refuses more, never less, so it narrows too.
    mode: 'enforce',
    readOnly,
    relations: Object.freeze(relations) as RelationPattern[],
    write,
    allowedColumns,
    maxRows: minDefined(role.maxRows, n.maxRows),
    statementTimeout: minDefined(role.statementTimeout, n.statementTimeout),
    // What only a read-write role may have (policy/load.ts compileRole drops it for read-only roles): off when the
    // narrowing makes the role read-only, and every utility switch off with utility: false.
    ddl: utility && !readOnly ? role.ddl : undefined,
    maintenance: utility && !readOnly ? role.maintenance : undefined,
    do: utility && !readOnly ? role.do : undefined,
    lock: utility ? role.lock : undefined,
    channels: !utility
      ? undefined
      : role.channels === undefined || !readOnly
        ? role.channels
        : Object.freeze({ listen: role.channels.listen, notify: [] }),
    narrowing: n,
    narrowedFrom: Object.freeze({ statementTimeout: role.narrowedFrom?.statementTimeout ?? role.statementTimeout }),
  };
  return Object.freeze(out);
}

/**
 * narrowRole, one object per (role object, narrowing digest): a session and the gate that decides its statements get
 * the same effective role for the same policy, so the session's view is reused, and a reload (new role objects) makes
 * new ones. Held weakly by the role, so a replaced policy's roles are collected with their narrowings.
 */
const memo = new WeakMap<RolePolicy, Map<string, RolePolicy>>();
/** Narrowings remembered per role object; past it the map starts again (a bound, not an expected case). */
const MEMO_PER_ROLE = 1_000;

export function effectiveRole(role: RolePolicy, n: TokenNarrowing | undefined): RolePolicy {
  if (n === undefined) return role;
  let byDigest = memo.get(role);
  if (byDigest === undefined) {
    byDigest = new Map();
    memo.set(role, byDigest);
  }
  const hit = byDigest.get(n.digest);
  if (hit !== undefined) return hit;
  if (byDigest.size >= MEMO_PER_ROLE) byDigest.clear();
  const out = narrowRole(role, n);
  byDigest.set(n.digest, out);
  return out;
}

/** The narrowing as plain JSON (for the audit trail and logs): what the claim said, after folding. */
export function narrowingJson(n: TokenNarrowing): Record<string, unknown> {
  const pat = (ps: readonly RelationPattern[]) => ps.map((p) => `${p.schema}.${p.name}`);
  const out: Record<string, unknown> = {};
  if (n.relations !== undefined) out.relations = pat(n.relations);
  if (n.columns !== undefined) out.columns = Object.fromEntries([...n.columns].map(([k, v]) => [k, [...v]]));
  if (n.readOnly !== undefined) out.readOnly = n.readOnly;
  if (n.write !== undefined) {
    const w: Record<string, unknown> = {};
    if (n.write.kinds !== undefined) w.kinds = [...n.write.kinds];
    if (n.write.relations !== undefined) w.relations = pat(n.write.relations);
    out.write = w;
  }
  if (n.maxRows !== undefined) out.maxRows = n.maxRows;
  if (n.statementTimeout !== undefined) out.statementTimeout = n.statementTimeout;
  if (n.utility !== undefined) out.utility = n.utility;
  return out;
}

/**
 * The only columns of `key` a narrowed token may use: its own column list (RolePolicy.allowedColumns) and the lists
 * of every relation it inherits from or is a partition of (an inheritance child or partition holds rows of its
 * parent, read by its own name: a list on the parent limits it too), intersected; undefined when none applies.
 */
export function narrowedColumns(
  role: RolePolicy,
  key: string,
  relation: CatalogRelation | undefined,
): ReadonlySet<string> | undefined {
  const lists = role.allowedColumns;
  if (lists === undefined) return undefined;
  let only = lists.get(key);
  for (const up of relation?.ancestors ?? []) {
    const theirs = lists.get(up);
    if (theirs === undefined) continue;
    only = only === undefined ? theirs : new Set([...only].filter((col) => theirs.has(col)));
  }
  return only;
}
