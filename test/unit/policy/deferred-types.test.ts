// Type names the snapshot lacks, left to the server's analysis on the session's own connection (SessionView.deferTypes): only where the session may have made them, each with the statement that names it.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { CATALOG, ROLES, makeRole, sessionFor } from '../../fixtures/catalog.ts';
import type { Decision, RolePolicy, SessionView } from '../../../policy/types.ts';

/** May make types and tables in scratch, which is its whole search path. */
const typer: RolePolicy = makeRole({
  ...ROLES.writer,
  name: 'typer',
  relations: [...ROLES.writer.relations, { schema: 'scratch', name: '*' }],
  write: { kinds: ['insert'], relations: [{ schema: 'scratch', name: '*' }] },
  ddl: { kinds: ['create_table', 'drop', 'create_type'], schemas: ['scratch'], temporary: false },
  searchPath: ['scratch'],
});
/** Its search path is sales, which it may read but make nothing in. */
const elsewhere: RolePolicy = {
  ...typer,
  name: 'elsewhere',
  relations: [...typer.relations, { schema: 'sales', name: '*' }],
  searchPath: ['sales'],
};
/** No DDL at all; every relation of public. */
const plain: RolePolicy = makeRole({ ...ROLES.writer, name: 'plain', relations: [{ schema: 'public', name: '*' }] });

const deferring = (role: RolePolicy): SessionView => ({ ...sessionFor(role), deferTypes: true });
const refusedAsUnknown = (d: Decision, name: string) =>
  expect(d).toMatchObject({
    allow: false,
    reason: 'type_denied',
    message: expect.stringContaining(`uses type ${name}, which pgwarden cannot resolve`),
  });

beforeAll(async () => {
  await initParser();
});

describe('deferTypes', () => {
  it('without it an unknown type is refused; with it the name is left to the server, with its statement', () => {
    refusedAsUnknown(evaluate('SELECT NULL::mood', 'simple', sessionFor(typer), CATALOG), 'mood');
    const d = evaluate(`SELECT 1; SELECT 'ok'::mood, $1::scratch."Mood"[]`, 'simple', deferring(typer), CATALOG);
    expect(d).toMatchObject({
      allow: true,
      deferredTypes: [
        { statement: 1, names: ['mood'], fromString: true },
        { statement: 1, names: ['scratch', 'Mood'], fromString: false },
      ],
    });
  });

  it('a column type of CREATE TABLE (judged through its restated query) is left to the server too', () => {
    refusedAsUnknown(evaluate('CREATE TABLE t (id int, bar mood[])', 'simple', sessionFor(typer), CATALOG), 'mood');
    const d = evaluate(
      `CREATE TYPE mood AS ENUM ('a'); CREATE TABLE t (id int, bar mood[])`,
      'simple',
      deferring(typer),
      CATALOG,
    );
    expect(d).toMatchObject({ allow: true, deferredTypes: [{ statement: 1, names: ['mood'], fromString: false }] });
  });

  it('never where the role could not have made it: outside ddl.schemas, another database, a role without DDL', () => {
    refusedAsUnknown(evaluate('SELECT NULL::mood', 'simple', deferring(elsewhere), CATALOG), 'mood');
    refusedAsUnknown(evaluate('SELECT NULL::sales.mood', 'simple', deferring(elsewhere), CATALOG), 'sales.mood');
    refusedAsUnknown(evaluate('SELECT NULL::mood', 'simple', deferring(plain), CATALOG), 'mood');
    expect(evaluate('SELECT NULL::otherdb.scratch.mood', 'simple', deferring(typer), CATALOG)).toMatchObject({
      allow: false,
      reason: 'relation_not_allowed',
    });
  });

  it('a known type is judged as before: a row type of a relation the role may not read stays refused', () => {
    const known = evaluate('SELECT NULL::public.orders', 'simple', deferring(typer), CATALOG);
    expect(known.allow && known.deferredTypes).toBeFalsy();
    const hidden = evaluate('SELECT NULL::sales.secret_stuff', 'simple', deferring(typer), CATALOG);
    expect(hidden.allow).toBe(false);
  });

  it('the decision cache keeps the deferring and the plain decision apart', async () => {
    const { DecisionCache } = await import('../../../policy/decision-cache.ts');
    const cache = new DecisionCache({ max: 100, maxBytes: 1 << 20 });
    expect(cache.lookup('SELECT NULL::mood', 'simple', sessionFor(typer), CATALOG, 1).decision.allow).toBe(false);
    expect(cache.lookup('SELECT NULL::mood', 'simple', deferring(typer), CATALOG, 1).decision.allow).toBe(true);
    expect(cache.lookup('SELECT NULL::mood', 'simple', sessionFor(typer), CATALOG, 1).decision.allow).toBe(false);
  });
});
