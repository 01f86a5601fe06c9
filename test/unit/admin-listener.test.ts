// The admin listener (/metrics, /healthz, /readyz): readiness comes from a scheduled check, never one upstream
// login per request; local state (the audit trail) is read per request; its own connection cap and timeouts; close
// ends keep-alive connections too.
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createMetrics, startMetricsServer, type AdminListener, type Readiness } from '../../proxy/metrics.ts';

const listeners: AdminListener[] = [];
afterEach(async () => {
  for (const l of listeners.splice(0)) await l.close();
});

function get(port: number, path: string, agent?: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: agent ?? false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

async function start(
  ready: () => Promise<boolean | Readiness>,
  opts: Parameters<typeof startMetricsServer>[4] = {},
): Promise<AdminListener> {
  const l = await startMetricsServer(createMetrics({ collectDefault: false }), '127.0.0.1', 0, ready, opts);
  listeners.push(l);
  return l;
}

describe('/readyz', () => {
  it('answers from the scheduled check: 200 probes cost one upstream check, not 200', async () => {
    let checks = 0;
    const l = await start(
      async () => {
        checks++;
        return true;
      },
      { checkIntervalMs: 60_000 },
    );
    const answers = await Promise.all(Array.from({ length: 200 }, () => get(l.port, '/readyz')));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    expect(checks).toBe(1);
  });

  it('follows the upstream on the schedule, and a check that hangs counts as failed', async () => {
    let up = true;
    let hang = false;
    const l = await start(
      async () => {
        if (hang) return await new Promise<boolean>(() => {});
        if (!up) throw new Error('connection refused');
        return true;
      },
      { checkIntervalMs: 30, checkTimeoutMs: 50 },
    );
    expect((await get(l.port, '/readyz')).status).toBe(200);
    up = false;
    await new Promise((r) => setTimeout(r, 120));
    expect(await get(l.port, '/readyz')).toEqual({
      status: 503,
      body: 'not ready: readiness check failed: connection refused\n',
    });
    up = true;
    hang = true;
    await new Promise((r) => setTimeout(r, 200));
    expect((await get(l.port, '/readyz')).body).toMatch(/took longer than 50 ms/);
  });

  it('reads live local state per request, and says draining once shutdown began', async () => {
    let audit: boolean | Readiness = true;
    const l = await start(async () => true, { checkIntervalMs: 60_000, live: () => audit });
    expect((await get(l.port, '/readyz')).status).toBe(200);
    audit = { ok: false, detail: 'audit trail stalled (onFailure: refuse)' };
    expect(await get(l.port, '/readyz')).toEqual({
      status: 503,
      body: 'not ready: audit trail stalled (onFailure: refuse)\n',
    });
    audit = { ok: true, detail: 'audit trail stalled, 12 events dropped so far (onFailure: continue)' };
    expect(await get(l.port, '/readyz')).toEqual({
      status: 200,
      body: 'ready: audit trail stalled, 12 events dropped so far (onFailure: continue)\n',
    });
    l.markDraining();
    expect(await get(l.port, '/readyz')).toEqual({ status: 503, body: 'not ready: draining\n' });
    expect((await get(l.port, '/healthz')).status).toBe(200);
  });
});

describe('the listener', () => {
  it('holds at most maxConnections at once', async () => {
    const l = await start(async () => true, { maxConnections: 3, checkIntervalMs: 60_000 });
    const held: net.Socket[] = [];
    for (let i = 0; i < 3; i++) {
      const s = net.connect(l.port, '127.0.0.1');
      s.on('error', () => {});
      await new Promise((r) => s.once('connect', r));
      held.push(s);
    }
    // Let the server accept them before the next one.
    await new Promise((r) => setTimeout(r, 50));
    const extra = net.connect(l.port, '127.0.0.1');
    extra.on('error', () => {});
    extra.resume();
    const closed = await new Promise<boolean>((resolve) => {
      extra.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 2_000);
    });
    expect(closed).toBe(true);
    for (const s of held) s.destroy();
  });

  it('drops a client that sends its headers too slowly', async () => {
    const l = await start(async () => true, { requestTimeoutMs: 300, checkIntervalMs: 60_000 });
    const s = net.connect(l.port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    s.resume();
    s.write('GET /readyz HTTP/1.1\r\nHost: x\r\n');
    const started = Date.now();
    await new Promise((r) => s.once('close', r));
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('close() ends keep-alive connections instead of waiting for them', async () => {
    const l = await start(async () => true, { checkIntervalMs: 60_000 });
    const agent = new http.Agent({ keepAlive: true });
    expect((await get(l.port, '/healthz', agent)).status).toBe(200);
    const started = Date.now();
    await l.close();
    expect(Date.now() - started).toBeLessThan(1_000);
    agent.destroy();
    await expect(get(l.port, '/healthz')).rejects.toThrow();
  });
});
