// The accept loop: one Session per client connection, connection limits, and a graceful close that ends every session.
import net from 'node:net';
import { ProxyError } from '../lib/errors.ts';
import { encodeProxyError } from './wire/backend.ts';
import { Session, type EndReason, type SessionDeps } from './session/session.ts';
import type { Identity } from './auth/jwt.ts';
import { AddressRateLimiter } from '../lib/rate-limit.ts';
import type { UpstreamCap } from './upstream/cap.ts';

/** Login failures that count against limits.loginFailuresPerMinute: the client's credentials were wrong, not pgwarden's limits or upstream. */
// startup_parameter: a valid token with a startup setting its role may not SET (a client's configuration, not a guess).
const NOT_CLIENT_FAILURES = new Set([
  'session_limit',
  'upstream',
  'key_unavailable',
  'startup_parameter',
  'single_use_unavailable',
  'single_use_unsupported',
]);

export interface ProxyServer {
  readonly sessions: ReadonlySet<Session>;
  listen(host: string, port: number): Promise<{ host: string; port: number }>;
  /** Stops accepting and refuses new statements; running statements get `drainMs` to finish, then every session ends with 57P01. */
  close(drainMs?: number): Promise<void>;
  /** Ends every live session matching `pred` with the given error (revocation, role removed). */
  endSessions(pred: (s: Session) => boolean, err: ProxyError, reason: EndReason): number;
}

export interface ServerOptions {
  /** Checked for every new connection; an error refuses it (e.g. the audit trail is down and must not be bypassed). */
  admit?: () => ProxyError | undefined;
  /** limits.maxUpstreamConnections: a login that would pass it is refused before its upstream connection is opened. */
  upstreamCap?: UpstreamCap;
  /** Told when a failed login used its address's last allowed failure (log, audit): its connections are refused for `retryAfterMs`. */
  onLoginFailuresExceeded?(s: Session, retryAfterMs: number): void;
  /** Told of each connection refused because its address is over limits.loginFailuresPerMinute. */
  onLoginRateLimited?(address: string): void;
}

export function createServer(deps: SessionDeps, opts: ServerOptions = {}): ProxyServer {
  const sessions = new Set<Session>();
  /** Every open client socket, so close() can reap any the client never closed. */
  const sockets = new Set<net.Socket>();
  let closing = false;
  const failuresPerMinute = deps.config.limits.loginFailuresPerMinute ?? 0;
  /** Failed logins per client address; while an address has none left, its connections are refused at accept, before any token is read. */
  const loginFailures = failuresPerMinute > 0 ? new AddressRateLimiter({ perMinute: failuresPerMinute }) : undefined;
  /** Sessions counted against the upstream cap (admitted at login), released when they end. */
  const holdingUpstream = new Set<Session>();
  /** Answers a connection we will not serve and makes sure it goes away even if the client never closes. */
  const refuse = (socket: net.Socket, err: ProxyError) => {
    socket.end(encodeProxyError(err));
    setTimeout(() => socket.destroy(), 1000).unref();
  };
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    if (closing) {
      refuse(socket, new ProxyError('ERR_SHUTDOWN', 'pgwarden is shutting down', { reason: 'session_ended' }));
      return;
    }
    const refusal = opts.admit?.();
    if (refusal) {
      refuse(socket, refusal);
      return;
    }
    // Not logged in yet: counted against limits.maxUnauthenticated (and per address), never against
    // limits.maxClientConnections, which only logged-in sessions fill (checked at login, in admitIdentity).
    const address = socket.remoteAddress ?? '';
    // Logins from the address still being verified may fail too: once it has failed at all, they are counted, so
    // many attempts in flight at once cannot all pass while the count of failures catches up.
    const wait = loginFailures?.retryAfter(address, unauthenticatedByAddress.get(address) ?? 0) ?? 0;
    if (wait > 0) {
      opts.onLoginRateLimited?.(address);
      refuse(socket, loginRateLimited(failuresPerMinute, wait));
      return;
    }
    const unauthRefusal = admitUnauthenticated(address);
    if (unauthRefusal) {
      refuse(socket, unauthRefusal);
      return;
    }
    const session = new Session(socket, {
      ...deps,
      siblingBackends: (self) => {
        const pids = new Set<number>();
        const me = self.identity;
        if (me === undefined) return pids;
        for (const s of sessions) {
          const pid = s.backendPid;
          const id = s.identity;
          // The same principal: issuer, subject, agent and tenant (a tenant's sessions are its own even for one sub).
          if (
            pid !== undefined &&
            id !== undefined &&
            id.iss === me.iss &&
            id.sub === me.sub &&
            id.agent === me.agent &&
            id.tenant === me.tenant
          )
            pids.add(pid);
        }
        return pids;
      },
      admitIdentity: (id, self) => {
        const err = admitIdentity(id, self);
        // Admitted: from here on the session is counted as logged in, not as unauthenticated.
        if (err === undefined) releaseUnauthenticated(self);
        return err;
      },
      events: {
        ...deps.events,
        loginFailed(s, reason, err) {
          if (loginFailures && !NOT_CLIENT_FAILURES.has(reason)) {
            loginFailures.take(s.remoteAddress);
            const after = loginFailures.retryAfter(s.remoteAddress);
            if (after > 0) opts.onLoginFailuresExceeded?.(s, after);
          }
          deps.events?.loginFailed?.(s, reason, err);
        },
        sessionEnded(s, reason) {
          sessions.delete(s);
          releaseUnauthenticated(s);
          if (holdingUpstream.delete(s)) opts.upstreamCap?.releaseSession();
          deps.events?.sessionEnded?.(s, reason);
        },
      },
    });
    sessions.add(session);
    unauthenticated.set(session, address);
    unauthenticatedByAddress.set(address, (unauthenticatedByAddress.get(address) ?? 0) + 1);
  });

  /** Sessions not logged in yet (startup, TLS, password, token check) → their client address. */
  const unauthenticated = new Map<Session, string>();
  const unauthenticatedByAddress = new Map<string, number>();

  const admitUnauthenticated = (address: string): ProxyError | undefined => {
    const max = deps.config.limits.maxUnauthenticated ?? 0;
    const perAddress = deps.config.limits.maxUnauthenticatedPerAddress ?? 0;
    if (max > 0 && unauthenticated.size >= max) {
      return new ProxyError(
        'ERR_TOO_MANY',
        `too many connections not yet logged in (limits.maxUnauthenticated = ${max})`,
        {
          hint: 'try again later; logged-in sessions are not affected by this limit',
          reason: 'limit_reached',
        },
      );
    }
    if (perAddress > 0 && (unauthenticatedByAddress.get(address) ?? 0) >= perAddress) {
      return new ProxyError(
        'ERR_TOO_MANY',
        `too many connections not yet logged in from this address (limits.maxUnauthenticatedPerAddress = ${perAddress})`,
        {
          reason: 'rate_limited',
          hint: 'complete or close pending logins before opening more connections',
        },
      );
    }
    return undefined;
  };

  const releaseUnauthenticated = (s: Session): void => {
    const address = unauthenticated.get(s);
    if (address === undefined) return;
    unauthenticated.delete(s);
    const n = (unauthenticatedByAddress.get(address) ?? 1) - 1;
    if (n <= 0) unauthenticatedByAddress.delete(address);
    else unauthenticatedByAddress.set(address, n);
  };

  /** limits.maxClientConnections, then the per-subject and per-agent limits; counted over sessions that are logged in. */
  const admitIdentity = (id: Identity, self: Session): ProxyError | undefined => {
    const maxSessions = deps.config.limits.maxClientConnections;
    const perSub = deps.config.limits.maxSessionsPerSub ?? 0;
    const perAgent = deps.config.limits.maxSessionsPerAgent ?? 0;
    let loggedIn = 0;
    let bySub = 0;
    let byAgent = 0;
    for (const s of sessions) {
      if (s === self || !s.identity) continue;
      loggedIn++;
      if (s.identity.sub === id.sub) bySub++;
      if (id.agent !== undefined && s.identity.agent === id.agent) byAgent++;
    }
    if (loggedIn >= maxSessions) {
      return new ProxyError(
        'ERR_TOO_MANY',
        `sorry, too many clients already (limits.maxClientConnections = ${maxSessions})`,
        {
          hint: 'try again later; pgwarden is at its connection limit',
          reason: 'limit_reached',
        },
      );
    }
    if (perSub > 0 && bySub >= perSub) {
      return new ProxyError(
        'ERR_TOO_MANY',
        `too many sessions for subject "${id.sub}" (limits.maxSessionsPerSub = ${perSub})`,
        { hint: 'close an idle session and try again', reason: 'limit_reached' },
      );
    }
    if (perAgent > 0 && id.agent !== undefined && byAgent >= perAgent) {
      return new ProxyError(
        'ERR_TOO_MANY',
        `too many sessions for agent "${id.agent}" (limits.maxSessionsPerAgent = ${perAgent})`,
        { hint: 'close an idle session and try again', reason: 'limit_reached' },
      );
    }
    // Last, so a refusal by another limit never holds an upstream slot; counted until the session ends.
    if (opts.upstreamCap && !holdingUpstream.has(self)) {
      const capRefusal = opts.upstreamCap.admitSession();
      if (capRefusal) return capRefusal;
      holdingUpstream.add(self);
    }
    return undefined;
  };

  return {
    sessions,
    listen(host, port) {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const addr = server.address();
          if (typeof addr === 'object' && addr) resolve({ host: addr.address, port: addr.port });
          else reject(new Error('server has no address'));
        });
      });
    },
    async close(drainMs = 0) {
      closing = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      const shutdown = () =>
        new ProxyError('ERR_SHUTDOWN', 'terminating connection due to administrator command', {
          detail: 'pgwarden is shutting down',
          hint: 'reconnect shortly',
          reason: 'session_ended',
        });
      // Nothing new runs from here: idle sessions end now, the others when their running statement completes.
      for (const s of [...sessions]) s.drain(shutdown());
      const deadline = Date.now() + drainMs;
      while (sessions.size > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const s of [...sessions]) s.endWith(shutdown(), 'shutdown');
      // Sessions half-close their sockets and the clients normally finish the close; reap any that do not.
      const reaper = setTimeout(() => {
        for (const sock of sockets) sock.destroy();
      }, 1000);
      await stopped;
      clearTimeout(reaper);
    },
    endSessions(pred, err, reason) {
      let n = 0;
      for (const s of [...sessions]) {
        if (pred(s)) {
          s.endWith(err, reason);
          n++;
        }
      }
      return n;
    },
  };
}

/** The refusal of a connection from an address over limits.loginFailuresPerMinute. */
export function loginRateLimited(perMinute: number, retryAfterMs: number): ProxyError {
  return new ProxyError(
    'ERR_TOO_MANY',
    `too many failed logins from this address (limits.loginFailuresPerMinute = ${perMinute})`,
    {
      reason: 'rate_limited',
      hint: `try again in ${Math.max(1, Math.ceil(retryAfterMs / 1000))} s with a valid token`,
    },
  );
}
