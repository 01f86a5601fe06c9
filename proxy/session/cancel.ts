// Our own BackendKeyData per session, mapped to the upstream backend's key; cancels are forwarded only for keys we issued,
// or passed to the replica whose id the key carries.
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { sendCancelRequest } from '../upstream/connect.ts';

/**
 * processId layout: bit 31 is 0 (positive int32), bits 24–30 hold the replica id (0–127), bits 0–23
 * are random. A CancelRequest that lands on another replica behind a TCP load balancer carries the
 * id of the replica that issued it, so it can be passed on without any shared state.
 */
export const REPLICA_SHIFT = 24;
export const MAX_REPLICA_ID = 127;

export interface Peer {
  id: number;
  host: string;
  port: number;
}

/** Passes a CancelRequest to a peer pgwarden; best effort, bounded, never throws. */
export function forwardCancel(peer: Peer, processId: number, secretKey: Buffer, timeoutMs = 2000): Promise<void> {
  return sendCancelRequest(peer.host, peer.port, processId, secretKey, timeoutMs);
}

export interface CancelTarget {
  /** Asks the upstream backend of this session to cancel its running statement. */
  cancelUpstream(): void;
}

interface Entry {
  secret: Buffer;
  target: CancelTarget;
}

/** Issues unguessable keys and resolves CancelRequests against them in constant time. */
export class CancelRegistry {
  private readonly entries = new Map<number, Entry>();
  private readonly peers: ReadonlyMap<number, Peer>;

  /** `replicaId` is encoded in every key; `peers` are the other replicas cancels may be passed to. */
  constructor(
    readonly replicaId = 0,
    peers: readonly Peer[] = [],
  ) {
    if (!Number.isInteger(replicaId) || replicaId < 0 || replicaId > MAX_REPLICA_ID) throw new TypeError(`replicaId must be 0..${MAX_REPLICA_ID}`);
    this.peers = new Map(peers.filter((p) => p.id !== replicaId).map((p) => [p.id, p]));
  }

  /** The replica that issued a key. */
  static replicaOf(processId: number): number {
    return (processId >>> REPLICA_SHIFT) & MAX_REPLICA_ID;
  }

  /** Registers a session and returns the key the client will see in BackendKeyData. */
  issue(target: CancelTarget): { processId: number; secretKey: Buffer } {
    let processId: number;
    do {
      // Positive int32, never 0 in the random part (some drivers treat 0 as "no key").
      processId = ((this.replicaId << REPLICA_SHIFT) | randomInt(1, 1 << REPLICA_SHIFT)) >>> 0;
    } while (this.entries.has(processId));
    const secretKey = randomBytes(4);
    this.entries.set(processId, { secret: secretKey, target });
    return { processId, secretKey };
  }

  release(processId: number): void {
    this.entries.delete(processId);
  }

  /** Returns true when the key matched a live session and its cancel was forwarded. Foreign keys are ignored silently, as Postgres does. */
  cancel(processId: number, secretKey: Buffer): boolean {
    const owner = CancelRegistry.replicaOf(processId);
    if (owner !== this.replicaId) {
      // Another replica issued this key: pass the request on verbatim; it checks the secret itself.
      // Only configured peers are contacted, so a client cannot make us connect anywhere else.
      const peer = this.peers.get(owner);
      if (peer) void forwardCancel(peer, processId, secretKey);
      return false;
    }
    const entry = this.entries.get(processId);
    if (!entry) return false;
    if (entry.secret.length !== secretKey.length || !timingSafeEqual(entry.secret, secretKey)) return false;
    entry.target.cancelUpstream();
    return true;
  }

  get size(): number {
    return this.entries.size;
  }
}
