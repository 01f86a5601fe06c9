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
  InFailedSqlTransaction: '25P02',
  InsufficientResources: '53000',
  TooManyConnections: '53300',
  ProgramLimitExceeded: '54000',
  QueryCanceled: '57014',
  AdminShutdown: '57P01',
  CannotConnectNow: '57P03',
  IdleSessionTimeout: '57P05',
  InternalError: 'XX000',
} as const;
export type SqlStateCode = (typeof SqlState)[keyof typeof SqlState];
