// Policy files: YAML/JSON text → every issue with its path, or a validated PolicyDoc → a frozen CompiledPolicy.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import type {
  ChannelPattern,
  CompiledPolicy,
  DdlKind,
  MaintenanceKind,
  Millis,
  RelationPattern,
  RoleBudget,
  RolePolicy,
  WriteKind,
} from './types.ts';
import { editDistance, quoteIdent } from '../lib/ident.ts';
import { parseCidr } from '../lib/cidr.ts';
import { DENIED_SYSTEM_RELATIONS } from './introspection.ts';
import { ALWAYS_DENIED, TIMEOUT_BOUNDED, findEntry } from './functions.ts';
import { compileIssuance, validateIssuance } from './issuance.ts';

// ---------------------------------------------------------------------------------------------
// The file format (kept in step with policy/schema.json by test/unit/policy/load.test.ts)
// ---------------------------------------------------------------------------------------------

export const WRITE_KINDS = [
  'insert',
  'update',
  'delete',
  'merge',
  'truncate',
  'copy_from',
] as const satisfies readonly WriteKind[];
// Fails to compile if types.ts grows a WriteKind the file format cannot name.
const writeKindsAreComplete: Exclude<WriteKind, (typeof WRITE_KINDS)[number]> extends never ? true : never = true;
void writeKindsAreComplete;

/** Scoped DDL kinds (docs/policy.md, "Scoped DDL"). */
export const DDL_KINDS = [
  'create_table',
  'create_index',
  'create_view',
  'create_materialized_view',
  'create_sequence',
  'alter_table',
  'drop',
  'comment',
  'create_type',
  'alter_type',
  'create_schema',
] as const satisfies readonly DdlKind[];
const ddlKindsAreComplete: Exclude<DdlKind, (typeof DDL_KINDS)[number]> extends never ? true : never = true;
void ddlKindsAreComplete;
export const DDL_KEYS = ['kinds', 'schemas', 'temporary'] as const;
export const MAINTENANCE_KINDS = ['analyze', 'vacuum'] as const satisfies readonly MaintenanceKind[];
export const CHANNELS_KEYS = ['listen', 'notify'] as const;
/**
 * Schemas no policy can open to DDL: the system catalogs and their TOAST, the SQL-standard views, and the
 * per-session temporary schemas (temporary objects have their own switch, ddl.temporary).
 */
export const DDL_FORBIDDEN_SCHEMAS = /^(pg_catalog|information_schema|pg_toast|pg_temp|pg_temp_\d+|pg_toast_temp_\d+)$/;

export const MODES = ['enforce', 'shadow'] as const;
export const CATALOG_MODES = ['none', 'introspection', 'scoped'] as const;
export const ON_ROW_CAP = ['truncate', 'error'] as const;

/** One role as written in the file (after validation; names not yet folded). */
export interface RoleDoc {
  mode?: (typeof MODES)[number];
  readOnly?: boolean;
  relations?: string[];
  write?: { statements: WriteKind[]; relations: string[] };
  deniedColumns?: Record<string, string[]>;
  functions?: { allow?: string[]; deny?: string[] };
  settings?: string[];
  catalog?: (typeof CATALOG_MODES)[number];
  maxRows?: number;
  onRowCap?: (typeof ON_ROW_CAP)[number];
  /** "5s", "250ms", "2m", "1h", or a number of seconds. */
  statementTimeout?: string | number;
  /** idle_in_transaction_session_timeout stamped on the role's sessions; default 60s, 0 stamps none. Clients may only lower it. */
  idleInTransactionTimeout?: string | number;
  /** WITH HOLD cursors one session may have open; default 0 for read-only roles, 2 for read-write ones. */
  holdCursors?: number;
  /** Per-agent budget: `{ per: agent, statementsPerMinute: 600, rowsPerMinute: 1e6, bytesPerMinute: 1GB, concurrentStatements: 4 }`. */
  budget?: BudgetDoc;
  dbRole?: string;
  searchPath?: string[];
  /** Client networks tokens of this role may log in from: `[10.0.0.0/8, 127.0.0.1/32, ::1/128]`; absent: any. */
  networks?: string[];
  /** Scoped DDL: `{ kinds: [create_table, …], schemas: [app_scratch], temporary: true }`. Read-write roles only. */
  ddl?: { kinds: DdlKind[]; schemas?: string[]; temporary?: boolean };
  /** ANALYZE / VACUUM on relations the role may write. Read-write roles only. */
  maintenance?: MaintenanceKind[];
  /** LOCK: any mode on writable relations, ACCESS SHARE on readable ones. */
  lock?: boolean;
  /** LISTEN / NOTIFY channels: exact names or prefixes (`jobs_*`). notify: read-write roles only. */
  channels?: { listen?: string[]; notify?: string[] };
  /** DO blocks, a full escape from statement-level policy (warned about at every load). Read-write roles only. */
  do?: boolean;
  /**
   * Two-phase commit: PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED and reading pg_catalog.pg_prepared_xacts.
   * Read-write roles only; every prepared transaction of the upstream login is visible to (and can be finished by) it.
   */
  twoPhase?: boolean;
  /** `required`: only single-use tokens (claim pgwarden_single_use) may log in as this role; default `allowed`. */
  singleUse?: (typeof SINGLE_USE_MODES)[number];
}

export const SINGLE_USE_MODES = ['allowed', 'required'] as const;

/** A role's budget as written: every limit optional; bytesPerMinute a number or a size such as "512MB". */
export interface BudgetDoc {
  per: (typeof BUDGET_PER)[number];
  statementsPerMinute?: number;
  rowsPerMinute?: number;
  bytesPerMinute?: number | string;
  concurrentStatements?: number;
}

export const BUDGET_PER = ['subject', 'agent'] as const;
export const BUDGET_KEYS = [
  'per',
  'statementsPerMinute',
  'rowsPerMinute',
  'bytesPerMinute',
  'concurrentStatements',
] as const satisfies readonly (keyof BudgetDoc)[];
const BUDGET_COUNTS = ['statementsPerMinute', 'rowsPerMinute', 'concurrentStatements'] as const;

/** A whole policy file as written, after validation. */
export interface PolicyDoc {
  /** Lets JSON editors find policy/schema.json; ignored. */
  $schema?: string;
  version?: 1;
  roles: Record<string, RoleDoc>;
  /** Who may obtain tokens from the exchange endpoint (policy/issuance.ts; docs/issuance.md). */
  issuance?: Record<string, unknown>;
}

export const TOP_LEVEL_KEYS = [
  '$schema',
  'version',
  'roles',
  'issuance',
] as const satisfies readonly (keyof PolicyDoc)[];
export const ROLE_KEYS = [
  'mode',
  'readOnly',
  'relations',
  'write',
  'deniedColumns',
  'functions',
  'settings',
  'catalog',
  'maxRows',
  'onRowCap',
  'statementTimeout',
  'idleInTransactionTimeout',
  'holdCursors',
  'budget',
  'dbRole',
  'searchPath',
  'networks',
  'ddl',
  'maintenance',
  'lock',
  'channels',
  'do',
  'twoPhase',
  'singleUse',
] as const satisfies readonly (keyof RoleDoc)[];
export const WRITE_KEYS = ['statements', 'relations'] as const;

/**
 * WITH HOLD cursors per session by default. A held cursor's whole result is materialized when its transaction
 * commits and kept (in memory, then temporary files) until CLOSE or disconnect: read-only roles get none unless the
 * policy says so, read-write roles a couple. Their count is bounded by MAX_HOLD_CURSORS whatever the policy says.
 */
export const DEFAULT_HOLD_CURSORS = { readOnly: 0, readWrite: 2 } as const;
export const MAX_HOLD_CURSORS = 1000;
export const FUNCTIONS_KEYS = ['allow', 'deny'] as const;

/**
 * Settings a role may never be allowed to SET: pgwarden pins them on the upstream session (identity, name
 * resolution, limits, read-only mode, RLS), so letting the client change them would undo the policy.
 */
export const PINNED_SETTINGS: ReadonlySet<string> = new Set([
  'role',
  'session_authorization',
  'search_path',
  'statement_timeout',
  'transaction_read_only',
  'default_transaction_read_only',
  'row_security',
  'session_replication_role',
  'session_preload_libraries',
  'local_preload_libraries',
]);

/** Postgres truncates identifiers to NAMEDATALEN-1 bytes; a longer name in the policy would never match. */
export const MAX_IDENTIFIER_BYTES = 63;
/** Postgres caps statement_timeout at INT_MAX milliseconds. */
export const MAX_TIMEOUT_MS = 2_147_483_647;
/** Policy files are small; refuse anything that looks like the wrong file. */
export const MAX_POLICY_BYTES = 1 << 20;

export interface PolicyIssue {
  /** Where in the document, e.g. `roles.analyst.maxRows`; '' for the document as a whole. */
  path: string;
  message: string;
  /** 1-based line in the source, when known. */
  line?: number;
}

export type ParseResult = { ok: true; doc: PolicyDoc } | { ok: false; issues: PolicyIssue[] };
export type LoadResult =
  | { ok: true; doc: PolicyDoc; digest: string; source: string }
  | { ok: false; issues: PolicyIssue[]; source: string };

// ---------------------------------------------------------------------------------------------
// Identifiers: written as Postgres would fold them
// ---------------------------------------------------------------------------------------------

export interface NamePart {
  value: string;
  quoted: boolean;
}

/** Unquoted identifier characters as Postgres's scanner accepts them (high-bit characters count as letters). */
const IDENT_START = /[A-Za-z_\u0080-\uFFFF]/;
const IDENT_CONT = /[A-Za-z0-9_$\u0080-\uFFFF]/;

function unexpected(c: string): string {
  return /\s/.test(c)
    ? 'must not contain spaces (quote a name that really has one: "My Table")'
    : `has an unexpected character ${JSON.stringify(c)} (quote names that are not simple identifiers, e.g. "my-table")`;
}

/**
 * Splits `a.b."C"` into parts the way Postgres reads a qualified name: unquoted parts are lowercased
 * (ASCII only, like downcase_identifier for UTF8), quoted parts keep their case and `""` is one quote.
 * A bare `*` part is returned unquoted with value `*` so callers can accept it as a wildcard.
 */
export function splitQualifiedName(text: string): { ok: true; parts: NamePart[] } | { ok: false; message: string } {
  const parts: NamePart[] = [];
  let i = 0;
  for (;;) {
    const c = text[i];
    if (c === undefined)
      return { ok: false, message: parts.length === 0 ? 'must not be empty' : 'must not end with "."' };
    if (c === '"') {
      let value = '';
      i++;
      for (;;) {
        const q = text[i];
        if (q === undefined) return { ok: false, message: 'has an unterminated quoted identifier' };
        if (q === '"') {
          if (text[i + 1] === '"') {
            value += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        value += q;
        i++;
      }
      if (value === '') return { ok: false, message: 'has a zero-length quoted identifier ""' };
      parts.push({ value, quoted: true });
    } else if (c === '*') {
      parts.push({ value: '*', quoted: false });
      i++;
    } else if (IDENT_START.test(c)) {
      let value = '';
      while (i < text.length && IDENT_CONT.test(text[i] ?? '')) value += text[i++];
      parts.push({ value: value.replace(/[A-Z]/g, (ch) => ch.toLowerCase()), quoted: false });
    } else {
      return { ok: false, message: unexpected(c) };
    }
    const last = parts[parts.length - 1];
    if (last && Buffer.byteLength(last.value, 'utf8') > MAX_IDENTIFIER_BYTES) {
      return {
        ok: false,
        message: `has a name longer than ${MAX_IDENTIFIER_BYTES} bytes, which Postgres would truncate`,
      };
    }
    if (i === text.length) return { ok: true, parts };
    const next = text[i] ?? '';
    if (next !== '.') return { ok: false, message: unexpected(next) };
    i++;
  }
}

/** The map key used by RolePolicy.deniedColumns and CatalogSnapshot.relations: raw parts joined by a dot. */
export function relationKey(schema: string, name: string): string {
  return `${schema}.${name}`;
}

function isWildcard(p: NamePart): boolean {
  return p.value === '*' && !p.quoted;
}

/** `schema.name` or `schema.*` → RelationPattern; `allowWildcard: false` for places that need one relation. */
export function parseRelationPattern(
  text: string,
  opts: { allowWildcard?: boolean; what?: string } = {},
): { ok: true; pattern: RelationPattern } | { ok: false; message: string } {
  const what = opts.what ?? 'relation';
  const split = splitQualifiedName(text);
  if (!split.ok) return split;
  const parts = split.parts;
  const [schema, name] = parts;
  if (parts.length === 1) {
    return {
      ok: false,
      message: `must be schema-qualified: write ${quoteIdent('public')}.${text} (or the schema it lives in)`,
    };
  }
  if (parts.length > 2 || schema === undefined || name === undefined) {
    return { ok: false, message: `must be schema.name (database-qualified names are not accepted)` };
  }
  if (isWildcard(schema)) return { ok: false, message: 'must name its schema; "*.x" wildcards are not supported' };
  if (isWildcard(name) && opts.allowWildcard === false) {
    return { ok: false, message: `must name one ${what}; "${schema.value}.*" is not accepted here` };
  }
  if (name.quoted && name.value === '*') {
    return { ok: false, message: 'names a relation literally called "*", which would read as a wildcard; rename it' };
  }
  return { ok: true, pattern: { schema: schema.value, name: name.value } };
}

/** One identifier (a schema, column or database role), folded like Postgres. */
export function parseIdentifier(text: string): { ok: true; name: string } | { ok: false; message: string } {
  const split = splitQualifiedName(text);
  if (!split.ok) return split;
  const [only] = split.parts;
  if (split.parts.length !== 1 || only === undefined)
    return { ok: false, message: 'must be a single name, not a qualified one' };
  if (isWildcard(only)) return { ok: false, message: 'must be a name, not "*"' };
  return { ok: true, name: only.value };
}

/** A channel name as LISTEN would fold it, or a prefix ending in `*` (`jobs_*`; `*` alone is every channel). */
export function parseChannelPattern(
  text: string,
): { ok: true; pattern: ChannelPattern } | { ok: false; message: string } {
  const prefix = text.endsWith('*');
  const head = prefix ? text.slice(0, -1) : text;
  if (prefix && head === '') return { ok: true, pattern: { name: '', prefix: true } };
  const r = parseIdentifier(head);
  if (!r.ok)
    return { ok: false, message: `${r.message} (a channel is a name, optionally ending in * for a prefix: jobs_*)` };
  return { ok: true, pattern: { name: r.name, prefix } };
}

/** "5s", "250ms", "2m", "1h" or a number of seconds → milliseconds (rounded), or a message. */
export function parseDurationMs(v: unknown): { ok: true; ms: Millis } | { ok: false; message: string } {
  let ms: number;
  if (typeof v === 'number') {
    ms = v * 1000;
  } else if (typeof v === 'string') {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v);
    if (!m) return { ok: false, message: 'must be a duration like "250ms", "5s", "2m", "1h", or a number of seconds' };
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    ms = Number(m[1]) * unit;
  } else {
    return { ok: false, message: 'must be a duration like "250ms", "5s", "2m", "1h", or a number of seconds' };
  }
  if (!Number.isFinite(ms) || Math.round(ms) < 1)
    return { ok: false, message: 'must be at least 1ms (leave it out for no timeout)' };
  if (Math.round(ms) > MAX_TIMEOUT_MS)
    return { ok: false, message: `must be at most ${MAX_TIMEOUT_MS}ms (Postgres's limit)` };
  return { ok: true, ms: Math.round(ms) };
}

/**
 * idleInTransactionTimeout: a duration as statementTimeout takes, or 0 (`0`, `0s`, `0ms`…): stamp none, so the
 * server's own idle_in_transaction_session_timeout holds and clients may set any value.
 */
export function parseIdleInTransactionMs(v: unknown): { ok: true; ms: Millis } | { ok: false; message: string } {
  if (v === 0 || (typeof v === 'string' && /^0+(?:\.0+)?(ms|s|m|h)$/.test(v))) return { ok: true, ms: 0 as Millis };
  const d = parseDurationMs(v);
  return d.ok ? d : { ok: false, message: d.message.replace('(leave it out for no timeout)', '(or 0 to stamp none)') };
}

/** A role name: what tokens carry and logs print, so kept to a plain identifier. */
const ROLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/;

// ---------------------------------------------------------------------------------------------
// Validation: walk the plain JS value, collect every issue with its path
// ---------------------------------------------------------------------------------------------

type Seg = string | number;
interface RawIssue {
  segs: Seg[];
  message: string;
}

/** `roles.analyst.deniedColumns["public.customers"][0]`: dotted while keys are simple, bracketed otherwise. */
export function formatPath(segs: readonly Seg[]): string {
  let out = '';
  for (const s of segs) {
    if (typeof s === 'number') out += `[${s}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(s)) out += out === '' ? s : `.${s}`;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A value as a message names what was given instead (`a list`, `number 3`). */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

class Validator {
  readonly issues: RawIssue[] = [];

  add(segs: Seg[], message: string): void {
    this.issues.push({ segs, message });
  }

  /** Reports keys outside `allowed`, suggesting the closest one (typos like `maxrows` are the usual case). */
  keys(obj: Record<string, unknown>, allowed: readonly string[], segs: Seg[]): void {
    for (const k of Object.keys(obj)) {
      if (allowed.includes(k)) continue;
      const near = allowed
        .map((a) => ({ a, d: editDistance(a.toLowerCase(), k.toLowerCase()) }))
        .sort((x, y) => x.d - y.d)[0];
      const hint = near && near.d <= 2 ? ` (did you mean "${near.a}"?)` : ` (expected one of: ${allowed.join(', ')})`;
      this.add([...segs, k], `unknown key${hint}`);
    }
  }

  /** A message for a value outside `values`, with the nearest one when it looks like a typo. */
  static notOneOf(v: string, values: readonly string[]): string {
    const near = values.map((a) => ({ a, d: editDistance(a, v.toLowerCase()) })).sort((x, y) => x.d - y.d)[0];
    return near && near.d <= 3
      ? `must be one of ${values.join(', ')} (did you mean "${near.a}"?)`
      : `must be one of ${values.join(', ')}`;
  }

  boolean(raw: Record<string, unknown>, key: string, segs: Seg[]): void {
    if (key in raw && typeof raw[key] !== 'boolean')
      this.add([...segs, key], `must be true or false (got ${describe(raw[key])})`);
  }

  oneOf<T extends string>(v: unknown, values: readonly T[], segs: Seg[]): v is T {
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return true;
    this.add(segs, `must be one of ${values.join(', ')} (got ${describe(v)})`);
    return false;
  }

  /** A list of strings; each item checked by `item`, which returns a message or undefined. */
  stringList(
    v: unknown,
    segs: Seg[],
    item: (s: string, i: number) => string | undefined,
    opts: { nonEmpty?: boolean } = {},
  ): void {
    if (!Array.isArray(v)) {
      this.add(segs, `must be a list (got ${describe(v)})`);
      return;
    }
    if (opts.nonEmpty && v.length === 0) this.add(segs, 'must not be empty');
    v.forEach((s, i) => {
      if (typeof s !== 'string') {
        this.add([...segs, i], `must be a string (got ${describe(s)})`);
        return;
      }
      const msg = item(s, i);
      if (msg) this.add([...segs, i], msg);
    });
  }
}

function checkRelationItem(s: string, opts: { allowWildcard?: boolean; what?: string } = {}): string | undefined {
  const r = parseRelationPattern(s, opts);
  return r.ok ? undefined : r.message;
}

/**
 * A system relation in `relations:` takes effect only where the catalog rules let it (docs/policy.md, "System
 * catalogs in relations"): it adds to the introspection relations of a `catalog: introspection` role, and never opens
 * what pgwarden refuses every role. An entry that would do nothing is an error naming the key that decides instead.
 */
function checkSystemRelationItem(s: string, catalog: unknown): string | undefined {
  const r = parseRelationPattern(s);
  if (!r.ok) return undefined;
  const { schema, name } = r.pattern;
  if (schema.startsWith('pg_toast')) {
    return `names ${schema}, which holds the stored values of every table's long columns: pgwarden lets no role read it; remove the entry`;
  }
  if (schema !== 'pg_catalog' && schema !== 'information_schema') return undefined;
  const never = name === '*' ? undefined : DENIED_SYSTEM_RELATIONS.get(`${schema}.${name}`);
  if (never !== undefined && `${schema}.${name}` === 'pg_catalog.pg_prepared_xacts') {
    return `names ${schema}.${name}, which holds ${never}: only twoPhase: true (on a read-write role) lets a role read it, so the entry would have no effect; remove it`;
  }
  if (never !== undefined) {
    return `names ${schema}.${name}, which holds ${never}: pgwarden lets no role read it, so the entry would have no effect; remove it`;
  }
  if (catalog !== 'introspection') {
    return `names a system catalog relation, which a role reads only with catalog: introspection (the entry then adds ${schema}.${name} to the introspection relations) or, filtered to the role, with catalog: scoped (which takes no entries); set catalog: introspection on the role or remove the entry`;
  }
  return undefined;
}

function patternCovers(patterns: readonly RelationPattern[], schema: string, name: string): boolean {
  return patterns.some((p) => p.schema === schema && (p.name === '*' || p.name === name));
}

function parsedPatterns(v: unknown): RelationPattern[] {
  if (!Array.isArray(v)) return [];
  const out: RelationPattern[] = [];
  for (const s of v) {
    if (typeof s !== 'string') continue;
    const r = parseRelationPattern(s);
    if (r.ok) out.push(r.pattern);
  }
  return out;
}

function checkRole(val: Validator, raw: unknown, segs: Seg[]): void {
  if (!isRecord(raw)) {
    val.add(segs, `must be a mapping of role settings (got ${describe(raw)})`);
    return;
  }
  val.keys(raw, ROLE_KEYS, segs);
  const at = (k: string): Seg[] => [...segs, k];

  if ('mode' in raw) val.oneOf(raw.mode, MODES, at('mode'));
  if ('readOnly' in raw && typeof raw.readOnly !== 'boolean')
    val.add(at('readOnly'), `must be true or false (got ${describe(raw.readOnly)})`);
  const readOnly = raw.readOnly !== false;

  if ('relations' in raw)
    val.stringList(
      raw.relations,
      at('relations'),
      (s) => checkRelationItem(s) ?? checkSystemRelationItem(s, raw.catalog),
    );

  if ('write' in raw) {
    const w = raw.write;
    if (readOnly) val.add(at('write'), 'is only allowed with readOnly: false (roles are read-only by default)');
    if (!isRecord(w)) {
      val.add(at('write'), `must be a mapping with statements and relations (got ${describe(w)})`);
    } else {
      val.keys(w, WRITE_KEYS, at('write'));
      if (!('statements' in w))
        val.add(
          [...segs, 'write', 'statements'],
          `is required: list the statement kinds the role may run (${WRITE_KINDS.join(', ')})`,
        );
      else
        val.stringList(
          w.statements,
          [...segs, 'write', 'statements'],
          (s) =>
            (WRITE_KINDS as readonly string[]).includes(s) ? undefined : `must be one of ${WRITE_KINDS.join(', ')}`,
          { nonEmpty: true },
        );
      if (!('relations' in w))
        val.add([...segs, 'write', 'relations'], 'is required: list the relations the role may write');
      else
        val.stringList(w.relations, [...segs, 'write', 'relations'], (s) => checkRelationItem(s), { nonEmpty: true });
    }
  } else if (!readOnly && raw.readOnly === false) {
    val.add(
      at('readOnly'),
      'is false but the role has no write section: add write: { statements: [...], relations: [...] } or remove readOnly',
    );
  }

  if ('deniedColumns' in raw) {
    const dc = raw.deniedColumns;
    if (!isRecord(dc)) {
      val.add(at('deniedColumns'), `must be a mapping of schema.relation to a list of columns (got ${describe(dc)})`);
    } else {
      // A denied column on a relation the role cannot touch is almost always a typo that leaves the real column readable.
      const reachable = [
        ...parsedPatterns(raw.relations),
        ...parsedPatterns(isRecord(raw.write) ? raw.write.relations : undefined),
      ];
      for (const [rel, cols] of Object.entries(dc)) {
        const relSegs: Seg[] = [...segs, 'deniedColumns', rel];
        const r = parseRelationPattern(rel, { allowWildcard: false });
        if (!r.ok) val.add(relSegs, r.message);
        else if (!patternCovers(reachable, r.pattern.schema, r.pattern.name)) {
          val.add(relSegs, `is not among the role's relations, so denying its columns has no effect (a typo?)`);
        }
        val.stringList(
          cols,
          relSegs,
          (s) => {
            const c = parseIdentifier(s);
            return c.ok ? undefined : c.message;
          },
          { nonEmpty: true },
        );
      }
    }
  }

  if ('functions' in raw) {
    const f = raw.functions;
    if (!isRecord(f)) {
      val.add(at('functions'), `must be a mapping with allow and/or deny lists (got ${describe(f)})`);
    } else {
      val.keys(f, FUNCTIONS_KEYS, at('functions'));
      const seen = new Map<string, number>();
      for (const k of FUNCTIONS_KEYS) {
        if (!(k in f)) continue;
        val.stringList(f[k], [...segs, 'functions', k], (s, i) => {
          const r = parseRelationPattern(s, { allowWildcard: false, what: 'function' });
          if (!r.ok) return r.message.replace('relation', 'function');
          const key = relationKey(r.pattern.schema, r.pattern.name);
          if (k === 'deny' && seen.has(key))
            return `is also in functions.allow[${seen.get(key)}]; a function cannot be both`;
          // An allow entry for a function pgwarden never lets run would do nothing: say so instead of accepting it.
          const never = k === 'allow' ? findEntry(ALWAYS_DENIED, r.pattern.name) : undefined;
          if (never !== undefined)
            return `names ${r.pattern.name}, which no role may call whatever functions.allow says (${never.reason}); see docs/functions.md`;
          const sleep =
            k === 'allow' && (r.pattern.schema === 'pg_catalog' || r.pattern.schema === undefined)
              ? findEntry(TIMEOUT_BOUNDED, r.pattern.name)
              : undefined;
          // functions.allow lets a read-only role sleep; without statementTimeout no role may, so the entry would do nothing.
          if (sleep !== undefined && !('statementTimeout' in raw))
            return `names ${r.pattern.name}, which a role may call only when it has statementTimeout (which ends the sleep): set statementTimeout on the role; see docs/functions.md`;
          if (k === 'allow') seen.set(key, i);
          return undefined;
        });
      }
    }
  }

  if ('settings' in raw) {
    val.stringList(raw.settings, at('settings'), (s) => {
      if (!SETTING_NAME.test(s)) return 'must be a setting name like work_mem or myapp.tenant';
      if (PINNED_SETTINGS.has(s.toLowerCase()))
        return `cannot be made SET-able: pgwarden pins ${s.toLowerCase()} for the session`;
      return undefined;
    });
  }

  if ('catalog' in raw) val.oneOf(raw.catalog, CATALOG_MODES, at('catalog'));
  // catalog: scoped filters every catalog relation a statement names; an unqualified name it cannot place in
  // pg_catalog (`tables`, `columns`) would reach information_schema unfiltered through the search path.
  if (raw.catalog === 'scoped' && Array.isArray(raw.searchPath)) {
    for (const s of raw.searchPath) {
      const r = typeof s === 'string' ? parseIdentifier(s) : undefined;
      if (r?.ok === true && r.name === 'information_schema')
        val.add(
          at('searchPath'),
          'cannot include information_schema with catalog: scoped: its views must be named qualified (information_schema.tables) to be filtered',
        );
    }
  }
  if ('singleUse' in raw) val.oneOf(raw.singleUse, SINGLE_USE_MODES, at('singleUse'));

  if ('maxRows' in raw) {
    const m = raw.maxRows;
    if (typeof m !== 'number' || !Number.isSafeInteger(m) || m < 1)
      val.add(at('maxRows'), `must be a positive integer (got ${describe(m)})`);
  }
  if ('onRowCap' in raw) {
    val.oneOf(raw.onRowCap, ON_ROW_CAP, at('onRowCap'));
    if (!('maxRows' in raw)) val.add(at('onRowCap'), 'has no effect without maxRows');
  }

  if ('statementTimeout' in raw) {
    const d = parseDurationMs(raw.statementTimeout);
    if (!d.ok) val.add(at('statementTimeout'), d.message);
  }
  if ('idleInTransactionTimeout' in raw) {
    const d = parseIdleInTransactionMs(raw.idleInTransactionTimeout);
    if (!d.ok) val.add(at('idleInTransactionTimeout'), d.message);
  }

  if ('holdCursors' in raw) {
    const h = raw.holdCursors;
    if (typeof h !== 'number' || !Number.isSafeInteger(h) || h < 0 || h > MAX_HOLD_CURSORS)
      val.add(at('holdCursors'), `must be an integer from 0 to ${MAX_HOLD_CURSORS} (got ${describe(h)})`);
  }

  if ('budget' in raw) checkBudget(val, raw.budget, [...segs, 'budget']);
  checkUtilityKeys(val, raw, segs, readOnly);

  if ('dbRole' in raw) {
    if (typeof raw.dbRole !== 'string')
      val.add(at('dbRole'), `must be a database role name (got ${describe(raw.dbRole)})`);
    else {
      const r = parseIdentifier(raw.dbRole);
      if (!r.ok) val.add(at('dbRole'), r.message);
    }
  }

  if ('networks' in raw) {
    if (Array.isArray(raw.networks) && raw.networks.length === 0) {
      // An empty list would refuse every login; that is never what is meant (leave the key out to allow any address).
      val.add(
        at('networks'),
        'must not be empty: it would refuse every login (leave networks out to allow any client address)',
      );
    }
    val.stringList(raw.networks, at('networks'), (s) => {
      const r = parseCidr(s);
      return r.ok ? undefined : r.message;
    });
  }

  if ('searchPath' in raw) {
    val.stringList(raw.searchPath, at('searchPath'), (s) => {
      if (s === '$user' || s === '"$user"')
        return 'cannot be $user: name the schemas explicitly so the policy sees what Postgres sees';
      const r = parseIdentifier(s);
      return r.ok ? undefined : r.message;
    });
  }
}

/** ddl, maintenance, lock, channels, do: each off unless written, and none with side effects for a read-only role. */
function checkUtilityKeys(val: Validator, raw: Record<string, unknown>, segs: Seg[], readOnly: boolean): void {
  const at = (...k: Seg[]): Seg[] => [...segs, ...k];
  const readOnlyNote = 'is only allowed with readOnly: false (a read-only role may not change the database)';
  if ('ddl' in raw) {
    const d = raw.ddl;
    if (readOnly) val.add(at('ddl'), readOnlyNote);
    if (!isRecord(d)) val.add(at('ddl'), `must be a mapping with kinds, schemas and/or temporary (got ${describe(d)})`);
    else {
      val.keys(d, DDL_KEYS, at('ddl'));
      if (!('kinds' in d))
        val.add(at('ddl', 'kinds'), `is required: list the DDL the role may run (${DDL_KINDS.join(', ')})`);
      else
        val.stringList(
          d.kinds,
          at('ddl', 'kinds'),
          (s) => ((DDL_KINDS as readonly string[]).includes(s) ? undefined : Validator.notOneOf(s, DDL_KINDS)),
          { nonEmpty: true },
        );
      if ('schemas' in d) {
        val.stringList(d.schemas, at('ddl', 'schemas'), (s) => {
          const r = parseIdentifier(s);
          if (!r.ok) return r.message;
          if (DDL_FORBIDDEN_SCHEMAS.test(r.name))
            return r.name.startsWith('pg_temp')
              ? 'cannot be a temporary schema: use ddl.temporary: true for temporary objects'
              : `cannot be ${r.name}: pgwarden never allows DDL on system schemas`;
          return undefined;
        });
      }
      val.boolean(d, 'temporary', at('ddl'));
      // policy/evaluate.ts refuses CREATE VIEW in that case too; saying so here saves a surprise.
      const kinds = Array.isArray(d.kinds) ? d.kinds : [];
      const path = Array.isArray(raw.searchPath)
        ? raw.searchPath
            .filter((x): x is string => typeof x === 'string')
            .map((x) => parseIdentifier(x))
            .filter((x) => x.ok)
            .map((x) => x.name)
        : ['public'];
      const listed = Array.isArray(d.schemas)
        ? d.schemas
            .filter((x): x is string => typeof x === 'string')
            .map((x) => parseIdentifier(x))
            .filter((x) => x.ok)
            .map((x) => x.name)
        : [];
      const both = listed.find((x) => path.includes(x));
      if (kinds.includes('create_view') && both !== undefined) {
        val.add(
          at('ddl', 'kinds'),
          `cannot include create_view while ${both} is also on searchPath: a view made there in a transaction could stand in for a relation of the same name, which pgwarden's analysis would resolve to the other one`,
        );
      }
      const schemas = Array.isArray(d.schemas) ? d.schemas.length : 0;
      if (schemas === 0 && d.temporary !== true)
        val.add(at('ddl'), 'allows nothing: list ddl.schemas the role may change, or set ddl.temporary: true');
    }
  }
  if ('maintenance' in raw) {
    if (readOnly) val.add(at('maintenance'), readOnlyNote);
    val.stringList(
      raw.maintenance,
      at('maintenance'),
      (s) =>
        (MAINTENANCE_KINDS as readonly string[]).includes(s) ? undefined : Validator.notOneOf(s, MAINTENANCE_KINDS),
      { nonEmpty: true },
    );
  }
  val.boolean(raw, 'lock', segs);
  if ('channels' in raw) {
    const c = raw.channels;
    if (!isRecord(c)) val.add(at('channels'), `must be a mapping with listen and/or notify lists (got ${describe(c)})`);
    else {
      val.keys(c, CHANNELS_KEYS, at('channels'));
      for (const k of CHANNELS_KEYS) {
        if (!(k in c)) continue;
        val.stringList(c[k], at('channels', k), (s) => {
          const r = parseChannelPattern(s);
          return r.ok ? undefined : r.message;
        });
      }
      if ('notify' in c && readOnly)
        val.add(
          at('channels', 'notify'),
          'is only allowed with readOnly: false (NOTIFY is a write: PostgreSQL refuses it in a read-only transaction)',
        );
    }
  }
  val.boolean(raw, 'do', segs);
  if (raw.do === true && readOnly)
    val.add(
      at('do'),
      'is only allowed with readOnly: false (a DO block can do anything the database role can, including writes)',
    );
  val.boolean(raw, 'twoPhase', segs);
  if (raw.twoPhase === true && readOnly)
    val.add(
      at('twoPhase'),
      'is only allowed with readOnly: false (PREPARE TRANSACTION keeps a transaction and its locks past the session, and COMMIT PREPARED commits writes of any session of the upstream login)',
    );
}

function validateDoc(value: unknown): RawIssue[] {
  const val = new Validator();
  if (!isRecord(value)) {
    val.add([], `must be a mapping with a roles key (got ${value == null ? 'an empty document' : describe(value)})`);
    return val.issues;
  }
  val.keys(value, TOP_LEVEL_KEYS, []);
  if ('$schema' in value && typeof value.$schema !== 'string') val.add(['$schema'], 'must be a string');
  if ('version' in value && value.version !== 1) val.add(['version'], `must be 1 (got ${describe(value.version)})`);
  if (!('roles' in value)) {
    val.add(['roles'], 'is required: a mapping of role name to its settings');
    return val.issues;
  }
  const roles = value.roles;
  if (!isRecord(roles)) {
    val.add(['roles'], `must be a mapping of role name to its settings (got ${describe(roles)})`);
    return val.issues;
  }
  const names = Object.keys(roles);
  if (names.length === 0) val.add(['roles'], 'must define at least one role');
  const folded = new Map<string, string>();
  for (const name of names) {
    if (!ROLE_NAME.test(name) || name.length > MAX_IDENTIFIER_BYTES) {
      val.add(
        ['roles', name],
        `is not a valid role name: use letters, digits and _ (starting with a letter or _), at most ${MAX_IDENTIFIER_BYTES} characters`,
      );
    }
    // Role names travel in tokens and usernames; two that differ only in case are a mistake waiting to happen.
    const lower = name.toLowerCase();
    const other = folded.get(lower);
    if (other !== undefined)
      val.add(['roles', name], `collides with role "${other}" (role names are compared case-insensitively)`);
    else folded.set(lower, name);
    checkRole(val, roles[name], ['roles', name]);
  }
  if ('issuance' in value) validateIssuance(value.issuance, roles, (segs, message) => val.add(segs, message));
  return val.issues;
}

// ---------------------------------------------------------------------------------------------
// Parsing text
// ---------------------------------------------------------------------------------------------

/** The line of the key (or value) a path points at, so `policy check` can print file:line. */
function lineOf(doc: Document, counter: LineCounter, segs: readonly Seg[]): number | undefined {
  for (let n = segs.length; n >= 0; n--) {
    const prefix = segs.slice(0, n);
    if (n > 0) {
      const parent = doc.getIn(prefix.slice(0, -1), true);
      const last = prefix[prefix.length - 1];
      if (isMap(parent) && typeof last === 'string') {
        const pair = parent.items.find((p) => isScalar(p.key) && String(p.key.value) === last);
        const range = isScalar(pair?.key) ? pair.key.range : undefined;
        if (range) return counter.linePos(range[0]).line;
      }
    }
    const node = n === 0 ? doc.contents : doc.getIn(prefix, true);
    const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
    if (range) return counter.linePos(range[0]).line;
  }
  return undefined;
}

/** Parses and validates policy text; `source` names it in messages. Every issue is reported, not just the first. */
export function parsePolicyText(text: string, format: 'yaml' | 'json', source: string): ParseResult {
  void source; // Issues carry paths and lines; callers prefix the source (see formatIssue).
  const counter = new LineCounter();
  let value: unknown;
  if (format === 'json') {
    try {
      value = JSON.parse(text);
    } catch (err) {
      return { ok: false, issues: [{ path: '', message: `is not valid JSON: ${(err as Error).message}` }] };
    }
  }
  // YAML parses JSON too; for JSON we use it only to catch duplicate keys, which JSON.parse silently merges.
  const doc = parseDocument(text, { lineCounter: counter, merge: true, uniqueKeys: true, prettyErrors: false });
  const syntax = doc.errors.filter((e) => format === 'yaml' || e.code === 'DUPLICATE_KEY');
  if (syntax.length > 0) {
    return {
      ok: false,
      issues: syntax.map((e) => {
        const line = e.pos?.[0] === undefined ? undefined : counter.linePos(e.pos[0]).line;
        // The error points at the key's first character; read the key token from there.
        const key = /^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^:,\n{}[\]]+)/.exec(text.slice(e.pos[0]))?.[1]?.trim();
        const message =
          e.code === 'DUPLICATE_KEY'
            ? `has a duplicate key ${key || '(unnamed)'} (each key may appear once in a mapping)`
            : `is not valid ${format.toUpperCase()}: ${e.message.split('\n')[0]}`;
        return line === undefined ? { path: '', message } : { path: '', message, line };
      }),
    };
  }
  if (format === 'yaml') {
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      return { ok: false, issues: [{ path: '', message: `could not be read: ${(err as Error).message}` }] };
    }
  }
  const raw = validateDoc(value);
  if (raw.length > 0) {
    const issues = raw.map((r) => {
      const line = lineOf(doc, counter, r.segs);
      const issue: PolicyIssue = { path: formatPath(r.segs), message: r.message };
      if (line !== undefined) issue.line = line;
      return issue;
    });
    // Reading order is easiest to act on; sort is stable, so issues on one line keep validation order.
    issues.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity));
    return { ok: false, issues };
  }
  return { ok: true, doc: value as PolicyDoc };
}

/** `policy.yaml:7: roles.analyst.maxRows: must be a positive integer` */
export function formatIssue(issue: PolicyIssue, source: string): string {
  const where = issue.line === undefined ? source : `${source}:${issue.line}`;
  return issue.path === '' ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`;
}

/** JSON for `.json` files, YAML otherwise (YAML reads the rest). */
export function formatForFile(file: string): 'yaml' | 'json' {
  return path.extname(file).toLowerCase() === '.json' ? 'json' : 'yaml';
}

/** sha256 of the source text, recorded in the compiled policy for audit. */
export function digestOf(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** Reads, parses and validates a policy file; read errors are issues too. */
export async function loadPolicyFile(file: string): Promise<LoadResult> {
  const source = file;
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const message = e.code === 'ENOENT' ? 'does not exist' : `could not be read: ${e.code ?? e.message}`;
    return { ok: false, source, issues: [{ path: '', message }] };
  }
  return loadPolicyBytes(file, buf);
}

/** loadPolicyFile of bytes already read from `file` (a reload parses exactly the bytes that stayed the same across reads). */
export function loadPolicyBytes(file: string, buf: Buffer): LoadResult {
  const source = file;
  if (buf.length > MAX_POLICY_BYTES) {
    return {
      ok: false,
      source,
      issues: [{ path: '', message: `is larger than ${MAX_POLICY_BYTES} bytes; is this the right file?` }],
    };
  }
  const text = buf.toString('utf8');
  const parsed = parsePolicyText(text, formatForFile(file), source);
  if (!parsed.ok) return { ok: false, source, issues: parsed.issues };
  return { ok: true, source, doc: parsed.doc, digest: digestOf(text) };
}

// ---------------------------------------------------------------------------------------------
// Compiling
// ---------------------------------------------------------------------------------------------

/** A Map whose mutators throw: the compiled policy and catalog are shared by every session. */
export function frozenMap<K, V>(entries: Iterable<readonly [K, V]>): ReadonlyMap<K, V> {
  const m = new Map<K, V>(entries);
  for (const k of ['set', 'delete', 'clear'] as const) {
    Object.defineProperty(m, k, {
      value: () => {
        throw new TypeError('frozen map');
      },
    });
  }
  return Object.freeze(m);
}

/** A Set whose mutators throw. */
export function frozenSet<T>(values: Iterable<T>): ReadonlySet<T> {
  const s = new Set<T>(values);
  for (const k of ['add', 'delete', 'clear'] as const) {
    Object.defineProperty(s, k, {
      value: () => {
        throw new TypeError('frozen set');
      },
    });
  }
  return Object.freeze(s);
}

function must<R extends { ok: true } | { ok: false; message: string }>(r: R, what: string): Extract<R, { ok: true }> {
  // compilePolicy takes validated docs; anything else is a programming error, not bad input.
  if (!r.ok)
    throw new TypeError(
      `compilePolicy: ${what} ${(r as { message: string }).message} (validate with parsePolicyText first)`,
    );
  return r as Extract<R, { ok: true }>;
}

function compilePatterns(list: readonly string[] | undefined): RelationPattern[] {
  const seen = new Map<string, RelationPattern>();
  for (const s of list ?? []) {
    const { pattern } = must(parseRelationPattern(s), `relation ${JSON.stringify(s)}`);
    seen.set(relationKey(pattern.schema, pattern.name), Object.freeze(pattern));
  }
  return Object.freeze([...seen.values()]) as RelationPattern[];
}

function compileRole(name: string, doc: RoleDoc): RolePolicy {
  const readOnly = doc.readOnly !== false;
  const denied = new Map<string, Set<string>>();
  for (const [rel, cols] of Object.entries(doc.deniedColumns ?? {})) {
    const { pattern } = must(
      parseRelationPattern(rel, { allowWildcard: false }),
      `deniedColumns key ${JSON.stringify(rel)}`,
    );
    const key = relationKey(pattern.schema, pattern.name);
    const set = denied.get(key) ?? new Set<string>();
    for (const c of cols) set.add(must(parseIdentifier(c), `column ${JSON.stringify(c)}`).name);
    denied.set(key, set);
  }
  const fnNames = (list: readonly string[] | undefined): ReadonlySet<string> =>
    frozenSet(
      (list ?? []).map((s) => {
        const { pattern } = must(parseRelationPattern(s, { allowWildcard: false }), `function ${JSON.stringify(s)}`);
        return relationKey(pattern.schema, pattern.name);
      }),
    );
  const timeout =
    doc.statementTimeout === undefined ? undefined : must(parseDurationMs(doc.statementTimeout), 'statementTimeout').ms;
  const write: RolePolicy['write'] =
    !readOnly && doc.write
      ? Object.freeze({
          kinds: Object.freeze([...new Set(doc.write.statements)]) as WriteKind[],
          relations: compilePatterns(doc.write.relations),
        })
      : undefined;
  const role: RolePolicy = {
    name,
    mode: doc.mode ?? 'enforce',
    readOnly,
    relations: compilePatterns(doc.relations),
    write,
    deniedColumns: frozenMap([...denied].map(([k, v]) => [k, frozenSet(v)] as const)),
    functions: Object.freeze({ allow: fnNames(doc.functions?.allow), deny: fnNames(doc.functions?.deny) }),
    settings: frozenSet((doc.settings ?? []).map((s) => s.toLowerCase())),
    catalog: doc.catalog ?? 'none',
    maxRows: doc.maxRows,
    onRowCap: doc.onRowCap ?? 'truncate',
    statementTimeout: timeout,
    idleInTransactionTimeout:
      doc.idleInTransactionTimeout === undefined
        ? undefined
        : must(parseIdleInTransactionMs(doc.idleInTransactionTimeout), 'idleInTransactionTimeout').ms,
    holdCursors: doc.holdCursors ?? (readOnly ? DEFAULT_HOLD_CURSORS.readOnly : DEFAULT_HOLD_CURSORS.readWrite),
    budget: doc.budget === undefined ? undefined : compileBudget(doc.budget),
    dbRole: doc.dbRole === undefined ? undefined : must(parseIdentifier(doc.dbRole), 'dbRole').name,
    networks:
      doc.networks === undefined
        ? undefined
        : Object.freeze(
            doc.networks.map((n) => Object.freeze(must(parseCidr(n), `network ${JSON.stringify(n)}`).cidr)),
          ),
    searchPath: Object.freeze(
      (doc.searchPath ?? ['public']).map((s) => must(parseIdentifier(s), `searchPath ${JSON.stringify(s)}`).name),
    ) as string[],
    ddl:
      doc.ddl === undefined || readOnly
        ? undefined
        : Object.freeze({
            kinds: Object.freeze([...new Set(doc.ddl.kinds)]),
            schemas: Object.freeze([
              ...new Set(
                (doc.ddl.schemas ?? []).map((s) => must(parseIdentifier(s), `ddl schema ${JSON.stringify(s)}`).name),
              ),
            ]),
            temporary: doc.ddl.temporary === true,
          }),
    maintenance: doc.maintenance === undefined || readOnly ? undefined : Object.freeze([...new Set(doc.maintenance)]),
    lock: doc.lock === true ? true : undefined,
    channels:
      doc.channels === undefined
        ? undefined
        : Object.freeze({
            listen: Object.freeze(
              (doc.channels.listen ?? []).map((s) =>
                Object.freeze(must(parseChannelPattern(s), `channel ${JSON.stringify(s)}`).pattern),
              ),
            ),
            notify: readOnly
              ? []
              : Object.freeze(
                  (doc.channels.notify ?? []).map((s) =>
                    Object.freeze(must(parseChannelPattern(s), `channel ${JSON.stringify(s)}`).pattern),
                  ),
                ),
          }),
    do: doc.do === true && !readOnly ? true : undefined,
    twoPhase: doc.twoPhase === true && !readOnly ? true : undefined,
    singleUse: doc.singleUse === 'required' ? 'required' : undefined,
  };
  return Object.freeze(role);
}

/**
 * What a valid policy allows that an operator should know at every load: `do: true` hands the role's sessions
 * everything the database role can do, whatever the rest of the policy says.
 */
export function policyWarnings(policy: CompiledPolicy): string[] {
  const out: string[] = [];
  for (const r of policy.roles.values()) {
    if (r.do === true)
      out.push(
        `roles.${r.name}.do: DO blocks run any SQL as the database role${r.dbRole !== undefined ? ` ${quoteIdent(r.dbRole)}` : ''}; pgwarden cannot see inside them, so only that role's privileges limit what this role's sessions can do`,
      );
  }
  return out;
}

/** "1GB", "512MB", "64kB", "100B" (binary units, as limits.maxMessageSize) or a whole number of bytes; undefined if not one. */
export function parseByteSize(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 1 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?$/.exec(v.trim());
  if (m === null) return undefined;
  const unit = (m[2] ?? 'B').toUpperCase().replace('I', '');
  const mult: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };
  const n = Math.round(Number(m[1]) * (mult[unit] ?? NaN));
  return Number.isSafeInteger(n) && n >= 1 ? n : undefined;
}

function checkBudget(val: Validator, b: unknown, segs: Seg[]): void {
  if (!isRecord(b)) {
    val.add(segs, `must be a mapping such as { per: agent, statementsPerMinute: 600 } (got ${describe(b)})`);
    return;
  }
  val.keys(b, BUDGET_KEYS, segs);
  if (!('per' in b))
    val.add([...segs, 'per'], 'is required: count per subject (every session of one token sub) or per agent');
  else val.oneOf(b.per, BUDGET_PER, [...segs, 'per']);
  for (const k of BUDGET_COUNTS) {
    if (!(k in b)) continue;
    const n = b[k];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1)
      val.add([...segs, k], `must be a positive integer (got ${describe(n)})`);
  }
  if ('bytesPerMinute' in b && parseByteSize(b.bytesPerMinute) === undefined) {
    val.add(
      [...segs, 'bytesPerMinute'],
      `must be a positive number of bytes or a size such as "512MB" or "1GB" (got ${describe(b.bytesPerMinute)})`,
    );
  }
  if (!BUDGET_COUNTS.some((k) => k in b) && !('bytesPerMinute' in b)) {
    val.add(segs, 'sets no limit: give statementsPerMinute, rowsPerMinute, bytesPerMinute or concurrentStatements');
  }
}

function compileBudget(doc: BudgetDoc): RoleBudget {
  return Object.freeze({
    per: doc.per,
    statementsPerMinute: doc.statementsPerMinute,
    rowsPerMinute: doc.rowsPerMinute,
    bytesPerMinute: doc.bytesPerMinute === undefined ? undefined : parseByteSize(doc.bytesPerMinute),
    concurrentStatements: doc.concurrentStatements,
  });
}

/** Turns a validated document into the frozen policy the engine reads; `version` and `digest` come from the store. */
export function compilePolicy(doc: PolicyDoc, version: number, digest: string): CompiledPolicy {
  if (!Number.isSafeInteger(version) || version < 1)
    throw new TypeError(`compilePolicy: version must be a positive integer, got ${version}`);
  const roles = Object.entries(doc.roles).map(([name, r]) => [name, compileRole(name, r)] as const);
  const issuance = doc.issuance === undefined ? {} : { issuance: compileIssuance(doc.issuance) };
  return Object.freeze({ version, digest, roles: frozenMap(roles), ...issuance });
}

/** Every relation pattern any role reads or writes (denied columns are validated to lie within them), and every relation of its ddl.schemas, for loadCatalog and privilege checks. */
export function policyRelations(policy: CompiledPolicy): RelationPattern[] {
  const out = new Map<string, RelationPattern>();
  for (const role of policy.roles.values()) {
    for (const p of [...role.relations, ...(role.write?.relations ?? [])]) out.set(relationKey(p.schema, p.name), p);
    // What DDL may change there must be known too: a parent's partitions and children (policy/evaluate.ts, checkUtility).
    for (const schema of role.ddl?.schemas ?? []) out.set(relationKey(schema, '*'), { schema, name: '*' });
  }
  return [...out.values()];
}
