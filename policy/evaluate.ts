// SQL text + session + catalog → Decision: the pure, synchronous statement policy (fail closed; never throws).
import { narrowedColumns } from './narrow.ts';
import type {
  CatalogRelation,
  CatalogSnapshot,
  DdlKind,
  Decision,
  Effect,
  RelationPattern,
  RolePolicy,
  BindCheck,
  SessionView,
  StatementSummary,
} from './types.ts';
import { parseStatements, scanTokens, type RawStmt } from './parser.ts';
import { cappable, cappedLimit, rewriteForCap, spliceLimit } from './rowcap.ts';
import { analyzeStatement, type Analysis, type AnyNode, type DeferredType, type FunctionUse } from './analyze.ts';
import { judgeFunction } from './functions.ts';
import { DEFAULT_HOLD_CURSORS, relationKey } from './load.ts';
import { quoteIdent } from '../lib/ident.ts';
import {
  judgeSettingRead,
  judgeSetConfig,
  judgeVariableSet,
  judgeTransactionOptions,
  type SettingVerdict,
} from './settings.ts';
import {
  DENIED_SYSTEM_RELATIONS,
  INTROSPECTION_EXTRA_FUNCTIONS,
  INTROSPECTION_RELATIONS,
  SESSION_RELATIONS,
  SESSION_TEXT_COLUMNS,
  SESSION_TEXT_FUNCTIONS,
  SYSTEM_DENIED_COLUMNS,
  isSystemRelation,
} from './introspection.ts';
import { isIdentCont, isIdentStart } from './literals.ts';
import { SqlState } from '../lib/sqlstate.ts';
import {
  channelAllowed,
  placeObject,
  referencesItself,
  stringsOf,
  utilityQueries,
  UTILITY_KINDS,
  CATALOG_CHANGING_KINDS,
  type NamedNeed,
} from './ddl.ts';
import { rewriteScope, scopeRows } from './scope.ts';
import {
  rewriteCatalog,
  SCOPED_FREE_FUNCTIONS,
  SCOPED_INNER_FUNCTIONS,
  SCOPED_INNER_RELATIONS,
  SCOPED_REG_TYPES,
  SCOPED_RELATIONS,
} from './catalog-scope.ts';
import { errorMessage } from '../lib/error-message.ts';

type Deny = Extract<Decision, { allow: false }>;
type Allow = Extract<Decision, { allow: true }>;

/** A denial before the message text is assembled. */
export interface Denial {
  reason: string;
  ruleId: string | undefined;
  sqlstate: '42501' | '0A000' | '54000' | '42601' | '42P01';
  /** What the statement does wrong, after "permission denied by pgwarden: <KIND> ". */
  what: string;
  detail: string | undefined;
  /** For the agent: what it can do itself (rewrite the statement, ask for another token). */
  hint: string | undefined;
  /** For the operator, in the audit event only: what to change in the policy to allow it. */
  operatorHint?: string;
  /** PostgreSQL's own message, sent instead of "permission denied by pgwarden: …" (42P01 names the relation as written). */
  message?: string;
  /** Byte offset in the statement text PostgreSQL would point at (a RangeVar's location); sent as a 1-based character position. */
  location?: number;
  /** The 42P01 this refusal becomes once a catalog read after the statement arrived confirms the relation absent. */
  absent?: { message: string; detail: string; location?: number };
}

/** Extra facts for the decision cache. */
export interface EvaluationFacts {
  decision: Decision;
  /** The decision may change with a literal's value: do not share it across normalised keys. */
  literalSensitive: boolean;
  /** The decision reads session state (prepared statement or cursor names): never cache it. */
  sessionDependent: boolean;
}

/** Reasons shadow mode still enforces: they protect pgwarden itself or the protocol, not the data policy. */
const SHADOW_ENFORCED = new Set([
  'internal',
  'parser_unavailable',
  'parser_trap',
  'statement_too_large',
  'statement_too_complex',
  'multiple_statements_in_parse',
  'setting_pinned',
]);

/** Words that may set client_encoding, the lexer settings, application_name or the pgwarden.* stamps (SET NAMES included). */
const PINNED_MENTION =
  /client_encoding|names|standard_conforming_strings|backslash_quote|application_name|set_config|pgwarden\./i;

/**
 * Always-denied functions allowed in one form, `f(pg_backend_pid())` (pg_catalog's, as written and in the server's
 * plan): they can then reach only the session's own backend, as pg_terminate_backend(pg_backend_pid()) does directly.
 */
const SELF_BACKEND_FUNCTIONS: ReadonlySet<string> = new Set(['pg_terminate_backend', 'pg_cancel_backend']);

/** Statement kinds that change data or schema: denied to read-only roles as writes. */
const WRITE_KINDS = new Set([
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'TruncateStmt',
  'CreateTableAsStmt',
  'RefreshMatViewStmt',
]);

/** Kinds whose text mentions a statement that may be allowed (EXPLAIN / PREPARE bodies). */
const EXPLAINABLE = new Set([
  'SelectStmt',
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'ExecuteStmt',
  'DeclareCursorStmt',
]);
const PREPARABLE = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** SHOW of these would reveal server filesystem layout. */
export const SHOW_DENIED: ReadonlySet<string> = new Set([
  'data_directory',
  'config_file',
  'hba_file',
  'ident_file',
  'external_pid_file',
]);

const KIND_WORDS: Record<string, string> = {
  SelectStmt: 'SELECT',
  InsertStmt: 'INSERT',
  UpdateStmt: 'UPDATE',
  DeleteStmt: 'DELETE',
  MergeStmt: 'MERGE',
  TruncateStmt: 'TRUNCATE',
  CopyStmt: 'COPY',
  ExplainStmt: 'EXPLAIN',
  PrepareStmt: 'PREPARE',
  ExecuteStmt: 'EXECUTE',
  DeallocateStmt: 'DEALLOCATE',
  DeclareCursorStmt: 'DECLARE CURSOR',
  FetchStmt: 'FETCH',
  ClosePortalStmt: 'CLOSE',
  VariableSetStmt: 'SET',
  VariableShowStmt: 'SHOW',
  DiscardStmt: 'DISCARD',
  TransactionStmt: 'transaction control',
  DoStmt: 'DO',
  CallStmt: 'CALL',
  ListenStmt: 'LISTEN',
  NotifyStmt: 'NOTIFY',
  UnlistenStmt: 'UNLISTEN',
  LockStmt: 'LOCK',
  VacuumStmt: 'VACUUM/ANALYZE',
  CreateTableAsStmt: 'CREATE TABLE AS',
  AlterSystemStmt: 'ALTER SYSTEM',
  LoadStmt: 'LOAD',
  CheckPointStmt: 'CHECKPOINT',
  GrantStmt: 'GRANT/REVOKE',
  GrantRoleStmt: 'GRANT/REVOKE role',
  CreateStmt: 'CREATE TABLE',
  IndexStmt: 'CREATE INDEX',
  ViewStmt: 'CREATE VIEW',
  CreateFunctionStmt: 'CREATE FUNCTION',
  DropStmt: 'DROP',
  ReindexStmt: 'REINDEX',
  ClusterStmt: 'CLUSTER',
  RefreshMatViewStmt: 'REFRESH MATERIALIZED VIEW',
};

/** "AlterTableStmt" → "ALTER TABLE" for kinds without a curated name. */
export function kindInWords(kind: string): string {
  const w = KIND_WORDS[kind];
  if (w !== undefined) return w;
  return kind
    .replace(/Stmt$/, '')
    .replace(/([a-z])([A-Z])/g, '$1 $2')
    .toUpperCase();
}

function displayRel(key: string): string {
  const dot = key.indexOf('.');
  if (dot < 0) return quoteIdent(key);
  return `${quoteIdent(key.slice(0, dot))}.${quoteIdent(key.slice(dot + 1))}`;
}

/**
 * A relation as a refusal names it: as the statement wrote it (PostgreSQL's quoting of each part), never as pgwarden
 * resolved it, so the text is the same whether the relation exists or not (docs/policy.md, "Unknown and forbidden
 * relations"). Uses from the server's analysis carry no written form and are named by their key.
 */
function writtenRel(use: { key: string; written?: readonly string[] | undefined }): string {
  return use.written === undefined ? displayRel(use.key) : use.written.map(quoteIdent).join('.');
}

function patternText(p: RelationPattern): string {
  return p.name === '*' ? `${quoteIdent(p.schema)}.*` : `${quoteIdent(p.schema)}.${quoteIdent(p.name)}`;
}

/** Said after a rule a token narrowing may have narrowed: the refusal is the effective role's, not the policy file's alone. */
function narrowed(role: RolePolicy): string {
  return role.narrowing === undefined ? '' : ' as narrowed by the token (claim pgwarden_narrow)';
}

function listHint(label: string, items: string[]): string {
  if (items.length === 0) return `${label}: none`;
  const shown = items.slice(0, 20).join(', ');
  return `${label}: ${shown}${items.length > 20 ? `, … (${items.length - 20} more)` : ''}`;
}

/**
 * A column use of a relation the token narrowing limits to some columns (RolePolicy.allowedColumns): a named column
 * outside the list is refused like a denied column, and so is every whole-row use (`*`, `t`, `t.*`, an INSERT
 * without a column list, a NATURAL JOIN input), whatever the snapshot says the relation has now: a column added
 * after the token was issued is outside the list, and the server may already have it when pgwarden's snapshot does not.
 */
function columnOutsideNarrowing(
  c: Analysis['columns'][number],
  only: ReadonlySet<string>,
  role: RolePolicy,
  a: Analysis,
): Denial | undefined {
  const r = `roles.${role.name}`;
  const rule = `${r}.narrowing.columns`;
  const denied = role.deniedColumns.get(c.relation);
  const listed = [...only].filter((n) => denied?.has(n) !== true);
  const existing = new Set((a.relations.find((x) => x.key === c.relation)?.relation?.columns ?? []).map((x) => x.name));
  const usable = existing.size === 0 ? listed : listed.filter((n) => existing.has(n));
  if (c.column === '*' || c.how === 'natural') {
    const form =
      c.how === 'natural'
        ? 'NATURAL JOIN over'
        : c.how === 'star'
          ? '* over'
          : c.how === 'write'
            ? 'writes every column of'
            : 'a whole-row reference to';
    return {
      reason: 'column_denied',
      ruleId: rule,
      sqlstate: SqlState.InsufficientPrivilege,
      what: `uses ${form} ${displayRel(c.relation)}, whose columns the token limits to ${listed.length === 0 ? 'none' : listed.map(quoteIdent).join(', ')}`,
      detail: `the token's narrowing lists the columns of ${displayRel(c.relation)} that may be used, and a whole row may hold others (rule: ${rule})`,
      hint: `name the columns explicitly${c.how === 'natural' ? ' and join with ON or USING' : ''}; ${listHint(`allowed columns of ${displayRel(c.relation)}`, usable)}`,
    };
  }
  if (!only.has(c.column)) {
    return {
      reason: 'column_denied',
      ruleId: rule,
      sqlstate: SqlState.InsufficientPrivilege,
      what: `${c.how === 'write' ? 'writes' : 'references'} column ${displayRel(c.relation)}.${quoteIdent(c.column)}, which this token may not use`,
      detail: `${displayRel(c.relation)}.${quoteIdent(c.column)} is not among the columns the token's narrowing lists (rule: ${rule})`,
      hint: `${listHint(`allowed columns of ${displayRel(c.relation)}`, usable)}; otherwise request a token whose narrowing includes ${quoteIdent(c.column)}`,
    };
  }
  return undefined;
}

/**
 * A token narrowing with column lists reads or writes a view or materialized view only when it names it exactly (in
 * `relations` without a wildcard, or in `columns`): a view may show columns of a relation the narrowing limits under
 * other names, and pgwarden does not see through it.
 */
function viewOutsideNarrowing(
  role: RolePolicy,
  use: { schema: string; name: string; key: string; relation?: CatalogRelation | undefined },
  how: 'reads' | 'writes',
): Denial | undefined {
  const n = role.narrowing;
  if (n?.columns === undefined || n.columns.size === 0) return undefined;
  const kind = use.relation?.kind;
  if (kind !== 'v' && kind !== 'm') return undefined;
  if (n.columns.has(use.key) || (n.relations ?? []).some((p) => p.schema === use.schema && p.name === use.name))
    return undefined;
  const rule = `roles.${role.name}.narrowing.relations`;
  return {
    reason: 'relation_not_allowed',
    ruleId: rule,
    sqlstate: SqlState.InsufficientPrivilege,
    what: `${how} ${kind === 'm' ? 'materialized view' : 'view'} ${displayRel(use.key)}, which the token's narrowing does not name`,
    detail: `the token limits the columns of some relations, and a view may show them under other names: it reads or writes a view only when its narrowing names the view itself (rule: ${rule})`,
    hint: `read the tables the token allows directly, or request a token whose narrowing names ${displayRel(use.key)}`,
  };
}

/**
 * The session's own temporary relations (schema pg_temp: pgwarden's name for the session's temporary schema, never
 * another session's pg_temp_N) are the role's to read and write when it may make them (ddl.temporary): it made them,
 * and nobody else can see them. The statement kinds (write.kinds) still apply.
 */
export function temporaryRelation(role: RolePolicy, schema: string): boolean {
  return schema === 'pg_temp' && role.ddl?.temporary === true && !role.readOnly;
}

/** A scoped role reading back statement texts pgwarden sent upstream (introspection.ts SESSION_TEXT_COLUMNS). */
function sessionTextDenied(what: string): Denial {
  return {
    reason: 'column_denied',
    ruleId: 'builtin.catalog',
    sqlstate: SqlState.InsufficientPrivilege,
    what: `reads the statement texts of ${what}, which under catalog: scoped hold pgwarden's catalog filters (they name columns this role may not see)`,
    detail: `${what}: statement (rule: builtin.catalog)`,
    hint: 'select the columns you need by name, without statement (name, prepare_time, parameter_types, …)',
  };
}

export function matchesRelation(patterns: readonly RelationPattern[], schema: string, name: string): boolean {
  for (const p of patterns) if (p.schema === schema && (p.name === '*' || p.name === name)) return true;
  return false;
}

function summarize(a: Analysis): StatementSummary {
  return {
    kind: a.kind,
    relations: [...new Set(a.relations.map((r) => r.key))],
    columns: [...new Set(a.columns.filter((c) => c.how !== 'natural').map((c) => `${c.relation}.${c.column}`))],
    functions: [...new Set(a.functions.map((f) => f.key))],
  };
}

interface StatementOk {
  ok: true;
  effects: Effect[];
  rank: number;
  ruleId: string;
  sessionDependent: boolean;
}
type StatementResult = StatementOk | { ok: false; denial: Denial };

const ALLOW_RANK = { statements: 0, catalog: 1, relations: 2, write: 3 } as const;

/** The one denied system view a role key opens: twoPhase (docs/policy.md, two-phase commit). */
const PREPARED_XACTS = 'pg_catalog.pg_prepared_xacts';

/**
 * twoPhase as it applies to this session: never on a read-only role (policy/load.ts drops it there; a token narrowed
 * to read-only keeps the role's field), and off under a narrowing with utility: false, like the other switches.
 */
function twoPhaseAllowed(role: RolePolicy): boolean {
  return role.twoPhase === true && !role.readOnly && role.narrowing?.utility !== false;
}

const SCOPED_HINT =
  "SELECT * FROM pgwarden.scope lists the relations and columns this role may use; psql's \\d, information_schema and the pg_catalog relations docs/policy.md lists show them too";

/** A system relation a `catalog: scoped` role named that no filter covers, or in a place a filter cannot stand. */
export function scopedCatalogDenial(role: RolePolicy, key: string, why?: string): Denial {
  const r = `roles.${role.name}`;
  return {
    reason: 'catalog_denied',
    ruleId: `${r}.catalog`,
    sqlstate: SqlState.InsufficientPrivilege,
    what: `reads system catalog ${displayRel(key)}, which role "${role.name}" may not read`,
    detail: `${why ?? `${displayRel(key)} has no filter under catalog: scoped`} (rule: ${r}.catalog)`,
    hint: SCOPED_HINT,
    operatorHint:
      'catalog: introspection shows every name in the database; scoped filters only the relations listed in docs/policy.md',
  };
}

/** How the text being judged came to be. */
export interface FactsContext {
  /**
   * The text is policy/catalog-scope.ts's rewrite for a `catalog: scoped` role: every catalog relation the client
   * named is behind a filter, every guarded function and reg* cast behind a guard, so the filters' and guards' own
   * catalog relations, functions and casts are allowed.
   */
  catalogFiltered?: boolean;
}

/** Checks the facts every statement kind shares: writes, relations, columns, functions, operators, casts. */
export function checkFacts(
  a: Analysis,
  role: RolePolicy,
  ctx: FactsContext = {},
): Denial | { rank: number; ruleId: string } {
  const r = `roles.${role.name}`;
  const filtered = role.catalog === 'scoped' && ctx.catalogFiltered === true;
  for (const p of a.problems) {
    switch (p.code) {
      case 'too_complex':
        return {
          reason: 'statement_too_complex',
          ruleId: 'builtin.parser',
          sqlstate: SqlState.FeatureNotSupported,
          what: 'is too deeply nested to analyse',
          detail: p.message,
          hint: 'simplify the statement',
        };
      case 'cross_database':
        return {
          reason: 'relation_not_allowed',
          ruleId: `${r}.relations`,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `names another database (${p.subject})`,
          detail: p.message,
          hint: 'use one- or two-part names',
        };
      case 'undefined_relation':
        return {
          reason: 'undefined_relation',
          ruleId: `${r}.relations`,
          sqlstate: SqlState.UndefinedTable,
          what: `reads relation ${p.subject}, which does not exist`,
          message: `relation "${p.subject}" does not exist`,
          detail: `${p.message} (rule: ${r}.relations)`,
          hint: 'a relation created since pgwarden last read the catalog is seen after a policy reload',
          location: p.location,
        };
      case 'unknown_relation':
        return {
          reason: 'unknown_relation',
          ruleId: `${r}.relations`,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `reads relation ${p.subject}, which pgwarden cannot resolve`,
          detail: p.message,
          hint: listHint('allowed relations', role.relations.map(patternText)),
          ...(p.confirmable === true
            ? {
                absent: {
                  message: `relation "${p.subject}" does not exist`,
                  detail: `pgwarden read the catalog again: no relation ${p.subject} is in a schema role "${role.name}" may create in (rule: ${r}.ddl.schemas)`,
                  ...(p.location === undefined ? {} : { location: p.location }),
                },
              }
            : {}),
        };
      case 'unknown_function':
        return {
          reason: 'function_denied',
          ruleId: `${r}.functions`,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `calls function ${p.subject}, which pgwarden cannot resolve`,
          detail: p.message,
          hint: undefined,
        };
      case 'unknown_type':
        return {
          reason: 'type_denied',
          ruleId: `${r}.relations`,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `uses type ${p.subject}, which pgwarden cannot resolve`,
          detail: p.message,
          hint: 'use built-in types',
        };
      case 'input_runs_code':
        return {
          reason: 'analysis_ran_user_code',
          ruleId: 'builtin.types',
          sqlstate: SqlState.InsufficientPrivilege,
          what: `converts a string constant to ${p.subject}, which runs SQL code while the statement is merely analysed`,
          detail: p.message,
          hint: 'pass the value as a parameter of a built-in type, or ask the operator to review the type',
        };
      case 'user_operator':
        return {
          reason: 'operator_denied',
          ruleId: `${r}.functions`,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `uses operator ${p.subject}, which is not a pg_catalog operator`,
          detail: `${p.message} (rule: builtin.operators)`,
          hint: 'use built-in operators or call an allowed function',
        };
    }
  }
  let rank: number = ALLOW_RANK.statements;
  let ruleId = `${r}.statements`;
  for (const w of a.writes) {
    const kindWord = kindInWords(w.kind === 'CopyFrom' ? 'CopyStmt' : w.kind) + (w.kind === 'CopyFrom' ? ' FROM' : '');
    const target = w.relation !== undefined ? writtenRel(w.relation) : 'a relation';
    // pg_settings' UPDATE rule calls set_config: it changes what SET may not (client_encoding, the identity stamps),
    // so it is refused as set_config is, in shadow mode too.
    if (w.relation?.schema === 'pg_catalog' && w.relation.name === 'pg_settings') {
      return {
        reason: 'setting_pinned',
        ruleId: 'builtin.settings',
        sqlstate: SqlState.InsufficientPrivilege,
        what: `writes to ${target}, which changes settings behind the SET policy`,
        detail: 'an UPDATE of pg_settings is a set_config call (rule: builtin.settings)',
        hint: 'use SET for the settings the role may change',
      };
    }
    if (role.readOnly || role.write === undefined) {
      return {
        reason: 'write_in_read_only',
        ruleId: `${r}.readOnly`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `${w.nested ? `contains a nested ${kindWord}, which` : ''} writes to ${target} and role "${role.name}" is read-only`.replace(
          /^ /,
          '',
        ),
        detail: `role "${role.name}" is read-only${narrowed(role)} (rule: ${r}.readOnly)`,
        hint: 'read-only roles may run SELECT, VALUES, TABLE, SHOW, EXPLAIN, transaction control, cursors and COPY … TO STDOUT',
      };
    }
    if (!role.write.kinds.includes(w.writeKind)) {
      return {
        reason: 'write_kind_denied',
        ruleId: `${r}.write.kinds`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `is a ${w.writeKind} and role "${role.name}" may not run it`,
        detail: `${w.writeKind} is not in ${r}.write.kinds${narrowed(role)} (rule: ${r}.write.kinds)`,
        hint: listHint('allowed write kinds', [...role.write.kinds]),
      };
    }
    // A view the role may have created (auto-updatable, or not yet known to pgwarden's snapshot) would write its base
    // relations as the view's owner: writes reach ddl schemas' tables only.
    if (
      w.relation !== undefined &&
      w.relation.relation?.kind === 'v' &&
      (role.ddl?.schemas.includes(w.relation.schema) ?? false)
    ) {
      return {
        reason: 'relation_not_allowed',
        ruleId: `${r}.ddl.schemas`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `writes through view ${target}, in a schema role "${role.name}" may change`,
        detail: `a view in ddl.schemas would write its base relations as its owner (rule: ${r}.ddl.schemas)`,
        hint: 'write the base table itself',
      };
    }
    if (
      w.relation === undefined ||
      !(
        matchesRelation(role.write.relations, w.relation.schema, w.relation.name) ||
        temporaryRelation(role, w.relation.schema)
      )
    ) {
      return {
        reason: 'relation_not_allowed',
        ruleId: `${r}.write.relations`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `writes to ${target}, which role "${role.name}" may not write`,
        detail: `${target} is not in ${r}.write.relations${narrowed(role)} (rule: ${r}.write.relations)`,
        hint: listHint('writable relations', role.write.relations.map(patternText)),
      };
    }
    const throughView = viewOutsideNarrowing(role, w.relation, 'writes');
    if (throughView !== undefined) return throughView;
    rank = ALLOW_RANK.write;
    ruleId = `${r}.write.relations`;
  }
  for (const rel of a.relations) {
    if (rel.access !== 'read') continue;
    if (temporaryRelation(role, rel.schema) && rel.absent !== true) {
      if (rank < ALLOW_RANK.relations) {
        rank = ALLOW_RANK.relations;
        ruleId = `${r}.ddl.temporary`;
      }
      continue;
    }
    // A missing name outside the role's relations (absent) is refused as a relation, whatever schema it was placed in.
    if (isSystemRelation(rel.schema) && rel.absent !== true) {
      if (rel.key === PREPARED_XACTS && twoPhaseAllowed(role)) {
        // The prepared transactions a two-phase role must be able to find again (recovery), whatever its catalog mode.
        if (rank < ALLOW_RANK.catalog) {
          rank = ALLOW_RANK.catalog;
          ruleId = `${r}.twoPhase`;
        }
        continue;
      }
      const why = DENIED_SYSTEM_RELATIONS.get(rel.key);
      if (why !== undefined) {
        return {
          reason: 'catalog_denied',
          ruleId: 'builtin.catalog',
          sqlstate: SqlState.InsufficientPrivilege,
          what: `reads ${displayRel(rel.key)}, which pgwarden never allows`,
          detail: `${displayRel(rel.key)} holds ${why} (rule: builtin.catalog)`,
          hint: undefined,
          ...(rel.key === PREPARED_XACTS
            ? {
                what: `reads ${displayRel(rel.key)}, which only roles with twoPhase may read`,
                operatorHint: 'set twoPhase: true on a read-write role to allow two-phase commit and this view',
              }
            : {}),
        };
      }
      const listed = matchesRelation(role.relations, rel.schema, rel.name);
      // This session's own prepared statements and cursors: no catalog mode hides from a client what it sent itself.
      const own = SESSION_RELATIONS.has(rel.key);
      if (
        own ||
        (role.catalog === 'introspection' && (INTROSPECTION_RELATIONS.has(rel.key) || listed)) ||
        (filtered && (SCOPED_RELATIONS.has(rel.key) || SCOPED_INNER_RELATIONS.has(rel.key)))
      ) {
        if (rank < ALLOW_RANK.catalog) {
          rank = ALLOW_RANK.catalog;
          ruleId = `${r}.catalog`;
        }
        continue;
      }
      if (role.catalog === 'scoped') return scopedCatalogDenial(role, rel.key);
      return {
        reason: 'catalog_denied',
        ruleId: `${r}.catalog`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `reads system catalog ${displayRel(rel.key)}, which role "${role.name}" may not read`,
        detail:
          role.catalog === 'introspection'
            ? `${displayRel(rel.key)} is not among the introspection relations (rule: ${r}.catalog)`
            : `role "${role.name}" has no catalog access (rule: ${r}.catalog)`,
        hint:
          role.catalog === 'introspection'
            ? undefined
            : 'SELECT * FROM pgwarden.scope lists the relations and columns this role may use (no catalog access needed)',
        operatorHint:
          role.catalog === 'introspection'
            ? undefined
            : 'set catalog: introspection on the role to allow psql \\d and driver metadata queries',
      };
    }
    if (!matchesRelation(role.relations, rel.schema, rel.name)) {
      return {
        reason: 'relation_not_allowed',
        ruleId: `${r}.relations`,
        sqlstate: SqlState.InsufficientPrivilege,
        what:
          rel.viaType === true
            ? `uses type ${writtenRel(rel)}, which role "${role.name}" may not use (a relation's row type reads the relation)`
            : `reads relation ${writtenRel(rel)}, which role "${role.name}" may not read`,
        detail:
          rel.viaType === true
            ? `${writtenRel(rel)} is not among the catalog's types, or is the row type of a relation outside ${r}.relations (rule: ${r}.relations)`
            : `${writtenRel(rel)} is not in ${r}.relations${narrowed(role)} (rule: ${r}.relations)`,
        hint: `${listHint('allowed relations', role.relations.map(patternText))}; otherwise request a token whose role includes ${writtenRel(rel)}`,
        operatorHint: `add ${displayRel(rel.key)} to ${r}.relations`,
      };
    }
    const view = viewOutsideNarrowing(role, rel, 'reads');
    if (view !== undefined) return view;
    if (rank < ALLOW_RANK.relations) {
      rank = ALLOW_RANK.relations;
      ruleId = `${r}.relations`;
    }
  }
  for (const c of a.columns) {
    // Columns of system relations no role may read (other roles' settings, sampled values), whatever the policy.
    // A whole-row '*' counts only when the columns are exact (the server's analysis); pgwarden's own analysis
    // reports unknown system-relation columns as '*' and judges its stars in analyze.ts.
    const hidden = SYSTEM_DENIED_COLUMNS.get(c.relation);
    if (hidden !== undefined && (hidden.has(c.column) || (c.column === '*' && a.exactColumns === true))) {
      const cols = c.column === '*' ? [...hidden].join(', ') : c.column;
      return {
        reason: 'column_denied',
        ruleId: 'builtin.catalog',
        sqlstate: SqlState.InsufficientPrivilege,
        what: `reads ${c.column === '*' ? `every column of ${displayRel(c.relation)}, including` : `column ${displayRel(c.relation)}.${quoteIdent(c.column)}, which holds`} ${cols}, which pgwarden lets no role read`,
        detail: `${displayRel(c.relation)}: ${cols} (rule: builtin.catalog)`,
        hint: 'select the columns you need by name',
      };
    }
    // Under a scoped catalog, the text pgwarden sent upstream (its filters name the role's denied columns).
    const sent = role.catalog === 'scoped' ? SESSION_TEXT_COLUMNS.get(c.relation) : undefined;
    if (sent !== undefined && (c.column === sent || c.column === '*')) return sessionTextDenied(displayRel(c.relation));
    const only = narrowedColumns(role, c.relation, a.relations.find((x) => x.key === c.relation)?.relation);
    if (only !== undefined) {
      const refused = columnOutsideNarrowing(c, only, role, a);
      if (refused !== undefined) return refused;
    }
    // A NATURAL JOIN input as such: its compared columns are judged by name (how 'join_using') against deniedColumns.
    if (c.how === 'natural') continue;
    const denied = role.deniedColumns.get(c.relation);
    if (denied === undefined || denied.size === 0) continue;
    const allowedCols = (a.relations.find((x) => x.key === c.relation)?.relation?.columns ?? [])
      .map((x) => x.name)
      .filter((n) => !denied.has(n) && (only === undefined || only.has(n)));
    if (c.column === '*') {
      // Under a scoped catalog the role's denied columns are names it never sees (the catalogs leave them out): the
      // refusal of a whole row says that it holds one, not which.
      const deniedList = role.catalog === 'scoped' ? 'columns' : [...denied].join(', ');
      const form =
        c.how === 'star' ? '* over' : c.how === 'write' ? 'writes every column of' : 'a whole-row reference to';
      return {
        reason: 'column_denied',
        ruleId: `${r}.deniedColumns`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `uses ${form} ${displayRel(c.relation)}, which includes denied ${role.catalog === 'scoped' ? 'columns' : `column ${deniedList}`}`,
        detail: `${displayRel(c.relation)}: ${deniedList} denied by ${r}.deniedColumns (rule: ${r}.deniedColumns)`,
        hint: `list the columns explicitly; ${listHint(`allowed columns of ${displayRel(c.relation)}`, allowedCols)}`,
      };
    }
    if (denied.has(c.column)) {
      return {
        reason: 'column_denied',
        ruleId: `${r}.deniedColumns`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `${c.how === 'write' ? 'writes' : 'references'} column ${displayRel(c.relation)}.${quoteIdent(c.column)}, which role "${role.name}" may not read`,
        detail: `${displayRel(c.relation)}.${quoteIdent(c.column)} is in ${r}.deniedColumns (rule: ${r}.deniedColumns)`,
        hint: listHint(`allowed columns of ${displayRel(c.relation)}`, allowedCols),
      };
    }
  }
  for (const f of a.functions) {
    if (role.catalog === 'scoped' && SESSION_TEXT_FUNCTIONS.has(f.key)) return sessionTextDenied(displayRel(f.key));
    if (role.catalog !== 'none' && INTROSPECTION_EXTRA_FUNCTIONS.includes(f.key)) continue;
    // Under a scoped catalog the guards' own calls (each client call of these is inside a guard).
    if (filtered && SCOPED_INNER_FUNCTIONS.has(f.key)) continue;
    if (role.catalog === 'scoped' && SCOPED_FREE_FUNCTIONS.has(f.key)) continue;
    // Ending or cancelling the session's own backend is what closing the connection or a CancelRequest does.
    if (f.ownBackend === true && f.schema === 'pg_catalog' && SELF_BACKEND_FUNCTIONS.has(f.name)) continue;
    // Another backend given as a parameter: allowed only if the value bound is one of this subject's own sessions'
    // (evaluateInner attaches that check, and refuses it where nothing is bound).
    if (f.pidParam !== undefined && f.schema === 'pg_catalog' && SELF_BACKEND_FUNCTIONS.has(f.name)) continue;
    // pg_notify is NOTIFY as a function: the same channels rule, so its channel must be a constant.
    if (f.schema === 'pg_catalog' && f.name === 'pg_notify' && (role.channels?.notify.length ?? 0) > 0) {
      const channel = f.constArgs[0];
      if (channel !== undefined && channelAllowed(role.channels?.notify, channel)) continue;
      // A bare text parameter: its value is checked at Bind (evaluateInner attaches the check, and refuses it where
      // nothing is bound: the simple protocol, PREPARE, a restated DDL expression).
      if (channel === undefined && f.channelParam !== undefined) continue;
      return {
        reason: 'channel_denied',
        ruleId: `${r}.channels.notify`,
        sqlstate: SqlState.InsufficientPrivilege,
        what:
          channel === undefined
            ? 'calls pg_notify with a channel that is not a constant'
            : `notifies channel ${quoteIdent(channel)}, which role "${role.name}" may not notify`,
        detail: `${channel === undefined ? "pg_notify's channel must be a string constant naming an allowed channel" : `${quoteIdent(channel)} is not in ${r}.channels.notify`} (rule: ${r}.channels.notify)`,
        hint: listHint(
          'channels this role may notify',
          (role.channels?.notify ?? []).map((c) => `${c.name}${c.prefix ? '*' : ''}`),
        ),
      };
    }
    // A plain `SELECT set_config('name', 'value', is_local)` of constants is that SET, decided by the same rule
    // (docs/policy.md, "set_config"); set_config anywhere else, or with anything but constants, is refused below.
    if (f.schema === 'pg_catalog' && f.name === 'set_config' && a.setConfigs !== undefined) {
      for (const call of a.setConfigs) {
        const s = judgeSetConfig(call, role);
        if (!s.allow) return settingDenial(s, role, 'calls set_config to change a setting pgwarden does not allow');
      }
      continue;
    }
    const v = judgeFunction(f.schema, f.name, f.overloads, role);
    if (!v.allow) {
      const rule = v.rule === 'builtin' ? 'builtin.functions' : `${r}.functions`;
      let hint: string | undefined;
      let operatorHint: string | undefined;
      if (v.code === 'not_pg_catalog' || v.code === 'volatile') {
        hint = `request a token whose role may call ${displayRel(f.key)}`;
        operatorHint = `add ${f.key} to ${r}.functions.allow`;
      }
      if (v.code === 'introspection_only') {
        hint =
          'SELECT * FROM pgwarden.scope lists the relations and columns this role may use (no catalog access needed)';
        operatorHint = 'set catalog: introspection on the role';
      }
      if (v.code === 'unclassified') {
        hint = 'use a function pgwarden has reviewed for this PostgreSQL version (docs/functions.md lists them)';
        operatorHint = v.hint;
      }
      // Under a scoped catalog a function outside the role's functions.allow is a name the role never sees (pg_proc
      // leaves it out): one that exists and one that does not are refused in the same words, by the name as called,
      // without the schema it resolved to (an unqualified name would tell which search-path schema holds it).
      if (role.catalog === 'scoped' && (v.code === 'not_pg_catalog' || v.code === 'unknown_function')) {
        const called = quoteIdent(f.name);
        return {
          reason: 'function_denied',
          ruleId: `${r}.functions`,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `calls function ${called}, which role "${role.name}" may not call`,
          detail: `${called}: not a function of ${r}.functions.allow (rule: ${r}.functions)`,
          hint: `request a token whose role may call ${called}`,
          operatorHint: `add the function to ${r}.functions.allow`,
        };
      }
      return {
        // set_config can change what SET may not (client_encoding, the lexer settings, the identity stamps): refused in shadow mode too.
        reason: f.name === 'set_config' && v.rule === 'builtin' ? 'setting_pinned' : 'function_denied',
        ruleId: rule,
        sqlstate: SqlState.InsufficientPrivilege,
        what: `calls function ${displayRel(f.key)}, which role "${role.name}" may not call`,
        detail: `${displayRel(f.key)}: ${v.why} (rule: ${rule})`,
        hint,
        operatorHint,
      };
    }
    // The same rule as SHOW (judgeSettingRead); a name that is not a constant could be any setting.
    if (f.schema === 'pg_catalog' && f.name === 'current_setting') {
      const setting = f.constArgs[0];
      const v = setting === undefined ? undefined : judgeSettingRead(setting, role);
      if (setting === undefined ? role.catalog !== 'introspection' : v !== undefined && !v.allow) {
        return {
          reason: 'function_denied',
          ruleId: 'builtin.functions',
          sqlstate: SqlState.InsufficientPrivilege,
          what:
            setting === undefined
              ? 'calls current_setting with a non-constant setting name'
              : `reads setting ${setting} with current_setting`,
          detail: `${v !== undefined && !v.allow ? v.why : 'current_setting may read only display, identity and limit settings'} (rule: builtin.functions)`,
          hint: v !== undefined && !v.allow ? v.hint : undefined,
        };
      }
    }
  }
  if (
    a.regTypes.length > 0 &&
    role.catalog !== 'introspection' &&
    // In a filtered text every client cast to regclass, regtype or regnamespace is guarded (the others were refused).
    !(filtered && a.regTypes.every((t) => SCOPED_REG_TYPES.has(t)))
  ) {
    return {
      reason: 'catalog_denied',
      ruleId: `${r}.catalog`,
      sqlstate: SqlState.InsufficientPrivilege,
      what: `casts to ${a.regTypes[0] ?? 'a reg* type'}, which looks names up in the system catalogs`,
      detail: `reg* casts need catalog: introspection (rule: ${r}.catalog)`,
      hint: 'compare names as text instead',
    };
  }
  return { rank, ruleId };
}

/** A SET's refusal (and a set_config call's, decided as that SET); pinned settings are refused in shadow mode too. */
function settingDenial(v: Extract<SettingVerdict, { allow: false }>, role: RolePolicy, what: string): Denial {
  const rule = v.rule === 'builtin' ? 'builtin.settings' : `roles.${role.name}.settings`;
  return {
    reason: v.pinned === true ? 'setting_pinned' : 'setting_denied',
    ruleId: rule,
    sqlstate: SqlState.InsufficientPrivilege,
    what,
    detail: `${v.why} (rule: ${rule})`,
    hint: v.hint,
  };
}

function kindDenial(kind: string, role: RolePolicy, why?: string): Denial {
  const r = `roles.${role.name}`;
  if (
    role.readOnly &&
    (WRITE_KINDS.has(kind) ||
      /^(Create|Alter|Drop|Grant|Comment|Rename|Reindex|Cluster|Vacuum|Lock|SecLabel|ImportForeignSchema|Refresh)/.test(
        kind,
      ))
  ) {
    return {
      reason: 'write_in_read_only',
      ruleId: `${r}.readOnly`,
      sqlstate: SqlState.InsufficientPrivilege,
      what: `changes the database and role "${role.name}" is read-only`,
      detail: `role "${role.name}" is read-only (rule: ${r}.readOnly)`,
      hint: 'read-only roles may run SELECT, VALUES, TABLE, SHOW, EXPLAIN, transaction control, cursors and COPY … TO STDOUT',
    };
  }
  return {
    reason: 'statement_kind_denied',
    ruleId: 'builtin.statementKinds',
    sqlstate: SqlState.InsufficientPrivilege,
    what: why ?? 'is not a statement pgwarden allows',
    detail: `no rule allows ${kindInWords(kind)} statements (rule: builtin.statementKinds)`,
    hint: undefined,
  };
}

function unwrap(node: unknown): { kind: string; body: AnyNode } | undefined {
  if (node === null || typeof node !== 'object') return undefined;
  const kind = Object.keys(node)[0];
  if (kind === undefined) return undefined;
  const body = (node as AnyNode)[kind];
  if (body === null || typeof body !== 'object') return undefined;
  return { kind, body };
}

/** Kind-level rules for one statement node (recursing into EXPLAIN/PREPARE/DECLARE bodies); facts are checked once by the caller. */
function checkKind(
  kind: string,
  body: AnyNode,
  a: Analysis,
  session: SessionView,
  top: boolean,
): Denial | { effects: Effect[]; sessionDependent: boolean } {
  const role = session.role;
  const r = `roles.${role.name}`;
  const ok = (effects: Effect[] = [], sessionDependent = false) => ({ effects, sessionDependent });
  switch (kind) {
    case 'SelectStmt':
      if (a.hasInto) {
        return role.readOnly
          ? {
              ...kindDenial('CreateTableAsStmt', role),
              what: `… INTO creates a table and role "${role.name}" is read-only`,
            }
          : kindDenial('CreateTableAsStmt', role, 'with INTO creates a table, which pgwarden does not allow');
      }
      if (a.hasLocking) {
        const canLock =
          !role.readOnly &&
          role.write !== undefined &&
          role.write.kinds.includes('update') &&
          a.relations.every(
            (x) =>
              x.access !== 'read' ||
              matchesRelation(role.write?.relations ?? [], x.schema, x.name) ||
              temporaryRelation(role, x.schema),
          );
        if (!canLock) {
          return {
            reason: 'write_in_read_only',
            ruleId: `${r}.readOnly`,
            sqlstate: SqlState.InsufficientPrivilege,
            what: `with FOR UPDATE/SHARE locks rows and role "${role.name}" may not`,
            detail: role.readOnly
              ? `role "${role.name}" is read-only (rule: ${r}.readOnly)`
              : `row locks need update on every locked relation (rule: ${r}.write.relations)`,
            hint: 'remove the locking clause',
          };
        }
      }
      return ok();
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt':
      return ok(); // writes are judged with the facts
    case 'TruncateStmt':
      if (body.behavior === 'DROP_CASCADE')
        return kindDenial('TruncateStmt', role, 'CASCADE truncates relations the statement does not name');
      return ok();
    case 'CopyStmt':
      if (body.filename !== undefined || body.is_program === true) {
        return {
          reason: 'statement_kind_denied',
          ruleId: 'builtin.statementKinds',
          sqlstate: SqlState.InsufficientPrivilege,
          what: `${body.is_program === true ? 'runs a server program' : 'reads or writes a server file'}`,
          detail: 'only COPY … TO STDOUT (and FROM STDIN for writers) is allowed (rule: builtin.statementKinds)',
          hint: 'use COPY … TO STDOUT',
        };
      }
      if (body.query !== undefined) {
        const inner = unwrap(body.query);
        if (inner === undefined) return kindDenial(kind, role);
        return checkKind(inner.kind, inner.body, a, session, false);
      }
      return ok();
    case 'ExplainStmt': {
      const inner = unwrap(body.query);
      if (inner === undefined || !EXPLAINABLE.has(inner.kind)) return kindDenial(inner?.kind ?? kind, role);
      const res = checkKind(inner.kind, inner.body, a, session, false);
      if ('reason' in res) return res;
      return ok([], res.sessionDependent);
    }
    case 'PrepareStmt': {
      const inner = unwrap(body.query);
      if (inner === undefined || !PREPARABLE.has(inner.kind)) return kindDenial(inner?.kind ?? kind, role);
      const res = checkKind(inner.kind, inner.body, a, session, false);
      if ('reason' in res) return res;
      return ok(top ? [{ type: 'prepare', name: String(body.name ?? '') }] : []);
    }
    case 'ExecuteStmt': {
      const name = String(body.name ?? '');
      if (!session.preparedNames.has(name)) {
        return {
          reason: 'unknown_prepared_statement',
          ruleId: 'builtin.prepared',
          sqlstate: SqlState.InsufficientPrivilege,
          what: `runs prepared statement ${quoteIdent(name)}, which was not prepared through pgwarden`,
          detail:
            'EXECUTE may run only statements whose PREPARE passed the policy in this session (rule: builtin.prepared)',
          hint: 'PREPARE it first',
        };
      }
      return ok([], true);
    }
    case 'DeclareCursorStmt': {
      const inner = unwrap(body.query);
      if (inner === undefined || inner.kind !== 'SelectStmt') return kindDenial(inner?.kind ?? kind, role);
      const res = checkKind(inner.kind, inner.body, a, session, false);
      if ('reason' in res) return res;
      if (!top) return ok();
      const name = String(body.portalname ?? '');
      const hold = typeof body.options === 'number' && (body.options & CURSOR_OPT_HOLD) !== 0;
      if (!hold) return ok([{ type: 'declare', name }]);
      const limit = holdCursorLimit(role);
      if (limit === 0) {
        return {
          reason: 'hold_cursor_denied',
          ruleId: `${r}.holdCursors`,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `WITH HOLD keeps the cursor's whole result on the server after the transaction, and role "${role.name}" may not`,
          detail: `role "${role.name}" may have no WITH HOLD cursors (rule: ${r}.holdCursors = 0)`,
          hint: HOLD_HINT,
        };
      }
      // Depends on the session's open held cursors: never cached across sessions.
      if (openHoldCursors(session, name) >= limit) {
        return {
          reason: 'hold_cursor_limit',
          ruleId: `${r}.holdCursors`,
          sqlstate: SqlState.ProgramLimitExceeded,
          what: `WITH HOLD would open more held cursors than role "${role.name}" may have`,
          detail: `at most ${limit} WITH HOLD cursor${limit === 1 ? '' : 's'} may be open in one session (rule: ${r}.holdCursors)`,
          hint: `CLOSE a held cursor you no longer need; or ${HOLD_HINT}`,
        };
      }
      return ok([{ type: 'declare', name, hold: true }], true);
    }
    case 'FetchStmt': {
      const name = String(body.portalname ?? '');
      if (!session.cursorNames.has(name)) {
        return {
          reason: 'unknown_cursor',
          ruleId: 'builtin.cursors',
          sqlstate: SqlState.InsufficientPrivilege,
          what: `reads cursor ${quoteIdent(name)}, which was not declared through pgwarden`,
          detail: 'FETCH and MOVE may use only cursors whose DECLARE passed the policy (rule: builtin.cursors)',
          hint: 'DECLARE it first',
        };
      }
      return ok([], true);
    }
    case 'ClosePortalStmt':
      return ok([{ type: 'close', name: typeof body.portalname === 'string' ? body.portalname : null }]);
    case 'DeallocateStmt':
      return ok([
        { type: 'deallocate', name: body.isall === true || typeof body.name !== 'string' ? null : body.name },
      ]);
    case 'DiscardStmt':
      if (body.target === 'DISCARD_ALL')
        return ok([{ type: 'restamp' }, { type: 'deallocate', name: null }, { type: 'close', name: null }]);
      return ok();
    case 'VariableSetStmt': {
      const v = judgeVariableSet(body, role);
      if (!v.allow) return settingDenial(v, role, 'changes a setting pgwarden does not allow');
      return ok(v.restamp ? [{ type: 'restamp' }] : []);
    }
    case 'VariableShowStmt': {
      const name = String(body.name ?? '').toLowerCase();
      if (SHOW_DENIED.has(name)) return kindDenial(kind, role, `of ${name} reveals the server's filesystem layout`);
      // One rule with current_setting(): SHOW must not read what current_setting() may not.
      const v = judgeSettingRead(name, role);
      if (!v.allow) {
        const rule = v.rule === 'builtin' ? 'builtin.settings' : `${r}.catalog`;
        return {
          reason: 'setting_denied',
          ruleId: rule,
          sqlstate: SqlState.InsufficientPrivilege,
          what: `reads setting ${name}, which role "${role.name}" may not read`,
          detail: `${v.why} (rule: ${rule})`,
          hint: v.hint,
        };
      }
      return ok();
    }
    case 'TransactionStmt': {
      switch (body.kind) {
        case 'TRANS_STMT_BEGIN':
        case 'TRANS_STMT_START': {
          const v = judgeTransactionOptions(body.options, role);
          if (!v.allow) {
            const rule = v.rule === 'builtin' ? 'builtin.settings' : `${r}.readOnly`;
            return {
              reason: v.rule === 'builtin' ? 'setting_denied' : 'write_in_read_only',
              ruleId: rule,
              sqlstate: SqlState.InsufficientPrivilege,
              what: 'starts a READ WRITE transaction',
              detail: `${v.why} (rule: ${rule})`,
              hint: v.hint,
            };
          }
          return ok();
        }
        case 'TRANS_STMT_COMMIT':
        case 'TRANS_STMT_ROLLBACK':
        case 'TRANS_STMT_SAVEPOINT':
        case 'TRANS_STMT_RELEASE':
        case 'TRANS_STMT_ROLLBACK_TO':
          return ok();
        case 'TRANS_STMT_PREPARE':
        case 'TRANS_STMT_COMMIT_PREPARED':
        case 'TRANS_STMT_ROLLBACK_PREPARED':
          // Runs no code of its own beyond what COMMIT runs: PREPARE TRANSACTION fires the deferred triggers COMMIT would,
          // COMMIT PREPARED and ROLLBACK PREPARED only finish what was prepared (every write in it passed the policy when
          // it ran).
          if (twoPhaseAllowed(role)) return ok();
          return {
            ...kindDenial(kind, role, 'of a two-phase (prepared) transaction is not allowed'),
            ...(role.readOnly ? {} : { operatorHint: 'set twoPhase: true on the role to allow two-phase commit' }),
          };
        default:
          return kindDenial(kind, role, 'of a two-phase (prepared) transaction is not allowed');
      }
    }
    case 'UnlistenStmt':
      return ok();
    case 'ConstraintsSetStmt':
      return role.readOnly ? kindDenial(kind, role) : ok();
    default:
      return kindDenial(kind, role);
  }
}

function checkStatement(
  raw: RawStmt,
  a: Analysis,
  session: SessionView,
  catalog: CatalogSnapshot,
  ctx: FactsContext,
): StatementResult {
  const un = unwrap(raw.stmt);
  if (un === undefined) return { ok: false, denial: internalDenial('statement without a node') };
  if (UTILITY_KINDS.has(un.kind)) {
    // With deferTypes, the type names its restated queries leave to the server's analysis are the statement's own.
    const deferred = session.deferTypes === true ? (a.deferredTypes ??= []) : undefined;
    const u = checkUtility(un.kind, un.body, session.role, catalog, deferred);
    if ('reason' in u) return { ok: false, denial: u };
    return { ok: true, effects: [], rank: u.rank, ruleId: u.ruleId, sessionDependent: false };
  }
  const k = checkKind(un.kind, un.body, a, session, true);
  if ('reason' in k) return { ok: false, denial: k };
  const facts = checkFacts(a, session.role, ctx);
  if ('reason' in facts) return { ok: false, denial: facts };
  return { ok: true, effects: k.effects, rank: facts.rank, ruleId: facts.ruleId, sessionDependent: k.sessionDependent };
}

// ------------------------------------------------------------------ utility statements (docs/policy.md, "Scoped DDL and other utility statements")

/** Object types DDL may name, by the parser's ObjectType. */
const DDL_OBJECT_TYPES = new Set(['OBJECT_TABLE', 'OBJECT_INDEX', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_SEQUENCE']);

/** ALTER TABLE subcommands that change only the relation itself; owner, triggers, rules, row security, inheritance, partitions, tablespaces and replication are refused. */
const ALTER_TABLE_SUBTYPES = new Set([
  'AT_AddColumn',
  'AT_ColumnDefault',
  'AT_DropNotNull',
  'AT_SetNotNull',
  'AT_SetStatistics',
  'AT_SetOptions',
  'AT_ResetOptions',
  'AT_SetStorage',
  'AT_SetCompression',
  'AT_DropColumn',
  'AT_AddConstraint',
  'AT_ValidateConstraint',
  'AT_DropConstraint',
  'AT_AlterColumnType',
  'AT_AddIdentity',
  'AT_SetIdentity',
  'AT_DropIdentity',
  'AT_SetRelOptions',
  'AT_ResetRelOptions',
  'AT_ReplaceRelOptions',
  'AT_ClusterOn',
  'AT_DropCluster',
]);

const RENAME_TYPES = new Set([...DDL_OBJECT_TYPES, 'OBJECT_COLUMN', 'OBJECT_TABCONSTRAINT']);
/** Renames that rename a row type too (an index or a sequence has none: pg_class.reltype is 0). */
const ROW_TYPE_RENAMES = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW']);
const COMMENT_TYPES = new Set([...DDL_OBJECT_TYPES, 'OBJECT_COLUMN', 'OBJECT_TABCONSTRAINT']);

type UtilityOk = { rank: number; ruleId: string };

/** Options that name a sequence or the column owning one, wherever they appear in a DDL statement's tree. */
const SEQUENCE_NAME_OPTIONS = new Set(['sequence_name', 'owned_by']);

/** Every Constraint node of this type in a tree. */
function constraintsNamed(n: unknown, contype: string, out: AnyNode[] = []): AnyNode[] {
  if (Array.isArray(n)) {
    for (const x of n) constraintsNamed(x, contype, out);
  } else if (n !== null && typeof n === 'object') {
    const c = (n as AnyNode).Constraint;
    if (c !== undefined && c.contype === contype) out.push(c);
    for (const v of Object.values(n as AnyNode)) constraintsNamed(v, contype, out);
  }
  return out;
}

/** Every DefElem in a tree whose name is one of `names`. */
function defElemsNamed(n: unknown, names: ReadonlySet<string>, out: AnyNode[] = []): AnyNode[] {
  if (Array.isArray(n)) {
    for (const x of n) defElemsNamed(x, names, out);
  } else if (n !== null && typeof n === 'object') {
    const d = (n as AnyNode).DefElem;
    if (d !== undefined && typeof d.defname === 'string' && names.has(d.defname)) out.push(d);
    for (const v of Object.values(n as AnyNode)) defElemsNamed(v, names, out);
  }
  return out;
}

/** A name list (`[schema, name]`, `[name]`, …) of `objectParts` trailing parts after the relation: its schema and database. */
function nameListPlace(
  items: unknown,
  trailing: number,
): { schema: string | undefined; catalogName: string | undefined } | undefined {
  const names: string[] = [];
  for (const x of Array.isArray(items) ? items : []) {
    const v = (x as AnyNode)?.String?.sval;
    if (typeof v !== 'string') return undefined;
    names.push(v);
  }
  const rel = names.length - trailing;
  if (rel < 1 || rel > 3) return undefined;
  return { schema: rel >= 2 ? names[rel - 2] : undefined, catalogName: rel === 3 ? names[0] : undefined };
}

/** A DDL, maintenance, LOCK, LISTEN/NOTIFY or DO statement: its switch, the place of every object it names, and the queries its bodies amount to. */
function checkUtility(
  kind: string,
  body: AnyNode,
  role: RolePolicy,
  catalog: CatalogSnapshot,
  deferred?: DeferredType[],
): Denial | UtilityOk {
  const r = `roles.${role.name}`;
  const deny = (
    reason: string,
    rule: string,
    what: string,
    detail: string,
    hint?: string,
    operatorHint?: string,
  ): Denial => ({
    reason,
    ruleId: rule,
    sqlstate: SqlState.InsufficientPrivilege,
    what,
    detail: `${detail} (rule: ${rule})`,
    hint,
    operatorHint,
  });
  const ok = (rule: string): UtilityOk => ({ rank: ALLOW_RANK.write, ruleId: rule });
  switch (kind) {
    case 'DoStmt':
      if (role.do !== true) {
        return role.readOnly
          ? kindDenial(kind, role)
          : deny(
              'statement_kind_denied',
              `${r}.do`,
              'runs code pgwarden cannot inspect',
              `role "${role.name}" may not run DO blocks`,
              'write it as plain SQL statements, or request a token for a role that may run DO blocks',
              'set do: true on the role (it lets the role do anything the database role can)',
            );
      }
      return ok(`${r}.do`);
    case 'ListenStmt':
    case 'NotifyStmt': {
      const channel = String(body.conditionname ?? '');
      const which = kind === 'ListenStmt' ? 'listen' : 'notify';
      if (kind === 'NotifyStmt' && role.readOnly) return kindDenial(kind, role);
      const patterns = role.channels?.[which];
      if (!channelAllowed(patterns, channel)) {
        return deny(
          'channel_denied',
          `${r}.channels.${which}`,
          `${which === 'listen' ? 'listens on' : 'notifies'} channel ${quoteIdent(channel)}, which role "${role.name}" may not use`,
          `${quoteIdent(channel)} is not in ${r}.channels.${which}`,
          listHint(
            `channels this role may ${which} on`,
            (patterns ?? []).map((c) => `${c.name}${c.prefix ? '*' : ''}`),
          ),
        );
      }
      return ok(`${r}.channels.${which}`);
    }
    case 'LockStmt':
      if (role.lock !== true && role.readOnly) return kindDenial(kind, role);
      if (role.lock !== true)
        return deny(
          'statement_kind_denied',
          `${r}.lock`,
          `is not allowed for role "${role.name}"`,
          `role "${role.name}" has no lock: true`,
          'request a token for a role that may take locks',
          'set lock: true on the role',
        );
      if (role.readOnly && body.mode !== 1)
        return deny(
          'write_in_read_only',
          `${r}.readOnly`,
          `takes a lock stronger than ACCESS SHARE and role "${role.name}" is read-only`,
          `read-only roles may LOCK only IN ACCESS SHARE MODE`,
          'use LOCK … IN ACCESS SHARE MODE',
        );
      return restatedChecks(kind, body, role, catalog, `${r}.lock`, deferred);
    case 'VacuumStmt': {
      const opts: AnyNode[] = Array.isArray(body.options) ? body.options : [];
      const names = opts.map((o) => String(o?.DefElem?.defname ?? '').toLowerCase());
      const needs: ('analyze' | 'vacuum')[] = [];
      if (body.is_vacuumcmd === true) needs.push('vacuum');
      if (body.is_vacuumcmd !== true || names.includes('analyze')) needs.push('analyze');
      for (const n of needs) {
        if (!(role.maintenance ?? []).includes(n)) {
          return role.readOnly
            ? kindDenial(kind, role)
            : deny(
                'statement_kind_denied',
                `${r}.maintenance`,
                `is not allowed for role "${role.name}"`,
                `${n} is not in ${r}.maintenance`,
                listHint('maintenance this role may run', [...(role.maintenance ?? [])]),
              );
        }
      }
      if (names.includes('full'))
        return deny(
          'statement_kind_denied',
          'builtin.statementKinds',
          'FULL rewrites the table under an exclusive lock, which pgwarden does not allow',
          'VACUUM FULL is never allowed',
        );
      return restatedChecks(kind, body, role, catalog, `${r}.maintenance`, deferred);
    }
  }
  // DDL.
  let ddlKind: DdlKind;
  /** A second kind the statement needs too: dropping a type or schema needs drop and the kind that makes one. */
  let alsoKind: DdlKind | undefined;
  const places: { schema: string | undefined; temporary: boolean; catalogName?: string | undefined }[] = [];
  const rvPlace = (rv: AnyNode | undefined, creating: boolean) => {
    if (rv === undefined || typeof rv.relname !== 'string') return false;
    places.push({
      schema: typeof rv.schemaname === 'string' ? rv.schemaname : undefined,
      temporary: creating && rv.relpersistence === 't',
      catalogName: typeof rv.catalogname === 'string' ? rv.catalogname : undefined,
    });
    return true;
  };
  const cascade = (b: unknown) => b === 'DROP_CASCADE';
  /** Schemas the statement creates or drops: each must be one of ddl.schemas itself. */
  const schemaNames: string[] = [];
  /** A refusal that depends on the objects being placed first (so a name outside ddl.schemas is reported as such). */
  let late: Denial | undefined;
  /** The relation whose children the statement also changes (unless ONLY), or always (DROP). */
  const recursive: { rv: AnyNode; always: boolean }[] = [];
  /** Existing relations the statement changes (not ones it creates): a token narrowing bounds them (narrowedTarget). */
  const targets: AnyNode[] = [];
  const refuse = (what: string, why: string): Denial => deny('statement_kind_denied', 'builtin.ddl', what, why);
  /**
   * Type names the statement makes or renames to, with where each lands: a table, view or composite brings its row
   * type, an enum, domain or range a type of its name (a range also its multirange), each also an array type `_name`.
   */
  const newTypes: { names: string[]; schema: string | undefined; temporary: boolean; existing: boolean }[] = [];
  const newType = (name: unknown, schema: unknown, temporary: boolean, existing: boolean, more: string[] = []) => {
    if (typeof name !== 'string') return;
    newTypes.push({
      names: [name, `_${name}`, ...more],
      schema: typeof schema === 'string' ? schema : undefined,
      temporary,
      existing,
    });
  };
  /**
   * Where PostgreSQL looks up an unqualified type name: pg_temp first (once the session has made a temporary object,
   * unless the path names it), pg_catalog next (unless the path names it), then the path. pgwarden's analysis, and the
   * server's on its own connection, never see the session's pg_temp, and know only the snapshot's types: a new type
   * that PostgreSQL would find before a type of the same name the snapshot knows further along would stand in for it,
   * while pgwarden goes on judging the statement as using the other one (docs/policy.md, "Types, domains and schemas").
   */
  const typePath = role.searchPath.includes('pg_catalog') ? [...role.searchPath] : ['pg_catalog', ...role.searchPath];
  const typeOrder = typePath.includes('pg_temp') ? typePath : ['pg_temp', ...typePath];
  /** Whether an unqualified range subtype is pg_catalog's for PostgreSQL too (nothing but pg_temp comes before it). */
  const catalogFirst = typeOrder.filter((x) => x !== 'pg_temp')[0] === 'pg_catalog';
  const shadowedBy = (t: (typeof newTypes)[number]): { name: string; schema: string } | undefined => {
    const types = catalog.types;
    if (types === undefined) return undefined;
    // Where on the path the new type lands: an unqualified existing object may be the session's temporary one.
    const lands =
      t.temporary || t.schema === 'pg_temp'
        ? ['pg_temp']
        : t.schema !== undefined
          ? [t.schema]
          : [...(t.existing && role.ddl?.temporary === true ? ['pg_temp'] : []), role.searchPath[0] ?? ''];
    // pg_temp not on the path is searched first (-1); a schema not on the path is never searched for a bare name.
    const rankOf = (x: string) => (x === 'pg_temp' || typePath.includes(x) ? typePath.indexOf(x) : Infinity);
    const rank = Math.min(...lands.map(rankOf));
    if (rank === Infinity) return undefined;
    for (const schema of typePath.slice(rank + 1)) {
      if (schema === 'pg_temp') continue;
      for (const name of t.names) {
        const known = types.get(`${schema}.${name}`);
        // A user table's row type stands aside: pgwarden judges `NULL::t` as a read of that table, a stricter verdict
        // than one about the new type, and a temporary table named like a table is ordinary practice.
        if (known !== undefined && (schema === 'pg_catalog' || known.relation === undefined)) return { name, schema };
      }
    }
    return undefined;
  };
  switch (kind) {
    case 'CreateStmt':
      ddlKind = 'create_table';
      if (
        (body.inhRelations?.length ?? 0) > 0 ||
        body.partbound !== undefined ||
        body.partspec !== undefined ||
        body.ofTypename !== undefined
      ) {
        return refuse(
          'with INHERITS, PARTITION, or OF is not allowed',
          'inheritance and partitioning tie the table to relations outside its own definition',
        );
      }
      if (!rvPlace(body.relation, true)) return internalDenial('CREATE TABLE without a name');
      newType(body.relation.relname, body.relation.schemaname, body.relation.relpersistence === 't', false);
      break;
    case 'CreateTableAsStmt':
      ddlKind = body.objtype === 'OBJECT_MATVIEW' ? 'create_materialized_view' : 'create_table';
      if (body.query?.SelectStmt === undefined)
        return refuse('of anything but a query is not allowed', 'CREATE TABLE AS EXECUTE hides the query being stored');
      if (!rvPlace(body.into?.rel, true)) return internalDenial('CREATE TABLE AS without a name');
      newType(body.into.rel.relname, body.into.rel.schemaname, body.into.rel.relpersistence === 't', false);
      break;
    case 'ViewStmt': {
      ddlKind = 'create_view';
      // A view redirects reads and (auto-updatable) writes to its base relations. Made in pg_temp, or in a schema on the
      // search_path, it could stand in for another relation of the same name in a statement of the same transaction,
      // which the server's analysis (on its own connection) resolves to the other one.
      const rv: AnyNode | undefined = body.view;
      if (rv?.relpersistence === 't' || rv?.schemaname === undefined || rv.schemaname === 'pg_temp')
        return refuse(
          'must name its schema and may not be temporary',
          'a temporary or unqualified view could stand in for a relation of the same name',
        );
      const onPath = role.ddl?.schemas.find((x) => role.searchPath.includes(x));
      if (onPath !== undefined)
        return refuse(
          "is not allowed while a ddl schema is on the role's search_path",
          `${quoteIdent(onPath)} is both in ${r}.ddl.schemas and ${r}.searchPath, so a view made there could stand in for a relation of the same name`,
        );
      if (!rvPlace(rv, true)) return internalDenial('CREATE VIEW without a name');
      newType(rv.relname, rv.schemaname, false, false);
      // OR REPLACE of a view that exists changes it.
      if (body.replace === true && resolveRelation(rv, role, catalog) !== undefined) targets.push(rv);
      break;
    }
    case 'RefreshMatViewStmt':
      ddlKind = 'create_materialized_view';
      if (!rvPlace(body.relation, false)) return internalDenial('REFRESH without a name');
      targets.push(body.relation);
      break;
    case 'IndexStmt':
      ddlKind = 'create_index';
      if (!rvPlace(body.relation, false)) return internalDenial('CREATE INDEX without a table');
      targets.push(body.relation);
      recursive.push({ rv: body.relation, always: false });
      for (const p of [...(body.indexParams ?? []), ...(body.indexIncludingParams ?? [])]) {
        const opclass = stringsOf(p?.IndexElem?.opclass);
        if (opclass.length > 0 && !(opclass.length === 2 && opclass[0] === 'pg_catalog'))
          return refuse(
            'names an operator class outside pg_catalog',
            'operator classes outside pg_catalog run user code; write pg_catalog.<opclass> for a built-in one',
          );
      }
      break;
    case 'CreateSeqStmt':
    case 'AlterSeqStmt':
      ddlKind = kind === 'CreateSeqStmt' ? 'create_sequence' : 'alter_table';
      if (!rvPlace(body.sequence, kind === 'CreateSeqStmt')) return internalDenial('sequence without a name');
      if (kind === 'AlterSeqStmt') targets.push(body.sequence);
      for (const o of Array.isArray(body.options) ? body.options : []) {
        if (o?.DefElem?.defname !== 'owned_by') continue;
        const list: unknown[] = o.DefElem.arg?.List?.items ?? [];
        const owned = nameListPlace(list, 1);
        if (list.length === 1 && stringsOf(list)[0] === 'none') continue;
        if (owned === undefined) return internalDenial('OWNED BY without a column');
        places.push({ schema: owned.schema, temporary: false, catalogName: owned.catalogName });
      }
      break;
    case 'AlterTableStmt':
      ddlKind = 'alter_table';
      if (!DDL_OBJECT_TYPES.has(String(body.objtype)))
        return refuse(
          'of this kind of object is not allowed',
          `${String(body.objtype)} is not a table, index, view, materialized view or sequence`,
        );
      for (const c of Array.isArray(body.cmds) ? body.cmds : []) {
        const cmd: AnyNode | undefined = c?.AlterTableCmd;
        if (cmd === undefined || !ALTER_TABLE_SUBTYPES.has(String(cmd.subtype))) {
          return refuse(
            `${String(cmd?.subtype ?? 'this form').replace(/^AT_/, '')} is not allowed`,
            "only changes to the relation's own columns, constraints and storage are allowed: not its owner, triggers, rules, row security, inheritance, partitions or tablespace",
          );
        }
        if (cascade(cmd.behavior))
          return refuse('… CASCADE is not allowed', 'CASCADE drops dependent objects in any schema, whoever owns them');
        if (cmd.subtype === 'AT_AddConstraint' && cmd.def?.Constraint?.contype === 'CONSTR_EXCLUSION')
          return refuse('with an exclusion constraint is not allowed', 'exclusion operators run user code');
      }
      if (!rvPlace(body.relation, false)) return internalDenial('ALTER TABLE without a name');
      targets.push(body.relation);
      recursive.push({ rv: body.relation, always: false });
      break;
    case 'RenameStmt': {
      ddlKind = 'alter_table';
      if (body.renameType === 'OBJECT_TYPE' || body.renameType === 'OBJECT_DOMAIN') {
        // ALTER TYPE/DOMAIN … RENAME TO: the type stays in its schema (PostgreSQL refuses it for a table's row type).
        ddlKind = 'alter_type';
        const p = nameListPlace(body.object?.List?.items, 0);
        if (p === undefined) return internalDenial('ALTER TYPE of an unreadable name');
        places.push({ schema: p.schema, temporary: false, catalogName: p.catalogName });
        newType(body.newname, p.schema, false, true);
        break;
      }
      if (!RENAME_TYPES.has(String(body.renameType)))
        return refuse(
          'of this kind of object is not allowed',
          `only tables, indexes, views, materialized views, sequences, their columns and constraints can be renamed`,
        );
      if (!rvPlace(body.relation, false))
        return refuse('of this object is not allowed', 'the object has no relation name');
      // A relation's row type takes the relation's new name.
      if (ROW_TYPE_RENAMES.has(String(body.renameType)))
        newType(body.newname, body.relation.schemaname, body.relation.relpersistence === 't', true);
      targets.push(body.relation);
      if (body.renameType === 'OBJECT_COLUMN' || body.renameType === 'OBJECT_TABCONSTRAINT')
        recursive.push({ rv: body.relation, always: false });
      // The policy names relations and columns: a rename must not move data from under one rule to another.
      const rv: AnyNode = body.relation;
      const keys = (typeof rv.schemaname === 'string' ? [rv.schemaname] : role.searchPath).map((sch) => ({
        schema: sch,
        name: String(rv.relname),
      }));
      // allowedColumns (a token narrowing) likewise: a rename could give a column outside the list a listed name.
      const limited = (key: string) => role.deniedColumns.has(key) || role.allowedColumns?.has(key) === true;
      if (body.renameType === 'OBJECT_COLUMN' && keys.some((k) => limited(`${k.schema}.${k.name}`))) {
        late = deny(
          'column_denied',
          `${r}.deniedColumns`,
          'renames a column of a relation with denied columns',
          'deniedColumns name columns: renaming one would let its values be read under another name',
          undefined,
        );
      }
      if (DDL_OBJECT_TYPES.has(String(body.renameType)) && typeof body.newname === 'string') {
        const same = (ps: readonly RelationPattern[]) =>
          keys.every((k) => matchesRelation(ps, k.schema, k.name) === matchesRelation(ps, k.schema, body.newname));
        const denied = keys.some((k) => limited(`${k.schema}.${k.name}`) || limited(`${k.schema}.${body.newname}`));
        if (denied || !same(role.relations) || !same(role.write?.relations ?? [])) {
          late = deny(
            'relation_not_allowed',
            `${r}.relations`,
            `renames a relation to ${quoteIdent(body.newname)}, which the policy treats differently`,
            'the old and new names must be allowed alike by relations and write.relations, with no denied columns under either',
            'use a schema-wide pattern (schema.*) for relations the role renames',
          );
        }
      }
      break;
    }
    case 'DropStmt':
      ddlKind = 'drop';
      if (body.removeType === 'OBJECT_TYPE' || body.removeType === 'OBJECT_DOMAIN') {
        alsoKind = 'create_type';
        if (cascade(body.behavior))
          return refuse('… CASCADE is not allowed', 'CASCADE drops dependent objects in any schema, whoever owns them');
        for (const o of Array.isArray(body.objects) ? body.objects : []) {
          const p = nameListPlace(o?.TypeName?.names, 0);
          if (p === undefined) return internalDenial('DROP TYPE of an unreadable name');
          places.push({ schema: p.schema, temporary: false, catalogName: p.catalogName });
        }
        break;
      }
      if (body.removeType === 'OBJECT_SCHEMA') {
        alsoKind = 'create_schema';
        // CASCADE would drop what depends on the schema's objects elsewhere (a view, a column of one of its types).
        if (cascade(body.behavior))
          return refuse(
            '… CASCADE is not allowed',
            'CASCADE drops dependent objects in any schema, whoever owns them; drop the objects in the schema first',
          );
        for (const o of Array.isArray(body.objects) ? body.objects : []) {
          const name = (o as AnyNode)?.String?.sval;
          if (typeof name !== 'string') return internalDenial('DROP SCHEMA of an unreadable name');
          schemaNames.push(name);
        }
        break;
      }
      if (!DDL_OBJECT_TYPES.has(String(body.removeType)))
        return refuse(
          'of this kind of object is not allowed',
          'only tables, indexes, views, materialized views and sequences can be dropped',
        );
      if (cascade(body.behavior))
        return refuse('… CASCADE is not allowed', 'CASCADE drops dependent objects in any schema, whoever owns them');
      for (const o of Array.isArray(body.objects) ? body.objects : []) {
        const p = nameListPlace(o?.List?.items, 0);
        if (p === undefined) return internalDenial('DROP of an unreadable name');
        places.push({ schema: p.schema, temporary: false, catalogName: p.catalogName });
        const names = stringsOf(o?.List?.items);
        recursive.push({ rv: { schemaname: p.schema, relname: names[names.length - 1] }, always: true });
        targets.push({ schemaname: p.schema, relname: names[names.length - 1] });
      }
      break;
    case 'CommentStmt': {
      ddlKind = 'comment';
      if (!COMMENT_TYPES.has(String(body.objtype)))
        return refuse(
          'on this kind of object is not allowed',
          'only tables, indexes, views, materialized views, sequences, columns and table constraints',
        );
      const p = nameListPlace(
        body.object?.List?.items,
        body.objtype === 'OBJECT_COLUMN' || body.objtype === 'OBJECT_TABCONSTRAINT' ? 1 : 0,
      );
      if (p === undefined) return internalDenial('COMMENT on an unreadable name');
      places.push({ schema: p.schema, temporary: false, catalogName: p.catalogName });
      const items = stringsOf(body.object?.List?.items);
      const trailing = body.objtype === 'OBJECT_COLUMN' || body.objtype === 'OBJECT_TABCONSTRAINT' ? 1 : 0;
      targets.push({ schemaname: p.schema, relname: items[items.length - 1 - trailing] });
      break;
    }
    case 'CreateEnumStmt':
    case 'CreateDomainStmt':
    case 'CreateRangeStmt': {
      ddlKind = 'create_type';
      const list = kind === 'CreateDomainStmt' ? body.domainname : body.typeName;
      const p = nameListPlace(list, 0);
      if (p === undefined) return internalDenial('CREATE TYPE of an unreadable name');
      places.push({ schema: p.schema, temporary: false, catalogName: p.catalogName });
      {
        const name = stringsOf(list).at(-1);
        // A range also makes its multirange, named by PostgreSQL's makeMultirangeTypeName.
        const multi =
          kind !== 'CreateRangeStmt' || name === undefined
            ? []
            : [name.includes('range') ? name.replace('range', 'multirange') : `${name}_multirange`];
        newType(name, p.schema, false, false, multi);
      }
      if (kind === 'CreateRangeStmt') {
        // Comparing range bounds calls the subtype's btree operators: pg_catalog's only (policy/ddl.ts refuses the
        // options that would name other functions).
        const sub = (Array.isArray(body.params) ? body.params : [])
          .map((d: AnyNode) => d?.DefElem?.arg?.TypeName)
          .find((t: AnyNode | undefined) => t !== undefined);
        const names = stringsOf(sub?.names);
        // Unqualified, pg_catalog's type only where PostgreSQL looks there first (a searchPath naming pg_catalog after
        // another schema would find a type of that name there first, one the snapshot may not know yet).
        const builtIn =
          names.length === 2
            ? names[0] === 'pg_catalog'
            : names.length === 1 && catalogFirst && catalog.types?.get(`pg_catalog.${names[0]}`) !== undefined;
        if (!builtIn || (sub?.arrayBounds?.length ?? 0) > 0)
          return refuse(
            'with a subtype outside pg_catalog is not allowed',
            "a range compares its bounds with the subtype's operators, which run user code for a type outside pg_catalog",
          );
      }
      break;
    }
    case 'CompositeTypeStmt':
      ddlKind = 'create_type';
      if (!rvPlace(body.typevar, false)) return internalDenial('CREATE TYPE without a name');
      newType(body.typevar?.relname, body.typevar?.schemaname, false, false);
      break;
    case 'AlterEnumStmt': {
      ddlKind = 'alter_type';
      const p = nameListPlace(body.typeName, 0);
      if (p === undefined) return internalDenial('ALTER TYPE of an unreadable name');
      places.push({ schema: p.schema, temporary: false, catalogName: p.catalogName });
      break;
    }
    case 'CreateSchemaStmt':
      ddlKind = 'create_schema';
      if (body.authrole !== undefined)
        return refuse(
          'with AUTHORIZATION is not allowed',
          'AUTHORIZATION makes another role own the schema and everything created in it',
        );
      if ((body.schemaElts?.length ?? 0) > 0)
        return refuse(
          'with schema elements is not allowed',
          'create the schema, then its objects as separate statements (each is decided on its own)',
        );
      if (typeof body.schemaname !== 'string') return internalDenial('CREATE SCHEMA without a name');
      schemaNames.push(body.schemaname);
      break;
    default:
      return kindDenial(kind, role);
  }
  // Sequences named inside other statements: an identity column's SEQUENCE NAME is created where it says (unqualified,
  // beside its table), and OWNED BY ties a sequence to another table's column.
  for (const d of defElemsNamed(body, SEQUENCE_NAME_OPTIONS)) {
    const items: unknown[] = d.arg?.List?.items ?? [];
    if (d.defname === 'owned_by' && items.length === 1 && stringsOf(items)[0] === 'none') continue;
    const p = nameListPlace(items, d.defname === 'owned_by' ? 1 : 0);
    if (p === undefined) return internalDenial(`${String(d.defname)} without a readable name`);
    if (d.defname === 'sequence_name' && p.schema === undefined && p.catalogName === undefined) continue;
    places.push({ schema: p.schema, temporary: false, catalogName: p.catalogName });
  }
  if (role.ddl === undefined) {
    if (role.readOnly) return kindDenial(kind, role);
    return deny(
      'ddl_denied',
      `${r}.ddl`,
      `is DDL and role "${role.name}" may run none`,
      `role "${role.name}" has no ddl section`,
      'request a token for a role that may run DDL',
      'add ddl: { kinds: [...], schemas: [...] } to the role',
    );
  }
  for (const k of alsoKind === undefined ? [ddlKind] : [ddlKind, alsoKind]) {
    if (!role.ddl.kinds.includes(k)) {
      return deny(
        'ddl_denied',
        `${r}.ddl.kinds`,
        `is DDL of kind ${k}, which role "${role.name}" may not run`,
        `${k} is not in ${r}.ddl.kinds`,
        listHint('DDL this role may run', [...role.ddl.kinds]),
      );
    }
  }
  for (const p of places) {
    const placed = placeObject(p.schema, p.temporary, role, catalog, p.catalogName);
    if (!placed.ok) {
      const temp = p.temporary || p.schema === 'pg_temp';
      return deny(
        'ddl_denied',
        `${r}.ddl.${temp ? 'temporary' : 'schemas'}`,
        placed.why,
        temp
          ? `temporary objects need ${r}.ddl.temporary: true`
          : `objects must be in ${r}.ddl.schemas${role.ddl.temporary ? ' or temporary' : ''}`,
        placed.hint,
      );
    }
  }
  for (const name of schemaNames) {
    if (!role.ddl.schemas.includes(name))
      return deny(
        'ddl_denied',
        `${r}.ddl.schemas`,
        `creates or drops schema ${quoteIdent(name)}, which is not in ddl.schemas`,
        `a schema the role creates or drops must be in ${r}.ddl.schemas`,
        `schemas this role may change: ${role.ddl.schemas.map(quoteIdent).join(', ') || 'none'}`,
      );
  }
  for (const t of newTypes) {
    const hit = shadowedBy(t);
    if (hit !== undefined)
      return refuse(
        `makes a type ${quoteIdent(t.names[0] ?? '')} that would stand in for ${quoteIdent(hit.schema)}.${quoteIdent(hit.name)}`,
        `PostgreSQL looks up an unqualified type name in ${t.temporary || t.schema === 'pg_temp' ? "the session's pg_temp first" : 'that schema before'} ${quoteIdent(hit.schema)} (search order ${typeOrder.map(quoteIdent).join(', ')}), while pgwarden's analysis would go on resolving it to the type it knows; choose another name`,
      );
  }
  if (late !== undefined) return late;
  // A token narrowing bounds everything the token touches (policy/narrow.ts): DDL that changes or drops an existing
  // relation needs it among the narrowed write relations, as maintenance and LOCK beyond ACCESS SHARE do. Without
  // this, a token narrowed to one table could ALTER, rename or DROP every other table of the role's ddl.schemas.
  if (role.narrowing !== undefined)
    for (const rv of targets) {
      const outside = narrowedTarget(rv, role, catalog);
      if (outside !== undefined)
        return deny(
          'relation_not_allowed',
          `${r}.narrowing.relations`,
          `changes relation ${outside}, which the token's narrowing does not let it write`,
          `DDL on an existing relation needs it in ${r}.write.relations as narrowed by the token (claim pgwarden_narrow)`,
          'request a token whose narrowing lists the relation in relations and write.relations',
        );
    }
  // DDL on a parent reaches its inheritance children and partitions, which may lie in any schema: ALTER TABLE (and a
  // column or constraint RENAME) without ONLY changes them, CREATE INDEX without ONLY indexes every partition (in the
  // partition's schema), DROP of a partitioned table drops its partitions.
  for (const { rv, always } of recursive) {
    const parent = resolveRelation(rv, role, catalog);
    if (parent !== undefined && (parent.kind === 'p' || parent.hasChildren === true) && (always || rv.inh !== false)) {
      return refuse(
        `reaches the inheritance children or partitions of ${displayRel(relationKey(parent.schema, parent.name))}, which may lie outside ddl.schemas`,
        always
          ? 'dropping a table drops its partitions, in any schema'
          : 'without ONLY, PostgreSQL applies it to every child and partition, in any schema; write ONLY where PostgreSQL allows it',
      );
    }
  }
  const restated = restatedChecks(kind, body, role, catalog, `${r}.ddl`, deferred);
  if ('reason' in restated) return restated;
  // A foreign key adds triggers to the table it references, takes a lock on it, and from then on refuses deletes and key
  // updates there by anyone while a row refers to them: a change to that table, which must be one the role may change
  // (in ddl.schemas) or write.
  for (const c of constraintsNamed(body, 'CONSTR_FOREIGN')) {
    const pk: AnyNode | undefined = c.pktable;
    if (pk === undefined || typeof pk.relname !== 'string')
      return internalDenial('a foreign key without a referenced table');
    // A new table referencing itself changes only itself, which was placed above.
    if (kind === 'CreateStmt' && referencesItself(pk, body.relation)) continue;
    const schema = typeof pk.schemaname === 'string' ? pk.schemaname : undefined;
    if (placeObject(schema, false, role, catalog, typeof pk.catalogname === 'string' ? pk.catalogname : undefined).ok)
      continue;
    const target = schema !== undefined ? { schema, name: pk.relname } : resolveRelation(pk, role, catalog);
    if (
      target !== undefined &&
      !role.readOnly &&
      matchesRelation(role.write?.relations ?? [], target.schema, target.name)
    )
      continue;
    const shown = target !== undefined ? displayRel(relationKey(target.schema, target.name)) : quoteIdent(pk.relname);
    return deny(
      'relation_not_allowed',
      `${r}.write.relations`,
      `references ${shown}, which role "${role.name}" may neither change nor write`,
      `a foreign key adds triggers to ${shown} and blocks deletes and key updates there`,
      'reference a relation in ddl.schemas or in write.relations',
    );
  }
  return restated;
}

/**
 * The queries a utility statement amounts to (policy/ddl.ts), judged by pgwarden's own analysis: reads as reads, named
 * relations (LOCK, maintenance) by what they need. A relation pgwarden's snapshot does not know yet is left to the
 * server's analysis when it lies in a schema the role may change (the role may have just created it); any other is denied.
 */
function restatedChecks(
  kind: string,
  body: AnyNode,
  role: RolePolicy,
  catalog: CatalogSnapshot,
  rule: string,
  deferred?: DeferredType[],
): Denial | UtilityOk {
  const planned = utilityQueries(kind, body);
  if (!planned.ok)
    return {
      reason: 'statement_kind_denied',
      ruleId: 'builtin.ddl',
      sqlstate: SqlState.InsufficientPrivilege,
      what: 'cannot be analysed by pgwarden',
      detail: `${planned.why} (rule: builtin.ddl)`,
      hint: 'simplify the statement',
    };
  for (const q of planned.queries) {
    const parsed = parseStatements(q.text);
    const stmt = parsed.ok && parsed.stmts.length === 1 ? (parsed.stmts[0]?.stmt as AnyNode | undefined) : undefined;
    if (stmt === undefined) return internalDenial('a restated query did not parse');
    // `deferred`: a type name the snapshot lacks, where the session may have made it, is left to the server's analysis
    // of this restated query on the session's own connection (SessionView.deferTypes).
    const qa = analyzeStatement(stmt, catalog, role, deferred === undefined ? {} : { deferTypes: true });
    if (qa.deferredTypes !== undefined) deferred?.push(...qa.deferredTypes);
    // Row locks (FOR UPDATE/SHARE) in a view or CTAS body would be taken on relations the role may only read, and
    // SELECT … INTO inside one would create a table nowhere placed.
    if (qa.hasLocking || qa.hasInto)
      return {
        reason: 'statement_kind_denied',
        ruleId: 'builtin.ddl',
        sqlstate: SqlState.InsufficientPrivilege,
        what: `has a ${qa.hasInto ? 'SELECT … INTO' : 'FOR UPDATE/SHARE'} in its query`,
        detail: 'a body or expression may only read (rule: builtin.ddl)',
        hint: qa.hasInto ? undefined : 'remove the locking clause',
      };
    // Unresolved names: a problem inside the role's relations (undefined_relation), an absent use outside them.
    const problems = qa.problems.filter(
      (p) =>
        !((p.code === 'unknown_relation' || p.code === 'undefined_relation') && ownObject(p.subject, role, catalog)),
    );
    const relations = qa.relations.filter(
      (u) => !(u.absent === true && ownObject((u.written ?? [u.key]).join('.'), role, catalog)),
    );
    const facts = { ...qa, problems, relations };
    // What a stored expression or view body calls runs later, in other sessions' statements, under their timeouts:
    // judged as if the role had none, so a sleep (TIMEOUT_BOUNDED) is never stored.
    const later: RolePolicy = { ...role, statementTimeout: undefined };
    // Nothing is bound to a utility statement's expressions: a parameter channel has no value to check.
    if (qa.functions.some((f) => f.channelParam !== undefined))
      return {
        reason: 'channel_denied',
        ruleId: `roles.${role.name}.channels.notify`,
        sqlstate: SqlState.InsufficientPrivilege,
        what: 'calls pg_notify with a parameter channel in a stored expression',
        detail: `a stored expression's channel must be a string constant (rule: roles.${role.name}.channels.notify)`,
        hint: undefined,
      };
    const v = q.named !== undefined ? checkNamed(facts, role, q.named) : checkFacts(facts, later);
    if ('reason' in v) return v;
  }
  return { rank: ALLOW_RANK.write, ruleId: rule };
}

/**
 * The snapshot's relation a RangeVar names: qualified, or the first schema of the role's pinned search_path that has it
 * (pg_catalog, searched first, holds nothing the role's DDL reaches). Undefined when pgwarden does not know it.
 */
function resolveRelation(rv: AnyNode, role: RolePolicy, catalog: CatalogSnapshot): CatalogRelation | undefined {
  if (typeof rv.relname !== 'string') return undefined;
  if (typeof rv.schemaname === 'string') return catalog.relations.get(relationKey(rv.schemaname, rv.relname));
  for (const schema of role.searchPath) {
    const r = catalog.relations.get(relationKey(schema, rv.relname));
    if (r !== undefined) return r;
  }
  return undefined;
}

/**
 * The display name of `rv` when a narrowed role may not change it: resolved like the statement would resolve it (an
 * unqualified name that pgwarden does not know is judged under every schema of the search_path), and allowed when the
 * narrowed write relations match it or it is one of the session's temporary relations. Undefined: allowed.
 */
function narrowedTarget(rv: AnyNode, role: RolePolicy, catalog: CatalogSnapshot): string | undefined {
  if (typeof rv.relname !== 'string') return undefined;
  const name = rv.relname;
  const known = resolveRelation(rv, role, catalog);
  const candidates =
    known !== undefined ? [known.schema] : typeof rv.schemaname === 'string' ? [rv.schemaname] : role.searchPath;
  const writable = role.readOnly ? [] : (role.write?.relations ?? []);
  for (const schema of candidates) {
    if (temporaryRelation(role, schema)) continue;
    if (!matchesRelation(writable, schema, name)) return displayRel(relationKey(schema, name));
  }
  return undefined;
}

/** An unresolved relation name that lies in a schema the role may change (or its temporary schema). */
function ownObject(display: string, role: RolePolicy, catalog: CatalogSnapshot): boolean {
  if (role.ddl === undefined || /["]/.test(display)) return false;
  const parts = display.split('.');
  if (parts.length > 2) return false;
  return placeObject(parts.length === 2 ? parts[0] : undefined, false, role, catalog).ok;
}

/** Relations a LOCK or ANALYZE/VACUUM names: writable, or (ACCESS SHARE) readable. System relations never. Exported for the server's analysis. */
export function checkNamed(a: Analysis, role: RolePolicy, need: NamedNeed): Denial | { rank: number; ruleId: string } {
  const r = `roles.${role.name}`;
  const base = checkFacts({ ...a, relations: [], columns: [] }, role);
  if ('reason' in base) return base;
  for (const rel of a.relations) {
    if (temporaryRelation(role, rel.schema)) continue;
    const writable = !role.readOnly && matchesRelation(role.write?.relations ?? [], rel.schema, rel.name);
    const readable = matchesRelation(role.relations, rel.schema, rel.name);
    // LOCK on a view locks every relation its query reads, in the same mode.
    const view = rel.relation?.kind === 'v' && need === 'writable';
    if (!isSystemRelation(rel.schema) && !view && (writable || (need === 'readable' && readable))) continue;
    return {
      reason: 'relation_not_allowed',
      ruleId: `${r}.write.relations`,
      sqlstate: SqlState.InsufficientPrivilege,
      what: `names relation ${displayRel(rel.key)}, which role "${role.name}" may not ${need === 'readable' ? 'read' : 'write'}`,
      detail: `${need === 'readable' ? 'ACCESS SHARE locks need a readable or writable relation' : 'the relation must be in write.relations'} (rule: ${r}.write.relations)`,
      hint: listHint('writable relations', (role.write?.relations ?? []).map(patternText)),
    };
  }
  return { rank: ALLOW_RANK.write, ruleId: `${r}.write.relations` };
}

function internalDenial(why: string): Denial {
  return {
    reason: 'internal',
    ruleId: undefined,
    sqlstate: SqlState.InsufficientPrivilege,
    what: 'could not be evaluated',
    detail: why,
    hint: undefined,
  };
}

/**
 * `message` replaces the "permission denied by pgwarden: …" text where PostgreSQL itself would refuse the
 * statement with a message of its own, which clients and drivers match on (42601 for several statements in a Parse).
 */
export function toDeny(kind: string | undefined, d: Denial, statements: StatementSummary[], message?: string): Deny {
  const subject = kind === undefined ? 'statement' : kindInWords(kind);
  return {
    allow: false,
    ruleId: d.ruleId,
    sqlstate: d.sqlstate,
    message: message ?? d.message ?? `permission denied by pgwarden: ${subject} ${d.what}`.replace(/\s+$/, ''),
    detail: d.detail,
    hint: d.hint,
    ...(d.operatorHint === undefined ? {} : { operatorHint: d.operatorHint }),
    reason: d.reason,
    statements,
  };
}

// ------------------------------------------------------------------ entry points

/**
 * Decides one simple Query ('simple') or one Parse message ('parse'). Pure and synchronous: the same
 * inputs give the same decision, and any internal failure is a denial with reason 'internal'.
 */
export function evaluate(
  sql: string,
  mode: 'simple' | 'parse',
  session: SessionView,
  catalog: CatalogSnapshot,
  policyVersion?: number,
): Decision {
  return evaluateWithFacts(sql, mode, session, catalog, policyVersion).decision;
}

/** evaluate() plus the facts the decision cache needs. */
export function evaluateWithFacts(
  sql: string,
  mode: 'simple' | 'parse',
  session: SessionView,
  catalog: CatalogSnapshot,
  _policyVersion?: number,
): EvaluationFacts {
  try {
    // pgwarden.scope / pgwarden.session / SHOW pgwarden.<name>: the rewritten text is what is decided and run.
    const scoped = rewriteScope(sql, session.role, catalog);
    if (scoped !== undefined && !scoped.ok) {
      return shadowed(
        session.role,
        toDeny(
          undefined,
          {
            reason: scoped.tooLarge === true ? 'statement_too_large' : 'scope_unrewritable',
            ruleId: 'builtin.scope',
            sqlstate: SqlState.FeatureNotSupported,
            what:
              scoped.tooLarge === true
                ? "lists more of the role's scope than pgwarden can send in one statement"
                : "uses pgwarden's virtual relations in a form pgwarden cannot rewrite",
            detail: `${scoped.why} (rule: builtin.scope)`,
            hint:
              scoped.tooLarge === true
                ? 'ask the operator for a role with fewer relations (schema.* patterns over large schemas list every column)'
                : 'select from pgwarden.scope or pgwarden.session by that plain name, in FROM or a join',
          },
          [],
        ),
        false,
        false,
      );
    }
    const text = scoped?.ok === true ? scoped.sql : sql;
    // catalog: scoped: every catalog relation behind the role's filter (policy/catalog-scope.ts).
    const filtered = rewriteCatalog(text, session.role, catalog);
    if (filtered !== undefined && !filtered.ok) {
      const denial: Denial =
        filtered.relation !== undefined
          ? scopedCatalogDenial(session.role, filtered.relation, filtered.why)
          : filtered.denied === true
            ? {
                reason: 'catalog_denied',
                ruleId: `roles.${session.role.name}.catalog`,
                sqlstate: SqlState.InsufficientPrivilege,
                what: `uses ${filtered.why}`,
                detail: `catalog: scoped guards casts to regclass, regtype and regnamespace only (rule: roles.${session.role.name}.catalog)`,
                hint: 'compare names as text, or cast to regclass',
              }
            : {
                reason: 'catalog_unrewritable',
                ruleId: `roles.${session.role.name}.catalog`,
                sqlstate: SqlState.FeatureNotSupported,
                what: 'reads system catalogs in a form pgwarden cannot filter',
                detail: `${filtered.why} (rule: roles.${session.role.name}.catalog)`,
                hint: SCOPED_HINT,
              };
      // Not shadowed: an unfiltered catalog text would show every name in the database.
      return { decision: toDeny(undefined, denial, []), literalSensitive: true, sessionDependent: false };
    }
    if (scoped === undefined && filtered === undefined) return evaluateInner(sql, mode, session, catalog, true);
    const run = filtered?.ok === true ? filtered.sql : text;
    let facts = evaluateInner(run, mode, session, catalog, true, { catalogFiltered: filtered?.ok === true });
    // An agent must be able to read its whole scope at once: a statement that reads no relation and calls no function,
    // only pgwarden's own listing, may return as many rows as the scope has; anything more (a self-join) is still cut
    // at that. A statement that also reads a relation (a catalog filter reads several) or calls a function (a
    // set-returning one could make rows of anything it may read) keeps the role's maxRows.
    const first = facts.decision;
    if (
      scoped?.ok === true &&
      first.allow &&
      first.rowCap !== undefined &&
      first.statements.every((st) => st.relations.length === 0 && st.functions.length === 0)
    ) {
      const listed = scopeRows(session.role, catalog).length;
      if (listed > first.rowCap.maxRows) {
        const roomier = { ...session, role: { ...session.role, maxRows: listed } };
        facts = evaluateInner(run, mode, roomier, catalog, true, { catalogFiltered: filtered?.ok === true });
      }
    }
    const d = facts.decision;
    // The rewrite depends on the role and the catalog (both in the cache key) and on no literal of the text, but its
    // text differs from the client's before the last constant: cached by exact text only. A prepared statement keeps
    // the listing or the filter of the policy it was prepared under: after a reload it is refused (listsScope).
    return {
      ...facts,
      literalSensitive: true,
      decision: d.allow
        ? {
            ...d,
            rewrittenSql: d.rewrittenSql ?? run,
            listsScope: true,
            ...(filtered?.ok === true ? { catalogFiltered: true as const } : {}),
          }
        : d,
    };
  } catch (err) {
    const detail = errorMessage(err);
    return { decision: toDeny(undefined, internalDenial(detail), []), literalSensitive: true, sessionDependent: true };
  }
}

/** DECLARE's WITH HOLD bit in DeclareCursorStmt.options (PostgreSQL's CURSOR_OPT_HOLD). */
const CURSOR_OPT_HOLD = 0x0020;

const HOLD_HINT =
  'use a cursor without HOLD inside a transaction (BEGIN; DECLARE …; FETCH …; COMMIT), or ask for holdCursors on the role';

/** WITH HOLD cursors a session of `role` may have open: the policy's holdCursors, else 0 for read-only roles, 2 for read-write ones. */
export function holdCursorLimit(role: RolePolicy): number {
  return role.holdCursors ?? (role.readOnly ? DEFAULT_HOLD_CURSORS.readOnly : DEFAULT_HOLD_CURSORS.readWrite);
}

/** Held cursors open in the session, other than `except` (declaring a name again replaces that cursor, or fails upstream). */
function openHoldCursors(session: SessionView, except: string): number {
  let n = 0;
  for (const name of session.holdCursorNames ?? []) if (name !== except && session.cursorNames.has(name)) n++;
  return n;
}

/** The session as the next statement of the same Query sees it: names prepared or declared so far added. */
function withEffects(view: SessionView, effects: readonly Effect[]): SessionView {
  if (!effects.some((e) => e.type === 'prepare' || e.type === 'declare')) return view;
  const preparedNames = new Set(view.preparedNames);
  const cursorNames = new Set(view.cursorNames);
  const holdCursorNames = new Set(view.holdCursorNames);
  for (const e of effects) {
    if (e.type === 'prepare') preparedNames.add(e.name);
    else if (e.type === 'declare') {
      cursorNames.add(e.name);
      if (e.hold === true) holdCursorNames.add(e.name);
      else holdCursorNames.delete(e.name);
    }
  }
  return { ...view, preparedNames, cursorNames, holdCursorNames };
}

function evaluateInner(
  sql: string,
  mode: 'simple' | 'parse',
  session: SessionView,
  catalog: CatalogSnapshot,
  allowRewrite: boolean,
  ctx: FactsContext = {},
): EvaluationFacts {
  const role = session.role;
  const parsed = parseStatements(sql);
  // Shadow mode's refusal of an unparsed text naming a pinned setting (below) is pgwarden's own, not a syntax error.
  const pinnedInShadow = role.mode === 'shadow' && PINNED_MENTION.test(sql);
  if (!parsed.ok && parsed.syntax !== undefined && !pinnedInShadow)
    return syntaxDenial(role, sql, parsed.syntax, catalog);
  if (!parsed.ok) {
    const sqlstate =
      parsed.reason === 'statement_too_large' || parsed.reason === 'statement_too_complex'
        ? SqlState.FeatureNotSupported
        : SqlState.InsufficientPrivilege;
    const what =
      parsed.reason === 'parse_error'
        ? 'could not be parsed'
        : parsed.reason === 'invalid_input'
          ? 'is not valid statement text'
          : parsed.reason === 'statement_too_large'
            ? 'is too large'
            : parsed.reason === 'statement_too_complex'
              ? 'is too deeply nested'
              : 'could not be parsed';
    // Shadow mode lets an unparsed text through, unseen: not one that names a setting pgwarden itself depends on
    // (its SET could not be rewritten or refused), in case the server's grammar reads what this parser could not.
    const reason = pinnedInShadow ? 'setting_pinned' : parsed.reason;
    return shadowed(
      role,
      toDeny(
        undefined,
        {
          reason,
          ruleId: 'builtin.parser',
          sqlstate,
          what,
          detail: `${parsed.message} (rule: builtin.parser)`,
          hint: parsed.reason === 'parse_error' ? 'check the SQL syntax' : undefined,
        },
        [],
      ),
      false,
      false,
    );
  }
  const stmts = parsed.stmts;
  const rowCap = role.maxRows !== undefined ? { maxRows: role.maxRows, onRowCap: role.onRowCap } : undefined;
  if (stmts.length === 0) {
    const allow: Allow = {
      allow: true,
      ruleId: 'builtin.empty',
      statements: [],
      rewrittenSql: undefined,
      rowCap,
      effects: [],
      shadowDenied: undefined,
    };
    return { decision: allow, literalSensitive: false, sessionDependent: false };
  }
  if (mode === 'parse' && stmts.length > 1) {
    return shadowed(
      role,
      toDeny(
        undefined,
        {
          reason: 'multiple_statements_in_parse',
          ruleId: 'builtin.protocol',
          sqlstate: SqlState.SyntaxError,
          what: `text holds ${stmts.length} statements`,
          detail: undefined,
          hint: undefined,
        },
        [],
        'cannot insert multiple commands into a prepared statement',
      ),
      false,
      false,
    );
  }
  const summaries: StatementSummary[] = [];
  const analyses: Analysis[] = [];
  for (const raw of stmts) {
    const a = analyzeStatement((raw.stmt ?? {}) as AnyNode, catalog, role, {
      objects: session.tempObjects,
      defer: session.deferTemporary,
      deferTypes: session.deferTypes,
    });
    analyses.push(a);
    summaries.push(summarize(a));
  }
  let literalSensitive = analyses.some((a) => a.literalSensitive);
  let sessionDependent = false;
  const effects: Effect[] = [];
  let rank = -1;
  let ruleId = `roles.${role.name}.statements`;
  const bindChecks: BindCheck[] = [];
  // Statements later in one Query see the PREPAREs and DECLAREs earlier in it (`DECLARE c …; FETCH 10 FROM c`).
  let view: SessionView = session;
  for (let i = 0; i < stmts.length; i++) {
    const raw = stmts[i];
    const a = analyses[i];
    if (raw === undefined || a === undefined) continue;
    const res = checkStatement(raw, a, view, catalog, ctx);
    if (!res.ok) {
      const deny = toDeny(a.kind, res.denial, summaries);
      const position = res.denial.location === undefined ? undefined : characterPosition(sql, res.denial.location);
      if (position !== undefined) deny.position = position;
      // A statement earlier in the same text may make the relation (`CREATE TABLE t …; SELECT * FROM t`): it is not
      // absent for PostgreSQL, which would run them in order.
      const madeBefore = analyses.slice(0, i).some((x) => CATALOG_CHANGING_KINDS.has(x.kind));
      const absent = madeBefore ? undefined : res.denial.absent;
      if (absent !== undefined) {
        const at = absent.location === undefined ? undefined : characterPosition(sql, absent.location);
        deny.confirmAbsent = {
          message: absent.message,
          detail: absent.detail,
          ...(at === undefined ? {} : { position: at }),
        };
      }
      // A position moves with the length of the literals before it: such a denial is never shared across literals.
      return shadowed(role, deny, literalSensitive || position !== undefined || absent?.location !== undefined, true);
    }
    const bound = notifyBindChecks(a, mode, role);
    if ('reason' in bound) return shadowed(role, toDeny(a.kind, bound, summaries), literalSensitive, true);
    bindChecks.push(...bound);
    const signals = backendBindChecks(a, mode, role);
    if ('reason' in signals) return shadowed(role, toDeny(a.kind, signals, summaries), literalSensitive, true);
    bindChecks.push(...signals);
    effects.push(...res.effects);
    view = withEffects(view, res.effects);
    if (res.sessionDependent) sessionDependent = true;
    if (res.rank > rank) {
      rank = res.rank;
      ruleId = res.ruleId;
    }
  }
  let rewrittenSql: string | undefined;
  if (role.maxRows !== undefined) {
    // A LIMIT's value decides whether the statement is rewritten.
    if (analyses.some((a) => a.limit?.count !== undefined)) literalSensitive = true;
    if (allowRewrite) rewrittenSql = capRewrite(sql, mode, stmts, session, catalog, summaries, role.maxRows + 1, ctx);
  }
  const allow: Allow = {
    allow: true,
    ruleId,
    statements: summaries,
    rewrittenSql,
    rowCap,
    effects,
    shadowDenied: undefined,
    ...(bindChecks.length > 0 ? { bindChecks } : {}),
  };
  // Each name once per statement (a CREATE TABLE column type is met again in its restated query).
  const deferredTypes = new Map<string, { statement: number; names: readonly string[]; fromString: boolean }>();
  analyses.forEach((a, statement) => {
    for (const t of a.deferredTypes ?? [])
      deferredTypes.set(JSON.stringify([statement, t.names, t.fromString]), { statement, ...t });
  });
  if (deferredTypes.size > 0) allow.deferredTypes = [...deferredTypes.values()];
  return { decision: allow, literalSensitive, sessionDependent };
}

/**
 * A kind of call whose argument is a client parameter checked when bound (pg_notify's channel, a signalled backend's
 * pid): which calls leave which parameter to Bind, the check, and how a refusal reads.
 */
interface BoundParamRule {
  param(f: FunctionUse): number | undefined;
  check(param: number): BindCheck;
  refuse(what: string, why: string): Denial;
  /** Nothing pgwarden sees is bound: a simple Query, PREPARE (its EXECUTE), a restated DDL expression. */
  unbound: { what: string; why: string };
  /** The parameter appears elsewhere in the statement too, where PostgreSQL could give it another type. */
  elsewhere(param: number): { what: string; why: string };
}

/**
 * The Bind checks the statement's calls of one rule need (checkFacts let them through), or the refusal: where nothing
 * will be bound, or when $n is also used elsewhere, so that its type (and how its bound value is read) is the call's.
 */
function boundParamChecks(a: Analysis, mode: 'simple' | 'parse', rule: BoundParamRule): BindCheck[] | Denial {
  const checks: BindCheck[] = [];
  const uses = new Map<number, number>();
  for (const f of a.functions) {
    const param = rule.param(f);
    if (param === undefined) continue;
    uses.set(param, (uses.get(param) ?? 0) + 1);
    if (!checks.some((c) => c.param === param)) checks.push(rule.check(param));
  }
  if (checks.length === 0) return checks;
  if (mode !== 'parse' || a.kind === 'PrepareStmt') return rule.refuse(rule.unbound.what, rule.unbound.why);
  for (const c of checks) {
    // Counted by pgwarden's own analysis; uses of the parameter other than the call's make its type ambiguous.
    if ((a.paramRefs?.get(c.param) ?? 0) !== (uses.get(c.param) ?? 0)) {
      const e = rule.elsewhere(c.param);
      return rule.refuse(e.what, e.why);
    }
  }
  return checks;
}

/** pg_notify with a parameter channel: the bound value must be a channel of the role's channels.notify. */
function notifyBindChecks(a: Analysis, mode: 'simple' | 'parse', role: RolePolicy): BindCheck[] | Denial {
  const r = `roles.${role.name}`;
  return boundParamChecks(a, mode, {
    param: (f) =>
      f.channelParam !== undefined &&
      f.constArgs[0] === undefined &&
      f.schema === 'pg_catalog' &&
      f.name === 'pg_notify'
        ? f.channelParam
        : undefined,
    check: (param) => ({ kind: 'notify_channel', param, channels: role.channels?.notify ?? [] }),
    refuse: (what, why) => ({
      reason: 'channel_denied',
      ruleId: `${r}.channels.notify`,
      sqlstate: SqlState.InsufficientPrivilege,
      what,
      detail: `${why} (rule: ${r}.channels.notify)`,
      hint: "pass the channel as a string constant, or as a parameter used only as pg_notify's channel",
    }),
    unbound: {
      what: 'calls pg_notify with a channel that is a parameter pgwarden does not see bound',
      why: "a parameter channel is checked at Bind, so only in a Parse message's statement",
    },
    elsewhere: (param) => ({
      what: `uses parameter $${param} as pg_notify's channel and elsewhere`,
      why: `$${param} must appear only as pg_notify's channel, so that its type is text`,
    }),
  });
}

/**
 * pg_terminate_backend / pg_cancel_backend whose pid is a parameter: the value bound must be a backend of this token's
 * own sessions (proxy/session/bind-checks.ts).
 */
function backendBindChecks(a: Analysis, mode: 'simple' | 'parse', role: RolePolicy): BindCheck[] | Denial {
  return boundParamChecks(a, mode, {
    param: (f) =>
      f.pidParam !== undefined &&
      f.ownBackend !== true &&
      f.schema === 'pg_catalog' &&
      SELF_BACKEND_FUNCTIONS.has(f.name)
        ? f.pidParam
        : undefined,
    check: (param) => ({ kind: 'sibling_backend', param }),
    refuse: (what, why) => ({
      reason: 'function_denied',
      ruleId: 'builtin.functions',
      sqlstate: SqlState.InsufficientPrivilege,
      what,
      detail: `${why} (rule: builtin.functions)`,
      hint: 'pass the process id as a parameter used only there, or end this session with pg_backend_pid()',
    }),
    unbound: {
      what: `signals a backend given by a parameter pgwarden does not see bound (role "${role.name}")`,
      why: "a backend given as a parameter is checked at Bind, so only in a Parse message's statement",
    },
    elsewhere: (param) => ({
      what: `uses parameter $${param} as a backend's process id and elsewhere`,
      why: `$${param} must appear only as the process id, so that its type is the call's`,
    }),
  });
}

/**
 * Rewrites top-level SELECTs to LIMIT cap (maxRows + 1, so the wire counter can tell truncation
 * happened), then re-parses and re-evaluates the result: it must be allowed, touch the same
 * relations, and carry the cap. Any doubt → no rewrite (the wire-level cap still applies).
 */
function capRewrite(
  sql: string,
  mode: 'simple' | 'parse',
  stmts: RawStmt[],
  session: SessionView,
  catalog: CatalogSnapshot,
  before: StatementSummary[],
  cap: number,
  ctx: FactsContext,
): string | undefined {
  const quick = spliceLimit(sql, stmts, cap);
  if (quick !== undefined) return quick;
  let rewritten: { sql: string; changed: number[] } | undefined;
  try {
    rewritten = rewriteForCap(sql, stmts, cap);
  } catch {
    return undefined;
  }
  if (rewritten === undefined) return undefined;
  const again = evaluateInner(rewritten.sql, mode, session, catalog, false, ctx).decision;
  if (!again.allow || again.statements.length !== before.length) return undefined;
  for (let i = 0; i < before.length; i++) {
    const a = before[i];
    const b = again.statements[i];
    if (a === undefined || b === undefined || a.kind !== b.kind) return undefined;
    if ([...a.relations].sort().join('\u0000') !== [...b.relations].sort().join('\u0000')) return undefined;
    if ([...a.functions].sort().join('\u0000') !== [...b.functions].sort().join('\u0000')) return undefined;
  }
  const reparsed = parseStatements(rewritten.sql);
  if (!reparsed.ok) return undefined;
  for (const i of rewritten.changed) {
    const target = cappable(reparsed.stmts[i]?.stmt as AnyNode | undefined, cap);
    if (target === undefined || cappedLimit(target.sel, target.cap) !== undefined) return undefined;
  }
  return rewritten.sql;
}

/**
 * The 1-based character position PostgreSQL reports for a parse-tree location (a byte offset into the UTF-8 text):
 * the number of characters (code points, as the server counts them in UTF-8) before it, plus one.
 */
export function characterPosition(sql: string, byteOffset: number): number | undefined {
  if (!Number.isInteger(byteOffset) || byteOffset < 0) return undefined;
  let bytes = 0;
  let chars = 0;
  for (const ch of sql) {
    if (bytes >= byteOffset) break;
    const cp = ch.codePointAt(0) ?? 0;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    chars += 1;
  }
  return bytes >= byteOffset ? chars + 1 : undefined;
}

/**
 * Text PostgreSQL's grammar rejects: refused (nothing reaches the server), with what PostgreSQL sends for it —
 * 42601, the parser's own message, its position, no detail or hint — so drivers raise a syntax error and point at
 * the token. The position moves with the length of literals before it, so the decision is literal-sensitive (never
 * shared across texts that differ only in literals). Texts libpg-query's grammar (PostgreSQL 18) rejects and an
 * older server would accept get the same answer: see docs/policy.md, "Syntax errors".
 */
function syntaxDenial(
  role: RolePolicy,
  sql: string,
  syntax: { message: string; position: number | undefined; sqlstate: string; hint: string | undefined },
  catalog: CatalogSnapshot,
): EvaluationFacts {
  const newer = syntax.sqlstate === SqlState.SyntaxError ? newerKeyword(sql, syntax.position, catalog) : undefined;
  const deny: Deny =
    newer === undefined
      ? {
          allow: false,
          ruleId: 'builtin.parser',
          sqlstate: syntax.sqlstate,
          message: syntax.message,
          detail: undefined,
          hint: syntax.hint,
          reason: 'parse_error',
          statements: [],
        }
      : {
          allow: false,
          ruleId: 'builtin.parser',
          sqlstate: SqlState.FeatureNotSupported,
          message: `pgwarden cannot parse this statement: ${syntax.message}`,
          detail: `${newer.word.toUpperCase()} is ${KEYWORD_CATEGORY[newer.ours]} keyword in the grammar pgwarden parses with (PostgreSQL 18) but ${newer.theirs === undefined ? 'not a keyword' : `${KEYWORD_CATEGORY[newer.theirs]} keyword`} on the database server, which may accept this text (rule: builtin.parser)`,
          hint: `write it as a quoted identifier ("${newer.word}"), which both grammars read alike`,
          reason: 'parse_error',
          statements: [],
        };
  if (syntax.position !== undefined) deny.position = syntax.position;
  return shadowed(role, deny, true, false);
}

const KEYWORD_CATEGORY: Record<string, string> = {
  U: 'an unreserved',
  C: 'a column-name',
  T: 'a type- or function-name',
  R: 'a reserved',
};
/** How many places a keyword of a category cannot stand as an identifier: none < U < C, T < R. */
const KEYWORD_RANK: Record<string, number> = { U: 1, C: 2, T: 2, R: 3 };
/** libpg-query's ScanToken.keywordKind → pg_get_keywords' catcode. */
const KEYWORD_KIND = ['', 'U', 'C', 'T', 'R'];

/**
 * The word a syntax error points at when pgwarden's grammar reserves it more than the upstream server does (a keyword
 * added or promoted after the server's release, e.g. SYSTEM_USER, reserved since PostgreSQL 16), or undefined. Such a
 * syntax error is likely pgwarden's alone: the text is still refused, as 0A000 (a statement pgwarden does not support)
 * rather than a 42601 the server would not have sent. Only the word at the error counts: a newer keyword elsewhere
 * (`::json`) says nothing about this error. Unknown without the server's keyword list (then 42601).
 */
function newerKeyword(
  sql: string,
  position: number | undefined,
  catalog: CatalogSnapshot,
): { word: string; ours: string; theirs: string | undefined } | undefined {
  const theirsByWord = catalog.keywords;
  if (theirsByWord === undefined || theirsByWord.size === 0 || position === undefined) return undefined;
  // The word is read from the text at the error (scanning a whole text of up to 1 MiB on every syntax error would cost
  // seconds); only that word goes through the scanner, for its keyword category in pgwarden's grammar.
  let i = 0;
  for (let chars = 1; chars < position && i < sql.length; chars++) i += (sql.codePointAt(i) ?? 0) > 0xffff ? 2 : 1;
  if (i >= sql.length || !isIdentStart(sql.charCodeAt(i))) return undefined;
  let j = i + 1;
  while (j < sql.length && isIdentCont(sql.charCodeAt(j))) j++;
  if (j - i > 64) return undefined;
  const word = sql.slice(i, j).toLowerCase();
  const ours = KEYWORD_KIND[scanTokens(word)?.[0]?.keywordKind ?? 0] ?? '';
  if (ours === '') return undefined;
  const theirs = theirsByWord.get(word);
  const more =
    (KEYWORD_RANK[ours] ?? 0) > (theirs === undefined ? 0 : (KEYWORD_RANK[theirs] ?? 0)) ||
    (theirs !== undefined && theirs !== ours && KEYWORD_RANK[ours] === KEYWORD_RANK[theirs]);
  return more ? { word, ours, theirs } : undefined;
}

/**
 * Statements that install or run code pgwarden cannot see: in shadow mode they would let that code change the settings
 * pgwarden pins even there (set_config of client_encoding, the lexer settings, the pgwarden.* stamps), so they stay
 * refused in shadow mode (a DO block only for roles without do: true, which have chosen the escape).
 */
const SHADOW_CODE_KINDS: ReadonlySet<string> = new Set([
  'DoStmt',
  'CreateFunctionStmt',
  'AlterFunctionStmt',
  'CreateTrigStmt',
  'RuleStmt',
  'CreateEventTrigStmt',
  'CreateCastStmt',
  'DefineStmt',
  'CreateConversionStmt',
  'CreateOpClassStmt',
  'CreateTransformStmt',
  'CreatePLangStmt',
  'CreateExtensionStmt',
  'AlterExtensionStmt',
]);

export function shadowed(
  role: RolePolicy,
  deny: Deny,
  literalSensitive: boolean,
  sessionDependent: boolean,
): EvaluationFacts {
  if (role.mode !== 'shadow' || SHADOW_ENFORCED.has(deny.reason))
    return { decision: deny, literalSensitive, sessionDependent };
  if (deny.statements.some((st) => SHADOW_CODE_KINDS.has(st.kind) && !(st.kind === 'DoStmt' && role.do === true)))
    return { decision: deny, literalSensitive, sessionDependent };
  const allow: Allow = {
    allow: true,
    ruleId: deny.ruleId ?? 'shadow',
    statements: deny.statements,
    rewrittenSql: undefined,
    rowCap: role.maxRows !== undefined ? { maxRows: role.maxRows, onRowCap: role.onRowCap } : undefined,
    effects: [],
    shadowDenied: { reason: deny.reason, message: deny.message },
  };
  return { decision: allow, literalSensitive, sessionDependent };
}
