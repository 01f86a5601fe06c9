// The policy gate decides long statements on the decide pool (same decision, cached for a synchronous repeat) and short ones in place; a busy pool refuses with 53000.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluate } from '../../../policy/evaluate.ts';
import { PolicyStore } from '../../../policy/store.ts';
import type { Decision, SessionView } from '../../../policy/types.ts';
import { createPolicyGate, type PolicyGate } from '../../../proxy/session/policy-gate.ts';
import { CATALOG } from '../../fixtures/catalog.ts';

const POLICY = `roles:
  analyst:
    readOnly: true
    relations: [public.orders, public.customers]
    deniedColumns: { public.customers: [ssn] }
`;

let dir: string;
let store: PolicyStore;
const gates: PolicyGate[] = [];

beforeAll(async () => {
  await initParser();
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-gate-'));
  const file = path.join(dir, 'policy.yaml');
  writeFileSync(file, POLICY);
  store = await PolicyStore.open({ file, watch: false, loadCatalog: async () => CATALOG });
});
afterEach(async () => {
  await Promise.all(gates.splice(0).map((g) => g.close()));
});
afterAll(() => {
  store?.close();
  rmSync(dir, { recursive: true, force: true });
});

function gate(opts: Parameters<typeof createPolicyGate>[1] = {}): PolicyGate {
  const g = createPolicyGate(store, opts);
  gates.push(g);
  return g;
}

function view(): SessionView {
  const role = store.current.policy.roles.get('analyst');
  if (role === undefined) throw new Error('no analyst role');
  return { role, preparedNames: new Set(), cursorNames: new Set() };
}

const pad = (sql: string) => `${sql} /* ${'x'.repeat(8 * 1024)} */`;

describe('createPolicyGate with the decide pool', () => {
  it("decides a long statement on a worker (a Promise), with evaluate()'s decision, and answers a cached repeat at once", async () => {
    const g = gate();
    for (const sql of [pad('SELECT id FROM orders'), pad('SELECT ssn FROM customers'), pad('DELETE FROM orders')]) {
      const first = g.decide(sql, 'simple', view());
      expect(first).toBeInstanceOf(Promise);
      const d = await first;
      expect(d).toEqual(evaluate(sql, 'simple', view(), store.current.catalog, store.current.policy.version));
      // Allowed decisions are cached; these denials are not (evaluate marks them session-dependent), so they are decided again.
      const again = g.decide(sql, 'simple', view());
      expect(again instanceof Promise).toBe(!d.allow);
      expect(await again).toEqual(d);
    }
    expect(g.pool?.stats.decided).toBe(5);
  });

  it('decides short statements in place, and long ones too when offloading is off', () => {
    const g = gate({ offloadAboveBytes: Infinity });
    expect(gate().decide('SELECT id FROM orders', 'simple', view())).not.toBeInstanceOf(Promise);
    const d = g.decide(pad('SELECT ssn FROM customers'), 'parse', view()) as Decision;
    expect(d).not.toBeInstanceOf(Promise);
    expect(d.allow).toBe(false);
    expect(g.pool).toBeUndefined();
  });

  it('refuses a long statement with 53000 when the pool is full, and does not cache the refusal', async () => {
    const g = gate({ pool: { size: 1, maxQueue: 1, timeoutMs: 60_000 } });
    // Takes the queue's one place while the worker starts, then the worker for seconds (the E'' string makes the
    // parser scan the whole text).
    const slow = g.decide(`SELECT E'x', ${'('.repeat(256 * 1024)}1${')'.repeat(256 * 1024)}`, 'simple', view());
    const sql = pad('SELECT id FROM orders');
    const busy = await g.decide(sql, 'simple', view());
    expect(busy.allow ? 'allowed' : [busy.sqlstate, busy.reason]).toEqual(['53000', 'decide_pool_busy']);
    expect((await slow).allow).toBe(false);
    // Not cached: once the pool is free, the statement is decided.
    const d = await g.decide(sql, 'simple', view());
    expect(d.allow).toBe(true);
  }, 60_000);
});
