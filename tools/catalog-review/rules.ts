// Suggested classes for system functions and relations: the mechanical rules (curated lists, pg_proc facts) and the hand review they were bootstrapped with.
//
// A suggestion is only that: review.ts --suggest prints them for unclassified names, and a person decides
// and writes the entry into policy/review/functions.json. bootstrap.ts built the first review from these.
import {
  ALWAYS_DENIED,
  TIMEOUT_BOUNDED,
  INTROSPECTION_FUNCTIONS,
  VOLATILE_ALLOWED,
  findEntry,
  type FunctionEntry,
} from '../../policy/functions.ts';
import {
  DENIED_SYSTEM_RELATIONS,
  INTROSPECTION_EXTRA_FUNCTIONS,
  INTROSPECTION_RELATIONS,
  SESSION_RELATIONS,
} from '../../policy/introspection.ts';
import type { FunctionClass, RelationClass, ServerFunction, ServerRelation } from '../../policy/review/review.ts';

export interface Suggestion {
  class: FunctionClass;
  reason: string | undefined;
  /** Which rule decided: 'hand' (reviewed by name), a list name, or a pg_proc fact. */
  rule: string;
}

/**
 * Names reviewed by hand and kept allowed, with the reason recorded for the next reviewer. Exact
 * pg_catalog names; wins over every rule below. The names the hand review denied or made
 * introspection-only went into the curated lists themselves (ALWAYS_DENIED, INTROSPECTION_FUNCTIONS,
 * VOLATILE_ALLOWED in policy/functions.ts), which the rules below apply.
 */
export const HAND_REVIEW: ReadonlyMap<string, { class: FunctionClass; reason: string }> = new Map(
  (
    [
      ['pg_cursor', 'safe', "reviewed: this session's cursors only (one upstream session per client)"],
      [
        'pg_prepared_statement',
        'safe',
        "reviewed: this session's prepared statements only (one upstream session per client)",
      ],
      ['pg_listening_channels', 'safe', "reviewed: this session's LISTEN channels only"],
      [
        'pg_backend_pid',
        'safe',
        "reviewed: this session's own backend pid; what could use it on others (pg_terminate_backend, pg_stat_activity) is denied",
      ],
      ['version', 'safe', 'reviewed: the server version string, as server_version (drivers read it)'],
      ['current_setting', 'safe', 'reviewed: the setting name is checked against the readable-settings list'],
      ['pg_current_xact_id_if_assigned', 'safe', "reviewed: this transaction's id, without assigning one"],
      ['txid_current_if_assigned', 'safe', "reviewed: this transaction's id, without assigning one"],
    ] as const
  ).map(([name, cls, reason]) => [name, { class: cls as FunctionClass, reason }]),
);

/** Return types of functions that only the server calls (triggers, handlers). */
const HANDLER_RETURNS = new Set([
  'trigger',
  'event_trigger',
  'language_handler',
  'index_am_handler',
  'table_am_handler',
  'tsm_handler',
  'fdw_handler',
]);

const REG_OUTPUT =
  /^reg(class|proc|procedure|oper|operator|type|namespace|role|config|dictionary|collation)(out|send)$/;

function listed(entries: readonly FunctionEntry[], name: string): FunctionEntry | undefined {
  return findEntry(entries, name);
}

/** The suggested class of one server function, from the hand review, the curated lists and pg_proc facts. */
export function suggestFunction(f: ServerFunction): Suggestion {
  if (f.schema === 'information_schema') {
    if (INTROSPECTION_EXTRA_FUNCTIONS.includes(`${f.schema}.${f.name}`)) {
      return {
        class: 'introspection',
        reason: 'information_schema support function (its views and pgJDBC call it)',
        rule: 'INTROSPECTION_EXTRA_FUNCTIONS',
      };
    }
    return { class: 'introspection', reason: 'information_schema support function', rule: 'schema' };
  }
  const hand = HAND_REVIEW.get(f.name);
  if (hand !== undefined) return { class: hand.class, reason: hand.reason, rule: 'hand' };
  const always = listed(ALWAYS_DENIED, f.name);
  if (always !== undefined) return { class: 'denied', reason: always.reason, rule: 'ALWAYS_DENIED' };
  const sleep = listed(TIMEOUT_BOUNDED, f.name);
  if (sleep !== undefined)
    return {
      class: 'volatile',
      reason:
        'sleeps: callable only by a role with statementTimeout; read-only roles also need functions.allow (TIMEOUT_BOUNDED in policy/functions.ts)',
      rule: 'TIMEOUT_BOUNDED',
    };
  if (f.revoked)
    return { class: 'denied', reason: 'EXECUTE is revoked from PUBLIC: an administrative function', rule: 'revoked' };
  const intro = listed(INTROSPECTION_FUNCTIONS, f.name);
  if (intro !== undefined) return { class: 'introspection', reason: intro.reason, rule: 'INTROSPECTION_FUNCTIONS' };
  if (listed(VOLATILE_ALLOWED, f.name) !== undefined) {
    return { class: 'volatile_allowed', reason: listed(VOLATILE_ALLOWED, f.name)?.reason, rule: 'VOLATILE_ALLOWED' };
  }
  if (f.returns.length > 0 && f.returns.every((t) => HANDLER_RETURNS.has(t))) {
    return { class: 'denied', reason: 'trigger or handler function: only the server calls it', rule: 'returns' };
  }
  if (f.args.length > 0 && f.args.every((a) => /\binternal\b/.test(a))) {
    return {
      class: 'denied',
      reason: 'takes an internal argument: planner, index or type support that SQL cannot call',
      rule: 'args',
    };
  }
  if (REG_OUTPUT.test(f.name))
    return { class: 'introspection', reason: 'output of a reg* type: prints the catalog name of an oid', rule: 'reg*' };
  if (f.volatility.includes('v'))
    return {
      class: 'volatile',
      reason: 'volatile: may have side effects; a role may allow it by name',
      rule: 'provolatile',
    };
  return { class: 'safe', reason: undefined, rule: 'provolatile' };
}

/** Reasons for system relations outside the two curated lists, by name prefix. */
const LISTED_ONLY_REASONS: readonly [RegExp, string][] = [
  [/^pg_catalog\.pg_stat(io)?_/, 'activity counters: an introspection role may list it in relations'],
  [/^information_schema\._pg_/, 'information_schema internals: an introspection role may list it in relations'],
  [/./, 'not among the introspection relations: an introspection role may list it in relations'],
];

export function suggestRelation(r: ServerRelation): { class: RelationClass; reason: string | undefined } {
  const key = `${r.schema}.${r.name}`;
  const denied = DENIED_SYSTEM_RELATIONS.get(key);
  if (denied !== undefined) return { class: 'denied', reason: denied };
  if (INTROSPECTION_RELATIONS.has(key)) return { class: 'introspection', reason: undefined };
  const own = SESSION_RELATIONS.get(key);
  if (own !== undefined) return { class: 'session', reason: `${own}: readable by every role` };
  const reason = LISTED_ONLY_REASONS.find(([re]) => re.test(key))?.[1];
  return { class: 'listed_only', reason };
}
