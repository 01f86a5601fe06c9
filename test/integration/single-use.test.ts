// Single-use tokens against a real PostgreSQL: one login per token, on any replica (shared consumed-jti table), concurrent logins with one winner, fail closed when the use cannot be recorded.
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { freePort } from '../../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER } from '../../proxy/embedded/sample.ts';
import { mintToken } from '../../proxy/auth/mint.ts';
import { REVOCATION_TABLE_SQL } from '../../proxy/revocation/table.ts';
import { singleUseCheck, TableJtiConsumer } from '../../proxy/revocation/consumed.ts';
import { DEFAULT_POLICY, loginError, startTestProxy, superClient, testPg, type TestProxy } from '../helpers/proxy.ts';
import { parsePolicyText } from '../../policy/load.ts';

const SCHEMA = 'pgwarden_single_use';
const FN = `${SCHEMA}.revocations_consume(bytea, text, timestamptz, text)`;

const singleUse = (tp: TestProxy, claims: { sub?: string; jti?: string } = {}) =>
  mintToken(
    tp.config.auth,
    { sub: 'alice', role: 'analyst', agent: 'task-agent', singleUse: true, ...claims },
    120_000,
  );

/** Logs in, runs one statement, logs out: the login is only counted as won if a statement really ran upstream. */
async function use(tp: TestProxy, token: string): Promise<number> {
  const c = new pg.Client(tp.pgConfig(token));
  await c.connect();
  try {
    return (await c.query<{ n: number }>('SELECT 1 AS n')).rows[0]!.n;
  } finally {
    await c.end();
  }
}

async function consumedRow(jti: string): Promise<{ jti: string; expires_at: Date; consumed_by: string } | undefined> {
  const su = await superClient();
  try {
    return (
      await su.query(`SELECT jti, expires_at, consumed_by FROM ${SCHEMA}.revocations_consumed WHERE jti = $1`, [jti])
    ).rows[0];
  } finally {
    await su.end();
  }
}

describe('single-use tokens on two replicas sharing the revocation table', () => {
  let a: TestProxy;
  let b: TestProxy;

  beforeAll(async () => {
    const su = await superClient();
    await su.query(REVOCATION_TABLE_SQL(SCHEMA, 'revocations', 'pgwarden_single_use_test'));
    await su.query(
      `GRANT USAGE ON SCHEMA ${SCHEMA} TO pgwarden; GRANT SELECT ON ${SCHEMA}.revocations TO pgwarden; GRANT EXECUTE ON FUNCTION ${FN} TO pgwarden`,
    );
    await su.end();
    const [pa, pb] = [await freePort(), await freePort()];
    const revocation = {
      file: undefined,
      table: { schema: SCHEMA, name: 'revocations', channel: 'pgwarden_single_use_test', refreshMs: 30_000 },
    };
    a = await startTestProxy({
      listen: { port: pa },
      config: { cluster: { replicaId: 1, peers: [{ id: 2, host: '127.0.0.1', port: pb }] }, revocation },
    });
    b = await startTestProxy({
      secret: a.secret,
      listen: { port: pb },
      config: { cluster: { replicaId: 2, peers: [{ id: 1, host: '127.0.0.1', port: pa }] }, revocation },
    });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('logs in once; the second login is refused with credential_used on the same and on the other replica', async () => {
    const jti = randomUUID();
    const token = await singleUse(a, { jti });
    expect(await use(a, token)).toBe(1);
    const row = await consumedRow(jti);
    expect(row?.consumed_by).toMatch(/^replica 1 on /);
    // The row lives as long as the token: its expiry is the token's exp.
    const exp = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).exp as number;
    expect(row!.expires_at.getTime()).toBe(exp * 1000);
    for (const tp of [a, b]) {
      const err = await loginError(tp.pgConfig(token));
      expect(err.code).toBe('28000');
      expect(err.detail).toMatch(/^reason=credential_used/);
      expect(err.message).toBe(
        'single-use token has already been used; hint: Request a new single-use token for each connection and reconnect with it as the password (reason=credential_used)',
      );
    }
    // An ordinary token logs in as often as it likes beside it.
    const ordinary = await a.token();
    expect(await use(a, ordinary)).toBe(1);
    expect(await use(b, ordinary)).toBe(1);
  });

  it('audits the consuming login (singleUse: consumed) and each refusal (login_refused, credential_used)', async () => {
    const jti = randomUUID();
    const token = await singleUse(a, { jti });
    await use(a, token);
    await loginError(b.pgConfig(token));
    // The trail is written asynchronously: wait until both events have reached the files.
    const events = (tp: TestProxy, event: string, id: string) =>
      tp
        .auditLines()
        .map((l) => JSON.parse(l))
        .filter((e) => e.event === event && e.jti === id);
    await expect.poll(() => events(a, 'session_start', jti).length + events(b, 'login_refused', jti).length).toBe(2);
    const starts = a
      .auditLines()
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === 'session_start' && e.jti === jti);
    expect(starts).toHaveLength(1);
    expect(starts[0].singleUse).toBe('consumed');
    const refused = b
      .auditLines()
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === 'login_refused' && e.jti === jti);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ reason: 'single_use_used', refusal: 'credential_used', sqlstate: '28000' });
    // An ordinary login records no single use.
    await use(a, await a.token({ jti: `plain-${jti}` }));
    await expect.poll(() => events(a, 'session_start', `plain-${jti}`).length).toBe(1);
    const plain = a
      .auditLines()
      .map((l) => JSON.parse(l))
      .find((e) => e.event === 'session_start' && e.jti === `plain-${jti}`);
    expect(plain).toBeDefined();
    expect(plain.singleUse).toBeUndefined();
  });

  it('concurrent logins with one token on both replicas: exactly one wins, every other is refused with credential_used', async () => {
    const token = await singleUse(a);
    const attempts = Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b)).map((tp) =>
      use(tp, token).then(
        () => 'won' as const,
        (err: { code?: string; detail?: string }) => `${err.code} ${err.detail?.split('\n')[0]}`,
      ),
    );
    const outcomes = await Promise.all(attempts);
    expect(outcomes.filter((o) => o === 'won')).toHaveLength(1);
    expect(outcomes.filter((o) => o !== 'won')).toEqual(Array(9).fill('28000 reason=credential_used'));
  });

  it('consumes any jti a token can carry: 20,000 characters, NUL, jtis that differ only in case', async () => {
    // End to end: jtis differing only in case are different tokens.
    for (const jti of [`Case-${randomUUID()}`]) {
      const upper = await singleUse(a, { jti });
      const lower = await singleUse(a, { jti: jti.toLowerCase() });
      expect(await use(a, upper)).toBe(1);
      expect(await use(b, lower)).toBe(1);
      expect((await loginError(b.pgConfig(upper))).detail).toMatch(/^reason=credential_used/);
    }
    // The key is the jti's digest: lengths a btree cannot index and NULs text cannot hold are consumed the same way.
    const info = testPg();
    const consumer = new TableJtiConsumer({
      connection: {
        host: info.host,
        port: info.port,
        database: SAMPLE_DATABASE,
        user: SAMPLE_UPSTREAM_USER,
        password: info.upstreamPassword,
      },
      schema: SCHEMA,
      table: 'revocations',
    });
    try {
      const exp = Math.floor(Date.now() / 1000) + 60;
      const long = `${randomUUID()}${'j'.repeat(20_000)}`;
      for (const jti of [long, `nul\u0000${randomUUID()}`]) {
        expect(await consumer.consume(jti, exp, 'test')).toBe('consumed');
        expect(await consumer.consume(jti, exp, 'another login')).toBe('used');
        // The same login asking again (its answer lost with the connection) finds its own row.
        expect(await consumer.consume(jti, exp, 'test')).toBe('consumed');
      }
      // Stored for operators in a bounded form.
      expect((await consumedRow(`${long.slice(0, 255)}…`))?.consumed_by).toBe('test');
    } finally {
      await consumer.close();
    }
  });

  it('refuses a token marked single-use without a jti, or marked with anything but a boolean', async () => {
    const now = Math.floor(Date.now() / 1000);
    const base = { sub: 'alice', role: 'analyst', iss: 'pgwarden-test', aud: 'pgwarden', iat: now, exp: now + 120 };
    const noJti = await a.sign({ ...base, pgwarden_single_use: true });
    const e1 = await loginError(a.pgConfig(noJti));
    expect(e1.code).toBe('28P01');
    expect(e1.detail).toMatch(/^reason=credential_invalid/);
    expect(e1.message).toMatch(/needs a "jti" claim/);
    for (const value of ['true', 1, { once: true }]) {
      const odd = await a.sign({ ...base, jti: randomUUID(), pgwarden_single_use: value });
      const e = await loginError(a.pgConfig(odd));
      expect(e.code).toBe('28P01');
      expect(e.message).toMatch(/must be true or false/);
    }
    // false is an ordinary token: it logs in twice.
    const reusable = await a.sign({ ...base, jti: randomUUID(), pgwarden_single_use: false });
    expect(await use(a, reusable)).toBe(1);
    expect(await use(b, reusable)).toBe(1);
  });

  it('refuses the login (57P03, unavailable) when the use cannot be recorded, without consuming the token', async () => {
    const jti = randomUUID();
    const token = await singleUse(a, { jti });
    const su = await superClient();
    try {
      await su.query(`REVOKE EXECUTE ON FUNCTION ${FN} FROM pgwarden`);
      const err = await loginError(a.pgConfig(token));
      expect(err.code).toBe('57P03');
      expect(err.detail).toMatch(/^reason=unavailable/);
      expect(await consumedRow(jti)).toBeUndefined();
      const refused = () =>
        a
          .auditLines()
          .map((l) => JSON.parse(l))
          .find((e) => e.event === 'login_refused' && e.jti === jti);
      await expect.poll(refused).toBeDefined();
      expect(refused()).toMatchObject({ reason: 'single_use_unavailable', refusal: 'unavailable', sqlstate: '57P03' });
    } finally {
      await su.query(`GRANT EXECUTE ON FUNCTION ${FN} TO pgwarden`);
      await su.end();
    }
    // Not consumed by the refused attempt: it logs in now, once.
    expect(await use(a, token)).toBe(1);
    expect((await loginError(b.pgConfig(token))).detail).toMatch(/^reason=credential_used/);
  });

  it('a consumer connection terminated by the server is replaced: the next single-use login succeeds', async () => {
    await use(a, await singleUse(a));
    const su = await superClient();
    try {
      const killed = await su.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgwarden:single-use'`,
      );
      expect(killed.rowCount).toBeGreaterThan(0);
    } finally {
      await su.end();
    }
    const token = await singleUse(a);
    expect(await use(a, token)).toBe(1);
    expect((await loginError(a.pgConfig(token))).detail).toMatch(/^reason=credential_used/);
  });

  it('holds one counted upstream connection: replaced after a loss, given back at close', async () => {
    const info = testPg();
    let held = 0;
    const consumer = new TableJtiConsumer({
      connection: {
        host: info.host,
        port: info.port,
        database: SAMPLE_DATABASE,
        user: SAMPLE_UPSTREAM_USER,
        password: info.upstreamPassword,
        application_name: 'ignored',
      },
      schema: SCHEMA,
      table: 'revocations',
      acquire: () => {
        held++;
        let released = false;
        return () => {
          if (!released) held--;
          released = true;
        };
      },
    });
    const exp = Math.floor(Date.now() / 1000) + 60;
    try {
      expect(await consumer.consume(randomUUID(), exp, 'cap-test')).toBe('consumed');
      expect(held).toBe(1);
      const su = await superClient();
      await su.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgwarden:single-use' AND pid IN (SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend')`,
      );
      await su.end();
      // Whether the loss was noticed before this call or by it, a consume after it runs on a new connection.
      const again = await consumer
        .consume(randomUUID(), exp, 'cap-test')
        .catch(() => consumer.consume(randomUUID(), exp, 'cap-test'));
      expect(again).toBe('consumed');
      expect(held).toBe(1);
    } finally {
      await consumer.close();
    }
    expect(held).toBe(0);
  });

  it('a database that cannot be reached refuses the login: the consumer throws and the check answers unavailable', async () => {
    const port = await freePort();
    const consumer = new TableJtiConsumer({
      connection: { host: '127.0.0.1', port, user: 'nobody', database: 'none', connectionTimeoutMillis: 2_000 },
      schema: SCHEMA,
      table: 'revocations',
    });
    try {
      const check = singleUseCheck(consumer, { by: 'test', log: () => {} });
      const refused = await check({
        sub: 's',
        role: 'analyst',
        agent: undefined,
        tenant: undefined,
        jti: randomUUID(),
        iss: 'x',
        exp: Math.floor(Date.now() / 1000) + 60,
        iat: 0,
        nbf: undefined,
        singleUse: true,
      });
      expect(refused?.reason).toBe('single_use_unavailable');
      expect(refused?.error.sqlstate).toBe('57P03');
      expect(refused?.error.reason).toBe('unavailable');
    } finally {
      await consumer.close();
    }
  });

  it('the upstream user pgwarden (which brokered sessions also use) cannot delete or insert consumptions', async () => {
    const info = testPg();
    const c = new pg.Client({
      host: info.host,
      port: info.port,
      database: SAMPLE_DATABASE,
      user: SAMPLE_UPSTREAM_USER,
      password: info.upstreamPassword,
    });
    await c.connect();
    try {
      await expect(c.query(`DELETE FROM ${SCHEMA}.revocations_consumed`)).rejects.toMatchObject({ code: '42501' });
      await expect(
        c.query(`INSERT INTO ${SCHEMA}.revocations_consumed (jti, expires_at) VALUES ('x', now())`),
      ).rejects.toMatchObject({ code: '42501' });
      await expect(c.query(`TRUNCATE ${SCHEMA}.revocations_consumed`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await c.end();
    }
  });
});

describe('single-use tokens without the shared table', () => {
  it('one replica: consumed in memory, the second login refused with credential_used', async () => {
    const tp = await startTestProxy();
    try {
      const token = await singleUse(tp);
      expect(await use(tp, token)).toBe(1);
      const err = await loginError(tp.pgConfig(token));
      expect(err.code).toBe('28000');
      expect(err.detail).toMatch(/^reason=credential_used/);
      // In one process the check-and-set is synchronous: concurrent logins still have one winner.
      const fresh = await singleUse(tp);
      const outcomes = await Promise.all(
        Array.from({ length: 6 }, async () => {
          try {
            await use(tp, fresh);
            return 'won';
          } catch (e) {
            return (e as { code?: string }).code;
          }
        }),
      );
      expect(outcomes.filter((o) => o === 'won')).toHaveLength(1);
      expect(outcomes.filter((o) => o === '28000')).toHaveLength(5);
    } finally {
      await tp.close();
    }
  });

  it('a replica with peers but no table refuses every single-use token (credential_rejected) and accepts ordinary ones', async () => {
    const peer = await freePort();
    const tp = await startTestProxy({
      config: { cluster: { replicaId: 3, peers: [{ id: 4, host: '127.0.0.1', port: peer }] } },
    });
    try {
      const err = await loginError(tp.pgConfig(await singleUse(tp)));
      expect(err.code).toBe('28000');
      expect(err.detail).toMatch(/^reason=credential_rejected/);
      expect(err.message).toMatch(/single-use tokens are not accepted/);
      expect(await use(tp, await tp.token())).toBe(1);
    } finally {
      await tp.close();
    }
  });
});

describe('a role that requires single-use tokens (singleUse: required)', () => {
  const policy = `${DEFAULT_POLICY}  task:\n    readOnly: true\n    relations: [public.orders]\n    singleUse: required\n`;

  it('refuses a reusable token for the role at login (credential_rejected) without consuming anything, and accepts a single-use one once', async () => {
    const tp = await startTestProxy({ policy });
    try {
      const reusable = await mintToken(tp.config.auth, { sub: 'alice', role: 'task' }, 60_000);
      const err = await loginError(tp.pgConfig(reusable));
      expect(err.code).toBe('28000');
      expect(err.detail).toMatch(/^reason=credential_rejected/);
      expect(err.message).toMatch(/role "task" accepts only single-use tokens/);
      const once = await mintToken(tp.config.auth, { sub: 'alice', role: 'task', singleUse: true }, 60_000);
      expect(await use(tp, once)).toBe(1);
      expect((await loginError(tp.pgConfig(once))).detail).toMatch(/^reason=credential_used/);
      // Other roles are unaffected.
      expect(await use(tp, await tp.token())).toBe(1);
    } finally {
      await tp.close();
    }
  });

  it('a login refused by an earlier check (client network) does not use the token up', async () => {
    const fenced = `${DEFAULT_POLICY}  task:\n    readOnly: true\n    relations: [public.orders]\n    singleUse: required\n    networks: [10.0.0.0/8]\n`;
    const tp = await startTestProxy({ policy: fenced });
    try {
      const once = await mintToken(tp.config.auth, { sub: 'alice', role: 'task', singleUse: true }, 60_000);
      expect((await loginError(tp.pgConfig(once))).detail).toMatch(/^reason=network_denied/);
      writeFileSync(tp.policyFile, policy);
      await tp.proxy.reload();
      expect(await use(tp, once)).toBe(1);
      expect((await loginError(tp.pgConfig(once))).detail).toMatch(/^reason=credential_used/);
    } finally {
      await tp.close();
    }
  });

  it('validates the key: only allowed or required', () => {
    const bad = parsePolicyText(`roles:\n  r:\n    relations: [public.orders]\n    singleUse: yes\n`, 'yaml', 'test');
    expect(bad.ok).toBe(false);
    const good = parsePolicyText(
      `roles:\n  r:\n    relations: [public.orders]\n    singleUse: allowed\n`,
      'yaml',
      'test',
    );
    expect(good.ok).toBe(true);
  });
});
