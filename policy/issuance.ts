// Task-time issuance, pure: the policy's issuance section (validated and compiled), the pgwarden_narrow claim read and composed, and decideIssuance (issue | deny | approval_required).
import { quoteIdent } from '../lib/ident.ts';
import { isRecord, parseDurationMs, parseIdentifier, parseRelationPattern, relationKey, WRITE_KINDS } from './load.ts';
import { NARROW_KEYS, NARROW_WRITE_KEYS, parseNarrowing } from './narrow.ts';
import type { Millis, RelationPattern, RolePolicy, WriteKind } from './types.ts';

// ---------------------------------------------------------------------------------------------
// The pgwarden_narrow claim (.scratch contract; docs/issuance.md, "Narrowing")
// ---------------------------------------------------------------------------------------------

export { NARROW_CLAIM } from './narrow.ts';

/** A narrowing read and normalized: names folded as PostgreSQL folds them; absent keys narrow nothing. */
export interface Narrowing {
  relations?: readonly RelationPattern[];
  /** relationKey(schema, name) → the relation and the only columns of it that may be used. */
  columns?: ReadonlyMap<string, NarrowColumns>;
  readOnly?: true;
  write?: { kinds?: readonly WriteKind[]; relations?: readonly RelationPattern[] };
  maxRows?: number;
  /** Milliseconds. */
  statementTimeout?: Millis;
  /** false turns DDL, maintenance, lock, channels and DO off. */
  utility?: false;
}

export interface NarrowColumns {
  relation: RelationPattern;
  names: readonly string[];
}

/** Largest list a narrowing may carry (relations, columns of one relation, relations with columns): a token stays small. */
export const MAX_ISSUED_NARROW_ITEMS = 256;

type Read<T> = { ok: true; value: T } | { ok: false; message: string };

function patternList(v: unknown, where: string): Read<RelationPattern[]> {
  if (!Array.isArray(v)) return { ok: false, message: `${where} must be a list of relation names` };
  if (v.length > MAX_ISSUED_NARROW_ITEMS)
    return { ok: false, message: `${where} has more than ${MAX_ISSUED_NARROW_ITEMS} entries` };
  const out = new Map<string, RelationPattern>();
  for (const [i, s] of v.entries()) {
    if (typeof s !== 'string') return { ok: false, message: `${where}[${i}] must be a string` };
    const r = parseRelationPattern(s);
    if (!r.ok) return { ok: false, message: `${where}[${i}] ${JSON.stringify(s)} ${r.message}` };
    out.set(relationKey(r.pattern.schema, r.pattern.name), r.pattern);
  }
  return { ok: true, value: [...out.values()] };
}

/**
 * Reads a narrowing (the claim's JSON value, a request's `narrow` parameter or a rule's `narrow` bound): every key
 * optional; an unknown key, a wrong type, an unqualified or invalid name is an error (fail closed).
 */
export function readNarrowing(v: unknown): Read<Narrowing> {
  if (!isRecord(v)) return { ok: false, message: 'must be a JSON object' };
  // What enforcement (policy/narrow.ts) would refuse at login is refused here too, in its words.
  const enforced = parseNarrowing(v);
  if (!enforced.ok) return { ok: false, message: enforced.problem };
  for (const k of Object.keys(v))
    if (!(NARROW_KEYS as readonly string[]).includes(k))
      return { ok: false, message: `has an unknown key ${JSON.stringify(k)} (known: ${NARROW_KEYS.join(', ')})` };
  const out: Narrowing = {};
  if ('relations' in v) {
    const r = patternList(v.relations, 'relations');
    if (!r.ok) return r;
    out.relations = r.value;
  }
  if ('columns' in v) {
    const c = v.columns;
    if (!isRecord(c)) return { ok: false, message: 'columns must be an object of relation → column names' };
    if (Object.keys(c).length > MAX_ISSUED_NARROW_ITEMS)
      return { ok: false, message: `columns has more than ${MAX_ISSUED_NARROW_ITEMS} relations` };
    const map = new Map<string, NarrowColumns>();
    for (const [rel, cols] of Object.entries(c)) {
      const r = parseRelationPattern(rel, { allowWildcard: false });
      if (!r.ok) return { ok: false, message: `columns key ${JSON.stringify(rel)} ${r.message}` };
      if (!Array.isArray(cols) || cols.length > MAX_ISSUED_NARROW_ITEMS)
        return {
          ok: false,
          message: `columns[${JSON.stringify(rel)}] must be a list of at most ${MAX_ISSUED_NARROW_ITEMS} names`,
        };
      const names = new Set<string>();
      for (const col of cols) {
        if (typeof col !== 'string') return { ok: false, message: `columns[${JSON.stringify(rel)}] must list strings` };
        const n = parseIdentifier(col);
        if (!n.ok) return { ok: false, message: `column ${JSON.stringify(col)} ${n.message}` };
        names.add(n.name);
      }
      const key = relationKey(r.pattern.schema, r.pattern.name);
      // Two spellings of one relation ("public.t" and public.T): only columns both allow remain.
      const prior = map.get(key);
      map.set(key, {
        relation: r.pattern,
        names: prior === undefined ? [...names] : prior.names.filter((x) => names.has(x)),
      });
    }
    out.columns = map;
  }
  if ('readOnly' in v) {
    if (typeof v.readOnly !== 'boolean') return { ok: false, message: 'readOnly must be true or false' };
    if (v.readOnly) out.readOnly = true;
  }
  if ('write' in v) {
    const w = v.write;
    if (!isRecord(w)) return { ok: false, message: 'write must be an object with kinds and/or relations' };
    for (const k of Object.keys(w))
      if (!(NARROW_WRITE_KEYS as readonly string[]).includes(k))
        return { ok: false, message: `write has an unknown key ${JSON.stringify(k)} (known: kinds, relations)` };
    const write: NonNullable<Narrowing['write']> = {};
    if ('kinds' in w) {
      if (!Array.isArray(w.kinds)) return { ok: false, message: 'write.kinds must be a list' };
      for (const k of w.kinds)
        if (typeof k !== 'string' || !(WRITE_KINDS as readonly string[]).includes(k))
          return { ok: false, message: `write.kinds: ${JSON.stringify(k)} is not one of ${WRITE_KINDS.join(', ')}` };
      write.kinds = [...new Set(w.kinds as WriteKind[])];
    }
    if ('relations' in w) {
      const r = patternList(w.relations, 'write.relations');
      if (!r.ok) return r;
      write.relations = r.value;
    }
    out.write = write;
  }
  if ('maxRows' in v) {
    const m = v.maxRows;
    if (typeof m !== 'number' || !Number.isSafeInteger(m) || m < 1)
      return { ok: false, message: 'maxRows must be a positive integer' };
    out.maxRows = m;
  }
  if ('statementTimeout' in v) {
    const t = v.statementTimeout;
    // Milliseconds in the claim (a number), as PostgreSQL's statement_timeout; at most its INT_MAX.
    if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 1 || t > 2_147_483_647)
      return { ok: false, message: 'statementTimeout must be a whole number of milliseconds from 1 to 2147483647' };
    out.statementTimeout = t;
  }
  if ('utility' in v) {
    if (typeof v.utility !== 'boolean') return { ok: false, message: 'utility must be true or false' };
    if (v.utility === false) out.utility = false;
  }
  return { ok: true, value: out };
}

function patternText(p: RelationPattern): string {
  return `${quoteIdent(p.schema)}.${p.name === '*' ? '*' : quoteIdent(p.name)}`;
}

/** The claim's JSON value for a narrowing: names written so readNarrowing reads them back to the same narrowing. */
export function narrowingClaim(n: Narrowing): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (n.relations !== undefined) out.relations = n.relations.map(patternText);
  if (n.columns !== undefined) {
    const cols: Record<string, string[]> = {};
    for (const c of n.columns.values()) cols[patternText(c.relation)] = c.names.map(quoteIdent);
    out.columns = cols;
  }
  if (n.readOnly === true) out.readOnly = true;
  if (n.write !== undefined) {
    const w: Record<string, unknown> = {};
    if (n.write.kinds !== undefined) w.kinds = [...n.write.kinds];
    if (n.write.relations !== undefined) w.relations = n.write.relations.map(patternText);
    out.write = w;
  }
  if (n.maxRows !== undefined) out.maxRows = n.maxRows;
  if (n.statementTimeout !== undefined) out.statementTimeout = n.statementTimeout;
  if (n.utility === false) out.utility = false;
  return out;
}

/** True when the narrowing narrows nothing at all. */
export function isEmptyNarrowing(n: Narrowing): boolean {
  return Object.keys(narrowingClaim(n)).length === 0;
}

// ---------------------------------------------------------------------------------------------
// Composition: a narrowing applied on top of a bound (a parent token's narrowing, a rule's, or none: the role)
// ---------------------------------------------------------------------------------------------

function covers(set: readonly RelationPattern[], p: RelationPattern): boolean {
  return set.some((q) => q.schema === p.schema && (q.name === '*' || q.name === p.name));
}

/**
 * What the catalog says a relation is (pg_class.relkind: r table, p partitioned, v view, m materialized view, f
 * foreign table), or undefined when pgwarden does not know the relation.
 */
export type RelationKind = (schema: string, name: string) => string | undefined;

/**
 * A narrowing with column lists reads a view only when it names the view itself (policy/evaluate.ts
 * viewOutsideNarrowing: a view may show a limited column under another name). A request naming exactly (in relations
 * or as a columns key) a relation its column-limited bound reaches only through `schema.*` would turn a view the
 * bound cannot read into one its token reads: such a name must be a relation the catalog knows and not a view. An
 * unknown name is refused as well (it could be created as a view later); so is every such name without a catalog.
 * Returns the problem, or undefined.
 */
function viewBeyondBound(b: Narrowing, r: Narrowing, relationKind: RelationKind | undefined): string | undefined {
  if (b.columns === undefined || b.columns.size === 0) return undefined;
  const exact = [
    ...(r.relations ?? []).filter((p) => p.name !== '*'),
    ...[...(r.columns?.values() ?? [])].map((c) => c.relation),
  ];
  const unnamed =
    'is not named by the narrowing it is bounded by, which limits columns (a view may show them under other names)';
  for (const p of exact) {
    const key = relationKey(p.schema, p.name);
    if (b.columns.has(key) || (b.relations ?? []).some((q) => q.schema === p.schema && q.name === p.name)) continue;
    const kind = relationKind?.(p.schema, p.name);
    if (kind === 'v' || kind === 'm')
      return `${kind === 'm' ? 'materialized view' : 'view'} ${patternText(p)} ${unnamed}`;
    if (kind === undefined)
      return `relation ${patternText(p)} is not known to pgwarden (it could be a view) and ${unnamed}`;
  }
  return undefined;
}

/**
 * `request` applied within `bound` for `role`: each key the request gives must lie within the bound's (or, where the
 * bound leaves it out, the role's), and each key it leaves out keeps the bound's. The result never allows more than
 * the bound; a request asking for more is refused with the first key that would widen, never silently clipped.
 */
export function composeNarrowing(
  role: RolePolicy,
  bound: Narrowing | undefined,
  request: Narrowing | undefined,
  relationKind?: RelationKind,
): Read<Narrowing> {
  const b = bound ?? {};
  const r = request ?? {};
  const out: Narrowing = {};
  const whose = bound === undefined ? `role ${role.name}` : 'the narrowing it is bounded by';

  const unnamedView = viewBeyondBound(b, r, relationKind);
  if (unnamedView !== undefined) return { ok: false, message: unnamedView };

  const readable = b.relations ?? role.relations;
  if (r.relations !== undefined) {
    const outside = r.relations.find((p) => !covers(readable, p));
    if (outside !== undefined)
      return { ok: false, message: `relation ${patternText(outside)} is not readable under ${whose}` };
    out.relations = r.relations;
  } else if (b.relations !== undefined) out.relations = b.relations;

  if (b.columns !== undefined || r.columns !== undefined) {
    const cols = new Map<string, NarrowColumns>(b.columns ?? []);
    for (const [key, c] of r.columns ?? []) {
      const allowed = b.columns?.get(key);
      if (allowed !== undefined) {
        const extra = c.names.find((n) => !allowed.names.includes(n));
        if (extra !== undefined)
          return {
            ok: false,
            message: `column ${quoteIdent(extra)} of ${patternText(c.relation)} is not allowed by ${whose}`,
          };
      }
      cols.set(key, c);
    }
    out.columns = cols;
  }

  if (b.readOnly === true || r.readOnly === true) out.readOnly = true;

  const writable = !role.readOnly && role.write !== undefined && b.readOnly !== true;
  if (r.write !== undefined) {
    if (!writable) return { ok: false, message: `write is not allowed: ${whose} is read-only` };
    const kinds = b.write?.kinds ?? role.write?.kinds ?? [];
    const rels = b.write?.relations ?? role.write?.relations ?? [];
    const badKind = r.write.kinds?.find((k) => !kinds.includes(k));
    if (badKind !== undefined) return { ok: false, message: `write kind ${badKind} is not allowed by ${whose}` };
    const badRel = r.write.relations?.find((p) => !covers(rels, p));
    if (badRel !== undefined)
      return { ok: false, message: `relation ${patternText(badRel)} is not writable under ${whose}` };
    out.write = {
      ...((r.write.kinds ?? b.write?.kinds) === undefined ? {} : { kinds: r.write.kinds ?? b.write?.kinds }),
      ...((r.write.relations ?? b.write?.relations) === undefined
        ? {}
        : { relations: r.write.relations ?? b.write?.relations }),
    };
  } else if (b.write !== undefined) out.write = b.write;

  const limit = (key: 'maxRows' | 'statementTimeout', roleValue: number | undefined): Read<number | undefined> => {
    const cap = b[key] ?? roleValue;
    const want = r[key];
    if (want === undefined) return { ok: true, value: b[key] };
    if (cap !== undefined && want > cap)
      return { ok: false, message: `${key} ${want} exceeds ${cap}, the limit of ${whose}` };
    return { ok: true, value: want };
  };
  const rows = limit('maxRows', role.maxRows);
  if (!rows.ok) return rows;
  if (rows.value !== undefined) out.maxRows = rows.value;
  const timeout = limit('statementTimeout', role.statementTimeout);
  if (!timeout.ok) return timeout;
  if (timeout.value !== undefined) out.statementTimeout = timeout.value;

  if (b.utility === false || r.utility === false) out.utility = false;
  return { ok: true, value: out };
}

// ---------------------------------------------------------------------------------------------
// The policy file's issuance section
// ---------------------------------------------------------------------------------------------

export const ISSUANCE_KEYS = ['delegation', 'defaultLifetime', 'rules', 'approvers', 'approvalTimeout'] as const;
export const ISSUANCE_APPROVER_KEYS = ['id', 'subjects', 'rules'] as const;
export const ISSUANCE_RULE_KEYS = [
  'id',
  'subjects',
  'agents',
  'roles',
  'narrow',
  'maxLifetime',
  'singleUse',
  'approval',
] as const;
export const ISSUANCE_SUBJECT_KEYS = ['issuer', 'sub', 'claims'] as const;
export const ISSUANCE_SINGLE_USE = ['allowed', 'required'] as const;
export const ISSUANCE_APPROVAL = ['none', 'required'] as const;
/** Lifetime of an issued token when the request names none (and no cap is lower). */
export const DEFAULT_ISSUED_LIFETIME_MS = 5 * 60_000;
/** How long a request needing approval waits for a decision and then for its retrieval (issuance.approvalTimeout). */
export const DEFAULT_APPROVAL_TIMEOUT_MS = 15 * 60_000;
/** approvalTimeout bounds: a second at least (tests, demos), a day at most (an approval is for a task, not a standing grant). */
export const MIN_APPROVAL_TIMEOUT_MS = 1000;
export const MAX_APPROVAL_TIMEOUT_MS = 24 * 3600_000;

/** Which subjects a rule is for: all given keys must match (an IdP issuer, a `sub`, claim values such as groups). */
export interface SubjectMatch {
  issuer?: string;
  sub?: readonly string[];
  /** Claim name → accepted values: a string claim equal to one, or a list claim containing one. */
  claims?: ReadonlyMap<string, readonly string[]>;
}

export interface IssuanceRule {
  id: string;
  subjects: readonly SubjectMatch[];
  /** Verified actors (the actor token's `sub`) the rule is for; absent: any requester, with or without an actor. */
  agents?: ReadonlySet<string>;
  roles: readonly string[];
  /** Upper bound of what the token may carry; applied as the narrowing when the request asks for none. */
  narrow?: Narrowing;
  maxLifetime?: Millis;
  singleUse: (typeof ISSUANCE_SINGLE_USE)[number];
  approval: (typeof ISSUANCE_APPROVAL)[number];
}

/** Who may approve requests that need approval: IdP subjects (matched like a rule's), for some rules or all. */
export interface ApproverRule {
  id: string;
  subjects: readonly SubjectMatch[];
  /** Issuance rule ids whose requests these approvers decide; absent: every rule. */
  rules?: ReadonlySet<string>;
}

export interface CompiledIssuance {
  /** A pgwarden-issued token may be exchanged for a narrower, shorter one (same role). */
  delegation: boolean;
  defaultLifetime: Millis;
  rules: readonly IssuanceRule[];
  approvers: readonly ApproverRule[];
  /** How long a pending request waits for a decision, and an approved one for its retrieval. */
  approvalTimeout: Millis;
}

type Seg = string | number;
type Add = (segs: Seg[], message: string) => void;

function stringOrList(v: unknown): string[] | undefined {
  if (typeof v === 'string' && v.length > 0) return [v];
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && x.length > 0)) return v as string[];
  return undefined;
}

function unknownKeys(obj: Record<string, unknown>, allowed: readonly string[], segs: Seg[], add: Add): void {
  for (const k of Object.keys(obj))
    if (!allowed.includes(k)) add([...segs, k], `unknown key (expected one of: ${allowed.join(', ')})`);
}

/** Validates the issuance section (policy/load.ts calls this with its issue collector); roles are the file's roles. */
export function validateIssuance(raw: unknown, roles: Record<string, unknown>, add: Add): void {
  const at: Seg[] = ['issuance'];
  if (!isRecord(raw)) {
    add(at, 'must be a mapping with rules (and optionally delegation, defaultLifetime)');
    return;
  }
  unknownKeys(raw, ISSUANCE_KEYS, at, add);
  if ('delegation' in raw && typeof raw.delegation !== 'boolean') add([...at, 'delegation'], 'must be true or false');
  if ('defaultLifetime' in raw) {
    const d = parseDurationMs(raw.defaultLifetime);
    if (!d.ok) add([...at, 'defaultLifetime'], d.message);
  }
  if ('approvalTimeout' in raw) {
    const d = parseDurationMs(raw.approvalTimeout);
    if (!d.ok) add([...at, 'approvalTimeout'], d.message);
    else if (d.ms < MIN_APPROVAL_TIMEOUT_MS || d.ms > MAX_APPROVAL_TIMEOUT_MS)
      add([...at, 'approvalTimeout'], 'must be from 1s to 24h');
  }
  if ('approvers' in raw)
    validateApprovers(raw.approvers, Array.isArray(raw.rules) ? raw.rules : [], [...at, 'approvers'], add);
  if (!('rules' in raw)) {
    add([...at, 'rules'], 'is required: a list of rules saying who may obtain which roles');
    return;
  }
  if (!Array.isArray(raw.rules)) {
    add([...at, 'rules'], 'must be a list of rules');
    return;
  }
  const ids = new Map<string, number>();
  raw.rules.forEach((rule, i) => {
    const rs: Seg[] = [...at, 'rules', i];
    if (!isRecord(rule)) {
      add(rs, 'must be a mapping with id, subjects and roles');
      return;
    }
    unknownKeys(rule, ISSUANCE_RULE_KEYS, rs, add);
    if (typeof rule.id !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(rule.id))
      add([...rs, 'id'], 'is required: a name of letters, digits and _ . : - (at most 64), shown in the audit trail');
    else if (ids.has(rule.id)) add([...rs, 'id'], `is also the id of rules[${ids.get(rule.id)}]`);
    else ids.set(rule.id, i);
    validateSubjects(rule.subjects, rs, add, 'the rule is for');
    if ('agents' in rule && (!Array.isArray(rule.agents) || stringOrList(rule.agents) === undefined))
      add([...rs, 'agents'], 'must be a non-empty list of actor subjects (leave it out to allow any requester)');
    if (!Array.isArray(rule.roles) || rule.roles.length === 0)
      add([...rs, 'roles'], 'is required: a non-empty list of roles of this policy');
    else
      rule.roles.forEach((r, j) => {
        if (typeof r !== 'string' || !Object.hasOwn(roles, r))
          add([...rs, 'roles', j], `${JSON.stringify(r)} is not a role of this policy`);
      });
    if ('narrow' in rule) {
      const n = readNarrowing(rule.narrow);
      if (!n.ok) add([...rs, 'narrow'], n.message);
    }
    if ('maxLifetime' in rule) {
      const d = parseDurationMs(rule.maxLifetime);
      if (!d.ok) add([...rs, 'maxLifetime'], d.message);
      else if (d.ms < 1000) add([...rs, 'maxLifetime'], 'must be at least 1s (token lifetimes are whole seconds)');
    }
    if ('singleUse' in rule && !(ISSUANCE_SINGLE_USE as readonly unknown[]).includes(rule.singleUse))
      add([...rs, 'singleUse'], `must be one of ${ISSUANCE_SINGLE_USE.join(', ')}`);
    if ('approval' in rule && !(ISSUANCE_APPROVAL as readonly unknown[]).includes(rule.approval))
      add([...rs, 'approval'], `must be one of ${ISSUANCE_APPROVAL.join(', ')}`);
  });
}

/** One subjects list (a rule's or an approver's): entries of issuer, sub and/or claims, each naming sub or claims. */
function validateSubjects(subjects: unknown, rs: Seg[], add: Add, what: string): void {
  if (!Array.isArray(subjects) || subjects.length === 0) {
    add([...rs, 'subjects'], `is required: a non-empty list of { issuer, sub, claims } ${what}`);
    return;
  }
  subjects.forEach((s, j) => {
    const ss: Seg[] = [...rs, 'subjects', j];
    if (!isRecord(s)) {
      add(ss, 'must be a mapping with issuer, sub and/or claims');
      return;
    }
    unknownKeys(s, ISSUANCE_SUBJECT_KEYS, ss, add);
    if ('issuer' in s && (typeof s.issuer !== 'string' || s.issuer.length === 0))
      add([...ss, 'issuer'], 'must be a non-empty string (the IdP token issuer, iss)');
    if ('sub' in s && stringOrList(s.sub) === undefined)
      add([...ss, 'sub'], 'must be a subject or a non-empty list of subjects');
    if ('claims' in s) {
      if (!isRecord(s.claims) || Object.keys(s.claims).length === 0)
        add([...ss, 'claims'], 'must be a non-empty mapping of claim name to a value or list of values');
      else
        for (const [name, value] of Object.entries(s.claims)) {
          if (stringOrList(value) === undefined)
            add([...ss, 'claims', name], 'must be a string or a non-empty list of strings');
          if (['sub', 'iss', 'aud', 'exp', 'iat', 'nbf', 'jti'].includes(name))
            add([...ss, 'claims', name], `cannot match ${name}: use the sub and issuer keys`);
        }
    }
    // Matching only an issuer would hand the role to everyone that IdP knows: say who, or by which claim.
    if (!('sub' in s) && !('claims' in s))
      add(ss, 'must name sub or claims (an issuer alone would match every user of that identity provider)');
  });
}

/** issuance.approvers: ids unique, subjects as a rule's, `rules` naming rules of the section. */
function validateApprovers(raw: unknown, rules: unknown[], at: Seg[], add: Add): void {
  if (!Array.isArray(raw)) {
    add(at, 'must be a list of approvers ({ id, subjects, rules })');
    return;
  }
  const ruleIds = new Set(rules.filter(isRecord).map((r) => r.id));
  const ids = new Map<string, number>();
  raw.forEach((entry, i) => {
    const es: Seg[] = [...at, i];
    if (!isRecord(entry)) {
      add(es, 'must be a mapping with id and subjects');
      return;
    }
    unknownKeys(entry, ISSUANCE_APPROVER_KEYS, es, add);
    if (typeof entry.id !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(entry.id))
      add([...es, 'id'], 'is required: a name of letters, digits and _ . : - (at most 64), shown in the audit trail');
    else if (ids.has(entry.id)) add([...es, 'id'], `is also the id of approvers[${ids.get(entry.id)}]`);
    else ids.set(entry.id, i);
    validateSubjects(entry.subjects, es, add, 'who may approve');
    if ('rules' in entry) {
      if (!Array.isArray(entry.rules) || stringOrList(entry.rules) === undefined)
        add([...es, 'rules'], 'must be a non-empty list of issuance rule ids (leave it out for every rule)');
      else
        entry.rules.forEach((r, j) => {
          if (!ruleIds.has(r)) add([...es, 'rules', j], `${JSON.stringify(r)} is not the id of an issuance rule`);
        });
    }
  });
}

function mustRead<T>(r: Read<T>, what: string): T {
  if (!r.ok) throw new TypeError(`compileIssuance: ${what} ${r.message} (validate first)`);
  return r.value;
}

function compileSubjects(raw: unknown): readonly SubjectMatch[] {
  return Object.freeze(
    (raw as Record<string, unknown>[]).map((s): SubjectMatch => {
      const m: SubjectMatch = {};
      if (typeof s.issuer === 'string') m.issuer = s.issuer;
      const sub = stringOrList(s.sub);
      if (sub !== undefined) m.sub = Object.freeze(sub);
      if (isRecord(s.claims))
        m.claims = new Map(
          Object.entries(s.claims).map(([k, v]) => [k, Object.freeze(stringOrList(v) ?? [])] as const),
        );
      return Object.freeze(m);
    }),
  );
}

/** The validated section, compiled and frozen. */
export function compileIssuance(raw: Record<string, unknown>): CompiledIssuance {
  const rules = (raw.rules as Record<string, unknown>[]).map((rule): IssuanceRule => {
    const subjects = compileSubjects(rule.subjects);
    const out: IssuanceRule = {
      id: rule.id as string,
      subjects: Object.freeze(subjects),
      roles: Object.freeze([...(rule.roles as string[])]),
      singleUse: rule.singleUse === 'required' ? 'required' : 'allowed',
      approval: rule.approval === 'required' ? 'required' : 'none',
    };
    if (Array.isArray(rule.agents)) out.agents = new Set(rule.agents as string[]);
    if ('narrow' in rule) out.narrow = mustRead(readNarrowing(rule.narrow), `rule ${String(rule.id)} narrow`);
    if ('maxLifetime' in rule) {
      const d = parseDurationMs(rule.maxLifetime);
      if (d.ok) out.maxLifetime = d.ms;
    }
    return Object.freeze(out);
  });
  const approvers = (Array.isArray(raw.approvers) ? (raw.approvers as Record<string, unknown>[]) : []).map(
    (a): ApproverRule => {
      const out: ApproverRule = { id: a.id as string, subjects: compileSubjects(a.subjects) };
      if (Array.isArray(a.rules)) out.rules = new Set(a.rules as string[]);
      return Object.freeze(out);
    },
  );
  const d = 'defaultLifetime' in raw ? parseDurationMs(raw.defaultLifetime) : undefined;
  const t = 'approvalTimeout' in raw ? parseDurationMs(raw.approvalTimeout) : undefined;
  return Object.freeze({
    delegation: raw.delegation !== false,
    defaultLifetime: d?.ok ? d.ms : DEFAULT_ISSUED_LIFETIME_MS,
    rules: Object.freeze(rules),
    approvers: Object.freeze(approvers),
    approvalTimeout: t?.ok ? t.ms : DEFAULT_APPROVAL_TIMEOUT_MS,
  });
}

// ---------------------------------------------------------------------------------------------
// decideIssuance
// ---------------------------------------------------------------------------------------------

/** Who the token is for, as verified by the exchange endpoint. */
export type IssuanceSubject =
  | { kind: 'idp'; issuer: string; sub: string; claims: Readonly<Record<string, unknown>> }
  | {
      kind: 'parent';
      sub: string;
      role: string;
      narrow: Narrowing | undefined;
      /** Parent's exp, milliseconds since the epoch. */
      expMs: number;
      singleUse: boolean;
    };

export interface IssuanceInput {
  subject: IssuanceSubject;
  /** The verified actor token's `sub` (the agent acting for the subject), when one was presented. */
  actor: string | undefined;
  role: string;
  /** The narrowing the request asks for (already read with readNarrowing). */
  narrow: Narrowing | undefined;
  /** Requested lifetime; the policy's defaultLifetime when absent. */
  ttlMs: number | undefined;
  singleUse: boolean;
  nowMs: number;
  /** auth.maxTokenLifetime: the verifier refuses longer tokens, so none is issued. */
  maxLifetimeMs: number;
  /** The catalog's kind of a relation (composeNarrowing: views under a column-limited bound); absent: none known. */
  relationKind?: RelationKind;
}

/** RFC 6749 §5.2 / RFC 8693 §2.2.2 error codes a decision can carry. */
export type IssuanceError = 'invalid_grant' | 'invalid_scope' | 'unauthorized_client';

export type IssuanceDenyReason =
  | 'no_issuance_policy'
  | 'no_rule_for_subject'
  | 'role_not_allowed'
  | 'unknown_role'
  | 'narrowing_exceeds'
  | 'delegation_disabled'
  | 'role_mismatch'
  | 'single_use_parent'
  | 'lifetime_exhausted';

export interface IssuanceGrant {
  ruleId: string;
  role: string;
  narrow: Narrowing | undefined;
  lifetimeMs: number;
  singleUse: boolean;
}

export type IssuanceDecision =
  | ({ outcome: 'issue' } & IssuanceGrant)
  | ({ outcome: 'approval_required'; message: string } & IssuanceGrant)
  | {
      outcome: 'deny';
      error: IssuanceError;
      reason: IssuanceDenyReason;
      /** Safe to return to the requester: names the role, the rule or the key, never a token. */
      message: string;
      ruleId?: string;
    };

/** The rule id recorded for a parent-token exchange (no rule is consulted: the child only narrows its parent). */
export const DELEGATION_RULE_ID = '(delegation)';

function refuseIssuance(
  error: IssuanceError,
  reason: IssuanceDenyReason,
  message: string,
  ruleId?: string,
): IssuanceDecision {
  return { outcome: 'deny', error, reason, message, ...(ruleId === undefined ? {} : { ruleId }) };
}

function claimMatches(value: unknown, accepted: readonly string[]): boolean {
  if (typeof value === 'string') return accepted.includes(value);
  if (Array.isArray(value)) return value.some((v) => typeof v === 'string' && accepted.includes(v));
  return false;
}

/** True when the IdP subject is one the entry names (every key the entry gives matches). */
export function subjectMatches(
  m: SubjectMatch,
  s: { issuer: string; sub: string; claims: Readonly<Record<string, unknown>> },
): boolean {
  if (m.issuer !== undefined && m.issuer !== s.issuer) return false;
  if (m.sub !== undefined && !m.sub.includes(s.sub)) return false;
  if (m.claims !== undefined)
    for (const [name, accepted] of m.claims)
      if (!Object.hasOwn(s.claims, name) || !claimMatches(s.claims[name], accepted)) return false;
  return true;
}

/**
 * Whether to issue a token for `input` under `issuance` and `roles` (the policy in force): pure and synchronous,
 * the clock passed in. An IdP subject is decided by the first rule that matches its subject, role and actor; a
 * parent pgwarden token may be exchanged for the same role, narrowed further and living no longer than it.
 */
export function decideIssuance(
  issuance: CompiledIssuance | undefined,
  roles: ReadonlyMap<string, RolePolicy>,
  input: IssuanceInput,
): IssuanceDecision {
  if (issuance === undefined)
    return refuseIssuance(
      'unauthorized_client',
      'no_issuance_policy',
      'the policy has no issuance section: no token is issued',
    );
  const role = roles.get(input.role);
  if (role === undefined)
    return refuseIssuance(
      'invalid_scope',
      'unknown_role',
      `role ${JSON.stringify(input.role)} is not defined in the policy`,
    );

  const s = input.subject;
  let ruleId: string;
  let bound: Narrowing | undefined;
  let capMs = input.maxLifetimeMs;
  let singleUse = input.singleUse || role.singleUse === 'required';
  let approval = false;
  if (s.kind === 'parent') {
    if (!issuance.delegation)
      return refuseIssuance(
        'unauthorized_client',
        'delegation_disabled',
        'the policy does not allow exchanging a pgwarden token (issuance.delegation: false)',
      );
    if (s.singleUse)
      return refuseIssuance(
        'invalid_grant',
        'single_use_parent',
        'a single-use token cannot be exchanged (it may be used once, to log in)',
      );
    if (s.role !== input.role)
      return refuseIssuance(
        'invalid_scope',
        'role_mismatch',
        `the subject token is for role ${s.role}; an exchange keeps the role`,
      );
    ruleId = DELEGATION_RULE_ID;
    bound = s.narrow;
    capMs = Math.min(capMs, s.expMs - input.nowMs);
  } else {
    const forSubject = issuance.rules.filter((r) => r.subjects.some((m) => subjectMatches(m, s)));
    if (forSubject.length === 0)
      return refuseIssuance(
        'unauthorized_client',
        'no_rule_for_subject',
        'no issuance rule allows this subject to obtain tokens',
      );
    const rule = forSubject.find(
      (r) =>
        r.roles.includes(input.role) &&
        (r.agents === undefined || (input.actor !== undefined && r.agents.has(input.actor))),
    );
    if (rule === undefined)
      return refuseIssuance(
        'invalid_scope',
        'role_not_allowed',
        `no issuance rule allows this subject${input.actor === undefined ? '' : ' and actor'} to obtain role ${input.role}`,
      );
    ruleId = rule.id;
    bound = rule.narrow;
    if (rule.maxLifetime !== undefined) capMs = Math.min(capMs, rule.maxLifetime);
    if (rule.singleUse === 'required') singleUse = true;
    approval = rule.approval === 'required';
  }

  // A rule's own bound must fit the role; one that does not is an operator's mistake, refused rather than trusted.
  if (bound !== undefined && s.kind === 'idp') {
    const fits = composeNarrowing(role, undefined, bound);
    if (!fits.ok)
      return refuseIssuance(
        'invalid_scope',
        'narrowing_exceeds',
        `issuance rule ${ruleId}'s narrow does not fit role ${role.name}: ${fits.message}`,
        ruleId,
      );
  }
  const composed = composeNarrowing(role, bound, input.narrow, input.relationKind);
  if (!composed.ok) return refuseIssuance('invalid_scope', 'narrowing_exceeds', composed.message, ruleId);
  const narrow = isEmptyNarrowing(composed.value) ? undefined : composed.value;

  // NumericDate claims are whole seconds: the lifetime is rounded down, and less than one second is no token.
  const lifetimeMs = Math.floor(Math.min(input.ttlMs ?? issuance.defaultLifetime, capMs) / 1000) * 1000;
  if (lifetimeMs < 1000)
    return refuseIssuance(
      'invalid_grant',
      'lifetime_exhausted',
      'the subject token has less than a second of life left',
      ruleId,
    );

  const grant: IssuanceGrant = { ruleId, role: role.name, narrow, lifetimeMs, singleUse };
  if (approval)
    return {
      outcome: 'approval_required',
      message: `issuance rule ${ruleId} requires approval: an approver must approve this request before a token is issued`,
      ...grant,
    };
  return { outcome: 'issue', ...grant };
}

// ---------------------------------------------------------------------------------------------
// Approvers
// ---------------------------------------------------------------------------------------------

/** A verified approver (the IdP token presented to the approvals API). */
export interface ApproverSubject {
  issuer: string;
  sub: string;
  claims: Readonly<Record<string, unknown>>;
}

/** Who asked for a pending request: the subject the token is for, and the actor acting for it. */
export interface ApprovalParties {
  ruleId: string;
  sub: string;
  actor: string | undefined;
}

export type ApproverDecision =
  | { ok: true; approverRule: string }
  | { ok: false; reason: 'not_an_approver' | 'self_approval'; message: string };

/**
 * A subject name as one party is recognised by: Unicode compatibility forms folded (NFKC: full-width letters,
 * ligatures), case folded, and invisible characters dropped (zero-width spaces and joiners, soft hyphen, BOM, bidi
 * marks). Identity providers that take `sub` from what the user typed (a UPN, an e-mail) give one person such
 * spellings; two different people whose subjects differ only so are treated as one, the safe direction.
 */
export function sameParty(a: string, b: string): boolean {
  const fold = (s: string) =>
    s
      .normalize('NFKC')
      .replace(/\p{Default_Ignorable_Code_Point}/gu, '')
      .toLowerCase()
      .toUpperCase()
      .toLowerCase();
  return a === b || fold(a) === fold(b);
}

/**
 * Whether `approver` may decide `request`: an approvers entry must name the approver and cover the request's rule,
 * and the approver may never be the request's subject or actor (compared by `sub` alone, whatever the issuer: one
 * name in two roles is still one party; and as sameParty folds spellings). Pure; `decide: false` asks only whether
 * they may see it.
 */
export function decideApprover(
  issuance: CompiledIssuance | undefined,
  approver: ApproverSubject,
  request: ApprovalParties,
  decide = true,
): ApproverDecision {
  const entry = issuance?.approvers.find(
    (a) =>
      (a.rules === undefined || a.rules.has(request.ruleId)) && a.subjects.some((m) => subjectMatches(m, approver)),
  );
  if (entry === undefined)
    return {
      ok: false,
      reason: 'not_an_approver',
      message: `no approvers entry of the issuance policy lets ${approver.sub} decide requests of rule ${request.ruleId}`,
    };
  if (
    decide &&
    (sameParty(approver.sub, request.sub) || (request.actor !== undefined && sameParty(approver.sub, request.actor)))
  )
    return {
      ok: false,
      reason: 'self_approval',
      message: 'a request cannot be approved or denied by its own requester',
    };
  return { ok: true, approverRule: entry.id };
}
