// The catalog review: its data agrees with the curated lists, the checker finds what a server adds, hidden system columns are refused, SHOW and current_setting share one rule.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import {
  ALWAYS_DENIED,
  INTROSPECTION_FUNCTIONS,
  READABLE_SETTINGS,
  VOLATILE_ALLOWED,
  findEntry,
} from '../../../policy/functions.ts';
import {
  DENIED_SYSTEM_RELATIONS,
  INTROSPECTION_EXTRA_FUNCTIONS,
  INTROSPECTION_RELATIONS,
  SESSION_RELATIONS,
  SYSTEM_DENIED_COLUMNS,
  SYSTEM_DENIED_COLUMN_REASONS,
} from '../../../policy/introspection.ts';
import {
  FUNCTION_CLASSES,
  REVIEWED_FUNCTIONS,
  REVIEWED_RELATIONS,
  REVIEWED_VERSIONS,
  compareWithReview,
  reviewComplete,
  type ServerCatalog,
  type ServerFunction,
} from '../../../policy/review/review.ts';
import { FILE_LOCATION_SETTINGS, judgeSettingRead } from '../../../policy/settings.ts';
import { suggestFunction } from '../../../tools/catalog-review/rules.ts';
import type { CatalogRelation, CatalogSnapshot } from '../../../policy/types.ts';
import { ROLES, makeCatalog, makeRole, sessionFor } from '../../fixtures/catalog.ts';

beforeAll(async () => {
  await initParser();
});

const pgName = (key: string): string | undefined =>
  key.startsWith('pg_catalog.') ? key.slice('pg_catalog.'.length) : undefined;

describe('policy/review/functions.json', () => {
  it('covers PostgreSQL 15 and 18', () => {
    expect(REVIEWED_VERSIONS).toEqual([15, 18]);
  });

  it('every entry has a known class, versions it covers, and a reason unless safe', () => {
    for (const [key, f] of REVIEWED_FUNCTIONS) {
      expect(FUNCTION_CLASSES, key).toContain(f.class);
      expect(f.versions.length, key).toBeGreaterThan(0);
      for (const v of f.versions) expect(REVIEWED_VERSIONS, key).toContain(v);
      if (f.class !== 'safe') expect(f.reason, key).toMatch(/\S/);
      expect(key.startsWith('pg_catalog.') || key.startsWith('information_schema.'), key).toBe(true);
    }
  });

  it('agrees with the curated lists: always denied → denied, introspection → introspection, volatile allowed → volatile_allowed', () => {
    for (const [key, f] of REVIEWED_FUNCTIONS) {
      const name = pgName(key);
      if (name === undefined) continue;
      if (findEntry(ALWAYS_DENIED, name) !== undefined) expect(f.class, key).toBe('denied');
      else if (findEntry(INTROSPECTION_FUNCTIONS, name) !== undefined) expect(f.class, key).toBe('introspection');
      else if (findEntry(VOLATILE_ALLOWED, name) !== undefined) expect(f.class, key).toBe('volatile_allowed');
    }
  });

  it('information_schema support functions are introspection', () => {
    for (const key of INTROSPECTION_EXTRA_FUNCTIONS) {
      if (REVIEWED_FUNCTIONS.has(key)) expect(REVIEWED_FUNCTIONS.get(key)?.class, key).toBe('introspection');
    }
  });

  it.each([
    ['pg_lock_status', 'denied'],
    ['pg_prepared_xact', 'denied'],
    ['pg_stat_get_activity', 'denied'],
    ['pg_stat_get_progress_info', 'denied'],
    ['pg_stat_get_wal_senders', 'denied'],
    ['pg_blocking_pids', 'denied'],
    ['txid_status', 'denied'],
    ['pg_xact_status', 'denied'],
    ['pg_last_committed_xact', 'denied'],
    ['pg_current_snapshot', 'denied'],
    ['pg_sequence_last_value', 'denied'],
    ['pg_config', 'denied'],
    ['pg_show_all_file_settings', 'denied'],
    ['pg_mcv_list_items', 'denied'],
    ['set_config', 'denied'],
    ['regclassout', 'introspection'],
    ['regprocout', 'introspection'],
    ['regtypeout', 'introspection'],
    ['regnamespaceout', 'introspection'],
    ['regroleout', 'introspection'],
    ['pg_get_userbyid', 'introspection'],
    ['pg_show_all_settings', 'introspection'],
    ['pg_tablespace_location', 'introspection'],
    ['pg_available_extensions', 'introspection'],
    ['pg_timezone_names', 'introspection'],
    ['pg_get_keywords', 'introspection'],
    ['pg_get_catalog_foreign_keys', 'introspection'],
    ['aclexplode', 'introspection'],
    ['makeaclitem', 'introspection'],
    ['pg_get_replica_identity_index', 'introspection'],
    ['pg_stat_get_numscans', 'introspection'],
    ['pg_stat_get_wal', 'introspection'],
    ['inet_server_addr', 'introspection'],
    ['inet_server_port', 'introspection'],
    ['pg_postmaster_start_time', 'introspection'],
    ['pg_last_wal_replay_lsn', 'introspection'],
    ['pg_cursor', 'safe'],
    ['pg_prepared_statement', 'safe'],
    ['pg_backend_pid', 'safe'],
    ['version', 'safe'],
    ['format_type', 'introspection'],
    ['oidvectortypes', 'introspection'],
    ['pg_snapshot_xmin', 'safe'],
    ['pg_visible_in_snapshot', 'safe'],
    ['lower', 'safe'],
    ['now', 'safe'],
    ['random', 'volatile_allowed'],
    ['clock_timestamp', 'volatile_allowed'],
    ['setseed', 'volatile'],
    ['currval', 'volatile'],
  ])('pg_catalog.%s is %s', (name, cls) => {
    expect(REVIEWED_FUNCTIONS.get(`pg_catalog.${name}`)?.class).toBe(cls);
  });

  it('PostgreSQL 18 names are classified too (and only 18 lists them)', () => {
    for (const name of ['uuidv7', 'pg_get_aios', 'pg_stat_get_backend_io', 'pg_input_is_valid', 'casefold']) {
      expect(REVIEWED_FUNCTIONS.get(`pg_catalog.${name}`)?.versions, name).toEqual([18]);
    }
  });
});

describe('policy/review/relations.json', () => {
  it('agrees with INTROSPECTION_RELATIONS and DENIED_SYSTEM_RELATIONS', () => {
    for (const [key, r] of REVIEWED_RELATIONS) {
      if (INTROSPECTION_RELATIONS.has(key)) expect(r.class, key).toBe('introspection');
      else if (DENIED_SYSTEM_RELATIONS.has(key)) expect(r.class, key).toBe('denied');
      else if (SESSION_RELATIONS.has(key)) expect(r.class, key).toBe('session');
      else expect(r.class, key).toBe('listed_only');
    }
    for (const key of INTROSPECTION_RELATIONS) expect(REVIEWED_RELATIONS.has(key), key).toBe(true);
    for (const key of SESSION_RELATIONS.keys()) expect(REVIEWED_RELATIONS.get(key)?.class, key).toBe('session');
  });

  it('introspection relations list their reviewed columns; hidden columns are among them', () => {
    for (const [key, r] of REVIEWED_RELATIONS)
      if (r.class === 'introspection') expect(r.columns?.length, key).toBeGreaterThan(0);
    for (const [rel, cols] of SYSTEM_DENIED_COLUMNS) {
      expect(REVIEWED_RELATIONS.get(rel)?.class, rel).toBe('introspection');
      for (const c of cols) expect(REVIEWED_RELATIONS.get(rel)?.columns, `${rel}.${c}`).toContain(c);
      expect([...cols].sort()).toEqual([...(SYSTEM_DENIED_COLUMN_REASONS.get(rel)?.keys() ?? [])].sort());
    }
  });
});

// ------------------------------------------------------------------ the checker

function fn(schema: string, name: string, over: Partial<ServerFunction> = {}): ServerFunction {
  return {
    schema,
    name,
    volatility: ['i'],
    kinds: ['f'],
    retset: false,
    returns: ['integer'],
    args: ['integer'],
    revoked: false,
    description: null,
    ...over,
  };
}

/** A server catalog holding exactly what the review lists for `major`. */
function reviewedCatalog(major: number): ServerCatalog {
  const functions: ServerFunction[] = [];
  for (const [key, f] of REVIEWED_FUNCTIONS) {
    if (!f.versions.includes(major)) continue;
    const dot = key.indexOf('.');
    functions.push(fn(key.slice(0, dot), key.slice(dot + 1)));
  }
  const relations = [...REVIEWED_RELATIONS]
    .filter(([, r]) => r.versions.includes(major))
    .map(([key, r]) => {
      const dot = key.indexOf('.');
      return { schema: key.slice(0, dot), name: key.slice(dot + 1), kind: 'v', columns: [...(r.columns ?? ['x'])] };
    });
  return { major, functions, relations };
}

describe('compareWithReview', () => {
  it.each(REVIEWED_VERSIONS.map((v) => [v]))('a PostgreSQL %s catalog as reviewed is complete', (major) => {
    const gaps = compareWithReview(reviewedCatalog(major));
    expect(reviewComplete(gaps)).toBe(true);
    expect(gaps.absentFunctions).toEqual([]);
  });

  it('reports new functions, relations and introspection columns', () => {
    const cat = reviewedCatalog(18);
    cat.functions.push(fn('pg_catalog', 'pg_stat_get_backend_everything', { volatility: ['s'], args: ['integer'] }));
    cat.functions.push(fn('information_schema', '_pg_new_helper'));
    cat.relations.push({ schema: 'pg_catalog', name: 'pg_stat_new_view', kind: 'v', columns: ['pid'] });
    const roles = cat.relations.find((r) => r.name === 'pg_roles');
    roles?.columns.push('rolsecret');
    const gaps = compareWithReview({ ...cat, major: 19 });
    expect(reviewComplete(gaps)).toBe(false);
    expect(gaps.functions.map((f) => `${f.schema}.${f.name}`)).toEqual([
      'pg_catalog.pg_stat_get_backend_everything',
      'information_schema._pg_new_helper',
    ]);
    expect(gaps.relations.map((r) => r.name)).toEqual(['pg_stat_new_view']);
    expect(gaps.columns).toEqual(['pg_catalog.pg_roles.rolsecret']);
  });

  it('lists reviewed names a server of that version lacks', () => {
    const cat = reviewedCatalog(15);
    cat.functions = cat.functions.filter((f) => f.name !== 'lower');
    expect(compareWithReview(cat).absentFunctions).toEqual(['pg_catalog.lower']);
  });
});

describe('suggestFunction (tools/catalog-review/rules.ts)', () => {
  it.each(
    [
      [fn('pg_catalog', 'pg_stat_reset_all_the_things', { volatility: ['v'] }), 'denied'],
      [fn('pg_catalog', 'pg_get_newdef', { volatility: ['s'], args: ['oid'] }), 'introspection'],
      [fn('pg_catalog', 'regwidgetout', { args: ['regwidget'] }), 'introspection'],
      [fn('pg_catalog', 'regclassout', { args: ['regclass'] }), 'introspection'],
      [fn('pg_catalog', 'some_support', { args: ['internal', 'internal'] }), 'denied'],
      [fn('pg_catalog', 'some_trigger', { volatility: ['v'], args: [''], returns: ['trigger'] }), 'denied'],
      [fn('pg_catalog', 'admin_thing', { revoked: true }), 'denied'],
      [fn('pg_catalog', 'new_writer', { volatility: ['v'] }), 'volatile'],
      [fn('pg_catalog', 'new_math', { volatility: ['i'] }), 'safe'],
      [fn('information_schema', '_pg_expandarray'), 'introspection'],
    ].map(([f, cls]) => [(f as ServerFunction).name, cls, f] as const),
  )('%s → %s', (_name, cls, f) => {
    expect(suggestFunction(f as ServerFunction).class).toBe(cls);
  });
});

// ------------------------------------------------------------------ hidden system columns

const COLUMNS: Record<string, string[]> = {
  'pg_catalog.pg_roles': [
    'rolname',
    'rolsuper',
    'rolinherit',
    'rolcreaterole',
    'rolcreatedb',
    'rolcanlogin',
    'rolreplication',
    'rolconnlimit',
    'rolpassword',
    'rolvaliduntil',
    'rolbypassrls',
    'rolconfig',
    'oid',
  ],
  'pg_catalog.pg_user': [
    'usename',
    'usesysid',
    'usecreatedb',
    'usesuper',
    'userepl',
    'usebypassrls',
    'passwd',
    'valuntil',
    'useconfig',
  ],
  'pg_catalog.pg_attribute': ['attrelid', 'attname', 'atttypid', 'attnum', 'attisdropped', 'attmissingval'],
  'pg_catalog.pg_sequences': ['schemaname', 'sequencename', 'sequenceowner', 'data_type', 'start_value', 'last_value'],
  'pg_catalog.pg_settings': ['name', 'setting', 'unit', 'category', 'short_desc', 'sourcefile', 'sourceline'],
};

/** The test catalog with the real columns of the relations that have hidden ones. */
function catalogWithColumns(): CatalogSnapshot {
  const base = makeCatalog();
  const relations = new Map(base.relations);
  for (const [key, cols] of Object.entries(COLUMNS)) {
    const [schema = '', name = ''] = key.split('.');
    const rel: CatalogRelation = { schema, name, kind: 'v', columns: cols.map((c) => ({ name: c, type: 'text' })) };
    relations.set(key, rel);
  }
  return { ...base, relations };
}

describe('SYSTEM_DENIED_COLUMNS', () => {
  const catalog = catalogWithColumns();
  const userOnly = makeCatalog({ withSystem: false });
  it.each([
    ['SELECT rolconfig FROM pg_roles', false],
    ['SELECT r.rolconfig FROM pg_catalog.pg_roles r', false],
    ['SELECT rolname FROM pg_roles WHERE rolconfig IS NOT NULL', false],
    ['SELECT * FROM pg_roles', false],
    ['SELECT r FROM pg_roles r', false],
    ['SELECT row_to_json(r) FROM pg_roles r', false],
    ['SELECT useconfig FROM pg_user', false],
    ['SELECT attmissingval FROM pg_attribute', false],
    ['SELECT a.* FROM pg_attribute a', false],
    ['SELECT last_value FROM pg_sequences', false],
    ['SELECT sourcefile FROM pg_settings', false],
    ['SELECT rolname, rolsuper, oid FROM pg_roles', true],
    ['SELECT usename FROM pg_user', true],
    ['SELECT attname, atttypid FROM pg_attribute WHERE attnum > 0', true],
    ['SELECT sequencename, start_value FROM pg_sequences', true],
    ['SELECT name, setting FROM pg_settings', true],
    ['SELECT count(*) FROM pg_roles', true],
  ])('introspection role: %s → allowed %s', (sql, allowed) => {
    const d = evaluate(sql, 'simple', sessionFor(ROLES.intro), catalog);
    expect(d.allow, d.allow ? '' : d.message).toBe(allowed);
    if (!d.allow) expect(d.detail).toMatch(/pgwarden lets no role read it/);
  });

  it('a named hidden column is refused with a snapshot of user schemas only, too', () => {
    expect(
      evaluate('SELECT rolconfig FROM pg_catalog.pg_roles', 'simple', sessionFor(ROLES.intro), userOnly).allow,
    ).toBe(false);
    expect(
      evaluate(
        'SELECT rolname FROM pg_catalog.pg_roles r WHERE r.oid = 10',
        'simple',
        sessionFor(ROLES.intro),
        userOnly,
      ).allow,
    ).toBe(true);
  });

  it('roles without catalog access are refused the relation itself, as before', () => {
    const d = evaluate('SELECT rolconfig FROM pg_roles', 'simple', sessionFor(ROLES.analyst), catalog);
    expect(d.allow).toBe(false);
    if (!d.allow) expect(d.reason).toBe('catalog_denied');
  });
});

// ------------------------------------------------------------------ SHOW and current_setting

describe('judgeSettingRead', () => {
  const intro = ROLES.intro;
  const none = ROLES.analyst;
  it.each([
    ['timezone', none, true],
    ['TimeZone', none, true],
    ['server_version', none, true],
    ['transaction_isolation', none, true],
    ['pgwarden.sub', none, true],
    ['lc_messages', none, true],
    ['all', none, false],
    ['work_mem', none, false],
    ['myext.api_key', none, false],
    ['session_authorization', none, false],
    ['log_directory', none, false],
    ['all', intro, true],
    ['work_mem', intro, true],
    ['myext.api_key', intro, true],
    ...[...FILE_LOCATION_SETTINGS.keys()].flatMap(
      (k) =>
        [
          [k, none, false],
          [k, intro, false],
        ] as const,
    ),
  ] as const)('%s (%s) → %s', (name, role, allowed) => {
    expect(judgeSettingRead(name, role).allow).toBe(allowed);
  });

  it('refuses exactly what current_setting() refuses a role without catalog access', () => {
    const names = [
      'timezone',
      'work_mem',
      'myext.api_key',
      'application_name',
      'search_path',
      'log_directory',
      'pgwarden.role',
      ...READABLE_SETTINGS.map((e) => e.pattern.replace('*', 'x')),
    ];
    for (const name of names) {
      const viaFunction = evaluate(
        `SELECT current_setting('${name}')`,
        'simple',
        sessionFor(none),
        makeCatalog(),
      ).allow;
      expect(judgeSettingRead(name, none).allow, name).toBe(viaFunction);
    }
  });

  it('the refusal names the setting and points at catalog: introspection', () => {
    const v = judgeSettingRead('myext.api_key', makeRole({ name: 'x' }));
    expect(v).toMatchObject({ allow: false, rule: 'role' });
    if (!v.allow) expect(v.why).toContain('myext.api_key');
  });
});
