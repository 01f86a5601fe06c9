// Policy files: parsing, validation (every issue, with its path), compilation, and agreement with policy/schema.json.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CATALOG_MODES,
  FUNCTIONS_KEYS,
  MODES,
  ON_ROW_CAP,
  PINNED_SETTINGS,
  ROLE_KEYS,
  TOP_LEVEL_KEYS,
  WRITE_KEYS,
  WRITE_KINDS,
  compilePolicy,
  formatIssue,
  loadPolicyFile,
  parseDurationMs,
  parsePolicyText,
  parseRelationPattern,
  policyRelations,
  splitQualifiedName,
  type PolicyIssue,
} from '../../../policy/load.ts';
import { policyCheck } from '../../../proxy/cli/policy.ts';
import { EXAMPLE_POLICY_YAML } from '../../fixtures/example.ts';

const EXAMPLE = `# policy.yaml — this exact example must load\n${EXAMPLE_POLICY_YAML}`;

function issuesOf(text: string, format: 'yaml' | 'json' = 'yaml'): PolicyIssue[] {
  const r = parsePolicyText(text, format, 'test');
  return r.ok ? [] : r.issues;
}

function paths(text: string, format: 'yaml' | 'json' = 'yaml'): string[] {
  return issuesOf(text, format).map((i) => i.path);
}

function compile(text: string) {
  const r = parsePolicyText(text, 'yaml', 'test');
  if (!r.ok) throw new Error(r.issues.map((i) => formatIssue(i, 'test')).join('\n'));
  return compilePolicy(r.doc, 1, 'digest');
}

describe('the documented example', () => {
  it('loads and compiles with the documented defaults', () => {
    const policy = compile(EXAMPLE);
    expect(policy.version).toBe(1);
    const analyst = policy.roles.get('analyst');
    expect(analyst).toBeDefined();
    expect(analyst).toMatchObject({
      name: 'analyst',
      mode: 'enforce',
      readOnly: true,
      relations: [
        { schema: 'public', name: 'orders' },
        { schema: 'public', name: 'customers' },
      ],
      write: undefined,
      catalog: 'none',
      maxRows: 100,
      onRowCap: 'truncate',
      statementTimeout: 5000,
      dbRole: undefined,
      searchPath: ['public'],
    });
    expect([...(analyst?.deniedColumns.get('public.customers') ?? [])]).toEqual(['ssn']);
    expect(analyst?.functions.allow.size).toBe(0);
    expect(analyst?.settings.size).toBe(0);
  });

  it('loads the same policy written as JSON', () => {
    const json = JSON.stringify({
      $schema: './schema.json',
      version: 1,
      roles: { analyst: { readOnly: true, relations: ['public.orders'], maxRows: 100, statementTimeout: 5 } },
    });
    const r = parsePolicyText(json, 'json', 'p.json');
    expect(r.ok).toBe(true);
    if (r.ok) expect(compilePolicy(r.doc, 3, 'd').roles.get('analyst')?.statementTimeout).toBe(5000);
  });

  it('the compiled policy is frozen, maps and sets included', () => {
    const policy = compile(EXAMPLE);
    const analyst = policy.roles.get('analyst')!;
    expect(Object.isFrozen(policy)).toBe(true);
    expect(Object.isFrozen(analyst)).toBe(true);
    expect(Object.isFrozen(analyst.relations)).toBe(true);
    expect(() => (policy.roles as Map<string, unknown>).set('x', {})).toThrow(TypeError);
    expect(() => (analyst.deniedColumns.get('public.customers') as Set<string>).add('email')).toThrow(TypeError);
  });
});

describe('identifiers fold like Postgres', () => {
  it.each([
    ['public.orders', { schema: 'public', name: 'orders' }],
    ['Public.Orders', { schema: 'public', name: 'orders' }],
    ['sales."Orders"', { schema: 'sales', name: 'Orders' }],
    ['"My Schema"."a""b"', { schema: 'My Schema', name: 'a"b' }],
    ['sales.*', { schema: 'sales', name: '*' }],
    ['"Sales".*', { schema: 'Sales', name: '*' }],
    ['public.t$1', { schema: 'public', name: 't$1' }],
    ['public.café', { schema: 'public', name: 'café' }],
  ])('%s', (text, expected) => {
    const r = parseRelationPattern(text);
    expect(r).toEqual({ ok: true, pattern: expected });
  });

  it.each([
    ['orders', /schema-qualified/],
    ['db.public.orders', /schema\.name/],
    ['*.orders', /name its schema/],
    ['public."*"', /literally called/],
    ['public.', /end with/],
    ['public.""', /zero-length/],
    ['public."open', /unterminated/],
    ['public.my table', /spaces/],
    ['public.my-table', /unexpected character/],
    ['public.1abc', /unexpected character/],
    [`public.${'x'.repeat(64)}`, /63 bytes/],
  ])('rejects %s', (text, message) => {
    const r = parseRelationPattern(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(message);
  });

  it('keeps quoted case and lowercases only ASCII letters, as Postgres does for UTF8', () => {
    expect(splitQualifiedName('ÉCOLE."Ü"')).toEqual({
      ok: true,
      parts: [
        { value: 'École', quoted: false },
        { value: 'Ü', quoted: true },
      ],
    });
  });
});

describe('durations', () => {
  it.each([
    ['5s', 5000],
    ['250ms', 250],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    [5, 5000],
    [0.25, 250],
  ])('%s → %i ms', (v, ms) => {
    expect(parseDurationMs(v)).toEqual({ ok: true, ms });
  });

  it.each(['5', '5 s', ' 5s', 'five seconds', '-1s', '0s', '0.1ms', 0, -3, '1000h', true, null])('rejects %s', (v) => {
    expect(parseDurationMs(v).ok).toBe(false);
  });
});

describe('validation reports every issue with its path', () => {
  it('collects all issues of a bad document at once', () => {
    const text = `version: 2
roles:
  analyst:
    readOnly: yes-please
    relations: [orders, public.customers]
    maxRows: -1
    onRowCap: sometimes
    statementTimeout: soon
    catalog: all
    mode: strict
    colour: blue
`;
    expect(paths(text).sort()).toEqual(
      [
        'version',
        'roles.analyst.readOnly',
        'roles.analyst.relations[0]',
        'roles.analyst.maxRows',
        'roles.analyst.onRowCap',
        'roles.analyst.statementTimeout',
        'roles.analyst.catalog',
        'roles.analyst.mode',
        'roles.analyst.colour',
      ].sort(),
    );
  });

  it('says maxRows must be a positive integer, with the line', () => {
    const issues = issuesOf('roles:\n  analyst:\n    maxRows: 1.5\n');
    expect(issues).toEqual([
      { path: 'roles.analyst.maxRows', message: 'must be a positive integer (got number 1.5)', line: 3 },
    ]);
    expect(formatIssue(issues[0]!, 'policy.yaml')).toBe(
      'policy.yaml:3: roles.analyst.maxRows: must be a positive integer (got number 1.5)',
    );
  });

  it('allows twoPhase only on a read-write role, and compiles it only there', () => {
    expect(issuesOf('roles:\n  ro:\n    twoPhase: true\n')).toEqual([
      {
        path: 'roles.ro.twoPhase',
        message:
          'is only allowed with readOnly: false (PREPARE TRANSACTION keeps a transaction and its locks past the session, and COMMIT PREPARED commits writes of any session of the upstream login)',
        line: 3,
      },
    ]);
    expect(issuesOf('roles:\n  ro:\n    twoPhase: 1\n')[0]?.message).toBe('must be true or false (got number 1)');
    const policy = compile(
      'roles:\n  rw:\n    readOnly: false\n    write: { statements: [insert], relations: [public.t] }\n    twoPhase: true\n  plain:\n    readOnly: false\n    write: { statements: [insert], relations: [public.t] }\n',
    );
    expect(policy.roles.get('rw')?.twoPhase).toBe(true);
    expect(policy.roles.get('plain')?.twoPhase).toBeUndefined();
    expect(
      issuesOf('roles:\n  a:\n    catalog: introspection\n    relations: [pg_catalog.pg_prepared_xacts]\n')[0]?.message,
    ).toMatch(/only twoPhase: true .* lets a role read it/);
  });

  it('tells the user to qualify relation names', () => {
    const [issue] = issuesOf('roles:\n  analyst:\n    relations: [orders]\n');
    expect(issue?.path).toBe('roles.analyst.relations[0]');
    expect(issue?.message).toMatch(/schema-qualified.*public\.orders/);
  });

  it('suggests the closest key for a typo', () => {
    const [issue] = issuesOf('roles:\n  analyst:\n    maxrows: 10\n');
    expect(issue).toMatchObject({
      path: 'roles.analyst.maxrows',
      message: expect.stringContaining('did you mean "maxRows"'),
    });
  });

  it.each([
    ['an empty file', '', ''],
    ['a list', '- a\n', ''],
    ['no roles', 'version: 1\n', 'roles'],
    ['zero roles', 'roles: {}\n', 'roles'],
    ['roles as a list', 'roles: [analyst]\n', 'roles'],
    ['an unknown top-level key', 'roles: { a: {} }\nrule: 1\n', 'rule'],
    ['a role that is not a mapping', 'roles: { a: true }\n', 'roles.a'],
    ['a bad role name', 'roles: { "data-team": {} }\n', 'roles["data-team"]'],
    ['a long role name', `roles: { ${'r'.repeat(64)}: {} }\n`, `roles.${'r'.repeat(64)}`],
    ['case-colliding role names', 'roles: { analyst: {}, Analyst: {} }\n', 'roles.Analyst'],
    [
      'write on a read-only role',
      'roles: { a: { write: { statements: [insert], relations: [public.t] } } }\n',
      'roles.a.write',
    ],
    [
      'write with readOnly: true',
      'roles: { a: { readOnly: true, write: { statements: [insert], relations: [public.t] } } }\n',
      'roles.a.write',
    ],
    ['readOnly: false without write', 'roles: { a: { readOnly: false } }\n', 'roles.a.readOnly'],
    [
      'an unknown write kind',
      'roles: { a: { readOnly: false, write: { statements: [upsert], relations: [public.t] } } }\n',
      'roles.a.write.statements[0]',
    ],
    [
      'empty write statements',
      'roles: { a: { readOnly: false, write: { statements: [], relations: [public.t] } } }\n',
      'roles.a.write.statements',
    ],
    [
      'missing write relations',
      'roles: { a: { readOnly: false, write: { statements: [insert] } } }\n',
      'roles.a.write.relations',
    ],
    [
      'an unknown key in write',
      'roles: { a: { readOnly: false, write: { statements: [insert], relations: [public.t], tables: [] } } }\n',
      'roles.a.write.tables',
    ],
    ['deniedColumns as a list', 'roles: { a: { deniedColumns: [ssn] } }\n', 'roles.a.deniedColumns'],
    [
      'deniedColumns on a wildcard',
      'roles: { a: { relations: [public.*], deniedColumns: { public.*: [ssn] } } }\n',
      'roles.a.deniedColumns["public.*"]',
    ],
    [
      'deniedColumns on an unreachable relation',
      'roles: { a: { relations: [public.customers], deniedColumns: { public.customer: [ssn] } } }\n',
      'roles.a.deniedColumns["public.customer"]',
    ],
    [
      'an empty deniedColumns list',
      'roles: { a: { relations: [public.c], deniedColumns: { public.c: [] } } }\n',
      'roles.a.deniedColumns["public.c"]',
    ],
    [
      'a qualified column name',
      'roles: { a: { relations: [public.c], deniedColumns: { public.c: [c.ssn] } } }\n',
      'roles.a.deniedColumns["public.c"][0]',
    ],
    ['an unqualified function', 'roles: { a: { functions: { allow: [now] } } }\n', 'roles.a.functions.allow[0]'],
    ['a function wildcard', 'roles: { a: { functions: { deny: [public.*] } } }\n', 'roles.a.functions.deny[0]'],
    [
      'a function both allowed and denied',
      'roles: { a: { functions: { allow: [public.f], deny: [PUBLIC.F] } } }\n',
      'roles.a.functions.deny[0]',
    ],
    ['an unknown functions key', 'roles: { a: { functions: { permit: [] } } }\n', 'roles.a.functions.permit'],
    [
      'an allow entry for a function never callable',
      'roles: { a: { functions: { allow: [public.f, pg_catalog.pg_sleep] } } }\n',
      'roles.a.functions.allow[1]',
    ],
    [
      'an allow entry for a never-callable pattern in another schema',
      'roles: { a: { functions: { allow: [ext.dblink_exec] } } }\n',
      'roles.a.functions.allow[0]',
    ],
    ['a pinned setting', 'roles: { a: { settings: [work_mem, Search_Path] } }\n', 'roles.a.settings[1]'],
    ['a malformed setting', 'roles: { a: { settings: ["work mem"] } }\n', 'roles.a.settings[0]'],
    ['onRowCap without maxRows', 'roles: { a: { onRowCap: error } }\n', 'roles.a.onRowCap'],
    ['maxRows as a string', 'roles: { a: { maxRows: "100" } }\n', 'roles.a.maxRows'],
    ['maxRows zero', 'roles: { a: { maxRows: 0 } }\n', 'roles.a.maxRows'],
    ['a zero timeout', 'roles: { a: { statementTimeout: 0 } }\n', 'roles.a.statementTimeout'],
    ['a qualified dbRole', 'roles: { a: { dbRole: x.y } }\n', 'roles.a.dbRole'],
    ['a numeric dbRole', 'roles: { a: { dbRole: 5 } }\n', 'roles.a.dbRole'],
    ['$user in searchPath', 'roles: { a: { searchPath: [$user, public] } }\n', 'roles.a.searchPath[0]'],
    ['searchPath as a string', 'roles: { a: { searchPath: public } }\n', 'roles.a.searchPath'],
    ['a non-string relation', 'roles: { a: { relations: [1] } }\n', 'roles.a.relations[0]'],
    ['version 2', 'version: 2\nroles: { a: {} }\n', 'version'],
  ])('rejects %s', (_name, text, path) => {
    expect(paths(text)).toContain(path);
  });

  it('reports YAML syntax errors with a line, and duplicate keys (YAML and JSON)', () => {
    expect(issuesOf('roles:\n  a: [public.x\n')[0]).toMatchObject({ path: '', line: expect.any(Number) });
    expect(issuesOf('roles:\n  a: {}\n  a: {}\n')[0]?.message).toMatch(/duplicate key a/);
    expect(issuesOf('{"roles": {"a": {}, "a": {"maxRows": 1}}}', 'json')[0]?.message).toMatch(/duplicate key "a"/);
    expect(issuesOf('{"roles": ', 'json')[0]?.message).toMatch(/not valid JSON/);
  });

  it('does not let __proto__ or merge keys smuggle settings past validation', () => {
    expect(paths('roles:\n  __proto__: { maxRows: 1 }\n')).toEqual([]);
    // A role named __proto__ is a plain key, not a prototype: it shows up as a role and nothing else changes.
    const policy = compile('roles:\n  __proto__: { maxRows: 1 }\n');
    expect([...policy.roles.keys()]).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>).maxRows).toBeUndefined();
    // YAML merge keys share settings between roles; merged keys are validated like any other.
    const merged = compile('roles:\n  a: &a { relations: [public.t], maxRows: 5 }\n  b: { <<: *a, maxRows: 7 }\n');
    expect(merged.roles.get('b')?.maxRows).toBe(7);
    expect(merged.roles.get('b')?.relations).toEqual([{ schema: 'public', name: 't' }]);
    expect(paths('roles:\n  a: &a { relations: [public.t] }\n  b: { <<: *a, maxrows: 7 }\n')).toEqual([
      'roles.b.maxrows',
    ]);
  });
});

describe('compilation', () => {
  it('compiles every key of a read-write role', () => {
    const policy = compile(`version: 1
roles:
  writer:
    mode: shadow
    readOnly: false
    relations: [Sales.*, 'sales."Orders"', public.orders, public.ORDERS]
    write: { statements: [insert, update, insert], relations: ['sales."Orders"'] }
    deniedColumns: { 'sales."Orders"': [SSN, '"Card No"'] }
    functions: { allow: [public.My_Fn], deny: [pg_catalog.pg_sleep] }
    settings: [Work_Mem, myapp.tenant]
    catalog: introspection
    maxRows: 10
    onRowCap: error
    statementTimeout: 250ms
    dbRole: '"AppWriter"'
    searchPath: [sales, '"Public"']
`);
    const w = policy.roles.get('writer')!;
    expect(w.mode).toBe('shadow');
    expect(w.readOnly).toBe(false);
    expect(w.relations).toEqual([
      { schema: 'sales', name: '*' },
      { schema: 'sales', name: 'Orders' },
      { schema: 'public', name: 'orders' },
    ]);
    expect(w.write).toEqual({ kinds: ['insert', 'update'], relations: [{ schema: 'sales', name: 'Orders' }] });
    expect([...w.deniedColumns.keys()]).toEqual(['sales.Orders']);
    expect([...w.deniedColumns.get('sales.Orders')!]).toEqual(['ssn', 'Card No']);
    expect([...w.functions.allow]).toEqual(['public.my_fn']);
    expect([...w.functions.deny]).toEqual(['pg_catalog.pg_sleep']);
    expect([...w.settings]).toEqual(['work_mem', 'myapp.tenant']);
    expect(w.catalog).toBe('introspection');
    expect(w.onRowCap).toBe('error');
    expect(w.statementTimeout).toBe(250);
    expect(w.dbRole).toBe('AppWriter');
    expect(w.searchPath).toEqual(['sales', 'Public']);
    expect(policyRelations(policy)).toEqual(w.relations);
  });

  it('refuses unvalidated input with a TypeError', () => {
    expect(() => compilePolicy({ roles: { a: { relations: ['orders'] } } }, 1, 'd')).toThrow(TypeError);
    expect(() => compilePolicy({ roles: {} }, 0, 'd')).toThrow(TypeError);
  });
});

describe('files and policy check', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-load-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('loads a file with its sha256 digest; picks JSON by extension', async () => {
    const file = path.join(dir, 'p.yaml');
    writeFileSync(file, EXAMPLE);
    const r = await loadPolicyFile(file);
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.digest).toMatch(/^[0-9a-f]{64}$/);
    const jf = path.join(dir, 'p.json');
    writeFileSync(jf, 'roles:\n  a: {}\n'); // YAML in a .json file is not JSON
    expect((await loadPolicyFile(jf)).ok).toBe(false);
  });

  it('missing and oversized files are issues, not exceptions', async () => {
    const r = await loadPolicyFile(path.join(dir, 'missing.yaml'));
    expect(r).toMatchObject({ ok: false, issues: [{ path: '', message: 'does not exist' }] });
    const big = path.join(dir, 'big.yaml');
    writeFileSync(big, '#'.repeat(2 << 20));
    expect((await loadPolicyFile(big)).ok).toBe(false);
  });

  it('policy check prints every issue with file:line: path, and fails', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(file, 'roles:\n  analyst:\n    maxRows: 0\n    relations: [orders]\n');
    const r = await policyCheck(file);
    expect(r.ok).toBe(false);
    expect(r.output).toContain(`${file}:3: roles.analyst.maxRows: must be a positive integer`);
    expect(r.output).toContain(`${file}:4: roles.analyst.relations[0]: must be schema-qualified`);
    expect(r.output).toContain('2 issues');
  });

  it('policy check summarises a valid policy', async () => {
    const file = path.join(dir, 'ok.yaml');
    writeFileSync(file, EXAMPLE);
    const r = await policyCheck(file);
    expect(r.ok).toBe(true);
    expect(r.output).toMatch(/OK, 1 role/);
    expect(r.output).toContain('denied columns of public.customers: ssn');
    expect(r.output).toContain(
      'maxRows 100 (truncate); statementTimeout 5s; idleInTransactionTimeout 1m; holdCursors 0',
    );
  });

  it('policy check shows hold cursors, idle-in-transaction timeout and budget as they will apply', async () => {
    const file = path.join(dir, 'budget.yaml');
    writeFileSync(
      file,
      'roles:\n  etl:\n    readOnly: false\n    relations: [public.orders]\n    write: { statements: [insert], relations: [public.orders] }\n' +
        '    idleInTransactionTimeout: 15s\n    holdCursors: 5\n    budget: { per: agent, statementsPerMinute: 600, concurrentStatements: 4 }\n',
    );
    const r = await policyCheck(file);
    expect(r.ok, r.output).toBe(true);
    expect(r.output).toContain('idleInTransactionTimeout 15s; holdCursors 5');
    expect(r.output).toContain('budget per agent: 600 statements/min, 4 concurrent statements');
  });
});

// ---------------------------------------------------------------------------------------------
// policy/schema.json agrees with the validator
// ---------------------------------------------------------------------------------------------

type Schema = Record<string, unknown>;
const schema = JSON.parse(readFileSync(new URL('../../../policy/schema.json', import.meta.url), 'utf8')) as Schema;

const ANNOTATIONS = new Set(['$schema', '$id', '$comment', 'title', 'description', 'default', '$defs']);

/**
 * A small JSON Schema 2020-12 checker covering exactly the keywords schema.json uses; an unknown keyword
 * throws, so the schema cannot quietly rely on something this test does not check.
 */
function schemaValid(s: unknown, v: unknown): boolean {
  if (s === true) return true;
  if (s === false) return false;
  const node = s as Schema;
  const typeOf = (x: unknown): string =>
    x === null
      ? 'null'
      : Array.isArray(x)
        ? 'array'
        : typeof x === 'number' && Number.isInteger(x)
          ? 'integer'
          : typeof x;
  for (const [k, arg] of Object.entries(node)) {
    if (ANNOTATIONS.has(k)) continue;
    const a = arg as never;
    let ok: boolean;
    switch (k) {
      case '$ref': {
        const name = String(arg).replace('#/$defs/', '');
        ok = schemaValid((schema.$defs as Schema)[name], v);
        break;
      }
      case 'type': {
        const t = typeOf(v);
        ok = t === arg || (arg === 'number' && t === 'integer');
        break;
      }
      case 'const':
        ok = JSON.stringify(v) === JSON.stringify(arg);
        break;
      case 'enum':
        ok = (arg as unknown[]).some((e) => JSON.stringify(e) === JSON.stringify(v));
        break;
      case 'not':
        ok = !schemaValid(a, v);
        break;
      case 'anyOf':
        ok = (arg as unknown[]).some((sub) => schemaValid(sub, v));
        break;
      case 'allOf':
        ok = (arg as unknown[]).every((sub) => schemaValid(sub, v));
        break;
      case 'if': {
        const branch = schemaValid(a, v) ? node.then : node.else;
        ok = branch === undefined || schemaValid(branch, v);
        break;
      }
      case 'then':
      case 'else':
        ok = true; // evaluated with 'if'
        break;
      case 'pattern':
        ok = typeof v !== 'string' || new RegExp(String(arg), 'u').test(v);
        break;
      case 'minimum':
        ok = typeof v !== 'number' || v >= (arg as number);
        break;
      case 'maximum':
        ok = typeof v !== 'number' || v <= (arg as number);
        break;
      case 'exclusiveMinimum':
        ok = typeof v !== 'number' || v > (arg as number);
        break;
      case 'minItems':
        ok = !Array.isArray(v) || v.length >= (arg as number);
        break;
      case 'items':
        ok = !Array.isArray(v) || v.every((x) => schemaValid(a, x));
        break;
      case 'required':
        ok = typeOf(v) !== 'object' || (arg as string[]).every((r) => Object.hasOwn(v as object, r));
        break;
      case 'minProperties':
        ok = typeOf(v) !== 'object' || Object.keys(v as object).length >= (arg as number);
        break;
      case 'properties':
        ok =
          typeOf(v) !== 'object' ||
          Object.entries(arg as Schema).every(
            ([p, sub]) => !Object.hasOwn(v as object, p) || schemaValid(sub, (v as Schema)[p]),
          );
        break;
      case 'additionalProperties': {
        const known = Object.keys((node.properties as Schema | undefined) ?? {});
        ok =
          typeOf(v) !== 'object' ||
          Object.entries(v as Schema).every(([p, x]) => known.includes(p) || schemaValid(a, x));
        break;
      }
      case 'propertyNames':
        ok = typeOf(v) !== 'object' || Object.keys(v as object).every((p) => schemaValid(a, p));
        break;
      case 'dependentRequired':
        ok =
          typeOf(v) !== 'object' ||
          Object.entries(arg as Record<string, string[]>).every(
            ([p, deps]) => !Object.hasOwn(v as object, p) || deps.every((d) => Object.hasOwn(v as object, d)),
          );
        break;
      default:
        throw new Error(`schema.json uses keyword ${k}, which this test's checker does not implement`);
    }
    if (!ok) return false;
  }
  return true;
}

describe('policy/schema.json', () => {
  const defs = schema.$defs as Record<string, Schema>;
  const role = defs.role as Schema & { properties: Record<string, Schema> };

  it('is draft 2020-12 and lists exactly the keys the validator accepts', () => {
    expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(Object.keys(schema.properties as object).sort()).toEqual([...TOP_LEVEL_KEYS].sort());
    expect(Object.keys(role.properties).sort()).toEqual([...ROLE_KEYS].sort());
    const write = role.properties.write as { properties: object };
    expect(Object.keys(write.properties).sort()).toEqual([...WRITE_KEYS].sort());
    const functions = role.properties.functions as { properties: object };
    expect(Object.keys(functions.properties).sort()).toEqual([...FUNCTIONS_KEYS].sort());
  });

  it('lists the same enumerations and pinned settings', () => {
    expect(role.properties.mode?.enum).toEqual([...MODES]);
    expect(role.properties.catalog?.enum).toEqual([...CATALOG_MODES]);
    expect(role.properties.onRowCap?.enum).toEqual([...ON_ROW_CAP]);
    const statements = (role.properties.write as { properties: { statements: { items: { enum: string[] } } } })
      .properties.statements;
    expect(statements.items.enum).toEqual([...WRITE_KINDS]);
    const settings = role.properties.settings as { items: { not: { enum: string[] } } };
    expect([...settings.items.not.enum].sort()).toEqual([...PINNED_SETTINGS].sort());
  });

  it('accepts the example', () => {
    const r = parsePolicyText(EXAMPLE, 'yaml', 'test');
    expect(r.ok).toBe(true);
    if (r.ok) expect(schemaValid(schema, r.doc)).toBe(true);
  });

  // [name, document, validator accepts?, schema accepts?]. The schema may only be laxer, for checks JSON Schema
  // cannot express; it must never reject what pgwarden accepts.
  const cases: [string, unknown, boolean, boolean][] = [
    [
      'full read-write role',
      {
        version: 1,
        roles: {
          w: {
            mode: 'shadow',
            readOnly: false,
            relations: ['sales.*', 'sales."Orders"'],
            write: { statements: ['insert', 'copy_from'], relations: ['sales."Orders"'] },
            deniedColumns: { 'sales."Orders"': ['ssn', '"Card"'] },
            functions: { allow: ['public.f'], deny: ['public.g'] },
            settings: ['work_mem'],
            catalog: 'introspection',
            maxRows: 5,
            onRowCap: 'error',
            statementTimeout: '2m',
            dbRole: 'app',
            searchPath: ['sales', 'public'],
          },
        },
      },
      true,
      true,
    ],
    ['numeric timeout', { roles: { a: { statementTimeout: 1.5 } } }, true, true],
    ['empty role', { roles: { a: {} } }, true, true],
    ['no roles', { roles: {} }, false, false],
    ['missing roles', { version: 1 }, false, false],
    ['unknown top-level key', { roles: { a: {} }, extra: 1 }, false, false],
    ['version 2', { version: 2, roles: { a: {} } }, false, false],
    ['bad role name', { roles: { 'a-b': {} } }, false, false],
    ['unknown role key', { roles: { a: { maxrows: 1 } } }, false, false],
    ['unqualified relation', { roles: { a: { relations: ['orders'] } } }, false, false],
    ['three-part relation', { roles: { a: { relations: ['d.s.t'] } } }, false, false],
    ['maxRows 0', { roles: { a: { maxRows: 0 } } }, false, false],
    ['maxRows fractional', { roles: { a: { maxRows: 1.5 } } }, false, false],
    ['bad mode', { roles: { a: { mode: 'audit' } } }, false, false],
    ['bad duration', { roles: { a: { statementTimeout: '5 s' } } }, false, false],
    ['negative duration', { roles: { a: { statementTimeout: -5 } } }, false, false],
    [
      'write on read-only role',
      { roles: { a: { write: { statements: ['insert'], relations: ['public.t'] } } } },
      false,
      false,
    ],
    ['readOnly false without write', { roles: { a: { readOnly: false } } }, false, false],
    [
      'unknown write kind',
      { roles: { a: { readOnly: false, write: { statements: ['upsert'], relations: ['public.t'] } } } },
      false,
      false,
    ],
    ['onRowCap without maxRows', { roles: { a: { onRowCap: 'error' } } }, false, false],
    ['pinned setting', { roles: { a: { settings: ['search_path'] } } }, false, false],
    [
      'deniedColumns wildcard',
      { roles: { a: { relations: ['public.*'], deniedColumns: { 'public.*': ['x'] } } } },
      false,
      false,
    ],
    ['function wildcard', { roles: { a: { functions: { allow: ['public.*'] } } } }, false, false],
    ['$user in searchPath', { roles: { a: { searchPath: ['$user'] } } }, false, false],
    ['quoted $user in searchPath', { roles: { a: { searchPath: ['"$user"'] } } }, false, false],
    [
      'scoped DDL and friends',
      {
        roles: {
          m: {
            readOnly: false,
            write: { statements: ['insert'], relations: ['app.t'] },
            ddl: { kinds: ['create_table', 'drop'], schemas: ['app_scratch'], temporary: true },
            maintenance: ['analyze', 'vacuum'],
            lock: true,
            channels: { listen: ['jobs_*', '"Jobs"', '*'], notify: ['jobs_done'] },
            do: true,
            twoPhase: true,
          },
        },
      },
      true,
      true,
    ],
    [
      'temporary-only DDL',
      {
        roles: {
          m: {
            readOnly: false,
            write: { statements: ['insert'], relations: ['app.t'] },
            ddl: { kinds: ['create_table'], temporary: true },
          },
        },
      },
      true,
      true,
    ],
    [
      'DDL that allows nothing',
      {
        roles: {
          m: {
            readOnly: false,
            write: { statements: ['insert'], relations: ['app.t'] },
            ddl: { kinds: ['create_table'] },
          },
        },
      },
      false,
      false,
    ],
    [
      'unknown DDL kind',
      {
        roles: {
          m: {
            readOnly: false,
            write: { statements: ['insert'], relations: ['app.t'] },
            ddl: { kinds: ['create_function'], schemas: ['s'] },
          },
        },
      },
      false,
      false,
    ],
    [
      'DDL on pg_catalog',
      {
        roles: {
          m: {
            readOnly: false,
            write: { statements: ['insert'], relations: ['app.t'] },
            ddl: { kinds: ['drop'], schemas: ['pg_catalog'] },
          },
        },
      },
      false,
      false,
    ],
    ['DDL on a read-only role', { roles: { m: { ddl: { kinds: ['drop'], schemas: ['s'] } } } }, false, false],
    ['maintenance on a read-only role', { roles: { m: { maintenance: ['analyze'] } } }, false, false],
    ['notify on a read-only role', { roles: { m: { channels: { notify: ['x'] } } } }, false, false],
    ['listen on a read-only role', { roles: { m: { channels: { listen: ['x'] }, lock: true } } }, true, true],
    ['do on a read-only role', { roles: { m: { do: true } } }, false, false],
    ['twoPhase on a read-only role', { roles: { m: { twoPhase: true } } }, false, false],
    ['twoPhase false on a read-only role', { roles: { m: { twoPhase: false } } }, true, true],
    ['twoPhase not a boolean', { roles: { m: { twoPhase: 'yes' } } }, false, false],
    ['bad channel', { roles: { m: { channels: { listen: ['a.b'] } } } }, false, false],
    // Checks only the loader makes:
    ['case-colliding role names', { roles: { a: {}, A: {} } }, false, true],
    [
      'deniedColumns on an unlisted relation',
      { roles: { a: { relations: ['public.c'], deniedColumns: { 'public.x': ['ssn'] } } } },
      false,
      true,
    ],
    [
      'function both allowed and denied',
      { roles: { a: { functions: { allow: ['public.f'], deny: ['public.f'] } } } },
      false,
      true,
    ],
    [
      'never-callable function in functions.allow',
      { roles: { a: { functions: { allow: ['pg_catalog.set_config'] } } } },
      false,
      true,
    ],
    ['pinned setting in upper case', { roles: { a: { settings: ['ROLE'] } } }, false, true],
    ['timeout rounding to 0ms', { roles: { a: { statementTimeout: 0.0001 } } }, false, true],
    ['identifier over 63 bytes', { roles: { a: { relations: [`public.${'x'.repeat(64)}`] } } }, false, true],
  ];

  it.each(cases)('%s', (_name, doc, validatorAccepts, schemaAccepts) => {
    const r = parsePolicyText(JSON.stringify(doc), 'json', 'case.json');
    expect(r.ok, r.ok ? '' : r.issues.map((i) => formatIssue(i, 'case')).join('\n')).toBe(validatorAccepts);
    expect(schemaValid(schema, doc)).toBe(schemaAccepts);
  });
});

describe('functions.allow and the never-callable list', () => {
  it('says why an allow entry for a never-callable function would do nothing', () => {
    const r = parsePolicyText('roles: { a: { functions: { allow: [pg_catalog.pg_sleep] } } }\n', 'yaml', 'p.yaml');
    expect(r.ok).toBe(false);
    const text = r.ok ? '' : r.issues.map((i) => formatIssue(i, 'p')).join('\n');
    expect(text).toContain('pg_sleep, which a role may call only when it has statementTimeout (which ends the sleep)');
    expect(
      parsePolicyText(
        'roles: { a: { statementTimeout: 5s, functions: { allow: [pg_catalog.pg_sleep] } } }\n',
        'yaml',
        'p.yaml',
      ).ok,
    ).toBe(true);
    const never = parsePolicyText('roles: { a: { functions: { allow: [pg_catalog.lo_import] } } }\n', 'yaml', 'p.yaml');
    expect(never.ok ? '' : never.issues.map((i) => formatIssue(i, 'p')).join('\n')).toContain(
      'lo_import, which no role may call whatever functions.allow says (large objects',
    );
  });
  it('still accepts the same function in functions.deny', () => {
    expect(parsePolicyText('roles: { a: { functions: { deny: [pg_catalog.pg_sleep] } } }\n', 'yaml', 'p.yaml').ok).toBe(
      true,
    );
  });
});
