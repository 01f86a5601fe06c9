// Every entry of the curated function and setting lists is exercised through evaluate(), and documented; judgeFunction's codes, table-driven.
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import {
  ALWAYS_DENIED,
  INTROSPECTION_FUNCTIONS,
  READABLE_SETTINGS,
  VOLATILE_ALLOWED,
  matchesPattern,
  judgeFunction,
  UNCLASSIFIED_HINT,
  UNCLASSIFIED_REASON,
  type FunctionVerdict,
} from '../../../policy/functions.ts';
import { REVIEWED_FUNCTIONS } from '../../../policy/review/review.ts';
import { applySections } from '../../../tools/catalog-review/docs.ts';
import { HARMLESS_SETTINGS, NEVER_SETTINGS } from '../../../policy/settings.ts';
import { INTROSPECTION_RELATIONS, DENIED_SYSTEM_RELATIONS } from '../../../policy/introspection.ts';
import type { CatalogFunction, CatalogSnapshot } from '../../../policy/types.ts';
import { PG15_FUNCTIONS, ROLES, makeCatalog, makeRole, sessionFor } from '../../fixtures/catalog.ts';

const PG_CATALOG_NAMES = [...new Set(PG15_FUNCTIONS.filter((r) => r[0] === 'pg_catalog').map((r) => r[1]))];

/** A real pg_catalog function matching the pattern, or a synthetic name (extension functions such as dblink). */
function exampleName(pattern: string): { name: string; real: boolean } {
  const real = PG_CATALOG_NAMES.find((n) => matchesPattern(n, pattern));
  return real !== undefined ? { name: real, real: true } : { name: pattern.replace(/\*/g, 'x'), real: false };
}

/** The test catalog plus synthetic extension functions in public. */
function catalogWith(extra: string[]): CatalogSnapshot {
  const base = makeCatalog();
  const functions = new Map(base.functions);
  for (const name of extra) {
    const f: CatalogFunction = { schema: 'public', name, volatility: 'v', kind: 'f', argTypes: [], returnsSet: false };
    functions.set(`public.${name}`, [f]);
  }
  return { ...base, functions };
}

beforeAll(async () => {
  await initParser();
});

describe('ALWAYS_DENIED', () => {
  const synthetic = ALWAYS_DENIED.map((e) => exampleName(e.pattern))
    .filter((x) => !x.real)
    .map((x) => x.name);
  const catalog = catalogWith(synthetic);
  it.each(ALWAYS_DENIED.map((e) => [e.pattern, e.reason]))(
    '%s is denied even when the role allows it (%s)',
    (pattern) => {
      const { name, real } = exampleName(pattern);
      const qualified = real ? `pg_catalog.${name}` : `public.${name}`;
      const role = makeRole({
        name: 'lenient',
        functions: { allow: new Set([qualified]), deny: new Set() },
        catalog: 'introspection',
      });
      const d = evaluate(`SELECT ${qualified}()`, 'simple', sessionFor(role), catalog);
      expect(d.allow).toBe(false);
      if (!d.allow) {
        // set_config is refused in shadow mode too (policy/settings.ts, pinned settings): its own reason says so.
        expect(d.reason).toBe(pattern === 'set_config' ? 'setting_pinned' : 'function_denied');
        expect(d.ruleId).toBe('builtin.functions');
      }
    },
  );
});

/** A pg_catalog name of the review matching the pattern (PostgreSQL 15 first, then later versions). */
function reviewedName(pattern: string): string | undefined {
  const real = exampleName(pattern);
  if (real.real) return real.name;
  for (const k of REVIEWED_FUNCTIONS.keys()) {
    if (k.startsWith('pg_catalog.') && matchesPattern(k.slice('pg_catalog.'.length), pattern))
      return k.slice('pg_catalog.'.length);
  }
  return undefined;
}

/** One synthetic overload, for names the PostgreSQL 15 fixture catalog does not have. */
function overload(name: string, volatility: 'i' | 's' | 'v' = 's', schema = 'pg_catalog'): CatalogFunction[] {
  return [{ schema, name, volatility, kind: 'f', argTypes: [], returnsSet: false }];
}

describe('INTROSPECTION_FUNCTIONS', () => {
  it.each(INTROSPECTION_FUNCTIONS.map((e) => [e.pattern]))('%s needs catalog: introspection', (pattern) => {
    const name = reviewedName(pattern);
    expect(name, `${pattern} matches a reviewed PostgreSQL function`).toBeDefined();
    if (name === undefined) return;
    if (!exampleName(pattern).real) {
      // Later versions only (pg_input_is_valid, pg_basetype): judged on a synthetic overload.
      expect(judgeFunction('pg_catalog', name, overload(name), ROLES.analyst)).toMatchObject({
        allow: false,
        code: 'introspection_only',
      });
      expect(judgeFunction('pg_catalog', name, overload(name), ROLES.intro)).toEqual({
        allow: true,
        via: 'introspection',
      });
      return;
    }
    const sql = `SELECT pg_catalog.${name}()`;
    const denied = evaluate(sql, 'simple', sessionFor(ROLES.analyst), makeCatalog());
    expect(denied.allow).toBe(false);
    if (!denied.allow) expect(denied.reason).toBe('function_denied');
    // Some names are also matched by ALWAYS_DENIED (e.g. pg_get_backend_memory_contexts) and stay denied.
    const always = ALWAYS_DENIED.some((e) => matchesPattern(name, e.pattern));
    expect(evaluate(sql, 'simple', sessionFor(ROLES.intro), makeCatalog()).allow).toBe(!always);
  });
});

describe('VOLATILE_ALLOWED', () => {
  it.each(VOLATILE_ALLOWED.map((e) => [e.pattern]))('%s is allowed although volatile', (pattern) => {
    const { name, real } = exampleName(pattern);
    if (!real) {
      // PostgreSQL 16+ names (uuidv7, random_normal): reviewed for 18, judged on a synthetic volatile overload.
      expect(REVIEWED_FUNCTIONS.get(`pg_catalog.${name}`)?.class, name).toBe('volatile_allowed');
      expect(judgeFunction('pg_catalog', name, overload(name, 'v'), ROLES.analyst)).toEqual({
        allow: true,
        via: 'volatile_allowed',
      });
      return;
    }
    expect(PG15_FUNCTIONS.some((r) => r[1] === name && r[2] === 'v')).toBe(true);
    expect(evaluate(`SELECT ${name}()`, 'simple', sessionFor(ROLES.analyst), makeCatalog()).allow).toBe(true);
  });

  it('other volatile pg_catalog functions are denied by default and allowed by functions.allow', () => {
    const role = makeRole({ functions: { allow: new Set(['pg_catalog.setseed']), deny: new Set() } });
    expect(evaluate('SELECT setseed(0.1)', 'simple', sessionFor(ROLES.analyst), makeCatalog()).allow).toBe(false);
    expect(evaluate('SELECT setseed(0.1)', 'simple', sessionFor(role), makeCatalog()).allow).toBe(true);
  });

  it('every volatile pg_catalog function is denied unless listed', () => {
    const catalog = makeCatalog();
    const volatile = [...new Set(PG15_FUNCTIONS.filter((r) => r[0] === 'pg_catalog' && r[2] === 'v').map((r) => r[1]))];
    for (const name of volatile) {
      const v = judgeFunction('pg_catalog', name, catalog.functions.get(`pg_catalog.${name}`), ROLES.analyst);
      const allowed = VOLATILE_ALLOWED.some((e) => matchesPattern(name, e.pattern));
      expect(v.allow, name).toBe(allowed);
    }
  });
});

describe('judgeFunction codes', () => {
  const lenient = (allow: string[]) =>
    makeRole({ name: 'lenient', functions: { allow: new Set(allow), deny: new Set() } });
  const introAllow = (allow: string[]) =>
    makeRole({ name: 'ia', catalog: 'introspection', functions: { allow: new Set(allow), deny: new Set() } });
  const catalog = makeCatalog();
  const real = (key: string) => catalog.functions.get(key);
  type Row = [
    what: string,
    schema: string,
    name: string,
    overloads: CatalogFunction[] | undefined,
    role: ReturnType<typeof makeRole>,
    expected: Partial<FunctionVerdict>,
  ];
  const rows: Row[] = [
    // Not in the review: denied by default, liftable with functions.allow.
    [
      'new pg_catalog function',
      'pg_catalog',
      'pg_future_fn',
      overload('pg_future_fn'),
      ROLES.analyst,
      { allow: false, rule: 'default', code: 'unclassified', why: UNCLASSIFIED_REASON, hint: UNCLASSIFIED_HINT },
    ],
    [
      'new pg_catalog function, introspection role',
      'pg_catalog',
      'pg_future_fn',
      overload('pg_future_fn'),
      ROLES.intro,
      { allow: false, code: 'unclassified' },
    ],
    [
      'new immutable pg_catalog function',
      'pg_catalog',
      'pg_future_fn',
      overload('pg_future_fn', 'i'),
      ROLES.analyst,
      { allow: false, code: 'unclassified' },
    ],
    [
      'new information_schema function',
      'information_schema',
      '_pg_future',
      overload('_pg_future', 'i', 'information_schema'),
      ROLES.analyst,
      { allow: false, code: 'unclassified' },
    ],
    [
      'new function allowed by the role',
      'pg_catalog',
      'pg_future_fn',
      overload('pg_future_fn'),
      lenient(['pg_catalog.pg_future_fn']),
      { allow: true, via: 'role_allow' },
    ],
    [
      'new function matching ALWAYS_DENIED',
      'pg_catalog',
      'pg_stat_reset_everything',
      overload('pg_stat_reset_everything'),
      lenient(['pg_catalog.pg_stat_reset_everything']),
      { allow: false, rule: 'builtin', code: 'always_denied' },
    ],
    [
      'new function denied by the role',
      'pg_catalog',
      'pg_future_fn',
      overload('pg_future_fn'),
      makeRole({ functions: { allow: new Set(), deny: new Set(['pg_catalog.pg_future_fn']) } }),
      { allow: false, code: 'role_denied' },
    ],
    [
      'unknown to the snapshot',
      'pg_catalog',
      'pg_future_fn',
      undefined,
      ROLES.analyst,
      { allow: false, code: 'unknown_function' },
    ],
    // denied: builtin, whatever functions.allow says.
    [
      'pg_lock_status (behind pg_locks)',
      'pg_catalog',
      'pg_lock_status',
      real('pg_catalog.pg_lock_status'),
      introAllow(['pg_catalog.pg_lock_status']),
      { allow: false, rule: 'builtin', code: 'always_denied' },
    ],
    [
      'pg_prepared_xact (behind pg_prepared_xacts)',
      'pg_catalog',
      'pg_prepared_xact',
      real('pg_catalog.pg_prepared_xact'),
      introAllow(['pg_catalog.pg_prepared_xact']),
      { allow: false, rule: 'builtin' },
    ],
    [
      'txid_status (other sessions)',
      'pg_catalog',
      'txid_status',
      real('pg_catalog.txid_status'),
      lenient(['pg_catalog.txid_status']),
      { allow: false, rule: 'builtin' },
    ],
    [
      'pg_current_snapshot (other sessions)',
      'pg_catalog',
      'pg_current_snapshot',
      real('pg_catalog.pg_current_snapshot'),
      ROLES.intro,
      { allow: false, rule: 'builtin' },
    ],
    [
      'pg_stat_get_progress_info (per backend)',
      'pg_catalog',
      'pg_stat_get_progress_info',
      real('pg_catalog.pg_stat_get_progress_info'),
      ROLES.intro,
      { allow: false, rule: 'builtin' },
    ],
    [
      'pg_sequence_last_value (data)',
      'pg_catalog',
      'pg_sequence_last_value',
      real('pg_catalog.pg_sequence_last_value'),
      ROLES.intro,
      { allow: false, rule: 'builtin' },
    ],
    [
      'eqsel (internal argument)',
      'pg_catalog',
      'eqsel',
      real('pg_catalog.eqsel'),
      lenient(['pg_catalog.eqsel']),
      { allow: false, rule: 'builtin', code: 'always_denied' },
    ],
    [
      'RI_FKey_check_ins (trigger)',
      'pg_catalog',
      'RI_FKey_check_ins',
      real('pg_catalog.RI_FKey_check_ins'),
      lenient(['pg_catalog.RI_FKey_check_ins']),
      { allow: false, rule: 'builtin' },
    ],
    // introspection: only with catalog: introspection.
    [
      'regclassout',
      'pg_catalog',
      'regclassout',
      real('pg_catalog.regclassout'),
      ROLES.analyst,
      { allow: false, rule: 'default', code: 'introspection_only' },
    ],
    [
      'regclassout, introspection role',
      'pg_catalog',
      'regclassout',
      real('pg_catalog.regclassout'),
      ROLES.intro,
      { allow: true, via: 'introspection' },
    ],
    [
      'regprocout',
      'pg_catalog',
      'regprocout',
      real('pg_catalog.regprocout'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'regtypeout',
      'pg_catalog',
      'regtypeout',
      real('pg_catalog.regtypeout'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'regnamespaceout',
      'pg_catalog',
      'regnamespaceout',
      real('pg_catalog.regnamespaceout'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'regroleout',
      'pg_catalog',
      'regroleout',
      real('pg_catalog.regroleout'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'regrolesend',
      'pg_catalog',
      'regrolesend',
      real('pg_catalog.regrolesend'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'makeaclitem (role names)',
      'pg_catalog',
      'makeaclitem',
      real('pg_catalog.makeaclitem'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'pg_stat_get_numscans (per relation)',
      'pg_catalog',
      'pg_stat_get_numscans',
      real('pg_catalog.pg_stat_get_numscans'),
      ROLES.intro,
      { allow: true, via: 'introspection' },
    ],
    [
      'pg_get_userbyid',
      'pg_catalog',
      'pg_get_userbyid',
      real('pg_catalog.pg_get_userbyid'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'inet_server_addr',
      'pg_catalog',
      'inet_server_addr',
      real('pg_catalog.inet_server_addr'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'information_schema._pg_expandarray',
      'information_schema',
      '_pg_expandarray',
      real('information_schema._pg_expandarray'),
      ROLES.analyst,
      { allow: false, code: 'introspection_only' },
    ],
    [
      'information_schema._pg_expandarray, introspection role',
      'information_schema',
      '_pg_expandarray',
      real('information_schema._pg_expandarray'),
      ROLES.intro,
      { allow: true, via: 'introspection' },
    ],
    [
      'introspection function allowed by the role',
      'pg_catalog',
      'regclassout',
      real('pg_catalog.regclassout'),
      lenient(['pg_catalog.regclassout']),
      { allow: true, via: 'role_allow' },
    ],
    // volatile: denied by default, liftable.
    [
      'setseed',
      'pg_catalog',
      'setseed',
      real('pg_catalog.setseed'),
      ROLES.analyst,
      { allow: false, rule: 'default', code: 'volatile' },
    ],
    [
      'setseed allowed by the role',
      'pg_catalog',
      'setseed',
      real('pg_catalog.setseed'),
      lenient(['pg_catalog.setseed']),
      { allow: true, via: 'role_allow' },
    ],
    // safe and volatile_allowed.
    ['lower', 'pg_catalog', 'lower', real('pg_catalog.lower'), ROLES.analyst, { allow: true, via: 'default' }],
    [
      'lower with a volatile overload (not the reviewed catalog)',
      'pg_catalog',
      'lower',
      overload('lower', 'v'),
      ROLES.analyst,
      { allow: false, code: 'volatile' },
    ],
    [
      'pg_prepared_statement (own session)',
      'pg_catalog',
      'pg_prepared_statement',
      real('pg_catalog.pg_prepared_statement'),
      ROLES.analyst,
      { allow: true, via: 'default' },
    ],
    [
      'pg_backend_pid (own session)',
      'pg_catalog',
      'pg_backend_pid',
      real('pg_catalog.pg_backend_pid'),
      ROLES.analyst,
      { allow: true, via: 'default' },
    ],
    ['version', 'pg_catalog', 'version', real('pg_catalog.version'), ROLES.analyst, { allow: true, via: 'default' }],
    [
      'random',
      'pg_catalog',
      'random',
      real('pg_catalog.random'),
      ROLES.analyst,
      { allow: true, via: 'volatile_allowed' },
    ],
    [
      'uuidv7 (PostgreSQL 18)',
      'pg_catalog',
      'uuidv7',
      overload('uuidv7', 'v'),
      ROLES.analyst,
      { allow: true, via: 'volatile_allowed' },
    ],
    // Outside the reviewed schemas nothing changes.
    [
      'public.add_one',
      'public',
      'add_one',
      real('public.add_one'),
      ROLES.analyst,
      { allow: false, code: 'not_pg_catalog' },
    ],
  ];
  it.each(rows)('%s', (_what, schema, name, overloads, role, expected) => {
    expect(judgeFunction(schema, name, overloads, role)).toMatchObject(expected);
  });

  it('the verdict keeps its shape: allow/via or allow/rule/code/why (hint only for unclassified)', () => {
    for (const [, schema, name, overloads, role] of rows) {
      const v = judgeFunction(schema, name, overloads, role);
      if (v.allow) expect(Object.keys(v).sort()).toEqual(['allow', 'via']);
      else
        expect(Object.keys(v).sort()).toEqual(
          v.code === 'unclassified' ? ['allow', 'code', 'hint', 'rule', 'why'] : ['allow', 'code', 'rule', 'why'],
        );
    }
  });

  it('evaluate reports an unclassified pg_catalog function as function_denied with the review reason', () => {
    const base = makeCatalog();
    const functions = new Map(base.functions);
    functions.set('pg_catalog.pg_future_fn', overload('pg_future_fn', 'i'));
    const d = evaluate('SELECT pg_future_fn()', 'simple', sessionFor(ROLES.intro), { ...base, functions });
    expect(d.allow).toBe(false);
    if (!d.allow) {
      expect(d.reason).toBe('function_denied');
      expect(d.ruleId).toBe('roles.intro.functions');
      expect(d.detail).toContain(UNCLASSIFIED_REASON);
    }
    const allowed = makeRole({
      name: 'ok',
      functions: { allow: new Set(['pg_catalog.pg_future_fn']), deny: new Set() },
    });
    expect(evaluate('SELECT pg_future_fn()', 'simple', sessionFor(allowed), { ...base, functions }).allow).toBe(true);
  });

  it('every PostgreSQL 15 function of the fixture catalog is classified', () => {
    const missing = [...new Set(PG15_FUNCTIONS.map((r) => `${r[0]}.${r[1]}`))].filter(
      (k) => !REVIEWED_FUNCTIONS.has(k),
    );
    expect(missing).toEqual([]);
  });
});

describe('READABLE_SETTINGS', () => {
  it.each(READABLE_SETTINGS.map((e) => [e.pattern]))('current_setting(%s) is allowed', (pattern) => {
    const name = pattern.replace('*', 'x');
    expect(
      evaluate(`SELECT current_setting('${name}')`, 'simple', sessionFor(ROLES.analyst), makeCatalog()).allow,
    ).toBe(true);
  });
});

describe('settings lists', () => {
  it.each([...HARMLESS_SETTINGS.keys()].filter((n) => n !== 'statement_timeout').map((n) => [n]))(
    'SET %s is allowed',
    (name) => {
      expect(evaluate(`SET ${name} = DEFAULT`, 'simple', sessionFor(ROLES.analyst), makeCatalog()).allow).toBe(true);
    },
  );
  it.each([...NEVER_SETTINGS.keys()].map((n) => [n]))(
    'SET %s is never allowed to read-only roles, whatever the policy says',
    (name) => {
      const role = makeRole({ settings: new Set([name]) });
      // client_encoding's DEFAULT is the stamped UTF8, standard_conforming_strings' the stamped on, search_path's the
      // role's searchPath: those no-ops are allowed; a change to another value is what is never allowed.
      const sql =
        name === 'role' || name === 'session_authorization'
          ? `RESET ${name}`
          : name === 'client_encoding'
            ? `SET ${name} = 'LATIN1'`
            : name === 'standard_conforming_strings'
              ? `SET ${name} = off`
              : name === 'search_path'
                ? `SET ${name} = evil`
                : `SET ${name} = DEFAULT`;
      const d = evaluate(sql, 'simple', sessionFor(role), makeCatalog());
      expect(d.allow).toBe(false);
    },
  );
});

describe('introspection relations', () => {
  it('allowed and denied system relations do not overlap', () => {
    for (const k of DENIED_SYSTEM_RELATIONS.keys()) expect(INTROSPECTION_RELATIONS.has(k), k).toBe(false);
  });
  it.each([...INTROSPECTION_RELATIONS].map((k) => [k]))('%s is readable by an introspection role only', (key) => {
    const sql = `SELECT 1 FROM ${key}`;
    expect(evaluate(sql, 'simple', sessionFor(ROLES.intro), makeCatalog()).allow).toBe(true);
    expect(evaluate(sql, 'simple', sessionFor(ROLES.analyst), makeCatalog()).allow).toBe(false);
  });
});

describe('docs/functions.md', () => {
  const doc = readFileSync(new URL('../../../docs/functions.md', import.meta.url), 'utf8');
  it('generated sections are up to date (node --import tsx tools/catalog-review/docs.ts)', () => {
    expect(applySections(doc)).toBe(doc);
  });
  it('documents every curated entry', () => {
    const all = [...ALWAYS_DENIED, ...INTROSPECTION_FUNCTIONS, ...VOLATILE_ALLOWED, ...READABLE_SETTINGS];
    for (const e of all) expect(doc, e.pattern).toContain(`\`${e.pattern}\``);
    for (const k of [...HARMLESS_SETTINGS.keys(), ...NEVER_SETTINGS.keys()]) expect(doc, k).toContain(`\`${k}\``);
  });
});
