// createProxy(config, deps): the one public entry point that wires parser, policy store, token verifier and server together.
import os from 'node:os';
import type { Logger } from 'pino';
import client from 'prom-client';
import type { Config } from './config/types.ts';
import { livePassword, TlsPair, UpstreamPassword, type SecretLog } from './config/secrets.ts';
import { createTokenVerifier, type TokenVerifier } from './auth/jwt.ts';
import { openRotatingKeys } from './auth/keys.ts';
import { networkRefusal } from './auth/networks.ts';
import { ProxyError } from '../lib/errors.ts';
import { createLogger } from './log.ts';
import {
  createMetrics,
  registerAuditMetrics,
  registerRevocationMetrics,
  registerDecidePoolMetrics,
  registerSessionBufferMetrics,
  registerUpstreamCapMetrics,
  startMetricsServer,
  type Metrics,
} from './metrics.ts';
import { createAudit, type Audit } from './audit/sink.ts';
import { auditGate, auditUnavailableError, withAuditGate } from './audit/gate.ts';
import { RevocationList } from './revocation/file.ts';
import { combineRevocations, revokedSessionError, type RevocationSource } from './revocation/source.ts';
import { revocationClientConfig, revocationListenerNotReady, TableRevocations } from './revocation/table.ts';
import { MemoryJtiConsumer, singleUseCheck, TableJtiConsumer, type JtiConsumer } from './revocation/consumed.ts';
import { createServer, type ProxyServer } from './server.ts';
import { BudgetLedger } from './session/budget.ts';
import { CancelRegistry } from './session/cancel.ts';
import type { SessionEvents } from './session/session.ts';
import { createPolicyGate } from './session/policy-gate.ts';
import { decidePoolOptions } from './session/decide-pool.ts';
import { ServerChecker } from './session/server-check.ts';
import { AnalysisPool } from './upstream/analysis.ts';
import { tcpUpstream, type CountedUpstream, type UpstreamConnector } from './upstream/connect.ts';
import { upstreamQuerier } from './upstream/querier.ts';
import { chooseCap, OWN_HEADROOM, readServerSlots, UpstreamCap } from './upstream/cap.ts';
import { warnAboutRoleSettings } from './upstream/role-settings.ts';
import { IssuingKeys } from './exchange/signing-keys.ts';
import { createIssuedTokenVerifier, issuedTokenKeys, routeByIssuer } from './exchange/trust.ts';
import { createIdpVerifier, type IdpVerifier } from './exchange/subject.ts';
import { startExchangeListener, type ExchangeListener } from './exchange/server.ts';
import { MemoryApprovalStore, TableApprovalStore, type ApprovalStore } from './exchange/approval-store.ts';
import { sweepApprovals, type ExchangeDeps } from './exchange/handler.ts';
import { errorMessage } from '../lib/error-message.ts';
import { initParser } from '../policy/parser.ts';
import { PolicyStore } from '../policy/store.ts';
import { policyRelations } from '../policy/load.ts';
import { loadCatalog, checkUpstreamPrivileges } from '../policy/catalog.ts';

export interface ProxyDeps {
  logger?: Logger;
  now?: () => number;
  events?: SessionEvents;
  /** Watch the policy file for changes (default true). */
  watchPolicy?: boolean;
  /** Watch the upstream password file, the key file and the TLS pair for changes (default: as watchPolicy). */
  watchSecrets?: boolean;
  /**
   * How sessions and analysis connections reach Postgres (default tcpUpstream). pgwarden's own catalog, readiness
   * and revocation connections use `pg` and are not routed through it.
   */
  upstream?: UpstreamConnector;
}

export interface Proxy {
  readonly host: string;
  readonly port: number;
  readonly server: ProxyServer;
  readonly store: PolicyStore;
  readonly verifier: TokenVerifier;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly audit: Audit;
  readonly revocations: RevocationSource;
  /** Port of the metrics/health listener when configured. */
  readonly metricsPort: number | undefined;
  /** Port of the token-exchange endpoint when configured (exchange.port). */
  readonly exchangePort: number | undefined;
  /** This replica's issuing keys when it issues (exchange.signingKeyFile). */
  readonly issuingKeys: IssuingKeys | undefined;
  /** Reloads the policy (SIGHUP); sessions whose role disappeared are ended. */
  reload(): Promise<void>;
  close(drainMs?: number): Promise<void>;
}

/**
 * limits.maxUpstreamConnections in force: derived from the server's slots (0 configured), or the configured value
 * when lower; undefined (no cap) only for hand-built configs that leave it out. Logs what was chosen and why.
 */
async function upstreamCapFor(
  config: Config,
  query: ReturnType<typeof upstreamQuerier>,
  log: Logger,
): Promise<UpstreamCap | undefined> {
  const configured = config.limits.maxUpstreamConnections;
  if (configured === undefined) return undefined;
  let max: number;
  try {
    const slots = await readServerSlots(query);
    const choice = chooseCap(slots, configured);
    max = choice.max;
    log.info(
      {
        maxUpstreamConnections: max,
        derived: choice.derived,
        configured: configured || undefined,
        superuser: slots.superuser || undefined,
      },
      configured > 0 && configured <= choice.derived
        ? 'limits.maxUpstreamConnections: the configured value'
        : `limits.maxUpstreamConnections derived from the server: ${choice.reason}`,
    );
  } catch (err) {
    if (configured === 0) {
      log.warn(
        { err },
        "could not read the server's connection slots: no upstream connection cap (set limits.maxUpstreamConnections)",
      );
      return undefined;
    }
    max = configured;
    log.warn(
      { err, maxUpstreamConnections: max },
      "could not read the server's connection slots: using the configured limits.maxUpstreamConnections",
    );
  }
  if (max <= OWN_HEADROOM)
    log.error(
      { maxUpstreamConnections: max },
      `limits.maxUpstreamConnections ${max} leaves no room for sessions (${OWN_HEADROOM} are kept for pgwarden's own connections): every login will be refused`,
    );
  return new UpstreamCap(max);
}

export async function createProxy(loaded: Config, deps: ProxyDeps = {}): Promise<Proxy> {
  const log = deps.logger ?? createLogger(loaded.log.level);
  const metrics = createMetrics();
  // Secrets re-read while running (docs/rotation.md): a failed read keeps the value in use and is counted here.
  const secretReloads = new client.Counter({
    name: 'pgwarden_secret_reloads_total',
    help: 'Re-reads of a rotated secret (upstream_password, verification_key, tls) by result: changed, unchanged, failed (the one in use was kept)',
    labelNames: ['secret', 'result'] as const,
    registers: [metrics.registry],
  });
  // Token exchange outcomes (docs/issuance.md): issued, pending an approval, or refused with the RFC error returned (a
  // fixed set of codes).
  const tokenExchanges = new client.Counter({
    name: 'pgwarden_token_exchanges_total',
    help: 'Token-exchange requests that reached a decision, by result (issued, pending, refused) and error (the RFC 6749 / 8693 error code; approval_required when pending; empty when issued)',
    labelNames: ['result', 'error'] as const,
    registers: [metrics.registry],
  });
  const secretOpts = {
    watch: deps.watchSecrets ?? deps.watchPolicy ?? true,
    log: ((level, msg, fields) => log[level](fields ?? {}, msg)) satisfies SecretLog,
    onReload: (secret: string, result: string) => secretReloads.inc({ secret, result }),
  };
  const password = UpstreamPassword.open(loaded.upstream, secretOpts);
  // Every connection opened from here on reads the password in force when it logs in.
  const config: Config = { ...loaded, upstream: livePassword(loaded.upstream, password) };
  // The parser must be loaded before the first connection is accepted (parseSync on the hot path).
  await initParser();
  const counted: CountedUpstream = {};
  // Catalog reads and the readiness probe retry a 28P01 like sessions do: a probe failing through a rotation would
  // take the replica out of service, and with no logins nothing else would notice the server's new password.
  const query: ReturnType<typeof upstreamQuerier> = (sql, params) =>
    password.withRetry(
      (pw) => upstreamQuerier({ ...config, upstream: { ...config.upstream, password: pw } }, counted)(sql, params),
      (err) => (err as { code?: unknown } | undefined)?.code === '28P01',
    );
  const upstreamCap = await upstreamCapFor(config, query, log);
  counted.cap = upstreamCap;
  if (upstreamCap) registerUpstreamCapMetrics(metrics, upstreamCap);
  // A DBA's settings on pgwarden's upstream role bound what any session can cost; say which ones are missing.
  await warnAboutRoleSettings(query, log);
  const store = await PolicyStore.open({
    file: config.policyFile,
    watch: deps.watchPolicy ?? true,
    loadCatalog: async (policy) => await loadCatalog(query, { relations: policyRelations(policy) }),
    // Relations in a role's ddl.schemas are owned by the upstream user by design (the role creates them there).
    checkPrivileges: async (policy) => {
      const ddl = new Set([...policy.roles.values()].flatMap((r) => r.ddl?.schemas ?? []));
      return await checkUpstreamPrivileges(
        query,
        policyRelations(policy).filter((p) => !ddl.has(p.schema)),
      );
    },
    log: (level, msg, fields) => {
      if (msg.startsWith('policy reload failed')) metrics.policyReloads.inc({ result: 'invalid' });
      log[level](fields ?? {}, msg);
    },
  });
  const keys = await openRotatingKeys(config.auth, { ...secretOpts, now: deps.now });
  const authVerifier = await createTokenVerifier(config.auth, { keys, ...(deps.now ? { now: deps.now } : {}) });
  // Task-time issuance (docs/issuance.md): tokens claiming exchange.issuer are verified with the issuing keys, this
  // replica's own and its peers' published ones; every other token as before.
  const exchangeConfig = config.exchange;
  const issuingKeys =
    exchangeConfig?.signingKeyFile === undefined
      ? undefined
      : await IssuingKeys.open(exchangeConfig.signingKeyFile, {
          ...secretOpts,
          overlapMs: config.auth.keyOverlap,
          ...(deps.now ? { now: deps.now } : {}),
        });
  const issuedKeys =
    exchangeConfig === undefined ? undefined : await issuedTokenKeys(config.auth, exchangeConfig, issuingKeys);
  const issuedVerifier =
    exchangeConfig === undefined || issuedKeys === undefined
      ? undefined
      : await createIssuedTokenVerifier(config.auth, exchangeConfig, issuedKeys, deps.now);
  const verifier =
    exchangeConfig === undefined || issuedVerifier === undefined
      ? authVerifier
      : routeByIssuer(authVerifier, issuedVerifier, exchangeConfig.issuer);
  const auditConfig = config.audit ?? { destination: 'stdout', sql: 'normalized', onFailure: 'refuse' };
  const audit = await createAudit({
    ...auditConfig,
    policyVersion: () => store.version,
    log: log.child({ component: 'audit' }),
  });
  registerAuditMetrics(metrics, audit);
  const sources: RevocationSource[] = [];
  const onRevocationRead = registerRevocationMetrics(metrics, () =>
    sources.flatMap((s) => (s.health ? [s.health()] : [])),
  );
  const revocationLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: object) =>
    log[level](fields ?? {}, msg);
  if (config.revocation?.file) {
    const ifMissing = config.revocation.fileMissing ?? 'empty';
    sources.push(
      await RevocationList.open({
        file: config.revocation.file,
        ifMissing,
        watch: deps.watchPolicy ?? true,
        log: revocationLog,
        onRead: onRevocationRead,
      }),
    );
  }
  if (config.revocation?.table) {
    const t = config.revocation.table;
    // The listener holds one upstream connection for pgwarden's lifetime (reconnecting when lost).
    upstreamCap?.acquireOwn();
    sources.push(
      await TableRevocations.open({
        connection: revocationClientConfig(config.upstream),
        schema: t.schema,
        table: t.name,
        channel: t.channel,
        refreshMs: t.refreshMs,
        log: revocationLog,
        onRead: onRevocationRead,
      }),
    );
  }
  const revocations = combineRevocations(...sources);
  // Single-use tokens: consumed in the shared table beside the revocation table (atomic across replicas), in memory for
  // a lone replica, and refused outright by a replica that has peers but no table (docs/revocation.md).
  const replicaId = config.cluster?.replicaId ?? 0;
  const jtiConsumer: JtiConsumer | undefined = config.revocation?.table
    ? new TableJtiConsumer({
        connection: revocationClientConfig(config.upstream),
        schema: config.revocation.table.schema,
        table: config.revocation.table.name,
        log: revocationLog,
        // Logs in like sessions: the password the server accepts, the other one once after a 28P01 (a rotation).
        password,
        ...(upstreamCap ? { acquire: () => upstreamCap.acquireOwn() } : {}),
      })
    : (config.cluster?.peers.length ?? 0) > 0
      ? undefined
      : new MemoryJtiConsumer(deps.now);
  const singleUse = singleUseCheck(jtiConsumer, { by: `replica ${replicaId} on ${os.hostname()}`, log: revocationLog });
  // While the audit trail is down (onFailure: refuse), every statement is refused rather than run unaudited.
  // PostgreSQL's own analysis confirms every statement pgwarden's allows (docs/policy.md, "Two analyses").
  const analysisConfig = config.analysis ?? {
    cacheTtl: 10_000,
    timeout: 5_000,
    maxContexts: 16,
    ddlChannel: 'pgwarden_ddl',
  };
  const analysisLog = log.child({ component: 'analysis' });
  // Analysis connections count against limits.maxUpstreamConnections as they open (connectUpstream reads `cap`).
  const analysisUpstream: Config['upstream'] & CountedUpstream = livePassword(
    { ...config.upstream, cap: upstreamCap },
    password,
  );
  const upstream = retryingPassword(deps.upstream ?? tcpUpstream, password, log);
  const analysisPool = new AnalysisPool(analysisUpstream, {
    connector: upstream,
    timeoutMs: analysisConfig.timeout,
    maxTreeBytes: 16 * 1024 * 1024,
    maxContexts: analysisConfig.maxContexts,
    ddlChannel: analysisConfig.ddlChannel,
    onDdl: () => {
      analysisLog.debug('DDL announced: analysed decisions forgotten');
      serverCheck.invalidate();
    },
  });
  const serverCheck: ServerChecker = new ServerChecker({
    pool: analysisPool,
    log: analysisLog,
    ttlMs: analysisConfig.cacheTtl,
    onAnalysis: ({ ms, outcome }) => {
      metrics.analyses.inc({ outcome });
      metrics.analysisSeconds.observe(ms / 1000);
    },
    onDisagreement: ({ reason, role }) => {
      metrics.analysisDisagreements.inc({ reason });
      // The statement itself is in the audit trail (with the operator's choice of SQL detail), refused with this reason.
      analysisLog.warn({ reason, role }, "pgwarden allowed a statement the server's analysis denies");
    },
  });
  const policyGate = createPolicyGate(store, {
    onLookup: (hit) => metrics.cacheLookup(hit),
    server: serverCheck,
    cacheBytes: config.limits.decisionCacheBytes,
    pool: decidePoolOptions(config.limits),
  });
  const gate = withAuditGate(policyGate, audit);
  const tlsPair = config.listen.tls ? TlsPair.open(config.listen.tls, secretOpts) : undefined;
  let exchangeTls: TlsPair | undefined;
  // Throws (pgwarden does not start) when the peer list names this replica itself, by id or by its listen address.
  const cancels = new CancelRegistry(config.cluster?.replicaId ?? 0, config.cluster?.peers ?? [], {
    listen: config.listen,
    perAddressPerMinute: config.limits.cancelRequestsPerMinute,
    onAddressLimited: () => metrics.rateLimited.inc({ limit: 'cancel_requests' }),
  });
  const events = combineEvents(metrics.events, audit.events, deps.events);
  const server = createServer(
    {
      config,
      verifier,
      gate,
      cancels,
      log,
      events,
      now: deps.now,
      isRevoked: (id) => revocations.match(id)?.reason,
      singleUse,
      budgets: new BudgetLedger(deps.now),
      upstream,
      // Read when each connection's session is made (server.ts spreads these deps): new handshakes get the newest pair.
      get tlsContext() {
        return tlsPair?.context;
      },
    },
    {
      admit: () => (auditGate(audit) ? undefined : auditUnavailableError()),
      upstreamCap,
      onLoginRateLimited: () => {
        metrics.rateLimited.inc({ limit: 'login_failures' });
        metrics.logins.inc({ result: 'refused', reason: 'rate_limited' });
      },
      onLoginFailuresExceeded: (s, retryAfterMs) => {
        const perMinute = config.limits.loginFailuresPerMinute ?? 0;
        const message = `too many failed logins from this address (limits.loginFailuresPerMinute = ${perMinute}): its connections are refused for ${Math.ceil(retryAfterMs / 1000)} s`;
        log.warn({ clientAddress: s.remoteAddress, retryAfterMs }, message);
        audit.write({
          event: 'login_refused',
          sessionId: s.id,
          clientAddress: s.remoteAddress,
          reason: 'login_failures_exceeded',
          refusal: 'rate_limited',
          sqlstate: '53300',
          code: 'ERR_TOO_MANY',
          message,
        });
      },
    },
  );
  revocations.onChange((change) => {
    // A live session whose token now matches a revocation ends within the same tick, with its own reason.
    let ended = 0;
    for (const s of [...server.sessions]) {
      const m = s.identity ? revocations.match(s.identity) : undefined;
      if (m) {
        s.endWith(revokedSessionError(m.reason), 'revoked');
        ended++;
      }
    }
    audit.revocationChanged({ ...change, sessionsEnded: ended });
  });
  registerSessionBufferMetrics(metrics, () => server.sessions);
  registerDecidePoolMetrics(metrics, () => policyGate.pool?.snapshot());
  metrics.policyVersion.set(store.version);

  const endRemovedRoles = (): number => {
    const roles = store.current.policy.roles;
    return server.endSessions(
      (s) => s.role !== undefined && !roles.has(s.role.name),
      new ProxyError(
        'ERR_SHUTDOWN',
        'terminating connection because the role of this session was removed from the policy',
        {
          hint: 'request a token for a role that exists in the current policy',
          reason: 'session_ended',
        },
      ),
      'policy_reload',
    );
  };
  // A role's networks narrowed by a reload: its sessions from an address now outside them end at once (fail closed).
  const endOffNetwork = (): number => {
    const roles = store.current.policy.roles;
    return server.endSessions(
      (s) => {
        const role = s.role === undefined ? undefined : roles.get(s.role.name);
        return role !== undefined && networkRefusal(s.remoteAddress, role, s.identity?.networks) !== undefined;
      },
      new ProxyError(
        'ERR_SHUTDOWN',
        'terminating connection because the policy no longer allows its role from this client address',
        {
          hint: 'reconnect from a network the role allows',
          reason: 'session_ended',
        },
      ),
      'policy_reload',
    );
  };
  store.onChange((change) => {
    if (change.reason !== 'catalog') metrics.policyReloads.inc({ result: 'ok' });
    metrics.policyVersion.set(change.version);
    const sessionsEnded = endRemovedRoles() + endOffNetwork();
    // Open sessions of changed roles: a changed login-time setting ends them at their next idle point (docs/policy.md, "Hot reload").
    if (change.changedRoles.length > 0) for (const s of [...server.sessions]) s.policyChanged();
    audit.policyReloaded({
      version: change.version,
      previousVersion: change.previousVersion,
      reason: change.reason,
      digest: change.policy.digest.slice(0, 12),
      addedRoles: change.addedRoles,
      removedRoles: change.removedRoles,
      changedRoles: change.changedRoles,
      sessionsEnded,
    });
  });

  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | undefined;
  if (config.metrics) {
    // Ready: a valid policy is loaded (the store exists), the audit trail can be written, and upstream answers.
    // The upstream check runs on the admin listener's schedule (one login every few seconds, whatever the probe
    // rate); the audit trail's state is read on every request.
    metricsServer = await startMetricsServer(
      metrics,
      config.metrics.host,
      config.metrics.port,
      async () => {
        await query('SELECT 1');
        return true;
      },
      {
        live: () => {
          if (!auditGate(audit)) return { ok: false, detail: `audit trail ${audit.state} (onFailure: refuse)` };
          // A revocation listener down for long: this replica may be missing revocations (docs/revocation.md).
          const revocationDown = revocationListenerNotReady(sources);
          if (revocationDown) return { ok: false, detail: revocationDown };
          // onFailure: continue keeps serving while the trail is down; /readyz says so (and pgwarden_audit_healthy).
          if (!audit.healthy)
            return {
              ok: true,
              detail: `audit trail ${audit.state}, ${audit.dropped} events dropped so far (onFailure: continue)`,
            };
          return true;
        },
      },
    );
  }

  let idp: IdpVerifier | undefined;
  let exchangeListener: ExchangeListener | undefined;
  let approvals: ApprovalStore | undefined;
  let approvalSweep: NodeJS.Timeout | undefined;
  if (
    exchangeConfig?.listen !== undefined &&
    issuingKeys !== undefined &&
    issuedVerifier !== undefined &&
    issuedKeys !== undefined
  ) {
    idp = exchangeConfig.idp === undefined ? undefined : await createIdpVerifier(exchangeConfig.idp, config.auth);
    const tlsFiles = exchangeConfig.listen.tls;
    exchangeTls = tlsFiles === undefined ? undefined : TlsPair.open(tlsFiles, secretOpts);
    const exchangeLog = log.child({ component: 'exchange' });
    const logExchange = (level: 'warn' | 'error', msg: string, fields?: object) =>
      exchangeLog[level](fields ?? {}, msg);
    const signer = issuingKeys;
    const tlsNow = exchangeTls;
    // Requests waiting for approval: in the table beside the revocation table (every replica sees one state), in
    // memory for a lone replica, and nowhere for replicas without a shared table (such requests are answered 503).
    approvals = config.revocation?.table
      ? new TableApprovalStore({
          connection: revocationClientConfig(config.upstream),
          schema: config.revocation.table.schema,
          table: config.revocation.table.name,
          log: logExchange,
          ...(upstreamCap ? { acquire: () => upstreamCap.acquireOwn() } : {}),
        })
      : (config.cluster?.peers.length ?? 0) > 0
        ? undefined
        : new MemoryApprovalStore(deps.now);
    const exchangeDeps: ExchangeDeps = {
      exchange: exchangeConfig,
      auth: config.auth,
      policy: () => store.current.policy,
      catalog: () => store.current.catalog,
      idp,
      issued: issuedVerifier,
      issuedKeys,
      isRevoked: (id) => revocations.match(id)?.reason,
      signer,
      now: deps.now ?? Date.now,
      audit: (event) => {
        if (event.event === 'token_issued') tokenExchanges.inc({ result: 'issued', error: '' });
        else if (event.event === 'approval_requested')
          tokenExchanges.inc({ result: 'pending', error: 'approval_required' });
        else if (event.event === 'token_refused') tokenExchanges.inc({ result: 'refused', error: event.error });
        audit.write(event);
      },
      auditable: () => auditGate(audit),
      approvals,
      replica: `replica ${replicaId} on ${os.hostname()}`,
      log: logExchange,
    };
    // Expiries are audited when a sweep finds them (each by one replica), also when nobody asks about the request again.
    // Only while the policy has a rule needing approval: a deployment without approvals never opens the connection.
    if (approvals !== undefined) {
      approvalSweep = setInterval(() => {
        if (!store.current.policy.issuance?.rules.some((r) => r.approval === 'required')) return;
        sweepApprovals(exchangeDeps).catch((err: unknown) =>
          logExchange('warn', 'approval expiry sweep failed', { error: errorMessage(err) }),
        );
      }, 15_000);
      approvalSweep.unref();
    }
    exchangeListener = await startExchangeListener(exchangeDeps, {
      host: exchangeConfig.listen.host,
      port: exchangeConfig.listen.port,
      tlsContext: tlsNow === undefined ? undefined : () => tlsNow.context,
      maxBodyBytes: exchangeConfig.maxBodyBytes,
      requestsPerMinute: exchangeConfig.requestsPerMinute,
      requestTimeoutMs: exchangeConfig.requestTimeout,
      log: (level, msg, fields) => exchangeLog[level](fields ?? {}, msg),
      jwks: () => signer.jwks(),
      onRateLimited: () => metrics.rateLimited.inc({ limit: 'token_requests' }),
    });
  }

  // SIGHUP: the policy and every revocation source reload side by side, so a revocation never waits for the policy's
  // catalog read (up to upstream.connectTimeout when the database is slow). Each coalesces its own bursts (one reload
  // in flight plus at most one pending): a second coalescer around both would make a revocation wait for the previous
  // signal's policy reload.
  const reloadAll = async (): Promise<void> => {
    const jobs: Promise<unknown>[] = [store.reload('signal'), password.reload(), keys.reload()];
    if (tlsPair) jobs.push(tlsPair.reload());
    if (exchangeTls) jobs.push(exchangeTls.reload());
    if (issuingKeys) jobs.push(issuingKeys.reload());
    for (const src of sources)
      if ('reload' in src && typeof src.reload === 'function') jobs.push((src.reload as () => Promise<unknown>)());
    for (const r of await Promise.allSettled(jobs))
      if (r.status === 'rejected') log.error({ err: r.reason }, 'reload failed');
  };

  // Idle sessions check their upstream connection on a schedule (docs/deploy.md, "A silently dead upstream").
  const checkInterval = config.upstream.checkInterval ?? 30_000;
  const checkTimer =
    checkInterval > 0
      ? setInterval(() => {
          for (const s of server.sessions) s.checkUpstream(config.upstream.checkTimeout ?? 10_000);
        }, checkInterval).unref()
      : undefined;

  const addr = await server.listen(config.listen.host, config.listen.port);
  log.info(
    {
      host: addr.host,
      port: addr.port,
      metricsPort: metricsServer?.port,
      exchangePort: exchangeListener?.port,
      policyVersion: store.version,
    },
    'pgwarden listening',
  );
  return {
    host: addr.host,
    port: addr.port,
    server,
    store,
    verifier,
    log,
    metrics,
    audit,
    revocations,
    metricsPort: metricsServer?.port,
    exchangePort: exchangeListener?.port,
    issuingKeys,
    async reload() {
      await reloadAll();
    },
    async close(drainMs = 0) {
      // Not ready from the first moment of shutdown; the admin listener itself closes once sessions have drained.
      metricsServer?.markDraining();
      clearInterval(checkTimer);
      await exchangeListener?.close();
      clearInterval(approvalSweep);
      await approvals?.close();
      await server.close(drainMs);
      await metricsServer?.close();
      store.close();
      analysisPool.close();
      await policyGate.close();
      verifier.close();
      idp?.close();
      issuingKeys?.close();
      password.close();
      tlsPair?.close();
      exchangeTls?.close();
      await revocations.close();
      await jtiConsumer?.close();
      await audit.close();
    },
  };
}

/**
 * Upstream logins with the password in force; one refused with 28P01 (the password was rotated and pgwarden's file
 * and the server disagree for a moment) is retried once with the other password UpstreamPassword offers.
 */
function retryingPassword(inner: UpstreamConnector, password: UpstreamPassword, log: Logger): UpstreamConnector {
  return {
    cancel: (cfg, processId, secretKey) => inner.cancel(cfg, processId, secretKey),
    connect: (cfg, params) =>
      password.withRetry(
        (pw) => inner.connect({ ...cfg, password: pw }, params),
        (err) => err instanceof ProxyError && /\(SQLSTATE 28P01\)/.test(err.message),
        () =>
          log.info(
            { secret: 'upstream_password' },
            'upstream refused the password in use (28P01): retrying once with the other one (rotation in progress)',
          ),
      ),
  };
}

/** Calls every observer; one failing observer never breaks a session or the others. */
function combineEvents(...all: (SessionEvents | undefined)[]): SessionEvents {
  const list = all.filter((e): e is SessionEvents => e !== undefined);
  const call = <K extends keyof SessionEvents>(k: K, args: Parameters<NonNullable<SessionEvents[K]>>) => {
    for (const e of list) {
      try {
        (e[k] as ((...a: unknown[]) => void) | undefined)?.(...args);
      } catch {
        // Observers must not throw; ignore rather than disturb the session.
      }
    }
  };
  return {
    loginSucceeded: (...a) => call('loginSucceeded', a),
    loginFailed: (...a) => call('loginFailed', a),
    statementDecided: (...a) => call('statementDecided', a),
    statementFinished: (...a) => call('statementFinished', a),
    traffic: (...a) => call('traffic', a),
    upstreamConnected: (...a) => call('upstreamConnected', a),
    budgetExceeded: (...a) => call('budgetExceeded', a),
    sessionEnded: (...a) => call('sessionEnded', a),
  };
}
