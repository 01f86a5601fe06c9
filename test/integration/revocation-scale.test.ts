// The revocation table at scale against a real Postgres: incremental reads by changed_xid (also across out-of-order
// commits), what waits for a full read, NOTIFY storms coalesced, paged full reads, the migration of an older table,
// and the listener's health metric through pg_terminate_backend and back.
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createMetrics, registerRevocationMetrics } from '../../proxy/metrics.ts';
import {
  REVOCATION_TABLE_SQL,
  revocationListenerNotReady,
  TableRevocations,
  type TableRevocationsOptions,
} from '../../proxy/revocation/table.ts';
import type { RevocationChange } from '../../proxy/revocation/source.ts';
import { startTestProxy } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';
import { identityFactory } from '../helpers/revocation.ts';

// Its own schema and channel: other revocation test files may run at the same time.
const SCHEMA = 'pgwarden_admin_scale';
const TABLE = 'revocations';
const T = `${SCHEMA}.${TABLE}`;
const CHANNEL = 'pgwarden_revocations_scale';
const APP = 'pgwarden:revocations-scale';

const id = identityFactory({});

let admin: pg.Client;
let sources: TableRevocations[] = [];
const extraClients: pg.Client[] = [];

const connection = (): pg.ClientConfig => {
  const info = inject('pg');
  return {
    host: info.host,
    port: info.port,
    user: 'pgwarden',
    password: info.upstreamPassword,
    database: 'app',
    application_name: APP,
  };
};

async function start(opts: Partial<TableRevocationsOptions> = {}): Promise<TableRevocations> {
  const src = await TableRevocations.open({
    connection: connection(),
    schema: SCHEMA,
    table: TABLE,
    channel: CHANNEL,
    // Timers off: the tests prove notifications, reconnects and explicit reloads do the work.
    refreshMs: 0,
    fullRefreshMs: 0,
    minBackoffMs: 50,
    maxBackoffMs: 200,
    ...opts,
  });
  sources.push(src);
  return src;
}

async function client(url = inject('pg').superUrl): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  extraClients.push(c);
  return c;
}

async function createTable(): Promise<void> {
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  await admin.query(REVOCATION_TABLE_SQL(SCHEMA, TABLE, CHANNEL));
  await admin.query(`GRANT USAGE ON SCHEMA ${SCHEMA} TO pgwarden; GRANT SELECT ON ${T} TO pgwarden`);
}

beforeAll(async () => {
  admin = new pg.Client({ connectionString: inject('pg').superUrl });
  await admin.connect();
  await createTable();
});

afterEach(async () => {
  for (const s of sources) await s.close();
  sources = [];
  for (const c of extraClients.splice(0)) await c.end().catch(() => {});
  await admin.query(`TRUNCATE ${T}`);
});

afterAll(async () => {
  await admin.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
  await admin.end();
});

describe('incremental reads', () => {
  it('an insert after start is enforced by an incremental read, without a full re-read', async () => {
    await admin.query(`INSERT INTO ${T} (sub) SELECT 'old-' || g FROM generate_series(1, 100) g`);
    const src = await start();
    expect(src.incremental).toBe(true);
    expect(src.size).toBe(100);
    const before = src.stats;
    const changes: RevocationChange[] = [];
    src.onChange((c) => changes.push(c));
    await admin.query(`INSERT INTO ${T} (jti, reason) VALUES ('fresh', 'leaked')`);
    await until(() => src.match(id({ jti: 'fresh' })) !== undefined, 2_000);
    expect(src.match(id({ jti: 'fresh' }))).toEqual({ reason: 'leaked' });
    // The read is counted once it has committed, just after its rows took effect.
    await until(() => src.stats.incrementalReads > before.incrementalReads, 2_000);
    expect(src.stats.fullReads).toBe(before.fullReads);
    // Only the new row is reported (the 100 old ones were not read again).
    expect(changes).toEqual([
      { source: 'table', entries: 101, added: [{ jti: 'fresh', reason: 'leaked' }], removed: [] },
    ]);
  });

  it('a transaction that commits after a later one was read is still picked up (the watermark is the snapshot xmin)', async () => {
    const src = await start();
    const slow = await client();
    await slow.query('BEGIN');
    await slow.query(`INSERT INTO ${T} (jti) VALUES ('slow')`);
    // A later transaction commits first and is read (and the reader's watermark moves on).
    await admin.query(`INSERT INTO ${T} (jti) VALUES ('quick')`);
    await until(() => src.match(id({ jti: 'quick' })) !== undefined, 2_000);
    const fullReads = src.stats.fullReads;
    await slow.query('COMMIT');
    await until(() => src.match(id({ jti: 'slow' })) !== undefined, 2_000);
    expect(src.stats.fullReads).toBe(fullReads);
  });

  it('an UPDATE is enforced at once for the new value; the old value is lifted by the full read its NOTIFY asks for', async () => {
    await admin.query(`INSERT INTO ${T} (agent, reason) VALUES ('bot-a', 'runaway')`);
    const src = await start({ minFullReadIntervalMs: 60_000 });
    await admin.query(`UPDATE ${T} SET agent = 'bot-b' WHERE agent = 'bot-a'`);
    await until(
      () => src.match(id({ agent: 'bot-b' })) !== undefined && src.match(id({ agent: 'bot-a' })) === undefined,
      2_000,
    );
    expect(src.stats.fullReads).toBe(2);
  });

  it('a row deleted with its NOTIFY suppressed stays enforced until the next full read (SIGHUP, schedule, reconnect)', async () => {
    await admin.query(`INSERT INTO ${T} (sub, reason) VALUES ('carol', 'offboarded')`);
    const src = await start();
    const quiet = await client();
    // session_replication_role = replica: ordinary triggers (the NOTIFY one included) do not fire.
    await quiet.query('SET session_replication_role = replica');
    await quiet.query(`DELETE FROM ${T} WHERE sub = 'carol'`);
    await quiet.query(`NOTIFY ${CHANNEL}, 'INSERT'`);
    await until(() => src.stats.notifications >= 1, 2_000);
    await until(() => src.stats.incrementalReads >= 1, 2_000);
    // An incremental read only adds: the revocation is still in force (the safe direction).
    expect(src.match(id({ sub: 'carol' }))).toEqual({ reason: 'offboarded' });
    await src.reload();
    expect(src.match(id({ sub: 'carol' }))).toBeUndefined();
  });
});

describe('notification storms', () => {
  it('200 NOTIFYs from the upstream role itself cost a handful of reads, and full reads stay within their budget', async () => {
    const src = await start({ minFullReadIntervalMs: 60_000 });
    const before = src.stats;
    // Any role with CONNECT can NOTIFY: here pgwarden's own upstream role, which the sessions pgwarden brokers use.
    const unprivileged = new pg.Client(connection());
    await unprivileged.connect();
    extraClients.push(unprivileged);
    for (let i = 0; i < 200; i++) await unprivileged.query(`SELECT pg_notify($1, $2)`, [CHANNEL, `n${i}`]);
    await until(() => src.stats.notifications - before.notifications >= 200, 5_000);
    await new Promise((r) => setTimeout(r, 300));
    const incremental = src.stats.incrementalReads - before.incrementalReads;
    expect(incremental).toBeGreaterThanOrEqual(1);
    // Reads are spaced 50 ms apart and one runs at a time: far fewer reads than notifications.
    expect(incremental).toBeLessThan(100);
    // Payloads that ask for a full read (as a DELETE's trigger does): two at once, then one per interval.
    for (let i = 0; i < 100; i++) await unprivileged.query(`SELECT pg_notify($1, 'DELETE')`, [CHANNEL]);
    await until(() => src.stats.notifications - before.notifications >= 300, 5_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(src.stats.fullReads - before.fullReads).toBeLessThanOrEqual(2);
    // And the metric counts what was received.
    const metrics = createMetrics({ collectDefault: false });
    registerRevocationMetrics(metrics, () => [src.health()]);
    const counted = /^pgwarden_revocation_notifications_total (\d+)$/m.exec(await metrics.registry.metrics())?.[1];
    expect(Number(counted)).toBe(src.stats.notifications);
    expect(Number(counted)).toBeGreaterThanOrEqual(300);
  });
});

describe('full reads', () => {
  it('pages through a large table while the old index serves, then sweeps what was deleted', async () => {
    await admin.query(
      `INSERT INTO ${T} (jti, reason, expires_at) SELECT 'bulk-' || g, 'bulk', now() + interval '1 day' FROM generate_series(1, 20000) g`,
    );
    await admin.query(`INSERT INTO ${T} (jti, expires_at) VALUES ('expired', now() - interval '1 second')`);
    const src = await start({ pageSize: 1_000 });
    expect(src.size).toBe(20_000);
    expect(src.match(id({ jti: 'bulk-1' }))).toEqual({ reason: 'bulk' });
    expect(src.match(id({ jti: 'bulk-20000' }))).toEqual({ reason: 'bulk' });
    expect(src.match(id({ jti: 'expired' }))).toBeUndefined();
    const changes: RevocationChange[] = [];
    src.onChange((c) => changes.push(c));
    const quiet = await client();
    await quiet.query('SET session_replication_role = replica');
    await quiet.query(`DELETE FROM ${T} WHERE jti IN ('bulk-7', 'bulk-19999')`);
    await src.reload();
    expect(src.size).toBe(19_998);
    expect(src.match(id({ jti: 'bulk-7' }))).toBeUndefined();
    expect(changes).toHaveLength(1);
    expect(changes[0]).toMatchObject({ source: 'table', entries: 19_998, added: [] });
    expect(changes[0]?.removed.map((e) => e.jti).sort()).toEqual(['bulk-19999', 'bulk-7']);
  });
});

describe('closing', () => {
  it('close() during a paced full read ends it at the next page without a warning, and removes nothing', async () => {
    await admin.query(`INSERT INTO ${T} (jti) SELECT 'c-' || g FROM generate_series(1, 3000) g`);
    const logs: string[] = [];
    const src = await start({ pageSize: 10, log: (level, msg) => level !== 'info' && logs.push(msg) });
    // A DELETE payload asks for a (paced) full read: 300 pages, each followed by a pause; still running 50 ms in.
    await admin.query(`NOTIFY ${CHANNEL}, 'DELETE'`);
    await until(() => src.stats.notifications === 1, 2_000);
    await new Promise((r) => setTimeout(r, 50));
    await src.close();
    expect(src.stats.fullReads).toBe(1);
    expect(src.size).toBe(3000);
    expect(logs).toEqual([]);
  });
});

describe('a table created by an older pgwarden', () => {
  it('is read in full on every notification until migrated; REVOCATION_TABLE_SQL migrates it and reads become incremental', async () => {
    const logs: string[] = [];
    await admin.query(`DROP TRIGGER ${TABLE}_stamp ON ${T}; ALTER TABLE ${T} DROP COLUMN changed_xid`);
    try {
      await admin.query(`INSERT INTO ${T} (sub) VALUES ('legacy')`);
      const src = await start({ log: (_l, msg) => logs.push(msg) });
      expect(src.incremental).toBe(false);
      expect(logs.some((m) => /no changed_xid column/.test(m))).toBe(true);
      await admin.query(`INSERT INTO ${T} (sub) VALUES ('legacy-2')`);
      await until(() => src.match(id({ sub: 'legacy-2' })) !== undefined, 2_000);
      expect(src.stats.incrementalReads).toBe(0);
      // The migration: the same idempotent SQL; existing rows keep their ids and are stamped.
      await admin.query(REVOCATION_TABLE_SQL(SCHEMA, TABLE, CHANNEL));
      await src.close();
      const migrated = await start();
      expect(migrated.incremental).toBe(true);
      expect(migrated.size).toBe(2);
      await admin.query(`INSERT INTO ${T} (sub) VALUES ('after-migration')`);
      await until(() => migrated.match(id({ sub: 'after-migration' })) !== undefined, 2_000);
      await until(() => migrated.stats.incrementalReads > 0, 2_000);
      expect(migrated.stats.fullReads).toBe(1);
      // Still SELECT only for pgwarden: the sessions it brokers cannot lift a revocation.
      const c = new pg.Client(connection());
      await c.connect();
      extraClients.push(c);
      await expect(c.query(`DELETE FROM ${T}`)).rejects.toMatchObject({ code: '42501' });
      await expect(c.query(`UPDATE ${T} SET expires_at = now()`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await createTable();
    }
  });
});

describe('a table of its own making', () => {
  it('without id or changed_xid columns (only what the matching needs) is read in full, and works', async () => {
    const own = `${SCHEMA}.bare`;
    await admin.query(`CREATE TABLE ${own} (jti text, sub text, agent text, reason text, expires_at timestamptz)`);
    try {
      await admin.query(`GRANT SELECT ON ${own} TO pgwarden`);
      await admin.query(`INSERT INTO ${own} (sub, reason) VALUES ('bare', 'no id')`);
      const src = await start({ table: 'bare' });
      expect(src.incremental).toBe(false);
      expect(src.match(id({ sub: 'bare' }))).toEqual({ reason: 'no id' });
      // No trigger on this table: the operator NOTIFYs by hand.
      await admin.query(`INSERT INTO ${own} (jti) VALUES ('bare-2')`);
      await admin.query(`NOTIFY ${CHANNEL}`);
      await until(() => src.match(id({ jti: 'bare-2' })) !== undefined, 2_000);
    } finally {
      await admin.query(`DROP TABLE ${own}`);
    }
  });
});

describe('listener health', () => {
  it('pgwarden_revocation_listener_up goes to 0 when the backend is terminated and back to 1 on reconnect', async () => {
    // Reconnects wait 0.5–1 s: long enough to observe the down state and to commit a revocation meanwhile.
    const src = await start({ minBackoffMs: 1_000, maxBackoffMs: 1_000 });
    const metrics = createMetrics({ collectDefault: false });
    const onRead = registerRevocationMetrics(metrics, () => [src.health()]);
    onRead({ source: 'table', kind: 'full', ok: true, ms: 1 });
    const up = async () =>
      /^pgwarden_revocation_listener_up\{source="table"\} (\d)$/m.exec(await metrics.registry.metrics())?.[1];
    expect(await up()).toBe('1');
    expect(revocationListenerNotReady([src], Date.now(), 0)).toBeUndefined();
    const changes: RevocationChange[] = [];
    const killed = await admin.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
      [APP],
    );
    expect(killed.rows.length).toBe(1);
    await until(() => !src.connected, 2_000);
    // The last list stays in force while down; a revocation made meanwhile is told to listeners on reconnect (so
    // live sessions it names are ended), although no NOTIFY reached this listener.
    await admin.query(`INSERT INTO ${T} (agent, reason) VALUES ('while-down', 'runaway')`);
    src.onChange((c) => changes.push(c));
    expect(await up()).toBe('0');
    expect(src.connected).toBe(false);
    await new Promise((r) => setTimeout(r, 20));
    expect(revocationListenerNotReady([src], Date.now(), 10)).toMatch(/revocation table listener down for/);
    expect(revocationListenerNotReady([src], Date.now(), 60_000)).toBeUndefined();
    expect(src.size).toBe(0);
    await until(() => src.connected, 5_000);
    expect(await up()).toBe('1');
    expect(src.match(id({ agent: 'while-down' }))).toEqual({ reason: 'runaway' });
    expect(changes).toEqual([
      { source: 'table', entries: 1, added: [{ agent: 'while-down', reason: 'runaway' }], removed: [] },
    ]);
    expect(revocationListenerNotReady([src], Date.now(), 0)).toBeUndefined();
  });
});

describe('wired into pgwarden', () => {
  it("/metrics exports both sources' state and reads, and /readyz is ready with the listener up", async () => {
    const tp = await startTestProxy({
      config: {
        metrics: { host: '127.0.0.1', port: 0 },
        revocation: { file: undefined, table: { schema: SCHEMA, name: TABLE, channel: CHANNEL, refreshMs: 30_000 } },
      },
    });
    try {
      await admin.query(`INSERT INTO ${T} (sub) VALUES ('wired')`);
      await until(() => tp.proxy.revocations.match(id({ sub: 'wired' })) !== undefined, 2_000);
      const port = tp.proxy.metricsPort;
      expect(port).toBeGreaterThan(0);
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(text).toMatch(/^pgwarden_revocation_listener_up\{source="table"\} 1$/m);
      expect(text).toMatch(/^pgwarden_revocation_entries\{source="table"\} 1$/m);
      // At least one: another test file may terminate every 'pgwarden:revocations' backend, causing a reconnect.
      expect(text).toMatch(/^pgwarden_revocation_reads_total\{source="table",kind="full",result="ok"\} [1-9]\d*$/m);
      expect(text).toMatch(
        /^pgwarden_revocation_reads_total\{source="table",kind="incremental",result="ok"\} [1-9]\d*$/m,
      );
      expect(text).toMatch(/^pgwarden_revocation_notifications_total [1-9]\d*$/m);
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(ready.status).toBe(200);
    } finally {
      await tp.close();
    }
  });
});
