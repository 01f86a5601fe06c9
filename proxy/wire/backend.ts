// Backend (server → client) message bodies: encoders for what the proxy originates, decoders for the upstream messages it acts on.
import { clientMessage, detailWithReason, type ErrorSource, type ProxyError } from '../../lib/errors.ts';
import {
  AuthenticationCode,
  BackendType,
  ErrorField,
  MAX_CANCEL_KEY_LENGTH,
  MIN_CANCEL_KEY_LENGTH,
  type TransactionStatusCode,
} from './codes.ts';
import { Reader, protocolViolation } from './reader.ts';
import { Writer } from './writer.ts';

export type ErrorSeverity = 'ERROR' | 'FATAL' | 'PANIC';
export type NoticeSeverity = 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';

export interface ErrorFieldsInput<S extends string> {
  severity: S;
  /** Five characters, digits and upper-case letters (Appendix A). */
  sqlstate: string;
  message: string;
  detail?: string;
  hint?: string;
  /** 1-based character position in the query string the error refers to. */
  position?: number;
  /** Where PostgreSQL raised an error pgwarden passes on (F, L, R). */
  source?: ErrorSource;
}

export interface DecodedErrorFields {
  /** The non-localized severity (V) when present, else the localized one (S). */
  severity: string;
  sqlstate: string;
  message: string;
  detail?: string;
  hint?: string;
  /** Every field by its one-letter type, including those not named above. */
  fields: Map<string, string>;
}

export interface ParameterStatusMessage {
  name: string;
  value: string;
}

export interface BackendKeyDataMessage {
  processId: number;
  secretKey: Buffer;
}

export interface AuthenticationMessage {
  code: number;
  /** What follows the code: md5 salt, SASL mechanism list, SASL server data; empty for Ok and CleartextPassword. */
  data: Buffer;
}

export interface NegotiateProtocolVersionMessage {
  newestMinor: number;
  unsupportedOptions: string[];
}

const SQLSTATE_PATTERN = /^[0-9A-Z]{5}$/;

/** Error text is the last thing we send before closing, so it must not throw: a NUL (which would end the field early) is replaced. */
function errorText(s: string): string {
  return s.includes('\0') ? s.replaceAll('\0', '\uFFFD') : s;
}

function encodeFields(type: number, input: ErrorFieldsInput<string>): Buffer {
  if (!SQLSTATE_PATTERN.test(input.sqlstate)) throw new TypeError(`not a SQLSTATE: ${JSON.stringify(input.sqlstate)}`);
  const w = new Writer(128 + input.message.length);
  const field = (code: string, value: string): void => {
    w.uint8(code.charCodeAt(0)).cstring(errorText(value));
  };
  field(ErrorField.Severity, input.severity);
  field(ErrorField.SeverityNonLocalized, input.severity);
  field(ErrorField.Code, input.sqlstate);
  field(ErrorField.Message, input.message);
  if (input.detail !== undefined) field(ErrorField.Detail, input.detail);
  if (input.hint !== undefined) field(ErrorField.Hint, input.hint);
  if (input.position !== undefined) field(ErrorField.Position, String(input.position));
  if (input.source?.file !== undefined) field(ErrorField.File, input.source.file);
  if (input.source?.line !== undefined) field(ErrorField.Line, input.source.line);
  if (input.source?.routine !== undefined) field(ErrorField.Routine, input.source.routine);
  return w.uint8(0).frame(type);
}

/**
 * ErrorResponse ('E') with fields S, V, C, M and optionally D, H, P.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ERRORRESPONSE
 */
export function encodeErrorResponse(input: ErrorFieldsInput<ErrorSeverity>): Buffer {
  return encodeFields(BackendType.ErrorResponse, input);
}

/**
 * NoticeResponse ('N'): same fields as ErrorResponse, with a non-error severity.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NOTICERESPONSE
 */
export function encodeNoticeResponse(input: ErrorFieldsInput<NoticeSeverity>): Buffer {
  return encodeFields(BackendType.NoticeResponse, input);
}

/** ErrorResponse for a ProxyError, carrying only its client-safe fields (never `cause`). */
export function encodeProxyError(err: ProxyError): Buffer {
  // The reason leads DETAIL so a program can switch on it, and ends the message for clients that show only that;
  // the operator hint stays in the audit trail and log.
  return encodeErrorResponse({
    severity: err.severity,
    sqlstate: err.sqlstate,
    message: clientMessage(err),
    detail: detailWithReason(err.reason, err.detail),
    hint: err.hint,
    position: err.position,
    source: err.source,
  });
}

/**
 * ReadyForQuery ('Z') with the transaction status: idle, in transaction, failed transaction.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-READYFORQUERY
 */
export function encodeReadyForQuery(status: TransactionStatusCode): Buffer {
  return new Writer().uint8(status.charCodeAt(0)).frame(BackendType.ReadyForQuery);
}

/**
 * AuthenticationOk ('R', code 0).
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK
 */
export function encodeAuthenticationOk(): Buffer {
  return new Writer().int32(AuthenticationCode.Ok).frame(BackendType.Authentication);
}

/**
 * AuthenticationCleartextPassword ('R', code 3): asks the client for a PasswordMessage.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONCLEARTEXTPASSWORD
 */
export function encodeAuthenticationCleartextPassword(): Buffer {
  return new Writer().int32(AuthenticationCode.CleartextPassword).frame(BackendType.Authentication);
}

/**
 * ParameterStatus ('S'): a run-time parameter's name and current value.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARAMETERSTATUS
 */
export function encodeParameterStatus(name: string, value: string): Buffer {
  return new Writer().cstring(name).cstring(value).frame(BackendType.ParameterStatus);
}

/**
 * BackendKeyData ('K'): process ID and the secret key a CancelRequest must quote (4 bytes in 3.0, up to 256 in 3.2).
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BACKENDKEYDATA
 */
export function encodeBackendKeyData(processId: number, secretKey: Buffer): Buffer {
  if (secretKey.length < MIN_CANCEL_KEY_LENGTH || secretKey.length > MAX_CANCEL_KEY_LENGTH) {
    throw new RangeError(
      `cancel key must be ${MIN_CANCEL_KEY_LENGTH}..${MAX_CANCEL_KEY_LENGTH} bytes, got ${secretKey.length}`,
    );
  }
  return new Writer(16 + secretKey.length).int32(processId).bytes(secretKey).frame(BackendType.BackendKeyData);
}

/**
 * NegotiateProtocolVersion ('v'): the newest minor version we support and the `_pq_.` options we do not.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NEGOTIATEPROTOCOLVERSION
 */
export function encodeNegotiateProtocolVersion(newestMinor: number, unsupportedOptions: readonly string[]): Buffer {
  const w = new Writer().int32(newestMinor).int32(unsupportedOptions.length);
  for (const option of unsupportedOptions) w.cstring(option);
  return w.frame(BackendType.NegotiateProtocolVersion);
}

/**
 * CommandComplete ('C') with its tag, e.g. "SELECT 5".
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE
 */
export function encodeCommandComplete(tag: string): Buffer {
  return new Writer().cstring(tag).frame(BackendType.CommandComplete);
}

/** A message that is only its type byte and a length of 4; a fresh Buffer each time so callers cannot share state. */
function emptyMessage(type: number): Buffer {
  return Buffer.from([type, 0, 0, 0, 4]);
}

/**
 * EmptyQueryResponse ('I'): answers a Query whose text held no statement.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-EMPTYQUERYRESPONSE
 */
export function encodeEmptyQueryResponse(): Buffer {
  return emptyMessage(BackendType.EmptyQueryResponse);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARSECOMPLETE */
export function encodeParseComplete(): Buffer {
  return emptyMessage(BackendType.ParseComplete);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BINDCOMPLETE */
export function encodeBindComplete(): Buffer {
  return emptyMessage(BackendType.BindComplete);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CLOSECOMPLETE */
export function encodeCloseComplete(): Buffer {
  return emptyMessage(BackendType.CloseComplete);
}

/** NoData ('n'): a Describe target that returns no rows. @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NODATA */
export function encodeNoData(): Buffer {
  return emptyMessage(BackendType.NoData);
}

/**
 * The one-byte answer to SSLRequest: 'S' to start TLS, 'N' to continue in cleartext. Not a framed message.
 * @see https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL
 */
export function encodeSSLResponse(accept: boolean): Buffer {
  return Buffer.from([accept ? 0x53 : 0x4e]);
}

// Decoders of upstream bodies. Upstream is trusted more than a client but still checked for structure; text is
// decoded lossily (U+FFFD) because we only observe it and forward the original bytes unchanged.

/**
 * ErrorResponse or NoticeResponse body: (type byte, string) pairs ended by a zero byte. S (or V), C and M are
 * always present per the protocol; a body without them is malformed.
 * @see https://www.postgresql.org/docs/current/protocol-error-fields.html
 */
export function decodeErrorFields(body: Buffer): DecodedErrorFields {
  const r = new Reader(body);
  const fields = new Map<string, string>();
  for (;;) {
    const code = r.uint8();
    if (code === 0) break;
    fields.set(String.fromCharCode(code), r.cstringLossy());
  }
  r.end();
  const severity = fields.get(ErrorField.SeverityNonLocalized) ?? fields.get(ErrorField.Severity);
  const sqlstate = fields.get(ErrorField.Code);
  const message = fields.get(ErrorField.Message);
  if (severity === undefined || sqlstate === undefined || message === undefined) {
    throw protocolViolation('invalid error message', 'severity, SQLSTATE or message field missing');
  }
  return {
    severity,
    sqlstate,
    message,
    detail: fields.get(ErrorField.Detail),
    hint: fields.get(ErrorField.Hint),
    fields,
  };
}

/**
 * The fields of an ErrorResponse or NoticeResponse body as raw bytes, in order, without decoding any text; undefined
 * when the body is not a run of (type byte, NUL-terminated string) pairs ended by one zero byte.
 */
export function splitErrorFields(body: Buffer): { code: number; bytes: Buffer }[] | undefined {
  const fields: { code: number; bytes: Buffer }[] = [];
  let i = 0;
  for (;;) {
    const code = body[i];
    if (code === undefined) return undefined;
    if (code === 0) return i === body.length - 1 ? fields : undefined;
    const nul = body.indexOf(0, i + 1);
    if (nul === -1) return undefined;
    fields.push({ code, bytes: body.subarray(i + 1, nul) });
    i = nul + 1;
  }
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARAMETERSTATUS */
export function decodeParameterStatus(body: Buffer): ParameterStatusMessage {
  const r = new Reader(body);
  const name = r.cstringLossy();
  const value = r.cstringLossy();
  r.end();
  return { name, value };
}

/**
 * BackendKeyData body; the key is copied so it can be kept for the session without pinning the chunk.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BACKENDKEYDATA
 */
export function decodeBackendKeyData(body: Buffer): BackendKeyDataMessage {
  const r = new Reader(body);
  const processId = r.int32();
  const key = r.rest();
  if (key.length < MIN_CANCEL_KEY_LENGTH || key.length > MAX_CANCEL_KEY_LENGTH) {
    throw protocolViolation(
      'invalid BackendKeyData message',
      `secret key of ${key.length} bytes is outside ${MIN_CANCEL_KEY_LENGTH}..${MAX_CANCEL_KEY_LENGTH}`,
    );
  }
  return { processId, secretKey: Buffer.from(key) };
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-READYFORQUERY */
export function decodeReadyForQuery(body: Buffer): TransactionStatusCode {
  const r = new Reader(body);
  const byte = r.uint8();
  r.end();
  switch (byte) {
    case 0x49: // I
      return 'I';
    case 0x54: // T
      return 'T';
    case 0x45: // E
      return 'E';
    default:
      throw protocolViolation('invalid ReadyForQuery message', `unknown transaction status ${byte}`);
  }
}

/** The command tag, e.g. "INSERT 0 3". @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE */
export function decodeCommandComplete(body: Buffer): string {
  const r = new Reader(body);
  const tag = r.cstringLossy();
  r.end();
  return tag;
}

/**
 * Authentication ('R') body: the Int32 code and what follows it (a view). Codes with a fixed layout are checked.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK
 */
export function decodeAuthentication(body: Buffer): AuthenticationMessage {
  const r = new Reader(body);
  const code = r.int32();
  const data = r.rest();
  const expected =
    code === AuthenticationCode.Ok || code === AuthenticationCode.CleartextPassword
      ? 0
      : code === AuthenticationCode.MD5Password
        ? 4
        : -1;
  if (expected !== -1 && data.length !== expected) {
    throw protocolViolation('invalid authentication request', `code ${code} with ${data.length} bytes of data`);
  }
  return { code, data };
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NEGOTIATEPROTOCOLVERSION */
export function decodeNegotiateProtocolVersion(body: Buffer): NegotiateProtocolVersionMessage {
  const r = new Reader(body);
  const newestMinor = r.int32();
  const count = r.int32();
  // Each option is at least its NUL, which bounds the count before the array exists.
  if (count < 0 || count > r.remaining)
    throw protocolViolation('invalid NegotiateProtocolVersion message', `${count} options declared`);
  const unsupportedOptions: string[] = [];
  for (let i = 0; i < count; i++) unsupportedOptions.push(r.cstringLossy());
  r.end();
  return { newestMinor, unsupportedOptions };
}

// Tags that end in a row count; INSERT carries an OID (always 0 since Postgres 12) before it.
const ROW_COUNT_TAG = /^(?:INSERT \d+|SELECT|UPDATE|DELETE|MERGE|FETCH|MOVE|COPY) (\d+)$/;

/**
 * The row count in a CommandComplete tag ('SELECT 5' → 5, 'INSERT 0 3' → 3), or undefined for tags without one.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE
 */
export function readCommandTagRows(tag: string): number | undefined {
  const match = ROW_COUNT_TAG.exec(tag);
  const digits = match?.[1];
  return digits === undefined ? undefined : Number(digits);
}
