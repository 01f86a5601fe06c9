// The twoPhase role key in decisions: PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED and pg_prepared_xacts, and where it does not reach (read-only, narrowed).
import { beforeAll, describe, expect, it } from 'vitest';
import { evaluate } from '../../../policy/evaluate.ts';
import { narrowRole, parseNarrowing } from '../../../policy/narrow.ts';
import { initParser } from '../../../policy/parser.ts';
import type { RolePolicy } from '../../../policy/types.ts';
import { CATALOG, ROLES, sessionFor } from '../../fixtures/catalog.ts';

beforeAll(async () => {
  await initParser();
});

const TWO_PHASE = [
  "PREPARE TRANSACTION 'g1'",
  "COMMIT PREPARED 'g1'",
  "ROLLBACK PREPARED 'g1'",
  'SELECT gid, prepared, owner, database FROM pg_prepared_xacts WHERE database = current_database()',
  'SELECT count(*) FROM pg_catalog.pg_prepared_xacts',
];

const tpc: RolePolicy = { ...ROLES.writer, name: 'tpc', twoPhase: true };

function narrowed(claim: Record<string, unknown>): RolePolicy {
  const n = parseNarrowing(claim);
  if (!n.ok) throw new Error(JSON.stringify(n));
  return narrowRole(tpc, n.narrowing);
}

const decide = (role: RolePolicy, sql: string) => evaluate(sql, 'simple', sessionFor(role), CATALOG);

describe('twoPhase', () => {
  it('allows two-phase commit and pg_prepared_xacts to a read-write role with the key, whatever its catalog mode', () => {
    expect(tpc.catalog).toBe('none');
    for (const sql of TWO_PHASE) expect(decide(tpc, sql), sql).toMatchObject({ allow: true });
    expect(decide(tpc, 'SELECT gid FROM pg_prepared_xacts')).toMatchObject({ ruleId: 'roles.tpc.twoPhase' });
  });

  it('opens pg_prepared_xacts only: the function behind it and the other denied views stay refused', () => {
    for (const sql of [
      'SELECT * FROM pg_prepared_xact()',
      'SELECT * FROM pg_prepared_xacts, pg_stat_activity',
      'SELECT * FROM pg_locks',
    ])
      expect(decide(tpc, sql), sql).toMatchObject({ allow: false, sqlstate: '42501' });
  });

  it('is refused without the key, on a read-only role, and under a narrowing to read-only or utility: false', () => {
    const roles: RolePolicy[] = [
      ROLES.writer,
      ROLES.intro,
      { ...ROLES.intro, name: 'ro', twoPhase: true },
      narrowed({ readOnly: true }),
      narrowed({ utility: false }),
    ];
    for (const role of roles)
      for (const sql of TWO_PHASE)
        expect(decide(role, sql), `${role.name} ${JSON.stringify(role.narrowing ?? {})}: ${sql}`).toMatchObject({
          allow: false,
          sqlstate: '42501',
        });
    expect(decide(ROLES.writer, "PREPARE TRANSACTION 'g'")).toMatchObject({
      reason: 'statement_kind_denied',
      message: expect.stringMatching(/two-phase/),
      operatorHint: expect.stringMatching(/twoPhase: true/),
    });
    expect(decide(ROLES.writer, 'SELECT * FROM pg_prepared_xacts')).toMatchObject({
      reason: 'catalog_denied',
      message: expect.stringMatching(/only roles with twoPhase/),
    });
  });

  it('keeps the key under a narrowing that leaves writes and utility on', () => {
    const role = narrowed({ relations: ['public.orders'] });
    expect(decide(role, "PREPARE TRANSACTION 'g'")).toMatchObject({ allow: true });
  });
});
