// Prometheus metrics (prom-client) and the /metrics, /healthz, /readyz listener; labels stay low-cardinality.
import http from 'node:http';
import client from 'prom-client';
import type { SessionEvents } from './session/session.ts';

export interface Metrics {
  registry: client.Registry;
  events: SessionEvents;
  activeSessions: client.Gauge;
  logins: client.Counter<'result' | 'reason'>;
  statements: client.Counter<'role' | 'decision' | 'kind' | 'reason'>;
  decisionSeconds: client.Histogram;
  sessionsEnded: client.Counter<'reason'>;
  policyReloads: client.Counter<'result'>;
  policyVersion: client.Gauge;
  cacheLookups: client.Counter<'result'>;
  statementSeconds: client.Histogram<'outcome'>;
  rowsForwarded: client.Counter;
  rowCap: client.Counter<'action'>;
  upstreamConnectSeconds: client.Histogram;
  bytes: client.Counter<'direction'>;
}

/** Statement kinds become label values only from this bounded set; anything else is 'other'. */
const KNOWN_KINDS = new Set([
  'SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt', 'ExplainStmt', 'VariableSetStmt', 'VariableShowStmt',
  'TransactionStmt', 'CopyStmt', 'PrepareStmt', 'ExecuteStmt', 'DeallocateStmt', 'DeclareCursorStmt', 'FetchStmt',
  'ClosePortalStmt', 'DiscardStmt', 'CreateStmt', 'DropStmt', 'DoStmt', 'CallStmt',
]);

export function createMetrics(opts: { collectDefault?: boolean } = {}): Metrics {
  const registry = new client.Registry();
  if (opts.collectDefault ?? true) client.collectDefaultMetrics({ register: registry, prefix: 'pgwarden_' }); // prom-client adds process_ itself
  const activeSessions = new client.Gauge({ name: 'pgwarden_sessions_active', help: 'Client sessions logged in now', registers: [registry] });
  const logins = new client.Counter({ name: 'pgwarden_logins_total', help: 'Login attempts by result and reason', labelNames: ['result', 'reason'] as const, registers: [registry] });
  const statements = new client.Counter({
    name: 'pgwarden_statements_total',
    help: 'Statements decided, by role, decision, statement kind and denial reason',
    labelNames: ['role', 'decision', 'kind', 'reason'] as const,
    registers: [registry],
  });
  const decisionSeconds = new client.Histogram({
    name: 'pgwarden_policy_decision_seconds',
    help: 'Time to decide one message (parse + policy, or a cache hit)',
    buckets: [1e-6, 2e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2],
    registers: [registry],
  });
  const sessionsEnded = new client.Counter({ name: 'pgwarden_sessions_ended_total', help: 'Sessions ended, by reason', labelNames: ['reason'] as const, registers: [registry] });
  const policyReloads = new client.Counter({ name: 'pgwarden_policy_reloads_total', help: 'Policy reloads by result', labelNames: ['result'] as const, registers: [registry] });
  const policyVersion = new client.Gauge({ name: 'pgwarden_policy_version', help: 'Version of the policy in force', registers: [registry] });
  const cacheLookups = new client.Counter({ name: 'pgwarden_decision_cache_total', help: 'Decision cache lookups by result', labelNames: ['result'] as const, registers: [registry] });

  const statementSeconds = new client.Histogram({
    name: 'pgwarden_statement_duration_seconds',
    help: 'Time from forwarding a statement to its completion, as the proxy observes it',
    labelNames: ['outcome'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const rowsForwarded = new client.Counter({ name: 'pgwarden_rows_forwarded_total', help: 'Result rows (DataRow and COPY rows) forwarded to clients', registers: [registry] });
  const rowCap = new client.Counter({ name: 'pgwarden_row_cap_total', help: 'Statements cut by a role row cap, by action (truncate, error)', labelNames: ['action'] as const, registers: [registry] });
  const upstreamConnectSeconds = new client.Histogram({
    name: 'pgwarden_upstream_connect_seconds',
    help: 'Time to connect and log in to the upstream database for a new session',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  const bytes = new client.Counter({ name: 'pgwarden_client_bytes_total', help: 'Bytes read from (in) and written to (out) clients', labelNames: ['direction'] as const, registers: [registry] });

  // Roles are bounded by the policy file; still, cap label values defensively.
  const roleLabel = (r: string | undefined) => (r && r.length <= 63 ? r : 'unknown');
  // Label children cached by a composed key: prom-client hashes a label object on every inc() otherwise.
  const statementChildren = new Map<string, client.Counter.Internal>();
  const statementChild = (role: string, decision: string, kind: string, reason: string) => {
    const key = `${role}\u0000${decision}\u0000${kind}\u0000${reason}`;
    let child = statementChildren.get(key);
    if (child === undefined) {
      child = statements.labels({ role, decision, kind, reason });
      statementChildren.set(key, child);
    }
    return child;
  };
  const statementOk = statementSeconds.labels({ outcome: 'ok' });
  const statementError = statementSeconds.labels({ outcome: 'error' });
  const events: SessionEvents = {
    loginSucceeded() {
      logins.inc({ result: 'ok', reason: 'ok' });
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
      if (d.statements.length === 0) statementChild(role, outcome, 'none', reason).inc();
      for (const st of d.statements) statementChild(role, outcome, KNOWN_KINDS.has(st.kind) ? st.kind : 'other', reason).inc();
      decisionSeconds.observe(info.micros / 1e6);
    },
    statementFinished(_s, o) {
      (o.sqlstate === undefined ? statementOk : statementError).observe(o.durationMs / 1000);
      rowsForwarded.inc(o.rows);
      if (o.truncated) rowCap.inc({ action: 'truncate' });
      if (o.rowCapError) rowCap.inc({ action: 'error' });
    },
    traffic(_s, bytesIn, bytesOut) {
      if (bytesIn > 0) bytes.inc({ direction: 'in' }, bytesIn);
      if (bytesOut > 0) bytes.inc({ direction: 'out' }, bytesOut);
    },
    upstreamConnected(_s, ms) {
      upstreamConnectSeconds.observe(ms / 1000);
    },
    sessionEnded(s, reason) {
      sessionsEnded.inc({ reason });
      if (s.identity && s.role && reason !== 'auth_failed') activeSessions.dec();
    },
  };
  return {
    registry, events, activeSessions, logins, statements, decisionSeconds, sessionsEnded, policyReloads, policyVersion, cacheLookups,
    statementSeconds, rowsForwarded, rowCap, upstreamConnectSeconds, bytes,
  };
}

/** Serves /metrics, /healthz (alive) and /readyz (`ready()` says whether a policy is loaded and upstream answers). */
export async function startMetricsServer(
  metrics: Metrics,
  host: string,
  port: number,
  ready: () => Promise<boolean>,
): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
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
      ready()
        .then((ok) => {
          res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' });
          res.end(ok ? 'ready\n' : 'not ready\n');
        })
        .catch(() => {
          res.writeHead(503);
          res.end('not ready\n');
        });
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
