// Property tests for the framer's streaming path: any chunking gives the same bytes, the same message boundaries, and never holds a streamed message.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProxyError } from '../../lib/errors.ts';
import { MessageFramer, isPart, type Frame, type FramePart } from '../../proxy/wire/framer.ts';
import { splitAt, typed } from '../helpers/bytes.ts';

const seed =
  process.env.FC_SEED !== undefined && process.env.FC_SEED !== ''
    ? Number(process.env.FC_SEED)
    : (Date.now() ^ (Math.random() * 0x7fffffff)) | 0;

function check<Ts extends [unknown, ...unknown[]]>(property: fc.IProperty<Ts>, numRuns = 300): void {
  try {
    fc.assert(property, { seed, numRuns });
  } catch (err) {
    console.error(`property failed; replay with FC_SEED=${seed}`);
    throw err;
  }
}

const D = 'D'.charCodeAt(0);
const d = 'd'.charCodeAt(0);
const STREAMED = [D, d];
// Small numbers so that short generated messages exercise both paths; the session uses 64 KiB and 1 MiB.
const THRESHOLD = 24;
const MAX_ASSEMBLED = 64;
const MAX_STREAMED = 4096;

/** A message as generated: its type and body. Streamed types get bodies up to 600 bytes, the others up to MAX_ASSEMBLED - 5. */
const message = fc.oneof(
  fc.record({ type: fc.constantFrom(D, d), body: fc.uint8Array({ maxLength: 600 }) }),
  fc.record({
    type: fc.constantFrom(...'CZTEN1'.split('').map((c) => c.charCodeAt(0))),
    body: fc.uint8Array({ maxLength: MAX_ASSEMBLED - 5 }),
  }),
);

function streamingFramer(): MessageFramer {
  return new MessageFramer({
    maxMessageSize: MAX_ASSEMBLED,
    stream: { types: STREAMED, threshold: THRESHOLD, maxSize: MAX_STREAMED },
  });
}

interface Observed {
  /** One entry per message: its type, its bytes (parts joined), and whether it came in parts. */
  messages: { type: number; hex: string; parts: number }[];
  /** Every byte returned, in order. */
  all: Buffer;
  /** The most the framer held after any drain. */
  maxBuffered: number;
}

/** Pushes the chunks one by one, draining after each, and checks the part flags as it goes. */
function run(framer: MessageFramer, chunks: Buffer[]): Observed {
  const messages: Observed['messages'] = [];
  const returned: Buffer[] = [];
  let open: { type: number; length: number; bytes: Buffer[] } | undefined;
  let maxBuffered = 0;
  for (const chunk of chunks) {
    framer.push(chunk);
    for (let i = 0; ; i++) {
      if (i > 10_000) throw new Error('framer kept returning parts'); // a hang
      const next: Frame | FramePart | null = framer.nextPart();
      if (next === null) break;
      if (!isPart(next)) {
        expect(open).toBeUndefined();
        returned.push(next.raw);
        messages.push({ type: next.type, hex: next.raw.toString('hex'), parts: 0 });
        continue;
      }
      returned.push(next.bytes);
      if (next.first) {
        expect(open).toBeUndefined();
        expect(next.bytes.length).toBeGreaterThanOrEqual(5);
        open = { type: next.type, length: next.length, bytes: [] };
      }
      expect(open).toBeDefined();
      if (open === undefined) throw new Error('unreachable');
      expect(next.type).toBe(open.type);
      expect(next.bytes.length).toBeGreaterThan(0);
      open.bytes.push(Buffer.from(next.bytes));
      if (next.last) {
        const whole = Buffer.concat(open.bytes);
        expect(whole.length).toBe(open.length + 1);
        messages.push({ type: open.type, hex: whole.toString('hex'), parts: open.bytes.length });
        open = undefined;
      }
    }
    maxBuffered = Math.max(maxBuffered, framer.buffered);
  }
  expect(open).toBeUndefined();
  return { messages, all: Buffer.concat(returned), maxBuffered };
}

describe('MessageFramer streaming path', () => {
  it('any chunking returns the input bytes exactly, with the same message boundaries as whole framing', () => {
    check(
      fc.property(fc.array(message, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 40 }), (msgs, offsets) => {
        const frames = msgs.map((m) => typed(m.type, Buffer.from(m.body)));
        const input = Buffer.concat(frames);
        const cuts = offsets.map((o) => (input.length === 0 ? 0 : o % input.length));
        const got = run(streamingFramer(), splitAt(input, cuts));
        expect(got.all.equals(input)).toBe(true);
        expect(got.messages.map((m) => [m.type, m.hex])).toEqual(frames.map((f) => [f[0], f.toString('hex')]));
        // Streamed exactly when the type is streamed and the message is longer than the threshold.
        got.messages.forEach((m, i) => {
          const f = frames[i] as Buffer;
          expect(m.parts > 0).toBe(STREAMED.includes(f[0] as number) && f.length > THRESHOLD);
        });
        // What is held is at most one incomplete message that is returned whole: a streamed one is never held.
        expect(got.maxBuffered).toBeLessThan(Math.max(THRESHOLD, MAX_ASSEMBLED + 1));
      }),
    );
  });

  it('one byte at a time: a streamed message comes back in as many parts as it has bytes beyond its header', () => {
    check(
      fc.property(fc.integer({ min: THRESHOLD, max: 300 }), (size) => {
        const frame = typed(D, Buffer.alloc(size, 7));
        const chunks = [...frame].map((b) => Buffer.from([b]));
        const got = run(streamingFramer(), chunks);
        expect(got.messages).toHaveLength(1);
        expect(got.messages[0]?.parts).toBe(frame.length - 4);
        expect(got.maxBuffered).toBeLessThan(5);
      }),
      50,
    );
  });

  it('length fields are checked against the streamed and the assembled limit by type', () => {
    const big = streamingFramer();
    big.push(Buffer.from([D, 0, 0, 0x10, 0x01])); // 4097 > MAX_STREAMED
    expect(() => big.nextPart()).toThrow(ProxyError);
    const assembled = streamingFramer();
    assembled.push(Buffer.from(['C'.charCodeAt(0), 0, 0, 0, MAX_ASSEMBLED + 1]));
    expect(() => assembled.nextPart()).toThrow(ProxyError);
    const ok = streamingFramer();
    ok.push(Buffer.from([D, 0, 0, 0x10, 0x00])); // exactly MAX_STREAMED: streamed, not refused
    const first = ok.nextPart();
    expect(first !== null && isPart(first) && first.first && !first.last).toBe(true);
  });

  it('a streaming framer cannot be read with next(), which would hand out parts as frames', () => {
    expect(() => streamingFramer().next()).toThrow(TypeError);
  });
});
