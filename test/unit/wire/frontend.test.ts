// Frontend decoders (strict, against hand-built bodies) and the encoders for what the proxy sends upstream.
import { serialize } from 'pg-protocol';
import { describe, expect, it } from 'vitest';
import { MessageFramer } from '../../../proxy/wire/framer.ts';
import {
  decodeBind,
  decodeClose,
  decodeCopyFail,
  decodeDescribe,
  decodeExecute,
  decodeParse,
  decodePassword,
  decodeQuery,
  encodeBind,
  encodeCancelRequest,
  encodeClose,
  encodeCopyFail,
  encodeDescribe,
  encodeExecute,
  encodeFlush,
  encodeParse,
  encodePasswordMessage,
  encodeQuery,
  encodeSASLInitialResponse,
  encodeSASLResponse,
  encodeStartupMessage,
  encodeSync,
  encodeTerminate,
} from '../../../proxy/wire/frontend.ts';
import { Bytes, typed, untyped } from '../../helpers/bytes.ts';
import { expectProtocolError } from '../../helpers/errors.ts';

describe('decodeQuery', () => {
  it('decodes the SQL text', () => {
    expect(decodeQuery(new Bytes().cstr('SELECT 1; SELECT 2').build())).toEqual({ sql: 'SELECT 1; SELECT 2' });
    expect(decodeQuery(new Bytes().cstr('').build())).toEqual({ sql: '' });
    expect(decodeQuery(new Bytes().cstr("SELECT 'é✓😀'").build()).sql).toBe("SELECT 'é✓😀'");
  });

  it('keeps a leading byte-order mark (Postgres sees it too)', () => {
    expect(decodeQuery(new Bytes().u8(0xef, 0xbb, 0xbf).cstr('SELECT 1').build()).sql).toBe('\uFEFFSELECT 1');
  });

  it('rejects a NUL inside the SQL', () => {
    expectProtocolError(() => decodeQuery(new Bytes().cstr('SELECT 1').cstr('DROP TABLE t').build()));
    expectProtocolError(() => decodeQuery(new Bytes().u8(0).cstr('DROP TABLE t').build()));
    expectProtocolError(() => decodeQuery(new Bytes().cstr('SELECT 1').u8(0).build()));
  });

  it('rejects a missing terminator, an empty body and invalid UTF-8', () => {
    expectProtocolError(() => decodeQuery(new Bytes().str('SELECT 1').build()));
    expectProtocolError(() => decodeQuery(Buffer.alloc(0)));
    expectProtocolError(() => decodeQuery(new Bytes().str('SELECT ').u8(0xff).cstr("'").build()));
    expectProtocolError(() => decodeQuery(new Bytes().u8(0xc0, 0xa7, 0).build())); // overlong "'"
  });
});

describe('decodeParse', () => {
  it('decodes name, SQL and parameter types (OIDs unsigned)', () => {
    const body = new Bytes().cstr('s1').cstr('SELECT $1, $2').i16(2).i32(23).i32(-1).build();
    expect(decodeParse(body)).toEqual({ name: 's1', sql: 'SELECT $1, $2', paramTypes: [23, 0xffffffff] });
    expect(decodeParse(new Bytes().cstr('').cstr('SELECT 1').i16(0).build())).toEqual({
      name: '',
      sql: 'SELECT 1',
      paramTypes: [],
    });
  });

  it('rejects text hidden behind a NUL in the SQL', () => {
    expectProtocolError(() => decodeParse(new Bytes().cstr('').cstr('SELECT 1').cstr('; DROP TABLE t').i16(0).build()));
    expectProtocolError(() => decodeParse(new Bytes().cstr('').cstr('SELECT 1').u8(0).i16(0).build()));
  });

  it('rejects a type count larger than the body before allocating', () => {
    expectProtocolError(() => decodeParse(new Bytes().cstr('').cstr('SELECT 1').i16(0xffff).i32(23).build()));
    expectProtocolError(() => decodeParse(new Bytes().cstr('').cstr('SELECT 1').i16(2).i32(23).build()));
  });

  it('rejects trailing bytes, missing fields and invalid UTF-8', () => {
    expectProtocolError(() => decodeParse(new Bytes().cstr('').cstr('SELECT 1').i16(0).u8(0).build()));
    expectProtocolError(() => decodeParse(new Bytes().cstr('').cstr('SELECT 1').build()));
    expectProtocolError(() => decodeParse(new Bytes().cstr('').str('SELECT 1').build()));
    expectProtocolError(() => decodeParse(new Bytes().u8(0xfe, 0).cstr('SELECT 1').i16(0).build()));
  });
});

describe('decodeBind', () => {
  const bind = (b: Bytes): ReturnType<typeof decodeBind> => decodeBind(b.build());

  it('decodes formats, values (NULL as null) and result formats', () => {
    const msg = bind(
      new Bytes().cstr('p1').cstr('s1').i16(2).i16(0).i16(1).i16(2).i32(3).str('abc').i32(-1).i16(1).i16(1),
    );
    expect(msg.portal).toBe('p1');
    expect(msg.statement).toBe('s1');
    expect(msg.paramFormats).toEqual([0, 1]);
    expect(msg.params.map((p) => (p === null ? null : p.toString()))).toEqual(['abc', null]);
    expect(msg.resultFormats).toEqual([1]);
  });

  it('accepts no parameters, empty values and one format for all', () => {
    expect(bind(new Bytes().cstr('').cstr('').i16(0).i16(0).i16(0))).toEqual({
      portal: '',
      statement: '',
      paramFormats: [],
      params: [],
      resultFormats: [],
    });
    const msg = bind(new Bytes().cstr('').cstr('').i16(1).i16(1).i16(2).i32(0).i32(0).i16(0));
    expect(msg.params.map((p) => p?.length)).toEqual([0, 0]);
  });

  it('rejects counts larger than the body before allocating', () => {
    expectProtocolError(() => bind(new Bytes().cstr('').cstr('').i16(0xffff)));
    expectProtocolError(() => bind(new Bytes().cstr('').cstr('').i16(0).i16(0xffff).i32(-1)));
    expectProtocolError(() => bind(new Bytes().cstr('').cstr('').i16(0).i16(0).i16(0xffff)));
  });

  it('rejects a value length beyond the body or below -1', () => {
    expectProtocolError(() => bind(new Bytes().cstr('').cstr('').i16(0).i16(1).i32(100).str('x').i16(0)));
    expectProtocolError(() => bind(new Bytes().cstr('').cstr('').i16(0).i16(1).i32(-2).i16(0)));
  });

  it('rejects a format count that is neither 0, 1 nor the parameter count', () => {
    expectProtocolError(() =>
      bind(new Bytes().cstr('').cstr('').i16(2).i16(0).i16(0).i16(3).i32(-1).i32(-1).i32(-1).i16(0)),
    );
  });

  it('rejects trailing bytes and a truncated body', () => {
    expectProtocolError(() => bind(new Bytes().cstr('').cstr('').i16(0).i16(0).i16(0).u8(1)));
    expectProtocolError(() => bind(new Bytes().cstr('').cstr('').i16(0).i16(0)));
  });
});

describe('decodeExecute, decodeDescribe, decodeClose, decodePassword, decodeCopyFail', () => {
  it('decodes Execute', () => {
    expect(decodeExecute(new Bytes().cstr('p').i32(10).build())).toEqual({ portal: 'p', maxRows: 10 });
    expect(decodeExecute(new Bytes().cstr('').i32(0).build())).toEqual({ portal: '', maxRows: 0 });
    expectProtocolError(() => decodeExecute(new Bytes().cstr('').i16(0).build()));
    expectProtocolError(() => decodeExecute(new Bytes().cstr('').i32(0).u8(0).build()));
  });

  it('decodes Describe and Close of statements and portals', () => {
    expect(decodeDescribe(new Bytes().str('S').cstr('s1').build())).toEqual({ target: 'S', name: 's1' });
    expect(decodeDescribe(new Bytes().str('P').cstr('').build())).toEqual({ target: 'P', name: '' });
    expect(decodeClose(new Bytes().str('S').cstr('s1').build())).toEqual({ target: 'S', name: 's1' });
    expect(decodeClose(new Bytes().str('P').cstr('p').build())).toEqual({ target: 'P', name: 'p' });
  });

  it('rejects an unknown Describe/Close target, a missing name and trailing bytes', () => {
    expectProtocolError(() => decodeDescribe(new Bytes().str('X').cstr('s1').build()));
    expectProtocolError(() => decodeClose(new Bytes().str('s').cstr('s1').build()));
    expectProtocolError(() => decodeDescribe(new Bytes().str('S').build()));
    expectProtocolError(() => decodeClose(Buffer.alloc(0)));
    expectProtocolError(() => decodeDescribe(new Bytes().str('S').cstr('a').cstr('b').build()));
  });

  it('decodes a cleartext password that fills the body', () => {
    expect(decodePassword(new Bytes().cstr('eyJhbGciOi.x.y').build())).toBe('eyJhbGciOi.x.y');
    expectProtocolError(() => decodePassword(new Bytes().cstr('secret').u8(1).build()));
    expectProtocolError(() => decodePassword(new Bytes().str('secret').build()));
    expectProtocolError(() => decodePassword(new Bytes().u8(0xff, 0).build()));
  });

  it('decodes CopyFail', () => {
    expect(decodeCopyFail(new Bytes().cstr('aborted by user').build())).toEqual({ message: 'aborted by user' });
    expectProtocolError(() => decodeCopyFail(new Bytes().cstr('x').cstr('y').build()));
  });
});

describe('frontend encoders', () => {
  it('encodes StartupMessage with protocol 3.minor and a final NUL', () => {
    const expected = untyped(new Bytes().i32(196608).cstr('user').cstr('u').cstr('database').cstr('d').u8(0));
    expect(encodeStartupMessage({ user: 'u', database: 'd' }).equals(expected)).toBe(true);
    const v32 = encodeStartupMessage({ user: 'u' }, 2);
    expect(v32.readInt32BE(4)).toBe((3 << 16) | 2);
  });

  it('produces a StartupMessage the framer reads back', () => {
    const framer = new MessageFramer({ maxMessageSize: 1024 });
    framer.push(encodeStartupMessage({ user: 'agent', database: 'app', application_name: 'pgwarden' }, 2));
    const msg = framer.nextStartup();
    expect(msg?.kind === 'startup' && Object.fromEntries(msg.params)).toEqual({
      user: 'agent',
      database: 'app',
      application_name: 'pgwarden',
    });
  });

  it('encodes PasswordMessage, SASLInitialResponse and SASLResponse', () => {
    expect(encodePasswordMessage('pw').equals(typed('p', new Bytes().cstr('pw')))).toBe(true);
    expect(encodePasswordMessage('pw').equals(serialize.password('pw'))).toBe(true);
    const first = Buffer.from('n,,n=,r=abc');
    expect(
      encodeSASLInitialResponse('SCRAM-SHA-256', first).equals(
        typed('p', new Bytes().cstr('SCRAM-SHA-256').i32(first.length).raw(first)),
      ),
    ).toBe(true);
    expect(
      encodeSASLInitialResponse('SCRAM-SHA-256', first).equals(
        serialize.sendSASLInitialResponseMessage('SCRAM-SHA-256', 'n,,n=,r=abc'),
      ),
    ).toBe(true);
    expect(encodeSASLResponse(Buffer.from('c=biws')).equals(typed('p', Buffer.from('c=biws')))).toBe(true);
  });

  it('encodes Query, Parse, Bind, Execute, Describe and Close', () => {
    expect(encodeQuery('SELECT 1').equals(typed('Q', new Bytes().cstr('SELECT 1')))).toBe(true);
    expect(encodeQuery('SELECT 1').equals(serialize.query('SELECT 1'))).toBe(true);
    expect(
      encodeParse('s', 'SELECT $1', [23]).equals(typed('P', new Bytes().cstr('s').cstr('SELECT $1').i16(1).i32(23))),
    ).toBe(true);
    expect(
      encodeParse('s', 'SELECT $1', [23]).equals(serialize.parse({ name: 's', text: 'SELECT $1', types: [23] })),
    ).toBe(true);
    expect(encodeParse('', 'SELECT 1').equals(typed('P', new Bytes().cstr('').cstr('SELECT 1').i16(0)))).toBe(true);
    const bind = encodeBind({
      portal: 'p',
      statement: 's',
      paramFormats: [1],
      params: [Buffer.from([0, 1]), null],
      resultFormats: [],
    });
    expect(
      bind.equals(typed('B', new Bytes().cstr('p').cstr('s').i16(1).i16(1).i16(2).i32(2).u8(0, 1).i32(-1).i16(0))),
    ).toBe(true);
    expect(encodeExecute('p', 5).equals(typed('E', new Bytes().cstr('p').i32(5)))).toBe(true);
    expect(encodeExecute().equals(serialize.execute())).toBe(true);
    expect(encodeDescribe('S', 's1').equals(typed('D', new Bytes().str('S').cstr('s1')))).toBe(true);
    expect(encodeDescribe('P').equals(serialize.describe({ type: 'P' }))).toBe(true);
    expect(encodeClose('P', 'p1').equals(typed('C', new Bytes().str('P').cstr('p1')))).toBe(true);
    expect(encodeClose('S', 's1').equals(serialize.close({ type: 'S', name: 's1' }))).toBe(true);
    expect(encodeCopyFail('no').equals(typed('f', new Bytes().cstr('no')))).toBe(true);
  });

  it('encodes Sync, Flush and Terminate as fresh buffers', () => {
    expect(encodeSync().equals(typed('S'))).toBe(true);
    expect(encodeFlush().equals(typed('H'))).toBe(true);
    expect(encodeTerminate().equals(typed('X'))).toBe(true);
    expect(encodeSync()).not.toBe(encodeSync());
  });

  it('encodes CancelRequest with a 4-byte or longer key', () => {
    const key = Buffer.from([0xde, 0xad, 0xbe, 0xef]);
    expect(encodeCancelRequest(99, key).equals(untyped(new Bytes().i32(80877102).i32(99).raw(key)))).toBe(true);
    expect(encodeCancelRequest(99, Buffer.alloc(32)).length).toBe(44);
  });

  it('refuses misuse with TypeError/RangeError rather than a message that means something else', () => {
    expect(() => encodeQuery('SELECT 1\0DROP')).toThrow(TypeError);
    expect(() => encodeParse('a\0b', 'SELECT 1')).toThrow(TypeError);
    expect(() => encodeStartupMessage({ '': 'x' })).toThrow(TypeError);
    expect(() => encodeStartupMessage({ user: 'u' }, 70000)).toThrow(RangeError);
    expect(() => encodeCancelRequest(1, Buffer.alloc(3))).toThrow(RangeError);
    expect(() => encodeCancelRequest(1, Buffer.alloc(257))).toThrow(RangeError);
    expect(() => encodeDescribe('X' as 'S')).toThrow(TypeError);
  });
});
