// rewriteApplicationName: every SET of application_name to a value becomes a SET of the prefixed value, byte offsets and all; anything it cannot rewrite with certainty is refused.
import { beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { rewriteApplicationName } from '../../../proxy/session/app-name.ts';

beforeAll(async () => {
  await initParser();
});

const rw = (sql: string) => rewriteApplicationName(sql, 'alice', 'bot');

describe('rewriteApplicationName', () => {
  it.each([
    [`SET application_name = 'x'`, `SET application_name = 'pgwarden:alice/bot x'`],
    [`SET LOCAL application_name TO x`, `SET LOCAL application_name = 'pgwarden:alice/bot x'`],
    [`SET SESSION application_name = 'it''s'`, `SET application_name = 'pgwarden:alice/bot it''s'`],
    [`SET U&"applicatio\\006e_name" = 'u'`, `SET application_name = 'pgwarden:alice/bot u'`],
    [`SET application_name = E'\\\\'`, `SET application_name = 'pgwarden:alice/bot \\'`],
    // Byte offsets: the multi-byte text before the SET must not shift the splice.
    [
      `SELECT 'ééé€'; SET application_name = 'y'; SELECT 'ü'`,
      `SELECT 'ééé€'; SET application_name = 'pgwarden:alice/bot y'; SELECT 'ü'`,
    ],
    [
      `SET application_name = 'a';SET application_name = 'b'`,
      `SET application_name = 'pgwarden:alice/bot a';SET application_name = 'pgwarden:alice/bot b'`,
    ],
    // Later statements move: every byte offset in their trees (location, list_start, rexpr_list_start, …) is not compared.
    [
      `SET application_name = 'x'; SELECT 1 WHERE 1 IN (1, 2)`,
      `SET application_name = 'pgwarden:alice/bot x'; SELECT 1 WHERE 1 IN (1, 2)`,
    ],
    [
      `SET application_name = 'x'; SELECT ARRAY[1, 2]`,
      `SET application_name = 'pgwarden:alice/bot x'; SELECT ARRAY[1, 2]`,
    ],
  ])('%s → %s', (sql, out) => {
    expect(rw(sql)).toEqual({ kind: 'rewritten', sql: out });
  });

  it.each([
    `RESET application_name`,
    `SET application_name TO DEFAULT`,
    `SET application_name FROM CURRENT`,
    `SET work_mem = '1MB'`,
    `SELECT 1`,
    `SET TIME ZONE 'UTC'`,
  ])('leaves %s unchanged', (sql) => {
    expect(rw(sql)).toEqual({ kind: 'unchanged' });
  });

  it('refuses what it cannot rewrite: several values, text that does not parse', () => {
    expect(rw(`SET application_name = 'a', 'b'`).kind).toBe('refused');
    expect(rw(`SET application_name = 'a' garbage`).kind).toBe('refused');
  });

  it('a value that tries to close the literal stays inside it', () => {
    const r = rw(`SET application_name = $$'; RESET ALL; SELECT '$$`);
    expect(r).toEqual({
      kind: 'rewritten',
      sql: `SET application_name = 'pgwarden:alice/bot ''; RESET ALL; SELECT '''`,
    });
  });
});
