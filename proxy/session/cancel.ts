// Our own BackendKeyData per session, mapped to the upstream backend's key; cancels are forwarded only for keys we issued.
import { randomBytes, randomInt, timingSafeEqual } from 'node:crypto';

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

  /** Registers a session and returns the key the client will see in BackendKeyData. */
  issue(target: CancelTarget): { processId: number; secretKey: Buffer } {
    let processId: number;
    do {
      // Positive int32, never 0 (some drivers treat 0 as "no key").
      processId = randomInt(1, 0x7fffffff);
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
