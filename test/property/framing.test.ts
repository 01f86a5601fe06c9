// Property tests for wire/: chunking never changes frames, hostile bytes only ever yield frames or 08P01, encoders round-trip.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../lib/errors.ts';
import {
  decodeBackendKeyData,
  decodeErrorFields,
  decodeParameterStatus,
  encodeBackendKeyData,
  encodeErrorResponse,
  encodeParameterStatus,
  type ErrorSeverity,
} from '../../proxy/wire/backend.ts';
import { MessageFramer, type Frame } from '../../proxy/wire/framer.ts';
import { Reader } from '../../proxy/wire/reader.ts';
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
  encodeClose,
  encodeDescribe,
  encodeExecute,
  encodeParse,
  encodeQuery,
} from '../../proxy/wire/frontend.ts';
import { splitAt, typed } from '../helpers/bytes.ts';

// One seed per run, from FC_SEED to replay a failure.
const seed =
  process.env.FC_SEED !== undefined && process.env.FC_SEED !== ''
    ? Number(process.env.FC_SEED)
    : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;

function check<Ts extends [unknown, ...unknown[]]>(property: fc.IProperty<Ts>, numRuns = 200): void {
  try {
    fc.assert(property, { seed, numRuns });
  } catch (err) {
    console.error(`property failed; replay with FC_SEED=${seed}`);
    throw err;
  }
}

/** Frames as plain data (hex), independent of which buffer they view. */
function snapshot(frames: Frame[]): [number, string][] {
  return frames.map((f) => [f.type, f.raw.toString('hex')]);
}

function drain(framer: MessageFramer, limit: number): Frame[] {
  const frames: Frame[] = [];
  for (let i = 0; i < limit; i++) {
    const f = framer.next();
    if (f === null) return frames;
    frames.push(f);
  }
  throw new Error('framer kept returning frames past any possible count'); // would be a hang
}

const MAX = 4096;
const message = fc
  .record({ type: fc.integer({ min: 0, max: 255 }), body: fc.uint8Array({ maxLength: 700 }) })
  .map(({ type, body }) => typed(type, Buffer.from(body)));
const stream = fc.array(message, { maxLength: 12 }).map((msgs) => Buffer.concat(msgs));
const withCuts = stream.chain((buf) =>
  fc.tuple(fc.constant(buf), fc.array(fc.integer({ min: 0, max: buf.length }), { maxLength: 20 })),
);

/** Text that can be a protocol string: any code point but NUL (no lone surrogates). */
const text = fc.string({ unit: 'binary', maxLength: 40 }).filter((s) => !s.includes('\0'));

function expectOnlyProtocolErrors(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof ProxyError) || err.code !== 'ERR_PROTOCOL' || err.sqlstate !== '08P01') throw err;
  }
}

describe('framing properties', () => {
  it('any chunking of a valid stream gives the same frames as one push', () => {
    check(
      fc.property(withCuts, fc.boolean(), ([buf, cuts], drainEachPush) => {
        const whole = new MessageFramer({ maxMessageSize: MAX });
        whole.push(buf);
        const expected = snapshot(drain(whole, 100));

        const framer = new MessageFramer({ maxMessageSize: MAX });
        const frames: Frame[] = [];
        for (const part of splitAt(buf, cuts)) {
          framer.push(part);
          if (drainEachPush) frames.push(...drain(framer, 100));
        }
        frames.push(...drain(framer, 100));
        const got = snapshot(frames);
        expect(got).toEqual(expected);
        expect(framer.buffered).toBe(0);
        // Every frame still holds its bytes after all pushes: views were not overwritten.
        expect(snapshot(frames)).toEqual(got);
      }),
    );
  });

  it('random bytes, in random chunks, only ever yield frames or an 08P01 ProxyError', () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
      // Mostly valid streams with a few bytes overwritten reach deeper than pure noise.
      stream.chain((buf) =>
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }).map((edits) => {
          const out = Buffer.from(buf);
          for (const [at, v] of edits) if (out.length > 0) out[at % out.length] = v;
          return out;
        }),
      ),
    );
    check(
      fc.property(bytes, fc.array(fc.nat(), { maxLength: 10 }), fc.boolean(), (buf, cuts, startupFirst) => {
        const framer = new MessageFramer({ maxMessageSize: 512 });
        expectOnlyProtocolErrors(() => {
          let inStartup = startupFirst;
          for (const part of splitAt(
            buf,
            cuts.map((c) => c % (buf.length + 1)),
          )) {
            framer.push(part);
            for (let i = 0; i < 1000; i++) {
              if (inStartup) {
                const s = framer.nextStartup();
                if (s === null) break;
                inStartup = s.kind !== 'startup' && s.kind !== 'cancel';
                continue;
              }
              const f = framer.next();
              if (f === null) break;
              expect(f.raw.length).toBe(f.body.length + 5);
              expect(f.raw.length).toBeLessThanOrEqual(513);
            }
          }
        });
      }),
      300,
    );
  });

  it('random bodies given to every frontend and backend decoder only yield a value or an 08P01 ProxyError', () => {
    const decoders: ((b: Buffer) => unknown)[] = [
      decodeQuery,
      decodeParse,
      decodeBind,
      decodeExecute,
      decodeDescribe,
      decodeClose,
      decodePassword,
      decodeCopyFail,
      decodeErrorFields,
      decodeParameterStatus,
      decodeBackendKeyData,
    ];
    check(
      fc.property(fc.uint8Array({ maxLength: 80 }), (arr) => {
        const body = Buffer.from(arr);
        for (const decode of decoders) expectOnlyProtocolErrors(() => decode(body));
      }),
      300,
    );
  });
});

describe('encode → decode round-trips', () => {
  const body = (msg: Buffer): Buffer => msg.subarray(5);

  it('ErrorResponse', () => {
    const severity = fc.constantFrom<ErrorSeverity>('ERROR', 'FATAL', 'PANIC');
    const sqlstate = fc.stringMatching(/^[0-9A-Z]{5}$/);
    check(
      fc.property(
        severity,
        sqlstate,
        text,
        fc.option(text, { nil: undefined }),
        fc.option(text, { nil: undefined }),
        (sev, code, message, detail, hint) => {
          const decoded = decodeErrorFields(
            body(encodeErrorResponse({ severity: sev, sqlstate: code, message, detail, hint })),
          );
          expect(decoded).toMatchObject({ severity: sev, sqlstate: code, message, detail, hint });
        },
      ),
    );
  });

  it('ParameterStatus and BackendKeyData', () => {
    check(
      fc.property(
        text,
        text,
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
        fc.uint8Array({ minLength: 4, maxLength: 256 }),
        (name, value, pid, key) => {
          expect(decodeParameterStatus(body(encodeParameterStatus(name, value)))).toEqual({ name, value });
          expect(decodeBackendKeyData(body(encodeBackendKeyData(pid, Buffer.from(key))))).toEqual({
            processId: pid,
            secretKey: Buffer.from(key),
          });
        },
      ),
    );
  });

  it('Query, Parse, Execute, Describe, Close', () => {
    const oid = fc.integer({ min: 0, max: 0xffffffff });
    const target = fc.constantFrom<'S' | 'P'>('S', 'P');
    check(
      fc.property(
        text,
        text,
        fc.array(oid, { maxLength: 20 }),
        fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
        target,
        (name, sql, types, maxRows, t) => {
          expect(decodeQuery(body(encodeQuery(sql)))).toEqual({ sql });
          expect(decodeParse(body(encodeParse(name, sql, types)))).toEqual({ name, sql, paramTypes: types });
          expect(decodeExecute(body(encodeExecute(name, maxRows)))).toEqual({ portal: name, maxRows });
          expect(decodeDescribe(body(encodeDescribe(t, name)))).toEqual({ target: t, name });
          expect(decodeClose(body(encodeClose(t, name)))).toEqual({ target: t, name });
        },
      ),
    );
  });

  it('Bind', () => {
    const format = fc.constantFrom(0, 1);
    const bind = fc
      .record({
        portal: text,
        statement: text,
        params: fc.array(
          fc.option(
            fc.uint8Array({ maxLength: 30 }).map((a) => Buffer.from(a)),
            { nil: null },
          ),
          { maxLength: 10 },
        ),
        resultFormats: fc.array(format, { maxLength: 5 }),
        formatMode: fc.constantFrom('none', 'one', 'each'),
        formats: fc.array(format, { minLength: 10, maxLength: 10 }),
      })
      .map(({ formatMode, formats, ...rest }) => ({
        ...rest,
        paramFormats:
          formatMode === 'none'
            ? []
            : formatMode === 'one'
              ? formats.slice(0, 1)
              : formats.slice(0, rest.params.length),
      }));
    check(
      fc.property(bind, (msg) => {
        expect(decodeBind(body(encodeBind(msg)))).toEqual(msg);
      }),
    );
  });
});

describe('Reader.cstring', () => {
  const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  it('reads exactly what a strict UTF-8 decoder reads, or refuses exactly when it refuses (ASCII fast path included)', () => {
    const byte = fc.oneof(fc.integer({ min: 1, max: 0x7f }), fc.integer({ min: 1, max: 0xff }));
    // Valid UTF-8 of any text (multi-byte sequences included), and raw bytes (mostly invalid once a high byte appears).
    const validText = fc
      .string({ unit: 'binary', maxLength: 120 })
      .map((t) => [...Buffer.from(t.replaceAll('\0', ''), 'utf8')]);
    const text = fc.oneof(validText, fc.array(byte, { maxLength: 300 }));
    fc.assert(
      fc.property(text, fc.array(byte, { maxLength: 8 }), (text, after) => {
        const buf = Buffer.from([...text, 0, ...after]);
        let expected: string | 'invalid';
        try {
          expected = strict.decode(Uint8Array.from(text));
        } catch {
          expected = 'invalid';
        }
        const r = new Reader(buf);
        let got: string | 'invalid';
        try {
          got = r.cstring();
        } catch (err) {
          expect(err).toBeInstanceOf(ProxyError);
          got = 'invalid';
        }
        expect(got).toBe(expected);
        if (got !== 'invalid') expect(r.remaining).toBe(after.length);
      }),
      { numRuns: 3000 },
    );
  });
});
