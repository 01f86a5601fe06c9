// Property tests for policy/literals.ts: its constants are exactly the real PostgreSQL scanner's, equal keys mean equal parse trees, replaceLiterals only swaps spans.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { literalShape, replaceLiterals, type LiteralShape } from '../../policy/literals.ts';
import { initParser, parseStatements, scanTokens } from '../../policy/parser.ts';

// One seed per run, from FC_SEED to replay a failure.
const seed =
  process.env.FC_SEED !== undefined && process.env.FC_SEED !== ''
    ? Number(process.env.FC_SEED)
    : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;

function check<Ts extends [unknown, ...unknown[]]>(property: fc.IProperty<Ts>, numRuns: number): void {
  try {
    fc.assert(property, { seed, numRuns });
  } catch (err) {
    console.error(`property failed; replay with FC_SEED=${seed}`);
    throw err;
  }
}

beforeAll(async () => {
  await initParser();
});

// ------------------------------------------------------------------ the real scanner as the oracle

// libpg-query 18's token types (gram.y's token order; scanTokens also names the first few, e.g. tokenName 'FCONST').
const FCONST = 260;
const SCONST = 261;
const USCONST = 262;
const BCONST = 263;
const XCONST = 264;
const ICONST = 266;
const PARAM = 267;
const SQL_COMMENT = 275;
const C_COMMENT = 276;
const CONSTANT_TYPES = new Set([FCONST, SCONST, USCONST, BCONST, XCONST, ICONST]);

/** Token type → the classes of literalShape it may correspond to (PostgreSQL lexes integers beyond int4 as FCONST). */
const CLASSES_OF: Record<number, string> = { [SCONST]: 's', [ICONST]: 'i', [FCONST]: 'ln' };

interface OracleToken {
  start: number;
  end: number;
  type: number;
  text: string;
}

/** UTF-8 byte offset → UTF-16 offset, for every byte offset that starts a character (and the end). */
function byteToUtf16(sql: string): Map<number, number> {
  const map = new Map<number, number>();
  let bytes = 0;
  let i = 0;
  while (i < sql.length) {
    map.set(bytes, i);
    const cp = sql.codePointAt(i) ?? 0;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    i += cp >= 0x10000 ? 2 : 1;
  }
  map.set(bytes, i);
  return map;
}

/**
 * libpg-query's scanSync fails on a control character other than tab, newline and carriage return inside a token's
 * text (it emits the token as JSON without escaping it: "Bad control character in string literal"), although
 * PostgreSQL itself accepts it in a string or quoted identifier. Such characters are therefore replaced by a space
 * before scanning: inside a string or quoted identifier any character but a quote (or backslash) lexes alike, and
 * outside them form feed is whitespace either way, while literalShape refuses the others there.
 */
const OPAQUE_CONTROLS = /[\u0001-\u0008\u000b\u000c\u000e-\u001f]/g;

/** The real scanner's tokens with UTF-16 offsets, or undefined when the text does not lex. */
function oracleTokens(sql: string): OracleToken[] | undefined {
  const tokens = scanTokens(sql.replace(OPAQUE_CONTROLS, ' '));
  if (tokens === undefined) return undefined;
  const map = byteToUtf16(sql);
  return tokens.map((t) => {
    const start = map.get(t.start);
    const end = map.get(t.end);
    if (start === undefined || end === undefined)
      throw new Error(`token offsets ${t.start}-${t.end} are not character boundaries in ${JSON.stringify(sql)}`);
    return { start, end, type: t.tokenType, text: t.text };
  });
}

/** The class letters of a shape's constants, checked against the key's layout (text outside the spans verbatim, NUL + class per constant). */
function shapeClasses(sql: string, shape: LiteralShape): string[] | string {
  const classes: string[] = [];
  let rebuilt = '';
  let last = 0;
  let keyPos = 0;
  for (let k = 0; k < shape.spans.length; k += 2) {
    const s = shape.spans[k] ?? -1;
    const e = shape.spans[k + 1] ?? -1;
    if (!(last <= s && s < e && e <= sql.length)) return `spans out of order or empty: ${JSON.stringify(shape.spans)}`;
    rebuilt += sql.slice(last, s);
    keyPos += s - last;
    if (shape.key.charCodeAt(keyPos) !== 0) return `no NUL in the key at ${keyPos} for the constant at ${s}`;
    const cls = shape.key.charAt(keyPos + 1);
    classes.push(cls);
    rebuilt += `\u0000${cls}`;
    keyPos += 2;
    last = e;
  }
  rebuilt += sql.slice(last);
  if (rebuilt !== shape.key) return `key is not the text with its constants replaced: ${JSON.stringify(shape.key)}`;
  if (shape.tail !== sql.length - last) return `tail ${shape.tail}, expected ${sql.length - last}`;
  return classes;
}

/**
 * Why literalShape's answer for `sql` disagrees with the real scanner, or undefined when it agrees (or gives up).
 * Agreement: the text lexes, has no comment, and its constant tokens are exactly the shape's spans with matching
 * classes; the highest $n is maxParam.
 */
function disagreement(sql: string): string | undefined {
  const shape = literalShape(sql);
  if (shape === undefined) return undefined;
  // A query text never contains NUL (the wire format ends it there, and the wire layer refuses one), so the real
  // scanner has no say about a NUL inside a string; literalShape refuses one outside (test/unit/policy/literals.test.ts).
  if (sql.includes('\u0000')) return undefined;
  const classes = shapeClasses(sql, shape);
  if (typeof classes === 'string') return classes;
  const tokens = oracleTokens(sql);
  if (tokens === undefined)
    return `literalShape gives spans ${JSON.stringify(shape.spans)} but the real scanner rejects the text`;
  const comment = tokens.find((t) => t.type === SQL_COMMENT || t.type === C_COMMENT);
  if (comment !== undefined)
    return `the real scanner sees a comment ${JSON.stringify(comment.text)} at ${comment.start}`;
  const consts = tokens.filter((t) => CONSTANT_TYPES.has(t.type));
  const real = consts.map((t) => `${t.start}-${t.end}:${t.type}:${t.text}`);
  const mine: string[] = [];
  for (let k = 0; k < shape.spans.length; k += 2)
    mine.push(
      `${shape.spans[k]}-${shape.spans[k + 1]}:${classes[k / 2]}:${sql.slice(shape.spans[k], shape.spans[k + 1])}`,
    );
  const spansAgree =
    consts.length === classes.length &&
    consts.every((t, k) => t.start === shape.spans[2 * k] && t.end === shape.spans[2 * k + 1]);
  if (!spansAgree)
    return `constants differ: literalShape ${JSON.stringify(mine)}, real scanner ${JSON.stringify(real)}`;
  for (let k = 0; k < consts.length; k++) {
    const t = consts[k];
    const cls = classes[k] ?? '?';
    if (t === undefined || !(CLASSES_OF[t.type] ?? '').includes(cls))
      return `class ${cls} for ${JSON.stringify(t?.text)}, real token type ${t?.type}`;
  }
  const maxParam = Math.max(0, ...tokens.filter((t) => t.type === PARAM).map((t) => Number(t.text.slice(1))));
  if (maxParam !== shape.maxParam) return `maxParam ${shape.maxParam}, real scanner's highest $n is ${maxParam}`;
  return undefined;
}

// ------------------------------------------------------------------ generators

const pick = <T>(...xs: T[]) => fc.constantFrom(...xs);

const keyword = pick(
  'SELECT',
  'select',
  'FROM',
  'WHERE',
  'AND',
  'OR',
  'NOT',
  'LIMIT',
  'INSERT INTO',
  'VALUES',
  'UPDATE',
  'SET',
  'DELETE',
  'AS',
  'IN',
  'IS NULL',
  'true',
  'null',
  'e',
  'E',
  'b',
  'B',
  'x',
  'X',
  'n',
  'N',
  'U',
  'u',
  'float',
  'interval',
  'int4',
);
const identifier = fc.stringMatching(/^[a-zA-Z_][a-zA-Z0-9_$]{0,5}$/);
const quotedIdentifier = fc
  .array(pick('a', 'B', ' ', "'", '""', '--', '/*', '$$', '1', '\\', 'é'), { maxLength: 4 })
  .map((parts) => `"${parts.join('')}"`);
const digits = (max: number) => fc.stringMatching(new RegExp(`^[0-9]{1,${max}}$`));
const number = fc.oneof(
  digits(4),
  pick(
    '0',
    '00',
    '2147483647',
    '2147483648',
    '0002147483647',
    '0002147483648',
    '9223372036854775807',
    '9223372036854775808',
    '99999999999999999999999',
  ),
  fc.tuple(digits(3), digits(3)).map(([a, b]) => `${a}.${b}`),
  digits(3).map((d) => `.${d}`),
  digits(3).map((d) => `${d}.`),
  fc.tuple(digits(3), pick('e', 'E', 'e+', 'e-', 'E-'), digits(2)).map(([m, e, x]) => `${m}${e}${x}`),
  fc.tuple(digits(2), digits(2), pick('e', 'E-'), digits(2)).map(([a, b, e, x]) => `${a}.${b}${e}${x}`),
  pick(
    '1e',
    '1e+',
    '1E-',
    '0x1F',
    '0X1f',
    '0o17',
    '0b101',
    '1_000',
    '1abc',
    '1..2',
    '1.2.3',
    '5.e3',
    '.5e',
    '1$',
    '1é',
  ),
);
const stringBody = fc
  .array(pick('a', 'Z', ' ', "''", '"', '\\', '\n', '--', '/*', '*/', '$$', ';', '1', 'é', '€'), { maxLength: 5 })
  .map((p) => p.join(''));
const string = fc.oneof(
  { arbitrary: stringBody.map((b) => `'${b}'`), weight: 4 },
  stringBody.map((b) => `E'${b}'`),
  pick(
    "e'x'",
    "B'01'",
    "b'1'",
    "X'ff'",
    "x'1F'",
    "N'x'",
    "n'x'",
    "U&'x'",
    "u&'d\\0061t'",
    'U&"x"',
    "'a'\n'b'",
    "'a' 'b'",
    "'unterminated",
    '"unterminated',
    "''",
    "''''",
  ),
);
const operator = pick(
  '=',
  '<>',
  '<',
  '>=',
  '-',
  '+',
  '*',
  '/',
  '::',
  '.',
  '..',
  ',',
  '(',
  ')',
  ';',
  '[',
  ']',
  '||',
  '->>',
  '&',
  '@',
  '!',
  '%',
  '^',
  ':=',
  '=>',
  '?',
  '~',
  '#',
  '|',
  '`',
  ':',
  '-+',
  '*-',
  '!=',
);
const param = fc.oneof(
  fc.integer({ min: 0, max: 12 }).map((p) => `$${p}`),
  fc.integer({ min: 0, max: 2_000_000 }).map((p) => `$${p}`),
  pick('$', '$a', '$1a', '$_'),
);
const comment = pick('-- c\n', '--\n', '-- x', '/* c */', '/* /* nested */ */', "/* ' */", '/**/');
const dollarQuote = pick('$$x$$', "$$it's$$", '$tag$x$tag$', '$a$ $b$ $a$', '$$');
const whitespace = pick(' ', '  ', '\n', '\t', '\r\n', '\f', '\v');
const misc = pick('{', '}', '\\', '\u0000', '\u0001', '\u007f', 'é', '€', '😀', '\u00a0');

/** Grammar-ish token soup: fragments of every lexical form, glued with no, one or several separators. */
const soup = fc
  .array(
    fc.tuple(
      fc.oneof(
        { arbitrary: keyword, weight: 3 },
        { arbitrary: identifier, weight: 3 },
        { arbitrary: quotedIdentifier, weight: 1 },
        { arbitrary: number, weight: 4 },
        { arbitrary: string, weight: 4 },
        { arbitrary: operator, weight: 4 },
        { arbitrary: param, weight: 1 },
        { arbitrary: comment, weight: 1 },
        { arbitrary: dollarQuote, weight: 1 },
        { arbitrary: whitespace, weight: 1 },
        { arbitrary: misc, weight: 1 },
      ),
      fc.oneof(
        { arbitrary: fc.constant(' '), weight: 4 },
        { arbitrary: fc.constant(''), weight: 3 },
        { arbitrary: fc.constant('\n'), weight: 1 },
      ),
    ),
    { minLength: 1, maxLength: 16 },
  )
  .map((parts) => parts.map(([f, s]) => f + s).join(''));

/** Soup of only the forms literalShape accepts (so most texts get a shape), glued or not: where the fine lexical rules bite. */
const plainSoup = fc
  .array(
    fc.tuple(
      fc.oneof(
        keyword,
        identifier,
        pick(`"a'b"`, '"x""y"', '"é"', '"$$"', '"--"', '""', '"/*"'),
        digits(3),
        pick(
          '2147483647',
          '2147483648',
          '0002147483648',
          '9223372036854775808',
          '.5',
          '5.',
          '1e5',
          '1.5e-3',
          '1.e3',
          '.5e3',
          '0',
          '00',
        ),
        pick("'a'", "'a''b'", "''", "''''", `'"'`, "'é'", "'--'", "'/*'", "'$$'", "'\t\f'"),
        operator,
        pick('$1', '$2', '$10', '$99999', '$0', '$00'),
        pick(' ', '\t', '\n', '\r', '\f', 'é', '😀', '_', '$'),
      ),
      pick('', '', ' ', '\n'),
    ),
    { minLength: 1, maxLength: 14 },
  )
  .map((parts) => parts.map(([f, s]) => f + s).join(''));

/** Plain random strings over the characters that matter most. */
const randomText = fc.string({ unit: pick(...'a1.\'"$-/*eE_ \n;(),='.split('')), minLength: 1, maxLength: 24 });

/** Texts that literalShape accepts most of the time (for the properties that need a shape). */
const shaped = fc.oneof(plainSoup, soup, randomText).filter((s) => literalShape(s) !== undefined);

// ------------------------------------------------------------------ (a) differential against the real scanner

describe('literalShape agrees with the real PostgreSQL scanner', () => {
  it('on grammar-ish token soup', () => {
    check(
      fc.property(soup, (sql) => {
        expect(disagreement(sql), JSON.stringify(sql)).toBeUndefined();
      }),
      20000,
    );
  });

  it('on token soup of only the forms it accepts', () => {
    check(
      fc.property(plainSoup, (sql) => {
        expect(disagreement(sql), JSON.stringify(sql)).toBeUndefined();
      }),
      20000,
    );
  });

  it('on random strings over a small alphabet', () => {
    check(
      fc.property(randomText, (sql) => {
        expect(disagreement(sql), JSON.stringify(sql)).toBeUndefined();
      }),
      20000,
    );
  });
});

// ------------------------------------------------------------------ (b) key soundness

type Cls = 'i' | 'l' | 'n' | 's';
type Part = string | { hole: Cls };

const leadingZeros = fc.integer({ min: 0, max: 2 }).map((z) => '0'.repeat(z));
/** Literal texts of each class, in all the forms literalShape accepts. */
const VALUE: Record<Cls, fc.Arbitrary<string>> = {
  i: fc
    .tuple(leadingZeros, fc.oneof(fc.integer({ min: 0, max: 2147483647 }), pick(0, 1, 24, 25, 53, 54, 2147483647)))
    .map(([z, v]) => `${z}${v}`),
  l: fc
    .tuple(
      leadingZeros,
      fc.oneof(fc.bigInt({ min: 2147483648n, max: 9223372036854775807n }), pick(2147483648n, 9223372036854775807n)),
    )
    .map(([z, v]) => `${z}${v}`),
  n: fc.oneof(
    fc.bigInt({ min: 9223372036854775808n, max: 10n ** 30n }).map(String),
    fc.tuple(digits(4), digits(4)).map(([a, b]) => `${a}.${b}`),
    digits(4).map((d) => `.${d}`),
    digits(4).map((d) => `${d}.`),
    fc
      .tuple(digits(3), pick('', '.', '.5'), pick('e', 'E', 'e+', 'e-', 'E-'), digits(3))
      .map(([m, f, e, x]) => `${m}${f}${e}${x}`),
  ),
  s: fc
    .array(pick('a', 'Z', ' ', "''", '"', '\n', '--', '/*', '*/', '$$', ';', '1', 'é', '€', '::regclass', ')'), {
      maxLength: 6,
    })
    .map((p) => `'${p.join('')}'`),
};

const h = (hole: Cls): Part => ({ hole });
const num = pick<Cls>('i', 'l', 'n').map(h);
const anyConst = pick<Cls>('i', 'l', 'n', 's', 's').map(h);
const column = pick('a', 'b', 'c.total', 't.id', '"Mixed Case"', 'x');

/** A scalar expression with constant holes. */
const expr: fc.Arbitrary<Part[]> = fc.oneof(
  column.map((c) => [c]),
  anyConst.map((c) => [c]),
  fc.tuple(pick('-', '+', '- '), num).map(([s, c]) => [s, c]),
  fc
    .tuple(anyConst, pick('int', 'bigint', 'text', 'numeric', 'date', 'regclass', 'interval', 'float8'))
    .map(([c, t]) => [c, `::${t}`]),
  fc
    .tuple(anyConst, pick('numeric(', 'varchar(', 'float(', 'timestamp(', 'bit('), pick<Cls>('i', 'i', 'l').map(h))
    .map(([c, t, p]) => [c, `::${t}`, p, ')']),
  fc.tuple(pick('interval ', 'date ', 'int4 '), pick<Cls>('s').map(h)).map(([t, c]) => [t, c]),
  fc.tuple(pick('lower(', 'abs(', 'coalesce(x, ', 'length('), anyConst).map(([f, c]) => [f, c, ')']),
  fc.tuple(column, pick(' + ', ' * ', ' || ', ' / '), anyConst).map(([c, o, k]) => [c, o, k]),
  fc.tuple(anyConst, anyConst).map(([a, b]) => ['CASE WHEN x = ', a, ' THEN ', b, ' ELSE NULL END']),
  fc.tuple(num, num, fc.constant(h('i'))).map(([a, b, i]) => ['ARRAY[', a, ', ', b, '][', i, ']']),
  pick('current_timestamp(', 'localtime(').map((f) => [f, h('i'), ')']),
);

const condition: fc.Arbitrary<Part[]> = fc.oneof(
  fc
    .tuple(column, pick(' = ', ' <> ', ' < ', '>=', ' LIKE ', ' IS DISTINCT FROM '), expr)
    .map(([c, o, e]) => [c, o, ...e]),
  fc
    .tuple(column, fc.array(anyConst, { minLength: 1, maxLength: 3 }))
    .map(([c, xs]) => [c, ' IN (', ...xs.flatMap((x, i) => (i === 0 ? [x] : [', ', x])), ')']),
  fc.tuple(column, num, num).map(([c, a, b]) => [c, ' BETWEEN ', a, ' AND ', b]),
  fc.tuple(column, pick<Cls>('s').map(h)).map(([c, s]) => [c, '::text ~ ', s]),
  column.map((c) => [c, ' IS NULL']),
);

const where: fc.Arbitrary<Part[]> = fc
  .array(condition, { minLength: 1, maxLength: 3 })
  .chain((cs) =>
    fc.tuple(fc.constant(cs), fc.array(pick(' AND ', ' OR '), { minLength: cs.length, maxLength: cs.length })),
  )
  .map(([cs, ops]) => cs.flatMap((c, i) => (i === 0 ? c : [ops[i] ?? ' AND ', ...c])));

const select: fc.Arbitrary<Part[]> = fc
  .tuple(
    fc.array(expr, { minLength: 1, maxLength: 3 }),
    pick('t', 'orders o', 'pgbench_accounts', 's.t'),
    fc.option(where, { nil: undefined }),
    fc.option(pick<Cls>('i', 'i', 'l', 'n', 's').map(h), { nil: undefined }),
    fc.option(num, { nil: undefined }),
  )
  .map(([exprs, from, w, limit, offset]) => [
    'SELECT ',
    ...exprs.flatMap((e, i) => (i === 0 ? e : [', ', ...e])),
    ` FROM ${from}`,
    ...(w === undefined ? [] : [' WHERE ', ...w]),
    ...(limit === undefined ? [] : [' LIMIT ', limit]),
    ...(offset === undefined ? [] : [' OFFSET ', offset]),
  ]);

const statement: fc.Arbitrary<Part[]> = fc.oneof(
  { arbitrary: select, weight: 4 },
  fc
    .tuple(fc.array(fc.tuple(anyConst, anyConst), { minLength: 1, maxLength: 2 }))
    .map(([rows]) => [
      'INSERT INTO t (a, b) VALUES ',
      ...rows.flatMap(([a, b], i) => [i === 0 ? '(' : ', (', a, ', ', b, ')']),
      ' RETURNING a',
    ]),
  fc.tuple(expr, where).map(([e, w]) => ['UPDATE t SET a = ', ...e, ' WHERE ', ...w]),
  where.map((w) => ['DELETE FROM t WHERE ', ...w]),
  fc.tuple(column, anyConst).map(([c, k]) => ['SELECT ', c, ' FROM t ORDER BY ', k]),
);

const template: fc.Arbitrary<Part[]> = fc
  .array(statement, { minLength: 1, maxLength: 2 })
  .chain((ss) => fc.tuple(fc.constant(ss), pick('', ';')))
  .map(([ss, end]) => [...ss.flatMap((s, i) => (i === 0 ? s : ['; ', ...s])), end]);

/** A template and two fillings of its holes with values of the holes' classes. */
const templatePair = template.chain((parts) => {
  const holes = parts.filter((p): p is { hole: Cls } => typeof p !== 'string');
  const filling = fc.tuple(...holes.map((x) => VALUE[x.hole])) as fc.Arbitrary<string[]>;
  return fc.tuple(fc.constant(parts), filling, filling);
});

function fill(parts: Part[], values: string[]): string {
  let k = 0;
  return parts.map((p) => (typeof p === 'string' ? p : (values[k++] ?? ''))).join('');
}

// Positions in the text: location, stmt_location and stmt_len, plus the list bounds PostgreSQL 18 records for IN and
// ARRAY lists and ordered-set aggregates (they move when a constant's length changes).
const LOCATION_FIELDS = new Set([
  'location',
  'stmt_location',
  'stmt_len',
  'name_location',
  'list_start',
  'list_end',
  'rexpr_list_start',
  'rexpr_list_end',
]);
const CONST_KINDS = ['ival', 'fval', 'sval', 'boolval', 'bsval', 'isnull'];

/** A parse tree without locations, each A_Const reduced to the kind of its value. */
function strip(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(strip);
  if (node === null || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (LOCATION_FIELDS.has(k)) continue;
    if (k === 'A_Const' && v !== null && typeof v === 'object') {
      out[k] = `<${CONST_KINDS.filter((c) => c in v).join('|')}>`;
      continue;
    }
    out[k] = strip(v);
  }
  return out;
}

/** Parse outcome for comparison: the stripped trees, or a failure marker. */
function parsed(sql: string): unknown {
  const r = parseStatements(sql);
  return r.ok ? strip(r.stmts) : 'does not parse';
}

/** Replaces each constant of `sql` with the value of the same position from `values`. */
function substitute(sql: string, shape: LiteralShape, values: string[]): string {
  let out = '';
  let last = 0;
  for (let k = 0; k < shape.spans.length; k += 2) {
    out += sql.slice(last, shape.spans[k]) + (values[k / 2] ?? '');
    last = shape.spans[k + 1] ?? last;
  }
  return out + sql.slice(last);
}

describe('literalShape keys are sound', () => {
  it('a template filled with different constants of the same classes has one key, and one parse tree up to the constants', () => {
    let runs = 0;
    let parsedBoth = 0;
    check(
      fc.property(templatePair, ([parts, v1, v2]) => {
        runs++;
        const t1 = fill(parts, v1);
        const t2 = fill(parts, v2);
        const s1 = literalShape(t1);
        const s2 = literalShape(t2);
        // Defined exactly when the template has a constant, except where a constant is a precision that changes the
        // tree (`current_timestamp(3)`): then no shape for either; otherwise one key, with one span per hole.
        if (v1.length > 0 && /\b(float|current_time|current_timestamp|localtime|localtimestamp)\s*\(/i.test(t1)) {
          expect(s1, JSON.stringify(t1)).toBeUndefined();
          expect(s2, JSON.stringify(t2)).toBeUndefined();
          return;
        }
        expect(s1 !== undefined, JSON.stringify(t1)).toBe(v1.length > 0);
        expect(s2?.key, `${JSON.stringify(t1)} vs ${JSON.stringify(t2)}`).toBe(s1?.key);
        expect(s1?.spans.length ?? 0).toBe(2 * v1.length);
        const p1 = parsed(t1);
        if (p1 !== 'does not parse') parsedBoth++;
        expect(parsed(t2), `${JSON.stringify(t1)} and ${JSON.stringify(t2)} share a key`).toEqual(p1);
      }),
      3000,
    );
    // The generator is only worth something if most of its statements parse (about 80% do).
    expect(parsedBoth).toBeGreaterThan(runs / 2);
  });

  it('any generated text, its constants replaced by other values of their classes: equal keys mean equal parse trees up to the constants', () => {
    const arb = shaped.chain((sql) => {
      const shape = literalShape(sql) as LiteralShape;
      const classes = shapeClasses(sql, shape);
      const cls = (typeof classes === 'string' ? [] : classes) as Cls[];
      return fc.tuple(fc.constant(sql), fc.tuple(...cls.map((c) => VALUE[c])) as fc.Arbitrary<string[]>);
    });
    check(
      fc.property(arb, ([sql, values]) => {
        const shape = literalShape(sql) as LiteralShape;
        const other = substitute(sql, shape, values);
        // Another value can make the text one literalShape gives up on (`a.` + `1.5`): safe, nothing shared.
        if (literalShape(other)?.key !== shape.key) return;
        expect(parsed(other), `${JSON.stringify(sql)} and ${JSON.stringify(other)} share a key`).toEqual(parsed(sql));
      }),
      3000,
    );
  });
});

// ------------------------------------------------------------------ (c) replaceLiterals

function paramsOf(sql: string): number[] | undefined {
  return oracleTokens(sql)
    ?.filter((t) => t.type === PARAM)
    .map((t) => Number(t.text.slice(1)));
}

describe('replaceLiterals', () => {
  it('swaps exactly the spans for $n numbered after maxParam, leaving no constant', () => {
    const arb = fc.oneof(
      shaped,
      templatePair.map(([parts, v]) => fill(parts, v)),
    );
    check(
      fc.property(arb, (sql) => {
        const shape = literalShape(sql);
        if (shape === undefined) return;
        const out = replaceLiterals(sql, shape);
        const count = shape.spans.length / 2;
        // The text outside the spans, unchanged and in order, with $maxParam+1 … in the spans.
        let expected = '';
        let last = 0;
        let removed = 0;
        let added = 0;
        for (let k = 0; k < shape.spans.length; k += 2) {
          const s = shape.spans[k] ?? 0;
          const e = shape.spans[k + 1] ?? 0;
          const p = `$${shape.maxParam + k / 2 + 1}`;
          expected += sql.slice(last, s) + p;
          removed += e - s;
          added += p.length;
          last = e;
        }
        expected += sql.slice(last);
        expect(out).toBe(expected);
        expect(out.length).toBe(sql.length - removed + added);
        expect(out.endsWith(sql.slice(sql.length - shape.tail))).toBe(true);
        // No constant is left for literalShape, and none for the real scanner when the output lexes.
        expect(literalShape(out), JSON.stringify(out)).toBeUndefined();
        // A constant glued to what precedes it becomes part of an identifier (`x.5` → `x$1`), one glued to what follows
        // makes a malformed parameter (`'a'b` → `$1b`): pg_stat_statements prints these the same way.
        const glued = shape.spans.some(
          (p, k) => k % 2 === 0 && p > 0 && /[\p{L}\p{N}_$\u0080-\uffff]/u.test(sql.charAt(p - 1)),
        );
        const tokens = oracleTokens(out);
        if (tokens === undefined || glued) return;
        expect(tokens.filter((t) => CONSTANT_TYPES.has(t.type))).toEqual([]);
        // Parameters: the text's own, plus maxParam+1 … maxParam+count; without gaps before, none after.
        const before = paramsOf(sql) ?? [];
        const after = new Set(paramsOf(out));
        const wanted = new Set([...before, ...Array.from({ length: count }, (_, i) => shape.maxParam + i + 1)]);
        expect(after).toEqual(wanted);
        const gapless = (ps: Set<number>) =>
          [...ps].every((p) => p >= 1 && p <= ps.size) && ps.size === Math.max(0, ...ps);
        if (gapless(new Set(before))) expect(gapless(after), JSON.stringify(out)).toBe(true);
      }),
      3000,
    );
  });
});

// ------------------------------------------------------------------ (d) the corpora

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Entries of a test/fixtures/corpus file as test/security/corpus.test.ts reads them: "-- ---" separates, the family and directive lines are not SQL. */
function corpusFile(file: string): string[] {
  const text = readFileSync(path.join(ROOT, 'test/fixtures/corpus', file), 'utf8');
  const out: string[] = [];
  for (const chunk of text.split(/^-- ---$/m)) {
    const lines = chunk.split('\n');
    if (!lines.some((l) => l.startsWith('-- family:'))) continue;
    const sql = lines
      .filter((l) => !l.startsWith('-- family:') && !/^-- (params|param-types):/.test(l))
      .join('\n')
      .trim();
    if (sql !== '') out.push(sql);
  }
  return out;
}

function benchCorpus(): string[] {
  const json = JSON.parse(readFileSync(path.join(ROOT, 'bench/corpus/corpus.json'), 'utf8')) as {
    statements: Array<{ sql: string }>;
  };
  return json.statements.map((s) => s.sql);
}

// Coverage when written: bench/corpus/corpus.json 186 of 280 statements get a shape (66%), legit.sql 106 of 143 (74%),
// bypass.sql 230 of 543 (42%): 522 of 966 (54%) overall. The rest have a comment, an E''/dollar-quoted/prefixed string,
// a backslash in a string, or no constant at all.
const CORPORA: Array<[string, () => string[]]> = [
  ['bench/corpus/corpus.json', benchCorpus],
  ['test/fixtures/corpus/legit.sql', () => corpusFile('legit.sql')],
  ['test/fixtures/corpus/bypass.sql', () => corpusFile('bypass.sql')],
];

/** Statement kinds whose decisions policy/decision-cache.ts may share under a key (its NORMALIZABLE_KINDS). */
const SHAREABLE_KINDS = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** One value of each class, for rewriting a statement's constants. */
const OTHER_VALUE: Record<string, string> = { i: '7', l: '3000000000', n: '2.5', s: "'o''k'" };

describe('literalShape on the corpora', () => {
  it.each(CORPORA)('%s: every statement with a shape agrees with the real scanner', (_name, load) => {
    const statements = load();
    expect(statements.length).toBeGreaterThan(50);
    const problems: string[] = [];
    let shapes = 0;
    for (const sql of statements) {
      const shape = literalShape(sql);
      if (shape === undefined) continue;
      shapes++;
      const d = disagreement(sql);
      if (d !== undefined) problems.push(`${JSON.stringify(sql)}: ${d}`);
      // The same statement with other constants of the same classes.
      const classes = shapeClasses(sql, shape);
      if (typeof classes === 'string') continue;
      const other = substitute(
        sql,
        shape,
        classes.map((c) => OTHER_VALUE[c] ?? ''),
      );
      const d2 = disagreement(other);
      if (d2 !== undefined) problems.push(`${JSON.stringify(other)}: ${d2}`);
    }
    expect(problems).toEqual([]);
    expect(shapes).toBeGreaterThan(0);
  });

  it.each(CORPORA)(
    '%s: a statement the decision cache may share parses, with other constants of the same classes, to the same tree',
    (_name, load) => {
      const problems: string[] = [];
      for (const sql of load()) {
        const shape = literalShape(sql);
        if (shape === undefined) continue;
        const r = parseStatements(sql);
        if (
          !r.ok ||
          r.stmts.length === 0 ||
          !r.stmts.every((s) => Object.keys(s.stmt ?? {}).every((k) => SHAREABLE_KINDS.has(k)))
        )
          continue;
        const classes = shapeClasses(sql, shape);
        if (typeof classes === 'string') continue;
        const other = substitute(
          sql,
          shape,
          classes.map((c) => OTHER_VALUE[c] ?? ''),
        );
        if (literalShape(other)?.key !== shape.key) continue;
        if (JSON.stringify(parsed(other)) !== JSON.stringify(parsed(sql)))
          problems.push(`${JSON.stringify(sql)} and ${JSON.stringify(other)} share a key but parse differently`);
      }
      expect(problems).toEqual([]);
    },
  );
});
