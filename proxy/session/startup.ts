// Which client startup parameters pass, and the upstream startup parameters that stamp a session's identity and limits.
import { createHash } from 'node:crypto';
import { ProxyError } from '../../lib/errors.ts';
import {
  DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  isUtf8EncodingName,
  judgeStartupSetting,
} from '../../policy/settings.ts';
import { quoteIdent } from '../../lib/ident.ts';
import type { RolePolicy } from '../../policy/types.ts';

/**
 * Parameters drivers send that cannot change identity, limits or how SQL is lexed; forwarded as given.
 * application_name is handled separately (appended to ours); client_encoding is pinned to UTF8.
 */
export const FORWARDED_STARTUP_PARAMS: ReadonlySet<string> = new Set([
  'DateStyle',
  'datestyle',
  'TimeZone',
  'timezone',
  'extra_float_digits',
  'IntervalStyle',
  'intervalstyle',
  'bytea_output',
  'lc_monetary',
  'lc_numeric',
  'lc_time',
]);

/**
 * Encodings whose bytes are exactly what our UTF-8 check validated. Others (SJIS, BIG5, GBK…) let a
 * multibyte character end in a backslash or quote byte, which changes how the server lexes SQL.
 */
const ACCEPTED_CLIENT_ENCODINGS = new Set(['utf8', 'utf-8', 'unicode', 'sql_ascii', 'auto']);

export interface ClientStartup {
  user: string;
  database: string | undefined;
  applicationName: string | undefined;
  /** Parameters to forward upstream unchanged. */
  forwarded: Record<string, string>;
  /**
   * Other settings the client asked for (statement_timeout, custom settings…), in packet order: judged after login
   * by the rule for `SET name = 'value'` under the token's role (acceptStartupSettings), refused FATAL otherwise.
   */
  settings: [string, string][];
  /** `_pq_.*` protocol options we do not support (reported in NegotiateProtocolVersion). */
  unsupportedProtocolOptions: string[];
}

function refuse(message: string, hint?: string): ProxyError {
  return new ProxyError('ERR_STARTUP_PARAM', message, { hint });
}

/** Validates the client's startup parameters; throws a FATAL ProxyError naming the first refused one. */
export function readClientStartup(params: ReadonlyMap<string, string>, expectedDatabase: string): ClientStartup {
  const user = params.get('user');
  if (user === undefined || user === '') {
    throw new ProxyError('ERR_PROTOCOL', 'no PostgreSQL user name specified in startup packet');
  }
  const forwarded: Record<string, string> = {};
  const settings: [string, string][] = [];
  const optionSettings: [string, string][] = [];
  const unsupportedProtocolOptions: string[] = [];
  let database: string | undefined;
  let applicationName: string | undefined;
  for (const [name, value] of params) {
    if (name === 'user') continue;
    if (name === 'database') {
      database = value;
      continue;
    }
    if (name.startsWith('_pq_.')) {
      unsupportedProtocolOptions.push(name);
      continue;
    }
    if (name === 'application_name') {
      applicationName = value;
      continue;
    }
    if (name === 'client_encoding') {
      // Every spelling PostgreSQL reads as UTF8 (utf_8, UTF-8, unicode: the same rule SET client_encoding follows).
      if (!ACCEPTED_CLIENT_ENCODINGS.has(value.toLowerCase()) && !isUtf8EncodingName(value)) {
        throw refuse(`client_encoding "${value}" is not supported by pgwarden`, 'connect with client_encoding=UTF8');
      }
      continue;
    }
    if (FORWARDED_STARTUP_PARAMS.has(name)) {
      forwarded[name] = value;
      continue;
    }
    if (name === 'options') {
      // Its settings come first: PostgreSQL applies the other parameters after it, so they win.
      optionSettings.push(...parseOptions(value));
      continue;
    }
    if (name === 'replication') {
      throw refuse('replication connections are not allowed through pgwarden');
    }
    // Any other name is a setting: the role is not known yet, so it is judged at login.
    settings.push([name, value]);
  }
  if (database !== undefined && database !== '' && database !== expectedDatabase) {
    throw new ProxyError('ERR_TOKEN_REJECTED', `database "${database}" is not served by this pgwarden`, {
      hint: `connect to database "${expectedDatabase}"`,
      sqlstate: '28000',
      reason: 'credential_rejected',
    });
  }
  for (const [name, value] of optionSettings) {
    // `-c application_name=x` names the client as the parameter does (which wins when both are given).
    if (name.toLowerCase() === 'application_name') applicationName ??= value;
  }
  return {
    user,
    database,
    applicationName,
    forwarded,
    settings: [...optionSettings.filter(([n]) => n.toLowerCase() !== 'application_name'), ...settings],
    unsupportedProtocolOptions,
  };
}

const OPTIONS_HINT = 'options (PGOPTIONS) may hold only -c name=value and --name=value settings';

/**
 * The settings in an `options` startup parameter, split as PostgreSQL splits it (pg_split_opts: words separated by
 * white space, a backslash makes the next character literal) and read as its `-c name=value` / `-cname=value` /
 * `--name=value` switches (ParseLongOption: '-' in a name is '_'). They are then judged one by one like any other
 * startup setting and sent upstream as separate parameters: the options string itself never reaches the server, so
 * its other switches (-P, -F, -d, -o…) cannot either; any other word is refused.
 */
export function parseOptions(options: string): [string, string][] {
  // C isspace(), not JavaScript's \s (which also matches no-break and other Unicode spaces).
  const space = (c: string | undefined) => c !== undefined && c.length === 1 && ' \t\n\v\f\r'.includes(c);
  const words: string[] = [];
  let i = 0;
  while (i < options.length) {
    while (space(options[i])) i++;
    if (i >= options.length) break;
    let word = '';
    let escaped = false;
    for (; i < options.length; i++) {
      const c = options[i] ?? '';
      if (space(c) && !escaped) break;
      if (!escaped && c === '\\') escaped = true;
      else {
        escaped = false;
        word += c;
      }
    }
    words.push(word);
  }
  const out: [string, string][] = [];
  const setting = (text: string): void => {
    const eq = text.indexOf('=');
    if (eq <= 0) throw refuse(`options: "${text}" is not a name=value setting`, OPTIONS_HINT);
    out.push([text.slice(0, eq).replace(/-/g, '_'), text.slice(eq + 1)]);
  };
  for (let w = 0; w < words.length; w++) {
    const word = words[w] ?? '';
    if (word === '-c') {
      const next = words[++w];
      if (next === undefined) throw refuse('options: -c requires a value', OPTIONS_HINT);
      setting(next);
    } else if (word.startsWith('-c')) setting(word.slice(2));
    else if (word.startsWith('--')) setting(word.slice(2));
    else throw refuse(`options: "${word}" is not allowed through pgwarden`, OPTIONS_HINT);
  }
  return out;
}

/**
 * The client's startup settings under `role`, by the rule that decides `SET name = 'value'` (policy/settings.ts):
 * the same settings, the same bounds (a timeout only lower than the role's), keyed by the lower-case name PostgreSQL
 * uses (the last of two spellings wins, as it does in PostgreSQL). The first one refused throws a FATAL with the SET
 * refusal's SQLSTATE and message, before any upstream connection is opened, as PostgreSQL refuses a bad startup option.
 */
export function acceptStartupSettings(settings: readonly [string, string][], role: RolePolicy): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of settings) {
    const v = judgeStartupSetting(name, value, role);
    if (!v.allow) {
      const rule = v.rule === 'builtin' ? 'builtin.settings' : `roles.${role.name}.settings`;
      throw new ProxyError(
        'ERR_STATEMENT_DENIED',
        'permission denied by pgwarden: SET changes a setting pgwarden does not allow',
        {
          severity: 'FATAL',
          detail: `startup parameter "${name}": ${v.why} (rule: ${rule})`,
          reason: v.pinned === true ? 'policy_denied' : 'scope_missing',
          hint: v.hint,
        },
      );
    }
    out[name.toLowerCase()] = value;
  }
  return out;
}

/** Postgres truncates names to NAMEDATALEN-1 bytes; application_name is limited the same way. */
export const MAX_APPLICATION_NAME_BYTES = 63;

/** Keeps only printable ASCII: application_name is shown in pg_stat_activity and logs, and Postgres replaces the rest with '?'. */
function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

/**
 * A token claim as it appears in the prefix: printable ASCII other than ' ', '%' and '/' as is, every other
 * character as its UTF-8 bytes percent-encoded. So no two claims look alike ('a/b' is not sub 'a' with agent 'b',
 * 'é' is not 'ü'), and the first space of an application name always ends pgwarden's part of it.
 */
function claimText(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if (ch.length === 1 && c > 0x20 && c < 0x7f && ch !== '%' && ch !== '/') out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** Bytes of a cut identity kept before its digest: `%#` and 11 base64url characters (66 bits) follow. */
const CUT_PREFIX_BYTES = MAX_APPLICATION_NAME_BYTES - 13;

/**
 * `pgwarden:<sub>/<agent>`: the identity prefix of every application_name a session has. ASCII, at most 63 bytes. One
 * too long to fit is cut and ends in `%#` and a digest of the whole: cutting alone would let two identities (two agents
 * of a long sub, or a sub that starts with another) show the same name, and `%#` never occurs in an uncut prefix
 * (claimText writes `%` only before two hex digits).
 */
function applicationNamePrefix(sub: string, agent: string | undefined): string {
  const full = `pgwarden:${claimText(sub)}${agent ? `/${claimText(agent)}` : ''}`;
  if (full.length <= MAX_APPLICATION_NAME_BYTES) return full;
  return `${full.slice(0, CUT_PREFIX_BYTES)}%#${createHash('sha256').update(full).digest('base64url').slice(0, 11)}`;
}

/**
 * The identity prefix, then the client's own application_name (from the startup packet or a SET) after a space,
 * its non-printable characters as '?' and cut so the whole fits in 63 bytes: what PostgreSQL shows is exactly
 * what pgwarden computed (nothing for it to truncate or clean), and the prefix always comes first, whole.
 */
export function composeApplicationName(sub: string, agent: string | undefined, clientApp: string | undefined): string {
  const base = applicationNamePrefix(sub, agent);
  if (!clientApp) return base;
  // All ASCII here, so characters are bytes and slicing cannot split one.
  const room = MAX_APPLICATION_NAME_BYTES - base.length - 1;
  return room > 0 ? `${base} ${printable(clientApp).slice(0, room)}` : base;
}

export interface StampInput {
  sessionId: string;
  sub: string;
  agent: string | undefined;
  tenant: string | undefined;
  jti: string | undefined;
  roleName: string;
  /** The token's expiry (seconds since the epoch), stamped as pgwarden.expires_at for pgwarden.session. */
  expiresAt?: number | undefined;
  readOnly: boolean;
  statementTimeoutMs: number | undefined;
  /** idle_in_transaction_session_timeout; the built-in default (60 s) when undefined; 0 stamps none (the role's choice). */
  idleInTransactionTimeoutMs?: number | undefined;
  dbRole: string | undefined;
  searchPath: string[];
  clientApplicationName: string | undefined;
  forwarded: Record<string, string>;
  /** The client's startup settings as acceptStartupSettings accepted them (lower-case names). */
  settings?: Record<string, string>;
}

/** An expiry as ISO text, or '' when there is none or it is not a representable time. */
function expiresText(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '';
  const d = new Date(seconds * 1000);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/**
 * Upstream startup parameters. Setting identity and limits here, rather than with SET after login,
 * makes them the session's reset values: RESET ALL, DISCARD ALL and RESET ROLE fall back to them.
 */
export function stampParameters(s: StampInput): Record<string, string> {
  for (const [claim, value] of Object.entries({ sub: s.sub, agent: s.agent, tenant: s.tenant, jti: s.jti })) {
    if (value?.includes('\0')) {
      throw new ProxyError('ERR_TOKEN_INVALID', `token claim "${claim}" contains a NUL character`, {
        hint: 'request a new token from your token issuer and reconnect with it as the password',
        reason: 'credential_invalid',
      });
    }
  }
  const out: Record<string, string> = {
    ...s.forwarded,
    client_encoding: 'UTF8',
    // Pinned so the server lexes SQL exactly as libpg-query does (backslashes in '' are literal).
    standard_conforming_strings: 'on',
    application_name: composeApplicationName(s.sub, s.agent, s.clientApplicationName),
    search_path: s.searchPath.map(quoteIdent).join(', '),
    'pgwarden.sub': s.sub,
    'pgwarden.agent': s.agent ?? '',
    'pgwarden.role': s.roleName,
    'pgwarden.tenant': s.tenant ?? '',
    'pgwarden.jti': s.jti ?? '',
    'pgwarden.session_id': s.sessionId,
    'pgwarden.expires_at': expiresText(s.expiresAt),
  };
  if (s.statementTimeoutMs !== undefined) out.statement_timeout = String(Math.max(0, Math.round(s.statementTimeoutMs)));
  // Stamped unless the operator chose none for the role (0): an idle open transaction holds its locks, and DDL queued
  // behind them blocks every reader.
  const idle = Math.round(s.idleInTransactionTimeoutMs ?? DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS);
  if (idle > 0) out.idle_in_transaction_session_timeout = String(idle);
  if (s.readOnly) out.default_transaction_read_only = 'on';
  if (s.dbRole !== undefined) out.role = s.dbRole;
  // Accepted client settings: the timeouts were judged within the role's bounds, so the client's lower value is the
  // session's (its reset value too); nothing else accepted is a name stamped above (those SETs are refused).
  for (const [name, value] of Object.entries(s.settings ?? {})) {
    if (name in out && name !== 'statement_timeout' && name !== 'idle_in_transaction_session_timeout') continue;
    out[name] = value;
  }
  return out;
}
