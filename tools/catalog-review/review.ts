// Checks a server's pg_catalog and information_schema against the reviewed classification: prints what is unclassified, exits 1 if anything is.
//
//   node --import tsx tools/catalog-review/review.ts --url postgres://user:pw@host:5432/db [--suggest] [--json]
//   node --import tsx tools/catalog-review/review.ts --catalog saved.json          (a catalog saved with --save-catalog)
//
// --suggest prints, for each unclassified function, the class the mechanical rules (rules.ts) would give it,
// as a functions.json entry to review and paste. Exit status: 0 nothing unclassified, 1 something is, 2 usage or connection error.
import { readFileSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import {
  compareWithReview,
  readServerCatalog,
  reviewComplete,
  type ServerCatalog,
} from '../../policy/review/review.ts';
import { suggestFunction, suggestRelation } from './rules.ts';

interface Args {
  url: string | undefined;
  catalog: string | undefined;
  saveCatalog: string | undefined;
  suggest: boolean;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { url: undefined, catalog: undefined, saveCatalog: undefined, suggest: false, json: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === '--url') a.url = value();
    else if (arg === '--catalog') a.catalog = value();
    else if (arg === '--save-catalog') a.saveCatalog = value();
    else if (arg === '--suggest') a.suggest = true;
    else if (arg === '--json') a.json = true;
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(
        'usage: review.ts (--url <libpq url> | --catalog <file>) [--save-catalog <file>] [--suggest] [--json]\n',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${arg}`);
  }
  if ((a.url === undefined) === (a.catalog === undefined)) throw new Error('give exactly one of --url and --catalog');
  return a;
}

async function loadCatalog(a: Args): Promise<ServerCatalog> {
  if (a.catalog !== undefined) return JSON.parse(readFileSync(a.catalog, 'utf8')) as ServerCatalog;
  const client = new pg.Client({ connectionString: a.url });
  await client.connect();
  try {
    return await readServerCatalog((sql) => client.query(sql));
  } finally {
    await client.end().catch(() => {});
  }
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`review.ts: ${(err as Error).message}\n`);
    return 2;
  }
  let catalog: ServerCatalog;
  try {
    catalog = await loadCatalog(args);
  } catch (err) {
    process.stderr.write(`review.ts: cannot read the catalog: ${(err as Error).message}\n`);
    return 2;
  }
  if (args.saveCatalog !== undefined) writeFileSync(args.saveCatalog, `${JSON.stringify(catalog, null, 1)}\n`);
  const gaps = compareWithReview(catalog);
  const ok = reviewComplete(gaps);
  if (args.json) {
    process.stdout.write(
      `${JSON.stringify(
        {
          major: gaps.major,
          functions: gaps.functions.map((f) => ({
            key: `${f.schema}.${f.name}`,
            ...(args.suggest ? { suggestion: suggestFunction(f) } : {}),
          })),
          relations: gaps.relations.map((r) => ({
            key: `${r.schema}.${r.name}`,
            ...(args.suggest ? { suggestion: suggestRelation(r) } : {}),
          })),
          columns: gaps.columns,
          absentFunctions: gaps.absentFunctions,
          absentRelations: gaps.absentRelations,
        },
        null,
        2,
      )}\n`,
    );
    return ok ? 0 : 1;
  }
  const out: string[] = [];
  out.push(
    `PostgreSQL ${gaps.major}: ${catalog.functions.length} function names, ${catalog.relations.length} relations in pg_catalog and information_schema`,
  );
  if (ok) out.push('every function, relation and introspection column is classified in policy/review/');
  for (const f of gaps.functions) {
    out.push(
      `unclassified function ${f.schema}.${f.name}(${f.args.join(' | ')}) volatility=${f.volatility.join('')}${f.revoked ? ' execute-revoked' : ''}${f.description ? ` -- ${f.description}` : ''}`,
    );
    if (args.suggest) {
      const s = suggestFunction(f);
      const entry: Record<string, unknown> = { class: s.class, versions: [gaps.major] };
      if (s.reason !== undefined) entry.reason = s.reason;
      out.push(`  suggestion (${s.rule}): ${JSON.stringify(`${f.schema}.${f.name}`)}: ${JSON.stringify(entry)}`);
    }
  }
  for (const r of gaps.relations) {
    out.push(`unclassified relation ${r.schema}.${r.name} (${r.kind}): ${r.columns.join(', ')}`);
    if (args.suggest) {
      const s = suggestRelation(r);
      out.push(
        `  suggestion: ${JSON.stringify(`${r.schema}.${r.name}`)}: ${JSON.stringify({ class: s.class, versions: [gaps.major], ...(s.reason ? { reason: s.reason } : {}) })}`,
      );
    }
  }
  for (const c of gaps.columns)
    out.push(
      `unclassified column ${c} (of an introspection relation: review it, then add it to the relation's columns, and to SYSTEM_DENIED_COLUMNS if it must stay hidden)`,
    );
  if (gaps.absentFunctions.length > 0 || gaps.absentRelations.length > 0) {
    out.push(
      `reviewed for ${gaps.major} but absent here: ${[...gaps.absentFunctions, ...gaps.absentRelations].join(', ')}`,
    );
  }
  if (!ok) {
    out.push(
      `${gaps.functions.length} functions, ${gaps.relations.length} relations and ${gaps.columns.length} columns are unclassified: pgwarden denies the functions as "unclassified" until they are reviewed (docs/functions.md, "The catalog review")`,
    );
  }
  process.stdout.write(`${out.join('\n')}\n`);
  return ok ? 0 : 1;
}

process.exitCode = await main();
