// Refusals carry the SQLSTATE, message and position PostgreSQL itself sends: syntax errors, several statements in a Parse, unknown relations.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { canaryCount, pgError, startTestProxy, superClient, testPg, type TestProxy } from '../helpers/proxy.ts';

const POLICY = `roles:
  scoped:
    readOnly: true
    relations: [public.orders, public.customers, public.ephemeral, public.nope_in_scope, archive.*]
  temper:
    readOnly: false
    relations: [public.orders, public.nope_in_scope]
    write: { statements: [insert], relations: [public.canary] }
    ddl: { kinds: [create_table], schemas: [], temporary: true }
  writer:
    readOnly: false
    relations: [public.orders]
    write: { statements: [insert, update, delete], relations: [public.canary, public.gone_in_scope] }
`;

let tp: TestProxy;
let direct: pg.Client;
let proxied: pg.Client;
let statementSeq = 0;

beforeAll(async () => {
  // A relation the catalog snapshot holds but that is dropped later: the server's analysis reports it missing.
  const su = await superClient();
  try {
    await su.query(
      'DROP TABLE IF EXISTS public.ephemeral; CREATE TABLE public.ephemeral (id int); GRANT SELECT ON public.ephemeral TO pgwarden',
    );
  } finally {
    await su.end();
  }
  tp = await startTestProxy({ policy: POLICY });
  direct = await superClient();
  proxied = new pg.Client(tp.pgConfig(await tp.token({ role: 'scoped' })));
  proxied.on('error', () => {});
  await proxied.connect();
});

afterAll(async () => {
  await proxied?.end().catch(() => {});
  await direct?.end().catch(() => {});
  await tp?.close();
});

interface Seen {
  code: string | undefined;
  message: string;
  position: string | undefined;
  detail?: string | undefined;
  hint?: string | undefined;
}

async function failure(c: pg.Client, text: string, protocol: 'simple' | 'parse'): Promise<Seen> {
  // A named statement makes node-postgres send Parse/Bind/Execute; a plain text query is one simple Query.
  const q = protocol === 'parse' ? { name: `ec_${++statementSeq}`, text } : text;
  const e = (await pgError(() => c.query(q))) as Seen;
  return { code: e.code, message: e.message, position: e.position, detail: e.detail, hint: e.hint };
}

/** Texts PostgreSQL 15's grammar and pgwarden's (libpg-query) reject alike. */
const MALFORMED = [
  'SELEC 1',
  'FORM orders',
  'SELECT 1 FORM orders x',
  'SELECT id FROM orders WHERE id = = 1',
  'SELECT (1',
  'SELECT 1 +',
  'PREPARE p AS CREATE TABLE x (a int)',
  // Characters before the error are counted as characters, not bytes: two-byte, three-byte and four-byte ones.
  "SELECT 'é', 'ü' FORM orders x",
  "SELECT '€€€' AS money FROM orders WHERE",
  "SELECT '😀😀', '𝄞' , FROM orders",
  "SELECT 'a\u00e9\u0301' AS combined FROM FROM",
  // The error in a later statement: the position counts from the start of the whole text.
  "SELECT 1; SELECT 'ä' FORM orders x",
  "SELECT 'ö';\nSELECT 2;\n  SELEC 3",
  'SELECT 1; DELETE FROM canary; SELECT 2 +',
  // Lexical errors: unterminated quotes, identifiers, dollar quotes and comments.
  "SELECT 'abc",
  "SELECT 'é' || 'abc",
  'SELECT "abc',
  'SELECT $$abc',
  'SELECT $tag$abc$other$',
  'SELECT 1 /* abc',
  'SELECT 1 /* nested /* once */',
  "SELECT E'\\",
  'SELECT 123abc',
  "SELECT U&'\\00zz'",
  // Line breaks and tabs before the error.
  "SELECT id,\r\n\tstatus\r\n  FROM orders\r\n WHERE status IN ('paid',,'new')",
];

describe('syntax errors reach the client as PostgreSQL sends them', () => {
  for (const protocol of ['simple', 'parse'] as const) {
    it(`${protocol}: code, message and position equal a direct connection's, for ${MALFORMED.length} texts`, async () => {
      const before = await canaryCount();
      for (const text of MALFORMED) {
        const want = await failure(direct, text, protocol);
        const got = await failure(proxied, text, protocol);
        expect(want.code, text).toBe('42601');
        expect({ code: got.code, message: got.message, position: got.position }, text).toEqual({
          code: want.code,
          message: want.message,
          position: want.position,
        });
        // PostgreSQL sends neither for a syntax error; pgwarden adds only the reason line every error of its own carries.
        expect(got.detail, text).toBe('reason=statement_invalid');
        expect(got.hint, text).toBeUndefined();
      }
      // The session is usable afterwards and nothing reached the database.
      expect((await proxied.query('SELECT 1 AS n')).rows[0].n).toBe(1);
      expect(await canaryCount()).toBe(before);
    });
  }

  it("text only the server rejects (its grammar is older than pgwarden's) gets the server's own error and position", async () => {
    // Non-decimal and underscored integers are PostgreSQL 16 syntax: 15's scanner calls them trailing junk.
    for (const text of ["SELECT 'ä', 0x1F AS n FROM orders LIMIT 1", "SELECT 'ä', 1_000 AS n FROM orders LIMIT 1"]) {
      let want: Seen | undefined;
      try {
        await direct.query(text);
      } catch (e) {
        want = e as Seen;
      }
      if (want === undefined) {
        expect((await proxied.query(text)).rows, text).toHaveLength(1);
        continue;
      }
      const got = await failure(proxied, text, 'simple');
      expect({ code: got.code, message: got.message, position: got.position }, text).toEqual({
        code: want.code,
        message: want.message,
        position: want.position,
      });
    }
  });

  it("the grammar's errors PostgreSQL raises with another SQLSTATE keep it (22025 with its hint, 42P20)", async () => {
    for (const text of [
      "SELECT 'é', E'\\u00'",
      'SELECT sum(id) OVER (ROWS UNBOUNDED FOLLOWING) FROM orders',
      'SELECT sum(id) OVER (ROWS BETWEEN CURRENT ROW AND UNBOUNDED PRECEDING) FROM orders',
      'SELECT sum(id) OVER (ROWS BETWEEN 1 FOLLOWING AND CURRENT ROW) FROM orders',
      'SELECT sum(id) OVER (ROWS BETWEEN CURRENT ROW AND 1 PRECEDING) FROM orders',
    ]) {
      for (const protocol of ['simple', 'parse'] as const) {
        const want = await failure(direct, text, protocol);
        const got = await failure(proxied, text, protocol);
        expect(['22025', '42P20'], text).toContain(want.code);
        expect({ code: got.code, message: got.message, position: got.position, hint: got.hint }, text).toEqual({
          code: want.code,
          message: want.message,
          position: want.position,
          hint: want.hint,
        });
      }
    }
  });

  it('a position at the very first character (libpg-query reports it as 0, like "no position") is 1', async () => {
    const got = await failure(proxied, 'FORM orders', 'simple');
    expect(got).toMatchObject({ code: '42601', message: 'syntax error at or near "FORM"', position: '1' });
  });

  it('the same text with literals of other lengths gets its own position (the decision cache keeps them apart)', async () => {
    for (const lit of ['a', 'abcdef', 'é', '😀😀😀', '']) {
      const text = `SELECT '${lit}' FORM orders x`;
      const want = await failure(direct, text, 'simple');
      const got = await failure(proxied, text, 'simple');
      expect(got.position, text).toBe(want.position);
    }
  });

  it("a long text (past the nesting pre-screen) with an unterminated string still gets the parser's own error", async () => {
    const text = `SELECT ${Array.from({ length: 1500 }, (_, i) => `(${i}+1)`).join(' + ')} FROM orders WHERE status = 'paid`;
    const want = await failure(direct, text, 'simple');
    const got = await failure(proxied, text, 'simple');
    expect({ code: got.code, message: got.message, position: got.position }).toEqual({
      code: want.code,
      message: want.message,
      position: want.position,
    });
  });
});

describe("text pgwarden's grammar (PostgreSQL 18) rejects and an older server accepts", () => {
  // SYSTEM_USER became a reserved keyword in PostgreSQL 16: on 15 it is an ordinary name, here a table alias.
  const text = 'SELECT id FROM orders system_user WHERE system_user.id = 1';

  it('is still refused; on an older server as 0A000 naming the keyword, on a server that agrees as its own 42601', async () => {
    const got = await failure(proxied, text, 'simple');
    if (testPg().version < 16) {
      expect((await direct.query(text)).rows).toHaveLength(1);
      expect(got).toMatchObject({
        code: '0A000',
        message:
          'pgwarden cannot parse this statement: syntax error at or near "system_user"; hint: write it as a quoted identifier ("system_user"), which both grammars read alike (reason=unsupported)',
        position: '23',
      });
      expect(got.detail).toMatch(
        /SYSTEM_USER is a reserved keyword in the grammar pgwarden parses with \(PostgreSQL 18\) but not a keyword on the database server/,
      );
      expect(got.hint).toBe('write it as a quoted identifier ("system_user"), which both grammars read alike');
      // Quoted, both grammars agree and the statement runs.
      expect((await proxied.query('SELECT id FROM orders "system_user" WHERE "system_user".id = 1')).rows).toHaveLength(
        1,
      );
    } else {
      const want = await failure(direct, text, 'simple');
      expect({ code: got.code, message: got.message, position: got.position }).toEqual({
        code: want.code,
        message: want.message,
        position: want.position,
      });
    }
  });

  it('an ordinary syntax error next to a newer keyword is still 42601', async () => {
    const other = "SELECT '{}'::json FORM orders x";
    const want = await failure(direct, other, 'simple');
    const got = await failure(proxied, other, 'simple');
    expect({ code: got.code, message: got.message, position: got.position }).toEqual({
      code: '42601',
      message: want.message,
      position: want.position,
    });
  });
});

describe('several statements in one Parse message', () => {
  it('42601 "cannot insert multiple commands into a prepared statement", as PostgreSQL answers', async () => {
    const before = await canaryCount();
    for (const text of ['SELECT 1; SELECT 2', 'SELECT id FROM orders; DELETE FROM canary', 'SELECT 1;;SELECT 2;']) {
      const want = await failure(direct, text, 'parse');
      const got = await failure(proxied, text, 'parse');
      expect(want.code).toBe('42601');
      expect({ code: got.code, message: got.message, position: got.position }, text).toEqual({
        code: want.code,
        message: want.message,
        position: want.position,
      });
    }
    expect(await canaryCount()).toBe(before);
  });

  it('a syntax error in the second statement of a Parse is reported as the syntax error, as PostgreSQL does', async () => {
    const text = "SELECT 'ü'; SELEC 2";
    const want = await failure(direct, text, 'parse');
    const got = await failure(proxied, text, 'parse');
    expect(want.message).toBe('syntax error at or near "SELEC"');
    expect({ code: got.code, message: got.message, position: got.position }).toEqual({
      code: want.code,
      message: want.message,
      position: want.position,
    });
  });
});

describe('unknown and forbidden relations (docs/policy.md, "Unknown and forbidden relations")', () => {
  /** What reaches the client with one relation name taken out, to compare two refusals that differ only in it (names of one length, so positions match). */
  const without = (s: Seen, name: string) =>
    JSON.stringify({ code: s.code, message: s.message, position: s.position, detail: s.detail, hint: s.hint })
      .split(name)
      .join('<rel>');

  for (const protocol of ['simple', 'parse'] as const) {
    it(`${protocol}: a missing relation the role's relations cover is 42P01 with PostgreSQL's message and position`, async () => {
      for (const text of [
        'SELECT * FROM nope_in_scope',
        "SELECT 'ü', id FROM public.nope_in_scope WHERE id = 1",
        'SELECT o.id FROM orders o JOIN nope_in_scope n ON n.id = o.id',
        'SELECT * FROM archive.events',
        'SELECT * FROM pg_catalog.pg_nope',
        'SELECT 1; SELECT * FROM "nope_in_scope"',
      ]) {
        if (protocol === 'parse' && text.includes(';')) continue;
        const want = await failure(direct, text, protocol);
        const got = await failure(proxied, text, protocol);
        expect(want.code, text).toBe('42P01');
        expect({ code: got.code, message: got.message, position: got.position }, text).toEqual({
          code: want.code,
          message: want.message,
          position: want.position,
        });
      }
    });

    it(`${protocol}: outside the role's relations, an existing and a missing relation get the same refusal`, async () => {
      const pairs: [string, string, string, string][] = [
        ['SELECT * FROM secrets', 'SELECT * FROM nosucht', 'secrets', 'nosucht'],
        ['SELECT value FROM public.secrets', 'SELECT value FROM public.nosucht', 'secrets', 'nosucht'],
        ['SELECT * FROM "secrets"', 'SELECT * FROM "nosucht"', 'secrets', 'nosucht'],
        ['SELECT * FROM app.public.secrets', 'SELECT * FROM app.public.nosucht', 'secrets', 'nosucht'],
        // Two relations: the verdict must not depend on whether the forbidden one exists.
        ['SELECT * FROM secrets, nope_in_scope', 'SELECT * FROM nosucht, nope_in_scope', 'secrets', 'nosucht'],
        ['SELECT * FROM nope_in_scope, secrets', 'SELECT * FROM nope_in_scope, nosucht', 'secrets', 'nosucht'],
        [
          'SELECT * FROM orders WHERE id IN (SELECT id FROM secrets)',
          'SELECT * FROM orders WHERE id IN (SELECT id FROM nosucht)',
          'secrets',
          'nosucht',
        ],
        ['SELECT * FROM canary', 'SELECT * FROM canarx', 'canary', 'canarx'],
        // A row type names its relation.
        ['SELECT NULL::secrets', 'SELECT NULL::nosucht', 'secrets', 'nosucht'],
        [
          "SELECT (json_populate_record(NULL::public.secrets, '{}')).*",
          "SELECT (json_populate_record(NULL::public.nosucht, '{}')).*",
          'secrets',
          'nosucht',
        ],
      ];
      for (const [exists, missing, a, b] of pairs) {
        const x = await failure(proxied, exists, protocol);
        const y = await failure(proxied, missing, protocol);
        expect(x.code, exists).toBe(exists.includes('nope_in_scope') ? '42P01' : '42501');
        expect(without(x, a), `${exists} / ${missing}`).toBe(without(y, b));
      }
    });
  }

  it('writes: a missing write target the role may write is 42P01; outside them existing and missing look alike', async () => {
    const w = new pg.Client(tp.pgConfig(await tp.token({ role: 'writer' })));
    w.on('error', () => {});
    await w.connect();
    try {
      const before = await canaryCount();
      const text = "INSERT INTO gone_in_scope VALUES (1, 'x')";
      const want = await failure(direct, text, 'simple');
      const got = await failure(w, text, 'simple');
      expect({ code: got.code, message: got.message, position: got.position }).toEqual({
        code: '42P01',
        message: want.message,
        position: want.position,
      });
      for (const [exists, missing] of [
        ["INSERT INTO secrets (value) VALUES ('x')", "INSERT INTO nosucht (value) VALUES ('x')"],
        ['DELETE FROM public.secrets', 'DELETE FROM public.nosucht'],
        ["UPDATE customers SET name = 'x'", "UPDATE nosucht SET name = 'x'"],
      ] as const) {
        const a = exists.match(/(secrets|customers)/)?.[1] ?? '';
        const x = await failure(w, exists, 'simple');
        const y = await failure(w, missing, 'simple');
        expect(x.code).toBe('42501');
        expect(without(x, a), exists).toBe(without(y, 'nosucht'));
      }
      expect(await canaryCount()).toBe(before);
    } finally {
      await w.end();
    }
  });

  it('a role that may make temporary tables: its temporary table is read; a missing name is refused like a forbidden one', async () => {
    const t = new pg.Client(tp.pgConfig(await tp.token({ role: 'temper' })));
    t.on('error', () => {});
    await t.connect();
    try {
      await t.query('CREATE TEMP TABLE tmpx (id int)');
      // The temporary table is the session's own: analysed on its own connection, it is read.
      expect((await t.query('SELECT * FROM tmpx')).rows).toEqual([]);
      // A missing name outside the role's relations is refused exactly as a forbidden one: existence does not show.
      const missing = await failure(t, 'SELECT * FROM tmpy', 'simple');
      const forbidden = await failure(t, 'SELECT * FROM secrets', 'simple');
      expect(missing.code).toBe('42501');
      expect(without(forbidden, 'secrets')).toBe(without(missing, 'tmpy'));
      // Qualified, the schema is known: PostgreSQL's 42P01.
      const want = await failure(direct, 'SELECT * FROM public.nope_in_scope', 'simple');
      const got = await failure(t, 'SELECT * FROM public.nope_in_scope', 'simple');
      expect({ code: got.code, message: got.message, position: got.position }).toEqual({
        code: want.code,
        message: want.message,
        position: want.position,
      });
    } finally {
      await t.end();
    }
  });

  it("a relation dropped after pgwarden read the catalog: the server's own 42P01 and position reach the client", async () => {
    const su = await superClient();
    try {
      await su.query('DROP TABLE public.ephemeral');
    } finally {
      await su.end();
    }
    for (const text of ['SELECT id FROM ephemeral', "SELECT 'é', id FROM public.ephemeral"]) {
      const want = await failure(direct, text, 'simple');
      const got = await failure(proxied, text, 'simple');
      expect(want.code).toBe('42P01');
      expect({ code: got.code, message: got.message, position: got.position }, text).toEqual({
        code: want.code,
        message: want.message,
        position: want.position,
      });
    }
  });
});

describe("errors of PostgreSQL's own analysis keep where PostgreSQL raised them (drivers' `routine`, `file`, `line`)", () => {
  it.each([
    // postgres.js's 'Properly throws routine error …' tests compare the routine (transformAssignedExpr there).
    'SELECT id FROM orders WHERE id = ROW(1, 2)',
    'SELECT nope FROM orders',
    'SELECT id FROM orders WHERE id = 1::text',
  ])('%s: same SQLSTATE, message and source fields as directly', async (text) => {
    for (const protocol of ['simple', 'parse'] as const) {
      const q = protocol === 'parse' ? { name: `src_${++statementSeq}`, text } : text;
      const want = (await pgError(() => direct.query(q))) as Seen & { routine?: string; file?: string; line?: string };
      const got = (await pgError(() => proxied.query(q))) as Seen & { routine?: string; file?: string; line?: string };
      expect(want.routine, text).toBeTruthy();
      expect(
        { code: got.code, message: got.message, routine: got.routine, file: got.file, line: got.line },
        `${text} (${protocol})`,
      ).toEqual({ code: want.code, message: want.message, routine: want.routine, file: want.file, line: want.line });
    }
  });
});
