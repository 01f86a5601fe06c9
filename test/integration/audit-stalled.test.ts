// The whole proxy with an audit destination nobody reads (a FIFO without a reader: every byte stays in memory):
// once the bound is reached, statements and logins are refused (onFailure: refuse) and nothing that ran is missing
// from the trail; once a reader drains it, service resumes.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPg, loginError, startTestProxy, type TestProxy } from '../helpers/proxy.ts';

const hasMkfifo = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v mkfifo'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

let tp: TestProxy | undefined;
let fifo = '';
let drained = '';

describe.skipIf(!hasMkfifo)('an audit destination that stops draining', () => {
  let dir = '';
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-audit-fifo-'));
    fifo = path.join(dir, 'audit.fifo');
    drained = path.join(dir, 'audit.out');
    execFileSync('mkfifo', [fifo]);
    tp = await startTestProxy({ config: { audit: { destination: fifo, sql: 'full', onFailure: 'refuse' } } });
  });
  afterAll(async () => {
    await tp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses statements and logins until a reader drains it, and every statement that ran is in the trail', async () => {
    const t = tp as TestProxy;
    const c = await connectPg(t);
    // About 16 KiB of SQL per statement event: the 16 MiB bound is reached after about nine hundred.
    const sql = `SELECT 1 AS one, '${'x'.repeat(16_000)}' AS pad`;
    let ran = 0;
    let refused: { code?: string; message: string } | undefined;
    for (let i = 0; i < 3_000 && refused === undefined; i++) {
      try {
        await c.query(sql);
        ran++;
      } catch (err) {
        refused = err as { code?: string; message: string };
      }
    }
    expect(refused?.code).toBe('42501');
    expect(refused?.message).toMatch(/audit trail cannot be written/);
    expect(t.proxy.audit.state).toBe('stalled');
    expect(ran).toBeGreaterThan(500);
    const login = await loginError(t.pgConfig(await t.token()));
    expect(login.code).toBe('57P03');

    // A reader appears and drains the FIFO.
    const reader = spawn('sh', ['-c', `cat "${fifo}" > "${drained}"`], { stdio: 'ignore' });
    // Listened for now: cat exits as soon as the proxy closes the FIFO, which may be before the end of this test.
    const readerDone = new Promise((r) => reader.once('close', r));
    const end = Date.now() + 20_000;
    while (!t.proxy.audit.healthy && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(t.proxy.audit.healthy).toBe(true);
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    const c2 = await connectPg(t);
    await c2.end();
    await c.end();
    await t.close();
    tp = undefined;
    await readerDone;
    expect(existsSync(drained)).toBe(true);
    const events = readFileSync(drained, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const allowed = events.filter(
      (e) =>
        e['event'] === 'statement' &&
        e['decision'] === 'allow' &&
        typeof e['sql'] === 'string' &&
        (e['sql'] as string).includes('AS pad'),
    );
    expect(allowed).toHaveLength(ran);
    expect(t.proxy.audit.dropped).toBe(0);
    expect(events.some((e) => e['event'] === 'audit_gap' && e['error'] === 'stalled' && e['dropped'] === 0)).toBe(true);
  }, 60_000);
});
