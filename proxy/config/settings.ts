// The table of every config setting: key path, type, default, env var and one doc line (like pgbouncer's bouncer_params[]).

/** How a setting's raw value is read; load.ts has one parser per type. */
export type SettingType =
  | 'string' // non-empty string
  | 'host' // non-empty host name or address, no spaces
  | 'port' // integer in [min ?? 1, 65535]
  | 'integer' // integer in [min, max]
  | 'duration' // "15m", "300s", "250ms", "1h", "2d" or a number of seconds → milliseconds
  | 'bytes' // a number of bytes or "512kB", "1MB" (1024-based) → bytes
  | 'enum' // one of `values`
  | 'stringOrList' // a string or a non-empty list of strings
  | 'stringList' // a non-empty list of strings
  | 'path' // a file path, resolved against the config file's directory
  | 'url' // an absolute URL
  | 'envName'; // the name of an environment variable

export interface Setting {
  /** Dotted key path in the config file, e.g. "auth.maxTokenLifetime". */
  readonly key: string;
  readonly type: SettingType;
  /** The parsed default (milliseconds for durations, bytes for sizes); absent means "unset". */
  readonly default?: string | number;
  /** Must be given (within its section, for the optional sections listen.tls and metrics). */
  readonly required?: boolean;
  /** Environment variable that overrides the file. Only non-secret, non-path settings have one. */
  readonly env?: string;
  readonly values?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  readonly doc: string;
}

/** Longest duration Node's timers can wait (setTimeout fires at once above 2^31-1 ms). */
export const MAX_TIMER_MS = 2_147_483_647;

/** Sections that may be left out entirely; when given, their `required` settings must be too. */
export const OPTIONAL_SECTIONS = [
  'listen.tls',
  'metrics',
  'revocation.table',
  // The more specific first: a setting belongs to the first section its key starts with.
  'exchange.tls',
  'exchange.idp',
  'exchange',
] as const;

/** Every setting pgwarden reads. Order is documentation order; load.ts validates every entry. */
export const settings = [
  {
    key: 'listen.host',
    type: 'host',
    default: '127.0.0.1',
    env: 'PGWARDEN_LISTEN_HOST',
    doc: 'address the proxy listens on for Postgres clients',
  },
  {
    key: 'listen.port',
    type: 'port',
    default: 6432,
    min: 0,
    env: 'PGWARDEN_LISTEN_PORT',
    doc: 'port the proxy listens on (0 picks a free port)',
  },
  {
    key: 'listen.tls.certFile',
    type: 'path',
    required: true,
    doc: 'PEM certificate chain offered to clients that request SSL; with keyFile, enables TLS',
  },
  { key: 'listen.tls.keyFile', type: 'path', required: true, doc: 'PEM private key for listen.tls.certFile' },

  {
    key: 'upstream.host',
    type: 'host',
    required: true,
    env: 'PGWARDEN_UPSTREAM_HOST',
    doc: 'PostgreSQL server host the proxy connects to',
  },
  { key: 'upstream.port', type: 'port', default: 5432, env: 'PGWARDEN_UPSTREAM_PORT', doc: 'PostgreSQL server port' },
  {
    key: 'upstream.database',
    type: 'string',
    required: true,
    env: 'PGWARDEN_UPSTREAM_DATABASE',
    doc: 'database every session connects to',
  },
  {
    key: 'upstream.user',
    type: 'string',
    required: true,
    env: 'PGWARDEN_UPSTREAM_USER',
    doc: 'PostgreSQL role the proxy logs in as',
  },
  {
    key: 'upstream.passwordFile',
    type: 'path',
    doc: 'file holding the upstream password (trailing newline ignored); or use passwordEnv',
  },
  {
    key: 'upstream.passwordEnv',
    type: 'envName',
    doc: 'name of an environment variable holding the upstream password; or use passwordFile',
  },
  {
    key: 'upstream.sslmode',
    type: 'enum',
    values: ['disable', 'require', 'verify-full'],
    default: 'disable',
    env: 'PGWARDEN_UPSTREAM_SSLMODE',
    doc: 'TLS to the upstream: disable, require (no verification) or verify-full (CA + host name)',
  },
  {
    key: 'upstream.sslRootCert',
    type: 'path',
    doc: 'PEM CA bundle for sslmode verify-full; the system store when unset',
  },
  {
    key: 'upstream.connectTimeout',
    type: 'duration',
    default: 10_000,
    min: 1,
    doc: 'time allowed to connect and log in to the upstream',
  },
  {
    key: 'upstream.checkInterval',
    type: 'duration',
    default: 30_000,
    doc: 'an idle session (no statement running, no transaction open) checks its upstream connection this often with a Sync round trip; 0 turns it off',
  },
  {
    key: 'upstream.checkTimeout',
    type: 'duration',
    default: 10_000,
    min: 1,
    doc: 'time the upstream has to answer that check before the session ends with 08006 (the upstream connection was lost)',
  },

  { key: 'auth.issuer', type: 'stringOrList', required: true, doc: 'accepted token "iss" value(s)' },
  {
    key: 'auth.audience',
    type: 'stringOrList',
    required: true,
    doc: 'accepted token "aud" value(s); a token must name one of them',
  },
  {
    key: 'auth.algorithms',
    type: 'stringList',
    required: true,
    doc: 'accepted JWS algorithms, pinned: HS* with secretFile, RS*/PS*/ES*/EdDSA with publicKeyFile or jwksUrl',
  },
  {
    key: 'auth.secretFile',
    type: 'path',
    doc: 'HMAC secret (raw bytes, at least 32, trailing newline ignored); one of secretFile, publicKeyFile, jwksUrl',
  },
  {
    key: 'auth.publicKeyFile',
    type: 'path',
    doc: 'SPKI PEM public key, or a JWK / JWKS JSON file; one of secretFile, publicKeyFile, jwksUrl',
  },
  {
    key: 'auth.jwksUrl',
    type: 'url',
    doc: 'JWKS endpoint (https, or http to a loopback host); one of secretFile, publicKeyFile, jwksUrl',
  },
  {
    key: 'auth.privateKeyFile',
    type: 'path',
    doc: 'PKCS8 PEM or private JWK used by `pgwarden token mint` with an asymmetric algorithm',
  },
  {
    key: 'auth.maxTokenLifetime',
    type: 'duration',
    default: 15 * 60_000,
    min: 1_000,
    max: 24 * 3_600_000,
    doc: 'longest exp − iat a token may have',
  },
  {
    key: 'auth.clockSkew',
    type: 'duration',
    default: 30_000,
    max: 5 * 60_000,
    doc: 'tolerance when checking exp, nbf and iat against the clock',
  },
  {
    key: 'auth.allowCleartext',
    type: 'enum',
    values: ['loopback', 'always', 'never'],
    default: 'loopback',
    doc: 'accept a token over a non-TLS connection: from loopback only, always, or never',
  },
  {
    key: 'auth.jwksCooldown',
    type: 'duration',
    default: 30_000,
    doc: 'minimum time between JWKS refetches triggered by an unknown key id',
  },
  {
    key: 'auth.jwksCacheMaxAge',
    type: 'duration',
    default: 10 * 60_000,
    min: 1,
    doc: 'how long fetched JWKS keys are trusted before a refetch',
  },
  {
    key: 'auth.keyOverlap',
    type: 'duration',
    default: 10 * 60_000,
    max: 24 * 3_600_000,
    doc: 'after secretFile or publicKeyFile changes (file watch or SIGHUP), tokens signed with the previous key still verify this long; 0 ends them at once',
  },
  { key: 'auth.jwksTimeout', type: 'duration', default: 5_000, min: 1, doc: 'time allowed for one JWKS fetch' },

  { key: 'policyFile', type: 'path', required: true, doc: 'policy file (roles and rules), hot-reloaded' },

  { key: 'metrics.host', type: 'host', default: '127.0.0.1', doc: 'address of the Prometheus /metrics endpoint' },
  {
    key: 'metrics.port',
    type: 'port',
    required: true,
    min: 0,
    env: 'PGWARDEN_METRICS_PORT',
    doc: 'port of the /metrics endpoint; metrics are off unless the metrics section (or this env var) is given',
  },

  {
    key: 'exchange.issuer',
    type: 'string',
    required: true,
    doc: '"iss" of tokens pgwarden issues (the same on every replica, different from every auth.issuer); tokens claiming it are verified with the issuing keys',
  },
  {
    key: 'exchange.audience',
    type: 'string',
    doc: '"aud" of issued tokens; one of auth.audience (default: the first)',
  },
  {
    key: 'exchange.host',
    type: 'host',
    default: '127.0.0.1',
    doc: 'address of the token-exchange endpoint; plain HTTP only on a loopback address, else exchange.tls is required',
  },
  {
    key: 'exchange.port',
    type: 'port',
    min: 0,
    doc: 'port of the token-exchange endpoint (POST /token, GET /.well-known/jwks.json); absent: this replica issues nothing and only verifies issued tokens',
  },
  {
    key: 'exchange.tls.certFile',
    type: 'path',
    required: true,
    doc: 'PEM certificate chain of the token-exchange endpoint (HTTPS)',
  },
  { key: 'exchange.tls.keyFile', type: 'path', required: true, doc: 'PEM private key for exchange.tls.certFile' },
  {
    key: 'exchange.signingKeyFile',
    type: 'path',
    doc: 'private key issued tokens are signed with: EC P-256 (ES256) or Ed25519 (EdDSA), PKCS8 PEM or private JWK; re-read when it changes (the previous key overlaps for auth.keyOverlap)',
  },
  {
    key: 'exchange.peerJwksUrls',
    type: 'stringList',
    doc: "other replicas' /.well-known/jwks.json (https, or http to a loopback host): tokens they issued verify here",
  },
  {
    key: 'exchange.idp.issuer',
    type: 'stringOrList',
    required: true,
    doc: '"iss" of the identity provider whose OIDC JWTs are accepted as subject and actor tokens',
  },
  {
    key: 'exchange.idp.audience',
    type: 'stringOrList',
    required: true,
    doc: '"aud" an IdP token must name (the client id pgwarden is registered as)',
  },
  {
    key: 'exchange.idp.approverAudience',
    type: 'stringOrList',
    doc: '"aud" an approver\'s IdP token must name at the approvals API (a client id of its own, never one of exchange.idp.audience): the tokens users hand to agents for exchanges never approve, and an approver token is never exchanged; required for approvals',
  },
  {
    key: 'exchange.idp.algorithms',
    type: 'stringList',
    required: true,
    doc: 'accepted JWS algorithms of IdP tokens, pinned (RS*/PS*/ES*/EdDSA)',
  },
  {
    key: 'exchange.idp.jwksUrl',
    type: 'url',
    doc: "the IdP's JWKS (https, or http to a loopback host); or publicKeyFile",
  },
  { key: 'exchange.idp.publicKeyFile', type: 'path', doc: "the IdP's public key (PEM, JWK or JWKS file); or jwksUrl" },
  {
    key: 'exchange.maxBodyBytes',
    type: 'bytes',
    default: 16 * 1024,
    min: 1024,
    max: 1024 * 1024,
    doc: 'largest token request body; a longer one is refused (413) unread',
  },
  {
    key: 'exchange.requestsPerMinute',
    type: 'integer',
    default: 60,
    min: 1,
    max: 1_000_000,
    doc: 'token requests one client address may make per minute (token bucket, burst as large); past it 429',
  },
  {
    key: 'exchange.requestTimeout',
    type: 'duration',
    default: 10_000,
    min: 1_000,
    max: 5 * 60_000,
    doc: 'time allowed to receive one token request (headers and body)',
  },

  {
    key: 'limits.maxMessageSize',
    type: 'bytes',
    default: 1024 * 1024,
    min: 8 * 1024,
    max: 1024 ** 3,
    doc: 'largest message a client may send, in bytes or "1MB" / "512kB"',
  },
  {
    key: 'limits.handshakeTimeout',
    type: 'duration',
    default: 5_000,
    min: 1,
    doc: 'time from TCP accept to a completed login',
  },
  {
    key: 'limits.expiryGrace',
    type: 'duration',
    default: 0,
    doc: 'grace after token expiry for a running statement before the session ends',
  },
  {
    key: 'limits.maxClientConnections',
    type: 'integer',
    default: 1000,
    min: 1,
    max: 1_000_000,
    env: 'PGWARDEN_MAX_CLIENT_CONNECTIONS',
    doc: 'logged-in sessions at once (connections still logging in count against maxUnauthenticated instead)',
  },
  {
    key: 'limits.maxUnauthenticated',
    type: 'integer',
    default: 256,
    min: 1,
    max: 1_000_000,
    doc: "connections not yet logged in at once; they never take a logged-in session's place",
  },
  {
    key: 'limits.maxUnauthenticatedPerAddress',
    type: 'integer',
    default: 32,
    min: 1,
    max: 1_000_000,
    doc: 'connections not yet logged in at once from one client address',
  },
  {
    key: 'limits.idleSessionTimeout',
    type: 'duration',
    default: 5 * 60_000,
    doc: 'end a session idle this long (it holds an upstream connection); 0 turns it off',
  },
  {
    key: 'limits.loginFailuresPerMinute',
    type: 'integer',
    default: 30,
    min: 0,
    max: 1_000_000,
    doc: 'failed logins one client address may have per minute (token bucket, burst as large); past it every connection from that address is refused (53300) until a token is back; 0 means no limit',
  },
  {
    key: 'limits.cancelRequestsPerMinute',
    type: 'integer',
    default: 60,
    min: 0,
    max: 1_000_000,
    doc: 'CancelRequests one client address may send per minute; the rest are dropped unanswered, as PostgreSQL drops a cancel for an unknown key; 0 means no limit',
  },
  {
    key: 'limits.maxUpstreamConnections',
    type: 'integer',
    default: 0,
    min: 0,
    max: 1_000_000,
    doc: "upstream connections pgwarden holds at most (sessions, analysis, revocation listener, checks); 0 derives it at startup from the server's max_connections, reserved slots and connections already in use; a value above that is lowered to it",
  },

  {
    key: 'limits.decisionCacheBytes',
    type: 'bytes',
    default: 64 * 1024 * 1024,
    min: 1024 * 1024,
    max: 16 * 1024 ** 3,
    doc: 'memory the decision cache may hold, statement texts (its keys) included, beside its 10,000 entries; least recently used decisions go first',
  },
  {
    key: 'limits.decideWorkers',
    type: 'integer',
    default: 0,
    min: 0,
    max: 64,
    doc: 'worker threads that parse and decide statements over 4 KiB off the event loop; 0 = one fewer than the CPUs, at least 1, at most 4. Each may briefly need ~1 GB while parsing a hostile 1 MiB text: size the memory limit with it (docs/limits.md, "Memory")',
  },
  {
    key: 'limits.decideWorkerHeap',
    type: 'bytes',
    default: 512 * 1024 * 1024,
    min: 64 * 1024 * 1024,
    max: 16 * 1024 ** 3,
    doc: 'V8 heap limit of each decide worker; a decision needing more ends the worker and refuses its statement (54000)',
  },
  {
    key: 'limits.maxSessionsPerSub',
    type: 'integer',
    default: 50,
    min: 0,
    doc: 'live sessions one token subject may hold; 0 means no limit',
  },
  {
    key: 'limits.maxSessionsPerAgent',
    type: 'integer',
    default: 100,
    min: 0,
    doc: 'live sessions one agent may hold; 0 means no limit',
  },

  {
    key: 'analysis.cacheTtl',
    type: 'duration',
    default: 10_000,
    min: 1,
    max: 10 * 60_000,
    doc: "longest time a decision confirmed by PostgreSQL's own analysis is reused before the server is asked again (the bound on staleness after DDL)",
  },
  {
    key: 'analysis.timeout',
    type: 'duration',
    default: 5_000,
    min: 1,
    doc: 'time allowed for the server to analyse one statement; past it the statement is refused (58000)',
  },
  {
    key: 'analysis.maxContexts',
    type: 'integer',
    default: 16,
    min: 1,
    max: 1000,
    doc: "analysis connections kept open, one per distinct dbRole and search_path of the policy's roles",
  },
  {
    key: 'analysis.ddlChannel',
    type: 'string',
    default: 'pgwarden_ddl',
    doc: 'NOTIFY channel whose notifications make pgwarden forget every analysed decision at once (see docs/policy.md for the event trigger)',
  },

  {
    key: 'cluster.replicaId',
    type: 'integer',
    default: 0,
    min: 0,
    max: 127,
    env: 'PGWARDEN_REPLICA_ID',
    doc: "this replica's id, encoded in every cancel key so a cancel landing on another replica finds its way back",
  },
  {
    key: 'cluster.peers',
    type: 'stringList',
    doc: 'other replicas as "id@host:port", where CancelRequests for their keys are forwarded',
  },

  {
    key: 'audit.destination',
    type: 'string',
    default: 'stdout',
    env: 'PGWARDEN_AUDIT_DESTINATION',
    doc: 'audit trail: stdout, stderr or a file path (appended; SIGUSR2 reopens it for rotation)',
  },
  {
    key: 'audit.sql',
    type: 'enum',
    values: ['normalized', 'full', 'none'],
    default: 'normalized',
    doc: 'SQL text in statement events: literals replaced by ?, as sent, or left out',
  },
  {
    key: 'audit.onFailure',
    type: 'enum',
    values: ['refuse', 'continue'],
    default: 'refuse',
    doc: 'when the audit destination fails: refuse new logins and statements, or continue and log the failure',
  },

  {
    key: 'revocation.file',
    type: 'path',
    doc: 'revocation list (YAML/JSON), hot-reloaded; `pgwarden revoke` appends to it',
  },
  {
    key: 'revocation.fileMissing',
    type: 'enum',
    values: ['refuse', 'empty'],
    default: 'refuse',
    doc: 'revocation.file missing at startup: refuse to start (a lost file must not un-revoke anybody), or start with no entries',
  },
  {
    key: 'revocation.table.schema',
    type: 'string',
    required: true,
    doc: 'schema of the upstream revocation table (fleets)',
  },
  { key: 'revocation.table.name', type: 'string', required: true, doc: 'name of the upstream revocation table' },
  {
    key: 'revocation.table.channel',
    type: 'string',
    default: 'pgwarden_revocations',
    doc: 'NOTIFY channel the table trigger signals',
  },
  {
    key: 'revocation.table.refresh',
    type: 'duration',
    default: 30_000,
    min: 1_000,
    doc: 'safety-net re-read interval of the revocation table',
  },

  {
    key: 'shutdown.drainTimeout',
    type: 'duration',
    default: 10_000,
    min: 1_000,
    max: 10 * 60_000,
    doc: 'SIGTERM to exit at most: running statements may finish until the last 2 s (a quarter, when shorter), then every session ends and pgwarden exits',
  },

  {
    key: 'log.level',
    type: 'enum',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    default: 'info',
    env: 'PGWARDEN_LOG_LEVEL',
    doc: 'log level',
  },
] as const satisfies readonly Setting[];

export type SettingKey = (typeof settings)[number]['key'];

/** Keys that look like settings but are refused on purpose, with the reason shown to the operator. */
export const forbiddenKeys: Readonly<Record<string, string>> = {
  'upstream.password':
    'the upstream password must not be written in the config file (it is often committed or shared); put it in a file and set upstream.passwordFile, or set upstream.passwordEnv to the name of an environment variable',
  'auth.secret': 'the HMAC secret must not be written in the config file; put it in a file and set auth.secretFile',
  'auth.privateKey':
    'a private key must not be written in the config file; put it in a file and set auth.privateKeyFile',
};
