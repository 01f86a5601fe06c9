// Starts PgBouncer (session pooling) in front of the benchmark PostgreSQL, with its own ini and userlist in a temp dir.
import { spawn, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from '../../proxy/embedded/postgres.ts';
import { firstLine, onPath, track } from './tools.ts';

export interface PgBouncer {
  port: number;
  pid: number;
  version: string;
  iniText: string;
  stop(): Promise<void>;
}

/** PGWARDEN_PGBOUNCER: a path to the binary, or `none` to run without PgBouncer; otherwise PATH and the sbin dirs. */
export function findPgbouncer(): string | undefined {
  const env = process.env.PGWARDEN_PGBOUNCER;
  if (env === 'none') return undefined;
  if (env) return existsSync(env) ? env : undefined;
  return onPath('pgbouncer');
}

export function pgbouncerVersion(bin: string): string {
  return firstLine(bin, ['--version']);
}

/** PgBouncer refuses to run as root; as root we run it as the `postgres` user startPostgres already uses. */
function runAs(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  const u = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (u.status !== 0 || g.status !== 0) throw new Error('running as root and no postgres user to run pgbouncer as');
  return { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) };
}

export async function startPgbouncer(opts: {
  bin: string;
  pgHost: string;
  pgPort: number;
  database: string;
  user: string;
  password: string;
  poolSize: number;
  maxClientConn: number;
}): Promise<PgBouncer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-bench-pgbouncer-'));
  const as = runAs();
  const port = await freePort();
  const q = (s: string) => `"${s.replace(/"/g, '""')}"`;
  // Plaintext password in the userlist: PgBouncer then does SCRAM both with the client and with the server.
  writeFileSync(path.join(dir, 'userlist.txt'), `${q(opts.user)} ${q(opts.password)}\n`, { mode: 0o600 });
  const iniText = [
    '[databases]',
    `${opts.database} = host=${opts.pgHost} port=${opts.pgPort} dbname=${opts.database}`,
    '',
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    `unix_socket_dir = ${dir}`,
    'auth_type = scram-sha-256',
    `auth_file = ${path.join(dir, 'userlist.txt')}`,
    'pool_mode = session',
    `default_pool_size = ${opts.poolSize}`,
    `max_client_conn = ${opts.maxClientConn}`,
    `max_db_connections = ${opts.poolSize}`,
    'ignore_startup_parameters = extra_float_digits',
    `logfile = ${path.join(dir, 'pgbouncer.log')}`,
    'log_connections = 0',
    'log_disconnections = 0',
    'log_pooler_errors = 1',
    'server_login_retry = 1',
    '',
  ].join('\n');
  writeFileSync(path.join(dir, 'pgbouncer.ini'), iniText);
  if (as) for (const f of ['', 'userlist.txt', 'pgbouncer.ini']) chownSync(path.join(dir, f), as.uid, as.gid);
  const child = track(
    spawn(opts.bin, [path.join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'pipe', 'pipe'], ...(as ?? {}) }),
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  child.stdout?.on('data', () => {});
  let exited = false;
  child.once('exit', () => (exited = true));
  const stop = async () => {
    if (!exited && child.pid !== undefined) {
      const done = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGINT'); // immediate shutdown
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await done;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`pgbouncer exited during startup: ${stderr.trim()}`);
    }
    if (await canLogin(port, opts)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`pgbouncer did not accept a login within 15 s: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { port, pid: child.pid ?? -1, version: pgbouncerVersion(opts.bin), iniText, stop };
}

async function canLogin(port: number, o: { user: string; password: string; database: string }): Promise<boolean> {
  const open = await new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (!open) return false;
  const c = new pg.Client({ host: '127.0.0.1', port, user: o.user, password: o.password, database: o.database });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => {});
  }
}
