// A minimal protocol client whose reading the test controls (pause, resume) and whose messages it writes byte by byte.
import net from 'node:net';
import { typed } from './bytes.ts';

const cstr = (s: string) => Buffer.from(`${s}\0`, 'utf8');

export const query = (sql: string) => typed('Q', cstr(sql));
/** Parse with no parameter types. */
export const parse = (name: string, sql: string) =>
  typed('P', Buffer.concat([cstr(name), cstr(sql), Buffer.from([0, 0])]));
/** Bind with no parameters and text results. */
export const bind = (portal: string, statement: string) =>
  typed('B', Buffer.concat([cstr(portal), cstr(statement), Buffer.from([0, 0, 0, 0, 0, 0])]));
export const execute = (portal: string, maxRows = 0) => {
  const n = Buffer.alloc(4);
  n.writeInt32BE(maxRows, 0);
  return typed('E', Buffer.concat([cstr(portal), n]));
};
export const closeMessage = (target: 'S' | 'P', name: string) =>
  typed('C', Buffer.concat([Buffer.from(target, 'latin1'), cstr(name)]));
export const sync = () => typed('S', Buffer.alloc(0));
export const flush = () => typed('H', Buffer.alloc(0));

/** Reads whole backend messages from a socket; `onMessage` sees each (type, body). */
export class RawClient {
  readonly socket: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private waiters: { pred: (type: string, body: Buffer) => boolean; resolve: () => void }[] = [];
  onMessage: (type: string, body: Buffer) => void = () => {};

  private constructor(socket: net.Socket) {
    this.socket = socket;
    // Chunks are joined only once a whole message is here: joining on every chunk is quadratic for a 64 MiB message.
    const chunks: Buffer[] = [];
    let size = 0;
    let need = 5;
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      while (size >= need) {
        this.buf = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
        chunks.length = 0;
        chunks.push(this.buf);
        const len = this.buf.readInt32BE(1);
        if (this.buf.length < len + 1) {
          need = len + 1;
          break;
        }
        const type = String.fromCharCode(this.buf[0] as number);
        const body = this.buf.subarray(5, len + 1);
        this.buf = this.buf.subarray(len + 1);
        chunks.length = 0;
        if (this.buf.length > 0) chunks.push(this.buf);
        size = this.buf.length;
        need = 5;
        this.onMessage(type, body);
        this.waiters = this.waiters.filter((w) => {
          if (!w.pred(type, body)) return true;
          w.resolve();
          return false;
        });
      }
    });
  }

  static async connect(port: number, token: string): Promise<RawClient> {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const c = new RawClient(socket);
    const params = Buffer.from('user\0alice\0database\0app\0\0', 'utf8');
    const startup = Buffer.alloc(8);
    startup.writeInt32BE(8 + params.length, 0);
    startup.writeInt32BE(196608, 4);
    const asked = c.next((t) => t === 'R');
    socket.write(Buffer.concat([startup, params]));
    await asked;
    const ready = c.next((t) => t === 'Z');
    socket.write(typed('p', Buffer.from(`${token}\0`, 'utf8')));
    await ready;
    return c;
  }

  /** Resolves at the next message matching `pred`. */
  next(pred: (type: string, body: Buffer) => boolean): Promise<void> {
    return new Promise((resolve) => this.waiters.push({ pred, resolve }));
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The SQLSTATE of an ErrorResponse body (its 'C' field). */
export function errorCode(body: Buffer): string | undefined {
  let pos = 0;
  while (pos < body.length && body[pos] !== 0) {
    const field = body[pos];
    const end = body.indexOf(0, pos + 1);
    if (end === -1) return undefined;
    if (field === 0x43) return body.subarray(pos + 1, end).toString('utf8');
    pos = end + 1;
  }
  return undefined;
}
