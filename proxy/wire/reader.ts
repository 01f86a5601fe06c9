// Bounds-checked cursor over one message body: every read checks what is left and throws ERR_PROTOCOL, never reads past the end.
import { ProxyError } from '../../lib/errors.ts';

/** A 08P01 ProxyError; the wording follows Postgres's own pq_getmsg* errors so logs read alike. */
export function protocolViolation(message: string, detail?: string): ProxyError {
  return new ProxyError('ERR_PROTOCOL', message, detail === undefined ? {} : { detail });
}

// fatal: invalid UTF-8 is an error, not U+FFFD, so the text we check is the text Postgres runs.
// ignoreBOM: keep a leading U+FEFF; the default strips it, which would make "\uFEFFs1" and "s1" the same
// statement name to us but not to Postgres.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const lossyUtf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** Decodes UTF-8 or throws ERR_PROTOCOL; for text a peer sends that we act on. */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch (err) {
    throw new ProxyError('ERR_PROTOCOL', 'invalid UTF-8 in message', { cause: err });
  }
}

/** Strings up to this many bytes are checked for pure ASCII before the strict UTF-8 decoder is used. */
const SHORT_ASCII = 256;

/** Cursor over a Buffer with explicit bounds checks (Postgres's pq_getmsgint/pq_getmsgstring/pq_getmsgend). */
export class Reader {
  private readonly buf: Buffer;
  private pos: number;

  constructor(buf: Buffer, offset = 0) {
    this.buf = buf;
    this.pos = offset;
  }

  /** Bytes left after the cursor. */
  get remaining(): number {
    return this.buf.length - this.pos;
  }

  get offset(): number {
    return this.pos;
  }

  private need(n: number): void {
    if (n < 0 || this.buf.length - this.pos < n) throw protocolViolation('insufficient data left in message');
  }

  uint8(): number {
    this.need(1);
    const v = this.buf.readUInt8(this.pos);
    this.pos += 1;
    return v;
  }

  int8(): number {
    this.need(1);
    const v = this.buf.readInt8(this.pos);
    this.pos += 1;
    return v;
  }

  int16(): number {
    this.need(2);
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  /** Postgres reads message counts ("Int16" in the docs) as unsigned, so 0..65535. */
  uint16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  int32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** For OIDs, which are unsigned 32-bit. */
  uint32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** The raw bytes of a NUL-terminated string, terminator consumed but not included; a view. */
  cstringBytes(): Buffer {
    const start = this.pos;
    return this.buf.subarray(start, this.skipCstring());
  }

  /** Moves the cursor past the NUL-terminated string at it; returns the NUL's index (the string's end). */
  private skipCstring(): number {
    const nul = this.buf.indexOf(0, this.pos);
    if (nul === -1) throw protocolViolation('invalid string in message', 'missing NUL terminator');
    this.pos = nul + 1;
    return nul;
  }

  /** A NUL-terminated string, strictly UTF-8. Ends at the first NUL, exactly as Postgres reads it. */
  cstring(): string {
    const buf = this.buf;
    const start = this.pos;
    const nul = this.skipCstring();
    // Names are mostly empty (the unnamed statement and portal) and short texts mostly ASCII, which is valid UTF-8
    // and decodes byte for byte: both without the strict decoder's per-call cost.
    if (nul === start) return '';
    if (nul - start <= SHORT_ASCII) {
      let i = start;
      while (i < nul && (buf[i] as number) < 0x80) i++;
      if (i === nul) return buf.toString('latin1', start, nul);
    }
    return decodeUtf8(buf.subarray(start, nul));
  }

  /** A NUL-terminated string with invalid UTF-8 replaced by U+FFFD; only for text we observe, never decide on. */
  cstringLossy(): string {
    return lossyUtf8.decode(this.cstringBytes());
  }

  /** The next n bytes as a view. */
  bytes(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** Everything after the cursor as a view. */
  rest(): Buffer {
    const v = this.buf.subarray(this.pos);
    this.pos = this.buf.length;
    return v;
  }

  /** Throws unless every byte was consumed (Postgres's pq_getmsgend): trailing bytes are a malformed message. */
  end(): void {
    if (this.pos !== this.buf.length)
      throw protocolViolation('invalid message format', 'unexpected bytes after the last field');
  }
}
