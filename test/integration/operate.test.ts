// Operating pgwarden: revocation ends live sessions and refuses logins; metrics move with traffic; the audit trail says who did what.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { revoke } from '../../proxy/revocation/file.ts';
import { connectPg, pgError, startTestProxy, type TestProxy, loginError } from '../helpers/proxy.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ deps: { watchPolicy: true } });
});
afterAll(async () => {
  await tp?.close();
});

describe('revocation', () => {
  it('ends a live session within a second and refuses new logins with the revoked token', async () => {
    const token = await tp.token({ sub: 'mallory', jti: 'jti-revoke-me' });
    const c = new pg.Client(tp.pgConfig(token));
    await c.connect();
    const ended = new Promise<{ code?: string; message: string }>((resolve) =>
      c.once('error', (e) => resolve(e as never)),
    );
    const t0 = Date.now();
    await revoke(path.join(tp.dir, 'revocations.yaml'), { jti: 'jti-revoke-me', reason: 'compromised laptop' });
    const err = await ended;
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(err.code).toBe('57P01');
    expect(err.message).toMatch(/revoked/);
    await c.end().catch(() => {});
    const login = await loginError(tp.pgConfig(token));
    expect(login.code).toBe('28000');
    expect(login.message).toMatch(/revoked/);
    // Other subjects are unaffected.
    const other = await connectPg(tp, await tp.token({ sub: 'alice' }));
    expect((await other.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await other.end();
  });
});

describe('metrics and audit', () => {
  it('counts logins, decisions and endings after real traffic', async () => {
    const before = await tp.proxy.metrics.registry.getSingleMetricAsString('pgwarden_statements_total');
    const c = await connectPg(tp, await tp.token({ sub: 'metrics-user', agent: 'm-bot' }));
    await c.query('SELECT count(*) FROM orders');
    await pgError(() => c.query('DELETE FROM orders'));
    await c.end();
    await loginError(tp.pgConfig('not-a-token'));
    await new Promise((r) => setTimeout(r, 50));
    const text = await tp.proxy.metrics.registry.metrics();
    expect(text).toMatch(/pgwarden_logins_total\{result="ok",reason="ok"\} [1-9]/);
    expect(text).toMatch(/pgwarden_logins_total\{result="refused",reason="not_a_jwt"\} [1-9]/);
    expect(text).toMatch(
      /pgwarden_statements_total\{role="analyst",decision="allow",kind="SelectStmt",reason=""\} [1-9]/,
    );
    expect(text).toMatch(
      /pgwarden_statements_total\{role="analyst",decision="deny",kind="DeleteStmt",reason="[a-z_]+"\} [1-9]/,
    );
    expect(text).toMatch(/pgwarden_sessions_ended_total\{reason="client"\} [1-9]/);
    expect(text).toMatch(/pgwarden_policy_decision_seconds_count [1-9]/);
    expect(text).toMatch(/pgwarden_statement_duration_seconds_count\{outcome="ok"\} [1-9]/);
    expect(text).toMatch(/pgwarden_rows_forwarded_total [1-9]/);
    expect(text).toMatch(/pgwarden_client_bytes_total\{direction="in"\} [1-9]/);
    expect(text).toMatch(/pgwarden_client_bytes_total\{direction="out"\} [1-9]/);
    expect(text).toMatch(/pgwarden_upstream_connect_seconds_count [1-9]/);
    expect(text).toMatch(/pgwarden_decision_cache_total\{result="miss"\} [1-9]/);
    expect(before).not.toBe(await tp.proxy.metrics.registry.getSingleMetricAsString('pgwarden_statements_total'));
    // Labels never carry subjects, SQL or addresses.
    expect(text).not.toContain('metrics-user');
    expect(text).not.toContain('m-bot');
    expect(text).not.toContain('DELETE FROM');
    expect(text).not.toContain('127.0.0.1');
  });

  it('the audit trail names who, which agent, which rule, what SQL and what happened — and never a token', async () => {
    const token = await tp.token({ sub: 'audited', agent: 'audit-bot', jti: 'audit-jti' });
    const c = await connectPg(tp, token);
    await c.query('SELECT id FROM orders WHERE id = 1');
    await pgError(() => c.query('SELECT ssn FROM customers'));
    await c.query('SELECT id FROM orders');
    await pgError(() => c.query('SELECT 1/0'));
    await c.query({ text: 'SELECT id FROM orders WHERE id <= $1', values: [3] });
    await c.end();
    await new Promise((r) => setTimeout(r, 200));
    const events = tp.auditLines().map((l) => JSON.parse(l));
    const mine = events.filter((e) => e.sub === 'audited');
    expect(mine.some((e) => e.event === 'session_start' && e.agent === 'audit-bot' && e.jti === 'audit-jti')).toBe(
      true,
    );
    const allowed = mine.find((e) => e.event === 'statement' && e.decision === 'allow' && /orders/.test(e.sql));
    expect(allowed).toBeDefined();
    const denied = mine.find((e) => e.event === 'statement' && e.decision === 'deny');
    expect(denied).toMatchObject({ role: 'analyst' });
    expect(denied.rule ?? denied.ruleId).toBeTruthy();
    expect(mine.some((e) => e.event === 'session_end')).toBe(true);
    // Each allowed statement is completed by a statement_end with the same seq: rows, duration, SQLSTATE.
    const ends = new Map(mine.filter((e) => e.event === 'statement_end').map((e) => [e.seq, e]));
    expect(ends.get(allowed.seq)).toMatchObject({ rows: 1 });
    const capped = mine.find((e) => e.event === 'statement' && e.sql === 'SELECT id FROM orders');
    expect(ends.get(capped.seq)).toMatchObject({ rows: 100, truncated: true });
    const failed = mine.find((e) => e.event === 'statement' && e.sql === 'SELECT 1/0');
    expect(ends.get(failed.seq)).toMatchObject({ sqlstate: '22012', rows: 0 });
    const extended = mine.find((e) => e.event === 'statement' && e.mode === 'parse' && /\$1/.test(e.sql));
    expect(ends.get(extended.seq)).toMatchObject({ rows: 3 });
    expect(ends.has(denied.seq)).toBe(false);
    const all = tp.auditLines().join('\n') + tp.logs.join('');
    for (const part of token.split('.')) expect(all).not.toContain(part);
  });
});
