// Issue 12 through the real proxy: protocol and login limits (08P01 at once, expired tokens, the pre-login cap) and admission (unauthenticated caps, logged-in slots).
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { connectPg, loginError, startTestProxy, superClient, type TestProxy } from '../helpers/proxy.ts';
import { SAMPLE_DATABASE } from '../../proxy/embedded/sample.ts';
import { Bytes, startupPacket, typed } from '../helpers/bytes.ts';

interface RawError {
  code: string | undefined;
  message: string | undefined;
}

/** A raw client socket that records every byte the proxy sends and when it closed. */
class RawClient {
  readonly socket: net.Socket;
  private data = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;
  readonly ready: Promise<void>;

  constructor(port: number, localAddress?: string) {
    this.socket = net.connect({ host: '127.0.0.1', port, ...(localAddress === undefined ? {} : { localAddress }) });
    this.ready = new Promise((resolve, reject) => {
      this.socket.once('connect', () => resolve());
      this.socket.once('error', reject);
    });
    this.socket.on('error', () => {});
    this.socket.on('data', (d) => {
      this.data = Buffer.concat([this.data, d]);
      this.wake();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `pred` holds over what was received (or the socket closed), at most `ms`. */
  async until(pred: () => boolean, ms = 3000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!pred() && !this.closed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, Math.max(1, deadline - Date.now()));
      });
    }
    return pred();
  }

  /** Type letters of the messages received so far. */
  types(): string[] {
    const out: string[] = [];
    for (let i = 0; i + 5 <= this.data.length; ) {
      out.push(String.fromCharCode(this.data[i] ?? 0));
      i += 1 + this.data.readInt32BE(i + 1);
    }
    return out;
  }

  /** The first ErrorResponse's SQLSTATE and message. */
  error(): RawError | undefined {
    for (let i = 0; i + 5 <= this.data.length; ) {
      const len = this.data.readInt32BE(i + 1);
      if (this.data[i] === 0x45 && i + 1 + len <= this.data.length) {
        const fields = new Map<string, string>();
        const body = this.data.subarray(i + 5, i + 1 + len);
        for (let j = 0; j < body.length && body[j] !== 0; ) {
          const end = body.indexOf(0, j + 1);
          fields.set(String.fromCharCode(body[j] ?? 0), body.subarray(j + 1, end).toString());
          j = end + 1;
        }
        return { code: fields.get('C'), message: fields.get('M') };
      }
      i += 1 + len;
    }
    return undefined;
  }

  async closedWithin(ms: number): Promise<boolean> {
    await this.until(() => this.closed, ms);
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

const startup = () =>
  startupPacket([
    ['user', 'alice'],
    ['database', SAMPLE_DATABASE],
  ]);
const password = (token: string) => typed('p', new Bytes().cstr(token));

/** Logs in over a raw socket and returns it at ReadyForQuery. */
async function rawLogin(tp: TestProxy, token: string): Promise<RawClient> {
  const c = new RawClient(tp.proxy.port);
  await c.ready;
  c.socket.write(startup());
  expect(await c.until(() => c.types().includes('R'))).toBe(true);
  c.socket.write(password(token));
  expect(await c.until(() => c.types().includes('Z'), 5000)).toBe(true);
  return c;
}

const clients: RawClient[] = [];
function track(c: RawClient): RawClient {
  clients.push(c);
  return c;
}

describe('protocol and login', () => {
  let tp: TestProxy;
  beforeAll(async () => {
    tp = await startTestProxy({ auth: { clockSkew: 30_000 } });
  });
  afterAll(async () => {
    for (const c of clients.splice(0)) c.destroy();
    await tp?.close();
  });

  it.each([
    ['a second StartupMessage', startup()],
    ['an SSLRequest', new Bytes().i32(8).i32(80877103).build()],
    ['a CancelRequest', new Bytes().i32(16).i32(80877102).i32(1).i32(2).build()],
  ])('%s after login gets 08P01 and the connection is closed at once', async (_name, packet) => {
    const c = track(await rawLogin(tp, await tp.token()));
    const t0 = Date.now();
    c.socket.write(packet);
    expect(await c.until(() => c.error() !== undefined, 2000)).toBe(true);
    expect(c.error()).toEqual({ code: '08P01', message: 'invalid frontend message type 0 (reason=protocol_error)' });
    // The proxy half-closes at once; without the type check it waited for a 2 KB "body" that never came.
    expect(await c.closedWithin(2000)).toBe(true);
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('a PasswordMessage declaring more than the pre-login cap is refused after its header, whatever limits.maxMessageSize allows', async () => {
    expect(tp.config.limits.maxMessageSize).toBe(1024 * 1024);
    const c = track(new RawClient(tp.proxy.port));
    await c.ready;
    c.socket.write(startup());
    expect(await c.until(() => c.types().includes('R'))).toBe(true);
    c.socket.write(
      new Bytes()
        .u8(0x70)
        .i32(512 * 1024)
        .build(),
    );
    expect(await c.until(() => c.error() !== undefined, 2000)).toBe(true);
    expect(c.error()?.code).toBe('08P01');
    expect(c.error()?.message).toBe('invalid message length (reason=protocol_error)');
    expect(await c.closedWithin(2000)).toBe(true);
  });

  it('a logged-in session still takes messages up to limits.maxMessageSize', async () => {
    const c = await connectPg(tp);
    try {
      const r = await c.query('SELECT length($1::text) AS n', ['x'.repeat(300_000)]);
      expect(r.rows[0].n).toBe(300_000);
    } finally {
      await c.end();
    }
  });

  it('a token that expired within the clock skew is refused before any upstream connection', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await tp.sign({
      sub: 'skewed-expiry',
      role: 'analyst',
      iss: 'pgwarden-test',
      aud: 'pgwarden',
      iat: now - 120,
      exp: now - 5,
    });
    const err = await loginError(tp.pgConfig(token));
    expect(err.code).toBe('28P01');
    expect(err.message).toMatch(
      /^token expired at [0-9T:.-]+Z; hint: Request a new token and reconnect with it as the password \(reason=credential_expired\)$/,
    );
    const su = await superClient();
    try {
      const r = await su.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'pgwarden:skewed-expiry%'",
      );
      expect(r.rows[0].n).toBe(0);
    } finally {
      await su.end();
    }
    expect(tp.logs.join('')).not.toMatch(/skewed-expiry/);
  });

  it('stamps idle_in_transaction_session_timeout (60 s by default) and refuses raising or disabling it', async () => {
    const c = await connectPg(tp);
    try {
      expect(
        (await c.query('SHOW idle_in_transaction_session_timeout')).rows[0].idle_in_transaction_session_timeout,
      ).toBe('1min');
      for (const sql of [
        'SET idle_in_transaction_session_timeout = 0',
        "SET idle_in_transaction_session_timeout = '1h'",
        "SET statement_timeout = '400us'",
      ]) {
        await expect(c.query(sql)).rejects.toMatchObject({ code: '42501' });
      }
      await c.query("SET idle_in_transaction_session_timeout = '10s'");
      expect(
        (await c.query('SHOW idle_in_transaction_session_timeout')).rows[0].idle_in_transaction_session_timeout,
      ).toBe('10s');
      await c.query('RESET idle_in_transaction_session_timeout');
      expect(
        (await c.query('SHOW idle_in_transaction_session_timeout')).rows[0].idle_in_transaction_session_timeout,
      ).toBe('1min');
    } finally {
      await c.end();
    }
  });
});

describe('admission', () => {
  afterAll(() => {
    for (const c of clients.splice(0)) c.destroy();
  });

  async function idleSockets(tp: TestProxy, n: number, localAddress?: string): Promise<RawClient[]> {
    const out: RawClient[] = [];
    for (let i = 0; i < n; i++) {
      const c = track(new RawClient(tp.proxy.port, localAddress));
      await c.ready;
      out.push(c);
    }
    // Let the proxy accept them all.
    await new Promise((r) => setTimeout(r, 100));
    for (const c of out) expect(c.closed).toBe(false);
    return out;
  }

  it("idle unauthenticated connections never take a logged-in session's place", async () => {
    const tp = await startTestProxy({
      limits: { maxClientConnections: 2, maxUnauthenticated: 20, maxUnauthenticatedPerAddress: 20 },
    });
    const open: pg.Client[] = [];
    try {
      const idle = await idleSockets(tp, 10);
      open.push(await connectPg(tp, await tp.token({ sub: 'a' })));
      open.push(await connectPg(tp, await tp.token({ sub: 'b' })));
      const third = await loginError(tp.pgConfig(await tp.token({ sub: 'c' })));
      expect(third.code).toBe('53300');
      expect(third.message).toContain('limits.maxClientConnections = 2');
      for (const c of idle) c.destroy();
    } finally {
      await Promise.all(open.map((c) => c.end()));
      await tp.close();
    }
  });

  it('caps unauthenticated connections per address and in all with 53300 naming the limit; a login frees its slot', async () => {
    const tp = await startTestProxy({ limits: { maxUnauthenticated: 4, maxUnauthenticatedPerAddress: 2 } });
    try {
      const first = await idleSockets(tp, 1);
      // Logins from the same address come and go: each holds an unauthenticated slot only until it is logged in.
      for (let i = 0; i < 3; i++) {
        const c = await connectPg(tp);
        await c.end();
      }
      const second = await idleSockets(tp, 1);
      const overAddress = track(new RawClient(tp.proxy.port));
      await overAddress.ready;
      expect(await overAddress.until(() => overAddress.error() !== undefined)).toBe(true);
      expect(overAddress.error()).toEqual({
        code: '53300',
        message:
          'too many connections not yet logged in from this address (limits.maxUnauthenticatedPerAddress = 2); hint: complete or close pending logins before opening more connections (reason=rate_limited)',
      });
      // Other addresses fill the rest; the next one is refused by the overall cap.
      await idleSockets(tp, 2, '127.0.0.2');
      const overAll = track(new RawClient(tp.proxy.port, '127.0.0.3'));
      await overAll.ready;
      expect(await overAll.until(() => overAll.error() !== undefined)).toBe(true);
      expect(overAll.error()).toEqual({
        code: '53300',
        message:
          'too many connections not yet logged in (limits.maxUnauthenticated = 4); hint: try again later; logged-in sessions are not affected by this limit (reason=limit_reached)',
      });
      // Closing idle sockets frees their slots.
      for (const c of [...first, ...second]) c.destroy();
      await new Promise((r) => setTimeout(r, 100));
      const c = await connectPg(tp);
      await c.end();
    } finally {
      await tp.close();
    }
  });

  it('an idle unauthenticated connection is ended by the handshake timeout, freeing its slot', async () => {
    const tp = await startTestProxy({ limits: { handshakeTimeout: 300, maxUnauthenticatedPerAddress: 1 } });
    try {
      const [idle] = await idleSockets(tp, 1);
      expect(await idle!.closedWithin(2000)).toBe(true);
      const c = await connectPg(tp);
      await c.end();
    } finally {
      await tp.close();
    }
  });

  it('per-agent and per-subject session limits refuse with 53300 naming the limit', async () => {
    const tp = await startTestProxy({ limits: { maxSessionsPerSub: 2, maxSessionsPerAgent: 1 } });
    const open: pg.Client[] = [];
    try {
      open.push(await connectPg(tp, await tp.token({ sub: 's1', agent: 'bot' })));
      const agent = await loginError(tp.pgConfig(await tp.token({ sub: 's2', agent: 'bot' })));
      expect(agent.code).toBe('53300');
      expect(agent.message).toBe(
        'too many sessions for agent "bot" (limits.maxSessionsPerAgent = 1); hint: close an idle session and try again (reason=limit_reached)',
      );
      open.push(await connectPg(tp, await tp.token({ sub: 's1', agent: 'other-bot' })));
      const sub = await loginError(tp.pgConfig(await tp.token({ sub: 's1', agent: 'third-bot' })));
      expect(sub.code).toBe('53300');
      expect(sub.message).toBe(
        'too many sessions for subject "s1" (limits.maxSessionsPerSub = 2); hint: close an idle session and try again (reason=limit_reached)',
      );
    } finally {
      await Promise.all(open.map((c) => c.end()));
      await tp.close();
    }
  });
});
