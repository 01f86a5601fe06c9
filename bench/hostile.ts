// Hostile statements vs. everybody else: while 4 sessions send distinct ~1 MiB hostile statements back to back, another session's `SELECT 1` latency and pgwarden's RSS.
//
//   node --import tsx bench/hostile.ts [--seconds 20] [--baseline-seconds 3] [--settle-seconds 10] [--sessions 4] [--limit-minutes 4]
//                                     [--bytes N] [--malloc-arena-max 2] [--profile [--profile-dir D]]
//                                     [--shape in-list|values|array [--elements 20000]]
//
// Shapes (issue 12): nested parentheses, a long SELECT list, a `1+1+…` operator chain, a huge string literal, many
// statements in one Query, and an extended-protocol Parse of a long operator chain. Every statement differs from
// the ones before it (a counter inside), so no cache answers. Figures: SELECT 1 p50/p99/max before and during the
// load, pgwarden's VmRSS before (after gc), at its peak (sampled every 50 ms) and after the load (settle + gc), and
// how many hostile statements were refused, by SQLSTATE. With --shape, every hostile statement is instead an *allowed*
// long one of that shape (an IN list, a VALUES list or an ARRAY[...] constant of --elements integers on a table the
// role may read): small texts whose analysed trees are big (20,000 elements: ~110 KiB of text, ~3 MB of tree). Loopback only; Postgres and pgwarden are started here and
// stopped by pid at the end, on error, on SIGINT/SIGTERM, and when the time limit is reached.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { startPostgres, type EmbeddedPostgres } from '../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER, sampleSchemaSql } from '../proxy/embedded/sample.ts';
import { mintToken } from '../proxy/auth/mint.ts';
import { BENCH_POLICY_YAML, BENCH_ROLE, PGBENCH_DDL } from './lib/policy.ts';
import { peakRssSampler, settledRssKb, startPgwardenProcess, type PgwardenProcess } from './lib/pgwarden-process.ts';
import { percentile } from './lib/timing.ts';
import { endStartedChildren, guardRun, machineInfo, procStatusKb } from './lib/tools.ts';

interface Options {
  seconds: number;
  baselineSeconds: number;
  settleSeconds: number;
  sessions: number;
  limitMs: number;
  /** Size of each hostile statement's text, in bytes (ASCII). */
  bytes: number;
  /** Write V8 CPU profiles of pgwarden (and its worker threads) into this directory. */
  profileDir: string | undefined;
  /** MALLOC_ARENA_MAX for pgwarden (as the Docker image sets it), or undefined for glibc's default. */
  arenaMax: string | undefined;
  /** Send only this allowed long shape (see LONG_SHAPES) instead of cycling through the hostile ones. */
  longShape: LongShape | undefined;
  /** Elements of each long statement's list. */
  elements: number;
}

function parseArgs(argv: string[]): Options {
  const val = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  return {
    seconds: Number(val('--seconds') ?? 20),
    baselineSeconds: Number(val('--baseline-seconds') ?? 3),
    settleSeconds: Number(val('--settle-seconds') ?? 10),
    sessions: Number(val('--sessions') ?? 4),
    limitMs: Number(val('--limit-minutes') ?? 4) * 60_000,
    // Under limits.maxMessageSize (1 MiB, which counts the message header too) and the parser's 1 MiB cap.
    bytes: Number(val('--bytes') ?? 1024 * 1024 - 64),
    profileDir: argv.includes('--profile') ? path.resolve(val('--profile-dir') ?? 'bench/profiles') : undefined,
    arenaMax: val('--malloc-arena-max'),
    longShape: longShape(val('--shape')),
    elements: Number(val('--elements') ?? 20_000),
  };
}

const log = (s: string) => console.error(`[hostile ${new Date().toISOString().slice(11, 19)}] ${s}`);

/** Repeats `unit` after `head` until the text is about `bytes` long, then `tail`. */
function fill(head: string, unit: string, tail: string, bytes: number): string {
  const n = Math.max(0, Math.floor((bytes - head.length - tail.length) / unit.length));
  return head + unit.repeat(n) + tail;
}

type HostileShape =
  | 'nested_parens'
  | 'select_list'
  | 'operator_chain'
  | 'string_literal'
  | 'many_statements'
  | 'parse_chain';
const HOSTILE_SHAPES: readonly HostileShape[] = [
  'nested_parens',
  'select_list',
  'operator_chain',
  'string_literal',
  'many_statements',
  'parse_chain',
];

/** Allowed statements with big analysed trees (issue 12 item 1: the tree is read and judged on the event loop). */
const LONG_SHAPES = { 'in-list': 'in_list', values: 'values_list', array: 'array_constant' } as const;
type LongShape = (typeof LONG_SHAPES)[keyof typeof LONG_SHAPES];
type Shape = HostileShape | LongShape;

function longShape(arg: string | undefined): LongShape | undefined {
  if (arg === undefined) return undefined;
  const s = (LONG_SHAPES as Record<string, LongShape>)[arg];
  if (s === undefined) throw new Error(`--shape ${arg}: expected one of ${Object.keys(LONG_SHAPES).join(', ')}`);
  return s;
}

/** The `seq`-th allowed long statement of a shape with `n` elements: distinct text every time (the first element). */
function longStatement(shape: LongShape, seq: number, n: number): string {
  const ints = `${seq + 1_000_000}${',1'.repeat(Math.max(0, n - 1))}`;
  switch (shape) {
    case 'in_list':
      return `SELECT aid, abalance FROM pgbench_accounts WHERE aid IN (${ints})`;
    case 'values_list':
      return `SELECT a.aid FROM pgbench_accounts a JOIN (VALUES (${ints.replaceAll(',', '),(')})) v(x) ON a.aid = v.x`;
    case 'array_constant':
      return `SELECT aid, abalance FROM pgbench_accounts WHERE aid = ANY (ARRAY[${ints}])`;
  }
}

/** The `seq`-th hostile statement of a shape: distinct text every time. */
function hostile(shape: HostileShape, seq: number, bytes: number): { text: string; values?: unknown[] } {
  const tag = `${seq}`;
  switch (shape) {
    case 'nested_parens': {
      const depth = Math.floor((bytes - 20 - tag.length) / 2);
      return { text: `SELECT ${'('.repeat(depth)}${tag}${')'.repeat(depth)}` };
    }
    case 'select_list':
      return { text: fill(`SELECT ${tag}`, ',1', '', bytes) };
    case 'operator_chain':
      return { text: fill(`SELECT ${tag}`, '+1', '', bytes) };
    case 'string_literal':
      return { text: fill(`SELECT '${tag}`, 'x', `'`, bytes) };
    case 'many_statements': {
      const parts: string[] = [];
      let len = 0;
      for (let i = 0; len < bytes - 40; i++) {
        const s = `SELECT ${tag}${i};`;
        parts.push(s);
        len += s.length;
      }
      return { text: parts.join('') };
    }
    case 'parse_chain':
      return { text: fill(`SELECT $1::int+${tag}`, '+1', '', bytes), values: [1] };
  }
}

interface Tally {
  sent: number;
  ok: number;
  refused: Map<string, number>;
  /** Connections the server ended (a FATAL); the session reconnects. */
  reconnects: number;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const command = `node --import tsx bench/hostile.ts${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
  const work = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-hostile-'));
  let pgsrv: EmbeddedPostgres | undefined;
  let warden: PgwardenProcess | undefined;
  const clients = new Set<pg.Client>();
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      await Promise.all(
        [...clients].map((c) => Promise.race([c.end().catch(() => {}), new Promise((r) => setTimeout(r, 2_000))])),
      );
      await warden?.stop().catch(() => {});
      await pgsrv?.stop().catch(() => {});
      await endStartedChildren();
      rmSync(work, { recursive: true, force: true });
    })());
  const watchdog = guardRun(opts.limitMs, cleanup, log);

  try {
    const machine = machineInfo();
    log(
      `machine: ${machine.nproc} CPUs, node ${machine.node}, load average ${os
        .loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}`,
    );
    pgsrv = await startPostgres({ settings: { log_min_messages: 'fatal', log_min_error_statement: 'panic' } });
    const upstreamPassword = `bench-${randomBytes(12).toString('hex')}`;
    const superQuery = async (db: string, sql: string) => {
      const c = new pg.Client({ connectionString: pgsrv!.url(db) });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    };
    await superQuery('postgres', `CREATE DATABASE ${SAMPLE_DATABASE}`);
    await superQuery(SAMPLE_DATABASE, sampleSchemaSql(upstreamPassword));
    await superQuery(
      SAMPLE_DATABASE,
      `${PGBENCH_DDL}\nGRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO ${SAMPLE_UPSTREAM_USER};`,
    );
    warden = await startPgwardenProcess({
      dir: work,
      pgsrv,
      upstreamPassword,
      policyYaml: BENCH_POLICY_YAML,
      maxClients: 100,
      limitMs: opts.limitMs,
      nodeArgs: opts.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.profileDir}`] : [],
      env: opts.arenaMax ? { MALLOC_ARENA_MAX: opts.arenaMax } : {},
    });
    const w = warden;
    log(`pgwarden on port ${w.port} (pid ${w.pid})`);
    const connect = async (agent: string): Promise<pg.Client> => {
      const c = new pg.Client({
        host: '127.0.0.1',
        port: w.port,
        user: 'bench',
        database: SAMPLE_DATABASE,
        password: await mintToken(w.auth, { sub: agent, role: BENCH_ROLE, agent }, 10 * 60_000),
      });
      c.on('error', () => {}); // a session the server ends must not crash the benchmark
      await c.connect();
      clients.add(c);
      return c;
    };

    // Probe: SELECT 1 in a loop on its own session, timing each round trip.

    // A SELECT 1 that fails (pgwarden refused it, or ended the session) is timed and counted too: the probe goes on.
    const probeErrors = new Map<string, number>();
    let probe = await connect('probe');
    const probeFor = async (ms: number): Promise<number[]> => {
      const times: number[] = [];
      const end = Date.now() + ms;
      while (Date.now() < end) {
        const t0 = process.hrtime.bigint();
        try {
          await probe.query('SELECT 1');
        } catch (err) {
          const code = (err as { code?: string }).code ?? 'client-error';
          probeErrors.set(code, (probeErrors.get(code) ?? 0) + 1);
          if ((err as { severity?: string }).severity === 'FATAL' || code === 'client-error') {
            clients.delete(probe);
            await probe.end().catch(() => {});
            probe = await connect('probe');
          }
        }
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      return times.sort((a, b) => a - b);
    };

    const gcRss = async (): Promise<number> => {
      const { kb, figures: m } = await settledRssKb(w);
      if (m)
        log(
          `  RSS ${(kb / 1024).toFixed(0)} MiB: heap used ${(m.heapUsed / 2 ** 20).toFixed(0)} MiB, external ${(m.external / 2 ** 20).toFixed(0)} MiB (array buffers ${(m.arrayBuffers / 2 ** 20).toFixed(0)} MiB)`,
        );
      return kb;
    };
    for (let i = 0; i < 200; i++) await probe.query('SELECT 1');
    const rssBeforeKb = await gcRss();
    log(`pgwarden RSS before: ${(rssBeforeKb / 1024).toFixed(0)} MiB; SELECT 1 alone for ${opts.baselineSeconds} s…`);
    const idle = await probeFor(opts.baselineSeconds * 1000);

    // The hostile sessions.
    const SHAPES: readonly Shape[] = opts.longShape ? [opts.longShape] : HOSTILE_SHAPES;
    const tally = new Map<Shape, Tally>(SHAPES.map((s) => [s, { sent: 0, ok: 0, refused: new Map(), reconnects: 0 }]));
    let stop = false;
    let seq = 1;
    const sampler = peakRssSampler(w.pid, rssBeforeKb);
    const hostileSession = async (k: number) => {
      let c = await connect(`hostile-${k}`);
      for (let i = k; !stop; i++) {
        const shape = SHAPES[i % SHAPES.length] ?? 'nested_parens';
        const t = tally.get(shape)!;
        const q = opts.longShape
          ? { text: longStatement(opts.longShape, seq++, opts.elements) }
          : hostile(shape as HostileShape, seq++, opts.bytes);
        t.sent++;
        try {
          await c.query(q.values ? { text: q.text, values: q.values } : q.text);
          t.ok++;
        } catch (err) {
          const code = (err as { code?: string }).code ?? 'client-error';
          t.refused.set(code, (t.refused.get(code) ?? 0) + 1);
          // A FATAL (or a broken connection) ends the session: open another one.
          const broken = (err as { severity?: string }).severity === 'FATAL' || code === 'client-error';
          if (broken && !stop) {
            if (t.reconnects++ === 0) log(`${shape}: session ended (${code} ${(err as Error).message}); reconnecting`);
            clients.delete(c);
            await c.end().catch(() => {});
            // pgwarden may be too busy to log in right away: a few tries, then this session gives up.
            for (let attempt = 1; ; attempt++) {
              try {
                c = await connect(`hostile-${k}`);
                break;
              } catch (e) {
                if (attempt >= 3 || stop) throw e;
                await new Promise((r) => setTimeout(r, 1_000));
              }
            }
          }
        }
      }
    };
    log(
      `${opts.sessions} hostile sessions × ${(opts.bytes / 1024).toFixed(0)} KiB statements for ${opts.seconds} s, SELECT 1 probing…`,
    );
    const t0 = Date.now();
    const senders = Array.from({ length: opts.sessions }, (_, k) =>
      hostileSession(k).catch((err: unknown) =>
        log(`hostile session ${k} gave up: ${err instanceof Error ? err.message : String(err)}`),
      ),
    );
    const loaded = await probeFor(opts.seconds * 1000);
    stop = true;
    // The senders finish the statement each has in flight (bounded by the watchdog).
    await Promise.allSettled(senders);
    const loadSeconds = (Date.now() - t0) / 1000;
    sampler.stop();
    const peakRssKb = sampler.peak();
    const peakHwmKb = procStatusKb(w.pid, 'VmHWM');
    log(`load done in ${loadSeconds.toFixed(1)} s; settling ${opts.settleSeconds} s…`);
    await new Promise((r) => setTimeout(r, opts.settleSeconds * 1000));
    const after = await probeFor(1000);
    const rssAfterKb = await gcRss();

    const mib = (kb: number) => (kb / 1024).toFixed(0);
    const lat = (xs: number[]) =>
      `${percentile(xs, 0.5).toFixed(2)} / ${percentile(xs, 0.99).toFixed(2)} / ${(xs[xs.length - 1] ?? NaN).toFixed(1)} ms (${xs.length} queries)`;
    const rows = SHAPES.map((s) => {
      const t = tally.get(s)!;
      const refused = [...t.refused].map(([code, n]) => `${code} × ${n}`).join(', ') || '–';
      return `| ${s} | ${t.sent} | ${t.ok} | ${refused} | ${t.reconnects} |`;
    });
    const totalSent = [...tally.values()].reduce((a, t) => a + t.sent, 0);
    const totalRefused = [...tally.values()].reduce(
      (a, t) => a + [...t.refused.values()].reduce((x, y) => x + y, 0),
      0,
    );
    const p99 = percentile(loaded, 0.99);
    const rssDeltaMb = (rssAfterKb - rssBeforeKb) / 1024;
    const md = [
      `Command: \`${command}\` (${new Date().toISOString().slice(0, 16)} UTC, ${machine.nproc} CPUs, node ${machine.node}, load average at the end ${os
        .loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}).`,
      '',
      `| figure | value |`,
      `| --- | --- |`,
      `| SELECT 1 alone, p50 / p99 / max | ${lat(idle)} |`,
      `| SELECT 1 during the hostile load, p50 / p99 / max | ${lat(loaded)} |`,
      `| SELECT 1 during the load: p99.9; slower than 50 / 200 ms | ${percentile(loaded, 0.999).toFixed(1)} ms; ${loaded.filter((x) => x > 50).length} / ${loaded.filter((x) => x > 200).length} |`,
      `| SELECT 1 after the load, p50 / p99 / max | ${lat(after)} |`,
      `| SELECT 1 that failed (SQLSTATE × n) | ${[...probeErrors].map(([code, n]) => `${code} × ${n}`).join(', ') || 'none'} |`,
      `| pgwarden RSS before (after gc) / peak (VmRSS sampled every 50 ms; VmHWM) / after ${opts.settleSeconds} s + gc | ${mib(rssBeforeKb)} / ${mib(peakRssKb)} (${mib(peakHwmKb)}) / ${mib(rssAfterKb)} MiB |`,
      `| hostile statements sent / refused, ${opts.sessions} sessions, ${loadSeconds.toFixed(1)} s | ${totalSent} / ${totalRefused} |`,
      `| target: p99 < 50 ms, RSS after − before < 50 MB | p99 ${p99.toFixed(1)} ms ${p99 < 50 ? 'met' : 'missed'}; RSS ${rssDeltaMb >= 0 ? '+' : ''}${rssDeltaMb.toFixed(0)} MiB ${rssDeltaMb < 50 ? 'met' : 'missed'} |`,
      '',
      '| shape | sent | ran | refused (SQLSTATE × n) | reconnects |',
      '| --- | --- | --- | --- | --- |',
      ...rows,
    ].join('\n');
    console.log(md);
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
