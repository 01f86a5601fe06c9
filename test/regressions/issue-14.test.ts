// Issue 14: a relation in a schema whose name holds a dot ("my.schema".orders) reaches the catalog, so a role allowed on it reads it through pgwarden.
import type pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { connectAs, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';

// proxy/index.ts used to hand the catalog loader `${schema}.${name}` strings, which it splits at the first dot:
// "my.schema".orders became schema "my", relation "schema.orders", so the allowed relation was never loaded and
// every read of it was refused. policy/load.ts's policyRelations passes the parsed parts instead.
const POLICY = `roles:
  dotted:
    readOnly: true
    relations: ['"my.schema".orders']
`;

let tp: TestProxy | undefined;
let su: pg.Client;
const clients: pg.Client[] = [];

beforeAll(async () => {
  su = await superClient();
  await su.query(`DROP SCHEMA IF EXISTS "my.schema" CASCADE;
    CREATE SCHEMA "my.schema";
    CREATE TABLE "my.schema".orders (id int PRIMARY KEY, total int NOT NULL);
    INSERT INTO "my.schema".orders VALUES (1, 10), (2, 20);
    CREATE TABLE "my.schema".secrets (id int);
    GRANT USAGE ON SCHEMA "my.schema" TO "${SAMPLE_UPSTREAM_USER}";
    GRANT SELECT ON "my.schema".orders, "my.schema".secrets TO "${SAMPLE_UPSTREAM_USER}";`);
  tp = await startTestProxy({ policy: POLICY });
});

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  await tp?.close();
  await su.query('DROP SCHEMA IF EXISTS "my.schema" CASCADE');
  await su.end();
});

it('loads "my.schema".orders into the catalog: the role reads it, and still not the schema\'s other tables', async () => {
  if (!tp) throw new Error('proxy did not start');
  const c = await connectAs(tp, 'dotted');
  clients.push(c);
  const r = await c.query('SELECT id, total FROM "my.schema".orders ORDER BY id');
  expect(r.rows).toEqual([
    { id: 1, total: 10 },
    { id: 2, total: 20 },
  ]);
  // Only the relation the policy names: its neighbour in the same schema stays refused.
  expect((await pgError(() => c.query('SELECT id FROM "my.schema".secrets'))).code).toBe('42501');
});
