// Limits a client could undo with SET: statement_timeout (rounding to 0, above the role's value) and idle_in_transaction_session_timeout (only lowered, never 0).
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import {
  DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  HARMLESS_SETTINGS,
  judgeStartupSetting,
  pgBool,
  splitIdentifierList,
} from '../../../policy/settings.ts';
import { compilePolicy, parsePolicyText } from '../../../policy/load.ts';
import { stampParameters } from '../../../proxy/session/startup.ts';
import { makeCatalog, makeRole, sessionFor } from '../../fixtures/catalog.ts';
import type { RolePolicy } from '../../../policy/types.ts';

beforeAll(async () => {
  await initParser();
});

const timed = makeRole({ name: 'timed', statementTimeout: 5_000 });
const untimed = makeRole({ name: 'untimed', statementTimeout: undefined });
const idle30 = makeRole({ name: 'idle30', idleInTransactionTimeout: 30_000 });
const ROLES_DEFAULT = makeRole({ name: 'default' });

function decide(sql: string, role: RolePolicy): { allow: boolean; detail: string | undefined } {
  const d = evaluate(sql, 'simple', sessionFor(role), makeCatalog());
  if (d.allow) return { allow: true, detail: undefined };
  expect(d.reason).toBe('setting_denied');
  expect(d.sqlstate ?? '42501').toBe('42501');
  return { allow: false, detail: d.detail };
}

describe("statement_timeout is bounded by the role's value, after PostgreSQL's unit rounding", () => {
  it.each([
    // What PostgreSQL rounds to 0 (no timeout at all): the reported bypass and its spellings.
    "SET statement_timeout = '400us'",
    "SET statement_timeout = '500us'",
    "SET statement_timeout = '999us'",
    'SET statement_timeout = 0.4',
    "SET statement_timeout = '0.5'",
    "SET statement_timeout = '.4ms'",
    "SET LOCAL statement_timeout = '400us'",
    "SET statement_timeout = '0'",
    'SET statement_timeout = 0',
    "SET statement_timeout = '0s'",
    // Above the role's 5 s.
    "SET statement_timeout = '5001ms'",
    "SET statement_timeout = '5.001s'",
    "SET statement_timeout = '1min'",
    "SET statement_timeout = '1d'",
    'SET statement_timeout = 99999999999',
    // Spellings PostgreSQL reads differently (strtol base 0, exponents) or unknown units.
    "SET statement_timeout = '010'",
    "SET statement_timeout = '0x10'",
    "SET statement_timeout = '1e3'",
    "SET statement_timeout = '1S'",
    "SET statement_timeout = '1 sec'",
    "SET statement_timeout = '-1'",
    'SET statement_timeout = -1',
    'RESET statement_timeout',
    'SET statement_timeout TO DEFAULT',
  ])('refuses %s for a role with statementTimeout 5s', (sql) => {
    expect(decide(sql, timed).allow).toBe(false);
  });

  it.each([
    "SET statement_timeout = '1000us'",
    "SET statement_timeout = '1ms'",
    'SET statement_timeout = 1',
    'SET statement_timeout = 1.5',
    "SET statement_timeout = '4s'",
    "SET statement_timeout = '5s'",
    "SET statement_timeout = ' 5000 ms '",
    'SET statement_timeout = 5000',
    "SET statement_timeout = '0.05min'",
    "SET LOCAL statement_timeout = '250ms'",
  ])('allows %s for a role with statementTimeout 5s', (sql) => {
    expect(decide(sql, timed).allow).toBe(true);
  });

  it('names the rounding in the refusal', () => {
    expect(decide("SET statement_timeout = '400us'", timed).detail).toMatch(
      /0\.4 ms is below 1 ms: PostgreSQL would round it to 0/,
    );
    expect(decide("SET statement_timeout = '10s'", timed).detail).toMatch(
      /10000 ms exceeds the role's limit of 5000 ms/,
    );
  });

  it('leaves roles without statementTimeout free to set it', () => {
    expect(decide('SET statement_timeout = 0', untimed).allow).toBe(true);
    expect(decide("SET statement_timeout = '1h'", untimed).allow).toBe(true);
  });
});

describe('idle_in_transaction_session_timeout only goes down, and never to 0', () => {
  it.each([
    'SET idle_in_transaction_session_timeout = 0',
    "SET idle_in_transaction_session_timeout = '0'",
    "SET idle_in_transaction_session_timeout = '400us'",
    'SET idle_in_transaction_session_timeout = 0.5',
    "SET idle_in_transaction_session_timeout = '61s'",
    "SET idle_in_transaction_session_timeout = '1h'",
    'SET idle_in_transaction_session_timeout = 60001',
    "SET idle_in_transaction_session_timeout = 'forever'",
    "SET LOCAL idle_in_transaction_session_timeout = '0'",
  ])('refuses %s (default 60 s)', (sql) => {
    expect(decide(sql, makeRole()).allow).toBe(false);
  });

  it.each([
    "SET idle_in_transaction_session_timeout = '10s'",
    "SET idle_in_transaction_session_timeout = '60s'",
    "SET idle_in_transaction_session_timeout = '1min'",
    'SET idle_in_transaction_session_timeout = 1',
    'RESET idle_in_transaction_session_timeout',
    'SET idle_in_transaction_session_timeout TO DEFAULT',
  ])('allows %s (default 60 s; RESET and DEFAULT restore the stamped value)', (sql) => {
    expect(decide(sql, makeRole()).allow).toBe(true);
  });

  it("follows the role's idleInTransactionTimeout, and a role listing the setting cannot raise it", () => {
    expect(decide("SET idle_in_transaction_session_timeout = '30s'", idle30).allow).toBe(true);
    expect(decide("SET idle_in_transaction_session_timeout = '31s'", idle30).allow).toBe(false);
    const listed = makeRole({ settings: new Set(['idle_in_transaction_session_timeout']) });
    expect(decide('SET idle_in_transaction_session_timeout = 0', listed).allow).toBe(false);
  });

  it('allows lock_timeout 0 (statement_timeout still bounds a lock wait), as documented', () => {
    expect(decide('SET lock_timeout = 0', timed).allow).toBe(true);
    expect(HARMLESS_SETTINGS.get('lock_timeout')).toMatch(/statement_timeout still bounds/);
  });
});

describe('idle_in_transaction_session_timeout is stamped on every session, unless the role says 0', () => {
  const base = {
    sessionId: 's',
    sub: 'alice',
    agent: undefined,
    tenant: undefined,
    jti: undefined,
    roleName: 'analyst',
    readOnly: true,
    statementTimeoutMs: undefined,
    dbRole: undefined,
    searchPath: ['public'],
    clientApplicationName: undefined,
    forwarded: {},
  };
  it("uses the built-in 60 s when the role sets none, else the role's value", () => {
    expect(DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS).toBe(60_000);
    expect(stampParameters(base).idle_in_transaction_session_timeout).toBe('60000');
    expect(stampParameters({ ...base, idleInTransactionTimeoutMs: 30_000 }).idle_in_transaction_session_timeout).toBe(
      '30000',
    );
  });

  const load = (v: unknown) =>
    parsePolicyText(
      JSON.stringify({ roles: { r: { relations: ['public.t'], idleInTransactionTimeout: v } } }),
      'json',
      'p',
    );

  it('is a role setting of the policy file: a duration of at least 1ms, or 0 for none', () => {
    const ok = load('2m');
    expect(ok.ok).toBe(true);
    if (!ok.ok) return;
    expect(compilePolicy(ok.doc, 1, 'd').roles.get('r')?.idleInTransactionTimeout).toBe(120_000);
    for (const none of [0, '0s', '0ms', '0.0m']) {
      const zero = load(none);
      expect(zero.ok, String(none)).toBe(true);
      if (zero.ok) expect(compilePolicy(zero.doc, 1, 'd').roles.get('r')?.idleInTransactionTimeout).toBe(0);
    }
    for (const bad of ['0.4ms', -1, '-1s', '0', '0x', '', 'none']) {
      const r = load(bad);
      expect(r.ok, String(bad)).toBe(false);
      if (!r.ok) expect(JSON.stringify(r)).toMatch(/idleInTransactionTimeout/);
    }
  });

  it('0 stamps none, and the client may then set any value, 0 included', () => {
    expect(stampParameters({ ...base, idleInTransactionTimeoutMs: 0 })).not.toHaveProperty(
      'idle_in_transaction_session_timeout',
    );
    expect(
      stampParameters({
        ...base,
        idleInTransactionTimeoutMs: 0,
        settings: { idle_in_transaction_session_timeout: '3000' },
      }).idle_in_transaction_session_timeout,
    ).toBe('3000');
    const none = makeRole({ name: 'none', idleInTransactionTimeout: 0 });
    for (const sql of [
      'SET idle_in_transaction_session_timeout = 0',
      "SET idle_in_transaction_session_timeout = '1h'",
      "SELECT set_config('idle_in_transaction_session_timeout', '0', false)",
    ])
      expect(decide(sql, none).allow, sql).toBe(true);
    expect(judgeStartupSetting('idle_in_transaction_session_timeout', '3000', none).allow).toBe(true);
    expect(judgeStartupSetting('idle_in_transaction_session_timeout', '0', ROLES_DEFAULT).allow).toBe(false);
  });
});

describe('no-op SETs of pinned settings, compared as PostgreSQL reads the value', () => {
  it('pgBool is parse_bool: prefixes of true/false/yes/no, two letters of on/off, 1/0, no white space', () => {
    for (const t of ['on', 'ON', 'true', 't', 'TR', 'yes', 'y', '1']) expect(pgBool(t), t).toBe(true);
    for (const f of ['off', 'of', 'false', 'F', 'no', 'n', '0']) expect(pgBool(f), f).toBe(false);
    for (const x of ['', 'o', ' on', 'on ', 'onn', 'truee', '01', '2', 'yess']) expect(pgBool(x), x).toBeUndefined();
  });

  it('splitIdentifierList is SplitIdentifierString: commas, white space, quotes, ASCII lower-casing', () => {
    expect(splitIdentifierList('public')).toEqual(['public']);
    expect(splitIdentifierList(' PUBLIC , "$user" ')).toEqual(['public', '$user']);
    expect(splitIdentifierList('"a""b", "C"')).toEqual(['a"b', 'C']);
    expect(splitIdentifierList('')).toEqual([]);
    expect(splitIdentifierList('   ')).toEqual([]);
    expect(splitIdentifierList('ÄBC')).toEqual(['Äbc']);
    // A vertical tab: white space to C's isspace and to PostgreSQL 16's scanner, part of the name to PostgreSQL 15's
    // scanner_isspace; read either way it could name other schemas than pgwarden's, so it is never read.
    for (const bad of [
      'public,',
      ',public',
      'a b',
      '"unterminated',
      'a,,b',
      '"a"b',
      `${'x'.repeat(64)}`,
      'public\v',
      'a,\vb',
      '\vpublic',
    ])
      expect(splitIdentifierList(bad), bad).toBeUndefined();
  });

  it("a startup search_path is the raw list: the role's own is a no-op, anything else refused", () => {
    const role = makeRole({ name: 'two', searchPath: ['app', 'public'] });
    expect(judgeStartupSetting('search_path', 'app, public', role).allow).toBe(true);
    expect(judgeStartupSetting('search_path', 'APP,"public"', role).allow).toBe(true);
    expect(judgeStartupSetting('search_path', 'foo', role).allow).toBe(false);
    expect(judgeStartupSetting('search_path', 'public, app', role).allow).toBe(false);
    expect(judgeStartupSetting('search_path', '"app, public"', role).allow).toBe(false);
    // As SET arguments each string is one element: 'app, public' is one schema of that name.
    expect(decide("SET search_path = 'app, public'", role).allow).toBe(false);
    expect(decide('SET search_path = app, public', role).allow).toBe(true);
    expect(decide("SELECT set_config('search_path', 'app, public', true)", role).allow).toBe(true);
    expect(judgeStartupSetting('standard_conforming_strings', 'on', role).allow).toBe(true);
    expect(judgeStartupSetting('standard_conforming_strings', 'off', role).allow).toBe(false);
  });
});
