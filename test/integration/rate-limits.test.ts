// Issue 12 through the real proxy: failed logins and CancelRequests limited per source address, the upstream connection cap, the startup role-settings warning.
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { connectPg, loginError, pgError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';

async function metricValue(tp: TestProxy, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await tp.proxy.metrics.registry.getSingleMetric(name)?.get();
  let sum = 0;
  for (const v of m?.values ?? []) {
    if (Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want))
      sum += v.value;
  }
  return sum;
}

/** A `pg` stream that connects from `localAddress` (127.0.0.x are all loopback on Linux). */
function fromAddress(localAddress: string): () => net.Socket {
  return () => {
    const s = new net.Socket();
    const connect = s.connect.bind(s) as (opts: net.TcpSocketConnectOpts) => net.Socket;
    (s as unknown as { connect: (port: number, host: string) => net.Socket }).connect = (port, host) =>
      connect({ port, host, localAddress });
    return s;
  };
}

/** A raw CancelRequest from `localAddress`; resolves when the proxy closes the connection (it never answers). */
function sendCancelFrom(port: number, pid: number, secret: number, localAddress: string): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress }, () => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0);
      b.writeInt32BE(80877102, 4);
      b.writeInt32BE(pid, 8);
      b.writeInt32BE(secret, 12);
      s.end(b);
    });
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
}

async function upstreamSessions(appPrefix: string): Promise<number> {
  const su = await superClient();
  try {
    const r = await su.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1', [
      `${appPrefix}%`,
    ]);
    return r.rows[0].n as number;
  } finally {
    await su.end();
  }
}

const proxies: TestProxy[] = [];
const clients: pg.Client[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.end().catch(() => {})));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

async function start(opts: Parameters<typeof startTestProxy>[0]): Promise<TestProxy> {
  const tp = await startTestProxy(opts);
  proxies.push(tp);
  return tp;
}

describe('limits.loginFailuresPerMinute', () => {
  it('after N failed logins from one address its next login is refused with 53300 before the token is read; another address still logs in', async () => {
    const tp = await start({ limits: { loginFailuresPerMinute: 3 } });
    const forged = await tp.sign({
      sub: 'rl-forger',
      role: 'analyst',
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 60,
    });
    const bad = [`${forged.slice(0, -4)}AAAA`, 'not-a-token', await tp.token({ role: 'no-such-role' })];
    for (const password of bad) {
      const err = await loginError(tp.pgConfig(password));
      expect(['28P01', '28000']).toContain(err.code);
    }
    expect(await metricValue(tp, 'pgwarden_rate_limited_total', { limit: 'login_failures' })).toBe(0);

    // A valid token from the same address: refused at accept, nothing verified, nothing opened upstream.
    const refused = await loginError(tp.pgConfig(await tp.token({ sub: 'rl-valid-same-address' })));
    expect(refused.code).toBe('53300');
    expect(refused.message).toMatch(
      /^too many failed logins from this address \(limits\.loginFailuresPerMinute = 3\); hint: try again in \d+ s with a valid token \(reason=rate_limited\)$/,
    );
    expect(refused.hint).toMatch(/^try again in \d+ s with a valid token$/);
    expect(await upstreamSessions('pgwarden:rl-valid-same-address')).toBe(0);
    expect(await metricValue(tp, 'pgwarden_rate_limited_total', { limit: 'login_failures' })).toBe(1);
    expect(await metricValue(tp, 'pgwarden_logins_total', { result: 'refused', reason: 'rate_limited' })).toBe(1);

    // From 127.0.0.2 the same kind of token logs in.
    const other = await connectPg(tp, await tp.token({ sub: 'rl-other-address' }), {
      stream: fromAddress('127.0.0.2'),
    });
    clients.push(other);
    expect((await other.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    expect(await upstreamSessions('pgwarden:rl-other-address')).toBe(1);

    // The log and the audit trail say which address was limited, once per exhausted budget.
    const audit = tp.auditLines().map((l) => JSON.parse(l) as Record<string, unknown>);
    const limited = audit.filter((e) => e.event === 'login_refused' && e.reason === 'login_failures_exceeded');
    expect(limited).toHaveLength(1);
    expect(limited[0]).toMatchObject({ clientAddress: '127.0.0.1', sqlstate: '53300' });
    expect(tp.logs.join('')).toContain(
      'too many failed logins from this address (limits.loginFailuresPerMinute = 3): its connections are refused for',
    );
  });

  it("refusals by pgwarden's own limits (per-subject sessions) are not counted as failed logins", async () => {
    const tp = await start({ limits: { loginFailuresPerMinute: 2, maxSessionsPerSub: 1 } });
    clients.push(await connectPg(tp, await tp.token({ sub: 'rl-busy' })));
    for (let i = 0; i < 4; i++)
      expect((await loginError(tp.pgConfig(await tp.token({ sub: 'rl-busy' })))).code).toBe('53300');
    const c = await connectPg(tp, await tp.token({ sub: 'rl-another' }));
    clients.push(c);
    expect(await metricValue(tp, 'pgwarden_rate_limited_total', { limit: 'login_failures' })).toBe(0);
  });
});

describe('limits.cancelRequestsPerMinute', () => {
  it('a cancel flood from one address is counted and dropped; a cancel from another address still cancels', async () => {
    const tp = await start({ limits: { cancelRequestsPerMinute: 5 } });
    const c = await connectPg(tp, await tp.token({ sub: 'rl-canceller', role: 'writer' }));
    clients.push(c);
    const key = c as unknown as { processID: number; secretKey: number };
    // Wrong secrets: within the rate they are simply unknown keys; past it they are not even looked at.
    for (let i = 0; i < 20; i++)
      await sendCancelFrom(tp.proxy.port, key.processID, key.secretKey ^ (i + 1), '127.0.0.1');
    expect(await metricValue(tp, 'pgwarden_rate_limited_total', { limit: 'cancel_requests' })).toBe(15);

    const slow = c.query('SELECT count(*) FROM orders a, orders b, orders c, orders d');
    slow.catch(() => {});
    await until(async () => (await activeQueries('pgwarden:rl-canceller')) === 1, 5_000);
    // The right key from the limited address is dropped too: the statement goes on.
    await sendCancelFrom(tp.proxy.port, key.processID, key.secretKey, '127.0.0.1');
    expect(await metricValue(tp, 'pgwarden_rate_limited_total', { limit: 'cancel_requests' })).toBe(16);
    await new Promise((r) => setTimeout(r, 300));
    expect(await activeQueries('pgwarden:rl-canceller')).toBe(1);
    // From another address the same key cancels it, with PostgreSQL's own 57014.
    await sendCancelFrom(tp.proxy.port, key.processID, key.secretKey, '127.0.0.2');
    const err = await pgError(() => slow);
    expect(err.code).toBe('57014');
    expect(err.message).toBe('canceling statement due to user request');
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  });
});

async function activeQueries(appPrefix: string): Promise<number> {
  const su = await superClient();
  try {
    const r = await su.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE $1 AND state = 'active'",
      [`${appPrefix}%`],
    );
    return r.rows[0].n as number;
  } finally {
    await su.end();
  }
}

describe('limits.maxUpstreamConnections', () => {
  it('a login past the cap gets 53300 naming the limit and opens nothing upstream; a session ending frees its slot', async () => {
    // 5 in all, 3 kept for pgwarden's own connections: two sessions.
    const tp = await start({ limits: { maxUpstreamConnections: 5 } });
    const a = await connectPg(tp, await tp.token({ sub: 'cap-a' }));
    const b = await connectPg(tp, await tp.token({ sub: 'cap-b' }));
    clients.push(b);
    const err = await loginError(tp.pgConfig(await tp.token({ sub: 'cap-c' })));
    expect(err.code).toBe('53300');
    expect(err.message).toBe(
      "too many upstream connections (limits.maxUpstreamConnections = 5); hint: try again later; pgwarden keeps its upstream connections below the database server's max_connections (reason=limit_reached)",
    );
    expect(await upstreamSessions('pgwarden:cap-')).toBe(2);
    expect(await metricValue(tp, 'pgwarden_upstream_connections', { kind: 'session' })).toBe(2);
    await a.end();
    await until(async () => (await metricValue(tp, 'pgwarden_upstream_connections', { kind: 'session' })) === 1);
    const c = await connectPg(tp, await tp.token({ sub: 'cap-c' }));
    clients.push(c);
    expect((await c.query('SELECT count(*)::int AS n FROM orders')).rows[0].n).toBeGreaterThan(0);
    expect(await upstreamSessions('pgwarden:cap-')).toBe(2);
  });

  it('0 derives the cap from the server at startup and logs how', async () => {
    const su = await superClient();
    const max = Number((await su.query("SELECT current_setting('max_connections') AS v")).rows[0].v);
    const reserved = Number(
      (await su.query("SELECT current_setting('superuser_reserved_connections') AS v")).rows[0].v,
    );
    await su.end();
    const tp = await start({ limits: { maxUpstreamConnections: 0 } });
    const cap = await metricValue(tp, 'pgwarden_upstream_connections_max');
    const available = max - reserved;
    expect(cap).toBeGreaterThan(0);
    expect(cap).toBeLessThanOrEqual(available - Math.max(3, Math.ceil(available / 10)));
    expect(tp.logs.join('')).toContain(`limits.maxUpstreamConnections derived from the server: max_connections ${max}`);
  });
});

describe('upstream role settings', () => {
  it('warns once at startup, naming the missing settings and the ALTER ROLE to run', async () => {
    const tp = await start({});
    const warnings = tp.logs
      .map((l) => JSON.parse(l) as { level: number; msg: string; sql?: string })
      .filter((l) => l.msg.includes('lacks settings a DBA should set'));
    expect(warnings).toHaveLength(1);
    // The test server sets none of them on the pgwarden role.
    expect(warnings[0]?.msg).toContain('temp_file_limit');
    expect(warnings[0]?.sql).toContain('ALTER ROLE pgwarden IN DATABASE');
    expect(warnings[0]?.sql).toContain("SET temp_file_limit = '5GB';");
    expect(warnings[0]?.level).toBe(40);
  });
});
