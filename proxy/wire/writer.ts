// Growable builder for outgoing messages: append fields, then frame() fills in the type byte and length word.

/** A leading gap of 5 bytes holds the type byte and the Int32 length, written once the body size is known. */
const HEADER = 5;

/**
 * Builds one message. Misuse by our own code (a NUL inside a string, an out-of-range integer) throws
 * TypeError/RangeError early: such a message would mean something else to the peer.
 */
export class Writer {
  private buf: Buffer;
  private end = HEADER;

  constructor(initialCapacity = 64) {
    this.buf = Buffer.allocUnsafe(Math.max(initialCapacity, HEADER + 8));
  }

  private ensure(n: number): void {
    const needed = this.end + n;
    if (needed <= this.buf.length) return;
    let capacity = this.buf.length * 2;
    while (capacity < needed) capacity *= 2;
    const grown = Buffer.allocUnsafe(capacity);
    this.buf.copy(grown, 0, 0, this.end);
    this.buf = grown;
  }

  uint8(v: number): this {
    this.ensure(1);
    this.end = this.buf.writeUInt8(v, this.end);
    return this;
  }

  int16(v: number): this {
    this.ensure(2);
    this.end = this.buf.writeInt16BE(v, this.end);
    return this;
  }

  uint16(v: number): this {
    this.ensure(2);
    this.end = this.buf.writeUInt16BE(v, this.end);
    return this;
  }

  int32(v: number): this {
    this.ensure(4);
    this.end = this.buf.writeInt32BE(v, this.end);
    return this;
  }

  uint32(v: number): this {
    this.ensure(4);
    this.end = this.buf.writeUInt32BE(v, this.end);
    return this;
  }

  /** A string and its NUL terminator. An embedded NUL would end the string early on the other side, so it is refused. */
  cstring(s: string): this {
    if (s.includes('\0')) throw new TypeError('a protocol string cannot contain NUL');
    const n = Buffer.byteLength(s, 'utf8');
    this.ensure(n + 1);
    this.end += this.buf.write(s, this.end, n, 'utf8');
    this.buf[this.end++] = 0;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.end);
    this.end += b.length;
    return this;
  }

  /** A typed message: type byte, then Int32 length counting itself and the body but not the type byte. */
  frame(type: number): Buffer {
    this.buf.writeUInt8(type, 0);
    this.buf.writeInt32BE(this.end - 1, 1);
    return this.buf.subarray(0, this.end);
  }

  /** An untyped message (StartupMessage, SSLRequest, CancelRequest): just the Int32 length and the body. */
  frameUntyped(): Buffer {
    this.buf.writeInt32BE(this.end - 1, 1);
    return this.buf.subarray(1, this.end);
  }
}
