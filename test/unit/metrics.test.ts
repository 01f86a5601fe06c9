// Metrics on the per-statement path: HotHistogram's exposition matches Prometheus histogram semantics, and deferred counts reach a scrape.
import { describe, expect, it } from 'vitest';
import client from 'prom-client';
import { HotHistogram, createMetrics } from '../../proxy/metrics.ts';
import type { Session } from '../../proxy/session/session.ts';
import type { Decision } from '../../policy/types.ts';

function lines(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(name));
}

describe('HotHistogram', () => {
  it('counts cumulatively with le inclusive, then +Inf, _sum and _count, per labelled series', async () => {
    const registry = new client.Registry();
    const h = new HotHistogram(registry, 'x_seconds', 'help text', [0.1, 1, 10]);
    const a = h.series({ outcome: 'ok' });
    const b = h.series({ outcome: 'error' });
    for (const v of [0.05, 0.1, 0.5, 1, 20]) a.observe(v);
    b.observe(3);
    expect(h.series({ outcome: 'ok' })).toBe(a);
    const text = await registry.metrics();
    expect(text).toContain('# HELP x_seconds help text');
    expect(text).toContain('# TYPE x_seconds histogram');
    expect(lines(text, 'x_seconds')).toEqual([
      'x_seconds_bucket{outcome="ok",le="0.1"} 2',
      'x_seconds_bucket{outcome="ok",le="1"} 4',
      'x_seconds_bucket{outcome="ok",le="10"} 4',
      'x_seconds_bucket{outcome="ok",le="+Inf"} 5',
      'x_seconds_sum{outcome="ok"} 21.65',
      'x_seconds_count{outcome="ok"} 5',
      'x_seconds_bucket{outcome="error",le="0.1"} 0',
      'x_seconds_bucket{outcome="error",le="1"} 0',
      'x_seconds_bucket{outcome="error",le="10"} 1',
      'x_seconds_bucket{outcome="error",le="+Inf"} 1',
      'x_seconds_sum{outcome="error"} 3',
      'x_seconds_count{outcome="error"} 1',
    ]);
    registry.resetMetrics();
    expect(lines(await registry.metrics(), 'x_seconds_count')).toEqual([
      'x_seconds_count{outcome="ok"} 0',
      'x_seconds_count{outcome="error"} 0',
    ]);
  });

  it('gives the same exposition as a prom-client Histogram for the same observations', async () => {
    const buckets = [1e-6, 5e-6, 1e-5, 1e-3];
    const values = [0, 1e-6, 2e-6, 7e-6, 1e-5, 5e-4, 0.2];
    const r1 = new client.Registry();
    const hot = new HotHistogram(r1, 'd_seconds', 'h', buckets).series({});
    const r2 = new client.Registry();
    const ref = new client.Histogram({ name: 'd_seconds', help: 'h', buckets, registers: [r2] });
    for (const v of values) {
      hot.observe(v);
      ref.observe(v);
    }
    expect(lines(await r1.metrics(), 'd_seconds')).toEqual(lines(await r2.metrics(), 'd_seconds'));
  });
});

describe('per-statement metrics', () => {
  it('statement counts, rows and durations recorded between scrapes all show at the next scrape, once', async () => {
    const m = createMetrics({ collectDefault: false });
    const s = { role: { name: 'analyst' } } as unknown as Session;
    const d = {
      allow: true,
      ruleId: 'r',
      statements: [{ kind: 'SelectStmt', relations: [], columns: [], functions: [] }],
    } as unknown as Decision;
    for (let i = 0; i < 3; i++)
      m.events.statementDecided?.(s, { seq: i, mode: 'simple', sql: 'SELECT 1', decision: d, micros: 2 });
    m.events.statementFinished?.(s, {
      seq: 1,
      rows: 5,
      durationMs: 2,
      sqlstate: undefined,
      truncated: false,
      rowCapError: false,
    });
    m.events.statementFinished?.(s, {
      seq: 2,
      rows: 2,
      durationMs: 2,
      sqlstate: '57014',
      truncated: false,
      rowCapError: false,
    });
    let text = await m.registry.metrics();
    expect(text).toMatch(
      /^pgwarden_statements_total\{role="analyst",decision="allow",kind="SelectStmt",reason=""\} 3$/m,
    );
    expect(text).toMatch(/^pgwarden_rows_forwarded_total 7$/m);
    expect(text).toMatch(/^pgwarden_policy_decision_seconds_count 3$/m);
    expect(text).toMatch(/^pgwarden_statement_duration_seconds_count\{outcome="error"\} 1$/m);
    m.events.statementDecided?.(s, { seq: 4, mode: 'simple', sql: 'SELECT 1', decision: d, micros: 2 });
    m.cacheLookup(true);
    m.cacheLookup(true);
    m.cacheLookup(false);
    m.events.traffic?.(s, 10, 200);
    m.events.traffic?.(s, 5, 0);
    text = await m.registry.metrics();
    expect(text).toMatch(/^pgwarden_decision_cache_total\{result="hit"\} 2$/m);
    expect(text).toMatch(/^pgwarden_decision_cache_total\{result="miss"\} 1$/m);
    expect(text).toMatch(/^pgwarden_client_bytes_total\{direction="in"\} 15$/m);
    expect(text).toMatch(/^pgwarden_client_bytes_total\{direction="out"\} 200$/m);
    expect(text).toMatch(
      /^pgwarden_statements_total\{role="analyst",decision="allow",kind="SelectStmt",reason=""\} 4$/m,
    );
    expect(text).toMatch(/^pgwarden_rows_forwarded_total 7$/m);
  });
});
