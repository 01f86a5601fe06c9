// Hostile bytes on the client socket: every malformed or oversized frame gets 08P01 and the proxy keeps serving.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectPg, startTestProxy, type TestProxy } from '../helpers/proxy.ts';

let tp: TestProxy;
beforeAll(async () => {
  tp = await startTestProxy({ limits: { maxMessageSize: 64 * 1024, handshakeTimeout: 1500 } });
});
afterAll(async () => {
  await tp?.close();
});

/** Sends raw bytes and collects everything the proxy answers until it closes (bounded in time). */
function exchange(parts: Buffer[], waitMs = 3000): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: '127.0.0.1', port: tp.proxy.port }, () => {
      for (const p of parts) s.write(p);
    });
    const timer = setTimeout(() => s.destroy(), waitMs);
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

function int32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

function startupPacket(params: Record<string, string>): Buffer {
  const body = Buffer.concat([
    int32(196608),
    ...Object.entries(params).flatMap(([k, v]) => [Buffer.from(k + '\0'), Buffer.from(v + '\0')]),
    Buffer.from([0]),
  ]);
  return Buffer.concat([int32(body.length + 4), body]);
}

function message(type: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(type), int32(body.length + 4), body]);
}

/** Extracts the SQLSTATE of the first ErrorResponse in a byte stream. */
function sqlstateOf(buf: Buffer): string | undefined {
  for (let i = 0; i + 5 <= buf.length; ) {
    const type = String.fromCharCode(buf[i]!);
    const len = buf.readInt32BE(i + 1);
    if (type === 'E') {
      const body = buf.subarray(i + 5, i + 1 + len);
      for (let j = 0; j < body.length; ) {
        const code = body[j]!;
        if (code === 0) break;
        const end = body.indexOf(0, j + 1);
        if (String.fromCharCode(code) === 'C') return body.subarray(j + 1, end).toString();
        j = end + 1;
      }
    }
    if (len < 4) break;
    i += 1 + len;
  }
  return undefined;
}

async function loggedIn(extra: Buffer[]): Promise<Buffer> {
  const token = await tp.token();
  return await exchange([
    startupPacket({ user: 'alice', database: 'app' }),
    message('p', Buffer.from(token + '\0')),
    ...extra,
  ]);
}

describe('malformed frames get 08P01 (or, in the first packet, what PostgreSQL does) and never crash the proxy', () => {
  // PostgreSQL only logs these (COMMERROR) and closes: the client reads nothing before the close.
  it('startup length below the minimum: closed without a message', async () => {
    expect((await exchange([int32(3), Buffer.alloc(4)])).length).toBe(0);
  });

  it('startup length above 10,000 bytes is dropped before it is buffered, without a message', async () => {
    expect((await exchange([int32(1_000_000), Buffer.alloc(16)])).length).toBe(0);
  });

  it('a CancelRequest of the wrong length: closed without a message', async () => {
    expect((await exchange([int32(12), int32(80877102), int32(1)])).length).toBe(0);
  });

  it('a client that connects and disconnects at once, or mid-packet, gets nothing and leaves the proxy serving', async () => {
    expect((await exchange([], 300)).length).toBe(0);
    expect((await exchange([int32(40).subarray(0, 2)], 300)).length).toBe(0);
    expect((await exchange([int32(40), int32(196608)], 300)).length).toBe(0);
  });

  it("unknown protocol version: PostgreSQL's FATAL 0A000", async () => {
    const body = Buffer.concat([int32(2 << 16), Buffer.from('user\0x\0\0')]);
    expect(sqlstateOf(await exchange([int32(body.length + 4), body]))).toBe('0A000');
  });

  it('a non-password message during authentication', async () => {
    expect(
      sqlstateOf(await exchange([startupPacket({ user: 'alice' }), message('Q', Buffer.from('SELECT 1\0'))])),
    ).toBe('08P01');
  });

  it('a message longer than the configured maximum after login', async () => {
    const out = await loggedIn([Buffer.concat([Buffer.from('Q'), int32(10 * 1024 * 1024)])]);
    expect(sqlstateOf(out)).toBe('08P01');
  });

  it('a Query with an embedded NUL (the parser would truncate it)', async () => {
    const out = await loggedIn([message('Q', Buffer.from('SELECT 1\0; DELETE FROM canary\0'))]);
    expect(sqlstateOf(out)).toBe('08P01');
  });

  it('a Query that is not valid UTF-8', async () => {
    const out = await loggedIn([message('Q', Buffer.from([0x53, 0x45, 0xff, 0xfe, 0x00]))]);
    expect(sqlstateOf(out)).toBe('08P01');
  });

  it('an unknown message type', async () => {
    const out = await loggedIn([message('z', Buffer.from('x'))]);
    expect(sqlstateOf(out)).toBe('08P01');
  });

  it('a client that never finishes its startup packet is cut off by the handshake timeout, silently as PostgreSQL does', async () => {
    const t0 = Date.now();
    const out = await exchange([int32(100)], 5000);
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(out.length).toBe(0);
  });

  it('a client that never sends its password is cut off by the handshake timeout with 08P01', async () => {
    const t0 = Date.now();
    const out = await exchange([startupPacket({ user: 'alice' })], 5000);
    expect(Date.now() - t0).toBeLessThan(4000);
    expect(sqlstateOf(out)).toBe('08P01');
  });

  it('random garbage in many shapes leaves the proxy serving', async () => {
    for (let i = 0; i < 30; i++) {
      const junk = Buffer.alloc(1 + ((i * 37) % 300));
      for (let j = 0; j < junk.length; j++) junk[j] = (i * 131 + j * 17) & 0xff;
      await exchange([junk], 300);
    }
    const c = await connectPg(tp);
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await c.end();
  });
});
