// Network binding against the real test Postgres: a role's networks and a token's pgwarden_networks claim limit the client addresses a token logs in from (28000, reason network_denied), IPv4-mapped clients included.
import net from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../../proxy/auth/mint.ts';
import { DEFAULT_POLICY, loginError, startTestProxy, type TestProxy } from '../helpers/proxy.ts';

const POLICY = `${DEFAULT_POLICY}  bound:
    readOnly: true
    relations: [public.orders]
    networks: [10.0.0.0/8]
  local:
    readOnly: true
    relations: [public.orders]
    networks: [127.0.0.1/32]
  local6:
    readOnly: true
    relations: [public.orders]
    networks: ["::1/128"]
`;

async function countOrders(cfg: pg.ClientConfig): Promise<number> {
  const c = new pg.Client(cfg);
  await c.connect();
  try {
    return (await c.query('SELECT count(*)::int AS n FROM public.orders')).rows[0].n as number;
  } finally {
    await c.end();
  }
}

/** Whether this machine can listen on [::] and reach it over ::1 (IPv6 may be off in a container). */
async function ipv6Works(): Promise<boolean> {
  return await new Promise((resolve) => {
    const srv = net.createServer((s) => s.destroy());
    srv.once('error', () => resolve(false));
    srv.listen(0, '::', () => {
      const port = (srv.address() as net.AddressInfo).port;
      const c = net.connect({ host: '::1', port });
      c.once('connect', () => {
        c.destroy();
        srv.close();
        resolve(true);
      });
      c.once('error', () => {
        srv.close();
        resolve(false);
      });
    });
  });
}

describe('network binding (IPv4 listener)', () => {
  let tp: TestProxy;
  const token = (role: string, networks?: string[]) =>
    mintToken(tp.config.auth, { sub: 'alice', role, agent: 'test-agent', networks }, 60_000);
  beforeAll(async () => {
    tp = await startTestProxy({ policy: POLICY });
  });
  afterAll(async () => {
    await tp?.close();
  });

  it('a role bound to 10.0.0.0/8 is refused from 127.0.0.1 with 28000 network_denied; nothing reaches the database', async () => {
    const err = await loginError(tp.pgConfig(await token('bound'), { application_name: 'network-bound-probe' }));
    expect(err.code).toBe('28000');
    expect(err.severity).toBe('FATAL');
    expect(err.message).toBe(
      'token may not be used from address 127.0.0.1: it is outside the networks role "bound" is bound to; hint: connect from a network this token may be used from, or ask for a token bound to yours; only the connection\'s own source address counts (reason=network_denied)',
    );
    expect(err.detail).toMatch(/^reason=network_denied/);
    const refused = tp
      .auditLines()
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === 'login_refused' && e.refusal === 'network_denied');
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(tp.auditLines().some((l) => JSON.parse(l).event === 'session_start' && JSON.parse(l).role === 'bound')).toBe(
      false,
    );
  });

  it('a role bound to 127.0.0.1/32 logs in from it; a role without networks from anywhere', async () => {
    expect(await countOrders(tp.pgConfig(await token('local')))).toBeGreaterThan(0);
    expect(await countOrders(tp.pgConfig(await token('analyst')))).toBeGreaterThan(0);
  });

  it('a claim narrows: inside both works, outside the claim is refused, a wider claim does not widen the role', async () => {
    expect(await countOrders(tp.pgConfig(await token('local', ['127.0.0.0/8'])))).toBeGreaterThan(0);
    const narrowed = await loginError(tp.pgConfig(await token('local', ['10.1.2.0/24'])));
    expect(narrowed.code).toBe('28000');
    expect(narrowed.message).toMatch(/outside the networks in the token's pgwarden_networks claim/);
    const wider = await loginError(tp.pgConfig(await token('bound', ['0.0.0.0/0'])));
    expect(wider.message).toMatch(/role "bound"/);
    // A claim binds a role that has no networks of its own.
    const claimOnly = await loginError(tp.pgConfig(await token('analyst', ['10.0.0.0/8'])));
    expect(claimOnly.detail).toMatch(/^reason=network_denied/);
  });

  it('a malformed claim is refused as an invalid token (fail closed)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const bad = await tp.sign({
      sub: 'alice',
      role: 'analyst',
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      iat: now,
      exp: now + 60,
      pgwarden_networks: ['10.0.0.1/8'],
    });
    const err = await loginError(tp.pgConfig(bad));
    expect(err.code).toBe('28P01');
    expect(err.message).toMatch(/pgwarden_networks/);
    const notList = await tp.sign({
      sub: 'alice',
      role: 'analyst',
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      iat: now,
      exp: now + 60,
      pgwarden_networks: '127.0.0.1/32',
    });
    expect((await loginError(tp.pgConfig(notList))).code).toBe('28P01');
  });

  it('a reload that narrows a role ends its open sessions from addresses now outside', async () => {
    const c = new pg.Client(tp.pgConfig(await token('local')));
    const ended = new Promise<Error>((resolve) => c.on('error', resolve));
    await c.connect();
    const other = new pg.Client(tp.pgConfig(await token('analyst')));
    await other.connect();
    try {
      const original = readFileSync(tp.policyFile, 'utf8');
      writeFileSync(tp.policyFile, original.replace('networks: [127.0.0.1/32]', 'networks: [10.0.0.0/8]'));
      await tp.proxy.reload();
      const err = (await ended) as Error & { code?: string };
      expect(err.code).toBe('57P01');
      expect(err.message).toMatch(/no longer allows its role from this client address/);
      // A role whose networks did not change keeps its session.
      expect((await other.query('SELECT 1 AS one')).rows[0].one).toBe(1);
      writeFileSync(tp.policyFile, original);
      await tp.proxy.reload();
    } finally {
      await c.end().catch(() => {});
      await other.end();
    }
  });
});

describe('network binding on a dual-stack listener (IPv4-mapped addresses)', () => {
  let tp: TestProxy | undefined;
  let v6 = false;
  const token = (role: string) => mintToken(tp!.config.auth, { sub: 'alice', role, agent: 'test-agent' }, 60_000);
  beforeAll(async () => {
    v6 = await ipv6Works();
    if (v6) tp = await startTestProxy({ policy: POLICY, listen: { host: '::' } });
  });
  afterAll(async () => {
    await tp?.close();
  });

  it('an IPv4 client seen as ::ffff:127.0.0.1 matches 127.0.0.1/32 and is refused by 10.0.0.0/8 naming 127.0.0.1', async (ctx) => {
    if (!v6 || !tp) return ctx.skip();
    // The socket reports the mapped form: that is what the check sees.
    expect(await countOrders(tp.pgConfig(await token('local'), { host: '127.0.0.1' }))).toBeGreaterThan(0);
    const err = await loginError(tp.pgConfig(await token('bound'), { host: '127.0.0.1' }));
    expect(err.code).toBe('28000');
    expect(err.message).toMatch(/from address 127\.0\.0\.1:/);
    // An IPv4 network never admits an IPv6 client, nor the other way round.
    expect((await loginError(tp.pgConfig(await token('local'), { host: '::1' }))).message).toMatch(/from address ::1:/);
    expect((await loginError(tp.pgConfig(await token('local6'), { host: '127.0.0.1' }))).message).toMatch(
      /from address 127\.0\.0\.1:/,
    );
    expect(await countOrders(tp.pgConfig(await token('local6'), { host: '::1' }))).toBeGreaterThan(0);
  });
});
