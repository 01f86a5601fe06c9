// The decide worker pool: a worker's decision is the main thread's, and every failure (timeout, crash, full queue) refuses the statement.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { initParser } from '../../../policy/parser.ts';
import { evaluateWithFacts } from '../../../policy/evaluate.ts';
import { DecidePool } from '../../../proxy/session/decide-pool.ts';
import { CATALOG, ROLES, makeCatalog, sessionFor } from '../../fixtures/catalog.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The SQL of every entry of a corpus file (test/security/corpus.test.ts's format). */
function corpus(file: string): string[] {
  const text = readFileSync(path.join(ROOT, 'test/fixtures/corpus', file), 'utf8');
  const out: string[] = [];
  for (const chunk of text.split(/^-- ---$/m)) {
    const lines = chunk.split('\n');
    if (!lines.some((l) => l.startsWith('-- family:'))) continue;
    const sql = lines
      .filter((l) => !l.startsWith('--'))
      .join('\n')
      .trim();
    if (sql !== '') out.push(sql);
  }
  return out;
}

/** Long texts of the shapes issue 12 measured, ~64 KiB each. */
function hostile(): string[] {
  const n = 32 * 1024;
  return [
    `SELECT ${'('.repeat(n / 2)}1${')'.repeat(n / 2)}`,
    `SELECT 1${'+1'.repeat(n / 2)}`,
    `SELECT 1${',1'.repeat(n / 2)}`,
    `SELECT '${'x'.repeat(n)}'`,
    Array.from({ length: 3000 }, (_, i) => `SELECT id FROM orders WHERE id = ${i};`).join(''),
    Array.from({ length: 2000 }, (_, i) => `DELETE FROM orders WHERE id = ${i};`).join(''),
  ];
}

const pools: DecidePool[] = [];
function pool(opts: ConstructorParameters<typeof DecidePool>[0] = {}): DecidePool {
  const p = new DecidePool(opts);
  pools.push(p);
  return p;
}

beforeAll(async () => {
  await initParser();
});

afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.close()));
});

describe('DecidePool', () => {
  it("gives the main thread's decision for every corpus statement, role and mode", async () => {
    const p = pool({ size: 2, maxQueue: 10_000, queueTimeoutMs: 600_000, timeoutMs: 60_000 });
    const statements = [...corpus('legit.sql'), ...corpus('bypass.sql'), ...hostile()];
    expect(statements.length).toBeGreaterThan(500);
    const roles = [ROLES.analyst, ROLES.capped, ROLES.writer, ROLES.shadow];
    const jobs: Promise<void>[] = [];
    let compared = 0;
    for (const role of roles) {
      for (const [i, sql] of statements.entries()) {
        const mode = i % 3 === 0 ? 'parse' : 'simple';
        const view = sessionFor(role, ['p1'], ['c1']);
        const local = evaluateWithFacts(sql, mode, view, CATALOG, 7);
        jobs.push(
          p.decide({ sql, mode, view, catalog: CATALOG, policyVersion: 7 }).then((a) => {
            expect(a.ok ? 'ok' : a.decision.reason, sql.slice(0, 80)).toBe('ok');
            if (a.ok) expect(a.facts, `${role.name} ${mode}: ${sql.slice(0, 80)}`).toEqual(local);
            compared++;
          }),
        );
      }
    }
    await Promise.all(jobs);
    expect(compared).toBe(roles.length * statements.length);
    // The pool never exceeded its size.
    expect(p.snapshot().workers).toBeLessThanOrEqual(2);
  }, 120_000);

  it('sends each catalog snapshot to a worker once, and a new snapshot when the store has one', async () => {
    const p = pool({ size: 1 });
    const other = makeCatalog({ withSystem: false });
    const view = sessionFor(ROLES.analyst);
    const sql = 'SELECT name FROM pg_catalog.pg_class';
    const a = await p.decide({ sql, mode: 'simple', view, catalog: CATALOG, policyVersion: 1 });
    const b = await p.decide({ sql, mode: 'simple', view, catalog: other, policyVersion: 1 });
    expect(a.ok && b.ok).toBe(true);
    if (a.ok && b.ok) {
      expect(a.facts).toEqual(evaluateWithFacts(sql, 'simple', view, CATALOG, 1));
      expect(b.facts).toEqual(evaluateWithFacts(sql, 'simple', view, other, 1));
    }
  });

  it('refuses with 54000 a statement that takes longer than the timeout, and replaces the worker', async () => {
    const p = pool({ size: 1, timeoutMs: 1_000 });
    const view = sessionFor(ROLES.analyst);
    // Warm: the worker is started and ready before the timed job.
    expect((await p.decide({ sql: 'SELECT 1', mode: 'simple', view, catalog: CATALOG, policyVersion: 1 })).ok).toBe(
      true,
    );
    // Seconds of scanning: far beyond the second allowed (the E'' string makes the parser's quick lexer give up, so the
    // real scanner reads the whole text).
    const slow = `SELECT E'x', ${'('.repeat(512 * 1024 - 16)}1${')'.repeat(512 * 1024 - 16)}`;
    const a = await p.decide({ sql: slow, mode: 'simple', view, catalog: CATALOG, policyVersion: 1 });
    expect(a.ok).toBe(false);
    if (!a.ok) {
      expect(a.decision.sqlstate).toBe('54000');
      expect(a.decision.reason).toBe('decide_timeout');
    }
    expect(p.stats.timedOut).toBe(1);
    // A new worker answers the next statement.
    const b = await p.decide({
      sql: 'SELECT id FROM orders',
      mode: 'simple',
      view,
      catalog: CATALOG,
      policyVersion: 1,
    });
    expect(b.ok && b.facts.decision.allow).toBe(true);
    expect(p.stats.workersStarted).toBe(2);
  });

  it('refuses with 54000 the statement of a worker that dies, and replaces it', async () => {
    const p = pool({ size: 1 });
    const view = sessionFor(ROLES.analyst);
    expect((await p.decide({ sql: 'SELECT 1', mode: 'simple', view, catalog: CATALOG, policyVersion: 1 })).ok).toBe(
      true,
    );
    const big = Array.from({ length: 20_000 }, (_, i) => `SELECT id FROM orders WHERE id = ${i};`).join('');
    const pending = p.decide({ sql: big, mode: 'simple', view, catalog: CATALOG, policyVersion: 1 });
    await new Promise((r) => setTimeout(r, 20));
    await p.crashBusyWorkersForTest();
    const a = await pending;
    expect(a.ok).toBe(false);
    if (!a.ok) {
      expect(a.decision.sqlstate).toBe('54000');
      expect(a.decision.reason).toBe('decide_worker_failed');
      expect(a.decision.allow).toBe(false);
    }
    const b = await p.decide({
      sql: 'SELECT id FROM orders',
      mode: 'simple',
      view,
      catalog: CATALOG,
      policyVersion: 1,
    });
    expect(b.ok && b.facts.decision.allow).toBe(true);
  });

  it("refuses with 54000 a statement whose decision exceeds the worker's heap limit", async () => {
    const p = pool({ size: 1, maxHeapMb: 64 });
    const view = sessionFor(ROLES.analyst);
    const huge = `SELECT 1${',1'.repeat(500_000)}`;
    const a = await p.decide({ sql: huge, mode: 'simple', view, catalog: CATALOG, policyVersion: 1 });
    expect(a.ok).toBe(false);
    if (!a.ok) expect([a.decision.sqlstate, a.decision.reason]).toEqual(['54000', 'decide_worker_failed']);
  }, 60_000);

  it('refuses with 53000 at once when the queue is full, and decides what it accepted', async () => {
    const p = pool({ size: 1, maxQueue: 1 });
    const view = sessionFor(ROLES.analyst);
    const sql = (i: number) => `SELECT id FROM orders WHERE id = ${i}`;
    // A ready worker first, so the first statement runs at once.
    expect((await p.decide({ sql: sql(0), mode: 'simple', view, catalog: CATALOG, policyVersion: 1 })).ok).toBe(true);
    const answers = await Promise.all(
      [1, 2, 3].map((i) => p.decide({ sql: sql(i), mode: 'simple', view, catalog: CATALOG, policyVersion: 1 })),
    );
    // The first runs, the second takes the queue's one place, the third is refused.
    const refused = answers.filter((a) => !a.ok);
    expect(refused).toHaveLength(1);
    expect(answers[2]?.ok).toBe(false);
    for (const a of refused)
      if (!a.ok) expect([a.decision.sqlstate, a.decision.reason]).toEqual(['53000', 'decide_pool_busy']);
    for (const a of answers.filter((x) => x.ok)) if (a.ok) expect(a.facts.decision.allow).toBe(true);
    expect(p.stats.refusedBusy).toBe(1);
  });

  it('refuses with 53000 what waited longer than queueTimeoutMs', async () => {
    const p = pool({ size: 1, maxQueue: 4, queueTimeoutMs: 1 });
    const view = sessionFor(ROLES.analyst);
    // Nothing is ready yet: the job waits for the worker to start, longer than 1 ms.
    const a = await p.decide({ sql: 'SELECT 1', mode: 'simple', view, catalog: CATALOG, policyVersion: 1 });
    expect(a.ok).toBe(false);
    if (!a.ok) expect(a.decision.sqlstate).toBe('53000');
  });

  it('replaces a worker that decided a text of recycleAfterTextBytes or more once its job is done', async () => {
    const view = sessionFor(ROLES.analyst);
    const long = `SELECT 1${',1'.repeat(128 * 1024)}`;
    const kept = pool({ size: 1, recycleAfterTextBytes: long.length + 1 });
    expect((await kept.decide({ sql: long, mode: 'simple', view, catalog: CATALOG, policyVersion: 1 })).ok).toBe(true);
    expect(kept.snapshot().workers).toBe(1);
    const recycled = pool({ size: 1, recycleAfterTextBytes: long.length });
    const a = await recycled.decide({ sql: long, mode: 'simple', view, catalog: CATALOG, policyVersion: 1 });
    expect(a.ok && a.facts).toEqual({ ...evaluateWithFacts(long, 'simple', view, CATALOG, 1) });
    expect(recycled.snapshot().workers).toBe(0);
    expect(
      (await recycled.decide({ sql: 'SELECT 1', mode: 'simple', view, catalog: CATALOG, policyVersion: 1 })).ok,
    ).toBe(true);
    expect(recycled.stats.workersStarted).toBe(2);
    // A long text is enough, even one refused before it reaches the WASM parser (measured: less memory stays behind).
    const nested = `SELECT ${'('.repeat(long.length)}1${')'.repeat(long.length)}`;
    const n = await recycled.decide({ sql: nested, mode: 'simple', view, catalog: CATALOG, policyVersion: 1 });
    expect(n.ok && !n.facts.decision.allow && n.facts.decision.reason).toBe('statement_too_complex');
    expect(recycled.snapshot().workers).toBe(0);
  });

  it('ends idle workers, and refuses everything once closed', async () => {
    const p = pool({ size: 1, idleMs: 50 });
    const view = sessionFor(ROLES.analyst);
    expect((await p.decide({ sql: 'SELECT 1', mode: 'simple', view, catalog: CATALOG, policyVersion: 1 })).ok).toBe(
      true,
    );
    expect(p.snapshot().workers).toBe(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(p.snapshot().workers).toBe(0);
    await p.close();
    const a = await p.decide({ sql: 'SELECT 1', mode: 'simple', view, catalog: CATALOG, policyVersion: 1 });
    expect(a.ok).toBe(false);
  });
});
