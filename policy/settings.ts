// Which session settings a role may SET / RESET or read (SHOW, current_setting), and the transaction-mode checks for BEGIN / SET TRANSACTION.
import type { Node, VariableSetStmt, DefElem } from 'libpg-query';
import type { RolePolicy } from './types.ts';
import { isReadableSetting } from './functions.ts';

/** Settings any role may change: display and client-side behaviour only. Keys are lower-case, as the parser returns them. */
export const HARMLESS_SETTINGS: ReadonlyMap<string, string> = new Map([
  ['datestyle', 'date display format'],
  ['timezone', 'time zone for display and date arithmetic'],
  ['intervalstyle', 'interval display format'],
  ['extra_float_digits', 'float display precision (pgJDBC sets it)'],
  ['bytea_output', 'bytea display format'],
  ['lc_messages', 'language of server messages'],
  ['lc_monetary', 'money display locale'],
  ['lc_numeric', 'number display locale'],
  ['lc_time', 'time display locale'],
  ['xmloption', 'XML parse mode'],
  ['client_min_messages', 'which notices the client receives'],
  [
    'statement_timeout',
    "only between 1 ms (before PostgreSQL rounds: 400us is refused) and the role's statementTimeout, when it has one",
  ],
  ['lock_timeout', 'gives up on locks sooner (0, wait forever, is allowed: statement_timeout still bounds the wait)'],
  [
    'idle_in_transaction_session_timeout',
    "only between 1 ms and the stamped value (the role's idleInTransactionTimeout, default 60 s); never 0 (any value when the role's is 0: none stamped)",
  ],
  ['transaction_isolation', 'stricter or looser isolation for this transaction'],
  ['default_transaction_isolation', 'isolation of later transactions'],
  ['default_transaction_deferrable', 'deferrable read-only transactions'],
  ['transaction_deferrable', 'deferrable read-only transactions'],
]);

/**
 * Settings no role may change, even if its policy lists them: they would change identity, name
 * resolution, the lexer (and so what the proxy's parser saw), or read-only enforcement.
 */
export const NEVER_SETTINGS: ReadonlyMap<string, string> = new Map([
  ['search_path', 'pinned by pgwarden: unqualified names must resolve as the policy resolved them'],
  ['role', 'SET ROLE changes the database identity'],
  ['session_authorization', 'changes the database identity'],
  [
    'standard_conforming_strings',
    "changes how the server lexes strings: the proxy's parser would see different statements",
  ],
  ['client_encoding', 'changes how the server decodes bytes the proxy already checked'],
  ['backslash_quote', 'changes string lexing'],
  ['escape_string_warning', 'string-lexing related; pinned with standard_conforming_strings'],
  ['session_replication_role', 'disables triggers and foreign keys'],
  ['local_preload_libraries', 'loads server libraries on the next connection'],
  ['session_preload_libraries', 'loads server libraries'],
  ['default_transaction_read_only', 'read-only enforcement (allowed only for read-write roles)'],
  ['transaction_read_only', 'read-only enforcement (allowed only for read-write roles)'],
  ['row_security', 'row-level security mode'],
]);

/** Prefix-namespaced settings no role may change. */
export const NEVER_SETTING_PREFIXES: readonly string[] = ['pgwarden.'];

/** Settings that name the server's files: no role may read them (SHOW, current_setting), introspection or not. */
export const FILE_LOCATION_SETTINGS: ReadonlyMap<string, string> = new Map([
  ['data_directory', "the server's data directory"],
  ['config_file', "the server's configuration file"],
  ['hba_file', "the server's pg_hba.conf"],
  ['ident_file', "the server's pg_ident.conf"],
  ['external_pid_file', "the server's pid file"],
]);

export type SettingReadVerdict =
  | { allow: true }
  | { allow: false; rule: 'builtin' | 'role'; why: string; hint: string | undefined };

/**
 * Whether the role may read a setting, by `SHOW name` or `current_setting('name')`: one rule for both,
 * so SHOW refuses exactly what current_setting() refuses. `name` is as the parser returns it (SHOW TIME
 * ZONE is `timezone`, SHOW TRANSACTION ISOLATION LEVEL is `transaction_isolation`, SHOW ALL is `all`).
 * - the server's file locations: never;
 * - introspection roles: every other setting (they can read pg_settings anyway), and SHOW ALL;
 * - other roles: the readable-settings list (READABLE_SETTINGS in functions.ts) and the settings they may SET,
 *   so not SHOW ALL, extensions' custom settings (`myext.api_key`), or server paths and configuration.
 */
export function judgeSettingRead(name: string, role: RolePolicy): SettingReadVerdict {
  const key = name.toLowerCase();
  const file = FILE_LOCATION_SETTINGS.get(key);
  if (file !== undefined) return { allow: false, rule: 'builtin', why: `${key} reveals ${file}`, hint: undefined };
  if (role.catalog === 'introspection') return { allow: true };
  // What the role may set it may read; otherwise only the display, identity and limit settings.
  if (key !== 'all' && (isReadableSetting(key) || HARMLESS_SETTINGS.has(key) || role.settings.has(key)))
    return { allow: true };
  return {
    allow: false,
    rule: 'role',
    why:
      key === 'all'
        ? 'SHOW ALL reads every setting; roles without catalog: introspection may read only display, identity and limit settings'
        : `setting ${key} is not among the display, identity and limit settings roles without catalog: introspection may read`,
    hint: 'readable settings are listed in docs/functions.md; catalog: introspection reads every setting',
  };
}

/** Settings in NEVER_SETTINGS that read-write roles may still change. */
const READ_WRITE_ONLY = new Set(['default_transaction_read_only', 'transaction_read_only']);

/**
 * `pinned`: a refusal that holds in every mode, shadow included, because pgwarden itself depends on the setting
 * (client_encoding and the lexer settings: what its UTF-8 check and parser saw is what the server runs; the identity
 * stamps: application_name's prefix, pgwarden.*).
 */
export type SettingVerdict =
  | { allow: true; restamp: boolean }
  | { allow: false; rule: 'builtin' | 'role'; why: string; hint: string | undefined; pinned?: true };

/** NEVER_SETTINGS refused in shadow mode too: they change how the server decodes or lexes what pgwarden checked. */
const PINNED_SETTINGS = new Set(['client_encoding', 'standard_conforming_strings', 'backslash_quote']);

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** idle_in_transaction_session_timeout stamped for roles without idleInTransactionTimeout (milliseconds). */
export const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000;

/** The idle_in_transaction_session_timeout stamped on a role's sessions; 0 when none is (the role's idleInTransactionTimeout: 0). */
export function idleInTransactionTimeoutMs(role: RolePolicy): number {
  return role.idleInTransactionTimeout ?? DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS;
}

/**
 * A millisecond-unit setting's value (statement_timeout, idle_in_transaction_session_timeout) in milliseconds,
 * before PostgreSQL rounds it to an integer, or undefined when it cannot be read with certainty. A bare number is
 * milliseconds; units are us, ms, s, min, h, d (case-sensitive, as in PostgreSQL). Spellings PostgreSQL reads
 * differently (strtol base 0: '010' is octal 8, '0x10' is 16; exponents) are not read, and so refused.
 */
export function parseTimeoutMs(arg: Node | undefined): number | undefined {
  if (arg === undefined || !('A_Const' in arg)) return undefined;
  const c = arg.A_Const;
  if (c.ival !== undefined) return c.ival.ival ?? 0; // `ival: {}` is 0
  let text: string | undefined;
  if (c.sval !== undefined) text = c.sval.sval ?? '';
  else if (c.fval !== undefined) text = c.fval.fval ?? '';
  if (text === undefined) return undefined;
  const m = /^\s*((?:0|[1-9]\d*)(?:\.\d+)?|\.\d+)\s*(us|ms|s|min|h|d)?\s*$/.exec(text);
  if (m === null) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  const factor = UNIT_MS[unit];
  if (factor === undefined || !Number.isFinite(n)) return undefined;
  return n * factor;
}

function settingListed(role: RolePolicy, name: string): boolean {
  if (role.settings.has(name)) return true;
  for (const s of role.settings) if (s.toLowerCase() === name) return true;
  return false;
}

/**
 * How a setting's value is written: `sql` as SET's arguments (each string of a list setting is one element, quoted as an
 * identifier by PostgreSQL's flatten_set_variable_args); `raw` as the setting's own text (a startup parameter,
 * set_config's value), which PostgreSQL splits itself.
 */
export type ValueForm = 'sql' | 'raw';

/**
 * PostgreSQL's parse_bool for a setting's text (parse_bool_with_len, no white space trimmed): a case-insensitive prefix
 * of true/false/yes/no, at least two letters of on/off, or 1/0; undefined for anything else (the server rejects it).
 */
export function pgBool(text: string): boolean | undefined {
  const v = text.toLowerCase();
  if (v === '') return undefined;
  const prefixOf = (word: string, min = 1) => v.length >= min && v.length <= word.length && word.startsWith(v);
  if (prefixOf('true') || prefixOf('yes') || prefixOf('on', 2) || v === '1') return true;
  if (prefixOf('false') || prefixOf('no') || prefixOf('off', 2) || v === '0') return false;
  return undefined;
}

/** The text of one SET argument as flatten_set_variable_args makes it (a string as is, an integer in decimal), or undefined. */
function argText(arg: Node | undefined): string | undefined {
  if (arg === undefined || !('A_Const' in arg)) return undefined;
  const c = arg.A_Const;
  if (c.isnull === true) return undefined;
  if (c.sval !== undefined) return c.sval.sval ?? '';
  if (c.ival !== undefined) return String(c.ival.ival ?? 0);
  return undefined;
}

/**
 * PostgreSQL's SplitIdentifierString for a list setting's raw text (search_path): elements separated by commas, white
 * space around them ignored, a double-quoted element taken as written ("" is a quote), an unquoted one lower-cased
 * (ASCII only, as for UTF8 databases). Undefined for any text the server would reject, and for names over 63 bytes
 * (truncated by the server: refused here rather than compared after the cut).
 * White space is scanner_isspace's: space, tab, newline, carriage return, form feed. A vertical tab anywhere makes the
 * text unread: PostgreSQL 15's scanner_isspace keeps it in the name (`'app\v, public'` names a schema "app\v", so the
 * server resolves unqualified names without app), later versions' scanner skips it; either reading could differ.
 */
export function splitIdentifierList(raw: string): string[] | undefined {
  if (raw.includes('\v')) return undefined;
  const space = (c: string | undefined) => c !== undefined && ' \t\n\f\r'.includes(c) && c.length === 1;
  const out: string[] = [];
  let i = 0;
  while (space(raw[i])) i++;
  if (i >= raw.length) return out;
  for (;;) {
    let name: string;
    if (raw[i] === '"') {
      name = '';
      i++;
      for (;;) {
        const q = raw.indexOf('"', i);
        if (q < 0) return undefined;
        name += raw.slice(i, q);
        if (raw[q + 1] === '"') {
          name += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      if (name === '') return undefined;
    } else {
      const start = i;
      while (i < raw.length && raw[i] !== ',' && !space(raw[i]) && raw[i] !== '"') i++;
      if (i === start) return undefined;
      name = raw.slice(start, i).replace(/[A-Z]/g, (c) => c.toLowerCase());
    }
    if (Buffer.byteLength(name, 'utf8') > 63) return undefined;
    out.push(name);
    while (space(raw[i])) i++;
    if (i >= raw.length) return out;
    if (raw[i] !== ',') return undefined;
    i++;
    while (space(raw[i])) i++;
  }
}

/**
 * A SET of a pinned setting that leaves it as pgwarden stamped it, so PostgreSQL-side nothing changes: drivers' test
 * suites do `SET standard_conforming_strings = on` and `RESET search_path`. RESET and DEFAULT restore the stamped
 * startup value of both. standard_conforming_strings: any spelling parse_bool reads as on. search_path: exactly the
 * role's searchPath, element by element, compared as PostgreSQL reads the list. Every other pinned setting, and any
 * other value, stays refused.
 */
function pinnedNoOp(name: string, stmt: VariableSetStmt, role: RolePolicy, form: ValueForm): boolean {
  if (name !== 'standard_conforming_strings' && name !== 'search_path') return false;
  if (stmt.kind === 'VAR_RESET' || stmt.kind === 'VAR_SET_DEFAULT') return true;
  if (stmt.kind !== 'VAR_SET_VALUE') return false;
  const args = stmt.args ?? [];
  if (name === 'standard_conforming_strings') {
    const text = args.length === 1 ? argText(args[0]) : undefined;
    return text !== undefined && pgBool(text) === true;
  }
  let list: string[] | undefined;
  if (form === 'raw') {
    const text = args.length === 1 ? argText(args[0]) : undefined;
    list = text === undefined ? undefined : splitIdentifierList(text);
  } else {
    // Each SET argument is one element, quoted as an identifier whatever it holds; only strings are compared.
    list = [];
    for (const a of args) {
      if (!('A_Const' in a) || a.A_Const.sval === undefined) return false;
      list.push(a.A_Const.sval.sval ?? '');
    }
  }
  const pinned = role.searchPath;
  return (
    list !== undefined &&
    list.length > 0 &&
    list.length === pinned.length &&
    list.every((x, k) => x === pinned[k] && Buffer.byteLength(x, 'utf8') <= 63)
  );
}

/**
 * Judges a SET / SET LOCAL / RESET / SET … TO DEFAULT / RESET ALL statement.
 * SET TRANSACTION and SET SESSION CHARACTERISTICS (VAR_SET_MULTI) are judged by judgeTransactionOptions.
 */
export function judgeVariableSet(stmt: VariableSetStmt, role: RolePolicy, form: ValueForm = 'sql'): SettingVerdict {
  const kind = stmt.kind;
  if (kind === 'VAR_RESET_ALL') return { allow: true, restamp: true };
  if (kind === 'VAR_SET_MULTI') {
    const name = (stmt.name ?? '').toUpperCase();
    if (name === 'TRANSACTION' || name === 'SESSION CHARACTERISTICS') return judgeTransactionOptions(stmt.args, role);
    return {
      allow: false,
      rule: 'builtin',
      why: `SET ${stmt.name ?? ''} is not supported through pgwarden`,
      hint: undefined,
    };
  }
  const name = (stmt.name ?? '').toLowerCase();
  if (name === '') return { allow: false, rule: 'builtin', why: 'unnamed setting', hint: undefined };
  if (name === 'client_encoding') return judgeClientEncoding(stmt);
  if (name === 'application_name') return judgeApplicationName(stmt);
  const never = NEVER_SETTINGS.get(name);
  if (never !== undefined && pinnedNoOp(name, stmt, role, form)) return { allow: true, restamp: false };
  if (never !== undefined && !(READ_WRITE_ONLY.has(name) && !role.readOnly)) {
    return {
      allow: false,
      rule: 'builtin',
      why: `${name}: ${never}`,
      hint: undefined,
      ...(PINNED_SETTINGS.has(name) ? { pinned: true as const } : {}),
    };
  }
  if (READ_WRITE_ONLY.has(name)) return { allow: true, restamp: false };
  for (const prefix of NEVER_SETTING_PREFIXES) {
    if (name.startsWith(prefix))
      return {
        allow: false,
        rule: 'builtin',
        why: `${prefix}* settings are stamped by pgwarden`,
        hint: undefined,
        pinned: true,
      };
  }
  if (name === 'statement_timeout') return judgeStatementTimeout(stmt, role);
  if (name === 'idle_in_transaction_session_timeout') return judgeIdleInTransactionTimeout(stmt, role);
  if (HARMLESS_SETTINGS.has(name) || settingListed(role, name)) return { allow: true, restamp: false };
  const allowed = [...HARMLESS_SETTINGS.keys(), ...role.settings].join(', ');
  return {
    allow: false,
    rule: 'role',
    why: `setting ${name} is not in the harmless list or roles.${role.name}.settings`,
    hint: `settings this role may change: ${allowed}`,
  };
}

/**
 * The same rule for a startup parameter `name=value` as for `SET name = 'value'` (a startup parameter is a string, as
 * a quoted SET value is; PostgreSQL parses both with the setting's own input function). The value is the setting's
 * raw text, as set_config's is: for a list setting (search_path) it is the whole list, not one quoted element.
 */
export function judgeStartupSetting(name: string, value: string, role: RolePolicy): SettingVerdict {
  const stmt: VariableSetStmt = {
    kind: 'VAR_SET_VALUE',
    name,
    args: [{ A_Const: { sval: { sval: value } } }],
    is_local: false,
  };
  return judgeVariableSet(stmt, role, 'raw');
}

/**
 * One `set_config(name, value, is_local)` call whose arguments are constants, as PostgreSQL reads them: `value` null
 * is a RESET (set_config_by_name passes NULL on as "reset to default"); `isLocal` null is false.
 */
export interface SetConfigCall {
  name: string;
  value: string | null;
  isLocal: boolean | null;
}

/**
 * set_config with constant arguments, decided as `SET [LOCAL] name = 'value'` (`RESET name` for a NULL value) is,
 * with the value read as the setting's raw text (set_config does not quote list elements as SET does).
 * application_name is refused: SET application_name is rewritten under the identity prefix (proxy/session/app-name.ts),
 * a set_config call would replace the prefix.
 */
export function judgeSetConfig(call: SetConfigCall, role: RolePolicy): SettingVerdict {
  const name = call.name.toLowerCase();
  if (name === 'application_name')
    return {
      allow: false,
      rule: 'builtin',
      why: "set_config('application_name', …) would replace pgwarden's identity prefix",
      hint: "SET application_name = 'my-app' keeps the prefix and is allowed",
      pinned: true,
    };
  const stmt: VariableSetStmt =
    call.value === null
      ? { kind: 'VAR_RESET', name: call.name, is_local: call.isLocal === true }
      : {
          kind: 'VAR_SET_VALUE',
          name: call.name,
          args: [{ A_Const: { sval: { sval: call.value } } }],
          is_local: call.isLocal === true,
        };
  return judgeVariableSet(stmt, role, 'raw');
}

/** `set_config` or `pg_catalog.set_config` as written, called plainly (no aggregate, window, VARIADIC or named arguments). */
function setConfigCall(n: Node | undefined): SetConfigCall | undefined {
  if (n === undefined || !('FuncCall' in n)) return undefined;
  const f = n.FuncCall;
  const names = (f.funcname ?? []).map((x) => ('String' in x ? x.String.sval : undefined));
  const named =
    (names.length === 1 && names[0] === 'set_config') ||
    (names.length === 2 && names[0] === 'pg_catalog' && names[1] === 'set_config');
  const plain = Object.keys(f).every((k) => k === 'funcname' || k === 'args' || k === 'funcformat' || k === 'location');
  if (!named || !plain || f.funcformat !== 'COERCE_EXPLICIT_CALL') return undefined;
  const args = f.args ?? [];
  if (args.length !== 3) return undefined;
  const [a0, a1, a2] = args.map((a) => ('A_Const' in a ? a.A_Const : undefined));
  if (a0 === undefined || a1 === undefined || a2 === undefined) return undefined;
  // The name and the value are string literals (an unknown-type constant PostgreSQL reads as text; a number has no
  // implicit cast to text and fails to resolve); the value may be NULL. is_local does not change the decision, but must
  // be a constant too: true/false, NULL, or a string boolin reads (or rejects, and then PostgreSQL refuses the call).
  if (a0.sval === undefined || a0.isnull === true) return undefined;
  let value: string | null;
  if (a1.isnull === true) value = null;
  else if (a1.sval !== undefined) value = a1.sval.sval ?? '';
  else return undefined;
  let isLocal: boolean | null;
  if (a2.isnull === true) isLocal = null;
  else if (a2.boolval !== undefined) isLocal = a2.boolval.boolval === true;
  else if (a2.sval !== undefined) isLocal = null;
  else return undefined;
  return { name: a0.sval.sval ?? '', value, isLocal };
}

/**
 * The calls of a plain `SELECT set_config(…)[, set_config(…)…]`: a target list of nothing but set_config calls with
 * constant arguments (each may have an alias), and no FROM, WHERE, GROUP BY, HAVING, WINDOW, ORDER BY, LIMIT, DISTINCT,
 * INTO, locking clause, WITH, VALUES or set operation. Undefined for any other statement: set_config anywhere else (in a
 * WHERE clause, a CTE, a function's argument, with a parameter or a column as an argument) stays refused as an
 * always-denied function (policy/functions.ts). The server's own analysis of the statement must find the same shape
 * (server-analysis.ts serverSetConfigCalls).
 */
export function plainSetConfigCalls(select: Record<string, unknown>): SetConfigCall[] | undefined {
  for (const [k, v] of Object.entries(select)) {
    if (k === 'targetList') continue;
    if (k === 'limitOption' && v === 'LIMIT_OPTION_DEFAULT') continue;
    if (k === 'op' && v === 'SETOP_NONE') continue;
    return undefined;
  }
  const targets = select.targetList;
  if (!Array.isArray(targets) || targets.length === 0) return undefined;
  const calls: SetConfigCall[] = [];
  for (const t of targets as Node[]) {
    if (!('ResTarget' in t)) return undefined;
    const r = t.ResTarget;
    if (r.indirection !== undefined && r.indirection.length > 0) return undefined;
    const call = setConfigCall(r.val);
    if (call === undefined) return undefined;
    calls.push(call);
  }
  return calls;
}

/** Encoding names PostgreSQL reads as UTF8: it drops every non-alphanumeric character and lower-cases (clean_encoding_name). */
export function isUtf8EncodingName(value: string): boolean {
  const clean = value.replace(/[^A-Za-z0-9]/g, '').toLowerCase();
  return clean === 'utf8' || clean === 'unicode';
}

/**
 * client_encoding stays UTF8, in every mode: pgwarden checks that the bytes it reads are UTF-8, and parses them as
 * such. Setting it to UTF8 again, RESET and DEFAULT (the stamped UTF8) change nothing and are allowed.
 */
function judgeClientEncoding(stmt: VariableSetStmt): SettingVerdict {
  if (stmt.kind === 'VAR_RESET' || stmt.kind === 'VAR_SET_DEFAULT' || stmt.kind === 'VAR_SET_CURRENT')
    return { allow: true, restamp: false };
  const args = stmt.args ?? [];
  const arg = args.length === 1 ? args[0] : undefined;
  const text = arg !== undefined && 'A_Const' in arg ? arg.A_Const.sval?.sval : undefined;
  if (stmt.kind === 'VAR_SET_VALUE' && text !== undefined && isUtf8EncodingName(text))
    return { allow: true, restamp: false };
  return {
    allow: false,
    rule: 'builtin',
    why: `client_encoding: ${NEVER_SETTINGS.get('client_encoding') ?? ''}`,
    hint: "pgwarden speaks UTF8 only; SET client_encoding TO 'UTF8' is allowed",
    pinned: true,
  };
}

/**
 * The value a client asks for in `SET application_name = <value>` as PostgreSQL reads it (a string as written, a
 * number as its text), or undefined when the statement does not set one constant value (RESET, DEFAULT, FROM CURRENT,
 * several values, NULL).
 */
export function applicationNameValue(stmt: VariableSetStmt): string | undefined {
  if (stmt.kind !== 'VAR_SET_VALUE') return undefined;
  const args = stmt.args ?? [];
  const arg = args.length === 1 ? args[0] : undefined;
  if (arg === undefined || !('A_Const' in arg)) return undefined;
  const c = arg.A_Const;
  if (c.isnull === true) return undefined;
  if (c.sval !== undefined) return c.sval.sval ?? '';
  if (c.ival !== undefined) return String(c.ival.ival ?? 0);
  if (c.fval !== undefined) return c.fval.fval;
  return undefined;
}

/**
 * application_name: allowed to every role without a `settings:` entry, because pgwarden rewrites a SET of a value
 * into a SET of its identity prefix plus the value (proxy/session/app-name.ts), so the server applies the prefixed
 * name itself. RESET, DEFAULT and FROM CURRENT restore or keep a prefixed value and pass unchanged; any other shape
 * (several values) is refused in every mode, as it could not be rewritten.
 */
function judgeApplicationName(stmt: VariableSetStmt): SettingVerdict {
  if (stmt.kind === 'VAR_RESET' || stmt.kind === 'VAR_SET_DEFAULT' || stmt.kind === 'VAR_SET_CURRENT')
    return { allow: true, restamp: false };
  if (applicationNameValue(stmt) !== undefined) return { allow: true, restamp: false };
  return {
    allow: false,
    rule: 'builtin',
    why: 'application_name takes one constant value, which pgwarden appends to its identity prefix',
    hint: "SET application_name = 'my-app'",
    pinned: true,
  };
}

/**
 * A value for a millisecond setting bounded by `limit`: at least 1 ms before rounding (PostgreSQL rounds 400us,
 * and 0.4, to 0, which disables the limit) and at most `limit`. Values between 0.5 and 1 ms that PostgreSQL would
 * round up to 1 are refused too: the rule does not depend on its rounding.
 */
function judgeBoundedMs(name: string, stmt: VariableSetStmt, limit: number, whose: string): SettingVerdict {
  const hint = `${name} may be set between 1 and ${limit} ms`;
  const args = stmt.args ?? [];
  const ms = args.length === 1 ? parseTimeoutMs(args[0]) : undefined;
  if (ms === undefined) return { allow: false, rule: 'role', why: `${name} value could not be read`, hint };
  if (ms <= 0) return { allow: false, rule: 'role', why: `${name} 0 disables ${whose} of ${limit} ms`, hint };
  if (ms < 1)
    return {
      allow: false,
      rule: 'role',
      why: `${name} ${ms} ms is below 1 ms: PostgreSQL would round it to 0, which disables ${whose} of ${limit} ms`,
      hint,
    };
  if (ms > limit) return { allow: false, rule: 'role', why: `${name} ${ms} ms exceeds ${whose} of ${limit} ms`, hint };
  return { allow: true, restamp: false };
}

function judgeStatementTimeout(stmt: VariableSetStmt, role: RolePolicy): SettingVerdict {
  const limit = role.statementTimeout;
  if (limit === undefined) return { allow: true, restamp: false };
  // Refused although RESET / DEFAULT restore the stamped value (a startup parameter): kept strict, and harmless.
  if (stmt.kind !== 'VAR_SET_VALUE') {
    const hint = `statement_timeout may be set between 1 and ${limit} ms`;
    return {
      allow: false,
      rule: 'role',
      why: `resetting statement_timeout would drop the role's limit of ${limit} ms`,
      hint,
    };
  }
  return judgeBoundedMs('statement_timeout', stmt, limit, "the role's limit");
}

/**
 * idle_in_transaction_session_timeout only goes down: an open transaction holds its locks, and a DDL statement
 * queued behind them blocks every later reader of the table. RESET / DEFAULT restore the stamped value.
 */
function judgeIdleInTransactionTimeout(stmt: VariableSetStmt, role: RolePolicy): SettingVerdict {
  if (stmt.kind === 'VAR_SET_DEFAULT' || stmt.kind === 'VAR_RESET') return { allow: true, restamp: false };
  const limit = idleInTransactionTimeoutMs(role);
  // The operator stamps none (idleInTransactionTimeout: 0): the server's own value holds, and the client may set any.
  if (limit === 0) return { allow: true, restamp: false };
  if (stmt.kind !== 'VAR_SET_VALUE') {
    return {
      allow: false,
      rule: 'role',
      why: 'idle_in_transaction_session_timeout can only be set to a value',
      hint: undefined,
    };
  }
  return judgeBoundedMs('idle_in_transaction_session_timeout', stmt, limit, "the role's idle-in-transaction limit");
}

/** True when a DefElem list asks for READ WRITE (`transaction_read_only` = false). */
export function requestsReadWrite(options: readonly Node[] | undefined): boolean {
  for (const opt of options ?? []) {
    if (!('DefElem' in opt)) return true; // unknown shape: assume the worst
    const d: DefElem = opt.DefElem;
    if (d.defname !== 'transaction_read_only') continue;
    const arg = d.arg;
    if (arg === undefined || !('A_Const' in arg)) return true;
    const c = arg.A_Const;
    if (c.ival === undefined) return true;
    if ((c.ival.ival ?? 0) === 0) return true;
  }
  return false;
}

/** Judges BEGIN/START TRANSACTION options and SET [SESSION CHARACTERISTICS AS] TRANSACTION. */
export function judgeTransactionOptions(options: readonly Node[] | undefined, role: RolePolicy): SettingVerdict {
  for (const opt of options ?? []) {
    if (!('DefElem' in opt))
      return { allow: false, rule: 'builtin', why: 'unrecognised transaction option', hint: undefined };
    const name = opt.DefElem.defname;
    if (name !== 'transaction_read_only' && name !== 'transaction_isolation' && name !== 'transaction_deferrable') {
      return {
        allow: false,
        rule: 'builtin',
        why: `transaction option ${name ?? '?'} is not supported through pgwarden`,
        hint: undefined,
      };
    }
  }
  if (role.readOnly && requestsReadWrite(options)) {
    return {
      allow: false,
      rule: 'role',
      why: `role "${role.name}" is read-only; READ WRITE transactions are not allowed`,
      hint: 'use READ ONLY or omit the access mode',
    };
  }
  return { allow: true, restamp: false };
}
