// The soak's client sessions: legitimate readers and writers (pg and postgres.js, simple and extended protocol),
// clients whose short tokens expire, clients that get revoked, and hostile ones; each records latencies and errors.
import net from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import pg from 'pg';
import postgres from 'postgres';
import type { MintClaims } from '../../proxy/auth/mint.ts';
import {
  cancelRequest,
  errorCode,
  frame,
  passwordMessage,
  queryMessage,
  RawConnection,
  rawLogin,
  startupMessage,
  terminateMessage,
} from './soak-wire.ts';

/** Roles of the soak policy (bench/soak.ts writes it). */
export const READER_ROLE = 'soak_reader';
export const WRITER_ROLE = 'soak_writer';

/** Loopback source addresses: legitimate sessions from 127.0.0.1, each hostile kind from its own, so per-address
 * login-failure and unauthenticated-connection limits hit the attacker and not the agents sharing 127.0.0.1. */
export const ADDRESS = {
  legit: '127.0.0.1',
  badToken: '127.0.0.3',
  cancel: '127.0.0.4',
  malformed: '127.0.0.5',
  slow: '127.0.0.6',
  malformedLoggedIn: '127.0.0.7',
  hog: '127.0.0.8',
} as const;

export type ErrorKey = string;

export interface ErrorCount {
  cls: string;
  code: string;
  expected: boolean;
  count: number;
  sample: string;
}

/** Latencies (ms) per traffic class, error counts per (class, code), plain counters. */
export class Recorder {
  readonly latencies = new Map<string, number[]>();
  readonly errors = new Map<ErrorKey, ErrorCount>();
  readonly ok = new Map<string, number>();
  readonly counters = new Map<string, number>();
  /** Latencies of legitimate statements by the second they finished in (since `origin`), for the plot. */
  readonly timeline = new Map<number, number[]>();
  origin = Date.now();

  /** A legitimate statement's latency, also kept by second for the latency-over-time plot. */
  legit(cls: string, ms: number): void {
    this.latency(cls, ms);
    const sec = Math.floor((Date.now() - this.origin) / 1000);
    let a = this.timeline.get(sec);
    if (!a) this.timeline.set(sec, (a = []));
    a.push(ms);
  }

  latency(cls: string, ms: number): void {
    let a = this.latencies.get(cls);
    if (!a) this.latencies.set(cls, (a = []));
    a.push(ms);
    this.ok.set(cls, (this.ok.get(cls) ?? 0) + 1);
  }

  error(cls: string, code: string, expected: boolean, message: string): void {
    const k = `${cls}\0${code}\0${expected}`;
    const e = this.errors.get(k);
    if (e) e.count++;
    else this.errors.set(k, { cls, code, expected, count: 1, sample: message.replace(/\s+/g, ' ').slice(0, 160) });
  }

  count(name: string, n = 1): void {
    this.counters.set(name, (this.counters.get(name) ?? 0) + n);
  }

  unexpected(): ErrorCount[] {
    return [...this.errors.values()].filter((e) => !e.expected);
  }
}

/** What the session loops share with the orchestrator. */
export interface SoakContext {
  port: number;
  database: string;
  stopAt: number;
  mint(claims: MintClaims, ttlMs: number, now?: number): Promise<string>;
  /** Token lifetime for sessions meant to last the whole run. */
  longTtlMs: number;
  rec: Recorder;
  /** Row counts a capped read may return: one per row cap the reloads alternate between. */
  rowCaps: readonly number[];
  /** Connections still open, closed by force at the end of the run. */
  live: Set<{ close(): void }>;
  /** Mean pause between a session's statements (ms). */
  thinkMs: number;
  /** The run's own limit on connects: at most this many logins at once, so 200 sessions start without a stampede. */
  loginSlots: Semaphore;
}

export class Semaphore {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(n: number) {
    this.free = n;
  }
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((r) => this.waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));
const running = (ctx: SoakContext) => Date.now() < ctx.stopAt;
const think = (ctx: SoakContext) => sleep(Math.min(ctx.stopAt - Date.now(), ctx.thinkMs * (0.5 + Math.random())));
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

/** A SQLSTATE (five characters with a digit), a socket error name, or a short description of a client-side failure. */
export function codeOf(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  if (typeof e?.code === 'string' && e.code.length > 0) return e.code;
  if (/Connection terminated|not queryable|Connection ended|ECONNRESET/i.test(msg)) return 'conn-closed';
  if (/timeout/i.test(msg)) return 'timeout';
  return `client: ${msg.slice(0, 50)}`;
}
const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** A token, or a function pg calls for it when the server asks for the password (a token minted at that moment). */
type Password = string | (() => Promise<string>);

function pgClient(
  ctx: SoakContext,
  password: Password,
  appName: string,
  localAddress?: string,
  queryTimeoutMs = 30_000,
): pg.Client {
  const cfg: pg.ClientConfig = {
    host: '127.0.0.1',
    port: ctx.port,
    user: 'soak',
    database: ctx.database,
    password,
    application_name: appName,
    connectionTimeoutMillis: 20_000,
    query_timeout: queryTimeoutMs,
  };
  if (localAddress) {
    // pg calls stream.connect(port, host); bind the socket to the hostile kind's own loopback address first.
    cfg.stream = () => {
      const s = new net.Socket();
      const connect = s.connect.bind(s) as (o: net.TcpSocketConnectOpts) => net.Socket;
      (s as unknown as { connect: (port: number, host: string) => net.Socket }).connect = (port, host) =>
        connect({ port, host, localAddress });
      return s;
    };
  }
  return new pg.Client(cfg);
}

interface PgSession {
  client: pg.Client;
  /** The FATAL (or socket error) that ended the session, when it has ended, and when it arrived. */
  fatal: { code: string; message: string; at: number } | undefined;
  close(): void;
}

/** Connects a pg client (inside the login slots), tracking the error that ends it; on failure, the refusal's code and message. */
async function openPg(
  ctx: SoakContext,
  password: Password,
  appName: string,
  localAddress?: string,
  queryTimeoutMs?: number,
): Promise<PgSession | { error: string; message: string }> {
  const client = pgClient(ctx, password, appName, localAddress, queryTimeoutMs);
  const s: PgSession = {
    client,
    fatal: undefined,
    close: () => {
      ctx.live.delete(s);
      void client.end().catch(() => {});
    },
  };
  client.on('error', (e) => {
    s.fatal ??= { code: codeOf(e), message: messageOf(e), at: Date.now() };
  });
  // The server's FATAL, seen as it arrives whether or not a query was running (pg then reports it to that query, and
  // the close that follows as "Connection terminated"): the FATAL's SQLSTATE is what ended the session.
  const con = (
    client as unknown as {
      connection: {
        on(ev: 'errorMessage', fn: (m: { severity?: string; code?: string; message?: string }) => void): void;
      };
    }
  ).connection;
  con.on('errorMessage', (m) => {
    if (m.severity === 'FATAL' && (s.fatal === undefined || s.fatal.code === 'conn-closed'))
      s.fatal = { code: m.code ?? 'FATAL', message: m.message ?? '', at: s.fatal?.at ?? Date.now() };
  });
  try {
    await ctx.loginSlots.run(() => client.connect());
  } catch (err) {
    await client.end().catch(() => {});
    return { error: codeOf(err), message: messageOf(err) };
  }
  ctx.live.add(s);
  return s;
}

/** The expected-error set of legitimate traffic: none. */
const NONE: ReadonlySet<string> = new Set();

/** Runs one statement, recording its latency under `cls`, or its error (expected when its code is in `expected`). */
async function timed<T>(
  ctx: SoakContext,
  cls: string,
  expected: ReadonlySet<string> | ((code: string) => boolean),
  fn: () => Promise<T>,
  latencyCls = cls,
): Promise<{ ok: true; value: T } | { ok: false; code: string }> {
  const t0 = process.hrtime.bigint();
  try {
    const value = await fn();
    // Classes that expect no error are the legitimate ones: their latencies also go on the timeline.
    if (expected === NONE) ctx.rec.legit(latencyCls, ms(t0));
    else ctx.rec.latency(latencyCls, ms(t0));
    ctx.rec.count('statements ok');
    return { ok: true, value };
  } catch (err) {
    const code = codeOf(err);
    if (code === '42501') ctx.rec.count('statements refused (42501)');
    const isExpected = typeof expected === 'function' ? expected(code) : expected.has(code);
    ctx.rec.error(cls, code, isExpected, messageOf(err));
    // Hostile classes time their refusals (under a class of their own): how long pgwarden took to say no.
    if (isExpected && latencyCls !== cls) ctx.rec.latency(latencyCls, ms(t0));
    return { ok: false, code };
  }
}

/**
 * A legitimate pg session for the whole run: `step` runs one statement; a session lost unexpectedly is recorded
 * (under `cls`) and opened again.
 */
async function pgLoop(
  ctx: SoakContext,
  cls: string,
  claims: MintClaims,
  step: (c: pg.Client) => Promise<unknown>,
  pause = true,
): Promise<void> {
  const token = await ctx.mint(claims, ctx.longTtlMs);
  while (running(ctx)) {
    const s = await openPg(ctx, token, cls);
    if ('error' in s) {
      ctx.rec.error(`${cls} (login)`, s.error, false, s.message);
      await sleep(1_000);
      continue;
    }
    while (running(ctx) && !s.fatal) {
      await step(s.client);
      if (pause) await think(ctx);
    }
    if (s.fatal && running(ctx)) ctx.rec.error(`${cls} (session lost)`, s.fatal.code, false, s.fatal.message);
    s.close();
  }
}

const customer = () => 1 + Math.floor(Math.random() * 50);

export function selectOne(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'SELECT 1 (pg, simple)';
  return pgLoop(ctx, cls, { sub: `soak-select1-${i}`, role: READER_ROLE, agent: `soak-select1-${i % 8}` }, (c) =>
    timed(ctx, cls, NONE, () => c.query('SELECT 1')),
  );
}

export function readSimple(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'read (pg, simple)';
  let n = 0;
  return pgLoop(ctx, cls, { sub: `soak-rs-${i}`, role: READER_ROLE, agent: `soak-rs-${i % 8}` }, (c) =>
    timed(ctx, cls, NONE, () =>
      n++ % 2 === 0
        ? c.query('SELECT status, count(*) FROM orders GROUP BY status')
        : c.query(`SELECT id, name, email FROM customers WHERE id = ${customer()}`),
    ),
  );
}

export function readExtended(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'read (pg, extended)';
  return pgLoop(ctx, cls, { sub: `soak-rx-${i}`, role: READER_ROLE, agent: `soak-rx-${i % 8}` }, (c) =>
    timed(ctx, cls, NONE, () => c.query('SELECT id, total, status FROM orders WHERE customer_id = $1', [customer()])),
  );
}

/** Reads a table bigger than either row cap: the rows returned must be one of the caps the reloads alternate between. */
export function cappedRead(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'capped read (pg, simple)';
  return pgLoop(ctx, cls, { sub: `soak-cap-${i}`, role: READER_ROLE, agent: `soak-cap-${i % 8}` }, async (c) => {
    const r = await timed(ctx, cls, NONE, () => c.query('SELECT id FROM soak_big'));
    if (r.ok && !ctx.rowCaps.includes(r.value.rows.length))
      ctx.rec.error(
        cls,
        'row-cap',
        false,
        `${r.value.rows.length} rows; the caps in force were ${ctx.rowCaps.join(' or ')}`,
      );
  });
}

/** postgres.js with named prepared statements (Parse once, Bind/Execute after), reconnecting by itself. */
export async function readPostgresJs(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'read (postgres.js, prepared)';
  const token = await ctx.mint({ sub: `soak-pj-${i}`, role: READER_ROLE, agent: `soak-pj-${i % 8}` }, ctx.longTtlMs);
  const sql = postgresJs(ctx, token, cls);
  const handle = { close: () => void sql.end({ timeout: 1 }).catch(() => {}) };
  ctx.live.add(handle);
  try {
    await ctx.loginSlots
      .run(() => sql`SELECT 1`.then(() => undefined))
      .catch((err) => ctx.rec.error(`${cls} (login)`, codeOf(err), false, messageOf(err)));
    while (running(ctx)) {
      await timed(ctx, cls, NONE, () => sql`SELECT id, name, email FROM customers WHERE id = ${customer()}`);
      await think(ctx);
    }
  } finally {
    ctx.live.delete(handle);
    await sql.end({ timeout: 2 }).catch(() => {});
  }
}

function postgresJs(ctx: SoakContext, token: string, appName: string) {
  return postgres({
    host: '127.0.0.1',
    port: ctx.port,
    database: ctx.database,
    username: 'soak',
    password: token,
    max: 1,
    prepare: true,
    idle_timeout: 0,
    connect_timeout: 20,
    connection: { application_name: appName },
    onnotice: () => {},
  });
}

/** What the writers told the database and what it acknowledged. */
export interface Ledger {
  /** Ids whose INSERT was acknowledged (CommandComplete INSERT 0 1 reached the client). */
  acked: Set<string>;
  /** Ids whose INSERT failed or whose outcome is unknown (the connection went away): may or may not be there. */
  inDoubt: Set<string>;
}

const WRITER_STRIDE = 10_000_000;

/** Inserts rows with unique ids into soak_ledger, remembering which were acknowledged; pg (even i) or postgres.js (odd i). */
export async function writer(ctx: SoakContext, i: number, ledger: Ledger): Promise<void> {
  const claims = { sub: `soak-w-${i}`, role: WRITER_ROLE, agent: `soak-w-${i % 8}` };
  let seq = 0;
  const nextId = () => String((i + 1) * WRITER_STRIDE + ++seq);
  const record = (id: string, ok: boolean) => (ok ? ledger.acked : ledger.inDoubt).add(id);
  if (i % 2 === 0) {
    const cls = 'insert (pg, extended)';
    await pgLoop(ctx, cls, claims, async (c) => {
      const id = nextId();
      const r = await timed(ctx, cls, NONE, () =>
        c.query('INSERT INTO soak_ledger (id, writer, note) VALUES ($1, $2, $3)', [id, i, `w${i}`]),
      );
      record(id, r.ok && r.value.rowCount === 1);
    });
    return;
  }
  const cls = 'insert (postgres.js, prepared)';
  const sql = postgresJs(ctx, await ctx.mint(claims, ctx.longTtlMs), cls);
  const handle = { close: () => void sql.end({ timeout: 1 }).catch(() => {}) };
  ctx.live.add(handle);
  try {
    while (running(ctx)) {
      const id = nextId();
      const r = await timed(ctx, cls, NONE, () =>
        seq === 1 ? ctx.loginSlots.run(() => insertJs(sql, id, i)) : insertJs(sql, id, i),
      );
      record(id, r.ok && r.value.count === 1);
      await think(ctx);
    }
  } finally {
    ctx.live.delete(handle);
    await sql.end({ timeout: 2 }).catch(() => {});
  }
}

const insertJs = (sql: postgres.Sql, id: string, w: number) =>
  sql`INSERT INTO soak_ledger (id, writer, note) VALUES (${id}, ${w}, ${`w${w}`})`;

/** Short tokens: the session is ended at `exp` (57P01) and the client logs in again with a new token. */
export async function reconnector(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'short token (pg)';
  const claims = { sub: `soak-rc-${i}`, role: READER_ROLE, agent: `soak-rc-${i % 8}` };
  while (running(ctx)) {
    const ttl = 5_000 + Math.floor(Math.random() * 4) * 1_000;
    let expMs = Infinity;
    // Minted when pgwarden asks for the password, as an agent would fetch a fresh token right before connecting.
    const token = async () => {
      const now = Date.now();
      expMs = (Math.floor(now / 1000) + ttl / 1000) * 1000;
      return await ctx.mint(claims, ttl, now);
    };
    const s = await openPg(ctx, token, cls);
    if ('error' in s) {
      // A login slower than the token's life is refused, as it should be (and counts as a failed login).
      ctx.rec.error(`${cls} (login)`, s.error, s.error === '28P01' && Date.now() >= expMs - 1_000, s.message);
      await sleep(1_000);
      continue;
    }
    ctx.rec.count('short-token sessions opened');
    while (running(ctx) && !s.fatal) {
      // The statement running at exp fails with the FATAL (57P01) or the close right after it.
      const atExpiry = (code: string) =>
        s.fatal?.code === '57P01' && (code === '57P01' || code === 'conn-closed') && Date.now() >= expMs - 1_000;
      const r = await timed(ctx, cls, atExpiry, () =>
        s.client.query('SELECT id, total FROM orders WHERE id = $1', [1 + Math.floor(Math.random() * 500)]),
      );
      if (!r.ok) {
        // Give the FATAL a moment to be reported if the failing query saw only the close.
        await sleep(50);
        break;
      }
      await sleep(Math.min(200, ctx.stopAt - Date.now()));
    }
    const f = s.fatal;
    if (f) {
      const early = f.at < expMs - 1_000;
      if (f.code === '57P01' && !early) {
        ctx.rec.count('short-token sessions ended at exp');
        ctx.rec.latency('short token: end after exp (ms)', f.at - expMs);
      } else
        ctx.rec.error(
          `${cls} (session end)`,
          f.code,
          false,
          `${f.message} (${early ? `${expMs - f.at} ms before exp` : 'after exp'})`,
        );
    }
    s.close();
  }
}

export type RevocationKind = 'jti' | 'sub' | 'agent';

/** One session the orchestrator revokes, and what happened to it. */
export interface RevocationTarget {
  kind: RevocationKind;
  sub: string;
  agent: string;
  jti: string;
  /** Set by the orchestrator when the revocation file was written. */
  revokedAt?: number;
  /** The live session's end: when, and with which SQLSTATE. */
  endedAt?: number;
  endCode?: string;
  endMessage?: string;
  /** The SQLSTATE of a new login by the revoked identity (same token for jti; a new token for sub/agent). */
  reloginCode?: string;
  /** Whether its session was up when it was revoked (it must then end). */
  liveAtRevocation?: boolean;
  connected: boolean;
}

/** A reader that runs until the orchestrator revokes it, then checks that its session ended and a new login is refused. */
export async function revocable(ctx: SoakContext, t: RevocationTarget): Promise<void> {
  const cls = 'revocable reader (pg)';
  const token = await ctx.mint({ sub: t.sub, role: READER_ROLE, agent: t.agent, jti: t.jti }, ctx.longTtlMs);
  while (running(ctx) && t.endedAt === undefined) {
    const s = await openPg(ctx, token, cls);
    if ('error' in s) {
      if (t.revokedAt !== undefined) {
        // Revoked between sessions: the refusal is the outcome.
        t.endedAt = Date.now();
        t.endCode = s.error;
        t.reloginCode = s.error;
        return;
      }
      ctx.rec.error(`${cls} (login)`, s.error, false, s.message);
      await sleep(1_000);
      continue;
    }
    t.connected = true;
    while (running(ctx) && !s.fatal) {
      const atRevocation = (code: string) =>
        t.revokedAt !== undefined && s.fatal?.code === '57P01' && (code === '57P01' || code === 'conn-closed');
      await timed(ctx, cls, atRevocation, () =>
        s.client.query('SELECT id, status FROM orders WHERE id = $1', [1 + Math.floor(Math.random() * 500)]),
      );
      if (s.fatal) break;
      await sleep(Math.min(100, ctx.stopAt - Date.now()));
    }
    t.connected = false;
    const f = s.fatal;
    s.close();
    if (!f) continue;
    if (t.revokedAt === undefined) {
      ctx.rec.error(`${cls} (session lost)`, f.code, false, f.message);
      continue;
    }
    t.endedAt = f.at;
    t.endCode = f.code;
    t.endMessage = f.message;
    ctx.rec.error(cls, f.code, f.code === '57P01' && /revoked/.test(f.message), f.message);
  }
  if (t.revokedAt === undefined) return;
  // The identity comes back: with the same token (jti), or a fresh token with the revoked sub or agent.
  const again =
    t.kind === 'jti'
      ? token
      : await ctx.mint(
          t.kind === 'sub'
            ? { sub: t.sub, role: READER_ROLE, agent: `${t.agent}-new` }
            : { sub: `${t.sub}-new`, role: READER_ROLE, agent: t.agent },
          60_000,
        );
  const s = await openPg(ctx, again, `${cls} relogin`);
  if ('error' in s) t.reloginCode = s.error;
  else {
    t.reloginCode = 'accepted';
    s.close();
  }
}

/** Statements the policy must refuse (42501), from a reader or a writer token; a success is an unexpected error. */
export async function hostileDenied(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'hostile: refused statements';
  const asWriter = i % 3 === 2;
  const statements: [string, unknown[]?][] = asWriter
    ? [
        ['DELETE FROM soak_ledger'],
        ['UPDATE soak_ledger SET note = $1', ['pwned']],
        ["UPDATE canary SET note = 'pwned'"],
        ["INSERT INTO canary (id, note) VALUES (-1, 'pwned')"],
        ['SELECT ssn FROM customers'],
        ['TRUNCATE soak_ledger'],
      ]
    : [
        ['SELECT ssn FROM customers'],
        ['SELECT name, ssn FROM customers WHERE id = $1', [1]],
        ['SELECT * FROM secrets'],
        [`INSERT INTO soak_ledger (id, writer, note) VALUES (-${i + 1}, -1, 'read-only role')`],
        ['DELETE FROM canary'],
        ['UPDATE canary SET note = $1 WHERE id = 1', ['pwned']],
        ['TRUNCATE canary'],
        ['SELECT 1; DELETE FROM canary'],
        ['CREATE TABLE soak_evil (x int)'],
      ];
  const expected = new Set(['42501']);
  let n = 0;
  await pgLoop(
    ctx,
    cls,
    { sub: `soak-deny-${i}`, role: asWriter ? WRITER_ROLE : READER_ROLE, agent: `soak-deny-${i % 4}` },
    async (c) => {
      const [text, params] = statements[n++ % statements.length] as [string, unknown[]?];
      const r = await timed(ctx, cls, expected, () => c.query(text, params), `${cls} (time to refusal)`);
      if (r.ok) ctx.rec.error(cls, 'ALLOWED', false, `pgwarden let through: ${text}`);
    },
  );
}

// Any refusal: by policy (42501, 0A000), by size or depth (54000, 54001, 54011), for lack of a free worker or memory
// (53000, 53200, 53400), a timeout (57014, 58000), or PostgreSQL's own syntax error. Not XX000, not a hang.
const LARGE_EXPECTED = new Set([
  '42501',
  '54000',
  '54001',
  '54011',
  '42601',
  '0A000',
  '53000',
  '53400',
  '53200',
  '57014',
  '58000',
]);

/** One large statement (256 KiB–~1 MiB), distinct each time so no cache helps; four shapes. */
export function largeStatement(n: number): { sql: string; deniable: boolean } {
  const size = 256 * 1024 + Math.floor(Math.random() * (1_000_000 - 256 * 1024 - 64));
  switch (n % 5) {
    case 0:
      return { sql: `SELECT ${n}${',1'.repeat(Math.floor(size / 2))}`, deniable: false };
    case 1: {
      const d = Math.floor(size / 2);
      return { sql: `SELECT ${'('.repeat(d)}${n}${')'.repeat(d)}`, deniable: false };
    }
    case 2:
      return { sql: `SELECT ${n}${'+1'.repeat(Math.floor(size / 2))}`, deniable: false };
    case 3:
      return { sql: `SELECT * FROM secrets WHERE id IN (${n}${',1'.repeat(Math.floor(size / 2))})`, deniable: true };
    default:
      return { sql: `SELECT ssn FROM customers WHERE name = '${n}${'x'.repeat(size)}'`, deniable: true };
  }
}

/** Sends large statements back to back (pg, simple protocol); any refusal is expected, XX000 or a hang is not. */
export function hostileLarge(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'hostile: 256 KiB–1 MiB statements';
  let n = i * 1_000_000;
  return pgLoop(ctx, cls, { sub: `soak-large-${i}`, role: READER_ROLE, agent: 'soak-large' }, async (c) => {
    const st = largeStatement(n++);
    const r = await timed(ctx, cls, LARGE_EXPECTED, () => c.query(st.sql), `${cls} (time to answer)`);
    if (r.ok && st.deniable)
      ctx.rec.error(cls, 'ALLOWED', false, `pgwarden let through a ${st.sql.length}-byte statement on secrets/ssn`);
    ctx.rec.count('large statements sent');
    ctx.rec.count('large statement bytes sent', st.sql.length);
  });
}

interface MalformedCase {
  name: string;
  loggedIn: boolean;
  /** Bytes sent (after login when loggedIn). */
  bytes: () => Buffer;
  expected: ReadonlySet<string>;
}

const MALFORMED: MalformedCase[] = [
  // Before login, 53300 too: a per-address limit (login failures, unauthenticated connections) may refuse the source first.
  {
    name: 'startup length 2^31-1',
    loggedIn: false,
    bytes: () => Buffer.from([0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0]),
    expected: new Set(['08P01', '53300', 'conn-closed']),
  },
  {
    name: 'startup protocol 2.0',
    loggedIn: false,
    bytes: () => startupMessage({ user: 'soak', database: 'app' }, 131072),
    expected: new Set(['0A000', '08P01', '53300', 'conn-closed']),
  },
  {
    name: '100 KiB password message',
    loggedIn: false,
    bytes: () =>
      Buffer.concat([startupMessage({ user: 'soak', database: 'app' }), passwordMessage('x'.repeat(100 * 1024))]),
    expected: new Set(['08P01', '28P01', '53300', 'conn-closed']),
  },
  {
    name: 'Query with length 3',
    loggedIn: true,
    bytes: () => Buffer.from([0x51, 0, 0, 0, 3]),
    expected: new Set(['08P01']),
  },
  {
    name: 'second StartupMessage',
    loggedIn: true,
    bytes: () => startupMessage({ user: 'soak', database: 'app' }),
    expected: new Set(['08P01']),
  },
  {
    name: 'unknown type byte',
    loggedIn: true,
    bytes: () => frame('z', Buffer.from('garbage')),
    expected: new Set(['08P01']),
  },
  {
    name: 'Query declaring 2 MiB',
    loggedIn: true,
    bytes: () => Buffer.from([0x51, 0, 0x20, 0, 0x10]),
    expected: new Set(['08P01', '54000']),
  },
];

/** Frames no driver sends, before and after login (raw sockets from their own address); each must end in an error and a close. */
export async function hostileMalformed(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'hostile: malformed frames';
  let n = i;
  while (running(ctx)) {
    const c = MALFORMED[n++ % MALFORMED.length] as MalformedCase;
    const t0 = process.hrtime.bigint();
    let conn: RawConnection | undefined;
    try {
      if (c.loggedIn) {
        const token = await ctx.mint({ sub: `soak-mal-${i}`, role: READER_ROLE, agent: 'soak-malformed' }, 60_000);
        // From another address than the pre-login garbage, which a login-failure limit may rightly hold against its source.
        const login = await ctx.loginSlots.run(() =>
          rawLogin(ctx.port, ADDRESS.malformedLoggedIn, 'soak', ctx.database, token),
        );
        conn = login.conn;
        if (login.error) {
          ctx.rec.error(
            `${cls} (login)`,
            login.error,
            false,
            `raw login refused: ${login.error} ${login.message ?? ''}`,
          );
          continue;
        }
      } else conn = await RawConnection.connect(ctx.port, ADDRESS.malformed);
      const handle = { close: () => conn?.destroy() };
      ctx.live.add(handle);
      const t1 = process.hrtime.bigint();
      conn.write(c.bytes());
      const m = await conn.until('', 10_000);
      const code = m ? (errorCode(m.body) ?? 'E') : conn.timedOut ? 'timeout' : 'conn-closed';
      const closed = await conn.waitClosed(5_000);
      ctx.live.delete(handle);
      if (!closed) ctx.rec.error(cls, 'not closed', false, `${c.name}: connection still open 5 s after ${code}`);
      else if (c.expected.has(code)) ctx.rec.latency(`${cls} (time to refusal)`, ms(t1));
      else ctx.rec.error(cls, code, false, `${c.name}: answered ${code}`);
      ctx.rec.count(`malformed: ${c.name}`);
    } catch (err) {
      ctx.rec.error(cls, codeOf(err), false, `${c.name}: ${messageOf(err)} after ${ms(t0).toFixed(0)} ms`);
    } finally {
      conn?.destroy();
    }
    await sleep(Math.min(200, ctx.stopAt - Date.now()));
  }
}

/** Logins with passwords that are not valid tokens (garbage, wrong key, expired, unknown role), from their own address. */
export async function hostileBadToken(ctx: SoakContext, i: number): Promise<void> {
  const cls = 'hostile: bad tokens';
  const expected = new Set(['28P01', '28000', '53300']);
  const otherKey = new TextEncoder().encode(randomBytes(32).toString('base64url'));
  let n = i;
  while (running(ctx)) {
    const kind = n++ % 4;
    const password =
      kind === 0
        ? `not-a-token-${n}`
        : kind === 1
          ? await new SignJWT({ role: READER_ROLE })
              .setProtectedHeader({ alg: 'HS256' })
              .setSubject('mallory')
              .setIssuer('pgwarden-bench')
              .setAudience('pgwarden')
              .setIssuedAt()
              .setExpirationTime('5m')
              .setJti(randomUUID())
              .sign(otherKey)
          : kind === 2
            ? await ctx.mint({ sub: 'mallory', role: READER_ROLE }, 60_000, Date.now() - 10 * 60_000)
            : await ctx.mint({ sub: 'mallory', role: 'no_such_role' }, 60_000);
    const t0 = process.hrtime.bigint();
    const s = await openPg(ctx, password, 'soak-bad-token', ADDRESS.badToken, 10_000);
    if ('error' in s) {
      ctx.rec.error(cls, s.error, expected.has(s.error), s.message);
      if (expected.has(s.error)) ctx.rec.latency(`${cls} (time to refusal)`, ms(t0));
    } else {
      ctx.rec.error(cls, 'ACCEPTED', false, `login with bad token kind ${kind} accepted`);
      s.close();
    }
    await sleep(Math.min(50, ctx.stopAt - Date.now()));
  }
}

/** CancelRequests with made-up keys, four connections at a time, `perSecond` in all at most; from their own address. */
export async function hostileCancelFlood(ctx: SoakContext, perSecond: number): Promise<void> {
  const cls = 'hostile: cancel flood';
  const gapMs = 4_000 / perSecond;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (running(ctx)) {
        let conn: RawConnection | undefined;
        const started = Date.now();
        try {
          conn = await RawConnection.connect(ctx.port, ADDRESS.cancel, 5_000);
          conn.write(cancelRequest(Math.floor(Math.random() * 2 ** 31), Math.floor(Math.random() * 2 ** 31)));
          ctx.rec.count('cancel requests sent');
          const t0 = process.hrtime.bigint();
          const m = await conn.next(30_000);
          if (m)
            ctx.rec.error(
              cls,
              m.type === 'E' ? (errorCode(m.body) ?? 'E') : `message ${m.type}`,
              m.type === 'E',
              'a CancelRequest was answered',
            );
          else if (conn.timedOut)
            ctx.rec.error(cls, 'not closed', false, 'connection still open 30 s after a CancelRequest');
          else ctx.rec.latency(`${cls} (time to close)`, ms(t0));
        } catch (err) {
          // A refused or reset connection is a fair answer to a flood.
          const code = codeOf(err);
          ctx.rec.error(cls, code, code === 'ECONNRESET' || code === 'ECONNREFUSED', messageOf(err));
        } finally {
          conn?.destroy();
        }
        await sleep(Math.min(started + gapMs - Date.now(), ctx.stopAt - Date.now()));
      }
    }),
  );
}

/** Reads the start of a large result, stops reading for `pauseMs`, then reads the rest: the answer must still be whole. */
export async function slowReader(ctx: SoakContext, i: number, pauseMs: number): Promise<void> {
  const cls = 'slow reader: rest of a 16 MiB result after a 10 s pause';
  const token = await ctx.mint({ sub: `soak-slow-${i}`, role: READER_ROLE, agent: 'soak-slow' }, ctx.longTtlMs);
  while (running(ctx)) {
    const login = await ctx.loginSlots.run(() => rawLogin(ctx.port, ADDRESS.slow, 'soak', ctx.database, token));
    const conn = login.conn;
    const handle = { close: () => conn.destroy() };
    ctx.live.add(handle);
    try {
      if (login.error) {
        ctx.rec.error(`${cls} (login)`, login.error, false, `raw login refused: ${login.error} ${login.message ?? ''}`);
        await sleep(1_000);
        continue;
      }
      while (running(ctx) && !conn.closed) {
        const start = conn.received;
        conn.write(queryMessage('SELECT id, pad FROM soak_big'));
        while (conn.received - start < 256 * 1024 && !conn.closed && running(ctx)) await sleep(5);
        conn.socket.pause();
        await sleep(Math.min(pauseMs, ctx.stopAt - Date.now() + 2_000));
        conn.socket.resume();
        const t0 = process.hrtime.bigint();
        let rows = 0;
        let code: string | undefined;
        for (;;) {
          const m = await conn.next(60_000);
          if (!m) {
            code = conn.timedOut ? 'timeout' : 'conn-closed';
            break;
          }
          if (m.type === 'D') rows++;
          if (m.type === 'E') code = errorCode(m.body) ?? 'E';
          if (m.type === 'Z') break;
        }
        if (code) ctx.rec.error(cls, code, false, `after ${rows} rows`);
        else if (!ctx.rowCaps.includes(rows))
          ctx.rec.error(cls, 'row-cap', false, `${rows} rows; the caps in force were ${ctx.rowCaps.join(' or ')}`);
        else {
          ctx.rec.latency(cls, ms(t0));
          ctx.rec.count('statements ok');
        }
        ctx.rec.count('slow-reader results read', 1);
        if (code) break;
        await think(ctx);
      }
      if (!conn.closed) conn.write(terminateMessage());
    } finally {
      ctx.live.delete(handle);
      conn.destroy();
    }
  }
}

/**
 * One token opening more sessions than limits.maxSessionsPerSub allows, every 30 s: exactly `limit` must log in and
 * the rest be refused with 53300, and the ones that got in must work; then all are closed again.
 */
export async function sessionHog(ctx: SoakContext, i: number, limit: number): Promise<void> {
  const cls = 'hostile: one subject over its session limit';
  const extra = 5;
  while (running(ctx)) {
    const token = await ctx.mint({ sub: `soak-hog-${i}`, role: READER_ROLE, agent: `soak-hog-${i}` }, 120_000);
    const opened: PgSession[] = [];
    let refused = 0;
    const t0 = process.hrtime.bigint();
    // One after another, so the count at each login is exact.
    for (let k = 0; k < limit + extra && running(ctx); k++) {
      const s = await openPg(ctx, token, 'soak-hog', ADDRESS.hog);
      if ('error' in s) {
        ctx.rec.error(cls, s.error, s.error === '53300' && opened.length >= limit, s.message);
        if (s.error === '53300') refused++;
      } else opened.push(s);
    }
    if (running(ctx)) {
      ctx.rec.latency(`${cls} (time to open ${limit + extra})`, ms(t0));
      if (opened.length > limit)
        ctx.rec.error(
          cls,
          'over limit',
          false,
          `${opened.length} sessions of one sub logged in; limits.maxSessionsPerSub is ${limit}`,
        );
      const probe = opened[opened.length - 1];
      if (probe)
        await timed(ctx, cls, NONE, () => probe.client.query('SELECT 1'), `${cls} (a session within the limit)`);
      ctx.rec.count('session-limit refusals (53300)', refused);
    }
    await sleep(Math.min(10_000, ctx.stopAt - Date.now()));
    for (const s of opened) s.close();
    await sleep(Math.min(20_000, ctx.stopAt - Date.now()));
  }
}

/**
 * A runaway agent: SELECT 1 in a tight loop under a role with a per-minute statement budget. Statements past the
 * budget are refused with 53400; each success's send and answer times are kept to check no minute held more.
 */
export async function runaway(ctx: SoakContext, i: number, role: string, successes: [number, number][]): Promise<void> {
  const cls = 'runaway agent (budget)';
  return pgLoop(
    ctx,
    cls,
    { sub: `soak-runaway-${i}`, role, agent: `soak-runaway-${i}` },
    async (c) => {
      const sent = Date.now();
      const r = await timed(ctx, cls, new Set(['53400']), () => c.query('SELECT 1'), `${cls} (any answer)`);
      if (r.ok) successes.push([sent, Date.now()]);
      await sleep(Math.min(r.ok ? 10 : 50, ctx.stopAt - Date.now()));
    },
    false,
  );
}
