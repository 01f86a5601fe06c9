// An unknown relation in a schema the role may create in: the gate reads the catalog again and answers 42P01 only when that read, started after the statement arrived, does not have it either.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { PolicyStore } from '../../../policy/store.ts';
import type { CatalogSnapshot, SessionView } from '../../../policy/types.ts';
import { createPolicyGate } from '../../../proxy/session/policy-gate.ts';
import { CATALOG } from '../../fixtures/catalog.ts';

const POLICY = `roles:
  maker:
    readOnly: false
    relations: [scratch.*]
    write: { statements: [insert], relations: [scratch.*] }
    ddl: { kinds: [create_table], schemas: [scratch] }
    searchPath: [scratch]
`;

/** The catalog, with scratch.appeared from the `appearsAt`-th read on; a read fails while `failing` is set. */
const upstream = { reads: 0, appearsAt: Number.POSITIVE_INFINITY, failing: false };
function loadCatalog(): Promise<CatalogSnapshot> {
  upstream.reads++;
  if (upstream.failing) return Promise.reject(new Error('upstream down'));
  if (upstream.reads < upstream.appearsAt) return Promise.resolve(CATALOG);
  const relations = new Map(CATALOG.relations);
  relations.set('scratch.appeared', {
    schema: 'scratch',
    name: 'appeared',
    kind: 'r',
    columns: [{ name: 'a', type: 'integer' }],
  });
  return Promise.resolve({ ...CATALOG, relations });
}

let dir: string;
let store: PolicyStore;
beforeAll(async () => {
  await initParser();
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-absent-'));
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  store = await PolicyStore.open({ file, watch: false, loadCatalog });
});
afterAll(() => {
  store?.close();
  rmSync(dir, { recursive: true, force: true });
});

function view(): SessionView {
  const role = store.current.policy.roles.get('maker');
  if (role === undefined) throw new Error('no maker role');
  return { role, preparedNames: new Set(), cursorNames: new Set(), tempObjects: false };
}

describe('an unknown relation in a ddl schema', () => {
  const gate = () => createPolicyGate(store, { followCatalog: { minIntervalMs: 0, waitMs: 2_000 } });

  it('is 42P01 with its position once a catalog read after the statement does not have it', async () => {
    const g = gate();
    const before = upstream.reads;
    const d = await g.decide('SELECT a FROM nosuch', 'simple', view());
    expect(upstream.reads).toBe(before + 1);
    expect(d).toMatchObject({
      allow: false,
      sqlstate: '42P01',
      reason: 'undefined_relation',
      message: 'relation "nosuch" does not exist',
      position: 15,
      hint: undefined,
    });
    expect(!d.allow && d.confirmAbsent).toBeUndefined();
    await g.close();
  });

  it('is decided against the new catalog when the read finds it (made outside pgwarden meanwhile)', async () => {
    const g = gate();
    upstream.appearsAt = upstream.reads + 1;
    const d = await g.decide('SELECT a FROM appeared', 'simple', view());
    expect(d.allow).toBe(true);
    upstream.appearsAt = Number.POSITIVE_INFINITY;
    await g.close();
  });

  it("stays the 42501 refusal while the session's open transaction holds DDL, which no catalog read sees", async () => {
    const g = gate();
    const v = { ...view(), backendPid: 4242 };
    try {
      for (const sql of ['BEGIN', 'CREATE TABLE scratch.in_block (a int)'])
        expect((await g.decide(sql, 'simple', v)).allow, sql).toBe(true);
      const before = upstream.reads;
      const d = await g.decide('SELECT a FROM in_block', 'simple', v);
      expect(d).toMatchObject({ allow: false, sqlstate: '42501', reason: 'unknown_relation' });
      expect(upstream.reads).toBe(before);
      expect((await g.decide('COMMIT', 'simple', v)).allow).toBe(true);
      // Once the block has ended, a read after it can tell.
      expect(await g.decide('SELECT a FROM in_block', 'simple', v)).toMatchObject({ allow: false, sqlstate: '42P01' });
    } finally {
      await g.close();
    }
  });

  it('stays the 42501 refusal when the catalog cannot be read again', async () => {
    const g = gate();
    upstream.failing = true;
    try {
      const d = await g.decide('SELECT a FROM nosuch_either', 'simple', view());
      expect(d).toMatchObject({ allow: false, sqlstate: '42501', reason: 'unknown_relation' });
    } finally {
      upstream.failing = false;
      await g.close();
    }
  });
});
