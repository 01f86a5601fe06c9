// The node-text reader: real trees from PostgreSQL 15 and 18, malformed input, format_node_dump's line wrapping (property test), and the incremental reader and walk giving exactly the same results.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  IncrementalTreeRead,
  IncrementalWalk,
  MAX_TOKEN_BYTES,
  NodeReadError,
  bitmapField,
  isNode,
  numberField,
  readNodeTree,
  walkNodes,
  type PgNode,
  type PgValue,
  type ReadLimits,
} from '../../../policy/pgnode.ts';
import {
  KNOWN_NODES,
  collectReferences,
  incrementalReferenceWalk,
  type OidCatalog,
} from '../../../policy/server-analysis.ts';

interface Fixture {
  sql: string;
  tree: string;
}

const fixtures = (v: string): Fixture[] =>
  JSON.parse(readFileSync(new URL(`../../fixtures/trees/${v}.json`, import.meta.url), 'utf8')) as Fixture[];
const latin1 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

/** print.c's format_node_dump, the oracle: lines of at most 78 bytes, a break replacing one space where it can, else cutting the token. */
function wrap(dump: string): string {
  const LINELEN = 78;
  const lines: string[] = [];
  let i = 0;
  for (;;) {
    let j = 0;
    let line = '';
    for (; j < LINELEN && i < dump.length; i++, j++) line += dump[i];
    if (i >= dump.length) {
      if (j > 0) lines.push(line);
      break;
    }
    if (dump[i] === ' ') i++;
    else {
      let k = j - 1;
      for (; k > 0; k--) if (line[k] === ' ') break;
      if (k > 0) {
        i -= j - k - 1;
        line = line.slice(0, k);
      }
    }
    lines.push(line);
  }
  return lines.map((l) => `${l}\n`).join('');
}

/** outfuncs.c's outToken. */
function outToken(s: string): string {
  if (s === '') return '<>';
  let out = '';
  if (
    s[0] === '<' ||
    s[0] === '"' ||
    /[0-9]/.test(s[0] as string) ||
    ((s[0] === '+' || s[0] === '-') && (/[0-9]/.test(s[1] ?? '') || s[1] === '.'))
  )
    out += '\\';
  for (const ch of s) {
    if (ch === ' ' || ch === '\n' || ch === '\t' || ch === '(' || ch === ')' || ch === '{' || ch === '}' || ch === '\\')
      out += '\\';
    out += ch;
  }
  return out;
}

/** A random tree written as nodeToString would write it. */
// `?` alone is outNode's mark for an unprintable node, which the reader refuses by design.
const identifier = fc
  .string({ unit: fc.constantFrom(...'ab1 (){}\\"<>:-+.?[]\n\t\'é'.split('')), minLength: 1, maxLength: 40 })
  .filter((s) => s !== '?');
const value: fc.Memo<string> = fc.memo((n) =>
  n <= 1
    ? fc.oneof(
        fc.integer({ min: -1, max: 4_000_000_000 }).map(String),
        fc.constantFrom('true', 'false', '<>', 'r', 'v'),
        identifier.map(outToken),
        identifier.map((s) => `"${outToken(s)}"`),
        fc.array(fc.integer({ min: 0, max: 200 }), { maxLength: 6 }).map((a) => `(b${a.map((x) => ` ${x}`).join('')})`),
        fc
          .array(fc.integer({ min: -128, max: 127 }), { minLength: 1, maxLength: 8 })
          .map((a) => `${a.length} [ ${a.join(' ')} ]`),
      )
    : fc.oneof(
        { arbitrary: node(n - 1), weight: 2 },
        { arbitrary: fc.array(node(n - 1), { minLength: 1, maxLength: 3 }).map((a) => `(${a.join(' ')})`), weight: 1 },
        { arbitrary: value(1), weight: 3 },
      ),
);
function node(n: number): fc.Arbitrary<string> {
  return fc
    .tuple(
      fc.constantFrom('QUERY', 'FUNCEXPR', 'VAR', 'CONST', 'ALIAS', 'RANGETBLENTRY'),
      fc.uniqueArray(fc.constantFrom('a', 'funcid', 'args', 'relid', 'colnames', 'aliasname', 'x_y', 'location'), {
        maxLength: 6,
      }),
    )
    .chain(([name, fields]) =>
      fc
        .tuple(...fields.map(() => value(n)))
        .map((vals) => `{${name}${fields.map((f, i) => ` :${f} ${vals[i]}`).join('')}}`),
    );
}

function tokensTooLong(dump: string): boolean {
  // Token lengths as the reader counts them (escapes included); whitespace and (){} separate.
  let run = 0;
  for (let i = 0; i < dump.length; i++) {
    const c = dump[i] as string;
    if (c === '\\') {
      run += 2;
      i++;
    } else if (' \n\t(){}'.includes(c)) run = 0;
    else run++;
    if (run > MAX_TOKEN_BYTES) return true;
  }
  return false;
}

describe('readNodeTree on real server output', () => {
  for (const v of ['pg15', 'pg18']) {
    it(`reads every ${v} fixture, and every node in them is one the server analysis knows`, () => {
      for (const f of fixtures(v)) {
        if (/^EXPLAIN/.test(f.sql) && v === 'pg15') {
          // PostgreSQL 15 prints EXPLAIN's statement as `?`: the reader must refuse, not read a partial tree.
          expect(() => readNodeTree(latin1(f.tree))).toThrow(NodeReadError);
          continue;
        }
        const t = readNodeTree(latin1(f.tree));
        expect(isNode(t) && t.type, f.sql).toBe('QUERY');
        walkNodes(t, (n) => expect(KNOWN_NODES.has(n.type), `${v} ${n.type} in ${f.sql}`).toBe(true));
      }
    });
  }

  it('reads the permission columns of the ORDINALITY trick: customers columns 1 and 4', () => {
    const f = fixtures('pg15').find((x) => x.sql === 'SELECT * FROM customers AS c(i,n,e,ordinality)');
    expect(f).toBeDefined();
    const rte: PgNode[] = [];
    walkNodes(readNodeTree(latin1((f as Fixture).tree)), (n) => {
      if (n.type === 'RANGETBLENTRY' && numberField(n, 'rtekind') === 0) rte.push(n);
    });
    expect(rte).toHaveLength(1);
    expect(bitmapField(rte[0] as PgNode, 'selectedCols')).toEqual([8, 9, 10, 11, 12]);
  });
});

const MALFORMED: [string, string][] = [
  ['empty', ''],
  ['unclosed node', '{QUERY :a 1'],
  ['unclosed list', '{QUERY :a (1 2}'],
  ['field without value', '{QUERY :a}'],
  ['field name where a field was expected after a value', '{QUERY :a :b 1}'],
  ['lower-case node name', '{query :a 1}'],
  ['repeated field', '{QUERY :a 1 :a 2}'],
  ['trailing garbage', '{QUERY :a 1} x'],
  ['unterminated string', '{QUERY :a ("x)}'],
  ['unprintable node', '{QUERY :utilityStmt ?}'],
  ['datum byte out of range', '{CONST :constvalue 1 [ 300 ]}'],
  ['unterminated datum', '{CONST :constvalue 1 [ 3 }'],
  ['datum at the end of the text', '{CONST :constvalue 1 [ 3'],
  ['datum byte glued to a parenthesis', '{CONST :constvalue 1 [ 3) ]}'],
  ['datum byte glued to a bracket', '{CONST :constvalue 1 [ 3] }'],
  ['datum byte that is a word', '{CONST :constvalue 1 [ 3x ]}'],
  ['datum byte that is an escape', '{CONST :constvalue 1 [ \\3 ]}'],
  ['datum byte that is a bare sign', '{CONST :constvalue 1 [ - ]}'],
  ['datum byte below -128', '{CONST :constvalue 1 [ -129 ]}'],
  ['datum byte with too many digits', `{CONST :constvalue 1 [ ${'0'.repeat(MAX_TOKEN_BYTES + 1)} ]}`],
  ['escape at end', '{QUERY :a x\\'],
  ['number out of range in a number list', '{QUERY :a (b 99999999999999999999)}'],
  ['a token long enough to have been split', `{ALIAS :aliasname ${'x'.repeat(MAX_TOKEN_BYTES + 1)}}`],
];

describe('readNodeTree refuses what it cannot be sure of', () => {
  it.each(MALFORMED)('%s', (_name, text) => {
    expect(() => readNodeTree(text)).toThrow(NodeReadError);
  });

  it('reads a datum of a million bytes, each as written', () => {
    const bytes = Array.from({ length: 1 << 20 }, (_, i) => (i % 256) - 128);
    const t = readNodeTree(`{CONST :constvalue ${bytes.length} [ ${bytes.join(' ')} ]}`) as PgNode;
    const d = t.fields.get('constvalue') as { length: number; bytes: Uint8Array };
    expect(d.length).toBe(bytes.length);
    expect(Buffer.from(d.bytes).equals(Buffer.from(bytes.map((b) => b & 0xff)))).toBe(true);
    expect(readNodeTree('{CONST :constvalue 0 [ ]}')).toEqual({
      type: 'CONST',
      fields: new Map([['constvalue', { length: 0, bytes: new Uint8Array(0) }]]),
    });
  });

  it('limits depth', () => {
    const deep = `${'{A :x '.repeat(50)}1${'}'.repeat(50)}`;
    expect(() => readNodeTree(deep, { maxDepth: 40 })).toThrow(/nested too deeply/);
    expect(isNode(readNodeTree(deep, { maxDepth: 60 }))).toBe(true);
  });

  it('reads escaped characters into the identifier and keeps structure', () => {
    const t = readNodeTree('{ALIAS :aliasname a\\ b\\(\\) :colnames ("x\\ y" "\\1")}') as PgNode;
    expect(t.fields.get('aliasname')).toEqual({ word: 'a b()' });
    expect(t.fields.get('colnames')).toEqual([{ string: 'x y' }, { string: '1' }]);
  });
});

describe('format_node_dump wrapping (property)', () => {
  it('a wrapped tree reads exactly as the unwrapped one, or is refused when a token may have been split', () => {
    fc.assert(
      fc.property(node(3), (dump) => {
        const plain = readNodeTree(dump);
        const wrapped = wrap(dump);
        if (tokensTooLong(dump)) {
          // Refused either way: never read differently.
          expect(() => readNodeTree(wrapped)).toThrow(NodeReadError);
          return;
        }
        expect(readNodeTree(wrapped)).toEqual(plain);
      }),
      { numRuns: 3000 },
    );
  });

  it('escaped spaces broken across lines stay inside their token', () => {
    // An identifier of spaces only, placed so that line breaks fall on its escaped spaces.
    let brokenInside = 0;
    for (let pad = 1; pad < 60; pad++) {
      const dump = `{QUERY :pad ${'x'.repeat(pad)} :aliasname ${outToken(' '.repeat(30))} :b 1}`;
      const wrapped = wrap(dump);
      if (wrapped.includes('\\\n')) brokenInside++;
      expect(readNodeTree(wrapped)).toEqual(readNodeTree(dump));
    }
    expect(brokenInside).toBeGreaterThan(0);
  });
});

type Outcome = { tree: PgValue } | { error: string };

function atOnce(text: string, limits?: Partial<ReadLimits>): Outcome {
  try {
    return { tree: readNodeTree(text, limits) };
  } catch (err) {
    if (!(err instanceof NodeReadError)) throw err;
    return { error: err.message };
  }
}

/** The incremental reader stopped after every `every` steps (until = 0 has always passed): the outcome and the slices it took. */
function inSlices(text: string, every: number, limits?: Partial<ReadLimits>): Outcome & { slices: number } {
  const read = new IncrementalTreeRead(text, limits, { stepsPerClockCheck: every });
  let slices = 1;
  try {
    while (!read.run(0)) slices++;
    return { tree: read.value, slices };
  } catch (err) {
    if (!(err instanceof NodeReadError)) throw err;
    return { error: err.message, slices };
  }
}

const noCatalog: OidCatalog = { relations: new Map(), functions: new Map(), operators: new Map(), types: new Map() };

/** A tree the shape of a long IN list's: `n` integer constants in one list. */
const constList = (n: number): string =>
  `{QUERY :commandType 1 :args (${'{CONST :consttype 23 :constlen 4 :constvalue 4 [ 1 0 0 0 ] :location 30} '.repeat(n)}) :location 0}`;

describe('IncrementalTreeRead: readNodeTree in slices, with the same result', () => {
  for (const v of ['pg15', 'pg18']) {
    it(`reads every ${v} fixture as readNodeTree does, stopped every 1, 7 or 512 steps; the reference walk in slices collects the same`, () => {
      for (const f of fixtures(v)) {
        const text = latin1(f.tree);
        const want = atOnce(text);
        for (const every of [1, 7, 512]) {
          const got = inSlices(text, every);
          const { slices, ...outcome } = got;
          expect(outcome, `${f.sql} every ${every}`).toEqual(want);
          if (every === 1 && 'tree' in want) expect(slices).toBeGreaterThan(10);
        }
        if (!('tree' in want)) continue;
        // Two reads of the text, so neither shares the other's cached walk.
        const sliced = inSlices(text, 3) as { tree: PgValue };
        const walk = incrementalReferenceWalk(sliced.tree, { stepsPerClockCheck: 3 });
        let walkSlices = 1;
        while (!walk.run(0)) walkSlices++;
        expect(walkSlices, f.sql).toBeGreaterThan(1);
        expect(collectReferences([sliced.tree], noCatalog), f.sql).toEqual(collectReferences([want.tree], noCatalog));
      }
    });
  }

  it.each(MALFORMED)('refuses as readNodeTree does: %s', (_name, text) => {
    const want = atOnce(text);
    expect('error' in want).toBe(true);
    for (const every of [1, 2, 512]) {
      const { slices: _s, ...outcome } = inSlices(text, every);
      expect(outcome).toEqual(want);
    }
  });

  it('fails closed at the same point of every truncated real tree', () => {
    const texts = [...fixtures('pg15'), ...fixtures('pg18')].map((f) => latin1(f.tree));
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: texts.length - 1 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.integer({ min: 1, max: 40 }),
        (i, frac, every) => {
          const full = texts[i] as string;
          const text = full.slice(0, Math.floor(full.length * frac));
          const { slices: _s, ...outcome } = inSlices(text, every);
          expect(outcome).toEqual(atOnce(text));
        },
      ),
      { numRuns: 500 },
    );
  });

  it('reads generated trees, wrapped or not, as readNodeTree does (property)', () => {
    fc.assert(
      fc.property(node(3), fc.boolean(), fc.integer({ min: 1, max: 20 }), (dump, wrapped, every) => {
        const text = wrapped ? wrap(dump) : dump;
        const { slices: _s, ...outcome } = inSlices(text, every);
        expect(outcome).toEqual(atOnce(text));
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps the token and depth limits, failing with the same error', () => {
    const big = constList(2000);
    for (const limits of [{ maxTokens: 5000 }, { maxTokens: 100_000 }, { maxDepth: 2 }, { maxDepth: 3 }]) {
      const { slices: _s, ...outcome } = inSlices(big, 64, limits);
      expect(outcome, JSON.stringify(limits)).toEqual(atOnce(big, limits));
    }
    expect(atOnce(big, { maxTokens: 5000 })).toEqual({ error: 'node tree has too many tokens' });
    expect(atOnce(big, { maxDepth: 2 })).toEqual({ error: 'node tree is nested too deeply' });
    const deep = `${'{A :x '.repeat(3000)}1${'}'.repeat(3000)}`;
    expect(inSlices(deep, 100)).toMatchObject({ error: 'node tree is nested too deeply' });
  });

  it('reads a datum of a million bytes in slices, each byte as written', () => {
    const bytes = Array.from({ length: 1 << 20 }, (_, i) => (i % 256) - 128);
    const text = `{CONST :constvalue ${bytes.length} [ ${bytes.join(' ')} ]}`;
    const got = inSlices(text, 16);
    expect(got.slices).toBeGreaterThan(100);
    const want = atOnce(text);
    const datum = (o: Outcome) =>
      'tree' in o && isNode(o.tree)
        ? (o.tree.fields.get('constvalue') as { length: number; bytes: Uint8Array })
        : undefined;
    expect(datum(got)?.length).toBe(bytes.length);
    expect(Buffer.from(datum(got)?.bytes ?? []).equals(Buffer.from(datum(want)?.bytes ?? [0]))).toBe(true);
  });

  it('stops within a slice of a long IN-list tree and resumes; two reads in progress at once do not disturb each other', () => {
    const a = constList(20_000);
    const b = constList(15_000).replace(':location 0}', ':location 1}');
    const ra = new IncrementalTreeRead(a);
    const rb = new IncrementalTreeRead(b);
    let slices = 0;
    let doneA = false;
    let doneB = false;
    while (!(doneA && doneB)) {
      if (!doneA) doneA = ra.run(0);
      if (!doneB) doneB = rb.run(0);
      slices++;
    }
    // 20,000 constants are ~300,000 steps: hundreds of slices of 512 steps each.
    expect(slices).toBeGreaterThan(100);
    expect(ra.value).toEqual(readNodeTree(a));
    expect(rb.value).toEqual(readNodeTree(b));
    expect(() => new IncrementalTreeRead(a).value).toThrow(NodeReadError);
  });
});

describe('IncrementalWalk: walkNodes in slices', () => {
  it('visits the same nodes in the same order', () => {
    for (const f of [...fixtures('pg15'), ...fixtures('pg18')]) {
      const t = atOnce(latin1(f.tree));
      if (!('tree' in t)) continue;
      const want: PgNode[] = [];
      walkNodes(t.tree, (n) => want.push(n));
      const got: PgNode[] = [];
      const walk = new IncrementalWalk(t.tree, (n) => got.push(n), { stepsPerClockCheck: 2 });
      while (!walk.run(0));
      expect(got.length, f.sql).toBe(want.length);
      expect(
        got.every((n, i) => n === want[i]),
        f.sql,
      ).toBe(true);
    }
  });
});
