// Per-source-address token buckets (login failures, cancel requests) in bounded memory: the least recently seen address is forgotten first.
import net from 'node:net';
import { ipv6Groups } from './cidr.ts';

/** Addresses tracked per limiter by default: about 100 bytes each, so about 1 MB at most. */
export const DEFAULT_MAX_TRACKED_ADDRESSES = 10_000;

/**
 * The key an address is limited under. IPv4 (also written IPv4-mapped, `::ffff:1.2.3.4`) as is; IPv6 by its /64,
 * since one host or customer usually holds a whole /64 and could otherwise take a fresh address per attempt.
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined || address === '') return '';
  const bare = address.split('%')[0] ?? address;
  const lower = bare.toLowerCase();
  if (lower.startsWith('::ffff:') && net.isIPv4(lower.slice(7))) return lower.slice(7);
  if (net.isIPv6(lower)) return `${ipv6Groups(lower).slice(0, 4).join(':')}::/64`;
  return lower;
}

interface Bucket {
  tokens: number;
  at: number;
}

export interface AddressRateLimiterOptions {
  /** Events one address may have per minute, sustained. */
  perMinute: number;
  /** Events allowed at once after a quiet spell; default `perMinute`. */
  burst?: number;
  /** Addresses remembered at once; past it the least recently seen one is forgotten (its bucket starts full again). */
  maxAddresses?: number;
  now?: () => number;
}

/**
 * A token bucket per address: `burst` tokens, refilled at `perMinute` a minute. An address whose bucket is full
 * again holds no memory; the map's insertion order is its recency order, so eviction is O(1).
 */
export class AddressRateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private readonly burst: number;
  private readonly maxAddresses: number;
  private readonly now: () => number;
  /** Addresses forgotten to stay within maxAddresses (an operator can see the bound is being hit). */
  evicted = 0;

  constructor(opts: AddressRateLimiterOptions) {
    if (!(opts.perMinute > 0)) throw new TypeError('perMinute must be positive');
    this.perMs = opts.perMinute / 60_000;
    this.burst = Math.max(1, opts.burst ?? opts.perMinute);
    this.maxAddresses = Math.max(1, opts.maxAddresses ?? DEFAULT_MAX_TRACKED_ADDRESSES);
    this.now = opts.now ?? Date.now;
  }

  /** The bucket of `key` refilled to now, or undefined when it would be full (nothing to remember). */
  private refill(key: string, now: number): Bucket | undefined {
    const b = this.buckets.get(key);
    if (b === undefined) return undefined;
    b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.perMs);
    b.at = now;
    if (b.tokens >= this.burst) {
      this.buckets.delete(key);
      return undefined;
    }
    return b;
  }

  /**
   * Milliseconds until `address` may have one more event; 0 when it may now. Spends nothing. `reserved`: events
   * already under way that may still spend a token (logins being verified), counted only once the address has spent
   * some: an address with a full bucket is never held back, however many it has under way.
   */
  retryAfter(address: string | undefined, reserved = 0): number {
    const b = this.refill(addressKey(address), this.now());
    const need = 1 + Math.max(0, reserved);
    if (b === undefined || b.tokens >= need) return 0;
    return Math.ceil((need - b.tokens) / this.perMs);
  }

  /** Spends one token of `address`; false when it had none left (the event is over the rate). */
  take(address: string | undefined): boolean {
    const key = addressKey(address);
    const now = this.now();
    let b = this.refill(key, now);
    if (b === undefined) {
      while (this.buckets.size >= this.maxAddresses) {
        const oldest = this.buckets.keys().next().value;
        if (oldest === undefined) break;
        this.buckets.delete(oldest);
        this.evicted++;
      }
      b = { tokens: this.burst, at: now };
    } else {
      // Most recently seen last: the map's first key is the one to forget.
      this.buckets.delete(key);
    }
    this.buckets.set(key, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Addresses remembered now. */
  get size(): number {
    return this.buckets.size;
  }
}
