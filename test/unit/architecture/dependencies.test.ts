// The dependency rules, read from the imports themselves: lib/ is a leaf, policy/ never reaches into proxy/, wire/ sees only bytes, and no two folders import each other.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** The folders whose files are pgwarden itself; test/, bench/ and tools/ may import anything. */
const SOURCE_ROOTS = ['lib', 'proxy', 'policy'];
const SOURCE_FILE = /\.(?:ts|mts|mjs|js)$/;

type Token = { kind: 'word' | 'string' | 'template' | 'punct'; text: string };

/**
 * Tokens of a TypeScript/JavaScript file, enough to find its imports: words, single- and double-quoted strings
 * (their value), template literals (opaque, so an import written inside one is not one), punctuation; comments
 * dropped. Regular-expression literals are not recognised; a quote inside one could only hide an import that
 * follows it on the same statement, which no rule here depends on.
 */
function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i] as string;
    if (/\s/.test(c)) {
      i++;
    } else if (src.startsWith('//', i)) {
      const end = src.indexOf('\n', i);
      i = end === -1 ? src.length : end;
    } else if (src.startsWith('/*', i)) {
      const end = src.indexOf('*/', i + 2);
      i = end === -1 ? src.length : end + 2;
    } else if (c === "'" || c === '"') {
      let j = i + 1;
      let value = '';
      while (j < src.length && src[j] !== c && src[j] !== '\n') {
        if (src[j] === '\\') j++;
        value += src[j] ?? '';
        j++;
      }
      out.push({ kind: 'string', text: value });
      i = j + 1;
    } else if (c === '`') {
      // Skip to the closing backtick, stepping over ${ … } (which may hold nested templates and braces).
      let j = i + 1;
      let depth = 0;
      while (j < src.length) {
        const d = src[j];
        if (d === '\\') j += 2;
        else if (depth === 0 && d === '`') break;
        else if (d === '$' && src[j + 1] === '{') {
          depth++;
          j += 2;
        } else if (depth > 0 && d === '}') {
          depth--;
          j++;
        } else j++;
      }
      out.push({ kind: 'template', text: src.slice(i, j + 1) });
      i = j + 1;
    } else if (/[A-Za-z_$]/.test(c)) {
      let j = i + 1;
      while (j < src.length && /[A-Za-z0-9_$]/.test(src[j] as string)) j++;
      out.push({ kind: 'word', text: src.slice(i, j) });
      i = j;
    } else {
      out.push({ kind: 'punct', text: c });
      i++;
    }
  }
  return out;
}

/** Words that may appear between `import`/`export` and `from` in an import or re-export clause. */
const CLAUSE_PUNCT = new Set(['{', '}', ',', '*']);
/** Words after `export` that start a declaration, not a re-export. */
const DECLARATIONS = new Set([
  'const',
  'let',
  'var',
  'function',
  'class',
  'interface',
  'enum',
  'default',
  'async',
  'abstract',
  'declare',
  'namespace',
  'module',
]);

/** Every module specifier a file imports: static imports and re-exports (type-only too), side-effect imports, and dynamic `import('…')` with a literal. */
function importsOf(src: string): string[] {
  const t = tokenize(src);
  const specs: string[] = [];
  for (let i = 0; i < t.length; i++) {
    const tok = t[i];
    if (tok?.kind !== 'word' || (tok.text !== 'import' && tok.text !== 'export')) continue;
    if (t[i - 1]?.text === '.') continue; // obj.import, not a keyword
    const next = t[i + 1];
    if (tok.text === 'import' && next?.text === '.') continue; // import.meta
    if (tok.text === 'import' && next?.kind === 'string') {
      specs.push(next.text); // import 'x'
      continue;
    }
    if (tok.text === 'import' && next?.text === '(') {
      if (t[i + 2]?.kind === 'string') specs.push((t[i + 2] as Token).text); // import('x'), typeof import('x')
      continue;
    }
    // import … from 'x' / export … from 'x': only clause tokens may come before `from`.
    for (let j = i + 1; j < t.length; j++) {
      const u = t[j] as Token;
      if (u.kind === 'word' && u.text === 'from' && t[j + 1]?.kind === 'string') {
        specs.push((t[j + 1] as Token).text);
        break;
      }
      if (u.kind === 'word' && j === i + 1 && tok.text === 'export' && DECLARATIONS.has(u.text)) break;
      if (u.kind === 'word' || (u.kind === 'punct' && CLAUSE_PUNCT.has(u.text))) continue;
      break;
    }
  }
  return specs;
}

/** An import from one repository file to another (paths relative to the repository, with forward slashes). */
interface Edge {
  from: string;
  to: string;
}

function folderOf(file: string): string {
  return path.posix.dirname(file);
}

function under(file: string, folder: string): boolean {
  return file === folder || file.startsWith(`${folder}/`);
}

/** Packages and built-ins that open sockets, log or count: policy/ decides, it never does I/O of that kind. */
const NOT_IN_POLICY = [
  'node:net',
  'node:tls',
  'node:dgram',
  'node:http',
  'node:https',
  'net',
  'tls',
  'pino',
  'prom-client',
  'pg',
  'pg-protocol',
  'postgres',
];

/**
 * Every broken rule, one line each. Edges are between repository files; `packages` lists the bare specifiers
 * (packages, built-ins) each file imports.
 */
function dependencyViolations(
  edges: readonly Edge[],
  packages: ReadonlyMap<string, readonly string[]> = new Map(),
): string[] {
  const out: string[] = [];
  for (const { from, to } of edges) {
    if (under(from, 'lib') && !under(to, 'lib'))
      out.push(`${from} -> ${to}: lib/ is the leaf; it imports nothing from proxy/ or policy/`);
    if (under(from, 'policy') && under(to, 'proxy')) out.push(`${from} -> ${to}: policy/ imports nothing from proxy/`);
    if (under(from, 'proxy/wire') && !under(to, 'proxy/wire') && !under(to, 'lib'))
      out.push(`${from} -> ${to}: proxy/wire/ imports only proxy/wire/ and lib/`);
    // createProxy is the public entry point: commands start it, nothing inside borrows helpers from it.
    if (to === 'proxy/index.ts' && under(from, 'proxy') && !under(from, 'proxy/cli'))
      out.push(`${from} -> ${to}: only proxy/cli/ imports proxy/index.ts`);
  }
  for (const [file, specs] of packages) {
    if (!under(file, 'policy')) continue;
    for (const s of specs)
      if (NOT_IN_POLICY.includes(s)) out.push(`${file} -> ${s}: policy/ never touches a socket, logger or metric`);
  }
  out.push(...folderCycles(edges));
  return out;
}

/** Import cycles between folders (a folder's own files and its subfolders' count as different folders), as Tarjan's strongly connected components. */
function folderCycles(edges: readonly Edge[]): string[] {
  const graph = new Map<string, Map<string, Edge>>();
  for (const e of edges) {
    const a = folderOf(e.from);
    const b = folderOf(e.to);
    if (!graph.has(a)) graph.set(a, new Map());
    if (!graph.has(b)) graph.set(b, new Map());
    if (a !== b && !graph.get(a)?.has(b)) graph.get(a)?.set(b, e);
  }
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string | undefined;
      do {
        w = stack.pop() as string;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1) {
        const members = new Set(component);
        const examples = component
          .sort()
          .flatMap((a) =>
            [...(graph.get(a)?.entries() ?? [])].filter(([b]) => members.has(b)).map(([, e]) => `${e.from} -> ${e.to}`),
          );
        out.push(`folders import each other: ${component.join(', ')} (${examples.join('; ')})`);
      }
    }
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return out;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...sourceFiles(rel));
    else if (SOURCE_FILE.test(e.name) && !e.name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

/** The tree's imports: edges between its files, bare specifiers per file, and relative specifiers that resolve to no file. */
function readTree(): { edges: Edge[]; packages: Map<string, string[]>; unresolved: string[]; files: number } {
  const edges: Edge[] = [];
  const packages = new Map<string, string[]>();
  const unresolved: string[] = [];
  const files = SOURCE_ROOTS.flatMap(sourceFiles);
  for (const file of files) {
    for (const spec of importsOf(readFileSync(path.join(ROOT, file), 'utf8'))) {
      if (!spec.startsWith('.')) {
        packages.set(file, [...(packages.get(file) ?? []), spec]);
        continue;
      }
      const to = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec));
      if (existsSync(path.join(ROOT, to))) edges.push({ from: file, to });
      else unresolved.push(`${file} -> ${spec}`);
    }
  }
  return { edges, packages, unresolved, files: files.length };
}

describe('the import reader', () => {
  it('finds static, type-only, re-exported, side-effect and dynamic imports, over several lines', () => {
    const src = [
      "import fs from 'node:fs';",
      "import { a,\n  type B,\n  c as d } from './one.ts';",
      "import type { E } from '../two.ts';",
      'import * as ns from "./three.ts";',
      "import './side-effect.ts';",
      "export { f } from './four.ts';",
      "export type { G } from './five.ts';",
      "export * from './six.ts';",
      "export * as seven from './seven.ts';",
      "const lazy = await import('./eight.ts');",
      "let t: typeof import('./nine.ts');",
      "import json from './ten.json' with { type: 'json' };",
    ].join('\n');
    expect(importsOf(src)).toEqual([
      'node:fs',
      './one.ts',
      '../two.ts',
      './three.ts',
      './side-effect.ts',
      './four.ts',
      './five.ts',
      './six.ts',
      './seven.ts',
      './eight.ts',
      './nine.ts',
      './ten.json',
    ]);
  });

  it('ignores imports in comments and strings, import.meta, declarations and a dynamic import of a computed name', () => {
    const src = [
      "// import x from './commented.ts';",
      "/* import y from './block.ts'; */",
      'const s = "import z from \'./in-a-string.ts\'";',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: source text under test, not a template
      "const tpl = `import w from './in-a-template.ts' ${`nested ${1}`}`;",
      "const u = new URL('./worker.mjs', import.meta.url);",
      "export const from = 'not-an-import';",
      'export function f() { return 1; }',
      "export default { from: './nope.ts' };",
      // biome-ignore lint/suspicious/noTemplateCurlyInString: source text under test, not a template
      'const m = await import(`${base}/x.ts`);',
      "import real from './real.ts';",
    ].join('\n');
    expect(importsOf(src)).toEqual(['./real.ts']);
  });
});

describe('the rules', () => {
  it('flags each kind of break', () => {
    const edges: Edge[] = [
      { from: 'lib/a.ts', to: 'proxy/b.ts' },
      { from: 'policy/evaluate.ts', to: 'proxy/sqlstate.ts' },
      { from: 'proxy/wire/reader.ts', to: 'proxy/errors.ts' },
      { from: 'proxy/explain.ts', to: 'proxy/index.ts' },
      { from: 'proxy/config/load.ts', to: 'proxy/auth/keys.ts' },
      { from: 'proxy/auth/keys.ts', to: 'proxy/config/types.ts' },
    ];
    const packages = new Map([['policy/store.ts', ['pino', 'lru-cache']]]);
    const v = dependencyViolations(edges, packages);
    expect(v.filter((l) => l.includes('lib/ is the leaf'))).toHaveLength(1);
    expect(v.filter((l) => l.includes('policy/ imports nothing from proxy/'))).toHaveLength(1);
    expect(v.filter((l) => l.includes('proxy/wire/ imports only'))).toHaveLength(1);
    expect(v.filter((l) => l.includes('only proxy/cli/ imports proxy/index.ts'))).toHaveLength(1);
    expect(v.filter((l) => l.includes('never touches a socket'))).toEqual([
      'policy/store.ts -> pino: policy/ never touches a socket, logger or metric',
    ]);
    expect(v.filter((l) => l.startsWith('folders import each other'))).toEqual([
      'folders import each other: proxy/auth, proxy/config (proxy/auth/keys.ts -> proxy/config/types.ts; proxy/config/load.ts -> proxy/auth/keys.ts)',
    ]);
    expect(v).toHaveLength(6);
  });

  it('finds a cycle through three folders and none in a chain', () => {
    const cycle = folderCycles([
      { from: 'a/x.ts', to: 'b/y.ts' },
      { from: 'b/y.ts', to: 'c/z.ts' },
      { from: 'c/z.ts', to: 'a/w.ts' },
    ]);
    expect(cycle).toEqual([
      'folders import each other: a, b, c (a/x.ts -> b/y.ts; b/y.ts -> c/z.ts; c/z.ts -> a/w.ts)',
    ]);
    expect(
      folderCycles([
        { from: 'proxy/cli/main.ts', to: 'proxy/index.ts' },
        { from: 'proxy/index.ts', to: 'proxy/session/session.ts' },
        { from: 'proxy/session/session.ts', to: 'lib/errors.ts' },
      ]),
    ).toEqual([]);
  });
});

describe('the tree', () => {
  const tree = readTree();

  it('is read whole: every relative import resolves to a file, and the known edges are there', () => {
    expect(tree.unresolved).toEqual([]);
    expect(tree.files).toBeGreaterThan(50);
    const has = (from: string, to: string) => tree.edges.some((e) => e.from === from && e.to === to);
    expect(has('proxy/index.ts', 'proxy/session/session.ts')).toBe(true);
    expect(has('proxy/cli/main.ts', 'proxy/cli/explain.ts')).toBe(true); // a dynamic import
    expect(has('policy/worker/decide-worker.ts', 'policy/evaluate.ts')).toBe(true);
  });

  it('keeps every rule', () => {
    expect(dependencyViolations(tree.edges, tree.packages)).toEqual([]);
  });
});
