// The test server's pg_catalog and information_schema against the catalog review: nothing unclassified (PGWARDEN_TEST_PG_VERSION=18 checks PostgreSQL 18).
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  compareWithReview,
  readServerCatalog,
  REVIEWED_VERSIONS,
  type ReviewGaps,
  type ServerCatalog,
} from '../../policy/review/review.ts';
import { judgeFunction } from '../../policy/functions.ts';
import { makeRole } from '../fixtures/catalog.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const run = promisify(execFile);

let client: pg.Client;
let catalog: ServerCatalog;
let gaps: ReviewGaps;

beforeAll(async () => {
  client = new pg.Client({ connectionString: inject('pg').superUrl });
  await client.connect();
  catalog = await readServerCatalog((sql) => client.query(sql));
  gaps = compareWithReview(catalog);
});

afterAll(async () => {
  await client?.end().catch(() => {});
});

describe('catalog review against the test server', () => {
  it('the server is a reviewed PostgreSQL version', () => {
    expect(REVIEWED_VERSIONS).toContain(catalog.major);
    expect(catalog.functions.length).toBeGreaterThan(2000);
    expect(catalog.relations.length).toBeGreaterThan(150);
  });

  it('every function is classified', () => {
    expect(gaps.functions.map((f) => `${f.schema}.${f.name}`)).toEqual([]);
  });

  it('every relation is classified', () => {
    expect(gaps.relations.map((r) => `${r.schema}.${r.name}`)).toEqual([]);
  });

  it('every column of an introspection relation is reviewed', () => {
    expect(gaps.columns).toEqual([]);
  });

  it('nothing reviewed for this version is missing (the versions lists are right)', () => {
    expect([...gaps.absentFunctions, ...gaps.absentRelations]).toEqual([]);
  });

  it('a function the server has but the review lacks would be denied as unclassified', () => {
    const f = catalog.functions[0];
    expect(f).toBeDefined();
    if (f === undefined) return;
    // Stand in for a name a newer version adds: same facts, a name the review cannot have.
    const name = `${f.name}_not_reviewed`;
    const v = judgeFunction(
      f.schema,
      name,
      [{ schema: f.schema, name, volatility: 'i', kind: 'f', argTypes: [], returnsSet: false }],
      makeRole({ catalog: 'introspection' }),
    );
    expect(v).toMatchObject({ allow: false, code: 'unclassified', rule: 'default' });
  });

  it('the checker script agrees: exit 0 and "every function … is classified"', async () => {
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', 'tools/catalog-review/review.ts', '--url', inject('pg').superUrl],
      { cwd: ROOT },
    );
    expect(stdout).toContain(`PostgreSQL ${catalog.major}:`);
    expect(stdout).toContain('every function, relation and introspection column is classified');
  }, 60_000);
});
