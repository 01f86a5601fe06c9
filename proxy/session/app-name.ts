// A client's SET application_name rewritten to set pgwarden's identity prefix with the client's name after it, so the server itself applies (and, on rollback, undoes) the prefixed name.
import type { VariableSetStmt } from 'libpg-query';
import { canonicalTree, parseStatements, type RawStmt } from '../../policy/parser.ts';
import { applicationNameValue } from '../../policy/settings.ts';
import { composeApplicationName } from './startup.ts';
import { quoteLiteral } from '../../lib/ident.ts';

export type AppNameRewrite =
  /** No statement sets application_name to a value: send the text as it is. */
  | { kind: 'unchanged' }
  | { kind: 'rewritten'; sql: string }
  /** A SET of application_name that could not be rewritten with certainty: refuse the whole message. */
  | { kind: 'refused'; why: string };

function setOf(raw: RawStmt | undefined): VariableSetStmt | undefined {
  const stmt = raw?.stmt as { VariableSetStmt?: VariableSetStmt } | undefined;
  const set = stmt?.VariableSetStmt;
  return set !== undefined && (set.name ?? '').toLowerCase() === 'application_name' ? set : undefined;
}

/** The tree of a statement without its source positions (every kind: location, list_start, …), which move when an earlier statement is rewritten. */
function shape(raw: RawStmt | undefined): string {
  return canonicalTree(raw?.stmt ?? null);
}

/**
 * Rewrites every `SET [SESSION | LOCAL] application_name = <value>` in `sql` (a Query's text or a Parse's) into the
 * same SET of composeApplicationName(sub, agent, value): the prefix pgwarden stamps at login, then the client's name.
 * RESET, SET … TO DEFAULT and FROM CURRENT are left alone: they restore or keep the stamped, prefixed value. The
 * result is parsed again and must be the same statements with only those values changed, or the message is refused.
 */
export function rewriteApplicationName(sql: string, sub: string, agent: string | undefined): AppNameRewrite {
  const parsed = parseStatements(sql);
  if (!parsed.ok) return { kind: 'refused', why: `its text could not be parsed again (${parsed.reason})` };
  const stmts = parsed.stmts;
  const buf = Buffer.from(sql, 'utf8');
  const pieces: Buffer[] = [];
  const wanted = new Map<number, { value: string; local: boolean }>();
  let at = 0;
  for (let i = 0; i < stmts.length; i++) {
    const raw = stmts[i];
    const set = setOf(raw);
    if (raw === undefined || set === undefined || set.kind !== 'VAR_SET_VALUE') continue;
    const value = applicationNameValue(set);
    if (value === undefined) return { kind: 'refused', why: 'application_name takes one constant value' };
    // stmt_location and stmt_len count UTF-8 bytes; a length of 0 runs to the end of the text.
    const start = raw.stmt_location ?? 0;
    const end = raw.stmt_len !== undefined && raw.stmt_len > 0 ? start + raw.stmt_len : buf.length;
    if (start < at || end > buf.length) return { kind: 'refused', why: 'statement positions out of order' };
    const composed = composeApplicationName(sub, agent, value);
    const local = set.is_local === true;
    pieces.push(
      buf.subarray(at, start),
      Buffer.from(`SET ${local ? 'LOCAL ' : ''}application_name = ${quoteLiteral(composed)}`, 'utf8'),
    );
    at = end;
    wanted.set(i, { value: composed, local });
  }
  if (wanted.size === 0) return { kind: 'unchanged' };
  pieces.push(buf.subarray(at));
  const out = Buffer.concat(pieces).toString('utf8');
  // Parsed again: the same statements, only the rewritten values different.
  const again = parseStatements(out);
  if (!again.ok || again.stmts.length !== stmts.length)
    return { kind: 'refused', why: 'the rewritten text did not parse as the same statements' };
  for (let i = 0; i < stmts.length; i++) {
    const w = wanted.get(i);
    if (w === undefined) {
      if (shape(again.stmts[i]) !== shape(stmts[i]))
        return { kind: 'refused', why: 'the rewritten text changed another statement' };
      continue;
    }
    const set = setOf(again.stmts[i]);
    if (
      set === undefined ||
      set.kind !== 'VAR_SET_VALUE' ||
      (set.is_local === true) !== w.local ||
      applicationNameValue(set) !== w.value
    ) {
      return { kind: 'refused', why: 'the rewritten SET did not parse as intended' };
    }
  }
  return { kind: 'rewritten', sql: out };
}
