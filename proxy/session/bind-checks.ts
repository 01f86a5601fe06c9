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
): ProxyError | undefined {
  if (checks === undefined) return undefined;
  for (const c of checks) {
    const raw = bind.params[c.param - 1];
    let channel: string | undefined;
    if (raw !== undefined && raw !== null && TEXT_PARAM_TYPES.has(paramTypes[c.param - 1] ?? 0)) {
      try {
        channel = utf8.decode(raw);
      } catch {
        channel = undefined;
      }
    }
    if (channel !== undefined && channelAllowed(c.channels, channel)) continue;
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
  return undefined;
}
