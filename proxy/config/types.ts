// The validated, frozen configuration every other module reads (shape only; load.ts builds it).

/** Durations are held in milliseconds after loading ("15m", "300s", "250ms", or a number of seconds). */
export type Millis = number;

export interface TlsServerConfig {
  certFile: string;
  keyFile: string;
}

export interface UpstreamConfig {
  host: string;
  port: number;
  database: string;
  user: string;
  /** Resolved at load time from passwordFile or passwordEnv; never from the policy file. Undefined means trust auth. */
  password: string | undefined;
  /** upstream.passwordFile, kept so the password can be re-read when the file changes (config/secrets.ts); absent for passwordEnv. */
  passwordFile?: string;
  /** 'disable' | 'require' (TLS, no verification) | 'verify-full' (TLS, CA + hostname). */
  sslmode: 'disable' | 'require' | 'verify-full';
  /** PEM CA bundle contents for verify-full; undefined uses the system store. */
  sslRootCert: string | undefined;
  connectTimeout: Millis;
  /** Idle sessions check their upstream connection this often (0: never), and end when it does not answer in checkTimeout. Optional for hand-built configs (30 s / 10 s). */
  checkInterval?: Millis;
  checkTimeout?: Millis;
}

export interface AuthConfig {
  issuer: string | string[];
  audience: string | string[];
  /** Pinned: the token's own `alg` header only selects among these. */
  algorithms: string[];
  /** Exactly one key source is set. */
  secretFile: string | undefined;
  publicKeyFile: string | undefined;
  jwksUrl: string | undefined;
  /** For `token mint` with an asymmetric algorithm. */
  privateKeyFile: string | undefined;
  maxTokenLifetime: Millis;
  clockSkew: Millis;
  /** Cleartext token over non-TLS: 'loopback' (default), 'always' or 'never'. */
  allowCleartext: 'loopback' | 'always' | 'never';
  /** JWKS: minimum time between refetches triggered by an unknown kid, and cache lifetime. */
  jwksCooldown: Millis;
  jwksCacheMaxAge: Millis;
  /** JWKS: time allowed for one fetch (optional so hand-built configs in tests need not set it; load sets 5s). */
  jwksTimeout?: Millis;
  /** After a key file changes, tokens signed with the previous key still verify this long (optional: hand-built configs get 10 min). */
  keyOverlap?: Millis;
}

/** The identity provider whose OIDC JWTs the exchange endpoint accepts as subject (and actor) tokens. */
export interface IdpConfig {
  issuer: string | string[];
  audience: string | string[];
  /**
   * The audience of approvers' tokens (the approvals API), disjoint from `audience`: a token given to an agent for
   * exchanges is never an approver credential, nor an approver's token a subject token. Unset: no approvals.
   */
  approverAudience?: string | string[] | undefined;
  /** Pinned, asymmetric only. */
  algorithms: string[];
  /** Exactly one key source. */
  jwksUrl: string | undefined;
  publicKeyFile: string | undefined;
}

/** Task-time issuance (docs/issuance.md): the RFC 8693 token-exchange endpoint and trust in tokens it issues. */
export interface ExchangeConfig {
  /** `iss` of issued tokens: the same on every replica of a deployment, different from every auth.issuer. */
  issuer: string;
  /** `aud` of issued tokens; one of auth.audience. */
  audience: string;
  /** The HTTP(S) listener; absent: this replica issues nothing and only verifies issued tokens. */
  listen: { host: string; port: number; tls: TlsServerConfig | undefined } | undefined;
  /** Private key (EC P-256 or Ed25519) issued tokens are signed with; required with listen. */
  signingKeyFile: string | undefined;
  /** Other replicas' /.well-known/jwks.json: tokens they issued verify here. */
  peerJwksUrls: string[];
  idp: IdpConfig | undefined;
  /** Largest request body read. */
  maxBodyBytes: number;
  /** Requests one client address may make per minute (token bucket). */
  requestsPerMinute: number;
  /** Time allowed for one request, headers and body. */
  requestTimeout: Millis;
}

export interface LimitsConfig {
  /** Largest regular message a client may send (bytes); the startup packet is capped at 10,000 like Postgres. */
  maxMessageSize: number;
  /** Time allowed from TCP accept to a completed login. */
  handshakeTimeout: Millis;
  /** Grace period after token expiry for a running statement; default 0. */
  expiryGrace: Millis;
  /** Logged-in sessions at once (checked at login); connections still logging in are counted separately. */
  maxClientConnections: number;
  /** Connections not yet logged in, in all and per client address; absent or 0 = unlimited (hand-built configs). */
  maxUnauthenticated?: number;
  maxUnauthenticatedPerAddress?: number;
  idleSessionTimeout: Millis;
  /** Live sessions per token subject / per agent; 0 = unlimited. Optional for hand-built configs. */
  maxSessionsPerSub?: number;
  maxSessionsPerAgent?: number;
  /** Failed logins / CancelRequests per client address per minute; absent or 0 = no limit (hand-built configs). */
  loginFailuresPerMinute?: number;
  cancelRequestsPerMinute?: number;
  /** Upstream connections pgwarden holds at most; 0 = derived from the server at startup; absent = no cap (hand-built configs). */
  maxUpstreamConnections?: number;
  /** Bytes the decision cache may hold (keys included); absent = 64 MiB (hand-built configs). */
  decisionCacheBytes?: number;
  /** Decide workers at most; 0 or absent = one fewer than the CPUs, at least 1, at most 4. */
  decideWorkers?: number;
  /** V8 heap limit of each decide worker, in bytes; absent = 512 MiB. */
  decideWorkerHeap?: number;
}

export interface Config {
  /** Directory of the config file; relative paths in it were resolved against this. */
  baseDir: string;
  listen: { host: string; port: number; tls: TlsServerConfig | undefined };
  upstream: UpstreamConfig;
  auth: AuthConfig;
  policyFile: string;
  metrics: { host: string; port: number } | undefined;
  /** Token exchange (issuance); absent: pgwarden issues nothing and trusts only auth's tokens. */
  exchange?: ExchangeConfig;
  limits: LimitsConfig;
  /** PostgreSQL's own analysis of each statement; defaults when absent (hand-built configs in tests). */
  analysis?: { cacheTtl: Millis; timeout: Millis; maxContexts: number; ddlChannel: string };
  log: { level: string };
  /** Scale-out: this replica's id (in every cancel key) and the peers cancels are forwarded to. */
  cluster?: { replicaId: number; peers: { id: number; host: string; port: number }[] };
  /** Audit trail; defaults (stdout, normalized SQL, refuse on failure) when absent. */
  audit?: { destination: string; sql: 'full' | 'normalized' | 'none'; onFailure: 'refuse' | 'continue' };
  /** SIGTERM: the most time from the signal to exit (default 10 s when absent). */
  shutdown?: { drainTimeout: Millis };
  /** Revocation sources: a hot-reloaded file and/or an upstream table watched with LISTEN/NOTIFY. */
  revocation?: {
    file: string | undefined;
    /** revocation.file missing at startup: refuse to start (loadConfig's default) or start empty (absent: empty, for hand-built configs). */
    fileMissing?: 'refuse' | 'empty';
    table: { schema: string; name: string; channel: string; refreshMs: number } | undefined;
  };
}
