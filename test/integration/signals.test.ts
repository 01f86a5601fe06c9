// pgwarden serve as a child process: a burst of SIGHUPs is one or two reloads and keeps PREPAREd statements; SIGTERM drains and exits in time.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../proxy/config/load.ts';
import type { Config } from '../../proxy/config/types.ts';
import { mintToken } from '../../proxy/auth/mint.ts';
import { SAMPLE_DATABASE } from '../../proxy/embedded/sample.ts';
import { Bytes, startupPacket, typed } from '../helpers/bytes.ts';
import { startForwarder, type ForwardedPair, type Forwarder } from '../helpers/forwarder.ts';
import { DEFAULT_POLICY, superClient, testPg } from '../helpers/proxy.ts';
import { until } from '../helpers/until.ts';

const BIN = path.resolve('bin/pgwarden.js');
const DRAIN_TIMEOUT = 4_000;
const POLICY = DEFAULT_POLICY.replace(
  'statements: [insert, update, delete]',
  'statements: [insert, update, delete, copy_from]',
);

let dir: string;
let fwd: Forwarder;
let child: ChildProcess;
let config: Config;
let stderr = '';
let port = 0;
let metricsPort = 0;
let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
const clients: pg.Client[] = [];
const sockets: net.Socket[] = [];

beforeAll(async () => {
  const info = testPg();
  fwd = await startForwarder({ host: info.host, port: info.port });
  dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-signals-'));
  writeFileSync(path.join(dir, 'upstream-password'), info.upstreamPassword + '\n', { mode: 0o600 });
  writeFileSync(path.join(dir, 'jwt-secret'), 'k'.repeat(48) + '\n', { mode: 0o600 });
  writeFileSync(path.join(dir, 'policy.yaml'), POLICY);
  writeFileSync(path.join(dir, 'revocations.yaml'), 'revoked: []\n');
  const file = path.join(dir, 'pgwarden.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 0 }
upstream: { host: 127.0.0.1, port: ${fwd.port}, database: ${SAMPLE_DATABASE}, user: pgwarden, passwordFile: ./upstream-password }
auth: { issuer: pgwarden-dev, audience: pgwarden, algorithms: [HS256], secretFile: ./jwt-secret, maxTokenLifetime: 15m }
policyFile: ./policy.yaml
metrics: { host: 127.0.0.1, port: 0 }
audit: { destination: ./audit.jsonl }
revocation: { file: ./revocations.yaml }
shutdown: { drainTimeout: ${DRAIN_TIMEOUT / 1000}s }
`,
  );
  const loaded = loadConfig(file);
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.issues));
  config = loaded.config;
  child = spawn('node', [BIN, 'serve', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  await until(() => /"msg":"pgwarden listening"/.test(stderr) || child.exitCode !== null, 30_000, 50);
  const line = stderr.split('\n').find((l) => l.includes('"pgwarden listening"'));
  if (line === undefined) throw new Error(`pgwarden did not start:\n${stderr}`);
  ({ port, metricsPort } = JSON.parse(line) as { port: number; metricsPort: number });
}, 60_000);

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => {});
  for (const s of sockets) s.destroy();
  if (child && child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
    process.kill(child.pid, 'SIGKILL');
    await exited;
  }
  await fwd?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function client(role = 'analyst'): Promise<pg.Client> {
  const token = await mintToken(config.auth, { sub: `sub-${clients.length}`, role }, 300_000);
  const c = new pg.Client({ host: '127.0.0.1', port, user: 'agent', database: SAMPLE_DATABASE, password: token });
  c.on('error', () => {});
  clients.push(c);
  await c.connect();
  return c;
}

function get(p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: metricsPort, path: p, agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

const reloadsLogged = () => stderr.split('\n').filter((l) => l.includes('"msg":"policy reloaded"')).length;

describe('SIGHUP', () => {
  it('50 signals in a burst are at most two reloads; a PREPAREd statement keeps working (no 42P05)', async () => {
    const c = await client();
    await c.query('PREPARE q AS SELECT id FROM orders WHERE id = $1');
    expect((await c.query('EXECUTE q(1)')).rows).toEqual([{ id: 1 }]);
    const before = reloadsLogged();
    for (let i = 0; i < 50; i++) process.kill(child.pid as number, 'SIGHUP');
    await until(() => reloadsLogged() > before, 10_000, 50);
    // Quiet for a while: nothing more was queued behind the burst.
    await new Promise((r) => setTimeout(r, 2_000));
    expect(reloadsLogged() - before).toBeGreaterThanOrEqual(1);
    expect(reloadsLogged() - before).toBeLessThanOrEqual(2);
    expect((await c.query('EXECUTE q(2)')).rows).toEqual([{ id: 2 }]);
    await c.query('DEALLOCATE q');
    await c.query('PREPARE q AS SELECT id FROM orders WHERE id = $1');
    expect((await c.query('EXECUTE q(3)')).rows).toEqual([{ id: 3 }]);
  }, 30_000);
});

/** A raw client that logs in as `writer`, starts COPY FROM STDIN and then sends nothing more. */
async function stuckInCopy(): Promise<{ socket: net.Socket; received: () => Buffer; closed: Promise<void> }> {
  const token = await mintToken(config.auth, { sub: 'copier', role: 'writer' }, 300_000);
  const socket = net.connect({ host: '127.0.0.1', port });
  sockets.push(socket);
  socket.on('error', () => {});
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const received = () => Buffer.concat(chunks);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(
    startupPacket([
      ['user', 'copier'],
      ['database', SAMPLE_DATABASE],
    ]),
  );
  await until(() => received().includes(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3])), 10_000);
  socket.write(typed('p', new Bytes().cstr(token)));
  await until(() => received().includes(Buffer.from('Z\0\0\0\x05I', 'latin1')), 10_000);
  socket.write(typed('Q', new Bytes().cstr('COPY canary (id, note) FROM STDIN')));
  // CopyInResponse: the client is now expected to send rows, and never will.
  await until(() => received().includes(Buffer.from('G\0\0\0', 'latin1')), 10_000);
  return { socket, received, closed };
}

describe('SIGTERM', () => {
  it('flips /readyz first, refuses new statements (57P01), lets a running one finish, and exits 0 within shutdown.drainTimeout', async () => {
    const su = await superClient();
    const ids = [9101];
    try {
      await su.query('DELETE FROM canary WHERE id = ANY($1)', [ids]);
      const idle = await client();
      const idleError = new Promise<Error & { code?: string }>((resolve) => idle.once('error', resolve));
      const writer = await client('writer');
      const copy = await stuckInCopy();
      // A session whose upstream is silently gone while it runs a statement.
      const before = fwd.pairs.length;
      const hung = await client();
      expect(fwd.pairs.length).toBe(before + 1);
      await hung.query('SELECT id FROM orders WHERE id = 1');
      (fwd.pairs[before] as ForwardedPair).blackhole();
      const hungQuery = hung.query('SELECT id FROM orders WHERE id = 2').then(
        () => 'completed',
        (e: Error & { code?: string }) => e.code ?? e.message,
      );
      // Admin listener connections that never go away on their own: a kept-alive one and one mid-request.
      const keepAlive = net.connect({ host: '127.0.0.1', port: metricsPort });
      const slow = net.connect({ host: '127.0.0.1', port: metricsPort });
      sockets.push(keepAlive, slow);
      keepAlive.on('error', () => {});
      slow.on('error', () => {});
      let keepAliveAnswer = '';
      keepAlive.on('data', (d: Buffer) => (keepAliveAnswer += d.toString()));
      keepAlive.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n');
      slow.write('GET /metrics HTTP/1.1\r\nHost: x\r\n');
      await until(() => keepAliveAnswer.includes('ok'), 5_000);
      expect((await get('/readyz')).status).toBe(200);

      // A statement that is running when SIGTERM arrives: an UPDATE waiting for a row lock the test holds (a row lock,
      // so that deciding the statement, which analyses it on the server, does not wait too).
      // Decided once before the lock is taken, so the decision is cached and the statement goes straight upstream.
      const update = 'UPDATE canary SET note = $1 WHERE id = 1';
      await writer.query(update, ['warming the decision cache']);
      await su.query('BEGIN');
      await su.query('SELECT id FROM canary WHERE id = 1 FOR UPDATE');
      const running = writer.query(update, ['ran during the drain']);
      // Queued behind it by the driver: sent when the first completes, which is during the drain.
      const arriving = writer.query(`INSERT INTO canary VALUES (${ids[0]}, 'must not run')`);
      const arrivingError = arriving.then(
        () => undefined,
        (e: Error & { code?: string }) => e,
      );
      const waiting = async () =>
        (
          await su.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE canary SET note = $1%'",
          )
        ).rows[0].n === 1;
      await until(waiting, 15_000, 20).catch(async (err: Error) => {
        const activity = await su.query(
          "SELECT state, wait_event_type, left(query, 60) AS q FROM pg_stat_activity WHERE backend_type = 'client backend'",
        );
        throw new Error(
          `${err.message}: the UPDATE is not waiting for the row lock\n${JSON.stringify(activity.rows)}\n${stderr.slice(-3000)}`,
        );
      });

      const t0 = Date.now();
      process.kill(child.pid as number, 'SIGTERM');
      // Not ready from the first moment; the idle session ends at once.
      await until(async () => (await get('/readyz').catch(() => ({ status: 0, body: '' }))).status === 503, 1_000, 10);
      expect((await get('/readyz')).body).toMatch(/draining/);
      const idleErr = await idleError;
      expect(idleErr.code).toBe('57P01');
      // The running statement may finish within the drain: release the lock.
      await new Promise((r) => setTimeout(r, 300));
      await su.query('COMMIT');
      await running;
      const refused = await arrivingError;
      expect(refused).toBeDefined();
      expect(refused?.code ?? refused?.message).toMatch(/57P01|terminated/);

      const end = await Promise.race([
        exited,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), DRAIN_TIMEOUT + 5_000)),
      ]);
      expect(end, `still running ${DRAIN_TIMEOUT + 5_000} ms after SIGTERM\n${stderr.slice(-2000)}`).toBeDefined();
      expect(end?.code).toBe(0);
      // Hang guard with slack for a loaded machine; the process itself exits by DRAIN_TIMEOUT at the latest.
      expect((end?.at ?? Infinity) - t0).toBeLessThan(DRAIN_TIMEOUT + 1_500);

      // What reached the database: the running UPDATE, not the INSERT that arrived during the drain.
      expect((await su.query('SELECT note FROM canary WHERE id = 1')).rows).toEqual([{ note: 'ran during the drain' }]);
      expect((await su.query('SELECT id FROM canary WHERE id = ANY($1)', [ids])).rows).toEqual([]);
      // The client stuck in COPY was told why and disconnected; so was the one whose upstream hung.
      await copy.closed;
      expect(copy.received().includes(Buffer.from('C57P01\0', 'latin1'))).toBe(true);
      expect(await hungQuery).toBe('57P01');
      await until(() => keepAlive.destroyed || keepAlive.readyState === 'closed', 2_000);
    } finally {
      await su.query('ROLLBACK').catch(() => {});
      await su.query('DELETE FROM canary WHERE id = ANY($1)', [ids]).catch(() => {});
      await su.query("UPDATE canary SET note = 'still here' WHERE id = 1").catch(() => {});
      await su.end();
    }
  }, 60_000);
});

describe('refusing to start', () => {
  /** Runs `pgwarden serve` with `yaml` as its config (in the test directory) and returns how it ended. */
  function serve(yaml: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stderr: string }> {
    const file = path.join(dir, 'refused.yaml');
    writeFileSync(file, yaml);
    return new Promise((resolve) => {
      execFile(
        'node',
        [BIN, 'serve', '--config', file],
        { env: { ...process.env, ...env }, timeout: 30_000 },
        (err, _out, stderr) => {
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr });
        },
      );
    });
  }
  const base = (extra: string) => `listen: { host: 127.0.0.1, port: 0 }
auth: { issuer: pgwarden-dev, audience: pgwarden, algorithms: [HS256], secretFile: ./jwt-secret, maxTokenLifetime: 15m }
policyFile: ./policy.yaml
audit: { destination: ./audit-refused.jsonl }
${extra}`;

  it('a configured revocation file that is missing stops the process: revocations never vanish on restart', async () => {
    const r = await serve(
      base(`upstream: { host: 127.0.0.1, port: ${fwd.port}, database: ${SAMPLE_DATABASE}, user: pgwarden, passwordFile: ./upstream-password }
revocation: { file: ./gone.yaml }
`),
    );
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/gone\.yaml/);
    expect(r.stderr).toMatch(/does not exist/);
  }, 40_000);

  it('a password placed in upstream.passwordEnv is not echoed in the error', async () => {
    const pasted = 'S3cr3t-Passw0rd!';
    const r = await serve(
      base(
        `upstream: { host: 127.0.0.1, port: ${fwd.port}, database: ${SAMPLE_DATABASE}, user: pgwarden, passwordEnv: "${pasted}" }\n`,
      ),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/upstream\.passwordEnv/);
    expect(r.stderr).not.toContain(pasted);
    const nameShaped = 'Tr0ub4dorAndThree';
    const r2 = await serve(
      base(
        `upstream: { host: 127.0.0.1, port: ${fwd.port}, database: ${SAMPLE_DATABASE}, user: pgwarden, passwordEnv: ${nameShaped} }\n`,
      ),
    );
    expect(r2.code).toBe(1);
    expect(r2.stderr).not.toContain(nameShaped);
  }, 40_000);
});
