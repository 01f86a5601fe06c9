// Values a decision could not see until Bind: pg_notify's channel given as a parameter, checked against the role's channels before the statement runs.
import { ProxyError } from '../../lib/errors.ts';
import { quoteIdent } from '../../lib/ident.ts';
import { channelAllowed } from '../../policy/ddl.ts';
import type { BindCheck } from '../../policy/types.ts';
import type { BindMessage } from '../wire/frontend.ts';

/** Parameter types whose value reaches pg_notify's text channel unchanged: unspecified (the server infers text) and text. */
const TEXT_PARAM_TYPES: ReadonlySet<number> = new Set([0, 25]);

// ignoreBOM: a leading U+FEFF is part of the value PostgreSQL reads (the default decoder drops it, and judged another channel).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A Bind without values: what a portal whose Bind was not kept is checked with (every check then refuses). */
export const NO_VALUES: BindMessage = { portal: '', statement: '', paramFormats: [], params: [], resultFormats: [] };

/** What a Bind check needs from the session beyond the bound values. */
export interface BindContext {
  /** Upstream backend process ids of this subject's live sessions on this pgwarden (this one's included). */
  siblingBackends(): ReadonlySet<number>;
}

/**
 * The refusal of a Bind whose bound values a check of its statement's decision does not accept, or undefined. A text
 * parameter's value is the same bytes in text and binary format (the client encoding is pinned to UTF8); NULL, a
 * missing value, bytes that are not UTF-8 and a declared type other than text are refused as a channel outside the
 * role, so the refusal never depends on how PostgreSQL would read them.
 */
export function bindRefusal(
  checks: readonly BindCheck[] | undefined,
  bind: BindMessage,
  paramTypes: readonly number[],
  ctx: BindContext,
): ProxyError | undefined {
  if (checks === undefined) return undefined;
  for (const c of checks) {
    const refusal =
      c.kind === 'notify_channel' ? channelRefusal(c, bind, paramTypes) : backendRefusal(c, bind, paramTypes, ctx);
    if (refusal !== undefined) return refusal;
  }
  return undefined;
}

function channelRefusal(
  c: Extract<BindCheck, { kind: 'notify_channel' }>,
  bind: BindMessage,
  paramTypes: readonly number[],
): ProxyError | undefined {
  const raw = bind.params[c.param - 1];
  let channel: string | undefined;
  if (raw !== undefined && raw !== null && TEXT_PARAM_TYPES.has(paramTypes[c.param - 1] ?? 0)) {
    try {
      channel = utf8.decode(raw);
    } catch {
      channel = undefined;
    }
  }
  if (channel !== undefined && channelAllowed(c.channels, channel)) return undefined;
  const allowed = c.channels.map((p) => `${p.name}${p.prefix ? '*' : ''}`).join(', ');
  return new ProxyError(
    'ERR_STATEMENT_DENIED',
    channel === undefined
      ? `permission denied by pgwarden: parameter $${c.param}, pg_notify's channel, is not a text value naming a channel this role may notify`
      : `permission denied by pgwarden: notifies channel ${quoteIdent(channel)} (parameter $${c.param}), which this role may not notify`,
    {
      // policy/reasons.ts: channel_denied is scope_missing for the agent.
      reason: 'scope_missing',
      detail: `checked when bound: the channel must match channels.notify (${allowed || 'none'})`,
      hint: 'notify a channel the role lists in channels.notify',
    },
  );
}

/** Bytes of each integer parameter type in binary format; 0 (unspecified) is what the call takes, int4. */
const BINARY_INT_BYTES: ReadonlyMap<number, number> = new Map([
  [0, 4],
  [21, 2],
  [23, 4],
  [20, 8],
]);

/** A process id as PostgreSQL's integer input reads it (whitespace, a sign, decimal digits), or undefined for anything else. */
function boundInteger(raw: Buffer, format: number, type: number): bigint | undefined {
  if (format === 1) {
    const size = BINARY_INT_BYTES.get(type);
    if (size === undefined || raw.length !== size) return undefined;
    return size === 2 ? BigInt(raw.readInt16BE(0)) : size === 4 ? BigInt(raw.readInt32BE(0)) : raw.readBigInt64BE(0);
  }
  const text = raw.toString('latin1');
  // Stricter than PostgreSQL 16+ (which also reads 0x…, 0o…, 0b… and underscores): those are refused, never misread.
  const m = /^[ \t\n\r\f\v]*([+-]?[0-9]{1,19})[ \t\n\r\f\v]*$/.exec(text);
  return m?.[1] === undefined ? undefined : BigInt(m[1]);
}

function backendRefusal(
  c: Extract<BindCheck, { kind: 'sibling_backend' }>,
  bind: BindMessage,
  paramTypes: readonly number[],
  ctx: BindContext,
): ProxyError | undefined {
  const raw = bind.params[c.param - 1];
  // NULL: the function returns NULL and signals nothing.
  if (raw === null) return undefined;
  const formats = bind.paramFormats;
  const format = formats.length === 0 ? 0 : formats.length === 1 ? (formats[0] ?? 0) : (formats[c.param - 1] ?? 0);
  const pid = raw === undefined ? undefined : boundInteger(raw, format, paramTypes[c.param - 1] ?? 0);
  if (pid !== undefined && pid > 0n && pid <= 2147483647n && ctx.siblingBackends().has(Number(pid))) return undefined;
  return new ProxyError(
    'ERR_STATEMENT_DENIED',
    `permission denied by pgwarden: parameter $${c.param} is not the process id of a session of this token's subject`,
    {
      reason: 'scope_missing',
      detail:
        "checked when bound: pg_terminate_backend and pg_cancel_backend may signal only the backends of sessions with this token's issuer, subject, agent and tenant open through this pgwarden (rule: builtin.functions)",
      hint: 'signal one of your own sessions (its backend pid), or end this one with pg_backend_pid()',
    },
  );
}
