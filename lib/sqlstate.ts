// Named SQLSTATE codes pgwarden sends, with their PostgreSQL condition names (Appendix A of the PostgreSQL docs).
export const SqlState = {
  SuccessfulCompletion: '00000',
  Warning: '01000',
  ConnectionException: '08000',
  ConnectionFailure: '08006',
  ProtocolViolation: '08P01',
  FeatureNotSupported: '0A000',
  InvalidAuthorizationSpecification: '28000',
  InvalidPassword: '28P01',
  InvalidParameterValue: '22023',
  InsufficientPrivilege: '42501',
  SyntaxError: '42601',
  UndefinedTable: '42P01',
  InvalidEscapeSequence: '22025',
  WindowingError: '42P20',
  InFailedSqlTransaction: '25P02',
  InsufficientResources: '53000',
  TooManyConnections: '53300',
  ConfigurationLimitExceeded: '53400',
  ProgramLimitExceeded: '54000',
  LockNotAvailable: '55P03',
  QueryCanceled: '57014',
  AdminShutdown: '57P01',
  CannotConnectNow: '57P03',
  IdleSessionTimeout: '57P05',
  SystemError: '58000',
  InternalError: 'XX000',
} as const;
export type SqlStateCode = (typeof SqlState)[keyof typeof SqlState];

/** Connection exceptions (08) and the backend ended by the server (57P01 admin shutdown and its kin, 57P02, 57P03); no code at all is a lost socket. */
export function isConnectionLoss(code: string | undefined): boolean {
  return code === undefined || code.startsWith('08') || code.startsWith('57P');
}
