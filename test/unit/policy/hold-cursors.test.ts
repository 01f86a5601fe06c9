// DECLARE … WITH HOLD per role: refused with a hint where holdCursors is 0 (read-only default), counted per session where allowed, never decided from another session's cache entry.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate, holdCursorLimit } from '../../../policy/evaluate.ts';
import { compilePolicy, parsePolicyText } from '../../../policy/load.ts';
import { DecisionCache } from '../../../policy/decision-cache.ts';
import type { SessionView } from '../../../policy/types.ts';
import { CATALOG, ROLES, makeRole } from '../../fixtures/catalog.ts';

beforeAll(async () => {
  await initParser();
});

const HELD = 'DECLARE h CURSOR WITH HOLD FOR SELECT id FROM orders';

function view(holdCursors: number | undefined, cursors: string[] = [], held: string[] = []): SessionView {
  return {
    role: makeRole(holdCursors === undefined ? {} : { holdCursors }),
    preparedNames: new Set(),
    cursorNames: new Set(cursors),
    holdCursorNames: new Set(held),
  };
}

describe('holdCursors', () => {
  it('a read-only role without holdCursors may not DECLARE … WITH HOLD: 42501 with a hint; without HOLD it may', () => {
    const d = evaluate(HELD, 'simple', view(undefined), CATALOG);
    expect(d.allow).toBe(false);
    if (d.allow) return;
    expect(d.sqlstate).toBe('42501');
    expect(d.reason).toBe('hold_cursor_denied');
    expect(d.ruleId).toBe('roles.analyst.holdCursors');
    expect(d.hint).toBe(
      'use a cursor without HOLD inside a transaction (BEGIN; DECLARE …; FETCH …; COMMIT), or ask for holdCursors on the role',
    );
    expect(
      evaluate('DECLARE h NO SCROLL CURSOR WITHOUT HOLD FOR SELECT id FROM orders', 'simple', view(undefined), CATALOG)
        .allow,
    ).toBe(true);
    // EXPLAIN of a held DECLARE creates no cursor.
    expect(evaluate(`EXPLAIN ${HELD}`, 'simple', view(undefined), CATALOG).allow).toBe(true);
  });

  it("allowed up to the role's count of open held cursors, then 54000; CLOSEd ones and re-declared names do not count", () => {
    const ok = evaluate(HELD, 'simple', view(2, ['a'], ['a']), CATALOG);
    expect(ok.allow && ok.effects).toEqual([{ type: 'declare', name: 'h', hold: true }]);
    const over = evaluate(HELD, 'simple', view(2, ['a', 'b', 'plain'], ['a', 'b']), CATALOG);
    expect(over.allow).toBe(false);
    if (!over.allow) {
      expect(over.sqlstate).toBe('54000');
      expect(over.reason).toBe('hold_cursor_limit');
      expect(over.detail).toBe(
        'at most 2 WITH HOLD cursors may be open in one session (rule: roles.analyst.holdCursors)',
      );
      expect(over.hint).toMatch(/^CLOSE a held cursor you no longer need; or use a cursor without HOLD/);
    }
    // 'b' was closed (no longer a cursor of the session): one open held cursor.
    expect(evaluate(HELD, 'simple', view(2, ['a'], ['a', 'b']), CATALOG).allow).toBe(true);
    // Declaring 'h' again replaces it (or fails upstream): it does not count against itself.
    expect(evaluate(HELD, 'simple', view(2, ['a', 'h'], ['a', 'h']), CATALOG).allow).toBe(true);
  });

  it('counts the held cursors declared earlier in the same Query', () => {
    const two =
      'DECLARE a CURSOR WITH HOLD FOR SELECT id FROM orders; DECLARE b CURSOR WITH HOLD FOR SELECT id FROM orders';
    const d = evaluate(two, 'simple', view(1), CATALOG);
    expect(!d.allow && d.reason).toBe('hold_cursor_limit');
    expect(evaluate(two, 'simple', view(2), CATALOG).allow).toBe(true);
  });

  it("the decision cache never hands one session's count to another", () => {
    const c = new DecisionCache();
    const role = makeRole({ holdCursors: 1 });
    const full: SessionView = {
      role,
      preparedNames: new Set(),
      cursorNames: new Set(['a']),
      holdCursorNames: new Set(['a']),
    };
    const empty: SessionView = { role, preparedNames: new Set(), cursorNames: new Set(), holdCursorNames: new Set() };
    expect(c.decide(HELD, 'simple', empty, CATALOG, 1).allow).toBe(true);
    expect(c.decide(HELD, 'simple', full, CATALOG, 1).allow).toBe(false);
    expect(c.decide(HELD, 'simple', empty, CATALOG, 1).allow).toBe(true);
  });

  it('defaults: 0 for read-only roles, 2 for read-write ones; the policy file may set 0..1000', () => {
    expect(holdCursorLimit(ROLES.analyst)).toBe(0);
    expect(holdCursorLimit(ROLES.writer)).toBe(2);
    const text = `roles:
  reader: { relations: [public.orders] }
  heldReader: { relations: [public.orders], holdCursors: 3 }
  writer: { readOnly: false, relations: [public.orders], write: { statements: [insert], relations: [public.orders] } }
`;
    const parsed = parsePolicyText(text, 'yaml', 'p.yaml');
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const policy = compilePolicy(parsed.doc, 1, 'x');
    expect(policy.roles.get('reader')?.holdCursors).toBe(0);
    expect(policy.roles.get('heldReader')?.holdCursors).toBe(3);
    expect(policy.roles.get('writer')?.holdCursors).toBe(2);
    for (const bad of ['-1', '1.5', '"2"', '1001']) {
      const r = parsePolicyText(`roles:\n  r: { relations: [public.orders], holdCursors: ${bad} }\n`, 'yaml', 'p.yaml');
      expect(r.ok).toBe(false);
      if (!r.ok)
        expect(r.issues[0]).toMatchObject({
          path: 'roles.r.holdCursors',
          message: expect.stringMatching(/^must be an integer from 0 to 1000/),
        });
    }
  });
});
