// Protocol v3 constants: message type bytes, startup request codes, authentication codes and the limits Postgres enforces.

/**
 * Type bytes of messages a client (frontend) sends, as char codes.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
export const FrontendType = {
  Query: 0x51, // Q
  Parse: 0x50, // P
  Bind: 0x42, // B
  Execute: 0x45, // E
  Describe: 0x44, // D
  Close: 0x43, // C
  Sync: 0x53, // S
  Flush: 0x48, // H
  Terminate: 0x58, // X
  // Also carries GSSResponse, SASLInitialResponse and SASLResponse; only the phase tells them apart.
  PasswordMessage: 0x70, // p
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyFail: 0x66, // f
  FunctionCall: 0x46, // F
} as const;
export type FrontendTypeCode = (typeof FrontendType)[keyof typeof FrontendType];

/**
 * Type bytes of messages a server (backend) sends, as char codes. Several letters are reused with the
 * frontend set ('C', 'D', 'E', 'S', 'H', 'd', 'c') with a different meaning, so direction always matters.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
export const BackendType = {
  Authentication: 0x52, // R
  BackendKeyData: 0x4b, // K
  BindComplete: 0x32, // 2
  CloseComplete: 0x33, // 3
  CommandComplete: 0x43, // C
  CopyData: 0x64, // d
  CopyDone: 0x63, // c
  CopyInResponse: 0x47, // G
  CopyOutResponse: 0x48, // H
  CopyBothResponse: 0x57, // W
  DataRow: 0x44, // D
  EmptyQueryResponse: 0x49, // I
  ErrorResponse: 0x45, // E
  NegotiateProtocolVersion: 0x76, // v
  NoData: 0x6e, // n
  NoticeResponse: 0x4e, // N
  NotificationResponse: 0x41, // A
  ParameterDescription: 0x74, // t
  ParameterStatus: 0x53, // S
  ParseComplete: 0x31, // 1
  PortalSuspended: 0x73, // s
  ReadyForQuery: 0x5a, // Z
  RowDescription: 0x54, // T
} as const;
export type BackendTypeCode = (typeof BackendType)[keyof typeof BackendType];

// Request codes sit where a StartupMessage has its protocol version. They come from
// src/include/libpq/pqcomm.h: PG_PROTOCOL(3,0), and the special codes built as PG_PROTOCOL(1234, 5678..5680).

/** Protocol version 3.0 as sent in a StartupMessage: major in the high 16 bits, minor in the low 16. */
export const PROTOCOL_3_0 = 196608;
/** The only protocol major version we speak; version 2 was removed from Postgres 14. */
export const PROTOCOL_MAJOR_3 = 3;
/** SSLRequest: `PG_PROTOCOL(1234, 5679)` (NEGOTIATE_SSL_CODE in pqcomm.h). */
export const SSL_REQUEST_CODE = 80877103;
/** GSSENCRequest: `PG_PROTOCOL(1234, 5680)` (NEGOTIATE_GSS_CODE in pqcomm.h). */
export const GSSENC_REQUEST_CODE = 80877104;
/** CancelRequest: `PG_PROTOCOL(1234, 5678)` (CANCEL_REQUEST_CODE in pqcomm.h). */
export const CANCEL_REQUEST_CODE = 80877102;

/**
 * Largest startup packet accepted (MAX_STARTUP_PACKET_LENGTH in pqcomm.h). Postgres compares it to the
 * length minus the length word itself; we compare it to the whole length field, 4 bytes stricter.
 */
export const MAX_STARTUP_PACKET_LENGTH = 10000;

/** Cancel key bounds: exactly 4 bytes in protocol 3.0; protocol 3.2 (Postgres 18) allows 4..256 bytes. */
export const MIN_CANCEL_KEY_LENGTH = 4;
export const MAX_CANCEL_KEY_LENGTH = 256;

/**
 * The Int32 that starts every Authentication ('R') message body.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK
 */
export const AuthenticationCode = {
  Ok: 0,
  CleartextPassword: 3,
  MD5Password: 5,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;
export type AuthenticationCodeValue = (typeof AuthenticationCode)[keyof typeof AuthenticationCode];

/** Transaction status byte of ReadyForQuery: idle, in a transaction block, in a failed transaction block. */
export const TransactionStatus = {
  Idle: 'I',
  InTransaction: 'T',
  Failed: 'E',
} as const;
export type TransactionStatusCode = (typeof TransactionStatus)[keyof typeof TransactionStatus];

/**
 * Field type bytes inside ErrorResponse and NoticeResponse bodies (those we write or read by name).
 * @see https://www.postgresql.org/docs/current/protocol-error-fields.html
 */
export const ErrorField = {
  Severity: 'S', // localized
  SeverityNonLocalized: 'V', // since 9.6; what code should read
  Code: 'C', // SQLSTATE
  Message: 'M',
  Detail: 'D',
  Hint: 'H',
  Position: 'P', // 1-based character index into the query string
  File: 'F', // server source file that reported the error
  Line: 'L', // its line
  Routine: 'R', // its routine
} as const;
export type ErrorFieldCode = (typeof ErrorField)[keyof typeof ErrorField];
