// The phases of a client session and the transitions allowed between them.

export const Phase = {
  /** Waiting for StartupMessage, SSLRequest, GSSENCRequest or CancelRequest (no type byte yet). */
  AwaitingStartup: 'awaitingStartup',
  /** TLS handshake in progress after we answered 'S' to an SSLRequest. */
  TlsHandshake: 'tlsHandshake',
  /** AuthenticationCleartextPassword sent; waiting for the token in a PasswordMessage. */
  Authenticating: 'authenticating',
  /** Token verified; opening and stamping the upstream session. Client bytes are buffered meanwhile. */
  ConnectingUpstream: 'connectingUpstream',
  /** Relaying: every client message is decided before it goes upstream. */
  Ready: 'ready',
  /** Ending: no more input is read; sockets are being closed. */
  Closing: 'closing',
} as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

const allowed: Record<Phase, readonly Phase[]> = {
  awaitingStartup: ['awaitingStartup', 'tlsHandshake', 'authenticating', 'closing'],
  tlsHandshake: ['awaitingStartup', 'closing'],
  authenticating: ['connectingUpstream', 'closing'],
  connectingUpstream: ['ready', 'closing'],
  ready: ['closing'],
  closing: [],
};

/** True when `from → to` is a legal transition. */
export function canTransition(from: Phase, to: Phase): boolean {
  return allowed[from].includes(to);
}
