// Types are names too: a table's row type reads the table, reg* parameter types look names up, unknown types are denied.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { judgeParameterTypes } from '../../../policy/param-types.ts';
import { CATALOG, ROLES, sessionFor } from '../../fixtures/catalog.ts';

beforeAll(async () => {
  await initParser();
});

const analyst = () => sessionFor(ROLES.analyst);
const decide = (sql: string) => evaluate(sql, 'simple', analyst(), CATALOG);
const rowtypeOid = (name: string) => [...(CATALOG.typesByOid?.values() ?? [])].find((t) => t.name === name)?.oid ?? -1;

describe('type names in SQL', () => {
  it.each([
    // A row type of a relation the role may not read is that relation.
    ['SELECT (NULL::secrets).*', 'relation'],
    ['SELECT NULL::public.secrets', 'relation'],
    ["SELECT json_populate_record(NULL::secrets, '{}')", 'relation'],
    ['SELECT NULL::secrets[]', 'relation'],
    ['SELECT NULL::_secrets', 'relation'],
    // A row type of an allowed relation with a denied column reads that column.
    ['SELECT (NULL::customers).*', 'column'],
    // A name that is no type at all is denied, not passed on for Postgres to resolve: outside the role's relations as
    // the row type of a relation it may not read (it could be one: docs/policy.md), inside them as an unknown type.
    ['SELECT NULL::no_such_type', 'relation'],
    ['SELECT NULL::sales.no_such_type', 'type'],
    ['SELECT CAST(1 AS other_db.public.int4)', 'database'],
  ])('%s is denied', (sql, why) => {
    const d = decide(sql);
    expect(d.allow, sql).toBe(false);
    if (!d.allow && why === 'type') expect(d.reason).toBe('type_denied');
    if (!d.allow && why === 'column') expect(d.reason).toBe('column_denied');
    if (!d.allow && why === 'relation') expect(d.reason).toBe('relation_not_allowed');
  });

  it('the row type of an existing forbidden relation and a missing name are refused with the same words', () => {
    const text = (sql: string) => {
      const d = decide(sql);
      return d.allow ? 'allowed' : JSON.stringify([d.sqlstate, d.message, d.detail, d.hint]);
    };
    expect(text('SELECT NULL::secrets')).toBe(text('SELECT NULL::nosucht').split('nosucht').join('secrets'));
    expect(text('SELECT (NULL::public.secrets).*')).toBe(
      text('SELECT (NULL::public.nosucht).*').split('nosucht').join('secrets'),
    );
  });

  it.each([
    ["SELECT '1'::int, 'x'::text, now()::date, '{}'::jsonb, 1::numeric(10,2), ARRAY[1]::int[]"],
    ["SELECT CAST('2024-01-01' AS timestamptz), 'a'::varchar(3), 1::pg_catalog.int8"],
    ['SELECT (NULL::orders).total'],
  ])('%s is allowed', (sql) => {
    const d = decide(sql);
    expect(d.allow, d.allow ? '' : d.message).toBe(true);
  });
});

describe('parameter type OIDs of a Parse message', () => {
  it('allows unspecified and built-in types', () => {
    expect(judgeParameterTypes([0, 23, 25, 1184, 3802], analyst(), CATALOG)).toBeUndefined();
  });

  it.each([
    [[2205], 'catalog_denied'], // regclass
    [[24], 'catalog_denied'], // regproc
    [[4096], 'catalog_denied'], // regrole
    [[4089], 'catalog_denied'], // regnamespace
    [[2210], 'catalog_denied'], // regclass[]
    [[123456789], 'type_denied'],
  ])('denies %j (%s)', (oids, reason) => {
    const d = judgeParameterTypes(oids, analyst(), CATALOG);
    expect(d?.allow).toBe(false);
    if (d && !d.allow) expect(d.reason).toBe(reason);
  });

  it('reg* parameters are fine for a role with catalog introspection', () => {
    expect(judgeParameterTypes([2205], sessionFor(ROLES.intro), CATALOG)).toBeUndefined();
  });

  it('a row type parameter counts as reading the relation in full', () => {
    expect(judgeParameterTypes([rowtypeOid('secrets')], analyst(), CATALOG)?.allow).toBe(false);
    // Refused as an unknown OID is, never naming the relation behind it (an OID probe would learn relation names).
    const forbidden = judgeParameterTypes([rowtypeOid('secrets')], analyst(), CATALOG);
    const unknown = judgeParameterTypes([123456789], analyst(), CATALOG);
    const words = (d: typeof forbidden) =>
      d === undefined || d.allow
        ? 'allowed'
        : JSON.stringify([d.sqlstate, d.message, d.detail, d.hint]).replace(/OID \d+/g, 'OID n');
    expect(words(forbidden)).toBe(words(unknown));
    expect(words(forbidden)).not.toContain('secrets');
    expect(judgeParameterTypes([rowtypeOid('customers')], analyst(), CATALOG)?.allow).toBe(false); // ssn is denied
    expect(judgeParameterTypes([rowtypeOid('orders')], analyst(), CATALOG)).toBeUndefined();
  });
});

describe('stable functions that write server state', () => {
  it.each(['SELECT txid_current()', 'SELECT pg_current_xact_id()', 'SELECT * FROM orders WHERE id = txid_current()'])(
    '%s is denied',
    (sql) => {
      expect(decide(sql).allow).toBe(false);
    },
  );
  it('the read-only variants stay allowed', () => {
    expect(decide('SELECT txid_current_if_assigned(), pg_current_xact_id_if_assigned()').allow).toBe(true);
  });
});
