// Every entry of the curated function and setting lists is exercised through evaluate(), and documented.
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import {
  ALWAYS_DENIED, INTROSPECTION_FUNCTIONS, READABLE_SETTINGS, VOLATILE_ALLOWED, matchesPattern, judgeFunction,
} from '../../../policy/functions.ts';
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
  const synthetic = ALWAYS_DENIED.map((e) => exampleName(e.pattern)).filter((x) => !x.real).map((x) => x.name);
  const catalog = catalogWith(synthetic);
  it.each(ALWAYS_DENIED.map((e) => [e.pattern, e.reason]))('%s is denied even when the role allows it (%s)', (pattern) => {
    const { name, real } = exampleName(pattern);
    const qualified = real ? `pg_catalog.${name}` : `public.${name}`;
    const role = makeRole({ name: 'lenient', functions: { allow: new Set([qualified]), deny: new Set() }, catalog: 'introspection' });
    const d = evaluate(`SELECT ${qualified}()`, 'simple', sessionFor(role), catalog);
    expect(d.allow).toBe(false);
    if (!d.allow) {
      expect(d.reason).toBe('function_denied');
      expect(d.ruleId).toBe('builtin.functions');
    }
  });
});

describe('INTROSPECTION_FUNCTIONS', () => {
  it.each(INTROSPECTION_FUNCTIONS.map((e) => [e.pattern]))('%s needs catalog: introspection', (pattern) => {
    const { name, real } = exampleName(pattern);
    expect(real, `${pattern} matches a PostgreSQL 15 function`).toBe(true);
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
    expect(real).toBe(true);
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

describe('READABLE_SETTINGS', () => {
  it.each(READABLE_SETTINGS.map((e) => [e.pattern]))('current_setting(%s) is allowed', (pattern) => {
    const name = pattern.replace('*', 'x');
    expect(evaluate(`SELECT current_setting('${name}')`, 'simple', sessionFor(ROLES.analyst), makeCatalog()).allow).toBe(true);
  });
});

describe('settings lists', () => {
  it.each([...HARMLESS_SETTINGS.keys()].filter((n) => n !== 'statement_timeout').map((n) => [n]))('SET %s is allowed', (name) => {
    expect(evaluate(`SET ${name} = DEFAULT`, 'simple', sessionFor(ROLES.analyst), makeCatalog()).allow).toBe(true);
  });
  it.each([...NEVER_SETTINGS.keys()].map((n) => [n]))('SET %s is never allowed to read-only roles, whatever the policy says', (name) => {
    const role = makeRole({ settings: new Set([name]) });
    const sql = name === 'role' || name === 'session_authorization' ? `RESET ${name}` : `SET ${name} = DEFAULT`;
    const d = evaluate(sql, 'simple', sessionFor(role), makeCatalog());
    expect(d.allow).toBe(false);
  });
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
  it('documents every curated entry', () => {
    const all = [...ALWAYS_DENIED, ...INTROSPECTION_FUNCTIONS, ...VOLATILE_ALLOWED, ...READABLE_SETTINGS];
    for (const e of all) expect(doc, e.pattern).toContain(`\`${e.pattern}\``);
    for (const k of [...HARMLESS_SETTINGS.keys(), ...NEVER_SETTINGS.keys()]) expect(doc, k).toContain(`\`${k}\``);
  });
});
