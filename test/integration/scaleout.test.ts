// Running several replicas: a cancel that lands on another replica still cancels, revocations reach every replica
// (shared file and upstream table), connection limits answer 53300, and shutdown drains before ending sessions.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { freePort } from '../../proxy/embedded/postgres.ts';
import { CancelRegistry } from '../../proxy/session/cancel.ts';
import { revoke } from '../../proxy/revocation/file.ts';
import { REVOCATION_TABLE_SQL } from '../../proxy/revocation/table.ts';
import {
  connectPg,
  pgError,
  startTestProxy,
  superClient,
  type TestProxy,
  sendCancel,
  loginError,
} from '../helpers/proxy.ts';

const SLOW_SQL = 'SELECT count(*) FROM orders a, orders b, orders c';

/** Resolves with the first error the client reports (the FATAL); later ones ("terminated") are absorbed. */
function endedWith(c: pg.Client): Promise<{ code?: string; message: string }> {
  return new Promise((resolve) => c.on('error', (e) => resolve(e as never)));
}

describe('two replicas behind one load balancer', () => {
  let a: TestProxy;
  let b: TestProxy;
  const shared = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-shared-'));
  const revocationFile = path.join(shared, 'revocations.yaml');

  beforeAll(async () => {
    const su = await superClient();
    await su.query(REVOCATION_TABLE_SQL('pgwarden_admin', 'revocations'));
    await su.query(
      'GRANT USAGE ON SCHEMA pgwarden_admin TO pgwarden; GRANT SELECT ON pgwarden_admin.revocations TO pgwarden',
    );
    await su.end();
    const [pa, pb] = [await freePort(), await freePort()];
    const revocation = {
      file: revocationFile,
      table: { schema: 'pgwarden_admin', name: 'revocations', channel: 'pgwarden_revocations', refreshMs: 30_000 },
    };
    a = await startTestProxy({
      listen: { port: pa },
      deps: { watchPolicy: true },
      config: { cluster: { replicaId: 1, peers: [{ id: 2, host: '127.0.0.1', port: pb }] }, revocation },
    });
    b = await startTestProxy({
      secret: a.secret,
      listen: { port: pb },
      deps: { watchPolicy: true },
      config: { cluster: { replicaId: 2, peers: [{ id: 1, host: '127.0.0.1', port: pa }] }, revocation },
    });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('each replica encodes its id in the cancel secrets it hands out, beside the upstream pid', async () => {
    const c = await connectPg(a);
    const k = c as unknown as { processID: number; secretKey: number };
    expect(CancelRegistry.replicaOf(k.secretKey)).toBe(1);
    expect(k.processID).toBe((await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid);
    await c.end();
  });

  it('a CancelRequest sent to the other replica is forwarded and cancels the query', async () => {
    const c = await connectPg(a);
    try {
      const k = c as unknown as { processID: number; secretKey: number };
      const q = c.query(SLOW_SQL);
      await new Promise((r) => setTimeout(r, 200));
      await sendCancel(b.proxy.port, k.processID, k.secretKey);
      const err = await pgError(() => q);
      expect(err.code).toBe('57014');
      // A forged secret forwarded the same way cancels nothing.
      const q2 = c.query('SELECT count(*) FROM orders a, orders b');
      await sendCancel(b.proxy.port, k.processID, k.secretKey ^ 0x55);
      await expect(q2).resolves.toBeDefined();
    } finally {
      await c.end();
    }
  });

  it('a revocation in the shared file ends matching sessions on both replicas within a second', async () => {
    const token = await a.token({ sub: 'shared-file-sub' });
    const ca = new pg.Client(a.pgConfig(token));
    const cb = new pg.Client(b.pgConfig(token));
    await ca.connect();
    await cb.connect();
    const ea = endedWith(ca);
    const eb = endedWith(cb);
    const t0 = Date.now();
    await revoke(revocationFile, { sub: 'shared-file-sub', reason: 'test' });
    const [ra, rb] = await Promise.all([ea, eb]);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(ra.code).toBe('57P01');
    expect(rb.code).toBe('57P01');
    await ca.end().catch(() => {});
    await cb.end().catch(() => {});
  });

  it('a row in the upstream revocation table reaches every replica at once (LISTEN/NOTIFY)', async () => {
    const token = await a.token({ sub: 'table-sub', agent: 'rogue-agent' });
    const ca = new pg.Client(a.pgConfig(token));
    const cb = new pg.Client(b.pgConfig(token));
    await ca.connect();
    await cb.connect();
    const ea = endedWith(ca);
    const eb = endedWith(cb);
    const su = await superClient();
    const t0 = Date.now();
    await su.query(`INSERT INTO pgwarden_admin.revocations (agent, reason) VALUES ('rogue-agent', 'misbehaving')`);
    await su.end();
    const [ra, rb] = await Promise.all([ea, eb]);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(ra.message).toMatch(/revoked/);
    expect(rb.message).toMatch(/revoked/);
    await ca.end().catch(() => {});
    await cb.end().catch(() => {});
  });
});

describe('limits and shutdown', () => {
  let tp: TestProxy;
  beforeAll(async () => {
    tp = await startTestProxy({ limits: { maxClientConnections: 3, maxSessionsPerSub: 2 } });
  });
  afterAll(async () => {
    await tp?.close();
  });

  it('refuses a third session for one subject and a fourth connection with 53300', async () => {
    const c1 = await connectPg(tp, await tp.token({ sub: 'limited' }));
    const c2 = await connectPg(tp, await tp.token({ sub: 'limited' }));
    const third = await loginError(tp.pgConfig(await tp.token({ sub: 'limited' })));
    expect(third.code).toBe('53300');
    const c3 = await connectPg(tp, await tp.token({ sub: 'other' }));
    const full = await loginError(tp.pgConfig(await tp.token({ sub: 'yet-another' })));
    expect(full.code).toBe('53300');
    await Promise.all([c1.end(), c2.end(), c3.end()]);
  });

  it('an idle session is ended after limits.idleSessionTimeout with 57P05, a busy one is not', async () => {
    const idleProxy = await startTestProxy({ limits: { idleSessionTimeout: 400 } });
    try {
      const c = await connectPg(idleProxy);
      const ended = endedWith(c);
      // A statement longer than the timeout keeps the session alive while it runs.
      await c.query('SELECT count(*) FROM generate_series(1, 3000000)');
      const err = await ended;
      expect(err.code).toBe('57P05');
      await c.end().catch(() => {});
    } finally {
      await idleProxy.close();
    }
  });

  it('shutdown lets a running statement finish within the drain timeout, then ends sessions with 57P01', async () => {
    const drainer = await startTestProxy();
    const c = await connectPg(drainer);
    const idle = await connectPg(drainer);
    const idleEnded = endedWith(idle);
    c.on('error', () => {});
    const running = c.query('SELECT count(*)::int AS n FROM generate_series(1, 2000000)');
    await new Promise((r) => setTimeout(r, 50));
    const closing = drainer.close(5000);
    const r = await running;
    expect(r.rows[0].n).toBe(2_000_000);
    await closing;
    expect((await idleEnded).code).toBe('57P01');
    await c.end().catch(() => {});
    await idle.end().catch(() => {});
  });
});
