// The token-exchange listener: POST /token (RFC 8693, form-encoded), the approvals API (/approvals) and GET /.well-known/jwks.json, over HTTPS or over plain HTTP on loopback only; body size, per-address rate and time limits.
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { AddressRateLimiter } from '../../lib/rate-limit.ts';
import { errorMessage } from '../../lib/error-message.ts';
import { isLoopbackHost } from '../config/load.ts';
import { exchangeToken, type ExchangeDeps, type ExchangeResponse } from './handler.ts';
import { handleApprovals } from './approvals.ts';

export interface ExchangeListenerOptions {
  host: string;
  port: number;
  /** The current TLS context (read per connection, so a rotated pair serves new connections); absent: plain HTTP. */
  tlsContext: (() => tls.SecureContext) | undefined;
  maxBodyBytes: number;
  requestsPerMinute: number;
  requestTimeoutMs: number;
  /** Connections open at once. */
  maxConnections?: number;
  log: (level: 'warn' | 'error', msg: string, fields?: object) => void;
  /** The JWKS document to publish. */
  jwks: () => object;
  onRateLimited?: () => void;
}

export interface ExchangeListener {
  readonly port: number;
  close(): Promise<void>;
}

const FORM = 'application/x-www-form-urlencoded';

function send(res: http.ServerResponse, r: ExchangeResponse): void {
  const body = JSON.stringify(r.body);
  res.writeHead(r.status, {
    'content-type': 'application/json; charset=utf-8',
    // RFC 6749 §5.1: token responses (and their errors) are never cached.
    'cache-control': 'no-store',
    pragma: 'no-cache',
    ...(r.retryAfter === undefined ? {} : { 'retry-after': String(r.retryAfter) }),
    ...(r.status === 405 ? { allow: 'POST' } : {}),
    ...r.headers,
  });
  res.end(body);
}

const error = (status: number, code: string, description: string, retryAfter?: number): ExchangeResponse => ({
  status,
  body: { error: code, error_description: description },
  ...(retryAfter === undefined ? {} : { retryAfter }),
});

/**
 * Starts the listener. Refuses to start plain HTTP on an address that is not loopback: the endpoint receives
 * identity-provider tokens and hands out database credentials.
 */
export async function startExchangeListener(
  deps: ExchangeDeps,
  opts: ExchangeListenerOptions,
): Promise<ExchangeListener> {
  if (opts.tlsContext === undefined && !isLoopbackHost(opts.host))
    throw new Error(`exchange.host ${opts.host} is not a loopback address: the token endpoint needs exchange.tls`);
  const limiter = new AddressRateLimiter({ perMinute: opts.requestsPerMinute });

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/.well-known/jwks.json') {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET' });
        res.end();
        return;
      }
      // Public keys only; short caching so a rotation reaches the peers within a minute.
      res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'cache-control': 'public, max-age=60' });
      res.end(req.method === 'HEAD' ? undefined : JSON.stringify(opts.jwks()));
      return;
    }
    const approvals = /^\/approvals(?:\/([^/]*))?$/.exec(path ?? '');
    if (path !== '/token' && approvals === null) {
      res.writeHead(404);
      res.end();
      return;
    }
    if (path === '/token' && req.method !== 'POST') return send(res, { ...error(405, 'invalid_request', 'use POST') });
    const address = req.socket.remoteAddress;
    if (!limiter.take(address)) {
      opts.onRateLimited?.();
      req.resume();
      const retry = Math.max(1, Math.ceil(limiter.retryAfter(address) / 1000));
      return send(res, error(429, 'temporarily_unavailable', 'too many token requests from this address', retry));
    }
    let form: URLSearchParams | undefined;
    if (req.method === 'POST') {
      const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== FORM) {
        req.resume();
        return send(res, error(400, 'invalid_request', `the request body must be ${FORM} (RFC 6749 §4.1.3)`));
      }
      const declared = Number(req.headers['content-length'] ?? Number.NaN);
      if (Number.isFinite(declared) && declared > opts.maxBodyBytes) {
        res.setHeader('connection', 'close');
        send(res, error(413, 'invalid_request', `the request body is larger than ${opts.maxBodyBytes} bytes`));
        req.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      let total = 0;
      for await (const chunk of req) {
        total += (chunk as Buffer).length;
        if (total > opts.maxBodyBytes) {
          res.setHeader('connection', 'close');
          send(res, error(413, 'invalid_request', `the request body is larger than ${opts.maxBodyBytes} bytes`));
          req.destroy();
          return;
        }
        chunks.push(chunk as Buffer);
      }
      form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
    } else req.resume();
    if (approvals !== null) {
      let id: string | undefined;
      try {
        id = approvals[1] === undefined || approvals[1] === '' ? undefined : decodeURIComponent(approvals[1]);
      } catch {
        return send(res, error(404, 'not_found', 'no approval request has this id'));
      }
      return send(
        res,
        await handleApprovals(
          { method: req.method ?? 'GET', id, authorization: req.headers.authorization, form, requester: address },
          deps,
        ),
      );
    }
    send(res, await exchangeToken(form ?? new URLSearchParams(), address, deps));
  };

  const server = http.createServer(
    {
      requestTimeout: opts.requestTimeoutMs,
      headersTimeout: opts.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1_000, opts.requestTimeoutMs),
      maxHeaderSize: 8 * 1024,
    },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        // The error is logged without the request (which holds tokens); the client gets a generic answer.
        opts.log('error', 'token exchange failed', { error: errorMessage(err) });
        if (!res.headersSent) send(res, error(500, 'server_error', 'internal error'));
        else res.destroy();
      });
    },
  );
  server.keepAliveTimeout = opts.requestTimeoutMs;
  server.timeout = 2 * opts.requestTimeoutMs;

  // TLS is terminated here, with the pair in force for each new connection, and the decrypted stream handed to the
  // HTTP server: a rotated certificate serves the next handshake without a restart (config/secrets.ts TlsPair).
  const sockets = new Set<net.Socket>();
  const front = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const context = opts.tlsContext;
    if (context === undefined) {
      server.emit('connection', socket);
      return;
    }
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: context(), ALPNProtocols: ['http/1.1'] });
    secure.on('error', () => secure.destroy());
    const guard = setTimeout(() => secure.destroy(), opts.requestTimeoutMs);
    secure.once('secure', () => {
      clearTimeout(guard);
      server.emit('connection', secure);
    });
    secure.once('close', () => clearTimeout(guard));
  });
  front.maxConnections = opts.maxConnections ?? 256;
  await new Promise<void>((resolve, reject) => {
    front.once('error', reject);
    front.listen(opts.port, opts.host, () => {
      front.off('error', reject);
      resolve();
    });
  });
  const addr = front.address();
  return {
    port: typeof addr === 'object' && addr !== null ? addr.port : opts.port,
    close: () =>
      new Promise<void>((resolve) => {
        front.close(() => resolve());
        server.close();
        for (const s of sockets) s.destroy();
      }),
  };
}
