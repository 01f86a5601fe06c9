// The parser wrapper fails closed: NUL, size cap, nesting pre-screen, and containment of WASM traps.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_PARSER_LIMITS,
  initParser,
  nestingEstimateForTest,
  parseStatements,
  parserStats,
  scanTokens,
  simulateTrapForTest,
  spareSettledForTest,
} from '../../../policy/parser.ts';
import { planServerAnalysis } from '../../../policy/server-plan.ts';

beforeAll(async () => {
  await initParser();
});

describe('parseStatements', () => {
  it('parses every statement of a message', () => {
    const r = parseStatements('SELECT 1; SELECT 2; DELETE FROM t');
    expect(r.ok && r.stmts.map((s) => Object.keys(s.stmt ?? {})[0])).toEqual([
      'SelectStmt',
      'SelectStmt',
      'DeleteStmt',
    ]);
  });

  it('blank and comment-only input is zero statements', () => {
    for (const sql of ['', ' ', '\n\t', ';', '-- x', '/* x */'])
      expect(parseStatements(sql)).toEqual({ ok: true, stmts: [] });
  });

  it('rejects NUL anywhere', () => {
    expect(parseStatements('SELECT 1\0; DELETE FROM t')).toMatchObject({ ok: false, reason: 'invalid_input' });
  });

  it('syntax errors are values, not exceptions', () => {
    expect(parseStatements('SELEC 1')).toMatchObject({ ok: false, reason: 'parse_error' });
    expect(parseStatements("SELECT 'x")).toMatchObject({ ok: false, reason: 'parse_error' });
  });

  it('denies input above the hard size cap', () => {
    const big = `SELECT '${'x'.repeat(DEFAULT_PARSER_LIMITS.maxBytes)}'`;
    expect(parseStatements(big)).toMatchObject({ ok: false, reason: 'statement_too_large' });
    // multi-byte characters count as UTF-8 bytes
    const wide = `SELECT '${'é'.repeat(DEFAULT_PARSER_LIMITS.maxBytes / 2)}'`;
    expect(parseStatements(wide)).toMatchObject({ ok: false, reason: 'statement_too_large' });
  });

  it('denies a text of more than maxStatements statements as too large', () => {
    const n = DEFAULT_PARSER_LIMITS.maxStatements;
    const at = parseStatements('SELECT 1;'.repeat(n));
    expect(at.ok && at.stmts.length).toBe(n);
    const over = parseStatements('SELECT 1;'.repeat(n + 1));
    expect(over.ok ? 'ok' : over.reason).toBe('statement_too_large');
  });

  it('denies the deep left-nested expression that traps the WASM stack, without trapping', () => {
    const before = parserStats().traps;
    for (let i = 0; i < 40; i++) {
      const deep = `SELECT ${Array(9500).fill('1').join('+')}`;
      expect(parseStatements(deep)).toMatchObject({ ok: false, reason: 'statement_too_complex' });
    }
    expect(parserStats().traps).toBe(before);
    expect(parseStatements('SELECT 1')).toMatchObject({ ok: true });
  });

  it.each([
    ['nested subqueries', `SELECT ${'(SELECT '.repeat(2000)}1${')'.repeat(2000)}`],
    ['nested CASE', `SELECT ${'CASE WHEN true THEN '.repeat(2100)}1${' END'.repeat(2100)}`],
    ['long UNION chain', Array(2500).fill('SELECT 1').join(' UNION ')],
    [
      'long JOIN chain',
      `SELECT 1 FROM t0${Array.from({ length: 2500 }, (_, i) => ` JOIN t${i + 1} ON true`).join('')}`,
    ],
    ['nested function calls', `SELECT ${'f('.repeat(4500)}1${')'.repeat(4500)}`],
  ])('pre-screen denies %s', (_label, sql) => {
    expect(parseStatements(sql)).toMatchObject({ ok: false });
  });

  it('the lexical lower bound never exceeds the scanner estimate (random token soup)', () => {
    const pieces = [
      '(',
      ')',
      '[',
      ']',
      ',',
      ';',
      ' ',
      '\n',
      '+',
      '-',
      '*',
      '/',
      '<',
      '>',
      '=',
      '<=',
      '<>',
      '!=',
      '||',
      '+-',
      '-+',
      '@-',
      '~',
      '!',
      '?',
      ':',
      '::',
      ':=',
      '=>',
      '--',
      '/*',
      '*/',
      "'",
      "''",
      "'a'",
      "'(('",
      "'\\'",
      'E',
      "E'x'",
      'U&',
      '"',
      '"a"',
      '"a""b"',
      '"and"',
      '$',
      '$1',
      '$$',
      '$a$',
      '1',
      '1.5',
      '.5',
      '1e5',
      '1e',
      '1e+5',
      '0x1F',
      '1_000',
      '..',
      '.',
      'a',
      'x1',
      'and',
      'AND',
      'or',
      'Or',
      'not',
      'is',
      'case',
      'union',
      'select',
      '\\',
      '{',
      '\t',
      'é',
      '\u00a0',
    ];
    const soup = fc.array(fc.constantFrom(...pieces), { maxLength: 60 }).map((p) => p.join(''));
    let compared = 0;
    fc.assert(
      fc.property(soup, (sql) => {
        const e = nestingEstimateForTest(sql);
        if (e.lower === undefined || e.scanned === undefined) return true;
        compared++;
        return e.lower <= e.scanned;
      }),
      { numRuns: 20_000, seed: 12 },
    );
    expect(compared).toBeGreaterThan(2_000);
  });

  it('the lexical lower bound never exceeds the scanner estimate on the corpora, and denies hostile nesting without scanning', () => {
    const corpus = ['legit.sql', 'bypass.sql'].flatMap((f) =>
      readFileSync(new URL(`../../fixtures/corpus/${f}`, import.meta.url), 'utf8').split(/^-- ---$/m),
    );
    let compared = 0;
    for (const sql of corpus) {
      const e = nestingEstimateForTest(sql);
      if (e.lower === undefined || e.scanned === undefined) continue;
      compared++;
      expect(e.lower, sql).toBeLessThanOrEqual(e.scanned);
    }
    expect(compared).toBeGreaterThan(300);
    for (const sql of [
      `SELECT ${'('.repeat(5000)}1${')'.repeat(5000)}`,
      `SELECT 1${'+1'.repeat(5000)}`,
      `SELECT $1::int${' - 1'.repeat(5000)}`,
    ]) {
      const e = nestingEstimateForTest(sql);
      expect(e.lower).toBeGreaterThan(DEFAULT_PARSER_LIMITS.maxNestingEstimate);
      expect(e.lower).toBeLessThanOrEqual(e.scanned ?? Infinity);
      const r = parseStatements(sql);
      expect(r.ok ? 'ok' : r.reason).toBe('statement_too_complex');
    }
  });

  it('large but flat statements pass the pre-screen', () => {
    expect(parseStatements(`SELECT 1 WHERE a IN (${Array(20000).fill('1').join(',')})`).ok).toBe(true);
    expect(parseStatements(`SELECT ${Array(3000).fill('a + b').join(', ')}`).ok).toBe(true);
    expect(parseStatements(`SELECT 1 WHERE ${Array(3000).fill('a = 1').join(' OR ')}`).ok).toBe(true);
  });

  it('the cheap bound never undercuts the scanner estimate', () => {
    for (const sql of [
      'SELECT 1 WHERE a IN (1,2)',
      `SELECT ${Array(3000).fill('a+b').join(', ')}`,
      'SELECT (a::int + b) * -c FROM t UNION SELECT 1',
      "SELECT '((((' || x FROM t JOIN u ON NOT a IS NULL",
    ]) {
      const e = nestingEstimateForTest(sql);
      expect(e.scanned).toBeDefined();
      expect(e.cheap).toBeGreaterThanOrEqual(e.scanned ?? Infinity);
    }
  });

  it('a trap retires the instance: the spare takes over and a new spare loads', async () => {
    const before = parserStats();
    simulateTrapForTest();
    const after = parserStats();
    expect(after.traps).toBe(before.traps + 1);
    expect(after.ready).toBe(true);
    await spareSettledForTest();
    expect(parseStatements('SELECT 1 FROM t').ok).toBe(true);
  });
});

describe('scanTokens with raw control characters', () => {
  // scanSync copies such characters raw into its JSON, which then did not parse: COPY (query) TO could not be planned.
  it('lexes them inside strings, quoted identifiers and comments, with byte offsets and texts of the original', () => {
    const sql = `SELECT 'a\u0001é\u001f', "x\u0002y" /* \u000b */ -- \u0007\nFROM t`;
    const toks = scanTokens(sql);
    expect(toks?.map((t) => t.text)).toEqual([
      'SELECT',
      "'a\u0001é\u001f'",
      ',',
      '"x\u0002y"',
      '/* \u000b */',
      '-- \u0007',
      'FROM',
      't',
    ]);
    const buf = Buffer.from(sql, 'utf8');
    for (const t of toks ?? []) expect(buf.subarray(t.start, t.end).toString('utf8')).toBe(t.text);
  });

  it("COPY (query) TO's query is cut from the client's text unchanged", () => {
    const inner = "SELECT unnest(ARRAY['\u0001', '\u001f\u0008', E'\\\u0003'])";
    const plan = planServerAnalysis(`COPY (${inner}) TO STDOUT`, []);
    expect(plan).toMatchObject({ ok: true, texts: [{ text: inner, kind: 'CopyStmt' }] });
  });
});
