// System catalog relations in `relations:`: an entry takes effect (introspection roles) or the file is refused naming the key that decides.
import { beforeAll, describe, expect, it } from 'vitest';
import { compilePolicy, parsePolicyText } from '../../../policy/load.ts';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { CATALOG, ROLES, sessionFor } from '../../fixtures/catalog.ts';

function load(role: string) {
  return parsePolicyText(`roles:\n  r:\n${role}`, 'yaml', 'test');
}

function issues(role: string): string[] {
  const r = load(role);
  return r.ok ? [] : r.issues.map((i) => `${i.path}: ${i.message}`);
}

beforeAll(async () => {
  await initParser();
});

describe('system relations in relations:', () => {
  it('pg_catalog.pg_stat_activity is refused at load time, with the reason, whatever the catalog mode', () => {
    for (const catalog of ['introspection', 'none']) {
      const found = issues(`    catalog: ${catalog}\n    relations: [public.orders, pg_catalog.pg_stat_activity]\n`);
      expect(found, catalog).toHaveLength(1);
      expect(found[0]).toMatch(
        /^roles\.r\.relations\[1\]: names pg_catalog\.pg_stat_activity, which holds other sessions' query text: pgwarden lets no role read it/,
      );
    }
    // Spelled any way PostgreSQL folds to the same name.
    expect(issues(`    catalog: introspection\n    relations: ['PG_CATALOG."pg_stat_activity"']\n`)).toHaveLength(1);
    expect(
      issues(
        `    catalog: introspection\n    relations: [information_schema.user_mappings, pg_catalog.pg_authid, pg_catalog.pg_locks]\n`,
      ),
    ).toHaveLength(3);
  });

  it('a system catalog entry on a role without catalog: introspection is refused, pointing at that key', () => {
    const found = issues(`    relations: [pg_catalog.pg_stat_user_tables]\n`);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/relations\[0\]: .*catalog: introspection/);
    expect(issues(`    catalog: none\n    relations: [information_schema.tables]\n`)).toHaveLength(1);
  });

  it('pg_toast is refused: it holds the stored values of every table', () => {
    expect(issues(`    catalog: introspection\n    relations: [pg_toast.*]\n`)[0]).toMatch(
      /pg_toast.*lets no role read it/,
    );
  });

  it('on an introspection role an entry extends the introspection relations, and the never-readable ones stay refused under pg_catalog.*', () => {
    expect(
      issues(
        `    catalog: introspection\n    relations: [pg_catalog.pg_stat_user_tables, pg_catalog.*, information_schema.tables]\n`,
      ),
    ).toEqual([]);
    const r = load(`    catalog: introspection\n    relations: [pg_catalog.*]\n`);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const role = compilePolicy(r.doc, 1, 'test').roles.get('r');
    expect(role).toBeDefined();
    if (role === undefined) return;
    const d = evaluate('SELECT query FROM pg_catalog.pg_stat_activity', 'simple', sessionFor(role), CATALOG);
    expect(d).toMatchObject({ allow: false, reason: 'catalog_denied', sqlstate: '42501' });
  });

  it("the session's own pg_prepared_statements and pg_cursors are readable by every role, catalog none too; other sessions' views stay refused", () => {
    for (const role of [ROLES.analyst, ROLES.intro]) {
      expect(role.catalog === 'introspection', role.name).toBe(role === ROLES.intro);
      for (const sql of [
        'SELECT name, statement FROM pg_prepared_statements',
        'SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE statement = $1',
        'SELECT * FROM pg_cursors',
      ]) {
        const d = evaluate(sql, sql.includes('$1') ? 'parse' : 'simple', sessionFor(role), CATALOG);
        expect(d, `${role.name}: ${sql}`).toMatchObject({ allow: true });
      }
      // Not a way around the relations that stay closed: joined with pg_class, the join is still judged.
      if (role.catalog !== 'introspection') {
        const d = evaluate(
          'SELECT p.name FROM pg_prepared_statements p, pg_class c',
          'simple',
          sessionFor(role),
          CATALOG,
        );
        expect(d).toMatchObject({ allow: false, reason: 'catalog_denied' });
      }
      for (const denied of ['pg_prepared_xacts', 'pg_stat_activity']) {
        const d = evaluate(`SELECT * FROM pg_catalog.${denied}`, 'simple', sessionFor(role), CATALOG);
        expect(d, `${role.name}: ${denied}`).toMatchObject({ allow: false, reason: 'catalog_denied' });
      }
    }
  });

  it("under catalog: scoped their statement texts (pgwarden's filters, naming denied columns) are refused; their names are not", () => {
    const scoped = { ...ROLES.analyst, name: 'scopedr', catalog: 'scoped' as const };
    for (const sql of [
      'SELECT statement FROM pg_prepared_statements',
      'SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE $1',
      'SELECT * FROM pg_cursors',
      'SELECT * FROM pg_catalog.pg_cursor()',
      'SELECT name FROM pg_catalog.pg_prepared_statement()',
    ]) {
      const d = evaluate(sql, sql.includes('$1') ? 'parse' : 'simple', sessionFor(scoped), CATALOG);
      expect(d, sql).toMatchObject({ allow: false, reason: 'column_denied', ruleId: 'builtin.catalog' });
    }
    for (const sql of ['SELECT name, prepare_time FROM pg_prepared_statements', 'SELECT name FROM pg_cursors']) {
      expect(evaluate(sql, 'simple', sessionFor(scoped), CATALOG), sql).toMatchObject({ allow: true });
    }
  });
});
