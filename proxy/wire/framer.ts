// Chunks → whole frames (or, for relayed message types, parts streamed as they arrive): the untyped startup phase and the typed regular phase, with hostile length fields checked before buffering.
import {
  FrontendType,
  CANCEL_REQUEST_CODE,
  GSSENC_REQUEST_CODE,
  MAX_CANCEL_KEY_LENGTH,
  MAX_STARTUP_PACKET_LENGTH,
  MIN_CANCEL_KEY_LENGTH,
  PROTOCOL_MAJOR_3,
  SSL_REQUEST_CODE,
} from './codes.ts';
import { decodeUtf8, protocolViolation } from './reader.ts';
import { ProxyError } from '../../lib/errors.ts';

/**
 * A first packet PostgreSQL drops without a word (it only logs it, as COMMERROR): a length outside 8..10000, a
 * CancelRequest of the wrong length. The session closes the connection without sending anything, as the server does.
 */
export class UnansweredStartupPacket extends ProxyError {}

/** One typed message. `raw` is the whole message (type byte + length + body); `body` excludes both. Usually views. */
export interface Frame {
  type: number;
  body: Buffer;
  raw: Buffer;
}

/** The first message of a connection, which has no type byte and is told apart by the code after its length. */
export type StartupMessage =
  | { kind: 'startup'; major: number; minor: number; params: Map<string, string>; raw: Buffer }
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: Buffer };

/**
 * A piece of one message too large to hold whole (see MessageFramerOptions.stream). The parts of a message laid end
 * to end are its bytes exactly: the first starts with the type byte and length, the last ends the message.
 */
export interface FramePart {
  type: number;
  /** Length field of the whole message (counts itself and the body, not the type byte). */
  length: number;
  bytes: Buffer;
  first: boolean;
  last: boolean;
}

export interface MessageFramerOptions {
  /**
   * Largest accepted value of a regular message's length field (which counts itself and the body, not the type
   * byte): the bound on what is held to be returned whole.
   */
  maxMessageSize: number;
  /**
   * Messages of these types longer than `threshold` bytes (type byte included) are not assembled: `nextPart()` returns
   * them as FrameParts as their bytes arrive, so a 200 MB DataRow costs no more memory than a small one. Their length
   * field may go up to `maxSize` rather than maxMessageSize. Absent: every message is assembled (`next()`).
   */
  stream?: { types: Iterable<number>; threshold: number; maxSize: number };
  /**
   * Type bytes a regular message may start with; any other is refused as soon as its first byte is here, before its
   * length or body is read or waited for. Absent: any type (the upstream side, which the pipeline checks itself).
   */
  validTypes?: Iterable<number>;
}

/**
 * Every type byte a client may send (FrontendType). A StartupMessage, SSLRequest or CancelRequest sent after the
 * startup phase starts with its Int32 length, so its first byte is 0x00 for any length the startup phase accepts:
 * refused at once, rather than after waiting for whatever body its bytes would declare as a regular message.
 */
export const FRONTEND_MESSAGE_TYPES: ReadonlySet<number> = new Set<number>(Object.values(FrontendType));

/** Type byte + Int32 length. */
const HEADER_LENGTH = 5;
/** SSLRequest and GSSENCRequest: Int32 length + Int32 code, nothing else. */
const NEGOTIATE_REQUEST_LENGTH = 8;
/** CancelRequest: Int32 length + Int32 code + Int32 process ID, then the secret key. */
const CANCEL_HEADER_LENGTH = 12;
/** The length field is an Int32; nothing larger can be described. */
const MAX_INT32 = 0x7fffffff;

// Chunks smaller than this that arrive while a message is incomplete are copied into a shared accumulator, so a
// peer sending one byte per segment costs one byte of memory per byte, not one Buffer object per byte.
const SMALL_CHUNK = 512;
const ACCUMULATOR_SIZE = 16 * 1024;

/**
 * Splits a byte stream into protocol messages without copying when it can.
 *
 * Pushed chunks are queued as they are. A message that lies inside one chunk comes back as a subarray of it;
 * only a message that straddles chunks is copied, into a buffer of exactly its size. Nothing a returned view
 * points into is written again, so frames stay valid after later pushes. Callers must not modify pushed chunks.
 *
 * Every length field is checked as soon as its bytes are here, before anything is buffered for the body, so a
 * header claiming 1 GB costs nothing but an ERR_PROTOCOL. After a throw the framer is unusable: the stream has no
 * trustworthy message boundary left, and the connection must be closed.
 */
export class MessageFramer {
  private maxMessageSize: number;
  /** 1 at each accepted type byte, or null when every type is accepted. */
  private readonly validTypes: Uint8Array | null;
  /** Unreturned bytes: chunks[0] from `head` on, then the rest of the chunks whole. */
  private chunks: Buffer[] = [];
  private head = 0;
  private size = 0;
  /** Owned buffer that small chunks are appended to; bytes after `accEnd` were never handed out. */
  private acc: Buffer | null = null;
  private accStart = 0;
  private accEnd = 0;
  /** The queue entry that views acc[accStart, accEnd), so it can be extended in place. */
  private accView: Buffer | null = null;
  /** 1 at each streamed type byte, or null when nothing is streamed. */
  private readonly streamTypes: Uint8Array | null = null;
  private readonly streamThreshold: number = 0;
  private streamMax: number = 0;
  /** While a message is being streamed: its type, length field, and bytes not yet returned (0: none in progress). */
  private streamType = 0;
  private streamLength = 0;
  private streamRemaining = 0;

  constructor(opts: MessageFramerOptions) {
    this.maxMessageSize = checkedMax(opts.maxMessageSize);
    this.validTypes = opts.validTypes === undefined ? null : byteTable(opts.validTypes, 'validTypes');
    if (opts.stream !== undefined) {
      const { threshold, maxSize } = opts.stream;
      if (!Number.isInteger(threshold) || threshold < HEADER_LENGTH + 1)
        throw new TypeError(`stream.threshold must be an integer above ${HEADER_LENGTH}, got ${String(threshold)}`);
      this.streamMax = checkedMax(maxSize);
      this.streamThreshold = threshold;
      this.streamTypes = byteTable(opts.stream.types, 'stream.types');
    }
  }

  /**
   * Changes the largest accepted length field from the next message on: a session caps what an unauthenticated
   * client may send tightly, and raises the cap to limits.maxMessageSize once it is logged in.
   */
  setMaxMessageSize(max: number, streamedMax?: number): void {
    this.maxMessageSize = checkedMax(max);
    if (streamedMax !== undefined) this.streamMax = checkedMax(streamedMax);
  }

  /** Bytes held that no next()/nextStartup() has returned yet. */
  get buffered(): number {
    return this.size;
  }

  /** Queues a chunk. Cheap: no parsing, and no copy unless a message is incomplete and the chunk is tiny. */
  push(chunk: Buffer): void {
    const n = chunk.length;
    if (n === 0) return;
    if (this.size === 0) {
      // The common case on a fast link: the previous chunk ended on a message boundary.
      this.chunks.length = 0;
      this.chunks.push(chunk);
      this.head = 0;
      this.size = n;
      this.accView = null;
      return;
    }
    this.size += n;
    if (n >= SMALL_CHUNK) {
      this.chunks.push(chunk);
      return;
    }
    const last = this.chunks.length - 1;
    if (
      this.acc !== null &&
      this.accView !== null &&
      this.chunks[last] === this.accView &&
      this.acc.length - this.accEnd >= n
    ) {
      chunk.copy(this.acc, this.accEnd);
      this.accEnd += n;
      this.accView = this.acc.subarray(this.accStart, this.accEnd);
      this.chunks[last] = this.accView;
      return;
    }
    if (this.acc === null || this.acc.length - this.accEnd < n) {
      this.acc = Buffer.allocUnsafeSlow(ACCUMULATOR_SIZE);
      this.accEnd = 0;
    }
    chunk.copy(this.acc, this.accEnd);
    this.accStart = this.accEnd;
    this.accEnd += n;
    this.accView = this.acc.subarray(this.accStart, this.accEnd);
    this.chunks.push(this.accView);
  }

  /**
   * The next regular message, or null when more bytes are needed.
   * @throws ProxyError ERR_PROTOCOL when the length field is below 4 or above maxMessageSize.
   * @see https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS
   */
  next(): Frame | null {
    if (this.streamTypes !== null) throw new TypeError('a streaming framer is read with nextPart()');
    const f = this.nextWhole();
    // Without `stream` options nothing is ever returned in parts.
    return f === null || isPart(f) ? null : f;
  }

  /**
   * The next whole message, or the next part of a streamed one (see MessageFramerOptions.stream), or null when more
   * bytes are needed. A streamed message's parts are views of the pushed chunks, returned as soon as they arrive;
   * the framer keeps none of its bytes. Messages of other types, and short ones, come back whole as from `next()`.
   * @throws ProxyError ERR_PROTOCOL as `next()` does.
   */
  nextPart(): Frame | FramePart | null {
    if (this.streamRemaining > 0) return this.continueStream();
    return this.nextWhole();
  }

  private nextWhole(): Frame | FramePart | null {
    if (this.size < HEADER_LENGTH) {
      if (this.size > 0 && this.validTypes !== null) this.checkType(this.peekByte(0));
      return null;
    }
    const first = this.chunks[0];
    if (first === undefined) return null;
    let type: number;
    let length: number;
    if (first.length - this.head >= HEADER_LENGTH) {
      type = first.readUInt8(this.head);
      length = first.readInt32BE(this.head + 1);
    } else {
      type = this.peekByte(0);
      length = this.peekInt32(1);
    }
    if (this.validTypes !== null) this.checkType(type);
    // The length counts itself but not the type byte. A negative Int32 fails the first test.
    if (length < 4) throw protocolViolation('invalid message length', `length field ${length} is below 4`);
    if (this.streamTypes !== null && this.streamTypes[type] === 1 && length + 1 > this.streamThreshold) {
      if (length > this.streamMax) {
        throw protocolViolation(
          'invalid message length',
          `length field ${length} exceeds the limit of ${this.streamMax}`,
        );
      }
      // Streamed even when it is all here already: one rule, and no copy of a message that straddles chunks.
      this.streamType = type;
      this.streamLength = length;
      this.streamRemaining = length + 1;
      return this.continueStream();
    }
    if (length > this.maxMessageSize) {
      throw protocolViolation(
        'invalid message length',
        `length field ${length} exceeds the limit of ${this.maxMessageSize}`,
      );
    }
    const total = length + 1;
    if (this.size < total) return null;
    const raw = this.take(total);
    return { type, body: raw.subarray(HEADER_LENGTH), raw };
  }

  /**
   * The next startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest or CancelRequest), or null when
   * more bytes are needed. After an SSLRequest/GSSENCRequest the caller should refuse if `buffered` is not 0:
   * bytes sent before the TLS handshake would otherwise be taken as if they came over TLS (CVE-2021-23214).
   * @throws ProxyError ERR_PROTOCOL on a bad length, unknown request code, protocol major other than 3, or malformed parameters.
   * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE
   */
  nextStartup(): StartupMessage | null {
    if (this.size < 4) return null;
    const length = this.peekInt32(0);
    if (length < NEGOTIATE_REQUEST_LENGTH || length > MAX_STARTUP_PACKET_LENGTH) {
      throw new UnansweredStartupPacket('ERR_PROTOCOL', 'invalid length of startup packet', {
        detail: `length field ${length} is outside 8..${MAX_STARTUP_PACKET_LENGTH}`,
      });
    }
    if (this.size < length) return null;
    const raw = this.take(length);
    const code = raw.readInt32BE(4);
    switch (code) {
      case SSL_REQUEST_CODE:
      case GSSENC_REQUEST_CODE:
        // PostgreSQL answers an encryption request whatever its length; the bytes past the code are ignored with it.
        return code === SSL_REQUEST_CODE ? { kind: 'ssl' } : { kind: 'gssenc' };
      case CANCEL_REQUEST_CODE: {
        const keyLength = length - CANCEL_HEADER_LENGTH;
        if (keyLength < MIN_CANCEL_KEY_LENGTH || keyLength > MAX_CANCEL_KEY_LENGTH) {
          throw new UnansweredStartupPacket('ERR_PROTOCOL', 'invalid length of cancel request packet', {
            detail: `secret key of ${keyLength} bytes is outside ${MIN_CANCEL_KEY_LENGTH}..${MAX_CANCEL_KEY_LENGTH}`,
          });
        }
        // Copied: the key outlives this packet and should not pin the chunk it arrived in.
        return {
          kind: 'cancel',
          processId: raw.readInt32BE(8),
          secretKey: Buffer.from(raw.subarray(CANCEL_HEADER_LENGTH)),
        };
      }
      default: {
        const major = code >>> 16;
        const minor = code & 0xffff;
        // Covers protocol 2 (gone since Postgres 14) and any request code in the 1234.x space we do not know.
        if (major !== PROTOCOL_MAJOR_3) {
          // PostgreSQL's FATAL, word for word (it is sent: the client asked for a protocol, and is told which we speak).
          throw new ProxyError(
            'ERR_FEATURE',
            `unsupported frontend protocol ${major}.${minor}: server supports 3.0 to 3.0`,
            { severity: 'FATAL', reason: 'unsupported' },
          );
        }
        return { kind: 'startup', major, minor, params: parseStartupParams(raw), raw };
      }
    }
  }

  /** The next part of the message being streamed: a view of what the first queued chunk holds of it (the header whole). */
  private continueStream(): FramePart | null {
    const first = this.chunks[0];
    if (first === undefined || this.size === 0) return null;
    const isFirst = this.streamRemaining === this.streamLength + 1;
    let n = Math.min(first.length - this.head, this.streamRemaining);
    // The first part carries the whole 5-byte header even when it straddles chunks (a 5-byte copy at most).
    if (isFirst && n < HEADER_LENGTH) n = HEADER_LENGTH;
    const bytes = this.take(n);
    this.streamRemaining -= n;
    return {
      type: this.streamType,
      length: this.streamLength,
      bytes,
      first: isFirst,
      last: this.streamRemaining === 0,
    };
  }

  /** Everything not yet returned (for handing leftovers to the next stage, e.g. a relay), and forgets it. */
  takeRemaining(): Buffer {
    if (this.streamRemaining > 0) throw new TypeError('takeRemaining() in the middle of a streamed message');
    let out: Buffer;
    const first = this.chunks[0];
    if (first === undefined || this.size === 0) {
      out = Buffer.alloc(0);
    } else if (this.chunks.length === 1) {
      out = first.subarray(this.head);
    } else {
      out = Buffer.allocUnsafe(this.size);
      let written = first.copy(out, 0, this.head);
      for (let i = 1; i < this.chunks.length; i++) {
        const c = this.chunks[i];
        if (c !== undefined) written += c.copy(out, written);
      }
    }
    this.chunks = [];
    this.head = 0;
    this.size = 0;
    this.acc = null;
    this.accView = null;
    return out;
  }

  private checkType(type: number): void {
    if (this.validTypes === null || this.validTypes[type] === 1) return;
    if (type === 0) {
      throw protocolViolation(
        'invalid frontend message type 0',
        'a StartupMessage, SSLRequest, GSSENCRequest or CancelRequest may only be the first message of a connection',
      );
    }
    throw protocolViolation(`invalid frontend message type ${type}`);
  }

  /** Byte at `offset` past the read position; the caller has checked `offset < size`. */
  private peekByte(offset: number): number {
    let skip = this.head + offset;
    for (const c of this.chunks) {
      if (skip < c.length) return c.readUInt8(skip);
      skip -= c.length;
    }
    throw new RangeError('peek past buffered data');
  }

  private peekInt32(offset: number): number {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= offset + 4) return first.readInt32BE(this.head + offset);
    return (
      (this.peekByte(offset) << 24) |
      (this.peekByte(offset + 1) << 16) |
      (this.peekByte(offset + 2) << 8) |
      this.peekByte(offset + 3)
    );
  }

  /** Removes n bytes (n <= size) from the front: a view when they lie in one chunk, else one copy of exactly n bytes. */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (first === undefined) throw new RangeError('take past buffered data');
    this.size -= n;
    const available = first.length - this.head;
    if (available >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.head += n;
      if (this.head === first.length) {
        this.chunks.shift();
        this.head = 0;
      }
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let written = 0;
    let consumed = 0;
    let start = this.head;
    while (written < n) {
      const c = this.chunks[consumed];
      if (c === undefined) throw new RangeError('take past buffered data');
      const count = Math.min(c.length - start, n - written);
      c.copy(out, written, start, start + count);
      written += count;
      if (start + count === c.length) {
        consumed++;
        start = 0;
      } else {
        start += count;
      }
    }
    this.chunks.splice(0, consumed);
    this.head = start;
    return out;
  }
}

/** True for a FramePart, false for a whole Frame. */
export function isPart(f: Frame | FramePart): f is FramePart {
  return (f as FramePart).first !== undefined;
}

/** 1 at each of `types` (bytes), 0 elsewhere. */
function byteTable(types: Iterable<number>, option: string): Uint8Array {
  const table = new Uint8Array(256);
  for (const t of types) {
    if (!Number.isInteger(t) || t < 0 || t > 255) throw new TypeError(`${option} must hold bytes, got ${String(t)}`);
    table[t] = 1;
  }
  return table;
}

function checkedMax(max: number): number {
  if (!Number.isInteger(max) || max < 4 || max > MAX_INT32) {
    throw new TypeError(`maxMessageSize must be an integer in 4..${MAX_INT32}, got ${String(max)}`);
  }
  return max;
}

/**
 * StartupMessage parameters: NUL-terminated name/value pairs, then one final NUL that must be the last byte
 * (Postgres: "invalid startup packet layout: expected terminator as last byte"). Duplicate names are refused:
 * Postgres lets the last one win, and an identity decided on one copy while another reaches upstream is a bypass.
 */
function parseStartupParams(raw: Buffer): Map<string, string> {
  const params = new Map<string, string>();
  let pos = 8;
  for (;;) {
    if (pos >= raw.length) throw protocolViolation('invalid startup packet layout', 'missing final terminator');
    if (raw[pos] === 0) {
      if (pos !== raw.length - 1)
        throw protocolViolation('invalid startup packet layout', 'expected terminator as last byte');
      return params;
    }
    const nameEnd = raw.indexOf(0, pos);
    if (nameEnd === -1) throw protocolViolation('invalid startup packet layout', 'parameter name without terminator');
    const name = decodeUtf8(raw.subarray(pos, nameEnd));
    pos = nameEnd + 1;
    const valueEnd = raw.indexOf(0, pos);
    // An odd count: the last name has no value, or the final NUL was taken as its value's terminator and the
    // loop then finds no final NUL.
    if (valueEnd === -1) {
      throw protocolViolation('invalid startup packet layout', `parameter "${name}" has no value`);
    }
    const value = decodeUtf8(raw.subarray(pos, valueEnd));
    pos = valueEnd + 1;
    if (params.has(name)) throw protocolViolation('invalid startup packet layout', `parameter "${name}" appears twice`);
    params.set(name, value);
  }
}
