// AddressRateLimiter and addressKey: buckets per address, refill over time, bounded memory, IPv6 grouped by /64.
import { describe, expect, it } from 'vitest';
import { AddressRateLimiter, addressKey } from '../../../lib/rate-limit.ts';

describe('addressKey', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1'],
    ['::ffff:10.1.2.3', '10.1.2.3'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:DB8:1:2::9', '2001:db8:1:2::/64'],
    ['2001:db8:1:2:aaaa::1', '2001:db8:1:2::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['2001:db8::1.2.3.4', '2001:db8:0:0::/64'],
    [undefined, ''],
  ])('%s → %s', (address, key) => {
    expect(addressKey(address)).toBe(key);
  });

  it('two addresses of one /64 share a bucket, another /64 does not', () => {
    const l = new AddressRateLimiter({ perMinute: 2, now: () => 0 });
    expect(l.take('2001:db8:1:2::1')).toBe(true);
    expect(l.take('2001:db8:1:2::2')).toBe(true);
    expect(l.take('2001:db8:1:2::3')).toBe(false);
    expect(l.take('2001:db8:1:3::1')).toBe(true);
  });
});

describe('AddressRateLimiter', () => {
  it('allows the burst, then one event per 60/perMinute seconds, per address', () => {
    let now = 1_000_000;
    const l = new AddressRateLimiter({ perMinute: 30, now: () => now });
    for (let i = 0; i < 30; i++) expect(l.take('10.0.0.1')).toBe(true);
    expect(l.retryAfter('10.0.0.1')).toBe(2_000);
    expect(l.take('10.0.0.1')).toBe(false);
    // Another address is not affected.
    expect(l.retryAfter('10.0.0.2')).toBe(0);
    now += 1_000;
    expect(l.retryAfter('10.0.0.1')).toBe(1_000);
    now += 1_000;
    expect(l.retryAfter('10.0.0.1')).toBe(0);
    expect(l.take('10.0.0.1')).toBe(true);
    expect(l.take('10.0.0.1')).toBe(false);
  });

  it('counts events under way against an address that has spent tokens, never against a full bucket', () => {
    let now = 0;
    const l = new AddressRateLimiter({ perMinute: 30, now: () => now });
    // Untracked (full bucket): any number under way.
    expect(l.retryAfter('10.0.0.1', 100)).toBe(0);
    for (let i = 0; i < 28; i++) l.take('10.0.0.1');
    // 2 tokens left: one under way leaves room for one more, two do not.
    expect(l.retryAfter('10.0.0.1', 1)).toBe(0);
    expect(l.retryAfter('10.0.0.1', 2)).toBe(2_000);
    now += 2_000;
    expect(l.retryAfter('10.0.0.1', 2)).toBe(0);
  });

  it('forgets an address once its bucket is full again', () => {
    let now = 0;
    const l = new AddressRateLimiter({ perMinute: 60, now: () => now });
    l.take('10.0.0.1');
    expect(l.size).toBe(1);
    now += 1_000;
    expect(l.retryAfter('10.0.0.1')).toBe(0);
    expect(l.size).toBe(0);
  });

  it('tracks at most maxAddresses, forgetting the least recently seen', () => {
    const l = new AddressRateLimiter({ perMinute: 1, maxAddresses: 3, now: () => 0 });
    for (const a of ['10.0.0.1', '10.0.0.2', '10.0.0.3']) expect(l.take(a)).toBe(true);
    // 10.0.0.1 seen again: 10.0.0.2 is now the least recently seen.
    expect(l.take('10.0.0.1')).toBe(false);
    expect(l.take('10.0.0.4')).toBe(true);
    expect(l.size).toBe(3);
    expect(l.evicted).toBe(1);
    expect(l.retryAfter('10.0.0.2')).toBe(0);
    expect(l.retryAfter('10.0.0.1')).toBeGreaterThan(0);
    expect(l.retryAfter('10.0.0.3')).toBeGreaterThan(0);
  });
});
