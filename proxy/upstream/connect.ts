// Opens pgwarden's own connection to Postgres: TCP/TLS, startup with the stamped parameters, SCRAM/md5/cleartext/trust login.
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { UpstreamConfig } from '../config/types.ts';
import { ProxyError } from '../../lib/errors.ts';
import { AuthenticationCode as AuthCode, BackendType, SSL_REQUEST_CODE } from '../wire/codes.ts';
import { MessageFramer, type Frame } from '../wire/framer.ts';
import {
  decodeAuthentication,
  decodeBackendKeyData,
  decodeErrorFields,
  decodeParameterStatus,
  decodeReadyForQuery,
} from '../wire/backend.ts';
import {
  encodeCancelRequest,
  encodePasswordMessage,
  encodeSASLInitialResponse,
  encodeSASLResponse,
  encodeStartupMessage,
} from '../wire/frontend.ts';
import { md5Password, scramContinue, scramFinish, scramStart, type ScramState } from './scram.ts';

/** The largest message we accept from our own upstream (Postgres itself caps messages at 1 GB). */
export const UPSTREAM_MAX_MESSAGE = 1024 * 1024 * 1024;

/**
 * Idle time before the first TCP keepalive probe on upstream sockets. Node then sets 10 probes 1 s apart (TCP_KEEPCNT,
 * TCP_KEEPINTVL, where the platform has them), so a silently dead upstream is found in about 40 s.
 */
export const UPSTREAM_KEEPALIVE_IDLE_MS = 30_000;

/**
 * The byte stream to Postgres: a net.Socket or tls.TLSSocket from connectUpstream. A test's connector may hand back
 * any Duplex (an in-memory fake backend); the TCP socket options are then absent, and callers set them only if present.
 */
export type UpstreamStream = Duplex & Partial<Pick<net.Socket, 'setNoDelay' | 'setKeepAlive'>>;

export interface UpstreamConnection {
  socket: UpstreamStream;
  /** Framer holding any bytes that arrived after ReadyForQuery (normally none). */
  framer: MessageFramer;
  processId: number;
  secretKey: Buffer;
  /** ParameterStatus values reported during login, in arrival order. */
  parameters: Map<string, string>;
  /** NoticeResponse frames received during login (e.g. a warning about a setting), forwarded to the client. */
  notices: Buffer[];
}

function upstreamError(message: string, cause?: unknown): ProxyError {
  return new ProxyError('ERR_UPSTREAM', message, {
    cause,
    hint: 'the database behind pgwarden is unavailable or refused pgwarden; try again later or contact the operator',
  });
}

/** Connects, negotiates TLS when configured, and logs in; rejects with a client-safe ProxyError (08006). */
export async function connectUpstream(
  cfg: UpstreamConfig & CountedUpstream,
  startupParams: Record<string, string>,
): Promise<UpstreamConnection> {
  // pgwarden's own connections (analysis) are counted against limits.maxUpstreamConnections from before the
  // connect until the socket closes; sessions are counted at login instead (server.ts), so they carry no cap here.
  const release = cfg.cap?.acquireOwn();
  const deadline = Date.now() + cfg.connectTimeout;
  let socket: net.Socket;
  try {
    socket = await tcpConnect(cfg, deadline);
  } catch (err) {
    release?.();
    throw err;
  }
  if (release) socket.once('close', release);
  try {
    if (cfg.sslmode !== 'disable') socket = await negotiateTls(socket, cfg, deadline);
    return await loginUpstream(socket, cfg, startupParams, deadline);
  } catch (err) {
    socket.destroy();
    release?.();
    throw err instanceof ProxyError ? err : upstreamError('could not connect to the upstream database', err);
  }
}

/**
 * How sessions and analysis connections reach Postgres and cancel what runs there. Injected through
 * createProxy(config, deps) so a test can put a scripted backend behind a Session; real use takes tcpUpstream.
 */
export interface UpstreamConnector {
  /** Opens a logged-in connection (ReadyForQuery received); rejects with a client-safe ProxyError. */
  connect(cfg: UpstreamConfig & CountedUpstream, startupParams: Record<string, string>): Promise<UpstreamConnection>;
  /** Asks the backend `processId` to cancel its running statement; best effort, never rejects. */
  cancel(cfg: UpstreamConfig, processId: number, secretKey: Buffer): Promise<void>;
}

/** An upstream config whose connections count against a cap (pgwarden's own connections; see upstream/cap.ts). */
export interface CountedUpstream {
  cap?: { acquireOwn(): () => void };
}

function tcpConnect(cfg: UpstreamConfig, deadline: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    // TCP keepalive from the first byte: an upstream that vanished without a FIN or RST (host down, a NAT or firewall
    // that forgot the flow) is found by the kernel's probes and the session ends with upstream_lost, instead of
    // waiting until the token expires. The TLS layer runs over this same socket, so it covers TLS too.
    const socket = net.connect({ host: cfg.host, port: cfg.port });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, UPSTREAM_KEEPALIVE_IDLE_MS);
    const timer = setTimeout(
      () => {
        socket.destroy();
        reject(upstreamError('timed out connecting to the upstream database'));
      },
      Math.max(1, deadline - Date.now()),
    );
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(upstreamError('could not connect to the upstream database', err));
    });
  });
}

async function negotiateTls(socket: net.Socket, cfg: UpstreamConfig, deadline: number): Promise<net.Socket> {
  const req = Buffer.alloc(8);
  req.writeInt32BE(8, 0);
  req.writeInt32BE(SSL_REQUEST_CODE, 4);
  socket.write(req);
  const answer = await readBytes(socket, 1, deadline);
  if (answer[0] !== 0x53 /* S */) {
    throw upstreamError('the upstream database does not accept TLS but the configuration requires it');
  }
  return await new Promise((resolve, reject) => {
    const secure = tls.connect({
      socket,
      servername: net.isIP(cfg.host) ? undefined : cfg.host,
      rejectUnauthorized: cfg.sslmode === 'verify-full',
      ca: cfg.sslRootCert,
      // Node passes 'localhost' as the name when no servername is set (an IP host): the configured host is checked.
      checkServerIdentity:
        cfg.sslmode === 'verify-full' ? (_name, cert) => verifyPeerName(cfg.host, cert) : () => undefined,
    });
    const timer = setTimeout(
      () => {
        secure.destroy();
        reject(upstreamError('timed out negotiating TLS with the upstream database'));
      },
      Math.max(1, deadline - Date.now()),
    );
    secure.once('secureConnect', () => {
      clearTimeout(timer);
      secure.removeAllListeners('error');
      resolve(secure);
    });
    secure.once('error', (err) => {
      clearTimeout(timer);
      reject(upstreamError('TLS with the upstream database failed', err));
    });
  });
}

/**
 * TLS options for a `pg` client (pgwarden's own catalog, readiness and revocation connections) with the same
 * verification as sessions: libpq's sslmode semantics, the configured host checked by verifyPeerName.
 */
export function pgSslOptions(
  cfg: Pick<UpstreamConfig, 'host' | 'sslmode' | 'sslRootCert'>,
): false | tls.ConnectionOptions {
  if (cfg.sslmode === 'disable') return false;
  const verify = cfg.sslmode === 'verify-full';
  return {
    rejectUnauthorized: verify,
    ca: cfg.sslRootCert,
    checkServerIdentity: verify ? (_name, cert) => verifyPeerName(cfg.host, cert) : () => undefined,
  };
}

/**
 * libpq's verify-full host check (fe-secure-openssl.c, PostgreSQL 14+), on a certificate that already chained to a
 * trusted CA: `host` is what the configuration names, never a default.
 *   - A host name matches a dNSName SAN (case-insensitive; "*." wildcard for exactly one leftmost label); the
 *     Common Name is checked only when the certificate has no dNSName SAN.
 *   - An IP address matches an iPAddress SAN with the same address (4 or 16 bytes), or a dNSName SAN spelled as that
 *     address; the Common Name is checked only when the certificate has no iPAddress SAN.
 * Returns an Error describing the mismatch, or undefined when the certificate names the host.
 */
export function verifyPeerName(
  host: string,
  cert: Pick<tls.PeerCertificate, 'subject' | 'subjectaltname'>,
): Error | undefined {
  if (host.length === 0) return new Error('host name must be specified for a verified TLS connection');
  const family = net.isIP(host);
  const sans = parseSubjectAltName(cert.subjectaltname ?? '');
  const dnsNames = sans.filter((n) => n.type === 'DNS').map((n) => n.value);
  const ipNames = sans.filter((n) => n.type === 'IP Address').map((n) => n.value);
  const matchesName = (pattern: string) => certNameMatches(pattern, host);
  if (dnsNames.some(matchesName)) return undefined;
  if (family !== 0 && ipNames.some((ip) => sameAddress(ip, host, family))) return undefined;
  // The Common Name is a fallback only when no SAN of the host's own kind is present.
  const hasSanOfKind = family === 0 ? dnsNames.length > 0 : ipNames.length > 0;
  const cn = cert.subject?.CN;
  const firstCn = Array.isArray(cn) ? cn[0] : cn;
  if (!hasSanOfKind && typeof firstCn === 'string' && matchesName(firstCn)) return undefined;
  const named = [...dnsNames.map((n) => `DNS:${n}`), ...ipNames.map((n) => `IP:${n}`)];
  if (!hasSanOfKind && typeof firstCn === 'string') named.push(`CN=${firstCn}`);
  const err = new Error(
    `server certificate does not match host "${host}" (it names ${named.length > 0 ? named.join(', ') : 'nothing usable'})`,
  );
  (err as NodeJS.ErrnoException).code = 'ERR_TLS_CERT_ALTNAME_INVALID';
  return err;
}

/** Node's subjectaltname text ("DNS:a, IP Address:1.2.3.4"; values with separators are JSON-quoted) as a list. */
function parseSubjectAltName(text: string): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = [];
  const re = /([A-Za-z ]+):("(?:[^"\\]|\\.)*"|[^,]*)(?:, |$)/g;
  for (let m = re.exec(text); m !== null && m[0].length > 0; m = re.exec(text)) {
    const type = m[1] ?? '';
    let value = m[2] ?? '';
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    out.push({ type, value });
  }
  return out;
}

/** libpq's name match: case-insensitive, a leading "*." matches exactly one label, no NUL bytes. */
function certNameMatches(pattern: string, host: string): boolean {
  if (pattern.includes('\0')) return false;
  const p = pattern.toLowerCase();
  const h = host.toLowerCase();
  if (p === h) return true;
  if (!p.startsWith('*.') || net.isIP(h) !== 0) return false;
  const suffix = p.slice(1);
  if (h.length <= suffix.length || !h.endsWith(suffix)) return false;
  return !h.slice(0, h.length - suffix.length).includes('.');
}

/** Whether two textual addresses of the host's family are the same address (IPv6 in any spelling). */
function sameAddress(certIp: string, host: string, family: number): boolean {
  if (net.isIP(certIp) !== family) return false;
  const list = new net.BlockList();
  list.addAddress(certIp, family === 6 ? 'ipv6' : 'ipv4');
  return list.check(host, family === 6 ? 'ipv6' : 'ipv4');
}

function readBytes(socket: net.Socket, n: number, deadline: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const done = (err?: Error, buf?: Buffer) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve(buf ?? Buffer.alloc(0));
    };
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= n) {
        // Bytes beyond the single-byte answer would be a server speaking before TLS: refuse.
        if (got.length > n) done(upstreamError('upstream sent unexpected data before TLS'));
        else done(undefined, got);
      }
    };
    const onError = (err: Error) => done(upstreamError('upstream connection failed', err));
    const onClose = () => done(upstreamError('upstream closed the connection'));
    const timer = setTimeout(
      () => done(upstreamError('timed out waiting for the upstream database')),
      Math.max(1, deadline - Date.now()),
    );
    socket.on('data', onData);
    socket.once('error', onError);
    socket.once('close', onClose);
  });
}

/**
 * Drives the startup/authentication exchange message by message until ReadyForQuery, over a stream already open to
 * Postgres (connectUpstream's socket, or a test's in-memory backend).
 */
export async function loginUpstream(
  socket: UpstreamStream,
  cfg: UpstreamConfig,
  startupParams: Record<string, string>,
  deadline: number,
): Promise<UpstreamConnection> {
  const framer = new MessageFramer({ maxMessageSize: 64 * 1024 * 1024 });
  socket.write(encodeStartupMessage({ ...startupParams, user: cfg.user, database: cfg.database }));
  const parameters = new Map<string, string>();
  const notices: Buffer[] = [];
  let processId = 0;
  let secretKey = Buffer.alloc(0);
  let scram: ScramState | undefined;

  return await new Promise<UpstreamConnection>((resolve, reject) => {
    let finished = false;
    const timer = setTimeout(
      () => fail(upstreamError('timed out logging in to the upstream database')),
      Math.max(1, deadline - Date.now()),
    );
    const cleanup = () => {
      finished = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const fail = (err: unknown) => {
      if (finished) return;
      cleanup();
      reject(err);
    };
    const needPassword = (): string => {
      if (cfg.password === undefined)
        throw upstreamError('the upstream database asked for a password but none is configured');
      return cfg.password;
    };
    const handle = (frame: Frame): boolean => {
      switch (frame.type) {
        case BackendType.Authentication: {
          const { code, data } = decodeAuthentication(frame.body);
          if (code === AuthCode.Ok) return false;
          if (code === AuthCode.CleartextPassword) {
            socket.write(encodePasswordMessage(needPassword()));
          } else if (code === AuthCode.MD5Password) {
            socket.write(encodePasswordMessage(md5Password(cfg.user, needPassword(), data.subarray(0, 4))));
          } else if (code === AuthCode.SASL) {
            const mechanisms = data.toString('utf8').split('\0').filter(Boolean);
            if (!mechanisms.includes('SCRAM-SHA-256'))
              throw upstreamError('upstream offers no SASL mechanism pgwarden supports');
            const start = scramStart(needPassword());
            scram = start.state;
            socket.write(encodeSASLInitialResponse('SCRAM-SHA-256', Buffer.from(start.message, 'utf8')));
          } else if (code === AuthCode.SASLContinue) {
            if (!scram) throw upstreamError('upstream sent SASLContinue out of order');
            socket.write(encodeSASLResponse(Buffer.from(scramContinue(scram, data.toString('utf8')), 'utf8')));
          } else if (code === AuthCode.SASLFinal) {
            if (!scram) throw upstreamError('upstream sent SASLFinal out of order');
            scramFinish(scram, data.toString('utf8'));
          } else {
            throw upstreamError(`upstream asked for an authentication method pgwarden does not support (code ${code})`);
          }
          return false;
        }
        case BackendType.ParameterStatus: {
          const { name, value } = decodeParameterStatus(frame.body);
          parameters.set(name, value);
          return false;
        }
        case BackendType.BackendKeyData: {
          const key = decodeBackendKeyData(frame.body);
          processId = key.processId;
          secretKey = Buffer.from(key.secretKey);
          return false;
        }
        case BackendType.NoticeResponse:
          notices.push(Buffer.from(frame.raw));
          return false;
        case BackendType.ErrorResponse: {
          const e = decodeErrorFields(frame.body);
          // Only the SQLSTATE travels to the client: upstream messages may name the upstream user or host.
          throw upstreamError(`the upstream database refused pgwarden's login (SQLSTATE ${e.sqlstate})`);
        }
        case BackendType.NegotiateProtocolVersion:
          return false;
        case BackendType.ReadyForQuery:
          decodeReadyForQuery(frame.body);
          return true;
        default:
          throw upstreamError(`upstream sent an unexpected message during login (type ${frame.type})`);
      }
    };
    const onData = (chunk: Buffer) => {
      try {
        framer.push(chunk);
        for (let frame = framer.next(); frame; frame = framer.next()) {
          if (handle(frame)) {
            cleanup();
            resolve({ socket, framer, processId, secretKey, parameters, notices });
            return;
          }
        }
      } catch (err) {
        fail(err instanceof ProxyError ? err : upstreamError('upstream login failed', err));
      }
    };
    const onError = (err: Error) => fail(upstreamError('upstream connection failed', err));
    const onClose = () => fail(upstreamError('upstream closed the connection during login'));
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}

/** Sends a CancelRequest on a fresh connection to host:port (Postgres or a peer pgwarden); best effort, bounded, never throws. */
export function sendCancelRequest(
  host: string,
  port: number,
  processId: number,
  secretKey: Buffer,
  timeoutMs: number,
): Promise<void> {
  return new Promise((resolve) => {
    // Cancel requests go over plain TCP like any startup packet; Postgres accepts them unencrypted.
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.once('connect', () => socket.end(encodeCancelRequest(processId, secretKey)));
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Asks the upstream backend to cancel its running statement. */
export function sendUpstreamCancel(cfg: UpstreamConfig, processId: number, secretKey: Buffer): Promise<void> {
  return sendCancelRequest(cfg.host, cfg.port, processId, secretKey, cfg.connectTimeout);
}

/** The real connector: TCP (and TLS as configured) to the upstream named in the configuration. */
export const tcpUpstream: UpstreamConnector = { connect: connectUpstream, cancel: sendUpstreamCancel };
