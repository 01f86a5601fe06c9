// Prometheus metrics (prom-client) and the /metrics, /healthz, /readyz listener; labels stay low-cardinality.
import http from 'node:http';
import client from 'prom-client';
import type { Audit } from './audit/sink.ts';
import type { RevocationHealth, RevocationReadInfo } from './revocation/source.ts';
import type { DecidePoolStats } from './session/decide-pool.ts';
import type { SessionEvents } from './session/session.ts';
import { errorMessage } from '../lib/error-message.ts';

export interface Metrics {
  registry: client.Registry;
  events: SessionEvents;
  activeSessions: client.Gauge;
  logins: client.Counter<'result' | 'reason'>;
  statements: DeferredCounter<'role' | 'decision' | 'kind' | 'reason'>;
  decisionSeconds: HotHistogram;
  sessionsEnded: client.Counter<'reason'>;
  policyReloads: client.Counter<'result'>;
  policyVersion: client.Gauge;
  cacheLookups: DeferredCounter<'result'>;
  /** Counts one decision-cache lookup (added to cacheLookups at the next scrape). */
  cacheLookup(hit: boolean): void;
  statementSeconds: HotHistogram;
  rowsForwarded: DeferredCounter<never>;
  rowCap: client.Counter<'action'>;
  upstreamConnectSeconds: client.Histogram;
  bytes: DeferredCounter<'direction'>;
  /** PostgreSQL's own analysis of statements (decision-cache misses), by outcome, and how long each took. */
  analyses: client.Counter<'outcome'>;
  analysisSeconds: client.Histogram;
  /** pgwarden's analysis allowed, the server's denied: each one is a bug in one of the two. */
  analysisDisagreements: client.Counter<'reason'>;
  /** Statements refused because a role budget was used up, by role and budget kind (statements, rows, bytes, concurrency). */
  budgetExceeded: client.Counter<'role' | 'kind'>;
  /** Connections refused (login_failures) and CancelRequests dropped (cancel_requests) by a per-address rate limit. */
  rateLimited: client.Counter<'limit'>;
}

/** Statement kinds become label values only from this bounded set; anything else is 'other'. */
const KNOWN_KINDS = new Set([
  'SelectStmt',
  'InsertStmt',
  'UpdateStmt',
  'DeleteStmt',
  'MergeStmt',
  'ExplainStmt',
  'VariableSetStmt',
  'VariableShowStmt',
  'TransactionStmt',
  'CopyStmt',
  'PrepareStmt',
  'ExecuteStmt',
  'DeallocateStmt',
  'DeclareCursorStmt',
  'FetchStmt',
  'ClosePortalStmt',
  'DiscardStmt',
  'CreateStmt',
  'DropStmt',
  'DoStmt',
  'CallStmt',
]);

export function createMetrics(opts: { collectDefault?: boolean } = {}): Metrics {
  const registry = new client.Registry();
  if (opts.collectDefault ?? true) client.collectDefaultMetrics({ register: registry, prefix: 'pgwarden_' }); // prom-client adds process_ itself
  const activeSessions = new client.Gauge({
    name: 'pgwarden_sessions_active',
    help: 'Client sessions logged in now',
    registers: [registry],
  });
  const logins = new client.Counter({
    name: 'pgwarden_logins_total',
    help: 'Login attempts by result and reason',
    labelNames: ['result', 'reason'] as const,
    registers: [registry],
  });
  const statements = new DeferredCounter(
    registry,
    'pgwarden_statements_total',
    'Statements decided, by role, decision, statement kind and denial reason',
    ['role', 'decision', 'kind', 'reason'] as const,
  );
  const decisionSeconds = new HotHistogram(
    registry,
    'pgwarden_policy_decision_seconds',
    'Time to decide one message (parse + policy, or a cache hit)',
    [1e-6, 2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2],
  );
  const sessionsEnded = new client.Counter({
    name: 'pgwarden_sessions_ended_total',
    help: 'Sessions ended, by reason',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const policyReloads = new client.Counter({
    name: 'pgwarden_policy_reloads_total',
    help: 'Policy reloads by result',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const policyVersion = new client.Gauge({
    name: 'pgwarden_policy_version',
    help: 'Version of the policy in force',
    registers: [registry],
  });
  const analyses = new client.Counter({
    name: 'pgwarden_analysis_total',
    help: 'Statements analysed by the upstream server (decision-cache misses), by outcome: allow, deny, error (the server rejected the statement or its tree could not be read), unavailable',
    labelNames: ['outcome'] as const,
    registers: [registry],
  });
  const analysisSeconds = new client.Histogram({
    name: 'pgwarden_analysis_seconds',
    help: "Time to obtain and judge the server's analysis of one statement",
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2],
    registers: [registry],
  });
  const analysisDisagreements = new client.Counter({
    name: 'pgwarden_analysis_disagreements_total',
    help: "Statements pgwarden's own analysis allowed and the server's analysis denied, by reason (each is a bug in one of the two)",
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const rateLimited = new client.Counter({
    name: 'pgwarden_rate_limited_total',
    help: 'Per-address rate limits: connections refused because their address had too many failed logins (login_failures), CancelRequests dropped (cancel_requests), token requests refused with 429 (token_requests)',
    labelNames: ['limit'] as const,
    registers: [registry],
  });
  const budgetExceeded = new client.Counter({
    name: 'pgwarden_budget_exceeded_total',
    help: 'Statements refused because a role budget of their subject or agent was used up, by role and kind (statements, rows, bytes, concurrency)',
    labelNames: ['role', 'kind'] as const,
    registers: [registry],
  });
  const cacheLookups = new DeferredCounter(
    registry,
    'pgwarden_decision_cache_total',
    'Decision cache lookups by result',
    ['result'] as const,
  );
  const cacheHits = cacheLookups.handle({ result: 'hit' });
  const cacheMisses = cacheLookups.handle({ result: 'miss' });

  const statementSeconds = new HotHistogram(
    registry,
    'pgwarden_statement_duration_seconds',
    'Time from forwarding a statement to its completion, as the proxy observes it',
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  );
  const rowsForwarded = new DeferredCounter(
    registry,
    'pgwarden_rows_forwarded_total',
    'Result rows (DataRow and COPY rows) forwarded to clients',
    [] as const,
  );
  const rowsAll = rowsForwarded.handle({});
  const rowCap = new client.Counter({
    name: 'pgwarden_row_cap_total',
    help: 'Statements cut by a role row cap, by action (truncate, error)',
    labelNames: ['action'] as const,
    registers: [registry],
  });
  const upstreamConnectSeconds = new client.Histogram({
    name: 'pgwarden_upstream_connect_seconds',
    help: 'Time to connect and log in to the upstream database for a new session',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const bytes = new DeferredCounter(
    registry,
    'pgwarden_client_bytes_total',
    'Bytes read from (in) and written to (out) clients',
    ['direction'] as const,
  );
  const bytesIn = bytes.handle({ direction: 'in' });
  const bytesOut = bytes.handle({ direction: 'out' });

  // Roles are bounded by the policy file; still, cap label values defensively.
  const roleLabel = (r: string | undefined) => (r && r.length <= 63 ? r : 'unknown');
  const countStatement = (role: string, decision: string, kind: string, reason: string) => {
    statements.handle({ role, decision, kind, reason }).n++;
  };
  const statementOk = statementSeconds.series({ outcome: 'ok' });
  const statementError = statementSeconds.series({ outcome: 'error' });
  const decisionAll = decisionSeconds.series({});
  // Sessions counted in pgwarden_sessions_active: a session that ends is taken off only if it was counted (a login
  // that failed after the token was accepted, e.g. at the upstream, ends with an identity but was never counted).
  const counted = new WeakSet<object>();
  const events: SessionEvents = {
    loginSucceeded(s) {
      logins.inc({ result: 'ok', reason: 'ok' });
      counted.add(s);
      activeSessions.inc();
    },
    loginFailed(_s, reason) {
      logins.inc({ result: 'refused', reason });
    },
    statementDecided(s, info) {
      const d = info.decision;
      const role = roleLabel(s.role?.name);
      const outcome = d.allow ? (d.shadowDenied ? 'shadow_deny' : 'allow') : 'deny';
      const reason = d.allow ? '' : d.reason;
      if (d.statements.length === 0) countStatement(role, outcome, 'none', reason);
      for (const st of d.statements)
        countStatement(role, outcome, KNOWN_KINDS.has(st.kind) ? st.kind : 'other', reason);
      decisionAll.observe(info.micros / 1e6);
    },
    statementFinished(_s, o) {
      (o.sqlstate === undefined ? statementOk : statementError).observe(o.durationMs / 1000);
      rowsAll.n += o.rows;
      if (o.truncated) rowCap.inc({ action: 'truncate' });
      if (o.rowCapError) rowCap.inc({ action: 'error' });
    },
    traffic(_s, inBytes, outBytes) {
      bytesIn.n += inBytes;
      bytesOut.n += outBytes;
    },
    upstreamConnected(_s, ms) {
      upstreamConnectSeconds.observe(ms / 1000);
    },
    budgetExceeded(s, info) {
      budgetExceeded.inc({ role: roleLabel(s.role?.name), kind: info.kind });
    },
    sessionEnded(s, reason) {
      sessionsEnded.inc({ reason });
      if (counted.delete(s)) activeSessions.dec();
    },
  };
  return {
    registry,
    events,
    activeSessions,
    logins,
    statements,
    decisionSeconds,
    sessionsEnded,
    policyReloads,
    policyVersion,
    cacheLookups,
    analyses,
    analysisSeconds,
    analysisDisagreements,
    rateLimited,
    budgetExceeded,
    cacheLookup(hit) {
      (hit ? cacheHits : cacheMisses).n++;
    },
    statementSeconds,
    rowsForwarded,
    rowCap,
    upstreamConnectSeconds,
    bytes,
  };
}

/**
 * The audit trail's state, read at each scrape: healthy (1/0), state (ok, failed, stalled: one series is 1), events
 * dropped since start (memory full while the destination failed or stalled), and bytes waiting in memory.
 */
/**
 * A counter that follows running totals kept elsewhere (the audit trail's drops, the decide pool's outcomes, the
 * revocation listeners' notifications): at each scrape it is moved up by what the totals grew since the last one, so
 * it keeps the counter contract (`_total`, only grows) without the owner knowing about prom-client. A total that went
 * down (its owner was replaced) is followed from its new value.
 */
function totalsCounter(
  opts: { name: string; help: string; labelNames?: readonly string[]; registers: client.Registry[] },
  totals: () => Iterable<readonly [Record<string, string>, number]>,
): void {
  const seen = new Map<string, number>();
  new client.Counter({
    name: opts.name,
    help: opts.help,
    labelNames: opts.labelNames ?? [],
    registers: opts.registers,
    collect() {
      for (const [labels, now] of totals()) {
        const key = JSON.stringify(labels);
        const before = seen.get(key) ?? 0;
        if (now > before) this.inc(labels, now - before);
        seen.set(key, now);
      }
    },
  });
}

export function registerAuditMetrics(
  metrics: Pick<Metrics, 'registry'>,
  audit: Pick<Audit, 'healthy' | 'state' | 'dropped' | 'bufferedBytes'>,
): void {
  const registers = [metrics.registry];
  new client.Gauge({
    name: 'pgwarden_audit_healthy',
    help: 'Whether the audit trail is being written (0 while its destination fails or stalls)',
    registers,
    collect() {
      this.set(audit.healthy ? 1 : 0);
    },
  });
  new client.Gauge({
    name: 'pgwarden_audit_state',
    help: 'State of the audit trail: ok, failed (the destination reported an error) or stalled (it stopped draining)',
    labelNames: ['state'] as const,
    registers,
    collect() {
      for (const state of ['ok', 'failed', 'stalled'] as const) this.set({ state }, audit.state === state ? 1 : 0);
    },
  });
  totalsCounter(
    {
      name: 'pgwarden_audit_dropped_events_total',
      help: 'Audit events lost because memory was full while the destination failed or stalled (each gap is also an audit_gap event)',
      registers,
    },
    () => [[{}, audit.dropped]],
  );
  new client.Gauge({
    name: 'pgwarden_audit_buffered_bytes',
    help: 'Audit bytes in memory: handed to the destination and not yet written, plus held while it fails',
    registers,
    collect() {
      this.set(audit.bufferedBytes);
    },
  });
}

/**
 * Bytes client sessions hold in pgwarden's buffers (framers, socket buffers), read at each scrape: in all, and the
 * most one session holds. Backpressure keeps each session's share to a few hundred KiB (docs/limits.md, "Memory").
 */
export function registerSessionBufferMetrics(
  metrics: Pick<Metrics, 'registry'>,
  sessions: () => Iterable<{ readonly bufferedBytes: number }>,
): void {
  new client.Gauge({
    name: 'pgwarden_session_buffered_bytes',
    help: "Bytes client sessions hold in pgwarden's buffers now, by stat: sum over sessions, max of one session",
    labelNames: ['stat'] as const,
    registers: [metrics.registry],
    collect() {
      let sum = 0;
      let max = 0;
      for (const s of sessions()) {
        const n = s.bufferedBytes;
        sum += n;
        if (n > max) max = n;
      }
      this.set({ stat: 'sum' }, sum);
      this.set({ stat: 'max' }, max);
    },
  });
}

/**
 * The decide pool (statements over 4 KiB parsed and decided off the event loop), read at each scrape: what it decided,
 * what it refused and why, and how busy it is. Undefined until the first long statement starts the pool.
 */
export function registerDecidePoolMetrics(
  metrics: Pick<Metrics, 'registry'>,
  snapshot: () => DecidePoolStats | undefined,
): void {
  new client.Gauge({
    name: 'pgwarden_decide_pool_jobs',
    help: 'Long statements on the decide pool now, by state: running (on a worker) or queued (waiting for one)',
    labelNames: ['state'] as const,
    registers: [metrics.registry],
    collect() {
      const s = snapshot();
      this.set({ state: 'running' }, s?.running ?? 0);
      this.set({ state: 'queued' }, s?.queued ?? 0);
    },
  });
  new client.Gauge({
    name: 'pgwarden_decide_pool_workers',
    help: 'Decide worker threads alive now',
    registers: [metrics.registry],
    collect() {
      this.set(snapshot()?.workers ?? 0);
    },
  });
  // Kept by the pool as running totals; exported as counters that follow them.
  totalsCounter(
    {
      name: 'pgwarden_decide_pool_jobs_total',
      help: 'Long statements the decide pool answered, by outcome: decided, refused_busy (53000: queue full or waited too long), timed_out and worker_failed (54000)',
      labelNames: ['outcome'],
      registers: [metrics.registry],
    },
    () => {
      const s = snapshot();
      if (s === undefined) return [];
      return [
        [{ outcome: 'decided' }, s.decided],
        [{ outcome: 'refused_busy' }, s.refusedBusy],
        [{ outcome: 'timed_out' }, s.timedOut],
        [{ outcome: 'worker_failed' }, s.workerFailures],
      ];
    },
  );
  totalsCounter(
    {
      name: 'pgwarden_decide_pool_workers_started_total',
      help: 'Decide worker threads started (on demand, and to replace one recycled after a long text, timed out or failed)',
      registers: [metrics.registry],
    },
    () => {
      const s = snapshot();
      return s === undefined ? [] : [[{}, s.workersStarted]];
    },
  );
}

/** pgwarden's upstream connections against limits.maxUpstreamConnections, read at each scrape. */
export function registerUpstreamCapMetrics(
  metrics: Pick<Metrics, 'registry'>,
  cap: { readonly max: number; readonly sessions: number; readonly own: number },
): void {
  new client.Gauge({
    name: 'pgwarden_upstream_connections',
    help: 'Upstream connections pgwarden holds, by kind: session (client sessions, from login) and own (analysis, revocation listener, checks)',
    labelNames: ['kind'] as const,
    registers: [metrics.registry],
    collect() {
      this.set({ kind: 'session' }, cap.sessions);
      this.set({ kind: 'own' }, cap.own);
    },
  });
  new client.Gauge({
    name: 'pgwarden_upstream_connections_max',
    help: "limits.maxUpstreamConnections in force (derived at startup from the server's max_connections, or configured lower)",
    registers: [metrics.registry],
    collect() {
      this.set(cap.max);
    },
  });
}

/**
 * The revocation sources' state, read at each scrape (listener up, entries, last successful read), and their reads,
 * counted and timed as they happen through the returned callback (pass it to the sources as `onRead`).
 */
export function registerRevocationMetrics(
  metrics: Pick<Metrics, 'registry'>,
  health: () => readonly RevocationHealth[],
): (info: RevocationReadInfo) => void {
  const registers = [metrics.registry];
  new client.Gauge({
    name: 'pgwarden_revocation_listener_up',
    help: 'Whether a revocation source is current: the table listener is connected (1) or not (0); for a file, the last read succeeded',
    labelNames: ['source'] as const,
    registers,
    collect() {
      this.reset();
      for (const h of health()) this.set({ source: h.source }, h.up ? 1 : 0);
    },
  });
  new client.Gauge({
    name: 'pgwarden_revocation_entries',
    help: 'Identifiers (jti, sub, agent) revoked now, by source',
    labelNames: ['source'] as const,
    registers,
    collect() {
      this.reset();
      for (const h of health()) this.set({ source: h.source }, h.entries);
    },
  });
  new client.Gauge({
    name: 'pgwarden_revocation_last_read_timestamp_seconds',
    help: 'When a revocation source was last read successfully (seconds since the epoch)',
    labelNames: ['source'] as const,
    registers,
    collect() {
      this.reset();
      for (const h of health()) if (h.lastReadAt !== undefined) this.set({ source: h.source }, h.lastReadAt / 1000);
    },
  });
  totalsCounter(
    {
      name: 'pgwarden_revocation_notifications_total',
      help: 'NOTIFYs received on the revocation channel (a burst of them is coalesced into few reads: compare pgwarden_revocation_reads_total)',
      registers,
    },
    () => {
      let now = 0;
      for (const h of health()) now += h.notifications ?? 0;
      return [[{}, now]];
    },
  );
  const reads = new client.Counter({
    name: 'pgwarden_revocation_reads_total',
    help: 'Reads of a revocation source by kind (full, incremental) and result (ok, error)',
    labelNames: ['source', 'kind', 'result'] as const,
    registers,
  });
  const readSeconds = new client.Histogram({
    name: 'pgwarden_revocation_read_duration_seconds',
    help: 'Time to read a revocation source, by kind: incremental (changes only) or full',
    labelNames: ['source', 'kind'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  });
  return (info) => {
    reads.inc({ source: info.source, kind: info.kind, result: info.ok ? 'ok' : 'error' });
    readSeconds.observe({ source: info.source, kind: info.kind }, info.ms / 1000);
  };
}

/** A readiness answer with a reason: `ok: true` with a detail is ready but degraded (e.g. audit events being dropped). */
export interface Readiness {
  ok: boolean;
  detail?: string;
}

export interface AdminListenerOptions {
  /**
   * Checked for every /readyz request; must be cheap and local (the audit trail's state, draining). A false (or
   * not-ok) answer wins over the scheduled check.
   */
  live?: () => boolean | Readiness;
  /** How often the scheduled (upstream) check runs. Default 5 s. */
  checkIntervalMs?: number;
  /** Longest a scheduled check may take before it counts as failed. Default 3 s. */
  checkTimeoutMs?: number;
  /** Connections the admin listener holds at once; more are dropped at accept. Default 32. */
  maxConnections?: number;
  /** Time allowed to receive a request's headers, and the whole request. Default 5 s. */
  requestTimeoutMs?: number;
}

export interface AdminListener {
  port: number;
  /** /readyz answers 503 "draining" from now on (shutdown has begun); /healthz and /metrics go on. */
  markDraining(): void;
  /** Stops the schedule, closes the listener and every connection it holds (keep-alive ones too). */
  close(): Promise<void>;
}

/**
 * Serves /metrics, /healthz (alive) and /readyz on the admin listener. `ready()` (is a policy loaded, does the
 * upstream answer) runs on a schedule, never per request: /readyz answers from its last result, so probes and
 * scrapes cost no upstream logins however often they come. A result older than three intervals (a check that
 * hangs) is not ready. The listener has its own connection cap and timeouts, so a client that opens many
 * connections or sends headers slowly cannot hold it (or the process's file descriptors).
 */
export async function startMetricsServer(
  metrics: Metrics,
  host: string,
  port: number,
  ready: () => Promise<boolean | Readiness>,
  opts: AdminListenerOptions = {},
): Promise<AdminListener> {
  const intervalMs = opts.checkIntervalMs ?? 5_000;
  const timeoutMs = opts.checkTimeoutMs ?? 3_000;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 5_000;
  let last: { ok: boolean; detail?: string; at: number } | undefined;
  let draining = false;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;

  const asReadiness = (r: boolean | Readiness): Readiness => (typeof r === 'boolean' ? { ok: r } : r);
  const check = async (): Promise<void> => {
    let guard: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<Readiness>((resolve) => {
        guard = setTimeout(
          () => resolve({ ok: false, detail: `readiness check took longer than ${timeoutMs} ms` }),
          timeoutMs,
        );
      });
      const r = await Promise.race([ready().then(asReadiness), timeout]);
      last = { ...r, at: Date.now() };
    } catch (err) {
      last = { ok: false, detail: `readiness check failed: ${errorMessage(err)}`, at: Date.now() };
    } finally {
      clearTimeout(guard);
    }
    if (!closed) {
      timer = setTimeout(() => void check(), intervalMs);
      timer.unref();
    }
  };
  const answer = (): Readiness => {
    if (draining) return { ok: false, detail: 'draining' };
    const live = opts.live ? asReadiness(opts.live()) : { ok: true };
    if (!live.ok) return live;
    if (last === undefined) return { ok: false, detail: 'first readiness check pending' };
    if (Date.now() - last.at > 3 * intervalMs + timeoutMs) return { ok: false, detail: 'readiness check is stale' };
    if (!last.ok) return last;
    const detail = [last.detail, live.detail].filter(Boolean).join('; ');
    return detail ? { ok: true, detail } : { ok: true };
  };

  const server = http.createServer(
    {
      requestTimeout: requestTimeoutMs,
      headersTimeout: requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1_000, requestTimeoutMs),
    },
    (req, res) => {
      const url = req.url ?? '/';
      if (url === '/metrics') {
        metrics.registry
          .metrics()
          .then((text) => {
            res.writeHead(200, { 'content-type': metrics.registry.contentType });
            res.end(text);
          })
          .catch(() => {
            res.writeHead(500);
            res.end();
          });
      } else if (url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok\n');
      } else if (url === '/readyz') {
        const { ok, detail } = answer();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
        res.end(`${ok ? 'ready' : 'not ready'}${detail ? `: ${detail}` : ''}\n`);
      } else {
        res.writeHead(404);
        res.end();
      }
    },
  );
  server.maxConnections = opts.maxConnections ?? 32;
  server.keepAliveTimeout = requestTimeoutMs;
  // An idle connection (no request in flight) is closed after this long.
  server.timeout = 2 * requestTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  // The first check before the first probe can ask; bounded by its timeout.
  await check();
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : port,
    markDraining() {
      draining = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        closed = true;
        draining = true;
        clearTimeout(timer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A prom-client Counter for the per-statement path. prom-client's inc() hashes the label set on every call, which
 * cost more than the rest of a cached decision; here a label set's running count is a handle whose `n` the caller
 * adds to, and the counts are handed to prom-client's Counter when it collects, on every scrape, so a scrape sees
 * exactly what happened.
 */
export class DeferredCounter<L extends string> {
  readonly counter: client.Counter<L>;
  private readonly handles = new Map<string, { labels: Partial<Record<L, string>>; n: number }>();

  constructor(
    registry: client.Registry,
    name: string,
    help: string,
    private readonly labelNames: readonly L[],
  ) {
    const handles = this.handles;
    this.counter = new client.Counter<L>({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        for (const h of handles.values()) {
          if (h.n > 0) this.inc(h.labels, h.n);
          h.n = 0;
        }
      },
    });
  }

  /** The running count for these labels (created on first use); add to its `n`. */
  handle(labels: Record<L, string>): { n: number } {
    let key = '';
    for (const l of this.labelNames) key += `${labels[l]}\u0000`;
    let h = this.handles.get(key);
    if (h === undefined) {
      h = { labels: { ...labels }, n: 0 };
      this.handles.set(key, h);
    }
    return h;
  }
}

/** One labelled series of a HotHistogram: cumulative counts are computed only when collected. */
interface HotSeries {
  readonly labels: Readonly<Record<string, string>>;
  /** Observations per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
  observe(value: number): void;
}

/**
 * A Prometheus histogram for the per-statement path. prom-client's Histogram hashes the label set and builds a
 * closure on every observe(), about a microsecond each, twice per statement; here a series is bound once and an
 * observation is a bucket search and three additions. It registers with prom-client's registry as a metric object,
 * so it is scraped and formatted exactly like a prom-client Histogram (_bucket with le, _sum, _count).
 */
export class HotHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly all = new Map<string, HotSeries>();

  constructor(
    registry: client.Registry,
    readonly name: string,
    readonly help: string,
    private readonly bounds: readonly number[],
  ) {
    registry.registerMetric(this as unknown as client.Metric);
  }

  /** The series for these labels, created on first use; keep it and call observe() on it. */
  series(labels: Record<string, string>): HotSeries {
    const key = JSON.stringify(labels);
    let s = this.all.get(key);
    if (s === undefined) {
      const bounds = this.bounds;
      const counts = new Float64Array(bounds.length + 1);
      const series: HotSeries = {
        labels: { ...labels },
        counts,
        sum: 0,
        count: 0,
        observe(value: number) {
          let i = 0;
          while (i < bounds.length && value > (bounds[i] as number)) i++;
          counts[i] = (counts[i] ?? 0) + 1;
          series.sum += value;
          series.count++;
        },
      };
      s = series;
      this.all.set(key, s);
    }
    return s;
  }

  /** What prom-client's registry reads on a scrape. */
  async get(): Promise<client.MetricObjectWithValues<client.MetricValueWithName<string>>> {
    const values: client.MetricValueWithName<string>[] = [];
    for (const s of this.all.values()) {
      let acc = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        acc += s.counts[i] ?? 0;
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { ...s.labels, le: i < this.bounds.length ? (this.bounds[i] as number) : '+Inf' },
          value: acc,
        });
      }
      values.push({ metricName: `${this.name}_sum`, labels: { ...s.labels }, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: { ...s.labels }, value: s.count });
    }
    return {
      name: this.name,
      help: this.help,
      type: 'histogram' as unknown as client.MetricType,
      values,
      aggregator: 'sum',
      collect: () => {},
    };
  }

  reset(): void {
    for (const s of this.all.values()) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}
