// Issue 12 through the real proxy: DECLARE … WITH HOLD refused for roles without holdCursors (with a hint) and counted per session where allowed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPg, pgError, startTestProxy, type TestProxy } from '../helpers/proxy.ts';

const POLICY = `roles:
  reader:
    readOnly: true
    relations: [public.orders]
  held:
    readOnly: true
    relations: [public.orders]
    holdCursors: 1
`;

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ policy: POLICY });
});
afterAll(async () => {
  await tp?.close();
});

describe('holdCursors', () => {
  it('a read-only role without holdCursors gets 42501 with a hint, and no cursor is made; a cursor without HOLD in a transaction works', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'reader', sub: 'hold-reader' }));
    try {
      const err = await pgError(() => c.query('DECLARE h CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id'));
      expect(err.code).toBe('42501');
      expect(err.message).toMatch(
        /WITH HOLD keeps the cursor's whole result on the server after the transaction, and role "reader" may not/,
      );
      expect(err.hint).toBe(
        'use a cursor without HOLD inside a transaction (BEGIN; DECLARE …; FETCH …; COMMIT), or ask for holdCursors on the role',
      );
      // The refused DECLARE made no cursor: FETCH from it is refused as an unknown cursor.
      expect((await pgError(() => c.query('FETCH 1 FROM h'))).message).toMatch(
        /which was not declared through pgwarden/,
      );
      await c.query('BEGIN');
      await c.query('DECLARE t CURSOR FOR SELECT id FROM orders ORDER BY id');
      expect((await c.query('FETCH 2 FROM t')).rows).toHaveLength(2);
      await c.query('COMMIT');
    } finally {
      await c.end();
    }
  });

  it('holdCursors: 1 allows one held cursor per session: the second gets 54000 until the first is closed', async () => {
    const c = await connectPg(tp, await tp.token({ role: 'held', sub: 'hold-held' }));
    const other = await connectPg(tp, await tp.token({ role: 'held', sub: 'hold-held-2' }));
    try {
      await c.query('DECLARE a CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id');
      expect((await c.query('FETCH 1 FROM a')).rows).toHaveLength(1);
      const err = await pgError(() => c.query('DECLARE b CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id'));
      expect(err.code).toBe('54000');
      // The reason leads DETAIL (docs/errors.md), the rule's own detail follows.
      expect(err.detail).toBe(
        'reason=limit_reached\nat most 1 WITH HOLD cursor may be open in one session (rule: roles.held.holdCursors)',
      );
      expect(err.hint).toMatch(/^CLOSE a held cursor you no longer need/);
      // Another session of the same role has its own count (the refusal above was not cached for it).
      await other.query('DECLARE b CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id');
      expect((await other.query('FETCH 1 FROM b')).rows).toHaveLength(1);
      await c.query('CLOSE a');
      await c.query('DECLARE b CURSOR WITH HOLD FOR SELECT id FROM orders ORDER BY id');
      expect((await c.query('FETCH 1 FROM b')).rows).toHaveLength(1);
    } finally {
      await Promise.all([c.end(), other.end()]);
    }
  });
});
