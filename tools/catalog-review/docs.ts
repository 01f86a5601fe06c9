// Regenerates the tables of docs/functions.md (between `<!-- generated:NAME -->` and `<!-- /generated -->`) from the curated lists and the catalog review.
//
//   node --import tsx tools/catalog-review/docs.ts          rewrites docs/functions.md
//   node --import tsx tools/catalog-review/docs.ts --check  exits 1 if it is out of date
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ALWAYS_DENIED,
  TIMEOUT_BOUNDED,
  INTROSPECTION_FUNCTIONS,
  READABLE_SETTINGS,
  VOLATILE_ALLOWED,
  type FunctionEntry,
} from '../../policy/functions.ts';
import { FILE_LOCATION_SETTINGS, HARMLESS_SETTINGS, NEVER_SETTINGS } from '../../policy/settings.ts';
import {
  DENIED_SYSTEM_RELATIONS,
  INTROSPECTION_EXTRA_FUNCTIONS,
  SYSTEM_DENIED_COLUMN_REASONS,
} from '../../policy/introspection.ts';
import {
  FUNCTION_CLASSES,
  REVIEWED_FUNCTIONS,
  REVIEWED_RELATIONS,
  REVIEWED_VERSIONS,
} from '../../policy/review/review.ts';
import { HAND_REVIEW } from './rules.ts';

export const DOC_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/functions.md');

const esc = (s: string): string => s.replace(/\|/g, '\\|');

function table(rows: readonly (readonly [string, string])[]): string {
  return ['| name | why |', '| --- | --- |', ...rows.map(([n, w]) => `| \`${n}\` | ${esc(w)} |`)].join('\n');
}

const entries = (list: readonly FunctionEntry[]) => list.map((e) => [e.pattern, e.reason] as const);

function reviewCounts(): string {
  const rows: string[] = [];
  rows.push(`| class | ${REVIEWED_VERSIONS.map((v) => `PostgreSQL ${v}`).join(' | ')} |`);
  rows.push(`| --- | ${REVIEWED_VERSIONS.map(() => '---:').join(' | ')} |`);
  for (const cls of FUNCTION_CLASSES) {
    const per = REVIEWED_VERSIONS.map(
      (v) => [...REVIEWED_FUNCTIONS.values()].filter((f) => f.class === cls && f.versions.includes(v)).length,
    );
    rows.push(`| \`${cls}\` | ${per.join(' | ')} |`);
  }
  const totals = REVIEWED_VERSIONS.map(
    (v) => [...REVIEWED_FUNCTIONS.values()].filter((f) => f.versions.includes(v)).length,
  );
  rows.push(`| all function names | ${totals.join(' | ')} |`);
  const rel = REVIEWED_VERSIONS.map(
    (v) => [...REVIEWED_RELATIONS.values()].filter((r) => r.versions.includes(v)).length,
  );
  rows.push(`| relations (tables, views) | ${rel.join(' | ')} |`);
  return rows.join('\n');
}

function keptAllowed(): string {
  return table(
    [...HAND_REVIEW]
      .filter(([, v]) => v.class === 'safe')
      .map(([n, v]) => [n, v.reason.replace(/^reviewed: /, '')] as const),
  );
}

function hiddenColumns(): string {
  const rows: (readonly [string, string])[] = [];
  for (const [rel, cols] of SYSTEM_DENIED_COLUMN_REASONS) for (const [c, why] of cols) rows.push([`${rel}.${c}`, why]);
  return ['| column | why |', '| --- | --- |', ...rows.map(([n, w]) => `| \`${n}\` | ${esc(w)} |`)].join('\n');
}

/** Every generated section of docs/functions.md, by marker name. */
export function renderSections(): Record<string, string> {
  return {
    'review-counts': reviewCounts(),
    'kept-allowed': keptAllowed(),
    'always-denied': table(entries(ALWAYS_DENIED)),
    'timeout-bounded': table(entries(TIMEOUT_BOUNDED)),
    introspection: table(entries(INTROSPECTION_FUNCTIONS)),
    'introspection-extra': `Functions outside \`pg_catalog\` also allowed to introspection roles:\n${INTROSPECTION_EXTRA_FUNCTIONS.map((f) => `\`${f}\``).join(', ')} (used inside \`information_schema\` views and by pgJDBC).`,
    'volatile-allowed': table(entries(VOLATILE_ALLOWED)),
    'readable-settings': table(entries(READABLE_SETTINGS)),
    'file-settings': table([...FILE_LOCATION_SETTINGS]),
    'harmless-settings': table([...HARMLESS_SETTINGS]),
    'never-settings': table([...NEVER_SETTINGS]),
    'denied-relations': table([...DENIED_SYSTEM_RELATIONS]),
    'hidden-columns': hiddenColumns(),
  };
}

const MARKER = /(<!-- generated:([a-z-]+) -->\n)([\s\S]*?)(\n<!-- \/generated -->)/g;

/** The document with every generated section replaced; throws on a marker without a renderer. */
export function applySections(text: string): string {
  const sections = renderSections();
  return text.replace(MARKER, (_all, open: string, name: string, _body: string, close: string) => {
    const body = sections[name];
    if (body === undefined) throw new Error(`docs/functions.md: no generator for section ${name}`);
    return `${open}${body}${close}`;
  });
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const text = readFileSync(DOC_PATH, 'utf8');
  const next = applySections(text);
  if (process.argv.includes('--check')) {
    if (next !== text) {
      process.stderr.write('docs/functions.md is out of date: run node --import tsx tools/catalog-review/docs.ts\n');
      process.exitCode = 1;
    }
  } else if (next !== text) {
    writeFileSync(DOC_PATH, next);
    process.stdout.write('docs/functions.md regenerated\n');
  }
}
