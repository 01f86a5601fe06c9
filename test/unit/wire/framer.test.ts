// MessageFramer: frame boundaries, zero-copy views, hostile lengths and the startup phase.
import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../../lib/errors.ts';
import {
  FRONTEND_MESSAGE_TYPES,
  MessageFramer,
  UnansweredStartupPacket,
  type Frame,
} from '../../../proxy/wire/framer.ts';
import { MAX_PASSWORD_MESSAGE_LENGTH, MAX_TOKEN_LENGTH } from '../../../proxy/auth/jwt.ts';
import { Bytes, splitAt, startupPacket, typed, untyped } from '../../helpers/bytes.ts';
import { expectProtocolError } from '../../helpers/errors.ts';

const MB = 1024 * 1024;

function drain(framer: MessageFramer): Frame[] {
  const frames: Frame[] = [];
  for (let f = framer.next(); f !== null; f = framer.next()) frames.push(f);
  return frames;
}

/** Frames as plain data, copied, so comparisons do not depend on views. */
function snapshot(frames: Frame[]): { type: number; body: string; raw: string }[] {
  return frames.map((f) => ({ type: f.type, body: f.body.toString('hex'), raw: f.raw.toString('hex') }));
}

const stream = Buffer.concat([
  typed('Q', new Bytes().cstr('SELECT 1')),
  typed('P', new Bytes().cstr('s1').cstr('SELECT $1').i16(1).i32(23)),
  typed('S'),
  typed('D', Buffer.alloc(700, 7)), // bigger than the small-chunk threshold
  typed('X'),
]);

describe('MessageFramer regular messages', () => {
  it('returns each message with its type, body and raw bytes', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(stream);
    const frames = drain(framer);
    expect(frames.map((f) => String.fromCharCode(f.type))).toEqual(['Q', 'P', 'S', 'D', 'X']);
    const [q, , sync] = frames;
    expect(q?.body.toString()).toBe('SELECT 1\0');
    expect(q?.raw.equals(typed('Q', new Bytes().cstr('SELECT 1')))).toBe(true);
    expect(sync?.body.length).toBe(0);
    expect(sync?.raw.length).toBe(5);
    expect(framer.buffered).toBe(0);
  });

  it('returns views into the pushed chunk when it holds whole messages (no copy)', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    const chunk = Buffer.from(stream);
    framer.push(chunk);
    let offset = 0;
    for (const f of drain(framer)) {
      expect(f.raw.buffer).toBe(chunk.buffer);
      expect(f.raw.byteOffset).toBe(chunk.byteOffset + offset);
      expect(f.body.buffer).toBe(chunk.buffer);
      expect(f.body.byteOffset).toBe(f.raw.byteOffset + 5);
      offset += f.raw.length;
    }
    expect(offset).toBe(chunk.length);
  });

  it('gives identical frames when the stream is split at every byte offset', () => {
    const one = new MessageFramer({ maxMessageSize: MB });
    one.push(stream);
    const expected = snapshot(drain(one));
    for (let cut = 0; cut <= stream.length; cut++) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      const frames: Frame[] = [];
      for (const part of splitAt(stream, [cut])) {
        framer.push(part);
        frames.push(...drain(framer));
      }
      expect(snapshot(frames), `cut at ${cut}`).toEqual(expected);
      expect(framer.buffered).toBe(0);
    }
  });

  it('gives identical frames when every split offset is pushed before any next()', () => {
    const one = new MessageFramer({ maxMessageSize: MB });
    one.push(stream);
    const expected = snapshot(drain(one));
    for (let cut = 0; cut <= stream.length; cut++) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      for (const part of splitAt(stream, [cut, cut + 3, cut + 600])) framer.push(part);
      expect(snapshot(drain(framer)), `cut at ${cut}`).toEqual(expected);
    }
  });

  it('handles one byte per push', () => {
    const one = new MessageFramer({ maxMessageSize: MB });
    one.push(stream);
    const expected = snapshot(drain(one));
    const framer = new MessageFramer({ maxMessageSize: MB });
    const frames: Frame[] = [];
    for (let i = 0; i < stream.length; i++) {
      framer.push(stream.subarray(i, i + 1));
      frames.push(...drain(framer));
    }
    expect(snapshot(frames)).toEqual(expected);
  });

  it('keeps returned views intact after later pushes', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    const held: { frame: Frame; copy: string }[] = [];
    // Odd splits exercise the view path, the straddling-copy path and the small-chunk accumulator.
    const parts = splitAt(Buffer.concat([stream, stream, stream]), [3, 4, 9, 10, 11, 40, 41, 800, 1500, 1501]);
    for (const part of parts) {
      framer.push(part);
      for (const f of drain(framer)) held.push({ frame: f, copy: f.raw.toString('hex') });
    }
    framer.push(typed('Q', new Bytes().cstr('x'.repeat(100))).subarray(0, 3));
    framer.push(Buffer.alloc(100, 0x41));
    for (const h of held) expect(h.frame.raw.toString('hex')).toBe(h.copy);
    expect(held.length).toBe(15);
  });

  it('does not overwrite a view handed out from the small-chunk accumulator when more small chunks arrive', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    const q1 = typed('Q', new Bytes().cstr('SELECT 1'));
    const q2 = typed('Q', new Bytes().cstr('SELECT 2'));
    framer.push(Buffer.concat([Buffer.alloc(600, 0), q1.subarray(0, 2)]).subarray(600)); // partial q1
    framer.push(Buffer.concat([q1.subarray(2), typed('H'), q2.subarray(0, 2)])); // small: accumulated
    const first = framer.next();
    const flush = framer.next();
    expect(first?.raw.equals(q1)).toBe(true);
    expect(flush?.raw.equals(typed('H'))).toBe(true);
    expect(framer.next()).toBeNull();
    framer.push(q2.subarray(2, 5)); // appended after the bytes `flush` views
    framer.push(Buffer.alloc(0));
    framer.push(q2.subarray(5));
    expect(framer.next()?.raw.equals(q2)).toBe(true);
    expect(first?.raw.equals(q1)).toBe(true);
    expect(flush?.raw.equals(typed('H'))).toBe(true);
  });

  it('returns null until the whole message is buffered, and counts buffered bytes', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    const msg = typed('Q', new Bytes().cstr('SELECT 42'));
    framer.push(msg.subarray(0, 4));
    expect(framer.next()).toBeNull();
    expect(framer.buffered).toBe(4);
    framer.push(msg.subarray(4, 8));
    expect(framer.next()).toBeNull();
    expect(framer.buffered).toBe(8);
    framer.push(msg.subarray(8));
    expect(framer.next()?.raw.equals(msg)).toBe(true);
    expect(framer.buffered).toBe(0);
    expect(framer.next()).toBeNull();
  });

  it('accepts length 4 (empty body) and exactly maxMessageSize', () => {
    const framer = new MessageFramer({ maxMessageSize: 100 });
    framer.push(typed('H'));
    framer.push(typed('d', Buffer.alloc(96)));
    const frames = drain(framer);
    expect(frames.map((f) => f.raw.length)).toEqual([5, 101]);
  });

  it('rejects a length below 4 as soon as the header is here', () => {
    for (const length of [0, 1, 3, -1, -2147483648]) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      framer.push(new Bytes().u8(0x51).i32(length).build());
      expectProtocolError(() => framer.next());
    }
  });

  it('rejects a length above maxMessageSize after 5 bytes, without waiting for or allocating the body', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(
      new Bytes()
        .u8(0x44)
        .i32(1024 * MB)
        .build(),
    );
    const err = expectProtocolError(() => framer.next());
    expect(err.detail).toContain('exceeds');
    const justOver = new MessageFramer({ maxMessageSize: 100 });
    justOver.push(new Bytes().u8(0x44).i32(101).build());
    expectProtocolError(() => justOver.next());
  });

  it('rejects an oversized header split across pushes as soon as its fifth byte arrives', () => {
    const header = new Bytes().u8(0x51).i32(0x7fffffff).build();
    const framer = new MessageFramer({ maxMessageSize: 1024 });
    framer.push(typed('S'));
    expect(framer.next()?.type).toBe(0x53);
    framer.push(header.subarray(0, 2));
    expect(framer.next()).toBeNull();
    framer.push(header.subarray(2));
    expectProtocolError(() => framer.next());
  });

  it('takeRemaining returns unreturned bytes, including a partial message, and clears them', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    const tail = typed('Q', new Bytes().cstr('SELECT 2'));
    framer.push(Buffer.concat([typed('S'), tail.subarray(0, 6)]));
    framer.push(tail.subarray(6, 9));
    expect(framer.next()?.type).toBe(0x53);
    expect(framer.next()).toBeNull();
    expect(framer.takeRemaining().equals(tail.subarray(0, 9))).toBe(true);
    expect(framer.buffered).toBe(0);
    expect(framer.takeRemaining().length).toBe(0);
    framer.push(typed('H'));
    expect(framer.next()?.type).toBe(0x48);
  });

  it('refuses a nonsensical maxMessageSize as misuse', () => {
    expect(() => new MessageFramer({ maxMessageSize: 3 })).toThrow(TypeError);
    expect(() => new MessageFramer({ maxMessageSize: 1.5 })).toThrow(TypeError);
    expect(() => new MessageFramer({ maxMessageSize: 2 ** 31 })).toThrow(TypeError);
  });
});

describe('MessageFramer startup phase', () => {
  it('parses a StartupMessage with parameters, version and raw bytes', () => {
    const packet = startupPacket([
      ['user', 'agent'],
      ['database', 'app'],
      ['application_name', ''],
    ]);
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(packet);
    const msg = framer.nextStartup();
    expect(msg?.kind).toBe('startup');
    if (msg?.kind !== 'startup') return;
    expect(msg.major).toBe(3);
    expect(msg.minor).toBe(0);
    expect([...msg.params]).toEqual([
      ['user', 'agent'],
      ['database', 'app'],
      ['application_name', ''],
    ]);
    expect(msg.raw.equals(packet)).toBe(true);
  });

  it('passes the minor version through (protocol 3.2)', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(startupPacket([['user', 'u']], 3, 2));
    const msg = framer.nextStartup();
    expect(msg?.kind === 'startup' && msg.minor).toBe(2);
  });

  it('accepts an empty parameter list (the session checks for user)', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(startupPacket([]));
    const msg = framer.nextStartup();
    expect(msg?.kind === 'startup' && msg.params.size).toBe(0);
  });

  it('splits a startup packet followed by pipelined messages at every offset', () => {
    const packet = startupPacket([
      ['user', 'u'],
      ['database', 'd'],
    ]);
    const query = typed('Q', new Bytes().cstr('SELECT 1'));
    const all = Buffer.concat([packet, query]);
    for (let cut = 0; cut <= all.length; cut++) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      const [a, b] = splitAt(all, [cut]);
      framer.push(a ?? Buffer.alloc(0));
      let startup = framer.nextStartup();
      if (startup === null) {
        framer.push(b ?? Buffer.alloc(0));
        startup = framer.nextStartup();
      } else if (b !== undefined) {
        framer.push(b);
      }
      expect(startup?.kind, `cut ${cut}`).toBe('startup');
      expect(framer.next()?.raw.equals(query), `cut ${cut}`).toBe(true);
    }
  });

  it('accepts a packet of exactly 10000 bytes and rejects 10001 after 4 bytes', () => {
    const pad = (total: number): Buffer => {
      // 4 length + 4 version + "k\0" + value + "\0" + final "\0" = total
      const value = 'v'.repeat(total - 4 - 4 - 2 - 1 - 1);
      return startupPacket([['k', value]]);
    };
    const ok = pad(10000);
    expect(ok.length).toBe(10000);
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(ok);
    expect(framer.nextStartup()?.kind).toBe('startup');

    const tooLong = new MessageFramer({ maxMessageSize: MB });
    tooLong.push(new Bytes().i32(10001).build());
    expect(expectProtocolError(() => tooLong.nextStartup())).toBeInstanceOf(UnansweredStartupPacket);
  });

  it('rejects a length below 8 as soon as 4 bytes are here, as a packet PostgreSQL drops unanswered', () => {
    for (const length of [0, 4, 7, -1]) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      framer.push(new Bytes().i32(length).build());
      expect(expectProtocolError(() => framer.nextStartup())).toBeInstanceOf(UnansweredStartupPacket);
    }
  });

  it('returns null for fewer than 4 bytes or a partial packet', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    const packet = startupPacket([['user', 'u']]);
    framer.push(packet.subarray(0, 3));
    expect(framer.nextStartup()).toBeNull();
    framer.push(packet.subarray(3, 10));
    expect(framer.nextStartup()).toBeNull();
    framer.push(packet.subarray(10));
    expect(framer.nextStartup()?.kind).toBe('startup');
  });

  it('recognizes SSLRequest and GSSENCRequest of exactly 8 bytes', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(untyped(new Bytes().i32(80877103)));
    framer.push(untyped(new Bytes().i32(80877104)));
    expect(framer.nextStartup()).toEqual({ kind: 'ssl' });
    expect(framer.nextStartup()).toEqual({ kind: 'gssenc' });
    expect(framer.buffered).toBe(0);
  });

  it('leaves bytes sent after an SSLRequest visible in buffered (for the session to refuse)', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(Buffer.concat([untyped(new Bytes().i32(80877103)), typed('Q', new Bytes().cstr('SELECT 1'))]));
    expect(framer.nextStartup()).toEqual({ kind: 'ssl' });
    expect(framer.buffered).toBeGreaterThan(0);
  });

  it('reads SSLRequest and GSSENCRequest with extra bytes as PostgreSQL does: the request, its extra bytes dropped', () => {
    for (const [code, kind] of [
      [80877103, 'ssl'],
      [80877104, 'gssenc'],
    ] as const) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      framer.push(untyped(new Bytes().i32(code).i32(0)));
      expect(framer.nextStartup()).toEqual({ kind });
      expect(framer.buffered).toBe(0);
    }
  });

  it('parses a 16-byte CancelRequest and a protocol 3.2 one with a longer key', () => {
    const framer = new MessageFramer({ maxMessageSize: MB });
    framer.push(untyped(new Bytes().i32(80877102).i32(4242).raw([1, 2, 3, 4])));
    expect(framer.nextStartup()).toEqual({ kind: 'cancel', processId: 4242, secretKey: Buffer.from([1, 2, 3, 4]) });
    const longKey = Buffer.alloc(32, 9);
    framer.push(untyped(new Bytes().i32(80877102).i32(7).raw(longKey)));
    expect(framer.nextStartup()).toEqual({ kind: 'cancel', processId: 7, secretKey: longKey });
    const maxKey = Buffer.alloc(256, 1);
    framer.push(untyped(new Bytes().i32(80877102).i32(7).raw(maxKey)));
    expect(framer.nextStartup()).toEqual({ kind: 'cancel', processId: 7, secretKey: maxKey });
  });

  it('rejects a CancelRequest with a key shorter than 4 or longer than 256 bytes', () => {
    for (const keyLength of [0, 3, 257]) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      framer.push(untyped(new Bytes().i32(80877102).i32(1).raw(Buffer.alloc(keyLength))));
      expect(expectProtocolError(() => framer.nextStartup())).toBeInstanceOf(UnansweredStartupPacket);
    }
  });

  it("rejects unknown request codes and protocol versions other than 3 with PostgreSQL's FATAL 0A000", () => {
    for (const code of [80877105, (1234 << 16) | 1, 2 << 16, 4 << 16, 0]) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      framer.push(untyped(new Bytes().i32(code).cstr('user').cstr('u').u8(0)));
      let caught: unknown;
      try {
        framer.nextStartup();
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ProxyError);
      expect(caught).not.toBeInstanceOf(UnansweredStartupPacket);
      const e = caught as ProxyError;
      expect([e.sqlstate, e.severity]).toEqual(['0A000', 'FATAL']);
      expect(e.message).toBe(
        `unsupported frontend protocol ${code >>> 16}.${code & 0xffff}: server supports 3.0 to 3.0`,
      );
    }
  });

  it('rejects malformed parameter lists', () => {
    const cases: [string, Bytes][] = [
      ['no final terminator', new Bytes().i32(196608).cstr('user').cstr('u')],
      ['name without value', new Bytes().i32(196608).cstr('user').u8(0)],
      ['odd count', new Bytes().i32(196608).cstr('user').cstr('u').cstr('database').u8(0)],
      ['unterminated name', new Bytes().i32(196608).str('user')],
      ['bytes after the terminator', new Bytes().i32(196608).cstr('user').cstr('u').u8(0).u8(0x41)],
      ['invalid UTF-8 in a value', new Bytes().i32(196608).cstr('user').u8(0xc3, 0x28, 0).u8(0)],
      ['invalid UTF-8 in a name', new Bytes().i32(196608).u8(0xff, 0).cstr('u').u8(0)],
      ['surrogate encoded as UTF-8', new Bytes().i32(196608).cstr('user').u8(0xed, 0xa0, 0x80, 0).u8(0)],
      ['duplicate name', new Bytes().i32(196608).cstr('user').cstr('a').cstr('user').cstr('b').u8(0)],
      ['no parameters and no terminator', new Bytes().i32(196608)],
    ];
    for (const [name, body] of cases) {
      const framer = new MessageFramer({ maxMessageSize: MB });
      framer.push(untyped(body));
      const err = expectProtocolError(() => framer.nextStartup());
      expect(err.message, name).toMatch(/startup packet|UTF-8/);
    }
  });
});

describe('MessageFramer frontend types and the pre-login cap', () => {
  const frontend = () => new MessageFramer({ maxMessageSize: MB, validTypes: FRONTEND_MESSAGE_TYPES });
  const sslRequest = new Bytes().i32(8).i32(80877103).build();
  const cancelRequest = new Bytes().i32(16).i32(80877102).i32(1).i32(2).build();

  it('accepts every frontend message type', () => {
    const framer = frontend();
    framer.push(stream);
    expect(drain(framer).map((f) => String.fromCharCode(f.type))).toEqual(['Q', 'P', 'S', 'D', 'X']);
    for (const t of FRONTEND_MESSAGE_TYPES) {
      framer.push(typed(t));
      expect(framer.next()?.type).toBe(t);
    }
  });

  it.each([
    ['a second StartupMessage', startupPacket([['user', 'mallory']])],
    ['an SSLRequest', sslRequest],
    ['a CancelRequest', cancelRequest],
  ])('refuses %s in the regular phase at its first byte, without waiting for a body', (_name, packet) => {
    const framer = frontend();
    framer.push(typed('S'));
    expect(framer.next()?.type).toBe(0x53);
    framer.push(packet.subarray(0, 1));
    const err = expectProtocolError(() => framer.next());
    expect(err.message).toBe('invalid frontend message type 0');
    expect(err.detail).toMatch(/may only be the first message/);
    // Whole packets too: 00 00 00 08 would otherwise be read as type 0 with a length of 2048 bytes.
    const whole = frontend();
    whole.push(packet);
    expectProtocolError(() => whole.next());
  });

  it('refuses any other unknown type byte at once, and leaves the upstream side (no validTypes) untouched', () => {
    for (const t of [0x5a, 0x01, 0xff, 0x52]) {
      const framer = frontend();
      framer.push(Buffer.from([t]));
      expect(expectProtocolError(() => framer.next()).message).toBe(`invalid frontend message type ${t}`);
    }
    const any = new MessageFramer({ maxMessageSize: MB });
    any.push(sslRequest);
    expect(any.next()).toBeNull(); // read as type 0 with length 0x804, waiting for a body that never comes
  });

  it('caps a pre-login message at MAX_PASSWORD_MESSAGE_LENGTH and raises the cap with setMaxMessageSize', () => {
    expect(MAX_PASSWORD_MESSAGE_LENGTH).toBeGreaterThan(MAX_TOKEN_LENGTH + 5);
    expect(MAX_PASSWORD_MESSAGE_LENGTH).toBeLessThanOrEqual(MAX_TOKEN_LENGTH + 4096);
    const framer = new MessageFramer({
      maxMessageSize: MAX_PASSWORD_MESSAGE_LENGTH,
      validTypes: FRONTEND_MESSAGE_TYPES,
    });
    // The longest token the verifier reads still fits.
    const longest = typed('p', new Bytes().cstr('a'.repeat(MAX_TOKEN_LENGTH)));
    framer.push(longest);
    expect(framer.next()?.raw.length).toBe(longest.length);
    // A megabyte is refused after its 5-byte header, whatever limits.maxMessageSize says.
    framer.push(new Bytes().u8(0x70).i32(MB).build());
    expect(expectProtocolError(() => framer.next()).detail).toContain(
      `exceeds the limit of ${MAX_PASSWORD_MESSAGE_LENGTH}`,
    );

    const after = new MessageFramer({
      maxMessageSize: MAX_PASSWORD_MESSAGE_LENGTH,
      validTypes: FRONTEND_MESSAGE_TYPES,
    });
    after.setMaxMessageSize(MB);
    const big = typed('Q', new Bytes().cstr('x'.repeat(200_000)));
    after.push(big);
    expect(after.next()?.raw.length).toBe(big.length);
    expect(() => after.setMaxMessageSize(2)).toThrow(TypeError);
  });
});
