// Login failures and cancel floods from one address, with the per-address limits off and on: what pgwarden serves, refuses and drops, and what a legitimate login from another address costs meanwhile.
//
//   node --import tsx bench/rate-limits.ts [--seconds 15] [--attackers 8] [--limit-minutes 3]
//
// Issue 12 measured 25,000 bad logins and 62,000 cancel requests a minute from one client, all served. Here
// pgwarden runs in this process (createProxy, as the tests do) in front of its own embedded Postgres, twice:
// limits off (loginFailuresPerMinute 0, cancelRequestsPerMinute 0) and at the defaults (30, 60). Attackers from
// 127.0.0.3 send a garbage token over and over; cancel floods from 127.0.0.4 send made-up keys; a legitimate
// client from 127.0.0.1 logs in every 100 ms. Figures are per minute of attack. Everything runs on loopback and
// is stopped at the end, on error, on SIGINT/SIGTERM and at the time limit. Counts, not timings, are the point:
// attacker, proxy and probe share one event loop, so rates here are lower than from outside.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import pino from 'pino';
import { startPostgres, type EmbeddedPostgres } from '../proxy/embedded/postgres.ts';
import { SAMPLE_DATABASE, SAMPLE_UPSTREAM_USER, sampleSchemaSql } from '../proxy/embedded/sample.ts';
import { mintToken } from '../proxy/auth/mint.ts';
import { createProxy, type Proxy } from '../proxy/index.ts';
import type { Config } from '../proxy/config/types.ts';
import { percentile } from './lib/timing.ts';
import { machineInfo } from './lib/tools.ts';

const argv = process.argv.slice(2);
const arg = (name: string, dflt: number) => {
  const i = argv.indexOf(name);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const SECONDS = arg('--seconds', 15);
const ATTACKERS = arg('--attackers', 8);
const LIMIT_MS = arg('--limit-minutes', 3) * 60_000;
const log = (s: string) => console.error(`[rate-limits ${new Date().toISOString().slice(11, 19)}] ${s}`);

function startupPacket(): Buffer {
  const body = Buffer.from(`user\0bench\0database\0${SAMPLE_DATABASE}\0\0`);
  const b = Buffer.alloc(8 + body.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(196608, 4);
  body.copy(b, 8);
  return b;
}

function passwordPacket(token: string): Buffer {
  const body = Buffer.from(`${token}\0`);
  const b = Buffer.alloc(5 + body.length);
  b.write('p', 0);
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

/** One login attempt with `token` from `localAddress`: the SQLSTATE of the ErrorResponse, 'ok' at ReadyForQuery, or 'closed'. */
function attempt(port: number, localAddress: string, token: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (r: string) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve(r);
    };
    s.on('connect', () => s.write(startupPacket()));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (let i = 0; i + 5 <= buf.length; ) {
        const type = String.fromCharCode(buf[i] ?? 0);
        const len = buf.readInt32BE(i + 1);
        if (i + 1 + len > buf.length) break;
        if (type === 'E') {
          const m = /C([0-9A-Z]{5})\0/.exec(buf.subarray(i + 5, i + 1 + len).toString('latin1'));
          return finish(m?.[1] ?? 'error');
        }
        if (type === 'R' && buf.readInt32BE(i + 5) === 3) s.write(passwordPacket(token));
        if (type === 'Z') return finish('ok');
        i += 1 + len;
      }
    });
    s.on('error', () => finish('closed'));
    s.on('close', () => finish('closed'));
    setTimeout(() => finish('timeout'), 10_000).unref();
  });
}

function cancelOnce(port: number, localAddress: string): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress }, () => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0);
      b.writeInt32BE(80877102, 4);
      b.writeInt32BE(Math.floor(Math.random() * 2 ** 31), 8);
      b.writeInt32BE(Math.floor(Math.random() * 2 ** 31), 12);
      s.end(b);
    });
    s.on('close', () => resolve());
    s.on('error', () => resolve());
  });
}

interface Figures {
  badAttempts: Map<string, number>;
  cancelsSent: number;
  cancelsDropped: number;
  legitMs: number[];
  legitFailures: Map<string, number>;
}

async function scenario(pgsrv: EmbeddedPostgres, upstreamPassword: string, limitsOn: boolean): Promise<Figures> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pgwarden-ratelimits-'));
  const secretFile = path.join(dir, 'secret');
  writeFileSync(secretFile, randomBytes(32).toString('base64url'), { mode: 0o600 });
  const policyFile = path.join(dir, 'policy.yaml');
  writeFileSync(policyFile, 'roles:\n  bench:\n    readOnly: true\n    relations: [public.orders]\n');
  const config: Config = {
    baseDir: dir,
    listen: { host: '127.0.0.1', port: 0, tls: undefined },
    upstream: {
      host: pgsrv.host,
      port: pgsrv.port,
      database: SAMPLE_DATABASE,
      user: SAMPLE_UPSTREAM_USER,
      password: upstreamPassword,
      sslmode: 'disable',
      sslRootCert: undefined,
      connectTimeout: 10_000,
    },
    auth: {
      issuer: 'bench',
      audience: 'pgwarden',
      algorithms: ['HS256'],
      secretFile,
      publicKeyFile: undefined,
      jwksUrl: undefined,
      privateKeyFile: undefined,
      maxTokenLifetime: 15 * 60_000,
      clockSkew: 0,
      allowCleartext: 'loopback',
      jwksCooldown: 30_000,
      jwksCacheMaxAge: 600_000,
    },
    policyFile,
    metrics: undefined,
    limits: {
      maxMessageSize: 1024 * 1024,
      handshakeTimeout: 5_000,
      expiryGrace: 0,
      maxClientConnections: 1000,
      maxUnauthenticated: 256,
      maxUnauthenticatedPerAddress: 64,
      idleSessionTimeout: 0,
      loginFailuresPerMinute: limitsOn ? 30 : 0,
      cancelRequestsPerMinute: limitsOn ? 60 : 0,
    },
    log: { level: 'silent' },
    audit: { destination: path.join(dir, 'audit.jsonl'), sql: 'none', onFailure: 'continue' },
  };
  let proxy: Proxy | undefined;
  try {
    proxy = await createProxy(config, { logger: pino({ level: 'silent' }), watchPolicy: false });
    const port = proxy.port;
    const fig: Figures = {
      badAttempts: new Map(),
      cancelsSent: 0,
      cancelsDropped: 0,
      legitMs: [],
      legitFailures: new Map(),
    };
    const deadline = Date.now() + SECONDS * 1000;
    const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
    const attackers = Array.from({ length: ATTACKERS }, async () => {
      while (Date.now() < deadline) bump(fig.badAttempts, await attempt(port, '127.0.0.3', 'garbage-token'));
    });
    const floods = Array.from({ length: 4 }, async () => {
      while (Date.now() < deadline) {
        await cancelOnce(port, '127.0.0.4');
        fig.cancelsSent++;
      }
    });
    const legit = (async () => {
      while (Date.now() < deadline) {
        const token = await mintToken(config.auth, { sub: 'legit', role: 'bench' }, 60_000);
        const t0 = performance.now();
        const c = new pg.Client({ host: '127.0.0.1', port, user: 'bench', database: SAMPLE_DATABASE, password: token });
        c.on('error', () => {});
        try {
          await c.connect();
          fig.legitMs.push(performance.now() - t0);
        } catch (err) {
          bump(fig.legitFailures, (err as { code?: string }).code ?? 'error');
        } finally {
          await c.end().catch(() => {});
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await Promise.all([...attackers, ...floods, legit]);
    const m = await proxy.metrics.registry.getSingleMetric('pgwarden_rate_limited_total')?.get();
    fig.cancelsDropped = m?.values.find((v) => v.labels.limit === 'cancel_requests')?.value ?? 0;
    return fig;
  } finally {
    await proxy?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  let pgsrv: EmbeddedPostgres | undefined;
  const stop = async () => {
    await pgsrv?.stop().catch(() => {});
  };
  const onSignal = (sig: NodeJS.Signals) => void stop().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  setTimeout(() => {
    log('time limit reached: stopping');
    void stop().finally(() => process.exit(124));
  }, LIMIT_MS).unref();
  try {
    const machine = machineInfo();
    log(
      `machine: ${machine.nproc} CPUs, node ${machine.node}, load average ${os
        .loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}`,
    );
    pgsrv = await startPostgres({ settings: { log_min_messages: 'fatal' } });
    const upstreamPassword = `bench-${randomBytes(12).toString('hex')}`;
    for (const [db, sql] of [
      ['postgres', `CREATE DATABASE ${SAMPLE_DATABASE}`],
      [SAMPLE_DATABASE, sampleSchemaSql(upstreamPassword)],
    ] as const) {
      const c = new pg.Client({ connectionString: pgsrv.url(db) });
      await c.connect();
      await c.query(sql);
      await c.end();
    }
    const perMin = (n: number) => Math.round((n * 60) / SECONDS).toLocaleString('en');
    const rows: string[] = [];
    for (const on of [false, true]) {
      log(`limits ${on ? 'on (30 failures, 60 cancels a minute per address)' : 'off'}: ${SECONDS} s of attack`);
      const f = await scenario(pgsrv, upstreamPassword, on);
      const verified = f.badAttempts.get('28P01') ?? 0;
      const refused = f.badAttempts.get('53300') ?? 0;
      const other =
        [...f.badAttempts]
          .filter(([k]) => k !== '28P01' && k !== '53300')
          .map(([k, v]) => `${k} ${v}`)
          .join(', ') || '—';
      const sorted = [...f.legitMs].sort((a, b) => a - b);
      const legitFail = [...f.legitFailures].map(([k, v]) => `${k} ${v}`).join(', ') || '0';
      rows.push(
        `| ${on ? 'on (defaults)' : 'off'} | ${perMin(verified)} | ${perMin(refused)} | ${other} | ${perMin(f.cancelsSent)} | ${perMin(f.cancelsSent - f.cancelsDropped)} | ${perMin(f.cancelsDropped)} | ${f.legitMs.length} | ${percentile(sorted, 0.5).toFixed(1)} / ${percentile(sorted, 0.99).toFixed(1)} | ${legitFail} |`,
      );
    }
    console.log(
      `\n${ATTACKERS} bad-token loops from 127.0.0.3, 4 cancel loops from 127.0.0.4, a login from 127.0.0.1 every 100 ms; ${SECONDS} s each; per minute.\n`,
    );
    console.log(
      '| limits | bad logins verified (28P01) /min | refused at accept (53300) /min | other | cancels sent /min | looked up /min | dropped /min | legit logins | legit login p50 / p99 ms | legit failures |',
    );
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const r of rows) console.log(r);
  } finally {
    await stop();
  }
}

await main();
