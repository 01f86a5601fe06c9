// Builds policy/review/functions.json and relations.json from saved server catalogs with the rules of rules.ts: how the first review was made.
//
//   node --import tsx tools/catalog-review/review.ts --url <pg15 url> --save-catalog /tmp/pg15.json
//   node --import tsx tools/catalog-review/review.ts --url <pg18 url> --save-catalog /tmp/pg18.json
//   node --import tsx tools/catalog-review/bootstrap.ts /tmp/pg15.json /tmp/pg18.json
//
// It rewrites both files from scratch. After the first review the JSON files are the source of truth:
// classify new names by hand (review.ts --suggest helps) rather than re-running this, unless the
// rules and HAND_REVIEW in rules.ts are updated to match every hand edit.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FunctionClass, RelationClass, ServerCatalog, ServerFunction } from '../../policy/review/review.ts';
import { suggestFunction, suggestRelation } from './rules.ts';

const REVIEW_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../policy/review');

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write('usage: bootstrap.ts <saved catalog>...\n');
  process.exit(2);
}
const catalogs = files
  .map((f) => JSON.parse(readFileSync(f, 'utf8')) as ServerCatalog)
  .sort((a, b) => a.major - b.major);
const versions = catalogs.map((c) => c.major);

// Facts are merged over the versions first (a name whose overloads changed between versions is judged on all of them).
const merged = new Map<string, ServerFunction & { versions: number[] }>();
const relations = new Map<string, { class: RelationClass; versions: number[]; reason?: string; columns?: string[] }>();
const union = (a: string[], b: string[]): string[] => [...new Set([...a, ...b])];
for (const cat of catalogs) {
  for (const f of cat.functions) {
    const key = `${f.schema}.${f.name}`;
    const prev = merged.get(key);
    if (prev === undefined) {
      merged.set(key, { ...f, versions: [cat.major] });
      continue;
    }
    prev.versions.push(cat.major);
    prev.volatility = union(prev.volatility, f.volatility);
    prev.kinds = union(prev.kinds, f.kinds);
    prev.returns = union(prev.returns, f.returns);
    prev.args = union(prev.args, f.args);
    prev.retset ||= f.retset;
    prev.revoked ||= f.revoked;
  }
  for (const r of cat.relations) {
    const key = `${r.schema}.${r.name}`;
    const s = suggestRelation(r);
    const prev = relations.get(key);
    if (prev !== undefined) {
      prev.versions.push(cat.major);
      if (prev.columns !== undefined) for (const c of r.columns) if (!prev.columns.includes(c)) prev.columns.push(c);
      continue;
    }
    relations.set(key, {
      class: s.class,
      versions: [cat.major],
      ...(s.reason !== undefined ? { reason: s.reason } : {}),
      ...(s.class === 'introspection' ? { columns: [...r.columns] } : {}),
    });
  }
}
const functions = new Map<string, { class: FunctionClass; versions: number[]; reason?: string }>();
for (const [key, f] of merged) {
  const s = suggestFunction(f);
  functions.set(key, { class: s.class, versions: f.versions, ...(s.reason !== undefined ? { reason: s.reason } : {}) });
}

function write(name: string, entries: Map<string, unknown>): void {
  const sorted = Object.fromEntries([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  // One entry per line: diffs of a review stay readable.
  const body = Object.entries(sorted)
    .map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`)
    .join(',\n');
  writeFileSync(
    path.join(REVIEW_DIR, name),
    `{\n"versions": ${JSON.stringify(versions)},\n"entries": {\n${body}\n}\n}\n`,
  );
}
write('functions.json', functions);
write('relations.json', relations);

const counts: Record<string, Record<number, number>> = {};
for (const v of functions.values())
  for (const m of v.versions) (counts[v.class] ??= {})[m] = (counts[v.class]?.[m] ?? 0) + 1;
process.stdout.write(
  `${functions.size} functions, ${relations.size} relations; per class and version: ${JSON.stringify(counts)}\n`,
);
