// Our own cancel secret per session, beside the upstream backend's pid; cancels are forwarded only for keys we issued,
// or passed (one hop, rate-limited) to the replica whose id the key carries; each client address may send only so many.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { sendCancelRequest } from '../upstream/connect.ts';
import { AddressRateLimiter } from '../../lib/rate-limit.ts';

/**
 * The key a client gets in BackendKeyData: the upstream backend's own pid, so pg_backend_pid(), pg_stat_activity and
 * notification sender pids agree with it, and a 4-byte secret of pgwarden's own, by which cancels are looked up (two
 * upstream servers may give two sessions the same pid; the pid must match too). A client that learns another
 * session's pid still needs that session's secret, as with PostgreSQL itself.
 *
 * In a cluster (a replica id other than 0, or peers), the secret's first byte carries the issuing replica's id in its
 * low 7 bits (the other 25 bits are random), so a CancelRequest that lands on another replica behind a TCP load
 * balancer can be passed on without any shared state. A lone replica's secret is 32 random bits.
 */
export const MAX_REPLICA_ID = 127;
/**
 * Set in the processId of a cancel passed from one replica to another (the pids we report never have it: PostgreSQL's
 * pids are positive int32). A replica acts on such a cancel only if it issued the key, and never passes it on: one hop
 * at most, so a peer list that is wrong (a replica listed under another's id, or pointing back at itself) cannot make
 * cancels circulate.
 */
export const FORWARDED_BIT = 0x80000000;

export interface IssuedKey {
  processId: number;
  secretKey: Buffer;
}

export interface Peer {
  id: number;
  host: string;
  port: number;
}

/** Passes a CancelRequest to a peer pgwarden; best effort, bounded, never throws. */
export function forwardCancel(peer: Peer, processId: number, secretKey: Buffer, timeoutMs = 2000): Promise<void> {
  return sendCancelRequest(peer.host, peer.port, processId, secretKey, timeoutMs);
}

export interface CancelRegistryOptions {
  /** This replica's own listen address: a peer at that address is this replica itself, refused at startup. */
  listen?: { host: string; port: number };
  /** Cancels passed to peers per second, sustained (token bucket). Default 50. */
  forwardPerSecond?: number;
  /** Burst above that rate. Default 100. */
  forwardBurst?: number;
  /** Forwarding connections open at once. Default 32. */
  maxForwardsInFlight?: number;
  /**
   * CancelRequests one client address may send per minute (limits.cancelRequestsPerMinute); the rest are dropped
   * unanswered. 0 or absent: no limit. Cancels a peer replica forwards (marked) have their own bucket per address at
   * the rate a peer may forward them (forwardPerSecond × 60), so a busy peer is not held to one client's rate.
   */
  perAddressPerMinute?: number;
  /** Told of each cancel dropped by the per-address limit (metrics). */
  onAddressLimited?(address: string | undefined): void;
  /** How a cancel is passed on (tests replace it). */
  forward?: (peer: Peer, processId: number, secretKey: Buffer) => Promise<void>;
}

export interface CancelStats {
  /** Cancels passed to a peer. */
  forwarded: number;
  /** Cancels for a peer's key not passed on: over the rate or in-flight limit. */
  rateLimited: number;
  /** Cancels that arrived already forwarded for a key this replica did not issue: dropped, never passed on again. */
  secondHop: number;
  /** Cancels dropped because their client address was over limits.cancelRequestsPerMinute. */
  addressLimited: number;
}

export interface CancelTarget {
  /** Asks the upstream backend of this session to cancel its running statement. */
  cancelUpstream(): void;
}

interface Entry {
  processId: number;
  secret: Buffer;
  target: CancelTarget;
}

const SECRET_LENGTH = 4;

/** Issues unguessable secrets and resolves CancelRequests against them. */
export class CancelRegistry {
  /** By the secret as an unsigned 32-bit number: unique among live sessions. */
  private readonly entries = new Map<number, Entry>();
  private readonly peers: ReadonlyMap<number, Peer>;
  /** Whether secrets carry the replica id (see IssuedKey). */
  private readonly clustered: boolean;
  private readonly ratePerMs: number;
  private readonly burst: number;
  private readonly maxInFlight: number;
  private readonly forward: (peer: Peer, processId: number, secretKey: Buffer) => Promise<void>;
  private tokens: number;
  private refilledAt = Date.now();
  private inFlight = 0;
  private readonly byAddress: AddressRateLimiter | undefined;
  private readonly forwardedByAddress: AddressRateLimiter | undefined;
  private readonly onAddressLimited: ((address: string | undefined) => void) | undefined;
  readonly stats: CancelStats = { forwarded: 0, rateLimited: 0, secondHop: 0, addressLimited: 0 };

  /**
   * `replicaId` is encoded in every secret when clustered; `peers` are the other replicas cancels may be passed to.
   * Throws a TypeError when the peer list names this replica (its id, or its own listen address), an id or an
   * address twice.
   */
  constructor(
    readonly replicaId = 0,
    peers: readonly Peer[] = [],
    opts: CancelRegistryOptions = {},
  ) {
    if (!Number.isInteger(replicaId) || replicaId < 0 || replicaId > MAX_REPLICA_ID)
      throw new TypeError(`replicaId must be 0..${MAX_REPLICA_ID}`);
    validatePeers(replicaId, peers, opts.listen);
    this.peers = new Map(peers.map((p) => [p.id, p]));
    this.clustered = replicaId !== 0 || peers.length > 0;
    this.ratePerMs = (opts.forwardPerSecond ?? 50) / 1000;
    this.burst = opts.forwardBurst ?? 100;
    this.tokens = this.burst;
    this.maxInFlight = opts.maxForwardsInFlight ?? 32;
    this.forward = opts.forward ?? ((peer, processId, secretKey) => forwardCancel(peer, processId, secretKey));
    const perMinute = opts.perAddressPerMinute ?? 0;
    if (perMinute > 0) {
      this.byAddress = new AddressRateLimiter({ perMinute });
      const peerPerMinute = (opts.forwardPerSecond ?? 50) * 60;
      this.forwardedByAddress = new AddressRateLimiter({
        perMinute: Math.max(perMinute, peerPerMinute),
        burst: Math.max(perMinute, opts.forwardBurst ?? 100),
      });
    }
    this.onAddressLimited = opts.onAddressLimited;
  }

  /** The replica that issued a secret (meaningful in a cluster): the low 7 bits of its first byte. */
  static replicaOf(secretKey: Buffer | number): number {
    const first = typeof secretKey === 'number' ? secretKey >>> 24 : (secretKey[0] ?? 0);
    return first & MAX_REPLICA_ID;
  }

  /**
   * Registers a session whose upstream backend has pid `processId`, and returns the key the client will see in
   * BackendKeyData: that pid and a fresh secret of ours (never the upstream's, which only pgwarden uses).
   */
  issue(target: CancelTarget, processId: number): IssuedKey {
    if (!Number.isInteger(processId) || processId <= 0 || processId > 0x7fffffff)
      throw new TypeError(`backend pid ${processId} is not a positive int32`);
    let secretKey: Buffer;
    let n: number;
    do {
      secretKey = randomBytes(SECRET_LENGTH);
      if (this.clustered) secretKey[0] = ((secretKey[0] ?? 0) & 0x80) | this.replicaId;
      n = secretKey.readUInt32BE(0);
    } while (this.entries.has(n));
    this.entries.set(n, { processId, secret: secretKey, target });
    return { processId, secretKey };
  }

  /** Forgets a session's key (it ended); a key issued since to another session is left alone. */
  release(key: IssuedKey): void {
    const n = key.secretKey.readUInt32BE(0);
    if (this.entries.get(n)?.secret === key.secretKey) this.entries.delete(n);
  }

  /**
   * Returns true when the key matched a live session and its cancel was forwarded. Foreign keys are ignored silently,
   * as Postgres does, and so are cancels from an address over its rate (`from`: the client's address).
   */
  cancel(rawProcessId: number, secretKey: Buffer, from?: string): boolean {
    const forwarded = (rawProcessId & FORWARDED_BIT) !== 0;
    // Outside a cluster no peer forwards: a marked cancel is a client's, which would otherwise get the peers' larger
    // rate for guessing secrets.
    if (forwarded && !this.clustered) return false;
    const limiter = forwarded ? this.forwardedByAddress : this.byAddress;
    if (limiter !== undefined && from !== undefined && !limiter.take(from)) {
      // Checked before the key: guessing secrets is held to the same rate whether the guesses are right or not.
      this.stats.addressLimited++;
      this.onAddressLimited?.(from);
      return false;
    }
    // Keys we issue are exactly 4 bytes (a protocol 3.2 client may send up to 256; none of ours is that long).
    if (secretKey.length !== SECRET_LENGTH) return false;
    const processId = (rawProcessId & ~FORWARDED_BIT) >>> 0;
    if (this.clustered) {
      const owner = CancelRegistry.replicaOf(secretKey);
      if (owner !== this.replicaId) {
        if (forwarded) {
          // Already passed on once: whatever the peer lists say, it goes no further.
          this.stats.secondHop++;
          return false;
        }
        // Another replica issued this key: pass the request on, marked as forwarded; the owner checks the secret.
        // Only configured peers are contacted, so a client cannot make us connect anywhere else, and at a bounded rate,
        // so a flood of cancels for foreign keys cannot be turned into a flood of connections to the peers.
        const peer = this.peers.get(owner);
        if (peer) this.passOn(peer, processId, secretKey);
        return false;
      }
    }
    const entry = this.entries.get(secretKey.readUInt32BE(0));
    if (!entry) return false;
    // The secret found the entry; the pid must be that session's too (a secret alone is not the key).
    if (!timingSafeEqual(entry.secret, secretKey) || entry.processId !== processId) return false;
    entry.target.cancelUpstream();
    return true;
  }

  get size(): number {
    return this.entries.size;
  }

  private passOn(peer: Peer, processId: number, secretKey: Buffer): void {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.refilledAt) * this.ratePerMs);
    this.refilledAt = now;
    if (this.tokens < 1 || this.inFlight >= this.maxInFlight) {
      this.stats.rateLimited++;
      return;
    }
    this.tokens -= 1;
    this.inFlight++;
    this.stats.forwarded++;
    // `| 0`: the marked id as the signed int32 the wire encoder writes.
    this.forward(peer, processId | FORWARDED_BIT | 0, secretKey)
      .catch(() => {})
      .finally(() => {
        this.inFlight--;
      });
  }
}

/** Refuses a peer list that names this replica (by id or by its own listen address) or names an id or address twice. */
export function validatePeers(
  replicaId: number,
  peers: readonly Peer[],
  listen?: { host: string; port: number },
): void {
  const ids = new Set<number>();
  const addresses = new Set<string>();
  for (const p of peers) {
    if (p.id === replicaId)
      throw new TypeError(`cluster.peers: peer ${p.id}@${p.host}:${p.port} has this replica's own id ${replicaId}`);
    if (ids.has(p.id)) throw new TypeError(`cluster.peers: peer id ${p.id} is listed twice`);
    const address = `${p.host.toLowerCase()}:${p.port}`;
    if (addresses.has(address)) throw new TypeError(`cluster.peers: ${p.host}:${p.port} is listed twice`);
    if (listen && isOwnAddress(p, listen))
      throw new TypeError(`cluster.peers: peer ${p.id}@${p.host}:${p.port} is this replica's own listen address`);
    ids.add(p.id);
    addresses.add(address);
  }
}

function isOwnAddress(peer: Peer, listen: { host: string; port: number }): boolean {
  if (peer.port !== listen.port) return false;
  const host = peer.host.toLowerCase();
  const own = listen.host.toLowerCase();
  if (host === own) return true;
  // Listening on every interface: any name or address of this host reaches this replica.
  if (own === '0.0.0.0' || own === '::') return localNames().has(host) || isLoopbackV4(host);
  // localhost and the loopback address are the same listener.
  const loopback = new Set(['localhost', '127.0.0.1', '::1']);
  return loopback.has(host) && loopback.has(own);
}

/** Names and addresses that mean this host: loopback, localhost, the host name, every interface address. */
function localNames(): Set<string> {
  const names = new Set<string>(['localhost', '::1', os.hostname().toLowerCase()]);
  for (const list of Object.values(os.networkInterfaces()))
    for (const i of list ?? []) names.add(i.address.toLowerCase());
  return names;
}

/** True for any 127.0.0.0/8 address, which is loopback whether or not an interface lists it. */
export function isLoopbackV4(host: string): boolean {
  return net.isIPv4(host) && host.startsWith('127.');
}
