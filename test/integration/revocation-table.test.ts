// Table revocation source against a real Postgres: the documented SQL, NOTIFY-driven reload within 1 s, expiry filter, reconnect after pg_terminate_backend.
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { REVOCATION_TABLE_SQL, TableRevocations } from '../../proxy/revocation/table.ts';
import type { RevocationChange } from '../../proxy/revocation/source.ts';
import { until } from '../helpers/until.ts';
import { identityFactory } from '../helpers/revocation.ts';

const SCHEMA = 'pgwarden_admin';
const TABLE = 'revocations';
const T = `${SCHEMA}.${TABLE}`;

const id = identityFactory({ sub: 'alice', jti: 'jti-table-1' });

let admin: pg.Client;
let sources: TableRevocations[] = [];

async function start(opts: { refreshMs?: number } = {}): Promise<TableRevocations> {
  const info = inject('pg');
  const src = await TableRevocations.open({
    connection: {
      host: info.host,
      port: info.port,
      user: 'pgwarden',
      password: info.upstreamPassword,
      database: 'app',
      application_name: 'pgwarden:revocations',
    },
    schema: SCHEMA,
    table: TABLE,
    // The safety net is off by default here so the tests prove NOTIFY (and reconnect) do the work.
    refreshMs: opts.refreshMs ?? 0,
    minBackoffMs: 50,
    maxBackoffMs: 200,
  });
  sources.push(src);
  return src;
}

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('pg').superUrl });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  await admin.query(REVOCATION_TABLE_SQL(SCHEMA, TABLE));
  // Running it twice must be harmless (documented as idempotent).
  await admin.query(REVOCATION_TABLE_SQL(SCHEMA, TABLE));
  await admin.query(`GRANT USAGE ON SCHEMA ${SCHEMA} TO pgwarden; GRANT SELECT ON ${T} TO pgwarden`);
});

afterEach(async () => {
  for (const s of sources) await s.close();
  sources = [];
  await admin.query(`TRUNCATE ${T}`);
});

afterAll(async () => {
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  await admin.end();
});

describe('TableRevocations', () => {
  it('the table enforces exactly one of jti/sub/agent, and pgwarden may only read it', async () => {
    await expect(admin.query(`INSERT INTO ${T} (jti, sub) VALUES ('a', 'b')`)).rejects.toThrow(/revocations_one_key/);
    await expect(admin.query(`INSERT INTO ${T} (reason) VALUES ('none')`)).rejects.toThrow(/revocations_one_key/);
    const info = inject('pg');
    const c = new pg.Client({
      host: info.host,
      port: info.port,
      user: 'pgwarden',
      password: info.upstreamPassword,
      database: 'app',
    });
    await c.connect();
    try {
      await expect(c.query(`DELETE FROM ${T}`)).rejects.toThrow(/permission denied/);
      await expect(c.query(`INSERT INTO ${T} (jti) VALUES ('x')`)).rejects.toThrow(/permission denied/);
    } finally {
      await c.end();
    }
  });

  it('loads existing rows at open, skipping expired ones', async () => {
    await admin.query(`INSERT INTO ${T} (sub, reason) VALUES ('alice', 'offboarded')`);
    await admin.query(`INSERT INTO ${T} (jti, expires_at) VALUES ('old', now() - interval '1 minute')`);
    const src = await start();
    expect(src.match(id({ jti: undefined }))).toEqual({ reason: 'offboarded' });
    expect(src.match(id({ sub: 'bob', jti: 'old' }))).toBeUndefined();
    expect(src.entries).toHaveLength(1);
  });

  it('an insert fires onChange and match within 1 s; a delete lifts it', async () => {
    const src = await start();
    const changes: RevocationChange[] = [];
    src.onChange((c) => changes.push(c));
    expect(src.match(id())).toBeUndefined();
    const t0 = Date.now();
    await admin.query(
      `INSERT INTO ${T} (jti, reason, expires_at) VALUES ('jti-table-1', 'leaked', now() + interval '1 hour')`,
    );
    await until(() => src.match(id()) !== undefined, 1_000);
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(src.match(id())).toEqual({ reason: 'leaked' });
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({
      source: 'table',
      entries: 1,
      added: [{ jti: 'jti-table-1', reason: 'leaked' }],
      removed: [],
    });
    expect(changes[0]?.added[0]?.expiresAt).toMatch(/^\d{4}-\d\d-\d\dT/);

    await admin.query(`DELETE FROM ${T} WHERE jti = 'jti-table-1'`);
    await until(() => src.match(id()) === undefined, 1_000);
    expect(changes).toHaveLength(2);
  });

  it('reconnects after its backend is terminated and sees changes made meanwhile', async () => {
    const src = await start();
    expect(src.connected).toBe(true);
    const killed = await admin.query(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'pgwarden:revocations' AND usename = 'pgwarden'`,
    );
    expect(killed.rows.length).toBeGreaterThan(0);
    await until(() => !src.connected, 2_000);
    // Committed while the listener is down: no NOTIFY reaches it, the re-read on reconnect must pick it up.
    await admin.query(`INSERT INTO ${T} (agent, reason) VALUES ('rogue-bot', 'runaway')`);
    await until(() => src.connected, 5_000);
    await until(() => src.match(id({ jti: undefined, agent: 'rogue-bot' })) !== undefined, 1_000);
    // And NOTIFY works on the new connection.
    await admin.query(`INSERT INTO ${T} (sub, reason) VALUES ('mallory', 'fired')`);
    await until(() => src.match(id({ jti: undefined, sub: 'mallory' })) !== undefined, 1_000);
  });

  it('the safety-net timer picks up a change whose NOTIFY never came', async () => {
    const src = await start({ refreshMs: 100 });
    // Bypass the trigger: session_replication_role = replica disables ordinary triggers for this session.
    await admin.query('SET session_replication_role = replica');
    try {
      await admin.query(`INSERT INTO ${T} (jti) VALUES ('silent')`);
    } finally {
      await admin.query('SET session_replication_role = DEFAULT');
    }
    await until(() => src.match(id({ jti: 'silent' })) !== undefined, 2_000);
  });

  it('open() fails clearly when the table is missing', async () => {
    const info = inject('pg');
    await expect(
      TableRevocations.open({
        connection: {
          host: info.host,
          port: info.port,
          user: 'pgwarden',
          password: info.upstreamPassword,
          database: 'app',
        },
        schema: SCHEMA,
        table: 'no_such_table',
        refreshMs: 0,
      }),
    ).rejects.toThrow(/does not exist/);
  });
});
