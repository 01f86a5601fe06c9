// Locating the external programs the benchmarks drive (psql, pgbench, pgbouncer) and describing the machine.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A PostgreSQL client program: PGWARDEN_PG_CLIENT_BIN, the server's binDir (the embedded build ships none), the Debian
 * layout, then PATH. Undefined when absent.
 */
export function findClientBinary(name: 'psql' | 'pgbench', binDir?: string): string | undefined {
  const dirs = [
    process.env.PGWARDEN_PG_CLIENT_BIN,
    binDir,
    '/usr/bin',
    '/usr/lib/postgresql/15/bin',
    '/usr/lib/postgresql/16/bin',
    '/usr/lib/postgresql/17/bin',
  ];
  for (const d of dirs) if (d && existsSync(path.join(d, name))) return path.join(d, name);
  return onPath(name);
}

export function onPath(name: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(':'))
    if (d && existsSync(path.join(d, name))) return path.join(d, name);
  for (const d of ['/usr/sbin', '/usr/local/sbin', '/sbin'])
    if (existsSync(path.join(d, name))) return path.join(d, name);
  return undefined;
}

export function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  return ((r.stdout || r.stderr || '').trim().split('\n')[0] ?? '').trim();
}

export interface MachineInfo {
  nproc: number;
  cpu: string;
  memory: string;
  kernel: string;
  node: string;
}

export function machineInfo(): MachineInfo {
  const free = spawnSync('free', ['-h'], { encoding: 'utf8' }).stdout ?? '';
  const mem =
    free
      .split('\n')
      .find((l) => l.startsWith('Mem:'))
      ?.trim()
      .split(/\s+/) ?? [];
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    memory:
      mem.length > 3
        ? `${mem[1]} total, ${mem[3]} free, ${mem[6] ?? '?'} available (free -h)`
        : `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
  };
}

export interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs a program to completion without blocking the event loop (a server whose log we read through a pipe must keep
 * being drained, or its backends block on write). Killed by pid with SIGKILL after `timeoutMs`.
 */
export async function run(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
): Promise<RunResult> {
  return await new Promise((resolve) => {
    const child = track(
      spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] }),
    );
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ status: null, signal: null, stdout: '', stderr: String(e), timedOut });
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({
        status,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      });
    });
  });
}

/** True when the module at `metaUrl` is the script node was started with. */
export function isMain(metaUrl: string): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  return path.resolve(arg) === fileURLToPath(metaUrl);
}

/**
 * A run that is interrupted still ends what it started: on SIGINT/SIGTERM, `cleanup` then exit 130/143; at `limitMs`,
 * `cleanup` then exit 124. Returns the time-limit timer (unref'd), to clear when the run finishes by itself.
 */
export function guardRun(limitMs: number, cleanup: () => Promise<void>, log: (line: string) => void): NodeJS.Timeout {
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: stopping everything this run started`);
    void cleanup().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const watchdog = setTimeout(() => {
    log(`time limit of ${limitMs / 60_000} min reached: stopping`);
    void cleanup().finally(() => process.exit(124));
  }, limitMs);
  watchdog.unref();
  return watchdog;
}

// ----------------------------------------------------------------------------------------------------------------
// Every child process the benchmarks start is tracked here, so it can be ended by its pid on exit, error or signal.

const live = new Set<ChildProcess>();

/** Registers a child we started; it is forgotten when it exits. */
export function track<T extends ChildProcess>(child: T): T {
  live.add(child);
  child.once('exit', () => live.delete(child));
  child.once('error', () => live.delete(child));
  return child;
}

/** Children we started that are still running. */
export function startedChildren(): { pid: number; cmd: string }[] {
  return [...live]
    .filter((c) => c.pid !== undefined && c.exitCode === null && c.signalCode === null)
    .map((c) => ({ pid: c.pid as number, cmd: c.spawnfile }));
}

/** Ends every child we started, by pid: SIGTERM, then SIGKILL for those still alive after `graceMs`. */
export async function endStartedChildren(graceMs = 3_000): Promise<void> {
  const alive = () => [...live].filter((c) => c.pid !== undefined && c.exitCode === null && c.signalCode === null);
  const first = alive();
  if (first.length === 0) return;
  for (const c of first) {
    try {
      process.kill(c.pid as number, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + graceMs;
  while (alive().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const c of alive()) {
    try {
      process.kill(c.pid as number, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** utime+stime of a process in seconds (from /proc/<pid>/stat), or NaN. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(rest[11]) + Number(rest[12]);
    return ticks / clockTicks();
  } catch {
    return NaN;
  }
}

let ticksPerSecond: number | undefined;
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(r.stdout?.trim());
    ticksPerSecond = Number.isFinite(n) && n > 0 ? n : 100;
  }
  return ticksPerSecond;
}

/** A field of /proc/<pid>/status in KiB (VmRSS, VmHWM), or NaN. */
export function procStatusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** The soft and hard open-file limits of this process (from /proc/self/limits). */
export function nofileLimit(): { soft: number; hard: number } {
  try {
    const line =
      readFileSync('/proc/self/limits', 'utf8')
        .split('\n')
        .find((l) => l.startsWith('Max open files')) ?? '';
    const [soft, hard] = line.replace('Max open files', '').trim().split(/\s+/).map(Number);
    return { soft: soft ?? NaN, hard: hard ?? NaN };
  } catch {
    return { soft: NaN, hard: NaN };
  }
}
