// Independent byte builder for wire tests: builds frames by hand so tests never trust the encoders they check.

/** Appends big-endian fields to a plain number array; deliberately shares no code with proxy/wire/writer.ts. */
export class Bytes {
  private readonly out: number[] = [];

  u8(...values: number[]): this {
    for (const v of values) this.out.push(v & 0xff);
    return this;
  }

  i16(v: number): this {
    return this.u8((v >> 8) & 0xff, v & 0xff);
  }

  i32(v: number): this {
    return this.u8((v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
  }

  /** Raw UTF-8 of a string, no terminator (so tests can place NULs wherever they like). */
  str(s: string): this {
    for (const b of new TextEncoder().encode(s)) this.out.push(b);
    return this;
  }

  /** UTF-8 of a string followed by NUL. */
  cstr(s: string): this {
    return this.str(s).u8(0);
  }

  raw(bytes: ArrayLike<number>): this {
    for (let i = 0; i < bytes.length; i++) this.out.push((bytes[i] ?? 0) & 0xff);
    return this;
  }

  get length(): number {
    return this.out.length;
  }

  build(): Buffer {
    return Buffer.from(this.out);
  }
}

function bodyOf(body: Bytes | Buffer | undefined): Buffer {
  if (body === undefined) return Buffer.alloc(0);
  return body instanceof Bytes ? body.build() : body;
}

/** A typed message: type letter (or code), Int32 length = 4 + body, body. */
export function typed(type: string | number, body?: Bytes | Buffer): Buffer {
  const b = bodyOf(body);
  const code = typeof type === 'number' ? type : type.charCodeAt(0);
  return Buffer.concat([
    new Bytes()
      .u8(code)
      .i32(b.length + 4)
      .build(),
    b,
  ]);
}

/** An untyped startup-phase packet: Int32 length = 4 + body, body. */
export function untyped(body: Bytes | Buffer): Buffer {
  const b = bodyOf(body);
  return Buffer.concat([new Bytes().i32(b.length + 4).build(), b]);
}

/** A StartupMessage for protocol major.minor with the given parameters, in order. */
export function startupPacket(params: [string, string][], major = 3, minor = 0): Buffer {
  const body = new Bytes().i32((major << 16) | minor);
  for (const [k, v] of params) body.cstr(k).cstr(v);
  return untyped(body.u8(0));
}

/** Splits a buffer at the given offsets (sorted or not, duplicates allowed) into copies, as a socket might deliver it. */
export function splitAt(buf: Buffer, offsets: number[]): Buffer[] {
  const cuts = [...new Set(offsets.filter((o) => o > 0 && o < buf.length))].sort((a, b) => a - b);
  const parts: Buffer[] = [];
  let start = 0;
  for (const cut of cuts) {
    parts.push(Buffer.from(buf.subarray(start, cut)));
    start = cut;
  }
  parts.push(Buffer.from(buf.subarray(start)));
  return parts;
}
