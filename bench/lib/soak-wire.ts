// Raw PostgreSQL wire clients for the soak's hostile traffic: frames no driver would send (malformed, oversized,
// CancelRequest floods) and a reader that stops reading, over plain sockets from a chosen loopback source address.
// bench/stalled-reader.ts logs in and queries with these messages too.
import net from 'node:net';

export const PROTOCOL_3 = 196608;
export const CANCEL_REQUEST_CODE = 80877102;

export function startupMessage(params: Record<string, string>, version = PROTOCOL_3): Buffer {
  const body = Buffer.concat([
    ...Object.entries(params).flatMap(([k, v]) => [Buffer.from(`${k}\0`), Buffer.from(`${v}\0`)]),
    Buffer.from([0]),
  ]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(version, 4);
  return Buffer.concat([head, body]);
}

/** A regular message: type byte, Int32 length (self-inclusive), body. */
export function frame(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

export const passwordMessage = (password: string) => frame('p', Buffer.from(`${password}\0`));
export const queryMessage = (sql: string) => frame('Q', Buffer.from(`${sql}\0`));
export const terminateMessage = () => frame('X', Buffer.alloc(0));

export function cancelRequest(pid: number, key: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  b.writeInt32BE(pid | 0, 8);
  b.writeInt32BE(key | 0, 12);
  return b;
}

export interface BackendMessage {
  type: string;
  body: Buffer;
}

/** One field of an ErrorResponse body (C: SQLSTATE, M: message). */
export function errorField(body: Buffer, want: 'C' | 'M'): string | undefined {
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const field = String.fromCharCode(body[i] as number);
    const end = body.indexOf(0, i + 1);
    if (end < 0) return undefined;
    if (field === want) return body.toString('utf8', i + 1, end);
    i = end + 1;
  }
  return undefined;
}

export const errorCode = (body: Buffer) => errorField(body, 'C');

/**
 * A socket to pgwarden that splits what comes back into backend messages. `next()` resolves with the next message,
 * or undefined once the server has closed the connection (or `timeoutMs` passed: `timedOut` says which).
 */
export class RawConnection {
  readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private queue: BackendMessage[] = [];
  private waiter: (() => void) | undefined;
  closed = false;
  timedOut = false;
  /** Bytes received so far (counted as they arrive, whether or not they were parsed yet). */
  received = 0;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.received += d.length;
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      while (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1);
        if (this.buf.length < 1 + len) break;
        this.queue.push({ type: String.fromCharCode(this.buf[0] as number), body: this.buf.subarray(5, 1 + len) });
        this.buf = this.buf.subarray(1 + len);
      }
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {
      this.closed = true;
      this.wake();
    });
  }

  static connect(port: number, localAddress: string, timeoutMs = 10_000): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port, localAddress });
      s.setNoDelay(true);
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error('connect timeout'));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(new RawConnection(s));
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  write(b: Buffer): void {
    if (!this.closed) this.socket.write(b);
  }

  async next(timeoutMs: number): Promise<BackendMessage | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.queue.shift();
      if (m) return m;
      if (this.closed) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) {
        this.timedOut = true;
        return undefined;
      }
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiter = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  }

  /** Reads messages until one of `types` (returned), an ErrorResponse (returned), or close/timeout (undefined). */
  async until(types: string, timeoutMs: number): Promise<BackendMessage | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(1, deadline - Date.now()));
      if (!m) return undefined;
      if (m.type === 'E' || types.includes(m.type)) return m;
    }
  }

  /** Waits for the server to close the connection; true if it did within `timeoutMs`. */
  async waitClosed(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) await this.next(Math.max(1, deadline - Date.now()));
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
    this.closed = true;
  }
}

/** Logs in with a token as the password (cleartext over loopback); resolves at ReadyForQuery or with the refusal's SQLSTATE. */
export async function rawLogin(
  port: number,
  localAddress: string,
  user: string,
  database: string,
  token: string,
): Promise<{ conn: RawConnection; error?: string; message?: string }> {
  const conn = await RawConnection.connect(port, localAddress);
  conn.write(startupMessage({ user, database, application_name: 'soak-raw' }));
  for (;;) {
    const m = await conn.next(15_000);
    if (!m) return { conn, error: conn.timedOut ? 'timeout' : 'conn-closed' };
    if (m.type === 'E') return { conn, error: errorCode(m.body) ?? 'E', message: errorField(m.body, 'M') ?? '' };
    if (m.type === 'R' && m.body.readInt32BE(0) === 3) conn.write(passwordMessage(token));
    if (m.type === 'Z') return { conn };
  }
}
