// policy/literals.ts by example: which constants literalShape finds and how it classes them, what it must refuse, and replaceLiterals.
import { beforeAll, describe, expect, it } from 'vitest';
import { MAX_SHAPE_LENGTH, literalShape, replaceLiterals, type LiteralShape } from '../../../policy/literals.ts';
import { initParser, parseStatements, scanTokens } from '../../../policy/parser.ts';

beforeAll(async () => {
  await initParser();
});

function shapeOf(sql: string): LiteralShape {
  const s = literalShape(sql);
  if (s === undefined) throw new Error(`expected a shape for ${JSON.stringify(sql)}`);
  return s;
}

/** The class letters of the constants, in order, read off the key. */
function classes(sql: string): string[] {
  return shapeOf(sql)
    .key.split('\u0000')
    .slice(1)
    .map((part) => part.charAt(0));
}

/** The constants' texts, from the spans. */
function constants(sql: string): string[] {
  const { spans } = shapeOf(sql);
  const out: string[] = [];
  for (let k = 0; k < spans.length; k += 2) out.push(sql.slice(spans[k], spans[k + 1]));
  return out;
}

const key = (sql: string): string | undefined => literalShape(sql)?.key;

describe('literalShape: pgbench and the shape fields', () => {
  const pgbench = (aid: number) => `SELECT abalance FROM pgbench_accounts WHERE aid = ${aid};`;

  it('gives every pgbench aid the same key, and replaceLiterals the parameterised text', () => {
    const a = shapeOf(pgbench(123));
    expect(a).toEqual({
      key: 'SELECT abalance FROM pgbench_accounts WHERE aid = \u0000i;',
      spans: [50, 53],
      tail: 1,
      maxParam: 0,
    });
    for (const aid of [1, 7, 98765, 100000, 2147483647]) expect(key(pgbench(aid))).toBe(a.key);
    expect(replaceLiterals(pgbench(123), a)).toBe('SELECT abalance FROM pgbench_accounts WHERE aid = $1;');
    expect(replaceLiterals(pgbench(98765), shapeOf(pgbench(98765)))).toBe(
      'SELECT abalance FROM pgbench_accounts WHERE aid = $1;',
    );
  });

  it('numbers new parameters after the highest existing $n', () => {
    const sql = 'SELECT * FROM t WHERE a = $2 AND b = 5';
    const s = shapeOf(sql);
    expect(s.maxParam).toBe(2);
    expect(replaceLiterals(sql, s)).toBe('SELECT * FROM t WHERE a = $2 AND b = $3');
    const many = "UPDATE t SET a = 'x', b = $7 WHERE c = 1.5 AND d = $3 AND e = 10";
    expect(replaceLiterals(many, shapeOf(many))).toBe(
      'UPDATE t SET a = $8, b = $7 WHERE c = $9 AND d = $3 AND e = $10',
    );
    expect(shapeOf('SELECT $10, 1').maxParam).toBe(10);
  });

  it('reports spans in UTF-16 units, the tail after the last constant, and keeps other text verbatim', () => {
    const sql = "SELECT 'é', 42 FROM \"tåble\" WHERE x = 'ü' ORDER BY 1";
    const s = shapeOf(sql);
    expect(constants(sql)).toEqual(["'é'", '42', "'ü'", '1']);
    expect(s.tail).toBe(0);
    expect(s.key).toBe('SELECT \u0000s, \u0000i FROM "tåble" WHERE x = \u0000s ORDER BY \u0000i');
    expect(shapeOf('SELECT 1 FROM t').tail).toBe(' FROM t'.length);
    expect(replaceLiterals(sql, s)).toBe('SELECT $1, $2 FROM "tåble" WHERE x = $3 ORDER BY $4');
  });

  it('treats a sign as an operator, not as part of the constant', () => {
    expect(constants('SELECT -1, +2, x-3, 4*-5.5')).toEqual(['1', '2', '3', '4', '5.5']);
    expect(key('SELECT -1')).toBe('SELECT -\u0000i');
  });
});

describe('literalShape: classes', () => {
  it.each([
    ['0', 'i'],
    ['000', 'i'],
    ['2147483647', 'i'],
    ['0002147483647', 'i'],
    ['2147483648', 'l'],
    ['0002147483648', 'l'],
    ['9223372036854775807', 'l'],
    ['09223372036854775807', 'l'],
    ['9223372036854775808', 'n'],
    ['99999999999999999999999999', 'n'],
    ['1.5', 'n'],
    ['.5', 'n'],
    ['5.', 'n'],
    ['1e5', 'n'],
    ['1E5', 'n'],
    ['1.5e-3', 'n'],
    ['1E+05', 'n'],
    ['.5e3', 'n'],
    ['0.0', 'n'],
    ["'x'", 's'],
    ["''", 's'],
  ])('%s is class %s', (lit, cls) => {
    expect(classes(`SELECT ${lit}`)).toEqual([cls]);
    expect(constants(`SELECT ${lit}`)).toEqual([lit]);
  });

  it('agrees with the real scanner on the int4 boundary (ICONST below, FCONST from 2^31)', () => {
    const types = (sql: string) =>
      scanTokens(sql)
        ?.filter((t) => t.tokenType === 266 || t.tokenType === 260)
        .map((t) => t.tokenType);
    expect(types('SELECT 2147483647, 0002147483647')).toEqual([266, 266]);
    expect(types('SELECT 2147483648, 9223372036854775808')).toEqual([260, 260]);
  });

  it('reads a doubled quote as part of one string constant', () => {
    expect(constants("SELECT 'a''b'")).toEqual(["'a''b'"]);
    expect(constants("SELECT '''', 'it''s', ''''''")).toEqual(["''''", "'it''s'", "''''''"]);
    expect(constants("SELECT 'a''b' || 'c'")).toEqual(["'a''b'", "'c'"]);
    expect(key("SELECT 'a''b'")).toBe(key("SELECT 'zzz'"));
  });

  it('keeps quoted identifiers verbatim: a quote inside them does not start a string', () => {
    expect(constants(`SELECT "a'b" FROM t WHERE x = 1`)).toEqual(['1']);
    expect(key(`SELECT "a'b" FROM t WHERE x = 1`)).toBe(`SELECT "a'b" FROM t WHERE x = \u0000i`);
    expect(constants(`SELECT "x""y", 'v' FROM "it's"`)).toEqual(["'v'"]);
    expect(key(`SELECT "x""y", 'v' FROM "it's"`)).toBe(`SELECT "x""y", \u0000s FROM "it's"`);
    // A double quote inside a string is just a character.
    expect(constants(`SELECT 'say "hi"', 2`)).toEqual([`'say "hi"'`, '2']);
    // Text that would be a comment or a dollar quote is inert inside a quoted identifier or a string.
    expect(constants(`SELECT "--", '/*', "$$", 3`)).toEqual([`'/*'`, '3']);
  });
});

describe('literalShape: keys are verbatim outside the constants', () => {
  it('gives texts that differ only in whitespace or identifier case different keys', () => {
    const base = 'SELECT a FROM t WHERE x = 1';
    for (const other of [
      'SELECT  a FROM t WHERE x = 1',
      'SELECT a FROM t WHERE x=1',
      'SELECT a\nFROM t WHERE x = 1',
      'select a from t where x = 1',
      'SELECT A FROM t WHERE x = 1',
      'SELECT a FROM t WHERE x = 1 ',
    ]) {
      expect(key(other)).toBeDefined();
      expect(key(other)).not.toBe(key(base));
    }
  });

  it('gives a different key to each class of constant', () => {
    const k = (w: string) => key(`SELECT a FROM t WHERE ${w}`);
    const keys = ['x = 1', "x = '1'", 'x = 1.0', 'x = 2147483648'].map(k);
    expect(new Set(keys).size).toBe(4);
    // Integers beyond int8 are numeric, like 1.0: PostgreSQL gives both the same type.
    expect(k('x = 9223372036854775808')).toBe(k('x = 1.0'));
  });

  it('keeps operators, identifiers and structure apart', () => {
    const k = key('SELECT a FROM t WHERE x = 1');
    expect(key('SELECT a FROM t WHERE x < 1')).not.toBe(k);
    expect(key('SELECT b FROM t WHERE x = 1')).not.toBe(k);
    expect(key('SELECT a FROM "t" WHERE x = 1')).not.toBe(k);
    expect(key('SELECT a FROM t WHERE x = 1 LIMIT 2')).not.toBe(k);
    expect(key('SELECT a FROM t WHERE x = $1')).toBeUndefined();
  });
});

describe('literalShape: what it refuses', () => {
  it.each([
    ['a -- comment', 'SELECT 1 -- c'],
    ['a -- comment at the start', '-- c\nSELECT 1'],
    ['a /* */ comment', 'SELECT /* c */ 1'],
    ['a comment glued into an operator', 'SELECT 1--2'],
    ['a comment start inside an operator', 'SELECT 1 +/*x*/ 2'],
    ['a comment start after <', 'SELECT 1 </* x */ 2'],
    ['a $$ dollar quote', 'SELECT $$x$$, 1'],
    ['a tagged dollar quote', 'SELECT $tag$x$tag$, 1'],
    ['an unterminated dollar quote', 'SELECT 1, $'],
    ["E''", "SELECT E'x'"],
    ["e''", "SELECT e'x'"],
    ["B''", "SELECT B'01'"],
    ["b''", "SELECT b'01'"],
    ["X''", "SELECT X'ff'"],
    ["x''", "SELECT x'ff'"],
    ["N''", "SELECT N'x'"],
    ["U&''", "SELECT U&'x'"],
    ["u&''", "SELECT u&'x'"],
    ['U&""', 'SELECT U&"x", 1'],
    ['an identifier glued to a string', "SELECT foo'x'"],
    ['a backslash in a string', "SELECT 'a\\b'"],
    ['a trailing backslash in a string', "SELECT 'a\\'"],
    ['strings continued across a newline', "SELECT 'a'\n'b'"],
    ['strings continued across a newline and spaces', "SELECT 'a'  \n\t 'b'"],
    ['adjacent strings on one line', "SELECT 'a' 'b'"],
    ['adjacent strings with a tab', "SELECT 'a'\t'b'"],
    ['a number glued to an identifier', 'SELECT 1abc'],
    ['a float glued to an identifier', 'SELECT 1.5abc'],
    ['a hexadecimal integer', 'SELECT 0x1F'],
    ['an octal integer', 'SELECT 0o17'],
    ['a binary integer', 'SELECT 0b101'],
    ['an underscore in a number', 'SELECT 1_000'],
    ['a number glued to $', 'SELECT 1$'],
    ['1..2', 'SELECT 1..2'],
    ['1.2.3', 'SELECT 1.2.3'],
    ['an exponent without digits', 'SELECT 1e'],
    ['an exponent sign without digits', 'SELECT 1e+'],
    ['an exponent sign then a letter', 'SELECT 1e-x'],
    ['an unterminated string', "SELECT 'unterminated"],
    ['an unterminated string after a constant', "SELECT 1, 'unterminated"],
    ['an unterminated quoted identifier', 'SELECT 1, "unterminated'],
    ['a NUL outside strings', 'SELECT 1\u0000'],
    ['a control character', 'SELECT 1\u0001'],
    ['a vertical tab', 'SELECT\u000b1'],
    ['DEL', 'SELECT 1\u007f'],
    ['a backslash outside strings', 'SELECT 1 \\ 2'],
    ['a psql meta-command', '\\d t; SELECT 1'],
    ['a brace', 'SELECT {1}'],
    ['a closing brace', 'SELECT 1}'],
    ['a parameter glued to an identifier', 'SELECT $1a, 2'],
    ['a parameter with more than five digits', 'SELECT $123456, 2'],
    ['no constant at all', 'SELECT a FROM t WHERE b = $1'],
    ['only keywords', 'SELECT true, false, null'],
    ['the empty text', ''],
    ['only whitespace', '  \n '],
  ])('%s: %j', (_what, sql) => {
    expect(literalShape(sql)).toBeUndefined();
  });

  it(`accepts up to ${MAX_SHAPE_LENGTH} characters and refuses more`, () => {
    expect(MAX_SHAPE_LENGTH).toBe(8192);
    const at = `SELECT 1${' '.repeat(MAX_SHAPE_LENGTH - 'SELECT 1'.length)}`;
    expect(at.length).toBe(8192);
    expect(literalShape(at)?.spans).toEqual([7, 8]);
    expect(literalShape(`${at} `)).toBeUndefined();
    expect(literalShape(`SELECT '${'x'.repeat(8200)}'`)).toBeUndefined();
  });

  it('accepts the harmless neighbours of what it refuses', () => {
    expect(constants('SELECT 1 - -2')).toEqual(['1', '2']);
    expect(constants('SELECT 4 / 2 * 3')).toEqual(['4', '2', '3']);
    expect(constants('SELECT a */ 2 FROM t')).toEqual(['2']);
    expect(constants('SELECT U & 1')).toEqual(['1']);
    expect(constants("SELECT 'a' || 'b'")).toEqual(["'a'", "'b'"]);
    expect(constants("SELECT 'a', 'b'")).toEqual(["'a'", "'b'"]);
    expect(constants('SELECT 1.e5, 1.5::numeric, $1.5')).toEqual(['1.e5', '1.5', '.5']);
    expect(constants("SELECT x::text = 'a', a$b, 'z'")).toEqual(["'a'", "'z'"]);
    expect(constants('SELECT "x"\'y\'')).toEqual(["'y'"]);
  });
});

describe('literalShape: the minimal counterexamples found by test/property/literals.test.ts', () => {
  /** The constant tokens of the real scanner as [start, end, type] (ASCII input: byte offsets are UTF-16 offsets). */
  function scannerConstants(sql: string): number[][] | undefined {
    return scanTokens(sql)
      ?.filter((t) => [260, 261, 262, 263, 264, 266].includes(t.tokenType))
      .map((t) => [t.start, t.end, t.tokenType]);
  }

  it('a digit after an even run of dots: PostgreSQL reads `..` (DOT_DOT) then the integer, not `.5`', () => {
    // PostgreSQL: `..` DOT_DOT [8,10), ICONST `5` [10,11). literalShape: `.` then a numeric `.5` at [9,11).
    expect(scannerConstants('SELECT a..5')).toEqual([[10, 11, 266]]);
    const s = literalShape('SELECT a..5');
    if (s !== undefined) {
      expect(s.spans).toEqual([10, 11]);
      expect(classes('SELECT a..5')).toEqual(['i']);
    }
  });

  it('a zero-length quoted identifier is a lexical error, so there is no shape', () => {
    expect(scanTokens('SELECT "", 1')).toBeUndefined();
    expect(literalShape('SELECT "", 1')).toBeUndefined();
  });

  it('float(p) has no shape: p picks float4 or float8, so texts differing in p are not the same tree up to constants', () => {
    const texts = [
      'SELECT 1::float(24)',
      'SELECT 1::float(25)',
      'SELECT 1::FLOAT ( 25 )',
      'SELECT CAST(x AS float(3)) FROM t WHERE a = 1',
    ];
    const typeNames = texts.slice(0, 2).map((t) => {
      const r = parseStatements(t);
      return r.ok ? JSON.stringify(r.stmts).match(/"float\d"/)?.[0] : 'parse error';
    });
    expect(typeNames).toEqual(['"float4"', '"float8"']);
    for (const t of texts) expect(key(t), t).toBeUndefined();
  });

  it('current_timestamp(p) and kin have no shape: p is a typmod of SQLValueFunction, not a constant node', () => {
    const a = 'SELECT current_timestamp(0) FROM t';
    const b = 'SELECT current_timestamp(6) FROM t';
    const svf = (sql: string) => {
      const r = parseStatements(sql);
      return r.ok
        ? JSON.stringify(r.stmts)
            .match(/"SQLValueFunction":\{[^}]*\}/)?.[0]
            .replace(/"location":\d+/, '')
        : 'parse error';
    };
    expect(svf(b)).toContain('"typmod":6');
    expect(svf(a)).not.toBe(svf(b));
    for (const t of [a, b, 'SELECT localtime(2)', 'SELECT LOCALTIMESTAMP (2), 1', 'SELECT current_time(1)'])
      expect(key(t), t).toBeUndefined();
    // An ordinary function's argument is a constant like any other.
    expect(key('SELECT abs(5) FROM t')).toBe('SELECT abs(\u0000i) FROM t');
  });
});
