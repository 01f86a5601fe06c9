// Hot reload through the running proxy: a valid edit applies from the next statement, an invalid one changes nothing,
// a removed role ends its sessions, and reloading under continuous load drops no session.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { DEFAULT_POLICY, connectPg, pgError, startTestProxy, type TestProxy } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ deps: { watchPolicy: true } });
});
afterAll(async () => {
  await tp?.close();
});

/** Replaces the policy file the way editors do (write a temp file, rename over). */
function writePolicy(text: string): void {
  writeFileSync(tp.policyFile + '.tmp', text);
  renameSync(tp.policyFile + '.tmp', tp.policyFile);
}

describe('policy hot reload', () => {
  it('a valid edit applies to an existing session from its next statement; an invalid file keeps the last good policy', async () => {
    const c = await connectPg(tp);
    try {
      expect((await pgError(() => c.query('SELECT value FROM secrets'))).code).toBe('42501');
      const v1 = tp.proxy.store.version;
      writePolicy(
        DEFAULT_POLICY.replace(
          'relations: [public.orders, public.customers]',
          'relations: [public.orders, public.customers, public.secrets]',
        ),
      );
      await until(() => tp.proxy.store.version > v1);
      expect((await c.query('SELECT count(*)::int AS n FROM secrets')).rows[0].n).toBe(2);

      const v2 = tp.proxy.store.version;
      writePolicy('roles:\n  analyst:\n    readOnly: maybe\n');
      // A reload waits for the file to settle (500 ms) after the watcher's debounce (200 ms).
      await until(() => /policy reload failed; keeping the current policy/.test(tp.logs.join('')), 5_000);
      expect(tp.proxy.store.version).toBe(v2);
      expect((await c.query('SELECT count(*)::int AS n FROM secrets')).rows[0].n).toBe(2);
      expect(tp.logs.join('')).toMatch(/policy reload failed; keeping the current policy/);
    } finally {
      await c.end();
      writePolicy(DEFAULT_POLICY);
      await new Promise((r) => setTimeout(r, 400));
    }
  });

  it('a named prepared statement is decided again after a reload that no longer allows it', async () => {
    writePolicy(DEFAULT_POLICY);
    await new Promise((r) => setTimeout(r, 400));
    const c = await connectPg(tp);
    try {
      const q = { name: 'orders-count', text: 'SELECT count(*)::int AS n FROM orders WHERE id > $1', values: [0] };
      expect((await c.query(q)).rows[0].n).toBe(500);
      const v = tp.proxy.store.version;
      writePolicy(
        DEFAULT_POLICY.replace('relations: [public.orders, public.customers]', 'relations: [public.customers]'),
      );
      await until(() => tp.proxy.store.version > v);
      expect((await pgError(() => c.query(q))).code).toBe('42501');
    } finally {
      await c.end();
      writePolicy(DEFAULT_POLICY);
      await new Promise((r) => setTimeout(r, 400));
    }
  });

  it('a session whose role disappeared is ended with a clear FATAL', async () => {
    const c = new pg.Client(tp.pgConfig(await tp.token({ role: 'capped' })));
    await c.connect();
    const ended = new Promise<{ code?: string; message: string }>((resolve) =>
      c.once('error', (e) => resolve(e as never)),
    );
    writePolicy(DEFAULT_POLICY.replace(/ {2}capped:[\s\S]*?(?= {2}writer:)/, ''));
    const err = await ended;
    expect(err.code).toBe('57P01');
    expect(err.message).toMatch(/role .* removed/);
    await c.end().catch(() => {});
    writePolicy(DEFAULT_POLICY);
    await new Promise((r) => setTimeout(r, 400));
  });

  it('reloading under continuous load drops no session and never serves a half-loaded policy', async () => {
    writePolicy(DEFAULT_POLICY);
    await new Promise((r) => setTimeout(r, 300));
    const clients = await Promise.all(Array.from({ length: 6 }, async () => connectPg(tp)));
    let stop = false;
    let ok = 0;
    const failures: string[] = [];
    const loops = clients.map(async (c) => {
      while (!stop) {
        try {
          await c.query('SELECT count(*) FROM orders');
          ok++;
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    });
    const start = tp.proxy.store.version;
    for (let i = 0; i < 8; i++) {
      // Alternate between two valid policies that both allow orders.
      writePolicy(i % 2 === 0 ? DEFAULT_POLICY.replace('maxRows: 100', 'maxRows: 99') : DEFAULT_POLICY);
      await new Promise((r) => setTimeout(r, 250));
    }
    // A file rewritten every 250 ms has not settled; its last version is applied once it has, still under load.
    await until(() => tp.proxy.store.version > start, 5_000);
    stop = true;
    await Promise.all(loops);
    expect(tp.proxy.store.version).toBeGreaterThan(start);
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(50);
    for (const c of clients) expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await Promise.all(clients.map((c) => c.end()));
    expect(readFileSync(tp.policyFile, 'utf8')).toContain('analyst');
  });
});
