// Audit trail against a destination that stops draining: reaching the memory bound is a failure (refuse closes the
// gate, continue records an audit_gap with the count), nothing is dropped without being counted, and a drained
// destination recovers.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadModule } from 'libpg-query';
import { createAudit, MAX_BUFFERED_BYTES, type Audit, type AuditOptions } from '../../../proxy/audit/sink.ts';
import { auditGate } from '../../../proxy/audit/gate.ts';
import { createMetrics, registerAuditMetrics } from '../../../proxy/metrics.ts';
import type { Session } from '../../../proxy/session/session.ts';
import type { Decision, RolePolicy } from '../../../policy/types.ts';
import { until } from '../../helpers/until.ts';

/** A reader that takes nothing until resume(): every write stays in the stream's buffer. */
class Stalled extends Writable {
  text = '';
  private waiting: (() => void)[] = [];
  private stalled = true;
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    if (this.stalled) this.waiting.push(() => cb());
    else cb();
  }
  resume(): void {
    this.stalled = false;
    for (const cb of this.waiting.splice(0)) cb();
  }
  get events(): Record<string, unknown>[] {
    return this.text
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

const session = {
  id: 's-1',
  remoteAddress: '127.0.0.1',
  identity: undefined,
  role: { name: 'analyst' } as RolePolicy,
} as unknown as Session;
const allow: Decision = {
  allow: true,
  ruleId: 'r',
  statements: [{ kind: 'SelectStmt', relations: ['public.t'], columns: [], functions: [] }],
  rewrittenSql: undefined,
  rowCap: undefined,
  effects: [],
  shadowDenied: undefined,
};
// About 16 KiB per event, so the 16 MiB bound is reached after about a thousand.
const SQL = `SELECT ${'x,'.repeat(8_000)}1`;

const audits: Audit[] = [];
async function open(destination: Writable, onFailure: AuditOptions['onFailure'], errors: string[]): Promise<Audit> {
  const log = {
    error: (_f: object, m: string) => errors.push(m),
    warn: () => {},
    info: () => {},
  } as unknown as NonNullable<AuditOptions['log']>;
  const a = await createAudit({ destination, sql: 'full', onFailure, log, probeMs: 20 });
  audits.push(a);
  return a;
}

function statement(a: Audit, seq: number): void {
  a.events.statementDecided?.(session, { seq, mode: 'simple', sql: SQL, decision: allow, micros: 1 });
  a.flush();
}

beforeAll(async () => {
  await loadModule();
});
afterEach(async () => {
  for (const a of audits.splice(0)) await a.close();
});

describe('a destination that does not drain', () => {
  it("with onFailure 'refuse', closes the gate once the bound is reached and reopens it once the reader drains; every event is written or counted", async () => {
    const out = new Stalled();
    const errors: string[] = [];
    const audit = await open(out, 'refuse', errors);
    let sent = 0;
    while (audit.healthy && sent < 5_000) statement(audit, ++sent);
    expect(sent).toBeLessThan(5_000);
    expect(audit.state).toBe('stalled');
    expect(auditGate(audit)).toBe(false);
    expect(errors[0]).toMatch(/refusing new logins and statements/);
    // Memory stays bounded however many more events come (refused statements are still recorded, or counted).
    for (let i = 0; i < 500; i++) statement(audit, ++sent);
    expect(audit.bufferedBytes).toBeLessThanOrEqual(MAX_BUFFERED_BYTES + 64 * 1024);
    expect(audit.dropped).toBeGreaterThan(0);

    out.resume();
    await until(() => audit.healthy, 5_000);
    expect(audit.state).toBe('ok');
    expect(auditGate(audit)).toBe(true);
    statement(audit, ++sent);
    await until(() => out.events.filter((e) => e['event'] === 'statement').length + audit.dropped === sent, 5_000);
    const events = out.events;
    const gaps = events.filter((e) => e['event'] === 'audit_gap');
    expect(gaps).toHaveLength(1);
    expect(gaps[0]).toMatchObject({ error: 'stalled', dropped: audit.dropped });
    expect(typeof gaps[0]?.['recoveredAt']).toBe('string');
    // The last statement, after recovery, follows the gap marker.
    expect(events.at(-1)).toMatchObject({ event: 'statement', seq: sent });
  });

  it("with onFailure 'continue', keeps the gate open, logs an error, exposes it as metrics, and writes audit_gap with the count on recovery", async () => {
    const out = new Stalled();
    const errors: string[] = [];
    const audit = await open(out, 'continue', errors);
    const metrics = createMetrics({ collectDefault: false });
    registerAuditMetrics(metrics, audit);
    for (let i = 1; i <= 1_500; i++) statement(audit, i);
    expect(audit.healthy).toBe(false);
    expect(auditGate(audit)).toBe(true);
    expect(errors[0]).toMatch(/continuing without a complete audit trail/);
    const dropped = audit.dropped;
    expect(dropped).toBeGreaterThan(0);
    const text = await metrics.registry.metrics();
    expect(text).toMatch(/^pgwarden_audit_healthy 0$/m);
    expect(text).toMatch(new RegExp(`^pgwarden_audit_dropped_events_total ${dropped}$`, 'm'));
    expect(text).toMatch(/^pgwarden_audit_state\{state="stalled"\} 1$/m);

    out.resume();
    await until(() => audit.healthy, 5_000);
    await until(() => out.events.some((e) => e['event'] === 'audit_gap'), 5_000);
    const events = out.events;
    expect(events.find((e) => e['event'] === 'audit_gap')).toMatchObject({ error: 'stalled', dropped });
    expect(events.filter((e) => e['event'] === 'statement').length + dropped).toBe(1_500);
    expect(await metrics.registry.metrics()).toMatch(/^pgwarden_audit_healthy 1$/m);
  });
});

describe('stdout whose reader is paused (the reported case)', () => {
  it('a child writing its trail to a pipe nobody reads stops admitting work instead of losing events silently', async () => {
    // A child process so the pipe really fills: its stdout is a pipe this test does not read until the end.
    const script = `
      import { createAudit } from ${JSON.stringify(path.resolve('proxy/audit/sink.ts'))};
      import { auditGate } from ${JSON.stringify(path.resolve('proxy/audit/gate.ts'))};
      const silent = { error: () => {}, warn: () => {}, info: () => {} };
      const a = await createAudit({ destination: 'stdout', sql: 'full', onFailure: 'refuse', log: silent, probeMs: 20 });
      const s = { id: 's', identity: undefined, role: { name: 'r' } };
      const d = { allow: true, ruleId: 'r', statements: [], effects: [] };
      const sql = 'SELECT ' + 'x,'.repeat(8000) + '1';
      let allowed = 0;
      for (let i = 0; i < 2500; i++) {
        if (!auditGate(a)) { await new Promise((r) => setTimeout(r, 1)); continue; }
        allowed++;
        a.events.statementDecided(s, { seq: allowed, mode: 'simple', sql, decision: d, micros: 1 });
        a.flush();
        await new Promise((r) => setImmediate(r));
      }
      process.stderr.write(JSON.stringify({ allowed, dropped: a.dropped, state: a.state }) + '\\n');
      await a.close();
    `;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-audit-pipe-'));
    const file = path.join(dir, 'child.mts');
    writeFileSync(file, script);
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.pause();
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    await until(() => stderr.includes('\n'), 30_000);
    const summary = JSON.parse(stderr.split('\n')[0] ?? '{}') as { allowed: number; dropped: number; state: string };
    // Now read everything the child wrote.
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stdout.resume();
    await new Promise((r) => child.once('close', r));
    rmSync(dir, { recursive: true, force: true });
    const statements = out.split('\n').filter((l) => l.includes('"event":"statement"')).length;
    expect(summary.state).toBe('stalled');
    // Every statement the gate let through is in the trail; nothing was dropped.
    expect(summary.dropped).toBe(0);
    expect(summary.allowed).toBeLessThan(2_500);
    expect(statements).toBe(summary.allowed);
  }, 60_000);
});
