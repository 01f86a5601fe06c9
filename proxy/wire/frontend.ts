// Frontend (client → server) message bodies: strict decoders for what clients send us, encoders for what we send upstream.
import {
  CANCEL_REQUEST_CODE,
  FrontendType,
  MAX_CANCEL_KEY_LENGTH,
  MIN_CANCEL_KEY_LENGTH,
  PROTOCOL_MAJOR_3,
} from './codes.ts';
import { Reader, protocolViolation } from './reader.ts';
import { Writer } from './writer.ts';

// Decoders take Frame.body and mirror the checks Postgres makes in postgres.c (pq_getmsgstring, pq_getmsgend):
// every string NUL-terminated and UTF-8, no bytes after the last field, counts checked against the bytes left
// before any array is allocated. Returned Buffers are views into the body.

export type DescribeTarget = 'S' | 'P';

export interface QueryMessage {
  sql: string;
}

export interface ParseMessage {
  name: string;
  sql: string;
  /** Parameter type OIDs; 0 leaves the type to the server. */
  paramTypes: number[];
}

export interface BindMessage {
  portal: string;
  statement: string;
  /** 0 (text) or 1 (binary) per parameter; one entry applies to all, none means all text. */
  paramFormats: number[];
  /** Parameter values; null is SQL NULL (length -1 on the wire). */
  params: (Buffer | null)[];
  resultFormats: number[];
}

export interface ExecuteMessage {
  portal: string;
  /** 0 means no limit. */
  maxRows: number;
}

export interface DescribeMessage {
  target: DescribeTarget;
  name: string;
}

export type CloseMessage = DescribeMessage;

export interface CopyFailMessage {
  message: string;
}

const TARGET_STATEMENT = 0x53; // S
const TARGET_PORTAL = 0x50; // P

/**
 * Query ('Q'): one SQL string that must end with the message's only NUL. Postgres reads up to the first NUL and
 * rejects leftovers as "invalid message format", while libpg-query would classify only the text before it;
 * refusing here keeps what we classify and what Postgres would run the same text.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-QUERY
 */
export function decodeQuery(body: Buffer): QueryMessage {
  const nul = body.indexOf(0);
  if (nul !== body.length - 1) {
    throw protocolViolation(
      'invalid message format',
      nul === -1 ? 'query string is not NUL-terminated' : 'query string contains a NUL byte',
    );
  }
  const r = new Reader(body);
  const sql = r.cstring();
  r.end();
  return { sql };
}

/**
 * Parse ('P'): statement name, SQL, and the parameter type OIDs.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARSE
 */
export function decodeParse(body: Buffer): ParseMessage {
  const r = new Reader(body);
  const name = r.cstring();
  // The SQL ends at its first NUL, exactly where Postgres ends it; anything after must parse as the remaining
  // fields, or r.end() refuses it, so no text can hide behind a NUL.
  const sql = r.cstring();
  const count = r.uint16();
  if (count * 4 > r.remaining)
    throw protocolViolation('insufficient data left in message', `${count} parameter types declared`);
  const paramTypes = new Array<number>(count);
  for (let i = 0; i < count; i++) paramTypes[i] = r.uint32();
  r.end();
  return { name, sql, paramTypes };
}

/**
 * Bind ('B'): portal, statement, parameter formats, values (length -1 = NULL), result formats.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BIND
 */
export function decodeBind(body: Buffer): BindMessage {
  const r = new Reader(body);
  const portal = r.cstring();
  const statement = r.cstring();

  const formatCount = r.uint16();
  if (formatCount * 2 > r.remaining)
    throw protocolViolation('insufficient data left in message', `${formatCount} parameter formats declared`);
  const paramFormats = new Array<number>(formatCount);
  for (let i = 0; i < formatCount; i++) paramFormats[i] = r.int16();

  const paramCount = r.uint16();
  // Each value needs at least its Int32 length, so this bounds the array before it exists.
  if (paramCount * 4 > r.remaining)
    throw protocolViolation('insufficient data left in message', `${paramCount} parameters declared`);
  // Postgres raises the same protocol violation: one format for all, or one per parameter.
  if (formatCount > 1 && formatCount !== paramCount) {
    throw protocolViolation(
      'invalid message format',
      `bind message has ${formatCount} parameter formats but ${paramCount} parameters`,
    );
  }
  const params = new Array<Buffer | null>(paramCount);
  for (let i = 0; i < paramCount; i++) {
    const length = r.int32();
    if (length === -1) {
      params[i] = null;
    } else if (length < 0) {
      throw protocolViolation('insufficient data left in message', `parameter ${i + 1} has length ${length}`);
    } else {
      params[i] = r.bytes(length);
    }
  }

  const resultCount = r.uint16();
  if (resultCount * 2 > r.remaining)
    throw protocolViolation('insufficient data left in message', `${resultCount} result formats declared`);
  const resultFormats = new Array<number>(resultCount);
  for (let i = 0; i < resultCount; i++) resultFormats[i] = r.int16();
  r.end();
  return { portal, statement, paramFormats, params, resultFormats };
}

/**
 * Execute ('E'): portal name and the row limit (0 = all).
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-EXECUTE
 */
export function decodeExecute(body: Buffer): ExecuteMessage {
  const r = new Reader(body);
  const portal = r.cstring();
  const maxRows = r.int32();
  r.end();
  return { portal, maxRows };
}

function decodeTargeted(body: Buffer, what: string): DescribeMessage {
  const r = new Reader(body);
  const byte = r.uint8();
  let target: DescribeTarget;
  if (byte === TARGET_STATEMENT) target = 'S';
  else if (byte === TARGET_PORTAL) target = 'P';
  else throw protocolViolation(`invalid ${what} message subtype ${byte}`);
  const name = r.cstring();
  r.end();
  return { target, name };
}

/**
 * Describe ('D'): 'S' for a prepared statement or 'P' for a portal, and its name.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DESCRIBE
 */
export function decodeDescribe(body: Buffer): DescribeMessage {
  return decodeTargeted(body, 'DESCRIBE');
}

/**
 * Close ('C'): 'S' for a prepared statement or 'P' for a portal, and its name.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CLOSE
 */
export function decodeClose(body: Buffer): CloseMessage {
  return decodeTargeted(body, 'CLOSE');
}

/**
 * PasswordMessage ('p') carrying a cleartext password: one string filling the body (Postgres: "invalid password
 * packet size" otherwise). SASL responses share the type byte but not this layout.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PASSWORDMESSAGE
 */
export function decodePassword(body: Buffer): string {
  const r = new Reader(body);
  const password = r.cstring();
  r.end();
  return password;
}

/**
 * CopyFail ('f'): the client's reason for aborting COPY FROM STDIN.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COPYFAIL
 */
export function decodeCopyFail(body: Buffer): CopyFailMessage {
  const r = new Reader(body);
  const message = r.cstring();
  r.end();
  return { message };
}

// Encoders: frontend messages the proxy itself sends upstream. Inputs come from our own code, so bad ones are
// TypeError/RangeError (misuse), not ProxyError.

function targetByte(target: DescribeTarget): number {
  switch (target) {
    case 'S':
      return TARGET_STATEMENT;
    case 'P':
      return TARGET_PORTAL;
    default: {
      const unreachable: never = target;
      throw new TypeError(`describe/close target must be 'S' or 'P', got ${String(unreachable)}`);
    }
  }
}

function checkCancelKey(secretKey: Buffer): void {
  if (secretKey.length < MIN_CANCEL_KEY_LENGTH || secretKey.length > MAX_CANCEL_KEY_LENGTH) {
    throw new RangeError(
      `cancel key must be ${MIN_CANCEL_KEY_LENGTH}..${MAX_CANCEL_KEY_LENGTH} bytes, got ${secretKey.length}`,
    );
  }
}

/**
 * StartupMessage for protocol 3.`minor`: version, name/value pairs, final NUL. No type byte.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE
 */
export function encodeStartupMessage(params: Record<string, string>, minor = 0): Buffer {
  if (!Number.isInteger(minor) || minor < 0 || minor > 0xffff)
    throw new RangeError(`protocol minor version out of range: ${minor}`);
  const w = new Writer(256).int32((PROTOCOL_MAJOR_3 << 16) | minor);
  for (const [name, value] of Object.entries(params)) {
    // An empty name would be read as the final terminator and cut the packet short.
    if (name === '') throw new TypeError('startup parameter name cannot be empty');
    w.cstring(name).cstring(value);
  }
  return w.uint8(0).frameUntyped();
}

/**
 * PasswordMessage ('p') with a cleartext (or md5-hashed) password.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PASSWORDMESSAGE
 */
export function encodePasswordMessage(password: string): Buffer {
  return new Writer().cstring(password).frame(FrontendType.PasswordMessage);
}

/**
 * SASLInitialResponse ('p'): mechanism name, Int32 length of the client-first message, the message.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLINITIALRESPONSE
 */
export function encodeSASLInitialResponse(mechanism: string, data: Buffer): Buffer {
  return new Writer(data.length + mechanism.length + 16)
    .cstring(mechanism)
    .int32(data.length)
    .bytes(data)
    .frame(FrontendType.PasswordMessage);
}

/**
 * SASLResponse ('p'): the mechanism's bytes, nothing else.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLRESPONSE
 */
export function encodeSASLResponse(data: Buffer): Buffer {
  return new Writer(data.length + 8).bytes(data).frame(FrontendType.PasswordMessage);
}

/**
 * Query ('Q'): simple-protocol SQL.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-QUERY
 */
export function encodeQuery(sql: string): Buffer {
  return new Writer(sql.length + 8).cstring(sql).frame(FrontendType.Query);
}

/**
 * Parse ('P'): statement name, SQL, parameter type OIDs.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARSE
 */
export function encodeParse(name: string, sql: string, paramTypes: readonly number[] = []): Buffer {
  const w = new Writer(name.length + sql.length + 16 + paramTypes.length * 4)
    .cstring(name)
    .cstring(sql)
    .uint16(paramTypes.length);
  for (const oid of paramTypes) w.uint32(oid);
  return w.frame(FrontendType.Parse);
}

/**
 * Bind ('B'): the inverse of decodeBind.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BIND
 */
export function encodeBind(msg: BindMessage): Buffer {
  const w = new Writer(128).cstring(msg.portal).cstring(msg.statement).uint16(msg.paramFormats.length);
  for (const f of msg.paramFormats) w.int16(f);
  w.uint16(msg.params.length);
  for (const p of msg.params) {
    if (p === null) w.int32(-1);
    else w.int32(p.length).bytes(p);
  }
  w.uint16(msg.resultFormats.length);
  for (const f of msg.resultFormats) w.int16(f);
  return w.frame(FrontendType.Bind);
}

/**
 * Execute ('E'): portal name and row limit (0 = all).
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-EXECUTE
 */
export function encodeExecute(portal = '', maxRows = 0): Buffer {
  return new Writer().cstring(portal).int32(maxRows).frame(FrontendType.Execute);
}

/**
 * Describe ('D') of a statement ('S') or portal ('P').
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DESCRIBE
 */
export function encodeDescribe(target: DescribeTarget, name = ''): Buffer {
  return new Writer().uint8(targetByte(target)).cstring(name).frame(FrontendType.Describe);
}

/**
 * Close ('C') of a statement ('S') or portal ('P').
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CLOSE
 */
export function encodeClose(target: DescribeTarget, name = ''): Buffer {
  return new Writer().uint8(targetByte(target)).cstring(name).frame(FrontendType.Close);
}

/**
 * CopyFail ('f') with a reason.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COPYFAIL
 */
export function encodeCopyFail(message: string): Buffer {
  return new Writer().cstring(message).frame(FrontendType.CopyFail);
}

/** A message that is only its type byte and a length of 4; a fresh Buffer each time so callers cannot share state. */
function emptyMessage(type: number): Buffer {
  return Buffer.from([type, 0, 0, 0, 4]);
}

/**
 * Sync ('S'): ends an extended-protocol batch.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SYNC
 */
export function encodeSync(): Buffer {
  return emptyMessage(FrontendType.Sync);
}

/**
 * Flush ('H'): asks the server to send what it has without ending the batch.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-FLUSH
 */
export function encodeFlush(): Buffer {
  return emptyMessage(FrontendType.Flush);
}

/**
 * Terminate ('X'): polite close.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-TERMINATE
 */
export function encodeTerminate(): Buffer {
  return emptyMessage(FrontendType.Terminate);
}

/**
 * CancelRequest: no type byte; code, process ID, secret key (4 bytes in protocol 3.0, up to 256 in 3.2).
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CANCELREQUEST
 */
export function encodeCancelRequest(processId: number, secretKey: Buffer): Buffer {
  checkCancelKey(secretKey);
  return new Writer(32 + secretKey.length).int32(CANCEL_REQUEST_CODE).int32(processId).bytes(secretKey).frameUntyped();
}
